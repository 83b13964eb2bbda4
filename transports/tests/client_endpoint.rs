//! Client endpoint strings ([`ClientEndpoint`], Twisted's `clientFromString`): parsing,
//! display and errors, then real connections through them on loopback TCP, Unix sockets and
//! TLS (certificates from `create_dev_certs`). Every reactor run is bounded by
//! `util::DEADLINE`.

mod util;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::prelude::*;
use torsion_transports::tls::{self, DevCerts, TlsError};
use torsion_transports::{ClientEndpoint, ClientTlsFiles, ServerEndpoint};
use util::{pattern, port_addr, run_until, Echo, Log, SenderFactory};

// ---------------------------------------------------------------------------------------
// Parsing and display.

fn parse(desc: &str) -> ClientEndpoint {
    desc.parse()
        .unwrap_or_else(|e| panic!("{desc:?} should parse: {e}"))
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

#[test]
fn tcp_forms() {
    let plain = ClientEndpoint::Tcp {
        host: "example.com".into(),
        port: 80,
        timeout: None,
        bind: None,
    };
    assert_eq!(parse("tcp:example.com:80"), plain);
    assert_eq!(parse("tcp:host=example.com:port=80"), plain);
    assert_eq!(parse("tcp:example.com:port=80"), plain);
    assert_eq!(parse("tcp:port=80:host=example.com"), plain);

    let v6 = ClientEndpoint::Tcp {
        host: "::1".into(),
        port: 8000,
        timeout: None,
        bind: None,
    };
    assert_eq!(parse(r"tcp:\:\:1:8000"), v6);
    assert_eq!(parse("tcp:[::1]:8000"), v6);
    assert_eq!(parse("tcp:host=[::1]:port=8000"), v6);

    assert_eq!(
        parse("tcp:127.0.0.1:8000:timeout=5:bindAddress=127.0.0.2"),
        ClientEndpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 8000,
            timeout: secs(5),
            bind: Some("127.0.0.2:0".parse().unwrap()),
        }
    );
    assert_eq!(
        parse(r"tcp:localhost:1:timeout=0.25:bindAddress=[::1]\:4000"),
        ClientEndpoint::Tcp {
            host: "localhost".into(),
            port: 1,
            timeout: Some(Duration::from_millis(250)),
            bind: Some("[::1]:4000".parse().unwrap()),
        }
    );
    assert_eq!(
        parse(r"tcp:localhost:1:bindAddress=\:\:1"),
        parse("tcp:localhost:1:bindAddress=[::1]")
    );
}

#[test]
fn unix_forms() {
    let ep = ClientEndpoint::Unix {
        path: "/run/app.sock".into(),
        timeout: None,
    };
    assert_eq!(parse("unix:/run/app.sock"), ep);
    assert_eq!(parse("unix:path=/run/app.sock"), ep);
    assert_eq!(parse("unix:address=/run/app.sock"), ep);
    assert_eq!(
        parse(r"unix:/tmp/a\:b:timeout=3"),
        ClientEndpoint::Unix {
            path: "/tmp/a:b".into(),
            timeout: secs(3),
        }
    );
    assert_eq!(
        parse("unix:@torsion"),
        ClientEndpoint::Unix {
            path: "@torsion".into(),
            timeout: None,
        }
    );
}

#[test]
fn tls_forms() {
    assert_eq!(
        parse("tls:example.com:443"),
        ClientEndpoint::Tls {
            host: "example.com".into(),
            port: 443,
            timeout: None,
            bind: None,
            files: ClientTlsFiles::default(),
        }
    );
    assert_eq!(parse("ssl:example.com:443"), parse("tls:example.com:443"));
    assert_eq!(
        parse("tls:localhost:8443:caCerts=/ca.pem:certificate=/c.pem:privateKey=/k.pem:timeout=7"),
        ClientEndpoint::Tls {
            host: "localhost".into(),
            port: 8443,
            timeout: secs(7),
            bind: None,
            files: ClientTlsFiles {
                ca_certs: Some("/ca.pem".into()),
                certificate: Some(("/c.pem".into(), "/k.pem".into())),
            },
        }
    );
    // Order of the options does not matter.
    assert_eq!(
        parse("tls:privateKey=/k.pem:port=1:certificate=/c.pem:host=h"),
        parse("tls:h:1:certificate=/c.pem:privateKey=/k.pem")
    );
    assert_eq!(
        parse("tlsunix:/run/app.sock:host=localhost:caCerts=/ca.pem"),
        ClientEndpoint::TlsUnix {
            path: "/run/app.sock".into(),
            server_name: "localhost".into(),
            files: ClientTlsFiles {
                ca_certs: Some("/ca.pem".into()),
                certificate: None,
            },
        }
    );
    assert!(parse("tls:h:1").is_tls());
    assert!(parse("tlsunix:/s:host=h").is_tls());
    assert!(!parse("tcp:h:1").is_tls());
}

