//! The replica protocol's rules as a state machine without I/O or clock: [`Machine`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::group::{AgreedQuorum, Delivery, View};
use crate::layer::deadline::later;
use crate::types::Member;

use super::app::{Candidate, OpInfo, Replicated, Summary, ViewChange};
use super::config::Config;
use super::event::{Discarded, Effect, Event, Failure, Phase, Stats};
use super::own_log::OwnLog;
use super::wire::{
    add_seq, decode_op, has_seq, is_round_message, keep_latest, members_hash, tracked, DecodeError,
    Msg, Ranges, RoundId, Tracked,
};

/// What a machine holds in memory on behalf of its peers (see `Machine::footprint`).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Footprint {
    /// Bytes allocated for the state being received.
    pub transfer: usize,
    /// Verification checks open.
    pub checks: usize,
    /// Digests held in them.
    pub check_entries: usize,
    /// Operations queued until the round ends.
    pub queue: usize,
    /// Messages waiting to be sent.
    pub outbox: usize,
    /// Their bytes.
    pub outbox_bytes: usize,
    /// Sequence-number ranges kept for the history (all origins).
    pub ranges: usize,
    /// Events not yet polled.
    pub events: usize,
}

/// What the source announced before its chunks.
#[derive(Debug)]
struct Header {
    /// The state's summary.
    summary: Summary,
    /// Its snapshot's length.
    len: u64,
    /// The number of chunks that carry it.
    chunks: u32,
    /// Which operations of each origin its history holds.
    applied: Vec<(Member, Ranges)>,
}

/// A state transfer being received.
#[derive(Debug)]
struct Transfer {
    source: Member,
    /// Once delivered.
    header: Option<Header>,
    /// Whether this member restores the state (it is not the source, and its summary
    /// at the header is not the announced one): only then are the chunks kept.
    restore: bool,
    /// This member's summary at the header (its state does not change during the
    /// transfer: operations are queued).
    previous: Summary,
    /// The chunks kept so far (never more than the header announced).
    data: Vec<u8>,
    /// Bytes received so far, kept or not.
    received: u64,
    /// The index of the next chunk.
    next: u32,
    /// The overall deadline, set at the header: no chunk extends it.
    ends: Option<Instant>,
}

#[derive(Debug)]
enum Round {
    /// No view.
    Detached,
    /// Waiting for the coordinator's start.
    AwaitStart,
    /// Collecting summaries.
    Collect,
    /// Receiving the source's state.
    Transfer(Transfer),
    /// Synced.
    Ready,
}

/// What is delivered during a round, held until it ends.
#[derive(Debug)]
enum Queued {
    /// An operation: its origin, sequence number, bytes, and the agreed quorum at its
    /// delivery.
    Op(Member, u64, Vec<u8>, AgreedQuorum),
    /// This member's own read-barrier marker.
    Mark(u64),
    /// A change of the agreed quorum.
    Quorum(AgreedQuorum),
}

/// This member's read-barrier marker, if one is out: at most one at a time, so that
/// barriers called while it travels share the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// None out.
    Idle,
    /// Waiting in the outbox: a barrier called now shares it (it is sent after the
    /// call).
    Unsent(u64),
    /// Handed to the driver, not yet delivered back: a barrier called now needs the
    /// next one, sent when this one comes back.
    InFlight(u64),
}

/// An own operation applied while the view changed during a round, to a state that
/// may not be the one the members agree on: reported once the next round ends.
#[derive(Debug)]
struct Tentative<O> {
    seq: u64,
    op: Vec<u8>,
    version: u64,
    output: O,
}

/// A verification in progress: at most one per issuer.
#[derive(Debug)]
struct Check {
    /// The issuer's number for it.
    id: u64,
    /// The digests delivered so far.
    got: BTreeMap<Member, Summary>,
}

/// Why a chunk cannot belong to the announced state.
fn chunk_fault(header: &Header, received: u64, next: u32, len: u64) -> Option<Failure> {
    // Bytes and chunks still to come, this one included (at least one chunk: the
    // transfer ends at the last).
    let left = header.len - received;
    let later = u64::from(header.chunks - next - 1);
    let Some(rest) = left.checked_sub(len) else {
        // More bytes than announced.
        return Some(Failure::BadTransfer);
    };
    if later == 0 && rest != 0 {
        // The last chunk, and the state is short.
        return Some(Failure::BadTransfer);
    }
    if header.len > 0 && (len == 0 || rest < later) {
        // Every chunk of a non-empty state holds a byte or more: the chunks still to
        // come cannot hold what is left.
        return Some(Failure::BadTransfer);
    }
    None
}

/// Whether `chunks` chunks can carry a state of `len` bytes: an empty state is one
/// empty chunk, every chunk of another holds a byte or more.
fn chunks_can_hold(len: u64, chunks: u32) -> bool {
    match len {
        0 => chunks == 1,
        _ => chunks >= 1 && u64::from(chunks) <= len,
    }
}

/// Appends a chunk to the state being received, growing the buffer by doubling but
/// never past the announced length (which the chunks were checked against).
fn keep(buf: &mut Vec<u8>, piece: &[u8], announced: u64) {
    let need = buf.len() + piece.len();
    if need > buf.capacity() {
        let cap = usize::try_from(announced).unwrap_or(usize::MAX);
        let target = buf.capacity().saturating_mul(2).min(cap).max(need);
        buf.reserve_exact(target - buf.len());
    }
    buf.extend_from_slice(piece);
}

/// How long `len` bytes take at `rate` bytes per second (`0` counts as 1).
fn at_rate(len: u64, rate: u64) -> Duration {
    let rate = rate.max(1);
    let nanos = u128::from(len % rate) * 1_000_000_000 / u128::from(rate);
    Duration::new(len / rate, u32::try_from(nanos).unwrap_or(0))
}

