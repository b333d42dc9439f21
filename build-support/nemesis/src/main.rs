//! `nemesis`: random faults on a private corosync cluster, and a checker of CPG's
//! virtual-synchrony guarantees, in the spirit of Jepsen.
//!
//! It starts a 3-node cluster (`--nodes`) in network namespaces (`cpg-testkit`) and
//! several client processes per node (`--clients`), half of them on the blocking
//! `cpg::Handle`, half on the tokio `cpg::AsyncHandle`. Every client joins one group,
//! sends sequence-numbered, checksummed messages (`--rate` per second) and records its
//! history: every view, totem change, delivery and send, and each send's result.
//! Beside them, in CPG groups of their own, run clients of the group layer
//! (`--group-clients` per node, `cpg::group::Group`: send queue, confirmed send,
//! reconnect; see `group_client.rs`) and of the replica layer (`--replica-clients` per
//! node, `cpg::replica::Replica` on a map of counters; see `replica_client.rs`), checked
//! by `group_check.rs`. They survive daemon kills by reconnecting.
//!
//! Meanwhile a seeded schedule (`--seed`) injects faults one after another, each
//! logged with its time: daemon SIGKILL and restart, daemon SIGSTOP/SIGCONT shorter and
//! longer than the token timeout, a node partitioned off and healed, one-way loss
//! between two nodes and random loss on a link (nftables rules inside the namespaces),
//! client SIGKILL and restart, client pause. After each fault it waits until the
//! cluster has settled (all nodes see each other, every client is in one view). It
//! stops once at least `--faults` faults were injected and `--duration` seconds have
//! passed; then it heals everything, waits for one view with every live client, has
//! every client drain and close, and checks the histories (see `checker.rs` for the
//! definitions).
//!
//! The last line is `nemesis: N fault events, M messages, K views checked, V
//! violations`; the exit status is 1 if V > 0 or the run failed, 130 if interrupted.
//! Everything it made (namespaces, daemons, nftables rules, which live in the
//! namespaces, and files) is removed at the end, also on Ctrl-C; `--keep DIR` copies
//! the histories, the daemons' logs and the fault log out first. `--check DIR` checks
//! kept histories again; `--self-test` runs the checker on histories with planted
//! defects.
//!
//! Virtual-synchrony differences that the daemons cause (rings the clients were never
//! told about; a failed node's messages that corosync's ring recovery lost for one
//! survivor; see `checker.rs` and this package's README) are printed as `ANOMALY` with
//! their evidence and not counted, unless `--strict`. `--daemon-debug` keeps totem
//! trace logs, `--schedule` replays a fixed fault sequence.
//!
//! Needs root (network namespaces).

mod checker;
mod client;
mod faults;
mod group_check;
mod group_client;
mod history;
mod pool;
mod replica_client;
mod rng;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use cpg_testkit::Cluster;

use crate::faults::Fault;
use crate::history::{Api, History};
use crate::pool::{Pool, Workload};

/// How long the cluster may take to settle after a fault (members, client views).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long clients of a killed daemon may take to notice and exit.
const DOOMED_EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the final stop (drain and close) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the run goes on at most past `--duration` or the time `--faults` needs:
/// a bound on the fault loop whatever happens.
const HARD_LIMIT_FACTOR: u32 = 4;
/// Group every client joins.
const GROUP: &str = "nemesis";

