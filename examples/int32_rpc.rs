//! A tiny request/response protocol with request ids, over Int32 strings (4-byte big-endian
//! length, then the message).
//!
//! ```text
//! cargo run --example int32_rpc                        # server and client in one process
//! cargo run --example int32_rpc -- server 9000         # just the server
//! cargo run --example int32_rpc -- client 127.0.0.1:9000
//! ```
//!
//! Each message is `id (u32, big-endian) | op or status (1 byte) | payload`:
//!
//! | op | request payload | reply payload |
//! |---|---|---|
//! | 1 `echo` | bytes | the same bytes |
//! | 2 `upper` | text | the text in upper case |
//! | 3 `add` | two u64 (big-endian) | their sum (u64) |
//! | 4 `later` | a u32 delay in ms (at most 10,000; 64 waiting per connection), then bytes | the bytes, after the delay |
//!
//! Replies carry the request's id and status 0 (ok) or 1 (error, payload = message). The
//! client pipelines all its requests at once; `later` answers out of order, so the client
//! matches replies to requests by id. Shows [`StringReceiver::int32`], [`StringHandler`],
//! replying later through a [`FrameSender`], and `send_string` returning an error when a
//! message is too long.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::cell::Cell;
use std::collections::HashMap;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use torsion::prelude::*;
use torsion::protocols::framing::{StringContext, StringHandler, StringReceiver};
use torsion::reactor::{DelayedCall, WeakReactor};

const OK: u8 = 0;
const ERR: u8 = 1;

