//! Tumbling and sliding event-time windows with the default trigger when the job's keyed state
//! lives in LMDB: the pane fast path of `panes.rs`, with the same semantics, whose contents are
//! in the state backend rather than on the heap.
//!
//! ## Design
//!
//! - **Contents in the backend, one value per key** ([`KeyPanes`], state `_window_panes` of a
//!   [`KeyedStateStore`] keyed by the window operator's key): the key's panes with their
//!   contents, by start, and what it received since a restore (`fresh`, see
//!   `PaneWindows::add_fresh`). A record costs one lookup of its key. One value per key rather
//!   than per (key, pane) keeps a key's panes in one cache slot: sliding windows of ten panes
//!   over ten thousand keys would otherwise need 110,000 slots, more than the default cache.
//! - **An index, in LMDB too**: the panes' bounds in memory ([`PaneList`], a few per window
//!   size), and `(pane start, key)` for every key with contents in a pane, as event-time timers
//!   of a [`TimerService`] in LMDB (ordered by start, then key; a bounded head and write batch
//!   in memory). A watermark reads the keys of the windows it fires with one range scan per
//!   pane, in key order, and a dropped pane pops its keys to trim, without scanning all keys.
//!   Flink likewise keeps window timers in RocksDB beside the contents. The keys with `fresh`
//!   contents (only after a restore, few) are listed on the heap.
//! - **Checkpoints** are the heap path's ([`PaneWindows::snapshot`]: `_window_panes` and
//!   `_window_panes_fresh` per (key, pane start), fired marks): the backend's view frozen at the
//!   barrier is read and converted by checkpoint storage, off the data path. So the two restore
//!   into each other, at any parallelism. A restore checks the entries as the heap path does,
//!   rebuilds the index from them and writes the contents into the backend.
//!
//! ## Invariants
//!
//! - A key is listed at a pane's start in the index iff its [`KeyPanes`] holds contents for
//!   that pane (except, after a drain, keys whose window fired before a restore, listed until
//!   the pane drops), and a key has a [`KeyPanes`] iff it is listed in some pane.
//! - A key's panes are sorted by start; its `fresh` starts are starts of its panes.
//!
//! [`PaneWindows::snapshot`]: super::panes::PaneWindows::snapshot

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::marker::PhantomData;

use rustc_hash::FxHashSet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::backend::{decode_entry_key, decode_entry_value};
use super::fired::{FIRED_STATE, FiredWindows};
use super::functions::{Emitter, WindowFunctionCore};
use super::key_order::KeyOrder;
use super::panes::{
    FRESH_STATE, PANES_STATE, PaneGrid, PaneList, PaneStore, WindowsOf, check_pane_start,
    fresh_without_pane, twice,
};
use super::{TimeWindow, WindowAssigner, WindowError};
use crate::api::Key;
use crate::operator::checkpointing::deferred_keyed_state;
use crate::state::{KeyedStateSnapshot, KeyedStateStore, PendingKeyedSnapshot, StateError};
use crate::time::TimerService;

/// One key's panes in the backend: never without a pane.
///
/// The latest pane is kept apart, inline in the value, because records in time order only
/// ever touch it: no pointer to chase from the cache slot to the contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KeyPanes<A> {
    /// `(pane start, contents)` of the panes before the latest, by start; the contents are
    /// `None` only while a function adds to them (here and in `latest`).
    earlier: VecDeque<(i64, Option<A>)>,
    /// The latest pane with contents.
    latest: (i64, Option<A>),
    /// `(pane start, contents)`: what the key received since a restore, for windows cleaned up
    /// before it (sliding windows only).
    fresh: Vec<(i64, A)>,
}

impl<A> KeyPanes<A> {
    /// A key's first pane.
    fn new(start: i64, contents: A) -> Self {
        Self {
            earlier: VecDeque::new(),
            latest: (start, Some(contents)),
            fresh: Vec::new(),
        }
    }

    /// The contents of the pane starting at `start`, if the key has contents there.
    #[inline]
    fn slot_mut(&mut self, start: i64) -> Option<&mut Option<A>> {
        if self.latest.0 == start {
            return Some(&mut self.latest.1);
        }
        if self.latest.0 < start {
            // A new latest pane: the earlier ones start before the latest.
            return None;
        }
        let index = self
            .earlier
            .binary_search_by_key(&start, |(s, _)| *s)
            .ok()?;
        Some(&mut self.earlier[index].1)
    }

