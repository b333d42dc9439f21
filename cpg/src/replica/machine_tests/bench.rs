//! A harness for the tests of one machine against peers the test plays by hand:
//! [`Bench`].

use std::time::{Duration, Instant};

use super::super::machine::Footprint;
use super::super::wire::{members_hash, Msg, RoundId};
use super::{m, Config, Effect, Event, Failure, Log, Machine, Phase};
use crate::group::{View, ViewId};
use crate::types::Member;

/// One real machine, `me`, in a view of `m(0)..m(n-1)`; the other members are played
/// by the test. The machine's own sends are delivered back to it when the test says
/// ([`Bench::loopback`]), as CPG orders them after what was delivered before.
pub(super) struct Bench {
    pub mach: Machine<Log>,
    pub members: Vec<Member>,
    pub now: Instant,
    pub events: Vec<Event>,
    /// Every own send so far, decoded.
    pub sent: Vec<Msg>,
    /// Own sends not yet delivered back.
    pub pending: Vec<Vec<u8>>,
    /// The largest footprint seen after any input.
    pub peak: Footprint,
    /// While set, the machine's sends stay in it (a driver that cannot hand them over).
    pub hold: bool,
    /// Unless set, [`peak`](Self::peak) is noted after every input (which costs in
    /// proportion to what the machine holds); else only by [`note`](Self::note).
    pub sample: bool,
}

pub(super) fn no_footprint() -> Footprint {
    Footprint {
        transfer: 0,
        checks: 0,
        check_entries: 0,
        queue: 0,
        outbox: 0,
        outbox_bytes: 0,
        ranges: 0,
        events: 0,
    }
}

impl Bench {
    /// `me` is `m(me)` in a view of `n` members.
    pub(super) fn new(cfg: Config, me: usize, n: usize) -> Bench {
        let members: Vec<Member> = (0..n).map(m).collect();
        let mut b = Bench {
            mach: Machine::new(Log::default(), cfg),
            members: members.clone(),
            now: Instant::now(),
            events: Vec::new(),
            sent: Vec::new(),
            pending: Vec::new(),
            peak: no_footprint(),
            hold: false,
            sample: false,
        };
        let v = View::new(
            ViewId {
                incarnation: 1,
                counter: 1,
            },
            members,
            Some(m(me)),
            vec![],
            vec![],
            None,
        );
        b.mach.handle_view(b.now, &v);
        b.collect();
        b
    }

    pub(super) fn hash(&self) -> u64 {
        members_hash(&self.members)
    }

    /// Takes the machine's sends and events; notes the footprint.
    pub(super) fn collect(&mut self) {
        if !self.sample {
            self.note();
        }
        while let Some(e) = if self.hold {
            None
        } else {
            self.mach.poll_effect()
        } {
            if let Effect::Send(bytes) = e {
                self.sent
                    .push(Msg::decode(&bytes).expect("own sends decode"));
                self.pending.push(bytes);
            }
        }
        while let Some(e) = self.mach.poll_event() {
            self.events.push(e);
        }
    }

    /// Notes the footprint now in [`peak`](Self::peak).
    pub(super) fn note(&mut self) {
        let f = self.mach.footprint();
        let p = &mut self.peak;
        p.transfer = p.transfer.max(f.transfer);
        p.checks = p.checks.max(f.checks);
        p.check_entries = p.check_entries.max(f.check_entries);
        p.queue = p.queue.max(f.queue);
        p.outbox = p.outbox.max(f.outbox);
        p.outbox_bytes = p.outbox_bytes.max(f.outbox_bytes);
        p.ranges = p.ranges.max(f.ranges);
    }

    /// Delivers `msg` from `from`.
    pub(super) fn peer(&mut self, from: Member, msg: &Msg) {
        self.raw(from, &msg.encode());
    }

    pub(super) fn raw(&mut self, from: Member, bytes: &[u8]) {
        self.mach.handle_message(self.now, from, bytes);
        self.collect();
    }

    /// Delivers the own sends made so far back to the machine.
    pub(super) fn loopback(&mut self) {
        let me = self.mach.view().and_then(View::me).expect("in a view");
        for bytes in std::mem::take(&mut self.pending) {
            self.mach.handle_message(self.now, me, &bytes);
            self.collect();
        }
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.mach.handle_timeout(self.now);
        self.collect();
    }

    /// A round coordinated by `coordinator` in attempt `attempt`.
    pub(super) fn round(&self, coordinator: Member, attempt: u32) -> RoundId {
        RoundId {
            coordinator,
            view: ViewId {
                incarnation: 1,
                counter: 1,
            },
            attempt,
        }
    }

    /// Attempt 0, coordinated by `m(0)`, in which `m(0)` wins with a summary of
    /// version 100: the machine (which has version 0) waits for its state.
    pub(super) fn transfer_from_m0(&mut self) -> RoundId {
        let round = self.round(m(0), 0);
        let hash = self.hash();
        self.peer(
            m(0),
            &Msg::Start {
                members: hash,
                round,
            },
        );
        self.loopback();
        for i in 1..self.members.len() {
            if Some(m(i)) != self.mach.view().and_then(View::me) {
                self.peer(
                    m(i),
                    &Msg::Summary {
                        round,
                        version: 0,
                        digest: 0,
                        hint: 0,
                        quorum: 0,
                    },
                );
            }
        }
        self.peer(
            m(0),
            &Msg::Summary {
                round,
                version: 100,
                digest: 1,
                hint: 0,
                quorum: 0,
            },
        );
        assert_eq!(self.mach.phase(), Phase::Syncing);
        round
    }

    pub(super) fn header(&mut self, round: RoundId, len: u64, chunks: u32) {
        self.peer(
            m(0),
            &Msg::StateHeader {
                round,
                version: 100,
                digest: 1,
                hint: 0,
                epoch: 0,
                len,
                chunks,
                applied: vec![],
            },
        );
    }

    pub(super) fn chunk(&mut self, round: RoundId, index: u32, len: usize) {
        self.peer(
            m(0),
            &Msg::Chunk {
                round,
                index,
                data: vec![0xAB; len],
            },
        );
    }

    pub(super) fn failed(&self) -> Vec<(u32, Failure)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::RoundFailed { attempt, why } => Some((*attempt, *why)),
                _ => None,
            })
            .collect()
    }

    /// Whether the machine started attempt `attempt` (it coordinates it, or sent a
    /// trouble report for it).
    pub(super) fn sent_start(&self, attempt: u32) -> bool {
        self.sent
            .iter()
            .any(|s| matches!(s, Msg::Start { round, .. } if round.attempt == attempt))
    }

    pub(super) fn troubles(&self) -> usize {
        self.sent
            .iter()
            .filter(|s| matches!(s, Msg::Trouble { .. }))
            .count()
    }
}
