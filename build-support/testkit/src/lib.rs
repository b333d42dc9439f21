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
//! * [`Node::run_tool`]: a corosync tool (`corosync-cmapctl`, `corosync-quorumtool`,
//!   `corosync-cfgtool`) run against a node, its stdout back; [`Node::quorum_status`]:
//!   `corosync-quorumtool -s` parsed ([`QuorumStatus`]).
//! * [`ClusterBuilder::quorum`]: the daemons run with corosync's votequorum and the
//!   [`Quorum`] settings (expected votes, `two_node`, `wait_for_all`,
//!   `last_man_standing` and its window, `auto_tie_breaker`, per-node votes, a
//!   [`QuorumDevice`] section); without it, as by default, there is no quorum provider.
//! * What the kit wrote, to compare with what corosync reports: [`Cluster::name`]
//!   (`totem.cluster_name`), [`Node::name`] (`node1`, ...), [`Node::addr`] (ring0),
//!   [`Node::nodeid`], [`Node::config_path`].
//! * [`Node::command_as`]: a client as another user (uid, gid), for access tests
//!   ([`ClusterBuilder::allow_uid`] lets one in).
//! * A daemon that stops by itself (`corosync-cfgtool -H`, a cfg shutdown, a crash) is
//!   accounted for: [`Node::wait_daemon_exit`] returns how it ended, [`Node::daemon_pid`]
//!   is `None`, [`Cluster::restart_daemon`] starts it again, and kill, stop and drop
//!   leave it (and any other process) alone.
//!
//! Everything needs root. The namespaces also need `CAP_SYS_ADMIN` and
//! `CAP_NET_ADMIN` and permission to mount, which a default Docker container lacks:
//! there the kit runs in the container mode.
//!
//! # Container mode
//!
//! Where the test process cannot create network namespaces (a GitHub Actions
//! `container:` job, a GitLab Docker runner: no `CAP_SYS_ADMIN`, no `CAP_NET_ADMIN`),
//! the kit runs in [`Mode::Container`]: one daemon, the [`shared()`] one, on
//! `127.0.0.1` in the process's own network namespace (a container is one already),
//! with its configuration, state (`system { state_dir }`), log and pid files in its
//! own temporary directory, and the same watchdog. Everything that needs one node works
//! unchanged: [`shared()`], [`Node::enter`] (which then switches nothing),
//! [`Node::command`], [`Client`]. What needs several nodes, or a daemon of its own,
//! fails loudly: [`Cluster::start`] panics and [`ClusterBuilder::start`] returns an
//! error whose message starts with [`NEEDS_NAMESPACES`] and says what the container
//! lacks and what to add (`--cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt
//! apparmor=unconfined`, or `--privileged`). Nothing is skipped.
//!
//! The mode is detected ([`MODE_ENV`] `=auto`, the default: a trial `unshare` of a
//! network and a mount namespace in a child process, after a look at the capabilities)
//! or forced (`CPG_TESTKIT_MODE=container` or `=namespaces`); [`mode()`] tells which.
//!
//! Two daemons cannot share a network namespace (libqb's abstract socket names,
//! corosync's lock file), so the container mode never starts one beside a running
//! corosync: if one answers in the namespace (its listening sockets in
//! `/proc/net/unix`, a corosync process in the namespace, or the process that
//! `/run/corosync.pid` names) and the kit did not start it, the shared node refuses
//! to start and says so; if the kit started it for a test process that has exited (the
//! previous test binary of `cargo test`), it waits for that process's watchdog (up to
//! 60 s). Test binaries must therefore run one at a time in a container (`cargo test`
//! does).
//!
//! What corosync 3.1 still writes outside the kit's directory in this mode: its lock
//! file `/run/corosync.pid` (the path is compiled in; the daemon removes it when it
//! stops, the kit when it had to kill it), and libqb's per-connection files in
//! `/dev/shm` (about 3 MiB per client connection, removed when it closes; the 8 MiB
//! blackbox is turned off). Both are the container's own. A default Docker
//! `/dev/shm` is 64 MiB, about 19 connections at once; give tests that open more
//! handles `--shm-size=256m`.
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
//! about 1.2 s after a SIGKILL of the test. The watchdog is this package's `cleanup`
//! script (`build-support/testkit/cleanup --watch`, embedded at compile time), the same
//! cleanup that `build-support/run` and `build-support/demo` run over their whole
//! directory afterwards.
//! A directory that still exists is therefore a leak; that is what
//! `build-support/run test` checks after the tests.
//!
//! Processes are only ever signalled by pid, after checking that their command line
//! names the instance's directory; a corosync the machine runs is never touched. In
//! the container mode a daemon that a test process left behind may show up as a zombie
//! when the container's PID 1 does not reap orphans (GitHub Actions' `tail -f
//! /dev/null`, for one); a zombie holds nothing and is ignored.
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
mod container;
mod instance;
mod mode;
mod net;
mod node;
mod process;
mod quorum;

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use client::{client_role, Client, CLIENT_ENV};
pub use cluster::{Cluster, ClusterBuilder};
pub use mode::{mode, Mode, MODE_ENV, NEEDS_NAMESPACES};
pub use node::Node;
pub use quorum::{Quorum, QuorumDevice, QuorumMember, QuorumStatus};

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
/// on `127.0.0.1`, inside its own network namespace (in the container mode, in the
/// process's own: see [`Mode`]), without a quorum provider. It lives until the process
/// exits; then its watchdog stops it and removes the namespace. If it cannot be
/// started, every call panics with the reason and the daemon's log.
///
/// Do not kill or restart this daemon: other tests use it at the same time. Use a
/// [`Cluster`] for fault injection, and for a single node with a quorum provider
/// (`Cluster::builder().nodes(1).quorum(...)`, namespaces mode).
pub fn shared() -> &'static Node {
    static SHARED: OnceLock<Result<Shared, HarnessError>> = OnceLock::new();
    match SHARED.get_or_init(start_shared) {
        Ok(shared) => &shared.node,
        Err(e) => panic!("cpg-testkit: the shared corosync could not be started:\n{e}"),
    }
}

