//! What a nemesis client records, one JSON object per line, and the message format.
//!
//! Every client incarnation (one process) writes its own history file. A record is
//! written with one `write(2)` before the client goes on, so a client killed with
//! SIGKILL leaves a complete prefix of its history behind. A send is recorded *before*
//! it is attempted ([`Record::Send`]) and its outcome after ([`Record::Sent`]), so
//! every message any member delivers has its intent on file.

use std::fs::File;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// A group member as CPG names it: (node id, process id).
pub type Member = (u32, u32);

/// Which API of the `cpg` crate a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `cpg::Handle` with callbacks, dispatched on a thread of its own.
    Blocking,
    /// `cpg::AsyncHandle` on a tokio runtime.
    Async,
    /// `cpg::group::Group` (blocking driver): send queue, confirmed send, reconnect.
    /// Its clients join a CPG group of their own (the layer's header is on every
    /// message) and record the `g*`, `confirm`, `notsent`, `disconnected` and
    /// `reconnected` records.
    Group,
    /// `cpg::replica::Replica` with a map of counters, in a CPG group of its own; it
    /// records its views (`gview`) and, when stopped, its final state (`rfinal`).
    Replica,
}

impl Api {
    /// The name used on the command line and in histories.
    pub fn name(self) -> &'static str {
        match self {
            Api::Blocking => "blocking",
            Api::Async => "async",
            Api::Group => "group",
            Api::Replica => "replica",
        }
    }

    /// Parses [`Api::name`].
    pub fn parse(s: &str) -> Option<Api> {
        match s {
            "blocking" => Some(Api::Blocking),
            "async" => Some(Api::Async),
            "group" => Some(Api::Group),
            "replica" => Some(Api::Replica),
            _ => None,
        }
    }
}