    /// Whether the key has contents in the pane starting at `start`.
    fn has(&self, start: i64) -> bool {
        self.latest.0 == start
            || self
                .earlier
                .binary_search_by_key(&start, |(s, _)| *s)
                .is_ok()
    }

    /// The contents of the pane starting at `start`.
    fn contents_mut(&mut self, start: i64) -> Option<&mut A> {
        self.slot_mut(start)?.as_mut()
    }

    /// Adds the pane starting at `start` (the key has no contents there yet).
    fn insert(&mut self, start: i64, contents: A) {
        debug_assert!(!self.has(start));
        if start > self.latest.0 {
            let earlier = std::mem::replace(&mut self.latest, (start, Some(contents)));
            self.earlier.push_back(earlier);
        } else {
            let index = self.earlier.partition_point(|(s, _)| *s < start);
            self.earlier.insert(index, (start, Some(contents)));
        }
    }

    /// The panes, by start.
    fn panes(&self) -> impl Iterator<Item = &(i64, Option<A>)> {
        self.earlier.iter().chain(std::iter::once(&self.latest))
    }

    /// Removes the pane starting at `start`, if the key has contents there; returns whether
    /// none is left (the value is then to be removed).
    fn remove_pane(&mut self, start: i64) -> bool {
        if self.latest.0 == start {
            return match self.earlier.pop_back() {
                Some(latest) => {
                    self.latest = latest;
                    false
                }
                None => true,
            };
        }
        if let Ok(index) = self.earlier.binary_search_by_key(&start, |(s, _)| *s) {
            self.earlier.remove(index);
        }
        false
    }

    /// Removes the panes starting at or before `start`; returns whether none is left (the
    /// value is then to be removed).
    fn drop_through(&mut self, start: i64) -> bool {
        while self.earlier.front().is_some_and(|(s, _)| *s <= start) {
            self.earlier.pop_front();
        }
        // The earlier panes start before the latest: if the latest goes, they went.
        self.latest.0 <= start
    }
}

/// The contents of tumbling or sliding windows as panes, per key, in the state backend.
pub(super) struct BackendPanes<K, A> {
    grid: PaneGrid,
    /// The panes' bounds and firing state, by start.
    list: PaneList<()>,
    /// The index: `(pane start, key)` for every key with contents in the pane, as event-time
    /// timers at the pane's start (in LMDB: bounded head and write batch in memory).
    keys: TimerService<K, ()>,
    /// Per key its [`KeyPanes`], state [`PANES_STATE`].
    store: KeyedStateStore<K>,
    /// The keys with `fresh` contents.
    fresh_keys: BTreeSet<K>,
    /// Sorts a window's keys at firing.
    key_order: KeyOrder,
    /// A window's keys at firing, and the windows a watermark fires: empty between firings,
    /// kept for their allocations.
    keys_scratch: Vec<(K, ())>,
    fire_scratch: Vec<TimeWindow>,
    _contents: PhantomData<fn() -> A>,
}

