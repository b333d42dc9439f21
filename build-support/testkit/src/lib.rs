//! Test harness: private corosync daemons, alone or as multi-node clusters, each in its
//! own network namespace.
//!
//! libqb's IPC (how libcpg talks to corosync) uses abstract Unix sockets, which belong
//! to a network namespace. So every daemon started here runs in a namespace of its own,
//! and a client reaches it by creating its connection from a thread that is inside that
//! namespace ([`Node::enter`]). Tests therefore never touch a corosync the machine
//! already runs, and parallel tests and test processes never see each other's daemons.
//!
//! * [`shared()`]: one single-node daemon per test process, started on first use.
//! * [`Cluster`]: N daemons (node ids 1..=N) joined through a bridge, with fault
//!   injection: [`Cluster::kill_daemon`], [`Cluster::restart_daemon`],
//!   [`Cluster::pause_daemon`] / [`Cluster::resume_daemon`] (SIGSTOP/SIGCONT),
//!   [`Cluster::partition`], [`Cluster::heal`], one-way and random packet loss with
//!   nftables ([`Cluster::drop_from`], [`Cluster::lossy_link`],
//!   [`Cluster::clear_net_faults`]), and [`Cluster::wait_members`].
//! * [`Client`]: a client program (usually this test binary again, see
//!   [`Client::spawn_test`]) as a separate process on a node, to kill it or let it
//!   leave.
//!
//! Everything needs root (network namespaces, `setns`).
//!
//! # Cleanup
//!
//! Every harness instance (the shared node, each cluster) has a temporary directory
//! under `/tmp/cpg-testkit/` (or `$CPG_TESTKIT_DIR`) and a detached watchdog process.
//! Dropping a [`Cluster`] stops its daemons, deletes its namespaces and its directory
//! synchronously. If the test process dies without running destructors (SIGKILL, or
//! simply exit with [`shared()`] still alive), the watchdog notices at once (its stdin
//! is a pipe only the test process writes to; a `kill -0` poll every 0.3 s backs it up)
//! and does the same: SIGTERM the daemons it finds (pid files, and any process whose
//! command line names the directory), SIGKILL after 3 s, remove the `/dev/shm` files
//! a killed corosync leaves (an 8 MiB blackbox each), delete the namespaces (and with
//! them any nftables rules put in them), and remove the directory last. Measured:
//! about 1.2 s after a SIGKILL of the test. The watchdog is `build-support/cleanup
//! --watch` (embedded at compile time), the same cleanup that `build-support/run` and
//! `build-support/demo` run over their whole directory afterwards.
//! A directory that still exists is therefore a leak; that is what
//! `build-support/run test` checks after the tests.
//!
//! Processes are only ever signalled by pid, after checking that their command line
//! names the instance's directory; a corosync the machine runs is never touched.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let cluster = cpg_testkit::Cluster::start(3);
//! cluster.kill_daemon(2);
//! cluster
//!     .wait_members(0, &[1, 2], Duration::from_secs(10))
//!     .unwrap();
//! let nodeid = cluster.node(0).enter(|| {
//!     // libcpg connections made here talk to node 1's daemon.
//!     cluster.node(0).nodeid()
//! });
//! assert_eq!(nodeid, 1);
//! ```
#![deny(missing_docs)]

mod client;
mod cluster;
mod config;
mod instance;
mod net;
mod node;
mod process;

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use client::{client_role, Client, CLIENT_ENV};
pub use cluster::{Cluster, ClusterBuilder};
pub use node::Node;

/// Why the harness could not set something up; the message says what failed and, for
/// a daemon, ends with the tail of its log.
#[derive(Clone, PartialEq, Eq)]
pub struct HarnessError {
    message: String,
}

impl HarnessError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The full message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Prints the message as it is (not escaped), so that `.unwrap()` on a failed start
/// shows a readable daemon log.
impl fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HarnessError {}

impl From<HarnessError> for String {
    fn from(e: HarnessError) -> String {
        e.message
    }
}

/// Calls `condition` every `poll` until it returns `true` (then returns `true`) or
/// until `timeout` has passed (then returns `false`). Calls it at least once.
pub fn wait_until(timeout: Duration, poll: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(poll.min(deadline - now));
    }
}

/// The daemon behind [`shared()`] and the harness instance that owns its namespace.
struct Shared {
    node: Node,
    /// Never dropped (it lives in a static): the watchdog cleans up after the process.
    _instance: instance::Instance,
}

/// The single-node daemon shared by all tests of this test process.
///
/// Started on the first call (thread-safe; later callers wait for it), with node id 1
/// on `127.0.0.1` inside its own network namespace. It lives until the process exits;
/// then its watchdog stops it and removes the namespace. If it cannot be started,
/// every call panics with the reason and the daemon's log.
///
/// Do not kill or restart this daemon: other tests use it at the same time. Use a
/// [`Cluster`] for fault injection.
pub fn shared() -> &'static Node {
    static SHARED: OnceLock<Result<Shared, HarnessError>> = OnceLock::new();
    match SHARED.get_or_init(start_shared) {
        Ok(shared) => &shared.node,
        Err(e) => panic!("cpg-testkit: the shared corosync could not be started:\n{e}"),
    }
}

fn start_shared() -> Result<Shared, HarnessError> {
    let mut instance = instance::Instance::create()?;
    let ns = instance.add_netns("1")?;
    net::loopback_up(&ns)?;
    let conf = config::Config {
        cluster_name: instance.name().to_string(),
        token_ms: config::SHARED_TOKEN_MS,
        addrs: vec![std::net::Ipv4Addr::LOCALHOST],
        allowed_uids: Vec::new(),
        debug: false,
        votequorum: None,
    };
    let node = Node::create(&instance, 1, ns, std::net::Ipv4Addr::LOCALHOST, &conf)?;
    node.start_daemon()?;
    // Answering is not enough: CPG is ready once the node has formed its membership.
    let mut last = Err(String::new());
    let formed = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        last = node.joined_members();
        last.as_ref().is_ok_and(|m| *m == [1])
    });
    if !formed {
        return Err(node.error(&format!(
            "corosync did not form its single-node membership within 20 s (last: {last:?})"
        )));
    }
    Ok(Shared {
        node,
        _instance: instance,
    })
}
