//! Timers: the timer queue, [`DelayedCall`] and [`LoopingCall`].
//!
//! The queue is a binary heap of `(deadline, sequence)` entries. Postponing a timer (the common
//! case: an idle timeout pushed back on every read) only updates the timer's deadline; the
//! stale heap entry re-queues itself when it surfaces, so a reset costs no heap operation.
//! Cancelled entries are dropped lazily and swept when they outnumber the live ones.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::reactor::{Inner, Reactor};

pub(crate) type TimerCallback = Box<dyn FnOnce(&Reactor)>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TimerState {
    Pending,
    Cancelled,
    Fired,
}

pub(crate) struct TimerEntry {
    deadline: Cell<Duration>,
    /// Sequence number of the heap item that currently represents this timer.
    seq: Cell<u64>,
    state: Cell<TimerState>,
    callback: RefCell<Option<TimerCallback>>,
}

struct HeapItem {
    deadline: Duration,
    seq: u64,
    entry: Rc<TimerEntry>,
}

impl PartialEq for HeapItem {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for HeapItem {}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapItem {
    // Reversed: BinaryHeap is a max-heap and we want the earliest deadline (then the earliest
    // scheduled) on top.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

#[derive(Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<HeapItem>,
    next_seq: u64,
    cancelled: usize,
}

impl TimerQueue {
    pub(crate) fn schedule(
        &mut self,
        deadline: Duration,
        callback: TimerCallback,
    ) -> Rc<TimerEntry> {
        let entry = Rc::new(TimerEntry {
            deadline: Cell::new(deadline),
            seq: Cell::new(0),
            state: Cell::new(TimerState::Pending),
            callback: RefCell::new(Some(callback)),
        });
        self.push(entry.clone());
        entry
    }

    fn push(&mut self, entry: Rc<TimerEntry>) {
        self.next_seq += 1;
        entry.seq.set(self.next_seq);
        self.heap.push(HeapItem {
            deadline: entry.deadline.get(),
            seq: self.next_seq,
            entry,
        });
    }

    /// Moves a pending timer to a new deadline.
    fn reschedule(&mut self, entry: &Rc<TimerEntry>, deadline: Duration) {
        let earlier = deadline < entry.deadline.get();
        entry.deadline.set(deadline);
        if earlier {
            // The old item stays in the heap as a stale duplicate (its seq no longer matches).
            self.cancelled += 1;
            self.push(entry.clone());
        }
    }

    fn note_cancelled(&mut self) {
        self.cancelled += 1;
        if self.cancelled > 1024 && self.cancelled > self.heap.len() / 2 {
            self.heap.retain(|item| {
                item.entry.state.get() == TimerState::Pending && item.entry.seq.get() == item.seq
            });
            self.cancelled = 0;
        }
    }

    /// The earliest live deadline, discarding stale items on the way.
    pub(crate) fn next_deadline(&mut self) -> Option<Duration> {
        loop {
            let top = self.heap.peek()?;
            let entry = &top.entry;
            if entry.state.get() != TimerState::Pending || entry.seq.get() != top.seq {
                self.heap.pop();
                self.cancelled = self.cancelled.saturating_sub(1);
                continue;
            }
            if entry.deadline.get() > top.deadline {
                // Postponed: re-queue at the new deadline, keeping its sequence number (it was
                // not scheduled anew, so it is due in the same turn as any other timer).
                let item = self.heap.pop().expect("peeked");
                self.heap.push(HeapItem {
                    deadline: item.entry.deadline.get(),
                    ..item
                });
                continue;
            }
            return Some(top.deadline);
        }
    }

    /// The sequence number of the latest scheduling so far: timers scheduled (or moved
    /// earlier) after this point have larger numbers.
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq
    }

    /// Cancels every pending timer and returns their callbacks (for the reactor's drop).
    pub(crate) fn cancel_all(&mut self) -> Vec<TimerCallback> {
        self.cancelled = 0;
        self.heap
            .drain()
            .filter_map(|item| {
                if item.entry.state.get() == TimerState::Pending {
                    item.entry.state.set(TimerState::Cancelled);
                }
                item.entry.callback.borrow_mut().take()
            })
            .collect()
    }

    /// Removes and returns the callback of the earliest timer due at or before `now` that was
    /// scheduled at or before `max_seq` (so timers scheduled by the callbacks of this turn wait
    /// for the next one).
    pub(crate) fn pop_due(&mut self, now: Duration, max_seq: u64) -> Option<TimerCallback> {
        match self.next_deadline() {
            Some(d) if d <= now && self.heap.peek().is_some_and(|top| top.seq <= max_seq) => {
                let item = self.heap.pop().expect("peeked");
                item.entry.state.set(TimerState::Fired);
                let cb = item.entry.callback.borrow_mut().take();
                cb
            }
            _ => None,
        }
    }
}

