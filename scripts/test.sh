#!/usr/bin/env bash
# The project's test command: brings the Incus lab up (scripts/lab.sh), then builds, runs
# every test (unit and end-to-end), clippy and rustfmt. Stops at the first failing step with
# its exit code. Extra arguments go to `cargo test` (e.g. `scripts/test.sh push` runs the
# tests whose name contains "push"; `scripts/test.sh -- --nocapture`).
#
# Both Incus LTS lines are tested. The whole suite, the cluster tests included, runs on the
# lab's version (a new lab runs the newest LTS, 7.0; INCUS_LAB_INCUS=6.0 or mixed choose
# another, and a lab made with another version must be purged first: scripts/lab.sh down
# --purge). Then a second lab (.lab-6.0, or .lab-7.0 for a 6.0 lab; its ports are the first
# lab's plus 10) runs, on the other LTS line, the tests of everything that differs by
# version: push, safety, prune and the volumes' three modes (the run-wide pool listing, the
# restore, volume listings and restores; every such choice is made in one place,
# ServerInfo::features). INCUS_TEST_OTHER_LINE=0 skips the second lab.
# The labs keep running afterwards so that re-runs are fast; stop them with
# scripts/lab.sh down (INCUS_LAB_DIR=.lab-6.0 scripts/lab.sh down for the second).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() {
    printf '==> %s\n' "$*"
    local rc=0
    "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '==> FAILED (exit %d): %s\n' "$rc" "$*" >&2
        exit "$rc"
    fi
}

# The lab's version (a new lab: the newest LTS) and the other LTS line, tested second.
case "$(scripts/lab.sh version)" in 7.0) other=6.0 ;; 6.0) other=7.0 ;; *) other= ;; esac
[ "${INCUS_TEST_OTHER_LINE:-1}" != 0 ] && [ $# -eq 0 ] || other=
step scripts/lab.sh up --cluster
# Everything below sees the lab: INCUS_CONF, INCUS_DIR (the primary), INCUS_LAB_*.
eval "$(scripts/lab.sh env)"
# The short chaos soak replays one fault plan (the long one, scripts/bench.sh --only soak,
# draws a new seed each run); INCUS_SOAK_SEED=S chooses another.
export INCUS_SOAK_SEED=${INCUS_SOAK_SEED:-11852541490311503814}
step cargo build --workspace --all-targets --features incus-core/failpoints
step cargo test --workspace --features incus-core/failpoints "$@"
# The packages: built, the .deb installed here and its tools run against the lab, the .rpm
# listed. It installs system-wide, so only in CI or when asked.
if [ "${CI:-}" = true ] || [ "${INCUS_STANDBY_PACKAGE_CHECK:-}" = 1 ]; then
    step scripts/package.sh --check
else
    printf '==> skipped: scripts/package.sh --check (installs the .deb; CI=true or INCUS_STANDBY_PACKAGE_CHECK=1 runs it)\n'
fi
# The other LTS line, on a second lab of its own.
if [ -n "$other" ]; then
    (
        export INCUS_LAB_DIR="$PWD/.lab-$other" INCUS_LAB_INCUS=$other
        export INCUS_LAB_PRIMARY_PORT=$((${INCUS_LAB_PRIMARY_PORT:-18443} + 10))
        export INCUS_LAB_STANDBY_PORT=$((${INCUS_LAB_STANDBY_PORT:-18444} + 10))
        export INCUS_LAB_CLUSTER_PORT=$((${INCUS_LAB_CLUSTER_PORT:-18445} + 10))
        export INCUS_LAB_CLUSTER_IP_BASE=$((${INCUS_LAB_CLUSTER_IP_BASE:-10} + 10))
        step scripts/lab.sh up
        eval "$(scripts/lab.sh env)"
        printf '==> Incus %s: the tests of what differs by version\n' "$other"
        step cargo test -p incus-standby-tests --features incus-core/failpoints \
            --test push --test safety --test prune
        step cargo test -p incus-standby-tests --features incus-core/failpoints \
            --test volumes volumes_travel_with_their_instance_in_every_mode
    )
fi
step cargo clippy --workspace --all-targets --features incus-core/failpoints -- -D warnings
step cargo clippy --workspace --all-targets -- -D warnings
step cargo fmt --all -- --check
printf '==> all checks passed\n'
