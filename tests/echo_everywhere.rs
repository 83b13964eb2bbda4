//! One echo protocol, one check, every way of connecting: the in-memory pair of the test kit
//! (at several chunk sizes), loopback TCP and a Unix socket on a real reactor. Plus panic
//! isolation: a server protocol that panics costs only its own connection.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use torsion::prelude::*;
use torsion::protocols::wire::Echo;
use torsion::reactor::{BackendKind, WeakReactor};
use torsion::testing::{connect_pair, MemoryOptions, MemoryReactor};
use torsion::transports::TcpListenOptions;
use torsion::LoopingCall;

/// Size of the pattern each echo client sends.
const PATTERN_LEN: usize = 100 * 1024;

/// A byte pattern with no short period, so loss, duplication or reordering shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 253) as u8 ^ (i / 253 % 7) as u8 ^ seed)
        .collect()
}

/// What an [`EchoClient`] observed.
#[derive(Default)]
struct Outcome {
    received: Vec<u8>,
    lost: Option<CloseReason>,
    connect_failed: Option<CloseReason>,
}

/// Sends its pattern, reads the echo back, closes once it has all of it, and stops the
/// reactor when its connection is gone.
struct EchoClient {
    pattern: Rc<Vec<u8>>,
    outcome: Rc<RefCell<Outcome>>,
}

impl EchoClient {
    fn new(pattern: Vec<u8>) -> (Self, Rc<RefCell<Outcome>>) {
        let outcome = Rc::new(RefCell::new(Outcome::default()));
        let client = EchoClient {
            pattern: Rc::new(pattern),
            outcome: outcome.clone(),
        };
        (client, outcome)
    }
}

impl Protocol for EchoClient {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        transport.write(&self.pattern);
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        let mut outcome = self.outcome.borrow_mut();
        outcome.received.extend_from_slice(data);
        if outcome.received.len() >= self.pattern.len() {
            transport.lose_connection();
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.outcome.borrow_mut().lost = Some(reason);
    }
}

/// A client factory for exactly one connection attempt, which reports failure too.
struct OneShot {
    client: Option<EchoClient>,
    outcome: Rc<RefCell<Outcome>>,
}

impl OneShot {
    fn new(client: EchoClient) -> Self {
        let outcome = client.outcome.clone();
        OneShot {
            client: Some(client),
            outcome,
        }
    }
}

impl ClientFactory for OneShot {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        self.client.take().map(|c| Box::new(c) as Box<dyn Protocol>)
    }

    fn client_connection_failed(&mut self, connector: &Connector, reason: CloseReason) {
        let _ = connector;
        self.outcome.borrow_mut().connect_failed = Some(reason);
    }
}

/// How a client protocol gets connected to an [`Echo`] server.
trait Link {
    /// Describes the link in assertion messages.
    fn name(&self) -> String;
    /// The reactor the link runs on.
    fn reactor(&self) -> &Reactor;
    /// Connects `client` to an `Echo` server on [`reactor`](Link::reactor).
    fn connect(&self, client: EchoClient);
}

/// The test kit's in-memory pair on a virtual clock.
struct MemoryLink {
    mr: MemoryReactor,
    chunk: usize,
}

impl Link for MemoryLink {
    fn name(&self) -> String {
        format!("memory pair, chunk {}", self.chunk)
    }

    fn reactor(&self) -> &Reactor {
        self.mr.reactor()
    }

    fn connect(&self, client: EchoClient) {
        let _pair = connect_pair(
            self.mr.reactor(),
            client,
            Echo,
            MemoryOptions::chunked(self.chunk),
        );
    }
}

/// A real reactor on the given readiness backend.
fn real_reactor(backend: BackendKind) -> Reactor {
    Reactor::with_backend(backend).expect("reactor")
}

/// Loopback TCP on a real reactor (port 0).
struct TcpLink {
    reactor: Reactor,
    backend: BackendKind,
}

