//! Frames: how a batch or a wire message crosses a process boundary.
//!
//! ```text
//! frame = length: u32, little endian | version: u8 | payload: postcard
//!         `length` counts the version byte and the payload, not itself
//! ```
//!
//! The length prefix lets a reader cut frames out of a byte stream (a QUIC stream per channel)
//! without understanding them ([`frame_len`]); the version byte lets two builds that disagree
//! on the payload's layout say so instead of misreading each other. Payloads are postcard: a
//! batch ([`encode_batch`]) or a message of [`super::wire`]. A [`BatchCodec`] does the same for
//! a port whose record type its caller does not name (the runtime sees only [`ErasedBatch`]es).
//!
//! Only remote channels encode. In one process a batch stays a typed value inside an
//! [`ErasedBatch`] and never passes through here.
//!
//! ## Invariants
//!
//! - Decoding never panics: truncated, extended or garbled bytes give a [`CodecError`] saying what
//!   is wrong (a garbled payload that still decodes gives a value, which the receiver's own
//!   checks then judge, as for any peer).
//! - A decoded [`ChannelBatch`] keeps the batch invariant: control positions non-decreasing and
//!   none past the last record. The in-process path relies on it, so a frame that breaks it is
//!   refused here.
//! - No frame is larger than [`FRAME_BYTES_MAX`], on either side.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::element::{ChannelBatch, ErasedBatch};

/// The frame format this build writes and reads.
pub const FRAME_VERSION: u8 = 1;

/// Bytes before the payload: the `u32` length and the version byte.
pub const FRAME_HEADER_BYTES: usize = 5;

/// The largest frame, header included: bounds what a reader buffers for one frame. A batch of
/// `batch_records_max` records must fit; 64 MiB leaves 16 KiB per record at the default 4096.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(FRAME_HEADER_BYTES == size_of::<u32>() + size_of::<u8>());

/// A frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the header or the declared length.
    #[error("truncated frame: got {got} of {expected} bytes")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes the frame needs (the header, or the header plus its declared length).
        expected: usize,
    },
    /// The declared length is zero, so not even the version byte is there.
    #[error("empty frame: its length prefix is 0, with no room for the version byte")]
    Empty,
    /// The frame is (or would be) larger than [`FRAME_BYTES_MAX`].
    #[error("frame of {bytes} bytes exceeds the limit of {FRAME_BYTES_MAX} bytes")]
    TooLarge {
        /// The frame's size, header included.
        bytes: usize,
    },
    /// A version this build does not speak.
    #[error("unknown frame version {found}: this build speaks version {FRAME_VERSION}")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
    },
    /// Bytes after the end the length prefix declares.
    #[error("{extra} trailing bytes after a frame of {expected} bytes")]
    TrailingBytes {
        /// The frame's size, header included.
        expected: usize,
        /// Bytes beyond it.
        extra: usize,
    },
    /// The payload did not decode as the expected type, or left bytes over inside the frame.
    #[error("undecodable {what} payload: {reason}")]
    Payload {
        /// What was expected (`"batch"`, `"channel message"`).
        what: &'static str,
        /// postcard's error, or the bytes left over.
        reason: String,
    },
    /// The value could not be serialised (a user type's `Serialize` failed).
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// postcard's error.
        source: postcard::Error,
    },
    /// A decoded batch whose control elements are out of order or past its records.
    #[error(
        "invalid batch: control element {index} at position {position} \
         (previous at {previous}, {records} records)"
    )]
    InvalidBatch {
        /// The control element's index in the batch's control list.
        index: usize,
        /// Its position among the records.
        position: usize,
        /// The position of the control element before it (0 for the first).
        previous: usize,
        /// The number of records in the batch.
        records: usize,
    },
    /// A [`BatchCodec`] was handed a batch of another record type (a wiring bug).
    #[error("cannot encode a batch of another type with the codec of {expected}")]
    WrongType {
        /// The codec's record type.
        expected: &'static str,
    },
}

