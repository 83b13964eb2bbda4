//! [`TrafficLogger`]: record the bytes in and out of a connection through `tracing`.

use std::fmt::{self, Write as _};
use std::io::IoSlice;
use std::rc::Rc;

use torsion_reactor::{Address, CloseReason, Protocol, Transport};

use super::wrap::{forward_protocol_rest, pick, Hooked, Hooks};

/// The `tracing` target of traffic events: filter with `RUST_LOG=torsion::traffic=trace`.
pub const TRAFFIC_TARGET: &str = "torsion::traffic";

/// Bytes shown in one hex dump by default; the rest is summarised.
pub const DEFAULT_DUMP_LIMIT: usize = 4096;

/// Formats `data` as a classic hex dump (offset, 16 bytes in hex, ASCII), at most `limit`
/// bytes of it.
///
/// ```
/// let dump = torsion_protocols::policies::hex_dump(b"hello, world\r\n", 4096);
/// assert_eq!(
///     dump,
///     "00000000  68 65 6c 6c 6f 2c 20 77  6f 72 6c 64 0d 0a       |hello, world..|\n"
/// );
/// ```
pub fn hex_dump(data: &[u8], limit: usize) -> String {
    dump(&data[..data.len().min(limit)], data.len())
}

/// The dump of `shown`, the first bytes of `total`.
fn dump(shown: &[u8], total: usize) -> String {
    let mut out = String::with_capacity(shown.len().div_ceil(16) * 80 + 40);
    for (i, row) in shown.chunks(16).enumerate() {
        let _ = write!(out, "{:08x}  ", i * 16);
        for j in 0..16 {
            match row.get(j) {
                Some(b) => {
                    let _ = write!(out, "{b:02x} ");
                }
                None => out.push_str("   "),
            }
            if j == 7 {
                out.push(' ');
            }
        }
        out.push('|');
        out.extend(row.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
    if total > shown.len() {
        let _ = writeln!(out, "… {} more bytes", total - shown.len());
    }
    out
}

/// Logs `total` bytes going `direction`; `head(limit)` gives the first `limit` of them, asked
/// for only when they are dumped (trace level).
fn log(
    peer: &Address,
    direction: &'static str,
    total: usize,
    limit: usize,
    head: impl FnOnce(usize) -> Vec<u8>,
) {
    if total == 0 {
        return;
    }
    if tracing::enabled!(target: TRAFFIC_TARGET, tracing::Level::TRACE) {
        tracing::trace!(
            target: TRAFFIC_TARGET,
            peer = %peer,
            direction,
            bytes = total,
            "\n{}",
            dump(&head(limit), total)
        );
    } else {
        tracing::debug!(target: TRAFFIC_TARGET, peer = %peer, direction, bytes = total);
    }
}

/// [`log`] of one slice.
fn log_slice(peer: &Address, direction: &'static str, data: &[u8], limit: usize) {
    log(peer, direction, data.len(), limit, |n| {
        data[..data.len().min(n)].to_vec()
    });
}

struct LogHooks {
    peer: Address,
    limit: usize,
}

impl Hooks for LogHooks {
    fn write(&self, inner: &dyn Transport, data: &[u8]) {
        log_slice(&self.peer, "out", data, self.limit);
        inner.write(data)
    }

    fn write_vectored(&self, inner: &dyn Transport, bufs: &[IoSlice<'_>]) {
        if tracing::enabled!(target: TRAFFIC_TARGET, tracing::Level::DEBUG) {
            let total = bufs.iter().map(|b| b.len()).sum();
            log(&self.peer, "out", total, self.limit, |n| {
                bufs.iter()
                    .flat_map(|b| b.iter().copied())
                    .take(n)
                    .collect()
            });
        }
        inner.write_vectored(bufs)
    }
}

/// Records every byte a connection reads and writes through `tracing` (Twisted's
/// `TrafficLoggingProtocol`), under the target [`TRAFFIC_TARGET`]: one event per read or
/// write with the peer, direction and size at debug level, with a hex dump (first
/// [`DEFAULT_DUMP_LIMIT`] bytes) at trace level, plus the close reason. Nothing is formatted
/// unless the level is enabled.
///
/// ```
/// use torsion_protocols::policies::TrafficLogger;
/// use torsion_protocols::wire::Echo;
/// use torsion_reactor::testing::{MemoryReactor, StringTransport};
///
/// let mr = MemoryReactor::new();
/// let st = StringTransport::connect(&mr, TrafficLogger::new(Echo));
/// st.feed(b"logged");
/// assert_eq!(st.take(), b"logged");
/// ```
pub struct TrafficLogger<P> {
    inner: P,
    limit: usize,
    peer: Option<Address>,
    hooked: Option<Rc<Hooked<LogHooks>>>,
}

impl<P: Protocol> TrafficLogger<P> {
    /// Logs `protocol`'s traffic.
    pub fn new(protocol: P) -> Self {
        TrafficLogger {
            inner: protocol,
            limit: DEFAULT_DUMP_LIMIT,
            peer: None,
            hooked: None,
        }
    }

    /// Shows at most `limit` bytes per hex dump.
    pub fn dump_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The wrapped protocol.
    pub fn get_ref(&self) -> &P {
        &self.inner
    }
}

impl<P: Protocol> Protocol for TrafficLogger<P> {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        let peer = transport.peer_address();
        tracing::debug!(target: TRAFFIC_TARGET, peer = %peer, "connection made");
        self.hooked = Some(Hooked::new(
            transport.handle(),
            LogHooks {
                peer: peer.clone(),
                limit: self.limit,
            },
        ));
        self.peer = Some(peer);
        let mut t = pick(&self.hooked, transport);
        self.inner.connection_made(&mut t);
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        if let Some(peer) = &self.peer {
            log_slice(peer, "in", data, self.limit);
        }
        let mut t = pick(&self.hooked, transport);
        self.inner.data_received(&mut t, data);
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        if let Some(peer) = &self.peer {
            tracing::debug!(target: TRAFFIC_TARGET, peer = %peer, reason = %reason, "connection lost");
        }
        self.hooked = None;
        self.inner.connection_lost(reason);
    }

    forward_protocol_rest!();
}

impl<P> fmt::Debug for TrafficLogger<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrafficLogger")
            .field("peer", &self.peer)
            .field("limit", &self.limit)
            .finish()
    }
}
