//! The replica protocol's wire format: what rides inside a group-layer payload.
//!
//! Every message starts with a 4-byte header: the magic byte `b'R'`, the protocol
//! version ([`PROTOCOL_VERSION`]), the byte order of every integer that follows
//! (`1`: little-endian, the only one written or read), and the message kind. The
//! header layout never changes between versions, so a peer with a newer version is
//! recognised and refused rather than misread.

use crate::group::ViewId;
use crate::types::Member;

/// The version of the replica protocol this crate speaks.
pub const PROTOCOL_VERSION: u8 = 3;
const MAGIC: u8 = b'R';
const LITTLE_ENDIAN: u8 = 1;

/// Identifies one synchronisation round, agreed by every member of the view: the
/// coordinator that started it, the coordinator's own id of the view it started it in
/// (unique for that coordinator), and the attempt within the view (0 first, one more
/// after each failed round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoundId {
    /// The member that started the round.
    pub coordinator: Member,
    /// The coordinator's id of its view when it started the round.
    pub view: ViewId,
    /// Which attempt in the view.
    pub attempt: u32,
}

impl std::fmt::Display for RoundId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "round {}:{}@{}#{}",
            self.coordinator.nodeid, self.coordinator.pid, self.view, self.attempt
        )
    }
}

/// Which sequence numbers of one origin a history holds: sorted, disjoint, inclusive
/// ranges (one range unless some of the origin's operations were applied elsewhere).
pub(crate) type Ranges = Vec<(u64, u64)>;

/// Adds `seq` to `ranges`. Sequence numbers of one origin come in increasing order
/// along a history (CPG delivers a sender's messages in order), so this appends; an
/// out-of-order one is still inserted correctly.
pub(crate) fn add_seq(ranges: &mut Ranges, seq: u64) {
    match ranges.last_mut() {
        Some((_, hi)) if hi.checked_add(1) == Some(seq) => *hi = seq,
        Some((_, hi)) if *hi < seq => ranges.push((seq, seq)),
        None => ranges.push((seq, seq)),
        Some(_) => {
            if has_seq(ranges, seq) {
                return;
            }
            let at = ranges.partition_point(|&(lo, _)| lo < seq);
            ranges.insert(at, (seq, seq));
            // Merge with the neighbours where they touch.
            if at + 1 < ranges.len() && Some(ranges[at + 1].0) == seq.checked_add(1) {
                ranges[at].1 = ranges[at + 1].1;
                ranges.remove(at + 1);
            }
            if at > 0 && ranges[at - 1].1.checked_add(1) == Some(seq) {
                ranges[at - 1].1 = ranges[at].1;
                ranges.remove(at);
            }
        }
    }
}

/// Most ranges kept per origin. An origin of this crate has more than one only where
/// merges discarded some of its operations; a buggy or foreign one whose sequence
/// numbers skip would otherwise make its entry grow by one range per operation (and
/// with it every state header).
pub(crate) const MAX_RANGES: usize = 1024;

/// Keeps the latest [`MAX_RANGES`] of `ranges`. The ones forgotten are the origin's
/// oldest: a merge can then report an operation among them as discarded although the
/// history holds it, for that origin only.
pub(crate) fn keep_latest(ranges: &mut Ranges) {
    if ranges.len() > MAX_RANGES {
        ranges.drain(..ranges.len() - MAX_RANGES);
    }
}

