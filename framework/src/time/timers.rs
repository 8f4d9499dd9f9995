//! Timers of keyed operators: the pure core of Flink's `InternalTimerService`.
//!
//! A keyed operator (a `KeyedProcessFunction`, a window operator's trigger) registers timers for a
//! key and a *namespace* (a window, or `()` when there is none) at an event time or a processing
//! time. [`TimerService`] keeps them and hands them back when time reaches them: event-time timers
//! when a watermark at or past their timestamp arrives, processing-time timers when the runtime
//! reports that its clock reached them. The service reads no clock and does no I/O; time is
//! always an argument, so the simulator and unit tests drive it with virtual time.
//!
//! ## Design
//!
//! - Each time domain is one `BTreeSet<Timer<K, N>>`. [`Timer`]'s order is
//!   `(timestamp, key, namespace)`, so the set is at once the firing queue (its first element is
//!   the next timer due), the deduplication index (a timer is registered at most once, as in
//!   Flink's `HeapPriorityQueueSet`) and the membership index for
//!   [`TimerService::has_event_time_timer`]. Register, delete, lookup and pop are `O(log n)`.
//!   Only ordered collections are used, so every iteration order is deterministic.
//! - Timers are handed out **one at a time** ([`TimerService::pop_event_time_timer`],
//!   [`TimerService::pop_processing_time_timer`]). The operator calls its `on_timer` callback
//!   between two pops, and the callback may register or delete timers through the same service.
//!   A timer it registers at or below the time being advanced to is returned by a later pop of
//!   the same drain, as in Flink's `InternalTimerServiceImpl.advanceWatermark`, which loops
//!   `while ((timer = queue.peek()) != null && timer.getTimestamp() <= time)`.
//!   [`TimerService::advance_watermark`] and [`TimerService::advance_processing_time`] are
//!   conveniences that drain into a `Vec` when no callback needs to run in between.
//! - Snapshots ([`TimerSnapshot`]) are plain sorted vectors, serialisable with serde. Like Flink,
//!   a snapshot holds the timers only, not the watermark: after a restore, event time restarts
//!   from the sources' replay (see [`TimerService::restore`]).
//!
//! ## Invariants
//!
//! - The current watermark never decreases; it starts at `i64::MIN`. A watermark below the
//!   current one is treated as the current one.
//! - A timer is in its set at most once; registering it again is a no-op.
//! - A timer is never returned before its time: an event-time timer only once the watermark is at
//!   or past its timestamp, a processing-time timer only once `now` is.
//! - Each pop returns the smallest due timer in `(timestamp, key, namespace)` order, so a drain
//!   without callbacks yields strictly increasing timers, and a timer a callback registers
//!   earlier than the one just returned (but still due) is the next one returned.
//! - A timer registered at or below the current watermark does **not** fire at registration; it
//!   fires with the next watermark the service is given (the next pop or advance), as in Flink.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A timer of a keyed operator: fire for `key` in `namespace` at `timestamp` (milliseconds, event
/// time or processing time depending on the queue it was registered in), as Flink's
/// `InternalTimer`.
///
/// The derived order is `(timestamp, key, namespace)` (the field order), which is the order in
/// which [`TimerService`] fires timers.
///
/// # Examples
///
/// ```
/// use eichhorn::time::Timer;
///
/// let early = Timer::new("b", (), 5);
/// let late = Timer::new("a", (), 7);
/// assert!(early < late); // timestamp first, then key, then namespace
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timer<K, N> {
    /// When the timer fires, in milliseconds. First field, so that the derived order is the
    /// firing order.
    pub timestamp: i64,
    /// The key the timer was registered for; the operator sets it as the current key before
    /// calling its `on_timer` callback.
    pub key: K,
    /// The namespace the timer was registered in: a window for window triggers, `()` for a
    /// `KeyedProcessFunction`.
    pub namespace: N,
}

impl<K, N> Timer<K, N> {
    /// A timer for `key` in `namespace` at `timestamp` ms.
    pub const fn new(key: K, namespace: N, timestamp: i64) -> Self {
        Self {
            timestamp,
            key,
            namespace,
        }
    }
}

