//! Keyed state: named, typed state per key, scoped to the key of the element being processed.
//!
//! A [`KeyedStateStore`] holds the keyed state of one operator instance in a memory or an LMDB
//! backend ([`KeyedBackendConfig`]). Users reach it through state handles ([`ValueState`],
//! [`ListState`], [`MapState`], [`ReducingState`], [`AggregatingState`]), which they keep in their
//! function and use with the function's keyed context ([`KeyedStateAccess`]); the context
//! supplies the current key and processing time. Runtime-internal operators use
//! [`KeyedStateStore::value_table`], resolved once per batch, for one map operation per record.
//!
//! ## Design
//!
//! - A state is a name, a type name (kind and value type, as recorded in snapshots) and a typed
//!   table. Asking for a name with another type or kind is [`StateError::TypeMismatch`], never a
//!   garbled value.
//! - [`KeyedStateStore::restore`] keeps each state's entries as bytes until a handle first asks
//!   for it with a type; then they are checked against the recorded type name and decoded (a
//!   decode failure is [`StateError::Corrupt`] naming the state and key group). States nobody asks
//!   for are carried over into the next snapshot unchanged.
//! - [`KeyedStateStore::snapshot`] produces the backend-independent [`KeyedStateSnapshot`]: every
//!   entry tagged with its key group, sorted by `(key group, state, key)`, expired TTL values left
//!   out. It returns a view frozen at the barrier and read out later, off the data path: the
//!   memory backend copies its tables (encoded and sorted when read, see `table.rs`); the LMDB
//!   backend opens a read transaction with its dirty cache encoded on top (see `lmdb.rs`).
//!
//! ## Invariants
//!
//! - A state's id is its index in the store and in the store's snapshots.
//! - No hash map's iteration order reaches a snapshot: entries are sorted.
//! - Keys only need `Ord + Hash + Clone + Send` on the access path (trigger state is keyed by
//!   `(key, window)`); what needs [`Key`] (encoding, key groups) is captured as plain function
//!   pointers where `K: Key` is known: `open`, `restore`, `snapshot`.
//! - A state keeps its index while the store's epoch lasts (states are only appended; a restore
//!   replaces them and starts a new epoch), so a handle can remember where its state is
//!   ([`StateHint`]) and skip the search by name.
//! - Handle tables are `FxHashMap`s, as value tables: one hash and one probe per access.
//!
//! [`ValueState`]: super::ValueState
//! [`ListState`]: super::ListState
//! [`MapState`]: super::MapState
//! [`ReducingState`]: super::ReducingState
//! [`AggregatingState`]: super::AggregatingState

use std::borrow::Cow;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::backend::{KeyedBackendConfig, StateBackendKind};
use super::codec::{KeyCodec, decode_exact};
use super::error::{StateError, corrupt};
use super::key_group::{DEFAULT_MAX_PARALLELISM, KeyGroup, KeyGroupRange, MAX_PARALLELISM_LIMIT};
use super::key_map::KeyMap;
use super::lmdb::{LmdbAccess, LmdbEnv, LmdbTable, Slot};
use super::snapshot::{FrozenKeyedState, KeyedStateSnapshot, PendingKeyedSnapshot, StateMeta};
use super::table::{
    FrozenMemory, FrozenPart, MemTable, OtherStates, RawEntry, StateBody, StateEntry, StateKind,
    StateSpec, TableAccess, collect_tables,
};
use super::ttl::Live;
use crate::api::Key;

/// Access to the keyed state of the current key: what a state handle needs from a context.
pub trait KeyedStateAccess<K> {
    /// The key of the element (or timer) being processed.
    fn current_key(&self) -> &K;
    /// The operator's keyed state.
    fn state_store(&mut self) -> &mut KeyedStateStore<K>;
    /// Reports a state error: the task fails with it.
    fn state_error(&mut self, error: StateError);
    /// The current processing time in milliseconds (state TTL measures it).
    ///
    /// The default is 0: processing time stands still and TTL never expires. Contexts that offer
    /// state with a TTL override it.
    fn current_processing_time(&self) -> i64 {
        0
    }

    /// The current key and the store at once, for a state handle's access. The default clones
    /// the key (the store borrows the context mutably); contexts that hold the key apart from
    /// the store override it to lend both, so an access never copies the key.
    fn key_and_store(&mut self) -> (std::borrow::Cow<'_, K>, &mut KeyedStateStore<K>)
    where
        K: Clone,
    {
        let key = self.current_key().clone();
        (std::borrow::Cow::Owned(key), self.state_store())
    }
}

/// Where the typed tables of a store live.
enum Backend<K> {
    Memory,
    Lmdb(LmdbEnv<K>),
}

/// The keyed state of one operator instance (one operator, one subtask).
///
/// # Examples
///
/// ```
/// use eichhorn::state::{KeyedBackendConfig, KeyedStateStore};
///
/// # fn main() -> Result<(), eichhorn::state::StateError> {
/// let mut store = KeyedStateStore::<String>::open(KeyedBackendConfig::memory(128))?;
/// let mut sums = store.value_table::<u64>("sum")?;
/// *sums.get_or_insert_with("a".to_string(), || 0)? += 5;
/// assert_eq!(sums.get(&"a".to_string())?, Some(&5));
///
/// let snapshot = store.snapshot(0)?.complete()?;
/// let mut restored = KeyedStateStore::<String>::default();
/// restored.restore(snapshot)?;
/// assert_eq!(restored.value_table::<u64>("sum")?.get(&"a".to_string())?, Some(&5));
/// # Ok(()) }
/// ```
pub struct KeyedStateStore<K> {
    max_parallelism: u32,
    key_groups: KeyGroupRange,
    states: Vec<StateEntry<K>>,
    backend: Backend<K>,
    /// Names this store and the current list of its states for [`StateHint`]s: drawn from
    /// [`next_epoch`] when the store is made and again when a restore replaces the list.
    epoch: u64,
}

/// A fresh store epoch: unique in the process (never 0, which a blank [`StateHint`] holds).
/// Only compared for equality, so its value never reaches an output.
fn next_epoch() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Where a state handle's state sits in the store it last used: that store's epoch and the
/// state's index, packed in one word, so an access skips the search of the store's states by
/// name. A state keeps its index for the life of an epoch (states are only appended; a restore,
/// which replaces them, starts a new epoch), so a hint of the current epoch is always right; one
/// of another epoch (another store, or before a restore) is ignored and replaced.
///
/// An atomic, so handles stay `Sync`; a handle is used by one subtask, so `Relaxed` suffices
/// (the word is read and written whole, never torn).
#[derive(Debug, Default)]
pub(crate) struct StateHint(AtomicU64);

impl StateHint {
    const INDEX_BITS: u32 = 24;
    const INDEX_MASK: u64 = (1 << Self::INDEX_BITS) - 1;

    /// The index recorded for `epoch`, if any.
    #[inline]
    fn get(&self, epoch: u64) -> Option<usize> {
        let word = self.0.load(Ordering::Relaxed);
        (word >> Self::INDEX_BITS == epoch).then_some((word & Self::INDEX_MASK) as usize)
    }

    /// Records `index` for `epoch` (nothing when either does not fit its bits: the search by
    /// name is then made every time).
    fn set(&self, epoch: u64, index: usize) {
        if (index as u64) <= Self::INDEX_MASK && epoch < 1 << (64 - Self::INDEX_BITS) {
            self.0
                .store(epoch << Self::INDEX_BITS | index as u64, Ordering::Relaxed);
        }
    }
}

impl<K> std::fmt::Debug for KeyedStateStore<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("KeyedStateStore");
        s.field("backend", &self.backend_kind())
            .field("key_groups", &self.key_groups)
            .field(
                "states",
                &self.states.iter().map(|t| &t.name).collect::<Vec<_>>(),
            );
        if let Backend::Lmdb(env) = &self.backend {
            s.field("dir", &env.dir());
        }
        s.finish()
    }
}

