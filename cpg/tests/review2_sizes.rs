//! Messages of odd sizes through every send path: empty, one byte, around the atomic
//! size (where libcpg starts to fragment), and several times it. Each must arrive
//! once, whole, in order: nothing silently dropped.

mod support;

use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpg::{DispatchMode, Handle};
use support::{big_stack, unique_group, WAIT};

fn pattern(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
}

#[test]
fn every_size_arrives_whole_once_and_in_order() {
    let group = unique_group("review2-sizes");
    big_stack(move || {
        cpg_testkit::shared().enter(|| {
            let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
            let g = Arc::clone(&got);
            let h = Handle::builder()
                .on_deliver(move |_, m| g.lock().unwrap().push(m.data.to_vec()))
                .build()
                .unwrap();
            h.join(&group).unwrap();
            let max = h.max_message_size().unwrap() as usize;
            let sizes = [
                0,
                1,
                max - 1,
                max,
                max + 1,
                (1 << 20) - 1,
                1 << 20,
                (1 << 20) + 1,
                3 * max + 7,
            ];
            let mut sent = Vec::new();
            for (i, &len) in sizes.iter().enumerate() {
                let data = pattern(len, i as u8);
                h.send_with_retry(&data, &Default::default())
                    .unwrap_or_else(|e| panic!("send of {len}: {e}"));
                sent.push(data);
            }
            // Vectored: 63 buffers, some empty, totalling just over the atomic size.
            let parts: Vec<Vec<u8>> = (0..63)
                .map(|i| {
                    if i % 2 == 0 {
                        Vec::new()
                    } else {
                        pattern(max / 31, i)
                    }
                })
                .collect();
            let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            h.send_vectored_with_retry(&slices, &Default::default())
                .unwrap();
            sent.push(parts.concat());
            // Through a sender too.
            let s = h.sender();
            let data = pattern(max, 99);
            s.send_with_retry(&data, &Default::default()).unwrap();
            sent.push(data);

            let deadline = Instant::now() + WAIT;
            while got.lock().unwrap().len() < sent.len() && Instant::now() < deadline {
                h.dispatch_timeout(Duration::from_millis(200)).unwrap();
            }
            h.dispatch(DispatchMode::All).unwrap();
            let got = got.lock().unwrap();
            let lens: Vec<usize> = got.iter().map(Vec::len).collect();
            let want: Vec<usize> = sent.iter().map(Vec::len).collect();
            assert_eq!(lens, want, "max_message_size {max}");
            assert!(got.iter().zip(&sent).all(|(a, b)| a == b), "contents");
        })
    });
}
