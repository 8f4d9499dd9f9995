//! Carrying out one run with a fault plan: the node's environment (seeded, on virtual time,
//! its clock skewed, its checkpoint storage faulty, its subtasks failing where the plan says),
//! whole-process crashes, and the trace hash.
//!
//! ## Design
//!
//! A run is one or more **segments**. Each segment is a process lifetime: a fresh paused
//! current-thread tokio runtime, a fresh [`StreamEnv`] built by the job-building function, a
//! fresh run of the job. A [`Fault::Crash`] ends a segment at its time by dropping the runtime
//! with every actor on it, without any cleanup, as `kill -9` would. The next segment is what a
//! user does after such a crash: it builds the job again and restores it from the crashed
//! run's checkpoint folder (its newest intact checkpoint; from scratch if there is none). So a
//! plan with a crash keeps its checkpoints in a directory (a fresh one under `/dev/shm` or the
//! system's temporary directory, removed afterwards) instead of memory. The exactly-once sink's
//! committed rows are the outside world and carry over ([`CommittedOutput::continue_from`]).
//!
//! The **trace hash** covers the commit log (every transaction's name and rows, in commit
//! order), the restarts, the completed checkpoints, the virtual time and the faults that
//! fired: two runs with the same seed and plan must agree on all of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eichhorn::StableHasher;
use eichhorn::api::{Data, StreamEnv};
use eichhorn::checkpoint::storage::{CheckpointStoreProvider, StandardCheckpointStores};
use eichhorn::checkpoint::{JobId, RestartStrategy};
use eichhorn::runtime::{RuntimeEnv, TokioClock};
use eichhorn::time::Clock;

use crate::faults::{Fault, FaultyStores, PlannedFailures};
use crate::{CommittedOutput, FaultPlan, SimulatedRun, Simulation, SimulationError, fingerprint};

/// A node clock `offset_ms` ahead of virtual time and `drift_per_mille` per thousand fast;
/// monotone like the clock it skews.
#[derive(Debug, Clone, Copy)]
pub struct SkewedClock {
    base: TokioClock,
    offset_ms: u64,
    drift_per_mille: u32,
}

impl SkewedClock {
    /// A skewed clock reading `offset_ms` now (make it inside the simulation's runtime).
    pub fn new(offset_ms: u64, drift_per_mille: u32) -> Self {
        Self {
            base: TokioClock::new(),
            offset_ms,
            drift_per_mille,
        }
    }
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> i64 {
        let elapsed = self.base.now_ms();
        let drift = elapsed.saturating_mul(i64::from(self.drift_per_mille)) / 1000;
        i64::try_from(self.offset_ms)
            .unwrap_or(i64::MAX)
            .saturating_add(elapsed)
            .saturating_add(drift)
    }
}

/// Switches the simulation's sabotage on for this thread while alive (off again when dropped,
/// even when the run panics).
pub(crate) struct SabotageGuard;

impl SabotageGuard {
    #[cfg_attr(not(feature = "sabotage"), allow(unused_variables))]
    fn new(simulation: &Simulation) -> Self {
        #[cfg(feature = "sabotage")]
        eichhorn::sabotage::set(simulation.sabotage);
        Self
    }
}

impl Drop for SabotageGuard {
    fn drop(&mut self) {
        #[cfg(feature = "sabotage")]
        eichhorn::sabotage::set(None);
    }
}

/// A checkpoint directory of its own for one run, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(seed: u64) -> Result<Self, std::io::Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Memory-backed where there is one (`/dev/shm`): the simulated disk's durability is
        // the plan's business, and an fsync per checkpoint file would cost most of the wall
        // time of a run.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = base.join(format!(
            "eichhorn-sim-{}-{seed}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a segment ended.
enum SegmentEnd {
    Finished(Box<eichhorn::JobResult>),
    Crashed,
}

