//! Hostile and unusual TLS peers: a bare rustls peer, driven by the test, against our TLS
//! layer through the test kit (no sockets, virtual clock).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use torsion_reactor::prelude::*;
use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};
use torsion_transports::tls::{
    self, ClientTlsConfig, DevCerts, ServerTlsConfig, TlsError, TlsProtocol,
};

#[derive(Default)]
struct Log {
    made: bool,
    data: Vec<u8>,
    lost: Option<CloseReason>,
    handle: Option<TransportHandle>,
}
type Shared = Rc<RefCell<Log>>;

struct Echo {
    log: Shared,
    echo: bool,
    pause_on_made: bool,
}

impl Protocol for Echo {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let mut l = self.log.borrow_mut();
        l.made = true;
        l.handle = Some(t.handle());
        drop(l);
        if self.pause_on_made {
            t.pause_reading();
        }
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.log.borrow_mut().data.extend_from_slice(data);
        if self.echo {
            t.write(data);
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        let mut l = self.log.borrow_mut();
        assert!(l.lost.is_none(), "connection_lost twice");
        l.lost = Some(reason);
    }
}

/// An echoing recorder that does not pause.
fn echo(log: &Shared) -> Echo {
    Echo {
        log: log.clone(),
        echo: true,
        pause_on_made: false,
    }
}

fn certs() -> (tempfile::TempDir, DevCerts) {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::create_dev_certs(dir.path(), &[]).unwrap();
    (dir, certs)
}

/// A bare rustls peer at the far end of a `StringTransport` whose near end runs our TLS
/// layer: a client against our server ([`Peer::connect`]) or a server against our client
/// ([`Peer::serve`]).
struct Peer {
    st: StringTransport,
    conn: rustls::Connection,
    plain: Vec<u8>,
}

impl Peer {
    fn connect(
        mr: &MemoryReactor,
        c: &DevCerts,
        inner: impl Protocol,
        options: MemoryOptions,
    ) -> Peer {
        let server = ServerTlsConfig::from_pem_files(&c.server_cert, &c.server_key, None).unwrap();
        let client = ClientTlsConfig::with_ca_file(&c.ca_cert).unwrap();
        let st = StringTransport::with_options(mr, TlsProtocol::server(inner, &server), options);
        let conn = rustls::ClientConnection::new(
            Arc::clone(client.rustls()),
            "localhost".try_into().unwrap(),
        )
        .unwrap()
        .into();
        Peer {
            st,
            conn,
            plain: Vec::new(),
        }
    }

    /// A rustls server against our client layer.
    fn serve(
        mr: &MemoryReactor,
        c: &DevCerts,
        inner: impl Protocol,
        options: MemoryOptions,
    ) -> Peer {
        let server = ServerTlsConfig::from_pem_files(&c.server_cert, &c.server_key, None).unwrap();
        let client = ClientTlsConfig::with_ca_file(&c.ca_cert).unwrap();
        let st = StringTransport::with_options(
            mr,
            TlsProtocol::client(inner, &client, "localhost").unwrap(),
            options,
        );
        let conn = rustls::ServerConnection::new(Arc::clone(server.rustls()))
            .unwrap()
            .into();
        Peer {
            st,
            conn,
            plain: Vec::new(),
        }
    }

    fn out(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out).unwrap();
        }
        out
    }

    fn pump_out(&mut self) -> usize {
        let out = self.out();
        if out.is_empty() {
            0
        } else {
            self.st.feed(&out)
        }
    }

    fn pump_in(&mut self) -> usize {
        let bytes = self.st.take();
        let mut rest = &bytes[..];
        while !rest.is_empty() && self.conn.read_tls(&mut rest).unwrap() > 0 {
            self.conn
                .process_new_packets()
                .expect("valid TLS from our side");
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = self.conn.reader().read(&mut buf) {
                self.plain.extend_from_slice(&buf[..n]);
            }
        }
        bytes.len()
    }

    /// Up to the client's Finished (not yet sent).
    fn until_finished(&mut self) {
        self.pump_out(); // ClientHello
        self.pump_in(); // server flight
        assert!(!self.conn.is_handshaking());
    }

    fn handshake(&mut self) {
        self.until_finished();
        self.pump_out();
        self.pump_in();
    }

    fn send(&mut self, data: &[u8]) {
        self.conn.writer().write_all(data).unwrap();
        self.pump_out();
    }
}

