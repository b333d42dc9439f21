//! Hostile and buggy peers: a real [`Machine`] in a view with peers whose messages
//! the test writes by hand (or the simulator of the parent module, for silent ones).
//! Each test drives the machine with one misbehaving peer, measures what the machine
//! holds on its behalf ([`Footprint`]: bytes buffered, checks, ranges, messages), prints
//! it, and checks the bound and that the group makes progress.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::super::wire::{Msg, RoundId};
use super::bench::Bench;
use super::{config, config_chunk, m, Config, Event, Failure, Log, Machine, Phase, Sim};
use crate::group::ViewId;

const MIB: usize = 1 << 20;

/// The attack of issue 23: the winner of the summary round announces a state and then
/// sends chunks without end. Before the bound every receiver buffered them all (the
/// length was only checked at the end, which never came) and every chunk extended the
/// round's deadline.
#[test]
fn chunks_beyond_the_announced_length_end_the_transfer_at_once() {
    let mut b = Bench::new(config(), 1, 2);
    let round = b.transfer_from_m0();
    // A header that could be right: 1 MiB in a million chunks of a byte or more.
    b.header(round, MIB as u64, 1_000_000);
    let stale_before = b.mach.stats().stale;
    for i in 0..96 {
        b.chunk(round, i, MIB);
    }
    println!(
        "chunks without end: 96 chunks of 1 MiB after a header of 1 MiB in a million: \
         {} bytes buffered at most, failed rounds {:?}",
        b.peak.transfer,
        b.failed()
    );
    assert!(
        b.peak.transfer <= MIB,
        "never more than announced: {} bytes",
        b.peak.transfer
    );
    // The first chunk already leaves too few bytes for the chunks still to come: the
    // transfer ends there, for every member at the same point; the rest is stale.
    assert_eq!(b.failed(), vec![(0, Failure::BadTransfer)]);
    assert_eq!(b.mach.stats().stale - stale_before, 95);
    // Progress: the next attempt, coordinated by this member (m(1)), started.
    assert!(b.sent_start(1), "{:?}", b.sent);
    assert_eq!(b.mach.footprint().transfer, 0);
}

/// A chunk count that cannot match the announced length ends the transfer at the
/// header; chunks that cannot add up to it end it at the first that shows it.
#[test]
fn a_chunk_count_that_cannot_match_the_length_ends_the_transfer_at_once() {
    // (length, chunks) a header cannot mean: no chunk; an empty state in two; more
    // chunks than bytes (every chunk of a non-empty state holds at least one).
    for (len, chunks) in [(10, 0), (0, 2), (10, 11)] {
        let mut b = Bench::new(config(), 1, 2);
        let round = b.transfer_from_m0();
        b.header(round, len, chunks);
        assert_eq!(
            b.failed(),
            vec![(0, Failure::BadTransfer)],
            "header ({len}, {chunks})"
        );
        assert!(
            b.sent_start(1),
            "({len}, {chunks}): the next attempt started"
        );
    }
    // (length, chunks, the chunks sent): a first chunk that leaves nothing for the
    // second; an empty chunk of a non-empty state.
    for (len, chunks, sizes) in [(10, 2, vec![10]), (10, 2, vec![0])] {
        let mut b = Bench::new(config(), 1, 2);
        let round = b.transfer_from_m0();
        b.header(round, len, chunks);
        for (i, size) in sizes.iter().enumerate() {
            b.chunk(round, i as u32, *size);
        }
        assert_eq!(
            b.failed(),
            vec![(0, Failure::BadTransfer)],
            "({len}, {chunks}): chunks {sizes:?}"
        );
        assert_eq!(b.mach.stats().restores, 0);
    }
}

