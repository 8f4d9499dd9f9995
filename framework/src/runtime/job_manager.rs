//! The JobManager actor: deploys a job's subtasks onto the TaskManager, tracks them to the end,
//! and reports the job's result.
//!
//! Deployment is two-phase so no message can reach a subtask before it knows its peers: every
//! subtask is spawned, then every subtask gets its `Wire` message, then every subtask gets
//! `Start`. Completion: all subtasks reported `SubtaskFinished`. Failure: the first failure
//! reported by the TaskManager wins; the TaskManager (and with it every subtask) is stopped and
//! the job fails with that error. Cancellation stops everything the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use super::gauges::ChannelGauges;
use super::result::{JobResult, JobStatus, OperatorMetrics};
use super::subtask::{SubtaskArgs, SubtaskMsg};
use super::task_manager::{TaskManagerActor, TaskManagerMsg};
use crate::api::ExecutionConfig;
use crate::error::JobError;
use crate::graph::ExecutionGraph;
use crate::operator::{NodeId, OperatorCounters};

/// Messages of the JobManager.
pub(crate) enum JobManagerMsg {
    /// A subtask processed its whole input and delivered its output.
    SubtaskFinished {
        index: usize,
        metrics: Vec<(NodeId, OperatorCounters)>,
    },
    /// A subtask failed.
    SubtaskFailed {
        index: usize,
        operator: Option<String>,
        task: Option<String>,
        message: String,
    },
    /// Cancel the job.
    Cancel,
}

pub(crate) struct JobManagerArgs {
    pub(crate) graph: Arc<ExecutionGraph>,
    pub(crate) config: ExecutionConfig,
    pub(crate) job_name: String,
    pub(crate) result: oneshot::Sender<Result<JobResult, JobError>>,
}

/// The JobManager actor.
pub(crate) struct JobManagerActor;

pub(crate) struct JobManagerState {
    graph: Arc<ExecutionGraph>,
    job_name: String,
    task_manager: ActorRef<TaskManagerMsg>,
    finished: Vec<bool>,
    remaining: usize,
    counters: BTreeMap<NodeId, OperatorCounters>,
    started_at: tokio::time::Instant,
    gauges: Arc<ChannelGauges>,
    result: Option<oneshot::Sender<Result<JobResult, JobError>>>,
}

impl JobManagerState {
    fn report(&self, status: JobStatus) -> JobResult {
        let job = &self.graph.job;
        let operators = job
            .stream
            .nodes
            .iter()
            .map(|node| {
                let counters = self.counters.get(&node.id).copied().unwrap_or_default();
                OperatorMetrics {
                    node: node.id,
                    name: node.name.clone(),
                    parallelism: job.parallelism[node.id.0 as usize],
                    records_in: counters.records_in,
                    records_out: counters.records_out,
                    late_records: counters.late_records,
                    dropped_records: counters.dropped_records,
                }
            })
            .collect();
        JobResult {
            job_name: self.job_name.clone(),
            status,
            duration: self.started_at.elapsed(),
            operators,
            max_queued_records: self.gauges.max_queued(),
        }
    }

    /// Ends the job with `outcome`: stops every subtask and this actor.
    fn conclude(&mut self, myself: &ActorRef<JobManagerMsg>, outcome: Result<JobResult, JobError>) {
        if let Some(result) = self.result.take() {
            let _ = result.send(outcome);
        }
        self.task_manager.stop(Some("job ended".to_string()));
        myself.stop(None);
    }

    fn task_name(&self, index: usize) -> String {
        let plan = &self.graph.subtasks[index];
        let vertex = &self.graph.job.vertices[plan.id.vertex as usize];
        format!(
            "{} ({}/{})",
            vertex.name,
            plan.id.index + 1,
            vertex.parallelism
        )
    }
}

