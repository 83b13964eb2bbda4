//! Differential tests: the test kit behaves as real connections do.
//!
//! One recording protocol per side logs every callback in order (protocol and producer). Each
//! scenario scripts what the protocols do in their callbacks and runs once through the
//! in-memory pair on a virtual clock (at several chunk sizes), once over loopback TCP and once
//! over a Unix socket on a real reactor; the normalised callback logs must be identical, and
//! equal to what the scenario expects.
//!
//! Normalisations (what legitimately differs between links):
//! - **chunking**: consecutive `data_received` calls are merged into one entry holding the
//!   concatenated bytes (one write may arrive split or joined with the next);
//! - **number of watermark cycles** (flow-control scenarios only): a run of repetitions of the
//!   same group of events (pause/resume cycles, a pull producer asked again and again) is
//!   squashed to one copy, as how often the buffer crosses the watermarks depends on the
//!   socket buffer sizes the kernel chooses;
//! - **how much arrives before an abort** (abort scenario only): data entries are compared by
//!   presence, not content, as the aborting side stops at a point that depends on chunking;
//! - **a pull producer's last request** (flow-control scenarios only): whether its last chunk
//!   overflows the socket buffer (and so whether it is asked once more after the last
//!   resume) depends on the buffer size;
//! - **whether a single large write overflows the socket buffer** (large buffered write
//!   only): pause/resume are dropped, as the kernel may take the whole write at once.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use torsion::prelude::*;
use torsion::testing::{connect_pair, MemoryOptions, MemoryReactor, StringTransport};
use torsion::Producer;

/// One callback, as logged.
#[derive(Clone, PartialEq, Eq)]
enum Ev {
    Made,
    Data(Vec<u8>),
    ReadLost,
    WriteLost,
    Pause,
    Resume,
    /// Producer callbacks.
    PPause,
    PResume,
    PStop,
    /// `connection_lost`, with the reason's kind.
    Lost(String),
    /// Something a scenario checked and logged itself.
    Note(String),
}

impl fmt::Debug for Ev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ev::Data(d) if d.len() > 32 => {
                let sum = d
                    .iter()
                    .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                write!(f, "Data({} bytes, sum {sum:x})", d.len())
            }
            Ev::Data(d) => write!(f, "Data({:?})", String::from_utf8_lossy(d)),
            Ev::Made => write!(f, "Made"),
            Ev::ReadLost => write!(f, "ReadLost"),
            Ev::WriteLost => write!(f, "WriteLost"),
            Ev::Pause => write!(f, "Pause"),
            Ev::Resume => write!(f, "Resume"),
            Ev::PPause => write!(f, "PPause"),
            Ev::PResume => write!(f, "PResume"),
            Ev::PStop => write!(f, "PStop"),
            Ev::Lost(r) => write!(f, "Lost({r})"),
            Ev::Note(n) => write!(f, "Note({n})"),
        }
    }
}

type Log = Rc<RefCell<Vec<Ev>>>;

/// What a scenario does on a callback: sees the event just logged and the transport (none
/// for `connection_lost`).
type Hook = Box<dyn FnMut(&Ev, Option<&mut dyn Transport>, &Log)>;

/// One side of a scenario: half-close opt-in and its script.
struct Side {
    half_close: bool,
    hook: Hook,
}

impl Side {
    fn new(hook: impl FnMut(&Ev, Option<&mut dyn Transport>, &Log) + 'static) -> Self {
        Side {
            half_close: false,
            hook: Box::new(hook),
        }
    }

    fn half_close(mut self) -> Self {
        self.half_close = true;
        self
    }
}

/// The recording protocol: logs, runs the side's script, stops the reactor once both sides
/// lost their connection.
struct Rec {
    log: Log,
    side: Side,
    reactor: Option<Reactor>,
    lost: Rc<Cell<u32>>,
}

impl Rec {
    fn event(&mut self, ev: Ev, t: Option<&mut dyn Transport>) {
        self.log.borrow_mut().push(ev.clone());
        (self.side.hook)(&ev, t, &self.log);
    }
}

