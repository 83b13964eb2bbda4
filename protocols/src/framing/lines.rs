//! Lines: [`LineDecoder`] (the pure parser) and [`LineReceiver`] (Twisted's `LineReceiver`).
//!
//! A line is the bytes up to a delimiter (default CRLF); the delimiter is not part of the line.
//! A line longer than the maximum (default 16,384 bytes, as Twisted's `MAX_LENGTH`) is an
//! error. As in Twisted, the error is noticed either when the delimiter arrives after more
//! than the maximum, or when `max + delimiter length` bytes have arrived with no delimiter, so
//! a line of exactly the maximum always passes whatever the chunking.

use std::cell::RefCell;
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use torsion_reactor::{catch_unwind_message, CloseReason, Protocol, Transport};

use super::buffer::{Framer, Parser, Step, Want};
use super::receiver::{Core, Drain, ReceiverHandle};
use super::sender::{Encoding, FrameSender};
use super::{Decoder, Flow, FrameError, Progress};

/// The default line delimiter, as Twisted's `LineReceiver.delimiter`.
pub const DEFAULT_DELIMITER: &[u8] = b"\r\n";

/// The default maximum line length in bytes, as Twisted's `LineReceiver.MAX_LENGTH`.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 16_384;

#[derive(Clone)]
pub(crate) struct LineParser {
    delimiter: Box<[u8]>,
    max: usize,
    /// Bytes of the current candidate already searched without finding a delimiter.
    searched: usize,
}

impl LineParser {
    fn new(delimiter: &[u8], max: usize) -> Self {
        assert!(!delimiter.is_empty(), "a line delimiter cannot be empty");
        LineParser {
            delimiter: delimiter.into(),
            max,
            searched: 0,
        }
    }

    /// The start of the first whole delimiter in `hay`.
    #[inline]
    fn find(&self, hay: &[u8]) -> Option<usize> {
        let delim = &*self.delimiter;
        let d = delim.len();
        let last = delim[d - 1];
        if d == 1 {
            return find_byte(last, hay);
        }
        let mut from = d - 1;
        while from < hay.len() {
            let j = from + find_byte(last, &hay[from..])?;
            // (Short compares by hand: a call to `memcmp` per candidate costs more.)
            if d == 2 {
                if hay[j - 1] == delim[0] {
                    return Some(j - 1);
                }
            } else if bytes_eq(&hay[j + 1 - d..j], &delim[..d - 1]) {
                return Some(j + 1 - d);
            }
            from = j + 1;
        }
        None
    }

    /// Bytes of a delimiter that starts in `tail` and ends in `more`: the earliest such
    /// delimiter, as `k`, the number of its bytes in the tail.
    #[inline]
    fn spanning(&self, tail: &[u8], more: &[u8]) -> Option<usize> {
        let delim = &*self.delimiter;
        let d = delim.len();
        if d == 2 {
            return (tail.last() == Some(&delim[0]) && more.first() == Some(&delim[1]))
                .then_some(1);
        }
        (1..d).rev().find(|&k| {
            k <= tail.len()
                && more.len() >= d - k
                && bytes_eq(&tail[tail.len() - k..], &delim[..k])
                && bytes_eq(&more[..d - k], &delim[k..])
        })
    }
}

/// `memchr`, with a plain loop for short haystacks (small reads, the tail of a line), where
/// the vectorised search's setup costs more than it saves.
#[inline]
fn find_byte(b: u8, hay: &[u8]) -> Option<usize> {
    if hay.len() < 32 {
        hay.iter().position(|&x| x == b)
    } else {
        memchr::memchr(b, hay)
    }
}

/// Equality of two short slices, without a library call.
#[inline]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

impl Parser for LineParser {
    #[inline]
    fn parse(&mut self, input: &[u8]) -> Result<Step, FrameError> {
        let d = self.delimiter.len();
        let from = self.searched.saturating_sub(d - 1).min(input.len());
        match self.find(&input[from..]) {
            Some(i) => {
                self.searched = 0;
                let end = from + i;
                if end > self.max {
                    return Err(FrameError::LineTooLong { max: self.max });
                }
                Ok(Step::Frame {
                    start: 0,
                    end,
                    consumed: end + d,
                })
            }
            None if input.len() >= self.max.saturating_add(d) => {
                self.searched = 0;
                Err(FrameError::LineTooLong { max: self.max })
            }
            None => {
                self.searched = input.len();
                Ok(Step::Incomplete)
            }
        }
    }

