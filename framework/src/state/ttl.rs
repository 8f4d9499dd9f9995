//! State time-to-live (Flink's `StateTtlConfig`).
//!
//! A state handle built `.with_ttl(config)` stamps every value it writes with the processing time
//! of the write (and, with [`TtlUpdateType::OnReadAndWrite`], of every read). A value whose stamp
//! plus `ttl_ms` is at or before the current processing time has expired:
//!
//! - it is never returned (Flink's `NeverReturnExpired`); a read that finds it removes it;
//! - snapshots leave it out (Flink's `cleanupFullSnapshot`), without changing the live state.
//!
//! List state expires per element and map state per entry, as in Flink. Processing time comes
//! from the context ([`KeyedStateAccess::current_processing_time`]), never from a clock read here.
//!
//! ## Stored form
//!
//! Every value of a handle's state is stored as [`TtlValue`]: the value and the processing time
//! of its last stamping, `None` when the state has no TTL. The form does not depend on whether a
//! TTL is configured, so TTL can be switched on or off across a restore; a value without a stamp
//! never expires until it is written (or, with `OnReadAndWrite`, read) under a TTL.
//!
//! [`KeyedStateAccess::current_processing_time`]: super::KeyedStateAccess::current_processing_time

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::codec::decode_exact;

/// When a value's time-to-live starts again (Flink's `StateTtlConfig.UpdateType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TtlUpdateType {
    /// Only creating or writing a value restarts its TTL (Flink's default).
    #[default]
    OnCreateAndWrite,
    /// Reading a value restarts its TTL too.
    OnReadAndWrite,
}

/// Time-to-live of keyed state values, in processing time (Flink's `StateTtlConfig`).
///
/// Expired values are never returned and are left out of snapshots.
///
/// # Examples
///
/// ```
/// use eichhorn::state::{StateTtlConfig, TtlUpdateType, ValueState};
///
/// let ttl = StateTtlConfig::new(60_000).update_on_read_and_write();
/// assert_eq!(ttl.update_type, TtlUpdateType::OnReadAndWrite);
/// let last_seen: ValueState<i64> = ValueState::new("last-seen").with_ttl(ttl);
/// assert_eq!(last_seen.ttl(), Some(ttl));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateTtlConfig {
    /// How long a value lives after it was last stamped, in milliseconds of processing time.
    pub ttl_ms: u64,
    /// Which accesses stamp a value.
    pub update_type: TtlUpdateType,
}

impl StateTtlConfig {
    /// Values live `ttl_ms` milliseconds of processing time after their last write.
    pub fn new(ttl_ms: u64) -> Self {
        Self {
            ttl_ms,
            update_type: TtlUpdateType::OnCreateAndWrite,
        }
    }

    /// Reads restart the TTL too ([`TtlUpdateType::OnReadAndWrite`]).
    pub fn update_on_read_and_write(mut self) -> Self {
        self.update_type = TtlUpdateType::OnReadAndWrite;
        self
    }

    /// Only writes restart the TTL ([`TtlUpdateType::OnCreateAndWrite`], the default).
    pub fn update_on_create_and_write(mut self) -> Self {
        self.update_type = TtlUpdateType::OnCreateAndWrite;
        self
    }

    /// The internal form: a signed TTL (saturated) and whether reads stamp.
    pub(crate) fn ttl(&self) -> Ttl {
        Ttl {
            ttl_ms: i64::try_from(self.ttl_ms).unwrap_or(i64::MAX),
            update_on_read: self.update_type == TtlUpdateType::OnReadAndWrite,
        }
    }
}

/// A TTL as the handles use it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ttl {
    pub(crate) ttl_ms: i64,
    pub(crate) update_on_read: bool,
}

/// A stored value with the processing time of its last stamping (`None`: no TTL when written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TtlValue<T> {
    pub(crate) last_access_ms: Option<i64>,
    pub(crate) value: T,
}

impl<T> TtlValue<T> {
    pub(crate) fn new(value: T, stamp_ms: Option<i64>) -> Self {
        Self {
            last_access_ms: stamp_ms,
            value,
        }
    }

    /// Whether the value has expired at `now_ms` under `ttl_ms` (Flink: `last + ttl <= now`).
    pub(crate) fn is_expired(&self, now_ms: i64, ttl_ms: i64) -> bool {
        self.last_access_ms
            .is_some_and(|last| last.saturating_add(ttl_ms) <= now_ms)
    }
}

/// A stored state form whose parts can expire.
pub(crate) trait TtlStored: Clone + Serialize + DeserializeOwned + Send + 'static {
    /// What is left of this value once its expired parts are gone.
    fn live(&self, now_ms: i64, ttl_ms: i64) -> Live<Self>;

    /// Restarts the TTL of every part (a read under `OnReadAndWrite`).
    fn touch(&mut self, now_ms: i64);
}

impl<T: Clone + Serialize + DeserializeOwned + Send + 'static> TtlStored for TtlValue<T> {
    fn live(&self, now_ms: i64, ttl_ms: i64) -> Live<Self> {
        if self.is_expired(now_ms, ttl_ms) {
            Live::Expired
        } else {
            Live::Unchanged
        }
    }

    fn touch(&mut self, now_ms: i64) {
        self.last_access_ms = Some(now_ms);
    }
}

