//! A daemon connection's descriptor, whatever library owns it (libcpg, libquorum, ...):
//! who is at the other end ([`check_peer`]), and waiting until events are pending
//! ([`wait_readable`]).

use std::os::fd::RawFd;
use std::time::Duration;

use crate::error::{Error, Operation, OsError, Result};

/// Fails with [`Error::UntrustedDaemon`] unless the process at the other end of the
/// connection on `fd` runs as `expected`.
pub(crate) fn check_peer(fd: RawFd, expected: u32) -> Result<()> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `fd` is the library's open socket to the daemon (open until finalize,
    // which the caller's borrow of its handle excludes); `cred` and `len` are valid out
    // pointers of the size passed.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(Error::Os {
            op: Operation::PeerCredentials,
            source: OsError(errno),
        });
    }
    if cred.uid != expected {
        return Err(Error::UntrustedDaemon {
            pid: cred.pid as u32,
            uid: cred.uid,
            expected,
        });
    }
    Ok(())
}

/// Waits up to `timeout` (to the microsecond, not rounded to milliseconds) until `fd`
/// is readable; false on timeout or when a signal interrupted the wait.
pub(crate) fn wait_readable(fd: RawFd, timeout: Duration) -> Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // Longer than any wait of interest, and within every platform's `time_t`.
    let timeout = timeout.min(Duration::from_secs(i32::MAX as u64));
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // SAFETY: one valid pollfd and a valid timespec for the duration of the call; a
    // null signal mask leaves the thread's mask alone.
    let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    if n < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if errno == libc::EINTR {
            return Ok(false);
        }
        return Err(Error::Os {
            op: Operation::Poll,
            source: OsError(errno),
        });
    }
    Ok(n > 0)
}
