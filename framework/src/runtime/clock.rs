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

/// A new job id for a run whose application did not fix one: the system time in nanoseconds,
/// the process id and a per-process counter, mixed. Unique across runs of a program and across
/// processes started at the same instant; never read by the simulator, which fixes the id.
pub(crate) fn generate_job_id() -> crate::checkpoint::JobId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUNS: AtomicU64 = AtomicU64::new(0);
    // The runtime's clock module is the one place allowed to read the system time (DESIGN.md).
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    let nanos = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let process = u64::from(std::process::id());
    let high = crate::state::splitmix64((nanos >> 64) as u64 ^ nanos as u64);
    let low = crate::state::splitmix64(process.rotate_left(32) ^ run ^ high);
    crate::checkpoint::JobId((u128::from(high) << 64) | u128::from(low))
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
