//! The readiness backend seam.
//!
//! # Contract
//!
//! A backend tells the reactor which registered descriptors are ready. The reactor relies on
//! exactly these guarantees, and a new backend (io_uring, kqueue, a reactor per core) must
//! provide them:
//!
//! - **Level semantics** for a [`Trigger::Level`] registration. After [`Backend::wait`] reports
//!   a source, it reports it again on the next `wait` for as long as the condition holds
//!   (unread data, room to write) and the interest includes it. The reactor may therefore stop
//!   reading a source early to be fair to others without losing the wake-up. A backend built
//!   on one-shot or edge notification must re-arm itself to keep this promise.
//! - **Edge registrations may be reported less.** A [`Trigger::Edge`] registration may instead
//!   be reported only when its readiness rises (data arrives, room frees up, the peer hangs
//!   up) and when `reregister` gives it an interest whose condition already holds. Its owner
//!   reads until the descriptor says it is empty (`WouldBlock`, or a stream read shorter than
//!   asked when [`Readiness::read_stops_early`] was never reported) or asks the reactor to
//!   report it again next turn
//!   ([`Registered::ready_again`](crate::Registered::ready_again)). This spares the kernel
//!   polling every reported descriptor a second time on the next wait. A backend may treat an
//!   edge registration as level (the portable backend does): level reports only add wake-ups,
//!   and every source copes with a wake-up that finds nothing to do.
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
    /// epoll through rustix: one system call per wait (Linux only). Stream connections are
    /// registered edge-triggered, everything else level-triggered.
    Epoll,
    /// The portable `polling` crate (epoll, kqueue, …) in level-triggered mode.
    Polling,
}

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

/// How a registration is reported: see the contract above.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// Reported at every wait while the condition holds.
    #[default]
    Level,
    /// May be reported only when the condition rises.
    Edge,
}

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
    /// A read may stop short of what is queued (reported by edge registrations, where the
    /// backend can tell): the peer hung up or an error is pending (either waits behind the
    /// data), or urgent data arrived (a TCP or Unix stream read stops at the urgent mark). A
    /// read shorter than asked then does not mean the descriptor is empty, and nothing may
    /// report it again: read on until `Ok(0)`, an error or `WouldBlock`.
    pub read_stops_early: bool,
}

