//! A chat over IP multicast: every process on the group sees every line any of them types.
//!
//! ```text
//! cargo run --example multicast_chat                  # in one terminal
//! cargo run --example multicast_chat                  # in another, and another…
//! cargo run --example multicast_chat -- 239.255.0.1:8002 192.168.1.20   # on a real network
//! ```
//!
//! Arguments: the group and port (default `239.255.0.1:8002`) and the address of the interface
//! to use (default `127.0.0.1`, so processes on this host chat without any network; give a
//! real interface's address to chat across a LAN). Type lines and press Enter; Ctrl-D or
//! Ctrl-C leaves.
//!
//! How it fits together:
//!
//! - every process binds the group port with `listen_multiple` (`SO_REUSEADDR` +
//!   `SO_REUSEPORT`, so they can share it) and joins the group on the interface;
//! - a second socket on an ephemeral port sends to the group, so each process shows up with
//!   its own address;
//! - stdin is read on an ordinary thread (reading blocks); each line goes to the reactor
//!   thread with [`ReactorHandle::call_from_thread`](torsion::ReactorHandle::call_from_thread),
//!   which sends it. Sockets belong to the reactor thread, so the sending socket is kept in a
//!   thread-local there.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::cell::RefCell;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;

use torsion::prelude::*;
use torsion::reactor::{DatagramError, MulticastInterface, ShutdownPhase};
use torsion::transports::DatagramPort;

const DEFAULT_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 8002);

thread_local! {
    /// The sending socket and the group address, on the reactor thread.
    static OUT: RefCell<Option<(DatagramPort, Address)>> = const { RefCell::new(None) };
}

/// Prints every line that arrives on the group, with its sender.
struct Listener {
    /// Our own sending address, to mark our lines coming back.
    me: Address,
}

impl DatagramProtocol for Listener {
    fn datagram_received(&mut self, _: &mut dyn DatagramTransport, data: &[u8], from: &Address) {
        let text = String::from_utf8_lossy(data);
        let who = if *from == self.me { " (me)" } else { "" };
        println!("[{from}{who}] {}", text.trim_end());
    }
}

/// What the receiving socket does with the datagrams of the sending one (nothing arrives on
/// it: it only sends).
struct SendOnly;

impl DatagramProtocol for SendOnly {
    fn datagram_received(&mut self, _: &mut dyn DatagramTransport, _: &[u8], _: &Address) {}
}

/// Sends one line to the group; runs on the reactor thread.
fn send_line(line: String) {
    OUT.with(|out| {
        let out = out.borrow();
        let Some((socket, group)) = out.as_ref() else {
            return;
        };
        match socket.write_to(line.as_bytes(), group) {
            Ok(()) => {}
            Err(e @ DatagramError::TooLarge { .. }) => eprintln!("line not sent: {e}"),
            Err(e) => eprintln!("line not sent to {group}: {e}"),
        }
    });
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let group = match args.next().map(|a| a.parse::<SocketAddrV4>()) {
        None => DEFAULT_GROUP,
        Some(Ok(g)) if g.ip().is_multicast() => g,
        Some(_) => return usage(),
    };
    let interface = match args.next().map(|a| a.parse::<Ipv4Addr>()) {
        None => Ipv4Addr::LOCALHOST,
        Some(Ok(i)) => i,
        Some(Err(_)) => return usage(),
    };
    match chat(group, interface) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("multicast_chat: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: multicast_chat [GROUP:PORT] [INTERFACE-ADDRESS]   \
         (defaults: {DEFAULT_GROUP} 127.0.0.1; GROUP must be a multicast address)"
    );
    ExitCode::from(2)
}

fn chat(group: SocketAddrV4, interface: Ipv4Addr) -> torsion::Result<()> {
    let reactor = Reactor::new()?;
    reactor.stop_on_signals()?;
    let on = MulticastInterface::V4(interface);
    let group_ip = IpAddr::V4(*group.ip());
    let to = Address::Inet(SocketAddr::V4(group));

    // The sending socket: its own port tells this process apart.
    let out = reactor.listen_udp((interface, 0), SendOnly)?;
    let io = |what: &str, e: std::io::Error| torsion::Error::io(what.to_string(), e);
    out.set_multicast_interface(on)
        .map_err(|e| io("choose the outgoing multicast interface", e))?;
    out.set_multicast_loopback(true)
        .map_err(|e| io("turn multicast loopback on", e))?;
    out.set_multicast_ttl(1)
        .map_err(|e| io("set the multicast TTL", e))?;
    let me = out.local_address();

    // The receiving socket: shared with the other processes on the group port.
    let inbox = reactor.listen_multiple(group, Listener { me: me.clone() })?;
    inbox
        .join_group(group_ip, on)
        .map_err(|e| io(&format!("join {} on {interface}", group.ip()), e))?;
    println!("joined {group} on {interface} as {me}; type lines, Ctrl-D or Ctrl-C to leave");

    OUT.with(|o| *o.borrow_mut() = Some((out.clone(), to)));
    reactor.add_shutdown_trigger(ShutdownPhase::Before, move |_| {
        if let Err(e) = inbox.leave_group(group_ip, on) {
            eprintln!("leaving {group_ip}: {e}");
        }
        inbox.stop_listening();
        out.stop_listening();
        OUT.with(|o| o.borrow_mut().take());
    });

    // Blocking stdin reads on their own thread; lines cross to the reactor thread.
    let handle = reactor.handle();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if handle.call_from_thread(move |_| send_line(line)).is_err() {
                return; // the reactor is gone
            }
        }
        let _ = handle.stop(); // end of input: leave
    });

    reactor.run()?;
    println!("left {group}");
    Ok(())
}
