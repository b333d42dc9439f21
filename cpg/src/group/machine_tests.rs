//! Unit tests of the group state machine, driven by synthetic event sequences (no
//! daemon, no clock: every instant is made up).

use std::time::{Duration, Instant};

use super::config::*;
use super::error::*;
use super::event::*;
use super::machine::*;
use super::quorum::*;
use super::view::ViewId;
use super::wire::{parse, Entries, Frame, HEADER_LEN, MAX_BATCH_MESSAGES};
use crate::error::{CsError, Error, Operation};
use crate::types::{Member, Reason, RingId};

fn m(nodeid: u32, pid: u32) -> Member {
    Member { nodeid, pid }
}

fn cs(op: Operation, code: CsError) -> Error {
    Error::Cs { op, code }
}

fn try_again() -> Error {
    cs(Operation::Send, CsError::TryAgain)
}

fn lost(op: Operation) -> Error {
    cs(op, CsError::Library)
}

/// The default settings without corosync's quorum (as on a daemon without a quorum
/// provider), sending queued messages one by one below the batch window: what the
/// tests of everything else run with, one frame per message unless the window or
/// back-pressure packs them. The quorum tests are in `quorum_tests.rs`; the eager
/// batches of the default settings have tests of their own ([`eager`]).
fn plain() -> Config {
    Config {
        quorum: QuorumPolicy::Ignore,
        batch_eager: false,
        ..Config::default()
    }
}

/// [`plain`] with batching off: every message goes alone, whatever the pressure.
fn unbatched() -> Config {
    Config {
        batch_bytes: 0,
        ..plain()
    }
}

/// A machine and a made-up clock.
struct T {
    m: Machine,
    now: Instant,
    buf: Vec<u8>,
    /// Bytes of every Send effect, in order.
    wire: Vec<Vec<u8>>,
}

impl T {
    fn new(config: Config, pid: u32) -> T {
        let mut t = T {
            m: Machine::new(config, pid, 0x5eed),
            now: Instant::now(),
            buf: Vec::new(),
            wire: Vec::new(),
        };
        t.m.start(t.now);
        t
    }

    /// A machine of `me` that connected and installed its first view `members`.
    fn joined(me: Member, members: &[Member]) -> T {
        Self::joined_with(plain(), me, members)
    }

    fn joined_with(config: Config, me: Member, members: &[Member]) -> T {
        let mut t = T::new(config, me.pid);
        assert_eq!(t.effects(), vec![Effect::Connect]);
        t.m.handle_connected(t.now, Ok(me.nodeid));
        t.m.handle_confchg(t.now, members, &[], &[(me, Reason::Join)]);
        let ev = t.events();
        assert!(
            matches!(&ev[0], Event::View(v) if v.me() == Some(me)),
            "{ev:?}"
        );
        t
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.m.handle_timeout(self.now);
    }

    /// Every effect due now; sends are recorded and left pending (no result fed).
    fn effects(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        while let Some(e) = self.m.poll_effect(self.now, &mut self.buf) {
            let send = matches!(e, Effect::Send(_) | Effect::SendBatch { .. });
            if send {
                self.wire.push(self.buf.clone());
            }
            out.push(e);
            if send {
                break;
            }
        }
        out
    }

    /// Sends everything queued, each accepted, and returns the bytes sent.
    fn flush(&mut self) -> Vec<Vec<u8>> {
        let start = self.wire.len();
        while let Some(e) = self.m.poll_effect(self.now, &mut self.buf) {
            match e {
                Effect::Send(_) | Effect::SendBatch { .. } => {
                    self.wire.push(self.buf.clone());
                    self.m.handle_send_result(self.now, Ok(()));
                }
                other => panic!("unexpected effect {other:?}"),
            }
        }
        self.wire[start..].to_vec()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.m.poll_event()).collect()
    }

    fn deliver(&mut self, from: Member, data: &[u8]) {
        self.m.handle_deliver(self.now, from, data);
    }

    fn confchg(
        &mut self,
        members: &[Member],
        left: &[(Member, Reason)],
        joined: &[(Member, Reason)],
    ) {
        self.m.handle_confchg(self.now, members, left, joined);
    }
}

/// What a sent frame holds: the sender's nonce, the first message's sequence number
/// and the payloads (one for a message sent alone, each message of a batch).
fn sent_messages(frame: &[u8]) -> (u64, u64, Vec<Vec<u8>>) {
    match parse(frame) {
        Frame::Message {
            nonce,
            seq,
            payload,
        } => (nonce, seq, vec![payload.to_vec()]),
        Frame::Batch {
            nonce, first_seq, ..
        } => {
            let payloads = Entries::new(frame).map(|r| frame[r].to_vec()).collect();
            (nonce, first_seq, payloads)
        }
        other => panic!("not an application frame: {other:?}"),
    }
}

fn views(events: &[Event]) -> Vec<super::View> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::View(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

fn payloads(events: &[Event]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(d) => Some(d.data.to_vec()),
            _ => None,
        })
        .collect()
}

#[test]
fn view_ids_only_grow_across_changes_and_reconnects() {
    let me = m(1, 10);
    let mut t = T::joined(me, &[me]);
    let mut ids = vec![t.m.view().unwrap().id()];
    t.confchg(&[me, m(2, 20)], &[], &[(m(2, 20), Reason::Join)]);
    t.confchg(&[me], &[(m(2, 20), Reason::Leave)], &[]);
    ids.extend(views(&t.events()).iter().map(|v| v.id()));
    t.m.handle_daemon_lost(t.now, lost(Operation::Dispatch));
    t.advance(Duration::from_secs(1));
    assert_eq!(t.effects(), vec![Effect::Close, Effect::Connect]);
    t.m.handle_connected(t.now, Ok(1));
    t.confchg(&[me], &[], &[(me, Reason::Join)]);
    ids.extend(views(&t.events()).iter().map(|v| v.id()));
    assert_eq!(ids.len(), 4);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(
        ids[3],
        ViewId {
            incarnation: 2,
            counter: 4
        }
    );
}

#[test]
fn every_member_computes_the_same_leader_whatever_the_list_order() {
    let all = [m(3, 7), m(1, 500), m(2, 1), m(1, 40)];
    let mut leaders = Vec::new();
    for (i, &me) in all.iter().enumerate() {
        let mut list = all.to_vec();
        list.rotate_left(i);
        let t = T::joined(me, &list);
        let v = t.m.view().unwrap();
        leaders.push(v.leader());
        assert_eq!(v.is_leader(), me == m(1, 40), "{me}: is_leader");
    }
    assert!(leaders.iter().all(|l| *l == Some(m(1, 40))), "{leaders:?}");
}

#[test]
fn the_next_lowest_member_leads_when_the_leader_leaves() {
    let me = m(2, 5);
    let mut t = T::joined(me, &[m(1, 9), me, m(3, 1)]);
    assert!(!t.m.view().unwrap().is_leader());
    t.confchg(&[me, m(3, 1)], &[(m(1, 9), Reason::NodeDown)], &[]);
    let v = views(&t.events()).pop().unwrap();
    assert_eq!(v.leader(), Some(me));
    assert!(v.is_leader());
}

#[test]
fn missing_from_a_view_is_an_eviction_and_rejoin_makes_a_new_connection() {
    let me = m(1, 10);
    let mut t = T::joined(me, &[me, m(2, 20)]);
    t.confchg(&[m(2, 20)], &[], &[]);
    let ev = t.events();
    assert!(
        matches!(&ev[..], [Event::Evicted { view }] if !view.contains(me)),
        "{ev:?}"
    );
    assert_eq!(t.effects(), vec![Effect::Close, Effect::Connect]);
    t.m.handle_connected(t.now, Ok(1));
    t.confchg(&[me, m(2, 20)], &[], &[(me, Reason::Join)]);
    let ev = t.events();
    assert!(
        ev.iter().any(
            |e| matches!(e, Event::Reconnected { incarnation: 2, view } if view.me() == Some(me))
        ),
        "{ev:?}"
    );
}

#[test]
fn listed_as_left_without_leaving_is_an_eviction_and_stop_fails_the_queue() {
    let me = m(1, 10);
    let config = Config {
        on_eviction: OnEviction::Stop,
        ..plain()
    };
    let mut t = T::joined_with(config, me, &[me]);
    let id = t.m.send(b"x".to_vec(), true).unwrap();
    t.confchg(&[me], &[(me, Reason::ProcDown)], &[]);
    let ev = t.events();
    assert!(matches!(ev[0], Event::Evicted { .. }), "{ev:?}");
    assert!(ev.contains(&Event::NotSent {
        id,
        error: GroupError::Closed
    }));
    assert_eq!(ev.last(), Some(&Event::Stopped(StopReason::Evicted)));
    assert_eq!(t.effects(), vec![Effect::Close]);
    assert!(t.m.is_ended());
    assert_eq!(t.m.send(vec![], false), Err(GroupError::Closed));
}

#[test]
fn an_empty_member_list_evicts_and_duplicates_count_once() {
    let me = m(1, 10);
    let mut t = T::joined(me, &[me, me, m(2, 3), m(2, 3)]);
    assert_eq!(t.m.view().unwrap().members(), &[me, m(2, 3)]);
    t.confchg(&[], &[], &[]);
    let ev = t.events();
    assert!(
        matches!(&ev[..], [Event::Evicted { view }] if view.is_empty() && view.leader().is_none())
    );
}

#[test]
fn the_own_pid_on_two_nodes_is_told_apart_by_node_id() {
    // The test harness runs members on several nodes from one process: same pid.
    let me = m(2, 77);
    let mut t = T::joined(me, &[m(1, 77), me, m(3, 77)]);
    let v = t.m.view().unwrap().clone();
    assert_eq!(v.me(), Some(me));
    assert_eq!(v.leader(), Some(m(1, 77)));
    assert!(!v.is_leader());
    // A message from node 1's member, even with this process's header, is not own.
    let wire = {
        t.m.send(b"mine".to_vec(), true).unwrap();
        t.flush().pop().unwrap()
    };
    t.deliver(m(1, 77), &wire);
    let ev = t.events();
    assert!(
        matches!(&ev[..], [Event::Message(d)] if !d.own && d.from == m(1, 77)),
        "{ev:?}"
    );
    t.deliver(me, &wire);
    let ev = t.events();
    assert!(matches!(&ev[1], Event::Confirmed { .. }), "{ev:?}");
}

