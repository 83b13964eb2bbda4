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

type Events = std::rc::Rc<std::cell::RefCell<Vec<String>>>;

/// Records its `connection_lost` (and stops the reactor once connected, as `StopWhenMade`).
struct Noted(&'static str, Events);

impl Protocol for Noted {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        self.1.borrow_mut().push(format!("{} made", self.0));
        if self.1.borrow().len() == 2 {
            transport.reactor().stop();
        }
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn connection_lost(&mut self, reason: CloseReason) {
        self.1
            .borrow_mut()
            .push(format!("{} lost: {reason:?}", self.0));
    }
}

/// Both factories, recording their hooks.
struct Hooks(Events);

impl Factory for Hooks {
    fn build_protocol(&mut self, _: &Address, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Noted("server", self.0.clone())))
    }
    fn stop_factory(&mut self) {
        self.0.borrow_mut().push("server factory stopped".into());
    }
}

impl ClientFactory for Hooks {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Noted("client", self.0.clone())))
    }
    fn client_connection_lost(&mut self, _: &Connector, reason: CloseReason) {
        self.0
            .borrow_mut()
            .push(format!("client factory lost: {reason:?}"));
    }
}

/// Dropping the last handle to a reactor ends what is still open on it, as Twisted's shutdown
/// does: each end of a connection hears `connection_lost` once (`Aborted`), the client
/// factory `client_connection_lost`, the port's factory its stop hook. (They were dropped
/// without a word: a protocol's `connection_lost` was not "exactly once".)
#[test]
fn dropping_the_reactor_tells_connections_and_factories() {
    let events = Events::default();
    let reactor = Reactor::new().unwrap();
    let port = reactor
        .listen_tcp("127.0.0.1:0", Hooks(events.clone()))
        .unwrap();
    let addr = port.local_address().to_string();
    let port_no: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let _connector = reactor.connect_tcp("127.0.0.1", port_no, Hooks(events.clone()));
    let _deadline = reactor.call_later(Duration::from_secs(5), |r| r.stop());
    reactor.run().unwrap();
    assert_eq!(events.borrow().len(), 2, "both ends connected: {events:?}");
    // After `run` returns, the connection stays open: `run` may be called again.
    assert_eq!(port.connection_count(), 1);
    drop(reactor);
    let mut seen = events.borrow().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            "client factory lost: Aborted",
            "client lost: Aborted",
            "client made",
            "server factory stopped",
            "server lost: Aborted",
            "server made",
        ]
    );
}
