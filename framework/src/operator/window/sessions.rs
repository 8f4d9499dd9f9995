//! Event-time session windows with the default trigger: the window operator's fast path for
//! sessions.
//!
//! The generic operator tracks a key's sessions in a [`MergingWindowSet`](super::MergingWindowSet)
//! (with a state window per session), keeps contents per (key, state window) and a trigger and a
//! cleanup timer per (key, window) in ordered maps, and moves timers on every merge. With
//! [`EventTimeTrigger`](super::trigger::EventTimeTrigger) the timers are implied by the sessions:
//!
//! - A key's in-flight sessions are a list sorted by start, each with its contents (the contents
//!   of its state window in the generic path: the state window itself is never visible). The
//!   latest session is kept next to the key in the map, since records in time order touch only
//!   it.
//! - A session fires when the watermark first reaches its `max_timestamp` (its trigger timer is
//!   pending exactly while `max_timestamp` is above the watermark), and goes when the watermark
//!   reaches `max_timestamp + allowed_lateness` (its cleanup timer).
//! - A queue holds one entry per key with sessions, at or before the first time something is due
//!   for the key (a firing or a cleanup); entries may be early, never late. A watermark pops the
//!   due keys and fires their due sessions in `(max_timestamp, key)` order, the generic timers'
//!   `(time, key, window)` order (a key's sessions are disjoint, so their `max_timestamp`s
//!   differ): each key's due sessions are a run of its list, merged by a calendar (a list of keys
//!   per millisecond, O(1) per session) or, when the due times are sparse, a heap.
//!
//! ## Equivalence with the generic path
//!
//! - Merging follows `MergingWindowSet::add_window`: the new window `[t, t + gap)` merges with
//!   the session just before it if they intersect (touching counts) and with the following
//!   sessions that start at or before its end. Sessions are pairwise non-intersecting, so no other
//!   session can join. A window equal to or inside one session changes nothing; otherwise the
//!   group becomes its cover, and its contents are the merged sessions' contents merged in window
//!   order into the earliest one's (the state window Flink keeps, as `MergingWindowSet` picks it).
//! - Every in-flight session's cleanup time is above the watermark (due cleanups ran at the
//!   watermark), so a merge result is never late; only a lone new window can be, and then the
//!   record is rejected, as the generic path does after retiring the window again.
//! - After the merge the record is added, and the session fires at once if the watermark passed
//!   its end (a record accepted thanks to allowed lateness), as `EventTimeTrigger::on_element`.
//!
//! ## Where the sessions live
//!
//! [`SessionWindows`] holds the queue; the sessions themselves are in a [`SessionTable`] the
//! operator passes to each call: a hash map on the heap with the memory backend, a value table
//! of the job's keyed state backend with LMDB (one value per key: its [`KeySessions`], latest
//! session inline), behind its bounded write-back cache. The queue holds one entry per key with
//! sessions, in time order, so a watermark reads only the keys with something due: a
//! [`TimerService`] on the heap with the memory backend, in LMDB with LMDB (a bounded head and
//! write batch in memory). It is rebuilt from the sessions on restore. [`snapshot_store`] turns the backend's sessions into the heap's
//! checkpoint layout (below) off the data path, so the two restore into each other.
//!
//! ## Checkpoints
//!
//! A checkpoint stores every in-flight session with its contents (state `_window_sessions`,
//! entry `(key, session window) -> contents`, in the key group of the key): the generic path's
//! merging set and contents in one, since a fast-path session is its own state window. For keys
//! with a session that already fired it also stores which sessions fired ([`FiredWindows`]),
//! the generic path's missing trigger timers. A restore checks that a key's sessions do not
//! intersect and queues each key at its first due time.
//!
//! ## Invariants
//!
//! - Per key, sessions are sorted by start, pairwise non-intersecting by Flink's `intersects`,
//!   and every cleanup time is above the watermark between calls.
//! - A key is in the map iff it has sessions, and then it has exactly one queue entry, at or
//!   before its earliest pending `max_timestamp` and its earliest cleanup time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::Hash;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::TimeWindow;
use super::backend::{decode_entry_key, decode_entry_value};
use super::fired::{FIRED_STATE, FiredWindows};
use super::functions::{Emitter, WindowFunctionCore};
use super::key_order::KeyOrder;
use crate::api::Key;
use crate::operator::checkpointing::deferred_keyed_state;
use crate::state::{
    KeyedBackendConfig, KeyedStateSnapshot, KeyedStateStore, PendingKeyedSnapshot, StableHash,
    StateError, ValueTable,
};
use crate::time::TimerService;

