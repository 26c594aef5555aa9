#!/usr/bin/env python3
"""Write bench/order/symbols.txt: the functions tinyrt runs, hottest first, for the linker.

Every tinyrt command is a short-lived process, and on this kernel a page fault on the
executable maps the 64 KB around it (fault-around): the peak RSS of `create` was 2.7 MB of
text out of 3.3 MB, because the ~900 functions a command runs are spread all over .text.
The release link (build.rs) hands this list to lld as --symbol-ordering-file, so those
functions sit together at the start of .text: a command faults in a few windows instead of
most of the binary, and takes fewer page faults.

The list comes from valgrind's callgrind (function names as linked, mangled): each verb is
run once under it, on the benchmark's bundles (default, memory limit, all namespaces with a
user namespace, a seccomp filter). Functions used by more verbs come first. Symbol hashes do
not depend on RUSTFLAGS, so the list made from a release build matches the next one; a
stale entry only stops helping (lld is told not to warn). Re-run this after large changes:

    sudo bench/order/generate.py     (builds the release binary itself; valgrind, perf)

valgrind does not know openat2, so the container's init fails under it after its first
steps, and it replaces the string functions with its own; what callgrind cannot see is
found by perf: the ordered build is profiled for page faults on its text, the functions that
still fault are added, and again, until none is new (or four rounds).
"""
import collections, json, os, re, shutil, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import bench  # noqa: E402  (make_rootfs, own_cgroup_base, templates, cgroup teardown)


