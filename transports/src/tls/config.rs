//! TLS configuration: [`ServerTlsConfig`] and [`ClientTlsConfig`], built on rustls with the
//! `ring` provider and secure defaults.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use torsion_reactor::{Error, Result};

/// Default time a TLS handshake may take before the connection is closed with
/// [`TlsError::HandshakeTimeout`](super::TlsError::HandshakeTimeout): 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bound of rustls's own outgoing buffer: 64 KiB, the stream transport's default high
/// watermark.
///
/// The TLS layer hands plaintext to rustls at most this much at a time and moves the records
/// rustls made to the stream transport at once, so rustls never holds more than this (plus
/// the records' overhead) of outgoing data; everything else waits in the stream transport's
/// write buffer, under its watermarks and hard limit, exactly as on plain TCP.
pub const DEFAULT_TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// Default TLS close timeout: 5 s.
///
/// After [`lose_connection`](torsion_reactor::Transport::lose_connection) has sent our
/// `close_notify` and the stream transport has handed everything we wrote to the socket, the
/// peer has this long to answer (its FIN, normally after its own `close_notify`) before the
/// connection is aborted. The answer costs the peer one round trip and no work, so 5 s covers
/// a slow intercontinental path many times over and a peer stalled for seconds, while a peer
/// that never answers holds the descriptor for 5 s rather than for the stream's 30 s close
/// timeout. The close is ours, so the protocol still sees
/// [`CloseReason::Done`](torsion_reactor::CloseReason::Done); see the TLS module's *Close
/// semantics*.
pub const DEFAULT_TLS_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The per-connection timeouts and bound a TLS configuration carries (server and client
/// alike), handed to each connection's TLS layer.
#[derive(Clone, Copy)]
pub(crate) struct TlsLimits {
    pub(crate) handshake_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) buffer_limit: usize,
}

impl Default for TlsLimits {
    fn default() -> Self {
        TlsLimits {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            close_timeout: DEFAULT_TLS_CLOSE_TIMEOUT,
            buffer_limit: DEFAULT_TLS_BUFFER_LIMIT,
        }
    }
}

/// The `ring` provider with rustls's default (safe) cipher suites, AES-128-GCM first within
/// each protocol version (rustls lists AES-256-GCM first; why, in
/// [`ServerTlsConfigBuilder::prefer_client_cipher_order`]).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite::{
        TLS13_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    };
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: TLS 1.3 before TLS 1.2 as rustls has them, the rest in rustls's order.
    provider.cipher_suites.sort_by_key(|suite| {
        let tls12 = suite.version() == &rustls::version::TLS12;
        let aes128 = matches!(
            suite.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        );
        (tls12, !aes128)
    });
    Arc::new(provider)
}

fn invalid(context: impl Into<String>, msg: impl fmt::Display) -> Error {
    Error::io(
        context,
        io::Error::new(io::ErrorKind::InvalidData, msg.to_string()),
    )
}

/// Reads every certificate of a PEM file (a chain: leaf first, then intermediates).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let context = format!("read certificates from {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(&context, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&context, e))?;
    if certs.is_empty() {
        return Err(invalid(context, "no CERTIFICATE block found in the file"));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file: PKCS#8 (`PRIVATE KEY`), RSA (`RSA PRIVATE
/// KEY`) or EC (`EC PRIVATE KEY`).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let context = format!("read private key from {}", path.display());
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        if !matches!(e, rustls_pki_types::pem::Error::Io(_)) && is_encrypted_key(path) {
            return invalid(
                context.as_str(),
                "encrypted private keys are not supported; decrypt it first \
                 (openssl pkey -in KEY.pem -out KEY-plain.pem)",
            );
        }
        pem_error(&context, e)
    })
}

/// Whether a key file that did not load holds a password-protected key: PKCS#8 `ENCRYPTED
/// PRIVATE KEY` or a legacy OpenSSL key with a `Proc-Type: 4,ENCRYPTED` header.
fn is_encrypted_key(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| {
        let text = String::from_utf8_lossy(&bytes);
        text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            || text.contains("Proc-Type: 4,ENCRYPTED")
    })
}

/// The error of a certificate chain and key rustls refused, saying what a mismatch means.
fn cert_key_error(context: &str, e: rustls::Error) -> Error {
    match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => invalid(
            context,
            "the private key does not match the certificate (the key must belong to the \
             first certificate of the chain file: the leaf first, then intermediates)",
        ),
        other => invalid(context, other),
    }
}

