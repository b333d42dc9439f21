//! `bench --layer group` and `bench --layer replica`: the sweep of the plain clients
//! (same sizes, windows, message format, end markers, receive accounting, report)
//! through the crate's protocol layers instead of a bare handle.
//!
//! - **group** ([`cpg::group::Group`], or `AsyncGroup` with `--async`): a sending thread
//!   (task) queues application messages with `send` as fast as the layer accepts them;
//!   the main thread reads the layer's events and counts every delivered application
//!   message, its own included. When the layer refuses with `QueueFull`, the sender
//!   waits for the layer's own signal: the receipt of the oldest confirmed send still
//!   outstanding (every `queue_limit / 8`-th message is sent with `send_confirmed`, so
//!   a full queue always holds one), which resolves when that message has been
//!   delivered back, and so the queue has moved.
//! - **replica** ([`cpg::replica::Replica`] around [`BenchState`], a counter with a
//!   digest): a sending thread submits every message as an operation, keeping at most
//!   `--max-in-flight` tickets outstanding (at the bound it waits on the oldest, down
//!   to three quarters of the bound); every member counts the operations it applies,
//!   in `apply`. `--submit-batch N` submits N operations per call (`submit_many`).
//!   Before the end-of-run marker
//!   the sender asks all members to compare digests and fails unless they all hold the
//!   same state.
//!
//! Every member verifies every message (sequence and checksum per sender, as `bench
//! --verify` does) and exits with status 1 on any loss, duplication, reordering or
//! corruption. `--receive-only` members count and verify what others send;
//! `--wait-members N` makes a member wait for a view of N members before it sends (or,
//! receiving, before it says `# ready`). `--latency` sends one message at a time and
//! times it until it is delivered back (group) or applied here (replica).
//!
//! `--catch-up` (replica) measures a joiner: from the call that joins to the end of the
//! round that gave it the others' state ([`Event::Synced`](cpg::replica::Event::Synced)
//! after [`Event::Restored`](cpg::replica::Event::Restored)), with the others holding
//! `--state-bytes` of state (`bench --layer replica --receive-only --state-bytes N`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use cpg::group::{self, AsyncGroup, Confirmation, Group, GroupError, Receipt};
use cpg::replica::{self, OpInfo, Replica, Replicated, RestoreError, Summary, Ticket};
use cpg::{GroupName, Member};

use crate::{
    control, fill_data, print_header, print_row, print_verify, Header, Kind, LatencyRow, Receiver,
    Row, SweepPlan, Window, DRAIN_TIMEOUT, HEADER_LEN,
};

/// How long a member waits to join and see the view it waits for.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a member waits for the layer to report its leave.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one event before the loops look at their flags again.
const POLL: Duration = Duration::from_millis(20);
/// What the default send-queue bound lets the queue hold of the largest message size.
const QUEUE_BYTES: usize = 64 << 20;
/// What the replica client's default in-flight bound lets its tickets hold.
const IN_FLIGHT_BYTES: usize = 64 << 20;
/// Largest state a bench replica accepts (the layer's default is 256 MiB; the scaling
/// runs send up to 256 MB plus the counter).
const MAX_STATE: usize = 1 << 30;

/// Which protocol layer `bench --layer` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layer {
    /// No layer: a bare handle (the plain clients of `bench`).
    Plain,
    /// `cpg::group`.
    Group,
    /// `cpg::replica`.
    Replica,
}

/// What one `bench --layer` run does.
#[derive(Debug)]
pub struct LayerRun<'a> {
    /// Group or replica.
    pub layer: Layer,
    /// `AsyncGroup` instead of `Group`.
    pub async_: bool,
    /// One message in flight, timed.
    pub latency: bool,
    /// Count and verify what others send.
    pub receive_only: bool,
    /// Replica: time this joiner's catch-up.
    pub catch_up: bool,
    /// Message sizes, in order.
    pub sizes: &'a [usize],
    /// Seconds per size.
    pub window: Duration,
    /// The group.
    pub group: GroupName,
    /// JSON rows instead of the table.
    pub json: bool,
    /// The group layer's send-queue bound (`None`: see [`default_queue_limit`]).
    pub queue_limit: Option<usize>,
    /// The group layer's largest batch (`None`: the layer's default; 0: no batching).
    pub batch_bytes: Option<usize>,
    /// The group layer's batch window (`None`: the layer's default).
    pub batch_window: Option<usize>,
    /// The group layer's eager batches (`None`: the layer's default).
    pub batch_eager: Option<bool>,
    /// Replica: most tickets outstanding (`None`: see [`default_in_flight`]).
    pub max_in_flight: Option<u64>,
    /// Replica: operations per submit call (1: `submit`; more: `submit_many`).
    pub submit_batch: usize,
    /// Members to wait for before sending (or, receiving, before `# ready`).
    pub wait_members: usize,
    /// Replica: bytes of state besides the counter.
    pub state_bytes: usize,
    /// Receive-only: senders whose end-of-run marker ends the run.
    pub senders: usize,
    /// Receive-only and catch-up: give up after this long.
    pub timeout: Duration,
}

impl LayerRun<'_> {
    fn max_size(&self) -> usize {
        self.sizes.iter().copied().max().unwrap_or(HEADER_LEN)
    }

    fn name(&self) -> &'static str {
        match (self.layer, self.async_) {
            (Layer::Group, true) => "group-async",
            (Layer::Replica, _) => "replica",
            _ => "group",
        }
    }

    fn group_config(&self) -> group::Config {
        let mut config = group::Config::default();
        config.queue_limit = self
            .queue_limit
            .unwrap_or_else(|| default_queue_limit(self.max_size()));
        if let Some(bytes) = self.batch_bytes {
            config.batch_bytes = bytes;
        }
        if let Some(frames) = self.batch_window {
            config.batch_window = frames;
        }
        if let Some(eager) = self.batch_eager {
            config.batch_eager = eager;
        }
        config
    }
}

/// The group layer's default send-queue bound in the benchmark: the layer's 1,024
/// messages, or fewer so that the queue holds at most 64 MiB of the largest size (at
/// least 16).
pub fn default_queue_limit(max_size: usize) -> usize {
    (QUEUE_BYTES / max_size.max(1)).clamp(16, group::Config::default().queue_limit)
}

