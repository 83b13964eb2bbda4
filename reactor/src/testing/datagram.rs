//! An in-memory datagram network: datagram protocols without sockets.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::ops::Deref;
use std::rc::{Rc, Weak};

use crate::address::Address;
use crate::datagram::{
    DatagramError, DatagramProtocol, DatagramTransport, MulticastInterface,
    DEFAULT_MAX_DATAGRAM_SIZE,
};
use crate::panic::catch_unwind_message;
use crate::reactor::{Reactor, WeakReactor};

/// The bound sockets; the network owns them, so a socket stays bound (and keeps receiving)
/// after its [`MemoryDatagramPort`] handle is dropped, as a real `DatagramPort` does.
type Sockets = Rc<RefCell<HashMap<Address, Rc<MemorySocket>>>>;

/// A network of in-memory datagram sockets on one reactor.
///
/// Each [`bind`](MemoryNetwork::bind) gets a fresh [`Address::Memory`]. A datagram sent to a
/// bound address is delivered on a later reactor turn, whole; to an unbound address it is lost
/// (as UDP would lose it), and a socket *connected* to that address is told through
/// `connection_refused` (as an ICMP port-unreachable would).
///
/// ```
/// use torsion_reactor::prelude::*;
/// use torsion_reactor::testing::{MemoryNetwork, MemoryReactor};
///
/// struct Echo;
/// impl DatagramProtocol for Echo {
///     fn datagram_received(&mut self, t: &mut dyn DatagramTransport, d: &[u8], from: &Address) {
///         let _ = t.write_to(d, from);
///     }
/// }
/// # struct Sink(std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>);
/// # impl DatagramProtocol for Sink {
/// #     fn datagram_received(&mut self, _: &mut dyn DatagramTransport, d: &[u8], _: &Address) {
/// #         self.0.borrow_mut().push(d.to_vec());
/// #     }
/// # }
///
/// let mr = MemoryReactor::new();
/// let net = MemoryNetwork::new(mr.reactor());
/// let server = net.bind(Echo);
/// let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
/// let client = net.bind(Sink(got.clone()));
/// client.write_to(b"ping", &server.local_address()).unwrap();
/// mr.run_until_idle();
/// assert_eq!(*got.borrow(), vec![b"ping".to_vec()]);
/// ```
#[derive(Clone)]
pub struct MemoryNetwork {
    reactor: Reactor,
    sockets: Sockets,
}

impl MemoryNetwork {
    /// An empty network on `reactor`.
    pub fn new(reactor: &Reactor) -> Self {
        MemoryNetwork {
            reactor: reactor.clone(),
            sockets: Rc::new(RefCell::new(HashMap::new())),
        }
    }

    /// Binds `protocol` to a fresh address; `start_protocol` runs at once.
    pub fn bind(&self, protocol: impl DatagramProtocol) -> MemoryDatagramPort {
        let addr = super::memory_address();
        let socket = Rc::new_cyclic(|me| MemorySocket {
            me: me.clone(),
            reactor: self.reactor.downgrade(),
            addr: addr.clone(),
            sockets: Rc::downgrade(&self.sockets),
            protocol: RefCell::new(Some(Box::new(protocol))),
            peer: RefCell::new(None),
            max_size: Cell::new(DEFAULT_MAX_DATAGRAM_SIZE),
            closed: Cell::new(false),
        });
        self.sockets.borrow_mut().insert(addr, Rc::clone(&socket));
        socket.call(|p, t| p.start_protocol(t));
        MemoryDatagramPort(socket)
    }
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork")
            .field("sockets", &self.sockets.borrow().len())
            .finish()
    }
}

/// A socket bound on a [`MemoryNetwork`]; dereferences to its [`DatagramTransport`].
/// It stays bound until `stop_listening`, even when every handle to it is dropped.
#[derive(Clone)]
pub struct MemoryDatagramPort(Rc<MemorySocket>);

impl Deref for MemoryDatagramPort {
    type Target = dyn DatagramTransport;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::fmt::Debug for MemoryDatagramPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDatagramPort")
            .field("address", &self.0.addr)
            .finish()
    }
}

struct MemorySocket {
    me: Weak<MemorySocket>,
    reactor: WeakReactor,
    addr: Address,
    sockets: Weak<RefCell<HashMap<Address, Rc<MemorySocket>>>>,
    protocol: RefCell<Option<Box<dyn DatagramProtocol>>>,
    peer: RefCell<Option<Address>>,
    max_size: Cell<usize>,
    closed: Cell<bool>,
}

impl MemorySocket {
    fn call(&self, f: impl FnOnce(&mut dyn DatagramProtocol, &mut dyn DatagramTransport)) {
        let Some(mut protocol) = self.protocol.borrow_mut().take() else {
            return;
        };
        let mut me: &Self = self;
        if let Err(msg) = catch_unwind_message(|| f(&mut *protocol, &mut me)) {
            tracing::error!(panic = %msg, "datagram protocol panicked; datagram dropped");
        }
        if self.protocol.borrow().is_none() {
            *self.protocol.borrow_mut() = Some(protocol);
        }
    }

