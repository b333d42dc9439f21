//! The async handle's tests (feature `tokio`): runtimes whose dispatching threads have
//! big stacks, connecting an [`AsyncHandle`] inside a node's namespace, and bounded
//! reads of its event stream.

use std::future::Future;
use std::time::Duration;

use cpg::{AsyncHandle, Event, GroupName, Member};
use cpg_testkit::Node;

use super::{big_stack, WAIT};

/// A multi-thread runtime as the crate documents it: IO and timer enabled, 4 MiB
/// worker stacks.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_stack_size(4 << 20)
        .build()
        .expect("build tokio runtime")
}

/// Runs the async test body `f` as a task on [`runtime`] (so that everything that
/// dispatches runs on a 4 MiB worker), bounded by `limit`.
pub fn run<F, Fut>(limit: Duration, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_on(runtime, limit, f)
}

/// [`run`] on the runtime `make` builds (on the big-stack thread).
pub fn run_on<F, Fut>(
    make: impl FnOnce() -> tokio::runtime::Runtime + Send + 'static,
    limit: Duration,
    f: F,
) where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    big_stack(move || {
        let rt = make();
        rt.block_on(async move {
            match tokio::time::timeout(limit, tokio::spawn(f())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(Err(e)) => panic!("test task failed: {e}"),
                Err(_) => panic!("test did not finish within {limit:?}"),
            }
        });
    })
}

/// Runs the async test body `f` to its end on a current-thread runtime, on a thread
/// with a [`BIG_STACK`](super::BIG_STACK) inside `node`'s network namespace: what `f`
/// connects (handles, the layers' drivers, which dispatch on this thread) reaches
/// `node`'s daemon.
pub fn block_on_node<F, Fut>(node: &'static Node, f: F) -> Fut::Output
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future,
    Fut::Output: Send + 'static,
{
    big_stack(move || {
        node.enter(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build tokio runtime")
                .block_on(f())
        })
    })
}

/// Connects an [`AsyncHandle`] to `node`'s daemon. Must run inside a runtime context
/// (a task, or `block_on`).
pub fn connect(node: &Node) -> AsyncHandle {
    node.enter(AsyncHandle::new)
        .unwrap_or_else(|e| panic!("AsyncHandle::new failed: {e}\n{}", node.log_tail(20)))
}

