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

pub(crate) mod control;
pub mod endpoint;
mod error;
pub mod framed;
pub mod handshake;
pub mod tls;

pub use endpoint::{Incoming, NetNode, Peer, PeerLink, TransportSettings};
pub use error::NetError;
pub use framed::{FrameReader, FrameWriter};
pub use handshake::{Hello, HelloReply, PROTOCOL_VERSION, Refusal, Role};
pub use tls::{ClusterCa, NodeIdentity};

#[cfg(test)]
mod tests;
