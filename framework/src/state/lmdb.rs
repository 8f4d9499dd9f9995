//! The LMDB keyed-state backend (heed), with a bounded write-back cache in front.
//!
//! ## Design
//!
//! - **One environment per store**, in the store's private `local_dir` (created on open, its
//!   files and the directory removed on drop), with **one database for all states**. A record's
//!   key is `key group (u16, big-endian) ++ state id (u32, big-endian) ++ postcard(key)`, so the
//!   database's byte order is the snapshot order `(key group, state, key)`; its value is
//!   `postcard(value)` in the state's stored form (TTL stamp included, see `ttl.rs`).
//! - **No durability is asked of LMDB**: the environment is opened with `NO_SYNC` and
//!   `NO_META_SYNC`. It is a working store that spills state beyond memory; checkpoint files are
//!   the durable copy, and a failed subtask restores from them into a fresh directory, never from
//!   what LMDB left behind.
//! - **A typed write-back cache** per state (`cache_entries` entries in total across states):
//!   reads hit the cache; a miss reads LMDB (one short read transaction) and fills the cache;
//!   writes only touch the cache. When the cache is full, every dirty entry of every state is
//!   written back in **one** write transaction and the cache is emptied. Nothing writes a record
//!   at a time.
//! - **Snapshots** write the dirty cache back (one transaction), then open a `'static`, `Send`
//!   read transaction (`Env::static_read_txn` on an environment opened with
//!   `read_txn_without_tls`) and return a closure that reads it into a
//!   [`KeyedStateSnapshot`] later, while processing goes on: LMDB's MVCC keeps the view frozen at
//!   the barrier.
//!
//! ## Invariants
//!
//! - A `RwTxn` (not `Send`) never outlives the function that opened it.
//! - A dirty cache slot is newer than LMDB; a clean one equals LMDB (`None`: absent).
//! - `LmdbEnv::cached` is the number of slots over all caches of the store.
//! - Failures (a full map, I/O, an over-long key) are [`StateError::Backend`] naming the
//!   directory; undecodable bytes are [`StateError::Corrupt`] naming the state and key group.
//!   Keys must encode to at most 505 bytes (LMDB's key limit, 511, minus the 6-byte prefix).

use std::any::Any;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::backend::KeyedBackendConfig;
use super::key_group::{KeyGroup, MAX_PARALLELISM_LIMIT};
use super::keyed::StateError;
use super::snapshot::{KeyedEntry, KeyedStateSnapshot, PendingKeyedSnapshot, StateMeta};
use super::table::{
    KeyCodec, KeyMap, Slot, StateBody, StateEntry, corrupt, decode_exact, encode_error,
};
use super::ttl::{Expiry, PruneBytesFn, Pruned};

/// The map size when the configuration leaves it at 0: address space only, LMDB grows the file
/// as it fills.
const MAP_SIZE_DEFAULT: usize = 1 << 30;

/// Map sizes are rounded up to this, a multiple of every common page size (4, 16, 64 KiB).
const MAP_SIZE_ALIGN: usize = 64 << 10;

/// Bytes before the encoded key: key group (u16) and state id (u32).
const DB_KEY_PREFIX: usize = 6;

// Key groups are stored as u16.
const _: () = assert!(MAX_PARALLELISM_LIMIT <= 1 << 16);

/// The LMDB environment of one store, and the bookkeeping of its caches.
pub(crate) struct LmdbEnv<K> {
    /// `None` only while dropping (the environment closes before its files are removed).
    env: Option<Env<WithoutTls>>,
    db: Database<'static, Bytes, Bytes>,
    dir: PathBuf,
    codec: KeyCodec<K>,
    max_parallelism: u32,
    cache_entries: usize,
    /// Slots over all caches.
    cached: usize,
    /// Whether any slot may be dirty.
    dirty: bool,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl<K> std::fmt::Debug for LmdbEnv<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmdbEnv")
            .field("dir", &self.dir)
            .field("cached", &self.cached)
            .field("cache_entries", &self.cache_entries)
            .finish()
    }
}

