//! TLS through the in-memory test kit: a real rustls client and server, no sockets, on a
//! virtual clock.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

mod util;

use rcgen::{CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::CertificateError;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use torsion_reactor::prelude::*;
use torsion_reactor::testing::{
    connect_pair, MemoryOptions, MemoryPair, MemoryReactor, StringTransport,
};
use torsion_transports::tls::{
    self, ClientTlsConfig, DevCerts, ServerTlsConfig, TlsError, TlsProtocol, TlsRole, TlsSession,
    DEFAULT_TLS_BUFFER_LIMIT, MAX_EARLY_PLAINTEXT,
};

#[derive(Default)]
struct Log {
    made: bool,
    data: Vec<u8>,
    lost: Option<CloseReason>,
    session: Option<TlsSession>,
    handle: Option<TransportHandle>,
}

type Shared = Rc<RefCell<Log>>;

/// Writes `greet` on connection, records everything, optionally echoes, and closes once
/// `close_after` bytes arrived.
struct Rec {
    log: Shared,
    greet: Vec<u8>,
    echo: bool,
    close_after: Option<usize>,
}

impl Rec {
    fn new(log: &Shared) -> Self {
        Rec {
            log: log.clone(),
            greet: Vec::new(),
            echo: false,
            close_after: None,
        }
    }
    fn echo(log: &Shared) -> Self {
        Rec {
            echo: true,
            ..Rec::new(log)
        }
    }
    fn greeting(log: &Shared, greet: &[u8], close_after: usize) -> Self {
        Rec {
            greet: greet.to_vec(),
            close_after: Some(close_after),
            ..Rec::new(log)
        }
    }
}

impl Protocol for Rec {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let mut log = self.log.borrow_mut();
        log.made = true;
        log.session = tls::session(t);
        log.handle = Some(t.handle());
        drop(log);
        // Many small writes in one callback: coalesced by the layer.
        for chunk in self.greet.chunks(7) {
            t.write(chunk);
        }
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        let mut log = self.log.borrow_mut();
        log.data.extend_from_slice(data);
        let n = log.data.len();
        drop(log);
        if self.echo {
            t.write(data);
        }
        if self.close_after.is_some_and(|c| n >= c) {
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        let mut log = self.log.borrow_mut();
        assert!(log.lost.is_none(), "connection_lost twice");
        log.lost = Some(reason);
    }
}

fn log() -> Shared {
    Rc::new(RefCell::new(Log::default()))
}

fn certs(hosts: &[&str]) -> (tempfile::TempDir, DevCerts) {
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<String> = hosts.iter().map(|s| s.to_string()).collect();
    let certs = tls::create_dev_certs(dir.path(), &hosts).unwrap();
    (dir, certs)
}

fn server_config(c: &DevCerts) -> ServerTlsConfig {
    ServerTlsConfig::from_pem_files(&c.server_cert, &c.server_key, None).unwrap()
}

fn client_config(c: &DevCerts) -> ClientTlsConfig {
    ClientTlsConfig::with_ca_file(&c.ca_cert).unwrap()
}

fn tls_error(reason: &Option<CloseReason>) -> TlsError {
    let reason = reason.as_ref().expect("connection lost");
    TlsError::from_reason(reason)
        .unwrap_or_else(|| panic!("not a TLS failure: {reason}"))
        .clone()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn handshake_and_echo() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let msg = pattern(50_000);
    let pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(
            Rec::greeting(&cl, &msg, msg.len()),
            &client_config(&c),
            "localhost",
        )
        .unwrap(),
        TlsProtocol::server(Rec::echo(&sl), &server_config(&c)),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    let cl = cl.borrow();
    assert!(cl.made);
    assert_eq!(cl.data, msg);
    assert!(cl.lost.as_ref().unwrap().is_clean(), "{:?}", cl.lost);
    assert!(sl.borrow().lost.as_ref().unwrap().is_clean());
    let session = cl.session.clone().unwrap();
    assert!(session.handshake_complete);
    assert!(!session.is_server);
    assert_eq!(session.server_name.as_deref(), Some("localhost"));
    assert_eq!(
        session.protocol_version,
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert!(!session.peer_certificates.is_empty());
    let server_session = sl.borrow().session.clone().unwrap();
    assert!(server_session.is_server);
    assert_eq!(server_session.server_name.as_deref(), Some("localhost"));
    assert!(server_session.peer_certificates.is_empty());
    assert!(pair.client_lost().unwrap().is_clean());
}

#[test]
fn one_byte_ciphertext_chunks() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let msg = pattern(3_000);
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(
            Rec::greeting(&cl, &msg, msg.len()),
            &client_config(&c),
            "localhost",
        )
        .unwrap(),
        TlsProtocol::server(Rec::echo(&sl), &server_config(&c)),
        MemoryOptions::chunked(1),
    );
    mr.run_until_idle();
    assert_eq!(cl.borrow().data, msg);
    assert!(cl.borrow().lost.as_ref().unwrap().is_clean());
    assert_eq!(sl.borrow().data, msg);
}

#[test]
fn small_writes_in_one_callback_arrive_whole() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let msg = pattern(7_000); // 1000 writes of 7 bytes in one callback
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Rec::new(&cl), &client_config(&c), "localhost").unwrap(),
        TlsProtocol::server(Rec::greeting(&sl, &msg, usize::MAX), &server_config(&c)),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    assert_eq!(cl.borrow().data, msg);
    // The records on the wire are counted in `one_byte_writes_in_one_callback_become_one_record`.
}

#[test]
fn alpn_is_negotiated_and_readable() {
    let (_d, c) = certs(&[]);
    let server = ServerTlsConfig::builder_from_pem_files(&c.server_cert, &c.server_key)
        .unwrap()
        .alpn_protocols(["h2", "http/1.1"])
        .build()
        .unwrap();
    let client = ClientTlsConfig::builder()
        .ca_file(&c.ca_cert)
        .unwrap()
        .alpn_protocols(["http/1.1"])
        .build()
        .unwrap();
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Rec::new(&cl), &client, "127.0.0.1").unwrap(),
        TlsProtocol::server(Rec::new(&sl), &server),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    let alpn = |l: &Shared| l.borrow().session.clone().unwrap().alpn_protocol;
    assert_eq!(alpn(&cl).as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(alpn(&sl).as_deref(), Some(&b"http/1.1"[..]));
}

