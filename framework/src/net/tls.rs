//! Mutual TLS for the cluster: a certificate authority per cluster, a certificate per node.
//!
//! The **cluster directory** holds the cluster's certificate authority: `ca.crt` (PEM) and
//! `ca.key` (PEM, PKCS#8, readable by its owner only). The JobManager creates it on its first
//! start ([`ClusterCa::load_or_create`]); every node then issues itself a fresh certificate from
//! it at start ([`ClusterCa::issue`]). Having the directory is what lets a machine join: a peer
//! whose certificate does not chain to the cluster's CA fails the TLS handshake, on either side,
//! before it can send a single frame. Users with their own PKI give a CA certificate, a node
//! certificate and its key instead ([`NodeIdentity::from_pem_files`]).
//!
//! Keys are Ed25519: signatures are deterministic, which the simulator needs (an ECDSA signature
//! is randomised and even changes packet sizes), and they are small and fast. Every node
//! certificate names [`CLUSTER_SERVER_NAME`]; which node a peer is comes from the handshake that
//! follows TLS ([`super::handshake`]), not from the certificate.
//!
//! The CA's own certificate is rebuilt from fixed parameters (`ca_params`) when it issues: a
//! node certificate names its issuer by that distinguished name and by the CA key's identifier,
//! so the stored `ca.crt` and a certificate issued years later always chain.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::NetError;

/// The name every node certificate carries and every client asks for.
pub const CLUSTER_SERVER_NAME: &str = "eichhorn-cluster";

/// The application protocol negotiated in TLS (ALPN): a peer that speaks anything else is
/// refused during the TLS handshake.
pub const ALPN: &[u8] = b"eichhorn/1";

const CA_CERT_FILE: &str = "ca.crt";
const CA_KEY_FILE: &str = "ca.key";

/// The parameters of the cluster CA's certificate (fixed, see the module documentation).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Eichhorn");
    name.push(DnType::CommonName, "Eichhorn cluster CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(4000, 1, 1);
    params
}

