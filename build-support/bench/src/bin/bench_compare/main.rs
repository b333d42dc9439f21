//! The benchmark command: runs the benchmark clients side by side against the same
//! private corosync, several rounds, and prints per message size the median ratios of
//! messages per second and of client CPU time per delivered message, plus heap
//! allocations per message. The clients (`--implementations`):
//!
//! * `safe`: `bench`, the safe crate's fastest design (a dispatching thread, the
//!   callback borrowing each message, and a sending thread with a `cpg::Sender`);
//! * `raw-busy`: `bench_raw --mode busy-retry`, corosync's own benchmark pattern on raw
//!   calls (a thread in `CS_DISPATCH_BLOCKING`, a sender retrying `CS_ERR_TRY_AGAIN` at
//!   once): the baseline to beat;
//! * `raw`: `bench_raw`, the same two-thread design as `safe` on raw calls;
//! * `async`: `bench --async`, an `AsyncHandle` stream read by one task while another
//!   sends with an `AsyncSender`;
//! * `safe-1t`, `raw-1t`, `async-1t`: the one-thread loops (`--single-thread`,
//!   `--mode single-thread`);
//! * `safe-copy`: `bench --copy`, the blocking design keeping an owned copy of each
//!   message, as the async one does.
//!
//! `--layers` compares the protocol layers with the plain loop instead (every client
//! verifies every message, sequence and checksum per sender):
//!
//! * `plain`: `bench --verify`, the two-thread design above;
//! * `group`: `bench --layer group`, application messages through `cpg::group::Group`;
//! * `group-async`: `bench --layer group --async`, through `AsyncGroup`;
//! * `replica`: `bench --layer replica`, operations through `cpg::replica::Replica`
//!   (operations applied per second).
//!
//! `--scale members` and `--scale nodes` measure how the cost grows (see the [`scale`]
//! module): plain, group and replica throughput and one-in-flight latency against the
//! number of member processes and of nodes, and a replica joiner's catch-up against the
//! number of members and the size of the state.
//!
//! ```text
//! cargo build --release -p cpg-bench --bins
//! target/release/bench_compare                 # 1 node, then a 3-node cluster
//! target/release/bench_compare --nodes 1 --rounds 3 --duration 1
//! target/release/bench_compare --implementations safe,async   # the async table only
//! target/release/bench_compare --latency       # bench --latency, p50/p99/p99.9
//! target/release/bench_compare --layers plain,group,replica --rounds 3 --duration 2
//! target/release/bench_compare --layers plain,group,replica --latency --rounds 3 --duration 2
//! target/release/bench_compare --scale members --rounds 3 --duration 2
//! target/release/bench_compare --scale nodes --rounds 3 --duration 2
//! ```
//!
//! Needs root: the daemons run in network namespaces made by `cpg-testkit`, and are
//! removed at exit (also on Ctrl-C). The client runs on node 1; on a cluster the other
//! nodes' daemons take part in every message's ordering (no clients there). The
//! `bench` and `bench_raw` binaries are taken from this program's own directory.
//!
//! Each round measures every size with every implementation twice, back to back, in
//! an order that rotates with the round and the size and is then run backwards (A B B
//! A), each run in a fresh process and a fresh group; an implementation's figure for
//! the round is the geometric mean of its two runs. A first warm-up round is discarded. The ratios are taken per round (the two
//! sides measured seconds apart) and the median is printed, so drift of a noisy
//! machine affects both sides of a ratio alike. CPU time is the client
//! process's own (`getrusage(RUSAGE_SELF)`, user + system, all its threads), never the
//! daemon's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cpg_testkit::Cluster;

mod scale;

/// The sizes of a comparison unless `--sizes` says otherwise.
const DEFAULT_SIZES: &str = "64,320,1600,8000,40000,200000,1000000";

