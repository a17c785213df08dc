#!/usr/bin/env bash
# The incus-standby test lab: two private Incus daemons ("primary" and "standby") on this
# machine, listening on 127.0.0.1, with a tiny locally built busybox image.
#
#   scripts/lab.sh up [--cluster] [--incus VERSION]
#                                  start (and on first use create) the lab; idempotent. With
#                                  --cluster (remembered until `down --purge`) also two
#                                  two-member Incus clusters, "primary-cluster" and
#                                  "standby-cluster" (see below). VERSION (remembered until
#                                  `down --purge`; default 7.0, the newest LTS) is the Incus the daemons run:
#                                    6.0    Incus 6.0 LTS, Debian bookworm-backports packages
#                                           installed on this machine
#                                    7.0    Incus 7.0 LTS, Debian trixie-backports packages in
#                                           a private Debian trixie root (roots/incus-7.0)
#                                    mixed  a 6.0 primary (and primary-cluster) with a 7.0
#                                           standby (and standby-cluster): the standby is
#                                           upgraded first
#   scripts/lab.sh down [--purge]  stop everything the lab started; --purge also deletes it
#                                  (but keeps the cached roots/)
#   scripts/lab.sh status          one line per daemon; exit 0 only if all are running
#   scripts/lab.sh version         the Incus version `up` runs (6.0, 7.0 or mixed)
#   scripts/lab.sh env             `export NAME=VALUE` lines for tests: eval "$(scripts/lab.sh env)"
#
# Environment:
#   INCUS_LAB_DIR           lab directory (default: <repo>/.lab)
#   INCUS_LAB_PRIMARY_PORT  HTTPS port of the primary (default 18443)
#   INCUS_LAB_STANDBY_PORT  HTTPS port of the standby (default 18444)
#   INCUS_LAB_CLUSTER_PORT  HTTPS port of every cluster member (default 18445)
#   INCUS_LAB_CLUSTER_IP_BASE
#                           the cluster members listen on 127.0.0.(BASE+1) to (BASE+4)
#                           (default 10: 127.0.0.11 to .14)
#   INCUS_LAB_INCUS         the Incus version of `up` when --incus is not given: 6.0, 7.0 or
#                           mixed (default: 7.0, the newest LTS). `up` refuses to change the
#                           version of an existing lab.
#   INCUS_LAB_ROOTS         where the Incus roots are built and cached (default: <lab>/roots)
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
#                        127.0.0.13 and .14 (remote standby-cluster) by default (see
#                        INCUS_LAB_CLUSTER_IP_BASE). Each has a dir pool "default" and a
#                        cluster group "second" holding m2.
#   incus                the lab's Incus version (6.0, 7.0 or mixed), written by `up`
#   roots/incus-7.0/     the Debian trixie root holding Incus 7.0 (debootstrap, then
#                        trixie-backports packages), built on first use, rebuilt when its
#                        recipe changes (roots/incus-7.0/.lab-recipe holds the recipe's hash)
#
# How a 7.0 daemon runs: `unshare -m` gives it a private mount namespace in which the root is
# bind-mounted on itself, /sys and /dev are bind-mounted into it, proc and a tmpfs on /run
# are mounted, its INCUS_DIR (<lab>/NAME, the same path as on the host) is bind-mounted into
# it, then `pivot_root` makes the root its / and the host's tree is detached. Its socket and
# state are thus at the usual place on the host, and the host's 6.0 `incus` client drives it.
# Its storage mounts (the btrfs loop pool) live in that namespace only and go with it.
# (Not chroot: the kernel refuses new user namespaces to a chrooted process, and containers
# fail with "Failed to clone a new set of namespaces".)
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
CLUSTER_IP_BASE=${INCUS_LAB_CLUSTER_IP_BASE:-10}
case "$CLUSTER_IP_BASE" in [0-9] | [0-9][0-9] | 1[0-9][0-9] | 2[0-4][0-9] | 250) ;;
    *) printf 'lab: error: INCUS_LAB_CLUSTER_IP_BASE must be 0 to 250\n' >&2; exit 1 ;; esac
