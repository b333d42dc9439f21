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
//! * No quorum provider unless a cluster asks for one ([`crate::ClusterBuilder::quorum`]):
//!   CPG does not need quorum, and a partitioned minority must keep working so tests
//!   can observe it.
//! * Log to stderr only (the harness sends it to `corosync.log` in the node's
//!   directory), with timestamps. A cluster built with
//!   [`crate::ClusterBuilder::daemon_debug`] logs at debug level with millisecond
//!   timestamps: totem at trace level (every message it receives, delivers and
//!   releases, with its sequence number; membership and recovery steps), CPG's and
//!   sync's debug lines; not the knet transport's debug lines, which would drown the
//!   rest.
//! * In the container mode ([`crate::Mode::Container`]), which has no private mount
//!   namespace for the daemon: `system { state_dir: NODE_DIR/lib }` keeps corosync's
//!   state out of `/var/lib/corosync`; `allow_knet_handle_fallback: yes` lets knet
//!   start without `CAP_NET_ADMIN` on the versions that need it; `logging { blackbox:
//!   off }` keeps an 8 MiB file out of the container's `/dev/shm` (64 MiB in a default
//!   Docker container, where each client connection maps about 3 MiB more).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::Quorum;

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
    /// `quorum { provider: corosync_votequorum ... }` and the nodes' `quorum_votes`.
    pub(crate) quorum: Option<Quorum>,
    /// The container mode's `system { state_dir }` (see the module docs); `None` in the
    /// namespaces mode, where `/var/lib/corosync` is the node's own directory already.
    pub(crate) container_state_dir: Option<PathBuf>,
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
        for (id, addr) in (1..).zip(&self.addrs) {
            let _ = write!(
                s,
                "    node {{\n\
                 \x20       ring0_addr: {addr}\n\
                 \x20       nodeid: {id}\n\
                 \x20       name: {}\n",
                node_name(id)
            );
            if let Some(line) = self.quorum.as_ref().and_then(|q| q.node_votes_line(id)) {
                s.push_str(&line);
            }
            s.push_str("    }\n");
        }
        s.push_str("}\n");
        if let Some(quorum) = &self.quorum {
            s.push_str(&quorum.render_section());
        }
        if let Some(dir) = &self.container_state_dir {
            let _ = write!(
                s,
                "system {{\n\
                 \x20   state_dir: {}\n\
                 \x20   allow_knet_handle_fallback: yes\n\
                 }}\n",
                dir.display()
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
        if self.container_state_dir.is_some() {
            s.push_str("    blackbox: off\n");
        }
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

/// The `name` the harness gives node `nodeid` in the node list: `node1`, `node2`, ...
pub(crate) fn node_name(nodeid: u32) -> String {
    format!("node{nodeid}")
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::Config;
    use crate::{Quorum, QuorumDevice};

    fn base(nodes: u8) -> Config {
        Config {
            cluster_name: "t".into(),
            token_ms: 1000,
            addrs: (1..=nodes).map(|i| Ipv4Addr::new(10, 213, 0, i)).collect(),
            allowed_uids: Vec::new(),
            debug: false,
            quorum: None,
            container_state_dir: None,
        }
    }

    fn config(debug: bool) -> String {
        Config {
            debug,
            addrs: vec![Ipv4Addr::LOCALHOST],
            ..base(1)
        }
        .render()
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

    /// The default file, byte for byte: no quorum section, no `system` section, the
    /// blackbox left on. What every existing test ran with before quorum settings and
    /// the container mode existed.
    #[test]
    fn the_default_has_no_quorum_provider_and_no_container_settings() {
        let text = Config {
            allowed_uids: vec![65534],
            ..base(2)
        }
        .render();
        assert_eq!(
            text,
            "# Written by cpg-testkit.\n\
             totem {\n    version: 2\n    cluster_name: t\n    transport: knet\n    \
             crypto_cipher: none\n    crypto_hash: none\n    token: 1000\n    \
             token_coefficient: 0\n}\n\
             nodelist {\n\
             \x20   node {\n        ring0_addr: 10.213.0.1\n        nodeid: 1\n        name: node1\n    }\n\
             \x20   node {\n        ring0_addr: 10.213.0.2\n        nodeid: 2\n        name: node2\n    }\n\
             }\n\
             uidgid {\n    uid: 65534\n}\n\
             logging {\n    to_stderr: yes\n    to_logfile: no\n    to_syslog: no\n    \
             timestamp: on\n}\n"
        );
    }

    #[test]
    fn quorum_settings_are_written_where_votequorum_reads_them() {
        let quorum = Quorum::votequorum()
            .expected_votes(5)
            .wait_for_all(true)
            .last_man_standing(true)
            .last_man_standing_window_ms(2500)
            .auto_tie_breaker(false)
            .node_votes(2, 3);
        let text = Config {
            quorum: Some(quorum),
            ..base(3)
        }
        .render();
        assert!(
            text.contains(
                "quorum {\n    provider: corosync_votequorum\n    expected_votes: 5\n    \
                 wait_for_all: 1\n    last_man_standing: 1\n    auto_tie_breaker: 0\n    \
                 last_man_standing_window: 2500\n}\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("two_node"),
            "unset settings stay unwritten: {text}"
        );
        // Only node 2 gets a quorum_votes line, inside its own node entry.
        assert_eq!(text.matches("quorum_votes").count(), 1, "{text}");
        assert!(
            text.contains("nodeid: 2\n        name: node2\n        quorum_votes: 3\n    }"),
            "{text}"
        );
    }

    #[test]
    fn a_device_section_carries_model_votes_and_timeouts() {
        let device = QuorumDevice::new("rust_qdevice")
            .votes(1)
            .timeout_ms(4000)
            .sync_timeout_ms(8000);
        let text = Config {
            quorum: Some(Quorum::votequorum().device(device)),
            ..base(2)
        }
        .render();
        assert!(
            text.contains(
                "quorum {\n    provider: corosync_votequorum\n    device {\n        \
                 model: rust_qdevice\n        votes: 1\n        timeout: 4000\n        \
                 sync_timeout: 8000\n    }\n}\n"
            ),
            "{text}"
        );
        let two_node = Config {
            quorum: Some(Quorum::votequorum().two_node(true)),
            ..base(2)
        }
        .render();
        assert!(two_node.contains("    two_node: 1\n"), "{two_node}");
    }

    #[test]
    fn the_container_mode_keeps_state_and_blackbox_out_of_system_directories() {
        let text = Config {
            container_state_dir: Some("/tmp/x/cpgt-1-1/n1/lib".into()),
            addrs: vec![Ipv4Addr::LOCALHOST],
            ..base(1)
        }
        .render();
        for want in [
            "system {\n    state_dir: /tmp/x/cpgt-1-1/n1/lib\n    allow_knet_handle_fallback: yes\n}\n",
            "    blackbox: off\n",
            "ring0_addr: 127.0.0.1",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
    }

    #[test]
    fn settings_corosync_refuses_or_overrides_are_refused_before_any_daemon_starts() {
        let refused = |q: Quorum, nodes: u32, why: &str| {
            let err = q.check(nodes).expect_err(why);
            assert!(err.message().contains(why), "{why:?} not in: {err}");
        };
        let device = || QuorumDevice::new("d");
        refused(
            Quorum::votequorum().two_node(true).device(device()),
            2,
            "beside two_node",
        );
        refused(
            Quorum::votequorum()
                .last_man_standing(true)
                .device(device()),
            3,
            "beside last_man_standing",
        );
        refused(
            Quorum::votequorum()
                .auto_tie_breaker(true)
                .wait_for_all(true)
                .device(device()),
            2,
            "beside auto_tie_breaker",
        );
        refused(
            Quorum::votequorum().expected_votes(4).device(device()),
            3,
            "without votes beside expected_votes",
        );
        refused(
            Quorum::votequorum()
                .expected_votes(3)
                .device(device().votes(2)),
            2,
            "at least device votes + 2",
        );
        refused(
            Quorum::votequorum().node_votes(1, 2).device(device()),
            3,
            "not every node has 1 vote",
        );
        refused(
            Quorum::votequorum().two_node(true).auto_tie_breaker(true),
            2,
            "two_node with auto_tie_breaker",
        );
        refused(
            Quorum::votequorum().auto_tie_breaker(true),
            3,
            "needs wait_for_all",
        );
        refused(
            Quorum::votequorum().last_man_standing_window_ms(1000),
            3,
            "without last_man_standing",
        );
        refused(
            Quorum::votequorum()
                .last_man_standing(true)
                .node_votes(1, 2),
            3,
            "other than 1 vote",
        );
        refused(Quorum::votequorum().node_votes(4, 1), 3, "node id 4");
        refused(
            Quorum::votequorum().device(QuorumDevice::new("a b")),
            2,
            "model \"a b\"",
        );
        refused(
            Quorum::votequorum().device(QuorumDevice::new("")),
            2,
            "model \"\"",
        );

        let fine = [
            Quorum::votequorum(),
            Quorum::votequorum().two_node(true),
            Quorum::votequorum().two_node(true).wait_for_all(false),
            Quorum::votequorum().device(device().votes(1)),
            Quorum::votequorum().device(device()),
            Quorum::votequorum()
                .expected_votes(4)
                .device(device().votes(1)),
            Quorum::votequorum()
                .auto_tie_breaker(true)
                .wait_for_all(true),
            Quorum::votequorum()
                .last_man_standing(true)
                .last_man_standing_window_ms(1000),
        ];
        for q in fine {
            let nodes = if q
                == Quorum::votequorum()
                    .auto_tie_breaker(true)
                    .wait_for_all(true)
            {
                3
            } else {
                2
            };
            q.check(nodes).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        }
        // Auto tie breaker on an even number of votes needs no wait_for_all.
        Quorum::votequorum()
            .auto_tie_breaker(true)
            .check(4)
            .unwrap();
        assert_eq!(Quorum::votequorum().node_votes(2, 3).votes_of(2), 3);
        assert_eq!(Quorum::votequorum().node_votes(2, 3).votes_of(1), 1);
    }
}
