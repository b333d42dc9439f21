//! Throughput benchmark of the safe `cpg` crate: a sweep over message sizes, a fixed
//! time per size, printing what was received per second and what it cost in client
//! CPU time and heap allocations.
//!
//! ```text
//! cargo run --release -p cpg-examples --bin bench -- --duration 2
//! cargo run --release -p cpg-examples --bin bench -- --verify          # check every message
//! cargo run --release -p cpg-examples --bin bench -- --receive-only    # on another node
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
//! `bench_raw` is the same loop written directly against `corosync-sys`; the
//! `bench_compare` program runs both and compares.

#[path = "bench_common.rs"]
#[allow(dead_code)]
mod common;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cpg::retry::Backoff;
use cpg::{DispatchMode, GroupName, Handle};

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

    let receiver = Arc::new(Receiver::new(args.verify));
    let in_callback = Arc::clone(&receiver);
    let handle = Handle::builder()
        .on_deliver(move |_cpg, msg| in_callback.deliver(msg.nodeid, msg.pid, msg.data))
        .build()
        .map_err(|e| format!("cannot connect to corosync: {e}"))?;
    handle
        .join(&group)
        .map_err(|e| format!("cannot join {group}: {e}"))?;
    let nodeid = handle.local_node_id().map_err(|e| e.to_string())?;
    let pid = std::process::id();
    receiver.set_me(nodeid, pid);

    if !args.sweep.json {
        println!(
            "# bench (safe cpg crate): node {nodeid} pid {pid}, group {group}, {}{}{}",
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
    let result = if args.receive_only {
        receive_only(args, &handle, &receiver, &stop)
    } else {
        send_sweep(args, &sizes, &handle, &receiver, &stop, nodeid, pid)
    };
    // Leave explicitly so the others see "leave", not "process down"; drop finalizes.
    let _ = handle.leave(&group);
    let ok = result?;
    let clean = if args.verify {
        common::print_verify(&receiver)
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
    let implementation = if args.zero_copy { "safe-zcb" } else { "safe" };
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
        receiver.start_window();
        let allocs0 = common::allocations();
        let cpu0 = common::cpu_time();
        let start = Instant::now();
        let end = start + args.sweep.window();
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            let sent = match zcb.as_mut() {
                Some(buffer) => {
                    common::fill_data(&mut buffer[..size], nodeid, pid, seq, args.verify);
                    buffer.send(size)
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
                Err(e) if e.is_retryable() => wait_for_events(handle)?,
                Err(e) => return Err(format!("send of {size} bytes: {e}")),
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = common::cpu_time() - cpu0;
        let allocs = common::allocations() - allocs0;
        let (msgs, bytes) = receiver.stop_window();
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let marker = common::control(Kind::EndOfSize, nodeid, pid, seq, size as u32);
        send_marker_and_drain(handle, receiver, stop, &marker)?;
        print_row(
            args,
            &Row {
                implementation,
                size,
                msgs,
                bytes,
                secs,
                cpu_secs: cpu.as_secs_f64(),
                allocs,
            },
        );
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
                },
            );
            receiver.start_window();
        }
    }
    Ok(true)
}
