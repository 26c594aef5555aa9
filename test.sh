#!/usr/bin/env bash
# tinyrt's test command: formatting, lints, then every test target (the unit tests in src/
# and the `conformance` suite in conformance/, which runs the real binary against busybox
# bundles and therefore needs root, busybox-static and iproute2: see .ci/run, which installs
# them and then calls this script).
#
#   ./test.sh            as root, with cargo on PATH
#
# Environment: TINYRT_TEST_TIMEOUT (default 40m) caps `cargo test` as a whole.
#
# PID 1 on the CI machines does not reap orphans. When tini is installed this script re-runs
# itself under `tini -s` (a child subreaper), so anything the tests orphan is reaped, and on
# exit it kills whatever the run left behind under that subreaper.
set -euo pipefail

if [[ -z "${TINYRT_TEST_REAPER:-}" ]] && command -v tini >/dev/null 2>&1; then
    export TINYRT_TEST_REAPER=$$ # tini keeps this pid through exec
    exec tini -s -- "$0" "$@"
fi

cd "$(dirname "${BASH_SOURCE[0]}")"

section() { printf '\n======== %s ========\n' "$*"; }

# Pids of the live children of process $1 (from /proc, no ps needed).
children_of() {
    local parent=$1 stat pid rest ppid
    for stat in /proc/[0-9]*/stat; do
        # fields: pid (comm) state ppid ...; comm may contain spaces, so cut after the last ')'
        stat=$(cat "$stat" 2>/dev/null) || continue
        pid=${stat%% *}
        rest=${stat##*) }
        ppid=$(echo "$rest" | cut -d' ' -f2)
        [[ "$ppid" == "$parent" ]] && echo "$pid"
    done
    return 0
}

# Whatever the tests orphaned was adopted by our subreaper (tini): end it by pid, so that
# nothing from this run outlives it. Then report mounts that a container left on the host.
cleanup() {
    local rc=$? round pids pid
    if [[ -n "${TINYRT_TEST_REAPER:-}" && "$PPID" == "$TINYRT_TEST_REAPER" ]]; then
        for round in 1 2 3 4 5; do
            pids=$(children_of "$TINYRT_TEST_REAPER" | grep -vx "$$" || true)
            [[ -n "$pids" ]] || break
            for pid in $pids; do
                echo "test.sh: killing stray process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)) left by the tests" >&2
                kill -KILL "$pid" 2>/dev/null || true
            done
            sleep 0.5 # tini reaps them; their own children come to tini next round
            [[ $round -lt 5 ]] || echo "test.sh: stray processes still there after 5 rounds" >&2
        done
    fi
    if grep -q tinyrt /proc/self/mountinfo 2>/dev/null; then
        echo "test.sh: WARNING: mounts mentioning tinyrt are left on the host:" >&2
        grep tinyrt /proc/self/mountinfo >&2 || true
    fi
    exit "$rc"
}

# Cgroup directories the test suites' containers left behind (their names are the container
# ids): printed, then removed (rmdir: only empty ones go) so the machine stays clean.
# Returns 1 if there were any. The ids, as the suites make them:
#   conformance  <Env name>-<pid>-<n>  (Env::id in conformance/harness.rs; names from Env::new)
#   network      nt<tag>-<n>-<name>    (Net::id in integration/network.rs)
#   image        tinyrt-image-it-<pid>-<id>  (the cgroupsPath rt_env gives each container)
#   engines      tinyrt-engines-<tag>   (the suite's own cgroup parent; its teardown removes it)
# All are relative cgroupsPaths: each sits in the runtime's own cgroup of every hierarchy
# (/sys/fs/cgroup/H/, or /sys/fs/cgroup/memory/process_api/<hash>/ when that is where the
# run's memory cgroup is). A suite binary running elsewhere (a concurrent run) owns the
# directories of its ids: those are left alone.
leaked_cgroups() {
    local names conf_re net_re img_re eng_re d name pid exe found=0
    names=$(grep -ho 'Env::new("[a-z0-9_]*")' conformance/*.rs | sed 's/^Env::new("//; s/")$//; s/_/-/g' | sort -u | paste -sd'|')
    conf_re="^(${names:-none})-([0-9]+)-[0-9]+\$"
    net_re='^nt[0-9a-f]{6}-[0-9]+-[a-z0-9-]+$'
    img_re='^tinyrt-image-it-([0-9]+)-[a-z0-9-]+$'
    eng_re='^tinyrt-engines-[0-9a-f]{6}$'
    # -depth: children before parents, so rmdir can take both.
    while IFS= read -r d; do
        name=${d##*/}
        if [[ $name =~ $conf_re ]]; then
            pid=${BASH_REMATCH[2]}
            exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
            [[ ${exe##*/} =~ ^conformance-[0-9a-f]+ ]] && continue
        elif [[ $name =~ $net_re ]]; then
            suite_running network && continue
        elif [[ $name =~ $img_re ]]; then
            pid=${BASH_REMATCH[1]}
            exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
            [[ ${exe##*/} =~ ^image-[0-9a-f]+ ]] && continue
        elif [[ $name =~ $eng_re ]]; then
            suite_running engines && continue
        else
            continue
        fi
        found=1
        echo "test.sh: cgroup left by the tests: $d (processes: $(tr '\n' ' ' <"$d/cgroup.procs" 2>/dev/null))" >&2
        rmdir "$d" 2>/dev/null || echo "test.sh: could not remove $d" >&2
    done < <(find /sys/fs/cgroup -mindepth 1 -maxdepth 4 -depth -type d 2>/dev/null)
    return $((found))
}

# Whether a test binary of suite $1 (cargo names it deps/$1-<hash>) is running.
suite_running() {
    local exe
    for exe in /proc/[0-9]*/exe; do
        exe=$(readlink "$exe" 2>/dev/null) || continue
        [[ ${exe##*/} =~ ^$1-[0-9a-f]{16}( \(deleted\))?$ ]] && return 0
    done
    return 1
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

section "tinyrt test run: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git') on $(uname -r), $(nproc) cores"
cargo --version
rustc --version
if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: WARNING: not root; the conformance suite creates real containers and needs root" >&2
fi
for tool in busybox ip; do
    command -v "$tool" >/dev/null 2>&1 || echo "test.sh: WARNING: $tool not found (apt-get install busybox-static iproute2, or run .ci/run)" >&2
done

color=auto
[[ -t 1 ]] || color=never # plain logs in CI

section "cargo fmt --check"
cargo fmt --all -- --check --color "$color"

section "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

section "build the tests (cargo test --no-run)"
cargo test --no-run

section "cargo test (unit tests, conformance, network, image and engines suites)"
test_rc=0
timeout --kill-after=30s "${TINYRT_TEST_TIMEOUT:-40m}" cargo test --no-fail-fast || test_rc=$?

# Checked even when a test failed: that is when containers are most likely left.
section "no cgroup directories left by the tests"
cgroups_rc=0
leaked_cgroups || cgroups_rc=1
[[ $test_rc -eq 0 ]] || exit "$test_rc"
if [[ $cgroups_rc -ne 0 ]]; then
    echo "test.sh: the tests left cgroup directories (listed above)" >&2
    exit 1
fi
echo "none"

# This host is cgroup v1/hybrid: cgroup v2 is checked in a qemu guest booted with
# cgroup_no_v1=all (it installs qemu from bookworm-backports and Debian's kernel package).
# TINYRT_SKIP_CGROUP_V2=1 skips it on a machine without those packages.
if [[ "${TINYRT_SKIP_CGROUP_V2:-}" != 1 ]]; then
    section "cgroup v2 (qemu guest)"
    timeout --kill-after=30s 900 bash conformance/cgroup-v2/run.sh
fi

section "all checks passed"
