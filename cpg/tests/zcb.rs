//! Zero-copy send buffers against the shared private daemon (`cpg_testkit::shared()`).
//!
//! The receiving member is a child process (see `support::child`: corosync refuses a
//! second join of the same group by the same pid) whose role is the group (as UTF-8)
//! to join. It reports every delivered message on stdout (`MSG <hex>`), and leaves
//! when its stdin closes.
//!
//! The tests of this file take `support::serial()`: the leak test counts mappings of the
//! whole process, which other tests of the same binary would change.

mod support;

use std::time::{Duration, Instant};

use cpg::retry::Backoff;
use cpg::{DispatchMode, Error, GroupName, Handle};
use support::child::{self, ChildProcess};
use support::unique_group;

/// The child's role: be the receiving member of `group`.
fn receive_until_stdin_closes(group: &str) {
    let group = GroupName::new(group).expect("group name");
    let handle = Handle::builder()
        .on_deliver(move |_cpg, msg| {
            if *msg.group == group {
                child::report("MSG", child::hex(msg.data));
            }
        })
        .build()
        .expect("child: connect to the daemon");
    handle.join(&group).expect("child: join");
    child::report_ready();
    child::until_stdin_closes(|| {
        handle
            .dispatch_timeout(Duration::from_millis(50))
            .expect("child: dispatch");
    });
}

/// The receiving member, a child process, as seen from the test.
struct Receiver(ChildProcess);

impl Receiver {
    /// Starts the child for `test` (the name of the calling test function), which joins
    /// `group`, and waits until it has joined.
    fn start(node: &cpg_testkit::Node, test: &str, group: &GroupName) -> Receiver {
        Receiver(ChildProcess::start(
            node,
            test,
            &group.to_string(),
            "the receiver process",
        ))
    }

    /// The next message the child delivered, waiting up to `timeout`.
    fn next(&mut self, timeout: Duration) -> Result<Vec<u8>, cpg_testkit::HarnessError> {
        self.0
            .next_report("MSG", timeout)
            .map(|data| child::unhex(&data))
    }

