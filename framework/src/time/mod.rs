//! Event time and processing time.
//!
//! - [`Watermark`]: event-time progress, carried in-band as a stream element.
//! - [`WatermarkTracker`]: the minimum over a subtask's input channels (sans-IO core).
//! - [`TimerService`]: event-time and processing-time timers of keyed operators (sans-IO core).
//! - [`Clock`]: injected processing time (the runtime's `TokioClock` follows tokio's clock).

mod clock;
mod lmdb_timers;
mod strategy;
mod timers;
mod tracker;
mod watermark;

pub use clock::Clock;
pub use strategy::{
    BoundedOutOfOrderness, EveryEvent, NoWatermarks, WatermarkGenerator, WatermarkOutput,
    WatermarkStrategy,
};
pub use timers::{Timer, TimerService, TimerSnapshot};
pub use tracker::{TrackerUpdate, WatermarkTracker};
pub use watermark::{Watermark, WatermarkStatus};