ROOTS=${INCUS_LAB_ROOTS:-$LAB/roots}
case "$ROOTS" in /*) ;; *) ROOTS=$PWD/$ROOTS ;; esac
ROOTS=$(realpath -m "$ROOTS")
DAEMONS=(primary standby)
# The cluster members, in start order (m1 bootstraps its cluster and is its database leader).
CLUSTER_MEMBERS=(pcluster-m1 pcluster-m2 scluster-m1 scluster-m2)
with_cluster() { [ -f "$LAB/with-cluster" ]; }
if with_cluster; then DAEMONS+=("${CLUSTER_MEMBERS[@]}"); fi
# The lab's Incus version: 6.0, 7.0 or mixed (written by `up`; a lab without it runs 6.0).
# A new lab runs the newest LTS (7.0); a lab made before versions were recorded runs 6.0.
lab_incus() {
    if [ -s "$LAB/incus" ]; then
        cat "$LAB/incus"
    elif [ -e "$LAB/primary/database" ]; then
        echo 6.0
    else
        echo 7.0
    fi
}
# The Incus version (6.0 or 7.0) of one daemon: in a mixed lab, the primary side runs 6.0.
incus_of() {
    local v
    v=$(lab_incus)
    case "$v" in
        mixed) case "$1" in primary | pcluster-*) echo 6.0 ;; *) echo 7.0 ;; esac ;;
        *) echo "$v" ;;
    esac
}
# The root that holds an Incus version other than the host's.
root_of() { echo "$ROOTS/incus-$1"; }
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
        pcluster-m1) echo "127.0.0.$((CLUSTER_IP_BASE + 1))" ;;
        pcluster-m2) echo "127.0.0.$((CLUSTER_IP_BASE + 2))" ;;
        scluster-m1) echo "127.0.0.$((CLUSTER_IP_BASE + 3))" ;;
        scluster-m2) echo "127.0.0.$((CLUSTER_IP_BASE + 4))" ;;
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

# The Debian archive this machine installs from (the first stanza of debian.sources).
debian_mirror() {
    local uri=
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# The Incus 7.0 root: Debian trixie (minbase) with incus-base, incus-client and btrfs-progs
# from trixie-backports. The text of this function is the recipe: any change to it rebuilds
# the root (see ensure_root). Mounts made for the build live in private mount namespaces
# (`unshare -m`), so an interrupted build leaves none behind.
build_root_7_0() {
    local root=$1 uri
    uri=$(debian_mirror)
    command -v debootstrap >/dev/null 2>&1 || {
        log "installing debootstrap"
        [ "$(id -u)" -eq 0 ] || die "root is needed to install debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap </dev/null >&2 || {
            apt-get update </dev/null >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap </dev/null >&2
        }
    }
    unshare -m --propagation private debootstrap --variant=minbase \
        --include=ca-certificates trixie "$root" "$uri" </dev/null >&2 ||
        die "debootstrap of Debian trixie into $root failed"
    printf 'Types: deb\nURIs: %s\nSuites: trixie-backports\nComponents: main\nSigned-By: %s\n' \
        "$uri" /usr/share/keyrings/debian-archive-keyring.gpg \
        >"$root/etc/apt/sources.list.d/trixie-backports.sources"
    # The same archive as the host's: the same freshness checks (a snapshot mirror needs
    # Check-Valid-Until off).
    apt-config dump 2>/dev/null | grep -E '^Acquire::Check-(Valid-Until|Date) ' \
        >"$root/etc/apt/apt.conf.d/90lab-host" || true
    # No service starts in the root at install time.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    unshare -m --propagation private bash -euc '
        r=$1
        mount --bind /proc "$r/proc"
        mount --rbind /sys "$r/sys"
        mount --rbind /dev "$r/dev"
        export DEBIAN_FRONTEND=noninteractive
        chroot "$r" apt-get update
        chroot "$r" apt-get install -y -t trixie-backports --no-install-recommends \
            incus-base incus-client btrfs-progs
        chroot "$r" apt-get clean
    ' lab-root-install "$root" </dev/null >&2 ||
        die "installing Incus 7.0 into $root failed"
    rm -rf "$root/var/lib/apt/lists/"*
    [ -x "$root/usr/libexec/incus/incusd" ] || die "$root: no /usr/libexec/incus/incusd after the install"
}

# Builds the root of VERSION unless it is there with the current recipe (6.0: nothing to do,
# the host's packages). The root's .lab-recipe holds the hash of the recipe it was built with.
ensure_root() {
    local v=$1 root want d start
    [ "$v" = 7.0 ] || return 0
    root=$(root_of "$v")
    want=$(declare -f build_root_7_0 | sha256sum | cut -d' ' -f1)
    if [ -x "$root/usr/libexec/incus/incusd" ] &&
        [ "$(cat "$root/.lab-recipe" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    for d in "${DAEMONS[@]}"; do
        if [ "$(incus_of "$d")" = "$v" ] && pid_of "$d" >/dev/null; then
            die "the recipe of $root changed, but $d runs on it: scripts/lab.sh down, then up"
        fi
    done
    # Labs that share INCUS_LAB_ROOTS build a root once: the first builds, the others wait.
    mkdir -p "$ROOTS"
    exec 9>"$ROOTS/.lock"
    flock 9
    if [ -x "$root/usr/libexec/incus/incusd" ] &&
        [ "$(cat "$root/.lab-recipe" 2>/dev/null)" = "$want" ]; then
        exec 9>&-
        return 0
    fi
    log "building the Incus $v root in $root (Debian trixie, a few minutes)"
    start=$SECONDS
    rm -rf --one-file-system "$root.tmp"
    build_root_7_0 "$root.tmp"
    echo "$want" >"$root.tmp/.lab-recipe"
    rm -rf --one-file-system "$root"
    mv "$root.tmp" "$root"
    exec 9>&-
    log "the Incus $v root is built in $((SECONDS - start)) s (incus-base $(dpkg-query \
        --admindir="$root/var/lib/dpkg" -W -f '${Version}' incus-base 2>/dev/null))"
}

# (In a private mount namespace, made by start_daemon with `unshare -m`.) Makes ROOT the
# namespace's / with /sys, /dev, proc, a fresh /run and the daemon's INCUS_DIR (same path as
# on the host) in it, detaches the host's tree, and becomes the root's incusd.
cmd_in_root() {
    local root=$1 dir=$2
    [ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] ||
        die "in-root: not in a private mount namespace (start_daemon runs it with unshare -m)"
    [ "${INCUS_DIR:-}" = "$dir" ] || die "in-root: INCUS_DIR is not $dir"
    mount --bind "$root" "$root"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mount -t proc proc "$root/proc"
    mount -t tmpfs -o mode=0755 tmpfs "$root/run"
    mkdir -p "$root$dir" "$root/.host"
    mount --bind "$dir" "$root$dir"
    cd "$root"
    pivot_root . .host
    cd /
    # The host's mounts (another lab's pools among them) are no longer held by this namespace.
    umount -l /.host
    exec /usr/libexec/incus/incusd --group root
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
    local v
    v=$(incus_of "$d")
    log "$d: starting incusd $v (INCUS_DIR=$dir)"
    # Fully detached: own session, no inherited stdin/stdout/stderr. (setsid, unshare and
    # cmd_in_root exec: $! is the incusd.)
    if [ "$v" = 6.0 ]; then
        INCUS_DIR=$dir setsid "$bin" --group root </dev/null >>"$LOGS/$d.log" 2>&1 &
    else
        INCUS_DIR=$dir setsid unshare -m --propagation private \
            bash "$REPO/scripts/lab.sh" in-root "$(root_of "$v")" "$dir" </dev/null >>"$LOGS/$d.log" 2>&1 &
    fi
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
    if with_cluster; then
        echo "$PRIMARY_PORT $STANDBY_PORT cluster $CLUSTER_PORT $CLUSTER_IP_BASE incus $(lab_incus)"
    else
        echo "$PRIMARY_PORT $STANDBY_PORT incus $(lab_incus)"
    fi
}

# Sets the lab's Incus version to WANT (6.0, 7.0 or mixed; empty: keep it). An existing lab
# keeps its version: its daemons' databases are not converted either way.
set_incus() {
    local want=$1 have d
    case "$want" in
        # Not asked: the lab's own (recorded now, so that a restart keeps it).
        "") want=$(lab_incus) ;;
        6.0 | 7.0 | mixed) ;;
        6 | 7) want=$want.0 ;;
        *) die "unknown Incus version: $want (6.0, 7.0 or mixed)" ;;
    esac
    have=$(lab_incus)
    [ "$want" = "$have" ] && [ -s "$LAB/incus" ] && return 0
    if [ "$want" != "$have" ]; then
        for d in primary standby "${CLUSTER_MEMBERS[@]}"; do
            if [ -e "$LAB/$d/database" ]; then
                die "the lab in $LAB runs Incus $have; for $want: scripts/lab.sh down --purge, then up --incus $want"
            fi
        done
    fi
    mkdir -p "$LAB"
    echo "$want" >"$LAB/incus"
}

cmd_up() {
    local a incus=${INCUS_LAB_INCUS:-}
    while [ $# -gt 0 ]; do
        a=$1; shift
        case "$a" in
            --cluster)
                if ! with_cluster; then
                    mkdir -p "$LAB"
                    : >"$LAB/with-cluster"
                    DAEMONS+=("${CLUSTER_MEMBERS[@]}")
                fi
                ;;
            --incus) [ $# -gt 0 ] || die "--incus needs a version (6.0, 7.0 or mixed)"; incus=$1; shift ;;
            --incus=*) incus=${a#--incus=} ;;
            *) die "unknown option for up: $a" ;;
        esac
    done
    set_incus "$incus"
    if [ -f "$LAB/ready" ] && [ "$(cat "$LAB/ready")" = "$(ready_text)" ] && all_healthy; then
        log "the lab is already running ($LAB)"
        return 0
    fi
    ensure_installed
    local start=$SECONDS smoke=false d
    for d in "${DAEMONS[@]}"; do ensure_root "$(incus_of "$d")"; done
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

# Mount points under the lab directory, deepest first: in this mount namespace, or in that of
# process PID.
lab_mounts() {
    awk -v lab="$LAB" '
        function unescape(s) { gsub(/\\040/, " ", s); gsub(/\\011/, "\t", s); gsub(/\\012/, "\n", s); gsub(/\\134/, "\\", s); return s }
        { m = unescape($5); if (m == lab || index(m, lab "/") == 1) print length(m) "\t" m }
    ' "/proc/${1:-self}/mountinfo" 2>/dev/null | sort -rn | cut -f2-
}

# One pid per mount namespace of the lab's processes other than this one's: the 7.0 daemons'
# namespaces (and their containers').
lab_namespaces() {
    local p ns mine seen=" "
    mine=$(readlink /proc/self/ns/mnt)
    for p in $(lab_pids); do
        ns=$(readlink "/proc/$p/ns/mnt" 2>/dev/null) || continue
        [ "$ns" = "$mine" ] && continue
        case "$seen" in *" $ns "*) continue ;; esac
        seen+="$ns "
        echo "$p"
    done
}

# Unmounts what is mounted under the lab in the mount namespace of process PID (a pool's
# mount inside a 7.0 daemon's namespace would otherwise keep its loop device busy as long as
# a process of that namespace lives).
umount_in_namespace() {
    local pid=$1 m
    for _ in 1 2 3; do
        local mounts
        mounts=$(lab_mounts "$pid")
        [ -z "$mounts" ] && return 0
        while IFS= read -r m; do
            nsenter -t "$pid" -m -- umount -l "$m" 2>/dev/null || true
        done <<<"$mounts"
    done
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
    # Leftovers (a crashed daemon, an orphaned "[lxc monitor]", forkfile, container processes):
    # first what they still hold mounted in the 7.0 daemons' namespaces, then they go.
    for d in $(lab_namespaces); do umount_in_namespace "$d"; done
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
    # A loop device whose last user was a namespace that just ended detaches itself (Incus
    # sets autoclear) a moment later.
    for _ in $(seq 20); do [ -z "$(lab_loops)" ] && break; sleep 0.25; done
    loops=$(lab_loops)
    for d in $loops; do losetup -d "$d" 2>/dev/null || log "warning: cannot detach $d"; done
    if [ "$purge" = true ] && [ -e "$LAB" ]; then
        [ -z "$(lab_mounts)" ] || die "not purging $LAB: something is still mounted under it"
        case "$LAB" in / | "$HOME" | /root | /home | /tmp | /var | /var/lib | /var/lib/incus*) die "refusing to delete $LAB" ;; esac
        # The Incus roots are a cache of downloads, not lab state: they stay.
        local e
        for e in "$LAB"/* "$LAB"/.[!.]*; do
            [ -e "$e" ] || continue
            [ "$e" = "$ROOTS" ] && continue
            rm -rf --one-file-system "$e"
        done
        if [ -d "$ROOTS" ] && [ "${ROOTS#"$LAB"/}" != "$ROOTS" ]; then
            log "lab purged ($LAB), but for the cached Incus roots in $ROOTS"
        else
            rmdir "$LAB" 2>/dev/null || true
            log "lab purged ($LAB)"
        fi
    else
        log "the lab is down ($LAB)"
    fi
}

cmd_status() {
    local d rc=0 pid v ver
    for d in "${DAEMONS[@]}"; do
        v=$(incus_of "$d")
        if healthy "$d"; then
            pid=$(pid_of "$d")
            ver=$(lincus "$d" query /1.0 2>/dev/null | sed -n 's/^[[:space:]]*"server_version": "\(.*\)",\{0,1\}$/\1/p' | head -n1)
            echo "$d: running Incus ${ver:-$v} (pid $pid, https://$(address_of "$d"), INCUS_DIR=$LAB/$d)"
        elif pid=$(pid_of "$d"); then
            echo "$d: not answering (Incus $v, pid $pid, INCUS_DIR=$LAB/$d)"; rc=1
        else
            echo "$d: not running (Incus $v, INCUS_DIR=$LAB/$d)"; rc=1
        fi
    done
    return $rc
}

cmd_env() {
    all_healthy || die "the lab is not running: run scripts/lab.sh up"
    local kv
    for kv in "INCUS_CONF=$CONF" "INCUS_DIR=$LAB/primary" "INCUS_LAB_DIR=$LAB" \
        "INCUS_LAB_PRIMARY_PORT=$PRIMARY_PORT" "INCUS_LAB_STANDBY_PORT=$STANDBY_PORT" \
        "INCUS_LAB_STANDBY_DIR=$LAB/standby" "INCUS_LAB_INCUS=$(lab_incus)" \
        "INCUS_LAB_ROOTS=$ROOTS"; do
        printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
    if with_cluster; then
        printf 'export %s=%q\n' INCUS_LAB_CLUSTER_PORT "$CLUSTER_PORT" \
            INCUS_LAB_CLUSTER_IP_BASE "$CLUSTER_IP_BASE"
    fi
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) shift; cmd_down "$@" ;;
    status) shift; cmd_status "$@" ;;
    in-root) shift; cmd_in_root "$@" ;;
    env) shift; cmd_env "$@" ;;
    # The Incus version `up` runs (INCUS_LAB_INCUS, else the lab's own), running or not.
    version) echo "${INCUS_LAB_INCUS:-$(lab_incus)}" ;;
    *) echo "usage: $0 up [--cluster] [--incus 6.0|7.0|mixed] | down [--purge] | status | env | version" >&2; exit 2 ;;
esac