impl Readiness {
    /// Readable only.
    pub const READABLE: Readiness = Readiness {
        readable: true,
        writable: false,
        read_stops_early: false,
    };
    /// Writable only.
    pub const WRITABLE: Readiness = Readiness {
        readable: false,
        writable: true,
        read_stops_early: false,
    };
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
    unsafe fn register(
        &self,
        fd: RawFd,
        key: usize,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()>;
    /// Changes the interest of a registered descriptor (`trigger` as at registration).
    fn reregister(
        &self,
        fd: RawFd,
        key: usize,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()>;
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

    /// Polls and expects exactly one event; returns its readiness.
    fn only(b: &dyn Backend, name: &str) -> Readiness {
        let ev = poll(b);
        assert_eq!(ev.len(), 1, "{name}: {ev:?}");
        ev[0].readiness
    }

    #[test]
    fn unread_data_is_reported_again() {
        for (name, b) in backends() {
            let (a, mut peer) = pair();
            unsafe {
                b.register(a.as_raw_fd(), 7, Interest::READABLE, Trigger::Level)
                    .unwrap()
            };
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
            unsafe {
                b.register(a.as_raw_fd(), 3, Interest::BOTH, Trigger::Level)
                    .unwrap()
            };
            for _ in 0..2 {
                let ev = poll(&*b);
                assert_eq!(ev.len(), 1, "{name}");
                assert!(
                    ev[0].readiness.writable && !ev[0].readiness.readable,
                    "{name}"
                );
            }
            b.reregister(a.as_raw_fd(), 3, Interest::READABLE, Trigger::Level)
                .unwrap();
            assert!(poll(&*b).is_empty(), "{name}");
            b.reregister(a.as_raw_fd(), 4, Interest::WRITABLE, Trigger::Level)
                .unwrap();
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
            unsafe {
                b.register(a.as_raw_fd(), 1, Interest::NONE, Trigger::Level)
                    .unwrap()
            };
            let (c, peer2) = pair();
            unsafe {
                b.register(c.as_raw_fd(), 2, Interest::READABLE, Trigger::Level)
                    .unwrap()
            };
            b.reregister(c.as_raw_fd(), 2, Interest::NONE, Trigger::Level)
                .unwrap();
            b.reregister(c.as_raw_fd(), 2, Interest::NONE, Trigger::Level)
                .unwrap();
            drop(peer);
            drop(peer2);
            for _ in 0..2 {
                assert!(poll(&*b).is_empty(), "{name}");
            }
            // Hang-up is reported as readable once interest comes back.
            b.reregister(a.as_raw_fd(), 1, Interest::READABLE, Trigger::Level)
                .unwrap();
            assert!(only(&*b, name).readable, "{name}");
            b.deregister(a.as_raw_fd()).unwrap();
            b.deregister(c.as_raw_fd()).unwrap();
        }
    }

    #[test]
    fn hang_up_reported_as_readable_and_writable_with_write_interest() {
        for (name, b) in backends() {
            let (a, peer) = pair();
            unsafe {
                b.register(a.as_raw_fd(), 5, Interest::READABLE, Trigger::Level)
                    .unwrap()
            };
            assert!(poll(&*b).is_empty(), "{name}");
            drop(peer);
            for _ in 0..2 {
                assert!(only(&*b, name).readable, "{name}");
            }
            b.reregister(a.as_raw_fd(), 5, Interest::BOTH, Trigger::Level)
                .unwrap();
            let r = only(&*b, name);
            assert!(r.readable && r.writable, "{name}");
            b.deregister(a.as_raw_fd()).unwrap();
        }
    }

    #[test]
    fn edge_registration_reports_each_rise_and_each_rearm() {
        for (name, b) in backends() {
            let (a, mut peer) = pair();
            unsafe {
                b.register(a.as_raw_fd(), 8, Interest::READABLE, Trigger::Edge)
                    .unwrap()
            };
            assert!(poll(&*b).is_empty(), "{name}");
            // Each arrival is reported, read or not.
            for turn in 0..2 {
                peer.write_all(b"x").unwrap();
                let ev = poll(&*b);
                assert_eq!(ev.len(), 1, "{name} turn {turn}");
                assert!(ev[0].readiness.readable, "{name}");
            }
            // A new interest whose condition already holds is reported.
            b.reregister(a.as_raw_fd(), 8, Interest::BOTH, Trigger::Edge)
                .unwrap();
            let r = only(&*b, name);
            assert!(r.readable && r.writable, "{name}");
            // So is a hang-up.
            b.reregister(a.as_raw_fd(), 8, Interest::READABLE, Trigger::Edge)
                .unwrap();
            poll(&*b);
            drop(peer);
            assert!(only(&*b, name).readable, "{name}");
            b.deregister(a.as_raw_fd()).unwrap();
        }
    }

    #[test]
    fn epoll_reports_an_edge_registration_once_per_rise() {
        let b = EpollBackend::new().unwrap();
        let (a, mut peer) = pair();
        unsafe {
            b.register(a.as_raw_fd(), 9, Interest::READABLE, Trigger::Edge)
                .unwrap()
        };
        peer.write_all(b"x").unwrap();
        assert_eq!(poll(&b).len(), 1);
        // The byte is still unread, but nothing new arrived: not reported again.
        assert!(poll(&b).is_empty());
        b.deregister(a.as_raw_fd()).unwrap();
    }

    #[test]
    fn deregistered_fd_reused_under_new_key() {
        for (name, b) in backends() {
            let (a, mut peer) = pair();
            let fd = a.as_raw_fd();
            unsafe {
                b.register(fd, 10, Interest::READABLE, Trigger::Level)
                    .unwrap()
            };
            peer.write_all(b"x").unwrap();
            b.deregister(fd).unwrap();
            drop(a);
            drop(peer);
            let (a2, mut peer2) = pair();
            // Usually the same descriptor number comes back.
            unsafe {
                b.register(a2.as_raw_fd(), 11, Interest::READABLE, Trigger::Level)
                    .unwrap()
            };
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
