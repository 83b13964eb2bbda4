//! UDP sockets on loopback: echo round trips over IPv4 and IPv6, connected mode and refusals,
//! oversized datagrams, a burst that must not starve a TCP connection, and multicast.

// Skips and measurements are printed (shown with `--nocapture`).
#![allow(clippy::print_stdout)]

mod util;

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use torsion_reactor::prelude::*;
use torsion_reactor::{DatagramError, MulticastInterface, DEFAULT_MAX_DATAGRAM_SIZE};
use torsion_transports::{DatagramOptions, ReactorExt};

use util::{pattern, run_for, run_until, serial, std_connect, try_run_until, Peer};

/// What a [`DgRecorder`] saw, shared with the test.
#[derive(Default)]
struct DgRecord {
    /// `start_protocol` ran.
    started: bool,
    /// Every datagram, whole, with its sender.
    got: Vec<(Vec<u8>, Address)>,
    /// How many times `connection_refused` ran.
    refused: usize,
    /// How many times `stop_protocol` ran (must end at exactly 1).
    stopped: usize,
    /// Errors returned by the echo replies.
    echo_errors: Vec<String>,
}

type DgShared = Rc<RefCell<DgRecord>>;

fn dg_record() -> DgShared {
    Rc::new(RefCell::new(DgRecord::default()))
}

/// A datagram protocol that records everything; optionally echoes each datagram to its sender.
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
        self.rec.borrow_mut().started = true;
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

fn inet(addr: SocketAddr) -> Address {
    Address::Inet(addr)
}

/// Stops a port and checks that `stop_protocol` runs exactly once.
fn stop_and_check(reactor: &Reactor, port: &torsion_transports::DatagramPort, rec: &DgShared) {
    port.stop_listening();
    port.stop_listening(); // idempotent
    let r = rec.clone();
    run_until(reactor, "stop_protocol", move || r.borrow().stopped > 0);
    run_for(reactor, Duration::from_millis(20));
    assert_eq!(
        rec.borrow().stopped,
        1,
        "stop_protocol must run exactly once"
    );
    assert!(matches!(
        port.write_to(b"late", &port.local_address()),
        Err(DatagramError::Closed)
    ));
}

/// Echo round trips between two torsion sockets bound to `ip`, datagrams of several sizes.
fn echo_round_trip(ip: IpAddr) {
    let reactor = Reactor::new().unwrap();
    let server_rec = dg_record();
    let server = reactor
        .listen_udp((ip, 0), DgRecorder::echo(&server_rec))
        .unwrap();
    let client_rec = dg_record();
    let client = reactor
        .listen_udp((ip, 0), DgRecorder::new(&client_rec))
        .unwrap();
    assert!(server_rec.borrow().started && client_rec.borrow().started);

    let server_addr = server.local_address();
    let client_addr = client.local_address();
    let s = server_addr.socket_addr().expect("an IP address");
    assert_eq!(s.ip(), ip);
    assert_ne!(s.port(), 0, "the real port is reported");
    assert_ne!(server_addr, client_addr);
    assert_eq!(client.max_datagram_size(), DEFAULT_MAX_DATAGRAM_SIZE);
    assert_eq!(client.peer_address(), None);

    let sizes = [
        0,
        1,
        64,
        1_200,
        1_500,
        8_192,
        40_000,
        DEFAULT_MAX_DATAGRAM_SIZE,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let mut data = pattern(size);
        if let Some(first) = data.first_mut() {
            *first = i as u8; // tell datagrams apart even if the pattern starts alike
        }
        client.write_to(&data, &server_addr).unwrap();
        let c = client_rec.clone();
        run_until(&reactor, &format!("the echo of {size} bytes"), move || {
            received(&c) > i
        });
        let server_seen = server_rec.borrow();
        assert_eq!(server_seen.got.len(), i + 1);
        assert!(
            server_seen.got[i].0 == data,
            "server got {size} bytes whole"
        );
        assert_eq!(
            server_seen.got[i].1, client_addr,
            "server sees the client's address"
        );
        drop(server_seen);
        let client_seen = client_rec.borrow();
        assert_eq!(client_seen.got.len(), i + 1, "one echo per datagram");
        let (back, from) = &client_seen.got[i];
        assert_eq!(back.len(), size, "the echo of {size} bytes came back whole");
        assert!(*back == data, "the echo of {size} bytes is intact");
        assert_eq!(*from, server_addr, "the echo comes from the server");
    }

    // A vectored write is one datagram.
    let parts: [&[u8]; 3] = [b"one ", b"datagram ", b"from three buffers"];
    let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    client.write_vectored_to(&slices, &server_addr).unwrap();
    let n = sizes.len();
    let c = client_rec.clone();
    run_until(&reactor, "the vectored echo", move || received(&c) > n);
    assert_eq!(
        client_rec.borrow().got[n].0,
        b"one datagram from three buffers"
    );

    // Nothing extra, nothing dropped.
    run_for(&reactor, Duration::from_millis(20));
    assert_eq!(received(&client_rec), n + 1);
    assert!(server_rec.borrow().echo_errors.is_empty());
    assert_eq!(client.dropped() + server.dropped(), 0);

    stop_and_check(&reactor, &client, &client_rec);
    stop_and_check(&reactor, &server, &server_rec);
}