/// The replica protocol for one member, around the application's state `A`.
///
/// Inputs are the group layer's views ([`handle_view`](Self::handle_view)),
/// deliveries ([`handle_delivery`](Self::handle_delivery), or
/// [`handle_message`](Self::handle_message) with the changes of the agreed quorum
/// through [`handle_quorum`](Self::handle_quorum)), the loss of the connection,
/// time ([`handle_timeout`](Self::handle_timeout)) and the application's
/// [`submit`](Self::submit), [`barrier`](Self::barrier) and [`verify`](Self::verify).
/// Outputs are [`Effect`]s for the driver ([`poll_effect`](Self::poll_effect)),
/// [`Event`]s for the application ([`poll_event`](Self::poll_event), or
/// [`poll_event_and_output`](Self::poll_event_and_output) with the outputs of own
/// operations), and calls on `A`: `apply`, `apply_view`, `snapshot`, `restore`,
/// `digest`, `merge_hint`, `choose`, all from inside the `handle_*` methods (and
/// `digest`, `merge_hint` from [`summary`](Self::summary)).
///
/// The rules and the wire format are described in the
/// [module documentation](super).
#[derive(Debug)]
pub struct Machine<A: Replicated> {
    app: A,
    config: Config,
    view: Option<View>,
    hash: u64,
    round: Round,
    attempt: u32,
    /// The coordinator of the current attempt, chosen when it began.
    coordinator: Option<Member>,
    round_id: Option<RoundId>,
    /// Members left out of the view's rounds: they speak a newer protocol.
    excluded: BTreeSet<Member>,
    /// Members not waited for again in this view: they let a round deadline pass
    /// without a word (a start, a summary). They still take part when they speak in
    /// time, and receive the state.
    silent: BTreeSet<Member>,
    /// Members whose malformed messages were reported in this view.
    malformed: BTreeSet<Member>,
    /// A restore failed: operations delivered until the next view belong on a state
    /// this member does not have; they are dropped.
    lost_sync: bool,
    /// Own operations dropped for a failed restore: delivered, applied by the others,
    /// not here. The next restored state tells whether it holds them.
    orphans: VecDeque<(u64, Vec<u8>)>,
    summaries: BTreeMap<Member, Summary>,
    queue: VecDeque<Queued>,
    /// Own operations applied while the view changed during a round: their outputs
    /// count once the next round tells whether that state is the agreed one.
    tentative: Vec<Tentative<A::Output>>,
    /// Whether the state learned the current view ([`Replicated::apply_view`]).
    view_applied: bool,
    /// This member's barrier marker out, if any.
    marker: Marker,
    /// The id of the last marker sent.
    next_mark: u64,
    /// Barriers called while a marker was in flight: the next marker is sent when it
    /// comes back.
    mark_wanted: bool,
    /// The highest own marker delivered while this member was out of sync: passed
    /// once the next round ends.
    held_mark: Option<u64>,
    version: u64,
    /// The state's quorum epoch ([`Summary::epoch`]).
    epoch: u64,
    /// The agreed quorum at the latest delivery: what an operation delivered now is
    /// judged by.
    agreed: AgreedQuorum,
    /// The agreed quorum at the state's point of the history (behind `agreed` while
    /// a round queues the changes): what a change advances the epoch from.
    applied_quorum: AgreedQuorum,
    /// Per origin, which of its operations this state's history holds.
    applied: BTreeMap<Member, Ranges>,
    /// Own operations applied, to report those a merge discards.
    own_log: OwnLog,
    next_seq: u64,
    deadline: Option<Instant>,
    verify_at: Option<Instant>,
    next_check: u64,
    /// Verifications in progress, by issuer.
    checks: BTreeMap<Member, Check>,
    /// Messages to send; `true` marks round messages, dropped when the view changes.
    outbox: VecDeque<(bool, Vec<u8>)>,
    rejoin: bool,
    /// Events, each with the output of an own operation's `apply` where it has one.
    events: VecDeque<(Event, Option<A::Output>)>,
    stats: Stats,
}

