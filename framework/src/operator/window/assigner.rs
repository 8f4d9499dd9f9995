//! Windows and window assigners: which windows a timestamp belongs to, computed exactly as Flink
//! computes them.
//!
//! A [`WindowAssign`] maps one time (a record's event timestamp, or the current processing time;
//! the caller picks, see [`WindowAssign::assignment_time`]) to the windows it belongs to. Assigners
//! are pure: no clock, no state, so the window operator and the simulator get identical windows
//! for identical input.
//!
//! ## Invariants
//!
//! - Every window assigned for time `t` contains `t` (`start <= t < end`).
//! - Tumbling and sliding window starts are aligned: `start ≡ offset (mod slide)` (tumbling: mod
//!   size), for every timestamp, negative ones included.
//! - Assigners never panic: bad parameters are rejected by the constructors, and times whose
//!   windows would not fit in `i64` are an `Err`, never a wrapped-around window.

use std::fmt::Debug;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

/// The most windows one sliding assigner may assign per element: `size / slide` must not exceed it.
///
/// Flink's `SlidingEventTimeWindows.MAX_WINDOW_NUM`. It bounds the work (and the output) per record.
pub const SLIDING_WINDOWS_MAX: i64 = 10_000_000;

/// A window: a group of records that are processed together, as Flink's `Window`.
///
/// # Examples
///
/// ```
/// use eichhorn::operator::window::{GlobalWindow, TimeWindow, Window};
///
/// fn cleanup_time<W: Window>(window: &W) -> i64 {
///     window.max_timestamp()
/// }
/// assert_eq!(cleanup_time(&TimeWindow::new(0, 5_000)), 4_999);
/// assert_eq!(cleanup_time(&GlobalWindow), i64::MAX);
/// ```
pub trait Window: Copy + Eq + Ord + Hash + Debug {
    /// The largest timestamp that still belongs to this window; event-time triggers fire when the
    /// watermark passes it.
    fn max_timestamp(&self) -> i64;
}

/// The time interval `[start, end)` in milliseconds, as Flink's `TimeWindow`.
///
/// Ordered by `(start, end)`. Equality and hashing use both bounds, as in Flink.
///
/// # Examples
///
/// ```
/// use eichhorn::operator::window::TimeWindow;
///
/// let a = TimeWindow::new(0, 10);
/// let b = TimeWindow::new(10, 20);
/// assert_eq!(a.max_timestamp(), 9);
/// // Flink's `intersects` counts windows that only touch as intersecting.
/// assert!(a.intersects(&b));
/// assert_eq!(a.cover(&b), TimeWindow::new(0, 20));
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct TimeWindow {
    /// The first timestamp in the window (inclusive), in milliseconds.
    pub start: i64,
    /// The first timestamp after the window (exclusive), in milliseconds.
    pub end: i64,
}

impl TimeWindow {
    /// The one window of [`GlobalWindows`]: all of time.
    pub const GLOBAL: Self = Self {
        start: i64::MIN,
        end: i64::MAX,
    };

    /// The window `[start, end)`.
    pub const fn new(start: i64, end: i64) -> Self {
        Self { start, end }
    }

    /// The largest timestamp in the window: `end - 1`.
    ///
    /// Saturates at `i64::MIN` for `end == i64::MIN` (no assigner produces such a window; Java
    /// would wrap around to `Long.MAX_VALUE`).
    pub const fn max_timestamp(&self) -> i64 {
        self.end.saturating_sub(1)
    }

    /// Whether `timestamp` lies in `[start, end)`.
    pub const fn contains(&self, timestamp: i64) -> bool {
        self.start <= timestamp && timestamp < self.end
    }

    /// Flink's `TimeWindow.intersects`: `start <= other.end && end >= other.start`.
    ///
    /// Both bounds are compared inclusively, so windows that merely touch (`[0, 5)` and `[5, 10)`)
    /// intersect. This is what makes session windows `gap` apart merge.
    pub const fn intersects(&self, other: &Self) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// Flink's `TimeWindow.cover`: the smallest window containing both windows.
    pub const fn cover(&self, other: &Self) -> Self {
        let start = if self.start < other.start {
            self.start
        } else {
            other.start
        };
        let end = if self.end > other.end {
            self.end
        } else {
            other.end
        };
        Self { start, end }
    }
}

impl Window for TimeWindow {
    fn max_timestamp(&self) -> i64 {
        Self::max_timestamp(self)
    }
}

/// The single window holding all elements, as Flink's `GlobalWindow`. Its max timestamp is
/// `i64::MAX`, so event time never ends it; only a custom trigger fires it.
///
/// # Examples
///
/// ```
/// use eichhorn::operator::window::GlobalWindow;
///
/// assert_eq!(GlobalWindow.max_timestamp(), i64::MAX);
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct GlobalWindow;

impl GlobalWindow {
    /// `i64::MAX`: the global window never ends.
    pub const fn max_timestamp(&self) -> i64 {
        i64::MAX
    }
}

impl Window for GlobalWindow {
    fn max_timestamp(&self) -> i64 {
        Self::max_timestamp(self)
    }
}

