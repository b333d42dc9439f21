//! [`GroupError`]: why a message of the group layer was not sent, or why one of its
//! calls failed.

use crate::error::Error;

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
    /// [`OnDisconnect::Drop`](super::OnDisconnect::Drop).
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