/// The keyed state holding the sessions: `(key, session window) -> contents`.
pub(super) const SESSIONS_STATE: &str = "_window_sessions";

/// The in-flight sessions of every key: their queue and working memory. The sessions
/// themselves are in a [`SessionTable`] the caller passes in.
pub(super) struct SessionWindows<K, A> {
    gap_ms: i64,
    allowed_lateness_ms: i64,
    /// One entry per key with sessions, at `time` (see the module's invariants): a timer
    /// service, on the heap or in LMDB with the LMDB backend.
    queue: TimerService<K, ()>,
    /// The keys a watermark fires, with all their sessions (kept for its capacity).
    due: Vec<(K, VecDeque<Session<A>>)>,
    scratch: FiringScratch,
    /// Sorts `due` by key.
    key_order: KeyOrder,
}

/// The working memory of firing, kept between watermarks so that it is not allocated (and
/// faulted in) again each time.
#[derive(Default)]
struct FiringScratch {
    /// Per key slot: its next session to fire, and the end of its sessions to fire.
    cursor: Vec<usize>,
    end: Vec<usize>,
    /// The calendar: per millisecond the first slot of its list, and per slot the next one.
    heads: Vec<u32>,
    next: Vec<u32>,
    /// The slots of one millisecond.
    batch: Vec<u32>,
}

/// One key's sessions: sorted by start and pairwise non-intersecting, `earlier` then `latest`.
///
/// The latest session is kept apart, next to the key in the map, because records in time order
/// only ever touch it: one cache line per record instead of two. In the state backend it is one
/// value per key (serialised as its fields; checkpoints use their own layout, see
/// `backend_sessions.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KeySessions<A> {
    earlier: VecDeque<Session<A>>,
    latest: Session<A>,
    /// The time of the key's queue entry.
    queued_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session<A> {
    window: TimeWindow,
    /// `None` only while a function adds to it.
    contents: Option<A>,
}

/// Where the sessions of every key are: a map on the heap, or a table in the job's keyed state
/// backend (resolved by the caller for each call). The heap map never fails.
pub(super) trait SessionTable<K, A> {
    /// The sessions of `key`.
    fn get(&mut self, key: &K) -> Result<Option<&KeySessions<A>>, StateError>;
    /// The sessions of `key`, to change in place.
    fn get_mut(&mut self, key: &K) -> Result<Option<&mut KeySessions<A>>, StateError>;
    /// Sets the sessions of `key`.
    fn insert(&mut self, key: K, sessions: KeySessions<A>) -> Result<(), StateError>;
    /// Removes the sessions of `key` and returns them.
    fn take(&mut self, key: &K) -> Result<Option<KeySessions<A>>, StateError>;
}

/// A table lent out for one call.
impl<K, A, S: SessionTable<K, A>> SessionTable<K, A> for &mut S {
    #[inline]
    fn get(&mut self, key: &K) -> Result<Option<&KeySessions<A>>, StateError> {
        S::get(self, key)
    }
    #[inline]
    fn get_mut(&mut self, key: &K) -> Result<Option<&mut KeySessions<A>>, StateError> {
        S::get_mut(self, key)
    }
    #[inline]
    fn insert(&mut self, key: K, sessions: KeySessions<A>) -> Result<(), StateError> {
        S::insert(self, key, sessions)
    }
    #[inline]
    fn take(&mut self, key: &K) -> Result<Option<KeySessions<A>>, StateError> {
        S::take(self, key)
    }
}

/// Where the session path keeps the sessions of every key: a map on the heap
/// ([`HeapSessions`], the memory backend's form) or a store in the job's keyed state backend
/// (LMDB), whose table is resolved for each call. The heap never fails.
pub(super) trait SessionStore<K, A> {
    /// The table [`table`](Self::table) lends out.
    type Table<'a>: SessionTable<K, A>
    where
        Self: 'a;

    /// The sessions of every key, for one call.
    ///
    /// # Errors
    ///
    /// The backend's, resolving its table.
    fn table(&mut self) -> Result<Self::Table<'_>, StateError>;

    /// The sessions and the marks of `fired` for a checkpoint at `watermark` (states
    /// [`SESSIONS_STATE`] and [`FIRED_STATE`]; see the module's "Checkpoints").
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
    ) -> Result<Vec<PendingKeyedSnapshot>, StateError>;

    /// The entries the store holds in memory, with those of `sessions`' queue (none for the
    /// heap form, which keeps no store).
    #[cfg(test)]
    fn entries_in_memory(&self, sessions: &SessionWindows<K, A>) -> usize;
}

