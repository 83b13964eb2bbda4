//! The `torsion` command as a user runs it: endpoint errors, development certificates, and
//! `serve` on TCP, UDP and TLS at once with a graceful stop on SIGTERM.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use torsion::prelude::*;
use torsion::transports::tls::{ClientTlsConfig, TlsReactorExt};

const TORSION: &str = env!("CARGO_BIN_EXE_torsion");

/// Kills and reaps the server even when an assertion fails.
struct Server(Child);

impl Server {
    /// Waits for the process to exit by itself, failing with `what` after `limit`.
    fn exit_within(&mut self, limit: Duration, what: &str) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status;
            }
            assert!(started.elapsed() < limit, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_bad_endpoint_is_one_line_and_exit_code_2() {
    let out = Command::new(TORSION)
        .args(["serve", "echo", "--listen", "tcp:notaport"])
        .output()
        .expect("run torsion");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("notaport"), "{stderr}");
}

/// An endpoint read from a file with its line ending (CR, LF) is still reported on one line,
/// the ending shown escaped.
#[test]
fn a_bad_endpoint_with_a_line_ending_is_one_line() {
    for desc in ["tcp:80x\r", "tcp:80x\n", "udp:7:backlog=1\n"] {
        let out = Command::new(TORSION)
            .args(["serve", "discard", "--listen", desc])
            .output()
            .expect("run torsion");
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
        assert!(!stderr.trim_end().contains('\r'), "{stderr:?}");
    }
}

#[test]
fn a_zero_connection_limit_is_a_bad_argument() {
    for flag in ["--max-conns", "--max-conns-per-peer"] {
        let out = Command::new(TORSION)
            .args([
                "serve",
                "echo",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                flag,
                "0",
            ])
            .output()
            .expect("run torsion");
        assert_eq!(out.status.code(), Some(2), "{flag} 0");
        assert!(String::from_utf8_lossy(&out.stderr).contains(flag));
    }
}

/// RFC 865 wants a quote, of less than 512 characters: an empty or longer `--quote` is a bad
/// argument (it was served as given: an empty reply, or an over-long one).
#[test]
fn an_empty_or_over_long_quote_is_a_bad_argument() {
    for quote in [String::new(), "x".repeat(600)] {
        let mut cmd = Command::new(TORSION);
        cmd.args([
            "serve",
            "qotd",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--quote",
            &quote,
        ]);
        let out = run_for(cmd, Duration::from_secs(5)).expect("exits instead of serving");
        assert_eq!(out.status.code(), Some(2), "quote of {} chars", quote.len());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--quote"));
    }
}

/// When one endpoint fails to listen, the ones started before it are stopped: no Unix socket
/// file is left behind.
#[test]
fn a_failed_listen_leaves_no_socket_file_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.sock");
    let out = Command::new(TORSION)
        .args(["serve", "echo", "--listen"])
        .arg(format!("unix:{}", good.display()))
        .arg("--listen")
        .arg(format!(
            "unix:{}",
            dir.path().join("missing/bad.sock").display()
        ))
        .output()
        .expect("run torsion");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !good.exists(),
        "the first endpoint's socket file was left behind"
    );
}

/// An `--idle-timeout` that is no usable duration (too large for one, rounding to zero, not
/// positive) is a bad argument: one line, exit code 2, never a panic.
#[test]
fn a_bad_idle_timeout_is_one_line_and_exit_code_2() {
    for secs in ["1e30", "1e-10", "0", "-1", "NaN", "inf"] {
        let out = Command::new(TORSION)
            .args([
                "serve",
                "frame-echo",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ])
            .arg(format!("--idle-timeout={secs}"))
            .stdout(Stdio::null())
            .output()
            .expect("run torsion");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{secs}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{secs}: {stderr}");
        assert!(stderr.contains("--idle-timeout"), "{secs}: {stderr}");
        assert!(!stderr.contains("panicked"), "{secs}: {stderr}");
    }
}

/// Sends `message` over TCP to `port` on loopback and reads as many bytes back; returns the
/// open connection too.
fn tcp_echo(port: u16, message: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("tcp connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(message).unwrap();
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).unwrap();
    (stream, back)
}

