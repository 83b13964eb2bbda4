//! The test kit: run protocols without sockets, on a virtual clock.
//!
//! - [`MemoryReactor`]: a [`Reactor`] on a virtual clock with no descriptors. Timers fire as
//!   the test advances time, so timeouts are tested in microseconds of real time.
//! - [`StringTransport`]: one protocol on an in-memory connection whose other end the test
//!   drives by hand: feed bytes (in chunks down to one byte), send FIN, reset, stop reading;
//!   read back what the protocol wrote and why it closed.
//! - [`connect_pair`]: a client and a server protocol connected to each other in memory.
//! - [`MemoryNetwork`]: datagram protocols exchanging datagrams in memory.
//!
//! The protocol side of all of these is the very connection code that serves TCP and Unix
//! sockets ([`StreamConnection`]); only the bytes move through memory. A protocol that passes
//! here behaves the same on a real reactor.
//!
//! ```
//! use torsion_reactor::prelude::*;
//! use torsion_reactor::testing::{MemoryReactor, StringTransport};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
//!         transport.write(data);
//!     }
//! }
//!
//! let mr = MemoryReactor::new();
//! let st = StringTransport::connect(&mr, Echo);
//! st.feed(b"hello");
//! assert_eq!(st.take(), b"hello");
//! st.feed_eof();
//! assert!(matches!(st.lost(), Some(CloseReason::Done)));
//! ```

mod datagram;
mod pipe;

pub use datagram::{MemoryDatagramPort, MemoryNetwork};

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::address::Address;
use crate::clock::VirtualClock;
use crate::connection::{ConnectionConfig, StreamConnection};
use crate::protocol::Protocol;
use crate::reactor::Reactor;
use crate::reason::CloseReason;
use crate::transport::{Transport, TransportHandle};

use pipe::{End, MemoryIo, Pipe};

/// A reactor on a virtual clock, with no sockets: the engine of the test kit.
///
/// Nothing happens until the test calls [`advance`](MemoryReactor::advance) or
/// [`run_until_idle`](MemoryReactor::run_until_idle) (the [`StringTransport`] helpers call the
/// latter for you). [`Reactor::run`] also works on it: instead of sleeping it jumps the clock
/// to the next timer, and returns when nothing is left to do.
pub struct MemoryReactor {
    reactor: Reactor,
    clock: VirtualClock,
}

impl MemoryReactor {
    /// A fresh reactor at virtual time zero.
    pub fn new() -> Self {
        let clock = VirtualClock::new();
        MemoryReactor {
            reactor: Reactor::new_virtual(clock.clone()),
            clock,
        }
    }

    /// The reactor, to hand to the code under test.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// The virtual clock.
    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// Runs queued work and due timers until nothing is left to do now. It does not move the
    /// clock. A callback that keeps rescheduling itself would never let it finish: after a
    /// million turns it logs an error and returns.
    pub fn run_until_idle(&self) {
        self.reactor.run_until_idle();
    }

    /// Moves time forward by `by`, firing every timer that falls due on the way, in order and
    /// each at its own time (so a callback that reads the clock sees its deadline). Timers
    /// those callbacks schedule fire too if they fall due by the end. The clock saturates at
    /// [`Duration::MAX`] instead of overflowing (but a repeating timer, such as a
    /// `LoopingCall`, keeps falling due, so do not advance by "forever" while one runs).
    pub fn advance(&self, by: Duration) {
        let target = self.clock.now().saturating_add(by);
        self.run_until_idle();
        loop {
            let next = self.reactor.inner().timers.borrow_mut().next_deadline();
            match next {
                Some(t) if t <= target => {
                    self.clock.set(t);
                    self.run_until_idle();
                }
                _ => break,
            }
        }
        self.clock.set(target);
        self.run_until_idle();
    }
}

impl Default for MemoryReactor {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryReactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReactor")
            .field("now", &self.clock.now())
            .finish()
    }
}

