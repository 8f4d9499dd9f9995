//! The operator registry: the half of a job that is code, not data.
//!
//! The job descriptor ([`crate::graph::JobDescriptor`]) says what every operator is and how
//! they connect; it cannot say how to build one, because that is a closure over the user's
//! function and types. The registry maps each [`NodeId`] to its [`OperatorFactory`] and its
//! [`Port`]s (small objects that know a stream's element type and build the typed pieces around
//! a node: record writers, fan-outs, chain heads, side-output ports), and each edge to the
//! erased key selector of a hash or custom partitioner. The API fills it alongside the stream
//! graph; every process rebuilds it by running the same job-building code, and
//! [`OperatorRegistry::check`] refuses one that does not fit the descriptor.
//!
//! Erased values are downcast once per subtask at assembly and once per batch at a chain
//! head, never per record.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use super::head::{InputTask, OneInputHead};
use super::partitioner::PartitionerSpec;
use super::writer::RecordWriter;
use crate::error::GraphError;
use crate::exchange::BatchCodec;
use crate::graph::{ExecutionGraph, OperatorKind, OutputSelector, PartitionKind, StreamGraph};
use crate::operator::{
    Chained, Discard, ErasedChained, Fanout, NodeId, OperatorInfo, SideOutputs, SourceTask,
};

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
    /// The kind of operator this builds, as the graph records it.
    pub(crate) fn kind(&self) -> OperatorKind {
        match self {
            Self::Source(_) => OperatorKind::Source,
            Self::OneInput(_) => OperatorKind::OneInput,
            Self::TwoInput(_) => OperatorKind::TwoInput,
            Self::Sink(_) => OperatorKind::Sink,
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
    /// Encodes and decodes batches of this type for a channel that crosses nodes.
    fn codec(&self) -> BatchCodec;
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
    fn codec(&self) -> BatchCodec {
        BatchCodec::of::<T>()
    }
}

/// The code of one operator: its factory and the ports of its input and outputs.
#[derive(Clone)]
pub(crate) struct OperatorEntry {
    pub(crate) factory: OperatorFactory,
    /// The input type (one-input operators and sinks).
    pub(crate) input_port: Option<Arc<dyn Port>>,
    /// The main output type (all but sinks).
    pub(crate) output_port: Option<Arc<dyn Port>>,
    /// Side outputs consumed downstream, by tag id.
    pub(crate) side_ports: BTreeMap<String, Arc<dyn Port>>,
}

impl OperatorEntry {
    /// An entry without side outputs.
    pub(crate) fn new(
        factory: OperatorFactory,
        input_port: Option<Arc<dyn Port>>,
        output_port: Option<Arc<dyn Port>>,
    ) -> Self {
        Self {
            factory,
            input_port,
            output_port,
            side_ports: BTreeMap::new(),
        }
    }
}

/// Node id -> operator code, edge index -> partitioner (see the module docs).
#[derive(Clone, Default)]
pub(crate) struct OperatorRegistry {
    operators: Vec<OperatorEntry>,
    /// Per stream edge, as the API declared it (the selector of hash and custom edges).
    edges: Vec<PartitionerSpec>,
    /// The collect sinks' buffers, by sink node: in a cluster, what a TaskManager's sinks
    /// collected travels to the JobManager's handle of the same sink.
    collectors: BTreeMap<NodeId, Arc<dyn Collector>>,
}

/// The buffer of a collect sink without its element type: drained into postcard bytes on the
/// node that ran the sink, appended from them on the node that reads the handle.
pub(crate) trait Collector: Send + Sync {
    /// Takes every element collected so far, encoded as postcard `Vec<T>` chunks of at most
    /// `chunk_bytes` each (a single larger element is a chunk of its own), in arrival order.
    fn drain_encoded(&self, chunk_bytes: usize) -> Result<Vec<Vec<u8>>, String>;
    /// Appends the elements of one chunk `drain_encoded` made.
    fn append_encoded(&self, chunk: &[u8]) -> Result<(), String>;
}

/// The [`Collector`] of a collect sink of `T`.
pub(crate) struct TypedCollector<T>(pub(crate) Arc<std::sync::Mutex<Vec<T>>>);

impl<T: crate::api::Data> Collector for TypedCollector<T> {
    fn drain_encoded(&self, chunk_bytes: usize) -> Result<Vec<Vec<u8>>, String> {
        let items = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        let mut chunks = Vec::new();
        encode_halving(&items, chunk_bytes, &mut chunks)?;
        Ok(chunks)
    }

    fn append_encoded(&self, chunk: &[u8]) -> Result<(), String> {
        let items: Vec<T> = postcard::from_bytes(chunk).map_err(|e| {
            format!(
                "collected elements of {} do not decode: {e}",
                std::any::type_name::<T>()
            )
        })?;
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(items);
        Ok(())
    }
}

/// Encodes `items` as one chunk, or, when that exceeds `chunk_bytes`, as the chunks of its two
/// halves (a single element is one chunk whatever its size).
fn encode_halving<T: serde::Serialize>(
    items: &[T],
    chunk_bytes: usize,
    chunks: &mut Vec<Vec<u8>>,
) -> Result<(), String> {
    if items.is_empty() {
        return Ok(());
    }
    let encoded = postcard::to_allocvec(items)
        .map_err(|e| format!("cannot encode collected elements: {e}"))?;
    if encoded.len() <= chunk_bytes || items.len() == 1 {
        chunks.push(encoded);
        return Ok(());
    }
    let (first, second) = items.split_at(items.len() / 2);
    encode_halving(first, chunk_bytes, chunks)?;
    encode_halving(second, chunk_bytes, chunks)
}

impl std::fmt::Debug for OperatorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorRegistry")
            .field("operators", &self.operators.len())
            .field("edges", &self.edges)
            .field("collectors", &self.collectors.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl OperatorRegistry {
    /// Registers the code of node `id`, the next node of the graph.
    pub(crate) fn add_operator(&mut self, id: NodeId, entry: OperatorEntry) {
        assert_eq!(
            id.0 as usize,
            self.operators.len(),
            "operators are registered in node order"
        );
        self.operators.push(entry);
    }

    /// Registers the partitioner of edge `index`, the next edge of the graph.
    pub(crate) fn add_edge(&mut self, index: usize, spec: PartitionerSpec) {
        assert_eq!(index, self.edges.len(), "edges are registered in order");
        self.edges.push(spec);
    }

    /// The code of node `id`.
    pub(crate) fn operator(&self, id: NodeId) -> Result<&OperatorEntry, GraphError> {
        self.operators.get(id.0 as usize).ok_or_else(|| {
            GraphError::Internal(format!("operator {} is not in the registry", id.0))
        })
    }

    /// The code of node `id`, to add side ports.
    pub(crate) fn operator_mut(&mut self, id: NodeId) -> Option<&mut OperatorEntry> {
        self.operators.get_mut(id.0 as usize)
    }

    /// Registers the buffer of the collect sink `node`.
    pub(crate) fn add_collector(&mut self, node: NodeId, collector: Arc<dyn Collector>) {
        self.collectors.insert(node, collector);
    }

    /// The collect sinks' buffers, by node.
    pub(crate) fn collectors(&self) -> &BTreeMap<NodeId, Arc<dyn Collector>> {
        &self.collectors
    }

    /// The codec of the batches subtask `producer` sends on its output `output`: the type of
    /// the producing node's main or side output that edge leaves.
    ///
    /// # Errors
    ///
    /// The output or its edge is not in the graph or the registry.
    pub(crate) fn output_codec(
        &self,
        graph: &ExecutionGraph,
        producer: usize,
        output: usize,
    ) -> Result<BatchCodec, GraphError> {
        let plan = graph.subtasks.get(producer).ok_or_else(|| {
            GraphError::Internal(format!("subtask {producer} is not in the graph"))
        })?;
        let (edge_index, _, _) = plan
            .output_ranges
            .iter()
            .copied()
            .find(|&(_, first, count)| (first..first + count).contains(&output))
            .ok_or_else(|| {
                GraphError::Internal(format!("subtask {producer} has no output {output}"))
            })?;
        let edge = graph.job.stream.edges.get(edge_index).ok_or_else(|| {
            GraphError::Internal(format!("edge {edge_index} is not in the graph"))
        })?;
        let entry = self.operator(edge.source)?;
        let port = match &edge.output {
            OutputSelector::Main => entry.output_port.as_ref(),
            OutputSelector::Side(tag) => entry.side_ports.get(tag),
        };
        port.map(|port| port.codec()).ok_or_else(|| {
            GraphError::Internal(format!(
                "operator {} has no port for edge {edge_index}",
                edge.source.0
            ))
        })
    }

    /// The partitioner of edge `index`.
    pub(crate) fn edge(&self, index: usize) -> Result<&PartitionerSpec, GraphError> {
        self.edges
            .get(index)
            .ok_or_else(|| GraphError::Internal(format!("edge {index} is not in the registry")))
    }

    /// Checks that this registry can build every operator and edge of `graph`: one entry per
    /// node of the same kind, with the ports its kind and side outputs need, and one
    /// partitioner per edge, with a key selector where the partitioning needs one.
    ///
    /// # Errors
    ///
    /// [`GraphError::Internal`] naming the first node or edge that does not fit: the registry
    /// was built by other job-building code than the descriptor.
    pub(crate) fn check(&self, graph: &StreamGraph) -> Result<(), GraphError> {
        let mismatch = |what: String| {
            Err(GraphError::Internal(format!(
                "the operator registry does not fit the job descriptor: {what}"
            )))
        };
        if self.operators.len() != graph.nodes().len() {
            return mismatch(format!(
                "{} operator(s) registered, the graph has {}",
                self.operators.len(),
                graph.nodes().len()
            ));
        }
        for (node, entry) in graph.nodes().iter().zip(&self.operators) {
            let kind = entry.factory.kind();
            if kind != node.kind {
                return mismatch(format!(
                    "operator '{}' is a {} operator, its factory builds a {} one",
                    node.name,
                    node.kind.label(),
                    kind.label()
                ));
            }
            let needs_input = matches!(kind, OperatorKind::OneInput | OperatorKind::Sink);
            let needs_output = kind != OperatorKind::Sink;
            if needs_input != entry.input_port.is_some()
                || needs_output != entry.output_port.is_some()
            {
                return mismatch(format!("operator '{}' has the wrong ports", node.name));
            }
            let tags: Vec<&String> = entry.side_ports.keys().collect();
            let declared: Vec<&String> = node.side_outputs.iter().collect();
            if tags != declared {
                return mismatch(format!(
                    "operator '{}' has side outputs {declared:?}, ports for {tags:?}",
                    node.name
                ));
            }
        }
        if self.edges.len() != graph.edges().len() {
            return mismatch(format!(
                "{} edge(s) registered, the graph has {}",
                self.edges.len(),
                graph.edges().len()
            ));
        }
        for (index, (edge, spec)) in graph.edges().iter().zip(&self.edges).enumerate() {
            if spec.partitioning() != edge.partitioning {
                return mismatch(format!(
                    "edge {index} is {:?}, its partitioner {:?}",
                    edge.partitioning, spec
                ));
            }
            let needs_selector = matches!(
                edge.partitioning.kind,
                PartitionKind::Hash | PartitionKind::Custom
            );
            if needs_selector && spec.selector.is_none() {
                return mismatch(format!("edge {index} has no key selector"));
            }
            if let OutputSelector::Side(tag) = &edge.output
                && !self.operators[edge.source.0 as usize]
                    .side_ports
                    .contains_key(tag)
            {
                return mismatch(format!(
                    "edge {index} leaves side output '{tag}' without a port"
                ));
            }
        }
        Ok(())
    }
}
