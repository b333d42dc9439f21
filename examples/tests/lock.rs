//! The `lock` example as a user runs it, on a private 3-node cluster from
//! `cpg-testkit`, with TCP clients inside the nodes' namespaces: a lock taken on one
//! node is held for all; an `UNLOCK` answered on one node is seen by the next `WHO`
//! on another, every time; a lock whose holder's process is killed, and one whose
//! holder's daemon is killed, is freed on the others (and granted again with a higher
//! fencing token); the old holder learns it lost the lock once its node is back; a
//! partitioned node refuses, the majority goes on, and after the heal all agree; the
//! same partition on a votequorum cluster without `--majority-of` (corosync's quorum
//! decides: `ERR not-quorate`).
//!
//! Needs root and corosync, like every test of this workspace; without them the
//! harness panics, so these tests fail rather than skip. Every wait is bounded; each
//! program is SIGKILLed and reaped when it drops.

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cpg_testkit::{Cluster, Node};
use support::{heavy, Program};

const LOCK: &str = env!("CARGO_BIN_EXE_lock");
const WAIT: Duration = Duration::from_secs(60);
const ARGS: [&str; 5] = [
    "example-lock",
    "--majority-of",
    "3",
    "--listen",
    "127.0.0.1:0",
];

/// `lock` on a node, and the address it listens on (in the node's namespace).
struct Lock {
    program: Program,
    addr: String,
}

impl Lock {
    fn start(node: &Node) -> Lock {
        Lock::start_with(node, &ARGS)
    }

    fn start_with(node: &Node, args: &[&str]) -> Lock {
        let program = Program::start(node, LOCK, args, None);
        let (_, line) = program.wait_line(0, WAIT, "LISTENING", |l| l.starts_with("LISTENING "));
        let addr = line["LISTENING ".len()..].to_string();
        Lock { program, addr }
    }

    /// Waits until a view of `n` members is applied from line `from` on.
    fn wait_view(&self, from: usize, n: usize) {
        let want = format!("members={n} ");
        self.program
            .wait_line(from, WAIT, &format!("a view of {n} applied"), |l| {
                l.starts_with("VIEW-APPLIED") && l.contains(&want)
            });
    }

