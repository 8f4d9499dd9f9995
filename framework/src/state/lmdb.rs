//! The LMDB keyed-state backend (heed), with a bounded write-back cache in front.
//!
//! ## Design
//!
//! - **One environment per store**, in the store's private `local_dir` (created on open, its
//!   files and the directory removed on drop), with **one database for all states**. A record's
//!   key is `key group (u16, big-endian) ++ state id ++ postcard(key)`, the state id in one byte
//!   below 255, else `0xff` and a big-endian u32 (see [`push_db_key_prefix`]), so the database's
//!   byte order is the snapshot order `(key group, state, key)`; its value is `postcard(value)`
//!   in the state's stored form (TTL stamp included, see `ttl.rs`). Keys compare with
//!   [`DbKeyOrder`]: LMDB's byte order, a word at a time.
//! - **No durability is asked of LMDB**: the environment is opened with `NO_SYNC` and
//!   `NO_META_SYNC`. It is a working store that spills state beyond memory; checkpoint files are
//!   the durable copy, and a failed subtask restores from them into a fresh directory, never from
//!   what LMDB left behind.
//! - **A typed write-back cache** per state (`cache_entries` entries in total across states):
//!   reads hit the cache; a miss reads LMDB and fills the cache; writes only touch the cache.
//!   Misses read through **one read transaction kept open** between write transactions
//!   (`LmdbEnv::reader`; opening one per miss cost more than the read). When the cache is full,
//!   every dirty entry of every state is encoded, **sorted in database order** and written back
//!   in **one** write transaction through one cursor, and the cache is emptied. Nothing writes a
//!   record at a time.
//! - **Snapshots** open a `'static`, `Send` read transaction (`Env::static_read_txn` on an
//!   environment opened with `read_txn_without_tls`) and encode the dirty cache slots into a
//!   sorted overlay (newer values and deletions), and return both as a [`FrozenKeyedState`],
//!   read out later while processing goes on (LMDB's MVCC keeps the view frozen at the
//!   barrier) as one merge in database order. The cache is not written back at the barrier
//!   (an extra write transaction copies most leaf pages). The checkpoint writer copies the
//!   records' bytes straight into the state file: database keys split into key group, state
//!   and key, values as stored (TTL states pruned).
//!
//! ## Invariants
//!
//! - A `RwTxn` (not `Send`) never outlives the function that opened it.
//! - The kept reader is closed before every write transaction (write-back, restore) and reopened
//!   by the next miss, so a miss always sees the last commit.
//! - A dirty cache slot is newer than LMDB; a clean one equals LMDB (`None`: absent).
//! - `LmdbEnv::cached` is the number of slots over all caches of the store.
//! - Failures (a full map, I/O, an over-long key) are [`StateError::Backend`] naming the
//!   directory; undecodable bytes are [`StateError::Corrupt`] naming the state and key group.
//!   Keys must encode to at most 504 bytes (LMDB's key limit, 511, minus a prefix of up to 7
//!   bytes).

