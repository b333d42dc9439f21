//! A replicated key-value store: run it on every node; each copy applies the same
//! writes in the same order, catches up when it starts late, and converges after node
//! kills, partitions and daemon restarts (the `cpg::replica` layer).
//!
//! ```text
//! cargo run -p cpg-examples --bin kv -- my-store   # on each node
//! RUST_LOG=cpg=debug cargo run -p cpg-examples --bin kv -- my-store   # and what the layers do, on stderr
//! ```
//!
//! Commands on stdin, one per line; answers on stdout, one per line:
//!
//! ```text
//! set KEY VALUE   -> OK v<version> was <old value>|unset  (once applied here, in the agreed order)
//! del KEY         -> OK v<version> was <old value>|unset
//! get KEY         -> VALUE KEY VALUE  |  NONE KEY  |  ERR <why>
//! digest          -> DIGEST v<version> <digest> members=<n> phase=<phase> epoch=<e> quorum=<state>
//! verify          -> (later) VERIFIED ... | DIVERGED ...
//! ```
//!
//! Writes follow corosync's quorum (where `corosync.conf` configures a quorum
//! provider, `quorum { provider: corosync_votequorum }`): on a side of a partition
//! that is not quorate a write is refused with `ERR not quorate: ...`, at once when
//! the local daemon says so, else where the write is delivered (the replica layer
//! judges it by the quorum every member agreed on at that point, so no member applies
//! it); retrying is safe. Only the quorate side accepts writes, so a merge never
//! throws away an acknowledged write, and its history wins the merge (it has the
//! higher quorum epoch). The layer's quorum changes print as `QUORUM <state>
//! epoch=<e>`. `--ungated` turns the gate off: every side accepts writes, and after
//! a heal the quorate side's history still wins; the other side prints `DISCARDED`
//! for each of its own writes that were lost.
//!
//! On a cluster without a quorum provider every side is "quorate": there,
//! `--majority-of N` refuses writes (`ERR minority`) unless the current view holds a
//! majority of the N configured nodes, and after a heal the longer history wins. The
//! old value a
//! write answers is what `apply` returned for it: the same on every copy. A `get`
//! passes a read barrier first (`read_ordered`), so it sees every write acknowledged
//! anywhere in its view before it was asked (a `set` on another node that answered
//! `OK`); on the minority side of a partition it is the minority's state. The replica
//! layer's events are printed as they come: `VIEW`, `SYNCED`, `RESTORED`,
//! `DISCARDED`, `VERIFIED`, `DIVERGED`.
//! A view shows its members with their node names from corosync's node list
//! (`VIEW view 1.3 [1 (node1):4242 (me), 2 (node2):4243] members=2`), read through cmap
//! (`cpg::cmap::NodeNames`); without access to cmap, ids alone.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cpg::cmap::NodeNames;
use cpg::replica::{
    fnv, fnv_start, has_majority, Config, Event, OpInfo, Replica, Replicated, RestoreError,
};
use cpg::GroupName;

/// How long a write or a read waits for the replica.
const WAIT: Duration = Duration::from_secs(30);

/// A replicated key-value store over a CPG group.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Name of the group.
    group: String,
    /// Accept writes only while the view holds a majority of this many nodes
    /// (0: always accept), for a cluster without a quorum provider.
    #[arg(long, default_value_t = 0)]
    majority_of: usize,
    /// Accept writes whatever corosync's quorum says (the quorate side's history
    /// still wins a merge).
    #[arg(long)]
    ungated: bool,
    /// Seconds between automatic digest checks (0: only on `verify`).
    #[arg(long, default_value_t = 30)]
    verify_secs: u64,
}

/// The state: a sorted map, so that snapshots and digests are deterministic.
#[derive(Debug, Default)]
struct Store {
    map: BTreeMap<String, String>,
}

