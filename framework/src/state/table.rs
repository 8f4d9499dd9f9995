//! Typed state tables and how a state handle reaches one.
//!
//! A [`KeyedStateStore`](super::KeyedStateStore) keeps one entry per state name
//! ([`StateEntry`]): restored bytes not yet used with a type, or a typed table behind a small
//! object-safe trait (for snapshots and write-back, which go over every state). A handle resolves
//! its state to a [`TableAccess`]: an enum over the two backends whose memory arm is a plain
//! `&mut` to the typed map, so the memory path costs one map operation per access.
//!
//! Maps are generic ([`KeyMap`]); handles and the runtime's value tables both use `FxHashMap`
//! (a fixed-seed hasher; never std's `RandomState`). No map's iteration order reaches a
//! snapshot: snapshot entries are sorted.
//!
//! This file is where the two backends meet: the memory tables are defined here, the LMDB
//! caches in `lmdb.rs`, which knows nothing of the store's list of states. What an LMDB access
//! needs of the other states (their tables, for a write-back at the cache bound) it asks through
//! [`OtherTables`], which [`OtherStates`] implements here.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::{KeyCodec, key_word};
use super::error::{StateError, encode_error};
use super::key_map::KeyMap;
use super::lmdb::{LmdbAccess, LmdbTableDyn, OtherTables, Slot, TableRef};
use super::snapshot::{FrozenEntries, KeyedEntryRef, push_varint};
use super::ttl::{Expiry, Live};

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
        sink: &mut EncodeSink<K>,
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
    K: Clone + Send + 'static,
    S: Clone + Serialize + Send + 'static,
    M: KeyMap<K, S>,
{
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// The entries copied into a vector: half the bytes a copy of a hash table (with its empty
    /// buckets) writes and faults in, and a dense walk for the writer.
    fn freeze(&self) -> Box<dyn FrozenTableDyn<K>> {
        let mut entries = Vec::with_capacity(self.map.len());
        let copied: Result<(), std::convert::Infallible> = self.map.try_for_each(|key, value| {
            entries.push((key.clone(), value.clone()));
            Ok(())
        });
        let Ok(()) = copied;
        Box::new(FrozenTable {
            entries,
            expiry: self.expiry,
        })
    }
}

/// A copy of a memory table's entries taken at a barrier.
struct FrozenTable<K, S> {
    entries: Vec<(K, S)>,
    expiry: Option<Expiry<S>>,
}

impl<K, S> FrozenTableDyn<K> for FrozenTable<K, S>
where
    K: Send + 'static,
    S: Clone + Serialize + Send + 'static,
{
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn encode_into(
        &self,
        state: u32,
        name: &str,
        sink: &mut EncodeSink<K>,
    ) -> Result<(), StateError> {
        for (key, value) in &self.entries {
            let pruned;
            let live = match &self.expiry {
                None => value,
                Some(expiry) => match (expiry.prune)(value, sink.now_ms, expiry.ttl_ms) {
                    Live::Expired => continue,
                    Live::Unchanged => value,
                    Live::Pruned(rest) => {
                        pruned = rest;
                        &pruned
                    }
                },
            };
            sink.push(state, name, key, live)?;
        }
        Ok(())
    }
}

/// Where a frozen memory store's entries are encoded: one buffer per key group, each
/// entry appended as a record `state, key length, key, value length, value` (postcard varints
/// and bytes: a [`KeyedEntry`](super::KeyedEntry)'s encoding without its key group).
pub(crate) struct EncodeSink<K> {
    codec: KeyCodec<K>,
    max_parallelism: u32,
    now_ms: i64,
    groups: Vec<Vec<u8>>,
}

impl<K> EncodeSink<K> {
    /// A sink for about `len_hint` entries over `max_parallelism` key groups; values expired at
    /// `now_ms` are left out.
    pub(crate) fn new(
        codec: KeyCodec<K>,
        max_parallelism: u32,
        now_ms: i64,
        len_hint: usize,
    ) -> Self {
        // About 16 bytes per record (an integer key and value): most groups grow once or not
        // at all; pages reserved beyond what is written are never touched.
        let per_group = len_hint / max_parallelism.max(1) as usize * 16;
        Self {
            codec,
            max_parallelism,
            now_ms,
            groups: (0..max_parallelism)
                .map(|_| Vec::with_capacity(per_group))
                .collect(),
        }
    }

