#!/usr/bin/env python3
"""Side-by-side benchmark of runc-compatible runtimes (tinyrt, runc, crun, ...).

Runs every metric in interleaved rounds (runtime A, B, C, then again) on the same bundles and
prints medians, p90 and the ratio to a reference runtime (crun by default). It is a report, never
a pass/fail test. It becomes a child subreaper and reaps everything it starts (PID 1 on these
machines does not reap orphans), and kills what gets stuck.

crun refuses hybrid cgroup hosts (a cgroup2 mount holding controllers next to v1). With
--hide-unified the whole benchmark re-runs itself in a private mount namespace where the
cgroup2 mount at /sys/fs/cgroup/unified is unmounted, so every runtime sees the same pure-v1
layout (the host's mounts are untouched).

usage: bench/bench.py [--rounds N] [--ref crun] [--hide-unified] NAME=PATH [NAME=PATH...]
   e.g. sudo bench/bench.py --hide-unified tinyrt=target/x86_64-unknown-linux-gnu/release/tinyrt runc=/usr/sbin/runc crun=/usr/bin/crun
"""
import argparse, ctypes, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36


def reap():
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
    except ChildProcessError:
        pass


def timed(cmd, timeout=30):
    """Run cmd; return (milliseconds, max RSS in KB of it and its waited-for children)."""
    # stderr goes to a file, not a pipe: a container started by `create` inherits it, and a
    # pipe would only reach end-of-file when the container exits.
    errf = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf)
    deadline = t0 + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            p.kill()
            os.wait4(p.pid, 0)
            raise RuntimeError(f"timed out: {' '.join(cmd)}")
        time.sleep(0.0002)
    ms = (time.perf_counter() - t0) * 1000
    p.returncode = os.waitstatus_to_exitcode(status)
    errf.seek(0)
    err = errf.read().decode(errors="replace")
    errf.close()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {err.strip()}")
    return ms, ru.ru_maxrss


RSS_HELPER = r"""
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
/* Run argv[1..] and print its peak RSS in KB. A small C parent, because a child forked from
   Python starts with Python's RSS as its high-water mark (it survives the exec). */
int main(int argc, char **argv) {
    pid_t p = fork();
    if (p == 0) {
        /* The container inherits stdio: keep our stdout (the answer) away from it. */
        int n = open("/dev/null", O_RDWR);
        dup2(n, 0); dup2(n, 1); dup2(n, 2);
        execv(argv[1], argv + 1); _exit(127);
    }
    int st; struct rusage ru;
    if (wait4(p, &st, 0, &ru) < 0) return 1;
    printf("%ld\n", ru.ru_maxrss);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
"""


def rss_helper(work):
    src, exe = os.path.join(work, "rss.c"), os.path.join(work, "rss")
    with open(src, "w") as f:
        f.write(RSS_HELPER)
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    return exe


