//! What the measurement programs of this package (`src/bin/`) share, so that the only
//! difference between `bench` (safe crate) and `bench_raw` (raw `corosync-sys` calls) is
//! the binding layer: the wire format of benchmark messages, the checksum, the
//! receiver's accounting, the counting allocator, CPU time, the sending side of a
//! two-thread client ([`send_sweep`]), latency statistics, and the report; and the
//! clients of the protocol layers ([`layers`]: `bench --layer group|replica`).
//!
//! Benchmark plumbing, not an API: a library target only so that the programs can
//! share it as a module.

pub mod layers;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First four bytes of every benchmark message ("CPGB", little endian).
pub const MAGIC: u32 = u32::from_le_bytes(*b"CPGB");
/// Length of the header every benchmark message starts with.
pub const HEADER_LEN: usize = 32;
/// The default sweep: 64 B to 1 MB, growing ×5.
pub const DEFAULT_SIZES: &str = "64,320,1600,8000,40000,200000,1000000";
/// The default group of the benchmark.
pub const DEFAULT_GROUP: &str = "cpg-bench";

// The options both benchmark clients (`bench` and `bench_raw`) take. (A plain comment:
// clap would take a doc comment here as the `about` of the programs that flatten it.)
#[allow(missing_docs)]
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Seconds to send each message size for.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Message sizes in bytes, comma-separated (each at least 32).
    #[arg(long, default_value = DEFAULT_SIZES)]
    pub sizes: String,
    /// Group to join.
    #[arg(long, default_value = DEFAULT_GROUP)]
    pub group: String,
    /// Print one JSON object per size instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl SweepArgs {
    /// The sizes to sweep, after checking them and the window.
    pub fn checked_sizes(&self) -> Result<Vec<usize>, String> {
        if !(self.duration > 0.0 && self.duration < 3600.0) {
            return Err("--duration must be between 0 and 3600 seconds".into());
        }
        parse_sizes(&self.sizes)
    }

    /// How long each size is sent for.
    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }
}
/// How long a sender waits for its own end marker to come back after a window.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a benchmark message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Payload, counted.
    Data = 1,
    /// The sender finished one message size; `seq` is how many data messages it has
    /// sent in total so far; the size follows the header.
    EndOfSize = 2,
    /// The sender finished the sweep; `seq` as for `EndOfSize`.
    EndOfRun = 3,
}

/// The header: magic, kind, sender node id and pid, sequence number, total length,
/// checksum ([`message_checksum`]: over the whole message but this field; 0 = not
/// computed).
///
/// ```text
/// 0 magic u32 | 4 kind u32 | 8 nodeid u32 | 12 pid u32 | 16 seq u64 | 24 len u32 | 28 sum u32
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message kind.
    pub kind: Kind,
    /// Sender's node id.
    pub nodeid: u32,
    /// Sender's pid.
    pub pid: u32,
    /// Per-sender sequence number of data messages (0, 1, 2, ...).
    pub seq: u64,
    /// Total message length, header included.
    pub len: u32,
    /// Checksum, 0 when the sender did not compute one.
    pub checksum: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    /// Reads the header of a message; `None` if it is not a benchmark message.
    #[inline]
    pub fn parse(msg: &[u8]) -> Option<Header> {
        if msg.len() < HEADER_LEN || u32_at(msg, 0) != MAGIC {
            return None;
        }
        let kind = match u32_at(msg, 4) {
            1 => Kind::Data,
            2 => Kind::EndOfSize,
            3 => Kind::EndOfRun,
            _ => return None,
        };
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&msg[16..24]);
        Some(Header {
            kind,
            nodeid: u32_at(msg, 8),
            pid: u32_at(msg, 12),
            seq: u64::from_le_bytes(seq),
            len: u32_at(msg, 24),
            checksum: u32_at(msg, 28),
        })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    #[inline(always)]
    pub fn write(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        buf[4..8].copy_from_slice(&(self.kind as u32).to_le_bytes());
        buf[8..12].copy_from_slice(&self.nodeid.to_le_bytes());
        buf[12..16].copy_from_slice(&self.pid.to_le_bytes());
        buf[16..24].copy_from_slice(&self.seq.to_le_bytes());
        buf[24..28].copy_from_slice(&self.len.to_le_bytes());
        buf[28..32].copy_from_slice(&self.checksum.to_le_bytes());
    }
}

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;