/// The sessions on the heap.
pub(super) type HeapSessions<K, A> = FxHashMap<K, KeySessions<A>>;

impl<K, A> SessionStore<K, A> for HeapSessions<K, A>
where
    K: Hash + Ord + Clone + StableHash + Serialize + Send + 'static,
    A: Clone + Serialize + Send + 'static,
{
    type Table<'a>
        = &'a mut Self
    where
        Self: 'a;

    #[inline]
    fn table(&mut self) -> Result<&mut Self, StateError> {
        Ok(self)
    }

    fn snapshot(
        &mut self,
        fired: &FiredWindows<K>,
        watermark: i64,
        max_parallelism: u32,
        _now_ms: i64,
    ) -> Result<Vec<PendingKeyedSnapshot>, StateError> {
        Ok(SessionWindows::snapshot(
            self,
            fired,
            FIRED_STATE,
            watermark,
            max_parallelism,
        ))
    }

    #[cfg(test)]
    fn entries_in_memory(&self, _sessions: &SessionWindows<K, A>) -> usize {
        0
    }
}

/// The sessions in the job's keyed state backend: per key its [`KeySessions`], state
/// [`SESSIONS_STATE`].
impl<K, A> SessionStore<K, A> for KeyedStateStore<K>
where
    K: Key,
    A: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    type Table<'a>
        = ValueTable<'a, K, KeySessions<A>>
    where
        Self: 'a;

    #[inline]
    fn table(&mut self) -> Result<ValueTable<'_, K, KeySessions<A>>, StateError> {
        self.value_table::<KeySessions<A>>(SESSIONS_STATE)
    }

    fn snapshot(
        &mut self,
        fired: &FiredWindows<K>,
        watermark: i64,
        max_parallelism: u32,
        now_ms: i64,
    ) -> Result<Vec<PendingKeyedSnapshot>, StateError> {
        Ok(vec![snapshot_store::<K, A>(
            self,
            fired,
            FIRED_STATE,
            watermark,
            max_parallelism,
            now_ms,
        )?])
    }

    #[cfg(test)]
    fn entries_in_memory(&self, sessions: &SessionWindows<K, A>) -> usize {
        Self::entries_in_memory(self) + sessions.queue_entries_in_memory()
    }
}

impl<K: Hash + Eq, A> SessionTable<K, A> for HeapSessions<K, A> {
    #[inline]
    fn get(&mut self, key: &K) -> Result<Option<&KeySessions<A>>, StateError> {
        Ok(Self::get(self, key))
    }
    #[inline]
    fn get_mut(&mut self, key: &K) -> Result<Option<&mut KeySessions<A>>, StateError> {
        Ok(Self::get_mut(self, key))
    }
    #[inline]
    fn insert(&mut self, key: K, sessions: KeySessions<A>) -> Result<(), StateError> {
        Self::insert(self, key, sessions);
        Ok(())
    }
    #[inline]
    fn take(&mut self, key: &K) -> Result<Option<KeySessions<A>>, StateError> {
        Ok(Self::remove(self, key))
    }
}

/// The sessions in the job's keyed state backend: one value per key.
impl<K, A> SessionTable<K, A> for ValueTable<'_, K, KeySessions<A>>
where
    K: Hash + Eq + Clone + Send + 'static,
    A: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    fn get(&mut self, key: &K) -> Result<Option<&KeySessions<A>>, StateError> {
        ValueTable::get(self, key)
    }
    fn get_mut(&mut self, key: &K) -> Result<Option<&mut KeySessions<A>>, StateError> {
        ValueTable::get_mut(self, key)
    }
    fn insert(&mut self, key: K, sessions: KeySessions<A>) -> Result<(), StateError> {
        ValueTable::insert(self, key, sessions)
    }
    fn take(&mut self, key: &K) -> Result<Option<KeySessions<A>>, StateError> {
        let taken = ValueTable::get_mut(self, key)?.map(|sessions| KeySessions {
            earlier: std::mem::take(&mut sessions.earlier),
            latest: Session {
                window: sessions.latest.window,
                contents: sessions.latest.contents.take(),
            },
            queued_at: sessions.queued_at,
        });
        if taken.is_some() {
            ValueTable::remove(self, key)?;
        }
        Ok(taken)
    }
}

