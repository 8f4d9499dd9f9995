//! The record writer: the leaf of a chain that cuts a stream into batches for other subtasks.
//!
//! It partitions records over its channels, appends them to a per-channel pending batch, and
//! hands a batch to the task's credit outbox when it is full, before a barrier, at end of input or
//! when the linger timer flushes. Watermarks go to every channel in band (they do not flush: a
//! watermark per record must not cost a batch per record).

use super::partitioner::{ChannelSelector, SelectChannels, SelectContext, SplitMixRng};
use crate::checkpoint::{CheckpointBarrier, CheckpointId};
use crate::graph::PartitionKind;
use crate::operator::{
    Chained, ChannelBatch, Control, ErasedBatch, NodeId, OpenContext, OperatorCounters,
    OperatorError, Record, TaskCx,
};
use crate::time::{Watermark, WatermarkStatus};

/// Writes one edge's records into its channels' batches.
pub(crate) struct RecordWriter<T> {
    /// The consumer node, for error messages of custom partitioners.
    target: NodeId,
    kind: PartitionKind,
    selector: Option<ChannelSelector<T>>,
    /// Index of this writer's first channel in the task's outbox.
    first_channel: usize,
    pending: Vec<ChannelBatch<T>>,
    batch_records_max: usize,
    max_parallelism: u32,
    next_channel: u32,
    rng: SplitMixRng,
    /// Scratch space for the channels the selector picks for a run (hash and custom edges).
    selected: Vec<u32>,
}

