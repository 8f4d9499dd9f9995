//! The stream execution environment: where a job is declared and executed.
//!
//! The environment holds the stream graph being declared and runs it; it knows no stream type.
//! Its source methods, which hand out the first streams, live in `sources.rs`, above both this
//! file and `datastream.rs`, so that the streams can add their nodes here without a circle.

use std::sync::{Arc, Mutex, MutexGuard};

use super::config::ExecutionConfig;
use crate::error::{GraphError, JobError};
use crate::graph::{JobDescriptor, JobGraph, StreamGraph, StreamNode};
use crate::operator::NodeId;
use crate::runtime::registry::{OperatorEntry, OperatorRegistry};
use crate::runtime::{BlockingPolicy, JobHandle, JobResult, RuntimeEnv};

/// The context in which a streaming job is declared and executed (Flink's
/// `StreamExecutionEnvironment`).
///
/// Cloning gives another handle to the same job.
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let env = StreamEnv::new();
/// env.set_parallelism(2);
/// let doubled = env
///     .from_collection(vec![1i64, 2, 3])
///     .map(|x| x * 2)
///     .collect_sink();
/// let result = env.execute("double").await?;
/// let mut values = doubled.take();
/// values.sort();
/// assert_eq!(values, vec![2, 4, 6]);
/// assert_eq!(result.operator("Map").map(|m| m.records_in), Some(3));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct StreamEnv {
    inner: Arc<Mutex<EnvInner>>,
}

#[derive(Default)]
pub(crate) struct EnvInner {
    pub(crate) graph: StreamGraph,
    /// The code of the graph's operators and edges, by node id and edge index.
    pub(crate) registry: OperatorRegistry,
    pub(crate) config: ExecutionConfig,
    /// API misuse found while declaring; reported by `execute`.
    pub(crate) errors: Vec<GraphError>,
    /// The runtime environment set with [`StreamEnv::set_runtime_env`]; `None` picks the
    /// default at `execute` ([`runtime_env_for_run`]).
    pub(crate) runtime_env: Option<RuntimeEnv>,
    /// Where the job's REST server is (issue 17): none, an address to serve on while the job
    /// runs, or a server the application owns.
    pub(crate) rest: Option<RestTarget>,
}

/// Where [`StreamEnv::execute`] publishes the job's status.
#[derive(Debug, Clone)]
pub(crate) enum RestTarget {
    /// Start a server on this address for the run; it stops when the job ended.
    Addr(String),
    /// Register with a server the application owns.
    Server(crate::rest::RestRegistrar),
}

impl std::fmt::Debug for StreamEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("StreamEnv")
            .field("config", &inner.config)
            .field("operators", &inner.graph.nodes.len())
            .finish()
    }
}

