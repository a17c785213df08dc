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
#
# Everything happens in a project of its own, "bench" (INCUS_BENCH_PROJECT overrides), created
# on both lab daemons and deleted with its instances when the script ends, however it ends.
# Nothing outside that project is touched, but for the archive points the history part makes
# on the standby (project incus-standby-archive, named after its instances), deleted with them.
# The lab is scripts/lab.sh's (INCUS_LAB_DIR and its ports select another one).
# BENCH_NO_BUILD=1 skips the release build.

# The report's Markdown has backquotes in single-quoted strings: not shell expansions.
# shellcheck disable=SC2016
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

QUICK=false
ONLY=
USAGE="usage: $0 [--quick] [--only failover|history|scale]"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=true ;;
        --only)
            [ $# -ge 2 ] || { echo "bench: --only needs a part ($USAGE)" >&2; exit 2; }
            ONLY=$2
            shift
            ;;
        --only=*) ONLY=${1#--only=} ;;
        -h | --help) awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "bench: unknown argument: $1 ($USAGE)" >&2; exit 2 ;;
    esac
    shift
done
case "$ONLY" in
    "" | failover | history | scale) ;;
    *) echo "bench: unknown part for --only: $ONLY (the parts are failover, history and scale)" >&2; exit 2 ;;
esac
# part NAME: whether this run measures that part ("main": sections 1 to 6, "failover": 7 and 8,
# "history": 9, "scale": 10, only with --only scale).
part() {
    if [ -z "$ONLY" ]; then [ "$1" != scale ]; else [ "$ONLY" = "$1" ]; fi
}

if [ "$QUICK" = true ]; then
    REPS=1 N_SNAP=20 N_PUSH=5 BIG_MB=100 N_PROMOTE=2 FAILBACK_MB=50 HISTORY_MB=50 OUT=$REPO/target/bench-quick.md
    scale_sizes=${INCUS_BENCH_SCALE_SIZES:-10 20}
else
    REPS=3 N_SNAP=50 N_PUSH=20 BIG_MB=400 N_PROMOTE=5 FAILBACK_MB=100 HISTORY_MB=200 OUT=$REPO/docs/bench.md
    scale_sizes=${INCUS_BENCH_SCALE_SIZES:-10 100 1000}
