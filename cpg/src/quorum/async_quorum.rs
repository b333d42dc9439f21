//! [`AsyncQuorum`]: the quorum service for async code (tokio), its notifications as a
//! stream of owned [`QuorumEvent`]s.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::Result;
use crate::service::stream::{DispatchNonblocking, EventQueue, ServiceStream};
use crate::types::{DispatchMode, Dispatched};

use super::{NodeListNotification, Quorum, QuorumCallbacks, QuorumEvent, QuorumNotification};
use super::{QuorumType, Track};

/// The callbacks of an [`AsyncQuorum`]: every notification, copied into the stream's
/// queue.
struct Enqueue(EventQueue<QuorumEvent>);

impl QuorumCallbacks for Enqueue {
    fn quorum(&mut self, notification: QuorumNotification<'_>) {
        self.0.push(notification.into());
    }

    fn nodelist(&mut self, notification: NodeListNotification<'_>) {
        self.0.push(notification.into());
    }
}

impl DispatchNonblocking for Quorum {
    fn dispatch_nonblocking(&self) -> Result<Dispatched> {
        self.dispatch(DispatchMode::OneNonblocking)
    }
}

/// A connection to the quorum service for async code (tokio): notifications come as a
/// stream of owned [`QuorumEvent`]s.
///
/// Start tracking ([`track_start`](Self::track_start)), then read events with
/// [`next_event`](Self::next_event) or as a [`Stream`](futures_core::Stream) of
/// `Result<QuorumEvent>`. The stream ends after a connection failure: it yields the
/// error (for a lost daemon one for which [`Error::is_daemon_lost`](crate::Error::is_daemon_lost)
/// holds), then `None` forever; make a new handle once the daemon is back.
///
/// The task that polls dispatches on its thread, which needs
/// [`DISPATCH_STACK`](crate::DISPATCH_STACK) of stack left (tokio's workers have 2 MiB);
/// on a thread with less the stream yields
/// [`Error::StackTooSmall`](crate::Error::StackTooSmall) and stays open. The runtime
/// needs its IO driver.
///
/// ```no_run
/// use cpg::quorum::{AsyncQuorum, QuorumEvent, Track};
///
/// # async fn run() -> Result<(), cpg::Error> {
/// let mut quorum = AsyncQuorum::new()?;
/// quorum.track_start(Track::CHANGES)?;
/// while let Some(event) = quorum.next_event().await {
///     if let QuorumEvent::Quorum { quorate, ring_id, .. } = event? {
///         println!("ring {ring_id}: quorate {quorate}");
///     }
/// }
/// # Ok(())
/// # }
/// ```
///
/// Dropping it deregisters the descriptor from the reactor, then finalizes the
/// connection.
#[derive(Debug)]
pub struct AsyncQuorum {
    stream: ServiceStream<Quorum, QuorumEvent>,
}

impl AsyncQuorum {
    /// Connects to the local daemon's quorum service and registers the connection with
    /// the current tokio runtime. Fails like [`Quorum::new`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime context, or in a runtime without the IO driver.
    pub fn new() -> Result<AsyncQuorum> {
        AsyncQuorum::with_daemon_uid(Some(0))
    }

    /// [`new`](Self::new), checking that the daemon runs as `daemon_uid` (`None`: no
    /// check; see [`QuorumBuilder::daemon_uid`](super::QuorumBuilder::daemon_uid)).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime context, or in a runtime without the IO driver.
    pub fn with_daemon_uid(daemon_uid: Option<u32>) -> Result<AsyncQuorum> {
        let stream = ServiceStream::new("cpg::quorum::AsyncQuorum", |queue| {
            Quorum::with_daemon_uid(Enqueue(queue), daemon_uid)
        })?;
        Ok(AsyncQuorum { stream })
    }

    /// The next event: waits (without blocking the thread) until one arrives. `None`
    /// once the stream has ended (after it reported a connection failure as
    /// `Some(Err(..))`). Cancellation-safe: an event is taken off the queue only in the
    /// poll that returns it.
    pub async fn next_event(&mut self) -> Option<Result<QuorumEvent>> {
        poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Polls for the next event; the building block of [`next_event`](Self::next_event)
    /// and of the [`Stream`](futures_core::Stream) implementation.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<QuorumEvent>>> {
        self.stream.poll_event(cx)
    }

    /// Whether the daemon has a quorum provider ([`Quorum::quorum_type`]).
    pub fn quorum_type(&self) -> QuorumType {
        self.stream.get_ref().quorum_type()
    }

    /// Whether this node's partition is quorate now ([`Quorum::is_quorate`]). A quick
    /// synchronous request to the local daemon.
    pub fn is_quorate(&self) -> Result<bool> {
        self.stream.get_ref().is_quorate()
    }

    /// Starts tracking ([`Quorum::track_start`]); the notifications come out of the
    /// stream.
    pub fn track_start(&self, track: Track) -> Result<()> {
        self.stream.get_ref().track_start(track)
    }

    /// Stops tracking changes ([`Quorum::track_stop`]).
    pub fn track_stop(&self) -> Result<()> {
        self.stream.get_ref().track_stop()
    }

    /// Deregisters from the reactor, then finalizes the connection, reporting a failure
    /// of `quorum_finalize` (dropping does the same and ignores it). Queued events are
    /// discarded.
    pub fn close(self) -> Result<()> {
        self.stream.into_inner().close()
    }
}

impl futures_core::Stream for AsyncQuorum {
    type Item = Result<QuorumEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl futures_core::FusedStream for AsyncQuorum {
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}
