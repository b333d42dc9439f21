//! The replica layer on corosync's quorum, on private votequorum clusters:
//!
//! - 3 nodes (one vote each) partitioned 2|1, the two notification orders forced (the
//!   drivers' test hook holds one connection's events): the minority's replica refuses
//!   writes, at once while its daemon says not quorate and at the agreed point for a
//!   write sent while it still believed the old ring's quorum; the majority's succeed;
//!   writers running through the cut never lose a write silently (each is applied and
//!   kept, reported discarded, or refused); after the heal the minority holds the
//!   majority's history;
//! - the same partition with writes not gated ([`Config::gate_writes`] off): the
//!   minority applies more writes than the majority, and still loses the merge to the
//!   quorate side's history (its writes reported discarded);
//! - `two_node` with `wait_for_all`: the survivor of a cut writes; a node started alone
//!   refuses writes until it has seen the other;
//! - a node with 2 votes: cut off, neither side is quorate (2 of 4 votes each), so
//!   neither writes, where counting nodes would have let the two-node side write.
//!
//! The clusters run one at a time ([`serial`]): each needs the machine's 2 cores.
#![cfg(feature = "quorum")]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpg::group::{AgreedQuorum, LocalQuorum};
use cpg::replica::{Event, ReplicaError};
use cpg::{Member, RingId};
use cpg_testkit::{Cluster, ClusterBuilder, Quorum};
use support::replica::{assert_converged, config, Outcomes, Rep};
use support::{big_stack, serial, unique_group, WAIT};

/// The most a partition or a heal may take to show as an agreed state: a cut-off node
/// is declared lost after token + consensus, votequorum decides within a few
/// rotations, and one marker makes a round trip; 10 × token leaves room for a loaded
/// 2-core machine (as for the group layer's test, `group_quorum.rs`).
fn bound(cluster: &Cluster) -> Duration {
    Duration::from_millis(u64::from(cluster.token_ms()) * 10)
}

fn start(builder: ClusterBuilder, what: &str) -> Cluster {
    builder
        .start()
        .unwrap_or_else(|e| panic!("cannot start the cluster ({what}):\n{e}"))
}

