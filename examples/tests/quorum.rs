//! The `quorum` example as a user runs it: on the shared single-node daemon (which has
//! no quorum provider) `--once` prints the state and exits, the default follows until
//! killed, text and JSON; on a votequorum cluster it prints every member's votes and
//! the quorum, the numbers `corosync-quorumtool -s` prints.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");
/// How long the program may take to print a line or to exit.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The program on the shared node, its stdout lines arriving on a channel; killed and
/// reaped on drop.
struct Running {
    child: Child,
    lines: Receiver<String>,
}

impl Running {
    /// On the shared node.
    fn start(args: &[&str]) -> Running {
        Running::on(cpg_testkit::shared(), args)
    }

    fn on(node: &cpg_testkit::Node, args: &[&str]) -> Running {
        let mut child = node
            .command(QUORUM)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the quorum example");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The next `n` stdout lines.
    fn lines(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.lines
                    .recv_timeout(TIMEOUT)
                    .unwrap_or_else(|e| panic!("line {i}: {e}"))
            })
            .collect()
    }

    /// Waits for the exit status (bounded).
    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "did not exit within {TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn once_prints_the_state_without_a_provider_as_json_and_exits() {
    let mut q = Running::start(&["--json", "--once"]);
    let lines = q.lines(3);
    assert_eq!(
        parse(&lines[0]),
        json!({"event": "state", "provider": false, "quorate": true})
    );
    let nodelist = parse(&lines[1]);
    assert_eq!(nodelist["event"], "nodelist");
    assert_eq!(nodelist["members"], json!([1]));
    assert_eq!(nodelist["ring"]["nodeid"], 1, "{nodelist}");
    assert!(nodelist["ring"]["seq"].as_u64().is_some(), "{nodelist}");
    assert_eq!(
        parse(&lines[2]),
        json!({"event": "quorum", "quorate": true, "ring": {"nodeid": 0, "seq": 0},
               "members": []})
    );
    assert!(q.wait().success());
    assert!(
        q.lines.recv_timeout(TIMEOUT).is_err(),
        "nothing after the state"
    );
}

#[test]
fn without_arguments_it_prints_text_and_keeps_following() {
    let q = Running::start(&[]);
    let lines = q.lines(4);
    assert_eq!(lines[0], "quorum provider: no (every partition is quorate)");
    assert_eq!(lines[1], "quorate: yes");
    assert!(
        lines[2].starts_with("ring 1.") && lines[2].ends_with(": members [1], joined [], left []"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], "ring 0.0: quorate: yes, members []");
    // Still following.
    std::thread::sleep(Duration::from_millis(300));
    let mut q = q;
    assert!(q.child.try_wait().unwrap().is_none(), "it keeps following");
}

#[test]
fn with_votequorum_once_prints_every_members_votes_and_the_quorum() {
    let cluster = cpg_testkit::Cluster::builder()
        .nodes(3)
        .quorum(cpg_testkit::Quorum::votequorum().node_votes(3, 2))
        .start()
        .expect("3 nodes, node 3 with 2 votes");
    let mut q = Running::on(cluster.node(0), &["--json", "--once"]);
    let lines = q.lines(5);
    assert_eq!(
        parse(&lines[0]),
        json!({"event": "state", "provider": true, "quorate": true})
    );
    assert_eq!(parse(&lines[1])["event"], "nodelist");
    assert_eq!(
        parse(&lines[2]),
        json!({"event": "member_votes", "votes": {"1": 1, "2": 1, "3": 2}})
    );
    assert_eq!(parse(&lines[3])["event"], "quorum");
    // The flags as corosync-quorumtool -s names them on its Flags: line.
    let tool = cluster
        .node(0)
        .quorum_status()
        .expect("corosync-quorumtool -s");
    assert_eq!(tool.flags, ["Quorate"]);
    assert_eq!(
        parse(&lines[4]),
        json!({"event": "votes", "expected": 4, "highest_expected": 4, "total": 4,
               "quorum": 3, "flags": tool.flags})
    );
    assert!(q.wait().success());
    let mut text = Running::on(cluster.node(1), &["--once"]);
    let lines = text.lines(6);
    assert_eq!(lines[3], "votes: node 1: 1, node 2: 1, node 3: 2");
    assert_eq!(
        lines[5],
        "expected votes: 4, highest expected: 4, total votes: 4, quorum: 3, flags: Quorate"
    );
    assert!(text.wait().success());
}

/// With wait_for_all and auto_tie_breaker configured, the example names the flags as
/// `corosync-quorumtool -s` does, in its order.
#[test]
fn with_votequorum_the_flags_have_quorumtools_names() {
    let cluster = cpg_testkit::Cluster::builder()
        .nodes(1)
        .quorum(
            cpg_testkit::Quorum::votequorum()
                .wait_for_all(true)
                .auto_tie_breaker(true),
        )
        .start()
        .expect("1 node, wait_for_all, auto_tie_breaker");
    let tool = cluster
        .node(0)
        .quorum_status()
        .expect("corosync-quorumtool -s");
    assert_eq!(tool.flags, ["Quorate", "WaitForAll", "AutoTieBreaker"]);
    let mut q = Running::on(cluster.node(0), &["--json", "--once"]);
    let lines = q.lines(5);
    assert_eq!(parse(&lines[4])["flags"], json!(tool.flags));
    assert!(q.wait().success());
    let mut text = Running::on(cluster.node(0), &["--once"]);
    let lines = text.lines(6);
    assert!(
        lines[5].ends_with(", flags: Quorate WaitForAll AutoTieBreaker"),
        "{}",
        lines[5]
    );
    assert!(text.wait().success());
}
