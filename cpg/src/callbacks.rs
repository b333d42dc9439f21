//! Callbacks: the [`Callbacks`] trait, the closure front end, and the `extern "C"`
//! trampolines libcpg calls from inside `cpg_dispatch`.
//!
//! The callback state lives in one heap allocation ([`State`]) owned by the
//! [`Handle`](crate::Handle) and registered as libcpg's context pointer, never in a
//! global table. While a handle dispatches, a per-thread slot names it and its state,
//! so the trampolines need not call `cpg_context_get` (which locks libcpg's handle
//! table) for every event; they fall back to it for any other handle. Every trampoline catches panics,
//! stores the payload, and stops delivering; `dispatch` re-raises it once C returns.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use corosync_sys as sys;

use crate::connection::Connection;
use crate::link::Link;
use crate::name::GroupName;
use crate::types::{Address, ConfigChange, Message, RingId, TotemChange};

/// What a handle does with events. Every method has an empty default.
///
/// The methods run on the thread that calls [`Handle::dispatch`](crate::Handle::dispatch),
/// inside libcpg. They get a [`Connection`] to send, join, leave or query membership
/// with; they cannot dispatch, drop or close the handle they run in (the handle is
/// borrowed by `dispatch` for as long as they run). A panic is caught before it reaches
/// C and re-raised by `dispatch`.
///
/// For closures, see [`Handle::builder`](crate::Handle::builder).
///
/// A callback cannot reach the handle that runs it: callbacks are `Send + 'static`, so
/// they cannot borrow it, and a handle is not `Sync`, so no reference to it can be sent
/// into one:
///
/// ```compile_fail
/// # fn f(handle: cpg::Handle) {
/// let builder = cpg::Handle::builder().on_deliver(|_, _| {
///     let _ = handle.dispatch(cpg::DispatchMode::All); // borrowed: not 'static
/// });
/// # }
/// ```
///
/// ```compile_fail
/// # fn f(handle: cpg::Handle) {
/// let shared = std::sync::Arc::new(handle);
/// let inner = shared.clone();
/// // Arc<Handle> is not Send, because Handle is not Sync.
/// let builder = cpg::Handle::builder().on_deliver(move |_, _| drop(inner.clone()));
/// # }
/// ```
pub trait Callbacks: Send + 'static {
    /// A message was delivered to a joined group. The data is borrowed from libcpg's
    /// receive buffer: copy what you keep.
    fn deliver(&mut self, cpg: &Connection, message: Message<'_>) {
        let _ = (cpg, message);
    }

    /// The membership of a joined group changed (including this process's own join).
    fn confchg(&mut self, cpg: &Connection, change: ConfigChange<'_>) {
        let _ = (cpg, change);
    }

    /// The cluster's node membership (totem ring) changed.
    fn totem_confchg(&mut self, cpg: &Connection, change: TotemChange<'_>) {
        let _ = (cpg, change);
    }
}

/// Header of the callback state, shared by the trampolines and `dispatch`.
///
/// Only touched on the dispatching thread: inside `dispatch` (between C calls) and by
/// the trampolines that C calls from `dispatch`.
pub(crate) struct Header {
    /// Set while `cpg_dispatch` runs: a nested dispatch of the same handle is refused.
    pub(crate) dispatching: Cell<bool>,
    /// Callbacks run during the current `cpg_dispatch` call.
    pub(crate) callbacks_run: Cell<usize>,
    /// The payload of a callback panic, waiting for `dispatch` to re-raise it.
    pub(crate) panic: Cell<Option<Box<dyn Any + Send + 'static>>>,
    /// A callback panicked: the handle delivers nothing more.
    pub(crate) poisoned: Cell<bool>,
    /// The handle's link (set right after initialization, before any dispatch).
    pub(crate) link: Cell<*const Link>,
}

/// The allocation behind libcpg's context pointer. `repr(C)` so that a pointer to the
/// state is also a pointer to its header, whatever `C` is.
#[repr(C)]
pub(crate) struct State<C> {
    pub(crate) header: Header,
    callbacks: UnsafeCell<C>,
}

impl<C: Callbacks> State<C> {
    pub(crate) fn new(callbacks: C) -> Box<State<C>> {
        Box::new(State {
            header: Header {
                dispatching: Cell::new(false),
                callbacks_run: Cell::new(0),
                panic: Cell::new(None),
                poisoned: Cell::new(false),
                link: Cell::new(std::ptr::null()),
            },
            callbacks: UnsafeCell::new(callbacks),
        })
    }

    /// Frees a state made by [`State::new`] and leaked with `Box::into_raw`.
    ///
    /// # Safety
    /// `header` must come from `Box::into_raw` of a `Box<State<C>>` (this `C`), and no
    /// C call that may run the trampolines can happen any more.
    pub(crate) unsafe fn free(header: *mut Header) {
        // SAFETY: per the contract, the pointer is the Box's (repr(C): header first).
        drop(unsafe { Box::from_raw(header.cast::<State<C>>()) });
    }

