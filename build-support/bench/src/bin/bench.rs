//! Throughput and latency benchmark of the safe `cpg` crate: a sweep over message
//! sizes, a fixed time per size, printing what was received per second and what it
//! cost in client CPU time and heap allocations (or, with `--latency`, how long one
//! message takes to come back).
//!
//! ```text
//! cargo run --release -p cpg-bench --bin bench -- --duration 2
//! cargo run --release -p cpg-bench --bin bench -- --verify          # check every message
//! cargo run --release -p cpg-bench --bin bench -- --single-thread   # the one-thread loop
//! cargo run --release -p cpg-bench --bin bench -- --latency         # one message in flight
//! cargo run --release -p cpg-bench --bin bench -- --receive-only    # on another node
//! cargo run --release -p cpg-bench --bin bench -- --async           # AsyncHandle
//! cargo run --release -p cpg-bench --bin bench -- --layer group     # cpg::group::Group
//! cargo run --release -p cpg-bench --bin bench -- --layer replica   # cpg::replica::Replica
//! ```
//!
//! The process joins a group, sends messages of one size as fast as the daemon takes
//! them for `--duration` seconds, and counts the messages delivered back to it (its own,
//! plus any other sender's) during that window. Then it sends an end marker and waits
//! for it to come back, so that every size starts with an empty pipeline.
//!
//! By default it uses the fastest design the crate offers: the main thread dispatches
//! (`dispatch_timeout`: `poll`, then `cpg_dispatch(CS_DISPATCH_ALL)`, the callback
//! borrowing each message), and a second thread sends through a [`cpg::Sender`]; under
//! back-pressure [`Sender::send_with_retry`](cpg::Sender::send_with_retry) sleeps until
//! the dispatching thread has delivered events or its back-off delay has passed. Sends
//! and deliveries overlap. `--single-thread` runs the one-thread loop instead: send,
//! then `cpg_dispatch(CS_DISPATCH_ALL)`; on back-pressure wait up to 1 ms on the
//! descriptor and dispatch. `--max-in-flight N` makes the sending thread of the
//! two-thread loop yield while N of its own messages are sent but not yet delivered
//! back (a pacing experiment; off by default).
//!
//! `--latency` sends one message at a time and waits for it to be delivered back before
//! sending the next, and prints per size the p50, p99 and p99.9 of that
//! send-to-own-delivery time (one thread).
//!
//! `--verify` makes every message carry its sender, a sequence number and a checksum;
//! every receiver then reports per sender what was lost, duplicated, reordered or
//! corrupted, and exits with status 1 if anything was. `--receive-only` joins and
//! counts (and verifies) what others send, printing a row per size as the sender's end
//! markers arrive.
//!
//! `--copy` makes the deliver callback copy each message into a `Vec` (the work of a
//! client that keeps its messages, which the async path always does).
//!
//! `--async` runs the same two-sided design through an [`AsyncHandle`] on a tokio
//! runtime with two worker threads: a spawned task reads the stream (events owned),
//! another sends with an [`AsyncSender`](cpg::AsyncSender), whose `send(..).await`
//! waits out back-pressure until the reading task has dispatched events. `--reader
//! main` reads the stream in `block_on` on the main thread instead (the design before:
//! a worker polls the reactor and must wake the main thread for every batch of events).
//! `--async --borrow` reads with `AsyncHandle::read_with` instead, each message
//! borrowed from libcpg's buffer (no copy, no allocation). `--async
//! --single-thread` is the one-task loop on a current-thread runtime: `send(..).await`
//! on the handle, then the events that are ready.
//!
//! `--layer group` and `--layer replica` run the same sweep through the crate's
//! protocol layers: application messages through a `cpg::group::Group` (`--async`: an
//! `AsyncGroup`), or operations through a `cpg::replica::Replica`, every member
//! verifying every message (see `cpg_bench::layers`).
//!
//! `bench_raw` is the same client written directly against `corosync-sys` (the same
//! two-thread design, the one-thread loop, and corosync's own busy-retry pattern); the
//! `bench_compare` program runs them side by side and compares.

use std::future::poll_fn;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use clap::Parser;
use cpg::retry::Backoff;
use cpg::{AsyncHandle, DispatchMode, Event, EventRef, GroupName, Handle};

use cpg_bench as common;
use cpg_bench::layers::{self, Layer, LayerRun};
use cpg_bench::{Kind, Receiver, Row, SweepPlan, Window};

#[global_allocator]
static ALLOC: common::CountingAlloc = common::CountingAlloc;

