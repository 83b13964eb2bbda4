//! Datagram sockets: UDP (IPv4 and IPv6, connected mode, broadcast, multicast) and Unix
//! datagram sockets.
//!
//! # Reading
//!
//! Each readiness event reads up to 64 datagrams before other sources get their turn; the
//! level-triggered backend reports the socket again if more are waiting, so one busy socket
//! cannot starve the others. Datagrams are read into the reactor's shared read buffer, at most
//! [`DATAGRAM_READ_SIZE`] (64 KiB) at a time, and handed to the protocol as a slice: nothing is
//! allocated per datagram. A longer datagram (only a Unix datagram can be) is dropped with a
//! warning, never delivered cut short.
//!
//! Reads use one `recvfrom` per datagram: `recvmmsg` would save system calls, but the safe
//! socket layer we build on does not offer it and this crate does not call the C library
//! directly.
//!
//! # Writing
//!
//! Outside a read burst (a timer, another connection's callback) a datagram goes straight to
//! the socket. Inside `datagram_received`, replies are collected and sent together with one
//! `sendmmsg` call when the burst ends, or sooner once 64 datagrams or 256 KiB are waiting;
//! a reply server so makes one system call per burst instead of one per datagram. Either way
//! the datagrams leave in the order they were written.
//!
//! If the socket would block, datagrams are queued (in order) and sent when the socket is
//! writable; the queue holds at most [`DatagramOptions::max_queue_bytes`] (1 MiB by
//! default), past which datagrams are dropped, counted ([`DatagramTransport::dropped`]) and,
//! when the write is a direct one, reported as [`DatagramError::QueueFull`]. A datagram
//! larger than the maximum datagram size (65,507 bytes by default) and an address of the
//! wrong family (including an IPv4 address, plain or IPv4-mapped, on an IPv6-only socket) are
//! refused at once with [`DatagramError::TooLarge`] and [`DatagramError::WrongAddress`],
//! batched or not. An I/O error from the kernel for a
//! batched datagram is logged (at debug level) instead of returned, and a refusal in
//! connected mode still reaches `connection_refused`.
//!
//! # Multicast
//!
//! A group and an interface must be of the same family (an IPv4 group with
//! [`MulticastInterface::V4`] or `Any`, an IPv6 group with [`MulticastInterface::Index`] or
//! `Any`); a mismatch is refused with `InvalidInput`. So is an interface of the wrong family
//! for [`DatagramTransport::set_multicast_interface`], except that a dual-stack IPv6 socket
//! accepts an IPv4 interface for its IPv4 multicast. `Any` resets the socket's own family
//! (both, on a dual-stack socket).
//!
//! # Panics
//!
//! A panic in `datagram_received` is caught and logged; that datagram is dropped and the
//! socket keeps serving the others.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Deref;
use std::os::fd::AsFd;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::Duration;

use rustix::net::{
    MMsgHdr, RecvFlags, SendAncillaryBuffer, SendFlags, SocketAddrAny, SocketAddrUnix,
};
use socket2::{Domain, Socket, Type};
use torsion_reactor::{
    Address, DatagramError, DatagramProtocol, DatagramTransport, DelayedCall, Error, Interest,
    MulticastInterface, Reactor, Readiness, Registered, Result, Source, UnixAddress, WeakReactor,
    DEFAULT_MAX_DATAGRAM_SIZE,
};

use crate::connector::{any_to_address, sockaddr_to_address};

const READS_PER_TURN: usize = 64;
/// Longest datagram a port receives: 64 KiB. Every UDP payload fits; a longer Unix datagram
/// is dropped with a warning.
pub const DATAGRAM_READ_SIZE: usize = 64 * 1024;
/// Most datagrams one `sendmmsg` call carries.
const BATCH_DATAGRAMS: usize = 64;
/// Bytes of batched datagrams past which the batch is sent before the burst ends.
const BATCH_BYTES: usize = 256 * 1024;

