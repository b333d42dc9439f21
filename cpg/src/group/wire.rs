//! The group layer's wire format: the header before every payload, and the layer's
//! control frames.
//!
//! Every frame the layer sends starts with the magic `b"CPGl"` and a version byte; all
//! integers are little-endian. A delivered frame that is not one of the layouts below
//! is reported as [`Event::Malformed`](super::Event::Malformed) and still counts for
//! [`Position`](super::Position).
//!
//! # Version 1: an application message (24-byte header)
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"CPGl"` |
//! | 4 | version, 1 |
//! | 5..8 | reserved, 0 |
//! | 8..16 | nonce: random per connection (incarnation) of the sender |
//! | 16..24 | sequence number of the message within that connection, from 0 |
//!
//! followed by the application's payload. The header only serves to match this
//! process's own deliveries to its sends (confirmed send): who sent a message is always
//! the (node id, pid) that CPG reports, never anything the payload says.
//!
//! # Version 2: a control frame of the layer (16-byte header, then a body per kind)
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"CPGl"` |
//! | 4 | version, 2 |
//! | 5 | kind (below) |
//! | 6..8 | reserved, 0 |
//! | 8..16 | nonce of the sender's connection |
//!
//! | kind | frame | body |
//! |---|---|---|
//! | 1 | quorum marker | 16..20 ring id's node id (u32), 20..28 ring id's sequence number (u64), 28 quorate (0 or 1), 29..32 reserved 0; 32 bytes in all |
//! | 2 | batch of application messages | below |
//! | others | reserved | |
//!
//! A quorum marker announces, in the agreed order, what the sender's node knows of
//! corosync's quorum for a ring (see the [module documentation](super)'s "Quorum"
//! section). A frame of a kind this version does not know, a kind whose body has
//! another length, reserved bytes that are not 0 or a quorate byte other than 0 or 1
//! is malformed: a new frame layout takes a new kind (or version), never a new meaning
//! of bytes an older reader accepts.
//!
//! A batch carries several application messages of one sender in one CPG message (see
//! the [module documentation](super)'s "The send queue" section):
//!
//! | bytes | field |
//! |---|---|
//! | 16..24 | sequence number of the first message within the sender's connection (u64); the others follow it by one each |
//! | 24..28 | count of messages (u32), 1 to [`MAX_BATCH_MESSAGES`] |
//! | 28..32 | reserved, 0 |
//! | 32.. | the messages in order, each its length (u32) and then that many bytes of payload |
//!
//! The messages end exactly where the frame ends. A batch whose count is 0 or above
//! the bound, whose lengths run past the frame's end or leave bytes after the last
//! message, or whose reserved bytes are not 0, is malformed as a whole: none of its
//! messages is delivered, and it takes one position like any malformed frame. Every
//! member reads the same bytes alike, so every member that delivers a batch gives it
//! the same positions: one per message, consecutive. Parsing one allocates nothing
//! (each message is a slice of the frame), and the count is checked against what the
//! frame can hold before any is read. Each message then becomes one event for the
//! application (about 136 bytes), so a frame of many empty messages costs the
//! receiver's event queue about 34 bytes per byte of the frame until the application
//! reads them (a version-1 frame of 24 bytes, about 6).
//!
//! Plain application messages stay version 1: a message sent alone is a version-1
//! frame. A member that knows only version 1 checks the version byte and reports a
//! version-2 frame as malformed: it never reads a marker or a batch as an application
//! message. It takes no part in the agreed quorum, and a batch is one position there
//! but one per message on a member that reads batches, so positions differ between
//! the two from the first batch on: a group with such members turns batching off
//! ([`Config::batch_bytes`](super::Config::batch_bytes) 0) on every member.
//!
//! Every member of a group driven by this layer must use it; a delivered message
//! without a valid header is reported as [`Event::Malformed`](super::Event::Malformed).

use crate::types::RingId;