/// Starts `torsion serve SERVICE --listen tcp:0:interface=127.0.0.1 EXTRA...` and returns it
/// with the port it printed.
fn serve_tcp(service: &str, extra: &[&str]) -> (Server, u16) {
    let child = Command::new(TORSION)
        .args(["serve", service, "--listen", "tcp:0:interface=127.0.0.1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn torsion");
    let mut server = Server(child);
    let mut lines = BufReader::new(server.0.stdout.take().expect("stdout")).lines();
    let line = lines.next().expect("a listening line").expect("utf-8");
    let port: u16 = line
        .split_once(" on tcp:")
        .unwrap_or_else(|| panic!("tcp line: {line}"))
        .1
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("port");
    (server, port)
}

/// A huge but representable `--idle-timeout` is accepted and echoes as usual.
#[test]
fn a_huge_idle_timeout_serves() {
    let (mut server, port) = serve_tcp("frame-echo", &["--idle-timeout", "1e18"]);
    assert_eq!(tcp_echo(port, b"hello\r\n").1, b"hello\r\n");
    assert!(
        server.0.try_wait().expect("wait").is_none(),
        "still running"
    );
}

/// `--reactor` picks the readiness backend; each serves the same echo, and a name that is
/// none of them is refused as a bad argument.
#[test]
fn serve_runs_on_each_reactor() {
    for reactor in ["auto", "epoll", "polling"] {
        let (_server, port) = serve_tcp("echo", &["--reactor", reactor]);
        let message = format!("on {reactor}\n").repeat(1000);
        assert_eq!(
            tcp_echo(port, message.as_bytes()).1,
            message.as_bytes(),
            "{reactor}"
        );
    }
    let out = Command::new(TORSION)
        .args(["serve", "echo", "--listen", "tcp:0", "--reactor", "select"])
        .output()
        .expect("run torsion");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn certs_create_writes_pem_files_with_private_keys_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new(TORSION)
        .args(["certs", "create", "--dir"])
        .arg(dir.path())
        .args(["--host", "localhost", "--host", "127.0.0.1"])
        .stdout(Stdio::null())
        .status()
        .expect("run torsion");
    assert!(status.success());
    for (name, private) in [
        ("ca.pem", false),
        ("server.pem", false),
        ("server-key.pem", true),
        ("client.pem", false),
        ("client-key.pem", true),
    ] {
        let path = dir.path().join(name);
        let text = std::fs::read_to_string(&path).expect(name);
        assert!(text.starts_with("-----BEGIN "), "{name} is PEM");
        let mode = std::fs::metadata(&path).expect(name).permissions().mode() & 0o777;
        if private {
            assert_eq!(mode, 0o600, "{name} mode");
        }
    }
}

#[test]
fn certs_create_refuses_a_name_no_certificate_can_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["", "not a name!"] {
        let out = Command::new(TORSION)
            .args(["certs", "create", "--dir"])
            .arg(dir.path())
            .args(["--host", "localhost", "--host", bad])
            .output()
            .expect("run torsion");
        assert!(!out.status.success(), "'{bad}' accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("not a DNS name or an IP address"),
            "'{bad}': {err}"
        );
        assert!(
            !dir.path().join("server.pem").exists(),
            "nothing written for '{bad}'"
        );
    }
}

/// Echo client over TLS on a torsion reactor: returns what came back.
fn tls_echo(port: u16, ca: &std::path::Path, message: &[u8]) -> Vec<u8> {
    struct Client {
        message: Vec<u8>,
        got: Rc<RefCell<Vec<u8>>>,
    }
    impl Protocol for Client {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.write(&self.message);
        }
        fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
            self.got.borrow_mut().extend_from_slice(data);
            if self.got.borrow().len() >= self.message.len() {
                t.reactor().stop();
            }
        }
    }
    let reactor = Reactor::new().expect("reactor");
    let config = ClientTlsConfig::with_ca_file(ca).expect("client config");
    let got = Rc::new(RefCell::new(Vec::new()));
    let (g, m) = (got.clone(), message.to_vec());
    let _connector = reactor.connect_tls("localhost", port, &config, move |_: &Address| Client {
        message: m.clone(),
        got: g.clone(),
    });
    let _deadline = reactor.call_later(Duration::from_secs(5), |r| r.stop());
    reactor.run().expect("run");
    let got = got.borrow().clone();
    got
}

