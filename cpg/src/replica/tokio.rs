//! The tokio driver: [`AsyncReplica`], a [`Machine`] fed by an
//! [`AsyncGroup`] in a task, with the same rules and events as the blocking
//! [`Replica`](super::Replica).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::group::{self, AsyncGroup, GroupError, SendId, View};
use crate::layer::lock::{Guard, Lock};
use crate::name::GroupName;

use super::app::{Outcome, Replicated};
use super::builder::ReplicaBuilder;
use super::error::ReplicaError;
use super::event::Event;
use super::machine::Machine;
use super::shared::{state_calls, Core, Sink};

/// Longest the driver task waits for a group event before it looks at the clock.
const TICK: Duration = Duration::from_millis(20);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a resolver puts an outcome for the tasks that await it.
struct Slot<T> {
    outcome: Option<Result<T, ReplicaError>>,
    /// Every task waiting: `wait` takes `&self`, so several tasks may await one
    /// ticket (through an `Arc`), and each must wake.
    wakers: Vec<Waker>,
}

/// A slot, and the resolver that fills it and wakes its tasks.
fn slot<T: Send + 'static>() -> (Arc<Mutex<Slot<T>>>, super::shared::Resolver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        outcome: None,
        wakers: Vec::new(),
    }));
    let s = Arc::clone(&slot);
    let resolve = Box::new(move |r| {
        let wakers = {
            let mut s = lock(&s);
            s.outcome = Some(r);
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    });
    (slot, resolve)
}

