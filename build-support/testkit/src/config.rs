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
//!   [`crate::ClusterBuilder::quorum_provider`] runs votequorum with `expected_votes`
//!   equal to its node count (one vote per node).
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
    /// `quorum { provider: corosync_votequorum; expected_votes: <node count> }`.
    pub(crate) votequorum: bool,
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
                 \x20       name: node{id}\n\
                 \x20   }}\n"
            );
        }
        s.push_str("}\n");
        if self.votequorum {
            let _ = write!(
                s,
                "quorum {{\n\
                 \x20   provider: corosync_votequorum\n\
                 \x20   expected_votes: {}\n\
                 }}\n",
                self.addrs.len()
            );
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
            votequorum: false,
        }
        .render()
    }

    #[test]
    fn votequorum_is_opt_in_with_one_vote_per_node() {
        assert!(!config(false).contains("quorum"), "{}", config(false));
        let three = Config {
            cluster_name: "t".into(),
            token_ms: 1000,
            addrs: vec![std::net::Ipv4Addr::LOCALHOST; 3],
            allowed_uids: Vec::new(),
            debug: false,
            votequorum: true,
        }
        .render();
        assert!(
            three.contains(
                "quorum {\n    provider: corosync_votequorum\n    expected_votes: 3\n}\n"
            ),
            "{three}"
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