/// One line of a history. `t` is wall-clock time in milliseconds since the Unix epoch
/// (one machine, one clock: comparable with the fault log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The client started: its incarnation number, who CPG will say it is, its API.
    Start {
        /// Incarnation number, unique in the run (it is in every message it sends).
        inc: u32,
        /// Local node id.
        node: u32,
        /// Process id.
        pid: u32,
        /// The API it uses.
        api: Api,
        /// Time.
        t: u64,
    },
    /// A totem (node membership) change.
    Totem {
        /// Ring id: representative node id and sequence.
        ring: (u32, u64),
        /// Node ids in the ring.
        members: Vec<u32>,
        /// Time.
        t: u64,
    },
    /// A group membership change (a view): the new member list (sorted), and the
    /// joined and left lists with their reasons as this client was told.
    View {
        /// Members after the change, sorted.
        members: Vec<Member>,
        /// Joined: (node id, pid, reason).
        joined: Vec<(u32, u32, u32)>,
        /// Left: (node id, pid, reason).
        left: Vec<(u32, u32, u32)>,
        /// Time.
        t: u64,
    },
    /// A message was delivered.
    Deliver {
        /// The sender as CPG named it.
        from: Member,
        /// The incarnation the payload names (0 if it could not be decoded).
        inc: u32,
        /// The sequence number the payload carries.
        seq: u64,
        /// FNV-1a 64 of the whole message as received.
        hash: u64,
        /// Whether the payload decoded and its checksum matched.
        valid: bool,
        /// Whether it is a final ("fin") message.
        fin: bool,
        /// Time.
        t: u64,
    },
    /// About to send message `seq` (written before the attempt).
    Send {
        /// Sequence number.
        seq: u64,
        /// FNV-1a 64 of the whole message.
        hash: u64,
        /// Whether it is the final ("fin") message.
        fin: bool,
        /// Time.
        t: u64,
    },
    /// The outcome of sending `seq`: `None` for Ok, else the error.
    Sent {
        /// Sequence number.
        seq: u64,
        /// `None` if the send returned Ok.
        error: Option<String>,
        /// Time.
        t: u64,
    },
    /// The connection to the daemon was lost (the client then exits).
    Lost {
        /// The error.
        error: String,
        /// Time.
        t: u64,
    },
    /// Asked to stop: the client has seen (or given up waiting for) the final message
    /// of every member of its view.
    Drained {
        /// Whether every member's final message arrived.
        complete: bool,
        /// Time.
        t: u64,
    },
    /// The handle was closed. `events` counts the events the application received;
    /// `dispatched` what the binding's dispatch calls reported (blocking clients only);
    /// `freed` whether the callbacks were dropped by the close (blocking clients only).
    Closed {
        /// Events the application saw.
        events: u64,
        /// Callbacks `dispatch` reported running (`None` for the async API).
        dispatched: Option<u64>,
        /// Whether the callback state was freed when close returned (`None` for the
        /// async API, whose callbacks are the binding's own).
        freed: Option<bool>,
        /// Time.
        t: u64,
    },
    /// A callback ran after the handle was closed (must never happen).
    AfterClose {
        /// What ran.
        what: String,
        /// Time.
        t: u64,
    },
    /// Group client: a view installed (`Event::View`), with the leader it names and its
    /// local id (connection, counter).
    GView {
        /// Members, sorted.
        members: Vec<Member>,
        /// The leader the layer names.
        leader: Option<Member>,
        /// Local view id (incarnation, counter).
        view: (u64, u64),
        /// Time.
        t: u64,
    },
    /// Group client: the ring of a view became known (`Event::Settled`).
    GSettled {
        /// Local view id.
        view: (u64, u64),
        /// Ring id (representative, sequence).
        ring: (u32, u64),
        /// Time.
        t: u64,
    },
    /// Group client: a message delivered (`Event::Message`), with its position.
    GDeliver {
        /// The sender as CPG named it.
        from: Member,
        /// The incarnation the payload names (0 if it could not be decoded).
        inc: u32,
        /// The sequence number the payload carries.
        seq: u64,
        /// FNV-1a 64 of the payload (the layer's header removed).
        hash: u64,
        /// Whether the payload decoded and its checksum matched.
        valid: bool,
        /// Local view id of the position.
        view: (u64, u64),
        /// Index within the view (agreed).
        index: u64,
        /// Time.
        t: u64,
    },
    /// Group client: a confirmed send resolved as delivered, from the event stream
    /// (`receipt` false) or from the `Receipt` (`receipt` true).
    Confirm {
        /// Sequence number of the message.
        seq: u64,
        /// Local view id of the position.
        view: (u64, u64),
        /// Index within the view.
        index: u64,
        /// Which channel reported it.
        receipt: bool,
        /// Time.
        t: u64,
    },
    /// Group client: a message will not be sent, or its outcome is unknown.
    NotSent {
        /// Sequence number of the message.
        seq: u64,
        /// Why.
        error: String,
        /// Time.
        t: u64,
    },
    /// Group client: the connection to the daemon was lost (reconnecting follows).
    Disconnected {
        /// The error.
        error: String,
        /// Time.
        t: u64,
    },
    /// Group client: connected and joined again.
    Reconnected {
        /// The connection's number.
        incarnation: u64,
        /// Time.
        t: u64,
    },
    /// Replica client, when stopped: its final state and view.
    RFinal {
        /// Operations applied along the state's history.
        version: u64,
        /// The application's digest of the state.
        digest: u64,
        /// Members of its view then, sorted.
        members: Vec<Member>,
        /// Whether the replica was in a ready state (not syncing) before and after the
        /// quiet period.
        ready: bool,
        /// Operations it submitted.
        submitted: u64,
        /// Operations the final state's history applied twice or out of their
        /// origin's order (0 unless the layer broke exactly-once).
        disorder: u64,
        /// The highest sequence number of its own operations in the final state's
        /// history (0: none).
        own_last: u64,
        /// The highest sequence number of its own operations that were confirmed and
        /// not reported discarded afterwards (0: none).
        confirmed: u64,
        /// Own operations refused because the side was not quorate (at once, or at
        /// their agreed point: `ReplicaError::NotQuorate`).
        refused: u64,
        /// Time.
        t: u64,
    },
    /// Replica client: the agreed quorum changed at this point of the state's history
    /// (`Event::Quorum`).
    RQuorum {
        /// Whether it permits writes (quorate).
        permits: bool,
        /// The state as the layer prints it.
        state: String,
        /// The state's quorum epoch after the change.
        epoch: u64,
        /// Time.
        t: u64,
    },
    /// Replica client: the state learned a view (`Event::ViewApplied`): at which
    /// version of its history, after which round.
    RView {
        /// The round that synchronised the view (as the layer prints a `RoundId`:
        /// agreed by every member of the view).
        round: String,
        /// The view's members, sorted.
        members: Vec<Member>,
        /// The state's version at the change.
        version: u64,
        /// Time.
        t: u64,
    },
    /// Replica client: an operation's outcome: its own ticket's (`own`), or what this
    /// member's `apply` returned for an operation (its own or another member's)
    /// applied to the state its view agreed on, in its current view (the last
    /// [`Record::GView`] before it).
    ROp {
        /// The member that submitted it.
        origin: Member,
        /// Its sequence number at the origin.
        seq: u64,
        /// The state's version after it.
        version: u64,
        /// What `apply` returned (the counter's new value).
        output: i64,
        /// The state's quorum epoch when it was applied (0 for a ticket's record).
        epoch: u64,
        /// From the origin's own ticket.
        own: bool,
        /// Time.
        t: u64,
    },
}

