//! Where C calls back into Rust: the callback state behind libcpg's context pointer
//! ([`State`], [`Header`]: dispatching, poisoned, a caught panic), the per-thread
//! [`DispatchScope`], and the `extern "C"` trampolines that `cpg_dispatch` calls.
//!
//! The callback state lives in one heap allocation owned by the
//! [`Handle`](crate::Handle) and registered as libcpg's context pointer, never in a
//! global table. While a handle dispatches, a per-thread slot names it and its state,
//! so the trampolines need not call `cpg_context_get` (which locks libcpg's handle
//! table) for every event; they fall back to it for any other handle. Every trampoline
//! catches panics, stores the payload, and stops delivering; `dispatch` re-raises it
//! once C returns.

#![deny(clippy::multiple_unsafe_ops_per_block)]

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use corosync_sys as sys;

use crate::callbacks::Callbacks;
use crate::connection::ConnectionRef;
use crate::link::Link;
use crate::name::GroupName;
use crate::types::{Confchg, ListedMember, Message, RingId, TotemConfchg};

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
    f: impl FnOnce(&mut C, &ConnectionRef),
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
    // SAFETY: the link outlives the dispatch (the handle holds it until after
    // finalize), and is only read through shared references.
    let shared_link = unsafe { link.as_ref() };
    let cpg = ConnectionRef::borrowed(link);
    // SAFETY: trampolines run only inside `dispatch`, which refuses to nest on the same
    // handle, and the handle is !Sync; so this is the only live reference to the
    // callbacks.
    let callbacks = unsafe { &mut *state.callbacks.get() };
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| {
        // Senders waiting out back-pressure wake at each event, not when this dispatch
        // call returns: `CS_DISPATCH_ALL` runs for as long as events keep arriving.
        // Their wakers are the async runtime's code: one that panics is caught here,
        // like a callback, and must not unwind into C.
        shared_link.dispatched_events();
        f(callbacks, &cpg)
    })) {
        header.poisoned.set(true);
        header.panic.set(Some(payload));
    }
}

/// Borrows a C array of `len` `T`s as a slice, tolerating a NULL pointer for an empty
/// list (libcpg passes NULL or a dangling pointer with a count of 0).
///
/// The one place where C arrays become slices: message bytes, member lists (cast to
/// `ListedMember`, which is `repr(transparent)` over `cpg_address`), and node ids.
///
/// # Safety
/// Unless `len` is 0, `ptr` must point to `len` initialized `T`s that stay valid and
/// unmodified for `'a`.
unsafe fn borrow_c_array<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: per the contract: non-null, `len` initialized values, valid for 'a.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// Borrows the `cpg_name` libcpg passes to a callback.
///
/// # Safety
/// `name` must be NULL or point to a `cpg_name` valid for `'a`.
unsafe fn borrow_group_name<'a>(name: *const sys::cpg_name) -> Option<&'a GroupName> {
    // SAFETY: per the contract, a non-null pointer is valid for 'a.
    let raw = unsafe { name.as_ref() }?;
    Some(GroupName::from_raw_ref(raw))
}

extern "C" fn deliver_trampoline<C: Callbacks>(
    handle: sys::cpg_handle_t,
    group_name: *const sys::cpg_name,
    nodeid: u32,
    pid: u32,
    msg: *mut c_void,
    msg_len: usize,
) {
    // SAFETY: libcpg passes the group name valid for the duration of this call, and
    // the borrow ends with it.
    let Some(group) = (unsafe { borrow_group_name(group_name) }) else {
        return;
    };
    // SAFETY: libcpg passes `msg_len` bytes at `msg` (on dispatch's stack or in a
    // reassembly buffer) valid for the duration of this call; the borrow ends with it.
    let data = unsafe { borrow_c_array(msg.cast::<u8>().cast_const(), msg_len) };
    let message = Message {
        group,
        nodeid,
        pid,
        data,
    };
    // SAFETY: libcpg calls this trampoline only from inside cpg_dispatch on `handle`,
    // which was registered with a `State<C>`.
    unsafe { with_callbacks::<C>(handle, |cb, cpg| cb.deliver(cpg, message)) };
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
    // SAFETY: libcpg passes the group name valid for the duration of this call, and
    // the borrow ends with it.
    let Some(group) = (unsafe { borrow_group_name(group_name) }) else {
        return;
    };
    // The three lists are `cpg_address` arrays that libcpg keeps valid for this call;
    // `ListedMember` is `repr(transparent)` over `cpg_address`, so the casts keep the layout.
    // SAFETY: `member_list_entries` entries at `member_list`, valid for this call.
    let members =
        unsafe { borrow_c_array(member_list.cast::<ListedMember>(), member_list_entries) };
    // SAFETY: `left_list_entries` entries at `left_list`, valid for this call.
    let left = unsafe { borrow_c_array(left_list.cast::<ListedMember>(), left_list_entries) };
    // SAFETY: `joined_list_entries` entries at `joined_list`, valid for this call.
    let joined = unsafe { borrow_c_array(joined_list.cast::<ListedMember>(), joined_list_entries) };
    let change = Confchg {
        group,
        members,
        left,
        joined,
    };
    // SAFETY: libcpg calls this trampoline only from inside cpg_dispatch on `handle`,
    // which was registered with a `State<C>`.
    unsafe { with_callbacks::<C>(handle, |cb, cpg| cb.confchg(cpg, change)) };
}