use std::any::Any;
use std::cmp::Ordering;
use std::marker::PhantomData;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{
    CommitOrAbort, Comparator, Database, Env, EnvFlags, EnvOpenOptions, PutFlags, RoTxn, WithoutTls,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::backend::KeyedBackendConfig;
use super::codec::{KeyCodec, decode_exact, key_word};
use super::error::{StateError, corrupt, encode_error};
use super::key_group::{KeyGroup, KeyGroupRange, MAX_PARALLELISM_LIMIT};
use super::key_map::KeyMap;
use super::snapshot::{
    FrozenEntries, FrozenKeyedState, KeyedEntry, KeyedEntryRef, PendingKeyedSnapshot, StateMeta,
};
use super::ttl::{Expiry, PruneBytesFn, Pruned};

/// The map size when the configuration leaves it at 0: address space only, LMDB grows the file
/// as it fills.
const MAP_SIZE_DEFAULT: usize = 1 << 30;

/// Map sizes are rounded up to this, a multiple of every common page size (4, 16, 64 KiB).
const MAP_SIZE_ALIGN: usize = 64 << 10;

/// The first byte of a state id of five bytes in a database key (smaller ids take one byte).
const STATE_ID_WIDE: u8 = 0xff;

// Key groups are stored as u16.
const _: () = assert!(MAX_PARALLELISM_LIMIT <= 1 << 16);

/// The database of all states: raw keys and values, keys in [`DbKeyOrder`].
pub(crate) type Db = Database<'static, Bytes, Bytes, DbKeyOrder>;

/// The order of database keys: LMDB's default (lexicographic bytes), compared eight bytes at a
/// time in place of LMDB's `memcmp` call per key, which the searches of every read and write
/// spend much of their time in.
pub(crate) enum DbKeyOrder {}

impl Comparator for DbKeyOrder {
    #[inline]
    fn compare(mut a: &[u8], mut b: &[u8]) -> Ordering {
        loop {
            let (x, y) = (key_word(a), key_word(b));
            if x != y {
                return x.cmp(&y);
            }
            // Equal words: if either side ended within them, the shorter one is a prefix of the
            // other (its padding zeros matched real zeros).
            if a.len() <= 8 || b.len() <= 8 {
                return a.len().cmp(&b.len());
            }
            a = &a[8..];
            b = &b[8..];
        }
    }
}

/// The LMDB environment of one store, and the bookkeeping of its caches.
pub(crate) struct LmdbEnv<K> {
    /// `None` only while dropping (the environment closes before its files are removed).
    env: Option<Env<WithoutTls>>,
    /// The read transaction cache misses read through, kept open between write transactions
    /// (opening one per miss costs more than the read). Closed before every write transaction
    /// and reopened by the next read, so it always sees the last commit.
    reader: Option<RoTxn<'static, WithoutTls>>,
    db: Db,
    dir: PathBuf,
    codec: KeyCodec<K>,
    max_parallelism: u32,
    cache_entries: usize,
    /// Slots over all caches.
    cached: usize,
    /// Whether any slot may be dirty.
    dirty: bool,
    key_buf: Vec<u8>,
    /// The dirty slots of a write-back, encoded (kept for its buffers).
    batch: WriteBatch,
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
        let (env, db, dir) = open_env(config)?;
        Ok(Self {
            env: Some(env),
            reader: None,
            db,
            dir,
            codec,
            max_parallelism: config.max_parallelism,
            cache_entries: config.cache_entries.max(1),
            cached: 0,
            dirty: false,
            key_buf: Vec::new(),
            batch: WriteBatch::default(),
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

    /// Reads the stored value of `key` in state `state` (not the cache), through the kept read
    /// transaction (opened here if closed).
    fn read<S: DeserializeOwned>(
        &mut self,
        state: u32,
        name: &str,
        key: &K,
    ) -> Result<Option<S>, StateError> {
        let key_group = (self.codec.key_group)(key, self.max_parallelism);
        fill_db_key(&mut self.key_buf, &self.codec, key_group, state, name, key)?;
        let rtxn = match &self.reader {
            Some(rtxn) => rtxn,
            None => {
                let rtxn = self
                    .env()?
                    .clone()
                    .static_read_txn()
                    .map_err(|e| backend_error(&self.dir, "read", e))?;
                self.reader.insert(rtxn)
            }
        };
        let found = self
            .db
            .get(rtxn, &self.key_buf)
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
            // The reader must see what is written back: close it now (the next read reopens it
            // after the commit). Closed before the write transaction begins, it also leaves the
            // writer free to reuse every page freed so far.
            self.reader = None;
            self.batch.clear();
            let mut writer = BatchWriter {
                codec: &self.codec,
                max_parallelism: self.max_parallelism,
                batch: &mut self.batch,
            };
            for table in tables.iter() {
                table
                    .table
                    .write_dirty(&mut writer, table.state, table.name)?;
            }
            self.batch.sort();
            let env = self.env.as_ref().ok_or_else(|| {
                StateError::Backend(format!("LMDB at {}: closed", self.dir.display()))
            })?;
            write_sorted(env, self.db, &self.batch)
                .map_err(|e| backend_error(&self.dir, "write back", e))?;
            self.dirty = false;
            self.batch.trim();
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
        // The reader must not see the old contents after the restore.
        self.reader = None;
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
            push_db_key_prefix(&mut self.key_buf, entry.key_group, entry.state);
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

    /// Returns a snapshot to be read later from a read transaction opened now, with the dirty
    /// cache slots encoded on top of it (the database plus this overlay is the state at the
    /// barrier). Restored states nobody used since are in the database, so they are carried
    /// over.
    ///
    /// The cache is not written back here: a write transaction copies and writes out nearly
    /// every leaf page it touches, and at a million keys a write-back's random keys touch most
    /// leaves, so an extra one per checkpoint cost about a tenth of the subtask's time. The
    /// dirty slots stay dirty and go to the database with the next write-back as usual.
    ///
    /// `metas` are the store's states by id, `tables` its LMDB tables.
    pub(crate) fn snapshot(
        &mut self,
        metas: Vec<StateMeta>,
        tables: &[TableRef<'_, K>],
        now_ms: i64,
    ) -> Result<PendingKeyedSnapshot, StateError> {
        let mut overlay = WriteBatch::default();
        if self.dirty {
            let mut writer = BatchWriter {
                codec: &self.codec,
                max_parallelism: self.max_parallelism,
                batch: &mut overlay,
            };
            for table in tables {
                table
                    .table
                    .write_dirty(&mut writer, table.state, table.name)?;
            }
            overlay.sort();
        }
        let mut pruners: Vec<Option<(i64, PruneBytesFn)>> = vec![None; metas.len()];
        for table in tables {
            if let Some(pruner) = pruners.get_mut(table.state as usize) {
                *pruner = table.table.pruner();
            }
        }
        let rtxn = self
            .env()?
            .clone()
            .static_read_txn()
            .map_err(|e| backend_error(&self.dir, "snapshot", e))?;
        let len = self
            .db
            .len(&rtxn)
            .map_err(|e| backend_error(&self.dir, "snapshot", e))?;
        let frozen = FrozenLmdb {
            rtxn,
            db: self.db,
            dir: self.dir.clone(),
            names: metas.iter().map(|m| m.name.clone()).collect(),
            pruners,
            now_ms,
            len: usize::try_from(len)
                .unwrap_or(usize::MAX)
                .saturating_add(overlay.entries.len()),
            overlay,
        };
        Ok(PendingKeyedSnapshot::Frozen(FrozenKeyedState::new(
            metas,
            Box::new(frozen),
        )))
    }
}

impl<K> LmdbEnv<K> {
    /// The keys holding a live value of state `state`, in database order: the dirty caches are
    /// written back first (so the database holds every value), then each key group's range of
    /// `key group ++ state id` is scanned through the kept reader. Values expired at `now_ms`
    /// under `pruner` are skipped.
    ///
    /// `tables` are every LMDB table of the store, `name` the state's name.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn live_keys(
        &mut self,
        tables: &mut [TableRef<'_, K>],
        name: &str,
        state: u32,
        key_groups: KeyGroupRange,
        pruner: Option<(i64, PruneBytesFn)>,
        now_ms: i64,
    ) -> Result<Vec<K>, StateError> {
        self.write_back(tables, false)?;
        let rtxn = match &self.reader {
            Some(rtxn) => rtxn,
            None => {
                let rtxn = self
                    .env()?
                    .clone()
                    .static_read_txn()
                    .map_err(|e| backend_error(&self.dir, "read", e))?;
                self.reader.insert(rtxn)
            }
        };
        let mut keys = Vec::new();
        let mut prefix = Vec::new();
        for key_group in key_groups.start..key_groups.end {
            prefix.clear();
            push_db_key_prefix(&mut prefix, key_group, state);
            let range = (Bound::Included(&prefix[..]), Bound::Unbounded);
            let iter = self
                .db
                .range(rtxn, &range)
                .map_err(|e| backend_error(&self.dir, "scan", e))?;
            for item in iter {
                let (db_key, value) = item.map_err(|e| backend_error(&self.dir, "scan", e))?;
                let Some(key) = db_key.strip_prefix(&prefix[..]) else {
                    break;
                };
                if let Some((ttl_ms, prune)) = pruner
                    && prune(value, now_ms, ttl_ms)
                        .map_err(|e| corrupt(name, key_group, "value", e))?
                        == Pruned::Drop
                {
                    continue;
                }
                keys.push(
                    (self.codec.decode)(key).map_err(|e| corrupt(name, key_group, "key", e))?,
                );
            }
        }
        Ok(keys)
    }
}

impl<K> Drop for LmdbEnv<K> {
    fn drop(&mut self) {
        close_env(self.env.take(), self.reader.take(), &self.dir);
    }
}

/// Opens (creating) an LMDB environment in `config.local_dir` with one empty database in
/// [`DbKeyOrder`] (anything an earlier attempt left there is cleared), sized by
/// `config.lmdb_map_size`, without durability (see the module's design). Returns the
/// environment, the database and the directory.
pub(crate) fn open_env(
    config: &KeyedBackendConfig,
) -> Result<(Env<WithoutTls>, Db, PathBuf), StateError> {
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
    // its owner removes them only after closing the environment. `NO_SYNC`/`NO_META_SYNC`
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
            let db = opener
                .database_options()
                .types::<Bytes, Bytes>()
                .key_comparator::<DbKeyOrder>()
                .create(wtxn)?;
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
    Ok((env, db, dir))
}

/// Closes `env` (and `reader`) and removes the environment's files and its directory (only if
/// then empty: never what its owner did not create).
pub(crate) fn close_env(
    env: Option<Env<WithoutTls>>,
    reader: Option<RoTxn<'static, WithoutTls>>,
    dir: &Path,
) {
    // Close first (a deferred snapshot may still hold the environment open; on Unix its
    // files stay readable until it finishes). The kept reader holds it open too.
    drop(reader);
    drop(env);
    for file in ["data.mdb", "lock.mdb"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    let _ = std::fs::remove_dir(dir);
}

pub(crate) fn backend_error(dir: &Path, what: &str, error: heed::Error) -> StateError {
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
    push_db_key_prefix(&mut bytes, key_group.0, state);
    *buf = (codec.encode)(key, bytes).map_err(|e| encode_error(name, key_group.0, "key", e))?;
    Ok(())
}

/// Writes a sorted batch in one write transaction. Deletions go first (keys are unique, so
/// their order against the puts does not matter), then the puts through one cursor: a cursor
/// put first looks for its key in the leaf page the cursor is on, so a sorted run of puts
/// searches from the root only when it moves on to another leaf, and copies each page it
/// touches once.
fn write_sorted(env: &Env<WithoutTls>, db: Db, batch: &WriteBatch) -> Result<(), heed::Error> {
    let bytes = &batch.bytes;
    let mut txn = env.write_txn()?;
    for entry in batch.entries.iter().filter(|entry| entry.is_delete()) {
        db.delete(&mut txn, entry.key(bytes))?;
    }
    {
        let mut cursor = db.iter_mut(&mut txn)?;
        for entry in &batch.entries {
            let Some(value) = entry.value(bytes) else {
                continue;
            };
            #[allow(unsafe_code)]
            // SAFETY: heed marks cursor writes unsafe because a key or value borrowed from the
            // database must not be alive across one; the key and value here borrow the batch's
            // own bytes, and nothing read through this transaction is held. With no flags this
            // is `mdb_cursor_put(.., 0)`: an ordinary put (insert or replace) that starts its
            // search from the cursor's position.
            unsafe {
                cursor.put_current_with_options::<Bytes>(PutFlags::empty(), entry.key(bytes), value)
            }?;
        }
    }
    txn.commit()
}

/// Appends the prefix of a database key: the key group (u16, big-endian), then the state id
/// in one byte below [`STATE_ID_WIDE`], else [`STATE_ID_WIDE`] and the id as a big-endian u32.
/// Both parts sort numerically and neither is a prefix of another, so database keys sort by
/// `(key group, state, key)`.
fn push_db_key_prefix(buf: &mut Vec<u8>, key_group: u32, state: u32) {
    debug_assert!(key_group <= u32::from(u16::MAX));
    buf.extend_from_slice(&(key_group as u16).to_be_bytes());
    match u8::try_from(state) {
        Ok(small) if small < STATE_ID_WIDE => buf.push(small),
        _ => {
            buf.push(STATE_ID_WIDE);
            buf.extend_from_slice(&state.to_be_bytes());
        }
    }
}

/// Splits a database key into key group, state id and encoded key.
fn split_db_key(bytes: &[u8]) -> Option<(u32, u32, &[u8])> {
    let (&[group_high, group_low, first], rest) = bytes.split_first_chunk::<3>()?;
    let key_group = u32::from(u16::from_be_bytes([group_high, group_low]));
    if first < STATE_ID_WIDE {
        return Some((key_group, u32::from(first), rest));
    }
    let (wide, rest) = rest.split_first_chunk::<4>()?;
    Some((key_group, u32::from_be_bytes(*wide), rest))
}

/// An LMDB store's contents frozen at a barrier: a read transaction opened then, and the dirty
/// cache slots of that moment (newer values and deletions, sorted in database order), read
/// out later (off the data path) as one merge in database order, which is the snapshot order.
/// Expired values of states with a TTL are left out or pruned.
struct FrozenLmdb {
    rtxn: RoTxn<'static, WithoutTls>,
    db: Db,
    dir: PathBuf,
    /// The state names, for errors.
    names: Vec<String>,
    pruners: Vec<Option<(i64, PruneBytesFn)>>,
    now_ms: i64,
    /// The number of records when frozen, plus the overlay's entries.
    len: usize,
    /// The dirty cache slots at the barrier, encoded and sorted: they win over the database.
    overlay: WriteBatch,
}

impl FrozenLmdb {
    /// Visits the record `db_key -> bytes` (pruned under its state's TTL).
    fn visit(
        &self,
        db_key: &[u8],
        bytes: &[u8],
        visit: &mut dyn FnMut(KeyedEntryRef<'_>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let dir = &self.dir;
        let (key_group, state, key) = split_db_key(db_key).ok_or_else(|| {
            StateError::Corrupt(format!(
                "LMDB at {}: a key of {} bytes has no state prefix",
                dir.display(),
                db_key.len()
            ))
        })?;
        let name = self.names.get(state as usize).ok_or_else(|| {
            StateError::Corrupt(format!(
                "LMDB at {}: an entry of key group {key_group} refers to state #{state} of {}",
                dir.display(),
                self.names.len()
            ))
        })?;
        let entry = |value| KeyedEntryRef {
            key_group,
            state,
            key,
            value,
        };
        match self.pruners.get(state as usize).copied().flatten() {
            None => visit(entry(bytes)),
            Some((ttl_ms, prune)) => match prune(bytes, self.now_ms, ttl_ms)
                .map_err(|e| corrupt(name, key_group, "value", e))?
            {
                Pruned::Keep => visit(entry(bytes)),
                Pruned::Drop => Ok(()),
                Pruned::Replace(live) => visit(entry(&live)),
            },
        }
    }
}

impl FrozenEntries for FrozenLmdb {
    fn len_hint(&self) -> usize {
        self.len
    }

    fn read(
        self: Box<Self>,
        visit: &mut dyn FnMut(KeyedEntryRef<'_>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let dir = &self.dir;
        let bytes = &self.overlay.bytes;
        let mut overlay = self.overlay.entries.iter().peekable();
        let iter = self
            .db
            .iter(&self.rtxn)
            .map_err(|e| backend_error(dir, "snapshot", e))?;
        for item in iter {
            let (db_key, stored) = item.map_err(|e| backend_error(dir, "snapshot", e))?;
            // Overlay entries before this record: keys the database does not have yet.
            while let Some(newer) =
                overlay.next_if(|e| DbKeyOrder::compare(e.key(bytes), db_key) == Ordering::Less)
            {
                if let Some(value) = newer.value(bytes) {
                    self.visit(newer.key(bytes), value, visit)?;
                }
            }
            // The same key: the overlay's value, or nothing for a deletion.
            if let Some(newer) = overlay.next_if(|e| e.key(bytes) == db_key) {
                if let Some(value) = newer.value(bytes) {
                    self.visit(db_key, value, visit)?;
                }
                continue;
            }
            self.visit(db_key, stored, visit)?;
        }
        for newer in overlay {
            if let Some(value) = newer.value(bytes) {
                self.visit(newer.key(bytes), value, visit)?;
            }
        }
        Ok(())
    }
}

/// The dirty slots of a write-back, encoded: database keys and values in one buffer, and an
/// entry per slot, to be sorted in database order.
#[derive(Debug, Default)]
struct WriteBatch {
    bytes: Vec<u8>,
    entries: Vec<BatchEntry>,
}

/// One slot in a [`WriteBatch`]: the database key at `start..key_end` of its bytes, the value
/// at `key_end..end` (`end` is `usize::MAX` for a deletion).
#[derive(Debug, Clone, Copy)]
struct BatchEntry {
    /// The key's first eight bytes as a word (see [`key_word`]): sorts as the key, up to ties.
    word: u64,
    start: usize,
    key_end: usize,
    end: usize,
}

/// A write-back batch holding more than this many bytes does not keep its buffers.
const BATCH_BYTES_KEPT: usize = 64 << 20;

impl WriteBatch {
    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    /// Drops buffers grown beyond [`BATCH_BYTES_KEPT`].
    fn trim(&mut self) {
        if self.bytes.capacity() > BATCH_BYTES_KEPT {
            *self = Self::default();
        }
    }

    /// Sorts the entries in database order: by their first key word (integers sort fast),
    /// then runs of equal words by the whole key.
    fn sort(&mut self) {
        self.entries.sort_unstable_by_key(|entry| entry.word);
        let bytes = &self.bytes;
        for run in self.entries.chunk_by_mut(|a, b| a.word == b.word) {
            if run.len() > 1 {
                run.sort_unstable_by(|a, b| DbKeyOrder::compare(a.key(bytes), b.key(bytes)));
            }
        }
    }
}

impl BatchEntry {
    fn is_delete(&self) -> bool {
        self.end == usize::MAX
    }

    fn key<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        &bytes[self.start..self.key_end]
    }

    /// The value, `None` for a deletion.
    fn value<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        (!self.is_delete()).then(|| &bytes[self.key_end..self.end])
    }
}

/// Encodes dirty cache slots into a write-back batch.
pub(crate) struct BatchWriter<'t, K> {
    codec: &'t KeyCodec<K>,
    max_parallelism: u32,
    batch: &'t mut WriteBatch,
}

impl<K> BatchWriter<'_, K> {
    fn write<S: Serialize>(
        &mut self,
        state: u32,
        name: &str,
        key: &K,
        value: Option<&S>,
    ) -> Result<(), StateError> {
        let key_group = (self.codec.key_group)(key, self.max_parallelism);
        let mut bytes = std::mem::take(&mut self.batch.bytes);
        let start = bytes.len();
        push_db_key_prefix(&mut bytes, key_group.0, state);
        bytes = (self.codec.encode)(key, bytes)
            .map_err(|e| encode_error(name, key_group.0, "key", e))?;
        let key_end = bytes.len();
        if let Some(value) = value {
            bytes = postcard::to_extend(value, bytes)
                .map_err(|e| encode_error(name, key_group.0, "value", e))?;
        }
        let end = if value.is_some() {
            bytes.len()
        } else {
            usize::MAX
        };
        self.batch.entries.push(BatchEntry {
            word: key_word(&bytes[start..key_end]),
            start,
            key_end,
            end,
        });
        self.batch.bytes = bytes;
        Ok(())
    }
}

/// A typed LMDB cache seen without its types (write-back and snapshots go over all states).
pub(crate) trait LmdbTableDyn<K>: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Encodes the dirty slots into a write-back batch.
    fn write_dirty(
        &self,
        writer: &mut BatchWriter<'_, K>,
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
        writer: &mut BatchWriter<'_, K>,
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

/// A cached LMDB value: `None` is a known absence (or a deletion, when dirty).
#[derive(Debug, Clone)]
pub(crate) struct Slot<S> {
    pub(crate) value: Option<S>,
    pub(crate) dirty: bool,
}

/// An LMDB table with its state id and name, for write-back and snapshots.
pub(crate) struct TableRef<'t, K> {
    table: &'t mut dyn LmdbTableDyn<K>,
    state: u32,
    name: &'t str,
}

impl<'t, K> TableRef<'t, K> {
    /// The table of state `state`, named `name`.
    pub(crate) fn new(table: &'t mut dyn LmdbTableDyn<K>, state: u32, name: &'t str) -> Self {
        Self { table, state, name }
    }
}

/// The LMDB tables of a store's other states, which a write-back at the cache bound writes too
/// (the store's list of states lives above this file, in `table.rs`).
pub(crate) trait OtherTables<K> {
    /// How many states there are (an upper bound on the tables [`collect`](Self::collect)
    /// adds).
    fn len(&self) -> usize;
    /// Adds the other states' LMDB tables to `out`.
    fn collect<'t>(&'t mut self, out: &mut Vec<TableRef<'t, K>>);
}

/// One state of an LMDB store, resolved for a handle: its typed cache, and the rest of the
/// store (`O`) for write-backs.
pub(crate) struct LmdbAccess<'a, K, S, C, O> {
    table: &'a mut LmdbTable<K, S, C>,
    state: u32,
    name: &'a str,
    /// The other states.
    others: O,
    env: &'a mut LmdbEnv<K>,
}

impl<'a, K, S, C, O> LmdbAccess<'a, K, S, C, O>
where
    K: Clone + Send + 'static,
    S: Clone + Serialize + DeserializeOwned + Send + 'static,
    C: KeyMap<K, Slot<S>>,
    O: OtherTables<K>,
{
    pub(crate) fn new(
        table: &'a mut LmdbTable<K, S, C>,
        state: u32,
        name: &'a str,
        others: O,
        env: &'a mut LmdbEnv<K>,
    ) -> Self {
        Self {
            table,
            state,
            name,
            others,
            env,
        }
    }

    /// Makes room for one more slot: at the bound, writes every dirty slot of the store back in
    /// one transaction and empties every cache.
    fn make_room(&mut self) -> Result<(), StateError> {
        if self.env.cached < self.env.cache_entries {
            return Ok(());
        }
        let mut tables: Vec<TableRef<'_, K>> = Vec::with_capacity(1 + self.others.len());
        tables.push(TableRef {
            table: &mut *self.table,
            state: self.state,
            name: self.name,
        });
        self.others.collect(&mut tables);
        self.env.write_back(&mut tables, true)
    }

    /// The cache slot of `key` (read from LMDB through the kept reader on a miss), and the
    /// environment to flag a write in.
    fn slot(&mut self, key: &K) -> Result<(&mut Slot<S>, &mut LmdbEnv<K>), StateError> {
        if self.table.cache.get(key).is_none() {
            let value = self.env.read::<S>(self.state, self.name, key)?;
            self.make_room()?;
            self.env.cached += 1;
            let slot = self.table.cache.get_or_insert_with(key.clone(), || Slot {
                value,
                dirty: false,
            });
            return Ok((slot, &mut *self.env));
        }
        match self.table.cache.get_mut(key) {
            Some(slot) => Ok((slot, &mut *self.env)),
            None => unreachable!("a cached key is in the cache"),
        }
    }

    pub(crate) fn get(&mut self, key: &K) -> Result<Option<&S>, StateError> {
        Ok(self.slot(key)?.0.value.as_ref())
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Result<Option<&mut S>, StateError> {
        let (slot, env) = self.slot(key)?;
        if slot.value.is_some() {
            slot.dirty = true;
            env.dirty = true;
        }
        Ok(slot.value.as_mut())
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
        let (slot, env) = self.slot(&key)?;
        slot.dirty = true;
        env.dirty = true;
        Ok(slot.value.get_or_insert_with(default))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::state::test_support::lmdb_config;
    use crate::state::{KeyedStateSnapshot, KeyedStateStore, PendingKeyedSnapshot};

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
        assert_eq!(split_db_key(&[0, 1]), None);
        assert_eq!(split_db_key(&[0, 1, STATE_ID_WIDE, 0, 0]), None);
    }

    #[test]
    fn state_ids_of_every_width_round_trip_in_order() {
        let states = [0, 1, 200, 254, 255, 256, 70_000, u32::MAX - 1, u32::MAX];
        let keys: [&[u8]; 3] = [&[], &[0], &[0xff, 3]];
        let mut tuples = Vec::new();
        let mut encoded = Vec::new();
        for group in [0, 1, 300, u32::from(u16::MAX)] {
            for state in states {
                for key in keys {
                    let mut bytes = Vec::new();
                    push_db_key_prefix(&mut bytes, group, state);
                    bytes.extend_from_slice(key);
                    assert_eq!(split_db_key(&bytes), Some((group, state, key)));
                    tuples.push((group, state, key));
                    encoded.push(bytes);
                }
            }
        }
        assert!(tuples.is_sorted());
        assert!(
            encoded.is_sorted(),
            "database keys sort as (key group, state, key)"
        );
    }

    proptest! {
        /// The database comparator is plain byte order.
        #[test]
        fn the_key_order_is_byte_order(
            a in proptest::collection::vec(any::<u8>(), 0..20),
            b in proptest::collection::vec(any::<u8>(), 0..20),
            common in proptest::collection::vec(0u8..3, 0..12),
        ) {
            prop_assert_eq!(DbKeyOrder::compare(&a, &b), a.cmp(&b));
            // With a shared prefix, so that equal words are common.
            let (x, y) = ([&common[..], &a].concat(), [&common[..], &b].concat());
            prop_assert_eq!(DbKeyOrder::compare(&x, &y), x.cmp(&y));
            prop_assert_eq!(DbKeyOrder::compare(&x, &common), x.cmp(&common));
            prop_assert_eq!(DbKeyOrder::compare(&x, &x), std::cmp::Ordering::Equal);
        }
    }

    fn snapshot_of(store: &mut KeyedStateStore<u64>) -> KeyedStateSnapshot {
        store
            .snapshot(0)
            .and_then(PendingKeyedSnapshot::complete)
            .expect("snapshot")
    }

    /// Write-backs of thousands of entries whose first eight database bytes tie (strings with a
    /// common prefix), with deletions, read back through the kept reader.
    #[test]
    fn large_write_backs_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = lmdb_config(&dir.path().join("s"), 3_000);
        let mut lmdb = KeyedStateStore::<String>::open(config).expect("opens");
        let mut memory = KeyedStateStore::<String>::default();
        let key = |i: u64| format!("key-{:06}", i.wrapping_mul(7_919) % 10_000);
        for round in 0..3u64 {
            for store in [&mut lmdb, &mut memory] {
                let mut table = store.value_table::<u64>("t").expect("table");
                for i in 0..10_000 {
                    *table.get_or_insert_with(key(i), || 0).expect("entry") += i + round;
                    if i % 97 == 0 {
                        table.remove(&key(i / 2)).expect("remove");
                    }
                }
            }
            assert!(lmdb.entries_in_memory() <= 3_000);
        }
        let complete = |store: &mut KeyedStateStore<String>| {
            store
                .snapshot(0)
                .and_then(PendingKeyedSnapshot::complete)
                .expect("snapshot")
        };
        let expected = complete(&mut memory);
        assert_eq!(complete(&mut lmdb), expected);
        let mut lmdb_table = lmdb.value_table::<u64>("t").expect("table");
        let mut memory_table = memory.value_table::<u64>("t").expect("table");
        for i in (0..10_000).rev() {
            assert_eq!(
                lmdb_table.get(&key(i)).expect("get").copied(),
                memory_table.get(&key(i)).expect("get").copied()
            );
        }
    }

    /// A snapshot is the database with the dirty cache laid over it: updates and deletions of
    /// written-back keys, keys only in the cache, TTL values expired in either; later writes
    /// do not reach it, and the cache stays dirty until its next write-back.
    #[test]
    fn snapshots_lay_the_dirty_cache_over_the_database() {
        use crate::state::test_support::Ctx;
        use crate::state::{StateTtlConfig, ValueState};
        let dir = tempfile::tempdir().expect("temp dir");
        let value = ValueState::<u64>::new("value");
        let ttl = ValueState::<u64>::new("ttl").with_ttl(StateTtlConfig::new(100));
        let mut lmdb = Ctx::lmdb(0u64, &dir.path().join("s"), 16);
        let mut memory = Ctx::memory(0u64);
        for ctx in [&mut lmdb, &mut memory] {
            // Written back: keys 0..40 (the cache holds 16).
            for key in 0..40 {
                ctx.key = key;
                ctx.now = 0;
                value.update(ctx, key);
                ttl.update(ctx, key);
            }
            // Then, in the cache only: an update and a deletion of written-back keys, a new key,
            // a TTL value stamped late.
            ctx.now = 90;
            for (key, change) in [(1, Some(100)), (2, None), (50, Some(500))] {
                ctx.key = key;
                match change {
                    Some(v) => value.update(ctx, v),
                    None => value.clear(ctx),
                }
            }
            ctx.key = 3;
            ttl.update(ctx, 3);
        }
        assert!(lmdb.store.entries_in_memory() <= 16);
        let frozen = lmdb.store.snapshot(120).expect("snapshot");
        // Processing goes on: write-backs and more changes after the barrier.
        for key in 0..60 {
            lmdb.key = key;
            value.update(&mut lmdb, 7);
        }
        let expected = snapshot_of_at(&mut memory.store, 120);
        let frozen = frozen.complete().expect("reads");
        assert_eq!(frozen, expected);
        // At 120 only the late TTL value is live.
        let ttl_index = frozen.state_index("ttl").expect("ttl");
        assert_eq!(
            frozen
                .entries
                .iter()
                .filter(|e| e.state == ttl_index)
                .count(),
            1
        );
        assert!(lmdb.errors.is_empty() && memory.errors.is_empty());
    }

    fn snapshot_of_at(store: &mut KeyedStateStore<u64>, now_ms: i64) -> KeyedStateSnapshot {
        store
            .snapshot(now_ms)
            .and_then(PendingKeyedSnapshot::complete)
            .expect("snapshot")
    }

    /// Restoring into a used store replaces what reads see, even with a reader kept open.
    #[test]
    fn a_restore_replaces_what_the_kept_reader_saw() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut source = KeyedStateStore::<u64>::default();
        source
            .value_table::<u64>("t")
            .and_then(|mut t| t.insert(1, 99))
            .expect("insert");
        let snapshot = snapshot_of(&mut source);

        let mut store =
            KeyedStateStore::<u64>::open(lmdb_config(&dir.path().join("s"), 4)).expect("opens");
        {
            let mut table = store.value_table::<u64>("t").expect("table");
            for key in 0..10 {
                table.insert(key, key).expect("insert");
            }
            // Key 1 was evicted: this reads LMDB, opening the kept reader.
            assert_eq!(table.get(&1).expect("get"), Some(&1));
            assert_eq!(table.get(&2).expect("get"), Some(&2));
        }
        store.restore(snapshot).expect("restores");
        let mut table = store.value_table::<u64>("t").expect("table");
        assert_eq!(table.get(&1).expect("get"), Some(&99));
        assert_eq!(table.get(&2).expect("get"), None);
    }
}
