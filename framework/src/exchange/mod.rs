//! The exchange layer: what travels between subtasks and under which rules.
//!
//! - [`element`]: the stream elements (records, watermarks, watermark status, barriers, end of
//!   input) and the [`ChannelBatch`] that carries a run of them across a channel;
//! - [`credit`]: credit-based flow control, the sender's [`CreditOutbox`] and the receiver's
//!   [`InputGate`] (sans-IO state machines);
//! - [`codec`]: the frame format of a batch or wire message that crosses a process boundary,
//!   and [`BatchCodec`], a port's codec for a caller that does not name the record type;
//! - [`wire`]: the messages a remote channel needs (a batch frame, a credit grant).
//!
//! The layer knows nothing of actors, sockets or the job graph: the runtime feeds it and carries
//! out what it produces, in one process or across nodes.
//!
//! ## Invariants
//!
//! - Per channel, elements arrive in the order they were sent; a control element separates
//!   exactly the records before it from those after it.
//! - A sender never has more batches in flight on a channel than the receiver granted credits.
//! - In one process a batch is a typed value in an [`ErasedBatch`], moved without copying or
//!   serialisation; only a remote channel encodes it ([`encode_batch`]).

pub mod codec;
pub mod credit;
pub mod element;
pub mod wire;

pub use codec::{
    BatchCodec, CodecError, FRAME_BYTES_MAX, FRAME_HEADER_BYTES, FRAME_VERSION, decode_batch,
    encode_batch, frame_len,
};
pub use credit::{CreditOutbox, InputGate};
pub use element::{ChannelBatch, Control, ErasedBatch, Record, Segment, StreamElement};
pub use wire::{ChannelId, ChannelMessage, ChannelMessageRef};