impl Link for TcpLink {
    fn name(&self) -> String {
        format!("loopback TCP, {:?} backend", self.backend)
    }

    fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    fn connect(&self, client: EchoClient) {
        let port = self
            .reactor
            .listen_tcp("127.0.0.1:0", |_: &Address| Echo)
            .expect("listen on loopback");
        let port = port.local_address().port().expect("an IP port");
        let _connector = self
            .reactor
            .connect_tcp("127.0.0.1", port, OneShot::new(client));
    }
}

/// A Unix socket in a temporary directory on a real reactor.
struct UnixLink {
    reactor: Reactor,
    backend: BackendKind,
    dir: tempfile::TempDir,
}

impl Link for UnixLink {
    fn name(&self) -> String {
        format!("Unix socket, {:?} backend", self.backend)
    }

    fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    fn connect(&self, client: EchoClient) {
        let path = self.dir.path().join("echo.sock");
        let _port = self
            .reactor
            .listen_unix(&path, |_: &Address| Echo)
            .expect("listen on a Unix socket");
        let _connector = self.reactor.connect_unix(&path, OneShot::new(client));
    }
}

/// The check, written once: a client sends 100 KiB, reads the same 100 KiB back, closes
/// cleanly.
fn echo_roundtrip(link: impl Link) {
    let name = link.name();
    let reactor = link.reactor().clone();
    let sent = pattern(PATTERN_LEN, 0x5a);
    let (client, outcome) = EchoClient::new(sent.clone());
    link.connect(client);

    // Stop once the client's connection is gone (or after the hard stop).
    let o = outcome.clone();
    let watcher = LoopingCall::start(&reactor, Duration::from_millis(5), false, move |r, _| {
        let o = o.borrow();
        if o.lost.is_some() || o.connect_failed.is_some() {
            r.stop();
        }
    });
    let _hard_stop = reactor.call_later(Duration::from_secs(5), |r| r.stop());
    let started = Instant::now();
    reactor.run().expect("run");
    watcher.stop();

    let outcome = outcome.borrow();
    assert!(
        outcome.connect_failed.is_none(),
        "{name}: connect failed: {:?}",
        outcome.connect_failed
    );
    assert_eq!(
        outcome.received.len(),
        sent.len(),
        "{name}: echoed length (after {:?})",
        started.elapsed()
    );
    assert!(outcome.received == sent, "{name}: echoed bytes differ");
    assert!(
        matches!(outcome.lost, Some(CloseReason::Done)),
        "{name}: client closed with {:?}",
        outcome.lost
    );
}

#[test]
fn echo_in_memory_one_byte_chunks() {
    echo_roundtrip(MemoryLink {
        mr: MemoryReactor::new(),
        chunk: 1,
    });
}

#[test]
fn echo_in_memory_seven_byte_chunks() {
    echo_roundtrip(MemoryLink {
        mr: MemoryReactor::new(),
        chunk: 7,
    });
}

#[test]
fn echo_in_memory_large_chunks() {
    echo_roundtrip(MemoryLink {
        mr: MemoryReactor::new(),
        chunk: 65536,
    });
}

fn tcp(backend: BackendKind) -> TcpLink {
    TcpLink {
        reactor: real_reactor(backend),
        backend,
    }
}

fn unix(backend: BackendKind) -> UnixLink {
    UnixLink {
        reactor: real_reactor(backend),
        backend,
        dir: tempfile::TempDir::new().expect("temp dir"),
    }
}

#[test]
fn echo_over_loopback_tcp() {
    echo_roundtrip(tcp(BackendKind::Auto));
}

#[test]
fn echo_over_unix_socket() {
    echo_roundtrip(unix(BackendKind::Auto));
}

#[test]
fn echo_over_loopback_tcp_on_the_polling_backend() {
    echo_roundtrip(tcp(BackendKind::Polling));
}

