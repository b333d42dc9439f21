//! Reconnect after a daemon restart: join a group, send a confirmed message every
//! `--interval-ms`, and print what the group layer reports while corosync is stopped
//! and started again (`systemctl restart corosync`).
//!
//! ```text
//! cargo run -p cpg-examples --bin reconnect -- my-group
//! ```
//!
//! Prints, one per line:
//!
//! ```text
//! VIEW 1.1 members=1
//! CONFIRMED #0 in view 1.1 index 0
//! DISCONNECTED CS_ERR_LIBRARY ...                 (the daemon went away)
//! RECONNECTED 2 members=1                         (a new connection, joined again)
//! CONFIRMED #7 in view 2.3 index 0
//! ```
//!
//! Messages queued while disconnected are kept and sent after the reconnect (the
//! default `OnDisconnect::Keep`); a message the daemon had accepted but not yet
//! delivered back when it went away is reported `NOT-SENT ... outcome unknown`.
//! Note that a restarted daemon may form a ring of its own for a moment before it
//! merges with the other nodes: messages confirmed in such a view (see its member
//! count) reached only this node's members.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cpg::group::{Event, Group};
use cpg::GroupName;

/// Join a group and keep sending through daemon restarts.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Name of the group.
    group: String,
    /// Milliseconds between two messages.
    #[arg(long, default_value_t = 500)]
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
            eprintln!("reconnect: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let group = Group::join(GroupName::new(&args.group)?)?;
    let interval = Duration::from_millis(args.interval_ms);
    let mut next_send = Instant::now();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next_send {
            // The receipt is not kept: the outcome also comes as an event below.
            group.send_confirmed(format!("hello {seq}"))?;
            seq += 1;
            next_send = Instant::now() + interval;
        }
        let wait = next_send.saturating_duration_since(Instant::now());
        match group.next_event(wait) {
            Some(Event::View(v)) => println!("VIEW {} members={}", v.id(), v.len()),
            Some(Event::Confirmed { id, position }) => println!(
                "CONFIRMED #{} in view {} index {}",
                id.0, position.view, position.index
            ),
            Some(Event::NotSent { id, error }) => println!("NOT-SENT #{} {error}", id.0),
            Some(Event::Disconnected { error }) => println!("DISCONNECTED {error}"),
            Some(Event::Reconnected { incarnation, view }) => {
                println!("RECONNECTED {incarnation} members={}", view.len())
            }
            Some(Event::Left) | Some(Event::Stopped(_)) => break,
            _ => {}
        }
    }
    let stats = group.stats();
    if group.end().is_none() {
        group.leave(Duration::from_secs(10))?;
    }
    println!(
        "STATS sent={} confirmed={} not-sent={} reconnects={} queued={}",
        stats.sent, stats.confirmed, stats.not_sent, stats.reconnects, stats.queued
    );
    Ok(())
}