#[test]
fn echo_round_trip_ipv4() {
    echo_round_trip(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn echo_round_trip_ipv6() {
    if let Err(e) = UdpSocket::bind("[::1]:0") {
        println!("SKIPPED echo_round_trip_ipv6: cannot bind UDP on [::1] here ({e})");
        return;
    }
    echo_round_trip("::1".parse().unwrap());
}

/// A std socket talks to a torsion echo socket (so torsion interoperates with plain sockets,
/// not just with itself).
#[test]
fn std_peer_gets_the_echo() {
    let reactor = Reactor::new().unwrap();
    let rec = dg_record();
    let server = reactor
        .listen_udp("127.0.0.1:0", DgRecorder::echo(&rec))
        .unwrap();
    let to = server.local_address().socket_addr().unwrap();
    let peer = Peer::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
        let mut out = Vec::new();
        for msg in [&b"first"[..], b"second", b""] {
            s.send_to(msg, to).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = s.recv_from(&mut buf).expect("the echo");
            assert_eq!(from, to);
            out.push(buf[..n].to_vec());
        }
        out
    });
    let done = peer.done_flag();
    run_until(&reactor, "the std peer's echoes", move || {
        done.load(Ordering::Acquire)
    });
    assert_eq!(
        peer.join(),
        vec![b"first".to_vec(), b"second".to_vec(), Vec::new()]
    );
}

/// A UDP port nothing listens on (bound, then closed).
fn free_udp_port() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

#[test]
fn connected_mode_reports_refusal() {
    let reactor = Reactor::new().unwrap();
    let rec = dg_record();
    let client = reactor
        .listen_udp("127.0.0.1:0", DgRecorder::new(&rec))
        .unwrap();

    // Not connected yet: `write` has nowhere to go.
    match client.write(b"nowhere") {
        Err(DatagramError::NotConnected) => {}
        other => panic!("write on an unconnected transport: expected NotConnected, got {other:?}"),
    }
    assert_eq!(client.peer_address(), None);

    let dead = free_udp_port();
    client.connect(&inet(dead)).unwrap();
    assert_eq!(client.peer_address(), Some(inet(dead)));
    client.write(b"anyone there?").unwrap();
    let r = rec.clone();
    run_until(&reactor, "connection_refused", move || {
        r.borrow().refused > 0
    });
    assert_eq!(rec.borrow().refused, 1, "one datagram, one refusal");
    assert_eq!(received(&rec), 0, "a refusal is not a datagram");

    // The transport survives the refusal: send again, refused again.
    client.write(b"still there?").unwrap();
    let r = rec.clone();
    run_until(&reactor, "the second refusal", move || {
        r.borrow().refused > 1
    });
    assert_eq!(rec.borrow().refused, 2);
    stop_and_check(&reactor, &client, &rec);
}

