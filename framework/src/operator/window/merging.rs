//! The set of in-flight merging windows of one key, as Flink's `MergingWindowSet`.
//!
//! Session windows grow by merging: every record opens `[t, t + gap)`, and windows that
//! intersect become one. State is not moved when windows merge. Each in-flight window keeps a
//! *state window*, the window whose namespace holds its contents: the state window of a new
//! window is the window itself, and a merged window keeps the state window of one of the windows
//! it was merged from. The others' state is merged into it by the caller's merge function.
//!
//! ## Design
//!
//! [`MergingWindowSet::add_window`] follows Flink's `MergingWindowSet.addWindow` (Flink 1.x/2.x,
//! `flink-runtime/.../operators/windowing/MergingWindowSet.java`) step by step, with Flink's
//! `TimeWindow.mergeWindows` as the merge rule:
//!
//! 1. Sort all in-flight windows plus the new one by start. Sweep them keeping a current group
//!    and its cover: a window joins the group if `cover.intersects(window)` (touching counts),
//!    otherwise it starts a new group. Only groups of two or more windows merge.
//! 2. For each merging group (the merge result is the group's cover): if it holds the new window,
//!    the merge result is what `add_window` returns, and the new window is dropped from the
//!    group's *merged windows* (it has no state yet). The merge result takes the state window of
//!    one of the remaining merged windows; their other state windows are the *merged state
//!    windows*. The set maps the merge result to that state window and forgets the merged
//!    windows.
//! 3. The merge function is called with (merge result, merged windows, state window of the
//!    result, merged state windows), except when the only merged window *is* the merge result:
//!    the new window fell inside an existing window, nothing changes, and Flink does not call the
//!    merge function.
//! 4. If the new window merged with nothing, it maps to itself and is returned.
//!
//! Deviations from Flink, none of which changes which windows exist or fire:
//!
//! - Flink picks "any" merged window's state window (`HashSet` iteration order). We take the
//!   state window of the merged window with the earliest start, and pass merged windows and
//!   merged state windows in window order, so runs are reproducible.
//! - Adding a window that is already in the set returns it and changes nothing. Flink then
//!   re-maps the window to itself, which for a window that was produced by a merge would forget
//!   its state window; that can happen only with dynamic session gaps, never with a fixed gap
//!   (a merged window is longer than the gap).
//! - [`MergingWindowSet::restore`] rejects state that no sequence of `add_window` and
//!   `retire_window` can produce, instead of trusting it.
//!
//! ## Invariants
//!
//! - In-flight windows are pairwise non-intersecting by Flink's `intersects`, so after each
//!   `add_window` at most one group merges (the one with the new window).
//! - State windows are pairwise distinct, and each lies inside its window.
//! - A state window, once assigned, never changes while its window is in flight: a merge result
//!   takes an existing state window, and only a window that merged with nothing gets a new one
//!   (itself).

use std::collections::BTreeMap;

use super::assigner::{TimeWindow, WindowError};

/// One merge performed by [`MergingWindowSet::add_window`]: the arguments of Flink's
/// `MergeFunction.merge`.
///
/// The operator merges the state of `merged_state_windows` into `state_window_result`, and the
/// triggers of `merged_windows` into `merge_result`, then drops the merged windows' timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowMerge<'a> {
    /// The window the merged windows became.
    pub merge_result: TimeWindow,
    /// The in-flight windows that were merged, in window order. Never the new window (it has no
    /// state yet, as in Flink), so when a new window extends one existing window this holds just
    /// that window.
    pub merged_windows: &'a [TimeWindow],
    /// The state window of `merge_result`: one of the merged windows' state windows.
    pub state_window_result: TimeWindow,
    /// The state windows of the merged windows other than `state_window_result`, in window
    /// order: their state must be merged into `state_window_result` and cleared.
    pub merged_state_windows: &'a [TimeWindow],
}

