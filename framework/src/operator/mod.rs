//! Operator cores: pure, synchronous state machines with no I/O, no clock and no spawning.
//!
//! An operator receives records and control elements through `&mut self` calls and emits into a
//! [`Collector`]; the runtime's subtask actor drives a chain of them (see [`Chained`]). The
//! simulator drives the same cores.
//!
//! ## Design
//!
//! Operators inside one subtask form a tree (a chain, possibly with several consumers of one
//! output). Records move by direct calls; only at the leaves, record writers cut the stream into
//! batches for other subtasks. A [`TaskCx`] is threaded through every call: it carries the credit
//! outbox (so writers can tell when downstream is full), the operator currently running user code
//! (so a panic names it) and the first failure reported by a function.

mod aggregate;
mod basic;
mod broadcast_process;
mod chain;
mod checkpointing;
mod co;
mod co_process;
mod context;
mod interval_join;
mod keyed_process;
mod sink;
mod source;
#[cfg(test)]
pub(crate) mod testing;
mod timestamps;
mod two_phase_sink;
pub mod window;

pub(crate) use aggregate::{ByReducer, FieldAggregation, FieldReducer, FnReducer, RollingReduce};
pub(crate) use basic::{
    FilterOperator, FlatMapOperator, FnFilter, FnFlatMap, FnMap, MapOperator, ProcessOperator,
};
pub use broadcast_process::{
    BroadcastContext, BroadcastReadOnlyContext, BroadcastState, KeyedBroadcastContext,
    KeyedBroadcastReadOnlyContext, ReadOnlyBroadcastState,
};
pub(crate) use broadcast_process::{
    BroadcastProcessOperator, BroadcastStateSpec, KeyedBroadcastProcessOperator,
};
pub use chain::{
    Chained, Collector, OneInputOperator, OpenContext, OperatorContext, OperatorCounters,
    OperatorError, OperatorInfo, RunContext, SideOutputs,
};
pub(crate) use chain::{Discard, ErasedChained, Fanout, OneInputNode};
pub use checkpointing::{
    PendingOperatorSnapshot, StateInitContext, StateSnapshotContext, TaskStateInit,
};
pub use co::TwoInputOperator;
pub(crate) use co::{
    CoFlatMapOperator, CoMapOperator, FnCoFlatMap, FnCoMap, TwoInputChained, TwoInputNode,
};
pub(crate) use co_process::{CoProcessOperator, KeyedCoProcessOperator};
pub(crate) use context::CommitReport;
pub use context::{FunctionError, NodeId, RuntimeContext, TaskCx, TaskFailure, UnrecoverableError};
// The elements live in the exchange layer (they cross channels); operators take and emit them,
// so `eichhorn::operator` names them too.
pub use crate::exchange::{ChannelBatch, Control, ErasedBatch, Record, Segment, StreamElement};
pub(crate) use interval_join::IntervalJoinOperator;
pub use keyed_process::KeyedContext;
pub(crate) use keyed_process::{KeyedFlatMap, KeyedProcessOperator, KeyedRuntime};
pub(crate) use sink::SinkNode;
pub(crate) use source::{SourceNode, SourceTask};
pub(crate) use timestamps::TimestampsAndWatermarks;
pub(crate) use two_phase_sink::{TRANSACTIONS_STATE, TwoPhaseCommitSinkNode};
