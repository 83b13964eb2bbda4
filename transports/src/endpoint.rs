//! Endpoint descriptions in Twisted's syntax: a server as `tcp:8000:interface=127.0.0.1`
//! ([`ServerEndpoint`], Twisted's `serverFromString`), a client as `tcp:example.com:80`
//! ([`ClientEndpoint`], Twisted's `clientFromString`).
//!
//! # Server endpoints
//!
//! | type | form | keys |
//! |---|---|---|
//! | `tcp` | `tcp:PORT` | `interface=ADDR` (default `0.0.0.0`), `backlog=N` (default 50) |
//! | `tcp6` | `tcp6:PORT` | `interface=ADDR` (default `::`), `backlog=N` |
//! | `unix` | `unix:PATH` | `mode=OCTAL` (for example `660`), `backlog=N`; a path starting with `@` is a Linux abstract name (no file, so no `mode`); Twisted's `lockfile=` is accepted and ignored (a stale file is detected by connecting to it) |
//! | `tls` (or `ssl`) | `tls:PORT:certKey=CERT.pem:privateKey=KEY.pem` | as `tcp`/`tcp6` (an IPv6 `interface` selects IPv6), plus `caCerts=CA.pem` to require client certificates from that CA |
//! | `tlsunix` | `tlsunix:PATH:certKey=CERT.pem:privateKey=KEY.pem` | TLS over a Unix socket path (not an abstract name); as `unix`, plus `caCerts` |
//! | `udp` | `udp:PORT` | `interface=ADDR` (default `0.0.0.0`) — a datagram endpoint |
//! | `udp6` | `udp6:PORT` | `interface=ADDR` (default `::`) — a datagram endpoint |
//! | `unixgram` | `unixgram:PATH` | a Unix datagram socket — a datagram endpoint |
//!
//! Stream endpoints are opened with [`ServerEndpoint::listen`] and a factory; datagram
//! endpoints with [`ServerEndpoint::listen_datagram`] and one protocol.
//!
//! # Client endpoints
//!
//! | type | form | keys |
//! |---|---|---|
//! | `tcp` | `tcp:HOST:PORT` | `timeout=SECONDS` (default 30, fractions allowed), `bindAddress=ADDR` (a local IP to connect from, or `IP\:PORT`; of the destination's family: an IP host of the other family is refused here, and of a name's addresses only those of that family are tried) |
//! | `unix` | `unix:PATH` | `timeout=SECONDS`; a path starting with `@` is a Linux abstract name |
//! | `tls` (or `ssl`) | `tls:HOST:PORT` | as `tcp`, plus `caCerts=CA.pem` (default: the Mozilla roots of `webpki-roots`) and `certificate=CERT.pem:privateKey=KEY.pem` (a client certificate, for servers that require one; both or neither) |
//! | `tlsunix` | `tlsunix:PATH:host=NAME` | TLS over a Unix socket path (not an abstract name), the server's certificate verified against `NAME`; `caCerts`, `certificate` + `privateKey` as `tls` |
//!
//! A client endpoint is opened with [`ClientEndpoint::connect`] and a client factory. HOST is
//! a DNS name, an IPv4 address, or an IPv6 address in brackets (`tcp:[::1]:8000`) or with
//! escaped colons (`tcp:\:\:1:8000`); there is no `tcp6` for clients. A TLS client verifies
//! the server's certificate against HOST (also the SNI name), always: a server with a private
//! CA needs `caCerts=`. The PEM files are read by `connect`, so an unreadable file is an error
//! returned there, naming the option and the file.
//!
//! # Syntax
//!
//! Positional values may also be given by name (`tcp:port=8000`, `unix:address=/run/s.sock`;
//! for clients `tcp:host=example.com:port=80`, `unix:path=/run/s.sock`). Colons inside a value
//! are escaped with a backslash as in Twisted (`interface=\:\:1`, `unix:/tmp/a\:b`), or an
//! IPv6 address is written in brackets (`interface=[::1]`). A backslash escapes any character,
//! itself included (`unix:/tmp/a\=b` is the path `/tmp/a=b`, not an option). Displaying an
//! endpoint gives a description that parses back to it.
//!
//! ```
//! use torsion_transports::{ClientEndpoint, ServerEndpoint};
//!
//! let ep: ServerEndpoint = "tcp:8000:interface=127.0.0.1".parse()?;
//! assert_eq!(ep.to_string(), "tcp:8000:interface=127.0.0.1");
//! let ep: ServerEndpoint = r"tcp6:8000:interface=\:\:1".parse()?;
//! assert_eq!(ep.to_string(), "tcp6:8000:interface=[::1]");
//! assert!("tcp:http".parse::<ServerEndpoint>().is_err());
//!
//! let ep: ClientEndpoint = "tls:example.com:443:caCerts=/etc/app/ca.pem".parse()?;
//! assert_eq!(ep.to_string(), "tls:example.com:443:caCerts=/etc/app/ca.pem");
//! let ep = ClientEndpoint::parse(r"tcp:\:\:1:8000:timeout=2.5")?;
//! assert_eq!(ep.to_string(), "tcp:[::1]:8000:timeout=2.5");
//! let ep = ClientEndpoint::parse("unix:@torsion-echo")?;
//! assert_eq!(ep.to_string(), "unix:@torsion-echo");
//! let error = ClientEndpoint::parse("tls:example.com:443:certificate=me.pem").unwrap_err();
//! assert!(error.to_string().contains("privateKey="));
//! # Ok::<(), torsion_transports::EndpointError>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use torsion_reactor::{
    Address, ClientFactory, Connector, DatagramProtocol, Error, Reactor, Result, SharedFactory,
};

use crate::connector::{ConnectOptions, UnixTarget};
use crate::datagram::DatagramPort;
use crate::listener::ListeningPort;
use crate::tcp::{TcpListenOptions, DEFAULT_BACKLOG};
use crate::tls::{
    load_certificates, load_private_key, ClientTlsConfig, ServerTlsConfig, TlsReactorExt,
};
use crate::unix::UnixListenOptions;
use crate::ReactorExt;

/// Why an endpoint description was rejected; the message names the offending part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointError(String);

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EndpointError {}

impl From<EndpointError> for Error {
    /// A rejected description is an [`Error::InvalidAddress`] carrying the same message.
    fn from(e: EndpointError) -> Self {
        Error::InvalidAddress(e.0)
    }
}

/// A refusal; the message quotes the description's text, so line breaks and other control
/// characters in it are escaped (`\n`, `\u{0}`) to keep the message one readable line.
fn err<T>(msg: impl Into<String>) -> std::result::Result<T, EndpointError> {
    let msg: String = msg.into();
    Err(EndpointError(one_line(&msg).into_owned()))
}

/// `text` with its control characters and line separators escaped (`\r`, `\n`, `\u{2028}`),
/// so that a message quoting user input (an endpoint string from a file, say) stays on one
/// line; everything else, backslashes included, is left as it is.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    let breaks = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !text.contains(breaks) {
        return text.into();
    }
    let mut line = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if breaks(c) {
            line.extend(c.escape_debug());
        } else {
            line.push(c);
        }
    }
    line.into()
}

