//! The TaskManager actor: spawns and supervises the subtask actors of one node.
//!
//! Subtasks are linked to it; a failed subtask (panic or error) becomes a supervision event,
//! which the TaskManager reports to the JobManager with the subtask's own error (naming operator
//! and subtask). Stopping the TaskManager stops its subtasks, in index order.
//!
//! Before it spawns a subtask that restores state, the TaskManager reads the subtask's share by
//! state handle: the files its restore plan names, through the node's checkpoint storage, each
//! checked against its handle (length, CRC-32) before it is decoded
//! (`checkpoint::restore_plan::read_share`). The JobManager never holds the state. A file that
//! is missing or damaged fails that subtask when it starts, with an error naming the file and
//! the checkpoint; the job then restarts by its strategy, and the JobManager, checking the
//! checkpoint again, falls back or fails as the restore rules say.

use std::collections::BTreeMap;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use std::sync::Arc;

use super::protocol::{JobManagerMsg, SubtaskArgs, SubtaskMsg, TaskManagerMsg};
use super::subtask::SubtaskActor;
use super::subtask_core::SubtaskError;
use super::{RuntimeEnv, TaskExecutor};
use crate::checkpoint::restore_plan::{SubtaskRestorePlan, read_share};
use crate::checkpoint::storage::CheckpointStore;
use crate::state::OperatorSnapshot;

/// The TaskManager actor.
pub(crate) struct TaskManagerActor;

/// Spawns a subtask on a new OS thread running a current-thread tokio runtime until the actor
/// stops (Flink's thread per task). Supervision is unchanged: the actor is linked to
/// `supervisor` like any other.
///
/// Used when the node's [`RuntimeEnv`](super::RuntimeEnv) says [`TaskExecutor::DedicatedThreads`]
/// (production); the deterministic env (tests, the simulator) runs every subtask on the caller's
/// runtime instead.
async fn spawn_on_dedicated_thread(
    args: SubtaskArgs,
    supervisor: ActorCell,
) -> Result<ActorRef<SubtaskMsg>, String> {
    let (started, started_rx) = tokio::sync::oneshot::channel();
    let name = format!("eichhorn-subtask-{}", args.index);
    // A dedicated thread is the point of this executor: the thread owns the subtask's runtime.
    #[allow(clippy::disallowed_methods)]
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = started.send(Err(format!("cannot build the subtask runtime: {error}")));
                return;
            }
        };
        runtime.block_on(async move {
            match Actor::spawn_linked(None, SubtaskActor, args, supervisor).await {
                Ok((actor, handle)) => {
                    let _ = started.send(Ok(actor));
                    // Keep the runtime alive (timers, socket readers) until the actor ends.
                    let _ = handle.await;
                }
                Err(error) => {
                    let _ = started.send(Err(error.to_string()));
                }
            }
        });
    });
    if let Err(error) = thread {
        return Err(format!("cannot start a subtask thread: {error}"));
    }
    started_rx
        .await
        .map_err(|_| "the subtask thread ended before its actor started".to_string())?
}

/// What a TaskManager actor starts with.
pub(crate) struct TaskManagerArgs {
    /// Where reports go.
    pub(crate) job_manager: ActorRef<JobManagerMsg>,
    /// The job attempt its subtasks belong to.
    pub(crate) attempt: u32,
    /// The node's runtime environment: where subtasks run, how blocking reads run.
    pub(crate) env: RuntimeEnv,
    /// The run's checkpoint storage on this node, where restored state is read by handle.
    pub(crate) storage: Arc<dyn CheckpointStore>,
}

