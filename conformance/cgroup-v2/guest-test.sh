#!/bin/sh
# tinyrt on cgroup v2: the checks run inside the qemu guest (busybox sh, as root, cgroup2 alone
# at /sys/fs/cgroup, this process in the root cgroup). Started by the guest's /init (init in
# this directory); the project is the read-only 9p share at /mnt/src. Writes "N passed,
# N failed" to /tmp/cgv2-result and exits non-zero if anything failed.
set -u
SRC=${CGV2_SRC:-/mnt/src}
# CGV2_RT (cgv2_rt= on the kernel command line, run.sh's CGV2_TINYRT): another binary,
# relative to the project directory.
RT="$SRC/${CGV2_RT:-target/x86_64-unknown-linux-gnu/release/tinyrt}"
W=/tmp/cgv2
STATE="$W/state"
CG=/sys/fs/cgroup
pass=0
fail=0
known=0

ok() {
    pass=$((pass + 1))
    echo "ok   - $*"
}
bad() {
    fail=$((fail + 1))
    echo "FAIL - $*"
}
# A known difference from runc, reported but not counted as a failure.
known() {
    known=$((known + 1))
    echo "KNOWN - $*"
}
# check DESCRIPTION COMMAND...: ok if COMMAND succeeds.
check() {
    d=$1
    shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}
# eq DESCRIPTION WANT GOT
eq() {
    if [ "$2" = "$3" ]; then ok "$1 ($3)"; else bad "$1: want '$2', got '$3'"; fi
}
section() { echo "--- $*"; }
rt() { timeout 60 "$RT" --root "$STATE" "$@"; }
# The first line of a cgroup file, or "<missing>".
cgv() { head -n1 "$1" 2>/dev/null || echo "<missing>"; }
# A key's value in a flat-keyed file (memory.events, pids.events, cgroup.events).
key() { awk -v k="$2" '$1 == k {print $2}' "$1" 2>/dev/null; }
status() { rt state "$1" 2>/dev/null | jq -r .status 2>/dev/null; }
# wait_status ID STATUS [SECONDS]: poll `tinyrt state` until STATUS (default 10 s).
wait_status() {
    end=$(($(date +%s) + ${3:-10}))
    while [ "$(status "$1")" != "$2" ]; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.1
    done
}
# Directories under /sys/fs/cgroup (what a delete must leave as it was).
cgdirs() { find "$CG" -mindepth 1 -type d | sort; }
gone() { [ ! -e "$1" ]; }
# has TEXT LINE: TEXT has LINE as a whole line.
has() { printf '%s\n' "$1" | grep -qxF -- "$2"; }

# mkbundle NAME JQ-FILTER: a bundle whose config.json is `tinyrt spec` edited by the filter
# (after terminal false and the shared rootfs); the filter may use $cmd (CMD in env).
mkbundle() {
    b="$W/bundles/$1"
    mkdir -p "$b"
    jq --arg root "$W/rootfs" --arg cmd "${CMD:-}" \
        ".process.terminal = false | .root.path = \$root | .root.readonly = true | $2" \
        "$W/base/config.json" >"$b/config.json" || bad "jq for bundle $1"
    echo "$b"
}

section "setup"
echo "tinyrt: $("$RT" --version 2>&1 | head -n1)"
rm -rf "$W"
mkdir -p "$W/base" "$W/bundles" "$STATE"
# The busybox rootfs: run.sh made it with bundle-examples/mkrootfs.sh on the host and put it
# in the initramfs (here, busybox sh's `command -v busybox` names the applet, not a file,
# so mkrootfs.sh cannot run in the guest).
if [ -x /opt/rootfs/bin/busybox ]; then
    cp -a /opt/rootfs "$W/rootfs"
else
    bad "no busybox rootfs at /opt/rootfs (run.sh makes it)"
fi
"$RT" spec --bundle "$W/base" || bad "tinyrt spec"
eq "cgroup2 is the only cgroup filesystem" "cgroup2" "$(awk '$3 ~ /^cgroup/ {print $3}' /proc/mounts | sort -u | tr '\n' ' ' | sed 's/ $//')"
before=$(cgdirs)
echo "root subtree_control before: '$(cat $CG/cgroup.subtree_control)'"

