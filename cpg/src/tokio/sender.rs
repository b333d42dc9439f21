//! [`AsyncSender`]: async sends from many tasks while one task reads an
//! [`AsyncHandle`]'s stream.

use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::error::{CsError, Error, Operation, Result};
use crate::link::{Link, Progress, RequestGuard};
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
            offload_from: Some(OFFLOAD_FROM),
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
/// events itself, so the stream must be read. While another request of the connection
/// holds its request lock (a blocking [`Sender`](crate::Sender)'s fragmented send
/// holds it for as long as libcpg retries the fragments), a send waits for it as a
/// task and never blocks its worker thread. A send future dropped before it
/// completed has sent nothing (each attempt is one synchronous call that hands the
/// whole message to the daemon or fails), except a large one already on the blocking
/// pool (see [Large messages](Self#large-messages)). After the handle is closed or dropped,
/// sends fail with [`Error::Closed`](crate::Error::Closed), and waiting sends wake at once.
///
/// Waiting sends are woken from inside `cpg_dispatch`, on the thread that reads the
/// stream: a waker that panics there is caught like a panicking callback (it never
/// unwinds into C), and the other waiting sends are still woken.
///
/// # Large messages
///
/// Each attempt to send is one synchronous request to the daemon, which answers only
/// once it has taken the whole message (or refused it, after it went over): about a
/// millisecond for a message near libcpg's 1 MiB atomic size, many times over when the
/// daemon pushes back. A runtime worker blocked that long reads nothing and polls no
/// other task. So a message of at least [`offload_from`](Self::offload_from) bytes
/// ([`OFFLOAD_FROM`] unless [set](Self::set_offload_from) otherwise) is copied and
/// sent from tokio's blocking pool (`spawn_blocking`), while the task awaits the
/// outcome:
///
/// - what an attempt would refuse without reaching the daemon (a closed, poisoned or
///   forked handle, not joined, too many buffers, too long for libcpg) is refused
///   before the copy, with the same error;
/// - the back-off runs on the pool thread, which it holds for as long as the send
///   waits out back-pressure (its pauses end at a delivery, as a blocking
///   [`Sender`](crate::Sender)'s do, and as soon as the future is dropped);
/// - the back-off's timeout counts from the call, time spent waiting for a free thread
///   of the pool included: a send still waiting for one when it passes gives up with
///   `CS_ERR_TRY_AGAIN` (and is never made);
/// - if the runtime shuts down before a thread took the send, it fails with
///   [`Error::Closed`](crate::Error::Closed) (nothing was sent);
/// - if the task is not in a tokio runtime's context, the send is made on its thread
///   (its pauses need tokio's timer all the same).
///
/// Dropping such a send future cannot stop an attempt that has started on the pool:
/// the message may then be sent after all, but no attempt starts after the drop, and
/// any request on the same connection made after the drop is ordered after it. A
/// smaller send, or one made inline, has sent nothing when dropped before it
/// completed.
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
    offload_from: Option<usize>,
}

