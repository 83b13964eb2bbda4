//! Outgoing connections: the connector shared by TCP and Unix.
//!
//! An attempt resolves the host off the reactor thread (IP literals skip this; the
//! [`Resolver`] in [`ConnectOptions::resolver`] is the system's unless you give one), then tries
//! each resolved address in order until one connects. The whole attempt — resolution and every
//! address — is bounded by the connect timeout. Each outcome reaches the
//! [`ClientFactory`]: `started_connecting`, then either a protocol (and later
//! `client_connection_lost`) or `client_connection_failed` with a distinct reason. A factory
//! that builds no protocol for the new connection fails the attempt with
//! [`CloseReason::NoProtocol`] (or [`CloseReason::Panic`] if `build_protocol` panicked), so a
//! reconnecting factory always hears how its attempt ended. With a bind address
//! ([`ConnectOptions::bind`]), only the resolved addresses of its family are tried.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use torsion_reactor::{
    Address, ClientFactory, CloseReason, ConnectionConfig, Connector, ConnectorOps, DelayedCall,
    Interest, Reactor, Readiness, Registered, Source, StreamConnection, Transport, TransportHandle,
    UnixAddress, WeakReactor,
};

use crate::socket::{SocketIo, SocketKind};

/// Default time a connection attempt may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How an attempt turns a host name into addresses (Twisted's `IHostnameResolver`): the
/// system's resolver (`getaddrinfo`) by default, or a function of your own, such as a DNS
/// client, or a fixed table in a test that must not reach the network.
///
/// It runs on a thread of its own for each attempt, never on the reactor's, and is not asked
/// about IP literals. An error fails the attempt with
/// [`CloseReason::ResolutionFailed`] carrying its message; the addresses are tried in the
/// order given.
///
/// ```
/// use std::io;
/// use std::net::SocketAddr;
/// use torsion_transports::Resolver;
///
/// // `db.internal` is 10.0.0.7; everything else is unknown.
/// let table = Resolver::new(|host, port| match host {
///     "db.internal" => Ok(vec![SocketAddr::from(([10, 0, 0, 7], port))]),
///     _ => Err(io::Error::new(io::ErrorKind::NotFound, format!("{host}: not in the table"))),
/// });
/// assert_eq!(table.resolve("db.internal", 5432)?, [SocketAddr::from(([10, 0, 0, 7], 5432))]);
/// assert!(table.resolve("example.com", 80).is_err());
/// # Ok::<(), io::Error>(())
/// ```
#[derive(Clone)]
pub struct Resolver(Option<Arc<ResolveFn>>);

type ResolveFn = dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync;

impl Resolver {
    /// The system's resolver (`getaddrinfo`, through [`ToSocketAddrs`]).
    pub fn system() -> Self {
        Resolver(None)
    }

    /// A resolver that asks `f` for the addresses of a host and port.
    pub fn new(
        f: impl Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    ) -> Self {
        Resolver(Some(Arc::new(f)))
    }

    /// The addresses of `host` and `port` (blocking: attempts call it off the reactor thread).
    pub fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        match &self.0 {
            None => (host, port).to_socket_addrs().map(Iterator::collect),
            Some(f) => f(host, port),
        }
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::system()
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Resolver(custom)"
        } else {
            "Resolver(system)"
        })
    }
}