/// Whether `ranges` hold `seq`.
pub(crate) fn has_seq(ranges: &Ranges, seq: u64) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= seq && seq <= hi)
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Msg {
    /// The coordinator starts a round for the view whose member list hashes to
    /// `members`.
    Start { members: u64, round: RoundId },
    /// A member's state summary for a round; `quorum` is the state's quorum epoch.
    Summary {
        round: RoundId,
        version: u64,
        digest: u64,
        hint: u64,
        quorum: u64,
    },
    /// The source's state description, before its chunks.
    StateHeader {
        round: RoundId,
        version: u64,
        digest: u64,
        hint: u64,
        epoch: u64,
        len: u64,
        chunks: u32,
        applied: Vec<(Member, Ranges)>,
    },
    /// One piece of the source's snapshot.
    Chunk {
        round: RoundId,
        index: u32,
        data: Vec<u8>,
    },
    /// An application operation, `seq` numbered by its origin.
    Op { seq: u64, data: Vec<u8> },
    /// A member's round deadline expired in `stage` (0 awaiting the start, 1
    /// collecting summaries, 2 receiving the state) of `attempt`: decide now, or start
    /// the next attempt.
    Trouble {
        members: u64,
        attempt: u32,
        stage: u8,
    },
    /// Compute the digest here, in the agreed order, and send it.
    Verify { members: u64, check: u64 },
    /// A member's digest at the point of `Verify { check }` sent by `issuer`.
    Digest {
        members: u64,
        issuer: Member,
        check: u64,
        version: u64,
        digest: u64,
        hint: u64,
        epoch: u64,
    },
    /// A read barrier's marker: once delivered back to its sender and everything
    /// before it applied there, the sender's barriers up to `id` are passed.
    Mark { id: u64 },
}

/// Why a payload could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not a replica message, or cut short.
    Malformed,
    /// A newer protocol version than ours.
    Newer(u8),
}

mod kind {
    pub const START: u8 = 1;
    pub const SUMMARY: u8 = 2;
    pub const STATE_HEADER: u8 = 3;
    pub const CHUNK: u8 = 4;
    pub const OP: u8 = 5;
    pub const TROUBLE: u8 = 6;
    pub const VERIFY: u8 = 7;
    pub const DIGEST: u8 = 8;
    pub const MARK: u8 = 9;
}

/// A value with a fixed encoding, written: integers little-endian, compound values
/// field by field in declaration order, lists as a `u32` count and then their entries.
trait Put {
    /// Appends the value's bytes.
    fn put(&self, out: &mut Vec<u8>);
}

/// A value read back from the encoding of [`Put`].
trait Get: Sized {
    /// The fewest bytes an encoded value takes (bounds a list's count before
    /// anything is allocated for it).
    const MIN_LEN: usize;
    /// Reads a value.
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

impl<T: Put + ?Sized> Put for &T {
    fn put(&self, out: &mut Vec<u8>) {
        (**self).put(out);
    }
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Put for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
        impl Get for $t {
            const MIN_LEN: usize = std::mem::size_of::<$t>();
            fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let bytes = r.take(Self::MIN_LEN)?;
                Ok(<$t>::from_le_bytes(bytes.try_into().expect("sized")))
            }
        }
    )*};
}
int_field!(u8, u32, u64);

macro_rules! tuple_field {
    ($($t:ident),+) => {
        impl<$($t: Put),+> Put for ($($t,)+) {
            #[allow(non_snake_case)]
            fn put(&self, out: &mut Vec<u8>) {
                let ($($t,)+) = self;
                $($t.put(out);)+
            }
        }
        impl<$($t: Get),+> Get for ($($t,)+) {
            const MIN_LEN: usize = 0 $(+ $t::MIN_LEN)+;
            fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(($($t::get(r)?,)+))
            }
        }
    };
}
tuple_field!(A, B);
tuple_field!(A, B, C);
tuple_field!(A, B, C, D);
tuple_field!(A, B, C, D, E);
tuple_field!(A, B, C, D, E, F);
tuple_field!(A, B, C, D, E, F, G);

impl<T: Put> Put for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        u32::try_from(self.len())
            .expect("fewer than 2^32 entries")
            .put(out);
        for x in self {
            x.put(out);
        }
    }
}

impl<T: Get> Get for Vec<T> {
    const MIN_LEN: usize = 4;
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = u32::get(r)? as usize;
        if n > r.0.len() / T::MIN_LEN {
            return Err(DecodeError::Malformed);
        }
        (0..n).map(|_| T::get(r)).collect()
    }
}

