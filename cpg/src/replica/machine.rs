//! The replica protocol's rules as a state machine without I/O or clock: [`Machine`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use crate::group::View;
use crate::types::Member;

use super::app::{Candidate, OpInfo, Replicated, Summary};
pub use super::event::{Config, Discarded, Effect, Event, Failure, Phase, Stats};
use super::wire::{add_seq, has_seq, members_hash, DecodeError, Msg, Ranges, RoundId};

/// What the source announced before its chunks: the state's summary, its length,
/// the number of chunks, and which operations of each origin its history holds.
type Header = (Summary, u64, u32, Vec<(Member, Ranges)>);

#[derive(Debug)]
enum Round {
    /// No view.
    Detached,
    /// Waiting for the coordinator's start.
    AwaitStart,
    /// Collecting summaries.
    Collect,
    /// Receiving the source's state.
    Transfer {
        source: Member,
        header: Option<Header>,
        data: Vec<u8>,
        next: u32,
    },
    /// Synced.
    Ready,
}

/// The replica protocol for one member, around the application's state `A`.
///
/// Inputs are the group layer's views ([`handle_view`](Self::handle_view)) and
/// deliveries ([`handle_message`](Self::handle_message)), the loss of the connection,
/// time ([`handle_timeout`](Self::handle_timeout)) and the application's
/// [`submit`](Self::submit) and [`verify`](Self::verify). Outputs are [`Effect`]s for
/// the driver ([`poll_effect`](Self::poll_effect)), [`Event`]s for the application
/// ([`poll_event`](Self::poll_event)), and calls on `A`: `apply`, `snapshot`,
/// `restore`, `digest`, `choose`, all from inside the `handle_*` methods.
///
/// The rules and the wire format are described in the
/// [module documentation](super).
#[derive(Debug)]
pub struct Machine<A> {
    app: A,
    config: Config,
    view: Option<View>,
    hash: u64,
    round: Round,
    attempt: u32,
    round_id: Option<RoundId>,
    excluded: BTreeSet<Member>,
    summaries: BTreeMap<Member, Summary>,
    queue: VecDeque<(Member, u64, Vec<u8>)>,
    version: u64,
    /// Per origin, which of its operations this state's history holds.
    applied: BTreeMap<Member, Ranges>,
    own_log: VecDeque<(u64, Vec<u8>)>,
    next_seq: u64,
    deadline: Option<Instant>,
    verify_at: Option<Instant>,
    next_check: u64,
    checks: BTreeMap<(Member, u64), BTreeMap<Member, Summary>>,
    /// Messages to send; `true` marks round messages, dropped when the view changes.
    outbox: VecDeque<(bool, Vec<u8>)>,
    rejoin: bool,
    events: VecDeque<Event>,
    stats: Stats,
}

