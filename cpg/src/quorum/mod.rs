//! The cluster's quorum, from corosync's quorum service (libquorum): whether this
//! node's partition may act, and every change of it (feature **`quorum`**).
//!
//! - [`Quorum`] owns a connection to the quorum service and finalizes it on drop:
//!   [`is_quorate`](Quorum::is_quorate), [`quorum_type`](Quorum::quorum_type),
//!   [`track_start`](Quorum::track_start) / [`track_stop`](Quorum::track_stop), and
//!   notifications delivered to closures ([`Quorum::builder`]) or a
//!   [`QuorumCallbacks`] value by [`dispatch`](Quorum::dispatch).
//! - `AsyncQuorum` (feature `tokio` too): the notifications as a stream of owned
//!   [`QuorumEvent`]s.
//!
//! # What a service must know
//!
//! - **The quorum is the cluster's, not your group's.** It is decided by corosync's
//!   quorum provider (votequorum) over the votes of every node that runs corosync,
//!   whether or not it runs your service, with whatever `expected_votes`, `two_node`,
//!   `wait_for_all` or quorum device the cluster is configured with. Counting the
//!   members of a CPG group is not a substitute.
//! - **Without a quorum provider everything is "quorate".** When corosync.conf has no
//!   `quorum { provider: corosync_votequorum }`, [`quorum_type`](Quorum::quorum_type)
//!   is [`QuorumType::NoProvider`], [`is_quorate`](Quorum::is_quorate) always answers
//!   `true`, and the quorum notifications say quorate with ring id `0.0` and no
//!   members (corosync 3.1.7); the node list notifications still carry the real ring
//!   and members. Check the type before trusting "quorate" to protect anything.
//! - **Quorum and CPG notifications arrive in either order.** They come from two
//!   services over two connections: a node that loses quorum may deliver its CPG
//!   configuration change first, or its quorum notification first. Line them up by
//!   **ring id**: the [`RingId`] of a quorum or node list notification is the same
//!   `(nodeid, seq)` as the [`TotemConfchg`](crate::TotemConfchg) that CPG delivers
//!   for the same membership on the same node (measured on corosync 3.1.7, for the
//!   majority's and the minority's rings of a partition alike; the two sides of a
//!   partition form rings with the same `seq` and different representatives, so
//!   compare the whole id). Not every ring gets a quorum notification: corosync sends
//!   none for a ring whose nodes and quorum equal the previous ring's (a minority that
//!   forms two rings in a row alone), so "the notification for my current ring" may
//!   never come; the latest notification then still holds.
//! - **Notifications come only while tracking** ([`track_start`](Quorum::track_start)),
//!   each one inside [`dispatch`](Quorum::dispatch) on the calling thread. With
//!   [`Track::CHANGES`] (or [`Track::CURRENT`]) the current state comes at once: a
//!   node list notification, then a quorum notification.
//!
//! # Example
//!
//! ```no_run
//! use cpg::quorum::{Quorum, QuorumType, Track};
//! use cpg::DispatchMode;
//!
//! let quorum = Quorum::builder()
//!     .on_quorum(|n| {
//!         let state = if n.quorate { "quorate" } else { "NOT quorate" };
//!         println!("ring {}: {state}, members {:?}", n.ring_id, n.members);
//!     })
//!     .on_nodelist(|n| println!("ring {}: joined {:?}, left {:?}", n.ring_id, n.joined, n.left))
//!     .build()?;
//! if quorum.quorum_type() == QuorumType::NoProvider {
//!     eprintln!("no quorum provider configured: every partition calls itself quorate");
//! }
//! println!("quorate now: {}", quorum.is_quorate()?);
//! quorum.track_start(Track::CHANGES)?;
//! loop {
//!     quorum.dispatch(DispatchMode::One)?;
//! }
//! # Ok::<(), cpg::Error>(())
//! ```
//!
//! # Threads, stacks, processes
//!
//! As for [`Handle`](crate::Handle): a [`Quorum`] is `Send`, not `Sync`; the thread that
//! dispatches needs [`DISPATCH_STACK`](crate::DISPATCH_STACK) of stack left
//! (`quorum_dispatch` keeps a 1 MiB buffer on its stack, without stack probes: a
//! smaller stack gets [`Error::StackTooSmall`]); a
//! callback that panics poisons the handle and the panic resumes in `dispatch`; a
//! handle inherited through `fork` refuses every call ([`Error::Forked`]).
//! At most [`MAX_HANDLES`](crate::MAX_HANDLES) quorum handles are open at once in a
//! process (libquorum's handle table must not move), counted apart from CPG's.
//!
//! # corosync 2.4
//!
//! Where the headers lack the v1 model (`quorum_model_initialize`, corosync before
//! 3.1), the connection is made with `quorum_initialize`: quorum notifications carry
//! only the ring's sequence number (their [`RingId::nodeid`] is 0, never a real node
//! id) and node list notifications never come.

