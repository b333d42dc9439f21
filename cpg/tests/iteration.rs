//! Group iteration against the shared private daemon (`cpg_testkit::shared()`).
//!
//! Corosync lets a connection join one group at a time and a process join a group
//! only once (it keys members by pid). To get groups with several members, other
//! members are child processes (see `support::child`) whose role names the groups to
//! join (hex-encoded, separated by commas; one connection each). A child reports its
//! pid once joined and leaves when its stdin closes.
//!
//! The shared daemon serves every test of this binary, so each test uses group names
//! of its own and looks only at those. The tests take `support::serial()`, because the
//! memory test measures the whole process and the daemon.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpg::{DispatchMode, GroupMember, GroupName, Handle, Member};
use support::child::{self, ChildProcess};
use support::WAIT;

/// The child's role: join the groups of `spec` and stay until stdin closes.
fn join_until_stdin_closes(spec: &str) {
    let groups: Vec<GroupName> = spec
        .split(',')
        .map(|g| GroupName::new(child::unhex(g)).expect("group name"))
        .collect();
    let handles: Vec<Handle> = groups
        .iter()
        .map(|g| {
            let h = Handle::builder().build().expect("child: connect");
            h.join(g).expect("child: join");
            h
        })
        .collect();
    child::report_ready();
    // Nothing to dispatch here (no callbacks are set): the handles only need to
    // stay joined until the parent is done.
    child::until_stdin_closes(|| std::thread::sleep(Duration::from_millis(50)));
    drop(handles);
}

/// Starts a child for `test` (the calling test's name) that joins `groups`, one
/// connection each, and waits until it has.
fn member_process(node: &cpg_testkit::Node, test: &str, groups: &[&GroupName]) -> ChildProcess {
    let spec: Vec<String> = groups.iter().map(|g| child::hex(g.as_bytes())).collect();
    ChildProcess::start(node, test, &spec.join(","), "a member process")
}

fn joined(group: &GroupName) -> Handle {
    let h = Handle::builder().build().expect("connect");
    h.join(group).expect("join");
    h
}

/// Waits until the daemon lists `counts[i]` members in `groups[i]`, for all `i`.
fn wait_for_counts(node: &cpg_testkit::Node, handle: &Handle, expect: &[(&GroupName, usize)]) {
    let settled =
        cpg_testkit::wait_until(Duration::from_secs(15), Duration::from_millis(20), || {
            expect
                .iter()
                .all(|(g, n)| handle.members(g).map(|m| m.len()) == Ok(*n))
        });
    assert!(
        settled,
        "memberships did not settle: {:?}\n{}",
        expect
            .iter()
            .map(|(g, _)| (g.to_string(), handle.members(g)))
            .collect::<Vec<_>>(),
        node.log_tail(20)
    );
}

