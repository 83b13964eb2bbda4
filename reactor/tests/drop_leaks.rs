//! Dropping a reactor with live in-memory connections frees every protocol, producer and
//! timer callback, even when a protocol keeps its own transport handle (a cycle through the
//! handle) and a self-referencing timer.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::prelude::*;
use torsion_reactor::testing::{connect_pair, MemoryOptions, MemoryReactor, StringTransport};
use torsion_reactor::{DelayedCall, LoopingCall, Producer};

#[path = "support/sticky.rs"]
mod sticky;

use sticky::{Counted, Sticky, PER_STICKY};

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

/// Calls back into its own connection's handle when dropped.
struct CallsBack(Rc<RefCell<Option<TransportHandle>>>, Rc<Cell<usize>>);
impl Drop for CallsBack {
    fn drop(&mut self) {
        if let Some(h) = self.0.borrow_mut().take() {
            h.write(b"bye");
            h.pause_reading();
            h.resume_reading();
            h.unregister_producer();
            h.lose_connection();
            h.abort_connection();
            let _ = h.buffered();
        }
        self.1.set(self.1.get() + 1);
    }
}
impl Producer for CallsBack {
    fn pause_producing(&mut self) {}
    fn resume_producing(&mut self) {}
    fn stop_producing(&mut self) {}
}

/// A protocol and its producer whose drops call back into their own transport handle.
struct Reentrant {
    own: CallsBack,
    drops: Rc<Cell<usize>>,
}
impl Protocol for Reentrant {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        *self.own.0.borrow_mut() = Some(t.handle());
        let handle = Rc::new(RefCell::new(Some(t.handle())));
        t.register_producer(Box::new(CallsBack(handle, self.drops.clone())), true);
    }
    fn data_received(&mut self, _t: &mut dyn Transport, _d: &[u8]) {}
}

#[test]
fn dropping_a_reactor_survives_drops_calling_back_into_their_handle() {
    let drops = Rc::new(Cell::new(0));
    let mr = MemoryReactor::new();
    let mk = || Reentrant {
        own: CallsBack(Rc::new(RefCell::new(None)), drops.clone()),
        drops: drops.clone(),
    };
    let pair = connect_pair(mr.reactor(), mk(), mk(), MemoryOptions::default());
    mr.run_until_idle();
    drop(pair);
    drop(mr);
    assert_eq!(drops.get(), 4);
}

/// Touches a DelayedCall and a LoopingCall when dropped.
struct TouchesTimers(Rc<Cell<usize>>, Option<DelayedCall>, Option<LoopingCall>);
impl Drop for TouchesTimers {
    fn drop(&mut self) {
        if let Some(call) = &self.1 {
            let _ = call.active();
            let _ = call.remaining();
            call.reset(Duration::from_secs(5));
            call.delay(Duration::from_secs(5));
            call.cancel();
        }
        if let Some(l) = &self.2 {
            let _ = l.running();
            l.stop();
        }
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn dropping_a_reactor_survives_timer_callbacks_touching_timers_when_dropped() {
    let drops = Rc::new(Cell::new(0));
    let mr = MemoryReactor::new();
    let r = mr.reactor();
    let other = r.call_later(Duration::from_secs(3), |_| {});
    let looping = LoopingCall::start(r, Duration::from_secs(1), false, |_, _| {});
    let t = TouchesTimers(drops.clone(), Some(other), Some(looping));
    let _ = r.call_later(Duration::from_secs(2), move |_| drop(t));
    // One owning its own DelayedCall, touched at drop.
    let slot: Rc<RefCell<Option<DelayedCall>>> = Rc::new(RefCell::new(None));
    let s = slot.clone();
    let d = drops.clone();
    let call = r.call_later(Duration::from_secs(1), move |_| {
        let _ = (&s, &d);
    });
    *slot.borrow_mut() = Some(call);
    struct Holder(Rc<RefCell<Option<DelayedCall>>>, Rc<Cell<usize>>);
    impl Drop for Holder {
        fn drop(&mut self) {
            if let Some(c) = self.0.borrow().as_ref() {
                c.cancel();
                c.reset(Duration::from_secs(1));
            }
            self.1.set(self.1.get() + 1);
        }
    }
    let h = Holder(slot.clone(), drops.clone());
    let _ = r.call_later(Duration::from_secs(4), move |_| drop(h));
    drop(slot);
    r.call_soon(|_| {});
    drop(mr);
    assert_eq!(drops.get(), 2);
}