/// Options of an outgoing connection.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Time the whole attempt (resolution and every address) may take. Default 30 s.
    pub timeout: Duration,
    /// Local address to bind before connecting (TCP only). Default: none.
    ///
    /// A socket has one address family, so only the destination's addresses of the bind
    /// address's family are tried (a host name that resolves to both families connects over
    /// the bind address's). A destination with none, such as `::1` with the bind address
    /// `127.0.0.1`, fails the attempt at once with a [`CloseReason::Io`] error of kind
    /// [`InvalidInput`](std::io::ErrorKind::InvalidInput) whose message names the bind
    /// address and the families.
    pub bind: Option<SocketAddr>,
    /// Set `TCP_NODELAY` on the connection. Default true.
    pub no_delay: bool,
    /// Watermarks and limits of the connection.
    pub config: ConnectionConfig,
    /// How a host name is resolved (TCP only). Default: the system's resolver.
    pub resolver: Resolver,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: DEFAULT_CONNECT_TIMEOUT,
            bind: None,
            no_delay: true,
            config: ConnectionConfig::default(),
            resolver: Resolver::system(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Target {
    Tcp { host: String, port: u16 },
    Unix(UnixTarget),
}

#[derive(Clone, Debug)]
pub(crate) enum UnixTarget {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

enum State {
    Idle,
    Resolving,
    Connecting {
        reg: Registered<Socket>,
        addr: Address,
    },
    /// Connected: the protocol is being built and started (`build_protocol`,
    /// `connection_made`). A `disconnect` meanwhile closes the connection once it started.
    Starting,
    Connected(TransportHandle),
}

pub(crate) struct ConnectorInner {
    me: Weak<ConnectorInner>,
    reactor: WeakReactor,
    target: Target,
    options: ConnectOptions,
    factory: RefCell<Box<dyn ClientFactory>>,
    state: RefCell<State>,
    remaining: RefCell<VecDeque<SockAddr>>,
    last_error: RefCell<Option<io::Error>>,
    timer: RefCell<Option<DelayedCall>>,
    /// Bumped by every attempt, so a late resolution result for an abandoned attempt is
    /// ignored.
    attempt: Cell<u64>,
    /// A `connect` call is waiting for its turn to begin an attempt.
    begin_pending: Cell<bool>,
    /// `disconnect` was called while [`State::Starting`].
    disconnect_pending: Cell<bool>,
}

thread_local! {
    /// Connectors waiting for a resolver thread, by id (the resolver's result comes back
    /// through `call_from_thread`, which can only carry `Send` data).
    static RESOLVING: RefCell<HashMap<u64, Weak<ConnectorInner>>> = RefCell::new(HashMap::new());
}

static NEXT_RESOLVE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl ConnectorInner {
    pub(crate) fn start(
        reactor: &Reactor,
        target: Target,
        options: ConnectOptions,
        factory: Box<dyn ClientFactory>,
    ) -> Connector {
        let inner = Rc::new_cyclic(|me| ConnectorInner {
            me: me.clone(),
            reactor: reactor.downgrade(),
            target,
            options,
            factory: RefCell::new(factory),
            state: RefCell::new(State::Idle),
            remaining: RefCell::new(VecDeque::new()),
            last_error: RefCell::new(None),
            timer: RefCell::new(None),
            attempt: Cell::new(0),
            begin_pending: Cell::new(false),
            disconnect_pending: Cell::new(false),
        });
        inner.connect();
        Connector::new(inner)
    }

    fn connector(&self) -> Connector {
        Connector::new(self.me.upgrade().expect("connector alive"))
    }

    fn with_factory(&self, f: impl FnOnce(&mut dyn ClientFactory, &Connector)) {
        let connector = self.connector();
        let Ok(mut factory) = self.factory.try_borrow_mut() else {
            tracing::error!("client factory re-entered; event dropped");
            return;
        };
        if let Err(msg) = torsion_reactor::catch_unwind_message(|| f(&mut **factory, &connector)) {
            tracing::error!(panic = %msg, "client factory callback panicked");
        }
    }

    fn begin(self: Rc<Self>, reactor: &Reactor) {
        self.begin_pending.set(false);
        if !matches!(*self.state.borrow(), State::Idle) {
            return;
        }
        *self.state.borrow_mut() = State::Resolving;
        let attempt = self.attempt.get() + 1;
        self.attempt.set(attempt);
        self.last_error.borrow_mut().take();
        // The timer holds the connector strongly: an attempt reports its outcome even when the
        // user dropped the `Connector` handle. It is cancelled (and released) when the attempt
        // ends.
        let me = self.clone();
        let timer = reactor.call_later(self.options.timeout, move |_| {
            if me.attempt.get() == attempt && me.is_attempting() {
                me.fail(CloseReason::ConnectTimedOut);
            }
        });
        *self.timer.borrow_mut() = Some(timer);
        self.with_factory(|f, c| f.started_connecting(c));
        if !matches!(*self.state.borrow(), State::Resolving) {
            return; // the factory stopped the attempt
        }
        match &self.target {
            // A path or name that cannot be a socket address is not a resolution failure.
            Target::Unix(UnixTarget::Path(path)) => match crate::unix::path_sockaddr(path) {
                Ok(addr) => self.resolved(Ok(vec![addr])),
                Err(e) => self.fail(CloseReason::Io(Arc::new(e))),
            },
            Target::Unix(UnixTarget::Abstract(name)) => match abstract_sockaddr(name) {
                Ok(addr) => self.resolved(Ok(vec![addr])),
                Err(e) => self.fail(CloseReason::Io(Arc::new(e))),
            },
            Target::Tcp { host, port } => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if let Ok(ip) = host.parse::<IpAddr>() {
                    self.resolved(Ok(vec![SocketAddr::new(ip, *port).into()]));
                } else {
                    self.resolve_off_thread(reactor, host.to_owned(), *port, attempt);
                }
            }
        }
    }

    fn resolve_off_thread(&self, reactor: &Reactor, host: String, port: u16, attempt: u64) {
        let id = NEXT_RESOLVE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RESOLVING.with(|m| m.borrow_mut().insert(id, self.me.clone()));
        let handle = reactor.handle();
        let resolver = self.options.resolver.clone();
        let spawned = std::thread::Builder::new()
            .name("torsion-resolver".into())
            .spawn(move || {
                let result = resolver.resolve(&host, port).map_err(|e| e.to_string());
                let _ = handle.call_from_thread(move |_| {
                    let connector = RESOLVING.with(|m| m.borrow_mut().remove(&id));
                    if let Some(c) = connector.and_then(|w| w.upgrade()) {
                        if c.attempt.get() == attempt
                            && matches!(*c.state.borrow(), State::Resolving)
                        {
                            c.resolved(result.map(|v| v.into_iter().map(SockAddr::from).collect()));
                        }
                    }
                });
            });
        if let Err(e) = spawned {
            RESOLVING.with(|m| m.borrow_mut().remove(&id));
            self.fail(CloseReason::ResolutionFailed(format!(
                "could not start a resolver thread: {e}"
            )));
        }
    }

    fn resolved(&self, result: Result<Vec<SockAddr>, String>) {
        match result {
            Ok(addrs) if addrs.is_empty() => self.fail(CloseReason::ResolutionFailed(
                "the name resolved to no addresses".into(),
            )),
            Ok(addrs) => {
                let addrs = match (&self.target, self.options.bind) {
                    (Target::Tcp { .. }, Some(bind)) => {
                        match addresses_for_bind(addrs, bind, &self.destination()) {
                            Ok(addrs) => addrs,
                            Err(e) => {
                                self.fail(CloseReason::Io(Arc::new(e)));
                                return;
                            }
                        }
                    }
                    _ => addrs,
                };
                *self.remaining.borrow_mut() = addrs.into();
                self.try_next();
            }
            Err(msg) => self.fail(CloseReason::ResolutionFailed(msg)),
        }
    }

    /// Starts a non-blocking connect to the next address, or fails with the last error.
    fn try_next(&self) {
        let Some(reactor) = self.reactor.upgrade() else {
            return;
        };
        loop {
            let Some(addr) = self.remaining.borrow_mut().pop_front() else {
                let reason = match self.last_error.borrow_mut().take() {
                    Some(e) => CloseReason::from_connect_io(e),
                    None => CloseReason::ConnectRefused,
                };
                self.fail(reason);
                return;
            };
            match self.open(&addr) {
                Ok(socket) => {
                    let address = sockaddr_to_address(&addr);
                    match Registered::new_edge_triggered(&reactor, socket, Interest::WRITABLE) {
                        Ok(reg) => {
                            reg.set_source(self.me.upgrade().expect("alive"));
                            *self.state.borrow_mut() = State::Connecting { reg, addr: address };
                            return;
                        }
                        Err(e) => {
                            *self.last_error.borrow_mut() = Some(io::Error::other(e.to_string()))
                        }
                    }
                }
                Err(e) => *self.last_error.borrow_mut() = Some(e),
            }
        }
    }

    fn open(&self, addr: &SockAddr) -> io::Result<Socket> {
        let kind =
            match self.target {
                Target::Tcp { .. } => Domain::for_address(addr.as_socket().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "not an IP address")
                })?),
                Target::Unix(_) => Domain::UNIX,
            };
        let socket = Socket::new(kind, Type::STREAM.nonblocking().cloexec(), None)?;
        if let (Some(bind), Target::Tcp { .. }) = (self.options.bind, &self.target) {
            // The kernel's error alone (say EADDRNOTAVAIL) would not say which address.
            socket.bind(&bind.into()).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot bind to {}: {e}", show_bind(bind)))
            })?;
        }
        match socket.connect(addr) {
            Ok(()) => Ok(socket),
            // A Unix socket connects (or fails) at once; EAGAIN means the server's accept
            // queue is full, and the socket stays unconnected (waiting on it would spin on
            // its hang-up until the timeout). Like a TCP server refusing: try the next address.
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    && matches!(self.target, Target::Unix(_)) =>
            {
                Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "the server's accept queue is full (EAGAIN)",
                ))
            }
            Err(e)
                if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error())
                    || e.kind() == io::ErrorKind::WouldBlock =>
            {
                Ok(socket)
            }
            Err(e) => Err(e),
        }
    }

    fn is_attempting(&self) -> bool {
        matches!(
            *self.state.borrow(),
            State::Resolving | State::Connecting { .. }
        )
    }

    fn fail(&self, reason: CloseReason) {
        let old = std::mem::replace(&mut *self.state.borrow_mut(), State::Idle);
        drop(old); // closes a socket in progress
        self.remaining.borrow_mut().clear();
        if let Some(t) = self.timer.borrow_mut().take() {
            t.cancel();
        }
        tracing::debug!(destination = %self.destination(), reason = %reason, "connection failed");
        self.with_factory(|f, c| f.client_connection_failed(c, reason));
    }

    fn connected(&self, reactor: &Reactor) {
        let State::Connecting { reg, addr } =
            std::mem::replace(&mut *self.state.borrow_mut(), State::Starting)
        else {
            return;
        };
        self.disconnect_pending.set(false);
        if let Some(t) = self.timer.borrow_mut().take() {
            t.cancel();
        }
        let socket = reg.get_ref();
        let (kind, local) = match &self.target {
            Target::Tcp { .. } => {
                if self.options.no_delay {
                    let _ = socket.set_tcp_nodelay(true);
                }
                let local = socket
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .map(Address::Inet)
                    .unwrap_or(Address::Unix(UnixAddress::Unnamed));
                (SocketKind::Tcp, local)
            }
            Target::Unix(_) => (SocketKind::Unix, Address::Unix(UnixAddress::Unnamed)),
        };
        let mut built = Ok(None);
        self.with_factory(|f, _| {
            built = torsion_reactor::catch_unwind_message(|| f.build_protocol(&addr));
        });
        let protocol = match built {
            Ok(Some(protocol)) => protocol,
            Ok(None) => {
                tracing::debug!(peer = %addr, "client factory built no protocol; closing");
                drop(reg);
                self.fail(CloseReason::NoProtocol);
                return;
            }
            Err(msg) => {
                tracing::error!(peer = %addr, panic = %msg, "client factory panicked in build_protocol; closing");
                drop(reg);
                self.fail(CloseReason::Panic(msg));
                return;
            }
        };
        tracing::debug!(peer = %addr, local = %local, "connected");
        // Held strongly until the connection ends, so `client_connection_lost` is delivered
        // whether or not the user kept the `Connector`.
        let me = self.me.upgrade().expect("alive");
        let lost = Rc::new(Cell::new(false));
        let lost_in_hook = lost.clone();
        let conn = StreamConnection::start(
            reactor,
            SocketIo::new(reg, kind),
            protocol,
            addr,
            local,
            self.options.config.clone(),
            Some(Box::new(move |reason: &CloseReason| {
                lost_in_hook.set(true);
                *me.state.borrow_mut() = State::Idle;
                let reason = reason.clone();
                me.with_factory(|f, conn| f.client_connection_lost(conn, reason));
            })),
        );
        // Connected until lost, closing included (so `connect` is ignored meanwhile), unless
        // it was already lost during `connection_made` (then `on_lost` reset the state).
        if !lost.get() {
            let handle = conn.handle();
            *self.state.borrow_mut() = State::Connected(handle.clone());
            if self.disconnect_pending.take() {
                handle.lose_connection();
            }
        }
    }
}

