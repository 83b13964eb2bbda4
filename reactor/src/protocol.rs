//! The contracts users implement: [`Protocol`], [`Factory`] and [`ClientFactory`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;

use crate::address::Address;
use crate::panic::catch_unwind_message;
use crate::reason::CloseReason;
use crate::transport::Transport;

/// The per-connection logic: receives bytes and events, writes through its transport.
///
/// One protocol object is built per connection by a [`Factory`]. Callbacks run on the reactor
/// thread, one at a time, never re-entrantly:
///
/// - [`connection_made`](Protocol::connection_made) first;
/// - [`data_received`](Protocol::data_received) for each chunk read, in order. Chunks follow
///   no message boundaries: one write by the peer may arrive split down to single bytes, and
///   several may arrive joined;
/// - [`connection_lost`](Protocol::connection_lost) exactly once, last.
///
/// ```
/// use torsion_reactor::{Protocol, Transport};
///
/// /// Echo (RFC 862): send back whatever arrives.
/// struct Echo;
///
/// impl Protocol for Echo {
///     fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
///         transport.write(data);
///     }
/// }
/// ```
///
/// # Flow control
///
/// When the transport's write buffer rises above its high watermark the protocol's
/// [`pause_producing`](Protocol::pause_producing) runs, and
/// [`resume_producing`](Protocol::resume_producing) once it is back at or below the low
/// watermark.
/// The defaults pause and resume *reading* from this connection, which is the right
/// back-pressure for any protocol that writes in response to what it reads (an echo server
/// facing a client that does not read stops reading too, and its memory stays bounded).
///
/// # Half-close
///
/// By default, the peer's FIN (end of its data) makes the transport finish writing and close:
/// `connection_lost(Done)` follows. A protocol that wants to keep writing after the peer's
/// FIN returns `true` from [`half_close`](Protocol::half_close) and then receives
/// [`read_connection_lost`](Protocol::read_connection_lost) instead.
pub trait Protocol: 'static {
    /// The connection is up; `transport` is ready for writes.
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        let _ = transport;
    }

    /// Bytes arrived from the peer.
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]);

    /// The connection is closed, for `reason`; called exactly once, and last (also for a
    /// connection still open when its reactor is dropped: then with
    /// [`CloseReason::Aborted`]).
    fn connection_lost(&mut self, reason: CloseReason) {
        let _ = reason;
    }

    /// Opt in to half-close (see the trait docs). Read once, at connection start.
    fn half_close(&self) -> bool {
        false
    }

    /// The peer sent FIN and [`half_close`](Protocol::half_close) is on: no more data will
    /// arrive, but writing still works until `lose_connection`.
    fn read_connection_lost(&mut self, transport: &mut dyn Transport) {
        transport.lose_connection();
    }

    /// Our side's FIN was sent after [`Transport::lose_write_connection`]. When both
    /// directions have ended, this and `read_connection_lost` both come (in the order they
    /// happened), then `connection_lost`.
    fn write_connection_lost(&mut self, transport: &mut dyn Transport) {
        let _ = transport;
    }

    /// The write buffer rose above the high watermark: stop writing for now.
    /// Default: pause reading from this connection.
    fn pause_producing(&mut self, transport: &mut dyn Transport) {
        transport.pause_reading();
    }

    /// The write buffer fell to the low watermark or below: writing may resume.
    /// Default: resume reading.
    fn resume_producing(&mut self, transport: &mut dyn Transport) {
        transport.resume_reading();
    }
}

impl Protocol for Box<dyn Protocol> {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        (**self).connection_made(transport)
    }
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        (**self).data_received(transport, data)
    }
    fn connection_lost(&mut self, reason: CloseReason) {
        (**self).connection_lost(reason)
    }
    fn half_close(&self) -> bool {
        (**self).half_close()
    }
    fn read_connection_lost(&mut self, transport: &mut dyn Transport) {
        (**self).read_connection_lost(transport)
    }
    fn write_connection_lost(&mut self, transport: &mut dyn Transport) {
        (**self).write_connection_lost(transport)
    }
    fn pause_producing(&mut self, transport: &mut dyn Transport) {
        (**self).pause_producing(transport)
    }
    fn resume_producing(&mut self, transport: &mut dyn Transport) {
        (**self).resume_producing(transport)
    }
}

/// What a factory closure may return: a protocol, or `Option` of one (`None` refuses the
/// connection).
pub trait IntoProtocol {
    /// Boxes the protocol, or `None` to refuse.
    fn into_protocol(self) -> Option<Box<dyn Protocol>>;
}

