//! The benchmark command: runs `bench` (safe crate, blocking `Handle`), `bench_raw` (raw
//! `corosync-sys`), `bench --async` (the tokio `AsyncHandle`) and `bench --copy` (the
//! blocking path keeping an owned copy of each message, as the async one does) in turn
//! against the same private corosync, several rounds, and prints per message size the
//! median ratios safe/raw, async/safe and async/safe-copy of messages per second and
//! of client CPU time per delivered message, plus heap allocations per message.
//!
//! ```text
//! cargo build --release -p cpg-examples --bins
//! target/release/bench_compare                 # 1 node, then a 3-node cluster
//! target/release/bench_compare --nodes 1 --rounds 3 --duration 1
//! target/release/bench_compare --implementations safe,async   # the async table only
//! ```
//!
//! Needs root: the daemons run in network namespaces made by `cpg-testkit`, and are
//! removed at exit (also on Ctrl-C). The client runs on node 1; on a cluster the other
//! nodes' daemons take part in every message's ordering (no clients there). The
//! `bench` and `bench_raw` binaries are taken from this program's own directory.
//!
//! Each round measures every size with every implementation, back to back, in an order
//! that rotates with the round and the size, each run in a fresh process and a fresh
//! group; a first warm-up round is discarded. The ratios are taken per round (the two
//! sides measured seconds apart) and the median is printed, so drift of a noisy
//! machine affects both sides of a ratio alike. CPU time is the client
//! process's own (`getrusage(RUSAGE_SELF)`, user + system), never the daemon's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cpg_testkit::Cluster;

/// Safe vs raw vs async CPG throughput and CPU cost, on 1 node and on a 3-node cluster.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Rounds (each runs every implementation once per size), after one discarded
    /// warm-up round.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Run the benchmark clients with this SCHED_RR priority (through `chrt`), below
    /// corosync's 99, so that other work on a shared machine does not preempt them in
    /// the middle of a window; 0 runs them as ordinary processes.
    #[arg(long, default_value_t = 50)]
    rt_priority: u32,
    /// Seconds per message size and implementation.
    #[arg(long, default_value_t = 1.0)]
    duration: f64,
    /// Message sizes in bytes, comma-separated.
    #[arg(long, default_value = "64,320,1600,8000,40000,200000,1000000")]
    sizes: String,
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
    /// Which implementations to run, comma-separated: safe (`bench`), raw
    /// (`bench_raw`), async (`bench --async`), safe-copy (`bench --copy`, the blocking
    /// path owning each message as the async one does). A table needs both sides.
    #[arg(long, default_value = "safe,raw,async,safe-copy")]
    implementations: String,
    /// Instead of comparing: start a cluster of this many nodes, run `bench --verify`
    /// on node 1 and `bench --receive-only --verify` on every other node, and report
    /// (exit 1 on any loss, duplication, reordering or corruption).
    #[arg(long, value_name = "NODES")]
    verify_across: Option<usize>,
    /// With --verify-across: use the zero-copy send path on node 1.
    #[arg(long)]
    zero_copy: bool,
}

/// A benchmark client: which program, with which extra options.
struct Implementation {
    name: &'static str,
    exe: PathBuf,
    extra: &'static [&'static str],
}