/// The in-flight windows of a merging assigner for one key, each with its state window.
///
/// Call order per record: assign the record's window, `add_window` it (merging state in the
/// callback), then add the record to the state of `state_window(result)` and register the
/// trigger of `result`. When a window is purged, `retire_window` it. On checkpoints `persist`;
/// after recovery `restore`.
///
/// # Examples
///
/// ```
/// use eichhorn::operator::window::{MergingWindowSet, TimeWindow};
///
/// let mut set = MergingWindowSet::new();
/// let mut merges = Vec::new();
/// let mut record = |w: TimeWindow| {
///     set.add_window(w, |merge| {
///         merges.push((merge.merge_result, merge.merged_state_windows.to_vec()));
///         Ok::<(), std::convert::Infallible>(())
///     })
/// };
/// // Session gap 3: records at 0, 5 and 3.
/// assert_eq!(record(TimeWindow::new(0, 3))?, TimeWindow::new(0, 3));
/// assert_eq!(record(TimeWindow::new(5, 8))?, TimeWindow::new(5, 8));
/// // The record at 3 bridges both sessions; [0, 3) keeps its state, [5, 8)'s is merged into it.
/// assert_eq!(record(TimeWindow::new(3, 6))?, TimeWindow::new(0, 8));
/// assert_eq!(merges, [(TimeWindow::new(0, 8), vec![TimeWindow::new(5, 8)])]);
/// assert_eq!(set.state_window(&TimeWindow::new(0, 8)), Some(TimeWindow::new(0, 3)));
/// # Ok::<(), std::convert::Infallible>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergingWindowSet {
    /// In-flight window -> its state window. A `BTreeMap`, so iteration (and with it merging and
    /// `persist`) is in window order and deterministic.
    mapping: BTreeMap<TimeWindow, TimeWindow>,
}

