//! The backend of the in-memory test reactor: it has no descriptors and never blocks.
//!
//! Everything on a [`MemoryReactor`](crate::testing::MemoryReactor) happens through timers,
//! "call soon" work and in-memory transports, so `wait` only returns. Registering a real
//! descriptor here is refused: a socket has no place on a virtual clock.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use super::{Backend, BackendEvent, Interest, Trigger, Waker};

pub(crate) struct NullBackend;

struct NullWaker;

impl Waker for NullWaker {
    fn wake(&self) -> io::Result<()> {
        Ok(())
    }
}

fn refuse() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the in-memory test reactor has no sockets; use a real Reactor for socket tests",
    )
}

impl Backend for NullBackend {
    unsafe fn register(
        &self,
        _fd: RawFd,
        _key: usize,
        _interest: Interest,
        _trigger: Trigger,
    ) -> io::Result<()> {
        Err(refuse())
    }

    fn reregister(
        &self,
        _fd: RawFd,
        _key: usize,
        _interest: Interest,
        _trigger: Trigger,
    ) -> io::Result<()> {
        Err(refuse())
    }

    fn deregister(&self, _fd: RawFd) -> io::Result<()> {
        Ok(())
    }

    fn wait(&self, _events: &mut Vec<BackendEvent>, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }

    fn waker(&self) -> Arc<dyn Waker> {
        Arc::new(NullWaker)
    }
}
