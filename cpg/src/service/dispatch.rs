//! Where a service library calls back into Rust: the callback state behind a handle
//! ([`State`], [`Header`]: dispatching, poisoned, a caught panic), the per-thread
//! [`DispatchScope`] through which a trampoline finds it, and [`deliver`], the one
//! function every trampoline goes through (git2's `wrap`: catch, store, poison).
//!
//! The state is one heap allocation owned by the [`ServiceHandle`](super::ServiceHandle),
//! never a global table. The libraries call callbacks only from inside their own
//! dispatch call, on the dispatching thread, with the handle being dispatched; so the
//! dispatch marks (service, handle, state) in a thread-local for its duration and the
//! trampolines read it there. No library's context pointer is needed (votequorum's
//! initialize has none, and `*_context_get` would look the handle up in libqb's table
//! again for every event).

#![deny(clippy::multiple_unsafe_ops_per_block)]

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use crate::error::Service;

use super::Library;

/// The payload of a caught panic.
pub(crate) type Panic = Box<dyn Any + Send + 'static>;

/// Header of the callback state, shared by the trampolines and the dispatch.
///
/// Only touched on the thread that owns the handle: between C calls by the handle's
/// methods, and by the trampolines that the library calls from inside a dispatch.
pub(crate) struct Header {
    /// Set while the library's dispatch runs: a nested dispatch of the same handle is
    /// refused.
    pub(crate) dispatching: Cell<bool>,
    /// Callbacks run during the current dispatch call.
    pub(crate) callbacks_run: Cell<usize>,
    /// The payload of a callback panic, waiting for the dispatch to re-raise it.
    pub(crate) panic: Cell<Option<Panic>>,
    /// A callback panicked: the handle delivers nothing more and refuses every call.
    pub(crate) poisoned: Cell<bool>,
}

/// The allocation behind a handle. `repr(C)` so that a pointer to the state is also a
/// pointer to its header, whatever `C` is.
#[repr(C)]
pub(crate) struct State<C> {
    pub(crate) header: Header,
    callbacks: UnsafeCell<C>,
}

impl<C: Send + 'static> State<C> {
    pub(crate) fn new(callbacks: C) -> Box<State<C>> {
        Box::new(State {
            header: Header {
                dispatching: Cell::new(false),
                callbacks_run: Cell::new(0),
                panic: Cell::new(None),
                poisoned: Cell::new(false),
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
}

/// What a thread is dispatching right now.
#[derive(Clone, Copy)]
struct Current {
    service: Option<Service>,
    raw: u64,
    header: *mut Header,
}

const NOTHING: Current = Current {
    service: None,
    raw: 0,
    header: std::ptr::null_mut(),
};

thread_local! {
    /// The handle this thread is dispatching, its library and its state.
    static DISPATCHING: Cell<Current> = const { Cell::new(NOTHING) };
}

/// Marks a handle as being dispatched on this thread until dropped, restoring the
/// previous mark (a callback may dispatch another handle).
pub(crate) struct DispatchScope {
    previous: Current,
}

impl DispatchScope {
    /// Marks `raw`, a handle of library `L` whose callback state starts with `header`,
    /// as dispatching.
    pub(crate) fn enter<L: Library>(raw: u64, header: NonNull<Header>) -> DispatchScope {
        DispatchScope {
            previous: DISPATCHING.replace(Current {
                service: Some(L::SERVICE),
                raw,
                header: header.as_ptr(),
            }),
        }
    }
}

impl Drop for DispatchScope {
    fn drop(&mut self) {
        DISPATCHING.set(self.previous);
    }
}

/// Runs `f` with the callbacks of `raw`, a handle of library `L` that this thread is
/// dispatching, catching a panic: the payload is stored for the dispatch to re-raise,
/// and the handle is poisoned. Nothing runs once a callback has panicked.
///
/// # Safety
/// Must only be called by a trampoline that the service registered for handles of
/// `L` whose state is a `State<C>` (this `C`), from inside `L`'s dispatch.
pub(crate) unsafe fn deliver<L: Library, C: Send + 'static>(raw: u64, f: impl FnOnce(&mut C)) {
    let current = DISPATCHING.get();
    // The library calls callbacks only from its dispatch of `raw` on this thread, which
    // set the scope; anything else would be a library bug, and nothing is delivered.
    if current.service != Some(L::SERVICE) || current.raw != raw || current.header.is_null() {
        debug_assert!(false, "a {} callback outside its dispatch", L::SERVICE);
        return;
    }
    // SAFETY: the scope names the state of the handle `raw` of `L` being dispatched on
    // this thread, which is a `State<C>` (this trampoline is registered only for such
    // handles). It is freed only after the handle is finalized, which cannot happen
    // while its dispatch runs (the dispatch borrows the handle). The header is only
    // read through shared references.
    let state = unsafe { &*current.header.cast::<State<C>>() };
    let header = &state.header;
    if header.poisoned.get() {
        return;
    }
    header.callbacks_run.set(header.callbacks_run.get() + 1);
    // SAFETY: trampolines run only inside the dispatch, which refuses to nest on the
    // same handle, and the handle is !Sync; so this is the only live reference to the
    // callbacks.
    let callbacks = unsafe { &mut *state.callbacks.get() };
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(callbacks))) {
        header.poisoned.set(true);
        header.panic.set(Some(payload));
    }
}

/// Borrows a C array of `len` `T`s as a slice, tolerating a NULL pointer for an empty
/// list (the libraries pass NULL or a dangling pointer with a count of 0).
///
/// # Safety
/// Unless `len` is 0, `ptr` must point to `len` initialized `T`s that stay valid and
/// unmodified for `'a`.
#[cfg_attr(not(any(feature = "quorum", feature = "cmap")), allow(dead_code))] // cfg has no arrays
pub(crate) unsafe fn borrow_c_array<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: per the contract: non-null, `len` initialized values, valid for 'a.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}
