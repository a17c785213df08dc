#!/usr/bin/env bash
# The main job, shown on a local two-daemon lab (scripts/lab.sh): three instances in a project
# "demo" on the primary are snapshotted, replicated to the standby and pruned, three times,
# as cron would do it. Then it shows what the standby holds.
#
#   scripts/demo.sh           run the demo (installs Incus and starts the lab if needed)
#   scripts/demo.sh --clean   delete the demo project on both daemons
set -euo pipefail
cd "$(dirname "$0")/.."

project=demo
scripts/lab.sh up >&2
eval "$(scripts/lab.sh env)"

clean() {
    for remote in local standby; do
        for name in $(incus list "$remote:" --project "$project" -f csv -c n 2>/dev/null); do
            incus delete --force --project "$project" "$remote:$name" >/dev/null 2>&1 || true
        done
        incus project delete "$remote:$project" >/dev/null 2>&1 || true
    done
}
if [ "${1:-}" = "--clean" ]; then
    clean
    echo "demo project removed"
    exit 0
fi

echo "==> building the tools (release)" >&2
cargo build --release --quiet --bins
bin=$PWD/target/release

for remote in local standby; do
    incus project show "$remote:$project" >/dev/null 2>&1 ||
        incus project create "$remote:$project" -c features.images=false -c features.profiles=false >/dev/null
done
for name in web db files; do
    if ! incus info --project "$project" "local:$name" >/dev/null 2>&1; then
        if [ "$name" = files ]; then
            incus init busybox --project "$project" "local:$name" >/dev/null
        else
            incus launch busybox --project "$project" "local:$name" >/dev/null
        fi
    fi
done

job() {
    "$bin/incus-snap" --project "$project" --all |
        "$bin/incus-push" --to standby --jobs 2 |
        "$bin/incus-prune" --keep-last 2 --format text
}

for round in 1 2 3; do
    echo
    echo "==> round $round: incus-snap --project $project --all | incus-push --to standby | incus-prune --keep-last 2"
    incus exec --project "$project" local:web -- sh -c "echo round $round > /root/state"
    job
    sleep 1
done

echo
echo "==> the standby now holds stopped, inert replicas:"
incus list standby: --project "$project" -c nsS
for name in web db files; do
    echo "standby:$name snapshots: $(incus snapshot list --project "$project" "standby:$name" -f csv -c n | tr '\n' ' ')"
    echo "  boot.autostart=$(incus config get --project "$project" "standby:$name" boot.autostart)"
done
echo "(incus-prune ran on the primary after the push: the next push drops the pruned snapshot"
echo " from the standby too, since a replica mirrors its source.)"
echo
echo "The replica of web holds the state of its newest snapshot:"
incus file pull --project "$project" standby:web/root/state -
echo
echo "Remove the demo with: scripts/demo.sh --clean"