fi
# The scale part's numbers of instances, ascending (its instances are named sc-00001 …).
read -r -a SCALE_SIZES <<<"$scale_sizes"
[ ${#SCALE_SIZES[@]} -gt 0 ] || { echo "bench: INCUS_BENCH_SCALE_SIZES names no number of instances" >&2; exit 2; }
for n in "${SCALE_SIZES[@]}"; do
    case "$n" in
        *[!0-9]* | 0*) echo "bench: INCUS_BENCH_SCALE_SIZES: not a number of instances: $n" >&2; exit 2 ;;
    esac
    [ "$n" -le 99999 ] || { echo "bench: INCUS_BENCH_SCALE_SIZES: at most 99999 instances: $n" >&2; exit 2; }
done
mapfile -t SCALE_SIZES < <(printf '%s\n' "${SCALE_SIZES[@]}" | sort -n -u)
PROJECT=${INCUS_BENCH_PROJECT:-bench}
MARK="incus-standby benchmark (scripts/bench.sh); deleted when the benchmark ends"
JOBS=4

# Nothing here reads the caller's stdin; the tools must not mistake it for piped records.
exec </dev/null
unset INCUS_PROJECT INCUS_REMOTE 2>/dev/null || true

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# build and lab

if [ ! -x /usr/bin/time ]; then
    log "installing GNU time (/usr/bin/time)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y time >&2 || die "cannot install the time package"
fi
if [ "${BENCH_NO_BUILD:-}" != 1 ]; then
    log "building the tools (release)"
    cargo build --release --workspace --bins --examples >&2
fi
BIN=$REPO/target/release
for b in incus-snap incus-push incus-failover examples/policy_bench; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing: build with cargo build --release --workspace --bins --examples"
done
scripts/lab.sh up
eval "$(scripts/lab.sh env)"
PRIMARY_PID=$(cat "$INCUS_LAB_DIR/primary/lab.pid")
STANDBY_PID=$(cat "$INCUS_LAB_DIR/standby/lab.pid")
HZ=$(getconf CLK_TCK)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/incus-bench.XXXXXX")

# ---------------------------------------------------------------------------------------
# the bench project, on both servers

CREATED=()

project_exists() { incus project show "$1:$PROJECT" >/dev/null 2>&1; }

# delete_instances REMOTE: deletes the project's instances named on stdin (one a line) from
# REMOTE, with their snapshots: 50 per `incus delete`, 4 of those at once (the scale part has
# thousands).
delete_instances() {
    sed "s/^/$1:/" | xargs -r -n 50 -P "$JOBS" incus delete --project "$PROJECT" --force
}

# Deletes the project's instances (and with them their snapshots), then the project.
drop_project() {
    local r=$1
    project_exists "$r" || return 0
    incus list "$r:" --project "$PROJECT" -f csv -c n | delete_instances "$r"
    incus project delete "$r:$PROJECT" >/dev/null
}

# The history part's archive points: instances in ARCHIVE_PROJECT on the standby, named
# NAME--SNAPSHOT after the bench instance NAME they were cloned from.
ARCHIVE_PROJECT=incus-standby-archive
HISTORY_NAMES=()     # the instances of the history part (whose archive points to delete)
ARCHIVE_EXISTED=     # whether ARCHIVE_PROJECT existed on the standby before the history part

# archives_of NAME: the archive points on the standby cloned from the bench project's NAME
# (named NAME--… and marked as archives of PROJECT/NAME/…).
archives_of() {
    local a of
    incus project show "standby:$ARCHIVE_PROJECT" >/dev/null 2>&1 || return 0
    while IFS= read -r a; do
        case "$a" in "$1--"*) ;; *) continue ;; esac
        of=$(incus config get --project "$ARCHIVE_PROJECT" "standby:$a" user.incus-standby.archive-of 2>/dev/null || true)
        case "$of" in "$PROJECT/$1/"*) echo "$a" ;; esac
    done < <(incus list standby: --project "$ARCHIVE_PROJECT" -f csv -c n)
}
drop_archives_of() { # NAME
    local a names=()
    while IFS= read -r a; do [ -n "$a" ] && names+=("standby:$a"); done < <(archives_of "$1")
    if [ ${#names[@]} -gt 0 ]; then incus delete --project "$ARCHIVE_PROJECT" --force "${names[@]}"; fi
}
# Deletes the archive points of the history part's instances, and the archive project when the
# history part made it and it is empty now.
drop_history_archives() {
    local n
    for n in "${HISTORY_NAMES[@]}"; do drop_archives_of "$n"; done
    if [ "$ARCHIVE_EXISTED" = no ] && incus project show "standby:$ARCHIVE_PROJECT" >/dev/null 2>&1 &&
        [ -z "$(incus list standby: --project "$ARCHIVE_PROJECT" -f csv -c n)" ]; then
        incus project delete "standby:$ARCHIVE_PROJECT" >/dev/null
    fi
}

# The script's own stderr, for on_exit: an interruption can end the script inside a function
# whose stderr goes to a file (sc_tool's, `bi … 2>FILE`). Opened after `scripts/lab.sh up`, so
# that no lab daemon inherits it.
exec {STDERR}>&2

on_exit() {
    local rc=$? r
    trap - EXIT INT TERM
    set +e
    exec 2>&"$STDERR"
    if [ ${#HISTORY_NAMES[@]} -gt 0 ]; then
        log "deleting the history part's archive points on standby (project $ARCHIVE_PROJECT)"
        drop_history_archives || log "warning: could not delete the archive points of ${HISTORY_NAMES[*]}"
    fi
    for r in "${CREATED[@]}"; do
        log "deleting project $PROJECT on $r"
        drop_project "$r" || log "warning: could not delete project $PROJECT on $r"
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for r in local standby; do
    if project_exists "$r"; then
        desc=$(incus project get "$r:$PROJECT" description --property 2>/dev/null || true)
        [ "$desc" = "$MARK" ] ||
            die "project $PROJECT already exists on $r and was not made by this script; set INCUS_BENCH_PROJECT"
        log "removing a leftover project $PROJECT on $r (from an interrupted run)"
        drop_project "$r"
    fi
    printf 'description: %s\nconfig:\n  features.images: "false"\n  features.profiles: "false"\n' "$MARK" |
        incus project create "$r:$PROJECT" >/dev/null
    CREATED+=("$r")
done

# The incus CLI in the bench project (the flag goes last: not for `incus exec … -- COMMAND`).
bi() { incus "$@" --project "$PROJECT"; }

create_instances() { # PREFIX COUNT: stopped busybox containers PREFIX-01 …
    local i
    for i in $(seq -w 1 "$2"); do bi init busybox "$1-$i" -q >/dev/null 2>&1 || bi init busybox "$1-$i" -q; done
}

instances_named() { # PREFIX: names of the project's instances that start with PREFIX-
    bi list local: -f csv -c n | grep "^$1-" || true
}

# ---------------------------------------------------------------------------------------
# measuring

now() { date +%s.%N; }

# CPU seconds (user+system, with waited-for children such as rsync) of both lab daemons.
daemon_ticks() {
    cat "/proc/$PRIMARY_PID/stat" "/proc/$STANDBY_PID/stat" | awk '{ s += $14 + $15 + $16 + $17 } END { print s }'
}

# CPU seconds of this shell's finished children (the CLI processes, our tools) in file $1.
# `times` runs here, in this shell: in a command substitution it would count the subshell's.
children_cpu_to() {
    times >"$1"
}
cpu_of() {
    awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); s += p[1] * 60 + p[2] } print s }' "$1"
}

# timed CASE SIDE COMMAND…: runs the command and appends "wall daemon_cpu client_cpu" to
# $TMP/CASE.SIDE.
timed() {
    local key=$1.$2 c0 c1 t0 t1 u0 u1
    shift 2
    children_cpu_to "$TMP/times0"; c0=$(daemon_ticks); t0=$(now)
    "$@"
    t1=$(now); c1=$(daemon_ticks); children_cpu_to "$TMP/times1"
    u0=$(cpu_of "$TMP/times0"); u1=$(cpu_of "$TMP/times1")
    awk -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v u0="$u0" -v u1="$u1" -v hz="$HZ" \
        'BEGIN { printf "%.3f %.2f %.2f\n", t1 - t0, (c1 - c0) / hz, u1 - u0 }' >>"$TMP/$key"
    log "  $key: $(tail -n 1 "$TMP/$key" | awk '{ printf "%.3f s wall, daemons %.2f s CPU", $1, $2 }')"
}

# rss LABEL COMMAND…: runs a tool of ours, appending "elapsed_s peak_rss_kib" to $TMP/rss.LABEL.
rss() {
    local label=$1
    shift
    /usr/bin/time -f '%e %M' -a -o "$TMP/rss.$label" "$@"
}

# Median of column COL of a results file (the lower middle one for an even count).
median() {
    awk -v c="$2" '{ print $c }' "$1" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
all_values() {
    awk -v c="$2" '{ printf "%s%s", sep, $c; sep = ", " }' "$1"
}
max_rss() { # LABEL…: the largest peak RSS in KiB over the labels' files
    local f
    for f in "$@"; do grep -hE '^[0-9.]+ [0-9]+$' "$TMP/rss.$f" | cut -d' ' -f2 || true; done | sort -n | tail -n 1
}

# A pause so that incus-snap's default names (second resolution) never repeat.
next_second() { sleep 1.1; }

# Stops the run if a tool reported anything but the statuses expected.
expect_statuses() { # FILE COUNT STATUS_REGEX
    local got
    got=$(grep -c '"type":"push"' "$1" || true)
    [ "$got" -eq "$2" ] || die "expected $2 push records in $1, got $got: $(head -c 600 "$1")"
    if grep '"type":"push"' "$1" | grep -vqE "\"status\":\"($3)\""; then
        die "unexpected push status in $1: $(grep -vE "\"status\":\"($3)\"" "$1" | head -n 3)"
    fi
}

# ---------------------------------------------------------------------------------------
# sections 1 to 6 (not with --only failover)

if part main; then

    # -----------------------------------------------------------------------------------
    # case 1: incus-snap --all vs a loop of `incus snapshot create`

    log "case 1: creating $N_SNAP stopped instances"
    create_instances s "$N_SNAP"
    mapfile -t SNAP_SET < <(instances_named s)
    [ ${#SNAP_SET[@]} -eq "$N_SNAP" ] || die "expected $N_SNAP instances, found ${#SNAP_SET[@]}"

    c1_tool() { rss snap "$BIN/incus-snap" --project "$PROJECT" --all >"$TMP/c1.out"; }
    c1_cli() { local i; for i in "${SNAP_SET[@]}"; do bi snapshot create "$i"; done; }

    for rep in $(seq "$REPS"); do
        log "case 1, run $rep/$REPS"
        next_second
        timed c1 tool c1_tool
        [ "$(grep -c '"type":"snapshot"' "$TMP/c1.out")" -eq "$N_SNAP" ] || die "incus-snap did not take $N_SNAP snapshots"
        timed c1 cli c1_cli
    done
    # Every instance now has 2 × REPS snapshots.
    bad=$(bi list local: -f csv -c nS | awk -F, -v n=$((2 * REPS)) '$1 ~ /^s-/ && $2 != n' | head -n 3)
    [ -z "$bad" ] || die "case 1: unexpected snapshot counts: $bad"
    log "case 1: deleting its instances"
    bi delete --force "${SNAP_SET[@]}"

    # -----------------------------------------------------------------------------------
    # cases 2 and 3: incus-push vs a loop of `incus copy --refresh`

    log "cases 2-3: creating $N_PUSH instances with one snapshot each, replicated"
    create_instances p "$N_PUSH"
    mapfile -t PUSH_SET < <(instances_named p)
    [ ${#PUSH_SET[@]} -eq "$N_PUSH" ] || die "expected $N_PUSH instances, found ${#PUSH_SET[@]}"
    "$BIN/incus-snap" --project "$PROJECT" --all >/dev/null
    "$BIN/incus-push" --project "$PROJECT" --all --to standby --jobs "$JOBS" >"$TMP/setup.out"
    expect_statuses "$TMP/setup.out" "$N_PUSH" copied

    c2_tool() {
        rss push2 "$BIN/incus-push" --project "$PROJECT" --all --to standby --jobs "$JOBS" >"$TMP/c2.out"
    }
    c2_cli() {
        local i
        for i in "${PUSH_SET[@]}"; do bi copy -q --target-project "$PROJECT" "$i" "standby:$i" --refresh; done
    }
    c3_tool() {
        rss snap3 "$BIN/incus-snap" --project "$PROJECT" --all |
            rss push3 "$BIN/incus-push" --to standby --jobs "$JOBS" >"$TMP/c3.out"
    }
    c3_cli() {
        local i
        for i in "${PUSH_SET[@]}"; do
            bi snapshot create "$i"
            bi copy -q --target-project "$PROJECT" "$i" "standby:$i" --refresh
        done
    }

    # Our tool's runs come first: a CLI refresh replaces the replica's configuration (with the
    # source's, volatile keys included), which drops incus-push's marker, so after it incus-push
    # would (rightly) refuse the replicas without --adopt.
    for rep in $(seq "$REPS"); do
        log "case 2 (nothing new), incus-push run $rep/$REPS"
        timed c2 tool c2_tool
        expect_statuses "$TMP/c2.out" "$N_PUSH" up-to-date
    done
    for rep in $(seq "$REPS"); do
        log "case 3 (one new snapshot each), incus-snap | incus-push run $rep/$REPS"
        next_second
        timed c3 tool c3_tool
        expect_statuses "$TMP/c3.out" "$N_PUSH" "[a-z-]+"
        grep '"type":"push"' "$TMP/c3.out" | grep -q '"status":"up-to-date"' &&
            die "case 3: incus-push found nothing new: $(head -n 2 "$TMP/c3.out")"
    done
    for rep in $(seq "$REPS"); do
        log "case 2 (nothing new), CLI loop run $rep/$REPS"
        timed c2 cli c2_cli
    done
    for rep in $(seq "$REPS"); do
        log "case 3 (one new snapshot each), CLI loop run $rep/$REPS"
        timed c3 cli c3_cli
    done
    # The replicas have every snapshot of their source.
    for i in "${PUSH_SET[@]}"; do
        src=$(incus query "local:/1.0/instances/$i/snapshots?project=$PROJECT" | grep -o '"[^"]*"' | sort)
        dst=$(incus query "standby:/1.0/instances/$i/snapshots?project=$PROJECT" | grep -o '"[^"]*"' | sort)
        [ "$src" = "$dst" ] || die "case 3: $i: the replica's snapshots differ: $src vs $dst"
    done
    log "cases 2-3: deleting their instances"
    bi delete --force "${PUSH_SET[@]}"
    mapfile -t replicas < <(bi list standby: -f csv -c n)
    [ ${#replicas[@]} -eq 0 ] || bi delete --force "${replicas[@]/#/standby:}"

    # -----------------------------------------------------------------------------------
    # case 4: one full copy of an instance with BIG_MB MB of random data

    log "case 4: an instance with $BIG_MB MB of random data"
    bi launch busybox big -q >/dev/null 2>&1 || bi launch busybox big -q
    incus exec --project "$PROJECT" big -- dd if=/dev/urandom of=/root/random bs=1M count="$BIG_MB" 2>/dev/null
    incus exec --project "$PROJECT" big -- sync
    timeout 60 incus stop --project "$PROJECT" big || bi stop --force big
    drop_replica() { if bi info standby:big >/dev/null 2>&1; then bi delete --force standby:big; fi; }
    c4_tool() { rss push4 "$BIN/incus-push" --project "$PROJECT" --to standby big >"$TMP/c4.out"; }
    c4_cli() { bi copy -q --target-project "$PROJECT" big standby:big; }
    replica_bytes() { stat -c %s "$INCUS_LAB_STANDBY_DIR/storage-pools/default/containers/${PROJECT}_big/rootfs/root/random"; }
    for rep in $(seq "$REPS"); do
        log "case 4, run $rep/$REPS"
        drop_replica; sync
        timed c4 tool c4_tool
        expect_statuses "$TMP/c4.out" 1 copied
        [ "$(replica_bytes)" -eq $((BIG_MB * 1024 * 1024)) ] || die "case 4: the replica's data is incomplete"
        drop_replica; sync
        timed c4 cli c4_cli
        [ "$(replica_bytes)" -eq $((BIG_MB * 1024 * 1024)) ] || die "case 4: the CLI's replica is incomplete"
    done
    drop_replica

    # -----------------------------------------------------------------------------------
    # case 6: incus-prune's retention policy on 10,000 snapshots

    for rep in $(seq "$REPS"); do
        log "case 6, run $rep/$REPS"
        line=$("$BIN/examples/policy_bench")
        log "  $line"
        ms=$(sed -n 's/^policy: \([0-9]*\) snapshots in \([0-9.]*\) ms$/\2/p' <<<"$line")
        [ -n "$ms" ] || die "unexpected policy_bench output: $line"
        echo "$ms" >>"$TMP/c6"
        POLICY_COUNT=$(sed -n 's/^policy: \([0-9]*\) snapshots.*/\1/p' <<<"$line")
    done
fi

# ---------------------------------------------------------------------------------------
# the failover part: sections 7 (planned promotion) and 8 (failback)

# drop_named NAME: the project's instances NAME and NAME-… on both servers.
drop_named() {
    local r n names
    for r in local standby; do
        names=()
        while IFS= read -r n; do [ -n "$n" ] && names+=("$r:$n"); done \
            < <(bi list "$r:" -f csv -c n | grep -E "^$1(-|\$)" || true)
        if [ ${#names[@]} -gt 0 ]; then bi delete --force "${names[@]}"; fi
    done
}
status_of() { bi info "$1" | sed -n 's/^Status: //p'; } # [REMOTE:]NAME: RUNNING, STOPPED, …
# volume_dir SERVER POOL NAME [PROJECT]: the directory of an instance's volume in the lab.
volume_dir() { echo "$INCUS_LAB_DIR/$1/storage-pools/$2/containers/${4:-$PROJECT}_$3"; }
launch() { # NAME [FLAGS…]: a running busybox container
    bi launch busybox "$@" -q 2>"$TMP/launch.err" || die "launching $1: $(cat "$TMP/launch.err")"
}
# "snapshot created_at" for each snapshot of [REMOTE:]NAME (the top-level keys of each object).
snapshot_times() {
    local r=local n=$1
    case "$1" in *:*) r=${1%%:*} n=${1#*:} ;; esac
    incus query "$r:/1.0/instances/$n/snapshots?project=$PROJECT&recursion=1" |
        awk -F'"' '$1 == "\t\t" && $2 == "created_at" { t = $4 } $1 == "\t\t" && $2 == "name" && t != "" { print $4, t; t = "" }'
}
# resent BEFORE AFTER: the snapshots whose creation time changed: deleted and received again.
resent() {
    awk 'NR == FNR { t[$1] = $2; next } ($1 in t) && t[$1] != $2 { printf "%s%s", sep, $1; sep = " " } END { print "" }' "$1" "$2"
}
# The partial migrations Incus leaves in the lab's pools when a transfer fails.
migration_leftovers() {
    ls -d "$INCUS_LAB_DIR"/primary/storage-pools/*/containers/migration.* \
        "$INCUS_LAB_DIR"/standby/storage-pools/*/containers/migration.* 2>/dev/null || true
}

if part failover; then
    FO_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
    FO_LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
    MIGRATIONS_BEFORE=$(migration_leftovers)

    # -----------------------------------------------------------------------------------
    # case 7: incus-failover promote vs the seed's manual sequence, per instance

    mapfile -t PROMOTE_SET < <(for i in $(seq "$N_PROMOTE"); do printf 'f-%02d\n' "$i"; done)

    # Fresh running instances with one snapshot each, replicated (their old copies deleted).
    c7_setup() {
        local i
        drop_named f
        for i in "${PROMOTE_SET[@]}"; do launch "$i"; done
        "$BIN/incus-snap" --project "$PROJECT" "${PROMOTE_SET[@]}" >/dev/null
        "$BIN/incus-push" --project "$PROJECT" --to standby "${PROMOTE_SET[@]}" >"$TMP/c7-setup.out"
        expect_statuses "$TMP/c7-setup.out" "$N_PROMOTE" copied
    }
    # c7_check SIDE: every replica runs; every primary copy is stopped, with autostart off.
    c7_check() {
        local i
        for i in "${PROMOTE_SET[@]}"; do
            [ "$(status_of "standby:$i")" = RUNNING ] || die "case 7 ($1): standby:$i does not run"
            [ "$(status_of "$i")" = STOPPED ] || die "case 7 ($1): the primary copy of $i is not stopped"
            [ "$(bi config get "$i" boot.autostart)" = false ] || die "case 7 ($1): $i has autostart on"
        done
    }
    c7_tool() {
        rss promote "$BIN/incus-failover" promote --project "$PROJECT" --standby standby \
            "${PROMOTE_SET[@]}" >"$TMP/c7.out"
    }
    c7_cli() {
        local i
        for i in "${PROMOTE_SET[@]}"; do
            bi config set "$i" boot.autostart=false
            bi stop "$i"
            bi snapshot create "$i" final
            bi copy -q --target-project "$PROJECT" "$i" "standby:$i" --refresh --stateless
            bi snapshot restore "standby:$i" final
            bi config unset "standby:$i" boot.autostart
            bi start "standby:$i"
        done
    }

    for rep in $(seq "$REPS"); do
        log "case 7 (planned promotion of $N_PROMOTE running instances), run $rep/$REPS: replicating afresh"
        c7_setup
        timed c7 tool c7_tool
        got=$(grep -c '"type":"promoted"' "$TMP/c7.out" || true)
        if [ "$got" -ne "$N_PROMOTE" ] || grep -qE '"type":"error"|"already":true' "$TMP/c7.out"; then
            die "case 7: incus-failover promote: $(grep -v '"type":"step"' "$TMP/c7.out" | head -c 800)"
        fi
        sed -n 's/^{"type":"promoted".*"seconds":\([0-9.]*\).*/\1/p' "$TMP/c7.out" >>"$TMP/c7.records"
        c7_check incus-failover
        log "case 7, run $rep/$REPS: replicating afresh for the CLI"
        c7_setup
        timed c7 cli c7_cli
        c7_check CLI
    done
    log "case 7: deleting its instances"
    drop_named f

    # -----------------------------------------------------------------------------------
    # case 8: incus-failover failback on each pool, and the pushes after it

    FAILBACK_POOLS=(default btrfs)
    WRITTEN="written on the standby after the promotion"
    for pool in "${FAILBACK_POOLS[@]}"; do
        for r in local standby; do
            incus storage show "$r:$pool" >/dev/null 2>&1 || die "case 8: there is no pool $pool on $r"
        done
    done

    # c8_setup NAME POOL: FAILBACK_MB MB of random data on POOL, replicated to the same pool,
    # promoted, then a file written in the standby copy.
    c8_setup() {
        local name=$1 pool=$2
        launch "$name" -s "$pool"
        incus exec --project "$PROJECT" "$name" -- dd if=/dev/urandom of=/root/random bs=1M count="$FAILBACK_MB" 2>/dev/null
        incus exec --project "$PROJECT" "$name" -- sync
        "$BIN/incus-snap" --project "$PROJECT" "$name" >/dev/null
        "$BIN/incus-push" --project "$PROJECT" --to standby --storage "$pool" "$name" >"$TMP/c8-setup.out"
        expect_statuses "$TMP/c8-setup.out" 1 copied
        [ -d "$(volume_dir standby "$pool" "$name")" ] || die "case 8: the replica of $name is not on the standby's pool $pool"
        "$BIN/incus-failover" promote --project "$PROJECT" --standby standby "$name" >"$TMP/c8-promote.out"
        grep -q '"type":"promoted"' "$TMP/c8-promote.out" ||
            die "case 8: promoting $name: $(grep -v '"type":"step"' "$TMP/c8-promote.out" | head -c 600)"
        incus exec --project "$PROJECT" "standby:$name" -- sh -c "echo '$WRITTEN' >/root/written-on-standby && sync"
    }
    # The failback never stops the run: its records say how it went.
    c8_failback() {
        rss failback "$BIN/incus-failover" failback --project "$PROJECT" --standby standby "$1" \
            >"$TMP/c8.out" 2>"$TMP/c8.err" || true
    }
    # c8_check NAME POOL: the instance runs on the primary again, on POOL, with what was written
    # on the standby; the standby copy is stopped; the old primary copy is kept aside.
    c8_check() {
        local name=$1 pool=$2 aside
        [ "$(status_of "$name")" = RUNNING ] || die "case 8: $name does not run on the primary after the failback"
        [ "$(status_of "standby:$name")" = STOPPED ] || die "case 8: standby:$name still runs after the failback"
        [ "$(incus exec --project "$PROJECT" "$name" -- cat /root/written-on-standby)" = "$WRITTEN" ] ||
            die "case 8: $name lacks the file written on the standby"
        [ -d "$(volume_dir primary "$pool" "$name")" ] || die "case 8: $name is not on the primary's pool $pool any more"
        aside=$(sed -n 's/.*"kept_aside":"\([^"]*\)".*/\1/p' "$TMP/c8.out")
        { [ -n "$aside" ] && [ "$(status_of "$aside")" = STOPPED ]; } || die "case 8: no stopped old copy kept aside: $(cat "$TMP/c8.out")"
    }
    c8_push() { "$BIN/incus-push" --project "$PROJECT" --to standby "$1" >"$TMP/c8-push.out"; }
    c8_snap_push() {
        "$BIN/incus-snap" --project "$PROJECT" "$1" | "$BIN/incus-push" --to standby >"$TMP/c8-push.out"
    }
    push_status() { sed -n 's/^{"type":"push".*"status":"\([^"]*\)".*/\1/p' "$TMP/c8-push.out"; }

    for pool in "${FAILBACK_POOLS[@]}"; do
        key=c8-$pool
        for rep in $(seq "$REPS"); do
            name=fb-$pool-$rep
            log "case 8 (failback, $FAILBACK_MB MB on pool $pool), run $rep/$REPS: replicating and promoting $name"
            c8_setup "$name" "$pool"
            du -sb "$(volume_dir standby "$pool" "$name")" | cut -f1 >>"$TMP/$key.bytes"
            bi list standby: -f csv -c nS | awk -F, -v n="$name" '$1 == n { print $2 }' >>"$TMP/$key.snapshots"
            timed "$key" failback c8_failback "$name"
            if ! grep -q '"type":"failed-back"' "$TMP/c8.out" || grep -q '"type":"error"' "$TMP/c8.out"; then
                msg=$(sed -n 's/^{"type":"error".*"message":"\(.*\)"}$/\1/p' "$TMP/c8.out" | head -n 1)
                [ -n "$msg" ] || msg=$(head -c 600 "$TMP/c8.err")
                log "  case 8: the failback of $name FAILED: $msg"
                tail -n 1 "$TMP/$key.failback" >>"$TMP/$key.failed"
                sed -i '$d' "$TMP/$key.failback"
                printf '%s\n' "$msg" >>"$TMP/$key.errors"
                if [ ! -e "$TMP/$key.state" ]; then
                    {
                        echo "primary: $(bi list local: -f csv -c ns | awk -F, -v n="$name" 'index($1, n) == 1 { printf "%s`%s` %s", sep, $1, $2; sep = ", " }')"
                        echo "standby: $(bi list standby: -f csv -c ns | awk -F, -v n="$name" 'index($1, n) == 1 { printf "%s`%s` %s", sep, $1, $2; sep = ", " }')"
                    } >"$TMP/$key.state"
                fi
                # No second run: a failback resumed after a failed final sync would act on a
                # half-made primary copy. The instances are deleted as they are.
                drop_named "$name" || log "warning: could not delete $name after its failed failback"
                continue
            fi
            c8_check "$name" "$pool"
            # The plain push right after, then the first and the second push of a new snapshot.
            timed "$key" push0 c8_push "$name"
            push_status >>"$TMP/$key.push0.status"
            snapshot_times "standby:$name" >"$TMP/times.0"
            next_second
            timed "$key" push1 c8_snap_push "$name"
            [ "$(push_status)" = refreshed ] || die "case 8: the first push with a new snapshot: $(cat "$TMP/c8-push.out")"
            snapshot_times "standby:$name" >"$TMP/times.1"
            resent "$TMP/times.0" "$TMP/times.1" >>"$TMP/$key.resent1"
            first=$(tail -n 1 "$TMP/$key.resent1" | cut -d' ' -f1)
            if [ -n "$first" ] && [ ! -e "$TMP/$key.example" ]; then
                echo "$first $(awk -v s="$first" '$1 == s { print $2 }' "$TMP/times.0") $(awk -v s="$first" '$1 == s { print $2 }' "$TMP/times.1")" >"$TMP/$key.example"
            fi
            next_second
            timed "$key" push2 c8_snap_push "$name"
            [ "$(push_status)" = refreshed ] || die "case 8: the second push with a new snapshot: $(cat "$TMP/c8-push.out")"
            snapshot_times "standby:$name" >"$TMP/times.2"
            resent "$TMP/times.1" "$TMP/times.2" >>"$TMP/$key.resent2"
            drop_named "$name"
        done
    done
    MIGRATIONS_LEFT=$(comm -13 <(echo "$MIGRATIONS_BEFORE" | sort) <(migration_leftovers | sort) | grep . || true)
    if [ -n "$MIGRATIONS_LEFT" ]; then
        log "warning: failed transfers left partial migrations in the lab's pools (not removed): $(echo "$MIGRATIONS_LEFT" | tr '\n' ' ')"
    fi
    FO_LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
fi

# ---------------------------------------------------------------------------------------
# the history part: section 9 (archive points)

if part history; then
    HI_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
    HI_LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
    HISTORY_POOLS=(default btrfs)
    for pool in "${HISTORY_POOLS[@]}"; do
        for r in local standby; do
            incus storage show "$r:$pool" >/dev/null 2>&1 || die "case 9: there is no pool $pool on $r"
        done
    done
    if incus project show "standby:$ARCHIVE_PROJECT" >/dev/null 2>&1; then ARCHIVE_EXISTED=yes; else ARCHIVE_EXISTED=no; fi

    # c9_setup NAME POOL: HISTORY_MB MB of random data on POOL, stopped, snapshots s1 and s2,
    # replicated to the standby's pool POOL; then, on the primary only, s1 deleted and s3 taken.
    c9_setup() {
        local name=$1 pool=$2
        HISTORY_NAMES+=("$name")
        drop_archives_of "$name" # left by an interrupted run
        launch "$name" -s "$pool"
        incus exec --project "$PROJECT" "$name" -- dd if=/dev/urandom of=/root/random bs=1M count="$HISTORY_MB" 2>/dev/null
        incus exec --project "$PROJECT" "$name" -- sync
        timeout 60 incus stop --project "$PROJECT" "$name" || bi stop --force "$name"
        bi snapshot create "$name" s1
        bi snapshot create "$name" s2
        "$BIN/incus-push" --project "$PROJECT" --to standby --storage "$pool" "$name" >"$TMP/c9-setup.out"
        expect_statuses "$TMP/c9-setup.out" 1 copied
        [ -d "$(volume_dir standby "$pool" "$name")" ] || die "case 9: the replica of $name is not on the standby's pool $pool"
        bi snapshot delete "$name" s1
        bi snapshot create "$name" s3
    }
    # c9_push SIDE NAME [OPTIONS…]: the timed push (SIDE archive or plain).
    c9_push() {
        local side=$1 name=$2
        shift 2
        rss "history-$side" "$BIN/incus-push" --to standby --project "$PROJECT" "$@" "$name" >"$TMP/c9.out"
    }
    # c9_check SIDE NAME: the push refreshed the replica to s2 and s3, and kept s1 as an archive
    # point (archive side) or none (plain side).
    c9_check() {
        local side=$1 name=$2 snaps archived
        expect_statuses "$TMP/c9.out" 1 refreshed
        snaps=$(incus query "standby:/1.0/instances/$name/snapshots?project=$PROJECT" | grep -o '/snapshots/[^"?]*' | sed 's|.*/||' | sort | tr '\n' ' ')
        [ "$snaps" = "s2 s3 " ] || die "case 9 ($side): the replica of $name has snapshots $snaps, not s2 s3"
        archived=$(archives_of "$name" | tr '\n' ' ')
        if [ "$side" = archive ]; then
            grep -q "\"archived\":\[\"$name--s1\"\]" "$TMP/c9.out" || die "case 9: the push record of $name does not list $name--s1 as archived: $(cat "$TMP/c9.out")"
            [ "$archived" = "$name--s1 " ] || die "case 9: archive points of $name on the standby: '$archived', not $name--s1"
            [ "$(incus query "standby:/1.0/instances/$name--s1/snapshots?project=$ARCHIVE_PROJECT" | grep -c /snapshots/ || true)" -eq 0 ] ||
                die "case 9: the archive point $name--s1 has snapshots"
        else
            if grep -q '"archived"' "$TMP/c9.out"; then die "case 9: the plain push of $name archived something: $(cat "$TMP/c9.out")"; fi
            [ -z "$archived" ] || die "case 9: the plain push of $name left archive points: $archived"
        fi
    }

    for pool in "${HISTORY_POOLS[@]}"; do
        key=c9-$pool
        driver=$(incus storage show "standby:$pool" | sed -n 's/^driver: //p')
        opts=(--archive-keep-last 5)
        [ "$driver" = dir ] && opts+=(--archive-full-copies)
        echo "${opts[*]}" >"$TMP/$key.opts"
        for rep in $(seq "$REPS"); do
            a=h-$pool-a-$rep p=h-$pool-p-$rep
            log "case 9 (archive point, $HISTORY_MB MB on pool $pool), run $rep/$REPS: making $a and $p, replicated"
            c9_setup "$a" "$pool"
            c9_setup "$p" "$pool"
            # The two sides alternate which goes first.
            for side in $(if [ $((rep % 2)) -eq 1 ]; then echo archive plain; else echo plain archive; fi); do
                if [ "$side" = archive ]; then
                    timed "$key" archive c9_push archive "$a" "${opts[@]}"
                    c9_check archive "$a"
                else
                    timed "$key" plain c9_push plain "$p"
                    c9_check plain "$p"
                fi
            done
            # The disk cost of the archive point, next to the replica's.
            # (Looked for on every pool: Incus decides where the clone goes.)
            arch=
            for d in "$INCUS_LAB_DIR"/standby/storage-pools/*/containers/"${ARCHIVE_PROJECT}_$a--s1"; do
                if [ -d "$d" ]; then arch=$d; break; fi
            done
            [ -n "$arch" ] || die "case 9: no volume $(volume_dir standby '*' "$a--s1" "$ARCHIVE_PROJECT") for the archive point $a--s1"
            echo "$arch" >"$TMP/$key.path"
            arch_pool=${arch#"$INCUS_LAB_DIR"/standby/storage-pools/}
            echo "${arch_pool%%/*}" >>"$TMP/$key.archive-pool"
            arch_driver=$(incus storage show "standby:${arch_pool%%/*}" | sed -n 's/^driver: //p')
            du -sb "$(volume_dir standby "$pool" "$a")" | cut -f1 >>"$TMP/$key.replica-bytes"
            du -sb "$arch" | cut -f1 >>"$TMP/$key.du"
            if [ "$arch_driver" = btrfs ]; then
                sync
                # Total, exclusive and shared bytes of the archive point's subvolume.
                if btrfs filesystem du -s --raw "$arch" >"$TMP/c9-btrfs.out" 2>"$TMP/c9-btrfs.err"; then
                    awk 'NR == 2 { print $1, $2, $3 }' "$TMP/c9-btrfs.out" >>"$TMP/$key.btrfs"
                else
                    log "  btrfs filesystem du failed: $(head -c 300 "$TMP/c9-btrfs.err")"
                fi
            fi
            log "  archive point $a--s1: $(tail -n 1 "$TMP/$key.du") bytes (du -sb)$([ -s "$TMP/$key.btrfs" ] && echo ", btrfs total/exclusive/shared: $(tail -n 1 "$TMP/$key.btrfs")")"
            drop_archives_of "$a"
            drop_named "$a"
            drop_named "$p"
        done
    done
    HI_LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
fi

# ---------------------------------------------------------------------------------------
# the scale part: section 10 (only with --only scale)

SC_CASES=(snap first nothing one prune keep)

# sc_names N: the names of the scale part's N instances, sc-00001 …, sorted.
sc_names() { seq -f 'sc-%05g' 1 "$1"; }

# sc_create N: N stopped busybox containers sc-00001 … (root disk on the default profile's pool),
# made with `incus init`, JOBS at once; any that failed are made again one by one.
sc_create() {
    local i
    sc_names "$1" | xargs -n 1 -P "$JOBS" incus init busybox --project "$PROJECT" -q >/dev/null 2>&1 || true
    while IFS= read -r i; do
        bi init busybox "$i" -q >/dev/null 2>"$TMP/init.err" || die "scale: creating $i: $(cat "$TMP/init.err")"
    done < <(comm -23 <(sc_names "$1") <(bi list local: -f csv -c n | sort))
}

# sc_tool KEY COMMAND…: one run of a tool of ours with INCUS_STANDBY_STATS=1: its records to
# $TMP/KEY.out, its peak RSS to $TMP/rss.KEY, the number of API requests it reported (its
# "TOOL: stats: N API requests" line on stderr) to $TMP/KEY.api.
# With SC_TOLERATE=1 a failing run is noted in $TMP/KEY.failed instead of stopping the script.
sc_tool() {
    local key=$1
    shift
    if ! rss "$key" env INCUS_STANDBY_STATS=1 "$@" >"$TMP/$key.out" 2>"$TMP/$key.err"; then
        [ "${SC_TOLERATE:-}" = 1 ] || die "scale: $(basename "$1") failed: $(tail -c 800 "$TMP/$key.err")"
        grep '"type":"error"' "$TMP/$key.out" >"$TMP/$key.failed" || echo "$(basename "$1") failed" >"$TMP/$key.failed"
    fi
    sed -n 's/^[a-z-]*: stats: \([0-9][0-9]*\) API requests$/\1/p' "$TMP/$key.err" | tail -n 1 >"$TMP/$key.api"
    [ -s "$TMP/$key.api" ] ||
        die "scale: no \"stats: N API requests\" line from $(basename "$1"): $(tail -c 800 "$TMP/$key.err")"
}
records() { grep -c "\"type\":\"$2\"" "$1" || true; } # FILE TYPE: how many records of TYPE

# The CLI loops, over the instances SC_SET.
sc_cli_snapshot() { local i; for i in "${SC_SET[@]}"; do bi snapshot create "$i"; done; }
# sc_cli_refresh KEY: the loop of `incus copy --refresh`. Incus 6.0.4 sometimes fails one with
# "ETag doesn't match" (after the transfer the CLI reads the replica and updates its
# configuration with the ETag it read, and the daemon refuses it as changed in between): such a
# refresh is run again, as a script would have to, and noted in $TMP/KEY.retries.
sc_cli_refresh() {
    local i
    for i in "${SC_SET[@]}"; do
        bi copy -q --target-project "$PROJECT" "$i" "standby:$i" --refresh 2>"$TMP/copy.err" && continue
        printf '%s: %s\n' "$i" "$(tr '\n' ' ' <"$TMP/copy.err")" >>"$TMP/$1.retries"
        bi copy -q --target-project "$PROJECT" "$i" "standby:$i" --refresh 2>"$TMP/copy.err" ||
            die "scale: incus copy --refresh of $i failed twice: $(cat "$TMP/copy.err")"
    done
}
sc_cli_list() {
    local i
    for i in "${SC_SET[@]}"; do bi snapshot list "$i" -f csv; done >"$TMP/sc-list.out"
}
# sc_snap_all N: one more snapshot of every instance, with incus-snap (not timed).
sc_snap_all() {
    next_second
    "$BIN/incus-snap" --project "$PROJECT" --all >"$TMP/sc-snap.out"
    [ "$(records "$TMP/sc-snap.out" snapshot)" -eq "$1" ] || die "scale: incus-snap did not take $1 snapshots"
}
# snapshot_counts REMOTE: "NAME,SNAPSHOTS" for each of the scale part's instances there.
snapshot_counts() { bi list "$1:" -f csv -c nS | grep '^sc-' | sort; }
# The disk space (bytes, du) of the scale part's instances and snapshots on both lab daemons.
sc_disk() {
    {
        du -s -B1 -c "$INCUS_LAB_DIR"/primary/storage-pools/default/containers*/"${PROJECT}"_sc-* \
            "$INCUS_LAB_DIR"/standby/storage-pools/default/containers*/"${PROJECT}"_sc-* 2>/dev/null || true
    } | awk 'END { print $1 + 0 }'
}

if part scale; then
    SC_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
    SC_LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
    SC_START=$SECONDS
    for n in "${SCALE_SIZES[@]}"; do
        k=sc$n
        t0=$SECONDS
        log "scale, $n instances: creating them ($JOBS at once, not timed)"
        sc_create "$n"
        mapfile -t SC_SET < <(sc_names "$n")
        [ "$(bi list local: -f csv -c n | grep -c '^sc-')" -eq "$n" ] || die "scale: expected $n instances sc-…"
        echo $((SECONDS - t0)) >"$TMP/$k.create-s"

        log "scale, $n instances: 1. snapshots, incus-snap --all"
        next_second
        timed "$k-snap" tool sc_tool "$k-snap" "$BIN/incus-snap" --project "$PROJECT" --all
        [ "$(records "$TMP/$k-snap.out" snapshot)" -eq "$n" ] || die "scale: incus-snap did not take $n snapshots"
        log "scale, $n instances: 1. snapshots, CLI loop"
        timed "$k-snap" cli sc_cli_snapshot

        log "scale, $n instances: 2. first push (setup)"
        # The setup: a transfer that fails (rsync's connection cut once in 1000 here) is run
        # again by a second push, as the next cron run would, and noted.
        SC_TOLERATE=1 timed "$k-first" tool sc_tool "$k-first" "$BIN/incus-push" --project "$PROJECT" --all --to standby --jobs "$JOBS"
        if [ -s "$TMP/$k-first.failed" ]; then
            log "scale, $n instances: $(grep -c . "$TMP/$k-first.failed") transfer(s) of the first push failed; pushing again"
            "$BIN/incus-push" --project "$PROJECT" --all --to standby --jobs "$JOBS" >"$TMP/$k-first.again" 2>&1 ||
                die "scale: the second first push failed too: $(grep '"type":"error"' "$TMP/$k-first.again" | head -n 2)"
            grep -v '"type":"error"' "$TMP/$k-first.out" >"$TMP/$k-first.ok" || true
            grep '"type":"push"' "$TMP/$k-first.again" | grep '"status":"copied"' >>"$TMP/$k-first.ok" || true
            expect_statuses "$TMP/$k-first.ok" "$n" copied
        else
            expect_statuses "$TMP/$k-first.out" "$n" copied
        fi

        # Our runs first: the CLI's refresh rewrites the replicas' configuration, which drops
        # incus-push's marker (see cases 2 and 3).
        log "scale, $n instances: 3. nothing new, incus-push"
        timed "$k-nothing" tool sc_tool "$k-nothing" "$BIN/incus-push" --project "$PROJECT" --all --to standby --jobs "$JOBS"
        expect_statuses "$TMP/$k-nothing.out" "$n" up-to-date

        log "scale, $n instances: 4. one new snapshot each, incus-snap (not timed) then incus-push"
        sc_snap_all "$n"
        timed "$k-one" tool sc_tool "$k-one" "$BIN/incus-push" --project "$PROJECT" --all --to standby --jobs "$JOBS"
        expect_statuses "$TMP/$k-one.out" "$n" refreshed
        # Each push record lists the one snapshot it sent.
        bad=$(awk '/"type":"push"/ && !/"snapshots":\["[^"]*"\]/' "$TMP/$k-one.out" | head -n 2)
        [ -z "$bad" ] || die "scale: incus-push did not send exactly one snapshot each: $bad"

        # Every instance has two auto-* snapshots (incus-snap's) now, and the CLI's snap0.
        log "scale, $n instances: 5. incus-prune --dry-run"
        timed "$k-prune" tool sc_tool "$k-prune" "$BIN/incus-prune" --project "$PROJECT" --all --keep-last 1 --dry-run
        [ "$(records "$TMP/$k-prune.out" pruned)" -eq "$n" ] ||
            die "scale: incus-prune --dry-run --keep-last 1 chose $(records "$TMP/$k-prune.out" pruned) snapshots, not $n"
        bad=$(awk '/"type":"pruned"/ && !/"dry_run":true/' "$TMP/$k-prune.out" | head -n 2)
        [ -z "$bad" ] || die "scale: incus-prune --dry-run deleted something: $bad"
        log "scale, $n instances: 6. incus-prune --dry-run with nothing to delete"
        timed "$k-keep" tool sc_tool "$k-keep" "$BIN/incus-prune" --project "$PROJECT" --all --keep-last 2 --dry-run
        [ "$(records "$TMP/$k-keep.out" pruned)" -eq 0 ] ||
            die "scale: incus-prune --dry-run --keep-last 2 chose $(records "$TMP/$k-keep.out" pruned) snapshots, not none"
        log "scale, $n instances: 5. CLI loop of incus snapshot list"
        timed "$k-prune" cli sc_cli_list
        [ "$(grep -c . "$TMP/sc-list.out")" -eq $((3 * n)) ] ||
            die "scale: the CLI listed $(grep -c . "$TMP/sc-list.out") snapshots, not $((3 * n))"

        # Whether the CLI's refreshes send only what is new: the creation times of the first
        # instance's snapshots on the standby, before and after each loop (a snapshot deleted
        # and received again has a new one).
        snapshot_times "standby:${SC_SET[0]}" >"$TMP/sc-times.0"
        log "scale, $n instances: 3. nothing new, CLI loop"
        timed "$k-nothing" cli sc_cli_refresh "$k-nothing"
        snapshot_times "standby:${SC_SET[0]}" >"$TMP/sc-times.1"
        resent "$TMP/sc-times.0" "$TMP/sc-times.1" >"$TMP/$k-nothing.resent"
        log "scale, $n instances: 4. one new snapshot each, incus-snap (not timed) then CLI loop"
        sc_snap_all "$n"
        timed "$k-one" cli sc_cli_refresh "$k-one"
        snapshot_times "standby:${SC_SET[0]}" >"$TMP/sc-times.2"
        resent "$TMP/sc-times.1" "$TMP/sc-times.2" >"$TMP/$k-one.resent"
        [ "$(wc -l <"$TMP/sc-times.2")" -eq 4 ] || die "scale: cannot read the snapshots of standby:${SC_SET[0]}: $(cat "$TMP/sc-times.2")"

        # Every replica has the 4 snapshots of its source.
        snapshot_counts local >"$TMP/sc-counts.local"
        snapshot_counts standby >"$TMP/sc-counts.standby"
        cmp -s "$TMP/sc-counts.local" "$TMP/sc-counts.standby" ||
            die "scale: the replicas' snapshot counts differ from their sources': $(diff "$TMP/sc-counts.local" "$TMP/sc-counts.standby" | head -n 4 | tr '\n' ' ')"
        bad=$(awk -F, '$2 != 4' "$TMP/sc-counts.local" | head -n 3)
        [ -z "$bad" ] || die "scale: unexpected snapshot counts: $bad"
        sc_disk >"$TMP/$k.disk"

        log "scale, $n instances: deleting them and their replicas"
        t0=$SECONDS
        sc_names "$n" | delete_instances local
        sc_names "$n" | delete_instances standby
        echo $((SECONDS - t0)) >"$TMP/$k.delete-s"
    done
    SC_SECONDS=$((SECONDS - SC_START))
    SC_LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
fi

# ---------------------------------------------------------------------------------------
# the report

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
# met VALUE OP TARGET: whether the target is met; "narrowly" for a speed-up within 10 % of it.
met() {
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
        ok = (op == ">=" ? v >= t : v <= t)
        close_call = (op == ">=" && v < t * 1.1)
        print (ok ? (close_call ? "**met** (narrowly)" : "**met**") : "**missed**")
    }'
}
fmt_s() { awk -v v="$1" 'BEGIN { printf (v < 10 ? "%.3f s" : "%.2f s"), v }'; }
per_inst() { awk -v v="$1" -v n="$2" 'BEGIN { printf "%.1f ms", v * 1000 / n }'; }

# row CASE SIDE LABEL COUNT: one table row.
row() {
    local f=$TMP/$1.$2 w
    w=$(median "$f" 1)
    printf '| %s | %s | %s | %s | %s s | %s s |\n' "$3" "$(fmt_s "$w")" "$(per_inst "$w" "$4")" \
        "$(all_values "$f" 1)" "$(median "$f" 2)" "$(median "$f" 3)"
}
NPROC=$(nproc)
# where CASE: where the time goes, from the medians.
where() {
    local t=$TMP/$1.tool c=$TMP/$1.cli
    awk -v wt="$(median "$t" 1)" -v dt="$(median "$t" 2)" -v ct="$(median "$t" 3)" \
        -v wc="$(median "$c" 1)" -v dc="$(median "$c" 2)" -v cc="$(median "$c" 3)" -v n="$NPROC" 'BEGIN {
        printf "Where the time goes: our side kept the daemons busy for %.2f s of CPU (client %.2f s) in %.2f s of wall time; ", dt, ct, wt
        printf "the CLI loop for %.2f s of CPU (client %.2f s) in %.2f s. ", dc, cc, wc
        lb = dt / n
        if (lb > 0) printf "With %d CPUs, the daemons%s work for our side alone takes at least %.2f s, which caps the speed-up at about %.1fx on this machine", n, "\047", lb, wc / lb
        if (wt > 0 && lb / wt >= 0.6) printf ": the daemons%s CPU time dominates our side (they kept %.0f %% of the CPUs busy during it).\n", "\047", 100 * lb / wt
        else printf ".\n"
    }'
}
header() {
    echo '| Side | Wall time (median) | Per instance | All runs (s) | Daemons CPU (median) | Client CPU (median) |'
    echo '|---|---|---|---|---|---|'
}

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# cells FILE: the "wall time (median) | all runs | daemons CPU | client CPU" cells of a results
# file, or dashes when it has none.
cells() {
    if [ -s "$1" ]; then
        printf '%s | %s | %s s | %s s' "$(fmt_s "$(median "$1" 1)")" "$(all_values "$1" 1)" "$(median "$1" 2)" "$(median "$1" 3)"
    else
        printf '— | — | — | —'
    fi
}
count_lines() { if [ -e "$1" ]; then grep -c . "$1" || true; else echo 0; fi; }
words() { awk '{ for (i = 1; i <= NF; i++) printf "%s%s", (n++ ? " " : ""), $i } END { if (!n) printf "none" }' "$1"; }
pool_label() { echo "\`$1\` ($(incus storage show "$1" | sed -n 's/^driver: //p'))"; }

# Sections 7 and 8 into $TMP/failover.md, their summary rows into $TMP/failover-summary.md.
failover_report() {
    local pool key label failed ok msg example resent1 ex_name ex_before ex_after
    C7_R=$(ratio "$(median "$TMP/c7.cli" 1)" "$(median "$TMP/c7.tool" 1)")
    {
        echo "## 7. Planned promotion: incus-failover promote"
        echo
        echo "Measured $FO_DATE, $REPS run(s) per measurement; load average (1, 5, 15 min) $FO_LOAD_START when sections 7 and 8 started, $FO_LOAD_END when they ended."
        echo
        echo "$N_PROMOTE running instances (busybox containers, a few MB each), each with one snapshot (\`incus-snap\`) and replicated with \`incus-push --project $PROJECT --to standby\`; before every run of either side the instances and their replicas are made afresh (not timed), and the two sides alternate."
        echo "Ours: \`incus-failover promote --project $PROJECT --standby standby ${PROMOTE_SET[*]}\` (default \`--jobs 1\`: one instance after the other, as in the loop). Per instance it fences the primary copy (\`boot.autostart=false\`, the old value kept on it), stops it, takes a final snapshot, sends it with the replication engine and restores the replica to it, gives the replica back the source's settings and starts it, checking first that the replica is ready and, before the start, that the primary copy is still stopped."
        echo "CLI: the seed's manual sequence for the same guarantees, per instance: \`incus config set NAME boot.autostart=false; incus stop NAME; incus snapshot create NAME final; incus copy NAME standby:NAME --refresh --stateless; incus snapshot restore standby:NAME final; incus config unset standby:NAME boot.autostart; incus start standby:NAME\` (all with \`--project $PROJECT\`, the copy with \`--target-project $PROJECT\`)."
        echo "Both sides are checked after every run: each replica runs on the standby, each primary copy is stopped with \`boot.autostart=false\`."
        echo
        header
        row c7 tool "incus-failover promote" "$N_PROMOTE"
        row c7 cli "CLI sequence" "$N_PROMOTE"
        echo
        echo "Speed-up: **${C7_R}x** (no target). incus-failover's own \`promoted\` records give $(fmt_s "$(median "$TMP/c7.records" 1)") per instance (median of $(count_lines "$TMP/c7.records")). Peak RSS of incus-failover promote: $(mb "$(max_rss promote)") MB."
        echo
        where c7
        echo
        echo "## 8. Failback: incus-failover failback"
        echo
        echo "Per run and pool, one instance holding $FAILBACK_MB MB from /dev/urandom, created with \`incus launch busybox NAME -s POOL\` on the primary, snapshotted, replicated with \`incus-push --project $PROJECT --to standby --storage POOL\` (the replica on the standby's pool of the same name), promoted with \`incus-failover promote\`, and then a file written in the running standby copy (none of it timed)."
        echo "Timed: \`incus-failover failback --project $PROJECT --standby standby NAME\`. It renames the old primary copy aside (kept, with its snapshots), copies the running standby copy back to the primary with the replication engine (the whole instance with its snapshots, since nothing is refreshed over the old copy), stops the standby copy, snapshots it (\`failback-DATE\`), sends that snapshot incrementally and restores the primary copy to it, makes the standby copy an inert replica again, and starts the primary copy with its own settings."
        echo "After every failback the script checks that the instance runs on the primary again, on the same pool, with the file written on the standby, that the standby copy is stopped and that the old copy was kept aside."
        echo
        echo '| Pool | Instance | Failback: wall time (median) | All runs (s) | Daemons CPU (median) | Client CPU (median) | Failed runs |'
        echo '|---|---|---|---|---|---|---|'
        for pool in "${FAILBACK_POOLS[@]}"; do
            key=$TMP/c8-$pool
            printf '| %s | %s MB (`du -sb` of the standby copy, without its snapshots), %s snapshots | %s | %s of %s |\n' "$(pool_label "$pool")" \
                "$(awk '{ printf "%.1f\n", $1 / 1048576 }' "$key.bytes" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')" \
                "$(median "$key.snapshots" 1)" "$(cells "$key.failback")" "$(count_lines "$key.failed")" "$REPS"
        done
        echo
        echo "Peak RSS of incus-failover failback: $(mb "$(max_rss failback)") MB."
        for pool in "${FAILBACK_POOLS[@]}"; do
            key=$TMP/c8-$pool
            failed=$(count_lines "$key.failed")
            [ "$failed" -gt 0 ] || continue
            msg=$(head -n 1 "$key.errors")
            echo
            echo "**The failback failed on $(pool_label "$pool") in $failed of $REPS run(s)** (after $(all_values "$key.failed" 1) s). The first failure, as incus-failover reported it:"
            echo
            echo "> $msg"
            echo
            echo "Left after it: $(tr '\n' ';' <"$key.state" | sed 's/;$//; s/;/; /g'). The script does not run the failback again; it deletes the instances."
            case "$msg" in
                *"cannot find parent subvolume"*)
                    echo "The error comes from Incus's optimized btrfs transfer back to the primary: \`btrfs receive\` there cannot find the parent subvolume the stream from the standby names, so the copy of the standby's instance to the primary fails." ;;
            esac
        done
        echo
        echo "After each successful failback, three pushes from the primary follow: a plain \`incus-push --project $PROJECT --to standby NAME\` right after it, then twice \`incus-snap --project $PROJECT NAME | incus-push --to standby\` (one new snapshot each)."
        echo
        echo '| Pool | Push | Wall time (median) | All runs (s) | Daemons CPU (median) | Client CPU (median) | What it did |'
        echo '|---|---|---|---|---|---|---|'
        for pool in "${FAILBACK_POOLS[@]}"; do
            key=$TMP/c8-$pool
            label=$(pool_label "$pool")
            if [ ! -s "$key.push0" ]; then
                echo "| $label | — | — | — | — | — | no successful failback |"
                continue
            fi
            resent1=$(awk '{ n += NF } END { printf "%d", n }' "$key.resent1")
            printf '| %s | plain incus-push, right after | %s | %s |\n' "$label" "$(cells "$key.push0")" \
                "$(sort -u "$key.push0.status" | tr '\n' ' ' | sed 's/ $//; s/ /, /g'): $(if grep -qv up-to-date "$key.push0.status"; then echo "sent something"; else echo "nothing sent"; fi)"
            printf '| %s | first incus-snap \\| incus-push | %s | refreshed; Incus also deleted and received again %s snapshot(s) in all: %s |\n' "$label" "$(cells "$key.push1")" \
                "$resent1" "$(words "$key.resent1")"
            printf '| %s | second incus-snap \\| incus-push | %s | refreshed; received again: %s |\n' "$label" "$(cells "$key.push2")" \
                "$(words "$key.resent2")"
        done
        echo
        example=
        for pool in "${FAILBACK_POOLS[@]}"; do
            if [ -z "$example" ] && [ -s "$TMP/c8-$pool.example" ]; then example=$(cat "$TMP/c8-$pool.example"); fi
        done
        echo "The plain push right after a failback sends nothing: incus-push compares the snapshot lists by name, and they match."
        if [ -n "$example" ]; then
            read -r ex_name ex_before ex_after <<<"$example"
            echo "The first push that transfers something (here the first one with a new snapshot) makes Incus also delete and receive again, on the standby, the snapshots the standby made itself (the \`failback-…\` snapshot, and any taken while it was promoted): in a refresh Incus compares the snapshots' creation times on both sides to the nanosecond, and the copies the failback made on the primary only kept whole seconds."
            echo "For instance \`$ex_name\` was created at $ex_before on the standby, and its copy on the primary says $ex_after, which is what the standby holds after that push."
            echo "The cost of sending those snapshots again is the difference between the first and the second push above."
        else
            echo "In these runs the first push with a new snapshot did not make Incus send any snapshot again (no creation time changed on the standby)."
        fi
        echo
        echo "No CLI comparison: the CLI has no way back that keeps both sides' data. The obvious one, stopping the standby copy and running \`incus copy --refresh standby:NAME NAME\`, refreshes the old primary copy in place: it deletes the snapshots only the old primary has (taken after the last sync, or kept there longer), deletes and receives again every snapshot the old primary made itself (their creation times there are to the nanosecond, their copies on the standby to the second), overwrites the old primary's own data without keeping it, and copies the standby copy's configuration over the primary's (volatile keys included)."
        echo "incus-failover keeps the old copy aside as \`NAME-before-failback-DATE\`, with its snapshots and data, and copies the instance back with the replication engine instead."
        if [ -n "${MIGRATIONS_LEFT:-}" ]; then
            echo
            echo "The failed transfers left $(echo "$MIGRATIONS_LEFT" | grep -c .) partial migration(s) of Incus in the lab's pools ($(echo "$MIGRATIONS_LEFT" | sed "s|^$INCUS_LAB_DIR/||" | sed 's/^/`/; s/$/`/' | tr '\n' ' ' | sed 's/ $//; s/ /, /g')); the script does not remove them."
        fi
        echo
    } >"$TMP/failover.md"
    {
        echo "| 7. planned promotion, $N_PROMOTE running instances | ${C7_R}x faster than the CLI sequence | — | — |"
        for pool in "${FAILBACK_POOLS[@]}"; do
            key=$TMP/c8-$pool
            failed=$(count_lines "$key.failed")
            if [ -s "$key.failback" ]; then
                ok="$(fmt_s "$(median "$key.failback" 1)"); the first push with a new snapshot after it $(fmt_s "$(median "$key.push1" 1)"), the next one $(fmt_s "$(median "$key.push2" 1)")"
                [ "$failed" -eq 0 ] || ok="$ok; **failed** in $failed of $REPS runs"
            else
                ok="**failed** in $failed of $REPS runs"
            fi
            echo "| 8. failback, $FAILBACK_MB MB, $(pool_label "$pool") | $ok | — | — |"
        done
    } >"$TMP/failover-summary.md"
}

# human_bytes BYTES: "12 KiB" under 1 MiB, else "12.3 MB" (MiB, as elsewhere in this file).
human_bytes() {
    awk -v b="$1" 'BEGIN { if (b < 1048576) printf "%d KiB", b / 1024; else printf "%.1f MB", b / 1048576 }'
}

# Section 9 into $TMP/history.md, its summary rows into $TMP/history-summary.md.
history_report() {
    local pool key label wa wp extra excl
    {
        echo "## 9. Standby history: the cost of one archive point"
        echo
        echo "Measured $HI_DATE, $REPS run(s) per measurement; load average (1, 5, 15 min) $HI_LOAD_START when section 9 started, $HI_LOAD_END when it ended."
        echo
        echo "Per run and pool, two instances made the same way, \`h-POOL-a-N\` and \`h-POOL-p-N\`: each holds $HISTORY_MB MB from /dev/urandom (\`dd\` inside it), created with \`incus launch busybox NAME -s POOL\` on the primary and stopped, with two snapshots \`s1\` and \`s2\`, replicated with \`incus-push --project $PROJECT --to standby --storage POOL\` (the replica on the standby's pool of the same name); then, on the primary, \`s1\` is deleted and \`s3\` taken (none of it timed)."
        echo "Timed, the two sides alternating which goes first:"
        echo
        echo "- with an archive point: \`incus-push --to standby --project $PROJECT --archive-keep-last 5 [--archive-full-copies] h-POOL-a-N\` (\`--archive-full-copies\` on dir only, where incus-push refuses without it). Before the refresh drops the replica's \`s1\`, it clones that snapshot into the project \`$ARCHIVE_PROJECT\` on the standby (instance \`h-POOL-a-N--s1\`), then refreshes;"
        echo "- plain: \`incus-push --to standby --project $PROJECT h-POOL-p-N\`: the refresh alone (it sends \`s3\` and drops \`s1\`)."
        echo
        echo "After every push the script checks that it reported \`refreshed\`, that the replica holds \`s2 s3\`, and that exactly one archive point (\`NAME--s1\`, without snapshots) exists for the first side and none for the second."
        echo "The disk cost of the archive point is measured right after its push: \`du -sb\` of its volume directory on the standby (apparent size: every file counted in full), and on btrfs \`btrfs filesystem du -s --raw\` of its subvolume, whose *exclusive* bytes are what the archive point holds that nothing else on the pool shares (what deleting it would free)."
        echo
        echo '| Pool | Push | Wall time (median) | All runs (s) | Daemons CPU (median) | Client CPU (median) |'
        echo '|---|---|---|---|---|---|'
        for pool in "${HISTORY_POOLS[@]}"; do
            key=$TMP/c9-$pool
            label=$(pool_label "$pool")
            printf '| %s | with an archive point (`%s`) | %s |\n' "$label" "$(cat "$key.opts")" "$(cells "$key.archive")"
            printf '| %s | plain | %s |\n' "$label" "$(cells "$key.plain")"
        done
        echo
        echo '| Pool | Replica (`du -sb`, without its snapshots) | Archive point: `du -sb` | Archive point: btrfs total / exclusive / shared | Archive point on pool | Extra wall time of the push (medians) |'
        echo '|---|---|---|---|---|---|'
        for pool in "${HISTORY_POOLS[@]}"; do
            key=$TMP/c9-$pool
            wa=$(median "$key.archive" 1) wp=$(median "$key.plain" 1)
            extra=$(awk -v a="$wa" -v p="$wp" 'BEGIN { printf "%+.3f s (%.2fx the plain push)", a - p, (p > 0 ? a / p : 0) }')
            if [ -s "$key.btrfs" ]; then
                excl="$(human_bytes "$(median "$key.btrfs" 1)") / **$(human_bytes "$(median "$key.btrfs" 2)")** / $(human_bytes "$(median "$key.btrfs" 3)") (exclusive in all runs: $(awk '{ printf "%s%d", sep, $2; sep = ", " }' "$key.btrfs") bytes)"
            else
                excl="—"
            fi
            printf '| %s | %s | %s (all runs: %s bytes) | %s | `%s` | %s |\n' "$(pool_label "$pool")" \
                "$(human_bytes "$(median "$key.replica-bytes" 1)")" "$(human_bytes "$(median "$key.du" 1)")" "$(all_values "$key.du" 1)" \
                "$excl" "$(sort -u "$key.archive-pool" | tr '\n' ' ' | sed 's/ $//; s/ /`, `/g')" "$extra"
        done
        echo
        echo "Peak RSS of incus-push: $(mb "$(max_rss history-archive)") MB with the archive options, $(mb "$(max_rss history-plain)") MB without."
        echo
        for pool in "${HISTORY_POOLS[@]}"; do
            key=$TMP/c9-$pool
            label=$(pool_label "$pool")
            # The time: the difference of the medians, and whether the runs' ranges overlap.
            awk -v l="$label" -v a="$(median "$key.archive" 1)" -v p="$(median "$key.plain" 1)" \
                -v la="$(sort -g "$key.archive" | head -n 1 | cut -d' ' -f1)" -v ha="$(sort -g "$key.archive" | tail -n 1 | cut -d' ' -f1)" \
                -v lp="$(sort -g "$key.plain" | head -n 1 | cut -d' ' -f1)" -v hp="$(sort -g "$key.plain" | tail -n 1 | cut -d' ' -f1)" \
                -v n="$REPS" 'BEGIN {
                printf "On %s the push with an archive point took %.3f s against %.3f s for the plain push (medians, %+.3f s)", l, a, p, a - p
                if (n < 2) printf "; one run each, too few to tell the difference from noise"
                else if (la <= hp && lp <= ha) printf "; the runs overlap (%.3f–%.3f s against %.3f–%.3f s): the difference is within the run-to-run noise of this machine", la, ha, lp, hp
                else printf "; the runs do not overlap (%.3f–%.3f s against %.3f–%.3f s)", la, ha, lp, hp
                printf ". "
            }'
            if [ -s "$key.btrfs" ]; then
                awk -v t="$(median "$key.btrfs" 1)" -v e="$(median "$key.btrfs" 2)" -v mbs="$HISTORY_MB" 'BEGIN {
                    printf "The archive point is a copy-on-write clone (a btrfs snapshot of the replica'"'"'s snapshot subvolume): of the %.1f MB it shows, %s are its own, the rest is shared with the replica and its snapshots, which hold the same %d MB; it costs next to nothing on disk until the instance'"'"'s data changes (then the replica'"'"'s new blocks are the cost, the archive point keeps the old ones).\n", t / 1048576, (e < 1048576 ? sprintf("%d KiB", e / 1024) : sprintf("%.1f MB", e / 1048576)), mbs
                }'
            else
                awk -v d="$(median "$key.du" 1)" -v r="$(median "$key.replica-bytes" 1)" 'BEGIN {
                    printf "The archive point is a full copy of the snapshot: %.1f MB on the standby'"'"'s disk, %.0f %% of the replica'"'"'s own %.1f MB; every archive point kept costs that much again, which is why incus-push asks for `--archive-full-copies` there.\n", d / 1048576, (r > 0 ? 100 * d / r : 0), r / 1048576
                }'
            fi
        done
        echo
    } >"$TMP/history.md"
    {
        for pool in "${HISTORY_POOLS[@]}"; do
            key=$TMP/c9-$pool
            wa=$(median "$key.archive" 1) wp=$(median "$key.plain" 1)
            if [ -s "$key.btrfs" ]; then
                excl="$(human_bytes "$(median "$key.btrfs" 2)") exclusive on disk (btrfs)"
            else
                excl="$(human_bytes "$(median "$key.du" 1)") on disk (\`du -sb\`)"
            fi
            echo "| 9. one archive point, $HISTORY_MB MB, $(pool_label "$pool") | push $(fmt_s "$wa") against $(fmt_s "$wp") without ($(awk -v a="$wa" -v p="$wp" 'BEGIN { printf "%+.3f s", a - p }')); $excl | — | — |"
        done
    } >"$TMP/history-summary.md"
}