fn lost_tls(l: &Shared) -> Option<TlsError> {
    l.borrow()
        .lost
        .as_ref()
        .and_then(|r| TlsError::from_reason(r).cloned())
}

#[test]
fn key_update_from_the_peer_mid_stream() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let log = Shared::default();
    let mut p = Peer::connect(&mr, &c, echo(&log), MemoryOptions::default());
    p.handshake();
    p.send(b"one");
    p.pump_in();
    assert_eq!(p.plain, b"one");
    for _ in 0..3 {
        p.conn.refresh_traffic_keys().unwrap();
        p.send(b"two");
        p.pump_in();
    }
    assert_eq!(p.plain, b"onetwotwotwo");
    assert!(log.borrow().lost.is_none(), "{:?}", log.borrow().lost);
}

#[test]
fn key_update_one_byte_chunks() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let log = Shared::default();
    let mut p = Peer::connect(&mr, &c, echo(&log), MemoryOptions::chunked(1));
    p.handshake();
    p.conn.refresh_traffic_keys().unwrap();
    p.send(b"two");
    p.pump_in();
    assert_eq!(p.plain, b"two");
}

#[test]
fn flood_without_reading_is_bounded() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let log = Shared::default();
    let mut p = Peer::connect(&mr, &c, echo(&log), MemoryOptions::default());
    p.handshake();
    let chunk = vec![7u8; 64 * 1024];
    let mut max = 0;
    let mut stopped = false;
    for _ in 0..200 {
        p.conn.writer().write_all(&chunk).unwrap();
        let out = p.out();
        let fed = p.st.feed(&out);
        max = max.max(p.st.transport().buffered());
        if fed < out.len() {
            stopped = true; // the server stopped reading: it is paused by its write buffer
            break;
        }
    }
    assert!(stopped, "the server kept reading a peer that never reads");
    // The stream's buffer of echoed ciphertext: about the high watermark (64 KiB).
    assert!(max < 256 * 1024, "buffered {max} bytes");
    assert!(log.borrow().data.len() < 1024 * 1024);
}

#[test]
fn truncated_record_then_fin() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let log = Shared::default();
    let mut p = Peer::connect(
        &mr,
        &c,
        Echo {
            log: log.clone(),
            echo: false,
            pause_on_made: false,
        },
        MemoryOptions::default(),
    );
    p.handshake();
    p.conn.writer().write_all(b"hello").unwrap();
    let out = p.out();
    p.st.feed(&out[..out.len() - 3]);
    p.st.feed_eof();
    mr.advance(Duration::from_secs(1));
    assert!(
        matches!(lost_tls(&log), Some(TlsError::Truncated)),
        "{:?}",
        log.borrow().lost
    );
}

#[test]
fn finished_data_close_notify_fin_in_one_read() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let log = Shared::default();
    let mut p = Peer::connect(&mr, &c, echo(&log), MemoryOptions::default());
    p.until_finished();
    p.conn.writer().write_all(b"early").unwrap();
    p.conn.send_close_notify();
    let out = p.out();
    p.st.feed(&out);
    p.st.feed_eof();
    mr.advance(Duration::from_secs(1));
    p.pump_in();
    assert_eq!(p.plain, b"early");
    assert!(
        matches!(log.borrow().lost, Some(CloseReason::Done)),
        "{:?}",
        log.borrow().lost
    );
}

/// After the handshake the peer sends `bytes` (not a valid record): the connection fails with
/// rustls's error.
fn bad_record_after_handshake(bytes: &[u8]) {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let log = Shared::default();
    let mut p = Peer::connect(&mr, &c, echo(&log), MemoryOptions::default());
    p.handshake();
    p.st.feed(bytes);
    mr.advance(Duration::from_secs(10));
    assert!(
        matches!(lost_tls(&log), Some(TlsError::Rustls(_))),
        "{:?}",
        log.borrow().lost
    );
}

