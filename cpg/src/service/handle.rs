//! [`ServiceHandle`]: the one owner of a service library's handle. Everything that
//! is the same for every corosync service lives here: initialization and
//! finalization on the library lock, the per-library handle cap, finalize exactly
//! once, fork detection, a lost daemon remembered, the stack checks, dispatch with
//! panics re-raised and re-entry refused, the descriptor for polling.

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::panic::resume_unwind;
use std::ptr::NonNull;
use std::time::Duration;

use corosync_sys as sys;

use crate::error::{CsError, Error, Operation, OsError, Result};
use crate::stack::{CALL_STACK, DISPATCH_STACK};
use crate::types::{DispatchMode, Dispatched};

use super::dispatch::{DispatchScope, Header, State};
use super::Library;

/// An open handle of library `L`, with its callback state. Dropping it finalizes the
/// handle (once), then frees the callbacks.
///
/// `Send`, not `Sync`: one thread at a time uses it, because dispatch runs the
/// callbacks (`FnMut`) on the calling thread.
pub(crate) struct ServiceHandle<L: Library> {
    raw: u64,
    /// The library's descriptor (open until finalize).
    fd: RawFd,
    /// The fork generation the handle was made in ([`crate::process::generation`]).
    generation: u32,
    /// A call reported `CS_ERR_LIBRARY`: the daemon is gone and the handle is dead.
    lost: Cell<bool>,
    state: NonNull<Header>,
    free_state: unsafe fn(*mut Header),
    library: PhantomData<fn() -> L>,
}

// SAFETY: the libraries' handles may be used from any thread, one at a time (the
// handle is not Sync: `Cell`s); the callback state is `Send` (callbacks are
// `Send + 'static`) and only touched by the thread that uses the handle.
unsafe impl<L: Library> Send for ServiceHandle<L> {}

