//! libcpg's process-global state, which every handle shares whatever thread owns it:
//! libqb's handle tables, the process umask, and the process itself across `fork`.
//!
//! - **Handle tables.** libqb's handle databases (behind `cpg_initialize`,
//!   `cpg_finalize`, `cpg_iteration_initialize`, `cpg_iteration_finalize` and the
//!   zero-copy calls) are not safe for concurrent creation and destruction, even of
//!   *different* handles: four threads iterating on their own handles failed with
//!   `CS_ERR_BAD_HANDLE` within seconds and crashed in `cpg_finalize` under
//!   `MALLOC_PERTURB_`. Every call that creates or destroys a table entry runs under
//!   [`library_lock`]. The hot path (send, dispatch) only looks entries up and never
//!   takes it.
//! - **umask.** `cpg_zcb_alloc` sets the process umask to 077 around `mkstemp` and
//!   restores it; two concurrent calls can leave it at 077. The allocation runs under
//!   [`library_lock`] too. For the few microseconds of one allocation the umask is
//!   still 077 for the whole process: a file another thread creates right then gets
//!   mode 0600 (or less). That window belongs to libcpg and cannot be closed here.
//! - **fork.** A handle copied into a child by `fork` shares the parent's connection to
//!   the daemon (the same sockets and shared memory) and libcpg's bookkeeping of the
//!   parent's pid. Using it from the child would corrupt the parent's session, so a
//!   `pthread_atfork` child handler bumps [`generation`], and every call on a handle
//!   made in another generation fails with [`Error::Forked`](crate::Error::Forked)
//!   without reaching C; dropping it in the child releases only Rust's memory (and
//!   touches no lock another thread of the parent may have held).
//!
//!   A child of a multithreaded process may still hang in its *first own* libcpg call
//!   if another thread of the parent was inside a libcpg call when it forked: libqb
//!   guards its handle tables with locks of its own, which the copy inherits held (as
//!   it may this crate's lock). POSIX allows such a child only async-signal-safe calls
//!   until it `exec`s; make new handles in a child only of a single-threaded parent,
//!   or after `exec`. (Taking this crate's lock around `fork` did not close the window:
//!   measured, children still hung about once in 25 forks.)

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

/// Serializes the libcpg calls that create or destroy entries in libqb's
/// process-global handle tables (see the module docs).
static LIBRARY_LOCK: Mutex<()> = Mutex::new(());

/// Takes the handle-table lock. Never held while callbacks run, and no call made under
/// it calls back into Rust, so it cannot be taken twice by one thread.
pub(crate) fn library_lock() -> MutexGuard<'static, ()> {
    // A panic while holding it can only come from Rust code between C calls, which
    // leaves nothing half-done in C: the data behind the lock is `()`.
    LIBRARY_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Incremented in every child of `fork` (by the handler registered in
/// [`generation`]).
static GENERATION: AtomicU32 = AtomicU32::new(0);

static REGISTER_ATFORK: Once = Once::new();

extern "C" fn in_child_after_fork() {
    // Async-signal-safe: one atomic add.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The current fork generation: the value a new handle records. Registers the
/// `pthread_atfork` child handler on first use (before any handle exists, so no child
/// can be forked with a handle but without the handler).
pub(crate) fn generation() -> u32 {
    REGISTER_ATFORK.call_once(|| {
        // SAFETY: registers a child handler that only does an atomic add (it cannot
        // unwind); no prepare or parent handler. The function is `extern "C"` and
        // lives for the program.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child_after_fork)) };
        // Fails only with ENOMEM; then fork detection is unavailable, which the first
        // handle cannot tolerate silently.
        assert_eq!(rc, 0, "pthread_atfork failed: {rc}");
    });
    GENERATION.load(Ordering::Relaxed)
}

/// Whether the process has forked since a handle recorded `created`.
#[inline]
pub(crate) fn forked_since(created: u32) -> bool {
    GENERATION.load(Ordering::Relaxed) != created
}

/// The most handles (connections) this process keeps open at once, per corosync
/// library: 32 CPG handles, and separately 32 of each other service's (quorum, ...).
///
/// Each client library (libcpg, libquorum, ...) keeps its handles in a libqb handle
/// table of its own (`DECLARE_HDB_DATABASE` in each of corosync's `lib/*.c`). Every
/// call reads its library's table without a lock (send, dispatch, ...), while creating
/// a handle can grow the table, and growing it moves the table (`realloc` of libqb's
/// bin array, created for 32 entries) at the 48th, 64th, ... entry that is in use at
/// once: a lookup on another thread would then read freed memory. The crate cannot
/// lock lookups (a dispatch may block for as long as no event comes), so it keeps each
/// table below its first move: 32 open handles per library and process (a CPG
/// connection is in one group, so that is 32 groups).
pub const MAX_HANDLES: usize = 32;

/// The count of one library's open handles, capped at [`MAX_HANDLES`] (one static per
/// library: see [`MAX_HANDLES`] for why the cap is per library).
#[derive(Debug)]
pub(crate) struct HandleSlots {
    live: AtomicUsize,
}

impl HandleSlots {
    pub(crate) const fn new() -> HandleSlots {
        HandleSlots {
            live: AtomicUsize::new(0),
        }
    }

    /// Counts one more open handle, or `None` when [`MAX_HANDLES`] are open. Pair with
    /// [`release`](Self::release).
    pub(crate) fn reserve(&self) -> Option<()> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_HANDLES).then_some(n + 1)
            })
            .ok()
            .map(|_| ())
    }

    /// Counts one open handle less.
    pub(crate) fn release(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// libcpg's handles.
static CPG_HANDLES: HandleSlots = HandleSlots::new();

/// Counts one more open CPG handle, or `None` when [`MAX_HANDLES`] are open. Pair with
/// [`release_handle`].
pub(crate) fn reserve_handle() -> Option<()> {
    CPG_HANDLES.reserve()
}

/// Counts one open CPG handle less.
pub(crate) fn release_handle() {
    CPG_HANDLES.release();
}

/// The most zero-copy buffers this process keeps alive at once.
///
/// Each live buffer is a shared-memory file mapped in this process *and* in the
/// daemon. corosync 3.1.7 aborts on an assertion when it cannot map another one: at
/// about 65,400 buffers (the kernel's `vm.max_map_count`, 65,530 by default, counts
/// the daemon's other mappings too) one client takes the node's whole cluster stack
/// down. 1,024 per process leaves that limit to many processes at once, and is far
/// more than a sender needs in flight (a buffer can be reused after its send).
pub const MAX_LIVE_BUFFERS: usize = 1024;

static LIVE_BUFFERS: AtomicUsize = AtomicUsize::new(0);

/// A reservation of one of the [`MAX_LIVE_BUFFERS`] slots, counted in its handle's
/// own count of buffers too, released on drop. A buffer that is forgotten
/// (`mem::forget`) never drops its slot: the handle gives its remaining count back when
/// it is finalized ([`release_forgotten_buffers`]), when the daemon drops its mappings
/// too.
#[derive(Debug)]
pub(crate) struct BufferSlot<'a>(&'a AtomicUsize);

