//! The state of one libcpg connection that every thread using it shares: the raw
//! handle, what the daemon knows of it (joined group, lost), the lock that keeps two
//! requests off libqb's request channel at once, and the progress signal senders wait
//! on under back-pressure.
//!
//! A [`Handle`](crate::Handle) owns its link through an `Arc`; its
//! [`ConnectionRef`](crate::ConnectionRef) views and every [`Sender`](crate::Sender) reach the
//! same one. Only `cpg_dispatch` runs outside the request lock: libcpg reads events on
//! its own libqb channel (the event ring), separate from the request/response channel
//! that join, leave, send, membership, iteration and zero-copy calls use, so one thread
//! may dispatch while another sends (corosync's own benchmark does exactly that, and
//! the `sender` tests stress it). Two requests at once are not safe: they would
//! interleave on the request channel.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::Duration;

use corosync_sys as sys;

use crate::error::{CsError, Error, Operation, Result};
use crate::name::GroupName;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Link {
    /// The libcpg handle; finalized only by the owning `Handle`, after `requests` has
    /// been closed.
    pub(crate) raw: sys::cpg_handle_t,
    /// libcpg's descriptor (open until finalize).
    pub(crate) fd: std::os::fd::RawFd,
    /// The fork generation the handle was made in ([`crate::process::generation`]).
    generation: u32,
    /// The group the handle joined (set once: a connection holds one group).
    joined: OnceLock<GroupName>,
    /// The handle left its group: corosync never answers a later join on it.
    left: AtomicBool,
    /// A call reported `CS_ERR_LIBRARY`: the daemon is gone and the handle is dead.
    lost: AtomicBool,
    /// A callback panicked: the handle left its group and refuses every request.
    poisoned: AtomicBool,
    /// Set (for good) once a `Sender` exists: from then on every request takes
    /// `requests`. Before that only the owning thread can make requests, so they need
    /// no lock. Set and read for the lock decision on the owning thread only.
    shared: AtomicBool,
    /// Serializes requests once the link is shared; `false` once the handle is closed
    /// (set under the lock before `cpg_finalize`, so no request can follow).
    requests: Mutex<bool>,
    /// The handle was closed: `requests` holds `false`. Set under that lock, read
    /// without it (a waiting async sender must not block its worker on the lock, which
    /// a fragmented send holds for as long as libcpg retries its fragments).
    closed: AtomicBool,
    /// Signalled at each event a dispatch delivers, for senders waiting out
    /// back-pressure.
    progress: Progress,
    /// Signalled when a request ends while async senders wait for the request lock.
    unlocked: Progress,
    /// Zero-copy buffers of this handle holding one of the process's slots.
    buffers: AtomicUsize,
}

/// A request may go to libcpg while this lives (see [`Link::request`]).
pub(crate) struct RequestGuard<'a> {
    lock: Option<MutexGuard<'a, bool>>,
    link: &'a Link,
}

impl RequestGuard<'_> {
    /// For a call made while holding this guard: it must be `link`'s own (the lock is
    /// per connection; the guard of another would let two requests meet in libcpg),
    /// and `link` must still be usable for `op`.
    #[inline]
    pub(crate) fn check_for(&self, link: &Link, op: Operation) -> Result<()> {
        assert!(
            std::ptr::eq(self.link, link),
            "cpg: a request guard used for another connection"
        );
        link.usable(op)
    }
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        if self.lock.take().is_some() {
            // After the unlock: async senders waiting for the lock try again.
            self.link.unlocked.signal_waiters();
        }
    }
}

impl Link {
    pub(crate) fn new(raw: sys::cpg_handle_t, fd: std::os::fd::RawFd, generation: u32) -> Link {
        Link {
            raw,
            fd,
            generation,
            joined: OnceLock::new(),
            left: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            shared: AtomicBool::new(false),
            requests: Mutex::new(true),
            closed: AtomicBool::new(false),
            progress: Progress::default(),
            unlocked: Progress::default(),
            buffers: AtomicUsize::new(0),
        }
    }

