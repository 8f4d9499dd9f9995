//! The bounds on stream elements and keys.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::state::StableHash;

/// A type that can flow through a stream: cloneable (for fan-out and broadcast), sendable
/// between subtasks, and serialisable (for the network and for snapshots).
pub trait Data: Clone + Send + Serialize + DeserializeOwned + 'static {}

impl<T: Clone + Send + Serialize + DeserializeOwned + 'static> Data for T {}

/// A type that can key a stream: hashed with [`StableHash`] to find its key group, compared
/// with `Eq` to find its state, ordered so that per-key work (timers firing at the same time,
/// state snapshots) happens in the same order in every run, and serialisable so its state can be
/// checkpointed and moved to another subtask.
pub trait Key:
    StableHash + Ord + std::hash::Hash + Clone + Send + Serialize + DeserializeOwned + 'static
{
}

impl<K> Key for K where
    K: StableHash + Ord + std::hash::Hash + Clone + Send + Serialize + DeserializeOwned + 'static
{
}
