//! The three graphs of a job, all pure data:
//!
//! - `StreamGraph` (crate-internal): operators and edges as the API declared them;
//! - [`JobGraph`]: parallelism and partitioning resolved, operators chained into tasks;
//! - [`ExecutionGraph`]: every parallel subtask and every channel between subtasks.

mod edge;
mod execution_graph;
mod job_graph;
pub(crate) mod stream_graph;

pub use edge::{InputSide, PartitionKind};
pub use execution_graph::{ExecutionGraph, SubtaskId};
pub use job_graph::{JobGraph, JobVertex};
pub use stream_graph::{ChainingStrategy, OutputSelector};