impl<K> LmdbEnv<K> {
    /// Opens (creating) the environment in `config.local_dir`, with an empty database.
    pub(crate) fn open(
        config: &KeyedBackendConfig,
        codec: KeyCodec<K>,
    ) -> Result<Self, StateError> {
        let dir = config.local_dir.clone();
        if dir.as_os_str().is_empty() {
            return Err(StateError::Backend(
                "the LMDB state backend needs a local directory (local_dir is empty)".into(),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| {
            StateError::Backend(format!(
                "LMDB at {}: cannot create the directory: {e}",
                dir.display()
            ))
        })?;
        let map_size = match config.lmdb_map_size {
            0 => MAP_SIZE_DEFAULT,
            size => size.div_ceil(MAP_SIZE_ALIGN).saturating_mul(MAP_SIZE_ALIGN),
        };
        let mut options = EnvOpenOptions::new().read_txn_without_tls();
        options.map_size(map_size);
        #[allow(unsafe_code)]
        // SAFETY: heed marks opening unsafe because the memory map is undefined behaviour if the
        // files change underneath it. The directory is private to this operator instance and
        // attempt (`KeyedBackendConfig::local_dir`), nothing else opens or writes its files, and
        // this store removes them only after closing the environment. `NO_SYNC`/`NO_META_SYNC`
        // give up durability only (a crash may lose recent commits); LMDB is a working store
        // here and checkpoints are the durable copy.
        let opened = unsafe {
            options
                .flags(EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC)
                .open(&dir)
        };
        let env = opened.map_err(|e| backend_error(&dir, "open", e))?;
        let wtxn = env
            .write_txn()
            .map_err(|e| backend_error(&dir, "open", e))?;
        let db = env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                let db = opener.create_database::<Bytes, Bytes>(wtxn, None)?;
                // A directory left by an earlier attempt must not leak into this one.
                db.clear(wtxn)?;
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit(db))
            })
            .map_err(|e| backend_error(&dir, "create the database", e))?
            .commit()
            .ok_or_else(|| {
                StateError::Backend(format!(
                    "LMDB at {}: creating the database was aborted",
                    dir.display()
                ))
            })?;
        Ok(Self {
            env: Some(env),
            db,
            dir,
            codec,
            max_parallelism: config.max_parallelism,
            cache_entries: config.cache_entries.max(1),
            cached: 0,
            dirty: false,
            key_buf: Vec::new(),
            value_buf: Vec::new(),
        })
    }

    /// The environment directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The number of cached slots over all states.
    pub(crate) fn cached(&self) -> usize {
        self.cached
    }

    fn env(&self) -> Result<&Env<WithoutTls>, StateError> {
        self.env
            .as_ref()
            .ok_or_else(|| StateError::Backend(format!("LMDB at {}: closed", self.dir.display())))
    }

    /// Reads the stored value of `key` in state `state` (not the cache).
    fn read<S: DeserializeOwned>(
        &mut self,
        state: u32,
        name: &str,
        key: &K,
    ) -> Result<Option<S>, StateError> {
        let key_group = (self.codec.key_group)(key, self.max_parallelism);
        fill_db_key(&mut self.key_buf, &self.codec, key_group, state, name, key)?;
        let env = self.env()?;
        let rtxn = env
            .read_txn()
            .map_err(|e| backend_error(&self.dir, "read", e))?;
        let found = self
            .db
            .get(&rtxn, &self.key_buf)
            .map_err(|e| backend_error(&self.dir, "read", e))?;
        match found {
            None => Ok(None),
            Some(bytes) => decode_exact(bytes)
                .map(Some)
                .map_err(|e| corrupt(name, key_group.0, "value", e)),
        }
    }

    /// Writes the dirty slots of `tables` back in one write transaction, then marks them clean
    /// (or empties the caches, with `evict`). `tables` must be every LMDB table of the store
    /// when `evict` is set.
    fn write_back(
        &mut self,
        tables: &mut [TableRef<'_, K>],
        evict: bool,
    ) -> Result<(), StateError> {
        if self.dirty {
            let env = self.env.as_ref().ok_or_else(|| {
                StateError::Backend(format!("LMDB at {}: closed", self.dir.display()))
            })?;
            let mut txn = env
                .write_txn()
                .map_err(|e| backend_error(&self.dir, "write back", e))?;
            let mut writer = DbWriter {
                txn: &mut txn,
                db: self.db,
                codec: &self.codec,
                max_parallelism: self.max_parallelism,
                dir: &self.dir,
                key_buf: &mut self.key_buf,
                value_buf: &mut self.value_buf,
            };
            for table in tables.iter() {
                table
                    .table
                    .write_dirty(&mut writer, table.state, table.name)?;
            }
            txn.commit()
                .map_err(|e| backend_error(&self.dir, "write back", e))?;
            self.dirty = false;
        }
        for table in tables.iter_mut() {
            table.table.mark_clean(evict);
        }
        if evict {
            self.cached = 0;
        }
        Ok(())
    }

    /// Replaces the database's contents with `entries` (raw snapshot entries), in one write
    /// transaction, and forgets the caches' bookkeeping (the caller drops the tables).
    pub(crate) fn restore<'e>(
        &mut self,
        entries: impl Iterator<Item = &'e KeyedEntry>,
    ) -> Result<(), StateError> {
        let env = self.env.as_ref().ok_or_else(|| {
            StateError::Backend(format!("LMDB at {}: closed", self.dir.display()))
        })?;
        let mut txn = env
            .write_txn()
            .map_err(|e| backend_error(&self.dir, "restore", e))?;
        self.db
            .clear(&mut txn)
            .map_err(|e| backend_error(&self.dir, "restore", e))?;
        for entry in entries {
            self.key_buf.clear();
            self.key_buf
                .extend_from_slice(&(entry.key_group as u16).to_be_bytes());
            self.key_buf.extend_from_slice(&entry.state.to_be_bytes());
            self.key_buf.extend_from_slice(&entry.key);
            self.db
                .put(&mut txn, &self.key_buf, &entry.value)
                .map_err(|e| backend_error(&self.dir, "restore", e))?;
        }
        txn.commit()
            .map_err(|e| backend_error(&self.dir, "restore", e))?;
        self.cached = 0;
        self.dirty = false;
        Ok(())
    }

    /// Writes the caches back and returns a snapshot to be read from a read transaction opened
    /// now. Restored states nobody used since are in the database, so they are carried over.
    pub(crate) fn snapshot(
        &mut self,
        states: &mut [StateEntry<K>],
        now_ms: i64,
    ) -> Result<PendingKeyedSnapshot, StateError> {
        {
            let mut tables = Vec::new();
            collect_tables(states, 0, &mut tables);
            self.write_back(&mut tables, false)?;
        }
        let metas: Vec<StateMeta> = states
            .iter()
            .map(|s| StateMeta {
                name: s.name.clone(),
                type_name: s.type_name.clone(),
            })
            .collect();
        let pruners: Vec<Option<(i64, PruneBytesFn)>> = states
            .iter()
            .map(|s| match &s.body {
                StateBody::Lmdb { table, .. } => table.pruner(),
                _ => None,
            })
            .collect();
        let rtxn = self
            .env()?
            .clone()
            .static_read_txn()
            .map_err(|e| backend_error(&self.dir, "snapshot", e))?;
        let db = self.db;
        let dir = self.dir.clone();
        Ok(PendingKeyedSnapshot::Deferred(Box::new(move || {
            read_snapshot(&rtxn, db, &dir, metas, &pruners, now_ms)
        })))
    }
}

