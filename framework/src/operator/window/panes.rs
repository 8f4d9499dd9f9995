//! Tumbling and sliding event-time windows with the default trigger, kept as *panes*: the window
//! operator's fast path for its most common use.
//!
//! The generic operator keeps contents per (key, window) and a trigger and cleanup timer per
//! (key, window), so a record in a 10 s window sliding every 1 s costs ten additions and twenty
//! timer registrations in ordered maps. With [`EventTimeTrigger`](super::trigger::EventTimeTrigger)
//! and a fixed-size assigner much of that is implied and need not be stored:
//!
//! - Time is cut into panes of one slide (`[start, start + slide)`, on the assigner's grid); the
//!   windows are the runs of `size / slide` consecutive panes. A record is added once, to its
//!   pane, per key; a window's contents are its panes' contents merged in pane order at firing.
//!   For tumbling windows (one pane per window) the pane *is* the window, and the contents are
//!   emitted in place (an evictor sees and changes them exactly as in the generic path).
//! - Timers are not stored: with the event-time trigger, (key, window) fires when the watermark
//!   first reaches the window's `max_timestamp` if the key has contents in the window by then,
//!   and its state goes when the watermark reaches `max_timestamp + allowed_lateness`. So a
//!   watermark fires the windows whose `max_timestamp` it passed, in `max_timestamp` order and per
//!   window in key order (the generic timers' `(time, key, window)` order), and drops the panes
//!   whose last window it cleaned up.
//!
//! ## Equivalence with the generic path
//!
//! Results, their order and timestamps, and late and dropped records are the generic path's:
//!
//! - A record's windows are those of its pane. It is late for a window when the window's cleanup
//!   time is at or below the watermark; the pane's last window is the latest to be cleaned up, so
//!   the record is accepted by some window iff not by that test on the last window, and then it
//!   is in every window of the pane that can still fire (the others never fire again).
//! - A pane holding contents of a key exists only while some window over it can fire, so a
//!   window fires exactly the keys with contents in one of its panes, which are exactly the keys
//!   whose record made the generic trigger register the window's timer: every such record came
//!   while the watermark was below the window's end.
//! - A record for a window the watermark already passed (within the allowed lateness) fires the
//!   window again at once, after the record was added, in the assigner's window order.
//!
//! With more than one pane per window (sliding windows) the function must combine panes
//! ([`WindowFunctionCore::combines_panes`]): merging the contents of two panes must give what
//! adding their elements one by one gives. Only aggregate functions opt in: their `merge` is part
//! of the user's contract (Flink's `AggregateFunction.merge`, which session windows rely on too).
//! Reduce closures do not, because they may depend on arrival order (a reduce keeping the first
//! element): sliding reduces take the generic path and fold each window's elements in arrival
//! order, as Flink does. An aggregate whose `merge` does not keep the contract exactly (a
//! floating-point sum rounds per pane) can differ from the generic path in its last bits.
//!
//! ## Performance
//!
//! - Dropped panes' maps are kept (a bounded number) for new panes, which then neither allocate
//!   nor grow: a pane holds one slide of every key, and panes come and go at the rate of event
//!   time. A kept map loses its contents but keeps the keys that had some, with `None`: those
//!   keys mostly come back, and a new pane sweeps its map once (into the cache) instead of
//!   missing the cache at the first record of every key. Keys without contents are ignored
//!   everywhere, and dropped when the map is kept again, so a map holds the keys of at most two
//!   panes.
//! - A record for the pane the last record went to, none of whose windows fired yet, is added
//!   without looking further ([`PaneWindows::current_pane`]).
//! - Firing sorts a window's keys with [`KeyOrder`] (a radix sort for integer keys) in vectors
//!   kept between firings.
//!
//! ## Where the contents live
//!
//! [`PaneWindows`] keeps the contents on the heap: the memory backend's form. With LMDB the
//! operator uses [`BackendPanes`](super::backend_panes::BackendPanes) instead, which keeps them
//! in the state backend. Both share the pane geometry ([`PaneGrid`]), the pane list and how a
//! watermark picks the windows to fire ([`PaneList`]), and answer the operator through
//! [`PaneStore`]; they differ only in where a key's contents are read and written.
//!
//! ## Checkpoints
//!
//! A checkpoint stores each pane's contents per key (state `_window_panes`, entry
//! `(key, pane start) -> contents`, in the key group of the key), which is what the generic
//! path's contents per window are made of, and, for keys with contents in a window that already
//! fired, which windows fired ([`FiredWindows`]): the generic path's missing trigger timers. A
//! restore puts the entries back into their panes (checking that each start is on the
//! assigner's grid) and the operator's watermark starts at `i64::MIN`, as the generic path's.
//!
//! Until the watermark is back where it was, a record the original run found late may bring
//! back a window whose state was cleaned up before the checkpoint (Flink's semantics: the
//! watermark is not checkpointed). The generic path then starts that window afresh; a sliding
//! window's panes may still hold older contents for later windows, so records of restored keys
//! are also kept apart per pane ([`PaneWindows::add_fresh`], state `_window_panes_fresh`) and
//! such a window emits only those.
//!
//! ## Invariants
//!
//! - Panes are sorted by start, pairwise disjoint, on the grid, and never without contents.
//! - A pane is dropped when the watermark reaches the cleanup time of its last window.

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use serde::de::DeserializeOwned;