/// Rejects ALPN protocol names TLS cannot carry (empty, or longer than 255 bytes), which
/// rustls would otherwise only trip over during a handshake.
fn check_alpn(context: &str, protocols: &[Vec<u8>]) -> Result<()> {
    match protocols.iter().find(|p| p.is_empty() || p.len() > 255) {
        Some(bad) => Err(Error::io(
            context,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ALPN protocol names must be 1 to 255 bytes long (got one of {} bytes)",
                    bad.len()
                ),
            ),
        )),
        None => Ok(()),
    }
}

fn pem_error(context: &str, e: rustls_pki_types::pem::Error) -> Error {
    match e {
        rustls_pki_types::pem::Error::Io(io) => Error::io(context, io),
        rustls_pki_types::pem::Error::NoItemsFound => invalid(
            context,
            "no matching PEM block found (expected a certificate or a PKCS#8, RSA or EC key)",
        ),
        other => invalid(context, other),
    }
}

fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(format!("add CA from {}", path.display()), e))?;
    }
    Ok(roots)
}

/// A TLS server configuration: rustls's [`rustls::ServerConfig`] plus torsion's handshake
/// deadline, close timeout and buffer bound. Cheap to clone; share one across every listening
/// port.
#[derive(Clone)]
pub struct ServerTlsConfig {
    pub(crate) rustls: Arc<rustls::ServerConfig>,
    pub(crate) limits: TlsLimits,
}

impl ServerTlsConfig {
    /// A server with a certificate chain and key read from PEM files, with defaults (see
    /// [`ServerTlsConfigBuilder`]). With `client_ca`, clients must present a certificate
    /// issued by that CA (mutual TLS). This is what the `tls:` endpoint string uses.
    pub fn from_pem_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self> {
        let mut builder = Self::builder_from_pem_files(cert, key)?;
        if let Some(ca) = client_ca {
            builder = builder.require_client_certs_from_file(ca)?;
        }
        builder.build()
    }

    /// Starts a builder from a certificate chain (leaf first) and its private key.
    pub fn builder(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> ServerTlsConfigBuilder {
        ServerTlsConfigBuilder {
            chain,
            key,
            client_auth: ClientAuth::None,
            alpn: Vec::new(),
            limits: TlsLimits::default(),
            resumption: true,
            client_order: false,
        }
    }

    /// Starts a builder from PEM files: the chain (leaf first) and a PKCS#8, RSA or EC key.
    pub fn builder_from_pem_files(cert: &Path, key: &Path) -> Result<ServerTlsConfigBuilder> {
        Ok(Self::builder(
            load_certificates(cert)?,
            load_private_key(key)?,
        ))
    }

    /// Wraps a rustls configuration built by hand, with the default deadline, close timeout
    /// and buffer bound.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        ServerTlsConfig {
            rustls: config,
            limits: TlsLimits::default(),
        }
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        &self.rustls
    }

    /// The handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        self.limits.handshake_timeout
    }

    /// Returns this configuration with another handshake deadline.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.limits.handshake_timeout = timeout;
        self
    }

    /// The TLS close timeout (see [`DEFAULT_TLS_CLOSE_TIMEOUT`]).
    pub fn close_timeout(&self) -> Duration {
        self.limits.close_timeout
    }

    /// Returns this configuration with another TLS close timeout.
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.limits.close_timeout = timeout;
        self
    }

    /// The bound of rustls's outgoing buffer (see [`DEFAULT_TLS_BUFFER_LIMIT`]).
    pub fn buffer_limit(&self) -> usize {
        self.limits.buffer_limit
    }
}

impl fmt::Debug for ServerTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTlsConfig")
            .field("alpn", &self.rustls.alpn_protocols.len())
            .field("handshake_timeout", &self.limits.handshake_timeout)
            .field("close_timeout", &self.limits.close_timeout)
            .field("buffer_limit", &self.limits.buffer_limit)
            .finish()
    }
}

enum ClientAuth {
    None,
    Required(RootCertStore),
    Optional(RootCertStore),
}