#[cfg(feature = "tokio")]
mod async_quorum;

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use corosync_sys as sys;

use crate::callbacks::Unset;
use crate::error::{CsError, Error, Operation, Result, Service};
use crate::process::HandleSlots;
use crate::service::dispatch::{borrow_c_array, deliver};
use crate::service::{Library, ServiceHandle};
use crate::types::{DispatchMode, Dispatched, RingId};

pub use crate::service::Track;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_quorum::AsyncQuorum;

/// Whether the daemon has a quorum provider (the `quorum_type` that
/// `quorum_initialize` reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuorumType {
    /// No quorum provider is configured (`QUORUM_FREE`): every partition reports
    /// itself quorate, and the quorum notifications carry no ring and no members.
    NoProvider,
    /// A quorum provider is configured (`QUORUM_SET`, for example
    /// `quorum { provider: corosync_votequorum }`): "quorate" is its decision.
    Provider,
    /// A value this crate does not know.
    Unknown(u32),
}

impl QuorumType {
    /// Maps the raw `quorum_type`.
    pub fn from_raw(raw: u32) -> QuorumType {
        match raw {
            sys::QUORUM_FREE => QuorumType::NoProvider,
            sys::QUORUM_SET => QuorumType::Provider,
            other => QuorumType::Unknown(other),
        }
    }

    /// The raw `quorum_type` (`QUORUM_FREE` 0, `QUORUM_SET` 1).
    pub fn to_raw(self) -> u32 {
        match self {
            QuorumType::NoProvider => sys::QUORUM_FREE,
            QuorumType::Provider => sys::QUORUM_SET,
            QuorumType::Unknown(raw) => raw,
        }
    }

    /// Whether a quorum provider decides quorum ([`QuorumType::Provider`]).
    pub fn has_provider(self) -> bool {
        self == QuorumType::Provider
    }
}

impl fmt::Display for QuorumType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuorumType::NoProvider => f.write_str("no quorum provider"),
            QuorumType::Provider => f.write_str("quorum provider"),
            QuorumType::Unknown(raw) => write!(f, "unknown quorum type {raw}"),
        }
    }
}

/// A quorum notification, borrowed for the duration of the callback: whether this
/// node's partition is quorate, in which ring, with which nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumNotification<'a> {
    /// Whether this node's partition has quorum.
    pub quorate: bool,
    /// The ring (membership) the decision is for: the same id CPG's
    /// [`TotemConfchg`](crate::TotemConfchg) reports for it. `0.0` without a quorum
    /// provider; nodeid 0 on corosync 2.4 (see the [module docs](self)).
    pub ring_id: RingId,
    /// Node ids of the nodes the provider counts in this ring (empty without a
    /// provider).
    pub members: &'a [u32],
}

