//! Registered event sources and the slot table that maps backend keys to them.
//!
//! A backend key is a slot index in the low bits (32 of a 64-bit key, 20 of a 32-bit one) and
//! the slot's generation in the high bits. A slot's generation is bumped every time it is
//! freed, so an event still in flight for a closed source can never be delivered to whichever
//! source reuses the slot.

use std::cell::Cell;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::{Rc, Weak};

use crate::backend::{Interest, Readiness, Trigger};
use crate::error::{Error, Result};
use crate::reactor::{Inner, Reactor};

/// Something registered with the reactor that wants to hear about readiness.
///
/// Implemented by transports (connections, listening ports). `ready` is called from the
/// reactor's dispatch loop with no reactor-internal borrow held, so it may call back into the
/// reactor freely.
pub trait Source {
    /// The source's descriptor is ready as described.
    fn ready(&self, readiness: Readiness);

    /// The last handle to the reactor is being dropped (outside `run`) with this source still
    /// registered: end it as its own close would, running the user's callbacks (a
    /// connection's `connection_lost`, a port's factory stop hook); the reactor still exists
    /// while they run. [`reactor_dropped`](Source::reactor_dropped) follows.
    fn reactor_closing(&self) {}

    /// The reactor is being dropped with this source still registered: close the descriptor
    /// and let go of every reference that could keep objects alive in a cycle. No user
    /// callback may run here.
    fn reactor_dropped(&self) {}
}

struct Slot {
    generation: u32,
    source: Option<Rc<dyn Source>>,
    occupied: bool,
}

/// The table of registered sources.
#[derive(Default)]
pub(crate) struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Slots {
    pub(crate) fn reserve(&mut self) -> usize {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    source: None,
                    occupied: false,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.occupied = true;
        key(index, slot.generation)
    }

    pub(crate) fn set(&mut self, key: usize, source: Rc<dyn Source>) {
        if let Some(slot) = self.lookup_mut(key) {
            slot.source = Some(source);
        }
    }

    /// Frees a slot; returns the source it held so the caller can drop it outside the borrow.
    pub(crate) fn release(&mut self, key: usize) -> Option<Rc<dyn Source>> {
        let index = (key & INDEX_MASK) as u32;
        let slot = self.lookup_mut(key)?;
        slot.occupied = false;
        slot.generation = slot.generation.wrapping_add(1);
        let source = slot.source.take();
        self.free.push(index);
        source
    }

    pub(crate) fn get(&self, key: usize) -> Option<Rc<dyn Source>> {
        let index = key & INDEX_MASK;
        let slot = self.slots.get(index)?;
        if slot.occupied && key_generation(slot.generation) == key >> INDEX_BITS {
            slot.source.clone()
        } else {
            None
        }
    }

    fn lookup_mut(&mut self, key: usize) -> Option<&mut Slot> {
        let index = key & INDEX_MASK;
        let slot = self.slots.get_mut(index)?;
        (slot.occupied && key_generation(slot.generation) == key >> INDEX_BITS).then_some(slot)
    }

    pub(crate) fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Every registered source.
    pub(crate) fn all(&self) -> Vec<Rc<dyn Source>> {
        self.slots.iter().filter_map(|s| s.source.clone()).collect()
    }

    pub(crate) fn drain(&mut self) -> Vec<Rc<dyn Source>> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.source.take())
            .collect()
    }
}

/// Bits of a key that hold the slot index: half of a 64-bit key; 20 bits (a million sources)
/// of a 32-bit one, whose generation then wraps after 4,096 reuses of one slot.
const INDEX_BITS: u32 = if usize::BITS >= 64 { 32 } else { 20 };
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;

/// The part of a slot's generation a key carries.
fn key_generation(generation: u32) -> usize {
    generation as usize & (usize::MAX >> INDEX_BITS)
}

fn key(index: u32, generation: u32) -> usize {
    debug_assert!(
        (index as usize) <= INDEX_MASK,
        "too many sources for this platform"
    );
    (key_generation(generation) << INDEX_BITS) | index as usize
}

/// A descriptor registered with a reactor, owning the descriptor.
///
/// Owning it is what makes registration safe: the descriptor is deregistered in `Drop` before it
/// is closed, so the backend can never report a closed (or reused) descriptor number.
pub struct Registered<S: AsFd> {
    io: S,
    key: usize,
    interest: Cell<Interest>,
    trigger: Trigger,
    reactor: Weak<Inner>,
}

