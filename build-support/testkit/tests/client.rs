//! `Client`: a program run as a separate process in a node's namespace, talked to by
//! lines, killed on request or when dropped.

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use cpg_testkit::{Client, Mode};

const WAIT: Duration = Duration::from_secs(10);

/// The process runs in the node's network namespace, under the pid the harness reports,
/// answers lines, and its marker is found after other text on the same line. In the
/// namespaces mode that namespace is the node's own; in the container mode it is the
/// test process's.
#[test]
fn client_runs_in_the_node_namespace_and_talks_by_lines() {
    let node = cpg_testkit::shared();
    let script = "printf 'noise '; echo \"HELLO $$ $(readlink /proc/self/ns/net)\"; \
                  read -r line; echo \"GOT $line\"";
    let mut client = Client::spawn(node, "sh", ["-c", script], &[]).unwrap();
    let hello = client.expect_line("HELLO ", WAIT).unwrap();
    let node_ns = node.enter(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    assert_eq!(
        hello,
        format!("HELLO {} {}", client.pid(), node_ns.display()),
        "pid or namespace of the client"
    );
    let own_ns = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    match cpg_testkit::mode() {
        Mode::Namespaces => assert_ne!(node_ns, own_ns, "the node has a namespace of its own"),
        Mode::Container => assert_eq!(node_ns, own_ns, "the node runs in the process's namespace"),
    }
    client.send_line("ping").unwrap();
    assert_eq!(client.expect_line("GOT ", WAIT).unwrap(), "GOT ping");
    let status = client.wait(WAIT).expect("exits after its script");
    assert!(status.success(), "{status}");
}

/// `kill` ends the process with SIGKILL; a missing line is an error naming what the
/// client printed; EOF on stdin is what a client sees when the test goes away.
#[test]
fn client_is_killed_and_missing_lines_time_out() {
    let node = cpg_testkit::shared();
    let mut client = Client::spawn(node, "sh", ["-c", "echo started; sleep 60"], &[]).unwrap();
    client.expect_line("started", WAIT).unwrap();
    let err = client
        .expect_line("never", Duration::from_millis(300))
        .unwrap_err();
    assert!(err.message().contains("started"), "{err}");
    let status = client.kill().expect("reaped");
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    let mut reader = Client::spawn(node, "sh", ["-c", "cat >/dev/null; echo eof"], &[]).unwrap();
    reader.close_stdin();
    reader.expect_line("eof", WAIT).unwrap();
    assert!(reader.wait(WAIT).is_some_and(|s| s.success()));
}
