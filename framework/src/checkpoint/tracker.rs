//! The at-least-once barrier tracker of a multi-input subtask.
//!
//! It records, per checkpoint, on which input channels the barrier has arrived, without
//! blocking any channel, and reports the checkpoint once every live channel delivered it (Flink's
//! `CheckpointBarrierTracker`). Records after a barrier on a fast channel may be processed before
//! the checkpoint is taken, hence at-least-once; the aligned (exactly-once) variant blocks those
//! channels instead.
//!
//! ## Invariants
//!
//! - A checkpoint is reported at most once, and only after every channel delivered its barrier
//!   or ended. Arrivals are recorded per channel, not counted: a channel that delivered the
//!   barrier and then ended must not stand in for a live channel that has not delivered it yet
//!   (its records before the barrier would be missing from the snapshot).
//! - Reporting checkpoint `n` drops the pending arrivals of older checkpoints (subsumed).

use std::collections::BTreeMap;

use super::{CheckpointBarrier, CheckpointId};

/// Records barrier arrivals per checkpoint and channel.
#[derive(Debug, Clone)]
pub struct BarrierTracker {
    ended: Vec<bool>,
    /// Per pending checkpoint, its barrier and which channels delivered it.
    pending: BTreeMap<CheckpointId, (CheckpointBarrier, Vec<bool>)>,
    last_reported: Option<CheckpointId>,
}

impl BarrierTracker {
    /// A tracker over `channel_count` live channels.
    pub fn new(channel_count: usize) -> Self {
        Self {
            ended: vec![false; channel_count],
            pending: BTreeMap::new(),
            last_reported: None,
        }
    }

    /// A barrier arrived on `channel`; returns it once every channel delivered it or ended.
    pub fn handle_barrier(
        &mut self,
        channel: usize,
        barrier: CheckpointBarrier,
    ) -> Option<CheckpointBarrier> {
        if self.last_reported.is_some_and(|last| barrier.id <= last) {
            return None;
        }
        let channels = self.ended.len();
        let (_, delivered) = self
            .pending
            .entry(barrier.id)
            .or_insert_with(|| (barrier, vec![false; channels]));
        if let Some(flag) = delivered.get_mut(channel) {
            *flag = true;
        }
        if self.is_complete(barrier.id) {
            return self.report(barrier.id);
        }
        None
    }

    /// `channel` ended: it no longer needs to deliver barriers. Returns a checkpoint that became
    /// complete by it, if any (the newest one).
    pub fn handle_end_of_input(&mut self, channel: usize) -> Option<CheckpointBarrier> {
        if let Some(flag) = self.ended.get_mut(channel) {
            *flag = true;
        }
        let complete = self
            .pending
            .keys()
            .rev()
            .copied()
            .find(|id| self.is_complete(*id));
        complete.and_then(|id| self.report(id))
    }

    fn is_complete(&self, id: CheckpointId) -> bool {
        self.pending.get(&id).is_some_and(|(_, delivered)| {
            delivered
                .iter()
                .zip(&self.ended)
                .all(|(delivered, ended)| *delivered || *ended)
        })
    }

    fn report(&mut self, id: CheckpointId) -> Option<CheckpointBarrier> {
        let (barrier, _) = self.pending.remove(&id)?;
        self.pending.retain(|older, _| *older > id);
        self.last_reported = Some(id);
        Some(barrier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointKind;

    fn barrier(id: u64) -> CheckpointBarrier {
        CheckpointBarrier {
            id: CheckpointId(id),
            kind: CheckpointKind::Checkpoint,
        }
    }

    #[test]
    fn reports_when_all_channels_delivered() {
        let mut t = BarrierTracker::new(3);
        assert_eq!(t.handle_barrier(0, barrier(1)), None);
        assert_eq!(t.handle_barrier(2, barrier(1)), None);
        assert_eq!(t.handle_barrier(1, barrier(1)), Some(barrier(1)));
        assert_eq!(t.handle_barrier(1, barrier(1)), None, "reported once");
    }

    #[test]
    fn newer_checkpoint_subsumes_older() {
        let mut t = BarrierTracker::new(2);
        assert_eq!(t.handle_barrier(0, barrier(1)), None);
        assert_eq!(t.handle_barrier(0, barrier(2)), None);
        assert_eq!(t.handle_barrier(1, barrier(2)), Some(barrier(2)));
        assert_eq!(
            t.handle_barrier(1, barrier(1)),
            None,
            "older than the last reported"
        );
    }

    #[test]
    fn ended_channel_completes_pending_checkpoint() {
        let mut t = BarrierTracker::new(2);
        assert_eq!(t.handle_barrier(0, barrier(4)), None);
        assert_eq!(t.handle_end_of_input(1), Some(barrier(4)));
        assert_eq!(t.handle_barrier(0, barrier(5)), Some(barrier(5)));
    }

    #[test]
    fn a_channel_that_delivered_and_ended_does_not_stand_in_for_a_live_one() {
        let mut t = BarrierTracker::new(2);
        assert_eq!(t.handle_barrier(0, barrier(3)), None);
        assert_eq!(
            t.handle_end_of_input(0),
            None,
            "channel 1 has not delivered 3"
        );
        assert_eq!(t.handle_barrier(1, barrier(3)), Some(barrier(3)));
    }
}
