//! A replicated counter on the async (tokio) API: every instance adds 1 to a shared
//! counter at a fixed interval, and every instance prints the same sequence of values,
//! because CPG delivers all increments in one agreed order. An instance that joins
//! later is sent the current value by an older member (state transfer) and then applies
//! every increment delivered after its join.
//!
//! ```text
//! cargo run -p cpg-examples --bin async_counter -- my-counter            # Ctrl-C ends
//! cargo run -p cpg-examples --bin async_counter -- my-counter --interval-ms 100 --count 20
//! ```
//!
//! Run it on several nodes (or several times on one node) with the same group name.
//!
//! The pattern to copy: one task owns the [`AsyncHandle`] and `select!`s over its
//! events, a timer and Ctrl-C; sends are awaited in the branch (they wait out
//! back-pressure and keep reading events meanwhile). `#[tokio::main]` polls this on the
//! main thread (8 MiB stack); if you move the handle into a spawned task, give the
//! runtime `thread_stack_size(4 << 20)` (libcpg puts a 1 MiB buffer on the stack).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use cpg::{AsyncHandle, Event, GroupName, Member};

/// Replicated counter: each instance increments it; all print the same values.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Name of the group (the counter) to join.
    #[arg(default_value = "async-counter")]
    group: String,
    /// Milliseconds between two increments of this instance.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Stop after this many increments of this instance (default: until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
}

/// The messages of the protocol.
#[derive(Debug, PartialEq)]
enum Msg {
    /// Add 1.
    Increment,
    /// The counter's value at the moment `joiner` joined, for `joiner`.
    State { joiner: Member, value: u64 },
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Increment => b"I".to_vec(),
            Msg::State { joiner, value } => {
                let mut v = b"S".to_vec();
                v.extend_from_slice(&joiner.nodeid.to_le_bytes());
                v.extend_from_slice(&joiner.pid.to_le_bytes());
                v.extend_from_slice(&value.to_le_bytes());
                v
            }
        }
    }

    fn decode(data: &[u8]) -> Option<Msg> {
        match data {
            b"I" => Some(Msg::Increment),
            [b'S', rest @ ..] if rest.len() == 16 => Some(Msg::State {
                joiner: Member {
                    nodeid: u32::from_le_bytes(rest[0..4].try_into().ok()?),
                    pid: u32::from_le_bytes(rest[4..8].try_into().ok()?),
                },
                value: u64::from_le_bytes(rest[8..16].try_into().ok()?),
            }),
            _ => None,
        }
    }
}

/// The replicated state machine. It only reacts to events (in delivery order) and
/// says what to send; the event loop does the sending.
struct Counter {
    me: Member,
    group: GroupName,
    /// The value, once known (at once for the first member, else from a state message).
    value: Option<u64>,
    /// Increments delivered since our join while the value was not known yet.
    pending: u64,
    /// Members that joined while we owed them the state but did not know it yet, with
    /// the increments we had seen up to their join.
    owed: Vec<(Member, u64)>,
}

impl Counter {
    fn on_event(&mut self, event: Event) -> Vec<Msg> {
        match event {
            Event::Confchg {
                group,
                members,
                joined,
                left,
            } if group == self.group => {
                for gone in &left {
                    println!("{} left: {}", gone.member(), gone.reason());
                }
                let joined: Vec<Member> = joined.iter().map(|a| a.member()).collect();
                if joined.contains(&self.me) {
                    // Our own join: alone, we start the counter; else an older member
                    // will send us its value.
                    if members.len() == 1 {
                        self.value = Some(0);
                        println!("first member: counter starts at 0");
                    } else {
                        println!("joined {} members; waiting for the value", members.len());
                    }
                    return Vec::new();
                }
                // Someone else joined. The older member with the smallest id sends them
                // the value as of this point of the agreed order.
                let older = members
                    .iter()
                    .map(|a| a.member())
                    .filter(|m| !joined.contains(m))
                    .min();
                if older != Some(self.me) {
                    return Vec::new();
                }
                let mut out = Vec::new();
                for joiner in joined {
                    println!("{joiner} joined; sending it the value");
                    match self.value {
                        Some(value) => out.push(Msg::State { joiner, value }),
                        None => self.owed.push((joiner, self.pending)),
                    }
                }
                out
            }
            Event::Deliver { group, data, .. } if group == self.group => {
                match Msg::decode(&data) {
                    Some(Msg::Increment) => match &mut self.value {
                        Some(value) => {
                            *value += 1;
                            println!("counter = {value}");
                        }
                        None => self.pending += 1,
                    },
                    Some(Msg::State { joiner, value }) if joiner == self.me => {
                        if self.value.is_none() {
                            let now = value + self.pending;
                            self.value = Some(now);
                            println!("got the value: counter = {now}");
                            // Pay what we owe: the value at each later joiner's join.
                            return self
                                .owed
                                .drain(..)
                                .map(|(joiner, seen)| Msg::State {
                                    joiner,
                                    value: value + seen,
                                })
                                .collect();
                        }
                    }
                    Some(Msg::State { .. }) => {} // for another joiner
                    None => eprintln!("ignoring an unknown message of {} bytes", data.len()),
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async_counter: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: &Args) -> Result<(), cpg::Error> {
    let group = GroupName::new(&args.group)?;
    let mut cpg = AsyncHandle::new()?;
    let me = cpg.local_member()?;
    let mut counter = Counter {
        me,
        group,
        value: None,
        pending: 0,
        owed: Vec::new(),
    };
    cpg.join(&group).await?;
    println!("{me} joined {group}");

    let mut ticker = tokio::time::interval(Duration::from_millis(args.interval_ms.max(1)));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            event = cpg.next_event() => {
                let event = match event {
                    Some(event) => event?, // e.g. the daemon is gone: report it
                    None => break,
                };
                for msg in counter.on_event(event) {
                    cpg.send(&msg.encode()).await?;
                }
            }
            _ = ticker.tick(), if counter.value.is_some() => {
                if args.count.is_some_and(|n| sent >= n) {
                    break;
                }
                cpg.send(&Msg::Increment.encode()).await?;
                sent += 1;
            }
            _ = &mut ctrl_c => break,
        }
    }
    cpg.leave(&group).await?;
    println!("left {group} after {sent} increments of ours");
    Ok(())
}