/// Length of the header the layer puts before every payload.
pub const HEADER_LEN: usize = 24;
const MAGIC: [u8; 4] = *b"CPGl";
/// An application message.
const VERSION_MESSAGE: u8 = 1;
/// A control frame of the layer, with a kind byte.
const VERSION_CONTROL: u8 = 2;
/// Length of a control frame's header (magic, version, kind, reserved, nonce).
const CONTROL_HEADER_LEN: usize = 16;
/// Kind of a quorum marker.
const KIND_MARKER: u8 = 1;
/// Kind of a batch of application messages.
const KIND_BATCH: u8 = 2;
/// Length of a quorum marker, header included.
pub(super) const MARKER_LEN: usize = CONTROL_HEADER_LEN + 16;
/// Length of a batch's header (the control header, first sequence number, count,
/// reserved), before its first message.
pub const BATCH_HEADER_LEN: usize = CONTROL_HEADER_LEN + 16;
/// Bytes a batch adds before each message: its length.
pub const BATCH_ENTRY_LEN: usize = 4;
/// Most messages in one batch: a sender packs no more, and a reader refuses a batch
/// that claims more.
pub const MAX_BATCH_MESSAGES: usize = 16_384;

/// A delivered frame, as the layer reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Frame<'a> {
    /// An application message: the sender's (nonce, sequence number) and the payload.
    Message {
        nonce: u64,
        seq: u64,
        payload: &'a [u8],
    },
    /// A quorum marker: what the sender's node knew of the quorum for `ring`.
    Marker {
        nonce: u64,
        ring: RingId,
        quorate: bool,
    },
    /// A batch of application messages, checked: `count` messages, the first with
    /// sequence number `first_seq`; [`Entries`] walks them.
    Batch {
        nonce: u64,
        first_seq: u64,
        count: usize,
    },
    /// Not a frame of this layer (or of this version of it).
    Malformed,
}

/// The messages of a checked batch frame, as byte ranges of the frame.
#[derive(Debug, Clone)]
pub(super) struct Entries<'a> {
    frame: &'a [u8],
    at: usize,
}

impl<'a> Entries<'a> {
    /// The messages of `frame`, which [`parse`] read as a [`Frame::Batch`].
    pub(super) fn new(frame: &'a [u8]) -> Self {
        Entries {
            frame,
            at: BATCH_HEADER_LEN,
        }
    }
}

impl Iterator for Entries<'_> {
    type Item = std::ops::Range<usize>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.at.checked_add(BATCH_ENTRY_LEN)?;
        let len = self.frame.get(self.at..start)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let end = start.checked_add(len).filter(|&e| e <= self.frame.len())?;
        self.at = end;
        Some(start..end)
    }
}

/// Writes the header for (`nonce`, `seq`) and then `payload` into `buf` (cleared
/// first).
pub(super) fn write_message(buf: &mut Vec<u8>, nonce: u64, seq: u64, payload: &[u8]) {
    buf.clear();
    buf.reserve(HEADER_LEN + payload.len());
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&[VERSION_MESSAGE, 0, 0, 0]);
    buf.extend_from_slice(&nonce.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Writes a quorum marker for (`ring`, `quorate`) into `buf` (cleared first).
pub(super) fn write_marker(buf: &mut Vec<u8>, nonce: u64, ring: RingId, quorate: bool) {
    buf.clear();
    buf.reserve(MARKER_LEN);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&[VERSION_CONTROL, KIND_MARKER, 0, 0]);
    buf.extend_from_slice(&nonce.to_le_bytes());
    buf.extend_from_slice(&ring.nodeid.to_le_bytes());
    buf.extend_from_slice(&ring.seq.to_le_bytes());
    buf.extend_from_slice(&[u8::from(quorate), 0, 0, 0]);
}

/// The bytes a message of `len` bytes takes in a batch.
pub(super) fn batch_entry_len(len: usize) -> usize {
    BATCH_ENTRY_LEN.saturating_add(len)
}

