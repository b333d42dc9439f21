//! The nemesis: a seeded random schedule of faults, each injected, held for a while,
//! and undone.

use std::fmt;
use std::time::Duration;

use crate::rng::Rng;

/// One fault, with everything needed to inject and undo it. Node and slot numbers are
/// indices (node index `i` has node id `i + 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL a node's daemon, wait, start it again (its clients lose it and are
    /// replaced).
    KillDaemon {
        /// Node index.
        node: usize,
        /// How long it stays down.
        down: Duration,
    },
    /// SIGSTOP a node's daemon, then SIGCONT.
    PauseDaemon {
        /// Node index.
        node: usize,
        /// How long it is paused (shorter or longer than the token timeout).
        pause: Duration,
    },
    /// Cut a node off the others (its bridge port down), then heal.
    Partition {
        /// Node index.
        node: usize,
        /// How long.
        hold: Duration,
    },
    /// Node `on` drops every packet from node `from` (one way), then stops.
    OneWay {
        /// The node that drops.
        on: usize,
        /// The node whose packets are dropped.
        from: usize,
        /// How long.
        hold: Duration,
    },
    /// Random loss on a node's link, both directions.
    Lossy {
        /// Node index.
        node: usize,
        /// Percent of packets dropped.
        percent: u32,
        /// How long.
        hold: Duration,
    },
    /// SIGKILL a client and start a new one in its slot.
    KillClient {
        /// Slot index.
        slot: usize,
    },
    /// SIGSTOP a client, then SIGCONT.
    PauseClient {
        /// Slot index.
        slot: usize,
        /// How long.
        pause: Duration,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillDaemon { node, down } => {
                write!(
                    f,
                    "kill node {}'s daemon (SIGKILL), restart after {down:?}",
                    node + 1
                )
            }
            Fault::PauseDaemon { node, pause } => {
                write!(
                    f,
                    "pause node {}'s daemon (SIGSTOP) for {pause:?}",
                    node + 1
                )
            }
            Fault::Partition { node, hold } => {
                write!(f, "partition node {} off for {hold:?}", node + 1)
            }
            Fault::OneWay { on, from, hold } => write!(
                f,
                "node {} drops all packets from node {} (one way) for {hold:?}",
                on + 1,
                from + 1
            ),
            Fault::Lossy {
                node,
                percent,
                hold,
            } => write!(
                f,
                "{percent} % packet loss on node {}'s link for {hold:?}",
                node + 1
            ),
            Fault::KillClient { slot } => {
                write!(f, "kill client slot {slot} (SIGKILL), start a new one")
            }
            Fault::PauseClient { slot, pause } => {
                write!(f, "pause client slot {slot} (SIGSTOP) for {pause:?}")
            }
        }
    }
}

fn ms(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.range(lo, hi))
}

/// The names of the fault kinds, for `--only`, in the order of [`WEIGHTS`]'s groups.
pub const KINDS: [&str; 7] = [
    "kill-daemon",
    "pause-daemon",
    "partition",
    "one-way",
    "lossy",
    "kill-client",
    "pause-client",
];

/// Relative frequency of each draw: kill daemon, short daemon pause, long daemon pause,
/// partition, one-way loss, random loss, kill client, pause client.
const WEIGHTS: [u64; 8] = [2, 2, 2, 2, 2, 2, 1, 2];

/// Index into [`KINDS`] of each entry of [`WEIGHTS`].
const KIND_OF_DRAW: [usize; 8] = [0, 1, 1, 2, 3, 4, 5, 6];

/// Parses a comma-separated list of [`KINDS`] into a mask (`None`: unknown name).
pub fn parse_kinds(list: &str) -> Option<[bool; 7]> {
    let mut mask = [false; 7];
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        mask[KINDS.iter().position(|k| *k == name)?] = true;
    }
    mask.iter().any(|&m| m).then_some(mask)
}

