//! Fault plans drawn from a seed, and the pieces that carry them out inside a run.
//!
//! A [`FaultPlan`] is a list of [`Fault`]s, printed at the start of a run so a failing run can
//! be replayed from its seed and read by a person. [`FaultPlan::from_seed`] draws one;
//! [`FaultPlan::shrink`] removes faults from a failing plan while it keeps failing.
//!
//! - **Subtask faults** reach the runtime through its [`FaultInjector`] hook: the subtask fails
//!   before handling a chosen input, as a panic in its operator would.
//! - **Storage faults** reach it through a checkpoint store provider that wraps the standard
//!   stores ([`FaultyStores`]): a write that fails, or a write whose bytes are torn or corrupted
//!   (reported as the read-back check of directory storage reports it), for one checkpoint.
//! - **A slow disk** reaches it through the same [`FaultInjector`]: each checkpoint file write
//!   waits first, in virtual time.
//! - **Clock skew** and **whole-process crashes** are carried out by the simulation itself (the
//!   node's clock, the runtime's lifetime): see [`crate::engine`].
//!
//! [`FaultKind`] names the kinds for the command line; [`FaultPlan::spec`] and
//! [`FaultPlan::parse_spec`] write and read a plan for `eichhorn-sim run --plan`.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use eichhorn::checkpoint::storage::{
    CheckpointFolder, CheckpointMetadata, CheckpointStore, CheckpointStoreProvider, FileMetadata,
    StandardCheckpointStores, StorageError,
};
use eichhorn::checkpoint::{CheckpointId, JobId};
use eichhorn::runtime::{FaultInjector, InjectedFault, SubtaskInput};

/// One fault of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Subtask `slot % subtasks` fails in attempt `attempt` before its first input (a batch, a
    /// source poll or a checkpoint trigger) at or after `at_ms` of virtual time.
    SubtaskPanic {
        /// Which subtask (modulo the job's count).
        slot: u32,
        /// In which attempt.
        attempt: u32,
        /// From when (ms of virtual time since the run started).
        at_ms: u64,
    },
    /// Writing a file of checkpoint `checkpoint` fails.
    StorageWriteError {
        /// The checkpoint id.
        checkpoint: u64,
    },
    /// A file of checkpoint `checkpoint` is written torn: only its first half lands.
    TornWrite {
        /// The checkpoint id.
        checkpoint: u64,
    },
    /// A file of checkpoint `checkpoint` is written with one byte flipped.
    CorruptWrite {
        /// The checkpoint id.
        checkpoint: u64,
    },
    /// Before `per_mille` of their inputs, chosen by a generator seeded with `seed`, subtasks
    /// stall for 1 to `max_ms` ms of virtual time: a pause or a slow disk, which makes messages
    /// interleave in ways a smooth run never shows.
    Stalls {
        /// The generator's seed.
        seed: u64,
        /// Inputs stalled per thousand.
        per_mille: u32,
        /// The longest stall.
        max_ms: u32,
    },
    /// The whole process crashes `at_ms` after its run started: every subtask, the JobManager
    /// and the TaskManager are gone at once, with nothing cleaned up. The job then starts
    /// again as a user would restart it: a new run restoring from the crashed run's latest
    /// completed checkpoint (or from scratch if it has none). The exactly-once sink's
    /// committed rows survive (they are the outside world).
    Crash {
        /// When, in ms of virtual time since the crashing run started.
        at_ms: u64,
    },
    /// Every checkpoint file write takes 1 to `max_ms` ms of virtual time first (chosen by a
    /// generator seeded with `seed`): a slow disk behind the checkpoint writer.
    SlowDisk {
        /// The generator's seed.
        seed: u64,
        /// The slowest write.
        max_ms: u32,
    },
    /// The node's processing-time clock is `offset_ms` ahead of virtual time and runs
    /// `drift_per_mille` per thousand fast (it stays monotone). On several nodes each node
    /// takes its own share of it (the JobManager none), so the nodes' clocks disagree.
    ClockSkew {
        /// How far ahead the clock starts.
        offset_ms: u64,
        /// How much faster it runs, per thousand.
        drift_per_mille: u32,
    },
    /// With several nodes: TaskManager node `node % nodes` (counting the nodes alive at the
    /// time, in the order they joined) is killed `at_ms` after the run started, as `kill -9`
    /// would: its subtasks, its checkpoint writer and its network endpoint are gone at once,
    /// nothing flushed, nothing said. A replacement TaskManager joins at once on a new address.
    NodeCrash {
        /// Which node (modulo the TaskManagers alive).
        node: u32,
        /// When, in ms of virtual time since the run started.
        at_ms: u64,
    },
    /// With several nodes: TaskManager node `node % nodes` cannot reach any other node (the
    /// JobManager included) from `at_ms` for `heal_ms`; then every link works again.
    Partition {
        /// Which node (modulo the TaskManagers alive).
        node: u32,
        /// When, in ms of virtual time since the run started.
        at_ms: u64,
        /// How long the partition lasts.
        heal_ms: u64,
    },
    /// With several nodes: from the start of the run until `until_ms` (`u64::MAX`: to its
    /// end), datagrams between nodes are lost, duplicated, corrupted (one bit flipped) or
    /// delayed by a 300 ms spike at these rates per thousand, with latencies of 1 to 20 ms (so
    /// they overtake each other), drawn by a generator seeded with `seed`. QUIC must hide all
    /// of it. After `until_ms` the network is perfect again (1 ms, nothing lost), so the
    /// liveness oracle sees the job recover once the faults stop.
    Packets {
        /// The network generator's seed.
        seed: u64,
        /// Datagrams lost per thousand.
        loss_per_mille: u32,
        /// Datagrams delivered twice per thousand.
        duplicate_per_mille: u32,
        /// Datagrams corrupted per thousand.
        corrupt_per_mille: u32,
        /// Datagrams delayed by a spike per thousand.
        spike_per_mille: u32,
        /// When the faults stop, in ms of virtual time since the run started (`u64::MAX`:
        /// never).
        until_ms: u64,
    },
    /// With several nodes: TaskManager node `node % nodes` (counting the nodes alive at the
    /// time, in the order they joined) is killed `at_ms` after the run started, as
    /// [`Fault::NodeCrash`] kills one, and `down_ms` later the same node comes back: a new
    /// process on the same machine, with the same node id and address (and a certificate and
    /// randomness of its own). No replacement joins meanwhile. The JobManager must take the
    /// new incarnation for the old one, and nothing may keep talking to the old one.
    NodeRestart {
        /// Which node (modulo the TaskManagers alive).
        node: u32,
        /// When it is killed, in ms of virtual time since the run started.
        at_ms: u64,
        /// How long it stays down.
        down_ms: u64,
    },
}