impl<P: Protocol> IntoProtocol for P {
    fn into_protocol(self) -> Option<Box<dyn Protocol>> {
        Some(Box::new(self))
    }
}

impl<P: Protocol> IntoProtocol for Option<P> {
    fn into_protocol(self) -> Option<Box<dyn Protocol>> {
        self.map(|p| Box::new(p) as Box<dyn Protocol>)
    }
}

/// Builds one protocol per accepted connection (Twisted's `Factory`).
///
/// A closure `FnMut(&Address) -> P` (or `-> Option<P>`) taking the peer address is a factory:
///
/// ```
/// use torsion_reactor::{Address, Factory, Protocol, Transport};
/// # struct Echo;
/// # impl Protocol for Echo { fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) } }
/// fn assert_factory(_: impl Factory) {}
/// assert_factory(|_peer: &Address| Echo);
/// // Refuse everything but loopback peers:
/// assert_factory(|peer: &Address| {
///     peer.socket_addr().filter(|a| a.ip().is_loopback()).map(|_| Echo)
/// });
/// ```
///
/// A factory of its own type can keep state across connections (here, numbering them) and
/// use the start and stop hooks:
///
/// ```
/// use std::cell::RefCell;
/// use std::io::Read;
/// use std::rc::Rc;
/// use torsion_reactor::{Address, Factory, Protocol, Reactor, Transport};
/// use torsion_transports::ReactorExt; // listen_tcp
///
/// /// Greets each client with its number, then closes.
/// struct Greeting(usize);
///
/// impl Protocol for Greeting {
///     fn connection_made(&mut self, transport: &mut dyn Transport) {
///         transport.write(format!("you are client {}\n", self.0).as_bytes());
///         transport.lose_connection();
///     }
///     fn data_received(&mut self, _transport: &mut dyn Transport, _data: &[u8]) {}
/// }
///
/// struct Numbering {
///     served: usize,
///     hooks: Rc<RefCell<Vec<&'static str>>>,
/// }
///
/// impl Factory for Numbering {
///     fn build_protocol(&mut self, _peer: &Address, _local: &Address) -> Option<Box<dyn Protocol>> {
///         self.served += 1;
///         Some(Box::new(Greeting(self.served)))
///     }
///     fn start_factory(&mut self) {
///         self.hooks.borrow_mut().push("start");
///     }
///     fn stop_factory(&mut self) {
///         self.hooks.borrow_mut().push("stop");
///     }
/// }
///
/// let hooks = Rc::new(RefCell::new(Vec::new()));
/// let reactor = Reactor::new()?;
/// let factory = Numbering { served: 0, hooks: hooks.clone() };
/// let port = reactor.listen_tcp("127.0.0.1:0", factory)?;
/// let addr = port.local_address().socket_addr().expect("an IP address");
/// let client = std::thread::spawn(move || -> std::io::Result<Vec<String>> {
///     let mut greetings = Vec::new();
///     for _ in 0..2 {
///         let mut stream = std::net::TcpStream::connect(addr)?;
///         let mut text = String::new();
///         stream.read_to_string(&mut text)?; // until the server's FIN
///         greetings.push(text);
///     }
///     Ok(greetings)
/// });
/// let handle = reactor.handle();
/// let waiter = std::thread::spawn(move || {
///     let greetings = client.join().expect("client thread");
///     let _ = handle.call_from_thread(|reactor| reactor.stop());
///     greetings
/// });
/// reactor.run()?;
/// let greetings = waiter.join().expect("waiter")?;
/// assert_eq!(greetings, ["you are client 1\n", "you are client 2\n"]);
/// port.stop_listening();
/// assert_eq!(*hooks.borrow(), ["start", "stop"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Factory: 'static {
    /// Builds the protocol for a connection from `peer` to `local`, or `None` to refuse it
    /// (the socket is closed at once).
    fn build_protocol(&mut self, peer: &Address, local: &Address) -> Option<Box<dyn Protocol>>;

    /// Runs when the first listening port using this factory starts.
    fn start_factory(&mut self) {}

    /// Runs when the last listening port using this factory stops.
    fn stop_factory(&mut self) {}
}

impl<F, R> Factory for F
where
    F: FnMut(&Address) -> R + 'static,
    R: IntoProtocol,
{
    fn build_protocol(&mut self, peer: &Address, _local: &Address) -> Option<Box<dyn Protocol>> {
        self(peer).into_protocol()
    }
}

