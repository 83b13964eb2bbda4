//! Helpers shared by the transport integration tests.
//!
//! Every test runs its reactor through [`run_until`], which stops the loop once a condition
//! holds and fails the test (instead of hanging) when a hard deadline passes first. Peers
//! written with blocking `std` sockets run on a [`Peer`] thread with read and write timeouts,
//! so they always finish too.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use torsion_reactor::prelude::*;

/// The hard deadline of one reactor run: a test that reaches it fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Timeout of every blocking read or write made by a `std` peer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How often [`run_until`] checks its condition.
const POLL_EVERY: Duration = Duration::from_millis(2);

/// Runs `reactor` until `done()` returns true, checked every few milliseconds.
///
/// Panics with `what` if [`DEADLINE`] passes first, so a test can never hang.
pub fn run_until(reactor: &Reactor, what: &str, done: impl Fn() -> bool + 'static) {
    run_until_within(reactor, DEADLINE, what, done)
}

/// [`run_until`] with an explicit deadline.
pub fn run_until_within(
    reactor: &Reactor,
    limit: Duration,
    what: &str,
    done: impl Fn() -> bool + 'static,
) {
    assert!(
        try_run_until(reactor, limit, done),
        "timed out after {limit:?} waiting for: {what}"
    );
}

/// Runs `reactor` until `done()` returns true or `limit` passes; returns whether `done()`
/// became true.
pub fn try_run_until(
    reactor: &Reactor,
    limit: Duration,
    done: impl Fn() -> bool + 'static,
) -> bool {
    let timed_out = Rc::new(std::cell::Cell::new(false));
    let flag = timed_out.clone();
    let deadline = reactor.call_later(limit, move |r| {
        flag.set(true);
        r.stop();
    });
    let done: Rc<dyn Fn() -> bool> = Rc::new(done);
    let check = done.clone();
    reactor.call_soon(move |r| poll(r, check));
    reactor.run().expect("the reactor runs");
    deadline.cancel();
    !timed_out.get() || done()
}

fn poll(reactor: &Reactor, done: Rc<dyn Fn() -> bool>) {
    if done() {
        reactor.stop();
    } else {
        let _ = reactor.call_later(POLL_EVERY, move |r| poll(r, done));
    }
}

/// Runs `reactor` for `duration` of real time (to let events that should *not* happen show
/// up).
pub fn run_for(reactor: &Reactor, duration: Duration) {
    let stop = reactor.call_later(duration, |r| r.stop());
    reactor.run().expect("the reactor runs");
    stop.cancel();
}

/// A peer on its own thread, usually made of blocking `std` sockets.
pub struct Peer<T> {
    thread: Option<JoinHandle<T>>,
    done: Arc<AtomicBool>,
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl<T: Send + 'static> Peer<T> {
    /// Starts `f` on a new thread.
    pub fn spawn(f: impl FnOnce() -> T + Send + 'static) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = SetOnDrop(done.clone());
        let thread = thread::spawn(move || {
            let _flag = flag; // set even if `f` panics
            f()
        });
        Peer {
            thread: Some(thread),
            done,
        }
    }

    /// A shareable flag that turns true when the peer has returned (or panicked).
    pub fn done_flag(&self) -> Arc<AtomicBool> {
        self.done.clone()
    }

    /// `true` once the peer has returned (or panicked).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Waits for the peer and returns its result; re-raises its panic.
    pub fn join(mut self) -> T {
        let thread = self.thread.take().expect("joined once");
        match thread.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<T> Drop for Peer<T> {
    fn drop(&mut self) {
        // Never leave a thread behind; its I/O timeouts bound the wait. Do not turn a
        // failing test's panic into an abort.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects a blocking `std` TCP client with read and write timeouts.
pub fn std_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the server");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Reads until EOF (bounded by the stream's read timeout, which fails the read).
pub fn read_to_eof(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    Ok(out)
}

/// Reads exactly `n` bytes.
pub fn read_exact_vec(stream: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0; n];
    stream.read_exact(&mut out)?;
    Ok(out)
}

/// Writes all of `data` and flushes.
pub fn write_all(stream: &mut impl Write, data: &[u8]) {
    stream.write_all(data).expect("write to the server");
    stream.flush().expect("flush");
}

/// The socket address of a listening port bound to an IP address.
pub fn port_addr(address: &Address) -> SocketAddr {
    address
        .socket_addr()
        .expect("the port is bound to an IP address")
}

/// A recognisable pattern of `len` bytes (not periodic over short spans, so lost, duplicated
/// or reordered chunks are detected).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8)
        .collect()
}

/// Echo (RFC 862): writes back what arrives.
pub struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        transport.write(data);
    }
}

/// What a [`Recorder`] saw, shared with the test.
#[derive(Default)]
pub struct Record {
    /// `connection_made` ran.
    pub made: bool,
    /// Every byte received, in order.
    pub data: Vec<u8>,
    /// How many `data_received` calls delivered them.
    pub chunks: usize,
    /// `read_connection_lost` ran (half-close protocols only).
    pub read_lost: bool,
    /// `write_connection_lost` ran.
    pub write_lost: bool,
    /// The reason given to `connection_lost` (the first one, if it ran more than once).
    pub lost: Option<CloseReason>,
    /// How many times `connection_lost` ran (must end at exactly 1).
    pub lost_calls: usize,
    /// The connection's transport, kept from `connection_made`.
    pub handle: Option<TransportHandle>,
}

/// Shared view of a [`Record`].
pub type Shared = Rc<RefCell<Record>>;