    /// Appends `key -> value` of `state` to its key group's buffer. The key and the value are
    /// encoded in place, behind a one-byte length that is widened in the rare case they need
    /// more. On an error the key group's buffer is lost; the snapshot fails as a whole.
    fn push<S: Serialize>(
        &mut self,
        state: u32,
        name: &str,
        key: &K,
        value: &S,
    ) -> Result<(), StateError> {
        let key_group = (self.codec.key_group)(key, self.max_parallelism).0;
        let group = group(&mut self.groups, key_group)?;
        let mut bytes = std::mem::take(group);
        push_varint(&mut bytes, u64::from(state));
        let at = bytes.len();
        bytes.push(0);
        bytes =
            (self.codec.encode)(key, bytes).map_err(|e| encode_error(name, key_group, "key", e))?;
        if let Some(len) = fix_length(&mut bytes, at) {
            widen_length(&mut bytes, at, len);
        }
        let at = bytes.len();
        bytes.push(0);
        bytes = postcard::to_extend(value, bytes)
            .map_err(|e| encode_error(name, key_group, "value", e))?;
        if let Some(len) = fix_length(&mut bytes, at) {
            widen_length(&mut bytes, at, len);
        }
        *group = bytes;
        Ok(())
    }
}

/// Writes the length of the bytes after the one-byte slot at `at` into it when it fits in seven
/// bits; returns it otherwise (for [`widen_length`]).
#[inline]
fn fix_length(bytes: &mut [u8], at: usize) -> Option<usize> {
    let len = bytes.len() - at - 1;
    if let Ok(small) = u8::try_from(len)
        && small < 0x80
    {
        bytes[at] = small;
        return None;
    }
    Some(len)
}

/// The rare case of [`fix_length`]: replaces the slot at `at` with the varint of `len`.
#[cold]
fn widen_length(bytes: &mut Vec<u8>, at: usize, len: usize) {
    let mut varint = Vec::with_capacity(10);
    push_varint(&mut varint, len as u64);
    bytes.splice(at..=at, varint);
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

/// A record of a key group's buffer, to sort: by state, then by the key's first eight bytes.
#[derive(Debug, Clone, Copy, Default)]
struct SortItem {
    word: u64,
    state: u32,
    /// The record's offset in its key group's buffer.
    at: u32,
}

/// Sorts `items` by `(state, word)`: a least-significant-digit radix sort over only the bytes
/// that differ between items (an integer key's varint leaves most of its word's bytes equal),
/// each pass a stable counting sort through `scratch`. Small inputs use a (stable) comparison
/// sort.
fn radix_sort(items: &mut Vec<SortItem>, scratch: &mut Vec<SortItem>) {
    const SMALL: usize = 64;
    let Some(&first) = items.first() else {
        return;
    };
    if items.len() <= SMALL {
        items.sort_by_key(|item| (item.state, item.word));
        return;
    }
    let (mut word_differs, mut state_differs) = (0u64, 0u32);
    for item in items.iter() {
        word_differs |= item.word ^ first.word;
        state_differs |= item.state ^ first.state;
    }
    // Least significant first: the word's bytes, then the state's.
    let digits = (0..8u32)
        .filter(|byte| (word_differs >> (8 * byte)) & 0xff != 0)
        .map(|byte| (false, 8 * byte))
        .chain(
            (0..4u32)
                .filter(|byte| (state_differs >> (8 * byte)) & 0xff != 0)
                .map(|byte| (true, 8 * byte)),
        );
    for (in_state, shift) in digits {
        let digit = |item: &SortItem| -> usize {
            if in_state {
                ((item.state >> shift) & 0xff) as usize
            } else {
                ((item.word >> shift) & 0xff) as usize
            }
        };
        let mut offsets = [0usize; 256];
        for item in items.iter() {
            offsets[digit(item)] += 1;
        }
        let mut total = 0;
        for offset in &mut offsets {
            let count = *offset;
            *offset = total;
            total += count;
        }
        scratch.clear();
        scratch.resize(items.len(), SortItem::default());
        for item in items.iter() {
            let slot = &mut offsets[digit(item)];
            scratch[*slot] = *item;
            *slot += 1;
        }
        std::mem::swap(items, scratch);
    }
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

/// A memory store frozen at a barrier: copies of its tables, encoded into one buffer per key
/// group and sorted into snapshot order when read (off the data path).
///
/// The copy is what the data path pays: for a table of integers about half of what encoding
/// it there would cost (no key-group hash, no encoder calls), measured at a million keys.
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

    /// Encodes every entry into its key group's buffer (the tables are walked in their own
    /// order), then sorts one key group at a time: its records (a few thousand at a million
    /// keys) stay in cache, where a sort over all entries would miss it at every step. Within
    /// a group, records sort by state and the key's first eight bytes as a word; runs with
    /// equal words (long keys with a common prefix) by the whole key and value.
    fn read(
        self: Box<Self>,
        visit: &mut dyn FnMut(KeyedEntryRef<'_>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let mut sink = EncodeSink::new(
            self.codec,
            self.max_parallelism,
            self.now_ms,
            self.len_hint(),
        );
        for part in &self.parts {
            match part {
                FrozenPart::Table { state, name, table } => {
                    table.encode_into(*state, name, &mut sink)?;
                }
                FrozenPart::Restored { state, entries } => {
                    for raw in entries.iter() {
                        let group = group(&mut sink.groups, raw.key_group)?;
                        push_record(group, *state, &raw.key, &raw.value);
                    }
                }
            }
        }
        let cut_short = || StateError::Corrupt("a frozen memory record is cut short".into());
        let mut order: Vec<SortItem> = Vec::new();
        let mut scratch: Vec<SortItem> = Vec::new();
        for (key_group, records) in (0u32..).zip(&sink.groups) {
            order.clear();
            let mut at = 0;
            while at < records.len() {
                let (state, key, _, len) = read_record(&records[at..]).ok_or_else(cut_short)?;
                let offset = u32::try_from(at).map_err(|_| {
                    StateError::Backend(format!(
                        "key group {key_group} holds more than 4 GiB of encoded state"
                    ))
                })?;
                order.push(SortItem {
                    word: key_word(key),
                    state,
                    at: offset,
                });
                at += len;
            }
            let entry = |at: u32| {
                read_record(&records[at as usize..]).map(|(state, key, value, _)| KeyedEntryRef {
                    key_group,
                    state,
                    key,
                    value,
                })
            };
            radix_sort(&mut order, &mut scratch);
            for ties in order.chunk_by_mut(|a, b| (a.state, a.word) == (b.state, b.word)) {
                if ties.len() > 1 {
                    ties.sort_unstable_by(|a, b| entry(a.at).cmp(&entry(b.at)));
                }
            }
            for item in &order {
                visit(entry(item.at).ok_or_else(cut_short)?)?;
            }
        }
        Ok(())
    }
}

/// A handle's way into one typed state, resolved from the store.
///
/// `M` is the memory backend's map, `C` the LMDB cache map of the same state.
pub(crate) enum TableAccess<'a, K, S, M, C> {
    Memory(&'a mut M),
    Lmdb(LmdbAccess<'a, K, S, C, OtherStates<'a, K>>),
}

/// Adds the LMDB tables of `states` (whose first id is `first`) to `out`.
pub(crate) fn collect_tables<'t, K>(
    states: &'t mut [StateEntry<K>],
    first: u32,
    out: &mut Vec<TableRef<'t, K>>,
) {
    for (offset, entry) in (0u32..).zip(states.iter_mut()) {
        let StateEntry { name, body, .. } = entry;
        if let StateBody::Lmdb { table, .. } = body {
            out.push(TableRef::new(table.as_mut(), first + offset, name));
        }
    }
}