/// One measurement of one size by one implementation.
#[derive(Debug, Clone, Copy)]
struct Sample {
    msgs_per_sec: f64,
    cpu_us_per_msg: f64,
    allocs_per_msg: f64,
    pushbacks: u64,
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
    let sizes = parse_list("--sizes", &args.sizes)?;
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
                "{} not found: build with `cargo build --release -p cpg-examples --bins`",
                exe.display()
            ));
        }
    }
    let mut implementations: Vec<Implementation> = Vec::new();
    for name in args.implementations.split(',').map(str::trim) {
        let (name, exe, extra): (&'static str, &Path, &'static [&'static str]) = match name {
            "safe" => ("safe", &safe, &[]),
            "raw" => ("raw", &raw, &[]),
            "async" => ("async", &safe, &["--async"]),
            "safe-copy" => ("safe-copy", &safe, &["--copy"]),
            other => return Err(format!("--implementations: unknown {other:?}")),
        };
        if implementations.iter().any(|i| i.name == name) {
            return Err(format!("--implementations: {name} twice"));
        }
        implementations.push(Implementation {
            name,
            exe: exe.to_path_buf(),
            extra,
        });
    }
    if implementations.len() < 2 {
        return Err("--implementations: at least two, to compare".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot install a signal handler: {e}"))?;
    }
    if let Some(n) = args.verify_across {
        return verify_across(args, n, &safe, &stop);
    }

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
    for &n in &node_counts {
        eprintln!("bench_compare: starting a {n}-node cluster ...");
        let cluster = Cluster::builder()
            .nodes(n)
            .start()
            .map_err(|e| format!("cannot start a {n}-node cluster: {e}"))?;
        let mut samples: BTreeMap<(&str, usize), Vec<Sample>> = BTreeMap::new();
        // Round 0 is a warm-up (the first runs on a fresh daemon are slower): discarded.
        for round in 0..=args.rounds {
            for (i, &size) in sizes.iter().enumerate() {
                // Rotate which implementation goes first, per round and per size.
                let k = implementations.len();
                for turn in 0..k {
                    let implementation = &implementations[(round + i + turn) % k];
                    let name = implementation.name;
                    if stop.load(Ordering::Relaxed) {
                        return Err("interrupted".into());
                    }
                    let group = format!("bench-cmp-{round}-{size}-{name}");
                    let sample = run_one(&cluster, implementation, args, &group, size, &stop)?;
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
                    if round > 0 {
                        samples.entry((name, size)).or_default().push(sample);
                    }
                }
            }
        }
        drop(cluster);
        all_ok &= print_tables(args, n, &sizes, &samples);
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
        (args.duration + 30.0) * parse_list("--sizes", &args.sizes)?.len() as f64 + 60.0,
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
        .args(["--verify", "--group", group, "--sizes", &args.sizes])
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
    let exe = implementation.exe.as_path();
    let mut cmd = if args.rt_priority > 0 {
        let mut cmd = cluster.node(0).command("chrt");
        cmd.args(["-r", &args.rt_priority.to_string()]).arg(exe);
        cmd
    } else {
        cluster.node(0).command(exe)
    };
    let mut child = cmd
        .args(implementation.extra)
        .args(["--json", "--group", group, "--sizes", &size.to_string()])
        .args(["--duration", &args.duration.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    // `duration`, plus the drain of the end marker, plus start and exit.
    let limit = Duration::from_secs_f64(args.duration + 90.0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > limit || stop.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} did not finish within {limit:?}", exe.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read as _;
        stdout.read_to_string(&mut out).map_err(|e| e.to_string())?;
    }
    if !status.success() {
        return Err(format!("{} failed ({status})", exe.display()));
    }
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("{} printed no result", exe.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bad output {line:?}: {e}"))?;
    let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
    if num("size") as usize != size {
        return Err(format!("{} measured the wrong size: {line}", exe.display()));
    }
    let msgs = num("msgs").max(1.0);
    Ok(Sample {
        msgs_per_sec: num("msgs_per_sec"),
        cpu_us_per_msg: num("cpu_secs") * 1e6 / msgs,
        allocs_per_msg: num("allocs") / msgs,
        pushbacks: num("pushbacks") as u64,
    })
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
}

/// Prints the tables for one cluster size (those whose two sides were run); true if
/// every size meets every target.
fn print_tables(
    args: &Args,
    nodes: usize,
    sizes: &[usize],
    samples: &BTreeMap<(&str, usize), Vec<Sample>>,
) -> bool {
    println!();
    println!(
        "## {nodes} node{} (client on node 1)",
        if nodes == 1 { "" } else { "s" }
    );
    let comparisons = [
        Comparison {
            a: "safe",
            b: "raw",
            min_throughput: args.min_throughput_ratio,
            max_cpu: Some(args.max_cpu_ratio),
            zero_allocs: true,
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
        },
        // Like for like: both own every message.
        Comparison {
            a: "async",
            b: "safe-copy",
            min_throughput: args.min_async_ratio,
            max_cpu: None,
            zero_allocs: false,
        },
    ];
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
    samples: &BTreeMap<(&str, usize), Vec<Sample>>,
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
        let flag_t = if tput >= c.min_throughput { "" } else { " ✗" };
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
    let mut targets = vec![format!("msgs/s {a}/{b} >= {}", c.min_throughput)];
    if let Some(max) = c.max_cpu {
        targets.push(format!("CPU/msg {a}/{b} <= {max}"));
    }
    if c.zero_allocs {
        targets.push(format!("{a} allocations per message 0"));
    }
    println!(
        "targets: {}: {}",
        targets.join(", "),
        if ok { "met" } else { "NOT met (✗)" }
    );
    ok
}
