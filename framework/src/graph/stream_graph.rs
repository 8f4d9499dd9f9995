//! The logical stream graph: one node per operator the user declared, one edge per connection.
//!
//! Nodes carry type-erased factories that build the operator for each subtask, and *ports*:
//! small objects that know the node's output type and can build the typed pieces around it
//! (record writers, fan-outs, chain heads) without the runtime knowing any user type.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use super::edge::{InputSide, PartitionKind};
use crate::operator::{
    Chained, Discard, ErasedChained, Fanout, NodeId, OperatorInfo, SideOutputs, SourceTask,
};
use crate::runtime::head::{InputTask, OneInputHead};
use crate::runtime::partitioner::PartitionerSpec;
use crate::runtime::writer::RecordWriter;

/// Whether an operator may be chained with its neighbours (Flink's `ChainingStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChainingStrategy {
    /// Chains with upstream and downstream where the edge allows.
    Always,
    /// Starts a new chain (`start_new_chain`): never chained to its upstream.
    Head,
    /// Never chained (`disable_chaining`).
    Never,
}

/// Which output of a node an edge leaves from.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum OutputSelector {
    /// The main output.
    Main,
    /// The side output with this tag id.
    Side(String),
}

/// What a node does, with the factory that builds it for one subtask.
#[derive(Clone)]
pub(crate) enum OperatorFactory {
    Source(Arc<dyn Fn(OperatorInfo, ErasedChained) -> Box<dyn SourceTask> + Send + Sync>),
    OneInput(Arc<dyn Fn(OperatorInfo, ErasedChained, SideOutputs) -> ErasedChained + Send + Sync>),
    TwoInput(
        Arc<dyn Fn(OperatorInfo, ErasedChained, SideOutputs) -> Box<dyn InputTask> + Send + Sync>,
    ),
    Sink(Arc<dyn Fn(OperatorInfo) -> ErasedChained + Send + Sync>),
}

impl OperatorFactory {
    pub(crate) fn kind_label(&self) -> &'static str {
        match self {
            Self::Source(_) => "source",
            Self::OneInput(_) => "one-input",
            Self::TwoInput(_) => "two-input",
            Self::Sink(_) => "sink",
        }
    }
}

/// Everything the runtime needs to know about one stream type without naming it.
pub(crate) trait Port: Send + Sync {
    fn type_id(&self) -> TypeId;
    fn type_name(&self) -> &'static str;
    /// Combines the consumers of one output (none: discard; one: itself; more: fan-out).
    fn fanout(&self, parts: Vec<ErasedChained>) -> ErasedChained;
    /// A record writer for an edge leaving the chain.
    fn writer(&self, spec: &PartitionerSpec, layout: WriterLayout) -> ErasedChained;
    /// The head of a chain whose first operator consumes this type.
    fn one_input_head(&self, name: String, chain: ErasedChained) -> Box<dyn InputTask>;
    /// Registers the consumer chain of a side output of this type.
    fn add_side_port(&self, side: &mut SideOutputs, tag: String, chain: ErasedChained);
}

/// Where a writer's channels sit and how to fill them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterLayout {
    pub(crate) target: NodeId,
    pub(crate) first_channel: usize,
    pub(crate) channel_count: usize,
    pub(crate) batch_records_max: usize,
    pub(crate) max_parallelism: u32,
    pub(crate) subtask_index: u32,
    pub(crate) seed: u64,
}

/// The [`Port`] of stream type `T`.
pub(crate) struct TypedPort<T>(PhantomData<fn() -> T>);

impl<T> TypedPort<T> {
    pub(crate) fn arc() -> Arc<dyn Port>
    where
        T: crate::api::Data,
    {
        Arc::new(Self(PhantomData))
    }
}

/// Unwraps an erased chain endpoint built for type `T`.
pub(crate) fn typed_chain<T: 'static>(chain: ErasedChained) -> Box<dyn Chained<T>> {
    match chain.downcast::<Box<dyn Chained<T>>>() {
        Ok(chain) => *chain,
        // Ports and factories are created together with the typed API calls, so the types always
        // agree; a mismatch is a bug in the graph builder.
        Err(_) => panic!(
            "chain endpoint is not a Chained<{}>",
            std::any::type_name::<T>()
        ),
    }
}

