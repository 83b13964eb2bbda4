//! An echo server (RFC 862) on UDP: every datagram goes back to its sender, whole.
//!
//! ```text
//! cargo run --example udp_echo -- 8000
//! ```
//!
//! Then send it datagrams, for example with `nc -u 127.0.0.1 8000` (each line you type is one
//! datagram, and comes back). Ctrl-C stops it and prints how many datagrams it served.
//!
//! There is no factory and no connection: one [`DatagramProtocol`] serves the whole socket and
//! learns each sender's address from `datagram_received`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;

use torsion::prelude::*;
use torsion::reactor::{DatagramError, ShutdownPhase};

/// Sends each datagram back where it came from, and counts.
struct Echo {
    served: Rc<Cell<u64>>,
}

impl DatagramProtocol for Echo {
    fn datagram_received(
        &mut self,
        transport: &mut dyn DatagramTransport,
        data: &[u8],
        from: &Address,
    ) {
        self.served.set(self.served.get() + 1);
        match transport.write_to(data, from) {
            Ok(()) => {}
            // The socket is backed up: UDP may drop, and the transport counts it.
            Err(DatagramError::QueueFull) => {}
            Err(e) => eprintln!("udp_echo: reply to {from} failed: {e}"),
        }
    }
}

fn main() -> ExitCode {
    let port = match std::env::args().nth(1) {
        None => 8000,
        Some(arg) => match arg.parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("usage: udp_echo [PORT]   (PORT defaults to 8000; got {arg:?})");
                return ExitCode::from(2);
            }
        },
    };
    match serve(port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp_echo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(port: u16) -> torsion::Result<()> {
    let reactor = Reactor::new()?;
    reactor.stop_on_signals()?;
    let served = Rc::new(Cell::new(0));
    let socket = reactor.listen_udp(
        ("127.0.0.1", port),
        Echo {
            served: served.clone(),
        },
    )?;
    println!(
        "UDP echo server on {} (Ctrl-C to stop)",
        socket.local_address()
    );
    // On Ctrl-C: report, then close the socket.
    reactor.add_shutdown_trigger(ShutdownPhase::Before, move |_| {
        println!(
            "stopping: {} datagrams echoed, {} replies dropped",
            served.get(),
            socket.dropped()
        );
        socket.stop_listening();
    });
    reactor.run()?;
    println!("stopped");
    Ok(())
}
