//! TCP connections end to end: chunking, half-close, resets, writes after close, connection
//! failures and IPv6. Peers are blocking `std` sockets on a helper thread, or torsion clients
//! on the same reactor.

mod util;

use std::cell::RefCell;
use std::io::{ErrorKind, IoSlice, Read};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};
use torsion_reactor::prelude::*;
use torsion_transports::{ConnectOptions, ReactorExt, Resolver};

use util::*;

fn listen(reactor: &Reactor, factory: impl Factory) -> SocketAddr {
    let port = reactor
        .listen_tcp("127.0.0.1:0", factory)
        .expect("listen on 127.0.0.1");
    port_addr(&port.local_address())
}

/// A server that records, and echoes.
fn echo_recorder(reactor: &Reactor) -> (SocketAddr, Shared) {
    let rec = record();
    let r = rec.clone();
    let addr = listen(reactor, move |_: &Address| Recorder::echo(&r));
    (addr, rec)
}

#[test]
fn one_byte_writes_are_echoed_in_full() {
    let reactor = Reactor::new().unwrap();
    let (addr, rec) = echo_recorder(&reactor);
    let msg = pattern(300);
    let sent = msg.clone();
    let peer = Peer::spawn(move || {
        let mut s = std_connect(addr);
        s.set_nodelay(true).unwrap();
        for (i, b) in sent.iter().enumerate() {
            write_all(&mut s, std::slice::from_ref(b));
            if i % 25 == 0 {
                thread::sleep(Duration::from_millis(2)); // let the server read mid-message
            }
        }
        read_exact_vec(&mut s, sent.len()).expect("read the echo")
    });
    let done = peer.done_flag();
    run_until(&reactor, "the client to read its echo", move || {
        done.load(Ordering::Acquire)
    });
    assert_eq!(peer.join(), msg, "the echo differs from what was sent");
    let rec = rec.borrow();
    assert_eq!(rec.data, msg, "the server saw different bytes");
    assert!(
        rec.chunks > 1,
        "the message was meant to arrive in several chunks"
    );
}

#[test]
fn data_arriving_with_fin_is_delivered_and_answered() {
    let reactor = Reactor::new().unwrap();
    let (addr, rec) = echo_recorder(&reactor);
    let peer = Peer::spawn(move || {
        let mut s = std_connect(addr);
        write_all(&mut s, b"hello");
        s.shutdown(Shutdown::Write).unwrap();
        read_to_eof(&mut s).expect("read the echo, then EOF")
    });
    let done = peer.done_flag();
    let r = rec.clone();
    run_until(&reactor, "the echo and a clean close", move || {
        done.load(Ordering::Acquire) && is_lost(&r)
    });
    assert_eq!(
        peer.join(),
        b"hello",
        "the echo must be flushed before our FIN"
    );
    assert_eq!(rec.borrow().data, b"hello");
    assert_lost_once(&rec, "server", |r| matches!(r, CloseReason::Done));
}

/// The same, with the bytes and the FIN both waiting in the socket before the reactor
/// accepts the connection: its first read finds the data and the end of stream together.
#[test]
fn data_and_fin_waiting_before_accept_are_delivered_and_answered() {
    let reactor = Reactor::new().unwrap();
    let (addr, rec) = echo_recorder(&reactor);
    // The kernel completes the handshake from the backlog, before the reactor runs.
    let mut client = std_connect(addr);
    write_all(&mut client, b"hello");
    client.shutdown(Shutdown::Write).unwrap();
    let r = rec.clone();
    run_until(&reactor, "the echo and a clean close", move || is_lost(&r));
    assert_eq!(rec.borrow().data, b"hello");
    assert_lost_once(&rec, "server", |r| matches!(r, CloseReason::Done));
    assert_eq!(
        read_to_eof(&mut client).expect("read the echo, then EOF"),
        b"hello",
        "the echo must be flushed before our FIN"
    );
}

/// Half-close: answers with `reply` after the peer's FIN, then closes.
struct ReplyAfterFin {
    inner: Recorder,
    reply: Vec<u8>,
}

impl Protocol for ReplyAfterFin {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        self.inner.connection_made(transport);
    }
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.inner.data_received(transport, data);
    }
    fn half_close(&self) -> bool {
        true
    }
    fn read_connection_lost(&mut self, transport: &mut dyn Transport) {
        self.inner.rec.borrow_mut().read_lost = true;
        assert!(
            !transport.is_closing(),
            "a half-closed transport is still open for writing"
        );
        transport.write(&self.reply);
        transport.lose_connection();
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.inner.connection_lost(reason);
    }
}