impl<'a> BufferSlot<'a> {
    /// Reserves a slot for a buffer of the handle whose count of buffers is
    /// `handle_buffers`, or `None` when [`MAX_LIVE_BUFFERS`] are alive.
    pub(crate) fn reserve(handle_buffers: &'a AtomicUsize) -> Option<BufferSlot<'a>> {
        LIVE_BUFFERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LIVE_BUFFERS).then_some(n + 1)
            })
            .ok()?;
        handle_buffers.fetch_add(1, Ordering::AcqRel);
        Some(BufferSlot(handle_buffers))
    }
}

impl Drop for BufferSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        LIVE_BUFFERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Gives back the slots of a handle's buffers (counted in `handle_buffers`) that were
/// forgotten instead of dropped; called when the handle is finalized (no buffer of it
/// can be alive then: they borrow the handle).
pub(crate) fn release_forgotten_buffers(handle_buffers: &AtomicUsize) {
    let forgotten = handle_buffers.swap(0, Ordering::AcqRel);
    LIVE_BUFFERS.fetch_sub(forgotten, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_slots_stop_at_the_cap_and_come_back() {
        // Other unit tests do not reserve slots, so this test owns the counter.
        let handle = AtomicUsize::new(0);
        let slots: Vec<_> = std::iter::from_fn(|| BufferSlot::reserve(&handle))
            .take(MAX_LIVE_BUFFERS + 5)
            .collect();
        assert_eq!(slots.len(), MAX_LIVE_BUFFERS);
        assert!(BufferSlot::reserve(&handle).is_none());
        drop(slots);
        assert!(BufferSlot::reserve(&handle).is_some());
        // Forgotten slots come back when the handle is finalized.
        for _ in 0..MAX_LIVE_BUFFERS {
            std::mem::forget(BufferSlot::reserve(&handle).unwrap());
        }
        assert!(BufferSlot::reserve(&handle).is_none());
        release_forgotten_buffers(&handle);
        assert!(BufferSlot::reserve(&handle).is_some());
    }

    #[test]
    fn handle_slots_stop_at_the_cap_and_come_back() {
        // A table of its own: the libraries' statics are not touched.
        let slots = HandleSlots::new();
        for _ in 0..MAX_HANDLES {
            assert!(slots.reserve().is_some());
        }
        assert!(slots.reserve().is_none());
        slots.release();
        assert!(slots.reserve().is_some());
        assert!(slots.reserve().is_none());
    }

    #[test]
    fn a_child_of_fork_is_another_generation() {
        let created = generation();
        assert!(!forked_since(created));
        // SAFETY: the child only reads an atomic and calls `_exit`, both
        // async-signal-safe.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = if forked_since(created) { 0 } else { 1 };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked; valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status}"
        );
        assert!(!forked_since(created), "the parent stays in its generation");
    }
}
