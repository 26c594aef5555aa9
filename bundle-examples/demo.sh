#!/usr/bin/env bash
# The tinyrt demo: build tinyrt (release) if needed, make a busybox bundle with `tinyrt spec`,
# run a small script in it with `tinyrt run`, and show what the container sees: its hostname,
# user, processes, namespaces, mounts and network interfaces. Everything it makes (bundle,
# state root, container) lives in one temp dir that is removed on exit, failure included.
#
#   sudo bundle-examples/demo.sh
#
# Environment: TINYRT=/path/to/tinyrt to use that binary instead of building one;
# TMPDIR for where the temp dir goes (it must allow exec: the rootfs lives there).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

say() { printf '\n==> %s\n' "$*"; }
die() {
    echo "demo.sh: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run me as root: sudo $0"

# --- tinyrt -------------------------------------------------------------------------------
find_cargo() {
    local user_home
    command -v cargo >/dev/null 2>&1 && return 0
    if [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
        PATH="${HOME:-/root}/.cargo/bin:$PATH"
    elif [[ -n "${SUDO_USER:-}" ]]; then
        user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        [[ -n "$user_home" && -x "$user_home/.cargo/bin/cargo" ]] || return 1
        PATH="$user_home/.cargo/bin:$PATH"
        export CARGO_HOME="${CARGO_HOME:-$user_home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
    else
        return 1
    fi
    export PATH
}

rt=${TINYRT:-}
if [[ -z "$rt" ]]; then
    rt="$repo/target/x86_64-unknown-linux-gnu/release/tinyrt"
    if find_cargo; then
        say "building tinyrt: cargo build --release"
        (cd "$repo" && cargo build --release)
    elif [[ -x "$rt" ]]; then
        echo "demo.sh: cargo not found; using the existing $rt" >&2
    else
        die "cargo not found and $rt not built (install Rust, or set TINYRT=/path/to/tinyrt)"
    fi
fi
[[ -x "$rt" ]] || die "$rt is not an executable"
"$rt" --version

# --- busybox ------------------------------------------------------------------------------
# mkrootfs.sh needs a static busybox (same test as there: `file`, else ldd refusing it).
static_busybox() {
    local bb
    bb=$(command -v busybox) || return 1
    file -L "$bb" 2>/dev/null | grep -q 'statically linked' || ! ldd "$bb" >/dev/null 2>&1
}
if ! static_busybox; then
    say "installing busybox-static"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static </dev/null ||
        { apt-get update -q </dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static </dev/null; }
fi

# --- a temp dir for everything, removed whatever happens ------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/tinyrt-demo.XXXXXX")
bundle="$work/bundle"
state="$work/state" # tinyrt --root: the state of this demo's container, nowhere else
id="tinyrt-demo-$$"

# Mount points at or below $work, deepest first (mountinfo field 5; spaces are \040 there).
mounts_under_work() {
    awk -v w="$work" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

cleanup() {
    local rc=$? m
    trap - EXIT INT TERM
    if [[ -d "$state" ]]; then
        "$rt" --root "$state" delete --force "$id" >/dev/null 2>&1 || true
    fi
    # A runtime bug could leave a mount on the host: never rm -rf through one.
    for m in $(mounts_under_work); do
        echo "demo.sh: unmounting $m, left on the host" >&2
        umount -l "$m" || true
    done
    if [[ -n "$(mounts_under_work)" ]]; then
        echo "demo.sh: mounts remain under $work; not removing it" >&2
    else
        rm -rf --one-file-system "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the bundle ---------------------------------------------------------------------------
say "building a busybox rootfs: bundle-examples/mkrootfs.sh $bundle/rootfs"
sh "$here/mkrootfs.sh" "$bundle/rootfs"
"$bundle/rootfs/bin/busybox" true 2>/dev/null ||
    die "cannot execute files under $work (noexec?): set TMPDIR to another directory"

# What the container runs. /bin/sh is busybox, and so is every command here.
cat >"$bundle/rootfs/demo.sh" <<'SCRIPT'
echo "hostname:  $(hostname)"
echo "id:        $(id)"
echo
echo "--- processes (ps): this script is PID 1 of its own pid namespace"
ps
echo
echo "--- namespaces (/proc/self/ns)"
for ns in /proc/self/ns/*; do printf '  %-18s %s\n' "${ns##*/}" "$(readlink "$ns")"; done
echo
echo "--- mounts (/proc/self/mounts)"
cat /proc/self/mounts
echo
echo "--- network (tinyrt's built-in hook: a veth on the tinyrt0 bridge, NAT to the outside)"
ip addr
ip route
echo "--- /etc/hosts"
cat /etc/hosts
echo "--- /etc/resolv.conf"
cat /etc/resolv.conf
gw=$(ip route | awk '/^default/ { print $3 }')
echo "--- the host at $gw over the veth: a TCP connect to its closed port 9 is refused, so the host answered"
nc -w 2 "$gw" 9 </dev/null 2>&1 && echo "connected" || echo "(answered: the host is reachable)"
SCRIPT

say "writing config.json: tinyrt spec --network (network hooks + resolv.conf/hosts/hostname mounts), then terminal false, hostname tinyrt-demo, args [\"sh\", \"/demo.sh\"]"
"$rt" spec --network --bundle "$bundle"
# `tinyrt spec` pretty-prints one key per line, so the edits are line edits.
awk '
    /^ *"terminal": true,?$/ { sub(/true/, "false") }
    /^ *"hostname": "[^"]*",?$/ { sub(/: "[^"]*"/, ": \"tinyrt-demo\"") }
    skip && /^ *\],?$/ { skip = 0 }
    skip { next }
    /^  "process": \{$/ { inproc = 1 }
    inproc && !done && /^ *"args": \[$/ { print; print "      \"sh\","; print "      \"/demo.sh\""; skip = 1; done = 1; next }
    { print }
' "$bundle/config.json" >"$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"
for want in '"terminal": false' '"/demo.sh"' '"hostname": "tinyrt-demo"'; do
    grep -qF "$want" "$bundle/config.json" || die "editing config.json failed: no $want (did tinyrt spec change?)"
done

# --- run it -------------------------------------------------------------------------------
echo
echo "the host, for comparison:"
for ns in /proc/self/ns/*; do printf '  %-18s %s\n' "${ns##*/}" "$(readlink "$ns")"; done
say "tinyrt --root $state run --bundle $bundle $id"
echo "(networking: the createRuntime hook 'tinyrt hook network up' gives the container eth0 on"
echo " the tinyrt0 bridge; its poststop hook removes the veth, lease and rules at delete)"
echo "------------------------------------------------------------------------ container"
set +e
"$rt" --root "$state" run --bundle "$bundle" "$id" </dev/null
rc=$?
set -e
echo "------------------------------------------------------------------------ end"
[[ $rc -eq 0 ]] || die "tinyrt run exited with $rc"

left=$("$rt" --root "$state" list --quiet)
[[ -z "$left" ]] || die "containers left after run: $left"
say "done: the container exited 0 and tinyrt run deleted it; removing $work"