    #[inline]
    fn wanted(&mut self, tail: &[u8], more: &[u8]) -> Want {
        let d = self.delimiter.len();
        let limit = self.max.saturating_add(d);
        // A line of `len` bytes ending `take` bytes into `more`.
        let frame = |len: usize, take: usize| {
            if len > self.max {
                Want::Parse(take) // parse reports the error
            } else {
                Want::Frame(
                    take,
                    Step::Frame {
                        start: 0,
                        end: len,
                        consumed: len + d,
                    },
                )
            }
        };
        // A delimiter that starts in the tail and ends in `more` (earliest start first).
        if let Some(k) = self.spanning(tail, more) {
            self.searched = 0;
            return frame(tail.len() - k, d - k);
        }
        match self.find(more) {
            Some(p) => {
                self.searched = 0;
                frame(tail.len() + p, p + d)
            }
            // Everything fits under the limit: the buffer stays an incomplete line.
            None if tail.len() + more.len() < limit => {
                self.searched = tail.len() + more.len();
                Want::More(more.len())
            }
            // Up to the limit, where parse reports the error.
            None => Want::Parse(limit.saturating_sub(tail.len()).max(1)),
        }
    }

    fn restart(&mut self) {
        self.searched = 0;
    }

    fn max_length(&self) -> usize {
        self.max
    }
}

/// The pure line parser: bytes in, lines out, no I/O.
///
/// ```
/// use torsion_protocols::framing::{Decoder, Flow, LineDecoder};
///
/// let mut decoder = LineDecoder::new();
/// let mut lines = Vec::new();
/// for chunk in [&b"hel"[..], b"lo\r\nwor", b"ld\r", b"\n"] {
///     decoder
///         .decode(chunk, |line| {
///             lines.push(line.to_vec());
///             Flow::Continue
///         })
///         .unwrap();
/// }
/// assert_eq!(lines, [b"hello".to_vec(), b"world".to_vec()]);
/// ```
#[derive(Clone)]
pub struct LineDecoder {
    framer: Framer<LineParser>,
}

impl LineDecoder {
    /// A decoder for CRLF-delimited lines of at most 16,384 bytes.
    pub fn new() -> Self {
        Self::with_options(DEFAULT_DELIMITER, DEFAULT_MAX_LINE_LENGTH)
    }

    /// A decoder for lines ending in `delimiter`, of at most `max_length` bytes.
    ///
    /// # Panics
    /// If `delimiter` is empty.
    pub fn with_options(delimiter: &[u8], max_length: usize) -> Self {
        LineDecoder {
            framer: Framer::new(LineParser::new(delimiter, max_length)),
        }
    }

    /// The delimiter lines end with.
    pub fn delimiter(&self) -> &[u8] {
        &self.framer.parser.delimiter
    }
}

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LineDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineDecoder")
            .field("delimiter", &self.delimiter())
            .field("max_length", &self.framer.parser.max)
            .field("buffered", &self.framer.buffered())
            .finish()
    }
}

super::forward_decoder!(LineDecoder);

/// Appends `line` and `delimiter` to `out` (what [`LineContext::send_line`] writes).
pub fn encode_line(line: &[u8], delimiter: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(line);
    out.extend_from_slice(delimiter);
}

