//! The actor runtime: JobManager, TaskManager and subtask actors, channels and credits.
//!
//! ```text
//! JobManager --(supervises)--> TaskManager --(supervises)--> Subtask actors (one per chain instance)
//! ```
//!
//! Subtasks exchange batches of stream elements as actor messages, under credit-based flow control
//! ([`crate::exchange::credit`]). Everything environmental (the clock, where subtasks run, how blocking work runs,
//! checkpoint storage) comes in through a [`RuntimeEnv`]; with [`RuntimeEnv::deterministic`] on a
//! current-thread runtime with paused time the whole job is deterministic (see
//! `tests/determinism.rs`).

mod assemble;
mod checkpoint_writer;
mod clock;
pub mod cluster;
mod env;
mod gauges;
#[cfg(test)]
mod harness;
pub(crate) mod head;
mod job_core;
mod job_manager;
pub(crate) mod partitioner;
mod protocol;
pub(crate) mod registry;
mod result;
mod status;
mod subtask;
mod subtask_core;
mod task_manager;
#[cfg(test)]
pub(crate) mod test_alloc;
pub(crate) mod writer;

use std::sync::Arc;

use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;

// Credit accounting moved to the exchange layer; the old path keeps resolving.
pub use crate::exchange::credit;
pub use clock::TokioClock;
pub use env::{
    BlockingPolicy, FaultInjector, HostId, InjectedFault, RuntimeEnv, SubtaskInput, TaskExecutor,
};
// The edge's data moved to the graph; the old paths keep resolving.
pub use crate::graph::{InputSide, PartitionKind};
pub use partitioner::SelectContext;
pub use result::{JobResult, JobStatus, OperatorMetrics};

use crate::error::JobError;
use crate::graph::{JobDescriptor, TaskManagerId};
use job_manager::{JobManagerActor, JobManagerArgs};
use protocol::JobManagerMsg;

/// Publishes a job's status (to REST servers) as soon as it exists, before it is deployed.
pub(crate) type StatusPublisher = Box<dyn FnOnce(Arc<dyn crate::rest::JobStatusSource>) + Send>;

/// A running job: wait for its end or cancel it.
#[derive(Debug)]
pub struct JobHandle {
    job_id: crate::checkpoint::JobId,
    status: Arc<status::LocalJobStatus>,
    /// The REST server this run started itself (`StreamEnv::set_rest_addr`), shut down after
    /// the job ended.
    rest: Option<crate::rest::RestServer>,
    job_manager: ActorRef<JobManagerMsg>,
    result: oneshot::Receiver<Result<JobResult, JobError>>,
}

impl std::fmt::Debug for JobManagerMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobManagerMsg")
    }
}

impl JobHandle {
    /// The id of this run: its checkpoints are in `<checkpoint dir>/<job id>/`.
    pub fn job_id(&self) -> crate::checkpoint::JobId {
        self.job_id
    }

    /// What the REST server reads about this job: its status, checkpoints, exceptions and
    /// live metrics. Register it with [`RestServer::register`](crate::rest::RestServer::register)
    /// to serve a job started without [`StreamEnv::set_rest_addr`](crate::api::StreamEnv::set_rest_addr).
    pub fn status_source(&self) -> Arc<dyn crate::rest::JobStatusSource> {
        self.status.clone()
    }

    /// The live metrics of every subtask.
    pub fn metrics(&self) -> &crate::metrics::JobMetrics {
        self.status.metrics()
    }

    /// The processing-time clock of the node that runs the job (from its runtime environment).
    pub(crate) fn clock(&self) -> Arc<dyn crate::time::Clock> {
        self.status.clock()
    }

    /// The address of the REST server this run started (with
    /// [`StreamEnv::set_rest_addr`](crate::api::StreamEnv::set_rest_addr)), if any.
    pub fn rest_addr(&self) -> Option<std::net::SocketAddr> {
        self.rest.as_ref().map(crate::rest::RestServer::local_addr)
    }

    pub(crate) fn set_rest_server(&mut self, server: crate::rest::RestServer) {
        self.rest = Some(server);
    }

