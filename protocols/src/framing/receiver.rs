//! What every receiver adapter shares: pausing, the closing rules, protocol-error closes and
//! the first-frame deadline.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use torsion_reactor::{CloseReason, Transport, TransportHandle};

use super::Decoder;
use crate::policies::Deadline;

/// Bytes a paused receiver accepts beyond its limit before it decides the transport ignores
/// `pause_reading` (one reactor read).
const PAUSED_SLACK: usize = torsion_reactor::READ_BUFFER_SIZE;

/// Whether a decoder's buffer starts with a whole frame (not one it would report as an
/// error).
pub(crate) trait HoldsFrame {
    fn holds_frame(&mut self) -> bool;
}

/// Runs a receiver's delivery loop on buffered bytes (after a resume).
pub(crate) trait Drain {
    fn drain(&self, transport: &dyn Transport);
}

/// State shared between a receiver and its [`ReceiverHandle`]s.
pub(crate) struct Shared {
    user_paused: Cell<bool>,
    flow_paused: Cell<bool>,
    transport: RefCell<Option<TransportHandle>>,
    drain: RefCell<Option<Weak<dyn Drain>>>,
}

impl Shared {
    pub(crate) fn set_drain(&self, drain: Weak<dyn Drain>) {
        *self.drain.borrow_mut() = Some(drain);
    }

    #[inline]
    pub(crate) fn is_paused(&self) -> bool {
        self.user_paused.get() || self.flow_paused.get()
    }

    pub(crate) fn pause(&self) {
        if self.user_paused.replace(true) {
            return;
        }
        if !self.flow_paused.get() {
            if let Some(t) = self.transport.borrow().as_ref() {
                t.pause_reading();
            }
        }
    }

    fn resume(&self) {
        if !self.user_paused.replace(false) || self.flow_paused.get() {
            return;
        }
        let Some(t) = self.transport.borrow().clone() else {
            return;
        };
        let drain = self.drain.borrow().clone();
        // Deliver on the next turn, not from inside whatever callback called us (which may be
        // this receiver's own).
        t.reactor().call_soon(move |_| {
            if let Some(d) = drain.and_then(|d| d.upgrade()) {
                d.drain(&*t);
            }
        });
    }

    /// The transport's write buffer is full: stop delivering and reading.
    pub(crate) fn flow_pause(&self, t: &dyn Transport) {
        if self.flow_paused.replace(true) {
            return;
        }
        if !self.user_paused.get() {
            t.pause_reading();
        }
    }

    /// The write buffer drained; `true` if delivery may go on now.
    pub(crate) fn flow_resume(&self, _t: &dyn Transport) -> bool {
        self.flow_paused.replace(false) && !self.user_paused.get()
    }

    /// After delivering what was buffered: read again unless paused again meanwhile.
    pub(crate) fn resume_reading_if_running(&self, t: &dyn Transport) {
        if !self.is_paused() && !t.is_fully_closing() {
            t.resume_reading();
        }
    }
}

/// Pauses and resumes a receiver from outside its callbacks (Twisted's `pauseProducing` /
/// `resumeProducing` on a receiver).
///
/// While paused, the receiver delivers no frames and the transport stops reading; bytes
/// already read stay buffered (at most the frame limit plus one read). On
/// [`resume`](Self::resume) the buffered frames are delivered on the next reactor turn, then
/// reading resumes. A handle is cheap to clone and only usable on the reactor thread.
///
/// ```
/// use torsion_protocols::framing::{LineContext, LineHandler, LineReceiver};
/// use torsion_reactor::testing::{MemoryReactor, StringTransport};
///
/// struct Echo;
/// impl LineHandler for Echo {
///     fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
///         ctx.send_line(line);
///     }
/// }
///
/// let receiver = LineReceiver::new(Echo);
/// let handle = receiver.handle();
/// let mr = MemoryReactor::new();
/// let st = StringTransport::connect(&mr, receiver);
/// handle.pause();
/// st.feed(b"a\r\nb\r\n");
/// assert!(st.take().is_empty());
/// handle.resume();
/// mr.run_until_idle();
/// assert_eq!(st.take(), b"a\r\nb\r\n");
/// ```
#[derive(Clone)]
pub struct ReceiverHandle {
    shared: Rc<Shared>,
}

impl ReceiverHandle {
    /// Stops delivering frames and pauses reading.
    pub fn pause(&self) {
        self.shared.pause();
    }

    /// Undoes [`pause`](Self::pause): buffered frames are delivered on the next turn, then
    /// reading resumes (unless the transport's write buffer is still full).
    pub fn resume(&self) {
        self.shared.resume();
    }