/// Flink's `TimeWindow.getWindowStartWithOffset(timestamp, offset, windowSize)`: the start of the
/// window of size `window_size`, with starts at `offset + k * window_size`, that contains
/// `timestamp`.
///
/// This is Flink's formula since FLINK-26334 (Flink 1.14.5 / 1.15.1 / 1.16):
///
/// ```text
/// remainder = (timestamp - offset) % windowSize      // Java %: truncates toward zero, like Rust's %
/// start     = remainder < 0 ? timestamp - (remainder + windowSize) : timestamp - remainder
/// ```
///
/// which equals `timestamp - (timestamp - offset).rem_euclid(window_size)`. It satisfies
/// `start <= timestamp < start + window_size` and `start ≡ offset (mod window_size)` for **every**
/// timestamp, offset and positive size; there is no precondition.
///
/// Flink before that fix computed `timestamp - (timestamp - offset + windowSize) % windowSize`.
/// The two agree whenever `timestamp - offset + windowSize >= 0` (in particular for all
/// timestamps `>= 0` when `|offset| < windowSize`), and for timestamps on a window start. For
/// the other timestamps below that, Java's truncating `%` makes the old remainder negative and
/// the old formula returns the start of the *next* window, which does not contain the timestamp:
/// for size 5000, offset 0 and timestamp -5001 it returns -5000 (window `[-5000, 0)`), where the
/// current formula returns -10000 (window `[-10000, -5000)`). We implement the current one.
///
/// Returns `None` if `window_size <= 0` (Java would throw `ArithmeticException` for 0) or if the
/// start is below `i64::MIN`. The arithmetic is exact (done in `i128`), so the result equals
/// Flink's wherever Java's `long` arithmetic does not overflow, i.e. whenever
/// `timestamp - offset` fits in a `long`; where it overflows, Java returns a wrapped-around value.
///
/// # Examples
///
/// ```
/// use eichhorn::operator::window::window_start_with_offset;
///
/// assert_eq!(window_start_with_offset(7_300, 0, 5_000), Some(5_000));
/// assert_eq!(window_start_with_offset(7_300, 100, 5_000), Some(5_100));
/// assert_eq!(window_start_with_offset(-5_001, 0, 5_000), Some(-10_000));
/// assert_eq!(window_start_with_offset(1, 0, 0), None);
/// ```
pub fn window_start_with_offset(timestamp: i64, offset: i64, window_size: i64) -> Option<i64> {
    if window_size <= 0 {
        return None;
    }
    i64::try_from(window_start_exact(timestamp, offset, window_size)).ok()
}

/// [`window_start_with_offset`] without the range check; `window_size > 0`.
fn window_start_exact(timestamp: i64, offset: i64, window_size: i64) -> i128 {
    let timestamp = i128::from(timestamp);
    let window_size = i128::from(window_size);
    let remainder = (timestamp - i128::from(offset)) % window_size;
    if remainder < 0 {
        timestamp - (remainder + window_size)
    } else {
        timestamp - remainder
    }
}

/// Which clock an assigner's windows follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeDomain {
    /// The record's timestamp; windows fire on watermarks (Flink's `*EventTimeWindows`).
    EventTime,
    /// The operator's processing time when the record arrives; windows fire on processing-time
    /// timers (Flink's `*ProcessingTimeWindows`).
    ProcessingTime,
}

/// Window assignment or window bookkeeping failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// A window size `<= 0`.
    #[error("{assigner} windows need a size > 0, got size {size_ms} ms")]
    InvalidSize {
        /// The assigner kind, e.g. `"tumbling"`.
        assigner: &'static str,
        /// The rejected size.
        size_ms: i64,
    },
    /// A sliding window slide `<= 0`.
    #[error("sliding windows need a slide > 0, got slide {slide_ms} ms")]
    InvalidSlide {
        /// The rejected slide.
        slide_ms: i64,
    },
    /// An offset with `|offset| >= bound` (the size for tumbling, the slide for sliding windows).
    #[error(
        "{assigner} windows need |offset| < {bound_name} ({bound_ms} ms), got offset {offset_ms} ms"
    )]
    InvalidOffset {
        /// The assigner kind.
        assigner: &'static str,
        /// The rejected offset.
        offset_ms: i64,
        /// `"size"` or `"slide"`.
        bound_name: &'static str,
        /// The size or slide the offset must stay below in magnitude.
        bound_ms: i64,
    },
    /// `size / slide` above [`SLIDING_WINDOWS_MAX`].
    #[error(
        "sliding windows need size / slide <= {max}, got size {size_ms} ms and slide {slide_ms} ms"
    )]
    TooManyWindows {
        /// The size.
        size_ms: i64,
        /// The slide.
        slide_ms: i64,
        /// [`SLIDING_WINDOWS_MAX`].
        max: i64,
    },
    /// A session gap `<= 0`.
    #[error("session windows need a gap > 0, got gap {gap_ms} ms")]
    InvalidGap {
        /// The rejected gap.
        gap_ms: i64,
    },
    /// An event-time assigner got a record without a timestamp.
    #[error(
        "a record has no timestamp, but {assigner} windows use event time: set timestamps in the \
         source or with a timestamp assigner, or use processing-time windows"
    )]
    MissingTimestamp {
        /// The assigner kind.
        assigner: &'static str,
    },
    /// The windows of a time would have a bound outside the `i64` range.
    #[error(
        "time {time_ms} ms is too close to the limits of i64: its {assigner} window bounds do not \
         fit in an i64"
    )]
    TimeOutOfRange {
        /// The assigner kind.
        assigner: &'static str,
        /// The time that was assigned.
        time_ms: i64,
    },
    /// `retire_window` of a window that is not in the merging window set.
    #[error("window [{}, {}) is not in the in-flight window set", window.start, window.end)]
    WindowNotInFlight {
        /// The window.
        window: TimeWindow,
    },
    /// A persisted merging window set that the set itself could never have produced.
    #[error("corrupt merging window set state: {0}")]
    CorruptMergingState(String),
}