#[test]
fn half_close_server_writes_a_mebibyte_after_the_peers_fin() {
    const MIB: usize = 1 << 20;
    let reactor = Reactor::new().unwrap();
    let rec = record();
    let r = rec.clone();
    let addr = listen(&reactor, move |_: &Address| ReplyAfterFin {
        inner: Recorder::new(&r),
        reply: pattern(MIB),
    });
    let peer = Peer::spawn(move || {
        let mut s = std_connect(addr);
        write_all(&mut s, b"request");
        s.shutdown(Shutdown::Write).unwrap();
        read_to_eof(&mut s).expect("read the reply, then EOF")
    });
    let done = peer.done_flag();
    let r = rec.clone();
    run_until(&reactor, "the reply and a clean close", move || {
        done.load(Ordering::Acquire) && is_lost(&r)
    });
    let got = peer.join();
    assert_eq!(got.len(), MIB, "the peer must receive the whole reply");
    assert!(got == pattern(MIB), "the reply was corrupted");
    let r = rec.borrow();
    assert_eq!(r.data, b"request");
    assert!(
        r.read_lost,
        "read_connection_lost must run on the peer's FIN"
    );
    drop(r);
    assert_lost_once(&rec, "server", |r| matches!(r, CloseReason::Done));
}

/// Sends a goodbye, then half-closes its writing side at once.
struct HalfCloseWriter {
    inner: Recorder,
}

impl Protocol for HalfCloseWriter {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        self.inner.connection_made(transport);
        transport.write(b"bye");
        transport.lose_write_connection();
        assert!(
            transport.is_closing(),
            "no more writes after lose_write_connection"
        );
        transport.write(b" and more"); // ignored
    }
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.inner.data_received(transport, data);
    }
    fn write_connection_lost(&mut self, transport: &mut dyn Transport) {
        self.inner.write_connection_lost(transport);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.inner.connection_lost(reason);
    }
}

#[test]
fn lose_write_connection_sends_fin_and_keeps_reading() {
    let reactor = Reactor::new().unwrap();
    let rec = record();
    let r = rec.clone();
    let addr = listen(&reactor, move |_: &Address| HalfCloseWriter {
        inner: Recorder::new(&r),
    });
    let peer = Peer::spawn(move || {
        let mut s = std_connect(addr);
        let before = read_to_eof(&mut s).expect("read until the server's FIN");
        // The server only closed its writing side: it still reads.
        write_all(&mut s, b"still here");
        s.shutdown(Shutdown::Write).unwrap();
        let after = read_to_eof(&mut s).expect("EOF again");
        (before, after)
    });
    let done = peer.done_flag();
    let r = rec.clone();
    run_until(&reactor, "the peer's data and a clean close", move || {
        done.load(Ordering::Acquire) && is_lost(&r)
    });
    let (before, after) = peer.join();
    assert_eq!(before, b"bye", "the peer sees our data, then EOF");
    assert!(after.is_empty());
    let r = rec.borrow();
    assert!(
        r.write_lost,
        "write_connection_lost must run once FIN is sent"
    );
    assert_eq!(
        r.data, b"still here",
        "data sent after our FIN must be delivered"
    );
    drop(r);
    assert_lost_once(&rec, "server", |r| matches!(r, CloseReason::Done));
}

/// Streams a pattern for as long as the transport takes it (a push producer honouring flow
/// control), counting its `connection_lost` calls.
struct Streamer {
    inner: Recorder,
    paused: bool,
}

impl Streamer {
    /// Writes until the transport buffers a little (`pause_producing` only runs after this
    /// callback returns, so the loop must not wait for it).
    fn fill(&mut self, transport: &dyn Transport) {
        let chunk = pattern(64 * 1024);
        while !self.paused && !transport.is_closing() && transport.buffered() < 256 * 1024 {
            transport.write(&chunk);
        }
    }
}

impl Protocol for Streamer {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        self.inner.connection_made(transport);
        self.fill(transport);
    }
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.inner.data_received(transport, data);
    }
    fn pause_producing(&mut self, _transport: &mut dyn Transport) {
        self.paused = true;
    }
    fn resume_producing(&mut self, transport: &mut dyn Transport) {
        self.paused = false;
        self.fill(transport);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.inner.connection_lost(reason);
    }
}

#[test]
fn peer_reset_mid_transfer_is_reported_once_as_reset() {
    let reactor = Reactor::new().unwrap();
    let rec = record();
    let r = rec.clone();
    let addr = listen(&reactor, move |_: &Address| Streamer {
        inner: Recorder::new(&r),
        paused: false,
    });
    let peer = Peer::spawn(move || {
        let mut s = std_connect(addr);
        let got = read_exact_vec(&mut s, 256 * 1024).expect("read part of the stream");
        // Zero linger: closing sends RST (and the unread data makes sure of it too).
        SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
        got
    });
    let done = peer.done_flag();
    let r = rec.clone();
    run_until(&reactor, "the server to see the reset", move || {
        done.load(Ordering::Acquire) && is_lost(&r)
    });
    let got = peer.join();
    let expected = pattern(64 * 1024);
    assert!(
        got.chunks(expected.len()).all(|c| c == expected),
        "the stream was corrupted before the reset"
    );
    // Nothing more may arrive for this connection.
    run_for(&reactor, Duration::from_millis(200));
    assert_lost_once(&rec, "server", |r| matches!(r, CloseReason::Reset));
}

