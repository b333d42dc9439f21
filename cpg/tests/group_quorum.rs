//! The group layer's agreed quorum on real clusters.
//!
//! On a 3-node cluster with votequorum (one vote each, expected 3), with blocking
//! members on nodes 1 and 2 and a tokio member on node 3:
//!
//! - partitioned 2|1, node 3's member reports `Event::Quorum` not quorate and judges
//!   every message after the change not quorate or pending, the two others quorate,
//!   within a bound derived from the token timeout; after the heal all three are
//!   quorate again in the merged ring;
//! - the same with the two notification orders forced for real (the drivers' test
//!   hook holds one connection's events): node 1 hears of CPG's change first and of
//!   the quorum later, node 2 the other way round (and node 3 and, at the heal, node 1
//!   too); the agreed state of every message delivered in a ring is the same on every
//!   member that delivers it, and so are the points where it changes;
//! - what the design relies on, measured: the totem change of a ring comes after its
//!   group change and before any message of the ring, on every member;
//! - members with `QuorumPolicy::Ignore` in another group, on the same cluster, see
//!   everything free, as before quorum support;
//! - two daemons killed (node 2 alone is not quorate) and restarted: the blocking and
//!   the tokio member reconnect both connections and agree with node 2 again.
//!
//! On a 2-node cluster without a quorum provider: the default policy is free, sends no
//! marker (a raw CPG member counts the frames on the wire), and a foreign control frame
//! is malformed and changes nothing; `QuorumPolicy::Ignore` likewise.
#![cfg(all(feature = "quorum", feature = "tokio"))]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use cpg::group::{
    AgreedQuorum, AsyncGroup, Config, Event, Group, LocalQuorum, QuorumPolicy, Stats, View,
};
use cpg::{GroupName, Member, RingId};
use cpg_testkit::{Cluster, Node};
use support::group::{decode, latest_view, payload, Participant};
use support::log::Log;
use support::peer::{pump_for, pump_until, Peer};
use support::{big_stack, pid, unique_group, BIG_STACK, WAIT};

/// The most a partition or a heal may take to show as an agreed state on a member.
///
/// A cut-off node is declared lost after the token timeout plus consensus (1.2 ×
/// token); the new ring then forms, votequorum decides within a few token rotations,
/// and one marker makes a round trip. 10 × token leaves room for a loaded 2-core
/// machine, as for the quorum service's own test (`quorum_cluster.rs`).
fn bound(cluster: &Cluster) -> Duration {
    Duration::from_millis(u64::from(cluster.token_ms()) * 10)
}

/// A member of the tokio driver on a node: a current-thread runtime on a thread of
/// its own, inside the node's namespace (the driver connects, and reconnects, there),
/// recording every event; the test thread calls the group directly.
struct AsyncMember<'s> {
    name: String,
    group: Arc<AsyncGroup>,
    log: Log<Event>,
    stop: Arc<AtomicBool>,
    thread: Option<ScopedJoinHandle<'s, ()>>,
}