/// Options of a datagram socket.
#[derive(Clone, Debug)]
pub struct DatagramOptions {
    /// `SO_REUSEADDR`. Default false.
    pub reuse_address: bool,
    /// `SO_REUSEPORT`: several sockets (and processes) share the port, for example to receive
    /// one multicast group. Default false.
    pub reuse_port: bool,
    /// For an IPv6 address: accept IPv6 only (`IPV6_V6ONLY`). Default true.
    pub ipv6_only: bool,
    /// `SO_BROADCAST`. Default false.
    pub broadcast: bool,
    /// `SO_RCVBUF` in bytes (`None`: the system default).
    pub recv_buffer_size: Option<usize>,
    /// `SO_SNDBUF` in bytes (`None`: the system default).
    pub send_buffer_size: Option<usize>,
    /// Bytes of datagrams queued while the socket would block before new ones are dropped,
    /// each counted with its bookkeeping ([`QUEUE_ENTRY_OVERHEAD`] bytes), so that empty
    /// datagrams cannot queue without bound. Default 1 MiB.
    pub max_queue_bytes: usize,
}

/// What a queued datagram costs against [`DatagramOptions::max_queue_bytes`] beyond its
/// payload: the queue entry itself (buffer and destination address).
pub const QUEUE_ENTRY_OVERHEAD: usize = std::mem::size_of::<(Vec<u8>, Option<SocketAddrAny>)>();

fn queue_cost(data: &[u8]) -> usize {
    data.len() + QUEUE_ENTRY_OVERHEAD
}