/// Three groups, joined in different combinations by three processes (this one with
/// one connection per group, a child in two of them, another child in one): each
/// iterator reports exactly the expected names, (node id, pid) pairs and counts.
#[test]
fn iterators_report_exactly_the_joined_groups_and_members() {
    child::test_on_shared(join_until_stdin_closes, |node| {
        let test = "iterators_report_exactly_the_joined_groups_and_members";
        let prefix = format!("iter-{}-", std::process::id());
        let a = GroupName::new(format!("{prefix}a")).unwrap();
        let b = GroupName::new(format!("{prefix}b")).unwrap();
        // The C convention (a counted NUL) must come back byte-exact.
        let c = GroupName::c_style(format!("{prefix}c")).unwrap();
        let c_without_nul = GroupName::new(format!("{prefix}c")).unwrap();

        let child_ab = member_process(node, test, &[&a, &b]);
        let child_a = member_process(node, test, &[&a]);
        let ha = joined(&a);
        let hb = joined(&b);
        let hc = joined(&c);
        wait_for_counts(node, &ha, &[(&a, 3), (&b, 2), (&c, 1)]);

        let n = ha.local_node_id().expect("local node id");
        let me = std::process::id();
        let at = |pid| Member { nodeid: n, pid };
        let mut expect_a = vec![at(me), at(child_ab.pid()), at(child_a.pid())];
        let mut expect_b = vec![at(me), at(child_ab.pid())];
        let expect_c = vec![at(me)];
        expect_a.sort();
        expect_b.sort();
        assert_eq!(
            BTreeSet::from([me, child_ab.pid(), child_a.pid()]).len(),
            3,
            "three distinct processes"
        );

        let ours = |g: &GroupName| g.as_bytes().starts_with(prefix.as_bytes());

        // NAME_ONLY: each of our groups exactly once, from any connection.
        for h in [&ha, &hb, &hc] {
            let mut names: Vec<GroupName> = h
                .groups()
                .expect("groups")
                .map(|r| r.expect("groups: next"))
                .filter(ours)
                .collect();
            names.sort();
            let mut expected = vec![a, b, c];
            expected.sort();
            assert_eq!(names, expected, "group names");
            assert!(!names.contains(&c_without_nul), "\"c\" without the NUL");
        }

        // ONE_GROUP: exactly the members, the same as cpg_membership_get.
        for (group, expected) in [(&a, &expect_a), (&b, &expect_b), (&c, &expect_c)] {
            let mut got: Vec<Member> = hb
                .iter_members(group)
                .expect("iter_members")
                .collect::<Result<_, _>>()
                .expect("iter_members: next");
            got.sort();
            assert_eq!(&got, expected, "members of {group}");
            let mut via_get = hb.members(group).expect("members");
            via_get.sort();
            assert_eq!(got, via_get, "iteration and membership_get of {group}");
        }
        for empty in [
            c_without_nul,
            GroupName::new(format!("{prefix}nobody")).unwrap(),
        ] {
            let mut it = hc.iter_members(&empty).expect("iter_members");
            assert!(it.next().is_none(), "{empty} has no members");
            assert!(it.next().is_none(), "the iterator stays ended");
            it.close().expect("finalize after the end");
        }

        // ALL: exactly the six (group, node, pid) triples of our groups, each group's
        // entries together.
        let all: Vec<GroupMember> = hc
            .iter_all()
            .expect("iter_all")
            .collect::<Result<Vec<_>, _>>()
            .expect("iter_all: next")
            .into_iter()
            .filter(|m| ours(&m.group))
            .collect();
        let mut got = all.clone();
        got.sort();
        let mut expected: Vec<GroupMember> = [(&a, &expect_a), (&b, &expect_b), (&c, &expect_c)]
            .into_iter()
            .flat_map(|(g, ms)| {
                ms.iter().map(|m| GroupMember {
                    group: *g,
                    nodeid: m.nodeid,
                    pid: m.pid,
                })
            })
            .collect();
        expected.sort();
        assert_eq!(got.len(), 6);
        assert_eq!(got, expected, "every (group, node, pid)");
        let mut runs: Vec<GroupName> = all.iter().map(|m| m.group).collect();
        runs.dedup();
        assert_eq!(runs.len(), 3, "entries grouped by group: {runs:?}");

        // After a leave, a new iteration no longer shows the member.
        hb.leave(&b).expect("leave");
        wait_for_counts(node, &ha, &[(&b, 1)]);
        let got: Vec<Member> = ha
            .iter_members(&b)
            .expect("iter_members")
            .collect::<Result<_, _>>()
            .expect("next");
        assert_eq!(
            got,
            vec![at(child_ab.pid())],
            "members of {b} after the leave"
        );

        drop((child_ab, child_a));
    });
}

fn status_kib(path: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("fd dir").count()
}

