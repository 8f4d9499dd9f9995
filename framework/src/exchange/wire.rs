//! The messages a remote channel needs: what crosses between two processes for one channel.
//!
//! A channel between subtasks on two nodes carries batches one way and credits the other. The
//! runtime's local messages (actor references, reply ports, oneshot senders) never cross a
//! process and stay in `runtime`; everything here is plain serde data, framed by
//! [`super::codec`].
//!
//! Not wired yet: the runtime still sends typed batches between actors in one process. The QUIC
//! transport will carry these messages.
//!
//! ## Invariants
//!
//! - A [`ChannelId`] names a channel within one attempt of a job run: a receiver drops
//!   messages of another attempt (as the JobManager does with its own messages), so a restart
//!   never mixes data or credit of the failed attempt into the new one.
//! - [`ChannelMessage::Data`] holds a whole batch frame from
//!   [`encode_batch`](super::encode_batch): the transport moves it without knowing the record
//!   type, and the receiving subtask decodes it with its input's type.

use serde::{Deserialize, Serialize};

use super::codec::{CodecError, decode_frame, encode_frame};

/// One channel of a job attempt, as both ends name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelId {
    /// The attempt of the job run (starting at 0, one more per restart).
    pub attempt: u32,
    /// The job-wide channel number in the execution graph.
    pub channel: u32,
}

/// What one end of a remote channel tells the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelMessage {
    /// Producer to consumer: one batch, spending one credit.
    Data {
        /// The channel.
        channel: ChannelId,
        /// The batch as one frame of [`encode_batch`](super::encode_batch).
        frame: Vec<u8>,
    },
    /// Consumer to producer: `credits` more batches may be sent.
    Credit {
        /// The channel.
        channel: ChannelId,
        /// Batches the consumer has room for, beyond those granted before.
        credits: u32,
    },
}

impl ChannelMessage {
    /// The channel this message belongs to.
    pub fn channel(&self) -> ChannelId {
        match self {
            Self::Data { channel, .. } | Self::Credit { channel, .. } => *channel,
        }
    }

    /// Appends this message to `out` as one frame.
    ///
    /// # Errors
    ///
    /// The frame would exceed [`FRAME_BYTES_MAX`](super::FRAME_BYTES_MAX); `out` is left as it
    /// was.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::exchange::{ChannelId, ChannelMessage};
    ///
    /// let credit = ChannelMessage::Credit {
    ///     channel: ChannelId { attempt: 0, channel: 3 },
    ///     credits: 2,
    /// };
    /// let mut frame = Vec::new();
    /// credit.encode(&mut frame)?;
    /// assert_eq!(ChannelMessage::decode(&frame)?, credit);
    /// # Ok::<(), eichhorn::exchange::CodecError>(())
    /// ```
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        encode_frame("channel message", self, out)
    }

    /// Decodes one frame holding a message; `frame` must be exactly that frame. A data
    /// message's batch is not decoded here (see [`decode_batch`](super::decode_batch)).
    ///
    /// # Errors
    ///
    /// See [`CodecError`]: truncated, empty, too large, unknown version, trailing bytes or an
    /// undecodable payload.
    pub fn decode(frame: &[u8]) -> Result<Self, CodecError> {
        decode_frame("channel message", frame)
    }
}