use super::fired::{FIRED_STATE, FiredWindows};
use super::functions::{Emitter, WindowFunctionCore};
use super::key_order::KeyOrder;
use super::{TimeWindow, WindowAssign, WindowAssigner, WindowError};
use crate::api::Key;
use crate::operator::checkpointing::deferred_keyed_state;
use crate::state::{PendingKeyedSnapshot, StableHash, StateError};

/// The keyed state holding the panes' contents: `(key, pane start) -> contents`.
pub(super) const PANES_STATE: &str = "_window_panes";
/// The keyed state holding what restored keys received since a restore, for windows cleaned up
/// before it (see [`PaneWindows::add_fresh`]): `(key, pane start) -> contents`.
pub(super) const FRESH_STATE: &str = "_window_panes_fresh";

/// The geometry of panes: windows of `size_ms` sliding by `slide_ms` (equal for tumbling
/// windows), where the slide divides the size, kept `allowed_lateness_ms` after they end.
#[derive(Debug, Clone, Copy)]
pub(super) struct PaneGrid {
    pub(super) size_ms: i64,
    pub(super) slide_ms: i64,
    /// `size_ms / slide_ms`, at least 1.
    pub(super) panes_per_window: i64,
    pub(super) allowed_lateness_ms: i64,
}

impl PaneGrid {
    pub(super) fn new(size_ms: i64, slide_ms: i64, allowed_lateness_ms: i64) -> Self {
        assert!(
            slide_ms > 0 && size_ms > 0 && size_ms % slide_ms == 0,
            "panes need a slide that divides the size"
        );
        Self {
            size_ms,
            slide_ms,
            panes_per_window: size_ms / slide_ms,
            allowed_lateness_ms,
        }
    }

    pub(super) fn cleanup_time(&self, window: &TimeWindow) -> i64 {
        window
            .max_timestamp()
            .saturating_add(self.allowed_lateness_ms)
    }

    /// The windows over the pane starting at `start`, in the assigner's order (latest start
    /// first).
    pub(super) fn windows_of(&self, start: i64) -> WindowsOf {
        WindowsOf {
            start,
            size_ms: self.size_ms,
            slide_ms: self.slide_ms,
            next: 0,
            count: self.panes_per_window,
        }
    }
}

/// The windows over one pane, latest start first (see [`PaneGrid::windows_of`]).
#[derive(Debug, Clone)]
pub(super) struct WindowsOf {
    start: i64,
    size_ms: i64,
    slide_ms: i64,
    next: i64,
    count: i64,
}

impl Iterator for WindowsOf {
    type Item = TimeWindow;

    fn next(&mut self) -> Option<TimeWindow> {
        if self.next >= self.count {
            return None;
        }
        // Each is a window the assigner gave for this pane, so nothing overflows.
        let window_start = self.start - self.next * self.slide_ms;
        self.next += 1;
        Some(TimeWindow::new(window_start, window_start + self.size_ms))
    }
}

/// The contents of all keys in one slide of time; `C` holds them (a map of contents on the
/// heap, the keys with contents when the contents are in the state backend).
pub(super) struct Pane<C> {
    pub(super) start: i64,
    /// `start + slide`.
    pub(super) end: i64,
    /// The cleanup time of the last window over this pane (the one starting with it): the pane
    /// is dropped, and records for it are late, once the watermark reaches it.
    pub(super) cleanup: i64,
    pub(super) contents: C,
}

impl<C> Pane<C> {
    /// Whether the watermark `watermark` cleaned up every window over this pane.
    pub(super) fn is_late(&self, watermark: i64) -> bool {
        self.cleanup <= watermark
    }

    /// Whether some window over this pane already fired at `watermark`: the earliest window
    /// over a pane ends with it.
    #[inline]
    pub(super) fn has_fired(&self, watermark: i64) -> bool {
        self.end - 1 <= watermark
    }
}

/// The panes of an operator, sorted by start, wherever their contents are.
pub(super) struct PaneList<C> {
    pub(super) panes: VecDeque<Pane<C>>,
    /// The index of the pane the last record went to: records mostly go to the same pane.
    pub(super) last: usize,
}

impl<C> PaneList<C> {
    pub(super) fn new() -> Self {
        Self {
            panes: VecDeque::new(),
            last: 0,
        }
    }

