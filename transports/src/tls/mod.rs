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
//! Of those cipher suites AES-128-GCM comes first, and a server chooses it whenever the
//! client offers it: as safe, and cheaper than AES-256-GCM in handshakes and in bulk
//! ([`ServerTlsConfigBuilder::prefer_client_cipher_order`] explains, and turns it off).
//! [`create_dev_certs`] makes a CA, a server and a client certificate for development.
//!
//! Clients trust the Mozilla roots compiled in from `webpki-roots` unless told otherwise:
//! [`ClientTlsConfigBuilder::platform_roots`] trusts the operating system's store instead
//! (read with `rustls-native-certs`; a typed error says so when the store is empty), and
//! [`ClientTlsConfigBuilder::ca_file`] a private CA; [`ClientTlsConfigBuilder::webpki_roots`]
//! adds the bundled roots to either.
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
//!   reason, never a protocol. A client factory that then builds no protocol (refuses) gets
//!   `client_connection_failed` with [`CloseReason::NoProtocol`](torsion_reactor::CloseReason::NoProtocol),
//!   as on TCP; the connection is closed. The [`Connector`] (the one returned and the one
//!   the factory's hooks receive) counts the handshake as part of the attempt:
//!   `stop_connecting` (or `disconnect`) during it resets the connection at once and the
//!   factory hears `client_connection_failed` with
//!   [`CloseReason::Aborted`](torsion_reactor::CloseReason::Aborted) on the next turn, as when
//!   stopped while TCP connects; after it, `stop_connecting` does nothing and `disconnect`
//!   closes gracefully (as `lose_connection`, below). On a server, the
//!   factory is asked at accept time (so it can refuse cheaply); if the handshake then
//!   fails, that protocol receives `connection_lost` with the reason but never
//!   `connection_made`.
//! - After a STARTTLS upgrade the protocol's `connection_made` already ran; pass a callback
//!   to [`start_tls_with`] to hear when the handshake completed.
//!
//! # Close semantics
//!
//! - **`lose_connection`** (after the handshake): the plaintext written so far is encrypted
//!   and handed to the stream transport, then our `close_notify`; the stream then closes
//!   gracefully: it flushes its write buffer, sends FIN, and waits for the peer's FIN while
//!   discarding what arrives (no more data reaches the protocol, as on TCP).
//!   - A peer that answers (its `close_notify`, then FIN, as TLS peers do, torsion's
//!     included) ends the connection at once: `connection_lost` gets `Done`.
//!   - A peer that does not answer is waited for at most the **TLS close timeout**
//!     ([`ServerTlsConfigBuilder::close_timeout`], [`ClientTlsConfigBuilder::close_timeout`],
//!     default 5 s, [`DEFAULT_TLS_CLOSE_TIMEOUT`]) counted from the moment everything we
//!     wrote, `close_notify` included, has left the stream's write buffer for the socket
//!     (while some of it waits, the layer looks every tenth of the timeout, no more often than
//!     every 10 ms, so the drain is noticed within that). Then the connection is **aborted**
//!     (reset, as `abort_connection`: the stream has no other way to stop waiting for a FIN)
//!     and the protocol still gets `Done`: the close was
//!     ours and all our data reached the socket. (The stream underneath reports
//!     `Aborted`.) `Done` does not prove that the peer read everything (only its
//!     `close_notify` does): a peer that stopped reading for longer than the timeout can lose
//!     the tail to the reset, and then sees a reset or a truncation, never a clean end.
//!   - If our data never leaves the write buffer (the peer does not read at all), the
//!     stream's own close timeout (`ConnectionConfig::close_timeout`, 30 s from
//!     `lose_connection`) aborts the connection with `CloseTimedOut`: undelivered data is
//!     never a clean close. The TLS close timeout can only shorten that bound.
//!   - Called during the handshake, the close happens when the handshake completes (or the
//!     handshake deadline ends the connection).
//! - **The peer's `close_notify`** is the clean end of its data: the connection closes as with
//!   `lose_connection` (our `close_notify`, FIN, the TLS close timeout), or, for a protocol
//!   opted in to half-close, `read_connection_lost` runs (see below). `connection_lost` gets
//!   `Done`. Bytes that follow the `close_notify` are ignored, in the same read or later ones.
//!   A protocol that paused reading hears of the `close_notify` only after it resumed and got
//!   the data that came before it (see flow control).
//! - **EOF without `close_notify`** is never a clean close: `connection_lost` gets
//!   [`TlsError::Truncated`] after the handshake (also after our own half-close, while we
//!   still read) or [`TlsError::HandshakeEof`] during it. After our `lose_connection` we no
//!   longer read, so nothing can be cut short: the peer's FIN alone then ends the close
//!   cleanly.
//! - **A TLS alert or a verification failure** (unknown CA, name mismatch, expired
//!   certificate, no shared version, bytes that are not TLS…) ends the connection with
//!   [`TlsError::Rustls`] carrying rustls's error; the alert rustls makes is sent, then FIN,
//!   and a peer that does not close in turn is reset after the TLS close timeout (the reason
//!   stays the TLS failure). During a client handshake it reaches `client_connection_failed`.
//! - **`abort_connection`** resets the stream at once, as on TCP: no `close_notify`, the
//!   write buffer is dropped, `connection_lost` gets `Aborted` (and the peer a reset).
//! - **Half-close** (`lose_write_connection`): flushes, sends `close_notify`, then FIN on the
//!   stream (TLS 1.3 closes one direction with `close_notify`; reading goes on).
//!   `write_connection_lost` runs once FIN is out; later writes are ignored. There is no
//!   timeout on the reading side, as with TCP half-close (bound it with an idle-timeout
//!   policy if you need one). When the peer's data ends:
//!   - with its `close_notify`: a protocol whose `half_close()` returns `true` gets
//!     `read_connection_lost` (right at the `close_notify`) and may keep writing until it
//!     calls `lose_connection`; without the opt-in the connection closes, `Done`;
//!   - with FIN alone: [`TlsError::Truncated`].
//!
//!   Half-close needs a peer that keeps sending after our `close_notify`: TLS 1.3 peers such
//!   as rustls and torsion do; TLS 1.2 (RFC 5246) told a peer to answer with its own
//!   `close_notify` at once, and some implementations still do.
//!
//! Failures reach protocols as a `CloseReason`; [`TlsError::from_reason`] gets the typed
//! TLS failure back.
//!
//! # Flow control and buffering
//!
//! - Writes are collected for the rest of the callback (protocol callbacks, producer
//!   callbacks, the STARTTLS handshake callback) or, from outside callbacks, the rest of the
//!   reactor turn, and encrypted together when it ends: a thousand one-byte writes in one
//!   callback become one TLS record, not a thousand. Once 16 KiB are collected (one full
//!   record) they are encrypted at once, and a write of 16 KiB or more is encrypted straight
//!   from the caller's slice.
//! - The records go straight to the stream transport, whose watermarks (64 KiB / 16 KiB by
//!   default) pause and resume your protocol and its producer exactly as on TCP, on the
//!   ciphertext it buffers: a push producer is paused above the high watermark and resumed
//!   at the low one; a pull producer is asked for its next chunk once the previous one has
//!   drained. The stream's hard limit (16 MiB) applies too.
//! - rustls's own outgoing buffer is bounded by the configuration's `buffer_limit`
//!   ([`DEFAULT_TLS_BUFFER_LIMIT`], 64 KiB, the default high watermark): the layer hands
//!   rustls at most that much plaintext at a time and moves every record it made to the
//!   stream transport immediately, so rustls never holds more than one limit's worth (plus
//!   record overhead) and everything else is under the stream's watermarks. Incoming
//!   plaintext is handed to the protocol after every read, never accumulated, except after
//!   `pause_reading`: as on TCP, nothing reaches the protocol until `resume_reading`. The
//!   plaintext of the read during which it paused (say a client's first data, arriving with
//!   its Finished, when `connection_made` pauses) is held, bounded by that read since the
//!   stream stops reading too, and delivered in order on the turn after `resume_reading`,
//!   before anything newer; it is dropped if the protocol closes or aborts first.
//! - [`Transport::buffered`] on a TLS transport counts the stream's buffered ciphertext plus
//!   the plaintext collected and not yet encrypted. With a peer that stops reading, what a
//!   connection holds exceeds the high watermark only by what was written before the pause
//!   was delivered (the rest of the callback or turn that crossed it).
//! - Plaintext written before the handshake completed (after [`start_tls`], or through a
//!   handle) is held by the layer until it completes; that wait is bounded in time by the
//!   handshake deadline, and in size by [`MAX_EARLY_PLAINTEXT`] (16 MiB): past it the
//!   connection is aborted with `CloseReason::WriteBufferOverflow`. Producers are not paused
//!   meanwhile (the stream's buffer is what pauses them): do not stream bulk data before the
//!   handshake is done.
//!
//! [`Transport::buffered`]: torsion_reactor::Transport::buffered
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
    DEFAULT_TLS_CLOSE_TIMEOUT,
};
pub use error::TlsError;
pub use layer::{session, TlsProtocol, TlsSession, MAX_EARLY_PLAINTEXT};

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
    ///
    /// The attempt lasts until the handshake completed: [`Connector::stop_connecting`] (or
    /// `disconnect`) during the handshake resets the connection at once, and the factory
    /// hears `client_connection_failed` with `Aborted`, never `client_connection_lost`. After
    /// it, `stop_connecting` does nothing and `disconnect` closes the TLS connection
    /// gracefully, as the protocol's `lose_connection` does.
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

    /// Listens for TLS connections on a Unix socket path (with the default options: the
    /// umask's file mode, a backlog of 50).
    fn listen_tls_unix(
        &self,
        path: impl AsRef<Path>,
        config: &ServerTlsConfig,
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort>;

    /// [`listen_tls_unix`](Self::listen_tls_unix) with explicit Unix listen options (file
    /// mode of the socket file, backlog, connection limits), as
    /// [`listen_unix_with`](crate::ReactorExt::listen_unix_with).
    fn listen_tls_unix_with(
        &self,
        path: impl AsRef<Path>,
        config: &ServerTlsConfig,
        factory: impl Into<SharedFactory>,
        options: UnixListenOptions,
    ) -> Result<ListeningPort>;

    /// Connects to a Unix socket path and speaks TLS, verifying the server against
    /// `server_name` (the name in its certificate). The connector behaves as
    /// [`connect_tls`](Self::connect_tls)'s.
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

/// Starts a TLS client attempt: `connect` starts the stream connector with the wrapped
/// factory, and the user gets the TLS connector around it (which can stop the handshake).
fn connect_client(
    config: &ClientTlsConfig,
    server_name: &str,
    factory: impl ClientFactory,
    connect: impl FnOnce(layer::ClientFactoryWrapper) -> Connector,
) -> Connector {
    let attempt = Rc::new(layer::ClientAttempt::default());
    let stream = connect(layer::ClientFactoryWrapper {
        inner: Rc::new(RefCell::new(Box::new(factory))),
        config: config.clone(),
        server_name: server_name.to_owned(),
        current: None,
        attempt: attempt.clone(),
    });
    layer::TlsConnector::wrap(stream, attempt)
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
        connect_client(config, host, factory, |f| self.connect_tcp(host, port, f))
    }

    fn connect_tls_with(
        &self,
        host: &str,
        port: u16,
        config: &ClientTlsConfig,
        factory: impl ClientFactory,
        options: ConnectOptions,
    ) -> Connector {
        connect_client(config, host, factory, |f| {
            self.connect_tcp_with(host, port, f, options)
        })
    }

    fn listen_tls_unix(
        &self,
        path: impl AsRef<Path>,
        config: &ServerTlsConfig,
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort> {
        self.listen_tls_unix_with(path, config, factory, UnixListenOptions::default())
    }

    fn listen_tls_unix_with(
        &self,
        path: impl AsRef<Path>,
        config: &ServerTlsConfig,
        factory: impl Into<SharedFactory>,
        options: UnixListenOptions,
    ) -> Result<ListeningPort> {
        self.listen_unix_with(path, server_factory(config, factory.into()), options)
    }

    fn connect_tls_unix(
        &self,
        path: impl AsRef<Path>,
        server_name: &str,
        config: &ClientTlsConfig,
        factory: impl ClientFactory,
    ) -> Connector {
        connect_client(config, server_name, factory, |f| self.connect_unix(path, f))
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
/// completes), including what the protocol writes later in the same callback and what goes
/// through a [`TransportHandle`](torsion_reactor::TransportHandle) taken before the upgrade:
/// such handles reach the TLS transport from then on. One upgrade per connection: a second
/// call returns `false`.
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
