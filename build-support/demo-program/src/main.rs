//! The demo: a private 3-node corosync cluster on this machine, the `chat` example on
//! every node, a message delivered everywhere, a member leaving, a node failing; then
//! the `kv` example (replicated state): a write read on another node, a late copy
//! catching up, a partitioned copy losing corosync's quorum (votequorum), refusing
//! writes, regaining quorum and catching up after the heal.
//! All narrated in plain English; then everything is removed.
//!
//! ```text
//! build-support/demo                 # installs what is needed, builds, runs this
//! target/release/demo                # (root) once built
//! ```
//!
//! It runs the `chat`, `members` and `kv` examples (package `cpg-examples`) as
//! processes, found beside this program's own executable: `build-support/demo` builds
//! both packages.
//!
//! The cluster comes from `cpg-testkit`: each node's corosync runs in its own network
//! namespace, so nothing touches the machine's network or a corosync it already runs.
//! Bounded: every wait has a timeout; the whole demo takes about two minutes.
//! Ctrl-C stops it and still removes every namespace and daemon.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use cpg_testkit::Cluster;

/// A narrated tour of CPG on a private 3-node corosync cluster (needs root).
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Seconds to pause after each narrated step, to read along.
    #[arg(long, default_value_t = 1.0)]
    pause: f64,
}

/// How long any one step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// The group every chat joins.
const GROUP: &str = "demo-chat";
/// The group of the `kv` copies.
const KV_GROUP: &str = "demo-kv";

