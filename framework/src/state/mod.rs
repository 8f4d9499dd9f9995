//! Keyed state and its partitioning.
//!
//! This layer owns what makes keyed state movable: the stable key hash ([`StableHash`]) and key
//! groups ([`KeyGroup`], [`KeyGroupRange`]), and the in-memory keyed state of process functions
//! ([`KeyedStateStore`], [`ValueState`]). Rolling aggregations and windows keep their per-key
//! values in operator-local ordered maps for now; state backends (memory, LMDB) and snapshots
//! build on the key-group layout defined here.

mod key_group;
mod keyed;
mod stable_hash;

pub use key_group::{
    DEFAULT_MAX_PARALLELISM, KeyGroup, KeyGroupRange, MAX_PARALLELISM_LIMIT, key_group_for_hash,
    key_group_for_key, subtask_for_key_group,
};
pub use keyed::{KeyedStateAccess, KeyedStateStore, StateError, ValueState};
pub use stable_hash::{StableHash, StableHasher, splitmix64};