#[test]
fn a_daemon_that_reports_another_pid_is_matched_by_the_join() {
    // getpid() says 1; the daemon lists 4242. (corosync 3.1.7 lists the pid libcpg
    // sends at join, getpid() in the client's pid namespace, so this is defensive.)
    let mut t = T::new(plain(), 1);
    t.effects();
    t.m.handle_connected(t.now, Ok(3));
    t.confchg(&[m(1, 1), m(3, 4242)], &[], &[(m(3, 4242), Reason::Join)]);
    let v = views(&t.events()).pop().unwrap();
    assert_eq!(v.me(), Some(m(3, 4242)));
    assert_eq!(
        v.leader(),
        Some(m(1, 1)),
        "node 1's pid 1 is not this process"
    );
    assert!(!v.is_leader());
}

#[test]
fn an_unknown_identity_is_learned_from_the_own_nonce() {
    // Two processes of node 3 in the join's list: ambiguous until a message returns.
    let mut t = T::new(plain(), 1);
    t.effects();
    t.m.handle_connected(t.now, Ok(3));
    let (a, b) = (m(3, 100), m(3, 200));
    t.confchg(&[a, b], &[], &[(a, Reason::Join), (b, Reason::Join)]);
    assert_eq!(t.m.me(), None);
    t.events();
    let id = t.m.send(b"hi".to_vec(), true).unwrap();
    let wire = t.flush().pop().unwrap();
    t.deliver(b, &wire);
    assert_eq!(t.m.me(), Some(b));
    let ev = t.events();
    assert!(
        matches!(ev[1], Event::Confirmed { id: got, .. } if got == id),
        "{ev:?}"
    );
}

#[test]
fn the_queue_keeps_order_one_send_at_a_time_and_refuses_above_its_bound() {
    let me = m(1, 10);
    let config = Config {
        queue_limit: 3,
        ..plain()
    };
    let mut t = T::joined_with(config, me, &[me]);
    for i in 0..3u8 {
        assert_eq!(t.m.send(vec![i], false), Ok(SendId(u64::from(i))));
    }
    assert_eq!(
        t.m.send(vec![9], false),
        Err(GroupError::QueueFull { limit: 3 })
    );
    assert_eq!(t.m.stats().queued, 3);
    // One in flight: no second send before the first's result.
    assert_eq!(t.effects(), vec![Effect::Send(SendId(0))]);
    assert_eq!(t.effects(), vec![]);
    assert_eq!(
        t.m.send(vec![9], false),
        Err(GroupError::QueueFull { limit: 3 })
    );
    t.m.handle_send_result(t.now, Ok(()));
    assert_eq!(t.m.send(vec![3], false), Ok(SendId(3)));
    let sent = t.flush();
    let bodies: Vec<u8> = t.wire.iter().map(|w| w[HEADER_LEN]).collect();
    assert_eq!(bodies, vec![0, 1, 2, 3]);
    assert_eq!(sent.len(), 3);
    // Sequence numbers 0.. in the header, little-endian.
    let seqs: Vec<u64> = t
        .wire
        .iter()
        .map(|w| u64::from_le_bytes(w[16..24].try_into().unwrap()))
        .collect();
    assert_eq!(seqs, vec![0, 1, 2, 3]);
    assert_eq!(&t.wire[0][..5], b"CPGl\x01");
    let s = t.m.stats();
    assert_eq!((s.queued, s.sent, s.pushbacks), (0, 4, 0));
}

#[test]
fn back_pressure_waits_without_blocking_and_keeps_the_order() {
    let me = m(1, 10);
    let mut t = T::joined_with(unbatched(), me, &[me]);
    t.m.send(b"a".to_vec(), false).unwrap();
    t.m.send(b"b".to_vec(), false).unwrap();
    assert_eq!(t.effects(), vec![Effect::Send(SendId(0))]);
    t.m.handle_send_result(t.now, Err(try_again()));
    // Nothing to do until the pause is over; the timeout says when.
    assert_eq!(t.effects(), vec![]);
    let due = t.m.poll_timeout().expect("a retry is scheduled");
    assert!(due > t.now);
    // Events are still handled meanwhile.
    t.confchg(&[me, m(2, 1)], &[], &[(m(2, 1), Reason::Join)]);
    assert_eq!(views(&t.events()).len(), 1);
    t.advance(due - t.now);
    assert_eq!(t.effects(), vec![Effect::Send(SendId(0))]);
    t.m.handle_send_result(t.now, Err(try_again()));
    let due2 = t.m.poll_timeout().unwrap();
    t.advance(due2 - t.now);
    t.effects();
    t.m.handle_send_result(t.now, Ok(()));
    t.flush();
    let bodies: Vec<&[u8]> = t.wire.iter().map(|w| &w[HEADER_LEN..]).collect();
    assert_eq!(bodies, vec![&b"a"[..], b"a", b"a", b"b"]);
    // The retried message kept its sequence number.
    let seqs: Vec<u64> = t
        .wire
        .iter()
        .map(|w| u64::from_le_bytes(w[16..24].try_into().unwrap()))
        .collect();
    assert_eq!(seqs, vec![0, 0, 0, 1]);
    let s = t.m.stats();
    assert_eq!((s.sent, s.pushbacks, s.queued), (2, 2, 0));
}

#[test]
fn the_back_off_doubles_up_to_its_maximum_and_resets_after_a_send() {
    let me = m(1, 10);
    let mut t = T::joined_with(unbatched(), me, &[me]);
    t.m.send(b"a".to_vec(), false).unwrap();
    t.m.send(b"b".to_vec(), false).unwrap();
    let mut pauses = Vec::new();
    for _ in 0..12 {
        t.effects();
        t.m.handle_send_result(t.now, Err(try_again()));
        let due = t.m.poll_timeout().unwrap();
        pauses.push(due - t.now);
        t.advance(due - t.now);
    }
    assert_eq!(pauses[0], Duration::from_micros(100));
    assert_eq!(pauses[1], Duration::from_micros(200));
    assert_eq!(*pauses.last().unwrap(), Duration::from_millis(50));
    t.effects();
    t.m.handle_send_result(t.now, Ok(()));
    t.effects();
    t.m.handle_send_result(t.now, Err(try_again()));
    assert_eq!(
        t.m.poll_timeout().unwrap() - t.now,
        Duration::from_micros(100)
    );
}

#[test]
fn a_confirmed_send_resolves_once_at_its_own_delivery_with_its_position() {
    let me = m(1, 10);
    let other = m(2, 20);
    let mut t = T::joined(me, &[me, other]);
    let a = t.m.send(b"a".to_vec(), true).unwrap();
    let _b = t.m.send(b"b".to_vec(), false).unwrap();
    let c = t.m.send(b"c".to_vec(), true).unwrap();
    let wire = t.flush();
    assert!(t.events().is_empty(), "nothing confirmed before delivery");
    // Another member's message first, then ours in order.
    t.deliver(other, b"CPGl\x01\0\0\0xxxxxxxxyyyyyyyyhello");
    t.deliver(me, &wire[0]);
    t.deliver(me, &wire[1]);
    t.deliver(me, &wire[2]);
    // A replay of our first message (same bytes) must not confirm anything again.
    t.deliver(me, &wire[0]);
    let ev = t.events();
    let confirmed: Vec<(SendId, u64)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Confirmed { id, position } => Some((*id, position.index)),
            _ => None,
        })
        .collect();
    assert_eq!(confirmed, vec![(a, 1), (c, 3)]);
    assert_eq!(
        payloads(&ev),
        vec![
            b"hello".to_vec(),
            b"a".to_vec(),
            b"b".to_vec(),
            b"c".to_vec(),
            b"a".to_vec()
        ]
    );
    // The confirmation follows its message.
    let i = ev
        .iter()
        .position(|e| matches!(e, Event::Confirmed { .. }))
        .unwrap();
    assert!(matches!(&ev[i - 1], Event::Message(d) if d.own && d.data == b"a"[..]));
    assert_eq!(t.m.stats().confirmed, 2);
}

#[test]
fn a_payload_cannot_claim_to_be_ours() {
    let me = m(1, 10);
    let other = m(2, 20);
    let mut t = T::joined(me, &[me, other]);
    t.m.send(b"a".to_vec(), true).unwrap();
    let wire = t.flush().pop().unwrap();
    // Another member replays our exact bytes (nonce and sequence number included).
    t.deliver(other, &wire);
    let ev = t.events();
    assert!(
        matches!(&ev[..], [Event::Message(d)] if !d.own && d.from == other),
        "{ev:?}"
    );
}

/// The machine's per-peer paths (issue 23: the group layer's review) hold nothing per
/// delivery: a peer on this process's own node that copies this process's header
/// (its nonce, with a sequence number past every pending send), replays its messages
/// or sends garbage, 10,000 times each, neither resolves nor fails a pending
/// confirmation (taken for this process's, the copy would fail them all as
/// `Unknown`); the confirmations still resolve at the own deliveries, once each. The
/// same with this process's identity learned from its own nonce.
#[test]
fn a_peer_copying_our_header_cannot_resolve_or_fail_our_confirmations() {
    for known in [true, false] {
        let me = m(3, 100);
        let other = m(3, 200);
        let mut t = if known {
            T::joined(me, &[me, other])
        } else {
            // Both processes of node 3 joined at once: ambiguous until a message of
            // this process returns.
            let mut t = T::new(plain(), 1);
            t.effects();
            t.m.handle_connected(t.now, Ok(3));
            t.confchg(
                &[me, other],
                &[],
                &[(me, Reason::Join), (other, Reason::Join)],
            );
            t.events();
            t
        };
        let ids: Vec<SendId> = (0..3u8).map(|i| t.m.send(vec![i], true).unwrap()).collect();
        let wire = t.flush();
        if !known {
            t.deliver(me, &wire[0]);
            assert_eq!(t.m.me(), Some(me));
        }
        let mut forged = wire[0].clone();
        forged[16..24].copy_from_slice(&100u64.to_le_bytes());
        for _ in 0..10_000 {
            t.deliver(other, &forged);
            t.deliver(other, &wire[2]);
            t.deliver(other, b"garbage");
        }
        let mut ev = t.events();
        let resolved = |ev: &[Event]| -> Vec<SendId> {
            ev.iter()
                .filter_map(|e| match e {
                    Event::Confirmed { id, .. } => Some(*id),
                    Event::NotSent { id, .. } => panic!("{id:?} failed by a peer"),
                    _ => None,
                })
                .collect()
        };
        let early = resolved(&ev);
        assert_eq!(early, if known { vec![] } else { vec![ids[0]] });
        assert_eq!(t.m.stats().delivered, 30_000 + u64::from(!known));
        for w in &wire[usize::from(!known)..] {
            t.deliver(me, w);
        }
        ev = t.events();
        let mut all = early;
        all.extend(resolved(&ev));
        assert_eq!(all, ids, "identity known at the join: {known}");
        assert_eq!(t.m.stats().not_sent, 0);
    }
}

