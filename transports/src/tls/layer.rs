//! The TLS layer: [`TlsProtocol`] runs on a stream transport and drives a rustls connection;
//! the user's protocol sees plaintext through a TLS [`Transport`] (`Shared`).
//!
//! Data path, as in rustls's own mio example: ciphertext from the stream goes into
//! `read_tls` → `process_new_packets` → plaintext to the inner protocol; plaintext written by
//! the inner protocol is collected during the callback (or the reactor turn, for writes from
//! outside callbacks), encrypted in one go (few records, not one per write) and handed to the
//! stream transport with `write_tls`. No `RefCell` borrow of the TLS state is held while user
//! code runs (only the inner protocol's own cell, while that protocol runs).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, BufRead, IoSlice, Write};
use std::rc::{Rc, Weak};
use std::time::Duration;

use rustls::Connection;
use rustls_pki_types::{CertificateDer, ServerName};
use torsion_reactor::{
    catch_unwind_message, Address, ClientFactory, CloseReason, Connector, ConnectorOps,
    DelayedCall, Factory, Keepalive, PeerCredentials, Producer, Protocol, Reactor, SharedFactory,
    Transport, TransportHandle, WeakReactor,
};

use super::config::{ClientTlsConfig, ServerTlsConfig, TlsLimits};
use super::error::TlsError;

/// Plaintext collected beyond this many bytes is encrypted at once rather than at the end of
/// the callback or turn (one full TLS record).
const FLUSH_THRESHOLD: usize = 16 * 1024;

/// The most plaintext the layer holds for a handshake that has not completed (written after
/// `start_tls`, or through a handle, before it did): past it the connection is aborted with
/// [`CloseReason::WriteBufferOverflow`], as a stream is past its hard limit (the same 16 MiB
/// by default).
pub const MAX_EARLY_PLAINTEXT: usize = 16 * 1024 * 1024;

thread_local! {
    /// Live TLS transports by the address of their shared state, for [`session`].
    static SESSIONS: RefCell<HashMap<usize, Weak<Shared>>> = RefCell::new(HashMap::new());
}

fn key_of(t: &dyn Transport) -> usize {
    t as *const dyn Transport as *const () as usize
}

/// `io::Write` onto the stream transport, for rustls's `write_tls`: takes everything (the
/// stream transport buffers what the socket does not take and applies its watermarks).
struct RawWriter<'a>(&'a TransportHandle);

