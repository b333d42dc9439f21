//! cmap on a private 3-node cluster: every node reads `totem.cluster_name` and the node
//! list exactly as the test kit wrote them into its corosync.conf, and
//! [`NodeNames`] names the nodes and follows changes of the node list.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cpg::cmap::{Cmap, NodeNames, Value};
use cpg_testkit::{Cluster, Node};
use support::{serial, WAIT};

/// What the kit wrote into node `id`'s corosync.conf: the cluster name, and per node
/// list entry (in file order) its `ring0_addr`, `nodeid` and `name`.
fn written(cluster: &Cluster, id: u32) -> (String, Vec<BTreeMap<String, String>>) {
    let path = cluster.dir().join(format!("n{id}")).join("corosync.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut name = None;
    let mut nodes = Vec::new();
    let mut section = Vec::<String>::new();
    for line in text.lines().map(str::trim) {
        if let Some(open) = line.strip_suffix('{') {
            section.push(open.trim().to_string());
            if section.last().map(String::as_str) == Some("node") {
                nodes.push(BTreeMap::new());
            }
        } else if line == "}" {
            section.pop();
        } else if let Some((key, value)) = line.split_once(':') {
            let (key, value) = (key.trim().to_string(), value.trim().to_string());
            match section.last().map(String::as_str) {
                Some("totem") if key == "cluster_name" => name = Some(value),
                Some("node") => {
                    nodes.last_mut().expect("in a node").insert(key, value);
                }
                _ => {}
            }
        }
    }
    (name.expect("cluster_name in the file"), nodes)
}

#[test]
fn every_node_reads_the_cluster_name_and_node_list_the_kit_wrote() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    for node in cluster.nodes() {
        let (cluster_name, nodes) = written(&cluster, node.nodeid());
        assert_eq!(nodes.len(), 3, "{nodes:?}");
        let (name, listed, local) = node.enter(|| {
            let cmap = Cmap::new().expect("connect to cmap");
            let name: String = cmap.get("totem.cluster_name").unwrap();
            let listed: Vec<(String, Value)> = cmap
                .iter("nodelist.node.")
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let local: u32 = cmap.get("nodelist.local_node_pos").unwrap();
            (name, listed, local)
        });
        assert_eq!(name, cluster_name);
        // Entry N of cmap is the N-th node section of the file, key for key.
        let mut expected = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            for (key, value) in n {
                let value = match key.as_str() {
                    "nodeid" => Value::U32(value.parse().unwrap()),
                    _ => Value::Str(value.clone()),
                };
                expected.push((format!("nodelist.node.{i}.{key}"), value));
            }
        }
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(listed, expected, "node {}", node.nodeid());
        // This node's own entry.
        let own = &nodes[local as usize];
        assert_eq!(own["nodeid"], node.nodeid().to_string());
        assert_eq!(own["ring0_addr"], node.addr().to_string());
    }
}

/// `corosync-cfgtool -R` on `node`: every node reads its corosync.conf again.
fn reload(node: &Node) {
    let out = node
        .command("corosync-cfgtool")
        .arg("-R")
        .output()
        .expect("run corosync-cfgtool");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "corosync-cfgtool -R: {out:?}"
    );
}

#[test]
fn node_names_name_every_node_and_follow_changes_of_the_node_list() {
    let _serial = serial();
    let cluster = Cluster::start(3);
    let node = cluster.node(0);
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(support::BIG_STACK)
            .spawn_scoped(s, || {
                let mut names = node.enter(NodeNames::new).expect("node names");
                let want: BTreeMap<u32, String> =
                    (1..=3).map(|id| (id, format!("node{id}"))).collect();
                assert_eq!(names.names(), &want);
                assert_eq!(names.get(2), Some("node2"));
                assert_eq!(names.get(9), None);
                assert_eq!(names.label(2).to_string(), "2 (node2)");
                assert_eq!(names.label(9).to_string(), "9");
                // Pacemaker's names agree where the node list has names.
                assert_eq!(names.pacemaker_name(2), Some("node2"));
                assert_eq!(names.pacemaker_name(9), None);
                assert_eq!(names.refresh(), Ok(false), "nothing changed");

                // The node list is read-only in cmap: it changes when corosync.conf is
                // edited and reloaded. Rename node 2, add node 8 without a name (its
                // address stands in).
                let conf = cluster.dir().join("n1").join("corosync.conf");
                let original = std::fs::read_to_string(&conf).unwrap();
                let edited = original
                    .replace("name: node2", "name: renamed")
                    .replacen(
                        "nodelist {\n",
                        "nodelist {\n    node {\n        ring0_addr: 10.213.0.8\n        nodeid: 8\n    }\n",
                        1,
                    );
                assert_ne!(edited, original);
                std::fs::write(&conf, &edited).unwrap();
                reload(node);
                let changed = |names: &mut NodeNames, what: &str, done: &dyn Fn(&NodeNames) -> bool| {
                    let deadline = Instant::now() + WAIT;
                    while !done(names) {
                        assert!(Instant::now() < deadline, "{what}: {:?}", names.names());
                        std::thread::sleep(Duration::from_millis(50));
                        names.refresh().expect("refresh");
                    }
                };
                changed(&mut names, "rename and addition", &|n| {
                    n.get(2) == Some("renamed") && n.get(8) == Some("10.213.0.8")
                });
                assert_eq!(names.names().len(), 4);
                // Pacemaker has no name for a node known by its address only.
                assert_eq!(names.pacemaker_name(8), None);
                assert_eq!(names.pacemaker_name(2), Some("renamed"));
                std::fs::write(&conf, &original).unwrap();
                reload(node);
                changed(&mut names, "the original list", &|n| n.names() == &want);
                assert_eq!(names.names().len(), 3);
                assert_eq!(names.refresh(), Ok(false));
            })
            .unwrap()
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
}
