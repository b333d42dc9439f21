//! The async side of a service handle (feature `tokio`): [`ServiceStream`], a stream
//! of owned events over tokio's [`AsyncFd`], and the [`EventQueue`] its callbacks fill.
//!
//! The service's callbacks copy each event into a queue shared with the stream (an
//! `Arc<Mutex<VecDeque>>`: the services' events are rare, a lock per event costs
//! nothing that matters, and no thread-local hand-off or typed access into the
//! callback state is needed). The descriptor is registered with tokio's reactor; when
//! the queue is empty and the descriptor is readable, the stream runs one
//! non-blocking dispatch at a time until one reports nothing pending, and only then
//! clears tokio's readiness. The `AsyncFd` owns the handle: dropping it deregisters
//! the descriptor before the handle's drop finalizes (and closes) it.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;

use crate::error::{Error, Operation, Result};
use crate::tokio::reactor_error;
use crate::types::Dispatched;

/// The most dispatches one poll runs before it yields to the runtime (and wakes its
/// task at once): a bound, should a library report events that produce no callback.
const DISPATCHES_PER_POLL: usize = 64;

/// A service handle the stream can drive: one non-blocking dispatch at a time.
pub(crate) trait DispatchNonblocking: AsRawFd {
    /// One dispatch in [`DispatchMode::OneNonblocking`](crate::DispatchMode::OneNonblocking).
    fn dispatch_nonblocking(&self) -> Result<Dispatched>;
}

/// The callbacks' end of a stream's queue: they push owned events into it.
#[derive(Debug)]
pub(crate) struct EventQueue<E>(Arc<Mutex<VecDeque<E>>>);

impl<E> EventQueue<E> {
    /// Queues `event` for the stream.
    pub(crate) fn push(&self, event: E) {
        lock(&self.0).push_back(event);
    }
}

fn lock<E>(queue: &Mutex<VecDeque<E>>) -> MutexGuard<'_, VecDeque<E>> {
    // Pushing and popping cannot leave the queue half-changed.
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the stream is.
#[derive(Debug)]
enum StreamState {
    /// Events may still come.
    Open,
    /// The connection failed: report this once the queued events are out, then end.
    Failed(Error),
    /// The stream has ended.
    Ended,
}

/// A service handle `H` registered with tokio's reactor, and the events of type `E`
/// its callbacks queued.
#[derive(Debug)]
pub(crate) struct ServiceStream<H: AsRawFd, E> {
    fd: AsyncFd<H>,
    queue: Arc<Mutex<VecDeque<E>>>,
    state: StreamState,
}

impl<H: DispatchNonblocking, E> ServiceStream<H, E> {
    /// Makes the handle with `connect`, giving it the queue for its callbacks, and
    /// registers it with the current tokio runtime's reactor.
    ///
    /// # Panics
    /// Outside a tokio runtime context (`what` names the type in the message), or in a
    /// runtime without the IO driver.
    pub(crate) fn new(
        what: &str,
        connect: impl FnOnce(EventQueue<E>) -> Result<H>,
    ) -> Result<ServiceStream<H, E>> {
        if ::tokio::runtime::Handle::try_current().is_err() {
            panic!("{what} must be created inside a tokio runtime context");
        }
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        let handle = connect(EventQueue(Arc::clone(&queue)))?;
        // SAFETY: `register_with_interest` needs the descriptor to stay open and the
        // same for the registration's whole life. The `AsyncFd` owns the handle, whose
        // descriptor the library opened at initialization and closes only in its
        // finalize, which runs when the handle drops: after tokio has removed the
        // registration (its Drop and `into_inner` deregister first). `as_raw_fd`
        // always returns that one descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(handle, Interest::READABLE) }
            .map_err(|e| reactor_error(Operation::Register, e.into()))?;
        Ok(ServiceStream {
            fd,
            queue,
            state: StreamState::Open,
        })
    }

    /// Another end of the queue, for callbacks registered after the handle was made
    /// (cmap's tracks).
    #[allow(dead_code)] // for the services whose callbacks come and go
    pub(crate) fn queue(&self) -> EventQueue<E> {
        EventQueue(Arc::clone(&self.queue))
    }

    /// The handle, for its synchronous calls.
    pub(crate) fn get_ref(&self) -> &H {
        self.fd.get_ref()
    }

    /// The next queued event, dispatching when none is queued and the descriptor is
    /// readable. `None` once the stream has ended (after it yielded the connection's
    /// failure). A [`Error::StackTooSmall`] leaves the stream open: nothing was read,
    /// and a poll from a thread with more stack goes on.
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<E>>> {
        for _ in 0..DISPATCHES_PER_POLL {
            if let Some(event) = lock(&self.queue).pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            match std::mem::replace(&mut self.state, StreamState::Ended) {
                StreamState::Open => self.state = StreamState::Open,
                StreamState::Failed(e) => return Poll::Ready(Some(Err(e))),
                StreamState::Ended => return Poll::Ready(None),
            }
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => {
                    self.state = StreamState::Ended;
                    return Poll::Ready(Some(Err(reactor_error(Operation::Wait, e))));
                }
            };
            match guard.get_inner().dispatch_nonblocking() {
                // Only now is it known that the descriptor has nothing more: tokio waits
                // for the next edge (an event that arrived after the dispatch made one).
                Ok(Dispatched::NothingPending) => guard.clear_ready(),
                Ok(Dispatched::Callbacks(_)) => {}
                Err(e @ Error::StackTooSmall { .. }) => return Poll::Ready(Some(Err(e))),
                Err(e) => self.state = StreamState::Failed(e),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// How many events are queued, and whether more may come.
    pub(crate) fn size_hint(&self) -> (usize, Option<usize>) {
        let queued = lock(&self.queue).len();
        match self.state {
            StreamState::Ended => (queued, Some(queued)),
            _ => (queued, None),
        }
    }

    /// Whether the stream has ended and nothing is queued.
    pub(crate) fn is_terminated(&self) -> bool {
        matches!(self.state, StreamState::Ended) && lock(&self.queue).is_empty()
    }

    /// Deregisters from the reactor and hands the still-open handle back.
    pub(crate) fn into_inner(self) -> H {
        self.fd.into_inner()
    }
}
