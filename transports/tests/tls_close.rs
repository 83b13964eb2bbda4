//! TLS close semantics, in memory on the virtual clock: `lose_connection` and the TLS close
//! timeout, a peer that answers `close_notify`, half-close in both directions, truncation,
//! and bytes that follow the peer's `close_notify`.
//!
//! Two kinds of peer: our own layer at both ends of a `connect_pair`, and a bare rustls
//! server that the test drives by hand through a `StringTransport` (so the test decides
//! exactly what the peer sends, and when it stays silent).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

mod util;

use torsion_reactor::prelude::*;
use torsion_reactor::testing::{connect_pair, MemoryOptions, MemoryReactor, StringTransport};
use torsion_transports::tls::{
    self, ClientTlsConfig, DevCerts, ServerTlsConfig, TlsError, TlsProtocol,
    DEFAULT_TLS_CLOSE_TIMEOUT,
};

const MS: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Log {
    made: bool,
    data: Vec<u8>,
    read_lost: bool,
    write_lost: bool,
    lost: Option<CloseReason>,
    lost_calls: usize,
    handle: Option<TransportHandle>,
}

type Shared = Rc<RefCell<Log>>;

fn log() -> Shared {
    Rc::new(RefCell::new(Log::default()))
}

/// What a [`Rec`] does when the peer's data ends (`read_connection_lost`, half-close only).
#[derive(Clone, Default)]
enum OnReadLost {
    /// `lose_connection` (the trait's default).
    #[default]
    Close,
    /// Writes this, then `lose_connection`: a response to a request ended by the peer.
    Reply(Vec<u8>),
    /// Nothing: the connection stays half-open.
    Nothing,
}

#[derive(Clone, Default)]
struct Script {
    half_close: bool,
    /// Written from `connection_made`.
    greeting: Vec<u8>,
    /// After the greeting: `lose_write_connection`.
    shut_write: bool,
    on_read_lost: OnReadLost,
}

/// Records every callback; acts as its [`Script`] says.
struct Rec {
    log: Shared,
    script: Script,
}

fn rec(log: &Shared, script: Script) -> Rec {
    Rec {
        log: log.clone(),
        script,
    }
}

impl Protocol for Rec {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let mut log = self.log.borrow_mut();
        log.made = true;
        log.handle = Some(t.handle());
        drop(log);
        t.write(&self.script.greeting);
        if self.script.shut_write {
            t.lose_write_connection();
        }
    }
    fn data_received(&mut self, _t: &mut dyn Transport, data: &[u8]) {
        self.log.borrow_mut().data.extend_from_slice(data);
    }
    fn half_close(&self) -> bool {
        self.script.half_close
    }
    fn read_connection_lost(&mut self, t: &mut dyn Transport) {
        self.log.borrow_mut().read_lost = true;
        match &self.script.on_read_lost {
            OnReadLost::Close => t.lose_connection(),
            OnReadLost::Reply(reply) => {
                t.write(reply);
                t.lose_connection();
            }
            OnReadLost::Nothing => {}
        }
    }
    fn write_connection_lost(&mut self, _t: &mut dyn Transport) {
        self.log.borrow_mut().write_lost = true;
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        let mut log = self.log.borrow_mut();
        log.lost_calls += 1;
        log.lost.get_or_insert(reason);
    }
}

fn certs() -> (tempfile::TempDir, DevCerts) {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::create_dev_certs(dir.path(), &[]).unwrap();
    (dir, certs)
}

fn server_config(c: &DevCerts) -> ServerTlsConfig {
    ServerTlsConfig::from_pem_files(&c.server_cert, &c.server_key, None).unwrap()
}

