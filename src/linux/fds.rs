//! File descriptors crossing into the container: only stdio and --preserve-fds survive exec.

use super::{Ctx, Result};

/// Mark every fd from `first` upwards close-on-exec.
pub fn cloexec_from(first: u32) -> Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk /proc/self/fd.
    let dir = std::fs::read_dir("/proc/self/fd").ctx(|| "listing /proc/self/fd")?;
    let fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    for fd in fds.into_iter().filter(|fd| *fd >= first as i32) {
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Put /dev/null on every fd of `first..first + count` the caller did not open, so none of
/// the runtime's own files (the log, the state-dir lock) takes such a number and crosses into
/// the container as a "preserved" fd (the lock held by the init would deadlock `start`).
pub fn reserve(first: i32, count: u32) {
    for fd in first..first.saturating_add(count.min(65536) as i32) {
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if null >= 0 && null != fd {
            unsafe {
                libc::dup2(null, fd);
                libc::close(null);
            }
        }
    }
}

/// Clear close-on-exec on `fd` (for fds passed on purpose, such as --preserve-fds).
pub fn keep(fd: i32) {
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
}

/// Close every fd from `first` upwards except those in `keep` (a forked child drops what
/// the parent had open: the state-dir lock above all, which must not outlive the parent).
pub fn close_from_except(first: i32, keep: &[i32]) {
    let mut keep: Vec<i32> = keep.iter().copied().filter(|k| *k >= first).collect();
    keep.sort_unstable();
    let mut lo = first;
    for k in keep {
        if k > lo {
            close_range(lo, k - 1);
        }
        lo = k + 1;
    }
    close_range(lo, i32::MAX);
}

fn close_range(lo: i32, hi: i32) {
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo as u32, hi as u32, 0u32) };
    if r != 0 {
        // Kernels before 5.9: close one by one what /proc/self/fd lists.
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
            for fd in fds.into_iter().filter(|fd| (lo..=hi).contains(fd)) {
                unsafe { libc::close(fd) };
            }
        }
    }
}
