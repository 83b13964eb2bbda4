//! An echo server over TLS: every byte a client sends comes back, encrypted.
//!
//! ```text
//! cargo run --example tls_echo_server -- --port 8443 --cert server.pem --key server-key.pem
//! ```
//!
//! Without `--cert`/`--key` it makes development certificates in a temporary directory
//! (removed when it stops) and prints where `ca.pem` is. Talk to it with the
//! `tls_echo_client` example or `openssl s_client -connect 127.0.0.1:8443 -CAfile ca.pem`.
//! Ctrl-C stops it. This is also the server the TLS benchmarks run.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use torsion::prelude::*;
use torsion::protocols::wire::Echo;
use torsion::transports::tls::{self, ServerTlsConfig, TlsReactorExt};

fn usage() -> ExitCode {
    eprintln!("usage: tls_echo_server [--port PORT] [--cert CHAIN.pem --key KEY.pem] [--ca CLIENT_CA.pem]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut port = 8443u16;
    let (mut cert, mut key, mut ca) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--port", Some(v)) => match v.parse() {
                Ok(p) => port = p,
                Err(_) => return usage(),
            },
            ("--cert", Some(v)) => cert = Some(PathBuf::from(v)),
            ("--key", Some(v)) => key = Some(PathBuf::from(v)),
            ("--ca", Some(v)) => ca = Some(PathBuf::from(v)),
            _ => return usage(),
        }
    }
    if cert.is_some() != key.is_some() {
        eprintln!("tls_echo_server: --cert and --key go together (give neither for development certificates)");
        return usage();
    }
    match serve(port, cert, key, ca) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tls_echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    port: u16,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> torsion::Result<()> {
    let mut made = None;
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let dir = std::env::temp_dir().join(format!("torsion-tls-echo-{}", std::process::id()));
            let certs = tls::create_dev_certs(&dir, &[])?;
            println!(
                "development certificates in {} (trust ca.pem; removed on exit)",
                dir.display()
            );
            made = Some(dir);
            (certs.server_cert, certs.server_key)
        }
    };
    let result = run(port, &cert, &key, ca.as_deref());
    if let Some(dir) = made {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn run(port: u16, cert: &Path, key: &Path, ca: Option<&Path>) -> torsion::Result<()> {
    let config = ServerTlsConfig::from_pem_files(cert, key, ca)?;
    let reactor = Reactor::new()?;
    let listening = reactor.listen_tls(("127.0.0.1", port), &config, |_: &Address| Echo)?;
    println!("TLS echo on {}", listening.local_address());
    reactor.stop_on_signals()?;
    reactor.run()
}