fn triples(v: &[(u32, u32, u32)]) -> Value {
    Value::from(
        v.iter()
            .map(|&(n, p, r)| json!([n, p, r]))
            .collect::<Vec<_>>(),
    )
}

fn members(v: &[Member]) -> Value {
    Value::from(v.iter().map(|&(n, p)| json!([n, p])).collect::<Vec<_>>())
}

impl Record {
    /// The record as one JSON object.
    pub fn to_json(&self) -> Value {
        match self {
            Record::Start {
                inc,
                node,
                pid,
                api,
                t,
            } => {
                json!({"k": "start", "inc": inc, "node": node, "pid": pid, "api": api.name(), "t": t})
            }
            Record::Totem { ring, members, t } => {
                json!({"k": "totem", "ring": [ring.0, ring.1], "members": members, "t": t})
            }
            Record::View {
                members: m,
                joined,
                left,
                t,
            } => {
                json!({"k": "view", "members": members(m), "joined": triples(joined), "left": triples(left), "t": t})
            }
            Record::Deliver {
                from,
                inc,
                seq,
                hash,
                valid,
                fin,
                t,
            } => json!({"k": "deliver", "from": [from.0, from.1], "inc": inc, "seq": seq,
                        "hash": format!("{hash:016x}"), "valid": valid, "fin": fin, "t": t}),
            Record::Send { seq, hash, fin, t } => {
                json!({"k": "send", "seq": seq, "hash": format!("{hash:016x}"), "fin": fin, "t": t})
            }
            Record::Sent { seq, error, t } => {
                json!({"k": "sent", "seq": seq, "error": error, "t": t})
            }
            Record::Lost { error, t } => json!({"k": "lost", "error": error, "t": t}),
            Record::Drained { complete, t } => {
                json!({"k": "drained", "complete": complete, "t": t})
            }
            Record::Closed {
                events,
                dispatched,
                freed,
                t,
            } => {
                json!({"k": "closed", "events": events, "dispatched": dispatched, "freed": freed, "t": t})
            }
            Record::AfterClose { what, t } => json!({"k": "after_close", "what": what, "t": t}),
            Record::GView {
                members: m,
                leader,
                view,
                t,
            } => json!({"k": "gview", "members": members(m),
                        "leader": leader.map(|l| json!([l.0, l.1])),
                        "view": [view.0, view.1], "t": t}),
            Record::GSettled { view, ring, t } => {
                json!({"k": "gsettled", "view": [view.0, view.1], "ring": [ring.0, ring.1], "t": t})
            }
            Record::GDeliver {
                from,
                inc,
                seq,
                hash,
                valid,
                view,
                index,
                t,
            } => json!({"k": "gdeliver", "from": [from.0, from.1], "inc": inc, "seq": seq,
                        "hash": format!("{hash:016x}"), "valid": valid,
                        "view": [view.0, view.1], "index": index, "t": t}),
            Record::Confirm {
                seq,
                view,
                index,
                receipt,
                t,
            } => json!({"k": "confirm", "seq": seq, "view": [view.0, view.1], "index": index,
                        "receipt": receipt, "t": t}),
            Record::NotSent { seq, error, t } => {
                json!({"k": "notsent", "seq": seq, "error": error, "t": t})
            }
            Record::Disconnected { error, t } => {
                json!({"k": "disconnected", "error": error, "t": t})
            }
            Record::Reconnected { incarnation, t } => {
                json!({"k": "reconnected", "incarnation": incarnation, "t": t})
            }
            Record::RFinal {
                version,
                digest,
                members: m,
                ready,
                submitted,
                disorder,
                own_last,
                confirmed,
                refused,
                t,
            } => json!({"k": "rfinal", "version": version, "digest": format!("{digest:016x}"),
                        "members": members(m), "ready": ready, "submitted": submitted,
                        "disorder": disorder, "own_last": own_last, "confirmed": confirmed,
                        "refused": refused, "t": t}),
            Record::RQuorum {
                permits,
                state,
                epoch,
                t,
            } => json!({"k": "rquorum", "permits": permits, "state": state, "epoch": epoch,
                        "t": t}),
            Record::RView {
                round,
                members: m,
                version,
                t,
            } => json!({"k": "rview", "round": round, "members": members(m),
                        "version": version, "t": t}),
            Record::ROp {
                origin,
                seq,
                version,
                output,
                epoch,
                own,
                t,
            } => json!({"k": "rop", "origin": [origin.0, origin.1], "seq": seq,
                        "version": version, "output": output, "epoch": epoch, "own": own,
                        "t": t}),
        }
    }

