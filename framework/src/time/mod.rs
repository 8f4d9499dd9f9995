//! Event time and processing time.
//!
//! - [`Watermark`]: event-time progress, carried in-band as a stream element.
//! - [`WatermarkTracker`]: the minimum over a subtask's input channels (sans-IO core).
//! - [`Clock`]: injected processing time (the runtime's `TokioClock` follows tokio's clock).

mod clock;
mod tracker;
mod watermark;

pub use clock::Clock;
pub use tracker::WatermarkTracker;
pub use watermark::Watermark;
