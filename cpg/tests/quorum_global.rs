//! The quorum handles' share of process-global state: libquorum's handle table (its
//! own cap, apart from CPG's) and `fork`. Each test owns process-wide state, so they
//! run one at a time ([`serial`]).

mod support;

use cpg::quorum::{Quorum, QuorumCallbacks, Track};
use cpg::{Error, Handle, Service, MAX_HANDLES};
use support::log::Log;
use support::quorum::recording_quorum;
use support::{big_stack, serial, NoCallbacks};

struct Nothing;

impl QuorumCallbacks for Nothing {}

#[test]
fn quorum_handles_stop_at_their_own_cap() {
    let _serial = serial();
    let node = cpg_testkit::shared();
    big_stack(move || {
        node.enter(|| {
            let mut open: Vec<Quorum> = (0..MAX_HANDLES)
                .map(|i| Quorum::new(Nothing).unwrap_or_else(|e| panic!("handle {i}: {e}")))
                .collect();
            let err = Quorum::new(Nothing).unwrap_err();
            assert_eq!(
                err,
                Error::TooManyServiceHandles {
                    service: Service::Quorum,
                    max: MAX_HANDLES
                }
            );
            assert!(err.to_string().contains("libquorum"), "{err}");
            // libcpg's table is another: CPG handles are counted apart.
            let cpg = Handle::new(NoCallbacks).expect("a CPG handle beside 32 quorum handles");
            // Closing one makes room, and every open handle still answers.
            open.pop().unwrap().close().unwrap();
            open.push(Quorum::new(Nothing).expect("room after a close"));
            for q in &open {
                assert_eq!(q.is_quorate(), Ok(true));
            }
            drop(open);
            drop(cpg);
            // All slots are back.
            let again: Vec<Quorum> = (0..MAX_HANDLES)
                .map(|i| Quorum::new(Nothing).unwrap_or_else(|e| panic!("again {i}: {e}")))
                .collect();
            drop(again);
        });
    });
}

#[test]
fn a_quorum_handle_inherited_through_fork_refuses_every_call_and_spares_the_parent() {
    let _serial = serial();
    let node = cpg_testkit::shared();
    big_stack(move || {
        node.enter(|| {
            let log = Log::new("parent");
            let q = recording_quorum(&log).unwrap();
            q.track_start(Track::CHANGES).unwrap();
            let mut fds = [0; 2];
            // SAFETY: valid array of two descriptors.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            let (read_fd, write_fd) = (fds[0], fds[1]);
            // SAFETY: the child only calls this crate's refusal paths (atomic loads, no
            // locks) and async-signal-safe libc functions, then `_exit`s without
            // running the parent's destructors.
            let child = unsafe { libc::fork() };
            assert!(child >= 0);
            if child == 0 {
                let q = q;
                let results = [
                    q.is_quorate() == Err(Error::Forked),
                    q.dispatch(cpg::DispatchMode::All) == Err(Error::Forked),
                    q.track_stop() == Err(Error::Forked),
                    q.track_start(Track::CURRENT) == Err(Error::Forked),
                    q.close() == Err(Error::Forked),
                ];
                let report: Vec<u8> = results.iter().map(|ok| u8::from(*ok)).collect();
                // SAFETY: a valid buffer of the given length; then the child ends at
                // once.
                unsafe {
                    libc::write(write_fd, report.as_ptr().cast(), report.len());
                    libc::_exit(0);
                }
            }
            // SAFETY: closes the parent's copy of the write end.
            unsafe { libc::close(write_fd) };
            let mut report = [9u8; 5];
            // SAFETY: valid buffer; the child writes 5 bytes and exits.
            let n = unsafe { libc::read(read_fd, report.as_mut_ptr().cast(), report.len()) };
            let mut status = 0;
            // SAFETY: waits for the child forked above, closes the read end.
            unsafe {
                libc::waitpid(child, &mut status, 0);
                libc::close(read_fd);
            }
            assert_eq!(n, 5);
            assert_eq!(
                report, [1; 5],
                "is_quorate, dispatch, track_stop, track_start, close"
            );
            // The parent's session is intact: the state queued before the fork is
            // there, and the connection still answers and tracks.
            let deadline = std::time::Instant::now() + support::WAIT;
            while log.len() < 2 {
                assert!(std::time::Instant::now() < deadline, "{:?}", log.events());
                q.dispatch_timeout(std::time::Duration::from_millis(100))
                    .unwrap();
            }
            assert_eq!(q.is_quorate(), Ok(true));
            q.track_stop().unwrap();
            q.close().unwrap();
        });
    });
}