impl Default for DatagramOptions {
    fn default() -> Self {
        DatagramOptions {
            reuse_address: false,
            reuse_port: false,
            ipv6_only: true,
            broadcast: false,
            recv_buffer_size: None,
            send_buffer_size: None,
            max_queue_bytes: 1024 * 1024,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A UDP socket: `v6` for an IPv6 one, `v6_only` when it is also `IPV6_V6ONLY` (read
    /// from the socket when it starts), so that it cannot reach IPv4 peers at all.
    Udp {
        v6: bool,
        v6_only: bool,
    },
    Unix,
}

struct State {
    queue: VecDeque<(Vec<u8>, Option<SocketAddrAny>)>,
    queued_bytes: usize,
    dropped: u64,
    peer: Option<Address>,
    max_size: usize,
}

/// Datagrams written during a read burst, waiting for one `sendmmsg` call.
#[derive(Default)]
struct Batch {
    /// The datagrams' bytes, back to back.
    bytes: Vec<u8>,
    /// Where each datagram ends in `bytes`, and its destination (`None`: the connected peer).
    ends: Vec<(usize, Option<SocketAddrAny>)>,
}

impl Batch {
    fn datagram(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1].0 };
        &self.bytes[start..self.ends[i].0]
    }

    /// Sends the datagrams from `first` on (at most [`BATCH_DATAGRAMS`]) with one call;
    /// returns how many the kernel took.
    fn send(&self, socket: &Socket, first: usize) -> io::Result<usize> {
        let last = self.ends.len().min(first + BATCH_DATAGRAMS);
        let iovs: Vec<[io::IoSlice<'_>; 1]> = (first..last)
            .map(|i| [io::IoSlice::new(self.datagram(i))])
            .collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = (first..last)
            .map(|_| SendAncillaryBuffer::default())
            .collect();
        let mut msgs: Vec<MMsgHdr<'_>> = iovs
            .iter()
            .zip(controls.iter_mut())
            .zip(&self.ends[first..last])
            .map(|((iov, control), (_, to))| match to {
                Some(addr) => MMsgHdr::new_with_addr(addr, iov, control),
                None => MMsgHdr::new(iov, control),
            })
            .collect();
        rustix::net::sendmmsg(socket.as_fd(), &mut msgs, SendFlags::NOSIGNAL)
            .map_err(io::Error::from)
    }
}

pub(crate) struct DatagramSocket {
    me: Weak<DatagramSocket>,
    reactor: WeakReactor,
    reg: RefCell<Option<Registered<Socket>>>,
    kind: Kind,
    local: Address,
    protocol: RefCell<Option<Box<dyn DatagramProtocol>>>,
    st: RefCell<State>,
    /// True while `read` hands datagrams to the protocol: writes then go to `batch`.
    batching: Cell<bool>,
    batch: RefCell<Batch>,
    max_queue_bytes: usize,
    stopped: Cell<bool>,
    /// The socket file of a Unix path, removed at stop if it is still this socket's.
    socket_file: Option<crate::unix::SocketFile>,
    /// Pause before retrying a blocked queue after a writable event that made no progress.
    write_backoff: Cell<Duration>,
    retry: RefCell<Option<DelayedCall>>,
}

const FIRST_WRITE_BACKOFF: Duration = Duration::from_millis(1);
const MAX_WRITE_BACKOFF: Duration = Duration::from_millis(50);

/// A bound datagram socket returned by `listen_udp` and friends (Twisted's `IListeningPort`
/// for datagrams). Dereferences to its [`DatagramTransport`], so code outside callbacks can
/// send through it. The socket stays open when this handle is dropped; call
/// `stop_listening` to close it.
#[derive(Clone)]
pub struct DatagramPort(Rc<DatagramSocket>);

impl Deref for DatagramPort {
    type Target = dyn DatagramTransport;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for DatagramPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramPort")
            .field("local", &self.0.local)
            .field("open", &!self.0.stopped.get())
            .finish()
    }
}

fn sockaddr_of(kind: Kind, to: &Address) -> std::result::Result<SocketAddrAny, DatagramError> {
    let unix = |addr: rustix::io::Result<SocketAddrUnix>| {
        addr.map(SocketAddrAny::from)
            .map_err(|e| DatagramError::Io(e.into()))
    };
    match (kind, to) {
        (Kind::Udp { v6: false, .. }, Address::Inet(a @ SocketAddr::V4(_))) => Ok((*a).into()),
        // An IPv6-only socket cannot reach IPv4 peers, mapped or not: the kernel would refuse
        // the datagram (ENETUNREACH), and a batched one would be dropped unseen.
        (Kind::Udp { v6: true, v6_only }, Address::Inet(SocketAddr::V6(a)))
            if !(v6_only && a.ip().to_ipv4_mapped().is_some()) =>
        {
            Ok((*a).into())
        }
        (
            Kind::Udp {
                v6: true,
                v6_only: false,
            },
            Address::Inet(SocketAddr::V4(a)),
        ) => {
            // An IPv4 peer of a dual-stack socket, as a mapped address.
            Ok(SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()).into())
        }
        (Kind::Unix, Address::Unix(UnixAddress::Path(p))) => unix(SocketAddrUnix::new(p.as_path())),
        (Kind::Unix, Address::Unix(UnixAddress::Abstract(n))) => {
            unix(SocketAddrUnix::new_abstract_name(n))
        }
        _ => Err(DatagramError::WrongAddress(to.clone())),
    }
}

/// The sender of a datagram: IPv4 peers of a dual-stack socket are shown as IPv4.
fn from_any(addr: Option<SocketAddrAny>, kind: Kind) -> Address {
    match (addr.and_then(any_to_address), kind) {
        (Some(Address::Inet(SocketAddr::V6(v6))), _) => {
            Address::Inet(match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
                None => SocketAddr::V6(v6),
            })
        }
        (Some(a), _) => a,
        (None, Kind::Unix) => Address::Unix(UnixAddress::Unnamed),
        (None, Kind::Udp { .. }) => Address::Inet(SocketAddr::from(([0, 0, 0, 0], 0))),
    }
}

