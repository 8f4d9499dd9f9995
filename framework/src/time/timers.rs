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
//! - On the heap each time domain is a [`HeapTimers`]: a `BTreeSet<Timer<K, N>>` in
//!   [`Timer`]'s order `(timestamp, key, namespace)`, which is the firing queue (its first
//!   element is the next timer due), beside a hash set of the same timers (an `FxHashSet`, a
//!   fixed-seed hasher), the deduplication and membership index (a timer is registered at most
//!   once, as in Flink's `HeapPriorityQueueSet`, which also pairs a hash map with its queue).
//!   Registering a timer that is already registered, which a keyed function does for every
//!   element of a key and window, costs one hash probe instead of a walk down the ordered set
//!   (whose newest timers sit at its right edge, the longest walk a B-tree node's linear search
//!   makes). Register, delete and pop are `O(log n)`. The hash set is never iterated, so every
//!   order that reaches an output is the ordered set's.
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
use std::hash::Hash;

use rustc_hash::FxHashSet;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::lmdb_timers::{Domain, LmdbTimers};
use crate::state::{
    KeyedBackendConfig, KeyedEntry, KeyedStateSnapshot, PendingKeyedSnapshot, StableHash,
    StateBackendKind, StateError, StateMeta, key_group_for_key,
};

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
/// The timers live on the heap ([`TimerService::new`]) or, with the LMDB state backend, in LMDB
/// with a bounded part in memory ([`TimerService::open`], see `lmdb_timers.rs`). Both behave
/// the same, fire ties in the same order (for keys and namespaces with a derived `Ord`) and
/// write the same checkpoint entries. Methods return [`StateError`] because LMDB can fail; the
/// heap never does.
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
/// - At a checkpoint, [`snapshot_keyed`](Self::snapshot_keyed); on recovery,
///   [`restore_keyed_snapshot`](Self::restore_keyed_snapshot) into a fresh service (with the
///   entries of the key groups the subtask owns).
///
/// # Examples
///
/// ```
/// use eichhorn::time::{Timer, TimerService};
///
/// # fn main() -> Result<(), eichhorn::state::StateError> {
/// let mut timers: TimerService<&str, ()> = TimerService::new();
/// timers.register_event_time_timer("a", (), 10)?;
/// timers.register_event_time_timer("a", (), 10)?; // deduplicated
/// timers.register_event_time_timer("b", (), 20)?;
/// assert_eq!(timers.event_time_timer_count(), 2);
///
/// // An operator drains one timer at a time, so that its callback can register new timers.
/// // Here the callback re-registers each timer 15 ms later, like a periodic `on_timer`.
/// let mut fired = Vec::new();
/// while let Some(timer) = timers.pop_event_time_timer(25)? {
///     timers.register_event_time_timer(timer.key, (), timer.timestamp + 15)?;
///     fired.push((timer.key, timer.timestamp));
/// }
/// // "a"@25 was registered while draining watermark 25, so it fired in the same drain.
/// assert_eq!(fired, vec![("a", 10), ("b", 20), ("a", 25)]);
/// assert_eq!(timers.current_watermark(), 25);
///
/// // Without a callback, `advance_watermark` drains into a `Vec`.
/// let mut out = Vec::new();
/// timers.advance_watermark(40, &mut out)?;
/// assert_eq!(out, vec![Timer::new("b", (), 35), Timer::new("a", (), 40)]);
///
/// // Processing time is passed in; the runtime schedules one wake-up for the earliest timer.
/// timers.register_processing_time_timer("a", (), 1_000)?;
/// assert_eq!(timers.next_processing_time_timer()?, Some(1_000));
/// assert_eq!(timers.pop_processing_time_timer(999)?, None);
/// assert_eq!(timers.pop_processing_time_timer(1_000)?, Some(Timer::new("a", (), 1_000)));
/// # Ok(()) }
/// ```
pub struct TimerService<K, N> {
    queues: Queues<K, N>,
    /// The highest watermark seen, `i64::MIN` before any.
    current_watermark: i64,
}

/// Where the timers are.
enum Queues<K, N> {
    /// Pending timers of each domain in firing order.
    Heap {
        event: HeapTimers<K, N>,
        processing: HeapTimers<K, N>,
    },
    /// In LMDB, with a bounded head and write batch in memory.
    Lmdb(Box<LmdbTimers<K, N>>),
}

impl<K, N> std::fmt::Debug for TimerService<K, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("TimerService");
        match &self.queues {
            Queues::Heap { event, processing } => debug
                .field("event_time_timers", &event.len())
                .field("processing_time_timers", &processing.len()),
            Queues::Lmdb(lmdb) => debug.field("lmdb", lmdb),
        };
        debug
            .field("current_watermark", &self.current_watermark)
            .finish()
    }
}

/// The timers of a [`TimerService`]: plain vectors in firing order
/// (`(timestamp, key, namespace)`, no duplicates), serialisable with serde.
///
/// As in Flink, the watermark is not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerSnapshot<K, N> {
    /// Pending event-time timers, sorted and without duplicates.
    pub event_time_timers: Vec<Timer<K, N>>,
    /// Pending processing-time timers, sorted and without duplicates.
    pub processing_time_timers: Vec<Timer<K, N>>,
}

impl<K: Ord + Hash + Clone, N: Ord + Hash + Clone> TimerService<K, N> {
    /// An empty service on the heap, with the watermark at `i64::MIN`.
    pub const fn new() -> Self {
        Self {
            queues: Queues::Heap {
                event: HeapTimers::new(),
                processing: HeapTimers::new(),
            },
            current_watermark: i64::MIN,
        }
    }

    /// An empty service in the backend `config` names: on the heap for the memory backend, in
    /// an LMDB environment in `config.local_dir` for LMDB (keeping at most
    /// `config.cache_entries` pending writes in memory).
    ///
    /// # Errors
    ///
    /// LMDB cannot open its environment.
    pub fn open(config: &KeyedBackendConfig) -> Result<Self, StateError>
    where
        K: Serialize + DeserializeOwned + StableHash,
        N: Serialize + DeserializeOwned,
    {
        match config.kind {
            StateBackendKind::Memory => Ok(Self::new()),
            StateBackendKind::Lmdb => Ok(Self {
                queues: Queues::Lmdb(Box::new(LmdbTimers::open(config)?)),
                current_watermark: i64::MIN,
            }),
        }
    }

