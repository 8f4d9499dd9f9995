//! Hand-built stream graphs for the graph layer's unit tests (no API, no operator code).

use super::edge::{InputSide, PartitionKind, Partitioning};
use super::stream_graph::{OperatorKind, OutputSelector, StreamEdge, StreamGraph, StreamNode};
use crate::operator::NodeId;

/// A pipeline `source -> op -> ... -> sink`: one node per entry of `parallelism` (the first a
/// source, the last a sink), edge `i` partitioned by `partitions[i]` (explicitly).
pub(crate) fn pipeline(parallelism: &[u32], partitions: &[PartitionKind]) -> StreamGraph {
    assert!(parallelism.len() >= 2);
    assert_eq!(partitions.len() + 1, parallelism.len());
    let mut graph = StreamGraph::default();
    let last = parallelism.len() - 1;
    for (index, p) in parallelism.iter().enumerate() {
        let kind = match index {
            0 => OperatorKind::Source,
            i if i == last => OperatorKind::Sink,
            _ => OperatorKind::OneInput,
        };
        let mut node = StreamNode::new(kind, format!("op{index}"));
        node.parallelism = Some(*p);
        node.uid = Some(format!("uid-{index}"));
        graph.add_node(node);
    }
    for (index, kind) in partitions.iter().enumerate() {
        graph.add_edge(StreamEdge {
            source: NodeId(index as u32),
            output: OutputSelector::Main,
            target: NodeId(index as u32 + 1),
            side: InputSide::First,
            partitioning: Partitioning::explicit(*kind),
        });
    }
    graph
}

/// Two sources into a two-input operator whose side output `late` and main output each feed a
/// sink; parallelism 2 throughout except the first source (1).
pub(crate) fn diamond() -> StreamGraph {
    let mut graph = StreamGraph::default();
    let mut add = |kind, name: &str, p: u32| {
        let mut node = StreamNode::new(kind, name);
        node.parallelism = Some(p);
        graph.add_node(node)
    };
    let left = add(OperatorKind::Source, "left", 1);
    let right = add(OperatorKind::Source, "right", 2);
    let join = add(OperatorKind::TwoInput, "join", 2);
    let main = add(OperatorKind::Sink, "main", 2);
    let late = add(OperatorKind::Sink, "late", 2);
    graph.add_side_output(join, "late");
    let edges = [
        (
            left,
            OutputSelector::Main,
            join,
            InputSide::First,
            PartitionKind::Hash,
        ),
        (
            right,
            OutputSelector::Main,
            join,
            InputSide::Second,
            PartitionKind::Broadcast,
        ),
        (
            join,
            OutputSelector::Main,
            main,
            InputSide::First,
            PartitionKind::Forward,
        ),
        (
            join,
            OutputSelector::Side("late".to_string()),
            late,
            InputSide::First,
            PartitionKind::Rebalance,
        ),
    ];
    for (source, output, target, side, kind) in edges {
        graph.add_edge(StreamEdge {
            source,
            output,
            target,
            side,
            partitioning: Partitioning::explicit(kind),
        });
    }
    graph
}
