//! The test kit itself: [`StringTransport`], [`connect_pair`] and the transport semantics they
//! expose (chunking, half-close, resets, panics, flow control, producers, close timeouts).
//!
//! These run the very connection state machine that serves TCP and Unix sockets, so what holds
//! here holds on a real reactor.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::testing::{connect_pair, MemoryOptions, MemoryReactor, StringTransport};
use torsion_reactor::{
    CloseReason, ConnectionConfig, Producer, Protocol, Transport, TransportHandle,
};

/// Default pipe capacity of the test kit (the "socket buffer").
const PIPE_CAPACITY: usize = 256 * 1024;
/// Default largest read.
const CHUNK: usize = 64 * 1024;

/// A repeating, non-trivial byte pattern (so reordering or loss shows).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Everything a [`Recorder`] protocol saw.
#[derive(Default)]
struct Events {
    made: u32,
    data: Vec<u8>,
    chunks: usize,
    read_lost: u32,
    write_lost: u32,
    paused: u32,
    resumed: u32,
    lost: Vec<CloseReason>,
}

type Shared = Rc<RefCell<Events>>;

/// A configurable test protocol that records every callback.
#[derive(Default)]
struct Recorder {
    events: Shared,
    /// Write back what arrives.
    echo: bool,
    /// Opt in to half-close.
    half_close: bool,
    /// Ignore `pause_producing` (keep reading and writing).
    ignore_pause: bool,
    /// Panic when this arrives (the chunk containing it).
    panic_on: Option<&'static [u8]>,
}

impl Recorder {
    fn new() -> (Self, Shared) {
        let r = Recorder::default();
        let events = r.events.clone();
        (r, events)
    }

    fn echo() -> (Self, Shared) {
        let (mut r, e) = Self::new();
        r.echo = true;
        (r, e)
    }
}

impl Protocol for Recorder {
    fn connection_made(&mut self, _transport: &mut dyn Transport) {
        self.events.borrow_mut().made += 1;
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        {
            let mut e = self.events.borrow_mut();
            e.data.extend_from_slice(data);
            e.chunks += 1;
        }
        if let Some(needle) = self.panic_on {
            if data.windows(needle.len()).any(|w| w == needle) {
                panic!(
                    "test protocol refuses {:?}",
                    String::from_utf8_lossy(needle)
                );
            }
        }
        if self.echo {
            transport.write(data);
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.events.borrow_mut().lost.push(reason);
    }

    fn half_close(&self) -> bool {
        self.half_close
    }

    fn read_connection_lost(&mut self, transport: &mut dyn Transport) {
        self.events.borrow_mut().read_lost += 1;
        if self.half_close {
            // Keep the connection open for writing: the test closes it later.
            transport.write(b"got your FIN\n");
        } else {
            transport.lose_connection();
        }
    }

    fn write_connection_lost(&mut self, _transport: &mut dyn Transport) {
        self.events.borrow_mut().write_lost += 1;
    }

    fn pause_producing(&mut self, transport: &mut dyn Transport) {
        self.events.borrow_mut().paused += 1;
        if !self.ignore_pause {
            transport.pause_reading();
        }
    }

    fn resume_producing(&mut self, transport: &mut dyn Transport) {
        self.events.borrow_mut().resumed += 1;
        if !self.ignore_pause {
            transport.resume_reading();
        }
    }
}

#[test]
fn one_byte_chunks_deliver_the_same_bytes() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::echo();
    let st = StringTransport::with_options(&mr, proto, MemoryOptions::chunked(1));
    let data = pattern(3000);
    assert_eq!(st.feed(&data), data.len());
    assert_eq!(st.take(), data, "echoed intact");
    let e = events.borrow();
    assert_eq!(e.data, data, "received intact");
    assert_eq!(e.chunks, data.len(), "one data_received per byte");
    assert_eq!(e.made, 1);
    assert!(e.lost.is_empty());
}

#[test]
fn chunk_size_bounds_every_read() {
    for chunk in [1, 7, 1000, CHUNK] {
        let mr = MemoryReactor::new();
        let (proto, events) = Recorder::echo();
        let st = StringTransport::with_options(&mr, proto, MemoryOptions::chunked(chunk));
        let data = pattern(10_000);
        st.feed(&data);
        assert_eq!(st.take(), data, "chunk {chunk}");
        let e = events.borrow();
        assert!(
            e.chunks >= data.len().div_ceil(chunk),
            "chunk {chunk}: {} reads",
            e.chunks
        );
    }
}

#[test]
fn peer_fin_without_half_close_closes_cleanly() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::echo();
    let st = StringTransport::connect(&mr, proto);
    st.feed(b"last words");
    st.feed_eof();
    assert_eq!(st.take(), b"last words", "pending data is still flushed");
    assert!(st.fin_received());
    assert!(
        matches!(st.lost(), Some(CloseReason::Done)),
        "{:?}",
        st.lost()
    );
    let e = events.borrow();
    assert_eq!(e.read_lost, 0, "no half-close callback without opting in");
    assert!(matches!(e.lost[..], [CloseReason::Done]));
}

