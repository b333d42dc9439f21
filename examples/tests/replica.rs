//! The `kv` example as a user runs it, on a private 3-node cluster from `cpg-testkit`:
//! a value written on one node is read on the others; a late copy catches up; a
//! partitioned node refuses writes (majority gate without a quorum provider; corosync's
//! quorum on a votequorum cluster, the default) and catches up after the heal; a
//! killed copy is replaced by a new one that catches up; a daemon restart is survived;
//! and at the end every copy reports the same digest. A stopped copy (a ghost still in
//! the group) delays a round by its deadline only, and catches up once continued.
//!
//! Needs root and corosync, like every test of this workspace; without them the
//! harness panics, so these tests fail rather than skip. Every wait is bounded; each
//! program is SIGKILLed and reaped when its [`Kv`] drops.

mod support;

use std::time::{Duration, Instant};

use cpg_testkit::{Cluster, Node};
use support::{heavy, Program};

const KV: &str = env!("CARGO_BIN_EXE_kv");
const WAIT: Duration = Duration::from_secs(60);

/// `kv` on a node, fed commands on stdin, its stdout collected line by line.
struct Kv {
    program: Program,
}

impl Kv {
    fn start(node: &Node, args: &[&str]) -> Kv {
        Kv {
            program: Program::start_with_open_stdin(node, KV, args),
        }
    }

    fn len(&self) -> usize {
        self.program.stdout_len()
    }

    fn send(&mut self, command: &str) -> usize {
        let mark = self.len();
        self.program.write_line(command);
        mark
    }

    /// Waits until a line from index `from` on starts with `prefix`; returns it.
    fn expect(&self, from: usize, prefix: &str) -> String {
        self.program
            .wait_line(
                from,
                WAIT,
                &format!("a line starting with {prefix:?}"),
                |l| l.starts_with(prefix),
            )
            .1
    }

