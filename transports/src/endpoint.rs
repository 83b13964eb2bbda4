//! Server endpoint descriptions in Twisted's syntax: `tcp:8000:interface=127.0.0.1`.
//!
//! | type | form | keys |
//! |---|---|---|
//! | `tcp` | `tcp:PORT` | `interface=ADDR` (default `0.0.0.0`), `backlog=N` (default 50) |
//! | `tcp6` | `tcp6:PORT` | `interface=ADDR` (default `::`), `backlog=N` |
//! | `unix` | `unix:PATH` | `mode=OCTAL` (for example `660`), `backlog=N`; a path starting with `@` is a Linux abstract name |
//! | `tls` (or `ssl`) | `tls:PORT:certKey=CERT.pem:privateKey=KEY.pem` | as `tcp`/`tcp6` (an IPv6 `interface` selects IPv6), plus `caCerts=CA.pem` to require client certificates from that CA |
//! | `tlsunix` | `tlsunix:PATH:certKey=CERT.pem:privateKey=KEY.pem` | TLS over a Unix socket; as `unix`, plus `caCerts` |
//! | `udp` | `udp:PORT` | `interface=ADDR` (default `0.0.0.0`) — a datagram endpoint |
//! | `udp6` | `udp6:PORT` | `interface=ADDR` (default `::`) — a datagram endpoint |
//! | `unixgram` | `unixgram:PATH` | a Unix datagram socket — a datagram endpoint |
//!
//! Stream endpoints are opened with [`ServerEndpoint::listen`] and a factory; datagram
//! endpoints with [`ServerEndpoint::listen_datagram`] and one protocol.
//!
//! Positional values may also be given by name (`tcp:port=8000`, `unix:address=/run/s.sock`).
//! Colons inside a value are escaped with a backslash as in Twisted (`interface=\:\:1`), or an
//! IPv6 address is written in brackets (`interface=[::1]`).
//!
//! ```
//! use torsion_transports::ServerEndpoint;
//!
//! let ep: ServerEndpoint = "tcp:8000:interface=127.0.0.1".parse()?;
//! assert_eq!(ep.to_string(), "tcp:8000:interface=127.0.0.1");
//! let ep: ServerEndpoint = r"tcp6:8000:interface=\:\:1".parse()?;
//! assert_eq!(ep.to_string(), "tcp6:8000:interface=[::1]");
//! assert!("tcp:http".parse::<ServerEndpoint>().is_err());
//! # Ok::<(), torsion_transports::EndpointError>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use torsion_reactor::{Address, DatagramProtocol, Error, Reactor, Result, SharedFactory};

use crate::datagram::DatagramPort;
use crate::tls::{ServerTlsConfig, TlsReactorExt};

use crate::listener::ListeningPort;
use crate::tcp::{TcpListenOptions, DEFAULT_BACKLOG};
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

fn err<T>(msg: impl Into<String>) -> std::result::Result<T, EndpointError> {
    Err(EndpointError(msg.into()))
}

/// The PEM files of a TLS endpoint.
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

/// Splits on unescaped colons; `\x` is `x`, and colons inside `[...]` are kept.
fn split(desc: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = desc.chars();
    let mut depth = 0;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    parts.last_mut().expect("non-empty").push(n);
                }
            }
            '[' => {
                depth += 1;
                parts.last_mut().expect("non-empty").push(c);
            }
            ']' => {
                depth -= 1;
                parts.last_mut().expect("non-empty").push(c);
            }
            ':' if depth <= 0 => parts.push(String::new()),
            _ => parts.last_mut().expect("non-empty").push(c),
        }
    }
    parts
}