impl StreamEnv {
    /// An environment with the default [`ExecutionConfig`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An environment with `config`.
    pub fn with_config(config: ExecutionConfig) -> Self {
        let env = Self::new();
        env.lock().config = config;
        env
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, EnvInner> {
        // The lock is only held for short graph edits that do not call user code, so a poisoned
        // lock can only come from a panic in this module; the graph data is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the default parallelism of operators.
    pub fn set_parallelism(&self, parallelism: u32) -> &Self {
        self.lock().config.parallelism = parallelism;
        self
    }

    /// Sets the max parallelism (the number of key groups).
    pub fn set_max_parallelism(&self, max_parallelism: u32) -> &Self {
        self.lock().config.max_parallelism = max_parallelism;
        self
    }

    /// Sets how long a partially filled batch may wait, in milliseconds (Flink's
    /// `setBufferTimeout`).
    pub fn set_buffer_timeout_ms(&self, timeout_ms: u64) -> &Self {
        self.lock().config.buffer_timeout_ms = timeout_ms;
        self
    }

    /// Turns operator chaining off for the whole job.
    pub fn disable_operator_chaining(&self) -> &Self {
        self.lock().config.chaining_enabled = false;
        self
    }

    /// Takes a checkpoint every `interval_ms` milliseconds (exactly-once by default), as
    /// Flink's `enableCheckpointing`. Failed subtasks then restart from the latest one.
    pub fn enable_checkpointing(&self, interval_ms: u64) -> &Self {
        self.lock().config.checkpointing.interval_ms = Some(interval_ms);
        self
    }

    /// Writes checkpoints below `directory`, in a folder per run named by its job id
    /// (`<directory>/<job id>/chk-<n>`, layout in [`crate::checkpoint::storage`]), instead of
    /// keeping them in memory.
    pub fn set_checkpoint_storage(&self, directory: impl Into<std::path::PathBuf>) -> &Self {
        self.lock().config.checkpointing.directory = Some(directory.into());
        self
    }

    /// Chooses where keyed state lives.
    pub fn set_state_backend(&self, backend: crate::state::StateBackendKind) -> &Self {
        self.lock().config.state_backend = backend;
        self
    }

    /// Sets the restart strategy.
    pub fn set_restart_strategy(&self, strategy: crate::checkpoint::RestartStrategy) -> &Self {
        self.lock().config.restart_strategy = Some(strategy);
        self
    }

    /// Starts the job from a savepoint or a retained checkpoint (Flink's `-s <path>`): a
    /// `savepoint-<id>` folder, a `chk-<id>` folder of an earlier run, or an earlier run's
    /// checkpoint folder `<checkpoint dir>/<job id>` (its newest intact checkpoint). Without
    /// this, a job starts empty: a new run never picks up another run's checkpoints by itself.
    /// Operators find their state by uid; state of an operator that no longer exists is an
    /// error unless `allow_non_restored_state`.
    pub fn restore_from(
        &self,
        path: impl Into<std::path::PathBuf>,
        allow_non_restored_state: bool,
    ) -> &Self {
        self.lock().config.restore = Some(super::RestoreSettings {
            path: path.into(),
            allow_non_restored_state,
        });
        self
    }

    /// Lets a restart fall back past a damaged or missing checkpoint even when exactly-once
    /// sinks already committed its transactions, accepting that their output is written again
    /// (see [`CheckpointConfig::allow_fallback_past_commits`](super::CheckpointConfig)). Off
    /// by default: the job fails instead, naming what would be duplicated.
    pub fn allow_fallback_past_commits(&self, allow: bool) -> &Self {
        self.lock().config.checkpointing.allow_fallback_past_commits = allow;
        self
    }

    /// Fixes the id of the next run instead of letting the runtime pick a new one (for
    /// reproducible runs; see [`ExecutionConfig::job_id`]).
    pub fn set_job_id(&self, job_id: crate::checkpoint::JobId) -> &Self {
        self.lock().config.job_id = Some(job_id);
        self
    }

    /// Changes any setting.
    pub fn configure(&self, f: impl FnOnce(&mut ExecutionConfig)) -> &Self {
        f(&mut self.lock().config);
        self
    }

    /// The current settings.
    pub fn config(&self) -> ExecutionConfig {
        self.lock().config.clone()
    }

    /// Runs the job in `runtime_env`: the node's clock, where subtasks run, how blocking work
    /// runs, the node's seed and id, and checkpoint storage (see [`RuntimeEnv`]).
    ///
    /// Without one, `execute` picks [`RuntimeEnv::deterministic`]`(0)` on a current-thread tokio
    /// runtime (tests, doctests: a clock from 0, every subtask on that thread) and
    /// [`RuntimeEnv::production`] on a multi-thread one (`#[tokio::main]`: a wall-clock
    /// aligned clock, a thread per subtask). That default is the only place Eichhorn looks at
    /// the tokio runtime; with an env set, it looks only to refuse
    /// [`BlockingPolicy::BlockInPlace`] on a current-thread runtime, where tokio would panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::prelude::*;
    /// use eichhorn::runtime::RuntimeEnv;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), eichhorn::Error> {
    /// let env = StreamEnv::new();
    /// env.set_runtime_env(RuntimeEnv::deterministic(7));
    /// let out = env.from_collection(vec![1u32, 2]).map(|x| x + 1).collect_sink();
    /// env.execute("plus one").await?;
    /// assert_eq!(out.take(), [2, 3]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_runtime_env(&self, runtime_env: RuntimeEnv) -> &Self {
        self.lock().runtime_env = Some(runtime_env);
        self
    }

    /// Serves the job's REST API, Prometheus metrics and dashboard on `addr` while it runs
    /// (Flink's `rest.address`/`rest.port`; `"127.0.0.1:0"` picks a free port, see
    /// [`JobHandle::rest_addr`]). The server stops when the job ended and
    /// [`JobHandle::join`] returned. A bounded job run from a terminal also shows a progress
    /// line on stderr, with or without this.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let env = StreamEnv::new();
    /// env.set_rest_addr("127.0.0.1:0");
    /// env.from_collection(vec![1u32, 2, 3]).map(|x| x + 1).collect_sink();
    /// let job = env.execute_async("plus one").await?;
    /// let addr = job.rest_addr().expect("a server");
    /// assert!(addr.port() > 0);
    /// job.join().await?;
    /// # Ok(()) }
    /// ```
    pub fn set_rest_addr(&self, addr: impl Into<String>) -> &Self {
        self.lock().rest = Some(RestTarget::Addr(addr.into()));
        self
    }

    /// Publishes the jobs this environment runs on `server`, which the application owns (and
    /// which outlives the jobs: the final state stays readable).
    pub fn set_rest_server(&self, server: &crate::rest::RestServer) -> &Self {
        self.lock().rest = Some(RestTarget::Server(server.registrar()));
        self
    }

    /// Adds `node` to the graph and its code, `entry`, to the registry.
    pub(crate) fn add_node(&self, node: StreamNode, entry: OperatorEntry) -> NodeId {
        debug_assert_eq!(node.kind, entry.factory.kind());
        let mut inner = self.lock();
        let id = inner.graph.add_node(node);
        inner.registry.add_operator(id, entry);
        id
    }

    /// Sets `node`'s uid to `uid` unless it has one; a uid another node already has gets the
    /// suffix `#2`, `#3`, ... (see `DataStream::with_default_uid`).
    pub(crate) fn assign_default_uid(&self, node: NodeId, uid: &str) {
        let mut inner = self.lock();
        if inner.graph.node(node).uid.is_some() {
            return;
        }
        let taken = |candidate: &str| {
            inner
                .graph
                .nodes
                .iter()
                .any(|n| n.uid.as_deref() == Some(candidate))
        };
        let mut candidate = uid.to_string();
        let mut occurrence = 1;
        while taken(&candidate) {
            occurrence += 1;
            candidate = format!("{uid}#{occurrence}");
        }
        inner.graph.node_mut(node).uid = Some(candidate);
    }

    pub(crate) fn record_error(&self, error: GraphError) {
        self.lock().errors.push(error);
    }

    #[allow(clippy::type_complexity)]
    pub(crate) fn take_graph(
        &self,
    ) -> Result<
        (
            StreamGraph,
            OperatorRegistry,
            ExecutionConfig,
            Option<RuntimeEnv>,
        ),
        GraphError,
    > {
        let mut inner = self.lock();
        if let Some(error) = inner.errors.first().cloned() {
            inner.errors.clear();
            return Err(error);
        }
        Ok((
            std::mem::take(&mut inner.graph),
            std::mem::take(&mut inner.registry),
            inner.config.clone(),
            inner.runtime_env.clone(),
        ))
    }

    /// The declared job as data, as `execute` would run it in this process: its graphs,
    /// configuration and placement, with the fingerprint every process that runs the same
    /// job-building code agrees on ([`JobDescriptor::fingerprint`]). The environment keeps
    /// the job.
    ///
    /// # Errors
    ///
    /// The graph or configuration is invalid.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::prelude::*;
    ///
    /// fn build(env: &StreamEnv) {
    ///     env.from_collection(vec![1u32, 2, 3]).map(|x| x * 2).collect_sink();
    /// }
    /// let (first, second) = (StreamEnv::new(), StreamEnv::new());
    /// build(&first);
    /// build(&second);
    /// let first = first.job_descriptor("double")?;
    /// let second = second.job_descriptor("double")?;
    /// assert_eq!(first.fingerprint()?, second.fingerprint()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn job_descriptor(&self, job_name: &str) -> Result<JobDescriptor, GraphError> {
        let inner = self.lock();
        if let Some(error) = inner.errors.first() {
            return Err(error.clone());
        }
        JobDescriptor::local(job_name, inner.graph.clone(), inner.config.clone())
    }

