//! The [`Transport`] a protocol writes through, and its cloneable [`TransportHandle`].

use std::cell::OnceCell;
use std::fmt;
use std::io::{self, IoSlice};
use std::ops::Deref;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::address::Address;
use crate::protocol::Protocol;
use crate::reactor::Reactor;
use crate::reason::CloseReason;

/// Turns a connection's protocol into the protocol that replaces it; see
/// [`Transport::wrap_protocol`].
pub type ProtocolWrapper = Box<dyn FnOnce(Box<dyn Protocol>) -> Box<dyn Protocol>>;

/// TCP keepalive settings: probe an idle connection to find peers that vanished. The kernel
/// counts in whole seconds: `idle` and `interval` are rounded up (to at least one second).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes (`None`: left as it is, the system default unless set before).
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped (`None`: left as it is, the
    /// system default unless set before).
    pub count: Option<u32>,
}

impl Keepalive {
    /// Probes after `idle` without traffic, with the system's interval and count.
    pub fn after(idle: Duration) -> Self {
        Keepalive {
            idle,
            interval: None,
            count: None,
        }
    }
}

/// The credentials of the process at the other end of a Unix socket (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    /// The peer's process id, when the platform reports it.
    pub pid: Option<i32>,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
}

/// Something that produces data into a transport and can be paused (Twisted's `IProducer`).
///
/// Register one with [`Transport::register_producer`]:
/// - a **push** producer (`streaming = true`) writes whenever it likes; the transport calls
///   `pause_producing` when its write buffer rises above the high watermark and
///   `resume_producing` once it is back at or below the low watermark;
/// - a **pull** producer (`streaming = false`) writes only when asked: the transport calls
///   `resume_producing` once at registration and again each time its buffer has drained
///   after the producer wrote (a producer that wrote nothing is not asked again until it
///   writes on its own, as in Twisted).
///
/// `stop_producing` is called once when the connection closes. Producer callbacks take no
/// transport argument: a producer keeps a [`TransportHandle`] to write through.
///
/// ```
/// use torsion_reactor::testing::{MemoryReactor, StringTransport};
/// use torsion_reactor::{Producer, Protocol, Transport, TransportHandle};
///
/// /// A pull producer: one 1 KiB chunk each time the transport asks, then a graceful close.
/// struct Chunks {
///     transport: TransportHandle,
///     left: usize,
/// }
///
/// impl Producer for Chunks {
///     fn resume_producing(&mut self) {
///         if self.left == 0 {
///             self.transport.unregister_producer();
///             self.transport.lose_connection();
///         } else {
///             self.left -= 1;
///             self.transport.write(&[b'x'; 1024]);
///         }
///     }
/// }
///
/// /// Sends 64 KiB to whoever connects, at the pace the connection takes it.
/// struct Download;
///
/// impl Protocol for Download {
///     fn connection_made(&mut self, transport: &mut dyn Transport) {
///         let chunks = Chunks { transport: transport.handle(), left: 64 };
///         transport.register_producer(Box::new(chunks), false);
///     }
///
///     fn data_received(&mut self, _transport: &mut dyn Transport, _data: &[u8]) {}
/// }
///
/// let mr = MemoryReactor::new();
/// let st = StringTransport::connect(&mr, Download);
/// mr.run_until_idle();
/// assert_eq!(st.take(), vec![b'x'; 64 * 1024]);
/// assert!(st.fin_received(), "closed once the producer was done");
/// ```
pub trait Producer: 'static {
    /// Stop writing until `resume_producing` (push producers only).
    fn pause_producing(&mut self) {}
    /// Write more (pull producers: one chunk; push producers: carry on).
    fn resume_producing(&mut self);
    /// The connection is gone: release resources and write no more.
    fn stop_producing(&mut self) {}
}

