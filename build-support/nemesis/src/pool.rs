//! The client processes of a run: one slot per client (a node and an API), each
//! holding its current incarnation. A killed or lost client is replaced by a new
//! incarnation (a new process, a new pid, a new history file).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cpg_testkit::Cluster;

use crate::history::{Api, Member};

/// What the coordinator needs to start clients.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Directory for history files and client stderr logs.
    pub dir: PathBuf,
    /// Group name.
    pub group: String,
    /// Messages per second per client.
    pub rate: f64,
    /// Messages per burst of the group-layer and replica clients.
    pub burst: u32,
    /// Largest message body.
    pub max_size: usize,
    /// Run seed (message sizes).
    pub seed: u64,
}

/// One running client process.
#[derive(Debug)]
pub struct Incarnation {
    /// Incarnation number.
    pub inc: u32,
    /// Who CPG says it is.
    pub member: Member,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Whether it is SIGSTOPped.
    pub paused: bool,
    /// Set when the nemesis killed it (or its daemon).
    pub doomed: bool,
}

/// A client slot: a node (index) and an API.
#[derive(Debug)]
pub struct Slot {
    /// Node index in the cluster.
    pub node: usize,
    /// API the clients of this slot use.
    pub api: Api,
    /// The current incarnation, if one runs.
    pub current: Option<Incarnation>,
}

/// How an incarnation ended, as the coordinator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Incarnation number.
    pub inc: u32,
    /// Slot index.
    pub slot: usize,
    /// Exit code, or the signal that ended it.
    pub how: String,
    /// Whether the nemesis caused it (client kill, daemon kill).
    pub expected: bool,
}

/// All client slots, the latest view each incarnation reported, and the log of ended
/// incarnations.
pub struct Pool {
    work: Workload,
    exe: PathBuf,
    /// The slots.
    pub slots: Vec<Slot>,
    next_inc: u32,
    lines: mpsc::Receiver<(u32, String)>,
    tx: mpsc::Sender<(u32, String)>,
    views: HashMap<u32, Vec<Member>>,
    /// Incarnations that have ended.
    pub ended: Vec<Ended>,
}

