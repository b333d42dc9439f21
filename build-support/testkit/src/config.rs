//! The `corosync.conf` the harness writes for each daemon.
//!
//! Choices, deliberately:
//! * `transport: knet`, no crypto: the traffic never leaves the test's namespaces.
//! * Real-time scheduling is left at corosync's default (`SCHED_RR` 99). On a 2-core
//!   machine a flooding client would otherwise starve the daemon and tokens would time
//!   out, which shows up as spurious membership changes in tests.
//! * `token` is set explicitly and `token_coefficient: 0`, so the token timeout is
//!   exactly what the test asked for, whatever the node count. Clusters default to
//!   [`DEFAULT_TOKEN_MS`] (fast fault detection, still far above the scheduling jitter
//!   of an RR-99 daemon); the shared single node uses corosync's own default of 3 s,
//!   since nothing there waits for a failure to be detected.
//! * No quorum provider by default: CPG does not need quorum, and a partitioned
//!   minority must keep working so tests can observe it. A cluster built with
//!   [`crate::ClusterBuilder::quorum_provider`] (or any of the votequorum settings)
//!   runs votequorum with `expected_votes` equal to the votes configured (one per node
//!   unless set otherwise, plus the quorum device's) unless set explicitly.
//! * Log to stderr only (the harness sends it to `corosync.log` in the node's
//!   directory), with timestamps. A cluster built with
//!   [`crate::ClusterBuilder::daemon_debug`] logs at debug level with millisecond
//!   timestamps: totem at trace level (every message it receives, delivers and
//!   releases, with its sequence number; membership and recovery steps), CPG's and
//!   sync's debug lines; not the knet transport's debug lines, which would drown the
//!   rest.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Default token timeout of a [`crate::Cluster`], in milliseconds.
pub(crate) const DEFAULT_TOKEN_MS: u32 = 1000;
/// Token timeout of the [`crate::shared()`] node, in milliseconds (corosync's default).
pub(crate) const SHARED_TOKEN_MS: u32 = 3000;

/// What differs between the generated configurations.
pub(crate) struct Config {
    /// `totem.cluster_name`.
    pub(crate) cluster_name: String,
    /// `totem.token`, milliseconds.
    pub(crate) token_ms: u32,
    /// `ring0_addr` of node ids 1, 2, ...
    pub(crate) addrs: Vec<Ipv4Addr>,
    /// Users other than root that may connect (`uidgid { uid: N }`).
    pub(crate) allowed_uids: Vec<u32>,
    /// Debug-level logging with millisecond timestamps.
    pub(crate) debug: bool,
    /// `quorum { provider: corosync_votequorum ... }`, or no provider.
    pub(crate) votequorum: Option<Votequorum>,
}

/// votequorum's settings (the `quorum` section, and `quorum_votes` in the nodelist).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Votequorum {
    /// `expected_votes`; `None`: the votes configured (nodes' and the device's).
    pub(crate) expected_votes: Option<u32>,
    /// `two_node: 1`.
    pub(crate) two_node: bool,
    /// `wait_for_all: 0|1`; `None`: not written (corosync turns it on with two_node).
    pub(crate) wait_for_all: Option<bool>,
    /// `last_man_standing: 1`.
    pub(crate) last_man_standing: bool,
    /// `quorum_votes` of the nodes at these indexes (node id = index + 1); the others
    /// have corosync's default of 1.
    pub(crate) node_votes: Vec<(usize, u32)>,
    /// `device { model: NAME; votes: N }`.
    pub(crate) device: Option<(String, u32)>,
}

impl Votequorum {
    /// The votes of the node at `index`.
    fn votes_of(&self, index: usize) -> Option<u32> {
        self.node_votes
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, v)| *v)
    }

    /// `expected_votes` as written: the explicit value, or every vote configured.
    fn expected_votes(&self, nodes: usize) -> u32 {
        self.expected_votes.unwrap_or_else(|| {
            let node_votes: u32 = (0..nodes).map(|i| self.votes_of(i).unwrap_or(1)).sum();
            node_votes + self.device.as_ref().map_or(0, |(_, votes)| *votes)
        })
    }
}

