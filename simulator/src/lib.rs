//! # eichhorn-sim: deterministic simulation of Eichhorn jobs
//!
//! Runs a whole job in one thread on virtual time (a tokio current-thread runtime with paused
//! time) with every random choice seeded, so the same seed gives the same run, byte for byte.
//! That is the ground on which fault injection and exactly-once oracles are built: a failure
//! found with a seed can be replayed with that seed.
//!
//! - [`Simulation::run`] runs a single-process job and fingerprints its output;
//!   [`Simulation::check_deterministic`] proves a job is reproducible by running it several
//!   times and comparing fingerprints.
//! - [`Simulation::check_exactly_once`] runs a job without faults and with the fault plan the
//!   seed draws ([`faults`]: subtask failures, checkpoint storage faults, stalls), and checks
//!   that its exactly-once sink ([`CommittedOutput`]) committed the same records; a violation is
//!   shrunk to the faults that cause it.
//! - [`network`] and [`quic`] run the framework's QUIC transport, with real TLS, on a simulated
//!   UDP network with seeded faults, byte-identical per seed: the ground for multi-node runs.
//!
//! # Examples
//!
//! ```
//! use eichhorn::prelude::*;
//! use eichhorn_sim::Simulation;
//!
//! let simulation = Simulation::new(42);
//! let run = simulation
//!     .run(|env| {
//!         env.set_parallelism(3);
//!         env.from_generator(1_000, |g| g).shuffle().map(|g| g * 2).collect_sink()
//!     })
//!     .unwrap();
//! assert_eq!(run.output.len(), 1_000);
//! // Same seed, same trace.
//! assert_eq!(simulation.check_deterministic(3, |env| {
//!     env.set_parallelism(3);
//!     env.from_generator(1_000, |g| g).shuffle().map(|g| g * 2).collect_sink()
//! }).unwrap(), run.trace_hash);
//! ```

pub mod committed;
pub mod faults;
pub mod network;
pub mod quic;

use std::time::Duration;

/// The README's code blocks, compiled and run as doctests. They live in this crate because it
/// depends on everything they use (`eichhorn`, `eichhorn_sim`, tokio, serde, tracing-subscriber);
/// their relative paths resolve in `simulator/`, and each block removes the files it creates.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

use eichhorn::api::{CollectSink, Data, StreamEnv};
use eichhorn::runtime::RuntimeEnv;
use eichhorn::{JobError, JobResult, StableHasher};

pub use committed::{CommittedOutput, CommittedSink};
pub use faults::{Fault, FaultConfig, FaultPlan};

/// A simulation: a seed and the rules of the simulated world.
#[derive(Debug, Clone)]
pub struct Simulation {
    seed: u64,
    faults: FaultConfig,
    /// Virtual time a run may take before it counts as stuck.
    deadline: Duration,
}

/// What one simulated run produced.
#[derive(Debug)]
pub struct SimulatedRun<T> {
    /// The collected output, in arrival order.
    pub output: Vec<T>,
    /// The job's result (metrics, virtual duration).
    pub result: JobResult,
    /// A fingerprint of the output in arrival order (postcard bytes fed to the stable hash).
    pub trace_hash: u64,
    /// Virtual time the run took.
    pub virtual_elapsed: Duration,
    /// The planned faults that happened, in order (a subtask failure planned past the
    /// subtask's last input, or a storage fault on a checkpoint never taken, does not).
    pub faults_fired: Vec<Fault>,
}

