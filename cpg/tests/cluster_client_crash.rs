//! A client process crashing, and one leaving cleanly, on a real 3-node cluster.
//!
//! Two clients run as separate processes on node 2 (this test binary, re-executed with
//! a role). Client "crash" is SIGKILLed: members on nodes 1 and 3, and the other client
//! on node 2, must see it leave with PROCDOWN. Client "leave" then calls leave: the
//! members on nodes 1 and 3 must see it leave with LEAVE.

mod support;

use std::io::BufRead as _;
use std::os::unix::process::ExitStatusExt as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cpg::retry::retry;
use cpg::{GroupName, Handle, Member, Reason};
use cpg_testkit::{client_role, Client, Cluster};
use support::cluster::{left_in, with_reason};
use support::peer::{backoff, Peer};
use support::{big_stack, WAIT};

const GROUP: &str = "cluster-client-crash";
/// This test's name, for re-running it as a client.
const TEST: &str = "client_crash_shows_procdown_and_leave_shows_leave";
/// A client that hears nothing from the test for this long gives up.
const CLIENT_LIFETIME: Duration = Duration::from_secs(120);

#[test]
fn client_crash_shows_procdown_and_leave_shows_leave() {
    if let Some(role) = client_role() {
        return client(&role);
    }
    let cluster = Cluster::start(3);
    let group = GroupName::new(GROUP).unwrap();
    let observers = [
        Peer::threaded(cluster.node(0), "node1", &group),
        Peer::threaded(cluster.node(2), "node3", &group),
    ];
    let node2 = cluster.node(1);
    let mut crash = Client::spawn_test(node2, TEST, "crash").unwrap();
    let mut leave = Client::spawn_test(node2, TEST, "leave").unwrap();
    let crash_m = ready(&mut crash, node2.nodeid());
    let leave_m = ready(&mut leave, node2.nodeid());
    let (o1, o3) = (observers[0].member(), observers[1].member());
    for o in &observers {
        o.log().wait_members(&[o1, o3, crash_m, leave_m], WAIT);
    }

    // SIGKILL: the process vanishes without leaving.
    let marks: Vec<usize> = observers.iter().map(|o| o.log().len()).collect();
    let killed_at = Instant::now();
    let status = crash.kill().expect("reap the crashed client");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the client died of SIGKILL"
    );
    for (o, &mark) in observers.iter().zip(&marks) {
        o.log().wait_members(&[o1, o3, leave_m], WAIT);
        assert_eq!(
            left_in(&o.log().since(mark)),
            with_reason(&[crash_m], Reason::ProcDown),
            "{}: who left when the client was killed, and why",
            o.name()
        );
    }
    let procdown = killed_at.elapsed();
    // The other client on the same node saw it too.
    let line = leave
        .expect_line(
            &format!("CLIENT left {} {} ", crash_m.nodeid, crash_m.pid),
            WAIT,
        )
        .unwrap();
    assert!(
        line.ends_with(&format!(" {}", Reason::ProcDown.to_raw())),
        "same-node client saw: {line}"
    );

    // A clean leave.
    let marks: Vec<usize> = observers.iter().map(|o| o.log().len()).collect();
    leave.send_line("leave").unwrap();
    leave.expect_line("CLIENT left-group", WAIT).unwrap();
    for (o, &mark) in observers.iter().zip(&marks) {
        o.log().wait_members(&[o1, o3], WAIT);
        assert_eq!(
            left_in(&o.log().since(mark)),
            with_reason(&[leave_m], Reason::Leave),
            "{}: who left when the client called leave, and why",
            o.name()
        );
    }
    leave.close_stdin();
    let status = leave.wait(WAIT).expect("the leaving client exits");
    assert!(status.success(), "the leaving client failed: {status}");
    eprintln!(
        "client crash: PROCDOWN seen on nodes 1 and 3 within {procdown:.2?} of SIGKILL, \
         and by the other client on node 2; the clean leave showed LEAVE"
    );
}

/// Reads the client's "ready" line: its node id and pid, which must be the process
/// the test started.
fn ready(client: &mut Client, nodeid: u32) -> Member {
    let line = client.expect_line("CLIENT ready ", WAIT).unwrap();
    let fields: Vec<u32> = line["CLIENT ready ".len()..]
        .split(' ')
        .map(|f| f.parse().unwrap())
        .collect();
    let member = Member {
        nodeid: fields[0],
        pid: fields[1],
    };
    assert_eq!(
        member,
        Member {
            nodeid,
            pid: client.pid()
        },
        "the client reports another node or process than the one started"
    );
    member
}

/// The client side: join, report membership departures on stdout, obey "leave" from
/// stdin, exit at EOF. Dispatches on a thread with a large stack.
fn client(role: &str) {
    let role = role.to_string();
    big_stack(move || client_main(&role));
}

fn client_main(role: &str) {
    let group = GroupName::new(GROUP).unwrap();
    let handle = Handle::builder()
        .on_confchg(|_cpg, change| {
            for a in change.left {
                println!(
                    "CLIENT left {} {} {}",
                    a.nodeid(),
                    a.pid(),
                    a.reason().to_raw()
                );
            }
        })
        .build()
        .unwrap_or_else(|e| panic!("client {role}: connect: {e}"));
    retry(&backoff(), || handle.join(&group))
        .unwrap_or_else(|e| panic!("client {role}: join: {e}"));
    let nodeid = handle.local_node_id().unwrap();
    println!("CLIENT ready {nodeid} {}", std::process::id());

    let (tx, commands) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + CLIENT_LIFETIME;
    while Instant::now() < deadline {
        handle
            .dispatch_timeout(Duration::from_millis(20))
            .unwrap_or_else(|e| panic!("client {role}: dispatch: {e}"));
        match commands.try_recv() {
            Ok(cmd) if cmd == "leave" => {
                handle
                    .leave(&group)
                    .unwrap_or_else(|e| panic!("client {role}: leave: {e}"));
                println!("CLIENT left-group");
            }
            Ok(cmd) => panic!("client {role}: unknown command {cmd:?}"),
            Err(mpsc::TryRecvError::Empty) => {}
            // The test closed stdin (or died): done.
            Err(mpsc::TryRecvError::Disconnected) => return,
        }
    }
    panic!("client {role}: no word from the test within {CLIENT_LIFETIME:?}");
}
