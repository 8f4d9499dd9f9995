//! How operators take part in checkpoints: restoring state before `open`, snapshotting it when a
//! barrier passes, and learning that a checkpoint completed (Flink's `CheckpointedFunction` and
//! `CheckpointListener`).
//!
//! The runtime hands each operator a [`StateInitContext`] before `open` (with the operator's
//! share of the restored checkpoint, already redistributed for its parallelism) and a
//! [`StateSnapshotContext`] when a barrier reaches it, after every record before the barrier and
//! before the barrier goes on. What operators put there is collected per task in [`TaskCx`] and
//! handed to checkpoint storage.
//!
//! [`TaskCx`]: super::TaskCx

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::Key;
use crate::checkpoint::{CheckpointBarrier, CheckpointId, CheckpointKind};
use crate::state::{
    KeyGroup, KeyGroupRange, KeyedBackendConfig, KeyedEntry, KeyedStateSnapshot, KeyedStateStore,
    OperatorListState, OperatorSnapshot, OperatorStateMode, PendingKeyedSnapshot, StableHash,
    StateBackendKind, StateError, StateMeta, key_group_for_key,
};

/// The restored state and backend settings of one subtask, shared by the operators of its chain.
#[derive(Debug, Default)]
pub struct TaskStateInit {
    /// Restored state per operator state id (see [`super::OperatorInfo::state_id`]).
    restored: Mutex<BTreeMap<String, OperatorSnapshot>>,
    /// The checkpoint the state comes from.
    pub(crate) restored_from: Option<CheckpointId>,
    /// The keyed state backend.
    pub(crate) backend: StateBackendKind,
    /// A directory private to this subtask attempt (LMDB environments live below it).
    pub(crate) local_dir: PathBuf,
    /// LMDB write-back cache bound, in entries.
    pub(crate) cache_entries: usize,
    /// LMDB map size in bytes.
    pub(crate) lmdb_map_size: usize,
    /// Whether restored state the operators no longer declare may be dropped.
    pub(crate) allow_non_restored_state: bool,
}

impl TaskStateInit {
    pub(crate) fn new(
        restored: BTreeMap<String, OperatorSnapshot>,
        restored_from: Option<CheckpointId>,
        backend: StateBackendKind,
        local_dir: PathBuf,
        cache_entries: usize,
        lmdb_map_size: usize,
    ) -> Self {
        Self {
            restored: Mutex::new(restored),
            restored_from,
            backend,
            local_dir,
            cache_entries,
            lmdb_map_size,
            allow_non_restored_state: false,
        }
    }

    /// The same, allowing restored state the operators no longer declare to be dropped (the
    /// restore's `allow_non_restored_state`).
    #[must_use]
    pub(crate) fn allowing_non_restored_state(mut self, allow: bool) -> Self {
        self.allow_non_restored_state = allow;
        self
    }

    fn take(&self, state_id: &str) -> Option<OperatorSnapshot> {
        self.restored
            .lock()
            .map(|mut restored| restored.remove(state_id))
            .unwrap_or(None)
    }
}

/// What an operator gets to set up (and restore) its state, before `open`.
#[derive(Debug)]
pub struct StateInitContext {
    state_id: String,
    restored: Option<OperatorSnapshot>,
    restored_from: Option<CheckpointId>,
    backend: KeyedBackendConfig,
    allow_non_restored_state: bool,
}

impl StateInitContext {
    pub(crate) fn new(
        task: &TaskStateInit,
        state_id: &str,
        max_parallelism: u32,
        parallelism: u32,
        subtask_index: u32,
    ) -> Self {
        let dir_name: String = state_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Self {
            state_id: state_id.to_string(),
            restored: task.take(state_id),
            restored_from: task.restored_from,
            allow_non_restored_state: task.allow_non_restored_state,
            backend: KeyedBackendConfig {
                kind: task.backend,
                local_dir: task.local_dir.join(dir_name),
                max_parallelism,
                key_groups: KeyGroupRange::for_subtask(
                    max_parallelism,
                    parallelism.max(1),
                    subtask_index,
                ),
                cache_entries: task.cache_entries,
                lmdb_map_size: task.lmdb_map_size,
            },
        }
    }

