//! Unit tests of the agreed quorum: several group machines on a simulated daemon that
//! delivers every frame to the members of a partition in one order (no daemon, no
//! clock), fed quorum notifications in the orders a real daemon may produce.

use std::collections::VecDeque;
use std::time::Instant;

use super::config::*;
use super::event::*;
use super::machine::*;
use super::quorum::*;
use super::wire::{write_marker, write_message, MARKER_LEN};
use crate::error::{CsError, Error, Operation};
use crate::types::{Member, Reason, RingId};

fn m(nodeid: u32, pid: u32) -> Member {
    Member { nodeid, pid }
}

fn ring(nodeid: u32, seq: u64) -> RingId {
    RingId { nodeid, seq }
}

/// What a member's application saw, without what is local (view ids, totals): the
/// part every member of a partition must see alike.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A message: sender, payload, agreed state at its position, index in the view.
    Message(Member, Vec<u8>, AgreedQuorum, u64),
    /// A change of the agreed state, and where.
    Quorum(AgreedQuorum, u64),
    /// A view, by its member list.
    View(Vec<Member>),
    /// A malformed frame.
    Malformed(Member),
}

/// One member: a machine and what its application saw.
struct Node {
    me: Member,
    m: Machine,
    seen: Vec<Seen>,
    buf: Vec<u8>,
}

/// A simulated daemon: members, and the frames they sent that are not delivered yet,
/// in the one order the partition delivers them.
struct Bus {
    now: Instant,
    nodes: Vec<Node>,
    wire: VecDeque<(Member, Vec<u8>)>,
    /// Markers on the wire so far.
    markers: usize,
}

impl Bus {
    /// Members that connected (with a quorum provider or not) and know `initial` as
    /// their ring (the initial totem configuration), not joined yet.
    fn new(members: &[Member], provider: bool, initial: (RingId, &[u32])) -> Bus {
        Self::with(members, provider, initial, QuorumPolicy::Corosync)
    }

    fn with(
        members: &[Member],
        provider: bool,
        initial: (RingId, &[u32]),
        policy: QuorumPolicy,
    ) -> Bus {
        let mut bus = Bus {
            now: Instant::now(),
            nodes: Vec::new(),
            wire: VecDeque::new(),
            markers: 0,
        };
        for &me in members {
            bus.add(me, provider, initial, policy);
        }
        bus
    }

    /// A new member that connected and got the initial totem configuration.
    fn add(&mut self, me: Member, provider: bool, initial: (RingId, &[u32]), policy: QuorumPolicy) {
        let config = Config {
            quorum: policy,
            ..Config::default()
        };
        let mut m = Machine::new(config, me.pid, u64::from(me.pid) ^ 0x5eed);
        m.start(self.now);
        let mut buf = Vec::new();
        assert_eq!(m.poll_effect(self.now, &mut buf), Some(Effect::Connect));
        m.handle_connected(self.now, Ok(me.nodeid));
        m.handle_quorum(self.now, QuorumInput::Connected { provider });
        m.handle_totem(self.now, initial.0, initial.1);
        self.nodes.push(Node {
            me,
            m,
            seen: Vec::new(),
            buf,
        });
    }

