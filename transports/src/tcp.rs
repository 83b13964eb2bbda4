//! TCP: listening ports and outgoing connections.

use std::net::{SocketAddr, ToSocketAddrs};

use socket2::{Domain, Socket, Type};
use torsion_reactor::{
    Address, ClientFactory, ConnectionConfig, Connector, Error, Reactor, Result, SharedFactory,
};

use crate::connector::{ConnectOptions, ConnectorInner, Target};
use crate::listener::{Listener, ListeningPort};
use crate::socket::SocketKind;

/// Default listen backlog (Twisted's).
pub const DEFAULT_BACKLOG: i32 = 50;

/// Options of a TCP listening port.
#[derive(Clone, Debug)]
pub struct TcpListenOptions {
    /// Queue of connections the kernel holds before `accept`. Default 50.
    pub backlog: i32,
    /// `SO_REUSEADDR` (rebind while old connections linger in TIME_WAIT). Default true.
    pub reuse_address: bool,
    /// `SO_REUSEPORT` (several sockets, possibly in several processes, share the port and the
    /// kernel balances connections between them). Default false.
    pub reuse_port: bool,
    /// For an IPv6 address: `true` accepts IPv6 only (`IPV6_V6ONLY`), `false` also accepts
    /// IPv4 as mapped addresses (dual stack). Default true, so that binding `[::]` and
    /// `0.0.0.0` on the same port both work; ignored for IPv4 addresses.
    pub ipv6_only: bool,
    /// Set `TCP_NODELAY` on accepted connections. Default true.
    pub no_delay: bool,
    /// Watermarks and limits of accepted connections.
    pub config: ConnectionConfig,
}

impl Default for TcpListenOptions {
    fn default() -> Self {
        TcpListenOptions {
            backlog: DEFAULT_BACKLOG,
            reuse_address: true,
            reuse_port: false,
            ipv6_only: true,
            no_delay: true,
            config: ConnectionConfig::default(),
        }
    }
}

pub(crate) fn listen(
    reactor: &Reactor,
    addr: impl ToSocketAddrs,
    factory: SharedFactory,
    options: TcpListenOptions,
) -> Result<ListeningPort> {
    let addr: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| Error::io("resolve the listening address", e))?
        .next()
        .ok_or_else(|| Error::InvalidAddress("the listening address resolved to nothing".into()))?;
    let context = |what: &str| format!("{what} {addr}");
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )
    .map_err(|e| Error::io(context("create a socket for"), e))?;
    socket
        .set_reuse_address(options.reuse_address)
        .map_err(|e| Error::io(context("set SO_REUSEADDR on"), e))?;
    if options.reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| Error::io(context("set SO_REUSEPORT on"), e))?;
    }
    if addr.is_ipv6() {
        socket
            .set_only_v6(options.ipv6_only)
            .map_err(|e| Error::io(context("set IPV6_V6ONLY on"), e))?;
    }
    socket
        .bind(&addr.into())
        .map_err(|e| Error::io(context("bind"), e))?;
    socket
        .listen(options.backlog)
        .map_err(|e| Error::io(context("listen on"), e))?;
    let local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    Listener::start(
        reactor,
        socket,
        SocketKind::Tcp,
        factory,
        Address::Inet(local),
        options.no_delay,
        options.config,
        None,
    )
}

pub(crate) fn connect(
    reactor: &Reactor,
    host: &str,
    port: u16,
    factory: Box<dyn ClientFactory>,
    options: ConnectOptions,
) -> Connector {
    ConnectorInner::start(
        reactor,
        Target::Tcp {
            host: host.to_owned(),
            port,
        },
        options,
        factory,
    )
}