/// An in-memory store owning all [`DEFAULT_MAX_PARALLELISM`] key groups.
impl<K> Default for KeyedStateStore<K> {
    fn default() -> Self {
        Self {
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            key_groups: KeyGroupRange::for_subtask(DEFAULT_MAX_PARALLELISM, 1, 0),
            states: Vec::new(),
            backend: Backend::Memory,
            epoch: next_epoch(),
        }
    }
}

impl<K> KeyedStateStore<K> {
    /// The backend the state lives in.
    pub fn backend_kind(&self) -> StateBackendKind {
        match self.backend {
            Backend::Memory => StateBackendKind::Memory,
            Backend::Lmdb(_) => StateBackendKind::Lmdb,
        }
    }

    /// The number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The key groups this store owns (restores keep only these).
    pub fn key_groups(&self) -> KeyGroupRange {
        self.key_groups
    }

    /// The names of the states the store knows (used or restored), in id order.
    pub fn state_names(&self) -> impl Iterator<Item = &str> {
        self.states.iter().map(|s| s.name.as_str())
    }

    /// The number of entries held in memory: every entry of the memory backend (restored ones
    /// not yet decoded included), the cached ones of the LMDB backend. A measure of memory use.
    pub fn entries_in_memory(&self) -> usize {
        match &self.backend {
            Backend::Lmdb(env) => env.cached(),
            Backend::Memory => self
                .states
                .iter()
                .map(|s| match &s.body {
                    StateBody::Restored { entries, .. } => entries.len(),
                    StateBody::Memory { table, .. } => table.len(),
                    StateBody::Lmdb { .. } => 0,
                })
                .sum(),
        }
    }
}

impl<K: Key> KeyedStateStore<K> {
    /// Opens an empty store as `config` says (LMDB: creates the environment in
    /// `config.local_dir`, which is removed when the store is dropped).
    ///
    /// # Errors
    ///
    /// [`StateError::Backend`] for an invalid configuration (max parallelism out of range, key
    /// groups beyond it, no directory for LMDB) or when LMDB cannot open.
    pub fn open(config: KeyedBackendConfig) -> Result<Self, StateError> {
        if config.max_parallelism == 0 || config.max_parallelism > MAX_PARALLELISM_LIMIT {
            return Err(StateError::Backend(format!(
                "max parallelism {} is not in 1..={MAX_PARALLELISM_LIMIT}",
                config.max_parallelism
            )));
        }
        if config.key_groups.start > config.key_groups.end
            || config.key_groups.end > config.max_parallelism
        {
            return Err(StateError::Backend(format!(
                "key groups {:?} are not within 0..{}",
                config.key_groups, config.max_parallelism
            )));
        }
        let backend = match config.kind {
            StateBackendKind::Memory => Backend::Memory,
            StateBackendKind::Lmdb => Backend::Lmdb(LmdbEnv::open(&config, KeyCodec::new())?),
        };
        Ok(Self {
            max_parallelism: config.max_parallelism,
            key_groups: config.key_groups,
            states: Vec::new(),
            backend,
            epoch: next_epoch(),
        })
    }

    /// Replaces the store's contents with `snapshot`, keeping the entries of the key groups this
    /// store owns. Values stay encoded until a handle first asks for their state with a type.
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] if the snapshot is inconsistent (a state named twice, an entry
    /// referring to a missing state or to a key group beyond max parallelism);
    /// [`StateError::Backend`] if LMDB fails. Either way the store keeps its old contents.
    pub fn restore(&mut self, snapshot: KeyedStateSnapshot) -> Result<(), StateError> {
        let KeyedStateSnapshot { states, entries } = snapshot;
        for (i, meta) in states.iter().enumerate() {
            if states[..i].iter().any(|m| m.name == meta.name) {
                return Err(StateError::Corrupt(format!(
                    "keyed snapshot names state '{}' twice",
                    meta.name
                )));
            }
        }
        u32::try_from(states.len()).map_err(|_| {
            StateError::Corrupt(format!("keyed snapshot has {} states", states.len()))
        })?;
        for entry in &entries {
            if entry.state as usize >= states.len() {
                return Err(StateError::Corrupt(format!(
                    "keyed entry of key group {} refers to state #{} of {}",
                    entry.key_group,
                    entry.state,
                    states.len()
                )));
            }
            if entry.key_group >= self.max_parallelism {
                return Err(StateError::Corrupt(format!(
                    "keyed entry of state '{}' is in key group {}, beyond max parallelism {}",
                    states[entry.state as usize].name, entry.key_group, self.max_parallelism
                )));
            }
        }
        let range = self.key_groups;
        let owned = |e: &&super::snapshot::KeyedEntry| range.contains(KeyGroup(e.key_group));
        let mut raw: Vec<Vec<RawEntry>> = states.iter().map(|_| Vec::new()).collect();
        match &mut self.backend {
            Backend::Memory => {
                for entry in entries.iter().filter(owned) {
                    raw[entry.state as usize].push(RawEntry {
                        key_group: entry.key_group,
                        key: entry.key.clone(),
                        value: entry.value.clone(),
                    });
                }
            }
            // One transaction: on failure the old contents (database and caches) stay as they
            // were; on success the old states, caches included, are replaced below.
            Backend::Lmdb(env) => env.restore(entries.iter().filter(owned))?,
        }
        let decode_key = KeyCodec::<K>::new().decode;
        // The states are replaced: hints of the old list must not apply to the new one.
        self.epoch = next_epoch();
        self.states = states
            .into_iter()
            .zip(raw)
            .map(|(meta, entries)| StateEntry {
                name: meta.name,
                type_name: meta.type_name,
                body: StateBody::Restored {
                    entries: entries.into(),
                    decode_key,
                },
            })
            .collect();
        Ok(())
    }

    /// Snapshots every state: entries tagged with their key group, sorted by
    /// `(key group, state, key)`, keys and values postcard-encoded, values expired at `now_ms`
    /// left out. Both backends return a [`PendingKeyedSnapshot::Frozen`] view that is read
    /// out later, off the data path, while the store goes on changing: LMDB opens a read
    /// transaction and encodes its dirty cache slots over it; the memory backend copies its
    /// tables (restored states nobody used since are shared, not copied) and encodes and
    /// sorts the copy when read.
    ///
    /// # Errors
    ///
    /// [`StateError::Encode`] (LMDB) if a dirty key or value cannot be encoded;
    /// [`StateError::Backend`] if LMDB fails. The memory backend's encoding failures surface
    /// when the view is read.
    pub fn snapshot(&mut self, now_ms: i64) -> Result<PendingKeyedSnapshot, StateError> {
        match &mut self.backend {
            Backend::Lmdb(env) => {
                let metas = self
                    .states
                    .iter()
                    .map(|s| StateMeta {
                        name: s.name.clone(),
                        type_name: s.type_name.clone(),
                    })
                    .collect();
                let mut tables = Vec::new();
                collect_tables(&mut self.states, 0, &mut tables);
                env.snapshot(metas, &tables, now_ms)
            }
            Backend::Memory => {
                let mut states = Vec::with_capacity(self.states.len());
                let mut parts = Vec::with_capacity(self.states.len());
                for (id, state) in (0u32..).zip(&self.states) {
                    states.push(StateMeta {
                        name: state.name.clone(),
                        type_name: state.type_name.clone(),
                    });
                    match &state.body {
                        StateBody::Restored { entries, .. } => {
                            if !entries.is_empty() {
                                parts.push(FrozenPart::Restored {
                                    state: id,
                                    entries: Arc::clone(entries),
                                });
                            }
                        }
                        StateBody::Memory { table, .. } => {
                            if table.len() > 0 {
                                parts.push(FrozenPart::Table {
                                    state: id,
                                    name: state.name.clone(),
                                    table: table.freeze(),
                                });
                            }
                        }
                        StateBody::Lmdb { .. } => unreachable!("an LMDB table in a memory store"),
                    }
                }
                let frozen = FrozenMemory {
                    parts,
                    codec: KeyCodec::<K>::new(),
                    max_parallelism: self.max_parallelism,
                    now_ms,
                };
                Ok(PendingKeyedSnapshot::Frozen(FrozenKeyedState::new(
                    states,
                    Box::new(frozen),
                )))
            }
        }
    }
}

