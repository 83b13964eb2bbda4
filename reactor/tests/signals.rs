//! `stop_on_signals`: one SIGINT is a graceful stop (shutdown holds are honoured), calling it
//! twice changes nothing, and once the reactor is gone SIGINT ends the process again.
//!
//! Each test re-runs this test binary as a child process that raises the signal at itself, so
//! the test harness never sees a signal.

use std::cell::Cell;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::rc::Rc;
use std::time::{Duration, Instant};

use signal_hook::consts::SIGINT;
use torsion_reactor::{Reactor, ShutdownPhase};

const CHILD: &str = "TORSION_SIGNAL_TEST_CHILD";

/// Runs test `name` alone in a child process, which sees `CHILD` set to `name`.
fn in_child(name: &str) -> ExitStatus {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, name)
        .status()
        .expect("run the child")
}

fn is_child(name: &str) -> bool {
    std::env::var(CHILD).as_deref() == Ok(name)
}

/// Raises SIGINT 50 ms into the run while a shutdown hold lasts 300 ms; returns whether the
/// `During` phase came after the hold was released (a graceful stop).
fn one_sigint_waits_for_the_hold(register_twice: bool) -> bool {
    let reactor = Reactor::new().expect("reactor");
    reactor.stop_on_signals().expect("signals");
    if register_twice {
        reactor.stop_on_signals().expect("signals again");
    }
    let released = Rc::new(Cell::new(false));
    let r = released.clone();
    reactor.add_shutdown_trigger(ShutdownPhase::Before, move |reactor| {
        let hold = reactor.hold_shutdown();
        let _release = reactor.call_later(Duration::from_millis(300), move |_| {
            r.set(true);
            drop(hold);
        });
    });
    let graceful = Rc::new(Cell::new(false));
    let (g, r) = (graceful.clone(), released.clone());
    reactor.add_shutdown_trigger(ShutdownPhase::During, move |_| g.set(r.get()));
    let _raise = reactor.call_later(Duration::from_millis(50), |_| {
        signal_hook::low_level::raise(SIGINT).expect("raise");
    });
    let started = Instant::now();
    reactor.run().expect("run");
    assert!(started.elapsed() < Duration::from_secs(5));
    graceful.get()
}

#[test]
fn one_sigint_stops_gracefully() {
    const NAME: &str = "one_sigint_stops_gracefully";
    if is_child(NAME) {
        std::process::exit(if one_sigint_waits_for_the_hold(false) {
            0
        } else {
            3
        });
    }
    assert_eq!(in_child(NAME).code(), Some(0), "the hold was not honoured");
}

#[test]
fn calling_stop_on_signals_twice_still_stops_gracefully() {
    const NAME: &str = "calling_stop_on_signals_twice_still_stops_gracefully";
    if is_child(NAME) {
        std::process::exit(if one_sigint_waits_for_the_hold(true) {
            0
        } else {
            3
        });
    }
    assert_eq!(
        in_child(NAME).code(),
        Some(0),
        "one SIGINT forced the stop past the hold"
    );
}

#[test]
fn sigint_ends_the_process_again_once_the_reactor_is_gone() {
    const NAME: &str = "sigint_ends_the_process_again_once_the_reactor_is_gone";
    if is_child(NAME) {
        let reactor = Reactor::new().expect("reactor");
        reactor.stop_on_signals().expect("signals");
        drop(reactor);
        signal_hook::low_level::raise(SIGINT).expect("raise");
        std::thread::sleep(Duration::from_millis(200));
        std::process::exit(0); // still alive: the signal was swallowed
    }
    let status = in_child(NAME);
    assert_eq!(status.signal(), Some(SIGINT), "child ended with {status:?}");
}
