#!/bin/sh
# Build a busybox rootfs from Debian's busybox-static: the busybox binary, one symlink per
# applet (relative, so they work inside the container), and the few files a container expects.
# Usage: mkrootfs.sh DIR   (idempotent; DIR is created)
set -eu
dir=${1:?usage: mkrootfs.sh DIR}
bb=$(command -v busybox || true)
[ -n "$bb" ] || { echo "mkrootfs.sh: busybox not found (apt-get install busybox-static)" >&2; exit 1; }
if ! file -L "$bb" 2>/dev/null | grep -q 'statically linked' && ldd "$bb" >/dev/null 2>&1; then
  echo "mkrootfs.sh: $bb is not static (apt-get install busybox-static)" >&2; exit 1
fi
mkdir -p "$dir"
cd "$dir"
mkdir -p bin sbin usr/bin usr/sbin etc proc sys dev tmp root home var/run
chmod 1777 tmp
cp "$bb" bin/busybox
for applet in $(./bin/busybox --list-full 2>/dev/null || ./bin/busybox --list | sed 's|^|bin/|'); do
  case "$applet" in bin/busybox) continue ;; esac
  d=$(dirname "$applet")
  mkdir -p "$d"
  # relative link from $d to bin/busybox
  up=$(echo "$d" | sed 's|[^/][^/]*|..|g')
  [ -e "$applet" ] || ln -s "$up/bin/busybox" "$applet"
done
cat > etc/passwd <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > etc/group <<'G'
root:x:0:
tty:x:5:
nogroup:x:65534:
G
echo tinyrt > etc/hostname
: > etc/resolv.conf
: > etc/hosts
