//! Dropping a reactor with live TCP and Unix connections, a listener and a connector frees
//! every protocol, factory, producer and timer callback and closes every descriptor.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::prelude::*;
use torsion_reactor::{DelayedCall, LoopingCall, Producer};
use torsion_transports::ReactorExt;

use util::open_fds;

thread_local!(static MADE: Cell<usize> = const { Cell::new(0) });

struct Counted(Rc<Cell<usize>>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

struct Prod(#[allow(dead_code)] Counted);
impl Producer for Prod {
    fn pause_producing(&mut self) {}
    fn resume_producing(&mut self) {}
    fn stop_producing(&mut self) {}
}

/// Keeps its own handle, a pending DelayedCall, a LoopingCall, registers a producer and
/// pauses reading.
struct Sticky {
    _c: Counted,
    drops: Rc<Cell<usize>>,
    handle: Option<TransportHandle>,
    timers: Vec<DelayedCall>,
    looping: Option<LoopingCall>,
}

impl Sticky {
    fn new(drops: &Rc<Cell<usize>>) -> Self {
        Sticky {
            _c: Counted(drops.clone()),
            drops: drops.clone(),
            handle: None,
            timers: Vec::new(),
            looping: None,
        }
    }
}

impl Protocol for Sticky {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        MADE.with(|m| m.set(m.get() + 1));
        let h = t.handle();
        self.handle = Some(h.clone());
        let reactor = t.reactor();
        let c = Counted(self.drops.clone());
        let h2 = h.clone();
        self.timers
            .push(reactor.call_later(Duration::from_secs(100), move |_| {
                let _ = (&c, &h2);
            }));
        let c = Counted(self.drops.clone());
        let h3 = h.clone();
        self.looping = Some(LoopingCall::start(
            &reactor,
            Duration::from_secs(50),
            false,
            move |_, _| {
                let _ = (&c, &h3);
            },
        ));
        t.register_producer(Box::new(Prod(Counted(self.drops.clone()))), true);
        t.pause_reading();
    }
    fn data_received(&mut self, _t: &mut dyn Transport, _d: &[u8]) {}
}

/// Objects counted per `Sticky`: itself, the timer closure, the looping closure, the producer.
const PER_STICKY: usize = 4;

fn server_factory(drops: &Rc<Cell<usize>>) -> impl Factory {
    let c = Counted(drops.clone());
    let d = drops.clone();
    move |_: &Address| {
        let _ = &c;
        Sticky::new(&d)
    }
}

fn client_factory(drops: &Rc<Cell<usize>>) -> impl ClientFactory {
    let c = Counted(drops.clone());
    let d = drops.clone();
    move |_: &Address| {
        let _ = &c;
        Sticky::new(&d)
    }
}

#[test]
fn dropping_a_reactor_frees_tcp_and_unix_connections_and_closes_descriptors() {
    let baseline = open_fds();
    let drops = Rc::new(Cell::new(0));
    let reactor = Reactor::new().unwrap();
    // TCP: a listener with a connected client in the same reactor.
    let port = reactor
        .listen_tcp("127.0.0.1:0", server_factory(&drops))
        .unwrap();
    let addr = util::port_addr(&port.local_address());
    let connector = reactor.connect_tcp("127.0.0.1", addr.port(), client_factory(&drops));
    // Unix, the same.
    let dir = std::env::temp_dir().join(format!("torsion-drop-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let uport = reactor.listen_unix(&dir, server_factory(&drops)).unwrap();
    let uconnector = reactor.connect_unix(&dir, client_factory(&drops));
    // Two server and two client protocols made.
    util::run_until(&reactor, "four connections", || MADE.with(Cell::get) == 4);
    // A connector still connecting / resolving.
    let pending = reactor.connect_tcp("localhost", addr.port(), client_factory(&drops));
    drop((port, uport, connector, uconnector, pending));
    drop(reactor);
    // 4 factories (+1 pending connector's), 4 protocols with their timers and producers.
    assert_eq!(drops.get(), 5 + 4 * PER_STICKY);
    assert_eq!(open_fds(), baseline);
    let _ = std::fs::remove_file(&dir);
}