extern "C" fn totem_trampoline<C: Callbacks>(
    handle: sys::cpg_handle_t,
    ring_id: sys::cpg_ring_id,
    member_list_entries: u32,
    member_list: *const u32,
) {
    // SAFETY: libcpg passes `member_list_entries` node ids at `member_list`, valid for
    // the duration of this call; the borrow ends with it.
    let members = unsafe { borrow_c_array(member_list, member_list_entries as usize) };
    let change = TotemConfchg {
        ring_id: RingId {
            nodeid: ring_id.nodeid,
            seq: ring_id.seq,
        },
        members,
    };
    // SAFETY: libcpg calls this trampoline only from inside cpg_dispatch on `handle`,
    // which was registered with a `State<C>`.
    unsafe { with_callbacks::<C>(handle, |cb, cpg| cb.totem_confchg(cpg, change)) };
}

#[cfg(test)]
mod tests {
    //! The trampolines called as `cpg_dispatch` calls them, on a made-up handle whose
    //! dispatch scope is entered by hand (no daemon, no libcpg call).

    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::*;

    /// The handle number the tests dispatch.
    const HANDLE: sys::cpg_handle_t = 0x5eed;

    /// Writes what each callback got to a shared log; the first delivery panics when
    /// `panic_first` is set.
    struct Recorder {
        log: Arc<Mutex<Vec<String>>>,
        panic_first: bool,
    }

    impl Callbacks for Recorder {
        fn deliver(&mut self, _cpg: &ConnectionRef, message: Message<'_>) {
            self.log.lock().unwrap().push(format!(
                "deliver {}:{} {:?}",
                message.nodeid,
                message.pid,
                message.data.escape_ascii().to_string()
            ));
            if std::mem::take(&mut self.panic_first) {
                panic!("the first callback panicked");
            }
        }

        fn confchg(&mut self, _cpg: &ConnectionRef, change: Confchg<'_>) {
            let list = |l: &[ListedMember]| -> Vec<String> {
                l.iter()
                    .map(|a| format!("{}:{} {}", a.nodeid(), a.pid(), a.reason()))
                    .collect()
            };
            self.log.lock().unwrap().push(format!(
                "confchg {:?} left {:?} joined {:?}",
                list(change.members),
                list(change.left),
                list(change.joined)
            ));
        }

        fn totem_confchg(&mut self, _cpg: &ConnectionRef, change: TotemConfchg<'_>) {
            self.log.lock().unwrap().push(format!(
                "totem {}.{} {:?}",
                change.ring_id.nodeid, change.ring_id.seq, change.members
            ));
        }
    }

    /// A callback state over a link of its own, and the log its callbacks write.
    struct Fixture {
        state: Box<State<Recorder>>,
        link: Arc<Link>,
        log: Arc<Mutex<Vec<String>>>,
        group: GroupName,
    }

    impl Fixture {
        fn new(panic_first: bool) -> Fixture {
            let log = Arc::new(Mutex::new(Vec::new()));
            let state = State::new(Recorder {
                log: Arc::clone(&log),
                panic_first,
            });
            let link = Arc::new(Link::new(HANDLE, -1, crate::process::generation()));
            state.header.link.set(Arc::as_ptr(&link));
            Fixture {
                state,
                link,
                log,
                group: GroupName::new("g").unwrap(),
            }
        }

