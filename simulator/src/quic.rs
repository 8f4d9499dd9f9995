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
//! **Remembered results.** A check runs every seed three times (fault-free, faulted, and the
//! faulted run again for the determinism oracle), and each run shakes hands over and over with
//! the same certificates, so the same pure computations come back: the CA's signature over a
//! node's certificate is verified in every handshake with that node, and the rerun repeats
//! every key exchange and signature of the run before it. Signature verification, X25519's
//! public keys and shared secrets, and node certificates ([`crate::cluster`]) are remembered per
//! process (`Remembered`), keyed by their whole input: a hit returns what the same
//! computation returned before, a miss computes it for real, so no handshake is skipped or
//! weakened, and a run that differs (a determinism failure) computes what differs.
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
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::pki_types::{AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm};
use rustls::{NamedGroup, PeerMisbehaved};

use crate::network::SimNetwork;

/// Results of a pure computation remembered by their whole input, bounded: once full, it
/// starts again empty (a check's three runs of a seed sit close together, so the entries that
/// matter are the recent ones).
pub(crate) struct Remembered<V> {
    entries: Mutex<std::collections::BTreeMap<Vec<u8>, V>>,
}

impl<V: Clone> Remembered<V> {
    /// Entries kept at most.
    const ENTRIES_MAX: usize = 4_096;