/// The kinds of faults, as named on the simulator's command line (`--faults LIST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// [`Fault::SubtaskPanic`]: `panic`.
    Panic,
    /// [`Fault::StorageWriteError`], [`Fault::TornWrite`], [`Fault::CorruptWrite`]: `storage`.
    Storage,
    /// [`Fault::Stalls`]: `stall`.
    Stall,
    /// [`Fault::Crash`] on one node, [`Fault::NodeCrash`] on several: `crash`.
    Crash,
    /// [`Fault::SlowDisk`]: `slow-disk`.
    SlowDisk,
    /// [`Fault::ClockSkew`]: `clock-skew`.
    ClockSkew,
    /// [`Fault::Partition`] (several nodes only): `partition`.
    Partition,
    /// [`Fault::Packets`] (several nodes only): `network`.
    Network,
    /// [`Fault::NodeRestart`] (several nodes only): `restart`.
    Restart,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [Self; 9] = [
        Self::Panic,
        Self::Storage,
        Self::Stall,
        Self::Crash,
        Self::SlowDisk,
        Self::ClockSkew,
        Self::Partition,
        Self::Network,
        Self::Restart,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Panic => "panic",
            Self::Storage => "storage",
            Self::Stall => "stall",
            Self::Crash => "crash",
            Self::SlowDisk => "slow-disk",
            Self::ClockSkew => "clock-skew",
            Self::Partition => "partition",
            Self::Network => "network",
            Self::Restart => "restart",
        }
    }

    /// Parses a comma-separated list of kind names (`all` for every kind).
    ///
    /// # Errors
    ///
    /// An unknown name, with the list of known ones.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, String> {
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                kinds.extend(Self::ALL);
                continue;
            }
            let kind = Self::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown fault kind '{name}' in '{list}' (known: all, {})",
                        Self::ALL.map(Self::name).join(", ")
                    )
                })?;
            kinds.push(kind);
        }
        kinds.sort();
        kinds.dedup();
        Ok(kinds)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Fault {
    /// Its kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            Self::SubtaskPanic { .. } => FaultKind::Panic,
            Self::StorageWriteError { .. } | Self::TornWrite { .. } | Self::CorruptWrite { .. } => {
                FaultKind::Storage
            }
            Self::Stalls { .. } => FaultKind::Stall,
            Self::Crash { .. } | Self::NodeCrash { .. } => FaultKind::Crash,
            Self::SlowDisk { .. } => FaultKind::SlowDisk,
            Self::ClockSkew { .. } => FaultKind::ClockSkew,
            Self::Partition { .. } => FaultKind::Partition,
            Self::Packets { .. } => FaultKind::Network,
            Self::NodeRestart { .. } => FaultKind::Restart,
        }
    }

    /// Its machine-readable form, parsed back by [`FaultPlan::parse_spec`]: a name and
    /// `key=value` fields separated by `:`.
    pub fn spec(&self) -> String {
        match *self {
            Self::SubtaskPanic {
                slot,
                attempt,
                at_ms,
            } => format!("panic:slot={slot}:attempt={attempt}:at={at_ms}"),
            Self::StorageWriteError { checkpoint } => format!("write-error:chk={checkpoint}"),
            Self::TornWrite { checkpoint } => format!("torn:chk={checkpoint}"),
            Self::CorruptWrite { checkpoint } => format!("corrupt:chk={checkpoint}"),
            Self::Stalls {
                seed,
                per_mille,
                max_ms,
            } => format!("stalls:seed={seed}:per_mille={per_mille}:max={max_ms}"),
            Self::Crash { at_ms } => format!("crash:at={at_ms}"),
            Self::SlowDisk { seed, max_ms } => format!("slow-disk:seed={seed}:max={max_ms}"),
            Self::ClockSkew {
                offset_ms,
                drift_per_mille,
            } => format!("clock-skew:offset={offset_ms}:drift={drift_per_mille}"),
            Self::NodeCrash { node, at_ms } => format!("node-crash:node={node}:at={at_ms}"),
            Self::Partition {
                node,
                at_ms,
                heal_ms,
            } => format!("partition:node={node}:at={at_ms}:heal={heal_ms}"),
            Self::Packets {
                seed,
                loss_per_mille,
                duplicate_per_mille,
                corrupt_per_mille,
                spike_per_mille,
                until_ms,
            } => {
                let mut spec = format!(
                    "packets:seed={seed}:loss={loss_per_mille}:dup={duplicate_per_mille}:\
                     corrupt={corrupt_per_mille}:spike={spike_per_mille}"
                );
                if until_ms != u64::MAX {
                    spec.push_str(&format!(":until={until_ms}"));
                }
                spec
            }
            Self::NodeRestart {
                node,
                at_ms,
                down_ms,
            } => format!("node-restart:node={node}:at={at_ms}:down={down_ms}"),
        }
    }

    /// Parses one fault of [`Fault::spec`].
    fn parse_spec(spec: &str) -> Result<Self, String> {
        let mut parts = spec.split(':');
        let name = parts.next().unwrap_or_default();
        let mut fields = std::collections::BTreeMap::new();
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' in fault '{spec}' is not key=value"))?;
            let value: u64 = value
                .parse()
                .map_err(|e| format!("'{value}' of '{key}' in fault '{spec}': {e}"))?;
            fields.insert(key, value);
        }
        // Only packet faults have an end (optional: plans written before it last the run).
        let until = if name == "packets" {
            fields.remove("until")
        } else {
            None
        };
        let mut field = |key: &str| {
            fields
                .remove(key)
                .ok_or_else(|| format!("fault '{spec}' has no '{key}'"))
        };
        let small = |value: u64, key: &str| {
            u32::try_from(value).map_err(|_| format!("'{key}' in fault '{spec}' is too large"))
        };
        let fault = match name {
            "panic" => Self::SubtaskPanic {
                slot: small(field("slot")?, "slot")?,
                attempt: small(field("attempt")?, "attempt")?,
                at_ms: field("at")?,
            },
            "write-error" => Self::StorageWriteError {
                checkpoint: field("chk")?,
            },
            "torn" => Self::TornWrite {
                checkpoint: field("chk")?,
            },
            "corrupt" => Self::CorruptWrite {
                checkpoint: field("chk")?,
            },
            "stalls" => Self::Stalls {
                seed: field("seed")?,
                per_mille: small(field("per_mille")?, "per_mille")?,
                max_ms: small(field("max")?, "max")?,
            },
            "crash" => Self::Crash {
                at_ms: field("at")?,
            },
            "slow-disk" => Self::SlowDisk {
                seed: field("seed")?,
                max_ms: small(field("max")?, "max")?,
            },
            "clock-skew" => Self::ClockSkew {
                offset_ms: field("offset")?,
                drift_per_mille: small(field("drift")?, "drift")?,
            },
            "node-crash" => Self::NodeCrash {
                node: small(field("node")?, "node")?,
                at_ms: field("at")?,
            },
            "partition" => Self::Partition {
                node: small(field("node")?, "node")?,
                at_ms: field("at")?,
                heal_ms: field("heal")?,
            },
            "node-restart" => Self::NodeRestart {
                node: small(field("node")?, "node")?,
                at_ms: field("at")?,
                down_ms: field("down")?,
            },
            "packets" => {
                let mut rate = |key: &str| -> Result<u32, String> {
                    let value = small(field(key)?, key)?;
                    if value > 1000 {
                        return Err(format!(
                            "'{key}' in fault '{spec}' is {value} per thousand, above 1000"
                        ));
                    }
                    Ok(value)
                };
                Self::Packets {
                    loss_per_mille: rate("loss")?,
                    duplicate_per_mille: rate("dup")?,
                    corrupt_per_mille: rate("corrupt")?,
                    spike_per_mille: rate("spike")?,
                    seed: field("seed")?,
                    // A plan written before packet faults ended (no `until`) keeps them for
                    // the whole run, as it did then.
                    until_ms: until.unwrap_or(u64::MAX),
                }
            }
            other => {
                return Err(format!(
                    "unknown fault '{other}' in '{spec}' (known: panic, write-error, torn, \
                     corrupt, stalls, crash, slow-disk, clock-skew, node-crash, partition, \
                     packets, node-restart)"
                ));
            }
        };
        if let Some(extra) = fields.keys().next() {
            return Err(format!("fault '{spec}' has an unknown field '{extra}'"));
        }
        Ok(fault)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SubtaskPanic {
                slot,
                attempt,
                at_ms,
            } => write!(
                f,
                "subtask slot {slot} fails in attempt {attempt} at {at_ms} ms"
            ),
            Self::StorageWriteError { checkpoint } => {
                write!(f, "a file of checkpoint {checkpoint} cannot be written")
            }
            Self::TornWrite { checkpoint } => {
                write!(f, "a file of checkpoint {checkpoint} is written torn")
            }
            Self::CorruptWrite { checkpoint } => {
                write!(f, "a file of checkpoint {checkpoint} is written corrupted")
            }
            Self::Stalls {
                seed,
                per_mille,
                max_ms,
            } => write!(
                f,
                "subtasks stall up to {max_ms} ms before {per_mille} in 1000 inputs (stall seed \
                 {seed})"
            ),
            Self::Crash { at_ms } => write!(
                f,
                "the process crashes at {at_ms} ms and restarts from its latest checkpoint"
            ),
            Self::SlowDisk { seed, max_ms } => write!(
                f,
                "checkpoint writes take up to {max_ms} ms (slow disk, seed {seed})"
            ),
            Self::ClockSkew {
                offset_ms,
                drift_per_mille,
            } => write!(
                f,
                "the node's clock is {offset_ms} ms ahead and runs {drift_per_mille} per mille fast"
            ),
            Self::NodeCrash { node, at_ms } => write!(
                f,
                "task manager node {node} is killed at {at_ms} ms and a replacement joins"
            ),
            Self::Partition {
                node,
                at_ms,
                heal_ms,
            } => write!(
                f,
                "task manager node {node} is cut off from every node at {at_ms} ms for {heal_ms} ms"
            ),
            Self::Packets {
                seed,
                loss_per_mille,
                duplicate_per_mille,
                corrupt_per_mille,
                spike_per_mille,
                until_ms,
            } => {
                write!(
                    f,
                    "datagrams between nodes: {loss_per_mille}/1000 lost, \
                     {duplicate_per_mille}/1000 duplicated, {corrupt_per_mille}/1000 corrupted, \
                     {spike_per_mille}/1000 delayed 300 ms, 1 to 20 ms latency (network seed \
                     {seed}), "
                )?;
                if *until_ms == u64::MAX {
                    f.write_str("until the end of the run")
                } else {
                    write!(f, "until {until_ms} ms")
                }
            }
            Self::NodeRestart {
                node,
                at_ms,
                down_ms,
            } => write!(
                f,
                "task manager node {node} is killed at {at_ms} ms and restarts {down_ms} ms later \
                 with its old name and address"
            ),
        }
    }
}

