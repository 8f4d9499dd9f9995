//! Credit-based flow control: the sender's outbox and the receiver's input gate.
//!
//! A receiver grants each of its input channels a fixed number of *credits*; one credit is room
//! for one batch in the receiver's queue. A sender transmits a batch only by spending a credit, and
//! the receiver returns the credit once it has consumed the batch. Memory between two subtasks is
//! therefore bounded by `credits_per_channel * batch_records_max` records per channel, whatever the
//! rates, and a slow consumer stops its producers, which stop their sources (back-pressure).
//!
//! Both halves are sans-IO state machines: the subtask actor feeds them messages and sends what
//! they produce.
//!
//! ## Call order
//!
//! Sender: [`CreditOutbox::push`] batches as the writers fill them; [`CreditOutbox::handle_credit`]
//! when a credit message arrives; drain [`CreditOutbox::poll_transmit`] after each step and send.
//! While [`CreditOutbox::is_backpressured`], the subtask processes no further input.
//!
//! Receiver: [`InputGate::handle_batch`] on arrival; [`InputGate::poll_batch`] to take the next
//! batch in arrival order; [`InputGate::consumed`] when it is fully processed, which says how many
//! credits to return to that channel's producer.
//!
//! ## Invariants
//!
//! - A sender never has more batches in flight on a channel than credits it was granted.
//! - Per channel, batches leave the outbox in the order they were pushed.
//! - A receiver never holds more unconsumed batches on a channel than it granted credits
//!   (a violation is a protocol bug and panics).
//!
//! ## Limit: the backlog of one step
//!
//! The sender's backlog is bounded by what one processing step emits, not by credits. A subtask
//! stops taking input as soon as a channel is backlogged, but only between runs: user functions
//! emit synchronously into a collector and cannot be suspended halfway, so everything the
//! current run produces (the operator's output run, then the writer's full batches in this
//! backlog) is held until credit returns. Normally that is a source poll's or an input batch's
//! worth of outputs; an input record with millions of outputs (a `flat_map` of a huge line)
//! buffers all of them here. Bounding that would need operators that can pause mid-record
//! (for example a `flat_map` whose output iterator the chain pulls from as credit allows).

use std::collections::VecDeque;

use super::element::ErasedBatch;

/// The sender half: per output channel, spendable credits and batches waiting for credit.
#[derive(Debug)]
pub struct CreditOutbox {
    channels: Vec<OutChannel>,
    /// Channels whose backlog is non-empty.
    backlogged_channels: usize,
    /// Batches that have a credit and can be sent now, in order.
    ready: VecDeque<(usize, ErasedBatch)>,
}

#[derive(Debug, Default)]
struct OutChannel {
    credits: u32,
    backlog: VecDeque<ErasedBatch>,
}

impl CreditOutbox {
    /// An outbox for `channel_count` output channels, none with credit yet.
    pub fn new(channel_count: usize) -> Self {
        Self {
            channels: (0..channel_count).map(|_| OutChannel::default()).collect(),
            backlogged_channels: 0,
            ready: VecDeque::new(),
        }
    }

    /// The number of output channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Queues a full (or flushed) batch for `channel`.
    pub fn push(&mut self, channel: usize, batch: ErasedBatch) {
        let slot = &mut self.channels[channel];
        if slot.credits > 0 && slot.backlog.is_empty() {
            slot.credits -= 1;
            self.ready.push_back((channel, batch));
        } else {
            if slot.backlog.is_empty() {
                self.backlogged_channels += 1;
            }
            slot.backlog.push_back(batch);
        }
    }

    /// Adds `credits` granted by the receiver of `channel`; releases waiting batches.
    pub fn handle_credit(&mut self, channel: usize, credits: u32) {
        #[cfg(feature = "sim-sabotage")]
        let credits = credits - u32::from(crate::sabotage::drop_this_credit() && credits > 0);
        let slot = &mut self.channels[channel];
        slot.credits = slot.credits.saturating_add(credits);
        let was_backlogged = !slot.backlog.is_empty();
        while slot.credits > 0 {
            let Some(batch) = slot.backlog.pop_front() else {
                break;
            };
            slot.credits -= 1;
            self.ready.push_back((channel, batch));
        }
        if was_backlogged && slot.backlog.is_empty() {
            self.backlogged_channels -= 1;
        }
    }

    /// The next batch that may be sent now, with its channel.
    pub fn poll_transmit(&mut self) -> Option<(usize, ErasedBatch)> {
        self.ready.pop_front()
    }

    /// Whether some channel has batches waiting for credit: the subtask must pause its input.
    #[inline]
    pub fn is_backpressured(&self) -> bool {
        self.backlogged_channels > 0
    }

    /// Batches waiting for credit, over every channel (live metrics; walks the channels).
    pub fn backlogged_batches(&self) -> usize {
        if self.backlogged_channels == 0 {
            return 0;
        }
        self.channels.iter().map(|c| c.backlog.len()).sum()
    }

    /// Whether nothing is waiting to be sent (neither ready nor backlogged).
    pub fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.backlogged_channels == 0
    }
}

/// The receiver half: batches queued in arrival order, bounded by the credits granted.
#[derive(Debug)]
pub struct InputGate {
    credits_per_channel: u32,
    /// Unconsumed batches per channel (queued or being processed).
    outstanding: Vec<u32>,
    queue: VecDeque<(usize, ErasedBatch)>,
}

