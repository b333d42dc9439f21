//! The benchmark programs as a user runs them, on the shared single-node daemon of
//! `cpg-testkit` (inside its network namespace): short verified sweeps of `bench` and
//! `bench_raw` in every design, `bench --latency`, and `--help` of every program. They
//! check what the figures rest on (a row per size, messages counted, every message
//! verified: none lost, duplicated, reordered or corrupted), never speed.
//!
//! Needs root and corosync, like every test of this workspace: without a daemon the
//! harness panics, so these tests fail rather than skip. Every run is bounded; one
//! that overruns is killed.

use std::io::Read;
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use cpg_testkit::Node;

const BENCH: &str = env!("CARGO_BIN_EXE_bench");
const BENCH_RAW: &str = env!("CARGO_BIN_EXE_bench_raw");

/// One flood of the shared daemon at a time: two at once would measure each other.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A program that ran to its end, and what it printed.
struct Finished {
    what: String,
    pid: u32,
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

impl Finished {
    /// The program and everything it printed, for failure messages.
    fn report(&self) -> String {
        format!(
            "{} (pid {}, {})\n--- stdout ---\n{}\n--- stderr ---\n{}\n---",
            self.what,
            self.pid,
            self.status,
            self.stdout.join("\n"),
            self.stderr.join("\n")
        )
    }

    /// The first stdout line that contains `text`; panics with the output if none does.
    fn line(&self, text: &str) -> String {
        self.stdout
            .iter()
            .find(|l| l.contains(text))
            .cloned()
            .unwrap_or_else(|| panic!("no line with {text:?}: {}", self.report()))
    }

    /// Index of the only stdout line that contains `text`; panics if none or several do.
    fn index_of(&self, text: &str) -> usize {
        let found: Vec<usize> = (0..self.stdout.len())
            .filter(|&i| self.stdout[i].contains(text))
            .collect();
        match found[..] {
            [i] => i,
            _ => panic!(
                "expected exactly one line with {text:?}, found {}: {}",
                found.len(),
                self.report()
            ),
        }
    }
}

/// Runs `program ARGS` on `node` (through `ip netns exec`, which execs: the child's pid
/// is the program's pid), stdin at EOF, and waits for it to exit with status 0 within
/// `timeout`; panics with its output otherwise (after SIGKILLing it if it overran).
fn run(node: &Node, program: &str, args: &[&str], timeout: Duration) -> Finished {
    let name = program.rsplit('/').next().unwrap_or(program);
    let what = format!("`{name} {}` on node {}", args.join(" "), node.nodeid());
    let mut child = node
        .command(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let read_all = |mut stream: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            let text = String::from_utf8_lossy(&bytes);
            text.lines().map(str::to_string).collect::<Vec<String>>()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr is piped")));
    let pid = child.id();
    let deadline = Instant::now() + timeout;
    let (status, overran) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status, false),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                break (child.wait().expect("reap the killed program"), true);
            }
            Err(e) => panic!("cannot wait for {what}: {e}"),
        }
    };
    let finished = Finished {
        what,
        pid,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    assert!(
        !overran,
        "did not exit within {timeout:?}: {}",
        finished.report()
    );
    assert!(
        finished.status.success(),
        "exited with {}, expected 0: {}",
        finished.status,
        finished.report()
    );
    finished
}

/// A short verified sweep over a small and a large size on one node: exit 0, a row per
/// size with messages received, and a clean verification of its own messages. The
/// default design: a dispatching thread and a sending thread.
#[test]
fn bench_verify_sweep_prints_a_row_per_size_and_passes() {
    verified_sweep(BENCH, &[], "cli-bench");
}

/// The same with the one-thread loop (`bench --single-thread`).
#[test]
fn bench_single_thread_verify_sweep_passes() {
    verified_sweep(BENCH, &["--single-thread"], "cli-bench-1t");
}

/// The two-thread loop with the sender pacing itself by its own deliveries
/// (`--max-in-flight`), safe and raw.
#[test]
fn bench_in_flight_bound_verify_sweeps_pass() {
    verified_sweep(BENCH, &["--max-in-flight", "16"], "cli-bench-inflight");
    verified_sweep(
        BENCH_RAW,
        &["--max-in-flight", "16"],
        "cli-bench-raw-inflight",
    );
}

/// The same through the async handle (`bench --async`: a reading task and a sending
/// task with an `AsyncSender`).
#[test]
fn bench_async_verify_sweep_prints_a_row_per_size_and_passes() {
    verified_sweep(BENCH, &["--async"], "cli-bench-async");
}

