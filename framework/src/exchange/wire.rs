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
//! - [`ChannelMessageRef`] is the same message borrowing its batch frame, with the same bytes
//!   on the wire (postcard writes a byte vector and a byte slice alike). The data path uses it,
//!   so a batch frame is copied once into the message frame (a `memcpy`) and read in place on
//!   the other side, instead of being pushed and popped byte by byte as a `Vec<u8>`.

use serde::{Deserialize, Serialize};

use super::codec::{CodecError, decode_frame_borrowed, encode_frame};

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
        self.as_ref().encode(out)
    }

    /// Decodes one frame holding a message; `frame` must be exactly that frame. A data
    /// message's batch is not decoded here (see [`decode_batch`](super::decode_batch)).
    ///
    /// # Errors
    ///
    /// See [`CodecError`]: truncated, empty, too large, unknown version, trailing bytes or an
    /// undecodable payload.
    pub fn decode(frame: &[u8]) -> Result<Self, CodecError> {
        ChannelMessageRef::decode(frame).map(ChannelMessageRef::to_owned)
    }

    /// This message, borrowing its batch frame.
    pub fn as_ref(&self) -> ChannelMessageRef<'_> {
        match self {
            Self::Data { channel, frame } => ChannelMessageRef::Data {
                channel: *channel,
                frame,
            },
            Self::Credit { channel, credits } => ChannelMessageRef::Credit {
                channel: *channel,
                credits: *credits,
            },
        }
    }
}

/// A [`ChannelMessage`] that borrows its batch frame: the same message and the same bytes on
/// the wire, without copying the batch frame into or out of a `Vec` of its own.
///
/// # Examples
///
/// ```
/// use eichhorn::exchange::{ChannelId, ChannelMessage, ChannelMessageRef};
///
/// let channel = ChannelId { attempt: 1, channel: 4 };
/// let batch_frame = [5, 0, 0, 0, 1, 0, 0, 0, 0];
/// let mut frame = Vec::new();
/// ChannelMessageRef::Data { channel, frame: &batch_frame }.encode(&mut frame)?;
/// // The owned message reads the same bytes.
/// let owned = ChannelMessage::decode(&frame)?;
/// assert_eq!(owned, ChannelMessage::Data { channel, frame: batch_frame.to_vec() });
/// // The borrowed one points into `frame`.
/// let ChannelMessageRef::Data { frame: inner, .. } = ChannelMessageRef::decode(&frame)? else {
///     unreachable!("a data message")
/// };
/// assert_eq!(inner, &batch_frame[..]);
/// # Ok::<(), eichhorn::exchange::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelMessageRef<'a> {
    /// Producer to consumer: one batch, spending one credit.
    Data {
        /// The channel.
        channel: ChannelId,
        /// The batch as one frame of [`encode_batch`](super::encode_batch).
        #[serde(borrow, serialize_with = "serialize_bytes")]
        frame: &'a [u8],
    },
    /// Consumer to producer: `credits` more batches may be sent.
    Credit {
        /// The channel.
        channel: ChannelId,
        /// Batches the consumer has room for, beyond those granted before.
        credits: u32,
    },
}

/// Writes `bytes` as a byte string (serde writes a slice as a sequence of `u8`s, one call per
/// byte; postcard lays out both the same way, a varint length and the bytes, so the wire does not
/// change).
fn serialize_bytes<S: serde::Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

impl<'a> ChannelMessageRef<'a> {
    /// The channel this message belongs to.
    pub fn channel(&self) -> ChannelId {
        match self {
            Self::Data { channel, .. } | Self::Credit { channel, .. } => *channel,
        }
    }

    /// Appends this message to `out` as one frame, the same bytes as the owned
    /// [`ChannelMessage::encode`] writes.
    ///
    /// # Errors
    ///
    /// The frame would exceed [`FRAME_BYTES_MAX`](super::FRAME_BYTES_MAX); `out` is left as it
    /// was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        encode_frame("channel message", self, out)
    }

    /// Decodes one frame holding a message, borrowing a data message's batch frame from
    /// `frame`; `frame` must be exactly that frame.
    ///
    /// # Errors
    ///
    /// As [`ChannelMessage::decode`].
    pub fn decode(frame: &'a [u8]) -> Result<Self, CodecError> {
        decode_frame_borrowed("channel message", frame)
    }

    /// The owned message (copies the batch frame).
    pub fn to_owned(self) -> ChannelMessage {
        match self {
            Self::Data { channel, frame } => ChannelMessage::Data {
                channel,
                frame: frame.to_vec(),
            },
            Self::Credit { channel, credits } => ChannelMessage::Credit { channel, credits },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The message as serde and postcard lay out the owned enum on their own (a `Vec<u8>` as a
    /// sequence of bytes), framed by hand: the oracle the borrowed encoder must match.
    fn oracle_frame(message: &ChannelMessage) -> Vec<u8> {
        let payload = postcard::to_allocvec(message).expect("encodes");
        let mut frame = ((payload.len() + 1) as u32).to_le_bytes().to_vec();
        frame.push(super::super::FRAME_VERSION);
        frame.extend_from_slice(&payload);
        frame
    }

    proptest! {
        /// The borrowed message writes the bytes of the owned one, and each reads the other's.
        #[test]
        fn borrowed_and_owned_messages_share_the_wire(
            attempt in any::<u32>(),
            channel in any::<u32>(),
            data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..400)),
            credits in any::<u32>(),
        ) {
            let channel = ChannelId { attempt, channel };
            let owned = match data {
                Some(frame) => ChannelMessage::Data { channel, frame },
                None => ChannelMessage::Credit { channel, credits },
            };
            let expected = oracle_frame(&owned);
            let mut frame = Vec::new();
            owned.as_ref().encode(&mut frame).expect("encodes");
            prop_assert_eq!(&frame, &expected);
            let mut again = Vec::new();
            owned.encode(&mut again).expect("encodes");
            prop_assert_eq!(&again, &expected);
            prop_assert_eq!(ChannelMessageRef::decode(&expected).expect("decodes"), owned.as_ref());
            prop_assert_eq!(ChannelMessage::decode(&expected).expect("decodes"), owned);
        }
    }
}