    /// A context restoring `snapshot` (this instance's share, as [`redistribute`] gives it)
    /// from checkpoint `checkpoint`, with the keyed backend `backend` (operator tests).
    ///
    /// [`redistribute`]: crate::state::snapshot::redistribute
    #[cfg(test)]
    pub(crate) fn restored(
        snapshot: OperatorSnapshot,
        checkpoint: CheckpointId,
        backend: KeyedBackendConfig,
    ) -> Self {
        Self {
            state_id: String::new(),
            restored: Some(snapshot),
            restored_from: Some(checkpoint),
            backend,
            allow_non_restored_state: false,
        }
    }

    /// A context with nothing restored and an in-memory backend (operator tests).
    pub fn empty(max_parallelism: u32) -> Self {
        Self {
            state_id: String::new(),
            restored: None,
            restored_from: None,
            backend: KeyedBackendConfig::memory(max_parallelism),
            allow_non_restored_state: false,
        }
    }

    /// The operator's state id (its uid, or a generated id).
    pub fn state_id(&self) -> &str {
        &self.state_id
    }

    /// Whether the job restored this operator from a checkpoint or savepoint.
    pub fn is_restored(&self) -> bool {
        self.restored_from.is_some()
    }

    /// Whether the job was started with `allow_non_restored_state`: restored state the
    /// operator no longer declares may be dropped.
    pub fn allows_non_restored_state(&self) -> bool {
        self.allow_non_restored_state
    }

    /// The checkpoint the job restored from, if any.
    pub fn restored_checkpoint(&self) -> Option<CheckpointId> {
        self.restored_from
    }

    /// The backend settings of this operator instance's keyed state.
    pub fn backend_config(&self) -> &KeyedBackendConfig {
        &self.backend
    }

    /// Opens this operator's keyed state store in the job's backend, restored from the
    /// checkpoint's keyed state (the key groups this instance owns).
    ///
    /// # Errors
    ///
    /// The backend cannot open, or the restored state is corrupt.
    pub fn keyed_store<K: Key>(&mut self) -> Result<KeyedStateStore<K>, StateError> {
        let mut store = KeyedStateStore::open(self.backend.clone())?;
        let keyed = self.take_keyed_snapshot();
        if !keyed.is_empty() {
            store.restore(keyed)?;
        }
        Ok(store)
    }

    /// Takes the restored keyed entries as they are (operators with their own layout, such as
    /// timers). Empty when nothing was restored.
    pub fn take_keyed_snapshot(&mut self) -> KeyedStateSnapshot {
        self.restored
            .as_mut()
            .map(|r| std::mem::take(&mut r.keyed))
            .unwrap_or_default()
    }

    /// Takes the restored operator list state `name` (its elements as stored).
    pub fn take_operator_state(&mut self, name: &str) -> Option<OperatorListState> {
        let restored = self.restored.as_mut()?;
        let index = restored.operator.iter().position(|s| s.name == name)?;
        Some(restored.operator.remove(index))
    }

    /// Takes and decodes the restored operator list state `name` (empty if none).
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] if an element does not decode as `T`.
    pub fn list_state<T: DeserializeOwned>(&mut self, name: &str) -> Result<Vec<T>, StateError> {
        let Some(state) = self.take_operator_state(name) else {
            return Ok(Vec::new());
        };
        state
            .elements
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                postcard::from_bytes(bytes).map_err(|error| {
                    StateError::Corrupt(format!(
                        "operator state '{name}' of '{}', element {i}: {error}",
                        self.state_id
                    ))
                })
            })
            .collect()
    }
}

/// The state one operator contributes to a checkpoint, before storage completes it.
#[derive(Debug, Default)]
pub struct PendingOperatorSnapshot {
    /// Keyed parts (a store, timers, ...), merged on completion.
    pub keyed: Vec<PendingKeyedSnapshot>,
    /// Operator list states.
    pub operator: Vec<OperatorListState>,
}

impl PendingOperatorSnapshot {
    /// Runs the deferred parts and merges everything into one snapshot.
    ///
    /// # Errors
    ///
    /// A backend failed to read its frozen view, or two keyed parts are inconsistent.
    pub fn complete(self) -> Result<OperatorSnapshot, StateError> {
        let mut keyed = KeyedStateSnapshot::default();
        for part in self.keyed {
            keyed.merge(part.complete()?)?;
        }
        Ok(OperatorSnapshot {
            keyed,
            operator: self.operator,
        })
    }
}

/// What an operator gets when a checkpoint barrier reaches it: where to put its state.
#[derive(Debug)]
pub struct StateSnapshotContext {
    barrier: CheckpointBarrier,
    now_ms: i64,
    persisted: bool,
    pending: PendingOperatorSnapshot,
}