/// Assigns a time to windows, as Flink's `WindowAssigner.assignWindows`.
///
/// Call order per record: `let t = assigner.assignment_time(record.timestamp, now)?;` then
/// `assigner.assign(t, &mut windows)?`. The assigner never reads a clock: for processing-time
/// assigners the caller passes its current processing time.
pub trait WindowAssign {
    /// Appends the windows containing `time` to `out`, in Flink's order (for sliding windows the
    /// latest start first). `out` is not cleared.
    ///
    /// # Errors
    ///
    /// [`WindowError::TimeOutOfRange`] if a window bound would not fit in `i64`; `out` is then
    /// left as it was.
    fn assign(&self, time: i64, out: &mut Vec<TimeWindow>) -> Result<(), WindowError>;

    /// Whether windows follow event time (fire on watermarks) rather than processing time.
    fn is_event_time(&self) -> bool;

    /// Whether windows of this assigner merge (Flink's `MergingWindowAssigner`); a merging
    /// assigner's windows are tracked in a [`MergingWindowSet`](super::MergingWindowSet).
    fn is_merging(&self) -> bool;

    /// The kind of assigner, for messages: `"tumbling"`, `"sliding"` or `"session"`.
    fn kind(&self) -> &'static str;

    /// The time to pass to [`assign`](Self::assign): the record's timestamp for event time, the
    /// caller's current processing time for processing time (as Flink's processing-time assigners
    /// ignore the record timestamp and use `context.getCurrentProcessingTime()`).
    ///
    /// # Errors
    ///
    /// [`WindowError::MissingTimestamp`] for an event-time assigner and a record without a
    /// timestamp (Flink throws for its no-timestamp marker `Long.MIN_VALUE`).
    fn assignment_time(
        &self,
        record_timestamp: Option<i64>,
        processing_time: i64,
    ) -> Result<i64, WindowError> {
        if !self.is_event_time() {
            return Ok(processing_time);
        }
        record_timestamp.ok_or(WindowError::MissingTimestamp {
            assigner: self.kind(),
        })
    }
}

/// Tumbling windows: fixed-size, non-overlapping windows `[start, start + size)` with
/// `start = offset + k * size`. Flink's `TumblingEventTimeWindows.of(size, offset)` and
/// `TumblingProcessingTimeWindows.of(size, offset)` with the default `WindowStagger.ALIGNED`.
///
/// # Examples
///
/// ```
/// use eichhorn::operator::window::{TimeDomain, TimeWindow, TumblingWindows, WindowAssign};
///
/// // Hourly windows starting at quarter past.
/// let hourly = TumblingWindows::new(TimeDomain::EventTime, 3_600_000, 900_000)?;
/// let mut windows = Vec::new();
/// hourly.assign(1_000_000, &mut windows)?;
/// assert_eq!(windows, [TimeWindow::new(900_000, 4_500_000)]);
/// # Ok::<(), eichhorn::operator::window::WindowError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TumblingWindows {
    domain: TimeDomain,
    size_ms: i64,
    offset_ms: i64,
}

impl TumblingWindows {
    /// Tumbling windows of `size_ms`, shifted by `offset_ms` (which may be negative, e.g. `-8h`
    /// for daily windows in UTC+8).
    ///
    /// # Errors
    ///
    /// [`WindowError::InvalidSize`] if `size_ms <= 0`, [`WindowError::InvalidOffset`] if
    /// `|offset_ms| >= size_ms` (Flink: `abs(offset) < size`; unlike Java's `Math.abs`, the
    /// magnitude of `i64::MIN` is not negative, so that offset is rejected too).
    pub fn new(domain: TimeDomain, size_ms: i64, offset_ms: i64) -> Result<Self, WindowError> {
        if size_ms <= 0 {
            return Err(WindowError::InvalidSize {
                assigner: "tumbling",
                size_ms,
            });
        }
        if offset_ms.unsigned_abs() >= size_ms.unsigned_abs() {
            return Err(WindowError::InvalidOffset {
                assigner: "tumbling",
                offset_ms,
                bound_name: "size",
                bound_ms: size_ms,
            });
        }
        Ok(Self {
            domain,
            size_ms,
            offset_ms,
        })
    }

    /// The clock the windows follow.
    pub fn domain(&self) -> TimeDomain {
        self.domain
    }

    /// The window size.
    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// The offset of window starts.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }
}

impl WindowAssign for TumblingWindows {
    fn assign(&self, time: i64, out: &mut Vec<TimeWindow>) -> Result<(), WindowError> {
        let start = window_start_exact(time, self.offset_ms, self.size_ms);
        let end = start + i128::from(self.size_ms);
        match (i64::try_from(start), i64::try_from(end)) {
            (Ok(start), Ok(end)) => {
                out.push(TimeWindow::new(start, end));
                Ok(())
            }
            _ => Err(WindowError::TimeOutOfRange {
                assigner: self.kind(),
                time_ms: time,
            }),
        }
    }

    fn is_event_time(&self) -> bool {
        self.domain == TimeDomain::EventTime
    }

    fn is_merging(&self) -> bool {
        false
    }

    fn kind(&self) -> &'static str {
        "tumbling"
    }
}

/// Sliding windows: windows of `size` starting every `slide` at `offset + k * slide`, so a time
/// belongs to about `size / slide` windows. Flink's `SlidingEventTimeWindows.of(size, slide,
/// offset)` and `SlidingProcessingTimeWindows.of(size, slide, offset)`.
///
/// Assignment is Flink's loop: `lastStart = window_start_with_offset(t, offset, slide)`, then
/// `for start = lastStart; start > t - size; start -= slide` emit `[start, start + size)`. So
/// windows come latest start first, and a time belongs to `ceil((size - d) / slide)` windows where
/// `d = t - lastStart` (`size / slide` windows when `slide` divides `size`; none when
/// `slide > size` and `t` falls in a gap between windows).
///
/// # Examples
///
/// ```
/// use eichhorn::operator::window::{SlidingWindows, TimeDomain, TimeWindow, WindowAssign};
///
/// // 10 s windows every 5 s.
/// let sliding = SlidingWindows::new(TimeDomain::EventTime, 10_000, 5_000, 0)?;
/// let mut windows = Vec::new();
/// sliding.assign(12_000, &mut windows)?;
/// assert_eq!(windows, [TimeWindow::new(10_000, 20_000), TimeWindow::new(5_000, 15_000)]);
/// # Ok::<(), eichhorn::operator::window::WindowError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlidingWindows {
    domain: TimeDomain,
    size_ms: i64,
    slide_ms: i64,
    offset_ms: i64,
}