/// The PEM files of a TLS server endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (`certKey=`).
    pub cert: PathBuf,
    /// The private key (`privateKey=`).
    pub key: PathBuf,
    /// A CA whose client certificates are required (`caCerts=`; mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// A parsed server endpoint description; [`listen`](ServerEndpoint::listen) opens it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEndpoint {
    /// A TCP port (`tcp:` or `tcp6:`).
    Tcp {
        /// The address to bind.
        addr: SocketAddr,
        /// The listen backlog.
        backlog: i32,
    },
    /// A UDP port (`udp:` or `udp6:`).
    Udp {
        /// The address to bind.
        addr: SocketAddr,
    },
    /// A Unix datagram socket path (`unixgram:`).
    UnixDatagram {
        /// The socket path.
        path: PathBuf,
    },
    /// TLS over a TCP endpoint (`tls:`, also spelled `ssl:`) or a Unix one (`tlsunix:`).
    Tls {
        /// The stream endpoint under TLS.
        inner: Box<ServerEndpoint>,
        /// The certificate, key and optional client CA.
        files: TlsFiles,
    },
    /// A Unix socket path, or a Linux abstract name when it starts with `@`.
    Unix {
        /// The socket path.
        path: PathBuf,
        /// The file mode to set.
        mode: Option<u32>,
        /// The listen backlog.
        backlog: i32,
    },
}

/// Splits on unescaped colons; `\x` is `x`, and colons inside `[...]` are kept. Each part
/// comes with where its first unescaped `=` is (an option's `key=value`; `\=` is a value's).
fn split(desc: &str) -> Vec<(String, Option<usize>)> {
    let mut parts = vec![(String::new(), None)];
    let mut chars = desc.chars();
    let mut depth = 0;
    while let Some(c) = chars.next() {
        let (part, eq) = parts.last_mut().expect("non-empty");
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    part.push(n);
                }
            }
            '[' => {
                depth += 1;
                part.push(c);
            }
            ']' => {
                depth -= 1;
                part.push(c);
            }
            ':' if depth <= 0 => parts.push((String::new(), None)),
            '=' if eq.is_none() => {
                *eq = Some(part.len());
                part.push(c);
            }
            _ => part.push(c),
        }
    }
    parts
}

/// The inverse of [`split`] for one value: escapes what it would interpret.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ':' | '[' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A path written as a value (see [`escape`]).
fn escape_path(path: &Path) -> String {
    escape(&path.to_string_lossy())
}

/// A path written as the positional value of its type; a path containing `=` would read as an
/// option, so it is given by `name=` instead (`\=` would do too, but reads worse).
fn positional_path(name: &str, path: &Path) -> String {
    let value = escape_path(path);
    if value.contains('=') {
        format!("{name}={value}")
    } else {
        value
    }
}

/// A description split into its type, its positional values and its `key=value` options.
struct Description {
    kind: String,
    positional: Vec<String>,
    keys: Vec<(String, String)>,
}

impl Description {
    fn parse(desc: &str) -> Self {
        let mut parts = split(desc).into_iter();
        let kind = parts.next().unwrap_or_default().0;
        let mut positional = Vec::new();
        let mut keys = Vec::new();
        for (p, eq) in parts {
            match eq {
                Some(at) => keys.push((p[..at].to_owned(), p[at + 1..].to_owned())),
                None => positional.push(p),
            }
        }
        Description {
            kind,
            positional,
            keys,
        }
    }
}

fn parse_port(value: &str) -> std::result::Result<u16, EndpointError> {
    value
        .parse()
        .or_else(|_| err(format!("port '{value}' is not a number from 0 to 65535")))
}

/// The endpoint type names used in messages: `kind` is the type being parsed (`tcp`, `tcp6`,
/// `udp`, `udp6`, `unix`), `shown` the one the user wrote (the same, or `tls`, `ssl`,
/// `tlsunix` for the TLS endpoints, which are parsed as `tcp`, `tcp6` or `unix`).
#[derive(Clone, Copy)]
struct Kinds<'a> {
    kind: &'a str,
    shown: &'a str,
}

impl Kinds<'_> {
    /// `true` when parsing the transport under a TLS endpoint.
    fn tls(&self) -> bool {
        self.kind != self.shown
    }

    /// The IPv6 flavour of a plain TCP or UDP endpoint (`tcp6` or `udp6`).
    fn v6(&self) -> &'static str {
        if self.kind.starts_with("udp") {
            "udp6"
        } else {
            "tcp6"
        }
    }
}

fn parse_ip(value: &str, v6: bool, kinds: Kinds<'_>) -> std::result::Result<IpAddr, EndpointError> {
    let bare = value.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = bare
        .parse()
        .or_else(|_| err(format!("interface={value} is not an IP address")))?;
    let shown = kinds.shown;
    if v6 && ip.is_ipv4() {
        if kinds.tls() {
            // Only reached when another interface= was IPv6 (which selects IPv6).
            return err(format!(
                "{shown} endpoint has an IPv6 interface and interface={value}: give one interface"
            ));
        }
        return err(format!("{shown} needs an IPv6 interface, not {value}"));
    }
    if !v6 && ip.is_ipv6() {
        if kinds.tls() {
            return err(format!(
                "interface={value} is IPv6: write it in brackets, as in {shown}:PORT:interface=[::1]"
            ));
        }
        let v6 = kinds.v6();
        return err(format!(
            "interface={value} is IPv6: use {v6}:PORT:interface=..."
        ));
    }
    Ok(ip)
}

fn parse_backlog(value: &str) -> std::result::Result<i32, EndpointError> {
    match value.parse::<i32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => err(format!("backlog={value} is not a positive whole number")),
    }
}

/// TLS over a Unix socket runs on a path: the TLS entry points have no abstract-name variant.
fn check_tls_unix_path(kind: &str, path: &str) -> std::result::Result<(), EndpointError> {
    if path.starts_with('@') {
        return err(format!(
            "{kind} cannot use the abstract name '{path}': TLS over Unix sockets needs a \
             socket path (write a file whose name starts with @ as ./@NAME)"
        ));
    }
    Ok(())
}

impl FromStr for ServerEndpoint {
    type Err = EndpointError;