    /// `true` while paused by [`pause`](Self::pause) or by a full write buffer.
    pub fn is_paused(&self) -> bool {
        self.shared.is_paused()
    }
}

impl fmt::Debug for ReceiverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverHandle")
            .field("user_paused", &self.shared.user_paused.get())
            .field("flow_paused", &self.shared.flow_paused.get())
            .finish()
    }
}

/// The per-connection state every receiver adapter keeps besides its decoder and handler.
pub(crate) struct Core {
    pub(crate) shared: Rc<Shared>,
    error: Option<String>,
    pub(crate) first_frame_timeout: Option<Duration>,
    deadline: Option<Deadline>,
    first_seen: bool,
}

impl Core {
    pub(crate) fn new() -> Self {
        Core {
            shared: Rc::new(Shared {
                user_paused: Cell::new(false),
                flow_paused: Cell::new(false),
                transport: RefCell::new(None),
                drain: RefCell::new(None),
            }),
            error: None,
            first_frame_timeout: None,
            deadline: None,
            first_seen: false,
        }
    }

    pub(crate) fn handle(&self) -> ReceiverHandle {
        ReceiverHandle {
            shared: self.shared.clone(),
        }
    }

    pub(crate) fn connection_made(&mut self, t: &dyn Transport) {
        *self.shared.transport.borrow_mut() = Some(t.handle());
        if self.shared.is_paused() {
            t.pause_reading();
        }
        if let Some(timeout) = self.first_frame_timeout {
            self.deadline = Some(Deadline::start(t, timeout, "first whole frame"));
        }
    }

    /// Called before each frame (or raw chunk) is delivered, and when one arrives while
    /// paused (it has arrived, even if it is delivered only on resume).
    #[inline]
    pub(crate) fn frame_arrived(&mut self) {
        if !self.first_seen {
            self.first_seen = true;
            if let Some(d) = &self.deadline {
                d.cancel();
            }
        }
    }

    /// `true` once nothing more may be delivered.
    #[inline]
    pub(crate) fn stopped(&self, t: &dyn Transport) -> bool {
        self.error.is_some() || t.is_fully_closing()
    }

    pub(crate) fn close_with_error(&mut self, t: &dyn Transport, message: String) {
        if self.error.is_none() {
            tracing::debug!(peer = %t.peer_address(), error = %message, "closing connection: protocol error");
            self.error = Some(message);
        }
        t.lose_connection();
    }

    /// After held frames were delivered on a resume (`deliver` is the receiver's delivery
    /// loop on no new bytes, run through
    /// [`catch_unwind_message`](torsion_reactor::catch_unwind_message)): reads again.
    ///
    /// That delivery runs from the reactor's queue, not from a connection callback, so a
    /// handler panic would only be logged there and leave the connection open with reading
    /// paused for good: it aborts the connection instead, as a panic in any connection
    /// callback does ([`Transport::abort_for_panic`]: the handler hears
    /// [`CloseReason::Panic`]).
    pub(crate) fn drained(&mut self, t: &dyn Transport, deliver: Result<(), String>) {
        match deliver {
            Ok(()) => self.shared.resume_reading_if_running(t),
            Err(msg) => t.abort_for_panic(msg),
        }
    }

    /// Keeps `input` for later while paused; closes if the transport ignores the pause.
    pub(crate) fn buffer_while_paused(
        &mut self,
        t: &dyn Transport,
        decoder: &mut (impl Decoder + HoldsFrame),
        input: &[u8],
        limit: usize,
    ) {
        if input.is_empty() {
            return;
        }
        if decoder.buffered().saturating_add(input.len()) > limit.saturating_add(PAUSED_SLACK) {
            decoder.clear();
            self.close_with_error(
                t,
                format!(
                    "more than {} bytes arrived while the receiver was paused",
                    limit.saturating_add(PAUSED_SLACK)
                ),
            );
            return;
        }
        decoder.push_back(input);
        // A whole first frame that arrives while paused arrived in time, though it is
        // delivered only on resume.
        if !self.first_seen && self.deadline.is_some() && decoder.holds_frame() {
            self.frame_arrived();
        }
    }

    /// The reason to report to the handler.
    pub(crate) fn connection_lost(&mut self, reason: CloseReason) -> CloseReason {
        *self.shared.transport.borrow_mut() = None;
        let timed_out = self.deadline.as_ref().is_some_and(|d| d.fired());
        if let Some(d) = self.deadline.take() {
            d.cancel();
        }
        if let Some(msg) = self.error.take() {
            CloseReason::ProtocolError(msg)
        } else if timed_out {
            CloseReason::TimedOut
        } else {
            reason
        }
    }
}