#[test]
fn positions_count_per_view_and_malformed_messages_count_too() {
    let me = m(1, 10);
    let other = m(2, 20);
    let mut t = T::joined(me, &[me, other]);
    t.deliver(other, b"no header");
    t.deliver(other, b"CPGl\x01\0\0\0nnnnnnnnssssssss1");
    t.confchg(&[me], &[(other, Reason::Leave)], &[]);
    t.deliver(me, b"CPGl\x01\0\0\0nnnnnnnnssssssss2");
    let ev = t.events();
    assert_eq!(
        ev[0],
        Event::Malformed {
            from: other,
            len: 9
        }
    );
    let positions: Vec<(u64, u64, u64)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Message(d) => {
                Some((d.position.view.counter, d.position.index, d.position.total))
            }
            _ => None,
        })
        .collect();
    assert_eq!(positions, vec![(1, 1, 1), (2, 0, 2)]);
    assert_eq!(t.m.stats().malformed, 1);
}

#[test]
fn a_lost_daemon_reconnects_with_back_off_and_keeps_the_queue() {
    let me = m(1, 10);
    let mut t = T::joined(me, &[me, m(2, 20)]);
    let sent = t.m.send(b"sent".to_vec(), true).unwrap();
    t.flush();
    let queued = t.m.send(b"queued".to_vec(), true).unwrap();
    t.m.handle_daemon_lost(t.now, lost(Operation::Dispatch));
    let ev = t.events();
    assert!(matches!(ev[0], Event::Disconnected { .. }), "{ev:?}");
    assert_eq!(
        ev[1],
        Event::NotSent {
            id: sent,
            error: GroupError::Unknown
        },
        "accepted but never delivered back: outcome unknown"
    );
    assert_eq!(ev.len(), 2, "the queued message is kept");
    assert!(t.m.view().is_none());
    assert_eq!(t.effects(), vec![Effect::Close]);
    // Attempts 100 ms, 200 ms, 400 ms apart while the daemon is down.
    let mut pauses = Vec::new();
    for _ in 0..3 {
        let due = t.m.poll_timeout().unwrap();
        pauses.push(due - t.now);
        t.advance(due - t.now);
        assert_eq!(t.effects(), vec![Effect::Connect]);
        t.m.handle_connected(t.now, Err(lost(Operation::Initialize)));
        assert_eq!(t.effects(), vec![Effect::Close]);
    }
    assert_eq!(pauses, [100, 200, 400].map(Duration::from_millis).to_vec());
    let due = t.m.poll_timeout().unwrap();
    t.advance(due - t.now);
    assert_eq!(t.effects(), vec![Effect::Connect]);
    t.m.handle_connected(t.now, Ok(1));
    assert_eq!(t.effects(), vec![], "nothing is sent before the first view");
    t.confchg(&[me, m(2, 20)], &[], &[(me, Reason::Join)]);
    let ev = t.events();
    assert!(matches!(&ev[0], Event::View(v) if v.id().incarnation == 2));
    assert!(
        matches!(&ev[1], Event::Reconnected { incarnation: 2, view } if view.members() == [me, m(2, 20)])
    );
    // The kept message goes out with the new connection's nonce, sequence 0.
    let old_nonce = t.wire[0][8..16].to_vec();
    let wire = t.flush().pop().unwrap();
    assert_eq!(&wire[HEADER_LEN..], b"queued");
    assert_ne!(wire[8..16].to_vec(), old_nonce);
    assert_eq!(u64::from_le_bytes(wire[16..24].try_into().unwrap()), 0);
    t.deliver(me, &wire);
    let ev = t.events();
    assert!(matches!(ev[1], Event::Confirmed { id, .. } if id == queued));
    assert_eq!(t.m.stats().reconnects, 1);
}

/// Own messages are recognized by this process's identity and by the connection's
/// nonce: a message this process sent on its previous connection, delivered after the
/// reconnect, carries the same member and the same sequence number as the new
/// connection's first send, and is neither own nor that send's confirmation.
#[test]
fn a_message_of_the_previous_connection_does_not_confirm_the_new_ones() {
    let me = m(1, 10);
    let mut t = T::joined(me, &[me, m(2, 20)]);
    let before = t.m.send(b"before".to_vec(), true).unwrap();
    let old = t.flush().pop().unwrap();
    t.m.handle_daemon_lost(t.now, lost(Operation::Dispatch));
    let ev = t.events();
    assert!(ev.contains(&Event::NotSent {
        id: before,
        error: GroupError::Unknown
    }));
    assert_eq!(t.effects(), vec![Effect::Close]);
    let due = t.m.poll_timeout().unwrap();
    t.advance(due - t.now);
    assert_eq!(t.effects(), vec![Effect::Connect]);
    t.m.handle_connected(t.now, Ok(1));
    t.confchg(&[me, m(2, 20)], &[], &[(me, Reason::Join)]);
    t.events();
    let after = t.m.send(b"after".to_vec(), true).unwrap();
    let new = t.flush().pop().unwrap();
    assert_eq!(old[16..24], new[16..24], "both are sequence number 0");
    assert_ne!(old[8..16], new[8..16], "each connection has its nonce");
    t.deliver(me, &old);
    let ev = t.events();
    assert!(
        matches!(&ev[..], [Event::Message(d)] if !d.own && d.data == b"before"[..]),
        "{ev:?}"
    );
    t.deliver(me, &new);
    let ev = t.events();
    assert!(
        matches!(
            &ev[..],
            [Event::Message(d), Event::Confirmed { id, position }]
                if d.own && *id == after && position.index == 1
        ),
        "{ev:?}"
    );
}

/// Evicted with [`OnEviction::Rejoin`]: the messages the daemon had accepted on the
/// old connection resolve [`GroupError::Unknown`], the queue waits and goes out on the
/// new connection (a new nonce, sequence numbers from 0) once it has its first view,
/// and confirms there; the old connection's copy delivered late confirms nothing.
#[test]
fn a_rejoin_after_eviction_resolves_the_old_sends_and_sends_the_queue_anew() {
    let me = m(1, 10);
    let other = m(2, 20);
    let mut t = T::joined(me, &[me, other]);
    let accepted = t.m.send(b"accepted".to_vec(), true).unwrap();
    let old = t.flush().pop().unwrap();
    let queued = t.m.send(b"queued".to_vec(), true).unwrap();
    t.confchg(&[other], &[], &[]);
    let ev = t.events();
    assert!(matches!(ev[0], Event::Evicted { .. }), "{ev:?}");
    assert_eq!(
        ev[1..],
        [Event::NotSent {
            id: accepted,
            error: GroupError::Unknown
        }],
        "the queued message is kept"
    );
    assert!(t.m.view().is_none());
    assert_eq!(t.effects(), vec![Effect::Close, Effect::Connect]);
    t.m.send(b"while rejoining".to_vec(), false).unwrap();
    t.m.handle_connected(t.now, Ok(1));
    assert_eq!(t.effects(), vec![], "nothing is sent before the first view");
    t.confchg(&[me, other], &[], &[(me, Reason::Join)]);
    let ev = t.events();
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Event::Reconnected { incarnation: 2, view } if view.me() == Some(me)
        )),
        "{ev:?}"
    );
    let wire = t.flush();
    assert_eq!(
        payloads_of(&wire),
        vec![b"queued".to_vec(), b"while rejoining".to_vec()]
    );
    assert_ne!(wire[0][8..16], old[8..16]);
    assert_eq!(u64::from_le_bytes(wire[0][16..24].try_into().unwrap()), 0);
    t.deliver(me, &old);
    for w in &wire {
        t.deliver(me, w);
    }
    let confirmed: Vec<SendId> = t
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Confirmed { id, .. } => Some(*id),
            Event::NotSent { id, .. } => panic!("{id:?} not sent"),
            _ => None,
        })
        .collect();
    assert_eq!(confirmed, vec![queued]);
}

/// The payloads of messages as they went on the wire.
fn payloads_of(wire: &[Vec<u8>]) -> Vec<Vec<u8>> {
    wire.iter().map(|w| w[HEADER_LEN..].to_vec()).collect()
}

#[test]
fn a_send_that_finds_the_daemon_gone_stays_queued() {
    let me = m(1, 10);
    let mut t = T::joined(me, &[me]);
    let id = t.m.send(b"x".to_vec(), true).unwrap();
    assert_eq!(t.effects(), vec![Effect::Send(id)]);
    t.m.handle_send_result(t.now, Err(lost(Operation::Send)));
    let ev = t.events();
    assert!(matches!(&ev[..], [Event::Disconnected { .. }]), "{ev:?}");
    assert_eq!(t.m.stats().queued, 1);
}

#[test]
fn the_drop_policy_reports_queued_messages_as_not_sent() {
    let me = m(1, 10);
    let config = Config {
        on_disconnect: OnDisconnect::Drop,
        ..plain()
    };
    let mut t = T::joined_with(config, me, &[me]);
    let a = t.m.send(b"a".to_vec(), false).unwrap();
    let b = t.m.send(b"b".to_vec(), true).unwrap();
    t.m.handle_daemon_lost(t.now, lost(Operation::Dispatch));
    let ev = t.events();
    assert_eq!(
        &ev[1..],
        &[
            Event::NotSent {
                id: a,
                error: GroupError::Disconnected
            },
            Event::NotSent {
                id: b,
                error: GroupError::Disconnected
            }
        ]
    );
    assert_eq!(t.m.stats().queued, 0);
    assert_eq!(
        t.m.send(b"c".to_vec(), true),
        Err(GroupError::Disconnected),
        "refused at once while reconnecting"
    );
}

