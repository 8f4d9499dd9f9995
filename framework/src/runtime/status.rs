//! The local JobManager's published status: what the REST server reads about a job run in this
//! process, through [`JobStatusSource`].
//!
//! The JobManager actor calls the `on_*` hooks from its handlers (status events of the job
//! coordinator core, subtask failures, stored state files, the end); readers take a
//! [`JobView`] at any time. The structure (vertices, edges, TaskManagers) is fixed at start;
//! the live part is behind a short lock the JobManager takes per event (never per record), and
//! the metrics are read from the subtasks' atomic cells when a view is taken.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use ractor::ActorRef;
use tokio::sync::oneshot;

use super::protocol::JobManagerMsg;
use crate::checkpoint::storage::StoredState;
use crate::checkpoint::{CheckpointId, JobId};
use crate::graph::ExecutionGraph;
use crate::metrics::JobMetrics;
use crate::rest::{
    BoxFuture, CHECKPOINT_HISTORY_MAX, CheckpointStatus, CheckpointType, CheckpointView,
    CheckpointsView, EXCEPTIONS_MAX, EdgeView, ExceptionView, JobState, JobStatusSource, JobView,
    SubtaskView, TaskManagerView, VertexMetrics, VertexView,
};
use crate::time::Clock;

/// The name of the one TaskManager of a job run in one process.
pub(crate) const LOCAL_TASK_MANAGER: &str = "local";

#[derive(Debug)]
struct Live {
    state: JobState,
    start_ms: i64,
    end_ms: Option<i64>,
    attempt: u32,
    restarts: u32,
    failure: Option<String>,
    checkpoints: CheckpointsView,
    exceptions: VecDeque<ExceptionView>,
}

/// The status of one job run in this process.
pub(crate) struct LocalJobStatus {
    id: JobId,
    name: String,
    /// Vertices without their metrics (filled per view).
    vertices: Vec<VertexView>,
    edges: Vec<EdgeView>,
    subtasks: usize,
    metrics: JobMetrics,
    clock: Arc<dyn Clock>,
    live: Mutex<Live>,
    /// Set once the JobManager runs: the commands go to it.
    job_manager: OnceLock<ActorRef<JobManagerMsg>>,
    /// The cluster's TaskManagers, when the job runs on a cluster.
    cluster: OnceLock<Arc<super::cluster::job_manager::ClusterJobManager>>,
}

impl std::fmt::Debug for LocalJobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalJobStatus")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

impl LocalJobStatus {
    /// The status of job `name` (run `id`) deployed as `graph`, timed by `clock`.
    pub(crate) fn new(
        id: JobId,
        name: &str,
        graph: &ExecutionGraph,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let job = &graph.job;
        let vertices = job
            .vertices
            .iter()
            .enumerate()
            .map(|(v, vertex)| VertexView {
                id: v as u32,
                name: vertex.name.clone(),
                operators: vertex
                    .nodes
                    .iter()
                    .map(|n| job.stream.node(*n).name.clone())
                    .collect(),
                parallelism: vertex.parallelism,
                metrics: VertexMetrics::default(),
                subtasks: Vec::new(),
            })
            .collect();
        let edges = job
            .job_edges
            .iter()
            .map(|&e| {
                let edge = &job.stream.edges[e];
                EdgeView {
                    source: job.vertex_of[edge.source.0 as usize] as u32,
                    target: job.vertex_of[edge.target.0 as usize] as u32,
                    partitioning: job.partition[e].label().to_string(),
                }
            })
            .collect();
        let start_ms = clock.now_ms();
        Self {
            id,
            name: name.to_string(),
            vertices,
            edges,
            subtasks: graph.subtasks.len(),
            metrics: JobMetrics::for_graph(graph, LOCAL_TASK_MANAGER),
            clock,
            live: Mutex::new(Live {
                state: JobState::Created,
                start_ms,
                end_ms: None,
                attempt: 0,
                restarts: 0,
                failure: None,
                checkpoints: CheckpointsView::default(),
                exceptions: VecDeque::new(),
            }),
            job_manager: OnceLock::new(),
            cluster: OnceLock::new(),
        }
    }

    /// The subtasks' live metrics cells.
    pub(crate) fn metrics(&self) -> &JobMetrics {
        &self.metrics
    }