    /// The index of the pane of a record at `time`, created with `contents` if needed; `None`
    /// if the record is late for every window of its pane. A new pane's windows come from
    /// `assigner` (with its errors, as in the generic path), written to the scratch vector
    /// `windows`.
    ///
    /// # Errors
    ///
    /// The assigner's, for a time whose windows do not fit in `i64`.
    #[inline]
    pub(super) fn locate(
        &mut self,
        grid: &PaneGrid,
        time: i64,
        assigner: &WindowAssigner,
        windows: &mut Vec<TimeWindow>,
        watermark: i64,
        contents: impl FnOnce(&Self) -> C,
    ) -> Result<Option<usize>, WindowError> {
        let index = match self.find(time) {
            Some(index) => index,
            None => {
                windows.clear();
                assigner.assign(time, windows)?;
                // The latest window comes first, and starts the pane of `time`.
                let Some(latest) = windows.first() else {
                    return Ok(None);
                };
                debug_assert_eq!(windows.len() as i64, grid.panes_per_window);
                if grid.cleanup_time(latest) <= watermark {
                    return Ok(None);
                }
                let contents = contents(self);
                self.insert(grid, latest.start, contents)
            }
        };
        if self.panes[index].is_late(watermark) {
            return Ok(None);
        }
        Ok(Some(index))
    }

    /// The index of the pane holding `time`, if there is one.
    #[inline]
    pub(super) fn find(&mut self, time: i64) -> Option<usize> {
        if let Some(pane) = self.panes.get(self.last)
            && pane.start <= time
            && time < pane.end
        {
            return Some(self.last);
        }
        let index = self.panes.partition_point(|pane| pane.end <= time);
        let pane = self.panes.get(index)?;
        if pane.start <= time {
            self.last = index;
            Some(index)
        } else {
            None
        }
    }

    /// Creates the pane starting at `start`, the start of the latest window of the times in
    /// it, as the assigner gave it, with `contents`; returns its index.
    pub(super) fn insert(&mut self, grid: &PaneGrid, start: i64, contents: C) -> usize {
        let index = self.panes.partition_point(|pane| pane.start < start);
        debug_assert!(self.panes.get(index).is_none_or(|p| p.start != start));
        // The assigner computed the window `[start, start + size)` without overflow, and a
        // slide is at most a size.
        let latest = TimeWindow::new(start, start + grid.size_ms);
        self.panes.insert(
            index,
            Pane {
                start,
                end: start + grid.slide_ms,
                cleanup: grid.cleanup_time(&latest),
                contents,
            },
        );
        self.last = index;
        index
    }

    /// The index of the pane starting at `start`, if there is one.
    pub(super) fn position(&self, start: i64) -> Option<usize> {
        self.panes
            .binary_search_by(|pane| pane.start.cmp(&start))
            .ok()
    }

    /// The panes of `window`, as an index range.
    pub(super) fn panes_of(&self, window: &TimeWindow) -> std::ops::Range<usize> {
        let first = self.panes.partition_point(|pane| pane.start < window.start);
        let end = self.panes.partition_point(|pane| pane.start < window.end);
        first..end
    }

    /// The windows a watermark advancing from `previous` to `watermark` fires: those over the
    /// panes whose `max_timestamp` lies in between, each once, in start (and so
    /// `max_timestamp`) order, appended to `out`.
    pub(super) fn windows_to_fire(
        &self,
        grid: &PaneGrid,
        previous: i64,
        watermark: i64,
        out: &mut Vec<TimeWindow>,
    ) {
        let (size, slide) = (grid.size_ms, grid.slide_ms);
        // Panes whose every window fired before are skipped; the candidates are the windows over
        // the other panes.
        let mut index = self
            .panes
            .partition_point(|pane| pane.start + size - 1 <= previous);
        let mut next_start = i64::MIN;
        'panes: while let Some(pane) = self.panes.get(index) {
            let pane_start = pane.start;
            let earliest = pane_start - (grid.panes_per_window - 1) * slide;
            let mut start = earliest.max(next_start);
            while start <= pane_start {
                let max_timestamp = start + size - 1;
                if max_timestamp > watermark {
                    break 'panes;
                }
                if max_timestamp > previous {
                    out.push(TimeWindow::new(start, start + size));
                }
                start += slide;
            }
            next_start = pane_start + slide;
            index += 1;
        }
    }
}

/// What the window operator asks of its panes, wherever their contents are: on the heap
/// ([`PaneWindows`]) or in the keyed state backend
/// ([`BackendPanes`](super::backend_panes::BackendPanes)). Both follow the module's semantics;
/// the heap never fails, the backend reports its failures.
pub(super) trait PaneStore<K, A> {
    /// The index of the pane of a record at `time`, created if needed; `None` if the record is
    /// late for every window of its pane (see [`PaneList::locate`]).
    ///
    /// # Errors
    ///
    /// The assigner's, for a time whose windows do not fit in `i64`.
    fn locate(
        &mut self,
        time: i64,
        assigner: &WindowAssigner,
        windows: &mut Vec<TimeWindow>,
        watermark: i64,
    ) -> Result<Option<usize>, WindowError>;

    /// Whether some window over the pane at `index` already fired at `watermark`.
    fn has_fired(&self, index: usize, watermark: i64) -> bool;

    /// The windows over the pane at `index`, in the assigner's order (latest start first).
    fn windows_of(&self, index: usize) -> WindowsOf;