fn main() -> ExitCode {
    let args = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("demo: cannot install a signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    let result = run(&args, &stop);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints a narration line ("== ..."), wrapped at 90 columns.
fn say(text: &str) {
    println!();
    let mut line = String::from("==");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 90 {
            println!("{line}");
            line = String::from("  ");
        }
        line.push(' ');
        line.push_str(word);
    }
    println!("{line}");
}

/// An example program on one node (`chat`, `kv`): its stdin, and the lines it has
/// printed so far (which a thread also echoes, labelled, to our stdout).
struct Program {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Program {
    /// Starts `exe ARGS` on node `index`; `name` labels its lines.
    fn start(
        cluster: &Cluster,
        index: usize,
        exe: &Path,
        name: &str,
        args: &[&str],
    ) -> Result<Program, String> {
        let node = cluster.node(index);
        let label = format!("node {} {name}", node.nodeid());
        let mut child = node
            .command(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let streams: [(Box<dyn std::io::Read + Send>, &str); 2] = [
            (Box::new(child.stdout.take().ok_or("no stdout")?), ""),
            (
                Box::new(child.stderr.take().ok_or("no stderr")?),
                "(stderr) ",
            ),
        ];
        for (stream, tag) in streams {
            let (lines, label, tag) = (Arc::clone(&lines), label.clone(), tag.to_string());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    println!("   [{label}] {tag}{line}");
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Program {
            label,
            child,
            stdin,
            lines,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn type_line(&mut self, text: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin already closed")?;
        writeln!(stdin, "{text}").map_err(|e| format!("{}: {e}", self.label))
    }

    /// Closes stdin: the chat sends what it has, waits for it to come back, leaves.
    fn end_input(&mut self) {
        self.stdin = None;
    }

    /// How many lines it has printed so far.
    fn line_count(&self) -> usize {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Types `command` and waits (bounded) for the first line after it that starts
    /// with one of `answers`; returns that line.
    fn ask(
        &mut self,
        stop: &AtomicBool,
        command: &str,
        answers: &[&str],
    ) -> Result<String, String> {
        let mark = self.line_count();
        self.type_line(command)?;
        let mut answer = None;
        wait_for(
            stop,
            &format!("{}'s answer to {command:?}", self.label),
            || {
                let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
                answer = lines
                    .iter()
                    .skip(mark)
                    .find(|l| answers.iter().any(|a| l.starts_with(a)))
                    .cloned();
                answer.is_some()
            },
        )?;
        Ok(answer.unwrap_or_default())
    }

    /// Asks `command` until the answer satisfies `want` (bounded); returns it.
    fn ask_until(
        &mut self,
        stop: &AtomicBool,
        command: &str,
        answers: &[&str],
        want: &dyn Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let got = self.ask(stop, command, answers)?;
            if want(&got) {
                return Ok(got);
            }
            if Instant::now() > deadline {
                return Err(format!("{}: {command:?} still answers {got:?}", self.label));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn has_line(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().any(|l| pred(l))
    }

    /// [`has_line`](Self::has_line) on the lines without the node names the chat
    /// prints beside node ids (`node 1 (node1) pid 42` reads `node 1 pid 42`).
    fn has_plain_line(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.has_line(&|l| pred(&without_names(l)))
    }

    fn last_line(&self, pred: &dyn Fn(&str) -> bool) -> Option<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().rev().find(|l| pred(l)).cloned()
    }

    fn count_lines(&self, pred: &dyn Fn(&str) -> bool) -> usize {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().filter(|l| pred(l)).count()
    }

    fn messages(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .filter_map(|l| l.split_once("): ").map(|(_, text)| text.to_string()))
            .collect()
    }

    /// Waits (bounded) for the process to exit; its exit status.
    fn wait_exit(&mut self, stop: &AtomicBool) -> Result<std::process::ExitStatus, String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                // Let the echo threads print the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Ok(status);
            }
            if stop.load(Ordering::Relaxed) {
                return Err("interrupted".into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not exit within {STEP_TIMEOUT:?}",
                    self.label
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            // Normally gone already; on an error or Ctrl-C give it a moment to leave
            // cleanly (it got SIGINT with us, or EOF just now), then kill it.
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `line` without the node names the examples print after node ids: every
/// ` (node<digits>)` removed.
fn without_names(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(" (node") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " (node".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(')') {
            rest = &after[digits + 1..];
        } else {
            out.push_str(" (node");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The second scene: `kv`, replicated state on top of CPG (`cpg::replica`).
fn kv_scene(
    args: &Args,
    stop: &AtomicBool,
    cluster: &Cluster,
    kv_exe: &Path,
) -> Result<(), String> {
    say("Node 3's corosync is started again. Next, the `kv` example: a key-value store replicated on \
         CPG. Each copy applies the same writes in the same order, and accepts writes only while \
         corosync's quorum (votequorum: one vote per node, 2 of 3 needed) says its side of the \
         cluster is quorate. Its lines: 'OK v<version>' for a write applied here, 'VALUE' for a \
         read, 'SYNCED' when a copy has caught up, 'QUORUM' when the quorum its copies agreed on \
         changes.");
    cluster.restart_daemon(2);
    for i in 0..3 {
        cluster.wait_members(i, &[1, 2, 3], STEP_TIMEOUT)?;
    }
    let kv_args = [KV_GROUP];
    let mut kv = Vec::new();
    for i in 0..2 {
        kv.push(Program::start(cluster, i, kv_exe, "kv", &kv_args)?);
    }
    // In sync in a view of `n`, with the quorum agreed (`quorate`, or `not quorate`).
    let agreed = |k: &mut Program, n: usize, quorum: &str| {
        let want = format!("members={n} phase=Ready ");
        let quorum = format!("quorum={quorum} in ring");
        k.ask_until(stop, "digest", &["DIGEST"], &|d| {
            d.contains(&want) && d.contains(&quorum)
        })
    };
    let synced = |k: &mut Program, n: usize| agreed(k, n, "quorate");
    for k in &mut kv {
        synced(k, 2)?;
    }
    pause(args, stop)?;

    say("Node 1 writes color=blue; node 2 reads it.");
    let ok = kv[0].ask(stop, "set color blue", &["OK", "ERR"])?;
    if !ok.starts_with("OK") {
        return Err(format!("node 1's write answered {ok}"));
    }
    kv[1].ask_until(stop, "get color", &["VALUE", "NONE"], &|v| {
        v == "VALUE color blue"
    })?;
    println!("   -> node 2 reads color=blue");
    pause(args, stop)?;

    say(
        "A copy starts late on node 3: it receives the current state from the others (a state \
         transfer) and then the writes that follow, in the same order.",
    );
    kv.push(Program::start(cluster, 2, kv_exe, "kv", &kv_args)?);
    synced(&mut kv[2], 3)?;
    kv[2].ask_until(stop, "get color", &["VALUE", "NONE"], &|v| {
        v == "VALUE color blue"
    })?;
    println!("   -> node 3 caught up: color=blue");
    pause(args, stop)?;

    say(
        "Node 3 is cut off from the network. Alone it has 1 vote of 3: corosync says it lost \
         quorum, so its copy refuses writes, while nodes 1 and 2 (quorate) go on and write \
         color=green.",
    );
    cluster.partition(2);
    agreed(&mut kv[2], 1, "not quorate")?;
    synced(&mut kv[0], 2)?;
    let lost = kv[2].last_line(&|l| l.starts_with("QUORUM not quorate"));
    println!("   -> node 3: {}", lost.unwrap_or_default());
    let refused = kv[2].ask(stop, "set color red", &["OK", "ERR"])?;
    if !refused.starts_with("ERR not quorate") {
        return Err(format!("node 3's write without quorum answered {refused}"));
    }
    let ok = kv[0].ask(stop, "set color green", &["OK", "ERR"])?;
    if !ok.starts_with("OK") {
        return Err(format!("node 1's write answered {ok}"));
    }
    println!("   -> node 3: {refused}; node 1: {ok}");
    pause(args, stop)?;

    say(
        "The network heals: node 3's copy takes the majority's history and reads color=green; \
         all three copies report the same version and digest.",
    );
    cluster.heal(2);
    kv[2].ask_until(stop, "get color", &["VALUE", "NONE"], &|v| {
        v == "VALUE color green"
    })?;
    synced(&mut kv[2], 3)?;
    let regained = kv[2].last_line(&|l| l.starts_with("QUORUM quorate"));
    println!("   -> node 3: {}", regained.unwrap_or_default());
    let mut digests = Vec::new();
    for k in &mut kv {
        let d = synced(k, 3)?;
        digests.push(d.split(' ').take(3).collect::<Vec<_>>().join(" "));
    }
    if digests.iter().any(|d| *d != digests[0]) {
        return Err(format!("the copies differ: {digests:?}"));
    }
    println!("   -> the same state on all three nodes: {}", digests[0]);
    drop(kv);
    pause(args, stop)
}

/// Waits until `cond` holds, at most [`STEP_TIMEOUT`]; `what` names it in the error.
fn wait_for(stop: &AtomicBool, what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if cond() {
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {STEP_TIMEOUT:?} waiting for {what}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pause(args: &Args, stop: &AtomicBool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.pause.clamp(0.0, 10.0));
    while Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this program: {e}"))?
        .with_file_name(name);
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "{} not found: build with `cargo build --release -p cpg-examples -p cpg-demo --bins` \
             (build-support/demo does)",
            exe.display()
        ))
    }
}

fn run(args: &Args, stop: &AtomicBool) -> Result<(), String> {
    let began = Instant::now();
    let chat_exe = sibling("chat")?;
    let kv_exe = sibling("kv")?;
    let members_exe = sibling("members").ok();

    println!("Corosync keeps a group of machines (nodes) in agreement about who is up.");
    println!("Its CPG service (closed process groups) lets programs on those nodes join a");
    println!("named group: every member gets every message sent to the group, all in the");
    println!("same order, and is told whenever a member joins, leaves, or disappears.");

    say("Starting a private 3-node corosync cluster on this machine (each node in its own network namespace; nothing leaves it) ...");
    let cluster = Cluster::builder()
        .nodes(3)
        .quorum(cpg_testkit::Quorum::votequorum())
        .start()
        .map_err(|e| format!("cannot start the cluster: {e}"))?;
    println!(
        "   nodes 1, 2 and 3 are up and see each other ({:.1} s)",
        cluster.startup_time().as_secs_f64()
    );
    pause(args, stop)?;

    say(&format!(
        "Starting the `chat` example on every node. Each joins the group \"{GROUP}\" and prints what it sees: \
         'cluster:' lines are the nodes that are up, 'group' lines the group's members (node + process id)."
    ));
    let mut chats = Vec::new();
    for i in 0..3 {
        chats.push(Program::start(&cluster, i, &chat_exe, "chat", &[GROUP])?);
        // One at a time, so the joins are easy to follow.
        let me = chats[i].pid();
        wait_for(stop, "the chat to join", || {
            chats[i].has_line(&|l| l.starts_with("joined group"))
                && chats.iter().all(|c| {
                    c.has_plain_line(&|l| l.contains(&format!("joined: node {} pid {me}", i + 1)))
                })
        })?;
    }
    wait_for(stop, "all three chats to see 3 members", || {
        chats
            .iter()
            .all(|c| c.has_line(&|l| l.contains(": 3 members [")))
    })?;
    println!("   -> all three chats see the same 3 members");
    pause(args, stop)?;

    if let Some(members) = &members_exe {
        say("The `members` example lists every group in the cluster and its members (what `corosync-cpgtool` shows):");
        let out = cluster
            .node(0)
            .command(members)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run members: {e}"))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("   [node 1 members] {line}");
        }
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            println!("   [node 1 members] (stderr) {line}");
        }
        pause(args, stop)?;
    }

    say("Typing \"hello from node 1\" into node 1's chat: CPG delivers it to every member, on every node (the sender included).");
    chats[0].type_line("hello from node 1")?;
    wait_for(stop, "all chats to print the message", || {
        chats
            .iter()
            .all(|c| c.has_line(&|l| l.ends_with("): hello from node 1")))
    })?;
    println!("   -> delivered on nodes 1, 2 and 3");
    pause(args, stop)?;

    say("Nodes 2 and 3 both type at the same moment. Whatever order CPG picks, every node sees the same one:");
    chats[1].type_line("node 2 says hi")?;
    chats[2].type_line("node 3 says hi")?;
    wait_for(stop, "all chats to print both messages", || {
        chats.iter().all(|c| {
            c.count_lines(&|l| l.ends_with("): node 2 says hi") || l.ends_with("): node 3 says hi"))
                == 2
        })
    })?;
    let orders: Vec<Vec<String>> = chats.iter().map(Program::messages).collect();
    if orders.iter().all(|o| *o == orders[0]) {
        println!(
            "   -> same order on all three nodes: {}",
            orders[0].join(" | ")
        );
    } else {
        return Err(format!("the nodes saw different orders: {orders:?}"));
    }
    pause(args, stop)?;

    let pid2 = chats[1].pid();
    say("Node 2's chat reaches the end of its input: it leaves the group and exits. Nodes 1 and 3 see it leave with reason 'leave'.");
    chats[1].end_input();
    let left2 = format!("left: node 2 pid {pid2} (leave)");
    wait_for(stop, "nodes 1 and 3 to see node 2's chat leave", || {
        chats[0].has_plain_line(&|l| l.contains(&left2))
            && chats[2].has_plain_line(&|l| l.contains(&left2))
    })?;
    let status = chats[1].wait_exit(stop)?;
    println!("   -> node 2's chat exited ({status})");
    pause(args, stop)?;

    let pid3 = chats[2].pid();
    say("Node 3's corosync is killed (SIGKILL), as if the machine crashed. After the token timeout (1 s here) node 1 sees \
         node 3 drop out of the cluster, and node 3's chat leave the group with reason 'node down'. \
         Node 3's chat has lost its daemon and exits with an error.");
    cluster.kill_daemon(2);
    let left3 = format!("left: node 3 pid {pid3} (node down)");
    wait_for(
        stop,
        "node 1 to see node 3's chat go with 'node down'",
        || chats[0].has_plain_line(&|l| l.contains(&left3)),
    )?;
    wait_for(
        stop,
        "node 1 to see the cluster shrink to nodes 1 and 2",
        || chats[0].has_plain_line(&|l| l.starts_with("cluster:") && l.ends_with("2 nodes [1, 2]")),
    )?;
    let status = chats[2].wait_exit(stop)?;
    println!("   -> node 3's chat exited ({status})");
    pause(args, stop)?;

    say("Node 1's chat reaches the end of its input, leaves and exits.");
    chats[0].end_input();
    let status = chats[0].wait_exit(stop)?;
    println!("   -> node 1's chat exited ({status})");
    drop(chats);
    pause(args, stop)?;

    kv_scene(args, stop, &cluster, &kv_exe)?;

    drop(cluster);
    say(&format!(
        "Done in {:.0} s: the daemons are stopped and the network namespaces removed.",
        began.elapsed().as_secs_f64()
    ));
    Ok(())
}