impl Put for Member {
    fn put(&self, out: &mut Vec<u8>) {
        (self.nodeid, self.pid).put(out);
    }
}

impl Get for Member {
    const MIN_LEN: usize = 8;
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (nodeid, pid) = r.get()?;
        Ok(Member { nodeid, pid })
    }
}

impl Put for RoundId {
    fn put(&self, out: &mut Vec<u8>) {
        let view = (self.view.incarnation, self.view.counter);
        (self.coordinator, view, self.attempt).put(out);
    }
}

impl Get for RoundId {
    const MIN_LEN: usize = 28;
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (coordinator, (incarnation, counter), attempt) = r.get()?;
        Ok(RoundId {
            coordinator,
            view: ViewId {
                incarnation,
                counter,
            },
            attempt,
        })
    }
}

/// A message of `kind`: the header, then `fields`, then `tail` (a chunk's or an
/// operation's data, to the end).
fn frame(kind: u8, fields: impl Put, tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 64 + tail.len());
    out.extend_from_slice(&[MAGIC, PROTOCOL_VERSION, LITTLE_ENDIAN, kind]);
    fields.put(&mut out);
    out.extend_from_slice(tail);
    out
}

/// What is left of a message being read.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    /// Reads the next value.
    fn get<T: Get>(&mut self) -> Result<T, DecodeError> {
        T::get(self)
    }

    /// Reads the last value: nothing may follow it.
    fn last<T: Get>(mut self) -> Result<T, DecodeError> {
        let t = T::get(&mut self)?;
        if self.0.is_empty() {
            Ok(t)
        } else {
            Err(DecodeError::Malformed)
        }
    }

    /// The rest of the message.
    fn rest(self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl Msg {
    /// The bytes of this message.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Start { members, round } => frame(kind::START, (members, round), &[]),
            Msg::Summary {
                round,
                version,
                digest,
                hint,
                quorum,
            } => frame(kind::SUMMARY, (round, version, digest, hint, quorum), &[]),
            Msg::StateHeader {
                round,
                version,
                digest,
                hint,
                epoch,
                len,
                chunks,
                applied,
            } => frame(
                kind::STATE_HEADER,
                (round, (version, digest, hint, epoch), len, chunks, applied),
                &[],
            ),
            Msg::Chunk { round, index, data } => frame(kind::CHUNK, (round, index), data),
            Msg::Op { seq, data } => frame(kind::OP, seq, data),
            Msg::Trouble {
                members,
                attempt,
                stage,
            } => frame(kind::TROUBLE, (members, attempt, stage), &[]),
            Msg::Verify { members, check } => frame(kind::VERIFY, (members, check), &[]),
            Msg::Digest {
                members,
                issuer,
                check,
                version,
                digest,
                hint,
                epoch,
            } => frame(
                kind::DIGEST,
                (members, issuer, check, version, digest, hint, epoch),
                &[],
            ),
            Msg::Mark { id } => frame(kind::MARK, id, &[]),
        }
    }

    /// Reads a message; a newer protocol version is told apart from garbage.
    pub(crate) fn decode(data: &[u8]) -> Result<Msg, DecodeError> {
        if data.len() < 4 || data[0] != MAGIC {
            return Err(DecodeError::Malformed);
        }
        if data[1] > PROTOCOL_VERSION {
            return Err(DecodeError::Newer(data[1]));
        }
        // An older version's layouts differ (version 3 added the quorum epoch to state
        // headers and digests): never misread, it is not a message of this protocol.
        if data[1] != PROTOCOL_VERSION || data[2] != LITTLE_ENDIAN {
            return Err(DecodeError::Malformed);
        }
        let mut r = Reader(&data[4..]);
        let msg = match data[3] {
            kind::START => {
                let (members, round) = r.last()?;
                Msg::Start { members, round }
            }
            kind::SUMMARY => {
                let (round, version, digest, hint, quorum) = r.last()?;
                Msg::Summary {
                    round,
                    version,
                    digest,
                    hint,
                    quorum,
                }
            }
            kind::STATE_HEADER => {
                let (round, (version, digest, hint, epoch), len, chunks, applied) = r.last()?;
                Msg::StateHeader {
                    round,
                    version,
                    digest,
                    hint,
                    epoch,
                    len,
                    chunks,
                    applied,
                }
            }
            kind::CHUNK => {
                let (round, index) = r.get()?;
                let data = r.rest();
                Msg::Chunk { round, index, data }
            }
            kind::OP => {
                let seq = r.get()?;
                let data = r.rest();
                Msg::Op { seq, data }
            }
            kind::TROUBLE => {
                let (members, attempt, stage) = r.last()?;
                Msg::Trouble {
                    members,
                    attempt,
                    stage,
                }
            }
            kind::VERIFY => {
                let (members, check) = r.last()?;
                Msg::Verify { members, check }
            }
            kind::DIGEST => {
                let (members, issuer, check, version, digest, hint, epoch) = r.last()?;
                Msg::Digest {
                    members,
                    issuer,
                    check,
                    version,
                    digest,
                    hint,
                    epoch,
                }
            }
            kind::MARK => Msg::Mark { id: r.last()? },
            _ => return Err(DecodeError::Malformed),
        };
        Ok(msg)
    }
}