impl Pool {
    /// A pool with `per_node` slots on each of `nodes` nodes (odd slots use the async
    /// API), and `group_per_node` slots of group-layer clients and `replica_per_node`
    /// of replica clients on each node. Nothing is started yet.
    pub fn new(
        work: Workload,
        nodes: usize,
        per_node: usize,
        group_per_node: usize,
        replica_per_node: usize,
    ) -> Result<Pool, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let (tx, lines) = mpsc::channel();
        let mut slots = Vec::new();
        for node in 0..nodes {
            for k in 0..per_node {
                slots.push(Slot {
                    node,
                    api: if k % 2 == 1 {
                        Api::Async
                    } else {
                        Api::Blocking
                    },
                    current: None,
                });
            }
            for _ in 0..group_per_node {
                slots.push(Slot {
                    node,
                    api: Api::Group,
                    current: None,
                });
            }
            for _ in 0..replica_per_node {
                slots.push(Slot {
                    node,
                    api: Api::Replica,
                    current: None,
                });
            }
        }
        Ok(Pool {
            work,
            exe,
            slots,
            next_inc: 1,
            lines,
            tx,
            views: HashMap::new(),
            ended: Vec::new(),
        })
    }

    /// Incarnations started so far.
    pub fn incarnations(&self) -> u32 {
        self.next_inc - 1
    }

    /// The history file of incarnation `inc`.
    pub fn history_path(&self, inc: u32) -> PathBuf {
        self.work.dir.join(format!("client-{inc:04}.jsonl"))
    }

    fn stderr_path(dir: &Path, inc: u32) -> PathBuf {
        dir.join(format!("client-{inc:04}.stderr"))
    }

    /// The tail of incarnation `inc`'s stderr.
    pub fn stderr_tail(&self, inc: u32) -> String {
        let text =
            std::fs::read_to_string(Self::stderr_path(&self.work.dir, inc)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Starts a new incarnation in slot `s` (which must be empty).
    pub fn spawn(&mut self, cluster: &Cluster, s: usize) -> Result<(), String> {
        let inc = self.next_inc;
        self.next_inc += 1;
        let slot = &self.slots[s];
        let node = cluster.node(slot.node);
        let stderr = std::fs::File::create(Self::stderr_path(&self.work.dir, inc))
            .map_err(|e| format!("{}: {e}", self.work.dir.display()))?;
        let mut cmd = node.command(&self.exe);
        cmd.arg("client")
            .arg("--history")
            .arg(self.history_path(inc))
            .args(["--group", &Self::group_of(&self.work.group, slot.api)])
            .args(["--rate", &self.work.rate.to_string()])
            .args(["--burst", &self.work.burst.to_string()])
            .args(["--api", slot.api.name()])
            .args(["--inc", &inc.to_string()])
            .args(["--max-size", &self.work.max_size.to_string()])
            .args(["--seed", &self.work.seed.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: runs in the forked child before exec and only calls prctl, which is
        // async-signal-safe. The client dies with this (main) thread's process even if
        // it is SIGSTOPped at the time, since SIGKILL ends stopped processes too.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start a client: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name(format!("nemesis-client-{inc}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((inc, line)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start a reader thread: {e}"))?;
        let member = (node.nodeid(), child.id());
        self.slots[s].current = Some(Incarnation {
            inc,
            member,
            child,
            stdin,
            paused: false,
            doomed: false,
        });
        Ok(())
    }

    /// Reads the views the clients printed so far.
    fn collect_views(&mut self) {
        while let Ok((inc, line)) = self.lines.try_recv() {
            if let Some(rest) = line.strip_prefix("view ") {
                let members = rest
                    .split(',')
                    .filter_map(|m| {
                        let (n, p) = m.split_once(':')?;
                        Some((n.parse().ok()?, p.parse().ok()?))
                    })
                    .collect();
                self.views.insert(inc, members);
            }
        }
    }

    /// The CPG group the clients of `api` join: the group-layer clients and the
    /// replica clients one of their own each (every message of theirs carries the
    /// layer's header).
    fn group_of(group: &str, api: Api) -> String {
        match api {
            Api::Blocking | Api::Async => group.to_string(),
            Api::Group => format!("{group}-group"),
            Api::Replica => format!("{group}-replica"),
        }
    }

    /// Clients of `a` and `b` share a CPG group.
    fn same_group(a: Api, b: Api) -> bool {
        Self::group_of("", a) == Self::group_of("", b)
    }

    /// Members of the running incarnations, sorted.
    pub fn live_members(&self) -> Vec<Member> {
        self.live_of(|_| true)
    }

    fn live_of(&self, keep: impl Fn(Api) -> bool) -> Vec<Member> {
        let mut m: Vec<Member> = self
            .slots
            .iter()
            .filter(|s| keep(s.api))
            .filter_map(|s| s.current.as_ref().map(|c| c.member))
            .collect();
        m.sort_unstable();
        m
    }

    /// Whether every running incarnation reported, as its latest view, exactly the
    /// running incarnations of its CPG group.
    pub fn one_view(&mut self) -> bool {
        self.collect_views();
        !self.live_members().is_empty()
            && self.slots.iter().all(|s| {
                s.current.as_ref().is_none_or(|c| {
                    let live = self.live_of(|a| Self::same_group(a, s.api));
                    self.views.get(&c.inc) == Some(&live)
                })
            })
    }

    /// Reaps incarnations that exited, recording how they ended; returns their slots.
    pub fn reap(&mut self) -> Vec<usize> {
        let mut freed = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(c) = slot.current.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = c.child.try_wait() {
                let how = match (
                    status.code(),
                    std::os::unix::process::ExitStatusExt::signal(&status),
                ) {
                    (Some(code), _) => format!("exit {code}"),
                    (None, Some(sig)) => format!("signal {sig}"),
                    _ => status.to_string(),
                };
                let expected = c.doomed;
                self.ended.push(Ended {
                    inc: c.inc,
                    slot: i,
                    how,
                    expected,
                });
                self.views.remove(&c.inc);
                slot.current = None;
                freed.push(i);
            }
        }
        freed
    }

    /// Marks the incarnations on node index `node` as doomed (their daemon dies); the
    /// group-layer and replica clients are not: they reconnect.
    pub fn doom_node(&mut self, node: usize) {
        for s in self
            .slots
            .iter_mut()
            .filter(|s| s.node == node && matches!(s.api, Api::Blocking | Api::Async))
        {
            if let Some(c) = s.current.as_mut() {
                c.doomed = true;
            }
        }
    }

    /// Sends `sig` to slot `s`'s incarnation (our unreaped child).
    pub fn signal(&mut self, s: usize, sig: libc::c_int) -> bool {
        let Some(c) = self.slots[s].current.as_mut() else {
            return false;
        };
        if !matches!(c.child.try_wait(), Ok(None)) {
            return false;
        }
        let Ok(pid) = libc::pid_t::try_from(c.child.id()) else {
            return false;
        };
        match sig {
            libc::SIGSTOP => c.paused = true,
            libc::SIGCONT => c.paused = false,
            libc::SIGKILL => c.doomed = true,
            _ => {}
        }
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's, not
        // yet reaped (try_wait said it runs), so it names that process.
        unsafe { libc::kill(pid, sig) == 0 }
    }

    /// Continues every paused incarnation.
    pub fn resume_all(&mut self) {
        for s in 0..self.slots.len() {
            if self.slots[s].current.as_ref().is_some_and(|c| c.paused) {
                self.signal(s, libc::SIGCONT);
            }
        }
    }

    /// Tells every running incarnation to stop (drain, close, exit) and waits up to
    /// `timeout` for all to exit; those still running are killed. Returns the
    /// incarnations that did not exit with 0, with how they ended.
    pub fn stop_all(&mut self, timeout: Duration) -> Vec<(u32, String)> {
        let before = self.ended.len();
        self.resume_all();
        for slot in &mut self.slots {
            if let Some(c) = slot.current.as_mut() {
                if let Some(stdin) = c.stdin.as_mut() {
                    let _ = writeln!(stdin, "stop").and_then(|()| stdin.flush());
                }
            }
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.slots.iter().any(|s| s.current.is_some()) {
            self.reap();
            std::thread::sleep(Duration::from_millis(50));
        }
        for s in 0..self.slots.len() {
            if self.slots[s].current.is_some() {
                self.signal(s, libc::SIGKILL);
                if let Some(c) = self.slots[s].current.as_mut() {
                    let _ = c.child.wait();
                }
            }
        }
        // Reaps the killed ones (wait above reaped them; try_wait reports the status).
        for slot in &mut self.slots {
            if let Some(c) = slot.current.take() {
                self.ended.push(Ended {
                    inc: c.inc,
                    slot: 0,
                    how: "killed: did not stop in time".into(),
                    expected: false,
                });
            }
        }
        self.ended[before..]
            .iter()
            .filter(|e| e.how != "exit 0")
            .map(|e| (e.inc, e.how.clone()))
            .collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for s in 0..self.slots.len() {
            self.signal(s, libc::SIGCONT);
            self.signal(s, libc::SIGKILL);
            if let Some(c) = self.slots[s].current.as_mut() {
                let _ = c.child.wait();
            }
        }
    }
}
