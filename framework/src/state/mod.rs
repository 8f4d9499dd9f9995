//! Keyed and operator state, state backends, and the snapshot format.
//!
//! This layer owns what makes state movable: the stable key hash ([`StableHash`]) and key
//! groups ([`KeyGroup`], [`KeyGroupRange`]); keyed state scoped to the current key
//! ([`KeyedStateStore`] and its handles [`ValueState`], [`ListState`], [`MapState`],
//! [`ReducingState`], [`AggregatingState`], with an optional [`StateTtlConfig`]; the runtime's
//! fast path [`ValueTable`]) in a memory or LMDB backend ([`StateBackendKind`]); and the
//! backend-independent snapshot format with its redistribution when parallelism changes
//! ([`snapshot`]).
//!
//! ## What lives where
//!
//! The files import each other in one direction only, from the top of this list down:
//!
//! - `handles.rs`: the state handles users keep, and visiting a store's keys by handle
//!   ([`KeyedStateStore::keys`], [`KeyedStateStore::apply_to_state`]);
//! - `keyed.rs`: [`KeyedStateStore`] and its contexts, over either backend;
//! - `table.rs`: the store's list of states, the memory backend's tables, and the way a handle
//!   reaches a typed table in either backend (where memory and LMDB meet);
//! - `lmdb.rs`: the LMDB backend (environment, write-back cache, frozen views); it asks the
//!   store's other states for their tables through a trait, so it never imports `table.rs`;
//! - `snapshot.rs` (the snapshot format), `ttl.rs` (state TTL), `schema.rs`, `operator_list.rs`;
//! - `codec.rs` (key codec, exact decoding, the key sort word), `key_map.rs` (the map a typed
//!   state lives in), `key_group.rs`, `stable_hash.rs`, `backend.rs` (configuration);
//! - `error.rs`: [`StateError`], which every other file returns and which imports none of them.

mod backend;
mod codec;
mod error;
mod handles;
mod key_group;
mod key_map;
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
pub use error::StateError;
pub use handles::{
    AggregatingState, KeyedStateHandle, ListState, MapState, ReducingState, ValueState,
};
pub use key_group::{
    DEFAULT_MAX_PARALLELISM, KeyGroup, KeyGroupRange, MAX_PARALLELISM_LIMIT, key_group_for_hash,
    key_group_for_key, subtask_for_key_group,
};
pub use keyed::{KeyedStateAccess, KeyedStateScope, KeyedStateStore, ValueTable};
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
