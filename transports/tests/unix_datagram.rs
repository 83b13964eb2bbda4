//! Unix datagram sockets: round trips between paths in a temporary directory, stale and live
//! socket files, closing, and the bounded send queue when the receiver stops reading.

// Skips and measurements are printed (shown with `--nocapture`).
#![allow(clippy::print_stdout)]

mod util;

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use torsion_reactor::prelude::*;
use torsion_reactor::{DatagramError, Error, MulticastInterface, UnixAddress};
use torsion_transports::{DatagramOptions, DatagramPort, ReactorExt, QUEUE_ENTRY_OVERHEAD};

use util::{pattern, run_for, run_until, Peer, IO_TIMEOUT};

/// What a [`DgRecorder`] saw, shared with the test.
#[derive(Default)]
struct DgRecord {
    started: usize,
    got: Vec<(Vec<u8>, Address)>,
    refused: usize,
    stopped: usize,
    echo_errors: Vec<String>,
}

type DgShared = Rc<RefCell<DgRecord>>;

fn dg_record() -> DgShared {
    Rc::new(RefCell::new(DgRecord::default()))
}

/// Records every event; optionally echoes each datagram to its sender.
struct DgRecorder {
    rec: DgShared,
    echo: bool,
}

impl DgRecorder {
    fn new(rec: &DgShared) -> Self {
        DgRecorder {
            rec: rec.clone(),
            echo: false,
        }
    }

    fn echo(rec: &DgShared) -> Self {
        DgRecorder {
            rec: rec.clone(),
            echo: true,
        }
    }
}

impl DatagramProtocol for DgRecorder {
    fn start_protocol(&mut self, _transport: &mut dyn DatagramTransport) {
        self.rec.borrow_mut().started += 1;
    }

    fn datagram_received(
        &mut self,
        transport: &mut dyn DatagramTransport,
        data: &[u8],
        from: &Address,
    ) {
        self.rec
            .borrow_mut()
            .got
            .push((data.to_vec(), from.clone()));
        if self.echo {
            if let Err(e) = transport.write_to(data, from) {
                self.rec.borrow_mut().echo_errors.push(e.to_string());
            }
        }
    }

    fn connection_refused(&mut self, _transport: &mut dyn DatagramTransport) {
        self.rec.borrow_mut().refused += 1;
    }

    fn stop_protocol(&mut self) {
        self.rec.borrow_mut().stopped += 1;
    }
}

fn received(rec: &DgShared) -> usize {
    rec.borrow().got.len()
}