    fn deliver(&self, data: &[u8], from: &Address) {
        if self.closed.get() {
            return;
        }
        if let Some(peer) = self.peer.borrow().as_ref() {
            if peer != from {
                return; // connected sockets only hear their peer
            }
        }
        self.call(|p, t| p.datagram_received(t, data, from));
    }

    fn send(&self, data: &[u8], to: &Address) -> Result<(), DatagramError> {
        if self.closed.get() {
            return Err(DatagramError::Closed);
        }
        if data.len() > self.max_size.get() {
            return Err(DatagramError::TooLarge {
                size: data.len(),
                limit: self.max_size.get(),
            });
        }
        if !matches!(to, Address::Memory(_)) {
            return Err(DatagramError::WrongAddress(to.clone()));
        }
        let Some(reactor) = self.reactor.upgrade() else {
            return Err(DatagramError::Closed);
        };
        let target = self
            .sockets
            .upgrade()
            .and_then(|s| s.borrow().get(to).cloned());
        let me = self.me.upgrade().expect("alive");
        match target {
            Some(target) => {
                let data = data.to_vec();
                let from = self.addr.clone();
                reactor.call_soon(move |_| target.deliver(&data, &from));
            }
            None if self.peer.borrow().as_ref() == Some(to) => {
                reactor.call_soon(move |_| me.call(|p, t| p.connection_refused(t)));
            }
            None => {} // lost, as a UDP datagram to a closed port
        }
        Ok(())
    }
}

impl DatagramTransport for MemorySocket {
    fn write_to(&self, data: &[u8], to: &Address) -> Result<(), DatagramError> {
        self.send(data, to)
    }

    fn write(&self, data: &[u8]) -> Result<(), DatagramError> {
        let peer = self.peer.borrow().clone();
        match peer {
            Some(peer) => self.send(data, &peer),
            None => Err(DatagramError::NotConnected),
        }
    }

    fn connect(&self, to: &Address) -> io::Result<()> {
        *self.peer.borrow_mut() = Some(to.clone());
        Ok(())
    }

    fn local_address(&self) -> Address {
        self.addr.clone()
    }

    fn peer_address(&self) -> Option<Address> {
        self.peer.borrow().clone()
    }

    fn max_datagram_size(&self) -> usize {
        self.max_size.get()
    }

    fn set_max_datagram_size(&self, size: usize) {
        self.max_size.set(size);
    }

    fn dropped(&self) -> u64 {
        0
    }

    fn stop_listening(&self) {
        if self.closed.replace(true) {
            return;
        }
        if let Some(sockets) = self.sockets.upgrade() {
            let removed = sockets.borrow_mut().remove(&self.addr);
            drop(removed); // outside the borrow
        }
        if let (Some(reactor), Some(me)) = (self.reactor.upgrade(), self.me.upgrade()) {
            reactor.call_soon(move |_| {
                if let Some(mut p) = me.protocol.borrow_mut().take() {
                    if let Err(msg) = catch_unwind_message(|| p.stop_protocol()) {
                        tracing::error!(panic = %msg, "stop_protocol panicked");
                    }
                }
            });
        }
    }

    fn join_group(&self, _group: IpAddr, _interface: MulticastInterface) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the in-memory network has no multicast",
        ))
    }

    fn reactor(&self) -> Reactor {
        self.reactor
            .upgrade()
            .expect("memory sockets are only used while their reactor exists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryReactor;

    #[derive(Default)]
    struct Log {
        got: Vec<(Vec<u8>, Address)>,
        refused: usize,
        stopped: usize,
    }
    struct Rec(Rc<RefCell<Log>>);
    impl DatagramProtocol for Rec {
        fn datagram_received(&mut self, _: &mut dyn DatagramTransport, d: &[u8], from: &Address) {
            self.0.borrow_mut().got.push((d.to_vec(), from.clone()));
        }
        fn connection_refused(&mut self, _: &mut dyn DatagramTransport) {
            self.0.borrow_mut().refused += 1;
        }
        fn stop_protocol(&mut self) {
            self.0.borrow_mut().stopped += 1;
        }
    }

    #[test]
    fn connected_socket_filters_and_learns_refusals() {
        let mr = MemoryReactor::new();
        let net = MemoryNetwork::new(mr.reactor());
        let (a_log, b_log) = (Rc::default(), Rc::default());
        let a = net.bind(Rec(Rc::clone(&a_log)));
        let b = net.bind(Rec(Rc::clone(&b_log)));
        let c = net.bind(Rec(Rc::default()));
        a.connect(&b.local_address()).unwrap();
        c.write_to(b"from c", &a.local_address()).unwrap();
        b.write_to(b"from b", &a.local_address()).unwrap();
        mr.run_until_idle();
        {
            let got = &a_log.borrow().got;
            assert_eq!(got.len(), 1, "only the connected peer is heard");
            assert_eq!(got[0], (b"from b".to_vec(), b.local_address()));
        }
        b.stop_listening();
        mr.run_until_idle();
        assert_eq!(b_log.borrow().stopped, 1);
        a.write(b"anyone?").unwrap();
        mr.run_until_idle();
        assert_eq!(a_log.borrow().refused, 1);
        assert!(matches!(
            a.write_to(&vec![0; 70_000], &c.local_address()),
            Err(DatagramError::TooLarge { size: 70_000, .. })
        ));
    }
}