/// Appends `batch` to `out` as one frame.
///
/// # Errors
///
/// The record type's `Serialize` failed, or the frame would exceed [`FRAME_BYTES_MAX`]; `out`
/// is left as it was.
///
/// # Examples
///
/// ```
/// use eichhorn::exchange::{ChannelBatch, Control, Record, decode_batch, encode_batch};
/// use eichhorn::time::Watermark;
///
/// let mut batch = ChannelBatch::with_capacity(2);
/// batch.records.push(Record::with_timestamp("a".to_string(), 7));
/// batch.push_control(Control::Watermark(Watermark::new(7)));
/// let mut frame = Vec::new();
/// encode_batch(&batch, &mut frame)?;
/// assert_eq!(decode_batch::<String>(&frame)?, batch);
/// # Ok::<(), eichhorn::exchange::CodecError>(())
/// ```
pub fn encode_batch<T: Serialize>(
    batch: &ChannelBatch<T>,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    encode_frame("batch", batch, out)
}

/// Decodes one frame holding a batch; `frame` must be exactly that frame.
///
/// # Errors
///
/// See [`CodecError`]: truncated, empty, too large, unknown version, trailing bytes, an
/// undecodable payload, or control elements out of order.
pub fn decode_batch<T: DeserializeOwned>(frame: &[u8]) -> Result<ChannelBatch<T>, CodecError> {
    let batch: ChannelBatch<T> = decode_frame("batch", frame)?;
    let records = batch.records.len();
    let mut previous = 0;
    for (index, &(position, _)) in batch.controls.iter().enumerate() {
        if position < previous || position > records {
            return Err(CodecError::InvalidBatch {
                index,
                position,
                previous,
                records,
            });
        }
        previous = position;
    }
    Ok(batch)
}

/// The codec of one record type with the type erased: encodes and decodes the [`ErasedBatch`]es
/// of a port for a caller that does not name the type (the runtime, a transport).
///
/// Made where the type is known (a port of the job graph), used where it is not. Frames are those
/// of [`encode_batch`] and [`decode_batch`], so both ends may use either.
///
/// # Examples
///
/// ```
/// use eichhorn::exchange::{BatchCodec, ChannelBatch, ErasedBatch, Record};
///
/// let codec = BatchCodec::of::<u64>();
/// let mut batch = ChannelBatch::with_capacity(1);
/// batch.records.push(Record::new(42u64));
/// let mut frame = Vec::new();
/// codec.encode(&ErasedBatch::new(batch.clone()), &mut frame)?;
/// let decoded = codec.decode(&frame)?;
/// assert_eq!(decoded.records(), 1);
/// assert_eq!(decoded.downcast::<u64>(), Some(batch));
/// # Ok::<(), eichhorn::exchange::CodecError>(())
/// ```
#[derive(Clone, Copy)]
pub struct BatchCodec {
    type_name: &'static str,
    encode: fn(&ErasedBatch, &mut Vec<u8>) -> Result<(), CodecError>,
    decode: fn(&[u8]) -> Result<ErasedBatch, CodecError>,
}

impl BatchCodec {
    /// The codec of batches of `T`.
    pub fn of<T: Serialize + DeserializeOwned + Send + 'static>() -> Self {
        Self {
            type_name: std::any::type_name::<T>(),
            encode: |batch, out| match batch.downcast_ref::<T>() {
                Some(batch) => encode_batch(batch, out),
                None => Err(CodecError::WrongType {
                    expected: std::any::type_name::<T>(),
                }),
            },
            decode: |frame| decode_batch::<T>(frame).map(ErasedBatch::new),
        }
    }

    /// The record type, for messages.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Appends `batch` to `out` as one frame.
    ///
    /// # Errors
    ///
    /// As [`encode_batch`], or [`CodecError::WrongType`] when `batch` holds another type.
    pub fn encode(&self, batch: &ErasedBatch, out: &mut Vec<u8>) -> Result<(), CodecError> {
        (self.encode)(batch, out)
    }

    /// Decodes one frame holding a batch of this codec's type.
    ///
    /// # Errors
    ///
    /// As [`decode_batch`].
    pub fn decode(&self, frame: &[u8]) -> Result<ErasedBatch, CodecError> {
        (self.decode)(frame)
    }
}

impl std::fmt::Debug for BatchCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchCodec")
            .field("type_name", &self.type_name)
            .finish()
    }
}

