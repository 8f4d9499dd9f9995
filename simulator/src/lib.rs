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
//! - [`Simulation::check`] and [`Simulation::check_with`] are the whole check, for our
//!   built-in jobs ([`jobs`], run by the `eichhorn-sim` binary) and for users' own jobs in
//!   their tests: a fault-free run as the truth, a run with the seed's faults (crashes, slow
//!   disk and clock skew included), every oracle ([`oracles`]), shrinking, and a replay.
//! - [`network`] and [`quic`] run the framework's QUIC transport, with real TLS, on a simulated
//!   UDP network with seeded faults, byte-identical per seed.
//! - [`cluster`] runs a job on a JobManager and N TaskManagers ([`Simulation::nodes`]) over
//!   that network, through the framework's own cluster code, with node crashes, partitions and
//!   packet faults; every check above works on it.
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

pub mod check;
pub mod cluster;
pub mod committed;
pub mod engine;
pub mod faults;
pub mod jobs;
pub mod network;
pub mod oracles;
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

pub use check::{CheckReport, Failure, RunSummary};
pub use committed::{CommittedOutput, CommittedSink};
#[cfg(feature = "sabotage")]
pub use eichhorn::sabotage::Sabotage;
pub use faults::{Fault, FaultConfig, FaultKind, FaultPlan};
pub use oracles::{Finding, Oracles};

