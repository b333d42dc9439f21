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

/// Builds corosync-sys with `features` in `target_dir` against the installed corosync
/// and returns the libraries its build script linked, as cargo reports them
/// (`build-script-executed` in `--message-format=json`, also for a cached run).
fn linked_libraries(target_dir: &Path, features: &str) -> Vec<String> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-p", "corosync-sys", "--message-format=json"])
        .args([
            "--no-default-features",
            "--features",
            features,
            "--target-dir",
        ])
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .env_remove("DOCS_RS")
        .env_remove("CARGO_TARGET_DIR");
    let out = run(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "building corosync-sys with features {features:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains(r#""reason":"build-script-executed""#) && l.contains("corosync-sys"))
        .unwrap_or_else(|| panic!("cargo reported no build script run of corosync-sys:\n{stdout}"));
    let list = line
        .split_once(r#""linked_libs":["#)
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no linked_libs in {line}"));
    let mut libs: Vec<String> = list
        .split(',')
        .map(|l| l.trim_matches('"').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

/// One test (not several) so bindgen is compiled once for every step.
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

    // 2. With every service asked for, the message names each service's package.
    let out = run(cargo_without_corosync(
        &target_dir,
        &["build", "-p", "corosync-sys", "--all-features"],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "built without corosync:\n{stderr}");
    for needle in [
        "libquorum-dev",
        "libvotequorum-dev",
        "libcmap-dev",
        "libcfg-dev",
        "corosynclib-devel",
    ] {
        assert!(
            stderr.contains(needle),
            "the build error does not mention {needle}:\n{stderr}"
        );
    }

    // 3. docs.rs has no corosync either, and must still get documentation, of every
    // service (from the bundled snapshots).
    let mut doc = cargo_without_corosync(
        &target_dir,
        &["doc", "-p", "corosync-sys", "--no-deps", "--all-features"],
    );
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
    for item in [
        "fn.cpg_join.html",
        "fn.quorum_getquorate.html",
        "fn.votequorum_getinfo.html",
        "fn.cmap_get_string.html",
        "fn.corosync_cfg_local_get.html",
    ] {
        assert!(
            target_dir.join("doc/corosync_sys").join(item).is_file(),
            "the docs.rs build documents no {item}"
        );
    }

    // 4. With corosync installed, a build links only the libraries its features ask
    // for: CPG alone is libcpg and libcorosync_common (and libqb, which they need).
    assert_eq!(
        linked_libraries(&target_dir, ""),
        ["corosync_common", "cpg", "qb"],
        "a build without features links more than CPG needs"
    );
    assert_eq!(
        linked_libraries(&target_dir, "quorum"),
        ["corosync_common", "cpg", "qb", "quorum"],
        "the quorum feature links libquorum, and nothing else of the other services"
    );
}
