//! The baselines for `bench`: the same client written directly against
//! `corosync-sys` with raw `unsafe` calls and C-style callbacks, no safe layer.
//!
//! ```text
//! cargo run --release -p cpg-bench --bin bench_raw -- --duration 2
//! cargo run --release -p cpg-bench --bin bench_raw -- --mode busy-retry
//! cargo run --release -p cpg-bench --bin bench_raw -- --mode single-thread
//! ```
//!
//! Three designs (`--mode`), each counting deliveries in the same [`Receiver`] as
//! `bench`, reached through libcpg's context pointer:
//!
//! * `two-thread` (default): what `bench` does by default, on raw calls. The main
//!   thread waits on the descriptor (`poll`, 20 ms) and dispatches with
//!   `CS_DISPATCH_ALL`, and the deliver callback wakes a sender waiting out
//!   back-pressure; a second thread sends with `cpg_mcast_joined`, and on
//!   `CS_ERR_TRY_AGAIN` tries once more, then sleeps on a condition variable until the
//!   dispatcher has delivered a message or the delay (100 µs doubling to 50 ms) has
//!   passed.
//! * `busy-retry`: corosync's own benchmark pattern (`cpgbench`), the baseline to beat.
//!   One thread sits in `cpg_dispatch(CS_DISPATCH_BLOCKING)`; another calls
//!   `cpg_mcast_joined` in a tight loop that retries `CS_ERR_TRY_AGAIN` at once. At the
//!   end the deliver callback, seeing its own end-of-run marker, leaves and finalizes
//!   the handle, which is how a blocking dispatch returns.
//! * `single-thread`: what `bench --single-thread` does: `cpg_mcast_joined`, then
//!   `cpg_dispatch(CS_DISPATCH_ALL)`; on `CS_ERR_TRY_AGAIN` wait up to 1 ms on the
//!   descriptor and dispatch.
//!
//! `bench_compare` runs them beside `bench`.

use std::ffi::{c_int, c_void};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use corosync_sys as sys;

use cpg_bench as common;
use cpg_bench::{Kind, Receiver, Row, SweepPlan};

#[global_allocator]
static ALLOC: common::CountingAlloc = common::CountingAlloc;

/// CPG throughput benchmark, raw `corosync-sys` baselines.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    #[command(flatten)]
    sweep: common::SweepArgs,
    /// Which design: two-thread, busy-retry (corosync's cpgbench pattern) or
    /// single-thread.
    #[arg(long, value_enum, default_value_t = Mode::TwoThread)]
    mode: Mode,
    /// Every message carries sender, sequence number and checksum; report loss,
    /// duplication, reordering and corruption; exit 1 on any.
    #[arg(long)]
    verify: bool,
    /// Two-thread mode: before each send, let the sending thread yield while this
    /// many of its own messages are sent but not yet delivered back (0: no bound), as
    /// `bench --max-in-flight` does.
    #[arg(long, default_value_t = 0)]
    max_in_flight: u64,
}

/// The designs of the raw client (see the program's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// A dispatching thread and a sending thread that sleeps out back-pressure.
    TwoThread,
    /// A thread in `CS_DISPATCH_BLOCKING` and a sender retrying at once.
    BusyRetry,
    /// One thread sends and dispatches in turn.
    SingleThread,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bench_raw: {e}");
            ExitCode::from(2)
        }
    }
}

/// What the callbacks reach through libcpg's context pointer.
struct Context {
    receiver: Receiver,
    /// Two-thread mode: senders waiting out back-pressure wait on this.
    progress: Progress,
    /// Busy-retry mode: leave and finalize inside the callback once our own end-of-run
    /// marker is delivered (the way out of `CS_DISPATCH_BLOCKING`).
    finish_in_callback: bool,
    /// The group, for that leave.
    group: sys::cpg_name,
    /// The callback finalized the handle.
    finalized: AtomicBool,
}

