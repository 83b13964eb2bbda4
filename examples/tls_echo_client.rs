//! A TLS echo client: sends a message, prints what comes back, closes.
//!
//! ```text
//! cargo run --example tls_echo_client -- tls:localhost:8443:caCerts=ca.pem "hello over TLS"
//! cargo run --example tls_echo_client -- \
//!     tls:localhost:8443:caCerts=ca.pem:certificate=client.pem:privateKey=client-key.pem
//! cargo run --example tls_echo_client -- localhost:8443 ca.pem "hello over TLS"
//! ```
//!
//! The address is a TLS client endpoint string, `tls:HOST:PORT[:caCerts=CA.pem]
//! [:certificate=CERT.pem:privateKey=KEY.pem]` or `tlsunix:PATH:host=NAME[:caCerts=…]` (see
//! `torsion::transports::ClientEndpoint`); the older form `HOST:PORT CA.pem` still works.
//! The server's certificate is verified against `ca.pem` (without `caCerts=`, the Mozilla
//! roots) and the host name, as any TLS client should; connect with a name the certificate
//! lists.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::cell::Cell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use torsion::prelude::*;
use torsion::reactor::WeakReactor;
use torsion::transports::tls::{self, TlsError};
use torsion::transports::ClientTlsFiles;
use torsion::ClientEndpoint;

/// How long to wait for the echo once the handshake is done.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

struct Client {
    message: Vec<u8>,
    received: usize,
    /// The whole echo came back.
    echoed: Rc<Cell<bool>>,
}

impl Protocol for Client {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        if let Some(session) = tls::session(transport) {
            println!(
                "handshake done: {:?}, {:?}",
                session.protocol_version, session.cipher_suite
            );
        }
        transport.write(&self.message);
        // A server that never answers must not keep us waiting for ever.
        let (handle, echoed) = (transport.handle(), self.echoed.clone());
        let _deadline = transport.reactor().call_later(ECHO_TIMEOUT, move |_| {
            if !echoed.get() {
                eprintln!("no echo within {} s", ECHO_TIMEOUT.as_secs());
                handle.abort_connection();
            }
        });
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        println!("received: {}", String::from_utf8_lossy(data));
        self.received += data.len();
        if self.received >= self.message.len() {
            self.echoed.set(true);
            transport.lose_connection();
        }
    }
}

struct Factory {
    message: Vec<u8>,
    ok: Rc<Cell<bool>>,
    reactor: WeakReactor,
}

impl Factory {
    fn stop_soon(&self) {
        if let Some(reactor) = self.reactor.upgrade() {
            reactor.stop();
        }
    }
}

impl ClientFactory for Factory {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Client {
            message: self.message.clone(),
            received: 0,
            echoed: self.ok.clone(),
        }))
    }

    fn client_connection_failed(&mut self, connector: &Connector, reason: CloseReason) {
        match TlsError::from_reason(&reason) {
            Some(err) => eprintln!(
                "TLS handshake with {} failed: {err}",
                connector.destination()
            ),
            None => eprintln!("could not connect to {}: {reason}", connector.destination()),
        }
        self.stop_soon();
    }

    fn client_connection_lost(&mut self, _connector: &Connector, reason: CloseReason) {
        // Success is the whole echo, then a clean close.
        if !self.ok.get() {
            eprintln!("connection closed before the echo came back: {reason}");
        } else if !reason.is_clean() {
            self.ok.set(false);
            eprintln!("connection lost: {reason}");
        }
        self.stop_soon();
    }
}

const USAGE: &str = "usage: tls_echo_client tls:HOST:PORT[:caCerts=CA.pem] [MESSAGE...]\n       \
                     tls_echo_client HOST:PORT CA.pem [MESSAGE...]";

/// The endpoint and the message words: `ENDPOINT [MESSAGE...]`, or the older
/// `HOST:PORT CA.pem [MESSAGE...]`.
fn parse_args(args: &[String]) -> Result<(ClientEndpoint, &[String]), String> {
    let Some((target, rest)) = args.split_first() else {
        return Err("missing the server address".to_owned());
    };
    match ClientEndpoint::parse(target) {
        Ok(endpoint) if endpoint.is_tls() => Ok((endpoint, rest)),
        Ok(endpoint) => Err(format!(
            "{endpoint} is not a TLS endpoint (tls: or tlsunix:)"
        )),
        Err(e) => match (
            ClientEndpoint::parse(&format!("tls:{target}")),
            rest.split_first(),
        ) {
            // The older form: HOST:PORT, then the CA file.
            (
                Ok(ClientEndpoint::Tls {
                    host,
                    port,
                    timeout,
                    bind,
                    ..
                }),
                Some((ca, message)),
            ) => {
                let files = ClientTlsFiles {
                    ca_certs: Some(PathBuf::from(ca)),
                    certificate: None,
                };
                let endpoint = ClientEndpoint::Tls {
                    host,
                    port,
                    timeout,
                    bind,
                    files,
                };
                Ok((endpoint, message))
            }
            _ => Err(format!("bad address {target:?}: {e}")),
        },
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (endpoint, message) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("tls_echo_client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let message = if message.is_empty() {
        "hello over TLS".to_string()
    } else {
        message.join(" ")
    };
    if message.is_empty() {
        // Nothing would come back: the client would wait for an echo that never comes.
        eprintln!("tls_echo_client: the message is empty\n{USAGE}");
        return ExitCode::from(2);
    }
    match run(&endpoint, message.into_bytes()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tls_echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoint: &ClientEndpoint, message: Vec<u8>) -> torsion::Result<bool> {
    let reactor = Reactor::new()?;
    let ok = Rc::new(Cell::new(false));
    endpoint.connect(
        &reactor,
        Factory {
            message,
            ok: ok.clone(),
            reactor: reactor.downgrade(),
        },
    )?;
    reactor.run()?;
    Ok(ok.get())
}