fn unix(path: &Path) -> Address {
    Address::Unix(UnixAddress::Path(path.to_owned()))
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Closes `port` (twice: idempotent) and checks the file is gone and `stop_protocol` ran once.
fn stop_and_check(reactor: &Reactor, port: &DatagramPort, path: &Path, rec: &DgShared) {
    assert!(is_socket(path), "{} exists while open", path.display());
    port.stop_listening();
    port.stop_listening();
    assert!(!path.exists(), "stop_listening removes {}", path.display());
    let r = rec.clone();
    run_until(reactor, "stop_protocol", move || r.borrow().stopped > 0);
    run_for(reactor, Duration::from_millis(20));
    assert_eq!(rec.borrow().stopped, 1, "stop_protocol runs exactly once");
    assert!(matches!(
        port.write_to(b"late", &unix(path)),
        Err(DatagramError::Closed)
    ));
}

#[test]
fn round_trip_between_paths() {
    let dir = tempfile::tempdir().unwrap();
    let server_path = dir.path().join("server.sock");
    let client_path = dir.path().join("client.sock");
    let reactor = Reactor::new().unwrap();

    let server_rec = dg_record();
    let server = reactor
        .listen_unix_datagram(&server_path, DgRecorder::echo(&server_rec))
        .unwrap();
    assert_eq!(server.local_address(), unix(&server_path));
    assert!(is_socket(&server_path));
    assert_eq!(server_rec.borrow().started, 1);

    let client_rec = dg_record();
    let client = reactor
        .connect_unix_datagram(&client_path, &server_path, DgRecorder::new(&client_rec))
        .unwrap();
    assert_eq!(client.local_address(), unix(&client_path));
    assert_eq!(client.peer_address(), Some(unix(&server_path)));

    let sizes = [0, 1, 100, 4_096, 60_000];
    for (i, &size) in sizes.iter().enumerate() {
        let mut data = pattern(size);
        if let Some(first) = data.first_mut() {
            *first = i as u8;
        }
        client.write(&data).unwrap();
        let c = client_rec.clone();
        run_until(&reactor, &format!("the echo of {size} bytes"), move || {
            received(&c) > i
        });
        assert!(
            server_rec.borrow().got[i].0 == data,
            "server got {size} bytes whole"
        );
        assert_eq!(server_rec.borrow().got[i].1, unix(&client_path));
        let (back, from) = client_rec.borrow().got[i].clone();
        assert_eq!(back.len(), size);
        assert!(back == data, "the echo of {size} bytes is intact");
        assert_eq!(
            from,
            unix(&server_path),
            "the echo comes from the server's path"
        );
    }

    // A plain std socket with its own path talks to the torsion server too.
    let std_path = dir.path().join("std.sock");
    let sp = server_path.clone();
    let peer = Peer::spawn(move || {
        let s = UnixDatagram::bind(&std_path).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.send_to(b"from std", &sp).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).expect("the echo");
        (buf[..n].to_vec(), from.as_pathname().map(Path::to_owned))
    });
    let done = peer.done_flag();
    run_until(&reactor, "the std peer's echo", move || {
        done.load(Ordering::Acquire)
    });
    assert_eq!(
        peer.join(),
        (b"from std".to_vec(), Some(server_path.clone()))
    );

    // IP-only options are not available on Unix sockets.
    let e = server
        .join_group(
            IpAddr::V4(Ipv4Addr::new(239, 1, 1, 1)),
            MulticastInterface::Any,
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(matches!(
        server.write_to(b"x", &Address::Inet("127.0.0.1:9".parse().unwrap())),
        Err(DatagramError::WrongAddress(_))
    ));

    assert!(server_rec.borrow().echo_errors.is_empty());
    assert_eq!(server.dropped() + client.dropped(), 0);
    assert_eq!(client_rec.borrow().refused, 0);
    stop_and_check(&reactor, &client, &client_path, &client_rec);
    stop_and_check(&reactor, &server, &server_path, &server_rec);
    assert_eq!(server_rec.borrow().started, 1);
}

#[test]
fn a_datagram_longer_than_the_read_size_is_dropped_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let server_path = dir.path().join("server.sock");
    let reactor = Reactor::new().unwrap();
    let rec = dg_record();
    let _server = reactor
        .listen_unix_datagram(&server_path, DgRecorder::new(&rec))
        .unwrap();
    let sender = UnixDatagram::unbound().unwrap();
    let big = pattern(torsion_transports::DATAGRAM_READ_SIZE + 1);
    match sender.send_to(&big, &server_path) {
        Ok(n) => assert_eq!(n, big.len()),
        Err(e) => {
            println!(
                "skipped: this kernel refuses {} byte datagrams: {e}",
                big.len()
            );
            return;
        }
    }
    sender.send_to(b"small", &server_path).unwrap();
    let r = rec.clone();
    run_until(&reactor, "the small datagram", move || received(&r) >= 1);
    run_for(&reactor, Duration::from_millis(50));
    let got = &rec.borrow().got;
    assert_eq!(got.len(), 1, "only the datagram that fits is delivered");
    assert_eq!(got[0].0, b"small");
}

