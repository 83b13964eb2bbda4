//! torsion's transports: TCP and Unix stream sockets turned into [`Transport`]s.
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

#![forbid(unsafe_code)]

mod connector;
mod endpoint;
mod listener;
mod socket;
mod tcp;
mod unix;

use std::net::ToSocketAddrs;
use std::path::Path;

use torsion_reactor::{ClientFactory, Connector, Reactor, Result, SharedFactory};

pub use connector::{ConnectOptions, DEFAULT_CONNECT_TIMEOUT};
pub use endpoint::{EndpointError, ServerEndpoint};
pub use listener::ListeningPort;
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

    /// Listens on a Unix socket path (a stale file from a dead server is replaced).
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

    /// Connects to a Unix socket path.
    fn connect_unix(&self, path: impl AsRef<Path>, factory: impl ClientFactory) -> Connector;

    /// Connects to a Linux abstract socket name.
    fn connect_unix_abstract(&self, name: &[u8], factory: impl ClientFactory) -> Connector;
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
        unix::listen_abstract(self, name, factory.into(), UnixListenOptions::default())
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
}