    fn insert(
        &mut self,
        domain: Domain,
        key: K,
        namespace: N,
        timestamp: i64,
    ) -> Result<bool, StateError> {
        match &mut self.queues {
            Queues::Heap { event, processing } => {
                let set = heap_set(domain, event, processing);
                Ok(set.insert(Timer::new(key, namespace, timestamp)))
            }
            Queues::Lmdb(lmdb) => lmdb.insert(domain, timestamp, &key, &namespace),
        }
    }

    fn remove(
        &mut self,
        domain: Domain,
        key: K,
        namespace: N,
        timestamp: i64,
    ) -> Result<bool, StateError> {
        match &mut self.queues {
            Queues::Heap { event, processing } => {
                let set = heap_set(domain, event, processing);
                Ok(set.remove(&Timer::new(key, namespace, timestamp)))
            }
            Queues::Lmdb(lmdb) => lmdb.remove(domain, timestamp, &key, &namespace),
        }
    }

    fn contains(
        &mut self,
        domain: Domain,
        key: &K,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool, StateError> {
        match &mut self.queues {
            Queues::Heap { event, processing } => {
                let set = heap_set(domain, event, processing);
                Ok(set.contains(key, namespace, timestamp))
            }
            Queues::Lmdb(lmdb) => lmdb.has(domain, timestamp, key, namespace),
        }
    }

    fn pop_due(&mut self, domain: Domain, time: i64) -> Result<Option<Timer<K, N>>, StateError> {
        match &mut self.queues {
            Queues::Heap { event, processing } => {
                let set = heap_set(domain, event, processing);
                Ok(match set.first() {
                    Some(next) if next.timestamp <= time => set.pop_first(),
                    _ => None,
                })
            }
            Queues::Lmdb(lmdb) => lmdb.pop_due(domain, time),
        }
    }

    fn first_timestamp(&mut self, domain: Domain) -> Result<Option<i64>, StateError> {
        match &mut self.queues {
            Queues::Heap { event, processing } => {
                let set = heap_set(domain, event, processing);
                Ok(set.first().map(|t| t.timestamp))
            }
            Queues::Lmdb(lmdb) => lmdb.first_timestamp(domain),
        }
    }

    fn count(&self, domain: Domain) -> usize {
        match &self.queues {
            Queues::Heap { event, processing } => {
                if domain == Domain::Event {
                    event.len()
                } else {
                    processing.len()
                }
            }
            Queues::Lmdb(lmdb) => lmdb.count(domain),
        }
    }

    fn all(&mut self, domain: Domain) -> Result<Vec<Timer<K, N>>, StateError> {
        match &mut self.queues {
            Queues::Heap { event, processing } => {
                let set = heap_set(domain, event, processing);
                Ok(set.iter().cloned().collect())
            }
            Queues::Lmdb(lmdb) => lmdb.all(domain),
        }
    }

    /// Registers an event-time timer for `key` in `namespace` at `timestamp`; returns whether it
    /// was new (`false`: it was already registered, and registering twice is registering once).
    ///
    /// A timer at or below [`current_watermark`](Self::current_watermark) does not fire now: it
    /// fires with the next watermark given to [`pop_event_time_timer`](Self::pop_event_time_timer)
    /// or [`advance_watermark`](Self::advance_watermark) (during a drain, that is the next pop).
    ///
    /// # Errors
    ///
    /// LMDB failed, or the key or namespace cannot be encoded.
    pub fn register_event_time_timer(
        &mut self,
        key: K,
        namespace: N,
        timestamp: i64,
    ) -> Result<bool, StateError> {
        self.insert(Domain::Event, key, namespace, timestamp)
    }

    /// Deletes the event-time timer for `key` in `namespace` at `timestamp`; returns whether it
    /// was registered (deleting a timer that does not exist is a no-op, as in Flink).
    ///
    /// # Errors
    ///
    /// As [`register_event_time_timer`](Self::register_event_time_timer).
    pub fn delete_event_time_timer(
        &mut self,
        key: K,
        namespace: N,
        timestamp: i64,
    ) -> Result<bool, StateError> {
        self.remove(Domain::Event, key, namespace, timestamp)
    }

    /// Registers a processing-time timer for `key` in `namespace` at `timestamp`; returns whether
    /// it was new. A timer in the past is due at once: it is returned by the next
    /// [`pop_processing_time_timer`](Self::pop_processing_time_timer), and
    /// [`next_processing_time_timer`](Self::next_processing_time_timer) reports it.
    ///
    /// # Errors
    ///
    /// As [`register_event_time_timer`](Self::register_event_time_timer).
    pub fn register_processing_time_timer(
        &mut self,
        key: K,
        namespace: N,
        timestamp: i64,
    ) -> Result<bool, StateError> {
        self.insert(Domain::Processing, key, namespace, timestamp)
    }

    /// Deletes the processing-time timer for `key` in `namespace` at `timestamp`; returns whether
    /// it was registered.
    ///
    /// # Errors
    ///
    /// As [`register_event_time_timer`](Self::register_event_time_timer).
    pub fn delete_processing_time_timer(
        &mut self,
        key: K,
        namespace: N,
        timestamp: i64,
    ) -> Result<bool, StateError> {
        self.remove(Domain::Processing, key, namespace, timestamp)
    }

    /// Whether an event-time timer for `key` in `namespace` at `timestamp` is pending.
    ///
    /// # Errors
    ///
    /// As [`register_event_time_timer`](Self::register_event_time_timer).
    pub fn has_event_time_timer(
        &mut self,
        key: &K,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool, StateError> {
        self.contains(Domain::Event, key, namespace, timestamp)
    }

    /// Whether a processing-time timer for `key` in `namespace` at `timestamp` is pending.
    ///
    /// # Errors
    ///
    /// As [`register_event_time_timer`](Self::register_event_time_timer).
    pub fn has_processing_time_timer(
        &mut self,
        key: &K,
        namespace: &N,
        timestamp: i64,
    ) -> Result<bool, StateError> {
        self.contains(Domain::Processing, key, namespace, timestamp)
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
    ///
    /// # Errors
    ///
    /// LMDB failed, or a stored timer does not decode.
    pub fn pop_event_time_timer(
        &mut self,
        watermark: i64,
    ) -> Result<Option<Timer<K, N>>, StateError> {
        self.current_watermark = self.current_watermark.max(watermark);
        self.pop_due(Domain::Event, self.current_watermark)
    }

    /// Advances the watermark to `watermark` and appends every due event-time timer to `out`, in
    /// `(timestamp, key, namespace)` order, removing them; returns how many were appended.
    ///
    /// A convenience for callers without a callback between timers (a callback that registers
    /// timers must use [`pop_event_time_timer`](Self::pop_event_time_timer), which this is a loop
    /// over). A timer registered at or below the watermark *after* this call fires on the next
    /// call, not at registration.
    ///
    /// # Errors
    ///
    /// As [`pop_event_time_timer`](Self::pop_event_time_timer).
    pub fn advance_watermark(
        &mut self,
        watermark: i64,
        out: &mut Vec<Timer<K, N>>,
    ) -> Result<usize, StateError> {
        let before = out.len();
        while let Some(timer) = self.pop_event_time_timer(watermark)? {
            out.push(timer);
        }
        Ok(out.len() - before)
    }

    /// Removes and returns the next processing-time timer at or below `now`, in
    /// `(timestamp, key, namespace)` order; `None` when none is due. Call it in a loop, as
    /// [`pop_event_time_timer`](Self::pop_event_time_timer). The service keeps no processing
    /// time of its own: `now` is the runtime's clock at the call.
    ///
    /// # Errors
    ///
    /// As [`pop_event_time_timer`](Self::pop_event_time_timer).
    pub fn pop_processing_time_timer(
        &mut self,
        now: i64,
    ) -> Result<Option<Timer<K, N>>, StateError> {
        self.pop_due(Domain::Processing, now)
    }

    /// Appends every processing-time timer at or below `now` to `out` in
    /// `(timestamp, key, namespace)` order, removing them; returns how many were appended. A loop
    /// over [`pop_processing_time_timer`](Self::pop_processing_time_timer).
    ///
    /// # Errors
    ///
    /// As [`pop_event_time_timer`](Self::pop_event_time_timer).
    pub fn advance_processing_time(
        &mut self,
        now: i64,
        out: &mut Vec<Timer<K, N>>,
    ) -> Result<usize, StateError> {
        let before = out.len();
        while let Some(timer) = self.pop_processing_time_timer(now)? {
            out.push(timer);
        }
        Ok(out.len() - before)
    }

    /// The timestamp of the earliest pending processing-time timer, so the runtime can schedule
    /// one wake-up; `None` when there is none. Ask again after registering, deleting or firing.
    ///
    /// # Errors
    ///
    /// As [`pop_event_time_timer`](Self::pop_event_time_timer).
    pub fn next_processing_time_timer(&mut self) -> Result<Option<i64>, StateError> {
        self.first_timestamp(Domain::Processing)
    }

    /// The timestamp of the earliest pending event-time timer; `None` when there is none.
    ///
    /// # Errors
    ///
    /// As [`pop_event_time_timer`](Self::pop_event_time_timer).
    pub fn next_event_time_timer(&mut self) -> Result<Option<i64>, StateError> {
        self.first_timestamp(Domain::Event)
    }

    /// How many event-time timers are pending.
    pub fn event_time_timer_count(&self) -> usize {
        self.count(Domain::Event)
    }

    /// How many processing-time timers are pending.
    pub fn processing_time_timer_count(&self) -> usize {
        self.count(Domain::Processing)
    }

    /// Registers an event-time timer the caller knows is not registered (its own index says
    /// so), without the lookup that deduplication costs in LMDB. Debug builds check.
    ///
    /// # Errors
    ///
    /// As [`register_event_time_timer`](Self::register_event_time_timer); in debug builds
    /// also [`StateError::Corrupt`] if the timer was registered.
    pub(crate) fn register_new_event_time_timer(
        &mut self,
        key: K,
        namespace: N,
        timestamp: i64,
    ) -> Result<(), StateError> {
        match &mut self.queues {
            Queues::Heap { event, .. } => {
                let new = event.insert(Timer::new(key, namespace, timestamp));
                debug_assert!(new, "a timer registered as new was registered");
                Ok(())
            }
            Queues::Lmdb(lmdb) => lmdb.insert_new(Domain::Event, timestamp, &key, &namespace),
        }
    }

    /// Deletes an event-time timer the caller knows is registered, without the lookup. Debug
    /// builds check.
    ///
    /// # Errors
    ///
    /// As [`register_new_event_time_timer`](Self::register_new_event_time_timer).
    pub(crate) fn delete_registered_event_time_timer(
        &mut self,
        key: K,
        namespace: N,
        timestamp: i64,
    ) -> Result<(), StateError> {
        match &mut self.queues {
            Queues::Heap { event, .. } => {
                let was = event.remove(&Timer::new(key, namespace, timestamp));
                debug_assert!(was, "a timer deleted as registered was not");
                Ok(())
            }
            Queues::Lmdb(lmdb) => lmdb.remove_pending(Domain::Event, timestamp, &key, &namespace),
        }
    }

    /// Appends the keys and namespaces of the event-time timers at exactly `timestamp` to
    /// `out`, in firing order; the timers stay. In LMDB one range scan; on the heap a walk
    /// from the first timer (operators use it with LMDB: a set of `(time, key)` pairs kept
    /// in the backend, such as the keys of a window pane).
    pub(crate) fn event_time_timers_at(
        &mut self,
        timestamp: i64,
        out: &mut Vec<(K, N)>,
    ) -> Result<(), StateError> {
        match &mut self.queues {
            Queues::Heap { event, .. } => {
                out.extend(
                    event
                        .iter()
                        .skip_while(|t| t.timestamp < timestamp)
                        .take_while(|t| t.timestamp == timestamp)
                        .map(|t| (t.key.clone(), t.namespace.clone())),
                );
                Ok(())
            }
            Queues::Lmdb(lmdb) => lmdb.scan_at(Domain::Event, timestamp, out),
        }
    }

    /// How many timers (and, in LMDB, pending writes) the service holds in memory: all of them
    /// on the heap; in LMDB at most `2 * min(cache_entries, 256)` head entries plus
    /// `cache_entries` pending writes.
    pub fn entries_in_memory(&self) -> usize {
        match &self.queues {
            Queues::Heap { event, processing } => event.len() + processing.len(),
            Queues::Lmdb(lmdb) => lmdb.in_memory(),
        }
    }

    /// Whether no timer of either domain is pending.
    pub fn is_empty(&self) -> bool {
        self.event_time_timer_count() == 0 && self.processing_time_timer_count() == 0
    }

    /// Every pending timer of both domains, in firing order (tests and tools; checkpoints use
    /// [`snapshot_keyed`](Self::snapshot_keyed)). The watermark is not included.
    ///
    /// # Errors
    ///
    /// As [`pop_event_time_timer`](Self::pop_event_time_timer).
    pub fn snapshot(&mut self) -> Result<TimerSnapshot<K, N>, StateError> {
        Ok(TimerSnapshot {
            event_time_timers: self.all(Domain::Event)?,
            processing_time_timers: self.all(Domain::Processing)?,
        })
    }

    /// Adds the timers of `snapshot` to this service; the watermark is left unchanged.
    ///
    /// Restoring into a fresh service reproduces the snapshotted timers; restoring several
    /// unions them (timers present in more than one are kept once). The vectors need not be
    /// sorted or free of duplicates, so any deserialised snapshot is valid.
    ///
    /// As in Flink, the restored service starts at the watermark it had (`i64::MIN` when fresh):
    /// restored timers at or below the snapshotted watermark fire with the first watermark that
    /// reaches them during the replay.
    ///
    /// # Errors
    ///
    /// As [`register_event_time_timer`](Self::register_event_time_timer).
    pub fn restore(&mut self, snapshot: TimerSnapshot<K, N>) -> Result<(), StateError> {
        for timer in snapshot.event_time_timers {
            self.insert(Domain::Event, timer.key, timer.namespace, timer.timestamp)?;
        }
        for timer in snapshot.processing_time_timers {
            self.insert(
                Domain::Processing,
                timer.key,
                timer.namespace,
                timer.timestamp,
            )?;
        }
        Ok(())
    }
}

impl<K, N> TimerService<K, N>
where
    K: Ord + Hash + Clone + StableHash + Serialize + DeserializeOwned + Send + 'static,
    N: Ord + Hash + Clone + Serialize + DeserializeOwned + Send + 'static,
{
    /// The pending timers as keyed state `name`, for a checkpoint: one entry per timer, keyed
    /// `postcard((domain, timestamp, key, namespace))` (domain 0 event time, 1 processing
    /// time) in the key group of its key, so timers move with their keys when parallelism
    /// changes. Both backends write the same entries. The entries are built later, off the data
    /// path: from a copy of the heap's sets, or from an LMDB read transaction opened now.
    ///
    /// # Errors
    ///
    /// LMDB cannot open a read transaction.
    pub fn snapshot_keyed(
        &mut self,
        name: &str,
        max_parallelism: u32,
    ) -> Result<PendingKeyedSnapshot, StateError> {
        let type_name = std::any::type_name::<Timer<K, N>>().to_string();
        match &mut self.queues {
            Queues::Heap { event, processing } => {
                let (event, processing) = (event.order().clone(), processing.order().clone());
                let name = name.to_string();
                Ok(PendingKeyedSnapshot::Deferred(Box::new(move || {
                    heap_keyed_snapshot(&name, type_name, max_parallelism, &event, &processing)
                })))
            }
            Queues::Lmdb(lmdb) => lmdb.snapshot(name, type_name),
        }
    }

    /// Adds the timers of a snapshot made by [`TimerService::snapshot_keyed`] (state `name`).
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] if an entry does not decode; LMDB failed.
    pub fn restore_keyed_snapshot(
        &mut self,
        snapshot: &KeyedStateSnapshot,
        name: &str,
    ) -> Result<(), StateError> {
        let Some(index) = snapshot.state_index(name) else {
            return Ok(());
        };
        for entry in snapshot.entries.iter().filter(|e| e.state == index) {
            let (domain, timestamp, key, namespace): (u8, i64, K, N) =
                postcard::from_bytes(&entry.key).map_err(|e| {
                    StateError::Corrupt(format!(
                        "timer of '{name}' in key group {}: {e}",
                        entry.key_group
                    ))
                })?;
            let domain = match domain {
                0 => Domain::Event,
                1 => Domain::Processing,
                other => {
                    return Err(StateError::Corrupt(format!(
                        "timer of '{name}' in key group {}: unknown time domain {other}",
                        entry.key_group
                    )));
                }
            };
            self.insert(domain, key, namespace, timestamp)?;
        }
        Ok(())
    }
}

/// One time domain's timers on the heap: the firing order and a hash index of the same timers
/// (see the module's design notes).
///
/// ## Invariants
///
/// `order` and `index` hold the same timers; every method keeps them so (a debug assertion
/// checks their sizes on every change).
#[derive(Debug)]
struct HeapTimers<K, N> {
    /// The pending timers in firing order.
    order: BTreeSet<Timer<K, N>>,
    /// The same timers, for deduplication and membership; never iterated.
    index: FxHashSet<Timer<K, N>>,
}

impl<K: Ord + Hash + Clone, N: Ord + Hash + Clone> HeapTimers<K, N> {
    const fn new() -> Self {
        Self {
            order: BTreeSet::new(),
            index: FxHashSet::with_hasher(rustc_hash::FxBuildHasher),
        }
    }

    /// Adds `timer`; returns whether it was new. A timer already pending costs one hash probe.
    fn insert(&mut self, timer: Timer<K, N>) -> bool {
        if self.index.contains(&timer) {
            return false;
        }
        self.index.insert(timer.clone());
        let new = self.order.insert(timer);
        debug_assert!(
            new && self.order.len() == self.index.len(),
            "index out of step"
        );
        true
    }

    /// Removes `timer`; returns whether it was pending.
    fn remove(&mut self, timer: &Timer<K, N>) -> bool {
        if !self.index.remove(timer) {
            return false;
        }
        let was = self.order.remove(timer);
        debug_assert!(
            was && self.order.len() == self.index.len(),
            "index out of step"
        );
        true
    }

    /// Whether the timer for `key` in `namespace` at `timestamp` is pending.
    fn contains(&self, key: &K, namespace: &N, timestamp: i64) -> bool {
        self.index
            .contains(&Timer::new(key.clone(), namespace.clone(), timestamp))
    }

    /// The next timer in firing order.
    fn first(&self) -> Option<&Timer<K, N>> {
        self.order.first()
    }

    /// Removes and returns the next timer in firing order.
    fn pop_first(&mut self) -> Option<Timer<K, N>> {
        let timer = self.order.pop_first()?;
        let was = self.index.remove(&timer);
        debug_assert!(
            was && self.order.len() == self.index.len(),
            "index out of step"
        );
        Some(timer)
    }
}

impl<K, N> HeapTimers<K, N> {
    /// The number of pending timers.
    fn len(&self) -> usize {
        self.order.len()
    }

    /// The pending timers in firing order.
    fn iter(&self) -> std::collections::btree_set::Iter<'_, Timer<K, N>> {
        self.order.iter()
    }

    /// The pending timers in firing order, as a set (snapshots copy it).
    fn order(&self) -> &BTreeSet<Timer<K, N>> {
        &self.order
    }
}

/// The heap set of `domain`.
fn heap_set<'s, T>(domain: Domain, event: &'s mut T, processing: &'s mut T) -> &'s mut T {
    match domain {
        Domain::Event => event,
        Domain::Processing => processing,
    }
}

/// The keyed snapshot of heap timers (see [`TimerService::snapshot_keyed`]).
fn heap_keyed_snapshot<K, N>(
    name: &str,
    type_name: String,
    max_parallelism: u32,
    event: &BTreeSet<Timer<K, N>>,
    processing: &BTreeSet<Timer<K, N>>,
) -> Result<KeyedStateSnapshot, StateError>
where
    K: StableHash + Serialize,
    N: Serialize,
{
    let mut entries = Vec::with_capacity(event.len() + processing.len());
    for (domain, timers) in [(Domain::Event, event), (Domain::Processing, processing)] {
        for timer in timers {
            let key = postcard::to_allocvec(&(
                domain as u8,
                timer.timestamp,
                &timer.key,
                &timer.namespace,
            ))
            .map_err(|e| StateError::Backend(format!("cannot encode a timer of '{name}': {e}")))?;
            entries.push(KeyedEntry {
                key_group: key_group_for_key(&timer.key, max_parallelism).0,
                state: 0,
                key,
                value: Vec::new(),
            });
        }
    }
    entries.sort_unstable();
    Ok(KeyedStateSnapshot {
        states: vec![StateMeta {
            name: name.to_string(),
            type_name,
        }],
        entries,
    })
}

impl<K: Ord + Hash + Clone, N: Ord + Hash + Clone> Default for TimerService<K, N> {
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