impl<S: AsFd> Registered<S> {
    /// Registers `io` with `reactor` under a fresh key. Readiness is delivered to the source set
    /// with [`Registered::set_source`]; until then events are dropped.
    ///
    /// The source hears of readiness at every turn while it lasts (level-triggered), so it may
    /// stop reading or accepting early without losing the wake-up.
    pub fn new(reactor: &Reactor, io: S, interest: Interest) -> Result<Self> {
        Self::register(reactor, io, interest, Trigger::Level)
    }

    /// Registers `io` like [`Registered::new`], but the source may hear of readiness only when
    /// it rises: data arrives, room frees up, the peer hangs up, or an interest change finds
    /// it already there (edge-triggered, where the backend offers it).
    ///
    /// In exchange for one kernel poll less per wake-up, the source takes on a duty: each time
    /// it is told the descriptor is readable, it reads until the descriptor reports empty
    /// (`WouldBlock`, or a stream read shorter than the buffer it gave) or calls
    /// [`Registered::ready_again`] to be told again next turn. Events that arrive before
    /// [`Registered::set_source`] are kept, not lost, when the source is set in the same turn.
    pub fn new_edge_triggered(reactor: &Reactor, io: S, interest: Interest) -> Result<Self> {
        Self::register(reactor, io, interest, Trigger::Edge)
    }

    fn register(reactor: &Reactor, io: S, interest: Interest, trigger: Trigger) -> Result<Self> {
        let inner = reactor.inner();
        let key = inner.slots.borrow_mut().reserve();
        let fd = io.as_fd().as_raw_fd();
        // SAFETY: `Registered` owns `io`, and its `Drop` deregisters `fd` before `io` (a field
        // dropped after `drop` returns) closes it.
        if let Err(e) = unsafe { inner.backend.register(fd, key, interest, trigger) } {
            inner.slots.borrow_mut().release(key);
            return Err(Error::io("register with the poller", e));
        }
        Ok(Registered {
            io,
            key,
            interest: Cell::new(interest),
            trigger,
            reactor: Rc::downgrade(inner),
        })
    }

    /// Routes this descriptor's readiness to `source`.
    pub fn set_source(&self, source: Rc<dyn Source>) {
        if let Some(inner) = self.reactor.upgrade() {
            inner.slots.borrow_mut().set(self.key, source);
        }
    }

    /// Changes the interest; a no-op (no system call) when it is unchanged.
    pub fn set_interest(&self, interest: Interest) -> std::io::Result<()> {
        if interest == self.interest.get() {
            return Ok(());
        }
        if let Some(inner) = self.reactor.upgrade() {
            inner.backend.reregister(
                self.io.as_fd().as_raw_fd(),
                self.key,
                interest,
                self.trigger,
            )?;
        }
        self.interest.set(interest);
        Ok(())
    }

    /// Has the source told it is readable again next turn, without waiting for the backend:
    /// an edge-triggered source calls this when it stopped reading before the descriptor was
    /// empty (to be fair to other sources). A level-triggered registration needs no such
    /// reminder, so for one this does nothing.
    pub fn ready_again(&self) {
        if self.trigger == Trigger::Edge {
            if let Some(inner) = self.reactor.upgrade() {
                inner.ready_again(self.key);
            }
        }
    }

    /// The current interest.
    pub fn interest(&self) -> Interest {
        self.interest.get()
    }

    /// The registered descriptor.
    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

impl<S: AsFd> Drop for Registered<S> {
    fn drop(&mut self) {
        if let Some(inner) = self.reactor.upgrade() {
            let _ = inner.backend.deregister(self.io.as_fd().as_raw_fd());
            let released = inner.slots.borrow_mut().release(self.key);
            // The source may be the object that owns this registration: dropping it here,
            // after the borrow ends, is what keeps that safe.
            drop(released);
        }
    }
}

impl<S: AsFd> fmt::Debug for Registered<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("fd", &self.io.as_fd().as_raw_fd())
            .field("key", &self.key)
            .field("interest", &self.interest.get())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nop;
    impl Source for Nop {
        fn ready(&self, _: Readiness) {}
    }

    #[test]
    fn recycled_slot_rejects_stale_key() {
        let mut slots = Slots::default();
        let a = slots.reserve();
        slots.set(a, Rc::new(Nop));
        assert!(slots.get(a).is_some());
        slots.release(a);
        let b = slots.reserve();
        slots.set(b, Rc::new(Nop));
        assert_eq!(a & INDEX_MASK, b & INDEX_MASK, "slot reused");
        assert!(
            slots.get(a).is_none(),
            "stale key must not reach the new source"
        );
        assert!(slots.get(b).is_some());
        assert_eq!(slots.live(), 1);
    }
}
