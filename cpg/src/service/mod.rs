//! The shared core of the handles of corosync's services other than CPG (quorum;
//! votequorum, cmap and cfg build on it the same way). A service module is thin: it
//! declares its library ([`Library`]), registers its trampolines, and maps its calls
//! and events to types; everything else is here.
//!
//! # What the core does
//!
//! - [`ServiceHandle<L>`] owns one handle of library `L`: `connect` reserves one of
//!   the library's [`MAX_HANDLES`](crate::MAX_HANDLES) slots (each library has a libqb
//!   handle table of its own, which must not move: see [`crate::process`]), runs the
//!   service's initialize under the process-wide library lock with 64 KiB of stack
//!   checked (libqb's connect frames), reads the descriptor, checks the daemon's uid
//!   (`SO_PEERCRED`). Drop (or `close`) finalizes exactly once, under the lock, on a
//!   helper thread when the stack is short; in a child of `fork` it only frees Rust's
//!   memory.
//! - Before every call, `usable` refuses a handle from before a `fork`
//!   ([`Error::Forked`](crate::Error::Forked)), one whose daemon was lost (the
//!   remembered `CS_ERR_LIBRARY`, without a round trip) and a poisoned one
//!   ([`Error::Poisoned`](crate::Error::Poisoned)). `call` runs a request with a small
//!   frame; `call_with_stack` one with a large frame (measured on corosync 3.1.7:
//!   `corosync_cfg_get_node_addrs` has a 1 MiB frame, like every dispatch).
//! - `dispatch` (all [`DispatchMode`](crate::DispatchMode)s, `Blocking` driven from
//!   Rust), `dispatch_at_most`, `dispatch_timeout`: [`DISPATCH_STACK`](crate::DISPATCH_STACK)
//!   checked first (`quorum_dispatch`, `votequorum_dispatch`, `cmap_dispatch` and
//!   `corosync_cfg_dispatch` each keep a 1 MiB buffer on their stack in 3.1.7: frames
//!   of 1,048,608 to 1,048,696 bytes plus saved registers), re-entry refused
//!   ([`Error::ReentrantDispatch`](crate::Error::ReentrantDispatch)), a callback's
//!   panic re-raised once C has returned.
//! - Callbacks ([`dispatch`]): the state is a `Box<State<C>>` owned by the handle; the
//!   dispatch marks (service, raw handle, state) in a thread-local, and every
//!   trampoline goes through [`dispatch::deliver`], which finds the state there,
//!   catches a panic, stores it and poisons the handle (git2's `wrap`). Callbacks are
//!   `Send + 'static` and the handles `!Sync`, so a callback cannot hold its own
//!   handle: it can neither dispatch nor drop it (a reference smuggled through a
//!   thread-local meets `ReentrantDispatch`).
//! - Async (feature `tokio`, [`stream`]): `ServiceStream<H, E>` owns the handle in an
//!   `AsyncFd` (deregistered before the finalize), and an [`stream::EventQueue`] that
//!   the service's callbacks push owned events into; the stream dispatches one event
//!   at a time until nothing is pending, then clears readiness.
//!
//! # What a new service implements
//!
//! 1. An [`Operation`](crate::Operation) for each C call (with its C name and
//!    [`Service`](crate::Service)), and operation-aware hints in `error.rs` where a code
//!    means something particular for that call.
//! 2. A zero-sized type implementing [`Library`]: its `Service`, its initialize,
//!    finalize, fd_get and dispatch operations, a `static HandleSlots` of its own, and
//!    the three C calls.
//! 3. `extern "C"` trampolines, generic over the callbacks type `C`, that borrow the
//!    event's arrays ([`dispatch::borrow_c_array`]) and call
//!    `deliver::<TheLibrary, C>(handle, |callbacks| ...)`; and an initialize closure,
//!    passed to `ServiceHandle::connect`, that registers them (the state pointer it
//!    receives can go to the library's context, but the trampolines do not need it).
//! 4. The public handle: a struct around `ServiceHandle<TheLibrary>` with the service's
//!    calls (through `call`), `dispatch*` and `close` forwarded, `AsFd`; a callbacks
//!    trait with a closure builder; owned events and an async handle over
//!    `ServiceStream` whose callbacks push them.

pub(crate) mod dispatch;
mod handle;
#[cfg(feature = "tokio")]
pub(crate) mod stream;
// The `CS_TRACK_*` flags of the tracking services (quorum, votequorum).
#[cfg(feature = "quorum")]
mod track;

use corosync_sys as sys;

use crate::error::{Operation, Service};
use crate::process::HandleSlots;

pub(crate) use handle::ServiceHandle;
#[cfg(feature = "quorum")]
pub use track::Track;

/// One corosync client library, as the core drives it. Every handle type of these
/// libraries (`quorum_handle_t`, `votequorum_handle_t`, `cmap_handle_t`,
/// `corosync_cfg_handle_t`) is a `u64`.
pub(crate) trait Library: 'static {
    /// The service, for errors and to tell the libraries' handles apart.
    const SERVICE: Service;
    /// The operations of the calls the core makes.
    const INITIALIZE: Operation;
    const FINALIZE: Operation;
    const FD_GET: Operation;
    const DISPATCH: Operation;

    /// The count of this library's open handles (a `static` of the service's own).
    fn slots() -> &'static HandleSlots;

    /// The library's finalize.
    ///
    /// # Safety
    /// `raw` is a live handle of this library, finalized once; the library lock is
    /// held; the stack has [`CALL_STACK`](crate::stack::CALL_STACK) of room.
    unsafe fn finalize(raw: u64) -> sys::cs_error_t;

    /// The library's fd_get.
    ///
    /// # Safety
    /// `raw` is a live handle of this library; `fd` is a valid out pointer.
    unsafe fn fd_get(raw: u64, fd: *mut std::ffi::c_int) -> sys::cs_error_t;

    /// The library's dispatch.
    ///
    /// # Safety
    /// `raw` is a live handle of this library, not being dispatched elsewhere; the
    /// stack has [`DISPATCH_STACK`](crate::DISPATCH_STACK) of room; the dispatch scope
    /// names it on this thread.
    unsafe fn dispatch(raw: u64, flags: sys::cs_dispatch_flags_t) -> sys::cs_error_t;
}