impl SlidingWindows {
    /// Sliding windows of `size_ms` every `slide_ms`, shifted by `offset_ms`.
    ///
    /// # Errors
    ///
    /// As Flink: [`WindowError::InvalidSize`] if `size_ms <= 0`, [`WindowError::InvalidSlide`] if
    /// `slide_ms <= 0`, [`WindowError::InvalidOffset`] if `|offset_ms| >= slide_ms` (Flink bounds
    /// a sliding offset by the slide, not the size), [`WindowError::TooManyWindows`] if
    /// `size_ms / slide_ms > SLIDING_WINDOWS_MAX` (Flink checks this for event time only; we check
    /// it for both domains, so every assignment is bounded).
    pub fn new(
        domain: TimeDomain,
        size_ms: i64,
        slide_ms: i64,
        offset_ms: i64,
    ) -> Result<Self, WindowError> {
        if size_ms <= 0 {
            return Err(WindowError::InvalidSize {
                assigner: "sliding",
                size_ms,
            });
        }
        if slide_ms <= 0 {
            return Err(WindowError::InvalidSlide { slide_ms });
        }
        if offset_ms.unsigned_abs() >= slide_ms.unsigned_abs() {
            return Err(WindowError::InvalidOffset {
                assigner: "sliding",
                offset_ms,
                bound_name: "slide",
                bound_ms: slide_ms,
            });
        }
        if size_ms / slide_ms > SLIDING_WINDOWS_MAX {
            return Err(WindowError::TooManyWindows {
                size_ms,
                slide_ms,
                max: SLIDING_WINDOWS_MAX,
            });
        }
        Ok(Self {
            domain,
            size_ms,
            slide_ms,
            offset_ms,
        })
    }

    /// The clock the windows follow.
    pub fn domain(&self) -> TimeDomain {
        self.domain
    }

    /// The window size.
    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// The distance between window starts.
    pub fn slide_ms(&self) -> i64 {
        self.slide_ms
    }

    /// The offset of window starts.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }
}

impl WindowAssign for SlidingWindows {
    fn assign(&self, time: i64, out: &mut Vec<TimeWindow>) -> Result<(), WindowError> {
        // Exact arithmetic in i128: Flink's loop in Java `long`s wraps around for times within
        // `size + slide` of the i64 limits; here such times are an error instead.
        let size = i128::from(self.size_ms);
        let slide = i128::from(self.slide_ms);
        let lower = i128::from(time) - size;
        let len_before = out.len();
        let mut start = window_start_exact(time, self.offset_ms, self.slide_ms);
        // At most `size / slide + 1 <= SLIDING_WINDOWS_MAX + 1` iterations (checked in `new`).
        while start > lower {
            match (i64::try_from(start), i64::try_from(start + size)) {
                (Ok(window_start), Ok(window_end)) => {
                    out.push(TimeWindow::new(window_start, window_end));
                }
                _ => {
                    out.truncate(len_before);
                    return Err(WindowError::TimeOutOfRange {
                        assigner: self.kind(),
                        time_ms: time,
                    });
                }
            }
            start -= slide;
        }
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.domain == TimeDomain::EventTime
    }

    fn is_merging(&self) -> bool {
        false
    }

    fn kind(&self) -> &'static str {
        "sliding"
    }
}

/// Session windows with a static gap: each time `t` gets the window `[t, t + gap)`, and windows
/// that intersect (touching included) merge in a
/// [`MergingWindowSet`](super::MergingWindowSet). Flink's `EventTimeSessionWindows.withGap(gap)`
/// and `ProcessingTimeSessionWindows.withGap(gap)`.
///
/// # Examples
///
/// ```
/// use eichhorn::operator::window::{SessionWindows, TimeDomain, TimeWindow, WindowAssign};
///
/// let sessions = SessionWindows::new(TimeDomain::ProcessingTime, 30_000)?;
/// let now = 1_000;
/// let time = sessions.assignment_time(Some(5), now)?; // processing time ignores the timestamp
/// let mut windows = Vec::new();
/// sessions.assign(time, &mut windows)?;
/// assert_eq!(windows, [TimeWindow::new(1_000, 31_000)]);
/// assert!(sessions.is_merging());
/// # Ok::<(), eichhorn::operator::window::WindowError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionWindows {
    domain: TimeDomain,
    gap_ms: i64,
}

impl SessionWindows {
    /// Session windows that close after `gap_ms` without records.
    ///
    /// # Errors
    ///
    /// [`WindowError::InvalidGap`] if `gap_ms <= 0` (as Flink).
    pub fn new(domain: TimeDomain, gap_ms: i64) -> Result<Self, WindowError> {
        if gap_ms <= 0 {
            return Err(WindowError::InvalidGap { gap_ms });
        }
        Ok(Self { domain, gap_ms })
    }

    /// The clock the windows follow.
    pub fn domain(&self) -> TimeDomain {
        self.domain
    }

    /// The session gap.
    pub fn gap_ms(&self) -> i64 {
        self.gap_ms
    }
}

