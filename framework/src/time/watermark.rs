//! Watermarks: the event-time clock that travels in-band with the records.

use serde::{Deserialize, Serialize};

/// An assertion that no more records with a timestamp at or below `timestamp` (milliseconds of
/// event time) will arrive on this stream, as Flink's `Watermark`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Watermark {
    /// Event time in milliseconds.
    pub timestamp: i64,
}

impl Watermark {
    /// The watermark before any was seen: nothing is known about event time yet.
    pub const MIN: Self = Self {
        timestamp: i64::MIN,
    };
    /// The watermark at the end of a bounded input: every timer and window fires.
    pub const MAX: Self = Self {
        timestamp: i64::MAX,
    };

    /// A watermark at `timestamp` ms.
    pub const fn new(timestamp: i64) -> Self {
        Self { timestamp }
    }
}

/// Whether a stream currently advances event time (Flink's `WatermarkStatus`). An idle input
/// (a source partition without data) does not hold back the watermark of its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WatermarkStatus {
    /// The stream sends records and watermarks.
    Active,
    /// The stream sends nothing for now; consumers ignore it when computing their watermark.
    Idle,
}
