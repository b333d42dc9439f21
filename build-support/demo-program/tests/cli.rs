//! The demo program's command line. The tour itself needs the example programs it
//! starts (package `cpg-examples`), which this package's tests cannot rely on being
//! built: `build-support/demo` builds both and runs it.
//!
//! Needs root and corosync, like every test of this workspace: without a daemon the
//! harness panics, so these tests fail rather than skip.

use std::process::Output;

const DEMO: &str = env!("CARGO_BIN_EXE_demo");

/// Runs `demo ARGS` inside the shared node's network namespace (so that a demo that
/// went further than asked could reach no corosync the machine runs).
fn demo(args: &[&str]) -> Output {
    cpg_testkit::shared()
        .command(DEMO)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {DEMO}: {e}"))
}

/// `demo --help` prints its own usage text (not the package's description) and exits
/// 0 without doing anything else.
#[test]
fn demo_answers_help() {
    let out = demo(&["--help"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo --help: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("Usage: demo"), "{stdout}");
    assert!(
        !stdout.contains(env!("CARGO_PKG_DESCRIPTION")),
        "demo --help shows the package description: {stdout}"
    );
    assert!(stderr.is_empty(), "demo --help wrote to stderr: {stderr}");
}