impl Write for RawWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs);
        Ok(bufs.iter().map(|b| b.len()).sum())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a TLS connection negotiated, as seen by either end. Get it with [`session`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TlsSession {
    /// `false` until the handshake completed (then the other fields are final).
    pub handshake_complete: bool,
    /// `true` on the server end of the connection.
    pub is_server: bool,
    /// The negotiated protocol version (TLS 1.2 or 1.3).
    pub protocol_version: Option<rustls::ProtocolVersion>,
    /// The negotiated cipher suite.
    pub cipher_suite: Option<rustls::CipherSuite>,
    /// The protocol agreed with ALPN, if any (e.g. `b"h2"`).
    pub alpn_protocol: Option<Vec<u8>>,
    /// The peer's certificate chain, leaf first: the server's on a client, the client's (with
    /// mutual TLS) on a server; empty if none was presented.
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// On a server, the host name the client asked for with SNI; on a client, the name it
    /// verified the server against.
    pub server_name: Option<String>,
    /// `true` if the session was resumed (no full handshake).
    pub resumed: bool,
}

/// The TLS session of a connection, if `transport` is a TLS transport (the one a protocol
/// receives in its callbacks on a TLS connection, or a handle of it), or wraps one (a
/// policy's transport, see [`Transport::wrapped`]).
///
/// ```no_run
/// # use torsion_reactor::Transport;
/// # fn f(transport: &dyn Transport) {
/// if let Some(session) = torsion_transports::tls::session(transport) {
///     println!("ALPN: {:?}", session.alpn_protocol);
/// }
/// # }
/// ```
pub fn session(transport: &dyn Transport) -> Option<TlsSession> {
    let mut handle = transport.handle();
    let shared = loop {
        let key = key_of(&*handle);
        if let Some(shared) = SESSIONS.with(|m| m.borrow().get(&key).and_then(Weak::upgrade)) {
            break shared;
        }
        handle = handle.wrapped()?;
    };
    let st = shared.st.try_borrow().ok()?;
    let conn = &st.conn;
    let (server_name, is_server) = match conn {
        Connection::Server(s) => (s.server_name().map(str::to_owned), true),
        Connection::Client(_) => (shared.client_name.clone(), false),
    };
    Some(TlsSession {
        handshake_complete: st.handshake_done,
        is_server,
        protocol_version: conn.protocol_version(),
        cipher_suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        alpn_protocol: conn.alpn_protocol().map(<[u8]>::to_vec),
        peer_certificates: conn
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default(),
        server_name,
        resumed: matches!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
    })
}

struct St {
    conn: Connection,
    /// Plaintext written by the protocol, not yet encrypted.
    plain_out: Vec<u8>,
    handshake_done: bool,
    /// `lose_connection` was called.
    closing: bool,
    /// `lose_write_connection` was called.
    write_closing: bool,
    /// Our `close_notify` went out.
    close_sent: bool,
    /// The stream connection is gone.
    closed: bool,
    failure: Option<TlsError>,
    /// The TLS close timeout, armed when a full close starts (our `close_notify` sent, or the
    /// alert of a failure).
    close_timer: Option<DelayedCall>,
    /// The TLS close timeout ended the connection (reported as a clean close).
    close_timed_out: bool,
    /// The close timer last found our data still in the stream's buffer.
    close_draining: bool,
}

/// The TLS transport: what the inner protocol writes through, shared with its handles.
pub(crate) struct Shared {
    me: Weak<Shared>,
    raw: TransportHandle,
    /// The reactor, for this layer's own timers and deferred work: weak, as a handle may be
    /// used (or a protocol dropped) after the reactor is gone, when that work is skipped.
    reactor: WeakReactor,
    st: RefCell<St>,
    client_name: Option<String>,
    close_timeout: Duration,
    in_callback: Cell<bool>,
    flush_scheduled: Cell<bool>,
    /// The inner protocol paused reading (through this transport).
    read_paused: Cell<bool>,
    /// Plaintext that arrived while the inner protocol had paused reading (the rest of the
    /// read that paused it: the stream stops reading too), delivered after `resume_reading`.
    held: RefCell<Vec<u8>>,
    /// The peer's `close_notify` came while reading was paused or plaintext was held: acted
    /// on once the held plaintext has been delivered.
    held_eof: Cell<bool>,
    delivery_scheduled: Cell<bool>,
    /// The inner protocol, for delivering held plaintext.
    inner: Weak<RefCell<Inner>>,
}

impl Shared {
    fn rc(&self) -> Rc<Shared> {
        self.me
            .upgrade()
            .expect("a live TLS transport is referenced")
    }

    /// Encrypts collected plaintext (once the handshake is done) and sends every pending
    /// TLS record to the stream transport.
    fn flush(&self) {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        if st.closed {
            st.plain_out.clear();
            return;
        }
        if st.handshake_done && !st.close_sent && !st.plain_out.is_empty() {
            let plain = std::mem::take(&mut st.plain_out);
            self.encrypt(&mut st.conn, &plain);
            st.plain_out = plain;
            st.plain_out.clear();
        }
        self.send_records(&mut st.conn);
    }

    /// Encrypts `plain` and sends the records, a buffer's worth at a time (rustls's buffer
    /// is bounded by the configured limit).
    fn encrypt(&self, conn: &mut Connection, plain: &[u8]) {
        let mut off = 0;
        while off < plain.len() {
            let n = conn.writer().write(&plain[off..]).unwrap_or(0);
            off += n;
            if !self.send_records(conn) && n == 0 {
                break; // cannot make progress (should not happen)
            }
        }
    }

    /// Hands every pending TLS record to the stream transport, straight from rustls's
    /// buffer (the stream transport copies only what the socket does not take). Returns
    /// whether there was anything to send.
    fn send_records(&self, conn: &mut Connection) -> bool {
        let mut sent = false;
        while conn.wants_write() {
            // The stream transport never calls back into protocols from `write`.
            if conn.write_tls(&mut RawWriter(&self.raw)).is_err() {
                break;
            }
            sent = true;
        }
        sent
    }

    fn schedule_flush(&self) {
        if self.flush_scheduled.replace(true) {
            return;
        }
        let (weak, Some(reactor)) = (self.me.clone(), self.reactor.upgrade()) else {
            return;
        };
        reactor.call_soon(move |_| {
            if let Some(s) = weak.upgrade() {
                s.flush_scheduled.set(false);
                s.flush();
            }
        });
    }

    fn set_failure(&self, err: TlsError) {
        let mut st = self.st.borrow_mut();
        if st.failure.is_none() && !st.closed {
            tracing::debug!(peer = %self.raw.peer_address(), error = %err, "TLS failure");
            st.failure = Some(err);
        }
    }

    /// Flushes, sends `close_notify` (once), and closes or half-closes the stream.
    ///
    /// A full close (`closing`) closes the stream gracefully and arms the TLS close timeout;
    /// it also finishes a connection that was half-closed before (`close_notify` already out).
    /// A half-close (`write_closing` alone) sends FIN and goes on reading.
    fn send_close(&self) {
        self.flush();
        let (full, first) = {
            let mut st = self.st.borrow_mut();
            if st.closed {
                return;
            }
            let first = !st.close_sent;
            if first {
                st.close_sent = true;
                st.conn.send_close_notify();
            }
            (st.closing, first)
        };
        if first {
            self.flush();
        }
        if full {
            self.raw.lose_connection();
            self.start_close_timer();
        } else if first {
            self.raw.lose_write_connection();
        }
    }

    /// Starts the TLS close timeout, counted from when everything we wrote has left the
    /// stream's buffer (see [`close_timer_fired`](Self::close_timer_fired)).
    fn start_close_timer(&self) {
        let draining = self.raw.buffered() > 0;
        self.st.borrow_mut().close_draining = draining;
        self.arm_close_timer(if draining {
            self.drain_poll()
        } else {
            self.close_timeout
        });
    }

    /// How often the close timer looks whether our data left the stream's buffer: a tenth of
    /// the close timeout, but at least every 10 ms (a zero timeout must not spin).
    fn drain_poll(&self) -> Duration {
        (self.close_timeout / 10).max(Duration::from_millis(10))
    }

    /// Arms (or re-arms) the TLS close timer to fire after `after`.
    fn arm_close_timer(&self, after: Duration) {
        if self.st.borrow().closed {
            return;
        }
        let (weak, Some(reactor)) = (self.me.clone(), self.reactor.upgrade()) else {
            return;
        };
        let timer = reactor.call_later(after, move |_| {
            if let Some(s) = weak.upgrade() {
                s.close_timer_fired();
            }
        });
        if let Some(old) = self.st.borrow_mut().close_timer.replace(timer) {
            old.cancel();
        }
    }

    /// The TLS close timer fired and the stream is still open: the peer has not answered our
    /// `close_notify` with its FIN. The timeout counts from the moment everything we wrote
    /// reached the socket: while some of it still waits in the stream's buffer (the peer reads
    /// slowly, and the stream's own close timeout bounds that), look again every tenth of the
    /// timeout, and once it is out, give the peer the whole timeout. Then abort (reported as a
    /// clean close: it was ours).
    fn close_timer_fired(&self) {
        let (draining, was_draining) = {
            let mut st = self.st.borrow_mut();
            st.close_timer = None;
            if st.closed {
                return;
            }
            let now = self.raw.buffered() > 0;
            (now, std::mem::replace(&mut st.close_draining, now))
        };
        if draining {
            self.arm_close_timer(self.drain_poll());
            return;
        }
        if was_draining {
            // Drained since the last look: the peer has just received our close_notify.
            self.arm_close_timer(self.close_timeout);
            return;
        }
        tracing::debug!(
            peer = %self.raw.peer_address(),
            timeout = ?self.close_timeout,
            "the peer did not answer close_notify within the TLS close timeout; aborting"
        );
        self.st.borrow_mut().close_timed_out = true;
        self.raw.abort_connection();
    }

    /// `lose_connection` was called, or the connection is gone: nothing more is delivered.
    fn closing(&self) -> bool {
        let st = self.st.borrow();
        st.closing || st.closed
    }

    /// Whether plaintext (or the peer's `close_notify`) waits for the protocol to resume.
    fn holding(&self) -> bool {
        self.held_eof.get() || !self.held.borrow().is_empty()
    }

    /// Delivers what was held while paused on the next turn (not from inside the callback of
    /// whoever called `resume_reading`, which may be the inner protocol itself).
    fn schedule_delivery(&self) {
        if self.delivery_scheduled.replace(true) {
            return;
        }
        let (weak, Some(reactor)) = (self.me.clone(), self.reactor.upgrade()) else {
            return;
        };
        reactor.call_soon(move |_| {
            let Some(s) = weak.upgrade() else {
                return;
            };
            s.delivery_scheduled.set(false);
            let Some(inner) = s.inner.upgrade() else {
                return;
            };
            if inner.try_borrow_mut().is_err() {
                s.schedule_delivery(); // the protocol is running (a nested reactor run)
                return;
            }
            // This runs on the reactor's turn, outside the stream's callbacks: a panic in the
            // protocol is caught here and aborts this connection, as in any other callback.
            if let Err(msg) = catch_unwind_message(|| deliver_held(&s, &inner)) {
                s.in_callback.set(false);
                s.abort_for_panic(msg);
            }
        });
    }

    fn handshake_timed_out(&self, timeout: Duration) {
        let pending = {
            let st = self.st.borrow();
            !st.handshake_done && !st.closed
        };
        if pending {
            self.set_failure(TlsError::HandshakeTimeout(timeout));
            self.raw.abort_connection();
        }
    }

    fn handshake_done(&self) -> bool {
        self.st.borrow().handshake_done
    }

    /// `stop_connecting` on a client's connector during the handshake: resets the stream
    /// at once. The connection then ends with `Aborted` (on the stream's next turn), or with
    /// the TLS failure that had already ended the handshake and whose close was under way.
    fn abort_handshake(&self) {
        let pending = {
            let st = self.st.borrow();
            !st.handshake_done && !st.closed
        };
        if pending {
            tracing::debug!(
                peer = %self.raw.peer_address(),
                "connection attempt stopped during the TLS handshake; aborting"
            );
            self.raw.abort_connection();
        }
    }
}

impl Transport for Shared {
    fn write(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut st = self.st.borrow_mut();
        if st.closed || st.closing || st.write_closing {
            return;
        }
        if st.handshake_done
            && !st.close_sent
            && st.plain_out.is_empty()
            && data.len() >= FLUSH_THRESHOLD
        {
            // A whole record's worth or more: encrypt it straight from the caller's slice.
            let st = &mut *st;
            self.encrypt(&mut st.conn, data);
            return;
        }
        st.plain_out.extend_from_slice(data);
        if !st.handshake_done && st.plain_out.len() > MAX_EARLY_PLAINTEXT {
            tracing::warn!(peer = %self.raw.peer_address(), limit = MAX_EARLY_PLAINTEXT, "plaintext written before the TLS handshake completed exceeds the limit; aborting");
            st.plain_out = Vec::new();
            drop(st);
            self.abort_with(CloseReason::WriteBufferOverflow {
                limit: MAX_EARLY_PLAINTEXT,
            });
            return;
        }
        let now = st.handshake_done && st.plain_out.len() >= FLUSH_THRESHOLD;
        drop(st);
        if now {
            self.flush();
        } else if !self.in_callback.get() {
            self.schedule_flush();
        }
    }

    fn lose_connection(&self) {
        let mut st = self.st.borrow_mut();
        if st.closed || st.closing {
            return;
        }
        st.closing = true;
        let handshaking = !st.handshake_done;
        drop(st);
        // During the handshake nothing can be sent yet: the close happens when it completes
        // (or the handshake deadline ends the connection).
        if !handshaking {
            self.send_close();
        }
    }

    fn lose_write_connection(&self) {
        let mut st = self.st.borrow_mut();
        if st.closed || st.closing || st.write_closing {
            return;
        }
        st.write_closing = true;
        let handshaking = !st.handshake_done;
        drop(st);
        if !handshaking {
            self.send_close();
        }
    }

    fn abort_connection(&self) {
        // Closed from here on: nothing more is written, encrypted or delivered.
        self.st.borrow_mut().closed = true;
        self.raw.abort_connection();
    }

    fn abort_with(&self, reason: CloseReason) {
        // Closed from here on, as after `abort_connection`.
        self.st.borrow_mut().closed = true;
        self.raw.abort_with(reason);
    }

    fn peer_address(&self) -> Address {
        self.raw.peer_address()
    }

    fn local_address(&self) -> Address {
        self.raw.local_address()
    }

    fn pause_reading(&self) {
        self.read_paused.set(true);
        self.raw.pause_reading();
    }

    fn resume_reading(&self) {
        self.read_paused.set(false);
        self.raw.resume_reading();
        if self.holding() {
            self.schedule_delivery();
        }
    }

    /// The limits apply to the underlying stream's buffer of ciphertext, which is what
    /// pauses the protocol (see the module's notes on flow control).
    fn set_write_buffer_limits(&self, high: usize, low: usize) -> io::Result<()> {
        self.raw.set_write_buffer_limits(high, low)
    }

    fn set_no_delay(&self, on: bool) -> io::Result<()> {
        self.raw.set_no_delay(on)
    }

    fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        self.raw.set_keepalive(keepalive)
    }

    fn peer_credentials(&self) -> Option<PeerCredentials> {
        self.raw.peer_credentials()
    }

    fn register_producer(&self, producer: Box<dyn Producer>, streaming: bool) {
        self.raw.register_producer(
            Box::new(TlsProducer {
                inner: producer,
                shared: self.me.clone(),
            }),
            streaming,
        );
    }

    fn unregister_producer(&self) {
        self.raw.unregister_producer();
    }

    fn buffered(&self) -> usize {
        self.raw.buffered() + self.st.borrow().plain_out.len()
    }

    fn is_closing(&self) -> bool {
        let st = self.st.borrow();
        st.closed || st.closing || st.write_closing || self.raw.is_closing()
    }

    fn is_fully_closing(&self) -> bool {
        let st = self.st.borrow();
        st.closed || st.closing || self.raw.is_fully_closing()
    }

    fn handle(&self) -> TransportHandle {
        TransportHandle::new(self.rc())
    }

    fn reactor(&self) -> Reactor {
        self.raw.reactor()
    }
}

