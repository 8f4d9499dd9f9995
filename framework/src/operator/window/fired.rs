//! Which windows of restored keys already fired before the checkpoint: the part of the
//! default trigger's timers that the window operator's fast paths do not store.
//!
//! The fast paths (`panes.rs`, `sessions.rs`) keep no timers: with the event-time trigger, a
//! window fires when the watermark first passes its `max_timestamp`, so "has it fired?" is
//! "is the watermark past its end?". The watermark is not checkpointed (as in Flink), so after a
//! restore it starts again at `i64::MIN` and that answer would be lost: a window kept for its
//! allowed lateness, or a sliding window over a pane kept for later windows, would fire a second
//! time when the replayed watermark passes its end again.
//!
//! The generic path checkpoints its timers, and a window that fired has no trigger timer left.
//! Its Flink semantics after a restore, which this module reproduces:
//!
//! - a window that fired before the checkpoint does not fire again when the watermark passes its
//!   end again, unless a record reached it after the restore (that record's trigger registered
//!   the timer again: the window is *re-armed*);
//! - every other window fires as usual.
//!
//! So a checkpoint stores, per key with contents in a window that fired, the watermark its
//! windows fired up to (`through`), and the re-armed windows. After a restore, a window of a key
//! with `through` at or above its `max_timestamp` is *suppressed* unless re-armed; one with
//! `through` at or above its cleanup time had no state left at the checkpoint, so if a record
//! brings it back (it is not late for the restarted watermark), only records since the restore
//! are its contents (`panes.rs` keeps them apart for sliding windows). Marks whose
//! time the watermark passed can no longer matter and are dropped, so the structure empties once
//! the replayed watermark caught up, and the fast paths only test
//! [`FiredWindows::is_empty`] on their per-record path.
//!
//! ## Invariants
//!
//! - Every `through` is above the current watermark (dropped by [`FiredWindows::advance`]).
//! - A re-armed window belongs to a key with a `through` at or above its `max_timestamp`.

use std::collections::BTreeSet;
use std::hash::Hash;

use rustc_hash::FxHashMap;

use super::backend::{itself, take_checked};
use crate::state::{KeyedStateSnapshot, StableHash, StateError};

/// The keyed state holding the fast paths' fired windows: `key -> (through, re-armed)`.
pub(super) const FIRED_STATE: &str = "_window_fired";

/// The fired windows of restored keys (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct FiredWindows<K> {
    /// Per restored key: its windows with `max_timestamp` at or below this fired before the
    /// checkpoint.
    through: FxHashMap<K, i64>,
    /// `(key, max_timestamp)` of fired windows a record re-armed after the restore.
    rearmed: BTreeSet<(K, i64)>,
}

impl<K: Hash + Ord + Clone> FiredWindows<K> {
    pub(super) fn new() -> Self {
        Self {
            through: FxHashMap::default(),
            rearmed: BTreeSet::new(),
        }
    }