#[test]
fn display_round_trips() {
    for desc in [
        "tcp:localhost:8000",
        "tcp:127.0.0.1:80:timeout=5:bindAddress=127.0.0.1",
        r"tcp:127.0.0.1:80:bindAddress=127.0.0.2\:5000",
        "tcp:[::1]:80:timeout=0.25:bindAddress=[::1]",
        r"tcp:[::1]:80:bindAddress=[::1]\:5000",
        "unix:/run/app.sock",
        r"unix:/tmp/a\:b:timeout=2",
        r"unix:/tmp/back\\slash\[1\]",
        "unix:path=/tmp/a=b",
        "unix:@abstract",
        "tls:example.com:443",
        "tls:[::1]:443:caCerts=/ca.pem",
        "tls:localhost:8443:caCerts=/ca.pem:certificate=/c.pem:privateKey=/k.pem:timeout=3:\
         bindAddress=127.0.0.1",
        "tlsunix:/run/app.sock:host=localhost",
        r"tlsunix:/tmp/x\:y.sock:host=[::1]:caCerts=/ca.pem:certificate=/c.pem:privateKey=/k.pem",
    ] {
        let ep = parse(desc);
        assert_eq!(ep.to_string(), desc);
        assert_eq!(ClientEndpoint::parse(&ep.to_string()).unwrap(), ep);
    }
    // Other spellings print in the canonical form.
    for (desc, canonical) in [
        (r"tcp:\:\:1:80", "tcp:[::1]:80"),
        ("tcp:host=example.com:port=80", "tcp:example.com:80"),
        ("tcp:[0:0::1]:80", "tcp:[::1]:80"),
        (
            "tcp:h:80:bindAddress=127.0.0.1\\:0",
            "tcp:h:80:bindAddress=127.0.0.1",
        ),
        ("ssl:example.com:443", "tls:example.com:443"),
        ("unix:address=/s", "unix:/s"),
        (
            "tls:h:1:timeout=60:caCerts=/ca.pem",
            "tls:h:1:caCerts=/ca.pem:timeout=60",
        ),
    ] {
        assert_eq!(parse(desc).to_string(), canonical, "{desc}");
    }
}