impl MergingWindowSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set restored from the pairs of (window, state window) that [`persist`](Self::persist)
    /// returned.
    ///
    /// # Errors
    ///
    /// [`WindowError::CorruptMergingState`] if a window or a state window appears twice, if two
    /// windows intersect, or if a state window is not inside its window: no sequence of
    /// `add_window` and `retire_window` produces such a set.
    pub fn restore(
        pairs: impl IntoIterator<Item = (TimeWindow, TimeWindow)>,
    ) -> Result<Self, WindowError> {
        let mut mapping = BTreeMap::new();
        for (window, state_window) in pairs {
            if state_window.start < window.start || state_window.end > window.end {
                return Err(WindowError::CorruptMergingState(format!(
                    "state window {state_window:?} is not inside its window {window:?}"
                )));
            }
            if mapping.insert(window, state_window).is_some() {
                return Err(WindowError::CorruptMergingState(format!(
                    "window {window:?} appears twice"
                )));
            }
        }
        let mut previous: Option<(&TimeWindow, &TimeWindow)> = None;
        for (window, state_window) in &mapping {
            if let Some((previous_window, previous_state)) = previous {
                // Sorted by start, so checking neighbours suffices: if two non-neighbours
                // intersected, the window between them would intersect one of them too.
                if previous_window.intersects(window) {
                    return Err(WindowError::CorruptMergingState(format!(
                        "windows {previous_window:?} and {window:?} intersect"
                    )));
                }
                // State windows lie inside non-intersecting windows, so they are distinct iff
                // neighbours differ; they cannot be equal without their windows intersecting,
                // but check anyway since this is the read path.
                if previous_state == state_window {
                    return Err(WindowError::CorruptMergingState(format!(
                        "state window {state_window:?} is used twice"
                    )));
                }
            }
            previous = Some((window, state_window));
        }
        Ok(Self { mapping })
    }

    /// The (window, state window) pairs to checkpoint, in window order.
    pub fn persist(&self) -> Vec<(TimeWindow, TimeWindow)> {
        self.mapping.iter().map(|(w, s)| (*w, *s)).collect()
    }

    /// The state window of the in-flight `window`, or `None` if it is not in flight.
    pub fn state_window(&self, window: &TimeWindow) -> Option<TimeWindow> {
        self.mapping.get(window).copied()
    }

    /// Removes an in-flight window (after it fired and was purged); returns its state window.
    ///
    /// # Errors
    ///
    /// [`WindowError::WindowNotInFlight`] if the window is not in the set (Flink throws
    /// `IllegalStateException`).
    pub fn retire_window(&mut self, window: &TimeWindow) -> Result<TimeWindow, WindowError> {
        self.mapping
            .remove(window)
            .ok_or(WindowError::WindowNotInFlight { window: *window })
    }

    /// The number of in-flight windows.
    pub fn len(&self) -> usize {
        self.mapping.len()
    }

    /// Whether no window is in flight.
    pub fn is_empty(&self) -> bool {
        self.mapping.is_empty()
    }

    /// The in-flight windows with their state windows, in window order.
    pub fn iter(&self) -> impl Iterator<Item = (TimeWindow, TimeWindow)> + '_ {
        self.mapping.iter().map(|(w, s)| (*w, *s))
    }

    /// Adds `new_window` to the in-flight windows, merging it with every window it intersects,
    /// and returns the window it ended up in: `new_window` itself if it merged with nothing (or
    /// is already in flight), otherwise the merge result. Records and triggers go to the
    /// returned window only, so a new window that is swallowed at once is never seen outside.
    ///
    /// `merge_function` is called once per merge, after the set was updated (see
    /// [`WindowMerge`] and the module docs for exactly when).
    ///
    /// Windows are expected to satisfy `start <= end`, as every assigner's do. Cost: O(n) in the
    /// number of in-flight windows of the key, like Flink's (which also sorts them).
    ///
    /// # Errors
    ///
    /// The first error of `merge_function`, returned at once. The set already reflects that
    /// merge; the caller is expected to fail the task and recover from a checkpoint.
    pub fn add_window<E, F>(
        &mut self,
        new_window: TimeWindow,
        mut merge_function: F,
    ) -> Result<TimeWindow, E>
    where
        F: FnMut(WindowMerge<'_>) -> Result<(), E>,
    {
        if self.mapping.contains_key(&new_window) {
            return Ok(new_window);
        }

        // Flink's `TimeWindow.mergeWindows`: the in-flight windows (already in order) plus the
        // new one, swept by start. Groups are contiguous runs of `windows`.
        let mut windows: Vec<TimeWindow> = Vec::with_capacity(self.mapping.len() + 1);
        windows.extend(self.mapping.keys().copied());
        let position = windows.partition_point(|w| *w < new_window);
        windows.insert(position, new_window);

        let mut result_window = new_window;
        let mut merged_new_window = false;
        let mut group_start = 0;
        let mut cover = windows[0];
        for index in 1..=windows.len() {
            if let Some(candidate) = windows.get(index)
                && cover.intersects(candidate)
            {
                cover = cover.cover(candidate);
                continue;
            }
            // The group `group_start..index` is complete.
            if index - group_start > 1 {
                let group = &windows[group_start..index];
                if group.contains(&new_window) {
                    merged_new_window = true;
                    result_window = cover;
                }
                self.merge_group(group, cover, new_window, &mut merge_function)?;
            }
            if let Some(candidate) = windows.get(index) {
                group_start = index;
                cover = *candidate;
            }
        }

        // The new window created a new, self-contained window without merging.
        if !merged_new_window {
            self.mapping.insert(new_window, new_window);
        }
        Ok(result_window)
    }

    /// Step 2 and 3 of `add_window` for one group of at least two windows.
    fn merge_group<E, F>(
        &mut self,
        group: &[TimeWindow],
        merge_result: TimeWindow,
        new_window: TimeWindow,
        merge_function: &mut F,
    ) -> Result<(), E>
    where
        F: FnMut(WindowMerge<'_>) -> Result<(), E>,
    {
        // The new window never had state: it is not one of the merged windows.
        let merged_windows: Vec<TimeWindow> =
            group.iter().copied().filter(|w| *w != new_window).collect();
        // Flink takes the state window of "any" merged window; we take the earliest one's.
        let state_window_result = merged_windows
            .iter()
            .find_map(|w| self.mapping.get(w).copied())
            // The group has at least two distinct windows, at most one of them new, and every
            // other window of the group comes from `self.mapping`.
            .expect("a merge group holds an in-flight window");

        let mut merged_state_windows: Vec<TimeWindow> = merged_windows
            .iter()
            .filter_map(|w| self.mapping.remove(w))
            .collect();
        self.mapping.insert(merge_result, state_window_result);
        // As Flink's `List.remove(Object)`: the first occurrence only.
        if let Some(at) = merged_state_windows
            .iter()
            .position(|s| *s == state_window_result)
        {
            merged_state_windows.remove(at);
        }

        // The new window fell inside one existing window: nothing merged, as in Flink.
        if merged_windows.len() == 1 && merged_windows[0] == merge_result {
            return Ok(());
        }
        merge_function(WindowMerge {
            merge_result,
            merged_windows: &merged_windows,
            state_window_result,
            merged_state_windows: &merged_state_windows,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::convert::Infallible;

    use proptest::prelude::*;

    use super::*;

    fn w(start: i64, end: i64) -> TimeWindow {
        TimeWindow::new(start, end)
    }

    /// What one `add_window` call reported.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Merged {
        merge_result: TimeWindow,
        merged_windows: Vec<TimeWindow>,
        state_window_result: TimeWindow,
        merged_state_windows: Vec<TimeWindow>,
    }

    fn add(set: &mut MergingWindowSet, window: TimeWindow) -> (TimeWindow, Vec<Merged>) {
        let mut merges = Vec::new();
        let result = set
            .add_window(window, |merge| {
                merges.push(Merged {
                    merge_result: merge.merge_result,
                    merged_windows: merge.merged_windows.to_vec(),
                    state_window_result: merge.state_window_result,
                    merged_state_windows: merge.merged_state_windows.to_vec(),
                });
                Ok::<(), Infallible>(())
            })
            .unwrap();
        (result, merges)
    }

    fn merged(
        merge_result: TimeWindow,
        merged_windows: &[TimeWindow],
        state_window_result: TimeWindow,
        merged_state_windows: &[TimeWindow],
    ) -> Merged {
        Merged {
            merge_result,
            merged_windows: merged_windows.to_vec(),
            state_window_result,
            merged_state_windows: merged_state_windows.to_vec(),
        }
    }

    #[test]
    fn new_window_that_merges_with_nothing_is_its_own_state_window() {
        let mut set = MergingWindowSet::new();
        assert_eq!(add(&mut set, w(0, 3)), (w(0, 3), vec![]));
        assert_eq!(add(&mut set, w(5, 8)), (w(5, 8), vec![]));
        assert_eq!(set.state_window(&w(0, 3)), Some(w(0, 3)));
        assert_eq!(set.state_window(&w(5, 8)), Some(w(5, 8)));
        assert_eq!(set.state_window(&w(1, 3)), None);
        assert_eq!(set.len(), 2);
    }

    /// Flink's `MergingWindowSetTest.testIncrementalMerging` (gap 3).
    #[test]
    fn flink_incremental_merging() {
        let mut set = MergingWindowSet::new();
        assert_eq!(add(&mut set, w(0, 4)), (w(0, 4), vec![]));
        assert_eq!(set.state_window(&w(0, 4)), Some(w(0, 4)));
        // Identical window: no merge.
        assert_eq!(add(&mut set, w(0, 4)), (w(0, 4), vec![]));

        // Extending one window: merged windows hold the old window, no state to merge.
        assert_eq!(
            add(&mut set, w(3, 5)),
            (w(0, 5), vec![merged(w(0, 5), &[w(0, 4)], w(0, 4), &[])])
        );
        assert_eq!(
            add(&mut set, w(4, 6)),
            (w(0, 6), vec![merged(w(0, 6), &[w(0, 5)], w(0, 4), &[])])
        );
        assert_eq!(set.state_window(&w(0, 6)), Some(w(0, 4)));

        // Windows inside the merged region: the existing window, no merge call.
        for inside in [w(1, 4), w(0, 4), w(3, 5), w(4, 6)] {
            assert_eq!(add(&mut set, inside), (w(0, 6), vec![]));
        }
        assert_eq!(set.state_window(&w(0, 6)), Some(w(0, 4)));

        assert_eq!(add(&mut set, w(11, 14)), (w(11, 14), vec![]));
        assert_eq!(
            add(&mut set, w(10, 13)),
            (
                w(10, 14),
                vec![merged(w(10, 14), &[w(11, 14)], w(11, 14), &[])]
            )
        );
        assert_eq!(
            add(&mut set, w(12, 15)),
            (
                w(10, 15),
                vec![merged(w(10, 15), &[w(10, 14)], w(11, 14), &[])]
            )
        );
        assert_eq!(add(&mut set, w(11, 14)), (w(10, 15), vec![]));
        assert_eq!(set.state_window(&w(0, 6)), Some(w(0, 4)));
        assert_eq!(set.state_window(&w(10, 15)), Some(w(11, 14)));

        assert_eq!(set.retire_window(&w(0, 6)), Ok(w(0, 4)));
        assert_eq!(set.state_window(&w(0, 6)), None);
        assert_eq!(set.state_window(&w(10, 15)), Some(w(11, 14)));
        assert_eq!(
            set.retire_window(&w(0, 6)),
            Err(WindowError::WindowNotInFlight { window: w(0, 6) })
        );
    }

    /// Flink's `MergingWindowSetTest.testLateMerging` (gap 3), with our deterministic choice of
    /// the earliest merged window's state window where Flink allows any.
    #[test]
    fn flink_late_merging_bridges_windows() {
        let mut set = MergingWindowSet::new();
        for window in [w(0, 3), w(5, 8), w(10, 13)] {
            assert_eq!(add(&mut set, window), (window, vec![]));
        }
        // [8, 10) touches both [5, 8) and [10, 13).
        assert_eq!(
            add(&mut set, w(8, 10)),
            (
                w(5, 13),
                vec![merged(
                    w(5, 13),
                    &[w(5, 8), w(10, 13)],
                    w(5, 8),
                    &[w(10, 13)]
                )]
            )
        );
        assert_eq!(set.state_window(&w(0, 3)), Some(w(0, 3)));
        for inside in [w(5, 8), w(8, 10), w(10, 13)] {
            assert_eq!(add(&mut set, inside), (w(5, 13), vec![]));
        }
        assert_eq!(set.state_window(&w(5, 13)), Some(w(5, 8)));

        assert_eq!(
            add(&mut set, w(3, 5)),
            (
                w(0, 13),
                vec![merged(w(0, 13), &[w(0, 3), w(5, 13)], w(0, 3), &[w(5, 8)])]
            )
        );
        assert_eq!(set.persist(), [(w(0, 13), w(0, 3))]);
    }

    /// Flink's `testMergeLargeWindowCoveringSingleWindow` / `...MultipleWindows`: the new window
    /// is the merge result, and it keeps an old state window (Flink before the
    /// `mergedNewWindow` fix re-mapped it to itself).
    #[test]
    fn new_window_covering_existing_windows() {
        let mut set = MergingWindowSet::new();
        add(&mut set, w(1, 2));
        assert_eq!(
            add(&mut set, w(0, 3)),
            (w(0, 3), vec![merged(w(0, 3), &[w(1, 2)], w(1, 2), &[])])
        );
        assert_eq!(set.state_window(&w(0, 3)), Some(w(1, 2)));

        let mut set = MergingWindowSet::new();
        for window in [w(1, 3), w(5, 8), w(10, 13)] {
            add(&mut set, window);
        }
        assert_eq!(
            add(&mut set, w(0, 13)),
            (
                w(0, 13),
                vec![merged(
                    w(0, 13),
                    &[w(1, 3), w(5, 8), w(10, 13)],
                    w(1, 3),
                    &[w(5, 8), w(10, 13)]
                )]
            )
        );
        assert_eq!(set.persist(), [(w(0, 13), w(1, 3))]);
    }

    #[test]
    fn merge_function_error_is_returned() {
        let mut set = MergingWindowSet::new();
        add(&mut set, w(0, 3));
        let result = set.add_window(w(2, 5), |_| Err("state backend down"));
        assert_eq!(result, Err("state backend down"));
        // No merge, no call: an error type is never produced.
        assert_eq!(set.add_window(w(10, 12), |_| Err("unused")), Ok(w(10, 12)));
    }

    #[test]
    fn restore_round_trips_and_rejects_corrupt_state() {
        let mut set = MergingWindowSet::new();
        for window in [w(0, 3), w(2, 5), w(10, 13), w(20, 23), w(13, 16)] {
            add(&mut set, window);
        }
        let persisted = set.persist();
        assert_eq!(
            persisted,
            [
                (w(0, 5), w(0, 3)),
                (w(10, 16), w(10, 13)),
                (w(20, 23), w(20, 23))
            ]
        );
        assert_eq!(MergingWindowSet::restore(persisted.clone()), Ok(set));
        let restored = MergingWindowSet::restore(persisted.into_iter().rev()).unwrap();
        assert_eq!(restored.iter().count(), 3);
        assert!(MergingWindowSet::restore([]).unwrap().is_empty());

        let corrupt = [
            vec![(w(0, 3), w(0, 3)), (w(0, 3), w(0, 3))],
            vec![(w(0, 3), w(0, 3)), (w(3, 6), w(3, 6))],
            vec![(w(0, 3), w(0, 5))],
            vec![(w(0, 3), w(0, 3)), (w(-10, 20), w(0, 3))],
        ];
        for pairs in corrupt {
            assert!(
                matches!(
                    MergingWindowSet::restore(pairs.clone()),
                    Err(WindowError::CorruptMergingState(_))
                ),
                "{pairs:?} was accepted"
            );
        }
    }

    /// The windows of the sequential oracle: sort all added windows and merge by `intersects`.
    fn oracle(added: &[TimeWindow]) -> Vec<TimeWindow> {
        let mut sorted = added.to_vec();
        sorted.sort();
        let mut merged: Vec<TimeWindow> = Vec::new();
        for window in sorted {
            match merged.last_mut() {
                Some(last) if last.intersects(&window) => *last = last.cover(&window),
                _ => merged.push(window),
            }
        }
        merged
    }

    /// Session windows of a fixed gap, or arbitrary windows (dynamic gaps).
    fn added_windows() -> impl Strategy<Value = Vec<TimeWindow>> {
        let fixed_gap = (1i64..20).prop_flat_map(|gap| {
            prop::collection::vec((-100i64..200).prop_map(move |t| w(t, t + gap)), 0..40)
        });
        let dynamic_gap = prop::collection::vec(
            (-100i64..200, 1i64..30).prop_map(|(t, gap)| w(t, t + gap)),
            0..40,
        );
        prop_oneof![fixed_gap, dynamic_gap]
    }

    proptest! {
        /// Drives the set like the window operator, with a model state store keyed by state
        /// window, and checks it against the sequential oracle.
        #[test]
        fn merging_matches_sequential_oracle(added in added_windows()) {
            let mut set = MergingWindowSet::new();
            // State window -> the windows whose records it holds.
            let mut state: BTreeMap<TimeWindow, Vec<TimeWindow>> = BTreeMap::new();

            for (i, &new_window) in added.iter().enumerate() {
                let before = set.clone();
                let state_windows_before: BTreeSet<TimeWindow> =
                    before.iter().map(|(_, s)| s).collect();
                let mut calls = 0;
                let result = set
                    .add_window(new_window, |merge| {
                        calls += 1;
                        assert!(!merge.merged_windows.contains(&new_window));
                        assert!(!merge.merged_state_windows.contains(&merge.state_window_result));
                        assert!(state_windows_before.contains(&merge.state_window_result));
                        for window in merge.merged_windows {
                            assert!(before.state_window(window).is_some());
                            assert!(merge.merge_result.start <= window.start
                                && window.end <= merge.merge_result.end);
                        }
                        for source in merge.merged_state_windows {
                            assert!(state_windows_before.contains(source));
                            let moved = state.remove(source).unwrap_or_default();
                            state.entry(merge.state_window_result).or_default().extend(moved);
                        }
                        Ok::<(), Infallible>(())
                    })
                    .unwrap();
                prop_assert!(calls <= 1, "at most the new window's group merges");

                // The record goes to the result's state window.
                prop_assert!(result.start <= new_window.start && new_window.end <= result.end);
                let result_state = set.state_window(&result);
                prop_assert!(result_state.is_some());
                state.entry(result_state.unwrap()).or_default().push(new_window);

                // Windows: pairwise non-intersecting, and exactly the oracle's.
                let windows: Vec<TimeWindow> = set.iter().map(|(window, _)| window).collect();
                for (a, x) in windows.iter().enumerate() {
                    for y in &windows[a + 1..] {
                        prop_assert!(!x.intersects(y), "{x:?} intersects {y:?}");
                    }
                }
                prop_assert_eq!(&windows, &oracle(&added[..=i]));

                // State windows: stable, distinct, inside their windows.
                let mut seen = BTreeSet::new();
                for (window, state_window) in set.iter() {
                    prop_assert!(
                        state_windows_before.contains(&state_window) || state_window == new_window,
                        "{state_window:?} is neither an old state window nor the new window"
                    );
                    prop_assert!(seen.insert(state_window));
                    prop_assert!(window.start <= state_window.start
                        && state_window.end <= window.end);
                    if let Some(old_state) = before.state_window(&window) {
                        prop_assert_eq!(old_state, state_window);
                    }
                }
                prop_assert_eq!(MergingWindowSet::restore(set.persist()), Ok(set.clone()));
            }

            // Every record's state ended up in the state window of the window containing it,
            // and no state is left behind under a retired state window.
            let state_windows: BTreeSet<TimeWindow> = set.iter().map(|(_, s)| s).collect();
            prop_assert_eq!(state.keys().copied().collect::<BTreeSet<_>>(), state_windows);
            for (window, state_window) in set.iter() {
                let mut expected: Vec<TimeWindow> = added
                    .iter()
                    .copied()
                    .filter(|a| window.start <= a.start && a.end <= window.end)
                    .collect();
                let mut actual = state[&state_window].clone();
                expected.sort();
                actual.sort();
                prop_assert_eq!(actual, expected);
            }
        }

        /// Retiring windows between additions keeps the set consistent with an oracle over the
        /// windows added since the last retirement of their session.
        #[test]
        fn retire_then_add_stays_consistent(
            added in added_windows(),
            retire_every in 2usize..6,
        ) {
            let mut set = MergingWindowSet::new();
            for (i, &window) in added.iter().enumerate() {
                add(&mut set, window);
                if i % retire_every == 0 {
                    let first = set.iter().next().map(|(window, _)| window);
                    if let Some(first) = first {
                        let state_window = set.state_window(&first).unwrap();
                        prop_assert_eq!(set.retire_window(&first), Ok(state_window));
                        prop_assert_eq!(set.state_window(&first), None);
                    }
                }
                let windows: Vec<TimeWindow> = set.iter().map(|(window, _)| window).collect();
                for pair in windows.windows(2) {
                    prop_assert!(!pair[0].intersects(&pair[1]));
                }
                prop_assert_eq!(MergingWindowSet::restore(set.persist()), Ok(set.clone()));
            }
        }
    }
}
