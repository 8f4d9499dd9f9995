//! The DataStream API, in Flink's vocabulary.
//!
//! [`StreamEnv`] declares sources and runs jobs; [`DataStream`], [`KeyedStream`] and
//! [`ConnectedStreams`] declare transformations; the traits in [`functions`] are what users
//! implement when a closure is not enough. Nothing here runs a job itself: it builds a stream
//! graph that `execute` hands to the graph compiler and the runtime.

mod broadcast;
mod config;
mod connected;
mod datastream;
mod env;
pub mod functions;
mod joins;
mod key;
mod keyed;
pub(crate) mod operator;
mod output_tag;
mod sinks;
mod sources;
mod two_phase;
mod windowed;

/// Where subtasks run: a property of the node's [`RuntimeEnv`](crate::runtime::RuntimeEnv),
/// re-exported here where it used to live.
pub use crate::runtime::TaskExecutor;
pub use broadcast::{
    BroadcastConnectedStream, BroadcastProcessFunction, BroadcastStream,
    KeyedBroadcastConnectedStream, KeyedBroadcastProcessFunction, MapStateDescriptor,
};
pub use config::{
    BATCH_RECORDS_LIMIT, CREDITS_PER_CHANNEL_LIMIT, CheckpointConfig, CheckpointingMode,
    ExecutionConfig, RestoreSettings,
};
pub use connected::{ConnectedStreams, KeyedConnectedStreams};
pub use datastream::DataStream;
pub use env::StreamEnv;
pub use functions::{
    AggregateFunction, CoFlatMapFunction, CoMapFunction, CoProcessFunction, FilterFunction,
    FlatMapFunction, JoinContext, KeyedCoProcessFunction, KeyedFlatMapFunction,
    KeyedProcessFunction, MapFunction, ProcessFunction, ProcessJoinFunction, ProcessWindowFunction,
    SinkContext, SinkFunction, SourceContext, SourceFunction, SourcePoll,
};
pub use joins::{IntervalJoin, IntervalJoined, TaggedUnion, WindowJoin, WindowedJoin};
pub use key::{Data, Key, KeyBy};
pub use keyed::KeyedStream;
pub use operator::{Operator, Unkeyed};
pub use output_tag::OutputTag;
pub use sinks::{CollectSink, DataStreamSink};
pub use two_phase::TwoPhaseCommitSink;
pub use windowed::{AllWindowedStream, WindowedStream};