    /// The model data to register: all three trampolines, always (libcpg before 3.1.10
    /// calls a NULL deliver pointer for fragmented messages if none is set).
    pub(crate) fn model(flags: u32) -> sys::cpg_model_v1_data_t {
        sys::cpg_model_v1_data_t {
            model: sys::CPG_MODEL_V1,
            cpg_deliver_fn: Some(deliver_trampoline::<C>),
            cpg_confchg_fn: Some(confchg_trampoline::<C>),
            cpg_totem_confchg_fn: Some(totem_trampoline::<C>),
            flags,
        }
    }
}

thread_local! {
    /// The handle this thread is dispatching right now, and its state.
    ///
    /// The state is registered as libcpg's context pointer, but `cpg_context_get`
    /// takes libcpg's handle-table lock on every event (about a third of a delivered
    /// message's cost on the client), so [`DispatchScope`] also leaves it here for the
    /// duration of `cpg_dispatch`. A trampoline uses it only when the handle matches,
    /// and asks libcpg otherwise.
    static DISPATCHING: Cell<(sys::cpg_handle_t, *mut Header)> =
        const { Cell::new((0, std::ptr::null_mut())) };
}

/// Marks `handle` as being dispatched on this thread until dropped, restoring the
/// previous mark (a callback may dispatch another handle).
pub(crate) struct DispatchScope {
    previous: (sys::cpg_handle_t, *mut Header),
}

impl DispatchScope {
    /// Marks `handle`, whose callback state starts with `header`, as dispatching.
    pub(crate) fn enter(handle: sys::cpg_handle_t, header: NonNull<Header>) -> DispatchScope {
        DispatchScope {
            previous: DISPATCHING.replace((handle, header.as_ptr())),
        }
    }
}

impl Drop for DispatchScope {
    fn drop(&mut self) {
        DISPATCHING.set(self.previous);
    }
}

/// Runs `f` with the callbacks of `handle`, catching a panic. Nothing runs once a
/// callback has panicked.
///
/// # Safety
/// Must only be called by a trampoline, i.e. from inside `cpg_dispatch` on `handle`,
/// whose context pointer is a live `State<C>`.
#[inline(always)]
unsafe fn with_callbacks<C: Callbacks>(
    handle: sys::cpg_handle_t,
    f: impl FnOnce(&mut C, &Connection),
) {
    let (current, current_state) = DISPATCHING.get();
    let context: *mut c_void = if current == handle && !current_state.is_null() {
        current_state.cast()
    } else {
        let mut context: *mut c_void = std::ptr::null_mut();
        // SAFETY: `handle` is the live handle being dispatched; `context` is a valid out
        // pointer.
        let rc = unsafe { sys::cpg_context_get(handle, &mut context) };
        if rc != sys::CS_OK || context.is_null() {
            return;
        }
        context
    };
    // SAFETY: `context` is the `State<C>` of `handle`: the context pointer set at
    // initialization, or the same pointer left by the `DispatchScope` of the dispatch of
    // this very handle on this thread (these trampolines, monomorphized for `C`, are
    // registered only for handles whose state is a `State<C>`). It is freed only after
    // `cpg_finalize`, which cannot happen during dispatch (dispatch borrows the handle).
    // The header is only read through shared references.
    let state = unsafe { &*context.cast::<State<C>>() };
    let header = &state.header;
    if header.poisoned.get() {
        return;
    }
    let Some(link) = NonNull::new(header.link.get().cast_mut()) else {
        return;
    };
    header.callbacks_run.set(header.callbacks_run.get() + 1);
    // The link outlives the dispatch (the handle holds it until after finalize).
    let cpg = Connection::borrowed(link);
    // SAFETY: trampolines run only inside `dispatch`, which refuses to nest on the same
    // handle, and the handle is !Sync; so this is the only live reference to the
    // callbacks.
    let callbacks = unsafe { &mut *state.callbacks.get() };
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(callbacks, &cpg))) {
        header.poisoned.set(true);
        header.panic.set(Some(payload));
    }
}

/// Reads a C array of `T` as a slice, tolerating a NULL pointer for an empty list.
///
/// # Safety
/// `ptr` must point to `len` valid `T`s for `'a`, or `len` must be 0.
unsafe fn c_slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: per the contract.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