/// The replica client's default bound on outstanding tickets: 256, or fewer so that
/// they hold at most 64 MiB of the largest size (at least 4).
pub fn default_in_flight(max_size: usize) -> u64 {
    (IN_FLIGHT_BYTES / max_size.max(1)).clamp(4, 256) as u64
}

/// Runs `bench --layer group|replica`; `Ok(true)` when everything verified.
pub fn run(run: &LayerRun<'_>, stop: &Arc<AtomicBool>) -> Result<bool, String> {
    if run.wait_members == 0 {
        return Err("--wait-members must be at least 1".into());
    }
    if run.queue_limit == Some(0) {
        return Err("--queue-limit must be at least 1".into());
    }
    if run.max_in_flight == Some(0) {
        return Err("--max-in-flight must be at least 1 with --layer replica".into());
    }
    if run.submit_batch == 0 {
        return Err("--submit-batch must be at least 1".into());
    }
    if run.submit_batch > 1 && run.layer != Layer::Replica {
        return Err("--submit-batch is an option of --layer replica".into());
    }
    match (run.layer, run.async_) {
        (Layer::Group, false) => group_blocking(run, stop),
        (Layer::Group, true) => group_async(run, stop),
        (Layer::Replica, false) => replica_blocking(run, stop),
        (Layer::Replica, true) => {
            Err("--async: the replica layer is measured with the blocking Replica".into())
        }
        (Layer::Plain, _) => Err("--layer plain is the plain client".into()),
    }
}

/// The first line of the report.
fn banner(run: &LayerRun<'_>, driver: &str, me: Member) {
    if run.json {
        return;
    }
    let what = if run.catch_up {
        "catching up".to_string()
    } else if run.receive_only {
        "receive-only".to_string()
    } else if run.latency {
        "latency, one message in flight".to_string()
    } else if run.layer == Layer::Replica {
        format!(
            "submitting {} at a time, at most {} operations in flight",
            run.submit_batch,
            run.max_in_flight
                .unwrap_or_else(|| default_in_flight(run.max_size()))
        )
    } else {
        "sending as fast as the layer takes messages".to_string()
    };
    println!(
        "# bench ({driver}): {me}, group {}, {what}, verifying{}",
        run.group,
        if run.layer == Layer::Replica && run.state_bytes > 0 {
            format!(", {} bytes of state", run.state_bytes)
        } else {
            String::new()
        }
    );
}

/// Prints the verify report; the run's outcome and the report's together.
fn finish(result: Result<(), String>, receiver: &Receiver) -> Result<bool, String> {
    result?;
    Ok(print_verify(receiver))
}

/// The receive-only report: a row per size, from the first message after the previous
/// end-of-size marker to the next one (as `bench --receive-only` prints).
struct Rows {
    window: Option<(Instant, Duration, u64)>,
    markers: u64,
}

impl Rows {
    fn new(receiver: &Receiver, json: bool) -> Rows {
        print_header(json);
        receiver.start_window();
        Rows {
            window: None,
            markers: 0,
        }
    }

    /// Looks at what the receiver counted since the last call; prints finished rows.
    fn update(&mut self, receiver: &Receiver, json: bool, name: &'static str) {
        if self.window.is_none() && receiver.msgs.load(Ordering::Relaxed) > 0 {
            self.window = Some((Instant::now(), crate::cpu_time(), crate::allocations()));
        }
        let markers = receiver.markers.load(Ordering::Relaxed);
        if markers == self.markers {
            return;
        }
        self.markers = markers;
        for (_nodeid, _pid, size) in receiver.take_end_of_size() {
            let (msgs, bytes) = receiver.stop_window();
            let (start, cpu0, allocs0) = self.window.take().unwrap_or((
                Instant::now(),
                crate::cpu_time(),
                crate::allocations(),
            ));
            print_row(
                json,
                &Row {
                    implementation: name,
                    size: size as usize,
                    msgs,
                    bytes,
                    secs: start.elapsed().as_secs_f64(),
                    cpu_secs: (crate::cpu_time() - cpu0).as_secs_f64(),
                    allocs: crate::allocations() - allocs0,
                    pushbacks: 0,
                },
            );
            receiver.start_window();
        }
    }
}

/// Checks of a receive-only loop: interrupted, or past its deadline.
fn receive_check(
    run: &LayerRun<'_>,
    receiver: &Receiver,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<(), String> {
    if stop.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    if Instant::now() > deadline {
        return Err(format!(
            "--timeout: {} of {} senders finished within {:?}",
            receiver.finished_senders(),
            run.senders,
            run.timeout
        ));
    }
    Ok(())
}

/// Own messages and markers delivered back (or applied) so far: what a latency round
/// trip waits to see grow.
fn own_count(receiver: &Receiver) -> u64 {
    receiver.own_data.load(Ordering::Acquire) + receiver.own_markers.load(Ordering::Acquire)
}

/// The `--latency` sweep of the layer clients: per size, for the window, one message
/// at a time through `round_trip` (which returns once it has come back), then the end
/// marker the same way.
fn latency_sweep(
    run: &LayerRun<'_>,
    me: Member,
    stop: &AtomicBool,
    mut round_trip: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut buf = vec![0u8; run.max_size()];
    let mut seq: u64 = 0;
    if !run.json {
        println!("{}", LatencyRow::table_header());
    }
    for &size in run.sizes {
        let msg = &mut buf[..size];
        let mut samples = Vec::with_capacity(1 << 16);
        let end = Instant::now() + run.window;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            fill_data(msg, me.nodeid, me.pid, seq, true);
            let sent = Instant::now();
            round_trip(msg).map_err(|e| format!("{size} bytes: {e}"))?;
            samples.push(sent.elapsed().as_secs_f64() * 1e6);
            seq += 1;
        }
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let row = LatencyRow::new(run.name(), size, samples);
        round_trip(&control(
            Kind::EndOfSize,
            me.nodeid,
            me.pid,
            seq,
            size as u32,
        ))?;
        if run.json {
            println!("{}", row.json());
        } else {
            println!("{}", row.line());
        }
    }
    round_trip(&control(Kind::EndOfRun, me.nodeid, me.pid, seq, 0))
}