impl Protocol for Rec {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.reactor = Some(t.reactor());
        self.event(Ev::Made, Some(t));
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.event(Ev::Data(data.to_vec()), Some(t));
    }
    fn half_close(&self) -> bool {
        self.side.half_close
    }
    fn read_connection_lost(&mut self, t: &mut dyn Transport) {
        self.event(Ev::ReadLost, Some(t));
    }
    fn write_connection_lost(&mut self, t: &mut dyn Transport) {
        self.event(Ev::WriteLost, Some(t));
    }
    fn pause_producing(&mut self, t: &mut dyn Transport) {
        self.event(Ev::Pause, Some(t));
    }
    fn resume_producing(&mut self, t: &mut dyn Transport) {
        self.event(Ev::Resume, Some(t));
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        let kind = match &reason {
            CloseReason::Done => "Done".to_string(),
            CloseReason::Reset => "Reset".to_string(),
            CloseReason::Aborted => "Aborted".to_string(),
            other => format!("{other:?}"),
        };
        self.event(Ev::Lost(kind), None);
        self.lost.set(self.lost.get() + 1);
        if self.lost.get() == 2 {
            if let Some(r) = &self.reactor {
                r.stop();
            }
        }
    }
}

/// Builds the two sides of a scenario afresh for each run.
type Scenario = fn() -> (Side, Side);

/// Both sides' logs after one run.
#[derive(Debug, PartialEq, Eq)]
struct Logs {
    client: Vec<Ev>,
    server: Vec<Ev>,
}

fn recs(scenario: Scenario) -> (Rec, Rec, Log, Log) {
    let (c, s) = scenario();
    let lost = Rc::new(Cell::new(0));
    let (cl, sl): (Log, Log) = Default::default();
    let rec = |log: &Log, side| Rec {
        log: log.clone(),
        side,
        reactor: None,
        lost: lost.clone(),
    };
    (rec(&cl, c), rec(&sl, s), cl, sl)
}

fn take(cl: Log, sl: Log) -> Logs {
    Logs {
        client: cl.take(),
        server: sl.take(),
    }
}

fn run_bounded(reactor: &Reactor) {
    let _hard_stop = reactor.call_later(Duration::from_secs(10), |r| r.stop());
    reactor.run().expect("run");
}

fn run_memory(scenario: Scenario, chunk: usize) -> Logs {
    let (c, s, cl, sl) = recs(scenario);
    let mr = MemoryReactor::new();
    let _pair = connect_pair(mr.reactor(), c, s, MemoryOptions::chunked(chunk));
    run_bounded(mr.reactor());
    take(cl, sl)
}

fn run_tcp(scenario: Scenario) -> Logs {
    let (c, s, cl, sl) = recs(scenario);
    let reactor = Reactor::new().expect("reactor");
    let mut s = Some(s);
    let port = reactor
        .listen_tcp("127.0.0.1:0", move |_: &Address| s.take())
        .expect("listen");
    let port = port.local_address().port().expect("port");
    let mut c = Some(c);
    let _connector = reactor.connect_tcp("127.0.0.1", port, move |_: &Address| c.take());
    run_bounded(&reactor);
    take(cl, sl)
}

fn run_unix(scenario: Scenario) -> Logs {
    let (c, s, cl, sl) = recs(scenario);
    let dir = tempfile::TempDir::new().expect("temp dir");
    let path = dir.path().join("kit.sock");
    let reactor = Reactor::new().expect("reactor");
    let mut s = Some(s);
    let _port = reactor
        .listen_unix(&path, move |_: &Address| s.take())
        .expect("listen");
    let mut c = Some(c);
    let _connector = reactor.connect_unix(&path, move |_: &Address| c.take());
    run_bounded(&reactor);
    take(cl, sl)
}