/// The user's producer as the stream transport sees it: what it writes during one callback is
/// collected and encrypted together when the callback returns, as in protocol callbacks. So
/// a pull producer's chunk reaches the stream transport within the callback (which is how the
/// stream tells that it wrote, and asks for the next chunk once the buffer drains), and a push
/// producer's small writes become few records. The stream transport's watermarks pause and
/// resume it, on the ciphertext it buffers.
struct TlsProducer {
    inner: Box<dyn Producer>,
    shared: Weak<Shared>,
}

impl TlsProducer {
    fn run(&mut self, f: impl FnOnce(&mut dyn Producer)) {
        let Some(shared) = self.shared.upgrade() else {
            return f(&mut *self.inner);
        };
        let outer = shared.in_callback.replace(true);
        f(&mut *self.inner);
        shared.in_callback.set(outer);
        if !outer {
            shared.flush();
        }
    }
}

impl Producer for TlsProducer {
    fn pause_producing(&mut self) {
        self.run(|p| p.pause_producing());
    }

    fn resume_producing(&mut self) {
        self.run(|p| p.resume_producing());
    }

    fn stop_producing(&mut self) {
        self.inner.stop_producing();
    }
}

/// Runs `f` on the inner protocol (if built) with the TLS transport, then encrypts and sends
/// what it wrote.
fn call_protocol(
    shared: &Shared,
    inner: &RefCell<Inner>,
    f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport),
) {
    let mut inner = inner.borrow_mut();
    let Inner::Ready(p) = &mut *inner else {
        return;
    };
    let outer = shared.in_callback.replace(true);
    let mut t: &Shared = shared;
    f(&mut **p, &mut t);
    shared.in_callback.set(outer);
    drop(inner);
    shared.flush();
}

