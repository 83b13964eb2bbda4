//! TLS on real sockets: loopback TCP and Unix, hostile peers, and interop with openssl.

#![allow(clippy::print_stdout)]

mod util;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use torsion_reactor::prelude::*;
use torsion_transports::tls::{
    self, ClientTlsConfig, DevCerts, ServerTlsConfig, TlsError, TlsReactorExt,
};
use torsion_transports::ReactorExt;
use util::{pattern, port_addr, run_until, run_until_within, Log, Peer, SenderFactory};

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d);
    }
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

fn sender(msg: &[u8]) -> (Log, SenderFactory) {
    let log = Log::default();
    (
        log.clone(),
        SenderFactory {
            log,
            msg: msg.to_vec(),
        },
    )
}

#[test]
fn tcp_echo_over_tls() {
    let (_d, c) = certs(&[]);
    let reactor = Reactor::new().unwrap();
    let port = reactor
        .listen_tls("127.0.0.1:0", &server_config(&c), |_: &Address| Echo)
        .unwrap();
    let msg = pattern(300_000);
    let (log, factory) = sender(&msg);
    let addr = port_addr(&port.local_address());
    reactor.connect_tls("127.0.0.1", addr.port(), &client_config(&c), factory);
    let l = log.clone();
    run_until(&reactor, "TLS echo", move || {
        l.borrow().factory_lost.is_some()
    });
    let log = log.borrow();
    assert_eq!(log.data.len(), msg.len());
    assert!(log.data == msg);
    assert!(
        log.factory_lost.as_ref().unwrap().is_clean(),
        "{:?}",
        log.factory_lost
    );
}

#[test]
fn unix_echo_over_tls() {
    let (d, c) = certs(&[]);
    let reactor = Reactor::new().unwrap();
    let path = d.path().join("tls.sock");
    let _port = reactor
        .listen_tls_unix(&path, &server_config(&c), |_: &Address| Echo)
        .unwrap();
    let (log, factory) = sender(b"over a unix socket");
    reactor.connect_tls_unix(&path, "localhost", &client_config(&c), factory);
    let l = log.clone();
    run_until(&reactor, "TLS unix echo", move || {
        l.borrow().factory_lost.is_some()
    });
    assert_eq!(log.borrow().data, b"over a unix socket");
}

/// A `tlsunix` endpoint applies `mode=` to its socket file (as `unix` does) and serves TLS.
#[test]
fn tlsunix_endpoint_applies_its_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    use torsion_transports::ServerEndpoint;

    let (d, c) = certs(&[]);
    let reactor = Reactor::new().unwrap();
    let path = d.path().join("mode.sock");
    let desc = format!(
        "tlsunix:{}:certKey={}:privateKey={}:mode=600:backlog=7",
        path.display(),
        c.server_cert.display(),
        c.server_key.display()
    );
    let endpoint = ServerEndpoint::parse(&desc).unwrap();
    let _port = endpoint.listen(&reactor, |_: &Address| Echo).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "socket file mode is {mode:o}");

    let (log, factory) = sender(b"over a 0600 socket");
    reactor.connect_tls_unix(&path, "localhost", &client_config(&c), factory);
    let l = log.clone();
    run_until(&reactor, "TLS unix echo", move || {
        l.borrow().factory_lost.is_some()
    });
    assert_eq!(log.borrow().data, b"over a 0600 socket");
}

/// `listen_tls_unix_with` applies its options' file mode.
#[test]
fn listen_tls_unix_with_applies_the_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    use torsion_transports::UnixListenOptions;

    let (d, c) = certs(&[]);
    let reactor = Reactor::new().unwrap();
    let path = d.path().join("with.sock");
    let options = UnixListenOptions {
        mode: Some(0o640),
        ..UnixListenOptions::default()
    };
    let _port = reactor
        .listen_tls_unix_with(&path, &server_config(&c), |_: &Address| Echo, options)
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "socket file mode is {mode:o}");
}

