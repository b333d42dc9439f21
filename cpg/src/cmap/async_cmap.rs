//! [`AsyncCmap`]: cmap for async code (tokio), tracked changes as a stream of owned
//! [`Change`]s.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::Result;
use crate::service::stream::{DispatchNonblocking, ServiceStream};
use crate::types::{DispatchMode, Dispatched};

use super::{Change, Cmap, Map, TrackId, TrackType};

impl DispatchNonblocking for Cmap {
    fn dispatch_nonblocking(&self) -> Result<Dispatched> {
        self.dispatch(DispatchMode::OneNonblocking)
    }
}

/// A connection to cmap for async code (tokio): the changes of its tracks come as a
/// stream of owned [`Change`]s, each with its key, kind, old and new values.
///
/// Add tracks with [`track_key`](Self::track_key) / [`track_prefix`](Self::track_prefix),
/// then read changes with [`next_change`](Self::next_change) or as a
/// [`Stream`](futures_core::Stream) of `Result<Change>`. Reads and writes are quick
/// synchronous requests to the local daemon, through [`cmap`](Self::cmap). The stream
/// ends after a connection failure: it yields the error (for a lost daemon one for
/// which [`Error::is_daemon_lost`](crate::Error::is_daemon_lost) holds), then `None`
/// forever.
///
/// The task that polls dispatches on its thread, which needs
/// [`DISPATCH_STACK`](crate::DISPATCH_STACK) of stack left (tokio's workers have 2 MiB).
///
/// ```no_run
/// use cpg::cmap::{AsyncCmap, TrackType};
///
/// # async fn run() -> Result<(), cpg::Error> {
/// let mut cmap = AsyncCmap::new()?;
/// cmap.track_prefix("nodelist.", TrackType::ALL)?;
/// while let Some(change) = cmap.next_change().await {
///     let change = change?;
///     println!("{} {}: {:?} -> {:?}", change.key, change.kind, change.old, change.new);
/// }
/// # Ok(())
/// # }
/// ```
///
/// Dropping it deregisters the descriptor from the reactor, then finalizes the
/// connection.
#[derive(Debug)]
pub struct AsyncCmap {
    stream: ServiceStream<Cmap, Change>,
}

impl AsyncCmap {
    /// Connects to the local daemon's main map and registers the connection with the
    /// current tokio runtime. Fails like [`Cmap::new`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime context, or in a runtime without the IO driver.
    pub fn new() -> Result<AsyncCmap> {
        AsyncCmap::connect(Map::Main, Some(0))
    }

    /// Connects to `map`, checking that the daemon runs as `daemon_uid` (`None`: no
    /// check), like [`Cmap::connect`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime context, or in a runtime without the IO driver.
    pub fn connect(map: Map, daemon_uid: Option<u32>) -> Result<AsyncCmap> {
        let stream = ServiceStream::new("cpg::cmap::AsyncCmap", |_queue| {
            Cmap::connect(map, daemon_uid)
        })?;
        Ok(AsyncCmap { stream })
    }

    /// The handle, for reads, writes, iteration and [`Cmap::delete_track`]. (Its
    /// [`dispatch`](Cmap::dispatch) is the stream's job: changes it delivered
    /// itself would still come out of the stream, but not wake it.)
    pub fn cmap(&self) -> &Cmap {
        self.stream.get_ref()
    }

    /// Tracks `key` ([`Cmap::track_key`]); its changes come out of the stream.
    pub fn track_key(&self, key: &str, types: TrackType) -> Result<TrackId> {
        let queue = self.stream.queue();
        self.cmap()
            .track_key(key, types, move |_, change| queue.push(change))
    }

    /// Tracks the keys under `prefix` ([`Cmap::track_prefix`]); their changes come out
    /// of the stream.
    pub fn track_prefix(&self, prefix: &str, types: TrackType) -> Result<TrackId> {
        let queue = self.stream.queue();
        self.cmap()
            .track_prefix(prefix, types, move |_, change| queue.push(change))
    }

    /// Deletes a track ([`Cmap::delete_track`]); changes of it already queued still
    /// come out of the stream.
    pub fn delete_track(&self, track: TrackId) -> Result<()> {
        self.cmap().delete_track(track)
    }

    /// The next change: waits (without blocking the thread) until one arrives. `None`
    /// once the stream has ended (after it reported a connection failure as
    /// `Some(Err(..))`). Cancellation-safe: a change is taken off the queue only in the
    /// poll that returns it.
    pub async fn next_change(&mut self) -> Option<Result<Change>> {
        poll_fn(|cx| self.poll_change(cx)).await
    }

    /// Polls for the next change; the building block of
    /// [`next_change`](Self::next_change) and of the [`Stream`](futures_core::Stream)
    /// implementation.
    pub fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Change>>> {
        self.stream.poll_event(cx)
    }

    /// Deregisters from the reactor, then finalizes the connection, reporting a failure
    /// of `cmap_finalize` (dropping does the same and ignores it). Queued changes are
    /// discarded.
    pub fn close(self) -> Result<()> {
        self.stream.into_inner().close()
    }
}

impl futures_core::Stream for AsyncCmap {
    type Item = Result<Change>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_change(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl futures_core::FusedStream for AsyncCmap {
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}