/// The timers of one keyed operator subtask, in event time and in processing time; the sans-IO
/// core of Flink's `InternalTimerService`.
///
/// ## Call order
///
/// - Register and delete timers at any time, including from a timer callback.
/// - When a watermark arrives, call [`pop_event_time_timer`](Self::pop_event_time_timer) with it
///   until it returns `None`, running the operator's callback for each timer returned; then
///   forward the watermark downstream. Timers that callbacks register at or below the watermark
///   are returned within the same loop.
/// - Ask [`next_processing_time_timer`](Self::next_processing_time_timer) when to wake up; on
///   wake-up call [`pop_processing_time_timer`](Self::pop_processing_time_timer) with the clock's
///   time until it returns `None`, then ask again (callbacks may have changed the answer).
/// - At a checkpoint, [`snapshot`](Self::snapshot); on recovery, [`restore`](Self::restore) into a
///   fresh service (several snapshots when rescaling, then [`retain_keys`](Self::retain_keys)).
///
/// # Examples
///
/// ```
/// use eichhorn::time::{Timer, TimerService};
///
/// let mut timers: TimerService<&str, ()> = TimerService::new();
/// timers.register_event_time_timer("a", (), 10);
/// timers.register_event_time_timer("a", (), 10); // deduplicated
/// timers.register_event_time_timer("b", (), 20);
/// assert_eq!(timers.event_time_timer_count(), 2);
///
/// // An operator drains one timer at a time, so that its callback can register new timers.
/// // Here the callback re-registers each timer 15 ms later, like a periodic `on_timer`.
/// let mut fired = Vec::new();
/// while let Some(timer) = timers.pop_event_time_timer(25) {
///     timers.register_event_time_timer(timer.key, (), timer.timestamp + 15);
///     fired.push((timer.key, timer.timestamp));
/// }
/// // "a"@25 was registered while draining watermark 25, so it fired in the same drain.
/// assert_eq!(fired, vec![("a", 10), ("b", 20), ("a", 25)]);
/// assert_eq!(timers.current_watermark(), 25);
///
/// // Without a callback, `advance_watermark` drains into a `Vec`.
/// let mut out = Vec::new();
/// timers.advance_watermark(40, &mut out);
/// assert_eq!(out, vec![Timer::new("b", (), 35), Timer::new("a", (), 40)]);
///
/// // Processing time is passed in; the runtime schedules one wake-up for the earliest timer.
/// timers.register_processing_time_timer("a", (), 1_000);
/// assert_eq!(timers.next_processing_time_timer(), Some(1_000));
/// assert_eq!(timers.pop_processing_time_timer(999), None);
/// assert_eq!(timers.pop_processing_time_timer(1_000), Some(Timer::new("a", (), 1_000)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerService<K, N> {
    /// Pending event-time timers in firing order.
    event_time_timers: BTreeSet<Timer<K, N>>,
    /// Pending processing-time timers in firing order.
    processing_time_timers: BTreeSet<Timer<K, N>>,
    /// The highest watermark seen, `i64::MIN` before any.
    current_watermark: i64,
}

/// The timers of a [`TimerService`] at a checkpoint: plain vectors in firing order
/// (`(timestamp, key, namespace)`, no duplicates), serialisable with serde.
///
/// As in Flink, the watermark is not part of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerSnapshot<K, N> {
    /// Pending event-time timers, sorted and without duplicates.
    pub event_time_timers: Vec<Timer<K, N>>,
    /// Pending processing-time timers, sorted and without duplicates.
    pub processing_time_timers: Vec<Timer<K, N>>,
}

impl<K: Ord + Clone, N: Ord + Clone> TimerService<K, N> {
    /// An empty service with the watermark at `i64::MIN`.
    pub const fn new() -> Self {
        Self {
            event_time_timers: BTreeSet::new(),
            processing_time_timers: BTreeSet::new(),
            current_watermark: i64::MIN,
        }
    }

    /// Registers an event-time timer for `key` in `namespace` at `timestamp`; returns whether it
    /// was new (`false`: it was already registered, and registering twice is registering once).
    ///
    /// A timer at or below [`current_watermark`](Self::current_watermark) does not fire now: it
    /// fires with the next watermark given to [`pop_event_time_timer`](Self::pop_event_time_timer)
    /// or [`advance_watermark`](Self::advance_watermark) (during a drain, that is the next pop).
    pub fn register_event_time_timer(&mut self, key: K, namespace: N, timestamp: i64) -> bool {
        self.event_time_timers
            .insert(Timer::new(key, namespace, timestamp))
    }

    /// Deletes the event-time timer for `key` in `namespace` at `timestamp`; returns whether it
    /// was registered (deleting a timer that does not exist is a no-op, as in Flink).
    pub fn delete_event_time_timer(&mut self, key: K, namespace: N, timestamp: i64) -> bool {
        self.event_time_timers
            .remove(&Timer::new(key, namespace, timestamp))
    }

    /// Registers a processing-time timer for `key` in `namespace` at `timestamp`; returns whether
    /// it was new. A timer in the past is due at once: it is returned by the next
    /// [`pop_processing_time_timer`](Self::pop_processing_time_timer), and
    /// [`next_processing_time_timer`](Self::next_processing_time_timer) reports it.
    pub fn register_processing_time_timer(&mut self, key: K, namespace: N, timestamp: i64) -> bool {
        self.processing_time_timers
            .insert(Timer::new(key, namespace, timestamp))
    }

