//! The runtime environment: everything environmental a node's runtime needs, passed in
//! explicitly.
//!
//! The JobManager, the TaskManager, the subtasks and the checkpoint writer behave the same
//! everywhere; what differs between production, tests and the simulator is only the
//! [`RuntimeEnv`] they are given: which clock they read, whether each subtask gets a thread of
//! its own, how blocking work runs, the node's seed and id, and where checkpoints go. None of
//! them looks at the tokio runtime to decide. The one place that still does is the default
//! chosen by [`StreamEnv::execute`](crate::api::StreamEnv::execute) when the application set
//! no environment (see [`StreamEnv::set_runtime_env`](crate::api::StreamEnv::set_runtime_env)).
//!
//! ## Invariants
//!
//! - [`BlockingPolicy::BlockInPlace`] needs a multi-thread tokio runtime (tokio's
//!   `block_in_place` panics on a current-thread one); `StreamEnv::execute` refuses that
//!   combination with an error before anything runs.
//! - The clock is shared by every run on the node: a fresh env's clock reads its origin when
//!   the env is made.

use std::sync::Arc;

use crate::checkpoint::storage::{CheckpointStoreProvider, StandardCheckpointStores};
use crate::time::Clock;

use super::TokioClock;

/// Where a node's subtask actors run (the executor policy of a [`RuntimeEnv`]).
///
/// # Examples
///
/// ```
/// use eichhorn::runtime::{RuntimeEnv, TaskExecutor};
///
/// assert_eq!(RuntimeEnv::production().executor(), TaskExecutor::DedicatedThreads);
/// assert_eq!(RuntimeEnv::deterministic(7).executor(), TaskExecutor::Shared);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskExecutor {
    /// On the tokio runtime that runs the job, as ordinary tasks. Deterministic on a
    /// current-thread runtime with paused time (tests, the simulator); on a multi-thread
    /// runtime, work stealing moves subtasks between cores.
    Shared,
    /// Each subtask on its own OS thread with a current-thread tokio runtime, as Flink runs one
    /// thread per task: a subtask keeps its caches (a keyed operator's hash map above all).
    DedicatedThreads,
}

/// How the runtime runs work that blocks its thread (the checkpoint writer encoding frozen
/// stores and ending in fsync: tens of milliseconds).
///
/// # Examples
///
/// ```
/// use eichhorn::runtime::{BlockingPolicy, RuntimeEnv};
///
/// assert_eq!(RuntimeEnv::production().blocking(), BlockingPolicy::BlockInPlace);
/// assert_eq!(RuntimeEnv::deterministic(7).blocking(), BlockingPolicy::RunInPlace);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockingPolicy {
    /// tokio's `block_in_place`: the worker hands its other tasks to another worker first, so
    /// subtasks scheduled there keep running. Needs a multi-thread runtime.
    BlockInPlace,
    /// Runs the work where it is, blocking the thread: the only choice on a current-thread
    /// runtime, and the deterministic one (nothing else runs meanwhile).
    RunInPlace,
}

/// The id of a node (a process with a TaskManager) in a cluster; 0 for a single-process run.
///
/// # Examples
///
/// ```
/// use eichhorn::runtime::{HostId, RuntimeEnv};
///
/// let env = RuntimeEnv::deterministic(1).with_host(HostId(3));
/// assert_eq!(env.host(), HostId(3));
/// assert_eq!(env.host().to_string(), "host-3");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u32);

impl std::fmt::Display for HostId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host-{}", self.0)
    }
}

/// Everything environmental a node's runtime needs: its clock, where subtasks run, how blocking
/// work runs, its seed and id, and its checkpoint storage.
///
/// Production, tests and the simulator differ only in the `RuntimeEnv` they pass, never by
/// looking at the tokio runtime. Pass one with
/// [`StreamEnv::set_runtime_env`](crate::api::StreamEnv::set_runtime_env); without one,
/// `execute` picks [`RuntimeEnv::deterministic`]`(0)` on a current-thread tokio runtime and
/// [`RuntimeEnv::production`] on a multi-thread one.
///
/// Cloning is cheap and shares the clock and the storage.
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
/// use eichhorn::runtime::RuntimeEnv;
///
/// // A multi-thread runtime, but a deterministic environment: every subtask runs on the
/// // caller's runtime, the clock starts at 0, blocking work runs in place.
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), eichhorn::Error> {
/// let env = StreamEnv::new();
/// env.set_runtime_env(RuntimeEnv::deterministic(42));
/// let doubled = env.from_collection(vec![1, 2, 3]).map(|x: i32| x * 2).collect_sink();
/// env.execute("double").await?;
/// let mut values = doubled.take();
/// values.sort();
/// assert_eq!(values, [2, 4, 6]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RuntimeEnv {
    /// The node's processing-time clock, read by the JobManager (checkpoint intervals and
    /// timeouts) and by every subtask (processing-time timers and windows). A trait object so a
    /// node's clock can be skewed or replaced (the simulator).
    clock: Arc<dyn Clock>,
    /// Whether each subtask gets a thread of its own (production: a keyed operator keeps its
    /// caches on one core) or runs on the caller's runtime (determinism needs one thread).
    executor: TaskExecutor,
    /// How the checkpoint writer runs its blocking work: `block_in_place` keeps a multi-thread
    /// runtime's other tasks moving; in place is the only possible and the deterministic choice
    /// on a current-thread runtime.
    blocking: BlockingPolicy,
    /// The seed of the node's own random choices (the simulator derives it from its seed). The
    /// job's choices that every node must agree on (shuffle partitioning) come from
    /// [`ExecutionConfig::seed`](crate::api::ExecutionConfig::seed) instead.
    seed: u64,
    /// Which node this is: 0 in one process; in a cluster (and a simulated one) it tells the
    /// nodes' actors, logs and files apart.
    host: HostId,
    /// Opens each run's checkpoint store: the directory the job configures or memory
    /// ([`StandardCheckpointStores`]) unless replaced (the simulator's fault-injecting
    /// storage).
    checkpoint_stores: Arc<dyn CheckpointStoreProvider>,
    /// Where the simulator makes subtasks fail; `None` (no injection, no cost) except in
    /// simulations and tests.
    faults: Option<Arc<dyn FaultInjector>>,
}

