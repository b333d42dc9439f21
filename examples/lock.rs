//! A replicated lock service over TCP on the tokio driver (`cpg::replica`): run it on
//! every node; a lock taken through one node is held for every node, and a lock held
//! by a member that is gone (its process or its node died) is freed by every member at
//! the same point of the history (`Replicated::apply_view`).
//!
//! ```text
//! cargo run -p cpg-examples --bin lock -- my-locks --listen 127.0.0.1:7070
//! ```
//!
//! Clients connect over TCP and send one command per line; each answer is one line:
//!
//! ```text
//! LOCK NAME    -> GRANTED NAME <token>  |  HELD NAME <holder> <token>  |  ERR <why>
//! UNLOCK NAME  -> RELEASED NAME  |  NOT-HOLDER NAME  |  ERR <why>
//! WHO NAME     -> HELD NAME <holder> <token>  |  FREE NAME  |  ERR <why>
//! ```
//!
//! A lock belongs to the client connection that took it (`<holder>` is
//! `node:pid/connection`); closing the connection releases its locks (where it has a
//! quorum: else when its process goes). `WHO` reads
//! after a barrier: it sees every `LOCK` and `UNLOCK` answered anywhere before it.
//! Every answer needs corosync's quorum (`quorum { provider: corosync_votequorum }` in
//! `corosync.conf`): on a side that is not quorate every command answers
//! `ERR not-quorate`, and the replica layer refuses a `LOCK` or `UNLOCK` delivered
//! where the quorum its members agreed on does not permit it, so that a write in
//! flight when a partition happened cannot succeed on the minority side; after a heal
//! the quorate side's history wins (its quorum epoch is higher). On a cluster without
//! a quorum provider every side is "quorate": there, `--majority-of N` makes every
//! answer need a majority of the N configured nodes in the view (`ERR minority`
//! otherwise), the state refuses writes applied in a view without one, and counts its
//! majority views in its merge hint. The program prints `LISTENING <address>` and the
//! layer's events.
//!
//! # Fencing
//!
//! The `<token>` of a grant is the version of the history at which it was granted:
//! it grows with every grant of the majority's history. A holder cut off on the
//! minority side of a partition cannot know at once that it lost its lock: the
//! majority frees the lock when its view without the holder's node is synchronised
//! (a token timeout and a round after the partition) and may grant it again at once.
//! The holder's own node sees its quorum lost at about the same time (the program
//! prints `NOT-QUORATE`, or `MINORITY` with `--majority-of`), not before, and learns
//! for sure only when the partition
//! heals and its state is replaced by the majority's (`RESTORED`; `WHO` then names the
//! new holder). So a holder must stop using the protected resource as soon as its
//! side loses quorum, and the resource must not trust that alone: every request
//! to it carries the holder's token, and it refuses a token lower than the highest it
//! has seen. Then a stale holder's late request is refused, whatever it believes.
//! Treat a `GRANTED` answered just before `NOT-QUORATE` as lost too: the nodes that
//! part can order the last operations before a partition differently, and the quorate
//! side's history may have that `LOCK` answered `HELD` (see the `cpg::replica` docs,
//! "Results").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::Parser;
use cpg::replica::{
    fnv, fnv_start, has_majority, AsyncReplica, Event, OpInfo, Replica, ReplicaError, Replicated,
    RestoreError, ViewChange,
};
use cpg::{GroupName, Member};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A replicated lock service over TCP.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Name of the group (the same on every node).
    group: String,
    /// Answer only while the view holds a majority of this many nodes (0: always), for
    /// a cluster without a quorum provider.
    #[arg(long, default_value_t = 0)]
    majority_of: usize,
    /// Address to listen on (port 0: any free port; see `LISTENING`).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
}

/// Who holds a lock: the member (process), its client connection, the grant's token.
type Holder = (Member, u64, u64);

