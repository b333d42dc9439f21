//! What a group [`Machine`](super::Machine) hands out: [`Event`]s for the application
//! (with the [`Delivery`], [`Position`], [`SendId`] and [`StopReason`] they carry),
//! [`Effect`]s for its driver, and its counters ([`Stats`]).

use bytes::Bytes;

use crate::error::Error;
use crate::types::{Member, RingId};

use super::error::GroupError;
use super::quorum::AgreedQuorum;
use super::view::{View, ViewId};

/// Identifies one message given to [`Machine::send`](super::Machine::send); ids grow by
/// one per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SendId(pub u64);

/// Where a message was delivered: the view it was delivered in and how many
/// deliveries were made in that view before it. A delivery is an application message
/// of any sender (each message of a batch counts alone: a batch of n takes n
/// consecutive positions), a malformed frame (a malformed batch counts once) or one
/// of the layer's quorum markers.
///
/// The [`index`](Position::index) is agreed: members that install the same view (the
/// same member list) and deliver the message in it give it the same index, because
/// CPG delivers the same messages in the same order between two configuration changes
/// to every member (virtual synchrony). The [`view`](Position::view) id is local (see
/// [`ViewId`]); [`total`](Position::total) counts the deliveries this process made
/// since it first joined (a batch of n messages counts n), and is local as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The view the message was delivered in.
    pub view: ViewId,
    /// Deliveries made in that view before this one.
    pub index: u64,
    /// Deliveries this process made before this one (all views, all incarnations).
    pub total: u64,
}

/// A message delivered to the group, with its CPG-reported sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The sender, as CPG reports it (node id, pid).
    pub from: Member,
    /// The payload (the layer's header removed): a slice of the buffer the layer
    /// copied the CPG message into, shared with the other messages of its batch and
    /// with the messages delivered around it (no allocation per message; cloning it
    /// copies no bytes). Holding it keeps that whole buffer alive (at least 64 KiB, or
    /// the whole CPG message if larger): copy out (`data.to_vec()`) what is kept long.
    pub data: Bytes,
    /// Where it was delivered.
    pub position: Position,
    /// Whether this process sent it (in its current connection).
    pub own: bool,
    /// The agreed quorum at its position: the same on every member that delivers it
    /// in the same view. Act on the message only if it
    /// [`permits`](AgreedQuorum::permits) (see the [module documentation](super)'s
    /// "Quorum" section).
    pub quorum: AgreedQuorum,
}

/// Why the layer stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Evicted with [`OnEviction::Stop`](super::OnEviction::Stop).
    Evicted,
    /// Reconnecting did not succeed within the reconnect budget; the last error.
    GaveUp(Error),
    /// A call failed in a way no retry can fix.
    Failed(Error),
}

/// What the machine tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new view was installed.
    View(View),
    /// The totem ring of the current view is known: every node change that led to the
    /// view has been reported by the daemon. Comes once per view, at once for a change
    /// of processes only, after the totem change for a change of nodes.
    Settled {
        /// The view.
        view: ViewId,
        /// Its ring.
        ring: RingId,
    },
    /// A message was delivered.
    Message(Delivery),
    /// The agreed quorum changed, at the same point of the delivery order on every
    /// member of the view: right after [`Event::View`] (to
    /// [`Pending`](AgreedQuorum::Pending)), at a totem change (a new ring: `Pending`
    /// again), and where a quorum marker for the current ring is delivered
    /// ([`Quorate`](AgreedQuorum::Quorate) / [`NotQuorate`](AgreedQuorum::NotQuorate)).
    /// Not reported where the state is [`Free`](AgreedQuorum::Free) from the start (no
    /// provider, or [`QuorumPolicy::Ignore`](super::QuorumPolicy::Ignore)): a group
    /// without a provider sees no such event.
    Quorum {
        /// The view.
        view: ViewId,
        /// The state from here on: every message of the view at
        /// [`index`](Event::Quorum::index) or later (until the next change) carries it.
        state: AgreedQuorum,
        /// Deliveries made in the view before the change (as
        /// [`Position::index`]): agreed, like the state.
        index: u64,
    },
    /// A message sent with confirmation was delivered back to this process: it has its
    /// place in the agreed order.
    Confirmed {
        /// The message.
        id: SendId,
        /// Where it was delivered.
        position: Position,
    },
    /// A message will not be sent, or its outcome is unknown.
    NotSent {
        /// The message.
        id: SendId,
        /// Why.
        error: GroupError,
    },
    /// This process is missing from a view it should be in, or is listed as having
    /// left without leaving. The [`OnEviction`](super::OnEviction) policy decides what
    /// follows.
    Evicted {
        /// The view without this process.
        view: View,
    },
    /// The connection to the daemon was lost; reconnecting follows.
    Disconnected {
        /// The error that showed it.
        error: Error,
    },
    /// Connected and joined again after [`Event::Disconnected`] or an eviction.
    Reconnected {
        /// The new connection's number.
        incarnation: u64,
        /// The first view of the new connection (also reported as [`Event::View`]).
        view: View,
    },
    /// This process left the group after [`Machine::leave`](super::Machine::leave). The last event.
    Left,
    /// The layer stopped for good. The last event.
    Stopped(StopReason),
    /// A delivered message without the layer's header (a member that does not use the
    /// layer), or a frame of the layer that this version does not read or that is not
    /// well formed (a batch whose lengths do not add up: none of its messages is
    /// delivered); it counts once for [`Position`].
    Malformed {
        /// The sender.
        from: Member,
        /// Its length.
        len: usize,
    },
}