/// A new, empty shared record.
pub fn record() -> Shared {
    Rc::new(RefCell::new(Record::default()))
}

/// `true` once the recorded connection has been lost.
pub fn is_lost(rec: &Shared) -> bool {
    rec.borrow().lost_calls > 0
}

/// A protocol that records everything into a [`Shared`] record; optionally echoes, and sends
/// a greeting on connect.
pub struct Recorder {
    /// Where the events go.
    pub rec: Shared,
    /// Sent from `connection_made`.
    pub greeting: Vec<u8>,
    /// Echo what arrives.
    pub echo: bool,
}

impl Recorder {
    /// A recording protocol that neither echoes nor greets.
    pub fn new(rec: &Shared) -> Self {
        Recorder {
            rec: rec.clone(),
            greeting: Vec::new(),
            echo: false,
        }
    }

    /// A recording protocol that echoes.
    pub fn echo(rec: &Shared) -> Self {
        Recorder {
            echo: true,
            ..Recorder::new(rec)
        }
    }
}

impl Protocol for Recorder {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        let mut rec = self.rec.borrow_mut();
        rec.made = true;
        rec.handle = Some(transport.handle());
        drop(rec);
        if !self.greeting.is_empty() {
            transport.write(&self.greeting);
        }
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        let mut rec = self.rec.borrow_mut();
        rec.data.extend_from_slice(data);
        rec.chunks += 1;
        drop(rec);
        if self.echo {
            transport.write(data);
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        let mut rec = self.rec.borrow_mut();
        rec.lost_calls += 1;
        if rec.lost.is_none() {
            rec.lost = Some(reason);
        }
    }

    fn write_connection_lost(&mut self, _transport: &mut dyn Transport) {
        self.rec.borrow_mut().write_lost = true;
    }
}

/// Asserts that a recorded connection ended exactly once, for a reason `ok` accepts.
pub fn assert_lost_once(rec: &Shared, what: &str, ok: impl Fn(&CloseReason) -> bool) {
    let rec = rec.borrow();
    assert_eq!(
        rec.lost_calls, 1,
        "{what}: connection_lost must run exactly once"
    );
    let reason = rec.lost.as_ref().expect("a reason was recorded");
    assert!(ok(reason), "{what}: unexpected close reason {reason:?}");
}

/// The number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// Serialises the tests of one binary that must not overlap (descriptor counts, timing).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a [`Sender`] client and its [`SenderFactory`] saw.
#[derive(Default)]
pub struct ClientLog {
    pub data: Vec<u8>,
    pub made: bool,
    pub local: Option<Address>,
    pub lost: Option<CloseReason>,
    pub failed: Option<CloseReason>,
    pub factory_lost: Option<CloseReason>,
}

pub type Log = Rc<RefCell<ClientLog>>;

/// Sends `msg`, collects the echo, closes once all of it came back.
pub struct Sender {
    pub log: Log,
    pub msg: Vec<u8>,
}

impl Protocol for Sender {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let mut log = self.log.borrow_mut();
        log.made = true;
        log.local = Some(t.local_address());
        drop(log);
        t.write(&self.msg);
    }

    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        let mut log = self.log.borrow_mut();
        log.data.extend_from_slice(d);
        if log.data.len() >= self.msg.len() {
            t.lose_connection();
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

/// Builds a [`Sender`] per connection and records the client-factory callbacks.
pub struct SenderFactory {
    pub log: Log,
    pub msg: Vec<u8>,
}

impl ClientFactory for SenderFactory {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Sender {
            log: self.log.clone(),
            msg: self.msg.clone(),
        }))
    }

    fn client_connection_failed(&mut self, _: &Connector, reason: CloseReason) {
        self.log.borrow_mut().failed = Some(reason);
    }

    fn client_connection_lost(&mut self, _: &Connector, reason: CloseReason) {
        self.log.borrow_mut().factory_lost = Some(reason);
    }
}

/// Wraps a layer (a TLS protocol) and keeps a handle to the bare stream beneath it, taken in
/// `connection_made` before the layer takes over the connection's handles: closing through
/// it sends a plain FIN (no TLS `close_notify`), as a peer's crashing TLS stack would.
pub struct RawEnd<P> {
    /// The wrapped layer.
    pub inner: P,
    /// The bare stream's handle, once connected.
    pub raw: Rc<RefCell<Option<TransportHandle>>>,
}

impl<P: Protocol> RawEnd<P> {
    /// `inner`, and where its bare stream's handle will be.
    pub fn new(inner: P) -> (Self, Rc<RefCell<Option<TransportHandle>>>) {
        let raw = Rc::new(RefCell::new(None));
        (
            RawEnd {
                inner,
                raw: raw.clone(),
            },
            raw,
        )
    }
}

impl<P: Protocol> Protocol for RawEnd<P> {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        *self.raw.borrow_mut() = Some(t.handle());
        self.inner.connection_made(t);
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.inner.data_received(t, data);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.inner.connection_lost(reason);
    }
    fn half_close(&self) -> bool {
        self.inner.half_close()
    }
    fn read_connection_lost(&mut self, t: &mut dyn Transport) {
        self.inner.read_connection_lost(t);
    }
    fn write_connection_lost(&mut self, t: &mut dyn Transport) {
        self.inner.write_connection_lost(t);
    }
    fn pause_producing(&mut self, t: &mut dyn Transport) {
        self.inner.pause_producing(t);
    }
    fn resume_producing(&mut self, t: &mut dyn Transport) {
        self.inner.resume_producing(t);
    }
}