    fn from_str(desc: &str) -> std::result::Result<Self, EndpointError> {
        let Description {
            kind,
            positional,
            keys,
        } = Description::parse(desc);
        let kind = kind.as_str();
        // A value given twice (by name, or by position and by name) is refused, as on the
        // client side: silently keeping the last one would listen somewhere unexpected.
        let positional_name = match kind {
            "tcp" | "tcp6" | "udp" | "udp6" | "tls" | "ssl" => Some("port"),
            "unix" | "unixgram" | "tlsunix" => Some("address"),
            _ => None,
        };
        if let Some(positional_name) = positional_name {
            for (i, (k, _)) in keys.iter().enumerate() {
                let by_position = k == positional_name && !positional.is_empty();
                if by_position || keys[..i].iter().any(|(n, _)| n == k) {
                    return err(format!("{k} is given twice in {kind} endpoint"));
                }
            }
        }
        match kind {
            "tls" | "ssl" | "tlsunix" => {
                let mut files = TlsFiles::default();
                let mut rest = Vec::new();
                for (k, v) in keys {
                    match k.as_str() {
                        "certKey" => files.cert = PathBuf::from(v),
                        "privateKey" => files.key = PathBuf::from(v),
                        "caCerts" if v.is_empty() => {
                            return err(format!("option caCerts= has no value in {kind} endpoint"))
                        }
                        "caCerts" => files.client_ca = Some(PathBuf::from(v)),
                        _ => rest.push((k, v)),
                    }
                }
                if files.cert.as_os_str().is_empty() {
                    return err(format!(
                        "{kind} endpoint needs certKey=CERT.pem (try `torsion certs create`)"
                    ));
                }
                if files.key.as_os_str().is_empty() {
                    return err(format!("{kind} endpoint needs privateKey=KEY.pem"));
                }
                let inner_kind = if kind == "tlsunix" {
                    let path = positional
                        .first()
                        .or_else(|| rest.iter().find_map(|(k, v)| (k == "address").then_some(v)));
                    check_tls_unix_path(kind, path.map_or("", |p| p.as_str()))?;
                    "unix"
                } else if rest.iter().any(|(k, v)| {
                    k == "interface"
                        && v.trim_matches(|c| c == '[' || c == ']')
                            .parse::<Ipv6Addr>()
                            .is_ok()
                }) {
                    "tcp6"
                } else {
                    "tcp"
                };
                let kinds = Kinds {
                    kind: inner_kind,
                    shown: kind,
                };
                let inner = parse_parts(kinds, positional, rest)?;
                Ok(ServerEndpoint::Tls {
                    inner: Box::new(inner),
                    files,
                })
            }
            _ => parse_parts(Kinds { kind, shown: kind }, positional, keys),
        }
    }
}

/// Parses a `tcp`, `tcp6`, `udp`, `udp6`, `unix` or `unixgram` description (also the transport
/// part of a TLS one, with the TLS keys already taken out); messages name `kinds.shown`.
fn parse_parts(
    kinds: Kinds<'_>,
    positional: Vec<String>,
    keys: Vec<(String, String)>,
) -> std::result::Result<ServerEndpoint, EndpointError> {
    let Kinds { kind, shown } = kinds;
    // The keys a TLS endpoint takes besides those of its transport (already taken out).
    let tls_keys = if kinds.tls() {
        ", certKey, privateKey, caCerts"
    } else {
        ""
    };
    {
        match kind {
            "tcp" | "tcp6" | "udp" | "udp6" => {
                let v6 = kind.ends_with('6');
                let datagram = kind.starts_with("udp");
                let mut port = positional.first().cloned();
                if positional.len() > 1 {
                    let extra = &positional[1];
                    if kinds.tls() {
                        return err(format!(
                            "unexpected '{extra}' in {shown} endpoint (an IPv6 address needs \
                             escaped colons or brackets: {shown}:PORT:interface=[::1])"
                        ));
                    }
                    let v6 = kinds.v6();
                    return err(format!(
                        "unexpected '{extra}' in {kind} endpoint (an IPv6 address needs {v6} and \
                         escaped colons or brackets: {v6}:PORT:interface=[::1])"
                    ));
                }
                let mut ip: IpAddr = if v6 {
                    Ipv6Addr::UNSPECIFIED.into()
                } else {
                    Ipv4Addr::UNSPECIFIED.into()
                };
                let mut backlog = DEFAULT_BACKLOG;
                for (k, v) in keys {
                    match k.as_str() {
                        "port" => port = Some(v),
                        "interface" => ip = parse_ip(&v, v6, kinds)?,
                        "backlog" if !datagram => backlog = parse_backlog(&v)?,
                        _ if datagram => {
                            return err(format!(
                                "unknown option '{k}' for {kind} (known: port, interface)"
                            ))
                        }
                        _ => {
                            return err(format!(
                                "unknown option '{k}' for {shown} \
                                 (known: port, interface, backlog{tls_keys})"
                            ))
                        }
                    }
                }
                let Some(port) = port else {
                    return err(format!("{shown} endpoint needs a port, as in {shown}:8000"));
                };
                let port = parse_port(&port)?;
                let addr = SocketAddr::new(ip, port);
                Ok(if datagram {
                    ServerEndpoint::Udp { addr }
                } else {
                    ServerEndpoint::Tcp { addr, backlog }
                })
            }
            "unixgram" => {
                if let Some(extra) = positional.get(1) {
                    return err(format!(
                        "unexpected '{extra}' in unixgram endpoint (escape colons in paths as \\:)"
                    ));
                }
                let mut path = positional.first().cloned();
                for (k, v) in keys {
                    match k.as_str() {
                        "address" => path = Some(v),
                        _ => {
                            return err(format!(
                                "unknown option '{k}' for unixgram (known: address)"
                            ))
                        }
                    }
                }
                match path {
                    Some(p) if p.starts_with('@') => err(format!(
                        "unixgram takes a path, not an abstract name ({p}): as in unixgram:/tmp/echo.sock"
                    )),
                    Some(p) if !p.is_empty() => Ok(ServerEndpoint::UnixDatagram {
                        path: PathBuf::from(p),
                    }),
                    _ => err("unixgram endpoint needs a path, as in unixgram:/tmp/echo.sock"),
                }
            }
            "unix" => {
                let mut path = positional.first().cloned();
                if positional.len() > 1 {
                    return err(format!(
                        "unexpected '{}' in {shown} endpoint (escape colons in paths as \\:)",
                        positional[1]
                    ));
                }
                let mut mode = None;
                let mut backlog = DEFAULT_BACKLOG;
                for (k, v) in keys {
                    match k.as_str() {
                        "address" => path = Some(v),
                        "mode" => match u32::from_str_radix(&v, 8) {
                            Ok(m) if m <= 0o7777 => mode = Some(m),
                            _ => {
                                return err(format!(
                                    "mode={v} is not an octal file mode such as 660"
                                ))
                            }
                        },
                        "backlog" => backlog = parse_backlog(&v)?,
                        "lockfile" => {}
                        _ => {
                            return err(format!(
                                "unknown option '{k}' for {shown} \
                                 (known: address, mode, backlog{tls_keys})"
                            ))
                        }
                    }
                }
                if let (Some(p), Some(m)) = (&path, mode) {
                    if p.starts_with('@') {
                        return err(format!(
                            "mode={m:o} has no meaning for the abstract name '{p}' (it has no file)"
                        ));
                    }
                }
                if path.as_deref() == Some("@") {
                    return err(format!(
                        "{shown}:@ needs an abstract name after @, as in {shown}:@echo"
                    ));
                }
                match path {
                    Some(p) if !p.is_empty() => Ok(ServerEndpoint::Unix {
                        path: PathBuf::from(p),
                        mode,
                        backlog,
                    }),
                    _ => err(format!(
                        "{shown} endpoint needs a path, as in {shown}:/tmp/echo.sock"
                    )),
                }
            }
            "" => err("empty endpoint description; try tcp:8000"),
            other => err(format!(
                "unknown endpoint type '{other}' (known: tcp, tcp6, unix, tls, tlsunix, udp, udp6, unixgram)"
            )),
        }
    }
}