/// What the machine asks its driver to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Drop the current handles, if any, make a new CPG handle (asking for the initial
    /// totem configuration) and, with [`QuorumPolicy::Corosync`](super::QuorumPolicy::Corosync),
    /// a quorum handle that tracks changes, then join the group; report with
    /// [`Machine::handle_connected`](super::Machine::handle_connected), then the quorum
    /// handle's `quorum_type` with [`Machine::handle_quorum`](super::Machine::handle_quorum).
    Connect,
    /// Send the bytes written into the buffer given to [`Machine::poll_effect`](super::Machine::poll_effect)
    /// (`cpg_mcast_joined`, one attempt); report with [`Machine::handle_send_result`](super::Machine::handle_send_result).
    Send(SendId),
    /// Send the bytes written into the buffer, a batch of the `count` queued messages
    /// from `first` on (ids `first`, `first + 1`, ...), as [`Effect::Send`] does;
    /// report with [`Machine::handle_send_result`](super::Machine::handle_send_result):
    /// one result for the whole batch. Only with batching on
    /// ([`Config::batch_bytes`](super::Config::batch_bytes)).
    SendBatch {
        /// The first message of the batch.
        first: SendId,
        /// How many messages it holds (at least 2).
        count: usize,
    },
    /// Send the bytes written into the buffer, a control frame of the layer (a quorum
    /// marker), as [`Effect::Send`] does; report with
    /// [`Machine::handle_send_result`](super::Machine::handle_send_result). Only a
    /// driver that reports a quorum provider gets it.
    SendControl,
    /// Leave the group; report with [`Machine::handle_leave_result`](super::Machine::handle_leave_result).
    Leave,
    /// Drop the current handles.
    Close,
}

/// Counters of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Messages waiting in the send queue (the one being sent included).
    pub queued: usize,
    /// Application messages the daemon accepted, batched or not.
    pub sent: u64,
    /// Batches the daemon accepted (each holds two or more of the messages counted in
    /// [`sent`](Stats::sent)).
    pub batches_sent: u64,
    /// Send attempts refused with back-pressure (`CS_ERR_TRY_AGAIN`, ...).
    pub pushbacks: u64,
    /// Deliveries made: application messages (each message of a batch counts),
    /// malformed frames and quorum markers; the next delivery's
    /// [`Position::total`].
    pub delivered: u64,
    /// Batches delivered (their messages are counted in
    /// [`delivered`](Stats::delivered)).
    pub batches_delivered: u64,
    /// Confirmed sends resolved as delivered.
    pub confirmed: u64,
    /// Messages reported with [`Event::NotSent`].
    pub not_sent: u64,
    /// Successful reconnections (incarnations after the first).
    pub reconnects: u64,
    /// Delivered frames that were not well formed (messages without the layer's
    /// header, malformed batches).
    pub malformed: u64,
    /// Delivered quorum markers (the layer's control frames; counted in
    /// [`delivered`](Stats::delivered) too).
    pub markers: u64,
    /// Quorum markers this process sent.
    pub markers_sent: u64,
}
