//! Print the cluster's quorum and follow its changes (what `corosync-quorumtool -s`
//! and `-m` show about quorate, ring, members and votes), as text or as JSON lines.
//!
//! ```text
//! cargo run -p cpg-examples --bin quorum               # follow until interrupted
//! cargo run -p cpg-examples --bin quorum -- --once     # the current state, then exit
//! cargo run -p cpg-examples --bin quorum -- --json     # one JSON object per line
//! ```
//!
//! Without `quorum { provider: corosync_votequorum }` in corosync.conf every partition
//! calls itself quorate: the first line says whether a provider decides. With one, the
//! votes come from votequorum (`cpg::votequorum`): each member's after each node list,
//! and the expected and total votes, the quorum and the flags after each decision (the
//! flags with the names `corosync-quorumtool -s` gives them: `Quorate WaitForAll`).

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use cpg::quorum::{NodeListNotification, Quorum, QuorumNotification, Track};
use cpg::votequorum::{NodeInfo, VoteQuorum};
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

/// What the callbacks leave for the main loop: the members of a new ring, and whether
/// a quorum decision came.
#[derive(Default)]
struct Pending {
    members: Option<Vec<u32>>,
    decided: bool,
}

fn run(args: &Args) -> Result<(), cpg::Error> {
    let json = args.json;
    let pending = Arc::new(Mutex::new(Pending::default()));
    let (ring, decision) = (Arc::clone(&pending), Arc::clone(&pending));
    let quorum = Quorum::builder()
        .on_nodelist(move |n| {
            print_nodelist(json, &n);
            ring.lock().unwrap().members = Some(n.members.to_vec());
        })
        .on_quorum(move |n| {
            print_quorum(json, &n);
            decision.lock().unwrap().decided = true;
        })
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
    // votequorum runs only as the provider (other providers have no votes to show).
    let votes = match VoteQuorum::builder().build() {
        Ok(vq) => Some(vq),
        Err(cpg::Error::NoQuorumProvider) => None,
        Err(e) => return Err(e),
    };
    // The current state (a node list notification, then a quorum notification), and
    // with CHANGES every change after it.
    quorum.track_start(if args.once {
        Track::CURRENT
    } else {
        Track::CHANGES
    })?;
    loop {
        quorum.dispatch(DispatchMode::One)?;
        let Pending { members, decided } = std::mem::take(&mut *pending.lock().unwrap());
        if let Some(vq) = &votes {
            if let Some(members) = members {
                let votes: Result<Vec<NodeInfo>, _> =
                    members.iter().map(|id| vq.node_info(*id)).collect();
                print_member_votes(json, &votes?);
            }
            if decided {
                print_votes(json, &vq.local_info()?);
            }
        }
        if decided && args.once {
            return Ok(());
        }
    }
}

fn print_member_votes(json: bool, members: &[NodeInfo]) {
    if json {
        let votes: serde_json::Map<_, _> = members
            .iter()
            .map(|m| (m.node_id.to_string(), json!(m.votes)))
            .collect();
        println!("{}", json!({"event": "member_votes", "votes": votes}));
    } else {
        let votes: Vec<String> = members
            .iter()
            .map(|m| format!("node {}: {}", m.node_id, m.votes))
            .collect();
        println!("votes: {}", votes.join(", "));
    }
}

/// The votes and flags; the flags named as `corosync-quorumtool -s` names them on its
/// `Flags:` line (`Quorate WaitForAll`).
fn print_votes(json: bool, info: &NodeInfo) {
    let flags: Vec<&str> = info.flags.quorumtool_names().collect();
    if json {
        println!(
            "{}",
            json!({"event": "votes", "expected": info.expected_votes,
                   "highest_expected": info.highest_expected, "total": info.total_votes,
                   "quorum": info.quorum, "flags": flags})
        );
    } else {
        println!(
            "expected votes: {}, highest expected: {}, total votes: {}, quorum: {}, flags: {}",
            info.expected_votes,
            info.highest_expected,
            info.total_votes,
            info.quorum,
            flags.join(" ")
        );
    }
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