impl<'s> AsyncMember<'s> {
    fn start<'e>(
        scope: &'s Scope<'s, 'e>,
        node: &'e Node,
        name: &str,
        group: GroupName,
    ) -> AsyncMember<'s> {
        let log = Log::new(name);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (log, stop) = (log.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("{name}-tokio"))
                .stack_size(BIG_STACK)
                .spawn_scoped(scope, move || {
                    node.enter(|| {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("a runtime");
                        rt.block_on(async move {
                            let g = Arc::new(
                                Group::builder(group)
                                    .start_async()
                                    .await
                                    .expect("start_async"),
                            );
                            tx.send(Arc::clone(&g)).expect("the test waits");
                            while !stop.load(Ordering::SeqCst) {
                                let next = g.next_event();
                                match tokio::time::timeout(Duration::from_millis(50), next).await {
                                    Ok(Some(e)) => log.push(e),
                                    Ok(None) => break,
                                    Err(_) => {}
                                }
                            }
                        })
                    })
                })
                .expect("spawn the tokio member")
        };
        let group = rx.recv_timeout(WAIT).expect("the tokio member started");
        log.wait_for("the first view", WAIT, |e| latest_view(e).map(|_| ()));
        AsyncMember {
            name: name.to_string(),
            group,
            log,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for AsyncMember<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One member under test, of either driver.
enum Member3<'s> {
    Blocking(Participant),
    Async(AsyncMember<'s>),
}

impl Member3<'_> {
    fn name(&self) -> &str {
        match self {
            Member3::Blocking(p) => p.name(),
            Member3::Async(a) => &a.name,
        }
    }

    fn log(&self) -> &Log<Event> {
        match self {
            Member3::Blocking(p) => p.log(),
            Member3::Async(a) => &a.log,
        }
    }

    fn member(&self) -> Member {
        match self {
            Member3::Blocking(p) => p.member(),
            Member3::Async(a) => a.group.me().expect("identity known"),
        }
    }

    fn send(&self, data: Vec<u8>) {
        let sent = match self {
            Member3::Blocking(p) => p.group().send(data),
            Member3::Async(a) => a.group.send(data),
        };
        sent.unwrap_or_else(|e| panic!("{}: send: {e}", self.name()));
    }

    /// The drivers' test hook: hold the CPG or the quorum connection's events.
    fn hold(&self, cpg: bool, quorum: bool) {
        match self {
            Member3::Blocking(p) => p.group().hold_dispatch(cpg, quorum),
            Member3::Async(a) => a.group.hold_dispatch(cpg, quorum),
        }
    }

    fn local(&self) -> LocalQuorum {
        match self {
            Member3::Blocking(p) => p.group().quorum(),
            Member3::Async(a) => a.group.quorum(),
        }
    }

    fn stats(&self) -> Stats {
        match self {
            Member3::Blocking(p) => p.group().stats(),
            Member3::Async(a) => a.group.stats(),
        }
    }
}

/// What a member saw in one view, without what is local (view ids, totals): every
/// member of the view must see exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A message: (sender, seq) of the payload, its agreed state, its index.
    Message((u32, u64), AgreedQuorum, u64),
    /// A change of the agreed state, and its index.
    Quorum(AgreedQuorum, u64),
}

/// The view that settled on `ring` in `events`, and what was seen in it.
fn in_ring(events: &[Event], ring: RingId) -> Option<(View, Vec<Seen>)> {
    let id = events.iter().find_map(|e| match e {
        Event::Settled { view, ring: r } if *r == ring => Some(*view),
        _ => None,
    })?;
    let view = events.iter().find_map(|e| match e {
        Event::View(v) if v.id() == id => Some(v.clone()),
        _ => None,
    })?;
    let seen = events
        .iter()
        .filter_map(|e| match e {
            Event::Message(d) if d.position.view == id => {
                Some(Seen::Message(decode(&d.data), d.quorum, d.position.index))
            }
            Event::Quorum { view, state, index } if *view == id => {
                Some(Seen::Quorum(*state, *index))
            }
            _ => None,
        })
        .collect();
    Some((view, seen))
}

/// The latest view in `events` if it has exactly `members`, with its settled ring and
/// the agreed state after the last event.
fn settled_state(events: &[Event], members: &[Member]) -> Option<(RingId, AgreedQuorum)> {
    let at = events.iter().rposition(|e| matches!(e, Event::View(_)))?;
    let Event::View(view) = &events[at] else {
        return None;
    };
    let mut want = members.to_vec();
    want.sort();
    if view.members() != want {
        return None;
    }
    let mut ring = None;
    let mut state = AgreedQuorum::Free;
    for e in &events[at..] {
        match e {
            Event::Settled { view: v, ring: r } if *v == view.id() => ring = Some(*r),
            Event::Quorum {
                view: v, state: s, ..
            } if *v == view.id() => state = *s,
            _ => {}
        }
    }
    Some((ring?, state))
}

/// Waits until `m`'s latest view has `members`, is settled, and its agreed state
/// passes `want`; returns the ring and how long it took since `since`.
fn wait_agreed(
    m: &Member3,
    members: &[Member],
    within: Duration,
    since: Instant,
    want: impl Fn(AgreedQuorum) -> bool,
) -> (RingId, Duration) {
    wait_agreed_after(m, 0, members, within, since, want)
}