impl WindowAssign for SessionWindows {
    fn assign(&self, time: i64, out: &mut Vec<TimeWindow>) -> Result<(), WindowError> {
        let end = time
            .checked_add(self.gap_ms)
            .ok_or(WindowError::TimeOutOfRange {
                assigner: self.kind(),
                time_ms: time,
            })?;
        out.push(TimeWindow::new(time, end));
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        self.domain == TimeDomain::EventTime
    }

    fn is_merging(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "session"
    }
}

/// Any of the built-in time-window assigners, so the window operator can hold one without being
/// generic over it.
///
/// # Examples
///
/// ```
/// use eichhorn::operator::window::{TimeDomain, TimeWindow, WindowAssign, WindowAssigner};
///
/// let assigner = WindowAssigner::tumbling(TimeDomain::EventTime, 5_000, 0)?;
/// let time = assigner.assignment_time(Some(7_300), 0)?;
/// let mut windows = Vec::new();
/// assigner.assign(time, &mut windows)?;
/// assert_eq!(windows, [TimeWindow::new(5_000, 10_000)]);
/// assert!(assigner.assignment_time(None, 0).is_err());
/// # Ok::<(), eichhorn::operator::window::WindowError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WindowAssigner {
    /// Tumbling windows.
    Tumbling(TumblingWindows),
    /// Sliding windows.
    Sliding(SlidingWindows),
    /// Session windows (merging).
    Session(SessionWindows),
    /// One window per key for all time ([`GlobalWindows`]).
    Global(GlobalWindows),
}

/// One window per key holding every element, which fires only when its trigger says so (Flink's
/// `GlobalWindows`; the default trigger never fires). Used by count windows.
///
/// The window is represented as [`TimeWindow::GLOBAL`], `[i64::MIN, i64::MAX)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct GlobalWindows;

impl WindowAssign for GlobalWindows {
    fn assign(&self, _time: i64, out: &mut Vec<TimeWindow>) -> Result<(), WindowError> {
        out.push(TimeWindow::GLOBAL);
        Ok(())
    }

    fn is_event_time(&self) -> bool {
        false
    }

    fn is_merging(&self) -> bool {
        false
    }

    fn kind(&self) -> &'static str {
        "global"
    }

    fn assignment_time(
        &self,
        record_timestamp: Option<i64>,
        processing_time: i64,
    ) -> Result<i64, WindowError> {
        // Every time maps to the one window; records need no timestamp.
        Ok(record_timestamp.unwrap_or(processing_time))
    }
}

impl WindowAssigner {
    /// Global windows (one per key).
    pub fn global() -> Self {
        Self::Global(GlobalWindows)
    }

    /// Whether this is the global-windows assigner.
    pub fn is_global(&self) -> bool {
        matches!(self, Self::Global(_))
    }

    /// [`TumblingWindows::new`].
    ///
    /// # Errors
    ///
    /// As [`TumblingWindows::new`].
    pub fn tumbling(domain: TimeDomain, size_ms: i64, offset_ms: i64) -> Result<Self, WindowError> {
        TumblingWindows::new(domain, size_ms, offset_ms).map(Self::Tumbling)
    }

    /// [`SlidingWindows::new`].
    ///
    /// # Errors
    ///
    /// As [`SlidingWindows::new`].
    pub fn sliding(
        domain: TimeDomain,
        size_ms: i64,
        slide_ms: i64,
        offset_ms: i64,
    ) -> Result<Self, WindowError> {
        SlidingWindows::new(domain, size_ms, slide_ms, offset_ms).map(Self::Sliding)
    }

    /// [`SessionWindows::new`].
    ///
    /// # Errors
    ///
    /// As [`SessionWindows::new`].
    pub fn session(domain: TimeDomain, gap_ms: i64) -> Result<Self, WindowError> {
        SessionWindows::new(domain, gap_ms).map(Self::Session)
    }

    fn inner(&self) -> &dyn WindowAssign {
        match self {
            Self::Tumbling(assigner) => assigner,
            Self::Sliding(assigner) => assigner,
            Self::Session(assigner) => assigner,
            Self::Global(assigner) => assigner,
        }
    }
}

impl WindowAssign for WindowAssigner {
    fn assign(&self, time: i64, out: &mut Vec<TimeWindow>) -> Result<(), WindowError> {
        self.inner().assign(time, out)
    }

    fn assignment_time(
        &self,
        record_timestamp: Option<i64>,
        processing_time: i64,
    ) -> Result<i64, WindowError> {
        self.inner()
            .assignment_time(record_timestamp, processing_time)
    }

    fn is_event_time(&self) -> bool {
        self.inner().is_event_time()
    }

    fn is_merging(&self) -> bool {
        self.inner().is_merging()
    }

    fn kind(&self) -> &'static str {
        self.inner().kind()
    }
}

impl From<TumblingWindows> for WindowAssigner {
    fn from(assigner: TumblingWindows) -> Self {
        Self::Tumbling(assigner)
    }
}

impl From<SlidingWindows> for WindowAssigner {
    fn from(assigner: SlidingWindows) -> Self {
        Self::Sliding(assigner)
    }
}

