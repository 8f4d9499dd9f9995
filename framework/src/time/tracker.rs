//! The watermark tracker of a multi-input subtask (Flink's `StatusWatermarkValve`).
//!
//! A subtask's event-time clock is the minimum over the watermarks of its input channels, and it
//! only moves forward. Each channel's watermark is monotone too: a watermark lower than the one the
//! channel already sent is ignored (it cannot take back a promise). A finished channel no longer
//! holds time back. An *idle* channel (one whose producer said `WatermarkStatus::Idle`) does not
//! hold time back either; when every live channel is idle the subtask itself becomes idle, after
//! emitting the largest watermark any channel reached (as Flink does). A channel that becomes active
//! again only rejoins the minimum once its watermark has caught up with the subtask's (it is
//! "aligned"), so its return never moves time backwards.
//!
//! Sans-IO: the subtask calls the `handle_*` methods as elements arrive and forwards whatever
//! watermark and status they return.
//!
//! ## Invariants
//!
//! - The combined watermark returned over time is strictly increasing.
//! - While any live channel is active and aligned, the combined watermark never exceeds the
//!   watermark of such a channel.
//! - Watermarks arriving on idle or finished channels are ignored.

use super::watermark::{Watermark, WatermarkStatus};

/// Per-channel watermarks and statuses, and their combination.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    channels: Vec<ChannelTime>,
    combined: Watermark,
    status: WatermarkStatus,
}

#[derive(Debug, Clone, Copy)]
struct ChannelTime {
    watermark: Watermark,
    finished: bool,
    idle: bool,
    /// Counts towards the minimum (active and caught up).
    aligned: bool,
}

/// What a status change produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrackerUpdate {
    /// A new combined watermark to forward, if it advanced.
    pub watermark: Option<Watermark>,
    /// A new subtask status to forward, if it changed.
    pub status: Option<WatermarkStatus>,
}

impl WatermarkTracker {
    /// A tracker over `channel_count` active input channels, all at [`Watermark::MIN`].
    pub fn new(channel_count: usize) -> Self {
        Self {
            channels: vec![
                ChannelTime {
                    watermark: Watermark::MIN,
                    finished: false,
                    idle: false,
                    aligned: true,
                };
                channel_count
            ],
            combined: Watermark::MIN,
            status: WatermarkStatus::Active,
        }
    }

    /// The current combined watermark.
    pub fn current(&self) -> Watermark {
        self.combined
    }

    /// The subtask's current status.
    pub fn status(&self) -> WatermarkStatus {
        self.status
    }

    /// Records `watermark` on `channel`; returns the new combined watermark if it advanced.
    ///
    /// # Panics
    ///
    /// If `channel` is out of range (a wiring bug, not bad input).
    pub fn handle_watermark(&mut self, channel: usize, watermark: Watermark) -> Option<Watermark> {
        let combined = self.combined;
        let slot = &mut self.channels[channel];
        if slot.finished || slot.idle || watermark <= slot.watermark {
            return None;
        }
        slot.watermark = watermark;
        if !slot.aligned && watermark >= combined {
            slot.aligned = true;
        }
        self.advance_to_minimum()
    }

    /// Records a status change of `channel`.
    pub fn handle_status(&mut self, channel: usize, status: WatermarkStatus) -> TrackerUpdate {
        let combined = self.combined;
        let slot = &mut self.channels[channel];
        if slot.finished {
            return TrackerUpdate::default();
        }
        let mut update = TrackerUpdate::default();
        match status {
            WatermarkStatus::Idle if !slot.idle => {
                slot.idle = true;
                slot.aligned = false;
                if self.has_active_channels() {
                    update.watermark = self.advance_to_minimum();
                } else {
                    update.watermark = self.advance_to_maximum();
                    if self.status == WatermarkStatus::Active {
                        self.status = WatermarkStatus::Idle;
                        update.status = Some(WatermarkStatus::Idle);
                    }
                }
            }
            WatermarkStatus::Active if slot.idle => {
                slot.idle = false;
                slot.aligned = slot.watermark >= combined;
                if self.status == WatermarkStatus::Idle {
                    self.status = WatermarkStatus::Active;
                    update.status = Some(WatermarkStatus::Active);
                }
            }
            _ => {}
        }
        update
    }

    /// Marks `channel` finished; returns the new combined watermark if that advanced it.
    pub fn handle_end_of_input(&mut self, channel: usize) -> Option<Watermark> {
        let slot = &mut self.channels[channel];
        slot.finished = true;
        slot.aligned = false;
        if self.channels.iter().all(|c| c.finished) {
            // Time only advances through watermarks the channels sent before finishing (a
            // bounded source sends `Watermark::MAX` before its end).
            return self.advance_to(self.channels.iter().map(|c| c.watermark).min());
        }
        if self.has_active_channels() {
            self.advance_to_minimum()
        } else {
            self.advance_to_maximum()
        }
    }

