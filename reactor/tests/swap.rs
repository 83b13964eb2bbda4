//! Protocol swaps (`wrap_protocol`) with a stand-in layer that takes the connection over.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};
use torsion_reactor::{
    Address, CloseReason, Producer, Protocol, Reactor, Transport, TransportHandle,
};

type Log = Rc<RefCell<Vec<String>>>;

fn push(log: &Log, s: &str) {
    log.borrow_mut().push(s.to_owned());
}

fn count(log: &Log, s: &str) -> usize {
    log.borrow().iter().filter(|e| *e == s).count()
}

/// The layer's transport: tags every write, records producer registrations.
struct Tagged {
    raw: TransportHandle,
    me: Weak<Tagged>,
    log: Log,
}

impl Transport for Tagged {
    fn write(&self, d: &[u8]) {
        self.raw.write(&[b"[", d, b"]"].concat())
    }
    fn lose_connection(&self) {
        self.raw.lose_connection()
    }
    fn lose_write_connection(&self) {
        self.raw.lose_write_connection()
    }
    fn abort_connection(&self) {
        self.raw.abort_connection()
    }
    fn peer_address(&self) -> Address {
        self.raw.peer_address()
    }
    fn local_address(&self) -> Address {
        self.raw.local_address()
    }
    fn pause_reading(&self) {
        self.raw.pause_reading()
    }
    fn resume_reading(&self) {
        self.raw.resume_reading()
    }
    fn set_write_buffer_limits(&self, h: usize, l: usize) -> std::io::Result<()> {
        self.raw.set_write_buffer_limits(h, l)
    }
    fn register_producer(&self, p: Box<dyn Producer>, s: bool) {
        push(&self.log, "layer register_producer");
        self.raw.register_producer(p, s)
    }
    fn unregister_producer(&self) {
        self.raw.unregister_producer()
    }
    fn buffered(&self) -> usize {
        self.raw.buffered()
    }
    fn is_closing(&self) -> bool {
        self.raw.is_closing()
    }
    fn handle(&self) -> TransportHandle {
        TransportHandle::new(self.me.upgrade().expect("alive"))
    }
    fn reactor(&self) -> Reactor {
        self.raw.reactor()
    }
}

/// A layer that takes the connection over (as TLS does) and forwards every callback.
struct Layer {
    old: Box<dyn Protocol>,
    t: Option<Rc<Tagged>>,
    log: Log,
}

impl Layer {
    fn wrapper(log: &Log) -> torsion_reactor::ProtocolWrapper {
        let log = log.clone();
        Box::new(move |old| Box::new(Layer { old, t: None, log }) as Box<dyn Protocol>)
    }

    fn call(&mut self, f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport)) {
        let t = self.t.clone().expect("connected");
        let mut tr: &Tagged = &t;
        f(&mut *self.old, &mut tr);
    }
}

impl Protocol for Layer {
    fn connection_made(&mut self, raw: &mut dyn Transport) {
        push(&self.log, "layer made");
        let t = Rc::new_cyclic(|me| Tagged {
            raw: raw.handle(),
            me: me.clone(),
            log: self.log.clone(),
        });
        raw.redirect_handles(t.handle());
        self.t = Some(t);
    }
    fn data_received(&mut self, _raw: &mut dyn Transport, d: &[u8]) {
        self.call(|p, t| p.data_received(t, d));
    }
    fn half_close(&self) -> bool {
        self.old.half_close()
    }
    fn read_connection_lost(&mut self, _raw: &mut dyn Transport) {
        push(&self.log, "layer read_connection_lost");
        self.call(|p, t| p.read_connection_lost(t));
    }
    fn pause_producing(&mut self, _raw: &mut dyn Transport) {
        self.call(|p, t| p.pause_producing(t));
    }
    fn resume_producing(&mut self, _raw: &mut dyn Transport) {
        self.call(|p, t| p.resume_producing(t));
    }
    fn connection_lost(&mut self, r: CloseReason) {
        self.old.connection_lost(r)
    }
}

/// A push producer that records its calls.
struct Pushing(Log);

