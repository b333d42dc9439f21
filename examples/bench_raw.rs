//! The baseline for `bench`: the same sweep, written directly against `corosync-sys`
//! with raw `unsafe` calls and C-style callbacks, no safe layer.
//!
//! ```text
//! cargo run --release -p cpg-examples --bin bench_raw -- --duration 2
//! ```
//!
//! It does exactly what `bench` does per message (fill the header, `cpg_mcast_joined`,
//! `cpg_dispatch(CS_DISPATCH_ALL)`; on `CS_ERR_TRY_AGAIN` wait up to 1 ms on the
//! descriptor and dispatch), and counts deliveries in the same [`common::Receiver`],
//! reached through libcpg's context pointer. `bench_compare` runs them in turn.

#[path = "bench_common.rs"]
#[allow(dead_code)]
mod common;

use std::ffi::{c_int, c_void};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use corosync_sys as sys;

use common::{Kind, Receiver, Row};

#[global_allocator]
static ALLOC: common::CountingAlloc = common::CountingAlloc;

/// CPG throughput benchmark, raw `corosync-sys` baseline.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    #[command(flatten)]
    sweep: common::SweepArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_raw: {e}");
            ExitCode::from(2)
        }
    }
}

/// The C-style deliver callback: finds the receiver through the context pointer.
unsafe extern "C" fn deliver(
    handle: sys::cpg_handle_t,
    _group: *const sys::cpg_name,
    nodeid: u32,
    pid: u32,
    msg: *mut c_void,
    msg_len: usize,
) {
    let mut context: *mut c_void = std::ptr::null_mut();
    // SAFETY: called by libcpg inside cpg_dispatch on `handle`, which is live; the out
    // pointer is valid.
    if unsafe { sys::cpg_context_get(handle, &mut context) } != sys::CS_OK || context.is_null() {
        return;
    }
    // SAFETY: the context was set to a `Receiver` that `run` keeps alive until after
    // cpg_finalize; only shared references to it exist (its fields are atomics).
    let receiver = unsafe { &*context.cast::<Receiver>() };
    let data = if msg.is_null() || msg_len == 0 {
        &[][..]
    } else {
        // SAFETY: libcpg passes `msg_len` readable bytes at `msg`, valid for this call;
        // the slice does not outlive it.
        unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), msg_len) }
    };
    receiver.deliver(nodeid, pid, data);
}

/// Confchg callback: registered (libcpg wants all of them), nothing to do.
unsafe extern "C" fn confchg(
    _handle: sys::cpg_handle_t,
    _group: *const sys::cpg_name,
    _members: *const sys::cpg_address,
    _members_len: usize,
    _left: *const sys::cpg_address,
    _left_len: usize,
    _joined: *const sys::cpg_address,
    _joined_len: usize,
) {
}

/// Totem confchg callback: registered, nothing to do.
unsafe extern "C" fn totem_confchg(
    _handle: sys::cpg_handle_t,
    _ring_id: sys::cpg_ring_id,
    _members_len: u32,
    _members: *const u32,
) {
}

fn check(what: &str, rc: sys::cs_error_t) -> Result<(), String> {
    if rc == sys::CS_OK {
        Ok(())
    } else {
        Err(format!("{what} failed: cs_error_t {rc}"))
    }
}

/// Owns the raw handle; finalizes on drop (before the receiver it points to is freed,
/// since it is declared after it in `run`).
struct Raw(sys::cpg_handle_t);

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: the handle was initialized and is finalized exactly once, here.
        unsafe { sys::cpg_finalize(self.0) };
    }
}