/// 10,000 iterators of the three kinds, each dropped after its first item, keep this
/// process's memory and descriptors and the daemon's memory flat (each is finalized,
/// on both sides); the daemon still joins, delivers and reports membership afterwards.
#[test]
fn ten_thousand_iterators_dropped_early_keep_memory_flat() {
    child::test_on_shared(join_until_stdin_closes, |node| {
        let prefix = format!("iter-flat-{}-", std::process::id());
        let group = GroupName::new(format!("{prefix}g")).unwrap();
        let handle = joined(&group);
        wait_for_counts(node, &handle, &[(&group, 1)]);
        let daemon_status = format!(
            "/proc/{}/status",
            node.daemon_pid().expect("the shared daemon runs")
        );

        let first_of = |i: usize| match i % 3 {
            0 => {
                let mut it = handle.groups().expect("groups");
                it.next().expect("a group").map(|_| ())
            }
            1 => {
                let mut it = handle.iter_members(&group).expect("iter_members");
                it.next().expect("a member").map(|_| ())
            }
            _ => {
                let mut it = handle.iter_all().expect("iter_all");
                it.next().expect("an entry").map(|_| ())
            }
        };
        // Warm up: allocator pools, libcpg's handle tables, and every page of the
        // connection's shared-memory rings (touching them raises VmRSS until each has
        // been used once; that is not a leak).
        for i in 0..10_000 {
            first_of(i).expect("first item");
        }
        let rss_before = status_kib("/proc/self/status", "VmRSS:");
        let anon_before = status_kib("/proc/self/status", "RssAnon:");
        let daemon_before = status_kib(&daemon_status, "VmRSS:");
        let fds_before = open_fds();

        let start = Instant::now();
        for i in 0..10_000 {
            first_of(i).expect("first item");
        }
        let elapsed = start.elapsed();

        let rss_after = status_kib("/proc/self/status", "VmRSS:");
        let anon_after = status_kib("/proc/self/status", "RssAnon:");
        let daemon_after = status_kib(&daemon_status, "VmRSS:");
        let fds_after = open_fds();
        eprintln!(
            "iteration: 10,000 start/next/drop in {elapsed:?} ({:.1} us each); \
             VmRSS {rss_before} -> {rss_after} KiB (RssAnon {anon_before} -> \
             {anon_after}), daemon VmRSS {daemon_before} -> {daemon_after} KiB, \
             fds {fds_before} -> {fds_after}",
            elapsed.as_secs_f64() * 1e6 / 10_000.0
        );
        assert_eq!(fds_after, fds_before, "open descriptors");
        // An iteration that is not finalized keeps its record here and a copy of the
        // listed entries in the daemon: 10,000 of them show as megabytes.
        // Under `build-support/run memcheck` valgrind's own allocations move VmRSS;
        // there its leak check (nothing definitely lost) stands in for this bound.
        let memcheck = std::env::var_os("CPG_MEMCHECK").is_some();
        assert!(
            memcheck || (rss_after <= rss_before + 256 && anon_after <= anon_before + 128),
            "VmRSS grew from {rss_before} to {rss_after} KiB \
             (RssAnon {anon_before} -> {anon_after})"
        );
        assert!(
            daemon_after <= daemon_before + 256,
            "the daemon's VmRSS grew from {daemon_before} to {daemon_after} KiB"
        );

        // The daemon still answers: join, send, deliver, membership.
        let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = got.clone();
        let second = GroupName::new(format!("{prefix}round-trip")).unwrap();
        let probe = Handle::builder()
            .on_deliver(move |_cpg, msg| sink.lock().unwrap().push(msg.data.to_vec()))
            .build()
            .expect("connect after the iterations");
        probe.join(&second).expect("join after the iterations");
        probe.send(b"still answering").expect("send");
        let deadline = Instant::now() + WAIT;
        while got.lock().unwrap().is_empty() && Instant::now() < deadline {
            probe
                .dispatch_timeout(Duration::from_millis(100))
                .expect("dispatch");
        }
        assert_eq!(
            *got.lock().unwrap(),
            vec![b"still answering".to_vec()],
            "round trip through the daemon"
        );
        let members: Vec<Member> = probe
            .iter_members(&second)
            .expect("iter_members")
            .collect::<Result<_, _>>()
            .expect("next");
        assert_eq!(
            members,
            vec![Member {
                nodeid: probe.local_node_id().expect("node id"),
                pid: std::process::id()
            }]
        );
        probe.dispatch(DispatchMode::All).expect("dispatch");
    });
}

/// On a two-node cluster, iteration on node 1 lists a member that joined on node 2
/// with node 2's id and its pid, next to the local member, in all three iterators.
#[test]
fn iterators_list_members_of_other_nodes() {
    child::test(join_until_stdin_closes, || {
        let test = "iterators_list_members_of_other_nodes";
        let cluster = cpg_testkit::Cluster::start(2);
        let (one, two) = (cluster.node(0), cluster.node(1));
        let group = GroupName::new(format!("iter-nodes-{}", std::process::id())).unwrap();
        let remote = member_process(two, test, &[&group]);
        one.enter(|| {
            let handle = joined(&group);
            wait_for_counts(one, &handle, &[(&group, 2)]);
            let mut expected = vec![
                Member {
                    nodeid: one.nodeid(),
                    pid: std::process::id(),
                },
                Member {
                    nodeid: two.nodeid(),
                    pid: remote.pid(),
                },
            ];
            expected.sort();
            assert_ne!(one.nodeid(), two.nodeid());

            let mut members: Vec<Member> = handle
                .iter_members(&group)
                .expect("iter_members")
                .collect::<Result<_, _>>()
                .expect("next");
            members.sort();
            assert_eq!(members, expected, "members of {group} seen from node 1");

            let mut all: Vec<Member> = handle
                .iter_all()
                .expect("iter_all")
                .collect::<Result<Vec<_>, _>>()
                .expect("next")
                .into_iter()
                .filter(|m| m.group == group)
                .map(|m| m.member())
                .collect();
            all.sort();
            assert_eq!(all, expected, "ALL entries of {group} seen from node 1");

            let names: Vec<GroupName> = handle
                .groups()
                .expect("groups")
                .collect::<Result<Vec<_>, _>>()
                .expect("next")
                .into_iter()
                .filter(|g| *g == group)
                .collect();
            assert_eq!(names, vec![group], "{group} listed once");
        });
        drop(remote);
    });
}