def tweak_seccomp(c):
    c["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["kexec_load", "open_by_handle_at"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }


VARIANTS = {
    "default": bench.tweak_default,
    "memory": bench.tweak_memory,
    "allns": bench.tweak_allns,
    "seccomp": tweak_seccomp,
}


def build(root_dir):
    subprocess.run(["cargo", "build", "--release", "--bin", "tinyrt"], cwd=root_dir, check=True)


def callgrind_cmd(out_dir):
    def wrap(n, verb, cmd):
        return ["valgrind", "--tool=callgrind", "--demangle=no", "--trace-children=no",
                f"--callgrind-out-file={out_dir}/{n:03d}.{verb}.%p"] + cmd
    return wrap


def perf_cmd(out_dir):
    def wrap(n, verb, cmd):
        # create leaves its init running: follow only the runtime's own process there.
        inherit = ["-i"] if verb == "create" else []
        return ["perf", "record", "-q", "-e", "page-faults", "-c", "1", "-d", *inherit,
                "-o", f"{out_dir}/{n:03d}.{verb}.data", "--"] + cmd
    return wrap


def workload(work, tinyrt, base, rootfs, wrap):
    """Every verb, on every variant, once under `wrap` (plus unprofiled set-up steps)."""
    state = os.path.join(work, "state")
    n = 0

    def rt(verb, *args, profile=True):
        nonlocal n
        n += 1
        cmd = [tinyrt, "--root", state, verb, *args]
        if profile:
            cmd = wrap(n, verb, cmd)
        with open(os.path.join(work, "log"), "a") as log:
            subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=120)
        bench.reap()

    def bundle(variant, cid, args):
        b = os.path.join(work, "b-" + cid)
        shutil.rmtree(b, ignore_errors=True)
        os.makedirs(b)
        c = bench.make_template(os.path.join(work, "t-" + cid), cid, rootfs, tinyrt, VARIANTS[variant])
        shutil.rmtree(os.path.join(work, "t-" + cid), ignore_errors=True)
        c["process"]["args"] = args
        c["linux"]["cgroupsPath"] = f"{base}/{cid}"
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(c, f)
        return b

    try:
        spec = os.path.join(work, "spec")
        shutil.rmtree(spec, ignore_errors=True)
        os.makedirs(spec)
        rt("spec", "--bundle", spec)
        rt("features")
        for v in VARIANTS:
            c1, c2 = f"{v}-a", f"{v}-b"
            rt("create", "--bundle", bundle(v, c1, ["sleep", "3600"]), c1)
            rt("create", "--bundle", bundle(v, c2, ["sleep", "3600"]), c2, profile=False)
            rt("start", c2)
            rt("state", c2)
            rt("list")
            rt("exec", c2, "true")
            rt("pause", c2)
            rt("resume", c2)
            rt("events", "--stats", c2)
            rt("update", "--pids-limit", "100", c2)
            rt("kill", c2, "KILL")
            rt("delete", "--force", c2)
            rt("delete", "--force", c1)
            rt("run", "--bundle", bundle(v, f"{v}-r", ["true"]), f"{v}-r")
    finally:
        for cid in os.listdir(state) if os.path.isdir(state) else []:
            subprocess.run([tinyrt, "--root", state, "delete", "--force", cid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bench.reap()


def callgrind_functions(out_dir):
    """Functions each profile ran, counted over profiles, in first-seen order."""
    used = collections.Counter()
    first = {}
    for f in sorted(os.listdir(out_dir)):
        names, ids = set(), {}
        for line in open(os.path.join(out_dir, f), errors="replace"):
            m = re.match(r"^fn=\((\d+)\)(?: (.*))?$", line.strip())
            if not m:
                m2 = re.match(r"^cfn=\((\d+)\) (.*)$", line.strip())
                if m2:
                    ids[m2.group(1)] = m2.group(2)
                continue
            if m.group(2):
                ids[m.group(1)] = m.group(2)
            name = re.sub(r"'\d+$", "", ids.get(m.group(1), ""))
            if name and not name.startswith("0x"):
                names.add(name)
        for name in names:
            used[name] += 1
            first.setdefault(name, len(first))
    return sorted(used, key=lambda s: (-used[s], first[s]))


def faulting_functions(out_dir):
    """Functions whose instruction fetch took a page fault in tinyrt's own processes (the
    startup code, valgrind's replaced string functions, the init's code that valgrind cannot
    run), first-seen order."""
    out = []
    for f in sorted(os.listdir(out_dir)):
        text = subprocess.run(["perf", "script", "-i", os.path.join(out_dir, f), "--no-demangle", "-F", "comm,ip,sym,addr"],
                              capture_output=True, text=True).stdout
        for line in text.splitlines():
            p = line.split()
            if len(p) < 5 or p[0] != "tinyrt":
                continue
            addr, ip, sym = p[1], p[3], p[4]
            try:
                fetch = int(addr, 16) >> 12 == int(ip, 16) >> 12
            except ValueError:
                continue
            if fetch and sym != "[unknown]" and sym not in out:
                out.append(sym)
    return out


def main():
    root_dir = os.path.dirname(os.path.dirname(HERE))
    tinyrt = os.path.join(root_dir, "target/x86_64-unknown-linux-gnu/release/tinyrt")
    for tool in ("valgrind", "perf", "cargo"):
        if shutil.which(tool) is None:
            sys.exit(f"generate.py: needs {tool}")
    bench.libc.prctl(bench.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    work = tempfile.mkdtemp(prefix="tinyrt-order-")
    base = bench.own_cgroup_base()
    keep = bench.existing_ancestors(base)
    dst = os.path.join(HERE, "symbols.txt")
    try:
        rootfs = os.path.join(work, "rootfs")
        bench.make_rootfs(rootfs)
        build(root_dir)
        cg_dir = os.path.join(work, "cg")
        os.makedirs(cg_dir)
        workload(work, tinyrt, base, rootfs, callgrind_cmd(cg_dir))
        order = callgrind_functions(cg_dir)
        print(f"generate.py: callgrind: {len(order)} functions")
        # Then what callgrind cannot see, found by where the ordered build still faults:
        # each round links with the list so far, and adds the functions that faulted.
        for rnd in range(4):
            with open(dst, "w") as f:
                f.write("\n".join(order) + "\n")
            build(root_dir)
            pf_dir = os.path.join(work, f"perf{rnd}")
            os.makedirs(pf_dir)
            workload(work, tinyrt, base, rootfs, perf_cmd(pf_dir))
            new = [s for s in faulting_functions(pf_dir) if s not in order]
            print(f"generate.py: round {rnd}: {len(new)} more functions from page faults")
            if not new:
                break
            order += new
        with open(dst, "w") as f:
            f.write("\n".join(order) + "\n")
        build(root_dir)
        print(f"generate.py: {len(order)} functions -> {dst}")
    finally:
        bench.reap()
        bench.remove_cgroups(base, keep)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