#[test]
fn stale_file_is_replaced_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    // A socket file left behind by a dead server.
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(
        is_socket(&path),
        "the stale file stays after its socket closes"
    );

    let reactor = Reactor::new().unwrap();
    let rec = dg_record();
    let port = reactor
        .listen_unix_datagram(&path, DgRecorder::echo(&rec))
        .expect("a stale socket file is replaced");
    let client = UnixDatagram::unbound().unwrap();
    client.send_to(b"are you new?", &path).unwrap();
    let r = rec.clone();
    run_until(&reactor, "the new server to receive", move || {
        received(&r) > 0
    });
    assert_eq!(rec.borrow().got[0].0, b"are you new?");
    // An unbound sender has no address to reply to.
    assert_eq!(rec.borrow().got[0].1, Address::Unix(UnixAddress::Unnamed));

    // A live socket is not taken over.
    let live_path = dir.path().join("live.sock");
    let live = UnixDatagram::bind(&live_path).unwrap();
    match reactor.listen_unix_datagram(&live_path, DgRecorder::new(&dg_record())) {
        Err(Error::AddressInUse(_)) => {}
        other => panic!("binding over a live socket: expected AddressInUse, got {other:?}"),
    }
    assert!(
        is_socket(&live_path),
        "the live socket's file is left alone"
    );
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"still mine", &live_path)
        .expect("the live socket still receives");
    live.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    // (Skip any empty datagram a liveness probe may have left.)
    let got = loop {
        let n = live.recv(&mut buf).unwrap();
        if n > 0 {
            break buf[..n].to_vec();
        }
    };
    assert_eq!(got, b"still mine");

    // A path that cannot be bound is a clear error, not a panic.
    let missing = dir.path().join("no-such-dir").join("x.sock");
    assert!(reactor
        .listen_unix_datagram(&missing, DgRecorder::new(&dg_record()))
        .is_err());
    // Connecting to a path nobody listens on fails, and cleans up its own file.
    let local = dir.path().join("lonely.sock");
    let nobody = dir.path().join("nobody.sock");
    assert!(reactor
        .connect_unix_datagram(&local, &nobody, DgRecorder::new(&dg_record()))
        .is_err());
    assert!(
        !local.exists(),
        "a failed connect removes its own socket file"
    );

    stop_and_check(&reactor, &port, &path, &rec);
}

const SIZE: usize = 256;
/// Room for ten datagrams with their bookkeeping (and part of an eleventh, which must not
/// fit).
const QUEUE_BYTES: usize = 10 * (SIZE + QUEUE_ENTRY_OVERHEAD) + SIZE / 2;
const QUEUE_SLOTS: usize = 10;
const ATTEMPTS: usize = 1_000;

/// A datagram carrying its sequence number.
fn numbered(i: usize) -> Vec<u8> {
    let mut d = vec![(i % 251) as u8; SIZE];
    d[..8].copy_from_slice(&(i as u64).to_be_bytes());
    d
}

/// How many `SIZE`-byte datagrams the kernel takes from a non-blocking sender before a
/// receiver that does not read makes it block.
fn kernel_capacity(dir: &Path) -> usize {
    let rx_path = dir.join("calibrate-rx.sock");
    let rx = UnixDatagram::bind(&rx_path).unwrap();
    let tx = UnixDatagram::unbound().unwrap();
    tx.connect(&rx_path).unwrap();
    tx.set_nonblocking(true).unwrap();
    let mut n = 0;
    loop {
        match tx.send(&numbered(n)) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("calibration send: {e}"),
        }
        assert!(n < 100_000, "the kernel never pushed back");
    }
    drop(rx);
    let _ = std::fs::remove_file(rx_path);
    n
}

