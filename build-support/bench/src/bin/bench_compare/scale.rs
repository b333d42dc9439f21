//! `--scale members` and `--scale nodes`: how the cost of the plain loop, the group
//! layer and the replica layer grows.
//!
//! - **members**: on one cluster (`--cluster` nodes, 3 by default), for each number of
//!   member processes M (`--members`, 1 2 4 8 16), member k runs on node `k mod
//!   nodes`: member 0 (node 1) sends, the others receive (`--receive-only`) and verify
//!   every message; the sender waits for all M in the group (`--wait-members`) before
//!   it sends. Each configuration is measured twice per round: throughput
//!   (application messages, or operations applied, per second on the sender) and
//!   latency with one message in flight. Then a replica joiner's catch-up: M - 1
//!   members hold `--catch-up-mb` of state, and once they are in sync a joiner on the
//!   next node joins empty and reports the time from its join to
//!   [`Synced`](cpg::replica::Event::Synced) after restoring the state
//!   (`bench --layer replica --catch-up`); and the same with `--catch-up-members`
//!   members against the state size (`--state-mb`, 1 to 256 MB).
//! - **nodes**: for each cluster size (`--node-counts`, 1 to 5), one member per node,
//!   the one on node 1 sending, measured as above. A cluster the machine cannot start
//!   ends the sweep; the report says why.
//!
//! Every member of every layer verifies every message (the plain clients with
//! `--verify`): a run whose sender or receivers report loss, duplication, reordering or
//! corruption fails, is listed under the tables, and leaves its cell empty. Every
//! process has a time limit (the window per size plus a margin; killed past it) and
//! the whole sweep stops starting new measurements after `--time-limit` seconds. In
//! each round the layers run in an order that rotates with the round and the
//! configuration; one discarded plain run on each fresh cluster warms it up. The
//! figures are medians over rounds; ratios are medians of the per-round ratios.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpg_testkit::{Cluster, Node};

use super::{corosync_version, layer_args, median, parse_list, wait_child, Args};

/// What `--scale` sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Scale {
    /// Member processes on one cluster.
    Members,
    /// Nodes, one member on each.
    Nodes,
}

/// The clients compared, as `--layers` names them.
const LAYERS: [&str; 3] = ["plain", "group", "replica"];

/// Most members of one measurement (each is a process with a few threads).
const MAX_MEMBERS: usize = 64;

/// A benchmark process of a scaling run, its standard output collected by a thread.
/// Dropped while running, it is killed (by its own pid: the node's command execs it).
struct Proc {
    what: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Proc {
    fn spawn(node: &Node, exe: &Path, args: &[String], what: String) -> Result<Proc, String> {
        let mut child = node
            .command(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            })
        };
        Ok(Proc {
            what,
            child,
            lines,
            reader: Some(reader),
        })
    }

    fn has_line(&self, prefix: &str) -> bool {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|l| l.starts_with(prefix))
    }

    /// Waits until the process prints a line starting with `prefix`.
    fn wait_line(
        &mut self,
        prefix: &str,
        limit: Duration,
        stop: &AtomicBool,
    ) -> Result<(), String> {
        let started = Instant::now();
        while !self.has_line(prefix) {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("{} exited ({status}) before {prefix:?}", self.what));
            }
            if stop.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "{} printed no {prefix:?} within {limit:?}",
                    self.what
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits for the process to exit (killed past `limit`); its output if it exited
    /// with status 0.
    fn finish(&mut self, limit: Duration, stop: &AtomicBool) -> Result<Vec<String>, String> {
        let status = wait_child(&mut self.child, &self.what, limit, stop)?;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()));
        if !status.success() {
            let tail: Vec<&str> = lines
                .iter()
                .rev()
                .take(6)
                .rev()
                .map(String::as_str)
                .collect();
            return Err(format!(
                "{} failed ({status}): {}",
                self.what,
                tail.join(" / ")
            ));
        }
        Ok(lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one run of a sweep measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Throughput,
    Latency,
}