/// A simulation could not run or was not reproducible.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    /// The job failed.
    #[error("seed {seed}: {source}")]
    Job {
        /// The seed of the failing run.
        seed: u64,
        /// The job's error.
        #[source]
        source: JobError,
    },
    /// The runtime could not be built.
    #[error("cannot build the simulation runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// An output element could not be serialised for the fingerprint.
    #[error("cannot fingerprint the output: {0}")]
    Fingerprint(#[from] postcard::Error),
    /// The run with faults committed other output than the run without.
    #[error(
        "seed {seed}: not exactly once under faults [{plan}]: {missing} records missing, \
         {duplicated} duplicated (of {expected} expected); the plan is shrunk to the faults \
         that still break it"
    )]
    NotExactlyOnce {
        /// The seed.
        seed: u64,
        /// The smallest plan that still breaks it.
        plan: FaultPlan,
        /// Records of the fault-free run missing from the faulted run.
        missing: usize,
        /// Records the faulted run committed more often than the fault-free run.
        duplicated: usize,
        /// Records the fault-free run committed.
        expected: usize,
    },
    /// The job did not finish within the virtual deadline.
    #[error(
        "seed {seed}: the job did not finish within {deadline:?} of virtual time (faults: [{plan}])"
    )]
    Stuck {
        /// The seed.
        seed: u64,
        /// The faults of the stuck run.
        plan: FaultPlan,
        /// The deadline.
        deadline: Duration,
    },
    /// Two runs with the same seed differed.
    #[error(
        "seed {seed} is not deterministic: run {run} produced trace {found:#x}, run 0 produced {expected:#x}"
    )]
    Nondeterministic {
        /// The seed.
        seed: u64,
        /// The run that differed.
        run: usize,
        /// The first run's trace.
        expected: u64,
        /// The differing trace.
        found: u64,
    },
}

