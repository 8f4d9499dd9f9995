//! The logical stream graph: one node per operator the user declared, one edge per connection.
//!
//! Pure data: what each operator is (its kind, name, uid, parallelism, chaining, side outputs
//! and state schema) and how the operators are connected. What builds an operator for a
//! subtask (closures, typed ports) is not here but in the runtime's operator registry, keyed by
//! the same [`NodeId`]s; the API fills both as it goes.

use serde::{Deserialize, Serialize};

use super::edge::{InputSide, Partitioning};
use crate::operator::NodeId;
use crate::state::StateSchema;

/// Whether an operator may be chained with its neighbours (Flink's `ChainingStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// What kind of operator a node is: which inputs it has and whether it has an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorKind {
    /// No input, one output.
    Source,
    /// One input, one output (plus side outputs).
    OneInput,
    /// Two inputs, one output (plus side outputs); always the head of its chain.
    TwoInput,
    /// One input, no output.
    Sink,
}

impl OperatorKind {
    /// A short readable name, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::OneInput => "one-input",
            Self::TwoInput => "two-input",
            Self::Sink => "sink",
        }
    }
}

/// One operator of the logical graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamNode {
    /// Its id: its position in [`StreamGraph::nodes`].
    pub id: NodeId,
    /// Its display name (`"Map"`, `"Source: numbers"`).
    pub name: String,
    /// The uid its state is stored under; `None`: derived from its position.
    pub uid: Option<String>,
    /// `None`: the environment's default parallelism.
    pub parallelism: Option<u32>,
    /// A source that cannot run in parallel (collection, file, socket).
    pub non_parallel: bool,
    /// Whether it may be chained.
    pub chaining: ChainingStrategy,
    /// Its kind.
    pub kind: OperatorKind,
    /// The tags of its side outputs that are consumed downstream, in order.
    pub side_outputs: Vec<String>,
    /// The state its user function declares (part of the job's fingerprint).
    pub state_schema: StateSchema,
}

impl StreamNode {
    /// A node of `kind` named `name`, with defaults for everything else (its id is assigned
    /// when the node is added to a graph).
    pub fn new(kind: OperatorKind, name: impl Into<String>) -> Self {
        Self {
            id: NodeId(0),
            name: name.into(),
            uid: None,
            parallelism: None,
            non_parallel: false,
            chaining: match kind {
                OperatorKind::Source | OperatorKind::TwoInput => ChainingStrategy::Head,
                OperatorKind::OneInput | OperatorKind::Sink => ChainingStrategy::Always,
            },
            kind,
            side_outputs: Vec::new(),
            state_schema: StateSchema::empty(),
        }
    }

    /// The id under which the node's state is stored in checkpoints and savepoints: its uid
    /// when one was set (stable across program changes, as in Flink), else one derived from its
    /// position in the graph.
    pub fn state_id(&self) -> String {
        self.uid
            .clone()
            .unwrap_or_else(|| format!("node-{}", self.id.0))
    }
}

/// A connection between two nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEdge {
    /// The producing node.
    pub source: NodeId,
    /// Which of its outputs.
    pub output: OutputSelector,
    /// The consuming node.
    pub target: NodeId,
    /// Which of its inputs.
    pub side: InputSide,
    /// How records are spread over the consumer's subtasks.
    pub partitioning: Partitioning,
}

/// The logical graph as the API built it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamGraph {
    /// The nodes, by id.
    pub(crate) nodes: Vec<StreamNode>,
    /// The edges, in declaration order.
    pub(crate) edges: Vec<StreamEdge>,
}

impl StreamGraph {
    /// The nodes, in id order (a topological order: a node only consumes nodes declared
    /// before it).
    pub fn nodes(&self) -> &[StreamNode] {
        &self.nodes
    }

    /// The edges, in declaration order.
    pub fn edges(&self) -> &[StreamEdge] {
        &self.edges
    }

    pub(crate) fn node(&self, id: NodeId) -> &StreamNode {
        &self.nodes[id.0 as usize]
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut StreamNode {
        &mut self.nodes[id.0 as usize]
    }

    /// Adds `node` with the next id and returns that id.
    pub(crate) fn add_node(&mut self, mut node: StreamNode) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        node.id = id;
        self.nodes.push(node);
        id
    }

    /// Adds `edge` and returns its index.
    pub(crate) fn add_edge(&mut self, edge: StreamEdge) -> usize {
        self.edges.push(edge);
        self.edges.len() - 1
    }

    /// Records that `tag`, a side output of `node`, is consumed downstream.
    pub(crate) fn add_side_output(&mut self, node: NodeId, tag: &str) {
        let outputs = &mut self.node_mut(node).side_outputs;
        if let Err(position) = outputs.binary_search_by(|t| t.as_str().cmp(tag)) {
            outputs.insert(position, tag.to_string());
        }
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