/// Blind spot (e) of issue 23: the received length must be the header's. A last chunk
/// that leaves the state short, or one that makes it longer, fails the round for
/// every member; nothing is restored.
#[test]
fn the_received_length_must_be_the_announced_one() {
    // 10 bytes in 2 chunks: 5 + 4 (short), 5 + 6 (long).
    for last in [4, 6] {
        let mut b = Bench::new(config(), 1, 2);
        let round = b.transfer_from_m0();
        b.header(round, 10, 2);
        b.chunk(round, 0, 5);
        assert!(b.failed().is_empty());
        b.chunk(round, 1, last);
        assert_eq!(
            b.failed(),
            vec![(0, Failure::BadTransfer)],
            "5 + {last} bytes for 10"
        );
        assert_eq!(b.mach.stats().restores, 0);
        assert!(!b
            .events
            .iter()
            .any(|e| matches!(e, Event::Synced { .. } | Event::Restored { .. })));
    }
}

/// [`Config::max_state_size`] is checked at the header: nothing is reserved for a
/// state above it. Before the bound a header announcing 1 TiB made every receiver
/// reserve 1 GiB at once.
#[test]
fn a_state_above_the_maximum_size_is_refused_at_the_header() {
    let mut b = Bench::new(config(), 1, 2);
    let round = b.transfer_from_m0();
    b.header(round, 1 << 40, 4);
    println!(
        "1 TiB announced: {} bytes reserved, failed rounds {:?}",
        b.peak.transfer,
        b.failed()
    );
    assert_eq!(b.peak.transfer, 0);
    assert_eq!(b.failed(), vec![(0, Failure::TooLarge)]);
    assert!(b.sent_start(1));
    // Exactly the limit is accepted; one byte more is not.
    let cfg = Config {
        max_state_size: 1000,
        ..config()
    };
    for (len, refused) in [(1000, false), (1001, true)] {
        let mut b = Bench::new(cfg.clone(), 1, 2);
        let round = b.transfer_from_m0();
        b.header(round, len, 1);
        assert_eq!(
            b.failed() == vec![(0, Failure::TooLarge)],
            refused,
            "{len} bytes"
        );
    }
}

/// A source that sends a chunk every 9 s (each within the round deadline of 10 s)
/// cannot hold the round beyond the transfer's overall deadline: the round deadline
/// plus the announced length at [`Config::min_transfer_rate`]. Before, every chunk
/// extended the deadline: 200 chunks (30 minutes) and no trouble report.
#[test]
fn a_source_trickling_chunks_cannot_extend_the_transfer() {
    let mut b = Bench::new(config(), 1, 2);
    let round = b.transfer_from_m0();
    let start = b.now;
    b.header(round, 10_000, 10_000);
    let mut first_trouble = None;
    for i in 0..200 {
        b.advance(Duration::from_secs(9));
        if first_trouble.is_none() && b.troubles() > 0 {
            first_trouble = Some(b.now - start);
        }
        b.chunk(round, i, 1);
    }
    println!("a chunk every 9 s: first trouble report after {first_trouble:?}");
    // 10 s + 10,000 bytes at 1 MiB/s: the first check after 10 s is at 18 s.
    let first = first_trouble.expect("a trouble report");
    assert!(first <= Duration::from_secs(18), "{first:?}");
    // The report of any member, delivered, ends the attempt for all.
    let trouble = b
        .sent
        .iter()
        .find(|s| matches!(s, Msg::Trouble { .. }))
        .unwrap()
        .clone();
    b.peer(m(0), &trouble);
    assert_eq!(b.failed(), vec![(0, Failure::Deadline)]);
}