/// A cluster's certificate authority.
pub struct ClusterCa {
    cert: CertificateDer<'static>,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA with a fresh key, in memory.
    ///
    /// # Errors
    ///
    /// The key or certificate could not be generated.
    pub fn generate() -> Result<Self, NetError> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(certificate_error)?;
        Self::with_key(key)
    }

    /// A CA whose key is derived from 32 bytes alone: the same seed gives the same CA (the
    /// simulator and tests; never for a real cluster).
    ///
    /// # Errors
    ///
    /// The certificate could not be made.
    pub fn from_seed(seed: [u8; 32]) -> Result<Self, NetError> {
        Self::with_key(ed25519_key_from_seed(seed)?)
    }

    fn with_key(key: KeyPair) -> Result<Self, NetError> {
        Ok(Self::with_key_and_pem(key)?.0)
    }

    /// The CA for `key`, and its certificate as PEM.
    fn with_key_and_pem(key: KeyPair) -> Result<(Self, String), NetError> {
        let cert = ca_params().self_signed(&key).map_err(certificate_error)?;
        let pem = cert.pem();
        Ok((
            Self {
                cert: cert.der().clone(),
                key,
            },
            pem,
        ))
    }

    /// Loads the CA of the cluster directory `dir`, creating the directory and a new CA in it
    /// if it holds none (the JobManager's first start).
    ///
    /// # Errors
    ///
    /// The directory cannot be created or written, or holds only half a CA or a damaged one.
    pub fn load_or_create(dir: &Path) -> Result<Self, NetError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => return Self::load(dir),
            (false, false) => {}
            _ => {
                return Err(NetError::Certificate(format!(
                    "cluster directory {} holds only one of {CA_CERT_FILE} and {CA_KEY_FILE}: \
                     restore the other or remove both to create a new cluster CA",
                    dir.display()
                )));
            }
        }
        std::fs::create_dir_all(dir).map_err(|source| NetError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(certificate_error)?;
        let (ca, pem) = Self::with_key_and_pem(key)?;
        write_private(&key_path, ca.key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, pem).map_err(|source| NetError::Io {
            path: cert_path.clone(),
            source,
        })?;
        tracing::info!(
            "created a new cluster certificate authority in {}",
            dir.display()
        );
        Ok(ca)
    }

    /// Loads the CA of the cluster directory `dir` (a node joining a cluster).
    ///
    /// # Errors
    ///
    /// The files are missing (the message says to copy the JobManager's cluster directory) or
    /// damaged.
    pub fn load(dir: &Path) -> Result<Self, NetError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if !cert_path.exists() || !key_path.exists() {
            return Err(NetError::Certificate(format!(
                "no cluster certificate authority in {}: start the JobManager once (it creates \
                 one) and copy its cluster directory to this machine",
                dir.display()
            )));
        }
        let cert = CertificateDer::from_pem_file(&cert_path).map_err(|e| {
            NetError::Certificate(format!(
                "{}: not a PEM certificate: {e}",
                cert_path.display()
            ))
        })?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(|source| NetError::Io {
            path: key_path.clone(),
            source,
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            NetError::Certificate(format!(
                "{}: not a PEM private key: {e}",
                key_path.display()
            ))
        })?;
        let ca = Self { cert, key };
        // A node certificate signed with this key must chain to the stored certificate: check
        // once here, so a mismatched pair fails at start, not at every peer's handshake.
        if !holds_public_key(&ca.cert, &ca.key) {
            return Err(NetError::Certificate(format!(
                "{} and {} do not belong together (the key does not match the certificate)",
                cert_path.display(),
                key_path.display()
            )));
        }
        Ok(ca)
    }

    /// The CA certificate, the root every node trusts.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Issues a certificate for node `node_name` with a fresh key.
    ///
    /// # Errors
    ///
    /// The key or certificate could not be generated.
    pub fn issue(&self, node_name: &str) -> Result<NodeIdentity, NetError> {
        let key = KeyPair::generate_for(&PKCS_ED25519).map_err(certificate_error)?;
        self.issue_with_key(node_name, key)
    }

    /// Issues a certificate for `node_name` whose key is derived from `seed` (the simulator).
    ///
    /// # Errors
    ///
    /// The certificate could not be made.
    pub fn issue_from_seed(
        &self,
        node_name: &str,
        seed: [u8; 32],
    ) -> Result<NodeIdentity, NetError> {
        self.issue_with_key(node_name, ed25519_key_from_seed(seed)?)
    }

    fn issue_with_key(&self, node_name: &str, key: KeyPair) -> Result<NodeIdentity, NetError> {
        let mut params = CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_string()])
            .map_err(certificate_error)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Eichhorn");
        name.push(DnType::CommonName, node_name);
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(4000, 1, 1);
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(certificate_error)?;
        Ok(NodeIdentity {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            root: self.cert.clone(),
        })
    }
}

