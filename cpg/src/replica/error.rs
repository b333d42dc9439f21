//! [`ReplicaError`]: why an operation of a replica was not applied, or why one of its
//! calls failed.

use crate::group::GroupError;

/// Why an operation or a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The replica stopped (dropped, left, or the group layer gave up). For a ticket:
    /// its operation was never handed to the daemon, so no member applies it.
    #[error("the replica has stopped")]
    Closed,
    /// The group layer did not send the operation, or lost track of it
    /// ([`GroupError::Unknown`]: the daemon accepted it, but the connection was lost or
    /// the replica stopped before it was applied here; it may or may not have been
    /// applied by the others, so do not submit it again blindly).
    #[error("operation not sent: {0}")]
    NotSent(GroupError),
    /// Joining the group failed.
    #[error("cannot join: {0}")]
    Join(GroupError),
    /// A wait timed out (the operation may still be applied later).
    #[error("timed out")]
    Timeout,
    /// The operation is in the state, as of `version`, but its output is unknown
    /// here: this member did not apply it to the state the view agreed on (it was out
    /// of sync when the operation was delivered, and then took the others' state,
    /// which holds it). Read the state to learn its effect. Rare: see the
    /// [module documentation](super#results).
    #[error("applied (as of version {version}), but its output is unknown here")]
    NoOutput {
        /// The state's version when this member learned that the state holds it.
        version: u64,
    },
    /// The operation was delivered while this member was out of sync, and the state
    /// it then took from the others does not hold it (also reported in
    /// [`Event::Restored`](super::Event::Restored)'s `discarded`).
    #[error("discarded: the state this member took from the others does not hold it")]
    Discarded,
    /// The cluster partition this member is in is not quorate (corosync's quorum):
    /// the operation was not applied by any member. Either `submit` failed at once
    /// (the local quorum says not quorate: nothing was sent), or it was delivered
    /// where the agreed quorum did not permit it (pending after a membership change,
    /// or not quorate; [`Event::NotQuorate`](super::Event::NotQuorate)). Retrying is
    /// safe. See the [module documentation](super#quorum).
    #[error("not quorate: the operation was not applied (retrying is safe)")]
    NotQuorate,
}