/// Builds a [`ServerTlsConfig`]. Defaults:
///
/// - TLS 1.3 and 1.2, rustls's default (safe) cipher suites, the `ring` provider;
/// - the server chooses the cipher suite: AES-128-GCM whenever the client offers it (see
///   [`prefer_client_cipher_order`](Self::prefer_client_cipher_order) for why, and to let
///   the client choose instead);
/// - no client certificates asked for;
/// - no ALPN;
/// - session resumption on: an in-memory session cache (256 entries) and TLS 1.3 tickets;
/// - handshake deadline [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s);
/// - close timeout [`DEFAULT_TLS_CLOSE_TIMEOUT`] (5 s);
/// - rustls buffers bounded by [`DEFAULT_TLS_BUFFER_LIMIT`] (64 KiB).
#[must_use = "call build() to get the configuration"]
pub struct ServerTlsConfigBuilder {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth: ClientAuth,
    alpn: Vec<Vec<u8>>,
    limits: TlsLimits,
    resumption: bool,
    client_order: bool,
}

impl ServerTlsConfigBuilder {
    /// Requires every client to present a certificate issued by one of `roots` (mutual TLS);
    /// a client without one fails the handshake.
    pub fn require_client_certs(mut self, roots: RootCertStore) -> Self {
        self.client_auth = ClientAuth::Required(roots);
        self
    }

    /// [`require_client_certs`](Self::require_client_certs) with the CA certificates of a
    /// PEM file.
    pub fn require_client_certs_from_file(self, ca: &Path) -> Result<Self> {
        Ok(self.require_client_certs(roots_from_file(ca)?))
    }

    /// Asks clients for a certificate issued by one of `roots` but also accepts clients
    /// without one; a certificate that is presented must verify. Read it with
    /// [`TlsSession::peer_certificates`](super::TlsSession::peer_certificates).
    pub fn accept_client_certs(mut self, roots: RootCertStore) -> Self {
        self.client_auth = ClientAuth::Optional(roots);
        self
    }

