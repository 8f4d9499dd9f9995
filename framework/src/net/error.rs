//! The transport's error, and how a lost QUIC connection becomes one.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The application error code a node closes a connection with when it refuses the peer; the
/// reason travels in the close frame.
pub const CLOSE_REFUSED: u32 = 1;

/// The application error code of an orderly close.
pub const CLOSE_DONE: u32 = 0;

/// A transport failure, naming the peer or file and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A certificate or key is missing, damaged or unusable.
    #[error("cluster certificates: {0}")]
    Certificate(String),
    /// Reading or writing a file of the cluster directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TLS could not be configured.
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    /// A transport setting is out of range.
    #[error("transport settings: {0}")]
    Config(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A connection could not be established (unreachable, or TLS failed on either side).
    #[error("connection with {peer} failed: {what}")]
    Connect {
        /// The peer's address.
        peer: String,
        /// Why.
        what: String,
    },
    /// The peer refused this node, or this node refused the peer, with a reason.
    #[error("{peer} refused: {reason}")]
    Refused {
        /// The peer.
        peer: String,
        /// The reason the refusing side gave.
        reason: String,
    },
    /// The peer sent something this build does not read (garbage, a truncated frame, a frame
    /// of another version, an undecodable message).
    #[error("protocol error from {peer}: {what}")]
    Protocol {
        /// The peer.
        peer: String,
        /// What was wrong.
        what: String,
    },
    /// A stream was reset or stopped.
    #[error("stream to {peer}: {what}")]
    Stream {
        /// The peer.
        peer: String,
        /// What happened.
        what: String,
    },
    /// The connection was lost or closed.
    #[error("connection to {peer} lost: {what}")]
    Connection {
        /// The peer.
        peer: String,
        /// Why.
        what: String,
    },
}

/// A lost connection as a [`NetError`]: a refusal when the peer closed it with
/// [`CLOSE_REFUSED`], with its reason.
pub(super) fn connection_error(peer: &str, error: quinn::ConnectionError) -> NetError {
    match error {
        quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == CLOSE_REFUSED.into() =>
        {
            NetError::Refused {
                peer: peer.to_string(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            }
        }
        other => NetError::Connection {
            peer: peer.to_string(),
            what: other.to_string(),
        },
    }
}