/// The sender's JSON rows of every measurement, by (layer, members or nodes, size,
/// kind, round).
type Results = BTreeMap<(&'static str, usize, usize, Kind, usize), serde_json::Value>;

/// What a sweep keeps: its results, and the runs that failed.
#[derive(Default)]
struct Sweep {
    results: Results,
    catch_ups: BTreeMap<(usize, usize, usize), serde_json::Value>,
    failed: Vec<String>,
    truncated: bool,
}

/// One measurement: `members` processes of `layer` on `cluster` (member k on node
/// `k mod nodes`), member 0 sending (or timing one message at a time), the others
/// receiving and verifying. The sender's JSON rows, by size.
#[allow(clippy::too_many_arguments)]
fn measure(
    cluster: &Cluster,
    bench: &Path,
    layer: &'static str,
    members: usize,
    kind: Kind,
    sizes: &[usize],
    args: &Args,
    group: &str,
    stop: &AtomicBool,
) -> Result<BTreeMap<usize, serde_json::Value>, String> {
    let n = cluster.nodes().len();
    let (_, extra) = layer_args(layer).ok_or("unknown layer")?;
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let limit = Duration::from_secs_f64(
        (args.duration + 30.0) * sizes.len() as f64 + 60.0 + 2.0 * members as f64,
    );
    let mut receivers = Vec::new();
    for k in 1..members {
        let mut a = extra.clone();
        a.extend(
            [
                "--receive-only",
                "--senders",
                "1",
                "--json",
                "--group",
                group,
                "--timeout",
                &limit.as_secs().to_string(),
            ]
            .map(String::from),
        );
        receivers.push(Proc::spawn(
            cluster.node(k % n),
            bench,
            &a,
            format!("{layer} receiver {k} on node {}", k % n + 1),
        )?);
    }
    let sizes_text: Vec<String> = sizes.iter().map(usize::to_string).collect();
    let mut a = extra;
    a.extend(
        [
            "--json",
            "--group",
            group,
            "--sizes",
            &sizes_text.join(","),
            "--duration",
            &args.duration.to_string(),
            "--wait-members",
            &members.to_string(),
        ]
        .map(String::from),
    );
    if kind == Kind::Latency {
        a.push("--latency".into());
    }
    let mut sender = Proc::spawn(cluster.node(0), bench, &a, format!("{layer} sender"))?;
    let out = sender.finish(limit, stop)?;
    for r in &mut receivers {
        r.finish(limit, stop)?;
    }
    let mut rows = BTreeMap::new();
    for line in out.iter().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("bad output {line:?}: {e}"))?;
        if let Some(size) = v["size"].as_u64() {
            rows.insert(size as usize, v);
        }
    }
    for size in sizes {
        if !rows.contains_key(size) {
            return Err(format!("{layer}: no row for {size} B"));
        }
    }
    Ok(rows)
}

