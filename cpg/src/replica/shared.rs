//! What the blocking and the tokio replica drivers share: the machine with its tickets
//! and the application's events ([`Core`]), fed from group-layer events and flushed
//! into the group layer ([`Sink`], which each driver implements for its group), and
//! the calls that read it ([`state_calls`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use crate::group::{self, GroupError, LocalQuorum, SendId, View};
use crate::name::GroupName;
use crate::trace::traced;

use super::app::{Outcome, Replicated};
use super::error::ReplicaError;
use super::event::{Effect, Event, Phase};
use super::machine::Machine;
use super::wire::{tracked, Tracked};

/// Round messages (state chunks above all) are handed to the group layer only while
/// its queue holds fewer messages than this: the rest wait in the machine, where a
/// view change can still drop them once stale (a chunk handed over is sent however
/// stale it has become).
const IN_FLIGHT: usize = 16;

/// Operations and markers are handed over beyond [`IN_FLIGHT`] while the operations
/// handed over and not yet delivered back (or reported not sent) hold fewer bytes than
/// this, so that the group layer can pack them into batches (a batch holds only what
/// is in its queue). Operations are never stale; the bound keeps a round message that
/// comes after them from waiting behind more than about this many bytes.
const OP_BYTES_IN_FLIGHT: usize = 1 << 20;

/// Most group-layer events fed to the machine in one pass of the driver (one hold of
/// its lock).
pub(super) const EVENTS_PER_PASS: usize = 256;

/// Whether the machine's next send goes to the group layer now: `round` whether it is
/// a round message, `queued` the messages in the group layer's queue, `op_bytes` the
/// bytes of operations in flight (see [`OP_BYTES_IN_FLIGHT`]).
fn has_room(round: bool, queued: usize, op_bytes: usize) -> bool {
    queued < IN_FLIGHT || (!round && op_bytes < OP_BYTES_IN_FLIGHT)
}

/// Where replica messages go: the group layer, blocking or async.
pub(super) trait Sink {
    /// Messages in the group layer's send queue.
    fn queued(&self) -> usize;
    /// Queues a message; with `confirm`, the group layer reports its outcome.
    fn send(&self, bytes: Vec<u8>, confirm: bool) -> Result<SendId, GroupError>;
    /// Stops the group layer now, as dropping it does: nothing more is sent, and its
    /// event queue ends with the outcome of every message it was given.
    fn stop(&self);
    /// The group layer's next event if one is queued (never waits).
    fn try_next_event(&self) -> Option<group::Event>;
    /// What the local daemon last said about the quorum.
    fn quorum(&self) -> LocalQuorum;
}

/// Resolves one ticket (`T`: an operation's [`Outcome`]) or one barrier (`T`: the
/// state's version when it passed).
pub(super) type Resolver<T> = Box<dyn FnOnce(Result<T, ReplicaError>) + Send>;

/// Where an operation's outcome goes: a boxed [`Resolver`] (the tokio driver's), or a
/// driver's own slot, put in the ticket table as it is (the blocking driver's: one
/// allocation less per operation than a box around it).
pub(super) trait Resolve<T>: Send {
    /// Hands over the outcome.
    fn resolve(self, outcome: Result<T, ReplicaError>);
}

impl<T> Resolve<T> for Resolver<T> {
    fn resolve(self, outcome: Result<T, ReplicaError>) {
        self(outcome)
    }
}

/// Operations submitted together, each with where its ticket's outcome goes.
pub(super) type Batch<R> = Vec<(Vec<u8>, R)>;

/// The machine and its bookkeeping, behind the driver's lock; `R` where operations'
/// outcomes go.
pub(super) struct Core<A: Replicated, G, R = Resolver<Outcome<<A as Replicated>::Output>>> {
    pub(super) machine: Machine<A>,
    pub(super) group: Option<std::sync::Arc<G>>,
    pub(super) events: VecDeque<Event>,
    tickets: HashMap<u64, R>,
    /// Barriers waiting, by the marker id that passes them (and every lower one).
    barriers: BTreeMap<u64, Vec<Resolver<u64>>>,
    /// Group-layer send ids of operations and markers (with their length), to tell a
    /// ticket or a barrier when its message was not sent.
    sent_ops: HashMap<SendId, (Tracked, usize)>,
    /// Bytes of the messages in `sent_ops`.
    op_bytes: usize,
    /// The group layer's queue bound: nothing is handed over while it is reached.
    queue_limit: usize,
    /// Operations the group layer delivered (confirmed) whose tickets wait to be
    /// applied here: if the replica stops first, the others may have applied them.
    delivered_ops: HashSet<u64>,
    /// Group-layer events the driver took from the group layer's queue and has not
    /// fed yet (see [`handle_taken`](Self::handle_taken)): kept here, so that the
    /// outcomes of operations among them are still taken if the application's code
    /// panics on an earlier one.
    pub(super) taken: VecDeque<group::Event>,
    /// The machine asked to leave and join again.
    pub(super) rejoin: bool,
    pub(super) ended: bool,
    /// The replica's span and what its logging remembers.
    #[cfg(feature = "tracing")]
    pub(super) log: super::log::Log,
}