/// The little-endian word at the start of `b` (8 bytes).
#[inline(always)]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// A 64-bit checksum of `bytes`: four lanes of multiply-xor over 8-byte words (a lane
/// per word of each 32-byte block, so that the multiplications overlap), the tail
/// zero-padded, the length mixed in. Every step is a bijection of its lane's state, so
/// a change of one word always changes that lane; the lanes combine linearly with odd
/// multipliers. About a byte per cycle (the byte-at-a-time FNV-1a it replaced cost
/// 3.4 ms of client CPU per verified 1 MB message, more than the daemons' share).
pub fn checksum64(bytes: &[u8]) -> u64 {
    let mut lanes = [K1, K2, K1 ^ K2, !K1];
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = (*lane ^ word(&block[i * 8..]))
                .wrapping_mul(K2)
                .rotate_left(31);
        }
    }
    let tail = blocks.remainder();
    for (i, chunk) in tail.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        let lane = &mut lanes[i];
        *lane = (*lane ^ u64::from_le_bytes(w))
            .wrapping_mul(K2)
            .rotate_left(31);
    }
    let mut h = bytes.len() as u64;
    for lane in lanes {
        h = h.wrapping_mul(K1).wrapping_add(lane);
    }
    h ^= h >> 29;
    h.wrapping_mul(K2) ^ (h >> 32)
}

/// The checksum of a whole message (the header field): [`checksum64`] of the first 28
/// bytes and of the payload, combined and folded to 32 bits; never 0 (0 means "not
/// computed").
pub fn message_checksum(msg: &[u8]) -> u32 {
    let h = checksum64(&msg[..28])
        .wrapping_mul(K1)
        .wrapping_add(checksum64(&msg[HEADER_LEN..]));
    let folded = (h ^ (h >> 32)) as u32;
    // 0 means "no checksum": map the one unlucky value elsewhere.
    folded.max(1)
}

/// Fills `buf` (a message of `buf.len()` bytes) as a data message with sequence
/// number `seq`. In verify mode the payload depends on `seq` (and on the position of
/// each word) and the checksum is set; otherwise only the header changes between
/// messages.
#[inline(always)]
pub fn fill_data(buf: &mut [u8], nodeid: u32, pid: u32, seq: u64, verify: bool) {
    if verify {
        let key = seq.wrapping_mul(K1) ^ K2;
        let mut words = buf[HEADER_LEN..].chunks_exact_mut(8);
        let mut i: u64 = 0;
        for w in &mut words {
            // Each word on its own (no chain from word to word): cheap, and different
            // for every seq and position.
            let x = (key ^ i).wrapping_mul(K1);
            w.copy_from_slice(&(x ^ (x >> 31)).to_le_bytes());
            i += 1;
        }
        let rest = words.into_remainder();
        let x = (key ^ i).wrapping_mul(K1).to_le_bytes();
        rest.copy_from_slice(&x[..rest.len()]);
    }
    let mut header = Header {
        kind: Kind::Data,
        nodeid,
        pid,
        seq,
        len: buf.len() as u32,
        checksum: 0,
    };
    header.write(buf);
    if verify {
        header.checksum = message_checksum(buf);
        header.write(buf);
    }
}

/// Length of a control message: the header and the message size it refers to (u64).
pub const CONTROL_LEN: usize = HEADER_LEN + 8;