impl<K: Key> KeyedStateStore<K> {
    /// A context scoped to `key` at processing time `now_ms`, to use handles on this store
    /// outside a function's context (tools, tests). Take its first error with
    /// [`KeyedStateScope::into_result`].
    pub fn scope(&mut self, key: K, now_ms: i64) -> KeyedStateScope<'_, K> {
        KeyedStateScope {
            key: Cow::Owned(key),
            store: self,
            now_ms,
            error: None,
        }
    }

    /// The keys holding a live value of state `spec` (see [`KeyedStateStore::keys`]).
    pub(crate) fn live_keys<S>(
        &mut self,
        spec: StateSpec<'_, S>,
        now_ms: i64,
    ) -> Result<Vec<K>, StateError>
    where
        S: Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        let Some(index) = self.states.iter().position(|s| s.name == spec.name) else {
            return Ok(Vec::new());
        };
        let expiry = spec.expiry;
        let max_parallelism = self.max_parallelism;
        // Resolving the state checks its type, decodes restored entries (memory) and sets its
        // TTL.
        match self.access::<S, FxHashMap<K, S>, FxHashMap<K, Slot<S>>>(spec)? {
            TableAccess::Memory(map) => {
                let codec = KeyCodec::<K>::new();
                let mut keys = Vec::with_capacity(map.len());
                for (key, value) in map.iter() {
                    if let Some(expiry) = expiry
                        && let Live::Expired = (expiry.prune)(value, now_ms, expiry.ttl_ms)
                    {
                        continue;
                    }
                    let key_group = (codec.key_group)(key, max_parallelism).0;
                    let bytes = (codec.encode)(key, Vec::new()).map_err(|e| {
                        StateError::Encode(format!(
                            "key group {key_group}: cannot encode a key: {e}"
                        ))
                    })?;
                    keys.push((key_group, bytes, key));
                }
                keys.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                return Ok(keys.into_iter().map(|(_, _, key)| key.clone()).collect());
            }
            TableAccess::Lmdb(_) => {}
        }
        let Backend::Lmdb(env) = &mut self.backend else {
            unreachable!("an LMDB table in a memory store");
        };
        let pruner = expiry.map(|e| (e.ttl_ms, e.prune_bytes));
        // The name is copied out: the tables borrow every state.
        let name = self.states[index].name.clone();
        let mut tables = Vec::new();
        collect_tables(&mut self.states, 0, &mut tables);
        env.live_keys(
            &mut tables,
            &name,
            index as u32,
            self.key_groups,
            pruner,
            now_ms,
        )
    }
}

/// A context scoped to one key of a [`KeyedStateStore`]: what
/// [`KeyedStateStore::apply_to_state`] hands its function for each key (and
/// [`KeyedStateStore::scope`] makes). Pass it to state handles as their context; it supplies
/// the key and the processing time TTL measures, and keeps the first state error.
pub struct KeyedStateScope<'a, K: Clone> {
    key: Cow<'a, K>,
    store: &'a mut KeyedStateStore<K>,
    now_ms: i64,
    error: Option<StateError>,
}

impl<'a, K: Clone> KeyedStateScope<'a, K> {
    /// A context scoped to `key`, borrowed, on `store` at processing time `now_ms` (what
    /// [`KeyedStateStore::apply_to_state`] hands its function).
    pub(crate) fn borrowed(key: &'a K, store: &'a mut KeyedStateStore<K>, now_ms: i64) -> Self {
        Self {
            key: Cow::Borrowed(key),
            store,
            now_ms,
            error: None,
        }
    }
}

impl<K: Clone + std::fmt::Debug> std::fmt::Debug for KeyedStateScope<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStateScope")
            .field("key", &self.key)
            .field("now_ms", &self.now_ms)
            .field("error", &self.error)
            .finish()
    }
}

impl<K: Clone> KeyedStateScope<'_, K> {
    /// The first state error a handle reported through this scope, if any.
    ///
    /// # Errors
    ///
    /// That error.
    pub fn into_result(self) -> Result<(), StateError> {
        self.error.map_or(Ok(()), Err)
    }
}

impl<K: Clone> KeyedStateAccess<K> for KeyedStateScope<'_, K> {
    fn current_key(&self) -> &K {
        &self.key
    }
    fn state_store(&mut self) -> &mut KeyedStateStore<K> {
        self.store
    }
    fn key_and_store(&mut self) -> (Cow<'_, K>, &mut KeyedStateStore<K>) {
        (Cow::Borrowed(&*self.key), self.store)
    }
    fn state_error(&mut self, error: StateError) {
        self.error.get_or_insert(error);
    }
    fn current_processing_time(&self) -> i64 {
        self.now_ms
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> KeyedStateStore<K> {
    /// The value state `name` as a table over all keys: the fast path for runtime-internal
    /// operators. Resolve it once per batch; the memory backend then costs one hash-map
    /// operation per access (an `FxHashMap<K, V>`), LMDB one cache operation (and a read on a
    /// miss). Value tables have no TTL, and their state kind differs from [`ValueState`]'s.
    ///
    /// [`ValueState`]: super::ValueState
    ///
    /// # Errors
    ///
    /// [`StateError::TypeMismatch`] if `name` holds another type or kind;
    /// [`StateError::Corrupt`] if its restored entries do not decode.
    pub fn value_table<V>(&mut self, name: &str) -> Result<ValueTable<'_, K, V>, StateError>
    where
        V: Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        let access = self.access::<V, FxHashMap<K, V>, FxHashMap<K, Slot<V>>>(StateSpec {
            name,
            kind: StateKind::Table,
            describe: describe_table::<V>,
            expiry: None,
        })?;
        Ok(ValueTable { access })
    }
}

fn describe_table<V>() -> String {
    format!("ValueTable<{}>", std::any::type_name::<V>())
}