    /// Whether the process has forked since the handle was made.
    #[inline]
    pub(crate) fn forked(&self) -> bool {
        crate::process::forked_since(self.generation)
    }

    /// Fails before C is called when the handle cannot be used: it was made before
    /// this process forked ([`Error::Forked`]), an earlier call found the daemon gone
    /// (the same `CS_ERR_LIBRARY` error again, without another round trip, and without
    /// creating resources that nobody would clean up), a callback panicked
    /// ([`Error::Poisoned`]), or the link was closed while its handle lives on
    /// ([`Error::Closed`], see `Handle::close_in_place`). Four loads.
    #[inline]
    pub(crate) fn usable(&self, op: Operation) -> Result<()> {
        if self.forked() {
            return Err(Error::Forked);
        }
        if self.lost.load(Ordering::Relaxed) {
            return Err(Error::Cs {
                op,
                code: CsError::Library,
            });
        }
        if self.poisoned.load(Ordering::Relaxed) {
            return Err(Error::Poisoned);
        }
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Marks the handle poisoned (a callback panicked): every later request fails with
    /// [`Error::Poisoned`], and waiting senders wake. (A waker that panics here is
    /// ignored: the dispatch is already re-raising the callback's panic.)
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Relaxed);
        let _ = self.progress.signal();
    }

    /// [`usable`](Self::usable), then the right to send a request to libcpg: the
    /// request lock once the link is shared, and [`Error::Closed`] once the handle is
    /// closed.
    #[inline]
    pub(crate) fn request(&self, op: Operation) -> Result<RequestGuard<'_>> {
        self.usable(op)?;
        if !self.shared.load(Ordering::Relaxed) {
            return Ok(RequestGuard {
                lock: None,
                link: self,
            });
        }
        self.lock_request()
    }

    /// The request lock, whether or not the link is shared (senders always take it).
    pub(crate) fn lock_request(&self) -> Result<RequestGuard<'_>> {
        // A panic while holding it comes from Rust code between C calls, which leaves
        // nothing half-done in C.
        let open = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        self.guard(open)
    }

    /// The request lock if it is free now; `Ok(None)` while another request holds it
    /// (then wait on [`unlocked`](Self::unlocked), reading its epoch before this call).
    #[cfg(feature = "tokio")]
    pub(crate) fn try_lock_request(&self) -> Result<Option<RequestGuard<'_>>> {
        match self.requests.try_lock() {
            Ok(open) => self.guard(open).map(Some),
            Err(std::sync::TryLockError::Poisoned(e)) => self.guard(e.into_inner()).map(Some),
            Err(std::sync::TryLockError::WouldBlock) => Ok(None),
        }
    }

    fn guard<'a>(&'a self, open: MutexGuard<'a, bool>) -> Result<RequestGuard<'a>> {
        if !*open {
            return Err(Error::Closed);
        }
        Ok(RequestGuard {
            lock: Some(open),
            link: self,
        })
    }

    /// The request lock if the link is shared, whatever its state: for calls that
    /// release resources (zero-copy free, iteration finalize), which must run even on
    /// a lost or closing connection but never beside another request.
    pub(crate) fn exclusive(&self) -> RequestGuard<'_> {
        if !self.shared.load(Ordering::Relaxed) {
            return RequestGuard {
                lock: None,
                link: self,
            };
        }
        RequestGuard {
            lock: Some(self.requests.lock().unwrap_or_else(|e| e.into_inner())),
            link: self,
        }
    }

    /// Whether a `Sender` was made (then requests take the lock).
    #[cfg(feature = "tokio")]
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Relaxed)
    }

    /// Marks the link shared (a `Sender` is being made). Called on the owning thread.
    pub(crate) fn share(&self) {
        self.shared.store(true, Ordering::Relaxed);
    }

    /// Closes the link: waits for a request in flight, refuses all later ones, wakes
    /// waiting senders. After this, `cpg_finalize` may run.
    ///
    /// Returns the panic of a waker that panicked when woken (every waker is woken
    /// regardless): the caller re-raises it once it has released the handle.
    #[must_use]
    pub(crate) fn close(&self) -> Option<Panic> {
        {
            let mut open = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            *open = false;
            self.closed.store(true, Ordering::Release);
        }
        let progress = self.progress.signal();
        let unlocked = self.unlocked.signal();
        progress.or(unlocked)
    }

    /// Whether the handle was closed (or dropped); always true in a child of fork,
    /// where the lock must not be touched (another thread of the parent may have held
    /// it when the process was copied).
    pub(crate) fn is_closed(&self) -> bool {
        self.forked() || self.closed.load(Ordering::Acquire)
    }

    /// Converts a libcpg result, remembering a lost daemon.
    #[inline]
    pub(crate) fn check(&self, op: Operation, rc: sys::cs_error_t) -> Result<()> {
        if rc == sys::CS_OK {
            return Ok(());
        }
        self.failed(op, rc)
    }

    #[cold]
    #[inline(never)]
    fn failed(&self, op: Operation, rc: sys::cs_error_t) -> Result<()> {
        if rc == sys::CS_ERR_LIBRARY {
            self.lost.store(true, Ordering::Relaxed);
        }
        Error::check(op, rc)
    }

    /// The joined group, until the handle leaves.
    pub(crate) fn joined(&self) -> Option<&GroupName> {
        self.joined
            .get()
            .filter(|_| !self.left.load(Ordering::Relaxed))
    }

    /// Records a successful join.
    pub(crate) fn set_joined(&self, group: GroupName) {
        let _ = self.joined.set(group);
    }

    /// Whether the handle has left its group.
    pub(crate) fn has_left(&self) -> bool {
        self.left.load(Ordering::Relaxed)
    }

    /// Records a successful leave.
    pub(crate) fn set_left(&self) {
        self.left.store(true, Ordering::Relaxed);
    }

    /// Fails with [`Error::NotJoined`] unless the handle is in a group: corosync
    /// (3.1.7) answers a send from a connection that never joined, or has left, with
    /// success and drops the message.
    #[inline]
    pub(crate) fn check_joined(&self) -> Result<()> {
        if self.joined.get().is_none() || self.left.load(Ordering::Relaxed) {
            return Err(Error::NotJoined);
        }
        Ok(())
    }

    /// Raises the progress signal whether or not anyone is counted as waiting, so that
    /// a thread between its last look at some state and its wait still sees it move
    /// (an offloaded async send whose future was dropped). A waker's panic is ignored,
    /// as in [`poison`](Self::poison).
    #[cfg(feature = "tokio")]
    pub(crate) fn raise_progress(&self) {
        let _ = self.progress.signal();
    }

    /// Tells waiting senders that a dispatch delivered events. One load when nobody
    /// waits. A waker that panics has its panic re-raised here, after every other
    /// waiter was woken: the dispatch catches it like a callback's.
    #[inline]
    pub(crate) fn dispatched_events(&self) {
        self.progress.signal_waiters();
    }

    /// The count of this handle's live zero-copy buffers (see `process::BufferSlot`).
    pub(crate) fn buffers(&self) -> &AtomicUsize {
        &self.buffers
    }

    /// The progress signal.
    pub(crate) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The signal of a request ending, for async senders waiting for the request lock.
    #[cfg(feature = "tokio")]
    pub(crate) fn unlocked(&self) -> &Progress {
        &self.unlocked
    }
}

