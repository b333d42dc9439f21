//! The quorum tests' recorder: what a node's quorum and votequorum handles (callbacks
//! and stream) and its CPG handle (totem confchgs) observed, each with the time it arrived, in one
//! [`Log`] per node; and handles dispatched by threads of their own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpg::quorum::{Quorum, QuorumEvent};
use cpg::{Error, Handle, RingId};

use super::log::{Log, Observed};
use super::BIG_STACK;

/// Where an observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A [`Quorum`] handle's callbacks.
    Callback,
    /// An `AsyncQuorum` stream.
    Stream,
}

/// One thing a node observed.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A quorum or node list notification.
    Quorum(Source, QuorumEvent),
    /// A CPG totem confchg: the ring and its nodes.
    Totem(RingId, Vec<u32>),
    /// A votequorum notification.
    #[cfg(feature = "votequorum")]
    VoteQuorum(Source, cpg::votequorum::VoteQuorumEvent),
    /// A dispatch loop or a stream ended with this error.
    Ended(Source, Error),
}

/// A [`Seen`] and when it arrived.
#[derive(Debug, Clone)]
pub struct Record {
    pub at: Instant,
    pub seen: Seen,
}

impl Observed for Record {
    fn is_message(&self) -> bool {
        false
    }
}

/// Records `seen` now.
pub fn record(log: &Log<Record>, seen: Seen) {
    log.push(Record {
        at: Instant::now(),
        seen,
    });
}

/// A quorum handle whose callbacks record every notification into `log`. Connects to
/// the daemon of the namespace the calling thread is in.
pub fn recording_quorum(log: &Log<Record>) -> cpg::Result<Quorum> {
    let (quorum_log, nodelist_log) = (log.clone(), log.clone());
    Quorum::builder()
        .on_quorum(move |n| record(&quorum_log, Seen::Quorum(Source::Callback, n.into())))
        .on_nodelist(move |n| record(&nodelist_log, Seen::Quorum(Source::Callback, n.into())))
        .build()
}

/// A CPG handle whose totem confchgs (the initial one too) are recorded into `log`.
pub fn recording_cpg(log: &Log<Record>) -> cpg::Result<Handle> {
    let log = log.clone();
    Handle::builder()
        .on_totem_confchg(move |_, change| {
            record(&log, Seen::Totem(change.ring_id, change.members.to_vec()))
        })
        .initial_totem_conf(true)
        .build()
}

/// The quorum decisions of `source` in `records`, after `since`: (when, quorate, ring,
/// members).
pub fn decisions(
    records: &[Record],
    source: Source,
    since: Instant,
) -> Vec<(Instant, bool, RingId, Vec<u32>)> {
    records
        .iter()
        .filter(|r| r.at >= since)
        .filter_map(|r| match &r.seen {
            Seen::Quorum(
                s,
                QuorumEvent::Quorum {
                    quorate,
                    ring_id,
                    members,
                },
            ) if *s == source => Some((r.at, *quorate, *ring_id, members.clone())),
            _ => None,
        })
        .collect()
}

/// The first decision of `source` after `since` with exactly these `members` (sorted):
/// (when, quorate, ring).
pub fn decision_for(
    records: &[Record],
    source: Source,
    since: Instant,
    members: &[u32],
) -> Option<(Instant, bool, RingId)> {
    decisions(records, source, since)
        .into_iter()
        .find(|(_, _, _, m)| sorted(m) == members)
        .map(|(at, quorate, ring, _)| (at, quorate, ring))
}

/// `ids` sorted.
pub fn sorted(ids: &[u32]) -> Vec<u32> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

/// A handle dispatched by a thread of its own (with a [`BIG_STACK`]) until
/// [`Pumped::stop`], or until `step` fails: the error is recorded and the thread ends.
pub struct Pumped<H> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<H>>,
}

impl<H: Send + 'static> Pumped<H> {
    /// Moves `handle` to a new thread that calls `step` on it (which should return
    /// within about 50 ms) until stopped or until it fails; the error goes to `log`.
    pub fn start(
        handle: H,
        log: &Log<Record>,
        source: Source,
        step: impl Fn(&H) -> cpg::Result<()> + Send + 'static,
    ) -> Pumped<H> {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, log) = (Arc::clone(&stop), log.clone());
        let thread = std::thread::Builder::new()
            .stack_size(BIG_STACK)
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if let Err(e) = step(&handle) {
                        record(&log, Seen::Ended(source, e));
                        break;
                    }
                }
                handle
            })
            .expect("spawn a dispatch thread");
        Pumped {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and returns the handle.
    pub fn stop(mut self) -> H {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("stopped once");
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl<H> Drop for Pumped<H> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One step of a dispatch thread for a quorum handle.
pub fn quorum_step(q: &Quorum) -> cpg::Result<()> {
    q.dispatch_timeout(Duration::from_millis(50)).map(|_| ())
}

/// One step of a dispatch thread for a CPG handle.
pub fn cpg_step(h: &Handle) -> cpg::Result<()> {
    h.dispatch_timeout(Duration::from_millis(50)).map(|_| ())
}