/// The cipher suite a handshake between `client` and `server` settles on.
fn negotiated_suite(client: &ClientTlsConfig, server: &ServerTlsConfig) -> rustls::CipherSuite {
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Rec::new(&cl), client, "localhost").unwrap(),
        TlsProtocol::server(Rec::new(&sl), server),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    let suite = |l: &Shared| l.borrow().session.clone().unwrap().cipher_suite.unwrap();
    assert_eq!(suite(&cl), suite(&sl));
    suite(&sl)
}

/// A rustls client with rustls's own defaults (AES-256-GCM first), trusting `c`'s CA.
fn rustls_default_client(c: &DevCerts) -> ClientTlsConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certificates(&c.ca_cert).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    assert_eq!(
        provider.cipher_suites[0].suite(),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        "rustls's own first choice"
    );
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ClientTlsConfig::from_rustls(Arc::new(config))
}

#[test]
fn server_chooses_aes128_gcm_unless_told_to_follow_the_client() {
    use rustls::CipherSuite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
    let (_d, c) = certs(&[]);
    let server = |client_order| {
        ServerTlsConfig::builder_from_pem_files(&c.server_cert, &c.server_key)
            .unwrap()
            .prefer_client_cipher_order(client_order)
            .build()
            .unwrap()
    };
    let aes256_first = rustls_default_client(&c);
    assert_eq!(
        negotiated_suite(&aes256_first, &server(false)),
        TLS13_AES_128_GCM_SHA256
    );
    assert_eq!(
        negotiated_suite(&aes256_first, &server(true)),
        TLS13_AES_256_GCM_SHA384
    );
    // torsion's own clients offer AES-128-GCM first.
    let ours = ClientTlsConfig::with_ca_file(&c.ca_cert).unwrap();
    assert_eq!(
        negotiated_suite(&ours, &server(true)),
        TLS13_AES_128_GCM_SHA256
    );
}

/// A client trusting `ca`'s CA and presenting `cert`'s client certificate.
fn mtls_client(ca: &DevCerts, cert: &DevCerts) -> ClientTlsConfig {
    ClientTlsConfig::builder()
        .ca_file(&ca.ca_cert)
        .unwrap()
        .client_certificate_pem_files(&cert.client_cert, &cert.client_key)
        .unwrap()
        .build()
        .unwrap()
}

fn mtls_server(c: &DevCerts) -> ServerTlsConfig {
    ServerTlsConfig::from_pem_files(&c.server_cert, &c.server_key, Some(&c.ca_cert)).unwrap()
}

#[test]
fn mutual_tls_accepted() {
    let (_d, c) = certs(&[]);
    let client = mtls_client(&c, &c);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Rec::greeting(&cl, b"ping", 4), &client, "localhost").unwrap(),
        TlsProtocol::server(Rec::echo(&sl), &mtls_server(&c)),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    assert_eq!(cl.borrow().data, b"ping");
    let session = sl.borrow().session.clone().unwrap();
    assert_eq!(
        session.peer_certificates.len(),
        2,
        "client chain: leaf + CA"
    );
}

#[test]
fn mutual_tls_refused_without_client_certificate() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(
            Rec::greeting(&cl, b"ping", 4),
            &client_config(&c),
            "localhost",
        )
        .unwrap(),
        TlsProtocol::server(Rec::echo(&sl), &mtls_server(&c)),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    let sl = sl.borrow();
    assert!(
        !sl.made,
        "the server protocol never saw the unauthenticated client"
    );
    assert!(sl.data.is_empty());
    let err = tls_error(&sl.lost);
    assert!(
        matches!(
            err.rustls_error(),
            Some(rustls::Error::NoCertificatesPresented)
        ),
        "{err}"
    );
    // The client learns through the server's alert.
    let err = tls_error(&cl.borrow().lost);
    assert!(
        matches!(err.rustls_error(), Some(rustls::Error::AlertReceived(_))),
        "{err}"
    );
    assert!(cl.borrow().data.is_empty());
}

/// Runs a handshake where the client should reject the server; returns the client's error.
fn client_rejects(server: ServerTlsConfig, client: ClientTlsConfig, name: &str) -> TlsError {
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Rec::greeting(&cl, b"secret", 6), &client, name).unwrap(),
        TlsProtocol::server(Rec::greeting(&sl, b"server secret", 1), &server),
        MemoryOptions::default(),
    );
    mr.advance(Duration::from_secs(60));
    assert!(!cl.borrow().made);
    assert!(
        cl.borrow().data.is_empty(),
        "no application byte before verification"
    );
    assert!(
        sl.borrow().data.is_empty(),
        "no application byte before verification"
    );
    assert!(sl.borrow().lost.is_some());
    let err = tls_error(&cl.borrow().lost);
    err
}

#[test]
fn hostname_mismatch_fails_with_its_reason() {
    let (_d, c) = certs(&[]);
    let err = client_rejects(server_config(&c), client_config(&c), "example.com");
    assert!(
        matches!(
            err.certificate_error(),
            Some(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err}"
    );
}

#[test]
fn unknown_ca_fails_with_its_reason() {
    let (_d, c) = certs(&[]);
    let err = client_rejects(server_config(&c), ClientTlsConfig::webpki(), "localhost");
    assert!(
        matches!(
            err.certificate_error(),
            Some(CertificateError::UnknownIssuer)
        ),
        "{err}"
    );
}

/// A CA and an expired server certificate for localhost.
fn expired(dir: &Path) -> (ServerTlsConfig, ClientTlsConfig) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let cert = params.signed_by(&key, &ca).unwrap();
    let server = ServerTlsConfig::builder(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .build()
    .unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let client = ClientTlsConfig::with_ca_file(&ca_path).unwrap();
    let _: &CertificateDer<'_> = ca.der();
    (server, client)
}

#[test]
fn expired_certificate_fails_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = expired(dir.path());
    let err = client_rejects(server, client, "localhost");
    assert!(
        matches!(
            err.certificate_error(),
            Some(CertificateError::Expired | CertificateError::ExpiredContext { .. })
        ),
        "{err}"
    );
}

#[test]
fn eof_without_close_notify_is_truncation() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let (server, raw) = util::RawEnd::new(TlsProtocol::server(
        Rec::greeting(&sl, b"partial", usize::MAX),
        &server_config(&c),
    ));
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Rec::new(&cl), &client_config(&c), "localhost").unwrap(),
        server,
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    assert_eq!(cl.borrow().data, b"partial");
    // The server's stream closes (FIN) without a TLS close_notify.
    raw.borrow().clone().unwrap().lose_connection();
    mr.advance(Duration::from_secs(1));
    let err = tls_error(&cl.borrow().lost);
    assert!(matches!(err, TlsError::Truncated), "{err}");
}

