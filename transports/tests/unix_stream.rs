//! Unix-domain stream sockets: paths in a temporary directory, file modes, stale and live
//! socket files, abstract names and peer credentials.

mod util;

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use torsion_reactor::prelude::*;
use torsion_reactor::{Error, UnixAddress};
use torsion_transports::UNIX_READ_SIZE;
use torsion_transports::{ReactorExt, UnixListenOptions};

use util::*;

/// Connects a torsion client with `connect`, checks an echo round trip, then closes.
fn torsion_round_trip(reactor: &Reactor, connect: impl FnOnce(&Reactor, Recorder)) -> Shared {
    let client = record();
    connect(reactor, Recorder::new(&client));
    let c = client.clone();
    run_until(reactor, "the client to connect", move || c.borrow().made);
    let handle = client.borrow().handle.clone().unwrap();
    handle.write(b"over unix");
    let c = client.clone();
    run_until(reactor, "the echo", move || c.borrow().data.len() >= 9);
    assert_eq!(client.borrow().data, b"over unix");
    handle.lose_connection();
    let c = client.clone();
    run_until(reactor, "the client to close", move || is_lost(&c));
    assert_lost_once(&client, "client", |r| matches!(r, CloseReason::Done));
    client
}

/// A blocking std client round trip through `path`.
fn std_round_trip(path: &Path) -> Peer<Vec<u8>> {
    let path = path.to_owned();
    Peer::spawn(move || {
        let mut s = UnixStream::connect(&path).expect("connect to the server");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(b"std client").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).expect("read the echo");
        back
    })
}

fn run_std_round_trip(reactor: &Reactor, path: &Path) {
    let peer = std_round_trip(path);
    let done = peer.done_flag();
    run_until(reactor, "the std client's echo", move || {
        done.load(Ordering::Acquire)
    });
    assert_eq!(peer.join(), b"std client");
}

#[test]
fn echo_round_trip_on_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let reactor = Reactor::new().unwrap();
    let server = record();
    let s = server.clone();
    let port = reactor
        .listen_unix(&path, move |_: &Address| Recorder::echo(&s))
        .unwrap();
    assert_eq!(
        port.local_address(),
        Address::Unix(UnixAddress::Path(path.clone()))
    );
    assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());

    let p = path.clone();
    torsion_round_trip(&reactor, move |r, proto| {
        let mut proto = Some(proto);
        let _ = r.connect_unix(&p, move |_: &Address| proto.take());
    });
    let s = server.clone();
    run_until(&reactor, "the server to close", move || is_lost(&s));
    assert_eq!(server.borrow().data, b"over unix");
    assert_lost_once(&server, "server", |r| matches!(r, CloseReason::Done));

    run_std_round_trip(&reactor, &path);

    port.stop_listening();
    assert!(!path.exists(), "stop_listening removes the socket file");
}

#[test]
fn the_requested_file_mode_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private.sock");
    let reactor = Reactor::new().unwrap();
    let options = UnixListenOptions {
        mode: Some(0o600),
        ..UnixListenOptions::default()
    };
    let _port = reactor
        .listen_unix_with(&path, |_: &Address| Echo, options)
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "socket file mode is {mode:o}");
    run_std_round_trip(&reactor, &path);
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap()); // a server that died, leaving its file
    assert!(path.exists());
    let refused = UnixStream::connect(&path);
    assert!(
        matches!(&refused, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
        "the file is stale"
    );

    let reactor = Reactor::new().unwrap();
    let _port = reactor
        .listen_unix(&path, |_: &Address| Echo)
        .expect("a stale socket file is replaced");
    run_std_round_trip(&reactor, &path);
}

#[test]
fn a_file_that_is_not_a_socket_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious.txt");
    std::fs::write(&path, b"precious data").unwrap();
    let reactor = Reactor::new().unwrap();
    let err = reactor
        .listen_unix(&path, |_: &Address| Echo)
        .expect_err("a regular file is in the way");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious data");
}

