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
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            subtask_panics: 2,
            storage_faults: 2,
            max_time_ms: 200,
            max_checkpoint: 6,
            stall_per_mille: 20,
            stall_max_ms: 30,
        }
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
        Self { faults }
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
            Fault::SubtaskPanic { .. } | Fault::Stalls { .. } => false,
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
        }
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
        let mut fired = self
            .fired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !fired.contains(fault) {
            fired.push(*fault);
        }
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
}

impl FaultyStores {
    /// Stores with the storage faults of `plan`.
    pub fn new(plan: &FaultPlan) -> Self {
        Self {
            plan: plan.clone(),
            fired: Arc::new(Mutex::new(Vec::new())),
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
            inner: StandardCheckpointStores.open_run(job_id, run_dir),
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
            Some(Fault::SubtaskPanic { .. } | Fault::Stalls { .. }) => {
                unreachable!("not a storage fault")
            }
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
