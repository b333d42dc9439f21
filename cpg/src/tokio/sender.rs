//! [`AsyncSender`]: async sends from many tasks while one task reads an
//! [`AsyncHandle`]'s stream.

use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::task::Poll;

use crate::error::Result;
use crate::retry::Backoff;
use crate::types::Guarantee;

use super::AsyncHandle;

impl AsyncHandle {
    /// A cloneable sender for other tasks (and threads), while this handle's stream is
    /// read by one task. See [`AsyncSender`].
    pub fn sender(&self) -> AsyncSender {
        AsyncSender {
            sender: self.fd.get_ref().sender(),
            backoff: self.backoff,
        }
    }
}

/// Sends from many tasks while one task reads the [`AsyncHandle`]'s stream: `Clone +
/// Send + Sync`, and [`send`](Self::send) waits out back-pressure without needing
/// `&mut AsyncHandle`.
///
/// It is a [`Sender`](crate::Sender) with async waits: under back-pressure a send
/// sleeps until the task reading the stream has dispatched events (the daemon's queue
/// is moving) or the back-off's delay has passed, whichever comes first; it never reads
/// events itself, so the stream must be read. A send future dropped before it
/// completed has sent nothing (each attempt is one synchronous call that hands the
/// whole message to the daemon or fails). After the handle is closed or dropped,
/// sends fail with [`Error::Closed`](crate::Error::Closed), and waiting sends wake at once.
///
/// ```no_run
/// # async fn run() -> Result<(), cpg::Error> {
/// let mut cpg = cpg::AsyncHandle::new()?;
/// cpg.join(&cpg::GroupName::new("jobs")?).await?;
/// for i in 0..4 {
///     let sender = cpg.sender();
///     tokio::spawn(async move { sender.send(format!("task {i}").as_bytes()).await });
/// }
/// while let Some(event) = cpg.next_event().await {
///     println!("{:?}", event?);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AsyncSender {
    sender: crate::Sender,
    backoff: Backoff,
}

impl AsyncSender {
    /// Sends `message`, waiting out back-pressure.
    pub async fn send(&self, message: &[u8]) -> Result<()> {
        self.send_with(Guarantee::Agreed, &[IoSlice::new(message)])
            .await
    }

    /// Sends the concatenation of `buffers` as one message, waiting out back-pressure.
    pub async fn send_vectored(&self, buffers: &[IoSlice<'_>]) -> Result<()> {
        self.send_with(Guarantee::Agreed, buffers).await
    }

    /// Sends with an explicit delivery [`Guarantee`], waiting out back-pressure.
    pub async fn send_with(&self, guarantee: Guarantee, buffers: &[IoSlice<'_>]) -> Result<()> {
        let link = self.sender.link();
        // As in `AsyncHandle`'s sends: a send that succeeds at once never waits, so it
        // takes part in tokio's cooperative budget (before the attempt: a future
        // dropped here has sent nothing), and a task sending in a loop cannot starve
        // the others of its thread.
        ::tokio::task::coop::consume_budget().await;
        let mut retrying = self.backoff.start();
        loop {
            match self.sender.send_with(guarantee, buffers) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let delay = retrying.after(e)?;
                    wait_for_progress(link, link.progress().epoch(), delay).await;
                }
            }
        }
    }

    /// Sends at once or fails with a retryable error under back-pressure (see
    /// [`Sender::send`](crate::Sender::send)).
    pub fn try_send(&self, message: &[u8]) -> Result<()> {
        self.sender.send(message)
    }

    /// The back-off of this sender (a copy of the handle's when it was made).
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Sets the back-off of this sender (not of its clones made before).
    pub fn set_backoff(&mut self, backoff: Backoff) {
        self.backoff = backoff;
    }

    /// Whether the handle has been closed or dropped.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// Waits until the link's dispatcher signals progress after `seen`, the handle is
/// closed, or `delay` passes.
async fn wait_for_progress(link: &crate::link::Link, seen: u64, delay: std::time::Duration) {
    /// Unregisters the waiter when the wait ends or its future is dropped.
    struct Waiting<'a> {
        progress: &'a crate::link::Progress,
        waker: Option<std::task::Waker>,
    }
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.progress.unregister(self.waker.as_ref());
        }
    }
    let progress = link.progress();
    progress.start_waiting();
    let mut waiting = Waiting {
        progress,
        waker: None,
    };
    let sleep = ::tokio::time::sleep(delay);
    let mut sleep = std::pin::pin!(sleep);
    // The wait returns `Pending` at least once, so that a send retrying while events
    // keep flowing still lets the runtime run other tasks (and can be cancelled).
    let mut yielded = false;
    poll_fn(|cx| {
        if link.is_closed() {
            return Poll::Ready(());
        }
        if progress.register(seen, cx.waker()) {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        yielded = true;
        // A waker registered by an earlier poll stays until the next signal, which
        // wakes it spuriously at worst.
        waiting.waker = Some(cx.waker().clone());
        sleep.as_mut().poll(cx)
    })
    .await
}
