//! [`Sender`]: sends from any thread while the owning handle dispatches on its own.

use std::fmt;
use std::io::IoSlice;
use std::sync::Arc;

use crate::connection::{mcast, ConnectionRef};
use crate::error::{Error, Operation, Result};
use crate::link::{Link, RequestGuard};
use crate::retry::Backoff;
use crate::types::Guarantee;

/// Sends to a handle's group from any thread, while the handle itself dispatches (and
/// runs its callbacks) on its own thread: the shape of most CPG services, with one
/// event loop and senders wherever the work is.
///
/// Made by [`ConnectionRef::sender`] (so also `handle.sender()`); `Clone + Send + Sync`,
/// cheap to clone (an `Arc`).
///
/// ```no_run
/// use cpg::{DispatchMode, GroupName, Handle};
///
/// let handle = Handle::builder()
///     .on_deliver(|_, msg| println!("{} bytes from {}", msg.data.len(), msg.sender()))
///     .build()?;
/// handle.join(&GroupName::new("jobs")?)?;
/// let sender = handle.sender();
/// let workers: Vec<_> = (0..4)
///     .map(|i| {
///         let sender = sender.clone();
///         std::thread::spawn(move || sender.send_with_retry(format!("worker {i}").as_bytes(), &Default::default()))
///     })
///     .collect();
/// // This thread dispatches (the main thread's stack is large enough).
/// for _ in 0..4 {
///     handle.dispatch(DispatchMode::One)?;
/// }
/// for w in workers {
///     w.join().unwrap()?;
/// }
/// # Ok::<(), cpg::Error>(())
/// ```
///
/// # What runs concurrently
///
/// libcpg reads events on one libqb channel and sends requests on another, so a send
/// may run while the handle's thread is inside `cpg_dispatch` (corosync's own
/// benchmark does this; `cpg/tests/cluster_senders.rs` checks it on a 3-node cluster:
/// 4 sender threads per node, 500 small and then 40 flooding 256 KiB messages each,
/// every message delivered once, intact, in its thread's order, one order on every
/// node). Two
/// requests at once are not safe, so once a sender exists, every request on the
/// connection (sends from any sender, from the handle and from its callbacks; join,
/// leave, membership, iteration, zero-copy) takes a per-connection lock for the
/// duration of its C call. Before the first sender is made nothing is locked.
///
/// # Back-pressure
///
/// [`send`](Self::send) fails at once with a retryable error when the daemon pushes
/// back. [`send_with_retry`](Self::send_with_retry) waits instead, without spinning:
/// it sleeps until the dispatching thread delivers an event (woken from inside the
/// dispatch, not when the dispatch call returns: the daemon's queue is then moving, so
/// the next attempt is likely to pass) or the back-off's current delay has passed,
/// whichever comes first. Someone must dispatch: a sender never reads
/// events itself.
///
/// # After the handle is gone
///
/// After a callback of the handle panicked, sends fail with [`Error::Poisoned`] (the
/// handle has left its group: nobody reads its events any more).
///
/// Once the handle is closed or dropped, every call fails with [`Error::Closed`] and
/// never reaches libcpg; a sender waiting out back-pressure wakes at once. Closing the
/// handle waits at most for one C call of a sender in flight.
#[derive(Clone)]
pub struct Sender {
    link: Arc<Link>,
}

impl ConnectionRef {
    /// A handle for sending from other threads while this connection's owner
    /// dispatches. See [`Sender`].
    pub fn sender(&self) -> Sender {
        Sender::new(self)
    }
}

impl Sender {
    /// A sender on `conn`'s link: from now on every request on it takes the request
    /// lock.
    fn new(conn: &ConnectionRef) -> Sender {
        conn.link().share();
        let raw = conn.link_ptr();
        // SAFETY: `raw` is the very pointer the owning handle got from `Arc::into_raw`
        // (`Handle::with_options`; not one derived from a reference, so it carries
        // the allocation's provenance, counts included), and the handle releases its
        // count only when it is finalized, after every borrow of the connection.
        // Taking one more count through it keeps the link alive for this sender.
        unsafe { Arc::increment_strong_count(raw) };
        // SAFETY: as above; this takes ownership of the count just added.
        let link = unsafe { Arc::from_raw(raw) };
        Sender { link }
    }