/// The per-connection logic of a [`LineReceiver`]: what to do with each line.
///
/// Only [`line_received`](LineHandler::line_received) is required. Every callback gets a
/// [`LineContext`], which dereferences to the connection's [`Transport`] and adds
/// [`send_line`](LineContext::send_line), raw mode, pausing and error closes.
///
/// ```
/// use torsion_protocols::framing::{LineContext, LineHandler, LineReceiver};
/// use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};
///
/// /// Answers each line with its length.
/// struct Measure;
///
/// impl LineHandler for Measure {
///     fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
///         ctx.send_line(line.len().to_string().as_bytes());
///     }
/// }
///
/// let mr = MemoryReactor::new();
/// let st = StringTransport::with_options(&mr, LineReceiver::new(Measure), MemoryOptions::chunked(3));
/// st.feed(b"hello\r\nworld!\r\n");
/// assert_eq!(st.take(), b"5\r\n6\r\n");
/// ```
pub trait LineHandler: 'static {
    /// The connection is up (a greeting can be sent from here).
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        let _ = ctx;
    }

    /// A whole line arrived (without its delimiter). The slice points into the bytes just
    /// read whenever the line lay whole inside one read: copy what you keep.
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]);

    /// Bytes that arrived in raw mode (after [`LineContext::set_raw_mode`]), in any chunking.
    /// Call [`LineContext::set_line_mode`] with the bytes you did not consume to go back to
    /// lines. The default drops the bytes.
    fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        let _ = (ctx, data);
    }

    /// A line longer than [`LineContext::max_length`] arrived. The default closes the
    /// connection with [`CloseReason::ProtocolError`] (see
    /// [`LineContext::close_with_error`]).
    ///
    /// Before this is called, the receiver discards, as Twisted discards its buffer, the
    /// too-long line as far as it was read **and everything after it in the same read**,
    /// whole lines included: `toolong\r\nfine\r\n` in one read (maximum 4) delivers no
    /// `fine`. An override that does not close goes on with the next read, parsed as the
    /// start of a new line, as in Twisted. What is lost therefore depends on how the stream
    /// was split into reads; and when the error is noticed before the delimiter (maximum plus
    /// delimiter length bytes without one), the rest of the too-long line, read later, comes
    /// out as a line of its own (`toolong\r\nfine\r\n` one byte per read delivers `g`, then
    /// `fine`). Keep a connection open only if the protocol can resynchronise on that.
    fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>) {
        let max = ctx.max_length();
        ctx.close_with_error(format!("line longer than {max} bytes"));
    }

    /// The connection is closed, for `reason`; the last callback.
    fn connection_lost(&mut self, reason: CloseReason) {
        let _ = reason;
    }
}

/// Where `set_line_mode` asked parsing to resume.
#[derive(Debug, Default)]
enum Extra {
    #[default]
    None,
    /// A sub-slice of the raw bytes being delivered.
    Range(usize, usize),
    /// Bytes from elsewhere.
    Owned(Vec<u8>),
}

#[derive(Debug)]
struct LineControl {
    raw: bool,
    extra: Extra,
    /// Address range of the raw bytes being delivered, to recognise `set_line_mode(&data[n..])`.
    raw_range: (usize, usize),
    delimiter: Rc<[u8]>,
    max: usize,
}

/// What a [`LineHandler`] callback can do besides using the [`Transport`] (which the context
/// dereferences to: `ctx.write(..)`, `ctx.lose_connection()`, `ctx.handle()`…).
pub struct LineContext<'a> {
    transport: &'a dyn Transport,
    core: &'a mut Core,
    ctl: &'a mut LineControl,
}