#[test]
fn echo_over_unix_socket_on_the_polling_backend() {
    echo_roundtrip(unix(BackendKind::Polling));
}

// ---------------------------------------------------------------------------------------------
// Panic isolation
// ---------------------------------------------------------------------------------------------

/// Echoes, but panics when the bytes `boom` arrive (even split across reads).
struct BoomEcho {
    tail: Vec<u8>,
    scene: Rc<RefCell<Scene>>,
}

impl Protocol for BoomEcho {
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.tail.extend_from_slice(data);
        if self.tail.windows(4).any(|w| w == b"boom") {
            panic!("BoomEcho received boom (expected by this test)");
        }
        let keep = self.tail.len().min(3);
        self.tail.drain(..self.tail.len() - keep);
        transport.write(data);
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.scene.borrow_mut().server_lost.push(reason);
    }
}

/// State shared by the clients of the panic-isolation test.
#[derive(Default)]
struct Scene {
    /// Echo clients that have their first half back and wait for the panic before sending
    /// the second half.
    waiting: Vec<(TransportHandle, Rc<Vec<u8>>)>,
    first_halves: usize,
    boom_client: Option<TransportHandle>,
    boom_sent: bool,
    boom_lost: Option<CloseReason>,
    completed: Vec<(Vec<u8>, Vec<u8>, CloseReason)>,
    others_lost: Vec<CloseReason>,
    /// How each server-side connection ended.
    server_lost: Vec<CloseReason>,
}

const CLIENTS: usize = 100;
const CLIENT_PATTERN: usize = 16 * 1024;

fn scene_progress(scene: &Rc<RefCell<Scene>>, reactor: &Reactor) {
    // Every echo client is mid-conversation: now the boom client triggers the panic.
    let boom = {
        let mut s = scene.borrow_mut();
        if s.first_halves == CLIENTS && !s.boom_sent && s.boom_client.is_some() {
            s.boom_sent = true;
            s.boom_client.take()
        } else {
            None
        }
    };
    if let Some(h) = boom {
        h.write(b"boom");
    }
    // The panic happened: the others send their second halves.
    let resume = {
        let mut s = scene.borrow_mut();
        if s.boom_lost.is_some() {
            std::mem::take(&mut s.waiting)
        } else {
            Vec::new()
        }
    };
    for (h, pattern) in resume {
        h.write(&pattern[pattern.len() / 2..]);
    }
    let s = scene.borrow();
    if s.boom_lost.is_some()
        && s.completed.len() + s.others_lost.len() == CLIENTS
        && s.server_lost.len() == CLIENTS + 1
    {
        reactor.stop();
    }
}

/// Echoes its pattern in two halves, the second only after the panic.
struct StagedClient {
    pattern: Rc<Vec<u8>>,
    got: Vec<u8>,
    scene: Rc<RefCell<Scene>>,
    reactor: WeakReactor,
    finished: bool,
}

impl Protocol for StagedClient {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        transport.write(&self.pattern[..self.pattern.len() / 2]);
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        let half = self.pattern.len() / 2;
        let before = self.got.len();
        self.got.extend_from_slice(data);
        if before < half && self.got.len() >= half {
            {
                let mut s = self.scene.borrow_mut();
                s.first_halves += 1;
                s.waiting.push((transport.handle(), self.pattern.clone()));
            }
            scene_progress(&self.scene, &transport.reactor());
        }
        if self.got.len() >= self.pattern.len() && !self.finished {
            self.finished = true;
            transport.lose_connection();
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        {
            let mut s = self.scene.borrow_mut();
            if self.finished {
                let got = std::mem::take(&mut self.got);
                s.completed.push((self.pattern.to_vec(), got, reason));
            } else {
                s.others_lost.push(reason);
            }
        }
        if let Some(reactor) = self.reactor.upgrade() {
            scene_progress(&self.scene, &reactor);
        }
    }
}

