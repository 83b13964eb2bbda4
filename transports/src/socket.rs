//! [`StreamIo`] over a registered, non-blocking stream socket (TCP or Unix).

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::time::Duration;

use rustix::net::{
    sockopt, RecvAncillaryBuffer, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendFlags,
};
use socket2::Socket;
use torsion_reactor::{Interest, Keepalive, PeerCredentials, Registered, Source, StreamIo};

/// Bytes read at a time from a Unix stream socket: 64 KiB.
///
/// A Unix socket's send buffer holds about 208 KiB (`net.core.wmem_default`) and does not grow
/// as TCP's does, so echoing 256 KiB reads overfilled it at every write and the echo waited on
/// writability: Unix bulk echo measured 0.68x with 256 KiB reads against 64 KiB.
pub const UNIX_READ_SIZE: usize = 64 * 1024;

/// Which kind of stream socket, for the options that only one kind has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SocketKind {
    Tcp,
    Unix,
}

/// A connected socket registered with the reactor.
///
/// Writes use `send(MSG_NOSIGNAL)`, so writing into a reset connection returns `EPIPE` to the
/// transport instead of raising SIGPIPE, whatever the process's SIGPIPE disposition.
///
/// Keepalive times are rounded up to whole seconds, at least one (the kernel counts in
/// seconds): `Keepalive::after(500 ms)` probes after 1 s.
///
/// A Unix socket refuses passed descriptors where the kernel allows it (`SO_PASSRIGHTS`, Linux
/// 6.16 and later): the peer's `sendmsg` with `SCM_RIGHTS` fails with `EPERM`. Elsewhere they
/// are received and closed unread (torsion has no API for them), and reads use `recvmsg` to
/// notice them (see [`read_unix`]).
pub(crate) struct SocketIo {
    reg: Registered<Socket>,
    kind: SocketKind,
    /// A Unix socket that may receive descriptors: read with [`read_unix`].
    may_receive_descriptors: bool,
}

impl SocketIo {
    pub(crate) fn new(reg: Registered<Socket>, kind: SocketKind) -> Self {
        let may_receive_descriptors =
            kind == SocketKind::Unix && !refuse_descriptors(reg.get_ref());
        SocketIo {
            reg,
            kind,
            may_receive_descriptors,
        }
    }
}

