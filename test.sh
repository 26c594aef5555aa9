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

section "cargo test (unit tests, conformance, network and image suites)"
timeout --kill-after=30s "${TINYRT_TEST_TIMEOUT:-40m}" cargo test --no-fail-fast

# This host is cgroup v1/hybrid: cgroup v2 is checked in a qemu guest booted with
# cgroup_no_v1=all (it installs qemu from bookworm-backports and Debian's kernel package).
# TINYRT_SKIP_CGROUP_V2=1 skips it on a machine without those packages.
if [[ "${TINYRT_SKIP_CGROUP_V2:-}" != 1 ]]; then
    section "cgroup v2 (qemu guest)"
    timeout --kill-after=30s 900 bash conformance/cgroup-v2/run.sh
fi

section "all checks passed"
