//! The receiver adapters on the in-memory transport: chunking, limits, raw mode, pausing,
//! flow control, closing, deadlines and the frame echo service.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use torsion_protocols::framing::{
    frame_echo, EncodeError, FrameEchoOptions, FrameError, Framing, LineContext, LineHandler,
    LineReceiver, StringContext, StringHandler, StringReceiver,
};
use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};
use torsion_reactor::{CloseReason, ConnectionConfig, Protocol, Transport};

type Log = Rc<RefCell<Vec<String>>>;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Records every callback; reacts to a few commands.
#[derive(Default)]
struct Recorder {
    log: Log,
    body_left: usize,
}

impl LineHandler for Recorder {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        ctx.send_line(b"hello");
    }

    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.log.borrow_mut().push(format!("line {}", text(line)));
        match line {
            b"QUIT" => ctx.lose_connection(),
            b"PAUSE" => ctx.pause(),
            l if l.starts_with(b"RAW ") => {
                self.body_left = text(&l[4..]).parse().unwrap();
                ctx.set_raw_mode();
            }
            _ => ctx.send_line(line),
        }
    }

    fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        let n = self.body_left.min(data.len());
        self.log
            .borrow_mut()
            .push(format!("raw {}", text(&data[..n])));
        self.body_left -= n;
        if self.body_left == 0 {
            ctx.set_line_mode(&data[n..]);
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().push(format!("lost {reason:?}"));
    }
}

fn recorder() -> (Recorder, Log) {
    let log = Log::default();
    (
        Recorder {
            log: log.clone(),
            body_left: 0,
        },
        log,
    )
}

fn lines_in(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

#[test]
fn lines_any_chunking() {
    for chunk in [1, 2, 3, 7, 1024] {
        let mr = MemoryReactor::new();
        let (r, log) = recorder();
        let st =
            StringTransport::with_options(&mr, LineReceiver::new(r), MemoryOptions::chunked(chunk));
        assert_eq!(st.take(), b"hello\r\n");
        st.feed(b"one\r\ntwo\r\n\r\nthree\rstill\r\n");
        assert_eq!(st.take(), b"one\r\ntwo\r\n\r\nthree\rstill\r\n");
        assert_eq!(
            lines_in(&log),
            ["line one", "line two", "line ", "line three\rstill"]
        );
    }
}

#[test]
fn custom_delimiter() {
    let mr = MemoryReactor::new();
    let (r, log) = recorder();
    let st = StringTransport::with_options(
        &mr,
        LineReceiver::new(r).delimiter(b"\n"),
        MemoryOptions::chunked(1),
    );
    assert_eq!(st.take(), b"hello\n");
    st.feed(b"a\r\nb\n");
    assert_eq!(lines_in(&log), ["line a\r", "line b"]);
}

#[test]
fn line_of_exactly_the_limit_passes_one_more_closes() {
    for chunk in [1, 5, 4096] {
        let mr = MemoryReactor::new();
        let (r, log) = recorder();
        let st = StringTransport::with_options(
            &mr,
            LineReceiver::new(r).max_length(10),
            MemoryOptions::chunked(chunk),
        );
        st.take();
        st.feed(b"0123456789\r\n");
        assert_eq!(st.take(), b"0123456789\r\n");
        st.feed(b"0123456789A\r\nnever\r\n");
        assert!(st.fin_received(), "closed gracefully (FIN)");
        st.feed_eof();
        let log = lines_in(&log);
        assert_eq!(log[0], "line 0123456789");
        assert_eq!(
            log[1], "lost ProtocolError(\"line longer than 10 bytes\")",
            "chunk {chunk}"
        );
        assert_eq!(log.len(), 2, "nothing after the error");
        assert!(matches!(st.lost(), Some(CloseReason::Done)));
    }
}

#[test]
fn default_limit_is_16384() {
    let mr = MemoryReactor::new();
    let (r, log) = recorder();
    let st = StringTransport::connect(&mr, LineReceiver::new(r));
    st.take();
    let mut line = vec![b'x'; 16_384];
    line.extend_from_slice(b"\r\n");
    st.feed(&line);
    assert_eq!(st.take().len(), 16_386);
    // No delimiter in 16,386 bytes: over the limit without waiting for the end.
    st.feed(&vec![b'y'; 16_386]);
    assert!(st.transport().is_closing());
    assert!(log.borrow()[0].starts_with("line xxx"));
}

/// An override that does not close goes on with the next bytes as a new line (Twisted).
#[test]
fn line_length_exceeded_override() {
    struct Lenient(Log);
    impl LineHandler for Lenient {
        fn line_received(&mut self, _: &mut LineContext<'_>, line: &[u8]) {
            self.0.borrow_mut().push(text(line));
        }
        fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>) {
            self.0.borrow_mut().push("too long".into());
            ctx.send_line(b"ERR too long");
        }
    }
    let mr = MemoryReactor::new();
    let log = Log::default();
    let st = StringTransport::connect(&mr, LineReceiver::new(Lenient(log.clone())).max_length(4));
    st.feed(b"ok\r\n");
    st.feed(b"toolong\r\n");
    st.feed(b"fine\r\n");
    assert_eq!(lines_in(&log), ["ok", "too long", "fine"]);
    assert_eq!(st.take(), b"ERR too long\r\n");
    assert!(!st.transport().is_closing());
}

