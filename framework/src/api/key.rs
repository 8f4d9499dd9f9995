//! The bounds on stream elements and keys.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::state::StableHash;

/// A type that can flow through a stream: cloneable (for fan-out and broadcast), sendable
/// between subtasks, and serialisable (for the network and for snapshots).
pub trait Data: Clone + Send + Serialize + DeserializeOwned + 'static {}

impl<T: Clone + Send + Serialize + DeserializeOwned + 'static> Data for T {}

/// A type that can key a stream: hashed with [`StableHash`] to find its key group, compared
/// with `Eq` to find its state, and ordered so that per-key work (timers firing at the same
/// time, state snapshots) happens in the same order in every run.
pub trait Key: StableHash + Ord + std::hash::Hash + Clone + Send + 'static {}

impl<K: StableHash + Ord + std::hash::Hash + Clone + Send + 'static> Key for K {}
