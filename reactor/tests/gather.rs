//! Writes gathered per callback: a protocol that answers each of many small frames in one
//! read costs one system call per read, not one per frame, and a single write per callback
//! still goes straight to the socket. Checked with a stream whose writes are counted (and
//! whose reads are, for the read size a stream asks for).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::rc::Rc;

use torsion_reactor::prelude::*;
use torsion_reactor::{
    Address, CloseReason, ConnectionConfig, Interest, Readiness, Source, StreamConnection,
    StreamIo, UnixAddress,
};

/// What the test sees of the stream: bytes written, write calls, and room left in the
/// "socket" (writes beyond it are refused with `WouldBlock`).
#[derive(Default)]
struct Wire {
    input: RefCell<VecDeque<u8>>,
    output: RefCell<Vec<u8>>,
    write_calls: Cell<usize>,
    largest_write: Cell<usize>,
    room: Cell<usize>,
    /// Writes after this many calls fail with a broken pipe (0: never).
    fail_after: Cell<usize>,
    /// The stream's `read_size` (0: the default).
    read_size: Cell<usize>,
    /// Length of the buffer each read was given.
    reads: RefCell<Vec<usize>>,
}

struct CountingIo(Rc<Wire>);

impl StreamIo for CountingIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.reads.borrow_mut().push(buf.len());
        let mut input = self.0.input.borrow_mut();
        if input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(input.len());
        for (b, v) in buf.iter_mut().zip(input.drain(..n)) {
            *b = v;
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_calls.set(self.0.write_calls.get() + 1);
        let fail_after = self.0.fail_after.get();
        if fail_after != 0 && self.0.write_calls.get() > fail_after {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.0
            .largest_write
            .set(self.0.largest_write.get().max(buf.len()));
        let n = buf.len().min(self.0.room.get());
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.0.room.set(self.0.room.get() - n);
        self.0.output.borrow_mut().extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.write(&all)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn set_interest(&mut self, _interest: Interest) -> io::Result<()> {
        Ok(())
    }

    fn attach(&mut self, _source: Rc<dyn Source>) {}

    fn read_size(&self) -> usize {
        match self.0.read_size.get() {
            0 => torsion_reactor::READ_BUFFER_SIZE,
            n => n,
        }
    }
}

/// Answers each line of a read with `per_line` writes of it (as a line protocol answering
/// requests does), or with 0 echoes the whole read with one write.
struct Answer {
    per_line: usize,
}

impl Protocol for Answer {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if self.per_line == 0 {
            return t.write(data);
        }
        for line in data.split_inclusive(|&b| b == b'\n') {
            for _ in 0..self.per_line {
                t.write(line);
            }
        }
    }
}

fn connection(per_line: usize, room: usize) -> (Reactor, Rc<Wire>, Rc<dyn Source>) {
    connection_with(Box::new(Answer { per_line }), room)
}

fn connection_with(
    protocol: Box<dyn Protocol>,
    room: usize,
) -> (Reactor, Rc<Wire>, Rc<dyn Source>) {
    let reactor = Reactor::new().unwrap();
    let wire = Rc::new(Wire::default());
    wire.room.set(room);
    let conn = StreamConnection::start(
        &reactor,
        CountingIo(wire.clone()),
        protocol,
        Address::Unix(UnixAddress::Unnamed),
        Address::Unix(UnixAddress::Unnamed),
        ConnectionConfig::default(),
        None,
    );
    (reactor, wire, conn)
}

/// Hands `data` to the connection and lets it read until all of it was read.
fn feed(wire: &Wire, source: &Rc<dyn Source>, data: &[u8]) {
    wire.input.borrow_mut().extend(data.iter().copied());
    for _ in 0..1000 {
        if wire.input.borrow().is_empty() {
            return;
        }
        source.ready(Readiness::READABLE);
    }
    panic!("the connection stopped reading");
}

fn lines(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect()
}

#[test]
fn many_answers_in_one_callback_take_two_writes() {
    let (_reactor, wire, source) = connection(1, usize::MAX);
    let input = lines(1000);
    feed(&wire, &source, &input);
    assert_eq!(*wire.output.borrow(), input, "every answer, in order");
    assert_eq!(
        wire.write_calls.get(),
        2,
        "the first answer goes out at once, the other 999 together when the callback returns"
    );
}

#[test]
fn one_write_per_callback_goes_straight_out() {
    let (_reactor, wire, source) = connection(0, usize::MAX);
    for i in 0..3 {
        feed(&wire, &source, format!("read {i}\n").as_bytes());
        assert_eq!(wire.write_calls.get(), i + 1, "one write call per echo");
    }
    assert_eq!(*wire.output.borrow(), b"read 0\nread 1\nread 2\n");
}