impl DatagramSocket {
    fn start(
        reactor: &Reactor,
        socket: Socket,
        kind: Kind,
        protocol: Box<dyn DatagramProtocol>,
        options: &DatagramOptions,
        socket_file: Option<crate::unix::SocketFile>,
        peer: Option<Address>,
    ) -> Result<DatagramPort> {
        let local = socket
            .local_addr()
            .map(|a| sockaddr_to_address(&a))
            .map_err(|e| Error::io("read the bound address", e))?;
        let kind = match kind {
            Kind::Udp { v6: true, .. } => Kind::Udp {
                v6: true,
                v6_only: socket
                    .only_v6()
                    .map_err(|e| Error::io(format!("read IPV6_V6ONLY of UDP {local}"), e))?,
            },
            kind => kind,
        };
        let reg = Registered::new(reactor, socket, Interest::READABLE)?;
        let sock = Rc::new_cyclic(|me| DatagramSocket {
            me: me.clone(),
            reactor: reactor.downgrade(),
            reg: RefCell::new(Some(reg)),
            kind,
            local,
            protocol: RefCell::new(Some(protocol)),
            st: RefCell::new(State {
                queue: VecDeque::new(),
                queued_bytes: 0,
                dropped: 0,
                peer,
                max_size: DEFAULT_MAX_DATAGRAM_SIZE,
            }),
            batching: Cell::new(false),
            batch: RefCell::new(Batch::default()),
            max_queue_bytes: options.max_queue_bytes,
            stopped: Cell::new(false),
            socket_file,
            write_backoff: Cell::new(FIRST_WRITE_BACKOFF),
            retry: RefCell::new(None),
        });
        if let Some(reg) = sock.reg.borrow().as_ref() {
            reg.set_source(sock.clone());
        }
        tracing::info!(local = %sock.local, "datagram socket listening");
        sock.call(|p, t| p.start_protocol(t));
        Ok(DatagramPort(sock))
    }

    fn call(&self, f: impl FnOnce(&mut dyn DatagramProtocol, &mut dyn DatagramTransport)) {
        let Some(mut protocol) = self.protocol.borrow_mut().take() else {
            return;
        };
        let mut me: &Self = self;
        if let Err(msg) = torsion_reactor::catch_unwind_message(|| f(&mut *protocol, &mut me)) {
            tracing::error!(local = %self.local, panic = %msg, "datagram protocol panicked; datagram dropped");
        }
        if !self.stopped.get() || self.protocol.borrow().is_none() {
            *self.protocol.borrow_mut() = Some(protocol);
        }
    }

    fn with_socket<R>(&self, f: impl FnOnce(&Socket) -> io::Result<R>) -> io::Result<R> {
        match self.reg.borrow().as_ref() {
            Some(reg) => f(reg.get_ref()),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn send_now(&self, data: &[u8], to: Option<&SocketAddrAny>) -> io::Result<usize> {
        let flags = SendFlags::NOSIGNAL;
        self.with_socket(|s| {
            match to {
                Some(addr) => rustix::net::sendto(s.as_fd(), data, flags, addr),
                None => rustix::net::send(s.as_fd(), data, flags),
            }
            .map_err(io::Error::from)
        })
    }

    fn send(
        &self,
        data: &[u8],
        to: Option<SocketAddrAny>,
    ) -> std::result::Result<(), DatagramError> {
        if self.stopped.get() {
            return Err(DatagramError::Closed);
        }
        let mut st = self.st.borrow_mut();
        if data.len() > st.max_size {
            return Err(DatagramError::TooLarge {
                size: data.len(),
                limit: st.max_size,
            });
        }
        if st.queue.is_empty() && self.batching.get() {
            drop(st);
            let full = {
                let mut batch = self.batch.borrow_mut();
                batch.bytes.extend_from_slice(data);
                let end = batch.bytes.len();
                batch.ends.push((end, to));
                batch.ends.len() >= BATCH_DATAGRAMS || end >= BATCH_BYTES
            };
            if full {
                self.send_batch();
            }
            return Ok(());
        }
        if st.queue.is_empty() {
            match self.send_now(data, to.as_ref()) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    drop(st);
                    self.refused_if_connected(&e);
                    return Err(DatagramError::Io(e));
                }
            }
        }
        let queued = self.enqueue(&mut st, data, to);
        drop(st);
        self.update_interest();
        queued
    }