/// Waits until the slot holds an outcome; a copy of it (cancellation-safe).
async fn wait_slot<T: Clone>(slot: &Mutex<Slot<T>>) -> Result<T, ReplicaError> {
    poll_fn(|cx| {
        let mut s = lock(slot);
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

/// Resolves once with the submitted operation's [`Outcome`] once it is applied here
/// (its version and what [`Replicated::apply`] returned), or why it was not (the
/// async [`Ticket`](super::Ticket)).
pub struct AsyncTicket<O> {
    seq: u64,
    slot: Arc<Mutex<Slot<Outcome<O>>>>,
}

impl<O> std::fmt::Debug for AsyncTicket<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTicket")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl<O: Clone> AsyncTicket<O> {
    /// The operation's sequence number ([`super::OpInfo::seq`]).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Waits for the outcome (cancellation-safe; wrap in `tokio::time::timeout` to
    /// bound it). Several tasks may wait on one ticket (shared through an `Arc`): each
    /// wakes with the outcome (a copy of the output each).
    pub async fn wait(&self) -> Result<Outcome<O>, ReplicaError> {
        wait_slot(&self.slot).await
    }
}

struct Shared<A: Replicated> {
    core: Lock<Core<A, AsyncGroup>>,
    waiters: Mutex<Vec<Waker>>,
    stop: AtomicBool,
}

impl<A: Replicated> Shared<A> {
    /// Panics when this thread holds it already (see [`Lock`]).
    fn lock(&self) -> Guard<'_, Core<A, AsyncGroup>> {
        self.core.lock()
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

/// Waits until `ready` returns something (looked at on every poll; woken whenever the
/// replica's events or state change). Cancellation-safe when `ready` takes nothing it
/// does not return.
async fn wait_for<A: Replicated, T>(
    shared: &Shared<A>,
    mut ready: impl FnMut(&mut Core<A, AsyncGroup>) -> Option<T>,
) -> T {
    poll_fn(|cx| {
        shared.register(cx.waker());
        match ready(&mut shared.lock()) {
            Some(t) => Poll::Ready(t),
            None => Poll::Pending,
        }
    })
    .await
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
            core: Lock::new(Core::new(
                Machine::new(self.app, self.config),
                group,
                self.group.queue_limit,
                &self.name,
            )),
            waiters: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        ::tokio::spawn(crate::trace::instrumented!(
            drive(Arc::clone(&shared), self.name, self.group),
            shared.lock().log.span()
        ));
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
pub struct AsyncReplica<A: Replicated> {
    shared: Arc<Shared<A>>,
}

impl<A: Replicated> std::fmt::Debug for AsyncReplica<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncReplica").finish_non_exhaustive()
    }
}

impl<A: Replicated + Send + 'static> AsyncReplica<A> {
    /// Submits an operation; the [`AsyncTicket`] resolves when it is applied here,
    /// with its version and the output of [`Replicated::apply`].
    pub fn submit(&self, op: impl Into<Vec<u8>>) -> Result<AsyncTicket<A::Output>, ReplicaError> {
        let (slot, resolve) = slot();
        let seq = self.shared.lock().submit(op.into(), resolve)?;
        Ok(AsyncTicket { seq, slot })
    }

    /// Submits the operations of `ops` at once, in their order, and returns their
    /// [`AsyncTicket`]s in the same order: one hold of the replica's lock and one
    /// pass handing them to the group layer for them all, where
    /// [`submit`](Self::submit) takes one of each per operation. Each ticket resolves
    /// on its own, as `submit`'s does. Order, errors and the empty case are those of
    /// the blocking [`Replica::submit_many`](super::Replica::submit_many):
    /// consecutive sequence numbers in the given order, applied (those that are) in
    /// that order, with other members' operations possibly between them; each ticket
    /// has its own outcome.
    ///
    /// # Errors
    ///
    /// [`ReplicaError::Closed`] once the replica has ended, and
    /// [`ReplicaError::NotQuorate`] while the local daemon says not quorate (where
    /// writes are gated): checked once for the whole batch, which is then refused
    /// whole (none of it sent) or taken whole, each operation then judged at its own
    /// delivery. An empty `ops` returns an empty `Vec` at once. The group layer's
    /// queue bound refuses nothing: operations beyond it wait in the replica and go
    /// as the queue drains.
    ///
    /// `ops` is read to its end before the replica's lock is taken: the iterator may
    /// call this replica. The batch is handed to the group layer under that lock (a
    /// blocking mutex, on the calling task's thread), which the replica's task then
    /// waits for: keep batches to what one pass of a service reads, not unbounded.
    pub fn submit_many<I>(&self, ops: I) -> Result<Vec<AsyncTicket<A::Output>>, ReplicaError>
    where
        I: IntoIterator,
        I::Item: Into<Vec<u8>>,
    {
        let ops = ops.into_iter();
        // The iterator's word on its length is not trusted beyond a modest size.
        let hint = ops.size_hint().0.min(4096);
        let mut slots = Vec::with_capacity(hint);
        let mut batch = Vec::with_capacity(hint);
        for op in ops {
            let (slot, resolve) = slot();
            batch.push((op.into(), resolve));
            slots.push(slot);
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let seqs = self.shared.lock().submit_many(batch)?;
        Ok(seqs
            .zip(slots)
            .map(|(seq, slot)| AsyncTicket { seq, slot })
            .collect())
    }

    /// A read barrier: waits until everything ordered before this call (every
    /// operation that any member had applied, so every acknowledged write, and this
    /// member's own operations submitted before it) is applied here, on the state the
    /// view agreed on; returns the state's version then. Cancellation-safe; wrap in
    /// `tokio::time::timeout` to bound it. See the blocking
    /// [`Replica::barrier`](super::Replica::barrier).
    pub async fn barrier(&self) -> Result<u64, ReplicaError> {
        let (slot, resolve) = slot();
        self.shared.lock().barrier(resolve)?;
        wait_slot(&slot).await
    }

    /// Reads the state after a [`barrier`](Self::barrier): the read sees every write
    /// acknowledged (to any member) before the call; [`read`](Self::read) answers at
    /// once from the local copy (see [`Replica::read_ordered`](super::Replica::read_ordered)
    /// for which to use when).
    pub async fn read_ordered<R>(&self, f: impl FnOnce(&A) -> R) -> Result<R, ReplicaError> {
        self.barrier().await?;
        Ok(self.read(f))
    }

    state_calls!();

    /// The next event; `None` once the replica has stopped. Cancellation-safe.
    pub async fn next_event(&self) -> Option<Event> {
        wait_for(&self.shared, Core::take_event).await
    }

    /// Waits until the view's members are in sync and `check` holds for the view;
    /// `None` if the replica stops first. `check` runs under the replica's lock, as
    /// `read`'s closure does.
    pub async fn wait_ready(&self, mut check: impl FnMut(&View) -> bool) -> Option<View> {
        wait_for(&self.shared, |core| core.ready_view(&mut check)).await
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

impl<A: Replicated> Drop for AsyncReplica<A> {
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

/// Ends the replica when the driver task ends, however it ends: also when it is
/// dropped with its runtime, or panics, so that no ticket or waiter waits forever.
struct EndOnDrop<'a, A: Replicated>(&'a Shared<A>);

impl<A: Replicated> Drop for EndOnDrop<'_, A> {
    fn drop(&mut self) {
        self.0.lock().shut_down();
        self.0.wake_all();
    }
}

/// The driver task: group events into the machine, the machine's sends out.
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
                let mut core = shared.lock();
                core.shut_down();
                core.group.take()
            };
            shared.wake_all();
            drop(group);
            return;
        }
        let (group, wait) = {
            let core = shared.lock();
            let now = Instant::now();
            let wait = core
                .machine
                .poll_timeout()
                .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
            (core.group.clone(), wait)
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
            let mut core = shared.lock();
            core.handle(event);
            if core.ended {
                drop(core);
                shared.wake_all();
                return;
            }
            std::mem::take(&mut core.rejoin)
        };
        shared.wake_all();
        if rejoin {
            let old = {
                let mut core = shared.lock();
                let old = core.retire_group();
                core.machine.handle_disconnected();
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
            let mut core = shared.lock();
            match new {
                Some(g) => core.group = Some(Arc::new(g)),
                None => {
                    core.end();
                    drop(core);
                    shared.wake_all();
                    return;
                }
            }
        }
    }
}

/// The tokio driver's group, where its replica's messages go.
impl Sink for AsyncGroup {
    fn queued(&self) -> usize {
        self.stats().queued
    }
    fn send(&self, bytes: Vec<u8>, confirm: bool) -> Result<SendId, GroupError> {
        if confirm {
            self.send_tracked(bytes)
        } else {
            AsyncGroup::send(self, bytes)
        }
    }
    fn stop(&self) {
        self.stop_now();
    }
    fn try_next_event(&self) -> Option<group::Event> {
        AsyncGroup::try_next_event(self)
    }
    fn quorum(&self) -> group::LocalQuorum {
        AsyncGroup::quorum(self)
    }
}
