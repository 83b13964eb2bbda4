//! Unix-domain stream sockets: listening ports and outgoing connections.
//!
//! # Socket files
//!
//! `listen_unix` binds a path. If the path exists and a server answers there, listening fails
//! with [`Error::AddressInUse`]; if nothing answers (the file was left by a server that died),
//! the stale file is removed and the bind retried. A path holding anything but a socket file
//! is never removed: the bind fails. The port removes its socket file when it
//! stops listening. An optional file mode (for example `0o660`) is applied after binding.
//!
//! On Linux, abstract names (no file; they vanish with the socket) are available through
//! `listen_unix_abstract` and `connect_unix_abstract`.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};
use torsion_reactor::{
    Address, ClientFactory, ConnectionConfig, Connector, Error, Reactor, Result, SharedFactory,
    UnixAddress,
};

use crate::connector::{abstract_sockaddr, ConnectOptions, ConnectorInner, Target, UnixTarget};
use crate::listener::{Listener, ListeningPort};
use crate::socket::SocketKind;
use crate::tcp::DEFAULT_BACKLOG;

/// Options of a Unix listening port.
#[derive(Clone, Debug)]
pub struct UnixListenOptions {
    /// Queue of connections the kernel holds before `accept`. Default 50.
    pub backlog: i32,
    /// File mode to give the socket file (for example `0o660`); `None` keeps the umask's.
    pub mode: Option<u32>,
    /// Watermarks and limits of accepted connections.
    pub config: ConnectionConfig,
}

impl Default for UnixListenOptions {
    fn default() -> Self {
        UnixListenOptions {
            backlog: DEFAULT_BACKLOG,
            mode: None,
            config: ConnectionConfig::default(),
        }
    }
}

fn new_socket() -> io::Result<Socket> {
    Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)
}

/// Removes the socket file a port bound, once it stops: only if a socket file is still there
/// (never whatever else was put at the path meanwhile).
pub(crate) fn remove_socket_file(path: &Path) {
    if is_socket_file(path) {
        let _ = std::fs::remove_file(path);
    }
}

/// A socket file (not followed through a symbolic link) is at `path`.
fn is_socket_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Binds `socket` (stream or datagram) to a Unix path, replacing a stale socket file left by
/// a dead server and refusing a live one with [`Error::AddressInUse`].
///
/// Whether a server answers is probed with a non-blocking `connect` of the same socket type:
/// only a refusal means the file is stale (a stream server whose queue is full answers "would
/// block" and counts as live; a datagram server receives nothing), and a busy server can never
/// stall the reactor thread here.
pub(crate) fn bind_path(socket: &Socket, ty: Type, addr: &SockAddr, path: &Path) -> Result<()> {
    let shown = path.display();
    let Err(e) = socket.bind(addr) else {
        return Ok(());
    };
    if e.kind() != io::ErrorKind::AddrInUse {
        return Err(Error::io(format!("bind {shown}"), e));
    }
    // Only a socket file can be stale: anything else at the path is someone's data.
    if !is_socket_file(path) {
        return Err(Error::io(
            format!("bind {shown}"),
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way (not removed)",
            ),
        ));
    }
    let live = match Socket::new(Domain::UNIX, ty.nonblocking().cloexec(), None) {
        Ok(probe) => {
            !matches!(probe.connect(addr), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
        }
        Err(_) => true, // cannot tell: do not remove anything
    };
    if live {
        return Err(Error::AddressInUse(shown.to_string()));
    }
    tracing::info!(path = %shown, "removing stale socket file left by a dead server");
    std::fs::remove_file(path).map_err(|e| Error::io(format!("remove stale {shown}"), e))?;
    socket
        .bind(addr)
        .map_err(|e| Error::io(format!("bind {shown}"), e))
}

pub(crate) fn listen(
    reactor: &Reactor,
    path: &Path,
    factory: SharedFactory,
    options: UnixListenOptions,
) -> Result<ListeningPort> {
    let shown = path.display().to_string();
    let addr =
        SockAddr::unix(path).map_err(|e| Error::io(format!("use {shown} as a socket path"), e))?;
    let socket = new_socket().map_err(|e| Error::io("create a Unix socket", e))?;
    bind_path(&socket, Type::STREAM, &addr, path)?;
    if let Some(mode) = options.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("set mode {mode:o} on {shown}"), e))?;
    }
    socket
        .listen(options.backlog)
        .map_err(|e| Error::io(format!("listen on {shown}"), e))?;
    Listener::start(
        reactor,
        socket,
        SocketKind::Unix,
        factory,
        Address::Unix(UnixAddress::Path(path.to_owned())),
        false,
        options.config,
        Some(PathBuf::from(path)),
    )
}

pub(crate) fn listen_abstract(
    reactor: &Reactor,
    name: &[u8],
    factory: SharedFactory,
    options: UnixListenOptions,
) -> Result<ListeningPort> {
    let shown = format!("@{}", String::from_utf8_lossy(name));
    let addr = abstract_sockaddr(name)
        .map_err(|e| Error::io(format!("use {shown} as an abstract name"), e))?;
    let socket = new_socket().map_err(|e| Error::io("create a Unix socket", e))?;
    socket.bind(&addr).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => Error::AddressInUse(shown.clone()),
        _ => Error::io(format!("bind {shown}"), e),
    })?;
    socket
        .listen(options.backlog)
        .map_err(|e| Error::io(format!("listen on {shown}"), e))?;
    Listener::start(
        reactor,
        socket,
        SocketKind::Unix,
        factory,
        Address::Unix(UnixAddress::Abstract(name.to_vec())),
        false,
        options.config,
        None,
    )
}

pub(crate) fn connect(
    reactor: &Reactor,
    target: UnixTarget,
    factory: Box<dyn ClientFactory>,
    options: ConnectOptions,
) -> Connector {
    ConnectorInner::start(reactor, Target::Unix(target), options, factory)
}