    pub(crate) const fn new() -> Self {
        Self {
            entries: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// What `compute` returned for `key` before, or its result now (remembered).
    fn get_or(&self, key: Vec<u8>, compute: impl FnOnce() -> V) -> V {
        match self.try_get_or(key, || Ok::<V, std::convert::Infallible>(compute())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// What `compute` returned for `key` before, or its result now (remembered when it
    /// succeeded).
    pub(crate) fn try_get_or<E>(
        &self,
        key: Vec<u8>,
        compute: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        let lock = || {
            self.entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(value) = lock().get(&key) {
            return Ok(value.clone());
        }
        // Computed without the lock: another thread may compute the same value meanwhile,
        // which is harmless (the computation is pure).
        let value = compute()?;
        let mut entries = lock();
        if entries.len() >= Self::ENTRIES_MAX {
            entries.clear();
        }
        entries.insert(key, value.clone());
        Ok(value)
    }
}

/// The key of an input made of several byte strings: each length-prefixed, so two different
/// inputs never share a key.
pub(crate) fn input_key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + parts.iter().map(|p| p.len() + 8).sum::<usize>());
    key.push(tag);
    for part in parts {
        key.extend_from_slice(&(part.len() as u64).to_le_bytes());
        key.extend_from_slice(part);
    }
    key
}

static VERIFIED: Remembered<bool> = Remembered::new();
static X25519_PUBLIC: Remembered<[u8; 32]> = Remembered::new();
static X25519_SHARED: Remembered<[u8; 32]> = Remembered::new();

/// A signature verification algorithm of the base provider whose results are remembered.
#[derive(Debug)]
struct RememberedVerification {
    inner: &'static dyn SignatureVerificationAlgorithm,
    /// Tells the algorithms apart in [`VERIFIED`].
    tag: u8,
}

impl SignatureVerificationAlgorithm for RememberedVerification {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let key = input_key(self.tag, &[public_key, message, signature]);
        let valid = VERIFIED.get_or(key, || {
            self.inner
                .verify_signature(public_key, message, signature)
                .is_ok()
        });
        if valid { Ok(()) } else { Err(InvalidSignature) }
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        self.inner.public_key_alg_id()
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.inner.signature_alg_id()
    }

    fn fips_status(&self) -> rustls::pki_types::FipsStatus {
        self.inner.fips_status()
    }

    fn fips(&self) -> bool {
        self.inner.fips()
    }
}

/// The base provider's signature verification algorithms with remembered results, made once
/// per process (rustls wants them `'static`).
fn remembered_verification() -> WebPkiSupportedAlgorithms {
    static ALGORITHMS: std::sync::OnceLock<WebPkiSupportedAlgorithms> = std::sync::OnceLock::new();
    *ALGORITHMS.get_or_init(|| {
        let base = eichhorn::net::tls::crypto_provider().signature_verification_algorithms;
        let mut wrapped: Vec<(
            &'static dyn SignatureVerificationAlgorithm,
            &'static dyn SignatureVerificationAlgorithm,
        )> = Vec::new();
        let mut wrap = |inner: &'static dyn SignatureVerificationAlgorithm| {
            if let Some((_, remembered)) = wrapped
                .iter()
                .find(|(original, _)| std::ptr::addr_eq(*original, inner))
            {
                return *remembered;
            }
            let tag = u8::try_from(wrapped.len()).unwrap_or(u8::MAX);
            let remembered: &'static dyn SignatureVerificationAlgorithm =
                Box::leak(Box::new(RememberedVerification { inner, tag }));
            wrapped.push((inner, remembered));
            remembered
        };
        let all: Vec<_> = base.all.iter().map(|a| wrap(*a)).collect();
        let mapping: Vec<_> = base
            .mapping
            .iter()
            .map(|(scheme, algorithms)| {
                let algorithms: Vec<_> = algorithms.iter().map(|a| wrap(*a)).collect();
                let algorithms: &'static [&'static dyn SignatureVerificationAlgorithm] =
                    Box::leak(algorithms.into_boxed_slice());
                (*scheme, algorithms)
            })
            .collect();
        WebPkiSupportedAlgorithms {
            all: Box::leak(all.into_boxed_slice()),
            mapping: Box::leak(mapping.into_boxed_slice()),
        }
    })
}

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
        let public = X25519_PUBLIC.get_or(input_key(0, &[secret.as_bytes()]), || {
            x25519_dalek::PublicKey::from(&secret).to_bytes()
        });
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
        let shared = X25519_SHARED.get_or(input_key(0, &[self.secret.as_bytes(), &peer]), || {
            self.secret
                .diffie_hellman(&x25519_dalek::PublicKey::from(peer))
                .to_bytes()
        });
        Ok(SharedSecret::from(&shared[..]))
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
        signature_verification_algorithms: remembered_verification(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    /// The remembered algorithm that verifies Ed25519 (the certificates' algorithm).
    fn ed25519() -> &'static dyn SignatureVerificationAlgorithm {
        let target = eichhorn::net::tls::crypto_provider()
            .signature_verification_algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == rustls::SignatureScheme::ED25519)
            .map(|(_, algorithms)| algorithms[0].signature_alg_id())
            .expect("the provider verifies Ed25519");
        *remembered_verification()
            .all
            .iter()
            .find(|a| a.signature_alg_id() == target)
            .expect("wrapped")
    }

    #[test]
    fn remembered_verification_answers_as_the_algorithm_does_for_every_input() {
        let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&derive(1, 2)).unwrap();
        let public = key.public_key().as_ref().to_vec();
        let message = b"a certificate's signed part".to_vec();
        let signature = key.sign(&message).as_ref().to_vec();
        let verify = ed25519();
        for _ in 0..2 {
            // Twice: computed, then remembered.
            assert!(
                verify
                    .verify_signature(&public, &message, &signature)
                    .is_ok()
            );
        }
        // The same key with another message or signature is another input, never a hit.
        let mut other_message = message.clone();
        other_message[0] ^= 1;
        let mut other_signature = signature.clone();
        other_signature[10] ^= 1;
        for _ in 0..2 {
            assert!(
                verify
                    .verify_signature(&public, &other_message, &signature)
                    .is_err()
            );
            assert!(
                verify
                    .verify_signature(&public, &message, &other_signature)
                    .is_err()
            );
        }
        assert!(
            verify
                .verify_signature(&public, &message, &signature)
                .is_ok()
        );
    }

    #[test]
    fn remembered_key_exchange_agrees_with_x25519() {
        let group = SeededX25519(SeededRandom::new(derive(3, 4)));
        for round in 0..4 {
            let ours = group.start().unwrap();
            let peer = x25519_dalek::StaticSecret::from(derive(round, 9));
            let peer_public = x25519_dalek::PublicKey::from(&peer);
            // The public key is the secret's.
            let expected_public = ours.pub_key().to_vec();
            let shared = ours.complete(peer_public.as_bytes()).unwrap();
            let theirs = peer.diffie_hellman(&x25519_dalek::PublicKey::from(
                <[u8; 32]>::try_from(&expected_public[..]).unwrap(),
            ));
            assert_eq!(shared.secret_bytes(), theirs.as_bytes(), "round {round}");
        }
    }

    #[test]
    fn remembered_results_stay_bounded() {
        let memo: Remembered<u64> = Remembered::new();
        for n in 0..(Remembered::<u64>::ENTRIES_MAX as u64 + 10) {
            assert_eq!(memo.get_or(n.to_le_bytes().to_vec(), || n * 2), n * 2);
        }
        let held = memo.entries.lock().unwrap().len();
        assert!(held <= Remembered::<u64>::ENTRIES_MAX, "{held}");
        // A failed computation is not remembered.
        assert_eq!(memo.try_get_or(vec![1], || Err::<u64, ()>(())), Err(()));
        assert_eq!(memo.try_get_or(vec![1], || Ok::<u64, ()>(5)), Ok(5));
    }
}
