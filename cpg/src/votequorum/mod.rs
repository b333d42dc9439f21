//! Votes, expected votes, the quorum and quorum devices, from corosync's votequorum
//! service (libvotequorum; feature **`votequorum`**).
//!
//! - [`VoteQuorum`] owns a connection to votequorum and finalizes it on drop: a node's
//!   votes and the cluster's quorum ([`local_info`](VoteQuorum::local_info),
//!   [`node_info`](VoteQuorum::node_info): what `corosync-quorumtool -s` prints),
//!   [`set_expected`](VoteQuorum::set_expected) and
//!   [`set_votes`](VoteQuorum::set_votes), tracking with three notifications (the
//!   quorum with every known node's state, the expected votes, and on corosync 3 the
//!   node list of each new ring), and the calls of a quorum device
//!   ([`qdevice_register`](VoteQuorum::qdevice_register),
//!   [`qdevice_poll`](VoteQuorum::qdevice_poll), ...).
//! - `AsyncVoteQuorum` (feature `tokio` too): the notifications as a stream of owned
//!   [`VoteQuorumEvent`]s.
//!
//! Whether the partition is quorate is also what [`cpg::quorum`](crate::quorum) reports
//! (this feature enables that one); votequorum says why: how many votes each node has,
//! how many are expected, which of `two_node`, `wait_for_all`, `last_man_standing` or
//! a quorum device decide.
//!
//! # What a service must know
//!
//! - **votequorum exists only as the quorum provider.** Without
//!   `quorum { provider: corosync_votequorum }` in corosync.conf the service is not
//!   loaded and [`VoteQuorum::new`] fails with [`Error::NoQuorumProvider`] (corosync
//!   3.1.7 refuses the connection with `CS_ERR_LIBRARY`, the code of a missing daemon;
//!   this crate then asks the quorum service, which says whether a provider is
//!   configured).
//! - **The numbers are the answering daemon's view.** `total_votes`, `quorum`,
//!   `highest_expected` and the flags such as [`InfoFlags::QUORATE`] are those of the
//!   partition of the node the handle is connected to, whichever node is asked about
//!   (only the device's flags, and the device's votes in `total_votes`, follow the
//!   node asked about: a quorum device serves the node it runs on).
//! - **The quorum notification has no ring id.** On corosync 3 the node list
//!   notification of a new ring comes first and carries it; the quorum notification
//!   lists every node votequorum knows (dead ones too) with its state, and the quorum
//!   device as node id 0 while one is registered on this node. A quorum notification
//!   comes only when the partition's quorate state changes or a new ring forms, not
//!   when votes or expected votes change without changing it.
//! - **Notifications come only while tracking** ([`track_start`](VoteQuorum::track_start)),
//!   each inside [`dispatch`](VoteQuorum::dispatch) on the calling thread. With
//!   [`Track::CHANGES`] (or [`Track::CURRENT`]) the current state comes at once: a
//!   node list notification (corosync 3), then a quorum notification. Expected votes
//!   notifications come when the expected votes are set
//!   ([`set_expected`](VoteQuorum::set_expected) on any node) or rise with the votes
//!   present, never with the current state. Each notification carries
//!   the `context` given to [`track_start_with_context`](VoteQuorum::track_start_with_context)
//!   (0 with `track_start`).
//!
//! # Example
//!
//! ```no_run
//! use cpg::votequorum::{InfoFlags, Track, VoteQuorum};
//! use cpg::DispatchMode;
//!
//! let vq = VoteQuorum::builder()
//!     .on_quorum(|n| {
//!         let state = if n.quorate { "quorate" } else { "NOT quorate" };
//!         println!("{state}: {:?}", n.nodes);
//!     })
//!     .on_expected_votes(|n| println!("expected votes now {}", n.expected_votes))
//!     .build()?;
//! let info = vq.local_info()?;
//! println!(
//!     "node {}: {} votes; expected {}, total {}, quorum {}; two_node: {}",
//!     info.node_id,
//!     info.votes,
//!     info.expected_votes,
//!     info.total_votes,
//!     info.quorum,
//!     info.flags.contains(InfoFlags::TWO_NODE),
//! );
//! vq.track_start(Track::CHANGES)?;
//! loop {
//!     vq.dispatch(DispatchMode::One)?;
//! }
//! # Ok::<(), cpg::Error>(())
//! ```
//!
//! # Writing a quorum device
//!
//! A quorum device is a process on a node that adds votes to that node's partition
//! (corosync's own is `corosync-qdevice`, which asks a `corosync-qnetd` arbiter). It
//! works with these calls, and these rules of corosync 3.1:
//!
//! 1. **Configure it.** corosync.conf needs `quorum { device { model: NAME; votes: N } }`
//!    beside the provider (the model is a name of your choosing; `timeout` and
//!    `sync_timeout` there default to 10 s and 30 s). corosync refuses to start with
//!    `two_node`, `last_man_standing`, `auto_tie_breaker` or `allow_downscale` beside
//!    a device; when a configuration reload brings them together, it disables the
//!    device calls instead ([`CsError::Access`]). Without a `device` section
//!    registration still succeeds, but the device has 0 votes.
//! 2. **Track** with [`Track::CHANGES`] and keep the ring id of the latest node list
//!    notification: polls must name the current ring.
//! 3. **Register** its name ([`qdevice_register`](VoteQuorum::qdevice_register); one
//!    device per node: another name gets `CS_ERR_EXIST`). A registered device does not
//!    vote until it polls.
//! 4. **Poll** ([`qdevice_poll`](VoteQuorum::qdevice_poll)) with `cast_vote` (whether
//!    the device gives this partition its votes now) and the current ring id, well
//!    within `timeout` (every `timeout / 3` or so), and at once after each node list
//!    notification: while a device is alive, corosync holds the new ring's quorum
//!    decision until the device has polled with the new ring id (at most
//!    `sync_timeout`). A poll with an older ring id fails with
//!    [`CsError::MessageError`]: dispatch, then poll with
//!    the newest one.
//! 5. **When polling stops** for longer than `timeout`, corosync marks the device dead
//!    and its votes stop counting, which may cost the partition its quorum. Polling
//!    again revives it. `cast_vote: false` withdraws the votes at once.
//! 6. **Unregister** ([`qdevice_unregister`](VoteQuorum::qdevice_unregister)) to
//!    stop for good. Closing the handle does not unregister: the device stays
//!    registered (dead after `timeout`), and a new process may register the same name
//!    and poll again.
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! use cpg::votequorum::{QdeviceName, Track, VoteQuorum};
//! use cpg::CsError;
//!
//! let ring = Arc::new(Mutex::new(None));
//! let latest = Arc::clone(&ring);
//! let vq = VoteQuorum::builder()
//!     .on_nodelist(move |n| *latest.lock().unwrap() = Some(n.ring_id))
//!     .build()?;
//! let name = QdeviceName::new("my-arbiter")?;
//! vq.track_start(Track::CHANGES)?; // the current ring comes at once
//! vq.qdevice_register(&name)?;
//! loop {
//!     // A new ring is polled for at once; otherwise every second.
//!     vq.dispatch_timeout(Duration::from_secs(1))?;
//!     let Some(ring_id) = *ring.lock().unwrap() else { continue };
//!     let cast_vote = true; // the device's decision
//!     match vq.qdevice_poll(&name, cast_vote, ring_id) {
//!         // The ring changed since the last dispatch: the next one brings it.
//!         Err(e) if e.code() == Some(CsError::MessageError) => continue,
//!         other => other?,
//!     }
//! }
//! # Ok::<(), cpg::Error>(())
//! ```
//!
//! # Threads, stacks, processes
//!
//! As for [`Quorum`]: a [`VoteQuorum`] is `Send`, not `Sync`;
//! the thread that dispatches needs [`DISPATCH_STACK`](crate::DISPATCH_STACK) of
//! stack left (`votequorum_dispatch` keeps a 1 MiB buffer on its stack, without stack
//! probes: a smaller stack gets [`Error::StackTooSmall`]); a callback that panics
//! poisons the handle and the panic resumes in `dispatch`; a handle inherited through
//! `fork` refuses every call ([`Error::Forked`]). At most
//! [`MAX_HANDLES`](crate::MAX_HANDLES) votequorum handles are open at once in a
//! process (libvotequorum's handle table must not move), counted apart from the other
//! libraries'.
//!
//! # corosync 2.4
//!
//! Where the headers lack the node list notification (corosync before 3.0), the
//! quorum notification carries the ring id: this module then calls the node list
//! callback before each quorum notification, with that ring and the nodes whose state
//! is [`NodeState::Member`] (the quorum device left out), so that the same code runs
//! on both. (Compiled and tested here against corosync 3.1 only.)