    /// A service on the heap (`lmdb == 0`) or in LMDB in `dir/name` whose head and write batch
    /// hold 2 timers, so that nearly every call refills, evicts or flushes.
    fn fresh(dir: &tempfile::TempDir, lmdb: usize, name: &str) -> Service {
        if lmdb == 0 {
            return Service::new();
        }
        let config = crate::state::test_support::lmdb_config(&dir.path().join(name), 2);
        TimerService::open(&config).expect("LMDB opens")
    }

    /// A heap service and a tiny LMDB one (see [`fresh`]).
    fn both(dir: &tempfile::TempDir) -> [Service; 2] {
        [fresh(dir, 0, "heap"), fresh(dir, 1, "lmdb")]
    }

    /// Runs `test` on both backends.
    fn on_both(test: impl Fn(&mut Service)) {
        let dir = tempfile::tempdir().expect("temp dir");
        for mut service in both(&dir) {
            test(&mut service);
        }
    }

    fn drain_event_time(service: &mut Service, watermark: i64) -> Vec<Timer<u8, u8>> {
        let mut out = Vec::new();
        service
            .advance_watermark(watermark, &mut out)
            .expect("timers");
        out
    }

    #[test]
    fn registering_twice_is_registering_once() {
        on_both(|s| {
            assert!(s.register_event_time_timer(1, 0, 10).expect("timers"));
            assert!(!s.register_event_time_timer(1, 0, 10).expect("timers"));
            assert!(s.register_event_time_timer(1, 1, 10).expect("timers"));
            assert!(s.register_processing_time_timer(1, 0, 10).expect("timers"));
            assert!(!s.register_processing_time_timer(1, 0, 10).expect("timers"));
            assert_eq!(s.event_time_timer_count(), 2);
            assert_eq!(s.processing_time_timer_count(), 1);
            assert_eq!(drain_event_time(s, 10), vec![t(1, 0, 10), t(1, 1, 10)]);
            assert_eq!(drain_event_time(s, 100), vec![]);
        });
    }

