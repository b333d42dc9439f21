//! The group-layer examples as a user runs them, on private clusters from
//! `cpg-testkit`: `leader` on three nodes hands over when the leader's node dies, and
//! `reconnect` comes back after its daemon is killed and restarted.
//!
//! Needs root and corosync, like every test of this workspace; without them the
//! harness panics, so these tests fail rather than skip. Every wait is bounded; each
//! program is SIGKILLed and reaped when its [`Program`] drops.

mod support;

use std::time::{Duration, Instant};

use cpg_testkit::Cluster;
use support::{heavy, Program};

const LEADER: &str = env!("CARGO_BIN_EXE_leader");
const RECONNECT: &str = env!("CARGO_BIN_EXE_reconnect");
const WAIT: Duration = Duration::from_secs(30);

/// Waits until a line of `program`'s from index `from` on contains `text`; returns its
/// index.
fn expect(program: &Program, from: usize, text: &str) -> usize {
    program
        .wait_line(from, WAIT, &format!("a line with {text:?}"), |l| {
            l.contains(text)
        })
        .0
}

/// The tick numbers and who sent them, from `TICK N by node X (nodeX) pid Y` lines.
fn ticks(lines: &[String]) -> Vec<(u64, u32)> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("TICK ")?;
            let mut w = rest.split(' ');
            let n = w.next()?.parse().ok()?;
            let node = w.nth(2)?.parse().ok()?;
            Some((n, node))
        })
        .collect()
}

/// `leader` on nodes 1-3: node 1's (lowest node id) ticks; its daemon is killed; node
/// 2's takes over and continues the count, with no gap and no repeat on node 3.
#[test]
fn leader_example_hands_over_when_the_leaders_node_dies() {
    let _heavy = heavy();
    let cluster = Cluster::start(3);
    let group = "example-leader";
    // One at a time, each once the previous ones are in its first view: started
    // together, a member whose first view holds only itself leads (and ticks) for a
    // moment, and node 3's record would not start with node 1's ticks.
    let mut progs: Vec<Program> = Vec::new();
    for i in 0..3 {
        let p = Program::start(
            cluster.node(i),
            LEADER,
            &[group, "--interval-ms", "100"],
            None,
        );
        expect(&p, 0, &format!(" members={} ", i + 1));
        progs.push(p);
    }
    expect(&progs[0], 0, "ROLE leader");
    for p in &progs {
        expect(p, 0, " members=3 ");
    }
    for p in &progs[1..] {
        let first_role = expect(p, 0, "ROLE ");
        assert!(
            p.stdout()[first_role].contains("follower"),
            "{:?}",
            p.stdout()
        );
    }
    for p in &progs {
        expect(p, 0, "by node 1 (node1) pid");
    }
    cluster.kill_daemon(0);
    let at = expect(&progs[1], 0, "ROLE leader");
    for p in &progs[1..] {
        expect(p, at.min(p.stdout().len()), "by node 2 (node2) pid");
    }
    // A few more of node 2's ticks, then check node 3's record.
    let seen = ticks(&progs[2].stdout()).len();
    let deadline = Instant::now() + WAIT;
    while ticks(&progs[2].stdout()).len() < seen + 5 {
        assert!(Instant::now() < deadline, "node 2's member stopped ticking");
        std::thread::sleep(Duration::from_millis(50));
    }
    let record = ticks(&progs[2].stdout());
    let numbers: Vec<u64> = record.iter().map(|t| t.0).collect();
    let first = numbers[0];
    assert_eq!(
        numbers,
        (first..first + numbers.len() as u64).collect::<Vec<_>>(),
        "node 3 saw a gap or a repeat: {record:?}"
    );
    let switch = record.iter().position(|t| t.1 == 2).unwrap();
    assert!(
        switch > 0 && record[..switch].iter().all(|t| t.1 == 1),
        "node 3 saw ticks of another member than node 1 before node 2's: {record:?}"
    );
    assert!(record[switch..].iter().all(|t| t.1 == 2), "{record:?}");
}

/// `reconnect` on node 1 of 2: confirmed messages, then its daemon is killed (it
/// reports DISCONNECTED) and restarted (RECONNECTED 2), and messages are confirmed in
/// views of the new connection.
#[test]
fn reconnect_example_comes_back_after_a_daemon_restart() {
    let _heavy = heavy();
    let cluster = Cluster::builder().nodes(2).start().unwrap();
    let prog = Program::start(
        cluster.node(0),
        RECONNECT,
        &["example-reconnect", "--interval-ms", "100"],
        None,
    );
    expect(&prog, 0, "CONFIRMED #1 in view 1.");
    cluster.kill_daemon(0);
    let lost = expect(&prog, 0, "DISCONNECTED");
    cluster.restart_daemon(0);
    let back = expect(&prog, lost, "RECONNECTED 2");
    expect(&prog, back, "in view 2.");
    let lines = prog.stdout();
    assert!(
        lines[lost..back]
            .iter()
            .all(|l| !l.starts_with("CONFIRMED")),
        "confirmed while disconnected: {lines:?}"
    );
}

/// `--help` of both programs prints their own usage and exits 0 (run inside the shared
/// node's namespace, so a program that ignored `--help` could only reach that daemon).
#[test]
fn group_examples_answer_help() {
    let node = cpg_testkit::shared();
    for program in [LEADER, RECONNECT] {
        let name = program.rsplit('/').next().unwrap();
        let out = node
            .command(program)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        assert!(out.status.success(), "{name} --help: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Usage: {name}")),
            "{name} --help:\n{text}"
        );
        assert!(
            !text.contains("Example programs for the cpg crate"),
            "{text}"
        );
    }
}