impl Producer for Pushing {
    fn pause_producing(&mut self) {
        push(&self.0, "producer pause");
    }
    fn resume_producing(&mut self) {
        push(&self.0, "producer resume");
    }
    fn stop_producing(&mut self) {
        push(&self.0, "producer stop");
    }
}

/// Registers a push producer; `FILL` writes more than the watermark lets through, `UP` asks
/// for the layer.
struct Filler {
    log: Log,
}

impl Protocol for Filler {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.set_write_buffer_limits(4, 0).unwrap();
        t.register_producer(Box::new(Pushing(self.log.clone())), true);
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        match d {
            b"FILL" => t.write(&[b'x'; 100]),
            b"UP" => assert!(t.wrap_protocol(Layer::wrapper(&self.log))),
            _ => {}
        }
    }
    fn pause_producing(&mut self, _t: &mut dyn Transport) {
        push(&self.log, "protocol pause");
    }
    fn resume_producing(&mut self, _t: &mut dyn Transport) {
        push(&self.log, "protocol resume");
    }
}

/// A push producer paused by the watermarks before the swap is handed to the layer still
/// paused: it is not told to pause a second time, and is resumed once when the buffer drains.
#[test]
fn a_paused_producer_handed_to_the_layer_is_not_paused_twice() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let options = MemoryOptions {
        capacity: 16,
        ..MemoryOptions::default()
    };
    let st = StringTransport::with_options(&mr, Filler { log: log.clone() }, options);
    st.feed(b"FILL");
    assert_eq!(count(&log, "producer pause"), 1);
    assert_eq!(count(&log, "protocol pause"), 1);
    st.feed(b"UP");
    assert_eq!(count(&log, "layer made"), 1);
    assert_eq!(count(&log, "layer register_producer"), 1);
    assert_eq!(
        count(&log, "producer pause"),
        1,
        "paused once, not again on the hand-over: {:?}",
        log.borrow()
    );
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(st.take());
    }
    assert_eq!(got, vec![b'x'; 100]);
    assert_eq!(count(&log, "producer resume"), 1, "{:?}", log.borrow());
    assert_eq!(count(&log, "protocol resume"), 1, "{:?}", log.borrow());
}

/// Asks for the layer in `connection_made`.
struct UpAtOnce(Log);

impl Protocol for UpAtOnce {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn connection_made(&mut self, t: &mut dyn Transport) {
        assert!(t.wrap_protocol(Layer::wrapper(&self.0)));
    }
}

/// A handle taken from the connection after a layer took it over, as ports and connectors
/// take theirs once `connection_made` returned, reaches the layer, not the bare stream.
#[test]
fn a_handle_taken_after_the_swap_reaches_the_layer() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let st = StringTransport::connect(&mr, UpAtOnce(log.clone()));
    assert_eq!(count(&log, "layer made"), 1);
    st.transport().write(b"a");
    assert_eq!(st.take(), b"[a]");
}

/// A pull producer that asks for the layer from its own `resume_producing`.
struct UpFromProducer {
    log: Log,
    t: TransportHandle,
    asked: u32,
}

impl Producer for UpFromProducer {
    fn resume_producing(&mut self) {
        self.asked += 1;
        push(&self.log, "producer resume");
        if self.asked == 1 {
            assert!(self.t.wrap_protocol(Layer::wrapper(&self.log)));
            self.t.write(b"chunk");
        }
    }
}

struct RegistersPull(Log);

impl Protocol for RegistersPull {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let p = UpFromProducer {
            log: self.0.clone(),
            t: t.handle(),
            asked: 0,
        };
        t.register_producer(Box::new(p), false);
    }
}

/// A swap asked for from a producer's callback hands the producer to the layer too.
#[test]
fn a_swap_from_a_producer_callback_hands_the_producer_over() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let st = StringTransport::connect(&mr, RegistersPull(log.clone()));
    assert_eq!(st.take(), b"[chunk]");
    assert_eq!(count(&log, "layer made"), 1);
    assert_eq!(
        count(&log, "layer register_producer"),
        1,
        "{:?}",
        log.borrow()
    );
}

/// Half-close; asks for the layer when the peer's FIN arrives.
struct UpOnEof(Log);