# The scale part's largest step up in time per instance from one size to the next that still
# counts as flat (the rest is run-to-run noise).
SC_GROWTH=1.25

sc_case_label() {
    case "$1" in
        snap) echo "1. snapshots" ;;
        first) echo "2. first push (setup)" ;;
        nothing) echo "3. push, nothing new" ;;
        one) echo "4. push, one new snapshot each" ;;
        prune) echo "5. prune --dry-run" ;;
        keep) echo "6. prune, nothing to delete" ;;
    esac
}
sc_tool_of() {
    case "$1" in snap) echo incus-snap ;; prune | keep) echo incus-prune ;; *) echo incus-push ;; esac
}
# sc_values CASE SIDE [COLUMN]: "SIZE:VALUE" for each size, for the awk below (column 1: wall
# time, 2: the daemons' CPU, 3: the client's CPU, ours or the CLI's).
sc_values() {
    local n
    for n in "${SCALE_SIZES[@]}"; do printf '%s:%s ' "$n" "$(median "$TMP/sc$n-$1.$2" "${3:-1}")"; done
}
# sc_growth CASE SIDE: "a → b → c ms per instance (×r, ×r)", a tab, and the verdict: "grows" when
# one step up in size makes the time per instance more than SC_GROWTH times longer, else
# "falls" when the largest size's is under 0.8 times the smallest's, else "flat" ("one size"
# with a single size).
sc_growth() {
    awk -v vals="$(sc_values "$1" "$2" "${3:-1}")" -v lim="$SC_GROWTH" 'BEGIN {
        k = split(vals, v, " ")
        for (i = 1; i <= k; i++) { split(v[i], p, ":"); t[i] = p[2] * 1000 / p[1] }
        for (i = 1; i <= k; i++) printf "%s%s", (i > 1 ? " → " : ""), (t[i] < 10 ? sprintf("%.2f", t[i]) : sprintf("%.1f", t[i]))
        printf " ms"
        grow = 0; steps = ""
        for (i = 2; i <= k; i++) {
            r = (t[i - 1] > 0 ? t[i] / t[i - 1] : 0)
            steps = steps sprintf("%s×%.2f", (i > 2 ? ", " : ""), r)
            if (r > lim) grow = 1
        }
        if (k > 1) printf " (%s)", steps
        printf "\t%s\n", (k < 2 ? "one size" : grow ? "grows" : t[k] < 0.8 * t[1] ? "falls" : "flat")
    }'
}
# sc_api CASE: "a → b → c", a tab, and "constant" (within 2 requests) or "about X more per
# instance".
sc_api() {
    local n vals=
    for n in "${SCALE_SIZES[@]}"; do vals+="$n:$(cat "$TMP/sc$n-$1.api") "; done
    awk -v vals="$vals" 'BEGIN {
        k = split(vals, v, " ")
        for (i = 1; i <= k; i++) { split(v[i], p, ":"); n[i] = p[1]; a[i] = p[2] + 0; printf "%s%d", (i > 1 ? " → " : ""), a[i] }
        lo = hi = a[1]
        for (i = 2; i <= k; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
        if (k < 2) printf "\tone size\n"
        else if (hi - lo <= 2) printf "\tconstant\n"
        else printf "\tabout %.2f more per instance\n", (a[k] - a[1]) / (n[k] - n[1])
    }'
}
sc_bytes() { awk -v b="$1" 'BEGIN { printf (b < 1073741824 ? "%.0f MB" : "%.1f GB"), (b < 1073741824 ? b / 1048576 : b / 1073741824) }'; }
sc_per_inst() { awk -v v="$1" -v n="$2" 'BEGIN { t = v * 1000 / n; printf (t < 10 ? "%.2f ms" : "%.1f ms"), t }'; }
sc_sizes_text() { local s="${SCALE_SIZES[*]}"; echo "${s// /${1:- → }}"; } # [SEPARATOR]

