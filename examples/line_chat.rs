//! A chat server on the line receiver, with nicknames (Twisted's classic chat example).
//!
//! ```text
//! cargo run --example line_chat -- 8123
//! ```
//!
//! Then connect a few clients with `nc -C 127.0.0.1 8123` (or `telnet`): lines end in CRLF, as
//! with Twisted's `LineReceiver`, and `-C` makes `nc` send them. The server asks for a
//! nickname; after that every line is sent to everyone else as `<nick> line`. Commands:
//! `/nick NEW` renames, `/who` lists who is here, `/quit` leaves.
//!
//! It shows [`LineReceiver`] and [`LineHandler`], [`FrameSender`] for writing to other
//! connections, and two policies: an [`IdleTimeout`] (ten silent minutes and you are out)
//! and [`ConnectionLimits`] (at most 100 clients, 5 per address). Ctrl-C stops it.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use torsion::prelude::*;
use torsion::protocols::framing::{FrameSender, LineContext, LineHandler, LineReceiver};
use torsion::protocols::policies::{ConnectionLimits, IdleTimeout};

/// Everyone in the room, by nickname.
type Room = Rc<RefCell<BTreeMap<String, FrameSender>>>;

/// Longest line a client may send; longer ones close the connection.
const MAX_LINE: usize = 512;

/// One client: first a nickname, then chat.
struct Chatter {
    room: Room,
    nick: Option<String>,
}

impl Chatter {
    /// Sends `line` to everyone but `from`.
    fn broadcast(&self, from: &FrameSender, line: &str) {
        for sender in self.room.borrow().values() {
            if !sender.same_connection(from) {
                let _ = sender.send(line.as_bytes());
            }
        }
    }

    fn valid_nick(nick: &str) -> bool {
        (1..=20).contains(&nick.len())
            && nick
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    /// Claims `nick` for this connection; `false` if it is taken or invalid.
    fn claim(&mut self, ctx: &mut LineContext<'_>, nick: &str) -> bool {
        if !Self::valid_nick(nick) {
            ctx.send_line(b"* nicknames are 1-20 letters, digits, '_' or '-'");
            return false;
        }
        if self.room.borrow().contains_key(nick) {
            ctx.send_line(format!("* {nick} is taken, choose another").as_bytes());
            return false;
        }
        self.room
            .borrow_mut()
            .insert(nick.to_string(), ctx.sender());
        self.nick = Some(nick.to_string());
        true
    }

    fn command(&mut self, ctx: &mut LineContext<'_>, nick: &str, line: &str) {
        let me = ctx.sender();
        match line.split_once(' ').unwrap_or((line, "")) {
            ("/quit", _) => {
                ctx.send_line(b"* bye");
                ctx.lose_connection();
            }
            ("/who", _) => {
                let who: Vec<String> = self.room.borrow().keys().cloned().collect();
                ctx.send_line(format!("* here: {}", who.join(", ")).as_bytes());
            }
            ("/nick", new) => {
                let new = new.trim();
                self.room.borrow_mut().remove(nick);
                if self.claim(ctx, new) {
                    self.broadcast(&me, &format!("* {nick} is now {new}"));
                    ctx.send_line(format!("* you are now {new}").as_bytes());
                } else {
                    // Keep the old name.
                    self.room.borrow_mut().insert(nick.to_string(), me);
                    self.nick = Some(nick.to_string());
                }
            }
            _ => ctx.send_line(b"* commands: /nick NEW, /who, /quit"),
        }
    }
}

impl LineHandler for Chatter {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        ctx.send_line(b"* welcome! what is your nickname?");
    }

    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        let Some(nick) = self.nick.clone() else {
            if self.claim(ctx, line) {
                ctx.send_line(format!("* hello {line}; /who lists who is here").as_bytes());
                self.broadcast(&ctx.sender(), &format!("* {line} joined"));
                println!("{} joined as {line}", ctx.peer_address());
            }
            return;
        };
        if line.starts_with('/') {
            self.command(ctx, &nick, line);
        } else if !line.is_empty() {
            self.broadcast(&ctx.sender(), &format!("<{nick}> {line}"));
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        if let Some(nick) = self.nick.take() {
            let sender = self.room.borrow_mut().remove(&nick);
            if let Some(sender) = sender {
                self.broadcast(&sender, &format!("* {nick} left"));
            }
            println!("{nick} left ({reason})");
        }
    }
}

fn main() -> ExitCode {
    let port = match std::env::args().nth(1) {
        None => 8123,
        Some(arg) => match arg.parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                eprintln!("usage: line_chat [PORT]   (PORT defaults to 8123; got {arg:?})");
                return ExitCode::from(2);
            }
        },
    };
    match serve(port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("line_chat: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(port: u16) -> torsion::Result<()> {
    let reactor = Reactor::new()?;
    reactor.stop_on_signals()?;
    let room = Room::default();
    let chat = move |_peer: &Address| {
        let chatter = Chatter {
            room: room.clone(),
            nick: None,
        };
        IdleTimeout::new(
            LineReceiver::new(chatter).max_length(MAX_LINE),
            Duration::from_secs(600),
        )
    };
    let factory = ConnectionLimits::new(chat, Some(100), Some(5));
    let listening = reactor.listen_tcp(("127.0.0.1", port), factory)?;
    println!(
        "chat server on {} (try `nc -C 127.0.0.1 {port}`: lines end in CRLF; Ctrl-C to stop)",
        listening.local_address()
    );
    reactor.run()?;
    println!("stopped");
    Ok(())
}
