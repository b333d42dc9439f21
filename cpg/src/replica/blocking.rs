//! The blocking driver: [`Replica`], a [`Machine`] fed by a [`Group`] on a thread of
//! its own, with a client API that any thread may use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::group::{self, Group, GroupError, SendId, View};
use crate::layer::lock::{Guard, Lock};
use crate::layer::wait::wait_for;
use crate::name::GroupName;

use super::app::{Outcome, Replicated};
use super::builder::ReplicaBuilder;
use super::config::Config;
use super::error::ReplicaError;
use super::event::Event;
use super::machine::Machine;
use super::shared::{state_calls, Core, Resolve, Sink, EVENTS_PER_PASS};

/// Longest sleep of the driver thread when nothing is due.
const TICK: Duration = Duration::from_millis(20);

/// Resolves once with the submitted operation's [`Outcome`] once it is applied here
/// (in the agreed order): the state's version after it and what
/// [`Replicated::apply`] returned; or why it was not.
pub struct Ticket<O> {
    seq: u64,
    slot: Arc<Slot<Result<Outcome<O>, ReplicaError>>>,
}

/// Where a ticket's outcome waits to be taken: one allocation per operation, shared by
/// the ticket and its resolver.
struct Slot<T> {
    state: std::sync::Mutex<Fill<T>>,
    ready: Condvar,
}

/// A [`Slot`]'s content.
enum Fill<T> {
    /// Not resolved yet; `true` while a waiter sleeps on the condition variable.
    Pending(bool),
    Ready(T),
    /// Taken, or its resolver dropped without resolving it.
    Closed,
}

