//! Reusable torsion protocols.
//!
//! Everything here is a plain [`Protocol`](torsion_reactor::Protocol) (or a
//! [`Factory`](torsion_reactor::Factory) wrapper) that never touches a socket, so it runs on
//! any transport (TCP, Unix, TLS) and on the in-memory test kit, where time is virtual.
//!
//! - [`wire`]: the RFC 862–867 simple services (echo, discard, chargen, quote of the day,
//!   daytime).
//! - [`framing`]: turning a byte stream into messages, wire-compatible with Twisted: lines
//!   ([`LineReceiver`](framing::LineReceiver)), 1/2/4-byte length-prefixed strings and
//!   netstrings ([`StringReceiver`](framing::StringReceiver)). Each format is a pure decoder
//!   (bytes in, frames out, no I/O; fuzzed and property-tested) driven by a thin protocol
//!   adapter that calls a small handler trait you implement.
//! - [`policies`]: wrappers for any protocol or factory: idle timeout and deadlines,
//!   connection limits, bandwidth throttling, traffic logging.
//!
//! # The model, in one example
//!
//! A handler sees whole frames; the adapter deals with chunking, limits, pausing and closing.
//! Policies wrap the result without the handler knowing.
//!
//! ```
//! use std::time::Duration;
//! use torsion_protocols::framing::{LineContext, LineHandler, LineReceiver};
//! use torsion_protocols::policies::IdleTimeout;
//! use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};
//! use torsion_reactor::CloseReason;
//!
//! struct Upper;
//! impl LineHandler for Upper {
//!     fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
//!         ctx.send_line(&line.to_ascii_uppercase());
//!     }
//! }
//!
//! let mr = MemoryReactor::new();
//! let protocol = IdleTimeout::new(LineReceiver::new(Upper), Duration::from_secs(30));
//! let st = StringTransport::with_options(&mr, protocol, MemoryOptions::chunked(2));
//! st.feed(b"hello\r\n");
//! assert_eq!(st.take(), b"HELLO\r\n");
//! mr.advance(Duration::from_secs(30)); // virtual time: instant
//! assert!(st.lost().is_some());
//! ```

#![forbid(unsafe_code)]

pub mod framing;
pub mod policies;
pub mod wire;