#[test]
fn serve_echo_on_tcp_udp_and_tls_then_stop_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = torsion::transports::tls::create_dev_certs(dir.path(), &[]).expect("certs");
    let tls = format!(
        "tls:0:interface=127.0.0.1:certKey={}:privateKey={}",
        certs.server_cert.display(),
        certs.server_key.display()
    );
    let child = Command::new(TORSION)
        .args(["serve", "echo", "--listen", "tcp:0:interface=127.0.0.1"])
        .args(["--listen", "udp:0:interface=127.0.0.1", "--listen", &tls])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn torsion");
    let mut server = Server(child);
    let mut lines = BufReader::new(server.0.stdout.take().expect("stdout")).lines();
    let mut port_of = |kind: &str| -> u16 {
        let line = lines.next().expect("a listening line").expect("utf-8");
        let rest = line
            .split_once(&format!(" on {kind}:"))
            .unwrap_or_else(|| panic!("{kind} line: {line}"))
            .1;
        rest.split(':').next().unwrap().parse().expect("port")
    };
    let (tcp, udp, tls_port) = (port_of("tcp"), port_of("udp"), port_of("tls"));

    let (mut stream, back) = tcp_echo(tcp, b"over tcp");
    assert_eq!(back, b"over tcp");
    let mut buf = [0u8; 8];

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(b"over udp", ("127.0.0.1", udp)).unwrap();
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from.port()), (&b"over udp"[..], udp));

    assert_eq!(tls_echo(tls_port, &certs.ca_cert, b"over tls"), b"over tls");

    // SIGTERM: stop listening, close the open TCP connection gracefully, exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut rest = Vec::new();
    // The server closes our connection gracefully (FIN); a client closes in turn on EOF.
    stream
        .read_to_end(&mut rest)
        .expect("clean EOF from the server");
    drop(stream);
    let code = server.exit_within(Duration::from_secs(5), "no graceful exit");
    assert!(code.success(), "exit status {code}");
    assert!(
        TcpStream::connect(("127.0.0.1", tcp)).is_err(),
        "stopped listening"
    );
}

/// The path of an example binary (`cargo test` builds the examples next to the test
/// binaries' `deps` directory; a stale one is not rebuilt by `cargo test --test cli`).
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples (`cargo test` does, `cargo test --test cli` alone \
         does not)",
        path.display()
    );
    path
}

/// Runs `cmd` for at most `limit`; `None` (and the process killed) if it did not exit.
fn run_for(mut cmd: Command, limit: Duration) -> Option<std::process::Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The `int32_rpc` client exits 1 with a message when it cannot connect (it waited for ever).
#[test]
fn int32_rpc_client_exits_1_when_it_cannot_connect() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cmd = Command::new(example("int32_rpc"));
    cmd.args(["client", &format!("127.0.0.1:{port}")]);
    let out = run_for(cmd, Duration::from_secs(10)).expect("the client hung");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not connect"), "{stderr}");
}

/// `chat_server` on Ctrl-C (SIGINT): every client gets the goodbye line and then a clean close
/// (EOF, not a reset), and the server exits 0 once the clients have gone.
#[test]
fn chat_server_says_goodbye_and_closes_gracefully_on_sigint() {
    let mut child = Command::new(example("chat_server"))
        .arg("0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chat_server");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut server = Server(child);
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the listening line");
    // "chat server listening on 127.0.0.1:PORT (Ctrl-C to stop)"
    let addr = first
        .split_whitespace()
        .nth(4)
        .expect("an address")
        .to_owned();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let c = TcpStream::connect(&addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(c);
        let mut welcome = String::new();
        reader.read_line(&mut welcome).expect("the welcome line");
        assert!(welcome.starts_with("welcome"), "{welcome:?}");
        clients.push(reader);
    }
    let pid = i32::try_from(server.0.id()).expect("pid");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    for mut c in clients {
        let mut rest = String::new();
        c.read_to_string(&mut rest)
            .expect("a clean close (EOF), not a reset or a timeout");
        assert!(rest.contains("the server is shutting down"), "{rest:?}");
    }
    let status = server.exit_within(Duration::from_secs(10), "chat_server did not exit");
    assert!(status.success(), "{status:?}");
}