#[test]
fn a_live_socket_file_is_address_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.sock");
    let live = UnixListener::bind(&path).unwrap();
    let reactor = Reactor::new().unwrap();
    match reactor.listen_unix(&path, |_: &Address| Echo) {
        Err(Error::AddressInUse(shown)) => {
            assert!(
                shown.contains("live.sock"),
                "the error names the path: {shown}"
            )
        }
        Err(e) => panic!("expected AddressInUse, got {e:?}"),
        Ok(_) => panic!("listening over a live server must fail"),
    }
    // The live server is untouched: its file is still there and it still accepts.
    assert!(path.exists());
    live.set_nonblocking(true).unwrap();
    while live.accept().is_ok() {} // the liveness probe, if still queued
    let _client = UnixStream::connect(&path).expect("the live server still listens");
    live.set_nonblocking(false).unwrap();
    let (_conn, _) = live.accept().expect("and accepts");
}

#[test]
fn echo_round_trip_on_an_abstract_name() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("torsion-test-{}-{nanos}", std::process::id()).into_bytes();
    let reactor = Reactor::new().unwrap();
    let server = record();
    let s = server.clone();
    let port = reactor
        .listen_unix_abstract(&name, move |_: &Address| Recorder::echo(&s))
        .unwrap();
    assert_eq!(
        port.local_address(),
        Address::Unix(UnixAddress::Abstract(name.clone()))
    );
    assert!(
        matches!(
            reactor.listen_unix_abstract(&name, |_: &Address| Echo),
            Err(Error::AddressInUse(_))
        ),
        "an abstract name in use cannot be bound twice"
    );

    let n = name.clone();
    torsion_round_trip(&reactor, move |r, proto| {
        let mut proto = Some(proto);
        let _ = r.connect_unix_abstract(&n, move |_: &Address| proto.take());
    });
    let s = server.clone();
    run_until(&reactor, "the server to close", move || is_lost(&s));
    assert_eq!(server.borrow().data, b"over unix");

    port.stop_listening();
    let again = reactor
        .listen_unix_abstract(&name, |_: &Address| Echo)
        .expect("the name is free once the port stopped");
    again.stop_listening();
}

#[test]
fn peer_credentials_are_ours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cred.sock");
    let reactor = Reactor::new().unwrap();
    let server = record();
    let s = server.clone();
    let _port = reactor
        .listen_unix(&path, move |_: &Address| Recorder::new(&s))
        .unwrap();
    let _client = UnixStream::connect(&path).unwrap();
    let s = server.clone();
    run_until(&reactor, "the server connection", move || s.borrow().made);
    let handle = server.borrow().handle.clone().unwrap();
    let cred = handle
        .peer_credentials()
        .expect("Unix connections report the peer's credentials");
    assert_eq!(cred.uid, rustix::process::geteuid().as_raw());
    assert_eq!(cred.gid, rustix::process::getegid().as_raw());
    assert_eq!(cred.pid, Some(std::process::id() as i32));
}

/// A live server at `path` that is too busy to accept: its queue (backlog 0) is full. Returns
/// the listening socket and the queued clients; dropping them frees the path's server.
fn full_queue_server(path: &Path) -> (socket2::Socket, Vec<socket2::Socket>) {
    use socket2::{Domain, SockAddr, Socket, Type};
    let addr = SockAddr::unix(path).unwrap();
    let busy = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    busy.bind(&addr).unwrap();
    busy.listen(0).unwrap();
    let mut queued = Vec::new();
    for _ in 0..4 {
        let s = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None).unwrap();
        if s.connect(&addr).is_err() {
            break; // EAGAIN: the queue is full
        }
        queued.push(s);
    }
    (busy, queued)
}

