//! List the process groups of the cluster and their members (what `corosync-cpgtool`
//! shows), as text or as JSON.
//!
//! ```text
//! cargo run -p cpg-examples --bin members                     # every group, every member
//! cargo run -p cpg-examples --bin members -- --json           # machine-readable
//! cargo run -p cpg-examples --bin members -- --group my-group # one group
//! cargo run -p cpg-examples --bin members -- --group pacemakerd --c-style
//! ```
//!
//! Uses the iteration API (`ConnectionRef::iter_all`, `ConnectionRef::iter_members`): one
//! snapshot taken by the local daemon, which knows the members on every node. This
//! program does not join anything, so it does not appear in the list itself.
//!
//! Group names are bytes: C daemons count a trailing NUL (`"pacemakerd\0"`). The text
//! output escapes such bytes (`pacemakerd\x00`); the JSON output gives the name without
//! that NUL plus `"c_style": true`, and the exact bytes in hex.
//!
//! Nodes are shown with their names from corosync's node list (`node 2 (node2) pid
//! 5539`; in JSON `"name"`), read through cmap (`cpg::cmap::NodeNames`); a node
//! without a name, or a daemon whose cmap this user may not read, shows the id alone.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Parser;
use cpg::cmap::{NodeLabel, NodeNames};
use cpg::{GroupName, Handle, Member};

/// List CPG groups and their members across the cluster.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
struct Args {
    /// Only this group.
    #[arg(long)]
    group: Option<String>,
    /// The group name counts a trailing NUL, as C daemons name their groups.
    #[arg(long, requires = "group")]
    c_style: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("members: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    // No callbacks: this program only asks questions.
    let handle = Handle::builder()
        .build()
        .map_err(|e| format!("cannot connect to corosync: {e}"))?;
    let local = handle
        .local_node_id()
        .map_err(|e| format!("cannot ask corosync for the node id: {e}"))?;

    let mut groups: BTreeMap<Vec<u8>, (GroupName, Vec<Member>)> = BTreeMap::new();
    if let Some(name) = &args.group {
        let group = if args.c_style {
            GroupName::c_style(name)
        } else {
            GroupName::new(name)
        }
        .map_err(|e| format!("--group: {e}"))?;
        let mut members = Vec::new();
        for member in handle
            .iter_members(&group)
            .map_err(|e| format!("cannot list group {group}: {e}"))?
        {
            members.push(member.map_err(|e| format!("listing group {group}: {e}"))?);
        }
        groups.insert(group.as_bytes().to_vec(), (group, members));
    } else {
        for item in handle
            .iter_all()
            .map_err(|e| format!("cannot list the groups: {e}"))?
        {
            let item = item.map_err(|e| format!("listing the groups: {e}"))?;
            groups
                .entry(item.group.as_bytes().to_vec())
                .or_insert_with(|| (item.group, Vec::new()))
                .1
                .push(item.member());
        }
    }
    for (_, members) in groups.values_mut() {
        members.sort();
    }

    // Names are a nicety: without them, ids alone.
    let names = NodeNames::new().ok();
    let name = |nodeid| names.as_ref().and_then(|n| n.get(nodeid));
    if args.json {
        print_json(local, &groups, &name);
    } else {
        print_text(local, &groups, &name);
    }
    Ok(())
}

fn print_text<'a>(
    local: u32,
    groups: &BTreeMap<Vec<u8>, (GroupName, Vec<Member>)>,
    name: &dyn Fn(u32) -> Option<&'a str>,
) {
    let label = |nodeid| NodeLabel {
        nodeid,
        name: name(nodeid),
    };
    println!("local node: {}", label(local));
    if groups.is_empty() {
        println!("no groups");
    }
    for (name, members) in groups.values() {
        println!(
            "group {name}: {} member{}",
            members.len(),
            if members.len() == 1 { "" } else { "s" }
        );
        for m in members {
            let here = if m.nodeid == local {
                " (this node)"
            } else {
                ""
            };
            println!("    node {} pid {}{here}", label(m.nodeid), m.pid);
        }
    }
}

fn print_json<'a>(
    local: u32,
    groups: &BTreeMap<Vec<u8>, (GroupName, Vec<Member>)>,
    node_name: &dyn Fn(u32) -> Option<&'a str>,
) {
    let list: Vec<serde_json::Value> = groups
        .values()
        .map(|(name, members)| {
            let bytes = name.as_bytes();
            let c_style = name.is_c_style();
            let text = if c_style {
                &bytes[..bytes.len() - 1]
            } else {
                bytes
            };
            serde_json::json!({
                "name": String::from_utf8_lossy(text),
                "c_style": c_style,
                "name_hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "members": members
                    .iter()
                    .map(|m| {
                        serde_json::json!({ "nodeid": m.nodeid, "name": node_name(m.nodeid), "pid": m.pid })
                    })
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = serde_json::json!({ "local_nodeid": local, "local_name": node_name(local), "groups": list });
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
    );
}