impl<A: Replicated> Machine<A> {
    /// A machine around `app`'s state, not yet in a view.
    pub fn new(app: A, config: Config) -> Machine<A> {
        let version = config.initial_version;
        let epoch = config.initial_epoch;
        Machine {
            app,
            config,
            view: None,
            hash: 0,
            round: Round::Detached,
            attempt: 0,
            coordinator: None,
            round_id: None,
            excluded: BTreeSet::new(),
            silent: BTreeSet::new(),
            malformed: BTreeSet::new(),
            lost_sync: false,
            orphans: VecDeque::new(),
            summaries: BTreeMap::new(),
            queue: VecDeque::new(),
            tentative: Vec::new(),
            view_applied: false,
            marker: Marker::Idle,
            next_mark: 0,
            mark_wanted: false,
            held_mark: None,
            version,
            epoch,
            agreed: AgreedQuorum::Free,
            applied_quorum: AgreedQuorum::Free,
            applied: BTreeMap::new(),
            own_log: OwnLog::default(),
            next_seq: 0,
            deadline: None,
            verify_at: None,
            next_check: 0,
            checks: BTreeMap::new(),
            outbox: VecDeque::new(),
            rejoin: false,
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The application's state (read only: change it with [`submit`](Self::submit)).
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The application's state, taken back.
    pub fn into_app(self) -> A {
        self.app
    }

    /// Where this member is in the protocol.
    pub fn phase(&self) -> Phase {
        match self.round {
            Round::Detached => Phase::Detached,
            Round::Ready => Phase::Ready,
            _ => Phase::Syncing,
        }
    }

    /// The current view, if any.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// The current round, once started.
    pub fn round(&self) -> Option<RoundId> {
        self.round_id
    }

    /// The agreed quorum at the latest delivery (what an operation delivered now is
    /// judged by; see the [module documentation](super#quorum)):
    /// [`AgreedQuorum::Free`] until the group layer reports one.
    pub fn quorum(&self) -> AgreedQuorum {
        self.agreed
    }

    /// Whether operations are refused where the agreed quorum does not permit them
    /// ([`Config::gate_writes`]).
    pub(super) fn gates_writes(&self) -> bool {
        self.config.gate_writes
    }

    /// This state's summary now.
    pub fn summary(&self) -> Summary {
        Summary {
            epoch: self.epoch,
            version: self.version,
            digest: self.app.digest(),
            hint: self.app.merge_hint(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        Stats {
            queued_ops: self
                .queue
                .iter()
                .filter(|q| matches!(q, Queued::Op(..)))
                .count(),
            ..self.stats
        }
    }

    /// What this machine holds in memory on behalf of its peers, for the tests of its
    /// bounds.
    #[cfg(test)]
    pub(super) fn footprint(&self) -> Footprint {
        let transfer = match &self.round {
            Round::Transfer(t) => t.data.capacity(),
            _ => 0,
        };
        Footprint {
            transfer,
            checks: self.checks.len(),
            check_entries: self.checks.values().map(|c| c.got.len()).sum(),
            queue: self.queue.len(),
            outbox: self.outbox.len(),
            outbox_bytes: self.outbox.iter().map(|(_, b)| b.len()).sum(),
            ranges: self.applied.values().map(Vec::len).sum(),
            events: self.events.len(),
        }
    }

    /// Submits an operation: it is sent to the group and applied, here as everywhere,
    /// when delivered in the agreed order ([`Event::Applied`] with the returned
    /// sequence number). Nothing is applied locally before that.
    pub fn submit(&mut self, op: Vec<u8>) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.outbox
            .push_back((false, Msg::Op { seq, data: op }.encode()));
        seq
    }

    /// Starts a read barrier: once everything ordered before this call (every
    /// operation any member had applied when it was made, and this member's own
    /// operations submitted before it) is applied here, on the state the view agreed
    /// on, [`Event::Barrier`] reports an id at least the one returned.
    ///
    /// A barrier costs one small message (a *marker*, delivered in the agreed order;
    /// never applied, no version) and shares it with the barriers called while it
    /// waits to be sent; barriers called while a marker travels share the next one,
    /// sent when it comes back. A marker that the group layer reports lost (not sent,
    /// or with an unknown outcome) is for the driver to report with
    /// [`mark_lost`](Self::mark_lost).
    pub fn barrier(&mut self) -> u64 {
        match self.marker {
            Marker::Idle => self.send_mark(),
            Marker::Unsent(id) => id,
            Marker::InFlight(id) => {
                self.mark_wanted = true;
                id + 1
            }
        }
    }

    /// The marker `id` will not come back (the group layer did not send it, or lost
    /// track of it): the barriers waiting for a later one get it now. The driver fails
    /// the barriers up to `id` that have not passed.
    pub fn mark_lost(&mut self, id: u64) {
        if self.marker == Marker::InFlight(id) {
            self.marker = Marker::Idle;
            if std::mem::take(&mut self.mark_wanted) {
                self.send_mark();
            }
        }
    }

    /// Asks every member to compute its digest at one point of the agreed order and
    /// compare ([`Event::Verified`] or [`Event::Diverged`]). Ignored unless synced.
    pub fn verify(&mut self) {
        if matches!(self.round, Round::Ready) {
            self.next_check += 1;
            let msg = Msg::Verify {
                members: self.hash,
                check: self.next_check,
            };
            self.send_round(msg);
        }
    }

    /// The next event for the application (an own operation's output, if any, is
    /// dropped: see [`poll_event_and_output`](Self::poll_event_and_output)).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front().map(|(e, _)| e)
    }

    /// The next event, and for an [`Event::Applied`] the output that
    /// [`Replicated::apply`] returned for the operation here (`None` for the other
    /// events, and for an own operation that this member did not apply to the agreed
    /// state: see the [module documentation](super#results)).
    pub fn poll_event_and_output(&mut self) -> Option<(Event, Option<A::Output>)> {
        self.events.pop_front()
    }

    /// The next thing for the driver to do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        if std::mem::take(&mut self.rejoin) {
            return Some(Effect::Rejoin);
        }
        let (_, bytes) = self.outbox.pop_front()?;
        if let Some(Tracked::Mark(id)) = tracked(&bytes) {
            if self.marker == Marker::Unsent(id) {
                self.marker = Marker::InFlight(id);
            }
        }
        Some(Effect::Send(bytes))
    }

    /// Whether the machine asked to rejoin ([`Effect::Rejoin`]) and the driver has
    /// not polled it yet.
    pub(super) fn wants_rejoin(&self) -> bool {
        self.rejoin
    }

    /// What [`poll_effect`](Self::poll_effect) returns next: `Some(round)` for a send
    /// (`round`: a round message, dropped if a new attempt or view begins before it
    /// is polled), `None` for a rejoin or nothing.
    pub(super) fn next_send_is_round(&self) -> Option<bool> {
        if self.rejoin {
            return None;
        }
        self.outbox.front().map(|&(round, _)| round)
    }

