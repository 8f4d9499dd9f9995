//! A node's QUIC endpoint: connect to peers and accept them, with TLS and the handshake done.
//!
//! One endpoint per node, bound to one UDP port, both server and client. A [`Peer`] is one
//! connection after the [handshake](super::handshake): its first bidirectional stream is the
//! **control stream** (registration, deployment, heartbeats, checkpoint messages, failures);
//! every data channel between two subtasks on the two nodes gets **one long-lived
//! bidirectional stream** ([`Peer::open_channel`]), batches one way and credits back, never a
//! stream per batch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::error::{NetError, connection_error};
use super::framed::{FrameReader, FrameWriter};
use super::handshake::{Hello, HelloReply, check_hello};
use super::tls::{CLUSTER_SERVER_NAME, NodeIdentity};
use crate::exchange::ChannelId;

pub use super::error::{CLOSE_DONE, CLOSE_REFUSED};

/// Timing of the transport. Liveness of a node is the cluster's heartbeats' business; these keep
/// an idle connection open and bound how long a dead one takes to notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSettings {
    /// How often an otherwise idle connection sends a keep-alive (default 1,000 ms).
    pub keep_alive_ms: u64,
    /// A connection that heard nothing for this long is closed (default 10,000 ms).
    pub idle_timeout_ms: u64,
    /// How long an accepting node waits for the peer's hello (default 5,000 ms).
    pub hello_timeout_ms: u64,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            keep_alive_ms: 1_000,
            idle_timeout_ms: 10_000,
            hello_timeout_ms: 5_000,
        }
    }
}

impl TransportSettings {
    /// These settings as quinn's transport configuration.
    ///
    /// # Errors
    ///
    /// The idle timeout is out of QUIC's range.
    pub fn quinn(&self) -> Result<Arc<quinn::TransportConfig>, NetError> {
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_millis(self.keep_alive_ms)));
        let idle = quinn::IdleTimeout::try_from(Duration::from_millis(self.idle_timeout_ms))
            .map_err(|_| {
                NetError::Config(format!(
                    "idle_timeout_ms {} is too large for QUIC",
                    self.idle_timeout_ms
                ))
            })?;
        transport.max_idle_timeout(Some(idle));
        Ok(Arc::new(transport))
    }
}

/// What opens a data stream: the channel it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct StreamHeader {
    channel: ChannelId,
}

/// A node's endpoint.
#[derive(Debug)]
pub struct NetNode {
    endpoint: quinn::Endpoint,
    hello: Hello,
    settings: TransportSettings,
}

impl NetNode {
    /// Binds `addr` (port 0: any free port) as the node `hello` describes, presenting
    /// `identity`.
    ///
    /// # Errors
    ///
    /// The address cannot be bound, or the identity or settings are not usable.
    pub fn bind(
        addr: SocketAddr,
        identity: &NodeIdentity,
        hello: Hello,
        settings: TransportSettings,
    ) -> Result<Self, NetError> {
        let transport = settings.quinn()?;
        let mut server = identity.server_config()?;
        server.transport_config(Arc::clone(&transport));
        let mut client = identity.client_config()?;
        client.transport_config(transport);
        let mut endpoint = quinn::Endpoint::server(server, addr)
            .map_err(|source| NetError::Bind { addr, source })?;
        endpoint.set_default_client_config(client);
        Ok(Self {
            endpoint,
            hello,
            settings,
        })
    }

    /// A node on an endpoint its caller built: the simulator's, over a simulated network with
    /// seeded configurations. `endpoint` must have a server configuration and a default client
    /// configuration from [`NodeIdentity::server_tls`] and [`NodeIdentity::client_tls`].
    pub fn from_endpoint(
        endpoint: quinn::Endpoint,
        hello: Hello,
        settings: TransportSettings,
    ) -> Self {
        Self {
            endpoint,
            hello,
            settings,
        }
    }

