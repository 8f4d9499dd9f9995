//! Timers in LMDB: where a keyed operator's timers live when the job's state backend is LMDB
//! (Flink's RocksDB timer service, `state.backend.rocksdb.timer-service.factory: ROCKSDB`).
//!
//! [`TimerService`](super::TimerService) keeps its timers in two `BTreeSet`s with the memory
//! backend. With LMDB it keeps them here, so that a job with millions of pending timers (one
//! per key and window, one per buffered join timestamp) holds only a bounded part of them in
//! memory. Behaviour is the same; so are the checkpoint entries, byte for byte.
//!
//! ## Design
//!
//! - **One environment per timer service**, in a directory of its own beside the operator's
//!   state (`<dir>-timers`), opened as the keyed stores' are (`state::lmdb::open_env`: no
//!   durability asked, cleared on open, removed on drop), with one database for both domains.
//! - **Keys sort in firing order.** A timer's database key is
//!   `domain (1 byte) ++ timestamp (8 bytes, big-endian, sign bit flipped) ++ mc(key) ++
//!   mc(namespace)`, where `mc` is the [memcomparable](https://docs.rs/memcomparable) encoding:
//!   its bytes compare as derived `Ord` compares values (integers, strings, tuples, structs
//!   field by field, enums by variant, `Option`, sequences), and it is prefix-free, so
//!   concatenations compare as tuples. The database's byte order is therefore the heap's
//!   `(timestamp, key, namespace)` order for every key with a derived `Ord`, and both backends
//!   fire ties in the same order. (A key type whose hand-written `Ord` disagrees with its
//!   fields' order fires its ties in field order here.) A domain's timers are one range scan.
//! - **Values** are `key group (u16, big-endian) ++ postcard(key) ++ postcard(namespace)`: a
//!   fired timer decodes from postcard, and a checkpoint entry's key, the heap's
//!   `postcard((domain, timestamp, key, namespace))`, is the domain byte, the timestamp's
//!   varint and the value's tail, copied without decoding anything.
//! - **A head per domain** (as Flink's `RocksDBCachingPriorityQueueSet`): the domain's first
//!   timers in firing order, at most `head_capacity` of them, and whether they are all of them.
//!   Peeks and pops read the head; when it runs empty while more timers are stored, one range
//!   scan refills it. A new timer earlier than the head's last goes into the head too (its last
//!   drops out when it is full: it is still stored), so the head stays a prefix.
//! - **Writes are batched**: registrations, deletions and pops go to one hash map of pending
//!   puts and deletes (a lookup there is one hash, where an ordered map of tens of thousands
//!   of keys cost a few hundred nanoseconds of comparisons per registration), sorted and
//!   written in one write transaction when it holds `pending_limit` entries
//!   or before a refill reads the database. Nothing commits per timer.
//! - **Snapshots** open a `'static` read transaction at the barrier and copy the pending writes
//!   (at most `pending_limit`); the checkpoint writer merges the two into sorted entries later,
//!   off the data path.
//!
//! ## Invariants
//!
//! - A domain's timers are the database's entries of the domain, plus pending puts, minus
//!   pending deletes.
//! - A head's entries are the first timers of its domain in key order; when `complete`, they
//!   are all of them. An empty head that is not complete is unknown and refilled before use.
//! - `counts[d]` is the number of timers of domain `d`.
//! - The kept reader is closed before every write transaction, so reads see the last commit.
//! - Memory holds at most `2 * head_capacity` head entries and `pending_limit` pending writes.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{Env, PutFlags, RoTxn, WithoutTls};
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Timer;
use crate::state::lmdb::{Db, backend_error, close_env, open_env};
use crate::state::{
    KeyedBackendConfig, KeyedEntry, KeyedStateSnapshot, PendingKeyedSnapshot, StableHash,
    StateError, StateMeta, key_group_for_key,
};

/// The most timers a domain's head holds (Flink's default RocksDB timer cache size is 128).
pub(crate) const HEAD_CAPACITY: usize = 256;