/// The id of segment `segment`'s run: the first keeps the id the seed always gave.
fn segment_job_id(seed: u64, segment: usize) -> JobId {
    if segment == 0 {
        JobId::from_seed(seed)
    } else {
        JobId::from_seed(seed ^ (segment as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

/// Whether the run folder `dir` holds a completed checkpoint.
fn has_checkpoint(job_id: JobId, dir: &Path) -> bool {
    !StandardCheckpointStores
        .open_run(job_id, Some(dir))
        .checkpoint_ids()
        .is_empty()
}

impl Simulation {
    /// Runs the job declared by `build` with the faults of `plan` (none: [`FaultPlan::none`])
    /// and returns what its exactly-once sink committed, in the order of the transactions'
    /// names. `build` is called once per process lifetime: again after each crash of the plan.
    ///
    /// # Errors
    ///
    /// The job failed, or did not finish within the virtual deadline.
    pub fn run_committed<T, F>(
        &self,
        build: F,
        plan: &FaultPlan,
    ) -> Result<SimulatedRun<T>, SimulationError>
    where
        T: Data,
        F: Fn(&StreamEnv) -> CommittedOutput<T>,
    {
        self.run_plan(&build, plan, self.deadline)
    }

    /// [`Simulation::run_committed`] with the virtual-time budget `deadline` for the whole
    /// run, crashes and restarts included.
    pub(crate) fn run_plan<T, F>(
        &self,
        build: &F,
        plan: &FaultPlan,
        deadline: Duration,
    ) -> Result<SimulatedRun<T>, SimulationError>
    where
        T: Data,
        F: Fn(&StreamEnv) -> CommittedOutput<T>,
    {
        let _sabotage = SabotageGuard::new(self);
        if self.nodes > 1 {
            return self.run_plan_on_cluster(build, plan, deadline);
        }
        if let Some(fault) = plan.faults.iter().find(|f| {
            matches!(
                f,
                Fault::NodeCrash { .. }
                    | Fault::Partition { .. }
                    | Fault::Packets { .. }
                    | Fault::NodeRestart { .. }
            )
        }) {
            return Err(SimulationError::Usage(format!(
                "the fault '{}' needs several nodes (a network): run with 2 or more",
                fault.spec()
            )));
        }
        let seed = self.seed;
        let failures = Arc::new(PlannedFailures::new(plan));
        let stores = Arc::new(FaultyStores::new(plan));
        let crashes = plan.crashes();
        let scratch = if crashes.is_empty() {
            None
        } else {
            Some(ScratchDir::new(seed)?)
        };
        let skew = plan.clock_skew();
        let restarts_allowed = plan.faults.len() as u32 + 2;
        let mut previous: Option<CommittedOutput<T>> = None;
        let mut restore: Option<PathBuf> = None;
        let mut elapsed = Duration::ZERO;
        let mut checkpoints = 0;
        let mut restarts = 0;
        let mut crashed = 0u32;
        for segment in 0..=crashes.len() {
            let crash_at = crashes.get(segment).copied();
            let job_id = segment_job_id(seed, segment);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()?;
            let remaining = deadline.saturating_sub(elapsed);
            let (committed, end, took) = runtime.block_on(async {
                let mut node = RuntimeEnv::deterministic(seed)
                    .with_fault_injector(failures.clone())
                    .with_checkpoint_stores(stores.clone());
                if let Some((offset_ms, drift_per_mille)) = skew {
                    node = node.with_clock(Arc::new(SkewedClock::new(offset_ms, drift_per_mille)));
                    failures.skewed(offset_ms, drift_per_mille);
                }
                let env = StreamEnv::new();
                env.set_runtime_env(node);
                env.configure(|c| {
                    c.seed = seed;
                    c.job_id = Some(job_id);
                    c.restart_strategy = Some(RestartStrategy::FixedDelay {
                        attempts: restarts_allowed,
                        delay_ms: 10,
                    });
                });
                if let Some(dir) = &scratch {
                    env.set_checkpoint_storage(&dir.0);
                }
                if let Some(path) = &restore {
                    env.restore_from(path, false);
                }
                let committed = build(&env);
                if let Some(previous) = &previous {
                    committed.continue_from(previous);
                }
                let started = tokio::time::Instant::now();
                let budget =
                    crash_at.map_or(remaining, |at| Duration::from_millis(at).min(remaining));
                let end = match tokio::time::timeout(budget, env.execute("simulation")).await {
                    Ok(result) => SegmentEnd::Finished(Box::new(
                        result.map_err(|source| SimulationError::Job { seed, source })?,
                    )),
                    Err(_) if crash_at.is_some() && budget < remaining => SegmentEnd::Crashed,
                    Err(_) => {
                        return Err(SimulationError::Stuck {
                            seed,
                            plan: plan.clone(),
                            deadline,
                        });
                    }
                };
                Ok::<_, SimulationError>((committed, end, started.elapsed()))
            })?;
            // Dropping the runtime drops every actor still on it, mid-flight: the crash.
            drop(runtime);
            elapsed += took;
            match end {
                SegmentEnd::Finished(result) => {
                    checkpoints += result.completed_checkpoints;
                    restarts += result.restarts;
                    let output = committed.committed();
                    let commit_log = committed.commit_log();
                    let mut faults_fired = failures.fired();
                    faults_fired.extend(stores.fired());
                    let trace_hash = trace_hash(
                        &output,
                        &commit_log,
                        restarts,
                        checkpoints,
                        elapsed,
                        &faults_fired,
                    )?;
                    return Ok(SimulatedRun {
                        output,
                        result: *result,
                        trace_hash,
                        virtual_elapsed: elapsed,
                        faults_fired,
                        commit_log,
                        crashes: crashed,
                        checkpoints,
                        restarts,
                        network: None,
                    });
                }
                SegmentEnd::Crashed => {
                    crashed += 1;
                    if let Some(at_ms) = crash_at {
                        failures.crashed(at_ms);
                    }
                    // A restarted process resumes from what the crashed run left on disk.
                    let run_dir = scratch.as_ref().map(|d| d.0.join(job_id.to_string()));
                    restore = match run_dir {
                        Some(dir) if has_checkpoint(job_id, &dir) => Some(dir),
                        // Nothing completed: the user starts from scratch again.
                        _ => restore.take(),
                    };
                    previous = Some(committed);
                }
            }
        }
        unreachable!("the last segment has no crash, so it finishes or fails")
    }
}

/// The trace hash of a run (see the module documentation).
pub(crate) fn trace_hash<T: serde::Serialize>(
    output: &[T],
    commit_log: &[(String, Vec<T>)],
    restarts: u32,
    checkpoints: u64,
    elapsed: Duration,
    fired: &[Fault],
) -> Result<u64, postcard::Error> {
    let mut hasher = StableHasher::new();
    hasher.write_u64(fingerprint(output)?);
    hasher.write_u64(commit_log.len() as u64);
    for (name, rows) in commit_log {
        hasher.write_bytes(name.as_bytes());
        hasher.write_u64(fingerprint(rows)?);
    }
    hasher.write_u64(u64::from(restarts));
    hasher.write_u64(checkpoints);
    hasher.write_u64(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    for fault in fired {
        hasher.write_bytes(fault.spec().as_bytes());
    }
    Ok(hasher.finish())
}
