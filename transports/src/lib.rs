//! torsion's transports: TCP and Unix stream sockets turned into [`Transport`]s, TLS over
//! either ([`tls`]), UDP and Unix datagram sockets, and endpoint strings ([`ServerEndpoint`],
//! [`ClientEndpoint`]).
//!
//! Import [`ReactorExt`] (or `torsion::prelude::*`) and the reactor gains Twisted's entry
//! points:
//!
//! ```no_run
//! use torsion_reactor::prelude::*;
//! use torsion_transports::ReactorExt;
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
//!         transport.write(data);
//!     }
//! }
//!
//! let reactor = Reactor::new()?;
//! let port = reactor.listen_tcp("127.0.0.1:0", |_: &Address| Echo)?;
//! println!("listening on {}", port.local_address());
//! reactor.run()?;
//! # Ok::<(), torsion_reactor::Error>(())
//! ```
//!
//! Every connection runs on [`StreamConnection`](torsion_reactor::StreamConnection), the same
//! state machine the in-memory test kit drives, so buffering, flow control, close handshakes and
//! panic isolation are identical on TCP, Unix sockets and in tests. This crate adds the
//! sockets: non-blocking accept with an adaptive batch and a descriptor-exhaustion policy (see
//! [`listener`](crate::ListeningPort)), connectors that resolve names off the reactor thread
//! and try every address, and `send(MSG_NOSIGNAL)` so a reset peer can never kill the process
//! with SIGPIPE.
//!
//! [`Transport`]: torsion_reactor::Transport

// One system call has no safe binding (`setsockopt(SO_PASSRIGHTS)` in `socket.rs`, allowed
// there alone); everything else goes through rustix and socket2.
#![deny(unsafe_code)]

mod connector;
mod datagram;
mod endpoint;
mod listener;
mod socket;
mod tcp;
pub mod tls;
mod unix;

use std::net::ToSocketAddrs;
use std::path::Path;

use torsion_reactor::{ClientFactory, Connector, DatagramProtocol, Reactor, Result, SharedFactory};

pub use connector::{ConnectOptions, Resolver, DEFAULT_CONNECT_TIMEOUT};
pub use datagram::{DatagramOptions, DatagramPort, DATAGRAM_READ_SIZE, QUEUE_ENTRY_OVERHEAD};
pub use endpoint::{
    one_line, ClientEndpoint, ClientTlsFiles, EndpointError, ServerEndpoint, TlsFiles,
};
pub use listener::ListeningPort;
pub use socket::UNIX_READ_SIZE;
pub use tcp::{TcpListenOptions, DEFAULT_BACKLOG};
pub use unix::UnixListenOptions;

