//! Chat on the async (tokio) API: every line typed on stdin goes to the group, and every
//! member prints every line in the same order, with who joined and left.
//!
//! ```text
//! cargo run -p cpg-examples --bin async_chat -- my-room
//! ```
//!
//! Ends at end of input (once its own lines came back, so all were sent), on Ctrl-C or
//! SIGTERM, leaving the group first.
//!
//! The pattern to copy when an `AsyncHandle` meets stdin: read stdin on a plain thread
//! of its own and hand lines over through a channel. `tokio::io::stdin()` reads on
//! tokio's blocking pool, and a read blocked there keeps the runtime from shutting down
//! until the next line arrives: after Ctrl-C the program would hang until Enter. A
//! plain thread blocked in `read` does not hold the process up once `main` returns.

use std::io::BufRead as _;
use std::process::ExitCode;

use clap::Parser;
use cpg::{AsyncHandle, Event, GroupName, ListedMember};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Chat with the other members of a group, reading lines from stdin (async API).
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Name of the group (the chat room) to join.
    #[arg(default_value = "async-chat")]
    group: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async_chat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads stdin line by line on a thread of its own; the channel closes at end of input.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break; // the chat has ended
            }
        }
    });
    rx
}

fn list(entries: &[ListedMember]) -> String {
    let names: Vec<String> = entries
        .iter()
        .map(|a| format!("{} ({})", a.member(), a.reason()))
        .collect();
    names.join(", ")
}

async fn run(args: &Args) -> Result<(), String> {
    let group = GroupName::new(&args.group).map_err(|e| format!("bad group name: {e}"))?;
    let mut cpg = AsyncHandle::new().map_err(|e| format!("cannot connect to corosync: {e}"))?;
    let me = cpg
        .local_member()
        .map_err(|e| format!("cannot ask corosync for the node id: {e}"))?;
    cpg.join(&group)
        .await
        .map_err(|e| format!("cannot join group {group}: {e}"))?;
    println!("joined group {group} as {me}");

    let mut lines = stdin_lines();
    let mut input_open = true;
    // Own lines sent and not yet delivered back: at end of input, wait for them.
    let mut in_flight = 0u64;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if !input_open && in_flight == 0 {
            break;
        }
        tokio::select! {
            event = cpg.next_event() => match event {
                Some(Ok(Event::Deliver { nodeid, pid, data, .. })) => {
                    println!(
                        "message from node {nodeid} pid {pid} ({} bytes): {}",
                        data.len(),
                        data.escape_ascii()
                    );
                    if (nodeid, pid) == (me.nodeid, me.pid) {
                        in_flight = in_flight.saturating_sub(1);
                    }
                }
                Some(Ok(Event::Confchg { members, joined, left, .. })) => {
                    let mut line = format!("group {group}: {} members", members.len());
                    if !joined.is_empty() {
                        line += &format!("; joined: {}", list(&joined));
                    }
                    if !left.is_empty() {
                        line += &format!("; left: {}", list(&left));
                    }
                    println!("{line}");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("connection lost: {e}")),
                None => return Err("the event stream ended".into()),
            },
            line = lines.recv(), if input_open => match line {
                Some(line) => {
                    // Waits out back-pressure, reading events meanwhile (they come out
                    // of `next_event` afterwards, in order).
                    cpg.send(line.as_bytes()).await.map_err(|e| format!("cannot send: {e}"))?;
                    in_flight += 1;
                }
                None => input_open = false,
            },
            _ = &mut ctrl_c => break,
            _ = terminate.recv() => break,
        }
    }
    cpg.leave(&group)
        .await
        .map_err(|e| format!("cannot leave {group}: {e}"))?;
    println!("left group {group}");
    Ok(())
}