/// How many faults of each kind [`FaultPlan::from_seed`] draws, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultConfig {
    /// Subtask failures, one per attempt (the job restarts after each).
    pub subtask_panics: u32,
    /// Storage faults (write error, torn or corrupted write), on distinct checkpoints.
    pub storage_faults: u32,
    /// Subtask failures happen within the first `max_time_ms` of virtual time. A failure
    /// planned after the subtask's last input does not happen: keep this below the job's
    /// virtual running time.
    pub max_time_ms: u64,
    /// Storage faults hit one of the first `max_checkpoint` checkpoints.
    pub max_checkpoint: u64,
    /// Inputs stalled per thousand (0: no stalls).
    pub stall_per_mille: u32,
    /// The longest stall, in ms of virtual time.
    pub stall_max_ms: u32,
    /// Whole-process crashes (each restarts the job from its latest checkpoint); each happens
    /// within the first `max_time_ms` of its run.
    pub crashes: u32,
    /// The slowest checkpoint write in ms (0: a fast disk).
    pub slow_disk_max_ms: u32,
    /// The largest clock offset in ms (0 and `clock_drift_max_per_mille` 0: no skew).
    pub clock_offset_max_ms: u64,
    /// The largest clock drift, per thousand.
    pub clock_drift_max_per_mille: u32,
    /// TaskManager node crashes (several nodes only; [`crate::Simulation::fault_plan`] turns
    /// `crashes` into these on a cluster), each within the first `max_time_ms`.
    pub node_crashes: u32,
    /// Network partitions of one node (several nodes only), each within the first
    /// `max_time_ms`.
    pub partitions: u32,
    /// The longest partition, in ms.
    pub partition_max_ms: u64,
    /// The largest datagram loss rate per thousand (several nodes only; 0: a perfect network).
    /// Duplication, corruption and delay spikes are drawn up to half of it.
    pub packet_loss_max_per_mille: u32,
    /// Packet faults stop within this many ms of the run's start (drawn from 1 to it); 0:
    /// they last the whole run.
    pub packet_fault_max_ms: u64,
    /// TaskManager nodes restarted with their old name and address (several nodes only),
    /// each killed within the first `max_time_ms`.
    pub node_restarts: u32,
    /// The longest time a restarting node stays down, in ms.
    pub restart_down_max_ms: u64,
}

