//! Chat and monitor: join a group, send every line of stdin to it, and print every
//! message, membership change and cluster change as it happens.
//!
//! ```text
//! cargo run -p cpg-examples --bin chat -- my-group                # type lines; Ctrl-C ends
//! printf 'one\ntwo\n' | cargo run -p cpg-examples --bin chat -- my-group
//! cargo run -p cpg-examples --bin chat -- --listen --c-style pacemakerd   # watch a C daemon's group
//! ```
//!
//! With stdin from a pipe or file it exits at end of input, once its own messages have
//! been delivered back to it (so everything it sent has reached every member). Ctrl-C
//! (or SIGTERM) leaves the group and disconnects cleanly. Errors are printed as text
//! and end the program with status 1.
//!
//! The pattern to copy: one thread, `poll` on the CPG descriptor (the handle is
//! `AsRawFd`), stdin and a signal pipe; `dispatch(DispatchMode::All)` when the
//! descriptor is readable; sends with `send_with_retry` for back-pressure.
//!
//! Nodes are shown with their names from corosync's node list (`node 2 (node2) pid
//! 5539`), read through cmap (`cpg::cmap::NodeNames`) and refreshed before each
//! dispatch; without a name (or without access to cmap), the id alone.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use cpg::cmap::{NodeLabel, NodeNames};
use cpg::retry::Backoff;
use cpg::{DispatchMode, GroupName, Handle, ListedMember, Member};

/// Join a CPG group, send each stdin line to it, print everything that happens.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Name of the group to join.
    group: String,
    /// Count a trailing NUL in the group name, the way C daemons (Pacemaker, dlm,
    /// corosync's testcpg) name their groups: "name" becomes the 5 bytes "name\0".
    #[arg(long)]
    c_style: bool,
    /// Ignore stdin: only print events, until Ctrl-C.
    #[arg(long)]
    listen: bool,
    /// At end of input, how many seconds to wait for our own messages to come back.
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e}");
            ExitCode::from(1)
        }
    }
}

/// The node list's names by node id, shared with the callbacks (which run inside
/// dispatch); empty when cmap cannot be read.
type Names = Arc<Mutex<BTreeMap<u32, String>>>;

/// `2 (node2)`, or `2` for a node without a name.
fn node(names: &Names, nodeid: u32) -> String {
    let names = names.lock().unwrap_or_else(|e| e.into_inner());
    NodeLabel {
        nodeid,
        name: names.get(&nodeid).map(String::as_str),
    }
    .to_string()
}

fn list(names: &Names, addresses: &[ListedMember], with_reason: bool) -> String {
    let items: Vec<String> = addresses
        .iter()
        .map(|a| {
            let who = format!("node {} pid {}", node(names, a.nodeid()), a.pid());
            if with_reason {
                format!("{who} ({})", a.reason())
            } else {
                who
            }
        })
        .collect();
    items.join(", ")
}

/// What `poll` reported.
struct Ready {
    cpg: bool,
    stdin: bool,
    signal: bool,
}

/// Waits up to `timeout` for the CPG descriptor, stdin (if `Some`) or the signal pipe.
fn wait(
    cpg: RawFd,
    stdin: Option<RawFd>,
    signal: RawFd,
    timeout: Duration,
) -> Result<Ready, String> {
    let pfd = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // A negative fd is ignored by poll: that is how stdin drops out after EOF.
    let mut fds = [pfd(cpg), pfd(signal), pfd(stdin.unwrap_or(-1))];
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a valid array of 3 pollfds for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(Ready {
                cpg: false,
                stdin: false,
                signal: false,
            });
        }
        return Err(format!("poll: {err}"));
    }
    let hit = |p: &libc::pollfd| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
    Ok(Ready {
        cpg: hit(&fds[0]),
        signal: hit(&fds[1]),
        stdin: stdin.is_some() && hit(&fds[2]),
    })
}