#[test]
fn half_close_protocol_sees_read_connection_lost_and_keeps_writing() {
    let mr = MemoryReactor::new();
    let (mut proto, events) = Recorder::new();
    proto.half_close = true;
    let st = StringTransport::connect(&mr, proto);
    st.feed(b"request");
    st.feed_eof();
    assert_eq!(events.borrow().read_lost, 1);
    assert!(st.lost().is_none(), "still open for writing");
    assert!(!st.transport().is_closing());
    assert_eq!(st.take(), b"got your FIN\n");

    // The protocol side goes on writing after the peer's FIN.
    st.transport().write(b"response, part 2");
    assert_eq!(st.take(), b"response, part 2");
    assert!(!st.fin_received());

    // Calls on the transport itself do not turn the reactor: the test does.
    st.transport().lose_connection();
    mr.run_until_idle();
    assert!(st.fin_received());
    assert!(
        matches!(st.lost(), Some(CloseReason::Done)),
        "{:?}",
        st.lost()
    );
    let e = events.borrow();
    assert_eq!(e.data, b"request");
    assert_eq!(e.read_lost, 1);
    assert_eq!(e.lost.len(), 1);
}

#[test]
fn half_close_protocol_can_answer_fin_with_its_own_fin() {
    let mr = MemoryReactor::new();
    let (mut proto, events) = Recorder::new();
    proto.half_close = true;
    let st = StringTransport::connect(&mr, proto);
    st.feed_eof();
    assert_eq!(st.take(), b"got your FIN\n");
    // Both directions are now shut: the connection is done.
    st.transport().lose_write_connection();
    mr.run_until_idle();
    assert!(st.fin_received());
    assert!(
        matches!(st.lost(), Some(CloseReason::Done)),
        "{:?}",
        st.lost()
    );
    assert_eq!(events.borrow().lost.len(), 1);
}

#[test]
fn lose_connection_flushes_everything_before_fin() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    let data = pattern(3 * PIPE_CAPACITY);
    st.transport().write(&data);
    st.transport().lose_connection();
    assert!(st.transport().is_closing());
    st.transport()
        .write(b"ignored: written after lose_connection");
    let mut out = Vec::new();
    while !st.fin_received() {
        let got = st.take();
        assert!(!got.is_empty(), "stalled before FIN");
        out.extend(got);
    }
    assert!(
        out == data,
        "all buffered data arrives before FIN, and nothing after it"
    );
    assert!(st.lost().is_none(), "waiting for the peer's FIN");
    st.feed_eof();
    assert!(
        matches!(st.lost(), Some(CloseReason::Done)),
        "{:?}",
        st.lost()
    );
    assert_eq!(events.borrow().lost.len(), 1);
}

#[test]
fn lose_write_connection_sends_fin_and_keeps_reading() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    st.transport().write(b"all I have to say");
    st.transport().lose_write_connection();
    assert!(st.transport().is_closing(), "no more writes");
    assert_eq!(st.take(), b"all I have to say");
    assert!(st.fin_received());
    assert_eq!(events.borrow().write_lost, 1);

    st.feed(b"the peer still talks");
    assert_eq!(events.borrow().data, b"the peer still talks");
    assert!(st.lost().is_none());
    st.feed_eof();
    assert!(
        matches!(st.lost(), Some(CloseReason::Done)),
        "{:?}",
        st.lost()
    );
}

#[test]
fn peer_reset_gives_close_reason_reset() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::echo();
    let st = StringTransport::connect(&mr, proto);
    st.feed(b"hello");
    st.reset();
    assert!(
        matches!(st.lost(), Some(CloseReason::Reset)),
        "{:?}",
        st.lost()
    );
    assert!(matches!(events.borrow().lost[..], [CloseReason::Reset]));
    // Writes after the close are ignored, not errors.
    st.transport().write(b"ignored");
    assert!(st.transport().is_closing());
}

#[test]
fn abort_connection_resets_the_peer() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    st.transport().abort_connection();
    assert!(st.reset_received(), "the reset is immediate");
    assert!(
        st.lost().is_none(),
        "connection_lost is never run inside the call"
    );
    mr.run_until_idle();
    assert!(
        matches!(st.lost(), Some(CloseReason::Aborted)),
        "{:?}",
        st.lost()
    );
    assert_eq!(events.borrow().lost.len(), 1);
}

