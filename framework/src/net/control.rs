//! The control protocol between a JobManager and its TaskManagers: every message that crosses
//! the control stream of a [`Peer`](super::Peer), as plain serde data.
//!
//! The in-process actor messages (`runtime/protocol.rs`) carry actor refs, reply ports and open
//! snapshots; none of that crosses a process. What does is here, framed by
//! [`crate::exchange::codec`] like every frame on the wire, so a garbled, truncated or foreign
//! frame decodes to an error naming the peer, never a panic.
//!
//! ## Conversation
//!
//! ```text
//! TaskManager                                   JobManager
//!   hello (role TaskManager, slots) ───────────▶  (TLS + handshake: net::endpoint)
//!   Register { data_addr } ─────────────────────▶
//!                              ◀──────────────── Job { args }            the job's own arguments
//!   (builds the job by running the application with `args`)
//!   JobBuilt { fingerprint } ───────────────────▶ compared with the JobManager's own
//!                              ◀──────────────── Refused { reason }      (mismatch: then closed)
//!   Heartbeat (every interval) ─────────────────▶
//! per attempt:
//!                              ◀──────────────── Restore { .. }*, Deploy { .. }
//!   Deployed { attempt, result } ───────────────▶ (after every TaskManager answered)
//!                              ◀──────────────── Wire { attempt }         open remote channels
//!   Wired { attempt, result } ──────────────────▶
//!                              ◀──────────────── Start { attempt }
//!   Subtask { attempt, index, event } ──────────▶ (acks, persisted, finished, failures, ...)
//!                              ◀──────────────── Command / Persist
//!                              ◀──────────────── StopAttempt { attempt } (a restart)
//!   AttemptStopped { attempt } ─────────────────▶ after every event of that attempt
//!                              ◀──────────────── JobEnded { status }
//! ```
//!
//! A snapshot is never sent to the JobManager: a TaskManager acknowledges with the barrier only,
//! keeps the snapshot, and on `Persist` its own checkpoint writer stores it in the checkpoint
//! directory every node reaches, answering with the file's metadata (the *state handle*: path,
//! size, checksum). Nor is restored state sent to a TaskManager: `Restore` carries a subtask's
//! restore plan (handles and what to take from each file), and the TaskManager reads the files.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::checkpoint::restore_plan::SubtaskRestorePlan;
use crate::checkpoint::storage::{CheckpointFolder, StoredState};
use crate::checkpoint::{CheckpointBarrier, CheckpointId, JobId};
use crate::operator::{CommitReport, NodeId, OperatorCounters};

/// From the JobManager to a TaskManager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ToTaskManager {
    /// The job's own arguments: build the job with them and answer [`ToJobManager::JobBuilt`].
    Job {
        /// The arguments the JobManager's application was started with, role flags removed,
        /// the program name first.
        args: Vec<String>,
    },
    /// The TaskManager cannot join: the reason, for its log. The connection closes.
    Refused {
        /// Why.
        reason: String,
    },
    /// What a subtask of the next [`Deploy`] restores (sent before it): the state handles of
    /// the checkpoint files it needs and what to take from each. No state crosses the
    /// network: the TaskManager reads the files from the checkpoint directory.
    ///
    /// [`Deploy`]: ToTaskManager::Deploy
    Restore {
        /// The attempt.
        attempt: u32,
        /// The subtask's flat index.
        index: u32,
        /// Its restore plan.
        plan: SubtaskRestorePlan,
    },
    /// Deploy these subtasks of `attempt`; answer [`ToJobManager::Deployed`].
    Deploy {
        /// The attempt.
        attempt: u32,
        /// The run's id.
        job_id: JobId,
        /// The checkpoint the state comes from, if any.
        restored_from: Option<CheckpointId>,
        /// The subtasks this TaskManager runs (flat indices).
        subtasks: Vec<u32>,
        /// Every subtask's TaskManager (by node id), by flat index.
        placement: Vec<String>,
        /// The data address of every TaskManager in the placement, and its incarnation: the
        /// number the JobManager gave it when it joined, new when a node with the same id
        /// joins again (a restarted process), so a connection to the old one is not reused.
        peers: Vec<(String, SocketAddr, u32)>,
    },
    /// Every TaskManager deployed: open the streams of the channels leaving this TaskManager's
    /// subtasks for another node, and wire the subtasks; answer [`ToJobManager::Wired`].
    Wire {
        /// The attempt.
        attempt: u32,
    },
    /// Every TaskManager is wired: start the subtasks.
    Start {
        /// The attempt.
        attempt: u32,
    },
    /// A command for one subtask.
    Command {
        /// The attempt.
        attempt: u32,
        /// The subtask's flat index.
        index: u32,
        /// What to do.
        command: Command,
    },
    /// Store the state subtask `index` acknowledged for checkpoint `id` as `file_name` in
    /// `folder`; answer with the event [`SubtaskEvent::Persisted`].
    Persist {
        /// The attempt that acknowledged.
        attempt: u32,
        /// The subtask.
        index: u32,
        /// The checkpoint.
        id: CheckpointId,
        /// Where it goes (a directory every node reaches).
        folder: CheckpointFolder,
        /// The subtask's state file.
        file_name: String,
    },
    /// Stop every subtask of `attempt` (a restart); answer [`ToJobManager::AttemptStopped`]
    /// once they are gone.
    StopAttempt {
        /// The attempt.
        attempt: u32,
    },
    /// The job ended; stop everything that is left and wait for the next job.
    JobEnded {
        /// How it ended, for the log.
        status: String,
    },
}