impl<K: Hash + Ord + Clone + 'static, A: Clone> SessionWindows<K, A> {
    /// Sessions with a gap of `gap_ms`.
    pub(super) fn new(gap_ms: i64, allowed_lateness_ms: i64) -> Self {
        Self {
            gap_ms,
            allowed_lateness_ms,
            queue: TimerService::new(),
            due: Vec::new(),
            scratch: FiringScratch::default(),
            key_order: KeyOrder::default(),
        }
    }

    /// The window of a record at `time`, `[time, time + gap)`; `None` if it does not fit in
    /// `i64` (the assigner then reports the error).
    #[inline]
    pub(super) fn window_of(&self, time: i64) -> Option<TimeWindow> {
        Some(TimeWindow::new(time, time.checked_add(self.gap_ms)?))
    }

    /// Adds a record in `window` for `key`: merges the window into the key's sessions in
    /// `keys`, adds the value, and fires the session at once if the watermark already passed
    /// its end. Returns the value back if the record was not accepted (its window is late).
    ///
    /// # Errors
    ///
    /// The table's (the state backend failed).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add<T, F>(
        &mut self,
        keys: &mut impl SessionTable<K, A>,
        key: K,
        window: TimeWindow,
        value: T,
        timestamp: Option<i64>,
        function: &mut F,
        emitter: &mut Emitter<'_, '_, F::Out>,
    ) -> Result<Option<T>, StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let watermark = emitter.watermark;
        let lateness = self.allowed_lateness_ms;
        let window_late = cleanup_time(&window, lateness) <= watermark;
        let Some(entry) = keys.get_mut(&key)? else {
            // The key's first session.
            if window_late {
                return Ok(Some(value));
            }
            let contents = function.add(None, value, timestamp);
            let mut latest = Session {
                window,
                contents: Some(contents),
            };
            if window.max_timestamp() <= watermark
                && let Some(contents) = latest.contents.as_mut()
            {
                emitter.emit(function, &key, window, contents);
            }
            let queued_at = due_time(&window, watermark, lateness);
            self.queue
                .register_new_event_time_timer(key.clone(), (), queued_at)?;
            keys.insert(
                key,
                KeySessions {
                    earlier: VecDeque::new(),
                    latest,
                    queued_at,
                },
            )?;
            return Ok(None);
        };
        let session = if entry.latest.window < window {
            // In time order: the window can only merge with the latest session, which starts
            // before it (any other session ends before the latest starts).
            if entry.latest.window.intersects(&window) {
                entry.latest.window = entry.latest.window.cover(&window);
            } else {
                if window_late {
                    return Ok(Some(value));
                }
                let new = Session {
                    window,
                    contents: None,
                };
                let previous = std::mem::replace(&mut entry.latest, new);
                entry.earlier.push_back(previous);
            }
            &mut entry.latest
        } else {
            // Out of order: merge over all the key's sessions.
            let hole = Session {
                window: TimeWindow::default(),
                contents: None,
            };
            let latest = std::mem::replace(&mut entry.latest, hole);
            entry.earlier.push_back(latest);
            let merged = merge_window(&mut entry.earlier, window, window_late, function);
            // Never empty: it held the latest session, and merging keeps at least one session.
            if let Some(latest) = entry.earlier.pop_back() {
                entry.latest = latest;
            }
            match merged {
                None => return Ok(Some(value)),
                Some(index) if index == entry.earlier.len() => &mut entry.latest,
                Some(index) => &mut entry.earlier[index],
            }
        };
        debug_assert!(cleanup_time(&session.window, lateness) > watermark);
        let contents = function.add(session.contents.take(), value, timestamp);
        let contents = session.contents.insert(contents);
        let window = session.window;
        if window.max_timestamp() <= watermark {
            emitter.emit(function, &key, window, contents);
        }
        let due = due_time(&window, watermark, lateness);
        if due < entry.queued_at {
            self.queue
                .delete_registered_event_time_timer(key.clone(), (), entry.queued_at)?;
            self.queue.register_new_event_time_timer(key, (), due)?;
            entry.queued_at = due;
        }
        Ok(None)
    }

    /// The in-flight session of `key` that holds `window` (after [`add`](Self::add) accepted a
    /// record in it), if any.
    ///
    /// # Errors
    ///
    /// The table's.
    pub(super) fn session_of(
        keys: &mut impl SessionTable<K, A>,
        key: &K,
        window: &TimeWindow,
    ) -> Result<Option<TimeWindow>, StateError> {
        let Some(entry) = keys.get(key)? else {
            return Ok(None);
        };
        let holds = |session: &&Session<A>| {
            session.window.start <= window.start && window.end <= session.window.end
        };
        Ok(std::iter::once(&entry.latest)
            .chain(entry.earlier.iter())
            .find(holds)
            .map(|session| session.window))
    }

    /// The watermark advanced from `previous` to `emitter.watermark`: fires the sessions whose
    /// `max_timestamp` lies in between in `(max_timestamp, key)` order (except those `fired`
    /// says fired before the checkpoint), then removes the sessions whose cleanup time the
    /// watermark reached.
    ///
    /// # Errors
    ///
    /// The table's.
    pub(super) fn advance<T, F>(
        &mut self,
        keys: &mut impl SessionTable<K, A>,
        previous: i64,
        function: &mut F,
        emitter: &mut Emitter<'_, '_, F::Out>,
        fired: &FiredWindows<K>,
    ) -> Result<(), StateError>
    where
        F: WindowFunctionCore<K, T, Acc = A>,
    {
        let watermark = emitter.watermark;
        // The keys with something due, out of the map and in key order, so that a key's slot
        // in `due` orders like the key.
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        while let Some(queued) = self.queue.pop_event_time_timer(watermark)? {
            let key = queued.key;
            if let Some(entry) = keys.take(&key)? {
                let KeySessions {
                    mut earlier,
                    latest,
                    ..
                } = entry;
                earlier.push_back(latest);
                due.push((key, earlier));
            }
        }
        self.key_order.sort(&mut due);
        fire_in_order(
            &mut due,
            previous,
            function,
            emitter,
            &mut self.scratch,
            fired,
        );
        let lateness = self.allowed_lateness_ms;
        for (slot, (key, mut sessions)) in due.drain(..).enumerate() {
            // Without lateness a session goes when it fires: exactly the sessions that fired.
            let cleaned = if lateness == 0 {
                self.scratch.end[slot]
            } else {
                sessions.partition_point(|s| cleanup_time(&s.window, lateness) <= watermark)
            };
            sessions.drain(..cleaned);
            // The earliest due time: the first pending firing or the first cleanup.
            let first_cleanup = sessions.front().map(|s| cleanup_time(&s.window, lateness));
            let first_pending = sessions
                .iter()
                .map(|s| s.window.max_timestamp())
                .find(|&max_timestamp| max_timestamp > watermark);
            let queued_at = first_cleanup.into_iter().chain(first_pending).min();
            if let (Some(queued_at), Some(latest)) = (queued_at, sessions.pop_back()) {
                self.queue
                    .register_new_event_time_timer(key.clone(), (), queued_at)?;
                keys.insert(
                    key,
                    KeySessions {
                        earlier: sessions,
                        latest,
                        queued_at,
                    },
                )?;
            }
        }
        self.due = due;
        Ok(())
    }
}