impl<T> RecordWriter<T> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        target: NodeId,
        kind: PartitionKind,
        selector: Option<ChannelSelector<T>>,
        first_channel: usize,
        channel_count: usize,
        batch_records_max: usize,
        max_parallelism: u32,
        subtask_index: u32,
        seed: u64,
    ) -> Self {
        assert!(
            channel_count > 0,
            "a record writer needs at least one channel"
        );
        assert!(batch_records_max > 0);
        Self {
            target,
            kind,
            selector,
            first_channel,
            pending: (0..channel_count)
                .map(|_| ChannelBatch::with_capacity(0))
                .collect(),
            batch_records_max,
            max_parallelism,
            // Flink starts round-robin at a random channel; we start at the subtask index so
            // producers spread their first records without needing randomness.
            next_channel: subtask_index % channel_count as u32,
            rng: SplitMixRng::new(seed),
            selected: Vec::new(),
        }
    }

    fn channel_count(&self) -> u32 {
        self.pending.len() as u32
    }

    #[inline]
    fn push_record(&mut self, channel: usize, record: Record<T>, cx: &mut TaskCx)
    where
        T: Send + 'static,
    {
        let pending = &mut self.pending[channel];
        if pending.is_empty() {
            pending.records.reserve_exact(self.batch_records_max);
            cx.has_partial_batches = true;
        }
        pending.records.push(record);
        if pending.len() >= self.batch_records_max {
            self.emit(channel, cx);
        }
    }

    fn emit(&mut self, channel: usize, cx: &mut TaskCx)
    where
        T: Send + 'static,
    {
        if self.pending[channel].is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.pending[channel], ChannelBatch::with_capacity(0));
        cx.outbox
            .push(self.first_channel + channel, ErasedBatch::new(batch));
    }

    fn emit_all(&mut self, cx: &mut TaskCx)
    where
        T: Send + 'static,
    {
        for channel in 0..self.pending.len() {
            self.emit(channel, cx);
        }
    }

    /// Appends a control element to every channel (each channel must see every control element).
    fn broadcast_control(&mut self, control: Control, cx: &mut TaskCx)
    where
        T: Send + 'static,
    {
        for channel in 0..self.pending.len() {
            let pending = &mut self.pending[channel];
            if pending.is_empty() {
                cx.has_partial_batches = true;
            }
            pending.push_control(control);
            if pending.len() >= self.batch_records_max {
                self.emit(channel, cx);
            }
        }
    }

    #[inline]
    fn route(&mut self, record: Record<T>, cx: &mut TaskCx) -> Result<(), ()>
    where
        T: Clone + Send + 'static,
    {
        let channels = self.channel_count();
        let channel = match self.kind {
            PartitionKind::Forward | PartitionKind::Global => 0,
            PartitionKind::Rebalance | PartitionKind::Rescale => {
                let channel = self.next_channel;
                self.next_channel = if channel + 1 == channels {
                    0
                } else {
                    channel + 1
                };
                channel
            }
            PartitionKind::Shuffle => self.rng.below(channels),
            PartitionKind::Broadcast => {
                for channel in 1..channels as usize {
                    self.push_record(channel, record.clone(), cx);
                }
                0
            }
            PartitionKind::Hash | PartitionKind::Custom => {
                unreachable!("hash and custom edges route whole runs (`route_selected`)")
            }
        };
        self.push_record(channel as usize, record, cx);
        Ok(())
    }

    /// Routes a run over a hash or custom edge: the selector picks the channels of the whole
    /// run in one call, then each record goes to its channel, in order. With one channel the
    /// run is appended in bulk. If the user partitioner fails on a record, the records before
    /// it are routed and the task fails.
    #[inline]
    fn route_selected(&mut self, records: Vec<Record<T>>, cx: &mut TaskCx)
    where
        T: Send + 'static,
    {
        let Some(selector) = &self.selector else {
            unreachable!("hash and custom writers are built with a selector");
        };
        let select = SelectContext {
            channels: self.channel_count(),
            max_parallelism: self.max_parallelism,
        };
        let mut selected = std::mem::take(&mut self.selected);
        selected.clear();
        let result = selector.select_channels(&records, select, &mut selected);
        debug_assert!(selected.len() <= records.len());
        if self.pending.len() == 1 {
            let mut records = records;
            records.truncate(selected.len());
            self.append_run(records, cx);
        } else {
            for (record, &channel) in records.into_iter().zip(&selected) {
                self.push_record(channel as usize, record, cx);
            }
        }
        self.selected = selected;
        if let Err(message) = result {
            cx.fail(self.target, message);
        }
    }

    /// Appends a run to the only channel, cutting batches exactly where pushing the records one
    /// by one would.
    ///
    /// Each record is moved exactly once, from the run into its batch: the run is consumed from
    /// the front through one iterator, so the cost is linear in the run's length however many
    /// batches it fills (one input record of a `flat_map` may emit millions of records in one
    /// run). The tail that fits into the current batch is moved in bulk (`extend` from a
    /// `vec::IntoIter` is one copy of the remaining slice).
    fn append_run(&mut self, records: Vec<Record<T>>, cx: &mut TaskCx)
    where
        T: Send + 'static,
    {
        let mut records = records.into_iter();
        while records.len() > 0 {
            let pending = &mut self.pending[0];
            if pending.is_empty() {
                pending.records.reserve_exact(self.batch_records_max);
                cx.has_partial_batches = true;
            }
            // A batch is handed on as soon as it is full, so there is room for one more.
            debug_assert!(pending.len() < self.batch_records_max);
            let room = self.batch_records_max - pending.len();
            if records.len() <= room {
                // The rest fits: one bulk copy, and the run is done.
                pending.records.extend(records);
                if pending.len() >= self.batch_records_max {
                    self.emit(0, cx);
                }
                return;
            }
            // Never `split_off` the rest of the run here: that copies the whole remainder once
            // per batch, quadratic in the run's length.
            pending.records.extend(records.by_ref().take(room));
            self.emit(0, cx);
        }
    }
}

