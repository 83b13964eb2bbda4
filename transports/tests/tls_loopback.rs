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
use util::{pattern, port_addr, run_until, run_until_within, Peer};

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d);
    }
}

#[derive(Default)]
struct ClientLog {
    data: Vec<u8>,
    made: bool,
    lost: Option<CloseReason>,
    failed: Option<CloseReason>,
    factory_lost: Option<CloseReason>,
}

type Log = Rc<RefCell<ClientLog>>;

/// Sends `msg`, collects the echo, closes once all of it came back.
struct Sender {
    log: Log,
    msg: Vec<u8>,
}

impl Protocol for Sender {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.log.borrow_mut().made = true;
        t.write(&self.msg);
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        let mut log = self.log.borrow_mut();
        log.data.extend_from_slice(d);
        if log.data.len() >= self.msg.len() {
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

struct SenderFactory {
    log: Log,
    msg: Vec<u8>,
}

impl ClientFactory for SenderFactory {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Sender {
            log: self.log.clone(),
            msg: self.msg.clone(),
        }))
    }
    fn client_connection_failed(&mut self, _: &Connector, reason: CloseReason) {
        self.log.borrow_mut().failed = Some(reason);
    }
    fn client_connection_lost(&mut self, _: &Connector, reason: CloseReason) {
        self.log.borrow_mut().factory_lost = Some(reason);
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