/// Raw mode mid-stream: a header line, then a body, then lines again, all in one read and
/// one byte per read.
#[test]
fn raw_mode_switching_hands_over_buffered_bytes() {
    for chunk in [1, 2, 3, 5, 64 * 1024] {
        let mr = MemoryReactor::new();
        let (r, log) = recorder();
        let st =
            StringTransport::with_options(&mr, LineReceiver::new(r), MemoryOptions::chunked(chunk));
        st.feed(b"RAW 5\r\nab\r\ncfirst\r\nRAW 3\r\nxyzRAW 1\r\n!last\r\n");
        let got = lines_in(&log);
        let raw: String = got
            .iter()
            .filter_map(|l| l.strip_prefix("raw "))
            .collect::<Vec<_>>()
            .concat();
        let lines: Vec<&String> = got.iter().filter(|l| l.starts_with("line")).collect();
        assert_eq!(raw, "ab\r\ncxyz!", "chunk {chunk}");
        assert_eq!(
            lines,
            [
                "line RAW 5",
                "line first",
                "line RAW 3",
                "line RAW 1",
                "line last"
            ],
            "chunk {chunk}"
        );
    }
}

/// `set_line_mode` with bytes that do not come from the raw data (copied, then parsed).
#[test]
fn set_line_mode_with_foreign_bytes() {
    struct Inject(Log);
    impl LineHandler for Inject {
        fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
            self.0.borrow_mut().push(text(line));
            if line == b"go raw" {
                ctx.set_raw_mode();
            }
        }
        fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
            self.0.borrow_mut().push(format!("raw {}", text(data)));
            ctx.set_line_mode(b"injected\r\n");
        }
    }
    let mr = MemoryReactor::new();
    let log = Log::default();
    let st = StringTransport::connect(&mr, LineReceiver::new(Inject(log.clone())));
    st.feed(b"go raw\r\nRAW");
    st.feed(b"after\r\n");
    assert_eq!(lines_in(&log), ["go raw", "raw RAW", "injected", "after"]);
}

#[test]
fn starts_in_raw_mode() {
    let mr = MemoryReactor::new();
    let (mut r, log) = recorder();
    r.body_left = 4;
    let st = StringTransport::connect(&mr, LineReceiver::new(r).raw_mode());
    st.feed(b"\x00\x01\x02\x03line\r\n");
    assert_eq!(lines_in(&log), ["raw \u{0}\u{1}\u{2}\u{3}", "line line"]);
}

#[test]
fn pause_in_callback_then_resume_through_handle() {
    let mr = MemoryReactor::new();
    let (r, log) = recorder();
    let receiver = LineReceiver::new(r);
    let handle = receiver.handle();
    let st = StringTransport::connect(&mr, receiver);
    st.take();
    st.feed(b"a\r\nPAUSE\r\nb\r\nc\r\n");
    assert_eq!(lines_in(&log), ["line a", "line PAUSE"]);
    assert!(handle.is_paused());
    // Reading is paused: more bytes stay with the peer.
    st.feed(b"d\r\n");
    assert_eq!(st.unread(), 3);
    assert_eq!(lines_in(&log).len(), 2);
    handle.resume();
    mr.run_until_idle();
    assert_eq!(
        lines_in(&log),
        ["line a", "line PAUSE", "line b", "line c", "line d"]
    );
    assert_eq!(st.take(), b"a\r\nb\r\nc\r\nd\r\n");
    assert!(!handle.is_paused());
}

#[test]
fn paused_before_connection() {
    let mr = MemoryReactor::new();
    let (r, log) = recorder();
    let receiver = LineReceiver::new(r);
    let handle = receiver.handle();
    handle.pause();
    let st = StringTransport::connect(&mr, receiver);
    st.feed(b"x\r\n");
    assert!(lines_in(&log).is_empty());
    handle.resume();
    mr.run_until_idle();
    assert_eq!(lines_in(&log), ["line x"]);
}

