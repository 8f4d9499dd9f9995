//! Real QUIC with real TLS between simulated nodes, with every random choice seeded.
//!
//! [`sim_node`] builds a framework [`NetNode`] on a [`SimSocket`](crate::network::SimSocket) of a [`SimNetwork`], with the
//! sources of randomness that would otherwise make two runs differ pinned to the node's seed
//! (SIMULATION.md lists them): quinn's endpoint generator, the stateless-reset key, the
//! connection ids a node issues and the first one a client picks, the handshake-token key, the
//! QUIC time source, rustls's random bytes, and the TLS key exchange (X25519 with secrets from the
//! seed: *ring*'s own key exchange reads the operating system's randomness and cannot be
//! seeded). Certificates come from [`ClusterCa::from_seed`] and
//! [`ClusterCa::issue_from_seed`](eichhorn::net::ClusterCa::issue_from_seed) (Ed25519 signs
//! deterministically).
//!
//! None of this is compiled into the framework: production nodes use
//! [`NetNode::bind`](eichhorn::net::NetNode::bind) with the operating system's randomness.
//!
//! [`ClusterCa::from_seed`]: eichhorn::net::ClusterCa::from_seed

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use eichhorn::net::{Hello, NetError, NetNode, NodeIdentity, TransportSettings};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::{NamedGroup, PeerMisbehaved};

use crate::network::SimNetwork;

/// A seeded generator shared by the pieces of one node's crypto.
#[derive(Debug, Clone)]
struct SeededRandom(Arc<Mutex<ChaCha20Rng>>);

impl SeededRandom {
    fn new(seed: [u8; 32]) -> Self {
        Self(Arc::new(Mutex::new(ChaCha20Rng::from_seed(seed))))
    }

    fn fill_bytes(&self, buf: &mut [u8]) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .fill_bytes(buf);
    }

    fn bytes<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0; N];
        self.fill_bytes(&mut bytes);
        bytes
    }
}

impl SecureRandom for SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        self.fill_bytes(buf);
        Ok(())
    }
}

/// X25519 with secrets from the seed.
#[derive(Debug)]
struct SeededX25519(SeededRandom);

struct X25519Exchange {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let secret = x25519_dalek::StaticSecret::from(self.0.bytes::<32>());
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer_pub_key
            .try_into()
            .map_err(|_| rustls::Error::from(PeerMisbehaved::InvalidKeyShare))?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// Connection ids from the seed, 8 bytes each.
struct SeededCids(SeededRandom);

impl quinn::ConnectionIdGenerator for SeededCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&self.0.bytes::<8>())
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Wall-clock time for QUIC tokens, on the simulation's virtual time.
#[derive(Debug)]
struct VirtualTime {
    start: tokio::time::Instant,
}

/// The wall-clock time a simulation starts at: 2026-01-01T00:00:00Z.
const SIMULATED_EPOCH_SECS: u64 = 1_767_225_600;

impl VirtualTime {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(SIMULATED_EPOCH_SECS) + self.start.elapsed()
    }
}

impl quinn::TimeSource for VirtualTime {
    fn now(&self) -> SystemTime {
        Self::now(self)
    }
}

impl rustls::time_provider::TimeProvider for VirtualTime {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            self.now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        ))
    }
}

/// A 32-byte seed for one purpose of one node.
pub(crate) fn derive(seed: u64, purpose: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut state = seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        chunk.copy_from_slice(&eichhorn::state::splitmix64(state).to_le_bytes());
    }
    out
}

/// Builds a node at `addr` on `network` that presents `identity` and says `hello`, with every
/// random choice drawn from `seed`. Call inside the simulation's runtime.
///
/// # Errors
///
/// The address is taken on the network, or the identity is not usable.
pub fn sim_node(
    network: &SimNetwork,
    addr: SocketAddr,
    identity: &NodeIdentity,
    hello: Hello,
    settings: TransportSettings,
    seed: u64,
) -> Result<NetNode, NetError> {
    let random = SeededRandom::new(derive(seed, 1));
    let base = eichhorn::net::tls::crypto_provider();
    let provider = Arc::new(CryptoProvider {
        cipher_suites: base.cipher_suites.clone(),
        kx_groups: vec![Box::leak(Box::new(SeededX25519(random.clone())))],
        signature_verification_algorithms: base.signature_verification_algorithms,
        secure_random: Box::leak(Box::new(random.clone())),
        key_provider: base.key_provider,
    });
    // The provider's parts are `&'static`: each simulated node leaks its two small seeded
    // objects, a few bytes per node and run.
    let time = Arc::new(VirtualTime {
        start: tokio::time::Instant::now(),
    });
    let transport = settings.quinn()?;

    let server_tls = identity.server_tls(Arc::clone(&provider), time.clone())?;
    let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
        .map_err(|e| NetError::Certificate(format!("QUIC server TLS: {e}")))?;
    let token_key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&derive(seed, 2));
    let mut server = quinn::ServerConfig::new(Arc::new(server_crypto), Arc::new(token_key));
    server.transport_config(Arc::clone(&transport));
    server.time_source(time.clone());

    let client_tls = identity.client_tls(provider, time)?;
    let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
        .map_err(|e| NetError::Certificate(format!("QUIC client TLS: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);
    let initial_cids = SeededRandom::new(derive(seed, 3));
    client.initial_dst_cid_provider(Arc::new(move || {
        quinn::ConnectionId::new(&initial_cids.bytes::<8>())
    }));

    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derive(seed, 4));
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    endpoint_config.rng_seed(Some(derive(seed, 5)));
    let cids = SeededRandom::new(derive(seed, 6));
    endpoint_config.cid_generator(move || Box::new(SeededCids(cids.clone())));

    let socket = network
        .bind(addr)
        .map_err(|source| NetError::Bind { addr, source })?;
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        endpoint_config,
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| NetError::Bind { addr, source })?;
    endpoint.set_default_client_config(client);
    Ok(NetNode::from_endpoint(endpoint, hello, settings))
}
