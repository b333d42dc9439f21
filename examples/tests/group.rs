//! The group-layer examples as a user runs them, on private clusters from
//! `cpg-testkit`: `leader` on three nodes hands over when the leader's node dies, and
//! `reconnect` comes back after its daemon is killed and restarted.
//!
//! Needs root and corosync, like every test of this workspace; without them the
//! harness panics, so these tests fail rather than skip. Every wait is bounded; each
//! program is SIGKILLed and reaped when its [`Program`] drops.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cpg_testkit::{Cluster, Node};

const LEADER: &str = env!("CARGO_BIN_EXE_leader");
const RECONNECT: &str = env!("CARGO_BIN_EXE_reconnect");
const WAIT: Duration = Duration::from_secs(30);

/// One cluster at a time (2 cores).
fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// A program on a node, its stdout collected line by line.
struct Program {
    what: String,
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Program {
    fn start(node: &Node, program: &str, args: &[&str]) -> Program {
        let what = format!(
            "{} on node {}",
            program.rsplit('/').next().unwrap(),
            node.nodeid()
        );
        let mut child = node
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let out = child.stdout.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                sink.1.notify_all();
            }
        });
        Program { what, child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until a line from index `from` on contains `text`; returns its index.
    fn expect(&self, from: usize, text: &str) -> usize {
        let deadline = Instant::now() + WAIT;
        let mut lines = self.lines.0.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(i) = lines.iter().skip(from).position(|l| l.contains(text)) {
                return from + i;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{}: no line with {text:?} within {WAIT:?}; output:\n{}",
                self.what,
                lines.join("\n")
            );
            lines = self
                .lines
                .1
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tick numbers and who sent them, from `TICK N by node X pid Y` lines.
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
        let p = Program::start(cluster.node(i), LEADER, &[group, "--interval-ms", "100"]);
        p.expect(0, &format!(" members={} ", i + 1));
        progs.push(p);
    }
    progs[0].expect(0, "ROLE leader");
    for p in &progs {
        p.expect(0, " members=3 ");
    }
    for p in &progs[1..] {
        let first_role = p.expect(0, "ROLE ");
        assert!(
            p.lines()[first_role].contains("follower"),
            "{:?}",
            p.lines()
        );
    }
    for p in &progs {
        p.expect(0, "by node 1 pid");
    }
    cluster.kill_daemon(0);
    let at = progs[1].expect(0, "ROLE leader");
    for p in &progs[1..] {
        p.expect(at.min(p.lines().len()), "by node 2 pid");
    }
    // A few more of node 2's ticks, then check node 3's record.
    let seen = ticks(&progs[2].lines()).len();
    let deadline = Instant::now() + WAIT;
    while ticks(&progs[2].lines()).len() < seen + 5 {
        assert!(Instant::now() < deadline, "node 2's member stopped ticking");
        std::thread::sleep(Duration::from_millis(50));
    }
    let record = ticks(&progs[2].lines());
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
    );
    prog.expect(0, "CONFIRMED #1 in view 1.");
    cluster.kill_daemon(0);
    let lost = prog.expect(0, "DISCONNECTED");
    cluster.restart_daemon(0);
    let back = prog.expect(lost, "RECONNECTED 2");
    prog.expect(back, "in view 2.");
    let lines = prog.lines();
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
