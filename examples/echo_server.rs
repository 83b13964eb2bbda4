//! An echo server (RFC 862) on TCP: every byte a client sends comes back.
//!
//! ```text
//! cargo run --example echo_server -- 8000
//! ```
//!
//! Then talk to it with `cargo run --example echo_client -- 127.0.0.1:8000 hello` (or
//! `nc 127.0.0.1 8000`). Ctrl-C stops it.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use torsion::prelude::*;
use torsion::protocols::wire::Echo;

fn main() -> ExitCode {
    let port = match std::env::args().nth(1) {
        None => 8000,
        Some(arg) => match arg.parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("usage: echo_server [PORT]   (PORT defaults to 8000; got {arg:?})");
                return ExitCode::from(2);
            }
        },
    };
    match serve(port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(port: u16) -> torsion::Result<()> {
    let reactor = Reactor::new()?;
    reactor.stop_on_signals()?;
    let listening = reactor.listen_tcp(("127.0.0.1", port), |_peer: &Address| Echo)?;
    println!(
        "echo server listening on {} (Ctrl-C to stop)",
        listening.local_address()
    );
    reactor.run()?;
    println!("stopped");
    Ok(())
}
