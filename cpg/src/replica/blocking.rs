//! The blocking driver: [`Replica`], a [`Machine`] fed by a [`Group`] on a thread of
//! its own, with a client API that any thread may use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::group::{self, Group, GroupError, SendId, View};
use crate::layer::lock::{Guard, Lock};
use crate::layer::wait::wait_for;
use crate::name::GroupName;

use super::app::Replicated;
use super::builder::ReplicaBuilder;
use super::config::Config;
use super::error::ReplicaError;
use super::event::Event;
use super::machine::Machine;
use super::shared::{state_calls, Core, Sink};

/// Longest sleep of the driver thread when nothing is due.
const TICK: Duration = Duration::from_millis(20);

/// Resolves once with the state's version after the submitted operation was applied
/// here (in the agreed order), or why it was not.
#[derive(Debug)]
pub struct Ticket {
    seq: u64,
    rx: Receiver<Result<u64, ReplicaError>>,
}

impl Ticket {
    /// The operation's sequence number ([`super::OpInfo::seq`]).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Waits up to `timeout` for the outcome.
    pub fn wait(&self, timeout: Duration) -> Result<u64, ReplicaError> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ReplicaError::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ReplicaError::Closed),
        }
    }
}

struct Shared<A> {
    core: Lock<Core<A, Group>>,
    changed: Condvar,
    stop: AtomicBool,
}

impl<A> Shared<A> {
    /// Panics when this thread holds it already (see [`Lock`]).
    fn lock(&self) -> Guard<'_, Core<A, Group>> {
        self.core.lock()
    }
}

impl<A: Replicated + Send + 'static> ReplicaBuilder<A> {
    /// Joins the group (in the network namespace of the calling thread) and starts the
    /// driver thread.
    pub fn start(self) -> Result<Replica<A>, ReplicaError> {
        let group = Group::builder(self.name)
            .config(self.group.clone())
            .start()
            .map_err(ReplicaError::Join)?;
        let shared = Arc::new(Shared {
            core: Lock::new(Core::new(Machine::new(self.app, self.config), group)),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            let (name, config) = (self.name, self.group);
            std::thread::Builder::new()
                .name("cpg-replica".into())
                .spawn(move || run(&shared, name, config))
                .map_err(|_| ReplicaError::Closed)?
        };
        Ok(Replica {
            shared,
            thread: Some(thread),
        })
    }
}

/// One member of a replicated state: the protocol ([`Machine`]) around the
/// application's `A`, over a [`Group`], driven by a thread of its own.
///
/// See the [module documentation](super) for an example. All methods take `&self`.
/// Events queue up until read with [`next_event`](Self::next_event): read them.
///
/// Dropping it stops the driver thread and closes the connection; nothing is sent once
/// the drop has begun, and every [`Ticket`] resolves: [`ReplicaError::NotSent`] with
/// [`GroupError::Unknown`] if the daemon had accepted its operation (the others may
/// have applied it: do not submit it again blindly), [`ReplicaError::Closed`] (or
/// `NotSent` with the group layer's reason) if it was never sent.
pub struct Replica<A> {
    shared: Arc<Shared<A>>,
    thread: Option<JoinHandle<()>>,
}

impl<A> std::fmt::Debug for Replica<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").finish_non_exhaustive()
    }
}

