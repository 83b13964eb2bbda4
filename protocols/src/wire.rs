//! The classic "simple services" of RFC 862–867, as Twisted's `twisted.protocols.wire`.
//!
//! | protocol | RFC | behaviour |
//! |---|---|---|
//! | [`Echo`] | 862 | sends back every byte received |
//! | [`Discard`] | 863 | reads and drops everything |
//! | [`Chargen`] | 864 | streams the rotating 72-character pattern until the client closes; ignores input |
//! | [`Qotd`] | 865 | sends one quote and closes |
//! | [`Daytime`] | 867 | sends the current date and time and closes |
//!
//! Each is a plain [`Protocol`], so it runs on TCP, Unix sockets, TLS and the test kit alike.
//! [`DatagramEcho`] and [`DatagramDiscard`] are the UDP forms of echo and discard.

use std::rc::Rc;
use std::time::SystemTime;

use torsion_reactor::{
    Address, DatagramProtocol, DatagramTransport, Producer, Protocol, Transport, TransportHandle,
};

/// Echo (RFC 862): writes back whatever arrives.
///
/// Echo holds no buffer of its own: it sets its write-buffer limits to `(0, 0)`
/// ([`Transport::set_write_buffer_limits`]), so as soon as the socket does not take a whole
/// echo, reading pauses (the client is slowed by the kernel's flow control) until the rest
/// went out, as a read-then-write-all loop behaves. Besides bounding memory per slow client
/// to one read, this keeps both ends streaming: with the default 64 KiB / 16 KiB watermarks
/// (reading on while up to 64 KiB wait, resuming at 16 KiB) bulk echo fell far more often
/// into a stop-and-go rhythm in which client and server sleep in turn (the project's
/// BENCHMARKS.md has the measurements).
///
/// ```
/// use torsion_protocols::wire::Echo;
/// use torsion_reactor::testing::{MemoryReactor, StringTransport};
///
/// let mr = MemoryReactor::new();
/// let st = StringTransport::connect(&mr, Echo);
/// st.feed(b"ping");
/// assert_eq!(st.take(), b"ping");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Protocol for Echo {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        // Transports without their own write buffer (none in this crate) keep their limits.
        let _ = transport.set_write_buffer_limits(0, 0);
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        transport.write(data);
    }
}

/// Echo over datagrams (RFC 862, UDP): sends each datagram back to its sender.
///
/// A reply that cannot be sent (the send queue is full) is dropped and counted by the
/// transport, as the RFC allows for UDP.
#[derive(Clone, Copy, Debug, Default)]
pub struct DatagramEcho;

impl DatagramProtocol for DatagramEcho {
    fn datagram_received(
        &mut self,
        transport: &mut dyn DatagramTransport,
        data: &[u8],
        from: &Address,
    ) {
        if let Err(e) = transport.write_to(data, from) {
            tracing::trace!(peer = %from, error = %e, "echo reply dropped");
        }
    }
}

/// Discard over datagrams (RFC 863, UDP): drops every datagram.
#[derive(Clone, Copy, Debug, Default)]
pub struct DatagramDiscard;

impl DatagramProtocol for DatagramDiscard {
    fn datagram_received(&mut self, _: &mut dyn DatagramTransport, _: &[u8], _: &Address) {}
}

/// Discard (RFC 863): reads and drops everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl Protocol for Discard {
    fn data_received(&mut self, _transport: &mut dyn Transport, _data: &[u8]) {}
}

/// Line length of the chargen pattern, without CRLF.
const CHARGEN_LINE: usize = 72;
/// The 95 printable ASCII characters the pattern rotates through.
const CHARGEN_CHARS: usize = 95;
/// Lines written per `resume_producing` (about 16 KiB).
const CHARGEN_LINES_PER_CHUNK: usize = 220;

/// Chargen (RFC 864): streams lines of the rotating printable-ASCII pattern for as long as the
/// client reads, as a pull producer (it writes a chunk only when the transport's buffer has
/// drained, so a slow client costs no memory). Input is discarded.
#[derive(Debug, Default)]
pub struct Chargen;

struct ChargenProducer {
    transport: TransportHandle,
    /// Index of the first character of the next line.
    offset: usize,
    chunk: Vec<u8>,
}

impl ChargenProducer {
    fn fill(&mut self) {
        self.chunk.clear();
        for _ in 0..CHARGEN_LINES_PER_CHUNK {
            for i in 0..CHARGEN_LINE {
                self.chunk
                    .push(b' ' + ((self.offset + i) % CHARGEN_CHARS) as u8);
            }
            self.chunk.extend_from_slice(b"\r\n");
            self.offset = (self.offset + 1) % CHARGEN_CHARS;
        }
    }
}

impl Producer for ChargenProducer {
    fn resume_producing(&mut self) {
        self.fill();
        self.transport.write(&self.chunk);
    }
}