    /// ALPN protocols offered, in order of preference (e.g. `["h2", "http/1.1"]`).
    pub fn alpn_protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// The handshake deadline (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.limits.handshake_timeout = timeout;
        self
    }

    /// How long a graceful close waits for the peer's answer once our `close_notify` and
    /// everything before it have been handed to the socket, before the connection is aborted
    /// (default 5 s, [`DEFAULT_TLS_CLOSE_TIMEOUT`]). The protocol still sees a clean close
    /// ([`CloseReason::Done`](torsion_reactor::CloseReason::Done)): the close was ours. The
    /// stream's own `ConnectionConfig::close_timeout` (30 s) still bounds the whole close,
    /// flushing included, so a value above it has no effect.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.limits.close_timeout = timeout;
        self
    }

    /// The bound of rustls's outgoing buffer (default 64 KiB, [`DEFAULT_TLS_BUFFER_LIMIT`];
    /// at least 1 KiB).
    pub fn buffer_limit(mut self, limit: usize) -> Self {
        self.limits.buffer_limit = limit.max(1024);
        self
    }

    /// Turns session resumption (cache and tickets) on or off (default on).
    pub fn session_resumption(mut self, on: bool) -> Self {
        self.resumption = on;
        self
    }

    /// Lets the client's order of preference choose the cipher suite (default off: the
    /// server's order chooses).
    ///
    /// By default the server takes AES-128-GCM whenever the client offers it, whatever the
    /// client's order: it is as safe for TLS as AES-256-GCM (TLS 1.3's mandatory suite, first
    /// in Mozilla's recommended order) and costs both ends less: in handshakes a SHA-256 key
    /// schedule, computed with the SHA extensions of current processors, rather than SHA-384,
    /// which most compute without such help (about 14 % of a server's CPU in TLS handshakes
    /// in our profiles, BENCHMARKS.md); in bulk 10 AES rounds per block rather than 14. Go's
    /// TLS stack prefers it too. Turn this on when clients without AES hardware are
    /// expected (they put ChaCha20-Poly1305 first, which the server then honours), or when a
    /// client's choice of AES-256-GCM must be honoured.
    pub fn prefer_client_cipher_order(mut self, on: bool) -> Self {
        self.client_order = on;
        self
    }

    /// Builds the configuration; fails if the key does not match the certificate or is of
    /// an unsupported type.
    pub fn build(self) -> Result<ServerTlsConfig> {
        check_alpn("TLS server configuration", &self.alpn)?;
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS server configuration", e))?;
        let optional = matches!(self.client_auth, ClientAuth::Optional(_));
        let builder = match self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required(roots) | ClientAuth::Optional(roots) => {
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                if optional {
                    verifier = verifier.allow_unauthenticated();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| invalid("TLS client certificate verifier", e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(self.chain, self.key)
            .map_err(|e| cert_key_error("TLS server certificate and key", e))?;
        config.alpn_protocols = self.alpn;
        config.ignore_client_order = !self.client_order;
        if self.resumption {
            config.ticketer = rustls::crypto::ring::Ticketer::new()
                .map_err(|e| invalid("TLS session tickets", e))?;
        } else {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        }
        Ok(ServerTlsConfig {
            rustls: Arc::new(config),
            limits: self.limits,
        })
    }
}

impl fmt::Debug for ServerTlsConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTlsConfigBuilder")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// A TLS client configuration: rustls's [`rustls::ClientConfig`] plus torsion's handshake
/// deadline, close timeout and buffer bound. Cheap to clone; share one across connections (it holds the
/// session cache used for resumption).
#[derive(Clone)]
pub struct ClientTlsConfig {
    pub(crate) rustls: Arc<rustls::ClientConfig>,
    pub(crate) limits: TlsLimits,
}

impl ClientTlsConfig {
    /// A client that trusts the Mozilla roots bundled in `webpki-roots`, with defaults.
    pub fn webpki() -> Self {
        Self::builder()
            .build()
            .expect("the default client configuration is valid")
    }

    /// A client that trusts only the CA certificates of a PEM file, with defaults.
    pub fn with_ca_file(ca: &Path) -> Result<Self> {
        Self::builder().ca_file(ca)?.build()
    }

    /// Starts a builder (see [`ClientTlsConfigBuilder`] for the defaults).
    pub fn builder() -> ClientTlsConfigBuilder {
        ClientTlsConfigBuilder {
            roots: None,
            webpki: false,
            client_cert: None,
            alpn: Vec::new(),
            insecure: false,
            limits: TlsLimits::default(),
            resumption: true,
        }
    }

    /// Wraps a rustls configuration built by hand, with the default deadline, close timeout
    /// and buffer bound.
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> Self {
        ClientTlsConfig {
            rustls: config,
            limits: TlsLimits::default(),
        }
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<rustls::ClientConfig> {
        &self.rustls
    }

    /// The handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        self.limits.handshake_timeout
    }

    /// Returns this configuration with another handshake deadline.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.limits.handshake_timeout = timeout;
        self
    }

    /// The TLS close timeout (see [`DEFAULT_TLS_CLOSE_TIMEOUT`]).
    pub fn close_timeout(&self) -> Duration {
        self.limits.close_timeout
    }

    /// Returns this configuration with another TLS close timeout.
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.limits.close_timeout = timeout;
        self
    }

    /// The bound of rustls's outgoing buffer (see [`DEFAULT_TLS_BUFFER_LIMIT`]).
    pub fn buffer_limit(&self) -> usize {
        self.limits.buffer_limit
    }
}

impl fmt::Debug for ClientTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTlsConfig")
            .field("alpn", &self.rustls.alpn_protocols.len())
            .field("handshake_timeout", &self.limits.handshake_timeout)
            .field("close_timeout", &self.limits.close_timeout)
            .field("buffer_limit", &self.limits.buffer_limit)
            .finish()
    }
}

/// Builds a [`ClientTlsConfig`]. Defaults:
///
/// - trust roots: the Mozilla roots of `webpki-roots`, unless CA certificates are given with
///   [`ca_file`](Self::ca_file) / [`ca_certificates`](Self::ca_certificates) or the
///   operating system's store is asked for with [`platform_roots`](Self::platform_roots)
///   (then only those, plus the webpki roots if [`webpki_roots`](Self::webpki_roots) is also
///   called);
/// - server certificate and host name verification always on, SNI always sent (for DNS
///   names); the only way off is the explicitly named
///   [`dangerous_skip_server_verification`](Self::dangerous_skip_server_verification);
/// - TLS 1.3 and 1.2, rustls's default (safe) cipher suites, AES-128-GCM offered first;
/// - no client certificate; no ALPN;
/// - session resumption on (in-memory cache of 256 sessions, tickets accepted);
/// - handshake deadline 10 s ([`DEFAULT_HANDSHAKE_TIMEOUT`]); close timeout 5 s
///   ([`DEFAULT_TLS_CLOSE_TIMEOUT`]); rustls buffers bounded to 64 KiB
///   ([`DEFAULT_TLS_BUFFER_LIMIT`]).
#[must_use = "call build() to get the configuration"]
pub struct ClientTlsConfigBuilder {
    roots: Option<RootCertStore>,
    webpki: bool,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: Vec<Vec<u8>>,
    insecure: bool,
    limits: TlsLimits,
    resumption: bool,
}