/// What to do in `connection_made` before checking that writes are ignored.
#[derive(Clone, Copy)]
enum CloseHow {
    Lose,
    Abort,
}

/// Writes, closes, then writes again (which must be ignored).
struct CloseThenWrite {
    inner: Recorder,
    how: CloseHow,
}

impl Protocol for CloseThenWrite {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        self.inner.connection_made(transport);
        transport.write(b"before");
        match self.how {
            CloseHow::Lose => transport.lose_connection(),
            CloseHow::Abort => transport.abort_connection(),
        }
        assert!(transport.is_closing());
        for _ in 0..100 {
            transport.write(b"after");
            transport.write_vectored(&[IoSlice::new(b"after"), IoSlice::new(b"vectored")]);
        }
        transport.lose_write_connection();
        transport.lose_connection();
        if matches!(self.how, CloseHow::Abort) {
            assert_eq!(transport.buffered(), 0, "an abort drops the write buffer");
        }
    }
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.inner.data_received(transport, data);
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.inner.connection_lost(reason);
    }
}

/// Reads what the peer sends until EOF or a reset, whichever comes first.
fn read_until_closed(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("reading from the server failed: {e}"),
        }
    }
}

fn run_close_then_write(how: CloseHow) -> (Vec<u8>, Shared, Reactor) {
    let reactor = Reactor::new().unwrap();
    let rec = record();
    let r = rec.clone();
    let addr = listen(&reactor, move |_: &Address| CloseThenWrite {
        inner: Recorder::new(&r),
        how,
    });
    let peer = Peer::spawn(move || {
        let mut s = match std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(s) => s,
            // An abort can reset the connection before `connect` has even returned.
            Err(e) if e.kind() == ErrorKind::ConnectionReset && matches!(how, CloseHow::Abort) => {
                return Vec::new()
            }
            Err(e) => panic!("connect to the server: {e}"),
        };
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        read_until_closed(&mut s)
    });
    let done = peer.done_flag();
    let r = rec.clone();
    run_until(&reactor, "the connection to close", move || {
        done.load(Ordering::Acquire) && is_lost(&r)
    });
    (peer.join(), rec, reactor)
}

/// After `connection_lost`, every transport method through a kept handle is a harmless no-op.
fn assert_handle_is_inert(reactor: &Reactor, rec: &Shared) {
    let handle = rec.borrow().handle.clone().expect("handle kept");
    let checked = Rc::new(RefCell::new(false));
    let c = checked.clone();
    reactor.call_soon(move |_| {
        for _ in 0..1000 {
            handle.write(b"late");
        }
        handle.write_vectored(&[IoSlice::new(b"late")]);
        handle.pause_reading();
        handle.resume_reading();
        handle.lose_write_connection();
        handle.lose_connection();
        handle.abort_connection();
        assert!(handle.is_closing());
        assert_eq!(handle.buffered(), 0);
        *c.borrow_mut() = true;
    });
    run_until(reactor, "the late calls", move || *checked.borrow());
    run_for(reactor, Duration::from_millis(50));
}

#[test]
fn writes_after_lose_connection_are_ignored() {
    let (got, rec, reactor) = run_close_then_write(CloseHow::Lose);
    assert_eq!(
        got, b"before",
        "only data written before lose_connection is sent"
    );
    assert_lost_once(&rec, "server", |r| matches!(r, CloseReason::Done));
    assert_handle_is_inert(&reactor, &rec);
    assert_lost_once(&rec, "server after late calls", |r| {
        matches!(r, CloseReason::Done)
    });
}

#[test]
fn writes_after_abort_are_ignored() {
    let (got, rec, reactor) = run_close_then_write(CloseHow::Abort);
    assert!(
        got.is_empty() || got == b"before",
        "nothing written after the abort may be sent, got {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_lost_once(&rec, "server", |r| matches!(r, CloseReason::Aborted));
    assert_handle_is_inert(&reactor, &rec);
    assert_lost_once(&rec, "server after late calls", |r| {
        matches!(r, CloseReason::Aborted)
    });
}

#[test]
fn writes_through_a_handle_after_a_peer_reset_are_ignored() {
    let reactor = Reactor::new().unwrap();
    let rec = record();
    let r = rec.clone();
    let addr = listen(&reactor, move |_: &Address| Recorder::new(&r));
    let peer = Peer::spawn(move || {
        let s = std_connect(addr);
        SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    });
    let done = peer.done_flag();
    let r = rec.clone();
    run_until(&reactor, "the reset", move || {
        done.load(Ordering::Acquire) && is_lost(&r)
    });
    peer.join();
    assert_lost_once(&rec, "server", |r| matches!(r, CloseReason::Reset));
    assert_handle_is_inert(&reactor, &rec);
    assert_lost_once(&rec, "server after late calls", |r| {
        matches!(r, CloseReason::Reset)
    });
}

/// What a client factory heard.
#[derive(Default)]
struct Outcome {
    started: usize,
    built: usize,
    failed: Vec<CloseReason>,
    lost: Vec<CloseReason>,
}

/// A client factory that records every event; its protocol records what it receives.
struct Watcher {
    outcome: Rc<RefCell<Outcome>>,
    rec: Shared,
}

impl Watcher {
    fn new() -> (Self, Rc<RefCell<Outcome>>, Shared) {
        let outcome = Rc::new(RefCell::new(Outcome::default()));
        let rec = record();
        (
            Watcher {
                outcome: outcome.clone(),
                rec: rec.clone(),
            },
            outcome,
            rec,
        )
    }
}

impl ClientFactory for Watcher {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        self.outcome.borrow_mut().built += 1;
        Some(Box::new(Recorder::new(&self.rec)))
    }
    fn started_connecting(&mut self, _connector: &Connector) {
        self.outcome.borrow_mut().started += 1;
    }
    fn client_connection_failed(&mut self, _connector: &Connector, reason: CloseReason) {
        self.outcome.borrow_mut().failed.push(reason);
    }
    fn client_connection_lost(&mut self, _connector: &Connector, reason: CloseReason) {
        self.outcome.borrow_mut().lost.push(reason);
    }
}

