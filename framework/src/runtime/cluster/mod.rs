//! The runtime across nodes: a JobManager process coordinating TaskManager processes over QUIC.
//!
//! ```text
//! JobManager process                        TaskManager process (one per node, N slots)
//!   JobManager actor (job coordinator core)   JoinedTaskManager::serve
//!     └─ ClusterJobManager ══ control ══════▶   ├─ JobManagerLink (reports → control)
//!                                               ├─ CheckpointWriter (state → shared directory)
//!                                               └─ per attempt: TaskManagerActor
//!                                                    ├─ subtask actors (unchanged)
//!                                                    └─ Output/InputProxy ══ data ══▶ other TMs
//! ```
//!
//! Every node runs the same application binary and builds the same job by running the same
//! code with the same arguments (the JobManager sends them); the JobManager admits a
//! TaskManager only when the fingerprint of the job it built matches its own. The JobManager
//! actor, its coordinator core, the subtask actors and their cores are the ones a local job
//! runs; what this module adds is transport: control messages (`net/control.rs`) in
//! place of in-process messages, and proxies in place of remote peers (`channels.rs`).
//!
//! Checkpoints span nodes: each TaskManager's writer stores its subtasks' state in the
//! checkpoint directory (which every node must reach under the same path: a shared file system
//! or, on one machine, a local directory) and answers with the file's metadata; the JobManager
//! writes the checkpoint's metadata last, as in one process. A restore sends each subtask its
//! share of the restored state with the deployment.

pub(crate) mod channels;
pub(crate) mod job_manager;
pub mod task_manager;

/// Timing of a cluster (the defaults are documented in the README's cluster section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// How often a TaskManager tells the JobManager it is alive (default 1,000 ms).
    pub heartbeat_interval_ms: u64,
    /// A node that was not heard from for this long is lost (default 10,000 ms): the QUIC
    /// idle timeout, with keep-alives at the heartbeat interval.
    pub heartbeat_timeout_ms: u64,
    /// How long the JobManager waits for enough slots before the job fails (default
    /// 300,000 ms, Flink's `slot.request.timeout`).
    pub slot_wait_timeout_ms: u64,
    /// How long the JobManager waits for a TaskManager to build the job, deploy or wire an
    /// attempt (default 60,000 ms).
    pub deploy_timeout_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 1_000,
            heartbeat_timeout_ms: 10_000,
            slot_wait_timeout_ms: 300_000,
            deploy_timeout_ms: 60_000,
        }
    }
}

impl ClusterSettings {
    /// The transport settings these imply.
    pub fn transport(&self) -> crate::net::TransportSettings {
        crate::net::TransportSettings {
            keep_alive_ms: self.heartbeat_interval_ms,
            idle_timeout_ms: self.heartbeat_timeout_ms,
            ..crate::net::TransportSettings::default()
        }
    }
}

/// Control messages queued towards one peer at most; a sender waits when the queue is full.
pub(crate) const CONTROL_QUEUE_MAX: usize = 1024;

/// The largest chunk of collect-sink elements sent in one control message.
pub(crate) const COLLECT_CHUNK_BYTES: usize = 8 << 20;