/// Two writes in a row to a refusing peer: the kernel hands the refusal of the first to
/// whichever call comes next, here the second send rather than a receive. Either way it must
/// reach `connection_refused` (as in Twisted, where a refused write calls
/// `connectionRefused`), not only come back as an I/O error from `write`.
#[test]
fn refusal_met_by_a_write_still_reaches_the_protocol() {
    let reactor = Reactor::new().unwrap();
    let rec = dg_record();
    let client = reactor
        .listen_udp("127.0.0.1:0", DgRecorder::new(&rec))
        .unwrap();
    client.connect(&inet(free_udp_port())).unwrap();
    let results: Vec<String> = (0..2)
        .map(|i| format!("{:?}", client.write(format!("try {i}").as_bytes())))
        .collect();
    let r = rec.clone();
    let reported = try_run_until(&reactor, Duration::from_secs(1), move || {
        r.borrow().refused > 0
    });
    assert!(
        reported,
        "two writes to a refusing peer returned {results:?} but connection_refused never ran"
    );
}

#[test]
fn connected_mode_delivers_only_the_peers_datagrams() {
    let reactor = Reactor::new().unwrap();
    let rec = dg_record();
    let client = reactor
        .listen_udp("127.0.0.1:0", DgRecorder::new(&rec))
        .unwrap();
    let me = client.local_address().socket_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();

    client.connect(&inet(peer_addr)).unwrap();
    client.write(b"to the peer").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).expect("the peer receives");
    assert_eq!((&buf[..n], from), (&b"to the peer"[..], me));

    stranger.send_to(b"from a stranger", me).unwrap();
    peer.send_to(b"from the peer", me).unwrap();
    let r = rec.clone();
    run_until(&reactor, "the peer's datagram", move || received(&r) > 0);
    run_for(&reactor, Duration::from_millis(30));
    let seen = rec.borrow();
    assert_eq!(
        seen.got.len(),
        1,
        "only the connected peer's datagrams are delivered"
    );
    assert_eq!(seen.got[0], (b"from the peer".to_vec(), inet(peer_addr)));
}

#[test]
fn oversized_datagrams_are_refused_before_sending() {
    let reactor = Reactor::new().unwrap();
    let rec = dg_record();
    let receiver = reactor
        .listen_udp("127.0.0.1:0", DgRecorder::new(&rec))
        .unwrap();
    let to = receiver.local_address();
    let sender = reactor
        .listen_udp("127.0.0.1:0", DgRecorder::new(&dg_record()))
        .unwrap();

    assert_eq!(sender.max_datagram_size(), 65_507);
    let big = pattern(65_508);
    match sender.write_to(&big, &to) {
        Err(e @ DatagramError::TooLarge { .. }) => {
            let DatagramError::TooLarge { size, limit } = e else {
                unreachable!()
            };
            assert_eq!((size, limit), (65_508, 65_507));
            let msg = e.to_string();
            assert!(
                msg.contains("65508") && msg.contains("65507"),
                "the message names the size and the limit: {msg}"
            );
        }
        other => panic!("65,508 bytes: expected TooLarge, got {other:?}"),
    }
    // Vectored and connected writes obey the same limit.
    let half = IoSlice::new(&big[..32_754]);
    let rest = IoSlice::new(&big[32_754..]);
    assert!(matches!(
        sender.write_vectored_to(&[half, rest], &to),
        Err(DatagramError::TooLarge {
            size: 65_508,
            limit: 65_507
        })
    ));
    sender.connect(&to).unwrap();
    assert!(matches!(
        sender.write(&big),
        Err(DatagramError::TooLarge {
            size: 65_508,
            limit: 65_507
        })
    ));

    // A lower limit.
    sender.set_max_datagram_size(100);
    assert_eq!(sender.max_datagram_size(), 100);
    assert!(matches!(
        sender.write_to(&[7; 101], &to),
        Err(DatagramError::TooLarge {
            size: 101,
            limit: 100
        })
    ));
    assert!(matches!(
        sender.write(&[7; 101]),
        Err(DatagramError::TooLarge {
            size: 101,
            limit: 100
        })
    ));

    // Nothing refused was sent (not even truncated), and refusals are not drops.
    run_for(&reactor, Duration::from_millis(50));
    assert_eq!(
        received(&rec),
        0,
        "a refused datagram must not be sent at all"
    );
    assert_eq!(
        sender.dropped(),
        0,
        "a refused datagram is not counted as dropped"
    );

    // At the limit is fine, and the transport still works after the refusals.
    sender.write_to(&[7; 100], &to).unwrap();
    let r = rec.clone();
    run_until(&reactor, "the 100-byte datagram", move || received(&r) > 0);
    assert_eq!(rec.borrow().got[0].0, vec![7; 100]);
    assert_eq!(rec.borrow().got[0].1, sender.local_address());
    run_for(&reactor, Duration::from_millis(20));
    assert_eq!(received(&rec), 1);
}