/// Runs until the attempt failed or connected.
fn run_attempt(reactor: &Reactor, outcome: &Rc<RefCell<Outcome>>, rec: &Shared) {
    let o = outcome.clone();
    let r = rec.clone();
    run_until(reactor, "the connection attempt to end", move || {
        !o.borrow().failed.is_empty() || r.borrow().made
    });
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed here: nothing listens there any more
    let reactor = Reactor::new().unwrap();
    let (factory, outcome, rec) = Watcher::new();
    let _connector = reactor.connect_tcp("127.0.0.1", port, factory);
    run_attempt(&reactor, &outcome, &rec);
    run_for(&reactor, Duration::from_millis(50)); // no second report
    let o = outcome.borrow();
    assert_eq!(o.started, 1);
    assert_eq!(o.built, 0, "no protocol for a refused connection");
    assert!(
        matches!(o.failed.as_slice(), [CloseReason::ConnectRefused]),
        "expected one ConnectRefused, got {:?}",
        o.failed
    );
}

/// Starts a non-blocking connect (a filler for a listen queue).
fn filler(addr: SocketAddr) -> Socket {
    let s = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None).unwrap();
    let _ = s.connect(&addr.into()); // EINPROGRESS
    s
}

#[test]
fn connecting_to_a_full_listen_queue_times_out() {
    // A listener with backlog 0 that never accepts: once its queue is full, the kernel drops
    // further SYNs and a connect can only time out.
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let reactor = Reactor::new().unwrap();
    let mut fillers = Vec::new();
    let mut outcomes = Vec::new();
    for want in [2, 4, 8, 16] {
        while fillers.len() < want {
            fillers.push(filler(addr));
        }
        thread::sleep(Duration::from_millis(50)); // let the fillers' handshakes complete
        let (factory, outcome, rec) = Watcher::new();
        let options = ConnectOptions {
            timeout: Duration::from_millis(300),
            ..ConnectOptions::default()
        };
        let start = Instant::now();
        let _connector = reactor.connect_tcp_with("127.0.0.1", addr.port(), factory, options);
        run_attempt(&reactor, &outcome, &rec);
        let elapsed = start.elapsed();
        let o = outcome.borrow();
        if o.built == 1 {
            // The kernel still had room: fill the queue more and retry.
            if let Some(h) = rec.borrow().handle.clone() {
                h.abort_connection();
            }
            outcomes.push(format!("connected with {want} fillers"));
            continue;
        }
        assert!(
            matches!(o.failed.as_slice(), [CloseReason::ConnectTimedOut]),
            "expected one ConnectTimedOut, got {:?}",
            o.failed
        );
        assert!(
            elapsed >= Duration::from_millis(250),
            "timed out too early: {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(3),
            "timed out too late: {elapsed:?}"
        );
        return;
    }
    panic!("no connection attempt timed out: {outcomes:?}");
}

/// Resolves nothing, as a name server answering "no such name" would, without the network.
fn no_such_host() -> ConnectOptions {
    ConnectOptions {
        resolver: Resolver::new(|host, _port| {
            Err(std::io::Error::new(
                ErrorKind::NotFound,
                format!("{host}: no such host (test resolver)"),
            ))
        }),
        ..ConnectOptions::default()
    }
}

#[test]
fn connecting_to_an_unresolvable_host_fails_resolution() {
    let reactor = Reactor::new().unwrap();
    let (factory, outcome, rec) = Watcher::new();
    let _connector = reactor.connect_tcp_with("db.example", 80, factory, no_such_host());
    run_attempt(&reactor, &outcome, &rec);
    let o = outcome.borrow();
    assert_eq!(o.started, 1);
    assert_eq!(o.built, 0);
    match o.failed.as_slice() {
        [CloseReason::ResolutionFailed(msg)] => {
            assert!(
                msg.contains("db.example: no such host"),
                "the resolver's message is kept: {msg}"
            )
        }
        other => panic!("expected one ResolutionFailed, got {other:?}"),
    }
}

