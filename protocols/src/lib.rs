//! Reusable torsion protocols.
//!
//! Everything here is a plain [`Protocol`](torsion_reactor::Protocol) that never touches a
//! socket, so it runs on any transport (TCP, Unix, TLS) and on the in-memory test kit.
//!
//! - [`wire`]: the RFC 862–867 simple services (echo, discard, chargen, quote of the day,
//!   daytime).

#![forbid(unsafe_code)]

pub mod wire;