/// Closes (or aborts) in `connection_made` and records any data it is still given.
struct CloseAtOnce {
    abort: bool,
    log: Shared,
}

impl Protocol for CloseAtOnce {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.log.borrow_mut().made = true;
        if self.abort {
            t.abort_connection();
        } else {
            t.lose_connection();
        }
    }
    fn data_received(&mut self, _: &mut dyn Transport, data: &[u8]) {
        self.log.borrow_mut().data.extend_from_slice(data);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

/// The client's first data arrives in the same read as its Finished: a server protocol that
/// closed or aborted in `connection_made` must not be given it (as on TCP).
fn no_data_after_closing_in_connection_made(abort: bool) {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(
            Rec::greeting(&cl, b"hello from the client", usize::MAX),
            &client_config(&c),
            "localhost",
        )
        .unwrap(),
        TlsProtocol::server(
            CloseAtOnce {
                abort,
                log: sl.clone(),
            },
            &server_config(&c),
        ),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    let server = sl.borrow();
    assert!(server.made);
    assert!(
        server.data.is_empty(),
        "data reached a closed protocol: {:?}",
        String::from_utf8_lossy(&server.data)
    );
    assert!(server.lost.is_some());
}

#[test]
fn no_data_reaches_a_protocol_that_closed_in_connection_made() {
    no_data_after_closing_in_connection_made(false);
}

#[test]
fn no_data_reaches_a_protocol_that_aborted_in_connection_made() {
    no_data_after_closing_in_connection_made(true);
}

/// Pauses reading in `connection_made` and records the data it is given.
struct PauseAtOnce {
    log: Shared,
}

impl Protocol for PauseAtOnce {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let mut log = self.log.borrow_mut();
        log.made = true;
        log.handle = Some(t.handle());
        drop(log);
        t.pause_reading();
    }
    fn data_received(&mut self, _: &mut dyn Transport, data: &[u8]) {
        self.log.borrow_mut().data.extend_from_slice(data);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

/// A TLS pair whose server protocol pauses reading in `connection_made`, run for 100 ms (the
/// handshake and the client's first data).
fn paused_server_pair(
    mr: &MemoryReactor,
    c: &DevCerts,
    client: impl Protocol,
    server_log: &Shared,
) -> MemoryPair {
    let pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(client, &client_config(c), "localhost").unwrap(),
        TlsProtocol::server(
            PauseAtOnce {
                log: server_log.clone(),
            },
            &server_config(c),
        ),
        MemoryOptions::default(),
    );
    mr.advance(Duration::from_millis(100));
    pair
}

/// The client's first data arrives in the same read as its Finished: a server protocol that
/// paused reading in `connection_made` is not given it until it resumes (as on TCP), and then
/// gets it once, in order, followed by what came later.
#[test]
fn no_data_after_pause_reading_in_connection_made() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let client = Rec::greeting(&cl, b"early application data", usize::MAX);
    let _pair = paused_server_pair(&mr, &c, client, &sl);
    assert!(sl.borrow().made);
    assert!(
        sl.borrow().data.is_empty(),
        "delivered while paused: {:?}",
        String::from_utf8_lossy(&sl.borrow().data)
    );
    // More data while paused: held too, and delivered after the first.
    let client = cl.borrow().handle.clone().unwrap();
    client.write(b" and more");
    mr.advance(Duration::from_millis(100));
    assert!(sl.borrow().data.is_empty());
    let server = sl.borrow().handle.clone().unwrap();
    server.resume_reading();
    mr.advance(Duration::from_millis(100));
    assert_eq!(
        String::from_utf8_lossy(&sl.borrow().data),
        "early application data and more"
    );
    // Pausing again holds new data back again.
    server.pause_reading();
    client.write(b"!");
    mr.advance(Duration::from_millis(100));
    assert_eq!(sl.borrow().data, b"early application data and more");
    server.resume_reading();
    mr.advance(Duration::from_millis(100));
    assert_eq!(sl.borrow().data, b"early application data and more!");
    assert!(sl.borrow().lost.is_none());
}

/// Writes its greeting and closes at once: data and `close_notify` follow the Finished.
struct GreetAndClose;

impl Protocol for GreetAndClose {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"all I have to say");
        t.lose_connection();
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

/// The peer's `close_notify` behind data held for a paused protocol waits for that data: after
/// `resume_reading` the protocol gets the data, then the clean close.
#[test]
fn close_notify_after_held_data_waits_for_resume() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let sl = log();
    let _pair = paused_server_pair(&mr, &c, GreetAndClose, &sl);
    assert!(sl.borrow().data.is_empty());
    assert!(sl.borrow().lost.is_none());
    let server = sl.borrow().handle.clone().unwrap();
    server.resume_reading();
    mr.advance(Duration::from_secs(1));
    let log = sl.borrow();
    assert_eq!(log.data, b"all I have to say");
    assert!(
        matches!(log.lost, Some(CloseReason::Done)),
        "{:?}",
        log.lost
    );
}

/// Data held back while paused is not delivered once the protocol closed.
#[test]
fn held_data_is_dropped_after_close_while_paused() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let client = Rec::greeting(&cl, b"early application data", usize::MAX);
    let _pair = paused_server_pair(&mr, &c, client, &sl);
    let server = sl.borrow().handle.clone().unwrap();
    server.resume_reading();
    server.lose_connection();
    mr.advance(Duration::from_secs(1));
    let log = sl.borrow();
    assert!(
        log.data.is_empty(),
        "held data reached a closed protocol: {:?}",
        String::from_utf8_lossy(&log.data)
    );
    assert!(log.lost.is_some());
}

#[test]
fn abort_resets_without_close_notify() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Rec::new(&cl), &client_config(&c), "localhost").unwrap(),
        TlsProtocol::server(Rec::new(&sl), &server_config(&c)),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    assert!(cl.borrow().made && sl.borrow().made);
    // Writes and an abort through a handle, outside callbacks.
    let handle = cl.borrow().handle.clone().unwrap();
    assert!(tls::session(&*handle).is_some());
    handle.write(b"before abort");
    mr.run_until_idle();
    assert_eq!(sl.borrow().data, b"before abort");
    handle.abort_connection();
    mr.run_until_idle();
    assert!(matches!(cl.borrow().lost, Some(CloseReason::Aborted)));
    assert!(
        matches!(sl.borrow().lost, Some(CloseReason::Reset)),
        "{:?}",
        sl.borrow().lost
    );
}

