//! The `nemesis` program as CI runs it: the checker's self-test, and a short run of
//! random faults on a private 3-node cluster that must find no violation; and its
//! `--help`.
//!
//! The run needs root and corosync (and nftables), like every test of this workspace:
//! without them nemesis fails, and so does this test; it never skips.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NEMESIS: &str = env!("CARGO_BIN_EXE_nemesis");

/// Runs nemesis with `args` to its end (at most `timeout`, then it is killed);
/// returns its exit code and its stdout and stderr.
fn run(args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = Command::new(NEMESIS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {NEMESIS}: {e}"));
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // SIGTERM: nemesis cleans up (daemons, namespaces) and exits.
            let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
            // SAFETY: kill has no memory-safety preconditions; the pid is our
            // unreaped child's.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    assert!(
        status.is_some(),
        "nemesis {args:?} did not finish within {timeout:?}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
    );
    (status.and_then(|s| s.code()), out, err)
}

/// `nemesis --help` prints its own usage text (not the package's description) and
/// exits 0 without doing anything else.
#[test]
fn nemesis_answers_help() {
    let (code, out, err) = run(&["--help"], Duration::from_secs(30));
    assert_eq!(code, Some(0), "nemesis --help:\n{out}\n{err}");
    assert!(out.contains("Usage: nemesis"), "{out}");
    assert!(
        !out.contains(env!("CARGO_PKG_DESCRIPTION")),
        "nemesis --help shows the package description: {out}"
    );
    assert!(err.is_empty(), "nemesis --help wrote to stderr: {err}");
}

/// Every planted defect is detected and the clean history passes.
#[test]
fn nemesis_self_test_detects_every_planted_defect() {
    let (code, out, err) = run(&["--self-test"], Duration::from_secs(60));
    assert_eq!(code, Some(0), "--self-test failed:\n{out}\n{err}");
    for defect in [
        "dropped message",
        "duplicate",
        "swapped pair",
        "corrupted payload",
        "members disagree on a view",
        "delivered after its view",
    ] {
        assert!(
            out.contains(&format!("self-test: {defect}: detected: ")),
            "{defect} not reported as detected:\n{out}"
        );
    }
    assert!(out.contains("self-test: clean history"), "{out}");
    assert!(
        out.contains("self-test: messages lost in recovery: ")
            && out.contains("anomalies of the daemon; at one client of a node: detected: "),
        "the recovery-loss anomaly is not classified as expected:\n{out}"
    );
}

/// A short run: at least 30 faults of every kind on a 3-node cluster with 9 plain
/// clients (blocking and async), 3 group-layer and 3 replica clients, then heal, drain
/// and check. No violation, and the final line counts what was checked. Anomalies of
/// the daemon (messages corosync lost in a ring recovery, rings it never announced: this
/// package's README, "What the runs showed about corosync") are printed and allowed.
#[test]
fn nemesis_short_run_finds_no_violation() {
    // The histories are kept for a failure's evidence, and removed on success.
    let keep = std::env::temp_dir().join(format!("nemesis-ci-{}", std::process::id()));
    let keep_arg = keep.to_str().expect("temp dir is UTF-8");
    let (code, out, err) = run(
        &[
            "--seed", "20261130", "--faults", "30", "--rate", "10", "--keep", keep_arg,
        ],
        Duration::from_secs(900),
    );
    // What was checked, for the log (`--nocapture`).
    for line in out
        .lines()
        .filter(|l| l.starts_with("nemesis: ") || l.starts_with("note: "))
    {
        println!("{line}");
    }
    let last = out.lines().last().unwrap_or_default().to_string();
    let report = format!(
        "--- stdout ---\n{out}\n--- stderr ---\n{err}\n(histories and fault log kept in {}; \
         `nemesis --check DIR` checks them again)",
        keep.display()
    );
    assert_eq!(code, Some(0), "nemesis failed:\n{report}");
    let counts: Vec<u64> = last
        .strip_prefix("nemesis: ")
        .unwrap_or_else(|| panic!("no final line:\n{report}"))
        .split(", ")
        .map(|part| {
            part.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("final line {last:?}:\n{report}"))
        })
        .collect();
    assert!(
        last.ends_with(" violations") && counts.len() == 4,
        "final line {last:?}:\n{report}"
    );
    let (faults, messages, views, violations) = (counts[0], counts[1], counts[2], counts[3]);
    assert!(faults >= 30, "{faults} faults:\n{report}");
    assert!(messages > 1000, "{messages} messages:\n{report}");
    assert!(views > 50, "{views} views:\n{report}");
    assert_eq!(violations, 0, "{report}");
    let _ = std::fs::remove_dir_all(&keep);
}