impl<T> Slot<T> {
    fn new() -> Arc<Slot<T>> {
        Arc::new(Slot {
            state: std::sync::Mutex::new(Fill::Pending(false)),
            ready: Condvar::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Fill<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `outcome` in (`None`: closes it) unless it holds one; wakes a waiter.
    fn fill(&self, outcome: Option<T>) {
        let mut state = self.state();
        if let Fill::Pending(waiting) = *state {
            *state = outcome.map_or(Fill::Closed, Fill::Ready);
            drop(state);
            if waiting {
                self.ready.notify_all();
            }
        }
    }

    /// Waits up to `timeout` for the outcome and takes it.
    fn take(&self, timeout: Duration) -> Result<T, ReplicaError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.state();
        loop {
            match std::mem::replace(&mut *state, Fill::Closed) {
                Fill::Ready(outcome) => return Ok(outcome),
                Fill::Closed => return Err(ReplicaError::Closed),
                Fill::Pending(_) => {
                    *state = Fill::Pending(true);
                    let left = match deadline {
                        Some(d) => d.saturating_duration_since(Instant::now()),
                        None => Duration::MAX,
                    };
                    if left.is_zero() {
                        return Err(ReplicaError::Timeout);
                    }
                    state = self
                        .ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

/// The resolver's hold on a [`Slot`]: dropped without filling it (its driver gone),
/// it closes it, so that no wait outlasts its timeout for nothing. The replica's core
/// keeps it as the ticket's resolver, without a box.
struct Filler<T>(Arc<Slot<T>>);

impl<T: Send> Resolve<T> for Filler<Result<T, ReplicaError>> {
    fn resolve(self, outcome: Result<T, ReplicaError>) {
        self.0.fill(Some(outcome));
    }
}

/// The blocking driver's core: a ticket's resolver is its slot's [`Filler`].
type BlockingCore<A> =
    Core<A, Group, Filler<Result<Outcome<<A as Replicated>::Output>, ReplicaError>>>;

impl<T> Drop for Filler<T> {
    fn drop(&mut self) {
        self.0.fill(None);
    }
}

impl<O> std::fmt::Debug for Ticket<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl<O> Ticket<O> {
    /// The operation's sequence number ([`super::OpInfo::seq`]).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Waits up to `timeout` for the outcome. It is handed out once: a wait after the
    /// one that returned it answers [`ReplicaError::Closed`].
    pub fn wait(&self, timeout: Duration) -> Result<Outcome<O>, ReplicaError> {
        self.slot.take(timeout)?
    }
}

/// Waits up to `timeout` for what a resolver sends.
fn recv<T>(rx: &Receiver<Result<T, ReplicaError>>, timeout: Duration) -> Result<T, ReplicaError> {
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ReplicaError::Timeout),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ReplicaError::Closed),
    }
}

struct Shared<A: Replicated> {
    core: Lock<BlockingCore<A>>,
    changed: Condvar,
    stop: AtomicBool,
}

impl<A: Replicated> Shared<A> {
    /// Panics when this thread holds it already (see [`Lock`]).
    fn lock(&self) -> Guard<'_, BlockingCore<A>> {
        self.core.lock()
    }
}

impl<A: Replicated + Send + 'static> ReplicaBuilder<A> {
    /// Joins the group (in the network namespace of the calling thread) and starts the
    /// driver thread.
    pub fn start(self) -> Result<Replica<A>, ReplicaError> {
        let group = Group::builder(self.name)
            .config(self.group.clone())
            .start()
            .map_err(ReplicaError::Join)?;
        let shared = Arc::new(Shared {
            core: Lock::new(Core::new(
                Machine::new(self.app, self.config),
                group,
                self.group.queue_limit,
                &self.name,
            )),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            let (name, config) = (self.name, self.group);
            std::thread::Builder::new()
                .name("cpg-replica".into())
                .spawn(move || run(&shared, name, config))
                .map_err(|_| ReplicaError::Closed)?
        };
        Ok(Replica {
            shared,
            thread: Some(thread),
        })
    }
}

/// One member of a replicated state: the protocol ([`Machine`]) around the
/// application's `A`, over a [`Group`], driven by a thread of its own.
///
/// See the [module documentation](super) for an example. All methods take `&self`.
/// Events queue up until read with [`next_event`](Self::next_event): read them.
///
/// Dropping it stops the driver thread and closes the connection; nothing is sent once
/// the drop has begun, and every [`Ticket`] resolves: [`ReplicaError::NotSent`] with
/// [`GroupError::Unknown`] if the daemon had accepted its operation (the others may
/// have applied it: do not submit it again blindly), [`ReplicaError::Closed`] (or
/// `NotSent` with the group layer's reason) if it was never sent.
pub struct Replica<A: Replicated> {
    shared: Arc<Shared<A>>,
    thread: Option<JoinHandle<()>>,
}

impl<A: Replicated> std::fmt::Debug for Replica<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").finish_non_exhaustive()
    }
}

impl<A: Replicated + Send + 'static> Replica<A> {
    /// A builder for a member of `name` around `app`, with default settings.
    pub fn builder(name: GroupName, app: A) -> ReplicaBuilder<A> {
        ReplicaBuilder {
            name,
            app,
            config: Config::default(),
            group: group::Config::default(),
        }
    }

    /// Joins `name` around `app` with default settings.
    pub fn start(name: GroupName, app: A) -> Result<Replica<A>, ReplicaError> {
        Replica::builder(name, app).start()
    }

    /// Submits an operation; the [`Ticket`] resolves when it is applied here, in the
    /// agreed order (every member of the view applies it at the same point), with its
    /// version and the output of [`Replicated::apply`].
    pub fn submit(&self, op: impl Into<Vec<u8>>) -> Result<Ticket<A::Output>, ReplicaError> {
        let slot = Slot::new();
        let seq = self
            .shared
            .lock()
            .submit(op.into(), Filler(Arc::clone(&slot)))?;
        Ok(Ticket { seq, slot })
    }

