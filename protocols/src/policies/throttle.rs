//! Bandwidth throttling: [`Throttled`] (per connection), [`BandwidthPool`] and
//! [`ThrottlingFactory`] (per factory).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::IoSlice;
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::{
    catch_unwind_message, Address, CloseReason, DelayedCall, Factory, Producer, Protocol,
    SharedFactory, Transport, TransportHandle,
};

use super::wrap::{build, forward_protocol_rest, pick, Hooked, Hooks};

/// Bandwidth caps, in bytes per second; `None` means uncapped.
///
/// A cap is at least 1 byte per second: `Some(0)` caps as `Some(1)` does (it does not stop
/// the transfer altogether, nor mean "uncapped"; use `None` for that).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bandwidth {
    /// Cap on bytes read from the peer.
    pub read: Option<u64>,
    /// Cap on bytes written to the peer.
    pub write: Option<u64>,
}

impl Bandwidth {
    /// No caps.
    pub const UNLIMITED: Bandwidth = Bandwidth {
        read: None,
        write: None,
    };

    /// Caps reading at `bytes_per_sec`.
    pub fn read(bytes_per_sec: u64) -> Self {
        Bandwidth {
            read: Some(bytes_per_sec),
            write: None,
        }
    }

    /// Caps writing at `bytes_per_sec`.
    pub fn write(bytes_per_sec: u64) -> Self {
        Bandwidth {
            read: None,
            write: Some(bytes_per_sec),
        }
    }

    /// Caps both directions (each at `bytes_per_sec`).
    pub fn both(bytes_per_sec: u64) -> Self {
        Bandwidth {
            read: Some(bytes_per_sec),
            write: Some(bytes_per_sec),
        }
    }
}

struct BucketState {
    rate: f64,
    burst: f64,
    tokens: Cell<f64>,
    last: Cell<Option<Duration>>,
}

/// A token bucket: refills at a rate (bytes per second) up to a burst size, and may go into
/// debt (bytes already read or written cannot be refused); while in debt, the connections
/// using it wait. Cheap to clone; clones share the bucket.
#[derive(Clone)]
pub struct TokenBucket(Rc<BucketState>);

impl TokenBucket {
    /// A bucket of `bytes_per_sec` with a burst of one second's worth. A rate of 0 is taken
    /// as 1 byte per second.
    pub fn new(bytes_per_sec: u64) -> Self {
        Self::with_burst(bytes_per_sec, bytes_per_sec)
    }

    /// A bucket of `bytes_per_sec` holding at most `burst` bytes (it starts full). A rate or
    /// burst of 0 is taken as 1.
    pub fn with_burst(bytes_per_sec: u64, burst: u64) -> Self {
        let burst = burst.max(1) as f64;
        TokenBucket(Rc::new(BucketState {
            rate: bytes_per_sec.max(1) as f64,
            burst,
            tokens: Cell::new(burst),
            last: Cell::new(None),
        }))
    }

    fn refill(&self, now: Duration) {
        let s = &self.0;
        if let Some(last) = s.last.get() {
            let earned = now.saturating_sub(last).as_secs_f64() * s.rate;
            s.tokens.set((s.tokens.get() + earned).min(s.burst));
        }
        s.last.set(Some(now));
    }

    /// Spends `n` bytes at time `now`.
    fn take(&self, now: Duration, n: usize) {
        self.refill(now);
        self.0.tokens.set(self.0.tokens.get() - n as f64);
    }

    /// How long from `now` until the bucket is out of debt.
    fn wait(&self, now: Duration) -> Duration {
        self.refill(now);
        let debt = -self.0.tokens.get();
        if debt <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(debt / self.0.rate)
        }
    }
}

impl fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBucket")
            .field("rate", &self.0.rate)
            .field("tokens", &self.0.tokens.get())
            .finish()
    }
}

/// Caps shared by many connections (Twisted's `ThrottlingFactory` limits): every connection
/// [`Throttled::sharing`] a pool draws from the same buckets, so together they stay within
/// them. Cheap to clone; clones share the pool.
#[derive(Clone, Debug)]
pub struct BandwidthPool {
    read: Option<TokenBucket>,
    write: Option<TokenBucket>,
}

