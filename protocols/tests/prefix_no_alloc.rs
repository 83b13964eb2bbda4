//! An announced length over the limit is refused before any allocation.
//!
//! A counting global allocator wraps the system allocator. This file holds a single test so
//! no other test allocates concurrently.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use torsion_protocols::framing::{Decoder, Flow, FrameError, PrefixDecoder, PrefixWidth};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every operation to `System`, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let (a, b) = (
        ALLOCATIONS.load(Ordering::SeqCst),
        BYTES.load(Ordering::SeqCst),
    );
    let r = f();
    (
        r,
        ALLOCATIONS.load(Ordering::SeqCst) - a,
        BYTES.load(Ordering::SeqCst) - b,
    )
}

#[test]
fn prefix_of_u32_max_is_refused_without_allocating() {
    let expected = FrameError::TooLong {
        announced: u64::from(u32::MAX),
        max: 99_999,
    };

    // Whole prefix in one read: no allocation at all.
    let mut decoder = PrefixDecoder::new(PrefixWidth::Int32);
    let (result, allocations, _) = counted(|| decoder.decode(&[0xff; 4], |_| Flow::Continue));
    assert_eq!(result, Err(expected.clone()));
    assert_eq!(allocations, 0, "refusing a whole prefix allocated");

    // Prefix followed by a body in the same read: still nothing.
    let mut data = vec![0xff; 4];
    data.extend_from_slice(&[0u8; 60_000]);
    let mut decoder = PrefixDecoder::new(PrefixWidth::Int32);
    let (result, allocations, _) = counted(|| decoder.decode(&data, |_| Flow::Continue));
    assert_eq!(result, Err(expected.clone()));
    assert_eq!(allocations, 0);

    // One byte per read: only the few prefix bytes are ever buffered, never the announced
    // 4 GiB (nor the 99,999-byte maximum).
    let mut decoder = PrefixDecoder::new(PrefixWidth::Int32);
    let (result, _, bytes) = counted(|| {
        let mut last = Ok(torsion_protocols::framing::Progress::Consumed);
        for b in [0xffu8; 4] {
            last = decoder.decode(&[b], |_| Flow::Continue);
        }
        last
    });
    assert_eq!(result, Err(expected));
    assert!(bytes <= 64, "{bytes} bytes allocated for a refused prefix");
}