    #[test]
    fn delete_removes_only_that_timer() {
        on_both(|s| {
            s.register_event_time_timer(1, 0, 10).expect("timers");
            s.register_event_time_timer(1, 0, 11).expect("timers");
            s.register_processing_time_timer(1, 0, 10).expect("timers");
            assert!(s.delete_event_time_timer(1, 0, 10).expect("timers"));
            assert!(!s.delete_event_time_timer(1, 0, 10).expect("timers"));
            assert!(!s.delete_event_time_timer(2, 0, 11).expect("timers"));
            assert!(!s.has_event_time_timer(&1, &0, 10).expect("timers"));
            assert!(s.has_event_time_timer(&1, &0, 11).expect("timers"));
            // The domains are separate.
            assert!(s.has_processing_time_timer(&1, &0, 10).expect("timers"));
            assert!(s.delete_processing_time_timer(1, 0, 10).expect("timers"));
            assert_eq!(s.processing_time_timer_count(), 0);
            assert_eq!(drain_event_time(s, i64::MAX), vec![t(1, 0, 11)]);
        });
    }

    #[test]
    fn fires_in_timestamp_key_namespace_order() {
        on_both(|s| {
            for (k, n, ts) in [
                (2, 0, 5),
                (1, 1, 5),
                (1, 0, 5),
                (0, 0, 7),
                (3, 3, 1),
                (0, 0, 9),
            ] {
                s.register_event_time_timer(k, n, ts).expect("timers");
            }
            assert_eq!(s.next_event_time_timer().expect("timers"), Some(1));
            assert_eq!(
                drain_event_time(s, 7),
                vec![t(3, 3, 1), t(1, 0, 5), t(1, 1, 5), t(2, 0, 5), t(0, 0, 7)]
            );
            assert_eq!(s.current_watermark(), 7);
            assert_eq!(s.event_time_timer_count(), 1);
            assert_eq!(drain_event_time(s, 8), vec![]);
            assert_eq!(drain_event_time(s, 9), vec![t(0, 0, 9)]);
        });
    }

