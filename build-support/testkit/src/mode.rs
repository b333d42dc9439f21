//! How the harness runs its daemons: in network namespaces of their own (the usual
//! mode, any number of nodes), or, where the process cannot create namespaces (a
//! default Docker container), as one daemon in the process's own network namespace.
//!
//! Chosen once per process from [`MODE_ENV`] and, in the default `auto`, by trying to
//! create the namespaces a cluster needs (see [`Mode`]).

use std::fmt;
use std::sync::OnceLock;

use crate::HarnessError;

/// Environment variable that chooses the mode: `auto` (the default, also when unset or
/// empty), `namespaces` or `container`.
pub const MODE_ENV: &str = "CPG_TESTKIT_MODE";

/// Marker at the start of every refusal that the container mode gives to something
/// that needs network namespaces ([`crate::Cluster`]). `build-support/run`'s container
/// stage looks for it to tell "needs a cluster" from any other failure.
pub const NEEDS_NAMESPACES: &str = "cpg-testkit: needs network namespaces";

/// `CAP_NET_ADMIN` (`linux/capability.h`): interfaces, addresses, nftables.
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN`: `unshare`/`setns` of network and mount namespaces, `mount`.
const CAP_SYS_ADMIN: u32 = 21;

/// How the harness runs corosync in this process.
///
/// * [`Mode::Namespaces`]: every daemon in a network namespace of its own (and a
///   private mount namespace for its `/run` and `/var/lib/corosync`), nodes of a
///   [`crate::Cluster`] joined by a bridge. Needs root with `CAP_SYS_ADMIN` and
///   `CAP_NET_ADMIN`, and permission to mount.
/// * [`Mode::Container`]: one daemon, the [`crate::shared()`] one, in the process's own
///   network namespace on `127.0.0.1`, with its configuration, state (`system {
///   state_dir }`), log and pid files in its own temporary directory. Needs root only
///   (uid 0, as in a default Docker container). A [`crate::Cluster`] is refused with a
///   message that starts with [`NEEDS_NAMESPACES`] and says what the container lacks.
///
/// Chosen by [`MODE_ENV`]: `namespaces` and `container` force a mode; `auto` (default)
/// picks `namespaces` if this process has `CAP_SYS_ADMIN` and `CAP_NET_ADMIN` and a
/// trial `unshare(CLONE_NEWNET | CLONE_NEWNS)` plus a mount in a child process works,
/// and `container` otherwise. Forcing `container` outside a container puts the daemon
/// in the machine's own network namespace (port 5405 on its loopback) and its lock
/// file in the machine's `/run`: it is meant for containers, and refuses to start
/// beside a corosync the machine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Daemons in network namespaces of their own; any number of nodes.
    Namespaces,
    /// One daemon in the process's own network namespace; single-node tests only.
    Container,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Namespaces => "namespaces",
            Mode::Container => "container",
        })
    }
}

/// The mode of this process (decided on the first call, from [`MODE_ENV`] and a trial;
/// see [`Mode`]).
///
/// Tests rarely need it: what needs several nodes fails loudly in the container mode
/// by itself. Do not use it to skip tests.
///
/// # Panics
///
/// If [`MODE_ENV`] holds something other than `auto`, `namespaces` or `container`.
pub fn mode() -> Mode {
    match current() {
        Ok(info) => info.mode,
        Err(e) => panic!("{e}"),
    }
}

/// The decision and, for the container mode, why namespaces are out.
#[derive(Debug, Clone)]
pub(crate) struct ModeInfo {
    pub(crate) mode: Mode,
    /// Why this process cannot (or may not) create namespaces; empty in the namespaces
    /// mode.
    pub(crate) lacks: String,
    /// Whether [`MODE_ENV`] forced the mode (then no trial was made).
    pub(crate) forced: bool,
}