/// Merges `window` into a key's sessions (sorted by start, pairwise non-intersecting) as
/// `MergingWindowSet::add_window` does; returns the index of the session the record goes to, or
/// `None` if the window merges with nothing and is late (`window_late`).
fn merge_window<K, A, T, F>(
    sessions: &mut VecDeque<Session<A>>,
    window: TimeWindow,
    window_late: bool,
    function: &mut F,
) -> Option<usize>
where
    F: WindowFunctionCore<K, T, Acc = A>,
{
    // Where the new window goes in (start, end) order.
    let position = sessions.partition_point(|s| s.window < window);
    if sessions.get(position).is_some_and(|s| s.window == window) {
        // Already in flight: nothing merges.
        return Some(position);
    }
    // The session before it joins if they intersect; the ones after it if they start at or
    // before its end (they cannot join through each other: sessions do not intersect).
    let first = if position > 0 && sessions[position - 1].window.intersects(&window) {
        position - 1
    } else {
        position
    };
    let mut end = position;
    while sessions
        .get(end)
        .is_some_and(|s| s.window.start <= window.end)
    {
        end += 1;
    }
    if first == end {
        // Merges with nothing: a new session.
        if window_late {
            return None;
        }
        sessions.insert(
            position,
            Session {
                window,
                contents: None,
            },
        );
        return Some(position);
    }
    let cover = sessions
        .range(first..end)
        .fold(window, |cover, s| cover.cover(&s.window));
    if end - first > 1 || sessions[first].window != cover {
        // Merge the group into its earliest session, contents in window order. (A window inside
        // one session changes nothing.)
        let mut merged = sessions[first].contents.take();
        for s in sessions.drain(first + 1..end) {
            merged = match (merged, s.contents) {
                (Some(earlier), Some(later)) => Some(function.merge(earlier, later)),
                (earlier, later) => earlier.or(later),
            };
        }
        sessions[first] = Session {
            window: cover,
            contents: merged,
        };
    }
    Some(first)
}