impl<A: Replicated> Machine<A> {
    /// A machine around `app`'s state, not yet in a view.
    pub fn new(app: A, config: Config) -> Machine<A> {
        let version = config.initial_version;
        Machine {
            app,
            config,
            view: None,
            hash: 0,
            round: Round::Detached,
            attempt: 0,
            round_id: None,
            excluded: BTreeSet::new(),
            summaries: BTreeMap::new(),
            queue: VecDeque::new(),
            version,
            applied: BTreeMap::new(),
            own_log: VecDeque::new(),
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

    /// This state's summary now.
    pub fn summary(&self) -> Summary {
        Summary {
            version: self.version,
            digest: self.app.digest(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        Stats {
            queued_ops: self.queue.len(),
            ..self.stats
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

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next thing for the driver to do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        if std::mem::take(&mut self.rejoin) {
            return Some(Effect::Rejoin);
        }
        self.outbox.pop_front().map(|(_, b)| Effect::Send(b))
    }

    /// Puts back a [`Effect::Send`] the driver could not hand over yet (its queue was
    /// full): it comes out first again.
    pub fn unpoll_send(&mut self, bytes: Vec<u8>) {
        let round = bytes.get(3) != Some(&5);
        self.outbox.push_front((round, bytes));
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
            self.deadline = Some(crate::wait::later(now, self.config.round_timeout));
        }
        if self.verify_at.is_some_and(|d| d <= now) {
            self.verify_at = self
                .config
                .verify_interval
                .map(|i| crate::wait::later(now, i));
            if self.view.as_ref().is_some_and(View::is_leader) {
                self.verify();
            }
        }
    }

    /// The connection to the daemon was lost: no view until the next one.
    pub fn handle_disconnected(&mut self) {
        self.leave_view();
        self.view = None;
    }

    /// A new view was installed: a new round starts.
    pub fn handle_view(&mut self, now: Instant, view: &View) {
        self.leave_view();
        self.view = Some(view.clone());
        self.events.push_back(Event::View(view.clone()));
        let Some(me) = view.me() else {
            return;
        };
        self.hash = members_hash(view.members());
        self.attempt = 0;
        self.verify_at = self
            .config
            .verify_interval
            .map(|i| crate::wait::later(now, i));
        self.begin_attempt(now, me);
    }

    /// A message was delivered by the group layer (in the agreed order).
    pub fn handle_message(&mut self, now: Instant, from: Member, data: &[u8]) {
        let msg = match Msg::decode(data) {
            Ok(m) => m,
            Err(DecodeError::Newer(version)) => {
                // Reported once per member and view; left out of the view's rounds.
                if self.view.as_ref().is_some_and(|v| v.contains(from))
                    && self.excluded.insert(from)
                {
                    self.events.push_back(Event::Refused { from, version });
                    self.check_collected(now);
                }
                return;
            }
            Err(DecodeError::Malformed) => {
                self.events.push_back(Event::Malformed {
                    from,
                    len: data.len(),
                });
                return;
            }
        };
        if self.excluded.contains(&from) {
            self.stats.stale += 1;
            return;
        }
        match msg {
            Msg::Op { seq, data } => {
                if matches!(self.round, Round::Ready) {
                    self.apply(from, seq, &data);
                } else {
                    self.queue.push_back((from, seq, data));
                }
            }
            Msg::Start { members, round } => self.on_start(now, from, members, round),
            Msg::Summary {
                round,
                version,
                digest,
            } => {
                let in_view = self.view.as_ref().is_some_and(|v| v.contains(from));
                if self.round_id != Some(round) || !matches!(self.round, Round::Collect) || !in_view
                {
                    self.stats.stale += 1;
                    return;
                }
                self.summaries
                    .entry(from)
                    .or_insert(Summary { version, digest });
                self.deadline = Some(crate::wait::later(now, self.config.round_timeout));
                self.check_collected(now);
            }
            Msg::StateHeader {
                round,
                version,
                digest,
                len,
                chunks,
                applied,
            } => {
                let ok = self.round_id == Some(round);
                match &mut self.round {
                    Round::Transfer {
                        source,
                        header: header @ None,
                        data,
                        ..
                    } if ok && *source == from => {
                        *header = Some((Summary { version, digest }, len, chunks, applied));
                        data.reserve(usize::try_from(len).unwrap_or(0).min(1 << 30));
                        self.deadline = Some(crate::wait::later(now, self.config.round_timeout));
                    }
                    _ => self.stats.stale += 1,
                }
            }
            Msg::Chunk { round, index, data } => {
                let ok = self.round_id == Some(round);
                let done = match &mut self.round {
                    Round::Transfer {
                        source,
                        header: Some((_, _, chunks, _)),
                        data: buf,
                        next,
                    } if ok && *source == from && *next == index => {
                        buf.extend_from_slice(&data);
                        *next += 1;
                        *next == *chunks
                    }
                    _ => {
                        self.stats.stale += 1;
                        return;
                    }
                };
                self.deadline = Some(crate::wait::later(now, self.config.round_timeout));
                if done {
                    self.finish_transfer();
                }
            }
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
                if matches!(self.round, Round::Collect) && !self.summaries.is_empty() {
                    // Decide with the summaries every member has received by now:
                    // whoever stayed silent is left to catch up from the transfer.
                    self.decide(now);
                } else {
                    self.next_attempt(now, Failure::Deadline);
                }
            }
            Msg::Verify { members, check } => {
                if members != self.hash || !matches!(self.round, Round::Ready) {
                    self.stats.stale += 1;
                    return;
                }
                self.checks.insert((from, check), BTreeMap::new());
                let s = self.summary();
                let msg = Msg::Digest {
                    members,
                    issuer: from,
                    check,
                    version: s.version,
                    digest: s.digest,
                };
                self.send_round(msg);
            }
            Msg::Digest {
                members,
                issuer,
                check,
                version,
                digest,
            } => {
                let Some(got) = self
                    .checks
                    .get_mut(&(issuer, check))
                    .filter(|_| members == self.hash && matches!(self.round, Round::Ready))
                else {
                    self.stats.stale += 1;
                    return;
                };
                got.entry(from).or_insert(Summary { version, digest });
                let view = self.view.as_ref().expect("ready means in a view");
                let complete = view
                    .members()
                    .iter()
                    .all(|m| got.contains_key(m) || self.excluded.contains(m));
                if complete {
                    let got = self.checks.remove(&(issuer, check)).unwrap_or_default();
                    let summaries: Vec<Candidate> = got
                        .into_iter()
                        .map(|(member, summary)| Candidate { member, summary })
                        .collect();
                    let first = summaries[0].summary;
                    if summaries.iter().all(|c| c.summary == first) {
                        self.events.push_back(Event::Verified {
                            check,
                            summary: first,
                        });
                    } else {
                        self.events.push_back(Event::Diverged { check, summaries });
                        self.next_attempt(now, Failure::Diverged);
                    }
                }
            }
        }
    }

    fn on_start(&mut self, now: Instant, from: Member, members: u64, round: RoundId) {
        let expected = self.coordinator(self.attempt);
        let fresh = match self.round_id {
            None => true,
            // The same coordinator started again for a later view of its own with the
            // same member list: the earlier start was stale.
            Some(current) => current.coordinator == from && round.view > current.view,
        };
        if members != self.hash
            || round.attempt != self.attempt
            || round.coordinator != from
            || expected != Some(from)
            || !fresh
            || matches!(self.round, Round::Detached)
        {
            self.stats.stale += 1;
            return;
        }
        self.round_id = Some(round);
        self.summaries.clear();
        self.checks.clear();
        self.round = Round::Collect;
        self.deadline = Some(crate::wait::later(now, self.config.round_timeout));
        let s = self.summary();
        self.send_round(Msg::Summary {
            round,
            version: s.version,
            digest: s.digest,
        });
    }

    fn stage(&self) -> u8 {
        match self.round {
            Round::Detached | Round::AwaitStart | Round::Ready => 0,
            Round::Collect => 1,
            Round::Transfer { .. } => 2,
        }
    }

    fn coordinator(&self, attempt: u32) -> Option<Member> {
        let members = self.view.as_ref()?.members();
        if members.is_empty() {
            return None;
        }
        Some(members[attempt as usize % members.len()])
    }

    fn send_round(&mut self, msg: Msg) {
        self.outbox.push_back((true, msg.encode()));
    }

    /// Ends whatever the previous view was doing: queued operations are applied to
    /// the local state (they were delivered in agreed order to every member that moved
    /// on with this one), round messages not yet sent are dropped.
    fn leave_view(&mut self) {
        while let Some((from, seq, data)) = self.queue.pop_front() {
            self.apply(from, seq, &data);
        }
        self.outbox.retain(|(round, _)| !round);
        self.round = Round::Detached;
        self.round_id = None;
        self.summaries.clear();
        self.excluded.clear();
        self.checks.clear();
        self.deadline = None;
        self.verify_at = None;
    }

    fn begin_attempt(&mut self, now: Instant, me: Member) {
        self.round = Round::AwaitStart;
        self.round_id = None;
        self.summaries.clear();
        self.checks.clear();
        self.deadline = Some(crate::wait::later(now, self.config.round_timeout));
        if self.coordinator(self.attempt) == Some(me) {
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
        self.events.push_back(Event::RoundFailed {
            attempt: self.attempt,
            why,
        });
        self.attempt += 1;
        if self.attempt >= self.config.max_attempts {
            self.events.push_back(Event::GaveUp {
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
        let complete = view
            .members()
            .iter()
            .all(|m| self.summaries.contains_key(m) || self.excluded.contains(m));
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
        let everyone = view
            .members()
            .iter()
            .all(|m| self.summaries.contains_key(m) || self.excluded.contains(m));
        let all_equal = candidates.iter().all(|c| c.summary == chosen.summary);
        let round = self.round_id.expect("deciding means in a round");
        if everyone && all_equal {
            self.finish_round(round, chosen.member, chosen.summary, false);
            return;
        }
        self.round = Round::Transfer {
            source: chosen.member,
            header: None,
            data: Vec::new(),
            next: 0,
        };
        self.deadline = Some(crate::wait::later(now, self.config.round_timeout));
        if view.me() == Some(chosen.member) {
            self.send_state(round);
        }
    }

    fn send_state(&mut self, round: RoundId) {
        let snapshot = self.app.snapshot();
        let size = self.config.chunk_size.max(1);
        let chunks = snapshot.len().div_ceil(size).max(1);
        let s = self.summary();
        self.send_round(Msg::StateHeader {
            round,
            version: s.version,
            digest: s.digest,
            len: snapshot.len() as u64,
            chunks: u32::try_from(chunks).expect("fewer than 2^32 chunks"),
            applied: self.applied.iter().map(|(&m, r)| (m, r.clone())).collect(),
        });
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
        let Round::Transfer {
            source,
            header: Some((current, len, _, applied)),
            data,
            ..
        } = std::mem::replace(&mut self.round, Round::AwaitStart)
        else {
            unreachable!("finish_transfer outside a transfer");
        };
        let me = self.view.as_ref().and_then(View::me);
        let previous = self.summary();
        if me != Some(source) && previous != current {
            if data.len() as u64 != len || self.app.restore(&data).is_err() {
                return self.restore_failed();
            }
            self.stats.restores += 1;
            self.stats.bytes_received += len;
            self.version = current.version;
            let before = me
                .and_then(|me| self.applied.get(&me).cloned())
                .unwrap_or_default();
            self.applied = applied.into_iter().collect();
            // Own operations the replaced history held and the new one does not.
            let after = me
                .and_then(|me| self.applied.get(&me).cloned())
                .unwrap_or_default();
            let discarded = self
                .own_log
                .iter()
                .filter(|(seq, _)| has_seq(&before, *seq) && !has_seq(&after, *seq))
                .map(|(seq, op)| Discarded {
                    seq: *seq,
                    op: op.clone(),
                })
                .collect();
            self.events.push_back(Event::Restored {
                round,
                source,
                previous,
                current,
                discarded,
            });
        }
        self.finish_round(round, source, current, true);
    }

    /// The state could not be restored (the application kept its previous state):
    /// operations queued since the round began apply to a state this member does not
    /// have, so they are dropped, and the member leaves and joins again, to catch up
    /// in a view of its own making.
    fn restore_failed(&mut self) {
        self.stats.failed_rounds += 1;
        self.events.push_back(Event::RoundFailed {
            attempt: self.attempt,
            why: Failure::RestoreFailed,
        });
        self.queue.clear();
        self.leave_view();
        self.rejoin = true;
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
        self.events.push_back(Event::Synced {
            round,
            source,
            summary,
            transferred,
        });
        while let Some((from, seq, data)) = self.queue.pop_front() {
            self.apply(from, seq, &data);
        }
    }

    fn apply(&mut self, origin: Member, seq: u64, data: &[u8]) {
        // Saturates: a version restored from a peer (or loaded from disk) may be the
        // largest; it stays the highest rather than panicking or wrapping to lowest.
        self.version = self.version.saturating_add(1);
        let info = OpInfo {
            origin,
            seq,
            version: self.version,
        };
        self.app.apply(data, &info);
        self.stats.applied += 1;
        add_seq(self.applied.entry(origin).or_default(), seq);
        if self.view.as_ref().and_then(View::me) == Some(origin) {
            self.own_log.push_back((seq, data.to_vec()));
            while self.own_log.len() > self.config.own_log_limit {
                self.own_log.pop_front();
            }
            self.events.push_back(Event::Applied {
                seq,
                version: self.version,
            });
        }
    }
}
