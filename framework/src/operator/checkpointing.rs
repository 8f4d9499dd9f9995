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
    KeyGroupRange, KeyedBackendConfig, KeyedStateSnapshot, KeyedStateStore, OperatorListState,
    OperatorSnapshot, OperatorStateMode, PendingKeyedSnapshot, StateBackendKind, StateError,
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
        }
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

    /// A context with nothing restored and an in-memory backend (operator tests).
    pub fn empty(max_parallelism: u32) -> Self {
        Self {
            state_id: String::new(),
            restored: None,
            restored_from: None,
            backend: KeyedBackendConfig::memory(max_parallelism),
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

/// Restored state of a whole job, shared with subtasks as `Arc` (cheap to hand out).
pub(crate) type SharedTaskStateInit = Arc<TaskStateInit>;
