//! The workload: one client process that joins the group, sends sequence-numbered,
//! checksummed messages at a steady rate, and records its history.
//!
//! Started by the coordinator as `nemesis client ...` inside a node's network
//! namespace. It talks to the coordinator through its standard streams: it prints
//! `view N:P,N:P,...` for every view it installs (stdout), and reads commands from
//! stdin: `stop` makes it stop sending, send a final ("fin") message, wait until it
//! has delivered the final message of every member of its view, close its handle and
//! exit 0. At EOF on stdin (the coordinator is gone) it exits at once.
//!
//! Exit codes: 0 stopped cleanly, 3 lost its daemon, 4 the coordinator went away,
//! 2 anything else (the reason on stderr).

use std::collections::HashSet;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cpg::{AsyncHandle, Event, GroupName, Handle, ListedMember, Options};

use crate::history::{encode, now_ms, Api, Member, Record, Recorder};
use crate::rng::Rng;

/// Exit code: the daemon was lost.
pub const EXIT_LOST: i32 = 3;
/// Exit code: stdin reached EOF (the coordinator died).
pub const EXIT_ORPHANED: i32 = 4;
/// Exit code: any other failure.
pub const EXIT_FAILED: i32 = 2;
/// How long a stopping client waits for the final messages of its view.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Stack of the thread that dispatches (libcpg needs well above 1 MiB).
const STACK: usize = 8 << 20;
/// Pause before a send that met back-pressure is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// What a client is told on its command line.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// History file to write.
    pub history: PathBuf,
    /// Group to join.
    pub group: String,
    /// Messages per second.
    pub rate: f64,
    /// The group-layer and replica clients: messages (operations) per burst, at
    /// `rate` on average.
    pub burst: u32,
    /// The API to use.
    pub api: Api,
    /// Incarnation number (unique in the run).
    pub inc: u32,
    /// Largest message body in bytes (each message's size is random up to this).
    pub max_size: usize,
    /// Seed of the message sizes.
    pub seed: u64,
}

/// A command from the coordinator.
pub enum Command {
    Stop,
    Orphaned,
}

/// Reads stdin on a thread of its own; the coordinator's commands arrive on the
/// returned channel (EOF as [`Command::Orphaned`]).
pub fn control() -> mpsc::Receiver<Command> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("nemesis-control".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == "stop" => {
                        let _ = tx.send(Command::Stop);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(Command::Orphaned);
            // The coordinator is gone: nobody will collect this history.
            std::thread::sleep(Duration::from_secs(2));
            std::process::exit(EXIT_ORPHANED);
        });
    if let Err(e) = spawned {
        eprintln!("nemesis client: cannot start the control thread: {e}");
        std::process::exit(EXIT_FAILED);
    }
    rx
}

/// Runs the client to its end; returns the exit code.
pub fn run(config: ClientConfig) -> i32 {
    match config.api {
        Api::Group => return crate::group_client::run(&config),
        Api::Replica => return crate::replica_client::run(&config),
        Api::Blocking | Api::Async => {}
    }
    let ctl = control();
    let worker = std::thread::Builder::new()
        .name("nemesis-client".into())
        .stack_size(STACK)
        .spawn(move || match config.api {
            Api::Blocking => blocking(&config, &ctl),
            Api::Async => match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(asynchronous(&config, &ctl)),
                Err(e) => fail(&format!("cannot build a tokio runtime: {e}")),
            },
            Api::Group => crate::group_client::run(&config),
            Api::Replica => crate::replica_client::run(&config),
        });
    match worker.map(std::thread::JoinHandle::join) {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => fail("the client thread panicked"),
        Err(e) => fail(&format!("cannot start the client thread: {e}")),
    }
}

pub fn fail(what: &str) -> i32 {
    eprintln!("nemesis client (pid {}): {what}", std::process::id());
    EXIT_FAILED
}

/// The client's view of the group and its bookkeeping, shared by both APIs.
struct State {
    rec: Recorder,
    me: Member,
    /// Events the application received (every callback / stream item).
    events: u64,
    view: Vec<Member>,
    /// Whether this client is in its current view (it has joined).
    joined: bool,
    /// Members whose final message was delivered.
    fins: HashSet<Member>,
    /// Set just before the handle is closed.
    closed: bool,
}