    /// Commands from now on go to `job_manager`.
    pub(crate) fn attach(&self, job_manager: ActorRef<JobManagerMsg>) {
        let _ = self.job_manager.set(job_manager);
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // A panic while holding the lock cannot leave `Live` half-updated in a way that
        // matters to readers: every hook writes whole fields.
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attempt `attempt` runs.
    pub(crate) fn on_running(&self, attempt: u32) {
        let mut live = self.live();
        live.state = JobState::Running;
        live.attempt = attempt;
    }

    /// The job restarts as attempt `attempt`.
    pub(crate) fn on_restarting(&self, attempt: u32) {
        let mut live = self.live();
        live.state = JobState::Restarting;
        live.attempt = attempt;
        live.restarts += 1;
        // Checkpoints of the failed attempt will not complete.
        let now_ms = self.clock.now_ms();
        for checkpoint in &mut live.checkpoints.history {
            if checkpoint.status == CheckpointStatus::InProgress {
                checkpoint.status = CheckpointStatus::Failed;
                checkpoint.end_ms = Some(now_ms);
                checkpoint.failure = Some("the job restarted".to_string());
            }
        }
    }

    /// Subtask `task` failed in `operator`.
    pub(crate) fn on_exception(
        &self,
        attempt: u32,
        task: &str,
        operator: &str,
        message: &str,
        recoverable: bool,
    ) {
        let time_ms = self.clock.now_ms();
        let mut live = self.live();
        if live.exceptions.len() == EXCEPTIONS_MAX {
            live.exceptions.pop_front();
        }
        live.exceptions.push_back(ExceptionView {
            time_ms,
            attempt,
            task: task.to_string(),
            operator: operator.to_string(),
            message: message.to_string(),
            recoverable,
        });
    }

    /// Checkpoint `id` was triggered.
    pub(crate) fn on_checkpoint_triggered(
        &self,
        id: CheckpointId,
        savepoint: bool,
        is_final: bool,
    ) {
        let trigger_ms = self.clock.now_ms();
        let mut live = self.live();
        let history = &mut live.checkpoints.history;
        if history.len() == CHECKPOINT_HISTORY_MAX {
            history.remove(0);
        }
        history.push(CheckpointView {
            id: id.0,
            kind: match (savepoint, is_final) {
                (true, _) => CheckpointType::Savepoint,
                (false, true) => CheckpointType::Final,
                (false, false) => CheckpointType::Checkpoint,
            },
            status: CheckpointStatus::InProgress,
            trigger_ms,
            end_ms: None,
            state_bytes: 0,
            acknowledged: 0,
            failure: None,
        });
    }

    /// Subtask `index`'s state file for checkpoint `id` was stored. The JobManager learns
    /// state sizes here, wherever the subtask runs: on a cluster they are not in the
    /// TaskManagers' reports.
    pub(crate) fn on_state_stored(&self, index: usize, id: CheckpointId, stored: &StoredState) {
        let bytes = stored.file.len;
        if let Some(cells) = self.metrics.subtasks().get(index) {
            cells.set_state_bytes(bytes, &stored.operator_bytes);
        }
        let mut live = self.live();
        if let Some(checkpoint) = live
            .checkpoints
            .history
            .iter_mut()
            .rev()
            .find(|c| c.id == id.0)
        {
            checkpoint.state_bytes += bytes;
            checkpoint.acknowledged += 1;
        }
    }

    /// Checkpoint `id` completed.
    pub(crate) fn on_checkpoint_completed(&self, id: CheckpointId) {
        let now_ms = self.clock.now_ms();
        let mut live = self.live();
        let checkpoints = &mut live.checkpoints;
        checkpoints.completed += 1;
        if let Some(checkpoint) = checkpoints.history.iter_mut().rev().find(|c| c.id == id.0) {
            checkpoint.status = CheckpointStatus::Completed;
            checkpoint.end_ms = Some(now_ms);
            checkpoint.acknowledged = checkpoint.acknowledged.max(self.subtasks);
            checkpoints.latest_completed = Some(checkpoint.clone());
        }
    }

    /// Checkpoint `id` failed.
    pub(crate) fn on_checkpoint_failed(&self, id: CheckpointId, reason: &str) {
        let now_ms = self.clock.now_ms();
        let mut live = self.live();
        let checkpoints = &mut live.checkpoints;
        checkpoints.failed += 1;
        if let Some(checkpoint) = checkpoints.history.iter_mut().rev().find(|c| c.id == id.0) {
            checkpoint.status = CheckpointStatus::Failed;
            checkpoint.end_ms = Some(now_ms);
            checkpoint.failure = Some(reason.to_string());
            checkpoints.latest_failed = Some(checkpoint.clone());
        }
    }

    /// The job ended in `state` (with `failure` if it failed).
    pub(crate) fn on_ended(&self, state: JobState, failure: Option<String>) {
        let now_ms = self.clock.now_ms();
        let mut live = self.live();
        live.state = state;
        live.end_ms = Some(now_ms);
        live.failure = failure;
        for checkpoint in &mut live.checkpoints.history {
            if checkpoint.status == CheckpointStatus::InProgress {
                checkpoint.status = CheckpointStatus::Failed;
                checkpoint.end_ms = Some(now_ms);
                checkpoint.failure = Some("the job ended first".to_string());
            }
        }
    }
}

impl JobStatusSource for LocalJobStatus {
    fn id(&self) -> String {
        self.id.to_string()
    }

