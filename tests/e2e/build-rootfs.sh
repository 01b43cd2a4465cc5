#!/usr/bin/env bash
# Builds the Debian 12 rootfs that the end-to-end tests boot with systemd-nspawn, and caches it as a
# tarball: minbase plus systemd (what a minimal server has), and with EXTRA packages (e.g. rpm)
# installed as a second layer. Takes 1-3 minutes; the tests then restore a copy in about a second.
# Usage: build-rootfs.sh CACHE.tar.zst [EXTRA_PACKAGE...]
set -euo pipefail
out=${1:?usage: build-rootfs.sh CACHE.tar.zst [EXTRA_PACKAGE...]}; shift
extra=("$@")

# The mirror this machine already uses (deb822 first, then the one-line format): no host name is
# written into the project.
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[[ -n $mirror ]] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
[[ -n $mirror ]] || { echo "build-rootfs: no Debian mirror in /etc/apt" >&2; exit 1; }

work=$(mktemp -d /var/tmp/jp-rootfs.XXXXXX)
cgroups=()
cleanup() {
  for d in "${cgroups[@]}"; do [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  rm -rf "$work" "/run/systemd/nspawn/propagate/jp-layer-$$"
}
trap cleanup EXIT
root=$work/root

debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log" >&2; exit 1; }
echo jp-guest >"$root/etc/hostname"
# An empty machine-id, so that each boot gets the fresh one the test writes; the D-Bus copy is a
# symlink, because systemd 252 falls back to a regular /var/lib/dbus/machine-id when
# /etc/machine-id is empty and every guest would share that one.
: >"$root/etc/machine-id"
ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"
if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
  cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/"
  rm -f "$root/etc/apt/sources.list"
fi
# Timers and gettys that only cost boot time in a test guest.
systemctl --root="$root" mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
  e2scrub_all.timer fstrim.timer e2scrub_reap.service systemd-pstore.service getty@tty1.service \
  console-getty.service >/dev/null 2>&1

if ((${#extra[@]})); then
  # nspawn without --boot shares this machine's network, so apt works inside; the flags are those a
  # host without systemd as PID 1 needs (see tests/it/nspawn.rs), in a cgroup of its own.
  for h in systemd unified; do
    [[ -d /sys/fs/cgroup/$h ]] && cgroups+=("/sys/fs/cgroup/$h/jp-layer-$$")
  done
  [[ -e /sys/fs/cgroup/cgroup.controllers ]] && cgroups=("/sys/fs/cgroup/jp-layer-$$")
  for d in "${cgroups[@]}"; do mkdir -p "$d"; done
  (
    for d in "${cgroups[@]}"; do echo "$BASHPID" >"$d/cgroup.procs"; done
    exec systemd-nspawn -q -D "$root" -M "jp-layer-$$" --register=no --keep-unit --as-pid2 \
      sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${extra[*]}"
  ) </dev/null >"$work/layer.log" 2>&1 || { tail -20 "$work/layer.log" >&2; exit 1; }
fi
apt-get -o RootDir="$root" clean 2>/dev/null || rm -f "$root"/var/cache/apt/archives/*.deb
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
mkdir -p "$root/var/lib/apt/lists/partial" "$(dirname "$out")"
tar --numeric-owner --xattrs --acls -C "$root" -I 'zstd -T0 -3' -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "build-rootfs: wrote $out ($(du -h "$out" | cut -f1))" >&2