impl<A: Replicated + Send + 'static> Replica<A> {
    /// A builder for a member of `name` around `app`, with default settings.
    pub fn builder(name: GroupName, app: A) -> ReplicaBuilder<A> {
        ReplicaBuilder {
            name,
            app,
            config: Config::default(),
            group: group::Config::default(),
        }
    }

    /// Joins `name` around `app` with default settings.
    pub fn start(name: GroupName, app: A) -> Result<Replica<A>, ReplicaError> {
        Replica::builder(name, app).start()
    }

    /// Submits an operation; the [`Ticket`] resolves when it is applied here, in the
    /// agreed order (every member of the view applies it at the same point).
    pub fn submit(&self, op: impl Into<Vec<u8>>) -> Result<Ticket, ReplicaError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let resolve = Box::new(move |r| {
            let _ = tx.try_send(r);
        });
        let seq = self.shared.lock().submit(op.into(), resolve)?;
        Ok(Ticket { seq, rx })
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        let shared = &self.shared;
        wait_for(shared.lock(), &shared.changed, timeout, Core::take_event).flatten()
    }

    /// Waits up to `timeout` until the view's members are in sync
    /// ([`Phase::Ready`](super::Phase::Ready)) and `check` holds for the view; returns
    /// the view. `check` runs under the replica's lock, as `read`'s closure does.
    pub fn wait_ready(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&View) -> bool,
    ) -> Option<View> {
        let shared = &self.shared;
        wait_for(shared.lock(), &shared.changed, timeout, |core| {
            core.ready_view(&mut check)
        })
        .flatten()
    }

    state_calls!();

    /// Leaves the group once what is queued is sent, waiting up to `timeout`.
    pub fn leave(&self, timeout: Duration) -> Result<(), ReplicaError> {
        let group = self.shared.lock().group.clone();
        match group {
            Some(g) => g.leave(timeout).map_err(|e| match e {
                GroupError::Timeout => ReplicaError::Timeout,
                _ => ReplicaError::Closed,
            }),
            None => Err(ReplicaError::Closed),
        }
    }
}

impl<A> Drop for Replica<A> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Nothing more is sent from here on; the driver thread hands the group layer's
        // outcome of every operation to the tickets as it ends.
        let group = self.shared.lock().group.clone();
        if let Some(group) = group {
            group.stop_now();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The group (and its connection) goes with the last reference.
        let group = self.shared.lock().group.take();
        drop(group);
    }
}

/// Ends the replica when the driver thread ends, however it ends: also when the
/// application's [`Replicated`] code panics on it, so that no ticket or waiter waits
/// forever for a thread that is gone.
struct EndOnDrop<'a, A: Replicated>(&'a Shared<A>);

impl<A: Replicated> Drop for EndOnDrop<'_, A> {
    fn drop(&mut self) {
        self.0.lock().shut_down();
        self.0.changed.notify_all();
    }
}

/// The driver thread: group events into the machine, the machine's sends out.
fn run<A: Replicated>(shared: &Arc<Shared<A>>, name: GroupName, config: group::Config) {
    let _end = EndOnDrop(shared);
    while !shared.stop.load(Ordering::SeqCst) {
        let (group, wait) = {
            let core = shared.lock();
            let now = Instant::now();
            let wait = core
                .machine
                .poll_timeout()
                .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
            (core.group.clone(), wait)
        };
        let Some(group) = group else { break };
        let event = group.next_event(wait);
        let mut core = shared.lock();
        if event.is_none() && group.end().is_some() {
            core.end();
            shared.changed.notify_all();
            return;
        }
        core.handle(event);
        shared.changed.notify_all();
        if core.ended {
            return;
        }
        if std::mem::take(&mut core.rejoin) {
            let old = core.retire_group();
            core.machine.handle_disconnected();
            drop(core);
            drop(group);
            drop(old);
            let new = rejoin_group(shared, name, &config);
            let mut core = shared.lock();
            match new {
                Some(g) => core.group = Some(Arc::new(g)),
                None => {
                    core.end();
                    shared.changed.notify_all();
                    return;
                }
            }
        }
    }
}

/// Joins again after the machine gave up on a view, retrying for a minute.
fn rejoin_group<A>(shared: &Shared<A>, name: GroupName, config: &group::Config) -> Option<Group> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(100);
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        if let Ok(g) = Group::builder(name).config(config.clone()).start() {
            return Some(g);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    None
}

/// The blocking driver's group, where its replica's messages go.
impl Sink for Group {
    fn queued(&self) -> usize {
        self.stats().queued
    }
    fn send(&self, bytes: Vec<u8>, confirm: bool) -> Result<SendId, GroupError> {
        if confirm {
            self.send_confirmed(bytes).map(|r| r.id())
        } else {
            Group::send(self, bytes)
        }
    }
    fn stop(&self) {
        self.stop_now();
    }
    fn try_next_event(&self) -> Option<group::Event> {
        Group::try_next_event(self)
    }
}