#[test]
fn wrong_address_family_is_an_error() {
    let reactor = Reactor::new().unwrap();
    let sender = reactor
        .listen_udp("127.0.0.1:0", DgRecorder::new(&dg_record()))
        .unwrap();
    let v6 = inet("[::1]:9".parse().unwrap());
    assert!(matches!(sender.write_to(b"x", &v6), Err(DatagramError::WrongAddress(a)) if a == v6));
    let path = Address::Unix(torsion_reactor::UnixAddress::Path("/tmp/x".into()));
    assert!(matches!(
        sender.write_to(b"x", &path),
        Err(DatagramError::WrongAddress(_))
    ));
    assert!(sender.connect(&path).is_err());
}

/// Counts the burst's datagrams, doing a little work for each.
struct Sink {
    count: Rc<Cell<usize>>,
}

impl DatagramProtocol for Sink {
    fn datagram_received(&mut self, _: &mut dyn DatagramTransport, data: &[u8], _: &Address) {
        if data.len() == BURST_SIZE {
            self.count.set(self.count.get() + 1);
        }
        // A little work per datagram, so the burst outpaces the sink and the socket stays
        // readable for a while: a reader that drained it without a budget would starve TCP.
        let t = Instant::now();
        while t.elapsed() < SINK_WORK {
            std::hint::spin_loop();
        }
    }
}

/// TCP echo that notes how far the UDP sink had got each time it is served.
struct WatchingEcho {
    sink: Rc<Cell<usize>>,
    seen: Rc<RefCell<Vec<usize>>>,
}

impl Protocol for WatchingEcho {
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.seen.borrow_mut().push(self.sink.get());
        transport.write(data);
    }
}

const BURST: usize = 10_000;
const BURST_SIZE: usize = 64;
const SINK_WORK: Duration = Duration::from_micros(5);