/// Flips the sign bit, so that big-endian bytes of an `i64` sort as the numbers do.
const SIGN: u64 = 1 << 63;

/// Event time (0) or processing time (1): the first byte of a timer's database key, and the
/// first field of its checkpoint entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Domain {
    /// Event-time timers.
    Event = 0,
    /// Processing-time timers.
    Processing = 1,
}

/// A timer's key and namespace, decoded, or what was wrong with the bytes.
type Decoded<K, N> = Result<(K, N), String>;

/// How a timer's key and namespace become bytes and back: functions of the concrete types,
/// taken when the service opens, so that the service's methods need no serde bounds.
struct TimerCodec<K, N> {
    /// Appends `mc(key) ++ mc(namespace)`.
    order: fn(&K, &N, &mut Vec<u8>) -> Result<(), String>,
    /// Appends `key group ++ postcard(key) ++ postcard(namespace)`.
    value: fn(&K, &N, u32, &mut Vec<u8>) -> Result<(), String>,
    /// Decodes `postcard(key) ++ postcard(namespace)`.
    decode: fn(&[u8]) -> Decoded<K, N>,
}

fn order_bytes<K: Serialize, N: Serialize>(
    key: &K,
    namespace: &N,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    // memcomparable panics (rather than failing) on an enum of more than 256 variants: turn
    // that into an error naming the limit.
    let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut serializer = memcomparable::Serializer::new(&mut *out);
        key.serialize(&mut serializer)?;
        namespace.serialize(&mut serializer)
    }));
    match encoded {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("a key type with an enum of more than 256 variants cannot be ordered".into()),
    }
}

fn value_bytes<K: Serialize + StableHash, N: Serialize>(
    key: &K,
    namespace: &N,
    max_parallelism: u32,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let key_group = key_group_for_key(key, max_parallelism).0;
    let key_group = u16::try_from(key_group).map_err(|_| format!("key group {key_group}"))?;
    out.extend_from_slice(&key_group.to_be_bytes());
    let bytes = postcard::to_extend(key, std::mem::take(out)).map_err(|e| e.to_string())?;
    *out = postcard::to_extend(namespace, bytes).map_err(|e| e.to_string())?;
    Ok(())
}

fn decode_timer<K: DeserializeOwned, N: DeserializeOwned>(bytes: &[u8]) -> Decoded<K, N> {
    let (key, rest) = postcard::take_from_bytes::<K>(bytes).map_err(|e| e.to_string())?;
    match postcard::take_from_bytes::<N>(rest) {
        Ok((namespace, [])) => Ok((key, namespace)),
        Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// The timestamp in a database key (bytes 1 to 8).
fn timestamp_of(db_key: &[u8]) -> Result<i64, String> {
    let bytes: [u8; 8] = db_key
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("a timer key of {} bytes", db_key.len()))?;
    Ok((u64::from_be_bytes(bytes) ^ SIGN).cast_signed())
}

/// The checkpoint entry of a stored timer: the heap's entry, byte for byte.
fn snapshot_entry(db_key: &[u8], value: &[u8]) -> Result<KeyedEntry, String> {
    let (Some(&domain), Some((key_group, tail))) = (db_key.first(), value.split_first_chunk::<2>())
    else {
        return Err(format!(
            "a timer of {} key and {} value bytes",
            db_key.len(),
            value.len()
        ));
    };
    let mut key = vec![domain];
    key = postcard::to_extend(&timestamp_of(db_key)?, key).map_err(|e| e.to_string())?;
    key.extend_from_slice(tail);
    Ok(KeyedEntry {
        key_group: u32::from(u16::from_be_bytes(*key_group)),
        state: 0,
        key,
        value: Vec::new(),
    })
}

/// The kept read transaction of `env`, opened if closed.
fn open_reader<'r>(
    env: Option<&Env<WithoutTls>>,
    reader: &'r mut Option<RoTxn<'static, WithoutTls>>,
    dir: &Path,
) -> Result<&'r RoTxn<'static, WithoutTls>, StateError> {
    if let Some(reader) = reader {
        return Ok(reader);
    }
    let env =
        env.ok_or_else(|| StateError::Backend(format!("LMDB at {}: closed", dir.display())))?;
    let rtxn = env
        .clone()
        .static_read_txn()
        .map_err(|e| backend_error(dir, "read timers", e))?;
    Ok(reader.insert(rtxn))
}