/// CPG throughput benchmark (safe `cpg` crate).
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    #[command(flatten)]
    sweep: common::SweepArgs,
    /// Send through libcpg's zero-copy buffers (`cpg_zcb_*`) instead of plain sends.
    #[arg(long)]
    zero_copy: bool,
    /// Do not send: count (and verify) what other processes send.
    #[arg(long)]
    receive_only: bool,
    /// Every message carries sender, sequence number and checksum; report loss,
    /// duplication, reordering and corruption per sender; exit 1 on any.
    #[arg(long)]
    verify: bool,
    /// Send and receive through an `AsyncHandle` (tokio) instead of a blocking `Handle`
    /// (with --layer group: an `AsyncGroup` instead of a `Group`).
    #[arg(long = "async", conflicts_with_all = ["zero_copy", "copy"])]
    async_: bool,
    /// --async (two tasks): where the stream is read: `task` (a task spawned on the
    /// runtime's workers, beside the sending task) or `main` (in `block_on` on the main
    /// thread, which a worker must wake for every batch of events).
    #[arg(long, value_enum, default_value = "task")]
    reader: Reader,
    /// --async (two tasks): the tokio runtime's worker threads; 0: a current-thread
    /// runtime (both tasks on the main thread, in `block_on`).
    #[arg(long, default_value_t = 2, requires = "async_")]
    workers: u16,
    /// --async (two tasks): the size from which the `AsyncSender` sends from tokio's
    /// blocking pool (`AsyncSender::set_offload_from`; default `cpg::tokio::OFFLOAD_FROM`);
    /// `never`: every send on the sending task's worker.
    #[arg(long, requires = "async_")]
    offload_from: Option<Offload>,
    /// --async (two tasks): read with `AsyncHandle::read_with`, each message borrowed
    /// from libcpg's buffer, instead of the stream's owned events.
    #[arg(long, requires = "async_", conflicts_with = "single_thread")]
    borrow: bool,
    /// One thread sends and dispatches in turn, instead of a dispatching thread beside
    /// a sending one (implied by --zero-copy, whose buffers belong to the handle).
    #[arg(long)]
    single_thread: bool,
    /// Measure latency instead of throughput: one message in flight, the time from
    /// send to its delivery back to this process, p50/p99/p99.9 per size.
    #[arg(long, conflicts_with_all = ["receive_only", "zero_copy", "copy"])]
    latency: bool,
    /// First pause, in microseconds, of a send waiting out back-pressure (it ends
    /// early once the dispatching side has delivered events).
    #[arg(long, default_value_t = 100)]
    retry_initial_us: u64,
    /// Longest such pause, in microseconds.
    #[arg(long, default_value_t = 50_000)]
    retry_max_us: u64,
    /// Two-thread loop: before each send, let the sending thread yield while this
    /// many of its own messages are sent but not yet delivered back (0, the default:
    /// no bound). With --layer replica: most operations submitted and not yet applied
    /// here (default 256, or fewer so that they hold at most 64 MiB of the largest
    /// size).
    #[arg(long)]
    max_in_flight: Option<u64>,
    /// With --layer replica: operations per submit call (1, the default: `submit`;
    /// more: `submit_many` of that many). The in-flight bound still holds.
    #[arg(long, default_value_t = 1)]
    submit_batch: usize,
    /// Blocking path: copy every delivered message into a `Vec` in the callback (what a
    /// client that keeps or hands on messages does; the async path always owns them).
    #[arg(long)]
    copy: bool,
    /// With --receive-only: stop once this many senders have finished their sweep.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// With --receive-only (and --catch-up): give up after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// What to measure: the bare handle (`plain`), the group layer (`group`:
    /// `cpg::group::Group`, or `AsyncGroup` with --async; application messages per
    /// second) or the replica layer (`replica`: `cpg::replica::Replica`, operations
    /// applied per second). The layers verify every message, on every member.
    #[arg(long, value_enum, default_value = "plain")]
    layer: Layer,
    /// --layer group/replica: the group layer's send-queue bound (default 1,024, or
    /// fewer so that the queue holds at most 64 MiB of the largest size).
    #[arg(long)]
    queue_limit: Option<usize>,
    /// --layer group/replica: the group layer's largest batch in bytes
    /// (`group::Config::batch_bytes`; 0 turns batching off: every message goes alone).
    /// Default: the layer's.
    #[arg(long)]
    batch_bytes: Option<usize>,
    /// --layer group/replica: frames in flight at which the group layer's queue holds
    /// and batches (`group::Config::batch_window`). Default: the layer's.
    #[arg(long)]
    batch_window: Option<usize>,
    /// --layer group/replica: whether messages queued together below the batch window
    /// go out as one batch (`group::Config::batch_eager`, `true` or `false`; `false`
    /// sends them one by one until the window is full). Default: the layer's.
    #[arg(long)]
    batch_eager: Option<bool>,
    /// Before sending, wait until this many processes (this one included) are members
    /// of the group (with --layer replica: in sync); receiving (--layer), print
    /// `# ready` once they are.
    #[arg(long, default_value_t = 1)]
    wait_members: usize,
    /// --layer replica: bytes of state each member holds besides its counter (what a
    /// joiner catching up receives).
    #[arg(long, default_value_t = 0)]
    state_bytes: usize,
    /// --layer replica: join empty, wait for the round that brings this process the
    /// others' state, print how long it took from the join (and the transfer rate),
    /// then send an end-of-run marker (ending `--receive-only` members) and leave.
    #[arg(long, conflicts_with_all = ["receive_only", "latency"])]
    catch_up: bool,
}

