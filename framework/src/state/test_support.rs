//! Test contexts for keyed state: a [`KeyedStateAccess`] over a store, on either backend.

use std::path::Path;

use super::{
    KeyGroupRange, KeyedBackendConfig, KeyedStateAccess, KeyedStateStore, StateBackendKind,
    StateError,
};
use crate::api::Key;

/// A keyed context: the current key, processing time, a store, and the errors reported.
pub(crate) struct Ctx<K> {
    pub(crate) key: K,
    pub(crate) now: i64,
    pub(crate) store: KeyedStateStore<K>,
    pub(crate) errors: Vec<StateError>,
}

impl<K> KeyedStateAccess<K> for Ctx<K> {
    fn current_key(&self) -> &K {
        &self.key
    }
    fn state_store(&mut self) -> &mut KeyedStateStore<K> {
        &mut self.store
    }
    fn key_and_store(&mut self) -> (std::borrow::Cow<'_, K>, &mut KeyedStateStore<K>)
    where
        K: Clone,
    {
        (std::borrow::Cow::Borrowed(&self.key), &mut self.store)
    }
    fn state_error(&mut self, error: StateError) {
        self.errors.push(error);
    }
    fn current_processing_time(&self) -> i64 {
        self.now
    }
}

impl<K: Key> Ctx<K> {
    pub(crate) fn new(key: K, store: KeyedStateStore<K>) -> Self {
        Self {
            key,
            now: 0,
            store,
            errors: Vec::new(),
        }
    }

    pub(crate) fn memory(key: K) -> Self {
        Self::new(key, KeyedStateStore::default())
    }

    pub(crate) fn lmdb(key: K, dir: &Path, cache_entries: usize) -> Self {
        let store = KeyedStateStore::open(lmdb_config(dir, cache_entries)).expect("LMDB opens");
        Self::new(key, store)
    }

    /// Takes the reported errors.
    pub(crate) fn take_errors(&mut self) -> Vec<StateError> {
        std::mem::take(&mut self.errors)
    }
}

/// An LMDB backend owning all 128 key groups, with a 16 MiB map.
pub(crate) fn lmdb_config(dir: &Path, cache_entries: usize) -> KeyedBackendConfig {
    KeyedBackendConfig {
        kind: StateBackendKind::Lmdb,
        local_dir: dir.to_path_buf(),
        max_parallelism: 128,
        key_groups: KeyGroupRange::for_subtask(128, 1, 0),
        cache_entries,
        lmdb_map_size: 16 << 20,
    }
}

/// Runs `test` on a memory context and on an LMDB context with a cache of 4 entries (so most
/// accesses miss and write-backs happen), both starting at `key`. Fails on reported errors.
pub(crate) fn on_both_backends<K: Key>(key: K, test: impl Fn(&mut Ctx<K>)) {
    let dir = tempfile::tempdir().expect("temp dir");
    for mut ctx in [
        Ctx::memory(key.clone()),
        Ctx::lmdb(key.clone(), &dir.path().join("store"), 4),
    ] {
        test(&mut ctx);
        assert_eq!(
            ctx.errors,
            vec![],
            "{:?} backend reported errors",
            ctx.store.backend_kind()
        );
    }
}