/// Reads subtask `index`'s share of a restored checkpoint by its state handles, through the
/// node's checkpoint storage, as the node's blocking policy says; the error names the file and
/// the checkpoint.
fn read_restored(
    state: &TaskManagerState,
    index: usize,
    plan: &SubtaskRestorePlan,
) -> Result<BTreeMap<String, OperatorSnapshot>, String> {
    let storage = state.storage.as_ref();
    let share = state
        .env
        .run_blocking(|| read_share(storage, plan))
        .map_err(|error| error.to_string())?;
    tracing::info!(
        attempt = state.attempt,
        subtask = index,
        "restored checkpoint {} by state handle: {} file(s), {} bytes, from {}",
        plan.checkpoint.0,
        plan.files.len(),
        plan.files.iter().map(|f| f.len).sum::<u64>(),
        plan.location
    );
    Ok(share)
}

pub(crate) struct TaskManagerState {
    job_manager: ActorRef<JobManagerMsg>,
    /// The job attempt these subtasks belong to.
    attempt: u32,
    /// Where subtasks run, from the node's runtime environment.
    executor: TaskExecutor,
    /// The node's runtime environment (its blocking policy runs the restore reads).
    env: RuntimeEnv,
    /// The run's checkpoint storage on this node.
    storage: Arc<dyn CheckpointStore>,
    /// Live subtasks by actor id: (flat subtask index, cell).
    subtasks: BTreeMap<ActorId, (usize, ActorCell)>,
}

impl Actor for TaskManagerActor {
    type Msg = TaskManagerMsg;
    type State = TaskManagerState;
    type Arguments = TaskManagerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<TaskManagerMsg>,
        args: TaskManagerArgs,
    ) -> Result<TaskManagerState, ActorProcessingErr> {
        Ok(TaskManagerState {
            job_manager: args.job_manager,
            attempt: args.attempt,
            executor: args.env.executor(),
            env: args.env,
            storage: args.storage,
            subtasks: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TaskManagerMsg>,
        message: TaskManagerMsg,
        state: &mut TaskManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TaskManagerMsg::Deploy(subtasks, reply) => {
                let mut refs = Vec::with_capacity(subtasks.len());
                for mut args in subtasks {
                    let index = args.index;
                    if let Some(plan) = args.restore.take() {
                        args.restored = read_restored(state, index, &plan);
                    }
                    let spawned = match state.executor {
                        TaskExecutor::DedicatedThreads => {
                            spawn_on_dedicated_thread(args, myself.get_cell()).await
                        }
                        TaskExecutor::Shared => {
                            Actor::spawn_linked(None, SubtaskActor, args, myself.get_cell())
                                .await
                                .map(|(actor, _)| actor)
                                .map_err(|e| e.to_string())
                        }
                    };
                    match spawned {
                        Ok(actor) => {
                            state
                                .subtasks
                                .insert(actor.get_id(), (index, actor.get_cell()));
                            refs.push(actor);
                        }
                        Err(error) => {
                            let _ =
                                reply.send(Err(format!("cannot start subtask {index}: {error}")));
                            return Ok(());
                        }
                    }
                }
                let _ = reply.send(Ok(refs));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<TaskManagerMsg>,
        event: SupervisionEvent,
        state: &mut TaskManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some((index, _)) = state.subtasks.remove(&cell.get_id()) {
                    let (operator, task, message, recoverable) =
                        match error.downcast_ref::<SubtaskError>() {
                            Some(e) => (
                                Some(e.operator.clone()),
                                Some(e.task.clone()),
                                e.message.clone(),
                                e.recoverable,
                            ),
                            None => (None, None, error.to_string(), true),
                        };
                    let _ = state
                        .job_manager
                        .send_message(JobManagerMsg::SubtaskFailed {
                            attempt: state.attempt,
                            index,
                            operator,
                            task,
                            message,
                            recoverable,
                        });
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.subtasks.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TaskManagerMsg>,
        state: &mut TaskManagerState,
    ) -> Result<(), ActorProcessingErr> {
        // Wait until every subtask stopped: a restarted attempt must not overlap with this one
        // (two sinks writing the same files).
        for (_, cell) in state.subtasks.values() {
            let _ = cell
                .stop_and_wait(
                    Some("task manager stopped".to_string()),
                    Some(std::time::Duration::from_secs(60)),
                )
                .await;
        }
        Ok(())
    }
}