/// The next event, failing the test on timeout, error or end of stream.
pub async fn next(h: &mut AsyncHandle) -> Event {
    match tokio::time::timeout(WAIT, h.next_event()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("stream error: {e}"),
        Ok(None) => panic!("stream ended"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

/// The events that are ready now (queued, or pending in libcpg), without waiting for
/// more; at most 10,000.
pub async fn ready_now(h: &mut AsyncHandle) -> Vec<cpg::Result<Event>> {
    std::future::poll_fn(|cx| {
        let mut events = Vec::new();
        while events.len() < 10_000 {
            match h.poll_event(cx) {
                std::task::Poll::Ready(Some(event)) => events.push(event),
                _ => break,
            }
        }
        std::task::Poll::Ready(events)
    })
    .await
}

/// Reads events until `group` has exactly `n` members; returns them.
pub async fn wait_members(h: &mut AsyncHandle, group: &GroupName, n: usize) -> Vec<Member> {
    loop {
        if let Event::Confchg {
            group: g, members, ..
        } = next(h).await
        {
            if g == *group && members.len() == n {
                return members.iter().map(|a| a.member()).collect();
            }
        }
    }
}

/// Reads events until `count` messages were delivered; returns (sender, data) in
/// delivery order. Membership events in between are skipped.
pub async fn collect(h: &mut AsyncHandle, count: usize) -> Vec<(Member, Vec<u8>)> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        if let Event::Deliver {
            nodeid, pid, data, ..
        } = next(h).await
        {
            got.push((Member { nodeid, pid }, data));
        }
    }
    got
}

/// A message that carries its sequence number and a length that varies with it, so
/// both order and content can be checked: 8 bytes of `seq`, then `seq % 251` bytes
/// derived from it.
pub fn payload(seq: u64) -> Vec<u8> {
    let mut v = seq.to_le_bytes().to_vec();
    v.extend((0..seq % 251).map(|i| (seq as u8).wrapping_add(i as u8)));
    v
}

/// The sequence number of a [`payload`], after checking its content.
pub fn check_payload(data: &[u8]) -> u64 {
    assert!(
        data.len() >= 8,
        "message of {} bytes is too short",
        data.len()
    );
    let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
    assert_eq!(data, payload(seq).as_slice(), "content of message {seq}");
    seq
}

/// A message tagged with a task number and a sequence number, then `len - 8` filler
/// bytes derived from both ([`decode_tagged`] checks them).
pub fn tagged(task: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len.max(8));
    m.extend_from_slice(&task.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.resize(len.max(8), (task ^ seq) as u8);
    m
}

/// The (task, sequence number) of a [`tagged`] message, after checking its filler.
pub fn decode_tagged(m: &[u8]) -> (u32, u32) {
    let task = u32::from_le_bytes(m[..4].try_into().unwrap());
    let seq = u32::from_le_bytes(m[4..8].try_into().unwrap());
    assert!(
        m[8..].iter().all(|b| *b == (task ^ seq) as u8),
        "task {task} seq {seq}: corrupt"
    );
    (task, seq)
}

/// The sequence numbers of the messages of `task` among `got`, in order.
pub fn seqs_of(got: &[(u32, u32)], task: u32) -> Vec<u32> {
    got.iter()
        .filter(|(t, _)| *t == task)
        .map(|(_, s)| *s)
        .collect()
}

/// Two handles on `node`, A alone in group `ga` and B alone in `gb`, each with
/// `pending` messages of its own waiting unread in libcpg (A's [`tagged`] 5, B's 8;
/// 100 bytes), and the reactor past their readiness: the start of the tests of a read
/// of one handle nested in a read of the other.
pub async fn two_handles_with_pending(
    node: &Node,
    (ga, gb): (&GroupName, &GroupName),
    pending: u32,
) -> (AsyncHandle, AsyncHandle) {
    let mut a = connect(node);
    a.join(ga).await.unwrap();
    wait_members(&mut a, ga, 1).await;
    let mut b = connect(node);
    b.join(gb).await.unwrap();
    wait_members(&mut b, gb, 1).await;
    for seq in 0..pending {
        a.send(&tagged(5, seq, 100)).await.unwrap();
        b.send(&tagged(8, seq, 100)).await.unwrap();
    }
    wait_pending(&a);
    wait_pending(&b);
    // All of them, and the reactor has seen their readiness.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (a, b)
}

/// CPU time (user + system) of this process so far, all threads.
pub fn process_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer; RUSAGE_SELF covers all threads of the process.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs `start` on a current-thread runtime inside `node`'s namespace (on a thread
/// with a big stack), shuts that runtime down (dropping every task it spawned), then
/// runs `then` with what `start` returned on a second runtime: for what must end,
/// not hang, once the tasks behind it are gone.
pub fn after_runtime_shutdown<T, S, SF, A, AF>(node: &'static Node, start: S, then: A)
where
    T: Send + 'static,
    S: FnOnce() -> SF + Send + 'static,
    SF: Future<Output = T>,
    A: FnOnce(T) -> AF + Send + 'static,
    AF: Future<Output = ()>,
{
    let current = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build tokio runtime")
    };
    big_stack(move || {
        let first = current();
        let value = node.enter(|| first.block_on(start()));
        drop(first);
        current().block_on(then(value));
    });
}

/// Waits until `h`'s descriptor is readable (events wait in libcpg), without reading
/// them.
pub fn wait_pending(h: &AsyncHandle) {
    let mut fd = -1;
    // SAFETY: a live handle (borrowed) and a valid out pointer; libcpg only reports its
    // descriptor, which stays open while the handle lives.
    let rc = unsafe { cpg::sys::cpg_fd_get(h.connection().as_raw(), &mut fd) };
    assert_eq!(rc, cpg::sys::CS_OK, "cpg_fd_get");
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; poll only reads the
    // descriptor's state.
    let n = unsafe { libc::poll(&mut pfd, 1, WAIT.as_millis() as i32) };
    assert_eq!(n, 1, "no event pending within {WAIT:?}");
}

/// Sends through `send` (given each message's number) until the daemon's queue is
/// full: it keeps pushing back for 200 ms (a single `CS_ERR_TRY_AGAIN` can be the IPC
/// channel's own, gone a moment later). Returns how many messages it accepted. For a
/// daemon whose ring cannot move ([`Paused`] peer). Blocks the thread (for the 200 ms
/// and the pauses between attempts).
pub fn fill_queue(mut send: impl FnMut(u64) -> cpg::Result<()>) -> u64 {
    let mut accepted = 0u64;
    let mut pushing_back_since = None;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match send(accepted) {
            Ok(()) => {
                accepted += 1;
                pushing_back_since = None;
            }
            Err(e) if e.is_retryable() => {
                let since = *pushing_back_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= Duration::from_millis(200) {
                    return accepted;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("message {accepted}: {e}"),
        }
        assert!(
            accepted < 100_000 && std::time::Instant::now() < deadline,
            "the daemon never pushed back for good ({accepted} messages accepted)"
        );
    }
}