#[test]
fn connection_lost_runs_exactly_once() {
    type Scenario = fn(&StringTransport);
    let scenarios: [(&str, Scenario); 5] = [
        ("lose, then peer FIN, then reset", |st| {
            st.transport().lose_connection();
            st.feed_eof();
            st.reset();
            st.transport().abort_connection();
        }),
        ("abort twice, then lose", |st| {
            st.transport().abort_connection();
            st.transport().abort_connection();
            st.transport().lose_connection();
            st.feed_eof();
        }),
        ("peer FIN, then peer reset", |st| {
            st.feed_eof();
            st.reset();
        }),
        ("reset, then everything", |st| {
            st.reset();
            st.transport().lose_connection();
            st.transport().lose_write_connection();
            st.transport().abort_connection();
            st.feed_eof();
        }),
        ("lose with data pending, abort before the flush", |st| {
            st.transport().write(&pattern(2 * PIPE_CAPACITY));
            st.transport().lose_connection();
            st.transport().abort_connection();
            st.take();
        }),
    ];
    for (name, scenario) in scenarios {
        let mr = MemoryReactor::new();
        let (proto, events) = Recorder::echo();
        let st = StringTransport::connect(&mr, proto);
        scenario(&st);
        mr.advance(Duration::from_secs(120)); // past every close timeout
        let e = events.borrow();
        assert_eq!(
            e.lost.len(),
            1,
            "{name}: connection_lost calls: {:?}",
            e.lost
        );
        assert!(st.lost().is_some(), "{name}");
    }
}

#[test]
fn panic_in_data_received_aborts_with_the_message() {
    let mr = MemoryReactor::new();
    let (mut proto, events) = Recorder::echo();
    proto.panic_on = Some(b"boom");
    let st = StringTransport::connect(&mr, proto);
    st.feed(b"fine");
    assert_eq!(st.take(), b"fine");
    st.feed(b"boom");
    match st.lost() {
        Some(CloseReason::Panic(msg)) => {
            assert!(msg.contains("test protocol refuses \"boom\""), "{msg}")
        }
        other => panic!("expected CloseReason::Panic, got {other:?}"),
    }
    assert!(st.reset_received(), "the peer sees a reset");
    let e = events.borrow();
    assert_eq!(e.lost.len(), 1, "connection_lost still runs, once");
    assert!(matches!(e.lost[0], CloseReason::Panic(_)));
}

/// Panics as soon as it is connected.
struct PanicOnConnect {
    lost: Rc<RefCell<Vec<CloseReason>>>,
}

impl Protocol for PanicOnConnect {
    fn connection_made(&mut self, _transport: &mut dyn Transport) {
        panic!("cannot start (expected by this test)");
    }

    fn data_received(&mut self, _transport: &mut dyn Transport, _data: &[u8]) {
        unreachable!("never connected");
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.lost.borrow_mut().push(reason);
    }
}

#[test]
fn panic_in_connection_made_aborts_with_the_message() {
    let mr = MemoryReactor::new();
    let lost = Rc::new(RefCell::new(Vec::new()));
    let st = StringTransport::connect(&mr, PanicOnConnect { lost: lost.clone() });
    match st.lost() {
        Some(CloseReason::Panic(msg)) => assert!(msg.contains("cannot start"), "{msg}"),
        other => panic!("expected CloseReason::Panic, got {other:?}"),
    }
    assert!(st.reset_received());
    assert_eq!(lost.borrow().len(), 1, "connection_lost still runs, once");
    st.feed(b"nobody listens");
    assert_eq!(lost.borrow().len(), 1);
}

#[test]
fn slow_reader_pauses_the_protocol_and_bounds_the_buffer() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::echo();
    let st = StringTransport::connect(&mr, proto);
    let config = ConnectionConfig::default();
    let data = pattern(4 * PIPE_CAPACITY);

    // The test does not take(): the echo fills the pipe towards the test, then its write
    // buffer, then pauses; the pipe towards it fills and `feed` stops accepting.
    let accepted = st.feed(&data);
    assert!(
        accepted < data.len(),
        "feed stopped: the protocol stopped reading"
    );
    assert_eq!(events.borrow().paused, 1, "pause_producing called once");
    assert_eq!(events.borrow().resumed, 0);
    let buffered = st.transport().buffered();
    assert!(
        buffered > config.high_watermark && buffered <= config.high_watermark + CHUNK,
        "write buffer bounded by the high watermark + one chunk: {buffered}"
    );
    assert!(st.pending() <= PIPE_CAPACITY);
    // Nothing moves while the test does not read.
    mr.advance(Duration::from_secs(1));
    assert_eq!(st.transport().buffered(), buffered);

    // Reading makes room: the protocol resumes and everything arrives, in order.
    let mut echoed = st.take();
    assert!(
        events.borrow().resumed >= 1,
        "resume_producing after taking"
    );
    let mut sent = accepted;
    while echoed.len() < data.len() {
        if sent < data.len() {
            sent += st.feed(&data[sent..]);
        }
        let before = echoed.len();
        echoed.extend(st.take());
        assert!(st.transport().buffered() <= config.high_watermark + CHUNK);
        assert!(echoed.len() > before || sent < data.len(), "stalled");
    }
    assert_eq!(echoed, data);
    let e = events.borrow();
    assert_eq!(e.paused, e.resumed, "every pause was followed by a resume");
    assert!(e.lost.is_empty());
}

