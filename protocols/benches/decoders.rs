//! Decoder throughput: each torsion decoder on the same input fed in 16, 64, 256 and
//! 1024-byte chunks, next to a straightforward tokio-util codec (`LinesCodec`,
//! `LengthDelimitedCodec`) decoding the same input (chunks appended to a `BytesMut`, `decode`
//! called in a loop).
//!
//! Criterion reports MiB/s; after it, a summary table gives frames/s, MiB/s and the
//! torsion / tokio-util ratio for each case (`cargo bench -p torsion-protocols --bench
//! decoders`; add a filter such as `lines` to run a subset).

#![allow(missing_docs)]
#![allow(clippy::print_stdout, reason = "a bench prints its summary table")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput};
use tokio_util::codec::{Decoder as _, LengthDelimitedCodec, LinesCodec};
use torsion_protocols::framing::{
    Decoder, Flow, Framing, LineDecoder, NetstringDecoder, PrefixDecoder, PrefixWidth,
};

const CHUNKS: [usize; 4] = [16, 64, 256, 1024];
const INPUT_BYTES: usize = 256 * 1024;

/// Deterministic payloads of 8..120 printable bytes (a typical line or small message).
fn payloads() -> Vec<Vec<u8>> {
    let mut seed: u32 = 0x1234_5678;
    let mut next = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        seed >> 8
    };
    let mut out = Vec::new();
    let mut total = 0;
    while total < INPUT_BYTES {
        let len = 8 + (next() % 113) as usize;
        let p: Vec<u8> = (0..len).map(|_| b' ' + (next() % 95) as u8).collect();
        total += len + 4;
        out.push(p);
    }
    out
}

fn encode(framing: Framing, payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        framing.encode(p, &mut out).expect("short payloads");
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Torsion(Framing),
    TokioLines,
    TokioLength(usize),
}

impl Impl {
    fn name(self) -> String {
        match self {
            Impl::Torsion(f) => format!("torsion-{f}"),
            Impl::TokioLines => "tokio-LinesCodec".into(),
            Impl::TokioLength(n) => format!("tokio-LengthDelimited{}", n * 8),
        }
    }
}

/// Decodes `input` in `chunk`-byte reads; returns the frame count.
fn run(imp: Impl, input: &[u8], chunk: usize) -> usize {
    let mut frames = 0usize;
    let on_frame = |f: &[u8]| {
        black_box(f);
        frames += 1;
        Flow::Continue
    };
    match imp {
        Impl::Torsion(framing) => {
            fn feed(
                mut d: impl Decoder,
                input: &[u8],
                chunk: usize,
                mut f: impl FnMut(&[u8]) -> Flow,
            ) {
                for c in input.chunks(chunk) {
                    d.decode(c, &mut f).expect("valid input");
                }
            }
            match framing {
                Framing::Lines => feed(LineDecoder::new(), input, chunk, on_frame),
                Framing::Netstring => feed(NetstringDecoder::new(), input, chunk, on_frame),
                Framing::Int8 => feed(
                    PrefixDecoder::new(PrefixWidth::Int8),
                    input,
                    chunk,
                    on_frame,
                ),
                Framing::Int16 => feed(
                    PrefixDecoder::new(PrefixWidth::Int16),
                    input,
                    chunk,
                    on_frame,
                ),
                Framing::Int32 => feed(
                    PrefixDecoder::new(PrefixWidth::Int32),
                    input,
                    chunk,
                    on_frame,
                ),
            }
        }
        Impl::TokioLines => {
            let mut codec = LinesCodec::new_with_max_length(16_384);
            let mut buf = BytesMut::new();
            for c in input.chunks(chunk) {
                buf.extend_from_slice(c);
                while let Some(line) = codec.decode(&mut buf).expect("valid input") {
                    black_box(&line);
                    frames += 1;
                }
            }
        }
        Impl::TokioLength(n) => {
            let mut codec = LengthDelimitedCodec::builder()
                .length_field_length(n)
                .max_frame_length(99_999)
                .new_codec();
            let mut buf = BytesMut::new();
            for c in input.chunks(chunk) {
                buf.extend_from_slice(c);
                while let Some(frame) = codec.decode(&mut buf).expect("valid input") {
                    black_box(&frame);
                    frames += 1;
                }
            }
        }
    }
    frames
}

