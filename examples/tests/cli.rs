//! The example programs as a user runs them: the real binaries, started inside the
//! network namespaces of private corosync daemons from `cpg-testkit` (the shared
//! single node, or a 2-node `Cluster`), checked on their exit status and output.
//!
//! Needs root and corosync, like every test of this workspace: without a daemon the
//! harness panics, so these tests fail rather than skip.
//!
//! Every wait is bounded. Each program runs as a [`Program`], which kills and reaps it
//! when dropped, so no program outlives a failed test; programs are declared after the
//! cluster they run on, so they are gone before the cluster is torn down. The tests
//! that start a cluster take [`heavy()`].

mod support;

use std::time::{Duration, Instant};

use cpg_testkit::{Cluster, Node};
use support::{heavy, Program};

const CHAT: &str = env!("CARGO_BIN_EXE_chat");
const MEMBERS: &str = env!("CARGO_BIN_EXE_members");

/// How long a program may take to print an expected line.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a program that should end by itself may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Index of the only line that contains `text`; panics if none or several do.
fn index_of(lines: &[String], text: &str, program: &Program) -> usize {
    let found: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains(text))
        .collect();
    match found[..] {
        [i] => i,
        _ => panic!(
            "expected exactly one line with {text:?}, found {}: {}",
            found.len(),
            program.report()
        ),
    }
}

/// The "message from ..." lines among `lines`, from the marker on.
fn messages(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l.find("message from ").map(|at| &l[at..]))
        .collect()
}

/// The numbers after "pid " in `line`.
fn pids_in(line: &str) -> Vec<u32> {
    line.split("pid ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// How chat and members name a node: its id and its name from the node list, which
/// the test kit writes as `nodeN`.
fn shown(nodeid: u32) -> String {
    format!("node {nodeid} (node{nodeid})")
}

/// How chat prints a delivered message.
fn message_line(nodeid: u32, pid: u32, text: &str) -> String {
    format!(
        "message from {} pid {pid} ({} bytes): {text}",
        shown(nodeid),
        text.len()
    )
}

/// How async_chat prints a delivered message (node ids alone).
fn async_message_line(nodeid: u32, pid: u32, text: &str) -> String {
    format!(
        "message from node {nodeid} pid {pid} ({} bytes): {text}",
        text.len()
    )
}

/// Starts `chat ARGS` on `node` and waits until it has joined and seen its own join
/// (so anything sent later reaches it). Returns the program; its pid is checked
/// against what chat says about itself.
fn joined_chat(node: &Node, args: &[&str], group_shown: &str) -> Program {
    let chat = Program::start(node, CHAT, args, None);
    let pid = chat.pid();
    chat.expect_line(
        &format!(
            "joined group {group_shown} as {} pid {pid}",
            shown(node.nodeid())
        ),
        LINE_TIMEOUT,
    );
    chat.expect_line(
        &format!("joined: {} pid {pid} (join)", shown(node.nodeid())),
        LINE_TIMEOUT,
    );
    chat
}

/// Node 1 chats 3 piped lines to a group that a `--listen` chat on node 2 watches:
/// the sender exits 0 at EOF once its messages came back to it; the listener printed
/// the sender joining, its 3 lines in order with node id 1, and the sender leaving
/// (reason "leave"); SIGTERM makes the listener leave and exit 0.
#[test]
fn chat_delivers_piped_lines_across_nodes_and_shows_membership() {
    let _heavy = heavy();
    let cluster = Cluster::start(2);
    let group = "cli-chat";
    let mut listener = joined_chat(cluster.node(1), &[group, "--listen"], group);
    // The listener is in a 2-node cluster: its initial totem membership says so.
    let ring = listener.expect_line("cluster: ring ", LINE_TIMEOUT);
    assert!(
        ring.ends_with(", 2 nodes [1 (node1), 2 (node2)]"),
        "the totem membership should list both nodes: {}",
        listener.report()
    );
    let lines = ["first line", "second: with spaces", "third"];
    let input = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]);
    let mut sender = Program::start(cluster.node(0), CHAT, &[group], Some(&input));
    let spid = sender.pid();
    sender.expect_success(EXIT_TIMEOUT);

    // The sender got its own 3 messages back, in order, then left.
    let out = sender.stdout();
    let want: Vec<String> = lines.iter().map(|l| message_line(1, spid, l)).collect();
    assert_eq!(
        messages(&out),
        want,
        "the sender's own messages: {}",
        sender.report()
    );
    assert!(
        out.iter().any(|l| l == &format!("left group {group}")),
        "the sender did not say it left: {}",
        sender.report()
    );
    assert!(
        sender.stderr().is_empty(),
        "the sender wrote to stderr: {}",
        sender.report()
    );

    // The listener: join, the 3 messages in order, leave.
    let left = format!("left: {} pid {spid} (leave)", shown(1));
    listener.expect_line(&left, LINE_TIMEOUT);
    let seen = listener.stdout();
    let joined_at = index_of(
        &seen,
        &format!("joined: {} pid {spid} (join)", shown(1)),
        &listener,
    );
    let left_at = index_of(&seen, &left, &listener);
    assert!(
        seen[joined_at].contains(&format!("group {group}: 2 members [")),
        "the join should list both members: {}",
        listener.report()
    );
    assert!(
        seen[left_at].contains(&format!("group {group}: 1 member [{} pid ", shown(2))),
        "after the leave only the listener should be left: {}",
        listener.report()
    );
    let between: Vec<String> = seen[joined_at..left_at].to_vec();
    assert_eq!(
        messages(&between),
        want,
        "the listener should print the sender's 3 lines, in order, between its join and \
         its leave: {}",
        listener.report()
    );
    assert_eq!(
        messages(&seen).len(),
        3,
        "the listener printed other messages: {}",
        listener.report()
    );

    // Ctrl-C / SIGTERM: leaves the group and exits 0.
    listener.terminate();
    listener.expect_success(EXIT_TIMEOUT);
    listener.expect_line("interrupted: leaving", Duration::ZERO);
    listener.expect_line(&format!("left group {group}"), Duration::ZERO);
    assert!(
        listener.stderr().is_empty(),
        "the listener wrote to stderr: {}",
        listener.report()
    );
}