impl Source for ConnectorInner {
    fn reactor_closing(&self) {
        self.stop_connecting();
    }

    fn reactor_dropped(&self) {
        drop(std::mem::replace(
            &mut *self.state.borrow_mut(),
            State::Idle,
        ));
    }

    fn ready(&self, _readiness: Readiness) {
        let Some(reactor) = self.reactor.upgrade() else {
            return;
        };
        let outcome = match &*self.state.borrow() {
            State::Connecting { reg, .. } => match reg.get_ref().take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match reg.get_ref().peer_addr() {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        return; // spurious wake-up: still connecting
                    }
                    Err(e) => Err(e),
                },
            },
            _ => return,
        };
        match outcome {
            Ok(()) => self.connected(&reactor),
            Err(e) => {
                *self.last_error.borrow_mut() = Some(e);
                // Drop the failed socket, then try the next address.
                *self.state.borrow_mut() = State::Resolving;
                self.try_next();
            }
        }
    }
}

impl ConnectorOps for ConnectorInner {
    fn connect(&self) {
        let Some(reactor) = self.reactor.upgrade() else {
            return;
        };
        // Ignored now, not when the deferred start runs: an attempt in progress may have
        // ended by then (a Unix path that does not exist fails at once), and starting another
        // would make `connect` from `started_connecting` retry for ever.
        let busy = !matches!(*self.state.borrow(), State::Idle);
        if busy || self.begin_pending.replace(true) {
            return;
        }
        let me = self.me.upgrade().expect("alive");
        // Deferred: `connect` is typically called from a factory hook, which must return first.
        reactor.call_soon(move |r| me.begin(r));
    }