    /// Waits for the next message and asserts it equals `expected`, byte for byte.
    fn expect(&mut self, what: &str, expected: &[u8]) {
        let got = self
            .next(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{what}: the receiver got nothing within 20 s: {e}"));
        assert_eq!(got.len(), expected.len(), "{what}: length");
        if let Some(i) = got.iter().zip(expected).position(|(a, b)| a != b) {
            panic!(
                "{what}: byte {i} differs: got {:#04x}, sent {:#04x}",
                got[i], expected[i]
            );
        }
    }

    /// Asserts that nothing more arrives within `quiet`.
    fn expect_nothing(&mut self, what: &str, quiet: Duration) {
        if let Ok(m) = self.next(quiet) {
            panic!("{what}: unexpected message of {} bytes", m.len());
        }
    }
}

/// A pattern that differs for every position and every `seed`, so that a shifted,
/// truncated or mixed-up message cannot pass.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Connects a sending handle and joins `group` (after the receiver did).
fn sender(group: &GroupName) -> Handle {
    let handle = Handle::builder().build().expect("connect the sender");
    handle.join(group).expect("sender join");
    handle
}

/// Sends the whole buffer, retrying on back-pressure, and drains the sender's own
/// copy of its messages so that its queue never fills.
fn send_all_retrying(handle: &Handle, buffer: &cpg::ZeroCopyBuffer<'_>) {
    Backoff::default()
        .run(
            || buffer.send_all(),
            || handle.dispatch(DispatchMode::All).map(|_| ()),
        )
        .expect("zero-copy send");
    handle.dispatch(DispatchMode::All).expect("sender dispatch");
}

/// 1 byte, 64 KiB and exactly the atomic size (and an empty message), each in a
/// buffer of its own size, arrive byte-exact and in order at the other member.
#[test]
fn sends_one_byte_64k_and_max_size_byte_exact() {
    child::test_on_shared(receive_until_stdin_closes, |node| {
        let test = "sends_one_byte_64k_and_max_size_byte_exact";
        let group = unique_group("zcb-sizes");
        let mut receiver = Receiver::start(node, test, &group);
        let handle = sender(&group);
        let max = handle.max_message_size().expect("max size") as usize;
        assert!(max > 64 * 1024, "atomic size {max} is smaller than 64 KiB");

        let sizes = [1usize, 64 * 1024, max, 0];
        for (seed, &size) in sizes.iter().enumerate() {
            let data = pattern(size, seed as u32 + 1);
            let mut buffer = handle.alloc_buffer(size).expect("alloc");
            assert_eq!(buffer.len(), size, "buffer length");
            assert_eq!(buffer.capacity(), size, "buffer capacity");
            // libcpg 3.1.7 maps a fresh file, zero anyway; the crate's own zeroing (for a
            // malloc-based libcpg) is a unit test in `src/zcb.rs`.
            assert!(buffer.iter().all(|&b| b == 0), "a new buffer is zeroed");
            buffer.copy_from_slice(&data);
            send_all_retrying(&handle, &buffer);
            drop(buffer);
            receiver.expect(&format!("{size}-byte message"), &data);
        }
        receiver.expect_nothing("after the three sends", Duration::from_millis(300));
    });
}

/// One buffer sent three times, rewritten in between and once only in part: every
/// send delivers what the buffer held at that moment.
#[test]
fn a_buffer_sent_again_delivers_what_it_holds_at_each_send() {
    child::test_on_shared(receive_until_stdin_closes, |node| {
        let test = "a_buffer_sent_again_delivers_what_it_holds_at_each_send";
        let group = unique_group("zcb-reuse");
        let mut receiver = Receiver::start(node, test, &group);
        let handle = sender(&group);

        let mut buffer = handle.alloc_buffer(4096).expect("alloc");
        let first = pattern(4096, 11);
        buffer.copy_from_slice(&first);
        send_all_retrying(&handle, &buffer);

        let second = pattern(4096, 12);
        buffer.copy_from_slice(&second);
        buffer.send_prefix(100).expect("send a prefix");
        handle.dispatch(DispatchMode::All).expect("dispatch");

        let third = pattern(4096, 13);
        buffer.copy_from_slice(&third);
        buffer
            .send_prefix_with(cpg::Guarantee::Fifo, 4096)
            .expect("send again");
        buffer.free().expect("cpg_zcb_free");

        receiver.expect("first send", &first);
        receiver.expect("second send (100-byte prefix)", &second[..100]);
        receiver.expect("third send", &third);
    });
}

/// Sizes above the limits are refused with `MessageTooBig` before libcpg is called
/// (no mapping is made, nothing is delivered); a send by a handle that joined no group
/// is refused by the daemon with `CS_ERR_NOT_EXIST`.
#[test]
fn too_big_and_unjoined_sends_fail_with_the_right_error() {
    child::test_on_shared(receive_until_stdin_closes, |node| {
        let test = "too_big_and_unjoined_sends_fail_with_the_right_error";
        let group = unique_group("zcb-limits");
        let mut receiver = Receiver::start(node, test, &group);
        let handle = sender(&group);
        let max = handle.max_message_size().expect("max size") as usize;
        let maps_before = zerocopy_mappings();

        for size in [max + 1, 2 * max, usize::MAX] {
            let err = handle
                .alloc_buffer(size)
                .expect_err("alloc above the limit");
            assert_eq!(
                err,
                Error::MessageTooBig { len: size, max },
                "alloc({size})"
            );
            assert_eq!(err.operation(), None, "not an error from C");
        }
        assert_eq!(
            zerocopy_mappings(),
            maps_before,
            "a refused allocation must not reach cpg_zcb_alloc"
        );

        let mut buffer = handle.alloc_buffer(10).expect("alloc");
        buffer.copy_from_slice(b"0123456789");
        for len in [11, max + 1, usize::MAX] {
            let err = buffer.send_prefix(len).expect_err("send past the buffer");
            assert_eq!(err, Error::MessageTooBig { len, max: 10 }, "send({len})");
            assert!(!err.is_retryable());
        }
        // Nothing of the refused sends went out: the next message is this one.
        buffer.send_prefix(4).expect("send within the buffer");
        receiver.expect("the send after the refused ones", b"0123");
        receiver.expect_nothing("after the valid send", Duration::from_millis(300));
        drop(buffer);

        let loner = Handle::builder().build().expect("connect");
        let buffer = loner.alloc_buffer(8).expect("alloc without a group");
        let err = buffer.send_all().expect_err("send without a group");
        assert_eq!(err, Error::NotJoined, "refused before C");
    });
}

/// Lines of /proc/self/maps.
///
/// Under `build-support/run memcheck` (`CPG_MEMCHECK` set) only file-backed mappings
/// count: valgrind maps anonymous memory of its own as the program runs, and its leak
/// check covers what anonymous growth would show here.
fn mappings() -> Vec<String> {
    let memcheck = std::env::var_os("CPG_MEMCHECK").is_some();
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter(|l| {
            !memcheck
                || l.split_whitespace()
                    .nth(5)
                    .is_some_and(|p| p.starts_with('/'))
        })
        .map(str::to_owned)
        .collect()
}

/// Mappings of libcpg's zero-copy files (`/dev/shm/corosync_zerocopy-*`).
fn zerocopy_mappings() -> usize {
    mappings()
        .iter()
        .filter(|l| l.contains("corosync_zerocopy"))
        .count()
}

/// libcpg's zero-copy files present in /dev/shm (the daemon deletes each once it has
/// mapped it).
fn zerocopy_files() -> usize {
    std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("corosync_zerocopy")
        })
        .count()
}

