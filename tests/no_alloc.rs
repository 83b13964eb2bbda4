//! The steady-state echo path allocates nothing: no heap allocation per read or write.
//!
//! A counting global allocator wraps the system allocator. A torsion client and a torsion
//! echo server ping-pong 64-byte messages over loopback TCP on one real reactor; after a
//! warm-up, 20,000 round trips (40,000 reads and 40,000 writes across both sides) must not
//! allocate at all. This file holds a single test so no other test allocates concurrently.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use torsion::prelude::*;
use torsion::protocols::wire::Echo;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every operation to `System`, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MESSAGE: [u8; 64] = [b'x'; 64];
const WARMUP: u64 = 2_000;
const MEASURED: u64 = 20_000;

struct Pinger {
    received: usize,
    round_trips: u64,
    allocations_at_start: Rc<Cell<usize>>,
    allocations_at_end: Rc<Cell<usize>>,
}

impl Protocol for Pinger {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        transport.write(&MESSAGE);
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.received += data.len();
        while self.received >= MESSAGE.len() {
            self.received -= MESSAGE.len();
            self.round_trips += 1;
            if self.round_trips == WARMUP {
                self.allocations_at_start
                    .set(ALLOCATIONS.load(Ordering::Relaxed));
            }
            if self.round_trips == WARMUP + MEASURED {
                self.allocations_at_end
                    .set(ALLOCATIONS.load(Ordering::Relaxed));
                transport.reactor().stop();
                return;
            }
            transport.write(&MESSAGE);
        }
    }
}

#[test]
fn steady_state_echo_allocates_nothing() {
    let reactor = Reactor::new().expect("reactor");
    let port = reactor
        .listen_tcp("127.0.0.1:0", |_: &Address| Echo)
        .expect("listen");
    let start = Rc::new(Cell::new(0));
    let end = Rc::new(Cell::new(0));
    let (s, e) = (start.clone(), end.clone());
    let mut built = false;
    let _connector = reactor.connect_tcp(
        "127.0.0.1",
        port.local_address().port().expect("tcp port"),
        move |_: &Address| {
            assert!(!built, "one connection only");
            built = true;
            Pinger {
                received: 0,
                round_trips: 0,
                allocations_at_start: s.clone(),
                allocations_at_end: e.clone(),
            }
        },
    );
    let _deadline = reactor.call_later(Duration::from_secs(20), |r| r.stop());
    reactor.run().expect("run");
    assert!(end.get() > 0, "the ping-pong did not finish");
    let allocations = end.get() - start.get();
    assert_eq!(
        allocations, 0,
        "{allocations} heap allocations during {MEASURED} round trips"
    );
}
