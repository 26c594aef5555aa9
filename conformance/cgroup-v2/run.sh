#!/usr/bin/env bash
# tinyrt on cgroup v2 (unified): boot a stock Debian kernel in qemu with only cgroup2 mounted
# (cgroup_no_v1=all), share the project directory into it over 9p, and run guest-test.sh
# there against target/x86_64-unknown-linux-gnu/release/tinyrt (see .cargo/config.toml). The host's own cgroups can stay v1/hybrid.
#
#   sudo conformance/cgroup-v2/run.sh        (as root; exit 0 = the guest said PASS)
#
# What it does, all idempotent and non-interactive:
#   1. apt: qemu-system-x86 from bookworm-backports (added as a suite of the mirror named in
#      /etc/apt/sources.list.d/debian.sources when missing), busybox-static, cpio, jq.
#   2. cargo build --release (a static binary, see .cargo/config.toml; were it dynamic, the
#      initramfs would carry the libraries `ldd` names and the dynamic loader).
#   3. apt-get download Debian's linux-image-*-amd64 (never installed), dpkg -x it into
#      target/cgroup-v2/, take vmlinuz and the modules 9p/overlay/veth/bridge need.
#   4. an initramfs (cpio, gzip): static busybox, those libs, jq and its libs (the guest edits
#      config.json with it), the modules in dependency order, a busybox rootfs for the
#      containers (bundle-examples/mkrootfs.sh), and init (this directory), which switch_roots
#      to a tmpfs (pivot_root is refused on the initramfs), mounts cgroup2 alone, and runs
#      guest-test.sh from the 9p share.
#   5. qemu-system-x86_64 (KVM when a probe shows it can run this kernel, else TCG), serial
#      console to a log (and to stdout), timeout;
#      the exit code comes from the guest's "CGROUP-V2: PASS|FAIL" line.
#
# Environment: CGV2_TIMEOUT (seconds, default 300) kills a guest that hangs;
#   CGV2_ACCEL=kvm|tcg forces the accelerator; CGV2_SKIP_BUILD=1 skips cargo build;
#   CGV2_VERBOSE=1 boots without "quiet"; CGV2_TEST=PATH (relative to the project) runs that
#   guest script instead of guest-test.sh (it must write "N passed, N failed" to /tmp/cgv2-result);
#   CGV2_TINYRT=PATH (inside the project) tests that binary instead of target/x86_64-unknown-linux-gnu/release/tinyrt.
# Everything it writes is under target/cgroup-v2/ (cached: the kernel .deb, and vmlinuz plus
# the needed modules in kernel-VERSION/; the per-run work dir run.* is removed on exit), except
# /etc/apt/sources.list.d/bookworm-backports.sources when it has to add that suite.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache="$repo/target/cgroup-v2"
timeout_s=${CGV2_TIMEOUT:-300}
t0=$(date +%s)

