//! Shared by the `group_*` tests: group members ([`cpg::group::Group`]) started on the
//! nodes of a real [`cpg_testkit::Cluster`], each with a thread that records every
//! event it produces, in order, into a [`Log`] the test waits on with bounded waits.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpg::group::{Config, Event, Group, View};
use cpg::{GroupName, Member};
use cpg_testkit::Node;

/// Bound for every wait on a view, a delivery or a reconnect: token (1 s), consensus,
/// sync and a loaded 2-core machine fit well inside.
pub const WAIT: Duration = Duration::from_secs(30);

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

/// The events one member produced, shared between its recorder thread and the test.
#[derive(Clone)]
pub struct Log {
    name: Arc<str>,
    inner: Arc<(Mutex<Vec<Event>>, Condvar)>,
}

impl Log {
    fn new(name: &str) -> Log {
        Log {
            name: name.into(),
            inner: Arc::new((Mutex::new(Vec::new()), Condvar::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, e: Event) {
        self.lock().push(e);
        self.inner.1.notify_all();
    }

    /// A copy of all events so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    /// Number of events so far (a mark for [`Log::since`]).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Events from `mark` on.
    pub fn since(&self, mark: usize) -> Vec<Event> {
        self.lock()[mark..].to_vec()
    }

    /// Waits until `check` returns `Some` for the events so far.
    ///
    /// # Panics
    ///
    /// After `timeout`, naming `what` and the last events that are not messages.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[Event]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut events = self.lock();
        loop {
            if let Some(found) = check(&events) {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                let tail: Vec<String> = events
                    .iter()
                    .filter(|e| !matches!(e, Event::Message(_) | Event::Confirmed { .. }))
                    .rev()
                    .take(10)
                    .map(|e| format!("  {e:?}"))
                    .collect();
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what}; {} events; last \
                     non-message events (newest first):\n{}",
                    self.name,
                    events.len(),
                    tail.join("\n")
                );
            }
            events = self
                .inner
                .1
                .wait_timeout(events, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

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

/// One group member on a node, its events recorded by a thread of its own.
pub struct Peer {
    name: String,
    group: Option<Arc<Group>>,
    log: Log,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Peer {
    /// Starts a [`Group`] member of `group` on `node` (its dispatch thread lives in
    /// the node's network namespace, so it reconnects to the same daemon) and waits
    /// for its first view.
    ///
    /// # Panics
    ///
    /// If it cannot connect and join.
    pub fn start(node: &Node, name: &str, group: &GroupName, config: Config) -> Peer {
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
        let peer = Peer {
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
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// This member as CPG reports it.
    pub fn member(&self) -> Member {
        self.group()
            .me()
            .expect("identity known after the first view")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drop(self.group.take());
    }
}

/// Asserts that `peers` (all in one partition) agree on the latest view: the same
/// members, the same leader, and exactly that one of them says it leads. Returns the
/// leader.
pub fn assert_agree(what: &str, peers: &[&Peer]) -> Member {
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