/// Waits until `receiver` has seen one more own message or marker than `before`,
/// reading events with `next` (which waits up to the given time for one).
fn wait_own(
    receiver: &Receiver,
    before: u64,
    mut next: impl FnMut(Duration) -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while own_count(receiver) == before {
        if Instant::now() > deadline {
            return Err("our own message did not come back within 60 s".into());
        }
        next(Duration::from_millis(100))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The group layer

/// Hands one group-layer event to the receiver's accounting; an event that makes the
/// run's figures meaningless (a lost daemon, an eviction, a message not sent) is an
/// error.
fn group_event(receiver: &Receiver, event: group::Event) -> Result<(), String> {
    match event {
        group::Event::Message(d) => {
            receiver.deliver(d.from.nodeid, d.from.pid, &d.data);
            Ok(())
        }
        group::Event::Malformed { from, len } => Err(format!(
            "a message without the group layer's header from {from} ({len} bytes)"
        )),
        group::Event::NotSent { id, error } => Err(format!("message {id:?} not sent: {error}")),
        group::Event::Evicted { view } => Err(format!("evicted from the group ({view})")),
        group::Event::Disconnected { error } => Err(format!("lost the daemon: {error}")),
        group::Event::Reconnected { .. } => Err("reconnected during the run".into()),
        group::Event::Left => Err("left the group during the run".into()),
        group::Event::Stopped(why) => Err(format!("the group layer stopped: {why:?}")),
        _ => Ok(()),
    }
}

/// Reads one event of a blocking [`Group`] (waiting up to `timeout`).
fn group_next(receiver: &Receiver, group: &Group, timeout: Duration) -> Result<(), String> {
    match group.next_event(timeout) {
        Some(event) => group_event(receiver, event),
        None => match group.end() {
            Some(end) => Err(format!("the group layer ended: {end:?}")),
            None => Ok(()),
        },
    }
}

/// The sending side of the group client: queues with `send`, every `every`-th message
/// with `send_confirmed`, keeping the receipts of those, oldest first.
struct GroupSender<'g> {
    group: &'g Group,
    receipts: VecDeque<Receipt>,
    every: u64,
    queued: u64,
}

impl<'g> GroupSender<'g> {
    fn new(group: &'g Group, queue_limit: usize) -> Self {
        GroupSender {
            group,
            receipts: VecDeque::new(),
            every: (queue_limit / 8).max(1) as u64,
            queued: 0,
        }
    }

    /// Queues `msg`; on `QueueFull` waits for the oldest outstanding confirmation and
    /// tries again. Returns how often the layer refused it.
    fn send(&mut self, msg: &[u8], halt: &dyn Fn() -> bool) -> Result<u64, String> {
        let mut refused = 0;
        loop {
            let queued = if self.queued % self.every == 0 {
                self.group.send_confirmed(msg).map(Some)
            } else {
                self.group.send(msg).map(|_| None)
            };
            match queued {
                Ok(receipt) => {
                    self.queued += 1;
                    self.receipts.extend(receipt);
                    // Forget those already resolved (a failed one fails the run).
                    while let Some(front) = self.receipts.front_mut() {
                        match front.try_get() {
                            None => break,
                            Some(Ok(_)) => drop(self.receipts.pop_front()),
                            Some(Err(e)) => return Err(format!("a confirmed send: {e}")),
                        }
                    }
                    return Ok(refused);
                }
                Err(GroupError::QueueFull { .. }) => {
                    refused += 1;
                    self.wait_for_room(halt)?;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Waits until the oldest outstanding confirmed message has been delivered back:
    /// the queue has moved past it. A full queue holds one (every `every`-th message
    /// is confirmed, and `every` is at most the bound).
    fn wait_for_room(&mut self, halt: &dyn Fn() -> bool) -> Result<(), String> {
        let mut receipt = self
            .receipts
            .pop_front()
            .ok_or("the send queue is full and holds no confirmed message to wait for")?;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            match receipt.wait_timeout(POLL) {
                Ok(_) => return Ok(()),
                Err(GroupError::Timeout) => {
                    if halt() {
                        return Err("interrupted".into());
                    }
                    if Instant::now() > deadline {
                        return Err("the send queue did not move for 60 s".into());
                    }
                }
                Err(e) => return Err(format!("a confirmed send: {e}")),
            }
        }
    }
}

/// Prints the group layer's counters (a comment line).
fn print_group_stats(stats: group::Stats) {
    println!(
        "# group layer: {} sent, {} delivered, {} pushed back by the daemon, {} confirmed",
        stats.sent, stats.delivered, stats.pushbacks, stats.confirmed
    );
}

/// `bench --layer group`: a blocking [`Group`].
fn group_blocking(run: &LayerRun<'_>, stop: &AtomicBool) -> Result<bool, String> {
    let receiver = Receiver::new(true);
    let config = run.group_config();
    let queue_limit = config.queue_limit;
    let group = Group::builder(run.group)
        .config(config)
        .start()
        .map_err(|e| format!("cannot join {}: {e}", run.group))?;
    let view = group
        .wait_view(JOIN_TIMEOUT, |v| {
            v.me().is_some() && v.len() >= run.wait_members
        })
        .ok_or_else(|| {
            format!(
                "no view of {} members with this process within {JOIN_TIMEOUT:?}",
                run.wait_members
            )
        })?;
    let me = view.me().ok_or("the view does not list this process")?;
    receiver.set_me(me.nodeid, me.pid);
    banner(run, "group layer, Group", me);
    let result = if run.receive_only {
        println!("# ready: {} members in the view", view.len());
        let deadline = Instant::now() + run.timeout;
        let mut rows = Rows::new(&receiver, run.json);
        let mut result = Ok(());
        while receiver.finished_senders() < run.senders {
            result = receive_check(run, &receiver, deadline, stop)
                .and_then(|()| group_next(&receiver, &group, POLL));
            if result.is_err() {
                break;
            }
            rows.update(&receiver, run.json, run.name());
        }
        result
    } else if run.latency {
        latency_sweep(run, me, stop, |msg| {
            let before = own_count(&receiver);
            group.send(msg).map_err(|e| e.to_string())?;
            wait_own(&receiver, before, |t| group_next(&receiver, &group, t))
        })
    } else {
        group_two_threads(run, &group, &receiver, queue_limit, me, stop)
    };
    let stats = group.stats();
    let _ = group.leave(LEAVE_TIMEOUT);
    if !run.json {
        print_group_stats(stats);
    }
    finish(result, &receiver)
}

/// The group client's throughput loop: a thread sends, this one reads events.
fn group_two_threads(
    run: &LayerRun<'_>,
    group: &Group,
    receiver: &Receiver,
    queue_limit: usize,
    me: Member,
    stop: &AtomicBool,
) -> Result<(), String> {
    let done = AtomicBool::new(false);
    let failed = AtomicBool::new(false);
    let plan = SweepPlan {
        sizes: run.sizes,
        window: run.window,
        verify: true,
        me: (me.nodeid, me.pid),
        implementation: run.name(),
        json: run.json,
    };
    std::thread::scope(|scope| {
        let sending = std::thread::Builder::new()
            .name("bench-sender".into())
            .spawn_scoped(scope, || {
                let halt = || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
                let mut sender = GroupSender::new(group, queue_limit);
                let result =
                    crate::send_sweep(&plan, receiver, &halt, |msg| sender.send(msg, &halt));
                done.store(true, Ordering::Release);
                result
            })
            .map_err(|e| format!("cannot start the sending thread: {e}"))?;
        let mut read = Ok(());
        while !done.load(Ordering::Acquire) {
            if let Err(e) = group_next(receiver, group, POLL) {
                read = Err(e);
                failed.store(true, Ordering::Relaxed);
                break;
            }
        }
        let sent = sending
            .join()
            .map_err(|_| "the sending thread panicked".to_string())?;
        read.and(sent)
    })
}

/// The outcome of `confirmation` if it has come, without waiting.
fn resolved(confirmation: &mut Confirmation) -> Option<Result<group::Position, GroupError>> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(confirmation).poll(&mut cx) {
        Poll::Ready(outcome) => Some(outcome),
        Poll::Pending => None,
    }
}

/// [`GroupSender`] for an [`AsyncGroup`].
struct AsyncGroupSender {
    group: Arc<AsyncGroup>,
    confirmations: VecDeque<Confirmation>,
    every: u64,
    queued: u64,
}

impl AsyncGroupSender {
    async fn send(&mut self, msg: &[u8], halt: &(dyn Fn() -> bool + Sync)) -> Result<u64, String> {
        let mut refused = 0;
        loop {
            let queued = if self.queued % self.every == 0 {
                self.group.send_confirmed(msg).map(Some)
            } else {
                self.group.send(msg).map(|_| None)
            };
            match queued {
                Ok(confirmation) => {
                    self.queued += 1;
                    self.confirmations.extend(confirmation);
                    while let Some(front) = self.confirmations.front_mut() {
                        match resolved(front) {
                            None => break,
                            Some(Ok(_)) => drop(self.confirmations.pop_front()),
                            Some(Err(e)) => return Err(format!("a confirmed send: {e}")),
                        }
                    }
                    return Ok(refused);
                }
                Err(GroupError::QueueFull { .. }) => {
                    refused += 1;
                    self.wait_for_room(halt).await?;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    async fn wait_for_room(&mut self, halt: &(dyn Fn() -> bool + Sync)) -> Result<(), String> {
        let mut confirmation = self
            .confirmations
            .pop_front()
            .ok_or("the send queue is full and holds no confirmed message to wait for")?;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            match tokio::time::timeout(POLL, &mut confirmation).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(format!("a confirmed send: {e}")),
                Err(_) => {
                    if halt() {
                        return Err("interrupted".into());
                    }
                    if Instant::now() > deadline {
                        return Err("the send queue did not move for 60 s".into());
                    }
                }
            }
        }
    }
}

/// Reads one event of an [`AsyncGroup`], waiting up to `timeout`.
async fn group_next_async(
    receiver: &Receiver,
    group: &AsyncGroup,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, group.next_event()).await {
        Ok(Some(event)) => group_event(receiver, event),
        Ok(None) => Err(format!("the group layer ended: {:?}", group.end())),
        Err(_) => Ok(()),
    }
}

/// `bench --layer group --async`: an [`AsyncGroup`] on a tokio runtime with two worker
/// threads; the main thread reads its events (in `block_on`), a spawned task sends.
fn group_async(run: &LayerRun<'_>, stop: &Arc<AtomicBool>) -> Result<bool, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    rt.block_on(async {
        let receiver = Arc::new(Receiver::new(true));
        let config = run.group_config();
        let queue_limit = config.queue_limit;
        let group = Arc::new(
            Group::builder(run.group)
                .config(config)
                .start_async()
                .await
                .map_err(|e| format!("cannot join {}: {e}", run.group))?,
        );
        let view = tokio::time::timeout(
            JOIN_TIMEOUT,
            group.wait_view(|v| v.me().is_some() && v.len() >= run.wait_members),
        )
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            format!(
                "no view of {} members with this process within {JOIN_TIMEOUT:?}",
                run.wait_members
            )
        })?;
        let me = view.me().ok_or("the view does not list this process")?;
        receiver.set_me(me.nodeid, me.pid);
        banner(run, "group layer, AsyncGroup", me);
        let result = if run.receive_only {
            println!("# ready: {} members in the view", view.len());
            let deadline = Instant::now() + run.timeout;
            let mut rows = Rows::new(&receiver, run.json);
            let mut result = Ok(());
            while receiver.finished_senders() < run.senders {
                result = receive_check(run, &receiver, deadline, stop);
                if result.is_ok() {
                    result = group_next_async(&receiver, &group, POLL).await;
                }
                if result.is_err() {
                    break;
                }
                rows.update(&receiver, run.json, run.name());
            }
            result
        } else if run.latency {
            group_async_latency(run, &group, &receiver, me, stop).await
        } else {
            group_async_two_tasks(run, &group, &receiver, queue_limit, me, stop).await
        };
        let stats = group.stats();
        let _ = tokio::time::timeout(LEAVE_TIMEOUT, group.leave()).await;
        if !run.json {
            print_group_stats(stats);
        }
        finish(result, &receiver)
    })
}