#[test]
fn write_buffer_limits_can_be_changed_on_a_live_connection() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::echo();
    let st = StringTransport::connect(&mr, proto);
    // The pipe towards the test takes PIPE_CAPACITY; 8 KiB more stay buffered, well under
    // the default 64 KiB high watermark.
    st.feed(&pattern(PIPE_CAPACITY + 8 * 1024));
    assert_eq!(st.transport().buffered(), 8 * 1024);
    assert_eq!(events.borrow().paused, 0);

    let invalid = st.transport().set_write_buffer_limits(1024, 4096);
    assert_eq!(
        invalid.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::InvalidInput)
    );
    // Lowering the high watermark under what is buffered pauses the protocol at once.
    st.transport().set_write_buffer_limits(4096, 0).unwrap();
    mr.run_until_idle();
    assert_eq!(events.borrow().paused, 1);
    // It resumes only once the buffer is empty (low watermark 0).
    let mut echoed = st.take();
    echoed.extend(st.take());
    assert_eq!(echoed, pattern(PIPE_CAPACITY + 8 * 1024));
    assert_eq!(st.transport().buffered(), 0);
    assert_eq!(events.borrow().resumed, 1);
    // The new limits stay: a buffer of 5 KiB (over 4 KiB) pauses again.
    st.feed(&pattern(PIPE_CAPACITY + 5 * 1024));
    assert_eq!(events.borrow().paused, 2);
}

#[test]
fn write_buffer_hard_limit_aborts_a_protocol_that_ignores_pause() {
    let mr = MemoryReactor::new();
    let (mut proto, events) = Recorder::echo();
    proto.ignore_pause = true;
    let limit = 16 * 1024;
    let options = MemoryOptions {
        capacity: 1024,
        config: ConnectionConfig {
            high_watermark: 4 * 1024,
            low_watermark: 1024,
            max_write_buffer: limit,
            ..ConnectionConfig::default()
        },
        ..MemoryOptions::default()
    };
    let st = StringTransport::with_options(&mr, proto, options);
    st.feed(&pattern(64 * 1024));
    match st.lost() {
        Some(CloseReason::WriteBufferOverflow { limit: l }) => assert_eq!(l, limit),
        other => panic!("expected WriteBufferOverflow, got {other:?}"),
    }
    assert!(st.reset_received(), "the connection was aborted");
    let e = events.borrow();
    assert!(e.paused >= 1, "it was asked to pause first");
    assert!(e.data.len() > limit, "it kept reading");
    assert_eq!(e.lost.len(), 1);
}

/// Counters of a test producer.
#[derive(Default)]
struct ProducerLog {
    resumed: u32,
    paused: u32,
    stopped: u32,
}

/// A pull producer: writes one chunk per `resume_producing`, `chunks` times, then unregisters
/// and closes the connection.
struct PullProducer {
    transport: TransportHandle,
    log: Rc<RefCell<ProducerLog>>,
    data: Rc<Vec<u8>>,
    chunk: usize,
    sent: usize,
}

impl Producer for PullProducer {
    fn resume_producing(&mut self) {
        self.log.borrow_mut().resumed += 1;
        let end = (self.sent + self.chunk).min(self.data.len());
        self.transport.write(&self.data[self.sent..end]);
        self.sent = end;
        if self.sent == self.data.len() {
            self.transport.unregister_producer();
            self.transport.lose_connection();
        }
    }

    fn pause_producing(&mut self) {
        self.log.borrow_mut().paused += 1;
    }

    fn stop_producing(&mut self) {
        self.log.borrow_mut().stopped += 1;
    }
}

