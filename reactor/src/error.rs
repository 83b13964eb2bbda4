//! The error type returned by reactor, transport and endpoint operations.

use std::fmt;
use std::io;

/// A failed reactor, transport or endpoint operation.
///
/// Each variant says what was being attempted, so the message can tell the user what to do.
/// Connection-level failures that happen *after* an operation started (a reset, a refused
/// connect) are not errors of this type: they reach protocols and client factories as a
/// [`CloseReason`](crate::CloseReason).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed; `context` says which one (for example `bind 127.0.0.1:80`).
    Io {
        /// What was being done when the error happened.
        context: String,
        /// The underlying operating-system error.
        source: io::Error,
    },
    /// An address, host or endpoint description could not be understood.
    InvalidAddress(String),
    /// A Unix socket path is already served by a live process.
    AddressInUse(String),
    /// The reactor this handle belongs to has stopped and been dropped.
    ReactorGone,
    /// The reactor is already running (for example `run` called from inside a callback).
    AlreadyRunning,
}

impl Error {
    /// Wraps an [`io::Error`] with a description of what was being attempted.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The underlying [`io::Error`], if this error came from the operating system.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => {
                write!(f, "{context}: {source}")?;
                match source.kind() {
                    io::ErrorKind::AddrInUse => f.write_str(
                        " (another process is listening there; pick another port or stop it)",
                    ),
                    io::ErrorKind::PermissionDenied => {
                        f.write_str(" (ports below 1024 need privileges; files need write access)")
                    }
                    _ => Ok(()),
                }
            }
            Error::InvalidAddress(msg) => write!(f, "invalid address: {msg}"),
            Error::AddressInUse(path) => write!(
                f,
                "{path} is in use by a live server; stop it or choose another path"
            ),
            Error::ReactorGone => f.write_str("the reactor has stopped and was dropped"),
            Error::AlreadyRunning => f.write_str("the reactor is already running"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `Result` with torsion's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