/// The verify flood of issue 23: 400,000 `Verify` requests with a new check each,
/// never answered by their issuer. Before: 400,000 checks open (140 MiB) and as many
/// digests sent. Now a request from an issuer whose previous check it has not answered
/// itself is dropped.
#[test]
fn verify_requests_never_answered_by_their_issuer_keep_one_check_open() {
    let mut b = Bench::new(config(), 1, 2);
    let round = b.round(m(0), 0);
    let hash = b.hash();
    b.peer(
        m(0),
        &Msg::Start {
            members: hash,
            round,
        },
    );
    b.loopback();
    let s = b.mach.summary();
    b.peer(
        m(0),
        &Msg::Summary {
            round,
            version: s.version,
            digest: s.digest,
            hint: 0,
            quorum: 0,
        },
    );
    assert_eq!(b.mach.phase(), Phase::Ready);
    // The summary now: the state learned the view at the end of the round.
    let s = b.mach.summary();
    let sent_before = b.sent.len();
    b.sample = true;
    for check in 0..400_000 {
        if check % 10_000 == 0 {
            b.note();
        }
        b.peer(
            m(0),
            &Msg::Verify {
                members: hash,
                check,
            },
        );
        // This member's digests are delivered back, like every send.
        b.loopback();
    }
    b.note();
    let digests = b.sent.len() - sent_before;
    println!(
        "400,000 verify requests: {} checks open at most ({} digests held), {digests} \
         digests sent",
        b.peak.checks, b.peak.check_entries
    );
    assert_eq!(b.peak.checks, 1);
    assert_eq!(digests, 1);
    // Once the issuer answers its check, the check completes and it may ask again.
    b.peer(
        m(0),
        &Msg::Digest {
            members: hash,
            issuer: m(0),
            check: 0,
            version: s.version,
            digest: s.digest,
            hint: 0,
            epoch: 0,
        },
    );
    assert!(b.events.contains(&Event::Verified {
        check: 0,
        summary: s
    }));
    b.peer(
        m(0),
        &Msg::Verify {
            members: hash,
            check: 7,
        },
    );
    assert!(b
        .sent
        .iter()
        .any(|x| matches!(x, Msg::Digest { issuer, check: 7, .. } if *issuer == m(0))));
}

/// An issuer that answers its own checks while another member never does (a ghost)
/// replaces its open check with each new one: one check per issuer, and verification
/// goes on.
#[test]
fn an_issuer_blocked_by_a_ghost_replaces_its_check() {
    let mut sim = Sim::new(3, config());
    sim.view(0, &[0, 1, 2]);
    sim.settle();
    sim.nodes[2].silent = true;
    for _ in 0..50 {
        sim.nodes[0].machine.verify();
        sim.settle();
    }
    for i in 0..2 {
        let f = sim.nodes[i].machine.footprint();
        assert_eq!(f.checks, 1, "node {i}: {f:?}");
    }
}

/// A member that joined the group but never speaks the protocol (a monitoring tool, a
/// stopped process) and is the coordinator of attempt 0 (the lowest member) holds the
/// round for one deadline: it is known silent from then on, not waited for again in
/// the view. Before, the next attempt waited for its summary too: two deadlines.
/// Writes made meanwhile are applied after the round, in order.
#[test]
fn a_member_that_never_speaks_holds_a_round_for_one_deadline() {
    let mut sim = Sim::new(3, config());
    sim.nodes[0].silent = true;
    sim.view(0, &[0, 1, 2]);
    let start = sim.now;
    let a = sim.submit(1, "during 1");
    let b = sim.submit(2, "during 2");
    sim.settle();
    let mut synced = None;
    for _ in 0..40 {
        sim.advance(Duration::from_secs(1));
        sim.settle();
        if synced.is_none() && (1..3).all(|i| sim.nodes[i].machine.phase() == Phase::Ready) {
            synced = Some(sim.now - start);
        }
    }
    println!("a silent coordinator: in sync after {synced:?}");
    let synced = synced.expect("in sync");
    assert!(synced <= Duration::from_secs(11), "{synced:?}");
    sim.assert_converged(&[1, 2]);
    assert_eq!(sim.ops(1), vec![(m(1), a), (m(2), b)]);
    // Periodic and requested verifications complete without it.
    sim.nodes[1].machine.verify();
    sim.settle();
    assert!(sim.nodes[2]
        .events
        .iter()
        .any(|e| matches!(e, Event::Verified { .. })));
}