#[test]
fn handshake_failure_reaches_client_connection_failed() {
    let (_d, c) = certs(&["other.example"]);
    let reactor = Reactor::new().unwrap();
    let port = reactor
        .listen_tls("127.0.0.1:0", &server_config(&c), |_: &Address| Echo)
        .unwrap();
    let (log, factory) = sender(b"never sent");
    let addr = port_addr(&port.local_address());
    reactor.connect_tls("127.0.0.1", addr.port(), &client_config(&c), factory);
    let l = log.clone();
    run_until(&reactor, "TLS failure", move || l.borrow().failed.is_some());
    let log = log.borrow();
    assert!(!log.made, "no protocol for a failed handshake");
    assert!(log.factory_lost.is_none());
    let reason = log.failed.clone().unwrap();
    let err = TlsError::from_reason(&reason).expect("a TLS reason");
    assert!(
        matches!(
            err.certificate_error(),
            Some(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err}"
    );
}

#[derive(Default)]
struct RefuserCalls {
    failed: Vec<CloseReason>,
    lost: Vec<CloseReason>,
}

/// A client factory that refuses the connection (builds no protocol) after the handshake.
struct Refuser(Rc<RefCell<RefuserCalls>>);
impl ClientFactory for Refuser {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        None
    }
    fn client_connection_failed(&mut self, _c: &Connector, reason: CloseReason) {
        self.0.borrow_mut().failed.push(reason);
    }
    fn client_connection_lost(&mut self, _c: &Connector, reason: CloseReason) {
        self.0.borrow_mut().lost.push(reason);
    }
}

/// As on plain TCP, a client factory that builds no protocol hears that the attempt failed
/// with `NoProtocol`, and never that a connection was lost: it was never made.
#[test]
fn a_client_factory_refusing_after_the_handshake_hears_no_protocol() {
    let (_d, c) = certs(&[]);
    let reactor = Reactor::new().unwrap();
    let port = reactor
        .listen_tls("127.0.0.1:0", &server_config(&c), |_: &Address| Echo)
        .unwrap();
    let addr = port_addr(&port.local_address());
    let calls = Rc::new(RefCell::new(RefuserCalls::default()));
    reactor.connect_tls(
        "127.0.0.1",
        addr.port(),
        &client_config(&c),
        Refuser(calls.clone()),
    );
    util::run_for(&reactor, Duration::from_millis(500));
    let calls = calls.borrow();
    assert!(
        calls.lost.is_empty(),
        "client_connection_lost for a never-made connection: {:?}",
        calls.lost
    );
    assert!(
        matches!(calls.failed.as_slice(), [CloseReason::NoProtocol]),
        "one client_connection_failed(NoProtocol), as on TCP: {:?}",
        calls.failed
    );
}

/// 1,000 connections that send garbage, plus some that stall: every one is closed (the
/// garbage at once, the stalled ones at the handshake deadline), and the server survives.
#[test]
fn garbage_and_stalled_connections_are_closed() {
    let (_d, c) = certs(&[]);
    let reactor = Reactor::new().unwrap();
    let config = server_config(&c).with_handshake_timeout(Duration::from_millis(500));
    let port = reactor
        .listen_tls("127.0.0.1:0", &config, |_: &Address| Echo)
        .unwrap();
    let addr = port_addr(&port.local_address());
    let peer = Peer::spawn(move || {
        let started = Instant::now();
        let stalled: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut closed = 0;
        for i in 0..1000u32 {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let garbage: Vec<u8> = (0..64).map(|j| (i.wrapping_mul(31) + j) as u8).collect();
            let _ = s.write_all(&garbage);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            if s.read_to_end(&mut sink).is_ok() {
                closed += 1;
            }
        }
        let mut stalled_closed = 0;
        for mut s in stalled {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut sink = Vec::new();
            match s.read_to_end(&mut sink) {
                Ok(_) => stalled_closed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => stalled_closed += 1,
                Err(_) => {}
            }
        }
        (closed, stalled_closed, started.elapsed())
    });
    let done = peer.done_flag();
    run_until_within(
        &reactor,
        Duration::from_secs(60),
        "garbage peers",
        move || done.load(std::sync::atomic::Ordering::SeqCst),
    );
    let (closed, stalled_closed, elapsed) = peer.join();
    assert_eq!(closed, 1000);
    assert_eq!(stalled_closed, 20);
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    // The server still works.
    let (log, factory) = sender(b"still alive");
    reactor.connect_tls("localhost", addr.port(), &client_config(&c), factory);
    let l = log.clone();
    run_until(&reactor, "echo after garbage", move || {
        l.borrow().factory_lost.is_some()
    });
    assert_eq!(log.borrow().data, b"still alive");
}