#[test]
fn garbage_is_rejected_and_stalled_handshake_times_out() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let sl = log();
    let st = StringTransport::connect(&mr, TlsProtocol::server(Rec::new(&sl), &server_config(&c)));
    st.feed(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n");
    mr.advance(Duration::from_secs(1));
    let alert = st.take();
    assert_eq!(
        alert.first(),
        Some(&0x15),
        "the server answers garbage with an alert"
    );
    assert!(st.fin_received(), "and FIN");
    st.feed_eof();
    let err = tls_error(&sl.borrow().lost);
    assert!(err.rustls_error().is_some(), "{err}");
    assert!(!sl.borrow().made);

    let stalled = log();
    let st = StringTransport::connect(
        &mr,
        TlsProtocol::server(Rec::new(&stalled), &server_config(&c)),
    );
    st.feed(&[0x16, 0x03, 0x01]); // the start of a record, then nothing
    mr.advance(Duration::from_secs(9));
    assert!(stalled.borrow().lost.is_none());
    mr.advance(Duration::from_secs(2));
    let err = tls_error(&stalled.borrow().lost);
    assert!(matches!(err, TlsError::HandshakeTimeout(_)), "{err}");
    assert!(st.reset_received());
}

/// A line protocol that upgrades on `STARTTLS`: the client sends the command, the server
/// answers `OK` in the clear and upgrades, the client upgrades on `OK`.
struct StartTlsServer {
    log: Shared,
    config: ServerTlsConfig,
    upgraded: bool,
}

impl Protocol for StartTlsServer {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.log.borrow_mut().data.extend_from_slice(data);
        if !self.upgraded && self.log.borrow().data.ends_with(b"STARTTLS\n") {
            self.upgraded = true;
            t.write(b"OK\n");
            assert!(tls::start_tls(t, TlsRole::Server(self.config.clone())));
        } else if self.upgraded {
            assert!(tls::session(t).is_some());
            t.write(data); // echo, encrypted
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

struct StartTlsClient {
    log: Shared,
    config: ClientTlsConfig,
    upgraded: bool,
}

impl Protocol for StartTlsClient {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"HELLO\nSTARTTLS\n");
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if !self.upgraded && data == b"OK\n" {
            self.upgraded = true;
            let log = self.log.clone();
            assert!(tls::start_tls_with(
                t,
                TlsRole::Client {
                    config: self.config.clone(),
                    server_name: "localhost".into(),
                },
                move |t| {
                    log.borrow_mut().session = tls::session(t);
                    t.write(b"secret");
                }
            ));
        } else {
            self.log.borrow_mut().data.extend_from_slice(data);
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

#[test]
fn starttls_mid_stream() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let _pair = connect_pair(
        mr.reactor(),
        StartTlsClient {
            log: cl.clone(),
            config: client_config(&c),
            upgraded: false,
        },
        StartTlsServer {
            log: sl.clone(),
            config: server_config(&c),
            upgraded: false,
        },
        MemoryOptions::chunked(5),
    );
    mr.advance(Duration::from_secs(1));
    assert_eq!(cl.borrow().data, b"secret");
    assert!(cl.borrow().session.as_ref().unwrap().handshake_complete);
    let server_saw = sl.borrow().data.clone();
    assert!(server_saw.starts_with(b"HELLO\nSTARTTLS\n"));
    assert!(server_saw.ends_with(b"secret"));
    assert!(cl.borrow().lost.as_ref().unwrap().is_clean());
    assert!(
        sl.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        sl.borrow().lost
    );
}

/// Upgrades on `STARTTLS` and writes right after `start_tls` in the same callback, then,
/// once the client's first encrypted bytes arrive, writes and closes through the handle it
/// took in `connection_made`, before the upgrade.
struct EagerStartTlsServer {
    config: ServerTlsConfig,
    handle: Option<TransportHandle>,
    upgraded: bool,
    /// What a second `start_tls` in the same callback returned.
    second_start_tls: Rc<Cell<Option<bool>>>,
}

impl Protocol for EagerStartTlsServer {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.handle = Some(t.handle());
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if !self.upgraded && data.ends_with(b"STARTTLS\n") {
            self.upgraded = true;
            t.write(b"OK\n");
            assert!(tls::start_tls(t, TlsRole::Server(self.config.clone())));
            let again = tls::start_tls(t, TlsRole::Server(self.config.clone()));
            self.second_start_tls.set(Some(again));
            t.write(b"after start_tls;");
        } else if self.upgraded {
            let old = self.handle.as_ref().unwrap();
            assert!(tls::session(&**old).is_some(), "the old handle reaches TLS");
            old.write(b"through the old handle");
            old.lose_connection();
        }
    }
}

/// Collects what arrives after the upgrade it makes on `OK`.
struct StartTlsCollector {
    log: Shared,
    config: ClientTlsConfig,
    upgraded: bool,
}

impl Protocol for StartTlsCollector {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"STARTTLS\n");
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if !self.upgraded && data == b"OK\n" {
            self.upgraded = true;
            let role = TlsRole::Client {
                config: self.config.clone(),
                server_name: "localhost".into(),
            };
            assert!(tls::start_tls_with(t, role, |t| t.write(b"go")));
        } else {
            self.log.borrow_mut().data.extend_from_slice(data);
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

/// Nothing the server writes after `start_tls` goes out in the clear: not what it writes in
/// the same callback, not what goes through a handle taken before the upgrade (its
/// `lose_connection` included, which sends `close_notify`). The client decrypts all of it.
#[test]
fn after_start_tls_everything_is_encrypted_also_through_old_handles() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let cl = log();
    let pair = connect_pair(
        mr.reactor(),
        StartTlsCollector {
            log: cl.clone(),
            config: client_config(&c),
            upgraded: false,
        },
        EagerStartTlsServer {
            config: server_config(&c),
            handle: None,
            upgraded: false,
            second_start_tls: Rc::default(),
        },
        MemoryOptions::default(),
    );
    mr.advance(Duration::from_secs(1));
    assert_eq!(
        cl.borrow().data,
        b"after start_tls;through the old handle",
        "everything arrived, decrypted (client: {:?}, server: {:?})",
        cl.borrow().lost,
        pair.server_lost()
    );
    assert!(
        cl.borrow().lost.as_ref().unwrap().is_clean(),
        "close_notify came through TLS: {:?}",
        cl.borrow().lost
    );
    assert!(pair.server_lost().unwrap().is_clean());
}

#[test]
fn start_tls_twice_in_one_callback_is_refused_the_second_time() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let second = Rc::new(Cell::new(None));
    let st = StringTransport::connect(
        &mr,
        EagerStartTlsServer {
            config: server_config(&c),
            handle: None,
            upgraded: false,
            second_start_tls: second.clone(),
        },
    );
    st.feed(b"STARTTLS\n");
    assert_eq!(second.get(), Some(false), "one upgrade per connection");
    let wire = st.take();
    assert!(wire.starts_with(b"OK\n"));
    assert!(
        !wire.windows(9).any(|w| w == b"start_tls"),
        "nothing after start_tls in the clear: {:?}",
        String::from_utf8_lossy(&wire)
    );
}

