//! The cluster transport: QUIC between nodes, with mutual TLS and a versioned handshake.
//!
//! ```text
//! NetNode (one per node, one UDP port, quinn endpoint: server and client)
//!   └─ Peer (one QUIC connection per pair of nodes, after TLS + handshake)
//!        ├─ control stream (bidirectional, the first): registration, deployment, heartbeats,
//!        │   checkpoint messages, failures, as frames
//!        └─ one stream per data channel (bidirectional, long-lived): batch frames one way,
//!            credit frames back
//! ```
//!
//! - **Who may connect** ([`tls`]): TLS 1.3 with certificates on both sides from the cluster's
//!   certificate authority, kept in the cluster directory. A peer without one fails the TLS
//!   handshake before it can send a frame; QUIC packets that are not QUIC are dropped by quinn.
//! - **Whether two nodes can work together** ([`handshake`]): protocol version, roles and the
//!   job's fingerprint, checked by a pure function; a refusal carries its reason to the peer and
//!   into both logs.
//! - **Frames** ([`framed`]): the frames of [`crate::exchange::codec`] (length prefix, version
//!   byte, postcard), read whole with a bounded buffer; garbage is an error naming the peer,
//!   never a panic.
//!
//! The endpoint runs on tokio's clock and quinn's tokio runtime, so under paused time it is
//! virtual; the simulator will bind endpoints over its own UDP network
//! (`quinn::Endpoint::new_with_abstract_socket`, see `SIMULATION.md`).

pub mod endpoint;
pub mod framed;
pub mod handshake;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use endpoint::{Incoming, NetNode, Peer, TransportSettings};
pub use framed::{FrameReader, FrameWriter};
pub use handshake::{Hello, HelloReply, PROTOCOL_VERSION, Refusal, Role};
pub use tls::{ClusterCa, NodeIdentity};

#[cfg(test)]
mod tests;

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
