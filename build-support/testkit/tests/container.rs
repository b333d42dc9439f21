//! The container mode: what a test process gets where it cannot create network
//! namespaces, as in a default Docker container (no `CAP_SYS_ADMIN`, no
//! `CAP_NET_ADMIN`).
//!
//! The test checks the mode from the inside. Run in the namespaces mode (the usual
//! `build-support/run test`), it first makes such a container and runs itself again in
//! it: a fresh network namespace with `lo` up and a mount namespace with `/run` and
//! `/dev/shm` of its own (64 MiB, as Docker gives), under Docker's default capability
//! set (`setpriv --bounding-set`); there the test kit must pick the container mode by
//! itself. Run in a container (`build-support/run container`, or a real one), it checks
//! directly.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cpg_testkit::{wait_until, Cluster, Mode, NEEDS_NAMESPACES};

/// Which part a re-run of this test binary plays.
const ROLE_ENV: &str = "CPG_TESTKIT_CONTAINER_ROLE";
/// The exact name of the test, for the re-runs.
const TEST: &str = "the_container_mode_runs_one_daemon_of_its_own_and_refuses_clusters";
/// Docker's default capability set (`docker run` without `--cap-add`/`--privileged`).
const DOCKER_CAPS: &str = "-all,+chown,+dac_override,+fsetid,+fowner,+mknod,+net_raw,+setgid,\
                           +setuid,+setfcap,+setpcap,+net_bind_service,+sys_chroot,+kill,\
                           +audit_write";
/// Printed by the inside part when every check passed.
const PASSED: &str = "CONTAINER-CHECKS-PASSED";
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn the_container_mode_runs_one_daemon_of_its_own_and_refuses_clusters() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("inside") => {
            inside_a_container();
            println!("\n{PASSED}");
            return;
        }
        Ok("holder") => return holder(),
        Ok("refused") => return refused(),
        _ => {}
    }
    match cpg_testkit::mode() {
        Mode::Container => inside_a_container(),
        Mode::Namespaces => in_a_fake_container(),
    }
}

/// Runs this test again in a fresh network and mount namespace under Docker's default
/// capabilities, and requires it to pass there.
fn in_a_fake_container() {
    let exe = std::env::current_exe().expect("test binary");
    let script = format!(
        "ip link set lo up && mount -t tmpfs -o mode=755 tmpfs /run && \
         mount -t tmpfs -o size=64m,mode=1777 tmpfs /dev/shm && \
         exec setpriv --bounding-set={DOCKER_CAPS} --inh-caps=-all -- \"$@\""
    );
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .args(["sh", "-c", &script, "fake-container"])
        .arg(&exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, "inside")
        .env_remove(cpg_testkit::MODE_ENV)
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(PASSED),
        "inside the fake container ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
}

/// The checks, in a process that cannot create namespaces.
fn inside_a_container() {
    assert_eq!(cpg_testkit::mode(), Mode::Container, "auto-detected");
    let system_state = listing(Path::new("/var/lib/corosync"));

    // 1. A corosync the test kit did not start answers here: refused, and left alone.
    let foreign = Foreign::start();
    let child = run_role("refused");
    assert!(
        child.contains("a corosync that this test kit did not start already answers")
            && child.contains(&format!("pid {}", foreign.pid())),
        "the refusal names the daemon:\n{child}"
    );
    assert!(foreign.answers(), "the foreign corosync was disturbed");
    drop(foreign);

    // 2. A test process that died with its daemon running: the next one waits for its
    //    watchdog instead of refusing (as `cargo test` runs binaries one by one).
    let mut holder = spawn_role("holder");
    let holder_daemon = read_line(&mut holder, "HOLDER ");
    holder.0.kill().expect("SIGKILL the holder");
    holder.0.wait().expect("reap the holder");

    // 3. The one daemon of this process, on loopback in this namespace.
    let began = Instant::now();
    let node = cpg_testkit::shared();
    eprintln!(
        "shared() after a killed holder (daemon {holder_daemon}) took {:?}",
        began.elapsed()
    );
    let pid = node.daemon_pid().expect("running");
    assert_ne!(pid.to_string(), holder_daemon);
    assert_eq!(node.netns(), "");
    assert_eq!(node.addr(), std::net::Ipv4Addr::LOCALHOST);
    let name = node
        .run_tool("corosync-cmapctl", ["-g", "totem.cluster_name"])
        .unwrap();
    assert_eq!(
        name.trim(),
        format!("totem.cluster_name (str) = {}", node.cluster_name())
    );
    let cpgtool = node.run_tool("corosync-cpgtool", ["-e"]).unwrap();
    assert!(cpgtool.contains("Group Name"), "{cpgtool}");

    // 4. Its files are in its own directory; corosync 3.1's lock file is the one file
    //    outside it (in the container's /run); nothing in /var/lib/corosync; no 8 MiB
    //    blackbox in the container's /dev/shm.
    let config = std::fs::read_to_string(node.config_path()).unwrap();
    let state_dir = node.config_path().with_file_name("lib");
    assert!(
        config.contains(&format!("state_dir: {}", state_dir.display()))
            && config.contains("blackbox: off"),
        "{config}"
    );
    assert!(
        state_dir.join("ringid_1").exists(),
        "corosync keeps its ring id in the state directory"
    );
    assert!(
        std::fs::read_to_string(node.log_path())
            .unwrap()
            .contains("Completed service synchronization"),
        "the log is in the node's directory"
    );
    assert_eq!(
        std::fs::read_to_string("/var/run/corosync.pid")
            .unwrap()
            .trim(),
        pid.to_string()
    );
    assert_eq!(
        listing(Path::new("/var/lib/corosync")),
        system_state,
        "/var/lib/corosync changed"
    );
    let shm: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("qb-corosync-{pid}-blackbox")))
        .collect();
    assert!(shm.is_empty(), "{shm:?}");

    // 5. What needs several nodes, or a daemon of its own, is refused: loudly, with
    //    what the container lacks.
    for nodes in [1, 3] {
        let err = Cluster::builder().nodes(nodes).start().unwrap_err();
        let msg = err.message();
        assert!(msg.starts_with(NEEDS_NAMESPACES), "{msg}");
        let what = format!("a {nodes}-node Cluster");
        for want in [
            what.as_str(),
            "--cap-add SYS_ADMIN --cap-add NET_ADMIN",
            "--privileged",
        ] {
            assert!(msg.contains(want), "{want:?} missing: {msg}");
        }
        // What this process lacks (or that the mode was forced).
        assert!(
            msg.contains("(no CAP_SYS_ADMIN and no CAP_NET_ADMIN)")
                || msg.contains("(CPG_TESTKIT_MODE=container)"),
            "{msg}"
        );
    }
    let panic = std::panic::catch_unwind(|| Cluster::start(2)).unwrap_err();
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains(NEEDS_NAMESPACES), "{text}");
}