    /// Submits the operations of `ops` at once, in their order, and returns their
    /// [`Ticket`]s in the same order: one hold of the replica's lock and one pass
    /// handing them to the group layer for them all, where [`submit`](Self::submit)
    /// takes one of each per operation: for a service that submits what it has
    /// queued (its clients' requests read in one pass). Each ticket resolves on its
    /// own, as `submit`'s does. On the benchmark's 3-node cluster at 64 B, batches of
    /// 64 gave about 5 % more operations per second than single submits, and 5–7 %
    /// less client CPU per operation (`build-support/bench/README.md`): a small
    /// gain, measure before counting on it.
    ///
    /// # Order
    ///
    /// The operations get consecutive sequence numbers ([`Ticket::seq`]) in the
    /// given order and are sent in that order, so those applied are applied in that
    /// order, here as on every member, each at its own point of the agreed order
    /// (with versions strictly increasing). The batch is not one atomic operation:
    /// other members' operations may be applied between two of its operations, and
    /// each is judged at its own delivery. Where writes are gated
    /// ([`Config::gate_writes`](super::Config::gate_writes)), those delivered while
    /// the agreed quorum is lost fail with [`ReplicaError::NotQuorate`] (those after
    /// it comes back are applied). Any operation may fail on its own, with later ones
    /// still applied: [`ReplicaError::NotSent`] (a lost connection, a rejoin, one too
    /// large for the group layer) or [`ReplicaError::Discarded`] (a merge), and with
    /// [`OnDisconnect::Drop`](crate::group::OnDisconnect::Drop) while the daemon is
    /// lost, all of them before the call returns. Look at every ticket; changes that
    /// must be applied together belong in one operation.
    ///
    /// # Errors
    ///
    /// The checks of `submit` ([`ReplicaError::Closed`] once the replica has ended,
    /// [`ReplicaError::NotQuorate`] while the local daemon says not quorate, where
    /// writes are gated) are made once for the whole batch, in the same hold of the
    /// replica's lock that takes it, so they cannot fail part-way: a batch is refused
    /// whole (none of its operations sent, none given a sequence number) or taken
    /// whole. Once taken, each operation is judged at its own delivery, as a single
    /// submit's is (see Order): the local daemon turning not quorate after the call
    /// does not recall it. The group layer's queue bound refuses nothing, here as in
    /// `submit`: operations beyond it wait in the replica and go as the queue
    /// drains. An empty `ops` returns an empty `Vec` at once, without looking at the
    /// replica.
    ///
    /// `ops` is read to its end before the replica's lock is taken: the iterator may
    /// call this replica. The batch is handed to the group layer under that lock,
    /// which the replica's own thread then waits for: keep batches to what one pass
    /// of a service reads (the benchmark used 16 and 64), not unbounded.
    pub fn submit_many<I>(&self, ops: I) -> Result<Vec<Ticket<A::Output>>, ReplicaError>
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
            let slot = Slot::new();
            batch.push((op.into(), Filler(Arc::clone(&slot))));
            slots.push(slot);
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let seqs = self.shared.lock().submit_many(batch)?;
        Ok(seqs
            .zip(slots)
            .map(|(seq, slot)| Ticket { seq, slot })
            .collect())
    }

    /// A read barrier: waits up to `timeout` until everything ordered before this call
    /// (every operation that any member had applied, so every acknowledged write, and
    /// this member's own operations submitted before it) is applied here, on the
    /// state the view agreed on; returns the state's version then. See
    /// [`read_ordered`](Self::read_ordered) for when to use it, and the
    /// [module documentation](super#reads) for its cost (one small message, shared by
    /// concurrent barriers).
    pub fn barrier(&self, timeout: Duration) -> Result<u64, ReplicaError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.shared.lock().barrier(Box::new(move |r| {
            let _ = tx.try_send(r);
        }))?;
        recv(&rx, timeout)
    }

    /// Reads the state after a [`barrier`](Self::barrier): the read sees every write
    /// acknowledged (to any member) before the call. Use it where a service answers
    /// from the state what another member's client may just have changed (who holds a
    /// lock, whether a name is taken); [`read`](Self::read) answers at once from the
    /// local copy, which lags the operations in flight. `f` runs under the replica's
    /// lock, as `read`'s does.
    pub fn read_ordered<R>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&A) -> R,
    ) -> Result<R, ReplicaError> {
        self.barrier(timeout)?;
        Ok(self.read(f))
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        let shared = &self.shared;
        wait_for(shared.lock(), &shared.changed, timeout, Core::take_event).flatten()
    }

    /// Waits up to `timeout` until the view's members are in sync
    /// ([`Phase::Ready`](super::Phase::Ready)) and `check` holds for the view; returns
    /// the view. `check` runs under the replica's lock, as `read`'s closure does.
    pub fn wait_ready(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&View) -> bool,
    ) -> Option<View> {
        let shared = &self.shared;
        wait_for(shared.lock(), &shared.changed, timeout, |core| {
            core.ready_view(&mut check)
        })
        .flatten()
    }

    state_calls!();

    /// Leaves the group once what is queued is sent, waiting up to `timeout`.
    pub fn leave(&self, timeout: Duration) -> Result<(), ReplicaError> {
        let group = self.shared.lock().group.clone();
        match group {
            Some(g) => g.leave(timeout).map_err(|e| match e {
                GroupError::Timeout => ReplicaError::Timeout,
                _ => ReplicaError::Closed,
            }),
            None => Err(ReplicaError::Closed),
        }
    }
}