impl InputGate {
    /// A gate over `channel_count` channels, each granted `credits_per_channel` credits.
    ///
    /// # Panics
    ///
    /// If `credits_per_channel` is zero: a channel without credit could never deliver.
    pub fn new(channel_count: usize, credits_per_channel: u32) -> Self {
        assert!(
            credits_per_channel > 0,
            "credits_per_channel must be positive"
        );
        Self {
            credits_per_channel,
            outstanding: vec![0; channel_count],
            queue: VecDeque::new(),
        }
    }

    /// The credits to grant each channel at start.
    pub fn initial_credits(&self) -> u32 {
        self.credits_per_channel
    }

    /// The number of input channels.
    pub fn channel_count(&self) -> usize {
        self.outstanding.len()
    }

    /// A batch arrived on `channel`.
    ///
    /// # Panics
    ///
    /// If the sender exceeded its credit: a flow-control bug, never caused by user input.
    pub fn handle_batch(&mut self, channel: usize, batch: ErasedBatch) {
        let outstanding = &mut self.outstanding[channel];
        assert!(
            *outstanding < self.credits_per_channel,
            "input channel {channel} received a batch without credit"
        );
        *outstanding += 1;
        self.queue.push_back((channel, batch));
    }

    /// The next batch to process, in arrival order.
    pub fn poll_batch(&mut self) -> Option<(usize, ErasedBatch)> {
        self.queue.pop_front()
    }

    /// The next batch, in arrival order, of a channel that is not `blocked` (barrier
    /// alignment holds blocked channels back; their batches stay queued, bounded by credits).
    pub fn poll_unblocked(&mut self, blocked: &[bool]) -> Option<(usize, ErasedBatch)> {
        let position = self
            .queue
            .iter()
            .position(|(channel, _)| !blocked.get(*channel).copied().unwrap_or(false))?;
        self.queue.remove(position)
    }

    /// A batch taken from `channel` has been fully processed; returns the credit to send back.
    pub fn consumed(&mut self, channel: usize) -> u32 {
        let outstanding = &mut self.outstanding[channel];
        assert!(
            *outstanding > 0,
            "consumed more batches than arrived on {channel}"
        );
        *outstanding -= 1;
        1
    }

    /// Batches queued, not yet taken for processing.
    pub fn queued_batches(&self) -> usize {
        self.queue.len()
    }

    /// Whether no batch is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{ChannelBatch, Record, StreamElement};
    use proptest::prelude::*;

    fn batch(tag: u32) -> ErasedBatch {
        let mut batch = ChannelBatch::with_capacity(1);
        batch.push(StreamElement::Record(Record::new(tag)));
        ErasedBatch::new::<u32>(batch)
    }

    fn tag(batch: ErasedBatch) -> u32 {
        batch.downcast::<u32>().expect("u32 batch").records[0].value
    }

    proptest! {
        /// Random interleavings of pushes and credits: never more in flight than granted, FIFO
        /// per channel, and everything is sent once enough credit arrived.
        #[test]
        fn outbox_respects_credits(ops in proptest::collection::vec((0usize..3, any::<bool>(), 1u32..3), 0..300)) {
            let mut outbox = CreditOutbox::new(3);
            let mut granted = [0u32; 3];
            let mut sent = [0u32; 3];
            let mut pushed = [0u32; 3];
            for (channel, is_push, credits) in ops {
                if is_push {
                    outbox.push(channel, batch(pushed[channel]));
                    pushed[channel] += 1;
                } else {
                    outbox.handle_credit(channel, credits);
                    granted[channel] += credits;
                }
                while let Some((c, b)) = outbox.poll_transmit() {
                    prop_assert_eq!(tag(b), sent[c], "FIFO per channel");
                    sent[c] += 1;
                }
                for (c, channel) in outbox.channels.iter().enumerate() {
                    prop_assert!(sent[c] <= granted[c]);
                    let waiting = pushed[c] - sent[c];
                    prop_assert_eq!(waiting > 0, !channel.backlog.is_empty());
                }
                prop_assert_eq!(outbox.is_backpressured(), (0..3).any(|c| pushed[c] > sent[c]));
            }
            for (c, pushed) in pushed.iter().enumerate() {
                outbox.handle_credit(c, *pushed);
            }
            while let Some((c, _)) = outbox.poll_transmit() {
                sent[c] += 1;
            }
            prop_assert_eq!(sent, pushed);
            prop_assert!(outbox.is_idle());
        }
    }

    #[test]
    fn gate_bounds_outstanding_batches() {
        let mut gate = InputGate::new(2, 2);
        gate.handle_batch(0, batch(0));
        gate.handle_batch(1, batch(1));
        gate.handle_batch(0, batch(2));
        let (c, b) = gate.poll_batch().expect("batch");
        assert_eq!((c, tag(b)), (0, 0));
        assert_eq!(gate.consumed(0), 1);
        gate.handle_batch(0, batch(3));
        let order: Vec<_> =
            std::iter::from_fn(|| gate.poll_batch().map(|(c, b)| (c, tag(b)))).collect();
        assert_eq!(order, vec![(1, 1), (0, 2), (0, 3)]);
    }

    #[test]
    #[should_panic(expected = "without credit")]
    fn gate_rejects_batches_beyond_credit() {
        let mut gate = InputGate::new(1, 1);
        gate.handle_batch(0, batch(0));
        gate.handle_batch(0, batch(1));
    }
}
