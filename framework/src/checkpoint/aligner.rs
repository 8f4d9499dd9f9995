//! The exactly-once barrier aligner of a multi-input subtask (Flink's aligned checkpoints).
//!
//! When checkpoint `n`'s barrier arrives on a channel, that channel is **blocked**: its later
//! batches stay queued (bounded by its credits) until the barrier has arrived on every live
//! channel. Then the checkpoint is reported (the subtask snapshots and forwards the barrier) and
//! all channels are unblocked. So the snapshot reflects exactly the records before the barrier
//! on every input: exactly-once state.
//!
//! ## Invariants
//!
//! - A checkpoint is reported at most once, after every live channel delivered its barrier.
//! - A blocked channel is never polled; every channel is unblocked once alignment ends.
//! - A barrier of a newer checkpoint abandons the alignment of an older one (its barriers can
//!   no longer all arrive in order); stale barriers are ignored.
//! - An ended channel counts as aligned.

use super::{CheckpointBarrier, CheckpointId};

/// Aligns barriers over a subtask's input channels.
#[derive(Debug, Clone)]
pub struct BarrierAligner {
    blocked: Vec<bool>,
    ended: Vec<bool>,
    current: Option<CheckpointBarrier>,
    last_reported: Option<CheckpointId>,
}

impl BarrierAligner {
    /// An aligner over `channel_count` channels.
    pub fn new(channel_count: usize) -> Self {
        Self {
            blocked: vec![false; channel_count],
            ended: vec![false; channel_count],
            current: None,
            last_reported: None,
        }
    }

    /// Whether `channel` waits for the others to deliver the current barrier.
    pub fn is_blocked(&self, channel: usize) -> bool {
        self.blocked.get(channel).copied().unwrap_or(false)
    }

    /// The blocked flags of all channels.
    pub fn blocked(&self) -> &[bool] {
        &self.blocked
    }

    /// The checkpoint being aligned, if any.
    pub fn aligning(&self) -> Option<CheckpointId> {
        self.current.map(|b| b.id)
    }

    /// A barrier arrived on `channel`; returns it once every live channel delivered it.
    pub fn handle_barrier(
        &mut self,
        channel: usize,
        barrier: CheckpointBarrier,
    ) -> Option<CheckpointBarrier> {
        if self.last_reported.is_some_and(|last| barrier.id <= last) {
            return None;
        }
        #[cfg(feature = "sim-sabotage")]
        if crate::sabotage::is(crate::sabotage::Sabotage::BarrierBeforeAlignment) {
            // The bug: report (snapshot, forward) at the first barrier, block nothing.
            self.current = None;
            self.last_reported = Some(barrier.id);
            return Some(barrier);
        }
        match self.current {
            Some(current) if barrier.id < current.id => return None,
            Some(current) if barrier.id > current.id => {
                // The older checkpoint cannot align any more: start over with the newer one.
                self.blocked.iter_mut().for_each(|b| *b = false);
                self.current = Some(barrier);
            }
            Some(_) => {}
            None => self.current = Some(barrier),
        }
        if let Some(flag) = self.blocked.get_mut(channel) {
            *flag = true;
        }
        self.try_complete()
    }

    /// `channel` ended: it counts as aligned from now on. Returns a checkpoint completed by it.
    pub fn handle_end_of_input(&mut self, channel: usize) -> Option<CheckpointBarrier> {
        if let Some(flag) = self.ended.get_mut(channel) {
            *flag = true;
        }
        if let Some(flag) = self.blocked.get_mut(channel) {
            *flag = false;
        }
        self.try_complete()
    }

    fn try_complete(&mut self) -> Option<CheckpointBarrier> {
        let current = self.current?;
        let aligned = self
            .blocked
            .iter()
            .zip(&self.ended)
            .all(|(blocked, ended)| *blocked || *ended);
        if !aligned {
            return None;
        }
        self.blocked.iter_mut().for_each(|b| *b = false);
        self.current = None;
        self.last_reported = Some(current.id);
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointKind;
    use proptest::prelude::*;

    fn barrier(id: u64) -> CheckpointBarrier {
        CheckpointBarrier {
            id: CheckpointId(id),
            kind: CheckpointKind::Checkpoint,
        }
    }

    #[test]
    fn blocks_until_all_channels_delivered() {
        let mut a = BarrierAligner::new(3);
        assert_eq!(a.handle_barrier(1, barrier(1)), None);
        assert!(a.is_blocked(1) && !a.is_blocked(0));
        assert_eq!(a.handle_barrier(0, barrier(1)), None);
        assert_eq!(a.handle_barrier(2, barrier(1)), Some(barrier(1)));
        assert!(a.blocked().iter().all(|b| !b));
    }

    #[test]
    fn single_channel_completes_at_once() {
        let mut a = BarrierAligner::new(1);
        assert_eq!(a.handle_barrier(0, barrier(7)), Some(barrier(7)));
        assert_eq!(a.handle_barrier(0, barrier(7)), None, "reported once");
    }

    #[test]
    fn newer_barrier_abandons_older_alignment() {
        let mut a = BarrierAligner::new(2);
        assert_eq!(a.handle_barrier(0, barrier(1)), None);
        assert_eq!(a.handle_barrier(1, barrier(2)), None);
        assert!(!a.is_blocked(0) && a.is_blocked(1));
        assert_eq!(a.handle_barrier(0, barrier(1)), None, "stale");
        assert_eq!(a.handle_barrier(0, barrier(2)), Some(barrier(2)));
    }

    #[test]
    fn ended_channel_counts_as_aligned() {
        let mut a = BarrierAligner::new(2);
        assert_eq!(a.handle_barrier(0, barrier(3)), None);
        assert_eq!(a.handle_end_of_input(1), Some(barrier(3)));
        assert_eq!(a.handle_barrier(0, barrier(4)), Some(barrier(4)));
    }

    proptest! {
        /// Every channel delivers barriers 1..=n in order, interleaved arbitrarily: every
        /// checkpoint is reported exactly once, in order, and only when all channels sent it.
        #[test]
        fn in_order_barriers_all_complete(
            channels in 1usize..5,
            n in 1u64..6,
            order in proptest::collection::vec(0usize..5, 0..200),
        ) {
            let mut a = BarrierAligner::new(channels);
            let mut next = vec![1u64; channels];
            let mut reported = Vec::new();
            let mut schedule: Vec<usize> = order.into_iter().map(|c| c % channels).collect();
            // Then drain every channel in turn.
            for c in 0..channels { for _ in 0..n { schedule.push(c); } }
            for c in schedule {
                if next[c] > n || a.is_blocked(c) { continue; }
                let id = next[c];
                next[c] += 1;
                if let Some(done) = a.handle_barrier(c, barrier(id)) {
                    prop_assert!(next.iter().all(|k| *k > done.id.0), "all channels sent {}", done.id.0);
                    reported.push(done.id.0);
                }
            }
            // Blocked channels still hold barriers: keep going until all delivered.
            loop {
                let mut progressed = false;
                for (c, sent) in next.iter_mut().enumerate() {
                    if *sent <= n && !a.is_blocked(c) {
                        let id = *sent;
                        *sent += 1;
                        progressed = true;
                        if let Some(done) = a.handle_barrier(c, barrier(id)) {
                            reported.push(done.id.0);
                        }
                    }
                }
                if !progressed { break; }
            }
            prop_assert_eq!(reported, (1..=n).collect::<Vec<_>>());
        }
    }
}