/// What the JobManager tells one subtask (the in-process `SubtaskMsg` commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Command {
    /// Take part in this checkpoint.
    TriggerCheckpoint(CheckpointBarrier),
    /// Take the final checkpoint; `persist`: whether the state is stored.
    FinalCheckpoint {
        /// The barrier.
        barrier: CheckpointBarrier,
        /// Whether the state is stored.
        persist: bool,
    },
    /// A checkpoint completed.
    CheckpointComplete {
        /// The checkpoint.
        id: CheckpointId,
        /// Whether it was the final one.
        is_final: bool,
    },
    /// Close and stop (stop-with-savepoint).
    Stop,
}

/// From a TaskManager to the JobManager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ToJobManager {
    /// The first message after the handshake: where other TaskManagers reach this one's data
    /// channels.
    Register {
        /// The data endpoint's address.
        data_addr: SocketAddr,
    },
    /// The TaskManager built the job from the arguments it was sent.
    JobBuilt {
        /// The descriptor's fingerprint, or why building failed.
        fingerprint: Result<u64, String>,
    },
    /// The TaskManager is alive.
    Heartbeat,
    /// The live metrics of the subtasks running on the TaskManager (sent every heartbeat
    /// interval while it runs a job), for the JobManager's status.
    Metrics {
        /// One snapshot per subtask deployed there.
        subtasks: Vec<crate::metrics::SubtaskMetricsSnapshot>,
    },
    /// The answer to [`ToTaskManager::Deploy`].
    Deployed {
        /// The attempt.
        attempt: u32,
        /// Whether every subtask was spawned.
        result: Result<(), String>,
    },
    /// The answer to [`ToTaskManager::Wire`].
    Wired {
        /// The attempt.
        attempt: u32,
        /// Whether every remote channel was opened.
        result: Result<(), String>,
    },
    /// Something a subtask reports.
    Subtask {
        /// Its attempt.
        attempt: u32,
        /// Its flat index.
        index: u32,
        /// What happened.
        event: SubtaskEvent,
    },
    /// Elements a collect sink received on this TaskManager, for the JobManager's handle of
    /// the same sink: a postcard `Vec<T>`.
    Collected {
        /// The sink's node.
        node: NodeId,
        /// The encoded elements.
        items: Vec<u8>,
    },
    /// Every subtask of `attempt` is gone, and every event it sent was sent before this.
    AttemptStopped {
        /// The attempt.
        attempt: u32,
    },
}

/// What a subtask reports to the JobManager (the in-process `JobManagerMsg` reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum SubtaskEvent {
    /// Its whole input is processed.
    InputFinished,
    /// It closed after the final checkpoint.
    Finished {
        /// Its operators' counters.
        metrics: Vec<(NodeId, OperatorCounters)>,
    },
    /// It closed on request.
    Stopped,
    /// It failed.
    Failed {
        /// The failing operator, if known.
        operator: Option<String>,
        /// The task, if known.
        task: Option<String>,
        /// The error.
        message: String,
        /// False when a restart cannot fix it.
        recoverable: bool,
    },
    /// It took its snapshot for `barrier` (kept on the TaskManager until `Persist`).
    Acknowledge {
        /// The barrier.
        barrier: CheckpointBarrier,
    },
    /// It cannot take part in checkpoint `id`.
    Decline {
        /// The checkpoint.
        id: CheckpointId,
        /// Why.
        reason: String,
    },
    /// Its exactly-once sinks committed.
    Committed {
        /// What was committed.
        commits: Vec<CommitReport>,
    },
    /// The TaskManager's writer stored (or failed to store) its state for checkpoint `id`.
    Persisted {
        /// The checkpoint.
        id: CheckpointId,
        /// Where.
        folder: CheckpointFolder,
        /// The state handle (and each operator's share of it), or the error.
        result: Result<StoredState, String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::codec::{decode_frame, encode_frame};

    fn round_trip<M: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        message: &M,
    ) {
        let mut frame = Vec::new();
        encode_frame("control message", message, &mut frame).expect("encodes");
        let back: M = decode_frame("control message", &frame).expect("decodes");
        assert_eq!(&back, message);
        // Every strict prefix is refused, never a panic.
        for cut in 0..frame.len() {
            assert!(decode_frame::<M>("control message", &frame[..cut]).is_err());
        }
    }

    #[test]
    fn messages_round_trip_and_truncations_are_errors() {
        round_trip(&ToTaskManager::Job {
            args: vec!["wordcount".into(), "--parallelism".into(), "4".into()],
        });
        round_trip(&ToTaskManager::Deploy {
            attempt: 2,
            job_id: JobId(7),
            restored_from: Some(CheckpointId(3)),
            subtasks: vec![0, 2],
            placement: vec!["a".into(), "b".into(), "a".into()],
            peers: vec![("a".into(), "127.0.0.1:4000".parse().unwrap(), 1)],
        });
        round_trip(&ToJobManager::Subtask {
            attempt: 1,
            index: 3,
            event: SubtaskEvent::Failed {
                operator: Some("Map".into()),
                task: None,
                message: "boom".into(),
                recoverable: true,
            },
        });
        round_trip(&ToJobManager::Subtask {
            attempt: 0,
            index: 0,
            event: SubtaskEvent::Persisted {
                id: CheckpointId(4),
                folder: CheckpointFolder {
                    name: "chk-4".into(),
                    path: Some("/tmp/x/chk-4".into()),
                },
                result: Err("disk full".into()),
            },
        });
    }

    #[test]
    fn garbage_is_an_error() {
        let garbage = [0u8, 0, 0, 9, 1, 255, 255, 255, 255, 255, 255, 255, 255];
        assert!(decode_frame::<ToJobManager>("control message", &garbage).is_err());
        assert!(decode_frame::<ToTaskManager>("control message", &[]).is_err());
    }
}