/// The states of a store around the one a handle resolved: those before it (ids `0..state`)
/// and after it (`state + 1..`), whose LMDB tables a write-back writes too.
pub(crate) struct OtherStates<'a, K> {
    pub(crate) before: &'a mut [StateEntry<K>],
    pub(crate) after: &'a mut [StateEntry<K>],
    /// The resolved state's id.
    pub(crate) state: u32,
}

impl<K> OtherTables<K> for OtherStates<'_, K> {
    fn len(&self) -> usize {
        self.before.len() + self.after.len()
    }

    fn collect<'t>(&'t mut self, out: &mut Vec<TableRef<'t, K>>) {
        collect_tables(self.before, 0, out);
        collect_tables(self.after, self.state + 1, out);
    }
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
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The radix sort orders as a comparison sort by `(state, word)` does, stably.
        #[test]
        fn radix_sort_orders_by_state_and_word(
            keys in proptest::collection::vec(
                (prop_oneof![Just(0u32), Just(1), Just(300), any::<u32>()], any::<u64>(), 0u64..4),
                0..400,
            ),
        ) {
            let mut items: Vec<SortItem> = (0u32..).zip(&keys)
                .map(|(at, &(state, word, narrow))| SortItem {
                    // Narrow words share most bytes, as integer keys do.
                    word: if narrow == 0 { word } else { word & 0xff_ff00 },
                    state,
                    at,
                })
                .collect();
            let mut expected = items.clone();
            expected.sort_by_key(|item| (item.state, item.word));
            radix_sort(&mut items, &mut Vec::new());
            let key = |item: &SortItem| (item.state, item.word, item.at);
            prop_assert_eq!(
                items.iter().map(key).collect::<Vec<_>>(),
                expected.iter().map(key).collect::<Vec<_>>()
            );
        }
    }
}
