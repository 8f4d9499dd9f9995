//! # Eichhorn
//!
//! Stream processing in the model of Apache Flink's DataStream API: stateful computations over
//! bounded and unbounded streams, with every operator subtask a supervised actor (ractor), and
//! records, watermarks and checkpoint barriers travelling as messages in ordered, credit-bounded
//! channels.
//!
//! ```
//! use eichhorn::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let env = StreamEnv::new();
//! let counts = env
//!     .from_collection(vec!["to be or not to be".to_string()])
//!     .flat_map(|line: String| line.split(' ').map(|w| (w.to_string(), 1u64)).collect::<Vec<_>>())
//!     .key_by(|(word, _)| word.clone())
//!     .sum(|(_, count)| count)
//!     .collect_sink();
//! env.execute("word count").await?;
//! let last_to = counts.take().into_iter().filter(|(w, _)| w == "to").last();
//! assert_eq!(last_to, Some(("to".to_string(), 2)));
//! # Ok(()) }
//! ```
//!
//! ## Layers
//!
//! `api -> graph -> runtime -> {operator, time, state, checkpoint}`; see `docs/ARCHITECTURE.md`.

pub mod api;
pub mod checkpoint;
pub mod connectors;
pub mod error;
pub mod graph;
pub mod operator;
pub mod runtime;
pub mod state;
pub mod time;

pub use api::{ConnectedStreams, DataStream, ExecutionConfig, KeyedStream, OutputTag, StreamEnv};
pub use eichhorn_macros::{KeyBy, StableHash, operator};
pub use error::{Error, GraphError, JobError};
pub use runtime::{JobHandle, JobResult, JobStatus, OperatorMetrics};
pub use state::{StableHash, StableHasher};

/// Everything a job definition usually needs.
pub mod prelude {
    pub use crate::api::functions::*;
    pub use crate::api::{
        BroadcastProcessFunction, BroadcastStream, KeyedBroadcastProcessFunction,
        MapStateDescriptor,
    };
    pub use crate::api::{
        CollectSink, ConnectedStreams, Data, DataStream, DataStreamSink, ExecutionConfig, Key,
        KeyedStream, OutputTag, StreamEnv, WindowedStream,
    };
    pub use crate::api::{KeyBy, Operator, TwoPhaseCommitSink, Unkeyed};
    pub use crate::checkpoint::RestartStrategy;
    pub use crate::error::{GraphError, JobError};
    pub use crate::operator::{
        BroadcastContext, BroadcastReadOnlyContext, KeyedBroadcastContext,
        KeyedBroadcastReadOnlyContext,
    };
    pub use crate::operator::{
        Collector, FunctionError, KeyedContext, OperatorContext, RuntimeContext, StateInitContext,
        StateSnapshotContext,
    };
    pub use crate::runtime::{JobHandle, JobResult, JobStatus};
    pub use crate::state::{
        AggregatingState, ListState, MapState, OperatorList, ReducingState, StableHash,
        StableHasher, StateBackendKind, StateTtlConfig, UnionList, ValueState,
    };
    pub use crate::time::{Watermark, WatermarkStrategy};
    pub use eichhorn_macros::{KeyBy, StableHash, operator};
}