#[cfg(feature = "tokio")]
mod async_votequorum;
mod types;

use std::cell::Cell;
use std::ffi::c_int;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use corosync_sys as sys;

use crate::callbacks::Unset;
use crate::error::{CsError, Error, Operation, Result, Service};
use crate::process::HandleSlots;
use crate::quorum::{Quorum, QuorumCallbacks, QuorumType};
use crate::service::dispatch::{borrow_c_array, deliver};
use crate::service::{Library, ServiceHandle};
use crate::types::{DispatchMode, Dispatched, RingId};

pub use crate::service::Track;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_votequorum::AsyncVoteQuorum;
pub use types::{InfoFlags, NodeInfo, NodeState, NodeStatus, QdeviceName};

/// A quorum notification, borrowed for the duration of the callback: whether this
/// node's partition is quorate, and every node votequorum knows with its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumNotification<'a> {
    /// The context given when tracking started.
    pub context: u64,
    /// Whether this node's partition has quorum.
    pub quorate: bool,
    /// Every node votequorum knows (members, and dead or leaving ones; in no
    /// particular order), then the quorum device while one is registered on this node:
    /// node id 0, with a state corosync 3.1.7 never sets (`NodeState::Unknown(0)`,
    /// alive or not; [`local_info`](VoteQuorum::local_info)'s flags say whether it is
    /// alive and votes).
    pub nodes: &'a [NodeStatus],
}

/// A node list notification (corosync 3), borrowed for the duration of the callback:
/// the members of a new ring. It comes before the quorum notification that decides
/// for that ring, and carries the ring id a quorum device polls with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeListNotification<'a> {
    /// The context given when tracking started.
    pub context: u64,
    /// The new ring: the same id as CPG's [`TotemConfchg`](crate::TotemConfchg) for it.
    pub ring_id: RingId,
    /// Node ids of its members.
    pub members: &'a [u32],
}