/// Erases a chain endpoint.
pub(crate) fn erase_chain<T: 'static>(chain: Box<dyn Chained<T>>) -> ErasedChained {
    Box::new(chain)
}

impl<T: crate::api::Data> Port for TypedPort<T> {
    fn type_id(&self) -> TypeId {
        TypeId::of::<T>()
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
    fn fanout(&self, parts: Vec<ErasedChained>) -> ErasedChained {
        let mut parts: Vec<Box<dyn Chained<T>>> = parts.into_iter().map(typed_chain::<T>).collect();
        let chain: Box<dyn Chained<T>> = match parts.len() {
            0 => Box::new(Discard),
            1 => parts.remove(0),
            _ => Box::new(Fanout::new(parts)),
        };
        erase_chain(chain)
    }
    fn writer(&self, spec: &PartitionerSpec, layout: WriterLayout) -> ErasedChained {
        let writer = RecordWriter::<T>::new(
            layout.target,
            spec.kind,
            spec.typed_selector::<T>(),
            layout.first_channel,
            layout.channel_count,
            layout.batch_records_max,
            layout.max_parallelism,
            layout.subtask_index,
            layout.seed,
        );
        erase_chain::<T>(Box::new(writer))
    }
    fn one_input_head(&self, name: String, chain: ErasedChained) -> Box<dyn InputTask> {
        Box::new(OneInputHead::new(name, typed_chain::<T>(chain)))
    }
    fn add_side_port(&self, side: &mut SideOutputs, tag: String, chain: ErasedChained) {
        side.add_port::<T>(tag, typed_chain::<T>(chain));
    }
}

/// One operator of the logical graph.
#[derive(Clone)]
pub(crate) struct StreamNode {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) uid: Option<String>,
    /// `None`: the environment's default parallelism.
    pub(crate) parallelism: Option<u32>,
    /// A source that cannot run in parallel (collection, file, socket).
    pub(crate) non_parallel: bool,
    pub(crate) chaining: ChainingStrategy,
    pub(crate) factory: OperatorFactory,
    /// The input type (one-input operators and sinks).
    pub(crate) input_port: Option<Arc<dyn Port>>,
    /// The main output type (all but sinks).
    pub(crate) output_port: Option<Arc<dyn Port>>,
    /// Side outputs consumed downstream, by tag id.
    pub(crate) side_ports: BTreeMap<String, Arc<dyn Port>>,
}

impl std::fmt::Debug for StreamNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamNode")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.factory.kind_label())
            .field("parallelism", &self.parallelism)
            .finish()
    }
}

/// A connection between two nodes.
#[derive(Debug, Clone)]
pub(crate) struct StreamEdge {
    pub(crate) source: NodeId,
    pub(crate) output: OutputSelector,
    pub(crate) target: NodeId,
    pub(crate) side: InputSide,
    pub(crate) partitioner: PartitionerSpec,
}

/// The logical graph as the API built it.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamGraph {
    pub(crate) nodes: Vec<StreamNode>,
    pub(crate) edges: Vec<StreamEdge>,
}

impl StreamGraph {
    pub(crate) fn node(&self, id: NodeId) -> &StreamNode {
        &self.nodes[id.0 as usize]
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut StreamNode {
        &mut self.nodes[id.0 as usize]
    }

    pub(crate) fn add_node(&mut self, mut node: StreamNode) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        node.id = id;
        self.nodes.push(node);
        id
    }

    /// The edges entering `node`, in declaration order.
    pub(crate) fn in_edges(&self, node: NodeId) -> impl Iterator<Item = (usize, &StreamEdge)> {
        self.edges
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.target == node)
    }

    /// The edges leaving `node` from `output`, in declaration order.
    pub(crate) fn out_edges<'a>(
        &'a self,
        node: NodeId,
        output: &'a OutputSelector,
    ) -> impl Iterator<Item = (usize, &'a StreamEdge)> {
        self.edges
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.source == node && &e.output == output)
    }
}

/// The partitioning an edge gets when the user declared none: forward if the parallelism is the
/// same on both sides, rebalance otherwise (Flink's rule).
pub(crate) fn default_partitioner() -> PartitionerSpec {
    PartitionerSpec {
        kind: PartitionKind::Forward,
        explicit: false,
        selector: None,
    }
}