#[test]
fn pull_producer_is_asked_for_more_as_the_buffer_drains() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    let chunk = 100 * 1024;
    let data = Rc::new(pattern(10 * chunk));
    let log = Rc::new(RefCell::new(ProducerLog::default()));
    st.transport().register_producer(
        Box::new(PullProducer {
            transport: st.transport().clone(),
            log: log.clone(),
            data: data.clone(),
            chunk,
            sent: 0,
        }),
        false,
    );
    mr.run_until_idle();
    // Asked once at registration, and again while each chunk went straight into the pipe;
    // once the pipe is full, the rest waits in the buffer and the producer is left alone.
    let asked = log.borrow().resumed;
    assert!(asked >= 1, "resume_producing at registration");
    assert!(
        asked as usize <= PIPE_CAPACITY / chunk + 1,
        "not asked while the buffer holds data ({asked} calls)"
    );
    assert!(st.transport().buffered() <= chunk);
    mr.advance(Duration::from_secs(1));
    assert_eq!(log.borrow().resumed, asked, "no reading, no asking");

    let mut out = Vec::new();
    while !st.fin_received() {
        let got = st.take();
        assert!(!got.is_empty() || st.fin_received(), "stalled");
        out.extend(got);
        assert!(st.transport().buffered() <= chunk, "one chunk at most");
    }
    assert_eq!(out.len(), data.len());
    assert!(out == *data, "in order");
    let log = log.borrow();
    assert_eq!(log.resumed, 10, "one call per chunk");
    assert_eq!(log.paused, 0, "pull producers are never paused");
    assert_eq!(log.stopped, 0, "unregistered, not stopped");
    st.feed_eof();
    assert!(
        matches!(st.lost(), Some(CloseReason::Done)),
        "{:?}",
        st.lost()
    );
    assert_eq!(events.borrow().lost.len(), 1);
}

/// A push producer that only records; the test writes for it and honours `paused`.
struct PushProducer {
    log: Rc<RefCell<ProducerLog>>,
    paused: Rc<Cell<bool>>,
}

impl Producer for PushProducer {
    fn pause_producing(&mut self) {
        self.log.borrow_mut().paused += 1;
        self.paused.set(true);
    }

    fn resume_producing(&mut self) {
        self.log.borrow_mut().resumed += 1;
        self.paused.set(false);
    }

    fn stop_producing(&mut self) {
        self.log.borrow_mut().stopped += 1;
    }
}

#[test]
fn push_producer_is_paused_above_the_high_watermark_and_resumed_below_the_low() {
    let mr = MemoryReactor::new();
    let (proto, _events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    let config = ConnectionConfig::default();
    let log = Rc::new(RefCell::new(ProducerLog::default()));
    let paused = Rc::new(Cell::new(false));
    st.transport().register_producer(
        Box::new(PushProducer {
            log: log.clone(),
            paused: paused.clone(),
        }),
        true,
    );
    mr.run_until_idle();
    assert_eq!(log.borrow().resumed, 0, "push producers are not pulled");

    // Produce until told to pause.
    let piece = pattern(8 * 1024);
    let mut written = 0;
    while !paused.get() {
        st.transport().write(&piece);
        written += piece.len();
        mr.run_until_idle();
        assert!(written <= 4 * PIPE_CAPACITY, "never paused");
    }
    assert_eq!(log.borrow().paused, 1);
    let buffered = st.transport().buffered();
    assert!(buffered > config.high_watermark, "{buffered}");
    assert!(
        buffered <= config.high_watermark + piece.len(),
        "{buffered}"
    );

    // The reader drains the pipe: the buffer falls below the low watermark, production resumes.
    let mut out = st.take();
    assert!(!paused.get(), "resumed after the buffer drained");
    assert_eq!(log.borrow().resumed, 1);
    assert!(st.transport().buffered() <= config.low_watermark);
    out.extend(st.take());
    assert_eq!(out.len(), written);

    // The connection closes: the producer is stopped once.
    st.reset();
    assert_eq!(log.borrow().stopped, 1);
}

#[test]
fn registering_a_producer_on_a_paused_transport_pauses_it() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    st.transport().write(&pattern(PIPE_CAPACITY + 100 * 1024));
    mr.run_until_idle();
    let log = Rc::new(RefCell::new(ProducerLog::default()));
    let paused = Rc::new(Cell::new(false));
    st.transport().register_producer(
        Box::new(PushProducer {
            log: log.clone(),
            paused: paused.clone(),
        }),
        true,
    );
    mr.run_until_idle();
    assert!(
        paused.get(),
        "told to pause: the buffer is above the high watermark"
    );
    assert_eq!(
        events.borrow().paused,
        1,
        "the protocol, paused before, is not paused a second time"
    );
    st.take();
    assert!(!paused.get());
    assert_eq!(events.borrow().resumed, 1);
    st.transport().unregister_producer();
    st.reset();
    assert_eq!(
        log.borrow().stopped,
        0,
        "unregistered producers are not stopped"
    );
}

/// A producer that unregisters itself when stopped (cleanup code often does).
struct SelfUnregistering {
    transport: TransportHandle,
    stopped: Rc<Cell<bool>>,
}

impl Producer for SelfUnregistering {
    fn resume_producing(&mut self) {}

    fn stop_producing(&mut self) {
        self.transport.unregister_producer();
        self.stopped.set(true);
    }
}

