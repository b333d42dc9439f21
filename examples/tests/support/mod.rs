//! The one support module of the example programs' tests: a [`Program`] run as a user
//! runs it, on a node of a private corosync cluster from `cpg-testkit`, with every line
//! it prints kept for bounded waits and failure messages; and [`heavy()`], the lock
//! that keeps two cluster tests of one test binary from running at once.
//!
//! Every file under `tests/` is a crate of its own that declares `mod support;` and
//! uses the part it needs; the rest is dead code in that crate. Hence this one `allow`
//! for the whole module.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use cpg_testkit::Node;

/// Serializes the tests that start clusters or flood a daemon: two 3-node clusters on
/// a 2-core machine can miss tokens and give spurious membership changes.
pub fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    // A test that failed while holding it leaves nothing inconsistent behind.
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a program printed so far.
#[derive(Default)]
struct Captured {
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// Output streams not yet at EOF.
    open: usize,
}

struct Output {
    captured: Mutex<Captured>,
    changed: Condvar,
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        self.captured.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A program running in a node's network namespace, its stdout and stderr collected
/// line by line. Dropping it SIGKILLs and reaps the program if it still runs.
///
/// Declare programs after the cluster they run on, so that they are gone before the
/// cluster is torn down.
pub struct Program {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Output>,
}

impl Program {
    /// Runs `program ARGS` on `node` (through `ip netns exec`, which execs: the child's
    /// pid is the program's pid) with `input` as its whole stdin, or stdin at EOF.
    pub fn start(node: &Node, program: &str, args: &[&str], input: Option<&str>) -> Program {
        let mut program = Program::spawn(node, program, args, input.is_some());
        if let Some(text) = input {
            // Dropping the pipe at the end of this block is the EOF the program sees.
            let mut pipe = program.stdin.take().expect("stdin is piped");
            if let Err(e) = pipe.write_all(text.as_bytes()) {
                panic!("{}: cannot write its stdin: {e}", program.report());
            }
        }
        program
    }

    /// Like [`Program::start`], with stdin a pipe that stays open (and silent) until
    /// [`Program::close_stdin`] or the drop; [`Program::write_line`] writes to it.
    pub fn start_with_open_stdin(node: &Node, program: &str, args: &[&str]) -> Program {
        Program::spawn(node, program, args, true)
    }

    fn spawn(node: &Node, program: &str, args: &[&str], piped_stdin: bool) -> Program {
        let name = program.rsplit('/').next().unwrap_or(program);
        let what = format!("`{name} {}` on node {}", args.join(" "), node.nodeid());
        let mut cmd = node.command(program);
        cmd.args(args)
            .stdin(if piped_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let output = Arc::new(Output {
            captured: Mutex::new(Captured {
                open: 2,
                ..Captured::default()
            }),
            changed: Condvar::new(),
        });
        collect(
            child.stdout.take().expect("stdout is piped"),
            Arc::clone(&output),
            |c| &mut c.stdout,
        );
        collect(
            child.stderr.take().expect("stderr is piped"),
            Arc::clone(&output),
            |c| &mut c.stderr,
        );
        let stdin = child.stdin.take();
        Program {
            what,
            child,
            stdin,
            output,
        }
    }

    /// The program's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `line` and a newline to the program's stdin
    /// ([`Program::start_with_open_stdin`]).
    pub fn write_line(&mut self, line: &str) {
        let Some(stdin) = self.stdin.as_mut() else {
            panic!("{}: its stdin is not open", self.what);
        };
        if let Err(e) = writeln!(stdin, "{line}").and_then(|()| stdin.flush()) {
            panic!("{}: cannot write {line:?}: {e}", self.report());
        }
    }

    /// Closes the program's stdin (the program sees EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The lines printed to stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.output.lock().stdout.clone()
    }

    /// How many lines the program has printed to stdout so far.
    pub fn stdout_len(&self) -> usize {
        self.output.lock().stdout.len()
    }

    /// The lines printed to stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.output.lock().stderr.clone()
    }

    /// The program and everything it printed, for failure messages.
    pub fn report(&self) -> String {
        let c = self.output.lock();
        format!(
            "{} (pid {})\n--- stdout ---\n{}\n--- stderr ---\n{}\n---",
            self.what,
            self.child.id(),
            c.stdout.join("\n"),
            c.stderr.join("\n")
        )
    }

    /// Waits until a stdout line contains `text` and returns it (the first such line);
    /// panics with the output if the program ends or `timeout` passes first.
    pub fn expect_line(&self, text: &str, timeout: Duration) -> String {
        self.wait_line(0, timeout, &format!("a line with {text:?}"), |l| {
            l.contains(text)
        })
        .1
    }

    /// Waits until a stdout line at index `from` or later satisfies `matches` and
    /// returns its index and the line (the first such line); panics with the output,
    /// saying that it waited for `what`, if the program ends or `timeout` passes first.
    pub fn wait_line(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        matches: impl Fn(&str) -> bool,
    ) -> (usize, String) {
        let deadline = Instant::now() + timeout;
        let mut c = self.output.lock();
        loop {
            if let Some(i) = c.stdout.iter().skip(from).position(|l| matches(l)) {
                return (from + i, c.stdout[from + i].clone());
            }
            let now = Instant::now();
            if c.open == 0 || now >= deadline {
                let why = if c.open == 0 {
                    "ended its output"
                } else {
                    "timed out"
                };
                drop(c);
                panic!(
                    "{why} without printing {what} after line {from} (waited up to {timeout:?}): {}",
                    self.report()
                );
            }
            c = self
                .output
                .changed
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits up to `timeout` for the program to exit, then for its output to end;
    /// panics (and the drop kills it) if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => panic!("did not exit within {timeout:?}: {}", self.report()),
                Err(e) => panic!("cannot wait for {}: {e}", self.what),
            }
        };
        // The pipes close with the process (nothing else holds them).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = self.output.lock();
        while c.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                drop(c);
                panic!("output still open 10 s after exit: {}", self.report());
            }
            c = self
                .output
                .changed
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        status
    }

    /// Waits for the program to exit and asserts that it exited with status 0.
    pub fn expect_success(&mut self, timeout: Duration) {
        let status = self.wait_exit(timeout);
        assert!(
            status.success(),
            "exited with {status}, expected 0: {}",
            self.report()
        );
    }

    /// Sends the program `signal` (`libc::SIGTERM`, what Ctrl-C's SIGINT does for
    /// these programs too; `SIGSTOP`, `SIGCONT`); false if it had exited already.
    pub fn signal(&mut self, signal: libc::c_int) -> bool {
        // Only a child that has not been reaped: its pid cannot have been reused.
        let Ok(None) = self.child.try_wait() else {
            return false;
        };
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped
        // child's.
        unsafe { libc::kill(pid, signal) == 0 }
    }

    /// Sends `SIGTERM`.
    pub fn terminate(&mut self) {
        let _ = self.signal(libc::SIGTERM);
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `stream` line by line into the field `pick` selects, until EOF.
fn collect(
    stream: impl Read + Send + 'static,
    output: Arc<Output>,
    pick: fn(&mut Captured) -> &mut Vec<String>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.strip_suffix('\n').unwrap_or(&line).to_string();
                    pick(&mut output.lock()).push(line);
                    output.changed.notify_all();
                }
            }
        }
        output.lock().open -= 1;
        output.changed.notify_all();
    });
}