impl Protocol for UpOnEof {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn half_close(&self) -> bool {
        true
    }
    fn read_connection_lost(&mut self, t: &mut dyn Transport) {
        push(&self.0, "old read_connection_lost");
        t.wrap_protocol(Layer::wrapper(&self.0));
        t.write(b"bye");
        t.lose_connection();
    }
}

/// A swap asked for in `read_connection_lost`: what the old protocol writes and closes after
/// it goes through the layer.
#[test]
fn a_swap_from_read_connection_lost() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let st = StringTransport::connect(&mr, UpOnEof(log.clone()));
    st.feed_eof();
    assert_eq!(st.take(), b"[bye]");
    assert!(st.fin_received());
    assert!(st.lost().is_some(), "{:?}", log.borrow());
}

/// Half-close; asks for the layer when the peer's FIN arrives, and does not close.
struct UpOnEofOpen {
    log: Log,
    upgraded: bool,
}

impl Protocol for UpOnEofOpen {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn half_close(&self) -> bool {
        true
    }
    fn read_connection_lost(&mut self, t: &mut dyn Transport) {
        push(&self.log, "old read_connection_lost");
        if !self.upgraded {
            self.upgraded = true;
            assert!(t.wrap_protocol(Layer::wrapper(&self.log)));
        }
    }
}

/// A layer installed after the peer's FIN (delivered to the old protocol) is told of it too,
/// after its `connection_made`: its read side is closed as well.
#[test]
fn a_layer_installed_after_the_peers_fin_is_told_of_it() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let proto = UpOnEofOpen {
        log: log.clone(),
        upgraded: false,
    };
    let st = StringTransport::connect(&mr, proto);
    st.feed_eof();
    assert_eq!(count(&log, "layer made"), 1);
    assert_eq!(
        count(&log, "layer read_connection_lost"),
        1,
        "{:?}",
        log.borrow()
    );
    let made = log.borrow().iter().position(|e| e == "layer made");
    let told = log
        .borrow()
        .iter()
        .position(|e| e == "layer read_connection_lost");
    assert!(made < told, "{:?}", log.borrow());
}

/// A layer that does not half-close, installed after the peer's FIN: the connection closes,
/// as it would for such a protocol on the FIN.
#[test]
fn a_layer_without_half_close_installed_after_the_peers_fin_closes() {
    struct Plain(Box<dyn Protocol>);
    impl Protocol for Plain {
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn connection_lost(&mut self, r: CloseReason) {
            self.0.connection_lost(r)
        }
    }
    struct Up;
    impl Protocol for Up {
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn half_close(&self) -> bool {
            true
        }
        fn read_connection_lost(&mut self, t: &mut dyn Transport) {
            assert!(t.wrap_protocol(Box::new(|old| Box::new(Plain(old)))));
        }
    }
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(&mr, Up);
    st.feed_eof();
    assert!(st.fin_received());
    assert!(
        matches!(st.lost(), Some(CloseReason::Done)),
        "{:?}",
        st.lost()
    );
}

/// Records its `connection_lost` and its drop.
struct Dropped(Log);

impl Protocol for Dropped {
    fn data_received(&mut self, t: &mut dyn Transport, _: &[u8]) {
        assert!(t.wrap_protocol(Box::new(|_old| panic!("wrapper failed"))));
    }
    fn connection_lost(&mut self, _: CloseReason) {
        push(&self.0, "old connection_lost");
    }
}

impl Drop for Dropped {
    fn drop(&mut self) {
        push(&self.0, "old dropped");
    }
}

/// A wrapper that panics aborts the connection with `Panic` (the port's or connector's hook
/// hears it); the protocol it consumed is dropped with it, without `connection_lost`.
#[test]
fn a_panicking_wrapper_aborts_the_connection() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let st = StringTransport::connect(&mr, Dropped(log.clone()));
    st.feed(b"x");
    assert!(
        matches!(st.lost(), Some(CloseReason::Panic(ref m)) if m.contains("wrapper failed")),
        "{:?}",
        st.lost()
    );
    assert!(st.reset_received());
    assert_eq!(*log.borrow(), vec!["old dropped".to_owned()]);
}