/// A control message (end of a size, end of the run): the header (with `seq` = data
/// messages sent so far) followed by the message size it refers to.
pub fn control(kind: Kind, nodeid: u32, pid: u32, sent: u64, size: u32) -> [u8; CONTROL_LEN] {
    let mut buf = [0u8; CONTROL_LEN];
    buf[HEADER_LEN..].copy_from_slice(&u64::from(size).to_le_bytes());
    let mut header = Header {
        kind,
        nodeid,
        pid,
        seq: sent,
        len: CONTROL_LEN as u32,
        checksum: 0,
    };
    header.write(&mut buf);
    header.checksum = message_checksum(&buf);
    header.write(&mut buf);
    buf
}

/// The size a control message refers to.
fn control_size(msg: &[u8]) -> u32 {
    msg.get(HEADER_LEN..HEADER_LEN + 4)
        .map_or(0, |b| u32_at(b, 0))
}

/// Per-sender findings of the verify mode.
#[derive(Debug, Default, Clone)]
pub struct SenderReport {
    /// Data messages received.
    pub received: u64,
    /// Sequence numbers never received (so far).
    pub lost: u64,
    /// Messages received twice.
    pub duplicated: u64,
    /// Messages received after a later one of the same sender.
    pub reordered: u64,
    /// Messages whose length or checksum was wrong.
    pub corrupted: u64,
    /// Data messages the sender says it sent (from its end markers).
    pub sent: u64,
    /// An end-of-run marker arrived from this sender.
    pub finished: bool,
}

impl SenderReport {
    /// Any loss, duplication, reordering or corruption.
    pub fn is_bad(&self) -> bool {
        self.lost + self.duplicated + self.reordered + self.corrupted > 0
    }
}

/// Missing sequence numbers remembered individually (to tell a late arrival from a
/// duplicate); beyond this, losses are only counted.
const MAX_TRACKED_GAPS: usize = 1 << 20;

#[derive(Debug, Default)]
struct SenderState {
    next: u64,
    missing: BTreeSet<u64>,
    report: SenderReport,
}

impl SenderState {
    fn data(&mut self, seq: u64) {
        self.report.received += 1;
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            let gap = seq - self.next;
            self.report.lost += gap;
            if self.missing.len() as u64 + gap <= MAX_TRACKED_GAPS as u64 {
                self.missing.extend(self.next..seq);
            }
            self.next = seq + 1;
        } else if self.missing.remove(&seq) {
            self.report.lost -= 1;
            self.report.reordered += 1;
        } else {
            self.report.duplicated += 1;
        }
    }

    /// The sender says it has sent `sent` data messages: any not seen are lost.
    fn end(&mut self, sent: u64) {
        self.report.sent = self.report.sent.max(sent);
        if sent > self.next {
            let gap = sent - self.next;
            self.report.lost += gap;
            if self.missing.len() as u64 + gap <= MAX_TRACKED_GAPS as u64 {
                self.missing.extend(self.next..sent);
            }
            self.next = sent;
        }
    }
}

/// What a receiver counts: always messages and bytes of the current window; in verify
/// mode also sequence, duplicates and checksums per sender.
///
/// The counters are atomics only so that the state can be shared with a callback that
/// must be `Send`; there is one writer (the dispatching thread), so they are updated
/// with plain loads and stores, which compile to ordinary moves.
#[derive(Debug, Default)]
pub struct Receiver {
    /// Data messages received while `counting`.
    pub msgs: AtomicU64,
    /// Bytes of those.
    pub bytes: AtomicU64,
    /// Count data messages (set during a measurement window).
    pub counting: AtomicBool,
    /// Data messages received in total (whatever `counting` says).
    pub total: AtomicU64,
    /// Size of the last data message (for receive-only reports).
    pub last_size: AtomicU64,
    /// End-of-size markers seen and not yet taken: (sender node id, pid, size).
    pub end_of_size: Mutex<Vec<(u32, u32, u32)>>,
    /// Number of end-of-size / end-of-run markers seen (cheap check before locking).
    pub markers: AtomicU64,
    /// This process's own end markers seen: the sender waits for these to drain.
    pub own_markers: AtomicU64,
    /// This process's own data messages delivered back to it (what `--latency` waits
    /// for).
    pub own_data: AtomicU64,
    /// Our own node id and pid, to recognise our own markers.
    pub me: (AtomicU64, AtomicU64),
    /// Verify mode: check every message.
    pub verify: AtomicBool,
    senders: Mutex<HashMap<(u32, u32), SenderState>>,
}