impl fmt::Display for ServerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerEndpoint::Tcp { addr, backlog } => {
                let kind = if addr.is_ipv6() { "tcp6" } else { "tcp" };
                match addr.ip() {
                    IpAddr::V4(ip) => write!(f, "{kind}:{}:interface={ip}", addr.port())?,
                    IpAddr::V6(ip) => write!(f, "{kind}:{}:interface=[{ip}]", addr.port())?,
                }
                if *backlog != DEFAULT_BACKLOG {
                    write!(f, ":backlog={backlog}")?;
                }
                Ok(())
            }
            ServerEndpoint::Tls { inner, files } => {
                let inner = inner.to_string();
                let (kind, rest) = inner.split_once(':').unwrap_or((&inner, ""));
                let kind = if kind == "unix" { "tlsunix" } else { "tls" };
                write!(
                    f,
                    "{kind}:{rest}:certKey={}:privateKey={}",
                    escape_path(&files.cert),
                    escape_path(&files.key)
                )?;
                if let Some(ca) = &files.client_ca {
                    write!(f, ":caCerts={}", escape_path(ca))?;
                }
                Ok(())
            }
            ServerEndpoint::Udp { addr } => {
                let kind = if addr.is_ipv6() { "udp6" } else { "udp" };
                match addr.ip() {
                    IpAddr::V4(ip) => write!(f, "{kind}:{}:interface={ip}", addr.port()),
                    IpAddr::V6(ip) => write!(f, "{kind}:{}:interface=[{ip}]", addr.port()),
                }
            }
            ServerEndpoint::UnixDatagram { path } => {
                write!(f, "unixgram:{}", positional_path("address", path))
            }
            ServerEndpoint::Unix {
                path,
                mode,
                backlog,
            } => {
                write!(f, "unix:{}", positional_path("address", path))?;
                if let Some(mode) = mode {
                    write!(f, ":mode={mode:o}")?;
                }
                if *backlog != DEFAULT_BACKLOG {
                    write!(f, ":backlog={backlog}")?;
                }
                Ok(())
            }
        }
    }
}

impl ServerEndpoint {
    /// Parses a description (same as `str::parse`).
    pub fn parse(desc: &str) -> std::result::Result<Self, EndpointError> {
        desc.parse()
    }

    /// This endpoint as bound: TCP and UDP ports are replaced by the real ones of `local` (the
    /// address a listening port reports), so `tcp:0` prints as the port it got.
    pub fn bound_to(&self, local: &Address) -> ServerEndpoint {
        match (self, local) {
            (ServerEndpoint::Tcp { backlog, .. }, Address::Inet(addr)) => ServerEndpoint::Tcp {
                addr: *addr,
                backlog: *backlog,
            },
            (ServerEndpoint::Udp { .. }, Address::Inet(addr)) => {
                ServerEndpoint::Udp { addr: *addr }
            }
            (ServerEndpoint::Tls { inner, files }, _) => ServerEndpoint::Tls {
                inner: Box::new(inner.bound_to(local)),
                files: files.clone(),
            },
            (other, _) => other.clone(),
        }
    }

    /// `true` for datagram endpoints (`udp`, `udp6`, `unixgram`), which are opened with
    /// [`listen_datagram`](ServerEndpoint::listen_datagram).
    pub fn is_datagram(&self) -> bool {
        matches!(
            self,
            ServerEndpoint::Udp { .. } | ServerEndpoint::UnixDatagram { .. }
        )
    }

    /// Binds a datagram endpoint and runs `protocol` on it.
    pub fn listen_datagram(
        &self,
        reactor: &Reactor,
        protocol: impl DatagramProtocol,
    ) -> Result<DatagramPort> {
        match self {
            ServerEndpoint::Udp { addr } => reactor.listen_udp(*addr, protocol),
            ServerEndpoint::UnixDatagram { path } => reactor.listen_unix_datagram(path, protocol),
            stream => Err(Error::InvalidAddress(format!(
                "{stream} is a stream endpoint: open it with listen and a factory"
            ))),
        }
    }