    /// Deletes the processing-time timer for `key` in `namespace` at `timestamp`; returns whether
    /// it was registered.
    pub fn delete_processing_time_timer(&mut self, key: K, namespace: N, timestamp: i64) -> bool {
        self.processing_time_timers
            .remove(&Timer::new(key, namespace, timestamp))
    }

    /// Whether an event-time timer for `key` in `namespace` at `timestamp` is pending. Clones
    /// `key` and `namespace` for the lookup.
    pub fn has_event_time_timer(&self, key: &K, namespace: &N, timestamp: i64) -> bool {
        self.event_time_timers
            .contains(&Timer::new(key.clone(), namespace.clone(), timestamp))
    }

    /// Whether a processing-time timer for `key` in `namespace` at `timestamp` is pending. Clones
    /// `key` and `namespace` for the lookup.
    pub fn has_processing_time_timer(&self, key: &K, namespace: &N, timestamp: i64) -> bool {
        self.processing_time_timers
            .contains(&Timer::new(key.clone(), namespace.clone(), timestamp))
    }

    /// The highest watermark given to this service, `i64::MIN` before any.
    pub const fn current_watermark(&self) -> i64 {
        self.current_watermark
    }

    /// Advances the watermark to `watermark` (a lower value leaves it unchanged) and removes and
    /// returns the next event-time timer at or below the current watermark, in
    /// `(timestamp, key, namespace)` order; `None` when no timer is due.
    ///
    /// Call it in a loop until `None`, running the timer callback between calls: timers the
    /// callback registers at or below the watermark are returned by this same loop, as in Flink.
    /// Calling it again with the same watermark after `None` returns `None` unless timers at or
    /// below the watermark were registered meanwhile.
    pub fn pop_event_time_timer(&mut self, watermark: i64) -> Option<Timer<K, N>> {
        self.current_watermark = self.current_watermark.max(watermark);
        let next = self.event_time_timers.first()?;
        if next.timestamp <= self.current_watermark {
            self.event_time_timers.pop_first()
        } else {
            None
        }
    }

    /// Advances the watermark to `watermark` and appends every due event-time timer to `out`, in
    /// `(timestamp, key, namespace)` order, removing them; returns how many were appended.
    ///
    /// A convenience for callers without a callback between timers (a callback that registers
    /// timers must use [`pop_event_time_timer`](Self::pop_event_time_timer), which this is a loop
    /// over). A timer registered at or below the watermark *after* this call fires on the next
    /// call, not at registration.
    pub fn advance_watermark(&mut self, watermark: i64, out: &mut Vec<Timer<K, N>>) -> usize {
        let before = out.len();
        while let Some(timer) = self.pop_event_time_timer(watermark) {
            out.push(timer);
        }
        out.len() - before
    }

    /// Removes and returns the next processing-time timer at or below `now`, in
    /// `(timestamp, key, namespace)` order; `None` when none is due. Call it in a loop, as
    /// [`pop_event_time_timer`](Self::pop_event_time_timer). The service keeps no processing
    /// time of its own: `now` is the runtime's clock at the call.
    pub fn pop_processing_time_timer(&mut self, now: i64) -> Option<Timer<K, N>> {
        let next = self.processing_time_timers.first()?;
        if next.timestamp <= now {
            self.processing_time_timers.pop_first()
        } else {
            None
        }
    }

    /// Appends every processing-time timer at or below `now` to `out` in
    /// `(timestamp, key, namespace)` order, removing them; returns how many were appended. A loop
    /// over [`pop_processing_time_timer`](Self::pop_processing_time_timer).
    pub fn advance_processing_time(&mut self, now: i64, out: &mut Vec<Timer<K, N>>) -> usize {
        let before = out.len();
        while let Some(timer) = self.pop_processing_time_timer(now) {
            out.push(timer);
        }
        out.len() - before
    }

    /// The timestamp of the earliest pending processing-time timer, so the runtime can schedule
    /// one wake-up; `None` when there is none. Ask again after registering, deleting or firing.
    pub fn next_processing_time_timer(&self) -> Option<i64> {
        self.processing_time_timers.first().map(|t| t.timestamp)
    }

    /// The timestamp of the earliest pending event-time timer; `None` when there is none.
    pub fn next_event_time_timer(&self) -> Option<i64> {
        self.event_time_timers.first().map(|t| t.timestamp)
    }

    /// How many event-time timers are pending.
    pub fn event_time_timer_count(&self) -> usize {
        self.event_time_timers.len()
    }

    /// How many processing-time timers are pending.
    pub fn processing_time_timer_count(&self) -> usize {
        self.processing_time_timers.len()
    }

