//! Adaptive busy polling: how long the loop keeps asking the backend for readiness before it
//! blocks.
//!
//! Putting a thread to sleep in `epoll_wait` and waking it when a packet arrives costs far
//! more than the work an echo does: on a virtual machine the wake-up crosses the hypervisor.
//! When the next event is only a few microseconds away (a request-response peer, a burst of
//! small writes), polling without blocking for a short while answers sooner *and* uses less
//! CPU per event than sleeping. When events are far apart the same spinning is pure waste, so
//! the window adapts, as the Linux `haltpoll` idle governor does:
//!
//! - a wait that found work while spinning leaves the window as it is;
//! - a blocking wait that ended within `max` (the window was too short to catch it) doubles
//!   the window, starting from a quarter of `max`, up to `max`;
//! - a blocking wait longer than `max` halves it, and a window under a sixteenth of `max`
//!   drops to zero, so an idle reactor stops spinning after a few waits.
//!
//! A reactor that sits idle therefore spends at most about `2 * max` spinning after its last
//! event, and a reactor whose events are never closer than `max` never spins at all.

use std::time::Duration;

/// Default upper bound of the busy-poll window; see [`Reactor::set_busy_poll`](crate::Reactor::set_busy_poll).
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(50);

/// The adaptive window (pure state; the reactor measures and spins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BusyPoll {
    max: Duration,
    window: Duration,
}

impl BusyPoll {
    /// A window that may grow to `max`; zero turns busy polling off. Starts closed: it opens
    /// once waits turn out short.
    pub(crate) fn new(max: Duration) -> Self {
        BusyPoll {
            max,
            window: Duration::ZERO,
        }
    }

    /// The upper bound.
    pub(crate) fn max(&self) -> Duration {
        self.max
    }

    /// How long to spin before blocking now.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Records a wait that spun without finding anything and then blocked; `idle` is the
    /// whole time from the start of the spin to the end of the blocking wait.
    pub(crate) fn blocked(&mut self, idle: Duration) {
        if self.max.is_zero() {
            return;
        }
        self.window = if idle <= self.max {
            let grown = if self.window.is_zero() {
                self.max / 4
            } else {
                self.window.saturating_mul(2)
            };
            grown.min(self.max)
        } else {
            let shrunk = self.window / 2;
            if shrunk < self.max / 16 {
                Duration::ZERO
            } else {
                shrunk
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(64);

    #[test]
    fn starts_closed_and_opens_on_short_waits() {
        let mut b = BusyPoll::new(MAX);
        assert_eq!(b.window(), Duration::ZERO);
        b.blocked(Duration::from_micros(10));
        assert_eq!(b.window(), MAX / 4);
        b.blocked(Duration::from_micros(30));
        assert_eq!(b.window(), MAX / 2);
        b.blocked(MAX);
        assert_eq!(b.window(), MAX);
        b.blocked(Duration::from_micros(1));
        assert_eq!(b.window(), MAX, "never beyond max");
    }

    #[test]
    fn long_waits_close_it_within_a_few_waits() {
        let mut b = BusyPoll::new(MAX);
        for _ in 0..3 {
            b.blocked(Duration::from_micros(1));
        }
        assert_eq!(b.window(), MAX);
        let mut seen = Vec::new();
        while !b.window().is_zero() {
            b.blocked(Duration::from_millis(5));
            seen.push(b.window().as_micros());
            assert!(seen.len() <= 5, "an idle reactor keeps spinning: {seen:?}");
        }
        assert_eq!(seen, [32, 16, 8, 4, 0]);
    }

    #[test]
    fn zero_max_never_spins() {
        let mut b = BusyPoll::new(Duration::ZERO);
        b.blocked(Duration::ZERO);
        b.blocked(Duration::from_nanos(1));
        assert_eq!(b.window(), Duration::ZERO);
    }
}