/// What a node presents and trusts: its certificate chain and key, and the cluster's root.
pub struct NodeIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    root: CertificateDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            root: self.root.clone(),
        }
    }
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// A node identity from the user's own PKI: the CA certificate every node trusts, this
    /// node's certificate (chain) and its private key, all PEM. The node certificate must name
    /// [`CLUSTER_SERVER_NAME`] as a DNS subject alternative name.
    ///
    /// # Errors
    ///
    /// A file is missing or holds no PEM object of the expected kind.
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, NetError> {
        let root = CertificateDer::from_pem_file(ca).map_err(|e| {
            NetError::Certificate(format!("{}: not a PEM certificate: {e}", ca.display()))
        })?;
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                NetError::Certificate(format!("{}: not PEM certificates: {e}", cert.display()))
            })?;
        if chain.is_empty() {
            return Err(NetError::Certificate(format!(
                "{}: holds no certificate",
                cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            NetError::Certificate(format!("{}: not a PEM private key: {e}", key.display()))
        })?;
        Ok(Self { chain, key, root })
    }

    /// The certificate chain this node presents.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    fn roots(&self) -> Result<rustls::RootCertStore, NetError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.root.clone())
            .map_err(|e| NetError::Certificate(format!("the cluster CA is not usable: {e}")))?;
        Ok(roots)
    }

    /// The TLS server side with `provider`'s primitives and `time` for certificate validity: TLS 1.3, ALPN [`ALPN`], a client
    /// certificate from the cluster's CA required. (The simulator passes a seeded provider;
    /// nodes bound with [`NetNode::bind`](super::NetNode::bind) use the operating system's.)
    ///
    /// # Errors
    ///
    /// The certificates or key are not usable with `provider`.
    pub fn server_tls(
        &self,
        provider: Arc<rustls::crypto::CryptoProvider>,
        time: Arc<dyn rustls::time_provider::TimeProvider>,
    ) -> Result<rustls::ServerConfig, NetError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| NetError::Certificate(format!("client verifier: {e}")))?;
        let mut tls = rustls::ServerConfig::builder_with_details(provider, time)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(NetError::Tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(NetError::Tls)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        Ok(tls)
    }

    /// The TLS client side with `provider`'s primitives and `time` for certificate validity: TLS 1.3, ALPN [`ALPN`], this node's
    /// certificate presented, the server's checked against the cluster's CA.
    ///
    /// # Errors
    ///
    /// The certificates or key are not usable with `provider`.
    pub fn client_tls(
        &self,
        provider: Arc<rustls::crypto::CryptoProvider>,
        time: Arc<dyn rustls::time_provider::TimeProvider>,
    ) -> Result<rustls::ClientConfig, NetError> {
        let mut tls = rustls::ClientConfig::builder_with_details(provider, time)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(NetError::Tls)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(NetError::Tls)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        Ok(tls)
    }

    /// The QUIC server configuration of a node.
    pub(crate) fn server_config(&self) -> Result<quinn::ServerConfig, NetError> {
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(
            self.server_tls(crypto_provider(), wall_clock())?,
        )
        .map_err(|e| NetError::Certificate(format!("QUIC server TLS: {e}")))?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
    }

    /// The QUIC client configuration of a node.
    pub(crate) fn client_config(&self) -> Result<quinn::ClientConfig, NetError> {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(
            self.client_tls(crypto_provider(), wall_clock())?,
        )
        .map_err(|e| NetError::Certificate(format!("QUIC client TLS: {e}")))?;
        Ok(quinn::ClientConfig::new(Arc::new(crypto)))
    }
}

/// The TLS primitives of a node: rustls on *ring*. rustls 0.23.48 deprecates the *ring* provider for
/// lacking post-quantum key exchange; we keep it on purpose: the simulator must replace the key
/// exchange's randomness (SIMULATION.md), which *ring* lets us do and aws-lc-rs does not, and
/// the connections are between nodes of one cluster, authenticated by its own CA.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's wall clock, for certificate validity.
fn wall_clock() -> Arc<dyn rustls::time_provider::TimeProvider> {
    Arc::new(rustls::time_provider::DefaultTimeProvider)
}

/// An Ed25519 key pair from a 32-byte seed: the PKCS#8 v1 encoding is a fixed prefix and the
/// seed.
fn ed25519_key_from_seed(seed: [u8; 32]) -> Result<KeyPair, NetError> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let der = PrivatePkcs8KeyDer::from(der);
    KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ED25519).map_err(certificate_error)
}

/// Whether `cert` holds `key`'s public key (its raw bytes appear verbatim in the certificate; enough to tell a matching pair from a mismatched one without an X.509
/// parser).
fn holds_public_key(cert: &CertificateDer<'_>, key: &KeyPair) -> bool {
    let public = key.public_key_raw();
    cert.as_ref()
        .windows(public.len())
        .any(|window| window == public)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let io = |source| NetError::Io {
        path: PathBuf::from(path),
        source,
    };
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

fn certificate_error(error: rcgen::Error) -> NetError {
    NetError::Certificate(error.to_string())
}