impl<A: Replicated, G: Sink, R: Resolve<Outcome<A::Output>>> Core<A, G, R> {
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    /// `queue_limit`: the group layer's ([`group::Config::queue_limit`]).
    pub(super) fn new(machine: Machine<A>, group: G, queue_limit: usize, name: &GroupName) -> Self {
        Core {
            queue_limit,
            machine,
            group: Some(std::sync::Arc::new(group)),
            events: VecDeque::new(),
            tickets: HashMap::new(),
            barriers: BTreeMap::new(),
            sent_ops: HashMap::new(),
            op_bytes: 0,
            delivered_ops: HashSet::new(),
            taken: VecDeque::new(),
            rejoin: false,
            ended: false,
            #[cfg(feature = "tracing")]
            log: super::log::Log::new(name),
        }
    }

    /// For `next_event`: `Some(Some(event))`, `Some(None)` once the replica ended and
    /// its last event has been read, `None` while there is nothing yet.
    pub(super) fn take_event(&mut self) -> Option<Option<Event>> {
        match self.events.pop_front() {
            Some(e) => Some(Some(e)),
            None => self.ended.then_some(None),
        }
    }

    /// For `wait_ready`: `Some(Some(view))` once the view's members are in sync
    /// ([`Phase::Ready`]) and the view passes `check`, `Some(None)` once the replica
    /// ended, `None` while neither.
    pub(super) fn ready_view(&self, check: impl FnOnce(&View) -> bool) -> Option<Option<View>> {
        let ready = self.machine.phase() == Phase::Ready;
        match self.machine.view().filter(|v| ready && check(v)) {
            Some(v) => Some(Some(v.clone())),
            None => self.ended.then_some(None),
        }
    }

    /// Whether an operation may be submitted now: [`ReplicaError::Closed`] once the
    /// replica ended, [`ReplicaError::NotQuorate`] while the local daemon says not
    /// quorate (where writes are gated).
    fn open_for_writes(&self) -> Result<(), ReplicaError> {
        if self.ended {
            return Err(ReplicaError::Closed);
        }
        // A fast check: the agreed quorum at its delivery decides, but one the local
        // daemon says is not quorate would be refused there.
        if self.machine.gates_writes()
            && matches!(
                self.local_quorum(),
                LocalQuorum::Known { quorate: false, .. }
            )
        {
            return Err(ReplicaError::NotQuorate);
        }
        Ok(())
    }

    /// Submits an operation whose outcome goes to `resolve`.
    pub(super) fn submit(&mut self, op: Vec<u8>, resolve: R) -> Result<u64, ReplicaError> {
        self.open_for_writes()?;
        let seq = self.machine.submit(op);
        self.tickets.insert(seq, resolve);
        self.flush();
        Ok(seq)
    }

    /// Submits the operations `ops` (each with where its outcome goes), in their
    /// order, and flushes once; returns their sequence numbers, consecutive. All or
    /// nothing: on an error none is submitted (their resolvers are dropped unused).
    /// No operations: nothing done, nothing checked.
    pub(super) fn submit_many(
        &mut self,
        ops: Batch<R>,
    ) -> Result<std::ops::Range<u64>, ReplicaError> {
        if ops.is_empty() {
            return Ok(0..0);
        }
        self.open_for_writes()?;
        self.tickets.reserve(ops.len());
        let mut seqs: Option<std::ops::Range<u64>> = None;
        for (op, resolve) in ops {
            let seq = self.machine.submit(op);
            self.tickets.insert(seq, resolve);
            let range = seqs.get_or_insert(seq..seq);
            debug_assert_eq!(range.end, seq, "sequence numbers are consecutive");
            range.end = seq + 1;
        }
        self.flush();
        Ok(seqs.unwrap_or(0..0))
    }

    /// What the local daemon last said about the quorum
    /// ([`LocalQuorum::Unknown`] while there is no group).
    pub(super) fn local_quorum(&self) -> LocalQuorum {
        self.group
            .as_ref()
            .map_or(LocalQuorum::Unknown, |g| g.quorum())
    }

    /// Starts a read barrier whose outcome goes to `resolve`.
    pub(super) fn barrier(&mut self, resolve: Resolver<u64>) -> Result<(), ReplicaError> {
        if self.ended {
            return Err(ReplicaError::Closed);
        }
        let id = self.machine.barrier();
        self.barriers.entry(id).or_default().push(resolve);
        self.flush();
        Ok(())
    }

    /// Resolves the barriers up to marker `id` with `outcome`.
    fn pass_barriers(&mut self, id: u64, outcome: &Result<u64, ReplicaError>) {
        let passed: Vec<u64> = self.barriers.range(..=id).map(|(&k, _)| k).collect();
        for k in passed {
            for r in self.barriers.remove(&k).unwrap_or_default() {
                r(outcome.clone());
            }
        }
    }

    /// A message the group layer will not deliver (or lost track of): its ticket
    /// fails, or the barriers waiting for its marker do.
    fn not_sent(&mut self, what: Tracked, error: GroupError) {
        match what {
            Tracked::Op(seq) => {
                if let Some(r) = self.tickets.remove(&seq) {
                    r.resolve(Err(ReplicaError::NotSent(error)));
                }
            }
            Tracked::Mark(id) => {
                self.machine.mark_lost(id);
                self.pass_barriers(id, &Err(ReplicaError::NotSent(error)));
            }
        }
    }