/// The resolved addresses are tried in order until one connects: a refused one first, then
/// the listening one.
#[test]
fn each_resolved_address_is_tried_in_order() {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // closed here: nothing listens there any more
    let reactor = Reactor::new().unwrap();
    let (addr, _server) = echo_recorder(&reactor);
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let options = ConnectOptions {
        resolver: Resolver::new(move |host, port| {
            seen.lock().unwrap().push((host.to_owned(), port));
            Ok(vec![refused, addr])
        }),
        ..ConnectOptions::default()
    };
    let (factory, outcome, rec) = Watcher::new();
    let _connector = reactor.connect_tcp_with("echo.example", 7, factory, options);
    run_attempt(&reactor, &outcome, &rec);
    assert_eq!(*asked.lock().unwrap(), [("echo.example".to_owned(), 7)]);
    assert!(
        outcome.borrow().failed.is_empty(),
        "{:?}",
        outcome.borrow().failed
    );
    let handle = rec.borrow().handle.clone().expect("connected");
    assert_eq!(
        handle.peer_address(),
        Address::Inet(addr),
        "the second address"
    );
    handle.abort_connection();
}

// `connect_tcp` "returns at once; the outcome reaches the factory": the returned Connector
// is a handle, so dropping it must not lose the factory's events.

#[test]
fn dropped_connector_still_reports_a_failure() {
    let reactor = Reactor::new().unwrap();
    // Resolution happens on another thread, so the report comes after a wait.
    let (factory, outcome, rec) = Watcher::new();
    drop(reactor.connect_tcp_with("db.example", 80, factory, no_such_host()));
    let o = outcome.clone();
    try_run_until(&reactor, Duration::from_secs(3), move || {
        !o.borrow().failed.is_empty()
    });
    assert!(!rec.borrow().made);
    let o = outcome.borrow();
    assert!(
        matches!(o.failed.as_slice(), [CloseReason::ResolutionFailed(_)]),
        "client_connection_failed must reach the factory of a dropped connector, got {:?}",
        o.failed
    );
}

#[test]
fn dropped_connector_still_reports_the_connection_lost() {
    let reactor = Reactor::new().unwrap();
    let (addr, _server) = echo_recorder(&reactor);
    let (factory, outcome, rec) = Watcher::new();
    drop(reactor.connect_tcp("127.0.0.1", addr.port(), factory));
    let r = rec.clone();
    run_until(&reactor, "the client to connect", move || r.borrow().made);
    let handle = rec.borrow().handle.clone().expect("handle kept");
    handle.lose_connection();
    let r = rec.clone();
    run_until(&reactor, "the client to close", move || is_lost(&r));
    run_for(&reactor, Duration::from_millis(100));
    assert_lost_once(&rec, "client protocol", |r| matches!(r, CloseReason::Done));
    let o = outcome.borrow();
    assert!(
        matches!(o.lost.as_slice(), [CloseReason::Done]),
        "client_connection_lost must reach the factory of a dropped connector, got {:?}",
        o.lost
    );
}

#[test]
fn echo_over_ipv6_loopback() {
    let reactor = Reactor::new().unwrap();
    let rec = record();
    let r = rec.clone();
    let port = match reactor.listen_tcp("[::1]:0", move |_: &Address| Recorder::echo(&r)) {
        Ok(port) => port,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipping: cannot listen on [::1]: {e}");
            }
            return;
        }
    };
    let addr = port_addr(&port.local_address());
    assert!(addr.is_ipv6());
    // A std client...
    let peer = Peer::spawn(move || {
        let mut s = std_connect(addr);
        write_all(&mut s, b"over v6");
        s.shutdown(Shutdown::Write).unwrap();
        read_to_eof(&mut s).expect("echo")
    });
    // ...and a torsion client on the same reactor.
    let (factory, outcome, crec) = Watcher::new();
    let _connector = reactor.connect_tcp("::1", addr.port(), factory);
    let c = crec.clone();
    run_until(&reactor, "the torsion client to connect", move || {
        c.borrow().made
    });
    let handle = crec.borrow().handle.clone().unwrap();
    handle.write(b"torsion v6");
    let done = peer.done_flag();
    let c = crec.clone();
    run_until(&reactor, "both echoes", move || {
        done.load(Ordering::Acquire) && c.borrow().data.len() >= 10
    });
    assert_eq!(peer.join(), b"over v6");
    assert_eq!(crec.borrow().data, b"torsion v6");
    let peer_addr = handle.peer_address();
    assert_eq!(peer_addr, Address::Inet(addr), "the client's peer is [::1]");
    handle.lose_connection();
    let c = crec.clone();
    run_until(&reactor, "the client to close", move || is_lost(&c));
    assert_lost_once(&crec, "client", |r| matches!(r, CloseReason::Done));
    assert!(outcome.borrow().failed.is_empty());
}

