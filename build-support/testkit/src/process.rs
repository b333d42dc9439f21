//! Small process helpers: run a command and report its stderr, signal and wait with a
//! bound, detach into a new session.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::HarnessError;

/// Directories searched for the tools (`ip`, `corosync`, `corosync-cmapctl`, `bash`) in
/// addition to `$PATH`: they live in `sbin`, which a non-login root shell may lack.
const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// `$PATH` plus [`TOOL_DIRS`].
fn tool_path() -> &'static std::ffi::OsStr {
    static PATH: std::sync::OnceLock<std::ffi::OsString> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        for dir in TOOL_DIRS {
            if !dirs.iter().any(|d| d.as_os_str() == dir) {
                dirs.push(dir.into());
            }
        }
        std::env::join_paths(dirs).unwrap_or_else(|_| TOOL_DIRS.join(":").into())
    })
}

/// A command for one of the system tools, found through `$PATH` plus the `sbin`
/// directories (and passing that search path on, for `ip netns exec PROGRAM`).
pub(crate) fn tool(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("PATH", tool_path());
    cmd
}

/// Whether `program` is found in the tool search path.
pub(crate) fn tool_exists(program: &str) -> bool {
    std::env::split_paths(tool_path()).any(|dir| dir.join(program).is_file())
}

/// Runs `cmd` to completion; `Err` (with the command line and its stderr) unless it
/// exits with status 0. Returns stdout.
pub(crate) fn run(cmd: &mut Command) -> Result<String, HarnessError> {
    let out = cmd
        .output()
        .map_err(|e| HarnessError::new(format!("cannot run {cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HarnessError::new(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs `cmd` with stdout and stderr captured, like [`Command::output`], but gives up
/// after `timeout`: then the child is killed, reaped, and the error says so. For the
/// corosync tools, which can wait without end on a daemon that accepted their
/// connection and does not answer (one starting or stopping under heavy load).
pub(crate) fn output_within(
    cmd: &mut Command,
    timeout: Duration,
) -> Result<std::process::Output, String> {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    // Read both pipes on threads so that a child writing more than a pipe holds cannot
    // block while this thread waits for its exit.
    let stdout = read_on_thread(child.stdout.take());
    let stderr = read_on_thread(child.stderr.take());
    if !wait_exit(&mut child, timeout) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "{cmd:?} did not return within {timeout:?} (killed)"
        ));
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for {cmd:?}: {e}"))?;
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Reads `pipe` to its end on a thread of its own; the thread returns what it read.
fn read_on_thread<R: std::io::Read + Send + 'static>(
    pipe: Option<R>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Sends `sig` to `child` unless it has exited already; `false` if it had (then nothing
/// is sent).
///
/// The exit check comes first because the pid of a child that exited and was reaped
/// (by an earlier `try_wait`, for example a daemon that stopped on its own and was
/// noticed by [`crate::Node::daemon_pid`]) may belong to another process by now.
pub(crate) fn signal(child: &mut Child, sig: libc::c_int) -> bool {
    // Reaps the child if it has exited; once reaped, std keeps the status and answers
    // from it without asking the kernel again.
    if !matches!(child.try_wait(), Ok(None)) {
        return false;
    }
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return false;
    };
    // SAFETY: kill has no memory-safety preconditions. The pid belongs to our child,
    // which `try_wait` just found running and therefore not reaped (reaping needs
    // `&mut Child`, which we hold), so it cannot have been reused by another process.
    unsafe {
        libc::kill(pid, sig);
    }
    true
}

/// Polls `child` until it exits (reaping it) or `timeout` passes; `true` if it exited.
pub(crate) fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) => {}
            // Already reaped elsewhere (cannot happen here) or ECHILD: treat as gone.
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM (and SIGCONT, for a paused process), wait up to `grace`, then SIGKILL and
/// reap. Works on several children at once so their shutdowns overlap. Cleans up after
/// those that had to be killed ([`remove_daemon_leftovers`]). A child that has exited
/// already (a daemon that stopped on its own) is only reaped.
pub(crate) fn terminate_all(children: &mut [&mut Child], grace: Duration) {
    for child in children.iter_mut() {
        signal(child, libc::SIGTERM);
        // A paused (SIGSTOPped) process acts on the SIGTERM only once continued.
        signal(child, libc::SIGCONT);
    }
    let deadline = Instant::now() + grace;
    for child in children.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if !wait_exit(child, left) {
            signal(child, libc::SIGKILL);
            let _ = child.wait();
            remove_daemon_leftovers(child.id());
        }
    }
}

/// Makes the spawned process a session leader of its own, so a Ctrl-C (SIGINT to the
/// terminal's foreground process group) does not reach it.
pub(crate) fn detach(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls setsid,
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Removes what a corosync with pid `pid` leaves behind when it is killed: in
/// `/dev/shm` its 8 MiB blackbox (`qb-corosync-PID-blackbox-*`) and its IPC connection
/// directories (`qb-PID-CLIENTPID-...`); and its lock file `/run/corosync.pid` if that
/// names `pid` and no process `pid` exists (corosync 3.1 always writes the lock file
/// there; in the namespaces mode that `/run` is the node's own directory, in the
/// container mode it is the container's). Call only after reaping it. A client still
/// mapping the files keeps its mapping.
pub(crate) fn remove_daemon_leftovers(pid: u32) {
    let lock = std::path::Path::new(COROSYNC_LOCK_FILE);
    let stale = !std::path::Path::new(&format!("/proc/{pid}")).exists();
    if stale && std::fs::read_to_string(lock).is_ok_and(|text| text.trim() == pid.to_string()) {
        let _ = std::fs::remove_file(lock);
    }
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    let blackbox = format!("qb-corosync-{pid}-blackbox-");
    let connection = format!("qb-{pid}-");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&blackbox) {
            let _ = std::fs::remove_file(entry.path());
        } else if name.starts_with(&connection) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The lock file corosync 3.1 writes (its path is compiled in: `LOCALSTATEDIR/run`).
pub(crate) const COROSYNC_LOCK_FILE: &str = "/var/run/corosync.pid";
