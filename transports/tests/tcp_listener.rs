//! TCP listening ports: many concurrent connections, descriptor hygiene over many
//! connect/close cycles, and stopping.
//!
//! The tests in this file run one at a time (see [`serial`]): one of them counts the process's
//! open descriptors.

mod util;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::prelude::*;
use torsion_reactor::WeakReactor;
use torsion_transports::{ListeningPort, ReactorExt, TcpListenOptions};

use util::*;

/// Server-side bookkeeping shared by every accepted connection.
#[derive(Default)]
struct ServerStats {
    live: Cell<usize>,
    max_live: Cell<usize>,
    lost: Cell<usize>,
    bad: RefCell<Vec<String>>,
}

/// Echo that counts its connections.
struct CountingEcho {
    stats: Rc<ServerStats>,
}

impl Protocol for CountingEcho {
    fn connection_made(&mut self, _transport: &mut dyn Transport) {
        let live = self.stats.live.get() + 1;
        self.stats.live.set(live);
        self.stats.max_live.set(self.stats.max_live.get().max(live));
    }
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        transport.write(data);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.stats.live.set(self.stats.live.get() - 1);
        self.stats.lost.set(self.stats.lost.get() + 1);
        if !matches!(reason, CloseReason::Done) {
            self.stats
                .bad
                .borrow_mut()
                .push(format!("server connection lost: {reason:?}"));
        }
    }
}

fn counting_echo_server(reactor: &Reactor, backlog: i32) -> (ListeningPort, Rc<ServerStats>) {
    let stats = Rc::new(ServerStats::default());
    let s = stats.clone();
    let options = TcpListenOptions {
        backlog,
        ..TcpListenOptions::default()
    };
    let port = reactor
        .listen_tcp_with(
            "127.0.0.1:0",
            move |_: &Address| CountingEcho { stats: s.clone() },
            options,
        )
        .expect("listen on 127.0.0.1");
    (port, stats)
}

const CONCURRENT: usize = 1000;

#[derive(Default)]
struct ClientsState {
    connected: Cell<usize>,
    handles: RefCell<Vec<(TransportHandle, Vec<u8>)>>,
    echoed: Cell<usize>,
    lost: Cell<usize>,
    bad: RefCell<Vec<String>>,
}

/// A client that, once told to, sends its own message and checks the echo.
struct EchoClient {
    st: Rc<ClientsState>,
    id: usize,
    expect: Vec<u8>,
    got: Vec<u8>,
}

impl Protocol for EchoClient {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        self.st.connected.set(self.st.connected.get() + 1);
        self.st
            .handles
            .borrow_mut()
            .push((transport.handle(), self.expect.clone()));
    }
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.got.extend_from_slice(data);
        if self.got.len() >= self.expect.len() {
            if self.got == self.expect {
                self.st.echoed.set(self.st.echoed.get() + 1);
            } else {
                self.st
                    .bad
                    .borrow_mut()
                    .push(format!("client {}: wrong echo", self.id));
            }
            transport.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.st.lost.set(self.st.lost.get() + 1);
        if !matches!(reason, CloseReason::Done) {
            self.st
                .bad
                .borrow_mut()
                .push(format!("client {}: lost with {reason:?}", self.id));
        }
    }
}

struct EchoClients {
    st: Rc<ClientsState>,
    next_id: usize,
}

/// A message unique to client `id`, of varying length.
fn message(id: usize) -> Vec<u8> {
    let mut m = format!("<client {id}>").into_bytes();
    let body = pattern(2048 + (id * 37) % 6000 + id);
    m.extend_from_slice(&body[id..]);
    m
}

impl ClientFactory for EchoClients {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        let id = self.next_id;
        self.next_id += 1;
        Some(Box::new(EchoClient {
            st: self.st.clone(),
            id,
            expect: message(id),
            got: Vec::new(),
        }))
    }
    fn client_connection_failed(&mut self, _connector: &Connector, reason: CloseReason) {
        self.st
            .bad
            .borrow_mut()
            .push(format!("connect failed: {reason:?}"));
    }
}