/// Merges consecutive data entries (chunking is not part of the contract).
fn merge_data(log: Vec<Ev>) -> Vec<Ev> {
    let mut out: Vec<Ev> = Vec::new();
    for ev in log {
        match (out.last_mut(), ev) {
            (Some(Ev::Data(prev)), Ev::Data(d)) => prev.extend_from_slice(&d),
            (_, ev) => out.push(ev),
        }
    }
    out
}

/// Squashes immediate repetitions of any group of up to 8 events to one copy.
fn squash_repeats(mut log: Vec<Ev>) -> Vec<Ev> {
    'again: loop {
        for k in 1..=8 {
            for i in 0..log.len().saturating_sub(2 * k - 1) {
                if log[i..i + k] == log[i + k..i + 2 * k] {
                    log.drain(i + k..i + 2 * k);
                    continue 'again;
                }
            }
        }
        return log;
    }
}

#[derive(Clone, Copy)]
enum Norm {
    /// Chunking only.
    Chunks,
    /// Plus watermark cycles squashed.
    Flow,
    /// Plus data compared by presence.
    DataPresence,
    /// Plus pause/resume dropped.
    NoFlow,
}

fn normalise(log: Vec<Ev>, norm: Norm) -> Vec<Ev> {
    let log = merge_data(log);
    match norm {
        Norm::Chunks => log,
        Norm::Flow => {
            let mut log = squash_repeats(log);
            // A pull producer's last chunk may or may not overflow the socket buffer (it
            // depends on the buffer size): its final `resume_producing` after the last resume
            // of the protocol is dropped.
            let n = log.len();
            if n >= 3 && log[n - 3] == Ev::Resume && log[n - 2] == Ev::PResume {
                log.remove(n - 2);
            }
            log
        }
        Norm::DataPresence => log
            .into_iter()
            .map(|e| match e {
                Ev::Data(_) => Ev::Data(b"...".to_vec()),
                e => e,
            })
            .collect(),
        Norm::NoFlow => log
            .into_iter()
            .filter(|e| !matches!(e, Ev::Pause | Ev::Resume))
            .collect(),
    }
}

/// Runs `scenario` on every link and checks that all normalised logs equal `expected`.
fn check(scenario: Scenario, norm: Norm, chunks: &[usize], expected: (Vec<Ev>, Vec<Ev>)) {
    check_unix_apart(scenario, norm, chunks, expected.clone(), expected);
}

