//! JobGraph -> ExecutionGraph: the parallel subtasks and the channels between them.
//!
//! Pure data. Each job edge expands into channels by its distribution pattern: all-to-all for
//! rebalance, shuffle, broadcast, hash, custom and global (channel `j` of a producer goes to
//! consumer subtask `j`); one-to-one for forward; pointwise for rescale. Global is all-to-all
//! although its records only use channel 0, as in Flink: every consumer must still receive
//! watermarks, barriers and the end of input, or the consumers without records would never end.
//!
//! ## Invariants
//!
//! - A producer's channels of one edge are contiguous in its output list, ordered by consumer
//!   subtask index (record writers rely on this for key partitioning).
//! - A consumer's input channels are ordered by (edge, producer index): deterministic.

use super::edge::{InputSide, PartitionKind};
use super::job_graph::JobGraph;

/// A subtask's position: which chain, which parallel instance.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SubtaskId {
    /// The chain (job vertex) index.
    pub vertex: u32,
    /// The parallel instance, `0..parallelism`.
    pub index: u32,
}

/// One input channel of a subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct InputChannel {
    /// Job-wide channel number.
    pub(crate) channel: usize,
    /// Flat index of the producing subtask.
    pub(crate) producer: usize,
    /// The channel's index in the producer's outbox.
    pub(crate) producer_output: usize,
    pub(crate) side: InputSide,
}

/// One output channel of a subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct OutputChannel {
    pub(crate) channel: usize,
    /// Flat index of the consuming subtask.
    pub(crate) consumer: usize,
    /// The channel's index in the consumer's input gate.
    pub(crate) consumer_input: usize,
}

/// The deployment facts of one subtask.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SubtaskPlan {
    pub(crate) id: SubtaskId,
    pub(crate) inputs: Vec<InputChannel>,
    pub(crate) outputs: Vec<OutputChannel>,
    /// Per job edge leaving this subtask: (stream edge index, first output, count).
    pub(crate) output_ranges: Vec<(usize, usize, usize)>,
}

/// All subtasks and channels of a job.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExecutionGraph {
    pub(crate) job: JobGraph,
    pub(crate) subtasks: Vec<SubtaskPlan>,
    pub(crate) channel_count: usize,
}

impl ExecutionGraph {
    /// Expands `job` into subtasks and channels.
    pub(crate) fn build(job: JobGraph) -> Self {
        let mut vertex_offset = Vec::with_capacity(job.vertices.len());
        let mut subtasks = Vec::new();
        for (v, vertex) in job.vertices.iter().enumerate() {
            vertex_offset.push(subtasks.len());
            for index in 0..vertex.parallelism {
                subtasks.push(SubtaskPlan {
                    id: SubtaskId {
                        vertex: v as u32,
                        index,
                    },
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                    output_ranges: Vec::new(),
                });
            }
        }
        let mut channel_count = 0;
        for &edge_index in &job.job_edges {
            let edge = &job.stream.edges[edge_index];
            let source_vertex = job.vertex_of[edge.source.0 as usize];
            let target_vertex = job.vertex_of[edge.target.0 as usize];
            let producers = job.vertices[source_vertex].parallelism;
            let consumers = job.vertices[target_vertex].parallelism;
            let kind = job.partition[edge_index];
            for i in 0..producers {
                let producer = vertex_offset[source_vertex] + i as usize;
                let first = subtasks[producer].outputs.len();
                for j in consumer_range(kind, i, producers, consumers) {
                    let consumer = vertex_offset[target_vertex] + j as usize;
                    let producer_output = subtasks[producer].outputs.len();
                    let consumer_input = subtasks[consumer].inputs.len();
                    subtasks[producer].outputs.push(OutputChannel {
                        channel: channel_count,
                        consumer,
                        consumer_input,
                    });
                    subtasks[consumer].inputs.push(InputChannel {
                        channel: channel_count,
                        producer,
                        producer_output,
                        side: edge.side,
                    });
                    channel_count += 1;
                }
                let count = subtasks[producer].outputs.len() - first;
                subtasks[producer]
                    .output_ranges
                    .push((edge_index, first, count));
            }
        }
        Self {
            job,
            subtasks,
            channel_count,
        }
    }

    /// The chained graph this was built from.
    pub fn job_graph(&self) -> &JobGraph {
        &self.job
    }

    /// The number of subtasks.
    pub fn subtask_count(&self) -> usize {
        self.subtasks.len()
    }

    /// The number of channels between subtasks.
    pub fn channel_count(&self) -> usize {
        self.channel_count
    }
}

/// The consumer subtasks producer `i` connects to.
fn consumer_range(
    kind: PartitionKind,
    i: u32,
    producers: u32,
    consumers: u32,
) -> std::ops::Range<u32> {
    match kind {
        PartitionKind::Forward => {
            debug_assert_eq!(producers, consumers);
            i..i + 1
        }
        PartitionKind::Rescale => {
            if producers >= consumers {
                // Several producers share one consumer.
                let j = (u64::from(i) * u64::from(consumers) / u64::from(producers)) as u32;
                j..j + 1
            } else {
                // Each consumer has exactly one producer: the `j`s with j * P / C == i.
                let start =
                    (u64::from(i) * u64::from(consumers)).div_ceil(u64::from(producers)) as u32;
                let end =
                    (u64::from(i + 1) * u64::from(consumers)).div_ceil(u64::from(producers)) as u32;
                start..end
            }
        }
        PartitionKind::Rebalance
        | PartitionKind::Global
        | PartitionKind::Shuffle
        | PartitionKind::Broadcast
        | PartitionKind::Hash
        | PartitionKind::Custom => 0..consumers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_connects_every_consumer_exactly_once_or_more() {
        for producers in 1..9 {
            for consumers in 1..9 {
                let mut seen = vec![0; consumers as usize];
                for i in 0..producers {
                    let range = consumer_range(PartitionKind::Rescale, i, producers, consumers);
                    assert!(
                        !range.is_empty(),
                        "producer {i} of {producers} -> {consumers}"
                    );
                    for j in range {
                        seen[j as usize] += 1;
                    }
                }
                assert!(
                    seen.iter().all(|&n| n >= 1),
                    "{producers}->{consumers}: {seen:?}"
                );
                if producers <= consumers {
                    assert!(
                        seen.iter().all(|&n| n == 1),
                        "{producers}->{consumers}: {seen:?}"
                    );
                }
            }
        }
    }
}