/// No slot, in the calendar's lists.
const NIL: u32 = u32::MAX;

/// Fires the sessions of `due` (keys in key order) whose `max_timestamp` lies in
/// `(previous, watermark]`, in `(max_timestamp, key)` order; a session that `fired` says fired
/// before the checkpoint is passed over without emitting.
///
/// Each key's sessions to fire are consecutive and in time order, so at any moment only a key's
/// next session competes: a calendar (one list of keys per millisecond) yields them in order at
/// O(1) each when the due times span a range not much larger than their number, a heap of the
/// keys' next sessions otherwise. Keys are named by their slot in `due`, which orders as the key.
fn fire_in_order<K, A, T, F>(
    due: &mut [(K, VecDeque<Session<A>>)],
    previous: i64,
    function: &mut F,
    emitter: &mut Emitter<'_, '_, F::Out>,
    scratch: &mut FiringScratch,
    fired: &FiredWindows<K>,
) where
    K: Hash + Ord + Clone,
    F: WindowFunctionCore<K, T, Acc = A>,
{
    let watermark = emitter.watermark;
    let FiringScratch {
        cursor,
        end,
        heads,
        next,
        batch,
    } = scratch;
    cursor.clear();
    end.clear();
    let mut count = 0usize;
    let (mut earliest, mut latest) = (i64::MAX, i64::MIN);
    for (_, sessions) in due.iter() {
        // Sessions that fired before lead only with allowed lateness; the sessions not due yet
        // are the last few.
        let first = if sessions
            .front()
            .is_none_or(|s| s.window.max_timestamp() > previous)
        {
            0
        } else {
            sessions.partition_point(|s| s.window.max_timestamp() <= previous)
        };
        let mut last = sessions.len();
        let mut steps = 0;
        while last > first && sessions[last - 1].window.max_timestamp() > watermark {
            last -= 1;
            steps += 1;
            if steps == 8 {
                last = sessions
                    .partition_point(|s| s.window.max_timestamp() <= watermark)
                    .max(first);
                break;
            }
        }
        if first < last {
            count += last - first;
            earliest = earliest.min(sessions[first].window.max_timestamp());
            latest = latest.max(sessions[last - 1].window.max_timestamp());
        }
        cursor.push(first);
        end.push(last);
    }
    if count == 0 {
        return;
    }
    let max_timestamp = |due: &[(K, VecDeque<Session<A>>)], slot: usize, index: usize| {
        due[slot].1[index].window.max_timestamp()
    };
    let check_fired = !fired.is_empty();
    let mut fire = |due: &mut [(K, VecDeque<Session<A>>)], slot: usize, index: usize| {
        let (key, sessions) = &mut due[slot];
        let session = &mut sessions[index];
        if check_fired && fired.suppresses(key, session.window.max_timestamp()) {
            return;
        }
        if let Some(contents) = session.contents.as_mut() {
            emitter.emit(function, key, session.window, contents);
        }
    };
    // Slots fit in u32 with room for `NIL` (checked): there are at most as many as keys with
    // sessions. The calendar is only used when its span is bounded by the number of sessions.
    let span = u64::try_from(i128::from(latest) - i128::from(earliest) + 1).unwrap_or(u64::MAX);
    let calendar_max = u64::try_from(count)
        .unwrap_or(u64::MAX)
        .saturating_mul(4)
        .saturating_add(4096);
    if span <= calendar_max && due.len() < NIL as usize {
        let offset = |time: i64| usize::try_from(time - earliest).unwrap_or(usize::MAX);
        heads.clear();
        heads.resize(usize::try_from(span).unwrap_or(0), NIL);
        next.clear();
        next.resize(due.len(), NIL);
        for slot in 0..due.len() {
            if cursor[slot] < end[slot] {
                let at = offset(max_timestamp(due, slot, cursor[slot]));
                next[slot] = heads[at];
                heads[at] = slot as u32;
            }
        }
        for at in 0..heads.len() {
            let mut slot = heads[at];
            if slot == NIL {
                continue;
            }
            batch.clear();
            while slot != NIL {
                batch.push(slot);
                slot = next[slot as usize];
            }
            batch.sort_unstable();
            for &slot in batch.iter() {
                let slot_index = slot as usize;
                fire(due, slot_index, cursor[slot_index]);
                cursor[slot_index] += 1;
                if cursor[slot_index] < end[slot_index] {
                    // Later than `at`: a key's sessions are disjoint.
                    let later = offset(max_timestamp(due, slot_index, cursor[slot_index]));
                    next[slot_index] = heads[later];
                    heads[later] = slot;
                }
            }
        }
    } else {
        let mut heap: BinaryHeap<Reverse<(i64, usize)>> = (0..due.len())
            .filter(|&slot| cursor[slot] < end[slot])
            .map(|slot| Reverse((max_timestamp(due, slot, cursor[slot]), slot)))
            .collect();
        while let Some(Reverse((_, slot))) = heap.pop() {
            fire(due, slot, cursor[slot]);
            cursor[slot] += 1;
            if cursor[slot] < end[slot] {
                heap.push(Reverse((max_timestamp(due, slot, cursor[slot]), slot)));
            }
        }
    }
}

