//! [`AsyncVoteQuorum`]: the votequorum service for async code (tokio), its
//! notifications as a stream of owned [`VoteQuorumEvent`]s.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::Result;
use crate::service::stream::{DispatchNonblocking, EventQueue, ServiceStream};
use crate::types::{DispatchMode, Dispatched, RingId};

use super::{ExpectedVotesNotification, NodeListNotification, QuorumNotification};
use super::{NodeInfo, QdeviceName, Track, VoteQuorum, VoteQuorumCallbacks, VoteQuorumEvent};

/// The callbacks of an [`AsyncVoteQuorum`]: every notification, copied into the
/// stream's queue.
struct Enqueue(EventQueue<VoteQuorumEvent>);

impl VoteQuorumCallbacks for Enqueue {
    fn quorum(&mut self, notification: QuorumNotification<'_>) {
        self.0.push(notification.into());
    }

    fn nodelist(&mut self, notification: NodeListNotification<'_>) {
        self.0.push(notification.into());
    }

    fn expected_votes(&mut self, notification: ExpectedVotesNotification) {
        self.0.push(notification.into());
    }
}

impl DispatchNonblocking for VoteQuorum {
    fn dispatch_nonblocking(&self) -> Result<Dispatched> {
        self.dispatch(DispatchMode::OneNonblocking)
    }
}

/// A connection to the votequorum service for async code (tokio): notifications come
/// as a stream of owned [`VoteQuorumEvent`]s; the requests (info, votes, the quorum
/// device calls) are the [`VoteQuorum`] ones, quick round trips to the local daemon.
///
/// Start tracking ([`track_start`](Self::track_start)), then read events with
/// [`next_event`](Self::next_event) or as a [`Stream`](futures_core::Stream) of
/// `Result<VoteQuorumEvent>`. The stream ends after a connection failure: it yields
/// the error (for a lost daemon one for which
/// [`Error::is_daemon_lost`](crate::Error::is_daemon_lost) holds), then `None`
/// forever; make a new handle once the daemon is back.
///
/// The task that polls dispatches on its thread, which needs
/// [`DISPATCH_STACK`](crate::DISPATCH_STACK) of stack left (tokio's workers have 2 MiB);
/// on a thread with less the stream yields
/// [`Error::StackTooSmall`](crate::Error::StackTooSmall) and stays open. The runtime
/// needs its IO driver.
///
/// ```no_run
/// use cpg::votequorum::{AsyncVoteQuorum, Track, VoteQuorumEvent};
///
/// # async fn run() -> Result<(), cpg::Error> {
/// let mut vq = AsyncVoteQuorum::new()?;
/// println!("{} votes", vq.local_info()?.votes);
/// vq.track_start(Track::CHANGES)?;
/// while let Some(event) = vq.next_event().await {
///     match event? {
///         VoteQuorumEvent::Quorum { quorate, nodes, .. } => println!("quorate {quorate}: {nodes:?}"),
///         VoteQuorumEvent::ExpectedVotes { expected_votes, .. } => println!("expected {expected_votes}"),
///         _ => {}
///     }
/// }
/// # Ok(())
/// # }
/// ```
///
/// Dropping it deregisters the descriptor from the reactor, then finalizes the
/// connection.
#[derive(Debug)]
pub struct AsyncVoteQuorum {
    stream: ServiceStream<VoteQuorum, VoteQuorumEvent>,
}

impl AsyncVoteQuorum {
    /// Connects to the local daemon's votequorum service and registers the connection
    /// with the current tokio runtime. Fails like [`VoteQuorum::new`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime context, or in a runtime without the IO driver.
    pub fn new() -> Result<AsyncVoteQuorum> {
        AsyncVoteQuorum::with_daemon_uid(Some(0))
    }