/// Random faults on a private corosync cluster (root), and a checker of CPG's
/// virtual-synchrony guarantees over what the clients recorded.
#[derive(Debug, Parser)]
#[command(version, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Client processes per node (odd-numbered ones use the async API).
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Clients per node that use the group layer (`cpg::group::Group`: send queue,
    /// confirmed send, reconnect), in a CPG group of their own.
    #[arg(long, default_value_t = 1)]
    group_clients: usize,
    /// Clients per node that use the replica layer (`cpg::replica::Replica`, a map of
    /// counters), in a CPG group of their own; all must end with the same state.
    #[arg(long, default_value_t = 1)]
    replica_clients: usize,
    /// Seed of the fault schedule and message sizes (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Inject at least this many faults.
    #[arg(long, default_value_t = 30)]
    faults: u32,
    /// Keep injecting faults for at least this many seconds.
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// Messages per second per client.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Group-layer and replica clients send their messages (operations) in bursts of
    /// this many, at `--rate` on average: the group layer's send queue then holds
    /// several at once and packs them into batches (`cpg::group::Config::batch_bytes`),
    /// so that the checks see batched messages too. 1: one at a time.
    #[arg(long, default_value_t = 8)]
    burst: u32,
    /// Largest message body in bytes (sizes are random up to it).
    #[arg(long, default_value_t = 2000)]
    max_size: usize,
    /// Totem token timeout of the cluster, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    token_ms: u32,
    /// Run the cluster without a quorum provider (by default it runs votequorum, one
    /// vote per node, and the replica clients' writes are gated on its quorum).
    #[arg(long)]
    no_quorum: bool,
    /// Copy the histories and the fault log to this directory before cleaning up.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Check the histories kept in DIR (by --keep) instead of running.
    #[arg(long, value_name = "DIR")]
    check: Option<PathBuf>,
    /// Run the checker on histories with planted defects (needs no root).
    #[arg(long)]
    self_test: bool,
    /// Draw only these fault kinds (comma-separated): kill-daemon, pause-daemon,
    /// partition, one-way, lossy, kill-client, pause-client. Default: all.
    #[arg(long, value_name = "KINDS", conflicts_with = "schedule")]
    only: Option<String>,
    /// Inject these faults, in this order, over and over (instead of drawing them from
    /// the seed): comma-separated steps such as `pause-daemon:1:540` or
    /// `kill-daemon:2:633@700` (`@GAP` ms: right after the previous step, without
    /// waiting for the cluster to settle). See `faults::SCHEDULE_SYNTAX`.
    #[arg(long, value_name = "STEPS")]
    schedule: Option<String>,
    /// Have the daemons log at debug level with millisecond timestamps (totem's
    /// membership and recovery steps), for the logs `--keep` copies.
    #[arg(long)]
    daemon_debug: bool,
    /// Count the differences that the daemons cause (unannounced membership changes,
    /// messages lost in a ring recovery; reported as ANOMALY) as violations too.
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// One workload client (started by the coordinator inside a node's namespace).
    #[command(hide = true)]
    Client {
        #[arg(long)]
        history: PathBuf,
        #[arg(long)]
        group: String,
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 1)]
        burst: u32,
        #[arg(long)]
        api: String,
        #[arg(long)]
        inc: u32,
        #[arg(long)]
        max_size: usize,
        #[arg(long)]
        seed: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Sub::Client {
            history,
            group,
            rate,
            burst,
            api,
            inc,
            max_size,
            seed,
        }) => {
            let Some(api) = Api::parse(&api) else {
                eprintln!("nemesis client: unknown api {api:?}");
                std::process::exit(client::EXIT_FAILED);
            };
            client::run(client::ClientConfig {
                history,
                group,
                rate,
                burst: burst.max(1),
                api,
                inc,
                max_size,
                seed,
            })
        }
        None if cli.self_test => self_test(),
        None => match &cli.check {
            Some(dir) => check_dir(dir, cli.strict),
            None => coordinate(&cli),
        },
    };
    std::process::exit(code);
}