/// Turns `SO_PASSRIGHTS` off; whether the kernel took it.
#[allow(unsafe_code)] // neither rustix nor socket2 binds this option yet
fn refuse_descriptors(socket: &Socket) -> bool {
    use std::os::fd::AsRawFd;
    /// `include/uapi/asm-generic/socket.h`, Linux 6.16, which these architectures use.
    const SO_PASSRIGHTS: Option<libc::c_int> = if cfg!(all(
        target_os = "linux",
        any(
            target_arch = "x86_64",
            target_arch = "x86",
            target_arch = "aarch64",
            target_arch = "arm",
            target_arch = "riscv64"
        )
    )) {
        Some(83)
    } else {
        None
    };
    let Some(option) = SO_PASSRIGHTS else {
        return false;
    };
    let off: libc::c_int = 0;
    // SAFETY: a valid socket descriptor, and a pointer to an int of the length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&off as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

impl StreamIo for SocketIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.may_receive_descriptors {
            return read_unix(self.reg.get_ref().as_fd(), buf);
        }
        self.reg.get_ref().read(buf)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::net::send(
            self.reg.get_ref().as_fd(),
            buf,
            SendFlags::NOSIGNAL,
        )?)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(rustix::net::sendmsg(
            self.reg.get_ref().as_fd(),
            bufs,
            &mut SendAncillaryBuffer::default(),
            SendFlags::NOSIGNAL,
        )?)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.reg.get_ref().shutdown(std::net::Shutdown::Write)
    }

    fn prepare_abort(&mut self) {
        // Closing with a zero linger sends RST instead of FIN and drops unsent data.
        let _ = self.reg.get_ref().set_linger(Some(Duration::ZERO));
    }

    fn set_interest(&mut self, interest: Interest) -> io::Result<()> {
        self.reg.set_interest(interest)
    }

    fn read_again(&mut self) {
        self.reg.ready_again();
    }

    fn attach(&mut self, source: Rc<dyn Source>) {
        self.reg.set_source(source);
    }

    fn set_no_delay(&mut self, on: bool) -> io::Result<()> {
        match self.kind {
            SocketKind::Tcp => self.reg.get_ref().set_tcp_nodelay(on),
            SocketKind::Unix => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    fn set_keepalive(&mut self, keepalive: Option<&Keepalive>) -> io::Result<()> {
        if self.kind != SocketKind::Tcp {
            return Err(io::ErrorKind::Unsupported.into());
        }
        let fd = self.reg.get_ref().as_fd();
        match keepalive {
            None => Ok(sockopt::set_socket_keepalive(fd, false)?),
            Some(k) => set_tcp_keepalive(fd, k),
        }
    }

    fn read_size(&self) -> usize {
        match self.kind {
            SocketKind::Tcp => torsion_reactor::READ_BUFFER_SIZE,
            SocketKind::Unix => UNIX_READ_SIZE,
        }
    }

    fn peer_credentials(&self) -> Option<PeerCredentials> {
        if self.kind != SocketKind::Unix {
            return None;
        }
        let cred = rustix::net::sockopt::socket_peercred(self.reg.get_ref().as_fd()).ok()?;
        Some(PeerCredentials {
            pid: Some(cred.pid.as_raw_nonzero().get()),
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
        })
    }
}

/// Reads from a Unix stream socket that may receive descriptors, on past messages that
/// carried some.
///
/// The kernel ends a read at a message with descriptors attached (`SCM_RIGHTS`), however many
/// bytes are queued behind it. The connection takes a short read to mean "empty", and with
/// edge-triggered readiness nothing would report those bytes again, so such a read goes on
/// into the rest of the buffer. The descriptors are closed unread, as a plain `read` does:
/// with no room for control data the kernel drops them and says so with `MSG_CTRUNC`.
/// (`recvmsg` costs about 0.1 µs more than `recv` per call here, which is why sockets that
/// refuse descriptors read with `recv`.)
fn read_unix(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    loop {
        let result = rustix::net::recvmsg(
            fd,
            &mut [IoSliceMut::new(&mut buf[filled..])],
            &mut RecvAncillaryBuffer::default(),
            RecvFlags::empty(),
        );
        match result {
            Ok(msg) => {
                filled += msg.bytes;
                let cut_at_descriptors = msg.flags.contains(ReturnFlags::CTRUNC);
                if msg.bytes == 0 || filled == buf.len() || !cut_at_descriptors {
                    return Ok(filled);
                }
            }
            // What was read is delivered; `WouldBlock` or the error comes back next time.
            Err(_) if filled > 0 => return Ok(filled),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A keepalive time as the kernel takes it: whole seconds, rounded up, at least one (the
/// kernel refuses zero, and rounding down would probe sooner than asked).
fn whole_seconds(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

/// Applies `k` to a TCP socket: `TCP_KEEPIDLE`, `TCP_KEEPINTVL` and `TCP_KEEPCNT` first, then
/// `SO_KEEPALIVE` on, so that a refused setting leaves keepalive as it was. The times are
/// rounded up to whole seconds (at least one) by [`whole_seconds`]; if the kernel refuses
/// one of the settings, those already changed are put back and the error is returned.
fn set_tcp_keepalive(fd: BorrowedFd<'_>, k: &Keepalive) -> io::Result<()> {
    let old = (
        sockopt::tcp_keepidle(fd)?,
        sockopt::tcp_keepintvl(fd)?,
        sockopt::tcp_keepcnt(fd)?,
    );
    let set = || -> rustix::io::Result<()> {
        sockopt::set_tcp_keepidle(fd, whole_seconds(k.idle))?;
        if let Some(interval) = k.interval {
            sockopt::set_tcp_keepintvl(fd, whole_seconds(interval))?;
        }
        if let Some(count) = k.count {
            sockopt::set_tcp_keepcnt(fd, count)?;
        }
        sockopt::set_socket_keepalive(fd, true)
    };
    set().map_err(|e| {
        // Best effort: these values were accepted before.
        let _ = sockopt::set_tcp_keepidle(fd, old.0);
        let _ = sockopt::set_tcp_keepintvl(fd, old.1);
        let _ = sockopt::set_tcp_keepcnt(fd, old.2);
        io::Error::from(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::mem::MaybeUninit;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use rustix::net::SendAncillaryMessage;

    #[test]
    fn keepalive_times_round_up_to_whole_seconds() {
        let ms = Duration::from_millis;
        assert_eq!(whole_seconds(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(whole_seconds(ms(1)), Duration::from_secs(1));
        assert_eq!(whole_seconds(ms(1000)), Duration::from_secs(1));
        assert_eq!(whole_seconds(ms(1001)), Duration::from_secs(2));
        assert_eq!(whole_seconds(ms(7500)), Duration::from_secs(8));
    }

    /// Sends `data` with a descriptor attached (`SCM_RIGHTS`).
    fn send_with_descriptor(s: &UnixStream, data: &[u8]) -> rustix::io::Result<usize> {
        let spare = std::fs::File::open("/dev/null").unwrap();
        let fds = [spare.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(s, &[IoSlice::new(data)], &mut control, SendFlags::empty())
    }

    /// Where the kernel takes `SO_PASSRIGHTS` off, a peer passing a descriptor is refused.
    #[test]
    fn a_socket_that_refuses_descriptors_fails_the_senders_sendmsg() {
        let (a, b) = UnixStream::pair().unwrap();
        let b = Socket::from(std::os::fd::OwnedFd::from(b));
        if !refuse_descriptors(&b) {
            return; // a kernel before 6.16: `read_unix` handles them (the next test)
        }
        let sent = send_with_descriptor(&a, b"hello");
        assert_eq!(sent, Err(rustix::io::Errno::PERM));
    }

    /// The path of sockets that may receive descriptors (kernels before 6.16).
    #[test]
    fn a_unix_read_goes_on_past_a_message_that_carried_a_descriptor() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        assert_eq!(send_with_descriptor(&a, b"hello"), Ok(5));
        (&a).write_all(b"world").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(read_unix(b.as_fd(), &mut buf).unwrap(), 10);
        assert_eq!(&buf[..10], b"helloworld");
        let rest = read_unix(b.as_fd(), &mut buf);
        assert_eq!(rest.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
