//! The job as data: three graphs, a placement, and the descriptor that holds them.
//!
//! - [`StreamGraph`]: operators and edges as the API declared them;
//! - [`JobGraph`]: parallelism and partitioning resolved, operators chained into tasks;
//! - [`ExecutionGraph`]: every parallel subtask and every channel between subtasks;
//! - [`Placement`]: the TaskManager slot of every subtask;
//! - [`JobDescriptor`]: the job's name, [`ExecutionConfig`], execution graph and placement, one
//!   serde value with a [`JobFingerprint`].
//!
//! ## Descriptor and registry
//!
//! A job has two halves. The **descriptor** is pure data: it encodes with postcard, crosses the
//! network, and its fingerprint tells two processes whether they built the same job. The
//! **registry** (the runtime's `OperatorRegistry`) maps each [`NodeId`](crate::operator::NodeId)
//! to what cannot be data: the closure that builds the operator for a subtask, the typed ports
//! that build record writers, fan-outs and chain heads around it, and the key selectors of
//! hash and custom edges. Rust cannot ship code, so every process rebuilds the registry by
//! running the same job-building code (the same binary); the matching fingerprint is what says
//! the registry it built fits the descriptor it was sent.
//!
//! This module imports nothing from the runtime: the runtime reads the descriptor, looks the
//! nodes up in the registry and builds ports and heads itself.

pub mod config;
mod descriptor;
mod edge;
mod execution_graph;
mod job_graph;
mod placement;
pub(crate) mod stream_graph;
#[cfg(test)]
pub(crate) mod testing;

pub use config::ExecutionConfig;
pub use descriptor::{
    DESCRIPTOR_HEADER_BYTES, DESCRIPTOR_MAGIC, DESCRIPTOR_VERSION, DescriptorError, JobDescriptor,
    JobFingerprint,
};
pub use edge::{InputSide, PartitionKind, Partitioning};
pub use execution_graph::{ExecutionGraph, SubtaskId};
pub use job_graph::{JobGraph, JobVertex};
pub use placement::{Placement, PlacementError, SlotId, SlotOffer, TaskManagerId};
pub use stream_graph::{
    ChainingStrategy, OperatorKind, OutputSelector, StreamEdge, StreamGraph, StreamNode,
};