/// Where `--async` reads the stream (`--reader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Reader {
    /// In `block_on`, on the main thread.
    Main,
    /// In a task spawned on the runtime's worker threads.
    Task,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// SIGINT/SIGTERM set this; the loops check it and stop cleanly.
fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot install a signal handler: {e}"))?;
    }
    Ok(stop)
}

fn run(args: &Args) -> Result<bool, String> {
    let sizes = args.sweep.checked_sizes()?;
    let group = GroupName::new(&args.sweep.group).map_err(|e| format!("--group: {e}"))?;
    let stop = stop_flag()?;
    if args.layer != Layer::Plain {
        return run_layer(args, &sizes, group, &stop);
    }
    if args.catch_up
        || args.state_bytes > 0
        || args.queue_limit.is_some()
        || args.batch_bytes.is_some()
        || args.batch_window.is_some()
        || args.batch_eager.is_some()
    {
        return Err(
            "--catch-up, --state-bytes, --queue-limit, --batch-bytes, --batch-window and --batch-eager need --layer"
                .into(),
        );
    }
    if args.async_ && (args.latency || args.receive_only || args.wait_members > 1) {
        return Err(
            "--async with --latency, --receive-only or --wait-members: only with --layer group"
                .into(),
        );
    }
    if args.async_ && args.single_thread {
        return run_async(args, &sizes, &group, &stop);
    }
    if args.async_ {
        return run_async_two_tasks(args, &sizes, &group, &stop);
    }

    let receiver = Arc::new(Receiver::new(args.verify));
    let in_callback = Arc::clone(&receiver);
    let copy = args.copy;
    let handle = Handle::builder()
        .on_deliver(move |_cpg, msg| {
            if copy {
                let owned: Vec<u8> = std::hint::black_box(msg.data.to_vec());
                in_callback.deliver(msg.nodeid, msg.pid, &owned)
            } else {
                in_callback.deliver(msg.nodeid, msg.pid, msg.data)
            }
        })
        .build()
        .map_err(|e| format!("cannot connect to corosync: {e}"))?;
    handle
        .join(&group)
        .map_err(|e| format!("cannot join {group}: {e}"))?;
    let nodeid = handle.local_node_id().map_err(|e| e.to_string())?;
    let pid = std::process::id();
    receiver.set_me(nodeid, pid);
    if !args.receive_only {
        wait_members(&handle, &group, args.wait_members, &stop)?;
    }

    print_banner(args, nodeid, pid, &group);
    let result = if args.receive_only {
        receive_only(args, &handle, &receiver, &stop)
    } else if args.latency {
        latency_sweep(args, &sizes, &handle, &receiver, &stop, nodeid, pid)
    } else if args.single_thread || args.zero_copy {
        send_sweep(args, &sizes, &handle, &receiver, &stop, nodeid, pid)
    } else {
        send_sweep_two_threads(args, &sizes, &handle, &receiver, &stop, (nodeid, pid))
    };
    // Leave explicitly so the others see "leave", not "process down"; drop finalizes.
    let _ = handle.leave(&group);
    finish(args, result, &receiver)
}

/// `--layer group|replica`: the clients of the protocol layers ([`layers`]).
fn run_layer(
    args: &Args,
    sizes: &[usize],
    group: GroupName,
    stop: &Arc<AtomicBool>,
) -> Result<bool, String> {
    if args.zero_copy || args.copy || args.single_thread {
        return Err(
            "--zero-copy, --copy and --single-thread are options of the plain client".into(),
        );
    }
    if args.catch_up && args.layer != Layer::Replica {
        return Err("--catch-up needs --layer replica".into());
    }
    if args.layer == Layer::Group && (args.state_bytes > 0 || args.max_in_flight.is_some()) {
        return Err("--state-bytes and --max-in-flight are options of --layer replica (the group layer is bounded by --queue-limit)".into());
    }
    layers::run(
        &LayerRun {
            layer: args.layer,
            async_: args.async_,
            latency: args.latency,
            receive_only: args.receive_only,
            catch_up: args.catch_up,
            sizes,
            window: args.sweep.window(),
            group,
            json: args.sweep.json,
            queue_limit: args.queue_limit,
            batch_bytes: args.batch_bytes,
            batch_window: args.batch_window,
            batch_eager: args.batch_eager,
            max_in_flight: args.max_in_flight,
            submit_batch: args.submit_batch,
            wait_members: args.wait_members,
            state_bytes: args.state_bytes,
            senders: args.senders,
            timeout: Duration::from_secs_f64(args.timeout.clamp(0.0, 1e6)),
        },
        stop,
    )
}