/// One catch-up: `members - 1` replica members holding `state` bytes, in sync, then a
/// joiner on the next node; the joiner's JSON report.
fn catch_up(
    cluster: &Cluster,
    bench: &Path,
    members: usize,
    state: usize,
    group: &str,
    stop: &AtomicBool,
) -> Result<serde_json::Value, String> {
    let n = cluster.nodes().len();
    let holders = members.saturating_sub(1).max(1);
    // Making the state, the transfer at the layer's slowest allowed rate (1 MiB/s),
    // and a margin.
    let limit = Duration::from_secs(120 + 2 * (state / 1_000_000) as u64);
    let mut procs = Vec::new();
    for k in 0..holders {
        let a: Vec<String> = [
            "--layer",
            "replica",
            "--receive-only",
            "--senders",
            "1",
            "--json",
            "--state-bytes",
            &state.to_string(),
            "--wait-members",
            &holders.to_string(),
            "--group",
            group,
            "--timeout",
            &limit.as_secs().to_string(),
        ]
        .map(String::from)
        .to_vec();
        procs.push(Proc::spawn(
            cluster.node(k % n),
            bench,
            &a,
            format!("replica holder {k} on node {}", k % n + 1),
        )?);
    }
    for p in &mut procs {
        p.wait_line("# ready", limit, stop)?;
    }
    let a: Vec<String> = [
        "--layer",
        "replica",
        "--catch-up",
        "--json",
        "--wait-members",
        &(holders + 1).to_string(),
        "--group",
        group,
        "--timeout",
        &limit.as_secs().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut joiner = Proc::spawn(
        cluster.node(holders % n),
        bench,
        &a,
        format!("replica joiner on node {}", holders % n + 1),
    )?;
    let out = joiner.finish(limit, stop)?;
    for p in &mut procs {
        p.finish(limit, stop)?;
    }
    let line = out
        .iter()
        .find(|l| l.contains("replica-catch-up"))
        .ok_or("the joiner printed no report")?;
    serde_json::from_str(line).map_err(|e| format!("bad output {line:?}: {e}"))
}

/// Runs `--scale`.
pub(super) fn run(
    args: &Args,
    mode: Scale,
    sizes: &[usize],
    bench: &Path,
    stop: &AtomicBool,
) -> Result<bool, String> {
    let deadline = Instant::now() + Duration::from_secs(args.time_limit);
    println!(
        "# plain vs group vs replica against the number of {} — {} rounds × {} s per size",
        match mode {
            Scale::Members => "member processes",
            Scale::Nodes => "nodes",
        },
        args.rounds,
        args.duration
    );
    println!(
        "# corosync {} (libcpg {}), {} CPUs, clients at normal priority",
        corosync_version(),
        corosync_sys::LIBCPG_VERSION,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let mut sweep = Sweep::default();
    match mode {
        Scale::Members => {
            let counts = parse_list("--members", &args.members)?;
            if counts.iter().any(|&m| !(1..=MAX_MEMBERS).contains(&m)) {
                return Err(format!("--members: each 1..={MAX_MEMBERS}"));
            }
            let states = parse_mb("--state-mb", &args.state_mb)?;
            let catch_up_state = mb(args.catch_up_mb)?;
            if args.catch_up_members < 2 {
                return Err("--catch-up-members: at least 2 (holders and the joiner)".into());
            }
            eprintln!(
                "bench_compare: starting a {}-node cluster ...",
                args.cluster
            );
            let cluster = Cluster::builder()
                .nodes(args.cluster)
                .start()
                .map_err(|e| format!("cannot start a {}-node cluster: {e}", args.cluster))?;
            sweep_layers(
                &mut sweep,
                &cluster,
                bench,
                &counts,
                |m| m,
                sizes,
                args,
                deadline,
                stop,
            );
            // The catch-up of a joiner against the number of members, then against the
            // size of the state.
            for round in 1..=args.rounds {
                for &m in counts.iter().filter(|&&m| m >= 2) {
                    catch_up_once(
                        &mut sweep,
                        &cluster,
                        bench,
                        m,
                        catch_up_state,
                        round,
                        args,
                        deadline,
                        stop,
                    );
                }
                for &state in &states {
                    catch_up_once(
                        &mut sweep,
                        &cluster,
                        bench,
                        args.catch_up_members,
                        state,
                        round,
                        args,
                        deadline,
                        stop,
                    );
                }
            }
            drop(cluster);
            print_layer_tables(&sweep, "members", &counts, sizes, args.cluster);
            print_catch_up_tables(&sweep, &counts, catch_up_state, &states, args);
        }
        Scale::Nodes => {
            let counts = parse_list("--node-counts", &args.node_counts)?;
            let mut measured = Vec::new();
            for &n in &counts {
                if Instant::now() > deadline {
                    sweep.truncated = true;
                    break;
                }
                eprintln!("bench_compare: starting a {n}-node cluster ...");
                let cluster = match Cluster::builder().nodes(n).start() {
                    Ok(c) => c,
                    Err(e) => {
                        println!("\n{n} nodes: the cluster did not start on this machine: {e}");
                        sweep
                            .failed
                            .push(format!("{n} nodes: cannot start the cluster: {e}"));
                        break;
                    }
                };
                println!(
                    "# {n} nodes: formed in {:.1} s",
                    cluster.startup_time().as_secs_f64()
                );
                sweep_layers(
                    &mut sweep,
                    &cluster,
                    bench,
                    &[n],
                    |m| m,
                    sizes,
                    args,
                    deadline,
                    stop,
                );
                measured.push(n);
            }
            print_layer_tables(&sweep, "nodes", &measured, sizes, 0);
        }
    }
    if sweep.truncated {
        println!(
            "\n**time limit** (--time-limit {} s) reached: the sweep stopped early; empty cells were not measured.",
            args.time_limit
        );
    }
    if !sweep.failed.is_empty() {
        println!("\nruns that failed ({}):", sweep.failed.len());
        for f in &sweep.failed {
            println!("- {f}");
        }
    }
    Ok(sweep.failed.is_empty() && !sweep.truncated)
}

/// Parses a list of megabyte counts into bytes.
fn parse_mb(what: &str, text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<f64>()
                .map_err(|_| format!("{what}: {s:?} is not a number"))
                .and_then(mb)
        })
        .collect()
}