/// Writes `ATTEMPTS` numbered datagrams with `write` (connected) or `write_to`, while the
/// receiver does not read; checks the queue bound and the drop count; then lets the receiver
/// read and checks every accepted datagram arrives, in order.
fn bounded_queue(connected: bool) {
    let dir = tempfile::tempdir().unwrap();
    let capacity = kernel_capacity(dir.path());
    let rx_path = dir.path().join("rx.sock");
    let tx_path = dir.path().join("tx.sock");
    let rx = UnixDatagram::bind(&rx_path).unwrap();

    let reactor = Reactor::new().unwrap();
    let rec = dg_record();
    let tx = reactor
        .listen_unix_datagram_with(
            &tx_path,
            DgRecorder::new(&rec),
            DatagramOptions {
                max_queue_bytes: QUEUE_BYTES,
                ..DatagramOptions::default()
            },
        )
        .unwrap();
    let to = unix(&rx_path);
    if connected {
        tx.connect(&to).unwrap();
    }
    let send = |data: &[u8]| {
        if connected {
            tx.write(data)
        } else {
            tx.write_to(data, &to)
        }
    };

    let mut accepted = 0;
    let mut full = 0u64;
    for i in 0..ATTEMPTS {
        match send(&numbered(i)) {
            Ok(()) => {
                assert_eq!(full, 0, "datagram {i} accepted after the queue was full");
                accepted += 1;
            }
            Err(DatagramError::QueueFull) => full += 1,
            Err(e) => panic!("datagram {i}: expected Ok or QueueFull, got {e:?}"),
        }
    }
    println!("connected={connected}: kernel took {capacity}, {accepted} accepted, {full} dropped");
    assert!(full > 0, "the queue never filled");
    assert_eq!(tx.dropped(), full, "every QueueFull is counted");
    assert_eq!(
        accepted,
        capacity + QUEUE_SLOTS,
        "the kernel's share plus what fits in {QUEUE_BYTES} queued bytes"
    );

    // The reactor turns over while the receiver still does not read: nothing changes.
    run_for(&reactor, Duration::from_millis(100));
    assert_eq!(tx.dropped(), full);
    assert!(matches!(
        send(&numbered(ATTEMPTS)),
        Err(DatagramError::QueueFull)
    ));
    let full = full + 1;
    assert_eq!(tx.dropped(), full);

    // The receiver reads: the queued datagrams follow the ones the kernel held, in order.
    let reader = Peer::spawn(move || {
        rx.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut seqs = Vec::new();
        let mut buf = [0u8; 2 * SIZE];
        while seqs.len() < accepted {
            let n = rx.recv(&mut buf).expect("a queued datagram");
            assert_eq!(n, SIZE, "datagrams arrive whole");
            let seq = u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize;
            assert!(buf[..n] == numbered(seq)[..], "datagram {seq} is intact");
            seqs.push(seq);
        }
        // Nothing more: the dropped ones were never sent.
        rx.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let extra = rx.recv(&mut buf).ok();
        (seqs, extra, rx)
    });
    let done = reader.done_flag();
    run_until(&reactor, "the receiver to read the queue", move || {
        done.load(Ordering::Acquire)
    });
    let (seqs, extra, rx) = reader.join();
    assert_eq!(
        seqs,
        (0..accepted).collect::<Vec<_>>(),
        "in order, none lost"
    );
    assert_eq!(extra, None, "dropped datagrams are never sent");
    assert_eq!(
        tx.dropped(),
        full,
        "draining does not change the drop count"
    );

    // Drained: sending works again.
    send(b"after the drain").unwrap();
    rx.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    let n = rx.recv(&mut buf).expect("a new datagram goes straight out");
    assert_eq!(&buf[..n], b"after the drain");
    assert_eq!(received(&rec), 0);
    stop_and_check(&reactor, &tx, &tx_path, &rec);
}

#[test]
fn bounded_queue_when_a_connected_receiver_stops_reading() {
    bounded_queue(true);
}

#[test]
fn bounded_queue_when_an_addressed_receiver_stops_reading() {
    bounded_queue(false);
}

// Empty datagrams count against the queue's bound too: a sender writing nothing but empty
// datagrams to a receiver that stopped reading is refused once the queue holds its bytes'
// worth of entries (they queued without bound).
#[test]
fn empty_datagrams_fill_the_queue_too() {
    let dir = tempfile::tempdir().unwrap();
    let rx_path = dir.path().join("rx.sock");
    let _rx = UnixDatagram::bind(&rx_path).unwrap();
    let reactor = Reactor::new().unwrap();
    let limit = 64 * 1024;
    let tx = reactor
        .listen_unix_datagram_with(
            dir.path().join("tx.sock"),
            DgRecorder::new(&dg_record()),
            DatagramOptions {
                max_queue_bytes: limit,
                ..DatagramOptions::default()
            },
        )
        .unwrap();
    tx.connect(&unix(&rx_path)).unwrap();
    let mut accepted = 0;
    let mut full = 0;
    for _ in 0..100_000 {
        match tx.write(b"") {
            Ok(()) => accepted += 1,
            Err(DatagramError::QueueFull) => full += 1,
            Err(e) => panic!("expected Ok or QueueFull, got {e:?}"),
        }
    }
    assert!(
        full > 0,
        "{accepted} empty datagrams accepted, none refused"
    );
    // What the kernel took, plus what fits the queue's bound.
    assert!(
        accepted <= 1_000 + limit / QUEUE_ENTRY_OVERHEAD,
        "{accepted} accepted"
    );
}