/// Delivers the plaintext held while the protocol had paused reading, then acts on a
/// `close_notify` that came after it. As on TCP, nothing reaches a protocol that is paused,
/// closing or closed.
fn deliver_held(shared: &Shared, inner: &RefCell<Inner>) {
    if shared.read_paused.get() {
        return;
    }
    if shared.closing() {
        *shared.held.borrow_mut() = Vec::new();
        shared.held_eof.set(false);
        return;
    }
    let data = std::mem::take(&mut *shared.held.borrow_mut());
    if !data.is_empty() {
        call_protocol(shared, inner, |p, t| p.data_received(t, &data));
    }
    // The protocol may have paused again, or closed, in `data_received`.
    if !shared.held_eof.get() || shared.read_paused.get() || shared.closing() {
        return;
    }
    shared.held_eof.set(false);
    let half_close = matches!(&*inner.borrow(), Inner::Ready(p) if p.half_close());
    if half_close {
        call_protocol(shared, inner, |p, t| p.read_connection_lost(t));
    } else {
        shared.lose_connection();
    }
}

/// How a client connection ended, for the client-factory wrapper.
pub(crate) struct Outcome {
    pub(crate) made: bool,
    /// The factory built no protocol after the handshake (reported to it as on TCP:
    /// `client_connection_failed` with [`CloseReason::NoProtocol`]).
    pub(crate) refused: bool,
    pub(crate) reason: CloseReason,
}

