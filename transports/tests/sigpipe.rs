//! Writing into a connection the peer has closed or reset must never raise SIGPIPE.
//!
//! Rust programs ignore SIGPIPE by default, which would hide a missing `MSG_NOSIGNAL`. This
//! binary restores the default disposition (terminate the process), so if any write reached a
//! dead socket without `MSG_NOSIGNAL` the whole test process would die. It is a binary of its
//! own because the disposition is process-wide.

mod util;

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use socket2::SockRef;
use torsion_reactor::prelude::*;
use torsion_transports::ReactorExt;

use util::*;

const WRITES: usize = 10_000;

/// Restores SIGPIPE's default action (terminate) and checks that it took.
fn default_sigpipe() {
    // SAFETY: `signal` with `SIG_DFL` installs no handler code, only the kernel's default
    // action; it is valid at any time, and the process-wide effect is what this binary wants.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR, "could not reset SIGPIPE");
    // SAFETY: a zeroed `sigaction` is a valid out-parameter; a null `act` only queries.
    let current = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        assert_eq!(
            libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut action),
            0
        );
        action.sa_sigaction
    };
    assert_eq!(
        current,
        libc::SIG_DFL,
        "SIGPIPE must have its default action"
    );
}

/// How the peer goes away.
enum Peer {
    /// TCP, closed with a zero linger: an RST.
    TcpReset(TcpStream),
    /// TCP, closed normally: a FIN; our first write draws an RST.
    TcpClose(TcpStream),
    /// A Unix socket closed: writes fail with EPIPE at once.
    Unix(UnixStream),
}

/// Accepts the peer, then in one reactor callback closes the peer and writes into the dead
/// connection [`WRITES`] times (before the reactor can notice), then again through a kept
/// handle after `connection_lost`.
fn write_into_dead_connection(reactor: &Reactor, server: &Shared, peer: Peer) {
    let s = server.clone();
    run_until(reactor, "the server connection", move || s.borrow().made);
    let handle = server.borrow().handle.clone().expect("handle kept");
    let h = handle.clone();
    reactor.call_soon(move |_| {
        match peer {
            Peer::TcpReset(s) => {
                SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
                drop(s);
            }
            Peer::TcpClose(s) => drop(s),
            Peer::Unix(s) => drop(s),
        }
        for i in 0..WRITES {
            h.write(format!("write {i} into a dead connection\n").as_bytes());
        }
    });
    let s = server.clone();
    run_until(reactor, "the server to see the peer gone", move || {
        is_lost(&s)
    });
    let h = handle.clone();
    let done = record();
    let d = done.clone();
    reactor.call_soon(move |_| {
        for _ in 0..WRITES {
            h.write(b"after connection_lost");
        }
        d.borrow_mut().made = true;
    });
    let d = done.clone();
    run_until(reactor, "the late writes", move || d.borrow().made);
    assert_lost_once(server, "server", |r| {
        matches!(r, CloseReason::Reset | CloseReason::Io(_))
    });
}

fn tcp_server(reactor: &Reactor) -> (std::net::SocketAddr, Shared) {
    let server = record();
    let s = server.clone();
    let port = reactor
        .listen_tcp("127.0.0.1:0", move |_: &Address| Recorder::new(&s))
        .unwrap();
    (port_addr(&port.local_address()), server)
}

/// The case as a user meets it. The kernel answers the first write after an RST with
/// `ECONNRESET`, which raises no signal, and the transport then closes and writes no more; the
/// two tests below are the ones in which a write without `MSG_NOSIGNAL` would draw `EPIPE`
/// and kill the process.
#[test]
fn writing_into_a_reset_tcp_connection_does_not_raise_sigpipe() {
    default_sigpipe();
    let reactor = Reactor::new().unwrap();
    let (addr, server) = tcp_server(&reactor);
    let client = std_connect(addr);
    write_into_dead_connection(&reactor, &server, Peer::TcpReset(client));
}

#[test]
fn writing_into_a_closed_tcp_connection_does_not_raise_sigpipe() {
    default_sigpipe();
    let reactor = Reactor::new().unwrap();
    let (addr, server) = tcp_server(&reactor);
    let client = std_connect(addr);
    write_into_dead_connection(&reactor, &server, Peer::TcpClose(client));
}

#[test]
fn writing_into_a_closed_unix_connection_does_not_raise_sigpipe() {
    default_sigpipe();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipe.sock");
    let reactor = Reactor::new().unwrap();
    let server = record();
    let s = server.clone();
    let _port = reactor
        .listen_unix(&path, move |_: &Address| Recorder::new(&s))
        .unwrap();
    let client = UnixStream::connect(&path).unwrap();
    write_into_dead_connection(&reactor, &server, Peer::Unix(client));
}
