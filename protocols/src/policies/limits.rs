//! [`ConnectionLimits`]: cap open connections, in total and per peer address.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;

use torsion_reactor::{Address, CloseReason, Factory, Protocol, SharedFactory, Transport};

use super::wrap::build;

#[derive(Default, Debug)]
struct Counts {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// Live connection counts of a [`ConnectionLimits`] factory; cheap to clone.
#[derive(Clone, Default)]
pub struct ConnectionStats {
    counts: Rc<RefCell<Counts>>,
}

impl ConnectionStats {
    /// Connections open now.
    pub fn total(&self) -> usize {
        self.counts.borrow().total
    }

    /// Connections open now from `ip`.
    pub fn from_peer(&self, ip: IpAddr) -> usize {
        let ip = ip.to_canonical();
        self.counts.borrow().per_peer.get(&ip).copied().unwrap_or(0)
    }
}

impl fmt::Debug for ConnectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.counts.borrow();
        f.debug_struct("ConnectionStats")
            .field("total", &c.total)
            .field("peers", &c.per_peer.len())
            .finish()
    }
}

/// The peer key: the IP address (any port), an IPv4-mapped IPv6 address (an IPv4 client of a
/// dual-stack listener) as the IPv4 one. Unix and in-memory peers have none and count towards
/// the total only.
fn peer_ip(peer: &Address) -> Option<IpAddr> {
    peer.socket_addr().map(|a| a.ip().to_canonical())
}

/// Frees a connection's slot exactly once, at `connection_lost` or, failing that, on drop.
struct Slot {
    counts: Rc<RefCell<Counts>>,
    ip: Option<IpAddr>,
    released: bool,
}

impl Slot {
    fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        let mut c = self.counts.borrow_mut();
        c.total -= 1;
        if let Some(ip) = self.ip {
            if let Some(n) = c.per_peer.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    c.per_peer.remove(&ip);
                }
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// A protocol holding one slot of a [`ConnectionLimits`].
struct Counted {
    inner: Box<dyn Protocol>,
    slot: Slot,
}

impl Protocol for Counted {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        self.inner.connection_made(transport)
    }
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.inner.data_received(transport, data)
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        self.slot.release();
        self.inner.connection_lost(reason)
    }
    fn half_close(&self) -> bool {
        self.inner.half_close()
    }
    fn read_connection_lost(&mut self, transport: &mut dyn Transport) {
        self.inner.read_connection_lost(transport)
    }
    fn write_connection_lost(&mut self, transport: &mut dyn Transport) {
        self.inner.write_connection_lost(transport)
    }
    fn pause_producing(&mut self, transport: &mut dyn Transport) {
        self.inner.pause_producing(transport)
    }
    fn resume_producing(&mut self, transport: &mut dyn Transport) {
        self.inner.resume_producing(transport)
    }
}

/// A factory wrapper that caps open connections, in total and per peer IP address (Twisted's
/// `LimitConnectionsByPeer` and `LimitTotalConnectionsFactory` in one). A connection over a
/// limit is refused at accept: [`build_protocol`](Factory::build_protocol) returns `None`, so
/// the listener closes the socket before any protocol runs. A slot is freed when the
/// connection's `connection_lost` runs.
///
/// ```
/// use torsion_protocols::policies::ConnectionLimits;
/// use torsion_protocols::wire::Echo;
/// use torsion_reactor::{Address, Factory};
///
/// let peer: Address = "192.0.2.7:40000".parse::<std::net::SocketAddr>().unwrap().into();
/// let local: Address = "127.0.0.1:7".parse::<std::net::SocketAddr>().unwrap().into();
/// let mut limits = ConnectionLimits::new(|_: &Address| Echo, Some(100), Some(2));
/// let a = limits.build_protocol(&peer, &local);
/// let b = limits.build_protocol(&peer, &local);
/// assert!(a.is_some() && b.is_some());
/// assert!(limits.build_protocol(&peer, &local).is_none()); // third from the same peer
/// drop(a); // (a real connection frees its slot in connection_lost)
/// assert!(limits.build_protocol(&peer, &local).is_some());
/// ```
pub struct ConnectionLimits {
    inner: SharedFactory,
    max_total: Option<usize>,
    max_per_peer: Option<usize>,
    stats: ConnectionStats,
}

impl ConnectionLimits {
    /// Wraps `factory`; `None` means no limit of that kind.
    pub fn new(
        factory: impl Into<SharedFactory>,
        max_total: Option<usize>,
        max_per_peer: Option<usize>,
    ) -> Self {
        ConnectionLimits {
            inner: factory.into(),
            max_total,
            max_per_peer,
            stats: ConnectionStats::default(),
        }
    }

    /// The live counts (clone it before handing the factory to a listener).
    pub fn stats(&self) -> ConnectionStats {
        self.stats.clone()
    }
}

impl Factory for ConnectionLimits {
    fn build_protocol(&mut self, peer: &Address, local: &Address) -> Option<Box<dyn Protocol>> {
        let ip = peer_ip(peer);
        {
            let c = self.stats.counts.borrow();
            if self.max_total.is_some_and(|max| c.total >= max) {
                tracing::debug!(peer = %peer, open = c.total, "connection refused: total connection limit reached");
                return None;
            }
            if let (Some(max), Some(ip)) = (self.max_per_peer, ip) {
                let open = c.per_peer.get(&ip).copied().unwrap_or(0);
                if open >= max {
                    tracing::debug!(peer = %peer, open, "connection refused: per-peer connection limit reached");
                    return None;
                }
            }
        }
        let inner = build(&self.inner, peer, local)?;
        {
            let mut c = self.stats.counts.borrow_mut();
            c.total += 1;
            if let Some(ip) = ip {
                *c.per_peer.entry(ip).or_insert(0) += 1;
            }
        }
        Some(Box::new(Counted {
            inner,
            slot: Slot {
                counts: self.stats.counts.clone(),
                ip,
                released: false,
            },
        }))
    }

    fn start_factory(&mut self) {
        self.inner.port_started();
    }

    fn stop_factory(&mut self) {
        self.inner.port_stopped();
    }
}

impl fmt::Debug for ConnectionLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionLimits")
            .field("max_total", &self.max_total)
            .field("max_per_peer", &self.max_per_peer)
            .field("stats", &self.stats)
            .finish()
    }
}