/// `--wait-members`: dispatches until `n` processes are members of `group`.
fn wait_members(
    handle: &Handle,
    group: &GroupName,
    n: usize,
    stop: &AtomicBool,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let members = handle
            .members(group)
            .map_err(|e| format!("membership of {group}: {e}"))?;
        if members.len() >= n {
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "--wait-members: {} of {n} members after 60 s",
                members.len()
            ));
        }
        handle
            .dispatch_timeout(Duration::from_millis(100))
            .map_err(|e| format!("dispatch: {e}"))?;
    }
}

/// The first line of the report.
fn print_banner(args: &Args, nodeid: u32, pid: u32, group: &GroupName) {
    if !args.sweep.json {
        println!(
            "# bench (safe cpg crate{}{}): node {nodeid} pid {pid}, group {group}, {}{}{}",
            if args.async_ {
                ", AsyncHandle"
            } else if args.copy {
                ", copying each message"
            } else {
                ""
            },
            if args.receive_only || args.latency {
                ""
            } else if args.single_thread || args.zero_copy {
                ", one thread"
            } else if args.async_ {
                ", a reading task and a sending task"
            } else {
                ", a dispatching thread and a sending thread"
            },
            if args.receive_only {
                "receive-only"
            } else if args.latency {
                "latency, one message in flight"
            } else {
                "sending"
            },
            if args.zero_copy && !args.receive_only {
                ", zero-copy"
            } else {
                ""
            },
            if args.verify { ", verifying" } else { "" },
        );
    }
}

/// The outcome of a run: its own, and with --verify the receiver's report.
fn finish(args: &Args, result: Result<bool, String>, receiver: &Receiver) -> Result<bool, String> {
    let ok = result?;
    let clean = if args.verify {
        common::print_verify(receiver)
    } else {
        true
    };
    Ok(ok && clean)
}

/// Waits (up to 1 ms) for events and delivers them: what the sender does when the
/// daemon pushes back.
fn wait_for_events(handle: &Handle) -> Result<(), String> {
    handle
        .dispatch_timeout(Duration::from_millis(1))
        .map(|_| ())
        .map_err(|e| format!("dispatch: {e}"))
}

/// Sends a control message, retrying on back-pressure, then dispatches until our own
/// control message has come back (every earlier message has then been delivered too).
fn send_marker_and_drain(
    handle: &Handle,
    receiver: &Receiver,
    stop: &AtomicBool,
    marker: &[u8],
) -> Result<(), String> {
    let before = receiver.own_markers.load(Ordering::Relaxed);
    let backoff = Backoff {
        timeout: common::DRAIN_TIMEOUT,
        ..Backoff::default()
    };
    handle
        .send_with_retry(marker, &backoff)
        .map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + common::DRAIN_TIMEOUT;
    while receiver.own_markers.load(Ordering::Relaxed) == before {
        if Instant::now() > deadline {
            return Err("our own end marker did not come back within 60 s".into());
        }
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        handle
            .dispatch_timeout(Duration::from_millis(100))
            .map_err(|e| format!("dispatch: {e}"))?;
    }
    Ok(())
}

fn print_header(args: &Args) {
    common::print_header(args.sweep.json);
}

fn print_row(args: &Args, row: &Row) {
    common::print_row(args.sweep.json, row);
}

impl Args {
    /// The back-off of a send waiting out back-pressure in the measured loops.
    fn backoff(&self) -> Backoff {
        Backoff {
            initial: Duration::from_micros(self.retry_initial_us.max(1)),
            max_delay: Duration::from_micros(self.retry_max_us.max(self.retry_initial_us).max(1)),
            timeout: common::DRAIN_TIMEOUT,
            max_attempts: u32::MAX,
        }
    }
}