/// Where a subtask is about to handle an input, as a [`FaultInjector`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubtaskInput {
    /// The subtask's flat index in the job (`0..subtasks`).
    pub subtask: usize,
    /// How many subtasks the job has.
    pub subtasks: usize,
    /// The attempt (0 before the first restart).
    pub attempt: u32,
    /// The input about to be handled, counting from 1: a batch on any input channel, a source
    /// poll, or a checkpoint trigger.
    pub input: u64,
    /// The node's processing time now (virtual in a simulation).
    pub now_ms: i64,
}

/// What a [`FaultInjector`] does to a subtask before an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectedFault {
    /// Fail the subtask with a recoverable error saying this, as a panic in its operator would.
    Fail(String),
    /// Stall the subtask this long before it handles the input (a pause, a slow disk): its
    /// mailbox waits while the rest of the job goes on, so messages interleave differently.
    Stall(std::time::Duration),
}

/// Decides where a subtask fails or stalls on purpose: the simulator's fault plan. Production
/// environments have none.
pub trait FaultInjector: Send + Sync + std::fmt::Debug {
    /// Called before a subtask handles an input.
    fn before_input(&self, at: SubtaskInput) -> Option<InjectedFault>;

    /// Called before the node's checkpoint writer stores a subtask's file of checkpoint
    /// `checkpoint`: how long the write takes first (a slow disk), in the node's time. None by
    /// default.
    fn before_checkpoint_write(&self, checkpoint: u64) -> Option<std::time::Duration> {
        let _ = checkpoint;
        None
    }
}

impl RuntimeEnv {
    /// The production environment: a clock reading wall-clock milliseconds since the Unix epoch
    /// (read once, then advanced by tokio's monotone clock, so processing-time windows align
    /// to wall-clock boundaries as in Flink), a dedicated thread per subtask, blocking work in
    /// `block_in_place` (so it needs a multi-thread tokio runtime), seed 0, host 0, standard
    /// checkpoint storage.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::runtime::{BlockingPolicy, RuntimeEnv, TaskExecutor};
    ///
    /// let env = RuntimeEnv::production();
    /// assert_eq!(env.executor(), TaskExecutor::DedicatedThreads);
    /// assert_eq!(env.blocking(), BlockingPolicy::BlockInPlace);
    /// assert!(env.clock().now_ms() > 1_600_000_000_000, "wall-clock aligned");
    /// ```
    pub fn production() -> Self {
        Self {
            clock: Arc::new(TokioClock::wall_clock()),
            executor: TaskExecutor::DedicatedThreads,
            blocking: BlockingPolicy::BlockInPlace,
            seed: 0,
            host: HostId(0),
            checkpoint_stores: Arc::new(StandardCheckpointStores),
            faults: None,
        }
    }

    /// The deterministic environment: a clock reading 0 now on tokio's time (virtual under a
    /// paused runtime), every subtask on the caller's runtime, blocking work run in place, the
    /// node's seed `seed`, host 0, standard checkpoint storage. On a current-thread runtime
    /// with paused time the same job gives the same run, byte for byte.
    ///
    /// Make it inside the runtime that runs the job, right before the run: the clock starts
    /// when the env is made.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::runtime::{BlockingPolicy, RuntimeEnv, TaskExecutor};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let env = RuntimeEnv::deterministic(7);
    /// assert_eq!(env.seed(), 7);
    /// assert_eq!(env.executor(), TaskExecutor::Shared);
    /// assert_eq!(env.blocking(), BlockingPolicy::RunInPlace);
    /// assert_eq!(env.clock().now_ms(), 0);
    /// tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    /// assert_eq!(env.clock().now_ms(), 250);
    /// # }
    /// ```
    pub fn deterministic(seed: u64) -> Self {
        Self {
            clock: Arc::new(TokioClock::new()),
            executor: TaskExecutor::Shared,
            blocking: BlockingPolicy::RunInPlace,
            seed,
            host: HostId(0),
            checkpoint_stores: Arc::new(StandardCheckpointStores),
            faults: None,
        }
    }

