//! The container mode's one rule: never a second daemon beside a running one.
//!
//! Two corosync daemons cannot share a network namespace: libqb names the IPC
//! services' listening sockets after the service (`cpg`, `cmap`, `quorum`, ...) in
//! the abstract namespace, which belongs to the network namespace, and corosync 3.1
//! also takes a lock on `/run/corosync.pid`. So before the container mode starts its
//! daemon it looks for those sockets in `/proc/net/unix` (which lists the sockets of
//! the reading process's network namespace) and finds out whose daemon answers:
//!
//! * a corosync this harness started for a test process that has exited: its watchdog
//!   is stopping it (`cargo test` runs the test binaries one after the other, and each
//!   one's daemon goes away about a second after it exits): wait for it, bounded;
//! * one started for another test process that still runs: wait too, bounded, then
//!   refuse (run the test binaries one at a time);
//! * any other corosync (the container's own service, a developer's): refuse at once;
//!   it is never touched.
//!
//! If a daemon still slips in between (corosync then exits at once: "Another Corosync
//! instance is already running"), the start is retried after another wait.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::HarnessError;

/// The services whose listening sockets show that a corosync answers here.
const SERVICES: [&str; 5] = ["cpg", "cmap", "quorum", "votequorum", "cfg"];
/// `__SO_ACCEPTCON` in the flags column of `/proc/net/unix`: a listening socket.
const LISTENING: u32 = 0x10000;
/// How long to wait for a daemon of this harness to go away.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often to look again.
const POLL: Duration = Duration::from_millis(100);

/// Who holds this network namespace's corosync sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holder {
    /// No corosync answers in this namespace.
    Nobody,
    /// A corosync on its way out: its memory is gone already (an empty command line),
    /// it only has to finish exiting. (A zombie holds nothing and does not count: a
    /// container whose PID 1 does not reap orphans keeps them.)
    Exiting(u32),
    /// A daemon of this harness (its command line names `config`, inside an instance
    /// directory whose `owner` file names `owner`).
    Harness {
        pid: u32,
        config: PathBuf,
        owner: Option<u32>,
    },
    /// Something else: `pid` and command line if a corosync process of this namespace
    /// was found, `None` if only its sockets were.
    Foreign(Option<(u32, String)>),
}

/// Waits until no corosync answers in this namespace, or refuses with why.
pub(crate) fn wait_for_free_namespace() -> Result<(), HarnessError> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        let holder = holder();
        let busy = match &holder {
            Holder::Nobody => return Ok(()),
            Holder::Exiting(_) => holder,
            Holder::Foreign(who) => {
                let who = match who {
                    Some((pid, cmdline)) => format!("pid {pid}: {cmdline}"),
                    None => "its process is not visible from here".into(),
                };
                return Err(HarnessError::new(format!(
                    "cpg-testkit (container mode): a corosync that this test kit did not \
                     start already answers in this network namespace ({who}). Two daemons \
                     cannot share a network namespace (libqb's abstract socket names), and \
                     the test kit never touches a daemon it did not start: stop that \
                     corosync, or run the tests in a container of their own"
                )));
            }
            Holder::Harness { owner, .. } => {
                let mine = *owner == Some(std::process::id());
                if mine {
                    return Err(HarnessError::new(format!(
                        "cpg-testkit (container mode): this process already runs its one \
                         daemon ({holder:?}); the container mode cannot start a second"
                    )));
                }
                holder
            }
        };
        if Instant::now() >= deadline {
            let (pid, whose) = match &busy {
                Holder::Harness { pid, owner, .. } => match owner.filter(|o| alive(*o)) {
                    Some(o) => (*pid, format!("test process {o}, which still runs")),
                    None => (
                        *pid,
                        "a test process that has exited (its watchdog has not stopped it)".into(),
                    ),
                },
                Holder::Exiting(pid) => (*pid, "a test process, and is exiting".into()),
                Holder::Nobody | Holder::Foreign(_) => unreachable!("not waited for"),
            };
            return Err(HarnessError::new(format!(
                "cpg-testkit (container mode): corosync pid {pid}, started by this test kit \
                 for {whose}, still answers in this network namespace after \
                 {BUSY_TIMEOUT:?}. There is room for one daemon here: run the test \
                 binaries one after the other (cargo test does; cargo nextest needs \
                 --test-threads 1), or give the container what the namespaces mode needs"
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// Who holds this network namespace's corosync now: a corosync process in this
/// namespace, or the one that `/run/corosync.pid` names (its lock), or, failing both,
/// whoever listens on the service sockets. A daemon that is shutting down withdraws its
/// sockets a second or so before it exits and releases its lock, so the process
/// counts, not only the sockets.
pub(crate) fn holder() -> Holder {
    let process = corosync_in_this_namespace().or_else(lock_holder);
    let Some((pid, cmdline)) = process else {
        let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
        return if listening_services(&table) {
            Holder::Foreign(None)
        } else {
            Holder::Nobody
        };
    };
    if cmdline.is_empty() {
        return Holder::Exiting(pid);
    }
    match harness_config(&cmdline) {
        Some(config) => {
            let owner = instance_owner(&config);
            Holder::Harness { pid, config, owner }
        }
        None => Holder::Foreign(Some((pid, cmdline.join(" ")))),
    }
}

/// The live corosync that corosync 3.1's lock file names, if any.
fn lock_holder() -> Option<(u32, Vec<String>)> {
    let pid: u32 = std::fs::read_to_string(crate::process::COROSYNC_LOCK_FILE)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_corosync(pid).then(|| Some((pid, read_cmdline(pid)?)))?
}

/// Whether `pid` is a corosync process that is not a zombie.
fn is_corosync(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the name in parentheses, the state after the last `)`.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let state = stat[close + 1..].split_whitespace().next();
    &stat[open + 1..close] == "corosync" && !matches!(state, Some("Z" | "X" | "x"))
}

fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|raw| split_cmdline(&raw))
}

/// Whether `/proc/net/unix` text lists a listening abstract socket named after one of
/// corosync's services (libqb pads the name with NULs, shown as `@`).
pub(crate) fn listening_services(table: &str) -> bool {
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path
        let (Some(flags), Some(path)) = (fields.get(3), fields.get(7)) else {
            return false;
        };
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|f| f & LISTENING != 0);
        let name = path.trim_end_matches('@');
        listening
            && name
                .strip_prefix('@')
                .is_some_and(|n| SERVICES.contains(&n))
    })
}

