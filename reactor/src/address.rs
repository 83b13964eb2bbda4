//! Addresses of connection endpoints.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The address of one end of a connection or of a listening port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// An IPv4 or IPv6 socket address (TCP, TLS over TCP, UDP).
    Inet(SocketAddr),
    /// A Unix-domain socket address.
    Unix(UnixAddress),
    /// One end of an in-memory connection made by the test kit; the number tells ends apart.
    Memory(u64),
}

/// The address of a Unix-domain socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UnixAddress {
    /// A socket bound to a path in the file system.
    Path(PathBuf),
    /// A Linux abstract socket name (without the leading NUL byte).
    Abstract(Vec<u8>),
    /// An unbound socket (the usual client side of a Unix connection).
    Unnamed,
}

impl Address {
    /// The IP socket address, if this is an [`Address::Inet`].
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(a) => Some(*a),
            _ => None,
        }
    }

    /// The port of an [`Address::Inet`]; `None` for other kinds.
    pub fn port(&self) -> Option<u16> {
        self.socket_addr().map(|a| a.port())
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Inet(a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => write!(f, "{a}"),
            Address::Unix(UnixAddress::Path(p)) => write!(f, "unix:{}", p.display()),
            Address::Unix(UnixAddress::Abstract(name)) => {
                write!(f, "unix:@{}", String::from_utf8_lossy(name))
            }
            Address::Unix(UnixAddress::Unnamed) => f.write_str("unix:(unnamed)"),
            Address::Memory(n) => write!(f, "memory:{n}"),
        }
    }
}