    /// Sends a command and returns the first answer line starting with one of
    /// `answers`.
    fn ask(&mut self, command: &str, answers: &[&str]) -> String {
        let mark = self.send(command);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self
                .program
                .stdout()
                .into_iter()
                .skip(mark)
                .find(|l| answers.iter().any(|a| l.starts_with(a)))
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no answer to {command:?}: {}",
                self.program.report()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asks `get key` until the answer is `want` (a read sees what was acknowledged
    /// in its view before it; a copy that is catching up or partitioned lags).
    fn wait_value(&mut self, key: &str, want: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.ask(&format!("get {key}"), &["VALUE", "NONE", "ERR"]);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "get {key} answers {got:?}, want {want:?}: {}",
                self.program.report()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `digest` says the copy is synced in a view of `n`; returns the
    /// version and digest part.
    fn wait_synced(&mut self, n: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let d = self.ask("digest", &["DIGEST"]);
            if d.contains(&format!("members={n} phase=Ready ")) {
                return d.split(' ').take(3).collect::<Vec<_>>().join(" ");
            }
            assert!(Instant::now() < deadline, "{d}: {}", self.program.report());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn kv_survives_kills_partitions_and_restarts() {
    let _heavy = heavy();
    let cluster = Cluster::start(3);
    let args = ["example-kv", "--majority-of", "3", "--verify-secs", "2"];
    let mut kv: Vec<Kv> = (0..2).map(|i| Kv::start(cluster.node(i), &args)).collect();
    for k in &mut kv {
        k.wait_synced(2);
    }
    // A write acknowledged on one copy is seen by the next read on another (the read
    // passes a barrier), and answers the value it replaced, the same everywhere.
    for (i, value) in ["blue", "teal", "navy"].into_iter().enumerate() {
        let was = kv[i % 2].ask(&format!("set color {value}"), &["OK", "ERR"]);
        assert!(was.starts_with("OK"), "{was}");
        let got = kv[(i + 1) % 2].ask("get color", &["VALUE", "NONE", "ERR"]);
        assert_eq!(got, format!("VALUE color {value}"), "right after {was:?}");
    }
    assert!(kv[0]
        .ask("set color blue", &["OK", "ERR"])
        .ends_with("was navy"));
    assert!(kv[1]
        .ask("set size 42", &["OK", "ERR"])
        .ends_with("was unset"));

    // A late copy catches up.
    kv.push(Kv::start(cluster.node(2), &args));
    kv[2].wait_synced(3);
    kv[2].wait_value("color", "VALUE color blue");
    kv[2].wait_value("size", "VALUE size 42");
    // Its view shows each member's node with its name from the node list.
    let (_, view) = kv[2].program.wait_line(0, WAIT, "a view of 3", |l| {
        l.starts_with("VIEW ") && l.ends_with(" members=3")
    });
    for name in ["[1 (node1):", ", 2 (node2):", ", 3 (node3):"] {
        assert!(view.contains(name), "{name} in {view}");
    }
    assert!(view.contains(" (me)]"), "{view}");

    // Partition node 3: it refuses writes; the majority goes on.
    cluster.partition(2);
    kv[2].wait_synced(1);
    kv[0].wait_synced(2);
    assert_eq!(kv[2].ask("set color red", &["OK", "ERR"]), "ERR minority");
    assert!(kv[0]
        .ask("set color green", &["OK", "ERR"])
        .starts_with("OK"));
    assert!(kv[1].ask("del size", &["OK", "ERR"]).starts_with("OK"));
    kv[2].wait_value("color", "VALUE color blue");
    cluster.heal(2);
    kv[2].wait_value("color", "VALUE color green");
    kv[2].wait_value("size", "NONE size");

    // Kill node 1's copy; a new one takes its place and catches up.
    drop(kv.remove(0));
    kv[0].wait_synced(2);
    assert!(kv[0]
        .ask("set shape round", &["OK", "ERR"])
        .starts_with("OK"));
    kv.insert(0, Kv::start(cluster.node(0), &args));
    kv[0].wait_value("shape", "VALUE shape round");
    kv[0].wait_value("color", "VALUE color green");

    // Restart node 2's daemon; its copy reconnects and converges.
    cluster.kill_daemon(1);
    cluster.restart_daemon(1);
    assert!(kv[2]
        .ask("set after restart", &["OK", "ERR"])
        .starts_with("OK"));
    kv[1].wait_value("after", "VALUE after restart");

    // Every copy in sync with the same digest; the periodic check agrees.
    let digests: Vec<String> = kv.iter_mut().map(|k| k.wait_synced(3)).collect();
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "digests differ: {digests:?}"
    );
    for k in &kv {
        let mark = k.len();
        k.expect(mark, "VERIFIED");
    }
    for k in &kv {
        let all = k.program.stdout().join("\n");
        assert!(!all.contains("DIVERGED"), "{}", k.program.report());
    }
}

/// With `RUST_LOG`, `kv` logs what the layers do to stderr, each line in the span of
/// its group: the group layer's view and the replica layer's end of round; its
/// answers on stdout stay as they were.
#[test]
fn kv_logs_what_the_layers_do_to_stderr_with_rust_log() {
    let store = format!("kv-log-{}", std::process::id());
    let mut kv = Kv {
        program: Program::start_with_open_stdin(
            cpg_testkit::shared(),
            "env",
            &["RUST_LOG=cpg=info", KV, &store],
        ),
    };
    kv.wait_synced(1);
    let deadline = Instant::now() + WAIT;
    // The span's fields: the group, the pid, and the node id once known.
    let pid = kv.program.pid();
    let wanted = [
        format!("cpg_group{{group={store} pid={pid} node=1}}"),
        format!("cpg_replica{{group={store} pid={pid} node=1}}"),
    ];
    loop {
        let err = kv.program.stderr();
        let view = err.iter().any(|l| {
            l.contains(" INFO ") && l.contains(&wanted[0]) && l.contains(": installed view ")
        });
        let synced = err
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains(&wanted[1]) && l.contains(": in sync"));
        if view && synced {
            break;
        }
        assert!(Instant::now() < deadline, "{}", kv.program.report());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        kv.program.stdout().iter().all(|l| !l.contains("cpg_")),
        "{}",
        kv.program.report()
    );
}

/// With a quorum provider, `kv` gates on corosync's quorum by default (no
/// `--majority-of`): the node cut off loses quorum (it prints `QUORUM not quorate`) and
/// refuses writes, the two others write, and after the heal (`QUORUM quorate` again)
/// the cut-off copy holds their history. With `--ungated`, the cut-off copy writes
/// more than the others, and still takes their history at the heal.
#[test]
fn kv_gates_on_corosyncs_quorum() {
    let _heavy = heavy();
    let cluster = Cluster::builder()
        .nodes(3)
        .quorum(cpg_testkit::Quorum::votequorum())
        .start()
        .expect("a 3-node votequorum cluster");
    for (group, ungated) in [("example-kv-quorum", false), ("example-kv-ungated", true)] {
        let mut args = vec![group, "--verify-secs", "0"];
        if ungated {
            args.push("--ungated");
        }
        let mut kv: Vec<Kv> = (0..3).map(|i| Kv::start(cluster.node(i), &args)).collect();
        for k in &mut kv {
            k.wait_synced(3);
        }
        let agreed = |k: &mut Kv, n: usize, quorum: &str| {
            let deadline = Instant::now() + WAIT;
            loop {
                let d = k.ask("digest", &["DIGEST"]);
                if d.contains(&format!("members={n} phase=Ready "))
                    && d.contains(&format!("quorum={quorum} in ring"))
                {
                    return;
                }
                assert!(Instant::now() < deadline, "{d}: {}", k.program.report());
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        for k in &mut kv {
            agreed(k, 3, "quorate");
        }
        assert!(kv[0]
            .ask("set color blue", &["OK", "ERR"])
            .starts_with("OK"));
        kv[2].wait_value("color", "VALUE color blue");

        cluster.partition(2);
        agreed(&mut kv[2], 1, "not quorate");
        agreed(&mut kv[0], 2, "quorate");
        kv[2].expect(0, "QUORUM not quorate");
        let minority = kv[2].ask("set color red", &["OK", "ERR"]);
        if ungated {
            assert!(minority.starts_with("OK"), "{minority}");
            assert!(kv[2].ask("set extra 1", &["OK", "ERR"]).starts_with("OK"));
            assert!(kv[2].ask("set extra 2", &["OK", "ERR"]).starts_with("OK"));
        } else {
            assert!(minority.starts_with("ERR not quorate"), "{minority}");
        }
        assert!(kv[0]
            .ask("set color green", &["OK", "ERR"])
            .starts_with("OK"));
        let mark = kv[2].len();
        cluster.heal(2);
        for k in &mut kv {
            agreed(k, 3, "quorate");
        }
        kv[2].expect(mark, "QUORUM quorate");
        kv[2].wait_value("color", "VALUE color green");
        kv[2].wait_value("extra", "NONE extra");
        if ungated {
            kv[2].expect(mark, "DISCARDED set");
        }
        let digests: Vec<String> = kv.iter_mut().map(|k| k.wait_synced(3)).collect();
        assert!(
            digests.iter().all(|d| *d == digests[0]),
            "digests differ: {digests:?}"
        );
    }
}

/// `kv --help` prints its usage and exits 0 (run inside the shared node's namespace).
#[test]
fn kv_answers_help() {
    let out = cpg_testkit::shared()
        .command(KV)
        .arg("--help")
        .output()
        .expect("run kv");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: kv"), "{text}");
}

/// A copy whose process is stopped (SIGSTOP: its daemon keeps it in the group, it
/// answers nothing) does not stall the others: when a new copy joins, the round's
/// deadline decides without the ghost; once continued, the ghost catches up.
#[test]
fn kv_a_stopped_copy_does_not_stall_the_others() {
    let _heavy = heavy();
    let cluster = Cluster::start(3);
    let args = ["example-kv-ghost", "--verify-secs", "0"];
    let mut kv: Vec<Kv> = (0..3).map(|i| Kv::start(cluster.node(i), &args)).collect();
    for k in &mut kv {
        k.wait_synced(3);
    }
    assert!(kv[0]
        .ask("set before ghost", &["OK", "ERR"])
        .starts_with("OK"));
    kv[2].wait_value("before", "VALUE before ghost");
    assert!(
        kv[2].program.signal(libc::SIGSTOP),
        "SIGSTOP: {}",
        kv[2].program.report()
    );

    let joined = Instant::now();
    kv.push(Kv::start(cluster.node(0), &args));
    for i in [0, 1, 3] {
        kv[i].wait_synced(4);
    }
    let decided = joined.elapsed();
    assert!(
        decided >= Duration::from_secs(5),
        "the round waited for its deadline ({decided:?})"
    );
    kv[3].wait_value("before", "VALUE before ghost");
    assert!(kv[3]
        .ask("set during ghost", &["OK", "ERR"])
        .starts_with("OK"));
    kv[1].wait_value("during", "VALUE during ghost");

    assert!(
        kv[2].program.signal(libc::SIGCONT),
        "SIGCONT: {}",
        kv[2].program.report()
    );
    kv[2].wait_value("during", "VALUE during ghost");
    let digests: Vec<String> = kv.iter_mut().map(|k| k.wait_synced(4)).collect();
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "digests differ: {digests:?}"
    );
    println!("ghost: the three live copies were in sync {decided:?} after the fourth joined");
}
