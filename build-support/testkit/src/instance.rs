//! One harness instance: a unique name, a temporary directory, the namespaces made for
//! it, and the watchdog that cleans up if the test process dies.
//!
//! Layout of the directory (`/tmp/cpg-testkit/NAME/`, base overridable with
//! `$CPG_TESTKIT_DIR`):
//!
//! ```text
//! owner            pid of the test process
//! netns            one namespace name per line, written *before* it is created
//! n1/corosync.conf n1/corosync.log n1/daemon.pid n1/run/ n1/lib/    per node
//! ```
//!
//! The directory is removed last, so an existing directory means "not cleaned yet".

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{net, process, HarnessError, Mode};

/// Environment variable that overrides the base of the temporary directories.
pub(crate) const ENV_BASE_DIR: &str = "CPG_TESTKIT_DIR";
const DEFAULT_BASE_DIR: &str = "/tmp/cpg-testkit";

/// `cleanup` at the root of this package (`build-support/testkit/cleanup`), the one
/// cleanup of harness state (`build-support/run` and `build-support/demo` run the same
/// file). Embedded when the testkit is compiled, so the package builds from its own
/// files and the watchdog needs no file of the source tree at run time. The watchdog runs it as
/// `bash -c CLEANUP cpg-testkit-watchdog --watch OWNER_PID DIR`: its stdin is a pipe
/// whose only writer is the test process; EOF (the owner closed it or died) or a line
/// means "clean up now", a `kill -0` poll of the owner backs that up.
const CLEANUP: &str = include_str!("../cleanup");

/// A unique name, a directory and a watchdog. Dropping it deletes the namespaces and
/// the directory (the daemons must have been stopped by their owners first) and lets
/// the watchdog go.
pub(crate) struct Instance {
    name: String,
    dir: PathBuf,
    netns: Vec<String>,
    watchdog: Option<(Child, ChildStdin)>,
}

impl Instance {
    /// Allocates a name (`cpgt-PID-COUNTER`), creates the directory and starts the
    /// watchdog.
    pub(crate) fn create() -> Result<Self, HarnessError> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = format!(
            "cpgt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let base = std::env::var_os(ENV_BASE_DIR)
            .filter(|b| !b.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_BASE_DIR), PathBuf::from);
        let dir = base.join(&name);
        let mode = crate::mode::current()?;
        if !is_root() {
            return Err(HarnessError::new(
                "cpg-testkit needs root: it starts corosync daemons (and, outside a \
                 container, network namespaces); run the tests as root, e.g. with \
                 build-support/run test, or in a container as its root user",
            ));
        }
        if mode.mode == Mode::Namespaces {
            crate::mode::check_namespaces(mode)?;
        }
        let tools: &[&str] = match mode.mode {
            Mode::Namespaces => &["ip", "unshare", "corosync", "corosync-cmapctl", "bash"],
            Mode::Container => &["corosync", "corosync-cmapctl", "bash"],
        };
        for tool in tools {
            if !process::tool_exists(tool) {
                return Err(HarnessError::new(format!(
                    "cpg-testkit: `{tool}` not found (in $PATH, /usr/sbin, /sbin). Install the \
                     test dependencies with `build-support/run deps` (Debian: corosync \
                     iproute2 util-linux; RHEL: corosync iproute util-linux)"
                )));
            }
        }
        // A leftover from a dead process with the same pid would be stale: replace it.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::new(format!("cannot create {}: {e}", dir.display())))?;
        fs::write(dir.join("owner"), format!("{}\n", std::process::id()))
            .map_err(|e| HarnessError::new(format!("cannot write in {}: {e}", dir.display())))?;
        let mut instance = Self {
            name,
            dir,
            netns: Vec::new(),
            watchdog: None,
        };
        instance.watchdog = Some(spawn_watchdog(&instance.dir)?);
        Ok(instance)
    }

    /// The unique name; namespace names start with it.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The temporary directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the namespace `NAME-suffix` (registered for cleanup first) and returns
    /// its name.
    pub(crate) fn add_netns(&mut self, suffix: &str) -> Result<String, HarnessError> {
        let ns = format!("{}-{suffix}", self.name);
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("netns"))
            .and_then(|mut f| writeln!(f, "{ns}").map(|()| f))
            .map_err(|e| HarnessError::new(format!("cannot record namespace {ns}: {e}")))?;
        let _ = file.flush();
        self.netns.push(ns.clone());
        net::add_netns(&ns)?;
        Ok(ns)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        for ns in self.netns.iter().rev() {
            if let Err(e) = net::delete_netns(ns) {
                eprintln!("cpg-testkit: {e}");
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("cpg-testkit: cannot remove {}: {e}", self.dir.display());
            }
        }
        if let Some((mut child, stdin)) = self.watchdog.take() {
            // EOF tells the watchdog to run its (now empty) cleanup and exit.
            drop(stdin);
            if !process::wait_exit(&mut child, Duration::from_secs(3)) {
                process::signal(&mut child, libc::SIGKILL);
                let _ = child.wait();
            }
        }
    }
}

fn spawn_watchdog(dir: &Path) -> Result<(Child, ChildStdin), HarnessError> {
    let mut cmd = process::tool("bash");
    cmd.arg("-c")
        .arg(CLEANUP)
        .arg("cpg-testkit-watchdog")
        .arg("--watch")
        .arg(std::process::id().to_string())
        // Without a trailing slash: the cleanup treats a process whose command line
        // names `DIR/` as one of DIR's.
        .arg(dir)
        .stdin(Stdio::piped())
        // Not the test's stdout/stderr: a pipe reader (cargo, tee) would wait for us.
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    process::detach(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| HarnessError::new(format!("cannot start the watchdog (bash): {e}")))?;
    let stdin = child.stdin.take().expect("stdin was piped");
    Ok((child, stdin))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
