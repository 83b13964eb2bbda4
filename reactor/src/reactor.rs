//! The reactor: one event loop per thread.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use crate::backend::EpollBackend;
use crate::backend::{
    Backend, BackendEvent, BackendKind, Interest, NullBackend, PollingBackend, Readiness, Waker,
};
use crate::busy_poll::{BusyPoll, DEFAULT_BUSY_POLL};
use crate::clock::{Clock, VirtualClock};
use crate::error::{Error, Result};
use crate::panic::catch_unwind_message;
use crate::registration::{Registered, Slots, Source};
use crate::timer::{DelayedCall, TimerQueue};

/// Size of the read buffer the reactor lends to transports (one per reactor, not per
/// connection: an idle connection holds no read buffer). A stream transport reads at most
/// [`StreamIo::read_size`](crate::StreamIo::read_size) bytes of it at a time.
///
/// 256 KiB: against 64 KiB, TCP bulk echo with one connection measured 1.25x the throughput
/// (8 of 8 rounds ahead, with about a fifth less server CPU per MiB): larger reads make larger
/// echoes, and the load generator on the other end makes fewer calls to take them.
pub const READ_BUFFER_SIZE: usize = 256 * 1024;

/// The reactor's read buffer: [`READ_BUFFER_SIZE`] bytes starting on a page boundary.
///
/// The alignment is for the kernel: copying a socket's pages to and from a page-aligned user
/// buffer runs at full speed, while an arbitrary heap address made `send` on Unix sockets cost
/// about half again as much CPU per byte (measured with `perf` on the Unix bulk echo).
pub struct ReadBuffer {
    storage: Vec<u8>,
    start: usize,
}

const PAGE: usize = 4096;

impl ReadBuffer {
    fn new() -> Self {
        let storage = vec![0; READ_BUFFER_SIZE + PAGE];
        let start = storage.as_ptr().align_offset(PAGE);
        Self { storage, start }
    }
}

impl std::ops::Deref for ReadBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + READ_BUFFER_SIZE]
    }
}

impl std::ops::DerefMut for ReadBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + READ_BUFFER_SIZE]
    }
}

/// Default time [`Reactor::stop`] waits for [`ShutdownHold`]s before stopping anyway.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

type Callback = Box<dyn FnOnce(&Reactor)>;
type SendCallback = Box<dyn FnOnce(&Reactor) + Send>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Idle,
    Running,
    Stopping,
    Stopped,
}

/// The phases of a graceful stop, in the order they run (Twisted's system event triggers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownPhase {
    /// Runs as soon as [`Reactor::stop`] is called, while the reactor still serves I/O. Work
    /// that must finish before the stop (draining connections) takes a
    /// [`ShutdownHold`] here; the stop waits until every hold is released or the shutdown
    /// timeout passes.
    Before,
    /// Runs once the holds are released (or timed out), still on the reactor thread.
    During,
    /// Runs last, just before [`Reactor::run`] returns.
    After,
}

pub(crate) struct Shared {
    queue: Mutex<Vec<SendCallback>>,
    pending: AtomicBool,
    alive: AtomicBool,
    waker: Arc<dyn Waker>,
}

pub(crate) struct Inner {
    pub(crate) backend: Box<dyn Backend>,
    pub(crate) clock: Clock,
    pub(crate) slots: RefCell<Slots>,
    /// Sources kept alive by something other than a slot (in-memory connections, held by
    /// their pipe end): closed at drop like registered ones, to break the cycle through them.
    detached: RefCell<Vec<Weak<dyn Source>>>,
    pub(crate) timers: RefCell<TimerQueue>,
    soon: RefCell<VecDeque<Callback>>,
    shared: Arc<Shared>,
    state: Cell<RunState>,
    in_run: Cell<bool>,
    force_stop: Cell<bool>,
    startup: RefCell<Vec<Callback>>,
    shutdown: RefCell<[Vec<Callback>; 3]>,
    holds: Rc<Cell<usize>>,
    shutdown_timeout: Cell<Duration>,
    busy_poll: Cell<BusyPoll>,
    read_buf: Cell<Option<ReadBuffer>>,
    events: Cell<Vec<BackendEvent>>,
    /// Keys of edge-triggered sources that stopped reading early: told readable again next
    /// turn ([`Registered::ready_again`](crate::Registered::ready_again)).
    again: RefCell<Vec<usize>>,
    signals: RefCell<Vec<signal_hook::SigId>>,
}

