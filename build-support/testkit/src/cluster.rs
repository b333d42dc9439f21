//! A cluster of corosync daemons, one per network namespace, joined through a bridge
//! that lives in a namespace of its own; faults are injected per node: daemon kill,
//! stop, restart, pause (SIGSTOP) and resume, partition and heal, and nftables rules
//! for one-way and random packet loss.

use std::time::{Duration, Instant};

use crate::config::{Config, Votequorum, DEFAULT_TOKEN_MS};
use crate::instance::Instance;
use crate::node::{Node, STOP_GRACE};
use crate::{net, process, HarnessError};

/// How long [`ClusterBuilder::start`] waits for every node to see every other node,
/// after all daemons answer.
const DEFAULT_FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// The nftables table (family `inet`) that holds a node's network faults.
const NFT_TABLE: &str = "cpg_testkit";
/// How often membership is polled.
const MEMBERS_POLL: Duration = Duration::from_millis(100);
/// How long [`Cluster::restart_daemon`] waits for the daemon to answer.
const RESTART_TIMEOUT: Duration = Duration::from_secs(20);
/// The least time [`Cluster::restart_daemon`] waits for the peers' links to go down.
const LINK_DOWN_MIN: Duration = Duration::from_secs(5);

/// N corosync daemons (node ids `1..=N`, node `i` at index `i - 1`), each in its own
/// network namespace with address `10.213.0.ID/24` on `eth0`, all connected to one
/// bridge.
///
/// Dropping the cluster stops the daemons and deletes the namespaces and the
/// temporary directory before `drop` returns, also when a test panics.
///
/// The methods that inject faults panic when the harness itself fails (they are meant
/// for tests); [`Cluster::wait_members`] returns an error instead, so a test can say
/// what it expected.
pub struct Cluster {
    nodes: Vec<Node>,
    bridge_ns: String,
    token_ms: u32,
    startup: Duration,
    // Dropped after `Drop::drop` stopped the daemons: deletes namespaces and directory.
    instance: Instance,
}

/// Configures a [`Cluster`]; made by [`Cluster::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .start() to start the cluster"]
pub struct ClusterBuilder {
    nodes: usize,
    token_ms: u32,
    form_timeout: Duration,
    allowed_uids: Vec<u32>,
    daemon_debug: bool,
    votequorum: Option<Votequorum>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            nodes: 3,
            token_ms: DEFAULT_TOKEN_MS,
            form_timeout: DEFAULT_FORM_TIMEOUT,
            allowed_uids: Vec::new(),
            daemon_debug: false,
            votequorum: None,
        }
    }
}

impl ClusterBuilder {
    /// Number of nodes (1..=254); default 3.
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Totem token timeout in milliseconds; default 1000. A crashed or cut-off node is
    /// noticed after about this long (plus consensus, 1.2 × token). Lower is faster,
    /// but below a few hundred ms a loaded machine sees spurious membership changes.
    pub fn token_ms(mut self, ms: u32) -> Self {
        self.token_ms = ms;
        self
    }