/// `--c-style` counts a trailing NUL: "name" and "name\0" are different groups, so
/// chats with and without it on the same text never see each other's messages or
/// membership.
///
/// Each listener needs an event known to come after the other kind's message: the
/// senders run one after the other (plain, c-style, plain), each to its exit (its
/// message delivered). So a plain message that reached the c-style listener would be
/// printed before the c-style message, and the c-style message before the second
/// plain one on the plain listener.
#[test]
fn chat_c_style_and_plain_groups_are_separate() {
    let node = cpg_testkit::shared();
    let group = "cli-c-style";
    let c_shown = format!("{group}\\x00");
    let c_listener = joined_chat(node, &[group, "--listen", "--c-style"], &c_shown);
    let plain_listener = joined_chat(node, &[group, "--listen"], group);

    let mut plain1 = Program::start(node, CHAT, &[group], Some("to plain 1\n"));
    plain1.expect_success(EXIT_TIMEOUT);
    let mut c_sender = Program::start(node, CHAT, &[group, "--c-style"], Some("to c-style\n"));
    c_sender.expect_success(EXIT_TIMEOUT);
    let mut plain2 = Program::start(node, CHAT, &[group], Some("to plain 2\n"));
    plain2.expect_success(EXIT_TIMEOUT);
    c_sender.expect_line(
        &format!("joined group {c_shown} as {}", shown(1)),
        Duration::ZERO,
    );

    let c_msg = message_line(1, c_sender.pid(), "to c-style");
    let p1_msg = message_line(1, plain1.pid(), "to plain 1");
    let p2_msg = message_line(1, plain2.pid(), "to plain 2");
    c_listener.expect_line(&c_msg, LINE_TIMEOUT);
    plain_listener.expect_line(&p2_msg, LINE_TIMEOUT);

    let c_seen = c_listener.stdout();
    assert_eq!(
        messages(&c_seen),
        [c_msg.as_str()],
        "the --c-style listener should see only the --c-style message: {}",
        c_listener.report()
    );
    let plain_seen = plain_listener.stdout();
    assert_eq!(
        messages(&plain_seen),
        [p1_msg.as_str(), p2_msg.as_str()],
        "the plain listener should see only the plain messages: {}",
        plain_listener.report()
    );
    // Nor does either see the other kind's members.
    let c_pids = [c_listener.pid(), c_sender.pid()];
    let plain_pids = [plain_listener.pid(), plain1.pid(), plain2.pid()];
    for (listener, seen, strangers) in [
        (&c_listener, &c_seen, &plain_pids[..]),
        (&plain_listener, &plain_seen, &c_pids[..]),
    ] {
        let named: Vec<u32> = seen.iter().flat_map(|l| pids_in(l)).collect();
        assert!(
            !named.iter().any(|pid| strangers.contains(pid)),
            "a member of the other group ({strangers:?}) shows up: {}",
            listener.report()
        );
    }
}

