//! In-memory byte pipes: the [`StreamIo`] of the test kit.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::rc::{Rc, Weak};

use crate::backend::{Interest, Readiness};
use crate::connection::StreamIo;
use crate::reactor::WeakReactor;
use crate::registration::Source;

/// One direction of an in-memory connection.
pub(crate) struct Pipe {
    data: VecDeque<u8>,
    /// Bytes the pipe holds before writes return `WouldBlock` (the "socket buffer").
    pub(crate) capacity: usize,
    /// The writer sent FIN.
    eof: bool,
    /// The connection was reset: reads and writes fail with `ConnectionReset`.
    reset: bool,
    /// The writing end aborted (sent a reset, not a FIN).
    aborted: bool,
    /// The reading end was closed: writes fail with `BrokenPipe`.
    reader_closed: bool,
    reader: Weak<End>,
    writer: Weak<End>,
}

impl Pipe {
    pub(crate) fn new(capacity: usize) -> Rc<RefCell<Pipe>> {
        Rc::new(RefCell::new(Pipe {
            data: VecDeque::new(),
            capacity,
            eof: false,
            reset: false,
            aborted: false,
            reader_closed: false,
            reader: Weak::new(),
            writer: Weak::new(),
        }))
    }

    fn readable(&self) -> bool {
        !self.data.is_empty() || self.eof || self.reset
    }

    fn writable(&self) -> bool {
        self.data.len() < self.capacity || self.reset || self.reader_closed
    }
}

/// One end of an in-memory connection: reads `rx`, writes `tx`.
pub(crate) struct End {
    pub(crate) rx: Rc<RefCell<Pipe>>,
    pub(crate) tx: Rc<RefCell<Pipe>>,
    /// Largest chunk one read returns (down to 1 byte, to test reassembly).
    pub(crate) chunk: usize,
    reactor: WeakReactor,
    /// The connection fed by this end; kept alive here (as a socket's registration does)
    /// until the end is closed.
    source: RefCell<Option<Rc<dyn Source>>>,
    interest: Cell<Interest>,
    scheduled: Cell<bool>,
}

impl End {
    pub(crate) fn new(
        reactor: WeakReactor,
        rx: Rc<RefCell<Pipe>>,
        tx: Rc<RefCell<Pipe>>,
        chunk: usize,
    ) -> Rc<End> {
        let end = Rc::new(End {
            rx,
            tx,
            chunk: chunk.max(1),
            reactor,
            source: RefCell::new(None),
            interest: Cell::new(Interest::NONE),
            scheduled: Cell::new(false),
        });
        end.rx.borrow_mut().reader = Rc::downgrade(&end);
        end.tx.borrow_mut().writer = Rc::downgrade(&end);
        end
    }

    fn readiness(&self) -> Readiness {
        let interest = self.interest.get();
        Readiness {
            readable: interest.readable && self.rx.borrow().readable(),
            writable: interest.writable && self.tx.borrow().writable(),
            read_stops_early: false,
        }
    }