    /// Lets processes of user `uid` connect to the daemons too (corosync's
    /// `uidgid { uid: ... }`); by default only root may.
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.allowed_uids.push(uid);
        self
    }

    /// Whether the daemons log at debug level, with millisecond timestamps (totem's
    /// membership, recovery and retransmit steps; not knet's); default off. The logs
    /// are the nodes' `corosync.log`.
    pub fn daemon_debug(mut self, on: bool) -> Self {
        self.daemon_debug = on;
        self
    }

    /// Whether the daemons run corosync's quorum provider,
    /// `quorum { provider: corosync_votequorum }`, with `expected_votes` equal to the
    /// votes configured (one per node unless [`node_votes`](Self::node_votes) says
    /// otherwise, plus a [`quorum_device`](Self::quorum_device)'s: with one vote per
    /// node a side with more than half the nodes is quorate); default off, so that
    /// every side of a partition keeps working and the quorum service reports no
    /// provider. Off also drops the settings below.
    pub fn quorum_provider(mut self, on: bool) -> Self {
        self.votequorum = on.then(|| self.votequorum.take().unwrap_or_default());
        self
    }

    /// The votequorum settings, turning the provider on.
    fn votequorum(&mut self) -> &mut Votequorum {
        self.votequorum.get_or_insert_with(Votequorum::default)
    }

    /// votequorum's `expected_votes` (instead of the votes configured); turns the
    /// quorum provider on.
    pub fn expected_votes(mut self, votes: u32) -> Self {
        self.votequorum().expected_votes = Some(votes);
        self
    }

    /// votequorum's `two_node` (a two-node cluster where either node alone is
    /// quorate; corosync turns `wait_for_all` on with it unless it is set off); turns
    /// the quorum provider on. corosync refuses to start with `two_node` beside a
    /// [`quorum_device`](Self::quorum_device).
    pub fn two_node(mut self, on: bool) -> Self {
        self.votequorum().two_node = on;
        self
    }

    /// votequorum's `wait_for_all`, written as set (`0` or `1`: with
    /// [`two_node`](Self::two_node), `false` turns corosync's default off): a node
    /// that starts is not quorate until it has seen every node at once; turns the
    /// quorum provider on.
    pub fn wait_for_all(mut self, on: bool) -> Self {
        self.votequorum().wait_for_all = Some(on);
        self
    }

    /// votequorum's `last_man_standing`; turns the quorum provider on.
    pub fn last_man_standing(mut self, on: bool) -> Self {
        self.votequorum().last_man_standing = on;
        self
    }

    /// `quorum_votes` of the node at `node_index` (node id `node_index + 1`; the others
    /// have 1); turns the quorum provider on.
    pub fn node_votes(mut self, node_index: usize, votes: u32) -> Self {
        self.votequorum().node_votes.push((node_index, votes));
        self
    }

    /// A quorum device: `device { model: MODEL; votes: VOTES }` in the `quorum`
    /// section, with corosync's default timeouts (a device that stops polling loses
    /// its vote after 10 s); turns the quorum provider on. Nothing runs the device:
    /// the test registers and polls it through libvotequorum.
    pub fn quorum_device(mut self, model: &str, votes: u32) -> Self {
        self.votequorum().device = Some((model.to_string(), votes));
        self
    }

    /// How long `start` waits for all nodes to see each other once every daemon
    /// answers; default 30 s.
    pub fn form_timeout(mut self, timeout: Duration) -> Self {
        self.form_timeout = timeout;
        self
    }

    /// Creates the namespaces and the bridge, starts all daemons, and waits until every
    /// node reports all nodes as members. On failure everything made so far is removed.
    pub fn start(self) -> Result<Cluster, HarnessError> {
        let began = Instant::now();
        let count = u32::try_from(self.nodes)
            .ok()
            .filter(|n| (1..=254).contains(n))
            .ok_or_else(|| HarnessError::new(format!("{} nodes: need 1..=254", self.nodes)))?;
        if self.token_ms == 0 {
            return Err(HarnessError::new("token_ms must be > 0"));
        }
        if let Some(q) = &self.votequorum {
            if let Some((i, _)) = q.node_votes.iter().find(|(i, _)| *i >= self.nodes) {
                return Err(HarnessError::new(format!(
                    "node_votes for node index {i}: the cluster has {} nodes",
                    self.nodes
                )));
            }
        }
        let mut instance = Instance::create()?;
        let bridge_ns = instance.add_netns("br")?;
        let mut node_ns = Vec::new();
        for id in 1..=count {
            node_ns.push(instance.add_netns(&id.to_string())?);
        }
        // From here on, Cluster's Drop cleans up whatever the `?`s leave behind.
        let mut cluster = Cluster {
            nodes: Vec::new(),
            bridge_ns,
            token_ms: self.token_ms,
            startup: Duration::ZERO,
            instance,
        };
        net::create_bridge(&cluster.bridge_ns)?;
        let config = Config {
            cluster_name: cluster.instance.name().to_string(),
            token_ms: self.token_ms,
            addrs: (1..=count).map(net::node_addr).collect(),
            allowed_uids: self.allowed_uids,
            debug: self.daemon_debug,
            votequorum: self.votequorum,
        };
        for (id, ns) in (1..=count).zip(node_ns) {
            net::connect_node(&cluster.bridge_ns, &ns, id)?;
            let node = Node::create(&cluster.instance, id, ns, net::node_addr(id), &config)?;
            cluster.nodes.push(node);
        }
        for node in &cluster.nodes {
            node.spawn_daemon()?;
        }
        for node in &cluster.nodes {
            node.wait_ready(Duration::from_secs(20))?;
        }
        let all: Vec<u32> = (1..=count).collect();
        for i in 0..cluster.nodes.len() {
            cluster
                .wait_members(i, &all, self.form_timeout)
                .map_err(HarnessError::new)?;
        }
        cluster.startup = began.elapsed();
        Ok(cluster)
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.instance.name())
            .field("token_ms", &self.token_ms)
            .field("nodes", &self.nodes)
            .finish()
    }
}

impl Cluster {
    /// Starts `n` nodes with the defaults of [`ClusterBuilder`] and waits until they
    /// form one membership.
    ///
    /// # Panics
    ///
    /// If that fails or times out; the message includes the daemons' log tails.
    pub fn start(n: usize) -> Cluster {
        Self::builder()
            .nodes(n)
            .start()
            .unwrap_or_else(|e| panic!("cpg-testkit: cannot start a {n}-node cluster:\n{e}"))
    }