/// Twisted-style listen and connect entry points, implemented for [`Reactor`].
pub trait ReactorExt {
    /// Listens for TCP connections on `addr` (port 0 picks a free port; see
    /// [`ListeningPort::local_address`]) with default [`TcpListenOptions`].
    fn listen_tcp(
        &self,
        addr: impl ToSocketAddrs,
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort>;

    /// Listens for TCP connections with explicit options.
    fn listen_tcp_with(
        &self,
        addr: impl ToSocketAddrs,
        factory: impl Into<SharedFactory>,
        options: TcpListenOptions,
    ) -> Result<ListeningPort>;

    /// Connects to `host:port` (a name or an IP literal) with default [`ConnectOptions`].
    /// Returns at once; the outcome reaches `factory`.
    fn connect_tcp(&self, host: &str, port: u16, factory: impl ClientFactory) -> Connector;

    /// Connects to `host:port` with explicit options (timeout, bind address, …).
    fn connect_tcp_with(
        &self,
        host: &str,
        port: u16,
        factory: impl ClientFactory,
        options: ConnectOptions,
    ) -> Connector;

    /// Listens on a Unix socket path. A stale socket file from a dead server is replaced; any
    /// other file at the path is left alone and listening fails.
    fn listen_unix(
        &self,
        path: impl AsRef<Path>,
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort>;

    /// Listens on a Unix socket path with explicit options (file mode, backlog, …).
    fn listen_unix_with(
        &self,
        path: impl AsRef<Path>,
        factory: impl Into<SharedFactory>,
        options: UnixListenOptions,
    ) -> Result<ListeningPort>;

    /// Listens on a Linux abstract socket name (no file system entry).
    fn listen_unix_abstract(
        &self,
        name: &[u8],
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort>;

    /// [`listen_unix_abstract`](Self::listen_unix_abstract) with explicit options (backlog,
    /// connection limits; an abstract name has no file, so `mode` is ignored).
    fn listen_unix_abstract_with(
        &self,
        name: &[u8],
        factory: impl Into<SharedFactory>,
        options: UnixListenOptions,
    ) -> Result<ListeningPort>;

    /// Connects to a Unix socket path. A server whose accept queue is full fails the attempt
    /// at once with [`CloseReason::ConnectRefused`](torsion_reactor::CloseReason::ConnectRefused)
    /// (the kernel answers `EAGAIN`; there is nothing to wait for).
    fn connect_unix(&self, path: impl AsRef<Path>, factory: impl ClientFactory) -> Connector;

    /// Connects to a Linux abstract socket name.
    fn connect_unix_abstract(&self, name: &[u8], factory: impl ClientFactory) -> Connector;

    /// Binds a UDP socket on `addr` (port 0 picks a free port) and runs `protocol` on it.
    fn listen_udp(
        &self,
        addr: impl ToSocketAddrs,
        protocol: impl DatagramProtocol,
    ) -> Result<DatagramPort>;

    /// Binds a UDP socket with explicit options (buffer sizes, broadcast, queue limit, …).
    fn listen_udp_with(
        &self,
        addr: impl ToSocketAddrs,
        protocol: impl DatagramProtocol,
        options: DatagramOptions,
    ) -> Result<DatagramPort>;

    /// Binds a UDP socket that shares its port with other sockets and processes
    /// (`SO_REUSEADDR` + `SO_REUSEPORT`), as multicast receivers do.
    fn listen_multiple(
        &self,
        addr: impl ToSocketAddrs,
        protocol: impl DatagramProtocol,
    ) -> Result<DatagramPort>;

    /// Binds a Unix datagram socket on `path`. A stale socket file from a dead server is
    /// replaced; any other file at the path is left alone and binding fails.
    fn listen_unix_datagram(
        &self,
        path: impl AsRef<Path>,
        protocol: impl DatagramProtocol,
    ) -> Result<DatagramPort>;

    /// Binds a Unix datagram socket on `path` with explicit options (queue limit, buffers).
    fn listen_unix_datagram_with(
        &self,
        path: impl AsRef<Path>,
        protocol: impl DatagramProtocol,
        options: DatagramOptions,
    ) -> Result<DatagramPort>;

    /// Binds a Unix datagram socket on `local` and connects it to `remote`: `write` sends
    /// there and only its datagrams are delivered. The socket is connected before the
    /// protocol hears `start_protocol`, so it may write its first request there; if the
    /// connect fails, the error is returned, no protocol callback runs and no socket file
    /// is left behind.
    fn connect_unix_datagram(
        &self,
        local: impl AsRef<Path>,
        remote: impl AsRef<Path>,
        protocol: impl DatagramProtocol,
    ) -> Result<DatagramPort>;
}

impl ReactorExt for Reactor {
    fn listen_tcp(
        &self,
        addr: impl ToSocketAddrs,
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort> {
        tcp::listen(self, addr, factory.into(), TcpListenOptions::default())
    }

    fn listen_tcp_with(
        &self,
        addr: impl ToSocketAddrs,
        factory: impl Into<SharedFactory>,
        options: TcpListenOptions,
    ) -> Result<ListeningPort> {
        tcp::listen(self, addr, factory.into(), options)
    }

    fn connect_tcp(&self, host: &str, port: u16, factory: impl ClientFactory) -> Connector {
        tcp::connect(
            self,
            host,
            port,
            Box::new(factory),
            ConnectOptions::default(),
        )
    }

    fn connect_tcp_with(
        &self,
        host: &str,
        port: u16,
        factory: impl ClientFactory,
        options: ConnectOptions,
    ) -> Connector {
        tcp::connect(self, host, port, Box::new(factory), options)
    }

    fn listen_unix(
        &self,
        path: impl AsRef<Path>,
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort> {
        unix::listen(
            self,
            path.as_ref(),
            factory.into(),
            UnixListenOptions::default(),
        )
    }

    fn listen_unix_with(
        &self,
        path: impl AsRef<Path>,
        factory: impl Into<SharedFactory>,
        options: UnixListenOptions,
    ) -> Result<ListeningPort> {
        unix::listen(self, path.as_ref(), factory.into(), options)
    }

    fn listen_unix_abstract(
        &self,
        name: &[u8],
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort> {
        self.listen_unix_abstract_with(name, factory, UnixListenOptions::default())
    }

    fn listen_unix_abstract_with(
        &self,
        name: &[u8],
        factory: impl Into<SharedFactory>,
        options: UnixListenOptions,
    ) -> Result<ListeningPort> {
        unix::listen_abstract(self, name, factory.into(), options)
    }

    fn connect_unix(&self, path: impl AsRef<Path>, factory: impl ClientFactory) -> Connector {
        unix::connect(
            self,
            connector::UnixTarget::Path(path.as_ref().to_owned()),
            Box::new(factory),
            ConnectOptions::default(),
        )
    }

    fn connect_unix_abstract(&self, name: &[u8], factory: impl ClientFactory) -> Connector {
        unix::connect(
            self,
            connector::UnixTarget::Abstract(name.to_vec()),
            Box::new(factory),
            ConnectOptions::default(),
        )
    }

    fn listen_udp(
        &self,
        addr: impl ToSocketAddrs,
        protocol: impl DatagramProtocol,
    ) -> Result<DatagramPort> {
        datagram::listen_udp(self, addr, Box::new(protocol), DatagramOptions::default())
    }

    fn listen_udp_with(
        &self,
        addr: impl ToSocketAddrs,
        protocol: impl DatagramProtocol,
        options: DatagramOptions,
    ) -> Result<DatagramPort> {
        datagram::listen_udp(self, addr, Box::new(protocol), options)
    }

    fn listen_multiple(
        &self,
        addr: impl ToSocketAddrs,
        protocol: impl DatagramProtocol,
    ) -> Result<DatagramPort> {
        let options = DatagramOptions {
            reuse_address: true,
            reuse_port: true,
            ..DatagramOptions::default()
        };
        datagram::listen_udp(self, addr, Box::new(protocol), options)
    }

    fn listen_unix_datagram(
        &self,
        path: impl AsRef<Path>,
        protocol: impl DatagramProtocol,
    ) -> Result<DatagramPort> {
        datagram::listen_unix_datagram(
            self,
            path.as_ref(),
            None,
            Box::new(protocol),
            DatagramOptions::default(),
        )
    }

    fn listen_unix_datagram_with(
        &self,
        path: impl AsRef<Path>,
        protocol: impl DatagramProtocol,
        options: DatagramOptions,
    ) -> Result<DatagramPort> {
        datagram::listen_unix_datagram(self, path.as_ref(), None, Box::new(protocol), options)
    }

    fn connect_unix_datagram(
        &self,
        local: impl AsRef<Path>,
        remote: impl AsRef<Path>,
        protocol: impl DatagramProtocol,
    ) -> Result<DatagramPort> {
        datagram::listen_unix_datagram(
            self,
            local.as_ref(),
            Some(remote.as_ref()),
            Box::new(protocol),
            DatagramOptions::default(),
        )
    }
}
