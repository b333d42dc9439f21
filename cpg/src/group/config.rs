//! What a group [`Machine`](super::Machine) is configured with: [`Config`], and its
//! policies on eviction ([`OnEviction`]), on a lost daemon ([`OnDisconnect`]) and on
//! corosync's quorum ([`QuorumPolicy`]).

use std::time::Duration;

use crate::retry::Backoff;

/// [`Config::batch_bytes`]' default.
const DEFAULT_BATCH_BYTES: usize = 64 << 10;

/// The largest [`Config::batch_bytes`] the drivers accept.
pub(super) const MAX_BATCH_BYTES: usize = 1 << 20;

/// Settings of a [`Machine`](super::Machine).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Most messages in the send queue; [`Machine::send`](super::Machine::send) refuses
    /// more with [`GroupError::QueueFull`](super::GroupError::QueueFull). Default 1,024.
    /// At least 1: the drivers refuse to start with 0 (a layer that can send nothing,
    /// and a replica over it that would never sync).
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
    /// Whether to read corosync's quorum and agree on it in the delivery order (see the
    /// [module documentation](super)'s "Quorum" section). Default
    /// [`QuorumPolicy::Corosync`] when the crate's `quorum` feature is on (a default
    /// feature), [`QuorumPolicy::Ignore`] without it.
    pub quorum: QuorumPolicy,
    /// Largest batch, in bytes as sent (the layer's headers included): while the queue
    /// is under pressure, queued messages are packed into one CPG message up to this
    /// size (see the [module documentation](super)'s "The send queue" section). A
    /// message too large to share a batch goes alone. 0 turns batching off: every
    /// message goes alone, as a version-1 frame that members of earlier versions of
    /// the layer read too. Default 64 KiB: of 8, 16, 64 and 256 KiB the fastest for
    /// 64-byte messages on a 3-node cluster (see `build-support/bench/README.md`). Keep
    /// it below
    /// [`max_message_size`](crate::ConnectionRef::max_message_size) (about 1 MiB):
    /// libcpg fragments what is larger (still delivered whole, at a higher cost); the
    /// drivers refuse more than 1 MiB.
    pub batch_bytes: usize,
    /// With batching on: most frames (messages sent alone, and batches) this process
    /// has handed to the daemon and not yet seen delivered back. At the bound the
    /// queue holds, and what waits goes out packed when an own frame comes back. With
    /// fewer in flight, what is queued goes out at once (see
    /// [`batch_eager`](Config::batch_eager)). Default 4; at least 1 (the drivers
    /// refuse 0 with batching on).
    pub batch_window: usize,
    /// With batching on, below the window: `true` sends what the queue holds when a
    /// send can go as one batch (up to `batch_bytes`; a message alone when it is the
    /// only one queued), `false` sends queued messages one by one until the window is
    /// full, packing only what waits at the bound or after back-pressure. Default
    /// `true`: measured with the replica layer's operations (`build-support/bench`),
    /// one by one they took the window's frames one message each, and the messages
    /// queued behind them waited for a frame to come back. A message queued alone
    /// goes alone either way (as with batching off: the one-in-flight latency is the
    /// same).
    pub batch_eager: bool,
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
            quorum: QuorumPolicy::default(),
            batch_bytes: DEFAULT_BATCH_BYTES,
            batch_window: 4,
            batch_eager: true,
        }
    }
}

/// What to do when this process finds itself evicted from the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnEviction {
    /// Close the connection, make a new one and join again (a new incarnation).
    #[default]
    Rejoin,
    /// Stop: [`Event::Stopped`](super::Event::Stopped) follows.
    Stop,
}

/// What happens to queued messages when the daemon is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDisconnect {
    /// Keep them and send them after reconnecting.
    #[default]
    Keep,
    /// Drop them, each reported with
    /// [`GroupError::Disconnected`](super::GroupError::Disconnected); sends while
    /// reconnecting fail with it at once.
    Drop,
}

/// Whether the group layer reads corosync's quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuorumPolicy {
    /// Read it: the drivers keep a connection to corosync's quorum service beside the
    /// CPG connection, the members announce their node's quorum with markers in the
    /// agreed order, and every [`Delivery`](super::Delivery) carries the agreed state at
    /// its position ([`AgreedQuorum`](super::AgreedQuorum)). Where the daemon has no
    /// quorum provider the state is [`Free`](super::AgreedQuorum::Free) and nothing is
    /// sent. The default with the crate's `quorum` feature; the drivers refuse it
    /// without ([`GroupError::Connect`](super::GroupError::Connect)).
    Corosync,
    /// Do not read it: no quorum connection, no markers, every state
    /// [`Free`](super::AgreedQuorum::Free) (the behaviour before quorum support). The
    /// default without the `quorum` feature.
    Ignore,
}

impl Default for QuorumPolicy {
    fn default() -> Self {
        if cfg!(feature = "quorum") {
            QuorumPolicy::Corosync
        } else {
            QuorumPolicy::Ignore
        }
    }
}