// ---- records on the wire, flow control, buffer bounds --------------------------------------

/// A bare rustls server at the far end of a `StringTransport` whose near end runs our TLS
/// client layer; the test moves the bytes, so it sees the ciphertext our side wrote.
struct Wire {
    st: StringTransport,
    conn: rustls::ServerConnection,
    /// Plaintext our side sent.
    plain: Vec<u8>,
}

impl Wire {
    fn connect(
        mr: &MemoryReactor,
        inner: impl Protocol,
        client: &ClientTlsConfig,
        c: &DevCerts,
    ) -> Self {
        Wire {
            st: StringTransport::connect(
                mr,
                TlsProtocol::client(inner, client, "localhost").unwrap(),
            ),
            conn: rustls::ServerConnection::new(server_config(c).rustls().clone()).unwrap(),
            plain: Vec::new(),
        }
    }

    /// Takes the ciphertext our side wrote, hands it to rustls, and returns it.
    fn pump_in(&mut self) -> Vec<u8> {
        use std::io::Read;
        let bytes = self.st.take();
        let mut rest = &bytes[..];
        while !rest.is_empty() && self.conn.read_tls(&mut rest).unwrap() > 0 {
            self.conn.process_new_packets().expect("valid TLS");
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = self.conn.reader().read(&mut buf) {
                self.plain.extend_from_slice(&buf[..n]);
            }
        }
        bytes
    }

    /// Hands our side what rustls has to send.
    fn pump_out(&mut self) {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out).unwrap();
        }
        if !out.is_empty() {
            self.st.feed(&out);
        }
    }

    fn handshake(&mut self) {
        for _ in 0..10 {
            self.pump_out();
            let moved = self.pump_in().len();
            if !self.conn.is_handshaking() && !self.conn.wants_write() && moved == 0 {
                return;
            }
        }
        panic!("the handshake did not finish in 10 round trips");
    }

    /// Sends our side application data.
    fn send(&mut self, data: &[u8]) {
        use std::io::Write;
        self.conn.writer().write_all(data).unwrap();
        self.pump_out();
    }
}

/// The TLS records in `wire` as (content type, length); asserts it holds whole records only.
fn records(wire: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= wire.len() {
        let len = u16::from_be_bytes([wire[at + 3], wire[at + 4]]) as usize;
        out.push((wire[at], len));
        at += 5 + len;
    }
    assert_eq!(at, wire.len(), "the ciphertext is made of whole records");
    out
}

const APPLICATION_DATA: u8 = 23;

/// Writes `count` one-byte writes when the peer says anything, and notes what the transport
/// had buffered at the end of the callback.
struct Burst {
    count: usize,
    buffered_in_callback: Rc<Cell<usize>>,
    handle: Rc<RefCell<Option<TransportHandle>>>,
}

impl Protocol for Burst {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        *self.handle.borrow_mut() = Some(t.handle());
    }
    fn data_received(&mut self, t: &mut dyn Transport, _data: &[u8]) {
        for i in 0..self.count {
            t.write(&[i as u8]);
        }
        self.buffered_in_callback.set(t.buffered());
    }
}

#[test]
fn one_byte_writes_in_one_callback_become_one_record() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let in_callback = Rc::new(Cell::new(0));
    let handle = Rc::new(RefCell::new(None));
    let burst = Burst {
        count: 1000,
        buffered_in_callback: in_callback.clone(),
        handle: handle.clone(),
    };
    let mut w = Wire::connect(&mr, burst, &client_config(&c), &c);
    w.handshake();
    assert!(w.pump_in().is_empty(), "nothing else in flight");

    // 1,000 one-byte writes inside one callback.
    w.send(b"go");
    assert_eq!(
        in_callback.get(),
        1000,
        "collected during the callback, not encrypted write by write"
    );
    let wire = w.pump_in();
    let recs = records(&wire);
    assert!(
        recs.iter().all(|&(ty, _)| ty == APPLICATION_DATA),
        "{recs:?}"
    );
    assert!(
        !recs.is_empty() && recs.len() <= 2,
        "1,000 writes made {} records: {recs:?}",
        recs.len()
    );
    assert_eq!(w.plain, (0..1000).map(|i| i as u8).collect::<Vec<_>>());
    let handle = handle.borrow().clone().unwrap();
    assert_eq!(handle.buffered(), 0, "flushed when the callback returned");

    // 1,000 one-byte writes from outside callbacks, in one reactor turn.
    for i in 0..1000 {
        handle.write(&[(i % 7) as u8]);
    }
    assert_eq!(w.st.pending(), 0, "held until the end of the turn");
    assert_eq!(handle.buffered(), 1000);
    mr.run_until_idle();
    let recs = records(&w.pump_in());
    assert!(
        !recs.is_empty() && recs.len() <= 2,
        "1,000 writes in one turn made {} records: {recs:?}",
        recs.len()
    );
    assert_eq!(w.plain.len(), 2000);
    assert_eq!(handle.buffered(), 0);
}

#[test]
fn rustls_buffer_limit_bounds_each_handoff() {
    let (_d, c) = certs(&[]);
    let big = pattern(64 * 1024);
    let record_sizes = |config: &ClientTlsConfig| {
        let mr = MemoryReactor::new();
        let handle = Rc::new(RefCell::new(None));
        let burst = Burst {
            count: 0,
            buffered_in_callback: Rc::new(Cell::new(0)),
            handle: handle.clone(),
        };
        let mut w = Wire::connect(&mr, burst, config, &c);
        w.handshake();
        handle.borrow().clone().unwrap().write(&big);
        mr.run_until_idle();
        let recs = records(&w.pump_in());
        assert!(w.plain == big, "everything arrives whatever the limit");
        recs.into_iter().map(|(_, len)| len).collect::<Vec<_>>()
    };
    // Default limit (64 KiB): full 16 KiB records.
    let default = record_sizes(&client_config(&c));
    assert_eq!(client_config(&c).buffer_limit(), DEFAULT_TLS_BUFFER_LIMIT);
    assert!(default.len() <= 5, "{default:?}");
    // A 1 KiB limit: rustls never takes more than about 1 KiB of plaintext at a time.
    let small = ClientTlsConfig::builder()
        .ca_file(&c.ca_cert)
        .unwrap()
        .buffer_limit(1024)
        .build()
        .unwrap();
    let limited = record_sizes(&small);
    assert!(limited.len() >= 64, "{} records", limited.len());
    assert!(limited.iter().all(|&len| len <= 1024 + 64), "{limited:?}");
}