    #[test]
    fn watermark_starts_at_min_and_never_decreases() {
        on_both(|s| {
            assert_eq!(s.current_watermark(), i64::MIN);
            s.register_event_time_timer(0, 0, i64::MIN).expect("timers");
            assert_eq!(drain_event_time(s, i64::MIN), vec![t(0, 0, i64::MIN)]);
            drain_event_time(s, 10);
            drain_event_time(s, 3);
            assert_eq!(s.current_watermark(), 10);
            // A lower watermark counts as the current one: a timer at 8 is due.
            s.register_event_time_timer(0, 0, 8).expect("timers");
            assert_eq!(drain_event_time(s, 3), vec![t(0, 0, 8)]);
        });
    }

    #[test]
    fn timer_at_current_watermark_fires_only_at_the_next_advance() {
        on_both(|s| {
            drain_event_time(s, 10);
            s.register_event_time_timer(1, 0, 10).expect("timers");
            s.register_event_time_timer(1, 0, 4).expect("timers");
            // Registration does not fire; the timers wait for the next watermark, even an equal one.
            assert_eq!(s.event_time_timer_count(), 2);
            assert_eq!(drain_event_time(s, 10), vec![t(1, 0, 4), t(1, 0, 10)]);
        });
    }

    #[test]
    fn timer_registered_while_draining_fires_in_the_same_drain() {
        on_both(|s| {
            s.register_event_time_timer(1, 0, 10).expect("timers");
            s.register_event_time_timer(2, 0, 30).expect("timers");
            let mut fired = Vec::new();
            while let Some(timer) = s.pop_event_time_timer(20).expect("timers") {
                if timer.key == 1 {
                    // Below the watermark, at it, and beyond it.
                    s.register_event_time_timer(3, 0, timer.timestamp + 5)
                        .expect("timers");
                    s.register_event_time_timer(4, 0, 20).expect("timers");
                    s.register_event_time_timer(5, 0, 21).expect("timers");
                }
                fired.push(timer);
            }
            assert_eq!(fired, vec![t(1, 0, 10), t(3, 0, 15), t(4, 0, 20)]);
            assert_eq!(drain_event_time(s, 30), vec![t(5, 0, 21), t(2, 0, 30)]);
        });
    }

