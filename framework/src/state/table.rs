//! Typed state tables and how a state handle reaches one.
//!
//! A [`KeyedStateStore`](super::KeyedStateStore) keeps one entry per state name
//! ([`StateEntry`]): restored bytes not yet used with a type, or a typed table behind a small
//! object-safe trait (for snapshots and write-back, which go over every state). A handle resolves
//! its state to a [`TableAccess`]: an enum over the two backends whose memory arm is a plain
//! `&mut` to the typed map, so the memory path costs one map operation per access.
//!
//! Maps are generic ([`KeyMap`]): handles use `BTreeMap` (their keys only promise `Ord`: trigger
//! state is keyed by `(key, window)` with any ordered key), the runtime's value tables use
//! `FxHashMap` (a fixed-seed hasher; never std's `RandomState`). No map's iteration order reaches a
//! snapshot: snapshot entries are sorted.

use std::any::Any;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::marker::PhantomData;

use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::key_group::{KeyGroup, key_group_for_key};
use super::keyed::StateError;
use super::lmdb::{LmdbAccess, LmdbTableDyn};
use super::snapshot::KeyedEntry;
use super::ttl::{Expiry, Live};
use crate::api::Key;

/// A map from keys to values: the storage of one typed state (or of its LMDB cache).
pub(crate) trait KeyMap<K, V>: Default + Send + 'static {
    /// The value of `key`.
    fn get(&self, key: &K) -> Option<&V>;
    /// The value of `key`, mutably.
    fn get_mut(&mut self, key: &K) -> Option<&mut V>;
    /// Sets the value of `key`, returning the old one.
    fn insert(&mut self, key: K, value: V) -> Option<V>;
    /// Removes `key`, returning its value.
    fn remove(&mut self, key: &K) -> Option<V>;
    /// The value of `key`, inserted with `default` if absent (one lookup).
    fn get_or_insert_with(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V;
    /// The number of keys.
    fn len(&self) -> usize;
    /// Removes every key.
    fn clear(&mut self);
    /// Calls `f` for every entry, stopping at the first error (in the map's order).
    fn try_for_each<E>(&self, f: impl FnMut(&K, &V) -> Result<(), E>) -> Result<(), E>;
    /// Calls `f` for every entry, mutably.
    fn for_each_mut(&mut self, f: impl FnMut(&K, &mut V));
}

impl<K: Ord + Send + 'static, V: Send + 'static> KeyMap<K, V> for BTreeMap<K, V> {
    #[inline]
    fn get(&self, key: &K) -> Option<&V> {
        Self::get(self, key)
    }
    #[inline]
    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        Self::get_mut(self, key)
    }
    #[inline]
    fn insert(&mut self, key: K, value: V) -> Option<V> {
        Self::insert(self, key, value)
    }
    #[inline]
    fn remove(&mut self, key: &K) -> Option<V> {
        Self::remove(self, key)
    }
    #[inline]
    fn get_or_insert_with(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V {
        self.entry(key).or_insert_with(default)
    }
    fn len(&self) -> usize {
        Self::len(self)
    }
    fn clear(&mut self) {
        Self::clear(self);
    }
    fn try_for_each<E>(&self, mut f: impl FnMut(&K, &V) -> Result<(), E>) -> Result<(), E> {
        self.iter().try_for_each(|(k, v)| f(k, v))
    }
    fn for_each_mut(&mut self, mut f: impl FnMut(&K, &mut V)) {
        self.iter_mut().for_each(|(k, v)| f(k, v));
    }
}

impl<K: Hash + Eq + Send + 'static, V: Send + 'static> KeyMap<K, V> for FxHashMap<K, V> {
    #[inline]
    fn get(&self, key: &K) -> Option<&V> {
        Self::get(self, key)
    }
    #[inline]
    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        Self::get_mut(self, key)
    }
    #[inline]
    fn insert(&mut self, key: K, value: V) -> Option<V> {
        Self::insert(self, key, value)
    }
    #[inline]
    fn remove(&mut self, key: &K) -> Option<V> {
        Self::remove(self, key)
    }
    #[inline]
    fn get_or_insert_with(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V {
        self.entry(key).or_insert_with(default)
    }
    fn len(&self) -> usize {
        Self::len(self)
    }
    fn clear(&mut self) {
        Self::clear(self);
    }
    // The order is the hasher's (fixed seed, so the same in every run); callers sort.
    fn try_for_each<E>(&self, mut f: impl FnMut(&K, &V) -> Result<(), E>) -> Result<(), E> {
        self.iter().try_for_each(|(k, v)| f(k, v))
    }
    fn for_each_mut(&mut self, mut f: impl FnMut(&K, &mut V)) {
        self.iter_mut().for_each(|(k, v)| f(k, v));
    }
}