#[test]
fn what_the_socket_does_not_take_stays_buffered_in_order() {
    let input = lines(1000);
    let (_reactor, wire, source) = connection(1, 100);
    feed(&wire, &source, &input);
    assert_eq!(
        wire.output.borrow().len(),
        100,
        "the socket took what it had room for"
    );
    wire.room.set(usize::MAX);
    source.ready(Readiness::WRITABLE);
    assert_eq!(*wire.output.borrow(), input, "the rest followed, in order");
}

/// Answers each read with a write, a second (gathered) write, a small and a large vectored
/// write and a last write, noting how much was buffered right after the large one.
struct VectoredAfterGathered {
    buffered_after_large: Rc<Cell<Option<usize>>>,
}

const LARGE: usize = 20_000;

impl Protocol for VectoredAfterGathered {
    fn data_received(&mut self, t: &mut dyn Transport, _data: &[u8]) {
        t.write(b"first ");
        t.write(b"gathered ");
        t.write_vectored(&[IoSlice::new(b"small"), IoSlice::new(b" one ")]);
        t.write_vectored(&[IoSlice::new(&[b'x'; LARGE])]);
        self.buffered_after_large.set(Some(t.buffered()));
        t.write(b"last");
    }
}

/// A large vectored write after gathered writes is not copied into the buffer: it goes out at
/// once, the gathered bytes (a small vectored write among them) ahead of it in the same call;
/// what the socket does not take stays buffered, in order.
#[test]
fn a_large_vectored_write_takes_the_gathered_bytes_along() {
    // With room for 10 bytes the first write takes 6 and the vectored call 4.
    for (room, buffered) in [(usize::MAX, 0), (10, 9 + 10 + LARGE - 4)] {
        let seen = Rc::new(Cell::new(None));
        let protocol = VectoredAfterGathered {
            buffered_after_large: seen.clone(),
        };
        let (_reactor, wire, source) = connection_with(Box::new(protocol), room);
        feed(&wire, &source, b"go");
        assert_eq!(seen.get(), Some(buffered), "room {room}");
        if room == usize::MAX {
            assert_eq!(
                wire.write_calls.get(),
                3,
                "the first write, the gathered ones with the large one, the last"
            );
        }
        wire.room.set(usize::MAX);
        source.ready(Readiness::WRITABLE);
        let mut expected = b"first gathered small one ".to_vec();
        expected.extend_from_slice(&[b'x'; LARGE]);
        expected.extend_from_slice(b"last");
        assert!(
            *wire.output.borrow() == expected,
            "room {room}: out of order"
        );
    }
}

/// Writes 200 slices of 100 bytes as a callback's first write, one byte, then the 200 slices
/// again (gathered).
struct ManySlices;

impl Protocol for ManySlices {
    fn data_received(&mut self, t: &mut dyn Transport, _data: &[u8]) {
        let pieces: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; 100]).collect();
        let slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        t.write_vectored(&slices);
        t.write(b"|");
        t.write_vectored(&slices);
    }
}

/// A vectored write of more slices than a gathered write carries along is written (or
/// gathered) whole, in order, whether it is a callback's first write or a later one.
#[test]
fn vectored_writes_of_many_slices_arrive_whole() {
    let (_reactor, wire, source) = connection_with(Box::new(ManySlices), usize::MAX);
    feed(&wire, &source, b"go");
    let once: Vec<u8> = (0..200u8).flat_map(|i| vec![i; 100]).collect();
    let mut expected = once.clone();
    expected.push(b'|');
    expected.extend_from_slice(&once);
    assert!(*wire.output.borrow() == expected, "out of order or short");
}

#[test]
fn gathering_is_bounded_within_a_callback() {
    // Ten answers per line: each 64 KiB read is answered with 640 KiB in one callback, which
    // goes out in pieces of about one read's worth, not all at the end.
    let (_reactor, wire, source) = connection(10, usize::MAX);
    let input = lines(20_000);
    feed(&wire, &source, &input);
    let out = wire.output.borrow();
    assert_eq!(out.len(), 10 * input.len());
    let largest = wire.largest_write.get();
    assert!(
        largest <= 64 * 1024 + 64,
        "a write of {largest} bytes: gathering past its bound"
    );
    let calls = wire.write_calls.get();
    assert!(
        calls <= 2 * out.len() / (64 * 1024) + 2 * input.len() / (64 * 1024) + 4,
        "{calls} write calls for {} bytes: not gathered",
        out.len()
    );
}

