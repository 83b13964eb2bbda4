//! An echo client: connects, sends one line, prints what comes back, exits.
//!
//! ```text
//! cargo run --example echo_client -- tcp:127.0.0.1:8000 "hello, torsion"
//! cargo run --example echo_client -- unix:/tmp/torsion-echo.sock hello
//! cargo run --example echo_client -- tls:localhost:8443:caCerts=ca.pem hello
//! ```
//!
//! The address is a client endpoint string (`tcp:HOST:PORT[:timeout=S]`, `unix:PATH`,
//! `tls:HOST:PORT[:caCerts=CA.pem]`, … — see `torsion::transports::ClientEndpoint`); a bare
//! `HOST:PORT` still means `tcp:HOST:PORT`. Default `tcp:127.0.0.1:8000`.
//!
//! Exits 0 once the whole line came back, 1 if the connection failed, closed early or sent no
//! echo within 10 s.
//! A [`ClientFactory`] hears about the failed attempt (`client_connection_failed`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use torsion::prelude::*;
use torsion::reactor::WeakReactor;
use torsion::transports::EndpointError;
use torsion::ClientEndpoint;

/// Sends `line`, collects the echo, closes once all of it is back.
struct LineClient {
    line: Vec<u8>,
    echoed: Vec<u8>,
    ok: Rc<Cell<bool>>,
}

impl Protocol for LineClient {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        println!("connected to {}", transport.peer_address());
        transport.write(&self.line);
        // A server that never answers must not keep us waiting for ever.
        let (handle, ok) = (transport.handle(), self.ok.clone());
        let _deadline = transport.reactor().call_later(ECHO_TIMEOUT, move |_| {
            if !ok.get() {
                eprintln!("no echo within {} s", ECHO_TIMEOUT.as_secs());
                handle.abort_connection();
            }
        });
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.echoed.extend_from_slice(data);
        if self.echoed.len() >= self.line.len() {
            print!("echo: {}", String::from_utf8_lossy(&self.echoed));
            self.ok.set(self.echoed == self.line);
            // Done: our FIN goes out; no need to wait for the server's.
            transport.lose_connection();
            transport.reactor().stop();
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        if !self.ok.get() && self.echoed.len() >= self.line.len() {
            eprintln!("the echo differs from what was sent");
        } else if !self.ok.get() {
            eprintln!(
                "connection closed before the echo came back ({} of {} bytes): {reason}",
                self.echoed.len(),
                self.line.len()
            );
        }
    }
}

/// How long to wait for the echo once connected.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the one protocol, and stops the reactor however the attempt ends.
struct OneLine {
    line: Option<Vec<u8>>,
    ok: Rc<Cell<bool>>,
    // Weak: the reactor owns the connector, which owns this factory.
    reactor: WeakReactor,
}

impl OneLine {
    fn stop(&self) {
        if let Some(reactor) = self.reactor.upgrade() {
            reactor.stop();
        }
    }
}

impl ClientFactory for OneLine {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        let line = self.line.take()?;
        Some(Box::new(LineClient {
            line,
            echoed: Vec::new(),
            ok: self.ok.clone(),
        }))
    }

    fn client_connection_failed(&mut self, connector: &Connector, reason: CloseReason) {
        eprintln!("could not connect to {}: {reason}", connector.destination());
        self.stop();
    }

    fn client_connection_lost(&mut self, _connector: &Connector, _reason: CloseReason) {
        self.stop();
    }
}

/// Parses the address argument: a client endpoint string, or a bare `HOST:PORT` (as this
/// example took before endpoint strings) meaning `tcp:HOST:PORT`.
fn endpoint(target: &str) -> Result<ClientEndpoint, EndpointError> {
    ClientEndpoint::parse(target)
        .or_else(|e| ClientEndpoint::parse(&format!("tcp:{target}")).map_err(|_| e))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let target = args
        .next()
        .unwrap_or_else(|| "tcp:127.0.0.1:8000".to_owned());
    let words: Vec<String> = args.collect();
    let line = if words.is_empty() {
        "hello, torsion".to_owned()
    } else {
        words.join(" ")
    };
    let endpoint = match endpoint(&target) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            eprintln!("echo_client: bad address {target:?}: {e}");
            eprintln!("usage: echo_client [ENDPOINT | HOST:PORT] [WORDS...]");
            return ExitCode::from(2);
        }
    };
    match run(&endpoint, format!("{line}\n")) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoint: &ClientEndpoint, line: String) -> torsion::Result<bool> {
    let reactor = Reactor::new()?;
    reactor.stop_on_signals()?;
    let ok = Rc::new(Cell::new(false));
    let factory = OneLine {
        line: Some(line.into_bytes()),
        ok: ok.clone(),
        reactor: reactor.downgrade(),
    };
    let _connector = endpoint.connect(&reactor, factory)?;
    reactor.run()?;
    Ok(ok.get())
}