    /// Hands the machine's sends to the group layer (as far as [`has_room`] lets them)
    /// and its events to the application; notes a request to rejoin.
    pub(super) fn flush(&mut self) {
        // The group layer's queue length, read from it (under its lock) once, and
        // again only where the count kept here says there is no room: only this
        // replica sends into its group, so the queue does not fill up behind a read,
        // it only drains (as its thread sends), and the count kept here (the length
        // read plus the messages handed over since) is never below the real one.
        // Where it says there is room, there is.
        let mut queued: Option<usize> = None;
        while let Some(group) = self.group.clone() {
            let Some(round) = self.machine.next_send_is_round() else {
                match self.machine.poll_effect() {
                    Some(Effect::Rejoin) => {
                        self.rejoin = true;
                        continue;
                    }
                    _ => break,
                }
            };
            let room =
                |queued: usize| queued < self.queue_limit && has_room(round, queued, self.op_bytes);
            let now = match queued {
                Some(q) if room(q) => q,
                _ => group.queued(),
            };
            queued = Some(now + 1);
            if !room(now) {
                break;
            }
            let Some(Effect::Send(bytes)) = self.machine.poll_effect() else {
                continue;
            };
            let what = tracked(&bytes);
            let len = bytes.len();
            // Operations and markers go confirmed: the group layer then reports one
            // whose outcome the loss of the daemon made unknown.
            match group.send(bytes, what.is_some()) {
                Ok(id) => {
                    queued = Some(now + 1);
                    if let Some(what) = what {
                        self.op_bytes += len;
                        self.sent_ops.insert(id, (what, len));
                    }
                }
                Err(e) => {
                    if let Some(what) = what {
                        self.not_sent(what, e);
                    }
                }
            }
        }
        traced!(self.log.tick());
        while let Some((e, output)) = self.machine.poll_event_and_output() {
            traced!(self.log.event(&e, &self.machine));
            match &e {
                Event::Applied { seq, version } => {
                    if let Some(r) = self.tickets.remove(seq) {
                        self.delivered_ops.remove(seq);
                        r.resolve(match output {
                            Some(output) => Ok(Outcome {
                                version: *version,
                                output,
                            }),
                            None => Err(ReplicaError::NoOutput { version: *version }),
                        });
                    }
                }
                Event::NotQuorate { seq, .. } => {
                    if let Some(r) = self.tickets.remove(seq) {
                        self.delivered_ops.remove(seq);
                        r.resolve(Err(ReplicaError::NotQuorate));
                    }
                }
                Event::Barrier { id, version } => self.pass_barriers(*id, &Ok(*version)),
                Event::Restored { discarded, .. } => {
                    // Own operations delivered while out of sync that the state taken
                    // does not hold: their tickets are still open.
                    for d in discarded {
                        if let Some(r) = self.tickets.remove(&d.seq) {
                            self.delivered_ops.remove(&d.seq);
                            r.resolve(Err(ReplicaError::Discarded));
                        }
                    }
                }
                _ => {}
            }
            self.events.push_back(e);
        }
    }

    /// What the group layer says of an operation it was given: not sent (or sent with
    /// an unknown outcome), or delivered.
    fn track(&mut self, event: &group::Event) {
        match event {
            group::Event::NotSent { id, error } => {
                if let Some((what, len)) = self.sent_ops.remove(id) {
                    self.op_bytes -= len;
                    self.not_sent(what, error.clone());
                }
            }
            group::Event::Confirmed { id, .. } => {
                let Some((what, len)) = self.sent_ops.remove(id) else {
                    return;
                };
                self.op_bytes -= len;
                if let Tracked::Op(seq) = what {
                    if self.tickets.contains_key(&seq) {
                        self.delivered_ops.insert(seq);
                    }
                }
            }
            _ => {}
        }
    }

    /// Stops the group layer now (nothing more is sent) and takes from its queue the
    /// outcome of every operation it was given; the other events there are dropped.
    fn stop_group(&mut self) {
        let Some(group) = self.group.clone() else {
            return;
        };
        group.stop();
        // Those the driver took come before those still queued.
        while let Some(event) = self.taken.pop_front() {
            self.track(&event);
        }
        while let Some(event) = group.try_next_event() {
            self.track(&event);
        }
    }

    /// Feeds one group-layer event (`None`: only time passed), then the events the
    /// group layer has queued behind it (up to [`EVENTS_PER_PASS`]), and flushes
    /// once: under one hold of the driver's lock, with one wake-up of the
    /// application for them all. The tokio driver's pass (the blocking driver takes
    /// its events before its lock: [`handle_taken`](Self::handle_taken)).
    #[cfg(feature = "tokio")]
    pub(super) fn handle(&mut self, event: Option<group::Event>) {
        let now = Instant::now();
        if let Some(event) = event {
            self.feed(now, event);
        }
        for _ in 0..EVENTS_PER_PASS {
            // A rejoin retires the group: what it still has queued is not fed.
            if self.ended || self.rejoin || self.machine.wants_rejoin() {
                break;
            }
            let Some(event) = self.group.as_ref().and_then(|g| g.try_next_event()) else {
                break;
            };
            self.feed(now, event);
        }
        self.machine.handle_timeout(now);
        self.flush();
    }

    /// Feeds the group-layer events that the driver took from the group layer's
    /// queue before it took this lock and put in [`taken`](Self::taken) (oldest
    /// first; none: only time passed), and flushes once: under one hold of the
    /// driver's lock, with one wake-up of the application for them all, and without
    /// the group layer's lock taken under it (which the group layer's thread holds
    /// while it delivers). Once the replica ends or asks to rejoin, what is left is
    /// not fed, only the outcomes of operations in it are taken, as
    /// [`stop_group`](Self::stop_group) takes those still queued.
    pub(super) fn handle_taken(&mut self) {
        let now = Instant::now();
        while let Some(event) = self.taken.pop_front() {
            if self.ended || self.rejoin || self.machine.wants_rejoin() {
                self.track(&event);
            } else {
                self.feed(now, event);
            }
        }
        self.machine.handle_timeout(now);
        self.flush();
    }