    /// Starts listening on this stream endpoint.
    pub fn listen(
        &self,
        reactor: &Reactor,
        factory: impl Into<SharedFactory>,
    ) -> Result<ListeningPort> {
        match self {
            ServerEndpoint::Tls { inner, files } => {
                let config = ServerTlsConfig::from_pem_files(
                    &files.cert,
                    &files.key,
                    files.client_ca.as_deref(),
                )?;
                match &**inner {
                    ServerEndpoint::Tcp { addr, backlog } => reactor.listen_tls_with(
                        *addr,
                        &config,
                        factory,
                        TcpListenOptions {
                            backlog: *backlog,
                            ..TcpListenOptions::default()
                        },
                    ),
                    ServerEndpoint::Unix {
                        path,
                        mode,
                        backlog,
                    } => reactor.listen_tls_unix_with(
                        path,
                        &config,
                        factory,
                        UnixListenOptions {
                            backlog: *backlog,
                            mode: *mode,
                            ..UnixListenOptions::default()
                        },
                    ),
                    other => Err(Error::InvalidAddress(format!(
                        "TLS cannot run over {other}"
                    ))),
                }
            }
            datagram @ (ServerEndpoint::Udp { .. } | ServerEndpoint::UnixDatagram { .. }) => {
                Err(Error::InvalidAddress(format!(
                    "{datagram} is a datagram endpoint: open it with listen_datagram and a protocol"
                )))
            }
            ServerEndpoint::Tcp { addr, backlog } => reactor.listen_tcp_with(
                *addr,
                factory,
                TcpListenOptions {
                    backlog: *backlog,
                    ..TcpListenOptions::default()
                },
            ),
            ServerEndpoint::Unix {
                path,
                mode,
                backlog,
            } => {
                let options = UnixListenOptions {
                    backlog: *backlog,
                    mode: *mode,
                    ..UnixListenOptions::default()
                };
                let text = path.to_string_lossy();
                match text.strip_prefix('@') {
                    Some(name) => {
                        reactor.listen_unix_abstract_with(name.as_bytes(), factory, options)
                    }
                    None => reactor.listen_unix_with(path, factory, options),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client endpoints.

/// The PEM files of a TLS client endpoint, read by [`ClientEndpoint::connect`] (or
/// [`load`](ClientTlsFiles::load)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CA certificates the server's chain must lead to (`caCerts=`). `None` trusts the
    /// Mozilla roots bundled in `webpki-roots`, as a browser would.
    pub ca_certs: Option<PathBuf>,
    /// A client certificate chain and its private key (`certificate=` and `privateKey=`),
    /// presented to servers that ask for one (mutual TLS).
    pub certificate: Option<(PathBuf, PathBuf)>,
}

impl ClientTlsFiles {
    /// Reads the files and builds the client configuration. An error names the option and the
    /// file that could not be used, and what went wrong with it.
    pub fn load(&self) -> Result<ClientTlsConfig> {
        let mut builder = ClientTlsConfig::builder();
        if let Some(ca) = &self.ca_certs {
            builder = builder.ca_file(ca).map_err(|e| in_option("caCerts=", e))?;
        }
        if let Some((cert, key)) = &self.certificate {
            let chain = load_certificates(cert).map_err(|e| in_option("certificate=", e))?;
            let key = load_private_key(key).map_err(|e| in_option("privateKey=", e))?;
            builder = builder.client_certificate(chain, key);
        }
        builder.build().map_err(|e| match &self.certificate {
            Some((cert, key)) => in_option(
                &format!(
                    "certificate={} with privateKey={}",
                    cert.display(),
                    key.display()
                ),
                e,
            ),
            None => e,
        })
    }
}

/// Prefixes an error's context with the endpoint option it came from.
fn in_option(option: &str, e: Error) -> Error {
    match e {
        Error::Io { context, source } => Error::Io {
            context: format!("TLS client endpoint {option}: {context}"),
            source,
        },
        Error::InvalidAddress(msg) => {
            Error::InvalidAddress(format!("TLS client endpoint {option}: {msg}"))
        }
        other => other,
    }
}

/// A parsed client endpoint description (Twisted's `clientFromString`);
/// [`connect`](ClientEndpoint::connect) opens it.
///
/// - `tcp:HOST:PORT[:timeout=SECONDS][:bindAddress=ADDR]`
/// - `unix:PATH[:timeout=SECONDS]` (`@NAME`: a Linux abstract name)
/// - `tls:HOST:PORT[:caCerts=CA.pem][:certificate=CERT.pem:privateKey=KEY.pem][:timeout=..][:bindAddress=..]`
///   (also `ssl:`; without `caCerts`, the Mozilla roots of `webpki-roots`)
/// - `tlsunix:PATH:host=NAME[:caCerts=CA.pem][:certificate=CERT.pem:privateKey=KEY.pem]`
///
/// HOST is a name, an IPv4 address, or an IPv6 address in brackets (`[::1]`) or with escaped
/// colons (`\:\:1`); positional values may be given by name (`host=`, `port=`, `path=`); a
/// backslash escapes a colon in a value (`unix:/tmp/a\:b`). The default timeout is
/// [`DEFAULT_CONNECT_TIMEOUT`](crate::DEFAULT_CONNECT_TIMEOUT) (30 s). Displaying an endpoint
/// gives a description that parses back to it.
///
/// ```
/// use std::time::Duration;
/// use torsion_transports::ClientEndpoint;
///
/// let ep = ClientEndpoint::parse("tcp:localhost:8000:timeout=5")?;
/// assert_eq!(
///     ep,
///     ClientEndpoint::Tcp {
///         host: "localhost".into(),
///         port: 8000,
///         timeout: Some(Duration::from_secs(5)),
///         bind: None,
///     }
/// );
/// assert_eq!(ep.to_string().parse::<ClientEndpoint>()?, ep);
/// # Ok::<(), torsion_transports::EndpointError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEndpoint {
    /// TCP to a host and port (`tcp:HOST:PORT`).
    Tcp {
        /// A DNS name (resolved when connecting, off the reactor thread) or an IP address
        /// (IPv6 without brackets).
        host: String,
        /// The server's port.
        port: u16,
        /// The connect timeout (`timeout=`); `None` is
        /// [`DEFAULT_CONNECT_TIMEOUT`](crate::DEFAULT_CONNECT_TIMEOUT).
        timeout: Option<Duration>,
        /// The local address to connect from (`bindAddress=`; port 0 picks one). Only the
        /// host's addresses of its family are tried (see
        /// [`ConnectOptions::bind`](crate::ConnectOptions::bind)).
        bind: Option<SocketAddr>,
    },
    /// A Unix socket (`unix:PATH`).
    Unix {
        /// The socket path, or a Linux abstract name when it starts with `@`.
        path: PathBuf,
        /// The connect timeout (`timeout=`); `None` is the default.
        timeout: Option<Duration>,
    },
    /// TLS over TCP (`tls:HOST:PORT`, also spelled `ssl:`); the server's certificate is
    /// verified against `host`, which is also sent with SNI.
    Tls {
        /// As [`ClientEndpoint::Tcp`]'s, and the name the server is verified against.
        host: String,
        /// The server's port.
        port: u16,
        /// The connect timeout (`timeout=`); the TLS handshake then has its own deadline,
        /// [`DEFAULT_HANDSHAKE_TIMEOUT`](crate::tls::DEFAULT_HANDSHAKE_TIMEOUT).
        timeout: Option<Duration>,
        /// The local address to connect from (`bindAddress=`), as [`ClientEndpoint::Tcp`]'s.
        bind: Option<SocketAddr>,
        /// The trusted CA and the optional client certificate.
        files: ClientTlsFiles,
    },
    /// TLS over a Unix socket path (`tlsunix:PATH:host=NAME`).
    TlsUnix {
        /// The socket path (abstract names are not supported for TLS).
        path: PathBuf,
        /// The name the server's certificate is verified against (`host=`).
        server_name: String,
        /// The trusted CA and the optional client certificate.
        files: ClientTlsFiles,
    },
}

impl Description {
    /// Names the positional values after `names` (in order) and checks that every option is
    /// one of `known`, has a value and is given once (by position or by name).
    fn fields(
        self,
        names: &[&str],
        known: &[&str],
        positional_hint: &str,
    ) -> std::result::Result<Fields, EndpointError> {
        let kind = self.kind;
        if let Some(extra) = self.positional.get(names.len()) {
            return err(format!(
                "unexpected '{extra}' in {kind} endpoint ({positional_hint})"
            ));
        }
        let mut values: Vec<(String, String)> = names
            .iter()
            .map(|n| n.to_string())
            .zip(self.positional)
            .collect();
        for (k, v) in self.keys {
            if !known.contains(&k.as_str()) {
                return err(format!(
                    "unknown option '{k}' for {kind} (known: {}){}",
                    known.join(", "),
                    client_option_hint(&kind, &k)
                ));
            }
            if v.is_empty() {
                return err(format!("option {k}= has no value in {kind} endpoint"));
            }
            if values.iter().any(|(n, _)| *n == k) {
                return err(format!("{k} is given twice in {kind} endpoint"));
            }
            values.push((k, v));
        }
        Ok(Fields { values })
    }
}

/// The values of a description by name (see [`Description::fields`]).
struct Fields {
    values: Vec<(String, String)>,
}

impl Fields {
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.values.iter().position(|(n, _)| n == name)?;
        Some(self.values.remove(i).1)
    }
}

const HOST_HINT: &str =
    "an IPv6 host is written in brackets or with escaped colons, as in tcp:[::1]:8000";
const PATH_HINT: &str = r"escape colons in paths as \:";

/// A hint for an option that belongs elsewhere (the server's spelling, or TLS on `tcp:`).
fn client_option_hint(kind: &str, key: &str) -> &'static str {
    match key {
        "certKey" => "; a client presents its certificate with certificate= and privateKey=",
        "interface" => "; a client chooses its local address with bindAddress=",
        "backlog" | "mode" => "; that is a server option",
        "caCerts" | "certificate" | "privateKey" if kind == "tcp" => "; TLS options need tls:",
        "caCerts" | "certificate" | "privateKey" if kind == "unix" => "; TLS options need tlsunix:",
        "timeout" | "bindAddress" if kind == "tlsunix" => {
            "; tlsunix connects with the default timeout"
        }
        _ => "",
    }
}

fn parse_host(kind: &str, value: &str) -> std::result::Result<String, EndpointError> {
    if value.is_empty() {
        return err(format!(
            "{kind} endpoint needs a host and a port, as in {kind}:localhost:8000"
        ));
    }
    if let Some(inner) = value.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(ip)) => Ok(ip.to_string()),
            _ => err(format!(
                "host '{value}' is not an IPv6 address in brackets, as in {kind}:[::1]:8000"
            )),
        };
    }
    if value.contains(':') {
        return match value.parse::<Ipv6Addr>() {
            Ok(ip) => Ok(ip.to_string()),
            Err(_) => err(format!("host '{value}' is not an IPv6 address")),
        };
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '\\' | '[' | ']' | '='))
    {
        return err(format!(
            "host '{value}' is not a host name or an IP address"
        ));
    }
    Ok(value.to_owned())
}