impl Default for FaultConfig {
    /// Every kind of fault.
    fn default() -> Self {
        Self {
            subtask_panics: 2,
            storage_faults: 2,
            max_time_ms: 200,
            max_checkpoint: 6,
            stall_per_mille: 20,
            stall_max_ms: 30,
            crashes: 1,
            slow_disk_max_ms: 40,
            clock_offset_max_ms: 3_600_000,
            clock_drift_max_per_mille: 100,
            node_crashes: 0,
            partitions: 1,
            partition_max_ms: 3_000,
            packet_loss_max_per_mille: 100,
            packet_fault_max_ms: 2_000,
            node_restarts: 1,
            restart_down_max_ms: 1_500,
        }
    }
}

impl FaultConfig {
    /// No faults at all.
    pub fn none() -> Self {
        Self {
            subtask_panics: 0,
            storage_faults: 0,
            stall_per_mille: 0,
            stall_max_ms: 0,
            crashes: 0,
            slow_disk_max_ms: 0,
            clock_offset_max_ms: 0,
            clock_drift_max_per_mille: 0,
            node_crashes: 0,
            partitions: 0,
            packet_loss_max_per_mille: 0,
            node_restarts: 0,
            ..Self::default()
        }
    }

    /// The default amounts of the faults of `kinds`, none of the others.
    pub fn only(kinds: &[FaultKind]) -> Self {
        let all = Self::default();
        let mut config = Self::none();
        for kind in kinds {
            match kind {
                FaultKind::Panic => config.subtask_panics = all.subtask_panics,
                FaultKind::Storage => config.storage_faults = all.storage_faults,
                FaultKind::Stall => {
                    config.stall_per_mille = all.stall_per_mille;
                    config.stall_max_ms = all.stall_max_ms;
                }
                FaultKind::Crash => config.crashes = all.crashes,
                FaultKind::SlowDisk => config.slow_disk_max_ms = all.slow_disk_max_ms,
                FaultKind::ClockSkew => {
                    config.clock_offset_max_ms = all.clock_offset_max_ms;
                    config.clock_drift_max_per_mille = all.clock_drift_max_per_mille;
                }
                FaultKind::Partition => config.partitions = all.partitions,
                FaultKind::Network => {
                    config.packet_loss_max_per_mille = all.packet_loss_max_per_mille;
                }
                FaultKind::Restart => config.node_restarts = all.node_restarts,
            }
        }
        config
    }

    /// This configuration with faults happening within the first `max_time_ms` of a run and
    /// storage faults on the first `max_checkpoint` checkpoints (fit them to the job).
    pub fn within(mut self, max_time_ms: u64, max_checkpoint: u64) -> Self {
        self.max_time_ms = max_time_ms;
        self.max_checkpoint = max_checkpoint;
        self
    }
}

/// The faults of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// The faults, in the order they were drawn.
    pub faults: Vec<Fault>,
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.faults.is_empty() {
            return f.write_str("no faults");
        }
        for (i, fault) in self.faults.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{fault}")?;
        }
        Ok(())
    }
}

/// The splitmix64 sequence: the simulator's own seeded generator.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        eichhorn::state::splitmix64(self.0)
    }

    /// A number in `1..=max` (`max` of 0 counts as 1).
    fn between_1_and(&mut self, max: u64) -> u64 {
        1 + self.next_u64() % max.max(1)
    }
}

