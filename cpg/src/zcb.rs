//! Zero-copy send buffers: memory that libcpg allocates for a message, filled in place
//! and sent without another copy by the library (`cpg_zcb_*`).
//!
//! ```no_run
//! # let handle = cpg::Handle::builder().build()?;
//! let mut buffer = handle.alloc_buffer(5)?;
//! buffer.copy_from_slice(b"hello");
//! buffer.send_all()?;
//! // `buffer` is freed here (cpg_zcb_free), sent or not.
//! # Ok::<(), cpg::Error>(())
//! ```
//!
//! # What libcpg does underneath
//!
//! On corosync 2.x and 3.x up to 3.1.10 (3.1.7 in Debian 12), `cpg_zcb_alloc`
//! creates a file in `/dev/shm` (falling back to `/var/run`), maps it, and registers it
//! with the daemon, which maps it too and deletes the file. The mapping starts with
//! libcpg's own header, then room for the send request header, then the bytes this
//! type hands out. A send rewrites the request header and asks the daemon to multicast
//! straight from the mapping; the daemon copies the message into its send queue before
//! it answers. `cpg_zcb_free` unregisters and unmaps it.
//!
//! Later corosync turned these calls into plain `malloc`/`free` wrappers over an
//! ordinary send. This type relies on neither: it never touches memory outside the
//! buffer, never reads the buffer after freeing it, and starts it zeroed (a `malloc`ed
//! block is uninitialized).

use std::ffi::c_void;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use corosync_sys as sys;

use crate::connection::ConnectionRef;
use crate::error::{CsError, Error, Operation, Result};
use crate::process::BufferSlot;
use crate::types::Guarantee;

/// A message buffer allocated by libcpg (`cpg_zcb_alloc`), written in place and sent
/// without another copy ([`send_all`](Self::send_all), [`send_prefix`](Self::send_prefix)).
///
/// It dereferences to a `[u8]` of exactly the requested size, zeroed at first. It is
/// freed (`cpg_zcb_free`) exactly once, when dropped, whether it was sent or not.
///
/// # Reuse
///
/// A buffer can be sent any number of times, with the same or new contents: libcpg
/// writes its request header in front of the data at each send, and the daemon has
/// copied the message into its own queue by the time [`send_prefix`](Self::send_prefix) returns. The
/// buffer stays registered with the daemon until it is dropped.
///
/// # Limits
///
/// A zero-copy send is never fragmented: the buffer size and every send are limited to
/// [`max_message_size`](ConnectionRef::max_message_size) (about 1 MiB), which
/// [`alloc_buffer`](ConnectionRef::alloc_buffer) and [`send_prefix`](Self::send_prefix) check before
/// calling libcpg. Use [`ConnectionRef::send`] for larger messages.
///
/// libcpg itself would accept zero-copy sends up to its IPC request size (1 MiB), but
/// the daemon cannot hand messages that large to its clients: on corosync 3.1.7 the
/// largest one delivered is 200 bytes short of 1 MiB, and larger ones are reported as
/// sent and then dropped. The atomic size leaves room for those headers.
///
/// # Forgetting
///
/// A buffer passed to `mem::forget` is never freed: its mapping stays in this process
/// until it exits, and it holds one of the process's
/// [`MAX_LIVE_BUFFERS`](crate::MAX_LIVE_BUFFERS) until its handle is finalized (the
/// daemon then drops its own mapping with the connection).
///
/// # Lifetime
///
/// Freeing needs the live connection, so the buffer borrows it and cannot outlive it:
///
/// ```compile_fail,E0505
/// let handle = cpg::Handle::builder().build()?;
/// let buffer = handle.alloc_buffer(16)?;
/// drop(handle); // error: `handle` is still borrowed by `buffer`
/// buffer.send_all()?;
/// # Ok::<(), cpg::Error>(())
/// ```
///
/// Like the [`ConnectionRef`] it borrows, it stays on the thread that made it.
pub struct ZeroCopyBuffer<'a> {
    conn: &'a ConnectionRef,
    /// Start of the bytes handed out, as returned by `cpg_zcb_alloc`.
    ptr: NonNull<u8>,
    len: usize,
    /// One of the process's [`MAX_LIVE_BUFFERS`](crate::MAX_LIVE_BUFFERS), released
    /// after the buffer is freed.
    _slot: BufferSlot<'a>,
    /// `free` ran: Drop has nothing left to do.
    freed: bool,
}

