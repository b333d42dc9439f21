//! Async stream vs blocking dispatch: how fast the same messages are received through
//! an [`AsyncHandle`]'s stream and through [`Handle::dispatch`], side by side, on one
//! private corosync.
//!
//! ```text
//! cargo build --release -p cpg-bench --bin async_bench
//! target/release/async_bench                         # 5 rounds, 20,000 messages per size
//! target/release/async_bench --rounds 3 --count 5000 --sizes 64,4096
//! ```
//!
//! Needs root: the daemon runs in a network namespace made by `cpg-testkit`, removed at
//! exit. For every round and message size, both receivers are measured, in alternating
//! order: a child process of this program (`--send`) joins a fresh group with this
//! process and sends `--count` messages as fast as the daemon takes them, then an end
//! marker. This process receives them on its main thread:
//!
//! * blocking: a [`Handle`] whose deliver closure counts the borrowed message (no
//!   copy; with `--copy` it copies it into a `Vec` first, as the async path does),
//!   driven by `dispatch_timeout` (`poll` + `cpg_dispatch(ALL)`);
//! * async: an [`AsyncHandle`] stream on a current-thread tokio runtime on the same
//!   thread: every message is copied into an owned [`Event`].
//!
//! Reported per size: messages per second from the first message to the end marker,
//! and the receiving thread's CPU time per message (`getrusage(RUSAGE_THREAD)`), as
//! medians over the rounds (a first warm-up round is discarded), each with the median
//! of the per-round ratios async/blocking. Every message must arrive: a loss is an
//! error.
//!
//! By default the sender finishes before the receiver starts reading, so the receiver
//! drains a backlog as fast as its own path allows (the rate of the receive path; for
//! large messages the daemon's pace of handing out its queue); a backlog is capped at
//! `--max-backlog-mib` per run. `--live` receives while the sender sends, where the
//! rate is mostly the sender's and the daemon's.

use std::process::{Child, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use cpg::retry::Backoff;
use cpg::{AsyncHandle, DispatchMode, Event, GroupName, Handle};
use cpg_testkit::{Cluster, Node};

/// The message that ends a run (data messages are at least 8 bytes).
const END: &[u8] = b"END";
/// How long one run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Receive throughput: AsyncHandle stream vs blocking Handle dispatch.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Measured rounds (each runs both receivers once per size), after one warm-up.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Messages per run.
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Message sizes in bytes, comma-separated (each at least 8).
    #[arg(long, default_value = "64,1024,16384")]
    sizes: String,
    /// Receive while the sender sends (the rate is then mostly the sender's and the
    /// daemon's). By default the sender finishes first and the receiver then drains
    /// the backlog, which measures the receive path alone.
    #[arg(long)]
    live: bool,
    /// Make the blocking receiver copy every message into a `Vec` too (what a blocking
    /// client that keeps or hands on messages does), so both sides do the same work.
    #[arg(long)]
    copy: bool,
    /// Without --live: cap each run at this many MiB of messages, since the daemon
    /// holds the whole backlog in its memory (and hands a huge one out at an erratic
    /// pace).
    #[arg(long, default_value_t = 64)]
    max_backlog_mib: u64,
    /// Internal: be the sending child for this group.
    #[arg(long, hide = true)]
    send: Option<String>,
    /// Internal: message size of the sending child.
    #[arg(long, hide = true, default_value_t = 64)]
    size: usize,
}