/// The decision for this process, made once.
pub(crate) fn current() -> Result<&'static ModeInfo, HarnessError> {
    static MODE: OnceLock<Result<ModeInfo, HarnessError>> = OnceLock::new();
    MODE.get_or_init(|| {
        let setting = std::env::var(MODE_ENV).unwrap_or_default();
        let setting = parse_setting(&setting)?;
        let info = decide(setting, namespaces_possible);
        if info.mode == Mode::Container {
            eprintln!(
                "cpg-testkit: container mode ({}): one corosync on 127.0.0.1 in this \
                 process's network namespace; multi-node tests need network namespaces",
                info.lacks
            );
        }
        Ok(info)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// What [`MODE_ENV`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setting {
    Auto,
    Force(Mode),
}

pub(crate) fn parse_setting(value: &str) -> Result<Setting, HarnessError> {
    match value.trim() {
        "" | "auto" => Ok(Setting::Auto),
        "namespaces" => Ok(Setting::Force(Mode::Namespaces)),
        "container" => Ok(Setting::Force(Mode::Container)),
        other => Err(HarnessError::new(format!(
            "cpg-testkit: {MODE_ENV}={other:?} is not a mode: use auto (the default), \
             namespaces or container"
        ))),
    }
}

/// The mode for `setting`; `probe` says whether namespaces can be created (`Err` with
/// what is missing).
pub(crate) fn decide(setting: Setting, probe: impl FnOnce() -> Result<(), String>) -> ModeInfo {
    match setting {
        Setting::Force(Mode::Container) => ModeInfo {
            mode: Mode::Container,
            lacks: format!("{MODE_ENV}=container"),
            forced: true,
        },
        Setting::Force(Mode::Namespaces) => ModeInfo {
            mode: Mode::Namespaces,
            lacks: String::new(),
            forced: true,
        },
        Setting::Auto => match probe() {
            Ok(()) => ModeInfo {
                mode: Mode::Namespaces,
                lacks: String::new(),
                forced: false,
            },
            Err(lacks) => ModeInfo {
                mode: Mode::Container,
                lacks,
                forced: false,
            },
        },
    }
}

/// In the namespaces mode: whether namespaces can be created (the trial runs once, and
/// only if the mode was forced: `auto` chose the mode by it already).
pub(crate) fn check_namespaces(info: &ModeInfo) -> Result<(), HarnessError> {
    static FORCED: OnceLock<Result<(), String>> = OnceLock::new();
    if !info.forced {
        return Ok(());
    }
    FORCED
        .get_or_init(namespaces_possible)
        .clone()
        .map_err(|lacks| {
            HarnessError::new(format!(
                "cpg-testkit: {MODE_ENV}=namespaces, but this process cannot create network \
             namespaces ({lacks}). To fix it, {REMEDY}; or unset {MODE_ENV} to run \
             single-node tests in the container mode"
            ))
        })
}

/// What to give a container so that the namespaces mode works, for messages.
pub(crate) const REMEDY: &str = "give the container CAP_SYS_ADMIN and CAP_NET_ADMIN and let \
     it mount: `docker run --cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt \
     apparmor=unconfined` (the AppArmor option where the host uses AppArmor, as GitHub's \
     and GitLab's Ubuntu runners do), or `--privileged`; GitHub Actions: `container: { \
     options: --privileged }`; GitLab: a Docker runner with `privileged = true`";

/// The refusal of a `what` in the container mode.
pub(crate) fn refusal(what: &str, lacks: &str) -> HarnessError {
    HarnessError::new(format!(
        "{NEEDS_NAMESPACES}: {what} needs network namespaces, and this process runs in \
         the container mode ({lacks}). There the test kit runs one corosync, on 127.0.0.1 \
         in the process's own network namespace: enough for tests that use \
         cpg_testkit::shared() only. To run multi-node tests in a container, {REMEDY}."
    ))
}

/// Whether this process can create what the namespaces mode needs: `Err` says what is
/// missing, in words for a message.
pub(crate) fn namespaces_possible() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    let caps = effective_caps().map_err(|e| format!("cannot read the capabilities: {e}"))?;
    let missing = missing_caps(caps);
    if !missing.is_empty() {
        return Err(format!("no {}", missing.join(" and no ")));
    }
    trial_unshare().map_err(|e| {
        format!(
            "CAP_SYS_ADMIN and CAP_NET_ADMIN are there, but creating a network and mount \
             namespace and mounting in it failed ({e}): a security profile (AppArmor, \
             SELinux, seccomp) forbids it"
        )
    })
}

