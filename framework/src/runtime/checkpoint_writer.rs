//! The checkpoint writer: completes subtasks' pending snapshots and stores them, off the data
//! path.
//!
//! Subtasks hand their snapshots to the JobManager at the barrier and go on processing; this
//! actor runs deferred parts (an LMDB backend's read transaction opened at the barrier), encodes
//! the subtask's state file, writes it through [`CheckpointStorage`] and reports the result.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::job_manager::JobManagerMsg;
use crate::checkpoint::CheckpointId;
use crate::checkpoint::storage::{
    CheckpointFolder, CheckpointStorage, TaskStateFile, encode_frame,
};
use crate::operator::PendingOperatorSnapshot;

/// Messages of the checkpoint writer.
pub(crate) enum WriterMsg {
    /// Store one subtask's state for checkpoint `id`.
    Persist {
        attempt: u32,
        index: usize,
        id: CheckpointId,
        folder: CheckpointFolder,
        file_name: String,
        snapshots: Vec<(String, PendingOperatorSnapshot)>,
    },
}

/// The checkpoint writer actor.
pub(crate) struct CheckpointWriter;

pub(crate) struct WriterState {
    storage: CheckpointStorage,
    job_manager: ActorRef<JobManagerMsg>,
}

impl std::fmt::Debug for WriterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterState").finish_non_exhaustive()
    }
}

impl Actor for CheckpointWriter {
    type Msg = WriterMsg;
    type State = WriterState;
    type Arguments = (CheckpointStorage, ActorRef<JobManagerMsg>);

    async fn pre_start(
        &self,
        _myself: ActorRef<WriterMsg>,
        (storage, job_manager): Self::Arguments,
    ) -> Result<WriterState, ActorProcessingErr> {
        Ok(WriterState {
            storage,
            job_manager,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WriterMsg>,
        message: WriterMsg,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        let WriterMsg::Persist {
            attempt,
            index,
            id,
            folder,
            file_name,
            snapshots,
        } = message;
        let result = persist(&state.storage, &folder, &file_name, snapshots);
        let _ = state.job_manager.send_message(JobManagerMsg::Persisted {
            attempt,
            index,
            id,
            result,
        });
        Ok(())
    }
}

fn persist(
    storage: &CheckpointStorage,
    folder: &CheckpointFolder,
    file_name: &str,
    snapshots: Vec<(String, PendingOperatorSnapshot)>,
) -> Result<crate::checkpoint::storage::FileMetadata, String> {
    let mut file = TaskStateFile::default();
    for (state_id, pending) in snapshots {
        let snapshot = pending
            .complete()
            .map_err(|e| format!("operator '{state_id}': {e}"))?;
        file.operators.push((state_id, snapshot));
    }
    let frame = encode_frame(&file)?;
    storage
        .write_file(folder, file_name, &frame)
        .map_err(|e| e.to_string())
}