/// The replicated state. `majority_of` comes from the command line: the same on every
/// node, like the group's name.
#[derive(Debug, Default)]
struct Locks {
    majority_of: usize,
    /// Views with a majority applied so far: the merge hint, so that after a heal the
    /// majority's history wins, however long the other side's.
    epoch: u64,
    /// Whether the last view applied had a majority: writes are refused without one.
    majority: bool,
    held: BTreeMap<String, Holder>,
}

/// What an operation did: `apply`'s output, the same on every member.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Granted(u64),
    Held(Holder),
    Released,
    NotHolder,
    Minority,
}

impl Replicated for Locks {
    type Output = Reply;

    /// `LOCK name conn`, `UNLOCK name conn` or `DROP conn` (all of a connection's).
    fn apply(&mut self, op: &[u8], info: &OpInfo) -> Reply {
        if !self.majority {
            return Reply::Minority;
        }
        let text = String::from_utf8_lossy(op);
        let words: Vec<&str> = text.split(' ').collect();
        let conn = |w: &str| w.parse::<u64>().unwrap_or(u64::MAX);
        match words.as_slice() {
            ["LOCK", name, c] => match self.held.get(*name) {
                Some(&(m, k, token)) if (m, k) == (info.origin, conn(c)) => Reply::Granted(token),
                Some(h) => Reply::Held(*h),
                None => {
                    let h = (info.origin, conn(c), info.version);
                    self.held.insert(name.to_string(), h);
                    Reply::Granted(info.version)
                }
            },
            ["UNLOCK", name, c] => match self.held.get(*name) {
                Some(&(m, k, _)) if (m, k) == (info.origin, conn(c)) => {
                    self.held.remove(*name);
                    Reply::Released
                }
                _ => Reply::NotHolder,
            },
            ["DROP", c] => {
                self.held
                    .retain(|_, h| (h.0, h.1) != (info.origin, conn(c)));
                Reply::Released
            }
            _ => Reply::NotHolder, // Not an operation of ours: a deterministic no-op.
        }
    }

    /// At the same point of the history on every member: in a view with a majority,
    /// every lock whose holder is not a member is free.
    fn apply_view(&mut self, view: &ViewChange<'_>) {
        self.majority = self.majority_of == 0 || view.has_majority(self.majority_of);
        if self.majority {
            self.epoch += 1;
            self.held.retain(|_, h| view.contains(h.0));
        }
    }

    fn merge_hint(&self) -> u64 {
        self.epoch
    }