impl<K> Drop for LmdbEnv<K> {
    fn drop(&mut self) {
        // Close first (a deferred snapshot may still hold the environment open; on Unix its
        // files stay readable until it finishes).
        drop(self.env.take());
        for file in ["data.mdb", "lock.mdb"] {
            let _ = std::fs::remove_file(self.dir.join(file));
        }
        // Only if empty: never remove what this store did not create.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn backend_error(dir: &Path, what: &str, error: heed::Error) -> StateError {
    StateError::Backend(format!("LMDB at {}: {what}: {error}", dir.display()))
}

/// Fills `buf` with the database key of `key` in `state`.
fn fill_db_key<K>(
    buf: &mut Vec<u8>,
    codec: &KeyCodec<K>,
    key_group: KeyGroup,
    state: u32,
    name: &str,
    key: &K,
) -> Result<(), StateError> {
    debug_assert!(key_group.0 <= u32::from(u16::MAX));
    let mut bytes = std::mem::take(buf);
    bytes.clear();
    bytes.extend_from_slice(&(key_group.0 as u16).to_be_bytes());
    bytes.extend_from_slice(&state.to_be_bytes());
    *buf = (codec.encode)(key, bytes).map_err(|e| encode_error(name, key_group.0, "key", e))?;
    Ok(())
}

/// Splits a database key into key group, state id and encoded key.
fn split_db_key(bytes: &[u8]) -> Option<(u32, u32, &[u8])> {
    let prefix: &[u8; DB_KEY_PREFIX] = bytes.get(..DB_KEY_PREFIX)?.try_into().ok()?;
    let key_group = u16::from_be_bytes([prefix[0], prefix[1]]);
    let state = u32::from_be_bytes([prefix[2], prefix[3], prefix[4], prefix[5]]);
    Some((u32::from(key_group), state, &bytes[DB_KEY_PREFIX..]))
}

/// Reads a whole snapshot from a read transaction: entries come in database order, which is
/// the snapshot order; expired values of states with a TTL are left out.
fn read_snapshot(
    rtxn: &RoTxn<'static, WithoutTls>,
    db: Database<'static, Bytes, Bytes>,
    dir: &Path,
    states: Vec<StateMeta>,
    pruners: &[Option<(i64, PruneBytesFn)>],
    now_ms: i64,
) -> Result<KeyedStateSnapshot, StateError> {
    let mut entries = Vec::new();
    let iter = db
        .iter(rtxn)
        .map_err(|e| backend_error(dir, "snapshot", e))?;
    for item in iter {
        let (db_key, bytes) = item.map_err(|e| backend_error(dir, "snapshot", e))?;
        let (key_group, state, key) = split_db_key(db_key).ok_or_else(|| {
            StateError::Corrupt(format!(
                "LMDB at {}: a key of {} bytes has no state prefix",
                dir.display(),
                db_key.len()
            ))
        })?;
        let meta = states.get(state as usize).ok_or_else(|| {
            StateError::Corrupt(format!(
                "LMDB at {}: an entry of key group {key_group} refers to state #{state} of {}",
                dir.display(),
                states.len()
            ))
        })?;
        let value = match pruners.get(state as usize).copied().flatten() {
            None => bytes.to_vec(),
            Some((ttl_ms, prune)) => {
                match prune(bytes, now_ms, ttl_ms)
                    .map_err(|e| corrupt(&meta.name, key_group, "value", e))?
                {
                    Pruned::Keep => bytes.to_vec(),
                    Pruned::Drop => continue,
                    Pruned::Replace(live) => live,
                }
            }
        };
        entries.push(KeyedEntry {
            key_group,
            state,
            key: key.to_vec(),
            value,
        });
    }
    debug_assert!(entries.is_sorted());
    Ok(KeyedStateSnapshot { states, entries })
}

/// Writes cache slots into a write transaction.
pub(crate) struct DbWriter<'t, 'e, K> {
    txn: &'t mut RwTxn<'e>,
    db: Database<'static, Bytes, Bytes>,
    codec: &'t KeyCodec<K>,
    max_parallelism: u32,
    dir: &'t Path,
    key_buf: &'t mut Vec<u8>,
    value_buf: &'t mut Vec<u8>,
}

impl<K> DbWriter<'_, '_, K> {
    fn write<S: Serialize>(
        &mut self,
        state: u32,
        name: &str,
        key: &K,
        value: Option<&S>,
    ) -> Result<(), StateError> {
        let key_group = (self.codec.key_group)(key, self.max_parallelism);
        fill_db_key(self.key_buf, self.codec, key_group, state, name, key)?;
        match value {
            Some(value) => {
                let mut bytes = std::mem::take(self.value_buf);
                bytes.clear();
                let bytes = postcard::to_extend(value, bytes)
                    .map_err(|e| encode_error(name, key_group.0, "value", e))?;
                self.db
                    .put(self.txn, self.key_buf, &bytes)
                    .map_err(|e| backend_error(self.dir, "write back", e))?;
                *self.value_buf = bytes;
            }
            None => {
                self.db
                    .delete(self.txn, self.key_buf)
                    .map_err(|e| backend_error(self.dir, "write back", e))?;
            }
        }
        Ok(())
    }
}

/// A typed LMDB cache seen without its types (write-back and snapshots go over all states).
pub(crate) trait LmdbTableDyn<K>: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Writes the dirty slots.
    fn write_dirty(
        &self,
        writer: &mut DbWriter<'_, '_, K>,
        state: u32,
        name: &str,
    ) -> Result<(), StateError>;
    /// After a committed write-back: marks every slot clean, or drops them all.
    fn mark_clean(&mut self, evict: bool);
    /// The TTL and pruning of the state's encoded values, if it has a TTL.
    fn pruner(&self) -> Option<(i64, PruneBytesFn)>;
}

