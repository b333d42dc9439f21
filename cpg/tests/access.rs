//! Who may connect: a process of a user that corosync's configuration does not allow
//! gets a typed error that says what to change, and connects once `uidgid` allows it.
//! The unprivileged side is this test binary run again in the node's namespace, as
//! `nobody` (uid and gid 65534, no supplementary groups: `Node::command_as`).

use std::process::Stdio;

use cpg::{CsError, DispatchMode, Error, GroupName, Handle, Operation};
use cpg_testkit::{Cluster, Node};

/// Set in the child, which runs as this uid/gid.
const UNPRIVILEGED: &str = "CPG_TEST_UNPRIVILEGED";
const NOBODY: u32 = 65534;

/// In the child (started as `nobody`): connect, join, send and receive one message;
/// print the outcome on one line.
fn as_nobody() {
    // SAFETY: getuid and getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!((uid, gid), (NOBODY, NOBODY), "the child runs as nobody");
    let outcome = (|| -> Result<(), Error> {
        let received = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = received.clone();
        let handle = Handle::builder()
            .on_deliver(move |_, m| {
                if m.data == b"as nobody" {
                    seen.store(true, std::sync::atomic::Ordering::Relaxed)
                }
            })
            .build()?;
        handle.join(&GroupName::new("access-test")?)?;
        handle.send(b"as nobody")?;
        while !received.load(std::sync::atomic::Ordering::Relaxed) {
            handle.dispatch(DispatchMode::One)?;
        }
        Ok(())
    })();
    match outcome {
        // On a line of its own: libtest's "test ... " has no newline yet.
        Ok(()) => println!("\nOUTCOME ok"),
        Err(e) => println!("\nOUTCOME {e:?} | {e}"),
    }
}

fn run_as_nobody(node: &Node) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = node
        .command_as(exe, NOBODY, NOBODY)
        .args([
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "an_unlisted_user_is_refused_with_a_hint_and_a_listed_one_sends_and_receives",
        ])
        .env(UNPRIVILEGED, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the unprivileged child");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("OUTCOME "))
        .unwrap_or_else(|| {
            panic!(
                "no outcome from the child:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

#[test]
fn an_unlisted_user_is_refused_with_a_hint_and_a_listed_one_sends_and_receives() {
    if std::env::var_os(UNPRIVILEGED).is_some() {
        as_nobody();
        return;
    }
    let closed = Cluster::builder().nodes(1).start().expect("cluster");
    let refused = run_as_nobody(closed.node(0));
    let expected = Error::Cs {
        op: Operation::Initialize,
        code: CsError::Access,
    };
    assert!(refused.starts_with(&format!("{expected:?}")), "{refused}");
    assert!(
        refused.contains("uid 65534") && refused.contains("uidgid { uid: 65534 }"),
        "the text says what to change: {refused}"
    );
    drop(closed);

    let open = Cluster::builder()
        .nodes(1)
        .allow_uid(NOBODY)
        .start()
        .expect("cluster allowing nobody");
    assert_eq!(run_as_nobody(open.node(0)), "ok");
}
