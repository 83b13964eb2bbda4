//! The readiness backend seam.
//!
//! # Contract
//!
//! A backend tells the reactor which registered descriptors are ready. The reactor relies on
//! exactly these guarantees, and a new backend (io_uring, kqueue, a reactor per core) must
//! provide them:
//!
//! - **Level semantics.** After [`Backend::wait`] reports a source, it reports it again on the
//!   next `wait` for as long as the condition holds (unread data, room to write) and the
//!   interest includes it. The reactor may therefore stop reading a source early to be fair to
//!   others without losing the wake-up. A backend built on one-shot or edge notification must
//!   re-arm itself to keep this promise.
//! - **Keys are opaque.** The reactor passes a `usize` key at registration (a slot index with a
//!   generation tag) and the backend reports it back unchanged. The backend never interprets
//!   it.
//! - **Registration outlives nothing.** `deregister` is always called before the descriptor is
//!   closed (`Registered` enforces this by owning the socket), so a backend may keep the raw
//!   descriptor number.
//! - **An empty interest is allowed** and means "report nothing at all for now" (paused reading
//!   with an empty write buffer) — not even errors or hang-ups, which level-triggered epoll
//!   would otherwise report in a loop. The owner finds those when it next reads or writes.
//! - **`wait` returns early** when the [`Waker`] is woken from any thread, on a signal, or at the
//!   timeout; spurious early returns are allowed and the reactor copes with an empty event list.
//! - Hang-up and error conditions are reported as readable (and writable when write interest
//!   is set), so the owner finds them through its next `read` or `write`.

#[cfg(target_os = "linux")]
mod epoll;
mod null;
mod polling;

#[cfg(target_os = "linux")]
pub(crate) use epoll::EpollBackend;
pub(crate) use null::NullBackend;
pub(crate) use polling::PollingBackend;

/// Which readiness backend a [`Reactor`](crate::Reactor) uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// The best backend for this platform: [`BackendKind::Epoll`] on Linux,
    /// [`BackendKind::Polling`] elsewhere.
    #[default]
    Auto,
    /// Level-triggered epoll through rustix: one system call per wait (Linux only).
    Epoll,
    /// The portable `polling` crate (epoll, kqueue, …) in level-triggered mode.
    Polling,
}

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

/// Which readiness a source wants to hear about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// Report when the source can be read (or has hung up).
    pub readable: bool,
    /// Report when the source can be written.
    pub writable: bool,
}

impl Interest {
    /// Nothing: the source stays registered but reports nothing.
    pub const NONE: Interest = Interest {
        readable: false,
        writable: false,
    };
    /// Readable only.
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
    };
    /// Writable only.
    pub const WRITABLE: Interest = Interest {
        readable: false,
        writable: true,
    };
    /// Both directions.
    pub const BOTH: Interest = Interest {
        readable: true,
        writable: true,
    };
}

/// What a backend reported about one source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The source can be read, has hung up, or has an error pending.
    pub readable: bool,
    /// The source can be written, or has an error pending.
    pub writable: bool,
}

/// One event as reported by [`Backend::wait`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackendEvent {
    pub(crate) key: usize,
    pub(crate) readiness: Readiness,
}

/// Wakes a backend's `wait` from any thread.
pub(crate) trait Waker: Send + Sync {
    fn wake(&self) -> io::Result<()>;
}

/// A readiness backend: see the module documentation for the contract.
pub(crate) trait Backend {
    /// Starts reporting readiness of `fd` under `key`.
    ///
    /// # Safety
    /// `fd` must stay open until [`Backend::deregister`] has been called for it.
    unsafe fn register(&self, fd: RawFd, key: usize, interest: Interest) -> io::Result<()>;
    /// Changes the interest of a registered descriptor.
    fn reregister(&self, fd: RawFd, key: usize, interest: Interest) -> io::Result<()>;
    /// Stops reporting a descriptor; called before it is closed.
    fn deregister(&self, fd: RawFd) -> io::Result<()>;
    /// Waits up to `timeout` (`None`: without limit) and appends ready sources to `events`.
    fn wait(&self, events: &mut Vec<BackendEvent>, timeout: Option<Duration>) -> io::Result<()>;
    /// A handle that wakes `wait` from another thread.
    fn waker(&self) -> Arc<dyn Waker>;
}