/// [`wait_agreed`], for a view installed after the first `mark` events of `m`'s log.
fn wait_agreed_after(
    m: &Member3,
    mark: usize,
    members: &[Member],
    within: Duration,
    since: Instant,
    want: impl Fn(AgreedQuorum) -> bool,
) -> (RingId, Duration) {
    let what = format!("an agreed state in a settled view of {members:?}");
    let ring = m.log().wait_for(&what, within + WAIT, |events| {
        settled_state(events.get(mark..)?, members)
            .filter(|(_, state)| want(*state))
            .map(|(ring, _)| ring)
    });
    (ring, since.elapsed())
}

/// Sends `count` messages from each of `members` (sender number: node id; seq from
/// `first`), and waits until every one of `to` delivered all of them.
fn exchange(members: &[&Member3], to: &[&Member3], first: u64, count: u64) {
    for m in members {
        for seq in first..first + count {
            m.send(payload(m.member().nodeid, seq, 0));
        }
    }
    for t in to {
        for m in members {
            t.log().wait_message(m.member().nodeid, first + count - 1);
        }
    }
}

/// Asserts that `members` saw the same in the view of `ring`; returns it.
fn assert_same(what: &str, members: &[&Member3], ring: RingId) -> Vec<Seen> {
    let first = in_ring(&members[0].log().events(), ring)
        .unwrap_or_else(|| panic!("{what}: {} has no view of ring {ring}", members[0].name()))
        .1;
    for m in &members[1..] {
        let seen = in_ring(&m.log().events(), ring)
            .unwrap_or_else(|| panic!("{what}: {} has no view of ring {ring}", m.name()))
            .1;
        assert_eq!(
            seen,
            first,
            "{what}: {} and {} judged the messages of ring {ring} differently",
            m.name(),
            members[0].name()
        );
    }
    first
}

/// The agreed states of the messages in `seen`.
fn message_states(seen: &[Seen]) -> Vec<AgreedQuorum> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Message(_, q, _) => Some(*q),
            Seen::Quorum(..) => None,
        })
        .collect()
}

/// The design's premise, checked on a member's whole log: a view made by a change of
/// nodes settles (the totem change of its ring comes) before any message of the view
/// is delivered, and the agreed state is reported pending right after every view.
fn assert_totem_before_messages(m: &Member3) {
    let events = m.log().events();
    for (i, e) in events.iter().enumerate() {
        let Event::View(view) = e else { continue };
        let rest = &events[i + 1..];
        let settled = rest
            .iter()
            .position(|e| matches!(e, Event::Settled { view: v, .. } if *v == view.id()));
        let first_message = rest
            .iter()
            .position(|e| matches!(e, Event::Message(d) if d.position.view == view.id()));
        if let (Some(s), Some(msg)) = (settled, first_message) {
            assert!(
                s < msg,
                "{}: a message of {view} came before its totem change",
                m.name()
            );
        }
        assert!(
            matches!(
                rest.first(),
                Some(Event::Quorum { view: v, state: AgreedQuorum::Pending, index: 0 })
                    if *v == view.id()
            ),
            "{}: {view} is not followed by the pending state: {:?}",
            m.name(),
            rest.first()
        );
    }
}