def peak_rss(helper, cmd):
    out = subprocess.run([helper] + cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
    return int(out.stdout.split()[-1])


def make_rootfs(dst):
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run(["sh", os.path.join(here, "..", "bundle-examples", "mkrootfs.sh"), dst], check=True, stdout=subprocess.DEVNULL)


def own_cgroup_base():
    """An absolute cgroup path under this process's own memory cgroup. Every runtime gets it
    as linux.cgroupsPath prefix, so in the memory hierarchy (which this machine's supervisor
    uses) every container lands under our own sub-path: crun reads a relative cgroupsPath from
    the hierarchy roots, runc and tinyrt from their own cgroup, but an absolute path means the
    same to all three."""
    mem = "/"
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if "memory" in ctrls.split(","):
                mem = path
    return os.path.join(mem, f"tinyrt-bench-{os.getpid()}")


def make_template(base, name, rootfs, tinyrt, tweak):
    b = os.path.join(base, "template-" + name)
    os.makedirs(b)
    subprocess.run([tinyrt, "spec", "--bundle", b], check=True)
    with open(os.path.join(b, "config.json")) as f:
        c = json.load(f)
    c["root"]["path"] = rootfs
    c["process"]["terminal"] = False
    c["process"]["args"] = ["/bin/true"]
    tweak(c)
    return c


class Bundles:
    """One bundle directory per container (made before the timed command), so that each has
    its own cgroupsPath under `cgroup_base`."""

    def __init__(self, work, templates, cgroup_base):
        self.work, self.templates, self.cgroup_base = work, templates, cgroup_base

    def __call__(self, variant, cid):
        b = os.path.join(self.work, "bundles", cid)
        os.makedirs(b, exist_ok=True)
        c = json.loads(json.dumps(self.templates[variant]))
        c["linux"]["cgroupsPath"] = f"{self.cgroup_base}/{cid}"
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(c, f)
        return b


def cgroup_mounts():
    with open("/proc/self/mountinfo") as f:
        return [l.split(" - ")[0].split()[4] for l in f if " - cgroup" in l]


def existing_ancestors(base):
    """For each hierarchy, the deepest ancestor of `base` that exists now (so that teardown
    removes the parents the runtimes make, e.g. /process_api/<hash> in the cpu hierarchy)."""
    keep = {}
    for mp in cgroup_mounts():
        d = base
        while d != "/" and not os.path.isdir(mp + d):
            d = os.path.dirname(d)
        keep[mp] = d
    return keep


def remove_cgroups(base, keep):
    """rmdir the benchmark's cgroup tree in every hierarchy (children first), and the parents
    made for it."""
    for mp in cgroup_mounts():
        top = mp + base
        if os.path.isdir(top):
            for d, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(d)
                except OSError as e:
                    print(f"bench: could not remove {d}: {e}", file=sys.stderr)
        d = os.path.dirname(base)
        while d not in ("/", keep.get(mp, "/")) and len(d) > len(keep.get(mp, "/")):
            try:
                os.rmdir(mp + d)
            except OSError:
                break
            d = os.path.dirname(d)


def tweak_default(c):
    pass


def tweak_allns(c):
    c["linux"]["namespaces"] = [{"type": t} for t in ["pid", "network", "ipc", "uts", "mount", "cgroup", "user"]]
    c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["mounts"] = [m for m in c["mounts"] if m["type"] not in ("cgroup",)]


def tweak_memory(c):
    c["linux"].setdefault("resources", {})["memory"] = {"limit": 256 << 20}


# Docker's default seccomp profile, as podman's containers-common ships it (the same profile
# family, in Docker's JSON format); converted the way the engines do for a container with the
# bundle's capabilities on x86_64.
DEFAULT_PROFILE = "/usr/share/containers/seccomp.json"


def docker_default_seccomp(caps):
    with open(DEFAULT_PROFILE) as f:
        prof = json.load(f)
    arches = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    rules = []
    for s in prof["syscalls"]:
        inc, exc = s.get("includes") or {}, s.get("excludes") or {}
        if inc.get("arches") and "amd64" not in inc["arches"]:
            continue
        if exc.get("arches") and "amd64" in exc["arches"]:
            continue
        if inc.get("caps") and not all(c in caps for c in inc["caps"]):
            continue
        if exc.get("caps") and any(c in caps for c in exc["caps"]):
            continue
        r = {"names": s["names"], "action": s["action"]}
        if s.get("args"):
            r["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op")} for a in s["args"]]
        if "errnoRet" in s:
            r["errnoRet"] = s["errnoRet"]
        rules.append(r)
    return {"defaultAction": prof["defaultAction"], "defaultErrnoRet": prof.get("defaultErrnoRet", 1),
            "architectures": arches, "syscalls": rules}


def tweak_seccomp(c):
    c["linux"]["seccomp"] = docker_default_seccomp(set(c["process"]["capabilities"]["bounding"]))


def tweak_sleep(c):
    c["process"]["args"] = ["sleep", "3600"]