struct SharedInner {
    factory: RefCell<Box<dyn Factory>>,
    ports: Cell<usize>,
    /// Hooks that came while the factory was busy, in order.
    deferred: RefCell<VecDeque<Hook>>,
}

/// A factory shared by several listening ports.
///
/// `start_factory` runs when the first port starts and `stop_factory` when the last one stops,
/// however many ports share it. Every `listen_*` accepts a plain [`Factory`] (converted into a
/// one-port `SharedFactory`) or a clone of one of these.
#[derive(Clone)]
pub struct SharedFactory {
    inner: Rc<SharedInner>,
}

impl SharedFactory {
    /// Wraps a factory for sharing.
    pub fn new(factory: impl Factory) -> Self {
        SharedFactory {
            inner: Rc::new(SharedInner {
                factory: RefCell::new(Box::new(factory)),
                ports: Cell::new(0),
                deferred: RefCell::new(VecDeque::new()),
            }),
        }
    }

    /// Builds a protocol; `Err` carries the message if the factory panicked, `Ok(None)` is a
    /// refusal.
    pub fn build(
        &self,
        peer: &Address,
        local: &Address,
    ) -> Result<Option<Box<dyn Protocol>>, String> {
        let built = {
            let Ok(mut factory) = self.inner.factory.try_borrow_mut() else {
                return Err("factory re-entered while building a protocol".into());
            };
            catch_unwind_message(|| factory.build_protocol(peer, local))
        };
        self.run_deferred_hooks();
        built
    }

    /// Records that a port started using the factory (runs `start_factory` for the first).
    pub fn port_started(&self) {
        let n = self.inner.ports.get();
        self.inner.ports.set(n + 1);
        if n == 0 {
            self.hook(Hook::Start);
        }
    }

    /// Records that a port stopped (runs `stop_factory` after the last).
    pub fn port_stopped(&self) {
        let n = self.inner.ports.get();
        if n == 0 {
            return;
        }
        self.inner.ports.set(n - 1);
        if n == 1 {
            self.hook(Hook::Stop);
        }
    }

    /// Runs a start/stop hook now, or, when the factory itself caused it (a port stopped or
    /// started from `build_protocol` or from another hook), as soon as that call returns.
    fn hook(&self, hook: Hook) {
        let Ok(mut factory) = self.inner.factory.try_borrow_mut() else {
            self.inner.deferred.borrow_mut().push_back(hook);
            return;
        };
        let result = catch_unwind_message(|| match hook {
            Hook::Start => factory.start_factory(),
            Hook::Stop => factory.stop_factory(),
        });
        drop(factory);
        if let Err(msg) = result {
            tracing::error!(panic = %msg, ?hook, "factory hook panicked");
        }
        self.run_deferred_hooks();
    }

    fn run_deferred_hooks(&self) {
        // Only once the factory is free: a hook deferred again would loop here.
        while self.inner.factory.try_borrow_mut().is_ok() {
            let Some(hook) = self.inner.deferred.borrow_mut().pop_front() else {
                return;
            };
            self.hook(hook);
        }
    }
}

/// A factory's start/stop hook.
#[derive(Clone, Copy, Debug)]
enum Hook {
    Start,
    Stop,
}

impl<F: Factory> From<F> for SharedFactory {
    fn from(factory: F) -> Self {
        SharedFactory::new(factory)
    }
}

impl fmt::Debug for SharedFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedFactory")
            .field("ports", &self.inner.ports.get())
            .finish()
    }
}

/// The operations a [`Connector`] offers; implemented by each transport's connector.
pub trait ConnectorOps {
    /// Starts a new connection attempt (for example to reconnect after a failure). Ignored if
    /// one is in progress or connected.
    fn connect(&self);
    /// Abandons the attempt in progress; the factory sees `client_connection_failed` with
    /// [`CloseReason::Aborted`] on the next turn. Does nothing once connected (a TLS
    /// connector is connected once its handshake completed).
    fn stop_connecting(&self);
    /// Closes the connection if connected (gracefully), else stops connecting.
    fn disconnect(&self);
    /// Where the connector connects to, as given (`host:port`, a path, …).
    fn destination(&self) -> String;
}