    fn node(&mut self, who: Member) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.me == who)
            .expect("a member of the bus")
    }

    /// A group change, delivered to `to` (the member list, and who joined or left).
    fn confchg(
        &mut self,
        to: &[Member],
        members: &[Member],
        left: &[(Member, Reason)],
        joined: &[(Member, Reason)],
    ) {
        let now = self.now;
        for &who in to {
            self.node(who).m.handle_confchg(now, members, left, joined);
        }
        self.route();
    }

    /// A totem change, delivered to `to`.
    fn totem(&mut self, to: &[Member], r: RingId, nodes: &[u32]) {
        let now = self.now;
        for &who in to {
            self.node(who).m.handle_totem(now, r, nodes);
        }
        self.route();
    }

    /// A quorum notification on `who`'s node.
    fn notify(&mut self, who: Member, quorate: bool, r: RingId, members: &[u32]) {
        let now = self.now;
        let input = QuorumInput::Notification {
            quorate,
            ring: r,
            members,
        };
        self.node(who).m.handle_quorum(now, input);
        self.route();
    }

    /// `who` queues an application message.
    fn send(&mut self, who: Member, payload: &[u8]) {
        self.node(who)
            .m
            .send(payload.to_vec(), false)
            .expect("queued");
    }

    /// Every member carries out its sends (each accepted by the daemon): the frames go
    /// on the wire in the order of the members, each member's in its own order.
    fn pump(&mut self) {
        let now = self.now;
        for n in &mut self.nodes {
            while let Some(e) = n.m.poll_effect(now, &mut n.buf) {
                match e {
                    Effect::Send(_) | Effect::SendControl => {
                        if e == Effect::SendControl {
                            assert_eq!(n.buf.len(), MARKER_LEN);
                            self.markers += 1;
                        }
                        self.wire.push_back((n.me, n.buf.clone()));
                        n.m.handle_send_result(now, Ok(()));
                    }
                    other => panic!("{}: unexpected {other:?}", n.me),
                }
            }
        }
    }

    /// Delivers the next `count` frames on the wire to `to`, in order.
    fn deliver(&mut self, count: usize, to: &[Member]) {
        let now = self.now;
        for _ in 0..count {
            let (from, bytes) = self.wire.pop_front().expect("a frame on the wire");
            for &who in to {
                self.node(who).m.handle_deliver(now, from, &bytes);
            }
        }
        self.route();
    }

    /// Pumps and delivers everything to `to` until nothing is left.
    fn settle(&mut self, to: &[Member]) {
        for _ in 0..100 {
            self.pump();
            if self.wire.is_empty() {
                return;
            }
            self.deliver(self.wire.len(), to);
        }
        panic!("no quiet after 100 rounds");
    }

    /// Moves every machine's events to what its application saw.
    fn route(&mut self) {
        for n in &mut self.nodes {
            while let Some(e) = n.m.poll_event() {
                let seen = match e {
                    Event::Message(d) => {
                        Seen::Message(d.from, d.data.to_vec(), d.quorum, d.position.index)
                    }
                    Event::Quorum { state, index, view } => {
                        assert_eq!(Some(view), n.m.view().map(|v| v.id()));
                        Seen::Quorum(state, index)
                    }
                    Event::View(v) => Seen::View(v.members().to_vec()),
                    Event::Malformed { from, .. } => Seen::Malformed(from),
                    _ => continue,
                };
                n.seen.push(seen);
            }
        }
    }

    fn seen(&self, who: Member) -> &[Seen] {
        &self
            .nodes
            .iter()
            .find(|n| n.me == who)
            .expect("a member")
            .seen
    }

    /// What `who` saw since its latest view (the view included).
    fn since_view(&self, who: Member) -> &[Seen] {
        let seen = self.seen(who);
        let at = seen
            .iter()
            .rposition(|s| matches!(s, Seen::View(_)))
            .expect("a view");
        &seen[at..]
    }

    fn agreed(&self, who: Member) -> AgreedQuorum {
        self.nodes
            .iter()
            .find(|n| n.me == who)
            .expect("a member")
            .m
            .agreed_quorum()
    }
}

/// The agreed states of the messages in `seen`, in order.
fn states(seen: &[Seen]) -> Vec<(Vec<u8>, AgreedQuorum)> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Message(_, data, q, _) => Some((data.clone(), *q)),
            _ => None,
        })
        .collect()
}

