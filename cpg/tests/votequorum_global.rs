//! The votequorum handles' share of process-global state: libvotequorum's handle
//! table, with a cap of its own beside libquorum's and libcpg's.

mod support;

use cpg::quorum::{Quorum, QuorumCallbacks};
use cpg::votequorum::{VoteQuorum, VoteQuorumCallbacks};
use cpg::{Error, Handle, Service, MAX_HANDLES};
use cpg_testkit::Cluster;
use support::NoCallbacks;

struct Nothing;

impl VoteQuorumCallbacks for Nothing {}

impl QuorumCallbacks for Nothing {}

#[test]
fn votequorum_handles_stop_at_their_own_cap() {
    let cluster = Cluster::builder()
        .nodes(1)
        .quorum(cpg_testkit::Quorum::votequorum())
        .start()
        .expect("a votequorum node");
    let node = cluster.node(0);
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(support::BIG_STACK)
            .spawn_scoped(s, || {
                node.enter(|| {
                    let mut open: Vec<VoteQuorum> = (0..MAX_HANDLES)
                        .map(|i| {
                            VoteQuorum::new(Nothing).unwrap_or_else(|e| panic!("handle {i}: {e}"))
                        })
                        .collect();
                    let err = VoteQuorum::new(Nothing).unwrap_err();
                    assert_eq!(
                        err,
                        Error::TooManyServiceHandles {
                            service: Service::VoteQuorum,
                            max: MAX_HANDLES
                        }
                    );
                    assert!(err.to_string().contains("libvotequorum"), "{err}");
                    // libquorum's and libcpg's tables are others.
                    let quorum = Quorum::new(Nothing).expect("a quorum handle beside them");
                    let cpg = Handle::new(NoCallbacks).expect("a CPG handle beside them");
                    // Closing one makes room, and every open handle still answers.
                    open.pop().unwrap().close().unwrap();
                    open.push(VoteQuorum::new(Nothing).expect("room after a close"));
                    for vq in &open {
                        assert_eq!(vq.local_info().map(|i| i.votes), Ok(1));
                    }
                    drop((open, quorum, cpg));
                    let again: Vec<VoteQuorum> = (0..MAX_HANDLES)
                        .map(|i| {
                            VoteQuorum::new(Nothing).unwrap_or_else(|e| panic!("again {i}: {e}"))
                        })
                        .collect();
                    drop(again);
                })
            })
            .unwrap()
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
}