    /// Whether no window is suppressed (always, except shortly after a restore).
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.through.is_empty()
    }

    /// Restores the marks of `key`: its windows up to `through` fired, except those in
    /// `rearmed` (by `max_timestamp`).
    pub(super) fn restore(&mut self, key: K, through: i64, rearmed: &[i64]) {
        for &max_timestamp in rearmed {
            if max_timestamp <= through {
                self.rearmed.insert((key.clone(), max_timestamp));
            }
        }
        let entry = self.through.entry(key).or_insert(through);
        *entry = (*entry).max(through);
    }

    /// Restores the marks of state [`FIRED_STATE`] in `keyed` that can still matter at
    /// `watermark` (checking each key's key group).
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] for an entry that does not decode or is in another key group.
    pub(super) fn restore_marks(
        &mut self,
        keyed: &mut KeyedStateSnapshot,
        max_parallelism: u32,
        watermark: i64,
    ) -> Result<(), StateError>
    where
        K: StableHash + serde::de::DeserializeOwned,
    {
        let marks =
            take_checked::<K, (i64, Vec<i64>), K>(keyed, FIRED_STATE, max_parallelism, itself)?;
        for (key, (through, rearmed)) in marks {
            if through > watermark {
                self.restore(key, through, &rearmed);
            }
        }
        Ok(())
    }

    /// Whether `key` has windows that fired before the checkpoint.
    pub(super) fn is_marked(&self, key: &K) -> bool {
        self.through.contains_key(key)
    }

    /// Whether the state of the window of `key` cleaned up at `cleanup_time` was gone at the
    /// checkpoint: a record after the restore starts it afresh (the watermark is below its
    /// cleanup time again), as a new window of the generic path would.
    pub(super) fn cleaned(&self, key: &K, cleanup_time: i64) -> bool {
        self.through
            .get(key)
            .is_some_and(|&through| cleanup_time <= through)
    }

    /// Whether the window of `key` ending at `max_timestamp` fired before the checkpoint and
    /// was not re-armed since: it must not fire again.
    pub(super) fn suppresses(&self, key: &K, max_timestamp: i64) -> bool {
        self.through
            .get(key)
            .is_some_and(|&through| max_timestamp <= through)
            && !self.rearmed.contains(&(key.clone(), max_timestamp))
    }

    /// A record reached the window of `key` ending at `max_timestamp`, at `watermark`: if the
    /// window fired before the checkpoint and its end is still ahead, the trigger's timer is
    /// registered again (at or below the watermark, the record fires the window at once).
    pub(super) fn rearm(&mut self, key: &K, max_timestamp: i64, watermark: i64) {
        if max_timestamp > watermark
            && self
                .through
                .get(key)
                .is_some_and(|&through| max_timestamp <= through)
        {
            self.rearmed.insert((key.clone(), max_timestamp));
        }
    }

    /// The watermark reached `watermark` (after the windows it fires fired): drops the marks
    /// that can no longer matter.
    pub(super) fn advance(&mut self, watermark: i64) {
        if self.through.is_empty() {
            return;
        }
        self.through.retain(|_, through| *through > watermark);
        let through = &self.through;
        self.rearmed
            .retain(|(key, max_timestamp)| *max_timestamp > watermark && through.contains_key(key));
    }

    /// What a checkpoint stores for `key` at `watermark`: the watermark its windows fired up to,
    /// and its re-armed windows.
    pub(super) fn snapshot_of(&self, key: &K, watermark: i64) -> (i64, Vec<i64>) {
        let Some(&through) = self.through.get(key) else {
            return (watermark, Vec::new());
        };
        let rearmed = self
            .rearmed
            .range((key.clone(), i64::MIN)..=(key.clone(), i64::MAX))
            .map(|(_, max_timestamp)| *max_timestamp)
            .collect();
        (through.max(watermark), rearmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_suppress_until_rearmed_and_go_once_passed() {
        let mut fired = FiredWindows::new();
        assert!(fired.is_empty());
        fired.restore(1u8, 100, &[90]);
        fired.restore(2u8, 50, &[]);
        assert!(fired.suppresses(&1, 80));
        assert!(!fired.suppresses(&1, 90), "re-armed");
        assert!(!fired.suppresses(&1, 101));
        assert!(!fired.suppresses(&3, 10), "not restored");
        // A record at watermark 70 re-arms a window ending later, not one ending earlier.
        fired.rearm(&1, 80, 70);
        fired.rearm(&1, 60, 70);
        assert!(!fired.suppresses(&1, 80));
        assert!(fired.suppresses(&1, 60));
        assert_eq!(fired.snapshot_of(&1, 70), (100, vec![80, 90]));
        assert_eq!(fired.snapshot_of(&3, 70), (70, vec![]));
        fired.advance(80);
        assert_eq!(fired.snapshot_of(&1, 80), (100, vec![90]));
        assert_eq!(fired.snapshot_of(&2, 80), (80, vec![]), "passed: dropped");
        fired.advance(100);
        assert!(fired.is_empty());
    }
}