# Section 10 into $TMP/scale.md, its summary rows into $TMP/scale-summary.md.
scale_report() {
    local n c k w wc label g api retried resent_any verdicts="" own_verdicts="" nmax=${SCALE_SIZES[-1]} t1 t2 t3 rss_max rss_mb nw na sizes
    sizes=$(sc_sizes_text)
    {
        echo "## 10. Scale"
        echo
        echo "Measured $SC_DATE with \`scripts/bench.sh --only scale\` (a run without \`--only\` does not measure this part: it keeps this section), one run per measurement and size; load average (1, 5, 15 min) $SC_LOAD_START when section 10 started, $SC_LOAD_END when it ended. The whole part took $(awk -v s="$SC_SECONDS" 'BEGIN { printf "%d min %02d s", s / 60, s % 60 }') (creating and deleting the instances included)."
        echo
        echo "For each size N ($(sc_sizes_text ', ') instances), N stopped busybox containers \`sc-00001\` … are made in the project \`$PROJECT\` on the pool \`default\` of the default profile (dir driver) with \`incus init busybox NAME\`, $JOBS at once (not timed); then, in this order:"
        echo
        echo "1. **Snapshots.** Ours: \`incus-snap --project $PROJECT --all\` (default \`--jobs 4\`). CLI: \`for i in …; do incus snapshot create --project $PROJECT \$i; done\`."
        echo "2. **First push** (the setup of cases 3 and 4; no CLI side): \`incus-push --project $PROJECT --all --to standby --jobs $JOBS\`, a full copy of every instance with its two snapshots."
        echo "3. **Push, nothing new**: the same command again, every replica current. CLI: \`for i in …; do incus copy -q --project $PROJECT --target-project $PROJECT \$i standby:\$i --refresh; done\` on the same current replicas (the CLI's refresh re-syncs the instance's volume even then)."
        echo "4. **Push, one new snapshot each**: \`incus-snap --project $PROJECT --all\` (not timed), then the same incus-push command: each replica receives that one snapshot (checked in its \`push\` record), is restored to it and gets its inert configuration. CLI: after its loop of case 3, another \`incus-snap --all\` (not timed), so that again every instance has exactly one snapshot its replica lacks, then the same loop of \`incus copy --refresh\`: it sends that snapshot and re-syncs the volume, nothing more (no restore, the source's configuration copied as it is)."
        echo "5. **Prune, dry run**: \`incus-prune --project $PROJECT --all --keep-last 1 --dry-run\` (every instance then has two \`auto-*\` snapshots: it decides to delete one each, and deletes nothing). An instance with something to delete is decided from its own snapshot list (and its replica's, with \`--replica\`): a request each, never the pools' listings alone. CLI: \`for i in …; do incus snapshot list --project $PROJECT \$i -f csv; done\`, what a shell script would read to decide (without the deciding)."
        echo "6. **Prune, nothing to delete**: \`incus-prune --project $PROJECT --all --keep-last 2 --dry-run\` right after case 5: every instance keeps its two \`auto-*\` snapshots, which the storage pools' listings show without a request per instance (no CLI side: its loop is case 5's)."
        echo
        echo "Our runs of cases 3 and 4 come before the CLI's (the CLI's refresh rewrites the replicas' configuration, which drops incus-push's marker), case 5 between them. Checked in every run: the records of our tools (N \`snapshot\` records; N \`push\` records \`copied\`, \`up-to-date\`, \`refreshed\`; N dry-run \`pruned\` records), the CLI's listing (3 snapshots per instance), and at the end the same 4 snapshots on every replica as on its source. The instances and their replicas are deleted after each size."
        echo "Our tools run with \`INCUS_STANDBY_STATS=1\`: \"API requests\" is the count they print on stderr (\`TOOL: stats: N API requests\`). Peak RSS: \`/usr/bin/time -f %M\`. Wall time and daemons' CPU as in the method above."
        echo
        echo '| Case | N | Ours: wall time | Per instance | Peak RSS | API requests | Daemons CPU | CLI loop: wall time | Per instance | Daemons CPU | Speed-up |'
        echo '|---|---|---|---|---|---|---|---|---|---|---|'
        for c in "${SC_CASES[@]}"; do
            for n in "${SCALE_SIZES[@]}"; do
                k=$TMP/sc$n-$c
                w=$(median "$k.tool" 1)
                printf '| %s, `%s` | %s | %s | %s | %s MB | %s | %s s | ' "$(sc_case_label "$c")" "$(sc_tool_of "$c")" "$n" \
                    "$(fmt_s "$w")" "$(sc_per_inst "$w" "$n")" "$(mb "$(max_rss "sc$n-$c")")" "$(cat "$k.api")" "$(median "$k.tool" 2)"
                if [ -s "$k.cli" ]; then
                    wc=$(median "$k.cli" 1)
                    printf '%s | %s | %s s | %sx |\n' "$(fmt_s "$wc")" "$(sc_per_inst "$wc" "$n")" "$(median "$k.cli" 2)" "$(ratio "$wc" "$w")"
                else
                    printf '— | — | — | — |\n'
                fi
            done
        done
        echo
        for n in "${SCALE_SIZES[@]}"; do
            [ -s "$TMP/sc$n-first.failed" ] || continue
            echo "In the first push (setup) of $n instances, $(grep -c . "$TMP/sc$n-first.failed") transfer(s) failed and a second incus-push copied them (its time is not counted): \`$(head -n 1 "$TMP/sc$n-first.failed" | sed 's/.*"message":"\([^"]*\)".*/\1/' | cut -c1-300)\`."
            echo
        done
        retried=
        for c in nothing one; do
            for n in "${SCALE_SIZES[@]}"; do
                [ -s "$TMP/sc$n-$c.retries" ] || continue
                retried+="${retried:+; }$(sc_case_label "$c"), $n instances: $(grep -c . "$TMP/sc$n-$c.retries") (the first: \`$(head -n 1 "$TMP/sc$n-$c.retries" | sed 's/ *$//')\`)"
            done
        done
        if [ -n "$retried" ]; then
            echo "Some of the CLI's \`incus copy --refresh\` failed and were run again (the time of both runs is in the CLI's wall time): $retried. After the transfer the CLI reads the replica and updates its configuration with the ETag it read; the daemon can refuse that update as made on an instance that changed in between (\"ETag doesn't match\")."
        else
            echo "None of the CLI's \`incus copy --refresh\` failed (the script runs a failed one again, noting it: Incus 6.0.4 sometimes fails one with \"ETag doesn't match\")."
        fi
        echo
        resent_any=
        for c in nothing one; do
            for n in "${SCALE_SIZES[@]}"; do
                [ -z "$(tr -d ' \n' <"$TMP/sc$n-$c.resent")" ] ||
                    resent_any+="${resent_any:+; }$(sc_case_label "$c"), $n instances: $(words "$TMP/sc$n-$c.resent")"
            done
        done
        if [ -n "$resent_any" ]; then
            echo "On the first instance, \`sc-00001\`, the CLI's refresh also deleted and received again existing snapshots (their creation times on the standby changed): $resent_any."
        else
            echo "On the first instance, \`sc-00001\`, the CLI's refreshes received no existing snapshot again (the creation times of its replica's snapshots did not change): case 4's loop sent only the new snapshot (and re-synced the volume)."
        fi
        echo
        echo "Wall time per instance, $sizes instances (each step's factor in brackets; a step up to ×$SC_GROWTH counts as flat, as run-to-run noise):"
        echo
        for c in "${SC_CASES[@]}"; do
            g=$(sc_growth "$c" tool)
            verdicts+="${g#*$'\t'} "
            printf -- '- %s, `%s`: %s: **%s**' "$(sc_case_label "$c")" "$(sc_tool_of "$c")" "${g%%$'\t'*}" "${g#*$'\t'}"
            if [ -s "$TMP/sc${SCALE_SIZES[0]}-$c.cli" ]; then
                g=$(sc_growth "$c" cli)
                printf '; CLI loop: %s: %s' "${g%%$'\t'*}" "${g#*$'\t'}"
            fi
            printf '.\n'
        done
        echo
        echo "Where that time goes, per instance, $sizes instances: the CPU of our tool itself, and the CPU of the two Incus daemons serving it (the CLI loop's daemons' CPU beside it: the same requests cost the daemons the same):"
        echo
        own_verdicts=
        for c in "${SC_CASES[@]}"; do
            g=$(sc_growth "$c" tool 3)
            own_verdicts+="${g#*$'\t'} "
            printf -- '- %s, `%s`: our CPU %s: **%s**' "$(sc_case_label "$c")" "$(sc_tool_of "$c")" "${g%%$'\t'*}" "${g#*$'\t'}"
            g=$(sc_growth "$c" tool 2)
            printf '; daemons %s: %s' "${g%%$'\t'*}" "${g#*$'\t'}"
            if [ -s "$TMP/sc${SCALE_SIZES[0]}-$c.cli" ]; then
                g=$(sc_growth "$c" cli 2)
                printf '; for the CLI loop, daemons %s: %s' "${g%%$'\t'*}" "${g#*$'\t'}"
            fi
            printf '.\n'
        done
        echo
        case " $own_verdicts" in
            *" grows "*) echo "Our tools' own CPU per instance **grows** for: $(for c in "${SC_CASES[@]}"; do g=$(sc_growth "$c" tool 3); [ "${g#*$'\t'}" = grows ] && printf '%s; ' "$(sc_case_label "$c")"; done | sed 's/; $//')." ;;
            *) echo "Our tools' own CPU per instance does not grow with the number of instances. Where the wall time per instance grows, the daemons' CPU per instance grows with it: Incus's per-instance requests (a snapshot list, a migration, a restore) cost its daemons more on a server holding more instances, for the CLI as for us." ;;
        esac
        echo
        case " $verdicts" in
            *" grows "*) echo "The wall time per instance of our tools **grows** with the number of instances for: $(for c in "${SC_CASES[@]}"; do g=$(sc_growth "$c" tool); [ "${g#*$'\t'}" = grows ] && printf '%s; ' "$(sc_case_label "$c")"; done | sed 's/; $//')." ;;
            *" one size "*) echo "With a single size there is no growth to tell." ;;
            *) echo "The time per instance of our tools does not grow with the number of instances: it stays flat or falls (the fixed costs, such as listing the instances and starting the process, spread over more instances)." ;;
        esac
        echo
        echo "API requests of our tools, $sizes instances:"
        echo
        for c in "${SC_CASES[@]}"; do
            api=$(sc_api "$c")
            printf -- '- %s, `%s`: %s: %s.\n' "$(sc_case_label "$c")" "$(sc_tool_of "$c")" "${api%%$'\t'*}" "${api#*$'\t'}"
        done
        echo
        echo "Peak RSS of our tools (largest of the six cases), $sizes instances: $(for n in "${SCALE_SIZES[@]}"; do printf '%s%s MB' "${sep:-}" "$(mb "$(max_rss "sc$n-snap" "sc$n-first" "sc$n-nothing" "sc$n-one" "sc$n-prune" "sc$n-keep")")"; sep=" → "; done)."
        echo
        echo "Disk space of the instances with their 4 snapshots and of their replicas, on both servers (\`du\`, at the end of each size; on dir every snapshot is a full copy): $(for n in "${SCALE_SIZES[@]}"; do printf '%s%s instances %s' "${sep2:-}" "$n" "$(sc_bytes "$(cat "$TMP/sc$n.disk")")"; sep2=", "; done). Making the instances took $(for n in "${SCALE_SIZES[@]}"; do printf '%s%s s' "${sep3:-}" "$(cat "$TMP/sc$n.create-s")"; sep3=", "; done), deleting them and their replicas $(for n in "${SCALE_SIZES[@]}"; do printf '%s%s s' "${sep4:-}" "$(cat "$TMP/sc$n.delete-s")"; sep4=", "; done) ($sizes instances; not measured)."
        echo
    } >"$TMP/scale.md"

    # The targets, at the largest size.
    nw=$(median "$TMP/sc$nmax-nothing.tool" 1)
    na=$(cat "$TMP/sc$nmax-nothing.api")
    t1=$(awk -v w="$nw" -v a="$na" 'BEGIN { print (w <= 1 && a <= 10 ? "**met**" : "**missed**") }')
    rss_max=$(max_rss "sc$nmax-snap" "sc$nmax-first" "sc$nmax-nothing" "sc$nmax-one" "sc$nmax-prune" "sc$nmax-keep")
    rss_mb=$(mb "$rss_max")
    t2=$(met "$rss_mb" '<=' 39.999)
    case " $verdicts" in
        *" grows "*) t3="**missed**" ;;
        *" one size "*) t3="— (one size)" ;;
        *) t3="**met**" ;;
    esac
    local own=
    case " $own_verdicts" in
        *" grows "*) own="; our tools' own CPU per instance grows too" ;;
        *" one size "*) ;;
        *) [ "$t3" = "**missed**" ] && own=" in wall time (the daemons' CPU per request grows; our tools' own CPU per instance does not)" ;;
    esac
    label=
    [ "$nmax" -eq 1000 ] || label=" (the targets are set for 1000 instances; this run's largest size is $nmax)"
    {
        echo "Targets$label:"
        echo
        echo "- incus-push with nothing new over $nmax instances: $(fmt_s "$nw") with $na API requests (target ≤ 1 s with ≤ 10 requests): $t1."
        echo "- Peak RSS at $nmax instances: $rss_mb MB, the largest of our tools' (target < 40 MB): $t2."
        echo "- No tool's time per instance grows with N ($sizes): $t3$own."
        echo
    } >>"$TMP/scale.md"
    {
        echo "| 10. scale: incus-push, nothing new, $nmax instances | $(fmt_s "$nw"), $na API requests | ≤ 1 s, ≤ 10 requests | $t1 |"
        echo "| 10. scale: peak RSS of our tools, $nmax instances | $rss_mb MB | < 40 MB | $t2 |"
        echo "| 10. scale: time per instance, $sizes instances | $(case "$t3" in *met*) echo "no growth" ;; *missed*) echo "grows" ;; *) echo "—" ;; esac) | no growth | $t3 |"
    } >"$TMP/scale-summary.md"
}