    fn stop_connecting(&self) {
        if self.is_attempting() {
            let me = self.me.upgrade().expect("alive");
            let Some(reactor) = self.reactor.upgrade() else {
                return;
            };
            // Cancel now (no socket event may slip in), report on the next turn.
            let old = std::mem::replace(&mut *self.state.borrow_mut(), State::Idle);
            drop(old);
            self.attempt.set(self.attempt.get() + 1);
            if let Some(t) = self.timer.borrow_mut().take() {
                t.cancel();
            }
            reactor.call_soon(move |_| {
                me.with_factory(|f, c| f.client_connection_failed(c, CloseReason::Aborted))
            });
        }
    }

    fn disconnect(&self) {
        let handle = match &*self.state.borrow() {
            State::Connected(h) => Some(h.clone()),
            State::Starting => {
                self.disconnect_pending.set(true);
                return;
            }
            _ => None,
        };
        match handle {
            Some(h) => h.lose_connection(),
            None => self.stop_connecting(),
        }
    }

    fn destination(&self) -> String {
        match &self.target {
            Target::Tcp { host, port } if host.contains(':') && !host.starts_with('[') => {
                format!("[{host}]:{port}")
            }
            Target::Tcp { host, port } => format!("{host}:{port}"),
            Target::Unix(UnixTarget::Path(p)) => format!("unix:{}", p.display()),
            Target::Unix(UnixTarget::Abstract(n)) => {
                format!("unix:@{}", String::from_utf8_lossy(n))
            }
        }
    }
}

