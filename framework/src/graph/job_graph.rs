//! StreamGraph -> JobGraph: resolved parallelism and partitioning, and operator chaining.
//!
//! Chaining follows Flink: an edge is chained (its operators run in one subtask, calling each other
//! directly) when chaining is enabled, the edge is a forward edge, both sides have the same
//! parallelism, the target has exactly one input edge, the target's strategy is `Always` and the
//! source's is not `Never`. Everything else becomes a job edge with channels between subtasks.

use serde::{Deserialize, Serialize};

use super::config::ExecutionConfig;
use super::edge::{InputSide, PartitionKind};
use super::stream_graph::{ChainingStrategy, OperatorKind, OutputSelector, StreamGraph};
use crate::error::GraphError;
use crate::operator::NodeId;

/// A chain of operators that runs as one subtask per parallel instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobVertex {
    /// The chain's head operator.
    pub head: NodeId,
    /// The operators of the chain, head first, in graph order.
    pub nodes: Vec<NodeId>,
    /// The chain's parallelism.
    pub parallelism: u32,
    /// `"Source: numbers -> Map -> Filter"`.
    pub name: String,
}

/// The chained graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobGraph {
    pub(crate) stream: StreamGraph,
    pub(crate) parallelism: Vec<u32>,
    /// Resolved partitioning per stream edge.
    pub(crate) partition: Vec<PartitionKind>,
    /// Whether each stream edge is chained.
    pub(crate) chained: Vec<bool>,
    pub(crate) vertices: Vec<JobVertex>,
    pub(crate) vertex_of: Vec<usize>,
    /// Indices of stream edges between vertices, in declaration order.
    pub(crate) job_edges: Vec<usize>,
    pub(crate) max_parallelism: u32,
}

impl JobGraph {
    /// Resolves and chains `stream` under `config`.
    ///
    /// # Errors
    ///
    /// A parallelism out of range, a non-parallel source with parallelism above 1, an explicit
    /// forward edge between operators of unequal parallelism, an operator without input, an
    /// empty graph.
    pub(crate) fn build(stream: StreamGraph, config: &ExecutionConfig) -> Result<Self, GraphError> {
        config.validate()?;
        if stream.nodes.is_empty() {
            return Err(GraphError::EmptyGraph);
        }
        let max_parallelism = config.max_parallelism;
        let mut parallelism = Vec::with_capacity(stream.nodes.len());
        for node in &stream.nodes {
            let p = match (node.non_parallel, node.parallelism) {
                (true, Some(p)) if p != 1 => {
                    return Err(GraphError::NonParallelOperator {
                        operator: node.name.clone(),
                        parallelism: p,
                    });
                }
                (true, _) => 1,
                (false, Some(p)) => p,
                (false, None) => config.parallelism,
            };
            if p == 0 || p > max_parallelism {
                return Err(GraphError::InvalidParallelism {
                    operator: node.name.clone(),
                    parallelism: p,
                    max_parallelism,
                });
            }
            parallelism.push(p);
        }

        for node in &stream.nodes {
            let inputs: Vec<_> = stream.in_edges(node.id).map(|(_, e)| e.side).collect();
            let missing = match node.kind {
                OperatorKind::Source => false,
                OperatorKind::OneInput | OperatorKind::Sink => inputs.is_empty(),
                OperatorKind::TwoInput => {
                    !inputs.contains(&InputSide::First) || !inputs.contains(&InputSide::Second)
                }
            };
            if missing {
                return Err(GraphError::MissingInput {
                    operator: node.name.clone(),
                });
            }
        }

        let mut partition = Vec::with_capacity(stream.edges.len());
        for edge in &stream.edges {
            let (ps, pt) = (
                parallelism[edge.source.0 as usize],
                parallelism[edge.target.0 as usize],
            );
            let kind = match edge.partitioning.kind {
                PartitionKind::Forward if ps != pt => {
                    if edge.partitioning.explicit {
                        return Err(GraphError::ForwardParallelismMismatch {
                            source_operator: stream.node(edge.source).name.clone(),
                            source_parallelism: ps,
                            target_operator: stream.node(edge.target).name.clone(),
                            target_parallelism: pt,
                        });
                    }
                    PartitionKind::Rebalance
                }
                kind => kind,
            };
            partition.push(kind);
        }

        let in_degree = |node: NodeId| stream.in_edges(node).count();
        let chained: Vec<bool> = stream
            .edges
            .iter()
            .zip(&partition)
            .map(|(edge, kind)| {
                let source = stream.node(edge.source);
                let target = stream.node(edge.target);
                config.chaining_enabled
                    && *kind == PartitionKind::Forward
                    && in_degree(edge.target) == 1
                    && parallelism[edge.source.0 as usize] == parallelism[edge.target.0 as usize]
                    && target.chaining == ChainingStrategy::Always
                    && source.chaining != ChainingStrategy::Never
                    && matches!(target.kind, OperatorKind::OneInput | OperatorKind::Sink)
            })
            .collect();

        // Nodes only ever consume nodes created before them, so id order is a topological order.
        let mut vertices: Vec<JobVertex> = Vec::new();
        let mut vertex_of = vec![usize::MAX; stream.nodes.len()];
        for node in &stream.nodes {
            let chained_input = stream
                .in_edges(node.id)
                .find(|(index, _)| chained[*index])
                .map(|(_, edge)| edge.source);
            let vertex = match chained_input {
                Some(source) => vertex_of[source.0 as usize],
                None => {
                    vertices.push(JobVertex {
                        head: node.id,
                        nodes: Vec::new(),
                        parallelism: parallelism[node.id.0 as usize],
                        name: String::new(),
                    });
                    vertices.len() - 1
                }
            };
            vertex_of[node.id.0 as usize] = vertex;
            vertices[vertex].nodes.push(node.id);
        }
        for vertex in &mut vertices {
            vertex.name = vertex
                .nodes
                .iter()
                .map(|n| stream.node(*n).name.as_str())
                .collect::<Vec<_>>()
                .join(" -> ");
        }
        let job_edges = (0..stream.edges.len()).filter(|i| !chained[*i]).collect();
        Ok(Self {
            stream,
            parallelism,
            partition,
            chained,
            vertices,
            vertex_of,
            job_edges,
            max_parallelism,
        })
    }