/// The size of the frame that starts `prefix`, header included, once its header is there:
/// `Ok(None)` while fewer than [`FRAME_HEADER_BYTES`] bytes have arrived.
///
/// # Errors
///
/// The header declares an empty frame, one larger than [`FRAME_BYTES_MAX`], or an unknown
/// version: the stream is not speaking this protocol and should be closed.
pub fn frame_len(prefix: &[u8]) -> Result<Option<usize>, CodecError> {
    let Some(header) = prefix.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let declared = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if declared == 0 {
        return Err(CodecError::Empty);
    }
    let bytes = declared + size_of::<u32>();
    if bytes > FRAME_BYTES_MAX {
        return Err(CodecError::TooLarge { bytes });
    }
    let version = header[4];
    if version != FRAME_VERSION {
        return Err(CodecError::UnknownVersion { found: version });
    }
    Ok(Some(bytes))
}

/// Appends `message` to `out` as one frame; `what` names it in errors.
pub(crate) fn encode_frame<M: Serialize + ?Sized>(
    what: &'static str,
    message: &M,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; size_of::<u32>()]);
    out.push(FRAME_VERSION);
    if let Err(source) = postcard::serialize_with_flavor(message, Append(out)) {
        out.truncate(start);
        return Err(CodecError::Encode { what, source });
    }
    let bytes = out.len() - start;
    if bytes > FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(CodecError::TooLarge { bytes });
    }
    // Cannot truncate: FRAME_BYTES_MAX fits a u32 (asserted at compile time).
    let declared = (bytes - size_of::<u32>()) as u32;
    out[start..start + size_of::<u32>()].copy_from_slice(&declared.to_le_bytes());
    Ok(())
}

/// Decodes exactly one frame holding an `M`; `what` names it in errors.
pub(crate) fn decode_frame<M: DeserializeOwned>(
    what: &'static str,
    frame: &[u8],
) -> Result<M, CodecError> {
    decode_frame_borrowed(what, frame)
}

/// Decodes exactly one frame holding an `M` that may borrow from `frame` (a byte slice inside
/// it is not copied); `what` names it in errors.
pub(crate) fn decode_frame_borrowed<'de, M: Deserialize<'de>>(
    what: &'static str,
    frame: &'de [u8],
) -> Result<M, CodecError> {
    let Some(expected) = frame_len(frame)? else {
        return Err(CodecError::Truncated {
            got: frame.len(),
            expected: FRAME_HEADER_BYTES,
        });
    };
    if frame.len() < expected {
        return Err(CodecError::Truncated {
            got: frame.len(),
            expected,
        });
    }
    if frame.len() > expected {
        return Err(CodecError::TrailingBytes {
            expected,
            extra: frame.len() - expected,
        });
    }
    let payload = &frame[FRAME_HEADER_BYTES..];
    match postcard::take_from_bytes::<'de, M>(payload) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(CodecError::Payload {
            what,
            reason: format!(
                "{} of its {} bytes left over after the value",
                rest.len(),
                payload.len()
            ),
        }),
        Err(error) => Err(CodecError::Payload {
            what,
            reason: error.to_string(),
        }),
    }
}

/// Lets postcard append to a borrowed buffer, so a failed encoding can be cut off again.
///
/// A postcard flavor rather than `Extend<u8>` (what `postcard::to_extend` takes), so that a long
/// byte string (a batch frame inside a data message) is one `memcpy` instead of an iterator
/// over its bytes.
struct Append<'a>(&'a mut Vec<u8>);