fn start_shared() -> Result<Shared, HarnessError> {
    let container = mode::current()?.mode == Mode::Container;
    let mut instance = instance::Instance::create()?;
    let ns = if container {
        container::loopback_up()?;
        container::wait_for_free_namespace()?;
        None
    } else {
        let ns = instance.add_netns("1")?;
        net::loopback_up(&ns)?;
        Some(ns)
    };
    let conf = config::Config {
        cluster_name: instance.name().to_string(),
        token_ms: config::SHARED_TOKEN_MS,
        addrs: vec![std::net::Ipv4Addr::LOCALHOST],
        allowed_uids: Vec::new(),
        debug: false,
        quorum: None,
        container_state_dir: container.then(|| instance.dir().join("n1").join("lib")),
    };
    let node = Node::create(&instance, 1, ns, std::net::Ipv4Addr::LOCALHOST, &conf)?;
    let mut attempts = 0;
    let started = loop {
        attempts += 1;
        let started = node.start_daemon().and_then(|()| wait_formed(&node));
        // The container mode's daemon lost a race for the namespace's one corosync
        // lock: wait for the namespace again, a bounded number of times.
        let lost_race = container
            && attempts < 3
            && started
                .as_ref()
                .is_err_and(|e| e.message().contains(ANOTHER_INSTANCE));
        if !lost_race {
            break started;
        }
        node.stop_daemon();
        container::wait_for_free_namespace()?;
    };
    if let Err(e) = started {
        // Stopped here: the instance's cleanup would find its directory gone already.
        node.stop_daemon();
        return Err(e);
    }
    Ok(Shared {
        node,
        _instance: instance,
    })
}

/// What corosync 3.1 logs when it finds its lock file `/run/corosync.pid` taken.
const ANOTHER_INSTANCE: &str = "Another Corosync instance is already running";

/// Waits until a single node has formed its membership: answering is not enough, CPG
/// is ready once the node is a member of its own ring.
fn wait_formed(node: &Node) -> Result<(), HarnessError> {
    let mut last = Err(String::new());
    let formed = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        last = node.joined_members();
        last.as_ref().is_ok_and(|m| *m == [1])
    });
    if formed {
        Ok(())
    } else {
        Err(node.error(&format!(
            "corosync did not form its single-node membership within 20 s (last: {last:?})"
        )))
    }
}