/// Writes a batch of `payloads` (at least one, at most [`MAX_BATCH_MESSAGES`], each
/// shorter than 4 GiB), the first with sequence number `first_seq`, into `buf`
/// (cleared first).
pub(super) fn write_batch<'a>(
    buf: &mut Vec<u8>,
    nonce: u64,
    first_seq: u64,
    payloads: impl Iterator<Item = &'a [u8]> + Clone,
) {
    let (count, len) = payloads
        .clone()
        .fold((0usize, BATCH_HEADER_LEN), |(n, l), p| {
            (n + 1, l.saturating_add(batch_entry_len(p.len())))
        });
    debug_assert!((1..=MAX_BATCH_MESSAGES).contains(&count));
    buf.clear();
    buf.reserve(len);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&[VERSION_CONTROL, KIND_BATCH, 0, 0]);
    buf.extend_from_slice(&nonce.to_le_bytes());
    buf.extend_from_slice(&first_seq.to_le_bytes());
    buf.extend_from_slice(&(count as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    for p in payloads {
        buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
        buf.extend_from_slice(p);
    }
}

/// Checks a batch frame: its header's fields, and that its `count` messages end
/// exactly at the frame's end. The count of a valid batch.
fn check_batch(data: &[u8]) -> Option<usize> {
    if data.len() < BATCH_HEADER_LEN || data[6..8] != [0, 0] || data[28..32] != [0; 4] {
        return None;
    }
    let count = u32::from_le_bytes(data[24..28].try_into().ok()?) as usize;
    // Each message takes at least its length field: a count the frame cannot hold is
    // refused before the walk.
    let room = (data.len() - BATCH_HEADER_LEN) / BATCH_ENTRY_LEN;
    if count == 0 || count > MAX_BATCH_MESSAGES || count > room {
        return None;
    }
    let mut entries = Entries::new(data);
    for _ in 0..count {
        entries.next()?;
    }
    (entries.at == data.len()).then_some(count)
}

/// Reads a delivered frame.
pub(super) fn parse(data: &[u8]) -> Frame<'_> {
    if data.len() < CONTROL_HEADER_LEN || data[..4] != MAGIC {
        return Frame::Malformed;
    }
    let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or([0; 4]));
    match data[4] {
        VERSION_MESSAGE if data.len() >= HEADER_LEN => Frame::Message {
            nonce: u64_at(8),
            seq: u64_at(16),
            payload: &data[HEADER_LEN..],
        },
        VERSION_CONTROL if data[5] == KIND_MARKER && data.len() == MARKER_LEN => {
            let reserved_clear = data[6..8] == [0, 0] && data[29..32] == [0, 0, 0];
            match data[28] {
                quorate @ (0 | 1) if reserved_clear => Frame::Marker {
                    nonce: u64_at(8),
                    ring: RingId {
                        nodeid: u32_at(16),
                        seq: u64_at(20),
                    },
                    quorate: quorate == 1,
                },
                _ => Frame::Malformed,
            }
        }
        VERSION_CONTROL if data[5] == KIND_BATCH => match check_batch(data) {
            Some(count) => Frame::Batch {
                nonce: u64_at(8),
                first_seq: u64_at(16),
                count,
            },
            None => Frame::Malformed,
        },
        _ => Frame::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_header_parses_back_and_a_foreign_one_does_not() {
        let mut buf = Vec::new();
        write_message(&mut buf, 0x0102_0304_0506_0708, 42, b"payload");
        assert_eq!(buf.len(), HEADER_LEN + 7);
        assert_eq!(
            parse(&buf),
            Frame::Message {
                nonce: 0x0102_0304_0506_0708,
                seq: 42,
                payload: b"payload"
            }
        );
        assert_eq!(&buf[HEADER_LEN..], b"payload");
        assert_eq!(parse(&buf[..HEADER_LEN - 1]), Frame::Malformed);
        buf[4] = 3;
        assert_eq!(parse(&buf), Frame::Malformed);
        assert_eq!(
            parse(b"not a header of this layer at all"),
            Frame::Malformed
        );
        assert_eq!(parse(b""), Frame::Malformed);
    }

    #[test]
    fn a_marker_parses_back_and_is_no_version_1_message() {
        let ring = RingId {
            nodeid: 0x0a0b_0c0d,
            seq: 0x1122_3344_5566_7788,
        };
        let mut buf = Vec::new();
        for quorate in [true, false] {
            write_marker(&mut buf, 7, ring, quorate);
            assert_eq!(buf.len(), MARKER_LEN);
            assert_eq!(&buf[..6], b"CPGl\x02\x01");
            assert_eq!(
                parse(&buf),
                Frame::Marker {
                    nonce: 7,
                    ring,
                    quorate
                }
            );
            // What a reader of version 1 only checks: magic and version. It refuses
            // the frame (as the reader of the previous release did).
            assert!(buf[..4] == MAGIC && buf[4] != VERSION_MESSAGE);
        }
    }

    #[test]
    fn a_control_frame_of_another_kind_or_shape_is_malformed() {
        let ring = RingId { nodeid: 1, seq: 8 };
        let mut good = Vec::new();
        write_marker(&mut good, 7, ring, true);
        let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            edit(&mut b);
            parse(&b) == Frame::Malformed
        };
        // Unknown kinds are not read; a marker's body is no batch.
        for kind in [0, KIND_BATCH, 3, 0xff] {
            assert!(bad(&|b| b[5] = kind), "kind {kind}");
        }
        assert!(bad(&|b| b[28] = 2), "quorate 2");
        assert!(bad(&|b| b[6] = 1), "reserved header byte");
        assert!(bad(&|b| b[31] = 1), "reserved body byte");
        assert!(bad(&|b| b.push(0)), "longer");
        assert!(bad(&|b| b.truncate(31)), "shorter");
        assert!(bad(&|b| b.truncate(CONTROL_HEADER_LEN)), "header only");
        assert!(bad(&|b| b[0] = b'X'), "magic");
    }

    fn batch(payloads: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        write_batch(&mut buf, 0xfeed, 40, payloads.iter().copied());
        buf
    }

    fn messages(frame: &[u8]) -> Vec<&[u8]> {
        Entries::new(frame).map(|r| &frame[r]).collect()
    }

    #[test]
    fn a_batch_parses_back_message_by_message() {
        let payloads: [&[u8]; 4] = [b"one", b"", b"three", &[0xff; 300]];
        let buf = batch(&payloads);
        let len = BATCH_HEADER_LEN + payloads.iter().map(|p| 4 + p.len()).sum::<usize>();
        assert_eq!(buf.len(), len);
        assert_eq!(&buf[..6], b"CPGl\x02\x02");
        assert_eq!(
            parse(&buf),
            Frame::Batch {
                nonce: 0xfeed,
                first_seq: 40,
                count: 4
            }
        );
        assert_eq!(messages(&buf), payloads);
        // A reader of version 1 refuses it (magic and version are all it checks).
        assert!(buf[..4] == MAGIC && buf[4] != VERSION_MESSAGE);
        // One message is a valid batch too (a sender sends it alone instead).
        assert_eq!(
            parse(&batch(&[b"x"])),
            Frame::Batch {
                nonce: 0xfeed,
                first_seq: 40,
                count: 1
            }
        );
    }

    #[test]
    fn a_batch_whose_lengths_do_not_add_up_is_refused_whole() {
        let good = batch(&[b"abc", b"defg"]);
        let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            edit(&mut b);
            parse(&b) == Frame::Malformed
        };
        let count_at = 24;
        let second_len_at = BATCH_HEADER_LEN + 4 + 3;
        assert!(bad(&|b| b.push(0)), "a byte after the last message");
        assert!(
            bad(&|b| b.truncate(b.len() - 1)),
            "the last message cut short"
        );
        assert!(
            bad(&|b| b.truncate(second_len_at + 2)),
            "cut inside the second message's length"
        );
        assert!(
            bad(&|b| b.truncate(second_len_at)),
            "cut before the second message's length"
        );
        assert!(bad(&|b| b[second_len_at] = 5), "a length past the end");
        assert!(
            bad(&|b| b[second_len_at] = 3),
            "a length that leaves bytes over"
        );
        assert!(
            bad(&|b| b[count_at] = 3),
            "a count above the messages there"
        );
        assert!(
            bad(&|b| b[count_at] = 1),
            "a count below the messages there"
        );
        assert!(bad(&|b| b[count_at] = 0), "a count of 0");
        assert!(bad(&|b| b[6] = 1), "reserved header byte");
        assert!(bad(&|b| b[29] = 1), "reserved batch byte");
        assert!(bad(&|b| b.truncate(BATCH_HEADER_LEN - 1)), "header cut");
        // A length of 4 GiB.
        assert!(bad(
            &|b| b[second_len_at..second_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes())
        ));
    }

    #[test]
    fn a_batch_claiming_more_messages_than_the_bound_or_the_frame_holds_is_refused() {
        // The bound: MAX_BATCH_MESSAGES empty messages are fine, one more is not.
        let empty: Vec<&[u8]> = vec![b""; MAX_BATCH_MESSAGES];
        let most = batch(&empty);
        assert_eq!(
            parse(&most),
            Frame::Batch {
                nonce: 0xfeed,
                first_seq: 40,
                count: MAX_BATCH_MESSAGES
            }
        );
        // One more empty message, and the count says so: the frame adds up, the count
        // is above the bound.
        let mut over = most.clone();
        over.extend_from_slice(&[0; BATCH_ENTRY_LEN]);
        over[24..28].copy_from_slice(&(MAX_BATCH_MESSAGES as u32 + 1).to_le_bytes());
        assert_eq!(parse(&over), Frame::Malformed);
        // A huge count in a short frame is refused before any walk.
        let mut b = batch(&[b"a"]);
        b[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&b), Frame::Malformed);
    }
}