    /// A client connected from inside `node`'s namespace.
    fn client(&self, node: &Node) -> Client {
        let stream = node
            .enter(|| TcpStream::connect(&self.addr))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr));
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Sends one command and returns the answer line.
    fn ask(&mut self, command: &str) -> String {
        writeln!(self.writer, "{command}").expect("send a command");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("an answer");
        line.trim_end().to_string()
    }

    /// Asks `command` until the answer satisfies `done` (a view change takes a moment
    /// to reach every member); returns it.
    fn until(&mut self, command: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = self.ask(command);
            if done(&answer) {
                return answer;
            }
            assert!(Instant::now() < deadline, "{command}: still {answer:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The token of a `GRANTED name token` answer.
fn token(answer: &str) -> u64 {
    assert!(answer.starts_with("GRANTED "), "{answer}");
    answer.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn lock_frees_a_departed_holders_locks_and_a_minority_refuses() {
    let _heavy = heavy();
    let cluster = Cluster::start(3);
    let mut locks: Vec<Lock> = (0..3).map(|i| Lock::start(cluster.node(i))).collect();
    for l in &locks {
        l.wait_view(0, 3);
    }
    let mut c: Vec<Client> = (0..3).map(|i| locks[i].client(cluster.node(i))).collect();

    // One holder, seen by all.
    let first = token(&c[0].ask("LOCK a"));
    assert!(c[1].ask("LOCK a").starts_with("HELD a 1:"));
    let who = c[2].ask("WHO a");
    assert!(
        who.starts_with("HELD a 1:") && who.ends_with(&format!(" {first}")),
        "{who}"
    );

    // What one node answered, the next read on another sees (a read barrier).
    let mut last = first;
    for round in 0..20 {
        assert_eq!(c[0].ask("UNLOCK a"), "RELEASED a");
        assert_eq!(c[1].ask("WHO a"), "FREE a", "round {round}");
        let t = token(&c[0].ask("LOCK a"));
        assert!(t > last, "tokens grow: {t} after {last}");
        last = t;
        assert!(c[1].ask("WHO a").starts_with("HELD a 1:"), "round {round}");
    }
    assert_eq!(c[1].ask("UNLOCK a"), "NOT-HOLDER a");

    // The holder's process dies: the others free its lock.
    let b = token(&c[2].ask("LOCK b"));
    let mark = locks[0].program.stdout_len();
    drop(c.pop());
    drop(locks.pop());
    locks[0].wait_view(mark, 2);
    c[1].until("WHO b", |a| a == "FREE b");
    assert!(token(&c[0].ask("LOCK b")) > b);
    locks.push(Lock::start(cluster.node(2)));
    c.push(locks[2].client(cluster.node(2)));
    for l in &locks {
        l.wait_view(0, 3);
    }

    // The holder's daemon dies: the others free its locks and grant them again.
    cluster.kill_daemon(0);
    c[1].until("WHO a", |a| a == "FREE a");
    let again = token(&c[1].ask("LOCK a"));
    assert!(again > last, "the new grant's token {again} after {last}");
    cluster.restart_daemon(0);
    // The old holder learns it once its node is back with the majority's state.
    let who = c[0].until("WHO a", |a| a.starts_with("HELD a 2:"));
    assert!(who.ends_with(&format!(" {again}")), "{who}");

    // A partitioned node refuses; the majority goes on; after the heal all agree.
    let mark = locks[2].program.stdout_len();
    cluster.partition(2);
    c[2].until("LOCK c", |a| a == "ERR minority");
    assert_eq!(c[2].ask("WHO a"), "ERR minority");
    locks[2]
        .program
        .wait_line(mark, WAIT, "MINORITY", |l| l.starts_with("MINORITY"));
    c[0].until("LOCK c", |a| a.starts_with("GRANTED c"));
    cluster.heal(2);
    let who = c[2].until("WHO c", |a| a.starts_with("HELD c"));
    assert!(who.starts_with("HELD c 1:"), "{who}");
    assert_eq!(c[2].ask("WHO a"), c[0].ask("WHO a"));
}

/// On a votequorum cluster, with corosync's quorum and no `--majority-of`: the node cut
/// off answers `ERR not-quorate` (and prints `NOT-QUORATE`), the quorate side grants,
/// and after the heal every node names the quorate side's holder.
#[test]
fn lock_follows_corosyncs_quorum() {
    let _heavy = heavy();
    let cluster = Cluster::builder()
        .nodes(3)
        .quorum(cpg_testkit::Quorum::votequorum())
        .start()
        .expect("a 3-node votequorum cluster");
    let args = ["example-lock-quorum", "--listen", "127.0.0.1:0"];
    let locks: Vec<Lock> = (0..3)
        .map(|i| Lock::start_with(cluster.node(i), &args))
        .collect();
    for l in &locks {
        l.wait_view(0, 3);
    }
    let mut c: Vec<Client> = (0..3).map(|i| locks[i].client(cluster.node(i))).collect();
    let first = token(&c[2].until("LOCK a", |a| a.starts_with("GRANTED")));
    assert!(c[0].ask("WHO a").starts_with("HELD a 3:"));

    let mark = locks[2].program.stdout_len();
    cluster.partition(2);
    c[2].until("LOCK c", |a| a == "ERR not-quorate");
    assert_eq!(c[2].ask("WHO a"), "ERR not-quorate");
    locks[2]
        .program
        .wait_line(mark, WAIT, "NOT-QUORATE", |l| l.starts_with("NOT-QUORATE"));
    // The holder's node is gone from the quorate side: it frees and grants again.
    c[0].until("WHO a", |a| a == "FREE a");
    let again = token(&c[0].ask("LOCK a"));
    assert!(again > first, "{again} after {first}");
    c[1].until("LOCK c", |a| a.starts_with("GRANTED c"));
    cluster.heal(2);
    let who = c[2].until("WHO c", |a| a.starts_with("HELD c"));
    assert!(who.starts_with("HELD c 2:"), "{who}");
    let who = c[2].ask("WHO a");
    assert!(
        who.starts_with("HELD a 1:") && who.ends_with(&format!(" {again}")),
        "{who}"
    );
}

/// `lock --help` prints its usage and exits 0 (run inside the shared node's namespace).
#[test]
fn lock_answers_help() {
    let out = cpg_testkit::shared()
        .command(LOCK)
        .arg("--help")
        .output()
        .expect("run lock");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: lock"), "{text}");
}
