//! Scenarios on a multi-node [`cpg_testkit::Cluster`]: threaded [`Peer`]s joined on
//! every node, the checks on what each delivered (every test message intact, each
//! sender's messages complete and in order, one order on every member, who left or
//! joined and why), and back-pressure on demand ([`stoppable_pair`], [`Paused`]).

use std::collections::BTreeSet;

use cpg::{GroupName, Member, Reason};

use super::event::{sorted, Event};
use super::log::Log;
use super::peer::Peer;
use super::WAIT;

/// One threaded peer per node of `cluster`, named `node1`, `node2`, ..., all joined to
/// `group`; returns once every peer sees all of them as members.
pub fn join_every_node(cluster: &cpg_testkit::Cluster, group: &GroupName) -> Vec<Peer> {
    let peers: Vec<Peer> = cluster
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, node)| Peer::threaded(node, &format!("node{}", i + 1), group))
        .collect();
    let all: Vec<Member> = peers.iter().map(Peer::member).collect();
    for p in &peers {
        p.log().wait_members(&all, WAIT);
    }
    peers
}

/// Everyone who left in the membership changes of `events`, with the reason.
pub fn left_in(events: &[Event]) -> BTreeSet<(Member, ReasonKey)> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::Conf { left, .. } => left.clone(),
            _ => Vec::new(),
        })
        .map(|(m, r)| (m, ReasonKey(r.to_raw())))
        .collect()
}

/// Everyone who joined in the membership changes of `events`, with the reason.
pub fn joined_in(events: &[Event]) -> BTreeSet<(Member, ReasonKey)> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::Conf { joined, .. } => joined.clone(),
            _ => Vec::new(),
        })
        .map(|(m, r)| (m, ReasonKey(r.to_raw())))
        .collect()
}

/// A [`Reason`] that can be put in an ordered set (its raw value), printed by name.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReasonKey(pub u32);

impl From<Reason> for ReasonKey {
    fn from(r: Reason) -> Self {
        ReasonKey(r.to_raw())
    }
}

impl std::fmt::Debug for ReasonKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Reason::from_raw(self.0))
    }
}

/// `members`, each with `reason`, as a set comparable with [`left_in`] / [`joined_in`].
pub fn with_reason(members: &[Member], reason: Reason) -> BTreeSet<(Member, ReasonKey)> {
    members.iter().map(|m| (*m, reason.into())).collect()
}

/// The (sender, seq) of every test message in `events`, in delivery order.
pub fn messages(events: &[Event]) -> Vec<(u32, u64)> {
    events.iter().filter_map(Event::test_msg).collect()
}

/// A digest of a delivery sequence (FNV-1a over the sender and sequence numbers), for
/// comparing sequences recorded in other processes.
pub fn digest(msgs: &[(u32, u64)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (sender, seq) in msgs {
        for b in sender.to_le_bytes().into_iter().chain(seq.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The membership changes and messages of `events` (the stream that virtual synchrony
/// says is the same on every member that stays), without totem changes; the members
/// of each change sorted, so that members compare as sets.
pub fn group_stream(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Msg { .. } | Event::TestMsg { .. } | Event::Conf { .. }
            )
        })
        .map(|e| match e {
            Event::Conf {
                group,
                members,
                left,
                joined,
            } => Event::Conf {
                group: *group,
                members: sorted(members),
                left: left.clone(),
                joined: joined.clone(),
            },
            other => other.clone(),
        })
        .collect()
}

/// Asserts that no delivered message had wrong bytes.
pub fn assert_intact(log: &Log<Event>) {
    let bad: Vec<Event> = log
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Corrupt { .. }))
        .collect();
    assert!(
        bad.is_empty(),
        "{}: corrupt deliveries: {bad:?}",
        log.name()
    );
}

/// Asserts that `sender`'s messages in `msgs` are exactly `0..count`, in order: FIFO,
/// none missing, none duplicated.
pub fn assert_fifo_complete(who: &str, msgs: &[(u32, u64)], sender: u32, count: u64) {
    let got: Vec<u64> = msgs
        .iter()
        .filter(|(s, _)| *s == sender)
        .map(|(_, q)| *q)
        .collect();
    if let Some(i) = got.iter().enumerate().position(|(i, q)| *q != i as u64) {
        panic!(
            "{who}: sender {sender}'s message #{i} is seq {} (expected {i}); around it: {:?}",
            got[i],
            &got[i.saturating_sub(3)..(i + 3).min(got.len())]
        );
    }
    assert_eq!(
        got.len() as u64,
        count,
        "{who}: {} of sender {sender}'s {count} messages delivered",
        got.len()
    );
}

/// Asserts that two delivery streams are identical, naming the first difference.
pub fn assert_same_stream<T: PartialEq + std::fmt::Debug>(a: (&str, &[T]), b: (&str, &[T])) {
    if let Some(i) = a.1.iter().zip(b.1).position(|(x, y)| x != y) {
        panic!(
            "{} and {} differ at delivery #{i}: {:?} vs {:?}",
            a.0, b.0, a.1[i], b.1[i]
        );
    }
    assert_eq!(
        a.1.len(),
        b.1.len(),
        "{} delivered {} events, {} delivered {} (one is a prefix of the other)",
        a.0,
        a.1.len(),
        b.0,
        b.1.len()
    );
}

/// A 2-node cluster whose second daemon can be stopped ([`Paused`]): back-pressure on
/// demand. With node 2's daemon stopped, the ring cannot order anything until the
/// token (`token_ms`) times out, so node 1's daemon fills its queue and answers sends
/// with `CS_ERR_TRY_AGAIN`, however slow the client (valgrind) is.
pub fn stoppable_pair(token_ms: u32) -> std::sync::Arc<cpg_testkit::Cluster> {
    std::sync::Arc::new(
        cpg_testkit::Cluster::builder()
            .nodes(2)
            .token_ms(token_ms)
            .start()
            .expect("cluster"),
    )
}

/// A daemon stopped with SIGSTOP until this is dropped (also when the test fails):
/// then SIGCONT.
pub struct Paused(u32);

impl Paused {
    /// Stops the daemon `pid` (one the test's cluster started, alive).
    pub fn pause(pid: u32) -> Paused {
        // SAFETY: signals a daemon this test's cluster started (its pid, alive).
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as in `pause`.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}