type OutcomeSlot = Rc<RefCell<Option<Outcome>>>;

/// Runs once the handshake completed, with the TLS transport.
pub(crate) type HandshakeCallback = Box<dyn FnOnce(&mut dyn Transport)>;

enum Inner {
    None,
    Ready(Box<dyn Protocol>),
    /// Built once the handshake completes (clients from `connect_tls`).
    Deferred(Rc<RefCell<Box<dyn ClientFactory>>>),
}

/// A protocol wrapper that speaks TLS on a stream transport and runs the inner protocol on the
/// plaintext.
///
/// `listen_tls`, `connect_tls` and [`start_tls`](super::start_tls) build it for you; build it
/// by hand to run TLS over any stream, such as the test kit's in-memory pair:
///
/// ```
/// use torsion_reactor::prelude::*;
/// use torsion_reactor::testing::{connect_pair, MemoryOptions, MemoryReactor};
/// use torsion_transports::tls::{self, ClientTlsConfig, ServerTlsConfig, TlsProtocol};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
/// }
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: &mut dyn Transport) { t.write(b"hi") }
///     fn data_received(&mut self, t: &mut dyn Transport, _: &[u8]) { t.lose_connection() }
/// }
///
/// let dir = tempfile::tempdir().unwrap();
/// let certs = tls::create_dev_certs(dir.path(), &[]).unwrap();
/// let server = ServerTlsConfig::from_pem_files(&certs.server_cert, &certs.server_key, None)?;
/// let client = ClientTlsConfig::with_ca_file(&certs.ca_cert)?;
/// let mr = MemoryReactor::new();
/// let pair = connect_pair(
///     mr.reactor(),
///     TlsProtocol::client(Hello, &client, "localhost").unwrap(),
///     TlsProtocol::server(Echo, &server),
///     MemoryOptions::chunked(1),
/// );
/// mr.run_until_idle();
/// assert!(pair.client_lost().unwrap().is_clean());
/// # Ok::<(), torsion_reactor::Error>(())
/// ```
///
/// The inner protocol's `connection_made` runs once the handshake completed (on a
/// STARTTLS upgrade it already ran, in the clear); `connection_lost` runs exactly once, also
/// when the handshake failed, with the TLS reason (see [`TlsError::from_reason`]).
pub struct TlsProtocol {
    conn: Option<Result<Connection, TlsError>>,
    client_name: Option<String>,
    shared: Option<Rc<Shared>>,
    inner: Rc<RefCell<Inner>>,
    made: bool,
    /// The deferred factory built no protocol.
    refused: bool,
    half_close: bool,
    clean_eof: bool,
    limits: TlsLimits,
    deadline: Option<DelayedCall>,
    outcome: Option<OutcomeSlot>,
    /// The attempt of the `connect_tls` connector this layer runs for, told of the layer.
    attempt: Option<Rc<ClientAttempt>>,
    on_handshake: Option<HandshakeCallback>,
    early_failure: Option<TlsError>,
    plain_in: Vec<u8>,
}

impl TlsProtocol {
    fn new(
        conn: Result<Connection, TlsError>,
        client_name: Option<String>,
        inner: Inner,
        limits: TlsLimits,
    ) -> Self {
        TlsProtocol {
            conn: Some(conn),
            client_name,
            shared: None,
            inner: Rc::new(RefCell::new(inner)),
            made: false,
            refused: false,
            half_close: false,
            clean_eof: false,
            limits,
            deadline: None,
            outcome: None,
            attempt: None,
            on_handshake: None,
            early_failure: None,
            plain_in: Vec::new(),
        }
    }

    /// The server end of TLS around `inner`.
    pub fn server(inner: impl Protocol, config: &ServerTlsConfig) -> Self {
        Self::server_boxed(Box::new(inner), config)
    }

    pub(crate) fn server_boxed(inner: Box<dyn Protocol>, config: &ServerTlsConfig) -> Self {
        let conn = rustls::ServerConnection::new(config.rustls.clone())
            .map(Connection::from)
            .map_err(TlsError::Rustls);
        Self::new(conn, None, Inner::Ready(inner), config.limits)
    }

    /// The client end of TLS around `inner`, verifying the server against `server_name` (a
    /// DNS name or an IP address) and sending it with SNI.
    pub fn client(
        inner: impl Protocol,
        config: &ClientTlsConfig,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let p = Self::client_inner(Inner::Ready(Box::new(inner)), config, server_name);
        match p.conn {
            Some(Err(e)) => Err(e),
            _ => Ok(p),
        }
    }

    pub(crate) fn client_boxed(
        inner: Box<dyn Protocol>,
        config: &ClientTlsConfig,
        server_name: &str,
    ) -> Self {
        Self::client_inner(Inner::Ready(inner), config, server_name)
    }

    fn client_inner(inner: Inner, config: &ClientTlsConfig, server_name: &str) -> Self {
        let name = server_name.trim_start_matches('[').trim_end_matches(']');
        let conn = ServerName::try_from(name.to_owned())
            .map_err(|e| {
                TlsError::Rustls(rustls::Error::General(format!(
                    "invalid server name {name:?}: {e}"
                )))
            })
            .and_then(|sn| {
                rustls::ClientConnection::new(config.rustls.clone(), sn)
                    .map(Connection::from)
                    .map_err(TlsError::Rustls)
            });
        Self::new(conn, Some(name.to_owned()), inner, config.limits)
    }

