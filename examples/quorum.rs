//! Print the cluster's quorum and follow its changes (what `corosync-quorumtool -s`
//! and `-m` show about quorate, ring and members), as text or as JSON lines.
//!
//! ```text
//! cargo run -p cpg-examples --bin quorum               # follow until interrupted
//! cargo run -p cpg-examples --bin quorum -- --once     # the current state, then exit
//! cargo run -p cpg-examples --bin quorum -- --json     # one JSON object per line
//! ```
//!
//! Without `quorum { provider: corosync_votequorum }` in corosync.conf every partition
//! calls itself quorate: the first line says whether a provider decides.

use std::process::ExitCode;

use clap::Parser;
use cpg::quorum::{NodeListNotification, Quorum, QuorumNotification, Track};
use cpg::{DispatchMode, RingId};
use serde_json::json;

/// Print the cluster's quorum and follow its changes.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Print the current state, then exit.
    #[arg(long)]
    once: bool,
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quorum: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), cpg::Error> {
    let json = args.json;
    let quorum = Quorum::builder()
        .on_nodelist(move |n| print_nodelist(json, &n))
        .on_quorum(move |n| print_quorum(json, &n))
        .build()?;
    let provider = quorum.quorum_type().has_provider();
    let quorate = quorum.is_quorate()?;
    if json {
        println!(
            "{}",
            json!({"event": "state", "provider": provider, "quorate": quorate})
        );
    } else {
        let provider = if provider {
            "yes"
        } else {
            "no (every partition is quorate)"
        };
        println!("quorum provider: {provider}\nquorate: {}", yes_no(quorate));
    }
    if args.once {
        // The current state: a node list notification, then a quorum notification.
        quorum.track_start(Track::CURRENT)?;
        quorum.dispatch(DispatchMode::One)?;
        quorum.dispatch(DispatchMode::One)?;
        return Ok(());
    }
    quorum.track_start(Track::CHANGES)?;
    // Returns only with an error, such as a lost daemon.
    quorum.dispatch(DispatchMode::Blocking).map(|_| ())
}

fn print_nodelist(json: bool, n: &NodeListNotification<'_>) {
    if json {
        println!(
            "{}",
            json!({"event": "nodelist", "ring": ring(n.ring_id), "members": n.members,
                   "joined": n.joined, "left": n.left})
        );
    } else {
        println!(
            "ring {}: members {:?}, joined {:?}, left {:?}",
            n.ring_id, n.members, n.joined, n.left
        );
    }
}

fn print_quorum(json: bool, n: &QuorumNotification<'_>) {
    if json {
        println!(
            "{}",
            json!({"event": "quorum", "quorate": n.quorate, "ring": ring(n.ring_id),
                   "members": n.members})
        );
    } else {
        println!(
            "ring {}: quorate: {}, members {:?}",
            n.ring_id,
            yes_no(n.quorate),
            n.members
        );
    }
}

fn ring(id: RingId) -> serde_json::Value {
    json!({"nodeid": id.nodeid, "seq": id.seq})
}

fn yes_no(yes: bool) -> &'static str {
    if yes {
        "yes"
    } else {
        "NO"
    }
}