    fn view(&self) -> JobView {
        let now_ms = self.clock.now_ms();
        let mut snapshots = self.metrics.snapshot_at(now_ms);
        let cluster = self.cluster.get();
        if let Some(cluster) = cluster {
            // On a cluster the subtasks' metrics live on the TaskManagers, which report them;
            // state sizes are the JobManager's own (it learns them as state files are stored).
            let remote = cluster.remote_metrics();
            for snapshot in &mut snapshots {
                if let Some(reported) = remote.get(&(snapshot.vertex, snapshot.index)) {
                    let mut reported = reported.clone();
                    reported.state_bytes = snapshot.state_bytes;
                    for (theirs, ours) in reported.operators.iter_mut().zip(&snapshot.operators) {
                        theirs.state_bytes = ours.state_bytes;
                    }
                    *snapshot = reported;
                }
            }
        }
        let mut vertices = self.vertices.clone();
        for vertex in &mut vertices {
            let own: Vec<_> = snapshots
                .iter()
                .filter(|s| s.vertex == vertex.id)
                .cloned()
                .collect();
            vertex.metrics = VertexMetrics::sum(&own);
            vertex.subtasks = own
                .into_iter()
                .map(|metrics| SubtaskView {
                    index: metrics.index,
                    task_manager: metrics.task_manager.clone(),
                    metrics,
                })
                .collect();
        }
        let live = self.live();
        JobView {
            id: self.id.to_string(),
            name: self.name.clone(),
            state: live.state,
            start_ms: live.start_ms,
            end_ms: live.end_ms,
            now_ms,
            attempt: live.attempt,
            restarts: live.restarts,
            failure: live.failure.clone(),
            vertices,
            edges: self.edges.clone(),
            checkpoints: live.checkpoints.clone(),
            exceptions: live.exceptions.iter().cloned().collect(),
            task_managers: match cluster {
                Some(cluster) => cluster.task_manager_views(),
                None => self.local_task_managers(&live),
            },
        }
    }

    fn cancel(&self) -> Result<(), String> {
        let job_manager = self
            .job_manager
            .get()
            .ok_or_else(|| "the job is not running yet".to_string())?;
        // A JobManager that is gone ended the job already: cancelling is moot.
        let _ = job_manager.send_message(JobManagerMsg::Cancel);
        Ok(())
    }

    fn savepoint(&self, target: PathBuf, stop: bool) -> BoxFuture<Result<PathBuf, String>> {
        let job_manager = self.job_manager.get().cloned();
        Box::pin(async move {
            let job_manager =
                job_manager.ok_or_else(|| "the job is not running yet".to_string())?;
            let (reply, receiver) = oneshot::channel();
            job_manager
                .send_message(JobManagerMsg::TriggerSavepoint {
                    target,
                    stop,
                    reply,
                })
                .map_err(|_| "the job already ended, so no savepoint was taken".to_string())?;
            match receiver.await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("the job ended before the savepoint was taken".to_string()),
            }
        })
    }
}

impl LocalJobStatus {
    /// The clock the status is timed by (the node's processing time).
    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    /// Shows the TaskManagers of `cluster` instead of the local one.
    pub(crate) fn set_cluster(&self, cluster: Arc<super::cluster::job_manager::ClusterJobManager>) {
        let _ = self.cluster.set(cluster);
    }

    fn local_task_managers(&self, live: &Live) -> Vec<TaskManagerView> {
        vec![TaskManagerView {
            id: LOCAL_TASK_MANAGER.to_string(),
            host: "localhost".to_string(),
            // One process offers a slot per subtask (no slot sharing limits yet).
            slots: self.subtasks as u32,
            slots_used: if live.state.is_terminal() {
                0
            } else {
                self.subtasks as u32
            },
            last_heartbeat_ms: None,
        }]
    }
}
