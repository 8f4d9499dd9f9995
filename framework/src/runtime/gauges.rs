//! Channel occupancy gauges: records sent but not yet consumed, per channel, and the maximum ever
//! seen. They make the flow-control bound observable (`JobResult::max_queued_records`).
//!
//! Updated once per batch (never per record) with relaxed atomics: they are statistics, not
//! synchronisation.

use std::sync::atomic::{AtomicU64, Ordering};

/// Per-channel queued-record counters of one job.
#[derive(Debug)]
pub(crate) struct ChannelGauges {
    queued: Vec<AtomicU64>,
    max_queued: Vec<AtomicU64>,
}

impl ChannelGauges {
    pub(crate) fn new(channel_count: usize) -> Self {
        Self {
            queued: (0..channel_count).map(|_| AtomicU64::new(0)).collect(),
            max_queued: (0..channel_count).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A batch of `records` was sent on `channel`.
    pub(crate) fn sent(&self, channel: usize, records: u32) {
        let now = self.queued[channel].fetch_add(u64::from(records), Ordering::Relaxed)
            + u64::from(records);
        self.max_queued[channel].fetch_max(now, Ordering::Relaxed);
    }

    /// A batch of `records` on `channel` was taken for processing.
    pub(crate) fn consumed(&self, channel: usize, records: u32) {
        self.queued[channel].fetch_sub(u64::from(records), Ordering::Relaxed);
    }

    /// The largest number of records ever queued on any one channel.
    pub(crate) fn max_queued(&self) -> u64 {
        self.max_queued
            .iter()
            .map(|m| m.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }
}
