//! How a record writer picks the output channel(s) of each record.
//!
//! The channel list of a writer is ordered by the consumer's subtask index, so channel `i` of an
//! all-to-all edge is consumer subtask `i`. Key partitioning follows Flink exactly:
//! `key_group = stable_hash(key) % max_parallelism`,
//! `subtask = key_group * parallelism / max_parallelism`.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::graph::{PartitionKind, Partitioning};
use crate::operator::Record;

/// What a channel selector knows besides the record.
#[derive(Debug, Clone, Copy)]
pub struct SelectContext {
    /// The number of channels (consumer subtasks) of the writer.
    pub channels: u32,
    /// The job's max parallelism (number of key groups).
    pub max_parallelism: u32,
}

/// Picks the channels of a run of records for hash and custom partitioning.
///
/// A writer calls it once per run, so the dynamic call is paid per run and the user's key
/// selector is inlined into the loop over the records (see `writer::key_group_selector`).
pub(crate) trait SelectChannels<T>: Send + Sync {
    /// Appends the channel of each record of `records`, in order, to `channels` (each below
    /// `cx.channels`). Every record's key is extracted exactly once, in order, even when there
    /// is a single channel.
    ///
    /// # Errors
    ///
    /// A user partitioner returned an index out of range for some record: the message says
    /// so, and `channels` holds the channels of the records before that one.
    fn select_channels(
        &self,
        records: &[Record<T>],
        cx: SelectContext,
        channels: &mut Vec<u32>,
    ) -> Result<(), String>;
}

/// The channel selector of a hash or custom partitioned edge (see [`SelectChannels`]).
pub(crate) type ChannelSelector<T> = Arc<dyn SelectChannels<T>>;

/// An edge's partitioning as declared in the stream graph, with its typed selector erased.
#[derive(Clone)]
pub(crate) struct PartitionerSpec {
    pub(crate) kind: PartitionKind,
    /// Declared by the user (an explicit `forward` with unequal parallelism is an error; an
    /// implicit one becomes `rebalance`, as in Flink).
    pub(crate) explicit: bool,
    /// `ChannelSelector<T>` for `Hash` and `Custom`.
    pub(crate) selector: Option<Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for PartitionerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionerSpec")
            .field("kind", &self.kind)
            .field("explicit", &self.explicit)
            .finish()
    }
}

impl PartitionerSpec {
    /// The partitioning as the graph records it (without the selector).
    pub(crate) fn partitioning(&self) -> Partitioning {
        Partitioning {
            kind: self.kind,
            explicit: self.explicit,
        }
    }

    /// The partitioning of an edge the job declared none for (see [`Partitioning::implicit`]).
    pub(crate) fn implicit() -> Self {
        let Partitioning { kind, explicit } = Partitioning::implicit();
        Self {
            kind,
            explicit,
            selector: None,
        }
    }

    pub(crate) fn simple(kind: PartitionKind) -> Self {
        Self {
            kind,
            explicit: true,
            selector: None,
        }
    }

    pub(crate) fn with_selector<T: 'static>(
        kind: PartitionKind,
        selector: ChannelSelector<T>,
    ) -> Self {
        Self {
            kind,
            explicit: true,
            selector: Some(Arc::new(selector)),
        }
    }

    pub(crate) fn typed_selector<T: 'static>(&self) -> Option<ChannelSelector<T>> {
        self.selector
            .as_ref()
            .and_then(|s| s.downcast_ref::<ChannelSelector<T>>())
            .cloned()
    }
}

/// A small seeded generator for the shuffle partitioner (splitmix64 sequence).
#[derive(Debug, Clone)]
pub(crate) struct SplitMixRng {
    state: u64,
}

impl SplitMixRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::state::splitmix64(self.state)
    }

    /// A uniform value in `0..bound` (Lemire's multiply-shift, bias below 2^-32 for our bounds).
    pub(crate) fn below(&mut self, bound: u32) -> u32 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u32
    }
}