    /// This env with `clock` as the node's clock (a skewed or simulated one).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// This env with subtasks run by `executor`.
    pub fn with_executor(mut self, executor: TaskExecutor) -> Self {
        self.executor = executor;
        self
    }

    /// This env with blocking work run by `blocking`.
    pub fn with_blocking(mut self, blocking: BlockingPolicy) -> Self {
        self.blocking = blocking;
        self
    }

    /// This env with the node's seed `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// This env as node `host`.
    pub fn with_host(mut self, host: HostId) -> Self {
        self.host = host;
        self
    }

    /// This env with each run's checkpoint store opened by `stores`.
    pub fn with_checkpoint_stores(mut self, stores: Arc<dyn CheckpointStoreProvider>) -> Self {
        self.checkpoint_stores = stores;
        self
    }

    /// This env with subtasks failing where `faults` says (simulations and tests).
    pub fn with_fault_injector(mut self, faults: Arc<dyn FaultInjector>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Where subtasks fail on purpose, if anywhere.
    pub fn fault_injector(&self) -> Option<&Arc<dyn FaultInjector>> {
        self.faults.as_ref()
    }

    /// The node's processing-time clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Where subtasks run.
    pub fn executor(&self) -> TaskExecutor {
        self.executor
    }

    /// How blocking work runs.
    pub fn blocking(&self) -> BlockingPolicy {
        self.blocking
    }

    /// The node's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Which node this is.
    pub fn host(&self) -> HostId {
        self.host
    }

    /// What opens each run's checkpoint store.
    pub fn checkpoint_stores(&self) -> &Arc<dyn CheckpointStoreProvider> {
        &self.checkpoint_stores
    }

    /// Runs `work` as the blocking policy says.
    pub(crate) fn run_blocking<R>(&self, work: impl FnOnce() -> R) -> R {
        match self.blocking {
            BlockingPolicy::BlockInPlace => tokio::task::block_in_place(work),
            BlockingPolicy::RunInPlace => work(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::storage::{CheckpointStore, CheckpointStoreProvider};
    use crate::checkpoint::{CheckpointId, JobId};

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn deterministic_env_reads_virtual_time_from_zero() {
        let env = RuntimeEnv::deterministic(99);
        assert_eq!(env.seed(), 99);
        assert_eq!(env.host(), HostId(0));
        assert_eq!(env.executor(), TaskExecutor::Shared);
        assert_eq!(env.blocking(), BlockingPolicy::RunInPlace);
        assert_eq!(env.clock().now_ms(), 0);
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        assert_eq!(env.clock().now_ms(), 3_000);
        // A clone shares the clock.
        assert_eq!(env.clone().clock().now_ms(), 3_000);
        assert_eq!(env.run_blocking(|| 5), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn production_env_is_wall_clock_aligned_with_threads() {
        let env = RuntimeEnv::production();
        assert_eq!(env.executor(), TaskExecutor::DedicatedThreads);
        assert_eq!(env.blocking(), BlockingPolicy::BlockInPlace);
        // 2020-09-13 in Unix milliseconds: a wall clock, not one from 0.
        assert!(env.clock().now_ms() > 1_600_000_000_000);
        assert_eq!(env.run_blocking(|| 5), 5);
    }

    /// A provider that counts the runs it opened, standing in for the simulator's.
    #[derive(Debug, Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl CheckpointStoreProvider for Counting {
        fn open_run(
            &self,
            job_id: JobId,
            run_dir: Option<&std::path::Path>,
        ) -> Arc<dyn CheckpointStore> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            StandardCheckpointStores.open_run(job_id, run_dir)
        }
    }

    #[test]
    fn builders_replace_one_field_each() {
        let counting = Arc::new(Counting::default());
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(1_000_000));
        let env = RuntimeEnv::deterministic(1)
            .with_clock(clock)
            .with_executor(TaskExecutor::DedicatedThreads)
            .with_blocking(BlockingPolicy::BlockInPlace)
            .with_seed(2)
            .with_host(HostId(5))
            .with_checkpoint_stores(counting.clone());
        assert!(env.clock().now_ms() >= 1_000_000);
        assert_eq!(env.executor(), TaskExecutor::DedicatedThreads);
        assert_eq!(env.blocking(), BlockingPolicy::BlockInPlace);
        assert_eq!(env.seed(), 2);
        assert_eq!(env.host(), HostId(5));
        let store = env.checkpoint_stores().open_run(JobId(1), None);
        assert_eq!(store.folder(CheckpointId(3), None).name, "chk-3");
        assert_eq!(counting.0.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