/// The socket breaks when the gathered writes go out: the connection is lost once, after
/// the callback, with the error.
#[test]
fn an_error_writing_the_gathered_bytes_loses_the_connection_once() {
    let reactor = Reactor::new().unwrap();
    let wire = Rc::new(Wire::default());
    wire.room.set(usize::MAX);
    wire.fail_after.set(1);
    let lost: Rc<RefCell<Vec<CloseReason>>> = Default::default();
    let l = lost.clone();
    let source: Rc<dyn Source> = StreamConnection::start(
        &reactor,
        CountingIo(wire.clone()),
        Box::new(Answer { per_line: 1 }),
        Address::Unix(UnixAddress::Unnamed),
        Address::Unix(UnixAddress::Unnamed),
        ConnectionConfig::default(),
        Some(Box::new(move |r: &CloseReason| {
            l.borrow_mut().push(r.clone())
        })),
    );
    feed(&wire, &source, &lines(10));
    assert_eq!(
        *wire.output.borrow(),
        b"line 0\n",
        "the first answer went out"
    );
    assert_eq!(
        wire.write_calls.get(),
        2,
        "then one gathered write, which failed"
    );
    let lost = lost.borrow();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(matches!(&lost[0], CloseReason::Reset), "{lost:?}");
}

mod on_the_test_kit {
    //! What follows gathered writes in the same callback: a close sends FIN after them, an
    //! abort or a panic drops them, and a protocol swap sends them before the layer's bytes.

    use torsion_reactor::testing::{MemoryReactor, StringTransport};
    use torsion_reactor::{CloseReason, Protocol, Transport};

    type Action = fn(&mut dyn Transport);

    struct ThreeThen(Action);

    impl Protocol for ThreeThen {
        fn data_received(&mut self, t: &mut dyn Transport, _: &[u8]) {
            t.write(b"one ");
            t.write(b"two ");
            t.write(b"three");
            (self.0)(t);
        }
    }

    fn run(then: Action) -> (Vec<u8>, StringTransport) {
        let mr = MemoryReactor::new();
        let st = StringTransport::connect(&mr, ThreeThen(then));
        st.feed(b"go");
        (st.take(), st)
    }

    #[test]
    fn lose_connection_sends_fin_after_the_gathered_bytes() {
        let (out, st) = run(|t| t.lose_connection());
        assert_eq!(out, b"one two three");
        assert!(st.fin_received());
    }

    #[test]
    fn lose_write_connection_sends_fin_after_the_gathered_bytes() {
        let (out, st) = run(|t| t.lose_write_connection());
        assert_eq!(out, b"one two three");
        assert!(st.fin_received());
        assert!(st.lost().is_none());
    }

    #[test]
    fn abort_drops_the_gathered_bytes() {
        let (out, st) = run(|t| t.abort_connection());
        assert_eq!(out, b"one ", "only the first write went out");
        assert!(st.reset_received());
        assert!(matches!(st.lost(), Some(CloseReason::Aborted)));
    }

    #[test]
    fn a_panic_drops_the_gathered_bytes() {
        let (out, st) = run(|_| panic!("after gathered writes"));
        assert_eq!(out, b"one ", "only the first write went out");
        assert!(st.reset_received());
        assert!(matches!(st.lost(), Some(CloseReason::Panic(_))));
    }

    /// A layer that writes a greeting when installed and nothing else.
    struct Greeting;

    impl Protocol for Greeting {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.write(b"<layer>");
            t.write(b"</layer>");
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }

    #[test]
    fn bytes_gathered_before_a_swap_go_out_before_the_layers() {
        let (out, _st) = run(|t| {
            assert!(t.wrap_protocol(Box::new(|_old| Box::new(Greeting))));
            t.write(b" held");
        });
        // The held write is replayed through the connection after the layer's
        // `connection_made` (this layer does not take over).
        assert_eq!(out, b"one two three<layer></layer> held");
    }
}

#[test]
fn reads_ask_for_the_streams_read_size_and_go_on_while_full() {
    let (_reactor, wire, source) = connection(0, usize::MAX);
    wire.read_size.set(1000);
    let input = lines(2000);
    wire.input.borrow_mut().extend(input.iter().copied());
    source.ready(Readiness::READABLE);
    let reads = wire.reads.borrow().clone();
    assert_eq!(
        reads.len(),
        16,
        "a full read is followed by another, up to the turn's limit"
    );
    assert!(reads.iter().all(|&n| n == 1000), "{reads:?}");
    feed(&wire, &source, &[]);
    assert_eq!(*wire.output.borrow(), input, "every byte echoed, in order");
}

#[test]
fn reads_default_to_the_whole_read_buffer_and_stop_when_short() {
    let (_reactor, wire, source) = connection(0, usize::MAX);
    let input = lines(40_000);
    assert!(input.len() > torsion_reactor::READ_BUFFER_SIZE);
    feed(&wire, &source, &input);
    assert_eq!(
        *wire.reads.borrow(),
        [torsion_reactor::READ_BUFFER_SIZE; 2],
        "one full read, then a short one that ends the turn without asking again"
    );
    assert_eq!(*wire.output.borrow(), input);
}