impl ConnectionRef {
    /// Allocates a zero-copy send buffer of exactly `size` bytes (`cpg_zcb_alloc`),
    /// zeroed. Fill it through `&mut [u8]` and send it with
    /// [`ZeroCopyBuffer::send_all`] or [`ZeroCopyBuffer::send_prefix`].
    ///
    /// Fails with [`Error::MessageTooBig`] when `size` is above
    /// [`max_message_size`](Self::max_message_size), before libcpg is called.
    ///
    /// # Aborts
    ///
    /// With the shared-memory implementation (corosync up to 3.1.10), libcpg **aborts
    /// the process** (a C `assert`) when it cannot create or map the shared-memory
    /// file: `/dev/shm` (and `/var/run`) full or not writable, or no file descriptor
    /// left. The size limit is checked here first; the rest cannot be checked without
    /// racing libcpg. The daemon, too, asserts that it can open the file by its path, so
    /// the client must see the daemon's `/dev/shm` (a container with a private
    /// `/dev/shm` talking to the host's daemon would bring the daemon down). If the
    /// daemon cannot be reached after the file was created, libcpg returns the error and
    /// leaves the file and its mapping behind: so a handle whose daemon is known to be
    /// gone (an earlier call reported it, or the connection's socket has hung up) fails
    /// here with the lost-daemon error before libcpg is called.
    ///
    /// At most [`MAX_LIVE_BUFFERS`](crate::MAX_LIVE_BUFFERS) buffers are alive per
    /// process (each is a mapping in the daemon too, and the daemon aborts when it
    /// cannot map another): beyond that this fails with [`Error::TooManyLiveBuffers`].
    ///
    /// While libcpg creates the file it sets the process umask to 077 (and restores
    /// it): allocations are serialized so that the umask always comes back, but a file
    /// another thread creates during those microseconds gets owner-only permissions.
    pub fn alloc_buffer(&self, size: usize) -> Result<ZeroCopyBuffer<'_>> {
        self.link().usable(Operation::ZeroCopyAlloc)?;
        let max = self.max_message_size()? as usize;
        if size > max {
            return Err(Error::MessageTooBig { len: size, max });
        }
        let slot = BufferSlot::reserve(self.link().buffers()).ok_or(Error::TooManyLiveBuffers {
            max: crate::MAX_LIVE_BUFFERS,
        })?;
        self.check_not_hung_up(Operation::ZeroCopyAlloc)?;
        // cpg_zcb_alloc has a 4.4 KiB frame without a stack probe.
        crate::stack::ensure(Operation::ZeroCopyAlloc, crate::stack::CALL_STACK)?;
        let mut raw: *mut c_void = std::ptr::null_mut();
        let rc = {
            let _request = self.link().request(Operation::ZeroCopyAlloc)?;
            // It creates a handle-table entry and changes the umask: see `process`.
            let _serialized = crate::process::library_lock();
            // SAFETY: the handle is live for as long as `self` is borrowed; `raw` is a
            // valid out pointer. `size` is at most the atomic message size, so
            // libcpg's mapping size (size plus two small headers) cannot overflow. It is
            // the only request in flight; the handle-table lock is held and the stack
            // has room.
            unsafe { sys::cpg_zcb_alloc(self.as_raw(), size, &mut raw) }
        };
        self.link().check(Operation::ZeroCopyAlloc, rc)?;
        let Some(ptr) = NonNull::new(raw.cast::<u8>()) else {
            // A malloc-based libcpg may hand out NULL for a failed (or zero-sized)
            // allocation while reporting success: there is nothing to free.
            return Err(Error::Cs {
                op: Operation::ZeroCopyAlloc,
                code: CsError::NoMemory,
            });
        };
        // SAFETY: libcpg returned a writable block of at least `size` bytes at `ptr`
        // that nothing else uses until it is freed.
        unsafe { zero_fill(ptr, size) };
        Ok(ZeroCopyBuffer {
            conn: self,
            ptr,
            len: size,
            _slot: slot,
            freed: false,
        })
    }

    /// Fails with the lost-daemon error (and remembers it) when the connection's
    /// socket reports a hang-up: the daemon has closed it. One `poll` with no wait.
    fn check_not_hung_up(&self, op: Operation) -> Result<()> {
        let Some(fd) = self.descriptor() else {
            return Ok(());
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call; no wait.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return self.link().check(op, sys::CS_ERR_LIBRARY);
        }
        Ok(())
    }
}