fn client_config(c: &DevCerts) -> ClientTlsConfig {
    ClientTlsConfig::with_ca_file(&c.ca_cert).unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// The reason `connection_lost` received, asserting it ran exactly once.
fn lost_once(log: &Shared) -> CloseReason {
    let log = log.borrow();
    assert_eq!(log.lost_calls, 1, "connection_lost must run exactly once");
    log.lost.clone().unwrap()
}

fn assert_done(log: &Shared, what: &str) {
    let reason = lost_once(log);
    assert!(reason.is_clean(), "{what}: expected Done, got {reason:?}");
}

/// A bare rustls server at the far end of a `StringTransport` whose near end runs our TLS
/// client layer. The test moves the bytes: [`Wire::pump_in`] hands what our side wrote to
/// rustls, [`Wire::pump_out`] hands rustls's records to our side.
struct Wire {
    st: StringTransport,
    conn: rustls::ServerConnection,
    /// Plaintext our side sent.
    plain: Vec<u8>,
    /// Our side's `close_notify` arrived.
    peer_closed: bool,
}

impl Wire {
    fn connect(
        mr: &MemoryReactor,
        inner: impl Protocol,
        client: &ClientTlsConfig,
        server: &ServerTlsConfig,
        options: MemoryOptions,
    ) -> Self {
        let layer = TlsProtocol::client(inner, client, "localhost").unwrap();
        Wire {
            st: StringTransport::with_options(mr, layer, options),
            conn: rustls::ServerConnection::new(server.rustls().clone()).unwrap(),
            plain: Vec::new(),
            peer_closed: false,
        }
    }

    /// Takes what our side wrote and feeds it to rustls; returns how many bytes that was.
    fn pump_in(&mut self) -> usize {
        let bytes = self.st.take();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            if self.conn.read_tls(&mut rest).unwrap() == 0 {
                break; // after our close_notify rustls takes nothing more
            }
            let state = self
                .conn
                .process_new_packets()
                .expect("our side speaks valid TLS");
            self.peer_closed |= state.peer_has_closed();
            let mut buf = [0u8; 16 * 1024];
            loop {
                match self.conn.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => self.plain.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("reading our plaintext: {e}"),
                }
            }
        }
        bytes.len()
    }

    /// Feeds our side every record rustls has queued, followed by `extra` raw bytes in the
    /// same write.
    fn pump_out_with(&mut self, extra: &[u8]) {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out).unwrap();
        }
        out.extend_from_slice(extra);
        if !out.is_empty() {
            assert_eq!(self.st.feed(&out), out.len(), "our side takes everything");
        }
    }

    fn pump_out(&mut self) {
        self.pump_out_with(&[]);
    }

    /// Sends application data to our side, a record's worth at a time.
    fn send(&mut self, data: &[u8]) {
        for chunk in data.chunks(16 * 1024) {
            self.conn.writer().write_all(chunk).unwrap();
            self.pump_out();
        }
    }

    /// Runs the handshake to its end (both sides done, tickets delivered).
    fn handshake(&mut self) {
        for _ in 0..10 {
            self.pump_out();
            let moved = self.pump_in();
            if !self.conn.is_handshaking() && !self.conn.wants_write() && moved == 0 {
                return;
            }
        }
        panic!("the handshake did not finish in 10 round trips");
    }
}

// ---- lose_connection and the TLS close timeout -------------------------------------------

#[test]
fn silent_peer_is_cut_off_at_the_tls_close_timeout_with_a_clean_reason() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let cl = log();
    let mut w = Wire::connect(
        &mr,
        rec(&cl, Script::default()),
        &client_config(&c),
        &server_config(&c),
        MemoryOptions::default(),
    );
    w.handshake();
    assert!(cl.borrow().made);
    let handle = cl.borrow().handle.clone().unwrap();
    handle.write(b"last words");
    handle.lose_connection();
    let start = mr.reactor().now();
    mr.run_until_idle();
    w.pump_in();
    assert_eq!(w.plain, b"last words");
    assert!(w.peer_closed, "our close_notify went out");
    assert!(w.st.fin_received(), "then our FIN");

    // The peer never answers: no close_notify, no FIN.
    mr.advance(DEFAULT_TLS_CLOSE_TIMEOUT - MS);
    assert!(cl.borrow().lost.is_none(), "still waiting for the peer");
    assert!(!w.st.reset_received());
    mr.advance(MS);
    assert_eq!(mr.reactor().now() - start, DEFAULT_TLS_CLOSE_TIMEOUT);
    assert_done(&cl, "our close, ended by the TLS close timeout");
    assert!(w.st.reset_received(), "the connection was aborted");
    assert!(
        matches!(w.st.lost(), Some(CloseReason::Aborted)),
        "the stream underneath was aborted: {:?}",
        w.st.lost()
    );
}

