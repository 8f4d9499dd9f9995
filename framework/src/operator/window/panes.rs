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
//! Dropped panes' maps are kept (emptied, a bounded number) for new panes, which then neither
//! allocate nor grow: a pane holds one slide of every key, and panes come and go at the rate of
//! event time.
//!
//! ## Invariants
//!
//! - Panes are sorted by start, pairwise disjoint, on the grid, and never empty.
//! - A pane is dropped when the watermark reaches the cleanup time of its last window.

use std::collections::VecDeque;
use std::hash::Hash;

use rustc_hash::FxHashMap;

use super::operator::{Emitter, WindowFunctionCore};
use super::{TimeWindow, WindowAssign, WindowAssigner, WindowError};

/// The contents of tumbling or sliding windows as panes, per key.
pub(super) struct PaneWindows<K, A> {
    size_ms: i64,
    slide_ms: i64,
    /// `size_ms / slide_ms`, at least 1.
    panes_per_window: i64,
    allowed_lateness_ms: i64,
    /// Sorted by start.
    panes: VecDeque<Pane<K, A>>,
    /// The index of the pane the last record went to: records mostly go to the same pane.
    last: usize,
    /// Emptied contents maps of dropped panes, kept for new panes (at most
    /// [`SPARE_MAPS_MAX`]): a new pane then neither allocates nor grows its map.
    spare: Vec<FxHashMap<K, Option<A>>>,
}

/// How many emptied pane maps [`PaneWindows`] keeps for reuse: about the panes a watermark
/// interval drops at high rates (each holds one slide of every key).
const SPARE_MAPS_MAX: usize = 64;

/// The contents of all keys in one slide of time.
pub(super) struct Pane<K, A> {
    start: i64,
    /// `start + slide`.
    end: i64,
    /// The cleanup time of the last window over this pane (the one starting with it): the pane
    /// is dropped, and records for it are late, once the watermark reaches it.
    cleanup: i64,
    /// Contents per key; `None` only while a function adds to them.
    contents: FxHashMap<K, Option<A>>,
}

impl<K, A> Pane<K, A> {
    /// Whether the watermark `watermark` cleaned up every window over this pane.
    fn is_late(&self, watermark: i64) -> bool {
        self.cleanup <= watermark
    }

    /// Whether some window over this pane already fired at `watermark`: the earliest window
    /// over a pane ends with it.
    pub(super) fn has_fired(&self, watermark: i64) -> bool {
        self.end - 1 <= watermark
    }
}

