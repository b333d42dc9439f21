//! Round messages that belong elsewhere are stale: a start, a trouble report, a
//! verification request or a digest sent for another member list (in a view whose
//! members differ), and a trouble report of an attempt that has ended. Each test here
//! failed with its check taken out of the machine.

use std::time::Duration;

use super::super::wire::{members_hash, Msg};
use super::bench::Bench;
use super::{config, m, Event, Failure, Phase};

/// A bench whose machine, `m(1)` of two members, has synced (all summaries equal).
fn ready() -> Bench {
    let mut b = Bench::new(config(), 1, 2);
    let round = b.round(m(0), 0);
    let members = b.hash();
    b.peer(m(0), &Msg::Start { members, round });
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
    b
}

/// The hash of a member list that is not the bench's view's.
fn another_list(b: &Bench) -> u64 {
    let mut other = b.members.clone();
    other.push(m(9));
    members_hash(&other)
}

fn summaries_sent(b: &Bench) -> usize {
    b.sent
        .iter()
        .filter(|s| matches!(s, Msg::Summary { .. }))
        .count()
}

#[test]
fn a_start_for_another_member_list_is_stale() {
    let mut b = Bench::new(config(), 1, 2);
    let round = b.round(m(0), 0);
    let stale = b.mach.stats().stale;
    b.peer(
        m(0),
        &Msg::Start {
            members: another_list(&b),
            round,
        },
    );
    assert_eq!(summaries_sent(&b), 0, "no summary for another view's start");
    assert_eq!(b.mach.stats().stale, stale + 1);
    let members = b.hash();
    b.peer(m(0), &Msg::Start { members, round });
    assert_eq!(summaries_sent(&b), 1, "the view's own start is answered");
}

#[test]
fn a_trouble_report_for_another_member_list_is_stale() {
    let mut b = Bench::new(config(), 1, 3);
    b.advance(Duration::from_secs(10));
    let Some(Msg::Trouble { attempt, stage, .. }) = b
        .sent
        .iter()
        .find(|s| matches!(s, Msg::Trouble { .. }))
        .cloned()
    else {
        panic!("no trouble report after the deadline: {:?}", b.sent);
    };
    let members = another_list(&b);
    b.peer(
        m(2),
        &Msg::Trouble {
            members,
            attempt,
            stage,
        },
    );
    assert_eq!(b.failed(), vec![], "another view's report ends nothing");
    b.loopback();
    assert_eq!(b.failed(), vec![(0, Failure::Deadline)]);
}

/// Two members' deadlines expire at once: the first report delivered ends attempt 0,
/// and the second, delivered after attempt 1 began (at the same stage), is stale.
#[test]
fn a_trouble_report_of_an_ended_attempt_does_not_end_the_next() {
    let mut b = Bench::new(config(), 1, 3);
    b.advance(Duration::from_secs(10));
    let late = b
        .sent
        .iter()
        .find(|s| matches!(s, Msg::Trouble { attempt: 0, .. }))
        .cloned()
        .expect("a trouble report of attempt 0");
    b.loopback();
    assert_eq!(b.failed(), vec![(0, Failure::Deadline)]);
    assert_eq!(
        b.mach.round().map(|r| r.attempt),
        None,
        "attempt 1 not started"
    );
    assert!(b.sent_start(1), "this member coordinates attempt 1");
    b.peer(m(2), &late);
    assert_eq!(
        b.failed(),
        vec![(0, Failure::Deadline)],
        "attempt 1 goes on"
    );
    // Its start, delivered, begins it.
    b.loopback();
    assert_eq!(b.mach.round().map(|r| r.attempt), Some(1));
}

#[test]
fn a_verification_request_for_another_member_list_is_stale() {
    let mut b = ready();
    let digests = |b: &Bench| {
        b.sent
            .iter()
            .filter(|s| matches!(s, Msg::Digest { .. }))
            .count()
    };
    b.peer(
        m(0),
        &Msg::Verify {
            members: another_list(&b),
            check: 1,
        },
    );
    assert_eq!(digests(&b), 0, "no digest for another view's request");
    let members = b.hash();
    b.peer(m(0), &Msg::Verify { members, check: 2 });
    assert_eq!(digests(&b), 1, "the view's own request is answered");
}

/// A digest sent for another member list does not count: it would be the issuer's
/// first, and the one that counts; here it differs, and the check would diverge.
#[test]
fn a_digest_for_another_member_list_is_stale() {
    let mut b = ready();
    let members = b.hash();
    b.peer(m(0), &Msg::Verify { members, check: 7 });
    let s = b.mach.summary();
    b.peer(
        m(0),
        &Msg::Digest {
            members: another_list(&b),
            issuer: m(0),
            check: 7,
            version: s.version + 1,
            digest: !s.digest,
            hint: 0,
            epoch: 0,
        },
    );
    b.peer(
        m(0),
        &Msg::Digest {
            members,
            issuer: m(0),
            check: 7,
            version: s.version,
            digest: s.digest,
            hint: 0,
            epoch: 0,
        },
    );
    b.loopback();
    assert!(
        b.events.contains(&Event::Verified {
            check: 7,
            summary: s
        }),
        "{:?}",
        b.events
    );
    assert!(!b.events.iter().any(|e| matches!(e, Event::Diverged { .. })));
}