/// `--latency` through an [`AsyncGroup`], on one task.
async fn group_async_latency(
    run: &LayerRun<'_>,
    group: &AsyncGroup,
    receiver: &Receiver,
    me: Member,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut buf = vec![0u8; run.max_size()];
    let mut seq: u64 = 0;
    let round_trip = |msg: Vec<u8>| async move {
        let before = own_count(receiver);
        group.send(msg).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while own_count(receiver) == before {
            if Instant::now() > deadline {
                return Err("our own message did not come back within 60 s".to_string());
            }
            group_next_async(receiver, group, Duration::from_millis(100)).await?;
        }
        Ok::<(), String>(())
    };
    if !run.json {
        println!("{}", LatencyRow::table_header());
    }
    for &size in run.sizes {
        let msg = &mut buf[..size];
        let mut samples = Vec::with_capacity(1 << 16);
        let end = Instant::now() + run.window;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) {
            fill_data(msg, me.nodeid, me.pid, seq, true);
            let sent = Instant::now();
            round_trip(msg.to_vec())
                .await
                .map_err(|e| format!("{size} bytes: {e}"))?;
            samples.push(sent.elapsed().as_secs_f64() * 1e6);
            seq += 1;
        }
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let row = LatencyRow::new(run.name(), size, samples);
        let marker = control(Kind::EndOfSize, me.nodeid, me.pid, seq, size as u32);
        round_trip(marker.to_vec()).await?;
        if run.json {
            println!("{}", row.json());
        } else {
            println!("{}", row.line());
        }
    }
    let marker = control(Kind::EndOfRun, me.nodeid, me.pid, seq, 0);
    round_trip(marker.to_vec()).await
}