/// An operation: `set\0KEY\0VALUE` or `del\0KEY`.
fn encode(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

impl Replicated for Store {
    /// A write's outcome: the key's value before it.
    type Output = Option<String>;

    fn apply(&mut self, op: &[u8], _info: &OpInfo) -> Option<String> {
        let text = String::from_utf8_lossy(op);
        let mut parts = text.splitn(3, '\0');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("set"), Some(k), Some(v)) => self.map.insert(k.to_string(), v.to_string()),
            (Some("del"), Some(k), None) => self.map.remove(k),
            _ => None, // Not an operation of ours: a deterministic no-op.
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in &self.map {
            for s in [k, v] {
                b.extend_from_slice(&(s.len() as u32).to_le_bytes());
                b.extend_from_slice(s.as_bytes());
            }
        }
        b
    }

    fn restore(&mut self, mut s: &[u8]) -> Result<(), RestoreError> {
        let mut map = BTreeMap::new();
        let mut next = || -> Result<Option<String>, RestoreError> {
            if s.is_empty() {
                return Ok(None);
            }
            let len = u32::from_le_bytes(s.get(..4).ok_or("short")?.try_into()?) as usize;
            let text = std::str::from_utf8(s.get(4..4 + len).ok_or("short")?)?.to_string();
            s = &s[4 + len..];
            Ok(Some(text))
        };
        while let Some(k) = next()? {
            let v = next()?.ok_or("key without a value")?;
            map.insert(k, v);
        }
        self.map = map;
        Ok(())
    }

    fn digest(&self) -> u64 {
        let mut h = fnv_start();
        for (k, v) in &self.map {
            h = fnv(h, k.as_bytes());
            h = fnv(h, &[0]);
            h = fnv(h, v.as_bytes());
            h = fnv(h, &[0]);
        }
        h
    }
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
            eprintln!("kv: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default();
    config.verify_interval = (args.verify_secs > 0).then(|| Duration::from_secs(args.verify_secs));
    config.gate_writes = !args.ungated;
    let replica = Arc::new(
        Replica::builder(GroupName::new(&args.group)?, Store::default())
            .config(config)
            .start()?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    // Names are a nicety: without them, ids alone.
    let mut names = NodeNames::new().ok();
    let printer = {
        let (replica, stop) = (Arc::clone(&replica), Arc::clone(&stop));
        // Following the node list dispatches cmap: a stack with room for that.
        std::thread::Builder::new()
            .stack_size(4 << 20)
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Some(e) = replica.next_event(Duration::from_millis(100)) {
                        if let (Event::View(_), Some(n)) = (&e, names.as_mut()) {
                            let _ = n.refresh();
                        }
                        print_event(&e, names.as_ref());
                    }
                }
            })?
    };
    for line in std::io::stdin().lock().lines() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["set", k, v @ ..] if !v.is_empty() => {
                write(&replica, args, encode(&["set", k, &v.join(" ")]))
            }
            ["del", k] => write(&replica, args, encode(&["del", k])),
            ["get", k] => match replica.read_ordered(WAIT, |s| s.map.get(*k).cloned()) {
                Ok(Some(v)) => println!("VALUE {k} {v}"),
                Ok(None) => println!("NONE {k}"),
                Err(e) => println!("ERR {e}"),
            },
            ["digest"] => {
                let s = replica.summary();
                let n = replica.view().map_or(0, |v| v.len());
                println!(
                    "DIGEST v{} {:016x} members={n} phase={:?} epoch={} quorum={}",
                    s.version,
                    s.digest,
                    replica.phase(),
                    s.epoch,
                    replica.agreed_quorum()
                );
            }
            ["verify"] => replica.verify(),
            [] => {}
            _ => println!("ERR unknown command (set K V, del K, get K, digest, verify)"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = printer.join();
    let _ = replica.leave(Duration::from_secs(5));
    Ok(())
}

/// Submits a write if the view allows it, and waits until it is applied here.
fn write(replica: &Replica<Store>, args: &Args, op: Vec<u8>) {
    if args.majority_of > 0
        && !replica
            .view()
            .is_some_and(|v| has_majority(&v, args.majority_of))
    {
        println!("ERR minority");
        return;
    }
    match replica.submit(op).and_then(|t| t.wait(WAIT)) {
        Ok(done) => println!(
            "OK v{} was {}",
            done.version,
            done.output.as_deref().unwrap_or("unset")
        ),
        Err(e) => println!("ERR {e}"),
    }
}

fn print_event(e: &Event, names: Option<&NodeNames>) {
    match e {
        Event::View(v) => {
            let lookup = |id| names.and_then(|n| n.get(id)).map(str::to_string);
            println!("VIEW {} members={}", v.display_with(&lookup), v.len())
        }
        Event::Synced {
            round,
            source,
            summary,
            transferred,
        } => println!("SYNCED {round} source={source} state={summary} transferred={transferred}"),
        Event::Restored {
            source,
            previous,
            current,
            discarded,
            ..
        } => {
            println!(
                "RESTORED from {source}: {previous} -> {current}, {} own writes discarded",
                discarded.len()
            );
            for d in discarded {
                println!(
                    "DISCARDED {}",
                    String::from_utf8_lossy(&d.op).replace('\0', " ")
                );
            }
        }
        Event::Quorum { state, epoch } => println!("QUORUM {state} epoch={epoch}"),
        Event::Verified { summary, .. } => println!("VERIFIED {summary}"),
        Event::Diverged { summaries, .. } => println!("DIVERGED {summaries:?}"),
        Event::RoundFailed { attempt, why } => println!("ROUND-FAILED {attempt} {why:?}"),
        Event::GaveUp { attempts } => println!("REJOIN after {attempts} failed rounds"),
        Event::Refused { from, version } => {
            println!("REFUSED {from}: protocol version {version}")
        }
        _ => {}
    }
}
