//! Processing time, injected.
//!
//! Nothing in the framework reads the system time directly: processing time comes from a
//! [`Clock`]. The runtime provides `runtime::TokioClock`, which follows tokio's clock and
//! therefore becomes virtual under a paused runtime (tests, the simulator); cores only ever see
//! the trait.

use std::fmt::Debug;

/// A source of processing time in milliseconds.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since this clock's epoch (monotone, not wall-clock time).
    fn now_ms(&self) -> i64;
}
