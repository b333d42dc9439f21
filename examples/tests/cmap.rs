//! The `cmap` example as a user runs it, on the shared single-node daemon: set, get,
//! list (text and JSON, compared with `corosync-cmapctl`), delete, a refused write,
//! and `track --prefix` printing changes made by `corosync-cmapctl` until SIGTERM.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::Program;

const CMAP: &str = env!("CARGO_BIN_EXE_cmap");
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `cmap ARGS` on the shared node to its end; (success, stdout lines, stderr).
fn run(args: &[&str]) -> (bool, Vec<String>, String) {
    let mut p = Program::start(cpg_testkit::shared(), CMAP, args, None);
    let status = p.wait_exit(TIMEOUT);
    (status.success(), p.stdout(), p.stderr().join("\n"))
}

/// `corosync-cmapctl ARGS` on the shared node; its stdout.
fn cmapctl(args: &[&str]) -> String {
    let out = cpg_testkit::shared()
        .command("corosync-cmapctl")
        .args(args)
        .output()
        .expect("run corosync-cmapctl");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn set_get_list_and_delete_like_cmapctl() {
    let key = format!("test.example.{}.k", std::process::id());
    let (ok, out, err) = run(&["set", &key, "u16", "5405"]);
    assert!(ok && out.is_empty(), "{out:?} {err}");
    assert_eq!(cmapctl(&["-g", &key]).trim(), format!("{key} (u16) = 5405"));
    let (ok, out, _) = run(&["get", &key]);
    assert!(ok);
    assert_eq!(out, [format!("{key} (u16) = 5405")]);
    let (ok, out, _) = run(&["--json", "get", &key]);
    assert!(ok);
    assert_eq!(
        parse(&out[0]),
        json!({"key": key, "type": "u16", "value": 5405})
    );

    // The same keys, types and values as the tool lists.
    let (ok, out, _) = run(&["list", "totem."]);
    assert!(ok);
    assert_eq!(out.join("\n"), cmapctl(&["totem."]).trim_end());
    let (ok, out, _) = run(&["--json", "list", "totem."]);
    assert!(ok);
    let name = cmapctl(&["-g", "totem.cluster_name"]);
    let name = name.trim().rsplit(" = ").next().unwrap().to_string();
    assert!(
        out.iter()
            .map(|l| parse(l))
            .any(|v| v == json!({"key": "totem.cluster_name", "type": "str", "value": name})),
        "{out:?}"
    );

    let (ok, _, _) = run(&["delete", &key]);
    assert!(ok);
    let (ok, out, err) = run(&["get", &key]);
    assert!(!ok && out.is_empty());
    assert!(err.contains(&key) && err.contains("no such key"), "{err}");
    // A read-only key: refused, with the reason.
    let (ok, _, err) = run(&["set", "totem.cluster_name", "str", "other"]);
    assert!(!ok && err.contains("read-only"), "{err}");
    let (ok, _, err) = run(&["set", &key, "u8", "300"]);
    assert!(!ok && err.contains("no u8 value"), "{err}");
}

#[test]
fn track_prints_each_change_of_a_prefix_until_sigterm() {
    let prefix = format!("test.example.{}.t.", std::process::id());
    let mut p = Program::start(
        cpg_testkit::shared(),
        CMAP,
        &["--json", "track", "--prefix", &prefix],
        None,
    );
    p.expect_line("\"event\":\"tracking\"", TIMEOUT);
    let key = format!("{prefix}a");
    cmapctl(&["-s", &key, "u8", "1"]);
    cmapctl(&["-s", &key, "str", "two"]);
    cmapctl(&["-d", &key]);
    cmapctl(&["-s", "test.example.outside", "u8", "1"]);
    let (at, _) = p.wait_line(0, TIMEOUT, "a deletion", |l| l.contains("\"deleted\""));
    let changes: Vec<Value> = p.stdout()[1..=at].iter().map(|l| parse(l)).collect();
    assert_eq!(
        changes,
        vec![
            json!({"event": "added", "key": key, "old": null,
                   "new": {"type": "u8", "value": 1}}),
            json!({"event": "modified", "key": key, "old": {"type": "u8", "value": 1},
                   "new": {"type": "str", "value": "two"}}),
            json!({"event": "deleted", "key": key, "old": {"type": "str", "value": "two"},
                   "new": null}),
        ]
    );
    p.terminate();
    assert!(p.wait_exit(TIMEOUT).success(), "{}", p.report());
    assert_eq!(
        p.stdout().len(),
        at + 1,
        "nothing outside the prefix: {}",
        p.report()
    );
    cmapctl(&["-d", "test.example.outside"]);
}

/// The text output is `corosync-cmapctl`'s, line for line, for the values whose text
/// form is not just the number: floats (`%f`), binary values (hidden without `-b`; a
/// backslash doubled, other bytes as `\xNN` with it), and `set KEY bin FILE|-`, which
/// stores the bytes of a file or of standard input.
#[test]
fn floats_binary_values_and_changes_print_as_cmapctl_prints_them() {
    let p = format!("test.example.{}.fmt.", std::process::id());
    let (flt, dbl, bin, from_file) = (
        format!("{p}flt"),
        format!("{p}dbl"),
        format!("{p}bin"),
        format!("{p}file"),
    );
    cmapctl(&["-s", &flt, "flt", "2.5"]);
    cmapctl(&["-s", &dbl, "dbl", "0.1"]);
    // Our `set ... bin -` reads standard input, as the tool does.
    let mut set = Program::start(
        cpg_testkit::shared(),
        CMAP,
        &["set", &bin, "bin", "-"],
        Some("a\\x41\u{1}~"),
    );
    set.expect_success(TIMEOUT);
    let file = std::env::temp_dir().join(format!("cmap-example-{}.bin", std::process::id()));
    std::fs::write(&file, b"from\\file\x7f").unwrap();
    let (ok, _, err) = run(&["set", &from_file, "bin", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    assert!(ok, "{err}");

    for shown in [&[][..], &["-b"][..]] {
        let mut ours: Vec<&str> = shown.to_vec();
        ours.extend(["list", &p]);
        let (ok, out, err) = run(&ours);
        assert!(ok, "{err}");
        let mut theirs: Vec<&str> = shown.to_vec();
        theirs.push(&p);
        let expected = cmapctl(&theirs);
        assert_eq!(out.join("\n"), expected.trim_end(), "with {shown:?}");
        assert_eq!(out.len(), 4, "{out:?}");
    }
    // What the tool shows, spelled out: the input's bytes, with the backslash doubled
    // (so that the `\x41` typed in is not read as one byte) and 0x01 as \x01.
    let (_, out, _) = run(&["-b", "get", &bin, &flt, &dbl]);
    assert_eq!(
        out,
        [
            format!("{bin} (bin) = a\\\\x41\\x01~"),
            format!("{flt} (flt) = 2.500000"),
            format!("{dbl} (dbl) = 0.100000"),
        ]
    );

    // `track` lines: the tool's `create> `, `modify> `, `delete> ` and the key.
    let mut t = Program::start(
        cpg_testkit::shared(),
        CMAP,
        &["track", "--prefix", &p],
        None,
    );
    t.expect_line("tracking", TIMEOUT);
    let key = format!("{p}t");
    cmapctl(&["-s", &key, "flt", "1.25"]);
    cmapctl(&["-s", &key, "u8", "7"]);
    cmapctl(&["-d", &key]);
    let (at, _) = t.wait_line(0, TIMEOUT, "a deletion", |l| l.starts_with("delete> "));
    assert_eq!(
        t.stdout()[1..=at],
        [
            format!("create> {key} (flt) = 1.250000"),
            format!("modify> {key} (u8) = 7"),
            format!("delete> {key} (u8) = 7"),
        ]
    );
    t.terminate();
    assert!(t.wait_exit(TIMEOUT).success(), "{}", t.report());
    for k in [&flt, &dbl, &bin, &from_file] {
        cmapctl(&["-d", k]);
    }
}