/// As a child: start the shared node, report its daemon, wait to be killed.
fn holder() {
    let node = cpg_testkit::shared();
    println!("\nHOLDER {}", node.daemon_pid().expect("running"));
    // Bounded: the parent kills us long before.
    std::thread::sleep(Duration::from_secs(60));
}

/// As a child: try to start the shared node beside a foreign corosync.
fn refused() {
    let panic = std::panic::catch_unwind(cpg_testkit::shared).unwrap_err();
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    println!("\nREFUSED {}", text.replace('\n', " "));
}

/// This test binary again, in this namespace, as `role`.
fn role_command(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    cmd
}

fn spawn_role(role: &str) -> Holder {
    Holder(role_command(role).spawn().expect("re-run the test binary"))
}

/// Runs `role` to its end; its stdout.
fn run_role(role: &str) -> String {
    let out = role_command(role).output().expect("re-run the test binary");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads the child's stdout until a line starts with `prefix`; the rest of that line.
fn read_line(child: &mut Holder, prefix: &str) -> String {
    let stdout = child.0.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return rest.trim().to_string();
                }
            }
            Err(e) => panic!("no {prefix:?} line from the child: {e}"),
        }
    }
}

/// A child process, killed and reaped when dropped.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Names and modification times of a directory's entries (empty if it is missing).
fn listing(dir: &Path) -> BTreeMap<String, Option<SystemTime>> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let modified = e.metadata().and_then(|m| m.modified()).ok();
                    (e.file_name().to_string_lossy().into_owned(), modified)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A corosync that the test kit did not start, on loopback in this namespace: its
/// directory is not a harness instance's. Stopped and removed on drop.
struct Foreign {
    child: Child,
    dir: PathBuf,
}

impl Foreign {
    fn start() -> Foreign {
        let base = std::env::var_os("CPG_TESTKIT_DIR")
            .filter(|b| !b.is_empty())
            .map_or_else(|| PathBuf::from("/tmp/cpg-testkit"), PathBuf::from);
        let dir = base.join(format!("foreign-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let config = format!(
            "totem {{\n version: 2\n cluster_name: foreign\n transport: knet\n \
             crypto_cipher: none\n crypto_hash: none\n}}\n\
             nodelist {{\n node {{\n ring0_addr: 127.0.0.1\n nodeid: 1\n }}\n}}\n\
             system {{\n state_dir: {}\n allow_knet_handle_fallback: yes\n}}\n\
             logging {{\n to_stderr: yes\n to_syslog: no\n blackbox: off\n}}\n",
            dir.join("state").display()
        );
        std::fs::write(dir.join("corosync.conf"), config).unwrap();
        // The previous test binary's daemon may still be on its way out (its watchdog
        // stops it within seconds): until then corosync refuses to start ("Another
        // Corosync instance is already running"), and is started again.
        let deadline = Instant::now() + WAIT;
        loop {
            let log = std::fs::File::options()
                .create(true)
                .append(true)
                .open(dir.join("corosync.log"))
                .unwrap();
            let child = Command::new("corosync")
                .arg("-f")
                .arg("-c")
                .arg(dir.join("corosync.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start a foreign corosync");
            let mut foreign = Foreign {
                child,
                dir: dir.clone(),
            };
            let up = wait_until(WAIT, Duration::from_millis(50), || {
                foreign.answers() || !matches!(foreign.child.try_wait(), Ok(None))
            });
            if up && foreign.answers() {
                return foreign;
            }
            let log = std::fs::read_to_string(dir.join("corosync.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "the foreign corosync did not answer:\n{log}"
            );
            // Dropping it removes the directory: keep the configuration.
            foreign.dir = PathBuf::new();
            drop(foreign);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn answers(&self) -> bool {
        Command::new("corosync-cmapctl")
            .args(["-g", "totem.cluster_name"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("= foreign"))
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the child has not been
        // reaped (we hold it and only wait below), so the pid is still its own.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