/// As [`check`], with what a Unix socket is expected to give where it differs from TCP.
fn check_unix_apart(
    scenario: Scenario,
    norm: Norm,
    chunks: &[usize],
    expected: (Vec<Ev>, Vec<Ev>),
    unix_expected: (Vec<Ev>, Vec<Ev>),
) {
    let expected = Logs {
        client: normalise(expected.0, norm),
        server: normalise(expected.1, norm),
    };
    let unix_expected = Logs {
        client: normalise(unix_expected.0, norm),
        server: normalise(unix_expected.1, norm),
    };
    let mut runs: Vec<(String, Logs)> = chunks
        .iter()
        .map(|&c| (format!("memory pair, chunk {c}"), run_memory(scenario, c)))
        .collect();
    runs.push(("loopback TCP".into(), run_tcp(scenario)));
    runs.push(("Unix socket".into(), run_unix(scenario)));
    let mut failures = Vec::new();
    for (name, logs) in runs {
        let got = Logs {
            client: normalise(logs.client, norm),
            server: normalise(logs.server, norm),
        };
        let want = if name == "Unix socket" {
            &unix_expected
        } else {
            &expected
        };
        if got != *want {
            failures.push(format!("{name}:\n  got      {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "expected {expected:?}\n{}",
        failures.join("\n")
    );
}

fn lost(kind: &str) -> Ev {
    Ev::Lost(kind.into())
}

fn data(d: &[u8]) -> Ev {
    Ev::Data(d.to_vec())
}

/// A byte pattern with no short period.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251 % 7) as u8)
        .collect()
}

fn echo_server() -> Side {
    Side::new(|ev, t, _| {
        if let (Ev::Data(d), Some(t)) = (ev, t) {
            t.write(d);
        }
    })
}

/// Does nothing in any callback (the defaults of the recording protocol).
fn passive() -> Side {
    Side::new(|_, _, _| {})
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// The client writes and closes at once; the echo reaches a closing client, which discards it
/// (`lose_connection` stops delivering data) and ends cleanly once the server's FIN comes.
#[test]
fn echo_then_lose_connection_from_the_client() {
    fn scenario() -> (Side, Side) {
        let client = Side::new(|ev, t, _| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.write(b"hello");
                t.lose_connection();
            }
        });
        (client, echo_server())
    }
    check(
        scenario,
        Norm::Chunks,
        &[1, 7, 65536],
        (
            vec![Ev::Made, lost("Done")],
            vec![Ev::Made, data(b"hello"), lost("Done")],
        ),
    );
}

/// Half-close, client first: the client sends a request and its FIN; the server (half-close)
/// answers after the FIN, in two writes (the second from a timer), then closes.
#[test]
fn half_close_client_fin_first_then_server_answers_after_it() {
    fn scenario() -> (Side, Side) {
        let client = Side::new(|ev, t, _| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.write(b"request");
                t.lose_write_connection();
            }
        })
        .half_close();
        let server = Side::new(|ev, t, _| {
            if let (Ev::ReadLost, Some(t)) = (ev, t) {
                t.write(b"answer 1;");
                let h = t.handle();
                let _ = t.reactor().call_later(Duration::from_millis(20), move |_| {
                    h.write(b"answer 2");
                    h.lose_connection();
                });
            }
        })
        .half_close();
        (client, server)
    }
    check(
        scenario,
        Norm::Chunks,
        &[1, 7, 65536],
        (
            vec![
                Ev::Made,
                Ev::WriteLost,
                data(b"answer 1;answer 2"),
                Ev::ReadLost,
                lost("Done"),
            ],
            vec![Ev::Made, data(b"request"), Ev::ReadLost, lost("Done")],
        ),
    );
}

/// Half-close, server first: the server sends a banner and its FIN; the client (half-close)
/// answers after the FIN and closes; the server reads the answer after its own FIN.
#[test]
fn half_close_server_fin_first_then_client_answers_after_it() {
    fn scenario() -> (Side, Side) {
        let client = Side::new(|ev, t, _| {
            if let (Ev::ReadLost, Some(t)) = (ev, t) {
                t.write(b"thanks");
                t.lose_connection();
            }
        })
        .half_close();
        let server = Side::new(|ev, t, _| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.write(b"banner");
                t.lose_write_connection();
            }
        })
        .half_close();
        (client, server)
    }
    check(
        scenario,
        Norm::Chunks,
        &[1, 7, 65536],
        (
            vec![Ev::Made, data(b"banner"), Ev::ReadLost, lost("Done")],
            vec![
                Ev::Made,
                Ev::WriteLost,
                data(b"thanks"),
                Ev::ReadLost,
                lost("Done"),
            ],
        ),
    );
}

/// The server streams a lot; the client aborts on its first data: it ends `Aborted`, the
/// server (with data still buffered) sees a reset.
#[test]
fn abort_mid_transfer_resets_the_peer() {
    fn scenario() -> (Side, Side) {
        let client = Side::new(|ev, t, _| {
            if let (Ev::Data(_), Some(t)) = (ev, t) {
                t.abort_connection();
                t.write(b"after abort");
            }
        });
        let server = Side::new(|ev, t, _| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.write(&pattern(8 << 20));
            }
        });
        (client, server)
    }
    check(
        scenario,
        Norm::DataPresence,
        &[7, 65536],
        (
            vec![Ev::Made, data(b"..."), lost("Aborted")],
            vec![Ev::Made, Ev::Pause, lost("Reset")],
        ),
    );
}

