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
//! | 2 | reserved for batches of application messages (not sent by this version) | |
//! | others | reserved | |
//!
//! A quorum marker announces, in the agreed order, what the sender's node knows of
//! corosync's quorum for a ring (see the [module documentation](super)'s "Quorum"
//! section). A frame of a kind this version does not know, a kind whose body has
//! another length, reserved bytes that are not 0 or a quorate byte other than 0 or 1
//! is malformed: a new frame layout takes a new kind (or version), never a new meaning
//! of bytes an older reader accepts.
//!
//! Plain application messages stay version 1, so a group whose members run different
//! versions of this layer keeps working: a member that knows only version 1 checks the
//! version byte and reports a version-2 frame as malformed (it never reads a marker as
//! an application message); it just does not take part in the agreed quorum.
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
/// Kind reserved for batches of application messages (issue 28): not sent, and
/// reported as malformed by this version.
#[allow(dead_code)]
const KIND_BATCH: u8 = 2;
/// Length of a quorum marker, header included.
pub(super) const MARKER_LEN: usize = CONTROL_HEADER_LEN + 16;

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
    /// Not a frame of this layer (or of this version of it).
    Malformed,
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
        // The batch kind is reserved, not read; unknown kinds neither.
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
}
