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

/// An element type that knows its own key: `DataStream::keyed()` partitions by it. Derive it
/// with `#[derive(KeyBy)]` and `#[key]` on the key field (several `#[key]` fields make a tuple
/// key, in declaration order).
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Serialize, Deserialize, KeyBy)]
/// struct Reading {
///     #[key]
///     sensor_id: String,
///     temperature: f64,
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let env = StreamEnv::new();
/// let maxima = env
///     .from_collection(vec![
///         Reading { sensor_id: "a".into(), temperature: 1.0 },
///         Reading { sensor_id: "a".into(), temperature: 3.0 },
///     ])
///     .keyed()
///     .reduce(|a, b| if b.temperature > a.temperature { b } else { a })
///     .map(|r| (r.key(), r.temperature))
///     .collect_sink();
/// env.execute("keyed").await.unwrap();
/// assert_eq!(maxima.take().last(), Some(&("a".to_string(), 3.0)));
/// # }
/// ```
pub trait KeyBy {
    /// The key type.
    type Key: Key;
    /// This element's key.
    fn key(&self) -> Self::Key;
}