/// An encoded message whose delivery a driver follows: an operation or a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tracked {
    /// [`Msg::Op`] with this sequence number.
    Op(u64),
    /// [`Msg::Mark`] with this id.
    Mark(u64),
}

/// What an encoded message is for its driver: an operation or a marker (with its
/// number); `None` for every other kind.
pub(crate) fn tracked(bytes: &[u8]) -> Option<Tracked> {
    let kind = *bytes.get(3)?;
    let n = Reader(bytes.get(4..)?).get().ok()?;
    match kind {
        kind::OP => Some(Tracked::Op(n)),
        kind::MARK => Some(Tracked::Mark(n)),
        _ => None,
    }
}

/// An operation's sequence number and bytes, borrowed from its encoding: what
/// [`Msg::decode`] makes of it as [`Msg::Op`], without copying the bytes; `None` for
/// anything [`Msg::decode`] would not read as an operation.
pub(crate) fn decode_op(data: &[u8]) -> Option<(u64, &[u8])> {
    match data {
        [MAGIC, PROTOCOL_VERSION, LITTLE_ENDIAN, kind::OP, rest @ ..] => {
            let mut r = Reader(rest);
            let seq = u64::get(&mut r).ok()?;
            Some((seq, r.0))
        }
        _ => None,
    }
}

/// Whether an encoded message belongs to a round (dropped when a new attempt or view
/// begins) rather than being an operation or a marker (kept until sent).
pub(crate) fn is_round_message(bytes: &[u8]) -> bool {
    !matches!(bytes.get(3), Some(&kind::OP | &kind::MARK))
}

/// FNV-1a over the sorted member list: the same on every member, every platform.
pub(crate) fn members_hash(members: &[Member]) -> u64 {
    let mut h = fnv_start();
    for m in members {
        h = fnv(h, &m.nodeid.to_le_bytes());
        h = fnv(h, &m.pid.to_le_bytes());
    }
    h
}

/// The FNV-1a offset basis.
pub fn fnv_start() -> u64 {
    0xcbf2_9ce4_8422_2325
}