#[test]
fn tls_close_timeout_is_configurable() {
    let (_d, c) = certs();
    let client = ClientTlsConfig::builder()
        .ca_file(&c.ca_cert)
        .unwrap()
        .close_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    assert_eq!(client.close_timeout(), Duration::from_millis(250));
    assert_eq!(
        server_config(&c).close_timeout(),
        DEFAULT_TLS_CLOSE_TIMEOUT,
        "the documented default"
    );
    let mr = MemoryReactor::new();
    let cl = log();
    let mut w = Wire::connect(
        &mr,
        rec(&cl, Script::default()),
        &client,
        &server_config(&c),
        MemoryOptions::default(),
    );
    w.handshake();
    cl.borrow().handle.clone().unwrap().lose_connection();
    mr.advance(Duration::from_millis(249));
    assert!(cl.borrow().lost.is_none());
    mr.advance(MS);
    assert_done(&cl, "custom close timeout");
}

#[test]
fn peer_answering_close_notify_closes_at_once() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let cl = log();
    let mut w = Wire::connect(
        &mr,
        rec(&cl, Script::default()),
        &client_config(&c),
        &server_config(&c),
        MemoryOptions::default(),
    );
    w.handshake();
    let start = mr.reactor().now();
    cl.borrow().handle.clone().unwrap().lose_connection();
    mr.run_until_idle();
    w.pump_in();
    assert!(w.peer_closed);
    // The peer answers as a TLS peer should: its close_notify, then FIN.
    w.conn.send_close_notify();
    w.pump_out();
    w.st.feed_eof();
    assert_done(&cl, "answered close");
    assert_eq!(mr.reactor().now(), start, "no time passed");
    assert!(!w.st.reset_received(), "a graceful close, not an abort");
    assert!(w.st.lost().unwrap().is_clean());
}

#[test]
fn closing_against_our_own_layer_takes_no_time() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(rec(&cl, Script::default()), &client_config(&c), "localhost").unwrap(),
        TlsProtocol::server(rec(&sl, Script::default()), &server_config(&c)),
        MemoryOptions::chunked(100),
    );
    mr.run_until_idle();
    assert!(cl.borrow().made && sl.borrow().made);
    let start = mr.reactor().now();
    cl.borrow().handle.clone().unwrap().lose_connection();
    mr.run_until_idle();
    assert_eq!(mr.reactor().now(), start);
    assert_done(&cl, "client");
    assert_done(&sl, "server (the peer's close_notify is a clean end)");
    assert!(
        pair.client_lost().unwrap().is_clean(),
        "closed, not aborted"
    );
    assert!(pair.server_lost().unwrap().is_clean());
}

/// The TLS close timeout counts from the moment everything we wrote has reached the socket:
/// a peer that is slow to read is not cut off while our data still waits.
#[test]
fn tls_close_timeout_waits_for_our_own_data_to_drain() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let cl = log();
    let options = MemoryOptions {
        capacity: 16 * 1024,
        ..MemoryOptions::default()
    };
    let mut w = Wire::connect(
        &mr,
        rec(&cl, Script::default()),
        &client_config(&c),
        &server_config(&c),
        options,
    );
    w.handshake();
    let handle = cl.borrow().handle.clone().unwrap();
    let msg = pattern(200_000);
    handle.write(&msg);
    handle.lose_connection();
    mr.run_until_idle();
    assert!(
        handle.buffered() > 0,
        "the peer has not read: our data waits"
    );
    mr.advance(Duration::from_secs(17));
    assert!(
        cl.borrow().lost.is_none(),
        "not cut off while our own data waits (the TLS timer looked at 5, 10 and 15 s)"
    );
    // The peer reads everything now (at 17 s), our close_notify included.
    for _ in 0..200 {
        if w.pump_in() == 0 {
            break;
        }
    }
    assert_eq!(w.plain.len(), msg.len());
    assert!(w.plain == msg);
    assert!(w.peer_closed);
    assert_eq!(handle.buffered(), 0);
    // The timer looks every tenth of the timeout while data waits; it sees the drain at
    // 17.5 s and gives the peer the whole timeout from there.
    mr.advance(Duration::from_secs(5));
    assert!(
        cl.borrow().lost.is_none(),
        "a whole close timeout after the drain to answer our close_notify"
    );
    mr.advance(Duration::from_millis(500));
    assert_done(&cl, "drained, then the peer stayed silent");
}