/// The typed cache of one state in the LMDB backend.
pub(crate) struct LmdbTable<K, S, C> {
    pub(crate) cache: C,
    pub(crate) expiry: Option<Expiry<S>>,
    _key: PhantomData<fn(K)>,
}

impl<K, S, C: Default> LmdbTable<K, S, C> {
    pub(crate) fn new() -> Self {
        Self {
            cache: C::default(),
            expiry: None,
            _key: PhantomData,
        }
    }
}

impl<K, S, C> LmdbTableDyn<K> for LmdbTable<K, S, C>
where
    K: Send + 'static,
    S: Serialize + Send + 'static,
    C: KeyMap<K, Slot<S>>,
{
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn write_dirty(
        &self,
        writer: &mut DbWriter<'_, '_, K>,
        state: u32,
        name: &str,
    ) -> Result<(), StateError> {
        self.cache.try_for_each(|key, slot| {
            if slot.dirty {
                writer.write(state, name, key, slot.value.as_ref())
            } else {
                Ok(())
            }
        })
    }

    fn mark_clean(&mut self, evict: bool) {
        if evict {
            self.cache.clear();
        } else {
            self.cache.for_each_mut(|_, slot| slot.dirty = false);
        }
    }

    fn pruner(&self) -> Option<(i64, PruneBytesFn)> {
        self.expiry.map(|e| (e.ttl_ms, e.prune_bytes))
    }
}

