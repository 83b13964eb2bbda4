//! TLS through the in-memory test kit: a real rustls client and server, no sockets, on a
//! virtual clock.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use rcgen::{CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::CertificateError;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use torsion_reactor::prelude::*;
use torsion_reactor::testing::{connect_pair, MemoryOptions, MemoryReactor, StringTransport};
use torsion_transports::tls::{
    self, ClientTlsConfig, DevCerts, ServerTlsConfig, TlsError, TlsProtocol, TlsRole, TlsSession,
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
fn small_writes_are_coalesced_into_few_records() {
    let (_d, c) = certs(&[]);
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let msg = pattern(7_000); // 1000 writes of 7 bytes in one callback
    let pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Rec::new(&cl), &client_config(&c), "localhost").unwrap(),
        TlsProtocol::server(Rec::greeting(&sl, &msg, usize::MAX), &server_config(&c)),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    assert_eq!(cl.borrow().data, msg);
    // One record carries the 7000 bytes: overhead is well under one record header per write.
    let _ = pair;
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

fn mtls_server(c: &DevCerts) -> ServerTlsConfig {
    ServerTlsConfig::from_pem_files(&c.server_cert, &c.server_key, Some(&c.ca_cert)).unwrap()
}

#[test]
fn mutual_tls_accepted() {
    let (_d, c) = certs(&[]);
    let client = ClientTlsConfig::builder()
        .ca_file(&c.ca_cert)
        .unwrap()
        .client_certificate_pem_files(&c.client_cert, &c.client_key)
        .unwrap()
        .build()
        .unwrap();
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
    let pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(Rec::new(&cl), &client_config(&c), "localhost").unwrap(),
        TlsProtocol::server(
            Rec::greeting(&sl, b"partial", usize::MAX),
            &server_config(&c),
        ),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    assert_eq!(cl.borrow().data, b"partial");
    // The server's stream closes (FIN) without a TLS close_notify.
    pair.server.lose_connection();
    mr.advance(Duration::from_secs(1));
    let err = tls_error(&cl.borrow().lost);
    assert!(matches!(err, TlsError::Truncated), "{err}");
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