    /// Waits for the job to end. A REST server the run started itself serves the final
    /// state until this returns.
    ///
    /// # Errors
    ///
    /// The job failed: the error names the operator and subtask.
    pub async fn join(self) -> Result<JobResult, JobError> {
        let outcome = match self.result.await {
            Ok(outcome) => outcome,
            Err(_) => Err(JobError::Internal(
                "the job manager stopped without a result".to_string(),
            )),
        };
        if let Some(server) = self.rest {
            server.shutdown().await;
        }
        outcome
    }

    /// Takes a savepoint of the running job into a new folder below `target` and returns its
    /// path (`<target>/savepoint-<id>`). Start a job from it with
    /// [`StreamEnv::restore_from`](crate::api::StreamEnv::restore_from).
    ///
    /// # Errors
    ///
    /// The job ended first, or a subtask or storage failed to take it.
    pub async fn trigger_savepoint(
        &self,
        target: impl Into<std::path::PathBuf>,
    ) -> Result<std::path::PathBuf, JobError> {
        self.savepoint(target.into(), false).await
    }

    /// Takes a savepoint, then stops the job (Flink's stop-with-savepoint). [`JobHandle::join`]
    /// returns a [`JobStatus::Canceled`] result.
    ///
    /// A bounded job whose input ends before the savepoint is taken finishes instead: the
    /// savepoint becomes its final checkpoint (the final state, with all output committed) and
    /// `join` returns [`JobStatus::Finished`]; when the final checkpoint had already started or
    /// the job already ended, this returns an error saying so, and the output is committed all
    /// the same. No partial savepoint folder is left behind either way.
    ///
    /// # Errors
    ///
    /// As [`JobHandle::trigger_savepoint`]; the job keeps running if the savepoint failed.
    pub async fn stop_with_savepoint(
        &self,
        target: impl Into<std::path::PathBuf>,
    ) -> Result<std::path::PathBuf, JobError> {
        self.savepoint(target.into(), true).await
    }

    async fn savepoint(
        &self,
        target: std::path::PathBuf,
        stop: bool,
    ) -> Result<std::path::PathBuf, JobError> {
        let (reply, receiver) = oneshot::channel();
        self.job_manager
            .send_message(JobManagerMsg::TriggerSavepoint {
                target,
                stop,
                reply,
            })
            .map_err(|_| {
                JobError::Checkpoint(
                    "the job already ended, so no savepoint was taken (join() returns its \
                     result)"
                        .to_string(),
                )
            })?;
        receiver.await.map_err(|_| {
            JobError::Checkpoint("the job already ended before the savepoint was taken".to_string())
        })?
    }

    /// Asks the job to stop. [`JobHandle::join`] then returns a [`JobStatus::Canceled`] result
    /// (or the job's own end, if it finished first).
    pub fn cancel(&self) {
        // A job manager that is gone has already produced its result.
        let _ = self.job_manager.send_message(JobManagerMsg::Cancel);
    }
}

/// Deploys the job `descriptor` describes on this process, in `env`, building its operators
/// from `registry`, and starts it.
///
/// The descriptor must be placed on this process's one TaskManager
/// ([`TaskManagerId::LOCAL`]); the registry must fit the descriptor (both come from the same
/// job-building code).
pub(crate) async fn launch(
    mut descriptor: JobDescriptor,
    registry: registry::OperatorRegistry,
    env: RuntimeEnv,
    publish: StatusPublisher,
) -> Result<JobHandle, JobError> {
    let job_id = descriptor
        .config()
        .job_id
        .unwrap_or_else(clock::generate_job_id);
    descriptor.set_job_id(job_id);
    let (job_name, config, graph, placement) = descriptor.into_parts();
    registry.check(graph.job_graph().stream_graph())?;
    let local = placement.subtasks_on(TaskManagerId::LOCAL).count();
    if local != graph.subtask_count() {
        return Err(JobError::Deploy(format!(
            "{} of {} subtasks are placed on other task managers, but this process runs only {}",
            graph.subtask_count() - local,
            graph.subtask_count(),
            TaskManagerId::LOCAL
        )));
    }
    let run = Run {
        job_name,
        config,
        graph,
        registry: Arc::new(registry),
        job_id,
    };
    spawn_job_manager(run, env, None, publish).await
}