    /// The pending timers of both domains, for a checkpoint. The watermark is not included.
    pub fn snapshot(&self) -> TimerSnapshot<K, N> {
        TimerSnapshot {
            event_time_timers: self.event_time_timers.iter().cloned().collect(),
            processing_time_timers: self.processing_time_timers.iter().cloned().collect(),
        }
    }

    /// Adds the timers of `snapshot` to this service; the watermark is left unchanged.
    ///
    /// Restoring into a fresh service reproduces the snapshotted timers. Restoring several
    /// snapshots unions them (timers present in more than one are kept once), which together with
    /// [`retain_keys`](Self::retain_keys) rebuilds a subtask's timers after rescaling. The
    /// vectors need not be sorted or free of duplicates, so any deserialised snapshot is valid.
    ///
    /// As in Flink, the restored service starts at the watermark it had (`i64::MIN` when fresh):
    /// restored timers at or below the snapshotted watermark fire with the first watermark that
    /// reaches them during the replay.
    pub fn restore(&mut self, snapshot: TimerSnapshot<K, N>) {
        self.event_time_timers.extend(snapshot.event_time_timers);
        self.processing_time_timers
            .extend(snapshot.processing_time_timers);
    }

    /// Keeps only the timers (of both domains) whose key satisfies `keep`, e.g. the keys of the
    /// key groups this subtask owns after rescaling. `keep` is called once per timer, in firing
    /// order.
    pub fn retain_keys(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.event_time_timers.retain(|t| keep(&t.key));
        self.processing_time_timers.retain(|t| keep(&t.key));
    }
}

impl<K, N> TimerService<K, N>
where
    K: Ord + Clone + crate::state::StableHash + Serialize + serde::de::DeserializeOwned,
    N: Ord + Clone + Serialize + serde::de::DeserializeOwned,
{
    /// The pending timers as keyed state `name`: one entry per timer, in the key group of its
    /// key, so timers move with their keys when parallelism changes. Flink keeps timers on the
    /// heap next to a RocksDB backend (`timer-service.factory: HEAP`); so do we, in either
    /// backend, and snapshot them with the keyed state.
    ///
    /// # Errors
    ///
    /// A key or namespace cannot be encoded.
    pub fn to_keyed_snapshot(
        &self,
        name: &str,
        max_parallelism: u32,
    ) -> Result<crate::state::KeyedStateSnapshot, crate::state::StateError> {
        let mut entries =
            Vec::with_capacity(self.event_time_timers.len() + self.processing_time_timers.len());
        for (domain, timers) in [
            (0u8, &self.event_time_timers),
            (1u8, &self.processing_time_timers),
        ] {
            for timer in timers {
                let key =
                    postcard::to_allocvec(&(domain, timer.timestamp, &timer.key, &timer.namespace))
                        .map_err(|e| {
                            crate::state::StateError::Backend(format!(
                                "cannot encode a timer of '{name}': {e}"
                            ))
                        })?;
                entries.push(crate::state::KeyedEntry {
                    key_group: crate::state::key_group_for_key(&timer.key, max_parallelism).0,
                    state: 0,
                    key,
                    value: Vec::new(),
                });
            }
        }
        entries.sort_unstable();
        Ok(crate::state::KeyedStateSnapshot {
            states: vec![crate::state::StateMeta {
                name: name.to_string(),
                type_name: std::any::type_name::<Timer<K, N>>().to_string(),
            }],
            entries,
        })
    }

    /// Adds the timers of a snapshot made by [`TimerService::to_keyed_snapshot`] (state `name`).
    ///
    /// # Errors
    ///
    /// [`crate::state::StateError::Corrupt`] if an entry does not decode.
    pub fn restore_keyed_snapshot(
        &mut self,
        snapshot: &crate::state::KeyedStateSnapshot,
        name: &str,
    ) -> Result<(), crate::state::StateError> {
        let Some(index) = snapshot.state_index(name) else {
            return Ok(());
        };
        for entry in snapshot.entries.iter().filter(|e| e.state == index) {
            let (domain, timestamp, key, namespace): (u8, i64, K, N) =
                postcard::from_bytes(&entry.key).map_err(|e| {
                    crate::state::StateError::Corrupt(format!(
                        "timer of '{name}' in key group {}: {e}",
                        entry.key_group
                    ))
                })?;
            let timer = Timer::new(key, namespace, timestamp);
            match domain {
                0 => {
                    self.event_time_timers.insert(timer);
                }
                1 => {
                    self.processing_time_timers.insert(timer);
                }
                other => {
                    return Err(crate::state::StateError::Corrupt(format!(
                        "timer of '{name}' in key group {}: unknown time domain {other}",
                        entry.key_group
                    )));
                }
            }
        }
        Ok(())
    }
}

