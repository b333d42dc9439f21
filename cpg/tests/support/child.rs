//! The child-process harness of the tests that need a second member of a group on the
//! same node (`zcb`, `iteration`).
//!
//! Corosync refuses a second join of the same group by the same process (it keys
//! members by pid), so the other member is a child process: this test binary run again
//! inside the node's network namespace ([`cpg_testkit::Client::spawn_test`]), filtered
//! to the same test, with a role in [`cpg_testkit::CLIENT_ENV`] (each test file decides
//! what its roles mean). Every test of such a file is therefore a [`test`] (or
//! [`test_on_shared`]): in a child it plays the role, in the test process it runs the
//! test.
//!
//! Protocol: the child reports on stdout, one line per report, `TAG KIND PAYLOAD`
//! (libtest prints its own lines there too; they are skipped). It reports
//! `READY <its pid>` once it has joined, and exits when its stdin closes, which is also
//! what happens when the parent dies; [`CHILD_LIFETIME`] bounds it in any case.
//!
//! The tests of these files take [`serial`]: they measure the whole process (its
//! mappings, its memory, its descriptors), which other tests of the same binary would
//! change.

use std::fmt::Display;
use std::io::{Read as _, Write as _};
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use cpg_testkit::{client_role, Client, HarnessError, Node};

use super::{big_stack, serial, WAIT};

/// Prefix of the child's report lines.
pub const TAG: &str = "@@cpg-test-child@@";
/// Longest a child may live, whatever happens to the parent.
pub const CHILD_LIFETIME: Duration = Duration::from_secs(180);
/// How long the parent gives a child to exit after closing its stdin, before it is
/// killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// In a child process: play `role` with `body` (on a big stack) and return `true`.
/// In the parent: return `false`.
pub fn run_role(body: impl FnOnce(&str) + Send + 'static) -> bool {
    let Some(role) = client_role() else {
        return false;
    };
    big_stack(move || body(&role));
    true
}

/// The whole of a test whose other members are its children. In a child (started by
/// [`ChildProcess::start`] for this test): plays its role with `role`. In the test
/// process: takes [`serial`] and runs `body` on a big stack.
pub fn test(role: impl FnOnce(&str) + Send + 'static, body: impl FnOnce() + Send + 'static) {
    if run_role(role) {
        return;
    }
    let _serial = serial();
    big_stack(body);
}

/// [`test`], with `body` run inside the shared daemon's namespace
/// ([`cpg_testkit::shared`]).
pub fn test_on_shared(
    role: impl FnOnce(&str) + Send + 'static,
    body: impl FnOnce(&'static Node) + Send + 'static,
) {
    if run_role(role) {
        return;
    }
    let _serial = serial();
    let node = cpg_testkit::shared();
    big_stack(move || node.enter(|| body(node)));
}

/// In a child: writes the report line `TAG kind payload` to stdout, flushed.
pub fn report(kind: &str, payload: impl Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{TAG} {kind} {payload}").expect("stdout");
    out.flush().expect("stdout");
}

/// In a child: reports `READY` with this process's pid (call it once joined).
pub fn report_ready() {
    report("READY", std::process::id());
}

/// In a child: calls `step` until stdin closes or [`CHILD_LIFETIME`] has passed;
/// `step` should return within about 50 ms.
pub fn until_stdin_closes(mut step: impl FnMut()) {
    let (closed_tx, closed) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        drop(closed_tx);
    });
    let start = Instant::now();
    while closed.try_recv() == Err(TryRecvError::Empty) && start.elapsed() < CHILD_LIFETIME {
        step();
    }
}

/// A child process as seen from the test. Dropping it closes the child's stdin, gives
/// it [`EXIT_TIMEOUT`] to leave and exit, and kills it if it has not.
pub struct ChildProcess {
    client: Client,
    pid: u32,
}

impl ChildProcess {
    /// Starts the child for `test` (the calling test's name) on `node` with `role`, and
    /// waits until it has reported `READY` with its own pid. `what` names the child in
    /// failures.
    pub fn start(node: &Node, test: &str, role: &str, what: &str) -> ChildProcess {
        let mut client = Client::spawn_test(node, test, role)
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let ready = format!("{TAG} READY ");
        let pid = match client.expect_line(&ready, WAIT) {
            Ok(line) => line[ready.len()..].parse::<u32>().expect("pid"),
            Err(e) => panic!(
                "{what} did not join within {WAIT:?}: {e}\n{}",
                node.log_tail(20)
            ),
        };
        assert_eq!(pid, client.pid(), "the child reported another pid");
        ChildProcess { client, pid }
    }

    /// The child's pid (as the daemon sees it).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The payload of the child's next `kind` report, waiting up to `timeout`.
    pub fn next_report(&mut self, kind: &str, timeout: Duration) -> Result<String, HarnessError> {
        let prefix = format!("{TAG} {kind} ");
        let line = self.client.expect_line(&prefix, timeout)?;
        Ok(line[prefix.len()..].to_string())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.client.close_stdin();
        // Dropping the client then kills the child if it still runs.
        let _ = self.client.wait(EXIT_TIMEOUT);
    }
}

/// Lowercase hex of `bytes` (fast enough for messages of a megabyte).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// The bytes of what [`hex`] made; panics on anything else.
pub fn unhex(s: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("bad hex digit {c}"),
    };
    assert!(s.len() % 2 == 0, "odd hex length {}", s.len());
    s.as_bytes()
        .chunks(2)
        .map(|p| digit(p[0]) << 4 | digit(p[1]))
        .collect()
}
