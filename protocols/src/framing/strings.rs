//! [`StringReceiver`]: Twisted's `Int8/Int16/Int32StringReceiver` and `NetstringReceiver`,
//! one adapter over the length-prefixed and netstring decoders.

use std::cell::RefCell;
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use torsion_reactor::{catch_unwind_message, CloseReason, Protocol, Transport};

use super::length_prefixed::{PrefixDecoder, PrefixWidth, DEFAULT_MAX_STRING_LENGTH};
use super::netstring::{NetstringDecoder, DEFAULT_MAX_NETSTRING_LENGTH};
use super::receiver::{Core, Drain, HoldsFrame, ReceiverHandle};
use super::sender::{self, Encoding, FrameSender};
use super::{Decoder, EncodeError, Flow, FrameError, Progress};

/// Room for a prefix or netstring header on top of the maximum length.
const HEADER_SLACK: usize = 32;

/// The per-connection logic of a [`StringReceiver`]: what to do with each string.
///
/// Only [`string_received`](StringHandler::string_received) is required. Every callback gets
/// a [`StringContext`], which dereferences to the connection's [`Transport`] and adds
/// [`send_string`](StringContext::send_string), pausing and error closes.
///
/// ```
/// use torsion_protocols::framing::{StringContext, StringHandler, StringReceiver};
/// use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};
///
/// /// Answers each string with it reversed.
/// struct Reverse;
///
/// impl StringHandler for Reverse {
///     fn string_received(&mut self, ctx: &mut StringContext<'_>, s: &[u8]) {
///         let reversed: Vec<u8> = s.iter().rev().copied().collect();
///         ctx.send_string(&reversed).expect("as short as the request");
///     }
/// }
///
/// let mr = MemoryReactor::new();
/// let st = StringTransport::with_options(&mr, StringReceiver::int16(Reverse), MemoryOptions::chunked(1));
/// st.feed(b"\x00\x03abc");
/// assert_eq!(st.take(), b"\x00\x03cba");
/// ```
pub trait StringHandler: 'static {
    /// The connection is up.
    fn connection_made(&mut self, ctx: &mut StringContext<'_>) {
        let _ = ctx;
    }

    /// A whole string arrived. The slice points into the bytes just read whenever the string
    /// lay whole inside one read: copy what you keep.
    fn string_received(&mut self, ctx: &mut StringContext<'_>, string: &[u8]);

    /// The peer announced a string over the maximum (Twisted's `lengthLimitExceeded`) or sent
    /// a malformed netstring. The stream cannot be resynchronised, so the connection is
    /// closed after this returns whatever it does; the default closes it with
    /// [`CloseReason::ProtocolError`] carrying the error's message. Override it to write a
    /// last message first, or to choose the message.
    fn frame_error(&mut self, ctx: &mut StringContext<'_>, error: &FrameError) {
        ctx.close_with_error(error.to_string());
    }

    /// The connection is closed, for `reason`; the last callback.
    fn connection_lost(&mut self, reason: CloseReason) {
        let _ = reason;
    }
}

#[derive(Clone, Debug)]
enum AnyDecoder {
    Prefix(PrefixDecoder),
    Netstring(NetstringDecoder),
}

/// What a [`StringHandler`] callback can do besides using the [`Transport`] (which the
/// context dereferences to).
pub struct StringContext<'a> {
    transport: &'a dyn Transport,
    core: &'a mut Core,
    encoding: &'a Encoding,
    max: usize,
}

impl<'a> StringContext<'a> {
    /// The connection's transport.
    pub fn transport(&self) -> &'a dyn Transport {
        self.transport
    }

    /// Writes `string` in this receiver's framing (one vectored write, no copy).
    ///
    /// # Errors
    /// [`EncodeError::TooLong`] if it does not fit the length prefix (Twisted's
    /// `StringTooLongError`); nothing is written then. Netstrings never fail.
    pub fn send_string(&self, string: &[u8]) -> Result<(), EncodeError> {
        match self.encoding {
            Encoding::Prefix(width) => sender::write_prefixed(self.transport, *width, string),
            Encoding::Netstring => {
                sender::write_netstring(self.transport, string);
                Ok(())
            }
            Encoding::Line(delimiter) => {
                sender::write_line(self.transport, string, delimiter);
                Ok(())
            }
        }
    }

    /// A cloneable sender of strings on this connection, usable outside callbacks.
    pub fn sender(&self) -> FrameSender {
        FrameSender::new(self.transport.handle(), self.encoding.clone())
    }

    /// The maximum string length accepted from the peer.
    pub fn max_length(&self) -> usize {
        self.max
    }

    /// Stops delivering strings (and pauses reading) until [`ReceiverHandle::resume`].
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
    /// [`StringHandler::connection_lost`]. No string is delivered after this.
    pub fn close_with_error(&mut self, message: impl Into<String>) {
        self.core.close_with_error(self.transport, message.into());
    }
}