/// Waits until `m`'s local quorum is the notification of `ring`.
fn wait_local_ring(m: &Member3, ring: RingId) {
    let deadline = Instant::now() + WAIT;
    while !matches!(m.local(), LocalQuorum::Known { ring: r, .. } if r == ring) {
        assert!(
            Instant::now() < deadline,
            "{}: no notification of {ring}: {:?}",
            m.name(),
            m.local()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `m`'s local quorum is a notification of a ring other than `old` that
/// says `quorate`.
fn wait_local(m: &Member3, old: RingId, quorate: bool) -> RingId {
    let deadline = Instant::now() + WAIT;
    loop {
        if let LocalQuorum::Known { quorate: q, ring } = m.local() {
            if ring != old && q == quorate {
                return ring;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{}: no notification (quorate {quorate}) of a ring after {old}: {:?}",
            m.name(),
            m.local()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_partitioned_minority_is_not_quorate_at_an_agreed_point_in_either_notification_order() {
    big_stack(|| {
        let cluster = Cluster::builder()
            .nodes(3)
            .quorum(cpg_testkit::Quorum::votequorum())
            .start()
            .unwrap_or_else(|e| panic!("cannot start a 3-node votequorum cluster:\n{e}"));
        std::thread::scope(|scope| partition_and_heal(scope, &cluster));
    });
}

fn partition_and_heal<'s, 'e>(scope: &'s Scope<'s, 'e>, cluster: &'e Cluster) {
    let within = bound(cluster);
    let group = unique_group("group-quorum");
    let members = [
        Member3::Blocking(Participant::start(
            cluster.node(0),
            "node1",
            &group,
            Config::default(),
        )),
        Member3::Blocking(Participant::start(
            cluster.node(1),
            "node2",
            &group,
            Config::default(),
        )),
        Member3::Async(AsyncMember::start(scope, cluster.node(2), "node3", group)),
    ];
    let [n1, n2, n3] = &members;
    // The same cluster, another group, quorum ignored.
    let ignoring = {
        let mut config = Config::default();
        config.quorum = QuorumPolicy::Ignore;
        let other = unique_group("group-quorum-ignored");
        [0, 2].map(|i| {
            let name = format!("ignoring{}", i + 1);
            Member3::Blocking(Participant::start(
                cluster.node(i),
                &name,
                &other,
                config.clone(),
            ))
        })
    };
    let all: Vec<Member> = members.iter().map(Member3::member).collect();
    let majority = &all[..2];
    let alone = &all[2..];

    // The whole cluster is quorate, at an agreed point, on every member.
    let start = Instant::now();
    let mut rings = Vec::new();
    for m in &members {
        let quorate = |q| matches!(q, AgreedQuorum::Quorate(_));
        rings.push(wait_agreed(m, &all, WAIT, start, quorate).0);
        assert!(m.local().permits(), "{}: {:?}", m.name(), m.local());
    }
    assert!(rings.iter().all(|r| *r == rings[0]), "one view: {rings:?}");
    exchange(&[n1, n2, n3], &[n1, n2, n3], 0, 3);

    // 1. A partition, notifications in whatever order the daemons give them.
    let cut = Instant::now();
    cluster.partition(2);
    let (r_alone, took_alone) = wait_agreed(n3, alone, within, cut, |q| {
        matches!(q, AgreedQuorum::NotQuorate(_))
    });
    let mut took = vec![took_alone];
    let mut r_major = Vec::new();
    for m in [n1, n2] {
        let (r, t) = wait_agreed(m, majority, within, cut, |q| {
            matches!(q, AgreedQuorum::Quorate(_))
        });
        r_major.push(r);
        took.push(t);
    }
    assert_eq!(r_major[0], r_major[1], "nodes 1 and 2 are in one ring");
    for t in &took {
        assert!(
            *t <= within,
            "the partition took {t:?} to be agreed (bound {within:?})"
        );
    }
    let r_major = r_major[0];
    assert!(
        matches!(n3.local(), LocalQuorum::Known { quorate: false, .. }),
        "{:?}",
        n3.local()
    );
    assert!(!n3.local().permits());
    exchange(&[n1, n2], &[n1, n2], 10, 3);
    exchange(&[n3], &[n3], 10, 3);
    let seen = assert_same("partition", &[n1, n2], r_major);
    assert!(
        message_states(&seen).iter().all(|q| q.permits()),
        "sent after the majority's marker: {seen:?}"
    );
    let seen = in_ring(&n3.log().events(), r_alone)
        .expect("node 3's view")
        .1;
    let states = message_states(&seen);
    assert_eq!(
        states.len(),
        3,
        "node 3 delivers its own messages: {seen:?}"
    );
    assert!(
        states.iter().all(|q| !q.permits()),
        "node 3 alone never judges a message quorate: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| matches!(s, Seen::Quorum(AgreedQuorum::NotQuorate(_), _))),
        "{seen:?}"
    );

    // The ignoring group: everything free, even on the minority.
    ignoring[1].send(payload(3, 0, 0));
    ignoring[1].log().wait_message(3, 0);
    for m in &ignoring {
        let events = m.log().events();
        assert!(
            !events.iter().any(|e| matches!(e, Event::Quorum { .. })),
            "{}",
            m.name()
        );
        assert!(
            events
                .iter()
                .all(|e| !matches!(e, Event::Message(d) if d.quorum != AgreedQuorum::Free)),
            "{}",
            m.name()
        );
        assert_eq!(m.local(), LocalQuorum::Free, "{}", m.name());
        assert_eq!(
            m.stats().markers,
            0,
            "{}: no markers in the ignoring group",
            m.name()
        );
    }

    // The heal: all quorate again, in one merged ring.
    let healed = Instant::now();
    cluster.heal(2);
    let mut merged = Vec::new();
    for m in &members {
        let (r, t) = wait_agreed(m, &all, within, healed, |q| {
            matches!(q, AgreedQuorum::Quorate(_))
        });
        assert!(
            t <= within,
            "{}: the heal took {t:?} to be agreed (bound {within:?})",
            m.name()
        );
        merged.push(r);
        took.push(t);
    }
    assert!(merged.iter().all(|r| *r == merged[0]), "{merged:?}");
    exchange(&[n1, n2, n3], &[n1, n2, n3], 20, 2);
    assert_same("heal", &[n1, n2, n3], merged[0]);
    eprintln!(
        "group quorum on a 3-node votequorum cluster (token {} ms): partition agreed \
         within {:?} (node 3 alone not quorate in {r_alone}, nodes 1-2 quorate in \
         {r_major}), heal within {:?}",
        cluster.token_ms(),
        took[..3].iter().max().unwrap(),
        took[3..].iter().max().unwrap()
    );

    // 2. The same partition with the orders forced: node 1 gets CPG's change first
    // (its quorum events held), node 2 and node 3 the quorum first (their CPG
    // events held).
    let before = merged[0];
    for m in &members {
        wait_local_ring(m, before);
    }
    n1.hold(false, true);
    n2.hold(true, false);
    n3.hold(true, false);
    cluster.partition(2);
    let r_cpg_first = n1
        .log()
        .wait_for("node 1's view of the partition", WAIT + within, |e| {
            settled_state(e, majority).map(|(r, _)| r)
        });
    assert!(
        matches!(n1.local(), LocalQuorum::Known { ring, .. } if ring == before),
        "node 1's quorum is held: {:?}",
        n1.local()
    );
    wait_local(n2, before, true);
    let r3 = wait_local(n3, before, false);
    for m in [n2, n3] {
        assert_eq!(
            latest_view(&m.log().events()).map(|v| v.len()),
            Some(3),
            "{}: CPG held",
            m.name()
        );
    }
    // Messages sent while no member can know both: pending wherever delivered.
    n1.send(payload(1, 30, 0));
    n2.send(payload(2, 30, 0));
    n3.send(payload(3, 30, 0));
    n1.log().wait_message(2, 30);
    assert_eq!(
        settled_state(&n1.log().events(), majority),
        Some((r_cpg_first, AgreedQuorum::Pending)),
        "nobody knows both yet: no marker"
    );
    for m in &members {
        m.hold(false, false);
    }
    let now = Instant::now();
    let quorate = |q| matches!(q, AgreedQuorum::Quorate(_));
    let (r, _) = wait_agreed(n1, majority, WAIT, now, quorate);
    assert_eq!(r, r_cpg_first);
    wait_agreed(n2, majority, WAIT, now, quorate);
    wait_agreed(n3, alone, WAIT, now, |q| {
        matches!(q, AgreedQuorum::NotQuorate(_))
    });
    exchange(&[n1, n2], &[n1, n2], 31, 2);
    n3.send(payload(3, 31, 0));
    n3.log().wait_message(3, 31);
    let seen = assert_same("orders forced", &[n1, n2], r_cpg_first);
    let states = message_states(&seen);
    assert_eq!(&states[..2], &[AgreedQuorum::Pending; 2], "held: {seen:?}");
    assert!(
        states.len() == 6 && states[2..].iter().all(|q| q.permits()),
        "{seen:?}"
    );
    let seen = in_ring(&n3.log().events(), r3).expect("node 3's view").1;
    assert!(
        message_states(&seen).iter().all(|q| !q.permits()),
        "{seen:?}"
    );

    // The heal with orders forced too: nodes 2 and 3 get CPG's change first, node 1
    // the quorum first.
    // Node 1's latest word must be of its partition's ring, so that the merged ring's
    // can be told from it.
    wait_local_ring(n1, r_cpg_first);
    n3.hold(false, true);
    n2.hold(false, true);
    n1.hold(true, false);
    cluster.heal(2);
    for i in 0..3 {
        cluster
            .wait_members(i, &[1, 2, 3], WAIT)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let r_heal = n3.log().wait_for("node 3's merged view", WAIT, |e| {
        settled_state(e, &all).map(|(r, _)| r)
    });
    let r2 = n2.log().wait_for("node 2's merged view", WAIT, |e| {
        settled_state(e, &all).map(|(r, _)| r)
    });
    assert_eq!(r2, r_heal);
    wait_local(n1, r_cpg_first, true);
    assert_eq!(
        latest_view(&n1.log().events()).map(|v| v.len()),
        Some(2),
        "node 1: CPG held"
    );
    n3.send(payload(3, 40, 0));
    n3.log().wait_message(3, 40);
    n2.log().wait_message(3, 40);
    for m in [n2, n3] {
        assert_eq!(
            settled_state(&m.log().events(), &all),
            Some((r_heal, AgreedQuorum::Pending)),
            "{}: nobody knows both yet: no marker",
            m.name()
        );
    }
    for m in &members {
        m.hold(false, false);
    }
    for m in &members {
        let (r, _) = wait_agreed(m, &all, WAIT, Instant::now(), quorate);
        assert_eq!(r, r_heal, "{}", m.name());
    }
    exchange(&[n1, n2, n3], &[n1, n2, n3], 41, 2);
    let seen = assert_same("heal, orders forced", &[n1, n2, n3], r_heal);
    let states = message_states(&seen);
    assert_eq!(
        states[0],
        AgreedQuorum::Pending,
        "sent while held: {seen:?}"
    );
    assert!(states[1..].iter().all(|q| q.permits()), "{seen:?}");

    // 3. Lost daemons: nodes 1 and 3 are killed (node 2 alone is not quorate), then
    // restarted; their members (one of each driver) make new CPG and quorum
    // connections and agree with node 2 again.
    let marks: Vec<usize> = members.iter().map(|m| m.log().len()).collect();
    cluster.kill_daemon(0);
    cluster.kill_daemon(2);
    let lost = Instant::now();
    wait_agreed_after(n2, marks[1], &all[1..2], within, lost, |q| {
        matches!(q, AgreedQuorum::NotQuorate(_))
    });
    for m in [n1, n3] {
        m.log().wait_for("the lost daemon", WAIT, |e| {
            e.iter()
                .any(|e| matches!(e, Event::Disconnected { .. }))
                .then_some(())
        });
        assert_eq!(
            m.local(),
            LocalQuorum::Unknown,
            "{}: no connection",
            m.name()
        );
    }
    cluster.restart_daemon(0);
    cluster.restart_daemon(2);
    let mut rings = Vec::new();
    for (m, mark) in members.iter().zip(&marks) {
        rings.push(wait_agreed_after(m, *mark, &all, WAIT * 2, Instant::now(), quorate).0);
    }
    assert!(rings.iter().all(|r| *r == rings[0]), "{rings:?}");
    for m in &members {
        // The new quorum connections' first notification comes at once (tracking
        // starts with the current state), though possibly after another member's
        // marker made the state agreed.
        wait_local(m, RingId { nodeid: 0, seq: 0 }, true);
    }
    for m in [n1, n3] {
        let reconnected = m
            .log()
            .events()
            .iter()
            .any(|e| matches!(e, Event::Reconnected { incarnation, .. } if *incarnation > 1));
        assert!(reconnected, "{}", m.name());
    }
    exchange(&[n1, n2, n3], &[n1, n2, n3], 50, 2);
    let seen = assert_same("after the restarts", &[n1, n2, n3], rings[0]);
    assert!(
        message_states(&seen).iter().all(|q| q.permits()),
        "{seen:?}"
    );

    for m in &members {
        assert_totem_before_messages(m);
        assert!(m.stats().markers > 0, "{}", m.name());
    }
}

/// A raw CPG member beside a group member of `config` on a cluster without a quorum
/// provider: everything the group delivers is free, no quorum event comes, the frames
/// on the wire are the application's only (version 1), and a marker or a foreign
/// control frame from the raw member changes nothing.
fn free_without_provider(cluster: &Cluster, config: Config) {
    let group = unique_group("group-quorum-free");
    let member = Participant::start(cluster.node(0), "node1", &group, config);
    let raw = Peer::pumped(cluster, 1);
    raw.handle().join(&group).expect("join");
    let both = [member.member(), Member::new(2, pid())];
    member.log().wait_view(&both);
    assert_eq!(member.group().quorum(), LocalQuorum::Free);
    // One at a time, each back before the next: each goes alone, so the raw member
    // sees one frame per message (queued together they would share a batch).
    for seq in 0..5 {
        member.group().send(payload(1, seq, 0)).unwrap();
        member.log().wait_message(1, seq);
    }
    pump_until(&[&raw], WAIT, "the group member's messages", || {
        raw.messages(&group).len() >= 5
    });
    // A marker for the ring, and a control frame of a kind nobody knows.
    let ring = latest_view(&member.log().events())
        .and_then(|v| v.ring())
        .expect("a ring");
    let mut marker = b"CPGl\x02\x01\0\0".to_vec();
    marker.extend_from_slice(&7u64.to_le_bytes());
    marker.extend_from_slice(&ring.nodeid.to_le_bytes());
    marker.extend_from_slice(&ring.seq.to_le_bytes());
    marker.extend_from_slice(&[0, 0, 0, 0]);
    let mut foreign = marker.clone();
    foreign[5] = 0x42;
    raw.handle().send(&marker).expect("send a marker");
    raw.handle().send(&foreign).expect("send a foreign frame");
    raw.handle()
        .send(&payload(9, 0, 0))
        .expect("send a raw message");
    member.group().send(payload(1, 5, 0)).unwrap();
    member.log().wait_message(1, 5);
    pump_for(&[&raw], Duration::from_millis(500));
    let frames: Vec<Vec<u8>> = raw
        .messages(&group)
        .into_iter()
        .filter(|(node, _)| *node == 1)
        .map(|(_, data)| data)
        .collect();
    assert_eq!(
        frames.len(),
        6,
        "the application's 6 messages and nothing else"
    );
    assert!(
        frames.iter().all(|f| f[..5] == *b"CPGl\x01"),
        "version 1 only"
    );
    let events = member.log().events();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Quorum { .. })),
        "{events:?}"
    );
    let malformed: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Malformed { .. }))
        .collect();
    assert_eq!(
        malformed.len(),
        2,
        "the foreign frame and the raw message: {malformed:?}"
    );
    let quorums: Vec<AgreedQuorum> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message(d) => Some(d.quorum),
            _ => None,
        })
        .collect();
    assert_eq!(quorums, vec![AgreedQuorum::Free; 6]);
    let stats = member.group().stats();
    assert_eq!(
        (stats.markers_sent, stats.markers),
        (0, 1),
        "only the raw member's"
    );
    assert_eq!(member.group().agreed_quorum(), AgreedQuorum::Free);
}

#[test]
fn without_a_provider_the_default_and_the_ignore_policy_are_free_and_send_no_markers() {
    big_stack(|| {
        let cluster = Cluster::start(2);
        free_without_provider(&cluster, Config::default());
        let mut ignore = Config::default();
        ignore.quorum = QuorumPolicy::Ignore;
        free_without_provider(&cluster, ignore);
    });
}