#[test]
fn udp_burst_does_not_starve_tcp() {
    let _serial = serial();
    let reactor = Reactor::new().unwrap();
    let count = Rc::new(Cell::new(0usize));
    let sink = reactor
        .listen_udp_with(
            "127.0.0.1:0",
            Sink {
                count: count.clone(),
            },
            DatagramOptions {
                recv_buffer_size: Some(4 << 20),
                ..DatagramOptions::default()
            },
        )
        .unwrap();
    let sink_addr = sink.local_address().socket_addr().unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (c, s) = (count.clone(), seen.clone());
    let tcp = reactor
        .listen_tcp("127.0.0.1:0", move |_: &Address| WatchingEcho {
            sink: c.clone(),
            seen: s.clone(),
        })
        .unwrap();
    let tcp_addr = tcp.local_address().socket_addr().unwrap();

    // TCP ping-pong: one byte at a time, timing each round trip, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let (stop2, rounds2) = (stop.clone(), rounds.clone());
    let pinger = Peer::spawn(move || {
        let mut s = std_connect(tcp_addr);
        s.set_nodelay(true).unwrap();
        let started = Instant::now();
        let mut times = Vec::new();
        let mut byte = [0u8; 1];
        while !stop2.load(Ordering::Acquire) && started.elapsed() < util::DEADLINE {
            let t = Instant::now();
            s.write_all(b"p").unwrap();
            s.read_exact(&mut byte).expect("the TCP echo");
            times.push((t, t.elapsed()));
            rounds2.fetch_add(1, Ordering::Release);
        }
        times
    });

    // The burst starts once the ping-pong runs, as fast as the thread can send; the large
    // receive buffer holds the backlog, so the sink's socket stays readable throughout.
    let rounds3 = rounds.clone();
    let blaster = Peer::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let wait = Instant::now();
        while rounds3.load(Ordering::Acquire) < 20 && wait.elapsed() < util::IO_TIMEOUT {
            std::thread::sleep(Duration::from_millis(1));
        }
        let data = [0x5a; BURST_SIZE];
        let start = Instant::now();
        let mut sent = 0;
        for _ in 0..BURST {
            match s.send_to(&data, sink_addr) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("send_to: {e}"),
            }
        }
        (start, Instant::now(), sent)
    });
    let blaster_done = blaster.done_flag();

    // Run until the burst is over and the sink has read everything that arrived (it stops
    // growing).
    let last = Rc::new(Cell::new((0usize, Instant::now())));
    let (c, l) = (count.clone(), last.clone());
    let finished = try_run_until(&reactor, Duration::from_secs(8), move || {
        let n = c.get();
        if n != l.get().0 {
            l.set((n, Instant::now()));
        }
        blaster_done.load(Ordering::Acquire)
            && (n == BURST || l.get().1.elapsed() > Duration::from_millis(300))
    });
    assert!(finished, "the burst was not processed in time");
    let processed_at = Instant::now();
    stop.store(true, Ordering::Release);
    let done = pinger.done_flag();
    run_until(&reactor, "the pinger to stop", move || {
        done.load(Ordering::Acquire)
    });
    let (burst_start, burst_end, sent) = blaster.join();
    let times = pinger.join();

    let processed = count.get();
    let during: Vec<Duration> = times
        .iter()
        .filter(|(t, _)| *t >= burst_start && *t <= processed_at)
        .map(|(_, d)| *d)
        .collect();
    let worst = times.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let interleaved = seen
        .borrow()
        .iter()
        .filter(|&&n| n > 0 && n < processed)
        .count();
    println!(
        "burst: {sent} sent in {:?}, {processed} processed; TCP: {} round trips in all, {} \
         during the burst, {interleaved} served mid-burst, worst round trip {worst:?}",
        burst_end - burst_start,
        times.len(),
        during.len(),
    );
    assert_eq!(sent, BURST);
    assert!(
        processed >= BURST * 9 / 10,
        "the sink processed only {processed} of {BURST} datagrams"
    );
    // With a budget of 64 reads per turn the TCP connection gets a turn about every 64
    // datagrams (some 150 times over the burst); a reader that drained the socket until
    // EAGAIN would serve it only a handful of times, with round trips near 100 ms.
    assert!(
        interleaved >= 20,
        "the TCP connection was served only {interleaved} times while the UDP burst was \
         being processed (starved)"
    );
    assert!(
        worst < Duration::from_millis(200),
        "a TCP round trip took {worst:?} during the UDP burst"
    );
}

/// Answers every datagram with two: the datagram itself, then its length as text. On `stop`
/// it answers `bye` and closes the socket in the same callback.
struct TwoReplies;

impl DatagramProtocol for TwoReplies {
    fn datagram_received(
        &mut self,
        transport: &mut dyn DatagramTransport,
        data: &[u8],
        from: &Address,
    ) {
        if data == b"stop" {
            transport.write_to(b"bye", from).unwrap();
            transport.stop_listening();
            return;
        }
        transport.write_to(data, from).unwrap();
        transport
            .write_to(data.len().to_string().as_bytes(), from)
            .unwrap();
    }
}

/// Replies written while a burst of datagrams is being read are sent together (`sendmmsg`):
/// they must still arrive whole, in the order written, also when one burst yields more
/// replies than one batch holds; and a reply written just before `stop_listening` still
/// goes out.
#[test]
fn replies_written_during_a_burst_arrive_whole_and_in_order() {
    const WINDOW: usize = 48;
    const ROUNDS: usize = 10;
    let reactor = Reactor::new().unwrap();
    let server = reactor.listen_udp("127.0.0.1:0", TwoReplies).unwrap();
    let to = server.local_address().socket_addr().unwrap();
    let peer = Peer::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
        let mut buf = vec![0u8; 2048];
        let mut replies = 0;
        for round in 0..ROUNDS {
            // A window of datagrams sent back to back, so the server reads them in bursts.
            let sent: Vec<Vec<u8>> = (0..WINDOW)
                .map(|i| pattern((round * WINDOW + i) * 37 % 600))
                .collect();
            for d in &sent {
                s.send_to(d, to).unwrap();
            }
            for d in &sent {
                let (n, from) = s.recv_from(&mut buf).expect("the echoed datagram");
                assert_eq!(from, to);
                assert_eq!(&buf[..n], &d[..], "round {round}: echo out of order or cut");
                let (n, _) = s.recv_from(&mut buf).expect("the length reply");
                assert_eq!(&buf[..n], d.len().to_string().as_bytes(), "round {round}");
                replies += 2;
            }
        }
        s.send_to(b"stop", to).unwrap();
        let (n, _) = s
            .recv_from(&mut buf)
            .expect("the reply written before stopping");
        (replies, buf[..n].to_vec())
    });
    let done = peer.done_flag();
    run_until(&reactor, "the peer's replies", move || {
        done.load(Ordering::Acquire)
    });
    assert_eq!(peer.join(), (2 * WINDOW * ROUNDS, b"bye".to_vec()));
}

