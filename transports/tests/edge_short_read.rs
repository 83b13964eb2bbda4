//! Stream reads that the kernel ends early with more queued behind them: at a message that
//! carried descriptors (Unix) and at an urgent mark (TCP). A connection's socket is
//! edge-triggered, so the bytes behind must still be read without anything new arriving.

mod util;

use std::io::{IoSlice, Write};
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use torsion_reactor::prelude::*;
use torsion_transports::ReactorExt;

use util::*;

/// Sends `data` with `fd` attached (`SCM_RIGHTS`).
fn send_with_fd(s: &UnixStream, data: &[u8], fd: BorrowedFd<'_>) -> rustix::io::Result<usize> {
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    rustix::net::sendmsg(s, &[IoSlice::new(data)], &mut control, SendFlags::empty())
}

/// A peer passes a descriptor: refused at its `sendmsg` where the kernel can (`SO_PASSRIGHTS`,
/// Linux 6.16), else received, and the kernel ends a read at that message. Either way every
/// byte sent arrives, with nothing new arriving after.
#[test]
fn unix_data_after_a_descriptor_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fd.sock");
    let reactor = Reactor::new().unwrap();
    let rec = record();
    let r = rec.clone();
    let _port = reactor
        .listen_unix(&path, move |_: &Address| Recorder::new(&r))
        .unwrap();
    let client = UnixStream::connect(&path).unwrap();
    let r = rec.clone();
    run_until(&reactor, "accept", move || r.borrow().made);
    // The eager first read finds nothing; then both writes arrive while the reactor is not
    // waiting, so one wake-up covers them.
    run_for(&reactor, Duration::from_millis(20));
    let spare = std::fs::File::open("/dev/null").unwrap();
    let expected: &[u8] = match send_with_fd(&client, b"hello", spare.as_fd()) {
        Ok(5) => b"helloworld",
        Err(rustix::io::Errno::PERM) => b"world",
        other => panic!("sendmsg: {other:?}"),
    };
    (&client).write_all(b"world").unwrap();
    let r = rec.clone();
    let ok = try_run_until(&reactor, Duration::from_secs(2), move || {
        r.borrow().data.len() == expected.len()
    });
    assert!(
        ok,
        "only {:?} arrived",
        String::from_utf8_lossy(&rec.borrow().data)
    );
    assert_eq!(rec.borrow().data, expected);
}

/// The kernel ends a read at the urgent mark; the urgent byte itself is not delivered (no
/// `SO_OOBINLINE`).
#[test]
fn tcp_data_after_an_urgent_byte_is_read() {
    let reactor = Reactor::new().unwrap();
    let rec = record();
    let r = rec.clone();
    let port = reactor
        .listen_tcp("127.0.0.1:0", move |_: &Address| Recorder::new(&r))
        .unwrap();
    let addr = match port.local_address() {
        Address::Inet(a) => a,
        a => panic!("{a:?}"),
    };
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_nodelay(true).unwrap();
    let r = rec.clone();
    run_until(&reactor, "accept", move || r.borrow().made);
    run_for(&reactor, Duration::from_millis(20));
    client.write_all(b"abc").unwrap();
    let n = unsafe {
        libc::send(
            client.as_raw_fd(),
            b"X".as_ptr() as *const _,
            1,
            libc::MSG_OOB,
        )
    };
    assert_eq!(n, 1);
    client.write_all(b"def").unwrap();
    std::thread::sleep(Duration::from_millis(50)); // all of it queued at the server
    let r = rec.clone();
    let ok = try_run_until(&reactor, Duration::from_secs(2), move || {
        r.borrow().data.len() >= 6
    });
    assert!(
        ok,
        "only {:?} arrived",
        String::from_utf8_lossy(&rec.borrow().data)
    );
    assert_eq!(rec.borrow().data, b"abcdef");
}