    #[test]
    fn processing_time_next_timer_and_firing() {
        on_both(|s| {
            assert_eq!(s.next_processing_time_timer().expect("timers"), None);
            s.register_processing_time_timer(1, 0, 500).expect("timers");
            s.register_processing_time_timer(0, 0, 200).expect("timers");
            s.register_processing_time_timer(2, 0, 200).expect("timers");
            assert_eq!(s.next_processing_time_timer().expect("timers"), Some(200));
            let mut out = Vec::new();
            assert_eq!(s.advance_processing_time(199, &mut out).expect("timers"), 0);
            assert_eq!(s.advance_processing_time(200, &mut out).expect("timers"), 2);
            assert_eq!(out, vec![t(0, 0, 200), t(2, 0, 200)]);
            assert_eq!(s.next_processing_time_timer().expect("timers"), Some(500));
            // A timer in the past is due at once.
            s.register_processing_time_timer(3, 0, 100).expect("timers");
            assert_eq!(s.next_processing_time_timer().expect("timers"), Some(100));
            assert_eq!(
                s.pop_processing_time_timer(201).expect("timers"),
                Some(t(3, 0, 100))
            );
            assert_eq!(s.pop_processing_time_timer(201).expect("timers"), None);
            s.delete_processing_time_timer(1, 0, 500).expect("timers");
            assert_eq!(s.next_processing_time_timer().expect("timers"), None);
            // Processing time does not move the watermark.
            assert_eq!(s.current_watermark(), i64::MIN);
        });
    }

    #[test]
    fn snapshot_is_sorted_and_restore_unions() {
        let dir = tempfile::tempdir().expect("temp dir");
        let [mut heap, mut lmdb] = both(&dir);
        for (i, s) in [&mut heap, &mut lmdb].into_iter().enumerate() {
            let mut a = fresh(&dir, i, "a");
            a.register_event_time_timer(3, 0, 5).expect("timers");
            a.register_event_time_timer(1, 0, 9).expect("timers");
            a.register_processing_time_timer(2, 0, 7).expect("timers");
            let mut b = fresh(&dir, i, "b");
            b.register_event_time_timer(1, 0, 9).expect("timers");
            b.register_event_time_timer(4, 1, 2).expect("timers");
            let snap_a = a.snapshot().expect("timers");
            assert_eq!(snap_a.event_time_timers, vec![t(3, 0, 5), t(1, 0, 9)]);
            assert_eq!(snap_a.processing_time_timers, vec![t(2, 0, 7)]);

            s.restore(snap_a).expect("timers");
            s.restore(b.snapshot().expect("timers")).expect("timers");
            assert_eq!(s.event_time_timer_count(), 3);
            let snap = s.snapshot().expect("timers");
            assert_eq!(
                snap.event_time_timers,
                vec![t(4, 1, 2), t(3, 0, 5), t(1, 0, 9)]
            );
            assert_eq!(snap.processing_time_timers, vec![t(2, 0, 7)]);
        }
    }