/// A peer that never reads: the stream's own close timeout (30 s) ends the close, and that
/// is not a clean close (our data was never delivered).
#[test]
fn peer_that_never_reads_hits_the_stream_close_timeout() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let cl = log();
    let options = MemoryOptions {
        capacity: 16 * 1024,
        ..MemoryOptions::default()
    };
    let mut w = Wire::connect(
        &mr,
        rec(&cl, Script::default()),
        &client_config(&c),
        &server_config(&c),
        options,
    );
    w.handshake();
    let handle = cl.borrow().handle.clone().unwrap();
    handle.write(&pattern(200_000));
    handle.lose_connection();
    mr.advance(Duration::from_secs(30) - MS);
    assert!(cl.borrow().lost.is_none());
    mr.advance(MS);
    let reason = lost_once(&cl);
    assert!(
        matches!(reason, CloseReason::CloseTimedOut),
        "undelivered data is never a clean close: {reason:?}"
    );
    assert!(w.st.reset_received());
}

// ---- half-close ---------------------------------------------------------------------------

/// One side sends a request and half-closes (close_notify, then FIN); the other, opted in to
/// half-close, hears `read_connection_lost` and keeps sending 256 KiB before closing.
fn half_close_exchange(client_half_closes: bool) {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let reply = pattern(256 * 1024);
    let closer = Script {
        greeting: b"request".to_vec(),
        shut_write: true,
        ..Script::default()
    };
    let responder = Script {
        half_close: true,
        on_read_lost: OnReadLost::Reply(reply.clone()),
        ..Script::default()
    };
    let (client_script, server_script) = if client_half_closes {
        (closer, responder)
    } else {
        (responder, closer)
    };
    let pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(rec(&cl, client_script), &client_config(&c), "localhost").unwrap(),
        TlsProtocol::server(rec(&sl, server_script), &server_config(&c)),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    let (closer, responder) = if client_half_closes {
        (&cl, &sl)
    } else {
        (&sl, &cl)
    };
    assert!(
        closer.borrow().write_lost,
        "write_connection_lost after FIN"
    );
    assert!(!closer.borrow().read_lost);
    assert_eq!(responder.borrow().data, b"request");
    assert!(
        responder.borrow().read_lost,
        "read_connection_lost at the close_notify"
    );
    assert_eq!(closer.borrow().data.len(), reply.len());
    assert!(
        closer.borrow().data == reply,
        "every byte after the half-close"
    );
    assert_done(closer, "half-closer");
    assert_done(responder, "responder");
    assert!(pair.client_lost().unwrap().is_clean());
    assert!(pair.server_lost().unwrap().is_clean());
    assert_eq!(
        mr.reactor().now(),
        Duration::ZERO,
        "no timeout was involved"
    );
}

#[test]
fn half_close_client_to_server_then_server_sends_256k() {
    half_close_exchange(true);
}

#[test]
fn half_close_server_to_client_then_client_sends_256k() {
    half_close_exchange(false);
}

#[test]
fn close_notify_without_half_close_opt_in_closes_the_connection() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(
            rec(
                &cl,
                Script {
                    greeting: b"request".to_vec(),
                    shut_write: true,
                    ..Script::default()
                },
            ),
            &client_config(&c),
            "localhost",
        )
        .unwrap(),
        TlsProtocol::server(rec(&sl, Script::default()), &server_config(&c)),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    assert_eq!(sl.borrow().data, b"request");
    assert!(
        !sl.borrow().read_lost,
        "no read_connection_lost without the opt-in"
    );
    assert_done(&sl, "server closed at the client's close_notify");
    assert!(cl.borrow().write_lost);
    assert_done(&cl, "client");
    assert_eq!(mr.reactor().now(), Duration::ZERO);
}

