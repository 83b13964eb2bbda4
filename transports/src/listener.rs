//! Listening ports: the accept loop shared by TCP and Unix listeners.
//!
//! # Accepting
//!
//! Each readiness event accepts a batch of connections. The batch adapts: it doubles (up to
//! 1024) when a whole batch was waiting and halves (down to 8) when the queue ran dry early, so
//! a burst is drained in few turns while a trickle costs no extra `accept` calls.
//!
//! # Running out of descriptors (EMFILE/ENFILE)
//!
//! When `accept` fails for lack of descriptors or memory, the listener stops watching its
//! socket and retries after a pause that doubles from 10 ms to 1 s while the shortage lasts.
//! Pending clients wait in the kernel's backlog meanwhile (they are not accepted and dropped),
//! the reactor does not spin, and accepting resumes within one pause of descriptors freeing
//! up. A warning is logged once per shortage.
//!
//! # Reading at once
//!
//! Right after `connection_made`, an accepted connection is read once without waiting for
//! the poller: clients usually send their first bytes (a request, a TLS ClientHello) with or
//! just after the handshake, so they are often already there, and reading them now saves a
//! trip through the poller per connection (tokio's tasks do the same by starting out
//! "ready"). When nothing has arrived, the cost is one read that returns `EAGAIN`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::rc::{Rc, Weak};
use std::time::Duration;

use rustix::net::SocketFlags;
use socket2::Socket;
use torsion_reactor::{
    Address, CloseReason, ConnectionConfig, DelayedCall, Interest, Reactor, Readiness, Registered,
    SharedFactory, Source, StreamConnection, Transport, TransportHandle, WeakReactor,
};

use crate::connector::{any_to_address, sockaddr_to_address};
use crate::socket::{SocketIo, SocketKind};

const MIN_BATCH: usize = 8;
const MAX_BATCH: usize = 1024;
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);

enum Slot {
    Free,
    /// Accepted, `connection_made` running.
    Reserved,
    Live(TransportHandle),
}

/// The live connections accepted by one port, so a graceful stop can close them.
#[derive(Default)]
struct Connections {
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
}

pub(crate) struct Listener {
    me: Weak<Listener>,
    reactor: WeakReactor,
    reg: RefCell<Option<Registered<Socket>>>,
    kind: SocketKind,
    factory: SharedFactory,
    local: Address,
    /// The local address of accepted sockets is the listener's (no `getsockname` per accept)
    /// unless the listener is bound to a wildcard address.
    wildcard: bool,
    no_delay: bool,
    config: ConnectionConfig,
    batch: Cell<usize>,
    pause: Cell<Duration>,
    retry: RefCell<Option<DelayedCall>>,
    conns: RefCell<Connections>,
    unlink_on_stop: Option<crate::unix::SocketFile>,
}