#[derive(Default)]
struct FlowLog {
    producer_paused: usize,
    producer_resumed: usize,
    protocol_paused: usize,
    protocol_resumed: usize,
    paused: bool,
    stopped: bool,
    handle: Option<TransportHandle>,
}

type Flow = Rc<RefCell<FlowLog>>;

/// A push producer: the test writes for it while it is not paused.
struct Push(Flow);

impl torsion_reactor::Producer for Push {
    fn pause_producing(&mut self) {
        let mut f = self.0.borrow_mut();
        f.producer_paused += 1;
        f.paused = true;
    }
    fn resume_producing(&mut self) {
        let mut f = self.0.borrow_mut();
        f.producer_resumed += 1;
        f.paused = false;
    }
    fn stop_producing(&mut self) {
        self.0.borrow_mut().stopped = true;
    }
}

/// Registers a push producer on connection; counts the protocol's own pause/resume.
struct Producing(Flow);

impl Protocol for Producing {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.borrow_mut().handle = Some(t.handle());
        t.register_producer(Box::new(Push(self.0.clone())), true);
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn pause_producing(&mut self, _: &mut dyn Transport) {
        self.0.borrow_mut().protocol_paused += 1;
    }
    fn resume_producing(&mut self, _: &mut dyn Transport) {
        self.0.borrow_mut().protocol_resumed += 1;
    }
}

/// Stops reading as soon as it is made: a peer that does not read.
struct Stalled(Shared);

impl Protocol for Stalled {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.pause_reading();
        self.0.borrow_mut().handle = Some(t.handle());
    }
    fn data_received(&mut self, _: &mut dyn Transport, data: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(data);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.0.borrow_mut().lost = Some(reason);
    }
}

#[test]
fn push_producer_is_paused_at_the_high_watermark_and_resumed_at_the_low() {
    const HIGH: usize = 64 * 1024; // ConnectionConfig's default high watermark
    const RECORD: usize = 16 * 1024 + 256;
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let flow = Flow::default();
    let sl = log();
    let options = MemoryOptions {
        capacity: 32 * 1024, // the "kernel" holds little, so the stream buffers soon
        ..MemoryOptions::default()
    };
    let pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Producing(flow.clone()), &client_config(&c), "localhost").unwrap(),
        TlsProtocol::server(Stalled(sl.clone()), &server_config(&c)),
        options,
    );
    mr.run_until_idle();
    let handle = flow.borrow().handle.clone().expect("handshake done");
    let msg = pattern(1024 * 1024);
    let chunk = 8 * 1024;
    let mut sent = 0;
    let max_buffered = Cell::new(0);
    let write_while_unpaused = |mr: &MemoryReactor, sent: &mut usize, steps: usize| {
        for _ in 0..steps {
            if *sent == msg.len() {
                break;
            }
            if !flow.borrow().paused {
                handle.write(&msg[*sent..*sent + chunk]);
                *sent += chunk;
            }
            mr.run_until_idle();
            max_buffered.set(max_buffered.get().max(handle.buffered()));
        }
    };

    // The reader is stalled: the producer must be paused long before 1 MiB is written.
    write_while_unpaused(&mr, &mut sent, 200);
    assert!(flow.borrow().paused, "paused at the high watermark");
    assert_eq!(flow.borrow().producer_paused, 1);
    assert_eq!(
        flow.borrow().protocol_paused,
        1,
        "the protocol hears it too"
    );
    assert!(sent < 256 * 1024, "stopped early: {sent} bytes written");
    assert!(
        max_buffered.get() <= HIGH + DEFAULT_TLS_BUFFER_LIMIT + RECORD,
        "buffered {} bytes",
        max_buffered.get()
    );
    assert!(
        pair.client.buffered() > HIGH,
        "the ciphertext waits in the stream's buffer"
    );

    // The reader wakes up: the producer is resumed at the low watermark and finishes.
    sl.borrow().handle.clone().unwrap().resume_reading();
    write_while_unpaused(&mr, &mut sent, 2_000);
    assert_eq!(sent, msg.len());
    assert!(flow.borrow().producer_resumed >= 1);
    assert!(flow.borrow().protocol_resumed >= 1);
    assert!(
        max_buffered.get() <= HIGH + DEFAULT_TLS_BUFFER_LIMIT + RECORD,
        "buffered {} bytes",
        max_buffered.get()
    );
    handle.lose_connection();
    mr.run_until_idle();
    assert_eq!(sl.borrow().data.len(), msg.len());
    assert!(sl.borrow().data == msg);
    assert!(
        flow.borrow().stopped,
        "stop_producing once the connection closed"
    );
}

/// A pull producer: writes one chunk each time it is asked, until `total`.
struct Pull {
    flow: Flow,
    chunk: Vec<u8>,
    total: usize,
    sent: usize,
    asked: Rc<Cell<usize>>,
}

impl torsion_reactor::Producer for Pull {
    fn resume_producing(&mut self) {
        self.asked.set(self.asked.get() + 1);
        let handle = self.flow.borrow().handle.clone().unwrap();
        if self.sent < self.total {
            // Several small writes per chunk: collected into few records.
            for part in self.chunk.chunks(512) {
                handle.write(part);
            }
            self.sent += self.chunk.len();
        } else {
            handle.unregister_producer();
            handle.lose_connection();
        }
    }
}

struct Pulling {
    flow: Flow,
    asked: Rc<Cell<usize>>,
}

impl Protocol for Pulling {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.flow.borrow_mut().handle = Some(t.handle());
        t.register_producer(
            Box::new(Pull {
                flow: self.flow.clone(),
                chunk: pattern(4096),
                total: 1024 * 1024,
                sent: 0,
                asked: self.asked.clone(),
            }),
            false,
        );
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

#[test]
fn pull_producer_is_asked_again_after_each_chunk() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let flow = Flow::default();
    let asked = Rc::new(Cell::new(0));
    let sl = log();
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(
            Pulling {
                flow: flow.clone(),
                asked: asked.clone(),
            },
            &client_config(&c),
            "localhost",
        )
        .unwrap(),
        TlsProtocol::server(Rec::new(&sl), &server_config(&c)),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    assert_eq!(
        sl.borrow().data.len(),
        1024 * 1024,
        "asked {} times",
        asked.get()
    );
    assert_eq!(
        asked.get(),
        257,
        "once per 4 KiB chunk, then once more to finish"
    );
    assert!(sl.borrow().lost.as_ref().unwrap().is_clean());
}

