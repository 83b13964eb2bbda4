//! torsion: an event-driven networking framework in the style of Twisted.
//!
//! A [`Reactor`] runs the event loop; transports turn sockets into byte pipes; a [`Factory`]
//! builds one [`Protocol`] per connection; the protocol receives
//! [`data_received`](Protocol::data_received) callbacks and writes back through its
//! [`Transport`]. This crate re-exports the layers:
//!
//! - [`reactor`] (`torsion-reactor`): the loop, timers, cross-thread calls, the contracts and
//!   the [`testing`] kit;
//! - [`transports`] (`torsion-transports`): TCP, TLS (rustls), Unix stream and datagram and
//!   UDP sockets, endpoint strings;
//! - [`protocols`] (`torsion-protocols`): reusable protocols: the wire services, framing,
//!   policies (timeouts, limits, throttling).
//!
//! # An echo server
//!
//! (The README's example, compiled here.)
//!
//! ```no_run
//! use torsion::prelude::*;
//!
//! /// Echo (RFC 862): send back whatever arrives.
//! struct Echo;
//!
//! impl Protocol for Echo {
//!     fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
//!         transport.write(data);
//!     }
//!
//!     fn connection_lost(&mut self, reason: CloseReason) {
//!         eprintln!("client left: {reason}");
//!     }
//! }
//!
//! fn main() -> torsion::Result<()> {
//!     let reactor = Reactor::new()?;
//!     reactor.stop_on_signals()?; // Ctrl-C: run() returns, connections close
//!     reactor.listen_tcp("127.0.0.1:8000", |_peer: &Address| Echo)?;
//!     reactor.run()
//! }
//! ```
//!
//! # Testing it without a socket
//!
//! ```
//! use torsion::prelude::*;
//! use torsion::testing::{MemoryOptions, MemoryReactor, StringTransport};
//! # struct Echo;
//! # impl Protocol for Echo {
//! #     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
//! # }
//!
//! let mr = MemoryReactor::new();
//! let st = StringTransport::with_options(&mr, Echo, MemoryOptions::chunked(1));
//! st.feed(b"one byte at a time");
//! assert_eq!(st.take(), b"one byte at a time");
//! ```

#![forbid(unsafe_code)]

pub mod manual;

pub use torsion_protocols as protocols;
pub use torsion_reactor as reactor;
pub use torsion_reactor::testing;
pub use torsion_reactor::{
    Address, ClientFactory, CloseReason, Connector, DelayedCall, Error, Factory, LoopingCall,
    Producer, Protocol, Reactor, ReactorHandle, Result, SharedFactory, Transport, TransportHandle,
};
pub use torsion_transports as transports;
pub use torsion_transports::{ClientEndpoint, ListeningPort, ReactorExt, ServerEndpoint};

/// The names most programs need: `use torsion::prelude::*;`.
pub mod prelude {
    pub use torsion_reactor::prelude::*;
    pub use torsion_transports::ReactorExt;
}
