//! torsion's reactor: the event loop, timers, cross-thread calls, and the contracts every
//! other layer speaks.
//!
//! # The model
//!
//! A [`Reactor`] is a single-threaded event loop. It owns every connection, listening port and
//! timer created on it, waits for readiness (epoll on Linux, the `polling` crate elsewhere;
//! see [`BackendKind`]), and calls user code back:
//!
//! - a [`Factory`] builds one [`Protocol`] per connection;
//! - the protocol receives [`Protocol::data_received`] with whatever bytes arrived (any
//!   chunking) and writes back through its [`Transport`];
//! - [`Protocol::connection_lost`] runs exactly once, with a [`CloseReason`] that says how the
//!   connection ended.
//!
//! Who polls: only the reactor, on the thread that called [`Reactor::run`]. When callbacks
//! run: one at a time, from the loop, never re-entrantly and with no reactor-internal borrow
//! held, so any callback may write to any connection, schedule timers, listen, connect or stop
//! the reactor. Other threads reach the reactor only through a [`ReactorHandle`].
//!
//! What is guaranteed:
//! - a connection's callbacks come in order: `connection_made`, then data and flow-control
//!   events, then `connection_lost` once;
//! - reads are bounded per connection per turn, so one flooding peer cannot starve the others;
//! - every buffer is bounded; a write buffer past its hard limit aborts that one connection;
//! - a panic in a callback aborts only that connection, with [`CloseReason::Panic`];
//! - timers run in deadline order, and a zero delay means "next turn", never "now".
//!
//! What is not: fairness between a connection's reads and its timers within one turn, or any
//! order between different connections' callbacks.
//!
//! # Layers
//!
//! This crate knows nothing of TCP or TLS. `torsion-transports` turns sockets into
//! transports through [`StreamIo`] and [`StreamConnection`] (the same state machine the
//! in-memory [`testing`] kit drives), and adds `listen_tcp`, `connect_tcp` and friends to
//! the reactor. `torsion-protocols` holds reusable protocols. The `torsion` crate re-exports
//! all of it.
//!
//! ```
//! use std::time::Duration;
//! use torsion_reactor::prelude::*;
//! use torsion_reactor::testing::{MemoryReactor, StringTransport};
//!
//! /// Greets, then closes after one second of silence.
//! struct Greeter;
//!
//! impl Protocol for Greeter {
//!     fn connection_made(&mut self, transport: &mut dyn Transport) {
//!         transport.write(b"hello\r\n");
//!         let handle = transport.handle();
//!         transport
//!             .reactor()
//!             .call_later(Duration::from_secs(1), move |_| handle.lose_connection());
//!     }
//!     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
//! }
//!
//! let mr = MemoryReactor::new();
//! let st = StringTransport::connect(&mr, Greeter);
//! assert_eq!(st.take(), b"hello\r\n");
//! mr.advance(Duration::from_secs(1));
//! assert!(st.fin_received());
//! ```

#![forbid(unsafe_op_in_unsafe_fn)]

mod address;
mod backend;
pub mod buffer;
mod busy_poll;
mod clock;
mod connection;
mod datagram;
mod error;
mod panic;
mod protocol;
mod reactor;
mod reason;
mod registration;
pub mod testing;
mod timer;
mod transport;

pub use address::{Address, UnixAddress};
pub use backend::{BackendKind, Interest, Readiness};
pub use busy_poll::DEFAULT_BUSY_POLL;
pub use clock::VirtualClock;
pub use connection::{ConnectionConfig, LostHook, StreamConnection, StreamIo};
pub use datagram::{
    DatagramError, DatagramProtocol, DatagramTransport, MulticastInterface,
    DEFAULT_MAX_DATAGRAM_SIZE,
};
pub use error::{Error, Result};
pub use panic::catch_unwind_message;
pub use protocol::{
    ClientFactory, Connector, ConnectorOps, Factory, IntoProtocol, Protocol, SharedFactory,
};
pub use reactor::{
    Reactor, ReactorHandle, ReadBuffer, ShutdownHold, ShutdownPhase, WeakReactor,
    DEFAULT_SHUTDOWN_TIMEOUT, READ_BUFFER_SIZE,
};
pub use reason::CloseReason;
pub use registration::{Registered, Source};
pub use timer::{DelayedCall, LoopingCall};
pub use transport::{
    Keepalive, PeerCredentials, Producer, ProtocolWrapper, Transport, TransportHandle,
};

/// The names most programs need: `use torsion_reactor::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Address, ClientFactory, CloseReason, Connector, DatagramProtocol, DatagramTransport,
        Factory, Protocol, Reactor, Transport, TransportHandle,
    };
}
