//! The one support module of the daemon-backed integration tests: one bound for every
//! wait ([`WAIT`]), one way to get a stack that `cpg_dispatch` fits on ([`big_stack`]),
//! one way to name a group ([`unique_group`]), one lock for tests that must run alone
//! ([`serial`]), the daemons the tests of one binary share, and, by concept:
//!
//! - [`log`]: what a member observed, recorded in order, with bounded waits on it;
//! - [`event`]: the one event type a handle's callbacks record;
//! - [`peer`]: a handle on a node whose callbacks record events: pumped by the test,
//!   or dispatched by a thread of its own;
//! - [`message`]: the self-checking message the multi-node tests send;
//! - [`cluster`]: multi-node scenarios and the checks on what every member delivered,
//!   and back-pressure on demand (a pair whose second daemon is stopped);
//! - [`child`]: other members of a group as child processes on the same node;
//! - [`stream`]: the async handle's tests (feature `tokio`);
//! - [`group`], [`replica`]: members of the group and replica layers on a cluster;
//! - [`quorum`]: what quorum handles and CPG's totem confchgs observed (feature
//!   `quorum`);
//! - [`votequorum`]: votequorum handles that record into those logs, a quorum device
//!   on a thread, and what `corosync-quorumtool` prints (feature `votequorum`).
//!
//! Corosync identifies a group member by (node id, pid), so one process cannot have
//! two handles in the same group on the same node (the second join gets
//! `CS_ERR_EXIST`). Tests that need two members in one process put them on two nodes
//! ([`shared_cluster`]) or start child processes ([`child`]).
//!
//! Every file under `tests/` is a crate of its own that declares `mod support;` and
//! uses the part it needs; the rest is dead code in that crate. Hence this one `allow`
//! for the whole module, instead of one per item.
#![allow(dead_code)]

pub mod child;
pub mod cluster;
pub mod event;
pub mod group;
pub mod log;
pub mod message;
pub mod peer;
#[cfg(feature = "quorum")]
pub mod quorum;
pub mod replica;
#[cfg(feature = "tokio")]
pub mod stream;
#[cfg(feature = "votequorum")]
pub mod votequorum;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use cpg::GroupName;
use cpg_testkit::Cluster;

/// Bound for every wait on something the daemon does (a membership change, a
/// delivery, a reconnect): token (1 s), consensus (1.2 s), sync and the scheduling of
/// a loaded 2-core machine fit well inside. Waits on more than one round (the replica
/// layer's transfers, floods) are multiples of it.
pub const WAIT: Duration = Duration::from_secs(30);

/// Stack size of every thread that dispatches: libcpg keeps a 1 MiB buffer on the
/// stack of `cpg_dispatch` (libtest's threads have 2 MiB, some of it used already).
pub const BIG_STACK: usize = 8 << 20;

/// Runs `f` on a fresh thread with a [`BIG_STACK`], and propagates its panic.
pub fn big_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(BIG_STACK)
        .spawn(f)
        .expect("spawn a big-stack thread")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A group name no other test of this process uses, and no other process: `tag`, the
/// pid and a counter.
pub fn unique_group(tag: &str) -> GroupName {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    GroupName::new(format!("{tag}-{}-{n}", std::process::id())).expect("group name")
}

/// A two-node cluster shared by the tests of this test binary (torn down by the
/// harness's watchdog when the process exits). The single-node daemon they may share
/// instead is [`cpg_testkit::shared`].
pub fn shared_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(2))
}

/// Serializes the tests of one test binary that take it: those that measure the whole
/// process (its mappings, memory, descriptors, umask) or need the machine's 2 cores
/// for one cluster at a time. A failed test does not poison the rest.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's pid, as the daemon lists it.
pub fn pid() -> u32 {
    std::process::id()
}

/// Callbacks that do nothing.
pub struct NoCallbacks;

impl cpg::Callbacks for NoCallbacks {}