static NEXT_MEMORY_ADDRESS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn memory_address() -> Address {
    Address::Memory(NEXT_MEMORY_ADDRESS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Options of an in-memory connection.
#[derive(Clone, Debug)]
pub struct MemoryOptions {
    /// Largest chunk a single read delivers: 1 makes every byte its own `data_received`
    /// (0 is taken as 1). Default 65536.
    pub chunk_size: usize,
    /// Bytes each direction holds before the writer's socket "fills up" and it must buffer
    /// (the kernel socket buffer). Default 256 KiB.
    pub capacity: usize,
    /// The connection configuration (watermarks, limits) of the protocol side(s).
    pub config: ConnectionConfig,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            chunk_size: 64 * 1024,
            capacity: 256 * 1024,
            config: ConnectionConfig::default(),
        }
    }
}

impl MemoryOptions {
    /// Default options with reads of at most `chunk_size` bytes.
    pub fn chunked(chunk_size: usize) -> Self {
        MemoryOptions {
            chunk_size,
            ..Self::default()
        }
    }
}

type LostCell = Rc<RefCell<Option<CloseReason>>>;

fn start(
    reactor: &Reactor,
    end: Rc<End>,
    protocol: Box<dyn Protocol>,
    peer: Address,
    local: Address,
    config: ConnectionConfig,
) -> (TransportHandle, LostCell) {
    let lost: LostCell = Rc::new(RefCell::new(None));
    let cell = lost.clone();
    let conn = StreamConnection::start(
        reactor,
        MemoryIo::new(end),
        protocol,
        peer,
        local,
        config,
        Some(Box::new(move |reason: &CloseReason| {
            *cell.borrow_mut() = Some(reason.clone())
        })),
    );
    (conn.handle(), lost)
}

/// One protocol on an in-memory connection whose other end the test drives (Twisted's
/// `StringTransport`, with the real transport semantics).
///
/// Every method that acts runs the reactor until idle, so the protocol has reacted by the time
/// it returns.
pub struct StringTransport {
    reactor: Reactor,
    peer: Rc<End>,
    transport: TransportHandle,
    lost: LostCell,
}

impl StringTransport {
    /// Connects `protocol` to a test-driven peer with default options.
    pub fn connect(mr: &MemoryReactor, protocol: impl Protocol) -> Self {
        Self::with_options(mr, protocol, MemoryOptions::default())
    }

    /// Connects `protocol` to a test-driven peer.
    pub fn with_options(
        mr: &MemoryReactor,
        protocol: impl Protocol,
        options: MemoryOptions,
    ) -> Self {
        let reactor = mr.reactor().clone();
        let to_protocol = Pipe::new(options.capacity);
        let from_protocol = Pipe::new(options.capacity);
        let weak = reactor.downgrade();
        let protocol_end = End::new(
            weak.clone(),
            to_protocol.clone(),
            from_protocol.clone(),
            options.chunk_size,
        );
        // The test's end reads everything at once; it never needs readiness.
        let peer = End::new(weak, from_protocol, to_protocol, usize::MAX);
        let (peer_addr, local_addr) = (memory_address(), memory_address());
        let (transport, lost) = start(
            &reactor,
            protocol_end,
            Box::new(protocol),
            peer_addr,
            local_addr,
            options.config,
        );
        let st = StringTransport {
            reactor,
            peer,
            transport,
            lost,
        };
        st.settle();
        st
    }

    fn settle(&self) {
        self.reactor.run_until_idle();
    }