impl<T: Clone + Send + 'static> Chained<T> for RecordWriter<T> {
    fn open(&mut self, _ctx: &OpenContext) -> Result<(), OperatorError> {
        Ok(())
    }

    fn process_batch(&mut self, records: Vec<Record<T>>, cx: &mut TaskCx) {
        if matches!(self.kind, PartitionKind::Hash | PartitionKind::Custom) {
            self.route_selected(records, cx);
            return;
        }
        for record in records {
            if self.route(record, cx).is_err() {
                return;
            }
        }
    }

    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx) {
        // Live metrics (issue 17): the subtask's output watermark.
        cx.output_watermark = cx.output_watermark.max(watermark.timestamp);
        self.broadcast_control(Control::Watermark(watermark), cx);
    }

    fn process_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx) {
        self.broadcast_control(Control::WatermarkStatus(status), cx);
    }

    fn on_processing_time(&mut self, _now_ms: i64, _cx: &mut TaskCx) {}

    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.broadcast_control(Control::Barrier(barrier), cx);
        self.emit_all(cx);
    }

    /// A writer holds no state: records in its partial batches were already counted by the
    /// operators before it, and the barrier that follows them carries them to the consumer.
    fn snapshot_state(&mut self, _barrier: CheckpointBarrier, _cx: &mut TaskCx) {}

    fn notify_checkpoint_complete(&mut self, _id: CheckpointId, _cx: &mut TaskCx) {}

    fn end_of_input(&mut self, cx: &mut TaskCx) {
        self.broadcast_control(Control::EndOfInput, cx);
        self.emit_all(cx);
    }

    fn flush(&mut self, cx: &mut TaskCx) {
        self.emit_all(cx);
    }

    fn close(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }

    fn metrics(&self, _out: &mut Vec<(NodeId, OperatorCounters)>) {}
}

/// The channel selector of `key_by`: key -> key group -> consumer subtask.
pub(crate) fn key_group_selector<T, K, F>(key_selector: F) -> ChannelSelector<T>
where
    T: 'static,
    K: crate::state::StableHash + 'static,
    F: Fn(&T) -> K + Send + Sync + 'static,
{
    std::sync::Arc::new(KeyGroupSelector { key_selector })
}

/// See [`key_group_selector`].
struct KeyGroupSelector<F> {
    key_selector: F,
}

impl<T, K, F> SelectChannels<T> for KeyGroupSelector<F>
where
    K: crate::state::StableHash,
    F: Fn(&T) -> K + Send + Sync,
{
    fn select_channels(
        &self,
        records: &[Record<T>],
        cx: SelectContext,
        channels: &mut Vec<u32>,
    ) -> Result<(), String> {
        if cx.channels == 1 {
            // Every key group belongs to the one consumer. The key is still extracted, as with
            // more consumers (a selector may panic on bad input); a plain field read compiles
            // away.
            for record in records {
                let _ = (self.key_selector)(&record.value);
            }
            channels.resize(channels.len() + records.len(), 0);
            return Ok(());
        }
        channels.extend(records.iter().map(|record| {
            let key = (self.key_selector)(&record.value);
            let group = crate::state::key_group_for_key(&key, cx.max_parallelism);
            crate::state::subtask_for_key_group(group, cx.max_parallelism, cx.channels)
        }));
        Ok(())
    }
}

/// The channel selector of `partition_custom`: a user function of the key and channel count.
pub(crate) fn custom_selector<T, K, P, F>(partitioner: P, key_selector: F) -> ChannelSelector<T>
where
    T: 'static,
    K: 'static,
    P: Fn(&K, u32) -> u32 + Send + Sync + 'static,
    F: Fn(&T) -> K + Send + Sync + 'static,
{
    std::sync::Arc::new(CustomSelector {
        partitioner,
        key_selector,
    })
}

/// See [`custom_selector`].
struct CustomSelector<P, F> {
    partitioner: P,
    key_selector: F,
}

