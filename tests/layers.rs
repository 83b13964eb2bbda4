//! Layers composed: a policy (from `torsion::protocols`) between TLS and the user's protocol.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use torsion::prelude::*;
use torsion::protocols::policies::IdleTimeout;
use torsion::testing::{connect_pair, MemoryOptions, MemoryReactor};
use torsion::transports::tls::{self, ClientTlsConfig, ServerTlsConfig, TlsProtocol};

/// What a protocol saw of the session: the ALPN protocol and how many certificates the peer
/// presented.
type Seen = Option<(Option<Vec<u8>>, usize)>;

/// Records what `tls::session` reports through the transport it is given.
struct SeesSession(Rc<RefCell<Seen>>);

impl Protocol for SeesSession {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        *self.0.borrow_mut() =
            tls::session(t).map(|s| (s.alpn_protocol, s.peer_certificates.len()));
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

struct Quiet;
impl Protocol for Quiet {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

/// A protocol behind a policy (an idle timeout) on a TLS connection still sees the session:
/// ALPN and the client's certificate with mutual TLS (it saw none: `session` did not look
/// through the policy's transport, and an authenticated client looked anonymous).
#[test]
fn tls_session_is_seen_through_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::create_dev_certs(dir.path(), &[]).unwrap();
    let server_config =
        ServerTlsConfig::builder_from_pem_files(&certs.server_cert, &certs.server_key)
            .unwrap()
            .require_client_certs_from_file(&certs.ca_cert)
            .unwrap()
            .alpn_protocols(["echo/1"])
            .build()
            .unwrap();
    let client_config = ClientTlsConfig::builder()
        .ca_file(&certs.ca_cert)
        .unwrap()
        .client_certificate_pem_files(&certs.client_cert, &certs.client_key)
        .unwrap()
        .alpn_protocols(["echo/1"])
        .build()
        .unwrap();
    let seen = Rc::new(RefCell::new(None));
    let server = TlsProtocol::server(
        IdleTimeout::new(SeesSession(seen.clone()), Duration::from_secs(60)),
        &server_config,
    );
    let client = TlsProtocol::client(Quiet, &client_config, "localhost").unwrap();
    let mr = MemoryReactor::new();
    let _pair = connect_pair(mr.reactor(), client, server, MemoryOptions::default());
    mr.run_until_idle();
    let seen = seen.borrow().clone();
    assert_eq!(seen, Some((Some(b"echo/1".to_vec()), 2)));
}
