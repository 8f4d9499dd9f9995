//! The runtime's clock: the one place processing time is read.

use crate::time::Clock;

/// A [`Clock`] on tokio's time: real in production, virtual under `start_paused(true)`.
///
/// Its reading is `origin_ms` plus the tokio time elapsed since the clock was made: with the
/// wall-clock time as origin (production, [`TokioClock::wall_clock`]) processing-time windows
/// align to wall-clock boundaries as in Flink; with origin 0 (tests and the simulator) every run
/// reads the same times.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch: tokio::time::Instant,
    origin_ms: i64,
}

impl TokioClock {
    /// A clock reading 0 now (in tokio time).
    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// A clock reading `origin_ms` now.
    pub fn starting_at(origin_ms: i64) -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            origin_ms,
        }
    }

    /// A clock reading milliseconds since the Unix epoch (read once, then advanced by tokio's
    /// monotone clock).
    pub fn wall_clock() -> Self {
        // The runtime's clock is the one place allowed to read the system time (DESIGN.md).
        #[allow(clippy::disallowed_methods)]
        let now = std::time::SystemTime::now();
        let origin_ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self::starting_at(origin_ms)
    }

    /// Tokio's `Instant` of this clock's zero.
    pub fn epoch(&self) -> tokio::time::Instant {
        self.epoch
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.origin_ms.saturating_add(elapsed)
    }
}