impl Config {
    /// Renders the file.
    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "# Written by cpg-testkit.\n\
             totem {{\n\
             \x20   version: 2\n\
             \x20   cluster_name: {}\n\
             \x20   transport: knet\n\
             \x20   crypto_cipher: none\n\
             \x20   crypto_hash: none\n\
             \x20   token: {}\n\
             \x20   token_coefficient: 0\n\
             }}\n\
             nodelist {{\n",
            self.cluster_name, self.token_ms
        );
        for (i, addr) in self.addrs.iter().enumerate() {
            let id = i + 1;
            let _ = write!(
                s,
                "    node {{\n\
                 \x20       ring0_addr: {addr}\n\
                 \x20       nodeid: {id}\n\
                 \x20       name: node{id}\n"
            );
            if let Some(votes) = self.votequorum.as_ref().and_then(|q| q.votes_of(i)) {
                let _ = writeln!(s, "        quorum_votes: {votes}");
            }
            s.push_str("    }\n");
        }
        s.push_str("}\n");
        if let Some(q) = &self.votequorum {
            let _ = write!(
                s,
                "quorum {{\n\
                 \x20   provider: corosync_votequorum\n\
                 \x20   expected_votes: {}\n",
                q.expected_votes(self.addrs.len())
            );
            if q.two_node {
                s.push_str("    two_node: 1\n");
            }
            if let Some(on) = q.wait_for_all {
                let _ = writeln!(s, "    wait_for_all: {}", u8::from(on));
            }
            if q.last_man_standing {
                s.push_str("    last_man_standing: 1\n");
            }
            if let Some((model, votes)) = &q.device {
                let _ = write!(
                    s,
                    "    device {{\n\
                     \x20       model: {model}\n\
                     \x20       votes: {votes}\n\
                     \x20   }}\n"
                );
            }
            s.push_str("}\n");
        }
        for uid in &self.allowed_uids {
            let _ = writeln!(s, "uidgid {{\n    uid: {uid}\n}}");
        }
        s.push_str(
            "logging {\n\
             \x20   to_stderr: yes\n\
             \x20   to_logfile: no\n\
             \x20   to_syslog: no\n",
        );
        if self.debug {
            s.push_str(
                "    timestamp: hires\n\
                 \x20   debug: on\n\
                 \x20   logger_subsys {\n\
                 \x20       subsys: KNET\n\
                 \x20       debug: off\n\
                 \x20   }\n\
                 \x20   logger_subsys {\n\
                 \x20       subsys: TOTEM\n\
                 \x20       debug: trace\n\
                 \x20   }\n\
                 }\n",
            );
        } else {
            s.push_str("    timestamp: on\n}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    fn config(debug: bool) -> String {
        Config {
            cluster_name: "t".into(),
            token_ms: 1000,
            addrs: vec![std::net::Ipv4Addr::LOCALHOST],
            allowed_uids: Vec::new(),
            debug,
            votequorum: None,
        }
        .render()
    }

    fn three(votequorum: super::Votequorum) -> String {
        Config {
            cluster_name: "t".into(),
            token_ms: 1000,
            addrs: vec![std::net::Ipv4Addr::LOCALHOST; 3],
            allowed_uids: Vec::new(),
            debug: false,
            votequorum: Some(votequorum),
        }
        .render()
    }

    #[test]
    fn votequorum_is_opt_in_with_one_vote_per_node() {
        assert!(!config(false).contains("quorum"), "{}", config(false));
        let three = three(Default::default());
        assert!(
            three.contains(
                "quorum {\n    provider: corosync_votequorum\n    expected_votes: 3\n}\n"
            ),
            "{three}"
        );
    }

    #[test]
    fn votequorum_settings_are_written_and_expected_votes_counts_every_vote() {
        let settings = three(super::Votequorum {
            two_node: true,
            wait_for_all: Some(false),
            last_man_standing: true,
            node_votes: vec![(1, 5), (1, 2)],
            device: Some(("test_model".into(), 3)),
            ..Default::default()
        });
        for want in [
            "    two_node: 1\n",
            "    wait_for_all: 0\n",
            "    last_man_standing: 1\n",
            "    device {\n        model: test_model\n        votes: 3\n    }\n}\n",
            // Nodes 1 and 3 have 1 vote, node 2 the last value set, the device 3.
            "    expected_votes: 7\n",
            "        nodeid: 2\n        name: node2\n        quorum_votes: 2\n    }\n",
        ] {
            assert!(settings.contains(want), "{want:?} missing:\n{settings}");
        }
        assert_eq!(settings.matches("quorum_votes").count(), 1, "{settings}");
        let explicit = three(super::Votequorum {
            expected_votes: Some(9),
            wait_for_all: Some(true),
            ..Default::default()
        });
        assert!(
            explicit.contains("    expected_votes: 9\n    wait_for_all: 1\n}\n"),
            "{explicit}"
        );
        assert!(
            !explicit.contains("two_node") && !explicit.contains("device"),
            "{explicit}"
        );
    }

    #[test]
    fn debug_logging_is_opt_in_and_leaves_knet_quiet() {
        let plain = config(false);
        assert!(
            plain.contains("timestamp: on") && !plain.contains("debug:"),
            "{plain}"
        );
        let debug = config(true);
        for want in [
            "timestamp: hires",
            "debug: on",
            "subsys: KNET\n        debug: off",
            "subsys: TOTEM\n        debug: trace",
        ] {
            assert!(debug.contains(want), "{want:?} missing:\n{debug}");
        }
    }
}