    /// Feeds one group-layer event to the machine.
    fn feed(&mut self, now: Instant, event: group::Event) {
        match event {
            group::Event::View(v) => self.machine.handle_view(now, &v),
            group::Event::Message(d) => self.machine.handle_delivery(now, &d),
            group::Event::Quorum { state, .. } => self.machine.handle_quorum(now, state),
            group::Event::Disconnected { .. } | group::Event::Evicted { .. } => {
                self.machine.handle_disconnected()
            }
            e @ (group::Event::NotSent { .. } | group::Event::Confirmed { .. }) => self.track(&e),
            group::Event::Left | group::Event::Stopped(_) => self.end(),
            _ => {}
        }
    }

    /// The replica was dropped, or its driver ended however it ended (returned,
    /// panicked in the application's [`Replicated`] code, or was dropped with its
    /// runtime): ends the replica unless it has ended already, so that nothing more is
    /// sent and no ticket or waiter waits for a driver that is gone. Runs in `Drop`,
    /// maybe while unwinding: the application's code is not trusted here (a second
    /// panic would abort), so if ending panics, the tickets still fail.
    pub(super) fn shut_down(&mut self) {
        if self.ended {
            return;
        }
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.end()));
        if ended.is_err() {
            // The group layer was stopped, and its outcomes taken, before the
            // application's code ran.
            self.end_tickets();
        }
    }

    /// The group is gone for good: no more events, every ticket fails. A ticket whose
    /// operation the daemon accepted fails with [`GroupError::Unknown`] (the others may
    /// have applied it); one never sent with [`ReplicaError::Closed`] (or the group
    /// layer's reason it was not sent).
    pub(super) fn end(&mut self) {
        self.stop_group();
        self.machine.handle_disconnected();
        self.flush();
        self.end_tickets();
    }

    /// Ends the replica and fails every ticket left.
    fn end_tickets(&mut self) {
        self.ended = true;
        self.pass_barriers(u64::MAX, &Err(ReplicaError::Closed));
        let delivered = std::mem::take(&mut self.delivered_ops);
        for (seq, r) in self.tickets.drain() {
            r.resolve(Err(if delivered.contains(&seq) {
                ReplicaError::NotSent(GroupError::Unknown)
            } else {
                ReplicaError::Closed
            }));
        }
    }

    /// The machine asked to rejoin: stops the group (its unsent operations are reported
    /// not sent, the others unknown or delivered) and returns it to be dropped.
    pub(super) fn retire_group(&mut self) -> Option<std::sync::Arc<G>> {
        self.stop_group();
        self.group.take()
    }
}

