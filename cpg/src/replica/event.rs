//! What a [`Machine`](super::Machine) is configured with and what it tells: [`Config`], [`Event`],
//! [`Effect`], [`Phase`], [`Stats`].

use std::time::Duration;

use crate::group::View;
use crate::types::Member;

use super::app::{Candidate, Summary};
use super::wire::RoundId;

/// Settings of a [`Machine`](super::Machine).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// How long each stage of a round may take before this member asks for the next
    /// attempt (or, collecting summaries, for a decision without the silent ones):
    /// waiting for the start, collecting summaries (from the start, whatever arrives
    /// meanwhile), waiting for the state's header, and between two pieces of the state.
    /// Default 10 s. See also [`min_transfer_rate`](Self::min_transfer_rate).
    pub round_timeout: Duration,
    /// Failed rounds in one view after which the machine gives up on the view and
    /// asks its driver to leave and join again ([`Effect::Rejoin`]). Default 4.
    pub max_attempts: u32,
    /// Largest piece of a snapshot in one message. Default 256 KiB (a CPG message
    /// holds about 1 MiB before libcpg fragments it).
    pub chunk_size: usize,
    /// Largest state this member accepts, in bytes of its snapshot: a state transfer
    /// whose header announces more is refused at the header, before anything is
    /// buffered, and the round fails ([`Failure::TooLarge`]) for every member with the
    /// same setting: set it the same on every member. A member never buffers more
    /// than a header announced, so this bounds what a peer (buggy or hostile) can make
    /// it hold.
    ///
    /// Default 256 MiB. A snapshot is held in memory whole, twice around a transfer
    /// (the source's snapshot and its queued chunks; the receiver's buffer and the
    /// state it restores), and every view change that needs a transfer sends all of
    /// it while writes wait: a state near this size is sent in seconds at the rates
    /// measured on the test cluster (see the [module documentation](super)). Raise it
    /// for larger states; the source of a state above it sends its header only.
    pub max_state_size: usize,
    /// The slowest a state transfer may average, in bytes per second: a transfer must
    /// end within [`round_timeout`](Self::round_timeout) plus the announced length at
    /// this rate from its header, however steadily its chunks come (a source that
    /// trickles chunks cannot hold a round). Default 1 MiB/s: a state of 256 MiB gets
    /// 10 s + 256 s. `0` counts as 1 byte per second.
    pub min_transfer_rate: u64,
    /// How often the leader of a synced view asks every member to compare digests;
    /// `None`: only on [`Machine::verify`](super::Machine::verify). Default 30 s.
    pub verify_interval: Option<Duration>,
    /// Own applied operations remembered to report as discarded when a merge replaces
    /// the state. Default 10,000.
    pub own_log_limit: usize,
    /// The version of the state the machine starts with: 0 for a new, empty state;
    /// for a state loaded from disk, the version it had when saved (the latest
    /// [`Summary::version`] seen), so that the longest history still wins when a whole
    /// cluster restarts. Default 0.
    pub initial_version: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            round_timeout: Duration::from_secs(10),
            max_attempts: 4,
            chunk_size: 256 * 1024,
            max_state_size: 256 << 20,
            min_transfer_rate: 1 << 20,
            verify_interval: Some(Duration::from_secs(30)),
            own_log_limit: 10_000,
            initial_version: 0,
        }
    }
}

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
    /// [`Config::min_transfer_rate`]).
    Deadline,
    /// This member could not restore the transferred state: it leaves and joins
    /// again ([`Effect::Rejoin`]).
    RestoreFailed,
    /// The source's transfer did not match its header: more bytes or fewer than it
    /// announced, or a number of chunks that cannot hold them (every chunk of a
    /// non-empty state holds at least one byte, an empty state is one empty chunk).
    /// Every member sees it at the same point; the next attempt follows.
    BadTransfer,
    /// The source announced a state larger than [`Config::max_state_size`]; the next
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
        /// holds), oldest first, among the last [`Config::own_log_limit`] own ones;
        /// then own operations delivered while this member could not apply them (a
        /// failed restore, [`Failure::RestoreFailed`] or [`Failure::Damaged`]) that the
        /// new one does not hold (those it holds are reported [`Event::Applied`] now,
        /// with its version). A later merge can bring one back, in a history that has
        /// it.
        discarded: Vec<Discarded>,
    },
    /// An own operation was applied.
    Applied {
        /// Its sequence number.
        seq: u64,
        /// The state's version after it.
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
    /// [`Config::max_attempts`] rounds failed in this view: [`Effect::Rejoin`] follows.
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
}
