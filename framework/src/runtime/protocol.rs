//! The runtime's actor protocol: every message the JobManager, the TaskManager, the subtasks and
//! the checkpoint writer send each other, in one place.
//!
//! The actors import this module and not each other's, so `runtime/` has no import circle
//! (the JobManager spawns the TaskManager and the writer, the TaskManager spawns subtasks; all
//! of them only *name* the messages here). These are in-process messages: they carry actor
//! refs, reply ports and open state snapshots. What crosses between nodes is plain serde data
//! in `exchange::wire` (data channels) and, with the cluster, its control messages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::oneshot;

use super::env::FaultInjector;
use super::gauges::ChannelGauges;
use crate::api::ExecutionConfig;
use crate::checkpoint::restore_plan::SubtaskRestorePlan;
use crate::checkpoint::storage::{CheckpointFolder, StoredState};
use crate::checkpoint::{CheckpointBarrier, CheckpointId};
use crate::error::JobError;
use crate::graph::ExecutionGraph;
use crate::operator::{
    CommitReport, ErasedBatch, NodeId, OperatorCounters, PendingOperatorSnapshot,
};
use crate::state::OperatorSnapshot;
use crate::time::Clock;

/// Messages of the JobManager.
pub(crate) enum JobManagerMsg {
    /// A subtask processed its whole input and delivered its output; it waits for the final
    /// checkpoint.
    InputFinished { attempt: u32, index: usize },
    /// A subtask closed after the final checkpoint.
    SubtaskFinished {
        attempt: u32,
        index: usize,
        metrics: Vec<(NodeId, OperatorCounters)>,
    },
    /// A subtask closed on request (stop-with-savepoint).
    SubtaskStopped { attempt: u32, index: usize },
    /// A subtask failed.
    SubtaskFailed {
        attempt: u32,
        index: usize,
        operator: Option<String>,
        task: Option<String>,
        message: String,
        /// False when a restart cannot fix it: the job fails at once.
        recoverable: bool,
    },
    /// A subtask took its snapshot for `barrier`.
    Acknowledge {
        attempt: u32,
        index: usize,
        barrier: CheckpointBarrier,
        snapshots: Vec<(String, PendingOperatorSnapshot)>,
    },
    /// A subtask cannot take part in checkpoint `id`.
    Decline {
        attempt: u32,
        index: usize,
        id: CheckpointId,
        reason: String,
    },
    /// The writer stored (or failed to store) a subtask's state for checkpoint `id` in
    /// `folder`.
    Persisted {
        attempt: u32,
        index: usize,
        id: CheckpointId,
        folder: CheckpointFolder,
        result: Result<StoredState, String>,
    },
    /// Exactly-once sinks of a subtask committed transactions: per checkpoint, the sink and
    /// its records. Accepted from any attempt: a commit is output, whoever made it.
    Committed {
        index: usize,
        commits: Vec<CommitReport>,
    },
    /// Time to check checkpoint triggers and timeouts.
    Tick,
    /// The restart delay passed: stop what is left of the failed attempt.
    Redeploy,
    /// The failed attempt is gone (and every message it sent is handled, commit reports
    /// included, since they were queued before this): deploy the next attempt.
    DeployNext,
    /// Take a savepoint into `target`; with `stop`, cancel the job once it is complete.
    TriggerSavepoint {
        target: PathBuf,
        stop: bool,
        reply: oneshot::Sender<Result<PathBuf, JobError>>,
    },
    /// Cancel the job.
    Cancel,
    /// A TaskManager of the cluster was lost (its connection closed or went silent): the
    /// subtasks it ran failed.
    TaskManagerLost {
        /// Its node id.
        node: String,
        /// Its incarnation (the number it was given when it joined): a node that joined
        /// again under the same id since is not the one lost.
        incarnation: u32,
        /// Why it was lost.
        reason: String,
    },
    /// A marker: answered once every message sent before it was handled. A TaskManager's
    /// link to the JobManager uses it to tell an attempt's last report was forwarded.
    Sync(oneshot::Sender<()>),
}

/// Messages of a subtask actor.
pub(crate) enum SubtaskMsg {
    /// Channel peers: per output channel the consumer and its input index; per input channel the
    /// producer and its output index.
    Wire {
        outputs: Vec<(ActorRef<Self>, usize)>,
        inputs: Vec<(ActorRef<Self>, usize)>,
    },
    /// Open the chain and start.
    Start,
    /// A batch on input channel `channel`.
    Data { channel: usize, batch: ErasedBatch },
    /// `credits` more batches may be sent on output channel `channel`.
    Credit { channel: usize, credits: u32 },
    /// Poll the source (sources only).
    Poll,
    /// The linger timer fired: send partially filled batches.
    Flush,
    /// Processing time reached a time an operator asked for.
    ProcessingTime,
    /// Take part in this checkpoint: a running source injects the barrier, a finished subtask
    /// snapshots its final state, any other subtask expects the barrier on its inputs.
    TriggerCheckpoint(CheckpointBarrier),
    /// Take the final checkpoint: the whole job finished its input. `persist`: whether its
    /// state is stored (else it only commits).
    FinalCheckpoint {
        barrier: CheckpointBarrier,
        persist: bool,
    },
    /// A checkpoint completed; after the final one the subtask closes and stops.
    CheckpointComplete { id: CheckpointId, is_final: bool },
    /// Close and stop now (stop-with-savepoint; sent after the savepoint's completion, so
    /// two-phase-commit sinks have committed it).
    Stop,
}

/// Everything needed to build one subtask.
pub(crate) struct SubtaskArgs {
    /// The live metrics cells the subtask publishes into.
    pub(crate) metrics: Arc<crate::metrics::SubtaskMetrics>,
    pub(crate) graph: Arc<ExecutionGraph>,
    /// The code that builds the graph's operators.
    pub(crate) registry: Arc<super::registry::OperatorRegistry>,
    pub(crate) index: usize,
    pub(crate) config: ExecutionConfig,
    pub(crate) job_name: String,
    pub(crate) attempt_number: u32,
    /// The id of the run.
    pub(crate) job_id: crate::checkpoint::JobId,
    pub(crate) job_manager: ActorRef<JobManagerMsg>,
    pub(crate) gauges: Arc<ChannelGauges>,
    /// The node's processing-time clock (from its runtime environment).
    pub(crate) clock: Arc<dyn Clock>,
    /// What this subtask restores: the state handles of its files and what to take from
    /// them. The TaskManager reads them before it spawns the subtask and puts the result in
    /// `restored`.
    pub(crate) restore: Option<SubtaskRestorePlan>,
    /// This subtask's share of the restored checkpoint, per operator state id; or why its
    /// TaskManager could not read it (naming the file and the checkpoint): the subtask then
    /// fails when it starts, and the job restarts as after any failure.
    pub(crate) restored: Result<BTreeMap<String, OperatorSnapshot>, String>,
    /// The checkpoint restored from, if any.
    pub(crate) restored_from: Option<CheckpointId>,
    /// A directory private to this subtask attempt, for state backends.
    pub(crate) local_dir: PathBuf,
    /// Where the simulator makes this subtask fail (from the runtime environment).
    pub(crate) faults: Option<Arc<dyn FaultInjector>>,
}

/// Messages of the TaskManager.
pub(crate) enum TaskManagerMsg {
    /// Spawn these subtasks; reply with their refs in the same order.
    Deploy(
        Vec<SubtaskArgs>,
        RpcReplyPort<Result<Vec<ActorRef<SubtaskMsg>>, String>>,
    ),
}

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