/// The throughput loop through an [`AsyncGroup`]: a spawned task sends, this one
/// reads events.
async fn group_async_two_tasks(
    run: &LayerRun<'_>,
    group: &Arc<AsyncGroup>,
    receiver: &Arc<Receiver>,
    queue_limit: usize,
    me: Member,
    stop: &Arc<AtomicBool>,
) -> Result<(), String> {
    let done = Arc::new(tokio::sync::Notify::new());
    let failed = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn({
        let (receiver, done, failed, stop) = (
            Arc::clone(receiver),
            Arc::clone(&done),
            Arc::clone(&failed),
            Arc::clone(stop),
        );
        let mut sender = AsyncGroupSender {
            group: Arc::clone(group),
            confirmations: VecDeque::new(),
            every: (queue_limit / 8).max(1) as u64,
            queued: 0,
        };
        let sizes = run.sizes.to_vec();
        let (window, json, name) = (run.window, run.json, run.name());
        async move {
            let halt = || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
            let plan = SweepPlan {
                sizes: &sizes,
                window,
                verify: true,
                me: (me.nodeid, me.pid),
                implementation: name,
                json,
            };
            let result = async_group_sweep(&mut sender, &plan, &receiver, &halt).await;
            done.notify_one();
            result
        }
    });
    let mut read = Ok(());
    loop {
        tokio::select! {
            biased;
            () = done.notified() => break,
            event = group.next_event() => {
                let handled = match event {
                    Some(event) => group_event(receiver, event),
                    None => Err(format!("the group layer ended: {:?}", group.end())),
                };
                if let Err(e) = handled {
                    failed.store(true, Ordering::Relaxed);
                    read = Err(e);
                    break;
                }
            }
        }
    }
    let sent = sending
        .await
        .map_err(|e| format!("the sending task failed: {e}"))?;
    read.and(sent)
}

/// [`crate::send_sweep`] with awaits, for the [`AsyncGroup`] sender.
async fn async_group_sweep(
    sender: &mut AsyncGroupSender,
    plan: &SweepPlan<'_>,
    receiver: &Receiver,
    halt: &(dyn Fn() -> bool + Sync),
) -> Result<(), String> {
    let (nodeid, pid) = plan.me;
    let mut buf = vec![0u8; plan.sizes.iter().copied().max().unwrap_or(0)];
    let mut seq: u64 = 0;
    print_header(plan.json);
    for &size in plan.sizes {
        let msg = &mut buf[..size];
        let window = Window::start(receiver);
        let end = window.start + plan.window;
        let mut refused = 0;
        while Instant::now() < end && !halt() {
            fill_data(msg, nodeid, pid, seq, true);
            refused += sender
                .send(msg, halt)
                .await
                .map_err(|e| format!("send of {size} bytes: {e}"))?;
            seq += 1;
            // The layer takes messages without waiting until its queue is full: give
            // the runtime a turn once the cooperative budget is spent, so that the
            // driver task and the reactor run (as the plain async sender does).
            tokio::task::coop::consume_budget().await;
        }
        let row = window.finish(receiver, plan.implementation, size, refused);
        if halt() {
            return Err("interrupted".into());
        }
        let marker = control(Kind::EndOfSize, nodeid, pid, seq, size as u32);
        async_marker(sender, receiver, halt, &marker).await?;
        print_row(plan.json, &row);
    }
    let marker = control(Kind::EndOfRun, nodeid, pid, seq, 0);
    async_marker(sender, receiver, halt, &marker).await
}

/// Sends a control message and waits until the reading side has seen it come back.
async fn async_marker(
    sender: &mut AsyncGroupSender,
    receiver: &Receiver,
    halt: &(dyn Fn() -> bool + Sync),
    marker: &[u8],
) -> Result<(), String> {
    let before = receiver.own_markers.load(Ordering::Acquire);
    sender.send(marker, halt).await?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
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

// ---------------------------------------------------------------------------------
// The replica layer

/// Length of the counter and chain at the start of a [`BenchState`] snapshot.
const STATE_HEADER: usize = 16;

/// The replicated state of the replica client: a counter of the operations applied,
/// a digest chained over each operation's header (which holds its sender, sequence
/// number and checksum: the same chain means the same operations in the same order),
/// and `--state-bytes` of ballast (a deterministic pattern) for the state-transfer
/// measurements. Every applied operation also goes to the [`Receiver`]'s accounting.
pub struct BenchState {
    receiver: Arc<Receiver>,
    applied: u64,
    chain: u64,
    ballast: Vec<u8>,
    ballast_digest: u64,
}

impl BenchState {
    /// A state with `ballast` bytes of pattern, nothing applied.
    pub fn new(receiver: Arc<Receiver>, ballast: usize) -> BenchState {
        let mut bytes = vec![0u8; ballast];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in bytes.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        BenchState {
            receiver,
            applied: 0,
            chain: replica::fnv_start(),
            ballast_digest: words_digest(&bytes),
            ballast: bytes,
        }
    }

    /// Operations applied to this state along its history.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Bytes of ballast.
    pub fn ballast_len(&self) -> usize {
        self.ballast.len()
    }
}

/// A digest of `bytes`, eight at a time (so that a 256 MB state is hashed in well
/// under a second).
fn words_digest(bytes: &[u8]) -> u64 {
    let mut h = replica::fnv_start() ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }
    replica::fnv(h, words.remainder())
}