/// The one-task async loop (`bench --async --single-thread`).
#[test]
fn bench_async_single_task_verify_sweep_passes() {
    verified_sweep(BENCH, &["--async", "--single-thread"], "cli-bench-async-1t");
}

/// The raw baselines, each design: two threads (default), corosync's busy-retry
/// pattern (its blocking dispatch ends through a finalize in the callback), one thread.
#[test]
fn bench_raw_verify_sweeps_pass_in_every_mode() {
    verified_sweep(BENCH_RAW, &[], "cli-bench-raw");
    verified_sweep(BENCH_RAW, &["--mode", "busy-retry"], "cli-bench-raw-busy");
    verified_sweep(BENCH_RAW, &["--mode", "single-thread"], "cli-bench-raw-1t");
}

/// `bench --latency`: a row per size with round trips measured and p50 <= p99 <=
/// p99.9, and a clean verification.
#[test]
fn bench_latency_prints_percentiles_per_size() {
    let node = cpg_testkit::shared();
    let _serial = serial();
    let args = [
        "--latency",
        "--verify",
        "--duration",
        "0.5",
        "--sizes",
        "64,100000",
        "--group",
        "cli-bench-latency",
    ];
    let bench = run(node, BENCH, &args, Duration::from_secs(120));
    let out = &bench.stdout;
    let header = bench.index_of("p99.9");
    for (k, size) in ["64", "100000"].into_iter().enumerate() {
        let row: Vec<&str> = out
            .get(header + 1 + k)
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        assert_eq!(row.len(), 6, "row {k}: {}", bench.report());
        assert_eq!(row[0], size, "row {k}'s size: {}", bench.report());
        let n: Vec<f64> = row[1..]
            .iter()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|e| panic!("{v:?}: {e}: {}", bench.report()))
            })
            .collect();
        assert!(n[0] > 0.0, "no round trips: {}", bench.report());
        assert!(
            0.0 < n[1] && n[1] <= n[2] && n[2] <= n[3] && n[3] <= n[4],
            "p50 <= p99 <= p99.9 <= max: {}",
            bench.report()
        );
    }
    let verdict = bench.line("verify: sender node 1 pid");
    assert!(verdict.ends_with(": ok"), "{}", bench.report());
}

fn verified_sweep(program: &str, extra: &[&str], group: &str) {
    let node = cpg_testkit::shared();
    let _serial = serial();
    let mut args = vec![
        "--verify",
        "--duration",
        "1",
        "--sizes",
        "64,200000",
        "--group",
        group,
    ];
    args.extend_from_slice(extra);
    let bench = run(node, program, &args, Duration::from_secs(180));
    let out = &bench.stdout;
    let pid = bench.pid;
    let header = bench.index_of("bytes/msg");
    for (k, size) in ["64", "200000"].into_iter().enumerate() {
        let row: Vec<&str> = out
            .get(header + 1 + k)
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        assert_eq!(
            row.len(),
            8,
            "row {k} after the header should have 8 columns: {}",
            bench.report()
        );
        assert_eq!(row[0], size, "row {k}'s size: {}", bench.report());
        let msgs: u64 = row[1]
            .parse()
            .unwrap_or_else(|e| panic!("messages {:?}: {e}: {}", row[1], bench.report()));
        assert!(msgs > 0, "no {size}-byte messages: {}", bench.report());
    }
    let verdict = bench.line(&format!("verify: sender node 1 pid {pid}: "));
    assert!(
        verdict.ends_with(" 0 lost, 0 duplicated, 0 reordered, 0 corrupted: ok"),
        "verification: {}",
        bench.report()
    );
}

/// `--help` of every benchmark program prints a usage text (with the program's own
/// summary, not the package's) and exits 0 without doing anything else. Run inside the
/// shared node's namespace, so that a program that ignored `--help` could not reach a
/// corosync the machine runs.
#[test]
fn every_bench_program_answers_help() {
    let node = cpg_testkit::shared();
    let programs = [
        BENCH,
        BENCH_RAW,
        env!("CARGO_BIN_EXE_bench_compare"),
        env!("CARGO_BIN_EXE_async_bench"),
    ];
    for program in programs {
        let name = program.rsplit('/').next().unwrap_or(program);
        let help = run(node, program, &["--help"], Duration::from_secs(30));
        help.line(&format!("Usage: {name}"));
        // Each program describes itself, not the package.
        assert!(
            !help
                .stdout
                .iter()
                .any(|l| l.contains(env!("CARGO_PKG_DESCRIPTION"))),
            "{name} --help shows the package description: {}",
            help.report()
        );
        assert!(
            help.stderr.is_empty(),
            "{name} --help wrote to stderr: {}",
            help.report()
        );
    }
}
