//! `torsion serve`: built-in protocols on endpoint strings.

use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use torsion::protocols::framing::{frame_echo, FrameEchoOptions, Framing};
use torsion::protocols::policies::ConnectionLimits;
use torsion::protocols::wire::{
    Chargen, DatagramDiscard, DatagramEcho, Daytime, Discard, Echo, Qotd,
};
use torsion::reactor::{BackendKind, ShutdownPhase, DEFAULT_BUSY_POLL};
use torsion::{Address, ListeningPort, LoopingCall, Reactor, ServerEndpoint, SharedFactory};

/// The longest quote `qotd` serves (RFC 865).
const QOTD_MAX: usize = 512;

/// How long a graceful stop waits for open connections to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The built-in protocols.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Service {
    /// RFC 862: send back what arrives.
    Echo,
    /// RFC 863: drop what arrives.
    Discard,
    /// RFC 864: stream a character pattern.
    Chargen,
    /// RFC 867: send the date and time, then close.
    Daytime,
    /// RFC 865: send a quote, then close.
    Qotd,
    /// Decode frames (--framing) and send each back in the same framing.
    FrameEcho,
}

/// Arguments of `torsion serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The protocol to serve.
    service: Service,

    /// Where to listen, as an endpoint description: tcp:PORT[:interface=ADDR][:backlog=N],
    /// tcp6:PORT[:interface=ADDR], unix:PATH[:mode=660],
    /// tls:PORT:certKey=CERT.pem:privateKey=KEY.pem[:interface=ADDR][:caCerts=CA.pem],
    /// tlsunix:PATH:certKey=..:privateKey=..[:mode=660], and for echo and discard also
    /// udp:PORT[:interface=ADDR], udp6:PORT, unixgram:PATH. Repeatable.
    #[arg(long = "listen", short = 'l', value_name = "ENDPOINT", required = true)]
    listen: Vec<String>,

    /// The quote `qotd` serves (`\r\n` is a line break), at most 512 characters.
    #[arg(long, default_value = torsion::protocols::wire::DEFAULT_QUOTE)]
    quote: String,

    /// frame-echo: the framing (lines (ending in CRLF), netstring, int8, int16, int32).
    #[arg(long, default_value = "lines")]
    framing: Framing,

    /// frame-echo: the largest frame accepted; a longer one closes the connection (default:
    /// 16384 for lines, 99999 for the others).
    #[arg(long, value_name = "BYTES")]
    max_length: Option<usize>,

    /// frame-echo: close a connection idle (no bytes either way) this many seconds.
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<f64>,

    /// Refuse connections beyond this many open at once (over all endpoints).
    #[arg(long, value_name = "N")]
    max_conns: Option<NonZeroUsize>,

    /// Refuse connections beyond this many open at once from one IP address (Unix-socket
    /// peers have none: only --max-conns limits them).
    #[arg(long, value_name = "N")]
    max_conns_per_peer: Option<NonZeroUsize>,

    /// The most the event loop spins (polls without sleeping) before it blocks, in
    /// microseconds; the window adapts to the traffic and closes when idle. 0 turns it off.
    #[arg(long, value_name = "MICROS", default_value_t = DEFAULT_BUSY_POLL.as_micros() as u64)]
    busy_poll_us: u64,

    /// The readiness backend (as twistd's --reactor): auto picks the platform's best.
    #[arg(long, value_enum, default_value_t = ReactorChoice::Auto)]
    reactor: ReactorChoice,
}

/// `--reactor`: which readiness backend the event loop runs on.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReactorChoice {
    /// The platform's best (see the manual's *Backends*).
    Auto,
    /// epoll through rustix (Linux only).
    Epoll,
    /// The portable `polling` crate.
    Polling,
}

impl From<ReactorChoice> for BackendKind {
    fn from(choice: ReactorChoice) -> Self {
        match choice {
            ReactorChoice::Auto => BackendKind::Auto,
            ReactorChoice::Epoll => BackendKind::Epoll,
            ReactorChoice::Polling => BackendKind::Polling,
        }
    }
}

/// `--idle-timeout SECS` as a duration: a positive number of seconds that fits a `Duration`
/// and is not below its one-nanosecond resolution; otherwise the one-line reason.
fn idle_timeout(secs: f64) -> Result<Duration, String> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) if secs > 0.0 => Err(format!(
            "--idle-timeout {secs} is below the resolution of one nanosecond"
        )),
        Err(_) if secs.is_finite() && secs > 0.0 => Err(format!(
            "--idle-timeout {secs:e} is too large (at most {} seconds)",
            Duration::MAX.as_secs()
        )),
        _ => Err(format!(
            "--idle-timeout must be a positive, finite number of seconds, not {secs}"
        )),
    }
}

/// RFC 865: the quote "should be less than 512 characters"; an empty one would be an empty
/// reply. `Err` is the one-line reason.
fn check_quote(quote: &str) -> Result<(), String> {
    let chars = quote.replace("\\r\\n", "\r\n").chars().count();
    match chars {
        0 => Err("--quote must not be empty".into()),
        1..=QOTD_MAX => Ok(()),
        _ => Err(format!(
            "--quote is {chars} characters; RFC 865 allows at most {QOTD_MAX}"
        )),
    }
}

