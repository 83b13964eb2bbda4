//! The frame echo service: decodes each frame and sends it back in the same framing.

use std::time::Duration;

use torsion_reactor::Protocol;

use super::lines::{LineContext, LineHandler, LineReceiver};
use super::strings::{StringContext, StringHandler, StringReceiver};
use super::Framing;
use crate::policies::IdleTimeout;

/// Options of [`frame_echo`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameEchoOptions {
    /// The maximum frame length; `None` for the framing's default
    /// ([`Framing::default_max_length`]).
    pub max_length: Option<usize>,
    /// Close connections that see no traffic either way for this long
    /// ([`IdleTimeout`]); `None` for no idle timeout.
    pub idle_timeout: Option<Duration>,
}

struct EchoLines;

impl LineHandler for EchoLines {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        ctx.send_line(line);
    }
}

struct EchoStrings;

impl StringHandler for EchoStrings {
    fn string_received(&mut self, ctx: &mut StringContext<'_>, string: &[u8]) {
        // A string that arrived in this framing always fits it on the way back.
        if let Err(e) = ctx.send_string(string) {
            ctx.close_with_error(e.to_string());
        }
    }
}

/// Builds the "frame echo" protocol: every frame received is sent back in the same
/// framing; a frame over the maximum length or malformed input closes the connection
/// (reason [`CloseReason::ProtocolError`](torsion_reactor::CloseReason::ProtocolError)), and
/// an idle timeout, if set, closes it with
/// [`CloseReason::TimedOut`](torsion_reactor::CloseReason::TimedOut).
///
/// A factory is a closure around it:
///
/// ```
/// use torsion_protocols::framing::{frame_echo, FrameEchoOptions, Framing};
/// use torsion_reactor::testing::{MemoryReactor, StringTransport};
/// use torsion_reactor::{Address, SharedFactory};
///
/// let options = FrameEchoOptions { max_length: Some(1024), ..Default::default() };
/// let factory = SharedFactory::new(move |_: &Address| frame_echo(Framing::Netstring, options.clone()));
/// # let _ = factory;
///
/// let mr = MemoryReactor::new();
/// let st = StringTransport::connect(&mr, frame_echo(Framing::Int16, FrameEchoOptions::default()));
/// st.feed(b"\x00\x02hi");
/// assert_eq!(st.take(), b"\x00\x02hi");
/// ```
pub fn frame_echo(framing: Framing, options: FrameEchoOptions) -> Box<dyn Protocol> {
    let max = options
        .max_length
        .unwrap_or_else(|| framing.default_max_length());
    let protocol: Box<dyn Protocol> = match framing {
        Framing::Lines => Box::new(LineReceiver::new(EchoLines).max_length(max)),
        Framing::Netstring => Box::new(StringReceiver::netstring(EchoStrings).max_length(max)),
        Framing::Int8 => Box::new(StringReceiver::int8(EchoStrings).max_length(max)),
        Framing::Int16 => Box::new(StringReceiver::int16(EchoStrings).max_length(max)),
        Framing::Int32 => Box::new(StringReceiver::int32(EchoStrings).max_length(max)),
    };
    match options.idle_timeout {
        Some(timeout) => Box::new(IdleTimeout::new(protocol, timeout)),
        None => protocol,
    }
}