impl From<SessionWindows> for WindowAssigner {
    fn from(assigner: SessionWindows) -> Self {
        Self::Session(assigner)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EVENT: TimeDomain = TimeDomain::EventTime;
    const PROCESSING: TimeDomain = TimeDomain::ProcessingTime;

    fn assign(assigner: &impl WindowAssign, time: i64) -> Vec<TimeWindow> {
        let mut out = Vec::new();
        assigner.assign(time, &mut out).unwrap();
        out
    }

    fn w(start: i64, end: i64) -> TimeWindow {
        TimeWindow::new(start, end)
    }

    /// Flink's formula before FLINK-26334, as an oracle for where the two agree.
    fn legacy_window_start(timestamp: i64, offset: i64, window_size: i64) -> i64 {
        timestamp - (timestamp - offset + window_size) % window_size
    }

    #[test]
    fn time_window_basics_match_flink() {
        let a = w(0, 10);
        assert_eq!(a.max_timestamp(), 9);
        assert!(a.contains(0) && a.contains(9) && !a.contains(10) && !a.contains(-1));
        assert!(
            a.intersects(&w(10, 20)),
            "touching windows intersect in Flink"
        );
        assert!(w(10, 20).intersects(&a));
        assert!(!a.intersects(&w(11, 20)));
        assert!(a.intersects(&w(3, 4)));
        assert_eq!(a.cover(&w(5, 30)), w(0, 30));
        assert_eq!(w(5, 30).cover(&a), w(0, 30));
        assert!(w(0, 10) < w(0, 11) && w(0, 11) < w(1, 2));
        assert_eq!(w(0, i64::MIN).max_timestamp(), i64::MIN);
        assert_eq!(GlobalWindow.max_timestamp(), i64::MAX);
        assert_eq!(Window::max_timestamp(&a), 9);
    }

    #[test]
    fn time_window_serde_round_trip() {
        let window = w(-5, 1_000_000);
        let bytes = postcard::to_allocvec(&window).unwrap();
        assert_eq!(postcard::from_bytes::<TimeWindow>(&bytes).unwrap(), window);
        let bytes = postcard::to_allocvec(&GlobalWindow).unwrap();
        assert_eq!(
            postcard::from_bytes::<GlobalWindow>(&bytes).unwrap(),
            GlobalWindow
        );
    }

    #[test]
    fn window_start_examples() {
        assert_eq!(window_start_with_offset(0, 0, 5000), Some(0));
        assert_eq!(window_start_with_offset(4999, 0, 5000), Some(0));
        assert_eq!(window_start_with_offset(5000, 0, 5000), Some(5000));
        assert_eq!(window_start_with_offset(-1, 0, 5000), Some(-5000));
        assert_eq!(window_start_with_offset(-5000, 0, 5000), Some(-5000));
        assert_eq!(window_start_with_offset(-5001, 0, 5000), Some(-10000));
        // Pre-FLINK-26334 Flink put -5001 into [-5000, 0), which does not contain it.
        assert_eq!(legacy_window_start(-5001, 0, 5000), -5000);
        assert_eq!(window_start_with_offset(1, 0, 0), None);
        assert_eq!(window_start_with_offset(1, 0, -3), None);
        assert_eq!(window_start_with_offset(i64::MIN, 0, 5000), None);
        assert_eq!(
            window_start_with_offset(i64::MIN, 0, 1 << 20),
            Some(i64::MIN),
            "i64::MIN is itself aligned to powers of two"
        );
        assert_eq!(
            window_start_with_offset(i64::MAX, -1, 10),
            Some(i64::MAX - 8),
            "exact even where Java's timestamp - offset would overflow"
        );
    }

    /// `TumblingEventTimeWindowsTest`: size 5000, with offsets 0, 100 and -100.
    #[test]
    fn tumbling_flink_examples() {
        let plain = TumblingWindows::new(EVENT, 5000, 0).unwrap();
        assert_eq!(assign(&plain, 0), [w(0, 5000)]);
        assert_eq!(assign(&plain, 4999), [w(0, 5000)]);
        assert_eq!(assign(&plain, 5000), [w(5000, 10000)]);

        let offset = TumblingWindows::new(EVENT, 5000, 100).unwrap();
        assert_eq!(assign(&offset, 100), [w(100, 5100)]);
        assert_eq!(assign(&offset, 5099), [w(100, 5100)]);
        assert_eq!(assign(&offset, 5100), [w(5100, 10100)]);
        assert_eq!(assign(&offset, 0), [w(-4900, 100)]);

        let negative = TumblingWindows::new(EVENT, 5000, -100).unwrap();
        assert_eq!(assign(&negative, 0), [w(-100, 4900)]);
        assert_eq!(assign(&negative, 4899), [w(-100, 4900)]);
        assert_eq!(assign(&negative, 4900), [w(4900, 9900)]);

        // Daily windows at local midnight in UTC+8 (Flink's javadoc example).
        let day = 86_400_000;
        let daily = TumblingWindows::new(EVENT, day, -8 * 3_600_000).unwrap();
        assert_eq!(assign(&daily, 0), [w(-8 * 3_600_000, 16 * 3_600_000)]);

        assert!(plain.is_event_time() && !plain.is_merging());
        let processing = TumblingWindows::new(PROCESSING, 5000, 0).unwrap();
        assert!(!processing.is_event_time());
        assert_eq!(assign(&processing, 7300), [w(5000, 10000)]);
    }

    /// `SlidingEventTimeWindowsTest`: size 5000, slide 1000, in Flink's order.
    #[test]
    fn sliding_flink_examples() {
        let sliding = SlidingWindows::new(EVENT, 5000, 1000, 0).unwrap();
        assert_eq!(
            assign(&sliding, 0),
            [
                w(0, 5000),
                w(-1000, 4000),
                w(-2000, 3000),
                w(-3000, 2000),
                w(-4000, 1000)
            ]
        );
        assert_eq!(
            assign(&sliding, 5999),
            [
                w(5000, 10000),
                w(4000, 9000),
                w(3000, 8000),
                w(2000, 7000),
                w(1000, 6000)
            ]
        );

        let offset = SlidingWindows::new(EVENT, 5000, 1000, 100).unwrap();
        assert_eq!(
            assign(&offset, 100),
            [
                w(100, 5100),
                w(-900, 4100),
                w(-1900, 3100),
                w(-2900, 2100),
                w(-3900, 1100)
            ]
        );

        let ten_by_five = SlidingWindows::new(EVENT, 10_000, 5_000, 0).unwrap();
        assert_eq!(
            assign(&ten_by_five, 12_000),
            [w(10_000, 20_000), w(5_000, 15_000)]
        );

        // slide > size: times in the gaps belong to no window.
        let gappy = SlidingWindows::new(EVENT, 1000, 5000, 0).unwrap();
        assert_eq!(assign(&gappy, 500), [w(0, 1000)]);
        assert!(assign(&gappy, 1500).is_empty());

        // size not a multiple of slide: 2 or 3 windows.
        let uneven = SlidingWindows::new(EVENT, 2500, 1000, 0).unwrap();
        assert_eq!(
            assign(&uneven, 0),
            [w(0, 2500), w(-1000, 1500), w(-2000, 500)]
        );
        assert_eq!(assign(&uneven, 600), [w(0, 2500), w(-1000, 1500)]);
    }

    #[test]
    fn session_assigns_gap_window() {
        let sessions = SessionWindows::new(EVENT, 3).unwrap();
        assert_eq!(assign(&sessions, 10), [w(10, 13)]);
        assert!(sessions.is_merging() && sessions.is_event_time());
        let mut out = Vec::new();
        assert_eq!(
            sessions.assign(i64::MAX - 1, &mut out),
            Err(WindowError::TimeOutOfRange {
                assigner: "session",
                time_ms: i64::MAX - 1
            })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn parameters_are_validated_like_flink() {
        assert_eq!(
            TumblingWindows::new(EVENT, 0, 0),
            Err(WindowError::InvalidSize {
                assigner: "tumbling",
                size_ms: 0
            })
        );
        assert!(TumblingWindows::new(EVENT, -5, 0).is_err());
        assert!(TumblingWindows::new(EVENT, 5, 4).is_ok());
        assert!(TumblingWindows::new(EVENT, 5, -4).is_ok());
        let err = TumblingWindows::new(EVENT, 5, 5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tumbling windows need |offset| < size (5 ms), got offset 5 ms"
        );
        assert!(TumblingWindows::new(EVENT, 5, -5).is_err());
        assert!(TumblingWindows::new(EVENT, 5, i64::MIN).is_err());

        assert!(SlidingWindows::new(EVENT, 0, 1, 0).is_err());
        assert_eq!(
            SlidingWindows::new(EVENT, 10, 0, 0),
            Err(WindowError::InvalidSlide { slide_ms: 0 })
        );
        assert!(SlidingWindows::new(EVENT, 10, -1, 0).is_err());
        // The sliding offset is bounded by the slide, as in Flink.
        assert!(SlidingWindows::new(EVENT, 10, 5, 4).is_ok());
        assert!(SlidingWindows::new(EVENT, 10, 5, 5).is_err());
        assert!(SlidingWindows::new(EVENT, 10, 5, -7).is_err());
        assert!(SlidingWindows::new(EVENT, SLIDING_WINDOWS_MAX, 1, 0).is_ok());
        assert_eq!(
            SlidingWindows::new(PROCESSING, SLIDING_WINDOWS_MAX + 1, 1, 0),
            Err(WindowError::TooManyWindows {
                size_ms: SLIDING_WINDOWS_MAX + 1,
                slide_ms: 1,
                max: SLIDING_WINDOWS_MAX
            })
        );

        assert_eq!(
            SessionWindows::new(EVENT, 0),
            Err(WindowError::InvalidGap { gap_ms: 0 })
        );
        assert!(SessionWindows::new(EVENT, -1).is_err());
        assert!(WindowAssigner::session(PROCESSING, 1).is_ok());
        assert!(WindowAssigner::tumbling(PROCESSING, 0, 0).is_err());
        assert!(WindowAssigner::sliding(PROCESSING, 1, 0, 0).is_err());
    }

    #[test]
    fn assignment_time_picks_the_clock() {
        let event = WindowAssigner::tumbling(EVENT, 10, 0).unwrap();
        let processing = WindowAssigner::tumbling(PROCESSING, 10, 0).unwrap();
        assert_eq!(event.assignment_time(Some(3), 99), Ok(3));
        assert_eq!(
            event.assignment_time(None, 99),
            Err(WindowError::MissingTimestamp {
                assigner: "tumbling"
            })
        );
        assert_eq!(processing.assignment_time(Some(3), 99), Ok(99));
        assert_eq!(processing.assignment_time(None, 99), Ok(99));
        assert!(event.is_event_time() && !processing.is_event_time());
        assert_eq!(event.kind(), "tumbling");
    }

    #[test]
    fn times_near_the_i64_limits_are_errors_not_wrapped_windows() {
        let tumbling = TumblingWindows::new(EVENT, 5000, 0).unwrap();
        let sliding = SlidingWindows::new(EVENT, 5000, 1000, 0).unwrap();
        for time in [i64::MIN, i64::MIN + 10, i64::MAX - 10, i64::MAX] {
            let mut out = vec![w(1, 2)];
            assert!(matches!(
                tumbling.assign(time, &mut out),
                Err(WindowError::TimeOutOfRange { .. })
            ));
            assert!(sliding.assign(time, &mut out).is_err());
            assert_eq!(out, [w(1, 2)], "out is unchanged on error");
        }
    }

    #[test]
    fn enum_delegates() {
        let sliding: WindowAssigner = SlidingWindows::new(PROCESSING, 10, 5, 0).unwrap().into();
        assert_eq!(assign(&sliding, 7), [w(5, 15), w(0, 10)]);
        assert!(!sliding.is_merging() && !sliding.is_event_time());
        assert_eq!(sliding.kind(), "sliding");
        let session: WindowAssigner = SessionWindows::new(EVENT, 4).unwrap().into();
        assert!(session.is_merging());
        assert_eq!(assign(&session, 7), [w(7, 11)]);
        let tumbling: WindowAssigner = TumblingWindows::new(EVENT, 10, 0).unwrap().into();
        assert_eq!(assign(&tumbling, 7), [w(0, 10)]);
    }

    /// Timestamps far enough from the i64 limits that no window bound overflows.
    fn timestamp() -> impl Strategy<Value = i64> {
        prop_oneof![-100_000i64..100_000, -(1i64 << 60)..(1i64 << 60)]
    }

    /// A window size and an offset with `|offset| < size`.
    fn size_and_offset() -> impl Strategy<Value = (i64, i64)> {
        prop_oneof![1i64..50, 1i64..10_000, 1i64..(1 << 40)]
            .prop_flat_map(|size| (Just(size), -(size - 1)..size))
    }

    proptest! {
        #[test]
        fn window_start_contains_and_aligns(
            ts in timestamp(),
            offset in -(1i64 << 50)..(1i64 << 50),
            size in 1i64..(1 << 40),
        ) {
            // No precondition on the offset: alignment and containment hold for any offset.
            let start = window_start_with_offset(ts, offset, size).unwrap();
            prop_assert!(start <= ts && ts - start < size);
            prop_assert_eq!((i128::from(start) - i128::from(offset)) % i128::from(size), 0);
            prop_assert_eq!(start, ts - (ts - offset).rem_euclid(size));
        }

        #[test]
        fn window_start_matches_legacy_flink_where_it_was_correct(
            ts in timestamp(),
            (size, offset) in size_and_offset(),
        ) {
            let start = window_start_with_offset(ts, offset, size).unwrap();
            let legacy = legacy_window_start(ts, offset, size);
            if ts - offset + size >= 0 || (ts - offset) % size == 0 {
                prop_assert_eq!(start, legacy);
            } else {
                // The old formula put the timestamp into the next window (FLINK-26334).
                prop_assert!(legacy > ts);
                prop_assert_eq!(legacy, start + size);
            }
        }

        #[test]
        fn tumbling_window_contains_timestamp(
            ts in timestamp(),
            (size, offset) in size_and_offset(),
            event_time in any::<bool>(),
        ) {
            let domain = if event_time { EVENT } else { PROCESSING };
            let windows = assign(&TumblingWindows::new(domain, size, offset).unwrap(), ts);
            prop_assert_eq!(windows.len(), 1);
            let window = windows[0];
            prop_assert!(window.contains(ts));
            prop_assert_eq!(window.end - window.start, size);
            prop_assert_eq!((window.start - offset).rem_euclid(size), 0);
        }

        #[test]
        fn sliding_windows_are_exactly_the_aligned_windows_containing_timestamp(
            ts in timestamp(),
            (slide, offset) in size_and_offset(),
            size_raw in any::<u64>(),
            multiple in any::<bool>(),
        ) {
            // Sizes that are multiples of the slide, and arbitrary ones (also below the slide).
            let size_raw = i64::try_from(size_raw >> 2).unwrap();
            let size = if multiple {
                slide * (1 + size_raw % 40)
            } else {
                1 + size_raw % (slide * 40)
            };
            let sliding = SlidingWindows::new(EVENT, size, slide, offset).unwrap();
            let windows = assign(&sliding, ts);

            for window in &windows {
                prop_assert!(window.contains(ts), "{window:?} does not contain {ts}");
                prop_assert_eq!(window.end - window.start, size);
                prop_assert_eq!((window.start - offset).rem_euclid(slide), 0);
            }
            // Flink's order: latest start first, one slide apart.
            for pair in windows.windows(2) {
                prop_assert_eq!(pair[0].start - pair[1].start, slide);
            }
            // Flink's count: ceil((size - d) / slide) with d = ts - lastStart.
            let last_start = window_start_with_offset(ts, offset, slide).unwrap();
            let d = ts - last_start;
            let expected = if size > d { (size - d + slide - 1) / slide } else { 0 };
            prop_assert_eq!(windows.len() as i64, expected);
            if size % slide == 0 {
                prop_assert_eq!(windows.len() as i64, size / slide);
            }
            // Complete: the neighbouring aligned windows do not contain the timestamp.
            prop_assert!(last_start + slide > ts);
            let earliest = windows.last().map_or(last_start, |w| w.start);
            let before = if windows.is_empty() { earliest } else { earliest - slide };
            prop_assert!(before + size <= ts);
        }

        #[test]
        fn processing_time_assigners_match_event_time_ones(
            time in timestamp(),
            (slide, offset) in size_and_offset(),
            factor in 1i64..5,
        ) {
            let size = slide * factor;
            let pairs = [
                (
                    WindowAssigner::tumbling(EVENT, size, offset % size).unwrap(),
                    WindowAssigner::tumbling(PROCESSING, size, offset % size).unwrap(),
                ),
                (
                    WindowAssigner::sliding(EVENT, size, slide, offset).unwrap(),
                    WindowAssigner::sliding(PROCESSING, size, slide, offset).unwrap(),
                ),
                (
                    WindowAssigner::session(EVENT, size).unwrap(),
                    WindowAssigner::session(PROCESSING, size).unwrap(),
                ),
            ];
            for (event, processing) in pairs {
                prop_assert_eq!(assign(&event, time), assign(&processing, time));
                prop_assert!(event.is_event_time() && !processing.is_event_time());
            }
        }
    }
}