fn parse_ip(value: &str, v6: bool) -> std::result::Result<IpAddr, EndpointError> {
    let bare = value.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = bare
        .parse()
        .or_else(|_| err(format!("interface={value} is not an IP address")))?;
    if v6 && ip.is_ipv4() {
        return err(format!("tcp6 needs an IPv6 interface, not {value}"));
    }
    if !v6 && ip.is_ipv6() {
        return err(format!(
            "interface={value} is IPv6: use tcp6:PORT:interface=..."
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

impl FromStr for ServerEndpoint {
    type Err = EndpointError;

    fn from_str(desc: &str) -> std::result::Result<Self, EndpointError> {
        let parts = split(desc);
        let kind = parts[0].as_str();
        let mut positional = Vec::new();
        let mut keys = Vec::new();
        for p in &parts[1..] {
            match p.split_once('=') {
                Some((k, v)) => keys.push((k.to_owned(), v.to_owned())),
                None => positional.push(p.clone()),
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
                let inner = parse_parts(inner_kind, positional, rest)
                    .map_err(|e| EndpointError(e.0.replace(inner_kind, kind)))?;
                Ok(ServerEndpoint::Tls {
                    inner: Box::new(inner),
                    files,
                })
            }
            _ => parse_parts(kind, positional, keys),
        }
    }
}

fn parse_parts(
    kind: &str,
    positional: Vec<String>,
    keys: Vec<(String, String)>,
) -> std::result::Result<ServerEndpoint, EndpointError> {
    {
        match kind {
            "tcp" | "tcp6" | "udp" | "udp6" => {
                let v6 = kind.ends_with('6');
                let datagram = kind.starts_with("udp");
                let mut port = positional.first().cloned();
                if positional.len() > 1 {
                    return err(format!(
                        "unexpected '{}' in {kind} endpoint (an IPv6 address needs tcp6 and \
                         escaped colons or brackets: tcp6:PORT:interface=[::1])",
                        positional[1]
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
                        "interface" => ip = parse_ip(&v, v6)?,
                        "backlog" if !datagram => backlog = parse_backlog(&v)?,
                        _ if datagram => {
                            return err(format!(
                                "unknown option '{k}' for {kind} (known: port, interface)"
                            ))
                        }
                        _ => {
                            return err(format!(
                                "unknown option '{k}' for {kind} (known: port, interface, backlog)"
                            ))
                        }
                    }
                }
                let Some(port) = port else {
                    return err(format!("{kind} endpoint needs a port, as in {kind}:8000"));
                };
                let port: u16 = port
                    .parse()
                    .or_else(|_| err(format!("port '{port}' is not a number from 0 to 65535")))?;
                let addr = SocketAddr::new(ip, port);
                Ok(if datagram {
                    ServerEndpoint::Udp { addr }
                } else {
                    ServerEndpoint::Tcp { addr, backlog }
                })
            }
            "unixgram" => match (positional.first(), keys.first()) {
                (_, Some((k, _))) if k != "address" => err(format!(
                    "unknown option '{k}' for unixgram (known: address)"
                )),
                (Some(p), _) | (None, Some((_, p))) if !p.is_empty() => {
                    Ok(ServerEndpoint::UnixDatagram {
                        path: PathBuf::from(p),
                    })
                }
                _ => err("unixgram endpoint needs a path, as in unixgram:/tmp/echo.sock"),
            },
            "unix" => {
                let mut path = positional.first().cloned();
                if positional.len() > 1 {
                    return err(format!(
                        "unexpected '{}' in unix endpoint (escape colons in paths as \\:)",
                        positional[1]
                    ));
                }
                let mut mode = None;
                let mut backlog = DEFAULT_BACKLOG;
                for (k, v) in keys {
                    match k.as_str() {
                        "address" => path = Some(v),
                        "mode" => {
                            mode = Some(u32::from_str_radix(&v, 8).or_else(|_| {
                                err(format!("mode={v} is not an octal file mode such as 660"))
                            })?)
                        }
                        "backlog" => backlog = parse_backlog(&v)?,
                        "lockfile" => {}
                        _ => {
                            return err(format!(
                                "unknown option '{k}' for unix (known: address, mode, backlog)"
                            ))
                        }
                    }
                }
                match path {
                    Some(p) if !p.is_empty() => Ok(ServerEndpoint::Unix {
                        path: PathBuf::from(p),
                        mode,
                        backlog,
                    }),
                    _ => err("unix endpoint needs a path, as in unix:/tmp/echo.sock"),
                }
            }
            "" => err("empty endpoint description; try tcp:8000"),
            other => err(format!(
                "unknown endpoint type '{other}' (known: tcp, tcp6, unix, udp, udp6, unixgram)"
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
                let esc = |p: &Path| p.display().to_string().replace(':', "\\:");
                write!(
                    f,
                    "{kind}:{rest}:certKey={}:privateKey={}",
                    esc(&files.cert),
                    esc(&files.key)
                )?;
                if let Some(ca) = &files.client_ca {
                    write!(f, ":caCerts={}", esc(ca))?;
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
            ServerEndpoint::UnixDatagram { path } => write!(
                f,
                "unixgram:{}",
                path.display().to_string().replace(':', "\\:")
            ),
            ServerEndpoint::Unix {
                path,
                mode,
                backlog,
            } => {
                write!(f, "unix:{}", path.display().to_string().replace(':', "\\:"))?;
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
                    ServerEndpoint::Unix { path, .. } => {
                        reactor.listen_tls_unix(path, &config, factory)
                    }
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
                    Some(name) => reactor.listen_unix_abstract(name.as_bytes(), factory),
                    None => reactor.listen_unix_with(path, factory, options),
                }
            }
        }
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
        assert!(e("tls:443:privateKey=k.pem").contains("certKey"));
        assert!(e("ssl:443:certKey=c.pem").contains("privateKey"));
        assert!(e("tls:x:certKey=c:privateKey=k").contains("port 'x'"));
        assert!(e("unix:").contains("needs a path"));
        assert!(e("unix:/a:mode=999").contains("999"));
        assert!(e("tcp:80:backlog=-1").contains("backlog"));
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
        ] {
            let ep: ServerEndpoint = d.parse().unwrap();
            assert_eq!(ep.to_string(), d);
            assert_eq!(ep.to_string().parse::<ServerEndpoint>().unwrap(), ep);
        }
    }
}