/// A member that sends only garbage is reported once per view (the count is in
/// [`Stats::malformed`](crate::replica::Stats::malformed)), and holds a round for one
/// deadline at most, like a silent one.
#[test]
fn a_member_that_sends_only_garbage_is_reported_once_and_holds_a_round_for_one_deadline() {
    let mut sim = Sim::new(3, config());
    sim.nodes[0].silent = true;
    sim.view(0, &[0, 1, 2]);
    let start = sim.now;
    let mut synced = None;
    for _ in 0..30 {
        for _ in 0..1000 {
            sim.wire[0].push_back((0, b"garbage".to_vec()));
        }
        sim.advance(Duration::from_secs(1));
        sim.settle();
        if synced.is_none() && (1..3).all(|i| sim.nodes[i].machine.phase() == Phase::Ready) {
            synced = Some(sim.now - start);
        }
    }
    let malformed = sim.nodes[1]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Malformed { .. }))
        .count();
    println!(
        "30,000 garbage messages: {malformed} events, in sync after {synced:?}, {} counted",
        sim.nodes[1].machine.stats().malformed
    );
    assert_eq!(malformed, 1);
    assert_eq!(sim.nodes[1].machine.stats().malformed, 30_000);
    assert!(synced.expect("in sync") <= Duration::from_secs(11));
    sim.assert_converged(&[1, 2]);
}

/// The coordinator may start again for a later view of its own (its earlier start was
/// stale), but a coordinator that does so without end neither extends the collection
/// beyond its deadline nor piles up summaries to send (while the driver cannot hand
/// them over, say under back-pressure from the flood).
#[test]
fn a_coordinator_starting_over_and_over_cannot_extend_the_round() {
    for hold in [true, false] {
        let mut b = Bench::new(config(), 1, 3);
        b.hold = hold;
        let hash = b.hash();
        let start = b.now;
        let mut first_trouble = None;
        for counter in 1..=100 {
            let round = RoundId {
                view: ViewId {
                    incarnation: 1,
                    counter,
                },
                ..b.round(m(0), 0)
            };
            b.peer(
                m(0),
                &Msg::Start {
                    members: hash,
                    round,
                },
            );
            b.advance(Duration::from_secs(1));
            if first_trouble.is_none() && b.troubles() > 0 {
                first_trouble = Some(b.now - start);
            }
        }
        if hold {
            println!(
                "100 starts, 1 s apart, nothing sent: {} messages waiting at most",
                b.peak.outbox
            );
            // Only the latest summary and trouble report wait; the earlier ones
            // belonged to rounds that no longer exist.
            assert!(b.peak.outbox <= 2, "{:?}", b.peak);
        } else {
            println!("100 starts, 1 s apart: first trouble after {first_trouble:?}");
            assert!(first_trouble.expect("a trouble report") <= Duration::from_secs(10));
        }
    }
}

/// A member sending its summary again and again does not extend the collection: a
/// silent third member is given up on at the deadline.
#[test]
fn a_summary_sent_again_does_not_extend_the_collection() {
    let mut b = Bench::new(config(), 1, 3);
    let round = b.round(m(0), 0);
    let hash = b.hash();
    let start = b.now;
    b.peer(
        m(0),
        &Msg::Start {
            members: hash,
            round,
        },
    );
    b.loopback();
    let mut first_trouble = None;
    for _ in 0..100 {
        b.peer(
            m(0),
            &Msg::Summary {
                round,
                version: 0,
                digest: 0,
                hint: 0,
                quorum: 0,
            },
        );
        b.advance(Duration::from_secs(9));
        if first_trouble.is_none() && b.troubles() > 0 {
            first_trouble = Some(b.now - start);
        }
    }
    println!("a summary every 9 s: first trouble after {first_trouble:?}");
    assert!(first_trouble.expect("a trouble report") <= Duration::from_secs(18));
}

