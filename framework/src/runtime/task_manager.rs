//! The TaskManager actor: spawns and supervises the subtask actors of one node.
//!
//! Subtasks are linked to it; a failed subtask (panic or error) becomes a supervision event,
//! which the TaskManager reports to the JobManager with the subtask's own error (naming operator
//! and subtask). Stopping the TaskManager stops its subtasks, in index order.

use std::collections::BTreeMap;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};

use super::job_manager::JobManagerMsg;
use super::subtask::{SubtaskActor, SubtaskArgs, SubtaskError, SubtaskMsg};

/// Messages of the TaskManager.
pub(crate) enum TaskManagerMsg {
    /// Spawn these subtasks; reply with their refs in the same order.
    Deploy(
        Vec<SubtaskArgs>,
        RpcReplyPort<Result<Vec<ActorRef<SubtaskMsg>>, String>>,
    ),
}

/// The TaskManager actor.
pub(crate) struct TaskManagerActor;

pub(crate) struct TaskManagerState {
    job_manager: ActorRef<JobManagerMsg>,
    /// Live subtasks by actor id: (flat subtask index, cell).
    subtasks: BTreeMap<ActorId, (usize, ActorCell)>,
}

impl Actor for TaskManagerActor {
    type Msg = TaskManagerMsg;
    type State = TaskManagerState;
    type Arguments = ActorRef<JobManagerMsg>;

    async fn pre_start(
        &self,
        _myself: ActorRef<TaskManagerMsg>,
        job_manager: ActorRef<JobManagerMsg>,
    ) -> Result<TaskManagerState, ActorProcessingErr> {
        Ok(TaskManagerState {
            job_manager,
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
                for args in subtasks {
                    let index = args.index;
                    match Actor::spawn_linked(None, SubtaskActor, args, myself.get_cell()).await {
                        Ok((actor, _)) => {
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
                    let (operator, task, message) = match error.downcast_ref::<SubtaskError>() {
                        Some(e) => (
                            Some(e.operator.clone()),
                            Some(e.task.clone()),
                            e.message.clone(),
                        ),
                        None => (None, None, error.to_string()),
                    };
                    let _ = state
                        .job_manager
                        .send_message(JobManagerMsg::SubtaskFailed {
                            index,
                            operator,
                            task,
                            message,
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
        for (_, cell) in state.subtasks.values() {
            cell.stop(Some("task manager stopped".to_string()));
        }
        Ok(())
    }
}