fn run(args: &Args) -> Result<(), String> {
    let sizes = args.sweep.checked_sizes()?;
    if args.sweep.group.len() > sys::CPG_MAX_NAME_LENGTH as usize {
        return Err("--group: name too long".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot install a signal handler: {e}"))?;
    }
    let mut group = sys::cpg_name {
        length: args.sweep.group.len() as u32,
        value: [0; sys::CPG_MAX_NAME_LENGTH as usize],
    };
    for (dst, src) in group.value.iter_mut().zip(args.sweep.group.bytes()) {
        *dst = src as _;
    }

    let receiver = Box::new(Receiver::new(false));
    let mut model = sys::cpg_model_v1_data_t {
        model: sys::CPG_MODEL_V1,
        cpg_deliver_fn: Some(deliver),
        cpg_confchg_fn: Some(confchg),
        cpg_totem_confchg_fn: Some(totem_confchg),
        flags: 0,
    };
    let mut raw: sys::cpg_handle_t = 0;
    // SAFETY: valid out pointer and model data (a cpg_model_v1_data_t, whose first
    // field is the model, as CPG_MODEL_V1 requires; libcpg copies it). The context is
    // the boxed receiver, which outlives the handle (`handle` below is dropped first).
    check("cpg_model_initialize", unsafe {
        sys::cpg_model_initialize(
            &mut raw,
            sys::CPG_MODEL_V1,
            (&mut model as *mut sys::cpg_model_v1_data_t).cast(),
            (&*receiver as *const Receiver).cast_mut().cast(),
        )
    })?;
    let handle = Raw(raw);
    let mut fd: c_int = -1;
    // SAFETY: live handle, valid out pointer.
    check("cpg_fd_get", unsafe { sys::cpg_fd_get(handle.0, &mut fd) })?;
    // SAFETY: live handle; libcpg only reads the name.
    check("cpg_join", unsafe { sys::cpg_join(handle.0, &group) })?;
    let mut nodeid: std::ffi::c_uint = 0;
    // SAFETY: live handle, valid out pointer.
    check("cpg_local_get", unsafe {
        sys::cpg_local_get(handle.0, &mut nodeid)
    })?;
    let pid = std::process::id();
    receiver.set_me(nodeid, pid);

    let result = sweep(args, &sizes, &handle, fd, &receiver, &stop, nodeid, pid);
    // SAFETY: live handle; libcpg only reads the name.
    unsafe { sys::cpg_leave(handle.0, &group) };
    drop(handle);
    drop(receiver);
    result
}

/// Sends one message of `buf`; the raw cs_error_t.
fn mcast(handle: &Raw, buf: &[u8]) -> sys::cs_error_t {
    let iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: live handle; one iovec pointing to `buf`, which outlives the call and is
    // only read.
    unsafe { sys::cpg_mcast_joined(handle.0, sys::CPG_TYPE_AGREED, &iov, 1) }
}

fn dispatch_all(handle: &Raw) -> Result<(), String> {
    // SAFETY: live handle; the callbacks' context (the receiver) is alive.
    let rc = unsafe { sys::cpg_dispatch(handle.0, sys::CS_DISPATCH_ALL) };
    check("cpg_dispatch", rc)
}

/// Waits up to `ms` for the descriptor, then dispatches everything pending.
fn wait_and_dispatch(handle: &Raw, fd: c_int, ms: c_int) -> Result<(), String> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n > 0 {
        dispatch_all(handle)?;
    }
    Ok(())
}

fn send_marker_and_drain(
    handle: &Raw,
    fd: c_int,
    receiver: &Receiver,
    stop: &AtomicBool,
    marker: &[u8],
) -> Result<(), String> {
    let before = receiver.own_markers.load(Ordering::Relaxed);
    let deadline = Instant::now() + common::DRAIN_TIMEOUT;
    loop {
        match mcast(handle, marker) {
            sys::CS_OK => break,
            sys::CS_ERR_TRY_AGAIN | sys::CS_ERR_QUEUE_FULL if Instant::now() < deadline => {
                wait_and_dispatch(handle, fd, 1)?
            }
            rc => return check("cpg_mcast_joined", rc),
        }
    }
    while receiver.own_markers.load(Ordering::Relaxed) == before {
        if Instant::now() > deadline {
            return Err("our own end marker did not come back within 60 s".into());
        }
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        wait_and_dispatch(handle, fd, 100)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn sweep(
    args: &Args,
    sizes: &[usize],
    handle: &Raw,
    fd: c_int,
    receiver: &Receiver,
    stop: &AtomicBool,
    nodeid: u32,
    pid: u32,
) -> Result<(), String> {
    let max_size = sizes.iter().copied().max().unwrap_or(0);
    let mut buf = vec![0u8; max_size];
    let mut seq: u64 = 0;
    if !args.sweep.json {
        println!("{}", Row::table_header());
    }
    for &size in sizes {
        let msg = &mut buf[..size];
        receiver.start_window();
        let allocs0 = common::allocations();
        let cpu0 = common::cpu_time();
        let start = Instant::now();
        let end = start + args.sweep.window();
        let mut pushbacks = 0;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            common::fill_data(msg, nodeid, pid, seq, false);
            match mcast(handle, msg) {
                sys::CS_OK => {
                    seq += 1;
                    dispatch_all(handle)?;
                }
                sys::CS_ERR_TRY_AGAIN | sys::CS_ERR_QUEUE_FULL => {
                    pushbacks += 1;
                    wait_and_dispatch(handle, fd, 1)?
                }
                rc => return check("cpg_mcast_joined", rc),
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
        send_marker_and_drain(handle, fd, receiver, stop, &marker)?;
        let row = Row {
            implementation: "raw",
            size,
            msgs,
            bytes,
            secs,
            cpu_secs: cpu.as_secs_f64(),
            allocs,
            pushbacks,
        };
        if args.sweep.json {
            println!("{}", row.json());
        } else {
            println!("{}", row.line());
        }
    }
    let marker = common::control(Kind::EndOfRun, nodeid, pid, seq, 0);
    send_marker_and_drain(handle, fd, receiver, stop, &marker)
}