impl FaultPlan {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// Draws a plan from `seed`.
    pub fn from_seed(seed: u64, config: &FaultConfig) -> Self {
        let mut rng = SplitMix(seed ^ 0xFA17_FA17_FA17_FA17);
        let mut faults = Vec::new();
        for attempt in 0..config.subtask_panics {
            faults.push(Fault::SubtaskPanic {
                slot: (rng.next_u64() % 1024) as u32,
                attempt,
                at_ms: rng.between_1_and(config.max_time_ms),
            });
        }
        let mut taken = Vec::new();
        for _ in 0..config.storage_faults {
            let checkpoint = rng.between_1_and(config.max_checkpoint);
            if taken.contains(&checkpoint) {
                continue;
            }
            taken.push(checkpoint);
            faults.push(match rng.next_u64() % 3 {
                0 => Fault::StorageWriteError { checkpoint },
                1 => Fault::TornWrite { checkpoint },
                _ => Fault::CorruptWrite { checkpoint },
            });
        }
        if config.stall_per_mille > 0 && config.stall_max_ms > 0 {
            faults.push(Fault::Stalls {
                seed: rng.next_u64(),
                per_mille: config.stall_per_mille,
                max_ms: config.stall_max_ms,
            });
        }
        // Kinds added later draw after the earlier ones, so a seed keeps its earlier faults.
        for _ in 0..config.crashes {
            faults.push(Fault::Crash {
                at_ms: rng.between_1_and(config.max_time_ms),
            });
        }
        if config.slow_disk_max_ms > 0 {
            faults.push(Fault::SlowDisk {
                seed: rng.next_u64(),
                max_ms: config.slow_disk_max_ms,
            });
        }
        if config.clock_offset_max_ms > 0 || config.clock_drift_max_per_mille > 0 {
            faults.push(Fault::ClockSkew {
                offset_ms: rng.next_u64() % (config.clock_offset_max_ms + 1),
                drift_per_mille: (rng.next_u64()
                    % (u64::from(config.clock_drift_max_per_mille) + 1))
                    as u32,
            });
        }
        for _ in 0..config.node_crashes {
            faults.push(Fault::NodeCrash {
                node: (rng.next_u64() % 1024) as u32,
                at_ms: rng.between_1_and(config.max_time_ms),
            });
        }
        for _ in 0..config.partitions {
            faults.push(Fault::Partition {
                node: (rng.next_u64() % 1024) as u32,
                at_ms: rng.between_1_and(config.max_time_ms),
                heal_ms: rng.between_1_and(config.partition_max_ms),
            });
        }
        if config.packet_loss_max_per_mille > 0 {
            let max = u64::from(config.packet_loss_max_per_mille.min(1000));
            let mut rate = |max: u64| (rng.next_u64() % (max + 1)) as u32;
            let loss_per_mille = rate(max);
            let duplicate_per_mille = rate(max / 2);
            let corrupt_per_mille = rate(max / 2);
            let spike_per_mille = rate(max / 10);
            let seed = rng.next_u64();
            // Drawn after the older fields, so a seed keeps the rates it drew before.
            let until_ms = if config.packet_fault_max_ms == 0 {
                u64::MAX
            } else {
                rng.between_1_and(config.packet_fault_max_ms)
            };
            faults.push(Fault::Packets {
                seed,
                loss_per_mille,
                duplicate_per_mille,
                corrupt_per_mille,
                spike_per_mille,
                until_ms,
            });
        }
        for _ in 0..config.node_restarts {
            faults.push(Fault::NodeRestart {
                node: (rng.next_u64() % 1024) as u32,
                at_ms: rng.between_1_and(config.max_time_ms),
                down_ms: rng.between_1_and(config.restart_down_max_ms),
            });
        }
        Self { faults }
    }