extern "C" fn deliver_trampoline<C: Callbacks>(
    handle: sys::cpg_handle_t,
    group_name: *const sys::cpg_name,
    nodeid: u32,
    pid: u32,
    msg: *mut c_void,
    msg_len: usize,
) {
    if group_name.is_null() {
        return;
    }
    // SAFETY: libcpg passes the group name and the message buffer (on dispatch's stack
    // or a reassembly buffer) valid for the duration of this call; the borrows below
    // do not outlive it. We are inside cpg_dispatch on `handle`.
    unsafe {
        let group = GroupName::from_raw_ref(&*group_name);
        let data = c_slice(msg.cast::<u8>().cast_const(), msg_len);
        with_callbacks::<C>(handle, |cb, cpg| {
            cb.deliver(
                cpg,
                Message {
                    group,
                    nodeid,
                    pid,
                    data,
                },
            )
        });
    }
}

extern "C" fn confchg_trampoline<C: Callbacks>(
    handle: sys::cpg_handle_t,
    group_name: *const sys::cpg_name,
    member_list: *const sys::cpg_address,
    member_list_entries: usize,
    left_list: *const sys::cpg_address,
    left_list_entries: usize,
    joined_list: *const sys::cpg_address,
    joined_list_entries: usize,
) {
    if group_name.is_null() {
        return;
    }
    // SAFETY: libcpg passes the name and the three lists valid for this call; the
    // borrows do not outlive it. We are inside cpg_dispatch on `handle`.
    unsafe {
        let change = ConfigChange {
            group: GroupName::from_raw_ref(&*group_name),
            members: Address::slice(member_list, member_list_entries),
            left: Address::slice(left_list, left_list_entries),
            joined: Address::slice(joined_list, joined_list_entries),
        };
        with_callbacks::<C>(handle, |cb, cpg| cb.confchg(cpg, change));
    }
}

extern "C" fn totem_trampoline<C: Callbacks>(
    handle: sys::cpg_handle_t,
    ring_id: sys::cpg_ring_id,
    member_list_entries: u32,
    member_list: *const u32,
) {
    // SAFETY: libcpg passes the node list valid for this call; the borrow does not
    // outlive it. We are inside cpg_dispatch on `handle`.
    unsafe {
        let change = TotemChange {
            ring_id: RingId {
                nodeid: ring_id.nodeid,
                seq: ring_id.seq,
            },
            members: c_slice(member_list, member_list_entries as usize),
        };
        with_callbacks::<C>(handle, |cb, cpg| cb.totem_confchg(cpg, change));
    }
}

/// Placeholder for a callback that was not set on a [`Builder`](crate::Builder).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unset;

/// A deliver callback of a [`Builder`](crate::Builder): a closure, or [`Unset`].
pub trait OnDeliver: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, cpg: &Connection, message: Message<'_>);
}

/// A confchg callback of a [`Builder`](crate::Builder): a closure, or [`Unset`].
pub trait OnConfchg: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, cpg: &Connection, change: ConfigChange<'_>);
}

/// A totem confchg callback of a [`Builder`](crate::Builder): a closure, or [`Unset`].
pub trait OnTotemConfchg: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, cpg: &Connection, change: TotemChange<'_>);
}

impl OnDeliver for Unset {
    fn call(&mut self, _: &Connection, _: Message<'_>) {}
}

impl OnConfchg for Unset {
    fn call(&mut self, _: &Connection, _: ConfigChange<'_>) {}
}

impl OnTotemConfchg for Unset {
    fn call(&mut self, _: &Connection, _: TotemChange<'_>) {}
}

impl<F: FnMut(&Connection, Message<'_>) + Send + 'static> OnDeliver for F {
    #[inline]
    fn call(&mut self, cpg: &Connection, message: Message<'_>) {
        self(cpg, message)
    }
}

impl<F: FnMut(&Connection, ConfigChange<'_>) + Send + 'static> OnConfchg for F {
    #[inline]
    fn call(&mut self, cpg: &Connection, change: ConfigChange<'_>) {
        self(cpg, change)
    }
}

impl<F: FnMut(&Connection, TotemChange<'_>) + Send + 'static> OnTotemConfchg for F {
    #[inline]
    fn call(&mut self, cpg: &Connection, change: TotemChange<'_>) {
        self(cpg, change)
    }
}

/// The three closures of a [`Builder`](crate::Builder), as [`Callbacks`].
#[derive(Debug, Default)]
pub struct Closures<D, C, T> {
    pub(crate) deliver: D,
    pub(crate) confchg: C,
    pub(crate) totem: T,
}

impl<D: OnDeliver, C: OnConfchg, T: OnTotemConfchg> Callbacks for Closures<D, C, T> {
    #[inline]
    fn deliver(&mut self, cpg: &Connection, message: Message<'_>) {
        self.deliver.call(cpg, message)
    }

    #[inline]
    fn confchg(&mut self, cpg: &Connection, change: ConfigChange<'_>) {
        self.confchg.call(cpg, change)
    }

    #[inline]
    fn totem_confchg(&mut self, cpg: &Connection, change: TotemChange<'_>) {
        self.totem.call(cpg, change)
    }
}