/// A client that does not read: the receiver stops delivering (and reading) once the write
/// buffer passes the high watermark, and goes on once it drains.
#[test]
fn flow_control_pauses_delivery() {
    let mr = MemoryReactor::new();
    let (r, log) = recorder();
    let options = MemoryOptions {
        chunk_size: 64 * 1024,
        capacity: 1024,
        config: ConnectionConfig {
            high_watermark: 2048,
            low_watermark: 512,
            ..ConnectionConfig::default()
        },
    };
    let st = StringTransport::with_options(&mr, LineReceiver::new(r), options);
    let line = [b'z'; 98];
    let mut input = Vec::new();
    for _ in 0..100 {
        input.extend_from_slice(&line);
        input.extend_from_slice(b"\r\n");
    }
    // The peer writes without reading: the receiver stops part-way.
    let mut sent = st.feed(&input);
    let delivered = lines_in(&log).len();
    assert!(
        delivered < 100,
        "delivery paused with the write buffer full ({delivered} lines)"
    );
    assert!(st.transport().buffered() > 0);
    // Now it reads: everything flows.
    let mut echoed = Vec::new();
    for _ in 0..1000 {
        echoed.extend(st.take());
        sent += st.feed(&input[sent..]);
        if sent == input.len() && lines_in(&log).len() == 100 && st.transport().buffered() == 0 {
            break;
        }
    }
    echoed.extend(st.take());
    assert_eq!(lines_in(&log).len(), 100);
    assert_eq!(echoed.len(), b"hello\r\n".len() + 100 * 100);
}

#[test]
fn nothing_delivered_after_close() {
    let mr = MemoryReactor::new();
    let (r, log) = recorder();
    let st = StringTransport::connect(&mr, LineReceiver::new(r));
    st.feed(b"a\r\nQUIT\r\nb\r\nc\r\n");
    st.feed_eof();
    assert_eq!(lines_in(&log), ["line a", "line QUIT", "lost Done"]);
}

#[test]
fn first_frame_timeout() {
    // No whole line in time: aborted, TimedOut reported.
    let mr = MemoryReactor::new();
    let (r, log) = recorder();
    let st = StringTransport::connect(
        &mr,
        LineReceiver::new(r).first_frame_timeout(Duration::from_secs(5)),
    );
    st.feed(b"slow");
    mr.advance(Duration::from_secs(4));
    st.feed(b"lo");
    assert!(st.lost().is_none());
    mr.advance(Duration::from_secs(1));
    assert!(st.reset_received());
    assert_eq!(lines_in(&log), ["lost TimedOut"]);

    // A line in time: the deadline is off for good.
    let (r, log) = recorder();
    let st = StringTransport::connect(
        &mr,
        LineReceiver::new(r).first_frame_timeout(Duration::from_secs(5)),
    );
    st.feed(b"quick\r\n");
    mr.advance(Duration::from_secs(60));
    assert!(st.lost().is_none());
    assert_eq!(lines_in(&log), ["line quick"]);
}

// --- Strings ---

#[derive(Default)]
struct Strings {
    log: Log,
}