impl Receiver {
    /// A receiver; `verify` turns on the per-sender checks.
    pub fn new(verify: bool) -> Receiver {
        let r = Receiver::default();
        r.verify.store(verify, Ordering::Relaxed);
        r
    }

    /// Records who we are (to recognise our own end markers).
    pub fn set_me(&self, nodeid: u32, pid: u32) {
        self.me.0.store(u64::from(nodeid), Ordering::Relaxed);
        self.me.1.store(u64::from(pid), Ordering::Relaxed);
    }

    #[inline]
    fn bump(counter: &AtomicU64, by: u64) {
        counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
    }

    /// Counts a data message of our own.
    #[inline(always)]
    fn count_own(&self, nodeid: u32, pid: u32) {
        if u64::from(pid) == self.me.1.load(Ordering::Relaxed)
            && u64::from(nodeid) == self.me.0.load(Ordering::Relaxed)
        {
            Self::bump(&self.own_data, 1);
        }
    }

    /// Accounts one delivered message (called from the deliver callback).
    #[inline]
    pub fn deliver(&self, nodeid: u32, pid: u32, msg: &[u8]) {
        let verify = self.verify.load(Ordering::Relaxed);
        if !verify {
            // The hot path: a look at the kind, two counters.
            if msg.len() >= HEADER_LEN && u32_at(msg, 0) == MAGIC && u32_at(msg, 4) == 1 {
                Self::bump(&self.total, 1);
                self.count_own(nodeid, pid);
                if self.counting.load(Ordering::Relaxed) {
                    Self::bump(&self.msgs, 1);
                    Self::bump(&self.bytes, msg.len() as u64);
                }
                self.last_size.store(msg.len() as u64, Ordering::Relaxed);
                return;
            }
        }
        let Some(header) = Header::parse(msg) else {
            if verify {
                // Not even a header: corrupted (or a stranger in our group).
                let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
                senders.entry((nodeid, pid)).or_default().report.corrupted += 1;
            }
            return;
        };
        let intact = header.len as usize == msg.len()
            && (header.checksum == 0 || header.checksum == message_checksum(msg))
            && header.nodeid == nodeid
            && header.pid == pid;
        match header.kind {
            Kind::Data => {
                Self::bump(&self.total, 1);
                self.count_own(nodeid, pid);
                if self.counting.load(Ordering::Relaxed) {
                    Self::bump(&self.msgs, 1);
                    Self::bump(&self.bytes, msg.len() as u64);
                }
                self.last_size.store(msg.len() as u64, Ordering::Relaxed);
                if verify {
                    let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
                    let state = senders.entry((nodeid, pid)).or_default();
                    if intact && header.checksum != 0 {
                        state.data(header.seq);
                    } else {
                        state.report.received += 1;
                        state.report.corrupted += 1;
                    }
                }
            }
            Kind::EndOfSize | Kind::EndOfRun => {
                if !intact {
                    let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
                    senders.entry((nodeid, pid)).or_default().report.corrupted += 1;
                    return;
                }
                {
                    let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
                    let state = senders.entry((nodeid, pid)).or_default();
                    if verify {
                        state.end(header.seq);
                    } else {
                        state.report.sent = header.seq;
                    }
                    if header.kind == Kind::EndOfRun {
                        state.report.finished = true;
                    }
                }
                if header.kind == Kind::EndOfSize {
                    let mut ends = self.end_of_size.lock().unwrap_or_else(|e| e.into_inner());
                    ends.push((nodeid, pid, control_size(msg)));
                }
                Self::bump(&self.markers, 1);
                if u64::from(nodeid) == self.me.0.load(Ordering::Relaxed)
                    && u64::from(pid) == self.me.1.load(Ordering::Relaxed)
                {
                    Self::bump(&self.own_markers, 1);
                }
            }
        }
    }