#[test]
fn reconnecting_gives_up_after_its_budget() {
    let me = m(1, 10);
    let mut config = plain();
    config.reconnect.timeout = Duration::from_secs(1);
    let mut t = T::joined_with(config, me, &[me]);
    let id = t.m.send(b"a".to_vec(), true).unwrap();
    t.m.handle_daemon_lost(t.now, lost(Operation::Dispatch));
    t.events();
    let mut attempts = 0;
    while let Some(due) = t.m.poll_timeout() {
        t.advance(due - t.now);
        t.effects();
        attempts += 1;
        t.m.handle_connected(t.now, Err(lost(Operation::Initialize)));
    }
    assert_eq!(
        attempts, 3,
        "100 + 200 + 400 ms fit in 1 s, the next pause does not"
    );
    let ev = t.events();
    assert_eq!(
        ev,
        vec![
            Event::NotSent {
                id,
                error: GroupError::Closed
            },
            Event::Stopped(StopReason::GaveUp(lost(Operation::Initialize)))
        ]
    );
    assert!(t.m.is_ended());
}

#[test]
fn leave_sends_the_queue_first_and_the_own_leave_is_the_last_event() {
    let me = m(1, 10);
    let other = m(2, 20);
    let mut t = T::joined(me, &[me, other]);
    let a = t.m.send(b"a".to_vec(), true).unwrap();
    t.m.leave(t.now);
    assert_eq!(t.m.send(b"late".to_vec(), false), Err(GroupError::Closed));
    assert_eq!(t.effects(), vec![Effect::Send(a)]);
    t.m.handle_send_result(t.now, Ok(()));
    assert_eq!(t.effects(), vec![Effect::Leave]);
    t.m.handle_leave_result(t.now, Ok(()));
    let wire = t.wire[0].clone();
    t.deliver(me, &wire);
    // A change of others while leaving is still a view.
    t.confchg(&[me], &[(other, Reason::ProcDown)], &[]);
    t.confchg(&[], &[(me, Reason::Leave)], &[]);
    let ev = t.events();
    assert!(
        matches!(ev[1], Event::Confirmed { id, .. } if id == a),
        "{ev:?}"
    );
    assert!(matches!(ev[2], Event::View(_)), "{ev:?}");
    assert_eq!(ev.last(), Some(&Event::Left));
    assert_eq!(t.effects(), vec![Effect::Close]);
    // Nothing after the end.
    t.deliver(other, &wire);
    t.confchg(&[other], &[], &[]);
    assert!(t.events().is_empty());
}

#[test]
fn leave_while_disconnected_ends_at_once() {
    let me = m(1, 10);
    let mut t = T::joined(me, &[me]);
    let id = t.m.send(b"a".to_vec(), false).unwrap();
    t.m.handle_daemon_lost(t.now, lost(Operation::Dispatch));
    t.events();
    t.m.leave(t.now);
    assert_eq!(
        t.events(),
        vec![
            Event::NotSent {
                id,
                error: GroupError::Left
            },
            Event::Left
        ]
    );
    assert_eq!(t.m.poll_timeout(), None, "no reconnect after leaving");
}

#[test]
fn a_view_settles_when_its_ring_is_known() {
    let me = m(1, 10);
    let mut t = T::new(plain(), 10);
    t.effects();
    t.m.handle_connected(t.now, Ok(1));
    t.confchg(&[me], &[], &[(me, Reason::Join)]);
    let ring = |seq| RingId { nodeid: 1, seq };
    let ev = t.events();
    assert_eq!(ev.len(), 1, "not settled before any totem change: {ev:?}");
    let first = views(&ev)[0].id();
    t.m.handle_totem(t.now, ring(4), &[1, 2]);
    assert_eq!(
        t.events(),
        vec![Event::Settled {
            view: first,
            ring: ring(4)
        }]
    );
    // A process change on a known ring settles at once.
    t.confchg(&[me, m(2, 5)], &[], &[(m(2, 5), Reason::Join)]);
    let ev = t.events();
    assert!(
        matches!(ev[1], Event::Settled { ring: r, .. } if r == ring(4)),
        "{ev:?}"
    );
    // A node change waits for the totem change that follows it.
    t.confchg(&[me], &[(m(2, 5), Reason::NodeDown)], &[]);
    let ev = t.events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    let v = views(&ev)[0].clone();
    assert_eq!(v.ring(), Some(ring(4)));
    t.m.handle_totem(t.now, ring(8), &[1]);
    assert_eq!(
        t.events(),
        vec![Event::Settled {
            view: v.id(),
            ring: ring(8)
        }]
    );
}

/// A node that joins (`NodeUp`) is a node change as much as one that goes: the view it
/// makes waits for the totem change that follows, and settles on the new ring, not on
/// the ring before the node came.
#[test]
fn a_node_coming_up_waits_for_the_totem_change_before_the_view_settles() {
    let me = m(1, 10);
    let ring = |seq| RingId { nodeid: 1, seq };
    let mut t = T::joined(me, &[me]);
    t.m.handle_totem(t.now, ring(4), &[1]);
    assert!(matches!(&t.events()[..], [Event::Settled { .. }]));
    // Node 2 comes up with a member of the group already in it.
    t.confchg(&[me, m(2, 5)], &[], &[(m(2, 5), Reason::NodeUp)]);
    let ev = t.events();
    assert!(
        matches!(&ev[..], [Event::View(v)] if v.ring() == Some(ring(4))),
        "not settled on the ring before the node came: {ev:?}"
    );
    let v = views(&ev)[0].id();
    t.m.handle_totem(t.now, ring(8), &[1, 2]);
    assert_eq!(
        t.events(),
        vec![Event::Settled {
            view: v,
            ring: ring(8)
        }]
    );
    // With processes joining beside it in the same change, still a node change.
    t.confchg(
        &[me, m(2, 5), m(3, 6), m(3, 7)],
        &[],
        &[(m(3, 6), Reason::NodeUp), (m(3, 7), Reason::Join)],
    );
    let ev = t.events();
    assert!(matches!(&ev[..], [Event::View(_)]), "{ev:?}");
    t.m.handle_totem(t.now, ring(12), &[1, 2, 3]);
    assert!(
        matches!(&t.events()[..], [Event::Settled { ring: r, .. }] if *r == ring(12)),
        "settled on the new ring"
    );
}

#[test]
fn events_before_the_join_or_of_an_old_connection_are_ignored() {
    let me = m(1, 10);
    let mut t = T::new(plain(), 10);
    t.confchg(&[me], &[], &[]);
    t.deliver(me, b"x");
    t.m.handle_totem(t.now, RingId { nodeid: 1, seq: 1 }, &[1]);
    assert!(t.events().is_empty());
    assert_eq!(t.m.view(), None);
    // A connect result that nobody asked for.
    let mut t = T::joined(me, &[me]);
    t.m.handle_connected(t.now, Ok(2));
    assert_eq!(t.m.incarnation(), 1);
    // A send result without a send.
    t.m.handle_send_result(t.now, Ok(()));
    assert_eq!(t.m.stats().sent, 0);
}

#[test]
fn a_refused_send_is_reported_and_the_queue_goes_on() {
    let me = m(1, 10);
    let mut t = T::joined(me, &[me]);
    let a = t.m.send(vec![0; 4], true).unwrap();
    let b = t.m.send(vec![1; 4], false).unwrap();
    assert_eq!(t.effects(), vec![Effect::Send(a)]);
    let refused = cs(Operation::Send, CsError::TooBig);
    t.m.handle_send_result(t.now, Err(refused.clone()));
    assert_eq!(
        t.events(),
        vec![Event::NotSent {
            id: a,
            error: GroupError::Rejected(refused)
        }]
    );
    assert_eq!(t.effects(), vec![Effect::Send(b)]);
}

#[test]
fn a_fatal_connect_error_stops() {
    let mut t = T::new(plain(), 10);
    t.effects();
    let denied = cs(Operation::Initialize, CsError::Access);
    t.m.handle_connected(t.now, Err(denied.clone()));
    assert_eq!(t.events(), vec![Event::Stopped(StopReason::Failed(denied))]);
    assert!(t.m.is_ended());
}

#[test]
fn the_public_types_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send::<Machine>();
    send_sync::<super::Group>();
    send::<super::Receipt>();
    send_sync::<Event>();
    #[cfg(feature = "tokio")]
    {
        send_sync::<super::AsyncGroup>();
        send_sync::<super::Confirmation>();
    }
}

#[test]
fn a_failure_that_a_new_connection_would_not_fix_stops() {
    let me = m(1, 10);
    let mut t = T::joined(me, &[me]);
    let id = t.m.send(b"a".to_vec(), true).unwrap();
    let refused = Error::ReentrantDispatch;
    t.m.handle_failure(t.now, refused.clone());
    assert_eq!(
        t.events(),
        vec![
            Event::NotSent {
                id,
                error: GroupError::Closed
            },
            Event::Stopped(StopReason::Failed(refused))
        ]
    );
    assert_eq!(t.effects(), vec![Effect::Close]);
    assert_eq!(t.m.poll_timeout(), None, "no reconnect");
}

/// A driver that stops for good (its group was dropped) learns from the machine what
/// the daemon had of each message: one accepted (and one handed out whose result never
/// came) may have been delivered, `Unknown`; one still queued was never sent, `Closed`;
/// one already confirmed stays confirmed. Whoever retries on `Closed` duplicates
/// nothing.
#[test]
fn a_stop_reports_accepted_messages_unknown_and_queued_ones_closed() {
    let me = m(1, 10);
    let mut t = T::joined(me, &[me]);
    let ids: Vec<SendId> = ["a", "b", "c", "d"]
        .iter()
        .map(|p| t.m.send(p.as_bytes().to_vec(), true).unwrap())
        .collect();
    let (a, b, c, d) = (ids[0], ids[1], ids[2], ids[3]);
    assert_eq!(t.effects(), vec![Effect::Send(a)]);
    t.m.handle_send_result(t.now, Ok(()));
    assert_eq!(t.effects(), vec![Effect::Send(b)]);
    t.m.handle_send_result(t.now, Ok(()));
    let own_a = t.wire[0].clone();
    t.deliver(me, &own_a);
    assert!(t
        .events()
        .iter()
        .any(|e| matches!(e, Event::Confirmed { id, .. } if *id == a)));
    // `c` is handed out; the driver stops before it reports the result.
    assert_eq!(t.effects(), vec![Effect::Send(c)]);
    t.m.handle_failure(t.now, lost(Operation::Finalize));
    let events = t.events();
    let outcome = |id: SendId| {
        let found: Vec<&GroupError> = events
            .iter()
            .filter_map(|e| match e {
                Event::NotSent { id: i, error } if *i == id => Some(error),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "{id:?}: {events:?}");
        found[0].clone()
    };
    assert_eq!(outcome(b), GroupError::Unknown);
    assert_eq!(outcome(c), GroupError::Unknown);
    assert_eq!(outcome(d), GroupError::Closed);
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::NotSent { id, .. } if *id == a)));
    assert_eq!(
        events.last(),
        Some(&Event::Stopped(StopReason::Failed(lost(
            Operation::Finalize
        ))))
    );
    assert_eq!(t.effects(), vec![Effect::Close]);
    // A leave result that comes after the stop adds nothing.
    t.m.handle_leave_result(t.now, Err(Error::ReentrantDispatch));
    assert_eq!(t.events(), vec![]);
}