/// "The dispatcher delivered a message", for a sender waiting out back-pressure: an
/// epoch under a mutex, a condition variable, and a count of waiters so that the
/// dispatcher signals only when someone waits.
#[derive(Default)]
struct Progress {
    epoch: AtomicU64,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Progress {
    fn signal(&self) {
        if self.waiters.load(Ordering::Relaxed) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.epoch.fetch_add(1, Ordering::Release);
            self.changed.notify_all();
        }
    }

    fn wait(&self, seen: u64, timeout: Duration) {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::Acquire) == seen {
            let _ = self.changed.wait_timeout_while(guard, timeout, |_| {
                self.epoch.load(Ordering::Acquire) == seen
            });
        }
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `msg` is our own end-of-run marker.
fn is_own_end_of_run(receiver: &Receiver, nodeid: u32, pid: u32, msg: &[u8]) -> bool {
    msg.len() == common::CONTROL_LEN
        && common::Header::parse(msg).is_some_and(|h| h.kind == Kind::EndOfRun)
        && u64::from(nodeid) == receiver.me.0.load(Ordering::Relaxed)
        && u64::from(pid) == receiver.me.1.load(Ordering::Relaxed)
}

/// The C-style deliver callback: finds the context through the context pointer.
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
    // SAFETY: the context was set to a `Context` that `run` keeps alive until after
    // cpg_finalize; only shared references to it exist (its fields are atomics or
    // immutable).
    let context = unsafe { &*context.cast::<Context>() };
    let data = if msg.is_null() || msg_len == 0 {
        &[][..]
    } else {
        // SAFETY: libcpg passes `msg_len` readable bytes at `msg`, valid for this call;
        // the slice does not outlive it.
        unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), msg_len) }
    };
    context.receiver.deliver(nodeid, pid, data);
    // A sender waiting out back-pressure wakes at each delivery (one load when none
    // waits), as `cpg`'s does.
    context.progress.signal();
    if context.finish_in_callback && is_own_end_of_run(&context.receiver, nodeid, pid, data) {
        // SAFETY: `handle` is live and this is its dispatching thread; the sending
        // thread is done sending (it sent this marker and now only waits for it).
        // Leaving and finalizing inside a callback is allowed by libcpg: the blocking
        // dispatch then returns CS_ERR_BAD_HANDLE. `run` does not finalize again
        // (`finalized`).
        unsafe {
            sys::cpg_leave(handle, &context.group);
            sys::cpg_finalize(handle);
        }
        context.finalized.store(true, Ordering::Release);
    }
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

/// Owns the raw handle; finalizes on drop unless the callback already did (declared
/// after the context in `run`, so it is dropped before the context it points to).
struct Raw<'a> {
    handle: sys::cpg_handle_t,
    context: &'a Context,
}

