#!/usr/bin/env bash
# Prints the path of a Debian bookworm root filesystem tarball for the system tests, building it with
# debootstrap on first use. Cached outside the repository, keyed on the package list below: a changed list
# builds a new one. The mirror is the one apt on this machine already uses.
set -euo pipefail

PACKAGES="systemd,systemd-sysv,dbus,git,ca-certificates,nginx-light,cron,openssl,procps,iproute2,webhook,curl"
CACHE_DIR="${DEPLOY_AGENT_SYSTEST_CACHE:-/var/cache/deploy-agent-systest}"
key=$(printf '%s\n' "bookworm" "$PACKAGES" | sha256sum | cut -c1-16)
tarball="$CACHE_DIR/bookworm-$key.tar"

if [ -s "$tarball" ]; then
  echo "$tarball"
  exit 0
fi

# Two runs on one machine may both find no tarball: the second waits for the first's build under a lock
# (10 minutes at most; a build takes about 2), then finds it. The tarball appears by rename, whole or not at all.
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/build.lock"
flock -w 600 9 || { echo "rootfs.sh: another run held $CACHE_DIR/build.lock for 10 minutes" >&2; exit 1; }
if [ -s "$tarball" ]; then
  echo "$tarball"
  exit 0
fi

mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "rootfs.sh: no Debian mirror found in /etc/apt" >&2; exit 1; }

work=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "rootfs.sh: debootstrap bookworm from $mirror (about 2 minutes, once)" >&2
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$work/root" "$mirror" >"$work/log" 2>&1 || {
  tail -n 30 "$work/log" >&2
  exit 1
}
# The image is booted many times: no first-boot questions, no machine-id clashes between boots.
rm -f "$work/root/etc/machine-id"
tar -C "$work/root" -cf "$work/root.tar" .
mv "$work/root.tar" "$tarball"
echo "$tarball"
