//! The Linux backend: epoll through rustix, with an eventfd waker. Edge registrations are
//! edge-triggered (`EPOLLET`), the others level-triggered.
//!
//! It is the default on Linux because it makes exactly one system call per wait. (The
//! portable [`polling`](super::polling) backend re-arms its notifier and timer descriptors on
//! every wait, four extra system calls, which costs about 10% more CPU per round trip when
//! each wait serves a single event.) The timeout has millisecond resolution (`epoll_pwait`).

use std::cell::RefCell;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags, Timespec};

use super::{Backend, BackendEvent, Interest, Readiness, Trigger, Waker};

const WAKE_KEY: u64 = u64::MAX;

/// The longest single wait (see `wait`).
const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

pub(crate) struct EpollBackend {
    epfd: OwnedFd,
    waker: Arc<EventFdWaker>,
    events: RefCell<Vec<epoll::Event>>,
}

struct EventFdWaker(OwnedFd);

impl Waker for EventFdWaker {
    fn wake(&self) -> io::Result<()> {
        match rustix::io::write(&self.0, &1u64.to_ne_bytes()) {
            // A full counter (EAGAIN) still means "woken".
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn flags(interest: Interest, trigger: Trigger) -> EventFlags {
    let mut f = match trigger {
        Trigger::Level => EventFlags::empty(),
        Trigger::Edge => EventFlags::ET,
    };
    if interest.readable {
        f |= EventFlags::IN;
        if trigger == Trigger::Edge {
            // Tell a read that comes up short whether more waits behind it: the end of stream
            // (RDHUP) or data past an urgent mark (PRI), where stream reads stop early.
            f |= EventFlags::RDHUP | EventFlags::PRI;
        }
    }
    if interest.writable {
        f |= EventFlags::OUT;
    }
    f
}

impl EpollBackend {
    pub(crate) fn new() -> io::Result<Self> {
        let epfd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(&epfd, &efd, EventData::new_u64(WAKE_KEY), EventFlags::IN)?;
        Ok(EpollBackend {
            epfd,
            waker: Arc::new(EventFdWaker(efd)),
            events: RefCell::new(Vec::with_capacity(1024)),
        })
    }
}

impl Backend for EpollBackend {
    unsafe fn register(
        &self,
        fd: RawFd,
        key: usize,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        if interest == Interest::NONE {
            return Ok(()); // added when it first wants something
        }
        // SAFETY: the caller guarantees `fd` stays open until `deregister`.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        Ok(epoll::add(
            &self.epfd,
            fd,
            EventData::new_u64(key as u64),
            flags(interest, trigger),
        )?)
    }

    fn reregister(
        &self,
        fd: RawFd,
        key: usize,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        // SAFETY: registered descriptors stay open until deregistered (`register`'s contract).
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        if interest == Interest::NONE {
            // Removed rather than modified to an empty mask: epoll reports errors and hang-ups
            // even for an empty mask, which would wake a paused source in a loop.
            return match epoll::delete(&self.epfd, bfd) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        let data = EventData::new_u64(key as u64);
        let flags = flags(interest, trigger);
        // Both re-poll the descriptor, so an edge registration whose condition already holds
        // is reported at the next wait.
        match epoll::modify(&self.epfd, bfd, data, flags) {
            Err(rustix::io::Errno::NOENT) => Ok(epoll::add(&self.epfd, bfd, data, flags)?),
            other => Ok(other?),
        }
    }

    fn deregister(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: registered descriptors stay open until deregistered (`register`'s contract).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        match epoll::delete(&self.epfd, fd) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn wait(&self, out: &mut Vec<BackendEvent>, timeout: Option<Duration>) -> io::Result<()> {
        let mut events = self.events.borrow_mut();
        events.clear();
        let timeout = timeout.map(|t| {
            // Round up to whole milliseconds so a timer is never woken for early, and wait at
            // most a day (an early return is allowed): a timeout beyond `i32::MAX`
            // milliseconds would need `epoll_pwait2`, which older kernels and seccomp
            // profiles refuse.
            let t = t
                .saturating_add(Duration::from_nanos(999_999))
                .min(MAX_WAIT);
            Timespec {
                tv_sec: t.as_secs() as _,
                tv_nsec: (t.subsec_millis() * 1_000_000) as _,
            }
        });
        match epoll::wait(
            &self.epfd,
            rustix::buffer::spare_capacity(&mut *events),
            timeout.as_ref(),
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter() {
            let key = ev.data.u64();
            if key == WAKE_KEY {
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&self.waker.0, &mut buf);
                continue;
            }
            let f = ev.flags;
            let error = f.intersects(EventFlags::ERR | EventFlags::HUP);
            out.push(BackendEvent {
                key: key as usize,
                readiness: Readiness {
                    readable: error
                        || f.intersects(EventFlags::IN | EventFlags::RDHUP | EventFlags::PRI),
                    writable: error || f.contains(EventFlags::OUT),
                    read_stops_early: error || f.intersects(EventFlags::RDHUP | EventFlags::PRI),
                },
            });
        }
        Ok(())
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.waker.clone()
    }
}