    /// Parses a line written by [`Record::to_json`].
    pub fn parse(line: &str) -> Result<Record, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let bad = || format!("malformed record: {line}");
        let u = |key: &str| v.get(key).and_then(Value::as_u64).ok_or_else(bad);
        let u32_ = |key: &str| u(key).and_then(|x| u32::try_from(x).map_err(|_| bad()));
        let b = |key: &str| v.get(key).and_then(Value::as_bool).ok_or_else(bad);
        let s = |key: &str| v.get(key).and_then(Value::as_str).ok_or_else(bad);
        let hash = |key: &str| s(key).and_then(|h| u64::from_str_radix(h, 16).map_err(|_| bad()));
        let pair = |x: &Value| -> Option<Member> {
            let a = x.as_array()?;
            Some((
                u32::try_from(a.first()?.as_u64()?).ok()?,
                u32::try_from(a.get(1)?.as_u64()?).ok()?,
            ))
        };
        let triple = |x: &Value| -> Option<(u32, u32, u32)> {
            let a = x.as_array()?;
            Some((
                u32::try_from(a.first()?.as_u64()?).ok()?,
                u32::try_from(a.get(1)?.as_u64()?).ok()?,
                u32::try_from(a.get(2)?.as_u64()?).ok()?,
            ))
        };
        let list = |key: &str| v.get(key).and_then(Value::as_array).ok_or_else(bad);
        let two = |key: &str| -> Result<(u64, u64), String> {
            let a = list(key)?;
            Ok((
                a.first().and_then(Value::as_u64).ok_or_else(bad)?,
                a.get(1).and_then(Value::as_u64).ok_or_else(bad)?,
            ))
        };
        let t = u("t")?;
        Ok(match s("k")? {
            "start" => Record::Start {
                inc: u32_("inc")?,
                node: u32_("node")?,
                pid: u32_("pid")?,
                api: Api::parse(s("api")?).ok_or_else(bad)?,
                t,
            },
            "totem" => {
                let ring = list("ring")?;
                let ring = (
                    ring.first()
                        .and_then(Value::as_u64)
                        .and_then(|x| u32::try_from(x).ok())
                        .ok_or_else(bad)?,
                    ring.get(1).and_then(Value::as_u64).ok_or_else(bad)?,
                );
                let members = list("members")?
                    .iter()
                    .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(bad)?;
                Record::Totem { ring, members, t }
            }
            "view" => Record::View {
                members: list("members")?
                    .iter()
                    .map(pair)
                    .collect::<Option<_>>()
                    .ok_or_else(bad)?,
                joined: list("joined")?
                    .iter()
                    .map(triple)
                    .collect::<Option<_>>()
                    .ok_or_else(bad)?,
                left: list("left")?
                    .iter()
                    .map(triple)
                    .collect::<Option<_>>()
                    .ok_or_else(bad)?,
                t,
            },
            "deliver" => Record::Deliver {
                from: v.get("from").and_then(pair).ok_or_else(bad)?,
                inc: u32_("inc")?,
                seq: u("seq")?,
                hash: hash("hash")?,
                valid: b("valid")?,
                fin: b("fin")?,
                t,
            },
            "send" => Record::Send {
                seq: u("seq")?,
                hash: hash("hash")?,
                fin: b("fin")?,
                t,
            },
            "sent" => Record::Sent {
                seq: u("seq")?,
                error: v.get("error").and_then(Value::as_str).map(str::to_string),
                t,
            },
            "lost" => Record::Lost {
                error: s("error")?.to_string(),
                t,
            },
            "drained" => Record::Drained {
                complete: b("complete")?,
                t,
            },
            "closed" => Record::Closed {
                events: u("events")?,
                dispatched: v.get("dispatched").and_then(Value::as_u64),
                freed: v.get("freed").and_then(Value::as_bool),
                t,
            },
            "after_close" => Record::AfterClose {
                what: s("what")?.to_string(),
                t,
            },
            "gview" => Record::GView {
                members: list("members")?
                    .iter()
                    .map(pair)
                    .collect::<Option<_>>()
                    .ok_or_else(bad)?,
                leader: match v.get("leader") {
                    None | Some(Value::Null) => None,
                    Some(l) => Some(pair(l).ok_or_else(bad)?),
                },
                view: two("view")?,
                t,
            },
            "gsettled" => {
                let ring = two("ring")?;
                Record::GSettled {
                    view: two("view")?,
                    ring: (u32::try_from(ring.0).map_err(|_| bad())?, ring.1),
                    t,
                }
            }
            "gdeliver" => Record::GDeliver {
                from: v.get("from").and_then(pair).ok_or_else(bad)?,
                inc: u32_("inc")?,
                seq: u("seq")?,
                hash: hash("hash")?,
                valid: b("valid")?,
                view: two("view")?,
                index: u("index")?,
                t,
            },
            "confirm" => Record::Confirm {
                seq: u("seq")?,
                view: two("view")?,
                index: u("index")?,
                receipt: b("receipt")?,
                t,
            },
            "notsent" => Record::NotSent {
                seq: u("seq")?,
                error: s("error")?.to_string(),
                t,
            },
            "disconnected" => Record::Disconnected {
                error: s("error")?.to_string(),
                t,
            },
            "reconnected" => Record::Reconnected {
                incarnation: u("incarnation")?,
                t,
            },
            "rfinal" => Record::RFinal {
                version: u("version")?,
                digest: hash("digest")?,
                members: list("members")?
                    .iter()
                    .map(pair)
                    .collect::<Option<_>>()
                    .ok_or_else(bad)?,
                ready: b("ready")?,
                submitted: u("submitted")?,
                // Histories kept before these fields existed have none: 0 checks nothing.
                disorder: u("disorder").unwrap_or(0),
                own_last: u("own_last").unwrap_or(0),
                confirmed: u("confirmed").unwrap_or(0),
                refused: u("refused").unwrap_or(0),
                t,
            },
            "rview" => Record::RView {
                round: s("round")?.to_string(),
                members: list("members")?
                    .iter()
                    .map(pair)
                    .collect::<Option<_>>()
                    .ok_or_else(bad)?,
                version: u("version")?,
                t,
            },
            "rop" => Record::ROp {
                origin: v.get("origin").and_then(pair).ok_or_else(bad)?,
                seq: u("seq")?,
                version: u("version")?,
                output: v.get("output").and_then(Value::as_i64).ok_or_else(bad)?,
                epoch: u("epoch").unwrap_or(0),
                own: b("own")?,
                t,
            },
            "rquorum" => Record::RQuorum {
                permits: b("permits")?,
                state: s("state")?.to_string(),
                epoch: u("epoch")?,
                t,
            },
            _ => return Err(bad()),
        })
    }
}

