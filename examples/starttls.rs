//! STARTTLS: a line protocol that starts in the clear and upgrades to TLS on a command, as
//! SMTP and IMAP do. Server and client run in one process, over loopback.
//!
//! ```text
//! cargo run --example starttls
//! ```
//!
//! The client sends `HELLO` and `STARTTLS` in the clear; the server answers `OK` (still in
//! the clear) and upgrades; the client upgrades when it reads `OK`; then every line is
//! encrypted and the server answers with the TLS version it negotiated.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;

use torsion::prelude::*;
use torsion::reactor::WeakReactor;
use torsion::transports::tls::{self, ClientTlsConfig, ServerTlsConfig, TlsRole};

/// Splits the byte stream into lines.
#[derive(Default)]
struct Lines(Vec<u8>);

impl Lines {
    fn feed(&mut self, data: &[u8]) -> Vec<String> {
        self.0.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(i) = self.0.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.0.drain(..=i).collect();
            out.push(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        out
    }
}

struct Server {
    lines: Lines,
    config: ServerTlsConfig,
}

impl Protocol for Server {
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        for line in self.lines.feed(data) {
            let secure = tls::session(transport).is_some();
            println!(
                "server got {line:?} ({})",
                if secure { "encrypted" } else { "in the clear" }
            );
            match line.as_str() {
                "STARTTLS" if !secure => {
                    transport.write(b"OK\n"); // the last plaintext line
                    tls::start_tls(transport, TlsRole::Server(self.config.clone()));
                }
                "QUIT" => transport.lose_connection(),
                _ => {
                    let version = tls::session(transport).and_then(|s| s.protocol_version);
                    transport.write(format!("you said {line:?} over {version:?}\n").as_bytes());
                }
            }
        }
    }
}

struct Client {
    lines: Lines,
    config: ClientTlsConfig,
    /// The server answered over TLS.
    done: Rc<Cell<bool>>,
    /// Stopped once the connection is over, whatever happened.
    reactor: WeakReactor,
}

impl Protocol for Client {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        transport.write(b"HELLO\nSTARTTLS\n");
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        for line in self.lines.feed(data) {
            println!("client got {line:?}");
            if line.starts_with("you said") && tls::session(transport).is_some() {
                self.done.set(true);
            }
            if line == "OK" {
                let role = TlsRole::Client {
                    config: self.config.clone(),
                    server_name: "localhost".into(),
                };
                tls::start_tls_with(transport, role, |transport| {
                    println!("client: handshake complete");
                    transport.write(b"secret\nQUIT\n");
                });
            }
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        println!("client: connection lost: {reason}");
        if let Some(r) = self.reactor.upgrade() {
            r.stop();
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("starttls: the exchange did not complete within 2 s");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("starttls: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the exchange; `Ok(true)` once the server answered over TLS.
fn run() -> torsion::Result<bool> {
    let dir = std::env::temp_dir().join(format!("torsion-starttls-{}", std::process::id()));
    // The configurations hold what they need: the files go at once, whatever happens next.
    let configs = tls::create_dev_certs(&dir, &[]).and_then(|certs| {
        Ok((
            ServerTlsConfig::from_pem_files(&certs.server_cert, &certs.server_key, None)?,
            ClientTlsConfig::with_ca_file(&certs.ca_cert)?,
        ))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let (server_config, client_config) = configs?;
    let done = Rc::new(Cell::new(false));

    let reactor = Reactor::new()?;
    let port = reactor.listen_tcp("127.0.0.1:0", move |_: &Address| Server {
        lines: Lines::default(),
        config: server_config.clone(),
    })?;
    let addr = port.local_address().socket_addr().expect("a TCP port");
    let (d, weak) = (done.clone(), reactor.downgrade());
    reactor.connect_tcp("127.0.0.1", addr.port(), move |_: &Address| Client {
        lines: Lines::default(),
        config: client_config.clone(),
        done: d.clone(),
        reactor: weak.clone(),
    });
    // A bound on the whole exchange, should it hang.
    let _stop = reactor.call_later(std::time::Duration::from_secs(2), |r| r.stop());
    reactor.run()?;
    Ok(done.get())
}