/// A multicast group unlikely to be used by another test run at the same time.
fn test_group() -> Ipv4Addr {
    Ipv4Addr::new(239, 255, 0, 1 + (std::process::id() % 250) as u8)
}

const LO: MulticastInterface = MulticastInterface::V4(Ipv4Addr::LOCALHOST);

#[test]
fn multicast_join_receive_leave_on_loopback() {
    let group = test_group();
    let reactor = Reactor::new().unwrap();
    let rec_a = dg_record();
    let a = reactor
        .listen_multiple((group, 0), DgRecorder::new(&rec_a))
        .unwrap();
    let port = a.local_address().socket_addr().unwrap().port();
    let rec_b = dg_record();
    let b = reactor
        .listen_multiple((group, port), DgRecorder::new(&rec_b))
        .expect("listen_multiple shares the port");
    let to = inet(SocketAddr::new(IpAddr::V4(group), port));

    if let Err(e) = a.join_group(IpAddr::V4(group), LO) {
        println!("SKIPPED multicast test: joining {group} on the loopback interface failed ({e})");
        return;
    }
    b.join_group(IpAddr::V4(group), LO)
        .expect("the second join on the same interface");

    let sender = reactor
        .listen_udp("127.0.0.1:0", DgRecorder::new(&dg_record()))
        .unwrap();
    sender.set_multicast_interface(LO).unwrap();
    sender.set_multicast_loopback(true).unwrap();
    sender.set_multicast_ttl(1).unwrap();
    a.set_multicast_loopback(true).unwrap();
    b.set_multicast_loopback(true).unwrap();
    match sender.write_to(b"hello group", &to) {
        Ok(()) => {}
        Err(DatagramError::Io(e)) => {
            println!("SKIPPED multicast test: sending to {group} over loopback failed ({e})");
            return;
        }
        Err(e) => panic!("send to the group: {e:?}"),
    }
    let from = sender.local_address();
    let (ra, rb) = (rec_a.clone(), rec_b.clone());
    run_until(&reactor, "both members to receive", move || {
        received(&ra) > 0 && received(&rb) > 0
    });
    for rec in [&rec_a, &rec_b] {
        assert_eq!(
            rec.borrow().got,
            vec![(b"hello group".to_vec(), from.clone())]
        );
    }

    // Once both have left, the group's datagrams no longer arrive.
    a.leave_group(IpAddr::V4(group), LO).unwrap();
    b.leave_group(IpAddr::V4(group), LO).unwrap();
    assert!(
        a.leave_group(IpAddr::V4(group), LO).is_err(),
        "leaving a group twice is an error"
    );
    sender.write_to(b"anyone?", &to).unwrap();
    run_for(&reactor, Duration::from_millis(150));
    assert_eq!(received(&rec_a), 1, "a left the group but still receives");
    assert_eq!(received(&rec_b), 1, "b left the group but still receives");

    // Joining again (b only) restores delivery to b: the silence above was the leave.
    b.join_group(IpAddr::V4(group), LO).unwrap();
    sender.write_to(b"welcome back", &to).unwrap();
    let rb = rec_b.clone();
    run_until(&reactor, "b to receive after re-joining", move || {
        received(&rb) > 1
    });
    assert_eq!(rec_b.borrow().got[1].0, b"welcome back");
    assert_eq!(rec_b.borrow().got.len(), 2);
}