/// Waits until `rep`'s agreed quorum passes `want`; returns it.
fn wait_agreed(rep: &Rep, within: Duration, want: impl Fn(AgreedQuorum) -> bool) -> AgreedQuorum {
    let deadline = Instant::now() + within;
    loop {
        let q = rep.replica.agreed_quorum();
        if want(q) {
            return q;
        }
        assert!(
            Instant::now() < deadline,
            "{}: agreed quorum {q} after {within:?}",
            rep.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `rep`'s local quorum passes `want`; returns it.
fn wait_local(rep: &Rep, within: Duration, want: impl Fn(LocalQuorum) -> bool) -> LocalQuorum {
    let deadline = Instant::now() + within;
    loop {
        let q = rep.replica.quorum();
        if want(q) {
            return q;
        }
        assert!(
            Instant::now() < deadline,
            "{}: local quorum {q:?} after {within:?}",
            rep.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn quorate(q: AgreedQuorum) -> bool {
    matches!(q, AgreedQuorum::Quorate(_))
}

fn not_quorate(q: AgreedQuorum) -> bool {
    matches!(q, AgreedQuorum::NotQuorate(_))
}

/// Quorate in another ring than `old`.
fn quorate_after(old: RingId) -> impl Fn(AgreedQuorum) -> bool {
    move |q| quorate(q) && q.ring() != Some(old)
}

/// Waits until `rep` is in a view of `n` members (whatever its phase).
fn wait_view(rep: &Rep, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while rep.replica.view().map(|v| v.len()) != Some(n) {
        assert!(
            Instant::now() < deadline,
            "{}: no view of {n} within {within:?}",
            rep.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `count` operations tagged `tag` through `rep`, each awaited; returns the
/// sequence numbers of those applied.
fn write(rep: &Rep, tag: &str, count: usize) -> Vec<u64> {
    (0..count)
        .map(|i| {
            let t = rep
                .replica
                .submit(format!("{tag}:{i}"))
                .unwrap_or_else(|e| panic!("{}: submit {tag}:{i}: {e}", rep.name));
            t.wait(WAIT)
                .unwrap_or_else(|e| panic!("{}: {tag}:{i}: {e}", rep.name));
            t.seq()
        })
        .collect()
}

/// A write that must be refused: at once, or at the agreed point.
fn refused(rep: &Rep, tag: &str) -> ReplicaError {
    match rep.replica.submit(tag) {
        Err(e) => e,
        Ok(t) => t
            .wait(WAIT)
            .expect_err("a write refused at the agreed point"),
    }
}

/// A thread writing through the partition, tolerating refusals: every submit and
/// every ticket's outcome is recorded.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Outcomes, usize)>>,
}

impl Writer {
    fn start(rep: &Rep, tag: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, tag) = (Arc::clone(&rep.replica), Arc::clone(&stop), tag.to_string());
        let thread = std::thread::spawn(move || {
            let (mut out, mut fast) = (Vec::new(), 0);
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                match r.submit(format!("{tag}:{n}")) {
                    Ok(t) => out.push((t.seq(), t.wait(WAIT * 2))),
                    Err(ReplicaError::NotQuorate) => fast += 1,
                    Err(e) => panic!("writer {tag}: submit: {e}"),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (out, fast)
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; every ticket's outcome, and how many submits failed at once.
    fn finish(mut self) -> (Outcomes, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("writer panicked")
    }
}

fn ring_of(q: AgreedQuorum) -> RingId {
    q.ring().expect("decided")
}

#[test]
fn a_minority_replica_refuses_writes_and_takes_the_majoritys_history_after_the_heal() {
    let _serial = serial();
    big_stack(|| {
        let cluster = start(
            Cluster::builder().nodes(3).quorum(Quorum::votequorum()),
            "3 nodes, votequorum",
        );
        let within = bound(&cluster);
        let group = unique_group("replica-quorum");
        let reps: Vec<Rep> = (0..3)
            .map(|i| Rep::start(cluster.node(i), &format!("node{}", i + 1), &group))
            .collect();
        let [n1, n2, n3] = [&reps[0], &reps[1], &reps[2]];
        for r in &reps {
            r.wait_ready(3);
            wait_agreed(r, WAIT, quorate);
        }
        let mut confirmed: Vec<Vec<u64>> = reps.iter().map(|r| write(r, "before", 2)).collect();
        assert_converged("before the cut", &[n1, n2, n3], &confirmed);
        let epoch_before = n1.replica.summary().epoch;
        assert!(epoch_before >= 1, "quorate at least once: {epoch_before}");
        let old_ring = ring_of(n1.replica.agreed_quorum());

        // Writers on every node, through the cut and the heal.
        let writers: Vec<Writer> = reps
            .iter()
            .enumerate()
            .map(|(i, r)| Writer::start(r, &format!("w{}", i + 1)))
            .collect();

        // The cut, with the notification orders forced: node 1 hears of CPG's change
        // first (its quorum connection held), node 2 of the quorum first (its CPG
        // connection held), node 3 of CPG's change first.
        n1.replica.hold_dispatch(false, true);
        n2.replica.hold_dispatch(true, false);
        n3.replica.hold_dispatch(false, true);
        cluster.partition(2);
        wait_view(n1, 2, WAIT);
        wait_view(n3, 1, WAIT);
        wait_local(
            n2,
            WAIT,
            |q| matches!(q, LocalQuorum::Known { ring, .. } if ring != old_ring),
        );
        assert_eq!(n2.replica.view().map(|v| v.len()), Some(3), "CPG held");
        // Node 3 is in its own view, its daemon's quorum word not read yet: a write
        // passes the local check and is refused where it is delivered (pending).
        assert!(n3.replica.quorum().permits(), "still the old ring's word");
        let t = n3
            .replica
            .submit("sent pending")
            .expect("the local check passes");
        assert_eq!(t.wait(WAIT), Err(ReplicaError::NotQuorate));
        assert!(!quorate(n3.replica.agreed_quorum()));
        n1.replica.hold_dispatch(false, false);
        n2.replica.hold_dispatch(false, false);
        n3.replica.hold_dispatch(false, false);
        let minority = wait_agreed(n3, within + WAIT, not_quorate);
        let majority: Vec<AgreedQuorum> = [n1, n2]
            .iter()
            .map(|r| wait_agreed(r, within + WAIT, quorate))
            .collect();
        assert_eq!(majority[0], majority[1], "one ring");
        assert_ne!(ring_of(minority), ring_of(majority[0]));
        // The minority refuses at once now; the majority writes.
        wait_local(n3, WAIT, |q| !q.permits());
        assert!(
            matches!(n3.replica.submit("minority"), Err(ReplicaError::NotQuorate)),
            "a fast failure"
        );
        // A batch is refused whole, the same way: none of it is taken.
        let batch = n3.replica.submit_many(["minority 1", "minority 2"]);
        assert_eq!(batch.map(|t| t.len()), Err(ReplicaError::NotQuorate));
        for r in [n1, n2] {
            r.wait_ready(2);
        }
        let during: Vec<Vec<u64>> = [n1, n2].iter().map(|r| write(r, "majority", 3)).collect();
        confirmed[0].extend(&during[0]);
        confirmed[1].extend(&during[1]);
        let minority_epoch = n3.replica.summary().epoch;
        assert!(n1.replica.summary().epoch > minority_epoch);

        // The heal: every node quorate again, one history: the majority's.
        cluster.heal(2);
        for r in &reps {
            r.wait_ready(3);
            wait_agreed(r, within + WAIT, quorate);
        }
        std::thread::sleep(Duration::from_millis(500));
        let outcomes: Vec<(Outcomes, usize)> = writers.into_iter().map(Writer::finish).collect();
        for (i, (out, _)) in outcomes.iter().enumerate() {
            for (seq, o) in out {
                match o {
                    Ok(_) => confirmed[i].push(*seq),
                    Err(ReplicaError::NotQuorate) => {}
                    Err(e) => panic!("node{}: write {seq}: {e}", i + 1),
                }
            }
        }
        let summary = assert_converged("after the heal", &[n1, n2, n3], &confirmed);
        let history: BTreeSet<(Member, u64)> = n3
            .replica
            .read(|s| s.ops.iter().map(|(m, q, _)| (*m, *q)).collect());
        for (i, r) in [n1, n2].iter().enumerate() {
            for seq in &during[i] {
                assert!(history.contains(&(r.member(), *seq)), "{}: {seq}", r.name);
            }
        }
        let refused_ops = n3.replica.read(|s| {
            s.ops
                .iter()
                .filter(|o| o.2.starts_with(b"minority"))
                .count()
        });
        assert_eq!(
            refused_ops, 0,
            "the refused submit and batch applied nowhere"
        );
        // Nothing node 3 wrote after the cut is in the history: each of its writes was
        // refused (at once or at its agreed point), or applied before the cut.
        let refused_at_point = outcomes[2]
            .0
            .iter()
            .filter(|(_, o)| *o == Err(ReplicaError::NotQuorate))
            .count();
        n3.caught_up();
        let not_quorate_events = n3
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, Event::NotQuorate { .. }))
            .count();
        assert!(
            not_quorate_events > refused_at_point,
            "{not_quorate_events} events"
        );
        assert!(summary.epoch > epoch_before);
        eprintln!(
            "replica quorum 2|1: node 3 refused {} writes at once and {} at their agreed \
             point; epochs {epoch_before} before, {minority_epoch} on the minority, {} \
             after the heal",
            outcomes[2].1, refused_at_point, summary.epoch
        );
    });
}

#[test]
fn with_writes_not_gated_the_quorate_sides_history_still_wins_the_merge() {
    let _serial = serial();
    big_stack(|| {
        let cluster = start(
            Cluster::builder().nodes(3).quorum(Quorum::votequorum()),
            "3 nodes, votequorum",
        );
        let within = bound(&cluster);
        let group = unique_group("replica-ungated");
        let mut c = config();
        c.gate_writes = false;
        let reps: Vec<Rep> = (0..3)
            .map(|i| {
                Rep::start_with(
                    cluster.node(i),
                    &format!("node{}", i + 1),
                    &group,
                    c.clone(),
                )
            })
            .collect();
        let [n1, n2, n3] = [&reps[0], &reps[1], &reps[2]];
        for r in &reps {
            r.wait_ready(3);
            wait_agreed(r, WAIT, quorate);
        }
        let mut confirmed: Vec<Vec<u64>> = reps.iter().map(|r| write(r, "before", 1)).collect();
        assert_converged("before the cut", &[n1, n2, n3], &confirmed);
        let old = ring_of(n1.replica.agreed_quorum());

        cluster.partition(2);
        wait_agreed(n3, within + WAIT, not_quorate);
        n3.wait_ready(1);
        for r in [n1, n2] {
            wait_agreed(r, within + WAIT, quorate_after(old));
            r.wait_ready(2);
        }
        // Not gated: the minority writes, more than the majority.
        let theirs = write(n3, "minority", 10);
        let ours = write(n1, "majority", 2);
        confirmed[0].extend(&ours);
        confirmed[2].extend(&theirs);
        assert!(n3.replica.summary().version > n1.replica.summary().version);
        assert!(n3.replica.summary().epoch < n1.replica.summary().epoch);

        cluster.heal(2);
        for r in &reps {
            r.wait_ready(3);
        }
        assert_converged("after the heal", &[n1, n2, n3], &confirmed);
        let history: Vec<(Member, u64)> = n3
            .replica
            .read(|s| s.ops.iter().map(|(m, q, _)| (*m, *q)).collect());
        for seq in &ours {
            assert!(
                history.contains(&(n1.member(), *seq)),
                "majority write {seq} lost"
            );
        }
        assert_eq!(
            n3.discarded(),
            theirs.iter().copied().collect::<BTreeSet<u64>>(),
            "every minority write reported discarded"
        );
    });
}

#[test]
fn two_node_with_wait_for_all_gates_a_lone_start_and_lets_a_survivor_write() {
    let _serial = serial();
    big_stack(|| {
        let cluster = start(
            Cluster::builder()
                .nodes(2)
                .quorum(Quorum::votequorum().two_node(true).wait_for_all(true)),
            "2 nodes, two_node with wait_for_all",
        );
        let within = bound(&cluster);
        let group = unique_group("replica-two-node");
        {
            let reps: Vec<Rep> = (0..2)
                .map(|i| Rep::start(cluster.node(i), &format!("node{}", i + 1), &group))
                .collect();
            for r in &reps {
                r.wait_ready(2);
                wait_agreed(r, WAIT, quorate);
            }
            write(&reps[0], "both", 2);
            let old = ring_of(reps[0].replica.agreed_quorum());
            // Cut off, node 1 stays quorate (two_node: fencing decides) and writes.
            cluster.partition(1);
            reps[0].wait_ready(1);
            wait_agreed(&reps[0], within + WAIT, quorate_after(old));
            write(&reps[0], "survivor", 2);
        }
        // Both daemons stop; node 1 starts alone: wait_for_all keeps it not quorate, and
        // its replica refuses writes.
        cluster.stop_daemon(1);
        cluster.stop_daemon(0);
        cluster.heal(1);
        cluster.restart_daemon(0);
        cluster
            .wait_members(0, &[1], WAIT)
            .expect("node 1 forms its ring alone");
        let lone = Rep::start(cluster.node(0), "node1 alone", &group);
        lone.wait_ready(1);
        wait_agreed(&lone, WAIT, not_quorate);
        wait_local(&lone, WAIT, |q| {
            matches!(q, LocalQuorum::Known { quorate: false, .. })
        });
        assert_eq!(refused(&lone, "alone"), ReplicaError::NotQuorate);
        // Once it has seen the other, it writes.
        cluster.restart_daemon(1);
        let other = Rep::start(cluster.node(1), "node2", &group);
        for r in [&lone, &other] {
            r.wait_ready(2);
            wait_agreed(r, within + WAIT, quorate);
        }
        write(&lone, "together", 1);
        write(&other, "together", 1);
    });
}

#[test]
fn a_node_with_two_votes_cut_off_leaves_no_side_quorate() {
    let _serial = serial();
    big_stack(|| {
        let cluster = start(
            Cluster::builder()
                .nodes(3)
                .quorum(Quorum::votequorum().node_votes(3, 2)),
            "3 nodes, node 3 with 2 votes",
        );
        let within = bound(&cluster);
        let group = unique_group("replica-votes");
        let reps: Vec<Rep> = (0..3)
            .map(|i| Rep::start(cluster.node(i), &format!("node{}", i + 1), &group))
            .collect();
        for r in &reps {
            r.wait_ready(3);
            wait_agreed(r, WAIT, quorate);
        }
        write(&reps[2], "all", 1);
        // 2 votes on each side of 4: neither is quorate. Counting nodes, the side of
        // nodes 1 and 2 would hold a majority of 3.
        cluster.partition(2);
        reps[0].wait_ready(2);
        reps[2].wait_ready(1);
        let view = reps[0].replica.view().expect("a view");
        assert!(cpg::replica::has_majority(&view, 3), "a majority of nodes");
        for r in &reps {
            wait_agreed(r, within + WAIT, not_quorate);
            wait_local(r, WAIT, |q| !q.permits());
            assert_eq!(refused(r, "cut"), ReplicaError::NotQuorate, "{}", r.name);
        }
        cluster.heal(2);
        for r in &reps {
            r.wait_ready(3);
            wait_agreed(r, within + WAIT, quorate);
        }
        write(&reps[0], "healed", 1);
    });
}