/// The one failure of an attempt, which must be the clear bind-address error: `InvalidInput`,
/// naming the bind address and its family, the destination and the family it has.
fn assert_bind_family_failure(outcome: &Outcome, bind: &str, destination: &str, v4_bind: bool) {
    let (family, other) = if v4_bind {
        ("IPv4", "IPv6")
    } else {
        ("IPv6", "IPv4")
    };
    assert_eq!(outcome.built, 0);
    assert!(outcome.lost.is_empty());
    let [CloseReason::Io(e)] = outcome.failed.as_slice() else {
        panic!("expected one I/O failure, got {:?}", outcome.failed);
    };
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let msg = e.to_string();
    for part in [
        format!("bind address {bind} ({family})"),
        destination.to_owned(),
        format!("only {other} addresses"),
    ] {
        assert!(msg.contains(&part), "{msg:?} should mention {part:?}");
    }
}

/// A bind address of the other family than the destination (an IPv4 bind address for `::1`,
/// an IPv6 one for `127.0.0.1`) fails the attempt with a clear `InvalidInput`, not the
/// kernel's bare `EINVAL`.
#[test]
fn a_bind_address_of_the_other_family_fails_clearly() {
    for (host, bind, destination) in [
        ("::1", "127.0.0.1", "[::1]:9"),
        ("127.0.0.1", "::1", "127.0.0.1:9"),
    ] {
        let reactor = Reactor::new().unwrap();
        let (factory, outcome, rec) = Watcher::new();
        let bind_ip: std::net::IpAddr = bind.parse().unwrap();
        let options = ConnectOptions {
            bind: Some(SocketAddr::new(bind_ip, 0)),
            ..ConnectOptions::default()
        };
        let _connector = reactor.connect_tcp_with(host, 9, factory, options);
        run_attempt(&reactor, &outcome, &rec);
        run_for(&reactor, Duration::from_millis(50)); // no second report
        let o = outcome.borrow();
        assert_eq!(o.started, 1);
        assert_bind_family_failure(&o, bind, destination, bind_ip.is_ipv4());
    }
}

/// A host name connects with the addresses of the bind address's family and skips the
/// others; when it has none of that family, the attempt fails with the clear error. (Whether
/// `localhost` has IPv6 addresses depends on the machine; both outcomes are checked.)
#[test]
fn a_name_connects_over_the_family_of_the_bind_address() {
    use std::net::ToSocketAddrs;
    let resolved: Vec<SocketAddr> = ("localhost", 1).to_socket_addrs().unwrap().collect();
    for loopback in ["127.0.0.1", "::1"] {
        let ip: std::net::IpAddr = loopback.parse().unwrap();
        let reactor = Reactor::new().unwrap();
        let port = match reactor.listen_tcp(SocketAddr::new(ip, 0), |_: &Address| Echo) {
            Ok(port) => port,
            Err(e) if ip.is_ipv6() => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("skipping IPv6: cannot listen on [::1]: {e}");
                }
                continue;
            }
            Err(e) => panic!("listen on {loopback}: {e}"),
        };
        let addr = port_addr(&port.local_address());
        let (factory, outcome, rec) = Watcher::new();
        let options = ConnectOptions {
            bind: Some(SocketAddr::new(ip, 0)),
            ..ConnectOptions::default()
        };
        let _connector = reactor.connect_tcp_with("localhost", addr.port(), factory, options);
        run_attempt(&reactor, &outcome, &rec);
        if resolved.iter().any(|a| a.is_ipv4() == ip.is_ipv4()) {
            assert!(
                outcome.borrow().failed.is_empty(),
                "{:?}",
                outcome.borrow().failed
            );
            let handle = rec.borrow().handle.clone().expect("connected");
            assert_eq!(handle.peer_address(), Address::Inet(addr));
            assert_eq!(
                handle.local_address().socket_addr().map(|a| a.ip()),
                Some(ip),
                "connected from the bind address"
            );
            handle.abort_connection();
        } else {
            let destination = format!("localhost:{}", addr.port());
            assert_bind_family_failure(&outcome.borrow(), loopback, &destination, ip.is_ipv4());
        }
    }
}

/// A client that closes as soon as it connects.
struct QuitAtOnce;

impl Protocol for QuitAtOnce {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        transport.lose_connection();
    }
    fn data_received(&mut self, _transport: &mut dyn Transport, _data: &[u8]) {}
}

/// Counts connections built and lost.
struct QuitFactory(Rc<RefCell<Outcome>>);

impl ClientFactory for QuitFactory {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        self.0.borrow_mut().built += 1;
        Some(Box::new(QuitAtOnce))
    }
    fn client_connection_failed(&mut self, _connector: &Connector, reason: CloseReason) {
        self.0.borrow_mut().failed.push(reason);
    }
    fn client_connection_lost(&mut self, _connector: &Connector, reason: CloseReason) {
        self.0.borrow_mut().lost.push(reason);
    }
}