/// A 3-node partition: A and B on the majority side, C cut off. A hears of the quorum
/// before CPG's changes, B after, C in between. Every message is judged the same on A
/// and B (whole logs equal), and C's own messages are never judged quorate.
#[test]
fn both_arrival_orders_give_the_same_agreed_state_at_every_delivery() {
    let (a, b, c) = (m(1, 10), m(2, 20), m(3, 30));
    let all = [a, b, c];
    let r1 = ring(1, 4);
    let mut bus = Bus::new(&all, true, (r1, &[1, 2, 3]));
    bus.confchg(&all, &all, &[], &[(a, Reason::Join)]);
    for who in all {
        assert_eq!(bus.agreed(who), AgreedQuorum::Pending);
    }
    // Before any notification, nothing is sent and a message is judged pending.
    bus.send(a, b"a0");
    bus.settle(&all);
    assert_eq!(bus.markers, 0, "no marker without a notification");
    bus.notify(a, true, r1, &[3, 2, 1]);
    bus.send(c, b"c0");
    bus.settle(&all);
    // Once the first marker made the state agreed, the others have nothing to add.
    bus.notify(b, true, r1, &[1, 2, 3]);
    bus.notify(c, true, r1, &[1, 2, 3]);
    bus.settle(&all);
    for who in all {
        assert_eq!(bus.agreed(who), AgreedQuorum::Quorate(r1));
    }
    assert_eq!(
        states(bus.seen(a)),
        vec![
            (b"a0".to_vec(), AgreedQuorum::Pending),
            (b"c0".to_vec(), AgreedQuorum::Quorate(r1))
        ],
        "A's marker went ahead of C's message"
    );
    assert_eq!(bus.markers, 1);

    // The partition. A hears of the new ring's quorum first.
    let (r2, r3) = (ring(1, 8), ring(3, 8));
    bus.notify(a, true, r2, &[1, 2]);
    assert_eq!(
        bus.nodes[0].m.local_quorum(),
        LocalQuorum::Known {
            quorate: true,
            ring: r2
        }
    );
    bus.pump();
    assert!(
        bus.wire.is_empty(),
        "no marker before CPG's ring is the new one"
    );
    let ab = [a, b];
    bus.confchg(&ab, &ab, &[(c, Reason::NodeDown)], &[]);
    bus.send(b, b"b1");
    bus.pump();
    bus.totem(&ab, r2, &[1, 2]);
    // B's message was sent in the old view's ring but is delivered in the new one,
    // before any marker: pending on both.
    bus.deliver(1, &ab);
    bus.send(b, b"b2");
    bus.pump();
    // A (quorum first) sent its marker as soon as CPG's ring was the new one; B (CPG
    // first, no notification yet) only its message.
    assert_eq!(bus.wire.len(), 2, "{:?}", bus.wire);
    assert_eq!(bus.wire[0].0, a);
    bus.deliver(1, &ab);
    bus.send(a, b"a2");
    bus.notify(b, true, r2, &[1, 2]);
    bus.settle(&ab);
    let majority = bus.since_view(a).to_vec();
    assert_eq!(bus.since_view(b), &majority[..], "A and B decide alike");
    assert_eq!(bus.seen(a), bus.seen(b), "from the start");
    assert_eq!(
        states(&majority),
        vec![
            (b"b1".to_vec(), AgreedQuorum::Pending),
            (b"b2".to_vec(), AgreedQuorum::Quorate(r2)),
            (b"a2".to_vec(), AgreedQuorum::Quorate(r2)),
        ]
    );
    // A's marker was frame 1 of the view: the state holds from frame 2 on.
    assert!(majority.contains(&Seen::Quorum(AgreedQuorum::Quorate(r2), 2)));

    // C alone: CPG's change, then its message, then its quorum.
    bus.confchg(
        &[c],
        &[c],
        &[(a, Reason::NodeDown), (b, Reason::NodeDown)],
        &[],
    );
    bus.totem(&[c], r3, &[3]);
    bus.send(c, b"c1");
    bus.settle(&[c]);
    bus.notify(c, false, r3, &[3]);
    bus.send(c, b"c2");
    bus.settle(&[c]);
    let minority = bus.since_view(c).to_vec();
    assert_eq!(
        states(&minority),
        vec![
            (b"c1".to_vec(), AgreedQuorum::Pending),
            (b"c2".to_vec(), AgreedQuorum::NotQuorate(r3)),
        ]
    );
    assert!(states(&minority).iter().all(|(_, q)| !q.permits()));
    assert_eq!(
        minority
            .iter()
            .filter(|s| matches!(s, Seen::Quorum(..)))
            .count(),
        2,
        "pending at the view, not quorate at the marker: {minority:?}"
    );
}