type BoxError = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.send {
        Some(group) => send(group, args.size, args.count),
        None => compare(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async_bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer; RUSAGE_THREAD only writes the struct.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The sending child: join, wait for the receiver, send `count` messages of `size`
/// bytes and the end marker, wait until the marker came back (so it reached the
/// daemon's total order before we disconnect).
fn send(group: &str, size: usize, count: u64) -> Result<(), BoxError> {
    let group = GroupName::new(group)?;
    let members = Arc::new(AtomicU64::new(0));
    let back = Arc::new(AtomicBool::new(false));
    let me = std::process::id();
    let handle = Handle::builder()
        .on_confchg({
            let members = Arc::clone(&members);
            move |_, change| members.store(change.members.len() as u64, Ordering::SeqCst)
        })
        .on_deliver({
            let back = Arc::clone(&back);
            move |_, msg| {
                if msg.pid == me && msg.data == END {
                    back.store(true, Ordering::SeqCst);
                }
            }
        })
        .build()?;
    handle.join(&group)?;
    let wait = |done: &dyn Fn() -> bool, what: &str| -> Result<(), BoxError> {
        let deadline = Instant::now() + RUN_TIMEOUT;
        while !done() {
            if Instant::now() > deadline {
                return Err(format!("sender: timed out waiting for {what}").into());
            }
            handle.dispatch_timeout(Duration::from_millis(100))?;
        }
        Ok(())
    };
    wait(&|| members.load(Ordering::SeqCst) >= 2, "the receiver")?;
    let backoff = Backoff::default();
    let mut msg = vec![0u8; size.max(8)];
    for seq in 0..count {
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        handle.send_with_retry(&msg, &backoff)?;
    }
    handle.send_with_retry(END, &backoff)?;
    wait(&|| back.load(Ordering::SeqCst), "the end marker")?;
    handle.dispatch(DispatchMode::All)?;
    Ok(())
}

/// Starts the sending child inside `node`'s namespace.
fn spawn_sender(node: &Node, group: &str, size: usize, count: u64) -> Result<Child, BoxError> {
    let exe = std::env::current_exe()?;
    Ok(node
        .command(exe)
        .args(["--send", group, "--size", &size.to_string()])
        .args(["--count", &count.to_string()])
        .stdin(Stdio::null())
        .spawn()?)
}

/// Which receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Blocking,
    Async,
}

/// One run: messages received, seconds from the first to the end marker, and the
/// receiving thread's CPU time over the same span.
#[derive(Debug, Clone, Copy)]
struct Sample {
    msgs_per_sec: f64,
    cpu_us_per_msg: f64,
}

/// Where a run stands: (first message: wall clock, thread CPU), end marker seen.
#[derive(Default)]
struct Progress {
    received: u64,
    first: Option<(Instant, Duration)>,
    end: Option<(Instant, Duration)>,
}

impl Progress {
    fn on_message(&mut self, data: &[u8]) {
        if data == END {
            self.end = Some((Instant::now(), thread_cpu()));
        } else {
            if self.first.is_none() {
                self.first = Some((Instant::now(), thread_cpu()));
            }
            self.received += 1;
        }
    }

    fn sample(&self, count: u64) -> Result<Sample, BoxError> {
        let (Some((t0, c0)), Some((t1, c1))) = (self.first, self.end) else {
            return Err("run ended without messages".into());
        };
        if self.received != count {
            return Err(format!("received {} of {count} messages", self.received).into());
        }
        Ok(Sample {
            msgs_per_sec: count as f64 / (t1 - t0).as_secs_f64(),
            cpu_us_per_msg: (c1 - c0).as_secs_f64() * 1e6 / count as f64,
        })
    }
}

/// Waits for the sending child to finish (it has then seen its own end marker, so every
/// message is queued for us at the daemon).
fn wait_sender(child: &mut Child) -> Result<(), BoxError> {
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("sender failed: {status}").into());
    }
    Ok(())
}

fn run_blocking(
    node: &Node,
    group: &str,
    size: usize,
    count: u64,
    live: bool,
    copy: bool,
) -> Result<Sample, BoxError> {
    let name = GroupName::new(group)?;
    let progress = Arc::new(Mutex::new(Progress::default()));
    let handle = node.enter(|| {
        let progress = Arc::clone(&progress);
        Handle::builder()
            .on_deliver(move |_, msg| {
                let mut progress = progress.lock().unwrap_or_else(|e| e.into_inner());
                if copy {
                    let owned = std::hint::black_box(msg.data.to_vec());
                    progress.on_message(&owned)
                } else {
                    progress.on_message(msg.data)
                }
            })
            .build()
    })?;
    handle.join(&name)?;
    let mut child = spawn_sender(node, group, size, count)?;
    if !live {
        wait_sender(&mut child)?;
    }
    let deadline = Instant::now() + RUN_TIMEOUT;
    while progress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .end
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("blocking receiver: timed out".into());
        }
        handle.dispatch_timeout(Duration::from_millis(100))?;
    }
    if live {
        wait_sender(&mut child)?;
    }
    let sample = progress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .sample(count);
    sample
}