/// (framing, torsion, tokio-util counterpart)
fn cases() -> Vec<(Framing, Impl, Option<Impl>)> {
    vec![
        (
            Framing::Lines,
            Impl::Torsion(Framing::Lines),
            Some(Impl::TokioLines),
        ),
        (
            Framing::Int8,
            Impl::Torsion(Framing::Int8),
            Some(Impl::TokioLength(1)),
        ),
        (
            Framing::Int16,
            Impl::Torsion(Framing::Int16),
            Some(Impl::TokioLength(2)),
        ),
        (
            Framing::Int32,
            Impl::Torsion(Framing::Int32),
            Some(Impl::TokioLength(4)),
        ),
        (Framing::Netstring, Impl::Torsion(Framing::Netstring), None),
    ]
}

fn benches(c: &mut Criterion) {
    let payloads = payloads();
    for (framing, torsion, tokio) in cases() {
        let input = encode(framing, &payloads);
        let mut group = c.benchmark_group(format!("decode-{framing}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        for chunk in CHUNKS {
            for imp in [Some(torsion), tokio].into_iter().flatten() {
                group.bench_with_input(BenchmarkId::new(imp.name(), chunk), &chunk, |b, &chunk| {
                    b.iter(|| run(imp, &input, chunk))
                });
            }
        }
        group.finish();
    }
}

/// Seconds per full decode of `input` for `a` and `b`, measured alternately (so both see the
/// same machine load) and taking the fastest of the rounds (the least disturbed by other
/// processes on a shared machine).
fn time_pair(
    a: Impl,
    b: Option<Impl>,
    input: &[u8],
    chunk: usize,
    budget: Duration,
) -> (f64, Option<f64>) {
    let once = |imp: Impl| {
        let t = Instant::now();
        black_box(run(imp, black_box(input), chunk));
        t.elapsed().as_secs_f64()
    };
    let (mut best_a, mut best_b) = (f64::MAX, f64::MAX);
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < budget || rounds < 10 {
        best_a = best_a.min(once(a));
        if let Some(b) = b {
            best_b = best_b.min(once(b));
        }
        rounds += 1;
    }
    (best_a, b.map(|_| best_b))
}

fn summary(filter: Option<&str>) {
    let payloads = payloads();
    println!();
    println!("| framing | chunk | torsion Mframes/s | torsion MiB/s | tokio-util MiB/s | ratio |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (framing, torsion, tokio) in cases() {
        if filter.is_some_and(|f| !format!("decode-{framing}").contains(f)) {
            continue;
        }
        let input = encode(framing, &payloads);
        let frames = run(torsion, &input, 1024);
        assert_eq!(frames, payloads.len());
        if let Some(t) = tokio {
            assert_eq!(run(t, &input, 1024), frames, "same frames");
        }
        let mib = input.len() as f64 / (1024.0 * 1024.0);
        for chunk in CHUNKS {
            let (ours, theirs) =
                time_pair(torsion, tokio, &input, chunk, Duration::from_millis(600));
            println!(
                "| {framing} | {chunk} | {:.1} | {:.0} | {} | {} |",
                frames as f64 / ours / 1e6,
                mib / ours,
                theirs.map_or("–".into(), |t| format!("{:.0}", mib / t)),
                theirs.map_or("–".into(), |t| format!("{:.2}x", t / ours)),
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: skip the table there.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") {
        let filter = args.iter().skip(1).find(|a| !a.starts_with('-'));
        summary(filter.map(String::as_str));
    }
}
