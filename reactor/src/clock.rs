//! The reactor's clock: real monotonic time, or a virtual clock for tests.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Where the reactor gets its time from.
///
/// Time is measured as a [`Duration`] since the reactor was created, so real and virtual time
/// share one representation and timers do not care which clock drives them.
#[derive(Clone, Debug)]
pub(crate) enum Clock {
    Real(Instant),
    Virtual(VirtualClock),
}

impl Clock {
    pub(crate) fn now(&self) -> Duration {
        match self {
            Clock::Real(epoch) => epoch.elapsed(),
            Clock::Virtual(v) => v.now(),
        }
    }

    pub(crate) fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual(_))
    }
}

/// A clock that only moves when told to, for deterministic tests of timeouts and timers.
///
/// Obtained from [`MemoryReactor`](crate::testing::MemoryReactor); clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct VirtualClock {
    now: Rc<Cell<Duration>>,
}

impl VirtualClock {
    /// A virtual clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current virtual time, as time elapsed since the clock was created.
    pub fn now(&self) -> Duration {
        self.now.get()
    }

    /// Moves the clock forward (saturating at [`Duration::MAX`]). Timers are fired by the
    /// reactor on its next turn
    /// (see [`MemoryReactor::advance`](crate::testing::MemoryReactor::advance)).
    pub fn advance(&self, by: Duration) {
        self.now.set(self.now.get().saturating_add(by));
    }

    pub(crate) fn set(&self, to: Duration) {
        if to > self.now.get() {
            self.now.set(to);
        }
    }
}