#[test]
fn a_live_server_with_a_full_queue_is_address_in_use_without_blocking() {
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.sock");
    let (busy, queued) = full_queue_server(&path);

    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    let thread = std::thread::spawn(move || {
        let reactor = Reactor::new().unwrap();
        let result = reactor.listen_unix(&p, |_: &Address| Echo).map(|_| ());
        let _ = tx.send(format!("{result:?}"));
    });
    let outcome = rx.recv_timeout(Duration::from_secs(3));
    // Unblock a stuck listen_unix (closing the busy server refuses its probe), then reap it.
    drop(queued);
    drop(busy);
    let _ = thread.join();
    let outcome = outcome.expect("listen_unix must not block on a busy live server");
    assert!(
        outcome.contains("AddressInUse"),
        "expected AddressInUse, got {outcome}"
    );
}

/// Echo that records the most it ever had buffered, and its pauses.
struct MeasuringEcho {
    most_buffered: Rc<RefCell<(usize, usize)>>,
}

impl Protocol for MeasuringEcho {
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        transport.write(data);
        let mut m = self.most_buffered.borrow_mut();
        m.0 = m.0.max(transport.buffered());
    }
    fn pause_producing(&mut self, transport: &mut dyn Transport) {
        self.most_buffered.borrow_mut().1 += 1;
        transport.pause_reading();
    }
}

