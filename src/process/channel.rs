//! The parent <-> child channel: a SOCK_SEQPACKET socketpair carrying typed messages
//! (one JSON message per packet). End of file means the other side died.

use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Msg {
    /// intermediate -> parent: my user namespace exists, write its id maps.
    UserNsReady,
    /// parent -> intermediate: maps written.
    MapsWritten,
    /// intermediate -> parent: the container's init has this pid (in the parent's pid namespace).
    InitPid(i32),
    /// parent -> init: placed in its cgroups; here is the state to give hooks.
    Proceed { state: String },
    /// init -> parent: mounts done, run prestart and createRuntime hooks now.
    RunCreateHooks,
    /// parent -> init: those hooks succeeded.
    CreateHooksDone,
    /// init -> parent: set up and waiting for `start`.
    Ready,
    /// child -> parent, with the seccomp notify fd attached (SCM_RIGHTS).
    SeccompFd,
    /// child -> parent: a step failed.
    Error { what: String, errno: i32 },
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the container process exited before it was ready{0}")]
    Eof(String),
    #[error("channel to the container process: {0}")]
    Io(nix::errno::Errno),
    #[error("container process: {what}: {}", crate::linux::errno_text(nix::errno::Errno::from_raw(*errno)))]
    Child { what: String, errno: i32 },
    #[error("container process sent {got:?} where {want} was expected")]
    Unexpected { got: String, want: &'static str },
}

pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    pub fn pair() -> Result<(Channel, Channel), ChannelError> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(ChannelError::Io)?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    pub fn send(&self, m: &Msg) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec(m).expect("message serializes");
        nix::sys::socket::send(self.fd.as_raw_fd(), &bytes, nix::sys::socket::MsgFlags::MSG_NOSIGNAL).map_err(ChannelError::Io)?;
        Ok(())
    }

    /// Send a message with an fd attached.
    pub fn send_fd(&self, m: &Msg, fd: std::os::fd::RawFd) -> Result<(), ChannelError> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let bytes = serde_json::to_vec(m).expect("message serializes");
        let iov = [std::io::IoSlice::new(&bytes)];
        let fds = [fd];
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(ChannelError::Io)?;
        Ok(())
    }

    /// Receive one message and the fd attached to it, if any.
    pub fn recv_with_fd(&self) -> Result<(Msg, Option<OwnedFd>), ChannelError> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        use std::os::fd::FromRawFd;
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let (n, fd) = loop {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(self.fd.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(ChannelError::Io(e)),
                Ok(msg) => {
                    let mut fd = None;
                    for c in msg.cmsgs().map_err(ChannelError::Io)? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            fd = fds.first().map(|f| unsafe { OwnedFd::from_raw_fd(*f) });
                        }
                    }
                    break (msg.bytes, fd);
                }
            }
        };
        if n == 0 {
            return Err(ChannelError::Eof(String::new()));
        }
        match serde_json::from_slice(&buf[..n]) {
            Ok(Msg::Error { what, errno }) => Err(ChannelError::Child { what, errno }),
            Ok(m) => Ok((m, fd)),
            Err(e) => Err(ChannelError::Unexpected {
                got: e.to_string(),
                want: "a message",
            }),
        }
    }

    /// Receive one message; a child's `Error` becomes `Err(Child)`.
    pub fn recv(&self) -> Result<Msg, ChannelError> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match nix::sys::socket::recv(self.fd.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty()) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r.map_err(ChannelError::Io)?,
            }
        };
        if n == 0 {
            return Err(ChannelError::Eof(String::new()));
        }
        match serde_json::from_slice(&buf[..n]) {
            Ok(Msg::Error { what, errno }) => Err(ChannelError::Child { what, errno }),
            Ok(m) => Ok(m),
            Err(e) => Err(ChannelError::Unexpected {
                got: e.to_string(),
                want: "a message",
            }),
        }
    }

    /// Receive and require a given message.
    pub fn expect(&self, want: Msg) -> Result<(), ChannelError> {
        let got = self.recv()?;
        if got == want {
            Ok(())
        } else {
            Err(ChannelError::Unexpected {
                got: format!("{got:?}"),
                want: variant_name(&want),
            })
        }
    }
}

fn variant_name(m: &Msg) -> &'static str {
    match m {
        Msg::UserNsReady => "UserNsReady",
        Msg::MapsWritten => "MapsWritten",
        Msg::InitPid(_) => "InitPid",
        Msg::Proceed { .. } => "Proceed",
        Msg::RunCreateHooks => "RunCreateHooks",
        Msg::CreateHooksDone => "CreateHooksDone",
        Msg::Ready => "Ready",
        Msg::SeccompFd => "SeccompFd",
        Msg::Error { .. } => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Msg::InitPid(42)).unwrap();
        assert_eq!(b.recv().unwrap(), Msg::InitPid(42));
        a.send(&Msg::Error {
            what: "mounting /proc".into(),
            errno: libc::EPERM,
        })
        .unwrap();
        let e = b.recv().unwrap_err().to_string();
        assert_eq!(e, "container process: mounting /proc: EPERM: operation not permitted");
        a.send(&Msg::Ready).unwrap();
        assert!(b.expect(Msg::MapsWritten).is_err());
        drop(a);
        assert!(matches!(b.recv(), Err(ChannelError::Eof(_))));
    }
}