impl BandwidthPool {
    /// A pool capped at `limits` (each with a one-second burst).
    pub fn new(limits: Bandwidth) -> Self {
        BandwidthPool {
            read: limits.read.map(TokenBucket::new),
            write: limits.write.map(TokenBucket::new),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

/// The producer the inner protocol registered, shared between the transport (through
/// [`ProducerProxy`]) and the throttle.
#[derive(Default)]
struct ProducerSlot {
    /// The real transport; `None` once the connection is lost.
    transport: RefCell<Option<TransportHandle>>,
    /// The producer, between its calls.
    producer: RefCell<Option<Box<dyn Producer>>>,
    /// `Some` while the producer is inside one of its calls (taken out of `producer`
    /// meanwhile): what becomes of it when the call returns.
    in_call: RefCell<Option<AfterCall>>,
    /// It is a push producer.
    streaming: Cell<bool>,
    /// The transport paused it (push producers).
    transport_paused: Cell<bool>,
    /// The throttle holds it back.
    throttled: Cell<bool>,
    /// A push producer was last told to pause (a new one produces until told otherwise).
    told_paused: Cell<bool>,
}

/// What becomes of a producer when its current call returns, after it (or anything it called)
/// registered or unregistered a producer during the call.
enum AfterCall {
    /// It stays registered.
    Keep,
    /// It leaves: stopped if `stop` (it was replaced), dropped if not (it was unregistered);
    /// `next`, if any, is registered in its place (with its `streaming`).
    Leave {
        stop: bool,
        next: Option<(Box<dyn Producer>, bool)>,
    },
}

impl ProducerSlot {
    fn transport(&self) -> Option<TransportHandle> {
        self.transport.borrow().clone()
    }

    /// Contains a panic in a call of the producer, which may run outside any connection
    /// callback (a write through a handle from a timer, a replacement registered from one):
    /// the connection is aborted and reports [`CloseReason::Panic`], as when the transport
    /// calls the producer itself. Once the connection is gone, it is only logged.
    fn contain(&self, result: Result<(), String>) {
        let Err(msg) = result else { return };
        match self.transport() {
            Some(t) => t.abort_for_panic(msg),
            None => tracing::error!(panic = %msg, "producer panicked"),
        }
    }

    /// A producer is registered (in the slot, or inside a call and staying).
    fn registered(&self) -> bool {
        self.producer.borrow().is_some() || matches!(*self.in_call.borrow(), Some(AfterCall::Keep))
    }

    /// Puts `next` (a producer and whether it is a push producer), or nothing, in place of the
    /// registered producer, which is stopped if `stop` (a replacement) and dropped if not (an
    /// unregistration). A producer inside one of its calls stays registered until the call
    /// returns; the change takes effect then (so a producer may register its successor, or
    /// unregister itself, from inside `resume_producing`).
    fn replace(self: &Rc<Self>, next: Option<(Box<dyn Producer>, bool)>, stop: bool) {
        let mut in_call = self.in_call.borrow_mut();
        if let Some(after) = in_call.as_mut() {
            let superseded = match after {
                AfterCall::Keep => {
                    *after = AfterCall::Leave { stop, next };
                    None
                }
                // Supersedes what was registered earlier in the same call (which never ran).
                AfterCall::Leave { next: pending, .. } => std::mem::replace(pending, next),
            };
            drop(in_call);
            if let (Some((mut p, _)), true) = (superseded, stop) {
                self.contain(catch_unwind_message(|| p.stop_producing()));
            }
            return;
        }
        drop(in_call);
        // Take the old proxy off the transport without stopping it: replaced there, it would be
        // stopped, and a proxy stops whatever producer the slot holds.
        let transport = self.transport();
        if let Some(t) = &transport {
            t.unregister_producer();
        }
        // Stopped before the new one is in place, so an old producer that unregisters itself
        // as it stops does not unregister the new one.
        let old = self.producer.borrow_mut().take();
        if let (Some(mut old), true) = (old, stop) {
            self.contain(catch_unwind_message(|| old.stop_producing()));
        }
        let Some((mut producer, streaming)) = next else {
            return;
        };
        let Some(t) = transport else {
            // The connection is gone.
            self.contain(catch_unwind_message(|| producer.stop_producing()));
            return;
        };
        *self.producer.borrow_mut() = Some(producer);
        self.streaming.set(streaming);
        self.transport_paused.set(false);
        self.told_paused.set(false);
        // A pull producer is handed to the transport when the budget allows (see `throttle`).
        if streaming || !self.throttled.get() {
            t.register_producer(Box::new(ProducerProxy(self.clone())), streaming);
        }
        self.sync();
    }

    /// Calls the producer, unless there is none or it is inside a call already (a write it
    /// makes throttling it, say): [`sync`](Self::sync) catches up once that call returns.
    fn call(self: &Rc<Self>, f: impl FnOnce(&mut dyn Producer)) {
        if self.in_call.borrow().is_some() {
            return;
        }
        let Some(mut producer) = self.producer.borrow_mut().take() else {
            return;
        };
        *self.in_call.borrow_mut() = Some(AfterCall::Keep);
        let result = catch_unwind_message(|| f(&mut *producer));
        let after = self.in_call.borrow_mut().take();
        *self.producer.borrow_mut() = Some(producer);
        let panicked = result.is_err();
        self.contain(result);
        if let Some(AfterCall::Leave { stop, next }) = after {
            self.replace(next, stop);
        } else if !panicked {
            self.sync();
        }
    }

    /// Tells a push producer to pause or resume if what it was last told no longer matches
    /// the throttle and the transport.
    fn sync(self: &Rc<Self>) {
        let paused = self.throttled.get() || self.transport_paused.get();
        if !self.streaming.get()
            || self.told_paused.get() == paused
            || self.in_call.borrow().is_some()
            || self.producer.borrow().is_none()
        {
            return;
        }
        self.told_paused.set(paused);
        if paused {
            self.call(|p| p.pause_producing());
        } else {
            self.call(|p| p.resume_producing());
        }
    }

    fn throttle(self: &Rc<Self>, on: bool) {
        if self.throttled.replace(on) == on {
            return;
        }
        if self.streaming.get() {
            self.sync();
        } else if let (true, Some(t)) = (self.registered(), self.transport()) {
            // A pull producer that writes nothing when asked is asked again on the next turn;
            // take it off the transport while throttled, and put it back (which asks it for
            // a chunk) when the budget allows.
            if on {
                t.unregister_producer();
            } else {
                t.register_producer(Box::new(ProducerProxy(self.clone())), false);
            }
        }
    }

    /// The connection is gone: the producer is stopped.
    fn stop(self: &Rc<Self>) {
        self.transport.borrow_mut().take();
        self.replace(None, true);
    }
}

struct ProducerProxy(Rc<ProducerSlot>);

impl Producer for ProducerProxy {
    fn pause_producing(&mut self) {
        self.0.transport_paused.set(true);
        self.0.sync();
    }

    fn resume_producing(&mut self) {
        let s = &self.0;
        if s.streaming.get() {
            s.transport_paused.set(false);
            s.sync();
        } else if !s.throttled.get() {
            s.call(|p| p.resume_producing());
        }
    }

    fn stop_producing(&mut self) {
        self.0.replace(None, true);
    }
}

struct ThrottleState {
    read: Vec<TokenBucket>,
    write: Vec<TokenBucket>,
    inner_paused: Cell<bool>,
    read_throttled: Cell<bool>,
    write_throttled: Cell<bool>,
    reading_paused: Cell<bool>,
    timers: RefCell<[Option<DelayedCall>; 2]>,
    producer: Rc<ProducerSlot>,
}

impl ThrottleState {
    /// Pauses or resumes the real transport's reading to match the wanted state.
    fn apply_reading(&self) {
        let want =
            self.inner_paused.get() || self.read_throttled.get() || self.write_throttled.get();
        if self.reading_paused.replace(want) == want {
            return;
        }
        if let Some(t) = self.producer.transport() {
            if want {
                t.pause_reading();
            } else {
                t.resume_reading();
            }
        }
    }

    fn flag(&self, dir: Dir) -> &Cell<bool> {
        match dir {
            Dir::Read => &self.read_throttled,
            Dir::Write => &self.write_throttled,
        }
    }

    fn wait(&self, dir: Dir, now: Duration) -> Duration {
        let buckets = match dir {
            Dir::Read => &self.read,
            Dir::Write => &self.write,
        };
        buckets
            .iter()
            .map(|b| b.wait(now))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Accounts `n` bytes moved in `dir`; throttles if a bucket went into debt.
    fn spend(self: &Rc<Self>, t: &dyn Transport, dir: Dir, n: usize) {
        let buckets = match dir {
            Dir::Read => &self.read,
            Dir::Write => &self.write,
        };
        if buckets.is_empty() || n == 0 {
            return;
        }
        let reactor = t.reactor();
        let now = reactor.now();
        for b in buckets {
            b.take(now, n);
        }
        if !self.flag(dir).get() {
            let wait = self.wait(dir, now);
            if !wait.is_zero() {
                self.throttle(dir, true);
                self.arm(&reactor, dir, wait);
            }
        }
    }

    fn throttle(&self, dir: Dir, on: bool) {
        tracing::trace!(
            direction = if dir == Dir::Read { "read" } else { "write" },
            on,
            "throttle"
        );
        self.flag(dir).set(on);
        if dir == Dir::Write {
            self.producer.throttle(on);
        }
        self.apply_reading();
    }

    fn arm(self: &Rc<Self>, reactor: &torsion_reactor::Reactor, dir: Dir, wait: Duration) {
        let weak = Rc::downgrade(self);
        let call = reactor.call_later(wait, move |r| {
            let Some(state) = weak.upgrade() else { return };
            let wait = state.wait(dir, r.now());
            if !wait.is_zero() {
                state.arm(r, dir, wait);
                return;
            }
            // Lifting the throttle resumes the producer: user code, run from this timer and not
            // from a connection callback, so its panic is contained here as the transport
            // contains a producer's (else the reactor logs it and reading stays paused).
            let result = catch_unwind_message(|| state.throttle(dir, false));
            state.producer.contain(result);
        });
        self.timers.borrow_mut()[dir as usize] = Some(call);
    }

    fn stop(&self) {
        for call in self.timers.borrow_mut().iter_mut() {
            if let Some(c) = call.take() {
                c.cancel();
            }
        }
        self.producer.stop();
    }
}

struct ThrottleHooks(Rc<ThrottleState>);

impl Hooks for ThrottleHooks {
    fn write(&self, inner: &dyn Transport, data: &[u8]) {
        inner.write(data);
        self.0.spend(inner, Dir::Write, data.len());
    }

    fn write_vectored(&self, inner: &dyn Transport, bufs: &[IoSlice<'_>]) {
        inner.write_vectored(bufs);
        let n = bufs.iter().map(|b| b.len()).sum();
        self.0.spend(inner, Dir::Write, n);
    }

    fn pause_reading(&self, _inner: &dyn Transport) {
        self.0.inner_paused.set(true);
        self.0.apply_reading();
    }

    fn resume_reading(&self, _inner: &dyn Transport) {
        self.0.inner_paused.set(false);
        self.0.apply_reading();
    }

    fn register_producer(
        &self,
        _inner: &dyn Transport,
        producer: Box<dyn Producer>,
        streaming: bool,
    ) {
        self.0.producer.replace(Some((producer, streaming)), true);
    }

    fn unregister_producer(&self, _inner: &dyn Transport) {
        self.0.producer.replace(None, false);
    }
}

/// Caps a connection's read and write bandwidth (Twisted's `ThrottlingProtocol`).
///
/// - **Reads**: bytes read are counted against the read caps; when a cap is exceeded,
///   reading pauses ([`Transport::pause_reading`]) until the budget has recovered, on a timer.
///   The peer is slowed by TCP flow control, and nothing is buffered here.
/// - **Writes**: bytes written are counted against the write caps; when a cap is exceeded,
///   the registered [`Producer`] is paused (a pull producer is not asked for more) and
///   reading pauses too (a request/response protocol writes because it reads), until the
///   budget has recovered. Writes themselves are never delayed or dropped, so the cap holds
///   for output driven by input or by a producer; a protocol that writes unprompted from
///   timers is not slowed.
/// - **Producers** keep the transport's contract: registering one replaces and stops the
///   previous one, unregistering removes it without stopping it. A producer may do either
///   from inside its own calls; the change takes effect when that call returns.
///
/// Caps are token buckets with a one-second burst. The inner protocol's own
/// `pause_reading`/`resume_reading` calls are honoured alongside the throttle's.
///
/// ```
/// use std::time::Duration;
/// use torsion_protocols::policies::{Bandwidth, Throttled};
/// use torsion_protocols::wire::Discard;
/// use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};
///
/// let mr = MemoryReactor::new();
/// let throttled = Throttled::new(Discard, Bandwidth::read(1000));
/// let st = StringTransport::with_options(&mr, throttled, MemoryOptions::chunked(500));
/// st.feed(&[0; 3000]);
/// assert!(st.unread() > 0); // the first second's 1000 bytes (and one read) went through
/// mr.advance(Duration::from_secs(3));
/// assert_eq!(st.unread(), 0);
/// ```
pub struct Throttled<P> {
    inner: P,
    state: Rc<ThrottleState>,
    hooked: Option<Rc<Hooked<ThrottleHooks>>>,
}

impl<P: Protocol> Throttled<P> {
    /// Caps `protocol`'s connection at `limits`.
    pub fn new(protocol: P, limits: Bandwidth) -> Self {
        Self::build(protocol, limits, None)
    }

    /// Caps `protocol`'s connection at `limits`, and also draws from `pool`, shared with
    /// other connections.
    pub fn sharing(protocol: P, limits: Bandwidth, pool: &BandwidthPool) -> Self {
        Self::build(protocol, limits, Some(pool))
    }

    fn build(protocol: P, limits: Bandwidth, pool: Option<&BandwidthPool>) -> Self {
        let mut read: Vec<TokenBucket> = limits.read.map(TokenBucket::new).into_iter().collect();
        let mut write: Vec<TokenBucket> = limits.write.map(TokenBucket::new).into_iter().collect();
        if let Some(pool) = pool {
            read.extend(pool.read.clone());
            write.extend(pool.write.clone());
        }
        Throttled {
            inner: protocol,
            state: Rc::new(ThrottleState {
                read,
                write,
                inner_paused: Cell::new(false),
                read_throttled: Cell::new(false),
                write_throttled: Cell::new(false),
                reading_paused: Cell::new(false),
                timers: RefCell::new([None, None]),
                producer: Rc::new(ProducerSlot::default()),
            }),
            hooked: None,
        }
    }

    /// The wrapped protocol.
    pub fn get_ref(&self) -> &P {
        &self.inner
    }
}

impl<P: Protocol> Protocol for Throttled<P> {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        let handle = transport.handle();
        *self.state.producer.transport.borrow_mut() = Some(handle.clone());
        self.hooked = Some(Hooked::new(handle, ThrottleHooks(self.state.clone())));
        let mut t = pick(&self.hooked, transport);
        self.inner.connection_made(&mut t);
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.state.spend(transport, Dir::Read, data.len());
        let mut t = pick(&self.hooked, transport);
        self.inner.data_received(&mut t, data);
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        self.state.stop();
        self.hooked = None;
        self.inner.connection_lost(reason);
    }

    forward_protocol_rest!();
}

impl<P> fmt::Debug for Throttled<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttled")
            .field("read_throttled", &self.state.read_throttled.get())
            .field("write_throttled", &self.state.write_throttled.get())
            .finish()
    }
}

/// A factory wrapper that throttles every connection it builds: each one is capped at
/// `per_connection`, and all of them together at `total` (Twisted's `ThrottlingFactory`).
///
/// ```
/// use torsion_protocols::policies::{Bandwidth, ThrottlingFactory};
/// use torsion_protocols::wire::Echo;
/// use torsion_reactor::{Address, Factory};
///
/// let factory = ThrottlingFactory::new(
///     |_: &Address| Echo,
///     Bandwidth::both(64 * 1024),   // each connection
///     Bandwidth::both(1024 * 1024), // all of them
/// );
/// fn assert_factory(_: impl Factory) {}
/// assert_factory(factory);
/// ```
pub struct ThrottlingFactory {
    inner: SharedFactory,
    per_connection: Bandwidth,
    pool: BandwidthPool,
}

impl ThrottlingFactory {
    /// Wraps `factory` with the caps.
    pub fn new(
        factory: impl Into<SharedFactory>,
        per_connection: Bandwidth,
        total: Bandwidth,
    ) -> Self {
        ThrottlingFactory {
            inner: factory.into(),
            per_connection,
            pool: BandwidthPool::new(total),
        }
    }

    /// The pool shared by the factory's connections.
    pub fn pool(&self) -> &BandwidthPool {
        &self.pool
    }
}

impl Factory for ThrottlingFactory {
    fn build_protocol(&mut self, peer: &Address, local: &Address) -> Option<Box<dyn Protocol>> {
        let protocol = build(&self.inner, peer, local)?;
        Some(Box::new(Throttled::sharing(
            protocol,
            self.per_connection,
            &self.pool,
        )))
    }

    fn start_factory(&mut self) {
        self.inner.port_started();
    }

    fn stop_factory(&mut self) {
        self.inner.port_stopped();
    }
}

impl fmt::Debug for ThrottlingFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottlingFactory")
            .field("per_connection", &self.per_connection)
            .field("pool", &self.pool)
            .finish()
    }
}