/// A client that has sent much and reads nothing: the echo's write buffer passes the high
/// watermark by at most one read, because `pause_producing` runs as soon as the
/// `data_received` that crossed it returns, before the next read of the turn (hundreds of
/// KiB wait in the socket, enough for many more full reads).
#[test]
fn echo_to_a_client_that_does_not_read_buffers_at_most_one_read_past_the_watermark() {
    let reactor = Reactor::new().unwrap();
    let seen = Rc::new(RefCell::new((0usize, 0usize)));
    let s = seen.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.sock");
    let _port = reactor
        .listen_unix(&path, move |_: &Address| MeasuringEcho {
            most_buffered: s.clone(),
        })
        .unwrap();
    // Before the reactor accepts: fill the socket towards the server as far as it goes.
    let mut client = UnixStream::connect(&path).expect("connect to the server");
    let _ = socket2::SockRef::from(&client).set_send_buffer_size(4 << 20);
    client.set_nonblocking(true).unwrap();
    let chunk = pattern(64 * 1024);
    let mut queued = 0usize;
    while queued < 64 << 20 {
        match client.write(&chunk) {
            Ok(n) => queued += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    let config = torsion_reactor::ConnectionConfig::default();
    assert!(
        queued > config.high_watermark + 3 * UNIX_READ_SIZE,
        "only {queued} bytes queued: the test needs more waiting than the echo may buffer"
    );
    let s = seen.clone();
    run_until(&reactor, "the pause", move || s.borrow().1 > 0);
    let (most, pauses) = *seen.borrow();
    assert_eq!(pauses, 1);
    assert!(
        most <= config.high_watermark + UNIX_READ_SIZE,
        "write buffer reached {most} bytes (high watermark {})",
        config.high_watermark
    );
}

/// A connection stops after its share of reads per turn with data still waiting, and nothing
/// new arrives: the rest is still read in the turns after (readiness is edge-triggered, so
/// the reactor, not a fresh event, must bring the connection back).
#[test]
fn data_left_after_a_turns_share_of_reads_is_read_without_a_new_arrival() {
    let reactor = Reactor::new().unwrap();
    let rec = record();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("share.sock");
    let mut options = UnixListenOptions::default();
    options.config.max_reads_per_turn = 1;
    let r = rec.clone();
    let _port = reactor
        .listen_unix_with(&path, move |_: &Address| Recorder::new(&r), options)
        .unwrap();
    // Queued before the reactor accepts, so all of it is there at the first event.
    let mut client = UnixStream::connect(&path).expect("connect to the server");
    client.set_nonblocking(true).unwrap();
    let sent = pattern(4 * UNIX_READ_SIZE);
    let mut queued = 0;
    while queued < sent.len() {
        match client.write(&sent[queued..]) {
            Ok(n) => queued += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(
        queued > 2 * UNIX_READ_SIZE,
        "only {queued} bytes queued: the test needs several full reads waiting"
    );
    let r = rec.clone();
    run_until(&reactor, "every queued byte", move || {
        r.borrow().data.len() == queued
    });
    assert_eq!(rec.borrow().data, sent[..queued]);
    assert!(rec.borrow().chunks >= 3, "{} reads", rec.borrow().chunks);
    drop(client);
}

#[test]
fn connecting_to_a_full_accept_queue_is_refused_at_once_without_spinning() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.sock");
    let (_busy, queued) = full_queue_server(&path);

    let reactor = Reactor::new().unwrap();
    let log = Log::default();
    let _connector = reactor.connect_unix(
        &path,
        SenderFactory {
            log: log.clone(),
            msg: b"hello".to_vec(),
        },
    );
    let started = Instant::now();
    let l = log.clone();
    run_until(&reactor, "the attempt to fail", move || {
        l.borrow().failed.is_some()
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the failure must come at once, not at the connect timeout"
    );
    let log = log.borrow();
    assert!(
        matches!(log.failed, Some(CloseReason::ConnectRefused)),
        "expected ConnectRefused, got {:?}",
        log.failed
    );
    assert!(!log.made);
    drop(queued);
}

/// Records the peer address of each accepted connection.
struct PeerRecorder(Rc<RefCell<Option<Address>>>);

impl Protocol for PeerRecorder {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn connection_made(&mut self, t: &mut dyn Transport) {
        *self.0.borrow_mut() = Some(t.peer_address());
    }
}

/// The peer address the server sees for a client bound to `client` (`None`: unbound).
fn accepted_peer(client: Option<&socket2::SockAddr>) -> Address {
    let dir = tempfile::tempdir().unwrap();
    let server_path = dir.path().join("srv.sock");
    let reactor = Reactor::new().unwrap();
    let peer = Rc::new(RefCell::new(None));
    let p2 = peer.clone();
    let port = reactor
        .listen_unix(&server_path, move |_: &Address| PeerRecorder(p2.clone()))
        .unwrap();
    let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    if let Some(client) = client {
        s.bind(client).unwrap();
    }
    s.connect(&socket2::SockAddr::unix(&server_path).unwrap())
        .unwrap();
    let p = peer.clone();
    run_until(&reactor, "connection_made", move || p.borrow().is_some());
    port.stop_listening();
    let got = peer.borrow_mut().take().unwrap();
    got
}

#[test]
fn an_accepted_connection_reports_the_clients_bound_path() {
    let dir = tempfile::tempdir().unwrap();
    let client_path = dir.path().join("cli.sock");
    let bound = socket2::SockAddr::unix(&client_path).unwrap();
    assert_eq!(
        accepted_peer(Some(&bound)),
        Address::Unix(UnixAddress::Path(client_path))
    );
}

#[test]
fn an_accepted_connection_reports_the_clients_abstract_name() {
    let name = format!("torsion-test-peer-{}", std::process::id());
    let mut raw = vec![0u8];
    raw.extend_from_slice(name.as_bytes());
    use std::os::unix::ffi::OsStrExt;
    let bound = socket2::SockAddr::unix(std::ffi::OsStr::from_bytes(&raw)).unwrap();
    assert_eq!(
        accepted_peer(Some(&bound)),
        Address::Unix(UnixAddress::Abstract(name.into_bytes()))
    );
}

#[test]
fn an_accepted_connection_from_an_unbound_client_is_unnamed() {
    assert_eq!(accepted_peer(None), Address::Unix(UnixAddress::Unnamed));
}

#[test]
fn an_accepted_connection_reports_a_client_path_that_fills_sun_path() {
    // 108 bytes, no room for a NUL: legal on Linux, and the kernel then reports the address
    // one byte longer than a `sockaddr_un` (rustix's parser would panic on it).
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::ffi::OsStrExt;
    let pad = 108 - dir.path().as_os_str().len() - 1;
    let client_path = dir.path().join("c".repeat(pad));
    let bytes = client_path.as_os_str().as_bytes().to_vec();
    assert_eq!(bytes.len(), 108);
    // SAFETY: `try_init` hands over a zeroed `sockaddr_storage`, large enough for a
    // `sockaddr_un`, and takes its length.
    let (_, bound) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let sun = storage.cast::<libc::sockaddr_un>();
            (*sun).sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (i, b) in bytes.iter().enumerate() {
                (*sun).sun_path[i] = *b as libc::c_char;
            }
            *len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            Ok(())
        })
    }
    .unwrap();
    assert_eq!(
        accepted_peer(Some(&bound)),
        Address::Unix(UnixAddress::Path(client_path))
    );
}

/// A port that stops removes its socket file only if it is still its own: a server that
/// replaced the file meanwhile keeps its socket (the decision is by device and inode, not by
/// "a socket file is there").
#[test]
fn stop_listening_leaves_another_servers_socket_at_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replaced.sock");
    let reactor = Reactor::new().unwrap();
    let port = reactor.listen_unix(&path, |_: &Address| Echo).unwrap();
    std::fs::remove_file(&path).unwrap();
    let theirs = UnixListener::bind(&path).unwrap();
    port.stop_listening();
    assert!(
        std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()),
        "stop_listening removed another server's socket file"
    );
    UnixStream::connect(&path).expect("the other server still answers at the path");
    drop(theirs);
}