    /// The bound address.
    ///
    /// # Errors
    ///
    /// The socket cannot say (it was closed).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint.local_addr().map_err(|source| NetError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })
    }

    /// This node's hello.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Sets the fingerprint this node announces from now on (once it built the job).
    pub fn set_job_fingerprint(&mut self, fingerprint: u64) {
        self.hello.job_fingerprint = Some(fingerprint);
    }

    /// Connects to the node at `addr`: TLS with the cluster's certificates, then the handshake.
    ///
    /// # Errors
    ///
    /// The peer is unreachable, TLS failed (a certificate not from this cluster's CA, on either
    /// side), or the peer refused us ([`NetError::Refused`], with its reason).
    pub async fn connect(&self, addr: SocketAddr) -> Result<Peer, NetError> {
        let peer = addr.to_string();
        let connecting = self
            .endpoint
            .connect(addr, CLUSTER_SERVER_NAME)
            .map_err(|error| NetError::Connect {
                peer: peer.clone(),
                what: error.to_string(),
            })?;
        let connection = connecting.await.map_err(|error| NetError::Connect {
            peer: peer.clone(),
            what: error.to_string(),
        })?;
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|error| connection_error(&peer, error))?;
        let mut writer = FrameWriter::new(send, peer.clone());
        let mut reader = FrameReader::new(recv, peer.clone());
        writer.send_message("hello", &self.hello).await?;
        match reader.next_message::<HelloReply>("hello reply").await {
            Ok(Some(HelloReply::Welcome(hello))) => Ok(Peer {
                link: PeerLink {
                    node: hello.node.clone(),
                    connection,
                },
                hello,
                writer,
                reader,
            }),
            Ok(Some(HelloReply::Refused(reason))) => Err(NetError::Refused { peer, reason }),
            Ok(None) => Err(NetError::Protocol {
                peer,
                what: "the peer closed the control stream without answering the hello".to_string(),
            }),
            Err(error) => Err(error),
        }
    }

    /// Waits for the next node to connect and runs TLS and the handshake with it. `None` once
    /// the endpoint is closed. A peer that fails is an `Err` naming its address and the reason;
    /// the caller logs it and goes on accepting: one bad peer never disturbs the others.
    ///
    /// Handshakes run one after the other here; a node that must not be held up by a slow
    /// peer takes the connection with [`accept_incoming`](Self::accept_incoming) and runs
    /// [`Incoming::handshake`] on a task of its own.
    pub async fn accept(&self) -> Option<Result<Peer, NetError>> {
        let incoming = self.accept_incoming().await?;
        Some(incoming.handshake().await)
    }

    /// Waits for the next connection attempt, without handshaking yet.
    pub async fn accept_incoming(&self) -> Option<Incoming> {
        let incoming = self.endpoint.accept().await?;
        Some(Incoming {
            incoming,
            hello: self.hello.clone(),
            timeout: Duration::from_millis(self.settings.hello_timeout_ms),
        })
    }

    /// Closes every connection and the endpoint.
    pub fn close(&self) {
        self.endpoint
            .close(CLOSE_DONE.into(), b"node shutting down");
    }
}

/// A connection attempt that has not been handshaken yet.
#[derive(Debug)]
pub struct Incoming {
    incoming: quinn::Incoming,
    hello: Hello,
    timeout: Duration,
}

impl Incoming {
    /// The address the attempt comes from.
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Runs TLS and the handshake; a refused peer is told why and disconnected.
    ///
    /// # Errors
    ///
    /// TLS failed, the peer sent no hello in time or garbage instead, or it was refused.
    pub async fn handshake(self) -> Result<Peer, NetError> {
        let peer = self.incoming.remote_address().to_string();
        let connection = self.incoming.await.map_err(|error| NetError::Connect {
            peer: peer.clone(),
            what: error.to_string(),
        })?;
        let exchange = async {
            let (send, recv) = connection
                .accept_bi()
                .await
                .map_err(|error| connection_error(&peer, error))?;
            let writer = FrameWriter::new(send, peer.clone());
            let mut reader = FrameReader::new(recv, peer.clone());
            let theirs = reader
                .next_message::<Hello>("hello")
                .await?
                .ok_or_else(|| NetError::Protocol {
                    peer: peer.clone(),
                    what: "the peer closed the control stream before its hello".to_string(),
                })?;
            Ok::<_, NetError>((writer, reader, theirs))
        };
        let (mut writer, reader, theirs) = match tokio::time::timeout(self.timeout, exchange).await
        {
            Ok(Ok(parts)) => parts,
            Ok(Err(error)) => {
                connection.close(CLOSE_REFUSED.into(), error.to_string().as_bytes());
                return Err(error);
            }
            Err(_) => {
                let reason = format!(
                    "no hello within {} ms after the TLS handshake",
                    self.timeout.as_millis()
                );
                connection.close(CLOSE_REFUSED.into(), reason.as_bytes());
                return Err(NetError::Protocol { peer, what: reason });
            }
        };
        let peer = format!("{} ({peer})", theirs.node);
        match check_hello(&self.hello, &theirs) {
            Ok(()) => {
                writer
                    .send_message("hello reply", &HelloReply::Welcome(self.hello.clone()))
                    .await?;
                Ok(Peer {
                    link: PeerLink {
                        node: theirs.node.clone(),
                        connection,
                    },
                    hello: theirs,
                    writer,
                    reader,
                })
            }
            Err(refusal) => {
                let reason = refusal.to_string();
                // The reason goes both in the reply and in the close frame: whichever arrives
                // first tells the peer.
                let _ = writer
                    .send_message("hello reply", &HelloReply::Refused(reason.clone()))
                    .await;
                writer.finish();
                connection.close(CLOSE_REFUSED.into(), reason.as_bytes());
                Err(NetError::Refused { peer, reason })
            }
        }
    }
}