impl<K: Ord + Clone, N: Ord + Clone> Default for TimerService<K, N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Service = TimerService<u8, u8>;

    fn t(key: u8, namespace: u8, timestamp: i64) -> Timer<u8, u8> {
        Timer::new(key, namespace, timestamp)
    }

    fn drain_event_time(service: &mut Service, watermark: i64) -> Vec<Timer<u8, u8>> {
        let mut out = Vec::new();
        service.advance_watermark(watermark, &mut out);
        out
    }

    #[test]
    fn registering_twice_is_registering_once() {
        let mut s = Service::new();
        assert!(s.register_event_time_timer(1, 0, 10));
        assert!(!s.register_event_time_timer(1, 0, 10));
        assert!(s.register_event_time_timer(1, 1, 10));
        assert!(s.register_processing_time_timer(1, 0, 10));
        assert!(!s.register_processing_time_timer(1, 0, 10));
        assert_eq!(s.event_time_timer_count(), 2);
        assert_eq!(s.processing_time_timer_count(), 1);
        assert_eq!(drain_event_time(&mut s, 10), vec![t(1, 0, 10), t(1, 1, 10)]);
        assert_eq!(drain_event_time(&mut s, 100), vec![]);
    }

    #[test]
    fn delete_removes_only_that_timer() {
        let mut s = Service::new();
        s.register_event_time_timer(1, 0, 10);
        s.register_event_time_timer(1, 0, 11);
        s.register_processing_time_timer(1, 0, 10);
        assert!(s.delete_event_time_timer(1, 0, 10));
        assert!(!s.delete_event_time_timer(1, 0, 10));
        assert!(!s.delete_event_time_timer(2, 0, 11));
        assert!(!s.has_event_time_timer(&1, &0, 10));
        assert!(s.has_event_time_timer(&1, &0, 11));
        // The domains are separate.
        assert!(s.has_processing_time_timer(&1, &0, 10));
        assert!(s.delete_processing_time_timer(1, 0, 10));
        assert_eq!(s.processing_time_timer_count(), 0);
        assert_eq!(drain_event_time(&mut s, i64::MAX), vec![t(1, 0, 11)]);
    }

    #[test]
    fn fires_in_timestamp_key_namespace_order() {
        let mut s = Service::new();
        for (k, n, ts) in [
            (2, 0, 5),
            (1, 1, 5),
            (1, 0, 5),
            (0, 0, 7),
            (3, 3, 1),
            (0, 0, 9),
        ] {
            s.register_event_time_timer(k, n, ts);
        }
        assert_eq!(s.next_event_time_timer(), Some(1));
        assert_eq!(
            drain_event_time(&mut s, 7),
            vec![t(3, 3, 1), t(1, 0, 5), t(1, 1, 5), t(2, 0, 5), t(0, 0, 7)]
        );
        assert_eq!(s.current_watermark(), 7);
        assert_eq!(s.event_time_timer_count(), 1);
        assert_eq!(drain_event_time(&mut s, 8), vec![]);
        assert_eq!(drain_event_time(&mut s, 9), vec![t(0, 0, 9)]);
    }

    #[test]
    fn watermark_starts_at_min_and_never_decreases() {
        let mut s = Service::new();
        assert_eq!(s.current_watermark(), i64::MIN);
        s.register_event_time_timer(0, 0, i64::MIN);
        assert_eq!(drain_event_time(&mut s, i64::MIN), vec![t(0, 0, i64::MIN)]);
        drain_event_time(&mut s, 10);
        drain_event_time(&mut s, 3);
        assert_eq!(s.current_watermark(), 10);
        // A lower watermark counts as the current one: a timer at 8 is due.
        s.register_event_time_timer(0, 0, 8);
        assert_eq!(drain_event_time(&mut s, 3), vec![t(0, 0, 8)]);
    }

    #[test]
    fn timer_at_current_watermark_fires_only_at_the_next_advance() {
        let mut s = Service::new();
        drain_event_time(&mut s, 10);
        s.register_event_time_timer(1, 0, 10);
        s.register_event_time_timer(1, 0, 4);
        // Registration does not fire; the timers wait for the next watermark, even an equal one.
        assert_eq!(s.event_time_timer_count(), 2);
        assert_eq!(drain_event_time(&mut s, 10), vec![t(1, 0, 4), t(1, 0, 10)]);
    }

    #[test]
    fn timer_registered_while_draining_fires_in_the_same_drain() {
        let mut s = Service::new();
        s.register_event_time_timer(1, 0, 10);
        s.register_event_time_timer(2, 0, 30);
        let mut fired = Vec::new();
        while let Some(timer) = s.pop_event_time_timer(20) {
            if timer.key == 1 {
                // Below the watermark, at it, and beyond it.
                s.register_event_time_timer(3, 0, timer.timestamp + 5);
                s.register_event_time_timer(4, 0, 20);
                s.register_event_time_timer(5, 0, 21);
            }
            fired.push(timer);
        }
        assert_eq!(fired, vec![t(1, 0, 10), t(3, 0, 15), t(4, 0, 20)]);
        assert_eq!(drain_event_time(&mut s, 30), vec![t(5, 0, 21), t(2, 0, 30)]);
    }

    #[test]
    fn processing_time_next_timer_and_firing() {
        let mut s = Service::new();
        assert_eq!(s.next_processing_time_timer(), None);
        s.register_processing_time_timer(1, 0, 500);
        s.register_processing_time_timer(0, 0, 200);
        s.register_processing_time_timer(2, 0, 200);
        assert_eq!(s.next_processing_time_timer(), Some(200));
        let mut out = Vec::new();
        assert_eq!(s.advance_processing_time(199, &mut out), 0);
        assert_eq!(s.advance_processing_time(200, &mut out), 2);
        assert_eq!(out, vec![t(0, 0, 200), t(2, 0, 200)]);
        assert_eq!(s.next_processing_time_timer(), Some(500));
        // A timer in the past is due at once.
        s.register_processing_time_timer(3, 0, 100);
        assert_eq!(s.next_processing_time_timer(), Some(100));
        assert_eq!(s.pop_processing_time_timer(201), Some(t(3, 0, 100)));
        assert_eq!(s.pop_processing_time_timer(201), None);
        s.delete_processing_time_timer(1, 0, 500);
        assert_eq!(s.next_processing_time_timer(), None);
        // Processing time does not move the watermark.
        assert_eq!(s.current_watermark(), i64::MIN);
    }

    #[test]
    fn snapshot_is_sorted_and_restore_unions_then_retain_keys_filters() {
        let mut a = Service::new();
        a.register_event_time_timer(3, 0, 5);
        a.register_event_time_timer(1, 0, 9);
        a.register_processing_time_timer(2, 0, 7);
        let mut b = Service::new();
        b.register_event_time_timer(1, 0, 9);
        b.register_event_time_timer(4, 1, 2);
        let snap_a = a.snapshot();
        assert_eq!(snap_a.event_time_timers, vec![t(3, 0, 5), t(1, 0, 9)]);
        assert_eq!(snap_a.processing_time_timers, vec![t(2, 0, 7)]);

        let mut merged = Service::new();
        merged.restore(snap_a);
        merged.restore(b.snapshot());
        assert_eq!(merged.event_time_timer_count(), 3);
        merged.retain_keys(|k| k % 2 == 0);
        let snap = merged.snapshot();
        assert_eq!(snap.event_time_timers, vec![t(4, 1, 2)]);
        assert_eq!(snap.processing_time_timers, vec![t(2, 0, 7)]);
    }

    #[test]
    fn restore_accepts_unsorted_duplicated_vectors() {
        let mut s = Service::new();
        s.restore(TimerSnapshot {
            event_time_timers: vec![t(1, 0, 9), t(0, 0, 3), t(1, 0, 9)],
            processing_time_timers: vec![],
        });
        assert_eq!(drain_event_time(&mut s, 10), vec![t(0, 0, 3), t(1, 0, 9)]);
    }

    /// One step of a random run. Keys, namespaces and timestamps come from small ranges so that
    /// duplicates, deletes of registered timers and ties are common.
    #[derive(Debug, Clone)]
    enum Op {
        RegisterEvent(u8, u8, i64),
        DeleteEvent(u8, u8, i64),
        RegisterProcessing(u8, u8, i64),
        DeleteProcessing(u8, u8, i64),
        /// Advance the watermark; with `Some(interval)` every fired timer re-registers itself
        /// `interval` ms later from its callback.
        AdvanceWatermark(i64, Option<i64>),
        AdvanceProcessingTime(i64, Option<i64>),
    }

    fn op_strategy(time: std::ops::Range<i64>) -> impl Strategy<Value = Op> {
        let k = 0u8..3;
        let n = 0u8..2;
        let interval = proptest::option::of(1i64..8);
        prop_oneof![
            3 => (k.clone(), n.clone(), time.clone())
                .prop_map(|(k, n, ts)| Op::RegisterEvent(k, n, ts)),
            1 => (k.clone(), n.clone(), time.clone())
                .prop_map(|(k, n, ts)| Op::DeleteEvent(k, n, ts)),
            2 => (k.clone(), n.clone(), time.clone())
                .prop_map(|(k, n, ts)| Op::RegisterProcessing(k, n, ts)),
            1 => (k, n, time.clone()).prop_map(|(k, n, ts)| Op::DeleteProcessing(k, n, ts)),
            1 => (time.clone(), interval.clone()).prop_map(|(w, i)| Op::AdvanceWatermark(w, i)),
            1 => (time, interval).prop_map(|(now, i)| Op::AdvanceProcessingTime(now, i)),
        ]
    }

    /// The obvious model: unsorted vectors of registered timers and a linear scan for the
    /// smallest due timer.
    #[derive(Debug, Default)]
    struct Oracle {
        event: Vec<Timer<u8, u8>>,
        processing: Vec<Timer<u8, u8>>,
        watermark: Option<i64>,
    }

    impl Oracle {
        fn register(timers: &mut Vec<Timer<u8, u8>>, timer: Timer<u8, u8>) {
            if !timers.contains(&timer) {
                timers.push(timer);
            }
        }

        fn drain(
            timers: &mut Vec<Timer<u8, u8>>,
            time: i64,
            interval: Option<i64>,
        ) -> Vec<Timer<u8, u8>> {
            let mut fired = Vec::new();
            loop {
                let due = timers
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.timestamp <= time)
                    .min_by(|(_, a), (_, b)| {
                        (a.timestamp, a.key, a.namespace).cmp(&(b.timestamp, b.key, b.namespace))
                    })
                    .map(|(i, _)| i);
                let Some(i) = due else { break };
                let timer = timers.remove(i);
                if let Some(interval) = interval {
                    let again = Timer::new(timer.key, timer.namespace, timer.timestamp + interval);
                    Self::register(timers, again);
                }
                fired.push(timer);
            }
            fired
        }

        /// Applies `op`; returns the timers it fired.
        fn apply(&mut self, op: &Op) -> Vec<Timer<u8, u8>> {
            match *op {
                Op::RegisterEvent(k, n, ts) => Self::register(&mut self.event, t(k, n, ts)),
                Op::DeleteEvent(k, n, ts) => self.event.retain(|x| *x != t(k, n, ts)),
                Op::RegisterProcessing(k, n, ts) => {
                    Self::register(&mut self.processing, t(k, n, ts));
                }
                Op::DeleteProcessing(k, n, ts) => self.processing.retain(|x| *x != t(k, n, ts)),
                Op::AdvanceWatermark(w, interval) => {
                    let w = self.watermark.map_or(w, |current| current.max(w));
                    self.watermark = Some(w);
                    return Self::drain(&mut self.event, w, interval);
                }
                Op::AdvanceProcessingTime(now, interval) => {
                    return Self::drain(&mut self.processing, now, interval);
                }
            }
            Vec::new()
        }
    }

    /// Applies `op` to the service the way an operator would (pop loop with the callback in
    /// between); returns the timers it fired.
    fn apply(s: &mut Service, op: &Op) -> Vec<Timer<u8, u8>> {
        let mut fired = Vec::new();
        match *op {
            Op::RegisterEvent(k, n, ts) => {
                s.register_event_time_timer(k, n, ts);
            }
            Op::DeleteEvent(k, n, ts) => {
                s.delete_event_time_timer(k, n, ts);
            }
            Op::RegisterProcessing(k, n, ts) => {
                s.register_processing_time_timer(k, n, ts);
            }
            Op::DeleteProcessing(k, n, ts) => {
                s.delete_processing_time_timer(k, n, ts);
            }
            Op::AdvanceWatermark(w, interval) => {
                while let Some(timer) = s.pop_event_time_timer(w) {
                    if let Some(i) = interval {
                        s.register_event_time_timer(
                            timer.key,
                            timer.namespace,
                            timer.timestamp + i,
                        );
                    }
                    fired.push(timer);
                }
            }
            Op::AdvanceProcessingTime(now, interval) => {
                while let Some(timer) = s.pop_processing_time_timer(now) {
                    if let Some(i) = interval {
                        s.register_processing_time_timer(
                            timer.key,
                            timer.namespace,
                            timer.timestamp + i,
                        );
                    }
                    fired.push(timer);
                }
            }
        }
        fired
    }

    proptest! {
        #[test]
        fn matches_the_oracle(ops in proptest::collection::vec(op_strategy(-30..30), 0..200)) {
            let mut s = Service::new();
            let mut oracle = Oracle::default();
            for op in &ops {
                let fired = apply(&mut s, op);
                prop_assert_eq!(&fired, &oracle.apply(op), "op {:?}", op);
                // Strictly increasing: nothing fires twice within a drain, ties are ordered.
                prop_assert!(fired.windows(2).all(|w| w[0] < w[1]));
                match *op {
                    Op::AdvanceWatermark(..) => {
                        let wm = s.current_watermark();
                        prop_assert_eq!(Some(wm), oracle.watermark);
                        // Nothing early, nothing left behind.
                        prop_assert!(fired.iter().all(|t| t.timestamp <= wm));
                        prop_assert!(s.next_event_time_timer().is_none_or(|ts| ts > wm));
                    }
                    Op::AdvanceProcessingTime(now, _) => {
                        prop_assert!(fired.iter().all(|t| t.timestamp <= now));
                        prop_assert!(s.next_processing_time_timer().is_none_or(|ts| ts > now));
                    }
                    _ => {}
                }
                prop_assert_eq!(s.event_time_timer_count(), oracle.event.len());
                prop_assert_eq!(s.processing_time_timer_count(), oracle.processing.len());
                prop_assert_eq!(
                    s.next_processing_time_timer(),
                    oracle.processing.iter().map(|t| t.timestamp).min()
                );
                for timer in &oracle.event {
                    prop_assert!(s.has_event_time_timer(&timer.key, &timer.namespace, timer.timestamp));
                }
                for timer in &oracle.processing {
                    prop_assert!(
                        s.has_processing_time_timer(&timer.key, &timer.namespace, timer.timestamp)
                    );
                }
            }
        }

        #[test]
        fn snapshot_restore_round_trips_and_fires_the_same(
            before in proptest::collection::vec(op_strategy(-30..30), 0..100),
            after in proptest::collection::vec(op_strategy(0..40), 0..100),
        ) {
            let mut original = Service::new();
            for op in &before {
                apply(&mut original, op);
            }
            let snapshot = original.snapshot();
            prop_assert!(snapshot.event_time_timers.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(snapshot.processing_time_timers.windows(2).all(|w| w[0] < w[1]));
            let bytes = postcard::to_allocvec(&snapshot).expect("serialise snapshot");
            let decoded: TimerSnapshot<u8, u8> =
                postcard::from_bytes(&bytes).expect("deserialise snapshot");
            prop_assert_eq!(&decoded, &snapshot);

            let mut restored = Service::new();
            restored.restore(decoded);
            prop_assert_eq!(restored.snapshot(), snapshot);

            // The watermark is not snapshotted (as in Flink), so the futures agree once event
            // time is at or past the snapshotted watermark: shift the later watermarks there.
            let base = original.current_watermark().max(-30);
            for op in &after {
                let op = match *op {
                    Op::AdvanceWatermark(w, i) => Op::AdvanceWatermark(base + w, i),
                    ref other => other.clone(),
                };
                prop_assert_eq!(apply(&mut original, &op), apply(&mut restored, &op));
            }
            prop_assert_eq!(original.snapshot(), restored.snapshot());
        }
    }
}