    /// The plan's machine-readable form (each fault's [`Fault::spec`], comma-separated;
    /// `none` for no faults), for `eichhorn-sim run --plan`.
    pub fn spec(&self) -> String {
        if self.faults.is_empty() {
            return "none".to_string();
        }
        self.faults
            .iter()
            .map(Fault::spec)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses a plan of [`FaultPlan::spec`].
    ///
    /// # Errors
    ///
    /// A malformed fault, named with what is wrong.
    pub fn parse_spec(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec == "none" || spec.is_empty() {
            return Ok(Self::none());
        }
        let faults = spec
            .split(',')
            .map(|f| Fault::parse_spec(f.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { faults })
    }

    /// How many faults of each kind the plan has.
    pub fn count_by_kind(&self) -> std::collections::BTreeMap<FaultKind, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for fault in &self.faults {
            *counts.entry(fault.kind()).or_default() += 1;
        }
        counts
    }

    /// The crash times, in the order the runs meet them.
    pub fn crashes(&self) -> Vec<u64> {
        self.faults
            .iter()
            .filter_map(|f| match f {
                Fault::Crash { at_ms } => Some(*at_ms),
                _ => None,
            })
            .collect()
    }

    /// The node faults of a cluster run ([`Fault::NodeCrash`], [`Fault::Partition`] and
    /// [`Fault::NodeRestart`]), in the order of their time.
    pub fn node_faults(&self) -> Vec<Fault> {
        let mut faults: Vec<Fault> = self
            .faults
            .iter()
            .copied()
            .filter(|f| {
                matches!(
                    f,
                    Fault::NodeCrash { .. } | Fault::Partition { .. } | Fault::NodeRestart { .. }
                )
            })
            .collect();
        faults.sort_by_key(|f| match *f {
            Fault::NodeCrash { at_ms, .. }
            | Fault::Partition { at_ms, .. }
            | Fault::NodeRestart { at_ms, .. } => at_ms,
            _ => 0,
        });
        faults
    }

    /// The network's faults, if the plan has them.
    pub fn packets(&self) -> Option<Fault> {
        self.faults
            .iter()
            .copied()
            .find(|f| matches!(f, Fault::Packets { .. }))
    }

    /// When the plan's timed faults are over, from the start of the run: the latest of a
    /// subtask failure's or node crash's time, a partition's heal and the end of packet
    /// faults (packet faults that last the whole run, and whole-process crashes, whose times
    /// count from their own process's start, do not count; zero for a plan without timed
    /// faults).
    pub fn faults_end(&self) -> std::time::Duration {
        let end_ms = self
            .faults
            .iter()
            .filter_map(|fault| match *fault {
                Fault::SubtaskPanic { at_ms, .. } | Fault::NodeCrash { at_ms, .. } => Some(at_ms),
                Fault::Partition { at_ms, heal_ms, .. } => Some(at_ms.saturating_add(heal_ms)),
                Fault::NodeRestart { at_ms, down_ms, .. } => Some(at_ms.saturating_add(down_ms)),
                Fault::Packets { until_ms, .. } if until_ms != u64::MAX => Some(until_ms),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        std::time::Duration::from_millis(end_ms)
    }

    /// The clock skew, if the plan has one.
    pub fn clock_skew(&self) -> Option<(u64, u32)> {
        self.faults.iter().find_map(|f| match *f {
            Fault::ClockSkew {
                offset_ms,
                drift_per_mille,
            } => Some((offset_ms, drift_per_mille)),
            _ => None,
        })
    }

    /// The smallest plan, made by removing faults one at a time from this one, for which
    /// `still_fails` holds (call it with a plan; it reruns the job). Returns this plan if no
    /// fault can go.
    pub fn shrink(&self, mut still_fails: impl FnMut(&Self) -> bool) -> Self {
        let mut current = self.clone();
        let mut index = 0;
        while index < current.faults.len() {
            let mut candidate = current.clone();
            candidate.faults.remove(index);
            if still_fails(&candidate) {
                current = candidate;
            } else {
                index += 1;
            }
        }
        current
    }

    /// The number of subtask failures (the restarts the job needs).
    pub fn subtask_failures(&self) -> u32 {
        self.faults
            .iter()
            .filter(|f| matches!(f, Fault::SubtaskPanic { .. }))
            .count() as u32
    }

    fn storage_fault(&self, checkpoint: u64) -> Option<Fault> {
        self.faults.iter().copied().find(|fault| match fault {
            Fault::StorageWriteError { checkpoint: c }
            | Fault::TornWrite { checkpoint: c }
            | Fault::CorruptWrite { checkpoint: c } => *c == checkpoint,
            _ => false,
        })
    }
}

/// Carries out a plan's subtask faults (the runtime's [`FaultInjector`]); each fires once.
#[derive(Debug)]
pub struct PlannedFailures {
    pending: Mutex<Vec<Fault>>,
    fired: Mutex<Vec<Fault>>,
    /// The stall generator, its rate per thousand and longest stall.
    stalls: Option<(Mutex<SplitMix>, u32, u32, Fault)>,
    /// The slow disk's generator and slowest write.
    slow_disk: Option<(Mutex<SplitMix>, u32, Fault)>,
}

impl PlannedFailures {
    /// The subtask faults of `plan`.
    pub fn new(plan: &FaultPlan) -> Self {
        Self {
            pending: Mutex::new(
                plan.faults
                    .iter()
                    .copied()
                    .filter(|f| matches!(f, Fault::SubtaskPanic { .. }))
                    .collect(),
            ),
            fired: Mutex::new(Vec::new()),
            stalls: plan.faults.iter().find_map(|fault| match *fault {
                Fault::Stalls {
                    seed,
                    per_mille,
                    max_ms,
                } => Some((Mutex::new(SplitMix(seed)), per_mille, max_ms.max(1), *fault)),
                _ => None,
            }),
            slow_disk: plan.faults.iter().find_map(|fault| match *fault {
                Fault::SlowDisk { seed, max_ms } => {
                    Some((Mutex::new(SplitMix(seed)), max_ms.max(1), *fault))
                }
                _ => None,
            }),
        }
    }

    fn note_fired(&self, fault: Fault) {
        let mut fired = self
            .fired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !fired.contains(&fault) {
            fired.push(fault);
        }
    }

    /// Notes that a crash of the plan happened (the simulation carries crashes out itself).
    pub(crate) fn crashed(&self, at_ms: u64) {
        self.note_fired(Fault::Crash { at_ms });
    }

    /// Notes that the plan's clock skew is in place.
    pub(crate) fn skewed(&self, offset_ms: u64, drift_per_mille: u32) {
        self.note_fired(Fault::ClockSkew {
            offset_ms,
            drift_per_mille,
        });
    }

    /// The faults that fired so far, in order (stalls count once).
    pub fn fired(&self) -> Vec<Fault> {
        self.fired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn stall(&self) -> Option<std::time::Duration> {
        let (rng, per_mille, max_ms, fault) = self.stalls.as_ref()?;
        let mut rng = rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if rng.next_u64() % 1000 >= u64::from(*per_mille) {
            return None;
        }
        let ms = 1 + rng.next_u64() % u64::from(*max_ms);
        drop(rng);
        self.note_fired(*fault);
        Some(std::time::Duration::from_millis(ms))
    }
}

impl FaultInjector for PlannedFailures {
    fn before_input(&self, at: SubtaskInput) -> Option<InjectedFault> {
        if let Some(reason) = self.fail(at) {
            return Some(InjectedFault::Fail(reason));
        }
        self.stall().map(InjectedFault::Stall)
    }

    fn before_checkpoint_write(&self, _checkpoint: u64) -> Option<std::time::Duration> {
        let (rng, max_ms, fault) = self.slow_disk.as_ref()?;
        let ms = 1 + rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next_u64()
            % u64::from(*max_ms);
        self.note_fired(*fault);
        Some(std::time::Duration::from_millis(ms))
    }
}

impl PlannedFailures {
    fn fail(&self, at: SubtaskInput) -> Option<String> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let position = pending.iter().position(|fault| match fault {
            Fault::SubtaskPanic {
                slot,
                attempt,
                at_ms,
            } => {
                *slot as usize % at.subtasks.max(1) == at.subtask
                    && *attempt == at.attempt
                    && u64::try_from(at.now_ms).is_ok_and(|now| now >= *at_ms)
            }
            _ => false,
        })?;
        let fault = pending.remove(position);
        self.fired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(fault);
        Some(fault.to_string())
    }
}

/// Checkpoint stores that carry out a plan's storage faults, around the standard stores.
#[derive(Debug)]
pub struct FaultyStores {
    plan: FaultPlan,
    fired: Arc<Mutex<Vec<Fault>>>,
    /// The stores underneath.
    inner: Arc<dyn CheckpointStoreProvider>,
}

impl FaultyStores {
    /// Stores with the storage faults of `plan`.
    pub fn new(plan: &FaultPlan) -> Self {
        Self::over(plan, Arc::new(StandardCheckpointStores))
    }

    /// Stores with the storage faults of `plan` around `inner`.
    pub fn over(plan: &FaultPlan, inner: Arc<dyn CheckpointStoreProvider>) -> Self {
        Self {
            plan: plan.clone(),
            fired: Arc::new(Mutex::new(Vec::new())),
            inner,
        }
    }

    /// The faults that fired so far, in order.
    pub fn fired(&self) -> Vec<Fault> {
        self.fired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl CheckpointStoreProvider for FaultyStores {
    fn open_run(&self, job_id: JobId, run_dir: Option<&Path>) -> Arc<dyn CheckpointStore> {
        Arc::new(FaultyStore {
            inner: self.inner.open_run(job_id, run_dir),
            plan: self.plan.clone(),
            fired: Arc::clone(&self.fired),
        })
    }
}

/// One run's store with faults.
#[derive(Debug)]
struct FaultyStore {
    inner: Arc<dyn CheckpointStore>,
    plan: FaultPlan,
    /// The faults that fired (each once), shared with the provider.
    fired: Arc<Mutex<Vec<Fault>>>,
}

impl FaultyStore {
    /// The fault for the folder, if it has one that has not fired yet.
    fn take_fault(&self, folder: &CheckpointFolder) -> Option<Fault> {
        let id: u64 = folder.name.strip_prefix("chk-")?.parse().ok()?;
        let fault = self.plan.storage_fault(id)?;
        let mut fired = self
            .fired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if fired.contains(&fault) {
            return None;
        }
        fired.push(fault);
        Some(fault)
    }
}

fn storage_error(folder: &CheckpointFolder, name: &str, message: &str) -> StorageError {
    StorageError {
        path: format!("{}/{name}", folder.name),
        message: format!("{message} (injected fault)"),
    }
}

impl CheckpointStore for FaultyStore {
    fn folder(&self, id: CheckpointId, savepoint_target: Option<&Path>) -> CheckpointFolder {
        self.inner.folder(id, savepoint_target)
    }

    fn write_file(
        &self,
        folder: &CheckpointFolder,
        name: &str,
        frame: &[u8],
    ) -> Result<FileMetadata, StorageError> {
        match self.take_fault(folder) {
            None => self.inner.write_file(folder, name, frame),
            Some(Fault::StorageWriteError { .. }) => Err(storage_error(
                folder,
                name,
                "cannot write: no space left on device",
            )),
            Some(Fault::TornWrite { .. }) => {
                self.inner
                    .write_file(folder, name, &frame[..frame.len() / 2])?;
                Err(storage_error(
                    folder,
                    name,
                    &format!(
                        "read back {} bytes, {} were written",
                        frame.len() / 2,
                        frame.len()
                    ),
                ))
            }
            Some(Fault::CorruptWrite { .. }) => {
                let mut damaged = frame.to_vec();
                if let Some(byte) = damaged.get_mut(frame.len() / 2) {
                    *byte ^= 0x40;
                }
                self.inner.write_file(folder, name, &damaged)?;
                Err(storage_error(
                    folder,
                    name,
                    "read back with a different checksum than was written",
                ))
            }
            Some(other) => unreachable!("{other} is not a storage fault"),
        }
    }

    fn complete(
        &self,
        folder: &CheckpointFolder,
        metadata: &CheckpointMetadata,
    ) -> Result<(), StorageError> {
        self.inner.complete(folder, metadata)
    }

    fn discard(&self, folder: &CheckpointFolder) {
        self.inner.discard(folder);
    }

    fn discard_incomplete(&self, folder: &CheckpointFolder) {
        self.inner.discard_incomplete(folder);
    }

    fn checkpoint_ids(&self) -> Vec<CheckpointId> {
        self.inner.checkpoint_ids()
    }

    fn read_file(&self, folder: &CheckpointFolder, name: &str) -> Result<Vec<u8>, StorageError> {
        self.inner.read_file(folder, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_drawn_from_the_seed() {
        let config = FaultConfig::default();
        assert_eq!(
            FaultPlan::from_seed(5, &config),
            FaultPlan::from_seed(5, &config)
        );
        let plans: std::collections::BTreeSet<Vec<Fault>> = (0..20)
            .map(|seed| FaultPlan::from_seed(seed, &config).faults)
            .collect();
        assert!(plans.len() > 10, "seeds give different plans");
        let plan = FaultPlan::from_seed(5, &config);
        assert_eq!(plan.subtask_failures(), 2);
        assert!(plan.to_string().contains("fails in attempt 0 at"), "{plan}");
    }

    #[test]
    fn specs_round_trip_and_bad_ones_say_what_is_wrong() {
        for seed in 0..50 {
            let plan = FaultPlan::from_seed(seed, &FaultConfig::default());
            assert_eq!(
                FaultPlan::parse_spec(&plan.spec()),
                Ok(plan.clone()),
                "{plan}"
            );
        }
        assert_eq!(FaultPlan::parse_spec("none"), Ok(FaultPlan::none()));
        let error = FaultPlan::parse_spec("crash:at=x").unwrap_err();
        assert!(error.contains("'x' of 'at'"), "{error}");
        let error = FaultPlan::parse_spec("torn:chk=1,melt:x=1").unwrap_err();
        assert!(error.contains("unknown fault 'melt'"), "{error}");
        let error = FaultPlan::parse_spec("crash").unwrap_err();
        assert!(error.contains("has no 'at'"), "{error}");
        let error = FaultPlan::parse_spec("crash:at=1:when=2").unwrap_err();
        assert!(error.contains("unknown field 'when'"), "{error}");
    }

    #[test]
    fn node_faults_round_trip_and_come_in_time_order() {
        let config = FaultConfig {
            node_crashes: 2,
            ..FaultConfig::default()
        };
        for seed in 0..50 {
            let plan = FaultPlan::from_seed(seed, &config);
            assert_eq!(plan.node_faults().len(), 4, "{plan}");
            assert!(plan.packets().is_some(), "{plan}");
            assert_eq!(
                FaultPlan::parse_spec(&plan.spec()),
                Ok(plan.clone()),
                "{plan}"
            );
            let times: Vec<u64> = plan
                .node_faults()
                .iter()
                .map(|f| match f {
                    Fault::NodeCrash { at_ms, .. }
                    | Fault::Partition { at_ms, .. }
                    | Fault::NodeRestart { at_ms, .. } => *at_ms,
                    _ => unreachable!("only node faults"),
                })
                .collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        }
        // Node kinds come after the older ones: a seed keeps the faults it drew before.
        let old = FaultConfig {
            partitions: 0,
            packet_loss_max_per_mille: 0,
            node_restarts: 0,
            ..FaultConfig::default()
        };
        let plan = FaultPlan::from_seed(3, &config);
        assert_eq!(
            plan.faults[..FaultPlan::from_seed(3, &old).faults.len()],
            FaultPlan::from_seed(3, &old).faults[..]
        );
        let error =
            FaultPlan::parse_spec("packets:seed=1:loss=1001:dup=0:corrupt=0:spike=0").unwrap_err();
        assert!(error.contains("above 1000"), "{error}");
        let error = FaultPlan::parse_spec("partition:node=1:at=5").unwrap_err();
        assert!(error.contains("has no 'heal'"), "{error}");
    }

    #[test]
    fn packet_faults_end_and_old_plans_still_parse() {
        let config = FaultConfig {
            node_crashes: 1,
            ..FaultConfig::default()
        };
        let mut ending = 0;
        for seed in 0..50 {
            let plan = FaultPlan::from_seed(seed, &config);
            let Some(Fault::Packets { until_ms, .. }) = plan.packets() else {
                panic!("no packet faults in {plan}");
            };
            assert!(
                (1..=config.packet_fault_max_ms).contains(&until_ms),
                "{plan}"
            );
            assert!(
                plan.spec().contains(&format!(":until={until_ms}")),
                "{plan}"
            );
            assert!(
                plan.to_string().contains(&format!("until {until_ms} ms")),
                "{plan}"
            );
            assert!(plan.faults_end() >= std::time::Duration::from_millis(until_ms));
            ending += 1;
        }
        assert_eq!(ending, 50);
        // A plan printed before packet faults had an end keeps them for the whole run.
        let old =
            FaultPlan::parse_spec("packets:seed=7:loss=100:dup=50:corrupt=20:spike=10").unwrap();
        assert!(matches!(
            old.packets(),
            Some(Fault::Packets {
                until_ms: u64::MAX,
                ..
            })
        ));
        assert_eq!(
            old.spec(),
            "packets:seed=7:loss=100:dup=50:corrupt=20:spike=10"
        );
        assert!(old.to_string().contains("until the end of the run"));
        assert_eq!(old.faults_end(), std::time::Duration::ZERO);
        // Only packet faults have an end.
        let error = FaultPlan::parse_spec("crash:at=5:until=9").unwrap_err();
        assert!(error.contains("unknown field 'until'"), "{error}");
        // Without an end configured, they last the run, as before.
        let whole = FaultConfig {
            packet_fault_max_ms: 0,
            ..config.clone()
        };
        assert!(matches!(
            FaultPlan::from_seed(3, &whole).packets(),
            Some(Fault::Packets {
                until_ms: u64::MAX,
                ..
            })
        ));
    }

    #[test]
    fn node_restarts_are_drawn_printed_and_parsed() {
        let config = FaultConfig::only(&[FaultKind::Restart]);
        let plan = FaultPlan::from_seed(9, &config);
        let [Fault::NodeRestart { at_ms, down_ms, .. }] = plan.faults[..] else {
            panic!("one restart expected: {plan}");
        };
        assert!((1..=config.max_time_ms).contains(&at_ms));
        assert!((1..=config.restart_down_max_ms).contains(&down_ms));
        assert_eq!(FaultPlan::parse_spec(&plan.spec()), Ok(plan.clone()));
        assert!(
            plan.spec().starts_with("node-restart:node="),
            "{}",
            plan.spec()
        );
        assert!(plan.to_string().contains("restarts"), "{plan}");
        assert_eq!(
            plan.faults_end(),
            std::time::Duration::from_millis(at_ms + down_ms)
        );
        assert_eq!(plan.node_faults(), plan.faults);
        assert_eq!(plan.faults[0].kind(), FaultKind::Restart);
        let error = FaultPlan::parse_spec("node-restart:node=1:at=5").unwrap_err();
        assert!(error.contains("has no 'down'"), "{error}");
    }

    #[test]
    fn kinds_parse_and_select_what_is_drawn() {
        assert_eq!(FaultKind::parse_list("all"), Ok(FaultKind::ALL.to_vec()));
        let kinds = FaultKind::parse_list("crash,panic").unwrap();
        assert_eq!(kinds, [FaultKind::Panic, FaultKind::Crash]);
        let plan = FaultPlan::from_seed(3, &FaultConfig::only(&kinds));
        assert!(
            plan.faults.iter().all(|f| kinds.contains(&f.kind())),
            "{plan}"
        );
        assert_eq!(plan.crashes().len(), 1);
        assert!(
            FaultKind::parse_list("panic,flood")
                .unwrap_err()
                .contains("'flood'")
        );
        assert!(
            FaultPlan::from_seed(3, &FaultConfig::none())
                .faults
                .is_empty()
        );
    }

    #[test]
    fn shrinking_keeps_only_the_faults_that_matter() {
        let plan = FaultPlan {
            faults: vec![
                Fault::StorageWriteError { checkpoint: 1 },
                Fault::SubtaskPanic {
                    slot: 0,
                    attempt: 0,
                    at_ms: 3,
                },
                Fault::TornWrite { checkpoint: 2 },
            ],
        };
        // "Fails" whenever the torn write is in the plan.
        let shrunk = plan.shrink(|p| p.faults.contains(&Fault::TornWrite { checkpoint: 2 }));
        assert_eq!(shrunk.faults, vec![Fault::TornWrite { checkpoint: 2 }]);
    }

    #[test]
    fn a_subtask_fault_fires_once_where_planned() {
        let plan = FaultPlan {
            faults: vec![Fault::SubtaskPanic {
                slot: 5,
                attempt: 0,
                at_ms: 20,
            }],
        };
        let failures = PlannedFailures::new(&plan);
        let at = |subtask, attempt, now_ms| SubtaskInput {
            subtask,
            subtasks: 4,
            attempt,
            input: 1,
            now_ms,
        };
        assert_eq!(failures.fail(at(1, 0, 19)), None, "not yet");
        assert_eq!(
            failures.fail(at(0, 0, 25)),
            None,
            "slot 5 is subtask 1 of 4"
        );
        assert_eq!(failures.fail(at(1, 1, 25)), None, "another attempt");
        assert!(failures.fail(at(1, 0, 25)).is_some());
        assert_eq!(failures.fail(at(1, 0, 30)), None, "once");
    }
}
