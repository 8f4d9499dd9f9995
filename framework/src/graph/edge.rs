//! What an edge declares besides its two ends: how its records are spread over the consumer's
//! subtasks ([`PartitionKind`]) and which input of a two-input consumer it feeds
//! ([`InputSide`]).
//!
//! Plain serde data, shared by the three graphs and read by the runtime, which builds the
//! record writers and chain heads from it; so it lives here, below nothing of the runtime.

use serde::{Deserialize, Serialize};

/// The partitioning of an edge between two operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PartitionKind {
    /// Subtask `i` to subtask `i` (equal parallelism); chainable.
    Forward,
    /// Round-robin over all consumers.
    Rebalance,
    /// Round-robin over a local subset of consumers (pointwise).
    Rescale,
    /// Uniformly random consumer (seeded: deterministic per job seed).
    Shuffle,
    /// Every record to every consumer.
    Broadcast,
    /// Everything to consumer subtask 0.
    Global,
    /// By key group of the record's key (`key_by`).
    Hash,
    /// A user function of the key picks the consumer.
    Custom,
}

impl PartitionKind {
    /// Flink's display name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Forward => "FORWARD",
            Self::Rebalance => "REBALANCE",
            Self::Rescale => "RESCALE",
            Self::Shuffle => "SHUFFLE",
            Self::Broadcast => "BROADCAST",
            Self::Global => "GLOBAL",
            Self::Hash => "HASH",
            Self::Custom => "CUSTOM",
        }
    }

    /// Whether producers connect to a subset of consumers (forward, rescale) rather than all.
    pub fn is_pointwise(self) -> bool {
        matches!(self, Self::Forward | Self::Rescale)
    }
}

/// Which input of a two-input operator a channel feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum InputSide {
    /// The only input, or the first of two.
    First,
    /// The second input of a two-input operator.
    Second,
}

/// An edge's partitioning as the job declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Partitioning {
    /// How records are spread over the consumer's subtasks.
    pub kind: PartitionKind,
    /// Declared by the user: an explicit `forward` between operators of unequal parallelism is
    /// an error, an implicit one becomes `rebalance` (Flink's rule).
    pub explicit: bool,
}

impl Partitioning {
    /// The partitioning an edge gets when the job declares none: forward if the parallelism is
    /// the same on both sides, rebalance otherwise.
    pub fn implicit() -> Self {
        Self {
            kind: PartitionKind::Forward,
            explicit: false,
        }
    }

    /// A partitioning the job declared.
    pub fn explicit(kind: PartitionKind) -> Self {
        Self {
            kind,
            explicit: true,
        }
    }
}
