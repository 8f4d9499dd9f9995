//! Frames on QUIC streams: the frames of [`crate::exchange::codec`], read and written whole.
//!
//! A stream is a byte pipe; [`FrameReader`] cuts it back into frames using the length prefix,
//! refusing (never panicking on) a header that declares an empty, oversized or other-version
//! frame, and a stream that ends inside a frame. Its buffer holds one frame at most, so it is
//! bounded by [`FRAME_BYTES_MAX`](crate::exchange::FRAME_BYTES_MAX).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{NetError, connection_error};
use crate::exchange::FRAME_HEADER_BYTES;
use crate::exchange::codec::{decode_frame, encode_frame, frame_len};

/// Reads whole frames from one receiving stream.
#[derive(Debug)]
pub struct FrameReader {
    stream: quinn::RecvStream,
    /// Who is on the other end, for errors.
    peer: String,
    buf: Vec<u8>,
}

impl FrameReader {
    /// Reads from `stream`, whose other end is `peer` (named in errors).
    pub fn new(stream: quinn::RecvStream, peer: impl Into<String>) -> Self {
        Self {
            stream,
            peer: peer.into(),
            buf: Vec::new(),
        }
    }

    /// The next frame, header included; `None` when the peer finished the stream between two
    /// frames.
    ///
    /// # Errors
    ///
    /// The stream ended inside a frame, was reset, the connection was lost, or the header is not
    /// one this build reads: the error names the peer.
    pub async fn next_frame(&mut self) -> Result<Option<&[u8]>, NetError> {
        self.buf.clear();
        self.buf.resize(FRAME_HEADER_BYTES, 0);
        match self.stream.read_exact(&mut self.buf).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(quinn::ReadExactError::FinishedEarly(got)) => {
                return Err(self.protocol(format!(
                    "the stream ended inside a frame header ({got} of {FRAME_HEADER_BYTES} bytes)"
                )));
            }
            Err(quinn::ReadExactError::ReadError(error)) => return Err(self.read_error(error)),
        }
        let len = match frame_len(&self.buf) {
            Ok(Some(len)) => len,
            Ok(None) => unreachable!("a whole header was read"),
            Err(error) => return Err(self.protocol(error.to_string())),
        };
        self.buf.resize(len, 0);
        match self
            .stream
            .read_exact(&mut self.buf[FRAME_HEADER_BYTES..])
            .await
        {
            Ok(()) => Ok(Some(&self.buf)),
            Err(quinn::ReadExactError::FinishedEarly(got)) => Err(self.protocol(format!(
                "the stream ended inside a frame ({} of {len} bytes)",
                FRAME_HEADER_BYTES + got
            ))),
            Err(quinn::ReadExactError::ReadError(error)) => Err(self.read_error(error)),
        }
    }

    /// The next frame decoded as an `M` (`what` names it in errors); `None` at the end.
    ///
    /// # Errors
    ///
    /// As [`next_frame`](Self::next_frame), or the frame does not decode as an `M`.
    pub async fn next_message<M: DeserializeOwned>(
        &mut self,
        what: &'static str,
    ) -> Result<Option<M>, NetError> {
        let peer = self.peer.clone();
        let Some(frame) = self.next_frame().await? else {
            return Ok(None);
        };
        decode_frame(what, frame)
            .map(Some)
            .map_err(|error| NetError::Protocol {
                peer,
                what: error.to_string(),
            })
    }

    fn protocol(&self, what: String) -> NetError {
        NetError::Protocol {
            peer: self.peer.clone(),
            what,
        }
    }

    fn read_error(&self, error: quinn::ReadError) -> NetError {
        match error {
            quinn::ReadError::ConnectionLost(lost) => connection_error(&self.peer, lost),
            other => NetError::Stream {
                peer: self.peer.clone(),
                what: other.to_string(),
            },
        }
    }
}

/// Writes whole frames to one sending stream.
#[derive(Debug)]
pub struct FrameWriter {
    stream: quinn::SendStream,
    peer: String,
    buf: Vec<u8>,
}

impl FrameWriter {
    /// Writes to `stream`, whose other end is `peer` (named in errors).
    pub fn new(stream: quinn::SendStream, peer: impl Into<String>) -> Self {
        Self {
            stream,
            peer: peer.into(),
            buf: Vec::new(),
        }
    }

    /// Sends `frame`, a whole frame of [`crate::exchange::codec`].
    ///
    /// # Errors
    ///
    /// The peer stopped the stream or the connection was lost.
    pub async fn send_frame(&mut self, frame: &[u8]) -> Result<(), NetError> {
        self.stream
            .write_all(frame)
            .await
            .map_err(|error| match error {
                quinn::WriteError::ConnectionLost(lost) => connection_error(&self.peer, lost),
                other => NetError::Stream {
                    peer: self.peer.clone(),
                    what: other.to_string(),
                },
            })
    }

    /// Encodes `message` as one frame (`what` names it in errors) and sends it.
    ///
    /// # Errors
    ///
    /// The message does not encode, or as [`send_frame`](Self::send_frame).
    pub async fn send_message<M: Serialize>(
        &mut self,
        what: &'static str,
        message: &M,
    ) -> Result<(), NetError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let result = match encode_frame(what, message, &mut buf) {
            Ok(()) => self.send_frame(&buf).await,
            Err(error) => Err(NetError::Protocol {
                peer: self.peer.clone(),
                what: error.to_string(),
            }),
        };
        self.buf = buf;
        result
    }

    /// Ends the stream after what was sent (the reader then sees `None`).
    pub fn finish(&mut self) {
        // Finishing a stream that is already closed changes nothing.
        let _ = self.stream.finish();
    }
}