/// The first timers of one domain, in firing order (see the module's design).
#[derive(Debug)]
struct Head {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Whether `entries` are all the domain's timers.
    complete: bool,
}

impl Head {
    const fn empty() -> Self {
        Self {
            entries: BTreeMap::new(),
            complete: true,
        }
    }

    /// Adds a timer the head covers; its last drops out (it stays stored) beyond `capacity`.
    fn insert(&mut self, db_key: &[u8], value: &[u8], capacity: usize) {
        self.entries.insert(db_key.to_vec(), value.to_vec());
        if self.entries.len() > capacity {
            self.entries.pop_last();
            self.complete = false;
        }
    }

    /// Whether the head decides membership of `db_key`: it holds every timer up to its last.
    fn covers(&self, db_key: &[u8]) -> bool {
        self.complete
            || self
                .entries
                .last_key_value()
                .is_some_and(|(last, _)| db_key <= last.as_slice())
    }
}

/// The timers of one [`TimerService`](super::TimerService) in LMDB.
pub(crate) struct LmdbTimers<K, N> {
    /// `None` only while dropping.
    env: Option<Env<WithoutTls>>,
    /// Kept open between write transactions; closed before each.
    reader: Option<RoTxn<'static, WithoutTls>>,
    db: Db,
    dir: PathBuf,
    max_parallelism: u32,
    codec: TimerCodec<K, N>,
    heads: [Head; 2],
    head_capacity: usize,
    /// Writes not yet in the database, by database key: `Some` a put, `None` a delete.
    pending: FxHashMap<Vec<u8>, Option<Vec<u8>>>,
    pending_limit: usize,
    counts: [usize; 2],
}