    /// A builder with the defaults: 3 nodes, token 1000 ms.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Node at index `i` (0-based; its node id is `i + 1`).
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes.get(i).unwrap_or_else(|| {
            panic!(
                "cpg-testkit: node index {i} out of range (cluster of {})",
                self.nodes.len()
            )
        })
    }

    /// All nodes, index `i` has node id `i + 1`.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The configured token timeout in milliseconds.
    pub fn token_ms(&self) -> u32 {
        self.token_ms
    }

    /// How long [`ClusterBuilder::start`] took, from creating namespaces to full
    /// membership on every node.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// SIGKILLs node `i`'s daemon and reaps it. The other nodes see it leave after
    /// the token timeout. Does nothing if it is not running.
    pub fn kill_daemon(&self, i: usize) {
        self.node(i).kill_daemon();
    }

    /// SIGTERMs node `i`'s daemon and waits until it exits (at most 5 s, then SIGKILL).
    pub fn stop_daemon(&self, i: usize) {
        self.node(i).stop_daemon();
    }

    /// Starts node `i`'s daemon again with the same configuration and waits (at most
    /// 20 s) until it answers; it may not have rejoined the others yet (use
    /// [`Cluster::wait_members`]). If it is still running, it is left alone.
    ///
    /// Before it starts the daemon, it waits until every other node whose daemon runs
    /// (and is not paused) has seen its knet link to node `i` go down, as it would
    /// for a machine that reboots (bounded: [`Cluster::token_ms`] × 5, at least 5 s).
    /// A daemon back sooner may not be let back in: with corosync 3.1.7 and libknet
    /// 1.25, a peer whose link to the node never went down (the kill and the restart
    /// fell between two of its pings) kept the restarted node out of every
    /// membership for over a minute, in 5 of 20 runs of a test that restarts a
    /// daemon under load; the peer whose link went down and up let it in.
    ///
    /// # Panics
    ///
    /// If the daemon does not come up; the message includes its log tail.
    pub fn restart_daemon(&self, i: usize) {
        let node = self.node(i);
        if node.daemon_pid().is_none() {
            self.wait_links_down(i);
        }
        if let Err(e) = node
            .spawn_daemon()
            .and_then(|()| node.wait_ready(RESTART_TIMEOUT))
        {
            panic!("cpg-testkit: restart failed:\n{e}");
        }
    }

    /// Waits until no other node with a running, unpaused daemon reports its knet
    /// link to node `i` as connected; gives up (with a note on stderr) after
    /// 5 × token, at least 5 s.
    fn wait_links_down(&self, i: usize) {
        let id = self.node(i).nodeid();
        let limit = Duration::from_millis(u64::from(self.token_ms) * 5).max(LINK_DOWN_MIN);
        let deadline = Instant::now() + limit;
        for (j, peer) in self.nodes.iter().enumerate() {
            if j == i || peer.daemon_pid().is_none() || peer.daemon_paused() {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut last = Ok(true);
            let down = crate::wait_until(left, MEMBERS_POLL, || {
                last = peer.link_connected(id);
                // A daemon that does not answer cannot let the node back in early.
                !matches!(last, Ok(true))
            });
            if !down {
                eprintln!(
                    "cpg-testkit: node {}'s knet link to node {id} still up after {limit:?} \
                     ({last:?}); restarting node {id} anyway",
                    peer.nodeid()
                );
            }
        }
    }

    /// Cuts node `i` off the others: its port on the bridge goes down (and with it the
    /// carrier of the node's `eth0`). The node's address stays configured, so the
    /// daemon keeps running and forms a membership of its own.
    ///
    /// # Panics
    ///
    /// If `ip` fails.
    pub fn partition(&self, i: usize) {
        self.set_port(i, false);
    }

    /// Undoes [`Cluster::partition`]: the node's bridge port goes up again and the
    /// memberships merge after a token timeout or so.
    ///
    /// # Panics
    ///
    /// If `ip` fails.
    pub fn heal(&self, i: usize) {
        self.set_port(i, true);
    }

    /// Pauses node `i`'s daemon with SIGSTOP, as if its machine froze. Paused for
    /// longer than the token timeout, the others form a membership without it; when
    /// it is resumed ([`Cluster::resume_daemon`]) it finds itself left behind and the
    /// memberships merge again. Returns `false` if no daemon runs on that node.
    ///
    /// A paused daemon is continued before it is stopped (drop, [`Cluster::stop_daemon`],
    /// the watchdog), so it never delays cleanup.
    pub fn pause_daemon(&self, i: usize) -> bool {
        self.node(i).signal_daemon(libc::SIGSTOP)
    }

    /// Continues node `i`'s daemon (SIGCONT) after [`Cluster::pause_daemon`]. Returns
    /// `false` if no daemon runs on that node.
    pub fn resume_daemon(&self, i: usize) -> bool {
        self.node(i).signal_daemon(libc::SIGCONT)
    }

    /// One-way loss: node `on` drops every packet that arrives from node `from`'s
    /// address, while its own packets still reach `from`. An nftables rule in node
    /// `on`'s namespace (table `inet cpg_testkit`); [`Cluster::clear_net_faults`]
    /// removes it, and deleting the namespace (drop, watchdog) removes it too.
    ///
    /// # Panics
    ///
    /// If `nft` is missing or fails.
    pub fn drop_from(&self, on: usize, from: usize) {
        let addr = self.node(from).addr();
        self.add_rule(
            on,
            &format!("add rule inet {NFT_TABLE} input ip saddr {addr} drop"),
        );
    }

    /// Random loss on node `i`'s link: each packet it receives or sends on its
    /// interface is dropped with probability `percent` % (`numgen random mod 100`),
    /// independently in each direction. nftables rules like [`Cluster::drop_from`]'s.
    ///
    /// # Panics
    ///
    /// If `percent` is above 100, or `nft` is missing or fails.
    pub fn lossy_link(&self, i: usize, percent: u32) {
        assert!(percent <= 100, "cpg-testkit: loss of {percent} %");
        let dev = net::NODE_IF;
        // nft's `numgen random mod 100` yields 0..=99: "< 100" is refused, and means all.
        let matching = if percent >= 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent} ")
        };
        self.add_rule(
            i,
            &format!(
                "add rule inet {NFT_TABLE} input iifname {dev} {matching}drop\n\
                 add rule inet {NFT_TABLE} output oifname {dev} {matching}drop"
            ),
        );
    }

    /// Removes every rule [`Cluster::drop_from`] and [`Cluster::lossy_link`] put on node
    /// `i` (deletes its nftables table). Nothing to remove is not an error.
    ///
    /// # Panics
    ///
    /// If `nft` is missing or fails.
    pub fn clear_net_faults(&self, i: usize) {
        // Declaring the table first makes the delete succeed when it did not exist.
        let script = format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n");
        if let Err(e) = self.node(i).nft(&script) {
            panic!("cpg-testkit: {e}");
        }
    }

    fn add_rule(&self, i: usize, rules: &str) {
        let script = format!(
            "table inet {NFT_TABLE} {{\n\
             \x20   chain input {{ type filter hook input priority 0; policy accept; }}\n\
             \x20   chain output {{ type filter hook output priority 0; policy accept; }}\n\
             }}\n{rules}\n"
        );
        if let Err(e) = self.node(i).nft(&script) {
            panic!("cpg-testkit: {e}");
        }
    }

    /// The cluster's temporary directory (`/tmp/cpg-testkit/NAME/`, removed on drop and
    /// by the watchdog). Files a test puts here are cleaned up with the cluster, and
    /// any process whose command line names a path in it is stopped by the watchdog
    /// if the test process dies.
    pub fn dir(&self) -> &std::path::Path {
        self.instance.dir()
    }

    fn set_port(&self, i: usize, up: bool) {
        let port = net::bridge_port(self.node(i).nodeid());
        if let Err(e) = net::set_link(&self.bridge_ns, &port, up) {
            panic!("cpg-testkit: cannot set node {}'s link: {e}", i + 1);
        }
    }

    /// Waits until node `on`'s daemon reports exactly the node ids `expect` (any order)
    /// as joined members (`runtime.members.ID.status` in cmap). Polls every 100 ms.
    ///
    /// On timeout the error says what the node reported last and ends with its log.
    pub fn wait_members(&self, on: usize, expect: &[u32], timeout: Duration) -> Result<(), String> {
        let node = self.node(on);
        let mut want = expect.to_vec();
        want.sort_unstable();
        want.dedup();
        let mut last = Err(String::from("not asked yet"));
        let done = crate::wait_until(timeout, MEMBERS_POLL, || {
            last = node.joined_members();
            last.as_ref().is_ok_and(|got| *got == want)
        });
        if done {
            return Ok(());
        }
        let last = match last {
            Ok(got) => format!("members {got:?}"),
            Err(e) => format!("no answer: {e}"),
        };
        Err(node
            .error(&format!(
                "expected members {want:?} within {timeout:?}; last seen: {last}"
            ))
            .into())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stop all daemons at once; their graceful shutdowns overlap.
        let mut children: Vec<_> = self.nodes.iter().filter_map(Node::take_daemon).collect();
        let mut refs: Vec<_> = children.iter_mut().collect();
        process::terminate_all(&mut refs, STOP_GRACE);
        // `self.instance` drops next: namespaces, directory, watchdog.
    }
}
