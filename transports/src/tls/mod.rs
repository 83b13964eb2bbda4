//! TLS over rustls, as a layer between a stream transport (TCP or Unix) and your protocol.
//!
//! # The model
//!
//! TLS is not a separate kind of socket: [`TlsProtocol`] is a protocol that runs on the
//! ordinary stream transport and drives a rustls connection (ciphertext in through
//! `read_tls`, plaintext out to your protocol; your writes encrypted and handed back to the
//! stream). Your protocol receives a [`Transport`] that behaves like the TCP one, and cannot
//! tell the difference except through [`session`] (negotiated ALPN, peer certificate chain,
//! SNI name, protocol version). So:
//!
//! - [`TlsReactorExt::listen_tls`] is `listen_tcp` with each protocol wrapped;
//!   [`TlsReactorExt::connect_tls`] is `connect_tcp` with the client factory wrapped; the
//!   same over Unix sockets;
//! - [`start_tls`] upgrades a live plaintext connection (STARTTLS) in either role: bytes
//!   written before it go out in the clear, bytes written after it encrypted.
//!
//! ```no_run
//! use torsion_reactor::prelude::*;
//! use torsion_transports::tls::{ServerTlsConfig, TlsReactorExt};
//! use std::path::Path;
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
//!         transport.write(data);
//!     }
//! }
//!
//! let reactor = Reactor::new()?;
//! let config = ServerTlsConfig::from_pem_files(
//!     Path::new("server.pem"),
//!     Path::new("server-key.pem"),
//!     None,
//! )?;
//! reactor.listen_tls("127.0.0.1:8443", &config, |_: &Address| Echo)?;
//! reactor.run()
//! # ;Ok::<(), torsion_reactor::Error>(())
//! ```
//!
//! # Secure by default
//!
//! Clients always verify the server's certificate chain and host name and send SNI; the one
//! way around it is the explicitly named
//! [`ClientTlsConfigBuilder::dangerous_skip_server_verification`]. The `ring` provider,
//! TLS 1.3 and 1.2 with rustls's safe defaults, and session resumption are on everywhere.
//! [`create_dev_certs`] makes a CA, a server and a client certificate for development.
//!
//! # Connection lifecycle
//!
//! - Your protocol's `connection_made` runs once the **handshake completed** (certificates
//!   verified), so no application byte is ever exchanged with an unverified peer. The
//!   handshake is bounded by a deadline (default 10 s,
//!   [`DEFAULT_HANDSHAKE_TIMEOUT`]); a stalled or garbage-speaking peer is closed with
//!   [`TlsError::HandshakeTimeout`] or [`TlsError::Rustls`].
//! - On a client from `connect_tls`, the protocol is built only after the handshake: a
//!   handshake failure reaches `ClientFactory::client_connection_failed` with the TLS
//!   reason, never a protocol. On a server, the factory is asked at accept time (so it can
//!   refuse cheaply); if the handshake then fails, that protocol receives `connection_lost`
//!   with the reason but never `connection_made`.
//! - After a STARTTLS upgrade the protocol's `connection_made` already ran; pass a callback
//!   to [`start_tls_with`] to hear when the handshake completed.
//!
//! # Close semantics
//!
//! - `lose_connection`: flushes what was written, sends `close_notify`, flushes, then closes
//!   the stream gracefully (FIN). Waiting for the peer to finish is bounded by the stream's
//!   close timeout (`ConnectionConfig::close_timeout`), so a silent peer never hangs the
//!   connection. Called during the handshake, the close happens when it completes (or at
//!   the handshake deadline).
//! - The peer's `close_notify` is the clean end of its data: the connection closes (or, with
//!   half-close on, `read_connection_lost` runs) and `connection_lost` gets `Done`.
//! - EOF **without** `close_notify` is never a clean close: `connection_lost` gets
//!   [`TlsError::Truncated`] (after the handshake) or [`TlsError::HandshakeEof`] (during it).
//! - A TLS alert or a verification failure (unknown CA, name mismatch, expired certificate,
//!   no shared version…) closes the connection with [`TlsError::Rustls`] carrying rustls's
//!   error; during a client handshake it reaches `client_connection_failed`.
//! - `abort_connection` resets the stream at once, as on TCP (no `close_notify`).
//! - **Half-close** (`lose_write_connection`): sends `close_notify`, then FIN on the stream,
//!   while reading goes on (TLS 1.3 allows the peer to keep sending; a TLS 1.2 peer usually
//!   answers with its own `close_notify`). `write_connection_lost` runs once FIN is out. A
//!   protocol with `half_close()` on receives `read_connection_lost` at the peer's
//!   `close_notify`.
//!
//! Failures reach protocols as a `CloseReason`; [`TlsError::from_reason`] gets the typed
//! TLS failure back.
//!
//! # Flow control and buffering
//!
//! Writes are collected for the rest of the callback (or, from outside callbacks, the
//! reactor turn) and encrypted together, so many small writes become a few TLS records; a
//! 16 KiB batch is encrypted at once. Ciphertext goes straight to the stream transport, whose
//! watermarks pause your protocol (and producers) exactly as on TCP; rustls's own buffers are
//! bounded ([`DEFAULT_TLS_BUFFER_LIMIT`], 64 KiB, the default high watermark).
//!
//! [`Transport`]: torsion_reactor::Transport

