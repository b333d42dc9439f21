//! Building without corosync: the build fails with a message that says what to install
//! and how to override the search, and the docs.rs build (`DOCS_RS`) still works.
//!
//! Runs a nested cargo in its own target directory (`target/build-error-check`), so it
//! never disturbs the normal build; bindgen is compiled there once and then cached.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("corosync-sys lives in the workspace")
        .to_path_buf()
}

/// A cargo command on the workspace, with pkg-config unable to find anything and no
/// overrides set.
fn cargo_without_corosync(target_dir: &Path, args: &[&str]) -> Command {
    let root = workspace_root();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(args)
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(&root)
        .env("PKG_CONFIG_LIBDIR", "/nonexistent")
        .env("PKG_CONFIG_PATH", "")
        .env_remove("COROSYNC_INCLUDE_DIR")
        .env_remove("COROSYNC_LIB_DIR")
        .env_remove("DOCS_RS")
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// One test (not two) so bindgen is compiled once for both steps.
#[test]
fn missing_corosync_is_explained_and_docs_still_build() {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("build-error-check");

    // 1. A normal build must fail, naming the packages and the override.
    let out = run(cargo_without_corosync(
        &target_dir,
        &["build", "-p", "corosync-sys"],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the build succeeded although pkg-config cannot find libcpg:\n{stderr}"
    );
    for needle in ["libcpg-dev", "corosynclib-devel", "COROSYNC_INCLUDE_DIR"] {
        assert!(
            stderr.contains(needle),
            "the build error does not mention {needle}:\n{stderr}"
        );
    }

    // 2. docs.rs has no corosync either, and must still get documentation.
    let mut doc = cargo_without_corosync(&target_dir, &["doc", "-p", "corosync-sys", "--no-deps"]);
    doc.env("DOCS_RS", "1");
    let out = run(doc);
    assert!(
        out.status.success(),
        "DOCS_RS=1 cargo doc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        target_dir.join("doc/corosync_sys/index.html").is_file(),
        "cargo doc wrote no corosync_sys/index.html"
    );
}