#[test]
fn errors_name_the_problem() {
    for (desc, expected) in [
        ("", "empty"),
        ("http:example.com:80", "unknown client endpoint type 'http'"),
        ("udp:example.com:53", "unknown client endpoint type 'udp'"),
        ("tcp6:[::1]:80", "tcp:[::1]:8000"),
        ("tcp", "needs a host and a port"),
        (
            "tcp:8000",
            "needs a host and a port, as in tcp:localhost:8000",
        ),
        ("tcp:localhost", "needs a port"),
        ("tls:localhost", "needs a port"),
        ("tcp::80", "needs a host"),
        ("tcp:localhost:http", "port 'http' is not a number"),
        ("tcp:localhost:99999", "port '99999'"),
        ("tcp:localhost:0", "port 0"),
        ("tcp:::1:80", "unexpected"),
        ("tcp:[::1:80", "not an IPv6 address in brackets"),
        ("tcp:[nope]:80", "not an IPv6 address in brackets"),
        ("tcp:bad host:80", "not a host name"),
        ("tcp:localhost:80:timeout=soon", "timeout=soon"),
        ("tcp:localhost:80:timeout=0", "timeout=0"),
        ("tcp:localhost:80:timeout=-1", "timeout=-1"),
        ("tcp:localhost:80:timeout=inf", "timeout=inf"),
        ("tcp:localhost:80:bindAddress=nope", "bindAddress=nope"),
        (
            "tcp:[::1]:80:bindAddress=127.0.0.1",
            "bindAddress=127.0.0.1 is an IPv4 address, but the host [::1] is IPv6",
        ),
        (
            r"tls:127.0.0.1:443:bindAddress=[::1]\:4000",
            r"bindAddress=[::1]\:4000 is an IPv6 address, but the host 127.0.0.1 is IPv4",
        ),
        (
            "tcp:localhost:80:colour=red",
            "unknown option 'colour' for tcp",
        ),
        ("tcp:localhost:80:port=81", "port is given twice"),
        (
            "tcp:localhost:80:timeout=1:timeout=2",
            "timeout is given twice",
        ),
        ("tcp:localhost:80:timeout=", "timeout= has no value"),
        ("tcp:localhost:80:caCerts=/ca.pem", "TLS options need tls:"),
        ("tcp:localhost:80:interface=127.0.0.1", "bindAddress="),
        ("tls:localhost:443:certificate=/c.pem", "no privateKey="),
        ("tls:localhost:443:privateKey=/k.pem", "no certificate="),
        (
            "tls:localhost:443:certKey=/c.pem",
            "certificate= and privateKey=",
        ),
        ("tls:localhost:443:mode=600", "server option"),
        ("unix", "needs a path"),
        ("unix:", "needs a path"),
        ("unix:/a:b", r"escape colons in paths as \:"),
        ("unix:/a:mode=600", "unknown option 'mode' for unix"),
        ("unix:/a:certificate=/c.pem", "TLS options need tlsunix:"),
        ("tlsunix:/s", "needs host=NAME"),
        ("tlsunix:host=h", "tlsunix endpoint needs a path"),
        ("tlsunix:/s:host=", "host= has no value"),
        ("tlsunix:@name:host=h", "abstract name"),
        (
            "tlsunix:/s:host=h:timeout=1",
            "unknown option 'timeout' for tlsunix",
        ),
        ("tlsunix:/s:host=h:certificate=/c.pem", "no privateKey="),
    ] {
        let error = match ClientEndpoint::parse(desc) {
            Ok(ep) => panic!("{desc:?} should not parse, got {ep:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            error.contains(expected),
            "{desc:?}: error {error:?} should mention {expected:?}"
        );
        assert!(!error.contains('\n'), "{desc:?}: one line: {error:?}");
    }
}

#[test]
fn endpoint_errors_convert_to_invalid_address() {
    let e: torsion_reactor::Error = ClientEndpoint::parse("tcp:x").unwrap_err().into();
    assert!(
        matches!(e, torsion_reactor::Error::InvalidAddress(ref m) if m.contains("needs a port")),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Connections through client endpoints.

fn sender(msg: &[u8]) -> (Log, SenderFactory) {
    let log = Log::default();
    let factory = SenderFactory {
        log: log.clone(),
        msg: msg.to_vec(),
    };
    (log, factory)
}

/// A path as an endpoint value (colons and backslashes escaped).
fn esc(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\\', r"\\")
        .replace(':', r"\:")
}

/// Connects through `desc` with a sender of `msg`, runs until the attempt ended (bounded),
/// and returns what the client saw.
fn exchange(reactor: &Reactor, desc: &str, msg: &[u8]) -> Log {
    let (log, factory) = sender(msg);
    parse(desc)
        .connect(reactor, factory)
        .unwrap_or_else(|e| panic!("{desc}: connect: {e}"));
    let l = log.clone();
    run_until(reactor, desc, move || {
        let l = l.borrow();
        l.failed.is_some() || l.factory_lost.is_some()
    });
    log
}

/// Asserts the whole of `msg` came back and the connection closed cleanly.
fn assert_echoed(log: &Log, msg: &[u8], what: &str) {
    let log = log.borrow();
    assert!(log.failed.is_none(), "{what}: failed: {:?}", log.failed);
    assert_eq!(log.data.len(), msg.len(), "{what}: echo length");
    assert!(log.data == msg, "{what}: echo differs");
    let lost = log.factory_lost.as_ref().expect("the connection ended");
    assert!(lost.is_clean(), "{what}: {lost:?}");
}

fn listen(reactor: &Reactor, desc: &str) -> torsion_transports::ListeningPort {
    ServerEndpoint::parse(desc)
        .unwrap()
        .listen(reactor, |_: &Address| Echo)
        .unwrap_or_else(|e| panic!("{desc}: listen: {e}"))
}

#[test]
fn tcp_echo_round_trip() {
    let reactor = Reactor::new().unwrap();
    let port = listen(&reactor, "tcp:0:interface=127.0.0.1");
    let port = port_addr(&port.local_address()).port();
    let msg = pattern(100_000);
    let log = exchange(&reactor, &format!("tcp:127.0.0.1:{port}:timeout=5"), &msg);
    assert_echoed(&log, &msg, "tcp");
    // Positional values by name, and a host name resolved off the reactor thread.
    let log = exchange(
        &reactor,
        &format!("tcp:port={port}:host=localhost"),
        b"by name",
    );
    assert_echoed(&log, b"by name", "tcp by name");
}

#[test]
fn tcp_bind_address_is_the_source_address() {
    let reactor = Reactor::new().unwrap();
    let peers: Rc<RefCell<Vec<SocketAddr>>> = Rc::default();
    let seen = peers.clone();
    let port = ServerEndpoint::parse("tcp:0:interface=127.0.0.1")
        .unwrap()
        .listen(&reactor, move |peer: &Address| {
            seen.borrow_mut().extend(peer.socket_addr());
            Echo
        })
        .unwrap();
    let port = port_addr(&port.local_address()).port();
    // All of 127/8 is loopback on Linux: connect from 127.0.0.2 to 127.0.0.1.
    let desc = format!("tcp:127.0.0.1:{port}:bindAddress=127.0.0.2");
    let log = exchange(&reactor, &desc, b"bound");
    assert_echoed(&log, b"bound", &desc);
    let local = log.borrow().local.clone().and_then(|a| a.socket_addr());
    assert_eq!(local.map(|a| a.ip()), Some("127.0.0.2".parse().unwrap()));
    assert_eq!(peers.borrow().len(), 1);
    assert_eq!(peers.borrow()[0], local.unwrap());
}

#[test]
fn unix_echo_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let reactor = Reactor::new().unwrap();
    let _port = listen(&reactor, &format!("unix:{}", esc(&path)));
    let msg = pattern(50_000);
    let log = exchange(&reactor, &format!("unix:{}:timeout=5", esc(&path)), &msg);
    assert_echoed(&log, &msg, "unix");
}

#[test]
fn unix_abstract_echo_round_trip() {
    let name = format!("@torsion-client-endpoint-{}", std::process::id());
    let reactor = Reactor::new().unwrap();
    let _port = listen(&reactor, &format!("unix:{name}"));
    let log = exchange(&reactor, &format!("unix:{name}"), b"abstract");
    assert_echoed(&log, b"abstract", "unix abstract");
}

#[test]
fn unix_missing_path_reaches_connection_failed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody-listens.sock");
    let reactor = Reactor::new().unwrap();
    let log = exchange(&reactor, &format!("unix:{}", esc(&path)), b"x");
    let log = log.borrow();
    assert!(!log.made);
    assert!(log.failed.is_some(), "the attempt must fail");
}

fn dev_certs() -> (tempfile::TempDir, DevCerts) {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::create_dev_certs(dir.path(), &[]).unwrap();
    (dir, certs)
}

/// A TLS echo server on loopback through a server endpoint; with `mutual`, client
/// certificates from the dev CA are required.
fn tls_server(
    reactor: &Reactor,
    c: &DevCerts,
    mutual: bool,
) -> (u16, torsion_transports::ListeningPort) {
    let mut desc = format!(
        "tls:0:interface=127.0.0.1:certKey={}:privateKey={}",
        esc(&c.server_cert),
        esc(&c.server_key)
    );
    if mutual {
        desc += &format!(":caCerts={}", esc(&c.ca_cert));
    }
    let port = listen(reactor, &desc);
    (port_addr(&port.local_address()).port(), port)
}

#[test]
fn tls_echo_with_ca_certs() {
    let (_dir, c) = dev_certs();
    let reactor = Reactor::new().unwrap();
    let (port, _listening) = tls_server(&reactor, &c, false);
    let msg = pattern(200_000);
    for host in ["localhost", "127.0.0.1"] {
        let desc = format!("tls:{host}:{port}:caCerts={}:timeout=5", esc(&c.ca_cert));
        let log = exchange(&reactor, &desc, &msg);
        assert_echoed(&log, &msg, &desc);
    }
}

#[test]
fn tls_client_certificate_to_a_server_that_requires_one() {
    let (_dir, c) = dev_certs();
    let reactor = Reactor::new().unwrap();
    let (port, _listening) = tls_server(&reactor, &c, true);
    let desc = format!(
        "tls:localhost:{port}:caCerts={}:certificate={}:privateKey={}",
        esc(&c.ca_cert),
        esc(&c.client_cert),
        esc(&c.client_key)
    );
    let log = exchange(&reactor, &desc, b"mutual TLS");
    assert_echoed(&log, b"mutual TLS", "mutual TLS");

    // The same server turns away a client without a certificate: no byte is echoed and the
    // end is a TLS failure (during the handshake, or just after it under TLS 1.3).
    let desc = format!("tls:localhost:{port}:caCerts={}", esc(&c.ca_cert));
    let log = exchange(&reactor, &desc, b"no certificate");
    let log = log.borrow();
    assert!(log.data.is_empty(), "echoed without a client certificate");
    let reason = log
        .failed
        .as_ref()
        .or(log.factory_lost.as_ref())
        .expect("the attempt ended");
    assert!(TlsError::from_reason(reason).is_some(), "{reason:?}");
}

#[test]
fn tls_without_ca_certs_fails_with_unknown_issuer() {
    let (_dir, c) = dev_certs();
    let reactor = Reactor::new().unwrap();
    let (port, _listening) = tls_server(&reactor, &c, false);
    // No caCerts: the webpki roots, which do not include the development CA.
    let log = exchange(&reactor, &format!("tls:localhost:{port}"), b"never sent");
    let log = log.borrow();
    assert!(!log.made, "no protocol for a failed handshake");
    assert!(log.factory_lost.is_none());
    let reason = log.failed.as_ref().expect("client_connection_failed ran");
    let error = TlsError::from_reason(reason).expect("a TLS reason");
    assert!(
        matches!(
            error.certificate_error(),
            Some(rustls::CertificateError::UnknownIssuer)
        ),
        "{error}"
    );
}

#[test]
fn tlsunix_echo_with_ca_certs() {
    let (dir, c) = dev_certs();
    let path = dir.path().join("tls.sock");
    let reactor = Reactor::new().unwrap();
    let _port = listen(
        &reactor,
        &format!(
            "tlsunix:{}:certKey={}:privateKey={}",
            esc(&path),
            esc(&c.server_cert),
            esc(&c.server_key)
        ),
    );
    let desc = format!(
        "tlsunix:{}:host=localhost:caCerts={}",
        esc(&path),
        esc(&c.ca_cert)
    );
    let log = exchange(&reactor, &desc, b"TLS over a Unix socket");
    assert_echoed(&log, b"TLS over a Unix socket", &desc);
}

/// Connecting with unusable TLS files fails at once, naming the option and the file; the
/// factory hears nothing.
#[test]
fn unusable_tls_files_are_connect_errors() {
    let (dir, c) = dev_certs();
    let reactor = Reactor::new().unwrap();
    let missing: PathBuf = dir.path().join("missing-ca.pem");
    let not_a_key = &c.ca_cert; // a certificate where a key is expected
    let cases = [
        (
            format!("tls:localhost:1:caCerts={}", esc(&missing)),
            vec!["caCerts=", "missing-ca.pem"],
        ),
        (
            format!(
                "tlsunix:/nonexistent.sock:host=localhost:caCerts={}",
                esc(&missing)
            ),
            vec!["caCerts=", "missing-ca.pem"],
        ),
        (
            format!("tls:localhost:1:caCerts={}", esc(&c.server_key)),
            vec!["caCerts=", "server-key.pem"],
        ),
        (
            format!(
                "tls:localhost:1:certificate={}:privateKey={}",
                esc(&c.client_cert),
                esc(not_a_key)
            ),
            vec!["privateKey=", "ca.pem"],
        ),
        (
            format!(
                "tls:localhost:1:certificate={}:privateKey={}",
                esc(&missing),
                esc(&c.client_key)
            ),
            vec!["certificate=", "missing-ca.pem"],
        ),
    ];
    for (desc, expected) in cases {
        let (log, factory) = sender(b"x");
        let error = match parse(&desc).connect(&reactor, factory) {
            Ok(_) => panic!("{desc}: connect should fail"),
            Err(e) => e.to_string(),
        };
        for word in expected {
            assert!(
                error.contains(word),
                "{desc}: {error:?} should name {word:?}"
            );
        }
        assert!(!error.contains('\n'), "{error:?}");
        let log = log.borrow();
        assert!(!log.made && log.failed.is_none() && log.factory_lost.is_none());
    }
}