/// An expected votes notification: the cluster's expected votes changed (by
/// [`set_expected`](VoteQuorum::set_expected) on any node, or because the votes
/// present rose above them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedVotesNotification {
    /// The context given when tracking started.
    pub context: u64,
    /// The new expected votes.
    pub expected_votes: u32,
}

/// A notification as an owned value: what `AsyncVoteQuorum` yields, and what a
/// callback makes with `VoteQuorumEvent::from(notification)` to keep one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VoteQuorumEvent {
    /// A [`QuorumNotification`].
    Quorum {
        /// The context given when tracking started.
        context: u64,
        /// Whether this node's partition has quorum.
        quorate: bool,
        /// Every node votequorum knows, with its state.
        nodes: Vec<NodeStatus>,
    },
    /// A [`NodeListNotification`].
    NodeList {
        /// The context given when tracking started.
        context: u64,
        /// The new ring.
        ring_id: RingId,
        /// Node ids of its members.
        members: Vec<u32>,
    },
    /// An [`ExpectedVotesNotification`].
    ExpectedVotes {
        /// The context given when tracking started.
        context: u64,
        /// The new expected votes.
        expected_votes: u32,
    },
}

impl From<QuorumNotification<'_>> for VoteQuorumEvent {
    fn from(n: QuorumNotification<'_>) -> VoteQuorumEvent {
        VoteQuorumEvent::Quorum {
            context: n.context,
            quorate: n.quorate,
            nodes: n.nodes.to_vec(),
        }
    }
}

impl From<NodeListNotification<'_>> for VoteQuorumEvent {
    fn from(n: NodeListNotification<'_>) -> VoteQuorumEvent {
        VoteQuorumEvent::NodeList {
            context: n.context,
            ring_id: n.ring_id,
            members: n.members.to_vec(),
        }
    }
}

impl From<ExpectedVotesNotification> for VoteQuorumEvent {
    fn from(n: ExpectedVotesNotification) -> VoteQuorumEvent {
        VoteQuorumEvent::ExpectedVotes {
            context: n.context,
            expected_votes: n.expected_votes,
        }
    }
}

/// What a [`VoteQuorum`] handle does with notifications. Every method has an empty
/// default.
///
/// They run on the thread that calls [`VoteQuorum::dispatch`], inside libvotequorum,
/// with the notification's lists borrowed from libvotequorum's buffer. A panic is
/// caught before it reaches C, poisons the handle, and resumes in `dispatch`.
/// Callbacks are `Send + 'static` and a [`VoteQuorum`] is not `Sync`, so a callback
/// cannot reach the handle that runs it:
///
/// ```compile_fail
/// # fn f(vq: cpg::votequorum::VoteQuorum) {
/// let builder = cpg::votequorum::VoteQuorum::builder().on_quorum(|_| {
///     let _ = vq.dispatch(cpg::DispatchMode::All); // borrowed: not 'static
/// });
/// # }
/// ```
pub trait VoteQuorumCallbacks: Send + 'static {
    /// The quorum and every known node's state (also the current ones, when tracking
    /// starts).
    fn quorum(&mut self, notification: QuorumNotification<'_>) {
        let _ = notification;
    }

    /// The members of a new ring (also the current one, when tracking starts); comes
    /// before the ring's quorum notification.
    fn nodelist(&mut self, notification: NodeListNotification<'_>) {
        let _ = notification;
    }

    /// The expected votes changed.
    fn expected_votes(&mut self, notification: ExpectedVotesNotification) {
        let _ = notification;
    }
}

/// A quorum callback of a [`VoteQuorumBuilder`]: a closure, or [`Unset`].
pub trait OnQuorum: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, notification: QuorumNotification<'_>);
}

/// A node list callback of a [`VoteQuorumBuilder`]: a closure, or [`Unset`].
pub trait OnNodeList: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, notification: NodeListNotification<'_>);
}

/// An expected votes callback of a [`VoteQuorumBuilder`]: a closure, or [`Unset`].
pub trait OnExpectedVotes: Send + 'static {
    /// Runs the callback.
    fn call(&mut self, notification: ExpectedVotesNotification);
}