impl Replicated for BenchState {
    type Output = ();

    fn apply(&mut self, op: &[u8], info: &OpInfo) {
        self.receiver
            .deliver(info.origin.nodeid, info.origin.pid, op);
        self.applied += 1;
        self.chain = replica::fnv(self.chain, &op[..op.len().min(HEADER_LEN)]);
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut s = Vec::with_capacity(STATE_HEADER + self.ballast.len());
        s.extend_from_slice(&self.applied.to_le_bytes());
        s.extend_from_slice(&self.chain.to_le_bytes());
        s.extend_from_slice(&self.ballast);
        s
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        if snapshot.len() < STATE_HEADER {
            return Err(format!("a state of {} bytes, below its header", snapshot.len()).into());
        }
        let word =
            |at: usize| u64::from_le_bytes(snapshot[at..at + 8].try_into().unwrap_or([0; 8]));
        self.applied = word(0);
        self.chain = word(8);
        self.ballast = snapshot[STATE_HEADER..].to_vec();
        self.ballast_digest = words_digest(&self.ballast);
        Ok(())
    }

    fn digest(&self) -> u64 {
        let mut h = replica::fnv(replica::fnv_start(), &self.applied.to_le_bytes());
        h = replica::fnv(h, &self.chain.to_le_bytes());
        replica::fnv(h, &self.ballast_digest.to_le_bytes())
    }
}

/// The outcomes of digest comparisons, as the event reader sees them.
#[derive(Default)]
struct Checks {
    outcomes: Mutex<Vec<Result<Summary, String>>>,
    changed: Condvar,
}

impl Checks {
    fn record(&self, outcome: Result<Summary, String>) {
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(outcome);
        self.changed.notify_all();
    }

    fn count(&self) -> usize {
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Waits for the outcome of check number `n` (0-based).
    fn wait(&self, n: usize, halt: &dyn Fn() -> bool) -> Result<Summary, String> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(outcome) = outcomes.get(n) {
                return outcome.clone();
            }
            if halt() {
                return Err("interrupted".into());
            }
            if Instant::now() > deadline {
                return Err("the digest comparison did not end within 60 s".into());
            }
            outcomes = self
                .changed
                .wait_timeout(outcomes, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Handles one replica event; one that makes the run's figures meaningless (a state
/// replaced mid-run, a divergence, a failed round) is an error.
fn replica_event(event: replica::Event, checks: &Checks) -> Result<(), String> {
    match event {
        replica::Event::Verified { summary, .. } => {
            checks.record(Ok(summary));
            Ok(())
        }
        replica::Event::Diverged { summaries, .. } => {
            let mut text = String::new();
            for c in &summaries {
                let _ = write!(text, " {}: {};", c.member, c.summary);
            }
            let e = format!("the members hold different states:{text}");
            checks.record(Err(e.clone()));
            Err(e)
        }
        replica::Event::Restored {
            previous, current, ..
        } => Err(format!(
            "this member's state was replaced during the run ({previous} -> {current})"
        )),
        replica::Event::RoundFailed { attempt, why } => {
            Err(format!("round attempt {attempt} failed: {why:?}"))
        }
        replica::Event::GaveUp { attempts } => Err(format!("gave up after {attempts} rounds")),
        replica::Event::Malformed { from, len } => Err(format!(
            "a message that is not a replica message from {from} ({len} bytes)"
        )),
        replica::Event::Refused { from, version } => {
            Err(format!("{from} speaks replica protocol version {version}"))
        }
        _ => Ok(()),
    }
}

/// Waits for a ticket's operation to be applied here.
fn wait_ticket(ticket: &Ticket<()>, halt: &dyn Fn() -> bool) -> Result<u64, String> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match ticket.wait(POLL) {
            Ok(outcome) => return Ok(outcome.version),
            Err(replica::ReplicaError::Timeout) => {
                if halt() {
                    return Err("interrupted".into());
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "operation {} was not applied within 60 s",
                        ticket.seq()
                    ));
                }
            }
            Err(e) => return Err(format!("operation {}: {e}", ticket.seq())),
        }
    }
}

/// The replica client's sending side: submits, keeping at most `max` tickets
/// outstanding (at the bound it waits for the oldest quarter); with `batch` above 1,
/// it gathers that many data messages and submits them in one `submit_many` call
/// (a marker goes at once, after what was gathered).
struct ReplicaSender<'r> {
    replica: &'r Replica<BenchState>,
    tickets: VecDeque<Ticket<()>>,
    max: usize,
    batch: usize,
    /// Data messages gathered for the next `submit_many`.
    gathered: Vec<Vec<u8>>,
}