/// A simulation: a seed and the rules of the simulated world.
#[derive(Debug, Clone)]
pub struct Simulation {
    seed: u64,
    /// Simulated nodes: 1 is a single process; more are a JobManager and this many
    /// TaskManagers ([`cluster`]).
    nodes: u32,
    /// Slots each TaskManager offers on a cluster.
    slots_per_node: u32,
    faults: FaultConfig,
    /// A fixed plan instead of the one the seed draws (a replay).
    plan: Option<FaultPlan>,
    /// Virtual time a run may take before it counts as stuck.
    deadline: Duration,
    /// Whether checks keep quiet instead of printing the fault plan to stderr.
    quiet: bool,
    /// Whether a failing check shrinks its plan.
    shrink: bool,
    /// The deliberate bug switched on in faulted runs.
    #[cfg(feature = "sabotage")]
    sabotage: Option<Sabotage>,
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
    /// Every commit of the exactly-once sink in the order it happened (empty for
    /// [`Simulation::run`]).
    pub commit_log: Vec<(String, Vec<T>)>,
    /// Whole-process crashes the run went through.
    pub crashes: u32,
    /// Checkpoints completed, over all runs a crash made.
    pub checkpoints: u64,
    /// Restarts after failures, over all runs a crash made.
    pub restarts: u32,
    /// What happened to datagrams between nodes (`None` on one node).
    pub network: Option<network::NetworkStats>,
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
    /// A check's oracle failed (the finding, the plans, the replay).
    #[error("{0}")]
    Oracle(Box<Failure>),
    /// The simulated cluster could not be set up (an endpoint or a certificate).
    #[error("cannot set up the simulated cluster: {0}")]
    Cluster(String),
    /// The simulation was asked for something it cannot do.
    #[error("{0}")]
    Usage(String),
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
            nodes: 1,
            slots_per_node: 2,
            faults: FaultConfig::default(),
            plan: None,
            deadline: Duration::from_secs(3_600),
            quiet: false,
            shrink: true,
            #[cfg(feature = "sabotage")]
            sabotage: None,
        }
    }

    /// This simulation reporting a failing check's plan as it is, without shrinking it (a
    /// sweep shrinks only its first failure).
    pub fn without_shrinking(mut self) -> Self {
        self.shrink = false;
        self
    }

    /// This simulation with `nodes` nodes. 1 (the default) runs the job in one process; 2 or
    /// more run a JobManager and `nodes` TaskManagers, each a node with its own environment,
    /// joined over real QUIC on the simulated network ([`cluster`]). 0 counts as 1.
    pub fn nodes(mut self, nodes: u32) -> Self {
        self.nodes = nodes.max(1);
        self
    }

    /// This simulation with `slots` slots on each TaskManager of a cluster (default 2; at
    /// least 1). A job needs as many slots in total as its largest parallelism.
    pub fn slots_per_node(mut self, slots: u32) -> Self {
        self.slots_per_node = slots.max(1);
        self
    }

    /// The simulated nodes.
    pub fn node_count(&self) -> u32 {
        self.nodes
    }

    /// This simulation with `plan` instead of the plan its seed draws (a replay of a shrunk
    /// plan; see [`FaultPlan::parse_spec`]).
    pub fn with_plan(mut self, plan: FaultPlan) -> Self {
        self.plan = Some(plan);
        self
    }

    /// This simulation without printing fault plans to stderr.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// This simulation with the deliberate bug `sabotage` switched on in its faulted runs.
    #[cfg(feature = "sabotage")]
    pub fn with_sabotage(mut self, sabotage: Sabotage) -> Self {
        self.sabotage = Some(sabotage);
        self
    }

    /// This simulation with no sabotage.
    pub(crate) fn without_sabotage(&self) -> Self {
        #[cfg_attr(not(feature = "sabotage"), allow(unused_mut))]
        let mut clean = self.clone();
        #[cfg(feature = "sabotage")]
        {
            clean.sabotage = None;
        }
        clean
    }

    /// The name of the sabotage switched on, if any.
    pub(crate) fn sabotage_name(&self) -> Option<String> {
        #[cfg(feature = "sabotage")]
        return self.sabotage.map(|s| s.name().to_string());
        #[cfg(not(feature = "sabotage"))]
        None
    }

    /// This simulation drawing its fault plans with `config`.
    pub fn with_faults(mut self, config: FaultConfig) -> Self {
        self.faults = config;
        self
    }

    /// The fault plan of this simulation: the one its seed draws, or the one set with
    /// [`Simulation::with_plan`].
    ///
    /// The seed draws for the number of nodes: on one node no network faults (there is no
    /// network); on several, a crash is a TaskManager node's ([`Fault::NodeCrash`]), not the
    /// whole process's.
    pub fn fault_plan(&self) -> FaultPlan {
        self.plan.clone().unwrap_or_else(|| {
            let mut config = self.faults.clone();
            if self.nodes > 1 {
                config.node_crashes += config.crashes;
                config.crashes = 0;
            } else {
                config.node_crashes = 0;
                config.partitions = 0;
                config.packet_loss_max_per_mille = 0;
                config.node_restarts = 0;
            }
            FaultPlan::from_seed(self.seed, &config)
        })
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
        let (missing, duplicated) = oracles::compare(&expected.output, &faulted.output)?;
        if missing == 0 && duplicated == 0 {
            return Ok(ExactlyOnceReport {
                plan,
                fired: faulted.faults_fired,
                records: expected.output.len(),
                restarts: faulted.restarts,
                trace_hash: faulted.trace_hash,
            });
        }
        let shrunk = plan.shrink(|candidate| {
            self.run_committed(&build, candidate)
                .ok()
                .and_then(|run| oracles::compare(&expected.output, &run.output).ok())
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

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Builds a job with `build` (which declares the job on the environment and returns the
    /// collect sink to observe) and runs it to completion on virtual time. On several nodes
    /// every node calls `build`, and the trace hash also covers every datagram.
    ///
    /// # Errors
    ///
    /// The job failed, or the runtime could not be built.
    pub fn run<T, F>(&self, build: F) -> Result<SimulatedRun<T>, SimulationError>
    where
        T: Data,
        F: Fn(&StreamEnv) -> CollectSink<T>,
    {
        if self.nodes > 1 {
            return self.run_on_cluster(&build);
        }
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
            trace_hash,
            virtual_elapsed,
            faults_fired: Vec::new(),
            commit_log: Vec::new(),
            crashes: 0,
            checkpoints: result.completed_checkpoints,
            restarts: result.restarts,
            network: None,
            result,
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

/// The fingerprint of a sequence of elements: each element's postcard bytes, in order, through
/// the stable hash.
///
/// # Errors
///
/// An element could not be serialised.
pub fn fingerprint<T: serde::Serialize>(elements: &[T]) -> Result<u64, postcard::Error> {
    let mut hasher = StableHasher::new();
    hasher.write_u64(elements.len() as u64);
    // One buffer for every element: the same bytes as `to_stdvec`, one allocation.
    let mut buffer = Vec::new();
    for element in elements {
        buffer.clear();
        buffer = postcard::to_extend(element, buffer)?;
        hasher.write_bytes(&buffer);
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