    fn enqueue(
        &self,
        st: &mut State,
        data: &[u8],
        to: Option<SocketAddrAny>,
    ) -> std::result::Result<(), DatagramError> {
        if st.queued_bytes + queue_cost(data) > self.max_queue_bytes {
            st.dropped += 1;
            return Err(DatagramError::QueueFull);
        }
        st.queued_bytes += queue_cost(data);
        st.queue.push_back((data.to_vec(), to));
        Ok(())
    }

    /// Sends the batched datagrams; what the socket cannot take now joins the queue.
    fn send_batch(&self) {
        let mut batch = self.batch.borrow_mut();
        let mut sent = 0;
        while sent < batch.ends.len() {
            match self.with_socket(|s| batch.send(s, sent)) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The first datagram of the call failed: drop it and go on with the rest.
                    tracing::debug!(local = %self.local, error = %e, "batched datagram not sent");
                    self.refused_if_connected(&e);
                    sent += 1;
                }
            }
        }
        if sent < batch.ends.len() {
            let mut st = self.st.borrow_mut();
            for i in sent..batch.ends.len() {
                let to = batch.ends[i].1.clone();
                // Past the queue limit the datagram is dropped and counted by `enqueue`.
                let _ = self.enqueue(&mut st, batch.datagram(i), to);
            }
            drop(st);
            self.update_interest();
        }
        batch.bytes.clear();
        batch.ends.clear();
    }

    /// In connected mode the kernel reports a refusal (ICMP port unreachable) on whichever
    /// call comes next: when that is a send, the protocol still hears of it.
    fn refused_if_connected(&self, e: &io::Error) {
        if e.kind() != io::ErrorKind::ConnectionRefused || self.st.borrow().peer.is_none() {
            return;
        }
        if let (Some(reactor), Some(me)) = (self.reactor.upgrade(), self.me.upgrade()) {
            reactor.call_soon(move |_| me.call(|p, t| p.connection_refused(t)));
        }
    }

    fn update_interest(&self) {
        let writable = !self.st.borrow().queue.is_empty() && self.retry.borrow().is_none();
        if let Some(reg) = self.reg.borrow().as_ref() {
            let _ = reg.set_interest(Interest {
                readable: true,
                writable,
            });
        }
    }

    fn flush(&self) {
        let mut progress = false;
        loop {
            let mut st = self.st.borrow_mut();
            let Some((data, to)) = st.queue.front() else {
                break;
            };
            let result = self.send_now(data, to.as_ref());
            if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                break;
            }
            progress = true;
            let (data, _) = st.queue.pop_front().expect("front exists");
            st.queued_bytes -= queue_cost(&data);
            drop(st);
            if let Err(e) = result {
                tracing::debug!(local = %self.local, error = %e, "queued datagram not sent");
                self.refused_if_connected(&e);
            }
        }
        if progress || self.st.borrow().queue.is_empty() {
            self.write_backoff.set(FIRST_WRITE_BACKOFF);
        } else {
            // Writable, yet nothing could be sent: Linux reports an unconnected Unix datagram
            // socket writable even while its receiver's queue is full. Stop watching for
            // writability and retry after a pause instead of spinning.
            self.back_off_writes();
        }
        self.update_interest();
    }

    fn back_off_writes(&self) {
        let (Some(reactor), pause) = (self.reactor.upgrade(), self.write_backoff.get()) else {
            return;
        };
        self.write_backoff.set((pause * 2).min(MAX_WRITE_BACKOFF));
        let weak = self.me.clone();
        let call = reactor.call_later(pause, move |_| {
            if let Some(sock) = weak.upgrade() {
                sock.retry.borrow_mut().take();
                sock.flush();
            }
        });
        *self.retry.borrow_mut() = Some(call);
    }

    fn read(&self, reactor: &Reactor) {
        let mut buf = reactor.take_read_buffer();
        self.batching.set(true);
        for _ in 0..READS_PER_TURN {
            if self.stopped.get() {
                break;
            }
            let result = self.with_socket(|s| {
                // TRUNC: the full length of a datagram longer than the read size.
                rustix::net::recvfrom(s.as_fd(), &mut buf[..DATAGRAM_READ_SIZE], RecvFlags::TRUNC)
                    .map_err(io::Error::from)
            });
            match result {
                Ok((n, full, _)) if full > n => {
                    // Only Unix datagrams can be longer (a UDP payload fits in 64 KiB).
                    tracing::warn!(local = %self.local, len = full, limit = n, "datagram longer than the read size dropped");
                }
                Ok((n, _, from)) => {
                    let from = match &self.st.borrow().peer {
                        Some(peer) if from.is_none() => peer.clone(),
                        _ => from_any(from, self.kind),
                    };
                    self.call(|p, t| p.datagram_received(t, &buf[..n], &from));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    self.call(|p, t| p.connection_refused(t));
                }
                Err(e) => {
                    tracing::debug!(local = %self.local, error = %e, "datagram receive error");
                    break;
                }
            }
        }
        self.batching.set(false);
        self.send_batch();
        reactor.return_read_buffer(buf);
    }

    fn ip_socket<R>(&self, f: impl FnOnce(&Socket, bool) -> io::Result<R>) -> io::Result<R> {
        match self.kind {
            Kind::Udp { v6, .. } => self.with_socket(|s| f(s, v6)),
            Kind::Unix => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

impl Source for DatagramSocket {
    fn reactor_closing(&self) {
        self.stop_listening();
    }

    fn reactor_dropped(&self) {
        self.stopped.set(true);
        drop(self.reg.borrow_mut().take());
        drop(self.protocol.borrow_mut().take());
    }

    fn ready(&self, readiness: Readiness) {
        let Some(reactor) = self.reactor.upgrade() else {
            return;
        };
        if readiness.writable {
            self.flush();
        }
        if readiness.readable {
            self.read(&reactor);
        }
    }
}

impl DatagramTransport for DatagramSocket {
    fn write_to(&self, data: &[u8], to: &Address) -> std::result::Result<(), DatagramError> {
        let addr = sockaddr_of(self.kind, to)?;
        self.send(data, Some(addr))
    }

    fn write(&self, data: &[u8]) -> std::result::Result<(), DatagramError> {
        if self.st.borrow().peer.is_none() {
            return Err(DatagramError::NotConnected);
        }
        self.send(data, None)
    }

    fn connect(&self, to: &Address) -> io::Result<()> {
        let addr = sockaddr_of(self.kind, to).map_err(|e| match e {
            DatagramError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
        })?;
        // What was written to the old peer still goes there: send the replies batched in
        // this burst now, and address those still queued to it.
        self.send_batch();
        self.with_socket(|s| rustix::net::connect(s.as_fd(), &addr).map_err(io::Error::from))?;
        let mut st = self.st.borrow_mut();
        let old = st.peer.replace(to.clone());
        if let Some(old) = old.and_then(|old| sockaddr_of(self.kind, &old).ok()) {
            for (_, dest) in st.queue.iter_mut().filter(|(_, dest)| dest.is_none()) {
                *dest = Some(old.clone());
            }
        }
        Ok(())
    }

    fn local_address(&self) -> Address {
        self.local.clone()
    }

    fn peer_address(&self) -> Option<Address> {
        self.st.borrow().peer.clone()
    }

    fn max_datagram_size(&self) -> usize {
        self.st.borrow().max_size
    }

    fn set_max_datagram_size(&self, size: usize) {
        self.st.borrow_mut().max_size = size;
    }

    fn dropped(&self) -> u64 {
        self.st.borrow().dropped
    }

    fn stop_listening(&self) {
        if self.stopped.get() {
            return;
        }
        // Replies written in this burst before the stop still go out.
        self.send_batch();
        self.stopped.set(true);
        let reg = self.reg.borrow_mut().take();
        drop(reg);
        if let Some(retry) = self.retry.borrow_mut().take() {
            retry.cancel();
        }
        if let Some(file) = &self.socket_file {
            file.remove();
        }
        tracing::info!(local = %self.local, "datagram socket closed");
        if let (Some(reactor), Some(me)) = (self.reactor.upgrade(), self.me.upgrade()) {
            reactor.call_soon(move |_| {
                if let Some(mut p) = me.protocol.borrow_mut().take() {
                    if let Err(msg) = torsion_reactor::catch_unwind_message(|| p.stop_protocol()) {
                        tracing::error!(panic = %msg, "stop_protocol panicked");
                    }
                }
            });
        }
    }

    fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.ip_socket(|s, _| s.set_broadcast(on))
    }

    fn join_group(&self, group: IpAddr, interface: MulticastInterface) -> io::Result<()> {
        self.ip_socket(|s, _| match Membership::of(group, interface)? {
            Membership::V4(g, i) => s.join_multicast_v4(&g, &i),
            Membership::V6(g, i) => s.join_multicast_v6(&g, i),
        })
    }

    fn leave_group(&self, group: IpAddr, interface: MulticastInterface) -> io::Result<()> {
        self.ip_socket(|s, _| match Membership::of(group, interface)? {
            Membership::V4(g, i) => s.leave_multicast_v4(&g, &i),
            Membership::V6(g, i) => s.leave_multicast_v6(&g, i),
        })
    }

    fn set_multicast_ttl(&self, ttl: u32) -> io::Result<()> {
        self.ip_socket(|s, v6| {
            if v6 {
                s.set_multicast_hops_v6(ttl)
            } else {
                s.set_multicast_ttl_v4(ttl)
            }
        })
    }

    fn set_multicast_loopback(&self, on: bool) -> io::Result<()> {
        self.ip_socket(|s, v6| {
            if v6 {
                s.set_multicast_loop_v6(on)
            } else {
                s.set_multicast_loop_v4(on)
            }
        })
    }

    fn set_multicast_interface(&self, interface: MulticastInterface) -> io::Result<()> {
        let Kind::Udp { v6, v6_only } = self.kind else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let any_v4 = std::net::Ipv4Addr::UNSPECIFIED;
        self.with_socket(|s| match (interface, v6) {
            (MulticastInterface::Any, false) => s.set_multicast_if_v4(&any_v4),
            (MulticastInterface::Any, true) => {
                s.set_multicast_if_v6(0)?;
                // A dual-stack socket also sends IPv4 multicast, whose interface is separate.
                if !v6_only {
                    s.set_multicast_if_v4(&any_v4)?;
                }
                Ok(())
            }
            (MulticastInterface::Index(i), true) => s.set_multicast_if_v6(i),
            // On a dual-stack socket the IPv4 interface governs its IPv4 multicast.
            (MulticastInterface::V4(i), _) if !v6_only => s.set_multicast_if_v4(&i),
            (MulticastInterface::V4(_), _) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an IPv4 multicast interface on an IPv6-only socket",
            )),
            (MulticastInterface::Index(_), false) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an IPv6 interface index on an IPv4 socket",
            )),
        })
    }

    fn set_recv_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.with_socket(|s| s.set_recv_buffer_size(bytes))
    }

    fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.with_socket(|s| s.set_send_buffer_size(bytes))
    }

    fn reactor(&self) -> Reactor {
        self.reactor
            .upgrade()
            .expect("datagram sockets are only used while their reactor exists")
    }
}

