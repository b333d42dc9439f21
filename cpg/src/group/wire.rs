//! The group layer's wire format: the header before every payload.
//!
//! Every message the layer sends starts with a 24-byte header, all integers
//! little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `b"CPGl"` |
//! | 4 | version, 1 |
//! | 5..8 | reserved, 0 |
//! | 8..16 | nonce: random per connection (incarnation) of the sender |
//! | 16..24 | sequence number of the message within that connection, from 0 |
//!
//! followed by the application's payload. Every member of a group driven by this layer
//! must use it; a delivered message without a valid header is reported as
//! [`Event::Malformed`](super::Event::Malformed). The header only serves to match this process's own deliveries
//! to its sends (confirmed send): who sent a message is always the (node id, pid) that
//! CPG reports, never anything the payload says.

/// Length of the header the layer puts before every payload.
pub const HEADER_LEN: usize = 24;
const MAGIC: [u8; 4] = *b"CPGl";
const VERSION: u8 = 1;

/// Writes the header for (`nonce`, `seq`) and then `payload` into `buf` (cleared
/// first).
pub(super) fn write_message(buf: &mut Vec<u8>, nonce: u64, seq: u64, payload: &[u8]) {
    buf.clear();
    buf.reserve(HEADER_LEN + payload.len());
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&[VERSION, 0, 0, 0]);
    buf.extend_from_slice(&nonce.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The (nonce, sequence number) of a message with the layer's header.
pub(super) fn parse_header(data: &[u8]) -> Option<(u64, u64)> {
    if data.len() < HEADER_LEN || data[..4] != MAGIC || data[4] != VERSION {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap_or([0; 8]));
    Some((word(8), word(16)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_header_parses_back_and_a_foreign_one_does_not() {
        let mut buf = Vec::new();
        write_message(&mut buf, 0x0102_0304_0506_0708, 42, b"payload");
        assert_eq!(buf.len(), HEADER_LEN + 7);
        assert_eq!(parse_header(&buf), Some((0x0102_0304_0506_0708, 42)));
        assert_eq!(&buf[HEADER_LEN..], b"payload");
        assert_eq!(parse_header(&buf[..HEADER_LEN - 1]), None);
        buf[4] = VERSION + 1;
        assert_eq!(parse_header(&buf), None);
        assert_eq!(parse_header(b"not a header of this layer at all"), None);
    }
}