/// Draws the next fault for a cluster of `nodes` nodes with `slots` client slots and
/// token timeout `token_ms`, among the kinds `allowed` (see [`KINDS`]): every kind
/// about equally often, daemon pauses half shorter (0.2–0.7 token) and half longer
/// (1.5–4 tokens) than the token timeout.
pub fn next(
    rng: &mut Rng,
    nodes: usize,
    slots: usize,
    token_ms: u64,
    allowed: &[bool; 7],
) -> Fault {
    let node = rng.below(nodes as u64) as usize;
    let mut weights = WEIGHTS;
    for (w, kind) in weights.iter_mut().zip(KIND_OF_DRAW) {
        if !allowed[kind] || (kind == 3 && nodes < 2) {
            *w = 0;
        }
    }
    if weights.iter().all(|&w| w == 0) {
        weights[0] = 1;
    }
    match rng.weighted(&weights) {
        0 => Fault::KillDaemon {
            node,
            down: ms(rng, 500, 3000),
        },
        1 => Fault::PauseDaemon {
            node,
            pause: ms(rng, token_ms / 5, token_ms * 7 / 10),
        },
        2 => Fault::PauseDaemon {
            node,
            pause: ms(rng, token_ms * 3 / 2, token_ms * 4),
        },
        3 => Fault::Partition {
            node,
            hold: ms(rng, 1500, 5000),
        },
        4 => {
            let from = (node + 1 + rng.below(nodes.saturating_sub(1) as u64) as usize) % nodes;
            Fault::OneWay {
                on: node,
                from,
                hold: ms(rng, 1500, 5000),
            }
        }
        5 => Fault::Lossy {
            node,
            percent: rng.range(5, 40) as u32,
            hold: ms(rng, 2000, 6000),
        },
        6 => Fault::KillClient {
            slot: rng.below(slots as u64) as usize,
        },
        _ => Fault::PauseClient {
            slot: rng.below(slots as u64) as usize,
            pause: ms(rng, 300, 5000),
        },
    }
}

/// One step of a scripted schedule (`--schedule`): a fault, and whether it follows
/// the previous one without the cluster settling in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The fault.
    pub fault: Fault,
    /// `Some(gap)`: inject it `gap` after the previous step was undone, without waiting
    /// for the cluster to settle or the usual quiet time; `None`: settle first.
    pub gap: Option<Duration>,
}

/// The `--schedule` syntax, for messages.
pub const SCHEDULE_SYNTAX: &str = "comma-separated steps, each one of kill-daemon:NODE:MS, \
     pause-daemon:NODE:MS, partition:NODE:MS, one-way:ON:FROM:MS, lossy:NODE:PERCENT:MS, \
     kill-client:SLOT, pause-client:SLOT:MS (nodes numbered from 1, slots from 0), \
     optionally followed by @GAP_MS: inject GAP_MS after the previous step was undone, \
     without waiting for the cluster to settle";