impl Listener {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        reactor: &Reactor,
        socket: Socket,
        kind: SocketKind,
        factory: SharedFactory,
        local: Address,
        no_delay: bool,
        config: ConnectionConfig,
        unlink_on_stop: Option<crate::unix::SocketFile>,
    ) -> torsion_reactor::Result<ListeningPort> {
        let wildcard = local.socket_addr().is_some_and(|a| a.ip().is_unspecified());
        let reg = Registered::new(reactor, socket, Interest::READABLE)?;
        let listener = Rc::new_cyclic(|me| Listener {
            me: me.clone(),
            reactor: reactor.downgrade(),
            reg: RefCell::new(Some(reg)),
            kind,
            factory,
            local,
            wildcard,
            no_delay,
            config,
            batch: Cell::new(MIN_BATCH * 2),
            pause: Cell::new(FIRST_PAUSE),
            retry: RefCell::new(None),
            conns: RefCell::new(Connections::default()),
            unlink_on_stop,
        });
        if let Some(reg) = listener.reg.borrow().as_ref() {
            reg.set_source(listener.clone());
        }
        listener.factory.port_started();
        tracing::info!(local = %listener.local, "listening");
        Ok(ListeningPort { listener })
    }

    fn accept_batch(&self, reactor: &Reactor) {
        let batch = self.batch.get();
        let mut accepted = 0;
        while accepted < batch {
            let result = {
                let reg = self.reg.borrow();
                let Some(reg) = reg.as_ref() else { return };
                rustix::net::acceptfrom_with(
                    reg.get_ref().as_fd(),
                    SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                )
            };
            match result {
                Ok((fd, peer)) => {
                    accepted += 1;
                    self.pause.set(FIRST_PAUSE);
                    let socket = Socket::from(fd);
                    // A Unix client that bound a path or an abstract name shows it (Twisted's
                    // getPeer does); an unbound one is unnamed.
                    let peer = match (peer.and_then(any_to_address), self.kind) {
                        (Some(addr), _) => addr,
                        (None, SocketKind::Tcp) => self.local.clone(),
                        // Rare: a client path that fills all of `sun_path`. Ask again.
                        (None, SocketKind::Unix) => socket
                            .peer_addr()
                            .map(|a| sockaddr_to_address(&a))
                            .unwrap_or(Address::Unix(torsion_reactor::UnixAddress::Unnamed)),
                    };
                    self.accepted(reactor, socket, peer);
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => {}
                Err(
                    e @ (rustix::io::Errno::MFILE
                    | rustix::io::Errno::NFILE
                    | rustix::io::Errno::NOBUFS
                    | rustix::io::Errno::NOMEM),
                ) => {
                    self.back_off(reactor, io::Error::from(e));
                    return;
                }
                Err(e) => {
                    tracing::error!(local = %self.local, error = %io::Error::from(e), "accept failed");
                    break;
                }
            }
        }
        let next = if accepted == batch {
            (batch * 2).min(MAX_BATCH)
        } else if accepted < batch / 4 {
            (batch / 2).max(MIN_BATCH)
        } else {
            batch
        };
        self.batch.set(next);
    }

    fn back_off(&self, reactor: &Reactor, err: io::Error) {
        let pause = self.pause.get();
        if pause == FIRST_PAUSE {
            tracing::warn!(local = %self.local, error = %err, "out of descriptors: pausing accept until some are free");
        }
        if let Some(reg) = self.reg.borrow().as_ref() {
            let _ = reg.set_interest(Interest::NONE);
        }
        self.pause.set((pause * 2).min(MAX_PAUSE));
        let weak = self.me.clone();
        let call = reactor.call_later(pause, move |_| {
            if let Some(listener) = weak.upgrade() {
                if let Some(reg) = listener.reg.borrow().as_ref() {
                    let _ = reg.set_interest(Interest::READABLE);
                }
            }
        });
        *self.retry.borrow_mut() = Some(call);
    }

    fn accepted(&self, reactor: &Reactor, socket: Socket, peer: Address) {
        let local = if self.wildcard {
            socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map(Address::Inet)
                .unwrap_or_else(|| self.local.clone())
        } else {
            self.local.clone()
        };
        let protocol = match self.factory.build(&peer, &local) {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::debug!(peer = %peer, local = %local, "factory refused the connection");
                return;
            }
            Err(msg) => {
                tracing::error!(peer = %peer, panic = %msg, "factory panicked; connection closed");
                return;
            }
        };
        if self.no_delay && self.kind == SocketKind::Tcp {
            let _ = socket.set_tcp_nodelay(true);
        }
        let reg = match Registered::new_edge_triggered(reactor, socket, Interest::READABLE) {
            Ok(reg) => reg,
            Err(e) => {
                tracing::error!(peer = %peer, error = %e, "could not register an accepted connection");
                return;
            }
        };
        tracing::debug!(peer = %peer, local = %local, "accepted");
        let slot = self.reserve_slot();
        let weak = self.me.clone();
        let conn = StreamConnection::start(
            reactor,
            SocketIo::new(reg, self.kind),
            protocol,
            peer,
            local,
            self.config.clone(),
            Some(Box::new(move |_reason: &CloseReason| {
                if let Some(listener) = weak.upgrade() {
                    listener.release_slot(slot);
                }
            })),
        );
        // A connection that already closed during `connection_made` released its slot.
        {
            let mut conns = self.conns.borrow_mut();
            if matches!(conns.slots[slot], Slot::Reserved) {
                conns.slots[slot] = Slot::Live(conn.handle());
            }
        }
        conn.ready(Readiness::READABLE);
    }

    fn reserve_slot(&self) -> usize {
        let mut c = self.conns.borrow_mut();
        c.live += 1;
        match c.free.pop() {
            Some(i) => {
                c.slots[i] = Slot::Reserved;
                i
            }
            None => {
                c.slots.push(Slot::Reserved);
                c.slots.len() - 1
            }
        }
    }

    fn release_slot(&self, slot: usize) {
        let mut c = self.conns.borrow_mut();
        if let Some(s) = c.slots.get_mut(slot) {
            if !matches!(s, Slot::Free) {
                *s = Slot::Free;
                c.free.push(slot);
                c.live -= 1;
            }
        }
    }

    fn stop(&self) {
        let reg = self.reg.borrow_mut().take();
        if reg.is_none() {
            return;
        }
        if let Some(retry) = self.retry.borrow_mut().take() {
            retry.cancel();
        }
        drop(reg);
        if let Some(file) = &self.unlink_on_stop {
            file.remove();
        }
        tracing::info!(local = %self.local, "stopped listening");
        self.factory.port_stopped();
    }
}