    /// epoch, majority, then per lock: name length, name, node, pid, connection, token.
    fn snapshot(&self) -> Vec<u8> {
        let mut b = self.epoch.to_le_bytes().to_vec();
        b.push(u8::from(self.majority));
        for (name, (m, conn, token)) in &self.held {
            b.extend_from_slice(&(name.len() as u32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            for x in [u64::from(m.nodeid), u64::from(m.pid), *conn, *token] {
                b.extend_from_slice(&x.to_le_bytes());
            }
        }
        b
    }

    fn restore(&mut self, s: &[u8]) -> Result<(), RestoreError> {
        let u64_at = |i: usize| -> Result<u64, RestoreError> {
            Ok(u64::from_le_bytes(
                s.get(i..i + 8).ok_or("short")?.try_into()?,
            ))
        };
        let (epoch, majority) = (u64_at(0)?, *s.get(8).ok_or("short")? == 1);
        let (mut held, mut at) = (BTreeMap::new(), 9);
        while at < s.len() {
            let n = u32::from_le_bytes(s.get(at..at + 4).ok_or("short")?.try_into()?) as usize;
            let name = std::str::from_utf8(s.get(at + 4..at + 4 + n).ok_or("short")?)?;
            at += 4 + n;
            let m = Member::new(u32::try_from(u64_at(at)?)?, u32::try_from(u64_at(at + 8)?)?);
            held.insert(name.to_string(), (m, u64_at(at + 16)?, u64_at(at + 24)?));
            at += 32;
        }
        (self.epoch, self.majority, self.held) = (epoch, majority, held);
        Ok(())
    }

    fn digest(&self) -> u64 {
        fnv(fnv_start(), &self.snapshot())
    }
}

fn holder((m, conn, token): &Holder) -> String {
    format!("{}:{}/{conn} {token}", m.nodeid, m.pid)
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    init_logging();
    let state = Locks {
        majority_of: args.majority_of,
        ..Locks::default()
    };
    let replica = Arc::new(
        Replica::builder(GroupName::new(&args.group)?, state)
            .start_async()
            .await?,
    );
    let listener = TcpListener::bind(&args.listen).await?;
    println!("LISTENING {}", listener.local_addr()?);
    tokio::spawn(print_events(Arc::clone(&replica)));
    let next_conn = AtomicU64::new(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let conn = next_conn.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(Arc::clone(&replica), stream, conn, args.majority_of));
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = replica.leave().await;
    Ok(())
}

/// Answers one client's lines; releases its locks when it goes.
async fn serve(replica: Arc<AsyncReplica<Locks>>, stream: TcpStream, conn: u64, n: usize) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = answer(&replica, &line, conn, n).await;
        if write
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = replica.submit(format!("DROP {conn}"));
}

async fn answer(replica: &AsyncReplica<Locks>, line: &str, conn: u64, n: usize) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    if !replica.quorum().permits() {
        return "ERR not-quorate".into();
    }
    if n > 0 && !replica.view().is_some_and(|v| has_majority(&v, n)) {
        return "ERR minority".into();
    }
    match words.as_slice() {
        [cmd @ ("LOCK" | "UNLOCK"), name] => {
            let done = match replica.submit(format!("{cmd} {name} {conn}")) {
                Ok(ticket) => ticket.wait().await,
                Err(e) => Err(e),
            };
            match done.map(|d| d.output) {
                Ok(Reply::Granted(token)) => format!("GRANTED {name} {token}"),
                Ok(Reply::Held(h)) => format!("HELD {name} {}", holder(&h)),
                Ok(Reply::Released) => format!("RELEASED {name}"),
                Ok(Reply::NotHolder) => format!("NOT-HOLDER {name}"),
                Ok(Reply::Minority) => "ERR minority".into(),
                Err(ReplicaError::NotQuorate) => "ERR not-quorate".into(),
                Err(e) => format!("ERR {e}"),
            }
        }
        ["WHO", name] => match replica.read_ordered(|s| s.held.get(*name).copied()).await {
            Ok(Some(h)) => format!("HELD {name} {}", holder(&h)),
            Ok(None) => format!("FREE {name}"),
            Err(e) => format!("ERR {e}"),
        },
        _ => "ERR unknown command (LOCK NAME, UNLOCK NAME, WHO NAME)".into(),
    }
}

async fn print_events(replica: Arc<AsyncReplica<Locks>>) {
    while let Some(e) = replica.next_event().await {
        match e {
            Event::View(v) => println!("VIEW {v} members={}", v.len()),
            Event::ViewApplied {
                members, version, ..
            } => {
                let (locks, majority) = replica.read(|s| (s.held.len(), s.majority));
                println!(
                    "VIEW-APPLIED v{version} members={} locks={locks}",
                    members.len()
                );
                if !majority {
                    println!("MINORITY: locks held here may be granted elsewhere");
                }
            }
            Event::Quorum { state, epoch } if state.permits() => {
                println!("QUORATE {state} epoch={epoch}")
            }
            Event::Quorum { state, .. } => {
                println!("NOT-QUORATE {state}: locks held here may be granted elsewhere")
            }
            Event::Synced {
                source, summary, ..
            } => println!("SYNCED from {source} {summary}"),
            Event::Restored {
                previous, current, ..
            } => {
                println!("RESTORED {previous} -> {current}")
            }
            _ => {}
        }
    }
}
