#!/usr/bin/env bash
# The incus-standby test lab: two private Incus daemons ("primary" and "standby") on this
# machine, listening on 127.0.0.1, with a tiny locally built busybox image.
#
#   scripts/lab.sh up [--cluster]  start (and on first use create) the lab; idempotent. With
#                                  --cluster (remembered until `down --purge`) also two
#                                  two-member Incus clusters, "primary-cluster" and
#                                  "standby-cluster" (see below)
#   scripts/lab.sh down [--purge]  stop everything the lab started; --purge also deletes it
#   scripts/lab.sh status          one line per daemon; exit 0 only if both are running
#   scripts/lab.sh env             `export NAME=VALUE` lines for tests: eval "$(scripts/lab.sh env)"
#
# Environment:
#   INCUS_LAB_DIR           lab directory (default: <repo>/.lab)
#   INCUS_LAB_PRIMARY_PORT  HTTPS port of the primary (default 18443)
#   INCUS_LAB_STANDBY_PORT  HTTPS port of the standby (default 18444)
#   INCUS_LAB_CLUSTER_PORT  HTTPS port of every cluster member (default 18445)
#
# Layout of the lab directory:
#   primary/, standby/   INCUS_DIR of each daemon
#   conf/                INCUS_CONF for the incus CLI and our tools (remotes local, primary,
#                        standby; client.crt trusted by both daemons; servercerts/)
#   logs/                daemon logs
#   image/               the busybox image (busybox.tar.gz, unified tarball)
#   pcluster-m1/, pcluster-m2/, scluster-m1/, scluster-m2/
#                        with --cluster: INCUS_DIR of the members of two clusters, each made
#                        of members "m1" and "m2" (the same names in both, as a site and its
#                        copy would have), on 127.0.0.11 and .12 (remote primary-cluster) and
#                        127.0.0.13 and .14 (remote standby-cluster). Each has a dir pool
#                        "default" and a cluster group "second" holding m2.
#
# Every process the lab starts is detached from the caller (setsid, stdin /dev/null,
# output to logs/), so that nothing keeps the caller's stdout/stderr open.
# The system Incus (/var/lib/incus, /run/incus) is never touched.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
LAB=${INCUS_LAB_DIR:-$REPO/.lab}
case "$LAB" in /*) ;; *) LAB=$PWD/$LAB ;; esac
LAB=$(realpath -m "$LAB")
PRIMARY_PORT=${INCUS_LAB_PRIMARY_PORT:-18443}
STANDBY_PORT=${INCUS_LAB_STANDBY_PORT:-18444}
CLUSTER_PORT=${INCUS_LAB_CLUSTER_PORT:-18445}
DAEMONS=(primary standby)
# The cluster members, in start order (m1 bootstraps its cluster and is its database leader).
CLUSTER_MEMBERS=(pcluster-m1 pcluster-m2 scluster-m1 scluster-m2)
with_cluster() { [ -f "$LAB/with-cluster" ]; }
if with_cluster; then DAEMONS+=("${CLUSTER_MEMBERS[@]}"); fi
CONF=$LAB/conf
LOGS=$LAB/logs

# The lab never reads the caller's stdin (heredocs still work per command).
exec </dev/null

# Never let the caller's Incus settings leak into the lab's CLI calls.
unset INCUS_SOCKET INCUS_PROJECT INCUS_REMOTE INCUS_GLOBAL_CONF 2>/dev/null || true

log() { printf 'lab: %s\n' "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

port_of() {
    case "$1" in
        primary) echo "$PRIMARY_PORT" ;;
        standby) echo "$STANDBY_PORT" ;;
        *) echo "$CLUSTER_PORT" ;;
    esac
}
# The HTTPS address of a daemon.
address_of() {
    case "$1" in
        primary | standby) echo "127.0.0.1:$(port_of "$1")" ;;
        *) echo "$(member_ip "$1"):$CLUSTER_PORT" ;;
    esac
}
# The listen address of a cluster member.
member_ip() {
    case "$1" in
        pcluster-m1) echo 127.0.0.11 ;; pcluster-m2) echo 127.0.0.12 ;;
        scluster-m1) echo 127.0.0.13 ;; scluster-m2) echo 127.0.0.14 ;;
    esac
}

# Run the incus CLI against one lab daemon over its unix socket.
lincus() {
    local d=$1; shift
    INCUS_DIR=$LAB/$d INCUS_CONF=$CONF incus "$@"
}

incusd_bin() {
    if command -v incusd >/dev/null 2>&1; then command -v incusd
    elif [ -x /usr/libexec/incus/incusd ]; then echo /usr/libexec/incus/incusd
    elif [ -x /usr/lib/incus/incusd ]; then echo /usr/lib/incus/incusd
    else return 1; fi
}

# ---------------------------------------------------------------------------------------
# installation (CI runs on a fresh Debian bookworm machine)

ensure_installed() {
    local missing=()
    command -v incus >/dev/null 2>&1 || missing+=(incus)
    incusd_bin >/dev/null 2>&1 || missing+=(incusd)
    command -v mkfs.btrfs >/dev/null 2>&1 || missing+=(btrfs-progs)
    dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing incus, btrfs-progs and busybox-static (missing: ${missing[*]})"
    [ "$(id -u)" -eq 0 ] || die "root is needed to install packages"
    local src=/etc/apt/sources.list.d/bookworm-backports.sources
    if [ ! -e "$src" ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        local uri="http://deb.debian.org/debian" key="/usr/share/keyrings/debian-archive-keyring.gpg"
        if [ -f /etc/apt/sources.list.d/debian.sources ]; then
            # The first stanza of debian.sources is the main archive.
            uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
            key=$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
        fi
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
            "${uri:-http://deb.debian.org/debian}" \
            "${key:-/usr/share/keyrings/debian-archive-keyring.gpg}" >"$src"
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update </dev/null >&2
    apt-get install -y -t bookworm-backports incus btrfs-progs busybox-static </dev/null >&2
    # The Debian package may start a system incusd via systemd: harmless, the lab never uses it.
}

# ---------------------------------------------------------------------------------------
# daemon state

# Whether a pid is a live (not zombie) process.
alive() {
    local st
    st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

pid_of() {
    local f=$LAB/$1/lab.pid pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f" 2>/dev/null) || return 1
    [ -n "$pid" ] && alive "$pid" || return 1
    # A stale pid file could name a recycled pid: check that it is our incusd.
    { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxF "INCUS_DIR=$LAB/$1" || return 1
    echo "$pid"
}

healthy() {
    pid_of "$1" >/dev/null && [ -S "$LAB/$1/unix.socket" ] &&
        timeout 10 env INCUS_DIR="$LAB/$1" INCUS_CONF="$CONF" incus query /1.0 </dev/null >/dev/null 2>&1
}

all_healthy() {
    local d
    for d in "${DAEMONS[@]}"; do healthy "$d" || return 1; done
}

start_daemon() {
    local d=$1 dir=$LAB/$1 bin
    bin=$(incusd_bin) || die "incusd not found"
    if healthy "$d"; then return 0; fi
    if pid_of "$d" >/dev/null; then
        log "$d: incusd runs but does not answer; restarting it"
        stop_daemon "$d"
    fi
    mkdir -p "$dir" "$LOGS"
    chmod 711 "$LAB" "$dir"
    local sock=$dir/unix.socket
    [ ${#sock} -lt 100 ] || die "lab path too long for a unix socket: $sock (set INCUS_LAB_DIR)"
    log "$d: starting incusd (INCUS_DIR=$dir)"
    # Fully detached: own session, no inherited stdin/stdout/stderr.
    INCUS_DIR=$dir setsid "$bin" --group root </dev/null >>"$LOGS/$d.log" 2>&1 &
    echo $! >"$dir/lab.pid"
    if ! timeout 90 env INCUS_DIR="$dir" INCUS_CONF="$CONF" incus admin waitready --timeout 60 \
        </dev/null >/dev/null 2>&1; then
        tail -n 20 "$LOGS/$d.log" >&2 || true
        die "$d: incusd did not become ready (log: $LOGS/$d.log)"
    fi
}

# ---------------------------------------------------------------------------------------
# configuration (every step is idempotent)

build_image() {
    local img=$LAB/image
    [ -f "$img/busybox.tar.gz" ] && return 0
    log "building the busybox image"
    local bb=/bin/busybox
    [ -x "$bb" ] || die "/bin/busybox missing (package busybox-static)"
    rm -rf "$img/build"
    mkdir -p "$img/build/rootfs"
    (
        cd "$img/build/rootfs"
        mkdir -p bin sbin etc dev proc sys tmp root run var/log usr/bin usr/sbin mnt
        chmod 1777 tmp
        chmod 700 root
        cp "$bb" bin/busybox
        local a
        for a in sh ash sleep cat echo ls mkdir touch rm date sync ps kill grep sed mount umount \
            head tail wc stat env id hostname true false cp mv ln dd find sha256sum md5sum \
            chmod chown uname tr test printf seq du df sort uniq xargs tee basename dirname \
            readlink realpath vi; do
            ln -s busybox "bin/$a"
        done
        # Incus stops a container by sending SIGPWR to its init and waiting for it to exit
        # (a forced stop kills it). busybox init ignores SIGPWR, so `incus stop` would hang
        # until its timeout; this init exits at once on SIGPWR/SIGTERM/SIGINT.
        cat >sbin/init <<'EOF'
#!/bin/sh
# init of the incus-standby test image: idle until Incus asks for a stop (SIGPWR).
trap 'exit 0' PWR TERM INT
while :; do
    sleep 1000000 &
    wait $!
done
EOF
        chmod 755 sbin/init
        ln -s ../sbin/init bin/init
        printf 'root:x:0:0:root:/root:/bin/sh\n' >etc/passwd
        printf 'root:x:0:\n' >etc/group
        printf 'busybox\n' >etc/hostname
        : >etc/hosts
    )
    cat >"$img/build/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  os: busybox
  description: busybox test
  release: "1"
EOF
    tar -C "$img/build" --numeric-owner -czf "$img/busybox.tar.gz.tmp" metadata.yaml rootfs
    mv "$img/busybox.tar.gz.tmp" "$img/busybox.tar.gz"
    rm -rf "$img/build"
}

# Unprivileged containers need every directory above the lab to be world-searchable
# (the container's root uid must reach its rootfs). If one is not (e.g. a clone under
# /root, mode 700), the lab's containers run privileged instead.
needs_privileged() {
    local p=$LAB
    while [ "$p" != / ]; do
        p=$(dirname "$p")
        [ -e "$p" ] || continue
        [ "$(( 0$(stat -c %a "$p") & 1 ))" -eq 1 ] || return 0
    done
    return 1
}

ensure_conf() {
    mkdir -p "$CONF/servercerts"
    chmod 700 "$CONF"
    cat >"$CONF/config.yml" <<EOF
default-remote: local
remotes:
  local:
    addr: unix://
    protocol: incus
    public: false
  primary:
    addr: https://127.0.0.1:$PRIMARY_PORT
    project: default
    protocol: incus
    public: false
  standby:
    addr: https://127.0.0.1:$STANDBY_PORT
    project: default
    protocol: incus
    public: false
EOF
    if with_cluster; then
        cat >>"$CONF/config.yml" <<EOF
  primary-cluster:
    addr: https://$(member_ip pcluster-m1):$CLUSTER_PORT
    project: default
    protocol: incus
    public: false
  standby-cluster:
    addr: https://$(member_ip scluster-m1):$CLUSTER_PORT
    project: default
    protocol: incus
    public: false
EOF
    fi
    echo 'aliases: {}' >>"$CONF/config.yml"
    if [ ! -s "$CONF/client.crt" ] || [ ! -s "$CONF/client.key" ]; then
        rm -f "$CONF/client.crt" "$CONF/client.key"
        INCUS_CONF=$CONF incus remote generate-certificate </dev/null >/dev/null
    fi
}

configure_daemon() {
    local d=$1 port
    port=$(port_of "$d")
    if ! lincus "$d" storage show default >/dev/null 2>&1; then
        log "$d: initializing (https 127.0.0.1:$port, pools default (dir) and btrfs)"
        lincus "$d" admin init --preseed <<EOF
config:
  core.https_address: 127.0.0.1:$port
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  description: incus-standby lab default profile (no network)
  devices:
    root:
      path: /
      pool: default
      type: disk
EOF
    elif [ "$(lincus "$d" config get core.https_address)" != "127.0.0.1:$port" ]; then
        lincus "$d" config set core.https_address "127.0.0.1:$port"
    fi
    if ! lincus "$d" storage show btrfs >/dev/null 2>&1; then
        lincus "$d" storage create btrfs btrfs size=2GiB >/dev/null
    fi
    provision "$d" "$d"
    cp "$LAB/$d/server.crt" "$CONF/servercerts/$d.crt"
}

# What every server of the lab has (a cluster once, through its first member DAEMON): the
# default profile privileged when needed, the busybox image, the lab's client certificate
# trusted. NAME names the server in messages.
provision() {
    local d=$1 name=$2 priv out
    priv=$(lincus "$d" profile get default security.privileged)
    if needs_privileged; then
        if [ "$priv" != true ]; then
            log "$name: a parent of $LAB is not world-searchable: containers run privileged"
            lincus "$d" profile set default security.privileged true
        fi
    elif [ -n "$priv" ]; then
        lincus "$d" profile unset default security.privileged
    fi
    if ! lincus "$d" image alias list -f csv | grep -q '^busybox,'; then
        lincus "$d" image import "$LAB/image/busybox.tar.gz" --alias busybox >/dev/null
    fi
    if ! out=$(lincus "$d" config trust add-certificate "$CONF/client.crt" --name incus-lab-client 2>&1); then
        case "$out" in
            *"already exists"* | *"already trusted"* | *"Certificate already in trust store"*) ;;
            *) die "$name: trusting the lab client certificate failed: $out" ;;
        esac
    fi
}

# Whether a daemon is a cluster member already.
clustered() {
    lincus "$1" query /1.0 | grep -q '"server_clustered": true'
}

# One cluster: FIRST bootstraps it, SECOND joins it (each step skipped when done already).
configure_cluster() {
    local first=$1 second=$2 remote=$3 ip token
    if ! clustered "$first"; then
        ip=$(member_ip "$first")
        log "$remote: bootstrapping the cluster on $ip:$CLUSTER_PORT (member m1)"
        lincus "$first" admin init --preseed <<EOF
config:
  core.https_address: $ip:$CLUSTER_PORT
  cluster.https_address: $ip:$CLUSTER_PORT
cluster:
  server_name: m1
  enabled: true
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  description: incus-standby lab default profile (no network)
  devices:
    root:
      path: /
      pool: default
      type: disk
EOF
    fi
    if ! clustered "$second"; then
        ip=$(member_ip "$second")
        log "$remote: member m2 ($ip:$CLUSTER_PORT) joins"
        lincus "$first" cluster revoke-token m2 >/dev/null 2>&1 || true
        token=$(lincus "$first" cluster add m2 -q) || die "$remote: no join token for m2"
        lincus "$second" admin init --preseed <<EOF
cluster:
  enabled: true
  server_name: m2
  server_address: $ip:$CLUSTER_PORT
  cluster_token: $token
  member_config:
  - entity: storage-pool
    name: default
    key: source
    value: ""
EOF
    fi
    if ! lincus "$first" cluster group show second >/dev/null 2>&1; then
        lincus "$first" cluster group create second >/dev/null
        lincus "$first" cluster group assign m2 default,second >/dev/null
    fi
    provision "$first" "$remote"
    # Every member presents the cluster's certificate.
    cp "$LAB/$first/cluster.crt" "$CONF/servercerts/$remote.crt"
}

smoke_test() {
    local d name
    for d in primary standby; do
        name=lab-smoke-$$
        lincus "$d" launch busybox "$name" -q >/dev/null 2>&1 ||
            die "$d: cannot launch the busybox image (see: incus info --show-log $name)"
        [ "$(lincus "$d" exec "$name" -- sh -c 'echo hi > /root/f && cat /root/f')" = hi ] ||
            die "$d: exec in a busybox container failed"
        timeout 30 env INCUS_DIR="$LAB/$d" INCUS_CONF="$CONF" incus stop "$name" </dev/null ||
            die "$d: incus stop did not finish quickly"
        lincus "$d" delete "$name"
    done
}

ready_text() {
    if with_cluster; then echo "$PRIMARY_PORT $STANDBY_PORT cluster $CLUSTER_PORT"; else echo "$PRIMARY_PORT $STANDBY_PORT"; fi
}

cmd_up() {
    local a
    for a in "$@"; do
        case "$a" in
            --cluster)
                if ! with_cluster; then
                    mkdir -p "$LAB"
                    : >"$LAB/with-cluster"
                    DAEMONS+=("${CLUSTER_MEMBERS[@]}")
                fi
                ;;
            *) die "unknown option for up: $a" ;;
        esac
    done
    if [ -f "$LAB/ready" ] && [ "$(cat "$LAB/ready")" = "$(ready_text)" ] && all_healthy; then
        log "the lab is already running ($LAB)"
        return 0
    fi
    ensure_installed
    local start=$SECONDS smoke=false d
    [ -f "$LAB/ready" ] || smoke=true  # after a fresh start: check that containers work
    rm -f "$LAB/ready"
    mkdir -p "$LAB" "$LOGS"
    ensure_conf
    build_image
    for d in "${DAEMONS[@]}"; do start_daemon "$d"; done
    for d in primary standby; do configure_daemon "$d"; done
    local remotes=(primary standby)
    if with_cluster; then
        configure_cluster pcluster-m1 pcluster-m2 primary-cluster
        configure_cluster scluster-m1 scluster-m2 standby-cluster
        remotes+=(primary-cluster standby-cluster)
        # A member that just (re)started answers on its own socket a moment before its
        # cluster forwards to it ("Server isn't ready yet"): wait for that too.
        for d in pcluster-m1 scluster-m1; do
            local m i
            for m in m1 m2; do
                for i in $(seq 120); do
                    lincus "$d" query "/1.0/resources?target=$m" >/dev/null 2>&1 && break
                    [ "$i" -lt 120 ] || die "cluster member $m (via $d) does not serve requests"
                    sleep 0.5
                done
            done
        done
    fi
    # The CLI over HTTPS must work with the lab conf (client cert trusted, server cert pinned).
    for d in "${remotes[@]}"; do
        timeout 30 env INCUS_DIR="$LAB/primary" INCUS_CONF="$CONF" incus list "$d:" -f csv \
            </dev/null >/dev/null || die "the lab's remote $d: does not answer over HTTPS"
    done
    [ "$smoke" = true ] && smoke_test
    ready_text >"$LAB/ready"
    log "the lab is up in $((SECONDS - start)) s: eval \"\$(scripts/lab.sh env)\""
}

# ---------------------------------------------------------------------------------------
# teardown

# Pids of processes that belong to the lab: incusd processes (the daemons, forkfile,
# forkexec, "[lxc monitor]" ...) whose command line or environment mentions the lab
# directory, plus all their descendants (the containers' processes).
lab_pids() {
    local p exe roots=() d
    for d in /proc/[0-9]*; do
        p=${d#/proc/}
        [ "$p" = $$ ] && continue
        exe=$(readlink "$d/exe" 2>/dev/null) || continue
        case "$exe" in */incusd | */incusd" (deleted)") ;; *) continue ;; esac
        alive "$p" || continue
        if { tr '\0' '\n' <"$d/cmdline"; } 2>/dev/null | grep -qF "$LAB/" ||
            { tr '\0' '\n' <"$d/environ"; } 2>/dev/null | grep -qF "INCUS_DIR=$LAB/"; then
            roots+=("$p")
        fi
    done
    [ ${#roots[@]} -eq 0 ] && return 0
    # Add descendants.
    ps -e -o pid=,ppid= | awk -v roots="${roots[*]}" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            changed = 1
            while (changed) {
                changed = 0
                for (i in pids) { p = pids[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
            }
            for (p in keep) print p
        }'
}

# Mount points under the lab directory, deepest first.
lab_mounts() {
    awk -v lab="$LAB" '
        function unescape(s) { gsub(/\\040/, " ", s); gsub(/\\011/, "\t", s); gsub(/\\012/, "\n", s); gsub(/\\134/, "\\", s); return s }
        { m = unescape($5); if (m == lab || index(m, lab "/") == 1) print length(m) "\t" m }
    ' /proc/self/mountinfo | sort -rn | cut -f2-
}

lab_loops() {
    losetup -n -l -O NAME,BACK-FILE 2>/dev/null | while read -r dev file; do
        file=${file% (deleted)}
        case "$file" in "$LAB"/*) echo "$dev" ;; esac
    done
}

stop_daemon() {
    local d=$1 pid p
    if healthy "$d"; then
        # Force-stop every running instance in every project, then shut the daemon down.
        for p in $(lincus "$d" project list -f csv -c n 2>/dev/null | sed 's/ (current)$//'); do
            timeout 60 env INCUS_DIR="$LAB/$d" INCUS_CONF="$CONF" incus stop --all --force \
                --project "$p" </dev/null >/dev/null 2>&1 || true
        done
        timeout 60 env INCUS_DIR="$LAB/$d" INCUS_CONF="$CONF" incus admin shutdown --timeout 30 \
            </dev/null >/dev/null 2>&1 || true
    fi
    if pid=$(pid_of "$d"); then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$LAB/$d/lab.pid"
}

cmd_down() {
    local purge=false a d pids mounts loops
    for a in "$@"; do
        case "$a" in --purge) purge=true ;; *) die "unknown option for down: $a" ;; esac
    done
    rm -f "$LAB/ready"
    if [ -d "$LAB" ]; then
        # Cluster members that joined go first, their cluster's database leader (m1) after them.
        for d in pcluster-m2 scluster-m2 pcluster-m1 scluster-m1 primary standby; do
            if [ -d "$LAB/$d" ]; then stop_daemon "$d"; fi
        done
    fi
    # Leftovers (a crashed daemon, an orphaned "[lxc monitor]", forkfile, container processes).
    for _ in 1 2 3 4 5; do
        pids=$(lab_pids)
        [ -z "$pids" ] && break
        log "killing leftover processes: $(echo $pids)"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.3
    done
    [ -z "$(lab_pids)" ] || log "warning: some lab processes survived: $(lab_pids | tr '\n' ' ')"
    for _ in 1 2 3 4 5; do
        mounts=$(lab_mounts)
        [ -z "$mounts" ] && break
        while IFS= read -r m; do
            umount -l "$m" 2>/dev/null || true
        done <<<"$mounts"
    done
    [ -z "$(lab_mounts)" ] || log "warning: mounts left under $LAB: $(lab_mounts | tr '\n' ' ')"
    loops=$(lab_loops)
    for d in $loops; do losetup -d "$d" 2>/dev/null || log "warning: cannot detach $d"; done
    if [ "$purge" = true ] && [ -e "$LAB" ]; then
        [ -z "$(lab_mounts)" ] || die "not purging $LAB: something is still mounted under it"
        case "$LAB" in / | "$HOME" | /root | /home | /tmp | /var | /var/lib | /var/lib/incus*) die "refusing to delete $LAB" ;; esac
        rm -rf --one-file-system "$LAB"
        log "lab purged ($LAB)"
    else
        log "the lab is down ($LAB)"
    fi
}

cmd_status() {
    local d rc=0 pid
    for d in "${DAEMONS[@]}"; do
        if healthy "$d"; then
            pid=$(pid_of "$d")
            echo "$d: running (pid $pid, https://$(address_of "$d"), INCUS_DIR=$LAB/$d)"
        elif pid=$(pid_of "$d"); then
            echo "$d: not answering (pid $pid, INCUS_DIR=$LAB/$d)"; rc=1
        else
            echo "$d: not running (INCUS_DIR=$LAB/$d)"; rc=1
        fi
    done
    return $rc
}

cmd_env() {
    all_healthy || die "the lab is not running: run scripts/lab.sh up"
    local kv
    for kv in "INCUS_CONF=$CONF" "INCUS_DIR=$LAB/primary" "INCUS_LAB_DIR=$LAB" \
        "INCUS_LAB_PRIMARY_PORT=$PRIMARY_PORT" "INCUS_LAB_STANDBY_PORT=$STANDBY_PORT" \
        "INCUS_LAB_STANDBY_DIR=$LAB/standby"; do
        printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
    if with_cluster; then
        printf 'export %s=%q\n' INCUS_LAB_CLUSTER_PORT "$CLUSTER_PORT"
    fi
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) shift; cmd_down "$@" ;;
    status) shift; cmd_status "$@" ;;
    env) shift; cmd_env "$@" ;;
    *) echo "usage: $0 up [--cluster] | down [--purge] | status | env" >&2; exit 2 ;;
esac