/// Reactors in this process that turned SIGINT and SIGTERM into a stop, and the flag that,
/// once none is left, makes the two signals take their default action again (signal-hook
/// cannot uninstall its handler, only stop calling an action).
static SIGNAL_USERS: Mutex<usize> = Mutex::new(0);
static SIGNAL_DEFAULT: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn signal_user_arrived() -> Result<()> {
    let mut users = SIGNAL_USERS.lock().unwrap_or_else(|e| e.into_inner());
    let flag = match SIGNAL_DEFAULT.get() {
        Some(flag) => flag.clone(),
        None => {
            let flag = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register_conditional_default(sig, flag.clone())
                    .map_err(|e| Error::io("install the default-action fallback", e))?;
            }
            SIGNAL_DEFAULT.get_or_init(|| flag).clone()
        }
    };
    *users += 1;
    flag.store(false, Ordering::SeqCst);
    Ok(())
}

fn signal_users_left() {
    let mut users = SIGNAL_USERS.lock().unwrap_or_else(|e| e.into_inner());
    *users = users.saturating_sub(1);
    if *users == 0 {
        if let Some(flag) = SIGNAL_DEFAULT.get() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

/// How many rounds of "call soon" work the close on drop runs (see `Drop for Reactor`).
const CLOSE_ROUNDS: usize = 64;

/// Dropping the last handle to a reactor that is not running ends everything still open on it
/// as Twisted's reactor does when it shuts down: each connection is closed at once (what it
/// had not written yet is dropped; the peer sees the socket close) and hears
/// `connection_lost` ([`CloseReason::Aborted`](crate::CloseReason::Aborted)), each listening
/// port stops (its factory's stop hook runs), each datagram protocol hears `stop_protocol`
/// and each connection attempt fails. The reactor still exists while those callbacks run; what
/// they open or schedule then is dropped with it, without callbacks.
impl Drop for Reactor {
    fn drop(&mut self) {
        if Rc::strong_count(&self.inner) != 1 || self.inner.in_run.get() {
            return;
        }
        let mut sources = self.inner.slots.borrow().all();
        sources.extend(
            self.inner
                .detached
                .borrow()
                .iter()
                .filter_map(Weak::upgrade),
        );
        if sources.is_empty() {
            return;
        }
        // Work queued before and never run is dropped with the reactor, as always (run now, it
        // could start new work: a connection attempt's name resolution); only what the closing
        // itself queues runs.
        let queued = std::mem::take(&mut *self.inner.soon.borrow_mut());
        for source in &sources {
            source.reactor_closing();
        }
        drop(sources);
        for _ in 0..CLOSE_ROUNDS {
            if self.run_soon() == 0 {
                break;
            }
        }
        drop(queued);
    }
}

impl Inner {
    /// Tells the source under `key` it is readable at the end of the next turn.
    pub(crate) fn ready_again(&self, key: usize) {
        self.again.borrow_mut().push(key);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        {
            // Under the queue's lock (see `ReactorHandle::call_from_thread`); work queued but
            // never run is dropped here, on this thread.
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.alive.store(false, Ordering::SeqCst);
            queue.clear();
        }
        let signals: Vec<_> = self.signals.get_mut().drain(..).collect();
        if !signals.is_empty() {
            for id in signals {
                signal_hook::low_level::unregister(id);
            }
            signal_users_left();
        }
        // Close every source still registered (connections, ports) so no descriptor leaks when a
        // reactor is dropped without being stopped.
        let sources = self.slots.get_mut().drain();
        for source in &sources {
            source.reactor_dropped();
        }
        drop(sources);
        let detached = std::mem::take(self.detached.get_mut());
        for source in detached.iter().filter_map(Weak::upgrade) {
            source.reactor_dropped();
        }
        // A pending timer's callback may own its own `DelayedCall` (or a handle to something
        // that does): drop every callback so no cycle through a timer entry outlives us.
        let callbacks = self.timers.get_mut().cancel_all();
        drop(callbacks);
    }
}

/// The event loop: waits for readiness, runs timers and dispatches I/O to transports.
///
/// A `Reactor` is a cheap, cloneable handle to one event loop. It is not `Send`: everything
/// attached to it (connections, timers, protocols) lives on the thread that runs it, so
/// callbacks need no locks. Other threads reach it only through a [`ReactorHandle`].
///
/// # One turn of the loop
///
/// 1. run the timers that are due;
/// 2. run the work queued with [`call_soon`](Reactor::call_soon) before this turn began;
/// 3. wait for readiness, at most until the next timer is due (not at all if work is queued),
///    polling without blocking for a short adaptive window first
///    ([`set_busy_poll`](Reactor::set_busy_poll));
/// 4. dispatch each ready source: reads are bounded per connection per turn, so one flooding
///    connection cannot starve the others;
/// 5. run the work queued from other threads with [`ReactorHandle::call_from_thread`].
///
/// Every user callback runs with no reactor-internal borrow held, so a callback may write to
/// any connection, schedule or cancel timers, listen, connect or stop the reactor. A panic in
/// a callback is caught: a connection whose protocol panicked is aborted with
/// [`CloseReason::Panic`](crate::CloseReason::Panic); a panicking timer is logged and skipped.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use torsion_reactor::Reactor;
///
/// let reactor = Reactor::new()?;
/// reactor.call_later(Duration::from_millis(10), |r| r.stop());
/// reactor.run()?;
/// # Ok::<(), torsion_reactor::Error>(())
/// ```
#[derive(Clone)]
pub struct Reactor {
    inner: Rc<Inner>,
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("state", &self.inner.state.get())
            .field("sources", &self.inner.slots.borrow().live())
            .field("virtual_clock", &self.inner.clock.is_virtual())
            .finish()
    }
}

impl Reactor {
    /// A reactor on the platform's best backend ([`BackendKind::Auto`]) and the real
    /// monotonic clock.
    pub fn new() -> Result<Reactor> {
        Self::with_backend(BackendKind::Auto)
    }

    /// A reactor on a chosen readiness backend.
    pub fn with_backend(kind: BackendKind) -> Result<Reactor> {
        let backend: Box<dyn Backend> = match kind {
            #[cfg(target_os = "linux")]
            BackendKind::Auto | BackendKind::Epoll => Box::new(
                EpollBackend::new().map_err(|e| Error::io("create the epoll instance", e))?,
            ),
            #[cfg(not(target_os = "linux"))]
            BackendKind::Epoll => {
                return Err(Error::io(
                    "create the epoll backend",
                    io::Error::from(io::ErrorKind::Unsupported),
                ))
            }
            _ => Box::new(
                PollingBackend::new().map_err(|e| Error::io("create the event poller", e))?,
            ),
        };
        Ok(Self::with_parts(
            backend,
            Clock::Real(std::time::Instant::now()),
        ))
    }

    /// A reactor with no descriptors on a virtual clock (the engine of the test kit).
    pub(crate) fn new_virtual(clock: VirtualClock) -> Reactor {
        let reactor = Self::with_parts(Box::new(NullBackend), Clock::Virtual(clock));
        reactor.set_busy_poll(Duration::ZERO);
        reactor
    }

    fn with_parts(backend: Box<dyn Backend>, clock: Clock) -> Reactor {
        let waker = backend.waker();
        Reactor {
            inner: Rc::new(Inner {
                backend,
                clock,
                slots: RefCell::new(Slots::default()),
                detached: RefCell::new(Vec::new()),
                timers: RefCell::new(TimerQueue::default()),
                soon: RefCell::new(VecDeque::new()),
                shared: Arc::new(Shared {
                    queue: Mutex::new(Vec::new()),
                    pending: AtomicBool::new(false),
                    alive: AtomicBool::new(true),
                    waker,
                }),
                state: Cell::new(RunState::Idle),
                in_run: Cell::new(false),
                force_stop: Cell::new(false),
                startup: RefCell::new(Vec::new()),
                shutdown: RefCell::new([Vec::new(), Vec::new(), Vec::new()]),
                holds: Rc::new(Cell::new(0)),
                shutdown_timeout: Cell::new(DEFAULT_SHUTDOWN_TIMEOUT),
                busy_poll: Cell::new(BusyPoll::new(DEFAULT_BUSY_POLL)),
                read_buf: Cell::new(None),
                events: Cell::new(Vec::with_capacity(1024)),
                again: RefCell::new(Vec::new()),
                signals: RefCell::new(Vec::new()),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Rc<Inner> {
        &self.inner
    }

    /// Closes `source` when the reactor is dropped, as if it were registered (for sources
    /// with no descriptor, such as in-memory connections).
    pub(crate) fn track_detached(&self, source: &Rc<dyn Source>) {
        let mut detached = self.inner.detached.borrow_mut();
        if detached.len() == detached.capacity() {
            detached.retain(|w| w.strong_count() > 0);
        }
        detached.push(Rc::downgrade(source));
    }

    /// A weak reference that does not keep the reactor alive (for objects the reactor owns).
    pub fn downgrade(&self) -> WeakReactor {
        WeakReactor(Rc::downgrade(&self.inner))
    }

    /// Runs the loop until [`stop`](Reactor::stop) completes.
    ///
    /// Startup triggers ([`when_running`](Reactor::when_running)) run first. Returns an error
    /// only if the backend fails (for example the poller cannot be waited on). Connections,
    /// ports and timers outlive the return, so `run` may be called again; dropping the last
    /// handle to the reactor closes whatever is still open, with its callbacks (see
    /// `Drop for Reactor` below).
    pub fn run(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.in_run.replace(true) {
            return Err(Error::AlreadyRunning);
        }
        // `stop()` before `run()` is remembered: the loop starts, runs its startup triggers and
        // stops at once.
        let stop_requested = inner.state.get() == RunState::Stopping;
        inner.state.set(RunState::Running);
        inner.force_stop.set(false);
        let startup: Vec<Callback> = std::mem::take(&mut inner.startup.borrow_mut());
        for f in startup {
            self.guarded("startup trigger", f);
        }
        if stop_requested {
            self.stop();
        }
        let mut before_ran = false;
        let mut deadline = Duration::MAX;
        loop {
            if inner.state.get() == RunState::Stopping {
                if !before_ran {
                    before_ran = true;
                    deadline = self.now().saturating_add(inner.shutdown_timeout.get());
                    self.run_phase(ShutdownPhase::Before);
                    continue;
                }
                let holds = inner.holds.get();
                if holds == 0 || inner.force_stop.get() {
                    break;
                }
                if self.now() >= deadline {
                    tracing::warn!(
                        holds,
                        "shutdown timeout passed with work still holding the stop; stopping anyway"
                    );
                    break;
                }
            }
            let limit = (inner.state.get() == RunState::Stopping).then_some(deadline);
            let turned = if inner.clock.is_virtual() {
                self.turn_virtual(limit)
            } else {
                self.turn(true, limit).map(|()| true)
            };
            match turned {
                Ok(true) => {}
                // The virtual clock ran out of work: stop as if asked (all three phases).
                Ok(false) if !before_ran => self.stop(),
                Ok(false) => break,
                Err(e) => {
                    inner.in_run.set(false);
                    return Err(e);
                }
            }
        }
        self.run_phase(ShutdownPhase::During);
        self.run_phase(ShutdownPhase::After);
        inner.state.set(RunState::Stopped);
        inner.in_run.set(false);
        Ok(())
    }

    fn run_phase(&self, phase: ShutdownPhase) {
        let triggers: Vec<Callback> =
            std::mem::take(&mut self.inner.shutdown.borrow_mut()[phase as usize]);
        for f in triggers {
            self.guarded("shutdown trigger", f);
        }
        // Let the triggers' "call soon" work run too (bounded: triggers cannot extend this).
        self.run_soon();
    }

    /// Asks the reactor to stop gracefully.
    ///
    /// The [`ShutdownPhase::Before`] triggers run, then the loop keeps serving I/O until every
    /// [`ShutdownHold`] is released or the shutdown timeout passes, then the `During` and
    /// `After` triggers run and [`run`](Reactor::run) returns. Calling `stop` again while
    /// stopping skips the wait for holds. Safe to call from any callback.
    pub fn stop(&self) {
        let inner = &self.inner;
        match inner.state.get() {
            RunState::Idle | RunState::Running => inner.state.set(RunState::Stopping),
            RunState::Stopping => inner.force_stop.set(true),
            RunState::Stopped if !inner.in_run.get() => inner.state.set(RunState::Stopping),
            RunState::Stopped => {}
        }
        inner.shared.waker.wake().ok();
    }

    /// `true` while [`run`](Reactor::run) is executing and no stop has been requested.
    pub fn is_running(&self) -> bool {
        self.inner.state.get() == RunState::Running
    }

    /// `true` once [`stop`](Reactor::stop) has been called.
    pub fn is_stopping(&self) -> bool {
        matches!(
            self.inner.state.get(),
            RunState::Stopping | RunState::Stopped
        )
    }

    /// Time elapsed since the reactor was created, on the reactor's clock (real or virtual).
    pub fn now(&self) -> Duration {
        self.inner.clock.now()
    }

    /// Runs `f` once, `delay` from now. A zero delay runs it on the next turn, never inside the
    /// current callback.
    pub fn call_later(&self, delay: Duration, f: impl FnOnce(&Reactor) + 'static) -> DelayedCall {
        let deadline = self.now().saturating_add(delay);
        let entry = self
            .inner
            .timers
            .borrow_mut()
            .schedule(deadline, Box::new(f));
        DelayedCall::new(entry, Rc::downgrade(&self.inner))
    }

    /// Runs `f` on the next turn of the loop, after the current callback returns.
    pub fn call_soon(&self, f: impl FnOnce(&Reactor) + 'static) {
        self.inner.soon.borrow_mut().push_back(Box::new(f));
    }

    /// Runs `f` when [`run`](Reactor::run) starts (at once, on the next turn, if it already
    /// has).
    pub fn when_running(&self, f: impl FnOnce(&Reactor) + 'static) {
        if !self.inner.in_run.get() {
            self.inner.startup.borrow_mut().push(Box::new(f));
        } else {
            self.call_soon(f);
        }
    }

    /// Adds a trigger to run during a graceful stop; see [`ShutdownPhase`].
    pub fn add_shutdown_trigger(&self, phase: ShutdownPhase, f: impl FnOnce(&Reactor) + 'static) {
        self.inner.shutdown.borrow_mut()[phase as usize].push(Box::new(f));
    }

    /// Holds a graceful stop until the returned guard is dropped (or the shutdown timeout
    /// passes). Take holds from [`ShutdownPhase::Before`] triggers for drain work.
    #[must_use = "the hold is released when the guard is dropped"]
    pub fn hold_shutdown(&self) -> ShutdownHold {
        self.inner.holds.set(self.inner.holds.get() + 1);
        ShutdownHold {
            holds: self.inner.holds.clone(),
            waker: self.inner.shared.waker.clone(),
        }
    }

    /// How long a graceful stop waits for [`ShutdownHold`]s (default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`]).
    pub fn set_shutdown_timeout(&self, timeout: Duration) {
        self.inner.shutdown_timeout.set(timeout);
    }

    /// The most the loop spins before it blocks (default [`DEFAULT_BUSY_POLL`], 50 µs;
    /// `Duration::ZERO` turns busy polling off).
    ///
    /// Before blocking in the backend the loop keeps polling it without blocking for up to
    /// an adaptive window: it opens while events come in quick succession and closes again
    /// after a few long waits, so an idle reactor does not spin (after its last event it
    /// spins at most about twice `max` in all). Sleeping and being woken costs more than
    /// the work of a small request on most machines, on virtual ones above all: on the
    /// 2-core VM our benchmarks run on (BENCHMARKS.md), a busy-polling echo server answers a
    /// single client about 2.5 times as fast over TCP (7 times over a Unix socket) as the same
    /// server blocking, using less CPU per round trip. Turn it off when CPU time matters more
    /// than latency and events come a few tens of microseconds apart, or when many reactors
    /// share fewer cores.
    pub fn set_busy_poll(&self, max: Duration) {
        self.inner.busy_poll.set(BusyPoll::new(max));
    }

    /// The upper bound set with [`set_busy_poll`](Reactor::set_busy_poll).
    pub fn busy_poll(&self) -> Duration {
        self.inner.busy_poll.get().max()
    }

    /// A `Send` handle for other threads: the only way they can reach this reactor.
    pub fn handle(&self) -> ReactorHandle {
        ReactorHandle {
            shared: self.inner.shared.clone(),
        }
    }

    /// Turns SIGINT and SIGTERM into a graceful [`stop`](Reactor::stop) (a second signal while
    /// stopping forces the stop). Opt-in: without it the signals keep their default action.
    ///
    /// Calling it again on the same reactor changes nothing. Once every reactor that opted in
    /// is dropped, the signals take their default action again (they end the process).
    pub fn stop_on_signals(&self) -> Result<()> {
        if !self.inner.signals.borrow().is_empty() {
            return Ok(());
        }
        let (rx, tx) = UnixStream::pair().map_err(|e| Error::io("create the signal pipe", e))?;
        rx.set_nonblocking(true)
            .map_err(|e| Error::io("set the signal pipe non-blocking", e))?;
        let reg = Registered::new(self, rx, Interest::READABLE)?;
        signal_user_arrived()?;
        for (sig, name) in [
            (signal_hook::consts::SIGINT, "SIGINT"),
            (signal_hook::consts::SIGTERM, "SIGTERM"),
        ] {
            let registered = tx
                .try_clone()
                .and_then(|tx| signal_hook::low_level::pipe::register(sig, tx));
            match registered {
                Ok(id) => self.inner.signals.borrow_mut().push(id),
                Err(e) => {
                    for id in self.inner.signals.borrow_mut().drain(..) {
                        signal_hook::low_level::unregister(id);
                    }
                    signal_users_left();
                    return Err(Error::io(format!("install the {name} handler"), e));
                }
            }
        }
        let source = Rc::new(SignalSource {
            reg,
            reactor: self.downgrade(),
        });
        source.reg.set_source(source.clone());
        Ok(())
    }

    /// Lends the reactor's shared read buffer ([`READ_BUFFER_SIZE`] bytes) to a transport for
    /// one read. Give it back with [`return_read_buffer`](Reactor::return_read_buffer).
    pub fn take_read_buffer(&self) -> ReadBuffer {
        self.inner.read_buf.take().unwrap_or_else(ReadBuffer::new)
    }

    /// Returns the buffer lent by [`take_read_buffer`](Reactor::take_read_buffer).
    pub fn return_read_buffer(&self, buf: ReadBuffer) {
        self.inner.read_buf.set(Some(buf));
    }

    /// How many sources (connections, ports, the signal pipe) are registered: useful to check
    /// that a test or a shutdown left nothing behind.
    pub fn registered_sources(&self) -> usize {
        self.inner.slots.borrow().live()
    }

    fn guarded(&self, what: &str, f: Callback) {
        if let Err(msg) = catch_unwind_message(|| f(self)) {
            tracing::error!(panic = %msg, "a {what} panicked; the reactor goes on");
        }
    }

    fn run_timers(&self) -> usize {
        let now = self.now();
        let mut fired = 0;
        // Timers scheduled by these callbacks (even for "now") wait for the next turn, and a
        // turn fires at most `limit` timers, so I/O is never starved.
        let max_seq = self.inner.timers.borrow().last_seq();
        let limit = 4096;
        while fired < limit {
            let cb = self.inner.timers.borrow_mut().pop_due(now, max_seq);
            match cb {
                Some(cb) => {
                    fired += 1;
                    self.guarded("timer callback", cb);
                }
                None => break,
            }
        }
        fired
    }

    fn run_soon(&self) -> usize {
        let n = self.inner.soon.borrow().len();
        for _ in 0..n {
            let f = self.inner.soon.borrow_mut().pop_front();
            match f {
                Some(f) => self.guarded("call_soon callback", f),
                None => break,
            }
        }
        n
    }

    fn run_from_threads(&self) -> usize {
        let shared = &self.inner.shared;
        if !shared.pending.swap(false, Ordering::AcqRel) {
            return 0;
        }
        let work = std::mem::take(&mut *shared.queue.lock().unwrap_or_else(|e| e.into_inner()));
        let n = work.len();
        for f in work {
            self.guarded("call_from_thread callback", f);
        }
        n
    }

    fn has_ready_work(&self) -> bool {
        !self.inner.soon.borrow().is_empty()
            || !self.inner.again.borrow().is_empty()
            || self.inner.shared.pending.load(Ordering::Acquire)
    }

    /// One turn; `block` lets it wait for I/O until the next timer (or `limit`).
    fn turn(&self, block: bool, limit: Option<Duration>) -> Result<()> {
        self.run_timers();
        self.run_soon();
        // While stopping, `run` must look again at once when no hold is left, when the stop was
        // asked for during this turn (no `limit` yet: the Before phase has to run) or when it
        // was forced. `stop`'s wake-up cannot be relied on: the busy-poll spin consumes it.
        let stopping = self.inner.state.get() == RunState::Stopping
            && (self.inner.holds.get() == 0 || limit.is_none() || self.inner.force_stop.get());
        // Keys queued before this wait; the ones queued while dispatching wait for the next.
        let again = self.inner.again.borrow().len();
        let timeout = if !block || self.has_ready_work() || stopping {
            Some(Duration::ZERO)
        } else {
            let now = self.now();
            let next = self.inner.timers.borrow_mut().next_deadline();
            match (next, limit) {
                (Some(t), Some(l)) => Some(t.min(l).saturating_sub(now)),
                (Some(t), None) | (None, Some(t)) => Some(t.saturating_sub(now)),
                (None, None) => None,
            }
        };
        let mut events = self.inner.events.take();
        events.clear();
        if let Err(e) = self.wait(&mut events, timeout) {
            self.inner.events.set(events);
            return Err(Error::io("wait for events", e));
        }
        for ev in &events {
            self.dispatch(ev.key, ev.readiness);
        }
        self.inner.events.set(events);
        for i in 0..again {
            let key = self.inner.again.borrow()[i];
            self.dispatch(key, Readiness::READABLE);
        }
        self.inner.again.borrow_mut().drain(..again);
        self.run_from_threads();
        Ok(())
    }

    /// Waits for readiness, busy polling first (see [`Reactor::set_busy_poll`]).
    fn wait(&self, events: &mut Vec<BackendEvent>, timeout: Option<Duration>) -> io::Result<()> {
        let backend = &self.inner.backend;
        let mut busy = self.inner.busy_poll.get();
        if timeout == Some(Duration::ZERO) || busy.max().is_zero() {
            return backend.wait(events, timeout);
        }
        let start = Instant::now();
        let spin = timeout.map_or(busy.window(), |t| t.min(busy.window()));
        if !spin.is_zero() {
            loop {
                backend.wait(events, Some(Duration::ZERO))?;
                // A call from another thread wakes the backend without reporting an event.
                if !events.is_empty() || self.has_ready_work() {
                    return Ok(());
                }
                if start.elapsed() >= spin {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
        let result = backend.wait(events, left);
        busy.blocked(start.elapsed());
        self.inner.busy_poll.set(busy);
        result
    }

    fn dispatch(&self, key: usize, readiness: Readiness) {
        let source = self.inner.slots.borrow().get(key);
        if let Some(source) = source {
            source.ready(readiness);
        }
    }

    /// One turn on the virtual clock: never blocks; when idle, jumps the clock to the next
    /// timer. Returns `false` when nothing can ever happen again.
    fn turn_virtual(&self, limit: Option<Duration>) -> Result<bool> {
        self.turn(false, None)?;
        if self.has_ready_work() {
            return Ok(true);
        }
        let next = self.inner.timers.borrow_mut().next_deadline();
        let target = match (next, limit) {
            (Some(t), Some(l)) => t.min(l),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => return Ok(false),
        };
        if let Clock::Virtual(v) = &self.inner.clock {
            v.set(target);
        }
        Ok(true)
    }

    /// Runs turns without blocking until no timer is due and no work is queued (test kit).
    pub(crate) fn run_until_idle(&self) -> usize {
        let mut turns = 0;
        loop {
            let fired = self.run_timers();
            let ran = self.run_soon();
            let threads = self.run_from_threads();
            turns += 1;
            if fired + ran + threads == 0 {
                break;
            }
            if turns > 1_000_000 {
                tracing::error!("run_until_idle gave up after a million turns: a callback keeps rescheduling itself");
                break;
            }
        }
        turns
    }
}

/// A reference to a reactor that does not keep it alive; see [`Reactor::downgrade`].
#[derive(Clone, Debug)]
pub struct WeakReactor(Weak<Inner>);

impl WeakReactor {
    /// The reactor, if it still exists.
    pub fn upgrade(&self) -> Option<Reactor> {
        self.0.upgrade().map(|inner| Reactor { inner })
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Inner")
    }
}

/// Keeps a graceful stop waiting until dropped; see [`Reactor::hold_shutdown`].
pub struct ShutdownHold {
    holds: Rc<Cell<usize>>,
    waker: Arc<dyn Waker>,
}

impl Drop for ShutdownHold {
    fn drop(&mut self) {
        self.holds.set(self.holds.get().saturating_sub(1));
        self.waker.wake().ok();
    }
}

impl fmt::Debug for ShutdownHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHold").finish()
    }
}

/// A `Send + Sync` handle to a reactor, for other threads.
///
/// ```
/// use torsion_reactor::Reactor;
///
/// let reactor = Reactor::new()?;
/// let handle = reactor.handle();
/// std::thread::spawn(move || {
///     handle.call_from_thread(|r| r.stop()).expect("reactor alive");
/// });
/// reactor.run()?;
/// # Ok::<(), torsion_reactor::Error>(())
/// ```
#[derive(Clone)]
pub struct ReactorHandle {
    shared: Arc<Shared>,
}

impl ReactorHandle {
    /// Queues `f` to run on the reactor thread and wakes the reactor. Fails with
    /// [`Error::ReactorGone`] if the reactor no longer exists.
    pub fn call_from_thread(&self, f: impl FnOnce(&Reactor) + Send + 'static) -> Result<()> {
        {
            // Checked under the queue's lock, which the dropping reactor takes too: work is
            // either queued before the reactor is gone, or refused.
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            if !self.shared.alive.load(Ordering::SeqCst) {
                return Err(Error::ReactorGone);
            }
            queue.push(Box::new(f));
        }
        self.shared.pending.store(true, Ordering::Release);
        self.shared
            .waker
            .wake()
            .map_err(|e| Error::io("wake the reactor", e))
    }

    /// Asks the reactor to stop gracefully (as [`Reactor::stop`]) from another thread.
    pub fn stop(&self) -> Result<()> {
        self.call_from_thread(|r| r.stop())
    }
}

impl fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorHandle")
            .field("alive", &self.shared.alive.load(Ordering::Relaxed))
            .finish()
    }
}

struct SignalSource {
    reg: Registered<UnixStream>,
    reactor: WeakReactor,
}

impl Source for SignalSource {
    fn ready(&self, _readiness: Readiness) {
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match self.reg.get_ref().read(&mut buf) {
                Ok(0) => break,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if let (true, Some(reactor)) = (got, self.reactor.upgrade()) {
            if reactor.is_stopping() {
                tracing::warn!("second signal while stopping: stopping now");
            } else {
                tracing::info!("signal received: stopping gracefully (send it again to force)");
            }
            reactor.stop();
        }
    }
}