# splice FILE LO HI SECTIONS ROWS: FILE with its sections LO to HI ("## N. …") and their summary
# rows ("| N. …") replaced by the files SECTIONS and ROWS: put where the old ones were, or else
# before the first later section (or "## Summary") and the first later row (or at the end of the
# table).
splice() {
    awk -v lo="$2" -v hi="$3" -v sections="$4" -v rows="$5" '
        function put(f,   l) { while ((getline l < f) > 0) print l; close(f) }
        function num(s,   m) {
            if (!match(s, /^(## |\| )[0-9]+\. /)) return -1
            m = substr(s, RSTART, RLENGTH); gsub(/[^0-9]/, "", m); return m + 0
        }
        /^## / {
            n = num($0)
            if (n >= lo && n <= hi) { skip = 1; next }
            skip = 0
            if (!placed && (n > hi || $0 == "## Summary")) { put(sections); placed = 1 }
            if ($0 == "## Summary") summary = 1
        }
        skip { next }
        summary && /^\|/ {
            table = 1
            n = num($0)
            if (n >= lo && n <= hi) next
            if (!done && n > hi) { put(rows); done = 1 }
        }
        summary && table && !/^\|/ && !done { put(rows); done = 1 }
        { print }
        END { if (summary && !done) put(rows) }
    ' "$1"
}

if part failover; then
    failover_report
fi
if part history; then
    history_report
fi
if part scale; then
    scale_report
fi
if [ -n "$ONLY" ]; then
    case "$ONLY" in
        failover) lo=7 hi=8 what="sections 7 and 8" ;;
        history) lo=9 hi=9 what="section 9" ;;
        scale) lo=10 hi=10 what="section 10" ;;
    esac
    mkdir -p "$(dirname "$OUT")"
    if [ -e "$OUT" ]; then
        grep -q '^## Summary$' "$OUT" || die "$OUT has no \"## Summary\" section to put $what before"
        splice "$OUT" "$lo" "$hi" "$TMP/$ONLY.md" "$TMP/$ONLY-summary.md" >"$OUT.tmp"
    else
        {
            echo "# Benchmarks"
            echo
            echo "Only the $ONLY part (\`scripts/bench.sh --only $ONLY\`); the other sections come from a run without \`--only\`."
            echo
            cat "$TMP/$ONLY.md"
            echo "## Summary"
            echo
            echo "| Case | Result | Target | Met |"
            echo "|---|---|---|---|"
            cat "$TMP/$ONLY-summary.md"
        } >"$OUT.tmp"
    fi
    mv "$OUT.tmp" "$OUT"
    log "wrote $what into $OUT"
    exit 0
