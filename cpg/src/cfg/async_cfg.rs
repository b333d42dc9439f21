//! [`AsyncCfg`]: shutdown requests for async code (tokio), as a stream.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::Result;
use crate::service::stream::{DispatchNonblocking, EventQueue, ServiceStream};
use crate::types::{DispatchMode, Dispatched};

use super::{Cfg, CfgCallbacks, ShutdownReply, ShutdownRequest};

/// The callbacks of an [`AsyncCfg`]: every request, into the stream's queue.
struct Enqueue(EventQueue<ShutdownRequest>);

impl CfgCallbacks for Enqueue {
    fn shutdown_requested(&mut self, request: ShutdownRequest) {
        self.0.push(request);
    }
}

impl DispatchNonblocking for Cfg {
    fn dispatch_nonblocking(&self) -> Result<Dispatched> {
        self.dispatch(DispatchMode::OneNonblocking)
    }
}

/// A connection to the cfg service for async code (tokio): shutdown requests come as
/// a stream of [`ShutdownRequest`]s; the service cleans up, then answers with
/// [`reply_to_shutdown`](Self::reply_to_shutdown).
///
/// The stream ends after a connection failure (once corosync has stopped, for
/// example): it yields the error, then `None` forever. The task that polls dispatches
/// on its thread, which needs [`DISPATCH_STACK`](crate::DISPATCH_STACK) of stack left
/// (tokio's workers have 2 MiB).
///
/// ```no_run
/// use cpg::cfg::{AsyncCfg, ShutdownReply};
///
/// # async fn run() -> Result<(), cpg::Error> {
/// let mut cfg = AsyncCfg::new()?;
/// cfg.track_start()?;
/// while let Some(request) = cfg.next_request().await {
///     let request = request?;
///     println!("corosync wants to stop ({})", request.mode);
///     // ... leave the CPG groups, flush ...
///     cfg.reply_to_shutdown(ShutdownReply::Yes)?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncCfg {
    stream: ServiceStream<Cfg, ShutdownRequest>,
}

impl AsyncCfg {
    /// Connects to the local daemon's cfg service and registers the connection with
    /// the current tokio runtime. Fails like [`Cfg::new`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime context, or in a runtime without the IO driver.
    pub fn new() -> Result<AsyncCfg> {
        AsyncCfg::with_daemon_uid(Some(0))
    }

    /// [`new`](Self::new), checking that the daemon runs as `daemon_uid` (`None`: no
    /// check).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime context, or in a runtime without the IO driver.
    pub fn with_daemon_uid(daemon_uid: Option<u32>) -> Result<AsyncCfg> {
        let stream = ServiceStream::new("cpg::cfg::AsyncCfg", |queue| {
            Cfg::with_daemon_uid(Enqueue(queue), daemon_uid)
        })?;
        Ok(AsyncCfg { stream })
    }

    /// The handle, for its queries and commands ([`Cfg::local_node_id`],
    /// [`Cfg::node_status`], ...). Its [`dispatch`](Cfg::dispatch) is the stream's job.
    pub fn cfg(&self) -> &Cfg {
        self.stream.get_ref()
    }

    /// Registers as a shutdown tracker ([`Cfg::track_start`]); requests come out of
    /// the stream.
    pub fn track_start(&self) -> Result<()> {
        self.cfg().track_start()
    }

    /// Stops tracking ([`Cfg::track_stop`]).
    pub fn track_stop(&self) -> Result<()> {
        self.cfg().track_stop()
    }

    /// Answers the request the stream yielded ([`Cfg::reply_to_shutdown`]).
    pub fn reply_to_shutdown(&self, reply: ShutdownReply) -> Result<()> {
        self.cfg().reply_to_shutdown(reply)
    }

    /// The next request: waits (without blocking the thread) until one arrives. `None`
    /// once the stream has ended. Cancellation-safe.
    pub async fn next_request(&mut self) -> Option<Result<ShutdownRequest>> {
        poll_fn(|cx| self.poll_request(cx)).await
    }

    /// Polls for the next request.
    pub fn poll_request(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ShutdownRequest>>> {
        self.stream.poll_event(cx)
    }

    /// Deregisters from the reactor, then finalizes the connection (a pending request
    /// counts as answered yes), reporting a failure of `corosync_cfg_finalize`.
    pub fn close(self) -> Result<()> {
        self.stream.into_inner().close()
    }
}

impl futures_core::Stream for AsyncCfg {
    type Item = Result<ShutdownRequest>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_request(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl futures_core::FusedStream for AsyncCfg {
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}
