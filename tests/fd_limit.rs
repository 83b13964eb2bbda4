//! The `torsion` binary under descriptor exhaustion: with `RLIMIT_NOFILE` at 64 and more
//! clients than that, the server must not spin on EMFILE, and must accept again once
//! descriptors free up.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const FD_LIMIT: libc::rlim_t = 64;
const CLIENTS: usize = 100;
const MEASURE: Duration = Duration::from_secs(5);

/// The server process; killed and reaped on drop, also when the test fails.
struct Server {
    child: Child,
    stdout: Option<JoinHandle<()>>,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.stdout.take() {
            let _ = reader.join(); // ends at EOF, now that the child is gone
        }
    }
}

/// Starts `torsion serve echo` on a free loopback port with the descriptor limit lowered.
fn start_server() -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torsion"));
    cmd.args(["serve", "echo", "--listen", "tcp:0:interface=127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec. It only calls `setrlimit`,
    // which is async-signal-safe, and reads `errno`; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FD_LIMIT,
                rlim_max: FD_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start the torsion binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {} // drain until the child exits
    });
    let mut server = Server {
        child,
        stdout: Some(reader),
        port: 0,
    };
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server announces its port");
    let port = line
        .strip_prefix("Echo listening on tcp:")
        .and_then(|rest| rest.strip_suffix(":interface=127.0.0.1"))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("unexpected announcement: {line:?}"));
    server.port = port;
    server
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm field") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().unwrap();
    let stime: u64 = fields[12].parse().unwrap();
    utime + stime
}

fn ticks_per_second() -> f64 {
    // SAFETY: `sysconf` only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .expect("connect (the kernel queues connections the server cannot accept yet)");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

#[test]
fn out_of_descriptors_the_server_idles_and_recovers() {
    let mut server = start_server();
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));

    // More clients than the server has descriptors.
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    for c in &mut clients {
        c.write_all(b"ping").unwrap();
    }
    thread::sleep(Duration::from_millis(500));
    let mut served = 0;
    for c in &mut clients {
        c.set_nonblocking(true).unwrap();
        let mut buf = [0; 16];
        match c.read(&mut buf) {
            Ok(4) if &buf[..4] == b"ping" => served += 1,
            Ok(n) => panic!("unexpected reply {:?}", &buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("client failed: {e}"),
        }
    }
    assert!(served > 0, "the server serves the clients it could accept");
    assert!(
        served < CLIENTS,
        "with {FD_LIMIT} descriptors the server cannot serve all {CLIENTS} clients"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server must survive EMFILE"
    );

    // Out of descriptors, with connections waiting: the server must not spin.
    let pid = server.child.id();
    let start = cpu_ticks(pid);
    thread::sleep(MEASURE);
    let used = (cpu_ticks(pid) - start) as f64 / ticks_per_second();
    let share = used / MEASURE.as_secs_f64();
    assert!(
        share < 0.10,
        "the server used {:.0}% of a core while out of descriptors",
        share * 100.0
    );

    // Free the descriptors: a new client is accepted and served within a few seconds.
    drop(clients);
    let start = Instant::now();
    let mut fresh = connect(addr);
    fresh.write_all(b"after the shortage").unwrap();
    let mut echo = [0; 18];
    fresh
        .read_exact(&mut echo)
        .expect("the server accepts again once descriptors are free");
    assert_eq!(&echo, b"after the shortage");
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(5), "recovery took {waited:?}");
    assert!(server.child.try_wait().unwrap().is_none());
}