impl<K: Hash + Ord + Clone, A: Clone> PaneWindows<K, A> {
    /// Panes for windows of `size_ms` sliding by `slide_ms` (equal for tumbling windows), where
    /// `slide_ms` divides `size_ms`.
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
            panes: VecDeque::new(),
            last: 0,
            spare: Vec::new(),
        }
    }

    fn cleanup_time(&self, window: &TimeWindow) -> i64 {
        window
            .max_timestamp()
            .saturating_add(self.allowed_lateness_ms)
    }

    /// The index of the pane of a record at `time`, created if needed; `None` if the record is
    /// late for every window of its pane. A new pane's windows come from `assigner` (with its
    /// errors, as in the generic path), written to the scratch vector `windows`.
    ///
    /// # Errors
    ///
    /// The assigner's, for a time whose windows do not fit in `i64`.
    #[inline]
    pub(super) fn locate(
        &mut self,
        time: i64,
        assigner: &WindowAssigner,
        windows: &mut Vec<TimeWindow>,
        watermark: i64,
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
                debug_assert_eq!(windows.len() as i64, self.panes_per_window);
                if self.cleanup_time(latest) <= watermark {
                    return Ok(None);
                }
                self.insert(latest.start)
            }
        };
        if self.panes[index].is_late(watermark) {
            return Ok(None);
        }
        Ok(Some(index))
    }

    /// The index of the pane holding `time`, if there is one.
    #[inline]
    fn find(&mut self, time: i64) -> Option<usize> {
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

    /// Creates the (empty) pane starting at `start`, the start of the latest window of the
    /// times in it, as the assigner gave it; returns its index. The caller adds to it at once.
    fn insert(&mut self, start: i64) -> usize {
        let index = self.panes.partition_point(|pane| pane.start < start);
        debug_assert!(self.panes.get(index).is_none_or(|p| p.start != start));
        // The assigner computed the window `[start, start + size)` without overflow, and a
        // slide is at most a size.
        let latest = TimeWindow::new(start, start + self.size_ms);
        let contents = self.spare.pop().unwrap_or_default();
        self.panes.insert(
            index,
            Pane {
                start,
                end: start + self.slide_ms,
                cleanup: self.cleanup_time(&latest),
                contents,
            },
        );
        self.last = index;
        index
    }

    /// The pane at `index` (from [`find`](Self::find) or [`insert`](Self::insert)).
    pub(super) fn pane(&self, index: usize) -> &Pane<K, A> {
        &self.panes[index]
    }

    /// Adds `value` to the contents of `key` in the pane at `index`.
    #[inline]
    pub(super) fn add<T, F>(
        &mut self,
        index: usize,
        function: &mut F,
        key: K,
        value: T,
        timestamp: Option<i64>,
    ) where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let slot = self.panes[index].contents.entry(key).or_insert(None);
        *slot = Some(function.add(slot.take(), value, timestamp));
    }

    /// The windows over the pane at `index`, in the assigner's order (latest start first).
    pub(super) fn windows_of(&self, index: usize) -> impl Iterator<Item = TimeWindow> + use<K, A> {
        let start = self.panes[index].start;
        let (size, slide) = (self.size_ms, self.slide_ms);
        // Each is a window the assigner gave for this pane, so nothing overflows.
        (0..self.panes_per_window).map(move |k| {
            let window_start = start - k * slide;
            TimeWindow::new(window_start, window_start + size)
        })
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
    ) where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let watermark = emitter.watermark;
        for window in self.windows_of(index) {
            if self.cleanup_time(&window) <= watermark || window.max_timestamp() > watermark {
                continue;
            }
            self.fire_key(function, key, window, emitter);
        }
    }

    /// The panes of `window`, as an index range.
    fn panes_of(&self, window: &TimeWindow) -> std::ops::Range<usize> {
        let first = self.panes.partition_point(|pane| pane.start < window.start);
        let end = self.panes.partition_point(|pane| pane.start < window.end);
        first..end
    }

    /// Emits `window` for `key` if the key has contents in it.
    fn fire_key<T, F>(
        &mut self,
        function: &mut F,
        key: &K,
        window: TimeWindow,
        emitter: &mut Emitter<'_, '_, F::Out>,
    ) where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let range = self.panes_of(&window);
        if self.panes_per_window == 1 {
            for pane in self.panes.range_mut(range) {
                if let Some(Some(contents)) = pane.contents.get_mut(key) {
                    emitter.emit(function, key, window, contents);
                }
            }
            return;
        }
        let mut merged: Option<A> = None;
        for pane in self.panes.range(range) {
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

    /// Emits `window` for every key with contents in it, in key order.
    fn fire_window<T, F>(
        &mut self,
        function: &mut F,
        window: TimeWindow,
        emitter: &mut Emitter<'_, '_, F::Out>,
    ) where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let range = self.panes_of(&window);
        if self.panes_per_window == 1 {
            for pane in self.panes.range_mut(range) {
                // Keys are copied next to their contents so that sorting does not chase pointers.
                let mut keyed: Vec<(K, &mut A)> = pane
                    .contents
                    .iter_mut()
                    .filter_map(|(key, contents)| contents.as_mut().map(|c| (key.clone(), c)))
                    .collect();
                keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                for (key, contents) in keyed {
                    emitter.emit(function, &key, window, contents);
                }
            }
            return;
        }
        // Merge the panes' contents per key, in pane order.
        let mut merged: FxHashMap<K, Option<A>> = FxHashMap::default();
        for pane in self.panes.range(range) {
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
        let mut keyed: Vec<(K, A)> = merged
            .into_iter()
            .filter_map(|(key, contents)| contents.map(|c| (key, c)))
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, mut contents) in keyed {
            emitter.emit(function, &key, window, &mut contents);
        }
    }

    /// The watermark advanced from `previous` to `emitter.watermark`: fires every window whose
    /// `max_timestamp` lies in between, in `max_timestamp` order, then drops the panes whose last
    /// window is cleaned up.
    pub(super) fn advance<T, F>(
        &mut self,
        previous: i64,
        function: &mut F,
        emitter: &mut Emitter<'_, '_, F::Out>,
    ) where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let watermark = emitter.watermark;
        let (size, slide) = (self.size_ms, self.slide_ms);
        // Panes whose every window fired before are skipped; the candidates are the windows over
        // the other panes, each considered once, in start (and so `max_timestamp`) order.
        let mut index = self
            .panes
            .partition_point(|pane| pane.start + size - 1 <= previous);
        let mut next_start = i64::MIN;
        'panes: while let Some(pane) = self.panes.get(index) {
            let pane_start = pane.start;
            let earliest = pane_start - (self.panes_per_window - 1) * slide;
            let mut start = earliest.max(next_start);
            while start <= pane_start {
                let max_timestamp = start + size - 1;
                if max_timestamp > watermark {
                    break 'panes;
                }
                if max_timestamp > previous {
                    self.fire_window(function, TimeWindow::new(start, start + size), emitter);
                }
                start += slide;
            }
            next_start = pane_start + slide;
            index += 1;
        }
        while self
            .panes
            .front()
            .is_some_and(|pane| pane.cleanup <= watermark)
        {
            if let Some(mut pane) = self.panes.pop_front()
                && self.spare.len() < SPARE_MAPS_MAX
            {
                pane.contents.clear();
                self.spare.push(pane.contents);
            }
        }
        self.last = 0;
    }
}
