//! Framing: turning a byte stream into messages, wire-compatible with Twisted's receivers of
//! the same names.
//!
//! # The model
//!
//! Each format has two halves:
//!
//! - a **decoder**, a pure state machine with no I/O: bytes in (in any chunking), frames out
//!   through a callback ([`Decoder::decode`]). It can be fuzzed, property-tested and
//!   benchmarked alone: [`LineDecoder`], [`PrefixDecoder`], [`NetstringDecoder`];
//! - a **receiver**, a thin [`Protocol`](torsion_reactor::Protocol) that drives a decoder
//!   from `data_received` and calls a small handler trait you implement:
//!   [`LineReceiver`] + [`LineHandler`], [`StringReceiver`] + [`StringHandler`].
//!
//! | format | receiver | handler callback | default max | Twisted |
//! |---|---|---|---|---|
//! | lines (`…\r\n`) | [`LineReceiver::new`] | `line_received` | 16,384 | `LineReceiver` |
//! | 1-byte length + data | [`StringReceiver::int8`] | `string_received` | 99,999 (255 by the prefix) | `Int8StringReceiver` |
//! | 2-byte length + data | [`StringReceiver::int16`] | `string_received` | 99,999 | `Int16StringReceiver` |
//! | 4-byte length + data | [`StringReceiver::int32`] | `string_received` | 99,999 | `Int32StringReceiver` |
//! | `LEN:DATA,` | [`StringReceiver::netstring`] | `string_received` | 99,999 | `NetstringReceiver` |
//!
//! # Guarantees
//!
//! - **Any chunking decodes the same.** Frames split across reads, down to one byte per
//!   read, are delivered exactly as if they had arrived in one piece; errors are reported
//!   after the same frames. (Property-tested for every split point of every input.)
//! - **No copy when a frame lies whole inside one read**: the handler gets a slice of the
//!   bytes just read. Only the incomplete tail of a read is buffered; completing it copies
//!   just the bytes that frame needs, and the rest of the read is again parsed in place.
//! - **Bounded memory.** A decoder never buffers more than the maximum frame size plus one
//!   read; an oversized length prefix is refused as soon as the prefix is complete, before
//!   anything of the body is buffered.
//! - **Pause and resume.** A receiver stops delivering frames (and pauses reading) when the
//!   transport's write buffer passes its high watermark, when a handler calls `ctx.pause()`,
//!   or through its [`ReceiverHandle`]; frames already read stay buffered and are delivered
//!   on resume, before reading starts again.
//! - **Nothing after close.** Once a full close started ([`Transport::is_fully_closing`]),
//!   no further frame is delivered, even from the rest of the current read. After a
//!   half-close of our own ([`lose_write_connection`](Transport::lose_write_connection))
//!   frames go on arriving: a client can send its request, half-close, and read the reply.
//!
//! # Errors and how connections close
//!
//! A frame over the limit or malformed input closes the connection through one documented
//! path: `ctx.close_with_error(message)` ([`LineContext::close_with_error`],
//! [`StringContext::close_with_error`]) logs the message at debug level, calls
//! [`Transport::lose_connection`] (a graceful close: what the handler wrote, say an error
//! reply, is still flushed), and the handler's `connection_lost` then receives
//! [`CloseReason::ProtocolError`](torsion_reactor::CloseReason::ProtocolError)`(message)` in
//! place of the transport's `Done`. (The transport itself reports `Done` to whatever observes
//! it from outside, such as a connector.) Handlers can use the same call for their own
//! protocol errors. A [`first_frame_timeout`](LineReceiver::first_frame_timeout) that
//! expires aborts the connection and reports
//! [`CloseReason::TimedOut`](torsion_reactor::CloseReason::TimedOut).
//!
//! # Example: a line-based protocol, tested without a socket
//!
//! ```
//! use torsion_protocols::framing::{LineContext, LineHandler, LineReceiver};
//! use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};
//! use torsion_reactor::CloseReason;
//!
//! struct Shout;
//!
//! impl LineHandler for Shout {
//!     fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
//!         if line == b"QUIT" {
//!             ctx.lose_connection(); // ctx dereferences to the Transport
//!         } else {
//!             ctx.send_line(&line.to_ascii_uppercase());
//!         }
//!     }
//! }
//!
//! let mr = MemoryReactor::new();
//! let receiver = LineReceiver::new(Shout).max_length(10);
//! let st = StringTransport::with_options(&mr, receiver, MemoryOptions::chunked(1));
//! st.feed(b"hi\r\nthere\r\n");
//! assert_eq!(st.take(), b"HI\r\nTHERE\r\n");
//! st.feed(b"this line is too long\r\n");
//! assert!(st.fin_received()); // closed: line over the limit
//! ```