impl StateSnapshotContext {
    pub(crate) fn new(barrier: CheckpointBarrier, now_ms: i64, persisted: bool) -> Self {
        Self {
            barrier,
            now_ms,
            persisted,
            pending: PendingOperatorSnapshot::default(),
        }
    }

    /// Whether the snapshot will be stored. The final checkpoint of a job without periodic
    /// checkpoints only commits (two-phase-commit sinks); its keyed state is not needed, and
    /// [`StateSnapshotContext::snapshot_keyed_store`] skips it.
    pub fn is_persisted(&self) -> bool {
        self.persisted
    }

    /// The checkpoint being taken.
    pub fn checkpoint_id(&self) -> CheckpointId {
        self.barrier.id
    }

    /// Checkpoint or savepoint.
    pub fn kind(&self) -> CheckpointKind {
        self.barrier.kind
    }

    /// The processing time of this step (for TTL filtering).
    pub fn current_processing_time(&self) -> i64 {
        self.now_ms
    }

    /// Snapshots `store` into this checkpoint.
    ///
    /// # Errors
    ///
    /// The backend failed to prepare its snapshot.
    pub fn snapshot_keyed_store<K: Key>(
        &mut self,
        store: &mut KeyedStateStore<K>,
    ) -> Result<(), StateError> {
        if self.persisted {
            let pending = store.snapshot(self.now_ms)?;
            self.pending.keyed.push(pending);
        }
        Ok(())
    }

    /// Adds a keyed part taken by the operator itself.
    pub fn add_keyed(&mut self, part: PendingKeyedSnapshot) {
        self.pending.keyed.push(part);
    }

