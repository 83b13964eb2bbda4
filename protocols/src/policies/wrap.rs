//! The plumbing behind the protocol wrappers: a [`Transport`] that wraps the connection's own,
//! so a policy sees what the inner protocol writes and how it pauses reading (Twisted's
//! `ProtocolWrapper`), and [`WrappingFactory`].

use std::fmt;
use std::io::{self, IoSlice};
use std::rc::{Rc, Weak};

use torsion_reactor::{
    Address, CloseReason, Factory, Keepalive, PeerCredentials, Producer, Protocol, ProtocolWrapper,
    Reactor, SharedFactory, Transport, TransportHandle,
};

/// What a policy intercepts on the transport it hands to the inner protocol. Every method
/// defaults to passing the call through.
pub(crate) trait Hooks: 'static {
    fn write(&self, inner: &dyn Transport, data: &[u8]) {
        inner.write(data)
    }
    fn write_vectored(&self, inner: &dyn Transport, bufs: &[IoSlice<'_>]) {
        inner.write_vectored(bufs)
    }
    fn lose_connection(&self, inner: &dyn Transport) {
        inner.lose_connection()
    }
    fn lose_write_connection(&self, inner: &dyn Transport) {
        inner.lose_write_connection()
    }
    fn pause_reading(&self, inner: &dyn Transport) {
        inner.pause_reading()
    }
    fn resume_reading(&self, inner: &dyn Transport) {
        inner.resume_reading()
    }
    fn register_producer(
        &self,
        inner: &dyn Transport,
        producer: Box<dyn Producer>,
        streaming: bool,
    ) {
        inner.register_producer(producer, streaming)
    }
    fn unregister_producer(&self, inner: &dyn Transport) {
        inner.unregister_producer()
    }
}

/// The connection's transport with a policy's hooks in front.
///
/// [`handle`](Transport::handle) returns a handle to this wrapper (always the same one), so
/// writes made later through a stored handle pass through the policy too.
pub(crate) struct Hooked<H> {
    pub(crate) inner: TransportHandle,
    pub(crate) hooks: H,
    me: Weak<Self>,
}

impl<H: Hooks> Hooked<H> {
    pub(crate) fn new(inner: TransportHandle, hooks: H) -> Rc<Self> {
        Rc::new_cyclic(|me| Hooked {
            inner,
            hooks,
            me: me.clone(),
        })
    }
}

impl<H: Hooks> Transport for Hooked<H> {
    fn write(&self, data: &[u8]) {
        self.hooks.write(&*self.inner, data)
    }
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) {
        self.hooks.write_vectored(&*self.inner, bufs)
    }
    fn lose_connection(&self) {
        self.hooks.lose_connection(&*self.inner)
    }
    fn lose_write_connection(&self) {
        self.hooks.lose_write_connection(&*self.inner)
    }
    fn abort_connection(&self) {
        self.inner.abort_connection()
    }
    fn peer_address(&self) -> Address {
        self.inner.peer_address()
    }
    fn local_address(&self) -> Address {
        self.inner.local_address()
    }
    fn pause_reading(&self) {
        self.hooks.pause_reading(&*self.inner)
    }
    fn resume_reading(&self) {
        self.hooks.resume_reading(&*self.inner)
    }
    fn set_write_buffer_limits(&self, high: usize, low: usize) -> io::Result<()> {
        self.inner.set_write_buffer_limits(high, low)
    }
    fn set_no_delay(&self, on: bool) -> io::Result<()> {
        self.inner.set_no_delay(on)
    }
    fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        self.inner.set_keepalive(keepalive)
    }
    fn peer_credentials(&self) -> Option<PeerCredentials> {
        self.inner.peer_credentials()
    }
    fn register_producer(&self, producer: Box<dyn Producer>, streaming: bool) {
        self.hooks
            .register_producer(&*self.inner, producer, streaming)
    }
    fn unregister_producer(&self) {
        self.hooks.unregister_producer(&*self.inner)
    }
    fn buffered(&self) -> usize {
        self.inner.buffered()
    }
    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }
    fn is_fully_closing(&self) -> bool {
        self.inner.is_fully_closing()
    }
    // A layer (STARTTLS) then wraps the connection's protocol, this policy included: the
    // policy goes on seeing plaintext, through its handle of the connection, which follows
    // the layer.
    fn wrap_protocol(&self, wrap: ProtocolWrapper) -> bool {
        self.inner.wrap_protocol(wrap)
    }
    fn redirect_handles(&self, to: TransportHandle) {
        self.inner.redirect_handles(to)
    }
    fn handle(&self) -> TransportHandle {
        match self.me.upgrade() {
            Some(me) => TransportHandle::new(me),
            None => self.inner.clone(),
        }
    }
    fn reactor(&self) -> Reactor {
        self.inner.reactor()
    }
    fn abort_with(&self, reason: CloseReason) {
        self.inner.abort_with(reason)
    }
    fn wrapped(&self) -> Option<TransportHandle> {
        Some(self.inner.clone())
    }
}