/// A node list notification, borrowed for the duration of the callback: the nodes of
/// a new ring, and which joined or left since the previous one. It comes before the
/// quorum notification of the same ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeListNotification<'a> {
    /// The new ring.
    pub ring_id: RingId,
    /// Node ids of the nodes in it.
    pub members: &'a [u32],
    /// Node ids that joined (empty in the current state that tracking starts with).
    pub joined: &'a [u32],
    /// Node ids that left.
    pub left: &'a [u32],
}

/// A notification as an owned value: what `AsyncQuorum` yields, and what a callback
/// makes with `QuorumEvent::from(notification)` to keep one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuorumEvent {
    /// A [`QuorumNotification`].
    Quorum {
        /// Whether this node's partition has quorum.
        quorate: bool,
        /// The ring the decision is for.
        ring_id: RingId,
        /// Node ids the provider counts in it.
        members: Vec<u32>,
    },
    /// A [`NodeListNotification`].
    NodeList {
        /// The new ring.
        ring_id: RingId,
        /// Node ids in it.
        members: Vec<u32>,
        /// Node ids that joined.
        joined: Vec<u32>,
        /// Node ids that left.
        left: Vec<u32>,
    },
}

impl QuorumEvent {
    /// The ring the event is about.
    pub fn ring_id(&self) -> RingId {
        match self {
            QuorumEvent::Quorum { ring_id, .. } | QuorumEvent::NodeList { ring_id, .. } => *ring_id,
        }
    }
}

impl From<QuorumNotification<'_>> for QuorumEvent {
    fn from(n: QuorumNotification<'_>) -> QuorumEvent {
        QuorumEvent::Quorum {
            quorate: n.quorate,
            ring_id: n.ring_id,
            members: n.members.to_vec(),
        }
    }
}

impl From<NodeListNotification<'_>> for QuorumEvent {
    fn from(n: NodeListNotification<'_>) -> QuorumEvent {
        QuorumEvent::NodeList {
            ring_id: n.ring_id,
            members: n.members.to_vec(),
            joined: n.joined.to_vec(),
            left: n.left.to_vec(),
        }
    }
}

/// What a [`Quorum`] handle does with notifications. Both methods have an empty
/// default.
///
/// They run on the thread that calls [`Quorum::dispatch`], inside libquorum, with the
/// notification's lists borrowed from libquorum's buffer. A panic is caught before it
/// reaches C, poisons the handle, and resumes in `dispatch`. Callbacks are
/// `Send + 'static` and a [`Quorum`] is not `Sync`, so a callback cannot reach the
/// handle that runs it (to dispatch or drop it):
///
/// ```compile_fail
/// # fn f(quorum: cpg::quorum::Quorum) {
/// let builder = cpg::quorum::Quorum::builder().on_quorum(|_| {
///     let _ = quorum.dispatch(cpg::DispatchMode::All); // borrowed: not 'static
/// });
/// # }
/// ```
///
/// ```compile_fail
/// # fn f(quorum: cpg::quorum::Quorum) {
/// let shared = std::sync::Arc::new(quorum);
/// let inner = shared.clone();
/// // Arc<Quorum> is not Send, because Quorum is not Sync.
/// let builder = cpg::quorum::Quorum::builder().on_quorum(move |_| drop(inner.clone()));
/// # }
/// ```
pub trait QuorumCallbacks: Send + 'static {
    /// The quorum decision for a ring (also the current one, when tracking starts).
    fn quorum(&mut self, notification: QuorumNotification<'_>) {
        let _ = notification;
    }

    /// The nodes of a new ring (also the current one, when tracking starts); comes
    /// before the ring's quorum notification. Never called on corosync 2.4.
    fn nodelist(&mut self, notification: NodeListNotification<'_>) {
        let _ = notification;
    }
}

/// A quorum callback of a [`QuorumBuilder`]: a closure, or [`Unset`].
pub trait OnQuorum: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, notification: QuorumNotification<'_>);
}

/// A node list callback of a [`QuorumBuilder`]: a closure, or [`Unset`].
pub trait OnNodeList: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, notification: NodeListNotification<'_>);
}