    /// Takes the end-of-size markers seen since the last call.
    pub fn take_end_of_size(&self) -> Vec<(u32, u32, u32)> {
        std::mem::take(&mut *self.end_of_size.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Starts a measurement window: zero the window counters and count.
    pub fn start_window(&self) {
        self.msgs.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.counting.store(true, Ordering::Relaxed);
    }

    /// Ends the window: (messages, bytes).
    pub fn stop_window(&self) -> (u64, u64) {
        self.counting.store(false, Ordering::Relaxed);
        (
            self.msgs.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// The per-sender reports, sorted by sender.
    pub fn reports(&self) -> Vec<((u32, u32), SenderReport)> {
        let senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = senders
            .iter()
            .map(|(k, v)| (*k, v.report.clone()))
            .collect();
        all.sort_by_key(|(k, _)| *k);
        all
    }

    /// Senders that have sent their end-of-run marker.
    pub fn finished_senders(&self) -> usize {
        let senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders.values().filter(|s| s.report.finished).count()
    }
}

/// Counts heap allocations, so the benchmark can show that receiving allocates nothing.
pub struct CountingAlloc;

/// Allocations made so far by the process (`alloc`, `alloc_zeroed`, `realloc`).
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged, so the GlobalAlloc contract holds exactly as it does for `System`; the
// counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations made so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// CPU time (user + system) used by this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out pointer; getrusage only writes the struct.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Parses `--sizes`: comma-separated byte counts, each at least [`HEADER_LEN`].
pub fn parse_sizes(text: &str) -> Result<Vec<usize>, String> {
    let mut sizes = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n: usize = part
            .parse()
            .map_err(|_| format!("--sizes: {part:?} is not a byte count"))?;
        if n < HEADER_LEN {
            return Err(format!(
                "--sizes: {n} is below the {HEADER_LEN}-byte benchmark header"
            ));
        }
        if n > u32::MAX as usize {
            return Err(format!("--sizes: {n} is too large"));
        }
        sizes.push(n);
    }
    if sizes.is_empty() {
        return Err("--sizes: no sizes given".into());
    }
    Ok(sizes)
}

/// One row of the report.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Which implementation measured it ("safe", "safe-zcb", "async" or "raw").
    pub implementation: &'static str,
    /// Bytes per message.
    pub size: usize,
    /// Messages received in the window.
    pub msgs: u64,
    /// Bytes received in the window.
    pub bytes: u64,
    /// Length of the window.
    pub secs: f64,
    /// Client CPU time (user + system) spent in the window.
    pub cpu_secs: f64,
    /// Heap allocations made in the window.
    pub allocs: u64,
    /// Sends the daemon pushed back on (try again) in the window.
    pub pushbacks: u64,
}

impl Row {
    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.msgs as f64 / self.secs.max(1e-9)
    }

    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs.max(1e-9)
    }

    /// Client CPU microseconds per received message.
    pub fn cpu_us_per_msg(&self) -> f64 {
        self.cpu_secs * 1e6 / (self.msgs.max(1) as f64)
    }

    /// Heap allocations per received message.
    pub fn allocs_per_msg(&self) -> f64 {
        self.allocs as f64 / (self.msgs.max(1) as f64)
    }

    /// The table header matching [`Row::line`].
    pub fn table_header() -> String {
        format!(
            "{:>9} {:>10} {:>8} {:>11} {:>9} {:>12} {:>11} {:>10}",
            "bytes/msg",
            "messages",
            "seconds",
            "msgs/s",
            "MB/s",
            "cpu µs/msg",
            "allocs/msg",
            "pushbacks"
        )
    }

