//! An idle async listener costs (nearly) no CPU: the stream waits on the reactor, it
//! does not poll. Alone in its own test binary, because process CPU time counts every
//! thread and other tests would run in parallel.

mod tokio_common;

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_common::*;

/// A joined listener waits for events for 5 s with nothing arriving. The process
/// must use under 5 % of that in CPU time (a busy loop would use up to 100 %; the
/// check at the end shows that this measurement does see one). Afterwards the listener still
/// works: told to, it sends and receives its own message through the stream.
#[test]
fn an_idle_listener_uses_almost_no_cpu() {
    const IDLE: Duration = Duration::from_secs(5);
    run(Duration::from_secs(60), || async {
        let node = cpg_testkit::shared();
        let group = group("idle");
        let mut h = connect(node);
        h.join(&group).await.expect("join");
        wait_members(&mut h, &group, 1).await;

        let (poke, mut poked) = mpsc::channel::<()>(1);
        let listener = tokio::spawn(async move {
            let mut idle_events = Vec::new();
            loop {
                tokio::select! {
                    event = h.next_event() => idle_events.push(event),
                    _ = poked.recv() => break,
                }
            }
            h.send(b"still listening").await.expect("send");
            let got = collect(&mut h, 1).await;
            (idle_events, got)
        });

        // Let everything settle (the join's events, runtime start-up).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu_before = process_cpu();
        let started = Instant::now();
        tokio::time::sleep(IDLE).await;
        let cpu = process_cpu() - cpu_before;
        let wall = started.elapsed();
        let share = cpu.as_secs_f64() / wall.as_secs_f64();
        eprintln!(
            "idle listener: {cpu:?} CPU in {wall:.2?} ({:.2} % of one core)",
            share * 100.0
        );

        poke.send(()).await.expect("poke");
        let (idle_events, got) = tokio::time::timeout(WAIT, listener)
            .await
            .expect("listener did not answer")
            .expect("listener task");
        assert!(idle_events.is_empty(), "events while idle: {idle_events:?}");
        assert_eq!(got[0].1, b"still listening");
        assert!(
            share < 0.05,
            "an idle listener used {cpu:?} of CPU in {wall:?}: a busy loop?"
        );

        // The instrument: a task that spins for 1 s must measure far above the idle
        // listener, even on a shared machine where it gets only part of a core.
        let cpu_before = process_cpu();
        let started = Instant::now();
        let spin = tokio::spawn(async {
            let end = Instant::now() + Duration::from_secs(1);
            while Instant::now() < end {
                tokio::task::yield_now().await;
            }
        });
        spin.await.expect("spin");
        let spun = (process_cpu() - cpu_before).as_secs_f64() / started.elapsed().as_secs_f64();
        eprintln!(
            "busy loop for comparison: {:.1} % of one core",
            spun * 100.0
        );
        assert!(
            spun > 0.005 && spun > 10.0 * share,
            "a busy loop measured {:.2} % of a core against {:.2} % idle: this measurement \
             cannot tell them apart",
            spun * 100.0,
            share * 100.0
        );
    });
}