fn factory(args: &ServeArgs, idle_timeout: Option<Duration>) -> SharedFactory {
    let inner = service_factory(args, idle_timeout);
    if args.max_conns.is_none() && args.max_conns_per_peer.is_none() {
        return inner;
    }
    SharedFactory::new(ConnectionLimits::new(
        inner,
        args.max_conns.map(NonZeroUsize::get),
        args.max_conns_per_peer.map(NonZeroUsize::get),
    ))
}

fn service_factory(args: &ServeArgs, idle_timeout: Option<Duration>) -> SharedFactory {
    let quote = &args.quote;
    match args.service {
        Service::FrameEcho => {
            let framing = args.framing;
            let options = FrameEchoOptions {
                max_length: args.max_length,
                idle_timeout,
            };
            SharedFactory::new(move |_: &Address| frame_echo(framing, options.clone()))
        }
        Service::Echo => SharedFactory::new(|_: &Address| Echo),
        Service::Discard => SharedFactory::new(|_: &Address| Discard),
        Service::Chargen => SharedFactory::new(|_: &Address| Chargen),
        Service::Daytime => SharedFactory::new(|_: &Address| Daytime::default()),
        Service::Qotd => {
            let qotd = Qotd::new(quote.replace("\\r\\n", "\r\n"));
            SharedFactory::new(move |_: &Address| qotd.clone())
        }
    }
}

/// Runs `torsion serve`; exit code 2 for a bad endpoint, 1 for a failure to listen.
pub fn run(args: ServeArgs) -> ExitCode {
    let mut endpoints = Vec::new();
    for desc in &args.listen {
        let shown = torsion_transports::one_line(desc);
        match ServerEndpoint::parse(desc) {
            Ok(ep)
                if ep.is_datagram()
                    && !matches!(args.service, Service::Echo | Service::Discard) =>
            {
                eprintln!(
                    "torsion: bad endpoint '{shown}': datagram endpoints serve echo and discard only"
                );
                return ExitCode::from(2);
            }
            Ok(ep) => endpoints.push(ep),
            Err(e) => {
                eprintln!("torsion: bad endpoint '{shown}': {e}");
                return ExitCode::from(2);
            }
        }
    }
    if matches!(args.service, Service::Qotd) {
        if let Err(e) = check_quote(&args.quote) {
            eprintln!("torsion: {e}");
            return ExitCode::from(2);
        }
    }
    let idle = match args.idle_timeout.map(idle_timeout).transpose() {
        Ok(idle) => idle,
        Err(e) => {
            eprintln!("torsion: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(&args, &endpoints, idle) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("torsion: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(
    args: &ServeArgs,
    endpoints: &[ServerEndpoint],
    idle_timeout: Option<Duration>,
) -> torsion::Result<()> {
    let service = args.service;
    let reactor = Reactor::with_backend(args.reactor.into())?;
    reactor.stop_on_signals()?;
    reactor.set_shutdown_timeout(DRAIN_TIMEOUT);
    reactor.set_busy_poll(Duration::from_micros(args.busy_poll_us));
    let factory = factory(args, idle_timeout);
    let mut ports = Vec::new();
    let mut datagram_ports = Vec::new();
    let started = endpoints.iter().try_for_each(|ep| -> torsion::Result<()> {
        if ep.is_datagram() {
            let port = match service {
                Service::Discard => ep.listen_datagram(&reactor, DatagramDiscard)?,
                _ => ep.listen_datagram(&reactor, DatagramEcho)?,
            };
            println!(
                "{service:?} listening on {}",
                ep.bound_to(&port.local_address())
            );
            datagram_ports.push(port);
        } else {
            let port = ep.listen(&reactor, factory.clone())?;
            println!(
                "{service:?} listening on {}",
                ep.bound_to(&port.local_address())
            );
            ports.push(port);
        }
        Ok(())
    });
    if let Err(e) = started {
        // Nothing stays behind from the endpoints that did start (Unix socket files).
        ports.iter().for_each(|p| p.stop_listening());
        datagram_ports.iter().for_each(|p| p.stop_listening());
        return Err(e);
    }
    let ports = Rc::new(ports);
    reactor.add_shutdown_trigger(ShutdownPhase::Before, move |r| {
        for p in &datagram_ports {
            p.stop_listening();
        }
        drain(r, ports)
    });
    reactor.run()
}

/// Graceful stop: stop accepting, close every connection, hold the stop until they are gone.
fn drain(reactor: &Reactor, ports: Rc<Vec<ListeningPort>>) {
    for p in ports.iter() {
        p.stop_listening();
        p.lose_connections();
    }
    let open: usize = ports.iter().map(ListeningPort::connection_count).sum();
    tracing::info!(open, "stopped listening; closing connections");
    if open == 0 {
        return;
    }
    let hold = std::cell::RefCell::new(Some(reactor.hold_shutdown()));
    let looping = Rc::new(std::cell::RefCell::new(None::<LoopingCall>));
    let l = looping.clone();
    let call = LoopingCall::start(reactor, Duration::from_millis(20), false, move |_, _| {
        if ports.iter().all(|p| p.connection_count() == 0) {
            hold.borrow_mut().take();
            if let Some(lc) = l.borrow_mut().take() {
                lc.stop();
            }
        }
    });
    *looping.borrow_mut() = Some(call);
}