impl<A: Replicated> Drop for Replica<A> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Nothing more is sent from here on; the driver thread hands the group layer's
        // outcome of every operation to the tickets as it ends.
        let group = self.shared.lock().group.clone();
        if let Some(group) = group {
            group.stop_now();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The group (and its connection) goes with the last reference.
        let group = self.shared.lock().group.take();
        drop(group);
    }
}

/// Ends the replica when the driver thread ends, however it ends: also when the
/// application's [`Replicated`] code panics on it, so that no ticket or waiter waits
/// forever for a thread that is gone.
struct EndOnDrop<'a, A: Replicated>(&'a Shared<A>);

impl<A: Replicated> Drop for EndOnDrop<'_, A> {
    fn drop(&mut self) {
        self.0.lock().shut_down();
        self.0.changed.notify_all();
    }
}

/// The driver thread: group events into the machine, the machine's sends out.
fn run<A: Replicated>(shared: &Arc<Shared<A>>, name: GroupName, config: group::Config) {
    let _span = crate::trace::entered!(shared.lock().log.span());
    let _end = EndOnDrop(shared);
    // The group layer's events of one pass, taken before the replica's lock.
    let mut taken = std::collections::VecDeque::with_capacity(EVENTS_PER_PASS);
    while !shared.stop.load(Ordering::SeqCst) {
        let (group, wait) = {
            let core = shared.lock();
            let now = Instant::now();
            let wait = core
                .machine
                .poll_timeout()
                .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
            (core.group.clone(), wait)
        };
        let Some(group) = group else { break };
        group.next_events(wait, &mut taken, EVENTS_PER_PASS);
        let mut core = shared.lock();
        if taken.is_empty() && group.end().is_some() {
            core.end();
            shared.changed.notify_all();
            return;
        }
        // Fed from the core, where an end (or a panic of the application's code
        // while they are fed) still finds the outcomes of operations among them; the
        // emptied buffer comes back for the next pass.
        std::mem::swap(&mut core.taken, &mut taken);
        core.handle_taken();
        std::mem::swap(&mut core.taken, &mut taken);
        shared.changed.notify_all();
        if core.ended {
            return;
        }
        if std::mem::take(&mut core.rejoin) {
            let old = core.retire_group();
            core.machine.handle_disconnected();
            drop(core);
            drop(group);
            drop(old);
            let new = rejoin_group(shared, name, &config);
            let mut core = shared.lock();
            match new {
                Some(g) => core.group = Some(Arc::new(g)),
                None => {
                    core.end();
                    shared.changed.notify_all();
                    return;
                }
            }
        }
    }
}

/// Joins again after the machine gave up on a view, retrying for a minute.
fn rejoin_group<A: Replicated>(
    shared: &Shared<A>,
    name: GroupName,
    config: &group::Config,
) -> Option<Group> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(100);
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        if let Ok(g) = Group::builder(name).config(config.clone()).start() {
            return Some(g);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    None
}