/// How a store encodes, decodes and places its keys, captured where `K: Key` is known (open,
/// restore, snapshot) so the access paths only need the weaker bounds the handles promise.
pub(crate) struct KeyCodec<K> {
    pub(crate) encode: fn(&K, Vec<u8>) -> Result<Vec<u8>, postcard::Error>,
    pub(crate) decode: fn(&[u8]) -> Result<K, String>,
    pub(crate) key_group: fn(&K, u32) -> KeyGroup,
}

impl<K> Clone for KeyCodec<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for KeyCodec<K> {}

impl<K: Key> KeyCodec<K> {
    pub(crate) fn new() -> Self {
        Self {
            encode: encode_into::<K>,
            decode: decode_exact::<K>,
            key_group: key_group_for_key::<K>,
        }
    }
}

fn encode_into<T: Serialize>(value: &T, buf: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(value, buf)
}

/// Decodes `bytes` as one postcard `T` with nothing left over.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
        Err(error) => Err(error.to_string()),
    }
}

/// A decode failure of a stored entry, naming the state and key group.
pub(crate) fn corrupt(
    name: &str,
    key_group: u32,
    what: &str,
    error: impl std::fmt::Display,
) -> StateError {
    StateError::Corrupt(format!(
        "state '{name}', key group {key_group}: cannot decode {what}: {error}"
    ))
}

/// An encode failure, naming the state and key group.
pub(crate) fn encode_error(
    name: &str,
    key_group: u32,
    what: &str,
    error: impl std::fmt::Display,
) -> StateError {
    StateError::Encode(format!(
        "state '{name}', key group {key_group}: cannot encode {what}: {error}"
    ))
}

/// The kinds of state; a name keeps the kind it was registered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateKind {
    Value,
    List,
    Map,
    Reducing,
    Aggregating,
    Table,
}

/// What a handle asks the store for.
pub(crate) struct StateSpec<'n, S> {
    pub(crate) name: &'n str,
    pub(crate) kind: StateKind,
    /// The type name recorded in snapshots and compared on restore (kind and value type).
    pub(crate) describe: fn() -> String,
    pub(crate) expiry: Option<Expiry<S>>,
}

/// One restored entry whose value has not been decoded yet.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub(crate) key_group: u32,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

/// A state of the store: its name, its type name, and its contents.
pub(crate) struct StateEntry<K> {
    pub(crate) name: String,
    pub(crate) type_name: String,
    pub(crate) body: StateBody<K>,
}

/// The contents of a state.
pub(crate) enum StateBody<K> {
    /// Restored, not yet used with a type. The memory backend keeps the entries here; LMDB keeps
    /// them in its database (and `entries` is empty).
    Restored {
        entries: Vec<RawEntry>,
        decode_key: fn(&[u8]) -> Result<K, String>,
    },
    /// A typed table of the memory backend.
    Memory {
        kind: StateKind,
        table: Box<dyn MemoryTableDyn<K>>,
    },
    /// A typed cache of the LMDB backend.
    Lmdb {
        kind: StateKind,
        table: Box<dyn LmdbTableDyn<K>>,
    },
}

/// Where a memory snapshot goes, and how it encodes keys.
pub(crate) struct SnapshotSink<'a, K> {
    pub(crate) codec: &'a KeyCodec<K>,
    pub(crate) max_parallelism: u32,
    pub(crate) now_ms: i64,
    pub(crate) out: &'a mut Vec<KeyedEntry>,
}

/// A typed table of the memory backend, seen without its types.
pub(crate) trait MemoryTableDyn<K>: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The number of keys.
    fn len(&self) -> usize;
    /// Appends the live entries, encoded, to `sink.out` (unsorted).
    fn snapshot_into(
        &self,
        state: u32,
        name: &str,
        sink: &mut SnapshotSink<'_, K>,
    ) -> Result<(), StateError>;
}

/// The typed table of one state in the memory backend.
pub(crate) struct MemTable<K, S, M> {
    pub(crate) map: M,
    pub(crate) expiry: Option<Expiry<S>>,
    _key: PhantomData<fn(K)>,
}