impl State {
    fn new(rec: Recorder) -> State {
        State {
            rec,
            me: (0, std::process::id()),
            events: 0,
            view: Vec::new(),
            joined: false,
            fins: HashSet::new(),
            closed: false,
        }
    }

    fn check_open(&self, what: &str) {
        if self.closed {
            self.rec.record(&Record::AfterClose {
                what: what.into(),
                t: now_ms(),
            });
        }
    }

    fn deliver(&mut self, from: Member, data: &[u8]) {
        self.events += 1;
        self.check_open("deliver");
        let payload = crate::history::decode(data);
        if payload.is_some_and(|p| p.fin) {
            self.fins.insert(from);
        }
        self.rec.record(&Record::Deliver {
            from,
            inc: payload.map_or(0, |p| p.inc),
            seq: payload.map_or(0, |p| p.seq),
            hash: crate::history::fnv1a(data),
            valid: payload.is_some(),
            fin: payload.is_some_and(|p| p.fin),
            t: now_ms(),
        });
    }

    fn view(&mut self, members: &[ListedMember], joined: &[ListedMember], left: &[ListedMember]) {
        self.events += 1;
        self.check_open("confchg");
        let mut list: Vec<Member> = members.iter().map(|a| (a.nodeid(), a.pid())).collect();
        list.sort_unstable();
        let triples = |v: &[ListedMember]| -> Vec<(u32, u32, u32)> {
            v.iter()
                .map(|a| (a.nodeid(), a.pid(), a.reason().to_raw()))
                .collect()
        };
        self.rec.record(&Record::View {
            members: list.clone(),
            joined: triples(joined),
            left: triples(left),
            t: now_ms(),
        });
        let shown: Vec<String> = list.iter().map(|(n, p)| format!("{n}:{p}")).collect();
        println!("view {}", shown.join(","));
        self.joined = list.contains(&self.me);
        self.view = list;
    }

    fn totem(&mut self, ring: cpg::RingId, members: &[u32]) {
        self.events += 1;
        self.check_open("totem confchg");
        self.rec.record(&Record::Totem {
            ring: (ring.nodeid, ring.seq),
            members: members.to_vec(),
            t: now_ms(),
        });
    }

    /// Whether the final message of every member of the current view arrived.
    fn drained(&self) -> bool {
        self.view.iter().all(|m| self.fins.contains(m))
    }
}

/// Sizes and sequence numbers of the messages to send.
pub struct Sender {
    inc: u32,
    seq: u64,
    seed: u64,
    max_size: usize,
}

impl Sender {
    pub fn new(config: &ClientConfig) -> Sender {
        Sender {
            inc: config.inc,
            seq: 1,
            seed: config.seed ^ u64::from(config.inc).rotate_left(32),
            max_size: config.max_size,
        }
    }

    /// The next message (the same bytes until [`Sender::advance`]).
    pub fn message(&mut self, fin: bool) -> (u64, Vec<u8>) {
        let size = if fin {
            0
        } else {
            // Deterministic per (inc, seq): a retry resends the same bytes.
            let mut r = Rng::new(self.seed ^ self.seq.wrapping_mul(0x2545_f491_4f6c_dd1d));
            r.below(self.max_size as u64 + 1) as usize
        };
        (self.seq, encode(self.inc, self.seq, fin, size))
    }

