//! The tokio driver: [`AsyncReplica`], a [`Machine`] fed by an
//! [`AsyncGroup`] in a task, with the same rules and events as the blocking
//! [`Replica`](super::Replica).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::group::{self, AsyncGroup, GroupError, View};
use crate::layer::lock::{Guard, Lock};
use crate::name::GroupName;

use super::app::{Replicated, Summary};
use super::blocking::ReplicaBuilder;
use super::machine::{Event, Machine, Phase, Stats};
use super::shared::{Inner, ReplicaError};

/// Longest the driver task waits for a group event before it looks at the clock.
const TICK: Duration = Duration::from_millis(20);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct Slot {
    outcome: Option<Result<u64, ReplicaError>>,
    /// Every task waiting: `wait` takes `&self`, so several tasks may await one
    /// ticket (through an `Arc`), and each must wake.
    wakers: Vec<Waker>,
}

/// Resolves once with the state's version after the submitted operation was applied
/// here, or why it was not (the async [`Ticket`](super::Ticket)).
#[derive(Debug)]
pub struct AsyncTicket {
    seq: u64,
    slot: Arc<Mutex<Slot>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl AsyncTicket {
    /// The operation's sequence number ([`super::OpInfo::seq`]).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Waits for the outcome (cancellation-safe; wrap in `tokio::time::timeout` to
    /// bound it). Several tasks may wait on one ticket (shared through an `Arc`): each
    /// wakes with the outcome.
    pub async fn wait(&self) -> Result<u64, ReplicaError> {
        poll_fn(|cx| {
            let mut s = lock(&self.slot);
            match s.outcome.clone() {
                Some(r) => Poll::Ready(r),
                None => {
                    if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                        s.wakers.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }
}

struct Shared<A> {
    inner: Lock<Inner<A, AsyncGroup>>,
    waiters: Mutex<Vec<Waker>>,
    stop: AtomicBool,
}

impl<A> Shared<A> {
    /// Panics when this thread holds it already (see [`Lock`]).
    fn lock(&self) -> Guard<'_, Inner<A, AsyncGroup>> {
        self.inner.lock()
    }

    fn wake_all(&self) {
        for w in lock(&self.waiters).drain(..) {
            w.wake();
        }
    }

    fn register(&self, waker: &Waker) {
        let mut ws = lock(&self.waiters);
        if !ws.iter().any(|w| w.will_wake(waker)) {
            ws.push(waker.clone());
        }
    }
}

impl<A: Replicated + Send + 'static> ReplicaBuilder<A> {
    /// Joins the group and spawns the driver task on the current tokio runtime.
    /// Cancelled (dropped) before it returns, it leaves nothing joined behind.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn start_async(self) -> Result<AsyncReplica<A>, ReplicaError> {
        let group = group::Group::builder(self.name)
            .config(self.group.clone())
            .start_async()
            .await
            .map_err(ReplicaError::Join)?;
        let shared = Arc::new(Shared {
            inner: Lock::new(Inner::new(Machine::new(self.app, self.config), group)),
            waiters: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        ::tokio::spawn(drive(Arc::clone(&shared), self.name, self.group));
        Ok(AsyncReplica { shared })
    }
}

/// One member of a replicated state over an [`AsyncGroup`], driven by a task: the
/// async twin of [`Replica`](super::Replica). Dropping it stops the task (within a
/// few milliseconds) and closes the connection; nothing more is sent once the drop
/// returns, and every [`AsyncTicket`] resolves: [`ReplicaError::NotSent`] with
/// [`GroupError::Unknown`] if the daemon had accepted its operation (the others may
/// have applied it), [`ReplicaError::Closed`] (or `NotSent` with the group layer's
/// reason) if it was never sent. A runtime that shuts down under the replica ends it the
/// same way.
pub struct AsyncReplica<A> {
    shared: Arc<Shared<A>>,
}

impl<A> std::fmt::Debug for AsyncReplica<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncReplica").finish_non_exhaustive()
    }
}

impl<A: Replicated + Send + 'static> AsyncReplica<A> {
    /// Submits an operation; the [`AsyncTicket`] resolves when it is applied here.
    pub fn submit(&self, op: impl Into<Vec<u8>>) -> Result<AsyncTicket, ReplicaError> {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let s = Arc::clone(&slot);
        let resolve = Box::new(move |r| {
            let wakers = {
                let mut s = lock(&s);
                s.outcome = Some(r);
                std::mem::take(&mut s.wakers)
            };
            wakers.into_iter().for_each(Waker::wake);
        });
        let seq = self.shared.lock().submit(op.into(), resolve)?;
        Ok(AsyncTicket { seq, slot })
    }

    /// Reads the state (see [`Replica::read`](super::Replica::read)).
    pub fn read<R>(&self, f: impl FnOnce(&A) -> R) -> R {
        f(self.shared.lock().machine.app())
    }

    /// The next event; `None` once the replica has stopped. Cancellation-safe.
    pub async fn next_event(&self) -> Option<Event> {
        poll_fn(|cx| {
            self.shared.register(cx.waker());
            let mut inner = self.shared.lock();
            if let Some(e) = inner.events.pop_front() {
                return Poll::Ready(Some(e));
            }
            if inner.ended {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Waits until the view's members are in sync and `check` holds for the view;
    /// `None` if the replica stops first. `check` runs under the replica's lock, as
    /// `read`'s closure does.
    pub async fn wait_ready(&self, mut check: impl FnMut(&View) -> bool) -> Option<View> {
        poll_fn(|cx| {
            self.shared.register(cx.waker());
            let inner = self.shared.lock();
            if inner.machine.phase() == Phase::Ready {
                if let Some(v) = inner.machine.view().filter(|v| check(v)) {
                    return Poll::Ready(Some(v.clone()));
                }
            }
            if inner.ended {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Where this member is in the protocol.
    pub fn phase(&self) -> Phase {
        self.shared.lock().machine.phase()
    }

    /// The current view (`None` while detached).
    pub fn view(&self) -> Option<View> {
        self.shared.lock().machine.view().cloned()
    }

    /// This state's summary.
    pub fn summary(&self) -> Summary {
        self.shared.lock().machine.summary()
    }

    /// The protocol's counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().machine.stats()
    }

    /// Asks all members to compare digests now.
    pub fn verify(&self) {
        let mut inner = self.shared.lock();
        inner.machine.verify();
        inner.flush();
    }

    /// Leaves the group once what is queued is sent.
    pub async fn leave(&self) -> Result<(), ReplicaError> {
        let group = self.shared.lock().group.clone();
        match group {
            Some(g) => g.leave().await.map_err(|e| match e {
                GroupError::Timeout => ReplicaError::Timeout,
                _ => ReplicaError::Closed,
            }),
            None => Err(ReplicaError::Closed),
        }
    }
}

impl<A> Drop for AsyncReplica<A> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Nothing more is sent once this returns. The group layer then reports what
        // became of every operation it was given, which the driver task hands to the
        // tickets as it ends (at once: the stop wakes it).
        let group = self.shared.lock().group.clone();
        if let Some(group) = group {
            group.stop_now();
        }
    }
}

/// The driver task: group events into the machine, the machine's sends out.
/// Ends the replica when the driver task ends, however it ends: also when it is
/// dropped with its runtime, or panics, so that no ticket or waiter waits forever.
struct EndOnDrop<'a, A: Replicated>(&'a Shared<A>);

impl<A: Replicated> Drop for EndOnDrop<'_, A> {
    fn drop(&mut self) {
        self.0.lock().shut_down();
        self.0.wake_all();
    }
}

async fn drive<A: Replicated + Send + 'static>(
    shared: Arc<Shared<A>>,
    name: GroupName,
    config: group::Config,
) {
    let _end = EndOnDrop(&shared);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            // Ends the tickets with the group layer's outcomes, then closes it.
            let group = {
                let mut inner = shared.lock();
                inner.shut_down();
                inner.group.take()
            };
            shared.wake_all();
            drop(group);
            return;
        }
        let (group, wait) = {
            let inner = shared.lock();
            let now = Instant::now();
            let wait = inner
                .machine
                .poll_timeout()
                .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
            (inner.group.clone(), wait)
        };
        let Some(group) = group else { return };
        let event = match ::tokio::time::timeout(wait, group.next_event()).await {
            Ok(Some(e)) => Some(e),
            Ok(None) => {
                shared.lock().end();
                shared.wake_all();
                return;
            }
            Err(_) => None,
        };
        let rejoin = {
            let mut inner = shared.lock();
            inner.handle(event);
            if inner.ended {
                drop(inner);
                shared.wake_all();
                return;
            }
            std::mem::take(&mut inner.rejoin)
        };
        shared.wake_all();
        if rejoin {
            let old = {
                let mut inner = shared.lock();
                let old = inner.retire_group();
                inner.machine.handle_disconnected();
                old
            };
            drop(old);
            drop(group);
            let mut pause = Duration::from_millis(100);
            let deadline = Instant::now() + Duration::from_secs(60);
            let new = loop {
                if shared.stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                    break None;
                }
                let start = group::Group::builder(name)
                    .config(config.clone())
                    .start_async()
                    .await;
                if let Ok(g) = start {
                    break Some(g);
                }
                ::tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            };
            let mut inner = shared.lock();
            match new {
                Some(g) => inner.group = Some(Arc::new(g)),
                None => {
                    inner.end();
                    drop(inner);
                    shared.wake_all();
                    return;
                }
            }
        }
    }
}