    /// Schedules a readiness check on the next turn (coalesced), giving level semantics.
    pub(crate) fn kick(self: &Rc<Self>) {
        if self.scheduled.get() || self.source.borrow().is_none() {
            return;
        }
        let r = self.readiness();
        if !r.readable && !r.writable {
            return;
        }
        let Some(reactor) = self.reactor.upgrade() else {
            return;
        };
        self.scheduled.set(true);
        let me = Rc::downgrade(self);
        reactor.call_soon(move |_| {
            let Some(end) = me.upgrade() else { return };
            end.scheduled.set(false);
            let r = end.readiness();
            let source = end.source.borrow().clone();
            if let (Some(source), true) = (source, r.readable || r.writable) {
                source.ready(r);
            }
        });
    }

    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rx = self.rx.borrow_mut();
        if rx.data.is_empty() {
            // As TCP does, bytes that reached this end before the reset are still read
            // first; the reset shows once they are gone.
            return if rx.reset {
                Err(io::ErrorKind::ConnectionReset.into())
            } else if rx.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let was_full = rx.data.len() >= rx.capacity;
        let n = buf.len().min(self.chunk).min(rx.data.len());
        for (dst, src) in buf[..n].iter_mut().zip(rx.data.drain(..n)) {
            *dst = src;
        }
        let writer = rx.writer.upgrade();
        drop(rx);
        if was_full {
            if let Some(w) = writer {
                w.kick();
            }
        }
        Ok(n)
    }

    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut tx = self.tx.borrow_mut();
        if tx.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if tx.eof {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if tx.reader_closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = tx.capacity.saturating_sub(tx.data.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        tx.data.extend(&buf[..n]);
        let reader = tx.reader.upgrade();
        drop(tx);
        if let Some(r) = reader {
            r.kick();
        }
        Ok(n)
    }

    pub(crate) fn shutdown_write(&self) {
        let mut tx = self.tx.borrow_mut();
        tx.eof = true;
        let reader = tx.reader.upgrade();
        drop(tx);
        if let Some(r) = reader {
            r.kick();
        }
    }

    /// Closes this end; `reset` makes the peer see a reset instead of FIN.
    pub(crate) fn close(&self, reset: bool) {
        {
            let mut tx = self.tx.borrow_mut();
            tx.eof = true;
            tx.reset |= reset;
            tx.aborted |= reset;
        }
        {
            let mut rx = self.rx.borrow_mut();
            rx.reader_closed = true;
            // Like TCP: closing with unread data (or aborting) resets the connection.
            if reset || !rx.data.is_empty() {
                rx.reset = true;
            }
            rx.data.clear();
        }
        *self.source.borrow_mut() = None;
        for end in [
            self.tx.borrow().reader.upgrade(),
            self.rx.borrow().writer.upgrade(),
        ]
        .into_iter()
        .flatten()
        {
            end.kick();
        }
    }

    pub(crate) fn set_interest(self: &Rc<Self>, interest: Interest) {
        self.interest.set(interest);
        self.kick();
    }

    pub(crate) fn attach(self: &Rc<Self>, source: Rc<dyn Source>) {
        if let Some(reactor) = self.reactor.upgrade() {
            reactor.track_detached(&source);
        }
        *self.source.borrow_mut() = Some(source);
        self.kick();
    }

    /// Bytes this end wrote that the other end has not read yet.
    pub(crate) fn unread_by_peer(&self) -> usize {
        self.tx.borrow().data.len()
    }

    /// Bytes waiting to be read at this end.
    pub(crate) fn available(&self) -> usize {
        self.rx.borrow().data.len()
    }

    /// The other end sent FIN (not a reset) and everything before it was read.
    pub(crate) fn at_eof(&self) -> bool {
        let rx = self.rx.borrow();
        rx.eof && rx.data.is_empty() && !rx.aborted
    }

    /// The other end aborted (a reset this end caused itself does not count).
    pub(crate) fn was_reset(&self) -> bool {
        self.rx.borrow().aborted
    }
}

/// The [`StreamIo`] of one end of an in-memory connection.
pub(crate) struct MemoryIo {
    pub(crate) end: Rc<End>,
    abort: bool,
}

impl MemoryIo {
    pub(crate) fn new(end: Rc<End>) -> Self {
        MemoryIo { end, abort: false }
    }
}

impl Drop for MemoryIo {
    fn drop(&mut self) {
        self.end.close(self.abort);
    }
}

impl StreamIo for MemoryIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.end.read(buf)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.end.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            match self.end.write(b) {
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.end.shutdown_write();
        Ok(())
    }

    fn prepare_abort(&mut self) {
        self.abort = true;
    }

    fn set_interest(&mut self, interest: Interest) -> io::Result<()> {
        self.end.set_interest(interest);
        Ok(())
    }

    fn attach(&mut self, source: Rc<dyn Source>) {
        self.end.attach(source);
    }

    fn set_no_delay(&mut self, _on: bool) -> io::Result<()> {
        Ok(())
    }
}
