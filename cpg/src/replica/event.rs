//! What a replica [`Machine`](super::Machine) hands out: [`Event`]s for the
//! application (with the [`Discarded`] operations and the [`Failure`]s they carry),
//! [`Effect`]s for its driver, where it is ([`Phase`]) and its counters ([`Stats`]).

use crate::group::{AgreedQuorum, View};
use crate::types::Member;

use super::app::{Candidate, Summary};
use super::wire::RoundId;

/// Where this member is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not in a view (before the first, while disconnected, evicted).
    Detached,
    /// A round is running: operations are queued, the state may be replaced.
    Syncing,
    /// The view's members hold the same state; operations are applied as delivered.
    Ready,
}

/// An own operation that a restored state does not contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    /// Its sequence number (as returned by [`Machine::submit`](super::Machine::submit)).
    pub seq: u64,
    /// The operation.
    pub op: Vec<u8>,
}

/// Why a round failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// A member's deadline expired (for the transfer: its overall deadline too, see
    /// [`Config::min_transfer_rate`](super::Config::min_transfer_rate)).
    Deadline,
    /// This member could not restore the transferred state: it leaves and joins
    /// again ([`Effect::Rejoin`]).
    RestoreFailed,
    /// The source's transfer did not match its header: more bytes or fewer than it
    /// announced, or a number of chunks that cannot hold them (every chunk of a
    /// non-empty state holds at least one byte, an empty state is one empty chunk).
    /// Every member sees it at the same point; the next attempt follows.
    BadTransfer,
    /// The source announced a state larger than
    /// [`Config::max_state_size`](super::Config::max_state_size); the next
    /// attempt follows.
    TooLarge,
    /// The state restored here does not have the digest the source announced (a
    /// chunk damaged on its way, or a snapshot that does not restore to the state it
    /// was taken from). This member does not report [`Event::Synced`]: its state now
    /// has no history (version 0, so that it wins no round), and it leaves and joins
    /// again ([`Effect::Rejoin`]) to get the state in a new round.
    Damaged,
    /// Verification found members with different states.
    Diverged,
}