/// Safe vs raw vs async CPG throughput and CPU cost, on 1 node and on a 3-node cluster.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Rounds (each runs every implementation twice per size, A B B A), after one discarded
    /// warm-up round.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Run the benchmark clients with this SCHED_RR priority (through `chrt`), below
    /// corosync's 99; 0 (the default) runs them as ordinary processes. On a 2-core
    /// machine shared with other corosync daemons, real-time clients fell into windows
    /// of a few dozen messages per second at ~0.8 s of client CPU each (all designs,
    /// safe and raw, no pushbacks); as ordinary processes they did not.
    #[arg(long, default_value_t = 0)]
    rt_priority: u32,
    /// Seconds per message size and implementation.
    #[arg(long, default_value_t = 1.0)]
    duration: f64,
    /// Message sizes in bytes, comma-separated [default: 64,320,1600,8000,40000,200000,
    /// 1000000; with --scale: 64,1600].
    #[arg(long)]
    sizes: Option<String>,
    /// Cluster sizes to measure, comma-separated.
    #[arg(long, default_value = "1,3")]
    nodes: String,
    /// Throughput ratio safe/raw below which a size is flagged.
    #[arg(long, default_value_t = 0.98)]
    min_throughput_ratio: f64,
    /// CPU-per-message ratio safe/raw above which a size is flagged.
    #[arg(long, default_value_t = 1.02)]
    max_cpu_ratio: f64,
    /// Throughput ratio async/safe below which a size is flagged.
    #[arg(long, default_value_t = 0.95)]
    min_async_ratio: f64,
    /// Throughput ratio safe/raw-busy (corosync's busy-retry pattern) below which a
    /// size is flagged.
    #[arg(long, default_value_t = 1.0)]
    min_busy_ratio: f64,
    /// Which implementations to run, comma-separated: safe, raw-busy, raw, async,
    /// safe-1t, raw-1t, async-1t, safe-copy (see the program's documentation). A table
    /// needs both sides. `NAME+ARG+ARG` adds arguments to NAME's program, as a variant
    /// of its own (`safe+--retry-initial-us+20` is compared with raw-busy and safe;
    /// `async+...` with safe and async). `NAME@PATH` runs NAME's client from the program
    /// at PATH (a build of another commit, for before/after), as a variant too.
    #[arg(long, default_value = "safe,raw-busy,raw,async")]
    implementations: String,
    /// Measure latency instead (`bench --latency`: one message in flight), and print
    /// the medians over rounds of its p50, p99 and p99.9 per size.
    #[arg(long, conflicts_with = "verify_across")]
    latency: bool,
    /// Instead of comparing: start a cluster of this many nodes, run `bench --verify`
    /// on node 1 and `bench --receive-only --verify` on every other node, and report
    /// (exit 1 on any loss, duplication, reordering or corruption).
    #[arg(long, value_name = "NODES")]
    verify_across: Option<usize>,
    /// With --verify-across: use the zero-copy send path on node 1.
    #[arg(long)]
    zero_copy: bool,
    /// Compare the protocol layers with the plain loop instead of the client designs,
    /// comma-separated: plain, group, group-async, replica (see the program's
    /// documentation; `NAME+ARG+ARG` adds arguments, as for --implementations, and
    /// `NAME+exe=FILE` runs another build of `bench` from this program's directory, as
    /// a variant). With --latency: their one-in-flight latency.
    #[arg(long, conflicts_with_all = ["verify_across", "scale"])]
    layers: Option<String>,
    /// How the cost grows: `members` (plain, group and replica against the number of
    /// member processes, --members, spread over a cluster of --cluster nodes; and a
    /// replica joiner's catch-up against members and against --state-mb) or `nodes`
    /// (against the number of nodes, --node-counts, one member per node).
    #[arg(long, value_enum, conflicts_with = "verify_across")]
    scale: Option<scale::Scale>,
    /// --scale members: member processes per measurement, comma-separated.
    #[arg(long, default_value = "1,2,4,8,16")]
    members: String,
    /// --scale members: nodes of the cluster the members are spread over.
    #[arg(long, default_value_t = 3)]
    cluster: usize,
    /// --scale nodes: cluster sizes, comma-separated (a size the machine cannot start
    /// ends the sweep, and says why).
    #[arg(long, default_value = "1,2,3,4,5")]
    node_counts: String,
    /// --scale members: state sizes in MB (10^6 bytes) for the catch-up of a joiner,
    /// comma-separated (empty: none).
    #[arg(long, default_value = "1,4,16,64,256")]
    state_mb: String,
    /// --scale members: the state (MB) of the catch-up against the number of members.
    #[arg(long, default_value_t = 1.0)]
    catch_up_mb: f64,
    /// --scale members: the members (holders and the joiner) of the catch-up against
    /// the state size.
    #[arg(long, default_value_t = 3)]
    catch_up_members: usize,
    /// --scale: stop starting measurements after this many seconds (the tables then
    /// show what was measured, and say so).
    #[arg(long, default_value_t = 3600)]
    time_limit: u64,
}

impl Args {
    /// `--sizes`, or the default of the mode.
    fn sizes_text(&self) -> &str {
        match (&self.sizes, self.scale) {
            (Some(sizes), _) => sizes,
            (None, Some(_)) => "64,1600",
            (None, None) => DEFAULT_SIZES,
        }
    }
}

/// A benchmark client: which program, with which extra options.
struct Implementation {
    name: &'static str,
    exe: PathBuf,
    extra: Vec<&'static str>,
}

/// One measurement of one size by one implementation.
#[derive(Debug, Clone, Copy)]
struct Sample {
    msgs_per_sec: f64,
    cpu_us_per_msg: f64,
    allocs_per_msg: f64,
    pushbacks: u64,
}

impl Sample {
    /// One implementation's figure for a round from its runs in that round: the
    /// geometric mean of rates and costs (a ratio of two such means is the mean of the
    /// ratios), the largest allocation count, the pushbacks added up.
    fn combine(runs: &[Sample]) -> Sample {
        let geo = |f: fn(&Sample) -> f64| {
            let logs: f64 = runs.iter().map(|s| f(s).max(f64::MIN_POSITIVE).ln()).sum();
            (logs / runs.len() as f64).exp()
        };
        Sample {
            // A run that delivered nothing in its window counts as 1 msg/s, so that a
            // ratio stays finite (and still shows the collapse).
            msgs_per_sec: geo(|s| s.msgs_per_sec.max(1.0)),
            cpu_us_per_msg: geo(|s| s.cpu_us_per_msg),
            allocs_per_msg: runs.iter().map(|s| s.allocs_per_msg).fold(0.0, f64::max),
            pushbacks: runs.iter().map(|s| s.pushbacks).sum(),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bench_compare: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse_list(what: &str, text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("{what}: {s:?} is not a number"))
        })
        .collect()
}