/// An idle peer that reads sees the reset as `Reset` too, on TCP and in the kit. A Unix
/// socket has no reset: a peer whose data was all read sees an orderly end of stream.
#[test]
fn abort_resets_an_idle_reading_peer() {
    fn scenario() -> (Side, Side) {
        let client = Side::new(|ev, t, _| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.write(b"ping");
            }
        });
        let server = Side::new(|ev, t, _| {
            if let (Ev::Data(_), Some(t)) = (ev, t) {
                t.abort_connection();
            }
        });
        (client, server)
    }
    check_unix_apart(
        scenario,
        Norm::Chunks,
        &[65536],
        (
            vec![Ev::Made, lost("Reset")],
            vec![Ev::Made, data(b"ping"), lost("Aborted")],
        ),
        (
            vec![Ev::Made, lost("Done")],
            vec![Ev::Made, data(b"ping"), lost("Aborted")],
        ),
    );
}

/// `lose_connection` inside `data_received`, then a write: the write is ignored (the peer
/// never sees it), the transport says it is closing, and both sides end cleanly.
#[test]
fn close_inside_data_received_then_write_is_ignored() {
    fn scenario() -> (Side, Side) {
        let client = Side::new(|ev, t, _| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.write(b"x");
            }
        });
        let server = Side::new(|ev, t, log| {
            if let (Ev::Data(_), Some(t)) = (ev, t) {
                t.write(b"bye");
                t.lose_connection();
                t.write(b"ignored");
                log.borrow_mut()
                    .push(Ev::Note(format!("closing {}", t.is_closing())));
            }
        });
        (client, server)
    }
    check(
        scenario,
        Norm::Chunks,
        &[1, 65536],
        (
            vec![Ev::Made, data(b"bye"), lost("Done")],
            vec![
                Ev::Made,
                data(b"x"),
                Ev::Note("closing true".into()),
                lost("Done"),
            ],
        ),
    );
}

/// The server stops reading at once and resumes later: what the client sent meanwhile (and
/// its FIN) is delivered after the resume, whole and in order.
#[test]
fn pause_reading_then_resume_with_data_queued() {
    fn scenario() -> (Side, Side) {
        let client = Side::new(|ev, t, _| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.write(b"queued while paused");
                t.lose_connection();
            }
        });
        let server = Side::new(|ev, t, log| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.pause_reading();
                let h = t.handle();
                let log = log.clone();
                let _ = t.reactor().call_later(Duration::from_millis(50), move |_| {
                    log.borrow_mut().push(Ev::Note("resume_reading".into()));
                    h.resume_reading();
                });
            }
        });
        (client, server)
    }
    check(
        scenario,
        Norm::Chunks,
        &[1, 7, 65536],
        (
            vec![Ev::Made, lost("Done")],
            vec![
                Ev::Made,
                Ev::Note("resume_reading".into()),
                data(b"queued while paused"),
                lost("Done"),
            ],
        ),
    );
}

const STREAM_TOTAL: usize = 8 << 20;

thread_local! {
    /// The streamed bytes, computed once per test thread.
    static STREAM: Rc<Vec<u8>> = Rc::new(pattern(STREAM_TOTAL));
}

fn stream() -> Rc<Vec<u8>> {
    STREAM.with(|s| s.clone())
}

/// A push producer writing 16 KiB per reactor turn until paused.
struct Push {
    log: Log,
    handle: TransportHandle,
    sent: Rc<Cell<usize>>,
    paused: Rc<Cell<bool>>,
}

fn pump(handle: TransportHandle, sent: Rc<Cell<usize>>, paused: Rc<Cell<bool>>) {
    if paused.get() || handle.is_closing() {
        return;
    }
    let n = sent.get();
    if n >= STREAM_TOTAL {
        handle.unregister_producer();
        handle.lose_connection();
        return;
    }
    let chunk = (STREAM_TOTAL - n).min(16 * 1024);
    sent.set(n + chunk);
    handle.write(&stream()[n..n + chunk]);
    handle
        .reactor()
        .call_soon(move |_| pump(handle, sent, paused));
}