impl ReplicaSender<'_> {
    fn send(&mut self, msg: &[u8], halt: &dyn Fn() -> bool) -> Result<u64, String> {
        if self.batch <= 1 {
            return self.submit(msg, halt);
        }
        self.gathered.push(msg.to_vec());
        let data = Header::parse(msg).is_some_and(|h| h.kind == Kind::Data);
        if data && self.gathered.len() < self.batch {
            return Ok(0);
        }
        self.submit_gathered(halt)
    }

    /// Submits the gathered messages in one call, once the tickets leave room for
    /// them.
    fn submit_gathered(&mut self, halt: &dyn Fn() -> bool) -> Result<u64, String> {
        if self.gathered.is_empty() {
            return Ok(0);
        }
        let waited = self.make_room(self.gathered.len(), halt)?;
        let tickets = self
            .replica
            .submit_many(self.gathered.drain(..))
            .map_err(|e| e.to_string())?;
        self.tickets.extend(tickets);
        Ok(waited)
    }

    /// Waits until `n` more tickets fit under the bound: at the bound, down to three
    /// quarters of it (or further, for a batch larger than a quarter).
    fn make_room(&mut self, n: usize, halt: &dyn Fn() -> bool) -> Result<u64, String> {
        let mut waited = 0;
        if self.tickets.len() + n > self.max {
            // Down to three quarters of the bound: the replica resolves tickets in
            // passes, and one wake-up per pass (not per ticket) keeps this client's
            // cost out of the figures.
            let keep = (self.max - self.max.div_ceil(4)).min(self.max.saturating_sub(n));
            while self.tickets.len() > keep {
                if let Some(oldest) = self.tickets.pop_front() {
                    wait_ticket(&oldest, halt)?;
                    waited = 1;
                }
            }
        }
        Ok(waited)
    }

    fn submit(&mut self, msg: &[u8], halt: &dyn Fn() -> bool) -> Result<u64, String> {
        let mut waited = 0;
        if self.tickets.len() >= self.max {
            // Down to three quarters of the bound: the replica resolves tickets in
            // passes, and one wake-up per pass (not per ticket) keeps this client's
            // cost out of the figures.
            while self.tickets.len() > self.max - self.max.div_ceil(4) {
                if let Some(oldest) = self.tickets.pop_front() {
                    wait_ticket(&oldest, halt)?;
                    waited = 1;
                }
            }
        }
        let ticket = self.replica.submit(msg).map_err(|e| e.to_string())?;
        self.tickets.push_back(ticket);
        Ok(waited)
    }

    /// Submits what is gathered and waits for every outstanding ticket.
    fn drain(&mut self, halt: &dyn Fn() -> bool) -> Result<(), String> {
        self.submit_gathered(halt)?;
        while let Some(t) = self.tickets.pop_front() {
            wait_ticket(&t, halt)?;
        }
        Ok(())
    }
}

/// `bench --layer replica`: a blocking [`Replica`] around a [`BenchState`].
fn replica_blocking(run: &LayerRun<'_>, stop: &AtomicBool) -> Result<bool, String> {
    let receiver = Arc::new(Receiver::new(true));
    let mut config = replica::Config::default();
    // Only the explicit check at the end of a sweep: no periodic one mid-window.
    config.verify_interval = None;
    config.max_state_size = MAX_STATE;
    // Members that hold a state start from version 1 (as if loaded from disk), a
    // joiner that measures its catch-up from 0: the round always chooses theirs.
    config.initial_version = if run.catch_up { 0 } else { 1 };
    let state = BenchState::new(
        Arc::clone(&receiver),
        if run.catch_up { 0 } else { run.state_bytes },
    );
    let began = Instant::now();
    let replica = Replica::builder(run.group, state)
        .config(config)
        .group_config(run.group_config())
        .start()
        .map_err(|e| format!("cannot join {}: {e}", run.group))?;
    let joined = began.elapsed();
    let checks = Checks::default();
    let result = if run.catch_up {
        catch_up(run, &replica, &receiver, began, joined, stop)
    } else {
        replica_member(run, &replica, &receiver, &checks, stop)
    };
    let stats = replica.stats();
    let group = replica.group_stats();
    let summary = replica.summary();
    let applied = replica.read(BenchState::applied);
    let _ = replica.leave(LEAVE_TIMEOUT);
    println!(
        "# replica: {applied} operations in the state, state {summary}, {} applied here, {} rounds, {} restored, {} digest checks passed",
        stats.applied,
        stats.rounds,
        stats.restores,
        checks
            .outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|o| o.is_ok())
            .count()
    );
    if let Some(g) = group {
        // How full the group layer's batches were. To stderr, which bench_compare
        // passes through (it reads the result from stdout).
        eprintln!(
            "# replica: its group layer sent {} messages and {} batches ({:.1} messages per batch, those sent alone counted in)",
            g.sent,
            g.batches_sent,
            g.sent as f64 / g.batches_sent.max(1) as f64
        );
    }
    finish(result, &receiver)
}