    /// Runs `callback` with the TLS transport once the handshake completed (opt-in; for a
    /// protocol upgraded with STARTTLS, whose `connection_made` already ran).
    pub fn on_handshake(mut self, callback: impl FnOnce(&mut dyn Transport) + 'static) -> Self {
        self.on_handshake = Some(Box::new(callback));
        self
    }

    /// Marks the inner protocol as already made (STARTTLS).
    pub(crate) fn already_made(mut self) -> Self {
        self.made = true;
        if let Inner::Ready(p) = &*self.inner.borrow() {
            self.half_close = p.half_close();
        }
        self
    }

    fn with_outcome(mut self, slot: OutcomeSlot, attempt: Rc<ClientAttempt>) -> Self {
        self.outcome = Some(slot);
        self.attempt = Some(attempt);
        self
    }

    fn call_inner(
        &mut self,
        shared: &Rc<Shared>,
        f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport),
    ) {
        call_protocol(shared, &self.inner, f);
    }

    fn fail(&mut self, shared: &Rc<Shared>, err: TlsError) {
        shared.set_failure(err);
        shared.flush(); // the alert rustls queued, if any
        shared.raw.lose_connection();
        // A peer that sent garbage need not be waited for longer than one that went silent.
        shared.start_close_timer();
    }

    fn established(&mut self, raw: &mut dyn Transport, shared: &Rc<Shared>) {
        if let Some(d) = self.deadline.take() {
            d.cancel();
        }
        let deferred = match &*self.inner.borrow() {
            Inner::Deferred(factory) => Some(factory.clone()),
            _ => None,
        };
        if let Some(factory) = deferred {
            let built = factory.borrow_mut().build_protocol(&raw.peer_address());
            match built {
                Some(p) => *self.inner.borrow_mut() = Inner::Ready(p),
                None => {
                    // The factory saw the connection and refused it: no protocol was made,
                    // and (as on TCP) the attempt failed with `NoProtocol`.
                    *self.inner.borrow_mut() = Inner::None;
                    self.refused = true;
                    shared.lose_connection();
                    return;
                }
            }
        }
        if !self.made {
            if let Inner::Ready(p) = &*self.inner.borrow() {
                self.half_close = p.half_close();
            }
            self.made = true;
            self.call_inner(shared, |p, t| p.connection_made(t));
        }
        if let Some(cb) = self.on_handshake.take() {
            shared.in_callback.set(true);
            let mut t: &Shared = shared;
            cb(&mut t);
            shared.in_callback.set(false);
        }
        shared.flush();
        let (closing, sent) = {
            let st = shared.st.borrow();
            (st.closing || st.write_closing, st.close_sent)
        };
        if closing && !sent {
            shared.send_close();
        }
    }
}

impl Protocol for TlsProtocol {
    fn connection_made(&mut self, raw: &mut dyn Transport) {
        let conn = match self.conn.take() {
            Some(Ok(conn)) => conn,
            Some(Err(e)) => {
                self.early_failure = Some(e);
                raw.abort_connection();
                return;
            }
            None => return,
        };
        let mut conn = conn;
        conn.set_buffer_limit(Some(self.limits.buffer_limit));
        let shared = Rc::new_cyclic(|me| Shared {
            me: me.clone(),
            raw: raw.handle(),
            reactor: raw.reactor().downgrade(),
            st: RefCell::new(St {
                conn,
                plain_out: Vec::new(),
                handshake_done: false,
                closing: false,
                write_closing: false,
                close_sent: false,
                closed: false,
                failure: None,
                close_timer: None,
                close_timed_out: false,
                close_draining: false,
            }),
            client_name: self.client_name.take(),
            close_timeout: self.limits.close_timeout,
            in_callback: Cell::new(false),
            flush_scheduled: Cell::new(false),
            read_paused: Cell::new(false),
            held: RefCell::new(Vec::new()),
            held_eof: Cell::new(false),
            delivery_scheduled: Cell::new(false),
            inner: Rc::downgrade(&self.inner),
        });
        SESSIONS.with(|m| {
            m.borrow_mut().insert(
                Rc::as_ptr(&shared) as *const () as usize,
                Rc::downgrade(&shared),
            )
        });
        let weak = Rc::downgrade(&shared);
        let timeout = self.limits.handshake_timeout;
        self.deadline = Some(raw.reactor().call_later(timeout, move |_| {
            if let Some(s) = weak.upgrade() {
                s.handshake_timed_out(timeout);
            }
        }));
        if let Some(attempt) = &self.attempt {
            attempt.set(&shared);
        }
        shared.flush(); // a client's ClientHello

        // STARTTLS: what the protocol wrote after `start_tls`, and the handles it took before,
        // go through TLS from now on.
        raw.redirect_handles(shared.handle());
        self.shared = Some(shared);
    }