fn parse_client_port(value: &str) -> std::result::Result<u16, EndpointError> {
    match parse_port(value)? {
        0 => err("port 0 cannot be connected to: give the server's port"),
        port => Ok(port),
    }
}

fn parse_timeout(value: &str) -> std::result::Result<Duration, EndpointError> {
    let bad = || {
        err(format!(
            "timeout={value} is not a positive number of seconds"
        ))
    };
    let timeout = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => match value.parse::<f64>() {
            Ok(secs) if secs.is_finite() => Duration::try_from_secs_f64(secs).or_else(|_| bad())?,
            _ => return bad(),
        },
    };
    if timeout.is_zero() {
        return bad();
    }
    Ok(timeout)
}

fn fmt_timeout(timeout: Duration) -> String {
    if timeout.subsec_nanos() == 0 {
        timeout.as_secs().to_string()
    } else {
        timeout.as_secs_f64().to_string()
    }
}

fn parse_bind(value: &str) -> std::result::Result<SocketAddr, EndpointError> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, 0)),
        Err(_) => err(format!(
            r"bindAddress={value} is not an IP address or IP\:PORT (IPv6 in brackets: [::1])"
        )),
    }
}

/// A client socket has one address family: a bind address of the other family than an IP
/// host could never connect (names are checked when connecting, against what they resolve
/// to).
fn check_bind_family(bind: SocketAddr, host: IpAddr) -> std::result::Result<(), EndpointError> {
    if bind.is_ipv4() == host.is_ipv4() {
        return Ok(());
    }
    let (family, other) = crate::connector::family_names(bind.is_ipv4());
    err(format!(
        "bindAddress={} is an {family} address, but the host {} is {other}: a connection \
         binds to an address of its destination's family (use an {other} bindAddress, or none)",
        fmt_bind(bind),
        fmt_host(&host.to_string())
    ))
}

fn fmt_bind(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    match addr.port() {
        0 => ip,
        port => format!(r"{ip}\:{port}"),
    }
}

fn fmt_host(host: &str) -> String {
    if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        escape(host)
    }
}

fn take_tls_files(
    kind: &str,
    fields: &mut Fields,
) -> std::result::Result<ClientTlsFiles, EndpointError> {
    let ca_certs = fields.take("caCerts").map(PathBuf::from);
    let certificate = match (fields.take("certificate"), fields.take("privateKey")) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (None, None) => None,
        (Some(_), None) => {
            return err(format!(
                "{kind} endpoint has certificate= but no privateKey=: give the client \
                 certificate's key too (or neither)"
            ))
        }
        (None, Some(_)) => {
            return err(format!(
                "{kind} endpoint has privateKey= but no certificate=: give the client \
                 certificate chain too (or neither)"
            ))
        }
    };
    Ok(ClientTlsFiles {
        ca_certs,
        certificate,
    })
}

fn fmt_tls_files(f: &mut fmt::Formatter<'_>, files: &ClientTlsFiles) -> fmt::Result {
    if let Some(ca) = &files.ca_certs {
        write!(f, ":caCerts={}", escape_path(ca))?;
    }
    if let Some((cert, key)) = &files.certificate {
        write!(
            f,
            ":certificate={}:privateKey={}",
            escape_path(cert),
            escape_path(key)
        )?;
    }
    Ok(())
}

impl FromStr for ClientEndpoint {
    type Err = EndpointError;

    fn from_str(desc: &str) -> std::result::Result<Self, EndpointError> {
        let mut description = Description::parse(desc);
        let kind = description.kind.clone();
        match kind.as_str() {
            "tcp" | "tls" | "ssl" => {
                let tls = kind != "tcp";
                let known: &[&str] = if tls {
                    &[
                        "host",
                        "port",
                        "caCerts",
                        "certificate",
                        "privateKey",
                        "timeout",
                        "bindAddress",
                    ]
                } else {
                    &["host", "port", "timeout", "bindAddress"]
                };
                let mut fields = description.fields(&["host", "port"], known, HOST_HINT)?;
                let (host, port) = match (fields.take("host"), fields.take("port")) {
                    (Some(port), None) if port.parse::<u16>().is_ok() => {
                        return err(format!(
                            "{kind} endpoint needs a host and a port, as in {kind}:localhost:{port}"
                        ))
                    }
                    (None, _) => {
                        return err(format!(
                            "{kind} endpoint needs a host and a port, as in {kind}:localhost:8000"
                        ))
                    }
                    (Some(host), port) => {
                        let host = parse_host(&kind, &host)?;
                        let Some(port) = port else {
                            return err(format!(
                                "{kind} endpoint needs a port, as in {kind}:{}:8000",
                                fmt_host(&host)
                            ));
                        };
                        (host, parse_client_port(&port)?)
                    }
                };
                let timeout = fields.take("timeout").map(|v| parse_timeout(&v));
                let timeout = timeout.transpose()?;
                let bind = fields.take("bindAddress").map(|v| parse_bind(&v));
                let bind = bind.transpose()?;
                if let (Some(bind), Ok(ip)) = (bind, host.parse::<IpAddr>()) {
                    check_bind_family(bind, ip)?;
                }
                if !tls {
                    return Ok(ClientEndpoint::Tcp {
                        host,
                        port,
                        timeout,
                        bind,
                    });
                }
                let files = take_tls_files(&kind, &mut fields)?;
                Ok(ClientEndpoint::Tls {
                    host,
                    port,
                    timeout,
                    bind,
                    files,
                })
            }
            "unix" | "tlsunix" => {
                let tls = kind == "tlsunix";
                // The server side names the path `address=`; Twisted's clients say `path=`.
                for (k, _) in &mut description.keys {
                    if k == "address" {
                        *k = "path".to_owned();
                    }
                }
                let known: &[&str] = if tls {
                    &["path", "host", "caCerts", "certificate", "privateKey"]
                } else {
                    &["path", "timeout"]
                };
                let mut fields = description.fields(&["path"], known, PATH_HINT)?;
                let path = match fields.take("path") {
                    Some(path) if !path.is_empty() => path,
                    _ if tls => {
                        return err("tlsunix endpoint needs a path, as in \
                             tlsunix:/run/app.sock:host=localhost")
                    }
                    _ => return err("unix endpoint needs a path, as in unix:/tmp/echo.sock"),
                };
                if !tls {
                    if path == "@" {
                        return err("unix:@ needs an abstract name after @, as in unix:@echo");
                    }
                    let timeout = fields.take("timeout").map(|v| parse_timeout(&v));
                    return Ok(ClientEndpoint::Unix {
                        path: PathBuf::from(path),
                        timeout: timeout.transpose()?,
                    });
                }
                check_tls_unix_path(&kind, &path)?;
                let Some(server_name) = fields.take("host") else {
                    return err(format!(
                        "tlsunix endpoint needs host=NAME, the name in the server's \
                         certificate, as in tlsunix:{}:host=localhost",
                        escape(&path)
                    ));
                };
                let server_name = parse_host(&kind, &server_name)?;
                let files = take_tls_files(&kind, &mut fields)?;
                Ok(ClientEndpoint::TlsUnix {
                    path: PathBuf::from(path),
                    server_name,
                    files,
                })
            }
            "" => err("empty endpoint description; try tcp:localhost:8000"),
            "tcp6" => err(
                "unknown client endpoint type 'tcp6': tcp takes IPv6 hosts, as in \
                 tcp:[::1]:8000",
            ),
            other => err(format!(
                "unknown client endpoint type '{other}' (known: tcp, unix, tls, tlsunix)"
            )),
        }
    }
}

