//! cgroup2 device control: the spec's device rules compiled into a BPF_PROG_TYPE_CGROUP_DEVICE
//! program and attached to the container's cgroup. Rules are checked last to first, the first
//! match decides (so a later rule overrides an earlier one, as with the v1 allow/deny files);
//! an `a` rule with wildcard numbers sets the default and discards the rules before it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// A device rule in the shape the program tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// 'a', 'b' or 'c'.
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// BPF_DEVCG_ACC_* bits: mknod 1, read 2, write 4.
    pub access: u32,
    pub allow: bool,
}

pub fn access_bits(s: &str) -> u32 {
    s.chars()
        .map(|c| match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        })
        .fold(0, |a, b| a | b)
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes (BPF class | op | source).
const LDX_W: u8 = 0x61; // r_dst = *(u32 *)(r_src + off)
const AND32_K: u8 = 0x54;
const RSH32_K: u8 = 0x74;
const MOV32_K: u8 = 0xb4;
const MOV32_X: u8 = 0xbc;
const JNE_K: u8 = 0x55;
const EXIT: u8 = 0x95;

/// The program: r2 = type, r3 = access, r4 = major, r5 = minor, then one block per rule.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    // Only the rules after the last "a *:* ..." matter; that one gives the default.
    let (default_allow, rules) = match rules.iter().rposition(|r| r.kind == 'a' && r.major.is_none() && r.minor.is_none()) {
        Some(i) => (rules[i].allow, &rules[i + 1..]),
        None => (false, rules),
    };
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut block = Vec::new();
        match r.kind {
            'b' => block.push(insn(JNE_K, 2, 0, 0, 1)),
            'c' => block.push(insn(JNE_K, 2, 0, 0, 2)),
            _ => {}
        }
        if r.access & 7 != 7 {
            // The access asked for must be within the rule's: (access & rule) == access.
            block.push(insn(MOV32_X, 1, 3, 0, 0));
            block.push(insn(AND32_K, 1, 0, 0, r.access as i32));
            block.push(Insn {
                code: 0x5d,
                regs: (3 << 4) | 1,
                off: 0,
                imm: 0,
            }); // jne r1, r3
        }
        if let Some(m) = r.major {
            block.push(insn(JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            block.push(insn(JNE_K, 5, 0, 0, m as i32));
        }
        block.push(insn(MOV32_K, 0, 0, 0, r.allow as i32));
        block.push(insn(EXIT, 0, 0, 0, 0));
        // Every jump skips to the end of this block.
        let n = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K || ins.code == 0x5d {
                ins.off = (n - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(MOV32_K, 0, 0, 0, default_allow as i32));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    pad: [u64; 12],
}

#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    pad: [u32; 27],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<i64> {
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, std::mem::size_of::<T>()) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
}

/// Load the program for `rules` and attach it to the cgroup directory `dir`.
pub fn attach(dir: &Path, rules: &[Rule]) -> std::io::Result<()> {
    let prog = program(rules);
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 4096];
    let load = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    let fd = match bpf(BPF_PROG_LOAD, &load) {
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as i32) },
        Err(e) => {
            let text = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)]).into_owned();
            return Err(std::io::Error::new(e.kind(), format!("loading the device program: {e} {text}")));
        }
    };
    let cg = std::fs::File::open(dir)?;
    let at = ProgAttach {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &at)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the program on (type, access, major, minor) with a tiny interpreter of the
    /// instructions it uses, to check the rule logic without the kernel.
    fn eval(p: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u32 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u32; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = ctx[i.off as usize / 4],
                AND32_K => r[dst] &= i.imm as u32,
                RSH32_K => r[dst] >>= i.imm,
                MOV32_K => r[dst] = i.imm as u32,
                MOV32_X => r[dst] = r[src],
                JNE_K => {
                    if r[dst] != i.imm as u32 {
                        pc += i.off as usize
                    }
                }
                0x5d => {
                    if r[dst] != r[src] {
                        pc += i.off as usize
                    }
                }
                EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn rule(kind: char, major: Option<u32>, minor: Option<u32>, access: &str, allow: bool) -> Rule {
        Rule {
            kind,
            major,
            minor,
            access: access_bits(access),
            allow,
        }
    }

    #[test]
    fn docker_like_rules() {
        let rules = vec![
            rule('a', None, None, "rwm", false),
            rule('c', Some(1), Some(3), "rwm", true),
            rule('c', None, None, "m", true),
            rule('c', Some(136), None, "rwm", true),
            rule('c', Some(1), Some(5), "r", true),
        ];
        let p = program(&rules);
        let (r, w, m) = (2, 4, 1);
        assert_eq!(eval(&p, 2, r | w, 1, 3), 1, "/dev/null rw");
        assert_eq!(eval(&p, 2, r, 1, 5), 1, "/dev/zero r");
        assert_eq!(eval(&p, 2, w, 1, 5), 0, "/dev/zero w denied");
        assert_eq!(eval(&p, 2, r, 136, 7), 1, "pts");
        assert_eq!(eval(&p, 2, m, 250, 1), 1, "mknod any char");
        assert_eq!(eval(&p, 2, r, 250, 1), 0, "read other char denied");
        assert_eq!(eval(&p, 1, m, 8, 0), 0, "block mknod denied");
    }

    #[test]
    fn later_rule_wins() {
        let rules = vec![rule('a', None, None, "rwm", true), rule('c', Some(1), Some(3), "rwm", false)];
        let p = program(&rules);
        assert_eq!(eval(&p, 2, 2, 1, 3), 0);
        assert_eq!(eval(&p, 2, 2, 1, 5), 1);
    }

    /// On the real kernel: a shell moved into a cgroup2 directory with the program attached
    /// cannot open /dev/null for reading while /dev/zero still works. Skipped where this
    /// machine has no cgroup2 mount to make a directory in.
    #[test]
    fn enforced_by_the_kernel() {
        let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists());
        let Some(base) = base else { return };
        let dir = base.join(format!("tinyrt-bpf-test-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            return;
        }
        let rules = vec![rule('a', None, None, "rwm", true), rule('c', Some(1), Some(3), "r", false)];
        let res = attach(&dir, &rules);
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && head -c1 /dev/zero >/dev/null && echo zero-ok; cat /dev/null 2>&1 || echo null-denied",
                dir.display()
            ))
            .output();
        let _ = std::fs::remove_dir(&dir);
        res.unwrap();
        let text = String::from_utf8_lossy(&out.unwrap().stdout).into_owned();
        assert!(text.contains("zero-ok"), "{text}");
        assert!(text.contains("null-denied"), "{text}");
    }
}