/// A small deterministic pseudo-random generator (xorshift64*), for the soak test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `percent` %.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Random event sequences (sends, back-pressure, refused sends, lost daemons, failed
/// reconnects, membership changes, other members' messages, leave), checking after
/// every step what applications rely on:
/// - view ids strictly grow;
/// - at most one send is in flight, and the wire carries each connection's sequence
///   numbers in order, the queue's messages in the order queued;
/// - every message gets at most one outcome, a confirmed one only once it came back;
/// - at the end every confirmed send has exactly one outcome, and `Left` is last.
#[test]
fn random_sequences_keep_the_invariants() {
    let mut total = Stats::default();
    for seed in 1..=200u64 {
        let s = soak(seed);
        total.sent += s.sent;
        total.pushbacks += s.pushbacks;
        total.confirmed += s.confirmed;
        total.not_sent += s.not_sent;
        total.reconnects += s.reconnects;
        total.delivered += s.delivered;
        total.batches_sent += s.batches_sent;
        total.batches_delivered += s.batches_delivered;
    }
    // The runs reached every path they are meant to check.
    assert!(
        total.sent > 1000
            && total.pushbacks > 100
            && total.confirmed > 100
            && total.not_sent > 100
            && total.reconnects > 50
            && total.batches_sent > 50
            && total.batches_delivered > 50,
        "{total:?}"
    );
    eprintln!("200 random runs: {total:?}");
}

fn soak(seed: u64) -> Stats {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let me = m(2, 50);
    let others = [m(1, 7), m(3, 9), m(2, 60)];
    let config = Config {
        queue_limit: 8,
        ..Config::default()
    };
    let mut t = T::new(config, me.pid);
    let mut confirm_ids = std::collections::BTreeSet::new();
    let mut all_ids = Vec::new();
    // Outcomes seen per id: Confirmed or NotSent.
    let mut outcomes: std::collections::HashMap<SendId, u32> = Default::default();
    let mut confirmed_order = Vec::new();
    // Accepted by the "daemon", not yet delivered back: (incarnation, bytes).
    let mut pending: std::collections::VecDeque<Vec<u8>> = Default::default();
    let mut last_view: Option<ViewId> = None;
    // Per incarnation, the sequence numbers on the wire, and payload ids in order.
    let mut wire_seq: Option<(u64, u64)> = None;
    let mut wire_ids: Vec<u64> = Vec::new();
    let mut members = vec![me];
    let mut ended = false;
    let mut leaving = false;

    let check = |events: &[Event],
                 outcomes: &mut std::collections::HashMap<SendId, u32>,
                 confirmed_order: &mut Vec<SendId>,
                 last_view: &mut Option<ViewId>,
                 ended: &mut bool| {
        for e in events {
            assert!(!*ended, "seed {seed}: event after the end: {e:?}");
            match e {
                Event::View(v) => {
                    assert!(Some(v.id()) > *last_view, "seed {seed}: view id went back");
                    *last_view = Some(v.id());
                    assert_eq!(v.me(), Some(me), "seed {seed}: identity");
                }
                Event::Confirmed { id, .. } => {
                    *outcomes.entry(*id).or_default() += 1;
                    confirmed_order.push(*id);
                }
                Event::NotSent { id, .. } => *outcomes.entry(*id).or_default() += 1,
                Event::Left | Event::Stopped(_) => *ended = true,
                _ => {}
            }
        }
        assert!(
            outcomes.values().all(|&n| n == 1),
            "seed {seed}: an outcome twice: {outcomes:?}"
        );
        assert!(
            confirmed_order.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: confirmations out of order"
        );
    };

    for _step in 0..400 {
        if ended {
            break;
        }
        let roll = rng.next() % 100;
        if roll < 25 && !leaving {
            let confirm = rng.chance(60);
            if let Ok(id) = t.m.send(vec![id_byte(all_ids.len())], confirm) {
                all_ids.push(id);
                if confirm {
                    confirm_ids.insert(id);
                }
            }
        } else if roll < 55 {
            // Carry out the effects.
            while let Some(effect) = t.m.poll_effect(t.now, &mut t.buf) {
                match effect {
                    Effect::Connect => {
                        if rng.chance(60) {
                            t.m.handle_connected(t.now, Ok(me.nodeid));
                            members = vec![me, others[0]];
                            t.m.handle_confchg(t.now, &members, &[], &[(me, Reason::Join)]);
                            wire_seq = None;
                        } else {
                            t.m.handle_connected(t.now, Err(lost(Operation::Initialize)));
                        }
                    }
                    Effect::SendControl => {
                        t.m.handle_send_result(t.now, Ok(()));
                    }
                    Effect::Send(_) | Effect::SendBatch { .. } => {
                        let bytes = t.buf.clone();
                        // Nothing more until this one's result.
                        let mut scratch = Vec::new();
                        assert_eq!(
                            t.m.poll_effect(t.now, &mut scratch),
                            None,
                            "seed {seed}: an effect while a send is in flight"
                        );
                        let r = rng.next() % 100;
                        let result = if r < 65 {
                            Ok(())
                        } else if r < 85 {
                            Err(try_again())
                        } else if r < 92 {
                            Err(cs(Operation::Send, CsError::TooBig))
                        } else {
                            Err(lost(Operation::Send))
                        };
                        if result.is_ok() {
                            // Sequence numbers of one connection go up by one, from
                            // message to message, batched or not.
                            let (nonce, seq, payloads) = sent_messages(&bytes);
                            if let Effect::SendBatch { count, .. } = effect {
                                assert_eq!(count, payloads.len(), "seed {seed}: batch count");
                                assert!(count >= 2, "seed {seed}: a batch of {count}");
                            }
                            match wire_seq {
                                Some((n, s)) if n == nonce => {
                                    assert_eq!(seq, s + 1, "seed {seed}: sequence gap")
                                }
                                _ => assert_eq!(seq, 0, "seed {seed}: first sequence number"),
                            }
                            wire_seq = Some((nonce, seq + payloads.len() as u64 - 1));
                            wire_ids.extend(payloads.iter().map(|p| u64::from(p[0])));
                            pending.push_back(bytes);
                        }
                        let lost_now = result.as_ref().is_err_and(Error::is_daemon_lost);
                        t.m.handle_send_result(t.now, result);
                        if lost_now {
                            pending.clear();
                        }
                        break;
                    }
                    Effect::Leave => t.m.handle_leave_result(t.now, Ok(())),
                    Effect::Close => {}
                }
            }
        } else if roll < 70 {
            if let Some(bytes) = pending.pop_front() {
                t.m.handle_deliver(t.now, me, &bytes);
            }
        } else if roll < 78 {
            t.m.handle_deliver(
                t.now,
                others[rng.next() as usize % 3],
                b"CPGl\x01\0\0\0other...12345678x",
            );
        } else if roll < 86 {
            // Others come and go; this process stays.
            let other = others[rng.next() as usize % 3];
            if members.contains(&other) {
                members.retain(|x| *x != other);
                t.m.handle_confchg(t.now, &members, &[(other, Reason::ProcDown)], &[]);
            } else {
                members.push(other);
                t.m.handle_confchg(t.now, &members, &[], &[(other, Reason::Join)]);
            }
        } else if roll < 94 {
            t.now += Duration::from_millis(rng.next() % 3000);
            t.m.handle_timeout(t.now);
        } else if roll < 98 {
            t.m.handle_daemon_lost(t.now, lost(Operation::Dispatch));
            pending.clear();
        } else if !leaving && rng.chance(30) {
            leaving = true;
            t.m.leave(t.now);
        }
        let events = t.events();
        check(
            &events,
            &mut outcomes,
            &mut confirmed_order,
            &mut last_view,
            &mut ended,
        );
    }

    // Wind down: leave, deliver what is pending, and carry out every effect.
    if !ended {
        t.m.leave(t.now);
        for _ in 0..1000 {
            if let Some(bytes) = pending.pop_front() {
                t.m.handle_deliver(t.now, me, &bytes);
            }
            t.now += Duration::from_millis(10);
            t.m.handle_timeout(t.now);
            while let Some(effect) = t.m.poll_effect(t.now, &mut t.buf) {
                match effect {
                    Effect::SendControl => t.m.handle_send_result(t.now, Ok(())),
                    Effect::Send(_) | Effect::SendBatch { .. } => {
                        pending.push_back(t.buf.clone());
                        let (_, _, payloads) = sent_messages(&t.buf);
                        wire_ids.extend(payloads.iter().map(|p| u64::from(p[0])));
                        t.m.handle_send_result(t.now, Ok(()));
                    }
                    Effect::Leave => {
                        t.m.handle_leave_result(t.now, Ok(()));
                        // Own messages come back before the own leave.
                        while let Some(bytes) = pending.pop_front() {
                            t.m.handle_deliver(t.now, me, &bytes);
                        }
                        members.retain(|x| *x != me);
                        t.m.handle_confchg(t.now, &members, &[(me, Reason::Leave)], &[]);
                    }
                    Effect::Connect => {
                        t.m.handle_connected(t.now, Err(lost(Operation::Initialize)))
                    }
                    Effect::Close => {}
                }
            }
            let events = t.events();
            check(
                &events,
                &mut outcomes,
                &mut confirmed_order,
                &mut last_view,
                &mut ended,
            );
            if ended {
                break;
            }
        }
    }
    assert!(ended, "seed {seed}: never ended");
    assert!(t.m.is_ended());
    for id in &confirm_ids {
        assert_eq!(
            outcomes.get(id),
            Some(&1),
            "seed {seed}: confirmed send {id:?} has no outcome"
        );
    }
    // The queue's order on the wire: each message is accepted at most once, in the
    // order queued (a refused attempt is not on the wire; it is retried or dropped).
    assert!(
        wire_ids.windows(2).all(|w| w[0] < w[1]),
        "seed {seed}: wire order {wire_ids:?}"
    );
    assert_eq!(t.m.stats().queued, 0);
    t.m.stats()
}

