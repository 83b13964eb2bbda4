//! [`StreamIo`] over a registered, non-blocking stream socket (TCP or Unix).

use std::io::{self, IoSlice, Read};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendFlags};
use socket2::{Socket, TcpKeepalive};
use torsion_reactor::{Interest, Keepalive, PeerCredentials, Registered, Source, StreamIo};

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
pub(crate) struct SocketIo {
    pub(crate) reg: Registered<Socket>,
    pub(crate) kind: SocketKind,
}

impl StreamIo for SocketIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
        let socket = self.reg.get_ref();
        match keepalive {
            None => socket.set_keepalive(false),
            Some(k) => {
                let mut params = TcpKeepalive::new().with_time(k.idle);
                if let Some(interval) = k.interval {
                    params = params.with_interval(interval);
                }
                if let Some(count) = k.count {
                    params = params.with_retries(count);
                }
                socket.set_tcp_keepalive(&params)
            }
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