/// One handshaken connection to another node.
#[derive(Debug)]
pub struct Peer {
    hello: Hello,
    link: PeerLink,
    writer: FrameWriter,
    reader: FrameReader,
}

/// The connection of a [`Peer`] without its control stream: cheap to clone, so a node can open
/// and accept data channels and watch the connection from several tasks while another task owns
/// the control stream.
#[derive(Debug, Clone)]
pub struct PeerLink {
    /// The peer's node id, for errors.
    node: String,
    connection: quinn::Connection,
}

impl Peer {
    /// What the peer said in the handshake.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.link.connection.remote_address()
    }

    /// This node's own IP address on this connection, when the platform tells it (the address
    /// a node bound to all interfaces can advertise to others).
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.link.connection.local_ip()
    }

    /// The control stream: frames to the peer and from it.
    pub fn control(&mut self) -> (&mut FrameWriter, &mut FrameReader) {
        (&mut self.writer, &mut self.reader)
    }

    /// The connection itself, for data channels.
    pub fn link(&self) -> &PeerLink {
        &self.link
    }

    /// Splits the peer into its hello, its connection and the two halves of its control
    /// stream, so that reading and writing run on different tasks.
    pub fn into_parts(self) -> (Hello, PeerLink, FrameWriter, FrameReader) {
        (self.hello, self.link, self.writer, self.reader)
    }

    /// Opens the long-lived stream of data channel `channel` towards the peer: batch frames go
    /// out on the writer, credit frames come back on the reader.
    ///
    /// # Errors
    ///
    /// The connection is lost.
    pub async fn open_channel(
        &self,
        channel: ChannelId,
    ) -> Result<(FrameWriter, FrameReader), NetError> {
        self.link.open_channel(channel).await
    }

    /// Waits for the peer to open a data channel's stream; `None` when the connection closed
    /// in order.
    ///
    /// # Errors
    ///
    /// The connection was lost, or the stream does not start with a channel header.
    pub async fn accept_channel(
        &self,
    ) -> Result<Option<(ChannelId, FrameWriter, FrameReader)>, NetError> {
        self.link.accept_channel().await
    }

    /// Closes the connection in order, telling the peer `reason`.
    pub fn close(&self, reason: &str) {
        self.link.close(reason);
    }

    /// Waits until the connection is closed, by either side or by the idle timeout, and says
    /// why.
    pub async fn closed(&self) -> NetError {
        self.link.closed().await
    }
}

impl PeerLink {
    /// The peer's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }

    /// See [`Peer::open_channel`].
    ///
    /// # Errors
    ///
    /// The connection is lost.
    pub async fn open_channel(
        &self,
        channel: ChannelId,
    ) -> Result<(FrameWriter, FrameReader), NetError> {
        let peer = self.node.clone();
        let (send, recv) = self
            .connection
            .open_bi()
            .await
            .map_err(|error| connection_error(&peer, error))?;
        let mut writer = FrameWriter::new(send, peer.clone());
        writer
            .send_message("stream header", &StreamHeader { channel })
            .await?;
        Ok((writer, FrameReader::new(recv, peer)))
    }

    /// See [`Peer::accept_channel`].
    ///
    /// # Errors
    ///
    /// The connection was lost, or the stream does not start with a channel header.
    pub async fn accept_channel(
        &self,
    ) -> Result<Option<(ChannelId, FrameWriter, FrameReader)>, NetError> {
        let peer = self.node.clone();
        let (send, recv) = match self.connection.accept_bi().await {
            Ok(streams) => streams,
            Err(quinn::ConnectionError::ApplicationClosed(close))
                if close.error_code == CLOSE_DONE.into() =>
            {
                return Ok(None);
            }
            Err(quinn::ConnectionError::LocallyClosed) => return Ok(None),
            Err(error) => return Err(connection_error(&peer, error)),
        };
        let mut reader = FrameReader::new(recv, peer.clone());
        let header = reader
            .next_message::<StreamHeader>("stream header")
            .await?
            .ok_or_else(|| NetError::Protocol {
                peer: peer.clone(),
                what: "a stream ended before its header".to_string(),
            })?;
        Ok(Some((header.channel, FrameWriter::new(send, peer), reader)))
    }

    /// See [`Peer::close`].
    pub fn close(&self, reason: &str) {
        self.connection.close(CLOSE_DONE.into(), reason.as_bytes());
    }

    /// See [`Peer::closed`].
    pub async fn closed(&self) -> NetError {
        connection_error(&self.node, self.connection.closed().await)
    }
}