/// `members --json` on node 1 lists a group with its members on both nodes, the exact
/// (node id, pid) of the two chats, and tells a C-style group of the same text apart
/// (`c_style`, `name_hex` with the NUL).
#[test]
fn members_json_lists_the_chats_of_a_group() {
    let _heavy = heavy();
    let cluster = Cluster::start(2);
    let group = "cli-members";
    let chat1 = joined_chat(cluster.node(0), &[group, "--listen"], group);
    let chat2 = joined_chat(cluster.node(1), &[group, "--listen"], group);
    // Node 1's chat seeing node 2's join means node 1's daemon knows about it.
    chat1.expect_line(
        &format!("joined: {} pid {} (join)", shown(2), chat2.pid()),
        LINE_TIMEOUT,
    );
    let c_shown = format!("{group}\\x00");
    let c_chat = joined_chat(cluster.node(0), &[group, "--listen", "--c-style"], &c_shown);

    // As text: each member with its node's name.
    let mut text = Program::start(cluster.node(0), MEMBERS, &["--group", group], None);
    text.expect_success(EXIT_TIMEOUT);
    text.expect_line("local node: 1 (node1)", Duration::ZERO);
    text.expect_line(
        &format!("    node 2 (node2) pid {}", chat2.pid()),
        Duration::ZERO,
    );

    let mut members = Program::start(cluster.node(0), MEMBERS, &["--json"], None);
    members.expect_success(EXIT_TIMEOUT);
    let text = members.stdout().join("\n");
    let doc: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", members.report()));
    assert_eq!(doc["local_nodeid"], 1, "{}", members.report());
    assert_eq!(doc["local_name"], "node1", "{}", members.report());
    let groups = doc["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no \"groups\" array: {}", members.report()));
    let hex: String = group.bytes().map(|b| format!("{b:02x}")).collect();
    // (node id, name, pid) of each member: the names are the node list's.
    let pairs = |g: &serde_json::Value| -> Vec<(u64, String, u64)> {
        g["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        (
                            m["nodeid"].as_u64().unwrap_or(0),
                            m["name"].as_str().unwrap_or("").to_string(),
                            m["pid"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let named = |nodeid: u64, pid: u32| (nodeid, format!("node{nodeid}"), u64::from(pid));
    let find = |c_style: bool| {
        let matching: Vec<&serde_json::Value> = groups
            .iter()
            .filter(|g| g["name"] == group && g["c_style"] == c_style)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "expected one group {group:?} with c_style {c_style}: {}",
            members.report()
        );
        matching[0]
    };
    let plain = find(false);
    assert_eq!(plain["name_hex"], hex.as_str(), "{}", members.report());
    assert_eq!(
        pairs(plain),
        [named(1, chat1.pid()), named(2, chat2.pid())],
        "members of {group:?}: {}",
        members.report()
    );
    let c_group = find(true);
    assert_eq!(
        c_group["name_hex"],
        format!("{hex}00").as_str(),
        "{}",
        members.report()
    );
    assert_eq!(
        pairs(c_group),
        [named(1, c_chat.pid())],
        "members of the C-style {group:?}: {}",
        members.report()
    );
    assert_eq!(
        groups.len(),
        2,
        "only the chats' groups exist on this private cluster: {}",
        members.report()
    );
}

/// A group name over 128 bytes is refused with a message that says so, status 1, and
/// no panic.
#[test]
fn chat_refuses_a_too_long_group_name_readably() {
    let node = cpg_testkit::shared();
    let name = "g".repeat(129);
    let mut chat = Program::start(node, CHAT, &[&name], None);
    let status = chat.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", chat.report());
    let err = chat.stderr().join("\n");
    assert!(
        err.starts_with("chat: group name:") && err.contains("129") && err.contains("128"),
        "the error should name the problem and the limit: {}",
        chat.report()
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{}",
        chat.report()
    );
    assert!(
        chat.stdout().is_empty(),
        "it should not have joined: {}",
        chat.report()
    );
}

/// `--help` of every example program prints a usage text (with the program's own
/// summary, not the package's) and exits 0 without doing anything else. Run inside the
/// shared node's namespace, so that a program that ignored `--help` could not reach a
/// corosync the machine runs.
#[test]
fn every_example_answers_help() {
    let node = cpg_testkit::shared();
    let programs = [
        env!("CARGO_BIN_EXE_join"),
        env!("CARGO_BIN_EXE_chat"),
        env!("CARGO_BIN_EXE_members"),
        env!("CARGO_BIN_EXE_async_counter"),
        env!("CARGO_BIN_EXE_cmap"),
    ];
    for program in programs {
        let name = program.rsplit('/').next().unwrap_or(program);
        let mut help = Program::start(node, program, &["--help"], None);
        help.expect_success(Duration::from_secs(30));
        help.expect_line(&format!("Usage: {name}"), Duration::ZERO);
        // Each program describes itself, not the package.
        assert!(
            !help
                .stdout()
                .iter()
                .any(|l| l.contains("Example programs for the cpg crate")),
            "{name} --help shows the package description: {}",
            help.report()
        );
        assert!(
            help.stderr().is_empty(),
            "{name} --help wrote to stderr: {}",
            help.report()
        );
    }
}

const ASYNC_CHAT: &str = env!("CARGO_BIN_EXE_async_chat");
const ASYNC_COUNTER: &str = env!("CARGO_BIN_EXE_async_counter");
const JOIN: &str = env!("CARGO_BIN_EXE_join");

/// The async chat on a 2-node cluster: a listener on node 2 whose stdin stays open and
/// silent, a sender on node 1 with 3 piped lines. The sender exits 0 at end of input
/// once its lines came back, in order; the listener prints them in the same order and
/// the sender's leave. Then SIGTERM ends the listener promptly although its stdin is
/// still open (a reader on `tokio::io::stdin` would hold the runtime until a next line
/// arrived): it leaves the group and exits 0.
#[test]
fn async_chat_delivers_piped_lines_and_ends_on_sigterm_with_stdin_open() {
    let _heavy = heavy();
    let cluster = Cluster::start(2);
    let group = "cli-async-chat";
    let mut listener = Program::start_with_open_stdin(cluster.node(1), ASYNC_CHAT, &[group]);
    let lpid = listener.pid();
    listener.expect_line(
        &format!("joined group {group} as node 2 pid {lpid}"),
        LINE_TIMEOUT,
    );
    listener.expect_line(&format!("joined: node 2 pid {lpid} (join)"), LINE_TIMEOUT);

    let lines = ["first line", "second: with spaces", "third"];
    let input = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]);
    let mut sender = Program::start(cluster.node(0), ASYNC_CHAT, &[group], Some(&input));
    let spid = sender.pid();
    sender.expect_success(EXIT_TIMEOUT);
    let want: Vec<String> = lines
        .iter()
        .map(|l| async_message_line(1, spid, l))
        .collect();
    assert_eq!(
        messages(&sender.stdout()),
        want,
        "the sender's own lines: {}",
        sender.report()
    );
    sender.expect_line(&format!("left group {group}"), Duration::ZERO);
    assert!(
        sender.stderr().is_empty(),
        "the sender wrote to stderr: {}",
        sender.report()
    );

    listener.expect_line(&format!("left: node 1 pid {spid} (leave)"), LINE_TIMEOUT);
    assert_eq!(
        messages(&listener.stdout()),
        want,
        "the listener's view of the lines: {}",
        listener.report()
    );

    let asked = Instant::now();
    listener.terminate();
    listener.expect_success(Duration::from_secs(10));
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?} to end the listener: {}",
        asked.elapsed(),
        listener.report()
    );
    listener.expect_line(&format!("left group {group}"), Duration::ZERO);
}

