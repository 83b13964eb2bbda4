//! Dropping a reactor with live TCP and Unix connections, a listener and a connector frees
//! every protocol, factory, producer and timer callback and closes every descriptor.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::prelude::*;
use torsion_reactor::DelayedCall;
use torsion_reactor::{DatagramProtocol, DatagramTransport};
use torsion_transports::tls::{self, ClientTlsConfig, ServerTlsConfig, TlsReactorExt, TlsRole};
use torsion_transports::{DatagramPort, ReactorExt};

use util::open_fds;

#[path = "../../reactor/tests/support/sticky.rs"]
mod sticky;

use sticky::{Counted, Sticky, MADE, PER_STICKY};

/// A counted factory (a closure serves as both kinds) building `Sticky` protocols.
fn sticky_factory(drops: &Rc<Cell<usize>>) -> impl Factory + ClientFactory {
    let c = Counted(drops.clone());
    let d = drops.clone();
    move |_: &Address| {
        let _ = &c;
        Sticky::new(&d)
    }
}

#[test]
fn dropping_a_reactor_frees_tcp_and_unix_connections_and_closes_descriptors() {
    let _serial = util::serial();
    let baseline = open_fds();
    let drops = Rc::new(Cell::new(0));
    let reactor = Reactor::new().unwrap();
    // TCP: a listener with a connected client in the same reactor.
    let port = reactor
        .listen_tcp("127.0.0.1:0", sticky_factory(&drops))
        .unwrap();
    let addr = util::port_addr(&port.local_address());
    let connector = reactor.connect_tcp("127.0.0.1", addr.port(), sticky_factory(&drops));
    // Unix, the same.
    let dir = std::env::temp_dir().join(format!("torsion-drop-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let uport = reactor.listen_unix(&dir, sticky_factory(&drops)).unwrap();
    let uconnector = reactor.connect_unix(&dir, sticky_factory(&drops));
    // Two server and two client protocols made.
    util::run_until(&reactor, "four connections", || MADE.with(Cell::get) == 4);
    // A connector still connecting / resolving.
    let pending = reactor.connect_tcp("localhost", addr.port(), sticky_factory(&drops));
    drop((port, uport, connector, uconnector, pending));
    drop(reactor);
    // 4 factories (+1 pending connector's), 4 protocols with their timers and producers.
    assert_eq!(drops.get(), 5 + 4 * PER_STICKY);
    assert_eq!(open_fds(), baseline);
    let _ = std::fs::remove_file(&dir);
}

/// Counts objects made and dropped.
#[derive(Clone, Default)]
struct Live(Rc<(Cell<usize>, Cell<usize>)>);

/// One object tracked by a [`Live`].
struct Tracked(Live);
impl Tracked {
    fn new(live: &Live) -> Self {
        let c = &(live.0).0;
        c.set(c.get() + 1);
        Tracked(live.clone())
    }
}
impl Drop for Tracked {
    fn drop(&mut self) {
        let c = &((self.0).0).1;
        c.set(c.get() + 1);
    }
}
impl Live {
    fn made(&self) -> usize {
        self.0 .0.get()
    }
    fn dropped(&self) -> usize {
        self.0 .1.get()
    }
}

/// What a [`Keeper`] does once connected.
#[derive(Clone)]
enum Then {
    /// Keep its handle and a pending timer owning a clone of it.
    Keep,
    /// The same, and pause reading.
    Pause,
    /// The same, then start a full close.
    Close,
    /// The same, then start TLS as the server (STARTTLS).
    StartTls(ServerTlsConfig),
}

/// Keeps its own handle and a pending DelayedCall whose closure owns another handle.
struct Keeper {
    _t: Tracked,
    live: Live,
    made: Rc<Cell<usize>>,
    then: Then,
    handle: Option<TransportHandle>,
    timer: Option<DelayedCall>,
}

impl Protocol for Keeper {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.made.set(self.made.get() + 1);
        let h = t.handle();
        self.handle = Some(h.clone());
        let c = Tracked::new(&self.live);
        self.timer = Some(t.reactor().call_later(Duration::from_secs(100), move |_| {
            let _ = (&c, &h);
        }));
        match &self.then {
            Then::Keep => {}
            Then::Pause => t.pause_reading(),
            Then::Close => t.lose_connection(),
            Then::StartTls(config) => {
                assert!(tls::start_tls(t, TlsRole::Server(config.clone())));
            }
        }
    }
    fn data_received(&mut self, _t: &mut dyn Transport, _d: &[u8]) {}
}

fn keeper_factory(
    live: &Live,
    made: &Rc<Cell<usize>>,
    then: Then,
) -> impl FnMut(&Address) -> Keeper + Clone + 'static {
    let c = Rc::new(Tracked::new(live));
    let live = live.clone();
    let made = made.clone();
    move |_: &Address| {
        let _ = &c;
        Keeper {
            _t: Tracked::new(&live),
            live: live.clone(),
            made: made.clone(),
            then: then.clone(),
            handle: None,
            timer: None,
        }
    }
}

