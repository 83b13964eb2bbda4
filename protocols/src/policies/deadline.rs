//! [`Deadline`]: abort a connection unless something happens in time.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::{DelayedCall, Transport};

/// Aborts a connection unless [`cancel`](Deadline::cancel) is called within a timeout: the
/// building block of slowloris defences (the receivers'
/// [`first_frame_timeout`](crate::framing::LineReceiver::first_frame_timeout) is one).
///
/// When it fires, the connection is aborted ([`Transport::abort_connection`]: a peer that is
/// too slow is not owed a graceful close) and [`fired`](Deadline::fired) turns `true`, so the
/// protocol can report [`CloseReason::TimedOut`](torsion_reactor::CloseReason::TimedOut). A
/// connection already closing ([`Transport::is_closing`]) is left alone: a graceful close is
/// bounded by the transport's own close timeout. ([`IdleTimeout`](super::IdleTimeout), which
/// sees the half-closes of the protocol it wraps, still fires on a connection whose writing
/// side alone was closed: its reading side has no timeout of its own.)
///
/// ```
/// use std::time::Duration;
/// use torsion_protocols::policies::Deadline;
/// use torsion_reactor::testing::{MemoryReactor, StringTransport};
/// use torsion_reactor::{Protocol, Transport};
///
/// /// Wants a byte within 5 seconds.
/// #[derive(Default)]
/// struct Impatient(Option<Deadline>);
/// impl Protocol for Impatient {
///     fn connection_made(&mut self, t: &mut dyn Transport) {
///         self.0 = Some(Deadline::start(t, Duration::from_secs(5), "first byte"));
///     }
///     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {
///         if let Some(d) = &self.0 { d.cancel(); }
///     }
/// }
///
/// let mr = MemoryReactor::new();
/// let st = StringTransport::connect(&mr, Impatient::default());
/// mr.advance(Duration::from_secs(5));
/// assert!(st.reset_received());
/// ```
#[must_use = "dropping a Deadline does not cancel it"]
pub struct Deadline {
    call: DelayedCall,
    pub(crate) fired: Rc<Cell<bool>>,
    /// Our side half-closed and no full close was asked for since: a closing transport is
    /// then not a reason to hold back (`is_closing` does not tell the two apart).
    half_closed: Rc<Cell<bool>>,
}

impl Deadline {
    /// Aborts the connection of `transport` in `timeout` unless cancelled; `what` names the
    /// awaited event in the debug log.
    pub fn start(transport: &dyn Transport, timeout: Duration, what: &'static str) -> Self {
        let handle = transport.handle();
        let fired = Rc::new(Cell::new(false));
        let flag = fired.clone();
        let half_closed = Rc::new(Cell::new(false));
        let half = half_closed.clone();
        let call = transport.reactor().call_later(timeout, move |_| {
            if handle.is_closing() && !half.get() {
                return;
            }
            flag.set(true);
            tracing::debug!(peer = %handle.peer_address(), ?timeout, "no {what} in time; aborting connection");
            handle.abort_connection();
        });
        Deadline {
            call,
            fired,
            half_closed,
        }
    }

    /// Our side is half-closing the connection (`lose_write_connection` on an open
    /// transport): the deadline then still fires although the transport reports
    /// [`is_closing`](Transport::is_closing).
    pub(crate) fn half_close_started(&self) {
        self.half_closed.set(true);
    }

    /// A full close was asked for (`lose_connection`): a closing connection is left alone
    /// again, as the close has a timeout of its own.
    pub(crate) fn full_close_started(&self) {
        self.half_closed.set(false);
    }

    /// The awaited event happened: the deadline will not fire.
    pub fn cancel(&self) {
        self.call.cancel();
    }

    /// Moves the deadline to `timeout` from now (ignored once fired or cancelled).
    pub fn reset(&self, timeout: Duration) {
        self.call.reset(timeout);
    }

    /// `true` once the deadline passed and the connection was aborted.
    pub fn fired(&self) -> bool {
        self.fired.get()
    }

    /// `true` until it fired or was cancelled.
    pub fn active(&self) -> bool {
        self.call.active()
    }
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline")
            .field("remaining", &self.call.remaining())
            .field("fired", &self.fired.get())
            .finish()
    }
}
