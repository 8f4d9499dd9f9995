//! Checkpoints: barriers, their alignment, the coordinator, storage and restart strategies.
//!
//! A [`CheckpointBarrier`] travels in-band with the records; every element before it belongs to
//! checkpoint `id`, every element after it to the next. Subtasks forward barriers downstream in
//! order; with several inputs, the barrier aligner (exactly-once) or the barrier tracker
//! (at-least-once) decides when all inputs have delivered it.

mod aligner;
mod coordinator;
pub mod damage;
mod job_id;
mod restart;
pub mod restore_plan;
pub mod storage;
pub mod summary;
mod tracker;

pub use aligner::BarrierAligner;
pub use coordinator::{
    CheckpointCoordinator, CoordinatorConfig, CoordinatorEvent, PendingCheckpoint,
};
pub use job_id::JobId;
pub use restart::{RestartDecision, RestartStrategy, RestartTracker};
pub use tracker::BarrierTracker;

use serde::{Deserialize, Serialize};

/// A checkpoint's id: increasing, starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckpointId(pub u64);

/// Whether a barrier belongs to a periodic checkpoint or a savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckpointKind {
    /// A periodic checkpoint, owned and cleaned up by the framework.
    Checkpoint,
    /// A savepoint, triggered by the user and kept until the user deletes it.
    Savepoint,
}

/// The marker that separates the elements of one checkpoint from the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CheckpointBarrier {
    /// The checkpoint this barrier closes.
    pub id: CheckpointId,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
}
