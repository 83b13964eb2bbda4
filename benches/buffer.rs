//! Benchmarks of the write-buffer hot path: [`WriteBuffer`], the buffer every stream
//! connection keeps for the bytes its socket did not take.
//!
//! Each iteration moves 64 KiB through the buffer in chunks of 64 B, 1 KiB or 16 KiB, and
//! drains it in partial steps of about three quarters of a chunk (what short writes to a full
//! socket look like), so the compaction of the consumed prefix is part of the measurement:
//!
//! - `push_then_drain`: a burst of pushes, then the socket drains it in short writes;
//! - `interleaved`: steady state with a backlog of two chunks; each chunk pushed is matched by
//!   two short writes;
//! - `push_vectored`: a vectored write (8-byte header, payload, 2-byte trailer) of which the
//!   socket took the header and a quarter of the payload; the rest is buffered, then drained
//!   in short writes.
//!
//! Throughput is reported in bytes pushed into the buffer per second.
//!
//! Run with `cargo bench --bench buffer` (append `-- --quick` for a fast, rougher run, or a
//! filter such as `-- interleaved`).

use std::hint::black_box;
use std::io::IoSlice;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use torsion::reactor::buffer::WriteBuffer;

/// Bytes moved through the buffer per iteration.
const TOTAL: usize = 64 * 1024;
/// Chunk sizes written by the "protocol".
const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (16 * 1024, "16KiB")];

/// The size of one short write for chunks of `size` bytes: about 3/4 of a chunk, never a
/// divisor of it, so consumes do not line up with pushes.
fn short_write(size: usize) -> usize {
    (size * 3 / 4 + 1).max(1)
}

/// Drains `buf` in short writes of `step` bytes, touching the bytes as `send` would.
fn drain(buf: &mut WriteBuffer, step: usize) {
    while !buf.is_empty() {
        let n = step.min(buf.len());
        black_box(&buf.front()[..n]);
        buf.consume(n);
    }
}

fn bench_buffer(c: &mut Criterion) {
    let mut group = c.benchmark_group("write_buffer");
    for (size, label) in SIZES {
        let chunk = vec![0xa5u8; size];
        let chunks = TOTAL / size;
        let step = short_write(size);

        group.throughput(Throughput::Bytes(TOTAL as u64));
        group.bench_with_input(BenchmarkId::new("push_then_drain", label), &size, |b, _| {
            let mut buf = WriteBuffer::new();
            b.iter(|| {
                for _ in 0..chunks {
                    buf.push(black_box(&chunk));
                }
                drain(&mut buf, step);
            });
        });

        group.bench_with_input(BenchmarkId::new("interleaved", label), &size, |b, _| {
            let mut buf = WriteBuffer::new();
            // A standing backlog of two chunks: the socket is behind, as when a write buffer
            // is in use at all.
            buf.push(&chunk);
            buf.push(&chunk);
            let first = size / 3;
            b.iter(|| {
                for _ in 0..chunks {
                    buf.push(black_box(&chunk));
                    black_box(&buf.front()[..first]);
                    buf.consume(first);
                    black_box(&buf.front()[..size - first]);
                    buf.consume(size - first);
                }
            });
            assert_eq!(buf.len(), 2 * size);
        });

        let header = [0x11u8; 8];
        let trailer = *b"\r\n";
        // The socket took the header and a quarter of the payload of every vectored write.
        let skip = header.len() + size / 4;
        let pushed = header.len() + size + trailer.len() - skip;
        group.throughput(Throughput::Bytes((chunks * pushed) as u64));
        group.bench_with_input(BenchmarkId::new("push_vectored", label), &size, |b, _| {
            let mut buf = WriteBuffer::new();
            b.iter(|| {
                for _ in 0..chunks {
                    let bufs = [
                        IoSlice::new(&header),
                        IoSlice::new(black_box(&chunk)),
                        IoSlice::new(&trailer),
                    ];
                    buf.push_vectored(&bufs, black_box(skip));
                }
                drain(&mut buf, step);
            });
        });
    }
    group.finish();
}

/// `criterion_group!` defines an undocumented `pub fn`; keep it out of the `missing_docs` lint.
mod group {
    criterion::criterion_group!(benches, super::bench_buffer);
}
criterion_main!(group::benches);