    /// The chained job graph as text: tasks, their operators and parallelism, and the
    /// partitioning between them.
    ///
    /// # Errors
    ///
    /// The graph or configuration is invalid.
    pub fn explain(&self) -> Result<String, GraphError> {
        let inner = self.lock();
        if let Some(error) = inner.errors.first() {
            return Err(error.clone());
        }
        Ok(JobGraph::build(inner.graph.clone(), &inner.config)?.explain())
    }

    /// Starts the declared job and returns a handle to wait for it or cancel it (for unbounded
    /// jobs). The environment is empty afterwards, as in Flink.
    ///
    /// # Errors
    ///
    /// The graph or configuration is invalid, or deployment failed.
    pub async fn execute_async(&self, job_name: &str) -> Result<JobHandle, JobError> {
        let (graph, registry, config, runtime_env) = self.take_graph()?;
        let rest = self.lock().rest.clone();
        let descriptor = JobDescriptor::local(job_name, graph, config)?;
        let runtime_env = runtime_env_for_run(runtime_env)?;
        // Bound before the job starts: a port that is taken fails the run, not a running job.
        let server = match &rest {
            Some(RestTarget::Addr(addr)) => Some(
                crate::rest::RestServer::bind(addr.as_str())
                    .await
                    .map_err(|e| JobError::Deploy(e.to_string()))?,
            ),
            _ => None,
        };
        // The job's status is published before it is deployed, so a JobManager waiting for
        // TaskManagers already shows the job.
        let registrar = match &rest {
            Some(RestTarget::Server(registrar)) => Some(registrar.clone()),
            _ => None,
        };
        let publish_to = server.as_ref().map(|server| server.registrar());
        let publish: crate::runtime::StatusPublisher = Box::new(move |status| {
            if let Some(registrar) = registrar {
                registrar.register(Arc::clone(&status));
            }
            if let Some(server) = publish_to {
                server.register(status);
            }
        });
        // Inside `cluster::run_application` as JobManager or TaskManager, the cluster runs it
        // (a TaskManager never returns from here).
        let mut handle = match crate::cluster::current_role() {
            Some(role) => {
                role.execute(descriptor, registry, runtime_env, publish)
                    .await?
            }
            None => crate::runtime::launch(descriptor, registry, runtime_env, publish).await?,
        };
        if let Some(server) = server {
            handle.set_rest_server(server);
        }
        Ok(handle)
    }