#[test]
fn a_producer_may_unregister_itself_when_stopped() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    let stopped = Rc::new(Cell::new(false));
    st.transport().register_producer(
        Box::new(SelfUnregistering {
            transport: st.transport().clone(),
            stopped: stopped.clone(),
        }),
        true,
    );
    st.transport().abort_connection();
    mr.run_until_idle();
    assert!(stopped.get(), "stop_producing ran to its end");
    let e = events.borrow();
    assert!(
        matches!(e.lost.as_slice(), [CloseReason::Aborted]),
        "connection_lost once, with the abort: {:?}",
        e.lost
    );
}

/// A pull producer that writes once, then hands over to a successor from inside its call.
struct HandOver {
    transport: TransportHandle,
    log: Rc<RefCell<Vec<&'static str>>>,
    /// Unregister the successor again, in the same call.
    then_unregister: bool,
}

impl Producer for HandOver {
    fn resume_producing(&mut self) {
        self.log.borrow_mut().push("first resumed");
        self.transport.write(b"first ");
        self.transport.register_producer(
            Box::new(PullProducer {
                transport: self.transport.clone(),
                log: Rc::default(),
                data: Rc::new(b"second".to_vec()),
                chunk: 6,
                sent: 0,
            }),
            false,
        );
        if self.then_unregister {
            self.transport.unregister_producer();
        }
    }

    fn stop_producing(&mut self) {
        self.log.borrow_mut().push("first stopped");
    }
}

/// Registers a [`HandOver`] producer and runs until idle: what was written, and its log.
fn hand_over(then_unregister: bool) -> (Vec<u8>, Vec<&'static str>) {
    let mr = MemoryReactor::new();
    let (proto, _events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    let log = Rc::new(RefCell::new(Vec::new()));
    st.transport().register_producer(
        Box::new(HandOver {
            transport: st.transport().clone(),
            log: log.clone(),
            then_unregister,
        }),
        false,
    );
    mr.run_until_idle();
    let written = st.take();
    let log = log.borrow().clone();
    (written, log)
}

#[test]
fn a_producer_replaced_from_inside_its_own_call_is_stopped_once() {
    let (written, log) = hand_over(false);
    assert_eq!(written, b"first second");
    assert_eq!(log, vec!["first resumed", "first stopped"]);
}

#[test]
fn a_producer_replaced_then_unregistered_inside_its_call_is_still_stopped() {
    let (written, log) = hand_over(true);
    assert_eq!(written, b"first ");
    assert_eq!(log, vec!["first resumed", "first stopped"]);
}

#[test]
fn lose_connection_times_out_when_the_peer_never_sends_fin() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    st.transport().write(b"bye");
    st.transport().lose_connection();
    assert_eq!(st.take(), b"bye");
    assert!(st.fin_received(), "our FIN was sent");
    assert!(st.lost().is_none(), "waiting for the peer's FIN");

    let timeout = ConnectionConfig::default().close_timeout;
    assert_eq!(timeout, Duration::from_secs(30));
    mr.advance(timeout - Duration::from_millis(1));
    assert!(st.lost().is_none(), "not before the close timeout");
    mr.advance(Duration::from_millis(1));
    assert!(
        matches!(st.lost(), Some(CloseReason::CloseTimedOut)),
        "{:?}",
        st.lost()
    );
    assert!(st.reset_received(), "aborted");
    assert_eq!(events.borrow().lost.len(), 1);
}

#[test]
fn lose_connection_times_out_when_the_peer_never_reads() {
    let mr = MemoryReactor::new();
    let (proto, _events) = Recorder::new();
    let options = MemoryOptions {
        config: ConnectionConfig {
            close_timeout: Duration::from_secs(5),
            ..ConnectionConfig::default()
        },
        ..MemoryOptions::default()
    };
    let st = StringTransport::with_options(&mr, proto, options);
    st.transport().write(&pattern(2 * PIPE_CAPACITY));
    st.transport().lose_connection();
    assert!(
        st.transport().buffered() > 0,
        "cannot flush: the peer does not read"
    );
    mr.advance(Duration::from_secs(5));
    assert!(
        matches!(st.lost(), Some(CloseReason::CloseTimedOut)),
        "{:?}",
        st.lost()
    );
}

#[test]
fn graceful_close_completes_when_the_peer_answers_fin() {
    let mr = MemoryReactor::new();
    let (proto, _events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    st.transport().lose_connection();
    assert!(st.fin_received());
    st.feed_eof();
    assert!(
        matches!(st.lost(), Some(CloseReason::Done)),
        "{:?}",
        st.lost()
    );
    // The close timer was cancelled: nothing else happens later.
    mr.advance(Duration::from_secs(60));
    assert!(matches!(st.lost(), Some(CloseReason::Done)));
}

/// A client that writes a greeting and closes once it has read the echo.
struct Greeter {
    greeting: &'static [u8],
    got: Rc<RefCell<Vec<u8>>>,
}

impl Protocol for Greeter {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        transport.write(self.greeting);
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.got.borrow_mut().extend_from_slice(data);
        if self.got.borrow().len() >= self.greeting.len() {
            transport.lose_connection();
        }
    }
}