/// A connection as seen by its protocol: a byte pipe with flow control.
///
/// Methods take `&self`: a transport is a shared handle to a connection that lives in the
/// reactor. Every method is safe to call at any time, also after the connection closed
/// (writes are then ignored). Calls never run protocol callbacks re-entrantly: a callback
/// caused by a call (say `connection_lost` after `abort_connection`) runs after the current
/// callback returns, or on the next turn.
///
/// ```
/// use std::io::IoSlice;
/// use torsion_reactor::testing::{MemoryReactor, StringTransport};
/// use torsion_reactor::{Protocol, Transport};
///
/// /// Answers one `NAME` line with a greeting, then closes gracefully.
/// struct Greeter;
///
/// impl Protocol for Greeter {
///     fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
///         let name = data.strip_suffix(b"\n").unwrap_or(data);
///         // One write of three pieces, not copied when the socket takes it all.
///         transport.write_vectored(&[
///             IoSlice::new(b"hello, "),
///             IoSlice::new(name),
///             IoSlice::new(b"\n"),
///         ]);
///         // What was written goes out first, then FIN; nothing more is delivered.
///         transport.lose_connection();
///     }
/// }
///
/// let mr = MemoryReactor::new();
/// let st = StringTransport::connect(&mr, Greeter);
/// st.feed(b"ada\n");
/// assert_eq!(st.take(), b"hello, ada\n");
/// assert!(st.fin_received());
/// ```
pub trait Transport {
    /// Queues `data` for sending. The transport writes it straight to the socket when it can;
    /// what the socket does not take is buffered (copied once). Ignored once closing.
    fn write(&self, data: &[u8]);

