//! The async layers on a runtime whose workers have too little stack to dispatch:
//! they must end with a reason, not hang or write past a stack.
#![cfg(feature = "tokio")]

mod support;

use cpg::group::{Event, Group};
use support::{unique_group, WAIT};
use tokio::time::timeout;

#[test]
fn an_async_group_on_small_worker_stacks_stops_with_a_reason() {
    let group = unique_group("small-stacks");
    cpg_testkit::shared().enter(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_stack_size(256 << 10)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let h = tokio::spawn(async move {
                let g = match Group::builder(group).start_async().await {
                    Ok(g) => g,
                    Err(e) => return format!("start: {e}"),
                };
                loop {
                    match timeout(WAIT, g.next_event()).await {
                        Err(_) => panic!("no event and no end within WAIT"),
                        Ok(None) => return "ended".to_string(),
                        Ok(Some(Event::Stopped(r))) => return format!("stopped: {r:?}"),
                        Ok(Some(_)) => {}
                    }
                }
            });
            let outcome = timeout(WAIT * 2, h).await.expect("hung").unwrap();
            eprintln!("{outcome}");
            assert!(
                outcome.contains("StackTooSmall") || outcome.contains("stack"),
                "{outcome}"
            );
        });
    });
}