mod buffer;
mod echo;
mod length_prefixed;
mod lines;
mod netstring;
mod receiver;
mod sender;
mod strings;

use std::fmt;
use std::str::FromStr;

use torsion_reactor::Transport;

pub use echo::{frame_echo, FrameEchoOptions};
pub use length_prefixed::{encode_prefixed, PrefixDecoder, PrefixWidth, DEFAULT_MAX_STRING_LENGTH};
pub use lines::{
    encode_line, LineContext, LineDecoder, LineHandler, LineReceiver, DEFAULT_DELIMITER,
    DEFAULT_MAX_LINE_LENGTH,
};
pub use netstring::{encode_netstring, NetstringDecoder, DEFAULT_MAX_NETSTRING_LENGTH};
pub use receiver::ReceiverHandle;
pub use sender::FrameSender;
pub use strings::{StringContext, StringHandler, StringReceiver};

/// What a frame callback tells the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Deliver the next frame.
    Continue,
    /// Stop here: [`Decoder::decode`] returns [`Progress::Stopped`] at once.
    Stop,
}

/// How far [`Decoder::decode`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every byte was used: delivered as frames or kept as the start of the next one.
    Consumed,
    /// The callback returned [`Flow::Stop`]. `data[at..]` was not looked at, and the decoder
    /// may still hold whole frames of its own: give the bytes back with
    /// [`Decoder::push_back`] and call `decode(&[])` later to go on, or take them all
    /// ([`Decoder::take_buffered`], then `data[at..]`) to hand them elsewhere.
    Stopped {
        /// Offset in `data` of the first byte not used.
        at: usize,
    },
}

/// A streaming frame decoder: a pure state machine, bytes in and frames out.
///
/// Implemented by [`LineDecoder`], [`PrefixDecoder`] and [`NetstringDecoder`].
pub trait Decoder {
    /// Feeds `data` (any chunk of the stream, possibly empty) and calls `on_frame` with each
    /// whole frame's payload, in order. A frame that lies whole inside `data` is passed as a
    /// slice of `data`; only a frame completed from earlier bytes comes from the decoder's
    /// buffer.
    ///
    /// # Errors
    /// A [`FrameError`] when the stream is invalid (frames before the error were delivered).
    /// The decoder then drops what it had buffered and the rest of `data`; what follows is
    /// parsed as a new stream (meaningful for lines only).
    fn decode<F>(&mut self, data: &[u8], on_frame: F) -> Result<Progress, FrameError>
    where
        F: FnMut(&[u8]) -> Flow;

    /// Appends bytes to be decoded before whatever is fed next (after [`Progress::Stopped`]).
    fn push_back(&mut self, data: &[u8]);

    /// Removes and returns every buffered byte (for handing the stream to another parser).
    fn take_buffered(&mut self) -> Vec<u8>;

    /// Bytes held in the buffer.
    fn buffered(&self) -> usize;

    /// Drops every buffered byte.
    fn clear(&mut self);

    /// The largest frame payload accepted.
    fn max_length(&self) -> usize;
}

/// Implements [`Decoder`] for a wrapper around a `Framer` field named `framer`.
macro_rules! forward_decoder {
    ($ty:ty) => {
        impl $crate::framing::Decoder for $ty {
            #[inline]
            fn decode<F>(
                &mut self,
                data: &[u8],
                on_frame: F,
            ) -> Result<$crate::framing::Progress, $crate::framing::FrameError>
            where
                F: FnMut(&[u8]) -> $crate::framing::Flow,
            {
                self.framer.decode(data, on_frame)
            }
            fn push_back(&mut self, data: &[u8]) {
                self.framer.push_back(data)
            }
            fn take_buffered(&mut self) -> Vec<u8> {
                self.framer.take_buffered()
            }
            fn buffered(&self) -> usize {
                self.framer.buffered()
            }
            fn clear(&mut self) {
                self.framer.clear()
            }
            fn max_length(&self) -> usize {
                $crate::framing::buffer::Parser::max_length(&self.framer.parser)
            }
        }

        impl $crate::framing::receiver::HoldsFrame for $ty {
            fn holds_frame(&mut self) -> bool {
                self.framer.holds_frame()
            }
        }
    };
}
pub(crate) use forward_decoder;