#[test]
fn connect_pair_connects_two_protocols() {
    for chunk in [1, 3, CHUNK] {
        let mr = MemoryReactor::new();
        let got = Rc::new(RefCell::new(Vec::new()));
        let client = Greeter {
            greeting: b"hello, server",
            got: got.clone(),
        };
        let (server, server_events) = Recorder::echo();
        let pair = connect_pair(mr.reactor(), client, server, MemoryOptions::chunked(chunk));
        assert_ne!(pair.client.local_address(), pair.server.local_address());
        assert_eq!(pair.client.peer_address(), pair.server.local_address());
        assert_eq!(pair.server.peer_address(), pair.client.local_address());
        mr.run_until_idle();
        assert_eq!(*got.borrow(), b"hello, server", "chunk {chunk}");
        assert!(
            matches!(pair.client_lost(), Some(CloseReason::Done)),
            "chunk {chunk}"
        );
        assert!(
            matches!(pair.server_lost(), Some(CloseReason::Done)),
            "chunk {chunk}"
        );
        assert_eq!(server_events.borrow().lost.len(), 1);
    }
}

#[test]
fn connect_pair_server_panic_resets_the_client() {
    let mr = MemoryReactor::new();
    let got = Rc::new(RefCell::new(Vec::new()));
    let client = Greeter {
        greeting: b"boom",
        got: got.clone(),
    };
    let (mut server, _events) = Recorder::echo();
    server.panic_on = Some(b"boom");
    let pair = connect_pair(mr.reactor(), client, server, MemoryOptions::default());
    mr.run_until_idle();
    assert!(matches!(pair.server_lost(), Some(CloseReason::Panic(_))));
    assert!(
        matches!(pair.client_lost(), Some(CloseReason::Reset)),
        "{:?}",
        pair.client_lost()
    );
    assert!(got.borrow().is_empty());
}

/// Echoes until it receives `UPGRADE`, then asks to be wrapped by [`Shouting`].
struct Upgradable {
    made: Rc<Cell<u32>>,
}

impl Protocol for Upgradable {
    fn connection_made(&mut self, _transport: &mut dyn Transport) {
        self.made.set(self.made.get() + 1);
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        if data == b"UPGRADE" {
            transport.write(b"OK");
            let made = self.made.clone();
            assert!(transport.wrap_protocol(Box::new(move |inner| {
                Box::new(Shouting { inner, made }) as Box<dyn Protocol>
            })));
            assert!(
                !transport.wrap_protocol(Box::new(|p| p)),
                "one swap at a time"
            );
            // Held until the swap, then written as it is (`Shouting` takes no handles over).
            transport.write(b";held");
        } else {
            transport.write(data);
        }
    }
}

/// A layer that upper-cases what it receives before passing it to the wrapped protocol.
struct Shouting {
    inner: Box<dyn Protocol>,
    made: Rc<Cell<u32>>,
}

impl Protocol for Shouting {
    fn connection_made(&mut self, _transport: &mut dyn Transport) {
        // The layer's own start; the wrapped protocol was made long ago.
        self.made.set(self.made.get() + 10);
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.inner
            .data_received(transport, &data.to_ascii_uppercase());
    }
}

#[test]
fn wrap_protocol_swaps_the_protocol_between_callbacks() {
    let mr = MemoryReactor::new();
    let made = Rc::new(Cell::new(0));
    let st = StringTransport::connect(&mr, Upgradable { made: made.clone() });
    st.feed(b"quiet");
    assert_eq!(st.take(), b"quiet");
    let handle = st.transport().handle(); // a handle taken before the swap stays usable
    st.feed(b"UPGRADE");
    assert_eq!(
        st.take(),
        b"OK;held",
        "bytes written before and after wrap_protocol go out unchanged"
    );
    handle.write(b"via the old handle");
    assert_eq!(st.take(), b"via the old handle");
    assert_eq!(
        made.get(),
        11,
        "the new layer's connection_made ran once, after the swap"
    );
    st.feed(b"loud");
    assert_eq!(
        st.take(),
        b"LOUD",
        "the wrapper now sits in front of the old protocol"
    );
    st.transport().lose_connection();
    assert!(
        !st.transport().wrap_protocol(Box::new(|p| p)),
        "a closing transport refuses to swap"
    );
}

