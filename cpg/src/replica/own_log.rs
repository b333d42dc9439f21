//! The machine's log of its own applied operations ([`OwnLog`]): the latest
//! [`Config::own_log_limit`](super::Config::own_log_limit) of them, kept to report the
//! ones a merge discards.

use std::collections::VecDeque;

/// The latest own operations applied, oldest first, with their sequence numbers: their
/// bytes one after another in one buffer, so that logging an operation allocates
/// nothing once the buffer has grown to what the log holds (one allocation per
/// operation was a fifth of what a submitted operation cost in allocations).
#[derive(Debug, Default)]
pub(super) struct OwnLog {
    /// Sequence number and length of each operation, oldest first.
    ops: VecDeque<(u64, usize)>,
    /// The operations' bytes, oldest first, from `start` on; what lies before `start`
    /// was dropped and is reclaimed once it is at least half the buffer.
    bytes: Vec<u8>,
    start: usize,
}

impl OwnLog {
    /// Logs operation `seq`, then drops the oldest ones while more than `limit` are
    /// held.
    pub(super) fn push(&mut self, seq: u64, op: &[u8], limit: usize) {
        self.ops.push_back((seq, op.len()));
        self.bytes.extend_from_slice(op);
        while self.ops.len() > limit {
            let Some((_, len)) = self.ops.pop_front() else {
                break;
            };
            self.start += len;
        }
        if self.start > 0 && self.start >= self.bytes.len() / 2 {
            // The live bytes move to the front: each byte is moved at most once per
            // time the buffer's live part halves, so logging stays linear.
            self.bytes.drain(..self.start);
            self.start = 0;
            if self.bytes.capacity() > 4 * self.bytes.len().max(4096) {
                // A burst of large operations is over: give its memory back.
                self.bytes.shrink_to(2 * self.bytes.len());
            }
        }
    }

    /// The operations held, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let mut at = self.start;
        self.ops.iter().map(move |&(seq, len)| {
            let op = &self.bytes[at..at + len];
            at += len;
            (seq, op)
        })
    }

    /// How many operations are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ops.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(log: &OwnLog) -> Vec<(u64, Vec<u8>)> {
        log.iter().map(|(s, op)| (s, op.to_vec())).collect()
    }

    /// The log keeps the latest `limit` operations, each with its own bytes, in order
    /// (also empty ones, and across the reclaiming of the buffer's front).
    #[test]
    fn keeps_the_latest_operations_with_their_bytes() {
        let mut log = OwnLog::default();
        let mut expected = VecDeque::new();
        let limit = 5;
        for seq in 1..=200u64 {
            let op: Vec<u8> = (0..(seq % 7) as u8).map(|b| b ^ seq as u8).collect();
            log.push(seq, &op, limit);
            expected.push_back((seq, op));
            while expected.len() > limit {
                expected.pop_front();
            }
            assert_eq!(held(&log), Vec::from(expected.clone()), "after {seq}");
        }
        assert_eq!(log.len(), limit);
        // The buffer holds about what the log holds, not everything ever logged.
        assert!(log.bytes.len() <= 2 * 5 * 6, "{} bytes", log.bytes.len());
    }

    /// A limit of 0 keeps nothing; a large operation that no longer fits the limit
    /// leaves no bytes behind.
    #[test]
    fn a_limit_of_zero_keeps_nothing() {
        let mut log = OwnLog::default();
        log.push(1, &[1; 1000], 0);
        assert_eq!(log.len(), 0);
        assert!(log.bytes.is_empty());
        log.push(2, &[2; 3], 1);
        assert_eq!(held(&log), vec![(2, vec![2; 3])]);
    }

    /// After a burst of large operations, the buffer gives most of its memory back
    /// once small ones have replaced them.
    #[test]
    fn memory_of_a_burst_of_large_operations_is_given_back() {
        let mut log = OwnLog::default();
        for seq in 0..4 {
            log.push(seq, &vec![7; 1 << 20], 4);
        }
        let peak = log.bytes.capacity();
        assert!(peak >= 4 << 20);
        for seq in 4..1000 {
            log.push(seq, &[seq as u8; 16], 4);
        }
        assert_eq!(held(&log).len(), 4);
        assert!(
            log.bytes.capacity() < peak / 16,
            "{} of {peak}",
            log.bytes.capacity()
        );
    }
}