/// The first payload byte of message number `n` (wraps, but a run sends far fewer
/// than 256 messages).
fn id_byte(n: usize) -> u8 {
    assert!(n < 256);
    n as u8
}

#[test]
fn huge_back_off_delays_saturate_instead_of_overflowing() {
    let me = m(1, 10);
    let config = Config {
        send_retry_initial: Duration::MAX / 2 + Duration::from_secs(1),
        send_retry_max: Duration::MAX,
        reconnect: crate::retry::Backoff {
            initial: Duration::MAX / 2 + Duration::from_secs(1),
            max_delay: Duration::MAX,
            timeout: Duration::MAX,
            max_attempts: u32::MAX,
        },
        ..plain()
    };
    let mut t = T::joined_with(config, me, &[me]);
    t.m.send(b"a".to_vec(), false).unwrap();
    for _ in 0..3 {
        t.effects();
        t.m.handle_send_result(t.now, Err(try_again()));
        assert!(t.m.poll_timeout().unwrap() > t.now + Duration::from_secs(86_400));
        // Time cannot pass that far; the test moves the retry along by hand.
        t.m.handle_timeout(t.m.poll_timeout().unwrap());
    }
    for _ in 0..3 {
        t.m.handle_daemon_lost(t.now, lost(Operation::Dispatch));
        assert!(t.m.poll_timeout().unwrap() > t.now + Duration::from_secs(86_400));
    }
}

/// Random event sequences (deliveries of own and foreign messages, membership changes,
/// send results, lost daemons, leave): the machine never panics, and every message
/// sent with a confirmation is resolved (confirmed or not sent) at most once, and
/// exactly once once the machine has ended.
#[test]
fn random_event_sequences_resolve_every_confirmed_send_exactly_once() {
    use std::collections::HashMap;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut delivered = 0usize;
    for run in 0..400 {
        let me = m(1, 10);
        let others = [m(1, 11), m(2, 20), m(3, 30)];
        let config = Config {
            queue_limit: 8,
            on_eviction: if run % 2 == 0 {
                OnEviction::Rejoin
            } else {
                OnEviction::Stop
            },
            ..Config::default()
        };
        let mut t = T::new(config, me.pid);
        let mut confirmed: HashMap<SendId, usize> = HashMap::new();
        let mut wanted: Vec<SendId> = Vec::new();
        let mut wire: Vec<Vec<u8>> = Vec::new();
        let mut in_flight = false;
        for step in 0..300 {
            let r = rnd() % 16;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                match r {
                    0 | 1 => {
                        let confirm = rnd() % 2 == 0;
                        if let Ok(id) = t.m.send(vec![step as u8], confirm) {
                            confirmed.entry(id).or_insert(0);
                            if confirm {
                                wanted.push(id);
                            }
                        }
                    }
                    2 => {
                        let mut members = vec![];
                        if rnd() % 5 != 0 {
                            members.push(me);
                        }
                        for o in others {
                            if rnd() % 2 == 0 {
                                members.push(o);
                            }
                        }
                        let reason = |r: u64| match r % 5 {
                            0 => Reason::Join,
                            1 => Reason::Leave,
                            2 => Reason::NodeDown,
                            3 => Reason::NodeUp,
                            _ => Reason::ProcDown,
                        };
                        let left: Vec<(Member, Reason)> = if rnd() % 4 == 0 {
                            vec![(me, reason(rnd()))]
                        } else {
                            vec![]
                        };
                        let joined = vec![(me, Reason::Join)];
                        t.m.handle_confchg(t.now, &members, &left, &joined);
                    }
                    3 | 4 => {
                        // One of our own messages comes back, or a stranger's.
                        if let Some(b) = (!wire.is_empty()).then(|| wire.remove(0)) {
                            t.m.handle_deliver(t.now, me, &b);
                        } else {
                            t.m.handle_deliver(t.now, others[1], b"no header");
                        }
                    }
                    5 => t.m.handle_totem(
                        t.now,
                        RingId {
                            nodeid: 1,
                            seq: rnd() % 9,
                        },
                        &[1],
                    ),
                    6 => t.m.handle_daemon_lost(t.now, lost(Operation::Dispatch)),
                    7 if rnd() % 8 == 0 => t.m.leave(t.now),
                    9 | 10 => t.m.handle_quorum(
                        t.now,
                        QuorumInput::Notification {
                            quorate: rnd() % 3 != 0,
                            ring: RingId {
                                nodeid: 1,
                                seq: rnd() % 9,
                            },
                            members: &[1],
                        },
                    ),
                    8 => {
                        t.now += Duration::from_millis(rnd() % 3000);
                        t.m.handle_timeout(t.now);
                    }
                    _ => {}
                }
                // The driver: carry out effects, with random results.
                while let Some(e) = t.m.poll_effect(t.now, &mut t.buf) {
                    match e {
                        Effect::Connect => {
                            let result = if rnd() % 6 == 0 {
                                Err(lost(Operation::Initialize))
                            } else {
                                Ok(1)
                            };
                            let ok = result.is_ok();
                            t.m.handle_connected(t.now, result);
                            if ok && rnd() % 4 != 0 {
                                let provider = rnd() % 3 != 0;
                                t.m.handle_quorum(t.now, QuorumInput::Connected { provider });
                            }
                        }
                        Effect::Send(_) | Effect::SendBatch { .. } | Effect::SendControl => {
                            in_flight = true;
                            let result = match rnd() % 6 {
                                0 => Err(try_again()),
                                1 if rnd() % 4 == 0 => Err(lost(Operation::Send)),
                                _ => {
                                    wire.push(t.buf.clone());
                                    Ok(())
                                }
                            };
                            t.m.handle_send_result(t.now, result);
                            in_flight = false;
                        }
                        Effect::Leave => {
                            let result = if rnd() % 5 == 0 {
                                Err(lost(Operation::Leave))
                            } else {
                                Ok(())
                            };
                            t.m.handle_leave_result(t.now, result);
                        }
                        Effect::Close => wire.clear(),
                    }
                }
                while let Some(e) = t.m.poll_event() {
                    match e {
                        Event::Confirmed { id, .. } => {
                            delivered += 1;
                            *confirmed.entry(id).or_insert(0) += 1;
                        }
                        Event::NotSent { id, .. } => {
                            *confirmed.entry(id).or_insert(0) += 1;
                        }
                        _ => {}
                    }
                }
            }));
            assert!(outcome.is_ok(), "run {run} step {step} (choice {r})");
            assert!(!in_flight);
            if let Some((id, n)) = confirmed.iter().find(|(_, n)| **n > 1) {
                panic!("run {run} step {step}: {id:?} resolved {n} times");
            }
        }
        // End it, and every send is resolved.
        t.m.leave(t.now);
        for _ in 0..50 {
            while let Some(e) = t.m.poll_effect(t.now, &mut t.buf) {
                match e {
                    Effect::Connect => t.m.handle_connected(t.now, Err(lost(Operation::Join))),
                    Effect::Send(_) | Effect::SendBatch { .. } | Effect::SendControl => {
                        t.m.handle_send_result(t.now, Ok(()))
                    }
                    Effect::Leave => t.m.handle_leave_result(t.now, Ok(())),
                    Effect::Close => {}
                }
            }
            t.m.handle_confchg(t.now, &others, &[(me, Reason::Leave)], &[]);
            t.m.handle_daemon_lost(t.now, lost(Operation::Dispatch));
            t.now += Duration::from_secs(60);
            t.m.handle_timeout(t.now);
        }
        while let Some(e) = t.m.poll_event() {
            if let Event::Confirmed { id, .. } | Event::NotSent { id, .. } = e {
                *confirmed.entry(id).or_insert(0) += 1;
            }
        }
        assert!(t.m.is_ended(), "run {run}: the machine did not end");
        for id in &wanted {
            assert_eq!(confirmed.get(id), Some(&1), "run {run}: {id:?}");
        }
        assert!(confirmed.values().all(|n| *n <= 1), "run {run}");
    }
    // Not vacuous: many sends made it through to a confirmation.
    assert!(delivered > 100, "{delivered}");
}

// Batching: the send queue packs what waits while it is under pressure.

/// [`plain`] with a window of `window` frames.
fn windowed(window: usize) -> Config {
    Config {
        batch_window: window,
        ..plain()
    }
}

/// The messages delivered in `events`: (payload, own, index).
fn delivered(events: &[Event]) -> Vec<(Vec<u8>, bool, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(d) => Some((d.data.to_vec(), d.own, d.position.index)),
            _ => None,
        })
        .collect()
}