/// Runs the checker on a clean synthetic history and on each planted defect.
fn self_test() -> i32 {
    let mut failed = 0;
    let mut histories = checker::synthetic::clean();
    histories.extend(group_check::synthetic::clean());
    histories.extend(group_check::synthetic_replicas(
        group_check::ReplicaPlant::Nothing,
    ));
    let clean = checker::check(&histories);
    if clean.violations.is_empty() {
        println!(
            "self-test: clean history ({} messages, {} views): no violation: ok",
            clean.messages, clean.views
        );
    } else {
        failed += 1;
        println!("self-test: clean history: FALSE ALARM:");
        for v in &clean.violations {
            println!("  {v}");
        }
    }
    let group_defects =
        group_check::synthetic::defects()
            .into_iter()
            .map(|(name, expected, mut h)| {
                h.extend(checker::synthetic::clean());
                (name, expected, h)
            });
    for (name, expected, histories) in checker::synthetic::defects()
        .into_iter()
        .chain(group_defects)
    {
        let report = checker::check(&histories);
        match report.violations.iter().find(|v| v.check == expected) {
            Some(v) => println!("self-test: {name}: detected: {v}"),
            None => {
                failed += 1;
                println!(
                    "self-test: {name}: NOT DETECTED as {expected} (found: {:?})",
                    report.violations
                );
            }
        }
    }
    // Messages of a failed node lost in corosync's recovery: an anomaly of the daemon
    // when every client of a node lacks them, a violation when one client does.
    let mut daemon = checker::synthetic::recovery_loss(false);
    daemon.extend(group_check::synthetic::recovery_loss());
    let r = checker::check(&daemon);
    let one = checker::check(&checker::synthetic::recovery_loss(true));
    if r.violations.is_empty()
        && !r.anomalies.is_empty()
        && r.anomalies
            .iter()
            .all(|a| a.check == checker::Check::LostInRecovery)
        && one
            .violations
            .iter()
            .any(|v| v.check == checker::Check::VirtualSynchrony)
    {
        println!(
            "self-test: messages lost in recovery: {} anomalies of the daemon; at one client \
             of a node: detected: {}",
            r.anomalies.len(),
            one.violations[0]
        );
    } else {
        failed += 1;
        println!(
            "self-test: messages lost in recovery: MISCLASSIFIED (violations {:?}, anomalies \
             {:?}; at one client: {:?})",
            r.violations, r.anomalies, one.violations
        );
    }
    // A split across rings nobody was told about: an anomaly of the daemon for the
    // plain and the group clients alike; the same group difference with two common
    // messages in other orders is a violation.
    let mut split = checker::synthetic::hidden_split(24);
    split.extend(group_check::synthetic::hidden_split(false));
    let r = checker::check(&split);
    let mut swapped = checker::synthetic::hidden_split(24);
    swapped.extend(group_check::synthetic::hidden_split(true));
    let s = checker::check(&swapped);
    if r.violations.is_empty()
        && r.anomalies.len() == 2
        && r.anomalies
            .iter()
            .all(|a| a.check == checker::Check::UnannouncedMembership)
        && s.violations
            .iter()
            .any(|v| v.check == checker::Check::AgreedPosition)
    {
        println!(
            "self-test: a split across unannounced rings: {} anomalies of the daemon; with \
             two messages in other orders: detected: {}",
            r.anomalies.len(),
            s.violations
                .iter()
                .find(|v| v.check == checker::Check::AgreedPosition)
                .expect("checked above")
        );
    } else {
        failed += 1;
        println!(
            "self-test: a split across unannounced rings: MISCLASSIFIED (violations {:?}, \
             anomalies {:?}; swapped: {:?})",
            r.violations, r.anomalies, s.violations
        );
    }
    println!(
        "self-test: {}",
        if failed == 0 {
            "every planted defect detected, the clean history passes"
        } else {
            "FAILED"
        }
    );
    i32::from(failed > 0)
}

/// Reads every `client-*.jsonl` in `dir`.
fn read_histories(dir: &Path) -> Result<Vec<History>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("client-") && n.ends_with(".jsonl"))
        })
        .collect();
    paths.sort();
    paths.iter().map(|p| History::read(p)).collect()
}

/// Violations counted in the final line: the checker's, the run's, and with
/// `--strict` the anomalies.
fn counted(report: &checker::Report, failures: usize, strict: bool) -> usize {
    report.violations.len() + failures + if strict { report.anomalies.len() } else { 0 }
}

fn check_dir(dir: &Path, strict: bool) -> i32 {
    match read_histories(dir) {
        Ok(h) => {
            let report = checker::check(&h);
            print_report(&report, &[]);
            let violations = counted(&report, 0, strict);
            println!(
                "nemesis: {} histories, {} deliveries, {} client pairs compared across a view \
                 change, {} anomalies of the daemon",
                report.clients,
                report.deliveries,
                report.transitions,
                report.anomalies.len()
            );
            println!(
                "nemesis: {} messages, {} views checked, {violations} violations",
                report.messages, report.views
            );
            i32::from(violations > 0)
        }
        Err(e) => {
            eprintln!("nemesis: {e}");
            2
        }
    }
}

