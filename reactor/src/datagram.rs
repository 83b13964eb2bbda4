//! Datagram contracts: [`DatagramProtocol`] and [`DatagramTransport`] (Twisted's model: one
//! protocol per bound socket, no factory).

use std::fmt;
use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr};

use crate::address::Address;
use crate::reactor::Reactor;

/// Default largest datagram accepted for sending: 65,507 bytes, the IPv4 UDP payload limit.
pub const DEFAULT_MAX_DATAGRAM_SIZE: usize = 65_507;

/// Why a datagram could not be sent. A datagram is never sent partially.
#[derive(Debug)]
#[non_exhaustive]
pub enum DatagramError {
    /// Larger than the transport's maximum datagram size (see
    /// [`DatagramTransport::set_max_datagram_size`]).
    TooLarge {
        /// The datagram's size.
        size: usize,
        /// The limit it exceeded.
        limit: usize,
    },
    /// The socket would block and its send queue is full: the datagram was dropped and counted
    /// in [`DatagramTransport::dropped`].
    QueueFull,
    /// `write` needs a connected transport ([`DatagramTransport::connect`]).
    NotConnected,
    /// The address is not of this transport's family (an IPv6 address on an IPv4 socket, an
    /// IPv4 address, plain or IPv4-mapped, on an IPv6-only socket, a path on a UDP socket, …).
    WrongAddress(Address),
    /// The transport was closed with `stop_listening`.
    Closed,
    /// The operating system refused the datagram.
    Io(io::Error),
}

impl fmt::Display for DatagramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatagramError::TooLarge { size, limit } => write!(
                f,
                "datagram of {size} bytes exceeds the limit of {limit} bytes (split it, or raise the limit)"
            ),
            DatagramError::QueueFull => {
                f.write_str("send queue full: datagram dropped (the peer or network is slower than the sender)")
            }
            DatagramError::NotConnected => {
                f.write_str("write needs a connected transport; call connect first or use write_to")
            }
            DatagramError::WrongAddress(a) => write!(f, "cannot send to {a} from this socket"),
            DatagramError::Closed => f.write_str("the datagram transport is closed"),
            DatagramError::Io(e) => write!(f, "send failed: {e}"),
        }
    }
}

impl std::error::Error for DatagramError {}

/// Which interface a multicast membership uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MulticastInterface {
    /// Let the system choose.
    #[default]
    Any,
    /// An IPv4 interface, by its address.
    V4(Ipv4Addr),
    /// An IPv6 interface, by its index.
    Index(u32),
}

/// The per-socket logic of a datagram service.
///
/// ```
/// use torsion_reactor::{Address, DatagramProtocol, DatagramTransport};
///
/// /// Echo (RFC 862, UDP): send each datagram back to its sender.
/// struct Echo;
///
/// impl DatagramProtocol for Echo {
///     fn datagram_received(&mut self, t: &mut dyn DatagramTransport, data: &[u8], from: &Address) {
///         let _ = t.write_to(data, from);
///     }
/// }
/// ```
pub trait DatagramProtocol: 'static {
    /// The socket is bound and ready.
    fn start_protocol(&mut self, transport: &mut dyn DatagramTransport) {
        let _ = transport;
    }

    /// A datagram arrived from `from` (whole: datagrams are never split or joined).
    fn datagram_received(
        &mut self,
        transport: &mut dyn DatagramTransport,
        data: &[u8],
        from: &Address,
    );

    /// Connected mode only: the peer refused a datagram (ICMP port unreachable).
    fn connection_refused(&mut self, transport: &mut dyn DatagramTransport) {
        let _ = transport;
    }

    /// The socket was closed; called once, last.
    fn stop_protocol(&mut self) {}
}

/// A bound datagram socket as seen by its protocol.
///
/// Sends never block: when the socket cannot take a datagram now, it is queued (up to the
/// transport's queue limit) and sent when the socket is writable; past the limit it is dropped
/// and counted. A transport may hold datagrams written inside `datagram_received` and send
/// them together when the callback returns (the socket transports do, with `sendmmsg`); an
/// error the kernel reports for such a datagram is then logged rather than returned, while
/// size and address checks always fail at once. Socket options a transport does not have
/// return `Unsupported`.
pub trait DatagramTransport {
    /// Sends one datagram to `to`.
    fn write_to(&self, data: &[u8], to: &Address) -> Result<(), DatagramError>;