#[test]
fn half_close_on_the_wire_is_close_notify_then_fin_and_reading_goes_on() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let cl = log();
    let mut w = Wire::connect(
        &mr,
        rec(
            &cl,
            Script {
                half_close: true,
                on_read_lost: OnReadLost::Nothing,
                ..Script::default()
            },
        ),
        &client_config(&c),
        &server_config(&c),
        MemoryOptions::default(),
    );
    w.handshake();
    let handle = cl.borrow().handle.clone().unwrap();
    handle.write(b"request");
    handle.lose_write_connection();
    assert!(handle.is_closing(), "no more writes");
    mr.run_until_idle();
    w.pump_in();
    assert_eq!(w.plain, b"request");
    assert!(w.peer_closed, "close_notify");
    assert!(w.st.fin_received(), "then FIN");
    assert!(cl.borrow().write_lost);
    // The peer keeps sending, much later.
    mr.advance(Duration::from_secs(60));
    let reply = pattern(100_000);
    w.send(&reply);
    assert_eq!(cl.borrow().data, reply);
    assert!(!cl.borrow().read_lost);
    assert!(cl.borrow().lost.is_none());
    // Its close_notify is the clean end of its data.
    w.conn.send_close_notify();
    w.pump_out();
    assert!(cl.borrow().read_lost);
    assert!(
        cl.borrow().lost.is_none(),
        "half-open until the protocol closes"
    );
    w.st.feed_eof();
    assert_done(&cl, "both directions closed");
}

#[test]
fn fin_without_close_notify_after_our_half_close_is_truncation() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let (cl, sl) = (log(), log());
    let (server, raw) = util::RawEnd::new(TlsProtocol::server(
        rec(
            &sl,
            Script {
                half_close: true,
                on_read_lost: OnReadLost::Nothing,
                ..Script::default()
            },
        ),
        &server_config(&c),
    ));
    let _pair = connect_pair(
        mr.reactor(),
        TlsProtocol::client(
            rec(
                &cl,
                Script {
                    greeting: b"request".to_vec(),
                    shut_write: true,
                    ..Script::default()
                },
            ),
            &client_config(&c),
            "localhost",
        )
        .unwrap(),
        server,
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    assert!(sl.borrow().read_lost);
    assert!(cl.borrow().lost.is_none());
    // The server's stream closes (FIN) without a TLS close_notify.
    raw.borrow().clone().unwrap().lose_connection();
    mr.run_until_idle();
    let reason = lost_once(&cl);
    assert!(
        matches!(TlsError::from_reason(&reason), Some(TlsError::Truncated)),
        "{reason:?}"
    );
}

// ---- hostile input ------------------------------------------------------------------------

/// Runs `f` on its own thread and fails if it does not finish in time (a layer spinning on
/// its input would otherwise hang the test run).
fn within(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => worker.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked: re-raise its panic.
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("did not finish within {limit:?}: the layer spins")
        }
    }
}

/// The peer sends data, its close_notify and then 64 KiB of garbage, all in one write: the
/// layer delivers the data, stops at the close_notify and ignores the rest, whether it came
/// in the same read or in later ones, and the connection ends without the clock moving.
///
/// `half_close`: `None` for a protocol without the opt-in (the connection closes at the
/// close_notify, so the stream discards what follows); `Some(Nothing)` keeps it half-open, so
/// the garbage in later reads reaches the layer.
fn garbage_after_close_notify(chunk_size: usize, half_close: Option<OnReadLost>) {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let cl = log();
    let script = Script {
        half_close: half_close.is_some(),
        on_read_lost: half_close.clone().unwrap_or_default(),
        ..Script::default()
    };
    let mut w = Wire::connect(
        &mr,
        rec(&cl, script),
        &client_config(&c),
        &server_config(&c),
        MemoryOptions::chunked(chunk_size),
    );
    w.handshake();
    w.conn.writer().write_all(b"final data").unwrap();
    w.conn.send_close_notify();
    let garbage: Vec<u8> = (0..64 * 1024).map(|i| (i * 31 % 256) as u8).collect();
    w.pump_out_with(&garbage);
    assert_eq!(cl.borrow().data, b"final data");
    assert_eq!(cl.borrow().read_lost, half_close.is_some());
    if matches!(half_close, Some(OnReadLost::Nothing)) {
        assert!(cl.borrow().lost.is_none(), "half-open");
        assert_eq!(w.st.unread(), 0, "the layer read all the garbage");
        cl.borrow().handle.clone().unwrap().lose_connection();
    }
    mr.run_until_idle();
    w.pump_in();
    assert!(w.peer_closed, "we answered with our close_notify");
    assert!(w.st.fin_received(), "and FIN");
    w.st.feed_eof();
    assert_done(&cl, "clean: the garbage came after the close_notify");
    assert_eq!(mr.reactor().now(), Duration::ZERO);
}