impl<K, S, M: Default> MemTable<K, S, M> {
    pub(crate) fn new(map: M) -> Self {
        Self {
            map,
            expiry: None,
            _key: PhantomData,
        }
    }
}

impl<K, S, M> MemoryTableDyn<K> for MemTable<K, S, M>
where
    K: Send + 'static,
    S: Clone + Serialize + Send + 'static,
    M: KeyMap<K, S>,
{
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn snapshot_into(
        &self,
        state: u32,
        name: &str,
        sink: &mut SnapshotSink<'_, K>,
    ) -> Result<(), StateError> {
        self.map.try_for_each(|key, value| {
            let pruned;
            let live = match &self.expiry {
                None => value,
                Some(expiry) => match (expiry.prune)(value, sink.now_ms, expiry.ttl_ms) {
                    Live::Expired => return Ok(()),
                    Live::Unchanged => value,
                    Live::Pruned(rest) => {
                        pruned = rest;
                        &pruned
                    }
                },
            };
            let key_group = (sink.codec.key_group)(key, sink.max_parallelism).0;
            let key = (sink.codec.encode)(key, Vec::new())
                .map_err(|e| encode_error(name, key_group, "key", e))?;
            let value = postcard::to_allocvec(live)
                .map_err(|e| encode_error(name, key_group, "value", e))?;
            sink.out.push(KeyedEntry {
                key_group,
                state,
                key,
                value,
            });
            Ok(())
        })
    }
}

/// A cached LMDB value: `None` is a known absence (or a deletion, when dirty).
#[derive(Debug, Clone)]
pub(crate) struct Slot<S> {
    pub(crate) value: Option<S>,
    pub(crate) dirty: bool,
}

/// A handle's way into one typed state, resolved from the store.
///
/// `M` is the memory backend's map, `C` the LMDB cache map of the same state.
pub(crate) enum TableAccess<'a, K, S, M, C> {
    Memory(&'a mut M),
    Lmdb(LmdbAccess<'a, K, S, C>),
}

impl<K, S, M, C> TableAccess<'_, K, S, M, C>
where
    K: Clone + Send + 'static,
    S: Clone + Serialize + DeserializeOwned + Send + 'static,
    M: KeyMap<K, S>,
    C: KeyMap<K, Slot<S>>,
{
    /// The value of `key`.
    #[inline]
    pub(crate) fn get(&mut self, key: &K) -> Result<Option<&S>, StateError> {
        match self {
            Self::Memory(map) => Ok(map.get(key)),
            Self::Lmdb(access) => access.get(key),
        }
    }

    /// The value of `key`, to change in place (LMDB: marks it dirty).
    #[inline]
    pub(crate) fn get_mut(&mut self, key: &K) -> Result<Option<&mut S>, StateError> {
        match self {
            Self::Memory(map) => Ok(map.get_mut(key)),
            Self::Lmdb(access) => access.get_mut(key),
        }
    }

    /// Sets the value of `key`.
    #[inline]
    pub(crate) fn insert(&mut self, key: K, value: S) -> Result<(), StateError> {
        match self {
            Self::Memory(map) => {
                map.insert(key, value);
                Ok(())
            }
            Self::Lmdb(access) => access.set(key, Some(value)),
        }
    }

    /// Removes `key`.
    #[inline]
    pub(crate) fn remove(&mut self, key: &K) -> Result<(), StateError> {
        match self {
            Self::Memory(map) => {
                map.remove(key);
                Ok(())
            }
            Self::Lmdb(access) => access.set(key.clone(), None),
        }
    }

    /// The value of `key`, inserted with `default` if absent.
    #[inline]
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: K,
        default: impl FnOnce() -> S,
    ) -> Result<&mut S, StateError> {
        match self {
            Self::Memory(map) => Ok(map.get_or_insert_with(key, default)),
            Self::Lmdb(access) => access.get_or_insert_with(key, default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_exact_rejects_garbage_and_trailing_bytes() {
        let bytes = postcard::to_allocvec(&7u32).expect("encodes");
        assert_eq!(decode_exact::<u32>(&bytes), Ok(7));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode_exact::<u32>(&longer),
            Err("1 trailing bytes".to_string())
        );
        assert!(decode_exact::<u32>(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_exact::<String>(&[5, b'a']).is_err());
    }
}