/// Most violations printed in full (all are counted).
const PRINT_LIMIT: usize = 50;

fn print_report(report: &checker::Report, failures: &[String]) {
    for n in &report.notes {
        println!("note: {n}");
    }
    for f in failures.iter().take(PRINT_LIMIT) {
        println!("VIOLATION [run] {f}");
    }
    for v in report.violations.iter().take(PRINT_LIMIT) {
        println!("VIOLATION {v}");
    }
    for a in report.anomalies.iter().take(PRINT_LIMIT) {
        println!("ANOMALY {a}");
    }
    let total = report.violations.len() + failures.len();
    if total > 2 * PRINT_LIMIT {
        println!("... {} more not shown", total - 2 * PRINT_LIMIT);
    }
}

/// The fault log and the run's start, printed as it goes.
struct Log {
    start: Instant,
    lines: Vec<String>,
}

impl Log {
    fn say(&mut self, what: &str) {
        let line = format!(
            "[+{:7.1}s t={}] {what}",
            self.start.elapsed().as_secs_f64(),
            history::now_ms()
        );
        println!("{line}");
        self.lines.push(line);
    }
}

/// Sleeps `d` in short slices; false if interrupted.
fn sleep(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    !stop.load(Ordering::Relaxed)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a harness call that panics on failure, turning the panic into an error.
fn harness(what: &str, f: impl FnOnce()) -> Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_default();
        format!("{what}: {msg}")
    })
}