/// Runs the JobManager of a cluster on this process for the job `descriptor` describes: accepts
/// TaskManagers on `node` (sending them `args`, the job's arguments), admits those whose job
/// has this one's fingerprint, and deploys the job on them once they offer enough slots.
///
/// # Errors
///
/// The job's descriptor or registry is invalid.
pub(crate) async fn launch_on_cluster(
    mut descriptor: JobDescriptor,
    registry: registry::OperatorRegistry,
    env: RuntimeEnv,
    node: Arc<crate::net::NetNode>,
    settings: cluster::ClusterSettings,
    args: Vec<String>,
    publish: StatusPublisher,
) -> Result<JobHandle, JobError> {
    let job_id = descriptor
        .config()
        .job_id
        .unwrap_or_else(clock::generate_job_id);
    descriptor.set_job_id(job_id);
    let fingerprint = descriptor
        .fingerprint()
        .map_err(|e| JobError::Deploy(e.to_string()))?;
    let (job_name, config, graph, _) = descriptor.into_parts();
    registry.check(graph.job_graph().stream_graph())?;
    if config.checkpointing.interval_ms.is_some() && config.checkpointing.directory.is_none() {
        return Err(JobError::Deploy(
            "a job on a cluster keeps its checkpoints in a directory every node reaches: set a \
             checkpoint directory (StreamEnv::set_checkpoint_dir)"
                .to_string(),
        ));
    }
    let registry = Arc::new(registry);
    tracing::info!(
        job = %job_name,
        fingerprint = %fingerprint,
        address = %node.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "job manager listening for task managers"
    );
    let hub = cluster::job_manager::ClusterJobManager::start(
        node,
        settings,
        args,
        fingerprint.0,
        Arc::clone(&registry),
    );
    let run = Run {
        job_name,
        config,
        graph,
        registry,
        job_id,
    };
    spawn_job_manager(run, env, Some(hub), publish).await
}

/// One run of a job, as the JobManager gets it.
struct Run {
    job_name: String,
    config: crate::api::ExecutionConfig,
    graph: crate::graph::ExecutionGraph,
    registry: Arc<registry::OperatorRegistry>,
    job_id: crate::checkpoint::JobId,
}

async fn spawn_job_manager(
    run: Run,
    env: RuntimeEnv,
    cluster: Option<Arc<cluster::job_manager::ClusterJobManager>>,
    publish: StatusPublisher,
) -> Result<JobHandle, JobError> {
    let Run {
        job_name,
        config,
        graph,
        registry,
        job_id,
    } = run;
    let (sender, receiver) = oneshot::channel();
    let status = Arc::new(status::LocalJobStatus::new(
        job_id,
        &job_name,
        &graph,
        Arc::clone(env.clock()),
    ));
    if let Some(cluster) = &cluster {
        status.set_cluster(Arc::clone(cluster));
    }
    publish(Arc::clone(&status) as Arc<dyn crate::rest::JobStatusSource>);
    let args = JobManagerArgs {
        status: Arc::clone(&status),
        graph: Arc::new(graph),
        registry,
        config,
        job_name,
        job_id,
        env,
        result: sender,
        cluster,
    };
    let (job_manager, _) = Actor::spawn(None, JobManagerActor, args)
        .await
        .map_err(|error| match error {
            // The JobManager's own error (a restore that cannot work, a failed deployment)
            // reaches the user as it is, not wrapped in the actor system's words.
            ractor::SpawnErr::StartupFailed(inner) => match inner.downcast::<JobError>() {
                Ok(job_error) => *job_error,
                Err(other) => JobError::Deploy(other.to_string()),
            },
            other => JobError::Deploy(other.to_string()),
        })?;
    Ok(JobHandle {
        job_id,
        status,
        rest: None,
        job_manager,
        result: receiver,
    })
}
