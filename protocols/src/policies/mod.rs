//! Connection policies: wrappers that any protocol or factory can use (Twisted's
//! `twisted.protocols.policies`).
//!
//! | policy | wraps | what it does |
//! |---|---|---|
//! | [`IdleTimeout`] | a protocol | no bytes either way for N seconds: abort, report [`CloseReason::TimedOut`](torsion_reactor::CloseReason::TimedOut) |
//! | [`Deadline`] | (a building block) | abort unless something happens in time; the receivers' first-whole-frame timeout (slowloris defence) |
//! | [`ConnectionLimits`] | a factory | cap open connections in total and per peer IP; excess refused at accept |
//! | [`Throttled`], [`ThrottlingFactory`] | a protocol, a factory | read and write bandwidth caps per connection and per factory |
//! | [`TrafficLogger`] | a protocol | every byte in and out through `tracing`, hex dump at trace level |
//! | [`WrappingFactory`] | a factory | applies any protocol wrapper to every connection of a factory |
//!
//! # How wrappers see the connection
//!
//! A protocol wrapper hands the inner protocol a transport of its own that wraps the
//! connection's: writes, `pause_reading`/`resume_reading`, producer registration and
//! `lose_connection`/`lose_write_connection` pass through the policy, everything else goes
//! straight to the connection. `handle()` on it
//! returns a handle to that wrapper (always the same one, so
//! [`TransportHandle::same_connection`](torsion_reactor::TransportHandle::same_connection)
//! works between handles taken inside the wrapper), so a protocol that keeps a handle and
//! writes later, outside its callbacks, is still seen by the policy.
//!
//! Wrappers compose: `IdleTimeout::new(Throttled::new(TrafficLogger::new(p), caps), d)`.
//! Timers run on the reactor's clock, so everything here is tested on the virtual clock of
//! [`MemoryReactor`](torsion_reactor::testing::MemoryReactor).
//!
//! ```
//! use std::time::Duration;
//! use torsion_protocols::policies::{ConnectionLimits, IdleTimeout, WrappingFactory};
//! use torsion_protocols::wire::Echo;
//! use torsion_reactor::{Address, SharedFactory};
//!
//! // Echo, closed after 5 minutes of silence, at most 1000 connections and 10 per peer.
//! let idle = WrappingFactory::new(|_: &Address| Echo, |p, _| {
//!     Box::new(IdleTimeout::new(p, Duration::from_secs(300)))
//! });
//! let factory = SharedFactory::new(ConnectionLimits::new(idle, Some(1000), Some(10)));
//! # let _ = factory;
//! ```

mod deadline;
mod idle_timeout;
mod limits;
mod logging;
mod throttle;
pub(crate) mod wrap;

pub use deadline::Deadline;
pub use idle_timeout::IdleTimeout;
pub use limits::{ConnectionLimits, ConnectionStats};
pub use logging::{hex_dump, TrafficLogger, DEFAULT_DUMP_LIMIT, TRAFFIC_TARGET};
pub use throttle::{Bandwidth, BandwidthPool, Throttled, ThrottlingFactory, TokenBucket};
pub use wrap::WrappingFactory;