/// Checks `buffered` and `is_closing` between `wrap_protocol` and the swap.
struct Truthful(Log);

impl Protocol for Truthful {
    fn data_received(&mut self, t: &mut dyn Transport, _: &[u8]) {
        assert!(t.wrap_protocol(Layer::wrapper(&self.0)));
        t.write(b"abc");
        push(&self.0, &format!("buffered {}", t.buffered()));
        push(&self.0, &format!("closing {}", t.is_closing()));
        t.lose_connection();
        push(&self.0, &format!("closing {}", t.is_closing()));
        t.write(b"ignored");
        push(&self.0, &format!("buffered {}", t.buffered()));
    }
}

/// Between `wrap_protocol` and the swap, `buffered` counts the held writes and `is_closing`
/// is true after a held `lose_connection` (and writes after it are ignored, as they are then).
#[test]
fn held_writes_and_close_are_seen_by_buffered_and_is_closing() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let st = StringTransport::connect(&mr, Truthful(log.clone()));
    st.feed(b"x");
    let got: Vec<String> = log
        .borrow()
        .iter()
        .filter(|e| !e.starts_with("layer"))
        .cloned()
        .collect();
    assert_eq!(
        got,
        ["buffered 3", "closing false", "closing true", "buffered 3"]
    );
    assert_eq!(st.take(), b"[abc]");
    assert!(st.fin_received());
}

/// A pull producer that writes 100 bytes each time it is asked (through a handle).
struct Chunks {
    log: Log,
    t: TransportHandle,
}

impl Producer for Chunks {
    fn resume_producing(&mut self) {
        push(&self.log, "producer resume");
        self.t.write(&[b'x'; 100]);
    }
}

struct RegistersChunks(Log);

impl Protocol for RegistersChunks {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let p = Chunks {
            log: self.0.clone(),
            t: t.handle(),
        };
        t.register_producer(Box::new(p), false);
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        if d == b"UP" {
            assert!(t.wrap_protocol(Layer::wrapper(&self.0)));
        }
    }
}

/// A pull producer handed to the layer while its chunk still waits in the buffer is not asked
/// again until the buffer drained.
#[test]
fn a_pull_producer_handed_over_is_asked_only_once_the_buffer_drained() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let options = MemoryOptions {
        capacity: 16,
        ..MemoryOptions::default()
    };
    let st = StringTransport::with_options(&mr, RegistersChunks(log.clone()), options);
    assert_eq!(count(&log, "producer resume"), 1);
    st.feed(b"UP");
    assert_eq!(count(&log, "layer register_producer"), 1);
    assert_eq!(
        count(&log, "producer resume"),
        1,
        "asked while its chunk is buffered: {:?}",
        log.borrow()
    );
    let mut got = Vec::new();
    while got.len() < 100 {
        got.extend(st.take());
    }
    assert_eq!(got[..100], [b'x'; 100]);
    assert_eq!(count(&log, "producer resume"), 2, "{:?}", log.borrow());
}

/// A layer whose `connection_made` aborts.
struct AbortingLayer(Log);

impl Protocol for AbortingLayer {
    fn connection_made(&mut self, raw: &mut dyn Transport) {
        raw.abort_connection();
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn connection_lost(&mut self, r: CloseReason) {
        push(&self.0, &format!("layer lost {r:?}"));
    }
}

/// A swap made outside any callback (from a timer, through a handle): what the layer's
/// `connection_made` leads to (here `connection_lost`) is still delivered.
#[test]
fn a_swap_from_outside_callbacks_delivers_what_the_layer_caused() {
    struct Idle;
    impl Protocol for Idle {
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let mr = MemoryReactor::new();
    let log = Log::default();
    let st = StringTransport::connect(&mr, Idle);
    let l = log.clone();
    assert!(st
        .transport()
        .wrap_protocol(Box::new(move |_old| Box::new(AbortingLayer(l)))));
    mr.run_until_idle();
    assert_eq!(count(&log, "layer lost Aborted"), 1, "{:?}", log.borrow());
    assert!(
        matches!(st.lost(), Some(CloseReason::Aborted)),
        "{:?}",
        st.lost()
    );
}
