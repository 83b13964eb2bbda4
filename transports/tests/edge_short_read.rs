//! Stream reads that the kernel ends early with more queued behind them: at a message that
//! carried descriptors (Unix) and at an urgent mark (TCP). A connection's socket is
//! edge-triggered, so the bytes behind must still be read without anything new arriving.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use torsion_reactor::prelude::*;
use torsion_transports::ReactorExt;

use util::*;

/// Sends `data` with one descriptor attached (SCM_RIGHTS).
fn send_with_fd(s: &UnixStream, data: &[u8], fd: i32) {
    unsafe {
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut _,
            iov_len: data.len(),
        };
        let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut _;
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, fd);
        let n = libc::sendmsg(s.as_raw_fd(), &msg, 0);
        assert_eq!(
            n,
            data.len() as isize,
            "sendmsg: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The kernel ends a read at a message with descriptors attached.
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
    run_for(&reactor, Duration::from_millis(20)); // the eager read found nothing
                                                  // Both arrive while the reactor is not waiting: one wake-up between them.
    let spare = std::fs::File::open("/dev/null").unwrap();
    send_with_fd(&client, b"hello", spare.as_raw_fd());
    (&client).write_all(b"world").unwrap();
    let r = rec.clone();
    let ok = try_run_until(&reactor, Duration::from_secs(2), move || {
        r.borrow().data.len() == 10
    });
    assert!(
        ok,
        "only {:?} arrived",
        String::from_utf8_lossy(&rec.borrow().data)
    );
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
