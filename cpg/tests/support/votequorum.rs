//! The votequorum tests' helpers: handles whose notifications are recorded into the
//! quorum tests' [`Log`]s, waits on those records, a quorum device on a thread of its
//! own, and what `corosync-quorumtool` prints, parsed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpg::votequorum::{
    InfoFlags, NodeState, NodeStatus, QdeviceName, Track, VoteQuorum, VoteQuorumEvent,
};
use cpg::{CsError, RingId};
use cpg_testkit::Node;

use super::log::Log;
use super::quorum::{record, Record, Seen, Source};
use super::BIG_STACK;

/// A votequorum handle whose callbacks record every notification into `log`.
/// Connects to the daemon of the namespace the calling thread is in.
pub fn recording_votequorum(log: &Log<Record>) -> cpg::Result<VoteQuorum> {
    let (q, n, e) = (log.clone(), log.clone(), log.clone());
    VoteQuorum::builder()
        .on_quorum(move |x| record(&q, Seen::VoteQuorum(Source::Callback, x.into())))
        .on_nodelist(move |x| record(&n, Seen::VoteQuorum(Source::Callback, x.into())))
        .on_expected_votes(move |x| record(&e, Seen::VoteQuorum(Source::Callback, x.into())))
        .build()
}

/// One step of a dispatch thread for a votequorum handle.
pub fn votequorum_step(vq: &VoteQuorum) -> cpg::Result<()> {
    vq.dispatch_timeout(Duration::from_millis(50)).map(|_| ())
}

/// The votequorum events of `source` in `records`, from index `mark` on.
pub fn events_of(records: &[Record], mark: usize, source: Source) -> Vec<VoteQuorumEvent> {
    records[mark.min(records.len())..]
        .iter()
        .filter_map(|r| match &r.seen {
            Seen::VoteQuorum(s, event) if *s == source => Some(event.clone()),
            _ => None,
        })
        .collect()
}

/// `nodes` as (node id, state) pairs, in node id order (corosync 3.1.7 lists them in
/// no particular order: node 1 saw `[2, 3, 1]`).
pub fn states(nodes: &[NodeStatus]) -> Vec<(u32, NodeState)> {
    let mut states: Vec<_> = nodes.iter().map(|n| (n.nodeid(), n.state())).collect();
    states.sort_unstable_by_key(|(id, _)| *id);
    states
}

/// Waits until `log` holds, from index `mark` on, a quorum notification of `source`
/// saying `quorate` with exactly these node `states` (in node id order); returns when
/// it arrived.
pub fn wait_quorum(
    log: &Log<Record>,
    mark: usize,
    source: Source,
    quorate: bool,
    expect: &[(u32, NodeState)],
    within: Duration,
) -> Instant {
    let what = format!("a {source:?} quorum notification: quorate {quorate}, nodes {expect:?}");
    log.wait_for(&what, within, |records| {
        records[mark.min(records.len())..]
            .iter()
            .find_map(|r| match &r.seen {
                Seen::VoteQuorum(
                    s,
                    VoteQuorumEvent::Quorum {
                        quorate: q, nodes, ..
                    },
                ) if *s == source && *q == quorate && states(nodes) == expect => Some(r.at),
                _ => None,
            })
    })
}

/// Waits until `log` holds, from index `mark` on, an expected votes notification of
/// `source` with `expected`.
pub fn wait_expected(
    log: &Log<Record>,
    mark: usize,
    source: Source,
    expected: u32,
    within: Duration,
) {
    let what = format!("a {source:?} expected votes notification of {expected}");
    log.wait_for(&what, within, |records| {
        records[mark.min(records.len())..]
            .iter()
            .find_map(|r| match &r.seen {
                Seen::VoteQuorum(s, VoteQuorumEvent::ExpectedVotes { expected_votes, .. })
                    if *s == source && *expected_votes == expected =>
                {
                    Some(())
                }
                _ => None,
            })
    })
}

/// Waits until the ring of the latest node list notification in `log` (from `mark` on)
/// has exactly `members` (sorted); returns it.
pub fn wait_ring(
    log: &Log<Record>,
    mark: usize,
    source: Source,
    members: &[u32],
    within: Duration,
) -> RingId {
    let what = format!("a {source:?} node list notification with members {members:?}");
    log.wait_for(&what, within, |records| {
        records[mark.min(records.len())..]
            .iter()
            .rev()
            .find_map(|r| match &r.seen {
                Seen::VoteQuorum(
                    s,
                    VoteQuorumEvent::NodeList {
                        ring_id,
                        members: m,
                        ..
                    },
                ) if *s == source => Some((*ring_id, super::quorum::sorted(m))),
                _ => None,
            })
            .filter(|(_, m)| m == members)
            .map(|(ring, _)| ring)
    })
}

/// What `corosync-quorumtool` printed: its `Key: value` lines, and the rows of its
/// membership table (node id, votes, name).
#[derive(Debug)]
pub struct QuorumTool {
    pub text: String,
    pub fields: BTreeMap<String, String>,
    pub members: Vec<(u32, u32, String)>,
}

impl QuorumTool {
    /// The first word of field `key`.
    pub fn word(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {key:?} in:\n{}", self.text))
    }

    /// Field `key` as a number (its first word).
    pub fn number(&self, key: &str) -> u32 {
        let word = self.word(key);
        word.parse()
            .unwrap_or_else(|e| panic!("{key}: {word:?}: {e}\n{}", self.text))
    }