impl OnQuorum for Unset {
    fn call(&mut self, _: QuorumNotification<'_>) {}
}

impl OnNodeList for Unset {
    fn call(&mut self, _: NodeListNotification<'_>) {}
}

impl OnExpectedVotes for Unset {
    fn call(&mut self, _: ExpectedVotesNotification) {}
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

impl<F: FnMut(ExpectedVotesNotification) + Send + 'static> OnExpectedVotes for F {
    fn call(&mut self, notification: ExpectedVotesNotification) {
        self(notification)
    }
}

/// The three closures of a [`VoteQuorumBuilder`], as [`VoteQuorumCallbacks`].
#[derive(Debug, Default)]
pub struct VoteQuorumClosures<Q, N, E> {
    quorum: Q,
    nodelist: N,
    expected_votes: E,
}

impl<Q: OnQuorum, N: OnNodeList, E: OnExpectedVotes> VoteQuorumCallbacks
    for VoteQuorumClosures<Q, N, E>
{
    fn quorum(&mut self, notification: QuorumNotification<'_>) {
        self.quorum.call(notification)
    }

    fn nodelist(&mut self, notification: NodeListNotification<'_>) {
        self.nodelist.call(notification)
    }

    fn expected_votes(&mut self, notification: ExpectedVotesNotification) {
        self.expected_votes.call(notification)
    }
}

/// Builds a [`VoteQuorum`] handle from closures; made by [`VoteQuorum::builder`].
/// Unset callbacks do nothing.
#[derive(Debug)]
#[must_use = "a builder does nothing until .build()"]
pub struct VoteQuorumBuilder<Q, N, E> {
    callbacks: VoteQuorumClosures<Q, N, E>,
    daemon_uid: Option<u32>,
}

impl<Q: OnQuorum, N: OnNodeList, E: OnExpectedVotes> VoteQuorumBuilder<Q, N, E> {
    /// Called with every quorum notification.
    pub fn on_quorum<F>(self, f: F) -> VoteQuorumBuilder<F, N, E>
    where
        F: FnMut(QuorumNotification<'_>) + Send + 'static,
    {
        let VoteQuorumClosures {
            nodelist,
            expected_votes,
            ..
        } = self.callbacks;
        VoteQuorumBuilder {
            callbacks: VoteQuorumClosures {
                quorum: f,
                nodelist,
                expected_votes,
            },
            daemon_uid: self.daemon_uid,
        }
    }

    /// Called with every node list notification.
    pub fn on_nodelist<F>(self, f: F) -> VoteQuorumBuilder<Q, F, E>
    where
        F: FnMut(NodeListNotification<'_>) + Send + 'static,
    {
        let VoteQuorumClosures {
            quorum,
            expected_votes,
            ..
        } = self.callbacks;
        VoteQuorumBuilder {
            callbacks: VoteQuorumClosures {
                quorum,
                nodelist: f,
                expected_votes,
            },
            daemon_uid: self.daemon_uid,
        }
    }

    /// Called with every expected votes notification.
    pub fn on_expected_votes<F>(self, f: F) -> VoteQuorumBuilder<Q, N, F>
    where
        F: FnMut(ExpectedVotesNotification) + Send + 'static,
    {
        let VoteQuorumClosures {
            quorum, nodelist, ..
        } = self.callbacks;
        VoteQuorumBuilder {
            callbacks: VoteQuorumClosures {
                quorum,
                nodelist,
                expected_votes: f,
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

    /// Connects to the local daemon's votequorum service.
    pub fn build(self) -> Result<VoteQuorum> {
        VoteQuorum::with_daemon_uid(self.callbacks, self.daemon_uid)
    }
}

/// libvotequorum, as the service core drives it.
struct VoteQuorumLibrary;

/// libvotequorum's open handles (its handle table is its own).
static VOTEQUORUM_HANDLES: HandleSlots = HandleSlots::new();

impl Library for VoteQuorumLibrary {
    const SERVICE: Service = Service::VoteQuorum;
    const INITIALIZE: Operation = Operation::VoteQuorumInitialize;
    const FINALIZE: Operation = Operation::VoteQuorumFinalize;
    const FD_GET: Operation = Operation::VoteQuorumFdGet;
    const DISPATCH: Operation = Operation::VoteQuorumDispatch;

    fn slots() -> &'static HandleSlots {
        &VOTEQUORUM_HANDLES
    }

    unsafe fn finalize(raw: u64) -> sys::cs_error_t {
        // SAFETY: per the trait's contract.
        unsafe { sys::votequorum_finalize(raw) }
    }

    unsafe fn fd_get(raw: u64, fd: *mut c_int) -> sys::cs_error_t {
        // SAFETY: per the trait's contract.
        unsafe { sys::votequorum_fd_get(raw, fd) }
    }

    unsafe fn dispatch(raw: u64, flags: sys::cs_dispatch_flags_t) -> sys::cs_error_t {
        // SAFETY: per the trait's contract.
        unsafe { sys::votequorum_dispatch(raw, flags) }
    }
}

/// A connection to the local corosync daemon's votequorum service, with its callbacks.
///
/// Made with [`VoteQuorum::builder`] (closures) or [`VoteQuorum::new`] (a
/// [`VoteQuorumCallbacks`] value). The requests ([`local_info`](Self::local_info),
/// [`set_votes`](Self::set_votes), the quorum device calls, ...) are quick round trips
/// to the local daemon. Notifications come while tracking
/// ([`track_start`](Self::track_start)) and are delivered by
/// [`dispatch`](Self::dispatch) on the calling thread; the descriptor ([`AsFd`])
/// becomes readable when notifications wait. Dropping the handle finalizes the
/// connection, then frees the callbacks; [`close`](Self::close) does the same and
/// reports an error. See the [module docs](self).
#[derive(Debug)]
pub struct VoteQuorum {
    core: ServiceHandle<VoteQuorumLibrary>,
    /// The daemon lists this connection among its trackers (a `track_start` with
    /// `CHANGES` or `CHANGES_ONLY` and no `track_stop` since).
    tracking: Cell<bool>,
}

/// Callbacks that do nothing (the quorum service, asked whether a provider exists).
struct Nothing;

impl QuorumCallbacks for Nothing {}

impl VoteQuorum {
    /// A builder that takes closures for the callbacks.
    pub fn builder() -> VoteQuorumBuilder<Unset, Unset, Unset> {
        VoteQuorumBuilder {
            callbacks: VoteQuorumClosures::default(),
            daemon_uid: Some(0),
        }
    }

    /// Connects to the local daemon's votequorum service with these callbacks.
    ///
    /// Fails with [`Error::NoQuorumProvider`] when the daemon runs without a quorum
    /// provider, with [`CsError::Library`] when no daemon is running (or is reachable
    /// from this network namespace), [`CsError::Access`] when it refuses this user
    /// (the operation is `quorum_model_initialize` when the daemon has no provider:
    /// the quorum service, asked which it is, refused), and
    /// [`Error::TooManyServiceHandles`] when [`MAX_HANDLES`](crate::MAX_HANDLES)
    /// votequorum handles are open in this process.
    pub fn new<C: VoteQuorumCallbacks>(callbacks: C) -> Result<VoteQuorum> {
        VoteQuorum::with_daemon_uid(callbacks, Some(0))
    }

    /// [`new`](Self::new), checking that the daemon runs as `daemon_uid` (`None`: no
    /// check; see [`VoteQuorumBuilder::daemon_uid`]).
    pub fn with_daemon_uid<C: VoteQuorumCallbacks>(
        callbacks: C,
        daemon_uid: Option<u32>,
    ) -> Result<VoteQuorum> {
        let connected = ServiceHandle::<VoteQuorumLibrary>::connect(callbacks, daemon_uid, |_| {
            initialize::<C>()
        });
        match connected {
            Ok(core) => Ok(VoteQuorum {
                core,
                tracking: Cell::new(false),
            }),
            Err(e) if e.code() == Some(CsError::Library) => Err(no_provider_or(e, daemon_uid)),
            Err(e) => Err(e),
        }
    }

    /// What a node is and has, and the cluster's votes and quorum as this daemon sees
    /// them (`votequorum_getinfo`). `nodeid` must not be 0 (to libvotequorum that means
    /// the local node, while in notifications it is the quorum device): use
    /// [`local_info`](Self::local_info).
    ///
    /// Fails with [`CsError::NotExist`] for a node votequorum does not know (it knows
    /// the nodes that have been members since the daemon started).
    pub fn node_info(&self, nodeid: u32) -> Result<NodeInfo> {
        if nodeid == sys::VOTEQUORUM_QDEVICE_NODEID {
            return Err(Error::InvalidArgument(
                "node_info(0): 0 is not a node id (it is the quorum device in \
                 notifications); use local_info for the local node",
            ));
        }
        self.getinfo(nodeid)
    }

    /// [`node_info`](Self::node_info) of the node this handle is connected to: what
    /// `corosync-quorumtool -s` prints under "Votequorum information".
    pub fn local_info(&self) -> Result<NodeInfo> {
        self.getinfo(sys::VOTEQUORUM_QDEVICE_NODEID)
    }

    fn getinfo(&self, nodeid: u32) -> Result<NodeInfo> {
        let mut info = sys::votequorum_info::default();
        self.core.call(Operation::VoteQuorumGetInfo, |raw| {
            // SAFETY: `raw` is live (the core checked it is usable); `info` is a valid
            // out pointer to a whole votequorum_info, which libvotequorum fills
            // (its name field with a NUL-terminated string copied from the daemon's
            // buffer of the same size).
            unsafe { sys::votequorum_getinfo(raw, nodeid, &mut info) }
        })?;
        Ok(NodeInfo::from_raw(&info))
    }

    /// Sets the cluster's expected votes (`votequorum_setexpected`, what
    /// `corosync-quorumtool -e` does): every node takes them, the quorum is
    /// recalculated (it may go down), and trackers get an expected votes notification.
    ///
    /// Fails with [`Error::InvalidArgument`] for 0, and with
    /// [`CsError::InvalidParam`] when the quorum for these expected votes
    /// (`expected / 2 + 1`) would exceed the votes present (corosync takes at most
    /// `2 × total votes − 1`).
    pub fn set_expected(&self, expected_votes: u32) -> Result<()> {
        if expected_votes == 0 {
            return Err(Error::InvalidArgument("set_expected needs at least 1 vote"));
        }
        self.core.call(Operation::VoteQuorumSetExpected, |raw| {
            // SAFETY: `raw` is live (checked usable); plain values.
            unsafe { sys::votequorum_setexpected(raw, expected_votes) }
        })
    }

    /// Sets a node's votes (`votequorum_setvotes`, what `corosync-quorumtool -v`
    /// does); node id 0 is the quorum device. The quorum is recalculated on every node.
    ///
    /// Fails with [`CsError::NameNotFound`] for a node votequorum does not know, and
    /// with [`CsError::InvalidParam`] when the votes left would be fewer than the
    /// quorum needs.
    pub fn set_votes(&self, nodeid: u32, votes: u32) -> Result<()> {
        self.core.call(Operation::VoteQuorumSetVotes, |raw| {
            // SAFETY: `raw` is live (checked usable); plain values.
            unsafe { sys::votequorum_setvotes(raw, nodeid, votes) }
        })
    }

    /// Starts tracking with context 0: see
    /// [`track_start_with_context`](Self::track_start_with_context).
    pub fn track_start(&self, track: Track) -> Result<()> {
        self.track_start_with_context(track, 0)
    }

    /// Starts tracking (`votequorum_trackstart`): with [`Track::CURRENT`] or
    /// [`Track::CHANGES`] the current state is queued at once (a node list
    /// notification on corosync 3, then a quorum notification); with `CHANGES` or
    /// [`Track::CHANGES_ONLY`] every later change is, until
    /// [`track_stop`](Self::track_stop). Every notification carries `context`: the
    /// current state this call's, the changes that of the call that started tracking
    /// them. Dispatch to receive them.
    ///
    /// Fails with [`Error::InvalidArgument`] for an empty set, and with
    /// [`CsError::Exist`] while this handle already tracks changes (corosync 3.1
    /// answers so after queueing the current state anyway; this crate refuses before
    /// asking, so that nothing is queued).
    pub fn track_start_with_context(&self, track: Track, context: u64) -> Result<()> {
        let op = Operation::VoteQuorumTrackStart;
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
            // SAFETY: `raw` is live (checked usable); plain values.
            unsafe { sys::votequorum_trackstart(raw, context, track.bits()) }
        })?;
        if track.follows_changes() {
            self.tracking.set(true);
        }
        Ok(())
    }

    /// Stops tracking changes (`votequorum_trackstop`). Notifications already queued
    /// are still delivered by the next dispatch. Fails with [`CsError::NotExist`] when
    /// this handle does not track changes.
    pub fn track_stop(&self) -> Result<()> {
        let op = Operation::VoteQuorumTrackStop;
        self.core.usable(op)?;
        if !self.tracking.get() {
            return Err(Error::Cs {
                op,
                code: CsError::NotExist,
            });
        }
        self.core.call(op, |raw| {
            // SAFETY: `raw` is live (checked usable).
            unsafe { sys::votequorum_trackstop(raw) }
        })?;
        self.tracking.set(false);
        Ok(())
    }

    /// Registers a quorum device of this name on this node
    /// (`votequorum_qdevice_register`; see the [module docs](self#writing-a-quorum-device)).
    /// It counts once it polls. Registering the name that is registered already
    /// succeeds (a device restarted after its process ended).
    ///
    /// Fails with [`CsError::Exist`] when a device of another name is registered on
    /// this node, [`CsError::TryAgain`] while another registration is in progress, and
    /// [`CsError::Access`] when corosync disabled quorum devices (a configuration
    /// reload that conflicts with the device).
    pub fn qdevice_register(&self, name: &QdeviceName) -> Result<()> {
        self.core.call(Operation::VoteQuorumQdeviceRegister, |raw| {
            // SAFETY: `raw` is live (checked usable); the name is a NUL-terminated
            // string of 1 to 254 bytes (QdeviceName's invariant), which libvotequorum
            // copies into its 255-byte request.
            unsafe { sys::votequorum_qdevice_register(raw, name.as_c_str().as_ptr()) }
        })
    }

    /// Unregisters this node's quorum device (`votequorum_qdevice_unregister`): its
    /// votes stop counting at once.
    ///
    /// Fails with [`CsError::NotExist`] when no device is registered on this node, and
    /// with [`CsError::InvalidParam`] when the registered one has another name.
    pub fn qdevice_unregister(&self, name: &QdeviceName) -> Result<()> {
        self.core
            .call(Operation::VoteQuorumQdeviceUnregister, |raw| {
                // SAFETY: as in `qdevice_register`.
                unsafe { sys::votequorum_qdevice_unregister(raw, name.as_c_str().as_ptr()) }
            })
    }

    /// Renames this node's quorum device (`votequorum_qdevice_update`), cluster-wide.
    ///
    /// Fails like [`qdevice_unregister`](Self::qdevice_unregister) when `old` is not
    /// the registered device.
    pub fn qdevice_update(&self, old: &QdeviceName, new: &QdeviceName) -> Result<()> {
        self.core.call(Operation::VoteQuorumQdeviceUpdate, |raw| {
            // SAFETY: as in `qdevice_register`, for both names.
            unsafe {
                sys::votequorum_qdevice_update(
                    raw,
                    old.as_c_str().as_ptr(),
                    new.as_c_str().as_ptr(),
                )
            }
        })
    }

    /// Tells votequorum the device is alive and whether it gives this partition its
    /// votes now (`votequorum_qdevice_poll`), for the ring `ring_id` (the latest node
    /// list notification's). Must be repeated within `quorum.device.timeout` (default
    /// 10 s), or the device is declared dead; see the
    /// [module docs](self#writing-a-quorum-device).
    ///
    /// Fails with [`CsError::MessageError`] when `ring_id` is not the current ring's
    /// (dispatch, then poll with the new one), [`CsError::NotExist`] when no device is
    /// registered on this node, [`CsError::InvalidParam`] when the registered one has
    /// another name, and [`CsError::Access`] when corosync disabled quorum devices.
    pub fn qdevice_poll(&self, name: &QdeviceName, cast_vote: bool, ring_id: RingId) -> Result<()> {
        let ring = sys::votequorum_ring_id_t {
            nodeid: ring_id.nodeid,
            seq: ring_id.seq,
        };
        self.core.call(Operation::VoteQuorumQdevicePoll, |raw| {
            // SAFETY: as in `qdevice_register`; the ring id is passed by value.
            unsafe {
                sys::votequorum_qdevice_poll(
                    raw,
                    name.as_c_str().as_ptr(),
                    u32::from(cast_vote),
                    ring,
                )
            }
        })
    }

    /// Allows (or forbids) "master wins" for this node's device
    /// (`votequorum_qdevice_master_wins`): while allowed and casting its vote, the
    /// device makes its partition quorate even without enough votes.
    ///
    /// Fails like [`qdevice_poll`](Self::qdevice_poll) (but takes no ring id).
    pub fn qdevice_master_wins(&self, name: &QdeviceName, allow: bool) -> Result<()> {
        self.core
            .call(Operation::VoteQuorumQdeviceMasterWins, |raw| {
                // SAFETY: as in `qdevice_register`.
                unsafe {
                    sys::votequorum_qdevice_master_wins(
                        raw,
                        name.as_c_str().as_ptr(),
                        u32::from(allow),
                    )
                }
            })
    }

    /// Delivers pending notifications to the callbacks, waiting or not according to
    /// `mode`, as [`Handle::dispatch`](crate::Handle::dispatch) does:
    /// [`Dispatched::NothingPending`] when a non-blocking mode found nothing, else the
    /// number of callbacks that ran. A lost daemon is an error for which
    /// [`Error::is_daemon_lost`] holds, and every later call fails the same way.
    ///
    /// If a callback panics, delivery stops, the panic resumes here once
    /// libvotequorum has returned, and the handle is poisoned: every later call fails
    /// with [`Error::Poisoned`]. Called from one of this handle's own callbacks
    /// (possible only through a thread-local), it fails with
    /// [`Error::ReentrantDispatch`]. On a thread with less than
    /// [`DISPATCH_STACK`](crate::DISPATCH_STACK) of stack left it fails with
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
    /// `votequorum_finalize` (dropping does the same and ignores it). A registered
    /// quorum device stays registered.
    pub fn close(self) -> Result<()> {
        self.core.close()
    }
}

/// `votequorum_initialize` failed with `CS_ERR_LIBRARY`: no daemon, or a daemon that
/// does not run votequorum. The quorum service tells them apart: when it answers that
/// no provider is configured, the error is [`Error::NoQuorumProvider`]; when it
/// refuses this user ([`CsError::Access`]) or is not run by `daemon_uid`
/// ([`Error::UntrustedDaemon`]), that error, which says what to change; otherwise (no
/// daemon, or a provider other than votequorum) `error`.
fn no_provider_or(error: Error, daemon_uid: Option<u32>) -> Error {
    match Quorum::with_daemon_uid(Nothing, daemon_uid) {
        Ok(quorum) if quorum.quorum_type() == QuorumType::NoProvider => Error::NoQuorumProvider,
        Err(
            e @ (Error::UntrustedDaemon { .. }
            | Error::Cs {
                code: CsError::Access,
                ..
            }),
        ) => e,
        _ => error,
    }
}

/// The descriptor is for polling only (register it with `poll`, epoll or a reactor,
/// then [`dispatch`](VoteQuorum::dispatch)). It is libqb's socket to the daemon:
/// reading from it takes the wake-up bytes libvotequorum counts notifications by, and
/// writing to it or shutting it down breaks the connection; neither is undefined
/// behaviour, both are bugs.
impl AsFd for VoteQuorum {
    /// The descriptor libvotequorum owns (closed by finalize): readable when
    /// notifications wait.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.core.as_fd()
    }
}

impl AsRawFd for VoteQuorum {
    fn as_raw_fd(&self) -> RawFd {
        self.core.as_raw_fd()
    }
}

/// Connects with the three callbacks registered (corosync 3). `votequorum_initialize`
/// takes no context: the trampolines find the state through the dispatch scope. Runs
/// under the library lock (see `ServiceHandle::connect`).
#[cfg(corosync_has_votequorum_nodelist)]
fn initialize<C: VoteQuorumCallbacks>() -> (sys::cs_error_t, u64) {
    let mut callbacks = sys::votequorum_callbacks_t {
        votequorum_quorum_notify_fn: Some(quorum_trampoline::<C>),
        votequorum_expectedvotes_notify_fn: Some(expected_votes_trampoline::<C>),
        votequorum_nodelist_notify_fn: Some(nodelist_trampoline::<C>),
    };
    let mut raw: sys::votequorum_handle_t = 0;
    // SAFETY: valid out pointer; libvotequorum copies the callbacks. The caller holds
    // the library lock and checked the stack.
    let rc = unsafe { sys::votequorum_initialize(&mut raw, &mut callbacks) };
    (rc, raw)
}

/// Connects with the corosync 2 callbacks: the quorum notification with a ring id.
#[cfg(not(corosync_has_votequorum_nodelist))]
fn initialize<C: VoteQuorumCallbacks>() -> (sys::cs_error_t, u64) {
    let mut callbacks = sys::votequorum_callbacks_t {
        votequorum_notify_fn: Some(v2_quorum_trampoline::<C>),
        votequorum_expectedvotes_notify_fn: Some(expected_votes_trampoline::<C>),
    };
    let mut raw: sys::votequorum_handle_t = 0;
    // SAFETY: valid out pointer; libvotequorum copies the callbacks. The caller holds
    // the library lock and checked the stack.
    let rc = unsafe { sys::votequorum_initialize(&mut raw, &mut callbacks) };
    (rc, raw)
}

/// Views a notification's node list as [`NodeStatus`]es.
///
/// # Safety
/// Unless `len` is 0, `list` points to `len` `votequorum_node_t`s valid and unmodified
/// for `'a`.
unsafe fn node_list<'a>(list: *const sys::votequorum_node_t, len: u32) -> &'a [NodeStatus] {
    // SAFETY: NodeStatus has votequorum_node_t's layout (checked at compile time in
    // `types`); the pointer and count are the caller's contract.
    unsafe { borrow_c_array(list.cast::<NodeStatus>(), len as usize) }
}

#[cfg(corosync_has_votequorum_nodelist)]
extern "C" fn quorum_trampoline<C: VoteQuorumCallbacks>(
    handle: sys::votequorum_handle_t,
    context: u64,
    quorate: u32,
    node_list_entries: u32,
    list: *mut sys::votequorum_node_t,
) {
    // SAFETY: libvotequorum passes `node_list_entries` entries at `list`, valid for the
    // duration of this call; the borrow ends with it.
    let nodes = unsafe { node_list(list.cast_const(), node_list_entries) };
    let notification = QuorumNotification {
        context,
        quorate: quorate != 0,
        nodes,
    };
    // SAFETY: libvotequorum calls this trampoline only from inside votequorum_dispatch
    // on `handle`, which `initialize::<C>` registered with a `State<C>`.
    unsafe { deliver::<VoteQuorumLibrary, C>(handle, |cb| cb.quorum(notification)) };
}

#[cfg(corosync_has_votequorum_nodelist)]
extern "C" fn nodelist_trampoline<C: VoteQuorumCallbacks>(
    handle: sys::votequorum_handle_t,
    context: u64,
    ring_id: sys::votequorum_ring_id_t,
    node_list_entries: u32,
    list: *mut u32,
) {
    // SAFETY: libvotequorum passes `node_list_entries` node ids at `list`, valid for
    // the duration of this call; the borrow ends with it.
    let members = unsafe { borrow_c_array(list.cast_const(), node_list_entries as usize) };
    let notification = NodeListNotification {
        context,
        ring_id: RingId {
            nodeid: ring_id.nodeid,
            seq: ring_id.seq,
        },
        members,
    };
    // SAFETY: libvotequorum calls this trampoline only from inside votequorum_dispatch
    // on `handle`, which `initialize::<C>` registered with a `State<C>`.
    unsafe { deliver::<VoteQuorumLibrary, C>(handle, |cb| cb.nodelist(notification)) };
}

extern "C" fn expected_votes_trampoline<C: VoteQuorumCallbacks>(
    handle: sys::votequorum_handle_t,
    context: u64,
    expected_votes: u32,
) {
    let notification = ExpectedVotesNotification {
        context,
        expected_votes,
    };
    // SAFETY: libvotequorum calls this trampoline only from inside votequorum_dispatch
    // on `handle`, which `initialize::<C>` registered with a `State<C>`.
    unsafe { deliver::<VoteQuorumLibrary, C>(handle, |cb| cb.expected_votes(notification)) };
}

/// corosync 2's quorum notification, with the ring id: a node list notification (the
/// members) then the quorum notification, as corosync 3 sends them.
#[cfg(not(corosync_has_votequorum_nodelist))]
extern "C" fn v2_quorum_trampoline<C: VoteQuorumCallbacks>(
    handle: sys::votequorum_handle_t,
    context: u64,
    quorate: u32,
    ring_id: sys::votequorum_ring_id_t,
    node_list_entries: u32,
    list: *mut sys::votequorum_node_t,
) {
    // SAFETY: libvotequorum passes `node_list_entries` entries at `list`, valid for the
    // duration of this call; the borrow ends with it.
    let nodes = unsafe { node_list(list.cast_const(), node_list_entries) };
    let members: Vec<u32> = nodes
        .iter()
        .filter(|n| n.state() == NodeState::Member && !n.is_qdevice())
        .map(|n| n.nodeid())
        .collect();
    let ring_id = RingId {
        nodeid: ring_id.nodeid,
        seq: ring_id.seq,
    };
    // SAFETY: libvotequorum calls this trampoline only from inside votequorum_dispatch
    // on `handle`, which `initialize::<C>` registered with a `State<C>`.
    unsafe {
        deliver::<VoteQuorumLibrary, C>(handle, |cb| {
            cb.nodelist(NodeListNotification {
                context,
                ring_id,
                members: &members,
            })
        })
    };
    let notification = QuorumNotification {
        context,
        quorate: quorate != 0,
        nodes,
    };
    // SAFETY: as above (`deliver` runs nothing once the node list callback panicked).
    unsafe { deliver::<VoteQuorumLibrary, C>(handle, |cb| cb.quorum(notification)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_become_owned_events() {
        let nodes = [
            NodeStatus::new(1, NodeState::Member),
            NodeStatus::new(2, NodeState::Dead),
            NodeStatus::new(0, NodeState::Member),
        ];
        let event = VoteQuorumEvent::from(QuorumNotification {
            context: 7,
            quorate: true,
            nodes: &nodes,
        });
        assert_eq!(
            event,
            VoteQuorumEvent::Quorum {
                context: 7,
                quorate: true,
                nodes: nodes.to_vec()
            }
        );
        let ring = RingId { nodeid: 2, seq: 9 };
        assert_eq!(
            VoteQuorumEvent::from(NodeListNotification {
                context: 1,
                ring_id: ring,
                members: &[1, 2],
            }),
            VoteQuorumEvent::NodeList {
                context: 1,
                ring_id: ring,
                members: vec![1, 2]
            }
        );
        assert_eq!(
            VoteQuorumEvent::from(ExpectedVotesNotification {
                context: 0,
                expected_votes: 5
            }),
            VoteQuorumEvent::ExpectedVotes {
                context: 0,
                expected_votes: 5
            }
        );
    }
}