impl ClientTlsConfigBuilder {
    /// Also trusts the Mozilla roots of `webpki-roots` (the default when no CA is given).
    ///
    /// The bundle is compiled into the program: the same on every machine, independent of
    /// what the operating system trusts, and updated with the crate. Prefer
    /// [`platform_roots`](Self::platform_roots) where the machine's administrators decide
    /// what to trust (corporate CAs, distribution updates).
    pub fn webpki_roots(mut self) -> Self {
        self.webpki = true;
        self
    }

    /// Also trusts the operating system's trust store, read now with `rustls-native-certs`:
    /// on Linux and other Unix systems the CA bundle that OpenSSL uses (`SSL_CERT_FILE` /
    /// `SSL_CERT_DIR` if set, else the distribution's file or directory, such as
    /// `/etc/ssl/certs`), the keychain on macOS, the system store on Windows.
    ///
    /// Like [`ca_file`](Self::ca_file), this replaces the default webpki roots; call
    /// [`webpki_roots`](Self::webpki_roots) as well to trust both. Certificates in the store
    /// that cannot be parsed are skipped (logged at warn level) as long as at least one can
    /// be used.
    ///
    /// Fails with an [`Error::Io`] of kind [`io::ErrorKind::NotFound`] when the store holds
    /// no usable certificate (for example a minimal container without the `ca-certificates`
    /// package); the message carries what the loader reported and what to do.
    ///
    /// ```no_run
    /// use torsion_transports::tls::ClientTlsConfig;
    /// let config = ClientTlsConfig::builder().platform_roots()?.build()?;
    /// # Ok::<(), torsion_reactor::Error>(())
    /// ```
    pub fn platform_roots(self) -> Result<Self> {
        let loaded = rustls_native_certs::load_native_certs();
        let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        self.add_platform_certificates(loaded.certs, &errors)
    }