impl<K, A> BackendPanes<K, A>
where
    K: Key,
    A: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    /// Panes of `grid` whose contents live in `store` (empty), indexed in `keys` (empty).
    pub(super) fn new(
        grid: PaneGrid,
        store: KeyedStateStore<K>,
        keys: TimerService<K, ()>,
    ) -> Self {
        Self {
            grid,
            list: PaneList::new(),
            keys,
            store,
            fresh_keys: BTreeSet::new(),
            key_order: KeyOrder::default(),
            keys_scratch: Vec::new(),
            fire_scratch: Vec::new(),
            _contents: PhantomData,
        }
    }

    /// The entries the contents' store and the index hold in memory (tests look).
    #[cfg(test)]
    pub(super) fn entries_in_memory(&self) -> usize {
        self.store.entries_in_memory() + self.keys.entries_in_memory()
    }

    /// What `entry` (of `key`) received since the restore in the panes of `window`, merged in
    /// pane order.
    fn fresh_contents<T, F>(entry: &KeyPanes<A>, function: &mut F, window: &TimeWindow) -> Option<A>
    where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let mut in_window: Vec<&(i64, A)> = entry
            .fresh
            .iter()
            .filter(|(start, _)| window.start <= *start && *start < window.end)
            .collect();
        in_window.sort_unstable_by_key(|(start, _)| *start);
        merge_in_order(function, in_window.into_iter().map(|(_, acc)| acc))
    }

    /// The contents of `entry` in the panes of `window`, merged in pane order.
    fn window_contents<T, F>(
        entry: &KeyPanes<A>,
        function: &mut F,
        window: &TimeWindow,
    ) -> Option<A>
    where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        merge_in_order(
            function,
            entry
                .panes()
                .filter(|(start, _)| window.start <= *start && *start < window.end)
                .filter_map(|(_, acc)| acc.as_ref()),
        )
    }

    /// Emits `window` for `key` if the key has contents in it.
    fn fire_key<T, F>(
        &mut self,
        function: &mut F,
        key: &K,
        window: TimeWindow,
        emitter: &mut Emitter<'_, '_, F::Out>,
        fired: &FiredWindows<K>,
    ) -> Result<(), StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let mut table = self.store.value_table::<KeyPanes<A>>(PANES_STATE)?;
        if self.grid.panes_per_window == 1 {
            if let Some(entry) = table.get_mut(key)?
                && let Some(contents) = entry.contents_mut(window.start)
            {
                emitter.emit(function, key, window, contents);
            }
            return Ok(());
        }
        let Some(entry) = table.get(key)? else {
            return Ok(());
        };
        let contents = if !fired.is_empty() && fired.cleaned(key, self.grid.cleanup_time(&window)) {
            Self::fresh_contents(entry, function, &window)
        } else {
            Self::window_contents(entry, function, &window)
        };
        if let Some(mut contents) = contents {
            emitter.emit(function, key, window, &mut contents);
        }
        Ok(())
    }

    /// Emits `window` for every key with contents in it, in key order, except the keys for
    /// which `fired` says the window fired before the checkpoint.
    ///
    /// If the watermark also cleans the window up, its first pane goes in this advance (it is
    /// the pane's last window): each key's contents there are removed while the key is at
    /// hand, rather than read again when the pane is dropped (with LMDB, a second read per key
    /// and window once the keys outgrow the cache). Windows fire in start order, so no later
    /// window of this advance covers that pane.
    fn fire_window<T, F>(
        &mut self,
        function: &mut F,
        window: TimeWindow,
        emitter: &mut Emitter<'_, '_, F::Out>,
        fired: &FiredWindows<K>,
    ) -> Result<(), StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let max_timestamp = window.max_timestamp();
        let cleanup = self.grid.cleanup_time(&window);
        let check_fired = !fired.is_empty();
        let mut keys = std::mem::take(&mut self.keys_scratch);
        keys.clear();
        let range = self.list.panes_of(&window);
        for pane in self.list.panes.range(range.clone()) {
            self.keys.event_time_timers_at(pane.start, &mut keys)?;
        }
        if range.len() > 1 {
            // A key with contents in several of the window's panes is listed in each.
            let mut seen: FxHashSet<K> =
                FxHashSet::with_capacity_and_hasher(keys.len(), Default::default());
            keys.retain(|(key, ())| seen.insert(key.clone()));
        }
        self.key_order.sort(&mut keys);
        let first = range.start;
        let drains = cleanup <= emitter.watermark
            && self
                .list
                .panes
                .get(first)
                .is_some_and(|pane| pane.start == window.start);
        let mut table = self.store.value_table::<KeyPanes<A>>(PANES_STATE)?;
        for (key, ()) in keys.drain(..) {
            if check_fired && fired.suppresses(&key, max_timestamp) {
                continue;
            }
            let Some(entry) = table.get_mut(&key)? else {
                return Err(unlisted(&window));
            };
            if self.grid.panes_per_window == 1 {
                // The window is its pane: emitted in place, as an evictor may change it.
                if let Some(contents) = entry.contents_mut(window.start) {
                    emitter.emit(function, &key, window, contents);
                }
            } else {
                let contents = if check_fired && fired.cleaned(&key, cleanup) {
                    // Brought back after the restore: only what came since.
                    Self::fresh_contents(entry, function, &window)
                } else {
                    Self::window_contents(entry, function, &window)
                };
                if let Some(mut contents) = contents {
                    emitter.emit(function, &key, window, &mut contents);
                }
            }
            if drains && entry.remove_pane(window.start) {
                table.remove(&key)?;
            }
        }
        if drains {
            // Left for the pane's drop: the keys passed over above.
            let start = window.start;
            self.keys.event_time_timers_at(start, &mut keys)?;
            for (key, ()) in keys.drain(..) {
                if !(check_fired && fired.suppresses(&key, max_timestamp)) {
                    self.keys
                        .delete_registered_event_time_timer(key, (), start)?;
                }
            }
        }
        self.keys_scratch = keys;
        Ok(())
    }

    /// Drops the panes whose last window the watermark cleaned up, removing their contents from
    /// the backend, and the `fresh` contents of panes that are gone.
    fn drop_cleaned(&mut self, watermark: i64) -> Result<(), StateError> {
        let mut table = self.store.value_table::<KeyPanes<A>>(PANES_STATE)?;
        while self
            .list
            .panes
            .front()
            .is_some_and(|pane| pane.cleanup <= watermark)
        {
            let Some(pane) = self.list.panes.pop_front() else {
                break;
            };
            while let Some(listed) = self.keys.pop_event_time_timer(pane.start)? {
                let key = &listed.key;
                let Some(entry) = table.get_mut(key)? else {
                    return Err(unlisted(&TimeWindow::new(pane.start, pane.end)));
                };
                // Panes go in start order: the dropped one is the key's first. Its `fresh`
                // contents go below, with those of other dropped panes.
                if entry.drop_through(pane.start) {
                    table.remove(key)?;
                }
            }
        }
        if !self.fresh_keys.is_empty() {
            let first = self.list.panes.front().map_or(i64::MAX, |pane| pane.start);
            let mut emptied = Vec::new();
            for key in &self.fresh_keys {
                let Some(entry) = table.get_mut(key)? else {
                    emptied.push(key.clone());
                    continue;
                };
                entry.fresh.retain(|(start, _)| *start >= first);
                if entry.fresh.is_empty() {
                    emptied.push(key.clone());
                }
            }
            for key in emptied {
                self.fresh_keys.remove(&key);
            }
        }
        self.list.last = 0;
        Ok(())
    }

    /// The panes as the heap path's checkpoint (see the module's "Design"): the backend's view
    /// frozen now, read and converted by checkpoint storage. `fired` is copied (it is small:
    /// marks of recently restored keys).
    ///
    /// # Errors
    ///
    /// The backend's, preparing its snapshot (reading it fails when it is completed).
    pub(super) fn snapshot(
        &mut self,
        fired: &FiredWindows<K>,
        fired_state: &'static str,
        watermark: i64,
        max_parallelism: u32,
        now_ms: i64,
    ) -> Result<PendingKeyedSnapshot, StateError> {
        let pending = self.store.snapshot(now_ms)?;
        let fired = fired.clone();
        let slide_ms = self.grid.slide_ms;
        Ok(PendingKeyedSnapshot::Deferred(Box::new(move || {
            let stored = pending.complete()?.take_state(PANES_STATE);
            let mut contents: Vec<(K, i64, A)> = Vec::with_capacity(stored.entries.len());
            let mut fresh: Vec<(K, i64, A)> = Vec::new();
            let mut marks: Vec<(K, (), (i64, Vec<i64>))> = Vec::new();
            for entry in &stored.entries {
                let key: K = decode_entry_key(PANES_STATE, entry)?;
                let panes: KeyPanes<A> = decode_entry_value(PANES_STATE, entry)?;
                let through = if fired.is_empty() {
                    watermark
                } else {
                    fired.snapshot_of(&key, watermark).0
                };
                let mut has_fired = false;
                for (start, acc) in panes.earlier.into_iter().chain([panes.latest]) {
                    let Some(acc) = acc else { continue };
                    // The earliest window over a pane ends with it.
                    has_fired |= start + slide_ms - 1 <= through;
                    contents.push((key.clone(), start, acc));
                }
                if fired.is_marked(&key) && !panes.fresh.is_empty() {
                    has_fired = true;
                    fresh.extend(
                        panes
                            .fresh
                            .into_iter()
                            .map(|(start, acc)| (key.clone(), start, acc)),
                    );
                }
                if has_fired {
                    let mark = fired.snapshot_of(&key, watermark);
                    marks.push((key, (), mark));
                }
            }
            let mut snapshot = KeyedStateSnapshot::default();
            for part in [
                deferred_keyed_state(PANES_STATE, max_parallelism, contents),
                deferred_keyed_state(FRESH_STATE, max_parallelism, fresh),
                deferred_keyed_state(fired_state, max_parallelism, marks),
            ]
            .into_iter()
            .flatten()
            {
                snapshot.merge(part.complete()?)?;
            }
            Ok(snapshot)
        })))
    }

    /// Restores the panes' contents (entries `((key, pane start), contents)` of
    /// [`PANES_STATE`]) and what restored keys received since an earlier restore (of
    /// [`FRESH_STATE`]), checking with `assigner` that every start is a pane start on its grid.
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] as the heap path's restore: a start off the grid, an entry
    /// twice, fresh contents of a key without contents in that pane (or of tumbling windows);
    /// the backend's, if it fails.
    pub(super) fn restore(
        &mut self,
        panes: Vec<((K, i64), A)>,
        fresh: Vec<((K, i64), A)>,
        assigner: &WindowAssigner,
        windows: &mut Vec<TimeWindow>,
    ) -> Result<(), StateError> {
        let mut per_key: BTreeMap<K, KeyPanes<A>> = BTreeMap::new();
        let mut per_start: BTreeMap<i64, Vec<K>> = BTreeMap::new();
        for ((key, start), acc) in panes {
            if !per_start.contains_key(&start) {
                check_pane_start(&self.grid, start, assigner, windows)?;
            }
            per_start.entry(start).or_default().push(key.clone());
            match per_key.get_mut(&key) {
                Some(entry) if entry.has(start) => return Err(twice(PANES_STATE, start)),
                Some(entry) => entry.insert(start, acc),
                None => {
                    per_key.insert(key, KeyPanes::new(start, acc));
                }
            }
        }
        for ((key, start), acc) in fresh {
            let Some(entry) = per_key.get_mut(&key) else {
                return Err(fresh_without_pane(start));
            };
            if self.grid.panes_per_window == 1 || !entry.has(start) {
                return Err(fresh_without_pane(start));
            }
            if entry.fresh.iter().any(|(s, _)| *s == start) {
                return Err(twice(FRESH_STATE, start));
            }
            entry.fresh.push((start, acc));
            self.fresh_keys.insert(key);
        }
        for (start, keys) in per_start {
            if self.list.position(start).is_none() {
                self.list.insert(&self.grid, start, ());
            }
            for key in keys {
                self.keys.register_new_event_time_timer(key, (), start)?;
            }
        }
        self.list.last = 0;
        let mut table = self.store.value_table::<KeyPanes<A>>(PANES_STATE)?;
        for (key, entry) in per_key {
            if table.get(&key)?.is_some() {
                return Err(StateError::Corrupt(format!(
                    "state '{PANES_STATE}': a key's panes are restored twice"
                )));
            }
            table.insert(key, entry)?;
        }
        Ok(())
    }
}

