//! The default backend, on the `polling` crate (epoll on Linux, kqueue on the BSDs and macOS).
//!
//! Sources are registered in level-triggered mode, which is exactly the backend contract: an
//! unchanged interest costs no system call per event. Platforms whose `polling` backend only
//! offers one-shot or edge modes (illumos event ports, Windows) are refused at start-up with a
//! clear error instead of being served with a subtly different contract.

use std::cell::RefCell;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use polling::{Event, Events, PollMode, Poller};

use super::{Backend, BackendEvent, Interest, Readiness, Trigger, Waker};

pub(crate) struct PollingBackend {
    poller: Arc<Poller>,
    events: RefCell<Events>,
}

impl PollingBackend {
    pub(crate) fn new() -> io::Result<Self> {
        let poller = Poller::new()?;
        if !poller.supports_level() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this platform's poller has no level-triggered mode, which torsion's reactor needs",
            ));
        }
        Ok(PollingBackend {
            poller: Arc::new(poller),
            events: RefCell::new(Events::with_capacity(
                NonZeroUsize::new(1024).expect("non-zero"),
            )),
        })
    }

    fn event(key: usize, interest: Interest) -> Event {
        let mut ev = Event::none(key);
        ev.readable = interest.readable;
        ev.writable = interest.writable;
        ev
    }
}

struct PollerWaker(Arc<Poller>);

impl Waker for PollerWaker {
    fn wake(&self) -> io::Result<()> {
        self.0.notify()
    }
}

impl Backend for PollingBackend {
    // Edge registrations are kept level (the contract allows it): `polling`'s edge mode is not
    // offered on every platform it serves.
    unsafe fn register(
        &self,
        fd: RawFd,
        key: usize,
        interest: Interest,
        _trigger: Trigger,
    ) -> io::Result<()> {
        if interest == Interest::NONE {
            return Ok(()); // added when it first wants something (see `reregister`)
        }
        // SAFETY: the caller guarantees `fd` stays open until `deregister`.
        unsafe {
            self.poller
                .add_with_mode(fd, Self::event(key, interest), PollMode::Level)
        }
    }

    fn reregister(
        &self,
        fd: RawFd,
        key: usize,
        interest: Interest,
        _trigger: Trigger,
    ) -> io::Result<()> {
        // SAFETY: registered descriptors stay open until deregistered (`register`'s contract).
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        if interest == Interest::NONE {
            // Removed rather than modified to an empty mask: epoll reports errors and hang-ups
            // even for an empty mask, which would wake a paused source in a loop.
            return match self.poller.delete(bfd) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        match self
            .poller
            .modify_with_mode(bfd, Self::event(key, interest), PollMode::Level)
        {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // SAFETY: as above; the descriptor was removed for an empty interest.
                unsafe {
                    self.poller
                        .add_with_mode(fd, Self::event(key, interest), PollMode::Level)
                }
            }
            other => other,
        }
    }

    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: registered descriptors stay open until deregistered (`register`'s contract).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        match self.poller.delete(fd) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn wait(&self, out: &mut Vec<BackendEvent>, timeout: Option<Duration>) -> io::Result<()> {
        let mut events = self.events.borrow_mut();
        events.clear();
        self.poller.wait(&mut events, timeout)?;
        out.extend(events.iter().map(|ev| BackendEvent {
            key: ev.key,
            readiness: Readiness {
                readable: ev.readable,
                writable: ev.writable,
                read_stops_early: false,
            },
        }));
        Ok(())
    }

    fn waker(&self) -> Arc<dyn Waker> {
        Arc::new(PollerWaker(self.poller.clone()))
    }
}
