//! The `kv` example as a user runs it, on a private 3-node cluster from `cpg-testkit`:
//! a value written on one node is read on the others; a late copy catches up; a
//! partitioned node refuses writes (majority gate) and catches up after the heal; a
//! killed copy is replaced by a new one that catches up; a daemon restart is survived;
//! and at the end every copy reports the same digest. A stopped copy (a ghost still in
//! the group) delays a round by its deadline only, and catches up once continued.
//!
//! Needs root and corosync, like every test of this workspace; without them the
//! harness panics, so these tests fail rather than skip. Every wait is bounded; each
//! program is SIGKILLed and reaped when its [`Kv`] drops.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cpg_testkit::{Cluster, Node};

const KV: &str = env!("CARGO_BIN_EXE_kv");
const WAIT: Duration = Duration::from_secs(60);

/// One cluster at a time (2 cores).
fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// `kv` on a node, fed commands on stdin, its stdout collected line by line.
struct Kv {
    what: String,
    child: Child,
    stdin: ChildStdin,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Kv {
    fn start(node: &Node, args: &[&str]) -> Kv {
        let what = format!("kv on node {}", node.nodeid());
        let mut child = node
            .command(KV)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let out = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                sink.1.notify_all();
            }
        });
        Kv {
            what,
            child,
            stdin,
            lines,
        }
    }

    fn len(&self) -> usize {
        self.lines.0.lock().unwrap().len()
    }

    fn send(&mut self, command: &str) -> usize {
        let mark = self.len();
        writeln!(self.stdin, "{command}").expect("write a command");
        self.stdin.flush().unwrap();
        mark
    }

    /// Waits until a line from index `from` on starts with `prefix`; returns it.
    fn expect(&self, from: usize, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut lines = self.lines.0.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(l) = lines.iter().skip(from).find(|l| l.starts_with(prefix)) {
                return l.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{}: no line starting with {prefix:?} within {WAIT:?}; output:\n{}",
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

    /// Sends a command and returns the first answer line starting with one of
    /// `answers`.
    fn ask(&mut self, command: &str, answers: &[&str]) -> String {
        let mark = self.send(command);
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let lines = self.lines.0.lock().unwrap();
                if let Some(l) = lines
                    .iter()
                    .skip(mark)
                    .find(|l| answers.iter().any(|a| l.starts_with(a)))
                {
                    return l.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: no answer to {command:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asks `get key` until the answer is `want` (a read is local: it shows the value
    /// once this copy has applied the write).
    fn wait_value(&mut self, key: &str, want: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.ask(&format!("get {key}"), &["VALUE", "NONE"]);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: get {key} answers {got:?}, want {want:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `digest` says the copy is synced in a view of `n`; returns the
    /// version and digest part.
    fn wait_synced(&mut self, n: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let d = self.ask("digest", &["DIGEST"]);
            if d.ends_with(&format!("members={n} phase=Ready")) {
                return d.split(' ').take(3).collect::<Vec<_>>().join(" ");
            }
            assert!(Instant::now() < deadline, "{}: {d}", self.what);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kv_survives_kills_partitions_and_restarts() {
    let _heavy = heavy();
    let cluster = Cluster::start(3);
    let args = ["example-kv", "--majority-of", "3", "--verify-secs", "2"];
    let mut kv: Vec<Kv> = (0..2).map(|i| Kv::start(cluster.node(i), &args)).collect();
    for k in &mut kv {
        k.wait_synced(2);
    }
    assert!(kv[0]
        .ask("set color blue", &["OK", "ERR"])
        .starts_with("OK"));
    assert!(kv[1].ask("set size 42", &["OK", "ERR"]).starts_with("OK"));
    kv[1].wait_value("color", "VALUE color blue");

    // A late copy catches up.
    kv.push(Kv::start(cluster.node(2), &args));
    kv[2].wait_synced(3);
    kv[2].wait_value("color", "VALUE color blue");
    kv[2].wait_value("size", "VALUE size 42");

    // Partition node 3: it refuses writes; the majority goes on.
    cluster.partition(2);
    kv[2].wait_synced(1);
    kv[0].wait_synced(2);
    assert_eq!(kv[2].ask("set color red", &["OK", "ERR"]), "ERR minority");
    assert!(kv[0]
        .ask("set color green", &["OK", "ERR"])
        .starts_with("OK"));
    assert!(kv[1].ask("del size", &["OK", "ERR"]).starts_with("OK"));
    kv[2].wait_value("color", "VALUE color blue");
    cluster.heal(2);
    kv[2].wait_value("color", "VALUE color green");
    kv[2].wait_value("size", "NONE size");

    // Kill node 1's copy; a new one takes its place and catches up.
    drop(kv.remove(0));
    kv[0].wait_synced(2);
    assert!(kv[0]
        .ask("set shape round", &["OK", "ERR"])
        .starts_with("OK"));
    kv.insert(0, Kv::start(cluster.node(0), &args));
    kv[0].wait_value("shape", "VALUE shape round");
    kv[0].wait_value("color", "VALUE color green");

    // Restart node 2's daemon; its copy reconnects and converges.
    cluster.kill_daemon(1);
    cluster.restart_daemon(1);
    assert!(kv[2]
        .ask("set after restart", &["OK", "ERR"])
        .starts_with("OK"));
    kv[1].wait_value("after", "VALUE after restart");

    // Every copy in sync with the same digest; the periodic check agrees.
    let digests: Vec<String> = kv.iter_mut().map(|k| k.wait_synced(3)).collect();
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "digests differ: {digests:?}"
    );
    for k in &kv {
        let mark = k.len();
        k.expect(mark, "VERIFIED");
    }
    for k in &kv {
        let all = k.lines.0.lock().unwrap().join("\n");
        assert!(!all.contains("DIVERGED"), "{}:\n{all}", k.what);
    }
}

/// `kv --help` prints its usage and exits 0 (run inside the shared node's namespace).
#[test]
fn kv_answers_help() {
    let out = cpg_testkit::shared()
        .command(KV)
        .arg("--help")
        .output()
        .expect("run kv");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: kv"), "{text}");
}

/// Sends `SIG<name>` to `pid` (a child this test started and has not reaped).
fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}: {status}");
}

/// A copy whose process is stopped (SIGSTOP: its daemon keeps it in the group, it
/// answers nothing) does not stall the others: when a new copy joins, the round's
/// deadline decides without the ghost; once continued, the ghost catches up.
#[test]
fn kv_a_stopped_copy_does_not_stall_the_others() {
    let _heavy = heavy();
    let cluster = Cluster::start(3);
    let args = ["example-kv-ghost", "--verify-secs", "0"];
    let mut kv: Vec<Kv> = (0..3).map(|i| Kv::start(cluster.node(i), &args)).collect();
    for k in &mut kv {
        k.wait_synced(3);
    }
    assert!(kv[0]
        .ask("set before ghost", &["OK", "ERR"])
        .starts_with("OK"));
    kv[2].wait_value("before", "VALUE before ghost");
    let ghost = kv[2].child.id();
    signal(ghost, "STOP");

    let joined = Instant::now();
    kv.push(Kv::start(cluster.node(0), &args));
    for i in [0, 1, 3] {
        kv[i].wait_synced(4);
    }
    let decided = joined.elapsed();
    assert!(
        decided >= Duration::from_secs(5),
        "the round waited for its deadline ({decided:?})"
    );
    kv[3].wait_value("before", "VALUE before ghost");
    assert!(kv[3]
        .ask("set during ghost", &["OK", "ERR"])
        .starts_with("OK"));
    kv[1].wait_value("during", "VALUE during ghost");

    signal(ghost, "CONT");
    kv[2].wait_value("during", "VALUE during ghost");
    let digests: Vec<String> = kv.iter_mut().map(|k| k.wait_synced(4)).collect();
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "digests differ: {digests:?}"
    );
    println!("ghost: the three live copies were in sync {decided:?} after the fourth joined");
}