impl fmt::Display for ClientEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tcp_options = |f: &mut fmt::Formatter<'_>,
                           timeout: &Option<Duration>,
                           bind: &Option<SocketAddr>|
         -> fmt::Result {
            if let Some(timeout) = timeout {
                write!(f, ":timeout={}", fmt_timeout(*timeout))?;
            }
            if let Some(bind) = bind {
                write!(f, ":bindAddress={}", fmt_bind(*bind))?;
            }
            Ok(())
        };
        match self {
            ClientEndpoint::Tcp {
                host,
                port,
                timeout,
                bind,
            } => {
                write!(f, "tcp:{}:{port}", fmt_host(host))?;
                tcp_options(f, timeout, bind)
            }
            ClientEndpoint::Unix { path, timeout } => {
                write!(f, "unix:{}", positional_path("path", path))?;
                tcp_options(f, timeout, &None)
            }
            ClientEndpoint::Tls {
                host,
                port,
                timeout,
                bind,
                files,
            } => {
                write!(f, "tls:{}:{port}", fmt_host(host))?;
                fmt_tls_files(f, files)?;
                tcp_options(f, timeout, bind)
            }
            ClientEndpoint::TlsUnix {
                path,
                server_name,
                files,
            } => {
                write!(
                    f,
                    "tlsunix:{}:host={}",
                    positional_path("path", path),
                    fmt_host(server_name)
                )?;
                fmt_tls_files(f, files)
            }
        }
    }
}

impl ClientEndpoint {
    /// Parses a description (same as `str::parse`).
    pub fn parse(desc: &str) -> std::result::Result<Self, EndpointError> {
        desc.parse()
    }

    /// `true` for the TLS endpoints (`tls`, `tlsunix`).
    pub fn is_tls(&self) -> bool {
        matches!(
            self,
            ClientEndpoint::Tls { .. } | ClientEndpoint::TlsUnix { .. }
        )
    }