    /// [`new`](Self::new), checking that the daemon runs as `daemon_uid` (`None`: no
    /// check; see [`VoteQuorumBuilder::daemon_uid`](super::VoteQuorumBuilder::daemon_uid)).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime context, or in a runtime without the IO driver.
    pub fn with_daemon_uid(daemon_uid: Option<u32>) -> Result<AsyncVoteQuorum> {
        let stream = ServiceStream::new("cpg::votequorum::AsyncVoteQuorum", |queue| {
            VoteQuorum::with_daemon_uid(Enqueue(queue), daemon_uid)
        })?;
        Ok(AsyncVoteQuorum { stream })
    }

    /// The next event: waits (without blocking the thread) until one arrives. `None`
    /// once the stream has ended (after it reported a connection failure as
    /// `Some(Err(..))`). Cancellation-safe: an event is taken off the queue only in the
    /// poll that returns it.
    pub async fn next_event(&mut self) -> Option<Result<VoteQuorumEvent>> {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Polls for the next event; the building block of [`next_event`](Self::next_event)
    /// and of the [`Stream`](futures_core::Stream) implementation.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<VoteQuorumEvent>>> {
        self.stream.poll_event(cx)
    }

    fn handle(&self) -> &VoteQuorum {
        self.stream.get_ref()
    }

    /// [`VoteQuorum::node_info`].
    pub fn node_info(&self, nodeid: u32) -> Result<NodeInfo> {
        self.handle().node_info(nodeid)
    }

    /// [`VoteQuorum::local_info`].
    pub fn local_info(&self) -> Result<NodeInfo> {
        self.handle().local_info()
    }

    /// [`VoteQuorum::set_expected`].
    pub fn set_expected(&self, expected_votes: u32) -> Result<()> {
        self.handle().set_expected(expected_votes)
    }

    /// [`VoteQuorum::set_votes`].
    pub fn set_votes(&self, nodeid: u32, votes: u32) -> Result<()> {
        self.handle().set_votes(nodeid, votes)
    }

    /// Starts tracking ([`VoteQuorum::track_start`]); the notifications come out of
    /// the stream.
    pub fn track_start(&self, track: Track) -> Result<()> {
        self.handle().track_start(track)
    }

    /// [`VoteQuorum::track_start_with_context`]; the notifications come out of the
    /// stream.
    pub fn track_start_with_context(&self, track: Track, context: u64) -> Result<()> {
        self.handle().track_start_with_context(track, context)
    }

    /// Stops tracking changes ([`VoteQuorum::track_stop`]).
    pub fn track_stop(&self) -> Result<()> {
        self.handle().track_stop()
    }

    /// [`VoteQuorum::qdevice_register`].
    pub fn qdevice_register(&self, name: &QdeviceName) -> Result<()> {
        self.handle().qdevice_register(name)
    }

    /// [`VoteQuorum::qdevice_unregister`].
    pub fn qdevice_unregister(&self, name: &QdeviceName) -> Result<()> {
        self.handle().qdevice_unregister(name)
    }

    /// [`VoteQuorum::qdevice_update`].
    pub fn qdevice_update(&self, old: &QdeviceName, new: &QdeviceName) -> Result<()> {
        self.handle().qdevice_update(old, new)
    }

    /// [`VoteQuorum::qdevice_poll`].
    pub fn qdevice_poll(&self, name: &QdeviceName, cast_vote: bool, ring_id: RingId) -> Result<()> {
        self.handle().qdevice_poll(name, cast_vote, ring_id)
    }

    /// [`VoteQuorum::qdevice_master_wins`].
    pub fn qdevice_master_wins(&self, name: &QdeviceName, allow: bool) -> Result<()> {
        self.handle().qdevice_master_wins(name, allow)
    }

    /// Deregisters from the reactor, then finalizes the connection, reporting a failure
    /// of `votequorum_finalize` (dropping does the same and ignores it). Queued events
    /// are discarded.
    pub fn close(self) -> Result<()> {
        self.stream.into_inner().close()
    }
}

impl futures_core::Stream for AsyncVoteQuorum {
    type Item = Result<VoteQuorumEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl futures_core::FusedStream for AsyncVoteQuorum {
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}
