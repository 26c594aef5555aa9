//! process.terminal: a pty made inside the container's devpts, its master handed to the
//! engine over --console-socket (SCM_RIGHTS, as containerd and podman expect), the slave
//! becoming stdio and controlling terminal.

use super::{Ctx, Result};
use nix::fcntl::{OFlag, open};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::stat::Mode;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

nix::ioctl_read!(tiocgptn, b'T', 0x30, libc::c_uint);
nix::ioctl_write_ptr!(tiocsptlck, b'T', 0x31, libc::c_int);

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub slave_path: String,
}

/// Open a new pty from /dev/ptmx (the container's, after pivot_root).
pub fn open_pty() -> Result<Pty> {
    let master = open("/dev/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(|| "process.terminal: opening /dev/ptmx")?;
    let unlock: libc::c_int = 0;
    unsafe { tiocsptlck(master.as_raw_fd(), &unlock) }.ctx(|| "process.terminal: unlocking the pty")?;
    let mut n: libc::c_uint = 0;
    unsafe { tiocgptn(master.as_raw_fd(), &mut n) }.ctx(|| "process.terminal: TIOCGPTN")?;
    let slave_path = format!("/dev/pts/{n}");
    let slave = open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("process.terminal: opening {slave_path}"))?;
    Ok(Pty { master, slave, slave_path })
}

pub fn set_size(fd: &OwnedFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(nix::errno::Errno::last()).ctx(|| "process.consoleSize: TIOCSWINSZ");
    }
    Ok(())
}

/// Send `fd` over the connected console socket, with the pty name as payload.
pub fn send_fd(sock: RawFd, fd: RawFd, name: &str) -> Result<()> {
    let fds = [fd];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(sock, &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .ctx(|| "--console-socket: sending the pty master")?;
    Ok(())
}

/// Make the slave our stdin/stdout/stderr and controlling terminal.
pub fn make_controlling(slave: &OwnedFd) -> Result<()> {
    for target in 0..3 {
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(nix::errno::Errno::last()).ctx(|| "process.terminal: dup2 of the pty");
        }
    }
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(nix::errno::Errno::last()).ctx(|| "process.terminal: TIOCSCTTY");
    }
    Ok(())
}

/// Receive a pty master sent with [`send_fd`].
pub fn recv_fd(sock: RawFd) -> Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, recvmsg};
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC).ctx(|| "receiving the pty master")?;
    for c in msg.cmsgs().ctx(|| "reading the pty master message")? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    super::refuse("the container sent no pty master")
}

/// Copy the window size of `from` (our terminal) to `to` (the pty master).
pub fn copy_size(from: RawFd, to: RawFd) {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) } == 0 {
        unsafe { libc::ioctl(to, libc::TIOCSWINSZ, &ws) };
    }
}