fn confirmations(events: &[Event]) -> Vec<(SendId, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Confirmed { id, position } => Some((*id, position.index)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_idle_queue_sends_each_message_at_once_alone() {
    let me = m(1, 10);
    let mut t = T::joined_with(windowed(2), me, &[me]);
    // One at a time, each delivered back before the next: never a batch, never held.
    for i in 0..5u8 {
        let id = t.m.send(vec![i], true).unwrap();
        assert_eq!(t.effects(), vec![Effect::Send(id)]);
        t.m.handle_send_result(t.now, Ok(()));
        let frame = t.wire.last().unwrap().clone();
        assert_eq!(&frame[..5], b"CPGl\x01", "a version-1 frame");
        assert_eq!(&frame[HEADER_LEN..], [i]);
        t.deliver(me, &frame);
        assert_eq!(confirmations(&t.events()), vec![(id, u64::from(i))]);
    }
    // Below the window, messages queued together still go one by one.
    t.m.send(b"x".to_vec(), false).unwrap();
    t.m.send(b"y".to_vec(), false).unwrap();
    assert_eq!(t.effects(), vec![Effect::Send(SendId(5))]);
    t.m.handle_send_result(t.now, Ok(()));
    assert_eq!(t.effects(), vec![Effect::Send(SendId(6))]);
    t.m.handle_send_result(t.now, Ok(()));
    let s = t.m.stats();
    assert_eq!((s.sent, s.batches_sent, s.queued), (7, 0, 0));
}

#[test]
fn a_full_window_holds_the_queue_and_what_waits_goes_out_as_one_batch() {
    let me = m(1, 10);
    let mut t = T::joined_with(windowed(2), me, &[me]);
    let ids: Vec<SendId> = (0..6u8).map(|i| t.m.send(vec![i], true).unwrap()).collect();
    // Two frames in flight (accepted, not delivered back): the window is full.
    assert_eq!(t.effects(), vec![Effect::Send(ids[0])]);
    t.m.handle_send_result(t.now, Ok(()));
    assert_eq!(t.effects(), vec![Effect::Send(ids[1])]);
    t.m.handle_send_result(t.now, Ok(()));
    assert_eq!(t.effects(), vec![], "held at the window");
    assert_eq!(
        t.m.poll_timeout(),
        None,
        "no timer: an own delivery opens it"
    );
    assert_eq!(t.m.stats().queued, 4);
    // The first comes back: the four that waited go as one batch.
    let first = t.wire[0].clone();
    t.deliver(me, &first);
    assert_eq!(
        t.effects(),
        vec![Effect::SendBatch {
            first: ids[2],
            count: 4
        }]
    );
    // Nothing more until its result.
    assert_eq!(t.effects(), vec![]);
    t.m.handle_send_result(t.now, Ok(()));
    let batch = t.wire[2].clone();
    assert_eq!(&batch[..6], b"CPGl\x02\x02");
    let (_, seq, payloads) = sent_messages(&batch);
    assert_eq!(
        seq, 2,
        "the batch's first sequence number follows the last sent"
    );
    assert_eq!(payloads, vec![vec![2], vec![3], vec![4], vec![5]]);
    // Delivered back: each message alone, consecutive positions, each confirmed by
    // its own position.
    let second = t.wire[1].clone();
    t.deliver(me, &second);
    t.deliver(me, &batch);
    let ev = t.events();
    assert_eq!(
        delivered(&ev),
        (0..6u8)
            .map(|i| (vec![i], true, u64::from(i)))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        confirmations(&ev),
        ids.iter()
            .zip(0..)
            .map(|(id, i)| (*id, i))
            .collect::<Vec<_>>()
    );
    let s = t.m.stats();
    assert_eq!(
        (
            s.sent,
            s.batches_sent,
            s.delivered,
            s.batches_delivered,
            s.confirmed
        ),
        (6, 1, 6, 1, 6)
    );
    // The queue emptied: the pressure is over, the next message goes alone at once.
    let id = t.m.send(b"z".to_vec(), false).unwrap();
    assert_eq!(t.effects(), vec![Effect::Send(id)]);
}

/// The default settings without quorum: eager batches, a window of `window` frames.
fn eager(window: usize) -> Config {
    Config {
        batch_window: window,
        batch_eager: true,
        ..plain()
    }
}

#[test]
fn eagerly_what_is_queued_below_the_window_goes_out_as_one_batch() {
    let me = m(1, 10);
    let mut t = T::joined_with(eager(4), me, &[me]);
    // A message queued alone goes alone, at once, as a version-1 frame.
    let a = t.m.send(b"a".to_vec(), true).unwrap();
    assert_eq!(t.effects(), vec![Effect::Send(a)]);
    assert_eq!(&t.wire[0][..5], b"CPGl\x01");
    // Queued while "a" is being sent (one frame in flight, the window not full): they
    // go out together as soon as it is accepted, not one by one.
    let ids: Vec<SendId> = (0..3u8).map(|i| t.m.send(vec![i], true).unwrap()).collect();
    assert_eq!(t.effects(), vec![], "one send at a time");
    t.m.handle_send_result(t.now, Ok(()));
    assert_eq!(
        t.effects(),
        vec![Effect::SendBatch {
            first: ids[0],
            count: 3
        }]
    );
    t.m.handle_send_result(t.now, Ok(()));
    let (_, seq, payloads) = sent_messages(&t.wire[1]);
    assert_eq!((seq, payloads), (1, vec![vec![0], vec![1], vec![2]]));
    // Two frames in flight: below the window of 4, so the next message goes at once,
    // alone (it is the only one queued).
    let b = t.m.send(b"b".to_vec(), true).unwrap();
    assert_eq!(t.effects(), vec![Effect::Send(b)]);
    t.m.handle_send_result(t.now, Ok(()));
    // Delivered back: each message at its own position, each confirmed once, in order.
    for frame in t.wire.clone() {
        t.deliver(me, &frame);
    }
    let ev = t.events();
    let payloads: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![0], vec![1], vec![2], b"b".to_vec()];
    assert_eq!(
        delivered(&ev),
        payloads
            .into_iter()
            .zip(0..)
            .map(|(p, i)| (p, true, i))
            .collect::<Vec<_>>()
    );
    let all: Vec<SendId> = [a].into_iter().chain(ids).chain([b]).collect();
    assert_eq!(
        confirmations(&ev),
        all.iter()
            .zip(0..)
            .map(|(id, i)| (*id, i))
            .collect::<Vec<_>>()
    );
    let s = t.m.stats();
    assert_eq!(
        (
            s.sent,
            s.batches_sent,
            s.batches_delivered,
            s.confirmed,
            s.queued
        ),
        (5, 1, 1, 5, 0)
    );
}

#[test]
fn eagerly_a_full_window_still_holds_and_the_byte_limit_still_splits() {
    let me = m(1, 10);
    let limit = 200;
    let config = Config {
        batch_bytes: limit,
        ..eager(2)
    };
    let mut t = T::joined_with(config, me, &[me]);
    let sizes = [10usize, 60, 60, 60, 60, 500, 10, 10];
    for (i, n) in sizes.iter().enumerate() {
        t.m.send(vec![i as u8; *n], false).unwrap();
    }
    // Two frames go at once (the window), each as much as fits in 200 bytes (32 of
    // header, 4 + n per message); then the window holds.
    let first = t.flush();
    assert_eq!(first.len(), 2, "held at the window");
    assert_eq!(t.m.stats().queued, 3);
    // Each own delivery lets the next frame out.
    let mut frames = first;
    let mut at = 0;
    while t.m.stats().queued > 0 {
        let back = frames[at].clone();
        at += 1;
        t.deliver(me, &back);
        frames.extend(t.flush());
    }
    let shapes: Vec<Vec<usize>> = frames
        .iter()
        .map(|f| sent_messages(f).2.iter().map(Vec::len).collect())
        .collect();
    assert_eq!(
        shapes,
        vec![vec![10, 60, 60], vec![60, 60], vec![500], vec![10, 10]]
    );
    assert!(frames.iter().all(|f| f.len() <= limit || f[4] == 1));
    assert_eq!(&frames[2][..5], b"CPGl\x01", "too large to share: alone");
}

#[test]
fn back_pressure_packs_what_queued_meanwhile() {
    let me = m(1, 10);
    let mut t = T::joined(me, &[me]);
    let a = t.m.send(b"a".to_vec(), false).unwrap();
    assert_eq!(t.effects(), vec![Effect::Send(a)]);
    t.m.send(b"b".to_vec(), false).unwrap();
    t.m.send(b"c".to_vec(), false).unwrap();
    t.m.handle_send_result(t.now, Err(try_again()));
    assert_eq!(t.effects(), vec![]);
    let due = t.m.poll_timeout().unwrap();
    t.advance(due - t.now);
    // The retry carries the refused message and those queued behind it, with the
    // refused one's sequence number first.
    assert_eq!(t.effects(), vec![Effect::SendBatch { first: a, count: 3 }]);
    t.m.handle_send_result(t.now, Ok(()));
    let (_, seq, payloads) = sent_messages(t.wire.last().unwrap());
    assert_eq!(seq, 0);
    assert_eq!(payloads, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    let s = t.m.stats();
    assert_eq!(
        (s.sent, s.batches_sent, s.pushbacks, s.queued),
        (3, 1, 1, 0)
    );
}

#[test]
fn a_batch_stops_at_its_byte_limit_and_a_large_message_goes_alone() {
    let me = m(1, 10);
    let limit = 200;
    let config = Config {
        batch_bytes: limit,
        batch_window: 1,
        ..plain()
    };
    let mut t = T::joined_with(config, me, &[me]);
    let sizes = [10usize, 60, 60, 60, 60, 500, 10, 10];
    for (i, n) in sizes.iter().enumerate() {
        t.m.send(vec![i as u8; *n], false).unwrap();
    }
    // One frame at a time: each own delivery lets the next out.
    let mut frames = Vec::new();
    while t.m.stats().queued > 0 {
        let effects = t.effects();
        assert_eq!(effects.len(), 1, "{effects:?}");
        t.m.handle_send_result(t.now, Ok(()));
        let frame = t.wire.last().unwrap().clone();
        t.deliver(me, &frame);
        frames.push(frame);
    }
    let shapes: Vec<Vec<usize>> = frames
        .iter()
        .map(|f| sent_messages(f).2.iter().map(Vec::len).collect())
        .collect();
    // The first goes alone (nothing in flight); then batches up to 200 bytes as sent
    // (32 of header, 4 + n per message); the 500-byte one alone.
    assert_eq!(
        shapes,
        vec![
            vec![10],
            vec![60, 60],
            vec![60, 60],
            vec![500],
            vec![10, 10]
        ]
    );
    assert!(frames
        .iter()
        .filter(|f| f[4] == 2)
        .all(|f| f.len() <= limit));
    assert_eq!(
        &frames[3][..5],
        b"CPGl\x01",
        "too large to share: alone, version 1"
    );
    // Every member reads them back in order, one position each.
    let ev = t.events();
    let got: Vec<(usize, u64)> = delivered(&ev)
        .iter()
        .map(|(p, _, i)| (p.len(), *i))
        .collect();
    assert_eq!(got, sizes.iter().copied().zip(0..).collect::<Vec<_>>());
}

#[test]
fn a_batch_holds_at_most_the_bound_of_messages() {
    let me = m(1, 10);
    let config = Config {
        batch_bytes: 1 << 20,
        batch_window: 1,
        queue_limit: MAX_BATCH_MESSAGES + 10,
        ..plain()
    };
    let mut t = T::joined_with(config, me, &[me]);
    for _ in 0..MAX_BATCH_MESSAGES + 2 {
        t.m.send(Vec::new(), false).unwrap();
    }
    assert_eq!(t.effects(), vec![Effect::Send(SendId(0))]);
    t.m.handle_send_result(t.now, Ok(()));
    let first = t.wire[0].clone();
    t.deliver(me, &first);
    assert_eq!(
        t.effects(),
        vec![Effect::SendBatch {
            first: SendId(1),
            count: MAX_BATCH_MESSAGES
        }]
    );
}

#[test]
fn batching_off_never_holds_nor_packs() {
    let me = m(1, 10);
    let mut t = T::joined_with(unbatched(), me, &[me]);
    for i in 0..20u8 {
        t.m.send(vec![i], false).unwrap();
    }
    let wire = t.flush();
    assert_eq!(wire.len(), 20, "each alone, none held without deliveries");
    assert!(wire.iter().all(|f| f[4] == 1));
    assert_eq!(t.m.stats().batches_sent, 0);
}

#[test]
fn another_members_batch_is_delivered_message_by_message_with_the_agreed_quorum() {
    let me = m(1, 10);
    let other = m(2, 20);
    // The other member's machine makes the batch.
    let mut o = T::joined_with(windowed(1), other, &[me, other]);
    let mut t = T::joined(me, &[me, other]);
    for p in [&b"p"[..], b"q", b"r"] {
        o.m.send(p.to_vec(), true).unwrap();
    }
    let alone = o.flush().remove(0);
    o.deliver(other, &alone);
    let batch = o.flush().remove(0);
    assert_eq!(batch[4], 2, "a batch");
    t.deliver(other, b"CPGl\x01\0\0\0xxxxxxxxyyyyyyyyfirst");
    t.deliver(other, &alone);
    t.deliver(other, &batch);
    let ev = t.events();
    assert_eq!(
        delivered(&ev),
        vec![
            (b"first".to_vec(), false, 0),
            (b"p".to_vec(), false, 1),
            (b"q".to_vec(), false, 2),
            (b"r".to_vec(), false, 3),
        ]
    );
    assert!(ev
        .iter()
        .all(|e| !matches!(e, Event::Message(d) if d.quorum != AgreedQuorum::Free)));
    assert!(confirmations(&ev).is_empty(), "not ours");
    // The sender confirms its own by their positions (in its view, where only its
    // own were delivered).
    o.deliver(other, &batch);
    let own: Vec<u64> = confirmations(&o.events()).iter().map(|c| c.1).collect();
    assert_eq!(own, vec![0, 1, 2]);
}

#[test]
fn a_malformed_batch_is_refused_whole_and_takes_one_position() {
    let me = m(1, 10);
    let other = m(2, 20);
    let mut o = T::joined_with(windowed(1), other, &[me, other]);
    let mut t = T::joined(me, &[me, other]);
    for p in [&b"p"[..], b"q", b"r"] {
        o.m.send(p.to_vec(), false).unwrap();
    }
    let alone = o.flush().remove(0);
    o.deliver(other, &alone);
    let batch = o.flush().remove(0);
    let mut bad = batch.clone();
    bad.push(0); // a byte after the last message
    let mut short = batch.clone();
    short.truncate(batch.len() - 1);
    let mut counted = batch.clone();
    counted[24] = 200; // a count the frame cannot hold
    for frame in [&bad, &short, &counted] {
        t.deliver(other, frame);
    }
    t.deliver(other, &batch);
    let ev = t.events();
    let malformed: Vec<usize> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Malformed { from, len } if *from == other => Some(*len),
            _ => None,
        })
        .collect();
    assert_eq!(malformed, vec![bad.len(), short.len(), counted.len()]);
    // None of their messages; the good batch after them at positions 3 and 4.
    assert_eq!(
        delivered(&ev),
        vec![(b"q".to_vec(), false, 3), (b"r".to_vec(), false, 4)]
    );
    let s = t.m.stats();
    assert_eq!((s.malformed, s.delivered, s.batches_delivered), (3, 5, 1));
}