say() { printf '[cgroup-v2 %3ds] %s\n' "$(($(date +%s) - t0))" "$*"; }
die() {
    echo "cgroup-v2/run.sh: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run me as root (it installs packages)"
mkdir -p "$cache"

# --- 1. packages --------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
apt_q() { apt-get -q -o DPkg::Lock::Timeout=300 "$@" </dev/null; }
installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

# The mirror of the "bookworm" suite in debian.sources (deb822), with its Signed-By.
add_backports() {
    local src=/etc/apt/sources.list.d/debian.sources out=/etc/apt/sources.list.d/bookworm-backports.sources
    if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    [[ -r $src ]] || die "$src not found: cannot tell which mirror to add bookworm-backports from"
    local stanza uri keyring
    stanza=$(awk 'BEGIN{RS=""} /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t]|\n|$)/ {print; exit}' "$src")
    uri=$(printf '%s\n' "$stanza" | awk '/^URIs:/ {print $2; exit}')
    keyring=$(printf '%s\n' "$stanza" | awk '/^Signed-By:/ {print $2; exit}')
    [[ -n $uri ]] || die "no URIs: for suite bookworm in $src"
    say "adding bookworm-backports from $uri to $out"
    {
        echo "Types: deb"
        echo "URIs: $uri"
        echo "Suites: bookworm-backports"
        echo "Components: main"
        [[ -z $keyring ]] || echo "Signed-By: $keyring"
    } >"$out"
}

apt_install() { apt_q -y -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef install --no-install-recommends "$@"; }
need=()
for p in busybox-static cpio jq; do installed "$p" || need+=("$p"); done
if ! installed qemu-system-x86 || ((${#need[@]})); then
    installed qemu-system-x86 || add_backports
    say "installing ${need[*]} $(installed qemu-system-x86 || echo 'qemu-system-x86 (bookworm-backports)')"
    apt_q update
    ((${#need[@]} == 0)) || apt_install "${need[@]}"
    # -t: qemu-system-x86's own dependencies (qemu-system-common/-data, seabios...) must come
    # from backports too, to match the installed qemu-utils 10.x.
    installed qemu-system-x86 || apt_install -t bookworm-backports qemu-system-x86
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing after install"

# --- 2. tinyrt ----------------------------------------------------------------------------
if [[ -z ${CGV2_SKIP_BUILD:-} ]]; then
    if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
        PATH="${HOME:-/root}/.cargo/bin:$PATH"
    fi
    say "cargo build --release"
    (cd "$repo" && cargo build --release -q)
fi
rt="$repo/target/x86_64-unknown-linux-gnu/release/tinyrt"
rt_arg=
if [[ -n ${CGV2_TINYRT:-} ]]; then
    rt=$(realpath "$CGV2_TINYRT")
    [[ $rt == "$repo"/* ]] || die "CGV2_TINYRT=$CGV2_TINYRT is not inside $repo (the guest sees only that)"
    rt_arg=" cgv2_rt=${rt#"$repo"/}"
fi
[[ -x $rt ]] || die "$rt not built"

# --- 3. the kernel ------------------------------------------------------------------------
# linux-image-amd64 is a metapackage: its Depends names the real package.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [[ -z $kpkg ]]; then
    apt_q update
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[[ -n $kpkg ]] || die "cannot tell which linux-image-*-amd64 package linux-image-amd64 depends on"
kver=${kpkg#linux-image-}
kdir="$cache/kernel-$kver"
# Wanted modules (by module name); built-in ones and dependencies are resolved below.
want_modules=(virtio_pci 9pnet_virtio 9p overlay veth bridge)
if [[ ! -s $kdir/vmlinuz || ! -s $kdir/modules.load ]]; then
    mkdir -p "$cache/deb"
    deb=$(ls "$cache/deb/${kpkg}_"*.deb 2>/dev/null | tail -n1 || true)
    if [[ -z $deb ]]; then
        say "apt-get download $kpkg"
        # As root: the _apt sandbox user may not reach target/ (apt would warn, then do so).
        (cd "$cache/deb" && apt-get -q -o APT::Sandbox::User=root download "$kpkg" </dev/null)
        deb=$(ls "$cache/deb/${kpkg}_"*.deb | tail -n1)
    fi
    say "unpacking $(basename "$deb")"
    tree="$cache/unpack"
    rm -rf "$tree" "$kdir"
    dpkg -x "$deb" "$tree"
    mdir="$tree/lib/modules/$kver"
    mkdir -p "$kdir/modules"
    cp "$tree/boot/vmlinuz-$kver" "$kdir/vmlinuz"
    cp "$tree/boot/config-$kver" "$kdir/config"
    # name -> path of every module in the package (file names use - or _ freely).
    declare -A modpath=()
    while IFS= read -r f; do
        n=$(basename "$f" .ko)
        modpath[${n//-/_}]=$f
    done < <(cd "$mdir" && find kernel -name '*.ko')
    declare -A seen=()
    order=()
    # Depth-first: a module's dependencies (its .modinfo "depends=") before it.
    add_mod() {
        local n=${1//-/_} d deps
        [[ -z ${seen[$n]:-} ]] || return 0
        seen[$n]=1
        if [[ -z ${modpath[$n]:-} ]]; then
            sed 's/-/_/g' "$mdir/modules.builtin" | grep -q "/$n\.ko\$" ||
                die "module $n: neither built in nor a module in $kpkg"
            echo "  $n: built in"
            return 0
        fi
        deps=$(tr '\0' '\n' <"$mdir/${modpath[$n]}" | sed -n 's/^depends=//p')
        for d in ${deps//,/ }; do add_mod "$d"; done
        order+=("$n")
    }
    for m in "${want_modules[@]}"; do add_mod "$m"; done
    for n in "${order[@]}"; do
        cp "$mdir/${modpath[$n]}" "$kdir/modules/$n.ko"
    done
    printf '%s\n' "${order[@]}" >"$kdir/modules.load"
    echo "  modules to insmod, in order: ${order[*]}"
    rm -rf "$tree"
fi

# --- 4. the initramfs ---------------------------------------------------------------------
work=$(mktemp -d "$cache/run.XXXXXX")
qpid=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $qpid ]] && kill -0 "$qpid" 2>/dev/null; then
        kill -KILL "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "building the initramfs"
ird="$work/initramfs"
mkdir -p "$ird"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,tmp,run,mnt/src,modules}
bb=$(command -v busybox)
cp "$bb" "$ird/bin/busybox"
for a in $("$bb" --list); do
    [[ $a == busybox ]] || ln -sf busybox "$ird/bin/$a"
done
# A binary and the libraries ldd names for it (and the dynamic loader), at the same paths.
add_elf() {
    local f=$1 dest=$2 lib
    install -D -m 0755 "$f" "$ird$dest"
    for lib in $({ ldd "$f" 2>/dev/null || true; } | awk '/=> \// {print $3} /^[ \t]*\/[^ ]+ \(/ {print $1}'); do
        [[ -e $ird$lib ]] || install -D -m 0755 "$(readlink -f "$lib")" "$ird$lib"
    done
}
add_elf "$rt" /usr/lib/tinyrt-libs-probe # only its libraries matter (none when static): the guest runs the shared binary
rm -f "$ird/usr/lib/tinyrt-libs-probe"
add_elf "$(command -v jq)" /usr/bin/jq
# The containers' rootfs, made here: in the guest, busybox sh's `command -v busybox` names the
# applet, not a file, and mkrootfs.sh cannot copy it.
mkdir -p "$ird/opt"
sh "$repo/bundle-examples/mkrootfs.sh" "$ird/opt/rootfs" >/dev/null
cp "$kdir"/modules/*.ko "$ird/modules/"
cp "$kdir/modules.load" "$ird/modules/load"
install -m 0755 "$here/init" "$ird/init"
echo "root:x:0:0:root:/root:/bin/sh" >"$ird/etc/passwd"
echo "root:x:0:" >"$ird/etc/group"
(cd "$ird" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$work/initramfs.cpio.gz"

# --- 5. boot ------------------------------------------------------------------------------
# KVM where it can run this kernel, else TCG. A quick probe (the same kernel, no initramfs:
# it panics at once for want of a root) tells whether KVM gets as far as a kernel message.
accel=${CGV2_ACCEL:-}
if [[ -z $accel ]]; then
    accel=tcg
    if [[ -c /dev/kvm ]] && timeout -k 2 10 qemu-system-x86_64 -accel kvm -cpu host -m 256 -nographic \
        -no-reboot -nic none -kernel "$kdir/vmlinuz" -append "console=ttyS0 panic=-1 loglevel=4" \
        </dev/null 2>&1 | grep -q 'Kernel panic\|VFS:'; then
        accel=kvm
    fi
fi
cpu=max
[[ $accel == kvm ]] && cpu=host
quiet=quiet
[[ -n ${CGV2_VERBOSE:-} ]] && quiet=
log="$work/serial.log"
: >"$log" # before tail -f looks for it
say "booting $kver under qemu ($accel), timeout ${timeout_s}s"
qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -m 1024 -smp 2 -nographic -no-reboot -nic none \
    -kernel "$kdir/vmlinuz" -initrd "$work/initramfs.cpio.gz" \
    -append "console=ttyS0 cgroup_no_v1=all panic=-1 $quiet${CGV2_TEST:+ cgv2_test=$CGV2_TEST}$rt_arg" \
    -virtfs "local,path=$repo,mount_tag=src,security_model=none,readonly=on,multidevs=remap,id=src" \
    </dev/null >"$log" 2>&1 &
qpid=$!
# Live, without the firmware's terminal escapes.
tail -n +1 -f --pid="$qpid" "$log" | sed -u 's/\x1b[[0-9;?]*[a-zA-Z]//g; s/\r//g' &
deadline=$(($(date +%s) + timeout_s))
while kill -0 "$qpid" 2>/dev/null; do
    if (($(date +%s) >= deadline)); then
        echo "cgroup-v2/run.sh: the guest did not power off within ${timeout_s}s: killing qemu" >&2
        kill -KILL "$qpid" 2>/dev/null || true
        break
    fi
    sleep 1
done
wait "$qpid" 2>/dev/null && qrc=0 || qrc=$?
qpid=
wait # the tail
line=$(tr -d '\r' <"$log" | grep -a '^CGROUP-V2: ' | tail -n1 || true)
say "qemu exited $qrc; ${line:-no CGROUP-V2 line in the serial output}"
# The closing line: "cgroup-v2: N passed, N failed" from the guest's count.
counts=$(printf '%s\n' "$line" | grep -o '[0-9]* passed, [0-9]* failed' || true)
case $line in
"CGROUP-V2: PASS"*)
    echo "cgroup-v2: ${counts:-0 passed, 0 failed}"
    exit 0
    ;;
*)
    echo "cgroup-v2: ${counts:-0 passed, 1 failed}"
    exit 1
    ;;
esac
