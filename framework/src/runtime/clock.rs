//! The runtime's clock: the one place processing time is read.

use crate::time::Clock;

/// A [`Clock`] on tokio's time: real in production, virtual under `start_paused(true)`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose zero is now (in tokio time).
    pub fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
        }
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
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}
