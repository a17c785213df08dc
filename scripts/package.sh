#!/usr/bin/env bash
# Builds the incus-standby packages into target/packages: a .deb (cargo-deb) for Debian and
# Ubuntu, an .rpm (cargo-generate-rpm) for Rocky Linux / RHEL. Both hold the five tools, the
# replication job (incus-standby-job) and its systemd units, an example job.conf, the man
# pages and the bash/zsh/fish completions (generated from the tools' own --help definitions).
#
#   scripts/package.sh           build both packages (release build)
#   scripts/package.sh --check   also install the .deb here (dpkg -i, root), run the installed
#                                tools against the lab, and list the .rpm (rpm -qlp)
#
# Installs cargo-deb and cargo-generate-rpm (cargo install --locked) and, for --check, the
# rpm package, when they are missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec </dev/null
CHECK=false
for a in "$@"; do
    case "$a" in
        --check) CHECK=true ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "package: unknown argument: $a" >&2; exit 2 ;;
    esac
done
log() { printf 'package: %s\n' "$*" >&2; }
TOOLS=(incus-snap incus-push incus-prune incus-trust incus-failover)

for tool in cargo-deb cargo-generate-rpm; do
    if ! cargo "${tool#cargo-}" --version >/dev/null 2>&1; then
        log "installing $tool (cargo install --locked $tool)"
        cargo install --locked --quiet "$tool"
    fi
done

log "building the tools (release)"
cargo build --release --workspace --bins --quiet
rm -rf target/dist
for tool in "${TOOLS[@]}"; do
    "target/release/$tool" --generate-docs target/dist
done
gzip -9nf target/dist/man1/*.1
mkdir -p target/packages
rm -f target/packages/*.deb target/packages/*.rpm
cargo deb -p incus-push --no-build --quiet --output target/packages/ >&2
cargo generate-rpm -p incus-push --output target/packages/ >&2
DEB=$(ls target/packages/*.deb)
RPM=$(ls target/packages/*.rpm)
log "built $DEB and $RPM"

[ "$CHECK" = true ] || exit 0

# --- the installed package, checked as a user would -------------------------------------
[ "$(id -u)" -eq 0 ] || { log "--check installs the .deb: run it as root"; exit 2; }
if ! command -v rpm >/dev/null 2>&1; then
    log "installing rpm (to list the .rpm)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q rpm >&2
fi
fail() { log "CHECK FAILED: $*"; exit 1; }
dpkg -i "$DEB" >&2 || fail "dpkg -i $DEB"
for tool in "${TOOLS[@]}" incus-standby-job; do
    [ "$(command -v "$tool")" = "/usr/bin/$tool" ] || fail "$tool is not installed in /usr/bin"
    "/usr/bin/$tool" --version >/dev/null || fail "$tool --version"
done
man -w incus-push >/dev/null || fail "man incus-push: no page"
man -w incus-failover-promote >/dev/null || fail "man incus-failover-promote: no page"
bash -c 'source /usr/share/bash-completion/completions/incus-push && complete -p incus-push' >/dev/null ||
    fail "bash completion of incus-push"
systemd-analyze verify /lib/systemd/system/incus-standby.service /lib/systemd/system/incus-standby.timer ||
    fail "systemd-analyze verify"
[ -f /etc/incus-standby/job.conf ] || fail "/etc/incus-standby/job.conf missing"
# The installed tools against the lab.
eval "$(scripts/lab.sh env)"
/usr/bin/incus-trust check standby >/dev/null || fail "the installed incus-trust check standby"
rc=0
/usr/bin/incus-failover check --standby standby --max-rpo 1d primary: >/dev/null || rc=$?
[ "$rc" -le 3 ] || fail "the installed incus-failover check (exit $rc)"
rpm -qlp "$RPM" >target/packages/rpm-contents.txt || fail "rpm -qlp $RPM"
for f in /usr/bin/incus-push /usr/bin/incus-standby-job /usr/lib/systemd/system/incus-standby.timer /etc/incus-standby/job.conf; do
    grep -qx "$f" target/packages/rpm-contents.txt || fail "$RPM lacks $f"
done
log "the .deb installs and its tools work from /usr/bin; the .rpm holds what it should"
