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
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::key_group::{KeyGroup, key_group_for_key};
use super::keyed::StateError;
use super::lmdb::{LmdbAccess, LmdbTableDyn, key_word};
use super::snapshot::{FrozenEntries, KeyedEntryRef, push_varint};
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
        entries: Arc<[RawEntry]>,
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

/// A typed table of the memory backend, seen without its types.
pub(crate) trait MemoryTableDyn<K>: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The number of keys.
    fn len(&self) -> usize;
    /// A copy of the table as it is now, to be encoded later off the data path.
    fn freeze(&self) -> Box<dyn FrozenTableDyn<K>>;
}

/// A copy of a memory table taken at a barrier, seen without its types.
pub(crate) trait FrozenTableDyn<K>: Send {
    /// The number of keys.
    fn len(&self) -> usize;
    /// Appends the live entries, encoded, to `sink` (in the map's order).
    fn encode_into(
        &self,
        state: u32,
        name: &str,
        sink: &mut EncodeSink<'_, K>,
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
    M: KeyMap<K, S> + Clone,
{
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn freeze(&self) -> Box<dyn FrozenTableDyn<K>> {
        Box::new(Self {
            map: self.map.clone(),
            expiry: self.expiry,
            _key: PhantomData,
        })
    }
}

impl<K, S, M> FrozenTableDyn<K> for MemTable<K, S, M>
where
    K: Send + 'static,
    S: Clone + Serialize + Send + 'static,
    M: KeyMap<K, S>,
{
    fn len(&self) -> usize {
        self.map.len()
    }

    fn encode_into(
        &self,
        state: u32,
        name: &str,
        sink: &mut EncodeSink<'_, K>,
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
            sink.push(state, name, key, live)
        })
    }
}

/// Where the entries of frozen memory tables are encoded: one buffer per key group, each entry
/// appended as a record `state, key length, key, value length, value` (postcard varints and
/// bytes: a [`KeyedEntry`](super::KeyedEntry)'s encoding without its key group).
pub(crate) struct EncodeSink<'a, K> {
    codec: &'a KeyCodec<K>,
    max_parallelism: u32,
    now_ms: i64,
    groups: Vec<Vec<u8>>,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl<K> EncodeSink<'_, K> {
    fn push<S: Serialize>(
        &mut self,
        state: u32,
        name: &str,
        key: &K,
        value: &S,
    ) -> Result<(), StateError> {
        let key_group = (self.codec.key_group)(key, self.max_parallelism).0;
        let mut key_buf = std::mem::take(&mut self.key_buf);
        key_buf.clear();
        self.key_buf = (self.codec.encode)(key, key_buf)
            .map_err(|e| encode_error(name, key_group, "key", e))?;
        let mut value_buf = std::mem::take(&mut self.value_buf);
        value_buf.clear();
        self.value_buf = postcard::to_extend(value, value_buf)
            .map_err(|e| encode_error(name, key_group, "value", e))?;
        let group = group(&mut self.groups, key_group)?;
        push_record(group, state, &self.key_buf, &self.value_buf);
        Ok(())
    }

    /// Appends an entry that is encoded already (a restored one).
    fn push_encoded(&mut self, state: u32, raw: &RawEntry) -> Result<(), StateError> {
        let group = group(&mut self.groups, raw.key_group)?;
        push_record(group, state, &raw.key, &raw.value);
        Ok(())
    }
}

/// The buffer of key group `key_group`.
fn group(groups: &mut [Vec<u8>], key_group: u32) -> Result<&mut Vec<u8>, StateError> {
    let count = groups.len();
    groups.get_mut(key_group as usize).ok_or_else(|| {
        StateError::Corrupt(format!(
            "an entry of key group {key_group}, beyond max parallelism {count}"
        ))
    })
}

