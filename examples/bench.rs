//! Throughput benchmark of the safe `cpg` crate: a sweep over message sizes, a fixed
//! time per size, printing what was received per second and what it cost in client
//! CPU time and heap allocations.
//!
//! ```text
//! cargo run --release -p cpg-examples --bin bench -- --duration 2
//! cargo run --release -p cpg-examples --bin bench -- --verify          # check every message
//! cargo run --release -p cpg-examples --bin bench -- --receive-only    # on another node
//! cargo run --release -p cpg-examples --bin bench -- --async           # AsyncHandle
//! ```
//!
//! The process joins a group, sends messages of one size as fast as the daemon takes
//! them for `--duration` seconds, and counts the messages delivered back to it (its own,
//! plus any other sender's) during that window. Then it sends an end marker and waits
//! for it to come back, so that every size starts with an empty pipeline.
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
//! `--async` runs the same loop through an [`AsyncHandle`] on a current-thread tokio
//! runtime: each message is sent with `send(..).await` (which waits out back-pressure
//! on the timer), then the events that are ready are taken from the stream, owned.
//!
//! `bench_raw` is the same loop written directly against `corosync-sys`; the
//! `bench_compare` program runs it, this one, `--async` and `--copy` in turn and
//! compares.

#[path = "bench_common.rs"]
#[allow(dead_code)]
mod common;

use std::future::poll_fn;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use clap::Parser;
use cpg::retry::Backoff;
use cpg::{AsyncHandle, DispatchMode, Event, GroupName, Handle};

use common::{Kind, Receiver, Row};

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
    /// Send and receive through an `AsyncHandle` (tokio) instead of a blocking `Handle`.
    #[arg(long = "async", conflicts_with_all = ["zero_copy", "receive_only", "copy"])]
    async_: bool,
    /// Blocking path: copy every delivered message into a `Vec` in the callback (what a
    /// client that keeps or hands on messages does; the async path always owns them).
    #[arg(long)]
    copy: bool,
    /// With --receive-only: stop once this many senders have finished their sweep.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// With --receive-only: give up after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
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
    if args.async_ {
        return run_async(args, &sizes, &group, &stop);
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

    print_banner(args, nodeid, pid, &group);
    let result = if args.receive_only {
        receive_only(args, &handle, &receiver, &stop)
    } else {
        send_sweep(args, &sizes, &handle, &receiver, &stop, nodeid, pid)
    };
    // Leave explicitly so the others see "leave", not "process down"; drop finalizes.
    let _ = handle.leave(&group);
    finish(args, result, &receiver)
}

/// The first line of the report.
fn print_banner(args: &Args, nodeid: u32, pid: u32, group: &GroupName) {
    if !args.sweep.json {
        println!(
            "# bench (safe cpg crate{}): node {nodeid} pid {pid}, group {group}, {}{}{}",
            if args.async_ {
                ", AsyncHandle"
            } else if args.copy {
                ", copying each message"
            } else {
                ""
            },
            if args.receive_only {
                "receive-only"
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

/// One measured window: what was received, how long it took, and what it cost.
struct Window {
    start: Instant,
    cpu0: Duration,
    allocs0: u64,
}

impl Window {
    fn start(receiver: &Receiver) -> Window {
        receiver.start_window();
        Window {
            allocs0: common::allocations(),
            cpu0: common::cpu_time(),
            start: Instant::now(),
        }
    }

    fn finish(
        self,
        receiver: &Receiver,
        implementation: &'static str,
        size: usize,
        pushbacks: u64,
    ) -> Row {
        let secs = self.start.elapsed().as_secs_f64();
        let cpu = common::cpu_time() - self.cpu0;
        let allocs = common::allocations() - self.allocs0;
        let (msgs, bytes) = receiver.stop_window();
        Row {
            implementation,
            size,
            msgs,
            bytes,
            secs,
            cpu_secs: cpu.as_secs_f64(),
            allocs,
            pushbacks,
        }
    }
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
    if !args.sweep.json {
        println!("{}", Row::table_header());
    }
}

fn print_row(args: &Args, row: &Row) {
    if args.sweep.json {
        println!("{}", row.json());
    } else {
        println!("{}", row.line());
    }
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
        (false, true) => "safe-copy",
        (false, false) => "safe",
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
        let row = window.finish(receiver, "async", size, cpg.backpressure_waits() - waits0);
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
