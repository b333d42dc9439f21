//! [`Handle`]: owns a connection to the corosync daemon, dispatches its events to the
//! callbacks, and finalizes it.

use std::io::IoSlice;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::panic::resume_unwind;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use corosync_sys as sys;

use crate::callbacks::{Callbacks, Closures, Unset};
use crate::connection::ConnectionRef;
use crate::dispatch::{DispatchScope, Header, State};
use crate::error::{Error, Operation, OsError, Result};
use crate::link::Link;
use crate::options::{Builder, Options};
use crate::retry::Backoff;
use crate::types::{DispatchMode, Dispatched};

/// The most events [`Handle::send_with_retry`] delivers in one pause.
const EVENTS_PER_RETRY_PAUSE: usize = 1024;

/// A connection to the local corosync daemon, with its callbacks.
///
/// Created with [`Handle::new`] (a [`Callbacks`] value) or [`Handle::builder`]
/// (closures). It dereferences to [`ConnectionRef`] for join, leave, send and queries.
/// Events are delivered to the callbacks by [`dispatch`](Handle::dispatch) on the
/// calling thread; the file descriptor ([`AsFd`]) becomes readable when events wait.
///
/// # Reading is not optional
///
/// Dispatch also in a handle that mostly sends: its own messages come back to it, and
/// the daemon keeps every event a client has not read in its own memory, without limit:
/// it never refuses a send for that (corosync 3.1.7: 300,000 sends of 1 KiB from a
/// client that never dispatched were all accepted, and the daemon grew by 370 MB).
/// [`send_with_retry`](Handle::send_with_retry) and the async sends read events while
/// they wait out back-pressure for this reason.
///
/// A client that has fallen further behind than its IPC ring gets the rest in bursts
/// with pauses of about 50 ms between them: the daemon's pacing, not the client's
/// (measured inside `AsyncHandle`'s stream: every long wait was
/// 50.0 to 50.2 ms, with nothing in libcpg's ring and no wake-up pending on the
/// socket). How fast a backlog drains therefore depends on how many pauses it meets
/// (16 KiB messages: 10,000 to 600,000 a second, blocking and async alike).
///
/// Dropping the handle finalizes the connection (the other members see this process
/// leave every group it joined) and then frees the callbacks; [`close`](Handle::close)
/// does the same and reports an error.
///
/// A handle is `Send` but not `Sync`: it can move to another thread, but only one
/// thread at a time may use it, because dispatch runs the `FnMut` callbacks. To send
/// from other threads while this one dispatches, make [`Sender`](crate::Sender)s
/// ([`sender`](ConnectionRef::sender)).
///
/// The thread that dispatches needs [`DISPATCH_STACK`](crate::DISPATCH_STACK) of stack
/// left: libcpg keeps its receive buffer (1 MiB) on the stack of `cpg_dispatch`. The
/// main thread (8 MiB) is fine; give spawned threads
/// `std::thread::Builder::stack_size(4 << 20)` or more. On a smaller stack dispatching
/// fails with [`Error::StackTooSmall`].
///
/// A handle copied into a child by `fork` refuses every call there
/// ([`Error::Forked`]): it shares the parent's connection.
#[derive(Debug)]
pub struct Handle {
    conn: ConnectionRef,
    /// The link, from `Arc::into_raw`; released after finalize.
    link: NonNull<Link>,
    state: NonNull<Header>,
    free_state: unsafe fn(*mut Header),
}

// SAFETY: libcpg handles may be used from any thread (one at a time: Handle is not
// Sync; what other threads share is the `Link`, which is Sync and serializes their
// requests); the callback state is `Send` (Callbacks: Send) and only accessed by the
// thread that dispatches.
unsafe impl Send for Handle {}

impl Handle {
    /// Connects to the local corosync daemon with these callbacks.
    ///
    /// Fails with [`CsError::Library`](crate::CsError::Library) when no daemon is
    /// running, and [`CsError::Access`](crate::CsError::Access) when it refuses this
    /// user.
    pub fn new<C: Callbacks>(callbacks: C) -> Result<Handle> {
        Handle::with_options(callbacks, Options::default())
    }

