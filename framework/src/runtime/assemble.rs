//! Builds the operator chain of one subtask from the execution graph (the data: what to build
//! and how it connects) and the operator registry (the code: factories and ports).
//!
//! Starting at the chain's head, every operator is built after its outputs: the chained
//! consumers of an output are built recursively, each edge that leaves the chain gets a record
//! writer over this subtask's channels of that edge, and the output's port joins them (none,
//! one, or a fan-out).

use crate::api::ExecutionConfig;
use crate::error::GraphError;
use crate::graph::{ExecutionGraph, OutputSelector};
use crate::operator::{ErasedChained, NodeId, OperatorInfo, SideOutputs, SourceTask};

use super::head::InputTask;
use super::registry::{OperatorFactory, OperatorRegistry, WriterLayout};

/// The assembled head of a subtask's chain.
pub(crate) enum AssembledHead {
    Source(Box<dyn SourceTask>),
    Input(Box<dyn InputTask>),
}

struct Assembler<'a> {
    graph: &'a ExecutionGraph,
    registry: &'a OperatorRegistry,
    subtask: usize,
    config: &'a ExecutionConfig,
}

impl Assembler<'_> {
    fn info(&self, node: NodeId) -> OperatorInfo {
        let n = self.graph.job.stream.node(node);
        OperatorInfo {
            node,
            name: n.name.clone(),
            uid: n.uid.clone(),
            parallelism: self.graph.job.parallelism[node.0 as usize],
        }
    }

    /// The endpoint that receives everything `node` emits on `output`.
    fn output(&self, node: NodeId, output: &OutputSelector) -> Result<ErasedChained, GraphError> {
        let job = &self.graph.job;
        let plan = &self.graph.subtasks[self.subtask];
        let entry = self.registry.operator(node)?;
        let port = match output {
            OutputSelector::Main => entry.output_port.clone(),
            OutputSelector::Side(tag) => entry.side_ports.get(tag).cloned(),
        }
        .ok_or_else(|| {
            GraphError::Internal(format!("node {} has no port for {output:?}", node.0))
        })?;
        let mut parts = Vec::new();
        for (edge_index, edge) in job.stream.out_edges(node, output) {
            if job.chained[edge_index] {
                parts.push(self.operator_input(edge.target)?);
            } else {
                let (_, first, count) = plan
                    .output_ranges
                    .iter()
                    .find(|(e, _, _)| *e == edge_index)
                    .copied()
                    .ok_or_else(|| {
                        GraphError::Internal(format!("no channels for edge {edge_index}"))
                    })?;
                let layout = WriterLayout {
                    target: edge.target,
                    first_channel: first,
                    channel_count: count,
                    batch_records_max: self.config.batch_records_max,
                    max_parallelism: job.max_parallelism,
                    subtask_index: plan.id.index,
                    seed: self.config.seed
                        ^ crate::state::splitmix64(
                            ((self.subtask as u64) << 32) | edge_index as u64,
                        ),
                };
                parts.push(port.writer(self.registry.edge(edge_index)?, layout));
            }
        }
        Ok(port.fanout(parts))
    }

    /// The side-output ports of `node`, each with its consumers built.
    fn side_outputs(&self, node: NodeId) -> Result<SideOutputs, GraphError> {
        let mut side = SideOutputs::default();
        for (tag, port) in &self.registry.operator(node)?.side_ports {
            let chain = self.output(node, &OutputSelector::Side(tag.clone()))?;
            port.add_side_port(&mut side, tag.clone(), chain);
        }
        Ok(side)
    }

    /// The input endpoint of a one-input operator or sink, with its outputs built.
    fn operator_input(&self, node: NodeId) -> Result<ErasedChained, GraphError> {
        match &self.registry.operator(node)?.factory {
            OperatorFactory::OneInput(factory) => {
                let main = self.output(node, &OutputSelector::Main)?;
                let side = self.side_outputs(node)?;
                Ok(factory(self.info(node), main, side))
            }
            OperatorFactory::Sink(factory) => Ok(factory(self.info(node))),
            other => Err(GraphError::Internal(format!(
                "a {} operator cannot be chained",
                other.kind().label()
            ))),
        }
    }
}

/// Builds the chain of subtask `subtask`.
pub(crate) fn assemble(
    graph: &ExecutionGraph,
    registry: &OperatorRegistry,
    subtask: usize,
    config: &ExecutionConfig,
) -> Result<AssembledHead, GraphError> {
    let assembler = Assembler {
        graph,
        registry,
        subtask,
        config,
    };
    let plan = &graph.subtasks[subtask];
    let vertex = &graph.job.vertices[plan.id.vertex as usize];
    let head = graph.job.stream.node(vertex.head);
    let entry = registry.operator(vertex.head)?;
    match &entry.factory {
        OperatorFactory::Source(factory) => {
            let main = assembler.output(vertex.head, &OutputSelector::Main)?;
            Ok(AssembledHead::Source(factory(
                assembler.info(vertex.head),
                main,
            )))
        }
        OperatorFactory::TwoInput(factory) => {
            let main = assembler.output(vertex.head, &OutputSelector::Main)?;
            let side = assembler.side_outputs(vertex.head)?;
            Ok(AssembledHead::Input(factory(
                assembler.info(vertex.head),
                main,
                side,
            )))
        }
        OperatorFactory::OneInput(_) | OperatorFactory::Sink(_) => {
            let port = entry
                .input_port
                .clone()
                .ok_or_else(|| GraphError::Internal(format!("{} has no input port", head.name)))?;
            let chain = assembler.operator_input(vertex.head)?;
            Ok(AssembledHead::Input(
                port.one_input_head(vertex.name.clone(), chain),
            ))
        }
    }
}
