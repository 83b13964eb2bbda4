//! An echo server on a Unix socket.
//!
//! ```text
//! cargo run --example unix_echo -- /tmp/torsion-echo.sock
//! nc -U /tmp/torsion-echo.sock
//! ```
//!
//! A stale socket file left by a dead server is replaced; the file is removed on Ctrl-C.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use torsion::prelude::*;
use torsion::protocols::wire::Echo;
use torsion::reactor::ShutdownPhase;

fn main() -> ExitCode {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/torsion-echo.sock"));
    match serve(path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unix_echo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: PathBuf) -> torsion::Result<()> {
    let reactor = Reactor::new()?;
    reactor.stop_on_signals()?;
    let listening = reactor.listen_unix(&path, |_peer: &Address| Echo)?;
    println!(
        "echo server listening on {} (Ctrl-C to stop)",
        listening.local_address()
    );
    // Stop listening first thing when stopping: that also removes the socket file.
    reactor.add_shutdown_trigger(ShutdownPhase::Before, move |_| listening.stop_listening());
    reactor.run()?;
    println!("stopped; removed {}", path.display());
    Ok(())
}