    #[test]
    fn restore_accepts_unsorted_duplicated_vectors() {
        on_both(|s| {
            s.restore(TimerSnapshot {
                event_time_timers: vec![t(1, 0, 9), t(0, 0, 3), t(1, 0, 9)],
                processing_time_timers: vec![],
            })
            .expect("timers");
            assert_eq!(drain_event_time(s, 10), vec![t(0, 0, 3), t(1, 0, 9)]);
        });
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
                s.register_event_time_timer(k, n, ts).expect("timers");
            }
            Op::DeleteEvent(k, n, ts) => {
                s.delete_event_time_timer(k, n, ts).expect("timers");
            }
            Op::RegisterProcessing(k, n, ts) => {
                s.register_processing_time_timer(k, n, ts).expect("timers");
            }
            Op::DeleteProcessing(k, n, ts) => {
                s.delete_processing_time_timer(k, n, ts).expect("timers");
            }
            Op::AdvanceWatermark(w, interval) => {
                while let Some(timer) = s.pop_event_time_timer(w).expect("timers") {
                    if let Some(i) = interval {
                        s.register_event_time_timer(
                            timer.key,
                            timer.namespace,
                            timer.timestamp + i,
                        )
                        .expect("timers");
                    }
                    fired.push(timer);
                }
            }
            Op::AdvanceProcessingTime(now, interval) => {
                while let Some(timer) = s.pop_processing_time_timer(now).expect("timers") {
                    if let Some(i) = interval {
                        s.register_processing_time_timer(
                            timer.key,
                            timer.namespace,
                            timer.timestamp + i,
                        )
                        .expect("timers");
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
            let dir = tempfile::tempdir().expect("temp dir");
            for mut s in both(&dir) {
                let mut oracle = Oracle::default();
                for op in &ops {
                    let fired = apply(&mut s, op);
                    prop_assert_eq!(&fired, &oracle.apply(op), "op {:?} on {:?}", op, s);
                    // Strictly increasing: nothing fires twice within a drain, ties are ordered.
                    prop_assert!(fired.windows(2).all(|w| w[0] < w[1]));
                    match *op {
                        Op::AdvanceWatermark(..) => {
                            let wm = s.current_watermark();
                            prop_assert_eq!(Some(wm), oracle.watermark);
                            // Nothing early, nothing left behind.
                            prop_assert!(fired.iter().all(|t| t.timestamp <= wm));
                            let next = s.next_event_time_timer().expect("timers");
                            prop_assert!(next.is_none_or(|ts| ts > wm));
                        }
                        Op::AdvanceProcessingTime(now, _) => {
                            prop_assert!(fired.iter().all(|t| t.timestamp <= now));
                            let next = s.next_processing_time_timer().expect("timers");
                            prop_assert!(next.is_none_or(|ts| ts > now));
                        }
                        _ => {}
                    }
                    prop_assert_eq!(s.event_time_timer_count(), oracle.event.len());
                    prop_assert_eq!(s.processing_time_timer_count(), oracle.processing.len());
                    prop_assert_eq!(
                        s.next_processing_time_timer().expect("timers"),
                        oracle.processing.iter().map(|t| t.timestamp).min()
                    );
                    for t in &oracle.event {
                        let has = s.has_event_time_timer(&t.key, &t.namespace, t.timestamp);
                        prop_assert!(has.expect("timers"));
                    }
                    for t in &oracle.processing {
                        let has = s.has_processing_time_timer(&t.key, &t.namespace, t.timestamp);
                        prop_assert!(has.expect("timers"));
                    }
                }
            }
        }

        /// A snapshot restores into either backend (from either), and the restored service
        /// fires as the original does.
        #[test]
        fn snapshot_restore_round_trips_and_fires_the_same(
            before in proptest::collection::vec(op_strategy(-30..30), 0..100),
            after in proptest::collection::vec(op_strategy(0..40), 0..100),
            from_lmdb: bool,
            into_lmdb: bool,
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut original = fresh(&dir, usize::from(from_lmdb), "original");
            for op in &before {
                apply(&mut original, op);
            }
            let snapshot = original.snapshot().expect("timers");
            prop_assert!(snapshot.event_time_timers.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(snapshot.processing_time_timers.windows(2).all(|w| w[0] < w[1]));
            let bytes = postcard::to_allocvec(&snapshot).expect("serialise snapshot");
            let decoded: TimerSnapshot<u8, u8> =
                postcard::from_bytes(&bytes).expect("deserialise snapshot");
            prop_assert_eq!(&decoded, &snapshot);

            let mut restored = fresh(&dir, usize::from(into_lmdb), "restored");
            restored.restore(decoded).expect("timers");
            prop_assert_eq!(restored.snapshot().expect("timers"), snapshot);

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
            prop_assert_eq!(
                original.snapshot().expect("timers"),
                restored.snapshot().expect("timers")
            );
        }
    }
}

#[cfg(test)]
mod keyed_snapshot_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::state::test_support::lmdb_config;
    use crate::state::{KeyGroupRange, key_group_for_key};

    /// A key and a namespace of the shapes operators use: a string key (as `JoinSide` or a
    /// window, an enum and a struct of two `i64`s in the namespace).
    type Key = (String, u8);
    type Namespace = (Option<bool>, i64, i64);

    fn open(
        dir: &tempfile::TempDir,
        lmdb: bool,
        name: &str,
        cache: usize,
    ) -> TimerService<Key, Namespace> {
        if lmdb {
            TimerService::open(&lmdb_config(&dir.path().join(name), cache)).expect("LMDB opens")
        } else {
            TimerService::new()
        }
    }

    fn complete(timers: &mut TimerService<Key, Namespace>) -> KeyedStateSnapshot {
        timers
            .snapshot_keyed("timers", 128)
            .expect("freezes")
            .complete()
            .expect("reads out")
    }

    fn key_strategy() -> impl Strategy<Value = Key> {
        ("[a-c\u{0}]{0,10}", 0u8..3)
    }

    fn namespace_strategy() -> impl Strategy<Value = Namespace> {
        (
            proptest::option::of(any::<bool>()),
            -3i64..3,
            prop_oneof![Just(i64::MIN), -3i64..3, Just(i64::MAX)],
        )
    }

    proptest! {
        /// Both backends fire ties in the same order (derived `Ord` of key, then namespace)
        /// and write the same checkpoint entries, byte for byte, whether the LMDB timers are
        /// in its database, its pending batch or both.
        #[test]
        fn backends_agree_on_order_and_checkpoint_bytes(
            timers in proptest::collection::vec(
                (key_strategy(), namespace_strategy(), -2i64..3, any::<bool>()),
                0..120,
            ),
            deletes in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
            cache in 1usize..6,
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut heap = open(&dir, false, "heap", cache);
            let mut lmdb = open(&dir, true, "lmdb", cache);
            for (key, namespace, timestamp, event) in &timers {
                for s in [&mut heap, &mut lmdb] {
                    let (k, n) = (key.clone(), *namespace);
                    if *event {
                        s.register_event_time_timer(k, n, *timestamp).expect("timers");
                    } else {
                        s.register_processing_time_timer(k, n, *timestamp).expect("timers");
                    }
                }
            }
            for index in &deletes {
                if timers.is_empty() {
                    break;
                }
                let (key, namespace, timestamp, _) = index.get(&timers);
                let a = heap.delete_event_time_timer(key.clone(), *namespace, *timestamp);
                let b = lmdb.delete_event_time_timer(key.clone(), *namespace, *timestamp);
                prop_assert_eq!(a.expect("timers"), b.expect("timers"));
            }
            prop_assert_eq!(complete(&mut heap), complete(&mut lmdb));
            let mut fired = [Vec::new(), Vec::new()];
            for (s, fired) in [&mut heap, &mut lmdb].into_iter().zip(&mut fired) {
                s.advance_watermark(i64::MAX, fired).expect("timers");
                s.advance_processing_time(i64::MAX, fired).expect("timers");
            }
            let [from_heap, from_lmdb] = fired;
            prop_assert_eq!(from_heap, from_lmdb);
        }
    }

    #[test]
    fn timers_round_trip_and_follow_their_key_groups() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (lmdb, into_lmdb) in [(false, false), (false, true), (true, false), (true, true)] {
            let mut timers = open(&dir, lmdb, "original", 8);
            for i in 0..50 {
                let key = (format!("k{i}"), 0);
                timers
                    .register_event_time_timer(key.clone(), (None, 0, 0), i64::from(i) * 10)
                    .expect("timers");
                timers
                    .register_processing_time_timer(key, (Some(true), 1, 2), 1_000 + i64::from(i))
                    .expect("timers");
            }
            let snapshot = complete(&mut timers);
            let mut whole = open(&dir, into_lmdb, "whole", 8);
            whole
                .restore_keyed_snapshot(&snapshot, "timers")
                .expect("decode");
            assert_eq!(
                whole.snapshot().expect("timers"),
                timers.snapshot().expect("timers")
            );

            // Split over 3 subtasks by key group: every timer lands once, with its key's owner.
            let mut total = 0;
            for subtask in 0..3 {
                let range = KeyGroupRange::for_subtask(128, 3, subtask);
                let mut part = snapshot.clone();
                part.retain_key_groups(range);
                let mut service = open(&dir, into_lmdb, &format!("part-{subtask}"), 8);
                service
                    .restore_keyed_snapshot(&part, "timers")
                    .expect("decode");
                for timer in service.snapshot().expect("timers").event_time_timers {
                    assert!(range.contains(key_group_for_key(&timer.key, 128)));
                }
                total += service.event_time_timer_count() + service.processing_time_timer_count();
            }
            assert_eq!(total, 100);
        }
    }

