//! Two `Group`s of one process for the same group name: the daemon identifies a member
//! by (node id, pid), so the second cannot join. It must fail promptly and leave the
//! first one working.

mod support;

use std::time::Instant;

use cpg::group::Group;
use support::{unique_group, WAIT};

#[test]
fn a_second_group_of_the_same_name_fails_and_the_first_keeps_working() {
    let name = unique_group("same-name");
    let node = cpg_testkit::shared();
    let a = node.enter(|| Group::join(name)).unwrap();
    assert!(a.wait_view(WAIT, |_| true).is_some());
    let start = Instant::now();
    let b = node.enter(|| Group::join(name));
    eprintln!("second: {b:?} after {:?}", start.elapsed());
    assert!(start.elapsed() < WAIT);
    if let Ok(b) = &b {
        // If it did start, it must not have taken over the first one's membership.
        let _ = b.leave(WAIT);
    }
    drop(b);
    let r = a.send_confirmed(b"still here".to_vec()).unwrap();
    let mut r = r;
    r.wait_timeout(WAIT)
        .expect("the first group still delivers");
    assert_eq!(a.view().unwrap().len(), 1);
    a.leave(WAIT).unwrap();
}