/// A replica member of a throughput or latency run: sender or receiver.
fn replica_member(
    run: &LayerRun<'_>,
    replica: &Replica<BenchState>,
    receiver: &Receiver,
    checks: &Checks,
    stop: &AtomicBool,
) -> Result<(), String> {
    let view = replica
        .wait_ready(JOIN_TIMEOUT, |v| {
            v.me().is_some() && v.len() >= run.wait_members
        })
        .ok_or_else(|| {
            format!(
                "no view of {} members in sync within {JOIN_TIMEOUT:?}",
                run.wait_members
            )
        })?;
    let me = view.me().ok_or("the view does not list this process")?;
    receiver.set_me(me.nodeid, me.pid);
    banner(run, "replica layer, Replica", me);
    // Events of the start (the view, the round) are read before anything is sent.
    while let Some(event) = replica.next_event(Duration::ZERO) {
        replica_event(event, checks)?;
    }
    if run.receive_only {
        println!("# ready: {} members in the view, in sync", view.len());
        let deadline = Instant::now() + run.timeout;
        let mut rows = Rows::new(receiver, run.json);
        while receiver.finished_senders() < run.senders {
            receive_check(run, receiver, deadline, stop)?;
            if let Some(event) = replica.next_event(POLL) {
                replica_event(event, checks)?;
            }
            rows.update(receiver, run.json, run.name());
        }
        return Ok(());
    }
    if run.latency {
        return latency_sweep(run, me, stop, |msg| {
            let ticket = replica.submit(msg).map_err(|e| e.to_string())?;
            wait_ticket(&ticket, &|| stop.load(Ordering::Relaxed))?;
            while let Some(event) = replica.next_event(Duration::ZERO) {
                replica_event(event, checks)?;
            }
            Ok(())
        });
    }
    let max = run
        .max_in_flight
        .unwrap_or_else(|| default_in_flight(run.max_size())) as usize;
    let done = AtomicBool::new(false);
    let failed = AtomicBool::new(false);
    let plan = SweepPlan {
        sizes: run.sizes,
        window: run.window,
        verify: true,
        me: (me.nodeid, me.pid),
        implementation: run.name(),
        json: run.json,
    };
    std::thread::scope(|scope| {
        let sending = std::thread::Builder::new()
            .name("bench-sender".into())
            .spawn_scoped(scope, || {
                let halt = || stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed);
                let sender = RefCell::new(ReplicaSender {
                    replica,
                    tickets: VecDeque::new(),
                    max,
                    batch: run.submit_batch,
                    gathered: Vec::with_capacity(run.submit_batch),
                });
                let result = crate::send_sweep_with(
                    &plan,
                    receiver,
                    &halt,
                    |msg| sender.borrow_mut().send(msg, &halt),
                    || {
                        // Every operation sent so far applied here; then every member
                        // compares its state at one point of the agreed order.
                        sender.borrow_mut().drain(&halt)?;
                        let n = checks.count();
                        replica.verify();
                        let summary = checks.wait(n, &halt)?;
                        if !plan.json {
                            println!("# replica: every member holds state {summary}");
                        }
                        Ok(())
                    },
                )
                .and_then(|()| sender.borrow_mut().drain(&halt));
                done.store(true, Ordering::Release);
                result
            })
            .map_err(|e| format!("cannot start the sending thread: {e}"))?;
        let mut read = Ok(());
        while !done.load(Ordering::Acquire) {
            if let Some(event) = replica.next_event(POLL) {
                if let Err(e) = replica_event(event, checks) {
                    read = Err(e);
                    failed.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        let sent = sending
            .join()
            .map_err(|_| "the sending thread panicked".to_string())?;
        read.and(sent)
    })
}

/// `--catch-up`: waits for the round that brings this (empty) joiner the others'
/// state, reports how long it took, then sends an end-of-run marker (which ends the
/// receive-only members holding the state) and leaves.
fn catch_up(
    run: &LayerRun<'_>,
    replica: &Replica<BenchState>,
    receiver: &Receiver,
    began: Instant,
    joined: Duration,
    stop: &AtomicBool,
) -> Result<(), String> {
    let deadline = Instant::now() + run.timeout;
    let mut restored: Option<Duration> = None;
    let (synced, members) = loop {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no state restored and in sync within {:?}",
                run.timeout
            ));
        }
        match replica.next_event(POLL) {
            Some(replica::Event::Restored { .. }) => restored = Some(began.elapsed()),
            Some(replica::Event::Synced { .. }) if restored.is_some() => {
                let members = replica.view().map_or(0, |v| v.len());
                if members >= run.wait_members {
                    break (began.elapsed(), members);
                }
            }
            Some(replica::Event::Diverged { .. } | replica::Event::GaveUp { .. }) => {
                return Err("the catch-up round failed".into())
            }
            _ => {}
        }
    };
    let stats = replica.stats();
    let state = replica.read(BenchState::ballast_len) + STATE_HEADER;
    let transfer = synced.saturating_sub(joined).as_secs_f64();
    let me = replica
        .view()
        .and_then(|v| v.me())
        .ok_or("the view does not list this process")?;
    receiver.set_me(me.nodeid, me.pid);
    if run.json {
        println!(
            "{}",
            serde_json::json!({
                "impl": "replica-catch-up",
                "members": members,
                "state_bytes": state,
                "bytes_received": stats.bytes_received,
                "join_secs": joined.as_secs_f64(),
                "restored_secs": restored.map_or(f64::NAN, |d| d.as_secs_f64()),
                "synced_secs": synced.as_secs_f64(),
                "round_secs": transfer,
                "mb_per_sec": state as f64 / 1e6 / transfer.max(1e-9),
                "rounds": stats.rounds,
            })
        );
    } else {
        println!(
            "catch-up: joined in {:.3} s; a state of {state} bytes restored at {:.3} s; in sync with {members} members at {:.3} s ({:.1} MB/s from the join)",
            joined.as_secs_f64(),
            restored.map_or(f64::NAN, |d| d.as_secs_f64()),
            synced.as_secs_f64(),
            state as f64 / 1e6 / transfer.max(1e-9),
        );
    }
    let ticket = replica
        .submit(control(Kind::EndOfRun, me.nodeid, me.pid, 0, 0).to_vec())
        .map_err(|e| e.to_string())?;
    wait_ticket(&ticket, &|| stop.load(Ordering::Relaxed))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(seq: u64) -> OpInfo {
        OpInfo {
            origin: Member { nodeid: 1, pid: 7 },
            seq,
            version: seq,
        }
    }

    #[test]
    fn a_restored_state_has_the_digest_of_the_one_it_was_taken_from() {
        let a = BenchState::new(Arc::new(Receiver::new(true)), 1001);
        let mut b = BenchState::new(Arc::new(Receiver::new(true)), 0);
        let mut a = a;
        let mut msg = vec![0u8; 64];
        for seq in 0..3 {
            fill_data(&mut msg, 1, 7, seq, true);
            a.apply(&msg, &info(seq + 1));
        }
        assert_ne!(a.digest(), b.digest());
        b.restore(&a.snapshot()).unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_eq!(b.applied(), 3);
        assert_eq!(b.ballast_len(), 1001);
        assert!(b.restore(&[0u8; 15]).is_err());
    }

    #[test]
    fn the_digest_depends_on_the_order_of_the_operations() {
        let mut a = BenchState::new(Arc::new(Receiver::new(true)), 0);
        let mut b = BenchState::new(Arc::new(Receiver::new(true)), 0);
        let mut m0 = vec![0u8; 64];
        let mut m1 = vec![0u8; 64];
        fill_data(&mut m0, 1, 7, 0, true);
        fill_data(&mut m1, 1, 7, 1, true);
        a.apply(&m0, &info(1));
        a.apply(&m1, &info(2));
        b.apply(&m1, &info(1));
        b.apply(&m0, &info(2));
        assert_eq!(a.applied(), b.applied());
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn ballast_differs_in_every_word_and_its_digest_sees_one_changed_byte() {
        let s = BenchState::new(Arc::new(Receiver::new(true)), 4096);
        let words: std::collections::HashSet<&[u8]> = s.ballast.chunks(8).collect();
        assert_eq!(words.len(), 512);
        let mut changed = s.ballast.clone();
        changed[4000] ^= 1;
        assert_ne!(words_digest(&s.ballast), words_digest(&changed));
        assert_ne!(words_digest(&s.ballast[..4095]), words_digest(&s.ballast));
    }

    #[test]
    fn default_bounds_hold_64_mib_of_the_largest_size() {
        assert_eq!(default_queue_limit(64), 1024);
        assert_eq!(default_queue_limit(200_000), 335);
        assert_eq!(default_queue_limit(1_000_000), 67);
        assert_eq!(default_queue_limit(100_000_000), 16);
        assert_eq!(default_in_flight(64), 256);
        assert_eq!(default_in_flight(1_000_000), 67);
        assert_eq!(default_in_flight(100_000_000), 4);
    }
}