fn run(args: &Args) -> Result<bool, String> {
    let sizes = parse_list("--sizes", args.sizes_text())?;
    let node_counts = parse_list("--nodes", &args.nodes)?;
    if args.rt_priority > 98 {
        return Err("--rt-priority must be 0..=98 (below corosync's 99)".into());
    }
    if args.rounds == 0 || args.rounds > 100 {
        return Err("--rounds must be 1..=100".into());
    }
    if !(args.duration > 0.0 && args.duration <= 60.0) {
        return Err("--duration must be in (0, 60] seconds".into());
    }
    let dir = std::env::current_exe()
        .map_err(|e| format!("cannot find this program: {e}"))?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("cannot find this program's directory")?;
    let safe = dir.join("bench");
    let raw = dir.join("bench_raw");
    for exe in [&safe, &raw] {
        if !exe.is_file() {
            return Err(format!(
                "{} not found: build with `cargo build --release -p cpg-bench --bins`",
                exe.display()
            ));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot install a signal handler: {e}"))?;
    }
    if let Some(mode) = args.scale {
        return scale::run(args, mode, &sizes, &safe, &stop);
    }
    let implementations = match &args.layers {
        Some(layers) => layer_clients(layers, &safe)?,
        None => clients(&args.implementations, &safe, &raw)?,
    };
    if implementations.len() < 2 && !args.latency {
        return Err("--implementations: at least two, to compare".into());
    }
    if let Some(n) = args.verify_across {
        return verify_across(args, n, &safe, &stop);
    }
    if args.latency {
        let clients = if args.layers.is_some() {
            implementations
                .into_iter()
                .map(|mut i| {
                    i.extra.push("--latency");
                    i
                })
                .collect()
        } else {
            vec![Implementation {
                name: "safe",
                exe: safe.clone(),
                extra: vec!["--latency"],
            }]
        };
        return latency(args, &sizes, &node_counts, &clients, &stop);
    }
    compare(args, &sizes, &node_counts, &implementations, &stop)
}

/// The clients of `--implementations`.
fn clients(list: &str, safe: &Path, raw: &Path) -> Result<Vec<Implementation>, String> {
    let mut implementations: Vec<Implementation> = Vec::new();
    for entry in list.split(',').map(str::trim) {
        // `NAME@PATH`: NAME's client from another build.
        let (spec, other_exe) = match entry.split_once('@') {
            Some((spec, path)) => (spec, Some(PathBuf::from(path))),
            None => (entry, None),
        };
        // `NAME+ARG+ARG`: a variant of NAME with more arguments (for experiments).
        let mut parts = spec.split('+');
        let base = parts.next().unwrap_or_default();
        let more: Vec<&'static str> = parts.map(|a| &*Box::leak(a.into())).collect();
        let (name, exe, extra): (&'static str, &Path, &'static [&'static str]) = match base {
            "safe" => ("safe", safe, &[]),
            "raw-busy" => ("raw-busy", raw, &["--mode", "busy-retry"]),
            "raw" => ("raw", raw, &[]),
            "async" => ("async", safe, &["--async"]),
            "safe-1t" => ("safe-1t", safe, &["--single-thread"]),
            "raw-1t" => ("raw-1t", raw, &["--mode", "single-thread"]),
            "async-1t" => ("async-1t", safe, &["--async", "--single-thread"]),
            "safe-copy" => ("safe-copy", safe, &["--copy"]),
            other => return Err(format!("--implementations: unknown {other:?}")),
        };
        let name: &'static str = if more.is_empty() && other_exe.is_none() {
            name
        } else {
            Box::leak(entry.into())
        };
        if implementations.iter().any(|i| i.name == name) {
            return Err(format!("--implementations: {name} twice"));
        }
        let exe = match other_exe {
            Some(path) if path.is_file() => path,
            Some(path) => return Err(format!("--implementations: no program {}", path.display())),
            None => exe.to_path_buf(),
        };
        implementations.push(Implementation {
            name,
            exe,
            extra: extra.iter().copied().chain(more).collect(),
        });
    }
    Ok(implementations)
}

/// The arguments of `bench` that make each layer client of `--layers` (and of
/// `--scale`): every one verifies every message.
fn layer_args(base: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match base {
        "plain" => ("plain", &["--verify"]),
        "group" => ("group", &["--layer", "group"]),
        "group-async" => ("group-async", &["--layer", "group", "--async"]),
        "replica" => ("replica", &["--layer", "replica"]),
        _ => return None,
    })
}