    /// Queues several buffers as one write (one system call when the socket takes them all,
    /// with no copy).
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) {
        for b in bufs {
            self.write(b);
        }
    }

    /// Closes gracefully: stops delivering data, flushes the write buffer, sends FIN, waits
    /// (bounded by the close timeout) for the peer to finish, then closes.
    /// `connection_lost` then receives [`CloseReason::Done`](crate::CloseReason::Done).
    fn lose_connection(&self);

    /// Half-close: flushes, then sends FIN while still reading (Twisted's
    /// `loseWriteConnection`). The protocol's `write_connection_lost` runs once FIN is sent.
    fn lose_write_connection(&self);

    /// Closes at once: the write buffer is dropped and the peer receives a reset (after the
    /// bytes that had already reached it). A Unix-domain socket has no reset: there the peer
    /// sees an orderly end of stream unless data it sent was left unread.
    fn abort_connection(&self);

    /// The address of the other end.
    fn peer_address(&self) -> Address;

    /// The address of this end.
    fn local_address(&self) -> Address;

    /// Stops reading from the connection (data stays in the kernel; the peer is slowed by TCP
    /// flow control) until [`resume_reading`](Transport::resume_reading).
    fn pause_reading(&self);

    /// Resumes reading after [`pause_reading`](Transport::pause_reading).
    fn resume_reading(&self);

    /// Sets this connection's write-buffer limits (asyncio's `set_write_buffer_limits`): the
    /// protocol and a push producer are paused once more than `high` bytes wait in the write
    /// buffer and resumed once at most `low` do. They start as the listener's or connector's
    /// [`ConnectionConfig`](crate::ConnectionConfig) watermarks (64 KiB / 16 KiB). `(0, 0)`
    /// pauses as soon as the socket does not take a whole write and resumes once everything
    /// went out: the protocol then holds no buffer of its own beyond one write, as a
    /// read-then-write-all loop would. Takes effect at once (a pause or resume it causes is
    /// delivered after the current callback). `InvalidInput` if `low > high`; transports
    /// without a write buffer of their own return `Unsupported`.
    fn set_write_buffer_limits(&self, high: usize, low: usize) -> io::Result<()> {
        let _ = (high, low);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Enables or disables Nagle's algorithm (`TCP_NODELAY`). TCP connections start with
    /// no-delay on. Transports without the option return `Unsupported`.
    fn set_no_delay(&self, _on: bool) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Turns TCP keepalive on with the given settings, or off with `None`.
    fn set_keepalive(&self, _keepalive: Option<Keepalive>) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// The peer's credentials, on Unix-domain connections.
    fn peer_credentials(&self) -> Option<PeerCredentials> {
        None
    }

    /// Registers a producer (see [`Producer`]); replaces any previous one, which is stopped.
    fn register_producer(&self, producer: Box<dyn Producer>, streaming: bool);

    /// Removes the registered producer without stopping it.
    fn unregister_producer(&self);

    /// How many bytes wait in the write buffer.
    fn buffered(&self) -> usize;

    /// `true` once the connection is closing or closed (writes are then ignored).
    fn is_closing(&self) -> bool;

    /// `true` once a full close started (`lose_connection`, `abort_connection`) or the
    /// connection closed: no more data will reach the protocol. Unlike
    /// [`is_closing`](Transport::is_closing), `false` after a half-close
    /// (`lose_write_connection`) alone, while the peer's data still arrives. The default, for
    /// a transport that cannot tell the two apart, is `is_closing`.
    fn is_fully_closing(&self) -> bool {
        self.is_closing()
    }

    /// Replaces this connection's protocol: once the current callback returns, `wrap`
    /// receives the old protocol and returns the new one, and the new protocol's
    /// `connection_made` runs at once. This is the seam for layers that sit between a stream
    /// and the user's protocol on a live connection, such as STARTTLS: the TLS layer wraps the
    /// old protocol, and everything written before `wrap_protocol` went out in the clear.
    ///
    /// Between this call and the swap, what the protocol writes (through this transport or a
    /// handle) is held back, and handles taken before the swap keep reaching the connection;
    /// a layer that calls [`redirect_handles`](Transport::redirect_handles) from its
    /// `connection_made` receives both: the held writes go out through it (encrypted, for
    /// TLS), and the old handles reach it from then on. Without that call the held writes go
    /// out as they are once the new protocol's `connection_made` returns. Until the swap,
    /// [`buffered`](Transport::buffered) counts the held writes, and
    /// [`is_closing`](Transport::is_closing) is `true` once a close is held.
    ///
    /// If the peer's FIN already arrived (a swap asked for in `read_connection_lost`), the
    /// new protocol is told too, after its `connection_made`: its `read_connection_lost`
    /// runs (or, if it does not [`half_close`](crate::Protocol::half_close), the connection
    /// closes), so a layer such as TLS knows nothing more will arrive. A layer that passes
    /// events through should not hand this one on: the old protocol already had it.
    ///
    /// If `wrap` panics, the connection is aborted with
    /// [`CloseReason::Panic`](crate::CloseReason::Panic) (the port's or connector's close
    /// hook hears it); the old protocol, consumed by `wrap`, is dropped without
    /// `connection_lost`.
    ///
    /// Returns `false` (and drops `wrap`) if the transport cannot swap, is closing, or already
    /// has a swap pending.
    fn wrap_protocol(&self, wrap: ProtocolWrapper) -> bool {
        let _ = wrap;
        false
    }

    /// For a layer installed with [`wrap_protocol`](Transport::wrap_protocol), from its
    /// `connection_made`: the writes held since `wrap_protocol` (and a `lose_connection` or
    /// `lose_write_connection` among them) are replayed through `to`, the layer's own
    /// transport, and every handle to this connection taken before the swap reaches `to` from
    /// now on; a registered producer is handed to `to` as well (so its pause and resume come
    /// from the layer). Handles the layer takes itself in `connection_made` stay on this
    /// connection: a layer must take its own handle there, not keep one from before the swap
    /// (that one now leads back to the layer). Handles asked of this connection once the
    /// layer's `connection_made` returned (a port's or connector's) reach `to` too. A layer
    /// that is a connection's first protocol (no swap: a TLS port's) calls it the same way
    /// from its `connection_made`, so that the handles asked for later (those a listening
    /// port closes its connections with, say) reach the layer. Does nothing elsewhere.
    fn redirect_handles(&self, to: TransportHandle) {
        let _ = to;
    }

    /// A cloneable handle to this connection, usable outside callbacks on the reactor thread
    /// (for example to broadcast a chat line to every other client).
    fn handle(&self) -> TransportHandle;

    /// The reactor this connection lives on (for timers and further connections).
    fn reactor(&self) -> Reactor;

    /// Aborts the connection as [`abort_connection`](Transport::abort_connection) does, with
    /// `reason` for the protocol's `connection_lost`: for a layer or wrapper that ends a
    /// connection for a reason of its own (a limit it keeps, a panic in user code it ran). The
    /// default, for a transport that has no reason to give, is `abort_connection`.
    fn abort_with(&self, reason: CloseReason) {
        let _ = reason;
        self.abort_connection();
    }

    /// Aborts the connection because user code panicked outside the callbacks the connection
    /// makes itself (a wrapper delivering held data on a later turn, a producer resumed from a
    /// timer): the panic is logged and the protocol hears [`CloseReason::Panic`] with
    /// `message`, as after a panic in one of its callbacks.
    fn abort_for_panic(&self, message: String) {
        tracing::error!(peer = %self.peer_address(), panic = %message, "user code panicked; aborting this connection");
        self.abort_with(CloseReason::Panic(message));
    }

    /// The transport this one wraps, for a transport that puts itself between a protocol and
    /// its connection (a policy's, such as an idle timeout's): accessors of a layer beneath
    /// (the TLS session) look through it. `None` (the default) for a connection's own.
    fn wrapped(&self) -> Option<TransportHandle> {
        None
    }
}