    /// Sends `data` to the protocol (delivered in chunks of at most the chunk size) and runs
    /// the reactor until the protocol has reacted.
    ///
    /// Returns how many bytes were accepted: all of them, unless the protocol stopped reading
    /// (paused) while the pipe towards it was full, or the connection is closed.
    pub fn feed(&self, data: &[u8]) -> usize {
        let mut sent = 0;
        while sent < data.len() {
            match self.peer.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.settle();
                    if self.unread() >= self.peer.tx.borrow().capacity {
                        break; // the protocol is not reading
                    }
                }
                Err(_) => break, // the connection is gone
            }
            self.settle();
        }
        self.settle();
        sent
    }

    /// Bytes fed but not yet read by the protocol.
    pub fn unread(&self) -> usize {
        self.peer.unread_by_peer()
    }

    /// The peer sends FIN (end of its data).
    pub fn feed_eof(&self) {
        self.peer.shutdown_write();
        self.settle();
    }

    /// The peer resets the connection (as a crashed or aborting peer would).
    pub fn reset(&self) {
        self.peer.close(true);
        self.settle();
    }

    /// Runs the reactor until idle, then takes everything the protocol has written into the
    /// pipe so far. Taking makes room, so a protocol with more data waiting behind a full
    /// pipe sends it on the next `take`.
    pub fn take(&self) -> Vec<u8> {
        self.settle();
        let mut out = vec![0u8; self.pending()];
        let mut filled = 0;
        while let Ok(n @ 1..) = self.peer.read(&mut out[filled..]) {
            filled += n;
        }
        out.truncate(filled);
        self.settle();
        out
    }

    /// Bytes the protocol wrote that wait in the pipe (not yet taken).
    pub fn pending(&self) -> usize {
        self.peer.available()
    }

    /// `true` once the protocol side sent FIN and everything before it was taken.
    pub fn fin_received(&self) -> bool {
        self.peer.at_eof()
    }

    /// `true` if the protocol side reset (aborted) the connection.
    pub fn reset_received(&self) -> bool {
        self.peer.was_reset()
    }

    /// Why the connection was lost, once it was (after the protocol's `connection_lost`).
    pub fn lost(&self) -> Option<CloseReason> {
        self.lost.borrow().clone()
    }

    /// The protocol side's transport.
    pub fn transport(&self) -> &TransportHandle {
        &self.transport
    }

    /// The reactor the connection runs on.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }
}

impl std::fmt::Debug for StringTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StringTransport")
            .field("pending", &self.pending())
            .field("closing", &self.transport.is_closing())
            .finish()
    }
}

/// Both ends of an in-memory connection made by [`connect_pair`].
#[derive(Debug)]
pub struct MemoryPair {
    /// The client protocol's transport.
    pub client: TransportHandle,
    /// The server protocol's transport.
    pub server: TransportHandle,
    client_lost: LostCell,
    server_lost: LostCell,
}

impl MemoryPair {
    /// Why the client side closed, once it did.
    pub fn client_lost(&self) -> Option<CloseReason> {
        self.client_lost.borrow().clone()
    }

    /// Why the server side closed, once it did.
    pub fn server_lost(&self) -> Option<CloseReason> {
        self.server_lost.borrow().clone()
    }
}

/// Connects a client and a server protocol to each other in memory on `reactor` (a
/// [`MemoryReactor`]'s or a real one). Bytes are delivered on later reactor turns, in chunks of
/// at most `options.chunk_size`.
pub fn connect_pair(
    reactor: &Reactor,
    client: impl Protocol,
    server: impl Protocol,
    options: MemoryOptions,
) -> MemoryPair {
    let c2s = Pipe::new(options.capacity);
    let s2c = Pipe::new(options.capacity);
    let weak = reactor.downgrade();
    let client_end = End::new(weak.clone(), s2c.clone(), c2s.clone(), options.chunk_size);
    let server_end = End::new(weak, c2s, s2c, options.chunk_size);
    let (client_addr, server_addr) = (memory_address(), memory_address());
    let (server, server_lost) = start(
        reactor,
        server_end,
        Box::new(server),
        client_addr.clone(),
        server_addr.clone(),
        options.config.clone(),
    );
    let (client, client_lost) = start(
        reactor,
        client_end,
        Box::new(client),
        server_addr,
        client_addr,
        options.config,
    );
    MemoryPair {
        client,
        server,
        client_lost,
        server_lost,
    }
}