impl Simulation {
    /// A simulation with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            faults: FaultConfig::default(),
            deadline: Duration::from_secs(3_600),
        }
    }

    /// This simulation drawing its fault plans with `config`.
    pub fn with_faults(mut self, config: FaultConfig) -> Self {
        self.faults = config;
        self
    }

    /// The fault plan this simulation's seed draws.
    pub fn fault_plan(&self) -> FaultPlan {
        FaultPlan::from_seed(self.seed, &self.faults)
    }

    /// Runs the job declared by `build` once without faults and once with the seed's fault plan
    /// (printed to stderr first), and checks the exactly-once oracle: the output its
    /// exactly-once sink ([`CommittedOutput`]) committed is the same multiset both times. The
    /// job should enable checkpointing; the simulation gives it enough restarts for the plan.
    ///
    /// On a violation the plan is shrunk (faults removed while the violation persists) and the
    /// error names the seed and the smallest plan, to replay with [`Simulation::run_committed`].
    ///
    /// # Errors
    ///
    /// [`SimulationError::NotExactlyOnce`], [`SimulationError::Stuck`], or a job that failed.
    pub fn check_exactly_once<T, F>(&self, build: F) -> Result<ExactlyOnceReport, SimulationError>
    where
        T: Data,
        F: Fn(&StreamEnv) -> CommittedOutput<T>,
    {
        let expected = self.run_committed(&build, &FaultPlan::none())?;
        let plan = self.fault_plan();
        eprintln!("eichhorn-sim: seed {}: fault plan: {plan}", self.seed);
        let faulted = self.run_committed(&build, &plan)?;
        let (missing, duplicated) = compare(&expected.output, &faulted.output)?;
        if missing == 0 && duplicated == 0 {
            return Ok(ExactlyOnceReport {
                plan,
                fired: faulted.faults_fired,
                records: expected.output.len(),
                restarts: faulted.result.restarts,
                trace_hash: faulted.trace_hash,
            });
        }
        let shrunk = plan.shrink(|candidate| {
            self.run_committed(&build, candidate)
                .ok()
                .and_then(|run| compare(&expected.output, &run.output).ok())
                .is_some_and(|(m, d)| m > 0 || d > 0)
        });
        Err(SimulationError::NotExactlyOnce {
            seed: self.seed,
            plan: shrunk,
            missing,
            duplicated,
            expected: expected.output.len(),
        })
    }

    /// Runs the job declared by `build` with the faults of `plan` (none: [`FaultPlan::none`])
    /// and returns what its exactly-once sink committed, in the order of the transactions'
    /// names.
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
        F: FnOnce(&StreamEnv) -> CommittedOutput<T>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()?;
        let seed = self.seed;
        let deadline = self.deadline;
        let failures = std::sync::Arc::new(faults::PlannedFailures::new(plan));
        let stores = std::sync::Arc::new(faults::FaultyStores::new(plan));
        let (output, result, virtual_elapsed) = runtime.block_on(async {
            let env = StreamEnv::new();
            env.set_runtime_env(
                RuntimeEnv::deterministic(seed)
                    .with_fault_injector(failures.clone())
                    .with_checkpoint_stores(stores.clone()),
            );
            let restarts = plan.faults.len() as u32 + 2;
            env.configure(|c| {
                c.seed = seed;
                c.job_id = Some(eichhorn::checkpoint::JobId::from_seed(seed));
                c.restart_strategy = Some(eichhorn::checkpoint::RestartStrategy::FixedDelay {
                    attempts: restarts,
                    delay_ms: 10,
                });
            });
            let committed = build(&env);
            let started = tokio::time::Instant::now();
            let result = match tokio::time::timeout(deadline, env.execute("simulation")).await {
                Ok(result) => result.map_err(|source| SimulationError::Job { seed, source })?,
                Err(_) => {
                    return Err(SimulationError::Stuck {
                        seed,
                        plan: plan.clone(),
                        deadline,
                    });
                }
            };
            Ok::<_, SimulationError>((committed.committed(), result, started.elapsed()))
        })?;
        let trace_hash = fingerprint(&output)?;
        let mut faults_fired = failures.fired();
        faults_fired.extend(stores.fired());
        Ok(SimulatedRun {
            output,
            result,
            trace_hash,
            virtual_elapsed,
            faults_fired,
        })
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Builds a job with `build` (which declares the job on the environment and returns the
    /// collect sink to observe) and runs it to completion on virtual time.
    ///
    /// # Errors
    ///
    /// The job failed, or the runtime could not be built.
    pub fn run<T, F>(&self, build: F) -> Result<SimulatedRun<T>, SimulationError>
    where
        T: Data,
        F: FnOnce(&StreamEnv) -> CollectSink<T>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()?;
        let seed = self.seed;
        let (output, result, virtual_elapsed) = runtime.block_on(async move {
            let env = StreamEnv::new();
            // The simulator says what it needs instead of leaving it to the default: the clock
            // from 0 on this paused runtime, every subtask on this thread, blocking work in
            // place, the node seeded from the simulation's seed.
            env.set_runtime_env(RuntimeEnv::deterministic(seed));
            env.configure(|c| {
                c.seed = seed;
                // The run's id comes from the seed too: a replay writes the same paths.
                c.job_id = Some(eichhorn::checkpoint::JobId::from_seed(seed));
            });
            let sink = build(&env);
            let started = tokio::time::Instant::now();
            let result = env
                .execute("simulation")
                .await
                .map_err(|source| SimulationError::Job { seed, source })?;
            Ok::<_, SimulationError>((sink.take(), result, started.elapsed()))
        })?;
        let trace_hash = fingerprint(&output)?;
        Ok(SimulatedRun {
            output,
            result,
            trace_hash,
            virtual_elapsed,
            faults_fired: Vec::new(),
        })
    }

    /// Runs the job `runs` times with this seed and checks every run produced the same trace;
    /// returns that trace's fingerprint.
    ///
    /// # Errors
    ///
    /// [`SimulationError::Nondeterministic`] naming the seed and the first differing run, or
    /// any error of [`Simulation::run`].
    pub fn check_deterministic<T, F>(&self, runs: usize, build: F) -> Result<u64, SimulationError>
    where
        T: Data,
        F: Fn(&StreamEnv) -> CollectSink<T>,
    {
        let expected = self.run(&build)?.trace_hash;
        for run in 1..runs {
            let found = self.run(&build)?.trace_hash;
            if found != expected {
                return Err(SimulationError::Nondeterministic {
                    seed: self.seed,
                    run,
                    expected,
                    found,
                });
            }
        }
        Ok(expected)
    }
}