impl StringHandler for Strings {
    fn string_received(&mut self, ctx: &mut StringContext<'_>, s: &[u8]) {
        self.log.borrow_mut().push(text(s));
        if s == b"big" {
            let r = ctx.send_string(&[0; 256]);
            self.log.borrow_mut().push(format!("{r:?}"));
        } else {
            ctx.send_string(s).unwrap();
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().push(format!("lost {reason:?}"));
    }
}

fn strings() -> (Strings, Log) {
    let log = Log::default();
    (Strings { log: log.clone() }, log)
}

#[test]
fn int_strings_echo_in_any_chunking() {
    type Make = fn(Strings) -> StringReceiver<Strings>;
    let cases: [(Make, &[u8]); 3] = [
        (StringReceiver::int8, b"\x03abc\x00"),
        (StringReceiver::int16, b"\x00\x03abc\x00\x00"),
        (
            StringReceiver::int32,
            b"\x00\x00\x00\x03abc\x00\x00\x00\x00",
        ),
    ];
    for (make, wire) in cases {
        for chunk in [1, 2, 3, 100] {
            let mr = MemoryReactor::new();
            let (h, log) = strings();
            let st = StringTransport::with_options(&mr, make(h), MemoryOptions::chunked(chunk));
            st.feed(wire);
            assert_eq!(st.take(), wire);
            assert_eq!(lines_in(&log), ["abc", ""]);
        }
    }
}

#[test]
fn oversized_prefix_closes_with_protocol_error() {
    let mr = MemoryReactor::new();
    let (h, log) = strings();
    let st = StringTransport::connect(&mr, StringReceiver::int32(h));
    st.feed(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    assert!(st.fin_received());
    st.feed_eof();
    assert_eq!(
        lines_in(&log),
        ["lost ProtocolError(\"frame of 4294967295 bytes announced, over the maximum of 99999 bytes\")"]
    );

    // A configured limit: exactly passes, one more closes.
    let (h, log) = strings();
    let st = StringTransport::connect(&mr, StringReceiver::int16(h).max_length(3));
    st.feed(b"\x00\x03abc\x00\x04abcd");
    assert!(st.transport().is_closing());
    assert_eq!(lines_in(&log)[0], "abc");
}

#[test]
fn sending_too_long_for_the_prefix_is_an_error() {
    let mr = MemoryReactor::new();
    let (h, log) = strings();
    let st = StringTransport::connect(&mr, StringReceiver::int8(h));
    st.feed(b"\x03big");
    assert_eq!(
        lines_in(&log),
        [
            "big".to_string(),
            format!(
                "{:?}",
                Err::<(), _>(EncodeError::TooLong {
                    length: 256,
                    max: 255
                })
            )
        ]
    );
    assert!(st.take().is_empty(), "nothing written");
    assert!(!st.transport().is_closing());
}

#[test]
fn netstrings() {
    for chunk in [1, 4, 1000] {
        let mr = MemoryReactor::new();
        let (h, log) = strings();
        let st = StringTransport::with_options(
            &mr,
            StringReceiver::netstring(h),
            MemoryOptions::chunked(chunk),
        );
        st.feed(b"5:hello,0:,12:hello world!,");
        assert_eq!(st.take(), b"5:hello,0:,12:hello world!,");
        st.feed(b"3:abcd");
        assert!(st.fin_received());
        st.feed_eof();
        assert_eq!(
            lines_in(&log),
            [
                "hello",
                "",
                "hello world!",
                "lost ProtocolError(\"netstring data is not followed by ','\")"
            ]
        );
    }
}

/// The error hook can write a last message before the receiver closes.
#[test]
fn frame_error_hook() {
    struct Polite;
    impl StringHandler for Polite {
        fn string_received(&mut self, _: &mut StringContext<'_>, _: &[u8]) {}
        fn frame_error(&mut self, ctx: &mut StringContext<'_>, error: &FrameError) {
            ctx.send_string(format!("error: {error}").as_bytes())
                .unwrap();
        }
    }
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(&mr, StringReceiver::netstring(Polite));
    st.feed(b"x");
    assert_eq!(
        st.take(),
        b"53:error: netstring does not start with a decimal length,"
    );
    assert!(st.fin_received());
}

#[test]
fn string_receiver_pause_and_first_frame_timeout() {
    struct PauseEach(Log, Option<torsion_protocols::framing::ReceiverHandle>);
    impl StringHandler for PauseEach {
        fn string_received(&mut self, ctx: &mut StringContext<'_>, s: &[u8]) {
            self.0.borrow_mut().push(text(s));
            self.1 = Some(ctx.receiver());
            ctx.pause();
        }
    }
    let mr = MemoryReactor::new();
    let log = Log::default();
    let receiver = StringReceiver::netstring(PauseEach(log.clone(), None))
        .first_frame_timeout(Duration::from_secs(1));
    let handle = receiver.handle();
    let st = StringTransport::connect(&mr, receiver);
    st.feed(b"1:a,1:b,1:c,");
    assert_eq!(lines_in(&log), ["a"]);
    for expected in [2, 3] {
        handle.resume();
        mr.run_until_idle();
        assert_eq!(lines_in(&log).len(), expected);
    }
    mr.advance(Duration::from_secs(10));
    assert!(st.lost().is_none(), "first frame arrived in time");
}

#[test]
fn frame_echo_every_framing() {
    for framing in Framing::ALL {
        for chunk in [1, 3, 4096] {
            let mr = MemoryReactor::new();
            let st = StringTransport::with_options(
                &mr,
                frame_echo(framing, FrameEchoOptions::default()),
                MemoryOptions::chunked(chunk),
            );
            let mut wire = Vec::new();
            for payload in [&b"one"[..], b"", b"three"] {
                framing.encode(payload, &mut wire).unwrap();
            }
            st.feed(&wire);
            assert_eq!(st.take(), wire, "{framing} chunk {chunk}");
            assert_eq!(
                framing.decode_all(&wire, None).unwrap(),
                [b"one".to_vec(), vec![], b"three".to_vec()]
            );
        }
    }
}

#[test]
fn frame_echo_limits_and_idle_timeout() {
    let options = FrameEchoOptions {
        max_length: Some(4),
        idle_timeout: Some(Duration::from_secs(30)),
    };
    for framing in Framing::ALL {
        let mr = MemoryReactor::new();
        let st = StringTransport::connect(&mr, frame_echo(framing, options.clone()));
        let mut ok = Vec::new();
        framing.encode(b"four", &mut ok).unwrap();
        st.feed(&ok);
        assert_eq!(st.take(), ok, "{framing}");
        let mut long = Vec::new();
        framing.encode(b"fives", &mut long).unwrap();
        st.feed(&long);
        assert!(st.fin_received(), "{framing}: over the limit closes");

        let st = StringTransport::connect(&mr, frame_echo(framing, options.clone()));
        mr.advance(Duration::from_secs(29));
        assert!(st.lost().is_none());
        mr.advance(Duration::from_secs(1));
        assert!(
            matches!(st.lost(), Some(CloseReason::Aborted)),
            "{framing}: idle"
        );
    }
    assert_eq!("INT32".parse::<Framing>(), Ok(Framing::Int32));
    assert!("int64".parse::<Framing>().is_err());
}

/// Pauses on `PAUSE`, echoes every other line.
struct PauseOrEcho;

impl LineHandler for PauseOrEcho {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        match line {
            b"PAUSE" => ctx.pause(),
            b"UPGRADE" => {
                ctx.send_line(b"OK");
                ctx.wrap_protocol(Box::new(|old| Box::new(layer::Layer { old, t: None })));
            }
            _ => ctx.send_line(line),
        }
    }
}

/// A protocol that keeps calling `resume_reading` after every read, as a transport that
/// ignored the pause would behave; records the size of each read.
struct IgnoresPause<P: Protocol>(P, Rc<RefCell<Vec<usize>>>);

impl<P: Protocol> Protocol for IgnoresPause<P> {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.connection_made(t)
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        self.1.borrow_mut().push(d.len());
        self.0.data_received(t, d);
        t.resume_reading();
    }
}

#[test]
fn a_paused_receiver_holds_at_most_the_limit_plus_one_read() {
    let mr = MemoryReactor::new();
    let reads = Rc::new(RefCell::new(Vec::new()));
    let receiver = LineReceiver::new(PauseOrEcho).max_length(10);
    let st = StringTransport::connect(&mr, IgnoresPause(receiver, reads.clone()));
    let mut data = b"PAUSE\r\n".to_vec();
    while data.len() < 400 * 1024 {
        data.extend_from_slice(b"x\r\n");
    }
    st.feed(&data);
    assert!(
        st.transport().is_closing(),
        "closing: the transport ignored the pause"
    );
    let reads = reads.borrow();
    // Held: everything after "PAUSE\r\n" in the reads before the one that closed.
    let held = reads[..reads.len() - 1].iter().sum::<usize>() - 7;
    assert!(
        held <= 10 + torsion_reactor::READ_BUFFER_SIZE,
        "held {held} bytes while paused (reads {reads:?})"
    );
}

/// A stand-in for a layer such as TLS installed with `wrap_protocol`: its transport marks
/// every write, and it takes over the connection's handles.
mod layer {
    use std::io;
    use std::rc::{Rc, Weak};