/// The calls that read the replica, word for word the same on
/// [`Replica`](super::Replica) and [`AsyncReplica`](super::AsyncReplica): expanded in
/// each one's `impl` (whose application type is `A`), over its field `shared`.
macro_rules! state_calls {
    () => {
        /// Reads the local copy of the state, at once. Between rounds every member of
        /// the view holds the same state at the same point of the agreed order, but
        /// each gets there at its own pace: this copy lags the operations in flight,
        /// also those another member has applied and acknowledged. During a round
        /// ([`Phase::Syncing`](crate::replica::Phase::Syncing)) this is the state from
        /// before it. To see every write acknowledged before the call, use
        /// `read_ordered` (see the [module documentation](crate::replica#reads)).
        /// This member's own operations are in it once their tickets resolved.
        ///
        /// `f` runs under the replica's lock: calling a method of this replica from it
        /// panics (instead of deadlocking).
        pub fn read<R>(&self, f: impl FnOnce(&A) -> R) -> R {
            f(self.shared.lock().machine.app())
        }

        /// Where this member is in the protocol.
        pub fn phase(&self) -> $crate::replica::Phase {
            self.shared.lock().machine.phase()
        }

        /// The current view (`None` while detached).
        pub fn view(&self) -> Option<$crate::group::View> {
            self.shared.lock().machine.view().cloned()
        }

        /// This state's summary.
        pub fn summary(&self) -> $crate::replica::Summary {
            self.shared.lock().machine.summary()
        }

        /// The agreed quorum at the latest delivery: what an operation delivered now
        /// is judged by ([`Machine::quorum`](crate::replica::Machine::quorum); see
        /// the [module documentation](crate::replica#quorum)).
        pub fn agreed_quorum(&self) -> $crate::group::AgreedQuorum {
            self.shared.lock().machine.quorum()
        }

        /// What the local daemon last said about the quorum (the group layer's
        /// `quorum()`): local knowledge, for a check before a write; `submit` fails
        /// with [`ReplicaError::NotQuorate`](crate::replica::ReplicaError::NotQuorate)
        /// while it says not quorate.
        /// [`LocalQuorum::Unknown`](crate::group::LocalQuorum::Unknown) while the
        /// replica has no group (rejoining, ended).
        pub fn quorum(&self) -> $crate::group::LocalQuorum {
            self.shared.lock().local_quorum()
        }

        /// Test hook, not part of the API (it may change without notice): the group
        /// layer's `hold_dispatch` on the current group, so that a test can make the
        /// CPG and quorum notifications arrive in the order it wants.
        #[doc(hidden)]
        pub fn hold_dispatch(&self, cpg: bool, quorum: bool) {
            if let Some(g) = self.shared.lock().group.clone() {
                g.hold_dispatch(cpg, quorum);
            }
        }

        /// Benchmark hook, not part of the API (it may change without notice): the
        /// counters of the current group (`None` while the replica has none), which
        /// say how many of its messages went in batches.
        #[doc(hidden)]
        pub fn group_stats(&self) -> Option<$crate::group::Stats> {
            self.shared.lock().group.clone().map(|g| g.stats())
        }

        /// The protocol's counters.
        pub fn stats(&self) -> $crate::replica::Stats {
            self.shared.lock().machine.stats()
        }

        /// Asks all members to compare digests now
        /// ([`Event::Verified`](crate::replica::Event::Verified) or
        /// [`Event::Diverged`](crate::replica::Event::Diverged)).
        pub fn verify(&self) {
            let mut core = self.shared.lock();
            core.machine.verify();
            core.flush();
        }
    };
}
pub(super) use state_calls;

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::group::{Position, ViewId};
    use crate::replica::app::{OpInfo, RestoreError};
    use crate::replica::config::Config;
    use crate::replica::wire::Msg;
    use crate::types::Member;

    /// A counter of operations applied.
    #[derive(Debug, Default)]
    struct Count(u64);

    impl Replicated for Count {
        type Output = u64;
        fn apply(&mut self, _: &[u8], _: &OpInfo) -> u64 {
            self.0 += 1;
            self.0
        }
        fn snapshot(&self) -> Vec<u8> {
            self.0.to_le_bytes().to_vec()
        }
        fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
            self.0 = u64::from_le_bytes(snapshot.try_into().map_err(|_| "length")?);
            Ok(())
        }
        fn digest(&self) -> u64 {
            self.0
        }
    }

    /// A group layer's send queue that drains only when the test delivers from it:
    /// everything handed over, in order.
    #[derive(Default)]
    struct Queue {
        sent: RefCell<Vec<Vec<u8>>>,
        delivered: Cell<usize>,
        /// What the local daemon says of the quorum (`None`: nothing yet).
        quorate: Cell<Option<bool>>,
        /// Calls of `queued` and of `quorum`: each one a hold of a real group
        /// layer's lock.
        queued_reads: Cell<usize>,
        quorum_reads: Cell<usize>,
        /// How many messages have left the queue for the daemon (the group layer's
        /// thread sends them, before they come back delivered), in order.
        left: Cell<usize>,
        /// The group layer's queue bound: a send at it is the replica's bug.
        limit: Cell<Option<usize>>,
    }

    impl Queue {
        /// The messages in the queue: handed over, neither sent on nor delivered.
        fn len(&self) -> usize {
            self.sent.borrow().len() - self.delivered.get().max(self.left.get())
        }
    }

    impl Sink for Queue {
        fn queued(&self) -> usize {
            self.queued_reads.set(self.queued_reads.get() + 1);
            self.len()
        }
        fn send(&self, bytes: Vec<u8>, _confirm: bool) -> Result<SendId, GroupError> {
            if let Some(limit) = self.limit.get() {
                assert!(self.len() < limit, "a send beyond the queue bound {limit}");
            }
            let mut sent = self.sent.borrow_mut();
            sent.push(bytes);
            Ok(SendId(sent.len() as u64 - 1))
        }
        fn stop(&self) {}
        fn try_next_event(&self) -> Option<group::Event> {
            None
        }
        fn quorum(&self) -> LocalQuorum {
            self.quorum_reads.set(self.quorum_reads.get() + 1);
            match self.quorate.get() {
                Some(quorate) => LocalQuorum::Known {
                    quorate,
                    ring: crate::types::RingId { nodeid: 1, seq: 1 },
                },
                None => LocalQuorum::Unknown,
            }
        }
    }

    const ME: Member = Member { nodeid: 1, pid: 10 };

    fn view(counter: u64) -> View {
        let id = ViewId {
            incarnation: 1,
            counter,
        };
        View::new(id, vec![ME], Some(ME), vec![], vec![], None)
    }

    /// Delivers what the queue holds, in order, as a lone member's daemon would (its
    /// own messages back, each confirmed), until nothing more is handed over.
    fn deliver_all(core: &mut Core<Count, Queue>) {
        deliver(core, usize::MAX);
    }

    /// Delivers as [`deliver_all`] does, at most `n` messages.
    fn deliver(core: &mut Core<Count, Queue>, n: usize) {
        let queue = core.group.clone().expect("a group");
        for _ in 0..n {
            let at = queue.delivered.get();
            let Some(bytes) = queue.sent.borrow().get(at).cloned() else {
                return;
            };
            queue.delivered.set(at + 1);
            let now = Instant::now();
            core.machine.handle_message(now, ME, &bytes);
            core.track(&group::Event::Confirmed {
                id: SendId(at as u64),
                position: Position {
                    view: ViewId {
                        incarnation: 1,
                        counter: 0,
                    },
                    index: at as u64,
                    total: at as u64,
                },
            });
            core.flush();
        }
    }

    /// Outcomes of the operations submitted by [`submit`], in submission order.
    type Outcomes = std::sync::Arc<std::sync::Mutex<Vec<Result<u64, ReplicaError>>>>;

    /// Submits `n` operations of 64 bytes whose outcomes go to `outcomes`.
    fn submit(core: &mut Core<Count, Queue>, n: usize, outcomes: &Outcomes) {
        for _ in 0..n {
            let outcomes = std::sync::Arc::clone(outcomes);
            let resolve = Box::new(move |r: Result<Outcome<u64>, ReplicaError>| {
                outcomes.lock().unwrap().push(r.map(|o| o.output));
            });
            core.submit(vec![7; 64], resolve).expect("submitted");
        }
    }

    /// A lone member's core, synced, over a [`Queue`]; how many messages that took.
    fn synced_core() -> (Core<Count, Queue>, usize) {
        synced_core_bounded(usize::MAX)
    }

    /// [`synced_core`] with the group layer's queue bound `queue_limit`.
    fn synced_core_bounded(queue_limit: usize) -> (Core<Count, Queue>, usize) {
        let name = GroupName::new("replica-in-flight").expect("a valid name");
        let machine = Machine::new(Count::default(), Config::default());
        let mut core = Core::new(machine, Queue::default(), queue_limit, &name);
        core.machine.handle_view(Instant::now(), &view(1));
        core.flush();
        deliver_all(&mut core);
        assert_eq!(core.machine.phase(), Phase::Ready);
        let synced = core.group.as_ref().expect("a group").sent.borrow().len();
        (core, synced)
    }

    /// Every operation applied here, in order, its ticket resolved; nothing in flight.
    fn assert_all_applied(core: &Core<Count, Queue>, outcomes: &Outcomes, ops: usize) {
        let outcomes = outcomes.lock().unwrap();
        assert_eq!(outcomes.len(), ops);
        assert!(outcomes
            .iter()
            .enumerate()
            .all(|(i, o)| matches!(o, Ok(v) if *v == i as u64 + 1)));
        assert_eq!(core.op_bytes, 0);
    }

    /// Round messages wait in the machine while the group layer's queue holds
    /// [`IN_FLIGHT`] or more messages, also when operations fill it far beyond that
    /// (for batches): a view change then still drops the ones gone stale (state
    /// chunks above all; here the start of a round), which are never sent.
    #[test]
    fn operations_fill_the_queue_and_stale_round_messages_are_still_dropped() {
        let (mut core, synced) = synced_core();
        let queue = core.group.clone().expect("a group");

        // Nothing is delivered for now: all of them go to the queue, far beyond the
        // round messages' bound (and below the bytes bound).
        let ops = 1000;
        let outcomes = Outcomes::default();
        submit(&mut core, ops, &outcomes);
        assert_eq!(queue.queued(), ops);

        // Two view changes: the first one's start is held (the queue is full) and
        // dropped at the second; only the second's goes out, after the operations.
        core.machine.handle_view(Instant::now(), &view(2));
        core.flush();
        assert_eq!(queue.queued(), ops, "the round's start is held back");
        core.machine.handle_view(Instant::now(), &view(3));
        core.flush();
        deliver_all(&mut core);
        assert_eq!(core.machine.phase(), Phase::Ready);

        let sent = queue.sent.borrow();
        let starts: Vec<u64> = sent[synced..]
            .iter()
            .filter_map(|b| match Msg::decode(b) {
                Ok(Msg::Start { round, .. }) => Some(round.view.counter),
                _ => None,
            })
            .collect();
        assert_eq!(starts, vec![3], "only the current view's round started");
        let first_round = sent[synced..]
            .iter()
            .position(|b| tracked(b).is_none())
            .expect("a round message");
        assert_eq!(first_round, ops, "the operations went out before the round");
        drop(sent);
        assert_all_applied(&core, &outcomes, ops);
    }

    /// Operations in flight (handed over, not yet delivered back) stay within
    /// [`OP_BYTES_IN_FLIGHT`]; the rest wait in the machine and go as those come back.
    #[test]
    fn operations_in_flight_are_bounded_in_bytes() {
        let (mut core, synced) = synced_core();
        let queue = core.group.clone().expect("a group");
        let ops = 20_000;
        let outcomes = Outcomes::default();
        submit(&mut core, ops, &outcomes);
        let queued = queue.queued();
        let len = queue.sent.borrow()[synced].len();
        assert!(queued * len >= OP_BYTES_IN_FLIGHT, "{queued} × {len} B");
        assert!(
            queued * len < OP_BYTES_IN_FLIGHT + len,
            "{queued} × {len} B"
        );
        assert!(queued < ops);
        deliver_all(&mut core);
        assert_eq!(queue.sent.borrow().len(), synced + ops);
        assert_all_applied(&core, &outcomes, ops);
    }

    /// What a batch's resolvers were given, by their place in the batch: the
    /// sequence number, version and output of each one applied.
    type BatchOutcomes =
        std::sync::Arc<std::sync::Mutex<Vec<(usize, Result<(u64, u64), ReplicaError>)>>>;

    /// A batch of `ops` whose outcomes go to `outcomes`, each tagged with its place.
    fn batch(ops: &[&[u8]], outcomes: &BatchOutcomes) -> Vec<(Vec<u8>, Resolver<Outcome<u64>>)> {
        ops.iter()
            .enumerate()
            .map(|(i, op)| {
                let outcomes = std::sync::Arc::clone(outcomes);
                let resolve: Resolver<Outcome<u64>> = Box::new(move |r| {
                    let r = r.map(|o| (o.version, o.output));
                    outcomes.lock().unwrap().push((i, r));
                });
                (op.to_vec(), resolve)
            })
            .collect()
    }

    /// A batch gets consecutive sequence numbers in its order, goes to the group
    /// layer in one flush, back to back and in that order, and each ticket resolves
    /// with its own outcome: in order, versions strictly increasing.
    #[test]
    fn a_batch_is_sent_in_its_order_and_each_ticket_gets_its_own_outcome() {
        let (mut core, synced) = synced_core();
        let queue = core.group.clone().expect("a group");
        let before = Outcomes::default();
        submit(&mut core, 2, &before);
        let ops: [&[u8]; 5] = [b"a", b"bb", b"ccc", b"dddd", b"eeeee"];
        let outcomes = BatchOutcomes::default();
        let (queued_reads, quorum_reads) = (queue.queued_reads.get(), queue.quorum_reads.get());
        let seqs = core.submit_many(batch(&ops, &outcomes)).expect("submitted");
        assert_eq!(seqs, 3..8, "after the two single submits, consecutive");
        // One look at the local quorum and one at the queue's length for the batch.
        assert_eq!(queue.quorum_reads.get() - quorum_reads, 1);
        assert_eq!(queue.queued_reads.get() - queued_reads, 1);
        // All handed over by the one flush, none applied before delivery.
        let sent: Vec<(u64, Vec<u8>)> = queue.sent.borrow()[synced + 2..]
            .iter()
            .map(|b| match Msg::decode(b) {
                Ok(Msg::Op { seq, data }) => (seq, data),
                other => panic!("not an operation: {other:?}"),
            })
            .collect();
        let expected: Vec<(u64, Vec<u8>)> = (3..8).zip(ops.iter().map(|o| o.to_vec())).collect();
        assert_eq!(sent, expected);
        assert!(outcomes.lock().unwrap().is_empty());

        deliver_all(&mut core);
        let outcomes = outcomes.lock().unwrap();
        let got: Vec<(usize, (u64, u64))> = outcomes
            .iter()
            .map(|(i, r)| (*i, r.clone().expect("applied")))
            .collect();
        assert_eq!(got.len(), ops.len());
        assert!(got.iter().enumerate().all(|(k, (i, _))| k == *i), "{got:?}");
        // The counter's output: the 3rd to the 7th operation applied.
        assert!(
            got.iter().all(|(i, (_, out))| *out == *i as u64 + 3),
            "{got:?}"
        );
        assert!(
            got.windows(2).all(|w| w[1].1 .0 == w[0].1 .0 + 1),
            "{got:?}"
        );
        assert_all_applied(&core, &before, 2);
    }

    /// A batch is refused whole: while the local daemon says not quorate
    /// (`NotQuorate`) and once the replica ended (`Closed`); nothing of it is sent
    /// or kept, it takes no sequence number, and its resolvers are dropped unused.
    /// An empty batch submits nothing.
    #[test]
    fn a_refused_batch_submits_nothing() {
        let (mut core, synced) = synced_core();
        let queue = core.group.clone().expect("a group");
        let refused_outcomes = BatchOutcomes::default();
        let ops: [&[u8]; 3] = [b"x", b"y", b"z"];

        queue.quorate.set(Some(false));
        let refused = core.submit_many(batch(&ops, &refused_outcomes));
        assert!(
            matches!(refused, Err(ReplicaError::NotQuorate)),
            "{refused:?}"
        );
        assert_eq!(core.submit_many(Vec::new()).expect("empty"), 0..0);
        assert_eq!(queue.sent.borrow().len(), synced, "nothing handed over");
        assert_eq!(core.machine.footprint().outbox, 0, "nothing kept");
        assert!(core.tickets.is_empty());

        // Quorate again: the next batch gets the first sequence numbers.
        queue.quorate.set(Some(true));
        let outcomes = BatchOutcomes::default();
        let seqs = core.submit_many(batch(&ops, &outcomes)).expect("submitted");
        assert_eq!(seqs, 1..4, "the refused batch took no sequence number");
        deliver_all(&mut core);
        assert_eq!(outcomes.lock().unwrap().len(), 3);

        core.end();
        let sent = queue.sent.borrow().len();
        let refused = core.submit_many(batch(&ops, &refused_outcomes));
        assert!(matches!(refused, Err(ReplicaError::Closed)), "{refused:?}");
        assert_eq!(queue.sent.borrow().len(), sent, "nothing handed over");
        assert!(core.tickets.is_empty());
        assert!(
            refused_outcomes.lock().unwrap().is_empty(),
            "no resolver was called"
        );
    }

    /// At the group layer's queue bound a batch waits in the machine as single
    /// submits do (nothing refused): what fits is handed over, the rest as the
    /// queue drains, in order, and every ticket resolves. The queue's length is read
    /// again only where the count kept since the last read says it is full.
    #[test]
    fn a_batch_beyond_the_queue_bound_waits_and_goes_in_order() {
        let (mut core, synced) = synced_core_bounded(3);
        let queue = core.group.clone().expect("a group");
        queue.limit.set(Some(3));
        let ops: Vec<&[u8]> = vec![b"op"; 8];
        let outcomes = BatchOutcomes::default();
        let reads = queue.queued_reads.get();
        let seqs = core.submit_many(batch(&ops, &outcomes)).expect("submitted");
        assert_eq!(seqs, 1..9);
        // The first read, and one more where the count kept said full.
        assert_eq!(queue.queued_reads.get() - reads, 2);
        assert_eq!(queue.queued(), 3, "up to the bound");
        assert_eq!(queue.sent.borrow().len(), synced + 3);
        assert_eq!(
            core.machine.footprint().outbox,
            5,
            "the rest wait in the machine"
        );

        // Single submits at the bound: the same, they wait too.
        let singles = Outcomes::default();
        submit(&mut core, 2, &singles);
        assert_eq!(queue.queued(), 3);

        deliver_all(&mut core);
        assert_eq!(queue.sent.borrow().len(), synced + 10);
        let seqs: Vec<u64> = queue.sent.borrow()[synced..]
            .iter()
            .map(|b| match Msg::decode(b) {
                Ok(Msg::Op { seq, .. }) => seq,
                other => panic!("not an operation: {other:?}"),
            })
            .collect();
        assert_eq!(seqs, (1..11).collect::<Vec<u64>>(), "in submission order");
        let outcomes = outcomes.lock().unwrap();
        let got: Vec<(usize, u64)> = outcomes
            .iter()
            .map(|(i, r)| (*i, r.clone().expect("applied").1))
            .collect();
        assert_eq!(got, (0..8).map(|i| (i, i as u64 + 1)).collect::<Vec<_>>());
        let singles = singles.lock().unwrap();
        assert!(
            matches!(singles[..], [Ok(9), Ok(10)]),
            "after the batch: {singles:?}"
        );
    }

    /// The count kept during a flush is never below the queue's real length, and
    /// where it says full the length is read again: after the group layer's thread
    /// sent two of three queued messages on (no event yet), a submit hands over
    /// exactly two more, never one beyond the bound (the mock refuses that), and
    /// everything is applied in order once delivered.
    #[test]
    fn a_queue_drained_without_an_event_is_refilled_to_its_bound_not_beyond() {
        let (mut core, synced) = synced_core_bounded(3);
        let queue = core.group.clone().expect("a group");
        queue.limit.set(Some(3));
        let outcomes = BatchOutcomes::default();
        let ops: Vec<&[u8]> = vec![b"op"; 8];
        core.submit_many(batch(&ops, &outcomes)).expect("submitted");
        assert_eq!(queue.sent.borrow().len(), synced + 3);
        // The group layer's thread sends two on; nothing delivered yet.
        queue
            .left
            .set(queue.delivered.get().max(queue.left.get()) + 2);
        assert_eq!(queue.len(), 1);
        let reads = queue.queued_reads.get();
        let singles = Outcomes::default();
        submit(&mut core, 1, &singles);
        assert_eq!(
            queue.sent.borrow().len(),
            synced + 5,
            "two more, up to the bound"
        );
        assert_eq!(queue.len(), 3);
        // One read at the start, one more where the count said full.
        assert_eq!(queue.queued_reads.get() - reads, 2);
        assert_eq!(core.machine.footprint().outbox, 4);
        deliver_all(&mut core);
        assert_eq!(queue.sent.borrow().len(), synced + 9);
        let got: Vec<(usize, u64)> = outcomes
            .lock()
            .unwrap()
            .iter()
            .map(|(i, r)| (*i, r.clone().expect("applied").1))
            .collect();
        assert_eq!(got, (0..8).map(|i| (i, i as u64 + 1)).collect::<Vec<_>>());
        assert!(matches!(singles.lock().unwrap()[..], [Ok(9)]));
    }

    /// The checks are made once, for the whole batch, before any of it is taken:
    /// they cannot fail part-way. Once taken, each operation is judged at its own
    /// delivery, as one of single submits is: the local daemon turning not quorate
    /// after the call changes nothing for it, and an agreed quorum lost between two
    /// of its operations fails those delivered after the loss (`NotQuorate`), not
    /// those delivered before.
    #[test]
    fn a_batch_taken_is_judged_per_operation_at_delivery() {
        let (mut core, _) = synced_core();
        let queue = core.group.clone().expect("a group");
        queue.quorate.set(Some(true));
        let ops: Vec<&[u8]> = vec![b"op"; 4];
        let outcomes = BatchOutcomes::default();
        core.submit_many(batch(&ops, &outcomes)).expect("submitted");
        // The local daemon now says not quorate: a new batch is refused whole, the
        // one taken is still sent.
        queue.quorate.set(Some(false));
        let refused = BatchOutcomes::default();
        let r = core.submit_many(batch(&ops, &refused));
        assert!(matches!(r, Err(ReplicaError::NotQuorate)), "{r:?}");

        // Two delivered, then the agreed quorum is lost, then the other two.
        deliver(&mut core, 2);
        let ring = crate::types::RingId { nodeid: 1, seq: 2 };
        core.machine
            .handle_quorum(Instant::now(), group::AgreedQuorum::NotQuorate(ring));
        core.flush();
        deliver_all(&mut core);
        let outcomes = outcomes.lock().unwrap();
        let got: Vec<(usize, Result<u64, ReplicaError>)> = outcomes
            .iter()
            .map(|(i, r)| (*i, r.clone().map(|(_, out)| out)))
            .collect();
        assert!(
            matches!(
                got[..],
                [
                    (0, Ok(1)),
                    (1, Ok(2)),
                    (2, Err(ReplicaError::NotQuorate)),
                    (3, Err(ReplicaError::NotQuorate))
                ]
            ),
            "{got:?}"
        );
        assert!(refused.lock().unwrap().is_empty());
    }
}