/// A marker of another ring (sent before a change, delivered after it; or another
/// partition's ring with the same sequence number) changes nothing.
#[test]
fn a_stale_marker_is_ignored() {
    let (a, b) = (m(1, 10), m(2, 20));
    let r1 = ring(1, 4);
    let mut bus = Bus::new(&[a, b], true, (r1, &[1, 2]));
    bus.confchg(&[a, b], &[a, b], &[], &[(a, Reason::Join)]);
    bus.notify(a, true, r1, &[1, 2]);
    bus.settle(&[a, b]);
    assert_eq!(bus.agreed(a), AgreedQuorum::Quorate(r1));
    // The ring changes (same nodes: a token loss and recovery), with B's marker for
    // the old ring still on the wire.
    let mut stale = Vec::new();
    write_marker(&mut stale, 1, r1, false);
    bus.wire.push_back((b, stale));
    let mut other_side = Vec::new();
    write_marker(&mut other_side, 1, ring(2, 8), true);
    bus.wire.push_back((b, other_side));
    let r2 = ring(1, 8);
    bus.totem(&[a, b], r2, &[1, 2]);
    assert_eq!(bus.agreed(a), AgreedQuorum::Pending, "a new ring resets");
    assert_eq!(
        bus.seen(a).last(),
        Some(&Seen::Quorum(AgreedQuorum::Pending, 1)),
        "reported where the ring changed"
    );
    let before: Vec<usize> = [a, b].iter().map(|w| bus.seen(*w).len()).collect();
    bus.deliver(2, &[a, b]);
    bus.wire.push_back((b, {
        let mut m = Vec::new();
        write_message(&mut m, 1, 0, b"m");
        m
    }));
    bus.deliver(1, &[a, b]);
    for (i, who) in [a, b].into_iter().enumerate() {
        assert_eq!(bus.agreed(who), AgreedQuorum::Pending, "{who}");
        assert_eq!(
            &bus.seen(who)[before[i]..],
            &[Seen::Message(b, b"m".to_vec(), AgreedQuorum::Pending, 3)],
            "{who}: nothing but the message"
        );
    }
    // The new ring has the old one's nodes: the members' latest word holds for it.
    bus.settle(&[a, b]);
    assert_eq!(bus.agreed(b), AgreedQuorum::Quorate(r2));
    let stats = bus.nodes[0].m.stats();
    assert_eq!(
        (stats.markers, stats.malformed),
        (4, 0),
        "counted, not malformed"
    );
}