    /// Adds `value` to the contents of `key` in the pane at `index`.
    fn add<T, F>(
        &mut self,
        index: usize,
        function: &mut F,
        key: K,
        value: T,
        timestamp: Option<i64>,
    ) -> Result<(), StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>;

    /// After a restore, keeps `value` (already added) apart too: see
    /// [`PaneWindows::add_fresh`].
    fn add_fresh<T, F>(
        &mut self,
        index: usize,
        function: &mut F,
        key: K,
        value: T,
        timestamp: Option<i64>,
    ) -> Result<(), StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>;

    /// Fires the windows of the pane at `index` that already fired again for `key`: see
    /// [`PaneWindows::fire_late_record`].
    fn fire_late_record<T, F>(
        &mut self,
        index: usize,
        function: &mut F,
        key: &K,
        emitter: &mut Emitter<'_, '_, F::Out>,
        fired: &FiredWindows<K>,
    ) -> Result<(), StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>;

    /// The watermark advanced from `previous` to `emitter.watermark`: see
    /// [`PaneWindows::advance`].
    fn advance<T, F>(
        &mut self,
        previous: i64,
        function: &mut F,
        emitter: &mut Emitter<'_, '_, F::Out>,
        fired: &FiredWindows<K>,
    ) -> Result<(), StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>;

    /// Forgets what keys no longer marked in `fired` received since the restore.
    fn retain_fresh(&mut self, fired: &FiredWindows<K>) -> Result<(), StateError>;

    /// The pane on the heap that a record at `time` simply goes to: the pane the last record
    /// went to, none of whose windows fired yet (see [`PaneWindows::current_pane`]). The
    /// backend form has none: its records all take [`locate`](Self::locate) and
    /// [`add`](Self::add).
    #[inline]
    fn current_pane(
        &mut self,
        _time: i64,
        _watermark: i64,
    ) -> Option<&mut Pane<HeapContents<K, A>>> {
        None
    }

    /// The panes for a checkpoint at `watermark`: their contents (state [`PANES_STATE`]), what
    /// restored keys received since the restore ([`FRESH_STATE`]) and the marks of `fired`
    /// ([`FIRED_STATE`]); see the module's "Checkpoints".
    ///
    /// # Errors
    ///
    /// The backend's, preparing its snapshot.
    fn snapshot(
        &mut self,
        fired: &FiredWindows<K>,
        watermark: i64,
        max_parallelism: u32,
        now_ms: i64,
    ) -> Result<Vec<PendingKeyedSnapshot>, StateError>
    where
        K: Key,
        A: Serialize + DeserializeOwned + Send + 'static;

    /// Restores the panes' contents (entries `((key, pane start), contents)` of
    /// [`PANES_STATE`]) and what restored keys received since an earlier restore (of
    /// [`FRESH_STATE`]), checking with `assigner` that every start is a pane start on its grid
    /// (written to the scratch vector `windows`).
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] for a start off the grid, an entry twice, fresh contents of a key
    /// without contents in that pane (or of tumbling windows); the backend's, if it fails.
    fn restore(
        &mut self,
        panes: Vec<((K, i64), A)>,
        fresh: Vec<((K, i64), A)>,
        assigner: &WindowAssigner,
        windows: &mut Vec<TimeWindow>,
    ) -> Result<(), StateError>
    where
        K: Key,
        A: Serialize + DeserializeOwned + Send + 'static;

    /// The entries its stores and index hold in memory (none for the heap form, which keeps
    /// no store).
    #[cfg(test)]
    fn entries_in_memory(&self) -> usize;
}

/// A pane's contents on the heap: per key, `None` for a key kept from the map's previous pane
/// without contents in this one (see the module's "Performance" notes), and while a function
/// adds to them.
pub(super) type HeapContents<K, A> = FxHashMap<K, Option<A>>;

/// The contents of tumbling or sliding windows as panes, per key, on the heap.
pub(super) struct PaneWindows<K, A> {
    grid: PaneGrid,
    list: PaneList<HeapContents<K, A>>,
    /// Contents maps of dropped panes, without contents, kept for new panes (at most
    /// [`SPARE_MAPS_MAX`]): a new pane then neither allocates nor grows its map.
    spare: Vec<HeapContents<K, A>>,
    /// Sliding windows after a restore: what keys with windows that fired before the checkpoint
    /// received since, per (key, pane start) (see [`PaneWindows::add_fresh`]). Empty otherwise.
    fresh: FxHashMap<(K, i64), A>,
    /// The allocation of the vector in which a tumbling window's keys are sorted at firing,
    /// kept empty between firings (see [`recycle`]): it holds one entry per key.
    sorted_scratch: Vec<(K, usize)>,
    /// Sorts a window's keys at firing.
    key_order: KeyOrder,
    /// The map in which a sliding window's panes are merged at firing, and the vector in which
    /// the merged contents are sorted: empty between firings, kept for their allocations.
    merge_scratch: FxHashMap<K, Option<A>>,
    merged_scratch: Vec<(K, A)>,
    /// The windows a watermark fires.
    fire_scratch: Vec<TimeWindow>,
}

