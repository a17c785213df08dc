#!/usr/bin/env bash
# Benchmarks of incus-snap, incus-push, incus-prune and incus-failover against the obvious
# alternative, the `incus` CLI doing the same work in a shell loop, on the lab (scripts/lab.sh),
# in the same run.
#
#   scripts/bench.sh                  full run (3 repetitions, medians): writes docs/bench.md
#   scripts/bench.sh --quick          1 repetition, fewer instances: writes target/bench-quick.md
#   scripts/bench.sh --only failover  only the failover part (sections 7 and 8): replaces those
#                                     sections in docs/bench.md (or target/bench-quick.md with
#                                     --quick) and keeps the others as they are
#   scripts/bench.sh --only history   only the standby history part (section 9, archive
#                                     points), the same way
#   scripts/bench.sh --only scale     only the scale part (section 10: 10, 100 and 1000 stopped
#                                     instances, one run each; 10 and 20 with --quick), the same
#                                     way. A run without --only does NOT measure it (at 1000
#                                     instances it is long): it keeps the section 10 already in
#                                     the file it writes. INCUS_BENCH_SCALE_SIZES="10 100"
#                                     overrides the numbers of instances.
#   scripts/bench.sh --only volumes   only the custom volumes part (section 11: push with one
#                                     new snapshot, first copy and drill of an instance with a
#                                     100 MB custom volume, on the dir and btrfs pools, against
#                                     the incus CLI), the same way. A run without --only
#                                     measures it too (a few minutes).
#   scripts/bench.sh --only soak      only the chaos soak (section 12: 500 rounds of the job with
#                                     random faults and the invariants checked after each; 20
#                                     with --quick; INCUS_SOAK_ROUNDS=N and INCUS_SOAK_SEED=S
#                                     override), the same way. A run without --only keeps it.
#
# Everything happens in a project of its own, "bench" (INCUS_BENCH_PROJECT overrides), created
# on both lab daemons and deleted with its instances when the run ends (after an interruption,
# by the next run). Nothing outside that project is touched, but for the archive points the
# history part makes on the standby (project incus-standby-archive, named after its
# instances), deleted with them. The project holds its own custom volumes
# (features.storage.volumes=true); they are deleted with it.
# The lab is scripts/lab.sh's (INCUS_LAB_DIR and its ports select another one).
# BENCH_NO_BUILD=1 skips the release build of the tools (the benchmark itself is still built
# by cargo bench).
#
# This script only brings the lab up and builds; the cases, the statistics and the report are
# the Rust benchmark tests/benches/bench (cargo bench -p incus-standby-tests --bench bench),
# which takes the same options. The retention policy alone: cargo bench -p incus-prune --bench
# policy (divan).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The options are checked here too, so that a typo fails before the build.
USAGE="usage: $0 [--quick] [--only failover|history|scale|volumes|soak]"
set -- "$@" --end-of-options
ONLY=
while [ "$1" != --end-of-options ]; do
    case "$1" in
        --quick) ;;
        --only)
            [ "$2" != --end-of-options ] || { echo "bench: --only needs a part ($USAGE)" >&2; exit 2; }
            ONLY=$2
            set -- "$@" "$1" "$2"
            shift 2
            continue
            ;;
        --only=*) ONLY=${1#--only=} ;;
        -h | --help) awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "bench: unknown argument: $1 ($USAGE)" >&2; exit 2 ;;
    esac
    set -- "$@" "$1"
    shift
done
shift
case "$ONLY" in
    "" | failover | history | scale | volumes | soak) ;;
    *) echo "bench: unknown part for --only: $ONLY (the parts are failover, history, scale, volumes and soak)" >&2; exit 2 ;;
esac

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ ! -x /usr/bin/time ]; then
    log "installing GNU time (/usr/bin/time)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y time >&2 || { echo "bench: cannot install the time package" >&2; exit 1; }
fi
if [ "${BENCH_NO_BUILD:-}" != 1 ]; then
    log "building the tools (release)"
    cargo build --release --workspace --bins >&2
fi
scripts/lab.sh up
eval "$(scripts/lab.sh env)"
# Nothing here reads the caller's stdin; the tools must not mistake it for piped records.
exec cargo bench --quiet -p incus-standby-tests --bench bench -- "$@" </dev/null