fn coordinate(cli: &Cli) -> i32 {
    if !is_root() {
        eprintln!("nemesis: needs root (it starts corosync daemons in network namespaces)");
        return 2;
    }
    if cli.nodes == 0 || cli.clients == 0 || cli.rate <= 0.0 {
        eprintln!("nemesis: --nodes, --clients and --rate must be positive");
        return 2;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("nemesis: cannot install a signal handler: {e}");
            return 2;
        }
    }
    let allowed = match &cli.only {
        None => [true; 7],
        Some(list) => match faults::parse_kinds(list) {
            Some(mask) => mask,
            None => {
                eprintln!(
                    "nemesis: --only {list:?}: expected some of {}",
                    faults::KINDS.join(",")
                );
                return 2;
            }
        },
    };
    let seed = cli
        .seed
        .unwrap_or_else(|| history::now_ms() ^ u64::from(std::process::id()));
    let mut log = Log {
        start: Instant::now(),
        lines: Vec::new(),
    };
    log.say(&format!(
        "nemesis: seed {seed}, {} nodes, {} clients per node, at least {} faults and {} s, \
         {} group-layer and {} replica clients per node, {} msgs/s per client, token {} ms \
         (reproduce: nemesis --seed {seed} --nodes {} --clients {} --group-clients {} \
         --replica-clients {} --faults {} --duration {} --rate {} --burst {} --max-size {} --token-ms {}{}{}{})",
        cli.nodes,
        cli.clients,
        cli.faults,
        cli.duration,
        cli.group_clients,
        cli.replica_clients,
        cli.rate,
        cli.token_ms,
        cli.nodes,
        cli.clients,
        cli.group_clients,
        cli.replica_clients,
        cli.faults,
        cli.duration,
        cli.rate,
        cli.burst,
        cli.max_size,
        cli.token_ms,
        if cli.no_quorum { " --no-quorum" } else { "" },
        cli.only
            .as_ref()
            .map_or_else(String::new, |o| format!(" --only {o}")),
        cli.schedule
            .as_ref()
            .map_or_else(String::new, |s| format!(" --schedule '{s}'"))
    ));
    let mut builder = Cluster::builder()
        .nodes(cli.nodes)
        .token_ms(cli.token_ms)
        .daemon_debug(cli.daemon_debug);
    if !cli.no_quorum {
        builder = builder.quorum(cpg_testkit::Quorum::votequorum());
    }
    let cluster = match builder.start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nemesis: cannot start the cluster:\n{e}");
            println!(
                "nemesis: 0 fault events, 0 messages, 0 views checked, 0 violations (run failed)"
            );
            return 1;
        }
    };
    log.say(&format!(
        "cluster of {} nodes up in {:.1} s",
        cli.nodes,
        cluster.startup_time().as_secs_f64()
    ));
    let dir = cluster.dir().join("nemesis");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("nemesis: {}: {e}", dir.display());
        return 2;
    }
    let work = Workload {
        dir: dir.clone(),
        group: GROUP.into(),
        rate: cli.rate,
        burst: cli.burst.max(1),
        max_size: cli.max_size,
        seed,
    };
    let mut pool = match Pool::new(
        work,
        cli.nodes,
        cli.clients,
        cli.group_clients,
        cli.replica_clients,
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("nemesis: {e}");
            return 2;
        }
    };
    let outcome = drive(cli, seed, &allowed, &cluster, &mut pool, &mut log, &stop);
    drop(pool);
    let interrupted = stop.load(Ordering::Relaxed);
    let (events, failures) = match outcome {
        Ok(x) => x,
        Err((events, e)) => (events, vec![format!("the run failed: {e}")]),
    };
    let histories = read_histories(&dir);
    let report = match &histories {
        Ok(h) => checker::check(h),
        Err(e) => {
            eprintln!("nemesis: cannot read the histories: {e}");
            checker::Report::default()
        }
    };
    if let Some(keep) = &cli.keep {
        if let Err(e) = keep_files(&dir, cluster.dir(), keep, &log.lines) {
            eprintln!("nemesis: --keep: {e}");
        } else {
            println!(
                "nemesis: histories and fault log kept in {}",
                keep.display()
            );
        }
    }
    drop(cluster);
    print_report(&report, &failures);
    println!(
        "nemesis: {} client incarnations, {} deliveries, {} client pairs compared across a \
         view change, {} anomalies of the daemon{}",
        report.clients,
        report.deliveries,
        report.transitions,
        report.anomalies.len(),
        if report.anomalies.is_empty() || cli.strict {
            ""
        } else {
            " (not counted as violations; --strict counts them)"
        }
    );
    let violations = counted(&report, failures.len(), cli.strict);
    println!(
        "nemesis: {events} fault events, {} messages, {} views checked, {violations} violations",
        report.messages, report.views
    );
    if interrupted {
        eprintln!("nemesis: interrupted");
        return 130;
    }
    i32::from(violations > 0 || histories.is_err())
}

/// Copies the histories, the daemons' logs (`corosync-nID.log`) and the fault log.
fn keep_files(dir: &Path, cluster_dir: &Path, keep: &Path, log: &[String]) -> Result<(), String> {
    std::fs::create_dir_all(keep).map_err(|e| format!("{}: {e}", keep.display()))?;
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        std::fs::copy(entry.path(), keep.join(entry.file_name())).map_err(|e| e.to_string())?;
    }
    for entry in std::fs::read_dir(cluster_dir)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let node = entry.file_name().to_string_lossy().into_owned();
        let daemon_log = entry.path().join("corosync.log");
        if node.starts_with('n') && daemon_log.is_file() {
            std::fs::copy(&daemon_log, keep.join(format!("corosync-{node}.log")))
                .map_err(|e| e.to_string())?;
        }
    }
    std::fs::write(keep.join("faults.log"), log.join("\n") + "\n").map_err(|e| e.to_string())
}