impl Actor for JobManagerActor {
    type Msg = JobManagerMsg;
    type State = JobManagerState;
    type Arguments = JobManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<JobManagerMsg>,
        args: JobManagerArgs,
    ) -> Result<JobManagerState, ActorProcessingErr> {
        let graph = args.graph;
        let gauges = Arc::new(ChannelGauges::new(graph.channel_count));
        // One processing-time clock per job and node: wall-clock aligned in production, from 0 on
        // a current-thread runtime (tests, the simulator) so runs are reproducible.
        let clock = if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread
        {
            super::TokioClock::new()
        } else {
            super::TokioClock::wall_clock()
        };
        let (task_manager, _) =
            Actor::spawn_linked(None, TaskManagerActor, myself.clone(), myself.get_cell()).await?;
        let specs = (0..graph.subtasks.len())
            .map(|index| SubtaskArgs {
                graph: graph.clone(),
                index,
                config: args.config.clone(),
                job_name: args.job_name.clone(),
                attempt_number: 0,
                job_manager: myself.clone(),
                gauges: gauges.clone(),
                clock,
            })
            .collect();
        let deployed = ractor::call!(task_manager, TaskManagerMsg::Deploy, specs);
        let subtasks = match deployed {
            Ok(Ok(refs)) => refs,
            Ok(Err(message)) => {
                task_manager.stop(None);
                return Err(message.into());
            }
            Err(error) => {
                task_manager.stop(None);
                return Err(format!("task manager unavailable: {error}").into());
            }
        };
        // Phase two: every subtask learns its peers before any subtask starts.
        for (index, subtask) in subtasks.iter().enumerate() {
            let plan = &graph.subtasks[index];
            let outputs = plan
                .outputs
                .iter()
                .map(|c| (subtasks[c.consumer].clone(), c.consumer_input))
                .collect();
            let inputs = plan
                .inputs
                .iter()
                .map(|c| (subtasks[c.producer].clone(), c.producer_output))
                .collect();
            subtask.send_message(SubtaskMsg::Wire { outputs, inputs })?;
        }
        for subtask in &subtasks {
            subtask.send_message(SubtaskMsg::Start)?;
        }
        let count = subtasks.len();
        Ok(JobManagerState {
            graph,
            job_name: args.job_name,
            task_manager,
            finished: vec![false; count],
            remaining: count,
            counters: BTreeMap::new(),
            started_at: tokio::time::Instant::now(),
            gauges,
            result: Some(args.result),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<JobManagerMsg>,
        message: JobManagerMsg,
        state: &mut JobManagerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.result.is_none() {
            return Ok(());
        }
        match message {
            JobManagerMsg::SubtaskFinished { index, metrics } => {
                if !std::mem::replace(&mut state.finished[index], true) {
                    state.remaining -= 1;
                    for (node, counters) in metrics {
                        let total = state.counters.entry(node).or_default();
                        total.records_in += counters.records_in;
                        total.records_out += counters.records_out;
                        total.late_records += counters.late_records;
                        total.dropped_records += counters.dropped_records;
                    }
                }
                if state.remaining == 0 {
                    let report = state.report(JobStatus::Finished);
                    state.conclude(&myself, Ok(report));
                }
            }
            JobManagerMsg::SubtaskFailed {
                index,
                operator,
                task,
                message,
            } => {
                let error = JobError::TaskFailed {
                    task: task.unwrap_or_else(|| state.task_name(index)),
                    operator: operator.unwrap_or_else(|| "(unknown operator)".to_string()),
                    message,
                };
                state.conclude(&myself, Err(error));
            }
            JobManagerMsg::Cancel => {
                let report = state.report(JobStatus::Canceled);
                state.conclude(&myself, Ok(report));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<JobManagerMsg>,
        event: SupervisionEvent,
        state: &mut JobManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(_, error) => {
                let error = JobError::Internal(format!("task manager failed: {error}"));
                state.conclude(&myself, Err(error));
            }
            SupervisionEvent::ActorTerminated(_, _, _) if state.result.is_some() => {
                let error = JobError::Internal("task manager stopped unexpectedly".to_string());
                state.conclude(&myself, Err(error));
            }
            _ => {}
        }
        Ok(())
    }
}