/// A change of the quorum inside a ring (expected votes or votes set, a quorum
/// device that stops voting): a new marker, the state flips where it is delivered,
/// and a member whose news comes later adds nothing.
#[test]
fn a_mid_ring_change_flips_the_state_at_its_marker() {
    let (a, b) = (m(1, 10), m(2, 20));
    let r1 = ring(1, 4);
    let mut bus = Bus::new(&[a, b], true, (r1, &[1, 2]));
    bus.confchg(&[a, b], &[a, b], &[], &[(a, Reason::Join)]);
    for who in [a, b] {
        bus.notify(who, true, r1, &[1, 2]);
    }
    bus.settle(&[a, b]);
    assert_eq!(bus.agreed(b), AgreedQuorum::Quorate(r1));
    let before = bus.markers;
    bus.send(a, b"before");
    bus.pump();
    bus.notify(b, false, r1, &[1, 2]);
    bus.pump();
    bus.send(a, b"after");
    bus.settle(&[a, b]);
    assert_eq!(bus.markers, before + 1, "B's marker");
    bus.notify(a, false, r1, &[1, 2]);
    bus.pump();
    assert_eq!(bus.markers, before + 1, "A's news is already agreed");
    for who in [a, b] {
        assert_eq!(bus.agreed(who), AgreedQuorum::NotQuorate(r1));
        let tail = states(bus.since_view(who));
        assert_eq!(
            &tail[tail.len() - 2..],
            &[
                (b"before".to_vec(), AgreedQuorum::Quorate(r1)),
                (b"after".to_vec(), AgreedQuorum::NotQuorate(r1)),
            ]
        );
    }
    assert_eq!(bus.seen(a), bus.seen(b));
    // And back.
    bus.notify(a, true, r1, &[1, 2]);
    bus.settle(&[a, b]);
    assert_eq!(bus.agreed(b), AgreedQuorum::Quorate(r1));
    assert_eq!(bus.markers, before + 2);
}

/// Without a provider, and with the policy that ignores quorum: free, no markers, no
/// quorum events, whatever notifications come.
#[test]
fn no_provider_and_the_ignore_policy_are_free_and_send_no_markers() {
    let (a, b) = (m(1, 10), m(2, 20));
    let r1 = ring(1, 4);
    for (provider, policy) in [
        (false, QuorumPolicy::Corosync),
        (true, QuorumPolicy::Ignore),
    ] {
        let mut bus = Bus::with(&[a, b], provider, (r1, &[1, 2]), policy);
        bus.confchg(&[a, b], &[a, b], &[], &[(a, Reason::Join)]);
        // What corosync 3.1.7 notifies without a provider: quorate, ring 0.0.
        bus.notify(a, true, ring(0, 0), &[]);
        bus.notify(b, true, r1, &[1, 2]);
        bus.send(a, b"x");
        bus.settle(&[a, b]);
        bus.totem(&[a, b], ring(1, 8), &[1, 2]);
        bus.send(b, b"y");
        bus.settle(&[a, b]);
        assert_eq!(bus.markers, 0, "{policy:?}");
        for who in [a, b] {
            assert_eq!(
                bus.seen(who),
                &[
                    Seen::View(vec![a, b]),
                    Seen::Message(a, b"x".to_vec(), AgreedQuorum::Free, 0),
                    Seen::Message(b, b"y".to_vec(), AgreedQuorum::Free, 1),
                ],
                "{policy:?}"
            );
            assert_eq!(bus.agreed(who), AgreedQuorum::Free);
        }
        assert_eq!(bus.nodes[0].m.local_quorum(), LocalQuorum::Free);
        assert!(bus.nodes[0].m.local_quorum().permits());
    }
}

/// A process joins on a node of the ring (a view change, no totem change): the old
/// members go back to pending and agree with the newcomer from its first view on,
/// whether the newcomer's notification comes early or late.
#[test]
fn a_newcomer_after_a_process_only_view_change_agrees_with_the_old_members() {
    let (a, b) = (m(1, 10), m(2, 20));
    let r1 = ring(1, 4);
    let mut bus = Bus::new(&[a, b], true, (r1, &[1, 2]));
    bus.confchg(&[a, b], &[a, b], &[], &[(a, Reason::Join)]);
    for who in [a, b] {
        bus.notify(who, true, r1, &[1, 2]);
    }
    bus.settle(&[a, b]);
    assert_eq!(bus.agreed(a), AgreedQuorum::Quorate(r1));
    // A message of the old view still on the wire when the newcomer joins.
    bus.send(b, b"old");
    bus.pump();
    let n = m(1, 11);
    bus.add(n, true, (r1, &[1, 2]), QuorumPolicy::Corosync);
    let abn = [a, b, n];
    bus.confchg(&abn, &abn, &[], &[(n, Reason::Join)]);
    for who in abn {
        assert_eq!(bus.agreed(who), AgreedQuorum::Pending, "{who}");
    }
    bus.deliver(1, &abn);
    bus.send(n, b"new");
    bus.pump();
    bus.notify(n, true, r1, &[1, 2]);
    bus.settle(&abn);
    let view = bus.since_view(n).to_vec();
    for who in [a, b] {
        assert_eq!(bus.since_view(who), &view[..], "{who}");
    }
    assert_eq!(
        states(&view),
        vec![
            (b"old".to_vec(), AgreedQuorum::Pending),
            (b"new".to_vec(), AgreedQuorum::Quorate(r1))
        ]
    );
}