/// The clients of `--layers`.
fn layer_clients(list: &str, bench: &Path) -> Result<Vec<Implementation>, String> {
    let mut clients: Vec<Implementation> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = entry.split('+');
        let base = parts.next().unwrap_or_default();
        // `exe=FILE`: another build of `bench` beside it (for example one with the
        // `tracing` feature), instead of an argument.
        let mut exe = bench.to_path_buf();
        let mut more: Vec<&'static str> = Vec::new();
        for part in parts {
            match part.strip_prefix("exe=") {
                Some(file) => exe = bench.with_file_name(file),
                None => more.push(Box::leak(part.into())),
            }
        }
        if !exe.is_file() {
            return Err(format!("--layers: {} not found", exe.display()));
        }
        let (name, extra) =
            layer_args(base).ok_or_else(|| format!("--layers: unknown {base:?}"))?;
        let name: &'static str = if entry == base {
            name
        } else {
            Box::leak(entry.into())
        };
        if clients.iter().any(|c| c.name == name) {
            return Err(format!("--layers: {name} twice"));
        }
        clients.push(Implementation {
            name,
            exe,
            extra: extra.iter().copied().chain(more).collect(),
        });
    }
    Ok(clients)
}

/// The comparison of client designs (or of layers): rounds of every client per size,
/// on each cluster size; the tables.
fn compare(
    args: &Args,
    sizes: &[usize],
    node_counts: &[usize],
    implementations: &[Implementation],
    stop: &AtomicBool,
) -> Result<bool, String> {
    println!(
        "# {} — {} rounds × {} s per size and implementation",
        implementations
            .iter()
            .map(|i| i.name)
            .collect::<Vec<_>>()
            .join(" vs "),
        args.rounds,
        args.duration
    );
    println!(
        "# corosync {} (libcpg {}), {} CPUs, clients {}",
        corosync_version(),
        corosync_sys::LIBCPG_VERSION,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if args.rt_priority > 0 {
            format!("at SCHED_RR {}", args.rt_priority)
        } else {
            "at normal priority".to_string()
        }
    );
    let mut all_ok = true;
    let mut retried: Vec<String> = Vec::new();
    for &n in node_counts {
        eprintln!("bench_compare: starting a {n}-node cluster ...");
        let cluster = Cluster::builder()
            .nodes(n)
            .start()
            .map_err(|e| format!("cannot start a {n}-node cluster: {e}"))?;
        let mut samples: BTreeMap<(&'static str, usize), Vec<Sample>> = BTreeMap::new();
        // Round 0 is a warm-up (the first runs on a fresh daemon are slower): discarded.
        for round in 0..=args.rounds {
            for (i, &size) in sizes.iter().enumerate() {
                // Rotate which implementation goes first, per round and per size, and
                // run the order forwards then backwards (A B C C B A): a run's speed
                // depends on its place in the sequence on this machine (seen on one
                // node: whichever ran first in a pair got up to 3x the other), and a
                // palindrome gives every implementation one early and one late place,
                // one even and one odd, in every round.
                let k = implementations.len();
                let order: Vec<usize> = (0..k).map(|turn| (round + i + turn) % k).collect();
                let mut runs: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
                for pass in 0..2 {
                    for at in 0..k {
                        let implementation =
                            &implementations[order[if pass == 0 { at } else { k - 1 - at }]];
                        let name = implementation.name;
                        if stop.load(Ordering::Relaxed) {
                            return Err("interrupted".into());
                        }
                        let group = format!("bench-cmp-{round}-{size}-{name}-{pass}");
                        // A failed run is run once more, and reported: on one node,
                        // raw-busy's end marker at 1 MB did not come back within 60 s
                        // 4 times in 3 full sweeps, late in each (corosync 3.1.7; never
                        // in 16 runs of that size alone), which threw the whole
                        // measurement away.
                        let sample =
                            match run_one(&cluster, implementation, args, &group, size, stop) {
                                Ok(sample) => sample,
                                Err(e) => {
                                    eprintln!("bench_compare: {e}; running it once more");
                                    retried.push(format!("{n} node(s), {size} B {name}: {e}"));
                                    let group = format!("{group}-again");
                                    run_one(&cluster, implementation, args, &group, size, stop)?
                                }
                            };
                        eprintln!(
                            "bench_compare: {n} node(s), {} {size} B {name}: {:.0} msgs/s, {:.2} µs CPU/msg, {} pushbacks",
                            if round == 0 {
                                "warm-up".to_string()
                            } else {
                                format!("round {round}/{}", args.rounds)
                            },
                            sample.msgs_per_sec,
                            sample.cpu_us_per_msg,
                            sample.pushbacks
                        );
                        runs.entry(name).or_default().push(sample);
                    }
                }
                if round > 0 {
                    for (name, pair) in runs {
                        samples
                            .entry((name, size))
                            .or_default()
                            .push(Sample::combine(&pair));
                    }
                }
            }
        }
        drop(cluster);
        all_ok &= print_tables(args, n, sizes, &samples);
    }
    if !retried.is_empty() {
        println!(
            "\nruns that failed and were run once more ({}):",
            retried.len()
        );
        for r in &retried {
            println!("- {r}");
        }
    }
    Ok(all_ok)
}

/// Waits (bounded by `limit`) for `child`; kills it on timeout or interruption.
fn wait_child(
    child: &mut std::process::Child,
    what: &str,
    limit: Duration,
    stop: &AtomicBool,
) -> Result<std::process::ExitStatus, String> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if started.elapsed() > limit || stop.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not finish within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `--verify-across N`: one verifying sender on node 1, verifying receivers on the
/// other nodes; true if every process reports a clean run.
fn verify_across(args: &Args, n: usize, bench: &Path, stop: &AtomicBool) -> Result<bool, String> {
    if !(2..=16).contains(&n) {
        return Err("--verify-across: 2..=16 nodes".into());
    }
    eprintln!("bench_compare: starting a {n}-node cluster ...");
    let cluster = Cluster::builder()
        .nodes(n)
        .start()
        .map_err(|e| format!("cannot start a {n}-node cluster: {e}"))?;
    let group = "bench-verify";
    let limit = Duration::from_secs_f64(
        (args.duration + 30.0) * parse_list("--sizes", args.sizes_text())?.len() as f64 + 60.0,
    );
    let mut receivers = Vec::new();
    for i in 1..n {
        let child = cluster
            .node(i)
            .command(bench)
            .args(["--receive-only", "--verify", "--group", group])
            .args(["--timeout", &limit.as_secs().to_string()])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bench.display()))?;
        receivers.push((i + 1, child));
    }
    // Let the receivers join before the first message.
    std::thread::sleep(Duration::from_secs(2));
    let mut sender = cluster.node(0).command(bench);
    sender
        .args(["--verify", "--group", group, "--sizes", args.sizes_text()])
        .args(["--duration", &args.duration.to_string()])
        .stdin(Stdio::null());
    if args.zero_copy {
        sender.arg("--zero-copy");
    }
    println!("== node 1: bench --verify (sender)");
    let mut sender = sender
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bench.display()))?;
    let mut ok = wait_child(&mut sender, "the sender", limit, stop)?.success();
    for (id, mut child) in receivers {
        let status = wait_child(&mut child, "a receiver", limit, stop)?;
        println!("== node {id}: bench --receive-only --verify exited with {status}");
        ok &= status.success();
    }
    println!(
        "verify across {n} nodes: {}",
        if ok {
            "no loss, duplication, reordering or corruption"
        } else {
            "FAILED"
        }
    );
    Ok(ok)
}