/// How many maps of dropped panes [`PaneWindows`] keeps for reuse: about the panes a watermark
/// interval drops at high rates (each holds one slide of every key).
const SPARE_MAPS_MAX: usize = 64;

/// An empty vector with the allocation of `vec`, for elements of another type: a scratch
/// vector of references can so keep its allocation beyond their lifetime. The standard library
/// collects in place when the layouts agree, as they do for the pointer-sized element types
/// used here; otherwise this merely allocates anew.
fn recycle<T, U>(mut vec: Vec<T>) -> Vec<U> {
    vec.clear();
    vec.into_iter().filter_map(|_| None).collect()
}

impl<K, A> Pane<HeapContents<K, A>> {
    /// Adds `value` to the contents of `key`.
    #[inline]
    pub(super) fn add<T, F>(&mut self, function: &mut F, key: K, value: T, timestamp: Option<i64>)
    where
        K: Hash + Eq,
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        // A key mostly has contents already: look it up without moving it into an entry.
        match self.contents.get_mut(&key) {
            Some(slot) => *slot = Some(function.add(slot.take(), value, timestamp)),
            None => {
                let contents = function.add(None, value, timestamp);
                self.contents.insert(key, Some(contents));
            }
        }
    }
}

impl<K: Hash + Ord + Clone + 'static, A: Clone> PaneWindows<K, A> {
    /// Panes for windows of `size_ms` sliding by `slide_ms` (equal for tumbling windows), where
    /// `slide_ms` divides `size_ms`.
    pub(super) fn new(size_ms: i64, slide_ms: i64, allowed_lateness_ms: i64) -> Self {
        Self {
            grid: PaneGrid::new(size_ms, slide_ms, allowed_lateness_ms),
            list: PaneList::new(),
            spare: Vec::new(),
            fresh: FxHashMap::default(),
            sorted_scratch: Vec::new(),
            key_order: KeyOrder::default(),
            merge_scratch: FxHashMap::default(),
            merged_scratch: Vec::new(),
            fire_scratch: Vec::new(),
        }
    }

    /// The geometry of the panes.
    pub(super) fn grid(&self) -> PaneGrid {
        self.grid
    }

    /// Whether no pane is open.
    pub(super) fn is_empty(&self) -> bool {
        self.list.panes.is_empty()
    }

    /// The pane of a record at `time` if it is the pane the last record went to and none of
    /// its windows fired yet: the common case, where the record is simply added to it (what
    /// [`locate`](PaneStore::locate) and [`add`](PaneStore::add) then do, without creating a
    /// pane, rejecting the record or firing again).
    #[inline]
    pub(super) fn current_pane(
        &mut self,
        time: i64,
        watermark: i64,
    ) -> Option<&mut Pane<HeapContents<K, A>>> {
        let pane = self.list.panes.get_mut(self.list.last)?;
        // A pane some of whose windows are cleaned up had a window fire before, so the record
        // is not late either.
        (pane.start <= time && time < pane.end && !pane.has_fired(watermark)).then_some(pane)
    }

    /// A new pane's (empty) contents: a kept map of a dropped pane, or a new one.
    fn new_contents(
        spare: &mut Vec<HeapContents<K, A>>,
        list: &PaneList<HeapContents<K, A>>,
    ) -> HeapContents<K, A> {
        match spare.pop() {
            Some(mut contents) => {
                // The map has no contents, only (most of) the keys it had contents for in its
                // last pane. This pass over it brings it into the cache in one sweep, instead
                // of a cache miss at the first record of each key; those keys mostly come back.
                for slot in contents.values_mut() {
                    *slot = None;
                }
                contents
            }
            // Sized like the latest pane, which saves growing it key by key.
            None => FxHashMap::with_capacity_and_hasher(
                list.panes.back().map_or(0, |pane| pane.contents.len()),
                Default::default(),
            ),
        }
    }

    /// After a restore, `value` (already added to the pane at `index`) came for a key with
    /// windows that fired before the checkpoint: keeps it apart too. A window over several panes
    /// whose state was cleaned up before the checkpoint ([`FiredWindows::cleaned`]) and that
    /// such a record brings back holds only what came since the restore, as in the generic
    /// path, while the pane it shares with later windows keeps everything. (A tumbling window's
    /// pane went with its state, so it needs nothing apart.)
    pub(super) fn add_fresh<T, F>(
        &mut self,
        index: usize,
        function: &mut F,
        key: K,
        value: T,
        timestamp: Option<i64>,
    ) where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        if self.grid.panes_per_window == 1 {
            return;
        }
        let slot = (key, self.list.panes[index].start);
        let contents = self.fresh.remove(&slot);
        let contents = function.add(contents, value, timestamp);
        self.fresh.insert(slot, contents);
    }

    /// Forgets what keys no longer marked in `fired` received since the restore: their windows
    /// cleaned up before the checkpoint are late now.
    pub(super) fn retain_fresh(&mut self, fired: &FiredWindows<K>) {
        if !self.fresh.is_empty() {
            self.fresh.retain(|(key, _), _| fired.is_marked(key));
        }
    }

    /// What `key` received since the restore in the panes of `window`, merged in pane order.
    fn fresh_contents<T, F>(&self, function: &mut F, key: &K, window: &TimeWindow) -> Option<A>
    where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let mut merged: Option<A> = None;
        for pane in self.list.panes.range(self.list.panes_of(window)) {
            if let Some(contents) = self.fresh.get(&(key.clone(), pane.start)) {
                merged = Some(match merged {
                    None => contents.clone(),
                    Some(earlier) => function.merge(earlier, contents.clone()),
                });
            }
        }
        merged
    }

    /// A record for the pane at `index` (already added) came after some of the pane's windows
    /// fired: fires those that are not cleaned up yet for `key` again, at once, in the
    /// assigner's order, as the generic trigger does.
    pub(super) fn fire_late_record<T, F>(
        &mut self,
        index: usize,
        function: &mut F,
        key: &K,
        emitter: &mut Emitter<'_, '_, F::Out>,
        fired: &FiredWindows<K>,
    ) where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let watermark = emitter.watermark;
        for window in self.grid.windows_of(self.list.panes[index].start) {
            if self.grid.cleanup_time(&window) <= watermark || window.max_timestamp() > watermark {
                continue;
            }
            self.fire_key(function, key, window, emitter, fired);
        }
    }

    /// Emits `window` for `key` if the key has contents in it.
    fn fire_key<T, F>(
        &mut self,
        function: &mut F,
        key: &K,
        window: TimeWindow,
        emitter: &mut Emitter<'_, '_, F::Out>,
        fired: &FiredWindows<K>,
    ) where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let range = self.list.panes_of(&window);
        if self.grid.panes_per_window == 1 {
            for pane in self.list.panes.range_mut(range) {
                if let Some(Some(contents)) = pane.contents.get_mut(key) {
                    emitter.emit(function, key, window, contents);
                }
            }
            return;
        }
        if !fired.is_empty() && fired.cleaned(key, self.grid.cleanup_time(&window)) {
            if let Some(mut contents) = self.fresh_contents(function, key, &window) {
                emitter.emit(function, key, window, &mut contents);
            }
            return;
        }
        let mut merged: Option<A> = None;
        for pane in self.list.panes.range(range) {
            if let Some(Some(contents)) = pane.contents.get(key) {
                merged = Some(match merged {
                    None => contents.clone(),
                    Some(earlier) => function.merge(earlier, contents.clone()),
                });
            }
        }
        if let Some(mut contents) = merged {
            emitter.emit(function, key, window, &mut contents);
        }
    }

    /// Emits `window` for every key with contents in it, in key order, except the keys for
    /// which `fired` says the window fired before the checkpoint.
    fn fire_window<T, F>(
        &mut self,
        function: &mut F,
        window: TimeWindow,
        emitter: &mut Emitter<'_, '_, F::Out>,
        fired: &FiredWindows<K>,
    ) where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let range = self.list.panes_of(&window);
        let max_timestamp = window.max_timestamp();
        let check_fired = !fired.is_empty();
        if self.grid.panes_per_window == 1 {
            let mut keyed: Vec<(K, &mut A)> = recycle(std::mem::take(&mut self.sorted_scratch));
            for pane in self.list.panes.range_mut(range) {
                // Keys are copied next to their contents so that sorting does not chase pointers.
                keyed.extend(
                    pane.contents
                        .iter_mut()
                        .filter_map(|(key, contents)| contents.as_mut().map(|c| (key.clone(), c))),
                );
                self.key_order.sort(&mut keyed);
                for (key, contents) in keyed.drain(..) {
                    if check_fired && fired.suppresses(&key, max_timestamp) {
                        continue;
                    }
                    emitter.emit(function, &key, window, contents);
                }
            }
            self.sorted_scratch = recycle(keyed);
            return;
        }
        // Merge the panes' contents per key, in pane order.
        let mut merged = std::mem::take(&mut self.merge_scratch);
        for pane in self.list.panes.range(range) {
            for (key, contents) in &pane.contents {
                let Some(contents) = contents else { continue };
                match merged.get_mut(key) {
                    Some(slot) => {
                        if let Some(earlier) = slot.take() {
                            *slot = Some(function.merge(earlier, contents.clone()));
                        }
                    }
                    None => {
                        merged.insert(key.clone(), Some(contents.clone()));
                    }
                }
            }
        }
        let mut keyed = std::mem::take(&mut self.merged_scratch);
        keyed.extend(
            merged
                .drain()
                .filter_map(|(key, contents)| contents.map(|c| (key, c))),
        );
        self.merge_scratch = merged;
        self.key_order.sort(&mut keyed);
        let cleanup = self.grid.cleanup_time(&window);
        for (key, mut contents) in keyed.drain(..) {
            if check_fired {
                if fired.suppresses(&key, max_timestamp) {
                    continue;
                }
                if fired.cleaned(&key, cleanup) {
                    // Brought back after the restore: only what came since.
                    match self.fresh_contents(function, &key, &window) {
                        Some(fresh) => contents = fresh,
                        None => continue,
                    }
                }
            }
            emitter.emit(function, &key, window, &mut contents);
        }
        self.merged_scratch = keyed;
    }

    /// The watermark advanced from `previous` to `emitter.watermark`: fires every window whose
    /// `max_timestamp` lies in between, in `max_timestamp` order (but not for keys that `fired`
    /// says it fired for before the checkpoint), then drops the panes whose last window is
    /// cleaned up.
    pub(super) fn advance<T, F>(
        &mut self,
        previous: i64,
        function: &mut F,
        emitter: &mut Emitter<'_, '_, F::Out>,
        fired: &FiredWindows<K>,
    ) where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let watermark = emitter.watermark;
        let mut windows = std::mem::take(&mut self.fire_scratch);
        self.list
            .windows_to_fire(&self.grid, previous, watermark, &mut windows);
        for window in windows.drain(..) {
            self.fire_window(function, window, emitter, fired);
        }
        self.fire_scratch = windows;
        while self
            .list
            .panes
            .front()
            .is_some_and(|pane| pane.cleanup <= watermark)
        {
            if let Some(mut pane) = self.list.panes.pop_front()
                && self.spare.len() < SPARE_MAPS_MAX
            {
                // The contents go now; the keys that had contents stay, without, for the pane
                // that reuses the map (keys without contents, left from its previous pane, go:
                // a map keeps at most two panes' keys).
                pane.contents
                    .retain(|_, contents| contents.take().is_some());
                self.spare.push(pane.contents);
            }
        }
        if !self.fresh.is_empty() {
            let first = self.list.panes.front().map_or(i64::MAX, |pane| pane.start);
            self.fresh.retain(|(_, start), _| *start >= first);
        }
        self.list.last = 0;
    }
}