impl<K: Clone + Send + 'static> KeyedStateStore<K> {
    /// Resolves state `spec.name` to its typed table, registering it on first use and decoding
    /// restored entries on first typed use.
    pub(crate) fn access<S, M, C>(
        &mut self,
        spec: StateSpec<'_, S>,
    ) -> Result<TableAccess<'_, K, S, M, C>, StateError>
    where
        S: Clone + Serialize + DeserializeOwned + Send + 'static,
        M: KeyMap<K, S>,
        C: KeyMap<K, Slot<S>>,
    {
        let index = match self.states.iter().position(|s| s.name == spec.name) {
            Some(index) => index,
            None => self.register::<S, M, C>(&spec)?,
        };
        self.access_at(index, spec)
    }

    /// As [`KeyedStateStore::access`], finding the state through `hint` when it is of this
    /// store's epoch, and recording where it is otherwise.
    #[inline]
    pub(crate) fn access_hinted<S, M, C>(
        &mut self,
        spec: StateSpec<'_, S>,
        hint: &StateHint,
    ) -> Result<TableAccess<'_, K, S, M, C>, StateError>
    where
        S: Clone + Serialize + DeserializeOwned + Send + 'static,
        M: KeyMap<K, S>,
        C: KeyMap<K, Slot<S>>,
    {
        let index = match hint.get(self.epoch) {
            Some(index) => index,
            None => {
                let index = match self.states.iter().position(|s| s.name == spec.name) {
                    Some(index) => index,
                    None => self.register::<S, M, C>(&spec)?,
                };
                hint.set(self.epoch, index);
                index
            }
        };
        debug_assert_eq!(self.states[index].name, spec.name, "a stale state hint");
        self.access_at(index, spec)
    }

    /// Resolves state `index`, whose name is `spec.name`, to its typed table.
    fn access_at<S, M, C>(
        &mut self,
        index: usize,
        spec: StateSpec<'_, S>,
    ) -> Result<TableAccess<'_, K, S, M, C>, StateError>
    where
        S: Clone + Serialize + DeserializeOwned + Send + 'static,
        M: KeyMap<K, S>,
        C: KeyMap<K, Slot<S>>,
    {
        if matches!(self.states[index].body, StateBody::Restored { .. }) {
            self.materialize::<S, M, C>(index, &spec)?;
        }
        let (before, rest) = self.states.split_at_mut(index);
        let Some((entry, after)) = rest.split_first_mut() else {
            unreachable!("state index {index} is in range");
        };
        let StateEntry {
            name,
            type_name,
            body,
        } = entry;
        let mismatch = || StateError::TypeMismatch {
            name: name.clone(),
            registered: type_name.clone(),
            requested: (spec.describe)(),
        };
        match (body, &mut self.backend) {
            (StateBody::Memory { kind, table }, Backend::Memory) => {
                if *kind != spec.kind {
                    return Err(mismatch());
                }
                let table = table
                    .as_any_mut()
                    .downcast_mut::<MemTable<K, S, M>>()
                    .ok_or_else(mismatch)?;
                table.expiry = spec.expiry;
                Ok(TableAccess::Memory(&mut table.map))
            }
            (StateBody::Lmdb { kind, table }, Backend::Lmdb(env)) => {
                if *kind != spec.kind {
                    return Err(mismatch());
                }
                let table = table
                    .as_any_mut()
                    .downcast_mut::<LmdbTable<K, S, C>>()
                    .ok_or_else(mismatch)?;
                table.expiry = spec.expiry;
                let others = OtherStates {
                    before,
                    after,
                    state: index as u32,
                };
                Ok(TableAccess::Lmdb(LmdbAccess::new(
                    table,
                    index as u32,
                    name,
                    others,
                    env,
                )))
            }
            _ => unreachable!("a state's body matches the store's backend"),
        }
    }

    /// Registers a new, empty state; returns its id.
    fn register<S, M, C>(&mut self, spec: &StateSpec<'_, S>) -> Result<usize, StateError>
    where
        S: Clone + Serialize + DeserializeOwned + Send + 'static,
        M: KeyMap<K, S>,
        C: KeyMap<K, Slot<S>>,
    {
        if u32::try_from(self.states.len()).is_err() {
            return Err(StateError::Backend("too many states".into()));
        }
        let body = match self.backend {
            Backend::Memory => StateBody::Memory {
                kind: spec.kind,
                table: Box::new(MemTable::<K, S, M>::new(M::default())),
            },
            Backend::Lmdb(_) => StateBody::Lmdb {
                kind: spec.kind,
                table: Box::new(LmdbTable::<K, S, C>::new()),
            },
        };
        self.states.push(StateEntry {
            name: spec.name.to_string(),
            type_name: (spec.describe)(),
            body,
        });
        Ok(self.states.len() - 1)
    }

    /// Turns restored state `index` into a typed table, after checking its recorded type.
    fn materialize<S, M, C>(
        &mut self,
        index: usize,
        spec: &StateSpec<'_, S>,
    ) -> Result<(), StateError>
    where
        S: Clone + Serialize + DeserializeOwned + Send + 'static,
        M: KeyMap<K, S>,
        C: KeyMap<K, Slot<S>>,
    {
        let entry = &mut self.states[index];
        let requested = (spec.describe)();
        if entry.type_name != requested {
            return Err(StateError::TypeMismatch {
                name: entry.name.clone(),
                registered: entry.type_name.clone(),
                requested,
            });
        }
        let StateBody::Restored {
            entries,
            decode_key,
        } = &entry.body
        else {
            return Ok(());
        };
        let body = match self.backend {
            Backend::Memory => {
                let mut map = M::default();
                for raw in entries.iter() {
                    let key = decode_key(&raw.key)
                        .map_err(|e| corrupt(&entry.name, raw.key_group, "key", e))?;
                    let value: S = decode_exact(&raw.value)
                        .map_err(|e| corrupt(&entry.name, raw.key_group, "value", e))?;
                    map.insert(key, value);
                }
                StateBody::Memory {
                    kind: spec.kind,
                    table: Box::new(MemTable::<K, S, M>::new(map)),
                }
            }
            // The entries are in the database; they decode as they are read.
            Backend::Lmdb(_) => StateBody::Lmdb {
                kind: spec.kind,
                table: Box::new(LmdbTable::<K, S, C>::new()),
            },
        };
        entry.body = body;
        Ok(())
    }
}

/// The handles' table type: hash maps with a fixed-seed hasher (`FxHashMap`, never std's
/// `RandomState`), as the value tables. A key costs one hash and one probe where an ordered map
/// walked a B-tree (at ten thousand keys, four nodes of linear search); no map's order reaches
/// a snapshot or a key listing, which sort.
pub(crate) type HandleTable<'a, K, S> =
    TableAccess<'a, K, S, FxHashMap<K, S>, FxHashMap<K, Slot<S>>>;

/// One value state of a store as a table over all keys (see [`KeyedStateStore::value_table`]).
///
/// The memory backend answers every call with one `FxHashMap` operation and never fails; the
/// LMDB backend goes through its write-back cache and reports backend failures.
///
/// # Examples
///
/// ```
/// use eichhorn::state::KeyedStateStore;
///
/// # fn main() -> Result<(), eichhorn::state::StateError> {
/// let mut store = KeyedStateStore::<u32>::default();
/// let mut counts = store.value_table::<u64>("count")?;
/// for key in [1, 2, 1] {
///     match counts.get_mut(&key)? {
///         Some(count) => *count += 1,
///         None => counts.insert(key, 1)?,
///     }
/// }
/// assert_eq!(counts.get(&1)?, Some(&2));
/// counts.remove(&1)?;
/// assert_eq!(counts.get(&1)?, None);
/// # Ok(()) }
/// ```
pub struct ValueTable<'a, K, V> {
    access: TableAccess<'a, K, V, FxHashMap<K, V>, FxHashMap<K, Slot<V>>>,
}

impl<K, V> std::fmt::Debug for ValueTable<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueTable").finish_non_exhaustive()
    }
}