    /// Puts back a [`Effect::Send`] the driver could not hand over yet (its queue was
    /// full): it comes out first again.
    pub fn unpoll_send(&mut self, bytes: Vec<u8>) {
        if let Some(Tracked::Mark(id)) = tracked(&bytes) {
            if self.marker == Marker::InFlight(id) {
                self.marker = Marker::Unsent(id);
            }
        }
        self.outbox.push_front((is_round_message(&bytes), bytes));
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.verify_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: a round past its deadline asks for the next attempt; the leader
    /// of a synced view starts a periodic verification.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            let msg = Msg::Trouble {
                members: self.hash,
                attempt: self.attempt,
                stage: self.stage(),
            };
            self.send_round(msg);
            self.deadline = Some(later(now, self.config.round_timeout));
        }
        if self.verify_at.is_some_and(|d| d <= now) {
            self.verify_at = self.config.verify_interval.map(|i| later(now, i));
            if self.view.as_ref().is_some_and(View::is_leader) {
                self.verify();
            }
        }
    }

    /// The connection to the daemon was lost: no view until the next one.
    pub fn handle_disconnected(&mut self) {
        self.leave_view();
        // The next connection's group layer reports its own quorum (none where it has
        // no provider).
        self.agreed = AgreedQuorum::Free;
        self.applied_quorum = AgreedQuorum::Free;
        self.view = None;
        self.lost_sync = false;
        self.view_applied = false;
    }

    /// A new view was installed: a new round starts.
    pub fn handle_view(&mut self, now: Instant, view: &View) {
        self.leave_view();
        self.lost_sync = false;
        self.view_applied = false;
        self.view = Some(view.clone());
        self.event(Event::View(view.clone()));
        let Some(me) = view.me() else {
            return;
        };
        self.hash = members_hash(view.members());
        self.attempt = 0;
        self.verify_at = self.config.verify_interval.map(|i| later(now, i));
        self.begin_attempt(now, me);
    }

    /// A message was delivered by the group layer (in the agreed order).
    pub fn handle_message(&mut self, now: Instant, from: Member, data: &[u8]) {
        // Operations, the common case, are read in place (see `on_op`).
        if let Some((seq, op)) = decode_op(data) {
            if self.excluded.contains(&from) {
                self.stats.stale += 1;
            } else {
                self.on_op(from, seq, op);
            }
            return;
        }
        let in_view = self.view.as_ref().is_some_and(|v| v.contains(from));
        let msg = match Msg::decode(data) {
            Ok(m) => m,
            Err(DecodeError::Newer(version)) => {
                // Reported once per member and view; left out of the view's rounds.
                if in_view && self.excluded.insert(from) {
                    self.event(Event::Refused { from, version });
                    if matches!(self.round, Round::AwaitStart) && self.coordinator == Some(from) {
                        // Its start would not be read: the attempt begins again with
                        // a coordinator that speaks this protocol.
                        if let Some(me) = self.view.as_ref().and_then(View::me) {
                            self.begin_attempt(now, me);
                        }
                    }
                    self.check_collected(now);
                }
                return;
            }
            Err(DecodeError::Malformed) => {
                // Counted, reported once per member and view: a member that sends
                // nothing else is as silent as one that sends nothing.
                self.stats.malformed += 1;
                if in_view && self.malformed.insert(from) {
                    self.event(Event::Malformed {
                        from,
                        len: data.len(),
                    });
                }
                return;
            }
        };
        if self.excluded.contains(&from) {
            self.stats.stale += 1;
            return;
        }
        match msg {
            Msg::Op { seq, data } => self.on_op(from, seq, &data),
            Msg::Mark { id } => self.on_mark(from, id),
            Msg::Start { members, round } => self.on_start(now, from, members, round),
            Msg::Summary {
                round,
                version,
                digest,
                hint,
                quorum,
            } => {
                if self.round_id != Some(round) || !matches!(self.round, Round::Collect) || !in_view
                {
                    self.stats.stale += 1;
                    return;
                }
                // The first summary of each member counts. Summaries do not extend
                // the collection: it ends at the deadline set by the start.
                self.summaries.entry(from).or_insert(Summary {
                    epoch: quorum,
                    version,
                    digest,
                    hint,
                });
                self.check_collected(now);
            }
            Msg::StateHeader {
                round,
                version,
                digest,
                hint,
                epoch,
                len,
                chunks,
                applied,
            } => self.on_header(
                now,
                from,
                round,
                Header {
                    summary: Summary {
                        epoch,
                        version,
                        digest,
                        hint,
                    },
                    len,
                    chunks,
                    applied,
                },
            ),
            Msg::Chunk { round, index, data } => self.on_chunk(now, from, round, index, &data),
            Msg::Trouble {
                members,
                attempt,
                stage,
            } => {
                // Every member is at the same stage of the same attempt at this point
                // of the agreed order; a report from an earlier stage (another member's
                // deadline expired just before progress) is stale.
                if members != self.hash
                    || attempt != self.attempt
                    || stage != self.stage()
                    || matches!(self.round, Round::Ready | Round::Detached)
                {
                    self.stats.stale += 1;
                    return;
                }
                let view = self.view.as_ref().expect("a round means a view");
                match self.round {
                    Round::Collect if !self.summaries.is_empty() => {
                        // Decide with the summaries every member has received by now:
                        // whoever stayed silent is left to catch up from the transfer,
                        // and not waited for again in this view.
                        for m in view.members() {
                            if !self.summaries.contains_key(m) && !self.excluded.contains(m) {
                                self.silent.insert(*m);
                            }
                        }
                        self.decide(now);
                    }
                    Round::AwaitStart => {
                        // The coordinator did not start the round: not the coordinator
                        // of a later attempt, nor waited for, in this view.
                        self.silent.extend(self.coordinator);
                        self.next_attempt(now, Failure::Deadline);
                    }
                    _ => self.next_attempt(now, Failure::Deadline),
                }
            }
            Msg::Verify { members, check } => {
                if members != self.hash || !matches!(self.round, Round::Ready) || !in_view {
                    self.stats.stale += 1;
                    return;
                }
                // One check open per issuer: a request while the issuer's previous
                // check waits for the issuer's own digest is dropped (an issuer that
                // does not answer its own checks cannot pile them up); otherwise it
                // replaces it (one that a silent member holds open).
                if self
                    .checks
                    .get(&from)
                    .is_some_and(|c| !c.got.contains_key(&from))
                {
                    self.stats.stale += 1;
                    return;
                }
                self.checks.insert(
                    from,
                    Check {
                        id: check,
                        got: BTreeMap::new(),
                    },
                );
                let s = self.summary();
                let msg = Msg::Digest {
                    members,
                    issuer: from,
                    check,
                    version: s.version,
                    digest: s.digest,
                    hint: s.hint,
                    epoch: s.epoch,
                };
                self.send_round(msg);
            }
            Msg::Digest {
                members,
                issuer,
                check,
                version,
                digest,
                hint,
                epoch,
            } => {
                let ready = members == self.hash && matches!(self.round, Round::Ready) && in_view;
                let Some(open) = self
                    .checks
                    .get_mut(&issuer)
                    .filter(|c| c.id == check && ready)
                else {
                    self.stats.stale += 1;
                    return;
                };
                open.got.entry(from).or_insert(Summary {
                    epoch,
                    version,
                    digest,
                    hint,
                });
                let view = self.view.as_ref().expect("ready means in a view");
                let complete = view.members().iter().all(|m| {
                    open.got.contains_key(m) || self.excluded.contains(m) || self.silent.contains(m)
                });
                if complete {
                    let got = self
                        .checks
                        .remove(&issuer)
                        .map(|c| c.got)
                        .unwrap_or_default();
                    let summaries: Vec<Candidate> = got
                        .into_iter()
                        .map(|(member, summary)| Candidate { member, summary })
                        .collect();
                    let first = summaries[0].summary;
                    if summaries.iter().all(|c| c.summary == first) {
                        self.event(Event::Verified {
                            check,
                            summary: first,
                        });
                    } else {
                        self.event(Event::Diverged { check, summaries });
                        self.next_attempt(now, Failure::Diverged);
                    }
                }
            }
        }
    }

    /// A delivery of the group layer: [`handle_quorum`](Self::handle_quorum) with the
    /// agreed quorum it carries if that is news (the group layer reports every change
    /// before the message, as [`group::Event::Quorum`](crate::group::Event::Quorum),
    /// so this is for a driver that does not pass those on), then
    /// [`handle_message`](Self::handle_message).
    pub fn handle_delivery(&mut self, now: Instant, delivery: &Delivery) {
        if delivery.quorum != self.agreed {
            self.handle_quorum(now, delivery.quorum);
        }
        self.handle_message(now, delivery.from, &delivery.data);
    }

    /// The agreed quorum changed at this point of the delivery order
    /// ([`group::Event::Quorum`](crate::group::Event::Quorum)): operations delivered
    /// from here on are judged by it, and the state's history takes the change at
    /// this point (after the round, if one runs): [`Event::Quorum`], with the quorum
    /// epoch advanced where it becomes quorate after pending or not quorate.
    pub fn handle_quorum(&mut self, now: Instant, state: AgreedQuorum) {
        let _ = now;
        if state == self.agreed {
            return;
        }
        self.agreed = state;
        if self.lost_sync {
            // The state here is not the view's: the next one brings its epoch.
            self.applied_quorum = state;
        } else if matches!(self.round, Round::Ready | Round::Detached) {
            self.apply_quorum(state, true);
        } else {
            self.queue.push_back(Queued::Quorum(state));
        }
    }

    fn on_start(&mut self, now: Instant, from: Member, members: u64, round: RoundId) {
        let fresh = match self.round_id {
            None => true,
            // The same coordinator started again for a later view of its own with the
            // same member list: the earlier start was stale.
            Some(current) => current.coordinator == from && round.view > current.view,
        };
        if members != self.hash
            || round.attempt != self.attempt
            || round.coordinator != from
            || self.coordinator != Some(from)
            || !fresh
            || matches!(self.round, Round::Detached)
        {
            self.stats.stale += 1;
            return;
        }
        // The collection ends a round deadline after the first start of the attempt:
        // a coordinator that starts over and over does not extend it.
        if self.round_id.is_none() || self.deadline.is_none() {
            self.deadline = Some(later(now, self.config.round_timeout));
        }
        self.round_id = Some(round);
        self.summaries.clear();
        self.checks.clear();
        self.round = Round::Collect;
        self.drop_round_sends();
        let s = self.summary();
        self.send_round(Msg::Summary {
            round,
            version: s.version,
            digest: s.digest,
            hint: s.hint,
            quorum: s.epoch,
        });
    }

    /// An operation delivered (and not from an excluded member): applied now, queued
    /// for the end of the round, or kept aside while this member is out of sync.
    fn on_op(&mut self, from: Member, seq: u64, data: &[u8]) {
        // Judged at its delivery, by the state every member computes there.
        let quorum = self.agreed;
        if self.lost_sync {
            self.stats.stale += 1;
            if self.permits(quorum) {
                self.orphan(from, seq, data.to_vec());
            } else {
                self.refuse(from, seq, quorum);
            }
        } else if matches!(self.round, Round::Ready) {
            self.apply_or_refuse(from, seq, data, quorum, true);
        } else {
            self.queue
                .push_back(Queued::Op(from, seq, data.to_vec(), quorum));
        }
    }

    /// A barrier marker: this member's own passes its barriers once everything before
    /// it is applied to the agreed state (at once when synced; at the end of the
    /// round when one runs; at the end of the next round when out of sync). Other
    /// members' markers are theirs.
    fn on_mark(&mut self, from: Member, id: u64) {
        if self.view.as_ref().and_then(View::me) != Some(from) {
            return;
        }
        if self.marker == Marker::InFlight(id) || self.marker == Marker::Unsent(id) {
            self.marker = Marker::Idle;
            if std::mem::take(&mut self.mark_wanted) {
                self.send_mark();
            }
        }
        if self.lost_sync {
            self.hold_mark(id);
        } else if matches!(self.round, Round::Ready) {
            self.event(Event::Barrier {
                id,
                version: self.version,
            });
        } else {
            self.queue.push_back(Queued::Mark(id));
        }
    }

    fn hold_mark(&mut self, id: u64) {
        self.held_mark = Some(self.held_mark.map_or(id, |h| h.max(id)));
    }

    fn send_mark(&mut self) -> u64 {
        self.next_mark += 1;
        let id = self.next_mark;
        self.outbox.push_back((false, Msg::Mark { id }.encode()));
        self.marker = Marker::Unsent(id);
        self.stats.marks_sent += 1;
        id
    }

    fn event(&mut self, e: Event) {
        self.events.push_back((e, None));
    }

    /// The source's header: checked against the bounds before anything is kept.
    fn on_header(&mut self, now: Instant, from: Member, round: RoundId, header: Header) {
        let expected = self.round_id == Some(round)
            && matches!(&self.round, Round::Transfer(t) if t.source == from && t.header.is_none());
        if !expected {
            self.stats.stale += 1;
            return;
        }
        let max = u64::try_from(self.config.max_state_size).unwrap_or(u64::MAX);
        if header.len > max {
            return self.next_attempt(now, Failure::TooLarge);
        }
        if !chunks_can_hold(header.len, header.chunks) {
            return self.next_attempt(now, Failure::BadTransfer);
        }
        let me = self.view.as_ref().and_then(View::me);
        let previous = self.summary();
        let restore = me != Some(from) && previous != header.summary;
        let timeout = self.config.round_timeout;
        let ends = later(
            later(now, timeout),
            at_rate(header.len, self.config.min_transfer_rate),
        );
        self.deadline = Some(later(now, timeout).min(ends));
        if let Round::Transfer(t) = &mut self.round {
            t.header = Some(header);
            t.restore = restore;
            t.previous = previous;
            t.ends = Some(ends);
        }
    }

    /// A chunk of the source's state: it must fit what the header announced, or the
    /// transfer ends at once, at the same point for every member.
    fn on_chunk(&mut self, now: Instant, from: Member, round: RoundId, index: u32, data: &[u8]) {
        let ok = self.round_id == Some(round);
        let Round::Transfer(t) = &mut self.round else {
            self.stats.stale += 1;
            return;
        };
        let Some(header) = t
            .header
            .as_ref()
            .filter(|_| ok && t.source == from && t.next == index)
        else {
            self.stats.stale += 1;
            return;
        };
        if let Some(why) = chunk_fault(header, t.received, t.next, data.len() as u64) {
            return self.next_attempt(now, why);
        }
        t.received += data.len() as u64;
        t.next += 1;
        if t.restore {
            keep(&mut t.data, data, header.len);
        }
        let done = t.next == header.chunks;
        let progress = later(now, self.config.round_timeout);
        self.deadline = Some(t.ends.map_or(progress, |e| e.min(progress)));
        if done {
            self.finish_transfer();
        }
    }

    fn stage(&self) -> u8 {
        match self.round {
            Round::Detached | Round::AwaitStart | Round::Ready => 0,
            Round::Collect => 1,
            Round::Transfer { .. } => 2,
        }
    }

    /// The coordinator of `attempt`: member `attempt mod n` of the sorted members, or
    /// the next one after it that is not known to stay silent or to speak a newer
    /// protocol in this view (the first attempt of a view is always member 0).
    fn pick_coordinator(&self, attempt: u32) -> Option<Member> {
        let members = self.view.as_ref()?.members();
        if members.is_empty() {
            return None;
        }
        let first = attempt as usize % members.len();
        let speaks = |m: &Member| !self.silent.contains(m) && !self.excluded.contains(m);
        members[first..]
            .iter()
            .chain(&members[..first])
            .find(|m| speaks(m))
            .or(Some(&members[first]))
            .copied()
    }

    fn send_round(&mut self, msg: Msg) {
        self.outbox.push_back((true, msg.encode()));
    }

    /// Drops the round messages not yet handed to the driver: they belong to a round
    /// that has ended (a new attempt or start), and would be stale when delivered.
    fn drop_round_sends(&mut self) {
        self.outbox.retain(|(round, _)| !round);
    }

    /// Ends whatever the previous view was doing: queued operations are applied to
    /// the local state (they were delivered in agreed order to every member that moved
    /// on with this one), round messages not yet sent are dropped.
    fn leave_view(&mut self) {
        // The round did not end: the state they go to may not be the one the next
        // round agrees on, so own outputs and barriers wait for that round.
        while let Some(q) = self.queue.pop_front() {
            match q {
                Queued::Op(from, seq, data, quorum) => {
                    self.apply_or_refuse(from, seq, &data, quorum, false)
                }
                Queued::Mark(id) => self.hold_mark(id),
                // The state they go to was not agreed in this view: a quorate view
                // whose round never ended does not count as an epoch of its history.
                Queued::Quorum(state) => self.apply_quorum(state, false),
            }
        }
        self.drop_round_sends();
        self.round = Round::Detached;
        self.round_id = None;
        self.coordinator = None;
        self.summaries.clear();
        self.excluded.clear();
        self.silent.clear();
        self.malformed.clear();
        self.checks.clear();
        self.deadline = None;
        self.verify_at = None;
    }

    fn begin_attempt(&mut self, now: Instant, me: Member) {
        self.round = Round::AwaitStart;
        self.round_id = None;
        self.summaries.clear();
        self.checks.clear();
        self.coordinator = self.pick_coordinator(self.attempt);
        self.deadline = Some(later(now, self.config.round_timeout));
        self.drop_round_sends();
        if self.coordinator == Some(me) {
            let view = self.view.as_ref().expect("in a view").id();
            let msg = Msg::Start {
                members: self.hash,
                round: RoundId {
                    coordinator: me,
                    view,
                    attempt: self.attempt,
                },
            };
            self.send_round(msg);
        }
    }

    fn next_attempt(&mut self, now: Instant, why: Failure) {
        self.stats.failed_rounds += 1;
        self.event(Event::RoundFailed {
            attempt: self.attempt,
            why,
        });
        self.attempt += 1;
        if self.attempt >= self.config.max_attempts {
            self.event(Event::GaveUp {
                attempts: self.attempt,
            });
            self.leave_view();
            self.rejoin = true;
            return;
        }
        // Operations delivered so far stay queued: they follow the next round's state.
        let me = self.view.as_ref().and_then(View::me).expect("in a view");
        self.begin_attempt(now, me);
    }

    fn check_collected(&mut self, now: Instant) {
        if !matches!(self.round, Round::Collect) {
            return;
        }
        let view = self.view.as_ref().expect("collecting means in a view");
        let complete = view.members().iter().all(|m| {
            self.summaries.contains_key(m) || self.excluded.contains(m) || self.silent.contains(m)
        });
        if complete && !self.summaries.is_empty() {
            self.decide(now);
        }
    }

    /// Every member reaches this at the same point of the agreed order, with the same
    /// summaries: they all choose the same source.
    fn decide(&mut self, now: Instant) {
        let candidates: Vec<Candidate> = self
            .summaries
            .iter()
            .map(|(&member, &summary)| Candidate { member, summary })
            .collect();
        let i = self.app.choose(&candidates);
        let chosen = candidates.get(i).copied().unwrap_or(candidates[0]);
        let view = self.view.as_ref().expect("deciding means in a view");
        // Silent members without a summary get the state too, should they wake up.
        let everyone = view
            .members()
            .iter()
            .all(|m| self.summaries.contains_key(m) || self.excluded.contains(m));
        let all_equal = candidates.iter().all(|c| c.summary == chosen.summary);
        let round = self.round_id.expect("deciding means in a round");
        if everyone && all_equal {
            self.orphans.clear();
            self.finish_round(round, chosen.member, chosen.summary, false);
            return;
        }
        self.round = Round::Transfer(Transfer {
            source: chosen.member,
            header: None,
            restore: false,
            previous: chosen.summary,
            data: Vec::new(),
            received: 0,
            next: 0,
            ends: None,
        });
        self.deadline = Some(later(now, self.config.round_timeout));
        if view.me() == Some(chosen.member) {
            self.send_state(round);
        }
    }

    fn send_state(&mut self, round: RoundId) {
        let snapshot = self.app.snapshot();
        // Chunks of at least `chunk_size`, and few enough to be counted in a `u32`.
        let size = self
            .config
            .chunk_size
            .max(1)
            .max(snapshot.len().div_ceil(u32::MAX as usize));
        let chunks = snapshot.len().div_ceil(size).max(1);
        let s = self.summary();
        self.send_round(Msg::StateHeader {
            round,
            version: s.version,
            digest: s.digest,
            hint: s.hint,
            epoch: s.epoch,
            len: snapshot.len() as u64,
            chunks: u32::try_from(chunks).expect("fewer than 2^32 chunks"),
            applied: self.applied.iter().map(|(&m, r)| (m, r.clone())).collect(),
        });
        if snapshot.len() > self.config.max_state_size {
            // Every member with the same limit refuses it at the header.
            return;
        }
        for i in 0..chunks {
            let piece =
                &snapshot[(i * size).min(snapshot.len())..((i + 1) * size).min(snapshot.len())];
            self.send_round(Msg::Chunk {
                round,
                index: i as u32,
                data: piece.to_vec(),
            });
        }
        self.stats.states_sent += 1;
    }

    fn finish_transfer(&mut self) {
        let round = self.round_id.expect("transfer means in a round");
        let Round::Transfer(Transfer {
            source,
            header: Some(header),
            restore,
            previous,
            data,
            ..
        }) = std::mem::replace(&mut self.round, Round::AwaitStart)
        else {
            unreachable!("finish_transfer outside a transfer");
        };
        let current = header.summary;
        if restore {
            if self.app.restore(&data).is_err() {
                return self.restore_failed(Failure::RestoreFailed);
            }
            drop(data);
            if self.app.digest() != current.digest || self.app.merge_hint() != current.hint {
                // Not the announced state: its history is nobody's.
                self.version = 0;
                return self.restore_failed(Failure::Damaged);
            }
            self.stats.restores += 1;
            self.stats.bytes_received += header.len;
            self.version = current.version;
            self.epoch = current.epoch;
            let me = self.view.as_ref().and_then(View::me);
            let before = me
                .and_then(|me| self.applied.get(&me).cloned())
                .unwrap_or_default();
            self.applied = header
                .applied
                .into_iter()
                .map(|(m, mut r)| {
                    keep_latest(&mut r);
                    (m, r)
                })
                .collect();
            let after = me
                .and_then(|me| self.applied.get(&me).cloned())
                .unwrap_or_default();
            // Own operations the replaced history held and the new one does not, and
            // own operations dropped for a failed restore, or applied to a state that
            // was not the agreed one, that the new one does not hold either.
            let orphans = std::mem::take(&mut self.orphans);
            let tentative = std::mem::take(&mut self.tentative);
            let mut listed = BTreeSet::new();
            let discarded = self
                .own_log
                .iter()
                .filter(|(seq, _)| has_seq(&before, *seq))
                .chain(orphans.iter().map(|(seq, op)| (*seq, op.as_slice())))
                .chain(tentative.iter().map(|t| (t.seq, t.op.as_slice())))
                .filter(|(seq, _)| !has_seq(&after, *seq) && listed.insert(*seq))
                .map(|(seq, op)| Discarded {
                    seq,
                    op: op.to_vec(),
                })
                .collect();
            self.event(Event::Restored {
                round,
                source,
                previous,
                current,
                discarded,
            });
            // Those it holds are applied here now, as of its version; their outputs
            // were not computed on this state (or at all).
            let held = orphans
                .iter()
                .map(|(seq, _)| *seq)
                .chain(tentative.iter().map(|t| t.seq))
                .filter(|seq| has_seq(&after, *seq))
                .collect::<BTreeSet<u64>>();
            for seq in held {
                self.event(Event::Applied {
                    seq,
                    version: current.version,
                });
            }
        }
        self.orphans.clear();
        self.finish_round(round, source, current, true);
    }

    /// The state could not be restored (the application kept its previous state), or
    /// was not the announced one: operations queued since the round began, and those
    /// delivered until the next view, apply to a state this member does not have, so
    /// they are dropped, and the member leaves and joins again, to catch up in a view
    /// of its own making.
    fn restore_failed(&mut self, why: Failure) {
        self.stats.failed_rounds += 1;
        self.event(Event::RoundFailed {
            attempt: self.attempt,
            why,
        });
        for q in std::mem::take(&mut self.queue) {
            match q {
                Queued::Op(from, seq, data, quorum) => {
                    if self.permits(quorum) {
                        self.orphan(from, seq, data);
                    } else {
                        self.refuse(from, seq, quorum);
                    }
                }
                Queued::Mark(id) => self.hold_mark(id),
                // Not this member's state any more: the epoch comes with the next one.
                Queued::Quorum(state) => self.applied_quorum = state,
            }
        }
        self.leave_view();
        self.lost_sync = true;
        self.rejoin = true;
    }

    /// Notes an operation dropped for a failed restore, if it is an own one.
    fn orphan(&mut self, origin: Member, seq: u64, op: Vec<u8>) {
        if self.view.as_ref().and_then(View::me) == Some(origin) {
            self.orphans.push_back((seq, op));
            while self.orphans.len() > self.config.own_log_limit {
                self.orphans.pop_front();
            }
        }
    }

    fn finish_round(
        &mut self,
        round: RoundId,
        source: Member,
        summary: Summary,
        transferred: bool,
    ) {
        self.round = Round::Ready;
        self.deadline = None;
        self.stats.rounds += 1;
        self.event(Event::Synced {
            round,
            source,
            summary,
            transferred,
        });
        // Own operations applied when a view changed during an earlier round: the
        // state they were applied to is the agreed one (a restore took the others
        // instead).
        for t in std::mem::take(&mut self.tentative) {
            self.events.push_back((
                Event::Applied {
                    seq: t.seq,
                    version: t.version,
                },
                Some(t.output),
            ));
        }
        // The view's members, at this point of the history for every member: the
        // snapshot of a transfer was taken at the decision, before it, so a member
        // that restored makes the call on the state the others make it on.
        if !self.view_applied {
            self.view_applied = true;
            let members = self
                .view
                .as_ref()
                .map(|v| v.members().to_vec())
                .unwrap_or_default();
            let version = self.version;
            self.app.apply_view(&ViewChange {
                members: &members,
                round,
                version,
            });
            self.stats.views_applied += 1;
            self.event(Event::ViewApplied {
                round,
                members,
                version,
            });
        }
        if let Some(id) = self.held_mark.take() {
            self.event(Event::Barrier {
                id,
                version: self.version,
            });
        }
        while let Some(q) = self.queue.pop_front() {
            match q {
                Queued::Op(from, seq, data, quorum) => {
                    self.apply_or_refuse(from, seq, &data, quorum, true)
                }
                Queued::Mark(id) => self.event(Event::Barrier {
                    id,
                    version: self.version,
                }),
                Queued::Quorum(state) => self.apply_quorum(state, true),
            }
        }
    }

    /// Whether an operation delivered where the agreed quorum was `quorum` is
    /// applied: it permits, or writes are not gated.
    fn permits(&self, quorum: AgreedQuorum) -> bool {
        !self.config.gate_writes || quorum.permits()
    }

    /// Applies an operation delivered where the agreed quorum was `quorum`, if that
    /// permits it, else refuses it.
    fn apply_or_refuse(
        &mut self,
        origin: Member,
        seq: u64,
        data: &[u8],
        quorum: AgreedQuorum,
        agreed: bool,
    ) {
        if self.permits(quorum) {
            self.apply(origin, seq, data, agreed);
        } else {
            self.refuse(origin, seq, quorum);
        }
    }

    /// An operation delivered where the agreed quorum (`quorum`) did not permit it:
    /// no member applies it; its submitter learns so.
    fn refuse(&mut self, origin: Member, seq: u64, quorum: AgreedQuorum) {
        self.stats.not_quorate += 1;
        if self.view.as_ref().and_then(View::me) == Some(origin) {
            self.event(Event::NotQuorate { seq, quorum });
        }
    }

    /// A change of the agreed quorum reaches the state's point of the history: the
    /// epoch advances where it becomes quorate after pending or not quorate, if the
    /// state is the one the view `agreed` on (not when a view change cut its round
    /// short: else a minority's history, meeting the quorate side's in a quorate view
    /// whose round never ended, would take an epoch the quorate side's history earned
    /// and could win the next merge by its length).
    fn apply_quorum(&mut self, state: AgreedQuorum, agreed: bool) {
        let before = std::mem::replace(&mut self.applied_quorum, state);
        if state == before {
            return;
        }
        if agreed
            && matches!(state, AgreedQuorum::Quorate(_))
            && matches!(before, AgreedQuorum::Pending | AgreedQuorum::NotQuorate(_))
        {
            self.epoch = self.epoch.saturating_add(1);
        }
        self.event(Event::Quorum {
            state,
            epoch: self.epoch,
        });
    }

    /// Applies an operation. `agreed`: to the state the view agreed on (else, when a
    /// view changed during a round, an own operation's outcome waits for the next
    /// round).
    fn apply(&mut self, origin: Member, seq: u64, data: &[u8], agreed: bool) {
        // Saturates: a version restored from a peer (or loaded from disk) may be the
        // largest; it stays the highest rather than panicking or wrapping to lowest.
        self.version = self.version.saturating_add(1);
        let version = self.version;
        let info = OpInfo {
            origin,
            seq,
            version,
        };
        let output = self.app.apply(data, &info);
        self.stats.applied += 1;
        let ranges = self.applied.entry(origin).or_default();
        add_seq(ranges, seq);
        keep_latest(ranges);
        if self.config.report_changes {
            self.event(Event::Changed {
                origin,
                seq,
                version,
            });
        }
        if self.view.as_ref().and_then(View::me) == Some(origin) {
            self.own_log.push(seq, data, self.config.own_log_limit);
            if agreed {
                self.events
                    .push_back((Event::Applied { seq, version }, Some(output)));
            } else {
                self.tentative.push(Tentative {
                    seq,
                    op: data.to_vec(),
                    version,
                    output,
                });
            }
        }
    }
}