/// What the machine tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new view was installed; a round starts.
    View(View),
    /// A round ended: the members of the view hold `summary`'s state (queued
    /// operations are applied right after).
    Synced {
        /// The round.
        round: RoundId,
        /// Whose state was chosen.
        source: Member,
        /// The chosen state.
        summary: Summary,
        /// Whether a state was sent (false when all summaries were equal).
        transferred: bool,
    },
    /// This member's state was replaced by the source's: a new member catching up, or
    /// the losing side of a merge.
    Restored {
        /// The round.
        round: RoundId,
        /// Whose state it is now.
        source: Member,
        /// The state before.
        previous: Summary,
        /// The state now.
        current: Summary,
        /// Own operations that the replaced state's history held and the new one does
        /// not (the source sends, per member, which of its operations its history
        /// holds), oldest first, among the last
        /// [`Config::own_log_limit`](super::Config::own_log_limit) own ones; then own
        /// operations delivered while this member could not apply them (a
        /// failed restore, [`Failure::RestoreFailed`] or [`Failure::Damaged`]) that the
        /// new one does not hold (those it holds are reported [`Event::Applied`] now,
        /// with its version). A later merge can bring one back, in a history that has
        /// it.
        discarded: Vec<Discarded>,
    },
    /// An own operation was applied, on the state the view agreed on (the driver
    /// resolves its ticket with the output of [`Replicated::apply`]; see the
    /// [module documentation](super#results) for the case of an operation applied
    /// while the view changed during a round, reported once the next round ends).
    ///
    /// [`Replicated::apply`]: super::Replicated::apply
    Applied {
        /// Its sequence number.
        seq: u64,
        /// The state's version after it.
        version: u64,
    },
    /// The state learned the view's member list ([`Replicated::apply_view`]), at the
    /// same point of the history on every member of the view: after the round
    /// `round`, before the operations delivered during it. Once per view whose round
    /// ended.
    ///
    /// [`Replicated::apply_view`]: super::Replicated::apply_view
    ViewApplied {
        /// The round that ended the view's synchronisation.
        round: RoundId,
        /// The view's members, sorted.
        members: Vec<Member>,
        /// The state's version at the change (operations applied before it).
        version: u64,
    },
    /// An operation, own or another member's, was applied here: with
    /// [`Config::report_changes`](super::Config::report_changes) only, one event per
    /// operation, in the order applied (for a front end that shows the state as
    /// others change it). Own operations are also reported [`Event::Applied`].
    Changed {
        /// The member that submitted it.
        origin: Member,
        /// Its sequence number at the origin.
        seq: u64,
        /// The state's version after it.
        version: u64,
    },
    /// An own operation was not applied, by any member: the agreed quorum at its
    /// delivery, `quorum`, did not permit it ([`Pending`](AgreedQuorum::Pending) or
    /// [`NotQuorate`](AgreedQuorum::NotQuorate); see the
    /// [module documentation](super#quorum)). Submitting it again is safe. The
    /// drivers fail its ticket with
    /// [`ReplicaError::NotQuorate`](super::ReplicaError::NotQuorate).
    NotQuorate {
        /// Its sequence number.
        seq: u64,
        /// The agreed quorum where it was delivered.
        quorum: AgreedQuorum,
    },
    /// The agreed quorum changed, at this point of the state's history (the same on
    /// every member of the view: a change delivered during a round is reported after
    /// it, in its place among the queued operations). Not reported without a quorum
    /// provider.
    Quorum {
        /// The agreed quorum from here on.
        state: AgreedQuorum,
        /// The state's quorum epoch after the change ([`Summary::epoch`]): one more
        /// where the state became quorate after pending or not quorate, unless the
        /// change was queued in a round that a view change cut short (the state was
        /// not the view's agreed one).
        epoch: u64,
    },
    /// A read barrier passed: everything ordered before this member's barriers up to
    /// `id` ([`Machine::barrier`](super::Machine::barrier)) is applied here, in the
    /// state the view agreed on. The drivers resolve their barriers with it.
    Barrier {
        /// The highest barrier passed (every lower one passed too).
        id: u64,
        /// The state's version now.
        version: u64,
    },
    /// All members had the same state at the point of a verification.
    Verified {
        /// Which check (per issuer).
        check: u64,
        /// The state they all had.
        summary: Summary,
    },
    /// Members had different states at the same point of the agreed order; a new
    /// round follows.
    Diverged {
        /// Which check.
        check: u64,
        /// Every member's summary.
        summaries: Vec<Candidate>,
    },
    /// A round failed; the next attempt follows.
    RoundFailed {
        /// The failed attempt.
        attempt: u32,
        /// Why.
        why: Failure,
    },
    /// [`Config::max_attempts`](super::Config::max_attempts) rounds failed in this view:
    /// [`Effect::Rejoin`] follows.
    GaveUp {
        /// Rounds tried.
        attempts: u32,
    },
    /// A member speaks a newer protocol version: its messages are ignored and it is
    /// left out of rounds (it is refused, not misread). Reported once per member and
    /// view.
    Refused {
        /// The member.
        from: Member,
        /// Its protocol version.
        version: u8,
    },
    /// A delivered message that is not a replica message. Reported once per member
    /// and view (every one is counted in [`Stats::malformed`]).
    Malformed {
        /// The sender.
        from: Member,
        /// Its length.
        len: usize,
    },
}

/// What the machine asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Send these bytes to the group (through the group layer, in this order).
    Send(Vec<u8>),
    /// Leave the group and join again (a new connection).
    Rejoin,
}

/// Counters of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Rounds completed.
    pub rounds: u64,
    /// Rounds failed.
    pub failed_rounds: u64,
    /// States restored here.
    pub restores: u64,
    /// States sent from here.
    pub states_sent: u64,
    /// Snapshot bytes received in completed transfers.
    pub bytes_received: u64,
    /// Operations applied here.
    pub applied: u64,
    /// Messages of another round or view, dropped.
    pub stale: u64,
    /// Operations waiting for the round to end.
    pub queued_ops: usize,
    /// Delivered messages that were not replica messages.
    pub malformed: u64,
    /// Read-barrier markers sent (concurrent barriers share them).
    pub marks_sent: u64,
    /// View changes applied to the state ([`Event::ViewApplied`]).
    pub views_applied: u64,
    /// Operations (of every origin) refused because the agreed quorum at their
    /// delivery did not permit them ([`Event::NotQuorate`] for own ones).
    pub not_quorate: u64,
}