impl<K, A> SessionWindows<K, A>
where
    K: Hash + Ord + Clone + StableHash + Serialize + Send + 'static,
    A: Clone + Serialize + Send + 'static,
{
    /// The sessions on the heap as state [`SESSIONS_STATE`], and the fired marks (state
    /// `fired_state`) of the keys with a session that fired: see the module's "Checkpoints".
    ///
    /// The entries are copied now and encoded by checkpoint storage (a key or contents that
    /// cannot be encoded fails the checkpoint there).
    pub(super) fn snapshot(
        keys: &HeapSessions<K, A>,
        fired: &FiredWindows<K>,
        fired_state: &'static str,
        watermark: i64,
        max_parallelism: u32,
    ) -> Vec<PendingKeyedSnapshot> {
        // Copied now (the sessions go on changing), encoded off the data path.
        let mut parts = SnapshotParts {
            contents: Vec::with_capacity(keys.len()),
            marks: Vec::new(),
        };
        for (key, entry) in keys {
            parts.add(key, entry, fired, watermark);
        }
        parts.finish(fired_state, max_parallelism)
    }
}

/// A checkpoint's sessions and fired marks, as they are collected key by key.
pub(super) struct SnapshotParts<K, A> {
    /// `(key, session, contents)`: state [`SESSIONS_STATE`].
    pub(super) contents: Vec<(K, TimeWindow, A)>,
    /// `(key, (), (through, re-armed))`: the fired marks.
    pub(super) marks: Vec<(K, (), (i64, Vec<i64>))>,
}