fn corosync_version() -> String {
    std::process::Command::new("corosync")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let line = text.lines().next()?.to_string();
            // "Corosync Cluster Engine, version '3.1.7'"
            line.split('\'').nth(1).map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// Runs one benchmark process for one size on node 1; its measurement.
fn run_one(
    cluster: &Cluster,
    implementation: &Implementation,
    args: &Args,
    group: &str,
    size: usize,
    stop: &AtomicBool,
) -> Result<Sample, String> {
    let v = run_client(cluster, implementation, args, group, size, stop)?;
    let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let msgs = num("msgs").max(1.0);
    Ok(Sample {
        msgs_per_sec: num("msgs_per_sec"),
        cpu_us_per_msg: num("cpu_secs") * 1e6 / msgs,
        allocs_per_msg: num("allocs") / msgs,
        pushbacks: num("pushbacks") as u64,
    })
}

/// Runs one benchmark process for one size on node 1; the JSON object it printed.
fn run_client(
    cluster: &Cluster,
    implementation: &Implementation,
    args: &Args,
    group: &str,
    size: usize,
    stop: &AtomicBool,
) -> Result<serde_json::Value, String> {
    let exe = implementation.exe.as_path();
    let mut cmd = if args.rt_priority > 0 {
        let mut cmd = cluster.node(0).command("chrt");
        cmd.args(["-r", &args.rt_priority.to_string()]).arg(exe);
        cmd
    } else {
        cluster.node(0).command(exe)
    };
    let mut child = cmd
        .args(&implementation.extra)
        .args(["--json", "--group", group, "--sizes", &size.to_string()])
        .args(["--duration", &args.duration.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    // `duration`, plus the drain of the end marker, plus start and exit.
    let limit = Duration::from_secs_f64(args.duration + 90.0);
    let what = format!("{} {}", exe.display(), implementation.extra.join(" "));
    let status = wait_child(&mut child, &what, limit, stop)?;
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read as _;
        stdout.read_to_string(&mut out).map_err(|e| e.to_string())?;
    }
    if !status.success() {
        return Err(format!("{what} failed ({status})"));
    }
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("{what} printed no result"))?;
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bad output {line:?}: {e}"))?;
    if v["size"].as_u64() != Some(size as u64) {
        return Err(format!("{what} measured the wrong size: {line}"));
    }
    Ok(v)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A comparison of implementation `a` against `b` (the ratios are a/b), with its targets.
struct Comparison {
    a: &'static str,
    b: &'static str,
    /// Lowest acceptable median msgs/s ratio.
    min_throughput: f64,
    /// Highest acceptable median CPU/msg ratio, if it is a target.
    max_cpu: Option<f64>,
    /// Whether `a` must allocate nothing per message.
    zero_allocs: bool,
    /// Per-size throughput targets; when given, they replace `min_throughput` (sizes
    /// not listed have none).
    size_targets: &'static [(usize, f64)],
}

impl Comparison {
    /// The lowest acceptable median msgs/s ratio at `size`.
    fn min_throughput_at(&self, size: usize) -> f64 {
        if self.size_targets.is_empty() {
            return self.min_throughput;
        }
        self.size_targets
            .iter()
            .find(|(s, _)| *s == size)
            .map_or(0.0, |(_, t)| *t)
    }
}

/// The targets of the group layer against the plain loop (issue 28): application
/// messages per second at 64 B ≥ 5× the plain loop's, at 1600 B ≥ 2×.
const GROUP_TARGETS: &[(usize, f64)] = &[(64, 5.0), (1600, 2.0)];
/// The replica layer's: operations per second at 64 B ≥ 3× the plain loop's messages.
const REPLICA_TARGETS: &[(usize, f64)] = &[(64, 3.0)];

/// Prints the tables for one cluster size (those whose two sides were run); true if
/// every size meets every target.
fn print_tables(
    args: &Args,
    nodes: usize,
    sizes: &[usize],
    samples: &BTreeMap<(&'static str, usize), Vec<Sample>>,
) -> bool {
    println!();
    println!(
        "## {nodes} node{} (client on node 1)",
        if nodes == 1 { "" } else { "s" }
    );
    let mut comparisons = vec![
        // The default design against corosync's own busy-retry pattern.
        Comparison {
            a: "safe",
            b: "raw-busy",
            min_throughput: args.min_busy_ratio,
            max_cpu: None,
            zero_allocs: true,
            size_targets: &[],
        },
        // The same design, safe against raw: what the binding layer costs.
        Comparison {
            a: "safe",
            b: "raw",
            min_throughput: args.min_throughput_ratio,
            max_cpu: Some(args.max_cpu_ratio),
            zero_allocs: true,
            size_targets: &[],
        },
        Comparison {
            a: "safe-1t",
            b: "raw-1t",
            min_throughput: args.min_throughput_ratio,
            max_cpu: Some(args.max_cpu_ratio),
            zero_allocs: true,
            size_targets: &[],
        },
        // What the two-thread design gains over the one-thread loop (no target).
        Comparison {
            a: "safe",
            b: "safe-1t",
            min_throughput: 0.0,
            max_cpu: None,
            zero_allocs: true,
            size_targets: &[],
        },
        Comparison {
            a: "safe-1t",
            b: "raw-busy",
            min_throughput: 0.0,
            max_cpu: None,
            zero_allocs: true,
            size_targets: &[],
        },
        // The async path copies every message into an owned event (an allocation per
        // message, by design) and pays a libcpg call per event: its CPU ratio is
        // reported, its throughput is the target.
        Comparison {
            a: "async",
            b: "safe",
            min_throughput: args.min_async_ratio,
            max_cpu: None,
            zero_allocs: false,
            size_targets: &[],
        },
        // Like for like: both own every message.
        Comparison {
            a: "async",
            b: "safe-copy",
            min_throughput: args.min_async_ratio,
            max_cpu: None,
            zero_allocs: false,
            size_targets: &[],
        },
        Comparison {
            a: "async-1t",
            b: "safe-1t",
            min_throughput: args.min_async_ratio,
            max_cpu: None,
            zero_allocs: false,
            size_targets: &[],
        },
    ];
    // The layers (`--layers`) against the plain loop; the async group against the
    // blocking one. Allocations per delivered message: 0 is the target of each.
    for (a, b, targets) in [
        ("group", "plain", GROUP_TARGETS),
        ("group-async", "plain", GROUP_TARGETS),
        ("replica", "plain", REPLICA_TARGETS),
        ("group-async", "group", &[][..]),
    ] {
        comparisons.push(Comparison {
            a,
            b,
            min_throughput: 0.0,
            max_cpu: None,
            zero_allocs: true,
            size_targets: targets,
        });
    }
    // Variants of a layer (`group+ARG...`): against the plain loop and the layer.
    let layer_variants: std::collections::BTreeSet<&'static str> = samples
        .keys()
        .map(|(n, _)| *n)
        .filter(|n| {
            ["plain+", "group+", "group-async+", "replica+"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    for v in layer_variants {
        let base = v.split('+').next().unwrap_or_default();
        let base: &'static str = match base {
            "group" => "group",
            "group-async" => "group-async",
            "replica" => "replica",
            _ => "plain",
        };
        comparisons.push(Comparison {
            a: v,
            b: "plain",
            min_throughput: 0.0,
            max_cpu: None,
            zero_allocs: base != "plain",
            size_targets: match base {
                "replica" => REPLICA_TARGETS,
                "plain" => &[],
                _ => GROUP_TARGETS,
            },
        });
        if base != "plain" {
            comparisons.push(Comparison {
                a: v,
                b: base,
                min_throughput: 0.0,
                max_cpu: None,
                zero_allocs: true,
                size_targets: &[],
            });
        }
    }
    // Variants (`safe+ARG...`, `safe@PATH`): against the baseline and against the
    // default; `async+ARG...`, `async@PATH`: against safe and against the default.
    let variants: std::collections::BTreeSet<&'static str> = samples
        .keys()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with("safe+") || n.starts_with("safe@"))
        .collect();
    let async_variants: std::collections::BTreeSet<&'static str> = samples
        .keys()
        .map(|(n, _)| *n)
        .filter(|n| n.starts_with("async+") || n.starts_with("async@"))
        .collect();
    for v in async_variants {
        for b in ["safe", "async"] {
            comparisons.push(Comparison {
                a: v,
                b,
                min_throughput: if b == "safe" {
                    args.min_async_ratio
                } else {
                    0.0
                },
                max_cpu: None,
                zero_allocs: false,
                size_targets: &[],
            });
        }
    }
    for v in variants {
        for b in ["raw-busy", "safe"] {
            comparisons.push(Comparison {
                a: v,
                b,
                min_throughput: if b == "raw-busy" {
                    args.min_busy_ratio
                } else {
                    0.0
                },
                max_cpu: None,
                zero_allocs: true,
                size_targets: &[],
            });
        }
    }
    let ran = |name: &str| samples.keys().any(|(n, _)| *n == name);
    let mut ok = true;
    for c in comparisons.iter().filter(|c| ran(c.a) && ran(c.b)) {
        ok &= print_table(c, sizes, samples);
    }
    ok
}

/// Prints one comparison table; true if every size meets its targets.
fn print_table(
    c: &Comparison,
    sizes: &[usize],
    samples: &BTreeMap<(&'static str, usize), Vec<Sample>>,
) -> bool {
    let (a, b) = (c.a, c.b);
    println!();
    println!(
        "| bytes/msg | {a} msgs/s | {b} msgs/s | msgs/s {a}/{b} | {a} CPU µs/msg | {b} CPU µs/msg | CPU/msg {a}/{b} | {a} allocs/msg |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut ok = true;
    for &size in sizes {
        let empty = Vec::new();
        let sa = samples.get(&(a, size)).unwrap_or(&empty);
        let sb = samples.get(&(b, size)).unwrap_or(&empty);
        // Paired per round: round i of one side with round i of the other.
        let tput: Vec<f64> = sa
            .iter()
            .zip(sb)
            .map(|(x, y)| x.msgs_per_sec / y.msgs_per_sec)
            .collect();
        let cpu: Vec<f64> = sa
            .iter()
            .zip(sb)
            .map(|(x, y)| x.cpu_us_per_msg / y.cpu_us_per_msg)
            .collect();
        let tput = median(tput);
        let cpu = median(cpu);
        let allocs = sa.iter().map(|x| x.allocs_per_msg).fold(0.0, f64::max);
        let flag_t = if tput >= c.min_throughput_at(size) {
            ""
        } else {
            " ✗"
        };
        let flag_c = match c.max_cpu {
            Some(max) if cpu > max => " ✗",
            _ => "",
        };
        let flag_a = if c.zero_allocs && allocs != 0.0 {
            " ✗"
        } else {
            ""
        };
        ok &= flag_t.is_empty() && flag_c.is_empty() && flag_a.is_empty();
        println!(
            "| {size} | {:.0} | {:.0} | {tput:.3}{flag_t} | {:.2} | {:.2} | {cpu:.3}{flag_c} | {allocs:.2}{flag_a} |",
            median(sa.iter().map(|x| x.msgs_per_sec).collect()),
            median(sb.iter().map(|x| x.msgs_per_sec).collect()),
            median(sa.iter().map(|x| x.cpu_us_per_msg).collect()),
            median(sb.iter().map(|x| x.cpu_us_per_msg).collect()),
        );
    }
    println!();
    let mut targets = Vec::new();
    if !c.size_targets.is_empty() {
        let at: Vec<String> = c
            .size_targets
            .iter()
            .map(|(size, t)| format!(">= {t} at {size} B"))
            .collect();
        targets.push(format!("msgs/s {a}/{b} {}", at.join(", ")));
    } else if c.min_throughput > 0.0 {
        targets.push(format!("msgs/s {a}/{b} >= {}", c.min_throughput));
    }
    if let Some(max) = c.max_cpu {
        targets.push(format!("CPU/msg {a}/{b} <= {max}"));
    }
    if c.zero_allocs {
        targets.push(format!("{a} allocations per message 0"));
    }
    if targets.is_empty() {
        println!("no targets");
    } else {
        println!(
            "targets: {}: {}",
            targets.join(", "),
            if ok { "met" } else { "NOT met (✗)" }
        );
    }
    ok
}

/// One latency measurement of one size.
#[derive(Debug, Clone, Copy)]
struct LatencySample {
    samples: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

/// `--latency`: per cluster size, rounds of each client's `--latency` run per size (the
/// clients in an order that rotates with round and size); the medians over rounds of
/// p50, p99 and p99.9, and with several clients the median per-round ratio of each
/// one's p50 to the first one's.
fn latency(
    args: &Args,
    sizes: &[usize],
    node_counts: &[usize],
    clients: &[Implementation],
    stop: &AtomicBool,
) -> Result<bool, String> {
    println!(
        "# {} --latency (one message in flight) — {} rounds × {} s per size",
        clients
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", "),
        args.rounds,
        args.duration
    );
    println!(
        "# corosync {} (libcpg {}), {} CPUs, client {}",
        corosync_version(),
        corosync_sys::LIBCPG_VERSION,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if args.rt_priority > 0 {
            format!("at SCHED_RR {}", args.rt_priority)
        } else {
            "at normal priority".to_string()
        }
    );
    for &n in node_counts {
        eprintln!("bench_compare: starting a {n}-node cluster ...");
        let cluster = Cluster::builder()
            .nodes(n)
            .start()
            .map_err(|e| format!("cannot start a {n}-node cluster: {e}"))?;
        let mut samples: BTreeMap<(&'static str, usize), Vec<LatencySample>> = BTreeMap::new();
        for round in 0..=args.rounds {
            for (i, &size) in sizes.iter().enumerate() {
                let k = clients.len();
                for turn in 0..k {
                    let client = &clients[(round + i + turn) % k];
                    if stop.load(Ordering::Relaxed) {
                        return Err("interrupted".into());
                    }
                    let group = format!("bench-lat-{round}-{size}-{}", client.name);
                    let v = run_client(&cluster, client, args, &group, size, stop)?;
                    let sample = LatencySample {
                        samples: v["samples"].as_f64().unwrap_or(0.0),
                        p50: v["p50_us"].as_f64().unwrap_or(f64::NAN),
                        p99: v["p99_us"].as_f64().unwrap_or(f64::NAN),
                        p999: v["p999_us"].as_f64().unwrap_or(f64::NAN),
                    };
                    eprintln!(
                        "bench_compare: {n} node(s), {} {size} B {}: {:.0} round trips, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
                        if round == 0 {
                            "warm-up".to_string()
                        } else {
                            format!("round {round}/{}", args.rounds)
                        },
                        client.name,
                        sample.samples,
                        sample.p50,
                        sample.p99,
                        sample.p999
                    );
                    if round > 0 {
                        samples.entry((client.name, size)).or_default().push(sample);
                    }
                }
            }
        }
        drop(cluster);
        for client in clients {
            println!();
            println!(
                "## {n} node{} (client on node 1): {} latency, medians over rounds",
                if n == 1 { "" } else { "s" },
                client.name
            );
            println!();
            println!("| bytes/msg | round trips/s | p50 µs | p99 µs | p99.9 µs | p99.9 µs, range over rounds |");
            println!("|---:|---:|---:|---:|---:|---:|");
            for &size in sizes {
                let s = samples
                    .get(&(client.name, size))
                    .cloned()
                    .unwrap_or_default();
                let col = |f: fn(&LatencySample) -> f64| median(s.iter().map(f).collect());
                let lo = s.iter().map(|x| x.p999).fold(f64::INFINITY, f64::min);
                let hi = s.iter().map(|x| x.p999).fold(f64::NEG_INFINITY, f64::max);
                println!(
                    "| {size} | {:.0} | {:.1} | {:.1} | {:.1} | {lo:.0}–{hi:.0} |",
                    col(|x| x.samples) / args.duration,
                    col(|x| x.p50),
                    col(|x| x.p99),
                    col(|x| x.p999),
                );
            }
        }
        if let [base, others @ ..] = clients {
            if others.is_empty() {
                continue;
            }
            println!();
            println!(
                "## {n} node{}: p50 against {}, median of per-round ratios",
                if n == 1 { "" } else { "s" },
                base.name
            );
            println!();
            let names: Vec<&str> = clients.iter().map(|c| c.name).collect();
            let ratios: Vec<String> = others
                .iter()
                .map(|c| format!("p50 {}/{}", c.name, base.name))
                .collect();
            println!(
                "| bytes/msg | {} | {} |",
                names
                    .iter()
                    .map(|n| format!("{n} p50 µs"))
                    .collect::<Vec<_>>()
                    .join(" | "),
                ratios.join(" | ")
            );
            println!("|---:|{}", "---:|".repeat(names.len() + ratios.len()));
            for &size in sizes {
                let p50s: Vec<Vec<f64>> = clients
                    .iter()
                    .map(|c| {
                        samples
                            .get(&(c.name, size))
                            .map(|v| v.iter().map(|x| x.p50).collect())
                            .unwrap_or_default()
                    })
                    .collect();
                let cells: Vec<String> = p50s
                    .iter()
                    .map(|v| format!("{:.1}", median(v.clone())))
                    .collect();
                let rs: Vec<String> = p50s[1..]
                    .iter()
                    .map(|v| {
                        let per_round = v.iter().zip(&p50s[0]).map(|(x, y)| x / y).collect();
                        format!("{:.3}", median(per_round))
                    })
                    .collect();
                println!("| {size} | {} | {} |", cells.join(" | "), rs.join(" | "));
            }
        }
    }
    Ok(true)
}