#[test]
fn alert_mid_stream() {
    // A plaintext fatal alert.
    bad_record_after_handshake(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
}

#[test]
fn oversized_record_mid_stream() {
    bad_record_after_handshake(&[0x17, 0x03, 0x03, 0xff, 0xff, 1, 2, 3]);
}

#[test]
fn reset_mid_record() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let log = Shared::default();
    let mut p = Peer::connect(&mr, &c, echo(&log), MemoryOptions::default());
    p.handshake();
    p.conn.writer().write_all(b"hello").unwrap();
    let out = p.out();
    p.st.feed(&out[..4]);
    p.st.reset();
    mr.advance(Duration::from_secs(1));
    assert!(
        matches!(log.borrow().lost, Some(CloseReason::Reset)),
        "{:?}",
        log.borrow().lost
    );
}

#[test]
fn stall_after_client_hello_times_out() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let log = Shared::default();
    let mut p = Peer::connect(&mr, &c, echo(&log), MemoryOptions::default());
    p.until_finished();
    let out = p.out();
    p.st.feed(&out[..out.len() - 1]);
    mr.advance(Duration::from_secs(11));
    assert!(
        matches!(lost_tls(&log), Some(TlsError::HandshakeTimeout(_))),
        "{:?}",
        log.borrow().lost
    );
}

/// Paused in connection_made; panics on the first data it is given.
struct PanicOnHeld {
    log: Shared,
}

impl Protocol for PanicOnHeld {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.log.borrow_mut().handle = Some(t.handle());
        t.pause_reading();
    }
    fn data_received(&mut self, _: &mut dyn Transport, data: &[u8]) {
        self.log.borrow_mut().data.extend_from_slice(data);
        panic!("boom");
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

/// Plaintext held for a protocol that paused reading is delivered on the layer's own reactor
/// turn after `resume_reading`, outside the stream's callbacks. A panic there must be isolated
/// as in any callback (manual, *Panics*): this connection aborted with `CloseReason::Panic`.
/// It was caught only by the reactor's guard around `call_soon`, and the connection stayed open
/// with `connection_lost` never called (and the layer stuck thinking it was in a callback).
#[test]
fn panic_in_held_delivery_aborts_with_panic() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let log = Shared::default();
    let mut p = Peer::connect(
        &mr,
        &c,
        PanicOnHeld { log: log.clone() },
        MemoryOptions::default(),
    );
    p.until_finished();
    p.conn.writer().write_all(b"early").unwrap();
    p.pump_out();
    let h = log.borrow().handle.clone().unwrap();
    h.resume_reading();
    mr.advance(Duration::from_secs(1));
    assert_eq!(log.borrow().data, b"early");
    assert!(
        matches!(log.borrow().lost, Some(CloseReason::Panic(_))),
        "{:?}",
        log.borrow().lost
    );
    assert!(p.st.reset_received());
}

#[test]
fn server_half_rtt_data_with_its_finished() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let log = Shared::default();
    let mut p = Peer::serve(&mr, &c, echo(&log), MemoryOptions::chunked(1));
    p.pump_in(); // ClientHello
    p.conn.writer().write_all(b"half-rtt").unwrap();
    p.pump_out();
    p.pump_in();
    p.pump_out();
    mr.run_until_idle();
    assert!(log.borrow().made);
    assert_eq!(log.borrow().data, b"half-rtt");
    p.pump_in();
    assert_eq!(p.plain, b"half-rtt");
    p.conn.refresh_traffic_keys().unwrap();
    p.conn.writer().write_all(b"x").unwrap();
    p.pump_out();
    p.pump_in();
    assert_eq!(p.plain, b"half-rttx");
    let h = log.borrow().handle.clone().unwrap();
    h.write(&vec![1u8; 100_000]);
    p.conn.refresh_traffic_keys().unwrap();
    p.pump_out();
    for _ in 0..10 {
        p.pump_in();
    }
    assert_eq!(p.plain.len(), 9 + 100_000);
    h.lose_connection();
    p.pump_in();
    p.conn.send_close_notify();
    p.pump_out();
    p.st.feed_eof();
    mr.run_until_idle();
    assert!(
        matches!(log.borrow().lost, Some(CloseReason::Done)),
        "{:?}",
        log.borrow().lost
    );
}