    /// Starts connecting, as `connect_tcp`, `connect_unix` (or `connect_unix_abstract`),
    /// `connect_tls` or `connect_tls_unix` would, and returns the [`Connector`] at once; the
    /// outcome reaches `factory` (`client_connection_failed` with the reason, including a
    /// failed TLS handshake, or a protocol).
    ///
    /// Fails only when a TLS endpoint's PEM files cannot be read or used (the error names the
    /// option and the file); no attempt is started then. The files are read on every call:
    /// to reconnect, call [`Connector::connect`] on the returned connector instead.
    ///
    /// ```no_run
    /// use torsion_reactor::prelude::*;
    /// use torsion_transports::ClientEndpoint;
    ///
    /// struct Hello;
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, transport: &mut dyn Transport) {
    ///         transport.write(b"hello\r\n");
    ///         transport.lose_connection();
    ///     }
    ///     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    /// }
    ///
    /// let reactor = Reactor::new()?;
    /// let endpoint = ClientEndpoint::parse("tls:localhost:8443:caCerts=ca.pem")?;
    /// endpoint.connect(&reactor, |_: &Address| Hello)?;
    /// reactor.run()
    /// # ;Ok::<(), torsion_reactor::Error>(())
    /// ```
    pub fn connect(&self, reactor: &Reactor, factory: impl ClientFactory) -> Result<Connector> {
        let options = |timeout: &Option<Duration>, bind: &Option<SocketAddr>| ConnectOptions {
            timeout: timeout.unwrap_or(crate::DEFAULT_CONNECT_TIMEOUT),
            bind: *bind,
            ..ConnectOptions::default()
        };
        Ok(match self {
            ClientEndpoint::Tcp {
                host,
                port,
                timeout,
                bind,
            } => reactor.connect_tcp_with(host, *port, factory, options(timeout, bind)),
            ClientEndpoint::Unix { path, timeout } => {
                let text = path.to_string_lossy();
                let target = match text.strip_prefix('@') {
                    Some(name) => UnixTarget::Abstract(name.as_bytes().to_vec()),
                    None => UnixTarget::Path(path.clone()),
                };
                // `connect_unix` with a timeout (the trait has no `_with` variant).
                crate::unix::connect(reactor, target, Box::new(factory), options(timeout, &None))
            }
            ClientEndpoint::Tls {
                host,
                port,
                timeout,
                bind,
                files,
            } => {
                let config = files.load()?;
                reactor.connect_tls_with(host, *port, &config, factory, options(timeout, bind))
            }
            ClientEndpoint::TlsUnix {
                path,
                server_name,
                files,
            } => {
                let config = files.load()?;
                reactor.connect_tls_unix(path, server_name, &config, factory)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(desc: &str) -> SocketAddr {
        match desc.parse::<ServerEndpoint>().unwrap() {
            ServerEndpoint::Tcp { addr, .. } => addr,
            other => panic!("not tcp: {other:?}"),
        }
    }

    #[test]
    fn tcp_forms() {
        assert_eq!(tcp("tcp:8000"), "0.0.0.0:8000".parse().unwrap());
        assert_eq!(
            tcp("tcp:port=0:interface=127.0.0.1"),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(tcp("tcp6:80"), "[::]:80".parse().unwrap());
        assert_eq!(tcp(r"tcp6:80:interface=\:\:1"), "[::1]:80".parse().unwrap());
        assert_eq!(tcp("tcp6:80:interface=[::1]"), "[::1]:80".parse().unwrap());
        match "tcp:1:backlog=7".parse::<ServerEndpoint>().unwrap() {
            ServerEndpoint::Tcp { backlog, .. } => assert_eq!(backlog, 7),
            _ => unreachable!(),
        }
    }

    #[test]
    fn unix_forms() {
        let ep: ServerEndpoint = "unix:/tmp/a.sock:mode=660".parse().unwrap();
        assert_eq!(
            ep,
            ServerEndpoint::Unix {
                path: "/tmp/a.sock".into(),
                mode: Some(0o660),
                backlog: DEFAULT_BACKLOG
            }
        );
        let ep: ServerEndpoint = r"unix:address=/tmp/a\:b".parse().unwrap();
        assert!(
            matches!(ep, ServerEndpoint::Unix { ref path, .. } if path == &PathBuf::from("/tmp/a:b"))
        );
        assert_eq!(ep.to_string(), r"unix:/tmp/a\:b");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |d: &str| d.parse::<ServerEndpoint>().unwrap_err().to_string();
        assert!(e("tcp").contains("needs a port"));
        assert!(e("tcp:99999").contains("99999"));
        assert!(e("tcp:80:interface=::1").contains("tcp6"));
        assert!(e("tcp:80:interface=nope").contains("nope"));
        assert!(e("tcp:80:colour=red").contains("colour"));
        assert!(e("udpx:80").contains("udpx"));
        assert!(e("udp:80:backlog=5").contains("backlog"));
        assert!(e("unixgram:").contains("needs a path"));
        // An escaped `=` belongs to the value.
        assert_eq!(
            r"unix:/tmp/a\=b"
                .parse::<ServerEndpoint>()
                .unwrap()
                .to_string(),
            "unix:address=/tmp/a=b"
        );
        // Not a file named `@echo` in the working directory.
        assert!(e("unixgram:@echo").contains("not an abstract name"));
        // An empty value fails here (exit code 2), not later as an I/O error.
        assert!(e("tls:443:certKey=c:privateKey=k:caCerts=").contains("caCerts= has no value"));
        assert!(e("tls:443:privateKey=k.pem").contains("certKey"));
        assert!(e("ssl:443:certKey=c.pem").contains("privateKey"));
        assert!(e("tls:x:certKey=c:privateKey=k").contains("port 'x'"));
        assert!(e("unix:").contains("needs a path"));
        assert!(e("unix:/a:mode=999").contains("999"));
        // chmod keeps only the low 12 bits: 17777 would quietly become 7777.
        assert!(e("unix:/a:mode=17777").contains("17777"));
        assert!(e("unix:/a:mode=").contains("mode="));
        assert!(e("unix:@").contains("abstract name after @"));
        assert!(e("unix:address=@").contains("abstract name after @"));
        let c = |d: &str| d.parse::<ClientEndpoint>().unwrap_err().to_string();
        assert!(c("unix:@").contains("abstract name after @"));
        assert!(e("tcp:80:backlog=-1").contains("backlog"));
        assert!(e("tlsunix:@n:certKey=c:privateKey=k").contains("abstract"));
        assert!(e("unix:@n:mode=600").contains("abstract name"));
        assert!(e("http:80").contains("known: tcp"));
    }

    /// A server description is refused, with a one-line message, when a value is given
    /// twice or an option is unknown, wherever it comes (a unixgram description looked at its
    /// first option only, and dropped a second positional value); the client side already was.
    #[test]
    fn server_duplicates_unknowns_and_extras_are_refused() {
        let e = |d: &str| match d.parse::<ServerEndpoint>() {
            Ok(ep) => panic!("{d:?} parsed as {ep:?}"),
            Err(e) => e.to_string(),
        };
        for (d, want) in [
            (
                "unixgram:/tmp/a:colour=red",
                "unknown option 'colour' for unixgram",
            ),
            (
                "unixgram:address=/tmp/a:colour=red",
                "unknown option 'colour'",
            ),
            (
                "unixgram:/tmp/a:b.sock",
                "unexpected 'b.sock' in unixgram endpoint",
            ),
            ("unixgram:/tmp/a:address=/tmp/b", "address is given twice"),
            ("tcp:80:port=81", "port is given twice"),
            (
                "udp:80:interface=127.0.0.1:interface=127.0.0.2",
                "interface is given twice",
            ),
            ("unix:/a:address=/b", "address is given twice"),
            ("unix:/a:mode=600:mode=644", "mode is given twice"),
            (
                "tls:443:certKey=a:certKey=b:privateKey=k",
                "certKey is given twice",
            ),
        ] {
            let m = e(d);
            assert!(m.contains(want) && !m.contains('\n'), "{d}: {m}");
        }
    }

    /// TLS errors name the endpoint the user wrote, and leave the user's values alone.
    #[test]
    fn tls_errors_name_the_tls_endpoint() {
        let e = |d: &str| d.parse::<ServerEndpoint>().unwrap_err().to_string();
        let m = e("tls:443:interface=::1:certKey=c:privateKey=k");
        assert!(!m.contains("tls6") && !m.contains("tcp6"), "{m}");
        assert!(m.contains("tls:PORT:interface=[::1]"), "{m}");
        let m = e("tls:tcp1:certKey=c:privateKey=k");
        assert!(m.contains("port 'tcp1' is not a number"), "{m}");
        let m = e("ssl:1:tcp:certKey=c:privateKey=k");
        assert!(m.contains("unexpected 'tcp' in ssl endpoint"), "{m}");
        let m = e("tls:1:tcpish=1:certKey=c:privateKey=k");
        assert!(m.contains("unknown option 'tcpish' for tls"), "{m}");
        assert!(m.contains("certKey"), "{m}");
        let m = e("tlsunix:/a:unixy=1:certKey=c:privateKey=k");
        assert!(m.contains("unknown option 'unixy' for tlsunix"), "{m}");
        let m = e("tlsunix:certKey=c:privateKey=k");
        assert!(m.contains("tlsunix endpoint needs a path"), "{m}");
        let m = e("tls:certKey=c:privateKey=k");
        assert!(m.contains("tls endpoint needs a port"), "{m}");
        for m in [
            e("tls:443:interface=::1:certKey=c:privateKey=k"),
            e("tls:1:interface=[::1]:interface=127.0.0.1:certKey=c:privateKey=k"),
        ] {
            assert!(!m.contains('\n'), "{m}");
        }
        // The plain endpoints keep their own names (udp's IPv6 flavour is udp6).
        assert!(e("tcp:80:interface=::1").contains("tcp6:PORT"));
        assert!(e("udp:80:interface=::1").contains("udp6:PORT"));
        assert!(e("udp:80:interface=[::1]").contains("use udp6"));
        assert!(e("udp6:80:interface=1.2.3.4").contains("udp6 needs an IPv6"));
    }

    #[test]
    fn datagram_forms() {
        let ep: ServerEndpoint = "udp:53:interface=127.0.0.1".parse().unwrap();
        assert!(ep.is_datagram());
        let addr = "127.0.0.1:53".parse().unwrap();
        assert_eq!(ep, ServerEndpoint::Udp { addr });
        let ep: ServerEndpoint = "udp6:53".parse().unwrap();
        let addr = "[::]:53".parse().unwrap();
        assert_eq!(ep, ServerEndpoint::Udp { addr });
        let ep: ServerEndpoint = "unixgram:/tmp/d.sock".parse().unwrap();
        let path = "/tmp/d.sock".into();
        assert_eq!(ep, ServerEndpoint::UnixDatagram { path });
        assert!(!"tcp:1".parse::<ServerEndpoint>().unwrap().is_datagram());
    }

    #[test]
    fn display_round_trips() {
        for d in [
            "tcp:8000:interface=127.0.0.1",
            "tcp6:1:interface=[::1]:backlog=9",
            "unix:/x:mode=600",
            "tls:443:interface=127.0.0.1:certKey=/c.pem:privateKey=/k.pem",
            "tls:443:interface=[::1]:certKey=/c.pem:privateKey=/k.pem:caCerts=/ca.pem",
            "tlsunix:/s:certKey=/c.pem:privateKey=/k.pem",
            "udp:9:interface=127.0.0.1",
            "udp6:9:interface=[::1]",
            "unixgram:/y",
            r"unix:/tmp/a\\b\[c\]\:d",
            "unix:address=/tmp/a=b",
            "unix:@abstract",
        ] {
            let ep: ServerEndpoint = d.parse().unwrap();
            assert_eq!(ep.to_string(), d);
            assert_eq!(ep.to_string().parse::<ServerEndpoint>().unwrap(), ep);
        }
    }
}