impl<K, V> ValueTable<'_, K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    /// The value of `key`.
    ///
    /// # Errors
    ///
    /// LMDB: the read failed or the stored bytes do not decode.
    #[inline]
    pub fn get(&mut self, key: &K) -> Result<Option<&V>, StateError> {
        self.access.get(key)
    }

    /// The value of `key`, to change in place.
    ///
    /// # Errors
    ///
    /// As [`ValueTable::get`], or a write-back failed.
    #[inline]
    pub fn get_mut(&mut self, key: &K) -> Result<Option<&mut V>, StateError> {
        self.access.get_mut(key)
    }

    /// The value of `key`, inserted with `default` first if absent (one map operation).
    ///
    /// # Errors
    ///
    /// As [`ValueTable::get_mut`].
    #[inline]
    pub fn get_or_insert_with(
        &mut self,
        key: K,
        default: impl FnOnce() -> V,
    ) -> Result<&mut V, StateError> {
        self.access.get_or_insert_with(key, default)
    }

    /// Sets the value of `key`.
    ///
    /// # Errors
    ///
    /// LMDB: a write-back (to make room in the cache) failed.
    #[inline]
    pub fn insert(&mut self, key: K, value: V) -> Result<(), StateError> {
        self.access.insert(key, value)
    }

    /// Removes the value of `key`.
    ///
    /// # Errors
    ///
    /// As [`ValueTable::insert`].
    #[inline]
    pub fn remove(&mut self, key: &K) -> Result<(), StateError> {
        self.access.remove(key)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::state::snapshot::{OperatorSnapshot, redistribute};
    use crate::state::test_support::{Ctx, lmdb_config};
    use crate::state::{
        KeyedEntry, ListState, MapState, ReducingState, StateTtlConfig, ValueState,
        key_group_for_key, subtask_for_key_group,
    };

    fn complete<K: Key>(store: &mut KeyedStateStore<K>, now_ms: i64) -> KeyedStateSnapshot {
        store
            .snapshot(now_ms)
            .and_then(PendingKeyedSnapshot::complete)
            .expect("snapshot")
    }

    fn memory_config(key_groups: KeyGroupRange) -> KeyedBackendConfig {
        KeyedBackendConfig {
            key_groups,
            ..KeyedBackendConfig::memory(128)
        }
    }

    /// A store of `kind` owning `key_groups`, LMDB ones in a fresh directory under `dir`.
    fn open_store<K: Key>(
        kind: StateBackendKind,
        key_groups: KeyGroupRange,
        dir: &tempfile::TempDir,
        name: &str,
    ) -> KeyedStateStore<K> {
        let config = match kind {
            StateBackendKind::Memory => memory_config(key_groups),
            StateBackendKind::Lmdb => KeyedBackendConfig {
                key_groups,
                ..lmdb_config(&dir.path().join(name), 8)
            },
        };
        KeyedStateStore::open(config).expect("opens")
    }

    const BOTH: [StateBackendKind; 2] = [StateBackendKind::Memory, StateBackendKind::Lmdb];

    /// A few states over keys `0..keys`.
    fn fill(ctx: &mut Ctx<u64>, keys: u64) {
        let value = ValueState::<u64>::new("value");
        let list = ListState::<String>::new("list");
        let map = MapState::<u8, i32>::new("map");
        for key in 0..keys {
            ctx.key = key;
            value.update(ctx, key * 10);
            list.add(ctx, format!("{key}"));
            map.put(ctx, (key % 5) as u8, key as i32);
        }
        let mut table = ctx.store.value_table::<u64>("table").expect("table");
        for key in 0..keys {
            table.insert(key, key + 1).expect("insert");
        }
    }

    #[test]
    fn snapshots_are_sorted_and_tagged_with_key_groups() {
        let dir = tempfile::tempdir().expect("temp dir");
        for kind in BOTH {
            let mut ctx = Ctx::new(
                0u64,
                open_store(kind, KeyGroupRange::for_subtask(128, 1, 0), &dir, "s"),
            );
            fill(&mut ctx, 300);
            let snapshot = complete(&mut ctx.store, 0);
            assert_eq!(
                snapshot
                    .states
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>(),
                ["value", "list", "map", "table"]
            );
            assert_eq!(
                snapshot.states[1].type_name,
                "ListState<alloc::string::String>"
            );
            assert_eq!(snapshot.entries.len(), 4 * 300);
            assert!(snapshot.entries.is_sorted(), "{kind:?}");
            for entry in &snapshot.entries {
                let key: u64 = postcard::from_bytes(&entry.key).expect("key decodes");
                assert_eq!(entry.key_group, key_group_for_key(&key, 128).0);
            }
            assert!(ctx.errors.is_empty());
        }
    }

    #[test]
    fn snapshots_restore_into_either_backend() {
        let dir = tempfile::tempdir().expect("temp dir");
        let all = KeyGroupRange::for_subtask(128, 1, 0);
        let mut snapshots = Vec::new();
        for kind in BOTH {
            let mut ctx = Ctx::new(0u64, open_store(kind, all, &dir, "source"));
            fill(&mut ctx, 50);
            snapshots.push(complete(&mut ctx.store, 0));
        }
        assert_eq!(snapshots[0], snapshots[1], "backends agree");
        for kind in BOTH {
            let mut store: KeyedStateStore<u64> = open_store(kind, all, &dir, "target");
            store.restore(snapshots[0].clone()).expect("restores");
            // Untouched, restored states come back as they were.
            assert_eq!(complete(&mut store, 0), snapshots[0]);
            let mut ctx = Ctx::new(7u64, store);
            assert_eq!(ValueState::<u64>::new("value").value(&mut ctx), Some(70));
            assert_eq!(ListState::<String>::new("list").get(&mut ctx), vec!["7"]);
            assert_eq!(
                MapState::<u8, i32>::new("map").entries(&mut ctx),
                vec![(2, 7)]
            );
            assert_eq!(
                ctx.store
                    .value_table::<u64>("table")
                    .expect("table")
                    .get(&7)
                    .expect("get"),
                Some(&8)
            );
            assert!(ctx.errors.is_empty());
            assert_eq!(complete(&mut ctx.store, 0), snapshots[0]);
        }
    }

    #[test]
    fn untouched_restored_states_are_carried_over_filtered_by_key_group() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = Ctx::memory(0u64);
        fill(&mut source, 100);
        let full = complete(&mut source.store, 0);
        let half = KeyGroupRange { start: 0, end: 64 };
        for kind in BOTH {
            let mut ctx = Ctx::new(0u64, open_store(kind, half, &dir, "half"));
            ctx.store.restore(full.clone()).expect("restores");
            // Touch only "value": change one key of it.
            let key = (0..100u64)
                .find(|k| half.contains(key_group_for_key(k, 128)))
                .expect("a key of the first half");
            ctx.key = key;
            ValueState::<u64>::new("value").update(&mut ctx, 1);
            let snapshot = complete(&mut ctx.store, 0);
            let mut expected = full.clone();
            expected.retain_key_groups(half);
            let value = expected.state_index("value").expect("value");
            for entry in &mut expected.entries {
                if entry.state == value
                    && entry.key == postcard::to_allocvec(&key).expect("encodes")
                {
                    entry.value =
                        postcard::to_allocvec(&crate::state::ttl::TtlValue::new(1u64, None))
                            .expect("encodes");
                }
            }
            assert_eq!(snapshot, expected, "{kind:?}");
            assert!(ctx.errors.is_empty());
        }
    }

    #[test]
    fn restoring_at_another_parallelism_finds_every_key_in_its_owner() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = Ctx::memory(0u64);
        fill(&mut source, 1_000);
        let old = [OperatorSnapshot {
            keyed: complete(&mut source.store, 0),
            operator: Vec::new(),
        }];
        let value = ValueState::<u64>::new("value");
        for kind in BOTH {
            for redistributed in [true, false] {
                let mut subtasks: Vec<Ctx<u64>> = (0..3)
                    .map(|i| {
                        let range = KeyGroupRange::for_subtask(128, 3, i);
                        let mut store =
                            open_store(kind, range, &dir, &format!("{i}-{redistributed}"));
                        let keyed = if redistributed {
                            redistribute(&old, 128, 3, i).expect("redistributes").keyed
                        } else {
                            // The store keeps only its own key groups by itself too.
                            old[0].keyed.clone()
                        };
                        store.restore(keyed).expect("restores");
                        Ctx::new(0, store)
                    })
                    .collect();
                for key in 0..1_000u64 {
                    let owner = subtask_for_key_group(key_group_for_key(&key, 128), 128, 3);
                    for (i, ctx) in (0u32..).zip(subtasks.iter_mut()) {
                        ctx.key = key;
                        let found = value.value(ctx);
                        let expected = (i == owner).then_some(key * 10);
                        assert_eq!(found, expected, "key {key} in subtask {i} ({kind:?})");
                    }
                }
                for (i, ctx) in (0u32..).zip(subtasks.iter_mut()) {
                    let range = KeyGroupRange::for_subtask(128, 3, i);
                    let snapshot = complete(&mut ctx.store, 0);
                    assert!(!snapshot.entries.is_empty());
                    assert!(
                        snapshot
                            .entries
                            .iter()
                            .all(|e| range.contains(KeyGroup(e.key_group)))
                    );
                    assert!(ctx.errors.is_empty());
                }
            }
        }
    }

    #[test]
    fn corrupt_restored_bytes_are_an_error_naming_the_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = Ctx::memory("a".to_string());
        let count = ValueState::<i64>::new("count");
        count.update(&mut source, 1);
        source.key = "b".into();
        count.update(&mut source, 2);
        let good = complete(&mut source.store, 0);
        let a_key = postcard::to_allocvec("a").expect("encodes");
        let a_group = key_group_for_key(&"a".to_string(), 128).0;
        let garbage: [fn(&mut Vec<u8>); 3] =
            [|v| *v = vec![0xff; 12], |v| v.push(0), |v| v.truncate(1)];
        for corrupt_value in garbage {
            let mut bad = good.clone();
            for entry in &mut bad.entries {
                if entry.key == a_key {
                    corrupt_value(&mut entry.value);
                }
            }
            for kind in BOTH {
                let mut ctx = Ctx::new(
                    "a".to_string(),
                    open_store(kind, KeyGroupRange::for_subtask(128, 1, 0), &dir, "c"),
                );
                ctx.store
                    .restore(bad.clone())
                    .expect("restore defers decoding");
                assert_eq!(count.value(&mut ctx), None);
                let errors = ctx.take_errors();
                assert_eq!(errors.len(), 1, "{kind:?}: {errors:?}");
                let StateError::Corrupt(message) = &errors[0] else {
                    panic!("{kind:?}: not corrupt: {errors:?}");
                };
                assert!(message.contains("state 'count'"), "{message}");
                assert!(
                    message.contains(&format!("key group {a_group}")),
                    "{message}"
                );
            }
        }
        // A corrupt key is caught too.
        let mut bad = good.clone();
        bad.entries[0].key = vec![0xff; 3];
        let mut ctx = Ctx::memory("a".to_string());
        ctx.store.restore(bad).expect("restore defers decoding");
        assert_eq!(count.value(&mut ctx), None);
        assert!(matches!(&ctx.take_errors()[..], [StateError::Corrupt(m)] if m.contains("key")));
    }

    #[test]
    fn a_restored_state_keeps_its_type() {
        let mut source = Ctx::memory(1u32);
        ValueState::<i64>::new("x").update(&mut source, 5);
        let snapshot = complete(&mut source.store, 0);
        let mut ctx = Ctx::memory(1u32);
        ctx.store.restore(snapshot).expect("restores");
        assert!(ListState::<i64>::new("x").get(&mut ctx).is_empty());
        assert_eq!(ValueState::<u32>::new("x").value(&mut ctx), None);
        assert_eq!(
            ctx.take_errors(),
            vec![
                StateError::TypeMismatch {
                    name: "x".into(),
                    registered: "i64".into(),
                    requested: "ListState<i64>".into(),
                },
                StateError::TypeMismatch {
                    name: "x".into(),
                    registered: "i64".into(),
                    requested: "u32".into(),
                },
            ]
        );
        assert_eq!(ValueState::<i64>::new("x").value(&mut ctx), Some(5));
    }

    #[test]
    fn inconsistent_snapshots_are_rejected() {
        let meta = StateMeta {
            name: "s".into(),
            type_name: "u8".into(),
        };
        let entry = KeyedEntry {
            key_group: 0,
            state: 0,
            key: vec![0],
            value: vec![0, 0],
        };
        let cases = [
            KeyedStateSnapshot {
                states: vec![meta.clone(), meta.clone()],
                entries: vec![],
            },
            KeyedStateSnapshot {
                states: vec![meta.clone()],
                entries: vec![KeyedEntry {
                    state: 1,
                    ..entry.clone()
                }],
            },
            KeyedStateSnapshot {
                states: vec![meta],
                entries: vec![KeyedEntry {
                    key_group: 128,
                    ..entry
                }],
            },
        ];
        for snapshot in cases {
            let mut store = KeyedStateStore::<u8>::default();
            assert!(matches!(
                store.restore(snapshot),
                Err(StateError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn snapshots_are_frozen_at_the_barrier() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut reference = Ctx::memory(0u64);
        let value = ValueState::<u64>::new("value");
        let ttl = ValueState::<u64>::new("ttl").with_ttl(StateTtlConfig::new(100));
        for key in 0..20 {
            reference.key = key;
            value.update(&mut reference, 1);
            ttl.update(&mut reference, 1);
        }
        let expected = complete(&mut reference.store, 50);
        for mut ctx in [Ctx::lmdb(0u64, &dir.path().join("s"), 4), Ctx::memory(0u64)] {
            for key in 0..20 {
                ctx.key = key;
                value.update(&mut ctx, 1);
                ttl.update(&mut ctx, 1);
            }
            let pending = ctx.store.snapshot(50).expect("snapshot");
            let PendingKeyedSnapshot::Frozen(frozen) = &pending else {
                panic!("not frozen: {pending:?}");
            };
            assert_eq!(frozen.len_hint(), 40);
            // Processing goes on (LMDB: with write-backs, the cache holds 4 entries).
            for key in 0..40 {
                ctx.key = key;
                value.update(&mut ctx, 2);
            }
            ctx.key = 5;
            value.clear(&mut ctx);
            ctx.now = 200;
            let _ = ctx.store.snapshot(200).expect("a later snapshot");
            // The frozen view can move to another thread (checkpoint storage reads it off the
            // data path): checked by type, read here after the later writes.
            fn assert_send<T: Send>(_: &T) {}
            assert_send(&pending);
            let frozen = pending.complete().expect("reads");
            assert_eq!(frozen, expected, "{:?}", ctx.store.backend_kind());
            // The TTL state expired by now: 39 values are left.
            assert_eq!(complete(&mut ctx.store, 200).entries.len(), 39);
            assert!(ctx.errors.is_empty());
        }
    }

    #[test]
    fn a_full_lmdb_map_is_a_backend_error_naming_the_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tiny");
        let config = KeyedBackendConfig {
            lmdb_map_size: 64 << 10,
            ..lmdb_config(&path, 8)
        };
        let mut ctx = Ctx::new(0u64, KeyedStateStore::open(config).expect("opens"));
        let blob = ValueState::<Vec<u8>>::new("blob");
        for key in 0..200 {
            ctx.key = key;
            blob.update(&mut ctx, vec![7; 4096]);
        }
        let snapshot = ctx.store.snapshot(0);
        let mut errors = ctx.take_errors();
        errors.extend(snapshot.err());
        assert!(!errors.is_empty());
        for error in errors {
            let StateError::Backend(message) = &error else {
                panic!("not a backend error: {error:?}");
            };
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }

    #[test]
    fn the_lmdb_directory_is_created_and_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a").join("b");
        let store = KeyedStateStore::<u32>::open(lmdb_config(&path, 8)).expect("opens");
        assert!(path.join("data.mdb").exists());
        assert_eq!(store.backend_kind(), StateBackendKind::Lmdb);
        drop(store);
        assert!(!path.exists());
        // The same directory opens again afterwards (the environment was closed).
        let store = KeyedStateStore::<u32>::open(lmdb_config(&path, 8)).expect("reopens");
        drop(store);
    }

    #[test]
    fn bad_configurations_are_errors() {
        let no_dir = KeyedBackendConfig {
            kind: StateBackendKind::Lmdb,
            ..KeyedBackendConfig::memory(128)
        };
        let zero = KeyedBackendConfig {
            max_parallelism: 0,
            ..KeyedBackendConfig::memory(128)
        };
        let beyond = KeyedBackendConfig {
            key_groups: KeyGroupRange { start: 0, end: 129 },
            ..KeyedBackendConfig::memory(128)
        };
        for config in [no_dir, zero, beyond] {
            assert!(matches!(
                KeyedStateStore::<u32>::open(config),
                Err(StateError::Backend(_))
            ));
        }
    }

    #[test]
    fn value_tables_on_both_backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut snapshots = Vec::new();
        for kind in BOTH {
            let mut store: KeyedStateStore<String> =
                open_store(kind, KeyGroupRange::for_subtask(128, 1, 0), &dir, "t");
            for round in 0..3u64 {
                let mut sums = store.value_table::<u64>("sum").expect("table");
                for key in 0..50u64 {
                    *sums
                        .get_or_insert_with(key.to_string(), || 0)
                        .expect("entry") += key + round;
                }
                if let Some(sum) = sums.get_mut(&"1".to_string()).expect("get") {
                    *sum = 1_000;
                }
                sums.remove(&"2".to_string()).expect("remove");
            }
            let mut sums = store.value_table::<u64>("sum").expect("table");
            assert_eq!(sums.get(&"1".to_string()).expect("get"), Some(&1_000));
            assert_eq!(sums.get(&"2".to_string()).expect("get"), None);
            assert_eq!(sums.get(&"3".to_string()).expect("get"), Some(&12));
            assert_eq!(sums.get(&"none".to_string()).expect("get"), None);
            sums.insert("3".into(), 3).expect("insert");
            assert_eq!(sums.get(&"3".to_string()).expect("get"), Some(&3));
            let snapshot = complete(&mut store, 0);
            assert_eq!(snapshot.entries.len(), 49);
            snapshots.push(snapshot);
            match kind {
                StateBackendKind::Memory => assert_eq!(store.entries_in_memory(), 49),
                StateBackendKind::Lmdb => assert!(store.entries_in_memory() <= 8),
            }
        }
        assert_eq!(snapshots[0], snapshots[1]);
    }

    /// The keys `apply_to_state` visits: live values only, in snapshot order, the same on both
    /// backends, whether a value is in the LMDB cache (dirty or clean) or written back.
    #[test]
    fn apply_to_state_visits_the_live_keys_in_snapshot_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let all = KeyGroupRange::for_subtask(128, 1, 0);
        let count = ValueState::<u64>::new("count");
        let seen = ValueState::<u64>::new("seen").with_ttl(StateTtlConfig::new(100));
        let other = ListState::<u8>::new("other");
        let mut visits = Vec::new();
        for kind in BOTH {
            // LMDB: an 8-entry cache, so most values were written back and a few are cached.
            let mut ctx = Ctx::new(0u64, open_store(kind, all, &dir, "apply"));
            for key in 0..200u64 {
                ctx.key = key;
                // Keys 0..100 are stamped at 0 (expire at 100), the others at 50.
                ctx.now = if key < 100 { 0 } else { 50 };
                if key % 3 != 0 {
                    count.update(&mut ctx, key);
                }
                seen.update(&mut ctx, key);
                if key % 10 == 0 {
                    other.add(&mut ctx, 1);
                }
            }
            // A few keys read last: in the LMDB cache, clean.
            for key in [1, 2, 4] {
                ctx.key = key;
                assert_eq!(count.value(&mut ctx), Some(key));
            }
            // Removed after being written back: a dirty deletion in the cache.
            ctx.key = 5;
            count.clear(&mut ctx);
            assert!(ctx.take_errors().is_empty());

            let keys = ctx.store.keys(&count, 120).expect("keys");
            let mut expected: Vec<u64> = (0..200).filter(|k| k % 3 != 0 && *k != 5).collect();
            let order = |k: &u64| {
                (
                    key_group_for_key(k, 128).0,
                    postcard::to_allocvec(k).expect("encodes"),
                )
            };
            expected.sort_by_key(order);
            assert_eq!(keys, expected, "{kind:?}");
            // At 120 the values stamped at 0 expired: only keys 100.. are visited.
            let mut visited = Vec::new();
            ctx.store
                .apply_to_state(&seen, 120, |key, scope| {
                    visited.push(*key);
                    assert_eq!(seen.value(scope), Some(*key));
                    // Any state of the key is in reach.
                    if key % 2 == 0 {
                        count.clear(scope);
                    } else {
                        count.update(scope, 1_000);
                    }
                })
                .expect("applies");
            let mut live: Vec<u64> = (100..200).collect();
            live.sort_by_key(order);
            assert_eq!(visited, live, "{kind:?}");
            ctx.now = 120;
            for key in 0..200 {
                ctx.key = key;
                let expected = match key {
                    100.. if key % 2 == 0 => None,
                    100.. => Some(1_000),
                    _ if key % 3 == 0 || key == 5 => None,
                    _ => Some(key),
                };
                assert_eq!(count.value(&mut ctx), expected, "key {key} ({kind:?})");
            }
            // A state nobody used is not registered by asking for its keys.
            let unused = MapState::<u8, u8>::new("unused");
            assert_eq!(ctx.store.keys(&unused, 0).expect("keys"), Vec::<u64>::new());
            assert!(ctx.store.state_names().all(|name| name != "unused"));
            // Another type under the same name is a type mismatch.
            assert!(matches!(
                ctx.store.keys(&ValueState::<String>::new("count"), 0),
                Err(StateError::TypeMismatch { .. })
            ));
            assert!(ctx.take_errors().is_empty());
            visits.push((keys, visited));
        }
        assert_eq!(visits[0], visits[1], "the backends agree");
    }

    /// Restored states nobody touched yet are listed, on both backends, only for the key groups
    /// the store owns; the first error inside the function stops the walk.
    #[test]
    fn apply_to_state_reaches_restored_state_and_reports_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = Ctx::memory(0u64);
        fill(&mut source, 300);
        let snapshot = complete(&mut source.store, 0);
        let half = KeyGroupRange {
            start: 64,
            end: 128,
        };
        let value = ValueState::<u64>::new("value");
        let list = ListState::<String>::new("list");
        for kind in BOTH {
            let mut store: KeyedStateStore<u64> = open_store(kind, half, &dir, "restored");
            store.restore(snapshot.clone()).expect("restores");
            let keys = store.keys(&list, 0).expect("keys");
            let mut expected: Vec<u64> = (0..300)
                .filter(|k| half.contains(key_group_for_key(k, 128)))
                .collect();
            expected.sort_by_key(|k| {
                (
                    key_group_for_key(k, 128).0,
                    postcard::to_allocvec(k).expect("encodes"),
                )
            });
            assert_eq!(keys, expected, "{kind:?}");
            let mut sum = 0;
            store
                .apply_to_state(&list, 0, |key, scope| {
                    assert_eq!(list.get(scope), vec![key.to_string()]);
                    sum += value.value(scope).expect("restored value");
                })
                .expect("applies");
            assert_eq!(sum, expected.iter().map(|k| k * 10).sum::<u64>());
            let mut calls = 0;
            let error = store.apply_to_state(&list, 0, |_, scope| {
                calls += 1;
                // The wrong type: the handle reports a type mismatch to the scope.
                let _ = ValueState::<String>::new("value").value(scope);
            });
            assert!(
                matches!(error, Err(StateError::TypeMismatch { .. })),
                "{kind:?}"
            );
            assert_eq!(calls, 1, "the walk stops at the first error");
        }
    }

    /// Keys and values whose lengths need one, two and three varint bytes are encoded in place
    /// at the barrier with their lengths widened: the snapshot is what encoding each entry on
    /// its own gives.
    #[test]
    fn memory_snapshots_encode_long_keys_and_values() {
        let mut store = KeyedStateStore::<String>::default();
        let mut expected = Vec::new();
        {
            let mut table = store.value_table::<Vec<u8>>("blobs").expect("table");
            for (i, key_len) in [0usize, 1, 127, 128, 129, 300, 16_384, 20_000]
                .into_iter()
                .enumerate()
            {
                for value_len in [0usize, 127, 128, 16_383, 16_384, 70_000] {
                    let key = format!("{i}{}", "k".repeat(key_len));
                    let key = format!("{key}-{value_len}");
                    let value = vec![(key_len % 251) as u8; value_len];
                    table.insert(key.clone(), value.clone()).expect("insert");
                    expected.push(KeyedEntry {
                        key_group: key_group_for_key(&key, 128).0,
                        state: 0,
                        key: postcard::to_allocvec(&key).expect("encodes"),
                        value: postcard::to_allocvec(&value).expect("encodes"),
                    });
                }
            }
        }
        expected.sort();
        let snapshot = complete(&mut store, 0);
        assert_eq!(snapshot.entries, expected);
    }

    #[test]
    fn stores_are_send() {
        fn send<T: Send>() {}
        send::<KeyedStateStore<String>>();
        send::<ValueState<String>>();
        send::<ReducingState<String>>();
    }

    /// One step of the differential test.
    #[derive(Debug, Clone)]
    enum Op {
        Key(u32),
        Advance(i64),
        ValueUpdate(i64),
        ValueGet,
        ValueClear,
        TtlUpdate(u8),
        TtlGet,
        ListAdd(u8),
        ListGet,
        ListUpdate(Vec<u8>),
        ListClear,
        MapPut(u8, i32),
        MapGet(u8),
        MapRemove(u8),
        MapEntries,
        MapClear,
        ReduceAdd(i64),
        ReduceGet,
        TableBump(u64),
        TableGet,
        TableRemove,
        /// Every key with a live `ttl` value: records it and clears its `value` when odd.
        Apply,
        Snapshot,
        SnapshotRestore,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u32..16).prop_map(Op::Key),
            1 => (0i64..60).prop_map(Op::Advance),
            2 => any::<i64>().prop_map(Op::ValueUpdate),
            2 => Just(Op::ValueGet),
            1 => Just(Op::ValueClear),
            1 => any::<u8>().prop_map(Op::TtlUpdate),
            1 => Just(Op::TtlGet),
            2 => any::<u8>().prop_map(Op::ListAdd),
            1 => Just(Op::ListGet),
            1 => proptest::collection::vec(any::<u8>(), 0..3).prop_map(Op::ListUpdate),
            1 => Just(Op::ListClear),
            2 => (0u8..6, any::<i32>()).prop_map(|(k, v)| Op::MapPut(k, v)),
            1 => (0u8..6).prop_map(Op::MapGet),
            1 => (0u8..6).prop_map(Op::MapRemove),
            1 => Just(Op::MapEntries),
            1 => Just(Op::MapClear),
            1 => (-5i64..5).prop_map(Op::ReduceAdd),
            1 => Just(Op::ReduceGet),
            2 => (0u64..1_000).prop_map(Op::TableBump),
            1 => Just(Op::TableGet),
            1 => Just(Op::TableRemove),
            1 => Just(Op::Apply),
            1 => Just(Op::Snapshot),
            1 => Just(Op::SnapshotRestore),
        ]
    }

    /// Applies `op` to `ctx`; returns what a user could observe.
    fn apply(ctx: &mut Ctx<u32>, op: &Op) -> String {
        let value = ValueState::<i64>::new("value");
        let ttl = ValueState::<u8>::new("ttl")
            .with_ttl(StateTtlConfig::new(100).update_on_read_and_write());
        let list = ListState::<u8>::new("list").with_ttl(StateTtlConfig::new(150));
        let map = MapState::<u8, i32>::new("map");
        let reduce =
            ReducingState::new("reduce", |a: i64, b: i64| a.wrapping_mul(3).wrapping_add(b));
        let result = match op {
            Op::Key(key) => {
                ctx.key = *key;
                String::new()
            }
            Op::Advance(ms) => {
                ctx.now += ms;
                String::new()
            }
            Op::ValueUpdate(v) => format!("{:?}", value.update(ctx, *v)),
            Op::ValueGet => format!("{:?}", value.value(ctx)),
            Op::ValueClear => format!("{:?}", value.clear(ctx)),
            Op::TtlUpdate(v) => format!("{:?}", ttl.update(ctx, *v)),
            Op::TtlGet => format!("{:?}", ttl.value(ctx)),
            Op::ListAdd(v) => format!("{:?}", list.add(ctx, *v)),
            Op::ListGet => format!("{:?}", list.get(ctx)),
            Op::ListUpdate(v) => format!("{:?}", list.update(ctx, v.clone())),
            Op::ListClear => format!("{:?}", list.clear(ctx)),
            Op::MapPut(k, v) => format!("{:?}", map.put(ctx, *k, *v)),
            Op::MapGet(k) => format!("{:?}", map.get(ctx, k)),
            Op::MapRemove(k) => format!("{:?}", map.remove(ctx, k)),
            Op::MapEntries => format!("{:?}", map.entries(ctx)),
            Op::MapClear => format!("{:?}", map.clear(ctx)),
            Op::ReduceAdd(v) => format!("{:?}", reduce.add(ctx, *v)),
            Op::ReduceGet => format!("{:?}", reduce.get(ctx)),
            Op::TableBump(v) => {
                let key = ctx.key;
                let mut table = ctx.store.value_table::<u64>("table").expect("table");
                let sum = table.get_or_insert_with(key, || 0).expect("entry");
                *sum = sum.wrapping_add(*v);
                format!("{sum}")
            }
            Op::TableGet => {
                let key = ctx.key;
                let mut table = ctx.store.value_table::<u64>("table").expect("table");
                format!("{:?}", table.get(&key).expect("get"))
            }
            Op::TableRemove => {
                let key = ctx.key;
                let mut table = ctx.store.value_table::<u64>("table").expect("table");
                format!("{:?}", table.remove(&key))
            }
            Op::Apply => {
                let now = ctx.now;
                let mut seen = Vec::new();
                let result = ctx.store.apply_to_state(&ttl, now, |key, scope| {
                    seen.push((*key, ttl.value(scope), value.value(scope)));
                    if key % 2 == 1 {
                        value.clear(scope);
                    }
                });
                format!("{seen:?} {result:?}")
            }
            Op::Snapshot | Op::SnapshotRestore => unreachable!("handled by the driver"),
        };
        format!("{result} {:?}", ctx.take_errors())
    }

    /// A handle remembers where its state sits in the store it used last: alternating between
    /// stores that registered the states in other orders, and a restore that replaces a store's
    /// states in another order, must still reach the right state.
    #[test]
    fn state_hints_follow_the_store_and_its_restores() {
        let dir = tempfile::tempdir().expect("temp dir");
        let all = KeyGroupRange::for_subtask(128, 1, 0);
        for kind in BOTH {
            let a = ValueState::<u64>::new("a");
            let b = ValueState::<u64>::new("b");
            let mut one = Ctx::new(1u64, open_store(kind, all, &dir, &format!("{kind:?}-1")));
            let mut two = Ctx::new(1u64, open_store(kind, all, &dir, &format!("{kind:?}-2")));
            // `one` holds b at index 0, `two` holds a there.
            b.update(&mut one, 20);
            a.update(&mut one, 10);
            a.update(&mut two, 1);
            b.update(&mut two, 2);
            for _ in 0..2 {
                assert_eq!(a.value(&mut one), Some(10));
                assert_eq!(a.value(&mut two), Some(1));
                assert_eq!(b.value(&mut one), Some(20));
                assert_eq!(b.value(&mut two), Some(2));
            }
            // The hints now point into `one` (a at 1, b at 0); its states are replaced by
            // `two`'s, in the order a, b.
            assert_eq!((a.value(&mut one), b.value(&mut one)), (Some(10), Some(20)));
            let snapshot = complete(&mut two.store, 0);
            one.store.restore(snapshot).expect("restores");
            assert_eq!(a.value(&mut one), Some(1), "{kind:?}");
            assert_eq!(b.value(&mut one), Some(2), "{kind:?}");
            // A clone starts without a hint and finds the same state.
            assert_eq!(a.clone().value(&mut one), Some(1));
            assert!(one.errors.is_empty() && two.errors.is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Memory and LMDB (with an 8-entry cache, so write-back and eviction happen all the
        /// time) give the same results and the same snapshots, across snapshot and restore.
        #[test]
        fn memory_and_lmdb_agree(ops in proptest::collection::vec(op(), 0..150)) {
            let dir = tempfile::tempdir().expect("temp dir");
            let all = KeyGroupRange::for_subtask(128, 1, 0);
            let mut generation = 0;
            let mut memory = Ctx::new(0u32, open_store(StateBackendKind::Memory, all, &dir, "m"));
            let mut lmdb = Ctx::new(0u32, open_store(StateBackendKind::Lmdb, all, &dir, "l0"));
            for (i, op) in ops.iter().enumerate() {
                match op {
                    Op::Snapshot | Op::SnapshotRestore => {
                        let a = complete(&mut memory.store, memory.now);
                        let b = complete(&mut lmdb.store, lmdb.now);
                        prop_assert!(a.entries.is_sorted());
                        prop_assert_eq!(&a, &b, "snapshot at op {}", i);
                        if let Op::SnapshotRestore = op {
                            generation += 1;
                            let mut fresh_memory = open_store(StateBackendKind::Memory, all, &dir, "m");
                            let mut fresh_lmdb = open_store(StateBackendKind::Lmdb, all, &dir, &format!("l{generation}"));
                            fresh_memory.restore(a).expect("restores");
                            fresh_lmdb.restore(b).expect("restores");
                            memory.store = fresh_memory;
                            lmdb.store = fresh_lmdb;
                        }
                    }
                    op => {
                        let a = apply(&mut memory, op);
                        let b = apply(&mut lmdb, op);
                        prop_assert!(a.ends_with("[]"), "op {} {:?}: {}", i, op, a);
                        prop_assert_eq!(a, b, "op {} {:?}", i, op);
                    }
                }
            }
            let a = complete(&mut memory.store, memory.now);
            let b = complete(&mut lmdb.store, lmdb.now);
            prop_assert_eq!(a, b);
        }
    }
}