/// One client incarnation's history, as read back by the checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// Where it came from (file name), for reports.
    pub name: String,
    /// The records in the order written.
    pub records: Vec<Record>,
}

impl History {
    /// Reads a history file. A last line cut short by a SIGKILL mid-write (never seen:
    /// each record is one `write`) would be dropped, not fail the run.
    pub fn read(path: &std::path::Path) -> Result<History, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let lines: Vec<&str> = text.lines().collect();
        let mut records = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match Record::parse(line) {
                Ok(r) => records.push(r),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
                Err(e) => return Err(format!("{}:{}: {e}", path.display(), i + 1)),
            }
        }
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Ok(History { name, records })
    }
}

/// Appends records to a history file, one `write(2)` per record.
#[derive(Debug)]
pub struct Recorder {
    file: File,
}

impl Recorder {
    /// Creates (truncates) the history file.
    pub fn create(path: &std::path::Path) -> std::io::Result<Recorder> {
        Ok(Recorder {
            file: File::create(path)?,
        })
    }

    /// Writes one record. A failure to write aborts the client: a history with a hole
    /// would make the checker report violations that did not happen.
    pub fn record(&self, record: &Record) {
        let mut line = record.to_json().to_string();
        line.push('\n');
        if let Err(e) = (&self.file).write_all(line.as_bytes()) {
            eprintln!("nemesis client: cannot write its history: {e}");
            std::process::exit(2);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// FNV-1a, 64 bits.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Magic at the start of every nemesis message.
const MAGIC: &[u8; 4] = b"NMS1";
/// Magic, incarnation, sequence, flags, body length.
const HEADER: usize = 4 + 4 + 8 + 1 + 4;
/// Flag bit: the sender's final message.
const FLAG_FIN: u8 = 1;

/// A decoded nemesis message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    /// Sender incarnation.
    pub inc: u32,
    /// Sequence number.
    pub seq: u64,
    /// Final message.
    pub fin: bool,
}

/// Encodes a message: header, `body_len` bytes derived from (inc, seq), and an FNV-1a
/// checksum of everything before it.
pub fn encode(inc: u32, seq: u64, fin: bool, body_len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + body_len + 8);
    m.extend_from_slice(MAGIC);
    m.extend_from_slice(&inc.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.push(if fin { FLAG_FIN } else { 0 });
    m.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
    let mut x = u64::from(inc) << 32 ^ seq ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..body_len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.push(x as u8);
    }
    let sum = fnv1a(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    m
}

/// Decodes a message; `None` unless the magic, the length and the checksum are right.
pub fn decode(m: &[u8]) -> Option<Payload> {
    if m.len() < HEADER + 8 || &m[..4] != MAGIC {
        return None;
    }
    let (body, sum) = m.split_at(m.len() - 8);
    if fnv1a(body).to_le_bytes() != sum {
        return None;
    }
    let inc = u32::from_le_bytes(m[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(m[8..16].try_into().ok()?);
    let flags = m[16];
    let len = u32::from_le_bytes(m[17..21].try_into().ok()?) as usize;
    if HEADER + len + 8 != m.len() {
        return None;
    }
    Some(Payload {
        inc,
        seq,
        fin: flags & FLAG_FIN != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json() {
        let records = [
            Record::Start {
                inc: 3,
                node: 2,
                pid: 99,
                api: Api::Async,
                t: 5,
            },
            Record::Totem {
                ring: (1, 0x1c),
                members: vec![1, 2, 3],
                t: 6,
            },
            Record::View {
                members: vec![(1, 10), (2, 99)],
                joined: vec![(2, 99, 1)],
                left: vec![(3, 7, 3)],
                t: 7,
            },
            Record::Deliver {
                from: (1, 10),
                inc: 1,
                seq: 4,
                hash: u64::MAX,
                valid: true,
                fin: false,
                t: 8,
            },
            Record::Send {
                seq: 5,
                hash: 1,
                fin: true,
                t: 9,
            },
            Record::Sent {
                seq: 5,
                error: Some("CS_ERR_TRY_AGAIN".into()),
                t: 10,
            },
            Record::Sent {
                seq: 5,
                error: None,
                t: 10,
            },
            Record::Lost {
                error: "x".into(),
                t: 11,
            },
            Record::Drained {
                complete: true,
                t: 12,
            },
            Record::Closed {
                events: 9,
                dispatched: Some(9),
                freed: Some(true),
                t: 13,
            },
            Record::Closed {
                events: 9,
                dispatched: None,
                freed: None,
                t: 13,
            },
            Record::AfterClose {
                what: "deliver".into(),
                t: 14,
            },
            Record::GView {
                members: vec![(1, 10), (2, 99)],
                leader: Some((1, 10)),
                view: (1, 2),
                t: 15,
            },
            Record::GView {
                members: vec![],
                leader: None,
                view: (2, 3),
                t: 15,
            },
            Record::GSettled {
                view: (1, 2),
                ring: (1, 0x1c),
                t: 16,
            },
            Record::GDeliver {
                from: (1, 10),
                inc: 1,
                seq: 4,
                hash: 7,
                valid: true,
                view: (1, 2),
                index: 0,
                t: 17,
            },
            Record::Confirm {
                seq: 4,
                view: (1, 2),
                index: 0,
                receipt: true,
                t: 18,
            },
            Record::NotSent {
                seq: 5,
                error: "x".into(),
                t: 19,
            },
            Record::Disconnected {
                error: "y".into(),
                t: 20,
            },
            Record::Reconnected {
                incarnation: 2,
                t: 21,
            },
            Record::RFinal {
                version: 40,
                digest: u64::MAX - 1,
                members: vec![(1, 10), (2, 99)],
                ready: true,
                submitted: 13,
                disorder: 1,
                own_last: 12,
                confirmed: 11,
                refused: 3,
                t: 22,
            },
            Record::RQuorum {
                permits: false,
                state: "not quorate in ring 3.8".into(),
                epoch: 4,
                t: 22,
            },
            Record::RView {
                round: "round 1:10@1.2#0".into(),
                members: vec![(1, 10), (2, 99)],
                version: 17,
                t: 23,
            },
            Record::ROp {
                origin: (2, 99),
                seq: 5,
                version: 18,
                output: -4,
                epoch: 4,
                own: false,
                t: 24,
            },
        ];
        for r in records {
            let line = r.to_json().to_string();
            assert_eq!(Record::parse(&line), Ok(r), "{line}");
        }
    }

    #[test]
    fn messages_decode_and_corruption_is_caught() {
        let m = encode(7, 42, true, 100);
        assert_eq!(
            decode(&m),
            Some(Payload {
                inc: 7,
                seq: 42,
                fin: true
            })
        );
        let mut bad = m.clone();
        bad[30] ^= 1;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&m[..m.len() - 1]), None);
        assert_eq!(decode(b"short"), None);
    }
}