    /// Sends `message` like [`ConnectionRef::send`]: fails at once with a retryable
    /// error under back-pressure, with [`Error::NotJoined`] when the handle is not in
    /// a group, and with [`Error::Closed`] once the handle is closed.
    #[inline]
    pub fn send(&self, message: &[u8]) -> Result<()> {
        self.send_with(Guarantee::Agreed, &[IoSlice::new(message)])
    }

    /// Sends the concatenation of `buffers` as one message (at most
    /// [`MAX_SEND_BUFFERS`](crate::MAX_SEND_BUFFERS)).
    #[inline]
    pub fn send_vectored(&self, buffers: &[IoSlice<'_>]) -> Result<()> {
        self.send_with(Guarantee::Agreed, buffers)
    }

    /// Sends with an explicit delivery [`Guarantee`].
    #[inline]
    pub fn send_with(&self, guarantee: Guarantee, buffers: &[IoSlice<'_>]) -> Result<()> {
        // In a child of fork the lock must not be touched; after that, a closed handle
        // says `Closed` whatever else happened to it before.
        if self.link.forked() {
            return Err(Error::Forked);
        }
        let request = self.link.lock_request()?;
        self.send_holding(&request, guarantee, buffers)
    }

    /// The send, for a caller holding the request lock: this sender's connection's
    /// (checked, as in `ConnectionRef::send_with_holding`: another connection's guard
    /// would let this request meet another in libcpg).
    #[inline]
    pub(crate) fn send_holding(
        &self,
        request: &RequestGuard<'_>,
        guarantee: Guarantee,
        buffers: &[IoSlice<'_>],
    ) -> Result<()> {
        request.check_for(&self.link, Operation::Send)?;
        mcast(&self.link, guarantee, buffers)
    }

    /// Sends `message`, waiting out back-pressure per `backoff` (see
    /// [Back-pressure](Self#back-pressure)). When the back-off is spent, returns the
    /// last retryable error.
    pub fn send_with_retry(&self, message: &[u8], backoff: &Backoff) -> Result<()> {
        self.send_vectored_with_retry(&[IoSlice::new(message)], backoff)
    }

    /// Vectored [`send_with_retry`](Self::send_with_retry).
    pub fn send_vectored_with_retry(
        &self,
        buffers: &[IoSlice<'_>],
        backoff: &Backoff,
    ) -> Result<()> {
        let progress = self.link.progress();
        backoff.run_pausing(
            || self.send_vectored(buffers),
            |delay| {
                // Progress that happens after this failed attempt: deliveries made
                // since mean the daemon's queue is draining. (Called from a callback of
                // its own handle, nothing can signal until the callback returns: the
                // wait is then a sleep of `delay`, as the daemon's queue drains
                // without this thread.)
                progress.wait(progress.epoch(), delay);
                if self.link.is_closed() {
                    return Err(Error::Closed);
                }
                Ok(())
            },
        )
    }

    /// Whether the handle has been closed or dropped (then every send fails with
    /// [`Error::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.link.is_closed()
    }

    /// The link, for the async sender.
    #[cfg(feature = "tokio")]
    pub(crate) fn link(&self) -> &Link {
        &self.link
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("handle", &self.link.raw)
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn a_sender_is_send_sync_clone_and_static() {
        assert_send_sync_clone::<Sender>();
    }

    /// The request lock is per connection: a send made under another connection's
    /// guard is refused (a panic, before C is called), not made beside whatever request
    /// holds its own connection's lock.
    #[test]
    #[should_panic(expected = "a request guard used for another connection")]
    fn a_send_under_another_connections_guard_is_refused() {
        let link = || Link::new(0, -1, crate::process::generation());
        let ours = Sender {
            link: Arc::new(link()),
        };
        ours.link.share();
        ours.link
            .set_joined(crate::name::GroupName::new("g").unwrap());
        let other = link();
        other.share();
        let guard = other.lock_request().expect("the other connection is open");
        // Nothing may reach `cpg_mcast_joined` (on this unconnected link, a call with
        // handle 0 fails as an invalid handle, which would also end the test quietly).
        let _ = ours.send_holding(&guard, Guarantee::Agreed, &[IoSlice::new(b"x")]);
    }
}