fn run(args: &Args) -> Result<(), String> {
    let group = if args.c_style {
        GroupName::c_style(&args.group)
    } else {
        GroupName::new(&args.group)
    }
    .map_err(|e| format!("group name: {e}"))?;

    // SIGINT/SIGTERM write a byte into this pipe, which wakes up poll.
    let (signal_rx, signal_tx) =
        UnixStream::pair().map_err(|e| format!("cannot make the signal pipe: {e}"))?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let tx = signal_tx
            .try_clone()
            .map_err(|e| format!("cannot make the signal pipe: {e}"))?;
        signal_hook::low_level::pipe::register(sig, tx)
            .map_err(|e| format!("cannot install a signal handler: {e}"))?;
    }

    let mut node_names = NodeNames::new().ok();
    let names: Names = Arc::new(Mutex::new(
        node_names
            .as_ref()
            .map(|n| n.names().clone())
            .unwrap_or_default(),
    ));
    let (n_deliver, n_confchg, n_totem) = (names.clone(), names.clone(), names.clone());

    // Set once connected; the deliver callback counts our own messages.
    let me = Arc::new(OnceLock::<Member>::new());
    let own_delivered = Arc::new(AtomicU64::new(0));
    let (me_cb, own_cb) = (Arc::clone(&me), Arc::clone(&own_delivered));

    let handle = Handle::builder()
        .on_deliver(move |_cpg, msg| {
            println!(
                "message from node {} pid {} ({} bytes): {}",
                node(&n_deliver, msg.nodeid),
                msg.pid,
                msg.data.len(),
                msg.data.escape_ascii()
            );
            if me_cb.get() == Some(&msg.sender()) {
                own_cb.fetch_add(1, Ordering::Relaxed);
            }
        })
        .on_confchg(move |_cpg, change| {
            let mut line = format!(
                "group {}: {} member{} [{}]",
                change.group,
                change.members.len(),
                if change.members.len() == 1 { "" } else { "s" },
                list(&n_confchg, change.members, false)
            );
            if !change.joined.is_empty() {
                line += &format!("; joined: {}", list(&n_confchg, change.joined, true));
            }
            if !change.left.is_empty() {
                line += &format!("; left: {}", list(&n_confchg, change.left, true));
            }
            println!("{line}");
        })
        .on_totem_confchg(move |_cpg, change| {
            let nodes: Vec<String> = change.members.iter().map(|&n| node(&n_totem, n)).collect();
            println!(
                "cluster: ring {}, {} node{} [{}]",
                change.ring_id,
                change.members.len(),
                if change.members.len() == 1 { "" } else { "s" },
                nodes.join(", ")
            );
        })
        .initial_totem_conf(true)
        .build()
        .map_err(|e| format!("cannot connect to corosync: {e}"))?;

    // Who the daemon lists this process as (node id, and the pid libcpg reports).
    let local = handle
        .local_member()
        .map_err(|e| format!("cannot ask corosync for the node id: {e}"))?;
    let _ = me.set(local);
    handle
        .join(&group)
        .map_err(|e| format!("cannot join group {group}: {e}"))?;
    println!(
        "joined group {group} as node {} pid {}",
        node(&names, local.nodeid),
        local.pid
    );

    let refresh = move || {
        // A changed node list (corosync-cfgtool -R) is read again before it is needed.
        if let Some(n) = node_names.as_mut() {
            if n.refresh().unwrap_or(false) {
                *names.lock().unwrap_or_else(|e| e.into_inner()) = n.names().clone();
            }
        }
    };
    let result = chat_loop(args, &handle, &signal_rx, &own_delivered, refresh);
    // Leave explicitly (the others see "leave"), then disconnect (drop finalizes).
    // After a lost daemon there is nothing to leave.
    let lost = matches!(&result, Err(LoopError::Cpg(e)) if e.is_daemon_lost());
    if !lost {
        match handle.leave(&group) {
            Ok(()) => println!("left group {group}"),
            Err(e) => eprintln!("chat: leaving {group}: {e}"),
        }
    }
    match result {
        Ok(()) => handle
            .close()
            .map_err(|e| format!("disconnecting from corosync: {e}")),
        Err(LoopError::Cpg(e)) if e.is_daemon_lost() => Err(format!(
            "lost the connection to corosync (the daemon stopped or was killed): {e}"
        )),
        Err(LoopError::Cpg(e)) => Err(e.to_string()),
        Err(LoopError::Other(e)) => Err(e),
    }
}

enum LoopError {
    Cpg(cpg::Error),
    Other(String),
}

impl From<String> for LoopError {
    fn from(e: String) -> Self {
        LoopError::Other(e)
    }
}

impl From<cpg::Error> for LoopError {
    fn from(e: cpg::Error) -> Self {
        LoopError::Cpg(e)
    }
}

fn chat_loop(
    args: &Args,
    handle: &Handle,
    signal_rx: &UnixStream,
    own_delivered: &AtomicU64,
    mut refresh_names: impl FnMut(),
) -> Result<(), LoopError> {
    let mut stdin = if args.listen {
        None
    } else {
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("stdin: {e}"))?;
        Some(File::from(fd))
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent: u64 = 0;
    let mut eof_at: Option<Instant> = None;
    let drain_timeout = Duration::from_secs_f64(args.drain_timeout.max(0.0));
    let backoff = Backoff::default();

    loop {
        if let Some(at) = eof_at {
            if own_delivered.load(Ordering::Relaxed) >= sent {
                return Ok(());
            }
            if at.elapsed() > drain_timeout {
                return Err(format!(
                    "end of input, but only {} of our {sent} messages came back within {:?}",
                    own_delivered.load(Ordering::Relaxed),
                    drain_timeout
                )
                .into());
            }
        }
        let ready = wait(
            handle.as_raw_fd(),
            stdin.as_ref().map(|f| f.as_raw_fd()),
            signal_rx.as_raw_fd(),
            Duration::from_millis(200),
        )?;
        if ready.signal {
            println!("interrupted: leaving");
            return Ok(());
        }
        if ready.cpg {
            refresh_names();
            handle.dispatch(DispatchMode::All)?;
        }
        if ready.stdin {
            let Some(file) = stdin.as_mut() else {
                continue;
            };
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading stdin: {e}").into()),
            };
            if n == 0 {
                // End of input: send a last unterminated line, then wait for our own
                // messages to come back.
                if !pending.is_empty() {
                    handle.send_with_retry(&pending, &backoff)?;
                    sent += 1;
                    pending.clear();
                }
                stdin = None;
                eof_at = Some(Instant::now());
                continue;
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line = &pending[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                // Empty lines are not sent.
                if !line.is_empty() {
                    handle.send_with_retry(line, &backoff)?;
                    sent += 1;
                }
                pending.drain(..=end);
            }
        }
    }
}