impl Protocol for Chargen {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        let producer = ChargenProducer {
            transport: transport.handle(),
            offset: 0,
            chunk: Vec::with_capacity(CHARGEN_LINES_PER_CHUNK * (CHARGEN_LINE + 2)),
        };
        transport.register_producer(Box::new(producer), false);
    }

    fn data_received(&mut self, _transport: &mut dyn Transport, _data: &[u8]) {}
}

/// The quote [`Qotd::default`] serves.
pub const DEFAULT_QUOTE: &str = "An apple a day keeps the doctor away.\r\n";

/// Quote of the Day (RFC 865): sends one quote and closes.
#[derive(Clone, Debug)]
pub struct Qotd {
    quote: Rc<str>,
}

impl Qotd {
    /// Serves `quote` (sent as given; end it with CRLF). RFC 865 asks for at most 512 chars.
    pub fn new(quote: impl Into<Rc<str>>) -> Self {
        Qotd {
            quote: quote.into(),
        }
    }
}

impl Default for Qotd {
    fn default() -> Self {
        Qotd::new(DEFAULT_QUOTE)
    }
}

impl Protocol for Qotd {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        transport.write(self.quote.as_bytes());
        transport.lose_connection();
    }

    fn data_received(&mut self, _transport: &mut dyn Transport, _data: &[u8]) {}
}

/// Daytime (RFC 867): sends the current date and time (`Sun, 22 Nov 2026 05:04:00 GMT\r\n`)
/// and closes.
#[derive(Clone, Debug, Default)]
pub struct Daytime {
    /// A fixed time to report instead of the system clock (for tests).
    pub fixed: Option<SystemTime>,
}

impl Protocol for Daytime {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        let now = self.fixed.unwrap_or_else(SystemTime::now);
        let line = format!("{}\r\n", httpdate::fmt_http_date(now));
        transport.write(line.as_bytes());
        transport.lose_connection();
    }

    fn data_received(&mut self, _transport: &mut dyn Transport, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};
    use torsion_reactor::CloseReason;

    #[test]
    fn echo_any_chunking() {
        let mr = MemoryReactor::new();
        let st = StringTransport::with_options(&mr, Echo, MemoryOptions::chunked(1));
        st.feed(b"hello, world");
        assert_eq!(st.take(), b"hello, world");
    }

    #[test]
    fn echo_stops_reading_once_the_client_stops_taking_the_echo() {
        let mr = MemoryReactor::new();
        let options = MemoryOptions {
            chunk_size: 512,
            capacity: 1024,
            ..MemoryOptions::default()
        };
        let st = StringTransport::with_options(&mr, Echo, options);
        let data: Vec<u8> = (0..10_000).map(|i| (i % 251) as u8).collect();
        // The client does not read: two echoes fill the pipe towards it, the third stays in
        // the write buffer and reading stops; then the pipe towards Echo fills.
        let accepted = st.feed(&data);
        assert_eq!(accepted, 3 * 512 + 1024, "Echo stopped reading");
        assert_eq!(st.transport().buffered(), 512, "one read buffered, no more");
        // Reading the echo lets it go on; everything comes back in order.
        let mut echoed = Vec::new();
        let mut sent = accepted;
        for _ in 0..1000 {
            if echoed.len() == data.len() {
                break;
            }
            echoed.extend(st.take());
            sent += st.feed(&data[sent..]);
            assert!(st.transport().buffered() <= 512);
        }
        assert_eq!(echoed, data);
    }

    #[test]
    fn discard_writes_nothing() {
        let mr = MemoryReactor::new();
        let st = StringTransport::connect(&mr, Discard);
        st.feed(b"anything");
        assert!(st.take().is_empty());
        assert!(st.lost().is_none());
    }

    #[test]
    fn chargen_pattern_rotates_and_is_paced() {
        let mr = MemoryReactor::new();
        let st = StringTransport::connect(&mr, Chargen);
        // Nobody reads: the producer stops once the pipe is full (it is a pull producer).
        let pending = st.pending();
        assert_eq!(pending, 256 * 1024, "fills the pipe, then waits");
        assert!(
            st.transport().buffered() <= 16 * 1024,
            "at most one chunk buffered"
        );
        let out = st.take();
        assert_eq!(out.len(), pending);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').take(3).collect();
        assert_eq!(&lines[0][..3], b" !\"");
        assert_eq!(&lines[1][..3], b"!\"#");
        assert_eq!(lines[0].len(), CHARGEN_LINE + 1, "72 chars and CR");
        assert!(
            st.take().len() > 200 * 1024,
            "more flows once the client reads"
        );
    }

    #[test]
    fn qotd_and_daytime_close_after_sending() {
        let mr = MemoryReactor::new();
        let st = StringTransport::connect(&mr, Qotd::new("hi\r\n"));
        assert_eq!(st.take(), b"hi\r\n");
        assert!(st.fin_received());
        st.feed_eof();
        assert!(matches!(st.lost(), Some(CloseReason::Done)));

        let fixed = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        let st = StringTransport::connect(&mr, Daytime { fixed: Some(fixed) });
        assert_eq!(st.take(), b"Sun, 09 Sep 2001 01:46:40 GMT\r\n");
        assert!(st.fin_received());
    }
}