#[test]
fn a_batch_lost_with_the_connection_makes_each_confirmed_message_unknown() {
    let me = m(1, 10);
    let mut t = T::joined_with(windowed(1), me, &[me]);
    let ids: Vec<SendId> = (0..4u8).map(|i| t.m.send(vec![i], true).unwrap()).collect();
    let alone = t.flush().remove(0);
    t.deliver(me, &alone);
    // Three accepted in one batch, not delivered back; the daemon goes.
    assert_eq!(
        t.effects(),
        vec![Effect::SendBatch {
            first: ids[1],
            count: 3
        }]
    );
    t.m.handle_send_result(t.now, Ok(()));
    t.events();
    t.m.handle_daemon_lost(t.now, lost(Operation::Dispatch));
    let unknown: Vec<SendId> = t
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::NotSent {
                id,
                error: GroupError::Unknown,
            } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(unknown, ids[1..].to_vec());
    assert_eq!(t.m.stats().queued, 0);
}

#[test]
fn a_batch_whose_send_found_the_daemon_gone_is_sent_again_after_reconnecting() {
    let me = m(1, 10);
    let mut t = T::joined_with(windowed(1), me, &[me]);
    let ids: Vec<SendId> = (0..4u8).map(|i| t.m.send(vec![i], true).unwrap()).collect();
    let alone = t.flush().remove(0);
    t.deliver(me, &alone);
    assert_eq!(t.events().len(), 2, "a message and its confirmation");
    assert!(matches!(
        t.effects()[..],
        [Effect::SendBatch { count: 3, .. }]
    ));
    t.m.handle_send_result(t.now, Err(lost(Operation::Send)));
    assert_eq!(t.m.stats().queued, 3, "kept (OnDisconnect::Keep)");
    t.advance(Duration::from_secs(1));
    assert_eq!(t.effects(), vec![Effect::Close, Effect::Connect]);
    t.m.handle_connected(t.now, Ok(1));
    t.confchg(&[me], &[], &[(me, Reason::Join)]);
    t.events();
    // A new connection: nothing in flight, the first goes alone with sequence number
    // 0 of the new connection, then the rest, packed (held by the window meanwhile).
    let mut wire = t.flush();
    t.deliver(me, &wire[0]);
    wire.extend(t.flush());
    let seqs: Vec<(u64, usize)> = wire
        .iter()
        .map(|f| {
            let (_, seq, p) = sent_messages(f);
            (seq, p.len())
        })
        .collect();
    assert_eq!(seqs, vec![(0, 1), (1, 2)]);
    t.deliver(me, &wire[1]);
    let c: Vec<SendId> = confirmations(&t.events()).iter().map(|c| c.0).collect();
    assert_eq!(c, ids[1..].to_vec());
}

#[test]
fn a_stop_mid_batch_reports_its_messages_unknown() {
    let me = m(1, 10);
    let mut t = T::joined_with(windowed(1), me, &[me]);
    let ids: Vec<SendId> = (0..5u8).map(|i| t.m.send(vec![i], true).unwrap()).collect();
    let alone = t.flush().remove(0);
    t.deliver(me, &alone);
    t.events();
    // A batch of the four handed out; the driver stops before its result.
    assert!(matches!(
        t.effects()[..],
        [Effect::SendBatch { count: 4, .. }]
    ));
    let late = t.m.send(b"late".to_vec(), true).unwrap();
    t.m.handle_failure(t.now, lost(Operation::Finalize));
    let outcomes: Vec<(SendId, GroupError)> = t
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::NotSent { id, error } => Some((id, error)),
            _ => None,
        })
        .collect();
    let mut expected: Vec<(SendId, GroupError)> = ids[1..]
        .iter()
        .map(|id| (*id, GroupError::Unknown))
        .collect();
    expected.push((late, GroupError::Closed));
    assert_eq!(outcomes, expected);
}

#[test]
fn a_refused_batch_reports_each_of_its_messages() {
    let me = m(1, 10);
    let mut t = T::joined_with(windowed(1), me, &[me]);
    let ids: Vec<SendId> = (0..3u8)
        .map(|i| t.m.send(vec![i], false).unwrap())
        .collect();
    let alone = t.flush().remove(0);
    t.deliver(me, &alone);
    assert!(matches!(
        t.effects()[..],
        [Effect::SendBatch { count: 2, .. }]
    ));
    let refused = cs(Operation::Send, CsError::InvalidParam);
    t.m.handle_send_result(t.now, Err(refused.clone()));
    let outcomes: Vec<(SendId, GroupError)> = t
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::NotSent { id, error } => Some((id, error)),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (ids[1], GroupError::Rejected(refused.clone())),
            (ids[2], GroupError::Rejected(refused))
        ]
    );
    let s = t.m.stats();
    assert_eq!((s.queued, s.not_sent, s.sent), (0, 2, 1));
}

#[test]
fn a_quorum_marker_is_not_held_by_a_full_window() {
    // With a quorum provider: the window holds application messages only.
    let me = m(1, 10);
    let config = Config {
        batch_window: 1,
        batch_eager: false,
        quorum: QuorumPolicy::Corosync,
        ..Config::default()
    };
    let mut t = T::new(config, me.pid);
    assert_eq!(t.effects(), vec![Effect::Connect]);
    t.m.handle_connected(t.now, Ok(me.nodeid));
    t.m.handle_quorum(t.now, QuorumInput::Connected { provider: true });
    let ring = RingId { nodeid: 1, seq: 4 };
    t.m.handle_totem(t.now, ring, &[1]);
    t.confchg(&[me], &[], &[(me, Reason::Join)]);
    t.m.send(b"a".to_vec(), false).unwrap();
    t.m.send(b"b".to_vec(), false).unwrap();
    // The marker goes first (nothing known yet), then "a": the window is full.
    t.m.handle_quorum(
        t.now,
        QuorumInput::Notification {
            quorate: true,
            ring,
            members: &[1],
        },
    );
    assert_eq!(t.effects(), vec![Effect::SendControl]);
    t.m.handle_send_result(t.now, Ok(()));
    let marker = t.buf.clone();
    assert!(matches!(t.effects()[..], [Effect::Send(_)]));
    t.m.handle_send_result(t.now, Ok(()));
    assert_eq!(t.effects(), vec![]);
    // A new ring: its marker goes though "b" still waits for "a".
    let ring2 = RingId { nodeid: 1, seq: 8 };
    t.deliver(me, &marker);
    t.m.handle_totem(t.now, ring2, &[1]);
    t.m.handle_quorum(
        t.now,
        QuorumInput::Notification {
            quorate: true,
            ring: ring2,
            members: &[1],
        },
    );
    assert_eq!(t.effects(), vec![Effect::SendControl]);
    t.m.handle_send_result(t.now, Ok(()));
    assert_eq!(t.effects(), vec![]);
    let a = t.wire[0].clone();
    t.deliver(me, &a);
    assert!(matches!(t.effects()[..], [Effect::Send(SendId(1))]));
}
