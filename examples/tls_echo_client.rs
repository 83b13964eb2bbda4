//! A TLS echo client: sends a message, prints what comes back, closes.
//!
//! ```text
//! cargo run --example tls_echo_client -- localhost:8443 ca.pem "hello over TLS"
//! ```
//!
//! The server's certificate is verified against `ca.pem` and the host name (as any TLS
//! client should); connect with a name the certificate lists.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::cell::Cell;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;

use torsion::prelude::*;
use torsion::reactor::WeakReactor;
use torsion::transports::tls::{self, ClientTlsConfig, TlsError, TlsReactorExt};

struct Client {
    message: Vec<u8>,
    received: usize,
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
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        println!("received: {}", String::from_utf8_lossy(data));
        self.received += data.len();
        if self.received >= self.message.len() {
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
        self.ok.set(reason.is_clean());
        if !reason.is_clean() {
            eprintln!("connection lost: {reason}");
        }
        self.stop_soon();
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, ca, message @ ..] = args.as_slice() else {
        eprintln!("usage: tls_echo_client HOST:PORT CA.pem [MESSAGE]");
        return ExitCode::from(2);
    };
    let Some((host, port)) = target
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse().ok()?)))
    else {
        eprintln!("tls_echo_client: expected HOST:PORT, got {target:?}");
        return ExitCode::from(2);
    };
    let message = if message.is_empty() {
        "hello over TLS".to_string()
    } else {
        message.join(" ")
    };
    match run(host, port, Path::new(ca), message.into_bytes()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tls_echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(host: &str, port: u16, ca: &Path, message: Vec<u8>) -> torsion::Result<bool> {
    let config = ClientTlsConfig::with_ca_file(ca)?;
    let reactor = Reactor::new()?;
    let ok = Rc::new(Cell::new(false));
    reactor.connect_tls(
        host,
        port,
        &config,
        Factory {
            message,
            ok: ok.clone(),
            reactor: reactor.downgrade(),
        },
    );
    reactor.run()?;
    Ok(ok.get())
}