impl<K, A> SnapshotParts<K, A>
where
    K: Hash + Ord + Clone + StableHash + Serialize + Send + 'static,
    A: Clone + Serialize + Send + 'static,
{
    /// Adds the sessions of `key`, and its fired mark if a session of it fired.
    pub(super) fn add(
        &mut self,
        key: &K,
        entry: &KeySessions<A>,
        fired: &FiredWindows<K>,
        watermark: i64,
    ) {
        let mark = fired.snapshot_of(key, watermark);
        let mut has_fired = false;
        for session in entry.earlier.iter().chain(std::iter::once(&entry.latest)) {
            let Some(acc) = &session.contents else {
                continue;
            };
            self.contents
                .push((key.clone(), session.window, acc.clone()));
            has_fired |= session.window.max_timestamp() <= mark.0;
        }
        if has_fired {
            self.marks.push((key.clone(), (), mark));
        }
    }

    /// The parts as keyed state, encoded when completed.
    pub(super) fn finish(
        self,
        fired_state: &'static str,
        max_parallelism: u32,
    ) -> Vec<PendingKeyedSnapshot> {
        [
            deferred_keyed_state(SESSIONS_STATE, max_parallelism, self.contents),
            deferred_keyed_state(fired_state, max_parallelism, self.marks),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl<K: Hash + Ord + Clone + 'static, A: Clone> SessionWindows<K, A> {
    /// Restores the sessions of `key` (entries of [`SESSIONS_STATE`], in any order) at
    /// `watermark`, into `keys`.
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] if the key already has sessions, if a window is empty, or if two
    /// of its sessions intersect: no run of this operator produces that. The table's, if it
    /// fails.
    pub(super) fn restore_key(
        &mut self,
        keys: &mut impl SessionTable<K, A>,
        key: K,
        mut sessions: Vec<(TimeWindow, A)>,
        watermark: i64,
    ) -> Result<(), StateError> {
        let corrupt =
            |what: String| StateError::Corrupt(format!("state '{SESSIONS_STATE}': {what}"));
        if keys.get(&key)?.is_some() {
            return Err(corrupt("a key's sessions appear twice".into()));
        }
        sessions.sort_unstable_by_key(|s| s.0);
        for (window, _) in &sessions {
            if window.start >= window.end {
                return Err(corrupt(format!("the session {window:?} is empty")));
            }
        }
        if let Some(pair) = sessions.windows(2).find(|p| p[0].0.intersects(&p[1].0)) {
            return Err(corrupt(format!(
                "the sessions {:?} and {:?} of one key intersect",
                pair[0].0, pair[1].0
            )));
        }
        let mut earlier: VecDeque<Session<A>> = sessions
            .into_iter()
            .map(|(window, acc)| Session {
                window,
                contents: Some(acc),
            })
            .collect();
        let Some(latest) = earlier.pop_back() else {
            return Ok(());
        };
        let lateness = self.allowed_lateness_ms;
        // The key's first due time: its first cleanup, or its first firing still ahead.
        let first_cleanup = earlier
            .front()
            .unwrap_or(&latest)
            .window
            .max_timestamp()
            .saturating_add(lateness);
        let first_pending = earlier
            .iter()
            .chain(std::iter::once(&latest))
            .map(|s| s.window.max_timestamp())
            .find(|&max_timestamp| max_timestamp > watermark);
        let queued_at = first_pending.map_or(first_cleanup, |t| t.min(first_cleanup));
        self.queue
            .register_new_event_time_timer(key.clone(), (), queued_at)?;
        keys.insert(
            key,
            KeySessions {
                earlier,
                latest,
                queued_at,
            },
        )
    }

    /// The queue entries (and LMDB writes) held in memory (tests look).
    #[cfg(test)]
    pub(super) fn queue_entries_in_memory(&self) -> usize {
        self.queue.entries_in_memory()
    }

    /// Whether no key has sessions.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sessions of the same gap and lateness, without any (and with the queue on the heap).
    pub(super) fn empty_like(&self) -> Self {
        Self::new(self.gap_ms, self.allowed_lateness_ms)
    }

    /// Keeps the queue in the backend `config` names (LMDB: in `config.local_dir`), before
    /// any key has sessions.
    ///
    /// # Errors
    ///
    /// LMDB cannot open its environment.
    pub(super) fn open_queue(&mut self, config: &KeyedBackendConfig) -> Result<(), StateError>
    where
        K: Key,
    {
        debug_assert!(self.queue.is_empty(), "the queue moves before any record");
        self.queue = TimerService::open(config)?;
        Ok(())
    }
}

/// When a session's state goes: `max_timestamp + allowed_lateness`.
fn cleanup_time(window: &TimeWindow, allowed_lateness_ms: i64) -> i64 {
    window.max_timestamp().saturating_add(allowed_lateness_ms)
}

/// The first time something is due for a session: its firing, or its cleanup once it fired.
fn due_time(window: &TimeWindow, watermark: i64, allowed_lateness_ms: i64) -> i64 {
    if window.max_timestamp() > watermark {
        window.max_timestamp()
    } else {
        cleanup_time(window, allowed_lateness_ms)
    }
}

/// The sessions in the state backend (`store`: per key its [`KeySessions`], state
/// [`SESSIONS_STATE`]) as the checkpoint the heap's [`SessionWindows::snapshot`] gives: the
/// backend's view frozen now, read and converted by checkpoint storage, off the data path.
/// `fired` is copied (it is small: marks of recently restored keys).
///
/// # Errors
///
/// The backend's, preparing its snapshot (reading it fails when it is completed).
pub(super) fn snapshot_store<K, A>(
    store: &mut KeyedStateStore<K>,
    fired: &FiredWindows<K>,
    fired_state: &'static str,
    watermark: i64,
    max_parallelism: u32,
    now_ms: i64,
) -> Result<PendingKeyedSnapshot, StateError>
where
    K: Key,
    A: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    let pending = store.snapshot(now_ms)?;
    let fired = fired.clone();
    Ok(PendingKeyedSnapshot::Deferred(Box::new(move || {
        let stored = pending.complete()?.take_state(SESSIONS_STATE);
        let mut parts = SnapshotParts {
            contents: Vec::with_capacity(stored.entries.len()),
            marks: Vec::new(),
        };
        for entry in &stored.entries {
            let key: K = decode_entry_key(SESSIONS_STATE, entry)?;
            let sessions: KeySessions<A> = decode_entry_value(SESSIONS_STATE, entry)?;
            parts.add(&key, &sessions, &fired, watermark);
        }
        let mut snapshot = KeyedStateSnapshot::default();
        for part in parts.finish(fired_state, max_parallelism) {
            snapshot.merge(part.complete()?)?;
        }
        Ok(snapshot)
    })))
}