/// Ticks of CPU time used by the calling thread so far.
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Queues datagrams for a receiver that does not read, then measures the CPU time the
/// reactor thread uses over half a second of waiting.
fn cpu_ticks_while_blocked(connected: bool) -> Option<u64> {
    let dir = tempfile::tempdir().unwrap();
    let rx_path = dir.path().join("rx.sock");
    let _rx = UnixDatagram::bind(&rx_path).unwrap();
    let reactor = Reactor::new().unwrap();
    let tx = reactor
        .listen_unix_datagram(dir.path().join("tx.sock"), DgRecorder::new(&dg_record()))
        .unwrap();
    let to = unix(&rx_path);
    if connected {
        tx.connect(&to).unwrap();
    }
    let mut queued = 0;
    for i in 0..100 {
        if tx.write_to(&numbered(i), &to).is_ok() {
            queued += 1;
        }
    }
    assert!(queued > 11, "some datagrams wait in the queue");
    let before = thread_cpu_ticks()?;
    let wall = std::time::Instant::now();
    run_for(&reactor, Duration::from_millis(500));
    let used = thread_cpu_ticks()? - before;
    println!(
        "connected={connected}: {used} ticks of CPU in {:?} while blocked",
        wall.elapsed()
    );
    Some(used)
}

// While datagrams wait in the queue for a receiver that does not read, the reactor sleeps
// instead of retrying in a busy loop. (100 ticks a second: a spinning reactor uses about 50
// over the half second, a sleeping one about 0.)

#[test]
fn blocked_queue_does_not_spin_when_connected() {
    let Some(used) = cpu_ticks_while_blocked(true) else {
        println!("SKIPPED: no /proc/thread-self/stat to measure CPU time");
        return;
    };
    assert!(
        used < 10,
        "the reactor used {used} ticks of CPU in 0.5 s waiting for the receiver (busy loop)"
    );
}

#[test]
fn blocked_queue_does_not_spin_when_sending_to_an_address() {
    let Some(used) = cpu_ticks_while_blocked(false) else {
        println!("SKIPPED: no /proc/thread-self/stat to measure CPU time");
        return;
    };
    // An unconnected Unix datagram socket always polls writable (the kernel cannot know which
    // destination will be next), so "writable" alone must not drive the retries.
    assert!(
        used < 10,
        "the reactor used {used} ticks of CPU in 0.5 s waiting for the receiver (busy loop)"
    );
}

/// Checking whether a socket file is live must not send the live socket anything.
#[test]
fn probing_a_live_socket_sends_it_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.sock");
    let reactor = Reactor::new().unwrap();
    let rec = dg_record();
    let live = reactor
        .listen_unix_datagram(&path, DgRecorder::new(&rec))
        .unwrap();
    match reactor.listen_unix_datagram(&path, DgRecorder::new(&dg_record())) {
        Err(Error::AddressInUse(_)) => {}
        other => panic!("binding over a live socket: expected AddressInUse, got {other:?}"),
    }
    run_for(&reactor, Duration::from_millis(50));
    let got = rec.borrow().got.clone();
    assert!(
        got.is_empty(),
        "the live server received {got:?} from another process's failed bind"
    );
    stop_and_check(&reactor, &live, &path, &rec);
}

/// Stopping removes the socket file only if it is still this socket's: another server that
/// replaced it meanwhile keeps its file.
#[test]
fn stop_leaves_another_servers_socket_at_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replaced.sock");
    let reactor = Reactor::new().unwrap();
    let rec = dg_record();
    let port = reactor
        .listen_unix_datagram(&path, DgRecorder::new(&rec))
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let theirs = UnixDatagram::bind(&path).unwrap();
    port.stop_listening();
    assert!(
        is_socket(&path),
        "stop_listening removed another server's socket file"
    );
    drop(theirs);
}