    pub fn advance(&mut self) {
        self.seq += 1;
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets its flag when dropped: tells whether `close` freed the callbacks.
struct FreedFlag(Arc<AtomicBool>);

impl Drop for FreedFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn blocking(config: &ClientConfig, ctl: &mpsc::Receiver<Command>) -> i32 {
    let rec = match Recorder::create(&config.history) {
        Ok(r) => r,
        Err(e) => return fail(&format!("{}: {e}", config.history.display())),
    };
    let state = Arc::new(Mutex::new(State::new(rec)));
    let freed = Arc::new(AtomicBool::new(false));
    let flag = FreedFlag(Arc::clone(&freed));
    let (s1, s2, s3) = (Arc::clone(&state), Arc::clone(&state), Arc::clone(&state));
    let built = Handle::builder()
        .initial_totem_conf(true)
        .on_deliver(move |_cpg, msg| {
            let _keep = &flag;
            lock(&s1).deliver((msg.nodeid, msg.pid), msg.data);
        })
        .on_confchg(move |_cpg, change| {
            lock(&s2).view(change.members, change.joined, change.left);
        })
        .on_totem_confchg(move |_cpg, change| {
            lock(&s3).totem(change.ring_id, change.members);
        })
        .build();
    let handle = match built {
        Ok(h) => h,
        Err(e) if e.is_daemon_lost() => return lost(&lock(&state).rec, &e),
        Err(e) => return fail(&format!("cannot connect: {e}")),
    };
    let node = match handle.local_node_id() {
        Ok(n) => n,
        Err(e) => return lost_or_fail(&lock(&state).rec, &e),
    };
    {
        let mut s = lock(&state);
        s.me = (node, std::process::id());
        s.rec.record(&Record::Start {
            inc: config.inc,
            node,
            pid: std::process::id(),
            api: Api::Blocking,
            t: now_ms(),
        });
    }
    let group = match GroupName::new(&config.group) {
        Ok(g) => g,
        Err(e) => return fail(&format!("group name: {e}")),
    };
    let backoff = cpg::retry::Backoff::default();
    if let Err(e) = cpg::retry::retry(&backoff, || handle.join(&group)) {
        return lost_or_fail(&lock(&state).rec, &e);
    }
    let interval = Duration::from_secs_f64(1.0 / config.rate.max(0.01));
    let mut sender = Sender::new(config);
    let mut next_send = Instant::now();
    let mut dispatched: u64 = 0;
    let mut stopping: Option<Instant> = None;
    let mut fin_sent = false;
    loop {
        match ctl.try_recv() {
            Ok(Command::Stop) if stopping.is_none() => {
                stopping = Some(Instant::now() + DRAIN_TIMEOUT);
                next_send = Instant::now();
            }
            Ok(Command::Orphaned) | Err(mpsc::TryRecvError::Disconnected) => return EXIT_ORPHANED,
            _ => {}
        }
        let now = Instant::now();
        let joined = lock(&state).joined;
        if joined && now >= next_send && !fin_sent {
            let fin = stopping.is_some();
            let (seq, msg) = sender.message(fin);
            lock(&state).rec.record(&Record::Send {
                seq,
                hash: crate::history::fnv1a(&msg),
                fin,
                t: now_ms(),
            });
            let result = handle.send(&msg);
            lock(&state).rec.record(&Record::Sent {
                seq,
                error: result.as_ref().err().map(ToString::to_string),
                t: now_ms(),
            });
            match result {
                Ok(()) => {
                    sender.advance();
                    next_send += interval;
                    if next_send < now {
                        next_send = now;
                    }
                    fin_sent = fin;
                }
                Err(e) if e.is_retryable() => next_send = now + RETRY_PAUSE,
                Err(e) => return lost_or_fail(&lock(&state).rec, &e),
            }
        }
        if let Some(deadline) = stopping {
            let done = fin_sent && lock(&state).drained();
            if done || Instant::now() >= deadline {
                lock(&state).rec.record(&Record::Drained {
                    complete: done,
                    t: now_ms(),
                });
                break;
            }
        }
        let wait = next_send
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        match handle.dispatch_timeout(wait) {
            Ok(d) => dispatched += d.callbacks() as u64,
            Err(e) => return lost_or_fail(&lock(&state).rec, &e),
        }
    }
    lock(&state).closed = true;
    let closed = handle.close();
    let s = lock(&state);
    if let Err(e) = closed {
        return fail(&format!("close: {e}"));
    }
    s.rec.record(&Record::Closed {
        events: s.events,
        dispatched: Some(dispatched),
        freed: Some(freed.load(Ordering::SeqCst)),
        t: now_ms(),
    });
    0
}

fn lost(rec: &Recorder, e: &cpg::Error) -> i32 {
    rec.record(&Record::Lost {
        error: e.to_string(),
        t: now_ms(),
    });
    EXIT_LOST
}

fn lost_or_fail(rec: &Recorder, e: &cpg::Error) -> i32 {
    if e.is_daemon_lost() {
        lost(rec, e)
    } else {
        fail(&e.to_string())
    }
}

/// Applies one stream event to the state.
fn apply(state: &mut State, event: &Event) {
    match event {
        Event::Deliver {
            nodeid, pid, data, ..
        } => state.deliver((*nodeid, *pid), data),
        Event::Confchg {
            members,
            left,
            joined,
            ..
        } => state.view(members, joined, left),
        Event::TotemConfchg { ring_id, members } => state.totem(*ring_id, members),
        _ => {}
    }
}

async fn asynchronous(config: &ClientConfig, ctl: &mpsc::Receiver<Command>) -> i32 {
    let rec = match Recorder::create(&config.history) {
        Ok(r) => r,
        Err(e) => return fail(&format!("{}: {e}", config.history.display())),
    };
    let mut state = State::new(rec);
    let mut options = Options::default();
    options.initial_totem_conf = true;
    let mut cpg = match AsyncHandle::with_options(options) {
        Ok(h) => h,
        Err(e) => return lost_or_fail(&state.rec, &e),
    };
    let node = match cpg.local_node_id() {
        Ok(n) => n,
        Err(e) => return lost_or_fail(&state.rec, &e),
    };
    state.me = (node, std::process::id());
    state.rec.record(&Record::Start {
        inc: config.inc,
        node,
        pid: std::process::id(),
        api: Api::Async,
        t: now_ms(),
    });
    let group = match GroupName::new(&config.group) {
        Ok(g) => g,
        Err(e) => return fail(&format!("group name: {e}")),
    };
    if let Err(e) = cpg.join(&group).await {
        return lost_or_fail(&state.rec, &e);
    }
    let interval = Duration::from_secs_f64(1.0 / config.rate.max(0.01));
    let mut sender = Sender::new(config);
    let mut next_send = tokio::time::Instant::now();
    let mut stopping: Option<Instant> = None;
    let mut fin_sent = false;
    // The control channel is polled between events (at least every 50 ms).
    let tick = Duration::from_millis(50);
    loop {
        match ctl.try_recv() {
            Ok(Command::Stop) if stopping.is_none() => {
                stopping = Some(Instant::now() + DRAIN_TIMEOUT);
                next_send = tokio::time::Instant::now();
            }
            Ok(Command::Orphaned) | Err(mpsc::TryRecvError::Disconnected) => return EXIT_ORPHANED,
            _ => {}
        }
        if let Some(deadline) = stopping {
            let done = fin_sent && state.drained();
            if done || Instant::now() >= deadline {
                state.rec.record(&Record::Drained {
                    complete: done,
                    t: now_ms(),
                });
                break;
            }
        }
        let now = tokio::time::Instant::now();
        if state.joined && now >= next_send && !fin_sent {
            let fin = stopping.is_some();
            let (seq, msg) = sender.message(fin);
            state.rec.record(&Record::Send {
                seq,
                hash: crate::history::fnv1a(&msg),
                fin,
                t: now_ms(),
            });
            // Waits out back-pressure (reading events into the stream's queue).
            let result = cpg.send(&msg).await;
            state.rec.record(&Record::Sent {
                seq,
                error: result.as_ref().err().map(ToString::to_string),
                t: now_ms(),
            });
            match result {
                Ok(()) => {
                    sender.advance();
                    next_send += interval;
                    if next_send < now {
                        next_send = now;
                    }
                    fin_sent = fin;
                }
                Err(e) => return lost_or_fail(&state.rec, &e),
            }
            continue;
        }
        let until = if state.joined && !fin_sent {
            next_send.min(now + tick)
        } else {
            now + tick
        };
        tokio::select! {
            event = cpg.next_event() => match event {
                Some(Ok(event)) => apply(&mut state, &event),
                Some(Err(e)) => return lost_or_fail(&state.rec, &e),
                None => return fail("the event stream ended"),
            },
            () = tokio::time::sleep_until(until) => {}
        }
    }
    state.closed = true;
    if let Err(e) = cpg.close() {
        return fail(&format!("close: {e}"));
    }
    state.rec.record(&Record::Closed {
        events: state.events,
        dispatched: None,
        freed: None,
        t: now_ms(),
    });
    0
}
