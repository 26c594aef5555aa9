//! Small helpers shared by the engine checks: shell commands with their output, checks that
//! say what they saw, free ports, waiting.

use libtest_mimic::Failed;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub type R = Result<(), Failed>;

/// What one command printed, and how it ended.
pub struct Out {
    pub cmd: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn from(cmd: &str, o: Output) -> Out {
        Out {
            cmd: cmd.to_string(),
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Succeeded, or an error quoting the command and its output.
    pub fn ok(self) -> Result<Out, Failed> {
        if self.code == 0 { Ok(self) } else { Err(self.failure("failed")) }
    }

    pub fn failure(&self, what: &str) -> Failed {
        format!(
            "`{}` {what} (exit {}):\n  stdout: {}\n  stderr: {}",
            self.cmd,
            self.code,
            self.stdout.trim(),
            self.stderr.trim()
        )
        .into()
    }

    /// stdout, trimmed.
    pub fn out(&self) -> &str {
        self.stdout.trim()
    }
}

/// Run `cmd` with `sh -c`, stdin closed, bounded by `timeout` (killed after it).
pub fn sh_timeout(cmd: &str, timeout: Duration) -> Out {
    let wrapped = format!("timeout -k 5 {} sh -c {}", timeout.as_secs().max(1), quote(cmd));
    let o = Command::new("sh")
        .arg("-c")
        .arg(&wrapped)
        .stdin(Stdio::null())
        .output()
        .expect("running sh");
    Out::from(cmd, o)
}

/// Run `cmd` with `sh -c` (at most two minutes).
pub fn sh(cmd: &str) -> Out {
    sh_timeout(cmd, Duration::from_secs(120))
}

/// Run `cmd`, which must succeed; its stdout, trimmed.
pub fn ok(cmd: &str) -> Result<String, Failed> {
    Ok(sh(cmd).ok()?.out().to_string())
}

/// Single-quote `s` for sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn check(cond: bool, msg: impl Into<String>) -> R {
    if cond { Ok(()) } else { Err(msg.into().into()) }
}

pub fn check_eq(got: &str, want: &str, what: &str) -> R {
    check(got == want, format!("{what}: got {got:?}, want {want:?}"))
}

pub fn check_contains(hay: &str, needle: &str, what: &str) -> R {
    check(hay.contains(needle), format!("{what}: {needle:?} not in {hay:?}"))
}

/// Poll `f` every 100 ms until it returns Some, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().unwrap().port()
}

/// A short unique suffix for names made by one check.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// GET http://addr/path with a short timeout; the body, or why not.
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let sa: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(3)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| format!("read: {e}"))?;
    Ok(resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(resp))
}

/// A one-file HTTP server on `ip` (any port), in a thread, until dropped.
pub struct HttpServer {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HttpServer {
    pub fn start(ip: &str, body: &'static str) -> Result<HttpServer, String> {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind((ip, 0)).map_err(|e| format!("bind {ip}: {e}"))?;
        let addr = l.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                c.set_read_timeout(Some(Duration::from_secs(3))).ok();
                // Read the whole request before answering: closing with unread data sends a
                // reset, which can make the client lose the answer.
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(c, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = c.shutdown(std::net::Shutdown::Write);
                let _ = c.read(&mut buf);
            }
        });
        Ok(HttpServer { addr, stop })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}
