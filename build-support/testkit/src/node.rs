//! One corosync daemon: in its own network namespace, or (container mode) in the test
//! process's own.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{node_name, Config};
use crate::instance::Instance;
use crate::{process, HarnessError, QuorumStatus};

/// How long a daemon may take to answer after being started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `corosync-cmapctl` query may take before it counts as unanswered.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a daemon may take to exit on SIGTERM before it gets SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of daemon log appended to error messages.
const LOG_LINES: usize = 30;
/// How often [`Node::wait_daemon_exit`] looks.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// Starts corosync with its own `/run` (pid file and lock) and `/var/lib/corosync`,
/// bound in a private mount namespace so nothing leaks to the host; `/dev/shm` stays
/// shared because libqb's client and server map the same files. `exec` all the way
/// down, so the spawned process's pid is corosync's pid. `$1` is the node directory.
const LAUNCH: &str = "mount --bind \"$1/run\" /run && \
                      mount --bind \"$1/lib\" /var/lib/corosync && \
                      exec corosync -f -c \"$1/corosync.conf\"";

/// One corosync daemon, in its own network namespace (or, in the container mode, in
/// the test process's own; see [`crate::Mode`]).
///
/// A `Node` belongs to a [`crate::Cluster`] or is the [`crate::shared()`] node; the
/// daemon is controlled through those. What the harness wrote for it can be read
/// back: [`Node::nodeid`], [`Node::name`], [`Node::addr`], [`Node::cluster_name`],
/// [`Node::config_path`].
pub struct Node {
    nodeid: u32,
    /// `None` in the container mode: the daemon runs in the process's own namespace.
    netns: Option<String>,
    addr: Ipv4Addr,
    name: String,
    cluster_name: String,
    dir: PathBuf,
    daemon: Mutex<Option<Daemon>>,
}

/// A daemon process the harness started.
struct Daemon {
    child: Child,
    /// Set when the harness first notices that the daemon has exited by itself.
    exited: Option<ExitStatus>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("nodeid", &self.nodeid)
            .field("name", &self.name)
            .field("netns", &self.netns)
            .field("addr", &self.addr)
            .field("daemon_pid", &self.daemon_pid())
            .finish()
    }
}

impl Node {
    /// Prepares the node's directory and configuration; does not start the daemon.
    /// `netns` is `None` in the container mode.
    pub(crate) fn create(
        instance: &Instance,
        nodeid: u32,
        netns: Option<String>,
        addr: Ipv4Addr,
        config: &Config,
    ) -> Result<Self, HarnessError> {
        let dir = instance.dir().join(format!("n{nodeid}"));
        let io = |e: std::io::Error| HarnessError::new(format!("{}: {e}", dir.display()));
        fs::create_dir_all(dir.join("run")).map_err(io)?;
        fs::create_dir_all(dir.join("lib")).map_err(io)?;
        fs::write(dir.join("corosync.conf"), config.render()).map_err(io)?;
        Ok(Self {
            nodeid,
            netns,
            addr,
            name: node_name(nodeid),
            cluster_name: config.cluster_name.clone(),
            dir,
            daemon: Mutex::new(None),
        })
    }

    /// The configured corosync node id.
    pub fn nodeid(&self) -> u32 {
        self.nodeid
    }