impl<K: Hash + Ord + Clone + 'static, A: Clone> PaneStore<K, A> for PaneWindows<K, A> {
    #[inline]
    fn locate(
        &mut self,
        time: i64,
        assigner: &WindowAssigner,
        windows: &mut Vec<TimeWindow>,
        watermark: i64,
    ) -> Result<Option<usize>, WindowError> {
        let spare = &mut self.spare;
        self.list
            .locate(&self.grid, time, assigner, windows, watermark, |list| {
                Self::new_contents(spare, list)
            })
    }

    fn has_fired(&self, index: usize, watermark: i64) -> bool {
        self.list.panes[index].has_fired(watermark)
    }

    fn windows_of(&self, index: usize) -> WindowsOf {
        self.grid.windows_of(self.list.panes[index].start)
    }

    #[inline]
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
        self.list.panes[index].add(function, key, value, timestamp);
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
        Self::add_fresh(self, index, function, key, value, timestamp);
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
        Self::fire_late_record(self, index, function, key, emitter, fired);
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
        Self::advance(self, previous, function, emitter, fired);
        Ok(())
    }

    fn retain_fresh(&mut self, fired: &FiredWindows<K>) -> Result<(), StateError> {
        Self::retain_fresh(self, fired);
        Ok(())
    }

    #[inline]
    fn current_pane(&mut self, time: i64, watermark: i64) -> Option<&mut Pane<HeapContents<K, A>>> {
        Self::current_pane(self, time, watermark)
    }

    fn snapshot(
        &mut self,
        fired: &FiredWindows<K>,
        watermark: i64,
        max_parallelism: u32,
        _now_ms: i64,
    ) -> Result<Vec<PendingKeyedSnapshot>, StateError>
    where
        K: Key,
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        Ok(Self::snapshot(
            self,
            fired,
            FIRED_STATE,
            watermark,
            max_parallelism,
        ))
    }

    fn restore(
        &mut self,
        panes: Vec<((K, i64), A)>,
        fresh: Vec<((K, i64), A)>,
        assigner: &WindowAssigner,
        windows: &mut Vec<TimeWindow>,
    ) -> Result<(), StateError>
    where
        K: Key,
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let mut by_start: BTreeMap<i64, Vec<(K, A)>> = BTreeMap::new();
        for ((key, start), acc) in panes {
            by_start.entry(start).or_default().push((key, acc));
        }
        for (start, contents) in by_start {
            self.restore_pane(start, contents, assigner, windows)?;
        }
        for ((key, start), acc) in fresh {
            self.restore_fresh(key, start, acc)?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn entries_in_memory(&self) -> usize {
        0
    }
}