        /// Runs `f` as if inside `cpg_dispatch` on [`HANDLE`].
        fn dispatching<R>(&self, f: impl FnOnce() -> R) -> R {
            let _scope = DispatchScope::enter(HANDLE, NonNull::from(&self.state.header));
            f()
        }

        fn deliver(&self, nodeid: u32, pid: u32, data: &[u8]) {
            self.dispatching(|| {
                deliver_trampoline::<Recorder>(
                    HANDLE,
                    self.group.as_raw(),
                    nodeid,
                    pid,
                    data.as_ptr().cast_mut().cast(),
                    data.len(),
                )
            });
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    /// A panicking callback stops delivery for the rest of the `cpg_dispatch` call that
    /// ran it (libcpg goes on calling the trampolines for the events it has read): the
    /// panic waits for `dispatch` to re-raise it, and the handle is poisoned.
    #[test]
    fn after_a_callback_panics_no_other_callback_runs() {
        let f = Fixture::new(true);
        f.deliver(1, 10, b"first");
        f.deliver(1, 10, b"second");
        f.dispatching(|| {
            totem_trampoline::<Recorder>(HANDLE, Default::default(), 0, std::ptr::null())
        });
        assert_eq!(f.log(), vec![r#"deliver 1:10 "first""#.to_string()]);
        let header = &f.state.header;
        assert!(header.poisoned.get());
        assert_eq!(header.callbacks_run.get(), 1);
        let panic = header.panic.take().expect("the panic, kept for dispatch");
        assert_eq!(
            panic.downcast_ref::<&str>().copied(),
            Some("the first callback panicked")
        );
    }

    /// Every event a dispatch delivers wakes the senders that wait out back-pressure
    /// (the daemon's queue drains as messages are delivered), during the dispatch, not
    /// when the pause of their back-off ends.
    #[test]
    fn each_delivered_event_wakes_senders_waiting_out_back_pressure() {
        let f = Fixture::new(false);
        let seen = f.link.progress().epoch();
        let sender = {
            let link = Arc::clone(&f.link);
            std::thread::spawn(move || {
                let start = Instant::now();
                link.progress().wait(seen, Duration::from_secs(60));
                start.elapsed()
            })
        };
        while f.link.progress().waiting() == 0 {
            std::thread::yield_now();
        }
        f.deliver(2, 20, b"x");
        let waited = sender.join().unwrap();
        assert!(
            waited < Duration::from_secs(30),
            "a waiting sender slept out its pause: {waited:?}"
        );
        assert!(f.link.progress().epoch() > seen);
        assert_eq!(f.log().len(), 1);
    }

    /// The lists of a change reach the callback entry by entry (member, reason), a list
    /// libcpg passes as NULL or as a dangling pointer with no entries as empty; the
    /// totem change's ring and nodes too.
    #[test]
    fn member_lists_reach_the_callbacks_as_libcpg_passes_them() {
        let f = Fixture::new(false);
        let entry = |nodeid, pid, reason| sys::cpg_address {
            nodeid,
            pid,
            reason,
        };
        let members = [
            entry(1, 10, sys::CPG_REASON_JOIN),
            entry(2, 20, sys::CPG_REASON_NODEUP),
        ];
        let left = [entry(3, 30, sys::CPG_REASON_NODEDOWN)];
        f.dispatching(|| {
            confchg_trampoline::<Recorder>(
                HANDLE,
                f.group.as_raw(),
                members.as_ptr(),
                members.len(),
                left.as_ptr(),
                left.len(),
                std::ptr::null(),
                0,
            );
            confchg_trampoline::<Recorder>(
                HANDLE,
                f.group.as_raw(),
                NonNull::dangling().as_ptr(),
                0,
                std::ptr::null(),
                0,
                members.as_ptr(),
                1,
            );
            let nodes = [1u32, 2, 4];
            totem_trampoline::<Recorder>(
                HANDLE,
                sys::cpg_ring_id { nodeid: 4, seq: 88 },
                3,
                nodes.as_ptr(),
            );
        });
        assert_eq!(
            f.log(),
            vec![
                r#"confchg ["1:10 join", "2:20 node up"] left ["3:30 node down"] joined []"#,
                r#"confchg [] left [] joined ["1:10 join"]"#,
                "totem 4.88 [1, 2, 4]",
            ]
        );
    }
}
