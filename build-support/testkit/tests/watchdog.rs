//! The watchdog: a test process killed with SIGKILL (no destructors, no exit handlers)
//! leaves nothing behind for more than a few seconds.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cpg_testkit::{wait_until, Cluster, Mode};

/// Set for the child process that plays the test being killed.
const HOLDER_ENV: &str = "CPG_TESTKIT_WATCHDOG_HOLDER";

/// Only does something as the child of `sigkilled_test_process_is_cleaned_up`: starts
/// the shared node and (in the namespaces mode) a 2-node cluster, reports them, and
/// waits to be killed.
#[test]
fn holder() {
    if std::env::var_os(HOLDER_ENV).is_none() {
        return;
    }
    let shared = cpg_testkit::shared();
    let cluster = (cpg_testkit::mode() == Mode::Namespaces).then(|| Cluster::start(2));
    // libtest's "test holder ... " precedes our first line: start with a newline.
    println!();
    let nodes = cluster.iter().flat_map(|c| c.nodes());
    for node in std::iter::once(shared).chain(nodes) {
        let pid = node.daemon_pid().expect("daemon running");
        println!("NODE {} {pid}", node.netns());
    }
    println!("READY");
    // Bounded: the parent kills us long before this.
    std::thread::sleep(Duration::from_secs(60));
}

/// Kills and reaps the holder when the test fails before it does so itself.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkilled_test_process_is_cleaned_up() {
    let mut holder = Holder(
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["holder", "--exact", "--nocapture", "--test-threads=1"])
            .env(HOLDER_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the holder"),
    );
    let holder_pid = holder.0.id();
    let stdout = holder.0.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut nodes: Vec<(String, u32)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == "READY" => break,
            Ok(line) => {
                if let Some(rest) = line.trim().strip_prefix("NODE ") {
                    let (ns, pid) = rest.split_once(' ').expect("NODE ns pid");
                    nodes.push((ns.to_string(), pid.parse().expect("pid")));
                }
            }
            Err(e) => panic!("the holder did not get ready: {e}"),
        }
    }
    // The shared node and a 2-node cluster; in the container mode the shared node only.
    let expect = match cpg_testkit::mode() {
        Mode::Namespaces => 3,
        Mode::Container => 1,
    };
    assert_eq!(nodes.len(), expect, "{nodes:?}");

    holder.0.kill().expect("SIGKILL the holder");
    holder.0.wait().expect("reap the holder");
    let killed = Instant::now();

    let base = std::env::var_os("CPG_TESTKIT_DIR")
        .filter(|b| !b.is_empty())
        .map_or_else(|| PathBuf::from("/tmp/cpg-testkit"), PathBuf::from);
    let prefix = format!("cpgt-{holder_pid}-");
    let leftovers = || {
        let mut left = Vec::new();
        for (ns, pid) in &nodes {
            if !ns.is_empty() && PathBuf::from("/run/netns").join(ns).exists() {
                left.push(format!("netns {ns}"));
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).starts_with("corosync") {
                left.push(format!("corosync pid {pid}"));
            }
            if PathBuf::from(format!("/dev/shm/qb-corosync-{pid}-blackbox-data")).exists() {
                left.push(format!("blackbox of {pid}"));
            }
            // corosync 3.1's lock file: in the container mode the container's own.
            let lock = std::fs::read_to_string("/var/run/corosync.pid").unwrap_or_default();
            if lock.trim() == pid.to_string() {
                left.push(format!("/run/corosync.pid of {pid}"));
            }
        }
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    left.push(format!("directory {}", e.path().display()));
                }
            }
        }
        left
    };
    let clean = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        leftovers().is_empty()
    });
    assert!(clean, "left behind 10 s after SIGKILL: {:?}", leftovers());
    eprintln!("watchdog cleaned up {:?} after SIGKILL", killed.elapsed());
}