/// Connects, sends `boom` when told, records how its connection ended.
struct BoomClient {
    scene: Rc<RefCell<Scene>>,
    reactor: WeakReactor,
}

impl Protocol for BoomClient {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        self.scene.borrow_mut().boom_client = Some(transport.handle());
        scene_progress(&self.scene, &transport.reactor());
    }

    fn data_received(&mut self, _transport: &mut dyn Transport, _data: &[u8]) {}

    fn connection_lost(&mut self, reason: CloseReason) {
        self.scene.borrow_mut().boom_lost = Some(reason);
        if let Some(reactor) = self.reactor.upgrade() {
            scene_progress(&self.scene, &reactor);
        }
    }
}

#[test]
fn a_panicking_connection_does_not_disturb_the_others() {
    let reactor = Reactor::new().expect("reactor");
    let _hard_stop = reactor.call_later(Duration::from_secs(5), |r| r.stop());
    let scene = Rc::new(RefCell::new(Scene::default()));
    let sc = scene.clone();
    // All clients connect in the same turn: a backlog above the default 50 keeps the kernel
    // from dropping SYNs (a dropped SYN is retried only after a second).
    let options = TcpListenOptions {
        backlog: 1024,
        ..TcpListenOptions::default()
    };
    let port = reactor
        .listen_tcp_with(
            "127.0.0.1:0",
            move |_: &Address| BoomEcho {
                tail: Vec::new(),
                scene: sc.clone(),
            },
            options,
        )
        .expect("listen");
    let port_number = port.local_address().port().expect("an IP port");

    // Clients report progress through the scene; a watcher re-checks it now and then too.
    for i in 0..CLIENTS {
        let client = StagedClient {
            pattern: Rc::new(pattern(CLIENT_PATTERN, i as u8)),
            got: Vec::new(),
            scene: scene.clone(),
            reactor: reactor.downgrade(),
            finished: false,
        };
        let mut slot = Some(client);
        let _connector =
            reactor.connect_tcp("127.0.0.1", port_number, move |_: &Address| slot.take());
    }
    let boom = BoomClient {
        scene: scene.clone(),
        reactor: reactor.downgrade(),
    };
    let mut slot = Some(boom);
    let _connector = reactor.connect_tcp("127.0.0.1", port_number, move |_: &Address| slot.take());

    let s = scene.clone();
    let watcher = LoopingCall::start(&reactor, Duration::from_millis(5), false, move |r, _| {
        scene_progress(&s, r)
    });
    let started = Instant::now();
    reactor.run().expect("run");
    watcher.stop();
    let elapsed = started.elapsed();

    let scene = scene.borrow();
    assert!(scene.boom_sent, "the boom was sent (after {elapsed:?})");
    assert!(
        matches!(scene.boom_lost, Some(CloseReason::Reset)),
        "the panicking connection's client sees a reset: {:?}",
        scene.boom_lost
    );
    assert!(
        scene.others_lost.is_empty(),
        "other connections were lost: {:?}",
        scene.others_lost
    );
    assert_eq!(
        scene.completed.len(),
        CLIENTS,
        "every other client completed its echo (after {elapsed:?})"
    );
    for (sent, got, reason) in &scene.completed {
        assert!(got == sent, "an echo came back different");
        assert!(reason.is_clean(), "a client closed with {reason:?}");
    }

    let server_lost = &scene.server_lost;
    let panics: Vec<_> = server_lost
        .iter()
        .filter_map(|r| match r {
            CloseReason::Panic(msg) => Some(msg.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(panics.len(), 1, "server side: {server_lost:?}");
    assert!(
        panics[0].contains("BoomEcho received boom"),
        "{}",
        panics[0]
    );
    assert_eq!(
        server_lost.iter().filter(|r| r.is_clean()).count(),
        CLIENTS,
        "the other server connections closed cleanly: {server_lost:?}"
    );
}
