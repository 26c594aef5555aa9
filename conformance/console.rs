//! process.terminal with --console-socket: the test is the console, as containerd's shim and
//! conmon are. It receives the pty master over SCM_RIGHTS and reads what the container prints.

use crate::harness::*;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use serde_json::json;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

/// Accept one connection on `l` and receive the fd it sends.
pub fn receive_master(l: &UnixListener) -> OwnedFd {
    l.set_nonblocking(false).unwrap();
    let (s, _) = l.accept().expect("accept on the console socket");
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC).expect("recvmsg");
    for c in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(fds) = c {
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd received on the console socket");
}

/// Read the master until the slave side is closed everywhere (EIO) or `timeout`.
pub fn read_master(m: &OwnedFd, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out reading the console; got {:?}",
            String::from_utf8_lossy(&out)
        );
        let mut p = [libc::pollfd {
            fd: m.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let r = unsafe { libc::poll(p.as_mut_ptr(), 1, left.as_millis().min(1000) as i32) };
        if r <= 0 {
            continue;
        }
        let n = unsafe { libc::read(m.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn console_socket() {
    let env = Env::new("console");
    let sock = env.dir.join("console.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let mut cfg = env.sh_config("tty; test -t 0 && test -t 1 && echo is-a-tty; stty size; readlink /proc/self/fd/2; ls -l /dev/console");
    cfg["process"]["terminal"] = json!(true);
    cfg["process"]["consoleSize"] = json!({"height": 33, "width": 111});
    let b = env.bundle(&cfg);
    let id = env.id();
    env.rt(&[
        "create",
        "--console-socket",
        sock.to_str().unwrap(),
        "--bundle",
        b.to_str().unwrap(),
        &id,
    ])
    .expect_ok("create --console-socket");
    let pid = env.state(&id)["pid"].as_i64().unwrap() as i32;
    env.adopt(pid);
    let m = receive_master(&l);
    env.rt(&["start", &id]).expect_ok("start");
    let text = read_master(&m, Duration::from_secs(10));
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(lines.first(), Some(&"/dev/pts/0"), "{text:?}");
    assert!(lines.contains(&"is-a-tty"), "{text:?}");
    assert!(lines.contains(&"33 111"), "consoleSize not applied: {text:?}");
    assert!(lines.contains(&"/dev/pts/0"), "{text:?}");
    assert!(text.contains("/dev/console"), "{text:?}");
    env.wait_exit(pid, Duration::from_secs(10));
    env.rt(&["delete", &id]).expect_ok("delete");

    // terminal true without a socket, and a socket without terminal, are errors.
    env.rt(&["create", "--bundle", b.to_str().unwrap(), &env.id()])
        .expect_err("terminal without --console-socket", "console-socket");
    let b2 = env.bundle(&env.config(&["true"]));
    let id2 = env.id();
    env.rt(&[
        "create",
        "--console-socket",
        sock.to_str().unwrap(),
        "--bundle",
        b2.to_str().unwrap(),
        &id2,
    ])
    .expect_err("--console-socket without terminal", "terminal");
    env.assert_nothing_left(&id2, &b2);
}