/// A call scheduled with [`Reactor::call_later`]: it can be cancelled, moved and inspected
/// until it runs (Twisted's `IDelayedCall`).
///
/// Dropping the handle does **not** cancel the call.
///
/// ```
/// use std::time::Duration;
/// use torsion_reactor::testing::MemoryReactor;
///
/// let mr = MemoryReactor::new();
/// let call = mr.reactor().call_later(Duration::from_secs(5), |_| {});
/// assert!(call.active());
/// call.reset(Duration::from_secs(10)); // now due 10 s from now
/// mr.advance(Duration::from_secs(6));
/// assert!(call.active());
/// call.cancel();
/// assert!(!call.active());
/// ```
#[must_use = "dropping a DelayedCall does not cancel it; keep it if you may need to cancel"]
pub struct DelayedCall {
    entry: Rc<TimerEntry>,
    reactor: Weak<Inner>,
}

impl DelayedCall {
    pub(crate) fn new(entry: Rc<TimerEntry>, reactor: Weak<Inner>) -> Self {
        DelayedCall { entry, reactor }
    }

    /// `true` until the call has run or been cancelled.
    pub fn active(&self) -> bool {
        self.entry.state.get() == TimerState::Pending
    }

    /// Cancels the call if it has not run yet; a no-op otherwise.
    pub fn cancel(&self) {
        if self.active() {
            self.entry.state.set(TimerState::Cancelled);
            self.entry.callback.borrow_mut().take();
            if let Some(inner) = self.reactor.upgrade() {
                inner.timers.borrow_mut().note_cancelled();
            }
        }
    }

    /// Reschedules the call to run `delay` from now (ignored if it is no longer active).
    pub fn reset(&self, delay: Duration) {
        if let Some(inner) = self.reactor.upgrade() {
            if self.active() {
                let deadline = inner.clock.now().saturating_add(delay);
                inner.timers.borrow_mut().reschedule(&self.entry, deadline);
            }
        }
    }

    /// Postpones the call by `extra` (ignored if it is no longer active).
    pub fn delay(&self, extra: Duration) {
        if let Some(inner) = self.reactor.upgrade() {
            if self.active() {
                let deadline = self.entry.deadline.get().saturating_add(extra);
                inner.timers.borrow_mut().reschedule(&self.entry, deadline);
            }
        }
    }

    /// How long until the call is due (zero if due now or overdue), or `None` if inactive.
    pub fn remaining(&self) -> Option<Duration> {
        let inner = self.reactor.upgrade()?;
        self.active()
            .then(|| self.entry.deadline.get().saturating_sub(inner.clock.now()))
    }
}

impl fmt::Debug for DelayedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedCall")
            .field("deadline", &self.entry.deadline.get())
            .field("state", &self.entry.state.get())
            .finish()
    }
}

type LoopFn = Box<dyn FnMut(&Reactor, u64)>;

struct LoopState {
    interval: Duration,
    /// Deadline of the tick currently scheduled.
    next: Cell<Duration>,
    running: Cell<bool>,
    call: RefCell<Option<DelayedCall>>,
    func: RefCell<LoopFn>,
}

/// Calls a function repeatedly at a fixed rate (Twisted's `task.LoopingCall`).
///
/// Ticks are due at `start + k × interval`. When the reactor is late by more than one
/// interval, the missed ticks are not run one after another: the function runs once and is
/// told how many ticks were skipped, and the next tick is the next multiple of the interval.
/// A panic in the function is caught and logged and stops the loop, as an exception does in
/// Twisted ([`running`](Self::running) turns `false`).
///
/// Dropping the `LoopingCall` stops it (Twisted's runs until stopped): keep it for as long as
/// the loop should run, in the protocol or object whose work it does, so that the loop ends
/// with its owner and a forgotten loop cannot tick on (or keep what it captured alive).
///
/// ```
/// use std::{cell::Cell, rc::Rc, time::Duration};
/// use torsion_reactor::{testing::MemoryReactor, LoopingCall};
///
/// let mr = MemoryReactor::new();
/// let ticks = Rc::new(Cell::new(0));
/// let t = ticks.clone();
/// let looping = LoopingCall::start(mr.reactor(), Duration::from_secs(1), false, move |_, skipped| {
///     t.set(t.get() + 1 + skipped);
/// });
/// mr.advance(Duration::from_secs(3));
/// assert_eq!(ticks.get(), 3);
/// looping.stop();
/// ```
#[must_use = "dropping a LoopingCall stops it; keep it for as long as it should run"]
pub struct LoopingCall {
    state: Rc<LoopState>,
}