/// Forwards the `Protocol` callbacks a policy does not change to `self.inner`, with the
/// hooked transport (`self.transport(t)`) in place of the connection's.
macro_rules! forward_protocol_rest {
    () => {
        fn half_close(&self) -> bool {
            self.inner.half_close()
        }
        fn read_connection_lost(&mut self, transport: &mut dyn torsion_reactor::Transport) {
            let mut t = $crate::policies::wrap::pick(&self.hooked, transport);
            self.inner.read_connection_lost(&mut t)
        }
        fn write_connection_lost(&mut self, transport: &mut dyn torsion_reactor::Transport) {
            let mut t = $crate::policies::wrap::pick(&self.hooked, transport);
            self.inner.write_connection_lost(&mut t)
        }
        fn pause_producing(&mut self, transport: &mut dyn torsion_reactor::Transport) {
            let mut t = $crate::policies::wrap::pick(&self.hooked, transport);
            self.inner.pause_producing(&mut t)
        }
        fn resume_producing(&mut self, transport: &mut dyn torsion_reactor::Transport) {
            let mut t = $crate::policies::wrap::pick(&self.hooked, transport);
            self.inner.resume_producing(&mut t)
        }
    };
}
pub(crate) use forward_protocol_rest;

/// The hooked transport once the connection is made, else the connection's own.
#[inline]
pub(crate) fn pick<'a, H: Hooks>(
    hooked: &'a Option<Rc<Hooked<H>>>,
    transport: &'a mut dyn Transport,
) -> &'a dyn Transport {
    match hooked {
        Some(h) => &**h,
        None => transport,
    }
}

type WrapFn = Box<dyn FnMut(Box<dyn Protocol>, &Address) -> Box<dyn Protocol>>;

/// A factory that wraps every protocol another factory builds (Twisted's
/// `WrappingFactory`): the way to put a policy in front of any service.
///
/// ```
/// use std::time::Duration;
/// use torsion_protocols::policies::{IdleTimeout, WrappingFactory};
/// use torsion_protocols::wire::Echo;
/// use torsion_reactor::{Address, Factory, Protocol};
///
/// let factory = WrappingFactory::new(
///     |_: &Address| Echo,
///     |protocol, _peer| Box::new(IdleTimeout::new(protocol, Duration::from_secs(60))),
/// );
/// fn assert_factory(_: impl Factory) {}
/// assert_factory(factory);
/// ```
pub struct WrappingFactory {
    inner: SharedFactory,
    wrap: WrapFn,
}

impl WrappingFactory {
    /// Wraps each protocol `factory` builds with `wrap(protocol, peer)`.
    pub fn new(
        factory: impl Into<SharedFactory>,
        wrap: impl FnMut(Box<dyn Protocol>, &Address) -> Box<dyn Protocol> + 'static,
    ) -> Self {
        WrappingFactory {
            inner: factory.into(),
            wrap: Box::new(wrap),
        }
    }
}

impl Factory for WrappingFactory {
    fn build_protocol(&mut self, peer: &Address, local: &Address) -> Option<Box<dyn Protocol>> {
        let protocol = build(&self.inner, peer, local)?;
        Some((self.wrap)(protocol, peer))
    }

    fn start_factory(&mut self) {
        self.inner.port_started();
    }

    fn stop_factory(&mut self) {
        self.inner.port_stopped();
    }
}

impl fmt::Debug for WrappingFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappingFactory")
            .field("inner", &self.inner)
            .finish()
    }
}

/// Builds from a shared factory; a panicking factory refuses the connection.
pub(crate) fn build(
    factory: &SharedFactory,
    peer: &Address,
    local: &Address,
) -> Option<Box<dyn Protocol>> {
    match factory.build(peer, local) {
        Ok(p) => p,
        Err(msg) => {
            tracing::error!(peer = %peer, panic = %msg, "wrapped factory panicked; connection refused");
            None
        }
    }
}