/// The kernel cuts a path at its first NUL byte: a path holding one must be refused, never
/// bound or connected as the shorter path.
#[test]
fn a_path_with_a_nul_byte_is_refused_not_cut_short() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("a");
    let mut raw = short.as_os_str().as_bytes().to_vec();
    raw.extend_from_slice(b"\0b.sock");
    let nul = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&raw));
    let reactor = Reactor::new().unwrap();
    match reactor.listen_unix(&nul, |_: &Address| Echo) {
        Err(Error::InvalidAddress(msg)) => assert!(msg.contains("NUL"), "{msg}"),
        other => panic!("expected InvalidAddress, got {other:?}"),
    }
    assert!(!short.exists(), "bound the path cut at the NUL byte");

    // A client must not reach the server at the shorter path either.
    let _server = UnixListener::bind(&short).unwrap();
    let log = Rc::new(RefCell::new(ClientLog::default()));
    let _c = reactor.connect_unix(
        &nul,
        SenderFactory {
            log: log.clone(),
            msg: Vec::new(),
        },
    );
    let l = log.clone();
    run_until(&reactor, "the attempt to end", move || {
        l.borrow().failed.is_some() || l.borrow().made
    });
    let log = log.borrow();
    assert!(!log.made, "connected to the path cut at the NUL byte");
    assert!(
        matches!(&log.failed, Some(CloseReason::Io(e)) if e.kind() == ErrorKind::InvalidInput),
        "{:?}",
        log.failed
    );
}

/// A path or abstract name longer than `sun_path` holds is an invalid address that names the
/// limit; a client's attempt fails with an invalid-input error, not "could not resolve host
/// name".
#[test]
fn a_path_or_name_longer_than_sun_path_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("x".repeat(120));
    let reactor = Reactor::new().unwrap();
    match reactor.listen_unix(&long, |_: &Address| Echo) {
        Err(Error::InvalidAddress(msg)) => assert!(msg.contains("107 bytes"), "{msg}"),
        other => panic!("expected InvalidAddress, got {other:?}"),
    }
    match reactor.listen_unix_abstract(&[b'n'; 108], |_: &Address| Echo) {
        Err(Error::InvalidAddress(msg)) => assert!(msg.contains("107 bytes"), "{msg}"),
        other => panic!("expected InvalidAddress, got {other:?}"),
    }
    let log = Rc::new(RefCell::new(ClientLog::default()));
    let _c = reactor.connect_unix(
        &long,
        SenderFactory {
            log: log.clone(),
            msg: Vec::new(),
        },
    );
    let l = log.clone();
    run_until(&reactor, "the attempt to fail", move || {
        l.borrow().failed.is_some()
    });
    let failed = log.borrow_mut().failed.take();
    match failed {
        Some(CloseReason::Io(e)) => {
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.to_string().contains("107 bytes"), "{e}");
        }
        other => panic!("expected an invalid-input Io reason, got {other:?}"),
    }
}