/// `join` on one node: it prints its own membership and its own hello, with its pid.
#[test]
fn join_prints_its_membership_and_its_own_hello() {
    let node = cpg_testkit::shared();
    let group = format!("cli-join-{}", std::process::id());
    let join = Program::start(node, JOIN, &[&group], None);
    let pid = join.pid();
    join.expect_line(
        &format!("[{group}] members: node 1 pid {pid}"),
        LINE_TIMEOUT,
    );
    join.expect_line(
        &format!("[{group}] node 1 pid {pid}: hello from pid {pid}"),
        LINE_TIMEOUT,
    );
    assert!(join.stderr().is_empty(), "{}", join.report());
}

/// Two `async_counter`s on a 2-node cluster, 10 increments each every 50 ms: the second
/// gets the value from the first (state transfer) and both print the same counter
/// values from there on, each value once, in order; both exit 0 after leaving.
#[test]
fn async_counters_on_two_nodes_agree_on_every_value() {
    let _heavy = heavy();
    let cluster = Cluster::start(2);
    let group = "cli-async-counter";
    let args = [group, "--interval-ms", "50", "--count", "10"];
    let mut first = Program::start(cluster.node(0), ASYNC_COUNTER, &args, None);
    first.expect_line("counter = 2", LINE_TIMEOUT);
    let mut second = Program::start(cluster.node(1), ASYNC_COUNTER, &args, None);
    first.expect_success(EXIT_TIMEOUT);
    second.expect_success(EXIT_TIMEOUT);
    let values = |p: &Program| -> Vec<u64> {
        p.stdout()
            .iter()
            .filter_map(|l| {
                l.rsplit_once("counter = ")
                    .and_then(|(_, v)| v.parse().ok())
            })
            .collect()
    };
    let (a, b) = (values(&first), values(&second));
    assert!(
        second
            .stdout()
            .iter()
            .any(|l| l.starts_with("got the value: counter = ")),
        "the second instance got the value by state transfer: {}",
        second.report()
    );
    // The second's values are a suffix of the first's up to where the first left.
    let start = b.first().copied().expect("the second printed values");
    let from = a
        .iter()
        .position(|&v| v == start)
        .unwrap_or_else(|| panic!("{start} never printed by the first: {}", first.report()));
    let common = (a.len() - from).min(b.len());
    assert_eq!(
        a[from..from + common],
        b[..common],
        "both print the same values in the same order:\n{}\n{}",
        first.report(),
        second.report()
    );
    for (p, v) in [(&first, &a), (&second, &b)] {
        assert!(
            v.windows(2).all(|w| w[1] == w[0] + 1),
            "values grow by one: {}",
            p.report()
        );
        p.expect_line(
            &format!("left {group} after 10 increments of ours"),
            Duration::ZERO,
        );
    }
    // Whoever left last saw every one of the 20 increments.
    assert_eq!(
        a.last().max(b.last()).copied(),
        Some(20),
        "the last one out saw all 20 increments:\n{}\n{}",
        first.report(),
        second.report()
    );
}

/// `async_chat --help` prints its own usage text and exits 0.
#[test]
fn async_chat_answers_help() {
    let node = cpg_testkit::shared();
    let mut help = Program::start(node, ASYNC_CHAT, &["--help"], None);
    help.expect_success(Duration::from_secs(30));
    help.expect_line("Usage: async_chat", Duration::ZERO);
    assert!(help.stderr().is_empty(), "{}", help.report());
}