section "features"
check "tinyrt features: linux.cgroup.v2 is true" sh -c "'$RT' features | jq -e '.linux.cgroup.v2 == true' >/dev/null"

section "a nested cgroupsPath on a fresh hierarchy (nothing enabled in any subtree_control yet)"
b=$(mkbundle nested '.process.args = ["sleep", "1000"] | .linux.cgroupsPath = "/tinyrt-test/nested"
    | .linux.resources.pids = {"limit": 9} | .linux.resources.memory = {"limit": 67108864}')
rt run -d --bundle "$b" nested </dev/null >"$W/nested.out" 2>&1
rc=$?
eq "tinyrt run -d exit code" 0 "$rc"
[ $rc -eq 0 ] || sed 's/^/  | /' "$W/nested.out"
eq "pids.max in $CG/tinyrt-test/nested" 9 "$(cgv "$CG/tinyrt-test/nested/pids.max")"
eq "memory.max in $CG/tinyrt-test/nested" 67108864 "$(cgv "$CG/tinyrt-test/nested/memory.max")"
check "pids is enabled in the parent's subtree_control" grep -qw pids "$CG/tinyrt-test/cgroup.subtree_control"
rt delete --force nested >"$W/nested-del.out" 2>&1
eq "tinyrt delete --force exit code" 0 "$?"
check "delete removed $CG/tinyrt-test/nested and the parent it made" gone "$CG/tinyrt-test"

section "run: a container runs; its cgroup is made and removed"
b=$(CMD='echo hello-from-container; cat /proc/self/cgroup; echo x >/dev/null && head -c 4 /dev/urandom | wc -c' \
    mkbundle hello '.process.args = ["sh", "-c", $cmd]')
out=$(rt run --bundle "$b" hello </dev/null 2>&1)
rc=$?
echo "$out" | sed 's/^/  | /'
eq "tinyrt run exit code" 0 "$rc"
check "the container printed its line" has "$out" hello-from-container
check "inside, /proc/self/cgroup is 0::/ (cgroup namespace rooted at its cgroup)" has "$out" '0::/'
check "the default devices (/dev/null, /dev/urandom) pass the cgroup2 device filter (BPF)" has "$out" 4
check "run removed the cgroup $CG/hello" gone "$CG/hello"
eq "no container left in tinyrt list" "" "$(rt list -q 2>&1)"

section "a container with no linux.resources limits: its cgroup, update"
# In a parent tinyrt makes (/tinyrt-plain), so what was enabled for earlier containers at the
# root does not matter.
PL="$CG/tinyrt-plain/c"
b=$(mkbundle plain '.process.args = ["sleep", "1000"] | .linux.cgroupsPath = "/tinyrt-plain/c"')
rt run -d --bundle "$b" plain </dev/null >"$W/plain.out" 2>&1
eq "tinyrt run -d exit code" 0 "$?"
check "the cgroup $PL exists" test -d "$PL"
# runc enables every controller of cgroup.controllers in each parent's subtree_control when it
# makes the cgroup, so memory.*, pids.*, cpu.* exist even with no limits (stats, OOM events).
if [ -e "$PL/memory.events" ] && [ -e "$PL/pids.current" ]; then
    ok "memory.events and pids.current exist without limits (as with runc)"
else
    known "no limits in config.json: tinyrt enabled no controller, so $PL has no memory.*/pids.* files (runc enables all of cgroup.controllers in the parents' subtree_control); subtree_control of $CG/tinyrt-plain: '$(cat $CG/tinyrt-plain/cgroup.subtree_control)'"
fi
rt update --memory 32m --pids-limit 7 plain >"$W/plain-update.out" 2>&1
rc=$?
eq "tinyrt update --memory 32m --pids-limit 7 exit code" 0 "$rc"
[ $rc -eq 0 ] || sed 's/^/  | /' "$W/plain-update.out"
eq "memory.max after update" 33554432 "$(cgv "$PL/memory.max")"
eq "pids.max after update" 7 "$(cgv "$PL/pids.max")"
rt delete --force plain >/dev/null 2>&1
eq "tinyrt delete --force exit code" 0 "$?"
check "delete removed $PL and the parent it made" gone "$CG/tinyrt-plain"

section "create: limits from config.json in the cgroup files"
b=$(mkbundle limits '.process.args = ["sleep", "1000"]
    | .linux.resources.memory = {"limit": 67108864}
    | .linux.resources.cpu = {"shares": 1024, "quota": 50000, "period": 100000}
    | .linux.resources.pids = {"limit": 32}')
rt create --bundle "$b" limits </dev/null >"$W/limits.out" 2>&1
rc=$?
eq "tinyrt create exit code" 0 "$rc"
[ $rc -eq 0 ] || sed 's/^/  | /' "$W/limits.out"
L="$CG/limits"
check "the cgroup $L exists" test -d "$L"
eq "state after create" created "$(status limits)"
pid=$(rt state limits | jq -r .pid)
check "the init ($pid) is in $L/cgroup.procs" grep -qx "$pid" "$L/cgroup.procs"
eq "memory.max" 67108864 "$(cgv "$L/memory.max")"
eq "cpu.max (quota period)" "50000 100000" "$(cgv "$L/cpu.max")"
eq "cpu.weight (from shares 1024)" 39 "$(cgv "$L/cpu.weight")"
eq "pids.max" 32 "$(cgv "$L/pids.max")"
rt start limits >>"$W/limits.out" 2>&1
eq "tinyrt start exit code" 0 "$?"
check "state after start is running" wait_status limits running 10
check "the cgroup still exists while it runs" test -d "$L"

section "exec lands in the container's cgroup"
eq "exec: /proc/self/cgroup inside" "0::/" "$(rt exec limits cat /proc/self/cgroup 2>&1)"
rt exec -d --pid-file "$W/exec.pid" limits sleep 300 </dev/null >"$W/exec.out" 2>&1
eq "tinyrt exec -d exit code" 0 "$?"
epid=$(cat "$W/exec.pid" 2>/dev/null)
check "the exec'd process ($epid) is in $L/cgroup.procs" grep -qx "${epid:-none}" "$L/cgroup.procs"
eq "the exec'd process's cgroup, seen from the host" "0::/limits" "$(cat /proc/${epid:-none}/cgroup 2>&1)"
check "tinyrt ps lists both processes" sh -c "'$RT' --root '$STATE' ps -f json limits | jq -e 'length >= 2' >/dev/null"

section "update"
rt update --memory 32m --pids-limit 7 limits >"$W/update.out" 2>&1
rc=$?
eq "tinyrt update --memory 32m --pids-limit 7 exit code" 0 "$rc"
[ $rc -eq 0 ] || sed 's/^/  | /' "$W/update.out"
eq "memory.max after update" 33554432 "$(cgv "$L/memory.max")"
eq "pids.max after update" 7 "$(cgv "$L/pids.max")"
eq "cpu.max untouched by update" "50000 100000" "$(cgv "$L/cpu.max")"
rt update --cpu-share 2048 --cpu-quota 20000 limits >"$W/update2.out" 2>&1
eq "tinyrt update --cpu-share 2048 --cpu-quota 20000 exit code" 0 "$?"
eq "cpu.weight after update (shares 2048)" 79 "$(cgv "$L/cpu.weight")"
eq "cpu.max after update" "20000 100000" "$(cgv "$L/cpu.max")"

section "events --stats"
st=$(rt events --stats limits 2>"$W/events.err")
rc=$?
eq "tinyrt events --stats exit code" 0 "$rc"
[ $rc -eq 0 ] || sed 's/^/  | /' "$W/events.err"
eq "events --stats: data.memory.usage.limit" 33554432 "$(echo "$st" | jq -r .data.memory.usage.limit 2>&1)"
eq "events --stats: data.pids.limit" 7 "$(echo "$st" | jq -r .data.pids.limit 2>&1)"
eq "events --stats: data.pids.current" 2 "$(echo "$st" | jq -r .data.pids.current 2>&1)"
check "events --stats: data.cpu.usage.total > 0" sh -c "echo '$st' | jq -e '.data.cpu.usage.total > 0' >/dev/null"

section "pause / resume (cgroup.freeze)"
rt pause limits >"$W/pause.out" 2>&1
eq "tinyrt pause exit code" 0 "$?"
eq "cgroup.freeze after pause" 1 "$(cgv "$L/cgroup.freeze")"
eq "cgroup.events frozen after pause" 1 "$(key "$L/cgroup.events" frozen)"
eq "state after pause" paused "$(status limits)"
rt resume limits >"$W/resume.out" 2>&1
eq "tinyrt resume exit code" 0 "$?"
eq "cgroup.freeze after resume" 0 "$(cgv "$L/cgroup.freeze")"
eq "cgroup.events frozen after resume" 0 "$(key "$L/cgroup.events" frozen)"
eq "state after resume" running "$(status limits)"

section "kill --all, delete"
rt kill --all limits KILL >"$W/kill.out" 2>&1
eq "tinyrt kill --all limits KILL exit code" 0 "$?"
check "state after kill --all is stopped" wait_status limits stopped 10
n=0
while [ -s "$L/cgroup.procs" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
eq "processes left in the cgroup" "" "$(cat "$L/cgroup.procs" 2>&1)"
check "the exec'd process is gone too" sh -c "! kill -0 ${epid:-99999} 2>/dev/null"
rt delete limits >"$W/delete.out" 2>&1
eq "tinyrt delete exit code" 0 "$?"
check "delete removed the cgroup $L" gone "$L"

section "pids limit enforced (pids.max = 5)"
b=$(CMD='i=0; while [ $i -lt 10 ]; do sleep 60 & echo spawned $i; i=$((i+1)); done; echo spawned-all; sleep 1' \
    mkbundle pids '.process.args = ["sh", "-c", $cmd] | .linux.resources.pids = {"limit": 5}')
P="$CG/pids"
rt create --bundle "$b" pids </dev/null >"$W/pids.out" 2>&1 && rt start pids >>"$W/pids.out" 2>&1
eq "tinyrt create+start exit code" 0 "$?"
eq "pids.max" 5 "$(cgv "$P/pids.max")"
check "the container's shell ends (state stopped)" wait_status pids stopped 20
sed 's/^/  | /' "$W/pids.out"
spawned=$(grep -c '^spawned [0-9]' "$W/pids.out")
check "fewer than 10 sleeps could start (got $spawned; init + 4 fit)" test "$spawned" -lt 10
check "the shell reported a failed fork" grep -qi "fork\|resource temporarily unavailable" "$W/pids.out"
m=$(key "$P/pids.events" max)
check "pids.events max >= 1 (got ${m:-none})" test "${m:-0}" -ge 1
rt delete pids >/dev/null 2>&1
eq "tinyrt delete exit code" 0 "$?"
check "delete removed the cgroup $P" gone "$P"

section "OOM kill (memory.max = 16M, the init reads /dev/zero into memory)"
b=$(mkbundle oom '.process.args = ["tail", "/dev/zero"] | .linux.resources.memory = {"limit": 16777216}')
O="$CG/oom"
rt create --bundle "$b" oom </dev/null >"$W/oom.out" 2>&1 && rt start oom >>"$W/oom.out" 2>&1
eq "tinyrt create+start exit code" 0 "$?"
eq "memory.max" 16777216 "$(cgv "$O/memory.max")"
check "the container is killed (state stopped)" wait_status oom stopped 30
sed 's/^/  | /' "$W/oom.out"
k=$(key "$O/memory.events" oom_kill)
check "memory.events oom_kill >= 1 (got ${k:-none})" test "${k:-0}" -ge 1
rt delete oom >/dev/null 2>&1
eq "tinyrt delete exit code" 0 "$?"
check "delete removed the cgroup $O" gone "$O"
rt run --bundle "$b" oom2 </dev/null >"$W/oom2.out" 2>&1
rc=$?
eq "tinyrt run of the same bundle exits 137 (SIGKILL)" 137 "$rc"
[ $rc -eq 137 ] || sed 's/^/  | /' "$W/oom2.out"
check "run removed the cgroup $CG/oom2" gone "$CG/oom2"

section "cpuset enabled at the root (as systemd does), a cgroup made right under it"
echo +cpuset >"$CG/cgroup.subtree_control" || bad "enabling cpuset at the root"
b=$(mkbundle cpuset '.process.args = ["sleep", "1000"] | .linux.cgroupsPath = "/tinyrt-cpuset"')
rt run -d --bundle "$b" cpuset </dev/null >"$W/cpuset.out" 2>&1
rc=$?
eq "tinyrt run -d exit code" 0 "$rc"
[ $rc -eq 0 ] || sed 's/^/  | /' "$W/cpuset.out"
eq "cpuset.cpus.effective of $CG/tinyrt-cpuset (inherited)" "$(cgv "$CG/cpuset.cpus.effective")" "$(cgv "$CG/tinyrt-cpuset/cpuset.cpus.effective")"
rt delete --force cpuset >/dev/null 2>&1
eq "tinyrt delete --force exit code" 0 "$?"
check "delete removed the cgroup $CG/tinyrt-cpuset" gone "$CG/tinyrt-cpuset"
b=$(mkbundle cpuset2 '.process.args = ["sleep", "1000"] | .linux.resources.cpu = {"cpus": "0", "mems": "0"}')
rt run -d --bundle "$b" cpuset2 </dev/null >"$W/cpuset2.out" 2>&1
rc=$?
eq "linux.resources.cpu.cpus 0: tinyrt run -d exit code" 0 "$rc"
[ $rc -eq 0 ] || sed 's/^/  | /' "$W/cpuset2.out"
eq "cpuset.cpus" 0 "$(cgv "$CG/cpuset2/cpuset.cpus")"
rt update --cpuset-cpus 1 cpuset2 >"$W/cpuset2-up.out" 2>&1
eq "tinyrt update --cpuset-cpus 1 exit code" 0 "$?"
eq "cpuset.cpus after update" 1 "$(cgv "$CG/cpuset2/cpuset.cpus")"
rt delete --force cpuset2 >/dev/null 2>&1
check "delete removed the cgroup $CG/cpuset2" gone "$CG/cpuset2"
echo -cpuset >"$CG/cgroup.subtree_control" 2>/dev/null

section "events: an OOM kill that ends the container is reported"
b=$(mkbundle oomev '.process.args = ["sh", "-c", "sleep 1; exec tail /dev/zero"] | .linux.resources.memory = {"limit": 16777216}')
rt create --bundle "$b" oomev </dev/null >"$W/oomev.out" 2>&1 && rt start oomev >>"$W/oomev.out" 2>&1
eq "tinyrt create+start exit code" 0 "$?"
timeout 30 "$RT" --root "$STATE" events --interval 10s oomev >"$W/events.out" 2>&1
eq "tinyrt events exit code (it ends when the container stops)" 0 "$?"
sed 's/^/  | /' "$W/events.out" | cut -c1-150
eq "memory.events oom_kill" 1 "$(key "$CG/oomev/memory.events" oom_kill)"
check "events printed {\"type\":\"oom\"}" grep -q '"type":"oom"' "$W/events.out"
rt delete oomev >/dev/null 2>&1
check "delete removed the cgroup $CG/oomev" gone "$CG/oomev"

section "nothing left"
eq "no container left in tinyrt list" "" "$(rt list -q 2>&1)"
after=$(cgdirs)
eq "cgroup directories under $CG as before the tests" "$before" "$after"

[ "$known" -eq 0 ] || echo "($known known differences from runc, marked KNOWN above: not failures)"
echo "$pass passed, $fail failed" | tee /tmp/cgv2-result
[ "$fail" -eq 0 ]
