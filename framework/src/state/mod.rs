//! Keyed and operator state, state backends, and the snapshot format.
//!
//! This layer owns what makes state movable: the stable key hash ([`StableHash`]) and key
//! groups ([`KeyGroup`], [`KeyGroupRange`]); keyed state scoped to the current key
//! ([`KeyedStateStore`] and its handles [`ValueState`], [`ListState`], [`MapState`],
//! [`ReducingState`], [`AggregatingState`], with an optional [`StateTtlConfig`]; the runtime's
//! fast path [`ValueTable`]) in a memory or LMDB backend ([`StateBackendKind`]); and the
//! backend-independent snapshot format with its redistribution when parallelism changes
//! ([`snapshot`]).

mod backend;
mod handles;
mod key_group;
mod keyed;
pub(crate) mod lmdb;
pub mod namespaced;
mod operator_list;
pub mod schema;
pub mod snapshot;
mod stable_hash;
mod table;
#[cfg(test)]
pub(crate) mod test_support;
mod ttl;

pub use backend::{KeyedBackendConfig, StateBackendKind};
pub use handles::{
    AggregatingState, KeyedStateHandle, ListState, MapState, ReducingState, ValueState,
};
pub use key_group::{
    DEFAULT_MAX_PARALLELISM, KeyGroup, KeyGroupRange, MAX_PARALLELISM_LIMIT, key_group_for_hash,
    key_group_for_key, subtask_for_key_group,
};
pub use keyed::{KeyedStateAccess, KeyedStateScope, KeyedStateStore, StateError, ValueTable};
pub use operator_list::{OperatorList, UnionList};
pub use schema::{
    SCHEMA_STATE, StateField, StateFieldKind, StateFieldSchema, StateSchema, layout_of,
};
pub use snapshot::{
    KeyedEntry, KeyedStateSnapshot, OperatorListState, OperatorSnapshot, OperatorStateMode,
    PendingKeyedSnapshot, StateMeta,
};
pub use stable_hash::{StableHash, StableHasher, splitmix64};
pub use ttl::{StateTtlConfig, TtlUpdateType};