/// A multicast group with the interface to join or leave it on, of the same family.
enum Membership {
    V4(std::net::Ipv4Addr, std::net::Ipv4Addr),
    V6(std::net::Ipv6Addr, u32),
}

impl Membership {
    /// `group` on `interface` (`Any`: the system's choice), or `InvalidInput` when they are of
    /// different families.
    fn of(group: IpAddr, interface: MulticastInterface) -> io::Result<Membership> {
        match (group, interface) {
            (IpAddr::V4(g), MulticastInterface::V4(i)) => Ok(Membership::V4(g, i)),
            (IpAddr::V4(g), MulticastInterface::Any) => {
                Ok(Membership::V4(g, std::net::Ipv4Addr::UNSPECIFIED))
            }
            (IpAddr::V6(g), MulticastInterface::Index(i)) => Ok(Membership::V6(g, i)),
            (IpAddr::V6(g), MulticastInterface::Any) => Ok(Membership::V6(g, 0)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "multicast group {group} and interface {interface:?} are of different \
                     families"
                ),
            )),
        }
    }
}

fn apply(socket: &Socket, options: &DatagramOptions, context: &str) -> Result<()> {
    let ctx = |what: &str| format!("{what} on {context}");
    if options.reuse_address {
        socket
            .set_reuse_address(true)
            .map_err(|e| Error::io(ctx("set SO_REUSEADDR"), e))?;
    }
    if options.reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| Error::io(ctx("set SO_REUSEPORT"), e))?;
    }
    if options.broadcast {
        socket
            .set_broadcast(true)
            .map_err(|e| Error::io(ctx("set SO_BROADCAST"), e))?;
    }
    if let Some(n) = options.recv_buffer_size {
        socket
            .set_recv_buffer_size(n)
            .map_err(|e| Error::io(ctx("set SO_RCVBUF"), e))?;
    }
    if let Some(n) = options.send_buffer_size {
        socket
            .set_send_buffer_size(n)
            .map_err(|e| Error::io(ctx("set SO_SNDBUF"), e))?;
    }
    Ok(())
}