const SPIN_LIMIT: Duration = Duration::from_secs(30);

#[test]
fn bytes_after_close_notify_in_the_same_read_do_not_spin() {
    within(SPIN_LIMIT, || {
        garbage_after_close_notify(128 * 1024, None);
        garbage_after_close_notify(128 * 1024, Some(OnReadLost::Close));
        garbage_after_close_notify(128 * 1024, Some(OnReadLost::Nothing));
    });
}

#[test]
fn bytes_after_close_notify_in_later_reads_do_not_spin() {
    within(SPIN_LIMIT, || {
        garbage_after_close_notify(7, None);
        garbage_after_close_notify(1000, Some(OnReadLost::Close));
        garbage_after_close_notify(1000, Some(OnReadLost::Nothing));
        garbage_after_close_notify(1, Some(OnReadLost::Nothing));
    });
}

#[test]
fn after_an_alert_a_silent_peer_is_cut_off_at_the_tls_close_timeout() {
    let (_d, c) = certs();
    let mr = MemoryReactor::new();
    let sl = log();
    let st = StringTransport::connect(
        &mr,
        TlsProtocol::server(rec(&sl, Script::default()), &server_config(&c)),
    );
    st.feed(b"GET / HTTP/1.1\r\n\r\n");
    let alert = st.take();
    assert_eq!(alert.first(), Some(&0x15), "an alert record");
    assert!(st.fin_received(), "then FIN");
    // The peer neither answers nor closes.
    mr.advance(DEFAULT_TLS_CLOSE_TIMEOUT - MS);
    assert!(sl.borrow().lost.is_none());
    mr.advance(MS);
    let reason = lost_once(&sl);
    let err = TlsError::from_reason(&reason).expect("the TLS failure, not the abort");
    assert!(err.rustls_error().is_some(), "{err}");
    assert!(st.reset_received());
    assert!(!sl.borrow().made);
}

/// A close timeout of zero while our data waits in the stream's buffer: the close timer looks
/// at most every 10 ms (it re-armed at zero every turn, a busy loop; on the virtual clock
/// `advance` never returned), and the stream's own close timeout ends the connection.
#[test]
fn a_zero_tls_close_timeout_does_not_spin_while_our_data_drains() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (_d, c) = certs();
        let mr = MemoryReactor::new();
        let cl = log();
        let options = MemoryOptions {
            capacity: 16 * 1024,
            ..MemoryOptions::default()
        };
        let client = client_config(&c).with_close_timeout(Duration::ZERO);
        let mut w = Wire::connect(
            &mr,
            rec(&cl, Script::default()),
            &client,
            &server_config(&c),
            options,
        );
        w.handshake();
        let handle = cl.borrow().handle.clone().unwrap();
        handle.write(&pattern(200_000));
        handle.lose_connection();
        let start = std::time::Instant::now();
        mr.advance(Duration::from_secs(31));
        let reason = lost_once(&cl);
        tx.send((start.elapsed(), format!("{reason:?}"))).unwrap();
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok((elapsed, reason)) => {
            assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
            assert!(reason.contains("CloseTimedOut"), "{reason}");
        }
        Err(_) => panic!(
            "advance(31 s) did not return in 20 s: the TLS close timer re-arms at 0 every turn"
        ),
    }
}