#[test]
fn a_thousand_concurrent_connections_echo_correctly() {
    let _serial = serial();
    let reactor = Reactor::new().unwrap();
    // The test is about concurrency, not the accept queue: make room for the whole burst.
    let (port, server) = counting_echo_server(&reactor, 1024);
    let addr = port_addr(&port.local_address());
    let st = Rc::new(ClientsState::default());
    let mut connectors = Vec::new();
    for _ in 0..CONCURRENT {
        connectors.push(reactor.connect_tcp(
            "127.0.0.1",
            addr.port(),
            EchoClients {
                st: st.clone(),
                next_id: connectors.len(),
            },
        ));
    }

    // Phase 1: every connection is up on both sides before anyone writes.
    let (s, p, b) = (st.clone(), port.clone(), st.clone());
    run_until(&reactor, "all connections to be up", move || {
        !b.bad.borrow().is_empty()
            || s.connected.get() == CONCURRENT && p.connection_count() == CONCURRENT
    });
    assert_eq!(*st.bad.borrow(), Vec::<String>::new());
    assert_eq!(server.max_live.get(), CONCURRENT);

    // Phase 2: all write at once; each checks its own echo, then closes.
    let handles = std::mem::take(&mut *st.handles.borrow_mut());
    reactor.call_soon(move |_| {
        for (handle, msg) in handles {
            handle.write(&msg);
        }
    });
    let (s, sv) = (st.clone(), server.clone());
    run_until(&reactor, "every echo and close", move || {
        s.lost.get() == CONCURRENT && sv.lost.get() == CONCURRENT
    });
    assert_eq!(*st.bad.borrow(), Vec::<String>::new());
    assert_eq!(*server.bad.borrow(), Vec::<String>::new());
    assert_eq!(st.echoed.get(), CONCURRENT);
    assert_eq!(port.connection_count(), 0);
    assert_eq!(server.live.get(), 0);
}

const CYCLES: usize = 10_000;
const IN_FLIGHT: usize = 64;

/// Drives connect/ping/close cycles, starting a new one as each ends.
struct Cycles {
    reactor: WeakReactor,
    addr: SocketAddr,
    started: Cell<usize>,
    finished: Cell<usize>,
    bad: RefCell<Vec<String>>,
}

fn start_cycle(st: &Rc<Cycles>) {
    if st.started.get() >= CYCLES {
        return;
    }
    st.started.set(st.started.get() + 1);
    let Some(reactor) = st.reactor.upgrade() else {
        return;
    };
    // The connector handle is dropped at once: descriptors must not depend on it.
    let _ = reactor.connect_tcp("127.0.0.1", st.addr.port(), CycleFactory { st: st.clone() });
}

struct CycleFactory {
    st: Rc<Cycles>,
}

impl ClientFactory for CycleFactory {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(CycleClient {
            st: self.st.clone(),
            got: 0,
        }))
    }
    fn client_connection_failed(&mut self, _connector: &Connector, reason: CloseReason) {
        self.st
            .bad
            .borrow_mut()
            .push(format!("connect failed: {reason:?}"));
        self.st.finished.set(self.st.finished.get() + 1);
        start_cycle(&self.st);
    }
}

struct CycleClient {
    st: Rc<Cycles>,
    got: usize,
}

impl Protocol for CycleClient {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        transport.write(b"ping");
    }
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.got += data.len();
        if self.got >= 4 {
            transport.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        if !matches!(reason, CloseReason::Done) || self.got != 4 {
            self.st.bad.borrow_mut().push(format!(
                "cycle ended with {reason:?} after {} bytes",
                self.got
            ));
        }
        self.st.finished.set(self.st.finished.get() + 1);
        start_cycle(&self.st);
    }
}