impl LoopingCall {
    /// Starts calling `func(reactor, skipped)` every `interval`; the first call is immediate
    /// (on the next turn) when `now` is true, else one interval from now.
    ///
    /// # Panics
    /// If `interval` is zero.
    pub fn start(
        reactor: &Reactor,
        interval: Duration,
        now: bool,
        func: impl FnMut(&Reactor, u64) + 'static,
    ) -> LoopingCall {
        assert!(!interval.is_zero(), "LoopingCall interval must be positive");
        let first = if now {
            reactor.now()
        } else {
            reactor.now().saturating_add(interval)
        };
        let state = Rc::new(LoopState {
            interval,
            next: Cell::new(first),
            running: Cell::new(true),
            call: RefCell::new(None),
            func: RefCell::new(Box::new(func)),
        });
        Self::schedule(reactor, &state);
        LoopingCall { state }
    }

    fn schedule(reactor: &Reactor, state: &Rc<LoopState>) {
        let delay = state.next.get().saturating_sub(reactor.now());
        let weak = Rc::downgrade(state);
        let call = reactor.call_later(delay, move |r| {
            let Some(state) = weak.upgrade() else { return };
            if !state.running.get() {
                return;
            }
            let now = r.now();
            let due = state.next.get();
            let late = now.saturating_sub(due);
            let skipped = late.as_nanos() / state.interval.as_nanos();
            // The next tick after `now`, in nanoseconds so no jump of the clock overflows it.
            let ahead = state.interval.as_nanos().saturating_mul(skipped + 1);
            let next =
                due.saturating_add(Duration::from_nanos(ahead.try_into().unwrap_or(u64::MAX)));
            state.next.set(next);
            let skipped = skipped.try_into().unwrap_or(u64::MAX);
            let ran = crate::panic::catch_unwind_message(|| (state.func.borrow_mut())(r, skipped));
            if let Err(msg) = ran {
                // As an exception does in Twisted's LoopingCall: the loop stops.
                tracing::error!(panic = %msg, "LoopingCall function panicked; the loop stops");
                state.running.set(false);
                return;
            }
            if state.running.get() {
                Self::schedule(r, &state);
            }
        });
        *state.call.borrow_mut() = Some(call);
    }

    /// Stops the loop; the function is not called again.
    pub fn stop(&self) {
        self.state.running.set(false);
        if let Some(call) = self.state.call.borrow_mut().take() {
            call.cancel();
        }
    }

    /// `true` until [`stop`](Self::stop) is called or the function panics.
    pub fn running(&self) -> bool {
        self.state.running.get()
    }
}

impl fmt::Debug for LoopingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopingCall")
            .field("interval", &self.state.interval)
            .field("running", &self.state.running.get())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> TimerCallback {
        Box::new(|_| {})
    }

    #[test]
    fn earliest_first_then_fifo() {
        let mut q = TimerQueue::default();
        let a = q.schedule(Duration::from_millis(20), noop());
        let b = q.schedule(Duration::from_millis(10), noop());
        let c = q.schedule(Duration::from_millis(10), noop());
        assert_eq!(q.next_deadline(), Some(Duration::from_millis(10)));
        assert!(q.pop_due(Duration::from_millis(10), u64::MAX).is_some());
        assert_eq!(b.state.get(), TimerState::Fired);
        assert_eq!(c.state.get(), TimerState::Pending);
        assert!(q.pop_due(Duration::from_millis(10), u64::MAX).is_some());
        assert_eq!(c.state.get(), TimerState::Fired);
        assert!(q.pop_due(Duration::from_millis(19), u64::MAX).is_none());
        assert!(q.pop_due(Duration::from_millis(20), u64::MAX).is_some());
        assert_eq!(a.state.get(), TimerState::Fired);
        assert!(q.next_deadline().is_none());
    }

    #[test]
    fn postpone_and_advance() {
        let mut q = TimerQueue::default();
        let a = q.schedule(Duration::from_millis(10), noop());
        q.reschedule(&a, Duration::from_millis(50));
        assert!(q.pop_due(Duration::from_millis(10), u64::MAX).is_none());
        assert_eq!(q.next_deadline(), Some(Duration::from_millis(50)));
        q.reschedule(&a, Duration::from_millis(5));
        assert_eq!(q.next_deadline(), Some(Duration::from_millis(5)));
        assert!(q.pop_due(Duration::from_millis(5), u64::MAX).is_some());
        // The stale item left behind by the move is discarded, not fired twice.
        assert!(q.pop_due(Duration::from_secs(1), u64::MAX).is_none());
    }

    #[test]
    fn cancelled_entries_are_swept() {
        let mut q = TimerQueue::default();
        let entries: Vec<_> = (0..5000)
            .map(|i| q.schedule(Duration::from_millis(i), noop()))
            .collect();
        for e in &entries[..4000] {
            e.state.set(TimerState::Cancelled);
            q.note_cancelled();
        }
        assert!(
            q.heap.len() < 5000,
            "sweep should have removed cancelled items"
        );
        let mut fired = 0;
        while q.pop_due(Duration::from_secs(10), u64::MAX).is_some() {
            fired += 1;
        }
        assert_eq!(fired, 1000);
    }
}