impl<T: Transport + ?Sized> Transport for &T {
    fn write(&self, data: &[u8]) {
        (**self).write(data)
    }
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) {
        (**self).write_vectored(bufs)
    }
    fn lose_connection(&self) {
        (**self).lose_connection()
    }
    fn lose_write_connection(&self) {
        (**self).lose_write_connection()
    }
    fn abort_connection(&self) {
        (**self).abort_connection()
    }
    fn peer_address(&self) -> Address {
        (**self).peer_address()
    }
    fn local_address(&self) -> Address {
        (**self).local_address()
    }
    fn pause_reading(&self) {
        (**self).pause_reading()
    }
    fn resume_reading(&self) {
        (**self).resume_reading()
    }
    fn set_write_buffer_limits(&self, high: usize, low: usize) -> io::Result<()> {
        (**self).set_write_buffer_limits(high, low)
    }
    fn set_no_delay(&self, on: bool) -> io::Result<()> {
        (**self).set_no_delay(on)
    }
    fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        (**self).set_keepalive(keepalive)
    }
    fn peer_credentials(&self) -> Option<PeerCredentials> {
        (**self).peer_credentials()
    }
    fn register_producer(&self, producer: Box<dyn Producer>, streaming: bool) {
        (**self).register_producer(producer, streaming)
    }
    fn unregister_producer(&self) {
        (**self).unregister_producer()
    }
    fn buffered(&self) -> usize {
        (**self).buffered()
    }
    fn is_closing(&self) -> bool {
        (**self).is_closing()
    }
    fn is_fully_closing(&self) -> bool {
        (**self).is_fully_closing()
    }
    fn wrap_protocol(&self, wrap: ProtocolWrapper) -> bool {
        (**self).wrap_protocol(wrap)
    }
    fn redirect_handles(&self, to: TransportHandle) {
        (**self).redirect_handles(to)
    }
    fn handle(&self) -> TransportHandle {
        (**self).handle()
    }
    fn reactor(&self) -> Reactor {
        (**self).reactor()
    }
    fn abort_with(&self, reason: CloseReason) {
        (**self).abort_with(reason)
    }
    fn wrapped(&self) -> Option<TransportHandle> {
        (**self).wrapped()
    }
}

/// A cloneable, reactor-thread handle to a connection's [`Transport`].
///
/// Holding a handle does not keep the connection open; once it closes, writes through the
/// handle are ignored and [`Transport::is_closing`] returns `true`. When a layer takes over
/// the connection (STARTTLS, see [`Transport::wrap_protocol`]), handles taken before reach the
/// layer's transport from then on.
#[derive(Clone)]
pub struct TransportHandle(Rc<HandleTarget>);

/// What the clones of one handle share: the transport, or the layer that took it over.
pub(crate) struct HandleTarget {
    transport: Rc<dyn Transport>,
    redirect: OnceCell<TransportHandle>,
}

impl TransportHandle {
    /// Wraps a shared transport (for transport implementations).
    pub fn new(transport: Rc<dyn Transport>) -> Self {
        TransportHandle(Rc::new(HandleTarget {
            transport,
            redirect: OnceCell::new(),
        }))
    }

    /// `true` if both handles refer to the same connection (as it is reached now).
    pub fn same_connection(&self, other: &TransportHandle) -> bool {
        std::ptr::addr_eq(&**self, &**other)
    }

    /// Points this handle and all its clones at `to` (once: a connection swaps once).
    pub(crate) fn redirect(&self, to: TransportHandle) {
        let first = self.0.redirect.set(to).is_ok();
        debug_assert!(first, "a handle is redirected once");
    }

    /// The shared part, for a transport that hands out clones of one handle.
    pub(crate) fn downgrade(&self) -> Weak<HandleTarget> {
        Rc::downgrade(&self.0)
    }

    /// A handle from [`downgrade`](Self::downgrade)'s result, while any clone lives.
    pub(crate) fn upgrade(target: &Weak<HandleTarget>) -> Option<Self> {
        target.upgrade().map(TransportHandle)
    }
}

impl Deref for TransportHandle {
    type Target = dyn Transport;
    fn deref(&self) -> &Self::Target {
        match self.0.redirect.get() {
            Some(layer) => &**layer,
            None => &*self.0.transport,
        }
    }
}

impl fmt::Debug for TransportHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportHandle")
            .field("peer", &self.peer_address())
            .field("closing", &self.is_closing())
            .finish()
    }
}