/// Datagrams queued for the connected peer while its queue was full still go to it after
/// `connect` changes the peer (they went to the new one); later writes go to the new one.
#[test]
fn datagrams_queued_for_the_old_peer_still_go_to_it_after_connect() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = kernel_capacity(dir.path());
    let a_path = dir.path().join("a.sock");
    let b_path = dir.path().join("b.sock");
    let a = UnixDatagram::bind(&a_path).unwrap();
    let b = UnixDatagram::bind(&b_path).unwrap();
    let reactor = Reactor::new().unwrap();
    let rec = dg_record();
    let tx = reactor
        .listen_unix_datagram(dir.path().join("tx.sock"), DgRecorder::new(&rec))
        .unwrap();
    tx.connect(&unix(&a_path)).unwrap();
    let total = capacity + 3; // the last three wait in the transport's queue
    for i in 0..total {
        tx.write(&numbered(i)).unwrap();
    }
    tx.connect(&unix(&b_path)).unwrap();
    tx.write(b"for b").unwrap();
    let reader = Peer::spawn(move || {
        a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 2 * SIZE];
        let mut seqs = Vec::new();
        while seqs.len() < total {
            match a.recv(&mut buf) {
                Ok(_) => seqs.push(u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize),
                Err(_) => break,
            }
        }
        seqs
    });
    let done = reader.done_flag();
    run_until(&reactor, "the old peer to read", move || {
        done.load(Ordering::Acquire)
    });
    let seqs = reader.join();
    assert_eq!(
        seqs,
        (0..total).collect::<Vec<_>>(),
        "all reached the old peer"
    );
    run_for(&reactor, Duration::from_millis(50));
    b.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2 * SIZE];
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"for b",
        "the new peer gets what was written after connect"
    );
    assert!(b.recv(&mut buf).is_err(), "and nothing else");
    tx.stop_listening();
    run_for(&reactor, Duration::from_millis(10));
}

/// Writes `hello` to its peer from `start_protocol`, noting the peer it saw there.
struct GreetOnStart(Rc<RefCell<Vec<String>>>);

impl DatagramProtocol for GreetOnStart {
    fn start_protocol(&mut self, t: &mut dyn DatagramTransport) {
        let sent = t.write(b"hello");
        self.0.borrow_mut().push(format!(
            "start peer={:?} sent={sent:?}",
            t.peer_address().is_some()
        ));
    }
    fn datagram_received(&mut self, _: &mut dyn DatagramTransport, _: &[u8], _: &Address) {}
    fn stop_protocol(&mut self) {
        self.0.borrow_mut().push("stop".into());
    }
}

/// A connected Unix datagram client is connected before `start_protocol`: it can send its
/// first request from there (it got `NotConnected`). A connect that fails runs no callback
/// and leaves no socket file.
#[test]
fn a_connected_unix_datagram_client_may_write_from_start_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let (server_path, client_path) = (dir.path().join("s.sock"), dir.path().join("c.sock"));
    let server = UnixDatagram::bind(&server_path).unwrap();
    server.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let reactor = Reactor::new().unwrap();
    let events = Rc::new(RefCell::new(Vec::new()));
    let _client = reactor
        .connect_unix_datagram(&client_path, &server_path, GreetOnStart(events.clone()))
        .unwrap();
    assert_eq!(*events.borrow(), ["start peer=true sent=Ok(())"]);
    run_for(&reactor, Duration::from_millis(50));
    let mut buf = [0u8; 16];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.as_pathname(), Some(client_path.as_path()));

    let events = Rc::new(RefCell::new(Vec::new()));
    let lonely = dir.path().join("lonely.sock");
    let err = reactor
        .connect_unix_datagram(
            &lonely,
            dir.path().join("nobody.sock"),
            GreetOnStart(events.clone()),
        )
        .unwrap_err();
    assert!(err.to_string().contains("nobody.sock"), "{err}");
    run_for(&reactor, Duration::from_millis(20));
    assert!(events.borrow().is_empty(), "{:?}", events.borrow());
    assert!(!lonely.exists(), "the socket file was left behind");
}