impl<K, A> PaneStore<K, A> for BackendPanes<K, A>
where
    K: Key,
    A: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    fn locate(
        &mut self,
        time: i64,
        assigner: &WindowAssigner,
        windows: &mut Vec<TimeWindow>,
        watermark: i64,
    ) -> Result<Option<usize>, WindowError> {
        self.list
            .locate(&self.grid, time, assigner, windows, watermark, |_| ())
    }

    fn has_fired(&self, index: usize, watermark: i64) -> bool {
        self.list.panes[index].has_fired(watermark)
    }

    fn windows_of(&self, index: usize) -> WindowsOf {
        self.grid.windows_of(self.list.panes[index].start)
    }

    fn add<T, F>(
        &mut self,
        index: usize,
        function: &mut F,
        key: K,
        value: T,
        timestamp: Option<i64>,
    ) -> Result<(), StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let start = self.list.panes[index].start;
        let mut table = self.store.value_table::<KeyPanes<A>>(PANES_STATE)?;
        match table.get_mut(&key)? {
            Some(entry) => match entry.slot_mut(start) {
                Some(slot) => *slot = Some(function.add(slot.take(), value, timestamp)),
                None => {
                    entry.insert(start, function.add(None, value, timestamp));
                    self.keys.register_new_event_time_timer(key, (), start)?;
                }
            },
            None => {
                let entry = KeyPanes::new(start, function.add(None, value, timestamp));
                table.insert(key.clone(), entry)?;
                self.keys.register_new_event_time_timer(key, (), start)?;
            }
        }
        Ok(())
    }

    fn add_fresh<T, F>(
        &mut self,
        index: usize,
        function: &mut F,
        key: K,
        value: T,
        timestamp: Option<i64>,
    ) -> Result<(), StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        if self.grid.panes_per_window == 1 {
            return Ok(());
        }
        let start = self.list.panes[index].start;
        let mut table = self.store.value_table::<KeyPanes<A>>(PANES_STATE)?;
        // The record was just added to the pane, so the key has an entry.
        let Some(entry) = table.get_mut(&key)? else {
            return Err(unlisted(&TimeWindow::new(
                start,
                start + self.grid.slide_ms,
            )));
        };
        // The order of `fresh` does not matter (it is sorted where merged).
        let earlier = entry
            .fresh
            .iter()
            .position(|(s, _)| *s == start)
            .map(|at| entry.fresh.swap_remove(at).1);
        entry
            .fresh
            .push((start, function.add(earlier, value, timestamp)));
        self.fresh_keys.insert(key);
        Ok(())
    }

    fn fire_late_record<T, F>(
        &mut self,
        index: usize,
        function: &mut F,
        key: &K,
        emitter: &mut Emitter<'_, '_, F::Out>,
        fired: &FiredWindows<K>,
    ) -> Result<(), StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let watermark = emitter.watermark;
        for window in self.grid.windows_of(self.list.panes[index].start) {
            if self.grid.cleanup_time(&window) <= watermark || window.max_timestamp() > watermark {
                continue;
            }
            self.fire_key(function, key, window, emitter, fired)?;
        }
        Ok(())
    }

    fn advance<T, F>(
        &mut self,
        previous: i64,
        function: &mut F,
        emitter: &mut Emitter<'_, '_, F::Out>,
        fired: &FiredWindows<K>,
    ) -> Result<(), StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let watermark = emitter.watermark;
        let mut windows = std::mem::take(&mut self.fire_scratch);
        windows.clear();
        self.list
            .windows_to_fire(&self.grid, previous, watermark, &mut windows);
        for window in windows.drain(..) {
            self.fire_window(function, window, emitter, fired)?;
        }
        self.fire_scratch = windows;
        self.drop_cleaned(watermark)
    }

    fn retain_fresh(&mut self, fired: &FiredWindows<K>) -> Result<(), StateError> {
        if self.fresh_keys.is_empty() {
            return Ok(());
        }
        let unmarked: Vec<K> = self
            .fresh_keys
            .iter()
            .filter(|key| !fired.is_marked(key))
            .cloned()
            .collect();
        let mut table = self.store.value_table::<KeyPanes<A>>(PANES_STATE)?;
        for key in unmarked {
            self.fresh_keys.remove(&key);
            if let Some(entry) = table.get_mut(&key)? {
                entry.fresh.clear();
            }
        }
        Ok(())
    }

    fn snapshot(
        &mut self,
        fired: &FiredWindows<K>,
        watermark: i64,
        max_parallelism: u32,
        now_ms: i64,
    ) -> Result<Vec<PendingKeyedSnapshot>, StateError> {
        Ok(vec![Self::snapshot(
            self,
            fired,
            FIRED_STATE,
            watermark,
            max_parallelism,
            now_ms,
        )?])
    }

    fn restore(
        &mut self,
        panes: Vec<((K, i64), A)>,
        fresh: Vec<((K, i64), A)>,
        assigner: &WindowAssigner,
        windows: &mut Vec<TimeWindow>,
    ) -> Result<(), StateError> {
        Self::restore(self, panes, fresh, assigner, windows)
    }

    #[cfg(test)]
    fn entries_in_memory(&self) -> usize {
        Self::entries_in_memory(self)
    }
}

/// Merges `contents` in their order (`None` for none).
fn merge_in_order<'a, K, T, A, F>(
    function: &mut F,
    contents: impl Iterator<Item = &'a A>,
) -> Option<A>
where
    A: Clone + 'a,
    F: WindowFunctionCore<K, T, Acc = A>,
{
    let mut merged: Option<A> = None;
    for contents in contents {
        merged = Some(match merged {
            None => contents.clone(),
            Some(earlier) => function.merge(earlier, contents.clone()),
        });
    }
    merged
}

/// A key listed in the index without its contents in the backend: the backend lost what the
/// index promised.
fn unlisted(window: &TimeWindow) -> StateError {
    StateError::Corrupt(format!(
        "state '{PANES_STATE}': a key listed in the panes of {window:?} has no contents there"
    ))
}