#[test]
fn socket_options_are_accepted() {
    let reactor = Reactor::new().unwrap();
    let port = reactor
        .listen_udp_with(
            "127.0.0.1:0",
            DgRecorder::new(&dg_record()),
            DatagramOptions {
                broadcast: true,
                recv_buffer_size: Some(256 * 1024),
                send_buffer_size: Some(256 * 1024),
                ..DatagramOptions::default()
            },
        )
        .unwrap();
    port.set_broadcast(false).unwrap();
    port.set_broadcast(true).unwrap();
    port.set_recv_buffer_size(128 * 1024).unwrap();
    port.set_send_buffer_size(128 * 1024).unwrap();
    port.set_multicast_ttl(4).unwrap();

    // A second socket on the same port needs listen_multiple on both.
    let addr = port.local_address().socket_addr().unwrap();
    assert!(reactor
        .listen_udp(addr, DgRecorder::new(&dg_record()))
        .is_err());
    let m1 = reactor
        .listen_multiple("127.0.0.1:0", DgRecorder::new(&dg_record()))
        .unwrap();
    let shared = m1.local_address().socket_addr().unwrap();
    reactor
        .listen_multiple(shared, DgRecorder::new(&dg_record()))
        .expect("listen_multiple shares a port");
}

/// Writes to `to` from `datagram_received` and records the result.
struct WriteFromCallback {
    to: Address,
    results: Rc<RefCell<Vec<String>>>,
}

impl DatagramProtocol for WriteFromCallback {
    fn datagram_received(&mut self, t: &mut dyn DatagramTransport, _: &[u8], _: &Address) {
        let r = t.write_to(b"reply", &self.to);
        self.results.borrow_mut().push(format!("{r:?}"));
    }
}

/// The result of writing to `to` from a socket bound to `bind` (port 0) with `ipv6_only`:
/// first directly, then batched from `datagram_received`. (Linux makes a socket bound to a
/// specific IPv6 address, such as `::1`, IPv6-only whatever `ipv6_only` says.)
fn write_from_v6(bind: &str, ipv6_only: bool, to: &str) -> (String, String) {
    let reactor = Reactor::new().unwrap();
    let results = Rc::new(RefCell::new(Vec::new()));
    let to = inet(to.parse().unwrap());
    let port = reactor
        .listen_udp_with(
            (bind, 0),
            WriteFromCallback {
                to: to.clone(),
                results: results.clone(),
            },
            DatagramOptions {
                ipv6_only,
                ..DatagramOptions::default()
            },
        )
        .unwrap();
    let direct = format!("{:?}", port.write_to(b"x", &to));
    let peer = UdpSocket::bind("[::1]:0").unwrap();
    let port_number = port.local_address().socket_addr().unwrap().port();
    peer.send_to(b"hi", ("::1", port_number)).unwrap();
    let r = results.clone();
    run_until(&reactor, "the datagram", move || !r.borrow().is_empty());
    port.stop_listening();
    let batched = results.borrow()[0].clone();
    (direct, batched)
}

#[test]
fn an_ipv4_destination_on_an_ipv6_only_socket_is_a_wrong_address() {
    for (bind, ipv6_only, to) in [
        ("::1", true, "127.0.0.1:9"),
        ("::1", true, "[::ffff:127.0.0.1]:9"),
        ("::", true, "127.0.0.1:9"),
        ("::1", false, "127.0.0.1:9"), // IPv6-only all the same, being bound to ::1
    ] {
        let (direct, batched) = write_from_v6(bind, ipv6_only, to);
        assert!(direct.contains("WrongAddress"), "{to} direct: {direct}");
        assert!(batched.contains("WrongAddress"), "{to} batched: {batched}");
    }
}

#[test]
fn an_ipv4_destination_on_a_dual_stack_socket_is_sent() {
    let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
    v4.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let to = v4.local_addr().unwrap().to_string();
    let (direct, batched) = write_from_v6("::", false, &to);
    assert_eq!((direct.as_str(), batched.as_str()), ("Ok(())", "Ok(())"));
    let mut buf = [0u8; 16];
    assert_eq!(v4.recv_from(&mut buf).unwrap().0, 1); // "x"
    assert_eq!(v4.recv_from(&mut buf).unwrap().0, 5); // "reply"
}