impl<K, A> PaneWindows<K, A>
where
    K: Hash + Ord + Clone + StableHash + Serialize + Send + 'static,
    A: Clone + Serialize + Send + 'static,
{
    /// The panes' contents as state [`PANES_STATE`], and the fired marks (state `fired_state`)
    /// of the keys with contents in a window that fired: see the module's "Checkpoints".
    ///
    /// The entries are copied now and encoded by checkpoint storage (a key or contents that
    /// cannot be encoded fails the checkpoint there).
    pub(super) fn snapshot(
        &self,
        fired: &FiredWindows<K>,
        fired_state: &'static str,
        watermark: i64,
        max_parallelism: u32,
    ) -> Vec<PendingKeyedSnapshot> {
        // Copied now (the panes go on changing), encoded off the data path.
        let entries = self.list.panes.iter().map(|pane| pane.contents.len()).sum();
        let mut contents: Vec<(K, i64, A)> = Vec::with_capacity(entries);
        let mut with_fired_windows: FxHashSet<&K> = FxHashSet::default();
        for pane in &self.list.panes {
            // The earliest window over the pane ends with it.
            let first_max_timestamp = pane.end - 1;
            for (key, slot) in &pane.contents {
                let Some(acc) = slot else { continue };
                contents.push((key.clone(), pane.start, acc.clone()));
                let through = if fired.is_empty() {
                    watermark
                } else {
                    fired.snapshot_of(key, watermark).0
                };
                if first_max_timestamp <= through {
                    with_fired_windows.insert(key);
                }
            }
        }
        let mut fresh: Vec<(K, i64, A)> = Vec::new();
        for ((key, start), acc) in &self.fresh {
            if fired.is_marked(key) {
                fresh.push((key.clone(), *start, acc.clone()));
                with_fired_windows.insert(key);
            }
        }
        let marks: Vec<(K, (), (i64, Vec<i64>))> = with_fired_windows
            .into_iter()
            .map(|key| (key.clone(), (), fired.snapshot_of(key, watermark)))
            .collect();
        [
            deferred_keyed_state(PANES_STATE, max_parallelism, contents),
            deferred_keyed_state(FRESH_STATE, max_parallelism, fresh),
            deferred_keyed_state(fired_state, max_parallelism, marks),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Restores what a restored key received since an earlier restore, in the pane starting at
    /// `start` (an entry of [`FRESH_STATE`]).
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] if the pane has no contents of `key` (the fresh contents are part
    /// of them), or if the entry appears twice.
    pub(super) fn restore_fresh(&mut self, key: K, start: i64, acc: A) -> Result<(), StateError> {
        let in_pane = self.list.position(start).is_some_and(|index| {
            matches!(self.list.panes[index].contents.get(&key), Some(Some(_)))
        });
        if !in_pane || self.grid.panes_per_window == 1 {
            return Err(fresh_without_pane(start));
        }
        if self.fresh.insert((key, start), acc).is_some() {
            return Err(twice(FRESH_STATE, start));
        }
        Ok(())
    }

    /// Restores the contents of the pane starting at `start` (an entry key of
    /// [`PANES_STATE`]), checking with `assigner` that `start` is a pane start on its grid.
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] if `start` is not a pane start of this assigner (the window size,
    /// slide or offset changed, or the entry is damaged), or if a key's contents are restored
    /// twice.
    pub(super) fn restore_pane(
        &mut self,
        start: i64,
        contents: Vec<(K, A)>,
        assigner: &WindowAssigner,
        windows: &mut Vec<TimeWindow>,
    ) -> Result<(), StateError> {
        check_pane_start(&self.grid, start, assigner, windows)?;
        let index = match self.list.position(start) {
            Some(index) => index,
            None => {
                let contents = Self::new_contents(&mut self.spare, &self.list);
                self.list.insert(&self.grid, start, contents)
            }
        };
        let pane = &mut self.list.panes[index];
        for (key, acc) in contents {
            // A key kept from a spare map has no contents (`None`): not a second entry.
            if let Some(Some(_)) = pane.contents.insert(key, Some(acc)) {
                return Err(twice(PANES_STATE, start));
            }
        }
        self.list.last = 0;
        Ok(())
    }
}

/// Checks that `start` is a pane start on the grid of `assigner` (written to the scratch
/// vector `windows`).
///
/// # Errors
///
/// [`StateError::Corrupt`] if it is not: the window size, slide or offset changed, or the
/// entry is damaged.
pub(super) fn check_pane_start(
    grid: &PaneGrid,
    start: i64,
    assigner: &WindowAssigner,
    windows: &mut Vec<TimeWindow>,
) -> Result<(), StateError> {
    windows.clear();
    let on_grid = assigner.assign(start, windows).is_ok()
        && windows.first().is_some_and(|latest| latest.start == start)
        && windows.len() as i64 == grid.panes_per_window;
    if on_grid {
        Ok(())
    } else {
        Err(StateError::Corrupt(format!(
            "state '{PANES_STATE}': {start} is not a pane start of {assigner:?}"
        )))
    }
}

/// A key's contents of the pane at `start` restored twice into `state`.
pub(super) fn twice(state: &str, start: i64) -> StateError {
    StateError::Corrupt(format!(
        "state '{state}': a key's contents of the pane at {start} appear twice"
    ))
}

/// Fresh contents restored for a pane in which the key has no contents.
pub(super) fn fresh_without_pane(start: i64) -> StateError {
    StateError::Corrupt(format!(
        "state '{FRESH_STATE}': contents for the pane at {start} of a key without contents there"
    ))
}