/// The first `corosync` process in this process's network namespace: pid and
/// command line.
fn corosync_in_this_namespace() -> Option<(u32, Vec<String>)> {
    let ours = std::fs::read_link("/proc/self/ns/net").ok()?;
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_corosync(*pid))
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == Some(ours.clone()))
        .collect();
    pids.sort_unstable();
    pids.into_iter()
        .find_map(|pid| Some((pid, read_cmdline(pid)?)))
}

/// A `/proc/PID/cmdline` as its arguments.
fn split_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The configuration file of a harness daemon's command line
/// (`corosync -f -c BASE/cpgt-PID-N/nID/corosync.conf`), or `None` for any other.
pub(crate) fn harness_config(cmdline: &[String]) -> Option<PathBuf> {
    let at = cmdline.iter().position(|a| a == "-c")?;
    let config = Path::new(cmdline.get(at + 1)?);
    let node_dir = config.parent()?;
    let instance = node_dir.parent()?.file_name()?.to_str()?;
    let is_harness = config.file_name()? == "corosync.conf"
        && node_dir.file_name()?.to_str()?.starts_with('n')
        && instance.starts_with("cpgt-");
    is_harness.then(|| config.to_path_buf())
}

/// The test process that owns the instance of a harness daemon's `config`.
fn instance_owner(config: &Path) -> Option<u32> {
    let owner = config.parent()?.parent()?.join("owner");
    std::fs::read_to_string(owner).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `lo` is up in this network namespace (`IFF_UP` in its flags).
pub(crate) fn loopback_up() -> Result<(), HarnessError> {
    let flags = std::fs::read_to_string("/sys/class/net/lo/flags").map_err(|e| {
        HarnessError::new(format!(
            "cpg-testkit (container mode): cannot read /sys/class/net/lo/flags: {e}"
        ))
    })?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
    if flags & 1 == 0 {
        return Err(HarnessError::new(
            "cpg-testkit (container mode): the loopback interface `lo` is down in this \
             network namespace, and the daemon listens on 127.0.0.1. A container has it up; \
             elsewhere run `ip link set lo up` (needs CAP_NET_ADMIN) before the tests",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Num       RefCount Protocol Flags    Type St Inode Path\n";

    #[test]
    fn a_listening_service_socket_means_a_daemon_answers() {
        let corosync = format!(
            "{HEADER}\
             00000000497506df: 00000002 00000000 00010000 0001 01 32240 @quorum@@@@@@@@@@@@@@\n\
             000000008568df10: 00000002 00000000 00010000 0001 01 32237 @cmap@@@@@@@@@@@@@@@@\n"
        );
        assert!(listening_services(&corosync));
        // A client's connected socket, another program's socket, a file socket, a
        // service-like name that is longer: not corosync listening.
        let others = format!(
            "{HEADER}\
             0000000000000000: 00000003 00000000 00000000 0001 03 40001 @cmap@@@@@@@@@@@@\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 40002 @/tmp/.X11-unix/X0\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 40003 /run/cpg\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 40004 @cpgx@@@@\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 40005\n"
        );
        assert!(!listening_services(&others));
        assert!(!listening_services(HEADER));
    }

    #[test]
    fn harness_daemons_are_told_from_others_by_their_command_line() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            harness_config(&args(
                "corosync -f -c /tmp/cpg-testkit/cpgt-42-1/n1/corosync.conf"
            )),
            Some(PathBuf::from("/tmp/cpg-testkit/cpgt-42-1/n1/corosync.conf"))
        );
        assert_eq!(harness_config(&args("corosync -f")), None);
        assert_eq!(
            harness_config(&args("corosync -f -c /etc/corosync/corosync.conf")),
            None
        );
        assert_eq!(harness_config(&args("corosync -c")), None);
        assert_eq!(
            split_cmdline(b"corosync\0-f\0-c\0/x/cpgt-1-1/n1/corosync.conf\0"),
            args("corosync -f -c /x/cpgt-1-1/n1/corosync.conf")
        );
    }
}