    fn has_active_channels(&self) -> bool {
        self.channels.iter().any(|c| !c.finished && !c.idle)
    }

    fn advance_to_minimum(&mut self) -> Option<Watermark> {
        let minimum = self
            .channels
            .iter()
            .filter(|c| c.aligned && !c.finished && !c.idle)
            .map(|c| c.watermark)
            .min();
        self.advance_to(minimum)
    }

    fn advance_to_maximum(&mut self) -> Option<Watermark> {
        let maximum = self
            .channels
            .iter()
            .filter(|c| !c.finished)
            .map(|c| c.watermark)
            .max();
        self.advance_to(maximum)
    }

    fn advance_to(&mut self, candidate: Option<Watermark>) -> Option<Watermark> {
        match candidate {
            Some(watermark) if watermark > self.combined => {
                self.combined = watermark;
                Some(watermark)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn idle_channels_do_not_hold_time_back() {
        let mut t = WatermarkTracker::new(2);
        assert_eq!(t.handle_watermark(0, Watermark::new(10)), None);
        let update = t.handle_status(1, WatermarkStatus::Idle);
        assert_eq!(update.watermark, Some(Watermark::new(10)));
        assert_eq!(update.status, None, "channel 0 is still active");
        assert_eq!(
            t.handle_watermark(1, Watermark::new(50)),
            None,
            "idle channels are ignored"
        );
        // Channel 1 comes back behind the combined watermark: it must catch up first.
        assert_eq!(
            t.handle_status(1, WatermarkStatus::Active),
            TrackerUpdate::default()
        );
        assert_eq!(t.handle_watermark(1, Watermark::new(8)), None);
        assert_eq!(
            t.handle_watermark(0, Watermark::new(20)),
            Some(Watermark::new(20))
        );
        assert_eq!(
            t.handle_watermark(1, Watermark::new(15)),
            None,
            "not aligned yet"
        );
        assert_eq!(
            t.handle_watermark(1, Watermark::new(25)),
            None,
            "aligned now, 0 is at 20"
        );
        assert_eq!(
            t.handle_watermark(0, Watermark::new(30)),
            Some(Watermark::new(25))
        );
    }

    #[test]
    fn all_idle_makes_the_subtask_idle_at_the_maximum() {
        let mut t = WatermarkTracker::new(2);
        t.handle_watermark(0, Watermark::new(10));
        t.handle_watermark(1, Watermark::new(30));
        assert_eq!(t.current(), Watermark::new(10));
        assert_eq!(
            t.handle_status(0, WatermarkStatus::Idle).watermark,
            Some(Watermark::new(30))
        );
        let update = t.handle_status(1, WatermarkStatus::Idle);
        assert_eq!(update.status, Some(WatermarkStatus::Idle));
        assert_eq!(t.status(), WatermarkStatus::Idle);
        let update = t.handle_status(0, WatermarkStatus::Active);
        assert_eq!(update.status, Some(WatermarkStatus::Active));
    }

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
            events in proptest::collection::vec((0usize..4, -100i64..100, 0u8..10), 0..200)
        ) {
            let mut t = WatermarkTracker::new(4);
            let mut sent = [i64::MIN; 4];
            let mut finished = [false; 4];
            let mut idle = [false; 4];
            let mut ever_idle = false;
            let mut last = Watermark::MIN;
            for (channel, ts, action) in events {
                let advanced = match action {
                    0 => {
                        finished[channel] = true;
                        t.handle_end_of_input(channel)
                    }
                    1 => {
                        idle[channel] = true;
                        ever_idle = true;
                        t.handle_status(channel, WatermarkStatus::Idle).watermark
                    }
                    2 => {
                        idle[channel] = false;
                        t.handle_status(channel, WatermarkStatus::Active).watermark
                    }
                    _ => {
                        if !finished[channel] && !idle[channel] {
                            sent[channel] = sent[channel].max(ts);
                        }
                        t.handle_watermark(channel, Watermark::new(ts))
                    }
                };
                if let Some(w) = advanced {
                    prop_assert!(w > last);
                    last = w;
                }
                prop_assert_eq!(t.current(), last);
                // Without idleness, never past any live channel. (A channel back from idleness
                // may lag until it catches up: it is not counted until then.)
                if !ever_idle {
                    for c in 0..4 {
                        if !finished[c] {
                            prop_assert!(t.current().timestamp <= sent[c]);
                        }
                    }
                }
            }
        }
    }
}
