//! Who may use cmap and cfg: a process of a user that corosync's configuration does
//! not allow gets a typed access error when it connects; a user that `uidgid` allows
//! reads and writes cmap like root (and meets the same read-only keys). The
//! unprivileged side is this test binary run again in the node's namespace, as
//! `nobody` (uid and gid 65534), as in `access.rs`.

use std::process::Stdio;

use cpg::cfg::Cfg;
use cpg::cmap::Cmap;
use cpg::{CsError, Error, Operation};
use cpg_testkit::{Cluster, Node};

/// Set in the child, which drops to this uid/gid before connecting.
const UNPRIVILEGED: &str = "CPG_TEST_UNPRIVILEGED";
const NOBODY: u32 = 65534;

/// In the child: become `nobody`, then try cmap and cfg; print one outcome line each.
fn as_nobody() {
    // SAFETY: plain system calls on this process's credentials; order: groups, gid,
    // then uid (after which the others can no longer be changed).
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
        assert_eq!(libc::setgid(NOBODY), 0);
        assert_eq!(libc::setuid(NOBODY), 0);
    }
    let cmap = (|| -> Result<String, Error> {
        let cmap = Cmap::new()?;
        let name: String = cmap.get("totem.cluster_name")?;
        let key = format!("test.nobody.{}", std::process::id());
        cmap.set(&key, 1u8)?;
        cmap.delete(&key)?;
        let refused = cmap.set("totem.cluster_name", "other");
        Ok(format!(
            "read {name}, wrote own key, cluster name: {refused:?}"
        ))
    })();
    let cfg = Cfg::new().and_then(|cfg| cfg.local_node_id());
    // On lines of their own: libtest's "test ... " has no newline yet.
    match cmap {
        Ok(text) => println!("\nCMAP ok: {text}"),
        Err(e) => println!("\nCMAP {e:?} | {e}"),
    }
    match cfg {
        Ok(id) => println!("\nCFG ok: node {id}"),
        Err(e) => println!("\nCFG {e:?} | {e}"),
    }
}

/// Runs the child on `node`; its cmap and cfg outcome lines.
fn run_as_nobody(node: &Node) -> (String, String) {
    let exe = std::env::current_exe().unwrap();
    let out = node
        .command(exe)
        .args([
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "an_unlisted_user_is_refused_by_cmap_and_cfg_and_a_listed_one_is_not",
        ])
        .env(UNPRIVILEGED, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the unprivileged child");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| {
                panic!(
                    "no {prefix} line from the child:\n{stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_string()
    };
    (line("CMAP "), line("CFG "))
}

#[test]
fn an_unlisted_user_is_refused_by_cmap_and_cfg_and_a_listed_one_is_not() {
    if std::env::var_os(UNPRIVILEGED).is_some() {
        as_nobody();
        return;
    }
    let closed = Cluster::builder().nodes(1).start().expect("cluster");
    let (cmap, cfg) = run_as_nobody(closed.node(0));
    for (outcome, op) in [
        (cmap, Operation::CmapInitialize),
        (cfg, Operation::CfgInitialize),
    ] {
        let expected = Error::Cs {
            op,
            code: CsError::Access,
        };
        assert!(outcome.starts_with(&format!("{expected:?}")), "{outcome}");
        assert!(
            outcome.contains("uid 65534") && outcome.contains("uidgid { uid: 65534 }"),
            "the text says what to change: {outcome}"
        );
    }
    drop(closed);

    let open = Cluster::builder()
        .nodes(1)
        .allow_uid(NOBODY)
        .start()
        .expect("cluster allowing nobody");
    let (cmap, cfg) = run_as_nobody(open.node(0));
    let read_only = Error::Cs {
        op: Operation::CmapSet,
        code: CsError::Access,
    };
    assert!(cmap.starts_with("ok: read cpgt-"), "{cmap}");
    assert!(
        cmap.ends_with(&format!("wrote own key, cluster name: Err({read_only:?})")),
        "{cmap}"
    );
    assert_eq!(cfg, "ok: node 1");
}