/// A file mode chmod cannot apply as given (above 7777) is refused before anything is bound.
#[test]
fn a_mode_above_7777_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mode.sock");
    let reactor = Reactor::new().unwrap();
    let options = UnixListenOptions {
        mode: Some(0o10600),
        ..UnixListenOptions::default()
    };
    match reactor.listen_unix_with(&path, |_: &Address| Echo, options) {
        Err(Error::InvalidAddress(msg)) => assert!(msg.contains("10600"), "{msg}"),
        other => panic!("expected InvalidAddress, got {other:?}"),
    }
    assert!(!path.exists());
}

/// Another port between its bind and its listen (its new socket refuses connections, like a
/// stale one) holds the directory's lock; a port starting meanwhile waits for it and then
/// finds the path live, instead of removing the new file and binding the path too.
#[test]
fn a_port_starting_at_the_same_time_is_not_taken_for_a_stale_file() {
    use std::sync::mpsc;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.sock");
    let (bound_tx, bound_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (p, d) = (path.clone(), dir.path().to_owned());
    let other = std::thread::spawn(move || {
        let lock = std::fs::File::open(&d).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let addr = socket2::SockAddr::unix(&p).unwrap();
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        s.bind(&addr).unwrap();
        bound_tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.listen(8).unwrap();
        drop(lock);
        let _ = done_rx.recv_timeout(IO_TIMEOUT);
        drop(s);
    });
    bound_rx.recv().unwrap();
    let reactor = Reactor::new().unwrap();
    let result = reactor.listen_unix(&path, |_: &Address| Echo);
    let in_use = matches!(result, Err(Error::AddressInUse(_)));
    done_tx.send(()).unwrap();
    other.join().unwrap();
    assert!(
        in_use,
        "expected AddressInUse, got {:?}",
        result.map(|p| p.local_address())
    );
}

/// A factory that logs its events and calls `connect` from `started_connecting`.
struct ConnectWhileStarting {
    log: Rc<RefCell<Vec<String>>>,
}

impl ClientFactory for ConnectWhileStarting {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Echo))
    }
    fn started_connecting(&mut self, connector: &Connector) {
        self.log.borrow_mut().push("started".into());
        // An attempt is in progress: this must be ignored.
        connector.connect();
    }
    fn client_connection_failed(&mut self, _connector: &Connector, reason: CloseReason) {
        self.log.borrow_mut().push(format!("failed: {reason}"));
    }
}

/// `connect` is ignored while an attempt is in progress, even when that attempt then fails at
/// once (a path with no socket): the call was deferred and judged when it ran, so it started
/// a new attempt, whose `started_connecting` did the same, retrying for ever.
#[test]
fn connect_from_started_connecting_is_ignored_when_the_attempt_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let reactor = Reactor::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let _connector = reactor.connect_unix(
        dir.path().join("nobody.sock"),
        ConnectWhileStarting { log: log.clone() },
    );
    run_for(&reactor, std::time::Duration::from_millis(100));
    let log = log.borrow();
    assert!(
        log.len() == 2 && log[0] == "started" && log[1].starts_with("failed"),
        "one attempt, one failure; got {} events, first {:?}",
        log.len(),
        &log[..log.len().min(4)]
    );
}
