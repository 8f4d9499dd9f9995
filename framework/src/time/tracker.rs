//! The watermark tracker of a multi-input subtask.
//!
//! A subtask's event-time clock is the minimum over the watermarks of its input channels, and it
//! only moves forward. Each channel's watermark is monotone too: a watermark lower than the one the
//! channel already sent is ignored (it cannot take back a promise). A finished channel no longer
//! holds time back.
//!
//! Sans-IO: the subtask calls [`WatermarkTracker::handle_watermark`] and
//! [`WatermarkTracker::handle_end_of_input`] as elements arrive, and forwards whatever watermark
//! they return.
//!
//! ## Invariants
//!
//! - The combined watermark returned over time is strictly increasing.
//! - It never exceeds the watermark of any channel that has not finished.

use super::watermark::Watermark;

/// Per-channel watermarks and their combined minimum.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    channels: Vec<ChannelTime>,
    combined: Watermark,
}

#[derive(Debug, Clone, Copy)]
struct ChannelTime {
    watermark: Watermark,
    finished: bool,
}

impl WatermarkTracker {
    /// A tracker over `channel_count` input channels, all at [`Watermark::MIN`].
    pub fn new(channel_count: usize) -> Self {
        Self {
            channels: vec![
                ChannelTime {
                    watermark: Watermark::MIN,
                    finished: false,
                };
                channel_count
            ],
            combined: Watermark::MIN,
        }
    }

    /// The current combined watermark.
    pub fn current(&self) -> Watermark {
        self.combined
    }

    /// Records `watermark` on `channel`; returns the new combined watermark if it advanced.
    ///
    /// # Panics
    ///
    /// If `channel` is out of range (a wiring bug, not bad input).
    pub fn handle_watermark(&mut self, channel: usize, watermark: Watermark) -> Option<Watermark> {
        let slot = &mut self.channels[channel];
        if slot.finished || watermark <= slot.watermark {
            return None;
        }
        slot.watermark = watermark;
        self.advance()
    }

    /// Marks `channel` finished; returns the new combined watermark if that advanced it.
    pub fn handle_end_of_input(&mut self, channel: usize) -> Option<Watermark> {
        self.channels[channel].finished = true;
        self.advance()
    }

    fn advance(&mut self) -> Option<Watermark> {
        let minimum = self
            .channels
            .iter()
            .filter(|c| !c.finished)
            .map(|c| c.watermark)
            .min();
        // With every channel finished, time only advances through watermarks the channels sent
        // before finishing (a bounded source sends `Watermark::MAX` before its end).
        let minimum = minimum.unwrap_or_else(|| {
            self.channels
                .iter()
                .map(|c| c.watermark)
                .min()
                .unwrap_or(Watermark::MIN)
        });
        if minimum > self.combined {
            self.combined = minimum;
            Some(minimum)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minimum_over_channels() {
        let mut t = WatermarkTracker::new(2);
        assert_eq!(t.handle_watermark(0, Watermark::new(10)), None);
        assert_eq!(
            t.handle_watermark(1, Watermark::new(5)),
            Some(Watermark::new(5))
        );
        assert_eq!(
            t.handle_watermark(1, Watermark::new(20)),
            Some(Watermark::new(10))
        );
        assert_eq!(
            t.handle_watermark(0, Watermark::new(7)),
            None,
            "regressions are ignored"
        );
        assert_eq!(t.handle_end_of_input(0), Some(Watermark::new(20)));
    }

    proptest! {
        #[test]
        fn combined_is_monotone_and_bounded(
            events in proptest::collection::vec((0usize..4, -100i64..100, any::<bool>()), 0..200)
        ) {
            let mut t = WatermarkTracker::new(4);
            let mut sent = [i64::MIN; 4];
            let mut finished = [false; 4];
            let mut last = Watermark::MIN;
            for (channel, ts, end) in events {
                let advanced = if end {
                    finished[channel] = true;
                    t.handle_end_of_input(channel)
                } else {
                    if !finished[channel] { sent[channel] = sent[channel].max(ts); }
                    t.handle_watermark(channel, Watermark::new(ts))
                };
                if let Some(w) = advanced {
                    prop_assert!(w > last);
                    last = w;
                }
                prop_assert_eq!(t.current(), last);
                for c in 0..4 {
                    if !finished[c] {
                        prop_assert!(t.current().timestamp <= sent[c]);
                    }
                }
            }
        }
    }
}
