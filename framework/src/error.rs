//! Errors, one enum per layer, and the crate's [`Error`].
//!
//! The layers' errors convert upwards so that `?` works across the API: a bad window
//! ([`WindowError`]) is a [`GraphError`], a graph error is a [`JobError`], and every one of
//! them, plus state, storage and I/O errors, is an [`Error`].
//!
//! # Examples
//!
//! ```
//! use eichhorn::operator::window::{TimeDomain, WindowAssigner};
//! use eichhorn::prelude::*;
//!
//! fn hourly() -> Result<WindowAssigner, JobError> {
//!     // A `WindowError` (say, a size of 0) becomes `JobError::Graph(GraphError::Window(..))`.
//!     Ok(WindowAssigner::tumbling(TimeDomain::EventTime, 3_600_000, 0)?)
//! }
//!
//! fn zero() -> Result<WindowAssigner, eichhorn::Error> {
//!     Ok(WindowAssigner::tumbling(TimeDomain::EventTime, 0, 0)?)
//! }
//!
//! assert!(hourly().is_ok());
//! let error = zero().unwrap_err();
//! assert_eq!(error.to_string(), "invalid window: tumbling windows need a size > 0, got size 0 ms");
//! ```

use crate::checkpoint::storage::StorageError;
use crate::operator::window::WindowError;
use crate::state::StateError;

/// The job graph or configuration is invalid; reported by `execute` before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The job has no operator.
    #[error("the job has no operators: add a source and a sink before calling execute")]
    EmptyGraph,
    /// A parallelism outside `1..=max_parallelism`.
    #[error("operator '{operator}': parallelism {parallelism} is outside 1..={max_parallelism}")]
    InvalidParallelism {
        /// The operator.
        operator: String,
        /// The requested parallelism.
        parallelism: u32,
        /// The job's max parallelism.
        max_parallelism: u32,
    },
    /// A non-parallel source (collection, file, socket, or a user source whose
    /// [`SourceFunction::is_parallel`](crate::api::functions::SourceFunction::is_parallel) is
    /// `false`) was given a parallelism above 1.
    #[error(
        "operator '{operator}' is not parallel: its parallelism must be 1, not {parallelism} \
         (a source that splits its input over subtasks returns true from SourceFunction::is_parallel)"
    )]
    NonParallelOperator {
        /// The operator.
        operator: String,
        /// The requested parallelism.
        parallelism: u32,
    },
    /// `forward()` between operators of unequal parallelism.
    #[error(
        "forward partitioning needs equal parallelism, but '{source_operator}' has {source_parallelism} \
         and '{target_operator}' has {target_parallelism}: use rebalance() or rescale()"
    )]
    ForwardParallelismMismatch {
        /// Upstream operator.
        source_operator: String,
        /// Its parallelism.
        source_parallelism: u32,
        /// Downstream operator.
        target_operator: String,
        /// Its parallelism.
        target_parallelism: u32,
    },
    /// An operator without the inputs it needs.
    #[error("operator '{operator}' has no input")]
    MissingInput {
        /// The operator.
        operator: String,
    },
    /// A configuration value out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An API call that does not apply to this stream (e.g. `name` on a union).
    #[error("invalid use of the API: {0}")]
    InvalidApiUse(String),
    /// Two side outputs with the same tag id but different types.
    #[error("side output tag '{tag}' is used with two types: {first} and {second}")]
    SideOutputTypeMismatch {
        /// The tag id.
        tag: String,
        /// The type seen first.
        first: &'static str,
        /// The other type.
        second: &'static str,
    },
    /// A window assigner with an invalid size, slide, gap or offset.
    #[error("invalid window: {0}")]
    Window(#[from] WindowError),
    /// The subtasks cannot be placed on the TaskManagers' slots.
    #[error(transparent)]
    Placement(#[from] crate::graph::PlacementError),
    /// A bug in graph construction.
    #[error("internal graph error: {0}")]
    Internal(String),
}

/// A job failed while deploying or running.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// The graph or configuration is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A subtask failed: a panic or an error in a user function.
    #[error("job failed: operator '{operator}' in task '{task}': {message}")]
    TaskFailed {
        /// The chain and subtask, e.g. `Source: numbers -> Map (2/4)`.
        task: String,
        /// The operator that failed.
        operator: String,
        /// The panic message or error.
        message: String,
    },
    /// The job could not be deployed (e.g. an operator failed to build).
    #[error("job could not be deployed: {0}")]
    Deploy(String),
    /// A runtime bug.
    #[error("internal runtime error: {0}")]
    Internal(String),
    /// A checkpoint or savepoint failed, or failed checkpoints exceeded the tolerated number.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The job cannot start from the given savepoint or checkpoint.
    #[error("cannot restore: {0}")]
    Restore(String),
}

impl From<WindowError> for JobError {
    fn from(error: WindowError) -> Self {
        Self::Graph(GraphError::Window(error))
    }
}

/// The crate's error: any error of a layer, and I/O; what a `main` that builds and runs jobs
/// can return.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Graph or configuration (including invalid windows).
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Job execution.
    #[error(transparent)]
    Job(#[from] JobError),
    /// Keyed state.
    #[error(transparent)]
    State(#[from] StateError),
    /// Checkpoint or savepoint storage.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<WindowError> for Error {
    fn from(error: WindowError) -> Self {
        Self::Graph(GraphError::Window(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_error_converts_into_every_upper_layer() {
        let window = WindowError::InvalidSlide { slide_ms: 0 };
        assert_eq!(
            JobError::from(window.clone()).to_string(),
            "invalid window: sliding windows need a slide > 0, got slide 0 ms"
        );
        assert!(matches!(
            Error::from(window.clone()),
            Error::Graph(GraphError::Window(w)) if w == window
        ));
        assert!(matches!(
            Error::from(JobError::from(GraphError::EmptyGraph)),
            Error::Job(JobError::Graph(GraphError::EmptyGraph))
        ));
    }
}