/// A connection closing since `connection_made` (waiting for the peer's FIN) still counts as
/// connected: `connect` is ignored until it is lost, and works again afterwards.
#[test]
fn connect_while_the_connection_is_still_closing_is_ignored_until_it_is_lost() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reactor = Reactor::new().unwrap();
    let outcome = Rc::new(RefCell::new(Outcome::default()));
    let connector = reactor.connect_tcp("127.0.0.1", port, QuitFactory(outcome.clone()));
    let o = outcome.clone();
    run_until(&reactor, "the client to connect", move || {
        o.borrow().built == 1
    });
    let (server_side, _) = listener.accept().unwrap();
    // Our FIN is out; the server has not answered, so the close waits.
    connector.connect();
    run_for(&reactor, Duration::from_millis(200));
    assert_eq!(
        outcome.borrow().built,
        1,
        "no second connection while closing"
    );
    assert!(outcome.borrow().lost.is_empty() && outcome.borrow().failed.is_empty());

    drop(server_side); // the server's FIN ends the first connection
    let o = outcome.clone();
    run_until(&reactor, "the first connection to end", move || {
        !o.borrow().lost.is_empty()
    });
    connector.connect();
    let o = outcome.clone();
    run_until(&reactor, "the second connection", move || {
        o.borrow().built == 2
    });
    assert!(outcome.borrow().failed.is_empty());
    drop(listener.accept().unwrap());
}

/// A client factory that builds no protocol (or panics building one), and connects again
/// after each failure until it has tried `tries` times.
struct Refuser {
    outcome: Rc<RefCell<Outcome>>,
    panic: bool,
    tries: usize,
}

impl ClientFactory for Refuser {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        self.outcome.borrow_mut().built += 1;
        if self.panic {
            panic!("no protocol today");
        }
        None
    }
    fn started_connecting(&mut self, _connector: &Connector) {
        self.outcome.borrow_mut().started += 1;
    }
    fn client_connection_failed(&mut self, connector: &Connector, reason: CloseReason) {
        let mut o = self.outcome.borrow_mut();
        o.failed.push(reason);
        if o.failed.len() < self.tries {
            connector.connect();
        }
    }
    fn client_connection_lost(&mut self, _connector: &Connector, reason: CloseReason) {
        self.outcome.borrow_mut().lost.push(reason);
    }
}

fn run_refuser(panic: bool, tries: usize) -> Rc<RefCell<Outcome>> {
    let reactor = Reactor::new().unwrap();
    let addr = listen(&reactor, |_: &Address| Echo);
    let outcome = Rc::new(RefCell::new(Outcome::default()));
    let _connector = reactor.connect_tcp(
        "127.0.0.1",
        addr.port(),
        Refuser {
            outcome: outcome.clone(),
            panic,
            tries,
        },
    );
    let o = outcome.clone();
    run_until(&reactor, "every attempt to fail", move || {
        o.borrow().failed.len() >= tries
    });
    run_for(&reactor, Duration::from_millis(100));
    outcome
}

#[test]
fn a_client_factory_building_no_protocol_hears_connection_failed() {
    let outcome = run_refuser(false, 1);
    let o = outcome.borrow();
    assert_eq!((o.started, o.built), (1, 1));
    assert!(o.lost.is_empty(), "lost: {:?}", o.lost);
    assert_eq!(o.failed.len(), 1, "failed: {:?}", o.failed);
    assert!(
        matches!(o.failed[0], CloseReason::NoProtocol),
        "{:?}",
        o.failed[0]
    );
}

#[test]
fn a_client_factory_panicking_in_build_protocol_hears_connection_failed() {
    let outcome = run_refuser(true, 1);
    let o = outcome.borrow();
    assert_eq!((o.started, o.built), (1, 1));
    assert!(o.lost.is_empty(), "lost: {:?}", o.lost);
    assert_eq!(o.failed.len(), 1, "failed: {:?}", o.failed);
    assert!(
        matches!(&o.failed[0], CloseReason::Panic(m) if m.contains("no protocol today")),
        "{:?}",
        o.failed[0]
    );
}

#[test]
fn a_reconnecting_factory_that_builds_no_protocol_keeps_trying() {
    let outcome = run_refuser(false, 3);
    let o = outcome.borrow();
    assert_eq!((o.started, o.built, o.failed.len()), (3, 3, 3));
    assert!(o.lost.is_empty(), "lost: {:?}", o.lost);
}

/// Sets keepalive options in `connection_made` and records each result.
struct KeepaliveSetter {
    settings: Vec<Option<torsion_reactor::Keepalive>>,
    results: Rc<RefCell<Option<Vec<std::io::Result<()>>>>>,
}

impl Protocol for KeepaliveSetter {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let results = self
            .settings
            .drain(..)
            .map(|k| t.set_keepalive(k))
            .collect();
        *self.results.borrow_mut() = Some(results);
    }
}

