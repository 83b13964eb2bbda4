//! The stream connection state machine shared by every stream transport.
//!
//! [`StreamConnection`] owns one protocol and one [`StreamIo`] (a socket, or an in-memory pipe in
//! the test kit) and implements [`Transport`] for it: buffering and flow control, the close
//! handshakes, callback ordering and panic isolation. The I/O object only moves bytes, so every
//! stream transport behaves the same way, and the test kit exercises the very code that serves
//! real sockets.
//!
//! # Close handshakes
//!
//! - `lose_connection`: stop delivering data; flush the write buffer; `shutdown(Write)` (FIN);
//!   keep reading and discarding until the peer's FIN, so that closing never turns unread data
//!   into a reset that could destroy what we just sent; then close. The whole sequence is
//!   bounded by [`ConnectionConfig::close_timeout`], after which the connection is aborted with
//!   [`CloseReason::CloseTimedOut`].
//! - Peer FIN, protocol without half-close: as `lose_connection` (our pending data is still
//!   flushed), ending with [`CloseReason::Done`].
//! - Peer FIN, protocol with half-close: `read_connection_lost`; writing goes on.
//! - `lose_write_connection`: flush, FIN, `write_connection_lost`; reading goes on; the
//!   connection closes when the peer's FIN arrives too.
//! - `abort_connection`: `SO_LINGER` 0 and close: the peer gets a reset; buffered data is
//!   dropped.

use std::cell::{Cell, RefCell, RefMut};
use std::fmt;
use std::io::{self, IoSlice};
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::address::Address;
use crate::backend::{Interest, Readiness};
use crate::buffer::WriteBuffer;
use crate::panic::catch_unwind_message;
use crate::protocol::Protocol;
use crate::reactor::{Reactor, WeakReactor};
use crate::reason::CloseReason;
use crate::registration::Source;
use crate::timer::DelayedCall;
use crate::transport::{
    HandleTarget, Keepalive, PeerCredentials, Producer, ProtocolWrapper, Transport, TransportHandle,
};

/// Limits and timeouts of a stream connection. The defaults suit most servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Buffered bytes above which the protocol (and a push producer) is paused. Default 64 KiB.
    pub high_watermark: usize,
    /// Buffered bytes at or below which it is resumed. Default 16 KiB.
    pub low_watermark: usize,
    /// Hard limit of the write buffer: a write past it aborts the connection with
    /// [`CloseReason::WriteBufferOverflow`]. Default 16 MiB.
    pub max_write_buffer: usize,
    /// How long a graceful close may take (flush, FIN, the peer's FIN) before the connection
    /// is aborted. Default 30 s.
    pub close_timeout: Duration,
    /// Reads per connection per reactor turn (each up to [`StreamIo::read_size`]: 256 KiB over
    /// TCP, 64 KiB over Unix sockets) before other connections get their turn. Default 16:
    /// every turn costs a wait on the poller; with 4 reads per turn Unix-socket bulk echo
    /// measured 0.73x tokio-st, with 16 0.99x (and TCP bulk with 8 connections 1.17x).
    pub max_reads_per_turn: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            high_watermark: 64 * 1024,
            low_watermark: 16 * 1024,
            max_write_buffer: 16 * 1024 * 1024,
            close_timeout: Duration::from_secs(30),
            max_reads_per_turn: 16,
        }
    }
}

/// The byte pipe under a [`StreamConnection`]: a socket, or an in-memory pipe.
///
/// All methods are non-blocking: `read` and `write` return `WouldBlock` when they cannot make
/// progress, and readiness is reported later through the [`Source`] given to
/// [`attach`](StreamIo::attach). Dropping the object closes the pipe.
///
/// Readiness may be edge-triggered ([`Registered::new_edge_triggered`](crate::Registered)):
/// the connection reads until a read comes back `WouldBlock` or shorter than asked (so a
/// pipe's `read` fills the buffer whenever it can, reading on past whatever ends a read early
/// with more queued; [`Readiness::read_stops_early`] covers what only the backend sees), and when
/// it stops before that (its fair share of reads per turn used up) it calls
/// [`read_again`](StreamIo::read_again).
pub trait StreamIo: 'static {
    /// Reads into `buf`; `Ok(0)` is end of stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes some of `buf`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Writes some of `bufs`, in order.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Sends end of stream (FIN); reading goes on.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Arranges for the coming close to reset the connection (`SO_LINGER` 0).
    fn prepare_abort(&mut self) {}
    /// Which readiness to report from now on.
    fn set_interest(&mut self, interest: Interest) -> io::Result<()>;
    /// Reading stopped while data may be left: report the pipe readable again next turn. A
    /// pipe whose readiness is level-triggered is reported again anyway, and needs nothing
    /// here (the default).
    fn read_again(&mut self) {}
    /// Where to report readiness.
    fn attach(&mut self, source: Rc<dyn Source>);
    /// `TCP_NODELAY`.
    fn set_no_delay(&mut self, _on: bool) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// TCP keepalive.
    fn set_keepalive(&mut self, _keepalive: Option<&Keepalive>) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// The peer's credentials (Unix sockets).
    fn peer_credentials(&self) -> Option<PeerCredentials> {
        None
    }
    /// Bytes asked for per read: by default the whole [`READ_BUFFER_SIZE`](crate::READ_BUFFER_SIZE)
    /// (larger values are cut to it, zero counts as one). A pipe whose writes stall when given
    /// more than its send buffer holds (a Unix socket) asks for less, so the echo of one read
    /// fits.
    fn read_size(&self) -> usize {
        crate::READ_BUFFER_SIZE
    }
}

/// Runs after the protocol's `connection_lost` (connectors and ports use it).
pub type LostHook = Box<dyn FnOnce(&CloseReason)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// `lose_connection` was called (or the peer's FIN arrived): flushing, then waiting for FIN.
    Closing,
    Closed,
}