/// Parses a `--schedule` (see [`SCHEDULE_SYNTAX`]) for a cluster of `nodes` nodes and
/// `slots` client slots.
pub fn parse_schedule(spec: &str, nodes: usize, slots: usize) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = |why: &str| format!("--schedule step {item:?}: {why}");
        let (body, gap) = match item.split_once('@') {
            Some((b, g)) => (
                b,
                Some(Duration::from_millis(
                    g.trim()
                        .parse()
                        .map_err(|_| bad("gap is not milliseconds"))?,
                )),
            ),
            None => (item, None),
        };
        let mut parts = body.split(':').map(str::trim);
        let kind = parts.next().unwrap_or_default();
        let nums: Vec<u64> = parts
            .map(|p| {
                p.parse()
                    .map_err(|_| bad("expected numbers after the kind"))
            })
            .collect::<Result<_, _>>()?;
        let want = match kind {
            "kill-client" => 1,
            "one-way" | "lossy" => 3,
            _ => 2,
        };
        if nums.len() != want {
            return Err(bad(&format!("{kind} takes {want} number(s)")));
        }
        let node = |n: u64| {
            (1..=nodes as u64)
                .contains(&n)
                .then(|| n as usize - 1)
                .ok_or_else(|| bad(&format!("no node {n} (nodes are 1..={nodes})")))
        };
        let slot = |n: u64| {
            (n < slots as u64)
                .then_some(n as usize)
                .ok_or_else(|| bad(&format!("no slot {n} (slots are 0..{slots})")))
        };
        let ms = |n: u64| Duration::from_millis(n);
        let fault = match kind {
            "kill-daemon" => Fault::KillDaemon {
                node: node(nums[0])?,
                down: ms(nums[1]),
            },
            "pause-daemon" => Fault::PauseDaemon {
                node: node(nums[0])?,
                pause: ms(nums[1]),
            },
            "partition" => Fault::Partition {
                node: node(nums[0])?,
                hold: ms(nums[1]),
            },
            "one-way" if nums[0] != nums[1] => Fault::OneWay {
                on: node(nums[0])?,
                from: node(nums[1])?,
                hold: ms(nums[2]),
            },
            "one-way" => return Err(bad("a node cannot drop its own packets")),
            "lossy" if nums[1] <= 100 => Fault::Lossy {
                node: node(nums[0])?,
                percent: nums[1] as u32,
                hold: ms(nums[2]),
            },
            "lossy" => return Err(bad("loss is a percentage")),
            "kill-client" => Fault::KillClient {
                slot: slot(nums[0])?,
            },
            "pause-client" => Fault::PauseClient {
                slot: slot(nums[0])?,
                pause: ms(nums[1]),
            },
            _ => return Err(bad(&format!("unknown kind; expected {SCHEDULE_SYNTAX}"))),
        };
        steps.push(Step { fault, gap });
    }
    if steps.is_empty() {
        return Err(format!("--schedule {spec:?}: no step"));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::{next, parse_kinds, parse_schedule, Fault, Step};
    use crate::rng::Rng;
    use std::time::Duration;

    #[test]
    fn the_schedule_is_reproducible_and_covers_every_kind() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..200)
                .map(|_| next(&mut rng, 3, 9, 1000, &[true; 7]))
                .collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42));
        assert_ne!(a, draw(43));
        let kinds: std::collections::HashSet<_> = a.iter().map(std::mem::discriminant).collect();
        assert_eq!(kinds.len(), 7);
        for f in &a {
            if let Fault::OneWay { on, from, .. } = f {
                assert_ne!(on, from);
            }
        }
        assert!(a
            .iter()
            .any(|f| matches!(f, Fault::PauseDaemon { pause, .. } if pause.as_millis() < 1000)));
        assert!(a
            .iter()
            .any(|f| matches!(f, Fault::PauseDaemon { pause, .. } if pause.as_millis() > 1000)));
    }

    #[test]
    fn only_the_chosen_kinds_are_drawn() {
        let only = parse_kinds("lossy,one-way").unwrap();
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            let f = next(&mut rng, 3, 9, 1000, &only);
            assert!(
                matches!(f, Fault::Lossy { .. } | Fault::OneWay { .. }),
                "{f:?}"
            );
        }
        assert_eq!(parse_kinds("lossy,nonsense"), None);
        assert_eq!(parse_kinds(""), None);
    }

    #[test]
    fn a_schedule_parses_into_steps_with_gaps() {
        let steps = parse_schedule("pause-daemon:1:540, kill-daemon:2:633@700", 3, 15).unwrap();
        assert_eq!(
            steps,
            [
                Step {
                    fault: Fault::PauseDaemon {
                        node: 0,
                        pause: Duration::from_millis(540)
                    },
                    gap: None
                },
                Step {
                    fault: Fault::KillDaemon {
                        node: 1,
                        down: Duration::from_millis(633)
                    },
                    gap: Some(Duration::from_millis(700))
                }
            ]
        );
        let all = "one-way:1:3:2000,lossy:2:20:3000,partition:3:1500,kill-client:14,\
                   pause-client:0:300";
        assert_eq!(parse_schedule(all, 3, 15).unwrap().len(), 5);
        for bad in [
            "",
            "pause-daemon:4:500",
            "pause-daemon:0:500",
            "pause-daemon:1",
            "one-way:2:2:100",
            "lossy:1:101:100",
            "kill-client:15",
            "reboot:1:100",
            "pause-daemon:1:500@soon",
        ] {
            assert!(parse_schedule(bad, 3, 15).is_err(), "{bad:?} accepted");
        }
    }
}
