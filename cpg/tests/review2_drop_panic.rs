//! A callback whose captured state panics when dropped: dropping the handle unwinds
//! with that panic, but must still give back everything the handle held (its place
//! among the process's `MAX_HANDLES`), so that later handles can be made.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cpg::Handle;
use support::big_stack;

/// Panics when dropped once armed.
struct PanicOnDrop(Arc<AtomicBool>);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if self.0.load(Ordering::SeqCst) {
            panic!("a callback's captured state panics on drop");
        }
    }
}

#[test]
fn a_panicking_callback_destructor_does_not_leak_the_handle_slot() {
    big_stack(|| {
        cpg_testkit::shared().enter(|| {
            for i in 0..2 * cpg::MAX_HANDLES {
                let armed = Arc::new(AtomicBool::new(false));
                let bomb = PanicOnDrop(Arc::clone(&armed));
                let h = Handle::builder()
                    .on_deliver(move |_, _| {
                        let _ = &bomb;
                    })
                    .build()
                    .unwrap_or_else(|e| panic!("handle {i}: {e}"));
                armed.store(true, Ordering::SeqCst);
                let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(h)));
                assert!(dropped.is_err(), "the destructor's panic comes out of drop");
            }
        })
    });
}