impl Drop for Raw<'_> {
    fn drop(&mut self) {
        if !self.context.finalized.load(Ordering::Acquire) {
            // SAFETY: the handle was initialized and is finalized exactly once, here
            // (the callback did not).
            unsafe { sys::cpg_finalize(self.handle) };
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
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

    let context = Box::new(Context {
        receiver: Receiver::new(args.verify),
        progress: Progress::default(),
        finish_in_callback: args.mode == Mode::BusyRetry,
        group,
        finalized: AtomicBool::new(false),
    });
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
    // the boxed `Context`, which outlives the handle (`handle` below is dropped first).
    check("cpg_model_initialize", unsafe {
        sys::cpg_model_initialize(
            &mut raw,
            sys::CPG_MODEL_V1,
            (&mut model as *mut sys::cpg_model_v1_data_t).cast(),
            (&*context as *const Context).cast_mut().cast(),
        )
    })?;
    let handle = Raw {
        handle: raw,
        context: &context,
    };
    let mut fd: c_int = -1;
    // SAFETY: live handle, valid out pointer.
    check("cpg_fd_get", unsafe {
        sys::cpg_fd_get(handle.handle, &mut fd)
    })?;
    // SAFETY: live handle; libcpg only reads the name.
    check("cpg_join", unsafe { sys::cpg_join(handle.handle, &group) })?;
    let mut nodeid: std::ffi::c_uint = 0;
    // SAFETY: live handle, valid out pointer.
    check("cpg_local_get", unsafe {
        sys::cpg_local_get(handle.handle, &mut nodeid)
    })?;
    let pid = std::process::id();
    let receiver = &context.receiver;
    receiver.set_me(nodeid, pid);
    if !args.sweep.json {
        println!(
            "# bench_raw ({}): node {nodeid} pid {pid}, group {}, sending{}",
            match args.mode {
                Mode::TwoThread => "a dispatching thread and a sending thread",
                Mode::BusyRetry => "blocking dispatch thread, busy-retry sender",
                Mode::SingleThread => "one thread",
            },
            args.sweep.group,
            if args.verify { ", verifying" } else { "" }
        );
    }

    let result = match args.mode {
        Mode::SingleThread => sweep(args, &sizes, &handle, fd, receiver, &stop, nodeid, pid),
        Mode::TwoThread | Mode::BusyRetry => {
            two_threads(args, &sizes, &handle, fd, &stop, (nodeid, pid))
        }
    };
    if !context.finalized.load(Ordering::Acquire) {
        // SAFETY: live handle (not finalized by the callback); libcpg only reads the
        // name.
        unsafe { sys::cpg_leave(handle.handle, &group) };
    }
    drop(handle);
    result?;
    Ok(!args.verify || common::print_verify(&context.receiver))
}

/// The two-thread designs: this (main) thread dispatches, a second one sends.
fn two_threads(
    args: &Args,
    sizes: &[usize],
    handle: &Raw<'_>,
    fd: c_int,
    stop: &AtomicBool,
    me: (u32, u32),
) -> Result<(), String> {
    let context = handle.context;
    let raw = handle.handle;
    let busy = args.mode == Mode::BusyRetry;
    let done = AtomicBool::new(false);
    let failed = AtomicBool::new(false);
    let plan = SweepPlan {
        sizes,
        window: args.sweep.window(),
        verify: args.verify,
        me,
        implementation: if busy { "raw-busy" } else { "raw" },
        json: args.sweep.json,
    };
    std::thread::scope(|scope| {
        let sending = std::thread::Builder::new()
            .name("bench-sender".into())
            .spawn_scoped(scope, || {
                let halt = || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
                let result = if busy {
                    common::send_sweep(&plan, &context.receiver, &halt, |msg| {
                        send_busy_retry(raw, msg)
                    })
                } else {
                    let mut pacer = common::Pacer::new(args.max_in_flight);
                    common::send_sweep(&plan, &context.receiver, &halt, |msg| {
                        pacer.before_send(&context.receiver, msg, &halt);
                        send_sleeping(raw, &context.progress, msg)
                    })
                };
                if busy {
                    if let Err(e) = &result {
                        // The other thread is in a blocking dispatch, which only our
                        // end-of-run marker ends.
                        eprintln!("bench_raw: {e}");
                        std::process::exit(2);
                    }
                }
                done.store(true, Ordering::Release);
                result
            })
            .map_err(|e| format!("cannot start the sending thread: {e}"))?;
        let dispatched = if busy {
            // SAFETY: live handle; the callbacks' context is alive. It returns once the
            // callback has finalized the handle (CS_ERR_BAD_HANDLE), or on an error.
            let rc = unsafe { sys::cpg_dispatch(raw, sys::CS_DISPATCH_BLOCKING) };
            if context.finalized.load(Ordering::Acquire) {
                Ok(())
            } else {
                check("cpg_dispatch", rc)
            }
        } else {
            let mut dispatched = Ok(());
            while !done.load(Ordering::Acquire) {
                if let Err(e) = wait_and_dispatch(raw, fd, 20) {
                    dispatched = Err(e);
                    break;
                }
            }
            dispatched
        };
        if dispatched.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        let sent = sending
            .join()
            .map_err(|_| "the sending thread panicked".to_string())?;
        dispatched.and(sent)
    })
}

/// Busy-retry: `cpg_mcast_joined` until it takes the message, retrying
/// `CS_ERR_TRY_AGAIN` at once (corosync's cpgbench). 1 if it was pushed back.
#[inline]
fn send_busy_retry(raw: sys::cpg_handle_t, msg: &[u8]) -> Result<u64, String> {
    let mut pushed = 0;
    loop {
        match mcast(raw, msg) {
            sys::CS_OK => return Ok(pushed),
            sys::CS_ERR_TRY_AGAIN | sys::CS_ERR_QUEUE_FULL => pushed = 1,
            rc => return check("cpg_mcast_joined", rc).map(|()| pushed),
        }
    }
}

/// The sleeping retry of the two-thread design, as `cpg::Sender::send_with_retry`
/// does it: one more attempt at once, then sleep until the dispatcher delivered one
/// or the delay (100 µs doubling to 50 ms) passed. 1 if it was pushed back.
#[inline]
fn send_sleeping(raw: sys::cpg_handle_t, progress: &Progress, msg: &[u8]) -> Result<u64, String> {
    match mcast(raw, msg) {
        sys::CS_OK => return Ok(0),
        sys::CS_ERR_TRY_AGAIN | sys::CS_ERR_QUEUE_FULL => {}
        rc => return check("cpg_mcast_joined", rc).map(|()| 0),
    }
    let start = Instant::now();
    let mut delay = Duration::from_micros(100);
    loop {
        match mcast(raw, msg) {
            sys::CS_OK => return Ok(1),
            sys::CS_ERR_TRY_AGAIN | sys::CS_ERR_QUEUE_FULL
                if start.elapsed() + delay < common::DRAIN_TIMEOUT =>
            {
                progress.wait(progress.epoch.load(Ordering::Acquire), delay);
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            rc => return check("cpg_mcast_joined", rc).map(|()| 1),
        }
    }
}

/// Sends one message of `buf`; the raw cs_error_t.
#[inline]
fn mcast(handle: sys::cpg_handle_t, buf: &[u8]) -> sys::cs_error_t {
    let iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: live handle; one iovec pointing to `buf`, which outlives the call and is
    // only read.
    unsafe { sys::cpg_mcast_joined(handle, sys::CPG_TYPE_AGREED, &iov, 1) }
}

fn dispatch_all(handle: sys::cpg_handle_t) -> Result<(), String> {
    // SAFETY: live handle; the callbacks' context (the receiver) is alive.
    let rc = unsafe { sys::cpg_dispatch(handle, sys::CS_DISPATCH_ALL) };
    check("cpg_dispatch", rc)
}

/// Waits up to `ms` for the descriptor, then dispatches everything pending.
fn wait_and_dispatch(handle: sys::cpg_handle_t, fd: c_int, ms: c_int) -> Result<(), String> {
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
    handle: &Raw<'_>,
    fd: c_int,
    receiver: &Receiver,
    stop: &AtomicBool,
    marker: &[u8],
) -> Result<(), String> {
    let before = receiver.own_markers.load(Ordering::Relaxed);
    let deadline = Instant::now() + common::DRAIN_TIMEOUT;
    loop {
        match mcast(handle.handle, marker) {
            sys::CS_OK => break,
            sys::CS_ERR_TRY_AGAIN | sys::CS_ERR_QUEUE_FULL if Instant::now() < deadline => {
                wait_and_dispatch(handle.handle, fd, 1)?
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
        wait_and_dispatch(handle.handle, fd, 100)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn sweep(
    args: &Args,
    sizes: &[usize],
    handle: &Raw<'_>,
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
            common::fill_data(msg, nodeid, pid, seq, args.verify);
            match mcast(handle.handle, msg) {
                sys::CS_OK => {
                    seq += 1;
                    dispatch_all(handle.handle)?;
                }
                sys::CS_ERR_TRY_AGAIN | sys::CS_ERR_QUEUE_FULL => {
                    pushbacks += 1;
                    wait_and_dispatch(handle.handle, fd, 1)?
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
            implementation: "raw-1t",
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
