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
//! A job needs tokio (`macros`, `rt-multi-thread`) for its `main` and serde (`derive`) for its
//! record types; restarts and damaged checkpoints are reported through [`tracing`], so install
//! a subscriber (`tracing-subscriber`) to see them. The repository's README has a longer tour.
//!
//! # A tour
//!
//! - **The environment.** [`StreamEnv`] is where a job is declared: sources
//!   ([`StreamEnv::from_collection`], [`StreamEnv::from_generator`],
//!   [`StreamEnv::read_text_file`], [`StreamEnv::socket_text_stream`], and
//!   [`StreamEnv::add_source`] for your own [`SourceFunction`](api::functions::SourceFunction)),
//!   settings ([`StreamEnv::set_parallelism`], [`ExecutionConfig`]) and the run itself:
//!   [`StreamEnv::execute`] runs a bounded job to its end and returns a [`JobResult`];
//!   [`StreamEnv::execute_async`] returns a [`JobHandle`] to cancel, savepoint or join an
//!   unbounded one. [`StreamEnv::explain`] shows the chained graph.
//! - **Streams.** A [`DataStream`] is transformed with closures (`map`, `flat_map`, `filter`)
//!   or rich functions from [`api::functions`] (`MapFunction`, `ProcessFunction` with side
//!   outputs through [`OutputTag`], ...), repartitioned (`rebalance`, `broadcast`, ...),
//!   unioned and connected ([`ConnectedStreams`]), and ends in a sink (`print`,
//!   `collect_sink`, `write_exactly_once`, `add_sink`).
//! - **Keys.** [`DataStream::key_by`] gives a [`KeyedStream`]: rolling aggregations, keyed
//!   process functions with state and timers, and windows. Keys hash with [`StableHash`], frozen
//!   across processes and versions, into key groups.
//! - **Time and windows.** [`time::WatermarkStrategy`] assigns timestamps and watermarks;
//!   [`KeyedStream::window`] with a [`WindowAssigner`](operator::window::WindowAssigner)
//!   (tumbling, sliding, session; event or processing time) gives a [`api::WindowedStream`]
//!   with Flink's semantics: allowed lateness, late side outputs, merging sessions
//!   ([`operator::window`]).
//! - **Operators and state.** The [`#[operator]`](macro@operator) attribute turns a struct
//!   into a function with declared state: `#[state]` fields are keyed state
//!   ([`state::ValueState`], [`state::ListState`], [`state::MapState`], ...), `#[operator_state]`
//!   fields operator state, and the other fields its configuration. State lives in a memory or
//!   LMDB backend ([`state::StateBackendKind`]); see [`state`].
//! - **Checkpoints.** [`StreamEnv::enable_checkpointing`] takes asynchronous barrier snapshots
//!   ([`checkpoint`]); a failed subtask restarts the job from the latest one under a
//!   [`RestartStrategy`](checkpoint::RestartStrategy), savepoints come from
//!   [`JobHandle::stop_with_savepoint`] and start a job with [`StreamEnv::restore_from`], and
//!   the exactly-once file sink commits on checkpoint completion.
//! - **Connectors.** Built-in sources and sinks are in [`connectors`]: collections, generators,
//!   files ([`connectors::NumberedFileSource`]), sockets, printing, and the exactly-once file
//!   sink ([`connectors::ExactlyOnceFileSink`]); with the cargo features `kafka`, `postgres`
//!   and `redis`, a Kafka source and sink and PostgreSQL and Redis sinks, at least once or
//!   exactly once.
//! - **Errors.** One enum per layer, each saying what and where: [`GraphError`] (an invalid
//!   graph, reported before anything runs), [`JobError`] (a failed job, naming the operator and
//!   subtask), and the crate's [`Error`]; they convert upwards, so `?` works across the API
//!   ([`error`]).
//!
//! [`prelude`] imports what a job definition usually needs.
//!
//! ## Layers
//!
//! `api -> runtime -> graph -> operator -> exchange -> {checkpoint, time} -> state`: [`api`]
//! builds a logical graph, [`graph`] resolves it into chained tasks and subtasks, and [`runtime`]
//! runs them as actors over the pure cores of [`operator`](mod@operator), [`exchange`] (what
//! travels between subtasks: elements, batches, credits, frames), [`time`], [`state`] and
//! [`checkpoint`]; see `docs/ARCHITECTURE.md` (section "Layering") for the arrows that still
//! point the other way.

pub mod api;
pub mod cep;
pub mod checkpoint;
pub mod cluster;
pub mod connectors;
pub mod error;
pub mod exchange;
pub mod graph;
pub mod metrics;
pub mod net;
pub mod operator;
pub mod rest;
pub mod runtime;
#[cfg(feature = "sim-sabotage")]
pub mod sabotage;
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
        StateSnapshotContext, UnrecoverableError,
    };
    pub use crate::runtime::{JobHandle, JobResult, JobStatus};
    pub use crate::state::{
        AggregatingState, ListState, MapState, OperatorList, ReducingState, StableHash,
        StableHasher, StateBackendKind, StateTtlConfig, UnionList, ValueState,
    };
    pub use crate::time::{Watermark, WatermarkStrategy};
    pub use eichhorn_macros::{KeyBy, StableHash, operator};
}