fn run_async(
    rt: &tokio::runtime::Runtime,
    node: &Node,
    group: &str,
    size: usize,
    count: u64,
    live: bool,
) -> Result<Sample, BoxError> {
    let name = GroupName::new(group)?;
    let mut cpg = rt.block_on(async {
        let mut cpg = node.enter(AsyncHandle::new)?;
        cpg.join(&name).await?;
        Ok::<_, BoxError>(cpg)
    })?;
    let mut child = spawn_sender(node, group, size, count)?;
    if !live {
        wait_sender(&mut child)?;
    }
    rt.block_on(async {
        let mut progress = Progress::default();
        // One timeout around the whole loop, not one per event (that would add a timer
        // to every message, which the blocking loop does not have either).
        let received = tokio::time::timeout(RUN_TIMEOUT, async {
            while progress.end.is_none() {
                match cpg.next_event().await {
                    Some(Ok(Event::Deliver { data, .. })) => progress.on_message(&data),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(BoxError::from(e)),
                    None => return Err("stream ended".into()),
                }
            }
            Ok(())
        })
        .await;
        match received {
            Ok(result) => result?,
            Err(_) => {
                let _ = child.kill();
                return Err("async receiver: timed out".into());
            }
        }
        if live {
            wait_sender(&mut child)?;
        }
        progress.sample(count)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn compare(args: &Args) -> Result<(), BoxError> {
    let sizes: Vec<usize> = args
        .sizes
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()?;
    if sizes.iter().any(|&s| s < 8) {
        return Err("every size must be at least 8 bytes".into());
    }
    if args.rounds == 0 || args.count == 0 {
        return Err("--rounds and --count must be at least 1".into());
    }
    // Messages per run for a size: a backlog is capped in bytes.
    let count_for = |size: usize| {
        if args.live {
            args.count
        } else {
            args.count
                .min((args.max_backlog_mib << 20) / size as u64)
                .max(1)
        }
    };
    let cluster = Cluster::builder().nodes(1).start()?;
    let node = cluster.node(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "async_bench: {} rounds (+1 warm-up), one node, {}, blocking receiver {}",
        args.rounds,
        if args.live {
            format!(
                "{} messages per run received while the sender sends",
                args.count
            )
        } else {
            format!(
                "a backlog of up to {} messages and {} MiB per run",
                args.count, args.max_backlog_mib
            )
        },
        if args.copy { "copying" } else { "borrowing" }
    );
    // samples[size index] = (blocking, async) per measured round
    let mut samples: Vec<Vec<(Sample, Sample)>> = vec![Vec::new(); sizes.len()];
    let pid = std::process::id();
    for round in 0..=args.rounds {
        for (i, &size) in sizes.iter().enumerate() {
            let order = if (round + i) % 2 == 0 {
                [Mode::Blocking, Mode::Async]
            } else {
                [Mode::Async, Mode::Blocking]
            };
            let mut got = [None, None];
            for mode in order {
                let group = format!("async-bench-{pid}-{round}-{size}-{mode:?}");
                let count = count_for(size);
                let sample = match mode {
                    Mode::Blocking => {
                        run_blocking(node, &group, size, count, args.live, args.copy)?
                    }
                    Mode::Async => run_async(&rt, node, &group, size, count, args.live)?,
                };
                got[(mode == Mode::Async) as usize] = Some(sample);
            }
            if let [Some(b), Some(a)] = got {
                eprintln!(
                    "round {round}{} size {size}: blocking {:.0} msg/s, async {:.0} msg/s",
                    if round == 0 { " (warm-up)" } else { "" },
                    b.msgs_per_sec,
                    a.msgs_per_sec
                );
                if round > 0 {
                    samples[i].push((b, a));
                }
            }
        }
    }
    println!(
        "{:>8} {:>8} {:>14} {:>14} {:>12} {:>16} {:>16} {:>12}",
        "size",
        "msgs",
        "blocking msg/s",
        "async msg/s",
        "async/block",
        "blocking µs/msg",
        "async µs/msg",
        "async/block"
    );
    for (size, runs) in sizes.iter().zip(&samples) {
        let b = median(runs.iter().map(|(b, _)| b.msgs_per_sec).collect());
        let a = median(runs.iter().map(|(_, a)| a.msgs_per_sec).collect());
        let ratio = median(
            runs.iter()
                .map(|(b, a)| a.msgs_per_sec / b.msgs_per_sec)
                .collect(),
        );
        let bc = median(runs.iter().map(|(b, _)| b.cpu_us_per_msg).collect());
        let ac = median(runs.iter().map(|(_, a)| a.cpu_us_per_msg).collect());
        let cpu_ratio = median(
            runs.iter()
                .map(|(b, a)| a.cpu_us_per_msg / b.cpu_us_per_msg)
                .collect(),
        );
        let count = count_for(*size);
        println!(
            "{size:>8} {count:>8} {b:>14.0} {a:>14.0} {ratio:>11.3}x {bc:>16.2} {ac:>16.2} {cpu_ratio:>11.3}x"
        );
    }
    Ok(())
}
