//! What travels through a channel: records and the control elements between them.
//!
//! Every type here except [`ErasedBatch`] is serde, so a batch can cross a process boundary
//! ([`super::codec`]); in one process batches stay typed and are never serialised.

use std::any::Any;

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointBarrier;
use crate::time::{Watermark, WatermarkStatus};

/// A record: a value and its event-time timestamp (milliseconds), if it has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<T> {
    /// The user value.
    pub value: T,
    /// Event time in milliseconds, set by the source or a timestamp assigner.
    pub timestamp: Option<i64>,
}

impl<T> Record<T> {
    /// A record without a timestamp.
    pub fn new(value: T) -> Self {
        Self {
            value,
            timestamp: None,
        }
    }

    /// A record with an event-time timestamp.
    pub fn with_timestamp(value: T, timestamp: i64) -> Self {
        Self {
            value,
            timestamp: Some(timestamp),
        }
    }
}

/// One element of a stream, in channel order: records, watermarks and checkpoint barriers
/// share the channel so that each control element separates exactly the records before it from
/// those after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamElement<T> {
    /// A data record.
    Record(Record<T>),
    /// Event-time progress.
    Watermark(Watermark),
    /// The stream became idle or active again.
    WatermarkStatus(WatermarkStatus),
    /// A checkpoint barrier.
    Barrier(CheckpointBarrier),
    /// The producer on this channel will send nothing more.
    EndOfInput,
}

/// A control element: what travels between records besides records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Event-time progress.
    Watermark(Watermark),
    /// The stream became idle or active again.
    WatermarkStatus(WatermarkStatus),
    /// A checkpoint barrier.
    Barrier(CheckpointBarrier),
    /// The producer on this channel will send nothing more.
    EndOfInput,
}

/// A run of stream elements as it crosses a channel: the records, and the control elements with
/// their position (a control element at position `i` comes after `records[..i]` and before
/// `records[i..]`). Keeping records contiguous lets a chain take them as one `Vec` without
/// copying when no control element interrupts them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelBatch<T> {
    /// The records, in order.
    pub records: Vec<Record<T>>,
    /// Control elements with their position in `records`, positions non-decreasing.
    pub controls: Vec<(usize, Control)>,
}

impl<T> ChannelBatch<T> {
    /// An empty batch with room for `capacity` records.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            records: Vec::with_capacity(capacity),
            controls: Vec::new(),
        }
    }

    /// Appends an element.
    pub fn push(&mut self, element: StreamElement<T>) {
        match element {
            StreamElement::Record(record) => self.records.push(record),
            StreamElement::Watermark(w) => self.push_control(Control::Watermark(w)),
            StreamElement::WatermarkStatus(s) => self.push_control(Control::WatermarkStatus(s)),
            StreamElement::Barrier(b) => self.push_control(Control::Barrier(b)),
            StreamElement::EndOfInput => self.push_control(Control::EndOfInput),
        }
    }

    /// Appends a control element after the records so far.
    pub fn push_control(&mut self, control: Control) {
        self.controls.push((self.records.len(), control));
    }

    /// The number of elements (records and control elements).
    pub fn len(&self) -> usize {
        self.records.len() + self.controls.len()
    }

    /// Whether the batch holds no element.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.controls.is_empty()
    }

    /// Splits the batch into runs of records and single control elements, in stream order. Each
    /// record is moved once; a batch without control elements is one run, without copying.
    pub fn into_segments(self) -> std::collections::VecDeque<Segment<T>> {
        let mut segments = std::collections::VecDeque::with_capacity(2 * self.controls.len() + 1);
        if self.controls.is_empty() {
            if !self.records.is_empty() {
                segments.push_back(Segment::Records(self.records));
            }
            return segments;
        }
        let mut records = self.records.into_iter();
        let mut taken = 0;
        for (position, control) in self.controls {
            if position > taken {
                let run: Vec<Record<T>> = records.by_ref().take(position - taken).collect();
                taken = position;
                segments.push_back(Segment::Records(run));
            }
            segments.push_back(Segment::Control(control));
        }
        let rest: Vec<Record<T>> = records.collect();
        if !rest.is_empty() {
            segments.push_back(Segment::Records(rest));
        }
        segments
    }

    /// The elements in stream order.
    pub fn into_elements(self) -> Vec<StreamElement<T>> {
        let mut elements = Vec::with_capacity(self.len());
        for segment in self.into_segments() {
            match segment {
                Segment::Records(records) => {
                    elements.extend(records.into_iter().map(StreamElement::Record));
                }
                Segment::Control(Control::Watermark(w)) => {
                    elements.push(StreamElement::Watermark(w))
                }
                Segment::Control(Control::WatermarkStatus(s)) => {
                    elements.push(StreamElement::WatermarkStatus(s));
                }
                Segment::Control(Control::Barrier(b)) => elements.push(StreamElement::Barrier(b)),
                Segment::Control(Control::EndOfInput) => elements.push(StreamElement::EndOfInput),
            }
        }
        elements
    }
}