    /// The chains (tasks) of the job.
    pub fn vertices(&self) -> &[JobVertex] {
        &self.vertices
    }

    /// The logical graph this was built from.
    pub fn stream_graph(&self) -> &StreamGraph {
        &self.stream
    }

    /// The resolved parallelism of every operator, by node id.
    pub fn parallelism(&self) -> &[u32] {
        &self.parallelism
    }

    /// The resolved partitioning of every stream edge, by edge index.
    pub fn partitioning(&self) -> &[PartitionKind] {
        &self.partition
    }

    /// The number of key groups (the job's max parallelism).
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The largest parallelism of any chain: the slots the job needs under slot sharing.
    pub fn max_vertex_parallelism(&self) -> u32 {
        self.vertices
            .iter()
            .map(|v| v.parallelism)
            .max()
            .unwrap_or(0)
    }

    /// A readable description of the chained graph, as `StreamEnv::explain` prints it.
    pub fn explain(&self) -> String {
        use std::fmt::Write;
        let mut text = String::new();
        let _ = writeln!(text, "Job graph: {} task(s)", self.vertices.len());
        for (index, vertex) in self.vertices.iter().enumerate() {
            let _ = writeln!(
                text,
                "  [{index}] {} (parallelism {})",
                vertex.name, vertex.parallelism
            );
            for edge_index in &self.job_edges {
                let edge = &self.stream.edges[*edge_index];
                if self.vertex_of[edge.source.0 as usize] != index {
                    continue;
                }
                let side = match &edge.output {
                    OutputSelector::Main => String::new(),
                    OutputSelector::Side(tag) => format!(" side output '{tag}'"),
                };
                let input = match edge.side {
                    InputSide::First => "",
                    InputSide::Second => " (second input)",
                };
                let _ = writeln!(
                    text,
                    "      --{}-->{side} [{}]{input}",
                    self.partition[*edge_index].label(),
                    self.vertex_of[edge.target.0 as usize],
                );
            }
        }
        text
    }
}