    /// The "Flags" field as [`InfoFlags`] (quorumtool prints the first seven flags).
    pub fn flags(&self) -> InfoFlags {
        let names = [
            ("2Node", InfoFlags::TWO_NODE),
            ("Quorate", InfoFlags::QUORATE),
            ("WaitForAll", InfoFlags::WAIT_FOR_ALL),
            ("LastManStanding", InfoFlags::LAST_MAN_STANDING),
            ("AutoTieBreaker", InfoFlags::AUTO_TIE_BREAKER),
            ("AllowDownscale", InfoFlags::ALLOW_DOWNSCALE),
            ("Qdevice", InfoFlags::QDEVICE_REGISTERED),
        ];
        let mut flags = InfoFlags::empty();
        for word in self
            .fields
            .get("Flags")
            .map_or("", String::as_str)
            .split_whitespace()
        {
            let (_, flag) = names
                .iter()
                .find(|(name, _)| *name == word)
                .unwrap_or_else(|| panic!("unknown flag {word:?} in:\n{}", self.text));
            flags |= *flag;
        }
        flags
    }

    /// The votes of node `nodeid` in the membership table.
    pub fn votes_of(&self, nodeid: u32) -> Option<u32> {
        self.members
            .iter()
            .find(|(id, _, _)| *id == nodeid)
            .map(|(_, votes, _)| *votes)
    }
}

/// Runs `corosync-quorumtool ARGS` on `node` and parses what it prints.
pub fn quorumtool(node: &Node, args: &[&str]) -> QuorumTool {
    let out = node
        .command("corosync-quorumtool")
        .args(args)
        .output()
        .expect("run corosync-quorumtool");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !text.trim().is_empty(),
        "corosync-quorumtool {args:?} printed nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut fields = BTreeMap::new();
    let mut members = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [id, votes, rest @ ..] = words.as_slice() {
            if let (Ok(id), Ok(votes)) = (id.parse(), votes.parse()) {
                members.push((id, votes, rest.join(" ")));
                continue;
            }
        }
        if let Some((key, value)) = line.split_once(':') {
            fields.insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    QuorumTool {
        text,
        fields,
        members,
    }
}

/// What the quorum device thread does on each poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Vote {
    /// Poll with `cast_vote` true.
    Cast = 0,
    /// Poll with `cast_vote` false.
    Withhold = 1,
    /// Do not poll.
    Silent = 2,
}

/// A device's poll: the ring, `cast_vote`, and what the daemon answered.
pub type Poll = (RingId, bool, cpg::Result<()>);

/// A quorum device written with `cpg::votequorum`, as its documentation says: it
/// tracks the node list for the current ring id, registers, and polls every
/// `interval` and at once after each new ring, with the vote [`QuorumDevice::set`]
/// says. Runs on a thread of its own until dropped (or [`QuorumDevice::stop`]); the
/// handle is then closed without unregistering, as a device process that ends would.
pub struct QuorumDevice {
    vote: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    /// Poll results, in order: (ring, cast_vote, result).
    pub polls: Arc<Mutex<Vec<Poll>>>,
    thread: Option<JoinHandle<VoteQuorum>>,
}

impl QuorumDevice {
    /// Connects on `node`, registers `name` and starts polling with `vote`.
    pub fn start(node: &Node, name: &QdeviceName, vote: Vote, interval: Duration) -> QuorumDevice {
        let ring = Arc::new(Mutex::new(None));
        let latest = Arc::clone(&ring);
        let vq = node
            .enter(|| {
                VoteQuorum::builder()
                    .on_nodelist(move |n| *latest.lock().unwrap() = Some(n.ring_id))
                    .build()
            })
            .expect("the device's votequorum handle");
        vq.track_start(Track::CHANGES).expect("track the node list");
        vq.qdevice_register(name).expect("register the device");
        let vote = Arc::new(AtomicU8::new(vote as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(Mutex::new(Vec::new()));
        let (v, s, p, name) = (vote.clone(), stop.clone(), polls.clone(), name.clone());
        let thread = std::thread::Builder::new()
            .stack_size(BIG_STACK)
            .spawn(move || {
                let mut polled: Option<(RingId, Instant)> = None;
                while !s.load(Ordering::Relaxed) {
                    vq.dispatch_timeout(Duration::from_millis(20))
                        .expect("the device's dispatch");
                    let Some(ring_id) = *ring.lock().unwrap() else {
                        continue;
                    };
                    let due = polled.is_none_or(|(r, at)| r != ring_id || at.elapsed() >= interval);
                    let cast = match v.load(Ordering::Relaxed) {
                        0 => true,
                        1 => false,
                        _ => continue,
                    };
                    if !due {
                        continue;
                    }
                    let result = vq.qdevice_poll(&name, cast, ring_id);
                    // A ring newer than the one dispatched so far: dispatch, then poll.
                    let stale =
                        matches!(&result, Err(e) if e.code() == Some(CsError::MessageError));
                    if !stale {
                        polled = Some((ring_id, Instant::now()));
                    }
                    p.lock().unwrap().push((ring_id, cast, result));
                }
                vq
            })
            .expect("spawn the device thread");
        QuorumDevice {
            vote,
            stop,
            polls,
            thread: Some(thread),
        }
    }

    /// From the next poll on: cast the vote, withhold it, or stop polling.
    pub fn set(&self, vote: Vote) {
        self.vote.store(vote as u8, Ordering::Relaxed);
    }

    /// Stops the thread and returns the handle (still registered).
    pub fn stop(mut self) -> VoteQuorum {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("stopped once")
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for QuorumDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
