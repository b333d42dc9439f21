//! The third client kind: `cpg::group::Group` (blocking driver), so that the group
//! layer's send queue, confirmed send and reconnect run under the faults.
//!
//! It joins a CPG group of its own (the layer puts its header on every message, so it
//! cannot share the plain clients' group), queues sequence-numbered, checksummed
//! messages with `send_confirmed`, and records every view (with the leader it names),
//! every settled ring, every delivery (with its position), every confirmation (from
//! the event stream and from the receipt), every message not sent, and every
//! disconnection and reconnection. It survives a daemon kill: the layer reconnects.
//! Same control protocol and exit codes as the plain clients (`client.rs`).

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cpg::group::{Event, Group, Receipt, SendId};
use cpg::GroupName;

use crate::client::{control, fail, ClientConfig, Command, Sender, EXIT_LOST, EXIT_ORPHANED};
use crate::history::{fnv1a, now_ms, Api, Record, Recorder};

/// How long a stopping client waits for its receipts and its leave.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Most messages queued at once (back-pressure of the workload itself).
const MAX_PENDING: usize = 64;

/// Runs a group client to its end; returns the exit code.
pub fn run(config: &ClientConfig) -> i32 {
    let ctl = control();
    let rec = match Recorder::create(&config.history) {
        Ok(r) => r,
        Err(e) => return fail(&format!("{}: {e}", config.history.display())),
    };
    let name = match GroupName::new(&config.group) {
        Ok(g) => g,
        Err(e) => return fail(&format!("group name: {e}")),
    };
    let group = match Group::builder(name).start() {
        Ok(g) => g,
        Err(e) => {
            rec.record(&Record::Lost {
                error: e.to_string(),
                t: now_ms(),
            });
            return EXIT_LOST;
        }
    };
    // The node id is known once connected; the first view is waited for (its events
    // stay queued) so that the start record names it.
    let _ = group.wait_view(Duration::from_secs(30), |v| v.me().is_some());
    let node = group.me().map_or(0, |m| m.nodeid);
    rec.record(&Record::Start {
        inc: config.inc,
        node,
        pid: std::process::id(),
        api: Api::Group,
        t: now_ms(),
    });
    let mut c = GroupClient {
        rec,
        events: 0,
        by_id: HashMap::new(),
        receipts: Vec::new(),
        joined: false,
    };
    let code = c.drive(config, &group, &ctl);
    // To the client's stderr log (kept by --keep): whether its messages went out in
    // batches.
    let s = group.stats();
    eprintln!(
        "group stats: {} messages sent, {} batches sent, {} delivered, {} batches delivered",
        s.sent, s.batches_sent, s.delivered, s.batches_delivered
    );
    code
}

struct GroupClient {
    rec: Recorder,
    events: u64,
    /// Send id → sequence number.
    by_id: HashMap<SendId, u64>,
    /// Unresolved receipts, with their sequence numbers.
    receipts: Vec<(u64, Receipt)>,
    /// Whether the latest view contains this process.
    joined: bool,
}

fn vid(v: cpg::group::ViewId) -> (u64, u64) {
    (v.incarnation, v.counter)
}