    /// Stores operator list state `name`: `elements` are encoded with postcard.
    ///
    /// # Errors
    ///
    /// An element cannot be encoded.
    pub fn add_list_state<T: Serialize>(
        &mut self,
        name: &str,
        mode: OperatorStateMode,
        elements: &[T],
    ) -> Result<(), StateError> {
        let encoded = elements
            .iter()
            .map(|e| {
                postcard::to_allocvec(e).map_err(|error| {
                    StateError::Backend(format!("cannot encode operator state '{name}': {error}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.pending.operator.push(OperatorListState {
            name: name.to_string(),
            mode,
            elements: encoded,
        });
        Ok(())
    }

    pub(crate) fn into_pending(self) -> PendingOperatorSnapshot {
        self.pending
    }
}

/// Builds one keyed state of an operator's own layout (window contents, join buffers) in the
/// snapshot format: every entry in the key group of its key, sorted.
///
/// Operators that keep their state on the heap rather than in a [`KeyedStateStore`] write it
/// with this at a barrier, one writer per state name, and read it back with
/// [`take_keyed_entries`]. The value type's name is recorded and checked on restore, as the
/// store does for its states.
pub(crate) struct KeyedStateWriter {
    name: String,
    type_name: &'static str,
    max_parallelism: u32,
    entries: Vec<KeyedEntry>,
}

impl KeyedStateWriter {
    /// A writer of state `name` with values of type `V`, over `max_parallelism` key groups.
    pub(crate) fn new<V: ?Sized>(name: &str, max_parallelism: u32) -> Self {
        Self {
            name: name.to_string(),
            type_name: std::any::type_name::<V>(),
            max_parallelism,
            entries: Vec::new(),
        }
    }

    /// Adds the entry `entry_key -> value` in the key group of `key` (the entry key usually
    /// holds `key` and a namespace: a window, a timestamp).
    ///
    /// # Errors
    ///
    /// [`StateError::Encode`] if the entry key or the value cannot be encoded.
    pub(crate) fn put<K, E, V>(
        &mut self,
        key: &K,
        entry_key: &E,
        value: &V,
    ) -> Result<(), StateError>
    where
        K: StableHash + ?Sized,
        E: Serialize + ?Sized,
        V: Serialize + ?Sized,
    {
        let key_group = key_group_for_key(key, self.max_parallelism).0;
        let encode = |what: &str, error: postcard::Error| {
            StateError::Encode(format!(
                "state '{}', key group {key_group}: cannot encode {what}: {error}",
                self.name
            ))
        };
        let entry_key = postcard::to_allocvec(entry_key).map_err(|e| encode("a key", e))?;
        let value = postcard::to_allocvec(value).map_err(|e| encode("a value", e))?;
        self.entries.push(KeyedEntry {
            key_group,
            state: 0,
            key: entry_key,
            value,
        });
        Ok(())
    }

    /// The state as a keyed snapshot, entries sorted; `None` if no entry was added.
    pub(crate) fn finish(mut self) -> Option<KeyedStateSnapshot> {
        if self.entries.is_empty() {
            return None;
        }
        self.entries.sort_unstable();
        Some(KeyedStateSnapshot {
            states: vec![StateMeta {
                name: self.name,
                type_name: self.type_name.to_string(),
            }],
            entries: self.entries,
        })
    }
}

/// Keyed state `name` from entries copied at the barrier, encoded later by checkpoint storage,
/// off the data path ([`PendingKeyedSnapshot::Deferred`]): the operator only pays for the copy.
/// Each entry `(key, namespace, value)` is stored in the key group of `key`, with the entry key
/// `(key, namespace)` (just the key's bytes for the namespace `()`); `None` for no entries.
pub(crate) fn deferred_keyed_state<K, N, V>(
    name: &'static str,
    max_parallelism: u32,
    entries: Vec<(K, N, V)>,
) -> Option<PendingKeyedSnapshot>
where
    K: StableHash + Serialize + Send + 'static,
    N: Serialize + Send + 'static,
    V: Serialize + Send + 'static,
{
    if entries.is_empty() {
        return None;
    }
    Some(PendingKeyedSnapshot::Deferred(Box::new(move || {
        let mut writer = KeyedStateWriter::new::<V>(name, max_parallelism);
        for (key, namespace, value) in &entries {
            writer.put(key, &(key, namespace), value)?;
        }
        Ok(writer.finish().unwrap_or_default())
    })))
}

/// Removes state `name` from `keyed` and decodes its entries (written by a
/// [`KeyedStateWriter`] with values of type `V`) as `(key group, entry key, value)`, in
/// snapshot order. Empty if the state is absent.
///
/// # Errors
///
/// [`StateError::TypeMismatch`] if the state was written with another value type;
/// [`StateError::Corrupt`], naming the state and the key group, if an entry does not decode
/// (or has bytes left over).
pub(crate) fn take_keyed_entries<E, V>(
    keyed: &mut KeyedStateSnapshot,
    name: &str,
) -> Result<Vec<(KeyGroup, E, V)>, StateError>
where
    E: DeserializeOwned,
    V: DeserializeOwned,
{
    let taken = keyed.take_state(name);
    let Some(meta) = taken.states.first() else {
        return Ok(Vec::new());
    };
    let requested = std::any::type_name::<V>();
    if meta.type_name != requested {
        return Err(StateError::TypeMismatch {
            name: name.to_string(),
            registered: meta.type_name.clone(),
            requested: requested.to_string(),
        });
    }
    taken
        .entries
        .iter()
        .map(|entry| {
            let corrupt = |what: &str, error: String| {
                StateError::Corrupt(format!(
                    "state '{name}', key group {}: cannot decode {what}: {error}",
                    entry.key_group
                ))
            };
            let entry_key = decode_exact(&entry.key).map_err(|e| corrupt("a key", e))?;
            let value = decode_exact(&entry.value).map_err(|e| corrupt("a value", e))?;
            Ok((KeyGroup(entry.key_group), entry_key, value))
        })
        .collect()
}

/// Checks that `key`, restored from key group `key_group` of state `name`, belongs there: a
/// key in another group would be owned by a subtask its records never reach.
///
/// # Errors
///
/// [`StateError::Corrupt`] naming the state and both groups.
pub(crate) fn check_key_group<K: StableHash + ?Sized>(
    key: &K,
    key_group: KeyGroup,
    max_parallelism: u32,
    name: &str,
) -> Result<(), StateError> {
    let actual = key_group_for_key(key, max_parallelism);
    if actual == key_group {
        Ok(())
    } else {
        Err(StateError::Corrupt(format!(
            "state '{name}': an entry of key group {} has a key of key group {} (max \
             parallelism {max_parallelism})",
            key_group.0, actual.0
        )))
    }
}

/// Decodes `bytes` as one postcard `T` with nothing left over.
fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
        Err(error) => Err(error.to_string()),
    }
}

/// Restored state of a whole job, shared with subtasks as `Arc` (cheap to hand out).
pub(crate) type SharedTaskStateInit = Arc<TaskStateInit>;