fn message(id: u32, code: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(5 + payload.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.push(code);
    m.extend_from_slice(payload);
    m
}

/// Splits a message into `(id, code, payload)`.
fn parse(m: &[u8]) -> Option<(u32, u8, &[u8])> {
    let (head, payload) = m.split_at_checked(5)?;
    let id = u32::from_be_bytes(head[..4].try_into().ok()?);
    Some((id, head[4], payload))
}

// --- Server ---

/// The longest `later` delay a client may ask for.
const MAX_DELAY_MS: u32 = 10_000;
/// The most `later` replies one connection may have waiting.
const MAX_WAITING: usize = 64;

/// One connection's server side: the `later` replies it still owes, cancelled if the client
/// leaves first (a timer must not keep a departed client's replies alive).
#[derive(Default)]
struct Server {
    waiting: Vec<DelayedCall>,
}

impl Server {
    fn answer(op: u8, payload: &[u8]) -> Result<Vec<u8>, String> {
        match op {
            1 => Ok(payload.to_vec()),
            2 => Ok(payload.to_ascii_uppercase()),
            3 => {
                let (a, b) = payload.split_at_checked(8).ok_or("add wants two u64")?;
                let a = u64::from_be_bytes(a.try_into().map_err(|_| "add wants two u64")?);
                let b = u64::from_be_bytes(b.try_into().map_err(|_| "add wants two u64")?);
                let sum = a.checked_add(b).ok_or("overflow")?;
                Ok(sum.to_be_bytes().to_vec())
            }
            _ => Err(format!("unknown op {op}")),
        }
    }
}

impl StringHandler for Server {
    fn string_received(&mut self, ctx: &mut StringContext<'_>, request: &[u8]) {
        let Some((id, op, payload)) = parse(request) else {
            ctx.close_with_error("request shorter than its 5-byte header");
            return;
        };
        if op == 4 {
            // Reply later, from a timer, through a sender kept for the purpose.
            let Some((delay, rest)) = payload.split_at_checked(4) else {
                let _ = ctx.send_string(&message(id, ERR, b"later wants a u32 delay"));
                return;
            };
            let delay = u32::from_be_bytes(delay.try_into().expect("4 bytes"));
            self.waiting.retain(DelayedCall::active);
            if delay > MAX_DELAY_MS || self.waiting.len() >= MAX_WAITING {
                let why = format!("later takes at most {MAX_DELAY_MS} ms, {MAX_WAITING} at a time");
                let _ = ctx.send_string(&message(id, ERR, why.as_bytes()));
                return;
            }
            let reply = message(id, OK, rest);
            let sender = ctx.sender();
            let call = ctx
                .reactor()
                .call_later(Duration::from_millis(delay.into()), move |_| {
                    let _ = sender.send(&reply);
                });
            self.waiting.push(call);
            return;
        }
        let reply = match Server::answer(op, payload) {
            Ok(body) => message(id, OK, &body),
            Err(e) => message(id, ERR, e.as_bytes()),
        };
        if let Err(e) = ctx.send_string(&reply) {
            // Cannot happen with Int32 and our maximum, but this is how it would surface.
            eprintln!("reply not sent: {e}");
        }
    }

    fn connection_lost(&mut self, _reason: CloseReason) {
        for call in self.waiting.drain(..) {
            call.cancel();
        }
    }
}

// --- Client ---

struct Client {
    next_id: u32,
    pending: HashMap<u32, String>,
    ok: Rc<Cell<bool>>,
    reactor: WeakReactor,
}

impl Client {
    fn request(&mut self, ctx: &mut StringContext<'_>, what: &str, op: u8, payload: &[u8]) {
        let id = self.next_id;
        self.next_id += 1;
        match ctx.send_string(&message(id, op, payload)) {
            Ok(()) => {
                println!("-> #{id} {what}");
                self.pending.insert(id, what.to_string());
            }
            Err(e) => println!("-> {what}: not sent: {e}"),
        }
    }
}

impl StringHandler for Client {
    fn connection_made(&mut self, ctx: &mut StringContext<'_>) {
        println!("connected to {}", ctx.peer_address());
        let mut later = 300u32.to_be_bytes().to_vec();
        later.extend_from_slice(b"slow one");
        self.request(ctx, "later(300 ms, \"slow one\")", 4, &later);
        self.request(ctx, "echo(\"hello\")", 1, b"hello");
        self.request(ctx, "upper(\"torsion\")", 2, b"torsion");
        let mut add = 40u64.to_be_bytes().to_vec();
        add.extend_from_slice(&2u64.to_be_bytes());
        self.request(ctx, "add(40, 2)", 3, &add);
        self.request(ctx, "op 9", 9, b"");
    }

    fn string_received(&mut self, ctx: &mut StringContext<'_>, reply: &[u8]) {
        let Some((id, status, payload)) = parse(reply) else {
            ctx.close_with_error("reply shorter than its 5-byte header");
            return;
        };
        let Some(what) = self.pending.remove(&id) else {
            ctx.close_with_error(format!("reply to unknown request #{id}"));
            return;
        };
        let shown = if what.starts_with("add") && payload.len() == 8 {
            u64::from_be_bytes(payload.try_into().expect("8 bytes")).to_string()
        } else {
            format!("{:?}", String::from_utf8_lossy(payload))
        };
        let status = if status == OK { "ok" } else { "error" };
        println!("<- #{id} {what} = {status} {shown}");
        if self.pending.is_empty() {
            self.ok.set(true);
            ctx.lose_connection();
        }
    }

    fn connection_lost(&mut self, reason: CloseReason) {
        if !self.ok.get() {
            eprintln!(
                "connection lost with {} replies missing: {reason}",
                self.pending.len()
            );
        }
        if let Some(r) = self.reactor.upgrade() {
            r.stop();
        }
    }
}

/// Connects a client that runs the demo requests; `true` if every reply came back.
fn run_client(reactor: &Reactor, host: &str, port: u16) -> torsion::Result<bool> {
    let ok = Rc::new(Cell::new(false));
    let factory = Clients {
        ok: ok.clone(),
        reactor: reactor.downgrade(),
    };
    let _connector = reactor.connect_tcp(host, port, factory);
    reactor.run()?;
    Ok(ok.get())
}

/// Builds the client protocol, and stops the reactor when the attempt fails (the protocol's
/// `connection_lost` stops it once connected).
struct Clients {
    ok: Rc<Cell<bool>>,
    reactor: WeakReactor,
}

impl ClientFactory for Clients {
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(StringReceiver::int32(Client {
            next_id: 1,
            pending: HashMap::new(),
            ok: self.ok.clone(),
            reactor: self.reactor.clone(),
        })))
    }

    fn client_connection_failed(&mut self, connector: &Connector, reason: CloseReason) {
        eprintln!("could not connect to {}: {reason}", connector.destination());
        if let Some(r) = self.reactor.upgrade() {
            r.stop();
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] => demo(),
        ["server", port] => match port.parse() {
            Ok(port) => serve(port).map(|()| true),
            Err(_) => return usage(),
        },
        ["client", addr] => match addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse().ok()?)))
        {
            Some((host, port)) => Reactor::new().and_then(|r| run_client(&r, host, port)),
            None => return usage(),
        },
        _ => return usage(),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("int32_rpc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: int32_rpc [server PORT | client HOST:PORT]");
    ExitCode::from(2)
}

fn serve(port: u16) -> torsion::Result<()> {
    let reactor = Reactor::new()?;
    reactor.stop_on_signals()?;
    let listening = reactor.listen_tcp(("127.0.0.1", port), |_: &Address| {
        StringReceiver::int32(Server::default())
    })?;
    println!(
        "rpc server on {} (Ctrl-C to stop)",
        listening.local_address()
    );
    reactor.run()
}

/// Server and client in one process, on a free port.
fn demo() -> torsion::Result<bool> {
    let reactor = Reactor::new()?;
    let listening = reactor.listen_tcp("127.0.0.1:0", |_: &Address| {
        StringReceiver::int32(Server::default())
    })?;
    let port = listening.local_address().port().expect("a TCP port");
    println!("rpc server on 127.0.0.1:{port}");
    run_client(&reactor, "127.0.0.1", port)
}