/// A handle to an outgoing connection attempt and its connection (Twisted's `IConnector`).
///
/// Passed to every [`ClientFactory`] hook, so a reconnect policy can live in the factory:
/// call [`connect`](Connector::connect) again from `client_connection_lost`.
#[derive(Clone)]
pub struct Connector(Rc<dyn ConnectorOps>);

impl Connector {
    /// Wraps a transport's connector (for transport implementations).
    pub fn new(ops: Rc<dyn ConnectorOps>) -> Self {
        Connector(ops)
    }

    /// Starts a new attempt; see [`ConnectorOps::connect`].
    pub fn connect(&self) {
        self.0.connect()
    }

    /// Abandons the attempt in progress.
    pub fn stop_connecting(&self) {
        self.0.stop_connecting()
    }

    /// Closes the connection, or stops connecting.
    pub fn disconnect(&self) {
        self.0.disconnect()
    }

    /// Where this connector connects to.
    pub fn destination(&self) -> String {
        self.0.destination()
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("destination", &self.0.destination())
            .finish()
    }
}

/// A factory for outgoing connections, told how each attempt goes (Twisted's
/// `ClientFactory`).
///
/// A closure `FnMut(&Address) -> P` is a client factory that ignores the events. A factory
/// that implements the hooks can keep a connection policy out of the protocol, such as
/// retrying a refused connection through the [`Connector`] each hook receives:
///
/// ```
/// use std::rc::Rc;
/// use std::cell::RefCell;
/// use torsion_reactor::{Address, ClientFactory, CloseReason, Connector, Protocol, Reactor,
///     Transport, WeakReactor};
/// use torsion_transports::ReactorExt; // connect_tcp
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _t: &mut dyn Transport, _data: &[u8]) {}
/// }
///
/// /// Tries up to three times, then gives up and stops the reactor.
/// struct ThreeTries {
///     reactor: WeakReactor, // a strong one would keep the reactor alive for ever
///     failures: Rc<RefCell<Vec<CloseReason>>>,
/// }
///
/// impl ClientFactory for ThreeTries {
///     fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
///         Some(Box::new(Quiet))
///     }
///
///     fn client_connection_failed(&mut self, connector: &Connector, reason: CloseReason) {
///         let mut failures = self.failures.borrow_mut();
///         failures.push(reason);
///         if failures.len() < 3 {
///             connector.connect(); // the same destination again
///         } else if let Some(reactor) = self.reactor.upgrade() {
///             reactor.stop();
///         }
///     }
///
///     fn client_connection_lost(&mut self, _connector: &Connector, _reason: CloseReason) {
///         if let Some(reactor) = self.reactor.upgrade() {
///             reactor.stop();
///         }
///     }
/// }
///
/// // A loopback port nobody listens on: each attempt is refused.
/// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
/// let reactor = Reactor::new()?;
/// let failures = Rc::new(RefCell::new(Vec::new()));
/// let factory = ThreeTries { reactor: reactor.downgrade(), failures: failures.clone() };
/// let connector = reactor.connect_tcp("127.0.0.1", port, factory);
/// assert_eq!(connector.destination(), format!("127.0.0.1:{port}"));
/// reactor.run()?;
/// let failures = failures.borrow();
/// assert_eq!(failures.len(), 3);
/// assert!(failures.iter().all(|r| matches!(r, CloseReason::ConnectRefused)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait ClientFactory: 'static {
    /// Builds the protocol once connected to `peer`. `None` closes the connection, and the
    /// attempt ends in `client_connection_failed` with [`CloseReason::NoProtocol`] (a panic
    /// here ends it with [`CloseReason::Panic`]).
    fn build_protocol(&mut self, peer: &Address) -> Option<Box<dyn Protocol>>;

    /// An attempt is starting.
    fn started_connecting(&mut self, connector: &Connector) {
        let _ = connector;
    }

    /// The attempt failed (refused, timed out, unreachable, unresolvable, no protocol built,
    /// …).
    fn client_connection_failed(&mut self, connector: &Connector, reason: CloseReason) {
        let _ = (connector, reason);
    }

    /// An established connection ended (after the protocol's `connection_lost`).
    fn client_connection_lost(&mut self, connector: &Connector, reason: CloseReason) {
        let _ = (connector, reason);
    }
}

impl<F, R> ClientFactory for F
where
    F: FnMut(&Address) -> R + 'static,
    R: IntoProtocol,
{
    fn build_protocol(&mut self, peer: &Address) -> Option<Box<dyn Protocol>> {
        self(peer).into_protocol()
    }
}