/// corosync sends no quorum notification for a ring whose nodes and quorum equal the
/// previous ring's (measured: a node alone forming a second ring). The member must not
/// stay pending there: the latest notification holds for a ring with the same nodes,
/// and a notification for the ring itself overrides it. A ring with other nodes waits
/// for its own notification.
#[test]
fn a_ring_without_its_own_notification_is_decided_when_its_nodes_are_unchanged() {
    let c = m(3, 30);
    let r1 = ring(3, 8);
    let mut bus = Bus::new(&[c], true, (r1, &[3]));
    bus.confchg(&[c], &[c], &[], &[(c, Reason::Join)]);
    bus.notify(c, false, r1, &[3]);
    bus.settle(&[c]);
    assert_eq!(bus.agreed(c), AgreedQuorum::NotQuorate(r1));
    // A second ring of node 3 alone, not notified.
    let r2 = ring(3, 12);
    bus.totem(&[c], r2, &[3]);
    assert_eq!(bus.agreed(c), AgreedQuorum::Pending);
    bus.settle(&[c]);
    assert_eq!(bus.agreed(c), AgreedQuorum::NotQuorate(r2));
    // A later notification for the ring itself, saying otherwise, overrides.
    bus.notify(c, true, r2, &[3]);
    bus.settle(&[c]);
    assert_eq!(bus.agreed(c), AgreedQuorum::Quorate(r2));
    // A ring with another node: the old word does not hold.
    let r3 = ring(1, 16);
    bus.totem(&[c], r3, &[1, 3]);
    bus.send(c, b"m");
    bus.settle(&[c]);
    assert_eq!(bus.agreed(c), AgreedQuorum::Pending);
    assert_eq!(
        states(bus.since_view(c)).last(),
        Some(&(b"m".to_vec(), AgreedQuorum::Pending))
    );
    // Nor does a notification for a newer ring than CPG's (quorum first).
    bus.notify(c, true, ring(1, 20), &[1, 3]);
    bus.settle(&[c]);
    assert_eq!(bus.agreed(c), AgreedQuorum::Pending);
    bus.notify(c, true, r3, &[1, 3]);
    bus.settle(&[c]);
    assert_eq!(bus.agreed(c), AgreedQuorum::Quorate(r3));
}

