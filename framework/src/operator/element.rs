//! What travels through a channel: records and the control elements between them.

use std::any::Any;

use crate::checkpoint::CheckpointBarrier;
use crate::time::Watermark;

/// A record: a value and its event-time timestamp (milliseconds), if it has one.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
pub enum StreamElement<T> {
    /// A data record.
    Record(Record<T>),
    /// Event-time progress.
    Watermark(Watermark),
    /// A checkpoint barrier.
    Barrier(CheckpointBarrier),
    /// The producer on this channel will send nothing more.
    EndOfInput,
}

/// A batch of `StreamElement<T>` with its element type erased, as it crosses between subtasks.
///
/// In-process channels carry typed values (no serialisation); the receiving head downcasts once
/// per batch, never per record.
#[derive(Debug)]
pub struct ErasedBatch {
    elements: Box<dyn Any + Send>,
    records: u32,
}

impl ErasedBatch {
    /// Wraps a typed batch holding `records` data records.
    pub fn new<T: Send + 'static>(elements: Vec<StreamElement<T>>, records: u32) -> Self {
        Self {
            elements: Box::new(elements),
            records,
        }
    }

    /// The number of data records (not control elements) in the batch.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// The typed elements, or `None` if the batch holds another type (a wiring bug).
    pub fn downcast<T: 'static>(self) -> Option<Vec<StreamElement<T>>> {
        self.elements
            .downcast::<Vec<StreamElement<T>>>()
            .ok()
            .map(|b| *b)
    }
}
