//! [`IdleTimeout`]: close connections that see no traffic for a while.

use std::cell::Cell;
use std::fmt;
use std::io::IoSlice;
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::{CloseReason, Protocol, Transport};

use super::deadline::Deadline;
use super::wrap::{forward_protocol_rest, pick, Hooked, Hooks};

struct IdleHooks {
    timeout: Duration,
    deadline: Deadline,
}

impl IdleHooks {
    #[inline]
    fn touch(&self) {
        self.deadline.reset(self.timeout);
    }
}

impl Hooks for IdleHooks {
    fn write(&self, inner: &dyn Transport, data: &[u8]) {
        if !data.is_empty() {
            self.touch();
        }
        inner.write(data)
    }
    fn write_vectored(&self, inner: &dyn Transport, bufs: &[IoSlice<'_>]) {
        self.touch();
        inner.write_vectored(bufs)
    }
    fn lose_connection(&self, inner: &dyn Transport) {
        self.deadline.full_close_started();
        inner.lose_connection()
    }
    fn lose_write_connection(&self, inner: &dyn Transport) {
        if !inner.is_closing() {
            self.deadline.half_close_started();
        }
        inner.lose_write_connection()
    }
}

/// Closes a connection that sees no bytes either way for `timeout` (Twisted's
/// `TimeoutProtocol` / `TimeoutMixin`), reporting [`CloseReason::TimedOut`] to the wrapped
/// protocol.
///
/// Every read and every write through the transport the wrapped protocol is given (or a
/// handle taken from it) pushes the deadline back; that costs one
/// [`DelayedCall::reset`](torsion_reactor::DelayedCall::reset), which is O(1) (no timer
/// queue operation). When it fires the connection is aborted: an idle peer is not owed a
/// graceful close, and a peer that stopped reading would hold a graceful one open.
///
/// A half-closed connection (the wrapped protocol called
/// [`lose_write_connection`](Transport::lose_write_connection)) still times out: nothing else
/// bounds its reading side, on TCP or TLS. A full close already under way (the wrapped
/// protocol's [`lose_connection`](Transport::lose_connection), also after a half-close, or
/// one the transport started on a connection the protocol had not half-closed) is left alone,
/// as the transport's close timeout bounds it: an idle timeout does not cut short the flush
/// of a graceful close.
///
/// ```
/// use std::time::Duration;
/// use torsion_protocols::policies::IdleTimeout;
/// use torsion_protocols::wire::Echo;
/// use torsion_reactor::testing::{MemoryReactor, StringTransport};
///
/// let mr = MemoryReactor::new();
/// let st = StringTransport::connect(&mr, IdleTimeout::new(Echo, Duration::from_secs(10)));
/// mr.advance(Duration::from_secs(9));
/// st.feed(b"ping"); // traffic: the clock starts again
/// mr.advance(Duration::from_secs(9));
/// assert!(st.lost().is_none());
/// mr.advance(Duration::from_secs(1));
/// assert!(st.lost().is_some());
/// ```
pub struct IdleTimeout<P> {
    inner: P,
    timeout: Duration,
    hooked: Option<Rc<Hooked<IdleHooks>>>,
    fired: Rc<Cell<bool>>,
}

impl<P: Protocol> IdleTimeout<P> {
    /// Wraps `protocol` with an idle timeout of `timeout`.
    pub fn new(protocol: P, timeout: Duration) -> Self {
        IdleTimeout {
            inner: protocol,
            timeout,
            hooked: None,
            fired: Rc::new(Cell::new(false)),
        }
    }

    /// The wrapped protocol.
    pub fn get_ref(&self) -> &P {
        &self.inner
    }
}

impl<P: Protocol> Protocol for IdleTimeout<P> {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        let deadline = Deadline::start(transport, self.timeout, "traffic");
        self.fired = deadline.fired.clone();
        let hooked = Hooked::new(
            transport.handle(),
            IdleHooks {
                timeout: self.timeout,
                deadline,
            },
        );
        self.hooked = Some(hooked);
        let mut t = pick(&self.hooked, transport);
        self.inner.connection_made(&mut t);
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        if let Some(h) = &self.hooked {
            h.hooks.touch();
        }
        let mut t = pick(&self.hooked, transport);
        self.inner.data_received(&mut t, data);
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        if let Some(h) = self.hooked.take() {
            h.hooks.deadline.cancel();
        }
        let reason = if self.fired.get() {
            CloseReason::TimedOut
        } else {
            reason
        };
        self.inner.connection_lost(reason);
    }

    forward_protocol_rest!();
}

impl<P> fmt::Debug for IdleTimeout<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("timeout", &self.timeout)
            .field("fired", &self.fired.get())
            .finish()
    }
}
