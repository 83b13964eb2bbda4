//! Regressions: each test pins a bug that was found and fixed.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use torsion_reactor::prelude::*;
use torsion_transports::ReactorExt;

struct StopWhenMade;

impl Protocol for StopWhenMade {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        transport.reactor().stop();
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

/// Dropping a reactor closes the connections still open on it, even a client connection
/// whose `Connector` the user keeps (the connector and its connection refer to each other).
#[test]
fn dropping_the_reactor_closes_its_client_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reactor = Reactor::new().unwrap();
    let connector = reactor.connect_tcp("127.0.0.1", port, |_: &Address| StopWhenMade);
    let _deadline = reactor.call_later(Duration::from_secs(5), |r| r.stop());
    reactor.run().unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    drop(reactor);
    accepted
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1];
    let n = accepted.read(&mut buf).expect("EOF, not a timeout");
    assert_eq!(n, 0, "the peer sees the connection closed");
    drop(connector);
}

/// Dropping the reactor closes a Unix port's socket: its socket file went with it (it was
/// left behind, and `stop_listening` afterwards no longer removed it), and the port counts no
/// open connection (it kept counting the ones the reactor closed).
#[test]
fn dropping_the_reactor_removes_a_unix_ports_file_and_forgets_its_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.sock");
    let reactor = Reactor::new().unwrap();
    let port = reactor
        .listen_unix(&path, |_: &Address| StopWhenMade)
        .unwrap();
    let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let _deadline = reactor.call_later(Duration::from_secs(5), |r| r.stop());
    reactor.run().unwrap();
    assert_eq!(port.connection_count(), 1);
    drop(reactor);
    port.stop_listening();
    assert!(!path.exists(), "the socket file was left behind");
    assert_eq!(
        port.connection_count(),
        0,
        "the reactor closed the connection"
    );
}
