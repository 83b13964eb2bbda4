//! Dropping a reactor with live in-memory connections frees every protocol, producer and
//! timer callback, even when a protocol keeps its own transport handle (a cycle through the
//! handle) and a self-referencing timer.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::prelude::*;
use torsion_reactor::testing::{connect_pair, MemoryOptions, MemoryReactor, StringTransport};
use torsion_reactor::{DelayedCall, LoopingCall, Producer};

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

#[test]
fn dropping_a_memory_reactor_frees_string_transport_protocols() {
    let drops = Rc::new(Cell::new(0));
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(&mr, Sticky::new(&drops));
    st.feed(b"x");
    drop(st);
    drop(mr);
    assert_eq!(drops.get(), PER_STICKY);
}

#[test]
fn dropping_a_memory_reactor_frees_a_connected_pair() {
    let drops = Rc::new(Cell::new(0));
    let mr = MemoryReactor::new();
    let pair = connect_pair(
        mr.reactor(),
        Sticky::new(&drops),
        Sticky::new(&drops),
        MemoryOptions::default(),
    );
    mr.run_until_idle();
    drop(pair);
    drop(mr);
    assert_eq!(drops.get(), 2 * PER_STICKY);
}

#[test]
fn dropping_a_never_run_memory_reactor_frees_everything() {
    let drops = Rc::new(Cell::new(0));
    let mr = MemoryReactor::new();
    let c = Counted(drops.clone());
    let _ = mr
        .reactor()
        .call_later(Duration::from_secs(1), move |_| drop(c));
    let pair = connect_pair(
        mr.reactor(),
        Sticky::new(&drops),
        Sticky::new(&drops),
        MemoryOptions::default(),
    );
    drop(pair);
    drop(mr);
    assert_eq!(drops.get(), 2 * PER_STICKY + 1);
}

/// A timer whose closure owns its own DelayedCall (a cycle through the timer entry).
#[test]
fn dropping_a_reactor_frees_self_referencing_timers() {
    let drops = Rc::new(Cell::new(0));
    let mr = MemoryReactor::new();
    let slot: Rc<RefCell<Option<DelayedCall>>> = Rc::new(RefCell::new(None));
    let c = Counted(drops.clone());
    let s = slot.clone();
    let call = mr.reactor().call_later(Duration::from_secs(1), move |_| {
        let _ = (&c, &s);
    });
    *slot.borrow_mut() = Some(call);
    drop(slot);
    drop(mr);
    assert_eq!(drops.get(), 1);
}