/// Operations of one origin with gaps between their sequence numbers (a buggy or
/// foreign member: this crate's sequence numbers have gaps only where a merge
/// discarded some) keep a bounded history of ranges. Before: one range per operation.
#[test]
fn operations_with_gapped_sequence_numbers_keep_a_bounded_history() {
    let mut b = Bench::new(config(), 1, 2);
    let round = b.round(m(0), 0);
    let hash = b.hash();
    b.peer(
        m(0),
        &Msg::Start {
            members: hash,
            round,
        },
    );
    b.loopback();
    let s = b.mach.summary();
    b.peer(
        m(0),
        &Msg::Summary {
            round,
            version: s.version,
            digest: s.digest,
            hint: 0,
            quorum: 0,
        },
    );
    assert_eq!(b.mach.phase(), Phase::Ready);
    for i in 0..100_000u64 {
        b.mach.handle_message(
            b.now,
            m(0),
            &Msg::Op {
                seq: 2 * i + 1,
                data: vec![],
            }
            .encode(),
        );
    }
    b.collect();
    println!(
        "100,000 operations, every other sequence number: {} ranges kept",
        b.peak.ranges
    );
    assert_eq!(b.mach.stats().applied, 100_000);
    assert!(b.peak.ranges <= 1024, "{}", b.peak.ranges);
}

/// Only members that restore the state buffer it: not the source, not a member whose
/// state is already the chosen one. Before, every member buffered every transfer.
#[test]
fn only_members_that_restore_buffer_the_state() {
    let mut sim = Sim::new(3, config_chunk_pad());
    sim.nodes[0].machine = Machine::new(
        Log {
            pad: 300_000,
            ..Log::default()
        },
        config_chunk_pad(),
    );
    sim.nodes[1].machine = Machine::new(
        Log {
            pad: 300_000,
            ..Log::default()
        },
        config_chunk_pad(),
    );
    sim.view(0, &[0, 1, 2]);
    let mut peak = [0; 3];
    sim.pump();
    while sim.step(0) {
        for (i, p) in peak.iter_mut().enumerate() {
            *p = (*p).max(sim.nodes[i].machine.footprint().transfer);
        }
    }
    println!("a 300 kB state to one joiner: bytes buffered per member {peak:?}");
    sim.assert_converged(&[0, 1, 2]);
    assert_eq!(peak[0], 0, "the source");
    assert_eq!(peak[1], 0, "a member with the chosen state");
    // The padding, and 24 bytes of the test state's counts and hint.
    assert!(peak[2] > 0 && peak[2] <= 300_024, "{}", peak[2]);
    assert_eq!(sim.nodes[2].machine.stats().bytes_received, 300_024);
}

fn config_chunk_pad() -> Config {
    Config {
        chunk_size: 64 * 1024,
        ..config()
    }
}

/// Issue 23, item 8: a source whose snapshot does not restore to its digest (a buggy
/// application). The member that restored it does not report `Synced` with a state
/// other than the announced one: its round failed (`Damaged`), its state has no
/// history (version 0, so that it cannot win a round), it leaves and joins again; once
/// the source is fixed, the retry brings it in sync.
#[test]
fn a_snapshot_that_does_not_restore_to_its_digest_fails_the_round_and_is_retried() {
    let mut sim = Sim::new(2, config());
    sim.view(0, &[0]);
    sim.settle();
    sim.submit(0, "a");
    sim.submit(0, "b");
    sim.settle();
    sim.nodes[0].lie.store(1, Ordering::SeqCst);
    sim.view(0, &[0, 1]);
    let rejoin = sim.settle_watching_rejoin(1);
    assert!(rejoin, "the member that restored asks to rejoin");
    let n1 = &sim.nodes[1];
    assert!(
        !n1.events.iter().any(|e| matches!(e, Event::Synced { .. })),
        "never synced with another state: {:?}",
        n1.events
    );
    assert!(n1.events.contains(&Event::RoundFailed {
        attempt: 0,
        why: Failure::Damaged
    }));
    assert_eq!(n1.machine.summary().version, 0);
    assert_eq!(n1.machine.phase(), Phase::Detached);
    // The retry: it joins again, the source's snapshot is right this time.
    sim.nodes[0].lie.store(0, Ordering::SeqCst);
    sim.view(0, &[0, 1]);
    sim.settle();
    sim.assert_converged(&[0, 1]);
    assert_eq!(sim.ops(1).len(), 2);
}