def pctl(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", type=int, default=100, help="containers in the batch metric (0: skip)")
    ap.add_argument("--ref", default="crun")
    ap.add_argument("--hide-unified", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("runtimes", nargs="+", metavar="NAME=PATH")
    a = ap.parse_args()
    if a.hide_unified and os.environ.get("TINYRT_BENCH_NS") != "1":
        os.environ["TINYRT_BENCH_NS"] = "1"
        inner = f"umount /sys/fs/cgroup/unified 2>/dev/null; exec {sys.executable} " + " ".join(map(lambda s: "'" + s + "'", sys.argv))
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", "sh", "-c", inner])
    rts = [(n, os.path.abspath(p) if os.sep in p else shutil.which(p) or p) for n, p in (r.split("=", 1) for r in a.runtimes)]
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    tinyrt = next((p for n, p in rts if n == "tinyrt"), rts[0][1])
    work = tempfile.mkdtemp(prefix="tinyrt-bench-")
    os.chmod(work, 0o755)  # the user-namespace bundle is reached as an unprivileged host uid
    results = {}  # metric -> runtime -> [values]
    cgroup_base = own_cgroup_base()
    cgroup_keep = existing_ancestors(cgroup_base)
    try:
        helper = rss_helper(work)
        rootfs = os.path.join(work, "rootfs")
        make_rootfs(rootfs)
        templates = {
            "default": make_template(work, "default", rootfs, tinyrt, tweak_default),
            "allns": make_template(work, "allns", rootfs, tinyrt, tweak_allns),
            "memory": make_template(work, "memory", rootfs, tinyrt, tweak_memory),
            **({"seccomp": make_template(work, "seccomp", rootfs, tinyrt, tweak_seccomp)} if os.path.exists(DEFAULT_PROFILE) else {}),
            "sleep": make_template(work, "sleep", rootfs, tinyrt, tweak_sleep),
        }
        bundle = Bundles(work, templates, cgroup_base)
        roots = {n: os.path.join(work, "root-" + n) for n, _ in rts}

        def rec(metric, rt, v):
            results.setdefault(metric, {}).setdefault(rt, []).append(v)

        n = 0
        for r in range(a.rounds):
            for name, path in rts:
                R = [path, "--root", roots[name]]
                n += 1
                cid = f"b{n}"
                for variant in [v for v in ("default", "allns", "memory", "seccomp") if v in templates]:
                    ms, _ = timed(R + ["run", "--bundle", bundle(variant, cid + variant), cid + variant])
                    rec(f"run /bin/true ({variant})", name, ms)
                ms, _ = timed(R + ["create", "--bundle", bundle("default", cid), cid])
                rec("create", name, ms)
                rss_id = cid + "r"
                rec("create peak RSS (KB)", name, peak_rss(helper, R + ["create", "--bundle", bundle("default", rss_id), rss_id]))
                timed(R + ["delete", "--force", rss_id])
                rec("state", name, timed(R + ["state", cid])[0])
                rec("start", name, timed(R + ["start", cid])[0])
                for _ in range(2000):
                    out = subprocess.run(R + ["state", cid], capture_output=True, text=True).stdout
                    if '"stopped"' in out:
                        break
                    time.sleep(0.001)
                rec("delete", name, timed(R + ["delete", cid])[0])
                sid = cid + "s"
                timed(R + ["run", "--detach", "--bundle", bundle("sleep", sid), sid])
                rec("exec /bin/true", name, timed(R + ["exec", sid, "/bin/true"])[0])
                timed(R + ["delete", "--force", sid])
                reap()
        if a.batch:
            for name, path in rts:
                R = [path, "--root", roots[name]]
                ids = [f"batch{name}{i}" for i in range(a.batch)]
                dirs = [bundle("sleep", i) for i in ids]
                t0 = time.perf_counter()
                for i, d in zip(ids, dirs):
                    timed(R + ["run", "--detach", "--bundle", d, i])
                rec(f"{a.batch} containers create+start (s)", name, time.perf_counter() - t0)
                rec(f"list with {a.batch} containers", name, statistics.median(timed(R + ["list"])[0] for _ in range(20)))
                for i in ids:
                    timed(R + ["delete", "--force", i])
                reap()
    finally:
        for name, path in rts:
            root = os.path.join(work, "root-" + name)
            if os.path.isdir(root):
                for cid in os.listdir(root):
                    subprocess.run([path, "--root", root, "delete", "--force", cid], capture_output=True)
        reap()
        remove_cgroups(cgroup_base, cgroup_keep)
        shutil.rmtree(work, ignore_errors=True)

    names = [n for n, _ in rts]
    ref = a.ref if a.ref in names else None
    head = f"| metric | " + " | ".join(f"{n} median (p90)" for n in names) + (" | " + " | ".join(f"{n}/{ref}" for n in names if n != ref) if ref else "") + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for metric, per in results.items():
        med = {n: statistics.median(v) for n, v in per.items()}
        cells = [f"{med[n]:.2f} ({pctl(per[n], 90):.2f})" for n in names]
        ratios = [f"{med[n] / med[ref]:.2f}x" for n in names if n != ref] if ref else []
        print(f"| {metric} | " + " | ".join(cells + ratios) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
