//! What a node exposes to tests: what the harness wrote (names, addresses, the
//! configuration file) is what corosync reads; tools run against it; a client runs
//! as another user; a daemon that stops by itself is accounted for.

use std::time::Duration;

use cpg_testkit::{Cluster, Node};

const WAIT: Duration = Duration::from_secs(20);
const NOBODY: u32 = 65534;

/// The value of a one-key `corosync-cmapctl -g KEY` answer (`KEY (type) = VALUE`).
fn cmap_get(node: &Node, key: &str) -> String {
    let out = node.run_tool("corosync-cmapctl", ["-g", key]).unwrap();
    out.trim()
        .split_once(" = ")
        .unwrap_or_else(|| panic!("{key}: {out:?}"))
        .1
        .to_string()
}

/// Every node's daemon reads the cluster name and every node's name, address and id
/// exactly as the accessors report them, from the file `config_path` names.
#[test]
fn what_the_kit_wrote_is_what_each_daemon_reads() {
    let cluster = Cluster::start(3);
    for node in cluster.nodes() {
        assert_eq!(node.cluster_name(), cluster.name());
        assert_eq!(cmap_get(node, "totem.cluster_name"), cluster.name());
        for (pos, peer) in cluster.nodes().iter().enumerate() {
            let key = |k: &str| format!("nodelist.node.{pos}.{k}");
            assert_eq!(cmap_get(node, &key("nodeid")), peer.nodeid().to_string());
            assert_eq!(cmap_get(node, &key("name")), peer.name());
            assert_eq!(cmap_get(node, &key("ring0_addr")), peer.addr().to_string());
        }
        assert!(
            node.run_tool("corosync-cmapctl", ["-g", "quorum.provider"])
                .is_err(),
            "no quorum provider by default"
        );
        let file = std::fs::read_to_string(node.config_path()).unwrap();
        assert!(
            file.contains(&format!("cluster_name: {}", cluster.name()))
                && file.contains(&format!("name: {}", node.name()))
                && !file.contains("quorum"),
            "{file}"
        );
    }
    assert_eq!(
        cluster.nodes().iter().map(Node::name).collect::<Vec<_>>(),
        ["node1", "node2", "node3"]
    );
}

/// The same for the shared node (in either mode), and a tool that fails is an error
/// that carries its status and stderr.
#[test]
fn the_shared_node_reads_what_was_written_and_tool_failures_say_why() {
    let node = cpg_testkit::shared();
    assert_eq!(cmap_get(node, "totem.cluster_name"), node.cluster_name());
    assert_eq!(cmap_get(node, "nodelist.node.0.name"), "node1");
    assert_eq!(cmap_get(node, "nodelist.node.0.ring0_addr"), "127.0.0.1");
    assert!(node.config_path().is_file());
    let err = node
        .run_tool("corosync-cmapctl", ["-g", "no.such.key"])
        .unwrap_err();
    assert!(
        err.message()
            .contains("corosync-cmapctl failed (exit status: 1)")
            && err.message().contains("CS_ERR_NOT_EXIST"),
        "{err}"
    );
    // No provider on the shared node: the quorum tool's answer is an error, not a
    // status.
    let err = node.quorum_status().unwrap_err();
    assert!(err.message().contains("Quorum provider"), "{err}");
}

/// `command_as` runs the program in the node's namespace with the given uid and gid
/// and no supplementary groups, under its own pid; corosync refuses that user unless
/// `allow_uid` lets it in.
#[test]
fn a_command_as_another_user_runs_in_the_node_namespace_and_is_refused_unless_allowed() {
    let node = cpg_testkit::shared();
    let out = node
        .command_as("sh", NOBODY, NOBODY)
        .args([
            "-c",
            "echo $$ $(id -u) $(id -g) $(id -G) $(readlink /proc/self/ns/net)",
        ])
        .output()
        .unwrap();
    let node_ns = node.enter(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    let line = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words[1..],
        ["65534", "65534", "65534", node_ns.to_str().unwrap()],
        "{line}"
    );
    // The shared node allows root only.
    let refused = node
        .command_as("corosync-cmapctl", NOBODY, NOBODY)
        .args(["-g", "totem.cluster_name"])
        .output()
        .unwrap();
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("CS_ERR_ACCESS"),
        "{refused:?}"
    );
}

#[test]
fn an_allowed_uid_connects() {
    let cluster = Cluster::builder()
        .nodes(1)
        .allow_uid(NOBODY)
        .start()
        .unwrap();
    let out = cluster
        .node(0)
        .command_as("corosync-cmapctl", NOBODY, NOBODY)
        .args(["-g", "totem.cluster_name"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(cluster.name()),
        "{out:?}"
    );
}

/// A daemon shut down by `corosync-cfgtool -H` exits with status 0 by itself: the
/// harness reports it stopped, the peer sees it leave, killing or stopping it is a
/// no-op, it restarts and rejoins, and the cluster still cleans up.
#[test]
fn a_daemon_that_shuts_itself_down_is_accounted_for() {
    let cluster = Cluster::start(2);
    let node = cluster.node(1);
    let pid = node.daemon_pid().expect("running");
    node.run_tool("corosync-cfgtool", ["-H"]).unwrap();
    let status = node.wait_daemon_exit(WAIT).expect("exits by itself");
    assert!(status.success(), "{status}");
    assert_eq!(node.daemon_pid(), None);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "reaped"
    );
    cluster.wait_members(0, &[1], WAIT).unwrap();
    assert!(!cluster.pause_daemon(1), "nothing to pause");
    cluster.kill_daemon(1);
    cluster.stop_daemon(1);
    assert_eq!(node.wait_daemon_exit(Duration::ZERO), None, "accounted for");
    cluster.restart_daemon(1);
    assert!(node.daemon_pid().is_some_and(|p| p != pid));
    cluster.wait_members(0, &[1, 2], WAIT).unwrap();
    cluster.wait_members(1, &[1, 2], WAIT).unwrap();
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    assert!(
        log.contains(&format!(
            "=== cpg-testkit: corosync (pid {pid}) exited: exit status: 0 ==="
        )),
        "the log notes the exit:\n{log}"
    );
}