/// Starts the clients, runs the fault schedule, heals, stops the clients. Returns the
/// number of faults injected and the run-level failures (not the checker's).
fn drive(
    cli: &Cli,
    seed: u64,
    allowed: &[bool; 7],
    cluster: &Cluster,
    pool: &mut Pool,
    log: &mut Log,
    stop: &AtomicBool,
) -> Result<(u32, Vec<String>), (u32, String)> {
    let mut failures = Vec::new();
    let schedule = match &cli.schedule {
        Some(spec) => {
            Some(faults::parse_schedule(spec, cli.nodes, pool.slots.len()).map_err(|e| (0, e))?)
        }
        None => None,
    };
    for s in 0..pool.slots.len() {
        pool.spawn(cluster, s).map_err(|e| (0, e))?;
    }
    if !wait_one_view(pool, SETTLE_TIMEOUT, stop) {
        return Err((0, "the clients did not form one view at the start".into()));
    }
    log.say(&format!(
        "{} clients joined, all in one view",
        pool.live_members().len()
    ));
    let mut rng = rng::Rng::new(seed);
    let all: Vec<u32> = (1..=cli.nodes as u32).collect();
    let duration = Duration::from_secs(cli.duration);
    // Generous: about 20 s per fault at most, and past --duration.
    let hard = duration.max(Duration::from_secs(20) * cli.faults) * HARD_LIMIT_FACTOR
        + Duration::from_secs(120);
    let began = Instant::now();
    let mut events = 0u32;
    let more = |events: u32| events < cli.faults || began.elapsed() < duration;
    while more(events) && began.elapsed() < hard {
        if stop.load(Ordering::Relaxed) {
            return Err((events, "interrupted".into()));
        }
        let fault = match &schedule {
            Some(steps) => steps[events as usize % steps.len()].fault.clone(),
            None => faults::next(
                &mut rng,
                cli.nodes,
                pool.slots.len(),
                u64::from(cli.token_ms),
                allowed,
            ),
        };
        events += 1;
        log.say(&format!("fault {events}: {fault}"));
        inject(&fault, cluster, pool, log, stop).map_err(|e| (events, e))?;
        if stop.load(Ordering::Relaxed) {
            return Err((events, "interrupted".into()));
        }
        // A scripted step that follows this one at once: no settling in between.
        let chained = schedule
            .as_ref()
            .and_then(|steps| steps[events as usize % steps.len()].gap)
            .filter(|_| more(events));
        if let Some(gap) = chained {
            if !sleep(gap, stop) {
                return Err((events, "interrupted".into()));
            }
            continue;
        }
        settle(cluster, pool, &all, log, stop, &mut failures).map_err(|e| (events, e))?;
        // Normal traffic between faults.
        let quiet = Duration::from_millis(rng.range(500, 2000));
        if !sleep(quiet, stop) {
            return Err((events, "interrupted".into()));
        }
    }
    log.say(&format!("{events} faults injected; healing everything"));
    for i in 0..cli.nodes {
        cluster.resume_daemon(i);
        let _ = harness("heal", || cluster.heal(i));
        let _ = harness("clear nftables", || cluster.clear_net_faults(i));
        if cluster.node(i).daemon_pid().is_none() {
            harness("restart", || cluster.restart_daemon(i)).map_err(|e| (events, e))?;
        }
    }
    pool.resume_all();
    settle(cluster, pool, &all, log, stop, &mut failures).map_err(|e| (events, e))?;
    if !pool.one_view() {
        failures.push(format!(
            "liveness: the live clients {:?} were not in one view within {SETTLE_TIMEOUT:?} \
             after everything was healed",
            pool.live_members()
        ));
    }
    log.say(&format!(
        "stopping {} clients (drain, close)",
        pool.live_members().len()
    ));
    for (inc, how) in pool.stop_all(STOP_TIMEOUT) {
        failures.push(format!(
            "client inc {inc} did not stop cleanly ({how}); stderr: {}",
            pool.stderr_tail(inc)
        ));
    }
    log.say(&format!(
        "{} client incarnations in all; checking the histories",
        pool.incarnations()
    ));
    Ok((events, failures))
}

/// Waits until every running client reports one view with all of them.
fn wait_one_view(pool: &mut Pool, timeout: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        if pool.one_view() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.one_view()
}