/// The blocking driver's group, where its replica's messages go.
impl Sink for Group {
    fn queued(&self) -> usize {
        self.stats().queued
    }
    fn send(&self, bytes: Vec<u8>, confirm: bool) -> Result<SendId, GroupError> {
        if confirm {
            self.send_tracked(bytes)
        } else {
            Group::send(self, bytes)
        }
    }
    fn stop(&self) {
        self.stop_now();
    }
    fn try_next_event(&self) -> Option<group::Event> {
        Group::try_next_event(self)
    }
    fn quorum(&self) -> group::LocalQuorum {
        Group::quorum(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Arc<Slot<u32>> {
        Slot::new()
    }

    /// The outcome is handed out once; a later wait answers `Closed`, and a second
    /// fill does not replace what was filled first.
    #[test]
    fn a_slot_hands_its_outcome_out_once() {
        let s = slot();
        let filler = Filler(Arc::clone(&s));
        filler.0.fill(Some(7));
        filler.0.fill(Some(8));
        drop(filler);
        assert_eq!(s.take(Duration::ZERO).ok(), Some(7));
        assert!(matches!(s.take(Duration::ZERO), Err(ReplicaError::Closed)));
    }

    /// A wait for an outcome not filled yet times out, and the outcome filled after
    /// the timeout is still there for the next wait.
    #[test]
    fn a_wait_times_out_and_the_outcome_comes_later() {
        let s = slot();
        let filler = Filler(Arc::clone(&s));
        assert!(matches!(
            s.take(Duration::from_millis(20)),
            Err(ReplicaError::Timeout)
        ));
        filler.0.fill(Some(3));
        assert_eq!(s.take(Duration::ZERO).ok(), Some(3));
    }

    /// A resolver dropped without resolving (its driver gone) closes the slot: a
    /// waiter on another thread wakes with `Closed` at once, not at its timeout.
    #[test]
    fn a_dropped_resolver_wakes_the_waiter_with_closed() {
        let s = slot();
        let filler = Filler(Arc::clone(&s));
        let waiter = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let began = Instant::now();
                (s.take(Duration::from_secs(60)), began.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(filler);
        let (outcome, waited) = waiter.join().expect("the waiter ran");
        assert!(matches!(outcome, Err(ReplicaError::Closed)), "{outcome:?}");
        assert!(waited < Duration::from_secs(30), "woke after {waited:?}");
    }

    /// A waiter on another thread gets the outcome filled while it sleeps.
    #[test]
    fn a_sleeping_waiter_gets_the_outcome() {
        let s = slot();
        let filler = Filler(Arc::clone(&s));
        let waiter = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.take(Duration::from_secs(60)))
        };
        std::thread::sleep(Duration::from_millis(50));
        filler.0.fill(Some(11));
        drop(filler);
        assert_eq!(waiter.join().expect("the waiter ran").ok(), Some(11));
    }

    /// A ticket is `Sync`: two threads may wait on it at once. The outcome goes to one
    /// of them, and the other wakes with `Closed` at the same time, not at its timeout
    /// (a fill that woke one sleeper would leave it asleep); likewise when the resolver
    /// is dropped unfilled.
    #[test]
    fn two_waiters_both_wake_and_one_gets_the_outcome() {
        for filled in [true, false] {
            let s = slot();
            let filler = Filler(Arc::clone(&s));
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let s = Arc::clone(&s);
                    std::thread::spawn(move || {
                        let began = Instant::now();
                        (s.take(Duration::from_secs(60)), began.elapsed())
                    })
                })
                .collect();
            // Both asleep on the condition variable before the fill (or, on a loaded
            // machine, one still on its way: it then finds the outcome at once).
            let began = Instant::now();
            while !matches!(*s.state(), Fill::Pending(true))
                || began.elapsed() < Duration::from_millis(50)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            if filled {
                filler.0.fill(Some(5));
            }
            drop(filler);
            let mut outcomes: Vec<_> = waiters
                .into_iter()
                .map(|w| {
                    let (outcome, waited) = w.join().expect("the waiter ran");
                    assert!(waited < Duration::from_secs(30), "woke after {waited:?}");
                    outcome.ok()
                })
                .collect();
            outcomes.sort();
            let expected = if filled {
                vec![None, Some(5)]
            } else {
                vec![None, None]
            };
            assert_eq!(outcomes, expected, "filled: {filled}");
            assert!(matches!(s.take(Duration::ZERO), Err(ReplicaError::Closed)));
        }
    }
}