/// The capabilities the namespaces mode needs that `caps` (a `CapEff` mask) lacks.
pub(crate) fn missing_caps(caps: u64) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if caps & (1 << CAP_SYS_ADMIN) == 0 {
        missing.push("CAP_SYS_ADMIN");
    }
    if caps & (1 << CAP_NET_ADMIN) == 0 {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

/// This process's effective capabilities (`CapEff` in `/proc/self/status`).
fn effective_caps() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    parse_cap_eff(&status).ok_or_else(|| "no CapEff line in /proc/self/status".into())
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
pub(crate) fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Runs `true` in a child that first unshares a network and a mount namespace and
/// makes its mounts private: the same system calls `ip netns add` and the daemon
/// launcher make, so a seccomp or AppArmor profile that forbids them is caught here.
fn trial_unshare() -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = crate::process::tool("true");
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and makes only the
    // system calls unshare and mount (async-signal-safe), with a static C string and
    // null pointers; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            let root = c"/";
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`true` in the trial namespaces: {status}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_a_typo_is_an_error_naming_the_choices() {
        assert_eq!(parse_setting("").unwrap(), Setting::Auto);
        assert_eq!(parse_setting("auto").unwrap(), Setting::Auto);
        assert_eq!(
            parse_setting(" container ").unwrap(),
            Setting::Force(Mode::Container)
        );
        assert_eq!(
            parse_setting("namespaces").unwrap(),
            Setting::Force(Mode::Namespaces)
        );
        let err = parse_setting("containers").unwrap_err();
        assert!(
            err.message().contains("\"containers\"")
                && err
                    .message()
                    .contains("auto (the default), namespaces or container"),
            "{err}"
        );
    }

    #[test]
    fn auto_follows_the_trial_and_a_forced_mode_does_not_ask() {
        let probe_ok = || Ok(());
        let probe_no = || Err(String::from("no CAP_SYS_ADMIN"));
        let never = || -> Result<(), String> { panic!("the trial ran for a forced mode") };
        assert_eq!(decide(Setting::Auto, probe_ok).mode, Mode::Namespaces);
        let info = decide(Setting::Auto, probe_no);
        assert_eq!(
            (info.mode, info.lacks.as_str()),
            (Mode::Container, "no CAP_SYS_ADMIN")
        );
        assert_eq!(
            decide(Setting::Force(Mode::Namespaces), never).mode,
            Mode::Namespaces
        );
        let forced = decide(Setting::Force(Mode::Container), never);
        assert_eq!(forced.mode, Mode::Container);
        assert!(forced.lacks.contains("CPG_TESTKIT_MODE=container"));
    }

    #[test]
    fn docker_default_capabilities_lack_sys_admin_and_net_admin() {
        // CapEff of a process in a default Docker container (and under the setpriv
        // bounding set of `build-support/run container`).
        let status = "Name:\tbash\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n\
                      CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n";
        let caps = parse_cap_eff(status).unwrap();
        assert_eq!(caps, 0xa804_25fb);
        assert_eq!(missing_caps(caps), ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]);
        // --cap-add SYS_ADMIN --cap-add NET_ADMIN
        assert!(missing_caps(caps | 1 << 21 | 1 << 12).is_empty());
        assert_eq!(missing_caps(caps | 1 << 21), ["CAP_NET_ADMIN"]);
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn the_refusal_starts_with_the_marker_and_says_what_to_add() {
        let msg = refusal("a 3-node Cluster", "no CAP_SYS_ADMIN")
            .message()
            .to_string();
        assert!(msg.starts_with(NEEDS_NAMESPACES), "{msg}");
        for want in [
            "a 3-node Cluster",
            "no CAP_SYS_ADMIN",
            "--cap-add SYS_ADMIN --cap-add NET_ADMIN",
            "--privileged",
            "cpg_testkit::shared()",
        ] {
            assert!(msg.contains(want), "{want:?} missing: {msg}");
        }
    }
}