/// The default loop: this (main) thread dispatches, with the callback borrowing each
/// message; a second thread sends through a [`cpg::Sender`], waiting out back-pressure
/// with [`Sender::send_with_retry`](cpg::Sender::send_with_retry).
fn send_sweep_two_threads(
    args: &Args,
    sizes: &[usize],
    handle: &Handle,
    receiver: &Receiver,
    stop: &AtomicBool,
    me: (u32, u32),
) -> Result<bool, String> {
    let sender = handle.sender();
    let backoff = args.backoff();
    // Set by the sending thread when it is done, by this one when dispatch failed.
    let done = AtomicBool::new(false);
    let failed = AtomicBool::new(false);
    let plan = SweepPlan {
        sizes,
        window: args.sweep.window(),
        verify: args.verify,
        me,
        implementation: if args.copy { "safe-copy" } else { "safe" },
        json: args.sweep.json,
    };
    std::thread::scope(|scope| {
        let sending = std::thread::Builder::new()
            .name("bench-sender".into())
            .spawn_scoped(scope, || {
                let halt = || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
                let mut pacer = common::Pacer::new(args.max_in_flight.unwrap_or(0));
                let result = common::send_sweep(&plan, receiver, &halt, |msg| {
                    pacer.before_send(receiver, msg, &halt);
                    match sender.send(msg) {
                        Ok(()) => Ok(0),
                        Err(e) if e.is_retryable() => sender
                            .send_with_retry(msg, &backoff)
                            .map(|()| 1)
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                });
                done.store(true, Ordering::Release);
                result
            })
            .map_err(|e| format!("cannot start the sending thread: {e}"))?;
        let mut dispatched = Ok(());
        while !done.load(Ordering::Acquire) {
            if let Err(e) = handle.dispatch_timeout(Duration::from_millis(20)) {
                dispatched = Err(format!("dispatch: {e}"));
                failed.store(true, Ordering::Relaxed);
                break;
            }
        }
        let sent = sending
            .join()
            .map_err(|_| "the sending thread panicked".to_string())?;
        dispatched?;
        sent.map(|()| true)
    })
}

/// `--latency`: per size, for the window, send one message and dispatch until it has
/// come back, timing each round trip; then the end marker as in the throughput loops.
fn latency_sweep(
    args: &Args,
    sizes: &[usize],
    handle: &Handle,
    receiver: &Receiver,
    stop: &AtomicBool,
    nodeid: u32,
    pid: u32,
) -> Result<bool, String> {
    let backoff = args.backoff();
    let mut buf = vec![0u8; sizes.iter().copied().max().unwrap_or(0)];
    let mut seq: u64 = 0;
    if !args.sweep.json {
        println!("{}", common::LatencyRow::table_header());
    }
    for &size in sizes {
        let msg = &mut buf[..size];
        let mut samples = Vec::with_capacity(1 << 16);
        let end = Instant::now() + args.sweep.window();
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            common::fill_data(msg, nodeid, pid, seq, args.verify);
            let before = receiver.own_data.load(Ordering::Relaxed);
            let sent = Instant::now();
            handle
                .send_with_retry(msg, &backoff)
                .map_err(|e| format!("send of {size} bytes: {e}"))?;
            seq += 1;
            let deadline = sent + common::DRAIN_TIMEOUT;
            while receiver.own_data.load(Ordering::Relaxed) == before {
                if Instant::now() > deadline {
                    return Err("our own message did not come back within 60 s".into());
                }
                handle
                    .dispatch_timeout(Duration::from_millis(100))
                    .map_err(|e| format!("dispatch: {e}"))?;
            }
            samples.push(sent.elapsed().as_secs_f64() * 1e6);
        }
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let row = common::LatencyRow::new("safe", size, samples);
        let marker = common::control(Kind::EndOfSize, nodeid, pid, seq, size as u32);
        send_marker_and_drain(handle, receiver, stop, &marker)?;
        if args.sweep.json {
            println!("{}", row.json());
        } else {
            println!("{}", row.line());
        }
    }
    let marker = common::control(Kind::EndOfRun, nodeid, pid, seq, 0);
    send_marker_and_drain(handle, receiver, stop, &marker)?;
    Ok(true)
}

fn send_sweep(
    args: &Args,
    sizes: &[usize],
    handle: &Handle,
    receiver: &Receiver,
    stop: &AtomicBool,
    nodeid: u32,
    pid: u32,
) -> Result<bool, String> {
    let implementation = match (args.zero_copy, args.copy) {
        (true, _) => "safe-zcb",
        (false, true) => "safe-copy-1t",
        (false, false) => "safe-1t",
    };
    let max_size = sizes.iter().copied().max().unwrap_or(0);
    // The message is written either into an ordinary buffer, sent with `send` (libcpg
    // copies it into its IPC channel), or into a zero-copy buffer that libcpg
    // allocated, sent in place.
    let mut zcb = if args.zero_copy {
        Some(
            handle
                .alloc_buffer(max_size)
                .map_err(|e| format!("--zero-copy: buffer of {max_size} bytes: {e}"))?,
        )
    } else {
        None
    };
    let mut plain = if args.zero_copy {
        Vec::new()
    } else {
        vec![0u8; max_size]
    };
    let mut seq: u64 = 0;
    print_header(args);
    for &size in sizes {
        let window = Window::start(receiver);
        let end = window.start + args.sweep.window();
        let mut pushbacks = 0;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            let sent = match zcb.as_mut() {
                Some(buffer) => {
                    common::fill_data(&mut buffer[..size], nodeid, pid, seq, args.verify);
                    buffer.send_prefix(size)
                }
                None => {
                    let msg = &mut plain[..size];
                    common::fill_data(msg, nodeid, pid, seq, args.verify);
                    handle.send(msg)
                }
            };
            match sent {
                Ok(()) => {
                    seq += 1;
                    handle
                        .dispatch(DispatchMode::All)
                        .map_err(|e| format!("dispatch: {e}"))?;
                }
                Err(e) if e.is_retryable() => {
                    pushbacks += 1;
                    wait_for_events(handle)?
                }
                Err(e) => return Err(format!("send of {size} bytes: {e}")),
            }
        }
        let row = window.finish(receiver, implementation, size, pushbacks);
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let marker = common::control(Kind::EndOfSize, nodeid, pid, seq, size as u32);
        send_marker_and_drain(handle, receiver, stop, &marker)?;
        print_row(args, &row);
    }
    let marker = common::control(Kind::EndOfRun, nodeid, pid, seq, 0);
    send_marker_and_drain(handle, receiver, stop, &marker)?;
    Ok(true)
}