/// The resolved addresses that a socket bound to `bind` can connect to: those of the bind
/// address's family, in their order (a socket has one family, and the kernel refuses to bind
/// an address of the other one with a bare `EINVAL` or `EAFNOSUPPORT`). When none is left,
/// an [`io::ErrorKind::InvalidInput`] error that names the bind address and the family of
/// `destination`.
fn addresses_for_bind(
    addrs: Vec<SockAddr>,
    bind: SocketAddr,
    destination: &str,
) -> io::Result<Vec<SockAddr>> {
    let total = addrs.len();
    let kept: Vec<SockAddr> = addrs
        .into_iter()
        .filter(|a| a.as_socket().is_some_and(|a| a.is_ipv4() == bind.is_ipv4()))
        .collect();
    let (family, other) = family_names(bind.is_ipv4());
    if kept.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot connect from bind address {} ({family}) to {destination}: it has only \
                 {other} addresses; bind to an {other} address (or to none), or connect to a \
                 destination with an {family} address",
                show_bind(bind)
            ),
        ));
    }
    if kept.len() < total {
        tracing::debug!(
            destination,
            bind = %show_bind(bind),
            skipped = total - kept.len(),
            "skipping the {other} addresses: the bind address is {family}"
        );
    }
    Ok(kept)
}