/// The accepted socket whose peer is `peer`, among the process's descriptors.
fn accepted_socket(peer: SocketAddr) -> Socket {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_str().unwrap().parse::<i32>() else {
            continue;
        };
        // SAFETY: only inspected, while the test owns every descriptor of the process it
        // looks at (a racing close elsewhere makes getpeername fail, which is skipped).
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if SockRef::from(&b)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            == Some(peer)
        {
            return Socket::from(b.try_clone_to_owned().unwrap());
        }
    }
    panic!("no socket connected to {peer}");
}

/// Sets `settings` on an accepted connection; returns the results and the server's socket.
fn set_keepalives(
    settings: Vec<Option<torsion_reactor::Keepalive>>,
) -> (Vec<std::io::Result<()>>, Socket, std::net::TcpStream) {
    let reactor = Reactor::new().unwrap();
    let results = Rc::new(RefCell::new(None));
    let r2 = results.clone();
    let addr = listen(&reactor, move |_: &Address| KeepaliveSetter {
        settings: settings.clone(),
        results: r2.clone(),
    });
    let client = std::net::TcpStream::connect(addr).unwrap();
    let r = results.clone();
    run_until(&reactor, "connection_made", move || r.borrow().is_some());
    let server = accepted_socket(client.local_addr().unwrap());
    let got = results.borrow_mut().take().unwrap();
    (got, server, client)
}

#[test]
fn sub_second_keepalive_times_round_up_to_whole_seconds() {
    use torsion_reactor::Keepalive;
    let (results, server, _client) = set_keepalives(vec![Some(Keepalive {
        idle: Duration::from_millis(500),
        interval: Some(Duration::from_millis(1500)),
        count: Some(3),
    })]);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(server.keepalive().unwrap());
    assert_eq!(server.tcp_keepalive_time().unwrap(), Duration::from_secs(1));
    assert_eq!(
        server.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(2)
    );
    assert_eq!(server.tcp_keepalive_retries().unwrap(), 3);
}

#[test]
fn a_refused_keepalive_setting_leaves_keepalive_as_it_was() {
    use torsion_reactor::Keepalive;
    let bad = Keepalive {
        idle: Duration::from_secs(5),
        interval: None,
        count: Some(0), // TCP_KEEPCNT must be at least 1
    };
    let (results, server, _client) = set_keepalives(vec![Some(bad)]);
    assert!(results[0].is_err());
    assert!(
        !server.keepalive().unwrap(),
        "a failed set_keepalive left SO_KEEPALIVE on"
    );
}

/// Calls `disconnect` on its connector from `connection_made`.
struct DisconnectWhenMade {
    connector: Rc<RefCell<Option<Connector>>>,
    lost: Rc<RefCell<Vec<String>>>,
}

impl Protocol for DisconnectWhenMade {
    fn connection_made(&mut self, _transport: &mut dyn Transport) {
        self.lost.borrow_mut().push("made".into());
        self.connector
            .borrow()
            .as_ref()
            .expect("connector kept")
            .disconnect();
    }
    fn data_received(&mut self, _transport: &mut dyn Transport, _data: &[u8]) {}
    fn connection_lost(&mut self, reason: CloseReason) {
        self.lost.borrow_mut().push(format!("protocol: {reason}"));
    }
}

/// `Connector::disconnect` from the protocol's `connection_made` closes the connection, as it
/// does at any later time (it was ignored: the connector did not count itself connected until
/// `connection_made` returned, so it took the call for a `stop_connecting` with nothing to
/// stop).
#[test]
fn disconnect_from_connection_made_closes_the_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reactor = Reactor::new().unwrap();
    let slot = Rc::new(RefCell::new(None));
    let lost = Rc::new(RefCell::new(Vec::new()));
    let (s, l) = (slot.clone(), lost.clone());
    struct F {
        slot: Rc<RefCell<Option<Connector>>>,
        lost: Rc<RefCell<Vec<String>>>,
    }
    impl ClientFactory for F {
        fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
            Some(Box::new(DisconnectWhenMade {
                connector: self.slot.clone(),
                lost: self.lost.clone(),
            }))
        }
        fn client_connection_lost(&mut self, _connector: &Connector, reason: CloseReason) {
            self.lost.borrow_mut().push(format!("factory: {reason}"));
        }
    }
    let connector = reactor.connect_tcp("127.0.0.1", port, F { slot: s, lost: l });
    *slot.borrow_mut() = Some(connector);
    let l = lost.clone();
    run_until(&reactor, "the connection", move || !l.borrow().is_empty());
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    run_for(&reactor, Duration::from_millis(100));
    let mut buf = [0u8; 16];
    let read = peer.read(&mut buf);
    assert!(
        matches!(read, Ok(0)),
        "the peer should see the client's FIN, got {read:?}"
    );
    drop(peer);
    let l = lost.clone();
    run_until(&reactor, "the connection to end", move || {
        l.borrow().len() == 3
    });
    slot.borrow_mut().take();
}