fn receive_only(
    args: &Args,
    handle: &Handle,
    receiver: &Receiver,
    stop: &AtomicBool,
) -> Result<bool, String> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(0.0));
    print_header(args);
    let mut window: Option<(Instant, Duration, u64)> = None;
    receiver.start_window();
    while receiver.finished_senders() < args.senders {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "--timeout: {} of {} senders finished within {} s",
                receiver.finished_senders(),
                args.senders,
                args.timeout
            ));
        }
        handle
            .dispatch_timeout(Duration::from_millis(100))
            .map_err(|e| format!("dispatch: {e}"))?;
        if window.is_none() && receiver.msgs.load(Ordering::Relaxed) > 0 {
            window = Some((Instant::now(), common::cpu_time(), common::allocations()));
        }
        for (_nodeid, _pid, size) in receiver.take_end_of_size() {
            let (msgs, bytes) = receiver.stop_window();
            let (start, cpu0, allocs0) = window.take().unwrap_or((
                Instant::now(),
                common::cpu_time(),
                common::allocations(),
            ));
            print_row(
                args,
                &Row {
                    implementation: "safe",
                    size: size as usize,
                    msgs,
                    bytes,
                    secs: start.elapsed().as_secs_f64(),
                    cpu_secs: (common::cpu_time() - cpu0).as_secs_f64(),
                    allocs: common::allocations() - allocs0,
                    pushbacks: 0,
                },
            );
            receiver.start_window();
        }
    }
    Ok(true)
}

/// `--async`: connect, join and sweep through an [`AsyncHandle`] on a current-thread
/// tokio runtime on this thread (the main thread's 8 MiB stack holds libcpg's 1 MiB
/// dispatch buffer with room to spare).
fn run_async(
    args: &Args,
    sizes: &[usize],
    group: &GroupName,
    stop: &AtomicBool,
) -> Result<bool, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    rt.block_on(async {
        let receiver = Receiver::new(args.verify);
        let mut cpg = AsyncHandle::new().map_err(|e| format!("cannot connect to corosync: {e}"))?;
        cpg.join(group)
            .await
            .map_err(|e| format!("cannot join {group}: {e}"))?;
        let nodeid = cpg.local_node_id().map_err(|e| e.to_string())?;
        let pid = std::process::id();
        receiver.set_me(nodeid, pid);
        print_banner(args, nodeid, pid, group);
        let result = send_sweep_async(args, sizes, &mut cpg, &receiver, stop, nodeid, pid).await;
        let _ = cpg.leave(group).await;
        finish(args, result, &receiver)
    })
}

/// Hands one event of the stream to the receiver's accounting.
fn deliver(receiver: &Receiver, event: Option<cpg::Result<Event>>) -> Result<(), String> {
    match event {
        Some(Ok(Event::Deliver {
            nodeid, pid, data, ..
        })) => {
            receiver.deliver(nodeid, pid, &data);
            Ok(())
        }
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(format!("stream: {e}")),
        None => Err("the stream ended".into()),
    }
}

/// Takes the events that are ready now, without waiting; how many there were.
async fn deliver_ready(cpg: &mut AsyncHandle, receiver: &Receiver) -> Result<usize, String> {
    poll_fn(|cx| {
        let mut events = 0;
        loop {
            match cpg.poll_event(cx) {
                Poll::Ready(event) => {
                    if let Err(e) = deliver(receiver, event) {
                        return Poll::Ready(Err(e));
                    }
                    events += 1;
                }
                Poll::Pending => return Poll::Ready(Ok(events)),
            }
        }
    })
    .await
}