impl<'a> ZeroCopyBuffer<'a> {
    /// Size of the buffer in bytes, as requested.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// The connection the buffer belongs to (and is sent and freed with).
    pub fn connection(&self) -> &'a ConnectionRef {
        self.conn
    }

    /// Sends the first `len` bytes of the buffer to every group the connection joined,
    /// in agreed order (`cpg_zcb_mcast_joined`).
    ///
    /// Fails with [`Error::MessageTooBig`] before libcpg is called when `len` is larger
    /// than the buffer or than [`max_message_size`](ConnectionRef::max_message_size).
    /// Back-pressure shows as a retryable error ([`Error::is_retryable`]); the buffer is
    /// unchanged and can be sent again.
    pub fn send_prefix(&self, len: usize) -> Result<()> {
        self.send_prefix_with(Guarantee::Agreed, len)
    }

    /// Sends the whole buffer, like [`send_prefix`](Self::send_prefix) with its
    /// [`capacity`](Self::capacity).
    pub fn send_all(&self) -> Result<()> {
        self.send_prefix(self.len)
    }

    /// Sends the first `len` bytes with an explicit delivery [`Guarantee`].
    pub fn send_prefix_with(&self, guarantee: Guarantee, len: usize) -> Result<()> {
        let link = self.conn.link();
        let _request = link.request(Operation::ZeroCopySend)?;
        // A send from a handle that is not in a group is dropped by the daemon.
        link.check_joined()?;
        // libcpg checks neither bound against the buffer: the daemon would multicast
        // whatever follows the mapping.
        if len > self.len {
            return Err(Error::MessageTooBig { len, max: self.len });
        }
        let max = self.conn.max_message_size()? as usize;
        if len > max {
            return Err(Error::MessageTooBig { len, max });
        }
        // SAFETY: the only request in flight (the request guard); the handle is live
        // (borrowed for 'a); `ptr` came from cpg_zcb_alloc on
        // this handle and is not freed yet; `len` is within the buffer. libcpg writes
        // only its own header in front of `ptr` (memory no Rust reference covers) and
        // reads `len` bytes from `ptr`.
        let rc = unsafe {
            sys::cpg_zcb_mcast_joined(
                self.conn.as_raw(),
                guarantee.to_raw(),
                self.ptr.as_ptr().cast::<c_void>(),
                len,
            )
        };
        link.check(Operation::ZeroCopySend, rc)
    }

    /// Frees the buffer now (`cpg_zcb_free`), reporting a failure that dropping it would
    /// ignore. Either way the buffer is gone: it is never freed twice.
    ///
    /// When the daemon is lost, libcpg cannot unregister the buffer and keeps its
    /// memory mapped until the process exits.
    pub fn free(mut self) -> Result<()> {
        self.free_once()
    }

    /// Frees the buffer unless that was done already.
    fn free_once(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.freed, true) {
            return Ok(());
        }
        let link = self.conn.link();
        if link.forked() {
            // The mapping and its registration belong to the parent's connection:
            // unregistering from the child would remove the parent's buffer.
            return Err(Error::Forked);
        }
        let rc = {
            // No other request beside it, even on a lost connection.
            let _request = link.exclusive();
            // It destroys a handle-table entry: see `process`.
            let _serialized = crate::process::library_lock();
            // SAFETY: `ptr` came from cpg_zcb_alloc on this live handle and is freed
            // once (`freed` was false), never used afterwards; no other request is in
            // flight (the request guard; the handle itself cannot be finalized while
            // this buffer borrows it); the handle-table lock is held; cpg_zcb_free's
            // frame is small.
            unsafe { sys::cpg_zcb_free(self.conn.as_raw(), self.ptr.as_ptr().cast()) }
        };
        link.check(Operation::ZeroCopyFree, rc)
    }
}

impl Deref for ZeroCopyBuffer<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialized bytes (zeroed at allocation) that
        // stay valid until the buffer is freed, which needs `self` by value.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for ZeroCopyBuffer<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference to the
        // bytes (libcpg and the daemon only read them, during `send`, which borrows
        // `self`).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for ZeroCopyBuffer<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for ZeroCopyBuffer<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for ZeroCopyBuffer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZeroCopyBuffer")
            .field("ptr", &self.ptr)
            .field("capacity", &self.len)
            .finish()
    }
}

impl Drop for ZeroCopyBuffer<'_> {
    fn drop(&mut self) {
        let _ = self.free_once();
    }
}

/// Zeroes a block libcpg handed out, so that every byte the buffer's `&[u8]` shows is
/// initialized: corosync 3.1.7 maps a new shared-memory file (zeroed by the kernel), but
/// a malloc-based libcpg (after 3.1.10) hands out uninitialized memory.
///
/// # Safety
/// `ptr` must be writable for `size` bytes, and nothing else may use them meanwhile.
unsafe fn zero_fill(ptr: NonNull<u8>, size: usize) {
    // SAFETY: per the contract.
    unsafe { ptr.as_ptr().write_bytes(0, size) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The zeroing a malloc-based libcpg needs: libcpg 3.1.7's buffers are zero already,
    /// so the integration tests cannot see it; here the block is dirty first.
    #[test]
    fn a_dirty_block_from_libcpg_is_handed_out_zeroed() {
        let mut block = vec![0xAAu8; 4096];
        let ptr = NonNull::new(block.as_mut_ptr()).unwrap();
        // SAFETY: the vector's 4096 bytes are writable and used by nothing else.
        unsafe { zero_fill(ptr, block.len()) };
        assert!(block.iter().all(|&b| b == 0));
    }
}