    /// Sends one datagram made of several buffers to `to`.
    fn write_vectored_to(&self, bufs: &[IoSlice<'_>], to: &Address) -> Result<(), DatagramError> {
        let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.write_to(&joined, to)
    }

    /// Sends one datagram to the connected peer.
    fn write(&self, data: &[u8]) -> Result<(), DatagramError>;

    /// Connects to `to`: `write` then sends there, only its datagrams are delivered, and its
    /// refusals reach [`DatagramProtocol::connection_refused`]. Datagrams already written to
    /// a previous peer (batched or queued) still go to that peer.
    fn connect(&self, to: &Address) -> io::Result<()>;

    /// The bound address (with the real port when bound to port 0).
    fn local_address(&self) -> Address;

    /// The connected peer, if any.
    fn peer_address(&self) -> Option<Address>;

    /// The largest datagram `write_to` accepts.
    fn max_datagram_size(&self) -> usize;

    /// Changes the largest datagram `write_to` accepts.
    fn set_max_datagram_size(&self, size: usize);

    /// Datagrams dropped because the send queue was full.
    fn dropped(&self) -> u64;

    /// Closes the socket; `stop_protocol` follows on the next turn. Idempotent.
    fn stop_listening(&self);

    /// Turns `SO_BROADCAST` on or off.
    fn set_broadcast(&self, _on: bool) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Joins a multicast group. The interface must be of the group's family
    /// ([`MulticastInterface::V4`] for an IPv4 group, [`MulticastInterface::Index`] for an IPv6
    /// one) or `Any`; a mismatch is `InvalidInput`.
    fn join_group(&self, _group: IpAddr, _interface: MulticastInterface) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Leaves a multicast group; the interface is checked as for
    /// [`join_group`](DatagramTransport::join_group).
    fn leave_group(&self, _group: IpAddr, _interface: MulticastInterface) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Multicast time to live (IPv4) or hop limit (IPv6).
    fn set_multicast_ttl(&self, _ttl: u32) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Whether our own multicast datagrams loop back to this host.
    fn set_multicast_loopback(&self, _on: bool) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// The interface outgoing multicast datagrams use. `Any` lets the system choose again;
    /// an interface of a family the socket cannot send is `InvalidInput`.
    fn set_multicast_interface(&self, _interface: MulticastInterface) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// `SO_RCVBUF`.
    fn set_recv_buffer_size(&self, _bytes: usize) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// `SO_SNDBUF`.
    fn set_send_buffer_size(&self, _bytes: usize) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// The reactor this socket lives on.
    fn reactor(&self) -> Reactor;
}

macro_rules! forward_datagram_transport {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl<T: DatagramTransport + ?Sized> DatagramTransport for &T {
            $(fn $name(&self, $($arg: $ty),*) -> $ret { (**self).$name($($arg),*) })*
        }
    };
}

forward_datagram_transport! {
    write_to(data: &[u8], to: &Address) -> Result<(), DatagramError>;
    write_vectored_to(bufs: &[IoSlice<'_>], to: &Address) -> Result<(), DatagramError>;
    write(data: &[u8]) -> Result<(), DatagramError>;
    connect(to: &Address) -> io::Result<()>;
    local_address() -> Address;
    peer_address() -> Option<Address>;
    max_datagram_size() -> usize;
    set_max_datagram_size(size: usize) -> ();
    dropped() -> u64;
    stop_listening() -> ();
    set_broadcast(on: bool) -> io::Result<()>;
    join_group(group: IpAddr, interface: MulticastInterface) -> io::Result<()>;
    leave_group(group: IpAddr, interface: MulticastInterface) -> io::Result<()>;
    set_multicast_ttl(ttl: u32) -> io::Result<()>;
    set_multicast_loopback(on: bool) -> io::Result<()>;
    set_multicast_interface(interface: MulticastInterface) -> io::Result<()>;
    set_recv_buffer_size(bytes: usize) -> io::Result<()>;
    set_send_buffer_size(bytes: usize) -> io::Result<()>;
    reactor() -> Reactor;
}