#[test]
fn platform_roots_build_when_the_machine_has_a_trust_store() {
    let has_store = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
        && std::env::var_os("SSL_CERT_FILE").is_none()
        && std::env::var_os("SSL_CERT_DIR").is_none();
    match ClientTlsConfig::builder().platform_roots() {
        Ok(builder) => {
            let config = builder.build().unwrap();
            assert_eq!(config.close_timeout(), tls::DEFAULT_TLS_CLOSE_TIMEOUT);
        }
        Err(e) if !has_store => {
            #[allow(clippy::print_stdout)]
            {
                println!("skipped: this machine has no usable system trust store: {e}");
            }
        }
        Err(e) => panic!("the system trust store exists but did not load: {e}"),
    }
}

/// A pull producer registered on a connection that is being upgraded to TLS keeps being asked
/// for chunks (the layer takes it over and wraps it), and its chunks arrive encrypted.
mod producer_across_start_tls {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::time::Duration;

    use torsion_reactor::prelude::*;
    use torsion_reactor::testing::{connect_pair, MemoryOptions, MemoryReactor};
    use torsion_reactor::Producer;
    use torsion_transports::tls::{self, ClientTlsConfig, ServerTlsConfig, TlsRole};

    /// A pull producer writing `total` small chunks through a handle, then closing.
    struct Chunks {
        handle: TransportHandle,
        left: usize,
        asked: Rc<Cell<usize>>,
    }

    impl Producer for Chunks {
        fn resume_producing(&mut self) {
            self.asked.set(self.asked.get() + 1);
            if self.left > 0 {
                self.left -= 1;
                self.handle.write(b"chunk;");
            } else {
                self.handle.unregister_producer();
                self.handle.lose_connection();
            }
        }
    }

    /// On `STARTTLS`: acknowledges, upgrades, and streams its answer with a pull producer
    /// (registered in the same callback, so on the stream connection, and writing through a
    /// handle, which follows the layer).
    struct Server {
        config: ServerTlsConfig,
        upgraded: bool,
        asked: Rc<Cell<usize>>,
    }

    impl Protocol for Server {
        fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
            if !self.upgraded && data.ends_with(b"STARTTLS\n") {
                self.upgraded = true;
                t.write(b"OK\n");
                assert!(tls::start_tls(t, TlsRole::Server(self.config.clone())));
                let handle = t.handle();
                t.register_producer(
                    Box::new(Chunks {
                        handle,
                        left: 10,
                        asked: self.asked.clone(),
                    }),
                    false,
                );
            }
        }
    }

    struct Client {
        config: ClientTlsConfig,
        upgraded: bool,
        data: Rc<RefCell<Vec<u8>>>,
    }

    impl Protocol for Client {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.write(b"STARTTLS\n");
        }
        fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
            if !self.upgraded && data == b"OK\n" {
                self.upgraded = true;
                let role = TlsRole::Client {
                    config: self.config.clone(),
                    server_name: "localhost".into(),
                };
                assert!(tls::start_tls(t, role));
            } else {
                self.data.borrow_mut().extend_from_slice(data);
            }
        }
    }

    /// A pull producer registered after `start_tls` (or before it) writes through a handle that
    /// now reaches the TLS transport, which collects the plaintext for the next turn: the stream
    /// connection sees no write during the producer's call (`writes` unchanged), so by its rule
    /// the producer is never asked again. The answer stalls after the first chunk.
    #[test]
    fn pull_producer_across_start_tls_is_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let certs = tls::create_dev_certs(dir.path(), &[]).unwrap();
        let server =
            ServerTlsConfig::from_pem_files(&certs.server_cert, &certs.server_key, None).unwrap();
        let client = ClientTlsConfig::with_ca_file(&certs.ca_cert).unwrap();
        let mr = MemoryReactor::new();
        let data = Rc::new(RefCell::new(Vec::new()));
        let asked = Rc::new(Cell::new(0));
        let pair = connect_pair(
            mr.reactor(),
            Client {
                config: client,
                upgraded: false,
                data: data.clone(),
            },
            Server {
                config: server,
                upgraded: false,
                asked: asked.clone(),
            },
            MemoryOptions::default(),
        );
        mr.advance(Duration::from_secs(30));
        assert_eq!(
            String::from_utf8_lossy(&data.borrow()),
            "chunk;".repeat(10),
            "producer asked {} times; server lost: {:?}",
            asked.get(),
            pair.server_lost()
        );
    }
}

/// Paused in connection_made; on the held data it resumes and closes (or pauses again).
struct HeldThen {
    log: Shared,
    pause_again: bool,
}

impl Protocol for HeldThen {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.log.borrow_mut().handle = Some(t.handle());
        t.pause_reading();
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.log.borrow_mut().data.extend_from_slice(data);
        if self.pause_again {
            t.pause_reading();
        } else {
            t.resume_reading();
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        let mut log = self.log.borrow_mut();
        assert!(log.lost.is_none(), "connection_lost twice");
        log.lost = Some(reason);
    }
}

/// The peer sends data, `close_notify` and FIN while the server is paused; after it resumes
/// it gets the data, then (at once, or after pausing and resuming again) the clean close, and
/// its own `close_notify` goes out.
fn held_data_then_close(pause_again: bool) {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let sl = log();
    let pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(GreetAndClose, &client_config(&c), "localhost").unwrap(),
        TlsProtocol::server(
            HeldThen {
                log: sl.clone(),
                pause_again,
            },
            &server_config(&c),
        ),
        MemoryOptions::default(),
    );
    mr.advance(Duration::from_millis(100));
    let server = sl.borrow().handle.clone().unwrap();
    server.resume_reading();
    mr.advance(Duration::from_millis(100));
    assert_eq!(sl.borrow().data, b"all I have to say");
    if pause_again {
        assert!(sl.borrow().lost.is_none(), "{:?}", sl.borrow().lost);
        server.resume_reading();
    }
    mr.advance(Duration::from_secs(10));
    assert!(
        matches!(sl.borrow().lost, Some(CloseReason::Done)),
        "{:?}",
        sl.borrow().lost
    );
    assert!(
        pair.client_lost().unwrap().is_clean(),
        "{:?}",
        pair.client_lost()
    );
}

#[test]
fn resuming_and_closing_inside_held_delivery_closes_cleanly() {
    held_data_then_close(false);
}

#[test]
fn pausing_again_inside_held_delivery_holds_the_close_notify_too() {
    held_data_then_close(true);
}