    /// One human-readable line.
    pub fn line(&self) -> String {
        format!(
            "{:>9} {:>10} {:>8.3} {:>11.1} {:>9.2} {:>12.2} {:>11.3} {:>10}",
            self.size,
            self.msgs,
            self.secs,
            self.msgs_per_sec(),
            self.mb_per_sec(),
            self.cpu_us_per_msg(),
            self.allocs_per_msg(),
            self.pushbacks
        )
    }

    /// One JSON object (one line), for `bench_compare`.
    pub fn json(&self) -> String {
        serde_json::json!({
            "impl": self.implementation,
            "size": self.size,
            "msgs": self.msgs,
            "bytes": self.bytes,
            "secs": self.secs,
            "cpu_secs": self.cpu_secs,
            "allocs": self.allocs,
            "pushbacks": self.pushbacks,
            "msgs_per_sec": self.msgs_per_sec(),
            "mb_per_sec": self.mb_per_sec(),
        })
        .to_string()
    }
}

/// Prints the verify findings; true if all senders are clean.
pub fn print_verify(receiver: &Receiver) -> bool {
    let reports = receiver.reports();
    let mut clean = true;
    if reports.is_empty() {
        println!("verify: no messages were received");
        return false;
    }
    for ((nodeid, pid), r) in reports {
        let verdict = if r.is_bad() { "FAILED" } else { "ok" };
        println!(
            "verify: sender node {nodeid} pid {pid}: {} sent, {} received, {} lost, {} duplicated, \
             {} reordered, {} corrupted: {verdict}",
            r.sent, r.received, r.lost, r.duplicated, r.reordered, r.corrupted
        );
        clean &= !r.is_bad();
    }
    clean
}

/// One measured window: what was received, how long it took, and what it cost.
#[derive(Debug)]
pub struct Window {
    /// When the window started.
    pub start: Instant,
    cpu0: Duration,
    allocs0: u64,
}

impl Window {
    /// Starts a window: the receiver counts from now on.
    pub fn start(receiver: &Receiver) -> Window {
        receiver.start_window();
        Window {
            allocs0: allocations(),
            cpu0: cpu_time(),
            start: Instant::now(),
        }
    }