/// The name of an address family (IPv4 when `ipv4`), and of the other one, for messages.
pub(crate) fn family_names(ipv4: bool) -> (&'static str, &'static str) {
    if ipv4 {
        ("IPv4", "IPv6")
    } else {
        ("IPv6", "IPv4")
    }
}

/// A bind address as given: the IP alone when the port is left to the system (0).
fn show_bind(bind: SocketAddr) -> String {
    match bind.port() {
        0 => bind.ip().to_string(),
        _ => bind.to_string(),
    }
}

pub(crate) fn sockaddr_to_address(addr: &SockAddr) -> Address {
    if let Some(a) = addr.as_socket() {
        return Address::Inet(a);
    }
    if let Some(p) = addr.as_pathname() {
        return Address::Unix(UnixAddress::Path(p.to_owned()));
    }
    if let Some(n) = addr.as_abstract_namespace() {
        return Address::Unix(UnixAddress::Abstract(n.to_vec()));
    }
    Address::Unix(UnixAddress::Unnamed)
}

/// Bytes before `sun_path` in a `sockaddr_un` (the address family).
const SUN_PATH_OFFSET: u32 = 2;
/// `sizeof(struct sockaddr_un)` on Linux: the family and a 108-byte `sun_path`.
const SOCKADDR_UN_LEN: u32 = SUN_PATH_OFFSET + 108;