    /// A builder that takes closures for the callbacks.
    ///
    /// ```no_run
    /// let handle = cpg::Handle::builder()
    ///     .on_deliver(|_cpg, msg| println!("{} bytes from {}", msg.data.len(), msg.sender()))
    ///     .on_confchg(|_cpg, change| println!("{} members", change.members.len()))
    ///     .build()?;
    /// # Ok::<(), cpg::Error>(())
    /// ```
    pub fn builder() -> Builder<Unset, Unset, Unset> {
        Builder::new(Closures::default())
    }

    /// Connects with these callbacks and options.
    pub fn with_options<C: Callbacks>(callbacks: C, options: Options) -> Result<Handle> {
        // libqb's connect has 12 KiB frames (no stack probes).
        crate::stack::ensure(Operation::Initialize, crate::stack::CALL_STACK)?;
        // Released by `finalize_and_free`, or below when initialization fails.
        crate::process::reserve_handle().ok_or(Error::TooManyHandles {
            max: crate::process::MAX_HANDLES,
        })?;
        let flags = if options.initial_totem_conf {
            sys::CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF
        } else {
            0
        };
        let mut model = State::<C>::model(flags);
        let state = Box::into_raw(State::new(callbacks));
        let mut raw: sys::cpg_handle_t = 0;
        let rc = {
            // Concurrent initializations fail (CS_ERR_LIBRARY) and corrupt libqb's
            // handle table: see `process`.
            let _serialized = crate::process::library_lock();
            // SAFETY: valid out pointer; the model data is a cpg_model_v1_data_t whose
            // first field is the model, as libcpg expects for CPG_MODEL_V1, and libcpg
            // copies it; the context is our state, freed only after cpg_finalize. The
            // handle-table lock is held and the stack has room (checked above).
            unsafe {
                sys::cpg_model_initialize(
                    &mut raw,
                    sys::CPG_MODEL_V1,
                    (&mut model as *mut sys::cpg_model_v1_data_t).cast::<sys::cpg_model_data_t>(),
                    state.cast(),
                )
            }
        };
        // SAFETY: `state` came from Box::into_raw just above (repr(C): header first).
        let header = unsafe { NonNull::new_unchecked(state.cast::<Header>()) };
        if let Err(e) = Error::check(Operation::Initialize, rc) {
            crate::process::release_handle();
            // SAFETY: initialization failed, so libcpg holds no reference to the state.
            // (Last: the callbacks' destructors are the application's and may panic.)
            unsafe { State::<C>::free(header.as_ptr()) };
            return Err(e);
        }
        let mut fd: std::ffi::c_int = -1;
        // SAFETY: valid handle and out pointer.
        let rc = unsafe { sys::cpg_fd_get(raw, &mut fd) };
        let link = Arc::new(Link::new(raw, fd, crate::process::generation()));
        // The connection views and senders reach the link through this pointer; the
        // handle releases it after finalize.
        let link =
            NonNull::new(Arc::into_raw(link).cast_mut()).expect("Arc::into_raw is never null");
        // SAFETY: the state is live (just made) and only this thread knows it yet.
        unsafe { header.as_ref() }.link.set(link.as_ptr());
        let handle = Handle {
            conn: ConnectionRef::borrowed(link),
            link,
            state: header,
            free_state: State::<C>::free,
        };
        // On error, dropping `handle` finalizes and frees.
        Error::check(Operation::FdGet, rc)?;
        if let Some(expected) = options.daemon_uid {
            crate::fd::check_peer(handle.link().fd, expected)?;
        }
        Ok(handle)
    }

    fn link(&self) -> &Link {
        self.conn.link()
    }

    fn header(&self) -> &Header {
        // SAFETY: the state lives until `finalize_and_free`, which needs `self` by value
        // or in Drop, so it outlives this borrow.
        unsafe { self.state.as_ref() }
    }

    /// Delivers pending events to the callbacks, waiting or not according to `mode`.
    ///
    /// Returns [`Dispatched::NothingPending`] when a non-blocking mode found nothing,
    /// else [`Dispatched::Callbacks`] with the number of callbacks that ran. A lost daemon
    /// is an error for which [`Error::is_daemon_lost`] holds.
    ///
    /// If a callback panics, delivery stops, the panic resumes here once libcpg has
    /// returned, and the handle is poisoned: events libcpg had already read are
    /// discarded, the handle leaves its group (nobody reads its events any more, and
    /// the daemon would queue them without limit: 100,000 sends to the group of a
    /// member whose callback had panicked grew corosync 3.1.7 from 77 to 201 MB), and
    /// every later dispatch, send (also from its [`Sender`](crate::Sender)s) or other
    /// request fails with [`Error::Poisoned`]; the handle must be replaced (its group
    /// membership is no longer in step with the others').
    ///
    /// Called from one of this handle's own callbacks (possible only through a
    /// thread-local or leaked reference), it fails with [`Error::ReentrantDispatch`].
    #[inline]
    pub fn dispatch(&self, mode: DispatchMode) -> Result<Dispatched> {
        match mode {
            // Driven from Rust, one event at a time, so a panicking callback stops the
            // loop (libcpg's own blocking loop would never return).
            DispatchMode::Blocking => loop {
                self.dispatch_one_call(DispatchMode::One)?;
            },
            _ => self.dispatch_one_call(mode),
        }
    }