impl OnQuorum for Unset {
    fn call(&mut self, _: QuorumNotification<'_>) {}
}

impl OnNodeList for Unset {
    fn call(&mut self, _: NodeListNotification<'_>) {}
}

impl<F: FnMut(QuorumNotification<'_>) + Send + 'static> OnQuorum for F {
    fn call(&mut self, notification: QuorumNotification<'_>) {
        self(notification)
    }
}

impl<F: FnMut(NodeListNotification<'_>) + Send + 'static> OnNodeList for F {
    fn call(&mut self, notification: NodeListNotification<'_>) {
        self(notification)
    }
}

/// The two closures of a [`QuorumBuilder`], as [`QuorumCallbacks`].
#[derive(Debug, Default)]
pub struct QuorumClosures<Q, N> {
    quorum: Q,
    nodelist: N,
}

impl<Q: OnQuorum, N: OnNodeList> QuorumCallbacks for QuorumClosures<Q, N> {
    fn quorum(&mut self, notification: QuorumNotification<'_>) {
        self.quorum.call(notification)
    }

    fn nodelist(&mut self, notification: NodeListNotification<'_>) {
        self.nodelist.call(notification)
    }
}

/// Builds a [`Quorum`] handle from closures; made by [`Quorum::builder`]. Unset
/// callbacks do nothing.
#[derive(Debug)]
#[must_use = "a builder does nothing until .build()"]
pub struct QuorumBuilder<Q, N> {
    callbacks: QuorumClosures<Q, N>,
    daemon_uid: Option<u32>,
}

impl<Q: OnQuorum, N: OnNodeList> QuorumBuilder<Q, N> {
    /// Called with every quorum notification.
    pub fn on_quorum<F>(self, f: F) -> QuorumBuilder<F, N>
    where
        F: FnMut(QuorumNotification<'_>) + Send + 'static,
    {
        QuorumBuilder {
            callbacks: QuorumClosures {
                quorum: f,
                nodelist: self.callbacks.nodelist,
            },
            daemon_uid: self.daemon_uid,
        }
    }

    /// Called with every node list notification.
    pub fn on_nodelist<F>(self, f: F) -> QuorumBuilder<Q, F>
    where
        F: FnMut(NodeListNotification<'_>) + Send + 'static,
    {
        QuorumBuilder {
            callbacks: QuorumClosures {
                quorum: self.callbacks.quorum,
                nodelist: f,
            },
            daemon_uid: self.daemon_uid,
        }
    }

    /// The user id the daemon must run as, checked on the connection (`SO_PEERCRED`)
    /// right after connecting, or `None` for no check; default `Some(0)`. See
    /// [`Options::daemon_uid`](crate::Options::daemon_uid) for why.
    pub fn daemon_uid(mut self, uid: Option<u32>) -> Self {
        self.daemon_uid = uid;
        self
    }

    /// Connects to the local daemon's quorum service.
    pub fn build(self) -> Result<Quorum> {
        Quorum::with_daemon_uid(self.callbacks, self.daemon_uid)
    }
}

/// libquorum, as the service core drives it.
struct QuorumLibrary;

/// libquorum's open handles (its handle table is its own).
static QUORUM_HANDLES: HandleSlots = HandleSlots::new();

impl Library for QuorumLibrary {
    const SERVICE: Service = Service::Quorum;
    const INITIALIZE: Operation = Operation::QuorumInitialize;
    const FINALIZE: Operation = Operation::QuorumFinalize;
    const FD_GET: Operation = Operation::QuorumFdGet;
    const DISPATCH: Operation = Operation::QuorumDispatch;

    fn slots() -> &'static HandleSlots {
        &QUORUM_HANDLES
    }

    unsafe fn finalize(raw: u64) -> sys::cs_error_t {
        // SAFETY: per the trait's contract.
        unsafe { sys::quorum_finalize(raw) }
    }

    unsafe fn fd_get(raw: u64, fd: *mut c_int) -> sys::cs_error_t {
        // SAFETY: per the trait's contract.
        unsafe { sys::quorum_fd_get(raw, fd) }
    }

    unsafe fn dispatch(raw: u64, flags: sys::cs_dispatch_flags_t) -> sys::cs_error_t {
        // SAFETY: per the trait's contract.
        unsafe { sys::quorum_dispatch(raw, flags) }
    }
}

/// A connection to the local corosync daemon's quorum service, with its callbacks.
///
/// Made with [`Quorum::builder`] (closures) or [`Quorum::new`] (a [`QuorumCallbacks`]
/// value). Notifications come while tracking ([`track_start`](Self::track_start)) and
/// are delivered by [`dispatch`](Self::dispatch) on the calling thread; the descriptor
/// ([`AsFd`]) becomes readable when notifications wait. Dropping the handle finalizes
/// the connection, then frees the callbacks; [`close`](Self::close) does the same and
/// reports an error. See the [module docs](self) for what "quorate" means and when
/// it means nothing.
#[derive(Debug)]
pub struct Quorum {
    core: ServiceHandle<QuorumLibrary>,
    quorum_type: QuorumType,
    /// The daemon lists this connection among its trackers (a `track_start` with
    /// `CHANGES` or `CHANGES_ONLY` and no `track_stop` since).
    tracking: Cell<bool>,
}

impl Quorum {
    /// A builder that takes closures for the callbacks.
    pub fn builder() -> QuorumBuilder<Unset, Unset> {
        QuorumBuilder {
            callbacks: QuorumClosures::default(),
            daemon_uid: Some(0),
        }
    }

    /// Connects to the local daemon's quorum service with these callbacks.
    ///
    /// Fails with [`CsError::Library`] when no daemon is running (or is reachable from
    /// this network namespace), [`CsError::Access`] when it refuses this user, and
    /// [`Error::TooManyServiceHandles`] when [`MAX_HANDLES`](crate::MAX_HANDLES)
    /// quorum handles are open in this process.
    pub fn new<C: QuorumCallbacks>(callbacks: C) -> Result<Quorum> {
        Quorum::with_daemon_uid(callbacks, Some(0))
    }

    /// [`new`](Self::new), checking that the daemon runs as `daemon_uid` (`None`: no
    /// check; see [`QuorumBuilder::daemon_uid`]).
    pub fn with_daemon_uid<C: QuorumCallbacks>(
        callbacks: C,
        daemon_uid: Option<u32>,
    ) -> Result<Quorum> {
        let mut quorum_type = sys::QUORUM_FREE;
        let core = ServiceHandle::<QuorumLibrary>::connect(callbacks, daemon_uid, |context| {
            initialize::<C>(context, &mut quorum_type)
        })?;
        Ok(Quorum {
            core,
            quorum_type: QuorumType::from_raw(quorum_type),
            tracking: Cell::new(false),
        })
    }

    /// Whether the daemon has a quorum provider, as it answered when this handle
    /// connected (it does not change while the daemon runs).
    pub fn quorum_type(&self) -> QuorumType {
        self.quorum_type
    }

    /// Whether this node's partition is quorate now (`quorum_getquorate`). Always
    /// `true` without a quorum provider ([`QuorumType::NoProvider`]).
    pub fn is_quorate(&self) -> Result<bool> {
        let mut quorate: c_int = 0;
        self.core.call(Operation::QuorumGetQuorate, |raw| {
            // SAFETY: `raw` is live (the core checked it is usable); `quorate` is a
            // valid out pointer for the call.
            unsafe { sys::quorum_getquorate(raw, &mut quorate) }
        })?;
        Ok(quorate != 0)
    }

    /// Starts tracking (`quorum_trackstart`): with [`Track::CURRENT`] or
    /// [`Track::CHANGES`] the current state is queued at once (a node list
    /// notification, then a quorum notification); with `CHANGES` or
    /// [`Track::CHANGES_ONLY`] every later change is, until
    /// [`track_stop`](Self::track_stop). Dispatch to receive them.
    ///
    /// Fails with [`Error::InvalidArgument`] for an empty set, and with
    /// [`CsError::Exist`] while this handle already tracks changes (corosync 3.1
    /// answers so, after queueing the current state anyway; this crate refuses before
    /// asking, so that nothing is queued and a daemon without that check never lists
    /// the connection twice).
    pub fn track_start(&self, track: Track) -> Result<()> {
        let op = Operation::QuorumTrackStart;
        if track.is_empty() {
            return Err(Error::InvalidArgument(
                "track_start needs Track::CURRENT, CHANGES or CHANGES_ONLY",
            ));
        }
        self.core.usable(op)?;
        if self.tracking.get() {
            return Err(Error::Cs {
                op,
                code: CsError::Exist,
            });
        }
        self.core.call(op, |raw| {
            // SAFETY: `raw` is live (checked usable); the flags are plain bits.
            unsafe { sys::quorum_trackstart(raw, track.bits()) }
        })?;
        if track.follows_changes() {
            self.tracking.set(true);
        }
        Ok(())
    }

    /// Stops tracking changes (`quorum_trackstop`). Notifications already queued are
    /// still delivered by the next dispatch.
    ///
    /// Fails with [`CsError::NotExist`] when this handle does not track changes
    /// (corosync 3.1.7 answers success then, although its code means to refuse; this
    /// crate answers the same on every release).
    pub fn track_stop(&self) -> Result<()> {
        let op = Operation::QuorumTrackStop;
        self.core.usable(op)?;
        if !self.tracking.get() {
            return Err(Error::Cs {
                op,
                code: CsError::NotExist,
            });
        }
        self.core.call(op, |raw| {
            // SAFETY: `raw` is live (checked usable).
            unsafe { sys::quorum_trackstop(raw) }
        })?;
        self.tracking.set(false);
        Ok(())
    }

    /// Delivers pending notifications to the callbacks, waiting or not according to
    /// `mode`, as [`Handle::dispatch`](crate::Handle::dispatch) does:
    /// [`Dispatched::NothingPending`] when a non-blocking mode found nothing, else the
    /// number of callbacks that ran. A lost daemon is an error for which
    /// [`Error::is_daemon_lost`] holds, and every later call fails the same way.
    ///
    /// If a callback panics, delivery stops, the panic resumes here once libquorum has
    /// returned, and the handle is poisoned: every later call fails with
    /// [`Error::Poisoned`] (notifications libquorum had already read are discarded).
    /// Called from one of this handle's own callbacks (possible only through a
    /// thread-local), it fails with [`Error::ReentrantDispatch`]. On a thread with less
    /// than [`DISPATCH_STACK`](crate::DISPATCH_STACK) of stack left it fails with
    /// [`Error::StackTooSmall`].
    pub fn dispatch(&self, mode: DispatchMode) -> Result<Dispatched> {
        self.core.dispatch(mode)
    }

    /// Delivers pending notifications one at a time, stopping when nothing is pending
    /// or after `max_events` (at least 1), like
    /// [`Handle::dispatch_at_most`](crate::Handle::dispatch_at_most).
    pub fn dispatch_at_most(&self, max_events: usize) -> Result<Dispatched> {
        self.core.dispatch_at_most(max_events)
    }

    /// Waits up to `timeout` for notifications, then delivers all pending ones;
    /// [`Dispatched::NothingPending`] on timeout. A lost daemon makes the descriptor
    /// readable, so this returns its error promptly.
    pub fn dispatch_timeout(&self, timeout: Duration) -> Result<Dispatched> {
        self.core.dispatch_timeout(timeout)
    }

    /// Finalizes the connection and frees the callbacks, reporting a failure of
    /// `quorum_finalize` (dropping does the same and ignores it).
    pub fn close(self) -> Result<()> {
        self.core.close()
    }
}

/// The descriptor is for polling only (register it with `poll`, epoll or a reactor,
/// then [`dispatch`](Quorum::dispatch)). It is libqb's socket to the daemon: reading
/// from it takes the wake-up bytes libquorum counts notifications by, and writing to
/// it or shutting it down breaks the connection; neither is undefined behaviour, both
/// are bugs.
impl AsFd for Quorum {
    /// The descriptor libquorum owns (closed by finalize): readable when
    /// notifications wait.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.core.as_fd()
    }
}

impl AsRawFd for Quorum {
    fn as_raw_fd(&self) -> RawFd {
        self.core.as_raw_fd()
    }
}

/// Connects with the v1 model: both trampolines registered, the state as the context.
/// Runs under the library lock (see `ServiceHandle::connect`).
#[cfg(corosync_has_quorum_model_v1)]
fn initialize<C: QuorumCallbacks>(
    context: *mut c_void,
    quorum_type: &mut u32,
) -> (sys::cs_error_t, u64) {
    let mut model = sys::quorum_model_v1_data_t {
        model: sys::QUORUM_MODEL_V1,
        quorum_notify_fn: Some(quorum_trampoline::<C>),
        nodelist_notify_fn: Some(nodelist_trampoline::<C>),
    };
    let mut raw: sys::quorum_handle_t = 0;
    // SAFETY: valid out pointers; the model data is a quorum_model_v1_data_t whose
    // first field is the model, as libquorum expects for QUORUM_MODEL_V1, and libquorum
    // copies it. The context is the handle's state (unused by the trampolines, which
    // find it through the dispatch scope). The caller holds the library lock and
    // checked the stack.
    let rc = unsafe {
        sys::quorum_model_initialize(
            &mut raw,
            sys::QUORUM_MODEL_V1,
            (&mut model as *mut sys::quorum_model_v1_data_t).cast::<sys::quorum_model_data_t>(),
            quorum_type,
            context,
        )
    };
    (rc, raw)
}

/// Connects with `quorum_initialize` (headers without the v1 model): quorum
/// notifications with the ring's sequence number only.
#[cfg(not(corosync_has_quorum_model_v1))]
fn initialize<C: QuorumCallbacks>(
    _context: *mut c_void,
    quorum_type: &mut u32,
) -> (sys::cs_error_t, u64) {
    let mut callbacks = sys::quorum_callbacks_t {
        quorum_notify_fn: Some(v0_quorum_trampoline::<C>),
    };
    let mut raw: sys::quorum_handle_t = 0;
    // SAFETY: valid out pointers; libquorum copies the callbacks. The caller holds the
    // library lock and checked the stack.
    let rc = unsafe { sys::quorum_initialize(&mut raw, &mut callbacks, quorum_type) };
    (rc, raw)
}

#[cfg(corosync_has_quorum_model_v1)]
extern "C" fn quorum_trampoline<C: QuorumCallbacks>(
    handle: sys::quorum_handle_t,
    quorate: u32,
    ring_id: sys::quorum_ring_id,
    member_list_entries: u32,
    member_list: *const u32,
) {
    // SAFETY: libquorum passes `member_list_entries` node ids at `member_list`, valid
    // for the duration of this call; the borrow ends with it.
    let members = unsafe { borrow_c_array(member_list, member_list_entries as usize) };
    let notification = QuorumNotification {
        quorate: quorate != 0,
        ring_id: RingId {
            nodeid: ring_id.nodeid,
            seq: ring_id.seq,
        },
        members,
    };
    // SAFETY: libquorum calls this trampoline only from inside quorum_dispatch on
    // `handle`, which `initialize::<C>` registered with a `State<C>`.
    unsafe { deliver::<QuorumLibrary, C>(handle, |cb| cb.quorum(notification)) };
}

#[cfg(corosync_has_quorum_model_v1)]
#[allow(clippy::too_many_arguments)] // libquorum's signature
extern "C" fn nodelist_trampoline<C: QuorumCallbacks>(
    handle: sys::quorum_handle_t,
    ring_id: sys::quorum_ring_id,
    member_list_entries: u32,
    member_list: *const u32,
    joined_list_entries: u32,
    joined_list: *const u32,
    left_list_entries: u32,
    left_list: *const u32,
) {
    // The three lists are node id arrays that libquorum keeps valid for this call; the
    // borrows end with it.
    // SAFETY: `member_list_entries` ids at `member_list`, valid for this call.
    let members = unsafe { borrow_c_array(member_list, member_list_entries as usize) };
    // SAFETY: `joined_list_entries` ids at `joined_list`, valid for this call.
    let joined = unsafe { borrow_c_array(joined_list, joined_list_entries as usize) };
    // SAFETY: `left_list_entries` ids at `left_list`, valid for this call.
    let left = unsafe { borrow_c_array(left_list, left_list_entries as usize) };
    let notification = NodeListNotification {
        ring_id: RingId {
            nodeid: ring_id.nodeid,
            seq: ring_id.seq,
        },
        members,
        joined,
        left,
    };
    // SAFETY: libquorum calls this trampoline only from inside quorum_dispatch on
    // `handle`, which `initialize::<C>` registered with a `State<C>`.
    unsafe { deliver::<QuorumLibrary, C>(handle, |cb| cb.nodelist(notification)) };
}

#[cfg(not(corosync_has_quorum_model_v1))]
extern "C" fn v0_quorum_trampoline<C: QuorumCallbacks>(
    handle: sys::quorum_handle_t,
    quorate: u32,
    ring_seq: u64,
    view_list_entries: u32,
    view_list: *mut u32,
) {
    // SAFETY: libquorum passes `view_list_entries` node ids at `view_list`, valid for
    // the duration of this call; the borrow ends with it.
    let members = unsafe { borrow_c_array(view_list.cast_const(), view_list_entries as usize) };
    let notification = QuorumNotification {
        quorate: quorate != 0,
        // The v0 notification has no representative: 0 is never a node id.
        ring_id: RingId {
            nodeid: 0,
            seq: ring_seq,
        },
        members,
    };
    // SAFETY: libquorum calls this trampoline only from inside quorum_dispatch on
    // `handle`, which `initialize::<C>` registered with a `State<C>`.
    unsafe { deliver::<QuorumLibrary, C>(handle, |cb| cb.quorum(notification)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_types_map_both_ways_and_say_whether_a_provider_decides() {
        assert_eq!(QuorumType::from_raw(0), QuorumType::NoProvider);
        assert_eq!(QuorumType::from_raw(1), QuorumType::Provider);
        assert_eq!(QuorumType::from_raw(7), QuorumType::Unknown(7));
        for raw in 0..4 {
            assert_eq!(QuorumType::from_raw(raw).to_raw(), raw);
        }
        assert!(QuorumType::Provider.has_provider());
        assert!(!QuorumType::NoProvider.has_provider());
        assert!(!QuorumType::Unknown(1).has_provider());
        assert_eq!(QuorumType::NoProvider.to_string(), "no quorum provider");
    }

    #[test]
    fn notifications_become_owned_events_with_their_ring() {
        let ring = RingId { nodeid: 3, seq: 13 };
        let event = QuorumEvent::from(QuorumNotification {
            quorate: false,
            ring_id: ring,
            members: &[3],
        });
        assert_eq!(
            event,
            QuorumEvent::Quorum {
                quorate: false,
                ring_id: ring,
                members: vec![3]
            }
        );
        assert_eq!(event.ring_id(), ring);
        let event = QuorumEvent::from(NodeListNotification {
            ring_id: ring,
            members: &[1, 2],
            joined: &[],
            left: &[3],
        });
        assert_eq!(event.ring_id(), ring);
        assert!(matches!(
            event,
            QuorumEvent::NodeList { ref members, ref left, .. } if members == &[1, 2] && left == &[3]
        ));
    }
}