impl Source for Listener {
    fn reactor_closing(&self) {
        self.stop();
    }

    fn reactor_dropped(&self) {
        // The socket closes here, so `stop_listening` can no longer tell the port is open:
        // remove its socket file now (no user callback runs) or it would be left behind.
        if self.reg.borrow_mut().take().is_some() {
            if let Some(file) = &self.unlink_on_stop {
                file.remove();
            }
        }
        // Every accepted connection is closed by the reactor too.
        *self.conns.borrow_mut() = Connections::default();
    }

    fn ready(&self, _readiness: Readiness) {
        if let Some(reactor) = self.reactor.upgrade() {
            self.accept_batch(&reactor);
        }
    }
}

/// A listening port returned by `listen_tcp`, `listen_unix` and friends (Twisted's
/// `IListeningPort`).
///
/// The port keeps listening when this handle is dropped; call
/// [`stop_listening`](ListeningPort::stop_listening) to close it.
#[derive(Clone)]
pub struct ListeningPort {
    listener: Rc<Listener>,
}

impl ListeningPort {
    /// The address the port is bound to, with the real port number when bound to port 0.
    pub fn local_address(&self) -> Address {
        self.listener.local.clone()
    }

    /// Stops accepting and closes the listening socket (and removes a Unix socket file this
    /// port created). Connections already accepted stay open. Idempotent.
    pub fn stop_listening(&self) {
        self.listener.stop();
    }

    /// `true` until [`stop_listening`](ListeningPort::stop_listening).
    pub fn is_listening(&self) -> bool {
        self.listener.reg.borrow().is_some()
    }

    /// How many connections accepted by this port are open.
    pub fn connection_count(&self) -> usize {
        self.listener.conns.borrow().live
    }

    /// Closes every connection accepted by this port gracefully (`lose_connection`).
    pub fn lose_connections(&self) {
        let handles: Vec<TransportHandle> = self
            .listener
            .conns
            .borrow()
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Live(h) => Some(h.clone()),
                _ => None,
            })
            .collect();
        for h in handles {
            h.lose_connection();
        }
    }
}

impl fmt::Debug for ListeningPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListeningPort")
            .field("local", &self.listener.local)
            .field("listening", &self.is_listening())
            .field("connections", &self.connection_count())
            .finish()
    }
}