impl<'a> std::ops::Deref for StringContext<'a> {
    type Target = dyn Transport + 'a;
    fn deref(&self) -> &Self::Target {
        self.transport
    }
}

impl fmt::Debug for StringContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StringContext")
            .field("encoding", self.encoding)
            .field("peer", &self.transport.peer_address())
            .finish()
    }
}

struct StringInner<H> {
    handler: H,
    decoder: AnyDecoder,
    encoding: Encoding,
    max: usize,
    core: Core,
}

impl<H: StringHandler> StringInner<H> {
    fn process(&mut self, t: &dyn Transport, data: &[u8]) {
        match &mut self.decoder {
            AnyDecoder::Prefix(d) => run(
                t,
                data,
                d,
                &mut self.handler,
                &mut self.core,
                &self.encoding,
                self.max,
            ),
            AnyDecoder::Netstring(d) => run(
                t,
                data,
                d,
                &mut self.handler,
                &mut self.core,
                &self.encoding,
                self.max,
            ),
        }
    }
}

/// The delivery loop, monomorphised per decoder.
fn run<D: Decoder + HoldsFrame, H: StringHandler>(
    t: &dyn Transport,
    data: &[u8],
    decoder: &mut D,
    handler: &mut H,
    core: &mut Core,
    encoding: &Encoding,
    max: usize,
) {
    let mut input = data;
    loop {
        if core.stopped(t) {
            return;
        }
        if core.shared.is_paused() {
            core.buffer_while_paused(t, decoder, input, max.saturating_add(HEADER_SLACK));
            return;
        }
        let result = decoder.decode(input, |string| {
            core.frame_arrived();
            let mut ctx = StringContext {
                transport: t,
                core: &mut *core,
                encoding,
                max,
            };
            handler.string_received(&mut ctx, string);
            if core.shared.is_paused() || t.is_fully_closing() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        match result {
            Ok(Progress::Consumed) => return,
            Ok(Progress::Stopped { at }) => input = &input[at..],
            Err(error) => {
                let mut ctx = StringContext {
                    transport: t,
                    core: &mut *core,
                    encoding,
                    max,
                };
                handler.frame_error(&mut ctx, &error);
                if !core.stopped(t) {
                    core.close_with_error(t, error.to_string());
                }
                return;
            }
        }
    }
}

impl<H: StringHandler> Drain for RefCell<StringInner<H>> {
    fn drain(&self, transport: &dyn Transport) {
        if let Ok(mut inner) = self.try_borrow_mut() {
            let delivered = catch_unwind_message(|| inner.process(transport, &[]));
            inner.core.drained(transport, delivered);
        }
    }
}

/// Twisted's `Int8StringReceiver`, `Int16StringReceiver`, `Int32StringReceiver` and
/// `NetstringReceiver`: a [`Protocol`] that splits the byte stream into strings for a
/// [`StringHandler`].
///
/// - length-prefixed: a 1, 2 or 4-byte big-endian unsigned length, then the bytes;
///   netstrings: `LEN:DATA,`;
/// - the maximum length defaults to 99,999 ([`max_length`](Self::max_length)); a longer
///   announced length is refused as soon as the prefix is read, before anything is buffered,
///   and the connection is closed ([`StringHandler::frame_error`]); so is a malformed
///   netstring;
/// - pausing, closing and zero-copy delivery work as for
///   [`LineReceiver`](super::LineReceiver).
///
/// ```
/// use torsion_protocols::framing::{StringContext, StringHandler, StringReceiver};
/// use torsion_reactor::testing::{MemoryReactor, StringTransport};
/// use torsion_reactor::CloseReason;
///
/// struct Echo;
/// impl StringHandler for Echo {
///     fn string_received(&mut self, ctx: &mut StringContext<'_>, s: &[u8]) {
///         ctx.send_string(s).unwrap();
///     }
/// }
///
/// let mr = MemoryReactor::new();
/// let st = StringTransport::connect(&mr, StringReceiver::netstring(Echo));
/// st.feed(b"5:hello,");
/// assert_eq!(st.take(), b"5:hello,");
/// st.feed(b"5:hello;"); // malformed: closed
/// assert!(st.fin_received());
/// ```
pub struct StringReceiver<H: StringHandler> {
    inner: Rc<RefCell<StringInner<H>>>,
}

impl<H: StringHandler> StringReceiver<H> {
    fn with(handler: H, decoder: AnyDecoder, encoding: Encoding, max: usize) -> Self {
        let inner = Rc::new(RefCell::new(StringInner {
            handler,
            decoder,
            encoding,
            max,
            core: Core::new(),
        }));
        let weak: Weak<dyn Drain> = Rc::downgrade(&inner) as Weak<RefCell<StringInner<H>>>;
        inner.borrow().core.shared.set_drain(weak);
        StringReceiver { inner }
    }

    /// Strings behind a length prefix of `width` (at most 99,999 bytes by default).
    pub fn prefixed(handler: H, width: PrefixWidth) -> Self {
        Self::with(
            handler,
            AnyDecoder::Prefix(PrefixDecoder::new(width)),
            Encoding::Prefix(width),
            DEFAULT_MAX_STRING_LENGTH,
        )
    }

    /// Twisted's `Int8StringReceiver`: a 1-byte length prefix.
    pub fn int8(handler: H) -> Self {
        Self::prefixed(handler, PrefixWidth::Int8)
    }

    /// Twisted's `Int16StringReceiver`: a 2-byte big-endian length prefix.
    pub fn int16(handler: H) -> Self {
        Self::prefixed(handler, PrefixWidth::Int16)
    }

    /// Twisted's `Int32StringReceiver`: a 4-byte big-endian length prefix.
    pub fn int32(handler: H) -> Self {
        Self::prefixed(handler, PrefixWidth::Int32)
    }

    /// Twisted's `NetstringReceiver`: `LEN:DATA,`.
    pub fn netstring(handler: H) -> Self {
        Self::with(
            handler,
            AnyDecoder::Netstring(NetstringDecoder::new()),
            Encoding::Netstring,
            DEFAULT_MAX_NETSTRING_LENGTH,
        )
    }

    /// Sets the maximum string length accepted from the peer (Twisted's `MAX_LENGTH`;
    /// default 99,999).
    pub fn max_length(self, max_length: usize) -> Self {
        {
            let mut inner = self.inner.borrow_mut();
            inner.max = max_length;
            inner.decoder = match &inner.decoder {
                AnyDecoder::Prefix(d) => {
                    AnyDecoder::Prefix(PrefixDecoder::with_max_length(d.width(), max_length))
                }
                AnyDecoder::Netstring(_) => {
                    AnyDecoder::Netstring(NetstringDecoder::with_max_length(max_length))
                }
            };
        }
        self
    }

    /// Closes the connection (with [`CloseReason::TimedOut`] reported to the handler) unless
    /// a first whole string arrives within `timeout` of the connection starting.
    ///
    /// A string that arrives while the receiver is paused counts when it arrives, though it
    /// is delivered only on resume. The clock keeps running while the receiver is paused, and
    /// a paused receiver reads nothing, so a pause before the first string can let it expire.
    pub fn first_frame_timeout(self, timeout: Duration) -> Self {
        self.inner.borrow_mut().core.first_frame_timeout = Some(timeout);
        self
    }

    /// A handle to pause and resume the receiver from outside its callbacks.
    pub fn handle(&self) -> ReceiverHandle {
        self.inner.borrow().core.handle()
    }
}

impl<H: StringHandler> Protocol for StringReceiver<H> {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        let t: &dyn Transport = transport;
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        inner.core.connection_made(t);
        let mut ctx = StringContext {
            transport: t,
            core: &mut inner.core,
            encoding: &inner.encoding,
            max: inner.max,
        };
        inner.handler.connection_made(&mut ctx);
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

impl<H: StringHandler> fmt::Debug for StringReceiver<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.try_borrow() {
            Ok(inner) => f
                .debug_struct("StringReceiver")
                .field("decoder", &inner.decoder)
                .finish(),
            Err(_) => f.write_str("StringReceiver { <busy> }"),
        }
    }
}