impl<'a> LineContext<'a> {
    /// The connection's transport.
    pub fn transport(&self) -> &'a dyn Transport {
        self.transport
    }

    /// Writes `line` followed by the delimiter (one vectored write, no copy).
    pub fn send_line(&self, line: &[u8]) {
        super::sender::write_line(self.transport, line, &self.ctl.delimiter);
    }

    /// A cloneable sender of lines on this connection, usable outside callbacks (for example
    /// to broadcast to other connections).
    pub fn sender(&self) -> FrameSender {
        FrameSender::new(
            self.transport.handle(),
            Encoding::Line(self.ctl.delimiter.clone()),
        )
    }

    /// Switches to raw mode: from the next byte after the current line, data goes to
    /// [`LineHandler::raw_data_received`] (bytes already read included).
    pub fn set_raw_mode(&mut self) {
        self.ctl.raw = true;
    }

    /// Switches back to line mode (if not in it already) and puts `extra` in front of the
    /// rest of the stream: it is parsed for lines before anything not yet delivered.
    ///
    /// - Called from `raw_data_received`, `extra` is the part of the raw data not consumed
    ///   (usually `&data[n..]`); anything else the callback was given is considered consumed.
    /// - Called from `line_received`, `extra` is parsed right after the current line, before
    ///   the lines that followed it on the wire, whatever the chunking (Twisted appends it
    ///   after the rest of its buffer instead, so there it comes after the rest of the
    ///   current read, which depends on how the stream was split into reads). Pausing or
    ///   switching to raw mode in the same callback applies to `extra` as to the stream.
    /// - Called from `connection_made`, `extra` is parsed at once; from
    ///   `line_length_exceeded` (if the connection stays open), `extra` is parsed at once and
    ///   the rest of the read is still discarded.
    ///
    /// A second call in the same callback replaces the first one's `extra`.
    pub fn set_line_mode(&mut self, extra: &[u8]) {
        self.ctl.raw = false;
        if extra.is_empty() {
            self.ctl.extra = Extra::None;
            return;
        }
        // A sub-slice of the raw data being delivered is resumed in place (no copy). Two live
        // slices that overlap in address space are parts of the same allocation, so an
        // address inside the raw range identifies a sub-slice of it.
        let (lo, hi) = self.ctl.raw_range;
        let addr = extra.as_ptr() as usize;
        if addr >= lo && addr + extra.len() <= hi {
            self.ctl.extra = Extra::Range(addr - lo, addr - lo + extra.len());
        } else {
            self.ctl.extra = Extra::Owned(extra.to_vec());
        }
    }

    /// `true` while in raw mode.
    pub fn is_raw_mode(&self) -> bool {
        self.ctl.raw
    }

    /// The maximum line length.
    pub fn max_length(&self) -> usize {
        self.ctl.max
    }

    /// The line delimiter.
    pub fn delimiter(&self) -> &[u8] {
        &self.ctl.delimiter
    }

    /// Stops delivering lines (and pauses reading) until [`ReceiverHandle::resume`]. Lines
    /// already read stay buffered and are delivered on resume.
    pub fn pause(&mut self) {
        self.core.shared.pause();
    }

    /// A handle to pause and resume this receiver from outside its callbacks.
    pub fn receiver(&self) -> ReceiverHandle {
        self.core.handle()
    }

    /// Closes the connection because of a protocol error: logs `message` at debug level,
    /// closes gracefully ([`Transport::lose_connection`]: what was written is still flushed),
    /// and reports [`CloseReason::ProtocolError`]`(message)` to
    /// [`LineHandler::connection_lost`]. No line is delivered after this.
    pub fn close_with_error(&mut self, message: impl Into<String>) {
        self.core.close_with_error(self.transport, message.into());
    }
}

impl<'a> std::ops::Deref for LineContext<'a> {
    type Target = dyn Transport + 'a;
    fn deref(&self) -> &Self::Target {
        self.transport
    }
}

impl fmt::Debug for LineContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineContext")
            .field("raw", &self.ctl.raw)
            .field("peer", &self.transport.peer_address())
            .finish()
    }
}

struct LineInner<H> {
    handler: H,
    decoder: LineDecoder,
    ctl: LineControl,
    core: Core,
}

impl<H: LineHandler> LineInner<H> {
    fn ctx<'a>(
        transport: &'a dyn Transport,
        core: &'a mut Core,
        ctl: &'a mut LineControl,
    ) -> LineContext<'a> {
        LineContext {
            transport,
            core,
            ctl,
        }
    }

    /// Hands `data` to the raw handler; returns what `set_line_mode` asked for.
    fn deliver_raw(&mut self, t: &dyn Transport, data: &[u8]) -> Extra {
        self.core.frame_arrived();
        let range = data.as_ptr_range();
        self.ctl.raw_range = (range.start as usize, range.end as usize);
        self.ctl.extra = Extra::None;
        let mut ctx = Self::ctx(t, &mut self.core, &mut self.ctl);
        self.handler.raw_data_received(&mut ctx, data);
        self.ctl.raw_range = (0, 0);
        std::mem::take(&mut self.ctl.extra)
    }

    /// Puts bytes that `set_line_mode` was given outside raw delivery in front of the rest of
    /// the stream (before whatever the decoder still holds). `true` if there were any.
    fn resume_extra(&mut self) -> bool {
        match std::mem::take(&mut self.ctl.extra) {
            Extra::None => false,
            // (A `Range` only comes from raw delivery, which consumes it itself.)
            Extra::Owned(extra) => {
                let rest = self.decoder.take_buffered();
                self.decoder.push_back(&extra);
                self.decoder.push_back(&rest);
                true
            }
            Extra::Range(..) => false,
        }
    }

    fn process(&mut self, t: &dyn Transport, data: &[u8]) {
        let mut input = data;
        loop {
            if self.core.stopped(t) {
                return;
            }
            if self.core.shared.is_paused() {
                if self.ctl.raw && !input.is_empty() {
                    self.core.frame_arrived(); // raw bytes count as a frame
                }
                let max = self.decoder.max_length();
                self.core
                    .buffer_while_paused(t, &mut self.decoder, input, max);
                return;
            }
            if self.ctl.raw {
                if self.decoder.buffered() > 0 {
                    let buffered = self.decoder.take_buffered();
                    match self.deliver_raw(t, &buffered) {
                        Extra::None => {}
                        Extra::Range(s, e) => self.decoder.push_back(&buffered[s..e]),
                        Extra::Owned(v) => self.decoder.push_back(&v),
                    }
                    continue;
                }
                if input.is_empty() {
                    return;
                }
                match self.deliver_raw(t, input) {
                    Extra::None => return,
                    Extra::Range(s, e) => input = &input[s..e],
                    Extra::Owned(v) => {
                        self.decoder.push_back(&v);
                        input = &[];
                    }
                }
                continue;
            }
            let LineInner {
                handler,
                decoder,
                ctl,
                core,
            } = self;
            let result = decoder.decode(input, |line| {
                core.frame_arrived();
                let mut ctx = Self::ctx(t, core, ctl);
                handler.line_received(&mut ctx, line);
                if ctl.raw
                    || !matches!(ctl.extra, Extra::None)
                    || core.shared.is_paused()
                    || t.is_fully_closing()
                {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            });
            match result {
                Ok(Progress::Consumed) => return,
                Ok(Progress::Stopped { at }) => {
                    input = &input[at..];
                    self.resume_extra();
                }
                Err(_) => {
                    let mut ctx = Self::ctx(t, &mut self.core, &mut self.ctl);
                    self.handler.line_length_exceeded(&mut ctx);
                    // The rest of the read is discarded (see `line_length_exceeded`).
                    if !self.resume_extra() {
                        return;
                    }
                    input = &[];
                }
            }
        }
    }
}