/// The address in `addr`, as returned by `accept`, `recvfrom` and friends: an IP address (as
/// is: IPv4-mapped addresses are left to the caller), or a Unix path, Linux abstract name or
/// unnamed socket.
///
/// `None` when it cannot be read here: another family, or a Unix path that fills all 108
/// bytes of `sun_path` (the kernel then reports an address one byte longer than a
/// `sockaddr_un`, and rustix's parser panics on it; socket2's, as in `Socket::peer_addr`,
/// reads it).
pub(crate) fn any_to_address(addr: rustix::net::SocketAddrAny) -> Option<Address> {
    if let Ok(a) = SocketAddr::try_from(addr.clone()) {
        return Some(Address::Inet(a));
    }
    if addr.address_family() != rustix::net::AddressFamily::UNIX {
        return None;
    }
    match addr.addr_len() {
        // rustix reads an unnamed address as an empty abstract name.
        SUN_PATH_OFFSET => return Some(Address::Unix(UnixAddress::Unnamed)),
        len if len > SOCKADDR_UN_LEN => return None,
        _ => {}
    }
    let unix = rustix::net::SocketAddrUnix::try_from(addr).ok()?;
    if let Some(p) = unix.path_bytes() {
        use std::os::unix::ffi::OsStrExt;
        return Some(Address::Unix(UnixAddress::Path(PathBuf::from(
            std::ffi::OsStr::from_bytes(p),
        ))));
    }
    unix.abstract_name()
        .map(|n| Address::Unix(UnixAddress::Abstract(n.to_vec())))
}

/// A socket address for a Linux abstract name; a name longer than `sun_path` holds (107
/// bytes after the leading NUL) is an [`io::ErrorKind::InvalidInput`] error that says so.
pub(crate) fn abstract_sockaddr(name: &[u8]) -> io::Result<SockAddr> {
    // The leading NUL takes the byte a path's terminating NUL takes.
    const MAX_NAME_LEN: usize = crate::unix::MAX_PATH_LEN;
    if name.len() > MAX_NAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the abstract name @{} is {} bytes long; an abstract name holds at most \
                 {MAX_NAME_LEN} bytes (sun_path is 108, one for the leading NUL)",
                String::from_utf8_lossy(name),
                name.len()
            ),
        ));
    }
    let mut path = Vec::with_capacity(name.len() + 1);
    path.push(0u8);
    path.extend_from_slice(name);
    use std::os::unix::ffi::OsStrExt;
    SockAddr::unix(std::ffi::OsStr::from_bytes(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SockAddr> {
        list.iter()
            .map(|a| SockAddr::from(a.parse::<SocketAddr>().unwrap()))
            .collect()
    }

    fn shown(list: &[SockAddr]) -> Vec<String> {
        list.iter()
            .map(|a| a.as_socket().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_bind_address_keeps_the_addresses_of_its_family_in_order() {
        let mixed = addrs(&["[::1]:80", "127.0.0.1:80", "[fd00::2]:80", "10.0.0.1:80"]);
        let v4 = addresses_for_bind(mixed.clone(), "127.0.0.1:0".parse().unwrap(), "h:80");
        assert_eq!(shown(&v4.unwrap()), ["127.0.0.1:80", "10.0.0.1:80"]);
        let v6 = addresses_for_bind(mixed, "[::1]:0".parse().unwrap(), "h:80");
        assert_eq!(shown(&v6.unwrap()), ["[::1]:80", "[fd00::2]:80"]);
    }

    #[test]
    fn a_bind_address_of_the_other_family_is_an_invalid_input_naming_both() {
        let err = addresses_for_bind(
            addrs(&["[::1]:443"]),
            "127.0.0.1:0".parse().unwrap(),
            "[::1]:443",
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let msg = err.to_string();
        assert!(
            msg.contains("bind address 127.0.0.1 (IPv4)")
                && msg.contains("[::1]:443")
                && msg.contains("only IPv6 addresses"),
            "{msg}"
        );
        let err = addresses_for_bind(
            addrs(&["127.0.0.1:80", "10.0.0.1:80"]),
            "[::1]:4000".parse().unwrap(),
            "example.test:80",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("bind address [::1]:4000 (IPv6)")
                && msg.contains("example.test:80")
                && msg.contains("only IPv4 addresses"),
            "{msg}"
        );
    }
}