impl<K, N> std::fmt::Debug for LmdbTimers<K, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmdbTimers")
            .field("dir", &self.dir)
            .field("counts", &self.counts)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<K, N> LmdbTimers<K, N> {
    /// Opens an empty timer store in `config.local_dir`, keeping at most `config.cache_entries`
    /// pending writes and `min(cache_entries, HEAD_CAPACITY)` head entries per domain.
    pub(crate) fn open(config: &KeyedBackendConfig) -> Result<Self, StateError>
    where
        K: Serialize + DeserializeOwned + StableHash,
        N: Serialize + DeserializeOwned,
    {
        let (env, db, dir) = open_env(config)?;
        let limit = config.cache_entries.max(1);
        Ok(Self {
            env: Some(env),
            reader: None,
            db,
            dir,
            max_parallelism: config.max_parallelism,
            codec: TimerCodec {
                order: order_bytes::<K, N>,
                value: value_bytes::<K, N>,
                decode: decode_timer::<K, N>,
            },
            heads: [Head::empty(), Head::empty()],
            head_capacity: limit.min(HEAD_CAPACITY),
            pending: FxHashMap::default(),
            pending_limit: limit,
            counts: [0, 0],
        })
    }

    /// How many timers of `domain` are pending.
    pub(crate) const fn count(&self, domain: Domain) -> usize {
        self.counts[domain as usize]
    }

    /// How many timers and writes are held in memory (heads and pending batch).
    pub(crate) fn in_memory(&self) -> usize {
        self.heads.iter().map(|h| h.entries.len()).sum::<usize>() + self.pending.len()
    }

    /// The database key of a timer.
    fn db_key(
        &self,
        domain: Domain,
        timestamp: i64,
        key: &K,
        namespace: &N,
    ) -> Result<Vec<u8>, StateError> {
        let mut bytes = Vec::with_capacity(32);
        bytes.push(domain as u8);
        bytes.extend_from_slice(&(timestamp.cast_unsigned() ^ SIGN).to_be_bytes());
        (self.codec.order)(key, namespace, &mut bytes).map_err(|e| {
            StateError::Encode(format!(
                "a timer's key or namespace (LMDB at {}): {e}",
                self.dir.display()
            ))
        })?;
        Ok(bytes)
    }

    /// The database value of a timer: key group, then the postcard key and namespace.
    fn value(&self, key: &K, namespace: &N) -> Result<Vec<u8>, StateError> {
        let mut value = Vec::with_capacity(24);
        (self.codec.value)(key, namespace, self.max_parallelism, &mut value).map_err(|e| {
            StateError::Encode(format!(
                "a timer's key or namespace (LMDB at {}): {e}",
                self.dir.display()
            ))
        })?;
        Ok(value)
    }

    fn corrupt(&self, error: &str) -> StateError {
        StateError::Corrupt(format!(
            "a timer in LMDB at {}: {error}",
            self.dir.display()
        ))
    }

    fn reader(&mut self) -> Result<&RoTxn<'static, WithoutTls>, StateError> {
        open_reader(self.env.as_ref(), &mut self.reader, &self.dir)
    }

    /// Whether the timer with database key `db_key` is pending.
    fn contains(&mut self, domain: Domain, db_key: &[u8]) -> Result<bool, StateError> {
        let head = &self.heads[domain as usize];
        if head.covers(db_key) {
            return Ok(head.entries.contains_key(db_key));
        }
        if let Some(write) = self.pending.get(db_key) {
            return Ok(write.is_some());
        }
        let db = self.db;
        let rtxn = self.reader()?;
        let found = db.get(rtxn, db_key).map(|v| v.is_some());
        found.map_err(|e| backend_error(&self.dir, "read timers", e))
    }

    /// Adds a timer; returns whether it was new.
    pub(crate) fn insert(
        &mut self,
        domain: Domain,
        timestamp: i64,
        key: &K,
        namespace: &N,
    ) -> Result<bool, StateError> {
        let db_key = self.db_key(domain, timestamp, key, namespace)?;
        if self.contains(domain, &db_key)? {
            return Ok(false);
        }
        self.add(domain, db_key, key, namespace)?;
        Ok(true)
    }

    /// Adds a timer the caller knows is not pending, without looking it up (a registration
    /// otherwise reads LMDB when the timer is not in memory). Debug builds check.
    pub(crate) fn insert_new(
        &mut self,
        domain: Domain,
        timestamp: i64,
        key: &K,
        namespace: &N,
    ) -> Result<(), StateError> {
        let db_key = self.db_key(domain, timestamp, key, namespace)?;
        #[cfg(debug_assertions)]
        if self.contains(domain, &db_key)? {
            return Err(self.corrupt("a timer registered as new was pending"));
        }
        self.add(domain, db_key, key, namespace)
    }

    /// Removes a timer the caller knows is pending, without looking it up. Debug builds
    /// check.
    pub(crate) fn remove_pending(
        &mut self,
        domain: Domain,
        timestamp: i64,
        key: &K,
        namespace: &N,
    ) -> Result<(), StateError> {
        let db_key = self.db_key(domain, timestamp, key, namespace)?;
        #[cfg(debug_assertions)]
        if !self.contains(domain, &db_key)? {
            return Err(self.corrupt("a timer deleted as pending was not"));
        }
        self.drop_timer(domain, db_key)
    }

    /// Removes a timer; returns whether it was pending.
    pub(crate) fn remove(
        &mut self,
        domain: Domain,
        timestamp: i64,
        key: &K,
        namespace: &N,
    ) -> Result<bool, StateError> {
        let db_key = self.db_key(domain, timestamp, key, namespace)?;
        if !self.contains(domain, &db_key)? {
            return Ok(false);
        }
        self.drop_timer(domain, db_key)?;
        Ok(true)
    }

    /// Whether a timer is pending.
    pub(crate) fn has(
        &mut self,
        domain: Domain,
        timestamp: i64,
        key: &K,
        namespace: &N,
    ) -> Result<bool, StateError> {
        let db_key = self.db_key(domain, timestamp, key, namespace)?;
        self.contains(domain, &db_key)
    }

    /// The timestamp of the domain's first timer.
    pub(crate) fn first_timestamp(&mut self, domain: Domain) -> Result<Option<i64>, StateError> {
        self.fill_head(domain)?;
        match self.heads[domain as usize].entries.keys().next() {
            None => Ok(None),
            Some(db_key) => timestamp_of(db_key).map(Some).map_err(|e| self.corrupt(&e)),
        }
    }

    /// Removes and returns the domain's first timer if it is at or below `time`.
    pub(crate) fn pop_due(
        &mut self,
        domain: Domain,
        time: i64,
    ) -> Result<Option<Timer<K, N>>, StateError> {
        self.fill_head(domain)?;
        let head = &mut self.heads[domain as usize];
        let Some(first) = head.entries.first_entry() else {
            return Ok(None);
        };
        let timestamp = match timestamp_of(first.key()) {
            Ok(timestamp) => timestamp,
            Err(e) => return Err(self.corrupt(&e)),
        };
        if timestamp > time {
            return Ok(None);
        }
        let (db_key, value) = first.remove_entry();
        let decoded = value
            .get(2..)
            .ok_or_else(|| format!("a value of {} bytes", value.len()))
            .and_then(|tail| (self.codec.decode)(tail));
        let (key, namespace) = decoded.map_err(|e| self.corrupt(&e))?;
        self.drop_timer(domain, db_key)?;
        Ok(Some(Timer::new(key, namespace, timestamp)))
    }

    /// Appends the keys and namespaces of the timers of `domain` at exactly `timestamp` to
    /// `out`, in firing order; the timers stay (writes the pending batch first, then scans).
    pub(crate) fn scan_at(
        &mut self,
        domain: Domain,
        timestamp: i64,
        out: &mut Vec<(K, N)>,
    ) -> Result<(), StateError> {
        self.flush()?;
        let mut start = vec![domain as u8];
        start.extend_from_slice(&(timestamp.cast_unsigned() ^ SIGN).to_be_bytes());
        let end = match timestamp.checked_add(1) {
            Some(next) => {
                let mut end = vec![domain as u8];
                end.extend_from_slice(&(next.cast_unsigned() ^ SIGN).to_be_bytes());
                end
            }
            None => vec![domain as u8 + 1],
        };
        let range = (Bound::Included(&start[..]), Bound::Excluded(&end[..]));
        let db = self.db;
        let decode = self.codec.decode;
        let dir = self.dir.clone();
        let rtxn = self.reader()?;
        let iter = db
            .range(rtxn, &range)
            .map_err(|e| backend_error(&dir, "scan timers", e))?;
        for item in iter {
            let (_, value) = item.map_err(|e| backend_error(&dir, "scan timers", e))?;
            let decoded = value
                .get(2..)
                .ok_or_else(|| format!("a value of {} bytes", value.len()))
                .and_then(decode);
            out.push(decoded.map_err(|e| {
                StateError::Corrupt(format!("a timer in LMDB at {}: {e}", dir.display()))
            })?);
        }
        Ok(())
    }

    /// Every pending timer of `domain` in firing order (writes the pending batch first).
    pub(crate) fn all(&mut self, domain: Domain) -> Result<Vec<Timer<K, N>>, StateError> {
        self.flush()?;
        let db = self.db;
        let (start, end) = ([domain as u8], [domain as u8 + 1]);
        let range = (Bound::Included(&start[..]), Bound::Excluded(&end[..]));
        let decode = self.codec.decode;
        let dir = self.dir.clone();
        let rtxn = self.reader()?;
        let mut timers = Vec::new();
        let iter = db
            .range(rtxn, &range)
            .map_err(|e| backend_error(&dir, "scan timers", e))?;
        for item in iter {
            let (db_key, value) = item.map_err(|e| backend_error(&dir, "scan timers", e))?;
            let decoded = timestamp_of(db_key).and_then(|timestamp| {
                let tail = value.get(2..).ok_or("a short value")?;
                decode(tail).map(|(key, namespace)| Timer::new(key, namespace, timestamp))
            });
            timers.push(decoded.map_err(|e| {
                StateError::Corrupt(format!("a timer in LMDB at {}: {e}", dir.display()))
            })?);
        }
        Ok(timers)
    }

    /// Refills an unknown (empty, incomplete) head with one range scan.
    fn fill_head(&mut self, domain: Domain) -> Result<(), StateError> {
        let head = &self.heads[domain as usize];
        if !head.entries.is_empty() || head.complete {
            return Ok(());
        }
        self.flush()?;
        let db = self.db;
        let capacity = self.head_capacity;
        let dir = self.dir.clone();
        let (start, end) = ([domain as u8], [domain as u8 + 1]);
        let range = (Bound::Included(&start[..]), Bound::Excluded(&end[..]));
        let rtxn = self.reader()?;
        let iter = db
            .range(rtxn, &range)
            .map_err(|e| backend_error(&dir, "scan timers", e))?;
        let mut entries = BTreeMap::new();
        let mut complete = true;
        for item in iter {
            if entries.len() == capacity {
                complete = false;
                break;
            }
            let (db_key, value) = item.map_err(|e| backend_error(&dir, "scan timers", e))?;
            entries.insert(db_key.to_vec(), value.to_vec());
        }
        self.heads[domain as usize] = Head { entries, complete };
        Ok(())
    }

    /// Adds a timer known not to be pending: into the head if it covers the timer, into the
    /// write batch, and into the count.
    fn add(
        &mut self,
        domain: Domain,
        db_key: Vec<u8>,
        key: &K,
        namespace: &N,
    ) -> Result<(), StateError> {
        let d = domain as usize;
        let value = self.value(key, namespace)?;
        if self.heads[d].covers(&db_key) {
            self.heads[d].insert(&db_key, &value, self.head_capacity);
        }
        self.pending_put(db_key, value);
        self.counts[d] += 1;
        self.flush_if_full()
    }

    /// Removes a timer known to be pending: from the head, through the write batch, and from
    /// the count.
    fn drop_timer(&mut self, domain: Domain, db_key: Vec<u8>) -> Result<(), StateError> {
        let d = domain as usize;
        self.heads[d].entries.remove(&db_key);
        self.pending_delete(db_key);
        self.counts[d] = self.counts[d].saturating_sub(1);
        self.flush_if_full()
    }

    /// Records the put of a timer that is not pending (`value` is its value). After a pending
    /// delete the database still holds it: the delete is dropped. Else the put is pending,
    /// and the database lacks the key.
    fn pending_put(&mut self, db_key: Vec<u8>, value: Vec<u8>) {
        match self.pending.entry(db_key) {
            Entry::Occupied(slot) => {
                debug_assert!(slot.get().is_none(), "a put over a pending put");
                slot.remove();
            }
            Entry::Vacant(slot) => {
                slot.insert(Some(value));
            }
        }
    }

    /// Records the delete of a pending timer. A put not yet written is dropped instead (the
    /// database never held the key): a timer registered and fired between two flushes costs
    /// LMDB nothing. Else the delete is pending, and the database holds the key.
    fn pending_delete(&mut self, db_key: Vec<u8>) {
        match self.pending.entry(db_key) {
            Entry::Occupied(slot) => {
                debug_assert!(slot.get().is_some(), "a delete over a pending delete");
                slot.remove();
            }
            Entry::Vacant(slot) => {
                slot.insert(None);
            }
        }
    }

    fn flush_if_full(&mut self) -> Result<(), StateError> {
        if self.pending.len() >= self.pending_limit {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending batch in one write transaction.
    fn flush(&mut self) -> Result<(), StateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // The reader must see the commit, and a closed reader lets the writer reuse pages.
        self.reader = None;
        let env = self.env.as_ref().ok_or_else(|| {
            StateError::Backend(format!("LMDB at {}: closed", self.dir.display()))
        })?;
        let failed = |e| backend_error(&self.dir, "write timers", e);
        let mut txn = env.write_txn().map_err(failed)?;
        // Sorted, so that the writes walk the tree in order (and nothing depends on hash
        // order): deletes first, then puts through one cursor, each search starting where the
        // previous put left it (timers mostly arrive in time order, near the tree's end).
        let mut writes: Vec<_> = self.pending.iter().collect();
        writes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (db_key, write) in &writes {
            if write.is_none() {
                self.db.delete(&mut txn, db_key).map_err(failed)?;
            }
        }
        {
            let mut cursor = self.db.iter_mut(&mut txn).map_err(failed)?;
            for (db_key, write) in &writes {
                let Some(value) = write else { continue };
                #[allow(unsafe_code)]
                // SAFETY: heed marks cursor writes unsafe because a key or value borrowed from
                // the database must not be alive across one; these borrow the pending batch,
                // and nothing read through this transaction is held. With no flags this is
                // `mdb_cursor_put(.., 0)`: an ordinary put starting from the cursor's place.
                unsafe {
                    cursor.put_current_with_options::<Bytes>(PutFlags::empty(), db_key, value)
                }
                .map_err(failed)?;
            }
        }
        txn.commit().map_err(failed)?;
        self.pending.clear();
        Ok(())
    }

    /// The timers frozen now, as keyed state `name` (entries of type `type_name`), read out
    /// later: a read transaction opened now plus a copy of the pending writes.
    pub(crate) fn snapshot(
        &mut self,
        name: &str,
        type_name: String,
    ) -> Result<PendingKeyedSnapshot, StateError> {
        let env = self.env.as_ref().ok_or_else(|| {
            StateError::Backend(format!("LMDB at {}: closed", self.dir.display()))
        })?;
        let rtxn = env
            .clone()
            .static_read_txn()
            .map_err(|e| backend_error(&self.dir, "snapshot timers", e))?;
        let mut overlay: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .pending
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        overlay.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let db = self.db;
        let dir = self.dir.clone();
        let meta = StateMeta {
            name: name.to_string(),
            type_name,
        };
        Ok(PendingKeyedSnapshot::Deferred(Box::new(move || {
            let failed = |e| backend_error(&dir, "snapshot timers", e);
            let corrupt = |e: String| {
                StateError::Corrupt(format!("a timer in LMDB at {}: {e}", dir.display()))
            };
            let mut entries = Vec::new();
            let mut overlay = overlay.into_iter().peekable();
            let mut push = |db_key: &[u8], value: Option<&[u8]>| -> Result<(), StateError> {
                if let Some(value) = value {
                    entries.push(snapshot_entry(db_key, value).map_err(corrupt)?);
                }
                Ok(())
            };
            for item in db.iter(&rtxn).map_err(failed)? {
                let (db_key, value) = item.map_err(failed)?;
                while let Some((newer, write)) = overlay.next_if(|(k, _)| k.as_slice() < db_key) {
                    push(&newer, write.as_deref())?;
                }
                match overlay.next_if(|(k, _)| k.as_slice() == db_key) {
                    Some((newer, write)) => push(&newer, write.as_deref())?,
                    None => push(db_key, Some(value))?,
                }
            }
            for (newer, write) in overlay {
                push(&newer, write.as_deref())?;
            }
            drop(rtxn);
            entries.sort_unstable();
            Ok(KeyedStateSnapshot {
                states: vec![meta],
                entries,
            })
        })))
    }
}

impl<K, N> Drop for LmdbTimers<K, N> {
    fn drop(&mut self) {
        close_env(self.env.take(), self.reader.take(), &self.dir);
    }
}