// Protocol callbacks waiting to be delivered, in this order.
const PAUSE: u8 = 1;
/// Pauses only the producer: one registered while the protocol was already told to pause.
const PAUSE_PRODUCER: u8 = 2;
const RESUME: u8 = 4;
const READ_LOST: u8 = 8;
const WRITE_LOST: u8 = 16;
const PULL: u8 = 32;
const LOST: u8 = 64;

struct State {
    wbuf: WriteBuffer,
    phase: Phase,
    read_paused: bool,
    producer_paused: bool,
    read_eof: bool,
    write_closing: bool,
    write_shut: bool,
    /// The backend reported a hang-up, an error or urgent data, after which a short read may
    /// leave data queued: from then on reads go on past a short one (to `WouldBlock`).
    read_stops_early: bool,
    half_close: bool,
    /// `Some(streaming)` while a producer is registered.
    producer: Option<bool>,
    pending: u8,
    scheduled: bool,
    /// Writes accepted so far (to tell whether a pull producer wrote anything).
    writes: u64,
    /// The pull producer wrote nothing when last asked (a layer may hold its data, as TLS
    /// does during a handshake): it is asked again once something is written.
    pull_stalled: bool,
    /// A write in the current protocol callback went to the socket: later ones in the same
    /// callback are gathered in the buffer ...
    callback_wrote: bool,
    /// ... and `gathered` says the buffer holds such writes, to be written with one system
    /// call when the callback returns ([`StreamConnection::flush_gathered`]).
    gathered: bool,
    reason: Option<CloseReason>,
    close_timer: Option<DelayedCall>,
    /// The write-buffer limits: the configured watermarks until the protocol sets its own.
    high_watermark: usize,
    low_watermark: usize,
}

impl State {
    /// Applies the watermarks to the buffer's current length: `PAUSE` when it rose above the
    /// high one, `RESUME` when a paused buffer fell to the low one, else nothing.
    fn watermark_flag(&mut self) -> u8 {
        let len = self.wbuf.len();
        if !self.producer_paused && len > self.high_watermark {
            self.producer_paused = true;
            PAUSE
        } else if self.producer_paused && len <= self.low_watermark {
            self.producer_paused = false;
            RESUME
        } else {
            0
        }
    }
}

/// How much a protocol callback's writes may gather before they are written anyway (one
/// read's worth).
const GATHER_LIMIT: usize = 64 * 1024;

/// A vectored write made while gathering is gathered (copied) when it is smaller than this,
/// as copying it costs less than a system call (a framed answer's header and payload); a
/// larger one goes out at once, the gathered bytes ahead of it in the same system call, and
/// only what the socket does not take is copied.
const GATHER_COPY_MAX: usize = 16 * 1024;

/// The most slices a vectored write made while gathering sends together with the gathered
/// bytes (one of them); a write of more slices is gathered by copying.
const GATHER_IOVECS: usize = 64;

