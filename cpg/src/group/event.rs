//! The values the group state machine takes and hands out: send ids, positions,
//! deliveries, errors, policies, events, effects, counters and settings.

use std::time::Duration;

use crate::error::Error;
use crate::retry::Backoff;
use crate::types::{Member, RingId};

use super::view::{View, ViewId};

/// Identifies one message given to [`Machine::send`](super::Machine::send); ids grow by one per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SendId(pub u64);

/// Where a message was delivered: the view it was delivered in and how many messages
/// (of any sender) were delivered in that view before it.
///
/// The [`index`](Position::index) is agreed: members that install the same view (the
/// same member list) and deliver the message in it give it the same index, because
/// CPG delivers the same messages in the same order between two configuration changes
/// to every member (virtual synchrony). The [`view`](Position::view) id is local (see
/// [`ViewId`]); [`total`](Position::total) counts the messages this process delivered
/// since it first joined, and is local as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The view the message was delivered in.
    pub view: ViewId,
    /// Messages delivered in that view before this one.
    pub index: u64,
    /// Messages this process delivered before this one (all views, all incarnations).
    pub total: u64,
}

/// A message delivered to the group, with its CPG-reported sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The sender, as CPG reports it (node id, pid).
    pub from: Member,
    /// The payload (the layer's header removed).
    pub data: Vec<u8>,
    /// Where it was delivered.
    pub position: Position,
    /// Whether this process sent it (in its current connection).
    pub own: bool,
}

/// Why a message was not sent, or why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The send queue holds its limit of messages.
    #[error("send queue full ({limit} messages)")]
    QueueFull {
        /// The configured limit.
        limit: usize,
    },
    /// The group was left or stopped: nothing more can be sent or awaited.
    #[error("the group layer has stopped")]
    Closed,
    /// The message was still queued when the daemon was lost, and the policy is
    /// [`OnDisconnect::Drop`].
    #[error("not sent: the connection to the daemon was lost")]
    Disconnected,
    /// The daemon accepted the message but the connection was lost before its own copy
    /// came back: it may or may not have been delivered to the others.
    #[error("outcome unknown: the connection was lost before the message was delivered back")]
    Unknown,
    /// The daemon refused the message with an error that is not back-pressure.
    #[error("the daemon refused the message: {0}")]
    Rejected(Error),
    /// The group was left before the message was sent.
    #[error("not sent: the group was left")]
    Left,
    /// Connecting to the daemon, or joining the group, failed.
    #[error("cannot connect or join: {0}")]
    Connect(Error),
    /// A wait timed out (the message may still be delivered later).
    #[error("timed out")]
    Timeout,
}

/// What to do when this process finds itself evicted from the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnEviction {
    /// Close the connection, make a new one and join again (a new incarnation).
    #[default]
    Rejoin,
    /// Stop: [`Event::Stopped`] follows.
    Stop,
}

/// What happens to queued messages when the daemon is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDisconnect {
    /// Keep them and send them after reconnecting.
    #[default]
    Keep,
    /// Drop them, each reported with [`GroupError::Disconnected`]; sends while
    /// reconnecting fail with it at once.
    Drop,
}

/// Why the layer stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Evicted with [`OnEviction::Stop`].
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
    /// left without leaving. The [`OnEviction`] policy decides what follows.
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
    /// layer); it still counts for [`Position`].
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
    /// Drop the current handle, if any, make a new one (asking for the initial totem
    /// configuration), and join the group; report with
    /// [`Machine::handle_connected`](super::Machine::handle_connected).
    Connect,
    /// Send the bytes written into the buffer given to [`Machine::poll_effect`](super::Machine::poll_effect)
    /// (`cpg_mcast_joined`, one attempt); report with [`Machine::handle_send_result`](super::Machine::handle_send_result).
    Send(SendId),
    /// Leave the group; report with [`Machine::handle_leave_result`](super::Machine::handle_leave_result).
    Leave,
    /// Drop the current handle.
    Close,
}

/// Counters of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Messages waiting in the send queue (the one being sent included).
    pub queued: usize,
    /// Messages the daemon accepted.
    pub sent: u64,
    /// Send attempts refused with back-pressure (`CS_ERR_TRY_AGAIN`, ...).
    pub pushbacks: u64,
    /// Messages delivered (malformed ones included).
    pub delivered: u64,
    /// Confirmed sends resolved as delivered.
    pub confirmed: u64,
    /// Messages reported with [`Event::NotSent`].
    pub not_sent: u64,
    /// Successful reconnections (incarnations after the first).
    pub reconnects: u64,
    /// Delivered messages without the layer's header.
    pub malformed: u64,
}

/// Settings of a [`Machine`](super::Machine).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Most messages in the send queue; [`Machine::send`](super::Machine::send) refuses more with
    /// [`GroupError::QueueFull`]. Default 1,024. At least 1: the drivers refuse to
    /// start with 0 (a layer that can send nothing, and a replica over it that would
    /// never sync).
    pub queue_limit: usize,
    /// Policy on eviction. Default [`OnEviction::Rejoin`].
    pub on_eviction: OnEviction,
    /// Policy for queued messages when the daemon is lost. Default
    /// [`OnDisconnect::Keep`].
    pub on_disconnect: OnDisconnect,
    /// Pauses between reconnect attempts, and when to give up ([`Backoff::timeout`]
    /// from the loss, [`Backoff::max_attempts`]). Default: 100 ms doubling to 2 s, for
    /// 10 minutes.
    pub reconnect: Backoff,
    /// First pause after a send met back-pressure; it doubles up to
    /// [`send_retry_max`](Self::send_retry_max) and resets after a successful send.
    /// Default 100 µs. A queued message is retried until sent, lost or left.
    pub send_retry_initial: Duration,
    /// Longest pause between send attempts. Default 50 ms.
    pub send_retry_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            queue_limit: 1024,
            on_eviction: OnEviction::Rejoin,
            on_disconnect: OnDisconnect::Keep,
            reconnect: Backoff {
                initial: Duration::from_millis(100),
                max_delay: Duration::from_secs(2),
                timeout: Duration::from_secs(600),
                max_attempts: u32::MAX,
            },
            send_retry_initial: Duration::from_micros(100),
            send_retry_max: Duration::from_millis(50),
        }
    }
}
