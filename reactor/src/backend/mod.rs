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

#[cfg(all(test, target_os = "linux"))]
mod contract_tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    fn backends() -> Vec<(&'static str, Box<dyn Backend>)> {
        vec![
            ("epoll", Box::new(EpollBackend::new().unwrap())),
            ("polling", Box::new(PollingBackend::new().unwrap())),
        ]
    }

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn poll(b: &dyn Backend) -> Vec<BackendEvent> {
        let mut ev = Vec::new();
        b.wait(&mut ev, Some(Duration::ZERO)).unwrap();
        ev
    }

    #[test]
    fn unread_data_is_reported_again() {
        for (name, b) in backends() {
            let (a, mut peer) = pair();
            unsafe { b.register(a.as_raw_fd(), 7, Interest::READABLE).unwrap() };
            peer.write_all(b"x").unwrap();
            for turn in 0..3 {
                let ev = poll(&*b);
                assert_eq!(ev.len(), 1, "{name} turn {turn}");
                assert_eq!(ev[0].key, 7, "{name}");
                assert!(ev[0].readiness.readable, "{name}");
            }
            b.deregister(a.as_raw_fd()).unwrap();
        }
    }

    #[test]
    fn writable_is_reported_again_and_interest_changes_apply() {
        for (name, b) in backends() {
            let (a, _peer) = pair();
            unsafe { b.register(a.as_raw_fd(), 3, Interest::BOTH).unwrap() };
            for _ in 0..2 {
                let ev = poll(&*b);
                assert_eq!(ev.len(), 1, "{name}");
                assert!(
                    ev[0].readiness.writable && !ev[0].readiness.readable,
                    "{name}"
                );
            }
            b.reregister(a.as_raw_fd(), 3, Interest::READABLE).unwrap();
            assert!(poll(&*b).is_empty(), "{name}");
            b.reregister(a.as_raw_fd(), 4, Interest::WRITABLE).unwrap();
            let ev = poll(&*b);
            assert_eq!(ev.len(), 1, "{name}");
            assert_eq!(ev[0].key, 4, "{name}");
            b.deregister(a.as_raw_fd()).unwrap();
            assert!(poll(&*b).is_empty(), "{name}");
        }
    }

    #[test]
    fn empty_interest_reports_nothing_even_after_hang_up() {
        for (name, b) in backends() {
            let (a, peer) = pair();
            unsafe { b.register(a.as_raw_fd(), 1, Interest::NONE).unwrap() };
            let (c, peer2) = pair();
            unsafe { b.register(c.as_raw_fd(), 2, Interest::READABLE).unwrap() };
            b.reregister(c.as_raw_fd(), 2, Interest::NONE).unwrap();
            b.reregister(c.as_raw_fd(), 2, Interest::NONE).unwrap();
            drop(peer);
            drop(peer2);
            for _ in 0..2 {
                assert!(poll(&*b).is_empty(), "{name}");
            }
            // Hang-up is reported as readable once interest comes back.
            b.reregister(a.as_raw_fd(), 1, Interest::READABLE).unwrap();
            let ev = poll(&*b);
            assert_eq!(ev.len(), 1, "{name}");
            assert!(ev[0].readiness.readable, "{name}");
            b.deregister(a.as_raw_fd()).unwrap();
            b.deregister(c.as_raw_fd()).unwrap();
        }
    }

    #[test]
    fn hang_up_reported_as_readable_and_writable_with_write_interest() {
        for (name, b) in backends() {
            let (a, peer) = pair();
            unsafe { b.register(a.as_raw_fd(), 5, Interest::READABLE).unwrap() };
            assert!(poll(&*b).is_empty(), "{name}");
            drop(peer);
            for _ in 0..2 {
                let ev = poll(&*b);
                assert_eq!(ev.len(), 1, "{name}");
                assert!(ev[0].readiness.readable, "{name}");
            }
            b.reregister(a.as_raw_fd(), 5, Interest::BOTH).unwrap();
            let ev = poll(&*b);
            assert_eq!(ev.len(), 1, "{name}");
            assert!(
                ev[0].readiness.readable && ev[0].readiness.writable,
                "{name}"
            );
            b.deregister(a.as_raw_fd()).unwrap();
        }
    }

    #[test]
    fn deregistered_fd_reused_under_new_key() {
        for (name, b) in backends() {
            let (a, mut peer) = pair();
            let fd = a.as_raw_fd();
            unsafe { b.register(fd, 10, Interest::READABLE).unwrap() };
            peer.write_all(b"x").unwrap();
            b.deregister(fd).unwrap();
            drop(a);
            drop(peer);
            let (a2, mut peer2) = pair();
            // Usually the same descriptor number comes back.
            unsafe { b.register(a2.as_raw_fd(), 11, Interest::READABLE).unwrap() };
            assert!(poll(&*b).is_empty(), "{name}");
            peer2.write_all(b"y").unwrap();
            let ev = poll(&*b);
            assert_eq!(ev.len(), 1, "{name}");
            assert_eq!(ev[0].key, 11, "{name}");
            b.deregister(a2.as_raw_fd()).unwrap();
        }
    }

    #[test]
    fn waker_and_timeouts() {
        for (name, b) in backends() {
            let mut ev = Vec::new();
            // A wake before the wait ends it at once, then is consumed.
            b.waker().wake().unwrap();
            let t = Instant::now();
            b.wait(&mut ev, None).unwrap();
            assert!(t.elapsed() < Duration::from_secs(5), "{name}");
            assert!(ev.is_empty(), "{name}");
            // Zero-timeout polls consume a wake too, and report no event for it.
            b.waker().wake().unwrap();
            b.wait(&mut ev, Some(Duration::ZERO)).unwrap();
            assert!(ev.is_empty(), "{name}");
            let t = Instant::now();
            b.wait(&mut ev, Some(Duration::from_millis(30))).unwrap();
            let e = t.elapsed();
            assert!(e >= Duration::from_millis(29), "{name}: {e:?}");
            // Huge timeouts are accepted, and a wake from another thread ends them.
            for timeout in [
                Duration::from_millis(i32::MAX as u64 + 1),
                Duration::from_secs(u64::MAX / 4),
                Duration::MAX,
            ] {
                let w = b.waker();
                let th = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    w.wake().unwrap();
                });
                let t = Instant::now();
                b.wait(&mut ev, Some(timeout)).unwrap();
                assert!(t.elapsed() < Duration::from_secs(5), "{name}");
                th.join().unwrap();
            }
        }
    }
}
