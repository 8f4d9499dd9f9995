//! The at-least-once barrier tracker of a multi-input subtask.
//!
//! It counts, per checkpoint, on how many input channels the barrier has arrived, without
//! blocking any channel, and reports the checkpoint once every live channel delivered it (Flink's
//! `CheckpointBarrierTracker`). Records after a barrier on a fast channel may be processed before
//! the checkpoint is taken, hence at-least-once; the aligned (exactly-once) variant blocks those
//! channels instead.
//!
//! ## Invariants
//!
//! - A checkpoint is reported at most once, and only after all live channels delivered it.
//! - Reporting checkpoint `n` drops the pending counts of older checkpoints (subsumed).

use std::collections::BTreeMap;

use super::{CheckpointBarrier, CheckpointId};

/// Counts barrier arrivals per checkpoint.
#[derive(Debug, Clone)]
pub struct BarrierTracker {
    live_channels: usize,
    pending: BTreeMap<CheckpointId, (CheckpointBarrier, usize)>,
    last_reported: Option<CheckpointId>,
}

impl BarrierTracker {
    /// A tracker over `channel_count` live channels.
    pub fn new(channel_count: usize) -> Self {
        Self {
            live_channels: channel_count,
            pending: BTreeMap::new(),
            last_reported: None,
        }
    }

    /// A barrier arrived on one channel; returns it when all live channels delivered it.
    pub fn handle_barrier(&mut self, barrier: CheckpointBarrier) -> Option<CheckpointBarrier> {
        if self.last_reported.is_some_and(|last| barrier.id <= last) {
            return None;
        }
        let entry = self.pending.entry(barrier.id).or_insert((barrier, 0));
        entry.1 += 1;
        if entry.1 >= self.live_channels {
            return self.report(barrier.id);
        }
        None
    }

    /// A channel ended: it no longer needs to deliver barriers. Returns a checkpoint that became
    /// complete by it, if any (the newest one).
    pub fn handle_end_of_input(&mut self) -> Option<CheckpointBarrier> {
        self.live_channels = self.live_channels.saturating_sub(1);
        let complete = self
            .pending
            .iter()
            .rev()
            .find(|(_, (_, count))| *count >= self.live_channels)
            .map(|(id, _)| *id);
        complete.and_then(|id| self.report(id))
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
        assert_eq!(t.handle_barrier(barrier(1)), None);
        assert_eq!(t.handle_barrier(barrier(1)), None);
        assert_eq!(t.handle_barrier(barrier(1)), Some(barrier(1)));
        assert_eq!(t.handle_barrier(barrier(1)), None, "reported once");
    }

    #[test]
    fn newer_checkpoint_subsumes_older() {
        let mut t = BarrierTracker::new(2);
        assert_eq!(t.handle_barrier(barrier(1)), None);
        assert_eq!(t.handle_barrier(barrier(2)), None);
        assert_eq!(t.handle_barrier(barrier(2)), Some(barrier(2)));
        assert_eq!(
            t.handle_barrier(barrier(1)),
            None,
            "older than the last reported"
        );
    }

    #[test]
    fn ended_channel_completes_pending_checkpoint() {
        let mut t = BarrierTracker::new(2);
        assert_eq!(t.handle_barrier(barrier(4)), None);
        assert_eq!(t.handle_end_of_input(), Some(barrier(4)));
    }
}