/// Item 8 again: a chunk damaged on its way (the same length, other bytes) restores to
/// another digest: the round fails for the member that restored it, which joins
/// again and gets the state in the retry.
#[test]
fn a_corrupted_chunk_fails_the_round_and_is_retried() {
    let mut sim = Sim::new(2, config_chunk(64));
    sim.view(0, &[0]);
    sim.settle();
    for i in 0..10 {
        sim.submit(0, &format!("operation {i}"));
    }
    sim.settle();
    sim.view(0, &[0, 1]);
    // Run until the source's chunks are on the wire; damage the second one.
    let mut damaged = false;
    for _ in 0..100 {
        sim.pump();
        for (_, bytes) in sim.wire[0].iter_mut() {
            if let Ok(Msg::Chunk {
                round,
                index: 1,
                mut data,
            }) = Msg::decode(bytes)
            {
                if !damaged {
                    data[10] ^= 0x20;
                    *bytes = Msg::Chunk {
                        round,
                        index: 1,
                        data,
                    }
                    .encode();
                    damaged = true;
                }
            }
        }
        if damaged {
            break;
        }
        sim.step(0);
    }
    assert!(damaged);
    let rejoin = sim.settle_watching_rejoin(1);
    assert!(rejoin);
    assert!(sim.nodes[1].events.contains(&Event::RoundFailed {
        attempt: 0,
        why: Failure::Damaged
    }));
    assert!(!sim.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, Event::Synced { .. })));
    sim.view(0, &[0, 1]);
    sim.settle();
    sim.assert_converged(&[0, 1]);
    assert_eq!(sim.ops(1).len(), 10);
}

/// Item 8: a truncated chunk is seen by every member at the same point: the attempt
/// fails for all (`BadTransfer`), the next coordinator starts the next one, and it
/// succeeds.
#[test]
fn a_truncated_chunk_fails_the_attempt_for_everyone_and_the_next_one_succeeds() {
    let mut sim = Sim::new(3, config_chunk(64));
    sim.view(0, &[0, 1]);
    sim.settle();
    for i in 0..10 {
        sim.submit(0, &format!("operation {i}"));
    }
    sim.settle();
    sim.view(0, &[0, 1, 2]);
    let mut cut = false;
    for _ in 0..100 {
        sim.pump();
        for (_, bytes) in sim.wire[0].iter_mut() {
            if !cut && matches!(Msg::decode(bytes), Ok(Msg::Chunk { index: 2, .. })) {
                bytes.pop();
                cut = true;
            }
        }
        if cut {
            break;
        }
        sim.step(0);
    }
    assert!(cut);
    sim.settle();
    for i in 0..3 {
        let failed: Vec<_> = sim.nodes[i]
            .events
            .iter()
            .filter(|e| matches!(e, Event::RoundFailed { .. }))
            .collect();
        assert_eq!(
            failed,
            vec![&Event::RoundFailed {
                attempt: 0,
                why: Failure::BadTransfer
            }],
            "node {i}"
        );
    }
    sim.assert_converged(&[0, 1, 2]);
    assert_eq!(sim.ops(2).len(), 10);
    assert_eq!(sim.nodes[1].machine.round().unwrap().attempt, 1);
}