fn push_record(out: &mut Vec<u8>, state: u32, key: &[u8], value: &[u8]) {
    push_varint(out, u64::from(state));
    push_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    push_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Reads the record at the start of `bytes` (see [`EncodeSink`]): state, key, value and the
/// record's length. `None` if it is cut short (never, for records this module wrote).
fn read_record(bytes: &[u8]) -> Option<(u32, &[u8], &[u8], usize)> {
    let (state, rest) = take_varint(bytes)?;
    let (key_len, rest) = take_varint(rest)?;
    let (key, rest) = rest.split_at_checked(usize::try_from(key_len).ok()?)?;
    let (value_len, rest) = take_varint(rest)?;
    let (value, rest) = rest.split_at_checked(usize::try_from(value_len).ok()?)?;
    Some((
        u32::try_from(state).ok()?,
        key,
        value,
        bytes.len() - rest.len(),
    ))
}

fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// One state of a frozen memory store.
pub(crate) enum FrozenPart<K> {
    /// Restored entries nobody asked for with a type since (shared with the store).
    Restored {
        state: u32,
        entries: Arc<[RawEntry]>,
    },
    /// A copy of a typed table.
    Table {
        state: u32,
        name: String,
        table: Box<dyn FrozenTableDyn<K>>,
    },
}

/// A memory store frozen at a barrier: copies of its tables, encoded and sorted into snapshot
/// order when read (off the data path).
pub(crate) struct FrozenMemory<K> {
    pub(crate) parts: Vec<FrozenPart<K>>,
    pub(crate) codec: KeyCodec<K>,
    pub(crate) max_parallelism: u32,
    /// Values expired at this processing time are left out.
    pub(crate) now_ms: i64,
}

impl<K: Send + 'static> FrozenEntries for FrozenMemory<K> {
    fn len_hint(&self) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                FrozenPart::Restored { entries, .. } => entries.len(),
                FrozenPart::Table { table, .. } => table.len(),
            })
            .sum()
    }

    /// Encodes every entry into its key group's buffer (appends to one buffer per group while
    /// the tables are walked in their own order), then sorts one key group at a time: its
    /// records (a few thousand at a million keys) stay in cache, where a sort over all entries
    /// would miss it at every step. Within a group, records sort by state and the key's first
    /// eight bytes as a word; runs with equal words (long keys with a common prefix) by the
    /// whole key and value.
    fn read(
        self: Box<Self>,
        visit: &mut dyn FnMut(KeyedEntryRef<'_>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let mut sink = EncodeSink {
            codec: &self.codec,
            max_parallelism: self.max_parallelism,
            now_ms: self.now_ms,
            // About 16 bytes per record (an integer key and value): most groups grow once
            // or not at all; pages reserved beyond what is written are never touched.
            groups: {
                let per_group = self.len_hint() / self.max_parallelism.max(1) as usize * 16;
                (0..self.max_parallelism)
                    .map(|_| Vec::with_capacity(per_group))
                    .collect()
            },
            key_buf: Vec::new(),
            value_buf: Vec::new(),
        };
        for part in &self.parts {
            match part {
                FrozenPart::Table { state, name, table } => {
                    table.encode_into(*state, name, &mut sink)?;
                }
                FrozenPart::Restored { state, entries } => {
                    for raw in entries.iter() {
                        sink.push_encoded(*state, raw)?;
                    }
                }
            }
        }
        let cut_short = || StateError::Corrupt("a frozen memory record is cut short".into());
        let mut order: Vec<(u64, u32, usize)> = Vec::new();
        for (key_group, records) in (0u32..).zip(&sink.groups) {
            order.clear();
            let mut at = 0;
            while at < records.len() {
                let (state, key, _, len) = read_record(&records[at..]).ok_or_else(cut_short)?;
                order.push((key_word(key), state, at));
                at += len;
            }
            let entry = |at: usize| {
                read_record(&records[at..]).map(|(state, key, value, _)| KeyedEntryRef {
                    key_group,
                    state,
                    key,
                    value,
                })
            };
            order.sort_unstable_by_key(|&(word, state, _)| (state, word));
            for ties in order.chunk_by_mut(|a, b| (a.0, a.1) == (b.0, b.1)) {
                if ties.len() > 1 {
                    ties.sort_unstable_by(|a, b| entry(a.2).cmp(&entry(b.2)));
                }
            }
            for &(_, _, at) in &order {
                visit(entry(at).ok_or_else(cut_short)?)?;
            }
        }
        Ok(())
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
