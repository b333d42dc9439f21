//! What a replica [`Machine`](super::Machine) is configured with: [`Config`], its
//! deadlines, bounds and the version it starts from.

use std::time::Duration;

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
    /// asks its driver to leave and join again
    /// ([`Effect::Rejoin`](super::Effect::Rejoin)). Default 4.
    pub max_attempts: u32,
    /// Largest piece of a snapshot in one message. Default 256 KiB (a CPG message
    /// holds about 1 MiB before libcpg fragments it).
    pub chunk_size: usize,
    /// Largest state this member accepts, in bytes of its snapshot: a state transfer
    /// whose header announces more is refused at the header, before anything is
    /// buffered, and the round fails ([`Failure::TooLarge`](super::Failure::TooLarge))
    /// for every member with the same setting: set it the same on every member. A
    /// member never buffers more than a header announced, so this bounds what a peer
    /// (buggy or hostile) can make it hold.
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
    /// [`Summary::version`](super::Summary::version) seen), so that the longest
    /// history still wins when a whole cluster restarts. Default 0.
    pub initial_version: u64,
    /// Report every operation applied here, own or not ([`Event::Changed`]), for a
    /// front end that reacts to the others' writes. Off by default: one event per
    /// operation, queued until read. (Own operations are always reported
    /// [`Event::Applied`], view changes [`Event::ViewApplied`].)
    ///
    /// [`Event::Changed`]: super::Event::Changed
    /// [`Event::Applied`]: super::Event::Applied
    /// [`Event::ViewApplied`]: super::Event::ViewApplied
    pub report_changes: bool,
    /// Refuse operations delivered where corosync's agreed quorum does not permit
    /// them ([`AgreedQuorum::permits`](crate::group::AgreedQuorum::permits): pending
    /// or not quorate), on every member alike, and fail a submit at once while the
    /// local quorum says not quorate ([`ReplicaError::NotQuorate`]). Without a quorum
    /// provider (or with the group layer's
    /// [`QuorumPolicy::Ignore`](crate::group::QuorumPolicy::Ignore)) nothing is
    /// refused. Off: every operation is applied, as before quorum support; the
    /// quorum epoch still counts, so a quorate side's history still wins a merge
    /// (see the [module documentation](super#quorum)). Set it alike on every member.
    /// Default on.
    ///
    /// [`ReplicaError::NotQuorate`]: super::ReplicaError::NotQuorate
    pub gate_writes: bool,
    /// The quorum epoch of the state the machine starts with
    /// ([`Summary::epoch`](super::Summary::epoch)): 0 for a new state; for a state
    /// loaded from disk, the epoch it had when saved (as
    /// [`initial_version`](Self::initial_version)). Default 0.
    pub initial_epoch: u64,
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
            report_changes: false,
            gate_writes: true,
            initial_epoch: 0,
        }
    }
}