mod certs;
mod config;
mod error;
mod layer;

use std::cell::RefCell;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::rc::Rc;

use torsion_reactor::{ClientFactory, Connector, Reactor, Result, SharedFactory, Transport};

use crate::{ConnectOptions, ListeningPort, ReactorExt, TcpListenOptions, UnixListenOptions};

pub use certs::{create_dev_certs, DevCerts, DEFAULT_DEV_HOSTS};
pub use config::{
    load_certificates, load_private_key, ClientTlsConfig, ClientTlsConfigBuilder, ServerTlsConfig,
    ServerTlsConfigBuilder, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_TLS_BUFFER_LIMIT,
};
pub use error::TlsError;
pub use layer::{session, TlsProtocol, TlsSession};

/// TLS listen and connect entry points, implemented for [`Reactor`].
pub trait TlsReactorExt {
    /// Listens for TLS connections over TCP on `addr`; `factory` builds the protocol that
    /// runs on the plaintext.
    fn listen_tls(
        &self,
        addr: impl ToSocketAddrs,
        config: &ServerTlsConfig,
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort>;

    /// [`listen_tls`](Self::listen_tls) with explicit TCP listen options.
    fn listen_tls_with(
        &self,
        addr: impl ToSocketAddrs,
        config: &ServerTlsConfig,
        factory: impl Into<SharedFactory>,
        options: TcpListenOptions,
    ) -> Result<ListeningPort>;

    /// Connects over TCP to `host:port` and speaks TLS, verifying the server against `host`.
    /// The protocol is built once the handshake completed; a handshake failure reaches
    /// `client_connection_failed`.
    fn connect_tls(
        &self,
        host: &str,
        port: u16,
        config: &ClientTlsConfig,
        factory: impl ClientFactory,
    ) -> Connector;

    /// [`connect_tls`](Self::connect_tls) with explicit connect options.
    fn connect_tls_with(
        &self,
        host: &str,
        port: u16,
        config: &ClientTlsConfig,
        factory: impl ClientFactory,
        options: ConnectOptions,
    ) -> Connector;

    /// Listens for TLS connections on a Unix socket path.
    fn listen_tls_unix(
        &self,
        path: impl AsRef<Path>,
        config: &ServerTlsConfig,
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort>;

    /// Connects to a Unix socket path and speaks TLS, verifying the server against
    /// `server_name` (the name in its certificate).
    fn connect_tls_unix(
        &self,
        path: impl AsRef<Path>,
        server_name: &str,
        config: &ClientTlsConfig,
        factory: impl ClientFactory,
    ) -> Connector;
}

fn server_factory(config: &ServerTlsConfig, factory: SharedFactory) -> SharedFactory {
    SharedFactory::new(layer::ServerFactory {
        inner: factory,
        config: config.clone(),
    })
}

fn client_factory(
    config: &ClientTlsConfig,
    server_name: &str,
    factory: impl ClientFactory,
) -> layer::ClientFactoryWrapper {
    layer::ClientFactoryWrapper {
        inner: Rc::new(RefCell::new(Box::new(factory))),
        config: config.clone(),
        server_name: server_name.to_owned(),
        current: None,
    }
}

impl TlsReactorExt for Reactor {
    fn listen_tls(
        &self,
        addr: impl ToSocketAddrs,
        config: &ServerTlsConfig,
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort> {
        self.listen_tcp(addr, server_factory(config, factory.into()))
    }

    fn listen_tls_with(
        &self,
        addr: impl ToSocketAddrs,
        config: &ServerTlsConfig,
        factory: impl Into<SharedFactory>,
        options: TcpListenOptions,
    ) -> Result<ListeningPort> {
        self.listen_tcp_with(addr, server_factory(config, factory.into()), options)
    }

    fn connect_tls(
        &self,
        host: &str,
        port: u16,
        config: &ClientTlsConfig,
        factory: impl ClientFactory,
    ) -> Connector {
        self.connect_tcp(host, port, client_factory(config, host, factory))
    }

    fn connect_tls_with(
        &self,
        host: &str,
        port: u16,
        config: &ClientTlsConfig,
        factory: impl ClientFactory,
        options: ConnectOptions,
    ) -> Connector {
        self.connect_tcp_with(host, port, client_factory(config, host, factory), options)
    }

    fn listen_tls_unix(
        &self,
        path: impl AsRef<Path>,
        config: &ServerTlsConfig,
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort> {
        self.listen_unix_with(
            path,
            server_factory(config, factory.into()),
            UnixListenOptions::default(),
        )
    }

    fn connect_tls_unix(
        &self,
        path: impl AsRef<Path>,
        server_name: &str,
        config: &ClientTlsConfig,
        factory: impl ClientFactory,
    ) -> Connector {
        self.connect_unix(path, client_factory(config, server_name, factory))
    }
}

/// The role this end takes in a [`start_tls`] upgrade.
#[derive(Clone, Debug)]
pub enum TlsRole {
    /// Act as the TLS client, verifying the peer against `server_name`.
    Client {
        /// The client configuration.
        config: ClientTlsConfig,
        /// The name to verify the server's certificate against (and send with SNI).
        server_name: String,
    },
    /// Act as the TLS server.
    Server(ServerTlsConfig),
}

/// Upgrades a live connection to TLS (STARTTLS). Call it from inside one of the protocol's
/// callbacks, with the transport it received: once the callback returns, the connection's
/// protocol is wrapped in the TLS layer and the handshake starts. Everything written before
/// the call went out in the clear; everything after is encrypted (held until the handshake
/// completes).
///
/// The peer must not send TLS bytes in the same read as the plaintext that precedes the
/// upgrade; protocols ensure this by having the server acknowledge the command in the clear
/// before the client starts the handshake (as SMTP and IMAP do).
///
/// Returns `false` if the transport cannot be upgraded (it is closing, or it is not a stream
/// transport that supports `wrap_protocol`, such as an already-TLS transport), or, for the
/// client role, the server name is invalid.
pub fn start_tls(transport: &dyn Transport, role: TlsRole) -> bool {
    start_tls_inner(transport, role, None)
}

/// [`start_tls`] with a callback that runs (with the TLS transport) once the handshake
/// completed.
pub fn start_tls_with(
    transport: &dyn Transport,
    role: TlsRole,
    on_handshake: impl FnOnce(&mut dyn Transport) + 'static,
) -> bool {
    start_tls_inner(transport, role, Some(Box::new(on_handshake)))
}

use layer::HandshakeCallback;

fn start_tls_inner(
    transport: &dyn Transport,
    role: TlsRole,
    on_handshake: Option<HandshakeCallback>,
) -> bool {
    if let TlsRole::Client {
        config,
        server_name,
    } = &role
    {
        // Check the name now, so that a bad one is reported here rather than as a failure.
        struct Nothing;
        impl torsion_reactor::Protocol for Nothing {
            fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        }
        if TlsProtocol::client(Nothing, config, server_name).is_err() {
            return false;
        }
    }
    transport.wrap_protocol(Box::new(move |old| {
        let layer = match &role {
            TlsRole::Server(config) => TlsProtocol::server_boxed(old, config),
            TlsRole::Client {
                config,
                server_name,
            } => TlsProtocol::client_boxed(old, config, server_name),
        };
        let mut layer = layer.already_made();
        if let Some(cb) = on_handshake {
            layer = layer.on_handshake(cb);
        }
        Box::new(layer)
    }))
}