    #[test]
    fn a_corrupt_timer_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut timers = open(&dir, false, "original", 8);
        timers
            .register_event_time_timer(("a".into(), 0), (None, 0, 0), 5)
            .expect("timers");
        let mut snapshot = complete(&mut timers);
        snapshot.entries[0].key = vec![9, 9, 9];
        for lmdb in [false, true] {
            let mut restored = open(&dir, lmdb, "restored", 8);
            assert!(matches!(
                restored.restore_keyed_snapshot(&snapshot, "timers"),
                Err(StateError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn many_timers_keep_memory_bounded_and_fire_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut timers = open(&dir, true, "many", 64);
        for i in (0..5_000i64).rev() {
            let key = (format!("k{}", i % 97), 0);
            timers
                .register_event_time_timer(key, (None, i, 0), i / 3)
                .expect("timers");
        }
        assert_eq!(timers.event_time_timer_count(), 5_000);
        let Queues::Lmdb(lmdb) = &timers.queues else {
            panic!("an LMDB service");
        };
        assert!(lmdb.in_memory() <= 64 + 2 * 64, "{lmdb:?}");
        let mut fired = Vec::new();
        timers
            .advance_watermark(i64::MAX, &mut fired)
            .expect("timers");
        assert_eq!(fired.len(), 5_000);
        assert!(fired.windows(2).all(|w| w[0] < w[1]));
        assert!(timers.is_empty());
    }
}

#[cfg(test)]
mod heap_timers_tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8, i64),
        Remove(u8, u8, i64),
        Contains(u8, u8, i64),
        PopFirst,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few keys, namespaces and times, so that duplicates and misses are common.
        let timer = || (0u8..4, 0u8..2, 0i64..6);
        prop_oneof![
            4 => timer().prop_map(|(k, n, t)| Op::Insert(k, n, t)),
            2 => timer().prop_map(|(k, n, t)| Op::Remove(k, n, t)),
            2 => timer().prop_map(|(k, n, t)| Op::Contains(k, n, t)),
            1 => Just(Op::PopFirst),
        ]
    }

    proptest! {
        /// The ordered set and its hash index behave as one ordered set: every answer and the
        /// order of the pending timers are a plain `BTreeSet`'s.
        #[test]
        fn heap_timers_behave_as_an_ordered_set(ops in proptest::collection::vec(op(), 0..200)) {
            let mut heap: HeapTimers<u8, u8> = HeapTimers::new();
            let mut model: BTreeSet<Timer<u8, u8>> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(k, n, t) => {
                        prop_assert_eq!(heap.insert(Timer::new(k, n, t)), model.insert(Timer::new(k, n, t)));
                    }
                    Op::Remove(k, n, t) => {
                        prop_assert_eq!(heap.remove(&Timer::new(k, n, t)), model.remove(&Timer::new(k, n, t)));
                    }
                    Op::Contains(k, n, t) => {
                        prop_assert_eq!(heap.contains(&k, &n, t), model.contains(&Timer::new(k, n, t)));
                    }
                    Op::PopFirst => prop_assert_eq!(heap.pop_first(), model.pop_first()),
                }
                prop_assert_eq!(heap.first(), model.first());
                prop_assert_eq!(heap.len(), model.len());
                prop_assert_eq!(heap.index.len(), model.len());
                prop_assert!(heap.iter().eq(model.iter()));
                prop_assert!(model.iter().all(|t| heap.index.contains(t)));
            }
        }
    }
}