fn openssl() -> Option<&'static str> {
    let path = "/usr/bin/openssl";
    if Path::new(path).exists() {
        Some(path)
    } else {
        println!("skipped: openssl not found at {path}");
        None
    }
}

/// Our server, openssl's client (verifying our certificate against the dev CA).
#[test]
fn interop_openssl_s_client_to_torsion_server() {
    let Some(openssl) = openssl() else { return };
    let (_d, c) = certs(&[]);
    let reactor = Reactor::new().unwrap();
    struct EchoOnce;
    impl Protocol for EchoOnce {
        fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
            t.write(b"echo: ");
            t.write(d);
            if d.ends_with(b"\n") {
                t.lose_connection();
            }
        }
    }
    let port = reactor
        .listen_tls("127.0.0.1:0", &server_config(&c), |_: &Address| EchoOnce)
        .unwrap();
    let addr = port_addr(&port.local_address());
    let ca = c.ca_cert.clone();
    let openssl = openssl.to_owned();
    let peer = Peer::spawn(move || {
        let mut child = Command::new(openssl)
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                "localhost",
            ])
            .arg("-CAfile")
            .arg(&ca)
            .args([
                "-verify_return_error",
                "-verify_hostname",
                "localhost",
                "-quiet",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    });
    let done = peer.done_flag();
    run_until(&reactor, "openssl s_client", move || {
        done.load(std::sync::atomic::Ordering::SeqCst)
    });
    let out = peer.join();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("echo: hello"),
        "stdout {stdout:?} stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// openssl's server, our client (verifying openssl's certificate).
