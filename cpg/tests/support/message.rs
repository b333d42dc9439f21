//! The self-checking message the multi-node tests send: a header (magic, sender, sequence
//! number, length) and a body that is a window into a fixed pattern, chosen by sender
//! and sequence number. A message delivered with the wrong bytes, or with bytes of
//! another message, fails [`decode`].

const MAGIC: u32 = 0x4350_4754;
/// magic u32, sender u32, seq u64, total length u64.
pub const HEADER: usize = 24;
/// The body of a message is a window into this repeating pattern, whose start depends
/// on sender and sequence number: a message delivered with the wrong bytes, or bytes
/// of another message, is detected by one `memcmp`.
const PERIOD: usize = 251;

fn pattern(len: usize) -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let p = PATTERN.get_or_init(|| {
        (0..(8 << 20) + PERIOD)
            .map(|i| (i % PERIOD) as u8)
            .collect()
    });
    assert!(
        len + PERIOD <= p.len(),
        "message body of {len} bytes is too large"
    );
    p
}

fn body_start(sender: u32, seq: u64) -> usize {
    ((seq.wrapping_mul(7)).wrapping_add(u64::from(sender)) % PERIOD as u64) as usize
}

/// Message number `seq` of sender `sender`, `len` bytes long (at least [`HEADER`]).
pub fn message(sender: u32, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(HEADER);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&MAGIC.to_le_bytes());
    m.extend_from_slice(&sender.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&(len as u64).to_le_bytes());
    let start = body_start(sender, seq);
    m.extend_from_slice(&pattern(len)[start..start + len - HEADER]);
    m
}

/// Checks a delivered message byte for byte; returns its sender and sequence number.
pub fn decode(data: &[u8]) -> Result<(u32, u64), String> {
    if data.len() < HEADER {
        return Err(format!("{} bytes, shorter than the header", data.len()));
    }
    let word = |at: usize, n: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&data[at..at + n]);
        u64::from_le_bytes(b)
    };
    if word(0, 4) != u64::from(MAGIC) {
        return Err("bad magic".into());
    }
    let sender = word(4, 4) as u32;
    let seq = word(8, 8);
    let len = word(16, 8);
    if len != data.len() as u64 {
        return Err(format!(
            "sender {sender} seq {seq}: header says {len} bytes, {} delivered",
            data.len()
        ));
    }
    let start = body_start(sender, seq);
    if data[HEADER..] != pattern(data.len())[start..start + data.len() - HEADER] {
        return Err(format!("sender {sender} seq {seq}: body differs"));
    }
    Ok((sender, seq))
}