fn inject(
    fault: &Fault,
    cluster: &Cluster,
    pool: &mut Pool,
    log: &mut Log,
    stop: &AtomicBool,
) -> Result<(), String> {
    match *fault {
        Fault::KillDaemon { node, down } => {
            pool.doom_node(node);
            cluster.kill_daemon(node);
            sleep(down, stop);
            harness("restart", || cluster.restart_daemon(node))?;
            log.say(&format!("  node {}'s daemon restarted", node + 1));
        }
        Fault::PauseDaemon { node, pause } => {
            cluster.pause_daemon(node);
            sleep(pause, stop);
            cluster.resume_daemon(node);
            log.say(&format!("  node {}'s daemon resumed", node + 1));
        }
        Fault::Partition { node, hold } => {
            harness("partition", || cluster.partition(node))?;
            sleep(hold, stop);
            harness("heal", || cluster.heal(node))?;
            log.say(&format!("  node {} healed", node + 1));
        }
        Fault::OneWay { on, from, hold } => {
            harness("nft", || cluster.drop_from(on, from))?;
            sleep(hold, stop);
            harness("nft", || cluster.clear_net_faults(on))?;
            log.say(&format!("  node {}'s rules removed", on + 1));
        }
        Fault::Lossy {
            node,
            percent,
            hold,
        } => {
            harness("nft", || cluster.lossy_link(node, percent))?;
            sleep(hold, stop);
            harness("nft", || cluster.clear_net_faults(node))?;
            log.say(&format!("  node {}'s rules removed", node + 1));
        }
        Fault::KillClient { slot } => {
            let inc = pool.slots[slot].current.as_ref().map(|c| c.inc);
            pool.signal(slot, libc::SIGKILL);
            log.say(&format!("  client inc {inc:?} killed"));
        }
        Fault::PauseClient { slot, pause } => {
            pool.signal(slot, libc::SIGSTOP);
            sleep(pause, stop);
            pool.signal(slot, libc::SIGCONT);
            log.say("  client resumed");
        }
    }
    Ok(())
}

/// After a fault: every node sees every node, the clients of a lost daemon are gone
/// and replaced, killed clients are replaced, and all clients are in one view. A
/// client that ended without the nemesis causing it is a failure.
fn settle(
    cluster: &Cluster,
    pool: &mut Pool,
    all: &[u32],
    log: &mut Log,
    stop: &AtomicBool,
    failures: &mut Vec<String>,
) -> Result<(), String> {
    let began = Instant::now();
    for i in 0..all.len() {
        // In slices of a second, so that an interrupt is noticed.
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            let left = SETTLE_TIMEOUT.saturating_sub(began.elapsed());
            match cluster.wait_members(i, all, left.min(Duration::from_secs(1))) {
                Ok(()) => break,
                Err(e) if left <= Duration::from_secs(1) => {
                    log.say(&format!(
                        "  WARNING: node {} did not see every node: {e}",
                        i + 1
                    ));
                    break;
                }
                Err(_) => {}
            }
        }
    }
    // Clients of a killed daemon exit once they notice; kill those that do not.
    let end = Instant::now() + DOOMED_EXIT_TIMEOUT;
    loop {
        pool.reap();
        let doomed: Vec<usize> = (0..pool.slots.len())
            .filter(|&s| pool.slots[s].current.as_ref().is_some_and(|c| c.doomed))
            .collect();
        if doomed.is_empty() {
            break;
        }
        if Instant::now() >= end {
            for s in doomed {
                log.say(&format!(
                    "  WARNING: slot {s}'s client did not notice its lost daemon; killing it"
                ));
                pool.signal(s, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
            pool.reap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.reap();
    for e in pool.ended.iter_mut().filter(|e| !e.expected) {
        failures.push(format!(
            "client inc {} (slot {}) ended by itself ({})",
            e.inc, e.slot, e.how
        ));
        // Reported once.
        e.expected = true;
    }
    for s in 0..pool.slots.len() {
        if pool.slots[s].current.is_none() {
            pool.spawn(cluster, s)?;
        }
    }
    if !wait_one_view(
        pool,
        SETTLE_TIMEOUT
            .saturating_sub(began.elapsed())
            .max(Duration::from_secs(10)),
        stop,
    ) {
        log.say("  WARNING: the clients did not reach one view while settling");
    } else {
        log.say(&format!(
            "  settled in {:.1} s: {} clients in one view",
            began.elapsed().as_secs_f64(),
            pool.live_members().len()
        ));
    }
    Ok(())
}