impl<T: Clone + Serialize + DeserializeOwned + Send + 'static> TtlStored for Vec<TtlValue<T>> {
    fn live(&self, now_ms: i64, ttl_ms: i64) -> Live<Self> {
        if !self.iter().any(|e| e.is_expired(now_ms, ttl_ms)) {
            return Live::Unchanged;
        }
        let live: Self = self
            .iter()
            .filter(|e| !e.is_expired(now_ms, ttl_ms))
            .cloned()
            .collect();
        Live::pruned(live, Self::is_empty)
    }

    fn touch(&mut self, now_ms: i64) {
        for element in self {
            element.touch(now_ms);
        }
    }
}

impl<UK, UV> TtlStored for BTreeMap<UK, TtlValue<UV>>
where
    UK: Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    UV: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    fn live(&self, now_ms: i64, ttl_ms: i64) -> Live<Self> {
        if !self.values().any(|e| e.is_expired(now_ms, ttl_ms)) {
            return Live::Unchanged;
        }
        let live: Self = self
            .iter()
            .filter(|(_, e)| !e.is_expired(now_ms, ttl_ms))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        Live::pruned(live, Self::is_empty)
    }

    fn touch(&mut self, now_ms: i64) {
        for element in self.values_mut() {
            element.touch(now_ms);
        }
    }
}

/// What is left of a stored value once its expired parts are gone.
#[derive(Debug, PartialEq)]
pub(crate) enum Live<S> {
    /// Nothing expired.
    Unchanged,
    /// Everything expired.
    Expired,
    /// Some parts expired: the rest.
    Pruned(S),
}

impl<S> Live<S> {
    /// `Pruned(rest)`, or `Expired` if `rest` is empty.
    fn pruned(rest: S, is_empty: impl FnOnce(&S) -> bool) -> Self {
        if is_empty(&rest) {
            Self::Expired
        } else {
            Self::Pruned(rest)
        }
    }
}

/// What pruning did to an encoded value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pruned {
    /// Nothing expired: keep the bytes.
    Keep,
    /// Everything expired: leave the entry out.
    Drop,
    /// Some parts expired: the re-encoded rest.
    Replace(Vec<u8>),
}

/// The live view of a stored value, for snapshots.
pub(crate) type PruneFn<S> = fn(&S, i64, i64) -> Live<S>;

/// The live view of an encoded value (LMDB snapshots read bytes, not typed values).
pub(crate) type PruneBytesFn = fn(&[u8], i64, i64) -> Result<Pruned, String>;

/// How a state's snapshot leaves out expired values: its TTL and the typed pruning functions.
pub(crate) struct Expiry<S> {
    pub(crate) ttl_ms: i64,
    pub(crate) prune: PruneFn<S>,
    pub(crate) prune_bytes: PruneBytesFn,
}

impl<S> Clone for Expiry<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Expiry<S> {}

impl<S: TtlStored> Expiry<S> {
    pub(crate) fn new(ttl: Ttl) -> Self {
        Self {
            ttl_ms: ttl.ttl_ms,
            prune: S::live,
            prune_bytes: prune_bytes::<S>,
        }
    }
}

fn prune_bytes<S: TtlStored>(bytes: &[u8], now_ms: i64, ttl_ms: i64) -> Result<Pruned, String> {
    let value: S = decode_exact(bytes)?;
    match value.live(now_ms, ttl_ms) {
        Live::Expired => Ok(Pruned::Drop),
        Live::Unchanged => Ok(Pruned::Keep),
        Live::Pruned(live) => postcard::to_allocvec(&live)
            .map(Pruned::Replace)
            .map_err(|error| error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_at_last_plus_ttl() {
        let v = TtlValue::new(1, Some(100));
        assert!(!v.is_expired(149, 50));
        assert!(v.is_expired(150, 50));
        assert!(!TtlValue::new(1, None).is_expired(i64::MAX, 0));
        // No overflow at the end of time.
        assert!(!TtlValue::new(1, Some(i64::MAX - 1)).is_expired(i64::MAX - 1, i64::MAX));
    }

    #[test]
    fn lists_and_maps_prune_per_element() {
        let list = vec![TtlValue::new(1, Some(0)), TtlValue::new(2, Some(50))];
        assert_eq!(list.live(10, 100), Live::Unchanged);
        assert_eq!(
            list.live(100, 100),
            Live::Pruned(vec![TtlValue::new(2, Some(50))])
        );
        assert_eq!(list.live(150, 100), Live::Expired);

        let map: BTreeMap<u8, TtlValue<u8>> = [(1, TtlValue::new(1, Some(0)))].into();
        assert_eq!(map.live(100, 100), Live::Expired);
        let bytes = postcard::to_allocvec(&list).expect("encodes");
        assert_eq!(
            prune_bytes::<Vec<TtlValue<i32>>>(&bytes, 10, 100),
            Ok(Pruned::Keep)
        );
        assert_eq!(
            prune_bytes::<Vec<TtlValue<i32>>>(&bytes, 150, 100),
            Ok(Pruned::Drop)
        );
        assert!(matches!(
            prune_bytes::<Vec<TtlValue<i32>>>(&bytes, 100, 100),
            Ok(Pruned::Replace(_))
        ));
        assert!(prune_bytes::<Vec<TtlValue<i32>>>(&[0xff], 0, 1).is_err());
    }
}