    /// The node's `name` in the node list (`node1`, `node2`, ...; corosync's
    /// `nodelist.node.N.name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster's name (`totem.cluster_name`), the same on every node of a cluster.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The `corosync.conf` the daemon runs with (in the harness instance's directory;
    /// removed with it).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("corosync.conf")
    }

    /// The daemon's log: its stderr, all runs of it, with the harness's own
    /// `=== cpg-testkit: ... ===` lines between them.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("corosync.log")
    }

    /// Name of the node's network namespace (a file under `/run/netns`); empty in the
    /// container mode, where the daemon runs in the test process's own namespace.
    pub fn netns(&self) -> &str {
        self.netns.as_deref().unwrap_or("")
    }

    /// The node's ring0 address (`nodelist.node.N.ring0_addr`; inside its namespace).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Runs `f` on the current thread with the thread switched into this node's network
    /// namespace, then switches back (also when `f` panics).
    ///
    /// A libcpg connection created inside `f` talks to this node's daemon, and stays
    /// connected to it after `enter` returns: the namespace only matters when the
    /// connection is made. Calls may be nested (the previous namespace is restored).
    /// In the container mode the daemon runs in the process's own namespace, and `f`
    /// simply runs.
    ///
    /// # Panics
    ///
    /// If the namespace cannot be entered. If switching back fails the process aborts,
    /// since a test thread left in a foreign namespace would silently break others.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let Some(netns) = &self.netns else {
            return f();
        };
        let target = File::open(format!("/run/netns/{netns}"))
            .unwrap_or_else(|e| panic!("cpg-testkit: cannot open namespace {netns}: {e}"));
        let original = File::open("/proc/thread-self/ns/net")
            .unwrap_or_else(|e| panic!("cpg-testkit: cannot open this thread's namespace: {e}"));
        if let Err(e) = setns(&target) {
            panic!("cpg-testkit: cannot enter namespace {netns}: {e}");
        }
        let _restore = RestoreNetns(original);
        f()
    }

    /// A command that runs `program` inside this node's network namespace (through
    /// `ip netns exec`; in the container mode directly), with `sbin` in `$PATH`. Add
    /// arguments and run it as usual.
    ///
    /// Do not set its uid or gid (`CommandExt::uid`): `ip netns exec` needs root. Use
    /// [`Node::command_as`] for that.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match &self.netns {
            Some(netns) => {
                let mut cmd = process::tool("ip");
                cmd.args(["netns", "exec", netns]).arg(program);
                cmd
            }
            None => process::tool(program),
        }
    }

    /// A command that runs `program` inside this node's network namespace as user
    /// `uid` and group `gid` (no supplementary groups), for tests of who may connect.
    /// The process enters the namespace first and then drops root, so its pid is the
    /// program's own. corosync refuses a user that its `uidgid` entries do not allow
    /// ([`crate::ClusterBuilder::allow_uid`]).
    ///
    /// # Panics
    ///
    /// If the namespace cannot be opened (the node's cluster is gone).
    pub fn command_as(&self, program: impl AsRef<OsStr>, uid: u32, gid: u32) -> Command {
        let mut cmd = process::tool(program);
        let netns = self.netns.as_ref().map(|netns| {
            File::open(format!("/run/netns/{netns}"))
                .unwrap_or_else(|e| panic!("cpg-testkit: cannot open namespace {netns}: {e}"))
        });
        // SAFETY: the closure runs in the forked child before exec and makes only the
        // system calls setns, setgroups, setgid and setuid (async-signal-safe), on a
        // descriptor the closure owns (opened above, close-on-exec) and plain
        // integers; it allocates nothing. Order: the namespace while still root, then
        // groups, gid and uid (after which nothing else could be changed).
        unsafe {
            cmd.pre_exec(move || {
                if let Some(ns) = &netns {
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::setgroups(0, std::ptr::null()) == -1
                    || libc::setgid(gid) == -1
                    || libc::setuid(uid) == -1
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs a tool (`corosync-quorumtool`, `corosync-cmapctl`, `corosync-cfgtool`, ...)
    /// against this node's daemon ([`Node::command`], stdin empty) and returns its
    /// stdout if it exits with status 0; otherwise an error with the command, its
    /// status, stderr and stdout.
    ///
    /// ```no_run
    /// let node = cpg_testkit::shared();
    /// let name = node
    ///     .run_tool("corosync-cmapctl", ["-g", "totem.cluster_name"])
    ///     .unwrap();
    /// assert_eq!(name.trim(), format!("totem.cluster_name (str) = {}", node.cluster_name()));
    /// ```
    pub fn run_tool<I, S>(&self, program: &str, args: I) -> Result<String, HarnessError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        let out = cmd
            .output()
            .map_err(|e| HarnessError::new(format!("cannot run {cmd:?}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        Err(HarnessError::new(format!(
            "node {}: {program} failed ({}): {}{}",
            self.nodeid,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!("\nstdout:\n{stdout}")
            }
        )))
    }

    /// What `corosync-quorumtool -s` reports on this node (a quorum provider must be
    /// configured: [`crate::ClusterBuilder::quorum`]). The tool's exit status is not
    /// an error: it is non-zero while the node is not quorate, which is what a test
    /// may want to see.
    pub fn quorum_status(&self) -> Result<QuorumStatus, HarnessError> {
        let mut cmd = self.command("corosync-quorumtool");
        cmd.arg("-s").stdin(Stdio::null());
        let out = cmd
            .output()
            .map_err(|e| HarnessError::new(format!("cannot run {cmd:?}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        QuorumStatus::parse(&stdout).map_err(|e| {
            HarnessError::new(format!(
                "node {}: corosync-quorumtool -s ({}): {e}\nstderr: {}",
                self.nodeid,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
    }

    /// Pid of the running daemon; `None` if it is stopped or has exited (also by itself,
    /// as after `corosync-cfgtool -H`).
    pub fn daemon_pid(&self) -> Option<u32> {
        let mut daemon = self.lock();
        let d = daemon.as_mut()?;
        match self.poll_exit(d) {
            None => Some(d.child.id()),
            Some(_) => None,
        }
    }

    /// Waits up to `timeout` for the daemon to exit by itself (a cfg shutdown,
    /// `corosync-cfgtool -H`, or a crash) and returns how it ended; `None` if it still
    /// runs, or if no daemon the harness started is there (never started, or stopped
    /// or killed through the harness). The harness notices such an exit by itself too:
    /// the daemon counts as stopped ([`Node::daemon_pid`] is `None`), what a crash
    /// leaves in `/dev/shm` is removed, and `restart_daemon` starts it again.
    pub fn wait_daemon_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut daemon = self.lock();
                let d = daemon.as_mut()?;
                if let Some(status) = self.poll_exit(d) {
                    return Some(status);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(EXIT_POLL.min(deadline - Instant::now()));
        }
    }

    /// The daemon's exit status if it has exited by itself; the first time it is seen,
    /// notes it in the log and cleans up what a crash leaves behind.
    fn poll_exit(&self, d: &mut Daemon) -> Option<ExitStatus> {
        if d.exited.is_none() {
            if let Ok(Some(status)) = d.child.try_wait() {
                d.exited = Some(status);
                self.note(&format!("corosync (pid {}) exited: {status}", d.child.id()));
                if !status.success() {
                    // Reaped just now: the pid cannot have been reused yet.
                    process::remove_daemon_leftovers(d.child.id());
                }
                let _ = fs::remove_file(self.pid_path());
            }
        }
        d.exited
    }

    /// Appends `=== cpg-testkit: WHAT ===` to the daemon's log.
    fn note(&self, what: &str) {
        if let Ok(mut log) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
        {
            let _ = writeln!(log, "=== cpg-testkit: {what} ===");
        }
    }

    /// The last `lines` lines of the daemon's log (its stderr, all runs of it), for
    /// failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        match fs::read(self.log_path()) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(no log at {}: {e})", self.log_path().display()),
        }
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join("daemon.pid")
    }

    fn lock(&self) -> MutexGuard<'_, Option<Daemon>> {
        // A panic while holding the lock leaves the Option consistent: ignore poison.
        self.daemon.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Formats `what` with the node and its log tail.
    pub(crate) fn error(&self, what: &str) -> HarnessError {
        let place = match &self.netns {
            Some(netns) => format!("netns {netns}"),
            None => "this network namespace, container mode".into(),
        };
        HarnessError::new(format!(
            "node {} ({place}): {what}\n--- last {LOG_LINES} lines of {} ---\n{}\n---",
            self.nodeid,
            self.log_path().display(),
            self.log_tail(LOG_LINES)
        ))
    }

    /// Starts the daemon (if it is not running) and waits until it answers.
    pub(crate) fn start_daemon(&self) -> Result<(), HarnessError> {
        self.spawn_daemon()?;
        self.wait_ready(READY_TIMEOUT)
    }

    /// Starts the daemon without waiting for it.
    pub(crate) fn spawn_daemon(&self) -> Result<(), HarnessError> {
        let mut daemon = self.lock();
        if let Some(d) = daemon.as_mut() {
            if self.poll_exit(d).is_none() {
                return Ok(());
            }
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| self.error(&format!("cannot open the log: {e}")))?;
        let _ = writeln!(log, "=== cpg-testkit: starting corosync ===");
        let mut cmd = match &self.netns {
            Some(netns) => {
                let mut cmd = process::tool("ip");
                cmd.args(["netns", "exec", netns])
                    .args(["unshare", "--mount", "--propagation", "private", "--"])
                    .args(["sh", "-c", LAUNCH, "cpg-testkit-launch"])
                    .arg(&self.dir);
                cmd
            }
            // No mount namespace to be had: corosync itself, its state in the node
            // directory through `system { state_dir }`.
            None => {
                let mut cmd = process::tool("corosync");
                cmd.arg("-f").arg("-c").arg(self.config_path());
                cmd
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| self.error(&format!("cannot run {cmd:?}: {e}")))?;
        // The watchdog kills what this file names if the test process dies.
        let _ = fs::write(self.pid_path(), format!("{}\n", child.id()));
        *daemon = Some(Daemon {
            child,
            exited: None,
        });
        Ok(())
    }

    /// Waits until the daemon answers `corosync-cmapctl`; fails early if it exits.
    pub(crate) fn wait_ready(&self, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut daemon = self.lock();
                let Some(d) = daemon.as_mut() else {
                    return Err(self.error("the daemon is not running"));
                };
                if let Some(status) = self.poll_exit(d) {
                    return Err(self.error(&format!("corosync exited during startup ({status})")));
                }
            }
            let last_err = match self.query(&["-g", "totem.cluster_name"]) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(self.error(&format!(
                    "corosync did not answer within {timeout:?} (last: {last_err})"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `corosync-cmapctl ARGS` in the namespace; stdout, or stderr as the error.
    fn query(&self, args: &[&str]) -> Result<String, String> {
        let out =
            process::output_within(self.command("corosync-cmapctl").args(args), TOOL_TIMEOUT)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// The node ids this daemon reports as joined members (sorted).
    pub(crate) fn joined_members(&self) -> Result<Vec<u32>, String> {
        let out = self.query(&["runtime.members"])?;
        Ok(parse_joined(&out))
    }

    /// Whether this daemon's knet link 0 to node `peer` is up (`stats.knet.nodeN.link0
    /// .connected` in the stats map); `false` if the daemon has no such entry.
    pub(crate) fn link_connected(&self, peer: u32) -> Result<bool, String> {
        let key = format!("stats.knet.node{peer}.link0.connected");
        match self.query(&["-m", "stats", &key]) {
            Ok(out) => Ok(parse_u8_value(&out) == Some(1)),
            // No entry for that node: knet has never heard of it, so no link either.
            Err(e) if e.contains("does not exist") || e.contains("CS_ERR_NOT_EXIST") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the daemon is stopped by a signal (`SIGSTOP`): it would not answer
    /// queries until continued.
    pub(crate) fn daemon_paused(&self) -> bool {
        let Some(pid) = self.daemon_pid() else {
            return false;
        };
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // `pid (comm) S ...`: the state follows the last `)`.
                let rest = &stat[stat.rfind(')')? + 1..];
                rest.split_whitespace().next().map(|s| s == "T" || s == "t")
            })
            .unwrap_or(false)
    }

    /// SIGKILL, reap.
    pub(crate) fn kill_daemon(&self) {
        if let Some(mut child) = self.take_daemon() {
            if process::signal(&mut child, libc::SIGKILL) {
                let _ = child.wait();
                process::remove_daemon_leftovers(child.id());
            }
            self.note("corosync killed (SIGKILL)");
        }
    }

    /// Sends `sig` to the running daemon (our unreaped child, whose command line names
    /// the instance directory); `false` if no daemon runs.
    pub(crate) fn signal_daemon(&self, sig: libc::c_int) -> bool {
        let mut daemon = self.lock();
        let Some(d) = daemon.as_mut() else {
            return false;
        };
        if self.poll_exit(d).is_some() {
            return false;
        }
        process::signal(&mut d.child, sig)
    }

    /// Runs an `nft` script (`nft -f -`) inside this node's network namespace. The
    /// rules live in the namespace, so deleting the namespace removes them too.
    pub(crate) fn nft(&self, script: &str) -> Result<(), HarnessError> {
        if !process::tool_exists("nft") {
            return Err(HarnessError::new(
                "cpg-testkit: `nft` not found; install nftables (`build-support/run deps`; \
                 Debian and RHEL: nftables)",
            ));
        }
        let mut cmd = self.command("nft");
        cmd.args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| HarnessError::new(format!("cannot run {cmd:?}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| HarnessError::new(format!("nft on node {}: {e}", self.nodeid)))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(HarnessError::new(format!(
                "nft on node {} failed ({}): {}\nscript:\n{script}",
                self.nodeid,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// SIGTERM, wait up to [`STOP_GRACE`], SIGKILL, reap.
    pub(crate) fn stop_daemon(&self) {
        if let Some(mut child) = self.take_daemon() {
            process::terminate_all(&mut [&mut child], STOP_GRACE);
            self.note("corosync stopped");
        }
    }

    /// Gives the daemon's process to the caller (for stopping several at once), if it
    /// still runs; a daemon that has exited by itself is only accounted for.
    pub(crate) fn take_daemon(&self) -> Option<Child> {
        let mut daemon = self.lock();
        let mut d = daemon.take()?;
        let running = self.poll_exit(&mut d).is_none();
        drop(daemon);
        let _ = fs::remove_file(self.pid_path());
        running.then_some(d.child)
    }
}

/// The value of a one-key `corosync-cmapctl` answer such as
/// `stats.knet.node2.link0.connected (u8) = 1`.
fn parse_u8_value(out: &str) -> Option<u8> {
    out.lines()
        .find_map(|l| l.rsplit_once(" = "))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Parses `corosync-cmapctl runtime.members` output: the ids whose
/// `runtime.members.ID.status` is `joined`.
fn parse_joined(out: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = out
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("runtime.members.")?;
            let (id, rest) = rest.split_once('.')?;
            let value = rest.strip_prefix("status ")?.split_once(" = ")?.1;
            (value.trim() == "joined").then(|| id.parse().ok())?
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn setns(ns: &File) -> std::io::Result<()> {
    // SAFETY: setns only reads the fd, which `ns` keeps open for the call; switching
    // the calling thread's network namespace does not affect memory safety.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Switches the thread back to the namespace it was in (on return and on unwind).
struct RestoreNetns(File);

impl Drop for RestoreNetns {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.0) {
            eprintln!("cpg-testkit: cannot switch the thread back to its network namespace: {e}");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_joined, parse_u8_value};

    #[test]
    fn one_key_values_are_parsed() {
        assert_eq!(
            parse_u8_value("stats.knet.node2.link0.connected (u8) = 1\n"),
            Some(1)
        );
        assert_eq!(
            parse_u8_value("stats.knet.node2.link0.connected (u8) = 0"),
            Some(0)
        );
        assert_eq!(parse_u8_value(""), None);
    }

    #[test]
    fn joined_members_are_parsed_and_left_ones_ignored() {
        let out = "runtime.members.1.config_version (u64) = 0\n\
                   runtime.members.1.ip (str) = r(0) ip(10.213.0.1) \n\
                   runtime.members.1.status (str) = joined\n\
                   runtime.members.3.status (str) = left\n\
                   runtime.members.2.status (str) = joined\n";
        assert_eq!(parse_joined(out), vec![1, 2]);
        assert!(parse_joined("").is_empty());
    }
}
