//! Unix-domain stream sockets: listening ports and outgoing connections.
//!
//! # Socket files
//!
//! `listen_unix` binds a path. If the path exists and a server answers there, listening fails
//! with [`Error::AddressInUse`]; if nothing answers (the file was left by a server that died),
//! the stale file is removed and the bind retried. A path holding anything but a socket file
//! is never removed: the bind fails. The port removes its socket file when it
//! stops listening, if the file is still its own (same device and inode; another server's
//! socket put at the path meanwhile stays). Ports starting in one directory at the same time
//! take turns through a `flock` on it, so none takes another's new socket for a stale one. A
//! path with a NUL byte or longer than 107 bytes is [`Error::InvalidAddress`]. An optional
//! file mode (for example `0o660`) is applied after binding.
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

/// Bytes a Unix socket path may have: `sun_path` holds 108, one of them the terminating NUL.
pub(crate) const MAX_PATH_LEN: usize = 107;

/// The socket address of a Unix path, or an [`io::ErrorKind::InvalidInput`] error that says
/// why `path` cannot be one: it holds a NUL byte (the kernel would cut the path there and
/// use another file), or it is longer than [`MAX_PATH_LEN`] bytes.
pub(crate) fn path_sockaddr(path: &Path) -> io::Result<SockAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    if bytes.contains(&0) {
        return invalid(format!(
            "the socket path {} contains a NUL byte",
            path.display()
        ));
    }
    if bytes.len() > MAX_PATH_LEN {
        return invalid(format!(
            "the socket path {} is {} bytes long; a Unix socket path holds at most \
             {MAX_PATH_LEN} bytes (sun_path is 108)",
            path.display(),
            bytes.len()
        ));
    }
    SockAddr::unix(path)
}

/// The socket file a port bound (returned by [`bind_path`]), told apart from whatever is put
/// at its path later by its device and inode.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl SocketFile {
    /// Removes the file once the port stops: only if it is still the one the port bound
    /// (never another server's socket, nor whatever else was put at the path meanwhile).
    pub(crate) fn remove(&self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The device and inode of the socket file (not followed through a symbolic link) at `path`.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type().is_socket().then(|| (m.dev(), m.ino()))
}

/// Held by a port from its bind to its `listen`: while it lasts, no other port (of this
/// process or another) probes or removes a socket file in the same directory. Between bind and
/// `listen` a new socket refuses connections exactly as a stale one does, so without it a
/// port starting at the same time could remove the new file and bind the path too, both
/// ports then listening, one on a socket no client can reach.
///
/// An exclusive `flock` on the directory, waited for at most about 200 ms (ports hold it for
/// microseconds); `None`, and no lock, if the directory cannot be opened or locked in time.
pub(crate) fn lock_dir(path: &Path) -> Option<std::fs::File> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file = std::fs::File::open(dir).ok()?;
    for _ in 0..200 {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Some(file),
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            Err(_) => return None,
        }
    }
    None
}

/// Binds `socket` (stream or datagram) to a Unix path, replacing a stale socket file left by
/// a dead server and refusing a live one with [`Error::AddressInUse`]; returns the socket file
/// bound, for the port to remove when it stops.
///
/// Whether a server answers is probed with a non-blocking `connect` of the same socket type:
/// only a refusal means the file is stale (a stream server whose queue is full answers "would
/// block" and counts as live; a datagram server receives nothing), and a busy server can never
/// stall the reactor thread here.
pub(crate) fn bind_path(
    socket: &Socket,
    ty: Type,
    addr: &SockAddr,
    path: &Path,
) -> Result<SocketFile> {
    let bound = || SocketFile {
        path: path.to_owned(),
        id: file_id(path),
    };
    let shown = path.display();
    let Err(e) = socket.bind(addr) else {
        return Ok(bound());
    };
    if e.kind() != io::ErrorKind::AddrInUse {
        return Err(Error::io(format!("bind {shown}"), e));
    }
    // Only a socket file can be stale: anything else at the path is someone's data.
    if file_id(path).is_none() {
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
        .map_err(|e| Error::io(format!("bind {shown}"), e))?;
    Ok(bound())
}

pub(crate) fn listen(
    reactor: &Reactor,
    path: &Path,
    factory: SharedFactory,
    options: UnixListenOptions,
) -> Result<ListeningPort> {
    let shown = path.display().to_string();
    let addr = path_sockaddr(path).map_err(|e| Error::InvalidAddress(e.to_string()))?;
    if let Some(mode) = options.mode.filter(|m| *m > 0o7777) {
        return Err(Error::InvalidAddress(format!(
            "mode {mode:o} for {shown} is not a file mode (at most 7777)"
        )));
    }
    let socket = new_socket().map_err(|e| Error::io("create a Unix socket", e))?;
    let lock = lock_dir(path);
    let file = bind_path(&socket, Type::STREAM, &addr, path)?;
    let ready = match options.mode {
        Some(mode) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("set mode {mode:o} on {shown}"), e)),
        None => Ok(()),
    }
    .and_then(|()| {
        socket
            .listen(options.backlog)
            .map_err(|e| Error::io(format!("listen on {shown}"), e))
    });
    if let Err(e) = ready {
        file.remove(); // bound, but no port will ever remove it
        return Err(e);
    }
    drop(lock);
    Listener::start(
        reactor,
        socket,
        SocketKind::Unix,
        factory,
        Address::Unix(UnixAddress::Path(path.to_owned())),
        false,
        options.config,
        Some(file),
    )
}

pub(crate) fn listen_abstract(
    reactor: &Reactor,
    name: &[u8],
    factory: SharedFactory,
    options: UnixListenOptions,
) -> Result<ListeningPort> {
    let shown = format!("@{}", String::from_utf8_lossy(name));
    let addr = abstract_sockaddr(name).map_err(|e| Error::InvalidAddress(e.to_string()))?;
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
