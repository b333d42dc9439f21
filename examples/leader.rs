//! A service that acts only while it leads its group, and hands over when the
//! leader's node dies: run it on every node, and exactly one of them (the member with
//! the lowest node id and pid in the current view) "ticks".
//!
//! ```text
//! cargo run -p cpg-examples --bin leader -- my-service        # on each node; Ctrl-C leaves
//! ```
//!
//! The leader sends `tick N` every `--interval-ms`, one at a time (the next once its
//! previous tick came back). Every member keeps the highest tick it delivered and
//! prints each new one: ticks are delivered in the same order everywhere, so when the
//! leader goes (its node dies, its process crashes or leaves), the next leader
//! continues from the number every survivor has, without a gap or a repeat.
//!
//! Members that were apart (a partition, a restarted daemon that formed a ring of its
//! own for a moment) may have ticked apart. So at every view change every member sends
//! its highest tick as `state N`, and every member keeps the highest number it
//! delivers: all of them see the same messages in the same order after the merge, and
//! end with the same number. Queued ticks are dropped, not sent late, when the daemon
//! is lost (`OnDisconnect::Drop`). Prints, one per line:
//!
//! ```text
//! VIEW 1.3 members=3 leader=node 1 (node1) pid 4242 me=node 2 (node2) pid 4243
//! ROLE follower
//! TICK 17 by node 1 (node1) pid 4242
//! ```
//!
//! Node names come from corosync's node list (`cpg::cmap::NodeNames`), read again at
//! each view; a node without one (or without access to cmap) shows its id alone.
//!
//! During a partition each side elects its own leader: the layer computes a leader per
//! view, not a quorum (use corosync's votequorum for that).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cpg::cmap::NodeNames;
use cpg::group::{Event, Group, OnDisconnect};
use cpg::{GroupName, Member};

/// Join a group and tick while leading it.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Name of the group.
    group: String,
    /// Milliseconds between two ticks of the leader.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
}

/// Logs what the layers do to stderr (cpg's `tracing` feature), filtered with
/// `RUST_LOG` (`RUST_LOG=cpg=debug` shows views, back-pressure and state transfers);
/// warnings and errors only without it. Standard output stays the program's own.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: not in a journal or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leader: {e}");
            ExitCode::from(1)
        }
    }
}

/// `node 2 (node2) pid 4243`, the name where the node list has one.
fn who(names: &Option<NodeNames>, m: Member) -> String {
    match names {
        Some(names) => format!("node {} pid {}", names.label(m.nodeid), m.pid),
        None => m.to_string(),
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let group = Group::builder(GroupName::new(&args.group)?)
        .on_disconnect(OnDisconnect::Drop)
        .start()?;
    let mut names = NodeNames::new().ok();
    let interval = Duration::from_millis(args.interval_ms);
    let mut role: Option<bool> = None;
    // The agreed state: the last tick delivered (the same on every member).
    let mut last_tick = 0u64;
    // Our tick on its way: no second one before it is delivered.
    let mut in_flight = false;
    let mut next_tick = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match group.next_event(wait) {
            Some(Event::View(view)) => {
                if let Some(n) = names.as_mut() {
                    let _ = n.refresh();
                }
                let show = |m: Option<Member>| m.map_or("none".to_string(), |m| who(&names, m));
                println!(
                    "VIEW {} members={} leader={} me={}",
                    view.id(),
                    view.len(),
                    show(view.leader()),
                    show(view.me())
                );
                // Merge what members that were apart may have ticked.
                group.send(format!("state {last_tick}"))?;
                if role != Some(view.is_leader()) {
                    role = Some(view.is_leader());
                    println!(
                        "ROLE {}",
                        if view.is_leader() {
                            "leader"
                        } else {
                            "follower"
                        }
                    );
                }
            }
            Some(Event::Message(m)) => {
                let text = String::from_utf8_lossy(&m.data);
                let (kind, n) = text.split_once(' ').unwrap_or((&text, ""));
                let Ok(n) = n.parse::<u64>() else { continue };
                if kind == "tick" && m.own {
                    in_flight = false;
                }
                if n > last_tick {
                    last_tick = n;
                    if kind == "tick" {
                        println!("TICK {n} by {}", who(&names, m.from));
                    }
                }
            }
            Some(Event::NotSent { .. }) => in_flight = false,
            Some(Event::Disconnected { error }) => {
                println!("DISCONNECTED {error}");
                role = None;
            }
            Some(Event::Reconnected { incarnation, .. }) => println!("RECONNECTED {incarnation}"),
            Some(Event::Left) | Some(Event::Stopped(_)) => break,
            _ => {}
        }
        if group.is_leader() && !in_flight && Instant::now() >= next_tick {
            group.send(format!("tick {}", last_tick + 1))?;
            in_flight = true;
            next_tick = Instant::now() + interval;
        }
    }
    if group.end().is_none() {
        group.leave(Duration::from_secs(10))?;
    }
    Ok(())
}
