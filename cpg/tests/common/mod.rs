//! Shared pieces of the safe-API tests: a recorder of owned events, a two-node cluster
//! shared by the tests of one test binary, and pumping helpers.
//!
//! Corosync identifies a group member by (node id, pid), so one process cannot have two
//! handles in the same group on the same node (the second join gets `CS_ERR_EXIST`).
//! Tests that need two members in one process put them on two nodes.
#![allow(dead_code)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cpg::{Confchg, ConnectionRef, GroupName, Handle, Message, Reason, RingId, TotemConfchg};
use cpg_testkit::Cluster;

/// An event, copied out of a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Msg {
        group: Vec<u8>,
        nodeid: u32,
        pid: u32,
        data: Vec<u8>,
    },
    Conf {
        group: Vec<u8>,
        members: Vec<(u32, u32)>,
        left: Vec<(u32, u32, Reason)>,
        joined: Vec<(u32, u32, Reason)>,
    },
    Totem {
        ring: RingId,
        nodes: Vec<u32>,
    },
}

impl Ev {
    pub fn from_msg(m: &Message<'_>) -> Ev {
        Ev::Msg {
            group: m.group.as_bytes().to_vec(),
            nodeid: m.nodeid,
            pid: m.pid,
            data: m.data.to_vec(),
        }
    }

    pub fn from_conf(c: &Confchg<'_>) -> Ev {
        let with_reason = |l: &[cpg::ListedMember]| {
            l.iter()
                .map(|a| (a.nodeid(), a.pid(), a.reason()))
                .collect()
        };
        Ev::Conf {
            group: c.group.as_bytes().to_vec(),
            members: c.members.iter().map(|a| (a.nodeid(), a.pid())).collect(),
            left: with_reason(c.left),
            joined: with_reason(c.joined),
        }
    }

    pub fn from_totem(t: &TotemConfchg<'_>) -> Ev {
        Ev::Totem {
            ring: t.ring_id,
            nodes: t.members.to_vec(),
        }
    }
}

/// A handle whose callbacks record every event.
pub struct Peer {
    pub handle: Handle,
    pub events: Arc<Mutex<Vec<Ev>>>,
}

impl Peer {
    /// Connects to node `i` of `cluster`, recording events.
    pub fn on(cluster: &Cluster, i: usize) -> Peer {
        Peer::with(cluster, i, false)
    }

    /// Like [`Peer::on`], optionally asking for the initial totem configuration.
    pub fn with(cluster: &Cluster, i: usize, initial_totem: bool) -> Peer {
        let events = Arc::new(Mutex::new(Vec::new()));
        let (e1, e2, e3) = (events.clone(), events.clone(), events.clone());
        let handle = cluster.node(i).enter(|| {
            Handle::builder()
                .on_deliver(move |_: &ConnectionRef, m| e1.lock().unwrap().push(Ev::from_msg(&m)))
                .on_confchg(move |_: &ConnectionRef, c| e2.lock().unwrap().push(Ev::from_conf(&c)))
                .on_totem_confchg(move |_: &ConnectionRef, t| {
                    e3.lock().unwrap().push(Ev::from_totem(&t))
                })
                .initial_totem_conf(initial_totem)
                .build()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot connect to node {}: {e}\n{}",
                        i + 1,
                        cluster.node(i).log_tail(20)
                    )
                })
        });
        Peer { handle, events }
    }

    pub fn events(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }

    /// Messages delivered in `group`, as (nodeid, data).
    pub fn messages(&self, group: &GroupName) -> Vec<(u32, Vec<u8>)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Msg {
                    group: g,
                    nodeid,
                    data,
                    ..
                } if g == group.as_bytes() => Some((nodeid, data)),
                _ => None,
            })
            .collect()
    }

    /// Configuration changes of `group`.
    pub fn confchgs(&self, group: &GroupName) -> Vec<Ev> {
        self.events()
            .into_iter()
            .filter(|e| matches!(e, Ev::Conf { group: g, .. } if g == group.as_bytes()))
            .collect()
    }

    /// The members reported by the last configuration change of `group`.
    pub fn last_members(&self, group: &GroupName) -> Option<Vec<(u32, u32)>> {
        self.confchgs(group)
            .into_iter()
            .rev()
            .find_map(|e| match e {
                Ev::Conf { members, .. } => Some(members),
                _ => None,
            })
    }
}

/// Dispatches every peer until `done` holds, failing the test after `timeout`.
pub fn pump_until(peers: &[&Peer], timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        for p in peers {
            p.handle
                .dispatch_timeout(Duration::from_millis(5))
                .unwrap_or_else(|e| panic!("dispatch while waiting for {what}: {e}"));
        }
    }
}

/// Dispatches every peer for `period`, for checks that something does *not* arrive.
pub fn pump_for(peers: &[&Peer], period: Duration) {
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        for p in peers {
            p.handle
                .dispatch_timeout(Duration::from_millis(5))
                .expect("dispatch");
        }
    }
}

/// A two-node cluster shared by the tests of this test binary (torn down by the
/// harness's watchdog when the process exits).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(2))
}

/// A group name no other test uses.
pub fn unique_group(tag: &str) -> GroupName {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    GroupName::new(format!("{tag}-{}-{n}", std::process::id())).unwrap()
}

/// Runs `f` on a thread with a stack large enough for libcpg's dispatch buffer, and
/// propagates its panic.
pub fn big_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let t = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(f)
        .expect("spawn test thread");
    match t.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

pub const WAIT: Duration = Duration::from_secs(20);