/// A control frame this version does not read (another kind, a batch, a bad length),
/// or garbage after the magic: malformed, counted for positions, and the agreed state
/// stays.
#[test]
fn a_foreign_or_garbage_control_frame_is_malformed_and_changes_nothing() {
    let (a, b) = (m(1, 10), m(2, 20));
    let r1 = ring(1, 4);
    let mut bus = Bus::new(&[a, b], true, (r1, &[1, 2]));
    bus.confchg(&[a, b], &[a, b], &[], &[(a, Reason::Join)]);
    bus.notify(a, true, r1, &[1, 2]);
    bus.settle(&[a, b]);
    assert_eq!(bus.agreed(b), AgreedQuorum::Quorate(r1));
    let mut marker = Vec::new();
    write_marker(&mut marker, 9, r1, false);
    let mut frames = Vec::new();
    for edit in [
        &(|f: &mut Vec<u8>| f[5] = 2) as &dyn Fn(&mut Vec<u8>), // a batch
        &|f| f[5] = 77,                                         // an unknown kind
        &|f| f.push(0),                                         // a longer marker
        &|f| f[28] = 9,                                         // quorate 9
        &|f| f.truncate(20),                                    // cut short
    ] {
        let mut f = marker.clone();
        edit(&mut f);
        frames.push(f);
    }
    let mut v3 = Vec::new();
    write_message(&mut v3, 1, 0, b"from a newer version");
    v3[4] = 3;
    frames.push(v3);
    let count = frames.len();
    for f in frames {
        bus.wire.push_back((b, f));
    }
    bus.send(a, b"after");
    bus.pump();
    bus.deliver(bus.wire.len(), &[a, b]);
    for who in [a, b] {
        let view = bus.since_view(who);
        let malformed = view.iter().filter(|s| **s == Seen::Malformed(b)).count();
        assert_eq!(malformed, count, "{who}");
        assert_eq!(bus.agreed(who), AgreedQuorum::Quorate(r1), "{who}");
        // The marker was frame 0; then the malformed ones, each counted.
        assert_eq!(
            view.last(),
            Some(&Seen::Message(
                a,
                b"after".to_vec(),
                AgreedQuorum::Quorate(r1),
                1 + count as u64
            ))
        );
    }
    assert_eq!(bus.nodes[1].m.stats().malformed, count as u64);
}

/// A marker refused with back-pressure is retried after the pause (still ahead of
/// the queue); one whose connection is lost is not, and the new connection starts
/// without the old connection's knowledge.
#[test]
fn a_marker_waits_out_back_pressure_and_a_new_connection_starts_unknown() {
    let a = m(1, 10);
    let r1 = ring(1, 4);
    let mut bus = Bus::new(&[a], true, (r1, &[1]));
    bus.confchg(&[a], &[a], &[], &[(a, Reason::Join)]);
    bus.notify(a, true, r1, &[1]);
    bus.send(a, b"x");
    let now = bus.now;
    let node = bus.node(a);
    assert_eq!(
        node.m.poll_effect(now, &mut node.buf),
        Some(Effect::SendControl)
    );
    let busy = Error::Cs {
        op: Operation::Send,
        code: CsError::TryAgain,
    };
    node.m.handle_send_result(now, Err(busy));
    assert_eq!(node.m.poll_effect(now, &mut node.buf), None, "pausing");
    let due = node.m.poll_timeout().expect("a retry is due");
    node.m.handle_timeout(due);
    assert_eq!(
        node.m.poll_effect(due, &mut node.buf),
        Some(Effect::SendControl),
        "the marker again, before the message"
    );
    assert_eq!(node.m.stats().pushbacks, 1);
    let lost = Error::Cs {
        op: Operation::Send,
        code: CsError::Library,
    };
    node.m.handle_send_result(due, Err(lost));
    assert_eq!(node.m.local_quorum(), LocalQuorum::Unknown);
    assert_eq!(node.m.stats().markers_sent, 0);
    // Reconnected: no marker until this connection's notification.
    let later = due + std::time::Duration::from_secs(1);
    node.m.handle_timeout(later);
    let mut effects = Vec::new();
    while let Some(e) = node.m.poll_effect(later, &mut node.buf) {
        effects.push(e);
    }
    assert_eq!(effects, vec![Effect::Close, Effect::Connect]);
    node.m.handle_connected(later, Ok(1));
    node.m
        .handle_quorum(later, QuorumInput::Connected { provider: true });
    node.m.handle_totem(later, r1, &[1]);
    node.m
        .handle_confchg(later, &[a], &[], &[(a, Reason::Join)]);
    assert_eq!(node.m.local_quorum(), LocalQuorum::Unknown);
    assert_eq!(node.m.agreed_quorum(), AgreedQuorum::Pending);
    assert!(
        matches!(
            node.m.poll_effect(later, &mut node.buf),
            Some(Effect::Send(_))
        ),
        "the queued message, no marker"
    );
}