impl GroupClient {
    fn drive(
        &mut self,
        config: &ClientConfig,
        group: &Group,
        ctl: &mpsc::Receiver<Command>,
    ) -> i32 {
        let interval =
            Duration::from_secs_f64(f64::from(config.burst.max(1)) / config.rate.max(0.01));
        let mut sender = Sender::new(config);
        let mut next_send = Instant::now();
        let mut stopping: Option<Instant> = None;
        loop {
            match ctl.try_recv() {
                Ok(Command::Stop) if stopping.is_none() => {
                    stopping = Some(Instant::now() + DRAIN_TIMEOUT);
                }
                Ok(Command::Orphaned) | Err(mpsc::TryRecvError::Disconnected) => {
                    return EXIT_ORPHANED
                }
                _ => {}
            }
            let now = Instant::now();
            // A burst of `config.burst` messages per tick (queued back to back, so the
            // layer packs them), `rate` per second on average.
            let mut burst = 0;
            while stopping.is_none()
                && self.joined
                && now >= next_send
                && self.receipts.len() < MAX_PENDING
                && burst < config.burst
            {
                burst += 1;
                let (seq, msg) = sender.message(false);
                self.rec.record(&Record::Send {
                    seq,
                    hash: fnv1a(&msg),
                    fin: false,
                    t: now_ms(),
                });
                match group.send_confirmed(msg) {
                    Ok(r) => {
                        self.by_id.insert(r.id(), seq);
                        self.receipts.push((seq, r));
                        self.rec.record(&Record::Sent {
                            seq,
                            error: None,
                            t: now_ms(),
                        });
                        sender.advance();
                        if burst == config.burst {
                            next_send = (next_send + interval).max(now);
                        }
                    }
                    Err(e) => {
                        self.rec.record(&Record::Sent {
                            seq,
                            error: Some(e.to_string()),
                            t: now_ms(),
                        });
                        sender.advance();
                        next_send = now + interval;
                    }
                }
            }
            // Drains the events (bounded per round).
            let wait = next_send
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            let mut budget = 1000;
            let mut timeout = wait;
            while budget > 0 {
                budget -= 1;
                let Some(event) = group.next_event(timeout) else {
                    break;
                };
                timeout = Duration::ZERO;
                if let Some(code) = self.event(event) {
                    return code;
                }
            }
            self.poll_receipts();
            if let Some(deadline) = stopping {
                if self.receipts.is_empty() || Instant::now() >= deadline {
                    let complete = self.receipts.is_empty();
                    let left = group.leave(deadline.saturating_duration_since(Instant::now()));
                    // The events up to the leave.
                    for _ in 0..100_000 {
                        match group.next_event(Duration::ZERO) {
                            Some(e) => {
                                let _ = self.event(e);
                            }
                            None => break,
                        }
                    }
                    self.poll_receipts();
                    self.rec.record(&Record::Drained {
                        complete: complete && left.is_ok(),
                        t: now_ms(),
                    });
                    self.rec.record(&Record::Closed {
                        events: self.events,
                        dispatched: None,
                        freed: None,
                        t: now_ms(),
                    });
                    return 0;
                }
            }
        }
    }

    fn poll_receipts(&mut self) {
        let rec = &self.rec;
        self.receipts.retain_mut(|(seq, r)| match r.try_get() {
            None => true,
            Some(Ok(p)) => {
                rec.record(&Record::Confirm {
                    seq: *seq,
                    view: vid(p.view),
                    index: p.index,
                    receipt: true,
                    t: now_ms(),
                });
                false
            }
            Some(Err(_)) => false,
        });
    }

    /// Records one event; `Some(exit code)` if the layer stopped.
    fn event(&mut self, event: Event) -> Option<i32> {
        self.events += 1;
        let t = now_ms();
        match event {
            Event::View(v) => {
                let members: Vec<(u32, u32)> =
                    v.members().iter().map(|m| (m.nodeid, m.pid)).collect();
                self.rec.record(&Record::GView {
                    members: members.clone(),
                    leader: v.leader().map(|m| (m.nodeid, m.pid)),
                    view: vid(v.id()),
                    t,
                });
                let shown: Vec<String> = members.iter().map(|(n, p)| format!("{n}:{p}")).collect();
                println!("view {}", shown.join(","));
                self.joined = v.me().is_some();
            }
            Event::Settled { view, ring } => self.rec.record(&Record::GSettled {
                view: vid(view),
                ring: (ring.nodeid, ring.seq),
                t,
            }),
            Event::Message(d) => {
                let payload = crate::history::decode(&d.data);
                self.rec.record(&Record::GDeliver {
                    from: (d.from.nodeid, d.from.pid),
                    inc: payload.map_or(0, |p| p.inc),
                    seq: payload.map_or(0, |p| p.seq),
                    hash: fnv1a(&d.data),
                    valid: payload.is_some(),
                    view: vid(d.position.view),
                    index: d.position.index,
                    t,
                });
            }
            Event::Confirmed { id, position } => {
                let seq = self.by_id.get(&id).copied().unwrap_or(0);
                self.rec.record(&Record::Confirm {
                    seq,
                    view: vid(position.view),
                    index: position.index,
                    receipt: false,
                    t,
                });
            }
            Event::NotSent { id, error } => self.rec.record(&Record::NotSent {
                seq: self.by_id.get(&id).copied().unwrap_or(0),
                error: error.to_string(),
                t,
            }),
            Event::Disconnected { error } => self.rec.record(&Record::Disconnected {
                error: error.to_string(),
                t,
            }),
            Event::Reconnected { incarnation, .. } => {
                self.rec.record(&Record::Reconnected { incarnation, t });
            }
            Event::Stopped(why) => {
                self.rec.record(&Record::Lost {
                    error: format!("{why:?}"),
                    t,
                });
                return Some(EXIT_LOST);
            }
            Event::Malformed { from, len } => self.rec.record(&Record::GDeliver {
                from: (from.nodeid, from.pid),
                inc: 0,
                seq: 0,
                hash: len as u64,
                valid: false,
                view: (0, 0),
                index: 0,
                t,
            }),
            _ => {}
        }
        None
    }
}