    /// Adds what the platform loader found (split out of `platform_roots` for testing).
    fn add_platform_certificates(
        mut self,
        certs: Vec<CertificateDer<'static>>,
        errors: &[String],
    ) -> Result<Self> {
        const CONTEXT: &str = "load the platform trust roots";
        let found = certs.len();
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(certs);
        if added == 0 {
            let what = if found == 0 {
                "no certificates found in the operating system's trust store".to_owned()
            } else {
                format!(
                    "none of the {found} certificates in the operating system's trust store \
                     could be used"
                )
            };
            let reported = if errors.is_empty() {
                String::new()
            } else {
                format!(" (the loader reported: {})", errors.join("; "))
            };
            return Err(Error::io(
                CONTEXT,
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{what}{reported}; install the system CA bundle (the ca-certificates \
                         package), point SSL_CERT_FILE or SSL_CERT_DIR at one, or trust \
                         webpki_roots() or a ca_file() instead"
                    ),
                ),
            ));
        }
        if ignored > 0 || !errors.is_empty() {
            tracing::warn!(
                added,
                ignored,
                errors = %errors.join("; "),
                "some platform trust roots could not be loaded; using the others"
            );
        }
        self.roots
            .get_or_insert_with(RootCertStore::empty)
            .roots
            .extend(store.roots);
        Ok(self)
    }

    /// Trusts the CA certificates of a PEM file.
    pub fn ca_file(mut self, ca: &Path) -> Result<Self> {
        let certs = load_certificates(ca)?;
        let roots = self.roots.get_or_insert_with(RootCertStore::empty);
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| invalid(format!("add CA from {}", ca.display()), e))?;
        }
        Ok(self)
    }

    /// Trusts these CA certificates.
    pub fn ca_certificates(mut self, certs: Vec<CertificateDer<'static>>) -> Result<Self> {
        let roots = self.roots.get_or_insert_with(RootCertStore::empty);
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| invalid("add CA certificate", e))?;
        }
        Ok(self)
    }

    /// Presents this certificate chain and key to servers that ask (mutual TLS).
    pub fn client_certificate(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        self.client_cert = Some((chain, key));
        self
    }

    /// [`client_certificate`](Self::client_certificate) from PEM files.
    pub fn client_certificate_pem_files(self, cert: &Path, key: &Path) -> Result<Self> {
        Ok(self.client_certificate(load_certificates(cert)?, load_private_key(key)?))
    }

    /// ALPN protocols offered, in order of preference.
    pub fn alpn_protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// **Insecure.** Accepts any server certificate for any name: the connection is encrypted
    /// but anyone on the path can impersonate the server. For tests against throwaway
    /// certificates only; prefer [`ca_file`](Self::ca_file) with the test CA.
    pub fn dangerous_skip_server_verification(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// The handshake deadline (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.limits.handshake_timeout = timeout;
        self
    }

    /// How long a graceful close waits for the peer's answer once our `close_notify` and
    /// everything before it have been handed to the socket, before the connection is aborted
    /// (default 5 s, [`DEFAULT_TLS_CLOSE_TIMEOUT`]). The protocol still sees a clean close
    /// ([`CloseReason::Done`](torsion_reactor::CloseReason::Done)): the close was ours. The
    /// stream's own `ConnectionConfig::close_timeout` (30 s) still bounds the whole close,
    /// flushing included, so a value above it has no effect.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.limits.close_timeout = timeout;
        self
    }

    /// The bound of rustls's outgoing buffer (default 64 KiB, [`DEFAULT_TLS_BUFFER_LIMIT`];
    /// at least 1 KiB).
    pub fn buffer_limit(mut self, limit: usize) -> Self {
        self.limits.buffer_limit = limit.max(1024);
        self
    }

    /// Turns session resumption on or off (default on).
    pub fn session_resumption(mut self, on: bool) -> Self {
        self.resumption = on;
        self
    }

    /// Builds the configuration.
    pub fn build(self) -> Result<ClientTlsConfig> {
        check_alpn("TLS client configuration", &self.alpn)?;
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS client configuration", e))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            let mut roots = self.roots.clone().unwrap_or_else(RootCertStore::empty);
            if self.webpki || self.roots.is_none() {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match self.client_cert {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| cert_key_error("TLS client certificate and key", e))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        if !self.resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(ClientTlsConfig {
            rustls: Arc::new(config),
            limits: self.limits,
        })
    }
}

impl fmt::Debug for ClientTlsConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTlsConfigBuilder")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// The verifier behind `dangerous_skip_server_verification`: checks signatures (so the
/// handshake is well-formed) but trusts any certificate for any name.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_der() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().der().clone()
    }

    fn not_found_message(result: Result<ClientTlsConfigBuilder>) -> String {
        let err = result.expect_err("an error");
        assert_eq!(
            err.io_error().map(io::Error::kind),
            Some(io::ErrorKind::NotFound),
            "{err}"
        );
        err.to_string()
    }

    #[test]
    fn empty_platform_store_is_a_typed_error_that_says_so() {
        let msg = not_found_message(
            ClientTlsConfig::builder()
                .add_platform_certificates(Vec::new(), &["no CA bundle at /nowhere".into()]),
        );
        assert!(msg.contains("no certificates found"), "{msg}");
        assert!(msg.contains("no CA bundle at /nowhere"), "{msg}");
        assert!(msg.contains("SSL_CERT_FILE"), "{msg}");
    }

    #[test]
    fn unusable_platform_certificates_are_a_typed_error() {
        let garbage = CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]);
        let msg = not_found_message(
            ClientTlsConfig::builder().add_platform_certificates(vec![garbage], &[]),
        );
        assert!(msg.contains("none of the 1 certificates"), "{msg}");
    }

    #[test]
    fn usable_platform_certificates_replace_the_default_roots() {
        let garbage = CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]);
        let builder = ClientTlsConfig::builder()
            .add_platform_certificates(vec![garbage, ca_der()], &["one bad file".into()])
            .unwrap();
        assert_eq!(builder.roots.as_ref().map(RootCertStore::len), Some(1));
        assert!(
            !builder.webpki,
            "the webpki roots are no longer added by default"
        );
        builder.build().unwrap();
    }
}
