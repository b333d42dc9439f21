//! Clusters with corosync's votequorum: the settings a test asks for are the ones
//! corosync runs with (as `corosync-quorumtool -s` reports them), and a partition
//! takes quorum away from the minority.

use std::time::Duration;

use cpg_testkit::{Cluster, Quorum, QuorumDevice, QuorumStatus};

/// Membership changes need token (1 s) + consensus (1.2 s) + join/sync; leave room.
const CHANGE: Duration = Duration::from_secs(20);

/// Polls node `i`'s quorum status until `ok` holds; the last status on timeout.
fn wait_status(
    cluster: &Cluster,
    i: usize,
    what: &str,
    ok: impl Fn(&QuorumStatus) -> bool,
) -> QuorumStatus {
    let mut last = None;
    let done = cpg_testkit::wait_until(CHANGE, Duration::from_millis(100), || {
        last = Some(cluster.node(i).quorum_status());
        matches!(&last, Some(Ok(s)) if ok(s))
    });
    match last {
        Some(Ok(status)) if done => status,
        last => panic!(
            "node {}: {what} not seen within {CHANGE:?}; last: {last:?}",
            i + 1
        ),
    }
}

/// Node 1 with 3 votes, wait_for_all and auto_tie_breaker: every node reports 5
/// expected votes, a quorum of 3, the flags, and node 1's 3 votes.
#[test]
fn three_nodes_run_with_the_votes_and_flags_they_were_given() {
    let cluster = Cluster::builder()
        .nodes(3)
        .quorum(
            Quorum::votequorum()
                .node_votes(1, 3)
                .wait_for_all(true)
                .auto_tie_breaker(true),
        )
        .start()
        .unwrap();
    for i in 0..3 {
        let s = wait_status(&cluster, i, "quorate with all 3 nodes", |s| {
            s.quorate && s.nodes == 3
        });
        assert_eq!(s.provider, "corosync_votequorum");
        assert_eq!(s.node_id, i as u32 + 1);
        assert_eq!(
            (s.expected_votes, s.total_votes, s.quorum),
            (5, 5, 3),
            "{s:?}"
        );
        for flag in ["Quorate", "WaitForAll", "AutoTieBreaker"] {
            assert!(s.has_flag(flag), "{flag} missing: {s:?}");
        }
        assert!(
            !s.has_flag("LastManStanding") && !s.has_flag("2Node"),
            "{s:?}"
        );
        assert_eq!(
            [s.votes_of(1), s.votes_of(2), s.votes_of(3)],
            [Some(3), Some(1), Some(1)]
        );
        let names: Vec<&str> = s.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["node1", "node2", "node3"]);
    }
}

/// expected_votes above the node count and last_man_standing with its window.
#[test]
fn expected_votes_and_last_man_standing_are_what_corosync_reads() {
    let cluster = Cluster::builder()
        .nodes(3)
        .quorum(
            Quorum::votequorum()
                .expected_votes(4)
                .last_man_standing(true)
                .last_man_standing_window_ms(3000),
        )
        .start()
        .unwrap();
    let s = wait_status(&cluster, 0, "quorate", |s| s.quorate && s.nodes == 3);
    assert_eq!(
        (
            s.expected_votes,
            s.highest_expected,
            s.total_votes,
            s.quorum
        ),
        (4, 4, 3, 3),
        "{s:?}"
    );
    assert!(
        s.has_flag("LastManStanding") && !s.has_flag("WaitForAll"),
        "{s:?}"
    );
    let window = cluster
        .node(0)
        .run_tool(
            "corosync-cmapctl",
            ["-g", "quorum.last_man_standing_window"],
        )
        .unwrap();
    assert_eq!(
        window.trim(),
        "quorum.last_man_standing_window (u32) = 3000"
    );
}

/// 2|1: the node cut off reports not quorate (1 of 3 votes, "Activity blocked"), the
/// pair keeps quorum; after the heal all three are quorate again.
#[test]
fn a_partitioned_single_node_loses_quorum_and_the_pair_keeps_it() {
    let cluster = Cluster::builder()
        .nodes(3)
        .quorum(Quorum::votequorum())
        .start()
        .unwrap();
    for i in 0..3 {
        wait_status(&cluster, i, "quorate", |s| s.quorate && s.nodes == 3);
    }
    cluster.partition(2);
    let alone = wait_status(&cluster, 2, "alone and not quorate", |s| {
        s.nodes == 1 && !s.quorate
    });
    assert_eq!(
        (alone.total_votes, alone.expected_votes, alone.quorum),
        (1, 3, 2),
        "{alone:?}"
    );
    assert!(!alone.has_flag("Quorate"), "{alone:?}");
    let raw = cluster
        .node(2)
        .command("corosync-quorumtool")
        .arg("-s")
        .output()
        .unwrap();
    assert!(
        !raw.status.success() && String::from_utf8_lossy(&raw.stdout).contains("Activity blocked"),
        "the tool itself says so: {raw:?}"
    );
    for i in 0..2 {
        let pair = wait_status(&cluster, i, "quorate as a pair", |s| {
            s.nodes == 2 && s.quorate
        });
        assert_eq!((pair.total_votes, pair.quorum), (2, 2), "{pair:?}");
    }
    cluster.heal(2);
    for i in 0..3 {
        wait_status(&cluster, i, "quorate again after the heal", |s| {
            s.quorate && s.nodes == 3
        });
    }
}

/// two_node sets quorum to 1 and turns wait_for_all on; a device section (what a
/// quorum device registers against) counts its votes in expected votes before any
/// device registers.
#[test]
fn two_node_and_a_device_section_are_what_corosync_reads() {
    let two_node = Cluster::builder()
        .nodes(2)
        .quorum(Quorum::votequorum().two_node(true))
        .start()
        .unwrap();
    let s = wait_status(&two_node, 0, "quorate", |s| s.quorate && s.nodes == 2);
    assert_eq!((s.expected_votes, s.quorum), (2, 1), "{s:?}");
    assert!(s.has_flag("2Node") && s.has_flag("WaitForAll"), "{s:?}");
    drop(two_node);

    let device = Cluster::builder()
        .nodes(2)
        .quorum(
            Quorum::votequorum().device(
                QuorumDevice::new("rust_test_device")
                    .votes(1)
                    .timeout_ms(5000)
                    .sync_timeout_ms(9000),
            ),
        )
        .start()
        .unwrap();
    let s = wait_status(&device, 0, "quorate", |s| s.quorate && s.nodes == 2);
    assert_eq!(
        (s.expected_votes, s.total_votes, s.quorum),
        (3, 2, 2),
        "{s:?}"
    );
    assert!(!s.has_flag("Qdevice"), "no device registered yet: {s:?}");
    let model = device
        .node(0)
        .run_tool("corosync-cmapctl", ["quorum.device"])
        .unwrap();
    for want in [
        "quorum.device.model (str) = rust_test_device",
        "quorum.device.votes (u32) = 1",
        "quorum.device.timeout (u32) = 5000",
        "quorum.device.sync_timeout (u32) = 9000",
    ] {
        assert!(model.contains(want), "{want:?} missing:\n{model}");
    }

    // Refused before any daemon starts: corosync would not start with it.
    let err = Cluster::builder()
        .nodes(2)
        .quorum(
            Quorum::votequorum()
                .two_node(true)
                .device(QuorumDevice::new("d").votes(1)),
        )
        .start()
        .unwrap_err();
    assert!(err.message().contains("beside two_node"), "{err}");
}
