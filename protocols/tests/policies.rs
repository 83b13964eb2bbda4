//! Policies on the virtual clock: idle timeout, deadlines, connection limits, throttling and
//! traffic logging.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use torsion_protocols::policies::{
    Bandwidth, ConnectionLimits, Deadline, IdleTimeout, Throttled, ThrottlingFactory,
    TrafficLogger, WrappingFactory,
};
use torsion_protocols::wire::{Chargen, Discard, Echo};
use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};
use torsion_reactor::{
    Address, CloseReason, Factory, Producer, Protocol, Reactor, Transport, TransportHandle,
};

/// Records the close reason it is given.
struct Watch<P> {
    inner: P,
    lost: Rc<RefCell<Option<CloseReason>>>,
}

impl<P: Protocol> Protocol for Watch<P> {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.inner.connection_made(t)
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.inner.data_received(t, data)
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        *self.lost.borrow_mut() = Some(reason);
    }
}

fn watch<P: Protocol>(inner: P) -> (Watch<P>, Rc<RefCell<Option<CloseReason>>>) {
    let lost = Rc::default();
    (
        Watch {
            inner,
            lost: Rc::clone(&lost),
        },
        lost,
    )
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// --- Idle timeout ---

#[test]
fn idle_timeout_fires_after_silence_and_reports_timed_out() {
    let mr = MemoryReactor::new();
    let (w, lost) = watch(Echo);
    let st = StringTransport::connect(&mr, IdleTimeout::new(w, secs(10.0)));
    mr.advance(secs(9.999));
    assert!(st.lost().is_none());
    mr.advance(secs(0.001));
    assert!(st.reset_received(), "aborted");
    assert!(matches!(*lost.borrow(), Some(CloseReason::TimedOut)));
}

#[test]
fn idle_timeout_reset_by_reads() {
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(&mr, IdleTimeout::new(Discard, secs(10.0)));
    for _ in 0..100 {
        mr.advance(secs(9.0));
        st.feed(b"x");
    }
    assert!(st.lost().is_none(), "900 s of regular traffic");
    mr.advance(secs(10.0));
    assert!(st.lost().is_some());
}

/// Writes count as traffic too, also when made later through a stored handle.
#[test]
fn idle_timeout_reset_by_writes_through_handles() {
    let handle_slot: Rc<RefCell<Option<TransportHandle>>> = Rc::default();
    struct Keep(Rc<RefCell<Option<TransportHandle>>>);
    impl Protocol for Keep {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            *self.0.borrow_mut() = Some(t.handle());
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(&mr, IdleTimeout::new(Keep(handle_slot.clone()), secs(5.0)));
    let handle = handle_slot.borrow().clone().unwrap();
    for _ in 0..10 {
        mr.advance(secs(4.0));
        handle.write(b"tick");
    }
    assert!(st.lost().is_none());
    assert_eq!(st.take().len(), 40);
    mr.advance(secs(5.0));
    assert!(st.lost().is_some());
}

#[test]
fn idle_timeout_cancelled_on_close() {
    let mr = MemoryReactor::new();
    let (w, lost) = watch(Echo);
    let st = StringTransport::connect(&mr, IdleTimeout::new(w, secs(10.0)));
    st.feed_eof();
    assert!(matches!(*lost.borrow(), Some(CloseReason::Done)));
    mr.advance(secs(60.0));
    assert!(matches!(*lost.borrow(), Some(CloseReason::Done)));
}

/// Writes a goodbye and half-closes at once, reading on.
struct HalfCloser;
impl Protocol for HalfCloser {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"bye");
        t.lose_write_connection();
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn half_close(&self) -> bool {
        true
    }
}

/// Our own half-close makes the transport report `is_closing`; the idle timeout must still
/// bound the reading side (it used to do nothing when it fired, and never fire again).
#[test]
fn idle_timeout_fires_on_a_half_closed_connection() {
    let mr = MemoryReactor::new();
    let (w, lost) = watch(HalfCloser);
    let st = StringTransport::connect(&mr, IdleTimeout::new(w, secs(10.0)));
    mr.run_until_idle();
    assert_eq!(st.take(), b"bye");
    assert!(st.fin_received());
    assert!(st.lost().is_none());
    // Reads still count as traffic on the half-closed connection.
    mr.advance(secs(9.0));
    st.feed(b"more");
    mr.advance(secs(9.0));
    assert!(st.lost().is_none());
    mr.advance(secs(1.0));
    assert!(st.reset_received(), "aborted");
    assert!(matches!(*lost.borrow(), Some(CloseReason::TimedOut)));
}

/// A graceful close that is still flushing to a peer that reads nothing is left to the
/// transport's close timeout, also when it follows a half-close.
#[test]
fn idle_timeout_leaves_a_flushing_graceful_close_alone() {
    struct BigThenClose {
        half_close_first: bool,
    }
    impl Protocol for BigThenClose {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.write(&[b'x'; 4096]);
            if self.half_close_first {
                t.lose_write_connection();
            }
            t.lose_connection();
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn half_close(&self) -> bool {
            true
        }
    }
    for half_close_first in [false, true] {
        let mr = MemoryReactor::new();
        let options = MemoryOptions {
            capacity: 1024,
            ..MemoryOptions::default()
        };
        let close_timeout = options.config.close_timeout;
        let (w, lost) = watch(BigThenClose { half_close_first });
        let st = StringTransport::with_options(&mr, IdleTimeout::new(w, secs(5.0)), options);
        assert!(st.transport().buffered() > 0, "still flushing");
        mr.advance(close_timeout - secs(1.0));
        assert!(st.lost().is_none(), "idle timeout cut the close short");
        assert!(!st.reset_received());
        mr.advance(secs(1.0));
        assert!(st.lost().is_some(), "the close timeout bounds it");
        assert!(!matches!(*lost.borrow(), Some(CloseReason::TimedOut)));
    }
}

// --- Deadline ---

#[test]
fn deadline_cancel_and_fire() {
    struct P(Rc<RefCell<Option<Deadline>>>);
    impl Protocol for P {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            *self.0.borrow_mut() = Some(Deadline::start(t, secs(3.0), "greeting"));
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let mr = MemoryReactor::new();
    let slot = Rc::default();
    let st = StringTransport::connect(&mr, P(Rc::clone(&slot)));
    slot.borrow().as_ref().unwrap().cancel();
    mr.advance(secs(10.0));
    assert!(st.lost().is_none());
    assert!(!slot.borrow().as_ref().unwrap().fired());

    let slot = Rc::default();
    let st = StringTransport::connect(&mr, P(Rc::clone(&slot)));
    mr.advance(secs(3.0));
    assert!(st.reset_received());
    assert!(slot.borrow().as_ref().unwrap().fired());
}

// --- Connection limits ---

fn inet(s: &str) -> Address {
    s.parse::<SocketAddr>().unwrap().into()
}

#[test]
fn connection_limits_total_and_per_peer() {
    let local = inet("127.0.0.1:9000");
    let mut limits = ConnectionLimits::new(|_: &Address| Echo, Some(3), Some(2));
    let stats = limits.stats();
    let a1 = limits.build_protocol(&inet("10.0.0.1:1000"), &local);
    let a2 = limits.build_protocol(&inet("10.0.0.1:1001"), &local);
    let a3 = limits.build_protocol(&inet("10.0.0.1:1002"), &local);
    assert!(a1.is_some() && a2.is_some());
    assert!(a3.is_none(), "per-peer limit (any port)");
    assert_eq!(stats.from_peer("10.0.0.1".parse().unwrap()), 2);
    let b1 = limits.build_protocol(&inet("[2001:db8::1]:5"), &local);
    assert!(b1.is_some());
    assert!(
        limits.build_protocol(&inet("10.0.0.2:1"), &local).is_none(),
        "total limit"
    );
    assert_eq!(stats.total(), 3);

    // A real connection frees its slot when it closes.
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(&mr, a1.unwrap());
    st.feed(b"hi");
    assert_eq!(st.take(), b"hi");
    assert_eq!(stats.total(), 3);
    st.feed_eof();
    assert_eq!(stats.total(), 2);
    assert_eq!(stats.from_peer("10.0.0.1".parse().unwrap()), 1);
    assert!(limits
        .build_protocol(&inet("10.0.0.1:1003"), &local)
        .is_some());
}

#[test]
fn connection_limits_non_ip_peers_count_towards_total_only() {
    let local = Address::Memory(0);
    let mut limits = ConnectionLimits::new(|_: &Address| Echo, Some(2), Some(1));
    let a = limits.build_protocol(&Address::Memory(1), &local);
    let b = limits.build_protocol(&Address::Memory(1), &local);
    assert!(a.is_some() && b.is_some());
    assert!(limits.build_protocol(&Address::Memory(1), &local).is_none());
}

/// A dual-stack listener sees an IPv4 client as `::ffff:a.b.c.d`: with limits shared by an
/// IPv4 and a dual-stack port, that is still the same peer.
#[test]
fn connection_limits_key_ipv4_mapped_peers_as_ipv4() {
    let local = inet("127.0.0.1:9000");
    let mut limits = ConnectionLimits::new(|_: &Address| Echo, None, Some(1));
    let stats = limits.stats();
    let a = limits.build_protocol(&inet("192.0.2.7:1000"), &local);
    assert!(a.is_some());
    assert!(
        limits
            .build_protocol(&inet("[::ffff:192.0.2.7]:1001"), &local)
            .is_none(),
        "the mapped address is the same peer"
    );
    assert_eq!(stats.from_peer("::ffff:192.0.2.7".parse().unwrap()), 1);
    drop(a);
    let b = limits.build_protocol(&inet("[::ffff:192.0.2.7]:1002"), &local);
    assert!(b.is_some());
    assert_eq!(stats.from_peer("192.0.2.7".parse().unwrap()), 1);
    assert!(limits
        .build_protocol(&inet("192.0.2.7:1003"), &local)
        .is_none());
    drop(b);
    assert_eq!(stats.total(), 0);
}

#[test]
fn factory_hooks_pass_through_wrappers() {
    struct Counting(Rc<Cell<i32>>);
    impl Factory for Counting {
        fn build_protocol(&mut self, _: &Address, _: &Address) -> Option<Box<dyn Protocol>> {
            Some(Box::new(Echo))
        }
        fn start_factory(&mut self) {
            self.0.set(self.0.get() + 1);
        }
        fn stop_factory(&mut self) {
            self.0.set(self.0.get() - 10);
        }
    }
    let started = Rc::new(Cell::new(0));
    let wrapped = WrappingFactory::new(Counting(started.clone()), |p, _| p);
    let mut limits = ConnectionLimits::new(wrapped, None, None);
    limits.start_factory();
    assert_eq!(started.get(), 1);
    limits.stop_factory();
    assert_eq!(started.get(), -9);
}

// --- Throttling ---

/// A cap of 0 is documented as the tightest cap, 1 byte per second: neither a stall nor no
/// cap at all.
#[test]
fn throttle_cap_of_zero_is_one_byte_per_second() {
    let mut unread = Vec::new();
    for limits in [Bandwidth::read(0), Bandwidth::read(1)] {
        let mr = MemoryReactor::new();
        let st = StringTransport::with_options(
            &mr,
            Throttled::new(Discard, limits),
            MemoryOptions::chunked(1),
        );
        st.feed(&[0; 10]);
        let mut seen = vec![st.unread()];
        for _ in 0..3 {
            mr.advance(secs(1.0));
            seen.push(st.unread());
        }
        unread.push(seen);
    }
    assert_eq!(unread[0], unread[1]);
    assert!(unread[0][0] > 0, "capped");
    assert!(unread[0][3] < unread[0][0], "not stalled");
}

/// Bytes read per virtual second stay at the cap.
#[test]
fn throttle_reads_per_connection() {
    let mr = MemoryReactor::new();
    let st = StringTransport::with_options(
        &mr,
        Throttled::new(Discard, Bandwidth::read(1000)),
        MemoryOptions::chunked(100),
    );
    st.feed(&[0; 10_000]);
    let first = 10_000 - st.unread();
    assert!(
        (1000..=1200).contains(&first),
        "burst of one second (+ one read): {first}"
    );
    let mut consumed = Vec::new();
    for _ in 0..5 {
        mr.advance(secs(1.0));
        consumed.push(10_000 - st.unread());
    }
    for (i, c) in consumed.iter().enumerate() {
        let expected = 1000 * (i + 2);
        assert!(
            c.abs_diff(expected) <= 200,
            "after {} s: {c} read, expected about {expected}",
            i + 1
        );
    }
    mr.advance(secs(10.0));
    assert_eq!(st.unread(), 0);
}

/// The inner protocol's own pause is honoured when the throttle lifts.
#[test]
fn throttle_respects_inner_pause() {
    struct PauseOnce(bool);
    impl Protocol for PauseOnce {
        fn data_received(&mut self, t: &mut dyn Transport, _: &[u8]) {
            if !self.0 {
                self.0 = true;
                t.pause_reading();
            }
        }
    }
    let mr = MemoryReactor::new();
    let st = StringTransport::with_options(
        &mr,
        Throttled::new(PauseOnce(false), Bandwidth::read(100)),
        MemoryOptions::chunked(200),
    );
    st.feed(&[0; 1000]);
    assert_eq!(st.unread(), 800);
    mr.advance(secs(30.0));
    assert_eq!(st.unread(), 800, "still paused by the protocol");
}

/// Echo capped at 2000 B/s of output: reading pauses while the write budget is in debt.
#[test]
fn throttle_writes_of_a_request_response_protocol() {
    let mr = MemoryReactor::new();
    let st = StringTransport::with_options(
        &mr,
        Throttled::new(Echo, Bandwidth::write(2000)),
        MemoryOptions::chunked(500),
    );
    st.feed(&[7; 20_000]);
    let mut total = st.take().len();
    assert!(total <= 2500, "first second: {total}");
    for second in 1..=5 {
        mr.advance(secs(1.0));
        total += st.take().len();
        let expected = 2000 * (second + 1);
        assert!(
            total.abs_diff(expected) <= 500,
            "after {second} s: {total} echoed, expected about {expected}"
        );
    }
}

/// A pull producer (chargen) is asked for more only within the write budget.
#[test]
fn throttle_writes_of_a_producer() {
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(&mr, Throttled::new(Chargen, Bandwidth::write(50_000)));
    let mut total = st.take().len();
    // One chunk (~16 KiB) at a time until the one-second burst is spent.
    assert!(total <= 50_000 + 16_500, "first burst: {total}");
    for _ in 0..10 {
        mr.advance(secs(1.0));
        total += st.take().len();
    }
    let expected = 50_000 * 11;
    assert!(
        total.abs_diff(expected) <= 20_000,
        "{total} bytes in 10 s at 50 kB/s (+ burst)"
    );
}

/// A pull producer writing `left` chunks of 1000 bytes, one per `resume_producing`, logging
/// its calls; it unregisters itself after its last chunk if `unregister_when_done`.
struct Puller {
    h: TransportHandle,
    name: &'static str,
    log: Rc<RefCell<Vec<String>>>,
    left: usize,
    unregister_when_done: bool,
}

impl Producer for Puller {
    fn resume_producing(&mut self) {
        self.log.borrow_mut().push(format!("{} resume", self.name));
        if self.left == 0 {
            return;
        }
        self.left -= 1;
        self.h.write(&[b'x'; 1000]);
        if self.left == 0 && self.unregister_when_done {
            self.h.unregister_producer();
        }
    }
    fn stop_producing(&mut self) {
        self.log.borrow_mut().push(format!("{} stop", self.name));
    }
}

/// Registering a second producer stops the first and leaves the second running.
#[test]
fn throttle_replacing_a_producer() {
    struct Replacer(Rc<RefCell<Vec<String>>>);
    impl Protocol for Replacer {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            let a = Puller {
                h: t.handle(),
                name: "A",
                log: Rc::clone(&self.0),
                left: 0,
                unregister_when_done: false,
            };
            t.register_producer(Box::new(a), false);
        }
        fn data_received(&mut self, t: &mut dyn Transport, _: &[u8]) {
            let b = Puller {
                h: t.handle(),
                name: "B",
                log: Rc::clone(&self.0),
                left: 3,
                unregister_when_done: false,
            };
            t.register_producer(Box::new(b), false);
        }
    }
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(
        &mr,
        Throttled::new(Replacer(Rc::clone(&log)), Bandwidth::write(1_000_000)),
    );
    st.feed(b"go");
    assert_eq!(st.take().len(), 3000, "{:?}", log.borrow());
    assert_eq!(log.borrow()[..2], ["A resume", "A stop"]);
    assert!(
        !log.borrow().contains(&"B stop".to_string()),
        "{:?}",
        log.borrow()
    );
}

/// A producer may register its successor from inside its own call: the successor takes
/// over once the call returns, and the predecessor is stopped.
#[test]
fn throttle_producer_registering_its_successor() {
    struct Chain(TransportHandle, Rc<RefCell<Vec<String>>>);
    impl Producer for Chain {
        fn resume_producing(&mut self) {
            self.1.borrow_mut().push("chain resume".into());
            self.0.write(b"first");
            let next = Puller {
                h: self.0.clone(),
                name: "next",
                log: Rc::clone(&self.1),
                left: 1,
                unregister_when_done: false,
            };
            self.0.register_producer(Box::new(next), false);
        }
        fn stop_producing(&mut self) {
            self.1.borrow_mut().push("chain stop".into());
        }
    }
    struct P(Rc<RefCell<Vec<String>>>);
    impl Protocol for P {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.register_producer(Box::new(Chain(t.handle(), Rc::clone(&self.0))), false);
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(
        &mr,
        Throttled::new(P(Rc::clone(&log)), Bandwidth::write(1_000_000)),
    );
    assert_eq!(st.take().len(), 1005, "{:?}", log.borrow());
    assert!(st.lost().is_none(), "{:?}", st.lost());
    assert_eq!(
        log.borrow()[..3],
        ["chain resume", "chain stop", "next resume"]
    );
}

/// A producer that unregistered itself from inside its own call (the usual way to finish) is
/// neither asked again nor stopped.
#[test]
fn throttle_producer_that_unregistered_itself_is_not_revived() {
    struct P(Rc<RefCell<Vec<String>>>);
    impl Protocol for P {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            let a = Puller {
                h: t.handle(),
                name: "A",
                log: Rc::clone(&self.0),
                left: 3,
                unregister_when_done: true,
            };
            t.register_producer(Box::new(a), false);
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(
        &mr,
        Throttled::new(P(Rc::clone(&log)), Bandwidth::write(1500)),
    );
    for _ in 0..5 {
        st.take();
        mr.advance(secs(1.0));
    }
    st.feed_eof();
    assert_eq!(*log.borrow(), ["A resume", "A resume", "A resume"]);
}

/// A push producer put into debt by its own writes (inside its own call) is paused once the
/// call returns: the cap holds.
#[test]
fn throttle_pauses_a_push_producer_that_overspends_in_its_own_call() {
    struct Pusher(TransportHandle, Rc<Cell<bool>>);
    impl Producer for Pusher {
        fn pause_producing(&mut self) {
            self.1.set(true);
        }
        fn resume_producing(&mut self) {
            self.1.set(false);
            self.0.write(&[b'y'; 100]);
        }
    }
    /// Writes 100 bytes every 10 ms while its producer is not paused.
    fn tick(r: &Reactor, h: TransportHandle, paused: Rc<Cell<bool>>) {
        if !paused.get() {
            h.write(&[b'y'; 100]);
        }
        let _next = r.call_later(Duration::from_millis(10), move |r| tick(r, h, paused));
    }
    struct P;
    impl Protocol for P {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            let paused = Rc::new(Cell::new(false));
            let pusher = Pusher(t.handle(), Rc::clone(&paused));
            t.register_producer(Box::new(pusher), true);
            tick(&t.reactor(), t.handle(), paused);
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(&mr, Throttled::new(P, Bandwidth::write(1000)));
    let mut total = st.take().len();
    for _ in 0..20 {
        mr.advance(secs(1.0));
        total += st.take().len();
    }
    // 1000 B/s for 20 s plus the first second's burst, plus a write or two per resume.
    assert!(total <= 23_000, "{total} bytes in 20 s at 1000 B/s");
    assert!(total >= 18_000, "{total} bytes in 20 s at 1000 B/s");
}

/// A push producer that panics when the throttle resumes it (from the throttle's timer, not
/// from a connection callback) costs its connection, as a panic in a producer called by the
/// transport does: aborted, `Panic` reported. (The panic was caught by the reactor's timer
/// loop, the throttle never lifted its pause on reading, and the connection hung open.)
#[test]
fn throttle_producer_panic_on_resume_aborts_the_connection() {
    struct Bomb;
    impl Producer for Bomb {
        fn pause_producing(&mut self) {}
        fn resume_producing(&mut self) {
            panic!("producer boom");
        }
    }
    struct P;
    impl Protocol for P {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.register_producer(Box::new(Bomb), true);
            t.write(&[b'z'; 3000]); // in debt: the producer is paused, reading too
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let mr = MemoryReactor::new();
    let (w, lost) = watch(P);
    let st = StringTransport::connect(&mr, Throttled::new(w, Bandwidth::write(1000)));
    assert_eq!(st.take().len(), 3000);
    mr.advance(secs(3.0)); // out of debt: the producer is resumed, and panics
    assert!(st.reset_received(), "aborted");
    assert!(
        matches!(&*lost.borrow(), Some(CloseReason::Panic(m)) if m.starts_with("producer boom (at ")),
        "{:?}",
        lost.borrow()
    );
}

/// A push producer that panics when paused (its `stop_producing` panics too, if `stop`).
struct PauseBomb {
    stop: bool,
}

impl Producer for PauseBomb {
    fn pause_producing(&mut self) {
        panic!("pause boom");
    }
    fn resume_producing(&mut self) {}
    fn stop_producing(&mut self) {
        if self.stop {
            panic!("stop boom");
        }
    }
}

/// A write through a handle outside any callback (a timer) that spends the write budget
/// pauses the producer from that write: its panic costs the connection, aborted with `Panic`,
/// as a producer's panic in a call the transport makes. (It went up to the timer's generic
/// guard: logged, the connection left open, the throttle's recovery timer never armed, so
/// writes stayed throttled for good.)
#[test]
fn throttle_producer_panic_on_a_pause_from_a_handle_write_aborts_the_connection() {
    struct P(Rc<RefCell<Option<TransportHandle>>>);
    impl Protocol for P {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.register_producer(Box::new(PauseBomb { stop: false }), true);
            *self.0.borrow_mut() = Some(t.handle());
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let mr = MemoryReactor::new();
    let handle = Rc::default();
    let (w, lost) = watch(P(Rc::clone(&handle)));
    let st = StringTransport::connect(&mr, Throttled::new(w, Bandwidth::write(1000)));
    let h = handle.borrow().clone().unwrap();
    let _timer = mr
        .reactor()
        .call_later(secs(1.0), move |_| h.write(&[b'z'; 3000]));
    mr.advance(secs(2.0));
    assert!(st.reset_received(), "aborted");
    assert!(
        matches!(&*lost.borrow(), Some(CloseReason::Panic(m)) if m.starts_with("pause boom (at ")),
        "{:?}",
        lost.borrow()
    );
}

/// A pull producer held back by the throttle (taken off the transport) is stopped by the
/// throttle when the connection ends: a panic in its `stop_producing` must not keep
/// `connection_lost` from the wrapped protocol. (It unwound through the throttle's
/// `connection_lost`, and the protocol never heard that its connection ended.)
#[test]
fn throttle_producer_panic_when_stopped_at_close_still_delivers_connection_lost() {
    struct Bomb;
    impl Producer for Bomb {
        fn resume_producing(&mut self) {}
        fn stop_producing(&mut self) {
            panic!("stop boom");
        }
    }
    struct P;
    impl Protocol for P {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.write(&[b'z'; 3000]); // in debt: a pull producer is held back
            t.register_producer(Box::new(Bomb), false);
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let mr = MemoryReactor::new();
    let (w, lost) = watch(P);
    let st = StringTransport::connect(&mr, Throttled::new(w, Bandwidth::write(1000)));
    mr.run_until_idle();
    st.transport().abort_connection();
    mr.run_until_idle();
    assert!(
        matches!(&*lost.borrow(), Some(CloseReason::Aborted)),
        "{:?}",
        lost.borrow()
    );
}

/// Connections of one factory share its total read budget.
#[test]
fn throttling_factory_shares_the_pool() {
    let mr = MemoryReactor::new();
    let mut factory = ThrottlingFactory::new(
        |_: &Address| Discard,
        Bandwidth::UNLIMITED,
        Bandwidth::read(1000),
    );
    let local = Address::Memory(0);
    let conns: Vec<StringTransport> = (0..4)
        .map(|i| {
            let p = factory.build_protocol(&Address::Memory(i), &local).unwrap();
            StringTransport::with_options(&mr, p, MemoryOptions::chunked(50))
        })
        .collect();
    for st in &conns {
        st.feed(&[0; 5000]);
    }
    mr.advance(secs(10.0));
    let read: usize = conns.iter().map(|st| 5000 - st.unread()).sum();
    // 1000 B/s for 10 s plus the first second's burst, plus one read per connection.
    assert!(
        read.abs_diff(11_000) <= 4 * 50 + 100,
        "{read} bytes read by all connections together"
    );
}

// --- Logging ---

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs(level: &str, f: impl FnOnce()) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(format!("torsion::traffic={level}"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn traffic_logger_hex_dump_at_trace() {
    let logs = captured_logs("trace", || {
        let mr = MemoryReactor::new();
        let st = StringTransport::connect(&mr, TrafficLogger::new(Echo));
        st.feed(b"hello\x00");
        st.take();
        st.feed_eof();
    });
    assert!(logs.contains("direction=\"in\""), "{logs}");
    assert!(logs.contains("direction=\"out\""), "{logs}");
    assert!(
        logs.contains("00000000  68 65 6c 6c 6f 00"),
        "hex dump: {logs}"
    );
    assert!(logs.contains("|hello.|"), "{logs}");
    assert!(logs.contains("connection lost"), "{logs}");
}

#[test]
fn traffic_logger_sizes_only_at_debug() {
    let logs = captured_logs("debug", || {
        let mr = MemoryReactor::new();
        let st = StringTransport::connect(&mr, TrafficLogger::new(Echo));
        st.feed(b"hello");
    });
    assert!(logs.contains("bytes=5"), "{logs}");
    assert!(!logs.contains("68 65"), "{logs}");
}

/// Writes what it receives back as two slices of one vectored write.
struct VectoredEcho;
impl Protocol for VectoredEcho {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        let (a, b) = data.split_at(data.len() / 2);
        t.write_vectored(&[std::io::IoSlice::new(a), std::io::IoSlice::new(b)]);
    }
}

/// A vectored write is logged as one: its whole size, and at trace level a dump of its first
/// bytes across the slices, up to the limit.
#[test]
fn traffic_logger_logs_a_vectored_write_as_one() {
    let logs = captured_logs("trace", || {
        let mr = MemoryReactor::new();
        let st = StringTransport::connect(&mr, TrafficLogger::new(VectoredEcho).dump_limit(8));
        st.feed(b"abcdefghijkl");
        assert_eq!(st.take(), b"abcdefghijkl");
    });
    assert!(logs.contains("bytes=12"), "{logs}");
    assert!(logs.contains("|abcdefgh|"), "{logs}");
    assert!(logs.contains("4 more bytes"), "{logs}");
}

#[test]
fn policies_compose() {
    let mr = MemoryReactor::new();
    let (w, lost) = watch(Echo);
    let protocol = IdleTimeout::new(
        Throttled::new(TrafficLogger::new(w), Bandwidth::both(1_000_000)),
        secs(5.0),
    );
    let st = StringTransport::connect(&mr, protocol);
    st.feed(b"ping");
    assert_eq!(st.take(), b"ping");
    mr.advance(secs(5.0));
    assert!(matches!(*lost.borrow(), Some(CloseReason::TimedOut)));
}

/// Asks for a protocol swap (as `start_tls` does) on `UPGRADE`, records the answer, and
/// echoes everything else.
struct Upgrader(Rc<Cell<Option<bool>>>);

impl Protocol for Upgrader {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        if d == b"UPGRADE" {
            t.write(b"OK;");
            let swapped = t.wrap_protocol(Box::new(|inner| Box::new(Shouting(inner))));
            self.0.set(Some(swapped));
        } else {
            t.write(d);
        }
    }
}

/// A layer that upper-cases what arrives before the protocol it wraps sees it.
struct Shouting(Box<dyn Protocol>);

impl Protocol for Shouting {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        self.0.data_received(t, &d.to_ascii_uppercase());
    }
}

/// STARTTLS works under a policy: the policy's transport passes the swap to the connection,
/// the layer then sits in front of the policy, and the policy goes on working.
#[test]
fn a_protocol_under_a_policy_can_swap_itself() {
    for policy in ["idle timeout", "traffic logger", "throttle"] {
        let mr = MemoryReactor::new();
        let answer = Rc::new(Cell::new(None));
        let inner = Upgrader(answer.clone());
        let st = match policy {
            "idle timeout" => {
                StringTransport::connect(&mr, IdleTimeout::new(inner, Duration::from_secs(30)))
            }
            "traffic logger" => StringTransport::connect(&mr, TrafficLogger::new(inner)),
            _ => StringTransport::connect(&mr, Throttled::new(inner, Bandwidth::write(1 << 20))),
        };
        st.feed(b"UPGRADE");
        assert_eq!(answer.get(), Some(true), "{policy}: swap refused");
        st.feed(b"after");
        assert_eq!(st.take(), b"OK;AFTER", "{policy}: the layer is in front");
        if policy == "idle timeout" {
            mr.advance(Duration::from_secs(31));
            assert!(
                st.reset_received(),
                "the idle timeout still fires after the swap"
            );
        }
    }
}