/// The size from which an [`AsyncSender`] sends from tokio's blocking pool by default
/// (see [Large messages](AsyncSender#large-messages)): 256 KiB.
///
/// Measured in `bench --async --borrow` (the benchmark README's "Sixth pass"): on
/// three nodes, 1 MB sends made on the worker held back the reading task, and the
/// client delivered 0.67× the blocking two-thread design's messages per second with
/// one worker; sent from the pool, 0.95–0.98× with one or two. At 200 kB sends on the
/// worker are already at the blocking design's level. On one node, where the daemon
/// takes a send in a fraction of that time and the client's own CPU sets the rate, the
/// copy and the hand-off cost more than they save (1 MB: 0.75–0.78× against
/// 0.92–0.97× with every send on the worker): a service that pushes a single daemon to
/// its limit with messages this large sets [`AsyncSender::set_offload_from`]`(None)`.
pub const OFFLOAD_FROM: usize = 256 << 10;

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
        if let Some((runtime, len)) = self.offloads(buffers) {
            return self.send_offloaded(&runtime, guarantee, buffers, len).await;
        }
        let link = self.sender.link();
        // As in `AsyncHandle`'s sends: a send that succeeds at once never waits, so it
        // takes part in tokio's cooperative budget (before the attempt: a future
        // dropped here has sent nothing), and a task sending in a loop cannot starve
        // the others of its thread.
        ::tokio::task::coop::consume_budget().await;
        let mut retrying = self.backoff.start();
        loop {
            match self.attempt(guarantee, buffers).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let delay = retrying.after(e)?;
                    let waiting = Waiting::start(link.progress());
                    waiting.wait(link, link.progress().epoch(), delay).await;
                }
            }
        }
    }

    /// The runtime whose blocking pool sends `buffers`, and their length, if they are
    /// that large (and the task runs in a tokio runtime, and not in a child of fork,
    /// where the send fails at once).
    fn offloads(&self, buffers: &[IoSlice<'_>]) -> Option<(::tokio::runtime::Handle, usize)> {
        let from = self.offload_from?;
        let len = buffers
            .iter()
            .try_fold(0usize, |sum, b| sum.checked_add(b.len()))
            .unwrap_or(usize::MAX);
        if len < from || self.sender.link().forked() {
            return None;
        }
        let runtime = ::tokio::runtime::Handle::try_current().ok()?;
        Some((runtime, len))
    }

    /// Sends a copy of `buffers` (`len` bytes in all) from the runtime's blocking pool,
    /// with this sender's back-off counted from now, and waits for the outcome.
    async fn send_offloaded(
        &self,
        runtime: &::tokio::runtime::Handle,
        guarantee: Guarantee,
        buffers: &[IoSlice<'_>],
        len: usize,
    ) -> Result<()> {
        let called = Instant::now();
        // What an attempt would refuse without reaching C is refused before anything is
        // copied (and without the request lock).
        let link = self.sender.link();
        link.usable(Operation::Send)?;
        crate::connection::check_mcast(link, buffers)?;
        let mut message = Vec::with_capacity(len);
        for buffer in buffers {
            message.extend_from_slice(buffer);
        }
        let state = Arc::new(Offloaded::default());
        let mut guard = GoneOnDrop {
            state: Some(Arc::clone(&state)),
            sender: self.sender.clone(),
        };
        let sender = self.sender.clone();
        let backoff = self.backoff;
        let job = Arc::clone(&state);
        let mut sent = runtime.spawn_blocking(move || {
            send_blocking(sender.link(), &backoff, called, &job, |request| {
                sender.send_holding(request, guarantee, &[IoSlice::new(&message)])
            })
        });
        // The back-off's timeout also bounds the time the send waits for a thread of the
        // pool (all of them busy): once it passed, a send still queued gives up.
        let deadline = called
            .checked_add(self.backoff.timeout)
            .map(::tokio::time::Instant::from_std);
        let outcome = match deadline {
            Some(deadline) => match ::tokio::time::timeout_at(deadline, &mut sent).await {
                Ok(outcome) => outcome,
                Err(_) if state.give_up_queued() => {
                    guard.disarm();
                    return Err(Error::Cs {
                        op: Operation::Send,
                        code: CsError::TryAgain,
                    });
                }
                Err(_) => (&mut sent).await,
            },
            None => sent.await,
        };
        guard.disarm();
        match outcome {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down and never ran the send: nothing was sent.
            Err(_) => Err(Error::Closed),
        }
    }

    /// One attempt, taking the request lock without blocking the worker: while another
    /// request holds it (a fragmented send holds it for as long as libcpg retries its
    /// fragments), the task waits until that request ends.
    async fn attempt(&self, guarantee: Guarantee, buffers: &[IoSlice<'_>]) -> Result<()> {
        let link = self.sender.link();
        if link.forked() {
            // The lock must not be touched in a child of fork.
            return self.sender.send_with(guarantee, buffers);
        }
        with_request_lock(link, |request| {
            self.sender.send_holding(request, guarantee, buffers)
        })
        .await
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

    /// The size from which a send goes to tokio's blocking pool, or `None` if none
    /// does (see [Large messages](Self#large-messages)). [`OFFLOAD_FROM`] unless set.
    pub fn offload_from(&self) -> Option<usize> {
        self.offload_from
    }

    /// Sets the size from which a send of this sender (not of its clones made before)
    /// goes to tokio's blocking pool; `None`: every send is made on the task's thread.
    pub fn set_offload_from(&mut self, bytes: Option<usize>) {
        self.offload_from = bytes;
    }
}

/// Where an offloaded send stands: queued for a thread of the pool, running there, or
/// given up by its future (dropped, or timed out while queued).
#[derive(Debug, Default)]
struct Offloaded(AtomicU8);

/// [`Offloaded`]: waiting for a thread of the pool.
const QUEUED: u8 = 0;
/// [`Offloaded`]: on a thread of the pool.
const RUNNING: u8 = 1;
/// [`Offloaded`]: nobody waits for the outcome any more.
const GONE: u8 = 2;

impl Offloaded {
    /// On the pool: whether the send may start (it was not given up while queued).
    fn start(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the future waiting for the send is gone.
    fn gone(&self) -> bool {
        self.0.load(Ordering::Acquire) == GONE
    }

    /// Gives the send up if no thread of the pool has taken it yet; whether it did.
    fn give_up_queued(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, GONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// The future of an offloaded send is gone: no attempt starts from now on, and a pause
/// of the pool thread ends at once (it rechecks, and stops).
fn give_up(state: &Offloaded, link: &Link) {
    state.0.store(GONE, Ordering::Release);
    link.raise_progress();
}

/// Gives the offloaded send up when the future waiting for it is dropped.
struct GoneOnDrop {
    state: Option<Arc<Offloaded>>,
    sender: crate::Sender,
}

impl GoneOnDrop {
    /// The outcome is in: nothing to give up.
    fn disarm(&mut self) {
        self.state = None;
    }
}

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            give_up(&state, self.sender.link());
        }
    }
}

/// An offloaded send, on a thread of the blocking pool: `attempt`s under the request
/// lock, each only while the future waiting for it is there, and pauses like a blocking
/// [`Sender`](crate::Sender)'s retry (until a delivery, the back-off's delay, or the
/// future giving up), with the back-off's timeout counted from `called`.
///
/// The state is read while the lock is held, so a request that takes the lock after
/// the future was dropped either finds an attempt already made (and goes after it) or
/// keeps the attempt from ever being made.
fn send_blocking(
    link: &Link,
    backoff: &Backoff,
    called: Instant,
    state: &Offloaded,
    mut attempt: impl FnMut(&RequestGuard<'_>) -> Result<()>,
) -> Result<()> {
    // `Closed`s below go nowhere: nobody waits for the outcome.
    if !state.start() {
        return Err(Error::Closed);
    }
    let progress = link.progress();
    backoff.start_at(called).run_pausing(
        || {
            let request = link.lock_request()?;
            if state.gone() {
                return Err(Error::Closed);
            }
            attempt(&request)
        },
        |delay| {
            // Read before the look at the state: a give-up after that look raises the
            // signal past `seen`, and the wait returns at once.
            let seen = progress.epoch();
            if state.gone() {
                return Err(Error::Closed);
            }
            progress.wait(seen, delay);
            if link.is_closed() {
                return Err(Error::Closed);
            }
            Ok(())
        },
    )
}

/// The longest an async send waits for the request lock before it tries again.
const LOCK_WAIT: Duration = Duration::from_millis(1);

/// Runs `f` holding the link's request lock, waiting for the lock as a task (never
/// blocking the worker) while another request holds it. `Closed` once the handle is
/// closed.
pub(super) async fn with_request_lock<T>(
    link: &Link,
    f: impl FnOnce(&RequestGuard<'_>) -> Result<T>,
) -> Result<T> {
    let request = request_lock(link).await?;
    f(&request)
}

/// The link's request lock, waited for as a task (never blocking the worker) while
/// another request holds it. `Closed` once the handle is closed. (The guard is not
/// `Send`: use it before the task's next await.)
pub(super) async fn request_lock(link: &Link) -> Result<RequestGuard<'_>> {
    loop {
        if let Some(request) = link.try_lock_request()? {
            return Ok(request);
        }
        // Counted as waiting before the second attempt, so that a request ending
        // after it failed raises the signal.
        let waiting = Waiting::start(link.unlocked());
        let seen = link.unlocked().epoch();
        if let Some(request) = link.try_lock_request()? {
            drop(waiting);
            return Ok(request);
        }
        // Bounded: the signal's "anyone waiting?" check is not ordered with the unlock
        // on every architecture, so a wake-up may come late, but it always comes.
        waiting.wait(link, seen, LOCK_WAIT).await;
    }
}

/// One async wait on a signal of the link: counted among its waiters from
/// [`start`](Self::start) until dropped, with at most one waker registered.
struct Waiting<'a> {
    signal: &'a Progress,
    id: u64,
    registered: bool,
}

impl<'a> Waiting<'a> {
    fn start(signal: &'a Progress) -> Waiting<'a> {
        Waiting {
            id: signal.start_waiting(),
            signal,
            registered: false,
        }
    }

    /// Waits until the signal is raised after `seen`, the handle is closed, or `delay`
    /// passes.
    async fn wait(mut self, link: &Link, seen: u64, delay: Duration) {
        let sleep = ::tokio::time::sleep(delay);
        let mut sleep = std::pin::pin!(sleep);
        // The wait returns `Pending` at least once, so that a send retrying while
        // events keep flowing still lets the runtime run other tasks (and can be
        // cancelled).
        let mut yielded = false;
        poll_fn(|cx| {
            if link.is_closed() {
                return Poll::Ready(());
            }
            if self.signal.register(seen, self.id, cx.waker()) {
                if yielded {
                    return Poll::Ready(());
                }
                yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            yielded = true;
            self.registered = true;
            sleep.as_mut().poll(cx)
        })
        .await
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.signal.unregister(self.id, self.registered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Runs `test` with an unconnected link, inside a runtime (for the waits' timers).
    fn with_link(test: impl FnOnce(&Link)) {
        let rt = ::tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = rt.enter();
        test(&Link::new(0, -1, crate::process::generation()));
    }

    /// A back-off that retries for a minute, pausing 1 ms.
    fn patient() -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            timeout: Duration::from_secs(60),
            max_attempts: u32::MAX,
        }
    }

    fn try_again() -> Error {
        Error::Cs {
            code: CsError::TryAgain,
            op: Operation::Send,
        }
    }

    #[test]
    fn an_offloaded_send_given_up_before_a_thread_took_it_makes_no_attempt() {
        with_link(|link| {
            for give in [Offloaded::give_up_queued as fn(&Offloaded) -> bool, |s| {
                give_up(s, &Link::new(0, -1, crate::process::generation()));
                true
            }] {
                let state = Offloaded::default();
                assert!(give(&state));
                let mut attempts = 0;
                let result = send_blocking(link, &patient(), Instant::now(), &state, |_| {
                    attempts += 1;
                    Ok(())
                });
                assert_eq!(result, Err(Error::Closed));
                assert_eq!(attempts, 0);
            }
            // Once a thread has it, the future can no longer give it up while queued.
            let state = Offloaded::default();
            assert!(state.start());
            assert!(!state.give_up_queued());
        });
    }

    #[test]
    fn an_offloaded_send_stops_retrying_once_its_future_is_gone() {
        with_link(|link| {
            let state = Offloaded::default();
            let mut attempts = 0;
            let result = send_blocking(link, &patient(), Instant::now(), &state, |_| {
                attempts += 1;
                assert!(
                    link.try_lock_request().unwrap().is_none(),
                    "attempted unlocked"
                );
                if attempts == 3 {
                    // Given up while this attempt runs: it stands, no other follows.
                    give_up(&state, link);
                }
                Err(try_again())
            });
            assert_eq!(result, Err(Error::Closed));
            assert_eq!(attempts, 3);
        });
    }

    #[test]
    fn an_offloaded_send_returns_its_attempts_outcome() {
        with_link(|link| {
            let mut attempts = 0;
            let state = Offloaded::default();
            let result = send_blocking(link, &patient(), Instant::now(), &state, |_| {
                attempts += 1;
                if attempts < 3 {
                    return Err(try_again());
                }
                Ok(())
            });
            assert_eq!(result, Ok(()));
            assert_eq!(attempts, 3);
            let state = Offloaded::default();
            let result = send_blocking(link, &patient(), Instant::now(), &state, |_| {
                Err(Error::NotJoined)
            });
            assert_eq!(
                result,
                Err(Error::NotJoined),
                "not retryable: returned at once"
            );
            // The timeout counts from the call: a call made a minute ago gets one attempt.
            let state = Offloaded::default();
            let mut attempts = 0;
            let called = Instant::now() - Duration::from_secs(61);
            let result = send_blocking(link, &patient(), called, &state, |_| {
                attempts += 1;
                Err(try_again())
            });
            assert_eq!(result, Err(try_again()));
            assert_eq!(attempts, 1);
        });
    }

    /// The state is read under the lock: a give-up made while another request holds
    /// the lock (so before any request that follows it) stops an attempt that was
    /// waiting for that lock.
    #[test]
    fn a_give_up_while_another_request_holds_the_lock_stops_the_waiting_attempt() {
        with_link(|link| {
            let state = Offloaded::default();
            let attempts = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|s| {
                let held = link.lock_request().unwrap();
                let pool = s.spawn(|| {
                    send_blocking(link, &patient(), Instant::now(), &state, |_| {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                });
                std::thread::sleep(Duration::from_millis(200));
                give_up(&state, link);
                drop(held);
                assert_eq!(pool.join().unwrap(), Err(Error::Closed));
            });
            assert_eq!(
                attempts.load(Ordering::SeqCst),
                0,
                "attempted after the drop"
            );
        });
    }

    /// A give-up ends the pool thread's pause at once (a pause as long as a test).
    #[test]
    fn a_give_up_during_a_pause_ends_the_pause() {
        with_link(|link| {
            let slow = Backoff {
                initial: Duration::from_secs(60),
                max_delay: Duration::from_secs(60),
                timeout: Duration::from_secs(600),
                max_attempts: u32::MAX,
            };
            let state = Offloaded::default();
            let attempts = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|s| {
                let pool = s.spawn(|| {
                    send_blocking(link, &slow, Instant::now(), &state, |_| {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        Err(try_again())
                    })
                });
                while attempts.load(Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                std::thread::sleep(Duration::from_millis(100));
                let start = Instant::now();
                give_up(&state, link);
                assert_eq!(pool.join().unwrap(), Err(Error::Closed));
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the pool thread slept on for {:?}",
                    start.elapsed()
                );
            });
            assert_eq!(attempts.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn a_wait_polled_with_ever_new_wakers_keeps_one_registration() {
        with_link(|link| {
            let progress = link.progress();
            let waiting = Waiting::start(progress);
            let mut wait = Box::pin(waiting.wait(link, progress.epoch(), Duration::from_secs(60)));
            let counts: Vec<_> = (0..100)
                .map(|_| Arc::new(Count(Default::default())))
                .collect();
            for count in &counts {
                let waker = Waker::from(count.clone());
                assert!(wait
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending());
                assert_eq!(progress.registered(), 1);
            }
            link.dispatched_events();
            // Only the last waker is woken; the registration is gone with the signal.
            let woken: usize = counts
                .iter()
                .map(|c| c.0.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            assert_eq!(woken, 1);
            assert_eq!(counts[99].0.load(std::sync::atomic::Ordering::Relaxed), 1);
            let waker = Waker::from(counts[0].clone());
            assert!(wait
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready());
            drop(wait);
            assert_eq!(progress.registered(), 0);
            // A wait dropped while registered takes its registration with it.
            let waiting = Waiting::start(progress);
            let mut wait = Box::pin(waiting.wait(link, progress.epoch(), Duration::from_secs(60)));
            let waker = Waker::from(counts[0].clone());
            assert!(wait
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
            assert_eq!(progress.registered(), 1);
            drop(wait);
            assert_eq!(progress.registered(), 0);
        });
    }

    #[test]
    fn two_waits_of_one_task_are_both_woken() {
        with_link(|link| {
            let progress = link.progress();
            let seen = progress.epoch();
            let mut a =
                Box::pin(Waiting::start(progress).wait(link, seen, Duration::from_secs(60)));
            let mut b =
                Box::pin(Waiting::start(progress).wait(link, seen, Duration::from_secs(60)));
            let count = Arc::new(Count(Default::default()));
            let waker = Waker::from(count.clone());
            let mut cx = Context::from_waker(&waker);
            assert!(a.as_mut().poll(&mut cx).is_pending());
            assert!(b.as_mut().poll(&mut cx).is_pending());
            assert_eq!(progress.registered(), 2);
            // Dropping one wait keeps the other's registration.
            drop(a);
            assert_eq!(progress.registered(), 1);
            link.dispatched_events();
            assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
            assert!(b.as_mut().poll(&mut cx).is_ready());
        });
    }

    #[test]
    fn a_panicking_waker_does_not_keep_others_asleep() {
        struct Bomb;
        impl Wake for Bomb {
            fn wake(self: Arc<Self>) {
                panic!("bomb");
            }
        }
        with_link(|link| {
            let progress = link.progress();
            let seen = progress.epoch();
            let mut a =
                std::pin::pin!(Waiting::start(progress).wait(link, seen, Duration::from_secs(60)));
            let mut b =
                std::pin::pin!(Waiting::start(progress).wait(link, seen, Duration::from_secs(60)));
            let bomb = Waker::from(Arc::new(Bomb));
            let count = Arc::new(Count(Default::default()));
            let waker = Waker::from(count.clone());
            assert!(a
                .as_mut()
                .poll(&mut Context::from_waker(&bomb))
                .is_pending());
            assert!(b
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
            // The dispatch path re-raises the panic after waking everyone.
            let raised =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| link.dispatched_events()));
            assert!(raised.is_err());
            assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
            assert!(b.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
            assert!(a.as_mut().poll(&mut Context::from_waker(&bomb)).is_ready());
            // Closing returns the panic instead of unwinding out of the handle's drop.
            let seen = progress.epoch();
            let mut c =
                std::pin::pin!(Waiting::start(progress).wait(link, seen, Duration::from_secs(60)));
            assert!(c
                .as_mut()
                .poll(&mut Context::from_waker(&bomb))
                .is_pending());
            assert!(link.close().is_some());
            assert!(c.as_mut().poll(&mut Context::from_waker(&bomb)).is_ready());
        });
    }
}
