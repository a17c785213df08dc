#!/usr/bin/env bash
# The project's test command: brings the Incus lab up (scripts/lab.sh), then builds, runs
# every test (unit and end-to-end), clippy and rustfmt. Stops at the first failing step with
# its exit code. Extra arguments go to `cargo test` (e.g. `scripts/test.sh push` runs the
# tests whose name contains "push"; `scripts/test.sh -- --nocapture`).
# The lab keeps running afterwards so that re-runs are fast; stop it with scripts/lab.sh down.
# INCUS_LAB_INCUS=7.0 (or mixed) runs it all on Incus 7.0 (scripts/lab.sh up reads it); a lab
# made with another version must be purged first (scripts/lab.sh down --purge).
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

step scripts/lab.sh up --cluster
# Everything below sees the lab: INCUS_CONF, INCUS_DIR (the primary), INCUS_LAB_*.
eval "$(scripts/lab.sh env)"
step cargo build --workspace --all-targets --features incus-core/failpoints
step cargo test --workspace --features incus-core/failpoints "$@"
# The packages: built, the .deb installed here and its tools run against the lab, the .rpm
# listed. It installs system-wide, so only in CI or when asked.
if [ "${CI:-}" = true ] || [ "${INCUS_STANDBY_PACKAGE_CHECK:-}" = 1 ]; then
    step scripts/package.sh --check
else
    printf '==> skipped: scripts/package.sh --check (installs the .deb; CI=true or INCUS_STANDBY_PACKAGE_CHECK=1 runs it)\n'
fi
step cargo clippy --workspace --all-targets --features incus-core/failpoints -- -D warnings
step cargo clippy --workspace --all-targets -- -D warnings
step cargo fmt --all -- --check
printf '==> all checks passed\n'