/// A piece of a [`ChannelBatch`] in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment<T> {
    /// Consecutive records.
    Records(Vec<Record<T>>),
    /// One control element.
    Control(Control),
}

/// A [`ChannelBatch`] with its element type erased, as it crosses between subtasks.
///
/// In-process channels carry typed values (no serialisation); the receiving head downcasts once
/// per batch, never per record.
#[derive(Debug)]
pub struct ErasedBatch {
    elements: Box<dyn Any + Send>,
    records: u32,
    /// The in-memory size of the records (their shallow size), for the bytes in/out metrics.
    bytes: u64,
}

impl ErasedBatch {
    /// Wraps a typed batch.
    pub fn new<T: Send + 'static>(batch: ChannelBatch<T>) -> Self {
        let records = batch.records.len() as u32;
        let bytes = (batch.records.len() * std::mem::size_of::<Record<T>>()) as u64;
        Self {
            elements: Box::new(batch),
            records,
            bytes,
        }
    }

    /// The number of data records (not control elements) in the batch.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// The in-memory size of the batch's records in bytes (their shallow size: heap data a
    /// record points to is not counted), for the bytes in/out metrics.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The typed batch, or `None` if the batch holds another type (a wiring bug).
    pub fn downcast<T: 'static>(self) -> Option<ChannelBatch<T>> {
        self.elements.downcast::<ChannelBatch<T>>().ok().map(|b| *b)
    }

    /// The typed batch, borrowed, or `None` if the batch holds another type (a wiring bug).
    pub fn downcast_ref<T: 'static>(&self) -> Option<&ChannelBatch<T>> {
        self.elements.downcast_ref::<ChannelBatch<T>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn element(code: u8, i: i64) -> StreamElement<i64> {
        match code % 4 {
            0 | 1 => StreamElement::Record(Record::new(i)),
            2 => StreamElement::Watermark(Watermark::new(i)),
            3 if i % 2 == 0 => StreamElement::WatermarkStatus(WatermarkStatus::Idle),
            _ => StreamElement::EndOfInput,
        }
    }

    proptest! {
        /// Pushing elements and reading them back, directly or by segments, keeps stream order.
        #[test]
        fn batches_keep_stream_order(codes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let elements: Vec<StreamElement<i64>> =
                codes.iter().enumerate().map(|(i, c)| element(*c, i as i64)).collect();
            let mut batch = ChannelBatch::with_capacity(4);
            for e in elements.clone() {
                batch.push(e);
            }
            prop_assert_eq!(batch.len(), elements.len());
            prop_assert_eq!(batch.clone().into_elements(), elements);
            for segment in batch.into_segments() {
                if let Segment::Records(run) = segment {
                    prop_assert!(!run.is_empty());
                }
            }
        }
    }
}