pub(crate) fn listen_udp(
    reactor: &Reactor,
    addr: impl ToSocketAddrs,
    protocol: Box<dyn DatagramProtocol>,
    options: DatagramOptions,
) -> Result<DatagramPort> {
    let addr: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| Error::io("resolve the UDP address", e))?
        .next()
        .ok_or_else(|| Error::InvalidAddress("the UDP address resolved to nothing".into()))?;
    let context = format!("UDP {addr}");
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking().cloexec(),
        None,
    )
    .map_err(|e| Error::io(format!("create a socket for {context}"), e))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(options.ipv6_only)
            .map_err(|e| Error::io(format!("set IPV6_V6ONLY on {context}"), e))?;
    }
    apply(&socket, &options, &context)?;
    socket
        .bind(&addr.into())
        .map_err(|e| Error::io(format!("bind {context}"), e))?;
    // `start` reads whether the socket is IPv6-only from the socket itself.
    let kind = Kind::Udp {
        v6: addr.is_ipv6(),
        v6_only: false,
    };
    DatagramSocket::start(reactor, socket, kind, protocol, &options, None, None)
}

/// Binds a Unix datagram socket at `path` and, with `remote`, connects it there, before the
/// protocol hears `start_protocol` (so it may write to its peer from there, as in Twisted);
/// a failed connect leaves no socket file and no protocol callback behind.
pub(crate) fn listen_unix_datagram(
    reactor: &Reactor,
    path: &Path,
    remote: Option<&Path>,
    protocol: Box<dyn DatagramProtocol>,
    options: DatagramOptions,
) -> Result<DatagramPort> {
    let shown = path.display().to_string();
    let addr =
        crate::unix::path_sockaddr(path).map_err(|e| Error::InvalidAddress(e.to_string()))?;
    let remote = match remote {
        Some(r) => Some((
            crate::unix::path_sockaddr(r).map_err(|e| Error::InvalidAddress(e.to_string()))?,
            Address::Unix(torsion_reactor::UnixAddress::Path(r.to_owned())),
        )),
        None => None,
    };
    let socket = Socket::new(Domain::UNIX, Type::DGRAM.nonblocking().cloexec(), None)
        .map_err(|e| Error::io("create a Unix datagram socket", e))?;
    apply(&socket, &options, &shown)?;
    let lock = crate::unix::lock_dir(path);
    let file = crate::unix::bind_path(&socket, Type::DGRAM, &addr, path)?;
    drop(lock);
    let peer = match remote {
        Some((to, peer)) => match socket.connect(&to) {
            Ok(()) => Some(peer),
            Err(e) => {
                file.remove();
                return Err(Error::io(format!("connect to {peer}"), e));
            }
        },
        None => None,
    };
    DatagramSocket::start(
        reactor,
        socket,
        Kind::Unix,
        protocol,
        &options,
        Some(file),
        peer,
    )
}