#[test]
fn an_abort_is_a_reset_not_a_fin() {
    let mr = MemoryReactor::new();
    let (proto, _events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    st.transport().abort_connection();
    mr.run_until_idle();
    assert!(st.reset_received());
    assert!(!st.fin_received(), "an aborted connection sent no FIN");
}

#[test]
fn the_tests_own_reset_is_not_a_reset_received() {
    let mr = MemoryReactor::new();
    let (proto, _events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    st.reset();
    assert!(matches!(st.lost(), Some(CloseReason::Reset)));
    assert!(!st.reset_received(), "the protocol side did not abort");
}

/// A producer that panics when stopped; in `resume_producing` it may hand over to a
/// successor like it (from inside its own call).
struct StopBomb {
    transport: TransportHandle,
    hand_over: bool,
}

impl Producer for StopBomb {
    fn resume_producing(&mut self) {
        if std::mem::take(&mut self.hand_over) {
            self.transport.register_producer(
                Box::new(StopBomb {
                    transport: self.transport.clone(),
                    hand_over: false,
                }),
                true,
            );
        }
    }

    fn stop_producing(&mut self) {
        panic!("stop boom");
    }
}

/// A producer replaced from inside its own call is stopped when the call returns, on the
/// connection's deferred delivery (here the pull re-ask, from the reactor's queue): a panic
/// in that `stop_producing` costs the connection, aborted with `Panic`. (It escaped the
/// transport's guard: the reactor's queue only logged it, the connection stayed open, and
/// from a readiness event it would have ended the reactor's run.)
#[test]
fn a_panic_stopping_a_producer_replaced_in_its_own_call_aborts_the_connection() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    st.transport().register_producer(
        Box::new(StopBomb {
            transport: st.transport().clone(),
            hand_over: true,
        }),
        false,
    );
    mr.run_until_idle();
    assert!(st.reset_received(), "aborted");
    let e = events.borrow();
    assert!(
        matches!(e.lost.as_slice(), [CloseReason::Panic(m)] if m.starts_with("stop boom (at ")),
        "{:?}",
        e.lost
    );
}

/// `register_producer` through a handle outside any callback (a timer) stops the producer
/// it replaces: a panic there costs the connection, aborted with `Panic`, as a producer's
/// panic in any call the transport makes. (It reached the timer's generic guard: logged, the
/// connection left open with the new producer in its slot but not registered.)
#[test]
fn a_panic_stopping_a_producer_replaced_from_a_timer_aborts_the_connection() {
    let mr = MemoryReactor::new();
    let (proto, events) = Recorder::new();
    let st = StringTransport::connect(&mr, proto);
    let t = st.transport().clone();
    t.register_producer(
        Box::new(StopBomb {
            transport: t.clone(),
            hand_over: false,
        }),
        true,
    );
    mr.run_until_idle();
    let h = t.clone();
    let _timer = mr.reactor().call_later(Duration::from_secs(1), move |_| {
        h.register_producer(
            Box::new(PullProducer {
                transport: h.clone(),
                log: Rc::default(),
                data: Rc::new(b"x".to_vec()),
                chunk: 1,
                sent: 0,
            }),
            false,
        );
    });
    mr.advance(Duration::from_secs(2));
    assert!(st.reset_received(), "aborted");
    let e = events.borrow();
    assert!(
        matches!(e.lost.as_slice(), [CloseReason::Panic(m)] if m.starts_with("stop boom (at ")),
        "{:?}",
        e.lost
    );
}

#[test]
fn advancing_by_a_huge_duration_saturates_instead_of_panicking() {
    let mr = MemoryReactor::new();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    let _timer = mr
        .reactor()
        .call_later(Duration::from_secs(3600), move |_| f.set(true));
    mr.advance(Duration::from_secs(1));
    mr.advance(Duration::MAX);
    assert!(fired.get());
    assert_eq!(mr.clock().now(), Duration::MAX);
    mr.advance(Duration::from_secs(1));
    mr.clock().advance(Duration::MAX);
    assert_eq!(mr.clock().now(), Duration::MAX);
}

#[test]
fn a_memory_datagram_port_stays_bound_when_its_handle_is_dropped() {
    use torsion_reactor::testing::MemoryNetwork;
    use torsion_reactor::{Address, DatagramProtocol, DatagramTransport};

    struct Sink(Rc<RefCell<Vec<Vec<u8>>>>);
    impl DatagramProtocol for Sink {
        fn datagram_received(&mut self, _: &mut dyn DatagramTransport, d: &[u8], _: &Address) {
            self.0.borrow_mut().push(d.to_vec());
        }
    }

    let mr = MemoryReactor::new();
    let net = MemoryNetwork::new(mr.reactor());
    let got = Rc::new(RefCell::new(Vec::new()));
    let server = net.bind(Sink(got.clone())).local_address();
    let client = net.bind(Sink(Rc::default()));
    for i in 0..3u8 {
        client.write_to(&[i], &server).unwrap();
    }
    mr.run_until_idle();
    assert_eq!(*got.borrow(), vec![vec![0], vec![1], vec![2]]);
}