#[test]
fn interop_torsion_client_to_openssl_s_server() {
    let Some(openssl) = openssl() else { return };
    let (_d, c) = certs(&[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(openssl)
        .args(["s_server", "-accept", &port.to_string(), "-rev", "-quiet"])
        .arg("-cert")
        .arg(&c.server_cert)
        .arg("-key")
        .arg(&c.server_key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = server.kill();
            panic!("openssl s_server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let reactor = Reactor::new().unwrap();
    let (log, factory) = sender(b"hello\n");
    reactor.connect_tls("localhost", port, &client_config(&c), factory);
    let l = log.clone();
    let ok = util::try_run_until(&reactor, Duration::from_secs(10), move || {
        l.borrow().data.len() >= 6 || l.borrow().failed.is_some()
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "no answer from openssl s_server");
    let log = log.borrow();
    assert!(log.failed.is_none(), "{:?}", log.failed);
    assert_eq!(log.data, b"olleh\n");
}

// ---- close semantics on real sockets --------------------------------------------------------

#[derive(Default)]
struct HalfLog {
    data: Vec<u8>,
    read_lost: bool,
    write_lost: bool,
    lost: Option<CloseReason>,
}

type Half = Rc<RefCell<HalfLog>>;

/// Client: sends a request, half-closes (close_notify, FIN), reads the response to the end.
struct Requester(Half);

impl Protocol for Requester {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"GET everything");
        t.lose_write_connection();
    }
    fn data_received(&mut self, _: &mut dyn Transport, d: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(d);
    }
    fn write_connection_lost(&mut self, _: &mut dyn Transport) {
        self.0.borrow_mut().write_lost = true;
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.0.borrow_mut().lost = Some(reason);
    }
}

/// Server, opted in to half-close: at the client's close_notify, sends `reply` and closes.
struct Responder {
    log: Half,
    reply: Rc<Vec<u8>>,
}

impl Protocol for Responder {
    fn data_received(&mut self, _: &mut dyn Transport, d: &[u8]) {
        self.log.borrow_mut().data.extend_from_slice(d);
    }
    fn half_close(&self) -> bool {
        true
    }
    fn read_connection_lost(&mut self, t: &mut dyn Transport) {
        self.log.borrow_mut().read_lost = true;
        for chunk in self.reply.chunks(10_000) {
            t.write(chunk);
        }
        t.lose_connection();
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

#[test]
fn half_close_over_tcp_server_sends_256k_after_the_clients_close_notify() {
    let (_d, c) = certs(&[]);
    let reactor = Reactor::new().unwrap();
    let (cl, sl) = (Half::default(), Half::default());
    let reply = Rc::new(pattern(256 * 1024));
    let (s, r) = (sl.clone(), reply.clone());
    let port = reactor
        .listen_tls("127.0.0.1:0", &server_config(&c), move |_: &Address| {
            Responder {
                log: s.clone(),
                reply: r.clone(),
            }
        })
        .unwrap();
    let addr = port_addr(&port.local_address());
    let l = cl.clone();
    reactor.connect_tls(
        "127.0.0.1",
        addr.port(),
        &client_config(&c),
        move |_: &Address| Requester(l.clone()),
    );
    let (l, s) = (cl.clone(), sl.clone());
    run_until(&reactor, "half-close exchange", move || {
        l.borrow().lost.is_some() && s.borrow().lost.is_some()
    });
    let (cl, sl) = (cl.borrow(), sl.borrow());
    assert_eq!(sl.data, b"GET everything");
    assert!(sl.read_lost, "the server heard the client's close_notify");
    assert!(cl.write_lost, "the client's FIN went out");
    assert_eq!(cl.data.len(), reply.len());
    assert!(
        cl.data == *reply,
        "every byte sent after the half-close arrived"
    );
    assert!(cl.lost.as_ref().unwrap().is_clean(), "{:?}", cl.lost);
    assert!(sl.lost.as_ref().unwrap().is_clean(), "{:?}", sl.lost);
}

/// Our server closes; the peer (rustls on a thread) reads our close_notify and FIN but never
/// answers. The TLS close timeout (300 ms here) ends the connection, reported as clean; the
/// stream's own 30 s close timeout is not what ends it.
#[test]
fn silent_peer_over_tcp_is_cut_off_at_the_tls_close_timeout() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let (_d, c) = certs(&[]);
    let reactor = Reactor::new().unwrap();
    let close_timeout = Duration::from_millis(300);
    let config = server_config(&c).with_close_timeout(close_timeout);
    let lost: Rc<RefCell<Option<(CloseReason, Duration)>>> = Rc::default();
    struct Bye {
        lost: Rc<RefCell<Option<(CloseReason, Duration)>>>,
        closed_at: Option<Instant>,
    }
    impl Protocol for Bye {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.write(b"bye");
            t.lose_connection();
            self.closed_at = Some(Instant::now());
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn connection_lost(&mut self, reason: CloseReason) {
            let took = self.closed_at.map(|t| t.elapsed()).unwrap_or_default();
            *self.lost.borrow_mut() = Some((reason, took));
        }
    }
    let l = lost.clone();
    let port = reactor
        .listen_tls("127.0.0.1:0", &config, move |_: &Address| Bye {
            lost: l.clone(),
            closed_at: None,
        })
        .unwrap();
    let addr = port_addr(&port.local_address());
    let rustls_client = client_config(&c).rustls().clone();
    let release = Arc::new(AtomicBool::new(false));
    let hold = release.clone();
    let peer = Peer::spawn(move || {
        let sock = util::std_connect(addr);
        let name = "localhost".try_into().unwrap();
        let conn = rustls::ClientConnection::new(rustls_client, name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut got = Vec::new();
        // Ends with Ok at our close_notify (a truncation would be an error).
        let clean = tls.read_to_end(&mut got).is_ok();
        // Stay silent, the socket open, until the test is done (bounded).
        let started = Instant::now();
        while !hold.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        (got, clean)
    });
    let l = lost.clone();
    run_until(&reactor, "the TLS close timeout", move || {
        l.borrow().is_some()
    });
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    let (got, clean) = peer.join();
    assert_eq!(got, b"bye");
    assert!(clean, "the peer saw our close_notify");
    let (reason, took) = lost.borrow().clone().unwrap();
    assert!(reason.is_clean(), "our close, still clean: {reason:?}");
    assert!(took >= close_timeout, "waited for the peer: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the TLS close timeout, not the stream's 30 s: {took:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Stopping a TLS connection attempt.

/// What a [`Watcher`] client factory heard.
#[derive(Default)]
struct Heard {
    started: usize,
    built: usize,
    failed: Vec<CloseReason>,
    lost: Vec<CloseReason>,
    /// The connector the last `started_connecting` received.
    connector: Option<Connector>,
}

type HeardLog = Rc<RefCell<Heard>>;

/// A client factory that records its hooks; its protocol records into `rec`.
struct Watcher {
    heard: HeardLog,
    rec: util::Shared,
}

impl Watcher {
    fn new() -> (Self, HeardLog, util::Shared) {
        let heard = HeardLog::default();
        let rec = util::record();
        let watcher = Watcher {
            heard: heard.clone(),
            rec: rec.clone(),
        };
        (watcher, heard, rec)
    }
}

impl ClientFactory for Watcher {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        self.heard.borrow_mut().built += 1;
        Some(Box::new(util::Recorder::new(&self.rec)))
    }
    fn started_connecting(&mut self, connector: &Connector) {
        let mut heard = self.heard.borrow_mut();
        heard.started += 1;
        heard.connector = Some(connector.clone());
    }
    fn client_connection_failed(&mut self, _connector: &Connector, reason: CloseReason) {
        self.heard.borrow_mut().failed.push(reason);
    }
    fn client_connection_lost(&mut self, _connector: &Connector, reason: CloseReason) {
        self.heard.borrow_mut().lost.push(reason);
    }
}

/// A TLS echo port and a watched client connected to it, both handshakes done.
struct Connected {
    reactor: Reactor,
    port: torsion_transports::ListeningPort,
    connector: Connector,
    heard: HeardLog,
    /// The client protocol's record.
    client: util::Shared,
    /// The server protocol's record.
    server: util::Shared,
}

fn connected(c: &DevCerts) -> Connected {
    let reactor = Reactor::new().unwrap();
    let server = util::record();
    let s = server.clone();
    let port = reactor
        .listen_tls("127.0.0.1:0", &server_config(c), move |_: &Address| {
            util::Recorder::echo(&s)
        })
        .unwrap();
    let addr = port_addr(&port.local_address());
    let (factory, heard, client) = Watcher::new();
    let connector = reactor.connect_tls("127.0.0.1", addr.port(), &client_config(c), factory);
    let (r, s) = (client.clone(), server.clone());
    run_until(&reactor, "the handshakes", move || {
        r.borrow().made && s.borrow().made
    });
    Connected {
        reactor,
        port,
        connector,
        heard,
        client,
        server,
    }
}

/// What the silent server saw of its connections.
#[derive(Default)]
struct SilentLog {
    /// Connections whose first bytes (the ClientHello) arrived.
    hellos: usize,
    /// Connections lost.
    lost: usize,
}

/// A plain stream server protocol that takes the ClientHello and never answers.
struct Silent {
    log: Rc<RefCell<SilentLog>>,
    seen: bool,
}

impl Protocol for Silent {
    fn data_received(&mut self, _t: &mut dyn Transport, _data: &[u8]) {
        // Counted once: the ClientHello may come in pieces.
        if !std::mem::replace(&mut self.seen, true) {
            self.log.borrow_mut().hellos += 1;
        }
    }
    fn connection_lost(&mut self, _reason: CloseReason) {
        self.log.borrow_mut().lost += 1;
    }
}

fn silent_factory(log: &Rc<RefCell<SilentLog>>) -> impl Factory {
    let log = log.clone();
    move |_: &Address| Silent {
        log: log.clone(),
        seen: false,
    }
}

/// Waits until the silent server has the attempt's ClientHello (so TCP is connected and the
/// handshake under way), calls `stop` on `connector`, and checks that the attempt ends at
/// once: one `client_connection_failed(Aborted)`, within well under a second (not at the
/// 10 s handshake deadline), no protocol built, no `client_connection_lost`, and the
/// server's connection reset.
fn stop_during_handshake(
    reactor: &Reactor,
    server: &Rc<RefCell<SilentLog>>,
    heard: &HeardLog,
    rec: &util::Shared,
    attempt: usize,
    stop: impl FnOnce(),
) {
    let s = server.clone();
    run_until(reactor, "the ClientHello to reach the server", move || {
        s.borrow().hellos == attempt
    });
    assert_eq!(
        heard.borrow().failed.len(),
        attempt - 1,
        "still handshaking"
    );
    let stopped = Instant::now();
    stop();
    let h = heard.clone();
    run_until_within(
        reactor,
        Duration::from_secs(1),
        "the stopped attempt to fail",
        move || h.borrow().failed.len() == attempt,
    );
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "stopped at once: {took:?}"
    );
    let s = server.clone();
    run_until_within(
        reactor,
        Duration::from_secs(1),
        "the server's connection to end",
        move || s.borrow().lost == attempt,
    );
    util::run_for(reactor, Duration::from_millis(100)); // nothing more comes
    let heard = heard.borrow();
    assert!(
        matches!(heard.failed[attempt - 1], CloseReason::Aborted),
        "client_connection_failed(Aborted): {:?}",
        heard.failed
    );
    assert_eq!(heard.failed.len(), attempt, "{:?}", heard.failed);
    assert!(heard.lost.is_empty(), "never connected: {:?}", heard.lost);
    assert_eq!(heard.built, 0, "no protocol built");
    assert!(!rec.borrow().made, "no connection_made");
}

/// `stop_connecting` during the TLS handshake (TCP connected, the server silent) ends the
/// attempt at once with `Aborted`, as during a TCP connect, on the connector `connect_tls`
/// returned; the connector then connects again, and `disconnect` on the connector the
/// factory's hook received stops that attempt's handshake too.
#[test]
fn stop_connecting_during_the_handshake_aborts_the_attempt() {
    let (_d, c) = certs(&[]);
    let reactor = Reactor::new().unwrap();
    let server = Rc::new(RefCell::new(SilentLog::default()));
    let port = reactor
        .listen_tcp("127.0.0.1:0", silent_factory(&server))
        .unwrap();
    let addr = port_addr(&port.local_address());
    let (factory, heard, rec) = Watcher::new();
    let connector = reactor.connect_tls("127.0.0.1", addr.port(), &client_config(&c), factory);
    stop_during_handshake(&reactor, &server, &heard, &rec, 1, || {
        connector.stop_connecting()
    });

    connector.connect();
    let hooked = {
        let h = heard.clone();
        run_until(&reactor, "the second attempt to start", move || {
            h.borrow().started == 2
        });
        heard
            .borrow()
            .connector
            .clone()
            .expect("the hook's connector")
    };
    stop_during_handshake(&reactor, &server, &heard, &rec, 2, || hooked.disconnect());
    heard.borrow_mut().connector = None; // it holds the factory
}

/// The same over a Unix socket (`connect_tls_unix`), stopped through the connector that
/// `started_connecting` received.
#[test]
fn stop_connecting_during_a_unix_handshake_aborts_the_attempt() {
    let (d, c) = certs(&[]);
    let reactor = Reactor::new().unwrap();
    let server = Rc::new(RefCell::new(SilentLog::default()));
    let path = d.path().join("silent.sock");
    let _port = reactor.listen_unix(&path, silent_factory(&server)).unwrap();
    let (factory, heard, rec) = Watcher::new();
    let _connector = reactor.connect_tls_unix(&path, "localhost", &client_config(&c), factory);
    let hooked = {
        let h = heard.clone();
        run_until(&reactor, "the attempt to start", move || {
            h.borrow().started == 1
        });
        heard
            .borrow()
            .connector
            .clone()
            .expect("the hook's connector")
    };
    stop_during_handshake(&reactor, &server, &heard, &rec, 1, || {
        hooked.stop_connecting()
    });
    heard.borrow_mut().connector = None;
}

/// Once the handshake completed the connection is made: `stop_connecting` changes nothing
/// (as on a connected TCP connector), and `disconnect` closes it gracefully, TLS
/// `close_notify` included, so both ends see a clean close.
#[test]
fn after_the_handshake_stop_connecting_does_nothing_and_disconnect_closes_cleanly() {
    let (_d, c) = certs(&[]);
    let Connected {
        reactor,
        port: _port,
        connector,
        heard,
        client: rec,
        server,
    } = connected(&c);

    connector.stop_connecting();
    util::run_for(&reactor, Duration::from_millis(200));
    {
        let heard = heard.borrow();
        assert!(heard.failed.is_empty(), "{:?}", heard.failed);
        assert!(heard.lost.is_empty(), "{:?}", heard.lost);
        assert_eq!(heard.built, 1);
    }
    assert_eq!(rec.borrow().lost_calls, 0, "still connected");
    let handle = rec.borrow().handle.clone().expect("connected");
    handle.write(b"still here");
    let r = rec.clone();
    run_until(&reactor, "the echo", move || r.borrow().data.len() >= 10);
    assert_eq!(rec.borrow().data, b"still here");

    connector.disconnect();
    let (h, s) = (heard.clone(), server.clone());
    run_until(&reactor, "both ends to close", move || {
        !h.borrow().lost.is_empty() && util::is_lost(&s)
    });
    util::run_for(&reactor, Duration::from_millis(100));
    util::assert_lost_once(&rec, "client", CloseReason::is_clean);
    util::assert_lost_once(&server, "server", CloseReason::is_clean);
    let heard = heard.borrow();
    assert!(
        matches!(heard.lost.as_slice(), [CloseReason::Done]),
        "{:?}",
        heard.lost
    );
    assert!(heard.failed.is_empty(), "{:?}", heard.failed);
}

/// Closing a TLS port's connections (`lose_connections`, as `torsion serve` does on Ctrl-C)
/// sends close_notify first: both ends see a clean close, not a truncation.
#[test]
fn a_tls_ports_lose_connections_sends_close_notify() {
    let (_d, c) = certs(&[]);
    let Connected {
        reactor,
        port,
        heard,
        client: rec,
        server,
        ..
    } = connected(&c);
    assert_eq!(port.connection_count(), 1);

    port.lose_connections();
    let (h, s) = (heard.clone(), server.clone());
    run_until(&reactor, "both ends to close", move || {
        !h.borrow().lost.is_empty() && util::is_lost(&s)
    });
    util::assert_lost_once(&rec, "client", CloseReason::is_clean);
    util::assert_lost_once(&server, "server", CloseReason::is_clean);
    assert!(
        matches!(heard.borrow().lost.as_slice(), [CloseReason::Done]),
        "{:?}",
        heard.borrow().lost
    );
}

/// A handle to a TLS connection kept past its reactor (a chat room's list of clients, say) is
/// safe to use: writes and closes are ignored, as over TCP (they panicked, reaching for the
/// reactor to schedule the encryption).
#[test]
fn a_tls_handle_used_after_its_reactor_is_dropped_is_ignored() {
    let (_d, c) = certs(&[]);
    let Connected {
        reactor,
        port,
        client: rec,
        server,
        ..
    } = connected(&c);
    let handles = [
        rec.borrow().handle.clone().expect("client connected"),
        server.borrow().handle.clone().expect("server connected"),
    ];
    drop((port, reactor));
    for h in &handles {
        h.write(b"after the reactor");
        h.lose_connection();
        h.abort_connection();
        assert!(h.is_closing());
    }
    util::assert_lost_once(&rec, "client", |r| matches!(r, CloseReason::Aborted));
    util::assert_lost_once(&server, "server", |r| matches!(r, CloseReason::Aborted));
}