impl<L: Library> fmt::Debug for ServiceHandle<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("service", &L::SERVICE)
            .field("raw", &format_args!("{:#x}", self.raw))
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl<L: Library> ServiceHandle<L> {
    /// Connects: reserves one of the library's [`MAX_HANDLES`](crate::MAX_HANDLES)
    /// slots, boxes `callbacks`, runs `initialize` under the library lock with the
    /// stack room it needs, reads the descriptor, and checks the daemon's uid
    /// (`daemon_uid`, `None` for no check).
    ///
    /// `initialize` gets the state pointer (to pass as the library's context where it
    /// has one) and returns the library's result and the new handle. It must register
    /// trampolines that reach the callbacks only through
    /// [`deliver::<L, C>`](super::dispatch::deliver), and must not call back into Rust
    /// itself (it runs under the lock).
    pub(crate) fn connect<C: Send + 'static>(
        callbacks: C,
        daemon_uid: Option<u32>,
        initialize: impl FnOnce(*mut c_void) -> (sys::cs_error_t, u64),
    ) -> Result<ServiceHandle<L>> {
        // libqb's connect has 12 KiB frames (no stack probes).
        crate::stack::ensure(L::INITIALIZE, CALL_STACK)?;
        // Released in `finalize_and_free`, or below when initialization fails.
        L::slots().reserve().ok_or(Error::TooManyServiceHandles {
            service: L::SERVICE,
            max: crate::process::MAX_HANDLES,
        })?;
        let state = Box::into_raw(State::new(callbacks));
        let (rc, raw) = {
            // Concurrent initializations corrupt libqb's handle tables: see `process`.
            let _serialized = crate::process::library_lock();
            initialize(state.cast())
        };
        // SAFETY: `state` came from Box::into_raw just above (repr(C): header first).
        let header = unsafe { NonNull::new_unchecked(state.cast::<Header>()) };
        if let Err(e) = Error::check(L::INITIALIZE, rc) {
            L::slots().release();
            // SAFETY: initialization failed, so the library holds no reference to the
            // state and never calls the trampolines for it. (Last: the callbacks'
            // destructors are the application's and may panic.)
            unsafe { State::<C>::free(header.as_ptr()) };
            return Err(e);
        }
        let mut fd: c_int = -1;
        // SAFETY: `raw` is the live handle just made; `fd` is a valid out pointer. The
        // call only looks the handle up (no table change, a small frame).
        let rc = unsafe { L::fd_get(raw, &mut fd) };
        let handle = ServiceHandle {
            raw,
            fd,
            generation: crate::process::generation(),
            lost: Cell::new(false),
            state: header,
            free_state: State::<C>::free,
            library: PhantomData,
        };
        // On error, dropping `handle` finalizes and frees.
        handle.check(L::FD_GET, rc)?;
        if let Some(expected) = daemon_uid {
            crate::fd::check_peer(handle.fd, expected)?;
        }
        Ok(handle)
    }

    fn header(&self) -> &Header {
        // SAFETY: the state lives until `finalize_and_free`, which needs `self` by value
        // or in Drop, so it outlives this borrow.
        unsafe { self.state.as_ref() }
    }

    /// Whether the process has forked since the handle was made.
    fn forked(&self) -> bool {
        crate::process::forked_since(self.generation)
    }

    /// Fails before C is called when the handle cannot be used: it was made before
    /// this process forked ([`Error::Forked`]), an earlier call found the daemon gone
    /// (the same `CS_ERR_LIBRARY` again, without another round trip), or a callback
    /// panicked ([`Error::Poisoned`]).
    pub(crate) fn usable(&self, op: Operation) -> Result<()> {
        if self.forked() {
            return Err(Error::Forked);
        }
        if self.lost.get() {
            return Err(Error::Cs {
                op,
                code: CsError::Library,
            });
        }
        if self.header().poisoned.get() {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Converts a library result, remembering a lost daemon.
    pub(crate) fn check(&self, op: Operation, rc: sys::cs_error_t) -> Result<()> {
        if rc == sys::CS_ERR_LIBRARY {
            self.lost.set(true);
        }
        Error::check(op, rc)
    }

    /// Runs a request `f(raw)` whose C frames fit in a page (a request/response round
    /// trip on libqb's request channel): [`usable`](Self::usable) first, the result
    /// converted after. Calls with larger frames use
    /// [`call_with_stack`](Self::call_with_stack).
    pub(crate) fn call(&self, op: Operation, f: impl FnOnce(u64) -> sys::cs_error_t) -> Result<()> {
        self.usable(op)?;
        let rc = f(self.raw);
        self.check(op, rc)
    }

    /// [`call`](Self::call) for a call whose C frames need `needed` bytes of stack
    /// (measured on the library: for example `corosync_cfg_get_node_addrs` keeps a
    /// 1 MiB buffer on its stack, like the dispatch calls):
    /// [`Error::StackTooSmall`] on a thread with less room.
    #[allow(dead_code)] // for the services whose calls have large frames
    pub(crate) fn call_with_stack(
        &self,
        op: Operation,
        needed: usize,
        f: impl FnOnce(u64) -> sys::cs_error_t,
    ) -> Result<()> {
        self.usable(op)?;
        crate::stack::ensure(op, needed)?;
        let rc = f(self.raw);
        self.check(op, rc)
    }

    /// Delivers pending events to the callbacks, waiting or not according to `mode`;
    /// [`DispatchMode::Blocking`] is a loop of [`DispatchMode::One`] driven from Rust,
    /// so that a panicking callback ends it.
    pub(crate) fn dispatch(&self, mode: DispatchMode) -> Result<Dispatched> {
        match mode {
            DispatchMode::Blocking => loop {
                self.dispatch_one_call(DispatchMode::One)?;
            },
            _ => self.dispatch_one_call(mode),
        }
    }

    /// One call of the library's dispatch in `mode` (never `Blocking`), with the checks
    /// before it and a callback's panic re-raised after it.
    fn dispatch_one_call(&self, mode: DispatchMode) -> Result<Dispatched> {
        self.usable(L::DISPATCH)?;
        // The dispatch calls keep a 1 MiB buffer on their stack, without stack probes.
        crate::stack::ensure(L::DISPATCH, DISPATCH_STACK)?;
        let header = self.header();
        if header.dispatching.replace(true) {
            return Err(Error::ReentrantDispatch);
        }
        header.callbacks_run.set(0);
        let scope = DispatchScope::enter::<L>(self.raw, self.state);
        // SAFETY: the handle is live (finalize needs it by value); the trampolines find
        // their state through the dispatch scope, and the state outlives this call. The
        // stack has room for the dispatch frame (checked above).
        let rc = unsafe { L::dispatch(self.raw, mode.to_raw()) };
        drop(scope);
        header.dispatching.set(false);
        if let Some(payload) = header.panic.take() {
            // `poisoned` is set: every later call fails with `Error::Poisoned`.
            resume_unwind(payload);
        }
        let ran = header.callbacks_run.get();
        match rc {
            sys::CS_OK if ran == 0 && mode == DispatchMode::All => Ok(Dispatched::NothingPending),
            sys::CS_OK => Ok(Dispatched::Callbacks(ran)),
            sys::CS_ERR_TRY_AGAIN if mode == DispatchMode::OneNonblocking => {
                Ok(Dispatched::NothingPending)
            }
            rc => self
                .check(L::DISPATCH, rc)
                .map(|()| Dispatched::Callbacks(ran)),
        }
    }

    /// Delivers pending events one at a time ([`DispatchMode::OneNonblocking`]), at
    /// most `max_events` (at least 1).
    pub(crate) fn dispatch_at_most(&self, max_events: usize) -> Result<Dispatched> {
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
    /// ([`DispatchMode::All`]); [`Dispatched::NothingPending`] on timeout. A handle that
    /// cannot dispatch says so at once, not after the timeout.
    pub(crate) fn dispatch_timeout(&self, timeout: Duration) -> Result<Dispatched> {
        self.usable(L::DISPATCH)?;
        crate::stack::ensure(L::DISPATCH, DISPATCH_STACK)?;
        if !crate::fd::wait_readable(self.fd, timeout)? {
            return Ok(Dispatched::NothingPending);
        }
        self.dispatch(DispatchMode::All)
    }

    /// Finalizes the handle and frees the callbacks, reporting a failure of the
    /// library's finalize (dropping does the same and ignores it).
    pub(crate) fn close(self) -> Result<()> {
        let mut this = ManuallyDrop::new(self);
        this.finalize_and_free()
    }

    fn finalize_and_free(&mut self) -> Result<()> {
        let raw = self.raw;
        let result = if self.forked() {
            // In a child of fork the connection is the parent's: finalizing it would
            // end the parent's session. Only Rust's memory is released below (no lock
            // is touched: a thread of the parent may have held one).
            Err(Error::Forked)
        } else if crate::stack::remaining().is_some_and(|left| left < CALL_STACK) {
            // libqb's close has 12 KiB frames without stack probes: finalize on a
            // short-lived thread with room (a drop cannot fail or be refused).
            std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(scope, move || finalize::<L>(raw))
                    .map_or_else(
                        |e| {
                            Err(Error::Os {
                                op: L::FINALIZE,
                                source: OsError(e.raw_os_error().unwrap_or(0)),
                            })
                        },
                        |thread| thread.join().unwrap_or(Ok(())),
                    )
            })
        } else {
            finalize::<L>(raw)
        };
        // The slot is given back only if the finalize ran: otherwise the entry stays in
        // the library's table (a child of fork keeps the parent's; a finalize thread
        // that could not start leaves it), and counting it keeps that table within the
        // size it never grows past.
        let finalize_ran = !matches!(result, Err(Error::Forked) | Err(Error::Os { .. }));
        if finalize_ran {
            L::slots().release();
        }
        // Last: the callbacks are the application's values, whose destructors may
        // panic; everything the handle holds of the process is given back before.
        // SAFETY: after the finalize (or in a child of fork, where this process never
        // dispatches the handle again) no trampoline can run for this handle, so the
        // state made in `connect` can be freed, once (this is the handle's drop or
        // close, never both).
        unsafe { (self.free_state)(self.state.as_ptr()) };
        result
    }
}

/// Finalizes `raw` under the library lock.
fn finalize<L: Library>(raw: u64) -> Result<()> {
    let _serialized = crate::process::library_lock();
    // SAFETY: `raw` is live and finalized exactly once (from either `close` or `Drop`,
    // never both); the library lock is held; the caller made sure the stack has room.
    let rc = unsafe { L::finalize(raw) };
    Error::check(L::FINALIZE, rc)
}

impl<L: Library> Drop for ServiceHandle<L> {
    fn drop(&mut self) {
        let _ = self.finalize_and_free();
    }
}

impl<L: Library> AsFd for ServiceHandle<L> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is open from initialization until finalize, which happens after
        // every borrow of `self` has ended.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl<L: Library> AsRawFd for ServiceHandle<L> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}