/// Writes `data` until all of it went out or the socket refuses (`WouldBlock`); returns how
/// much it took. After a partial write the socket often has room again at once (the peer is
/// reading meanwhile), and waiting for writability instead would wait until most of the
/// socket buffer drained.
fn write_until_refused(io: &mut impl StreamIo, data: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        match io.write(&data[sent..]) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Writes `front` (a callback's gathered bytes) and then `bufs` with one system call, or
/// `bufs` alone when `front` is empty; returns how much it took (nothing when the socket
/// refuses). With `front` not empty, `bufs` has fewer than [`GATHER_IOVECS`] slices.
fn write_vectored_after(
    io: &mut impl StreamIo,
    front: &[u8],
    bufs: &[IoSlice<'_>],
) -> io::Result<usize> {
    let result = if front.is_empty() {
        io.write_vectored(bufs)
    } else {
        let mut iov = [IoSlice::new(&[]); GATHER_IOVECS];
        iov[0] = IoSlice::new(front);
        iov[1..=bufs.len()].copy_from_slice(bufs);
        io.write_vectored(&iov[..=bufs.len()])
    };
    match result {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        other => other,
    }
}

/// A call the protocol made between `wrap_protocol` and the swap, replayed through the layer.
enum Held {
    Write(Vec<u8>),
    Lose,
    LoseWrite,
}

/// A protocol swap in progress (see [`Transport::wrap_protocol`]); boxed, as most connections
/// never swap.
enum Swap {
    /// `wrap_protocol` was called inside a callback: the wrapper, and what the protocol wrote
    /// or closed since, held for the layer.
    Pending {
        wrap: ProtocolWrapper,
        held: Vec<Held>,
    },
    /// The new layer's `connection_made` runs: the held calls and the handles taken before
    /// the swap, for it to take over with `redirect_handles`.
    Handover {
        held: Vec<Held>,
        handles: Option<TransportHandle>,
    },
    /// The layer took over with `redirect_handles` (its `connection_made` still runs).
    Redirected(TransportHandle),
    /// A layer took over: handles asked for from now on (by a port or connector, once
    /// `connection_made` returned) reach it, as those taken before do.
    Done(TransportHandle),
}

/// Whether a `lose_connection` or `lose_write_connection` is among the held calls.
fn held_close(held: &[Held]) -> bool {
    held.iter()
        .any(|call| matches!(call, Held::Lose | Held::LoseWrite))
}

/// Replays held calls through `transport`.
fn replay(transport: &dyn Transport, held: Vec<Held>) {
    for call in held {
        match call {
            Held::Write(data) => transport.write(&data),
            Held::Lose => transport.lose_connection(),
            Held::LoseWrite => transport.lose_write_connection(),
        }
    }
}

/// A stream connection: one protocol on one [`StreamIo`]; implements [`Transport`].
///
/// Transports create it with [`StreamConnection::start`] and drop their reference; the
/// reactor (through the I/O object's registration) keeps it alive until it closes.
pub struct StreamConnection<IO: StreamIo> {
    me: Weak<Self>,
    reactor: WeakReactor,
    io: RefCell<Option<IO>>,
    st: RefCell<State>,
    protocol: RefCell<Option<Box<dyn Protocol>>>,
    in_callback: Cell<bool>,
    swap: RefCell<Option<Box<Swap>>>,
    /// What every handle of this connection shares (so they can follow a layer that takes
    /// over); dead while no handle lives.
    handles: RefCell<Weak<HandleTarget>>,
    producer: RefCell<Option<Box<dyn Producer>>>,
    /// The producer inside its call was replaced meanwhile: stop it when the call returns.
    producer_replaced: Cell<bool>,
    peer: Address,
    local: Address,
    config: ConnectionConfig,
    on_lost: RefCell<Option<LostHook>>,
}

impl<IO: StreamIo> StreamConnection<IO> {
    /// Starts a connection: attaches `io`, runs `connection_made`, starts reading.
    /// `on_lost` runs after the protocol's `connection_lost` (connectors and ports use it).
    pub fn start(
        reactor: &Reactor,
        io: IO,
        protocol: Box<dyn Protocol>,
        peer: Address,
        local: Address,
        config: ConnectionConfig,
        on_lost: Option<LostHook>,
    ) -> Rc<Self> {
        let half_close = protocol.half_close();
        let conn = Rc::new_cyclic(|me| StreamConnection {
            me: me.clone(),
            reactor: reactor.downgrade(),
            io: RefCell::new(Some(io)),
            st: RefCell::new(State {
                wbuf: WriteBuffer::new(),
                phase: Phase::Open,
                read_paused: false,
                producer_paused: false,
                read_eof: false,
                write_closing: false,
                write_shut: false,
                read_stops_early: false,
                half_close,
                producer: None,
                pending: 0,
                scheduled: false,
                writes: 0,
                pull_stalled: false,
                callback_wrote: false,
                gathered: false,
                reason: None,
                close_timer: None,
                high_watermark: config.high_watermark,
                low_watermark: config.low_watermark,
            }),
            protocol: RefCell::new(Some(protocol)),
            in_callback: Cell::new(false),
            swap: RefCell::new(None),
            handles: RefCell::new(Weak::new()),
            producer: RefCell::new(None),
            producer_replaced: Cell::new(false),
            peer,
            local,
            config,
            on_lost: RefCell::new(on_lost),
        });
        if let Some(io) = conn.io.borrow_mut().as_mut() {
            io.attach(conn.clone());
        }
        tracing::debug!(peer = %conn.peer, local = %conn.local, "connection made");
        conn.with_protocol(|p, t| p.connection_made(t));
        conn.update_interest();
        conn
    }

    /// The configuration this connection was started with. (The protocol may since have
    /// changed its write-buffer limits with [`Transport::set_write_buffer_limits`].)
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    fn rc(&self) -> Rc<Self> {
        self.me.upgrade().expect("a live connection is referenced")
    }

    /// Runs one protocol callback with the protocol taken out of its slot (so nothing holds a
    /// borrow while user code runs), catching panics.
    fn call_protocol(&self, f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport)) {
        let Some(mut protocol) = self.protocol.borrow_mut().take() else {
            return;
        };
        self.in_callback.set(true);
        let mut me: &Self = self;
        let result = catch_unwind_message(|| f(&mut *protocol, &mut me));
        *self.protocol.borrow_mut() = Some(protocol);
        if let Err(msg) = result {
            self.in_callback.set(false);
            self.abort_for_panic(msg);
            return;
        }
        // Still "in the callback": what the flush leads to (a pause, a close) is delivered by
        // the caller after the callback, as for writes made inside it.
        self.flush_gathered();
        self.in_callback.set(false);
        if let Some(Swap::Pending { wrap, held }) = self.take_swap(true) {
            self.swap_protocol(wrap, held);
        }
    }

    /// Takes the swap in progress if it is pending (`pending`) or handing over (`!pending`).
    fn take_swap(&self, pending: bool) -> Option<Swap> {
        let mut swap = self.swap.borrow_mut();
        let matches = match swap.as_deref() {
            Some(Swap::Pending { .. }) => pending,
            Some(Swap::Handover { .. }) => !pending,
            Some(Swap::Redirected(_) | Swap::Done(_)) | None => false,
        };
        matches.then(|| *swap.take().expect("checked"))
    }

    /// Applies a [`Transport::wrap_protocol`] request between callbacks.
    fn swap_protocol(&self, wrap: ProtocolWrapper, held: Vec<Held>) {
        let Some(old) = self.protocol.borrow_mut().take() else {
            return;
        };
        // The handles taken so far go to the layer if it asks (`redirect_handles`); the
        // layer's own handles, taken from now on, stay on this connection.
        let handles = TransportHandle::upgrade(&self.handles.replace(Weak::new()));
        *self.swap.borrow_mut() = Some(Box::new(Swap::Handover { held, handles }));
        match catch_unwind_message(move || wrap(old)) {
            Ok(new) => {
                self.st.borrow_mut().half_close = new.half_close();
                *self.protocol.borrow_mut() = Some(new);
                self.call_protocol(|p, t| p.connection_made(t));
                // A layer that did not take over: the held calls go out as they are, and the
                // old handles stay this connection's unless the layer took new ones.
                if let Some(Swap::Handover { held, handles }) = self.take_swap(false) {
                    let live = self.handles.borrow().upgrade();
                    if let (Some(h), None) = (handles, live) {
                        *self.handles.borrow_mut() = h.downgrade();
                    }
                    replay(self, held);
                }
                let mut swap = self.swap.borrow_mut();
                if let Some(Swap::Redirected(to)) = swap.as_deref_mut() {
                    let to = to.clone();
                    **swap.as_mut().expect("checked") = Swap::Done(to);
                }
                drop(swap);
                self.eof_to_new_protocol();
            }
            Err(msg) => {
                self.swap.borrow_mut().take();
                tracing::error!(peer = %self.peer, panic = %msg, "protocol wrapper panicked; aborting this connection");
                self.finish(CloseReason::Panic(msg), true);
            }
        }
    }

    /// The peer's FIN came before the swap (and went to the old protocol, a swap asked for
    /// in `read_connection_lost`, say): the new protocol is told as well, as on the FIN
    /// itself (a layer such as TLS must learn that nothing more will arrive).
    fn eof_to_new_protocol(&self) {
        let st = self.st.borrow();
        // Still pending: it reaches the new protocol anyway.
        if !st.read_eof || st.phase != Phase::Open || st.pending & READ_LOST != 0 {
            return;
        }
        let half_close = st.half_close;
        drop(st);
        if half_close {
            self.add_pending(READ_LOST);
        } else {
            self.lose_connection();
        }
    }

    /// A write went to the socket whole: a pull producer that wrote nothing when last asked
    /// (a layer held its data) is asked again now that something was written.
    fn wrote_all(&self, mut st: RefMut<'_, State>) {
        let stalled = std::mem::take(&mut st.pull_stalled);
        drop(st);
        if stalled {
            self.pull_again_if_drained();
        }
    }

    /// Whether a write made now should be gathered rather than written: inside a protocol
    /// callback that already wrote to the socket, with nothing else buffered. A protocol that
    /// answers each of many small frames in one read (lines, say) then costs one system call
    /// per read, not one per frame, while a single write per callback (an echo) still goes
    /// straight to the socket without a copy. Marks the first write of the callback.
    fn gathers(&self, st: &mut State) -> bool {
        if st.gathered {
            return true;
        }
        if !self.in_callback.get() || !st.wbuf.is_empty() {
            return false;
        }
        if st.callback_wrote {
            st.gathered = true;
            return true;
        }
        st.callback_wrote = true;
        false
    }

    /// A write was gathered: past [`GATHER_LIMIT`], what the callback gathered goes out now.
    fn gathered_more(&self, st: RefMut<'_, State>) {
        if st.wbuf.len() >= GATHER_LIMIT {
            drop(st);
            self.flush_gathered();
        }
    }

    /// Writes what the current callback gathered (see [`gathers`](Self::gathers)), or, past
    /// [`GATHER_LIMIT`], what it gathered so far.
    fn flush_gathered(&self) {
        let mut st = self.st.borrow_mut();
        st.callback_wrote = false;
        if !std::mem::take(&mut st.gathered) || st.phase == Phase::Closed {
            return;
        }
        if let Err(e) = self.write_out(&mut st) {
            drop(st);
            self.fail(e);
            return;
        }
        if st.wbuf.is_empty() {
            // Limits lowered in the callback may have counted the gathered bytes and queued
            // a pause: now they are out, it is cancelled (nothing else would resume).
            let flag = st.watermark_flag();
            self.wrote_all(st);
            if flag != 0 {
                self.add_pending(flag);
            }
            self.progress_close();
        } else {
            drop(st);
            self.buffered_more();
        }
    }

    /// While a swap is pending, keeps the call for the layer instead of making it (a write
    /// after a held close is dropped, as it would be once closing).
    fn hold(&self, call: impl FnOnce() -> Held) -> bool {
        match self.swap.borrow_mut().as_deref_mut() {
            Some(Swap::Pending { held, .. }) => {
                let call = call();
                if !(matches!(call, Held::Write(_)) && held_close(held)) {
                    held.push(call);
                }
                true
            }
            _ => false,
        }
    }

    /// What a pending swap holds: the bytes written, and whether a close is among the calls.
    fn held(&self) -> (usize, bool) {
        match self.swap.borrow().as_deref() {
            Some(Swap::Pending { held, .. }) => {
                let bytes = held
                    .iter()
                    .map(|call| match call {
                        Held::Write(data) => data.len(),
                        Held::Lose | Held::LoseWrite => 0,
                    })
                    .sum();
                (bytes, held_close(held))
            }
            _ => (0, false),
        }
    }

    fn with_protocol(&self, f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport)) {
        self.call_protocol(f);
        self.deliver_pending();
    }

    fn add_pending(&self, mut flag: u8) {
        let mut st = self.st.borrow_mut();
        // A pause and a resume that were never delivered cancel out: the protocol stays as it
        // was last told (delivered in bit order, they would arrive as pause, then resume).
        for (this, other) in [(PAUSE, RESUME), (RESUME, PAUSE)] {
            if flag & this != 0 && st.pending & other != 0 {
                st.pending &= !other;
                flag &= !this;
            }
        }
        st.pending |= flag;
        if self.in_callback.get() || st.scheduled || st.pending == 0 {
            return; // delivered when the current callback returns, or already scheduled
        }
        st.scheduled = true;
        drop(st);
        if let Some(reactor) = self.reactor.upgrade() {
            let me = self.rc();
            reactor.call_soon(move |_| {
                me.st.borrow_mut().scheduled = false;
                me.deliver_pending();
            });
        }
    }

    /// Delivers queued protocol and producer callbacks, in a fixed order.
    fn deliver_pending(&self) {
        loop {
            if self.in_callback.get() {
                return;
            }
            let flag = {
                let mut st = self.st.borrow_mut();
                if st.pending == 0 {
                    return;
                }
                let flag = st.pending & st.pending.wrapping_neg(); // lowest set bit
                st.pending &= !flag;
                flag
            };
            match flag {
                PAUSE => {
                    self.call_producer(|p| p.pause_producing(), true);
                    self.call_protocol(|p, t| p.pause_producing(t));
                }
                PAUSE_PRODUCER => self.call_producer(|p| p.pause_producing(), true),
                RESUME => {
                    self.call_producer(|p| p.resume_producing(), true);
                    self.call_protocol(|p, t| p.resume_producing(t));
                }
                READ_LOST => self.call_protocol(|p, t| p.read_connection_lost(t)),
                WRITE_LOST => self.call_protocol(|p, t| p.write_connection_lost(t)),
                PULL => {
                    let before = {
                        let mut st = self.st.borrow_mut();
                        st.pull_stalled = false;
                        st.writes
                    };
                    self.call_producer(|p| p.resume_producing(), false);
                    // A producer that wrote nothing is not asked again until something is
                    // written (Twisted's rule): re-asking it would spin.
                    if self.st.borrow().writes != before {
                        self.pull_again_if_drained();
                    } else {
                        self.st.borrow_mut().pull_stalled = true;
                    }
                }
                LOST => self.deliver_lost(),
                _ => unreachable!("unknown pending flag"),
            }
            self.update_interest();
        }
    }

    fn call_producer(&self, f: impl FnOnce(&mut dyn Producer), streaming: bool) {
        if self.st.borrow().producer != Some(streaming) {
            return;
        }
        let Some(mut producer) = self.producer.borrow_mut().take() else {
            return;
        };
        let mut result = catch_unwind_message(|| f(&mut *producer));
        let mut slot = self.producer.borrow_mut();
        if slot.is_none() && self.st.borrow().producer.is_some() {
            *slot = Some(producer);
            drop(slot);
        } else {
            // Unregistered during its call (dropped), or replaced (stopped, as on any
            // replacement).
            drop(slot);
            if self.producer_replaced.take() {
                let stopped = catch_unwind_message(|| producer.stop_producing());
                result = result.and(stopped);
            }
        }
        self.producer_panicked(result);
        // The producer asked for a protocol swap (`wrap_protocol`) during its call.
        if let Some(Swap::Pending { wrap, held }) = self.take_swap(true) {
            self.swap_protocol(wrap, held);
        }
    }

    /// Aborts the connection with [`CloseReason::Panic`] if a producer call panicked.
    fn producer_panicked(&self, result: Result<(), String>) {
        if let Err(msg) = result {
            self.abort_for_panic(msg);
        }
    }

    /// A pull producer whose chunk went straight to the socket is asked for the next one on
    /// the next turn (not in this loop, so other connections get their turn).
    fn pull_again_if_drained(&self) {
        let st = self.st.borrow();
        if st.phase != Phase::Open || st.producer != Some(false) || !st.wbuf.is_empty() {
            return;
        }
        drop(st);
        if let Some(reactor) = self.reactor.upgrade() {
            let me = self.rc();
            reactor.call_soon(move |_| {
                me.st.borrow_mut().pending |= PULL;
                me.deliver_pending();
            });
        }
    }

    fn deliver_lost(&self) {
        let reason = self
            .st
            .borrow_mut()
            .reason
            .clone()
            .unwrap_or(CloseReason::Done);
        // Each taken in its own statement: the callbacks may reach this connection again
        // (`stop_producing` unregistering itself, say), so no borrow may outlive the take.
        let producer = self.producer.borrow_mut().take();
        if let Some(mut producer) = producer {
            if let Err(msg) = catch_unwind_message(|| producer.stop_producing()) {
                tracing::error!(panic = %msg, "producer stop_producing panicked");
            }
        }
        let protocol = self.protocol.borrow_mut().take();
        if let Some(mut protocol) = protocol {
            let r = reason.clone();
            if let Err(msg) = catch_unwind_message(move || protocol.connection_lost(r)) {
                tracing::error!(peer = %self.peer, panic = %msg, "connection_lost panicked");
            }
        }
        let hook = self.on_lost.borrow_mut().take();
        if let Some(hook) = hook {
            if let Err(msg) = catch_unwind_message(|| hook(&reason)) {
                tracing::error!(panic = %msg, "connection-lost hook panicked");
            }
        }
    }

    /// Ends the connection now: closes (or resets) the I/O object and queues `connection_lost`.
    fn finish(&self, reason: CloseReason, reset: bool) {
        let mut st = self.st.borrow_mut();
        if st.phase == Phase::Closed {
            return;
        }
        st.phase = Phase::Closed;
        st.wbuf.release();
        let swap = self.swap.borrow_mut().take();
        drop(swap);
        st.pending &= LOST | WRITE_LOST | READ_LOST;
        if let Some(timer) = st.close_timer.take() {
            timer.cancel();
        }
        tracing::debug!(peer = %self.peer, local = %self.local, reason = %reason, "connection lost");
        st.reason = Some(reason);
        drop(st);
        let io = self.io.borrow_mut().take();
        if let Some(mut io) = io {
            if reset {
                io.prepare_abort();
            }
            drop(io); // closes; may drop the registry's reference to `self` (we hold another)
        }
        self.add_pending(LOST);
    }

    fn fail(&self, err: io::Error) {
        self.finish(CloseReason::from_io(err), false);
    }

    fn update_interest(&self) {
        let st = self.st.borrow();
        let interest = match st.phase {
            Phase::Closed => return,
            Phase::Open => Interest {
                readable: !st.read_paused && !st.read_eof,
                writable: !st.wbuf.is_empty(),
            },
            Phase::Closing => Interest {
                readable: !st.read_eof,
                writable: !st.wbuf.is_empty(),
            },
        };
        drop(st);
        let result = match self.io.borrow_mut().as_mut() {
            Some(io) => io.set_interest(interest),
            None => Ok(()),
        };
        if let Err(e) = result {
            self.fail(e);
        }
    }

    /// Buffers what the socket did not take and applies the watermarks and the hard limit.
    fn buffered_more(&self) {
        let mut st = self.st.borrow_mut();
        let len = st.wbuf.len();
        if len > self.config.max_write_buffer {
            drop(st);
            tracing::warn!(peer = %self.peer, limit = self.config.max_write_buffer, "write buffer limit exceeded; aborting");
            self.finish(
                CloseReason::WriteBufferOverflow {
                    limit: self.config.max_write_buffer,
                },
                true,
            );
            return;
        }
        let flag = st.watermark_flag();
        drop(st);
        if flag != 0 {
            self.add_pending(flag);
        }
        self.update_interest();
    }

    /// Writes the buffer to the socket until it is empty or the socket is full.
    fn write_out(&self, st: &mut State) -> io::Result<()> {
        let mut io = self.io.borrow_mut();
        let Some(io) = io.as_mut() else {
            return Ok(());
        };
        while !st.wbuf.is_empty() {
            let front = st.wbuf.front();
            let wanted = front.len();
            let n = write_until_refused(io, front)?;
            st.wbuf.consume(n);
            if n < wanted {
                break;
            }
        }
        Ok(())
    }

    /// Writes out as much of the buffer as the socket takes, then moves the close handshakes on.
    fn flush(&self) {
        let mut st = self.st.borrow_mut();
        if st.phase == Phase::Closed {
            return;
        }
        if let Err(e) = self.write_out(&mut st) {
            drop(st);
            self.fail(e);
            return;
        }
        let mut flags = st.watermark_flag();
        if st.wbuf.is_empty() && st.producer == Some(false) {
            flags |= PULL;
        }
        drop(st);
        if flags != 0 {
            self.add_pending(flags);
        }
        self.progress_close();
    }

    /// Moves a graceful close or half-close forward once the buffer is empty.
    fn progress_close(&self) {
        let mut st = self.st.borrow_mut();
        if !st.wbuf.is_empty() || st.phase == Phase::Closed {
            return;
        }
        let wants_fin = st.phase == Phase::Closing || st.write_closing;
        if !wants_fin || st.write_shut {
            if st.phase == Phase::Closing && st.read_eof {
                drop(st);
                self.finish(CloseReason::Done, false);
            }
            return;
        }
        st.write_shut = true;
        // The protocol asked for a half-close: told once the FIN is out, even when a full
        // close came meanwhile (the peer's FIN, with no half-close support, or its own).
        let half = st.write_closing;
        let read_eof = st.read_eof;
        drop(st);
        let result = match self.io.borrow_mut().as_mut() {
            Some(io) => io.shutdown_write(),
            None => Ok(()),
        };
        if let Err(e) = result {
            if e.kind() != io::ErrorKind::NotConnected {
                self.fail(e);
                return;
            }
        }
        if half {
            self.add_pending(WRITE_LOST);
        }
        if read_eof {
            self.finish(CloseReason::Done, false);
        }
    }

    fn on_eof(&self) {
        let mut st = self.st.borrow_mut();
        st.read_eof = true;
        match st.phase {
            Phase::Closed => {}
            Phase::Closing => {
                drop(st);
                self.progress_close();
            }
            Phase::Open if st.write_shut => {
                let half_close = st.half_close;
                drop(st);
                if half_close {
                    self.add_pending(READ_LOST);
                }
                self.finish(CloseReason::Done, false);
            }
            Phase::Open if st.half_close => {
                drop(st);
                self.add_pending(READ_LOST);
            }
            Phase::Open => {
                drop(st);
                self.lose_connection();
            }
        }
    }

    fn read_ready(&self, reactor: &Reactor) {
        let mut buf = reactor.take_read_buffer();
        'read: {
            for _ in 0..self.config.max_reads_per_turn.max(1) {
                let discard = {
                    let st = self.st.borrow();
                    match st.phase {
                        Phase::Closed => break 'read,
                        // Resuming re-arms the interest, so nothing is lost while paused.
                        Phase::Open if st.read_paused || st.read_eof => break 'read,
                        Phase::Closing if st.read_eof => break 'read,
                        Phase::Open => false,
                        Phase::Closing => true,
                    }
                };
                let result = match self.io.borrow_mut().as_mut() {
                    Some(io) => {
                        let size = io.read_size().clamp(1, buf.len());
                        io.read(&mut buf[..size]).map(|n| (n, size))
                    }
                    None => break 'read,
                };
                match result {
                    Ok((0, _)) => {
                        self.on_eof();
                        break 'read;
                    }
                    Ok((n, size)) => {
                        if !discard {
                            self.with_protocol(|p, t| p.data_received(t, &buf[..n]));
                        }
                        // A short read emptied the socket, unless the backend said reads
                        // may stop early (the end of stream, an error or data past an
                        // urgent mark waits behind it), which is not reported again.
                        if n < size && !self.st.borrow().read_stops_early {
                            break 'read;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 'read,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.fail(e);
                        break 'read;
                    }
                }
            }
            // This turn's share of reads is used up with data perhaps left: next turn.
            if let Some(io) = self.io.borrow_mut().as_mut() {
                io.read_again();
            }
        }
        reactor.return_read_buffer(buf);
    }

    fn arm_close_timer(&self) {
        let Some(reactor) = self.reactor.upgrade() else {
            return;
        };
        let weak = self.me.clone();
        let timer = reactor.call_later(self.config.close_timeout, move |_| {
            if let Some(conn) = weak.upgrade() {
                if conn.st.borrow().phase == Phase::Closing {
                    tracing::debug!(peer = %conn.peer, "graceful close timed out; aborting");
                    conn.finish(CloseReason::CloseTimedOut, true);
                }
            }
        });
        self.st.borrow_mut().close_timer = Some(timer);
    }
}

impl<IO: StreamIo> Source for StreamConnection<IO> {
    fn reactor_closing(&self) {
        // At once, what was not written yet dropped, as an abort; but the socket closes as it
        // always did when a reactor went away (a FIN, not a reset).
        self.finish(CloseReason::Aborted, false);
        // Now: a delivery scheduled before is among the work the reactor drops unrun.
        self.deliver_pending();
    }

    fn reactor_dropped(&self) {
        self.st.borrow_mut().phase = Phase::Closed;
        // Each taken out before it is dropped (no borrow held): a protocol's or producer's
        // `Drop` may call back into its own handle (`unregister_producer`, say).
        let io = self.io.borrow_mut().take();
        drop(io);
        let protocol = self.protocol.borrow_mut().take();
        drop(protocol);
        let producer = self.producer.borrow_mut().take();
        drop(producer);
        let on_lost = self.on_lost.borrow_mut().take();
        drop(on_lost);
        let swap = self.swap.borrow_mut().take();
        drop(swap);
    }

    fn ready(&self, readiness: Readiness) {
        let Some(reactor) = self.reactor.upgrade() else {
            return;
        };
        let was_paused = {
            let mut st = self.st.borrow_mut();
            st.read_stops_early |= readiness.read_stops_early;
            st.read_paused
        };
        if readiness.writable {
            self.flush();
        }
        if readiness.readable {
            self.read_ready(&reactor);
        }
        self.deliver_pending();
        // The flush above let the protocol resume reading: the peer has almost always sent
        // more while we were paused, so read it now rather than one poller wait later.
        if was_paused && !readiness.readable && !self.st.borrow().read_paused {
            self.read_ready(&reactor);
            self.deliver_pending();
        }
        self.update_interest();
    }
}

impl<IO: StreamIo> Transport for StreamConnection<IO> {
    fn write(&self, data: &[u8]) {
        if data.is_empty() || self.hold(|| Held::Write(data.to_vec())) {
            return;
        }
        let mut st = self.st.borrow_mut();
        if st.phase != Phase::Open || st.write_closing {
            tracing::trace!(peer = %self.peer, len = data.len(), "write after close ignored");
            return;
        }
        st.writes += 1;
        if self.gathers(&mut st) {
            st.wbuf.push(data);
            return self.gathered_more(st);
        }
        if st.wbuf.is_empty() {
            let result = match self.io.borrow_mut().as_mut() {
                Some(io) => write_until_refused(io, data),
                None => return,
            };
            match result {
                Ok(n) if n == data.len() => return self.wrote_all(st),
                Ok(n) => st.wbuf.push(&data[n..]),
                Err(e) => {
                    drop(st);
                    self.fail(e);
                    return;
                }
            }
        } else {
            st.wbuf.push(data);
        }
        drop(st);
        self.buffered_more();
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0
            || self.hold(|| Held::Write(bufs.iter().flat_map(|b| b.iter().copied()).collect()))
        {
            return;
        }
        let mut st = self.st.borrow_mut();
        if st.phase != Phase::Open || st.write_closing {
            return;
        }
        st.writes += 1;
        let gathering = self.gathers(&mut st);
        if gathering && (total < GATHER_COPY_MAX || bufs.len() >= GATHER_IOVECS) {
            st.wbuf.push_vectored(bufs, 0);
            return self.gathered_more(st);
        }
        // Outside gathering, bytes still buffered mean the socket was full: they go first,
        // once it is writable. Gathered bytes go out first in the same system call, so `bufs`
        // is copied only for what the socket does not take.
        let written = if st.wbuf.is_empty() || gathering {
            let result = match self.io.borrow_mut().as_mut() {
                Some(io) => write_vectored_after(io, st.wbuf.front(), bufs),
                None => return,
            };
            match result {
                Ok(n) => {
                    let from_buffer = n.min(st.wbuf.len());
                    st.wbuf.consume(from_buffer);
                    n - from_buffer
                }
                Err(e) => {
                    drop(st);
                    self.fail(e);
                    return;
                }
            }
        } else {
            0
        };
        if gathering {
            // The callback's end writes (or keeps) whatever is left, as for its other writes.
            st.wbuf.push_vectored(bufs, written);
            return self.gathered_more(st);
        }
        if written == total {
            return self.wrote_all(st);
        }
        st.wbuf.push_vectored(bufs, written);
        if written > 0 {
            // Partly taken: the socket may have room again already (`write_until_refused`).
            if let Err(e) = self.write_out(&mut st) {
                drop(st);
                self.fail(e);
                return;
            }
        }
        drop(st);
        self.buffered_more();
    }

    fn lose_connection(&self) {
        if self.hold(|| Held::Lose) {
            return;
        }
        let mut st = self.st.borrow_mut();
        if st.phase != Phase::Open {
            return;
        }
        if st.read_eof && st.wbuf.is_empty() {
            // The peer already finished and nothing waits: closing sends our FIN, with no
            // handshake left to wait for (the common end of a request/response exchange).
            drop(st);
            self.finish(CloseReason::Done, false);
            return;
        }
        st.phase = Phase::Closing;
        drop(st);
        self.arm_close_timer();
        self.progress_close();
        self.update_interest();
    }

    fn lose_write_connection(&self) {
        if self.hold(|| Held::LoseWrite) {
            return;
        }
        let mut st = self.st.borrow_mut();
        if st.phase != Phase::Open || st.write_closing {
            return;
        }
        st.write_closing = true;
        drop(st);
        self.progress_close();
    }

    fn abort_connection(&self) {
        self.finish(CloseReason::Aborted, true);
    }

    fn peer_address(&self) -> Address {
        self.peer.clone()
    }

    fn local_address(&self) -> Address {
        self.local.clone()
    }

    fn pause_reading(&self) {
        self.st.borrow_mut().read_paused = true;
        self.update_interest();
    }

    fn resume_reading(&self) {
        self.st.borrow_mut().read_paused = false;
        self.update_interest();
    }

    fn set_write_buffer_limits(&self, high: usize, low: usize) -> io::Result<()> {
        if low > high {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("low watermark {low} is above high watermark {high}"),
            ));
        }
        let mut st = self.st.borrow_mut();
        st.high_watermark = high;
        st.low_watermark = low;
        let flag = st.watermark_flag();
        drop(st);
        if flag != 0 {
            self.add_pending(flag);
        }
        Ok(())
    }

    fn set_no_delay(&self, on: bool) -> io::Result<()> {
        match self.io.borrow_mut().as_mut() {
            Some(io) => io.set_no_delay(on),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        match self.io.borrow_mut().as_mut() {
            Some(io) => io.set_keepalive(keepalive.as_ref()),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn peer_credentials(&self) -> Option<PeerCredentials> {
        self.io.borrow().as_ref()?.peer_credentials()
    }

    fn register_producer(&self, producer: Box<dyn Producer>, streaming: bool) {
        // Stopping a producer runs user code, possibly from a handle outside any callback (a
        // timer, say): a panic there is contained as in the producer's other calls.
        if self.st.borrow().phase == Phase::Closed {
            let mut producer = producer;
            if let Err(msg) = catch_unwind_message(|| producer.stop_producing()) {
                tracing::error!(peer = %self.peer, panic = %msg, "producer stop_producing panicked");
            }
            return;
        }
        let old = self.producer.borrow_mut().replace(producer);
        match old {
            Some(mut old) => {
                let stopped = catch_unwind_message(|| old.stop_producing());
                if stopped.is_err() {
                    // The connection is aborted; the new producer, in the slot, is stopped
                    // with it.
                    return self.producer_panicked(stopped);
                }
            }
            // Registered, but out of its slot: inside its own call, stopped once that returns.
            None if self.st.borrow().producer.is_some() => self.producer_replaced.set(true),
            None => {}
        }
        let mut st = self.st.borrow_mut();
        st.producer = Some(streaming);
        st.pull_stalled = false;
        let flag = match streaming {
            // A pause still pending reaches the new producer with the protocol's; after it
            // was delivered, only the producer needs telling.
            true if st.producer_paused && st.pending & PAUSE == 0 => PAUSE_PRODUCER,
            true => 0,
            false => PULL,
        };
        drop(st);
        if flag != 0 {
            self.add_pending(flag);
        }
    }

    fn unregister_producer(&self) {
        self.st.borrow_mut().producer = None;
        // Dropped with no borrow held: its `Drop` may call back into the handle.
        let producer = self.producer.borrow_mut().take();
        drop(producer);
    }

    fn buffered(&self) -> usize {
        self.st.borrow().wbuf.len() + self.held().0
    }

    fn is_closing(&self) -> bool {
        let st = self.st.borrow();
        st.phase != Phase::Open || st.write_closing || self.held().1
    }

    fn abort_with(&self, reason: CloseReason) {
        self.finish(reason, true);
    }

    fn is_fully_closing(&self) -> bool {
        self.st.borrow().phase != Phase::Open
            || matches!(self.swap.borrow().as_deref(), Some(Swap::Pending { held, .. })
                if held.iter().any(|call| matches!(call, Held::Lose)))
    }

    fn wrap_protocol(&self, wrap: ProtocolWrapper) -> bool {
        // One swap at a time (a layer's `connection_made` may not start another).
        let swapping = !matches!(self.swap.borrow().as_deref(), None | Some(Swap::Done(_)));
        if self.is_closing() || swapping {
            return false;
        }
        // Inside a protocol callback, or a producer's (out of its slot while registered):
        // applied once it returns, with the producer back in its slot for the layer to take.
        let producer_running =
            self.st.borrow().producer.is_some() && self.producer.borrow().is_none();
        if self.in_callback.get() || producer_running {
            let held = Vec::new();
            *self.swap.borrow_mut() = Some(Box::new(Swap::Pending { wrap, held }));
        } else {
            self.swap_protocol(wrap, Vec::new());
            // Outside any callback, nobody delivers what the layer's `connection_made` queued
            // (a pause, `connection_lost`): scheduled here.
            self.add_pending(0);
        }
        true
    }

    fn redirect_handles(&self, to: TransportHandle) {
        // A layer that is this connection's first protocol (a TLS port's, say): nothing was
        // held or handed out before it, and the handles asked for from now on (the port's, the
        // connector's) reach it, so that closing the port's connections closes the layer.
        if self.swap.borrow().is_none() && !self.is_closing() {
            *self.swap.borrow_mut() = Some(Box::new(Swap::Done(to)));
            return;
        }
        let Some(Swap::Handover { held, handles }) = self.take_swap(false) else {
            return;
        };
        if let Some(old) = handles {
            old.redirect(to.clone());
        }
        // A producer registered before writes through the old handles: the layer takes it
        // (the TLS layer wraps it, so its writes are encrypted and it is paused by the
        // ciphertext it buffers; left here, a pull producer would not be asked again).
        let streaming = self.st.borrow().producer;
        let producer = self.producer.borrow_mut().take();
        if let (Some(streaming), Some(producer)) = (streaming, producer) {
            let mut st = self.st.borrow_mut();
            st.producer = None;
            // Already told to pause: registered again, it is not told a second time.
            let paused =
                streaming && st.producer_paused && st.pending & (PAUSE | PAUSE_PRODUCER) == 0;
            // A pull producer is asked again when its chunk drained (or already is, or waits
            // for a write after writing nothing): registered again, it is not asked at once.
            let (pull_owed, stalled) = (st.pending & PULL != 0, st.pull_stalled);
            drop(st);
            to.register_producer(producer, streaming);
            let mut st = self.st.borrow_mut();
            if paused {
                st.pending &= !PAUSE_PRODUCER;
            }
            if !streaming && !pull_owed && st.producer == Some(false) {
                st.pending &= !PULL;
                st.pull_stalled = stalled;
            }
        }
        *self.swap.borrow_mut() = Some(Box::new(Swap::Redirected(to.clone())));
        replay(&*to, held);
    }

    fn handle(&self) -> TransportHandle {
        if let Some(Swap::Done(layer)) = self.swap.borrow().as_deref() {
            return layer.clone();
        }
        let mut shared = self.handles.borrow_mut();
        if let Some(handle) = TransportHandle::upgrade(&shared) {
            return handle;
        }
        let handle = TransportHandle::new(self.rc());
        *shared = handle.downgrade();
        handle
    }

    fn reactor(&self) -> Reactor {
        self.reactor
            .upgrade()
            .expect("connections are only used while their reactor exists")
    }
}

impl<IO: StreamIo> fmt::Debug for StreamConnection<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.st.borrow();
        f.debug_struct("StreamConnection")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .field("phase", &st.phase)
            .field("buffered", &st.wbuf.len())
            .finish()
    }
}