impl<H: LineHandler> Drain for RefCell<LineInner<H>> {
    fn drain(&self, transport: &dyn Transport) {
        if let Ok(mut inner) = self.try_borrow_mut() {
            let delivered = catch_unwind_message(|| inner.process(transport, &[]));
            inner.core.drained(transport, delivered);
        }
    }
}

/// Twisted's `LineReceiver`: a [`Protocol`] that splits the byte stream into lines for a
/// [`LineHandler`], with raw mode for binary payloads in between.
///
/// - lines end with the delimiter (default CRLF, [`delimiter`](Self::delimiter));
/// - a line over the maximum (default 16,384, [`max_length`](Self::max_length)) calls
///   [`LineHandler::line_length_exceeded`], which closes by default;
/// - [`LineContext::set_raw_mode`] / [`LineContext::set_line_mode`] switch mid-stream, with
///   bytes already read handed to the new mode in order (an HTTP-style header, then a body);
/// - the receiver pauses (no more lines delivered, reading paused, what was read kept) when
///   the transport's write buffer is full, on [`LineContext::pause`] or through its
///   [`ReceiverHandle`], and delivers nothing once the connection is closing;
/// - a line that lies whole inside one read is handed out in place, without a copy.
///
/// Raw mode (with extra bytes handed back):
///
/// ```
/// use torsion_protocols::framing::{LineContext, LineHandler, LineReceiver};
/// use torsion_reactor::testing::{MemoryReactor, StringTransport};
///
/// /// `LEN <n>` then `n` raw bytes, answered with `GOT <bytes>`.
/// #[derive(Default)]
/// struct Upload { remaining: usize, body: Vec<u8> }
///
/// impl LineHandler for Upload {
///     fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
///         let n = std::str::from_utf8(line).ok().and_then(|l| l.strip_prefix("LEN "));
///         match n.and_then(|n| n.parse().ok()) {
///             Some(n) => { self.remaining = n; ctx.set_raw_mode(); }
///             None => ctx.close_with_error("expected LEN <n>"),
///         }
///     }
///     fn raw_data_received(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
///         let n = self.remaining.min(data.len());
///         self.body.extend_from_slice(&data[..n]);
///         self.remaining -= n;
///         if self.remaining == 0 {
///             let body = std::mem::take(&mut self.body);
///             ctx.send_line(&[b"GOT ", &body[..]].concat());
///             ctx.set_line_mode(&data[n..]);
///         }
///     }
/// }
///
/// let mr = MemoryReactor::new();
/// let st = StringTransport::connect(&mr, LineReceiver::new(Upload::default()));
/// st.feed(b"LEN 3\r\nabcLEN 2\r\nxy");
/// assert_eq!(st.take(), b"GOT abc\r\nGOT xy\r\n");
/// ```
pub struct LineReceiver<H: LineHandler> {
    inner: Rc<RefCell<LineInner<H>>>,
}

