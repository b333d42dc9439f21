//! The callback API: the [`Callbacks`] trait, and the closure adapters behind
//! [`Builder`](crate::Builder) ([`Closures`], [`OnDeliver`], [`OnConfchg`],
//! [`OnTotemConfchg`], [`Unset`]).
//!
//! Nothing here is unsafe or knows about C: libcpg reaches these callbacks through the
//! trampolines in `dispatch`.

use crate::connection::ConnectionRef;
use crate::types::{Confchg, Message, TotemConfchg};

/// What a handle does with events. Every method has an empty default.
///
/// The methods run on the thread that calls [`Handle::dispatch`](crate::Handle::dispatch),
/// inside libcpg. They get a [`ConnectionRef`] to send, join, leave or query membership
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
    fn deliver(&mut self, cpg: &ConnectionRef, message: Message<'_>) {
        let _ = (cpg, message);
    }

    /// The membership of a joined group changed (including this process's own join).
    fn confchg(&mut self, cpg: &ConnectionRef, change: Confchg<'_>) {
        let _ = (cpg, change);
    }

    /// The cluster's node membership (totem ring) changed.
    fn totem_confchg(&mut self, cpg: &ConnectionRef, change: TotemConfchg<'_>) {
        let _ = (cpg, change);
    }
}

/// Placeholder for a callback that was not set on a [`Builder`](crate::Builder).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unset;

/// A deliver callback of a [`Builder`](crate::Builder): a closure, or [`Unset`].
pub trait OnDeliver: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, cpg: &ConnectionRef, message: Message<'_>);
}

/// A confchg callback of a [`Builder`](crate::Builder): a closure, or [`Unset`].
pub trait OnConfchg: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, cpg: &ConnectionRef, change: Confchg<'_>);
}

/// A totem confchg callback of a [`Builder`](crate::Builder): a closure, or [`Unset`].
pub trait OnTotemConfchg: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, cpg: &ConnectionRef, change: TotemConfchg<'_>);
}

impl OnDeliver for Unset {
    fn call(&mut self, _: &ConnectionRef, _: Message<'_>) {}
}

impl OnConfchg for Unset {
    fn call(&mut self, _: &ConnectionRef, _: Confchg<'_>) {}
}

impl OnTotemConfchg for Unset {
    fn call(&mut self, _: &ConnectionRef, _: TotemConfchg<'_>) {}
}

impl<F: FnMut(&ConnectionRef, Message<'_>) + Send + 'static> OnDeliver for F {
    #[inline]
    fn call(&mut self, cpg: &ConnectionRef, message: Message<'_>) {
        self(cpg, message)
    }
}

impl<F: FnMut(&ConnectionRef, Confchg<'_>) + Send + 'static> OnConfchg for F {
    #[inline]
    fn call(&mut self, cpg: &ConnectionRef, change: Confchg<'_>) {
        self(cpg, change)
    }
}

impl<F: FnMut(&ConnectionRef, TotemConfchg<'_>) + Send + 'static> OnTotemConfchg for F {
    #[inline]
    fn call(&mut self, cpg: &ConnectionRef, change: TotemConfchg<'_>) {
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
    fn deliver(&mut self, cpg: &ConnectionRef, message: Message<'_>) {
        self.deliver.call(cpg, message)
    }

    #[inline]
    fn confchg(&mut self, cpg: &ConnectionRef, change: Confchg<'_>) {
        self.confchg.call(cpg, change)
    }

    #[inline]
    fn totem_confchg(&mut self, cpg: &ConnectionRef, change: TotemConfchg<'_>) {
        self.totem.call(cpg, change)
    }
}
