//! Transport throughput: a torsion client streams to a torsion server in one process, on one
//! real [`Reactor`], over loopback TCP (127.0.0.1, an ephemeral port) and over a Unix socket
//! (in a temporary directory), with writes of 1 KiB, 16 KiB and 64 KiB.
//!
//! The client is a pull [`Producer`] that writes one `size`-byte chunk each time the
//! transport asks for more (whenever its write buffer has drained) until it has sent the
//! iteration's bytes; the server is a sink that counts what arrives and stops the reactor once
//! everything has. Each iteration moves 8 MiB; criterion reports the rate in MiB/s
//! (`thrpt`). The connection is set up once per transport and size, outside the timed part;
//! each sample runs the reactor once for all its iterations' bytes. A 30 s safety timer
//! bounds every run, and the byte count is asserted afterwards.
//!
//! Run with `cargo bench --bench throughput` (about a minute; filter with e.g.
//! `-- throughput/tcp`). Both ends share one thread, so the figure is the framework's cost
//! for sending *and* receiving each byte.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use torsion::prelude::*;
use torsion::{ListeningPort, Producer};

/// Bytes the client sends per iteration.
const BYTES_PER_ITER: u64 = 8 * 1024 * 1024;
/// Write sizes.
const SIZES: [(usize, &str); 3] = [(1024, "1KiB"), (16 * 1024, "16KiB"), (64 * 1024, "64KiB")];
/// Upper bound on one run of the reactor (setup or one sample).
const SAFETY: Duration = Duration::from_secs(30);

/// State shared by the two ends and the benchmark driver.
#[derive(Default)]
struct Shared {
    /// Bytes the sink has received in the current run.
    received: Cell<u64>,
    /// Bytes the sink waits for before stopping the reactor.
    target: Cell<u64>,
    /// The server accepted the connection.
    server_up: Cell<bool>,
    /// The client's transport, once connected.
    client: RefCell<Option<TransportHandle>>,
}

impl Shared {
    /// During setup: stop once both ends are connected.
    fn maybe_connected(&self, reactor: &Reactor) {
        if self.server_up.get() && self.client.borrow().is_some() {
            reactor.stop();
        }
    }
}

/// The server: counts bytes, stops the reactor when the target is reached.
struct Sink {
    shared: Rc<Shared>,
}

impl Protocol for Sink {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        self.shared.server_up.set(true);
        self.shared.maybe_connected(&transport.reactor());
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        let received = self.shared.received.get() + data.len() as u64;
        self.shared.received.set(received);
        if received >= self.shared.target.get() {
            transport.reactor().stop();
        }
    }
}

/// The client protocol: hands its transport to the driver, ignores input.
struct Client {
    shared: Rc<Shared>,
}

impl Protocol for Client {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        *self.shared.client.borrow_mut() = Some(transport.handle());
        self.shared.maybe_connected(&transport.reactor());
    }

    fn data_received(&mut self, _transport: &mut dyn Transport, _data: &[u8]) {}
}

/// A pull producer writing `chunk` until `remaining` bytes have been sent, then unregistering
/// itself (a pull producer that writes nothing would be asked again at once, forever).
struct Pump {
    transport: TransportHandle,
    chunk: Rc<[u8]>,
    remaining: u64,
}

impl Producer for Pump {
    fn resume_producing(&mut self) {
        if self.remaining > 0 {
            let n = self.chunk.len().min(self.remaining as usize);
            self.transport.write(&self.chunk[..n]);
            self.remaining -= n as u64;
        }
        if self.remaining == 0 {
            self.transport.unregister_producer();
        }
    }
}

/// A connected client/server pair on one reactor, ready to stream.
struct Bench {
    reactor: Reactor,
    shared: Rc<Shared>,
    chunk: Rc<[u8]>,
    _port: ListeningPort,
    _dir: Option<tempfile::TempDir>,
}

impl Bench {
    fn tcp(size: usize) -> Bench {
        let reactor = Reactor::new().expect("reactor");
        let shared = Rc::new(Shared::default());
        let s = shared.clone();
        let port = reactor
            .listen_tcp("127.0.0.1:0", move |_: &Address| Sink { shared: s.clone() })
            .expect("listen on 127.0.0.1:0");
        let addr = port.local_address().socket_addr().expect("an inet address");
        let s = shared.clone();
        let _connector = reactor.connect_tcp("127.0.0.1", addr.port(), move |_: &Address| Client {
            shared: s.clone(),
        });
        Self::connected(reactor, shared, port, None, size)
    }

    fn unix(size: usize) -> Bench {
        let reactor = Reactor::new().expect("reactor");
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("throughput.sock");
        let shared = Rc::new(Shared::default());
        let s = shared.clone();
        let port = reactor
            .listen_unix(&path, move |_: &Address| Sink { shared: s.clone() })
            .expect("listen on a unix socket");
        let s = shared.clone();
        let _connector = reactor.connect_unix(Path::new(&path), move |_: &Address| Client {
            shared: s.clone(),
        });
        Self::connected(reactor, shared, port, Some(dir), size)
    }

    /// Runs the reactor until both ends are connected.
    fn connected(
        reactor: Reactor,
        shared: Rc<Shared>,
        port: ListeningPort,
        dir: Option<tempfile::TempDir>,
        size: usize,
    ) -> Bench {
        let safety = reactor.call_later(SAFETY, |r| r.stop());
        reactor.run().expect("run the reactor");
        safety.cancel();
        assert!(
            shared.server_up.get() && shared.client.borrow().is_some(),
            "the client did not connect within {SAFETY:?}"
        );
        Bench {
            reactor,
            shared,
            chunk: vec![0x5au8; size].into(),
            _port: port,
            _dir: dir,
        }
    }

    /// Streams `bytes` from the client to the server; returns the time the transfer took.
    fn transfer(&self, bytes: u64) -> Duration {
        let client = self.shared.client.borrow().clone().expect("connected");
        assert!(!client.is_closing(), "the client connection closed");
        self.shared.received.set(0);
        self.shared.target.set(bytes);
        let pump = Pump {
            transport: client.clone(),
            chunk: self.chunk.clone(),
            remaining: bytes,
        };
        let safety = self.reactor.call_later(SAFETY, |r| r.stop());
        let start = Instant::now();
        client.register_producer(Box::new(pump), false);
        self.reactor.run().expect("run the reactor");
        let elapsed = start.elapsed();
        safety.cancel();
        assert_eq!(
            self.shared.received.get(),
            bytes,
            "the sink did not receive every byte within {SAFETY:?}"
        );
        elapsed
    }
}

fn bench_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(BYTES_PER_ITER));
    for (transport, setup) in [
        ("tcp", Bench::tcp as fn(usize) -> Bench),
        ("unix", Bench::unix),
    ] {
        for (size, label) in SIZES {
            let bench = setup(size);
            group.bench_function(BenchmarkId::new(transport, label), |b| {
                b.iter_custom(|iters| bench.transfer(iters * BYTES_PER_ITER));
            });
        }
    }
    group.finish();
}

/// `criterion_group!` defines an undocumented `pub fn`; keep it out of the `missing_docs` lint.
mod group {
    criterion::criterion_group!(benches, super::bench_throughput);
}
criterion_main!(group::benches);