/// Feeds `bytes` into an FNV-1a 64-bit hash `h` (start with [`fnv_start`]): a small,
/// stable, platform-independent digest for applications that want one.
pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    /// The borrowed decoding of an operation reads what the full one does, and
    /// nothing else.
    #[test]
    fn decode_op_agrees_with_decode() {
        let op = Msg::Op {
            seq: 42,
            data: b"an operation".to_vec(),
        }
        .encode();
        assert_eq!(super::decode_op(&op), Some((42, &b"an operation"[..])));
        let empty = Msg::Op {
            seq: 7,
            data: vec![],
        }
        .encode();
        assert_eq!(super::decode_op(&empty), Some((7, &[][..])));
        for cut in 0..12 {
            assert_eq!(super::decode_op(&op[..cut]), None, "cut at {cut}");
            assert!(Msg::decode(&op[..cut]).is_err());
        }
        let mark = Msg::Mark { id: 42 }.encode();
        assert_eq!(super::decode_op(&mark), None);
        for at in 0..4 {
            let mut other = op.clone();
            other[at] ^= 0x40;
            assert_eq!(super::decode_op(&other), None, "header byte {at}");
        }
    }

    use super::*;

    fn round() -> RoundId {
        RoundId {
            coordinator: Member { nodeid: 1, pid: 2 },
            view: ViewId {
                incarnation: 3,
                counter: 4,
            },
            attempt: 5,
        }
    }

    /// One message of every kind, with every field set to a distinct value.
    fn every_kind() -> Vec<Msg> {
        vec![
            Msg::Start {
                members: 9,
                round: round(),
            },
            Msg::Summary {
                round: round(),
                version: 7,
                digest: 8,
                hint: 9,
                quorum: 10,
            },
            Msg::StateHeader {
                round: round(),
                version: 1,
                digest: 2,
                hint: 11,
                epoch: 12,
                len: 3,
                chunks: 4,
                applied: vec![(Member { nodeid: 5, pid: 6 }, vec![(1, 3), (5, 7)])],
            },
            Msg::Chunk {
                round: round(),
                index: 3,
                data: vec![1, 2, 3],
            },
            Msg::Op {
                seq: 42,
                data: b"set x 1".to_vec(),
            },
            Msg::Trouble {
                members: 1,
                attempt: 2,
                stage: 1,
            },
            Msg::Verify {
                members: 1,
                check: 2,
            },
            Msg::Digest {
                members: 1,
                issuer: Member { nodeid: 1, pid: 1 },
                check: 2,
                version: 3,
                digest: 4,
                hint: 5,
                epoch: 6,
            },
            Msg::Mark { id: 12 },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for m in every_kind() {
            assert_eq!(Msg::decode(&m.encode()), Ok(m));
        }
    }

    /// The exact bytes of every kind, so that a change of the code cannot change the
    /// format unnoticed (peers of another build must keep reading each other).
    #[test]
    fn every_kind_keeps_its_exact_bytes() {
        let golden = [
            "52030101090000000000000001000000020000000300000000000000040000000000000005000000",
            "520301020100000002000000030000000000000004000000000000000500000007000000000000000\
             80000000000000009000000000000000a00000000000000",
            "520301030100000002000000030000000000000004000000000000000500000001000000000000000\
             2000000000000000b000000000000000c0000000000000003000000000000000400000001000000\
             0500000006000000020000000100000000000000030000000000000005000000000000000700000\
             000000000",
            "520301040100000002000000030000000000000004000000000000000500000003000000010203",
            "520301052a0000000000000073657420782031",
            "5203010601000000000000000200000001",
            "5203010701000000000000000200000000000000",
            "520301080100000000000000010000000100000002000000000000000300000000000000040000000\
             000000005000000000000000600000000000000",
            "520301090c00000000000000",
        ];
        for (m, want) in every_kind().iter().zip(golden) {
            let hex: String = m.encode().iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, want, "{m:?}");
        }
    }

    #[test]
    fn cut_padded_or_overcounted_messages_are_malformed() {
        for m in every_kind() {
            let b = m.encode();
            // Chunks and operations end in their data, of any length.
            let tail = match &m {
                Msg::Chunk { data, .. } | Msg::Op { data, .. } => Some(data.len()),
                _ => None,
            };
            for cut in 0..b.len() - tail.unwrap_or(0) {
                assert!(Msg::decode(&b[..cut]).is_err(), "{m:?} cut to {cut}");
            }
            if tail.is_none() {
                let mut padded = b.clone();
                padded.push(0);
                assert_eq!(Msg::decode(&padded), Err(DecodeError::Malformed), "{m:?}");
            }
        }
        // A count of entries that the remaining bytes cannot hold is refused before
        // anything is allocated for it.
        let header = every_kind().swap_remove(2);
        let mut b = header.encode();
        b[76..80].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Msg::decode(&b), Err(DecodeError::Malformed));
        let mut b = header.encode();
        b[88..92].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Msg::decode(&b), Err(DecodeError::Malformed));
    }

    #[test]
    fn only_operations_and_markers_are_tracked_and_kept_over_rounds() {
        for m in every_kind() {
            let want = match m {
                Msg::Op { seq, .. } => Some(Tracked::Op(seq)),
                Msg::Mark { id } => Some(Tracked::Mark(id)),
                _ => None,
            };
            let b = m.encode();
            assert_eq!(tracked(&b), want, "{m:?}");
            assert_eq!(is_round_message(&b), want.is_none(), "{m:?}");
        }
        assert_eq!(tracked(&[b'R', PROTOCOL_VERSION, 1, kind::OP, 1, 2]), None);
        assert_eq!(tracked(&[b'R', PROTOCOL_VERSION, 1, kind::MARK]), None);
        assert_eq!(tracked(&[]), None);
    }

    #[test]
    fn the_header_is_explicit_little_endian_and_versioned() {
        let b = Msg::Op {
            seq: 0x0102,
            data: vec![],
        }
        .encode();
        assert_eq!(&b[..4], &[b'R', PROTOCOL_VERSION, 1, kind::OP]);
        assert_eq!(&b[4..12], &[2, 1, 0, 0, 0, 0, 0, 0]);
        let mut newer = b.clone();
        newer[1] = PROTOCOL_VERSION + 1;
        assert_eq!(
            Msg::decode(&newer),
            Err(DecodeError::Newer(PROTOCOL_VERSION + 1))
        );
        let mut older = b.clone();
        older[1] = PROTOCOL_VERSION - 1;
        assert_eq!(Msg::decode(&older), Err(DecodeError::Malformed));
        let mut big_endian = b.clone();
        big_endian[2] = 2;
        assert_eq!(Msg::decode(&big_endian), Err(DecodeError::Malformed));
        assert_eq!(Msg::decode(&b[..3]), Err(DecodeError::Malformed));
        assert_eq!(Msg::decode(b"hello"), Err(DecodeError::Malformed));
    }

    #[test]
    fn ranges_grow_by_appending_and_keep_gaps() {
        let mut r = Ranges::new();
        for seq in [1, 2, 3, 5, 6, 9] {
            add_seq(&mut r, seq);
        }
        assert_eq!(r, vec![(1, 3), (5, 6), (9, 9)]);
        assert!(has_seq(&r, 2) && has_seq(&r, 9));
        assert!(!has_seq(&r, 4) && !has_seq(&r, 7) && !has_seq(&r, 10));
        // Out of order: filled in and merged.
        add_seq(&mut r, 4);
        add_seq(&mut r, 8);
        add_seq(&mut r, 8);
        assert_eq!(r, vec![(1, 6), (8, 9)]);
        add_seq(&mut r, 7);
        assert_eq!(r, vec![(1, 9)]);
        add_seq(&mut r, 0);
        assert_eq!(r, vec![(0, 9)]);
    }

    #[test]
    fn the_members_hash_is_stable() {
        let a = [Member { nodeid: 1, pid: 10 }, Member { nodeid: 2, pid: 20 }];
        assert_eq!(members_hash(&a), members_hash(&a.clone()));
        assert_ne!(members_hash(&a), members_hash(&a[..1]));
        assert_eq!(fnv(fnv_start(), b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