    use torsion_reactor::{
        Address, CloseReason, Producer, Protocol, Reactor, Transport, TransportHandle,
    };

    pub struct Tagged {
        raw: TransportHandle,
        me: Weak<Tagged>,
    }

    impl Transport for Tagged {
        fn write(&self, d: &[u8]) {
            self.raw.write(&[b"[enc]", d].concat())
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
        fn set_write_buffer_limits(&self, h: usize, l: usize) -> io::Result<()> {
            self.raw.set_write_buffer_limits(h, l)
        }
        fn register_producer(&self, p: Box<dyn Producer>, s: bool) {
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

    pub struct Layer {
        pub old: Box<dyn Protocol>,
        pub t: Option<Rc<Tagged>>,
    }

    impl Layer {
        fn call(&mut self, f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport)) {
            let t = self.t.clone().expect("connected");
            let mut tr: &Tagged = &t;
            f(&mut *self.old, &mut tr);
        }
    }

    impl Protocol for Layer {
        fn connection_made(&mut self, raw: &mut dyn Transport) {
            let t = Rc::new_cyclic(|me| Tagged {
                raw: raw.handle(),
                me: me.clone(),
            });
            raw.redirect_handles(t.handle());
            self.t = Some(t);
        }
        fn data_received(&mut self, _raw: &mut dyn Transport, d: &[u8]) {
            self.call(|p, t| p.data_received(t, d));
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
}

/// Lines held during a pause and delivered on resume after a layer took over the connection
/// (STARTTLS) are answered through the layer, like every other line after the upgrade.
#[test]
fn lines_held_across_a_pause_are_answered_through_a_layer_that_took_over() {
    let mr = MemoryReactor::new();
    let receiver = LineReceiver::new(PauseOrEcho);
    let handle = receiver.handle();
    let st = StringTransport::connect(&mr, receiver);
    st.feed(b"UPGRADE\r\n");
    assert_eq!(st.take(), b"OK\r\n");
    st.feed(b"a\r\n");
    assert_eq!(st.take(), b"[enc]a[enc]\r\n");
    st.feed(b"PAUSE\r\nb\r\n");
    handle.resume();
    mr.run_until_idle();
    assert_eq!(st.take(), b"[enc]b[enc]\r\n");
}

/// Pauses on `PAUSE`, panics on `BOOM`, echoes the rest; for lines and for strings.
struct Panicky(Log);

impl LineHandler for Panicky {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.0.borrow_mut().push(text(line));
        match line {
            b"PAUSE" => ctx.pause(),
            b"BOOM" => panic!("boom"),
            _ => ctx.send_line(line),
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.0.borrow_mut().push(format!("lost {reason:?}"));
    }
}

impl StringHandler for Panicky {
    fn string_received(&mut self, ctx: &mut StringContext<'_>, s: &[u8]) {
        self.0.borrow_mut().push(text(s));
        match s {
            b"PAUSE" => ctx.pause(),
            b"BOOM" => panic!("boom"),
            _ => ctx.send_string(s).unwrap(),
        }
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.0.borrow_mut().push(format!("lost {reason:?}"));
    }
}

/// A handler that panics on a frame held across a pause (delivered on resume, from the
/// reactor's queue rather than from a read) costs its connection, as a panic in any callback
/// does: aborted, `Panic` reported. (The panic was caught by the reactor's queue and the
/// connection stayed open with reading paused for good, the frames after it never delivered.)
#[test]
fn a_panic_in_a_frame_delivered_on_resume_aborts_the_connection() {
    for strings in [false, true] {
        let mr = MemoryReactor::new();
        let log = Log::default();
        let (st, handle, wire) = if strings {
            let receiver = StringReceiver::netstring(Panicky(log.clone()));
            let handle = receiver.handle();
            let st = StringTransport::connect(&mr, receiver);
            (st, handle, &b"5:PAUSE,4:BOOM,1:x,"[..])
        } else {
            let receiver = LineReceiver::new(Panicky(log.clone()));
            let handle = receiver.handle();
            let st = StringTransport::connect(&mr, receiver);
            (st, handle, &b"PAUSE\r\nBOOM\r\nx\r\n"[..])
        };
        st.feed(wire);
        assert_eq!(lines_in(&log), ["PAUSE"]);
        handle.resume();
        mr.run_until_idle();
        assert!(st.reset_received(), "strings {strings}: aborted");
        let lines = lines_in(&log);
        assert_eq!(lines[..2], ["PAUSE", "BOOM"], "strings {strings}");
        assert!(
            lines[2].starts_with("lost Panic(\"boom (at protocols/tests/receivers.rs:"),
            "strings {strings}: {lines:?}"
        );
        assert_eq!(lines.len(), 3, "strings {strings}: {lines:?}");
    }
}

// --- set_line_mode from line mode, discards, deadlines while paused ---

/// Injects on `INJECT`, pauses on `PAUSE`, goes raw for one chunk on `RAW`.
struct Injector(Log);

impl LineHandler for Injector {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.0.borrow_mut().push(text(line));
        match line {
            b"INJECT" => ctx.set_line_mode(b"x\r\ny\r\npar"),
            b"INJECT+PAUSE" => {
                ctx.set_line_mode(b"x\r\n");
                ctx.pause();
            }
            b"INJECT+RAW" => {
                ctx.set_line_mode(b"x\r\n");
                ctx.set_raw_mode();
            }
            b"PAUSE" => ctx.pause(),
            _ => {}
        }
    }

    fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        self.0.borrow_mut().push(format!("raw {}", text(data)));
        ctx.set_line_mode(b"");
    }
}

/// `set_line_mode(extra)` from `line_received` (already in line mode): `extra` is parsed
/// right after the current line, before the lines that followed it, in any chunking.
#[test]
fn set_line_mode_from_line_received_injects_extra() {
    for chunk in [1, 2, 3, 5, 1024] {
        let mr = MemoryReactor::new();
        let log = Log::default();
        let st = StringTransport::with_options(
            &mr,
            LineReceiver::new(Injector(log.clone())),
            MemoryOptions::chunked(chunk),
        );
        st.feed(b"a\r\nINJECT\r\ntial\r\nb\r\n");
        assert_eq!(
            lines_in(&log),
            ["a", "INJECT", "x", "y", "partial", "b"],
            "chunk {chunk}"
        );
    }
}

/// The same with a pause in the same callback, and from lines held by an earlier pause.
#[test]
fn set_line_mode_from_line_received_with_pause() {
    for chunk in [1, 2, 3, 1024] {
        let mr = MemoryReactor::new();
        let log = Log::default();
        let receiver = LineReceiver::new(Injector(log.clone()));
        let handle = receiver.handle();
        let st = StringTransport::with_options(&mr, receiver, MemoryOptions::chunked(chunk));
        st.feed(b"PAUSE\r\nINJECT\r\ntial\r\nINJECT+PAUSE\r\nb\r\n");
        for _ in 0..4 {
            handle.resume();
            mr.run_until_idle();
        }
        assert_eq!(
            lines_in(&log),
            [
                "PAUSE",
                "INJECT",
                "x",
                "y",
                "partial",
                "INJECT+PAUSE",
                "x",
                "b"
            ],
            "chunk {chunk}"
        );
    }
}

/// `extra` then raw mode in the same callback: raw mode gets `extra` first.
#[test]
fn set_line_mode_from_line_received_then_raw() {
    for chunk in [1, 1024] {
        let mr = MemoryReactor::new();
        let log = Log::default();
        let st = StringTransport::with_options(
            &mr,
            LineReceiver::new(Injector(log.clone())),
            MemoryOptions::chunked(chunk),
        );
        st.feed(b"INJECT+RAW\r\n");
        st.feed(b"b\r\n");
        assert_eq!(
            lines_in(&log),
            ["INJECT+RAW", "raw x\r\n", "b"],
            "chunk {chunk}"
        );
    }
}

/// From `connection_made`, `extra` is parsed at once.
#[test]
fn set_line_mode_from_connection_made() {
    struct Greeted(Log);
    impl LineHandler for Greeted {
        fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
            ctx.set_line_mode(b"first\r\nsec");
        }
        fn line_received(&mut self, _: &mut LineContext<'_>, line: &[u8]) {
            self.0.borrow_mut().push(text(line));
        }
    }
    let mr = MemoryReactor::new();
    let log = Log::default();
    let st = StringTransport::connect(&mr, LineReceiver::new(Greeted(log.clone())));
    assert_eq!(lines_in(&log), ["first"]);
    st.feed(b"ond\r\n");
    assert_eq!(lines_in(&log), ["first", "second"]);
}

/// What an override of `line_length_exceeded` that keeps the connection loses: the rest of
/// the read (as Twisted's discarded buffer), so it depends on the chunking.
#[test]
fn line_length_exceeded_discards_the_rest_of_the_read() {
    struct Lenient(Log);
    impl LineHandler for Lenient {
        fn line_received(&mut self, _: &mut LineContext<'_>, line: &[u8]) {
            self.0.borrow_mut().push(text(line));
        }
        fn line_length_exceeded(&mut self, _: &mut LineContext<'_>) {
            self.0.borrow_mut().push("too long".into());
        }
    }
    for (chunk, expected) in [
        (1024, &["too long", "next"][..]),
        (1, &["too long", "g", "fine", "next"][..]),
    ] {
        let mr = MemoryReactor::new();
        let log = Log::default();
        let st = StringTransport::with_options(
            &mr,
            LineReceiver::new(Lenient(log.clone())).max_length(4),
            MemoryOptions::chunked(chunk),
        );
        st.feed(b"toolong\r\nfine\r\n");
        st.feed(b"next\r\n");
        assert_eq!(lines_in(&log), expected, "chunk {chunk}");
    }
}

/// Shares a receiver with the test, which can then feed it as a transport that does not
/// honour `pause_reading` would.
struct SharedProtocol<P>(Rc<RefCell<P>>);

impl<P: Protocol> Protocol for SharedProtocol<P> {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.borrow_mut().connection_made(t);
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.0.borrow_mut().data_received(t, data);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.0.borrow_mut().connection_lost(reason);
    }
    fn pause_producing(&mut self, t: &mut dyn Transport) {
        self.0.borrow_mut().pause_producing(t);
    }
    fn resume_producing(&mut self, t: &mut dyn Transport) {
        self.0.borrow_mut().resume_producing(t);
    }
}

/// Bytes handed to the receiver while paused, as a transport that ignores the pause would.
fn feed_while_paused<P: Protocol>(st: &StringTransport, p: &Rc<RefCell<P>>, data: &[u8]) {
    let handle = st.transport().clone();
    let mut t: &dyn Transport = &*handle;
    p.borrow_mut().data_received(&mut t, data);
}

/// A whole first frame that arrives in time while the receiver is paused counts: the
/// deadline does not fire, and the frame is delivered on resume.
#[test]
fn first_frame_timeout_counts_a_frame_held_while_paused() {
    // Lines.
    let mr = MemoryReactor::new();
    let log = Log::default();
    let receiver =
        LineReceiver::new(Injector(log.clone())).first_frame_timeout(Duration::from_secs(5));
    let handle = receiver.handle();
    let shared = Rc::new(RefCell::new(receiver));
    let st = StringTransport::connect(&mr, SharedProtocol(shared.clone()));
    handle.pause();
    feed_while_paused(&st, &shared, b"par");
    feed_while_paused(&st, &shared, b"tial\r\n");
    mr.advance(Duration::from_secs(10));
    assert!(st.lost().is_none(), "the line arrived in time");
    handle.resume();
    mr.run_until_idle();
    assert_eq!(lines_in(&log), ["partial"]);

    // Only part of a line while paused: the deadline fires.
    let log = Log::default();
    let receiver =
        LineReceiver::new(Injector(log.clone())).first_frame_timeout(Duration::from_secs(5));
    let handle = receiver.handle();
    let shared = Rc::new(RefCell::new(receiver));
    let st = StringTransport::connect(&mr, SharedProtocol(shared.clone()));
    handle.pause();
    feed_while_paused(&st, &shared, b"part");
    mr.advance(Duration::from_secs(5));
    assert!(st.reset_received());

    // Raw mode: raw bytes count.
    let log = Log::default();
    let receiver = LineReceiver::new(Injector(log.clone()))
        .raw_mode()
        .first_frame_timeout(Duration::from_secs(5));
    let handle = receiver.handle();
    let shared = Rc::new(RefCell::new(receiver));
    let st = StringTransport::connect(&mr, SharedProtocol(shared.clone()));
    handle.pause();
    feed_while_paused(&st, &shared, b"\x00");
    mr.advance(Duration::from_secs(10));
    assert!(st.lost().is_none(), "raw bytes arrived in time");

    // Strings.
    let receiver =
        StringReceiver::netstring(Strings::default()).first_frame_timeout(Duration::from_secs(5));
    let handle = receiver.handle();
    let shared = Rc::new(RefCell::new(receiver));
    let st = StringTransport::connect(&mr, SharedProtocol(shared.clone()));
    handle.pause();
    feed_while_paused(&st, &shared, b"2:h");
    feed_while_paused(&st, &shared, b"i,");
    mr.advance(Duration::from_secs(10));
    assert!(st.lost().is_none(), "the string arrived in time");
    handle.resume();
    mr.run_until_idle();
    assert_eq!(st.take(), b"2:hi,");
}

/// From an override of `line_length_exceeded` that keeps the connection, `extra` is parsed at
/// once; the rest of the read is still discarded.
#[test]
fn set_line_mode_from_line_length_exceeded() {
    struct Resync(Log);
    impl LineHandler for Resync {
        fn line_received(&mut self, _: &mut LineContext<'_>, line: &[u8]) {
            self.0.borrow_mut().push(text(line));
        }
        fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>) {
            ctx.set_line_mode(b"ERR\r\n");
        }
    }
    let mr = MemoryReactor::new();
    let log = Log::default();
    let st = StringTransport::connect(&mr, LineReceiver::new(Resync(log.clone())).max_length(4));
    st.feed(b"toolong\r\nlost\r\n");
    assert_eq!(lines_in(&log), ["ERR"]);
    st.feed(b"next\r\n");
    assert_eq!(lines_in(&log), ["ERR", "next"]);
}