/// An LMDB table with its state id and name, for write-back.
pub(crate) struct TableRef<'t, K> {
    table: &'t mut dyn LmdbTableDyn<K>,
    state: u32,
    name: &'t str,
}

/// Adds the LMDB tables of `states` (whose first id is `first`) to `out`.
fn collect_tables<'t, K>(
    states: &'t mut [StateEntry<K>],
    first: u32,
    out: &mut Vec<TableRef<'t, K>>,
) {
    for (offset, entry) in (0u32..).zip(states.iter_mut()) {
        let StateEntry { name, body, .. } = entry;
        if let StateBody::Lmdb { table, .. } = body {
            out.push(TableRef {
                table: table.as_mut(),
                state: first + offset,
                name,
            });
        }
    }
}

/// One state of an LMDB store, resolved for a handle: its typed cache, and the rest of the
/// store for write-backs.
pub(crate) struct LmdbAccess<'a, K, S, C> {
    table: &'a mut LmdbTable<K, S, C>,
    state: u32,
    name: &'a str,
    /// The states before and after this one (ids `0..state` and `state + 1..`).
    before: &'a mut [StateEntry<K>],
    after: &'a mut [StateEntry<K>],
    env: &'a mut LmdbEnv<K>,
}

impl<'a, K, S, C> LmdbAccess<'a, K, S, C>
where
    K: Clone + Send + 'static,
    S: Clone + Serialize + DeserializeOwned + Send + 'static,
    C: KeyMap<K, Slot<S>>,
{
    pub(crate) fn new(
        table: &'a mut LmdbTable<K, S, C>,
        state: u32,
        name: &'a str,
        before: &'a mut [StateEntry<K>],
        after: &'a mut [StateEntry<K>],
        env: &'a mut LmdbEnv<K>,
    ) -> Self {
        Self {
            table,
            state,
            name,
            before,
            after,
            env,
        }
    }

    /// Makes room for one more slot: at the bound, writes every dirty slot of the store back in
    /// one transaction and empties every cache.
    fn make_room(&mut self) -> Result<(), StateError> {
        if self.env.cached < self.env.cache_entries {
            return Ok(());
        }
        let mut tables: Vec<TableRef<'_, K>> =
            Vec::with_capacity(1 + self.before.len() + self.after.len());
        tables.push(TableRef {
            table: &mut *self.table,
            state: self.state,
            name: self.name,
        });
        collect_tables(self.before, 0, &mut tables);
        collect_tables(self.after, self.state + 1, &mut tables);
        self.env.write_back(&mut tables, true)
    }

    /// Brings `key` into the cache.
    fn load(&mut self, key: &K) -> Result<(), StateError> {
        if self.table.cache.get(key).is_some() {
            return Ok(());
        }
        let value = self.env.read::<S>(self.state, self.name, key)?;
        self.make_room()?;
        self.table.cache.insert(
            key.clone(),
            Slot {
                value,
                dirty: false,
            },
        );
        self.env.cached += 1;
        Ok(())
    }

    pub(crate) fn get(&mut self, key: &K) -> Result<Option<&S>, StateError> {
        self.load(key)?;
        Ok(self
            .table
            .cache
            .get(key)
            .and_then(|slot| slot.value.as_ref()))
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Result<Option<&mut S>, StateError> {
        self.load(key)?;
        let env = &mut *self.env;
        Ok(self.table.cache.get_mut(key).and_then(|slot| {
            if slot.value.is_some() {
                slot.dirty = true;
                env.dirty = true;
            }
            slot.value.as_mut()
        }))
    }

    /// Sets (`Some`) or deletes (`None`) the value of `key`, in the cache.
    pub(crate) fn set(&mut self, key: K, value: Option<S>) -> Result<(), StateError> {
        if let Some(slot) = self.table.cache.get_mut(&key) {
            slot.value = value;
            slot.dirty = true;
        } else {
            self.make_room()?;
            self.table.cache.insert(key, Slot { value, dirty: true });
            self.env.cached += 1;
        }
        self.env.dirty = true;
        Ok(())
    }

    pub(crate) fn get_or_insert_with(
        &mut self,
        key: K,
        default: impl FnOnce() -> S,
    ) -> Result<&mut S, StateError> {
        self.load(&key)?;
        self.env.dirty = true;
        let slot = self.table.cache.get_or_insert_with(key, || Slot {
            value: None,
            dirty: true,
        });
        slot.dirty = true;
        Ok(slot.value.get_or_insert_with(default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_keys_sort_as_snapshot_entries() {
        let codec = KeyCodec::<u64>::new();
        let mut a = Vec::new();
        let mut b = Vec::new();
        fill_db_key(&mut a, &codec, KeyGroup(1), 7, "s", &300).expect("encodes");
        fill_db_key(&mut b, &codec, KeyGroup(256), 0, "s", &1).expect("encodes");
        assert!(a < b, "key group is the most significant part");
        let (group, state, key) = split_db_key(&a).expect("has a prefix");
        assert_eq!((group, state), (1, 7));
        assert_eq!(key, postcard::to_allocvec(&300u64).expect("encodes"));
        assert_eq!(split_db_key(&[0, 1, 2]), None);
    }
}