#[test]
fn descriptors_return_to_baseline_after_ten_thousand_connect_close_cycles() {
    let _serial = serial();
    let before_reactor = open_fds();
    let reactor = Reactor::new().unwrap();
    let (port, server) = counting_echo_server(&reactor, 128);
    let addr = port_addr(&port.local_address());
    let sources = reactor.registered_sources();
    let baseline = open_fds();

    let st = Rc::new(Cycles {
        reactor: reactor.downgrade(),
        addr,
        started: Cell::new(0),
        finished: Cell::new(0),
        bad: RefCell::new(Vec::new()),
    });
    for _ in 0..IN_FLIGHT {
        start_cycle(&st);
    }
    let (s, sv, p) = (st.clone(), server.clone(), port.clone());
    run_until_within(
        &reactor,
        Duration::from_secs(60),
        "every cycle to finish on both sides",
        move || s.finished.get() == CYCLES && sv.live.get() == 0 && p.connection_count() == 0,
    );
    let bad = st.bad.borrow();
    assert!(
        bad.is_empty(),
        "{} cycles went wrong, first: {:?}",
        bad.len(),
        bad.first()
    );
    assert_eq!(server.lost.get(), CYCLES);
    assert_eq!(*server.bad.borrow(), Vec::<String>::new());
    assert_eq!(
        reactor.registered_sources(),
        sources,
        "every connection's registration is gone"
    );
    let after = open_fds();
    assert!(
        after <= baseline + 5,
        "descriptors leaked: {baseline} before the cycles, {after} after"
    );

    port.stop_listening();
    drop(port);
    drop(reactor);
    let end = open_fds();
    assert!(
        end <= before_reactor + 5,
        "descriptors leaked: {before_reactor} before the reactor, {end} after dropping it"
    );
}

/// A factory that counts its start/stop calls.
struct CountedFactory {
    starts: Rc<Cell<usize>>,
    stops: Rc<Cell<usize>>,
    rec: Shared,
}

impl Factory for CountedFactory {
    fn build_protocol(&mut self, _peer: &Address, _local: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Recorder::echo(&self.rec)))
    }
    fn start_factory(&mut self) {
        self.starts.set(self.starts.get() + 1);
    }
    fn stop_factory(&mut self) {
        self.stops.set(self.stops.get() + 1);
    }
}

#[test]
fn stop_listening_refuses_new_connections_and_keeps_open_ones() {
    let _serial = serial();
    let reactor = Reactor::new().unwrap();
    let (starts, stops, server) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)), record());
    let port = reactor
        .listen_tcp(
            "127.0.0.1:0",
            CountedFactory {
                starts: starts.clone(),
                stops: stops.clone(),
                rec: server.clone(),
            },
        )
        .unwrap();
    assert_eq!((starts.get(), stops.get()), (1, 0));
    let addr = port_addr(&port.local_address());
    let client = record();
    let c = client.clone();
    let _connector = reactor.connect_tcp("127.0.0.1", addr.port(), move |_: &Address| {
        Recorder::new(&c)
    });
    let s = server.clone();
    run_until(&reactor, "the connection", move || s.borrow().made);

    port.stop_listening();
    port.stop_listening(); // idempotent
    assert!(!port.is_listening());
    assert_eq!(
        (starts.get(), stops.get()),
        (1, 1),
        "stop_factory runs once"
    );
    let refused = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT);
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a stopped port refuses connections, got {refused:?}"
    );

    // The accepted connection still works.
    assert_eq!(port.connection_count(), 1);
    let handle = client.borrow().handle.clone().unwrap();
    handle.write(b"still open");
    let c = client.clone();
    run_until(&reactor, "the echo", move || c.borrow().data.len() >= 10);
    assert_eq!(client.borrow().data, b"still open");
    handle.lose_connection();
    let (c, s) = (client.clone(), server.clone());
    run_until(&reactor, "both ends to close", move || {
        is_lost(&c) && is_lost(&s)
    });
    assert_lost_once(&client, "client", |r| matches!(r, CloseReason::Done));
    assert_lost_once(&server, "server", |r| matches!(r, CloseReason::Done));
    assert_eq!(port.connection_count(), 0);
}

/// Serves one connection, then stops its own port from `build_protocol`.
struct OneShot {
    port: Rc<RefCell<Option<ListeningPort>>>,
    stops: Rc<Cell<usize>>,
    rec: Shared,
}