/// What an exactly-once check found.
#[derive(Debug, Clone)]
pub struct ExactlyOnceReport {
    /// The faults planned.
    pub plan: FaultPlan,
    /// The planned faults that happened.
    pub fired: Vec<Fault>,
    /// The records committed (the same in both runs).
    pub records: usize,
    /// The restarts the faulted run took.
    pub restarts: u32,
    /// The fingerprint of the faulted run's committed output.
    pub trace_hash: u64,
}

/// Records of `expected` missing from `found`, and records `found` has more often, as
/// multisets of their postcard bytes.
fn compare<T: serde::Serialize>(
    expected: &[T],
    found: &[T],
) -> Result<(usize, usize), postcard::Error> {
    let mut counts: std::collections::BTreeMap<Vec<u8>, i64> = std::collections::BTreeMap::new();
    for element in expected {
        *counts.entry(postcard::to_stdvec(element)?).or_default() += 1;
    }
    for element in found {
        *counts.entry(postcard::to_stdvec(element)?).or_default() -= 1;
    }
    let missing = counts
        .values()
        .filter(|c| **c > 0)
        .map(|c| *c as usize)
        .sum();
    let duplicated = counts
        .values()
        .filter(|c| **c < 0)
        .map(|c| (-*c) as usize)
        .sum();
    Ok((missing, duplicated))
}

/// The fingerprint of a sequence of elements: each element's postcard bytes, in order, through
/// the stable hash.
///
/// # Errors
///
/// An element could not be serialised.
pub fn fingerprint<T: serde::Serialize>(elements: &[T]) -> Result<u64, postcard::Error> {
    let mut hasher = StableHasher::new();
    hasher.write_u64(elements.len() as u64);
    for element in elements {
        hasher.write_bytes(&postcard::to_stdvec(element)?);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job whose output order depends on the seed (shuffle) and on scheduling (several
    /// parallel paths into one sink): exactly what a seed must pin down.
    fn job(env: &StreamEnv) -> CollectSink<(u64, u64)> {
        env.set_parallelism(4);
        env.configure(|c| {
            c.batch_records_max = 16;
            c.credits_per_channel = 1;
        });
        env.from_generator(3_000, |g| g)
            .shuffle()
            .map(|g| (g % 7, g))
            .key_by(|t: &(u64, u64)| t.0)
            .reduce(|a, b| (a.0, a.1 + b.1))
            .rebalance()
            .map(|t| t)
            .set_parallelism(2)
            .collect_sink()
    }

    #[test]
    fn same_seed_same_trace() {
        let trace = Simulation::new(11).check_deterministic(3, job).unwrap();
        assert_eq!(Simulation::new(11).run(job).unwrap().trace_hash, trace);
    }

    #[test]
    fn the_seed_reaches_the_runtime() {
        // Shuffle routes records by the seeded generator, so other seeds give other traces.
        let traces: std::collections::BTreeSet<u64> = (0..4)
            .map(|seed| Simulation::new(seed).run(job).unwrap().trace_hash)
            .collect();
        assert!(traces.len() > 1, "every seed gave the same trace");
    }

    #[test]
    fn output_is_complete_whatever_the_seed() {
        for seed in 0..4 {
            let run = Simulation::new(seed).run(job).unwrap();
            assert_eq!(run.output.len(), 3_000);
            let mut finals = std::collections::BTreeMap::new();
            for (key, sum) in run.output {
                let entry = finals.entry(key).or_insert(0);
                *entry = sum.max(*entry);
            }
            for key in 0..7u64 {
                let expected: u64 = (0..3_000u64).filter(|g| g % 7 == key).sum();
                assert_eq!(finals[&key], expected, "seed {seed}, key {key}");
            }
        }
    }

    #[test]
    fn fingerprint_depends_on_order() {
        assert_ne!(
            fingerprint(&[1u32, 2]).unwrap(),
            fingerprint(&[2u32, 1]).unwrap()
        );
        assert_eq!(
            fingerprint(&[1u32, 2]).unwrap(),
            fingerprint(&[1u32, 2]).unwrap()
        );
    }
}