    /// Runs the declared job to completion (a bounded job) and returns its result.
    ///
    /// # Errors
    ///
    /// The graph is invalid, or an operator failed: the error names the operator and subtask.
    pub async fn execute(&self, job_name: &str) -> Result<JobResult, JobError> {
        let handle = self.execute_async(job_name).await?;
        let progress =
            crate::metrics::progress::start_if_terminal(handle.metrics().clone(), handle.clock());
        let result = handle.join().await;
        if let Some(progress) = progress {
            progress.finish().await;
        }
        result
    }
}

/// The runtime environment of a run: the one the application set, or the default.
///
/// This is the only place in Eichhorn that reads the tokio runtime's flavour, once per run:
/// to keep every job that never set a [`RuntimeEnv`] running as it always did (deterministic
/// on a current-thread runtime, as tests and doctests expect; production on a multi-thread
/// one, as `#[tokio::main]` programs expect), and to refuse an env tokio cannot honour here.
/// Everything below (the JobManager, TaskManager, subtasks, checkpoint writer) receives the
/// env and never looks.
///
/// # Errors
///
/// [`JobError::Deploy`] for an env with [`BlockingPolicy::BlockInPlace`] on a current-thread
/// runtime (tokio's `block_in_place` would panic at the first checkpoint).
fn runtime_env_for_run(set: Option<RuntimeEnv>) -> Result<RuntimeEnv, JobError> {
    let current_thread = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread;
    match set {
        None if current_thread => Ok(RuntimeEnv::deterministic(0)),
        None => Ok(RuntimeEnv::production()),
        Some(env) if current_thread && env.blocking() == BlockingPolicy::BlockInPlace => {
            Err(JobError::Deploy(
                "the runtime environment runs blocking work with BlockingPolicy::BlockInPlace, \
                 which needs a multi-thread tokio runtime, but the job runs on a current-thread \
                 runtime: use a multi-thread runtime, RuntimeEnv::deterministic, or \
                 .with_blocking(BlockingPolicy::RunInPlace)"
                    .to_string(),
            ))
        }
        Some(env) => Ok(env),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::TaskExecutor;

    #[tokio::test(flavor = "current_thread")]
    async fn the_default_on_a_current_thread_runtime_is_deterministic() {
        let env = runtime_env_for_run(None).expect("an env");
        assert_eq!(env.executor(), TaskExecutor::Shared);
        assert_eq!(env.blocking(), BlockingPolicy::RunInPlace);
        assert!(env.clock().now_ms() < 60_000, "from 0, not the wall clock");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_default_on_a_multi_thread_runtime_is_production() {
        let env = runtime_env_for_run(None).expect("an env");
        assert_eq!(env.executor(), TaskExecutor::DedicatedThreads);
        assert_eq!(env.blocking(), BlockingPolicy::BlockInPlace);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn block_in_place_on_a_current_thread_runtime_is_refused() {
        let Err(JobError::Deploy(message)) = runtime_env_for_run(Some(RuntimeEnv::production()))
        else {
            panic!("production on a current-thread runtime must be refused");
        };
        assert!(message.contains("current-thread"), "{message}");
        let env = RuntimeEnv::production().with_blocking(BlockingPolicy::RunInPlace);
        let env = runtime_env_for_run(Some(env)).expect("threads work anywhere");
        assert_eq!(env.executor(), TaskExecutor::DedicatedThreads);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_set_env_is_used_as_it_is() {
        let env = runtime_env_for_run(Some(RuntimeEnv::deterministic(3))).expect("an env");
        assert_eq!((env.seed(), env.executor()), (3, TaskExecutor::Shared));
    }
}