fi

C1_R=$(ratio "$(median "$TMP/c1.cli" 1)" "$(median "$TMP/c1.tool" 1)")
C2_R=$(ratio "$(median "$TMP/c2.cli" 1)" "$(median "$TMP/c2.tool" 1)")
C3_R=$(ratio "$(median "$TMP/c3.cli" 1)" "$(median "$TMP/c3.tool" 1)")
C4_R=$(ratio "$(median "$TMP/c4.tool" 1)" "$(median "$TMP/c4.cli" 1)")
RSS_MB=$(mb "$(max_rss push2 push3 push4)")
SNAP_RSS_MB=$(mb "$(max_rss snap)")
C6_MS=$(median "$TMP/c6" 1)

# This run does not measure the scale part: section 10 and its summary rows of the file it
# replaces are kept as they are.
: >"$TMP/scale.md"
: >"$TMP/scale-summary.md"
if [ -e "$OUT" ]; then
    awk '/^## / { keep = ($0 ~ /^## 10\. /) } keep' "$OUT" >"$TMP/scale.md"
    awk '/^## Summary$/ { s = 1 } s && /^\| 10\. /' "$OUT" >"$TMP/scale-summary.md"
fi

MEM_GIB=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
INCUS_VERSION=$(incus version | tr '\n' ';' | sed 's/;$//; s/;/, /g')
FS=$(stat -f -c %T "$INCUS_LAB_DIR")