    fn data_received(&mut self, raw: &mut dyn Transport, data: &[u8]) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let mut failure = None;
        let mut peer_closed = false;
        let mut established = false;
        {
            let mut st = shared.st.borrow_mut();
            let st = &mut *st;
            if st.closed || st.failure.is_some() {
                return;
            }
            let mut rest = data;
            while !rest.is_empty() {
                match st.conn.read_tls(&mut rest) {
                    // After the peer's close_notify rustls takes nothing more: whatever
                    // follows it is ignored (and must not spin this loop).
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        failure = Some(TlsError::Rustls(rustls::Error::General(e.to_string())));
                        break;
                    }
                }
                match st.conn.process_new_packets() {
                    Ok(state) => peer_closed |= state.peer_has_closed(),
                    Err(e) => {
                        failure = Some(TlsError::Rustls(e));
                        break;
                    }
                }
                let mut reader = st.conn.reader();
                while let Ok(chunk) = reader.fill_buf() {
                    if chunk.is_empty() {
                        break;
                    }
                    let n = chunk.len();
                    self.plain_in.extend_from_slice(chunk);
                    reader.consume(n);
                }
                if !st.handshake_done && !st.conn.is_handshaking() {
                    st.handshake_done = true;
                    established = true;
                }
            }
        }
        shared.flush();
        if established {
            self.established(raw, &shared);
        }
        if !self.plain_in.is_empty() {
            let plain = std::mem::take(&mut self.plain_in);
            // As on TCP, nothing reaches a protocol that closed or aborted (possibly in the
            // `connection_made` just above, with the client's first data in the same read).
            if self.made && !shared.closing() {
                if shared.read_paused.get() || shared.holding() {
                    // Nor one that paused reading (possibly in that `connection_made`): held,
                    // after what is held already, until it resumes.
                    shared.held.borrow_mut().extend_from_slice(&plain);
                } else {
                    self.call_inner(&shared, |p, t| p.data_received(t, &plain));
                }
            }
            self.plain_in = plain;
            self.plain_in.clear();
        }
        if let Some(err) = failure {
            self.fail(&shared, err);
            return;
        }
        if peer_closed && !self.clean_eof {
            self.clean_eof = true;
            if shared.read_paused.get() || shared.holding() {
                shared.held_eof.set(true); // after the held plaintext, once resumed
            } else if self.made && self.half_close {
                self.call_inner(&shared, |p, t| p.read_connection_lost(t));
            } else {
                shared.lose_connection();
            }
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        if let Some(d) = self.deadline.take() {
            d.cancel();
        }
        let mut ended = Ended::default();
        match &self.shared {
            Some(shared) => {
                shared.in_callback.set(false);
                SESSIONS.with(|m| {
                    m.borrow_mut()
                        .remove(&(Rc::as_ptr(shared) as *const () as usize))
                });
                *shared.held.borrow_mut() = Vec::new();
                let mut st = shared.st.borrow_mut();
                st.closed = true;
                st.plain_out = Vec::new();
                if let Some(timer) = st.close_timer.take() {
                    timer.cancel();
                }
                ended = Ended {
                    failure: st.failure.take(),
                    handshake_done: st.handshake_done,
                    closing: st.closing,
                    close_timed_out: st.close_timed_out,
                };
            }
            None => ended.failure = self.early_failure.take(),
        }
        let reason = match ended.failure {
            Some(err) => err.into_close_reason(),
            None if !ended.handshake_done && reason.is_clean() => {
                TlsError::HandshakeEof.into_close_reason()
            }
            // Our close, ended by the TLS close timeout (the abort it made, not something that
            // came first, such as the stream's own close timeout): the clean close we asked for.
            None if ended.close_timed_out && matches!(reason, CloseReason::Aborted) => {
                CloseReason::Done
            }
            // The stream ended cleanly, but not after the peer's close_notify, and not because
            // we closed (after our half-close, the peer's FIN ends the stream directly).
            None if reason.is_clean() && !self.clean_eof && !ended.closing => {
                TlsError::Truncated.into_close_reason()
            }
            None => reason,
        };
        if let Some(slot) = &self.outcome {
            *slot.borrow_mut() = Some(Outcome {
                made: self.made,
                refused: self.refused,
                reason: reason.clone(),
            });
        }
        if let Inner::Ready(p) = &mut *self.inner.borrow_mut() {
            p.connection_lost(reason);
        }
    }

    fn half_close(&self) -> bool {
        true // the layer decides: close_notify before FIN is clean, FIN alone is truncation
    }

    fn read_connection_lost(&mut self, raw: &mut dyn Transport) {
        let Some(shared) = self.shared.clone() else {
            raw.lose_connection();
            return;
        };
        // The protocol resumed and its held plaintext is still to come: it comes first.
        if !shared.read_paused.get() && shared.holding() {
            deliver_held(&shared, &self.inner);
        }
        if self.clean_eof {
            if shared.held_eof.get() {
                // Paused again with the peer's close_notify still held: acted on after the
                // protocol resumes (`deliver_held`).
                return;
            }
            if !(self.made && self.half_close) {
                raw.lose_connection();
            }
            return;
        }
        let done = shared.st.borrow().handshake_done;
        shared.set_failure(if done {
            TlsError::Truncated
        } else {
            TlsError::HandshakeEof
        });
        raw.lose_connection();
    }

    fn write_connection_lost(&mut self, _raw: &mut dyn Transport) {
        if let Some(shared) = self.shared.clone() {
            if self.made {
                self.call_inner(&shared, |p, t| p.write_connection_lost(t));
            }
        }
    }

    fn pause_producing(&mut self, raw: &mut dyn Transport) {
        match self.shared.clone() {
            Some(shared) if self.made => self.call_inner(&shared, |p, t| p.pause_producing(t)),
            _ => raw.pause_reading(),
        }
    }

    fn resume_producing(&mut self, raw: &mut dyn Transport) {
        match self.shared.clone() {
            Some(shared) if self.made => self.call_inner(&shared, |p, t| p.resume_producing(t)),
            _ => raw.resume_reading(),
        }
    }
}

/// What the TLS state says about how a connection ended.
#[derive(Default)]
struct Ended {
    failure: Option<TlsError>,
    handshake_done: bool,
    closing: bool,
    close_timed_out: bool,
}

/// The factory `listen_tls` gives the stream listener: wraps each protocol the user's
/// factory builds.
pub(crate) struct ServerFactory {
    pub(crate) inner: SharedFactory,
    pub(crate) config: ServerTlsConfig,
}