    /// One `cpg_dispatch` call in `mode` (never [`DispatchMode::Blocking`], which
    /// `dispatch` drives as a loop of these), with the checks before it and the panic
    /// re-raised after it.
    #[inline]
    fn dispatch_one_call(&self, mode: DispatchMode) -> Result<Dispatched> {
        let header = self.header();
        if header.poisoned.get() {
            return Err(Error::Poisoned);
        }
        let link = self.link();
        link.usable(Operation::Dispatch)?;
        // cpg_dispatch's 1 MiB frame has no stack probe: see `stack`.
        crate::stack::ensure(Operation::Dispatch, crate::stack::DISPATCH_STACK)?;
        if header.dispatching.replace(true) {
            return Err(Error::ReentrantDispatch);
        }
        header.callbacks_run.set(0);
        let scope = DispatchScope::enter(link.raw, self.state);
        // SAFETY: the handle is live; the trampolines find their state through the
        // dispatch scope (or the context pointer), and the state outlives this call (it
        // is freed after finalize, which needs the handle by value). The stack has room
        // for its frame (checked above). Dispatch reads libqb's event channel only, so
        // it may run while a sender's request is in flight (see `link`).
        let rc = unsafe { sys::cpg_dispatch(link.raw, mode.to_raw()) };
        drop(scope);
        header.dispatching.set(false);
        if let Some(payload) = header.panic.take() {
            self.leave_poisoned();
            resume_unwind(payload);
        }
        // Waiting senders were woken by each callback (see `dispatch`).
        let ran = header.callbacks_run.get();
        match rc {
            sys::CS_OK if ran == 0 && mode == DispatchMode::All => Ok(Dispatched::NothingPending),
            sys::CS_OK => Ok(Dispatched::Callbacks(ran)),
            sys::CS_ERR_TRY_AGAIN if mode == DispatchMode::OneNonblocking => {
                Ok(Dispatched::NothingPending)
            }
            rc => link
                .check(Operation::Dispatch, rc)
                .map(|()| Dispatched::Callbacks(ran)),
        }
    }

    /// After a callback panicked: refuse every later request on this connection (its
    /// events are no longer read, so the daemon would queue everything sent to its
    /// group for it, without limit), and leave the group so that the others see this
    /// member go and the daemon stops queueing.
    #[cold]
    fn leave_poisoned(&self) {
        let link = self.link();
        let joined = link.joined().copied();
        link.poison();
        self.leave_refused(joined);
    }

    /// For a handle whose events can no longer be read (its async reactor is gone) and
    /// that cannot be dropped where this is found out: closes the link, so that every
    /// later request (also from senders) fails with [`Error::Closed`] and waiting
    /// senders wake, and leaves the group, so that the others see this member go and
    /// the daemon stops queueing its events. The connection is finalized when the handle
    /// is dropped. Returns the panic of a sender's waker woken by the close, for the
    /// caller to re-raise.
    #[cfg(feature = "tokio")]
    #[cold]
    #[must_use]
    pub(crate) fn close_in_place(&self) -> Option<crate::link::Panic> {
        let link = self.link();
        if link.forked() {
            // The connection is the parent's; every request here fails with `Forked`.
            return None;
        }
        let joined = link.joined().copied();
        let panic = link.close();
        self.leave_refused(joined);
        panic
    }

    /// Leaves `joined` on a link that refuses requests from now on (poisoned or
    /// closed), once no other request is in flight.
    fn leave_refused(&self, joined: Option<crate::name::GroupName>) {
        let link = self.link();
        if let Some(group) = joined {
            let _request = link.exclusive();
            // SAFETY: the handle is live (finalized only when it drops); the only
            // request in flight (the request guard, and the link refuses every other
            // request); libcpg only reads the name, which outlives the call. Best
            // effort: a failure leaves the member to go when the handle is finalized.
            let _ = unsafe { sys::cpg_leave(link.raw, group.as_raw()) };
            link.set_left();
        }
    }