impl<T, K, P, F> SelectChannels<T> for CustomSelector<P, F>
where
    P: Fn(&K, u32) -> u32 + Send + Sync,
    F: Fn(&T) -> K + Send + Sync,
{
    fn select_channels(
        &self,
        records: &[Record<T>],
        cx: SelectContext,
        channels: &mut Vec<u32>,
    ) -> Result<(), String> {
        for record in records {
            let channel = (self.partitioner)(&(self.key_selector)(&record.value), cx.channels);
            if channel >= cx.channels {
                return Err(format!(
                    "custom partitioner returned channel {channel}, but there are only {} channels",
                    cx.channels
                ));
            }
            channels.push(channel);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::CreditOutbox;
    use crate::runtime::test_alloc::allocated_bytes_during;

    const BATCH_RECORDS_MAX: usize = 64;
    const MAX_PARALLELISM: u32 = 128;

    /// The writer of a `key_by(|v| *v)` edge over `channels` consumers.
    fn key_by_writer(channels: usize) -> RecordWriter<u64> {
        RecordWriter::new(
            NodeId(1),
            PartitionKind::Hash,
            Some(key_group_selector(|value: &u64| *value)),
            0,
            channels,
            BATCH_RECORDS_MAX,
            MAX_PARALLELISM,
            0,
            7,
        )
    }

    fn task(channels: usize) -> TaskCx {
        TaskCx::new(CreditOutbox::new(channels), NodeId(0))
    }

    fn run(values: std::ops::Range<u64>) -> Vec<Record<u64>> {
        values.map(Record::new).collect()
    }

    /// Grants unlimited credit and takes every batch the writer handed on: per channel, the
    /// batches' values in order.
    fn sent(cx: &mut TaskCx) -> Vec<Vec<Vec<u64>>> {
        let channels = cx.outbox.channel_count();
        let mut sent = vec![Vec::new(); channels];
        for channel in 0..channels {
            cx.outbox.handle_credit(channel, u32::MAX);
        }
        while let Some((channel, batch)) = cx.outbox.poll_transmit() {
            let batch = batch.downcast::<u64>().expect("a batch of u64");
            assert!(batch.controls.is_empty());
            sent[channel].push(batch.records.into_iter().map(|r| r.value).collect());
        }
        sent
    }

    /// One input record of a `flat_map` can emit a run of any length: it is cut into full
    /// batches, in order, exactly where pushing its records one by one would cut them, whatever
    /// was pending before it.
    #[test]
    fn a_long_run_is_cut_into_full_batches_in_order() {
        const TOTAL: u64 = 100_010;
        for channels in [1, 3] {
            let mut writer = key_by_writer(channels);
            let mut cx = task(channels);
            writer.process_batch(run(0..10), &mut cx);
            writer.process_batch(run(10..TOTAL), &mut cx);
            let mut batches = sent(&mut cx);
            let before_flush: usize = batches.iter().map(Vec::len).sum();
            writer.flush(&mut cx);
            for (channel, flushed) in sent(&mut cx).into_iter().enumerate() {
                batches[channel].extend(flushed);
            }

            let mut expected = vec![Vec::new(); channels];
            for value in 0..TOTAL {
                let group = crate::state::key_group_for_key(&value, MAX_PARALLELISM);
                let channel =
                    crate::state::subtask_for_key_group(group, MAX_PARALLELISM, channels as u32);
                expected[channel as usize].push(value);
            }
            let full: usize = expected.iter().map(|v| v.len() / BATCH_RECORDS_MAX).sum();
            assert_eq!(before_flush, full, "{channels} channels: full batches");
            for (channel, batches) in batches.iter().enumerate() {
                let values: Vec<u64> = batches.iter().flatten().copied().collect();
                // Not `assert_eq!` on the vectors: a failure would print 100,000 numbers.
                assert!(
                    values == expected[channel],
                    "channel {channel} of {channels}"
                );
                assert!(batches.iter().all(|b| !b.is_empty()));
                assert!(batches.iter().all(|b| b.len() <= BATCH_RECORDS_MAX));
            }
        }
    }

    /// Appending a run to the only channel moves each record once: the bytes allocated are
    /// those of the batches (plus the selector's scratch), linear in the run. Splitting the rest
    /// of the run off once per batch allocated (and copied) about `run² / (2 * batch)` records,
    /// which made a record with millions of outputs take seconds per million.
    #[test]
    fn appending_a_long_run_moves_each_record_once() {
        const RUN: u64 = 100_000;
        let mut writer = key_by_writer(1);
        let mut cx = task(1);
        // Something pending, so that the run's batches do not start at its first record.
        writer.process_batch(run(0..10), &mut cx);
        let records = run(10..10 + RUN);
        let (bytes, ()) = allocated_bytes_during(|| writer.process_batch(records, &mut cx));
        let record_bytes = RUN * std::mem::size_of::<Record<u64>>() as u64;
        assert!(
            bytes <= 2 * record_bytes,
            "appending {RUN} records allocated {bytes} bytes; the records are {record_bytes}"
        );
        writer.flush(&mut cx);
        let values: Vec<u64> = sent(&mut cx).concat().concat();
        assert!(values.into_iter().eq(0..10 + RUN));
    }
}