/// Slices up to this long go through `Vec::extend` (one reservation, then a short loop the
/// compiler sees whole): a varint (at most 10 bytes) is cheaper that way than a call to
/// `memcpy`. Callgrind: pushing them byte by byte cost 20 more instructions per record.
const APPEND_PUSH_BYTES_MAX: usize = 10;

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.extend([byte]);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() <= APPEND_PUSH_BYTES_MAX {
            self.0.extend(bytes.iter().copied());
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointBarrier, CheckpointId, CheckpointKind};
    use crate::exchange::{ChannelId, ChannelMessage, Control, Record, StreamElement};
    use crate::time::{Watermark, WatermarkStatus};
    use proptest::prelude::*;

    /// Every kind of element, with records of varying size.
    fn element() -> impl Strategy<Value = StreamElement<String>> {
        prop_oneof![
            (".{0,12}", proptest::option::of(any::<i64>())).prop_map(|(value, timestamp)| {
                StreamElement::Record(Record { value, timestamp })
            }),
            any::<i64>().prop_map(|t| StreamElement::Watermark(Watermark::new(t))),
            any::<bool>().prop_map(|idle| StreamElement::WatermarkStatus(if idle {
                WatermarkStatus::Idle
            } else {
                WatermarkStatus::Active
            })),
            (any::<u64>(), any::<bool>()).prop_map(|(id, savepoint)| {
                StreamElement::Barrier(CheckpointBarrier {
                    id: CheckpointId(id),
                    kind: if savepoint {
                        CheckpointKind::Savepoint
                    } else {
                        CheckpointKind::Checkpoint
                    },
                })
            }),
            Just(StreamElement::EndOfInput),
        ]
    }

    fn batch_of(elements: &[StreamElement<String>]) -> ChannelBatch<String> {
        let mut batch = ChannelBatch::with_capacity(elements.len());
        for element in elements.iter().cloned() {
            batch.push(element);
        }
        batch
    }

    fn frame_of(elements: &[StreamElement<String>]) -> Vec<u8> {
        let mut frame = Vec::new();
        encode_batch(&batch_of(elements), &mut frame).expect("a batch of strings encodes");
        frame
    }

    proptest! {
        /// Every element kind, in any order, comes back as it was sent.
        #[test]
        fn batches_round_trip(elements in proptest::collection::vec(element(), 0..40)) {
            let batch = batch_of(&elements);
            let mut frame = vec![0xAB];
            encode_batch(&batch, &mut frame).expect("encodes");
            prop_assert_eq!(frame_len(&frame[1..]).expect("valid header"), Some(frame.len() - 1));
            let decoded = decode_batch::<String>(&frame[1..]).expect("decodes");
            prop_assert_eq!(decoded.into_elements(), elements);
        }

        /// A frame cut short anywhere is an error that says it is truncated.
        #[test]
        fn truncated_frames_fail(elements in proptest::collection::vec(element(), 0..20), cut in any::<proptest::sample::Index>()) {
            let frame = frame_of(&elements);
            let cut = cut.index(frame.len());
            let error = decode_batch::<String>(&frame[..cut]).expect_err("a cut frame");
            prop_assert!(matches!(error, CodecError::Truncated { got, .. } if got == cut), "{error}");
        }

        /// A frame with bytes after it is an error that counts them.
        #[test]
        fn extended_frames_fail(elements in proptest::collection::vec(element(), 0..20), extra in proptest::collection::vec(any::<u8>(), 1..16)) {
            let mut frame = frame_of(&elements);
            let expected = frame.len();
            frame.extend_from_slice(&extra);
            let error = decode_batch::<String>(&frame).expect_err("an extended frame");
            prop_assert!(matches!(error, CodecError::TrailingBytes { expected: e, extra: x } if e == expected && x == extra.len()), "{error}");
        }

        /// A garbled byte never panics: in the header it is always an error; in the payload it is
        /// an error or a batch that keeps the batch invariant.
        #[test]
        fn garbled_frames_never_panic(elements in proptest::collection::vec(element(), 0..20), at in any::<proptest::sample::Index>(), flip in 1u8..=255) {
            let mut frame = frame_of(&elements);
            let at = at.index(frame.len());
            frame[at] ^= flip;
            match decode_batch::<String>(&frame) {
                Ok(batch) => {
                    prop_assert!(at >= FRAME_HEADER_BYTES, "a garbled header decoded");
                    // The invariant holds, so splitting the batch cannot panic.
                    let _ = batch.into_elements();
                }
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }

        /// Arbitrary bytes are an error or a value, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_batch::<String>(&bytes);
            let _ = ChannelMessage::decode(&bytes);
        }

        /// Channel messages round-trip, and a stream of frames cuts back into them.
        #[test]
        fn messages_round_trip(messages in proptest::collection::vec((any::<u32>(), any::<u32>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32))), 0..8)) {
            let messages: Vec<ChannelMessage> = messages
                .into_iter()
                .map(|(attempt, channel, data)| {
                    let channel = ChannelId { attempt, channel };
                    match data {
                        Some(frame) => ChannelMessage::Data { channel, frame },
                        None => ChannelMessage::Credit { channel, credits: attempt },
                    }
                })
                .collect();
            let mut stream = Vec::new();
            for message in &messages {
                message.encode(&mut stream).expect("encodes");
            }
            let mut rest = &stream[..];
            let mut decoded = Vec::new();
            while let Some(len) = frame_len(rest).expect("valid header") {
                decoded.push(ChannelMessage::decode(&rest[..len]).expect("decodes"));
                rest = &rest[len..];
            }
            prop_assert!(rest.is_empty());
            prop_assert_eq!(decoded, messages);
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let frame = frame_of(&[StreamElement::Record(Record::new("abc".to_string()))]);
        let message = |bytes: &[u8]| {
            decode_batch::<String>(bytes)
                .expect_err("an invalid frame")
                .to_string()
        };
        assert_eq!(message(&frame[..3]), "truncated frame: got 3 of 5 bytes");
        assert_eq!(
            message(&frame[..7]),
            format!("truncated frame: got 7 of {} bytes", frame.len())
        );
        let mut long = frame.clone();
        long.extend_from_slice(&[1, 2]);
        assert_eq!(
            message(&long),
            format!("2 trailing bytes after a frame of {} bytes", frame.len())
        );
        let mut versioned = frame.clone();
        versioned[4] = 9;
        assert_eq!(
            message(&versioned),
            "unknown frame version 9: this build speaks version 1"
        );
        assert_eq!(
            message(&[0, 0, 0, 0, 1]),
            "empty frame: its length prefix is 0, with no room for the version byte"
        );
        assert_eq!(
            message(&[0xff, 0xff, 0xff, 0xff, 1]),
            "frame of 4294967299 bytes exceeds the limit of 67108864 bytes"
        );
        // A string with an invalid UTF-8 byte.
        let garbled = [4, 0, 0, 0, 1, 1, 1, 0xff];
        assert!(
            message(&garbled).starts_with("undecodable batch payload: "),
            "{}",
            message(&garbled)
        );
        // A payload that decodes with a byte left over inside the frame.
        let mut spare = frame.clone();
        spare.push(0);
        spare[0] += 1;
        assert_eq!(
            message(&spare),
            format!(
                "undecodable batch payload: 1 of its {} bytes left over after the value",
                frame.len() - FRAME_HEADER_BYTES + 1
            )
        );
    }

    #[test]
    fn the_erased_codec_round_trips_and_refuses_other_types() {
        let elements = [
            StreamElement::Record(Record::with_timestamp("x".to_string(), 3)),
            StreamElement::Watermark(Watermark::new(3)),
            StreamElement::EndOfInput,
        ];
        let codec = BatchCodec::of::<String>();
        let mut frame = Vec::new();
        codec
            .encode(&ErasedBatch::new(batch_of(&elements)), &mut frame)
            .expect("encodes");
        assert_eq!(
            frame,
            frame_of(&elements),
            "the same frames as encode_batch"
        );
        let decoded = codec.decode(&frame).expect("decodes");
        assert_eq!(decoded.records(), 1);
        let decoded = decoded.downcast::<String>().expect("a batch of strings");
        assert_eq!(decoded.into_elements(), elements);

        let other = ErasedBatch::new(ChannelBatch::<u64>::with_capacity(0));
        let error = codec.encode(&other, &mut frame).expect_err("another type");
        assert_eq!(
            error.to_string(),
            "cannot encode a batch of another type with the codec of alloc::string::String"
        );
        assert_eq!(codec.type_name(), "alloc::string::String");
    }

    #[test]
    fn batches_with_misplaced_controls_are_refused() {
        let out_of_order = ChannelBatch {
            records: vec![Record::new(1u8), Record::new(2)],
            controls: vec![(2, Control::EndOfInput), (1, Control::EndOfInput)],
        };
        let past_end = ChannelBatch {
            records: vec![Record::new(1u8)],
            controls: vec![(2, Control::EndOfInput)],
        };
        for (batch, expected) in [
            (
                out_of_order,
                "invalid batch: control element 1 at position 1 (previous at 2, 2 records)",
            ),
            (
                past_end,
                "invalid batch: control element 0 at position 2 (previous at 0, 1 records)",
            ),
        ] {
            let mut frame = Vec::new();
            encode_batch(&batch, &mut frame).expect("encodes");
            let error = decode_batch::<u8>(&frame).expect_err("misplaced controls");
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn a_failed_encoding_leaves_the_buffer_as_it_was() {
        struct Unencodable;
        impl Serialize for Unencodable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let batch = ChannelBatch {
            records: vec![Record::new(Unencodable)],
            controls: Vec::new(),
        };
        let mut out = vec![1, 2, 3];
        let error = encode_batch(&batch, &mut out).expect_err("fails");
        assert!(
            error.to_string().starts_with("cannot encode batch: "),
            "{error}"
        );
        assert_eq!(out, [1, 2, 3]);
    }
}
