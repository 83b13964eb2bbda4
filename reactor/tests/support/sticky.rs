//! A protocol that ties itself into cycles with everything a connection holds (its own
//! handle, timers, a looping call, a producer), with every piece counted when dropped: the
//! drop-leak tests of the reactor and of the transports share it (`#[path]`).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::prelude::*;
use torsion_reactor::{DelayedCall, LoopingCall, Producer};

thread_local! {
    /// How many `Sticky` protocols were told `connection_made` on this thread.
    pub static MADE: Cell<usize> = const { Cell::new(0) };
}

/// Counts its own drop.
pub struct Counted(pub Rc<Cell<usize>>);
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
pub struct Sticky {
    _c: Counted,
    drops: Rc<Cell<usize>>,
    handle: Option<TransportHandle>,
    timers: Vec<DelayedCall>,
    looping: Option<LoopingCall>,
}

impl Sticky {
    pub fn new(drops: &Rc<Cell<usize>>) -> Self {
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
pub const PER_STICKY: usize = 4;