/// Keeps its own port handle.
struct DatagramKeeper {
    _t: Tracked,
    _port: Rc<std::cell::RefCell<Option<DatagramPort>>>,
}
impl DatagramProtocol for DatagramKeeper {
    fn datagram_received(&mut self, _t: &mut dyn DatagramTransport, _d: &[u8], _f: &Address) {}
}

#[test]
fn dropping_a_reactor_frees_tls_connections_connectors_and_datagram_ports() {
    let _serial = util::serial();
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::create_dev_certs(dir.path(), &["localhost".to_string()]).unwrap();
    let server =
        ServerTlsConfig::from_pem_files(&certs.server_cert, &certs.server_key, None).unwrap();
    let client = ClientTlsConfig::with_ca_file(&certs.ca_cert).unwrap();
    let baseline = open_fds();
    let live = Live::default();
    let made = Rc::new(Cell::new(0));
    let reactor = Reactor::new().unwrap();

    // Established: a TLS server and client in the same reactor, both keeping handles and
    // timers.
    let tls_port = reactor
        .listen_tls(
            "127.0.0.1:0",
            &server,
            keeper_factory(&live, &made, Then::Keep),
        )
        .unwrap();
    let tls_addr = util::port_addr(&tls_port.local_address());
    let established = reactor.connect_tls(
        "localhost",
        tls_addr.port(),
        &client,
        keeper_factory(&live, &made, Then::Keep),
    );
    // Closing: the server closes at once; the client never reads its close_notify (a paused
    // client below keeps the answer from coming).
    let closing_port = reactor
        .listen_tls(
            "127.0.0.1:0",
            &server,
            keeper_factory(&live, &made, Then::Close),
        )
        .unwrap();
    let closing_addr = util::port_addr(&closing_port.local_address());
    let closing = reactor.connect_tls(
        "localhost",
        closing_addr.port(),
        &client,
        keeper_factory(&live, &made, Then::Pause),
    );
    // STARTTLS: a plain server that starts TLS at once; its plain client never says hello.
    let starttls_port = reactor
        .listen_tcp(
            "127.0.0.1:0",
            keeper_factory(&live, &made, Then::StartTls(server.clone())),
        )
        .unwrap();
    let starttls_addr = util::port_addr(&starttls_port.local_address());
    let plain = reactor.connect_tcp(
        "127.0.0.1",
        starttls_addr.port(),
        keeper_factory(&live, &made, Then::Keep),
    );
    util::run_until(&reactor, "six connections", {
        let made = made.clone();
        move || made.get() == 6
    });
    // Mid-handshake: a TLS client (and its connector) against a plain server that never
    // answers, and a TLS server whose client never says hello.
    let silent_port = reactor
        .listen_tcp("127.0.0.1:0", keeper_factory(&live, &made, Then::Keep))
        .unwrap();
    let silent_addr = util::port_addr(&silent_port.local_address());
    let handshaking = reactor.connect_tls(
        "localhost",
        silent_addr.port(),
        &client,
        keeper_factory(&live, &made, Then::Keep),
    );
    let mute = reactor.connect_tcp(
        "127.0.0.1",
        tls_addr.port(),
        keeper_factory(&live, &made, Then::Keep),
    );
    util::run_until(&reactor, "two more connections", {
        let made = made.clone();
        move || made.get() == 8
    });
    util::run_for(&reactor, Duration::from_millis(50));

    // Datagram ports whose protocols keep their own port.
    let slot = Rc::new(std::cell::RefCell::new(None));
    let udp = reactor
        .listen_udp(
            "127.0.0.1:0",
            DatagramKeeper {
                _t: Tracked::new(&live),
                _port: slot.clone(),
            },
        )
        .unwrap();
    *slot.borrow_mut() = Some(udp.clone());
    let path = dir.path().join("dgram.sock");
    let uslot = Rc::new(std::cell::RefCell::new(None));
    let unix = reactor
        .listen_unix_datagram(
            &path,
            DatagramKeeper {
                _t: Tracked::new(&live),
                _port: uslot.clone(),
            },
        )
        .unwrap();
    *uslot.borrow_mut() = Some(unix.clone());
    drop((slot, uslot, udp, unix));
    util::run_for(&reactor, Duration::from_millis(20));

    drop((tls_port, closing_port, starttls_port, silent_port));
    drop((established, closing, plain, handshaking, mute));
    drop(reactor);
    assert!(live.made() > 0);
    assert_eq!(live.dropped(), live.made(), "objects leaked");
    assert_eq!(open_fds(), baseline, "descriptors leaked");
}
