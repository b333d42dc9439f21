//! Client programs run as separate processes on a node, so a test can kill them
//! (SIGKILL: the daemon sees the process vanish) or let them exit cleanly.
//!
//! The usual client is the test binary itself: [`Client::spawn_test`] runs
//! `current_exe() --exact TEST --nocapture --quiet` inside the node's namespace with
//! [`CLIENT_ENV`] set, and the test function starts with
//! `if let Some(role) = cpg_testkit::client_role() { ... return; }`.
//!
//! Protocol: the test talks to the client through lines on its stdin and reads lines
//! from its stdout ([`Client::expect_line`] skips lines without the asked marker, such
//! as libtest's own output). A client must exit when its stdin reaches EOF: that is
//! what happens when the test process dies, so no client outlives its test.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::node::Node;
use crate::{process, HarnessError};

/// Environment variable that tells a re-executed test binary which client role to
/// play (see [`client_role`]).
pub const CLIENT_ENV: &str = "CPG_TESTKIT_CLIENT";

/// The role this process was started for by [`Client::spawn_test`], or `None` in the
/// test process itself.
pub fn client_role() -> Option<String> {
    std::env::var(CLIENT_ENV).ok().filter(|r| !r.is_empty())
}

/// A process running inside a node's network namespace, with piped stdin and stdout.
///
/// Dropping it SIGKILLs and reaps the process if it still runs.
pub struct Client {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Lines read so far, for error messages.
    seen: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("label", &self.label)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Client {
    /// Runs `program ARGS` in `node`'s network namespace (through `ip netns exec`,
    /// which execs, so [`Client::pid`] is the program's own pid) with `envs` added.
    /// stderr goes to the test's stderr.
    pub fn spawn<I, S>(
        node: &Node,
        program: impl AsRef<OsStr>,
        args: I,
        envs: &[(&str, &str)],
    ) -> Result<Client, HarnessError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = node.command(program.as_ref());
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let label = format!("client {:?} on node {}", program.as_ref(), node.nodeid());
        Self::start(label, cmd)
    }

    /// Runs this test binary again as a client on `node`: only the test `test` (exact
    /// name, with its module path), with [`CLIENT_ENV`] set to `role`.
    pub fn spawn_test(node: &Node, test: &str, role: &str) -> Result<Client, HarnessError> {
        let exe = std::env::current_exe()
            .map_err(|e| HarnessError::new(format!("cannot find the test binary: {e}")))?;
        let mut client = Self::spawn(
            node,
            &exe,
            // --quiet: libtest prints no "test NAME ... " (without a newline) before the
            // client's first line.
            [
                "--exact",
                test,
                "--nocapture",
                "--quiet",
                "--test-threads=1",
            ],
            &[(CLIENT_ENV, role)],
        )?;
        client.label = format!("client {role:?} ({test}) on node {}", node.nodeid());
        Ok(client)
    }

    fn start(label: String, mut cmd: Command) -> Result<Client, HarnessError> {
        let mut child = cmd
            .spawn()
            .map_err(|e| HarnessError::new(format!("cannot run {cmd:?}: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, lines) = mpsc::channel();
        // Ends at EOF, i.e. when the client exits.
        std::thread::Builder::new()
            .name("cpg-testkit-client-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| HarnessError::new(format!("cannot start a reader thread: {e}")))?;
        Ok(Client {
            label,
            child,
            stdin,
            lines,
            seen: Vec::new(),
        })
    }

    /// The client's process id (as the daemon sees it: no pid namespace is involved).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `line` and a newline to the client's stdin.
    pub fn send_line(&mut self, line: &str) -> Result<(), HarnessError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| HarnessError::new(format!("{}: stdin already closed", self.label)))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| HarnessError::new(format!("{}: cannot write {line:?}: {e}", self.label)))
    }

    /// Closes the client's stdin (a well-behaved client then exits).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `timeout` for a stdout line that contains `marker` and returns the
    /// line from the marker on (whatever else printed before it on the same line, such
    /// as libtest's progress, is cut off); other lines are skipped. Fails if the client
    /// exits or time runs out; the error lists what the client printed.
    pub fn expect_line(&mut self, marker: &str, timeout: Duration) -> Result<String, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(at) = line.find(marker) {
                        return Ok(line[at..].to_string());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.failure(&format!("no line with {marker:?} within {timeout:?}")))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait(Duration::from_secs(5));
                    return Err(self.failure(&format!(
                        "exited ({status:?}) before printing a line with {marker:?}"
                    )));
                }
            }
        }
    }

    fn failure(&self, what: &str) -> HarnessError {
        HarnessError::new(format!(
            "{}: {what}; its output so far:\n{}",
            self.label,
            self.seen.join("\n")
        ))
    }

    /// SIGKILLs the client and reaps it; returns how it ended.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        // Only signals a child that has not been reaped: its pid cannot be reused yet.
        process::signal(&mut self.child, libc::SIGKILL);
        self.child.wait().ok()
    }

    /// Waits up to `timeout` for the client to exit; its status, or `None` if it still
    /// runs.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if process::wait_exit(&mut self.child, timeout) {
            self.child.try_wait().ok().flatten()
        } else {
            None
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.kill();
    }
}