/// `x` MB (10^6 bytes) in bytes, within what a member accepts.
fn mb(x: f64) -> Result<usize, String> {
    if !(0.0..=1000.0).contains(&x) {
        return Err(format!("{x} MB: states of 0 to 1000 MB"));
    }
    Ok((x * 1e6) as usize)
}

/// Measures plain, group and replica, throughput and latency, for each member count
/// in `counts` (the member count of a configuration is `members(count)`), in rounds
/// after one discarded plain run.
#[allow(clippy::too_many_arguments)]
fn sweep_layers(
    sweep: &mut Sweep,
    cluster: &Cluster,
    bench: &Path,
    counts: &[usize],
    members: impl Fn(usize) -> usize,
    sizes: &[usize],
    args: &Args,
    deadline: Instant,
    stop: &AtomicBool,
) {
    let n = cluster.nodes().len();
    if let Err(e) = measure(
        cluster,
        bench,
        "plain",
        1,
        Kind::Throughput,
        sizes,
        args,
        "bench-scale-warm-up",
        stop,
    ) {
        eprintln!("bench_compare: warm-up: {e}");
    }
    for round in 1..=args.rounds {
        for (xi, &x) in counts.iter().enumerate() {
            for turn in 0..LAYERS.len() {
                let layer = LAYERS[(round + xi + turn) % LAYERS.len()];
                for kind in [Kind::Throughput, Kind::Latency] {
                    if stop.load(Ordering::Relaxed) {
                        sweep.failed.push("interrupted".into());
                        return;
                    }
                    if Instant::now() > deadline {
                        sweep.truncated = true;
                        return;
                    }
                    let m = members(x);
                    let group = format!("bench-scale-{n}-{m}-{layer}-{kind:?}-{round}");
                    let started = Instant::now();
                    match measure(cluster, bench, layer, m, kind, sizes, args, &group, stop) {
                        Ok(rows) => {
                            for (size, v) in rows {
                                eprintln!(
                                    "bench_compare: {n} node(s), {m} members, round {round}/{}, {size} B {layer} {kind:?}: {} ({:.1} s)",
                                    args.rounds,
                                    summary(&v),
                                    started.elapsed().as_secs_f64()
                                );
                                sweep.results.insert((layer, x, size, kind, round), v);
                            }
                        }
                        Err(e) => {
                            eprintln!(
                                "bench_compare: {n} node(s), {m} members, {layer} {kind:?}: {e}"
                            );
                            sweep.failed.push(format!(
                                "{n} node(s), {m} members, round {round}, {layer} {kind:?}: {e}"
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// One catch-up measurement, recorded (or its failure).
#[allow(clippy::too_many_arguments)]
fn catch_up_once(
    sweep: &mut Sweep,
    cluster: &Cluster,
    bench: &Path,
    members: usize,
    state: usize,
    round: usize,
    args: &Args,
    deadline: Instant,
    stop: &AtomicBool,
) {
    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
        sweep.truncated |= !stop.load(Ordering::Relaxed);
        return;
    }
    let group = format!("bench-catch-up-{members}-{state}-{round}");
    match catch_up(cluster, bench, members, state, &group, stop) {
        Ok(v) => {
            eprintln!(
                "bench_compare: catch-up, {members} members, {state} bytes, round {round}/{}: in sync {:.3} s after the join began ({:.1} MB/s)",
                args.rounds,
                v["synced_secs"].as_f64().unwrap_or(f64::NAN),
                v["mb_per_sec"].as_f64().unwrap_or(f64::NAN),
            );
            sweep.catch_ups.insert((members, state, round), v);
        }
        Err(e) => {
            eprintln!("bench_compare: catch-up, {members} members, {state} bytes: {e}");
            sweep.failed.push(format!(
                "catch-up, {members} members, {state} bytes, round {round}: {e}"
            ));
        }
    }
}

/// A row's headline, for the progress lines.
fn summary(v: &serde_json::Value) -> String {
    match (v["msgs_per_sec"].as_f64(), v["p50_us"].as_f64()) {
        (Some(rate), _) => format!("{rate:.0} msgs/s"),
        (None, Some(p50)) => format!("p50 {p50:.1} µs"),
        _ => "?".into(),
    }
}

/// The median over rounds of `f` of one configuration's rows; NaN if none.
fn med(
    results: &Results,
    key: (&'static str, usize, usize, Kind),
    f: impl Fn(&serde_json::Value) -> Option<f64>,
) -> f64 {
    let (layer, x, size, kind) = key;
    median(
        results
            .range((layer, x, size, kind, 0)..=(layer, x, size, kind, usize::MAX))
            .filter_map(|(_, v)| f(v))
            .collect(),
    )
}

/// The median of the per-round ratios of `f` between two configurations.
fn ratio(
    results: &Results,
    a: (&'static str, usize, usize, Kind),
    b: (&'static str, usize, usize, Kind),
    f: impl Fn(&serde_json::Value) -> Option<f64>,
) -> f64 {
    let per_round = results
        .range((a.0, a.1, a.2, a.3, 0)..=(a.0, a.1, a.2, a.3, usize::MAX))
        .filter_map(|((.., round), va)| {
            let vb = results.get(&(b.0, b.1, b.2, b.3, *round))?;
            Some(f(va)? / f(vb)?)
        })
        .collect();
    median(per_round)
}

fn rate(v: &serde_json::Value) -> Option<f64> {
    v["msgs_per_sec"].as_f64()
}

fn allocs(v: &serde_json::Value) -> Option<f64> {
    Some(v["allocs"].as_f64()? / v["msgs"].as_f64()?.max(1.0))
}

fn cpu(v: &serde_json::Value) -> Option<f64> {
    Some(v["cpu_secs"].as_f64()? * 1e6 / v["msgs"].as_f64()?.max(1.0))
}

/// Prints a cell, or `–` for a configuration not measured.
fn cell(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "–".into()
    }
}

/// The throughput and latency tables against members or nodes, per size.
fn print_layer_tables(
    sweep: &Sweep,
    what: &str,
    counts: &[usize],
    sizes: &[usize],
    cluster: usize,
) {
    let r = &sweep.results;
    let place = if what == "members" {
        format!("member k on node k mod {cluster}, member 0 (node 1) sending, the others receiving")
    } else {
        "one member per node, the one on node 1 sending".into()
    };
    for &size in sizes {
        println!();
        println!("## {size} B: throughput against {what} ({place})");
        println!();
        println!("| {what} | plain msgs/s | group msgs/s | replica ops/s | group/plain | replica/plain | plain CPU µs/msg | group CPU µs/msg | replica CPU µs/msg | group allocs/msg | replica allocs/msg |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &x in counts {
            let k = |layer| (layer, x, size, Kind::Throughput);
            println!(
                "| {x} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(med(r, k("plain"), rate), 0),
                cell(med(r, k("group"), rate), 0),
                cell(med(r, k("replica"), rate), 0),
                cell(ratio(r, k("group"), k("plain"), rate), 3),
                cell(ratio(r, k("replica"), k("plain"), rate), 3),
                cell(med(r, k("plain"), cpu), 2),
                cell(med(r, k("group"), cpu), 2),
                cell(med(r, k("replica"), cpu), 2),
                cell(med(r, k("group"), allocs), 2),
                cell(med(r, k("replica"), allocs), 2),
            );
        }
        println!();
        println!("## {size} B: latency with one message in flight against {what}");
        println!();
        println!("| {what} | plain p50 µs | group p50 µs | replica p50 µs | plain p99 µs | group p99 µs | replica p99 µs | group/plain p50 | replica/plain p50 |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let p50 = |v: &serde_json::Value| v["p50_us"].as_f64();
        let p99 = |v: &serde_json::Value| v["p99_us"].as_f64();
        for &x in counts {
            let k = |layer| (layer, x, size, Kind::Latency);
            println!(
                "| {x} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(med(r, k("plain"), p50), 1),
                cell(med(r, k("group"), p50), 1),
                cell(med(r, k("replica"), p50), 1),
                cell(med(r, k("plain"), p99), 1),
                cell(med(r, k("group"), p99), 1),
                cell(med(r, k("replica"), p99), 1),
                cell(ratio(r, k("group"), k("plain"), p50), 3),
                cell(ratio(r, k("replica"), k("plain"), p50), 3),
            );
        }
    }
}

/// The catch-up tables: against members, and against the state size.
fn print_catch_up_tables(
    sweep: &Sweep,
    counts: &[usize],
    catch_up_state: usize,
    states: &[usize],
    args: &Args,
) {
    let c = &sweep.catch_ups;
    let row = |members: usize, state: usize| {
        let runs: Vec<&serde_json::Value> = c
            .range((members, state, 0)..=(members, state, usize::MAX))
            .map(|(_, v)| v)
            .collect();
        let col = |k: &str| median(runs.iter().filter_map(|v| v[k].as_f64()).collect());
        let synced: Vec<f64> = runs
            .iter()
            .filter_map(|v| v["synced_secs"].as_f64())
            .collect();
        let lo = synced.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = synced.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!(
            "| {} | {} | {} | {}–{} | {} | {} |",
            cell(col("join_secs"), 3),
            cell(col("round_secs"), 3),
            cell(col("synced_secs"), 3),
            cell(lo, 3),
            cell(hi, 3),
            cell(col("mb_per_sec"), 1),
            runs.len()
        )
    };
    let header = "| joined s | join → in sync s | from the call s | range s | MB/s | runs |";
    println!();
    println!(
        "## replica catch-up against members ({:.0} MB of state; M - 1 members in sync, then a joiner)",
        catch_up_state as f64 / 1e6
    );
    println!();
    println!("| members {header}");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &m in counts.iter().filter(|&&m| m >= 2) {
        println!("| {m} {}", row(m, catch_up_state));
    }
    if !states.is_empty() {
        println!();
        println!(
            "## replica catch-up against the state size ({} members: {} holding it, then a joiner)",
            args.catch_up_members,
            args.catch_up_members - 1
        );
        println!();
        println!("| state MB {header}");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for &s in states {
            println!(
                "| {} {}",
                cell(s as f64 / 1e6, 0),
                row(args.catch_up_members, s)
            );
        }
    }
    println!();
    println!(
        "*joined*: from the call that starts the replica to its return (connected and joined); *join → in sync*: from there to `Synced` after `Restored` (the round: start, summaries, the state's transfer and restore); *from the call*: both; *MB/s*: the state's size over *join → in sync*."
    );
}