    /// Delivers pending events, one libcpg event at a time
    /// ([`DispatchMode::OneNonblocking`]), stopping when nothing is pending or after
    /// `max_events` events: the bounded form of [`DispatchMode::All`] for event loops
    /// that must not spend unbounded time on one busy handle.
    ///
    /// `max_events` must be at least 1 ([`Error::InvalidArgument`] otherwise).
    pub fn dispatch_at_most(&self, max_events: usize) -> Result<Dispatched> {
        if max_events == 0 {
            return Err(Error::InvalidArgument(
                "dispatch_at_most needs max_events of at least 1",
            ));
        }
        let mut callbacks = 0;
        for read in 0..max_events {
            match self.dispatch_one_call(DispatchMode::OneNonblocking)? {
                Dispatched::Callbacks(n) => callbacks += n,
                Dispatched::NothingPending if read == 0 => return Ok(Dispatched::NothingPending),
                Dispatched::NothingPending => break,
            }
        }
        Ok(Dispatched::Callbacks(callbacks))
    }

    /// Waits up to `timeout` for events, then delivers all pending ones
    /// ([`DispatchMode::All`]). Returns [`Dispatched::NothingPending`] on timeout.
    ///
    /// A lost daemon makes the descriptor readable, so this returns the error promptly
    /// rather than waiting out the timeout. Under a steady inflow the delivery part can
    /// run for long (see [`DispatchMode::All`]); poll the descriptor and use
    /// [`dispatch_at_most`](Self::dispatch_at_most) to bound it.
    pub fn dispatch_timeout(&self, timeout: Duration) -> Result<Dispatched> {
        // A handle that cannot dispatch says so now, not after the timeout.
        if self.header().poisoned.get() {
            return Err(Error::Poisoned);
        }
        self.link().usable(Operation::Dispatch)?;
        crate::stack::ensure(Operation::Dispatch, crate::stack::DISPATCH_STACK)?;
        if !self.wait_readable(timeout)? {
            return Ok(Dispatched::NothingPending);
        }
        self.dispatch(DispatchMode::All)
    }

    /// Waits up to `timeout` until the descriptor is readable; false on timeout or
    /// when a signal interrupted the wait.
    fn wait_readable(&self, timeout: Duration) -> Result<bool> {
        crate::fd::wait_readable(self.link().fd, timeout)
    }

    /// Sends like [`ConnectionRef::send`], retrying on back-pressure with `backoff`
    /// between attempts, and delivering events to this handle's callbacks while it
    /// waits: a sender must dispatch anyway (see
    /// [Reading is not optional](Handle#reading-is-not-optional)), and its pauses are a
    /// good time to.
    ///
    /// A pause waits for events for up to the back-off's current delay and ends as soon
    /// as some arrive (the daemon's queue is then moving); those are delivered, at most
    /// 1,024 per pause, so a steady inflow cannot hold the sender in its pause.
    pub fn send_with_retry(&self, message: &[u8], backoff: &Backoff) -> Result<()> {
        self.send_vectored_with_retry(&[IoSlice::new(message)], backoff)
    }