#[cfg(test)]
mod keyed_snapshot_tests {
    use super::*;
    use crate::state::{KeyGroupRange, key_group_for_key};

    #[test]
    fn timers_round_trip_and_follow_their_key_groups() {
        let mut timers: TimerService<String, ()> = TimerService::new();
        for i in 0..50 {
            timers.register_event_time_timer(format!("k{i}"), (), i64::from(i) * 10);
            timers.register_processing_time_timer(format!("k{i}"), (), 1_000 + i64::from(i));
        }
        let snapshot = timers.to_keyed_snapshot("timers", 128).expect("encode");
        let mut whole = TimerService::new();
        whole
            .restore_keyed_snapshot(&snapshot, "timers")
            .expect("decode");
        assert_eq!(whole.snapshot(), timers.snapshot());

        // Split over 3 subtasks by key group: every timer lands once, with its key's owner.
        let mut total = 0;
        for subtask in 0..3 {
            let range = KeyGroupRange::for_subtask(128, 3, subtask);
            let mut part = snapshot.clone();
            part.retain_key_groups(range);
            let mut service: TimerService<String, ()> = TimerService::new();
            service
                .restore_keyed_snapshot(&part, "timers")
                .expect("decode");
            for timer in service.snapshot().event_time_timers {
                assert!(range.contains(key_group_for_key(&timer.key, 128)));
            }
            total += service.event_time_timer_count() + service.processing_time_timer_count();
        }
        assert_eq!(total, 100);
    }

    #[test]
    fn a_corrupt_timer_is_an_error() {
        let mut timers: TimerService<String, ()> = TimerService::new();
        timers.register_event_time_timer("a".into(), (), 5);
        let mut snapshot = timers.to_keyed_snapshot("timers", 128).expect("encode");
        snapshot.entries[0].key = vec![9, 9, 9];
        let mut restored: TimerService<String, ()> = TimerService::new();
        assert!(matches!(
            restored.restore_keyed_snapshot(&snapshot, "timers"),
            Err(crate::state::StateError::Corrupt(_))
        ));
    }
}