impl Producer for Push {
    fn pause_producing(&mut self) {
        self.log.borrow_mut().push(Ev::PPause);
        self.paused.set(true);
    }
    fn resume_producing(&mut self) {
        self.log.borrow_mut().push(Ev::PResume);
        if self.paused.replace(false) {
            pump(self.handle.clone(), self.sent.clone(), self.paused.clone());
        }
    }
    fn stop_producing(&mut self) {
        self.log.borrow_mut().push(Ev::PStop);
    }
}

/// A pull producer writing 256 KiB (more than the high watermark) each time it is asked.
struct Pull {
    log: Log,
    handle: TransportHandle,
    sent: usize,
}

impl Producer for Pull {
    fn resume_producing(&mut self) {
        self.log.borrow_mut().push(Ev::PResume);
        let chunk = (STREAM_TOTAL - self.sent).min(256 * 1024);
        self.handle.write(&stream()[self.sent..self.sent + chunk]);
        self.sent += chunk;
        if self.sent >= STREAM_TOTAL {
            self.handle.unregister_producer();
            self.handle.lose_connection();
        }
    }
    fn stop_producing(&mut self) {
        self.log.borrow_mut().push(Ev::PStop);
    }
}

/// A client that does not read for 100 ms, then reads everything.
fn slow_reader() -> Side {
    Side::new(|ev, t, _| {
        if let (Ev::Made, Some(t)) = (ev, t) {
            t.pause_reading();
            let h = t.handle();
            let _ = t
                .reactor()
                .call_later(Duration::from_millis(100), move |_| h.resume_reading());
        }
    })
}

/// A slow reader pauses a push producer (and the protocol) above the high watermark and
/// resumes both at the low one; everything arrives and the close is clean.
#[test]
fn slow_reader_pauses_and_resumes_a_push_producer() {
    fn scenario() -> (Side, Side) {
        let server = Side::new(|ev, t, log| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                let (sent, paused) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
                let handle = t.handle();
                t.register_producer(
                    Box::new(Push {
                        log: log.clone(),
                        handle: handle.clone(),
                        sent: sent.clone(),
                        paused: paused.clone(),
                    }),
                    true,
                );
                t.reactor().call_soon(move |_| pump(handle, sent, paused));
            }
        });
        (slow_reader(), server)
    }
    check(
        scenario,
        Norm::Flow,
        &[65536],
        (
            vec![Ev::Made, Ev::Data(stream().to_vec()), lost("Done")],
            vec![
                Ev::Made,
                Ev::PPause,
                Ev::Pause,
                Ev::PResume,
                Ev::Resume,
                lost("Done"),
            ],
        ),
    );
}

/// A slow reader with a pull producer: the producer is asked for each chunk as the buffer
/// drains, the protocol is paused and resumed at the watermarks, the close is clean.
#[test]
fn slow_reader_with_a_pull_producer() {
    fn scenario() -> (Side, Side) {
        let server = Side::new(|ev, t, log| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.register_producer(
                    Box::new(Pull {
                        log: log.clone(),
                        handle: t.handle(),
                        sent: 0,
                    }),
                    false,
                );
            }
        });
        (slow_reader(), server)
    }
    check(
        scenario,
        Norm::Flow,
        &[65536],
        (
            vec![Ev::Made, Ev::Data(stream().to_vec()), lost("Done")],
            vec![Ev::Made, Ev::PResume, Ev::Pause, Ev::Resume, lost("Done")],
        ),
    );
}

/// `lose_connection` right after a write far larger than the socket buffer: all of it is
/// flushed before the FIN, and both sides end cleanly.
#[test]
fn lose_connection_flushes_a_large_buffered_write_before_fin() {
    fn scenario() -> (Side, Side) {
        let server = Side::new(|ev, t, _| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.write(&stream());
                t.lose_connection();
            }
        });
        (passive(), server)
    }
    check(
        scenario,
        Norm::NoFlow,
        &[65536],
        (
            vec![Ev::Made, Ev::Data(stream().to_vec()), lost("Done")],
            vec![Ev::Made, lost("Done")],
        ),
    );
}

