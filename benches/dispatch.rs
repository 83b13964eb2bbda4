//! Benchmarks of the dispatch path without sockets, on the in-memory test kit
//! ([`MemoryReactor`], [`StringTransport`]): what the reactor and the connection state
//! machine cost per message and per timer, with no system call in the way.
//!
//! - `echo_64B/feed_take`: one 64-byte message fed to [`Echo`] and its echo taken back, per
//!   iteration (Throughput::Elements = messages). `StringTransport::take` allocates a 64 KiB
//!   scratch buffer per call, which is part of this figure;
//! - `echo_64B/feed16_take1`: sixteen messages fed one by one, their echoes taken in one
//!   `take`: closer to the pure dispatch cost of `feed` → `data_received` → `write`;
//! - `timers/schedule_cancel`: 1000 [`DelayedCall`]s scheduled, then cancelled, then one
//!   reactor pass that discards the cancelled entries (Elements = timers);
//! - `timers/schedule_fire`: 1000 timers at distinct deadlines 1..=1000 ms scheduled, then
//!   fired in order by advancing the virtual clock one second (`MemoryReactor::advance`).
//!
//! Run with `cargo bench --bench dispatch` (append `-- --quick` for a fast, rougher run, or a
//! filter such as `-- timers`).

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Duration;

use criterion::{criterion_main, Criterion, Throughput};
use torsion::protocols::wire::Echo;
use torsion::testing::{MemoryReactor, StringTransport};
use torsion::DelayedCall;

/// Size of one echoed message.
const MESSAGE: usize = 64;
/// Messages fed per `take` in the batched variant.
const BATCH: usize = 16;
/// Timers per iteration of the timer benchmarks.
const TIMERS: usize = 1000;

fn bench_echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo_64B");
    let msg = [b'x'; MESSAGE];

    group.throughput(Throughput::Elements(1));
    group.bench_function("feed_take", |b| {
        let mr = MemoryReactor::new();
        let st = StringTransport::connect(&mr, Echo);
        b.iter(|| {
            assert_eq!(st.feed(black_box(&msg)), MESSAGE);
            let echoed = st.take();
            assert_eq!(echoed.len(), MESSAGE);
            black_box(echoed);
        });
        assert!(st.lost().is_none());
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("feed16_take1", |b| {
        let mr = MemoryReactor::new();
        let st = StringTransport::connect(&mr, Echo);
        b.iter(|| {
            for _ in 0..BATCH {
                assert_eq!(st.feed(black_box(&msg)), MESSAGE);
            }
            let echoed = st.take();
            assert_eq!(echoed.len(), MESSAGE * BATCH);
            black_box(echoed);
        });
        assert!(st.lost().is_none());
    });
    group.finish();
}

fn bench_timers(c: &mut Criterion) {
    let mut group = c.benchmark_group("timers");
    group.throughput(Throughput::Elements(TIMERS as u64));

    group.bench_function("schedule_cancel", |b| {
        let mr = MemoryReactor::new();
        let reactor = mr.reactor().clone();
        let mut calls: Vec<DelayedCall> = Vec::with_capacity(TIMERS);
        b.iter(|| {
            for i in 0..TIMERS {
                // Idle-timeout-like delays, not in deadline order.
                let delay = Duration::from_millis(1 + (i * 7919 % TIMERS) as u64);
                calls.push(reactor.call_later(delay, |_| unreachable!("cancelled")));
            }
            for call in calls.drain(..) {
                call.cancel();
            }
            // One pass of the loop: the cancelled entries are dropped from the queue, so every
            // iteration starts from an empty queue.
            mr.run_until_idle();
        });
    });

    group.bench_function("schedule_fire", |b| {
        let mr = MemoryReactor::new();
        let reactor = mr.reactor().clone();
        let fired = Rc::new(Cell::new(0u64));
        let mut expected = 0u64;
        b.iter(|| {
            for i in 0..TIMERS {
                let fired = fired.clone();
                let delay = Duration::from_millis(1 + i as u64);
                let _call = reactor.call_later(delay, move |_| fired.set(fired.get() + 1));
            }
            mr.advance(Duration::from_secs(1));
            expected += TIMERS as u64;
            assert_eq!(fired.get(), expected);
        });
    });
    group.finish();
}

/// `criterion_group!` defines an undocumented `pub fn`; keep it out of the `missing_docs` lint.
mod group {
    criterion::criterion_group!(benches, super::bench_echo, super::bench_timers);
}
criterion_main!(group::benches);