    /// Ends the window: its row of the report.
    pub fn finish(
        self,
        receiver: &Receiver,
        implementation: &'static str,
        size: usize,
        pushbacks: u64,
    ) -> Row {
        let secs = self.start.elapsed().as_secs_f64();
        let cpu = cpu_time() - self.cpu0;
        let allocs = allocations() - self.allocs0;
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

/// Prints the table header (unless JSON was asked for).
pub fn print_header(json: bool) {
    if !json {
        println!("{}", Row::table_header());
    }
}

/// Prints one row, as a table line or a JSON object.
pub fn print_row(json: bool, row: &Row) {
    if json {
        println!("{}", row.json());
    } else {
        println!("{}", row.line());
    }
}

/// `--max-in-flight`, for a sending thread: before each send, yield while `max` of its
/// data messages are sent but not yet delivered back (0: no bound).
pub struct Pacer {
    max: u64,
    sent_data: u64,
}

impl Pacer {
    /// A pacer allowing `max` data messages in flight (0: no bound).
    pub fn new(max: u64) -> Pacer {
        Pacer { max, sent_data: 0 }
    }

    /// Call before sending `msg`: waits (yielding) while the bound is reached, unless
    /// `halt` says to stop.
    pub fn before_send(&mut self, receiver: &Receiver, msg: &[u8], halt: &dyn Fn() -> bool) {
        if self.max == 0 {
            return;
        }
        while self
            .sent_data
            .saturating_sub(receiver.own_data.load(Ordering::Relaxed))
            >= self.max
            && !halt()
        {
            std::thread::yield_now();
        }
        if Header::parse(msg).is_some_and(|h| h.kind == Kind::Data) {
            self.sent_data += 1;
        }
    }
}

/// Waits until one more of our own end markers than `before` has been delivered (by
/// whichever thread dispatches), checking `halt` meanwhile.
pub fn wait_for_own_marker(
    receiver: &Receiver,
    before: u64,
    halt: &dyn Fn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while receiver.own_markers.load(Ordering::Acquire) == before {
        if halt() {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err("our own end marker did not come back within 60 s".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// What the sending thread of a two-thread client sweeps.
#[derive(Debug, Clone, Copy)]
pub struct SweepPlan<'a> {
    /// Message sizes, in order.
    pub sizes: &'a [usize],
    /// How long each size is sent for.
    pub window: Duration,
    /// Fill and checksum every message (`--verify`).
    pub verify: bool,
    /// Our node id and pid (the header of every message).
    pub me: (u32, u32),
    /// The name of the implementation in the report.
    pub implementation: &'static str,
    /// Print JSON rows instead of the table.
    pub json: bool,
}

/// The sending thread of a two-thread client (another thread dispatches and feeds
/// `receiver`): per size, sends data messages for the window through `send`, then an
/// end-of-size marker, waits for it to come back and prints the row; finally sends the
/// end-of-run marker and waits for it.
///
/// `send` sends one whole message, waiting out back-pressure however the client does,
/// and returns how many times the daemon pushed back on it. `halt` says the run must
/// stop (a signal, or the dispatching thread failed); it is checked between messages.
pub fn send_sweep(
    plan: &SweepPlan<'_>,
    receiver: &Receiver,
    halt: &dyn Fn() -> bool,
    send: impl FnMut(&[u8]) -> Result<u64, String>,
) -> Result<(), String> {
    send_sweep_with(plan, receiver, halt, send, || Ok(()))
}

/// [`send_sweep`], calling `before_end` after the last size's row and before the
/// end-of-run marker (the replica client checks there that every member holds the
/// same state).
pub fn send_sweep_with(
    plan: &SweepPlan<'_>,
    receiver: &Receiver,
    halt: &dyn Fn() -> bool,
    mut send: impl FnMut(&[u8]) -> Result<u64, String>,
    before_end: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let (nodeid, pid) = plan.me;
    let mut buf = vec![0u8; plan.sizes.iter().copied().max().unwrap_or(0)];
    let mut seq: u64 = 0;
    print_header(plan.json);
    for &size in plan.sizes {
        let msg = &mut buf[..size];
        let window = Window::start(receiver);
        let end = window.start + plan.window;
        let mut pushbacks = 0;
        while Instant::now() < end && !halt() {
            fill_data(msg, nodeid, pid, seq, plan.verify);
            pushbacks += send(msg).map_err(|e| format!("send of {size} bytes: {e}"))?;
            seq += 1;
        }
        let row = window.finish(receiver, plan.implementation, size, pushbacks);
        if halt() {
            return Err("interrupted".into());
        }
        let before = receiver.own_markers.load(Ordering::Acquire);
        send(&control(Kind::EndOfSize, nodeid, pid, seq, size as u32))?;
        wait_for_own_marker(receiver, before, halt)?;
        print_row(plan.json, &row);
    }
    before_end()?;
    let before = receiver.own_markers.load(Ordering::Acquire);
    send(&control(Kind::EndOfRun, nodeid, pid, seq, 0))?;
    wait_for_own_marker(receiver, before, halt)
}

/// Latency of one message size: send-to-own-delivery times of messages sent one at a
/// time.
#[derive(Debug, Clone)]
pub struct LatencyRow {
    /// Which implementation measured it.
    pub implementation: &'static str,
    /// Bytes per message.
    pub size: usize,
    /// Round trips measured.
    pub samples: usize,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, microseconds.
    pub p999_us: f64,
    /// Slowest, microseconds.
    pub max_us: f64,
}

/// The `p`-quantile (0..=1) of `sorted` by the nearest-rank method; NaN when empty.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl LatencyRow {
    /// The row of `samples` (microseconds, any order).
    pub fn new(implementation: &'static str, size: usize, mut samples: Vec<f64>) -> LatencyRow {
        samples.sort_by(|a, b| a.total_cmp(b));
        LatencyRow {
            implementation,
            size,
            samples: samples.len(),
            p50_us: quantile(&samples, 0.5),
            p99_us: quantile(&samples, 0.99),
            p999_us: quantile(&samples, 0.999),
            max_us: samples.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// The table header matching [`LatencyRow::line`].
    pub fn table_header() -> String {
        format!(
            "{:>9} {:>9} {:>10} {:>10} {:>10} {:>10}",
            "bytes/msg", "samples", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
        )
    }

    /// One human-readable line.
    pub fn line(&self) -> String {
        format!(
            "{:>9} {:>9} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            self.size, self.samples, self.p50_us, self.p99_us, self.p999_us, self.max_us
        )
    }

    /// One JSON object (one line), for `bench_compare --latency`.
    pub fn json(&self) -> String {
        serde_json::json!({
            "impl": self.implementation,
            "size": self.size,
            "samples": self.samples,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 500.0);
        assert_eq!(quantile(&v, 0.99), 990.0);
        assert_eq!(quantile(&v, 0.999), 999.0);
        assert_eq!(quantile(&v, 1.0), 1000.0);
        assert_eq!(quantile(&[7.0], 0.999), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn the_checksum_sees_every_flipped_bit_and_every_length() {
        for size in [32, 33, 64, 100, 1000] {
            let mut msg = vec![0u8; size];
            fill_data(&mut msg, 1, 42, 7, true);
            let good = Header::parse(&msg).unwrap().checksum;
            assert_eq!(good, message_checksum(&msg));
            for at in (0..size).filter(|&i| !(28..32).contains(&i)) {
                for bit in 0..8 {
                    msg[at] ^= 1 << bit;
                    assert_ne!(
                        message_checksum(&msg),
                        good,
                        "size {size}, byte {at}, bit {bit}"
                    );
                    msg[at] ^= 1 << bit;
                }
            }
            // Zero padding of the tail does not hide a shorter message.
            assert_ne!(checksum64(&msg[..size - 1]), checksum64(&msg));
        }
    }

    #[test]
    fn payloads_differ_between_messages_and_words() {
        let mut a = vec![0u8; 200];
        let mut b = vec![0u8; 200];
        fill_data(&mut a, 1, 42, 0, true);
        fill_data(&mut b, 1, 42, 1, true);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
        let words: BTreeSet<&[u8]> = a[HEADER_LEN..].chunks(8).collect();
        assert_eq!(words.len(), 21);
        let mut r = Receiver::new(true);
        r.set_me(1, 42);
        r.deliver(1, 42, &a);
        r.deliver(1, 42, &b);
        // The payload of one message under the header of another is corruption.
        let mut swapped = b.clone();
        swapped[..HEADER_LEN].copy_from_slice(&a[..HEADER_LEN]);
        r.deliver(1, 42, &swapped);
        let reports = r.reports();
        assert_eq!(reports[0].1.corrupted, 1);
        r = Receiver::new(true);
        r.deliver(1, 42, &a);
        assert!(!r.reports()[0].1.is_bad());
    }

    #[test]
    fn own_data_counts_only_our_messages() {
        let r = Receiver::new(false);
        r.set_me(1, 42);
        let mut msg = vec![0u8; 64];
        fill_data(&mut msg, 1, 42, 0, false);
        r.deliver(1, 42, &msg);
        r.deliver(2, 42, &msg);
        assert_eq!(r.own_data.load(Ordering::Relaxed), 1);
        let v = Receiver::new(true);
        v.set_me(1, 42);
        fill_data(&mut msg, 1, 42, 0, true);
        v.deliver(1, 42, &msg);
        assert_eq!(v.own_data.load(Ordering::Relaxed), 1);
        assert!(!v.reports()[0].1.is_bad());
    }
}