impl<H: LineHandler> LineReceiver<H> {
    /// A receiver with the defaults: CRLF, lines of at most 16,384 bytes.
    pub fn new(handler: H) -> Self {
        let delimiter: Rc<[u8]> = DEFAULT_DELIMITER.into();
        let inner = Rc::new(RefCell::new(LineInner {
            handler,
            decoder: LineDecoder::new(),
            ctl: LineControl {
                raw: false,
                extra: Extra::None,
                raw_range: (0, 0),
                delimiter,
                max: DEFAULT_MAX_LINE_LENGTH,
            },
            core: Core::new(),
        }));
        let weak: Weak<dyn Drain> = Rc::downgrade(&inner) as Weak<RefCell<LineInner<H>>>;
        inner.borrow().core.shared.set_drain(weak);
        LineReceiver { inner }
    }

    /// Sets the delimiter (Twisted's `delimiter`; default CRLF).
    ///
    /// # Panics
    /// If `delimiter` is empty.
    pub fn delimiter(self, delimiter: &[u8]) -> Self {
        {
            let mut inner = self.inner.borrow_mut();
            let max = inner.ctl.max;
            inner.decoder = LineDecoder::with_options(delimiter, max);
            inner.ctl.delimiter = delimiter.into();
        }
        self
    }

    /// Sets the maximum line length (Twisted's `MAX_LENGTH`; default 16,384).
    pub fn max_length(self, max_length: usize) -> Self {
        {
            let mut inner = self.inner.borrow_mut();
            let delimiter = inner.ctl.delimiter.clone();
            inner.decoder = LineDecoder::with_options(&delimiter, max_length);
            inner.ctl.max = max_length;
        }
        self
    }

    /// Closes the connection (with [`CloseReason::TimedOut`] reported to the handler) unless
    /// a first whole line arrives within `timeout` of the connection starting: a defence
    /// against peers that open connections and trickle bytes (slowloris). In raw mode, any
    /// raw bytes count as a line.
    ///
    /// A line that arrives while the receiver is paused counts when it arrives, though it is
    /// delivered only on resume. The clock keeps running while the receiver is paused, and a
    /// paused receiver reads nothing, so a pause before the first line can let it expire.
    pub fn first_frame_timeout(self, timeout: Duration) -> Self {
        self.inner.borrow_mut().core.first_frame_timeout = Some(timeout);
        self
    }

    /// Starts in raw mode (for protocols that begin with binary data).
    pub fn raw_mode(self) -> Self {
        self.inner.borrow_mut().ctl.raw = true;
        self
    }

    /// A handle to pause and resume the receiver from outside its callbacks.
    pub fn handle(&self) -> ReceiverHandle {
        self.inner.borrow().core.handle()
    }
}

impl<H: LineHandler> Protocol for LineReceiver<H> {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        let t: &dyn Transport = transport;
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        inner.core.connection_made(t);
        let mut ctx = LineInner::<H>::ctx(t, &mut inner.core, &mut inner.ctl);
        inner.handler.connection_made(&mut ctx);
        if inner.resume_extra() {
            inner.process(t, &[]);
        }
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.inner.borrow_mut().process(transport, data);
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        let mut inner = self.inner.borrow_mut();
        let reason = inner.core.connection_lost(reason);
        inner.handler.connection_lost(reason);
    }

    fn pause_producing(&mut self, transport: &mut dyn Transport) {
        self.inner.borrow().core.shared.flow_pause(transport);
    }

    fn resume_producing(&mut self, transport: &mut dyn Transport) {
        let mut inner = self.inner.borrow_mut();
        if inner.core.shared.flow_resume(transport) {
            inner.process(transport, &[]);
            inner.core.shared.resume_reading_if_running(transport);
        }
    }
}

impl<H: LineHandler> fmt::Debug for LineReceiver<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.try_borrow() {
            Ok(inner) => f
                .debug_struct("LineReceiver")
                .field("decoder", &inner.decoder)
                .field("raw", &inner.ctl.raw)
                .finish(),
            Err(_) => f.write_str("LineReceiver { <busy> }"),
        }
    }
}