/// Sends a control message (waiting out back-pressure), then reads the stream until our
/// own control message has come back.
async fn send_marker_and_drain_async(
    cpg: &mut AsyncHandle,
    receiver: &Receiver,
    stop: &AtomicBool,
    marker: &[u8],
) -> Result<(), String> {
    let before = receiver.own_markers.load(Ordering::Relaxed);
    cpg.send(marker).await.map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + common::DRAIN_TIMEOUT;
    while receiver.own_markers.load(Ordering::Relaxed) == before {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.min(Duration::from_millis(100)), cpg.next_event()).await {
            Ok(event) => deliver(receiver, event)?,
            Err(_) if Instant::now() > deadline => {
                return Err("our own end marker did not come back within 60 s".into())
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// The `--async` loop: per message, `send(..).await`, then the events that are ready.
/// When none were, it yields to the runtime, whose reactor then looks at the
/// descriptor again (the stream waits for readiness that only the reactor sets).
async fn send_sweep_async(
    args: &Args,
    sizes: &[usize],
    cpg: &mut AsyncHandle,
    receiver: &Receiver,
    stop: &AtomicBool,
    nodeid: u32,
    pid: u32,
) -> Result<bool, String> {
    let mut plain = vec![0u8; sizes.iter().copied().max().unwrap_or(0)];
    let mut seq: u64 = 0;
    print_header(args);
    for &size in sizes {
        let window = Window::start(receiver);
        let end = window.start + args.sweep.window();
        let waits0 = cpg.backpressure_waits();
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            let msg = &mut plain[..size];
            common::fill_data(msg, nodeid, pid, seq, args.verify);
            cpg.send(msg)
                .await
                .map_err(|e| format!("send of {size} bytes: {e}"))?;
            seq += 1;
            if deliver_ready(cpg, receiver).await? == 0 {
                tokio::task::yield_now().await;
            }
        }
        let row = window.finish(
            receiver,
            "async-1t",
            size,
            cpg.backpressure_waits() - waits0,
        );
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let marker = common::control(Kind::EndOfSize, nodeid, pid, seq, size as u32);
        send_marker_and_drain_async(cpg, receiver, stop, &marker).await?;
        print_row(args, &row);
    }
    let marker = common::control(Kind::EndOfRun, nodeid, pid, seq, 0);
    send_marker_and_drain_async(cpg, receiver, stop, &marker).await?;
    Ok(true)
}

/// `--offload-from`: a size in bytes, or `never`.
#[derive(Debug, Clone, Copy)]
enum Offload {
    /// Never: every send on the worker.
    Never,
    /// From this many bytes.
    From(usize),
}

impl std::str::FromStr for Offload {
    type Err = String;
    fn from_str(s: &str) -> Result<Offload, String> {
        if s == "never" {
            return Ok(Offload::Never);
        }
        s.parse()
            .map(Offload::From)
            .map_err(|e| format!("{s:?}: a size in bytes or `never` ({e})"))
    }
}

/// `--async`: an [`AsyncHandle`] whose stream a task reads (or the main thread, in
/// `block_on`, with `--reader main`) while another task sends with an
/// [`AsyncSender`](cpg::AsyncSender), on a tokio runtime with two worker threads
/// (`--workers`).
fn run_async_two_tasks(
    args: &Args,
    sizes: &[usize],
    group: &GroupName,
    stop: &Arc<AtomicBool>,
) -> Result<bool, String> {
    let rt = match args.workers {
        0 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
    }
    .enable_all()
    .build()
    .map_err(|e| format!("cannot start tokio: {e}"))?;
    rt.block_on(async {
        let receiver = Arc::new(Receiver::new(args.verify));
        let mut cpg = AsyncHandle::new().map_err(|e| format!("cannot connect to corosync: {e}"))?;
        cpg.join(group)
            .await
            .map_err(|e| format!("cannot join {group}: {e}"))?;
        let nodeid = cpg.local_node_id().map_err(|e| e.to_string())?;
        let pid = std::process::id();
        receiver.set_me(nodeid, pid);
        print_banner(args, nodeid, pid, group);

        let mut sender = cpg.sender();
        sender.set_backoff(args.backoff());
        match args.offload_from {
            None => {}
            Some(Offload::Never) => sender.set_offload_from(None),
            Some(Offload::From(bytes)) => sender.set_offload_from(Some(bytes)),
        }
        let done = Arc::new(tokio::sync::Notify::new());
        let failed = Arc::new(AtomicBool::new(false));
        let sending = tokio::spawn({
            let (receiver, done, failed, stop) = (
                Arc::clone(&receiver),
                Arc::clone(&done),
                Arc::clone(&failed),
                Arc::clone(stop),
            );
            let sizes = sizes.to_vec();
            let (window, verify, json) = (args.sweep.window(), args.verify, args.sweep.json);
            let implementation = if args.borrow { "async-borrow" } else { "async" };
            async move {
                let halt = || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
                let result = async_sender_sweep(
                    &sender,
                    &SweepPlan {
                        sizes: &sizes,
                        window,
                        verify,
                        me: (nodeid, pid),
                        implementation,
                        json,
                    },
                    &receiver,
                    &halt,
                )
                .await;
                done.notify_one();
                result
            }
        });
        let reading = read_until_done(
            cpg,
            Arc::clone(&receiver),
            done,
            Arc::clone(&failed),
            args.borrow,
        );
        let (mut cpg, read) = match args.reader {
            // In `block_on` on the main thread.
            Reader::Main => reading.await,
            // In a task of its own on the workers.
            Reader::Task => tokio::spawn(reading)
                .await
                .map_err(|e| format!("the reading task failed: {e}"))?,
        };
        let sent = sending
            .await
            .map_err(|e| format!("the sending task failed: {e}"))?;
        let _ = cpg.leave(group).await;
        let result = read.and(sent).map(|()| true);
        finish(args, result, &receiver)
    })
}

/// The reading side of `--async`: hands every event to `receiver` until the sending
/// task says it is `done` (or reading fails, which sets `failed`); gives the handle
/// back with the outcome. `borrow`: with `read_with`, each message borrowed.
async fn read_until_done(
    mut cpg: AsyncHandle,
    receiver: Arc<Receiver>,
    done: Arc<tokio::sync::Notify>,
    failed: Arc<AtomicBool>,
    borrow: bool,
) -> (AsyncHandle, Result<(), String>) {
    // One `Notified` for the whole loop: a fresh one per event would register with the
    // `Notify` (a lock) and deregister when dropped (another), per message.
    let finished = done.notified();
    let mut finished = std::pin::pin!(finished);
    let mut read = Ok(());
    if borrow {
        loop {
            let deliver = |event: EventRef<'_>| {
                if let EventRef::Deliver(message) = event {
                    receiver.deliver(message.nodeid, message.pid, message.data);
                }
            };
            tokio::select! {
                biased;
                () = &mut finished => return (cpg, read),
                handed = cpg.read_with(deliver) => {
                    let error = match handed {
                        Ok(0) => "the stream ended".to_string(),
                        Ok(_) => continue,
                        Err(e) => format!("stream: {e}"),
                    };
                    failed.store(true, Ordering::Relaxed);
                    return (cpg, Err(error));
                }
            }
        }
    }
    loop {
        tokio::select! {
            biased;
            () = &mut finished => break,
            event = cpg.next_event() => {
                if let Err(e) = deliver(&receiver, event) {
                    failed.store(true, Ordering::Relaxed);
                    read = Err(e);
                    break;
                }
            }
        }
    }
    (cpg, read)
}

/// The sending task of `--async`: [`common::send_sweep`] with awaits.
async fn async_sender_sweep(
    sender: &cpg::AsyncSender,
    plan: &SweepPlan<'_>,
    receiver: &Receiver,
    halt: &(dyn Fn() -> bool + Sync),
) -> Result<(), String> {
    let (nodeid, pid) = plan.me;
    let mut buf = vec![0u8; plan.sizes.iter().copied().max().unwrap_or(0)];
    let mut seq: u64 = 0;
    common::print_header(plan.json);
    for &size in plan.sizes {
        let msg = &mut buf[..size];
        let window = Window::start(receiver);
        let end = window.start + plan.window;
        let mut pushbacks = 0;
        // A message the sender hands to the blocking pool goes there at once: a first
        // `try_send` would make its first attempt on this worker. (Its pushbacks are
        // then not counted.)
        let offloaded = sender.offload_from().is_some_and(|from| size >= from);
        while Instant::now() < end && !halt() {
            common::fill_data(msg, nodeid, pid, seq, plan.verify);
            if offloaded {
                sender
                    .send(msg)
                    .await
                    .map_err(|e| format!("send of {size} bytes: {e}"))?;
                seq += 1;
                continue;
            }
            match sender.try_send(msg) {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    pushbacks += 1;
                    sender
                        .send(msg)
                        .await
                        .map_err(|e| format!("send of {size} bytes: {e}"))?;
                }
                Err(e) => return Err(format!("send of {size} bytes: {e}")),
            }
            seq += 1;
            // While the daemon takes every message the loop above never waits, so it
            // gives the runtime a turn once its cooperative budget is spent: without
            // that, no worker might poll the reactor, and the reading side would hear
            // nothing for the whole window.
            tokio::task::coop::consume_budget().await;
        }
        let row = window.finish(receiver, plan.implementation, size, pushbacks);
        if halt() {
            return Err("interrupted".into());
        }
        let marker = common::control(Kind::EndOfSize, nodeid, pid, seq, size as u32);
        async_marker(sender, receiver, halt, &marker).await?;
        common::print_row(plan.json, &row);
    }
    let marker = common::control(Kind::EndOfRun, nodeid, pid, seq, 0);
    async_marker(sender, receiver, halt, &marker).await
}

/// Sends a control message and waits until the reading task has seen it come back.
async fn async_marker(
    sender: &cpg::AsyncSender,
    receiver: &Receiver,
    halt: &(dyn Fn() -> bool + Sync),
    marker: &[u8],
) -> Result<(), String> {
    let before = receiver.own_markers.load(Ordering::Acquire);
    sender
        .send(marker)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + common::DRAIN_TIMEOUT;
    while receiver.own_markers.load(Ordering::Acquire) == before {
        if halt() {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err("our own end marker did not come back within 60 s".into());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}