/// Sends a request, half-closes, and records the reply lines.
struct AskThenHalfClose(Log);

impl LineHandler for AskThenHalfClose {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        ctx.send_line(b"GET all");
        ctx.transport().lose_write_connection();
    }
    fn line_received(&mut self, _: &mut LineContext<'_>, line: &[u8]) {
        self.0.borrow_mut().push(format!("line {}", text(line)));
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.0.borrow_mut().push(format!("lost {reason:?}"));
    }
}

/// After its own half-close a receiver goes on delivering what the peer sends (it dropped
/// every frame: it took the half-close for a close), here in one read and in single bytes.
#[test]
fn a_receiver_delivers_replies_after_its_own_half_close() {
    for chunk in [usize::MAX, 1] {
        let mr = MemoryReactor::new();
        let log = Log::default();
        let st = StringTransport::connect(&mr, LineReceiver::new(AskThenHalfClose(log.clone())));
        mr.run_until_idle();
        assert_eq!(st.take(), b"GET all\r\n");
        assert!(st.fin_received());
        for part in b"one\r\ntwo\r\n".chunks(chunk.min(10)) {
            st.feed(part);
            mr.run_until_idle();
        }
        st.feed_eof();
        mr.run_until_idle();
        assert_eq!(
            *log.borrow(),
            ["line one", "line two", "lost Done"],
            "chunks of {chunk}"
        );
    }
}