/// The payload of a caught panic.
pub(crate) type Panic = Box<dyn std::any::Any + Send + 'static>;

/// A signal that threads wait on (condition variable) and tasks poll (wakers): events
/// delivered on the dispatching thread, or a request ending.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Senders currently waiting (blocking or async).
    waiters: AtomicUsize,
    /// How many times the signal was raised.
    epoch: AtomicU64,
    /// Ids for async waiters (see [`Progress::start_waiting`]).
    #[cfg(feature = "tokio")]
    next_id: AtomicU64,
    /// The waker of each async waiter that registered one, by its id: one entry per
    /// waiter whatever waker its task polls it with.
    wakers: Mutex<Vec<(u64, Waker)>>,
    changed: Condvar,
}

impl Progress {
    /// Raises the signal if anyone waits (one load otherwise), re-raising the panic of
    /// a waker that panicked after every waiter was woken (unless this thread is
    /// already unwinding, as when a request guard is dropped by a panic: then it is
    /// dropped, since a second panic would abort).
    #[inline]
    fn signal_waiters(&self) {
        if self.waiters.load(Ordering::Relaxed) > 0 {
            if let Some(panic) = self.signal() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }

    /// Raises the signal: wakes every waiter. Wakers run outside the lock, each under
    /// `catch_unwind` (they are the runtime's code, called here from inside
    /// `cpg_dispatch` or from a drop); the first panic is returned.
    ///
    /// The emptied list goes back for the next registrations when none came in
    /// meanwhile, so that a sender waiting out back-pressure again and again does not
    /// allocate a new list for every wait.
    fn signal(&self) -> Option<Panic> {
        let mut wakers = {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            self.epoch.fetch_add(1, Ordering::Release);
            self.changed.notify_all();
            if wakers.is_empty() {
                return None;
            }
            std::mem::take(&mut *wakers)
        };
        let mut panic = None;
        for (_, waker) in wakers.drain(..) {
            if let Err(payload) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()))
            {
                panic.get_or_insert(payload);
            }
        }
        let mut registered = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if registered.capacity() == 0 {
            *registered = wakers;
        }
        panic
    }

    /// The current epoch: compare with a later one to see whether progress happened.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Blocks until progress after `seen` is signalled, or `timeout` passes.
    pub(crate) fn wait(&self, seen: u64, timeout: Duration) {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if self.epoch() == seen {
            let _ = self
                .changed
                .wait_timeout_while(wakers, timeout, |_| self.epoch() == seen);
        }
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts an async waiter as waiting (until [`Progress::unregister`]); its id.
    #[cfg(feature = "tokio")]
    pub(crate) fn start_waiting(&self) -> u64 {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers `waker` as waiter `id`'s (replacing the one it registered before)
    /// unless progress after `seen` already happened; returns whether it did.
    #[cfg(feature = "tokio")]
    pub(crate) fn register(&self, seen: u64, id: u64, waker: &Waker) -> bool {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if self.epoch() != seen {
            return true;
        }
        match wakers.iter_mut().find(|(i, _)| *i == id) {
            Some((_, registered)) => registered.clone_from(waker),
            None => wakers.push((id, waker.clone())),
        }
        false
    }

    /// Ends waiter `id`'s wait, removing its waker if it `registered` one.
    #[cfg(feature = "tokio")]
    pub(crate) fn unregister(&self, id: u64, registered: bool) {
        if registered {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            wakers.retain(|(i, _)| *i != id);
        }
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// How many senders wait (tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }

    /// How many wakers are registered (tests).
    #[cfg(all(test, feature = "tokio"))]
    pub(crate) fn registered(&self) -> usize {
        self.wakers.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    fn link() -> Link {
        Link::new(0, -1, crate::process::generation())
    }

    #[test]
    fn a_closed_link_refuses_requests_and_wakes_waiters() {
        let link = Arc::new(link());
        link.share();
        assert!(link.request(Operation::Send).is_ok());
        let waiter = {
            let link = link.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                link.progress()
                    .wait(link.progress().epoch(), Duration::from_secs(30));
                start.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(link.close().is_none());
        assert!(waiter.join().unwrap() < Duration::from_secs(10));
        assert!(matches!(link.request(Operation::Send), Err(Error::Closed)));
        assert!(link.is_closed());
    }

    /// After a callback panicked, the link refuses every request with `Poisoned` (the
    /// handle's events are no longer read), and senders waiting out back-pressure wake
    /// at once to be told so.
    #[test]
    fn a_poisoned_link_refuses_requests_and_wakes_waiting_senders() {
        let link = Arc::new(link());
        link.share();
        let seen = link.progress().epoch();
        let waiter = {
            let link = link.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                link.progress().wait(seen, Duration::from_secs(60));
                start.elapsed()
            })
        };
        while link.progress().waiting() == 0 {
            std::thread::yield_now();
        }
        link.poison();
        assert!(waiter.join().unwrap() < Duration::from_secs(30));
        assert_eq!(link.usable(Operation::Send), Err(Error::Poisoned));
        assert!(matches!(
            link.request(Operation::Join),
            Err(Error::Poisoned)
        ));
        assert!(!link.is_closed(), "poisoned, not closed");
    }

    #[test]
    fn progress_wakes_a_blocked_waiter_and_times_out_otherwise() {
        let link = Arc::new(link());
        let start = Instant::now();
        link.progress()
            .wait(link.progress().epoch(), Duration::from_millis(30));
        assert!(start.elapsed() >= Duration::from_millis(30));
        let seen = link.progress().epoch();
        let waiter = {
            let link = link.clone();
            std::thread::spawn(move || {
                link.progress().wait(seen, Duration::from_secs(30));
                link.progress().epoch()
            })
        };
        while link.progress().waiting() == 0 {
            std::thread::yield_now();
        }
        link.dispatched_events();
        assert!(waiter.join().unwrap() > seen);
    }

    /// A sender waiting out back-pressure again and again registers into the same
    /// list: raising the signal empties it and gives it back, woken, instead of leaving
    /// a new (unallocated) list that the next registration must allocate.
    #[cfg(feature = "tokio")]
    #[test]
    fn raising_the_signal_keeps_the_waker_list_for_the_next_wait() {
        use std::sync::atomic::AtomicUsize;
        use std::task::{Wake, Waker};
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let link = link();
        let progress = link.progress();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let buffer = |p: &Progress| {
            let wakers = p.wakers.lock().unwrap();
            (wakers.len(), wakers.capacity(), wakers.as_ptr())
        };
        let id = progress.start_waiting();
        assert!(!progress.register(progress.epoch(), id, &waker));
        let (_, capacity, list) = buffer(progress);
        for round in 1..=3 {
            link.dispatched_events();
            assert_eq!(
                count.0.load(Ordering::Relaxed),
                round,
                "woken once per signal"
            );
            assert_eq!(buffer(progress), (0, capacity, list), "the list went back");
            assert!(!progress.register(progress.epoch(), id, &waker));
            assert_eq!(buffer(progress), (1, capacity, list), "registered into it");
        }
        progress.unregister(id, true);
        assert_eq!(progress.registered(), 0);
    }

    #[test]
    fn the_lost_daemon_is_remembered() {
        let link = link();
        assert!(link.usable(Operation::Send).is_ok());
        let err = link
            .check(Operation::Send, sys::CS_ERR_LIBRARY)
            .unwrap_err();
        assert!(err.is_daemon_lost());
        let again = link.usable(Operation::Join).unwrap_err();
        assert_eq!(
            again,
            Error::Cs {
                op: Operation::Join,
                code: CsError::Library
            }
        );
        // Other errors are not remembered.
        let link2 = self::link();
        let _ = link2.check(Operation::Send, sys::CS_ERR_TRY_AGAIN);
        assert!(link2.usable(Operation::Send).is_ok());
    }

    #[test]
    fn membership_state() {
        let link = link();
        assert_eq!(link.check_joined(), Err(Error::NotJoined));
        let g = GroupName::new("g").unwrap();
        link.set_joined(g);
        assert_eq!(link.joined(), Some(&g));
        assert!(link.check_joined().is_ok());
        link.set_left();
        assert!(link.has_left());
        assert_eq!(link.joined(), None);
        assert_eq!(link.check_joined(), Err(Error::NotJoined));
    }
}