/// Our own socket bound to `addr`, among the process's descriptors.
fn own_socket(addr: SocketAddr) -> socket2::Socket {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_str().unwrap().parse::<i32>() else {
            continue;
        };
        // SAFETY: only inspected (and duplicated) while the test owns the descriptor.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if socket2::SockRef::from(&b)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            == Some(addr)
        {
            return socket2::Socket::from(b.try_clone_to_owned().unwrap());
        }
    }
    panic!("no socket bound to {addr}");
}

#[test]
fn multicast_interface_any_resets_the_ipv6_interface() {
    let reactor = Reactor::new().unwrap();
    let port = reactor
        .listen_udp("[::1]:0", DgRecorder::new(&dg_record()))
        .unwrap();
    let socket = own_socket(port.local_address().socket_addr().unwrap());
    port.set_multicast_interface(MulticastInterface::Index(1))
        .unwrap();
    assert_eq!(socket.multicast_if_v6().unwrap(), 1);
    port.set_multicast_interface(MulticastInterface::Any)
        .unwrap();
    assert_eq!(socket.multicast_if_v6().unwrap(), 0);
    // An IPv4 interface on an IPv6 socket, and the other way round, are refused.
    let e = port
        .set_multicast_interface(MulticastInterface::V4(Ipv4Addr::LOCALHOST))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let v4 = reactor
        .listen_udp("127.0.0.1:0", DgRecorder::new(&dg_record()))
        .unwrap();
    v4.set_multicast_interface(MulticastInterface::Any).unwrap();
    let e = v4
        .set_multicast_interface(MulticastInterface::Index(1))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn multicast_group_and_interface_of_different_families_are_refused() {
    let reactor = Reactor::new().unwrap();
    let port = reactor
        .listen_udp("0.0.0.0:0", DgRecorder::new(&dg_record()))
        .unwrap();
    let v4_group: IpAddr = test_group().into();
    let v6_group: IpAddr = "ff12::1234".parse().unwrap();
    for (group, interface) in [
        (v4_group, MulticastInterface::Index(1)),
        (v6_group, MulticastInterface::V4(Ipv4Addr::LOCALHOST)),
    ] {
        let e = port.join_group(group, interface).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidInput,
            "join {group} {interface:?}"
        );
        let e = port.leave_group(group, interface).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidInput,
            "leave {group} {interface:?}"
        );
    }
}

/// Replies to the connected peer, then connects to another.
struct ReplyThenReconnect {
    next: SocketAddr,
    done: Rc<Cell<bool>>,
}

impl DatagramProtocol for ReplyThenReconnect {
    fn datagram_received(&mut self, t: &mut dyn DatagramTransport, _: &[u8], _: &Address) {
        t.write(b"for the old peer").unwrap();
        t.connect(&inet(self.next)).unwrap();
        t.write(b"for the new peer").unwrap();
        self.done.set(true);
    }
}

/// A reply written to the connected peer inside `datagram_received` goes to that peer even
/// when the protocol then connects elsewhere: it was batched until the callback returned and
/// then sent to whichever peer was connected by then.
#[test]
fn a_reply_written_before_connect_goes_to_the_old_peer() {
    let reactor = Reactor::new().unwrap();
    let old = UdpSocket::bind("127.0.0.1:0").unwrap();
    let new = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&old, &new] {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    let done = Rc::new(Cell::new(false));
    let port = reactor
        .listen_udp(
            "127.0.0.1:0",
            ReplyThenReconnect {
                next: new.local_addr().unwrap(),
                done: done.clone(),
            },
        )
        .unwrap();
    port.connect(&inet(old.local_addr().unwrap())).unwrap();
    old.send_to(b"hello", port.local_address().socket_addr().unwrap())
        .unwrap();
    let d = done.clone();
    run_until(&reactor, "the datagram", move || d.get());
    let mut buf = [0u8; 64];
    let at_old = old.recv(&mut buf).map(|n| buf[..n].to_vec());
    assert_eq!(at_old.ok().as_deref(), Some(&b"for the old peer"[..]));
    let at_new = new.recv(&mut buf).map(|n| buf[..n].to_vec());
    assert_eq!(at_new.ok().as_deref(), Some(&b"for the new peer"[..]));
    port.stop_listening();
    run_for(&reactor, Duration::from_millis(10));
}