/// Why a byte stream could not be decoded. Every variant closes the connection in the
/// receivers (lines: through [`LineHandler::line_length_exceeded`], which can choose not to).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A line longer than the maximum.
    LineTooLong {
        /// The maximum line length.
        max: usize,
    },
    /// A length prefix or netstring length over the maximum, or (under a maximum near
    /// `usize::MAX`) one whose whole frame would not fit in a `usize`.
    TooLong {
        /// The length announced (as much of it as was read before it passed the maximum).
        announced: u64,
        /// The maximum length.
        max: usize,
    },
    /// Input that does not follow the format (netstrings); the text says what was wrong.
    Malformed(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::LineTooLong { max } => {
                write!(f, "line longer than the maximum of {max} bytes")
            }
            FrameError::TooLong { announced, max } => write!(
                f,
                "frame of {announced} bytes announced, over the maximum of {max} bytes"
            ),
            FrameError::Malformed(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for FrameError {}

/// Why a frame could not be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload is longer than the length prefix can announce (Twisted's
    /// `StringTooLongError`). Use a wider prefix or split the payload.
    TooLong {
        /// The payload length.
        length: usize,
        /// The largest length the prefix can announce.
        max: u64,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLong { length, max } => write!(
                f,
                "a {length}-byte string does not fit a length prefix of at most {max}; \
                 use a wider prefix or split it"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

/// The framings, for code that picks one at run time (the `frame-echo` service, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// CRLF-terminated lines.
    Lines,
    /// `LEN:DATA,` netstrings.
    Netstring,
    /// 1-byte length prefix.
    Int8,
    /// 2-byte big-endian length prefix.
    Int16,
    /// 4-byte big-endian length prefix.
    Int32,
}

impl Framing {
    /// Every framing, in the order of [`Framing::name`]'s documentation.
    pub const ALL: [Framing; 5] = [
        Framing::Lines,
        Framing::Netstring,
        Framing::Int8,
        Framing::Int16,
        Framing::Int32,
    ];

    /// The name used on the command line: `lines`, `netstring`, `int8`, `int16`, `int32`.
    pub const fn name(self) -> &'static str {
        match self {
            Framing::Lines => "lines",
            Framing::Netstring => "netstring",
            Framing::Int8 => "int8",
            Framing::Int16 => "int16",
            Framing::Int32 => "int32",
        }
    }

    /// The default maximum frame length: 16,384 for lines, 99,999 for the others (as in
    /// Twisted; Int8 strings are at most 255 bytes by construction).
    pub const fn default_max_length(self) -> usize {
        match self {
            Framing::Lines => DEFAULT_MAX_LINE_LENGTH,
            _ => DEFAULT_MAX_STRING_LENGTH,
        }
    }

    /// Appends `payload` in this framing to `out`.
    ///
    /// # Errors
    /// [`EncodeError::TooLong`] if it does not fit an Int8/Int16/Int32 prefix.
    pub fn encode(self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Framing::Lines => {
                encode_line(payload, DEFAULT_DELIMITER, out);
                Ok(())
            }
            Framing::Netstring => {
                encode_netstring(payload, out);
                Ok(())
            }
            Framing::Int8 => encode_prefixed(PrefixWidth::Int8, payload, out),
            Framing::Int16 => encode_prefixed(PrefixWidth::Int16, payload, out),
            Framing::Int32 => encode_prefixed(PrefixWidth::Int32, payload, out),
        }
    }

    /// Decodes a whole buffer at once into owned frames (for tests and tools).
    ///
    /// # Errors
    /// The first [`FrameError`]; frames before it are lost with the result.
    pub fn decode_all(
        self,
        data: &[u8],
        max_length: Option<usize>,
    ) -> Result<Vec<Vec<u8>>, FrameError> {
        let max = max_length.unwrap_or(self.default_max_length());
        let mut frames = Vec::new();
        let push = |f: &[u8]| {
            frames.push(f.to_vec());
            Flow::Continue
        };
        match self {
            Framing::Lines => LineDecoder::with_options(DEFAULT_DELIMITER, max).decode(data, push),
            Framing::Netstring => NetstringDecoder::with_max_length(max).decode(data, push),
            Framing::Int8 => {
                PrefixDecoder::with_max_length(PrefixWidth::Int8, max).decode(data, push)
            }
            Framing::Int16 => {
                PrefixDecoder::with_max_length(PrefixWidth::Int16, max).decode(data, push)
            }
            Framing::Int32 => {
                PrefixDecoder::with_max_length(PrefixWidth::Int32, max).decode(data, push)
            }
        }?;
        Ok(frames)
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`Framing`] name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFraming(pub String);

impl fmt::Display for UnknownFraming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown framing '{}' (expected lines, netstring, int8, int16 or int32)",
            self.0
        )
    }
}

impl std::error::Error for UnknownFraming {}

impl FromStr for Framing {
    type Err = UnknownFraming;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Framing::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownFraming(s.to_string()))
    }
}

/// Writes `line` and CRLF on any transport, outside a receiver (for clients that only send).
pub fn send_line(transport: &dyn Transport, line: &[u8]) {
    sender::write_line(transport, line, DEFAULT_DELIMITER);
}