/// Upgrades at once, in `connection_made`.
struct StartTlsAtOnce(ServerTlsConfig);

impl Protocol for StartTlsAtOnce {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        assert!(tls::start_tls(t, TlsRole::Server(self.0.clone())));
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

/// A handle taken once `connection_made` returned (as a port or connector takes its own, to
/// close the connection on `stop` or `disconnect`) reaches TLS when the protocol upgraded in
/// `connection_made`: what it writes is encrypted, and its close sends `close_notify` (it
/// went to the bare stream: plaintext, and a FIN the client took for a truncation).
#[test]
fn a_handle_taken_after_start_tls_in_connection_made_reaches_tls() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let cl = log();
    let pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Rec::new(&cl), &client_config(&c), "localhost").unwrap(),
        StartTlsAtOnce(server_config(&c)),
        MemoryOptions::default(),
    );
    mr.advance(Duration::from_secs(1));
    assert!(cl.borrow().made, "handshake done");
    pair.server.write(b"through the port's handle");
    pair.server.lose_connection();
    mr.advance(Duration::from_secs(1));
    assert_eq!(cl.borrow().data, b"through the port's handle");
    assert!(
        cl.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        cl.borrow().lost
    );
}

/// Half-close; upgrades to TLS (in `role`) once the peer's FIN arrived.
struct StartTlsOnEof {
    log: Shared,
    role: Option<TlsRole>,
}

impl Protocol for StartTlsOnEof {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn half_close(&self) -> bool {
        true
    }
    fn read_connection_lost(&mut self, t: &mut dyn Transport) {
        if let Some(role) = self.role.take() {
            assert!(tls::start_tls(t, role));
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

/// `start_tls` after the peer's FIN: no handshake can complete, and the upgrade fails at
/// once (the layer is told of the FIN), not at the handshake timeout.
#[test]
fn start_tls_after_the_peers_fin_fails_at_once() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let roles = [
        TlsRole::Server(server_config(&c)),
        TlsRole::Client {
            config: client_config(&c),
            server_name: "localhost".into(),
        },
    ];
    for role in roles {
        let l = log();
        let st = StringTransport::connect(
            &mr,
            StartTlsOnEof {
                log: l.clone(),
                role: Some(role),
            },
        );
        st.feed_eof();
        mr.advance(Duration::from_millis(100));
        let err = tls_error(&l.borrow().lost);
        assert!(matches!(err, TlsError::HandshakeEof), "{err}");
        st.take(); // a client's ClientHello
        assert!(st.fin_received());
    }
}

#[test]
fn client_certificate_from_another_dev_ca_is_an_unknown_issuer() {
    // Two `certs create` runs: the client presents the other run's certificate. Both CAs used
    // to share one name, so the server took the foreign certificate for one of its CA's with
    // a bad signature (and the client heard decrypt_error).
    let (_d, c) = certs(&[]);
    let (_d2, other) = certs(&[]);
    let client = mtls_client(&c, &other);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Rec::greeting(&cl, b"ping", 4), &client, "localhost").unwrap(),
        TlsProtocol::server(Rec::echo(&sl), &mtls_server(&c)),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    assert!(!sl.borrow().made);
    let err = tls_error(&sl.borrow().lost);
    assert!(
        matches!(
            err.certificate_error(),
            Some(CertificateError::UnknownIssuer)
        ),
        "{err}"
    );
    let err = tls_error(&cl.borrow().lost);
    assert!(
        matches!(
            err.rustls_error(),
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA
            ))
        ),
        "{err}"
    );
    assert!(cl.borrow().data.is_empty());
}

#[test]
fn server_certificate_from_another_dev_ca_is_an_unknown_issuer() {
    let (_d, c) = certs(&[]);
    let (_d2, other) = certs(&[]);
    let err = client_rejects(server_config(&other), client_config(&c), "localhost");
    assert!(
        matches!(
            err.certificate_error(),
            Some(CertificateError::UnknownIssuer)
        ),
        "{err}"
    );
}

#[test]
fn wildcard_dev_certificate_covers_a_subdomain() {
    let (_d, c) = certs(&["*.example.test"]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(
            Rec::greeting(&cl, b"ping", 4),
            &client_config(&c),
            "api.example.test",
        )
        .unwrap(),
        TlsProtocol::server(Rec::echo(&sl), &server_config(&c)),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    assert_eq!(cl.borrow().data, b"ping");
    let err = client_rejects(server_config(&c), client_config(&c), "example.test");
    assert!(err.certificate_error().is_some(), "{err}");
}

/// Upgrades as the client in `connection_made`, then writes `flood` bytes at once, before the
/// handshake can complete.
struct EarlyFlood {
    role: Option<TlsRole>,
    flood: usize,
    log: Shared,
}

impl Protocol for EarlyFlood {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        assert!(tls::start_tls(t, self.role.take().unwrap()));
        let chunk = vec![b'x'; 1 << 20];
        let mut left = self.flood;
        while left > 0 {
            let n = left.min(chunk.len());
            t.write(&chunk[..n]);
            left -= n;
        }
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

/// Plaintext held for a handshake that has not completed is bounded: past
/// `MAX_EARLY_PLAINTEXT` the connection is aborted with `WriteBufferOverflow` (it grew without
/// limit for as long as the handshake deadline); up to it, it all goes out once the handshake
/// is done.
#[test]
fn plaintext_written_before_the_handshake_is_bounded() {
    let (_d, c) = certs(&[]);
    for (flood, overflows) in [(MAX_EARLY_PLAINTEXT + 1, true), (3 << 20, false)] {
        let mr = MemoryReactor::new();
        let (cl, sl) = (log(), log());
        let client = EarlyFlood {
            role: Some(TlsRole::Client {
                config: client_config(&c),
                server_name: "localhost".into(),
            }),
            flood,
            log: cl.clone(),
        };
        let server = TlsProtocol::server(Rec::new(&sl), &server_config(&c));
        let _pair = connect_pair(mr.reactor(), client, server, MemoryOptions::default());
        mr.advance(Duration::from_secs(1));
        if overflows {
            assert!(
                matches!(
                    cl.borrow().lost,
                    Some(CloseReason::WriteBufferOverflow { limit }) if limit == MAX_EARLY_PLAINTEXT
                ),
                "{:?}",
                cl.borrow().lost
            );
            assert!(sl.borrow().data.is_empty());
        } else {
            assert!(cl.borrow().lost.is_none(), "{:?}", cl.borrow().lost);
            assert_eq!(sl.borrow().data.len(), flood);
        }
    }
}