/// The client half-closes (without opting in to half-close) after a request; the server
/// answers and, on the FIN, closes; the client reads the answer and ends cleanly.
#[test]
fn lose_write_connection_then_the_peer_closes() {
    fn scenario() -> (Side, Side) {
        let client = Side::new(|ev, t, _| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.write(b"request");
                t.lose_write_connection();
                t.write(b"ignored after lose_write_connection");
            }
        });
        let replied = Cell::new(false);
        let server = Side::new(move |ev, t, _| {
            if let (Ev::Data(_), Some(t)) = (ev, t) {
                if !replied.replace(true) {
                    t.write(b"reply");
                }
            }
        });
        (client, server)
    }
    check(
        scenario,
        Norm::Chunks,
        &[1, 65536],
        (
            vec![Ev::Made, Ev::WriteLost, data(b"reply"), lost("Done")],
            vec![Ev::Made, data(b"request"), lost("Done")],
        ),
    );
}

/// After `connection_lost`, every call through a kept handle is ignored: nothing reaches the
/// peer, nothing is buffered, the transport says it is closing.
#[test]
fn writes_after_connection_lost_are_ignored() {
    fn scenario() -> (Side, Side) {
        let handle: Rc<RefCell<Option<TransportHandle>>> = Default::default();
        let client = Side::new(move |ev, t, log| match (ev, t) {
            (Ev::Made, Some(t)) => *handle.borrow_mut() = Some(t.handle()),
            (Ev::Lost(_), None) => {
                let h = handle.borrow_mut().take().expect("handle");
                h.write(b"late");
                h.write_vectored(&[std::io::IoSlice::new(b"late too")]);
                h.lose_write_connection();
                h.lose_connection();
                h.abort_connection();
                h.pause_reading();
                h.resume_reading();
                log.borrow_mut().push(Ev::Note(format!(
                    "closing {} buffered {}",
                    h.is_closing(),
                    h.buffered()
                )));
            }
            _ => {}
        });
        let server = Side::new(|ev, t, _| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.write(b"only this");
                t.lose_connection();
            }
        });
        (client, server)
    }
    check(
        scenario,
        Norm::Chunks,
        &[1, 65536],
        (
            vec![
                Ev::Made,
                data(b"only this"),
                lost("Done"),
                Ev::Note("closing true buffered 0".into()),
            ],
            vec![Ev::Made, lost("Done")],
        ),
    );
}

/// Written, then aborted at once: what reached the peer before the reset is still delivered
/// to it, then the reset (as TCP does; a Unix socket has no reset and ends cleanly).
#[test]
fn write_then_abort_delivers_what_was_sent_then_the_reset() {
    fn scenario() -> (Side, Side) {
        let client = Side::new(|ev, t, _| {
            if let (Ev::Made, Some(t)) = (ev, t) {
                t.write(b"sent before the abort");
                t.abort_connection();
            }
        });
        (client, passive())
    }
    check_unix_apart(
        scenario,
        Norm::Chunks,
        &[1, 65536],
        (
            vec![Ev::Made, lost("Aborted")],
            vec![Ev::Made, data(b"sent before the abort"), lost("Reset")],
        ),
        (
            vec![Ev::Made, lost("Aborted")],
            vec![Ev::Made, data(b"sent before the abort"), lost("Done")],
        ),
    );
}

/// The same through [`StringTransport`]: what the protocol wrote before aborting is taken,
/// then the reset shows.
#[test]
fn string_transport_write_then_abort() {
    let log: Log = Default::default();
    let client = Side::new(|ev, t, _| {
        if let (Ev::Made, Some(t)) = (ev, t) {
            t.write(b"sent before the abort");
            t.abort_connection();
        }
    });
    let rec = Rec {
        log: log.clone(),
        side: client,
        reactor: None,
        lost: Rc::new(Cell::new(0)),
    };
    let mr = MemoryReactor::new();
    let st = StringTransport::connect(&mr, rec);
    assert_eq!(st.take(), b"sent before the abort");
    assert!(st.reset_received());
    assert_eq!(*log.borrow(), vec![Ev::Made, lost("Aborted")]);
}
