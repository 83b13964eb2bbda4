//! Why a connection ended, or why a connection attempt failed.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Why a connection was lost or a connection attempt failed.
///
/// Delivered to [`Protocol::connection_lost`](crate::Protocol::connection_lost) exactly once per
/// connection, and to [`ClientFactory`](crate::ClientFactory) hooks. Each kind of failure has its
/// own variant so that code can react to it (retry on `ConnectRefused`, alert on `Panic`, …).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// The connection was closed cleanly: by [`lose_connection`](crate::Transport::lose_connection)
    /// on this side, or by an orderly shutdown (FIN) from the peer.
    Done,
    /// The peer reset the connection (`ECONNRESET`, `EPIPE`): data in flight may be lost.
    Reset,
    /// This side called [`abort_connection`](crate::Transport::abort_connection): the write
    /// buffer was discarded and the peer was sent a reset.
    Aborted,
    /// The peer actively refused the connection: nothing listens at that address, or (Unix
    /// sockets) the server's accept queue is full.
    ConnectRefused,
    /// The connection attempt did not complete within its timeout.
    ConnectTimedOut,
    /// The network or host could not be reached.
    Unreachable,
    /// The host name could not be resolved; the string is the resolver's message.
    ResolutionFailed(String),
    /// The connection was made, but the client factory built no protocol for it
    /// ([`ClientFactory::build_protocol`](crate::ClientFactory::build_protocol) returned
    /// `None`), so it was closed at once (Twisted's `NoProtocol`).
    NoProtocol,
    /// A user callback panicked; the string is the panic message and where it was raised
    /// (`"boom (at src/proto.rs:12:9)"`). Only this connection was aborted; the reactor and
    /// every other connection go on. The panic is logged once, through `tracing`.
    Panic(String),
    /// More data was written than the transport's hard write-buffer limit allows (the producer
    /// ignored `pause_producing`); the connection was aborted to bound memory.
    WriteBufferOverflow {
        /// The limit in bytes that was exceeded.
        limit: usize,
    },
    /// A graceful close could not flush its data or hear the peer's close within the close
    /// timeout; the connection was aborted.
    CloseTimedOut,
    /// The connection was closed because a timeout policy fired (for example an idle timeout).
    TimedOut,
    /// The peer sent data that the protocol could not accept (the string says what was wrong).
    ProtocolError(String),
    /// A TLS peer closed the connection without a `close_notify` alert: an attacker or a
    /// crash may have cut the data short. Never reported as a clean close.
    Truncated,
    /// A TLS failure: an alert from the peer, a certificate verification failure (unknown CA,
    /// hostname mismatch, expired), no shared protocol version, a handshake timeout… The error
    /// is the TLS layer's own (`torsion_transports::tls::TlsError`), which gives access to
    /// rustls's error.
    Tls(Arc<dyn std::error::Error + Send + Sync + 'static>),
    /// Any other operating-system error, kept whole.
    Io(Arc<io::Error>),
}

impl CloseReason {
    /// `true` for [`CloseReason::Done`]: nothing went wrong.
    pub fn is_clean(&self) -> bool {
        matches!(self, CloseReason::Done)
    }

    /// Classifies an I/O error from a connected stream (read or write side).
    pub fn from_io(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => CloseReason::Reset,
            _ => CloseReason::Io(Arc::new(err)),
        }
    }

    /// Classifies an I/O error from a connection attempt.
    pub fn from_connect_io(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => CloseReason::ConnectRefused,
            io::ErrorKind::TimedOut => CloseReason::ConnectTimedOut,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                CloseReason::Unreachable
            }
            _ => match err.raw_os_error() {
                Some(code) if code == 101 || code == 113 => CloseReason::Unreachable,
                _ => CloseReason::from_io(err),
            },
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Done => f.write_str("connection closed cleanly"),
            CloseReason::Reset => f.write_str("connection reset by peer"),
            CloseReason::Aborted => f.write_str("connection aborted locally"),
            CloseReason::ConnectRefused => {
                f.write_str("connection refused (is the server running and listening there?)")
            }
            CloseReason::ConnectTimedOut => f.write_str(
                "connection attempt timed out (host down, filtered, or timeout too short)",
            ),
            CloseReason::Unreachable => f.write_str("network or host unreachable"),
            CloseReason::ResolutionFailed(msg) => write!(f, "could not resolve host name: {msg}"),
            CloseReason::NoProtocol => {
                f.write_str("connected, but the client factory built no protocol; closed")
            }
            CloseReason::Panic(msg) => write!(f, "a protocol callback panicked: {msg}"),
            CloseReason::WriteBufferOverflow { limit } => write!(
                f,
                "write buffer exceeded its limit of {limit} bytes (honour pause_producing)"
            ),
            CloseReason::CloseTimedOut => f.write_str("graceful close timed out; aborted"),
            CloseReason::TimedOut => f.write_str("connection timed out"),
            CloseReason::ProtocolError(msg) => write!(f, "protocol error: {msg}"),
            CloseReason::Truncated => f.write_str(
                "connection truncated: the peer closed without a TLS close_notify (data may be missing)",
            ),
            CloseReason::Tls(e) => write!(f, "{e}"),
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}