impl Factory for OneShot {
    fn build_protocol(&mut self, _peer: &Address, _local: &Address) -> Option<Box<dyn Protocol>> {
        if let Some(port) = self.port.borrow_mut().take() {
            port.stop_listening();
        }
        Some(Box::new(Recorder::echo(&self.rec)))
    }
    fn stop_factory(&mut self) {
        self.stops.set(self.stops.get() + 1);
    }
}

#[test]
fn a_port_stopped_from_build_protocol_still_runs_stop_factory() {
    let _serial = serial();
    let reactor = Reactor::new().unwrap();
    let (slot, stops, server) = (Rc::new(RefCell::new(None)), Rc::new(Cell::new(0)), record());
    let port = reactor
        .listen_tcp(
            "127.0.0.1:0",
            OneShot {
                port: slot.clone(),
                stops: stops.clone(),
                rec: server.clone(),
            },
        )
        .unwrap();
    let addr = port_addr(&port.local_address());
    *slot.borrow_mut() = Some(port.clone());
    let _client = std_connect(addr);
    let s = server.clone();
    run_until(&reactor, "the connection", move || s.borrow().made);
    assert!(!port.is_listening());
    assert_eq!(stops.get(), 1, "stop_factory ran once the build returned");
}

/// What [`EarlyBytes`] saw.
#[derive(Default)]
struct EarlySeen {
    made: bool,
    data: Vec<u8>,
    lost: Vec<CloseReason>,
    handle: Option<TransportHandle>,
}

/// A server protocol that pauses reading, or closes, in `connection_made`.
struct EarlyBytes {
    seen: Rc<RefCell<EarlySeen>>,
    close: bool,
}

impl Protocol for EarlyBytes {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        let mut seen = self.seen.borrow_mut();
        seen.made = true;
        seen.handle = Some(transport.handle());
        if self.close {
            transport.lose_connection();
        } else {
            transport.pause_reading();
        }
    }
    fn data_received(&mut self, _transport: &mut dyn Transport, data: &[u8]) {
        self.seen.borrow_mut().data.extend_from_slice(data);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.seen.borrow_mut().lost.push(reason);
    }
}

/// An accepted connection is read once right after `connection_made`, without waiting for the
/// poller; bytes the client sent before it was accepted must still wait while
/// `connection_made` paused reading, and never reach a protocol that closed there.
#[test]
fn bytes_sent_before_accept_respect_what_connection_made_chose() {
    let _serial = serial();
    for close in [false, true] {
        let reactor = Reactor::new().unwrap();
        let seen = Rc::new(RefCell::new(EarlySeen::default()));
        let s = seen.clone();
        let port = reactor
            .listen_tcp("127.0.0.1:0", move |_: &Address| EarlyBytes {
                seen: s.clone(),
                close,
            })
            .unwrap();
        // The kernel completes the handshake from the backlog: these bytes are waiting before
        // the reactor accepts the connection.
        let mut client = std_connect(port_addr(&port.local_address()));
        std::io::Write::write_all(&mut client, b"early bytes").unwrap();
        let s = seen.clone();
        run_until(&reactor, "the connection", move || s.borrow().made);
        run_for(&reactor, Duration::from_millis(50));
        if close {
            // Our FIN is out; the close completes when the client closes too.
            drop(client);
            let s = seen.clone();
            run_until(&reactor, "the close", move || !s.borrow().lost.is_empty());
            let seen = seen.borrow();
            assert!(
                seen.data.is_empty(),
                "a closed protocol got {:?}",
                seen.data
            );
            assert!(
                matches!(seen.lost[..], [CloseReason::Done]),
                "{:?}",
                seen.lost
            );
        } else {
            assert!(
                seen.borrow().data.is_empty(),
                "data_received ran while reading was paused"
            );
            let handle = seen.borrow().handle.clone().unwrap();
            handle.resume_reading();
            let s = seen.clone();
            run_until(&reactor, "the early bytes", move || {
                s.borrow().data.len() >= 11
            });
            assert_eq!(seen.borrow().data, b"early bytes");
        }
        port.stop_listening();
    }
}
