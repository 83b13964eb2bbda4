//! A line-based chat server: every line a client sends goes to every other client.
//!
//! ```text
//! cargo run --example chat_server -- 8001
//! nc 127.0.0.1 8001        # in two or more terminals
//! ```
//!
//! Shows how protocols on different connections talk to each other: each connection's
//! [`TransportHandle`] is kept in a room shared through `Rc<RefCell<..>>` (everything runs on
//! the reactor thread, so no locks), added in `connection_made` and removed in
//! `connection_lost`. Data arrives in arbitrary chunks, so each client buffers up to a
//! complete line, with a bound on the line length. On Ctrl-C the server says goodbye and
//! closes every connection gracefully, holding the stop until the last one is gone.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::rc::Rc;

use torsion::prelude::*;
use torsion::reactor::{ShutdownHold, ShutdownPhase};

/// Longest line accepted; a client that sends a longer one is disconnected.
const MAX_LINE: usize = 4096;

/// One connected client, as the room sees it.
struct Member {
    name: String,
    transport: TransportHandle,
}

/// Everyone connected, by member id.
#[derive(Default)]
struct Room {
    members: BTreeMap<u64, Member>,
    next_id: u64,
    /// Holds the reactor's stop while members are still leaving.
    closing: Option<ShutdownHold>,
}

impl Room {
    /// Sends `line` to every member except `except`.
    ///
    /// The handles are collected first so no borrow of the room is held while writing.
    fn broadcast(room: &RefCell<Room>, except: Option<u64>, line: &str) {
        let targets: Vec<TransportHandle> = room
            .borrow()
            .members
            .iter()
            .filter(|(id, _)| Some(**id) != except)
            .map(|(_, m)| m.transport.clone())
            .collect();
        for t in targets {
            t.write(line.as_bytes());
        }
    }
}

/// The protocol of one chat connection.
struct ChatClient {
    room: Rc<RefCell<Room>>,
    id: u64,
    name: String,
    /// Bytes of an incomplete line.
    partial: Vec<u8>,
}

impl ChatClient {
    fn new(room: Rc<RefCell<Room>>) -> Self {
        let id = {
            let mut r = room.borrow_mut();
            r.next_id += 1;
            r.next_id
        };
        ChatClient {
            room,
            id,
            name: format!("guest{id}"),
            partial: Vec::new(),
        }
    }

    fn said(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if !text.is_empty() {
            Room::broadcast(
                &self.room,
                Some(self.id),
                &format!("<{}> {text}\r\n", self.name),
            );
        }
    }
}

impl Protocol for ChatClient {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        let others: Vec<String> = self
            .room
            .borrow()
            .members
            .values()
            .map(|m| m.name.clone())
            .collect();
        transport.write(
            format!(
                "welcome, {}! here: {}\r\n",
                self.name,
                if others.is_empty() {
                    "nobody yet".to_owned()
                } else {
                    others.join(", ")
                }
            )
            .as_bytes(),
        );
        Room::broadcast(
            &self.room,
            None,
            &format!(
                "* {} joined from {}\r\n",
                self.name,
                transport.peer_address()
            ),
        );
        self.room.borrow_mut().members.insert(
            self.id,
            Member {
                name: self.name.clone(),
                transport: transport.handle(),
            },
        );
        println!("{} joined from {}", self.name, transport.peer_address());
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        self.partial.extend_from_slice(data);
        // Complete lines first; the check after them also catches an unfinished long one.
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            if end > MAX_LINE {
                break;
            }
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.said(&line);
        }
        if self.partial.len() > MAX_LINE {
            transport.write(format!("line longer than {MAX_LINE} bytes; bye\r\n").as_bytes());
            self.partial.clear();
            transport.lose_connection();
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        let mut room = self.room.borrow_mut();
        room.members.remove(&self.id);
        if room.members.is_empty() {
            room.closing = None; // the last one left: the stop may go on
        }
        drop(room);
        Room::broadcast(&self.room, None, &format!("* {} left\r\n", self.name));
        println!("{} left: {reason}", self.name);
    }
}

fn main() -> ExitCode {
    let port = match std::env::args().nth(1) {
        None => 8001,
        Some(arg) => match arg.parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("usage: chat_server [PORT]   (PORT defaults to 8001; got {arg:?})");
                return ExitCode::from(2);
            }
        },
    };
    match serve(port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(port: u16) -> torsion::Result<()> {
    let reactor = Reactor::new()?;
    reactor.stop_on_signals()?;
    let room = Rc::new(RefCell::new(Room::default()));
    let r = room.clone();
    let listening = reactor.listen_tcp(("127.0.0.1", port), move |_peer: &Address| {
        ChatClient::new(r.clone())
    })?;
    println!(
        "chat server listening on {} (Ctrl-C to stop)",
        listening.local_address()
    );
    reactor.add_shutdown_trigger(ShutdownPhase::Before, move |r| {
        listening.stop_listening();
        Room::broadcast(&room, None, "* the server is shutting down\r\n");
        // Each connection sends what it has buffered, then closes; the stop waits for the last
        // `connection_lost` (or the reactor's shutdown timeout).
        let members: Vec<TransportHandle> = {
            let mut room = room.borrow_mut();
            if !room.members.is_empty() {
                room.closing = Some(r.hold_shutdown());
            }
            room.members.values().map(|m| m.transport.clone()).collect()
        };
        for t in members {
            t.lose_connection();
        }
    });
    reactor.run()
}