/// 10,000 alloc/free cycles (half freed by drop, half by `free`) and 1,000
/// alloc/fill/send/drop cycles leave no zero-copy file in /dev/shm and no extra
/// mapping in this process; all 1,000 messages arrive, in order.
#[test]
fn alloc_free_and_send_cycles_leave_nothing_behind() {
    child::test_on_shared(receive_until_stdin_closes, |node| {
        let test = "alloc_free_and_send_cycles_leave_nothing_behind";
        let group = unique_group("zcb-cycles");
        let mut receiver = Receiver::start(node, test, &group);
        let handle = sender(&group);

        // Warm up, so that one-time allocations are not counted.
        drop(handle.alloc_buffer(1024).expect("alloc"));
        let files_before = zerocopy_files();
        let maps_before = mappings();
        let zc_before = zerocopy_mappings();

        let start = Instant::now();
        for i in 0..10_000usize {
            let size = (i % 16 + 1) * 1024;
            let mut buffer = handle.alloc_buffer(size).expect("alloc");
            buffer[size - 1] = i as u8;
            if i % 2 == 0 {
                drop(buffer);
            } else {
                buffer.free().expect("free");
            }
        }
        let alloc_free = start.elapsed();

        let start = Instant::now();
        for i in 0..1_000u32 {
            let mut buffer = handle.alloc_buffer(64).expect("alloc");
            buffer[..4].copy_from_slice(&i.to_le_bytes());
            send_all_retrying(&handle, &buffer);
        }
        let alloc_send = start.elapsed();
        eprintln!(
            "zcb cycles: 10,000 alloc/free in {alloc_free:?} ({:.1} us each), \
             1,000 alloc/send/drop in {alloc_send:?} ({:.1} us each)",
            alloc_free.as_secs_f64() * 1e6 / 10_000.0,
            alloc_send.as_secs_f64() * 1e6 / 1_000.0
        );

        for i in 0..1_000u32 {
            let mut expected = [0u8; 64];
            expected[..4].copy_from_slice(&i.to_le_bytes());
            receiver.expect(&format!("message {i} of 1,000"), &expected);
        }

        assert_eq!(
            zerocopy_files(),
            files_before,
            "zero-copy files in /dev/shm"
        );
        assert_eq!(zerocopy_mappings(), zc_before, "zero-copy mappings");
        let maps_after = mappings();
        let added: Vec<&String> = maps_after
            .iter()
            .filter(|l| !maps_before.contains(l))
            .collect();
        assert_eq!(
            maps_after.len(),
            maps_before.len(),
            "mappings in /proc/self/maps; new ones: {added:#?}"
        );
    });
}
