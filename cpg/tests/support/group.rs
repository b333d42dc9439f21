//! Members of the group layer ([`cpg::group::Group`]) started on the nodes of a real
//! [`cpg_testkit::Cluster`], each a [`Participant`] with a thread that records every
//! event it produces, in order, into a [`Log`] the test waits on with bounded waits.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cpg::group::{Config, Event, Group, View};
use cpg::{GroupName, Member};
use cpg_testkit::{Cluster, Node};

use super::log::{Log, Observed};
use super::WAIT;

/// A test payload: who sent it (a number the test chose) and its sequence number,
/// little-endian, then `pad` bytes.
pub fn payload(sender: u32, seq: u64, pad: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + pad);
    p.extend_from_slice(&sender.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.resize(12 + pad, (seq % 251) as u8);
    p
}

/// The (sender, seq) of a test payload.
pub fn decode(data: &[u8]) -> (u32, u64) {
    assert!(data.len() >= 12, "payload of {} bytes", data.len());
    let sender = u32::from_le_bytes(data[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(data[4..12].try_into().unwrap());
    assert!(
        data[12..].iter().all(|&b| b == (seq % 251) as u8),
        "payload {sender}/{seq}: padding differs"
    );
    (sender, seq)
}

impl Observed for Event {
    fn is_message(&self) -> bool {
        matches!(self, Event::Message(_) | Event::Confirmed { .. })
    }
}

impl Log<Event> {
    /// Waits until the latest view lists exactly `members` (any order); returns it.
    pub fn wait_view(&self, members: &[Member]) -> View {
        let mut want = members.to_vec();
        want.sort();
        self.wait_for(&format!("a view of {want:?}"), WAIT, |events| {
            latest_view(events).filter(|v| v.members() == want)
        })
    }

    /// Waits until a message `(sender, seq)` has been delivered.
    pub fn wait_message(&self, sender: u32, seq: u64) {
        self.wait_for(&format!("message {sender}/{seq}"), WAIT, |events| {
            messages(events).contains(&(sender, seq)).then_some(())
        })
    }
}

/// The latest view in `events`.
pub fn latest_view(events: &[Event]) -> Option<View> {
    events.iter().rev().find_map(|e| match e {
        Event::View(v) => Some(v.clone()),
        _ => None,
    })
}

/// Every view in `events`, in order.
pub fn views(events: &[Event]) -> Vec<View> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::View(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

/// The (sender, seq) of every delivered message in `events`, in delivery order.
pub fn messages(events: &[Event]) -> Vec<(u32, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(d) => Some(decode(&d.data)),
            _ => None,
        })
        .collect()
}

/// One member of the group layer on a node, its events recorded by a thread of its own.
pub struct Participant {
    name: String,
    group: Option<Arc<Group>>,
    log: Log<Event>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Participant {
    /// Starts a [`Group`] member of `group` on `node` (its dispatch thread lives in
    /// the node's network namespace, so it reconnects to the same daemon) and waits
    /// for its first view.
    ///
    /// # Panics
    ///
    /// If it cannot connect and join.
    pub fn start(node: &Node, name: &str, group: &GroupName, config: Config) -> Participant {
        let g = node
            .enter(|| Group::builder(*group).config(config).start())
            .unwrap_or_else(|e| panic!("{name}: cannot join on node {}: {e}", node.nodeid()));
        let group = Arc::new(g);
        let log = Log::new(name);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (group, log, stop) = (Arc::clone(&group), log.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("{name}-events"))
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match group.next_event(Duration::from_millis(50)) {
                            Some(e) => log.push(e),
                            None if group.end().is_some() => break,
                            None => {}
                        }
                    }
                })
                .expect("spawn a recorder thread")
        };
        let peer = Participant {
            name: name.to_string(),
            group: Some(group),
            log,
            stop,
            thread: Some(thread),
        };
        peer.log
            .wait_for("the first view", WAIT, |e| latest_view(e).map(|_| ()));
        assert_eq!(
            peer.group().me().map(|m| m.nodeid),
            Some(node.nodeid()),
            "{name}: identity"
        );
        peer
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group layer.
    pub fn group(&self) -> &Group {
        self.group.as_ref().expect("running")
    }

    /// What it observed.
    pub fn log(&self) -> &Log<Event> {
        &self.log
    }

    /// This member as CPG reports it.
    pub fn member(&self) -> Member {
        self.group()
            .me()
            .expect("identity known after the first view")
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drop(self.group.take());
    }
}

/// Starts a [`Participant`] of `group` with `config` on each of the nodes `nodes`
/// (indexes into `cluster`), one after the other, named `node1`, `node2`, ... by node;
/// each has its first view when this returns.
pub fn start_on(
    cluster: &Cluster,
    nodes: Range<usize>,
    group: &GroupName,
    config: &Config,
) -> Vec<Participant> {
    nodes
        .map(|i| {
            Participant::start(
                cluster.node(i),
                &format!("node{}", i + 1),
                group,
                config.clone(),
            )
        })
        .collect()
}

/// [`start_on`] every node of `cluster`, then waits until each participant has
/// installed the view of all of them. Returns the participants and that view's
/// members, in node order.
pub fn start_all(
    cluster: &Cluster,
    group: &GroupName,
    config: &Config,
) -> (Vec<Participant>, Vec<Member>) {
    let peers = start_on(cluster, 0..cluster.nodes().len(), group, config);
    let all: Vec<Member> = peers.iter().map(Participant::member).collect();
    for p in &peers {
        p.log().wait_view(&all);
    }
    (peers, all)
}

/// Asserts that `peers` (all in one partition) agree on the latest view: the same
/// members, the same leader, and exactly that one of them says it leads. Returns the
/// leader.
pub fn assert_agree(what: &str, peers: &[&Participant]) -> Member {
    let views: Vec<View> = peers
        .iter()
        .map(|p| latest_view(&p.log().events()).unwrap_or_else(|| panic!("{}: no view", p.name())))
        .collect();
    let first = &views[0];
    for (p, v) in peers.iter().zip(&views) {
        assert_eq!(
            v.members(),
            first.members(),
            "{what}: {} and {} see different members",
            p.name(),
            peers[0].name()
        );
        assert_eq!(v.leader(), first.leader(), "{what}: {}'s leader", p.name());
    }
    let leader = first.leader().expect("a non-empty view");
    assert_eq!(
        leader,
        first.members()[0],
        "{what}: the lowest (node id, pid) leads"
    );
    let leading: Vec<&str> = peers
        .iter()
        .zip(&views)
        .filter(|(_, v)| v.is_leader())
        .map(|(p, _)| p.name())
        .collect();
    let expected: Vec<&str> = peers
        .iter()
        .zip(&views)
        .filter(|(_, v)| v.me() == Some(leader))
        .map(|(p, _)| p.name())
        .collect();
    assert_eq!(leading, expected, "{what}: who says it leads");
    leader
}