mkdir -p "$(dirname "$OUT")"
{
    echo "# Benchmarks"
    echo
    if [ "$QUICK" = true ]; then
        echo "Quick run (\`scripts/bench.sh --quick\`: 1 run per measurement, fewer instances); the reference numbers are in docs/bench.md."
    else
        echo "Written by \`scripts/bench.sh\` (rerun it to reproduce; \`--quick\` for a short run)."
    fi
    echo
    echo "## Machine"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- CPU: $(nproc) × ${CPU_MODEL:-unknown} (\`nproc\` = $(nproc)); memory: $MEM_GIB GiB; kernel $(uname -r)"
    echo "- Incus: $INCUS_VERSION; the two lab daemons of \`scripts/lab.sh\` on this machine (standby reached over HTTPS on 127.0.0.1), storage pool \`default\` (dir driver, on $FS)"
    echo "- Tools: release build, $(rustc -V 2>/dev/null || echo 'rustc unknown')"
    echo "- Load average (1, 5, 15 min) when the measurements started: $LOAD_START; when they ended: $(cut -d' ' -f1-3 /proc/loadavg) (other work on this machine shares its CPUs and disk)"
    echo
    echo "## Method"
    echo
    echo "Each of our tools is measured against the obvious alternative: the \`incus\` CLI doing the same work in a shell loop, one instance after the other."
    echo "Both sides run against the same two daemons, in the same run of the script, in a project of their own (\`$PROJECT\`, on both servers, deleted afterwards)."
    echo "Wall time is taken with \`date +%s.%N\` around the whole command or loop; every figure is the median of $REPS run(s) (all runs are listed)."
    echo "\"Daemons CPU\" is the user+system CPU time both incusd processes (with their waited-for children such as rsync) used during the measurement, from /proc/PID/stat;"
    echo "\"Client CPU\" is that of the client processes (our tool, or all the \`incus\` invocations of the loop)."
    echo "The lab daemons may be shared with other work on this machine, which can add noise to the daemons' CPU time."
    echo "Instances are stopped busybox containers (a few MB each) unless said otherwise. incus-push runs in its default mode (pull: the standby connects to the primary), like \`incus copy\`."
    echo
    echo "## 1. Snapshots: incus-snap"
    echo
    echo "$N_SNAP stopped instances, one snapshot each per run."
    echo "Ours: \`incus-snap --project $PROJECT --all\` (default \`--jobs 4\`). CLI: \`for i in …; do incus snapshot create --project $PROJECT \$i; done\`."
    echo
    header
    row c1 tool "incus-snap --all" "$N_SNAP"
    row c1 cli "CLI loop" "$N_SNAP"
    echo
    echo "Speed-up: **${C1_R}x** (target ≥ 2x): $(met "$C1_R" '>=' 2). Peak RSS of incus-snap: $SNAP_RSS_MB MB."
    echo
    where c1
    echo
    echo "## 2. Replication, nothing new: incus-push"
    echo
    echo "$N_PUSH instances with one snapshot each, already replicated."
    echo "Ours: \`incus-push --project $PROJECT --all --to standby --jobs $JOBS\` (it compares the snapshot lists and sends nothing)."
    echo "CLI: \`for i in …; do incus copy -q --project $PROJECT --target-project $PROJECT \$i standby:\$i --refresh; done\` (refreshing the same replicas; the CLI's refresh always re-syncs the instance's volume, and also copies the source's configuration, volatile keys included)."
    echo
    header
    row c2 tool "incus-push --all" "$N_PUSH"
    row c2 cli "CLI loop" "$N_PUSH"
    echo
    echo "Speed-up: **${C2_R}x** (target ≥ 20x): $(met "$C2_R" '>=' 20)."
    echo
    where c2
    echo
    echo "## 3. Replication, one new snapshot each: incus-snap | incus-push"
    echo
    echo "The same $N_PUSH instances; each run snapshots every instance, then replicates the new snapshot."
    echo "Ours: \`incus-snap --project $PROJECT --all | incus-push --to standby --jobs $JOBS\`."
    echo "CLI: \`for i in …; do incus snapshot create --project $PROJECT \$i; incus copy -q --project $PROJECT --target-project $PROJECT \$i standby:\$i --refresh; done\`."
    echo "incus-push does a little more than the CLI: after the transfer it restores each replica to its newest snapshot and rewrites its configuration (inert: no autostart, no schedule)."
    echo "(Our runs come first: the CLI's refresh rewrites the replicas' configuration, which removes incus-push's marker.)"
    echo
    header
    row c3 tool "incus-snap \| incus-push" "$N_PUSH"
    row c3 cli "CLI loop" "$N_PUSH"
    echo
    echo "Speed-up: **${C3_R}x** (target ≥ 2x): $(met "$C3_R" '>=' 2)."
    echo "Of our side's wall time, incus-snap took $(median <(cut -d' ' -f1 "$TMP/rss.snap3" | grep -E '^[0-9.]+$') 1) s (median), incus-push the rest."
    echo
    where c3
    echo
    echo "## 4. One full copy of $BIG_MB MB"
    echo
    echo "One stopped instance holding $BIG_MB MB from /dev/urandom (written with \`dd\` inside it), no snapshots; the replica is deleted before every copy, and the two sides alternate."
    echo "Ours: \`incus-push --project $PROJECT --to standby big\`. CLI: \`incus copy -q --project $PROJECT --target-project $PROJECT big standby:big\`."
    echo
    header
    row c4 tool "incus-push" 1
    row c4 cli "incus copy" 1
    echo
    echo "incus-push / incus copy: **${C4_R}x** (target ≤ 1.05x): $(met "$C4_R" '<=' 1.05)."
    echo
    awk -v dt="$(median "$TMP/c4.tool" 2)" -v dc="$(median "$TMP/c4.cli" 2)" \
        -v lt="$(sort -g "$TMP/c4.tool" | head -n 1 | cut -d' ' -f1)" -v ht="$(sort -g "$TMP/c4.tool" | tail -n 1 | cut -d' ' -f1)" \
        -v lc="$(sort -g "$TMP/c4.cli" | head -n 1 | cut -d' ' -f1)" -v hc="$(sort -g "$TMP/c4.cli" | tail -n 1 | cut -d' ' -f1)" 'BEGIN {
        printf "Where the time goes: the transfer itself, done by the daemons for both sides (%.2f s of their CPU for incus-push, %.2f s for incus copy); ", dt, dc
        printf "wall times ranged over %.2f–%.2f s for incus-push and %.2f–%.2f s for incus copy", lt, ht, lc, hc
        if (lt <= hc && lc <= ht) printf ": the ranges overlap, the difference is within the run-to-run noise of this machine.\n"
        else printf ": the ranges do not overlap.\n"
    }'
    echo
    echo "## 5. Memory of incus-push"
    echo
    echo "Peak RSS (\`/usr/bin/time -f %M\`) of incus-push over every run of cases 2 to 4: **$RSS_MB MB** (target < 30 MB): $(met "$RSS_MB" '<=' 29.999)."
    echo "By case (largest of the runs): nothing new $(mb "$(max_rss push2)") MB, one new snapshot each $(mb "$(max_rss push3)") MB, full copy $(mb "$(max_rss push4)") MB."
    echo
    echo "## 6. incus-prune's retention policy"
    echo
    echo "\`target/release/examples/policy_bench\`: deciding $POLICY_COUNT snapshots (one every 15 minutes, about 104 days) with \`--keep-last 10 --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --keep-yearly 3\`; the example prints the best of 20 decisions, the figure is the median of $REPS run(s) of it ($(all_values "$TMP/c6" 1) ms)."
    echo
    echo "**$C6_MS ms** (target < 10 ms): $(met "$C6_MS" '<=' 9.999)."
    echo
    cat "$TMP/failover.md"
    cat "$TMP/history.md"
    cat "$TMP/scale.md"
    echo "## Summary"
    echo
    echo "| Case | Result | Target | Met |"
    echo "|---|---|---|---|"
    echo "| 1. incus-snap, $N_SNAP snapshots | ${C1_R}x faster | ≥ 2x | $(met "$C1_R" '>=' 2) |"
    echo "| 2. incus-push, nothing new ($N_PUSH) | ${C2_R}x faster | ≥ 20x | $(met "$C2_R" '>=' 20) |"
    echo "| 3. incus-push, one new snapshot each ($N_PUSH) | ${C3_R}x faster | ≥ 2x | $(met "$C3_R" '>=' 2) |"
    echo "| 4. full copy, $BIG_MB MB | ${C4_R}x the time of incus copy | ≤ 1.05x | $(met "$C4_R" '<=' 1.05) |"
    echo "| 5. incus-push peak RSS | $RSS_MB MB | < 30 MB | $(met "$RSS_MB" '<=' 29.999) |"
    echo "| 6. policy, $POLICY_COUNT snapshots | $C6_MS ms | < 10 ms | $(met "$C6_MS" '<=' 9.999) |"
    cat "$TMP/failover-summary.md"
    cat "$TMP/history-summary.md"
    cat "$TMP/scale-summary.md"
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "wrote $OUT"
