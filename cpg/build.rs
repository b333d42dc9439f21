//! Build script for `cpg`: turns the header differences that `corosync-sys` found
//! (its `DEP_CPG_*` metadata, one variable per item the headers have) into cfgs of
//! this crate, so that the safe API follows the installed corosync (2.4 or 3.x).

use std::env;

/// The cfgs `corosync-sys` reports, each set where the headers have the item.
const HEADER_CFGS: [&str; 4] = [
    // `CPG_REASON_UNDEFINED` (missing from some 2.x headers).
    "corosync_has_reason_undefined",
    // corosync 3.1: `quorum_model_initialize` with `QUORUM_MODEL_V1` (ring ids and
    // node list notifications).
    "corosync_has_quorum_model_v1",
    // corosync 3.x: votequorum's node list notification.
    "corosync_has_votequorum_nodelist",
    // corosync 3.1: `corosync_cfg_node_status_get`.
    "corosync_has_cfg_node_status",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for cfg in HEADER_CFGS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        // `links = "cpg"` in corosync-sys: its `cargo::metadata=KEY=1` arrives as
        // `DEP_CPG_KEY`.
        let var = format!("DEP_CPG_{}", cfg.to_uppercase());
        println!("cargo::rerun-if-env-changed={var}");
        if env::var_os(&var).is_some() {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