impl Factory for ServerFactory {
    fn build_protocol(&mut self, peer: &Address, local: &Address) -> Option<Box<dyn Protocol>> {
        match self.inner.build(peer, local) {
            Ok(Some(p)) => Some(Box::new(TlsProtocol::server_boxed(p, &self.config))),
            Ok(None) => None,
            Err(msg) => {
                tracing::error!(peer = %peer, panic = %msg, "factory panicked; connection refused");
                None
            }
        }
    }

    fn start_factory(&mut self) {
        self.inner.port_started();
    }

    fn stop_factory(&mut self) {
        self.inner.port_stopped();
    }
}

/// What a `connect_tls` connector shares with its client-factory wrapper: the TLS layer of
/// its current connection, so that [`TlsConnector`] can stop the attempt during the
/// handshake (the stream connector counts itself connected once TCP is).
#[derive(Default)]
pub(crate) struct ClientAttempt {
    layer: RefCell<Weak<Shared>>,
}

impl ClientAttempt {
    fn set(&self, layer: &Rc<Shared>) {
        *self.layer.borrow_mut() = Rc::downgrade(layer);
    }

    fn clear(&self) {
        *self.layer.borrow_mut() = Weak::new();
    }

    /// The layer of the current connection, while its stream lives.
    fn layer(&self) -> Option<Rc<Shared>> {
        let layer = self.layer.borrow().upgrade()?;
        let closed = layer.st.borrow().closed;
        (!closed).then_some(layer)
    }
}

/// The [`Connector`] of `connect_tls` and `connect_tls_unix`, the one the user gets back and
/// the one its client factory's hooks receive: the stream connector's, except that the
/// attempt lasts until the TLS handshake completed.
///
/// - `stop_connecting` (and `disconnect`) during the handshake reset the stream at once,
///   and the factory hears `client_connection_failed` with [`CloseReason::Aborted`] on the
///   next turn, as when stopped while TCP connects; the protocol is never built. After the
///   handshake, `stop_connecting` does nothing, as on a connected TCP connector.
/// - `disconnect` after the handshake closes the TLS connection gracefully, as the
///   protocol's `lose_connection` does (`close_notify`, then FIN).
pub(crate) struct TlsConnector {
    stream: Connector,
    attempt: Rc<ClientAttempt>,
}

impl TlsConnector {
    /// The TLS connector over `stream`, the connector the wrapper with `attempt` was given to.
    pub(crate) fn wrap(stream: Connector, attempt: Rc<ClientAttempt>) -> Connector {
        Connector::new(Rc::new(TlsConnector { stream, attempt }))
    }
}

impl ConnectorOps for TlsConnector {
    fn connect(&self) {
        self.stream.connect();
    }

    fn stop_connecting(&self) {
        match self.attempt.layer() {
            Some(layer) => layer.abort_handshake(), // nothing once the handshake completed
            None => self.stream.stop_connecting(),
        }
    }

    fn disconnect(&self) {
        match self.attempt.layer() {
            Some(layer) if layer.handshake_done() => layer.lose_connection(),
            Some(layer) => layer.abort_handshake(),
            None => self.stream.disconnect(),
        }
    }

    fn destination(&self) -> String {
        self.stream.destination()
    }
}

/// The client factory `connect_tls` gives the stream connector: builds the user's protocol
/// once the handshake completed, reports handshake failures as connection failures, and
/// gives the user's factory the [`TlsConnector`] in place of the stream's.
pub(crate) struct ClientFactoryWrapper {
    pub(crate) inner: Rc<RefCell<Box<dyn ClientFactory>>>,
    pub(crate) config: ClientTlsConfig,
    pub(crate) server_name: String,
    pub(crate) current: Option<OutcomeSlot>,
    pub(crate) attempt: Rc<ClientAttempt>,
}

impl ClientFactoryWrapper {
    fn connector(&self, stream: &Connector) -> Connector {
        TlsConnector::wrap(stream.clone(), self.attempt.clone())
    }
}

impl ClientFactory for ClientFactoryWrapper {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        let slot: OutcomeSlot = Rc::new(RefCell::new(None));
        self.current = Some(slot.clone());
        let p = TlsProtocol::client_inner(
            Inner::Deferred(self.inner.clone()),
            &self.config,
            &self.server_name,
        )
        .with_outcome(slot, self.attempt.clone());
        Some(Box::new(p))
    }

    fn started_connecting(&mut self, connector: &Connector) {
        let connector = self.connector(connector);
        self.inner.borrow_mut().started_connecting(&connector);
    }

    fn client_connection_failed(&mut self, connector: &Connector, reason: CloseReason) {
        self.attempt.clear();
        let connector = self.connector(connector);
        self.inner
            .borrow_mut()
            .client_connection_failed(&connector, reason);
    }

    fn client_connection_lost(&mut self, connector: &Connector, reason: CloseReason) {
        self.attempt.clear();
        let connector = self.connector(connector);
        let outcome = self.current.take().and_then(|s| s.borrow_mut().take());
        let (made, reason) = match outcome {
            // As on TCP: connected, but the factory built no protocol.
            Some(o) if o.refused => (false, CloseReason::NoProtocol),
            Some(o) => (o.made, o.reason),
            None => (true, reason),
        };
        let mut inner = self.inner.borrow_mut();
        if made {
            inner.client_connection_lost(&connector, reason);
        } else {
            inner.client_connection_failed(&connector, reason);
        }
    }
}