    /// Vectored [`send_with_retry`](Self::send_with_retry).
    pub fn send_vectored_with_retry(
        &self,
        buffers: &[IoSlice<'_>],
        backoff: &Backoff,
    ) -> Result<()> {
        backoff.run_pausing(
            || self.conn.send_vectored(buffers),
            |delay| {
                if self.header().dispatching.get() {
                    // Called from one of this handle's own callbacks (through a leaked
                    // reference): it cannot dispatch here, so it only waits.
                    std::thread::sleep(delay);
                    return Ok(());
                }
                // Events arriving end the pause early: the daemon's queue is moving.
                if self.wait_readable(delay)? {
                    self.dispatch_at_most(EVENTS_PER_RETRY_PAUSE)?;
                }
                Ok(())
            },
        )
    }

    /// Finalizes the connection and frees the callbacks, reporting a failure of
    /// `cpg_finalize` (dropping the handle does the same and ignores it).
    pub fn close(self) -> Result<()> {
        let mut this = ManuallyDrop::new(self);
        this.finalize_and_free()
    }

    fn finalize_and_free(&mut self) -> Result<()> {
        let link = self.link();
        let raw = link.raw;
        let forked = link.forked();
        // The panic of an async sender's waker woken by the close, re-raised once the
        // handle is released.
        let mut waker_panic = None;
        if !forked {
            // No request of a sender is in flight after this, and none can start. (In a
            // child of fork the lock is not touched: a thread of the parent may have
            // held it; senders there fail with `Forked` before they reach it.)
            waker_panic = link.close();
        }
        let result = if forked {
            // In a child of fork the connection is the parent's: finalizing it would
            // end the parent's session. Only Rust's memory is released below.
            Err(Error::Forked)
        } else if crate::stack::remaining().is_some_and(|left| left < crate::stack::CALL_STACK) {
            // libqb's close has 12 KiB frames without stack probes: finalize on a
            // short-lived thread with room (a drop cannot fail or be refused).
            std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(scope, move || finalize(raw))
                    .map_or_else(
                        |e| {
                            Err(Error::Os {
                                op: Operation::Finalize,
                                source: OsError(e.raw_os_error().unwrap_or(0)),
                            })
                        },
                        |thread| thread.join().unwrap_or(Ok(())),
                    )
            })
        } else {
            finalize(raw)
        };
        // The handle's slot among `MAX_HANDLES` is given back only if `cpg_finalize`
        // ran: otherwise its entry stays in libcpg's table (a child of fork keeps the
        // parent's; a finalize thread that could not start leaves it), and counting
        // it keeps that table within the size it never grows past.
        let finalize_ran = !matches!(
            result,
            Err(Error::Forked)
                | Err(Error::Os {
                    op: Operation::Finalize,
                    ..
                })
        );
        if finalize_ran {
            crate::process::release_handle();
        }
        crate::process::release_forgotten_buffers(self.link().buffers());
        // SAFETY: the pointer came from `Arc::into_raw` in `with_options` and is
        // released once, here; senders hold counts of their own. Nothing below reads
        // the link through `self` (the callback state keeps only a raw pointer to it,
        // which freeing does not read).
        drop(unsafe { Arc::from_raw(self.link.as_ptr().cast_const()) });
        // Last: the callbacks are the application's values, whose destructors may
        // panic; everything the handle holds of the process (its slot among
        // `MAX_HANDLES`, its buffer count, the link) is given back before.
        // SAFETY: after cpg_finalize (or in a child of fork, where this process never
        // dispatches the handle again) no trampoline can run for this handle, so the
        // state made in `with_options` can be freed, once. If the finalize thread
        // could not be started, the handle is leaked in libcpg but never dispatched
        // again either (this is its drop or close).
        unsafe { (self.free_state)(self.state.as_ptr()) };
        if let Some(panic) = waker_panic.filter(|_| !std::thread::panicking()) {
            std::panic::resume_unwind(panic);
        }
        result
    }
}

/// Finalizes `raw` under the handle-table lock.
fn finalize(raw: sys::cpg_handle_t) -> Result<()> {
    let _serialized = crate::process::library_lock();
    // SAFETY: `raw` is live and finalized exactly once (reached from either
    // `Handle::close` or `Drop`, never both); the handle-table lock is held; the caller
    // made sure the stack has room.
    let rc = unsafe { sys::cpg_finalize(raw) };
    Error::check(Operation::Finalize, rc)
}

impl Deref for Handle {
    type Target = ConnectionRef;

    fn deref(&self) -> &ConnectionRef {
        &self.conn
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.finalize_and_free();
    }
}

/// The descriptor is for polling only (register it with `poll`, epoll or a reactor,
/// then [`dispatch`](Handle::dispatch)). It is libqb's socket to the daemon: reading
/// from it (or a duplicate) takes the wake-up bytes that libcpg counts events by, so
/// events stay unread; writing to it or shutting it down breaks the connection. Safe
/// code can do both through `as_fd`, as with any socket it is lent; neither is
/// undefined behaviour, both are bugs.
impl AsFd for Handle {
    /// The descriptor libcpg owns (closed by finalize): readable when events wait.
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is open from initialization until finalize, which happens after
        // every borrow of `self` has ended.
        unsafe { BorrowedFd::borrow_raw(self.link().fd) }
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.link().fd
    }
}
