//! Busy polling before the loop blocks (`Reactor::set_busy_poll`): the window opens under
//! quick successions of events, closes again when events are far apart, and never delays
//! work that arrives while the loop spins. Every test arms a hard stop.

// A skip is printed (shown with `--nocapture`).
#![allow(clippy::print_stdout)]

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use torsion_reactor::{BackendKind, Reactor, ShutdownPhase, DEFAULT_BUSY_POLL};

/// CPU time (user + system, in clock ticks of 10 ms) the calling thread has used so far.
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces); utime
    // and stime are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Schedules `n` timers in a chain, each `gap` after the previous one ran, then `then`.
fn chain(reactor: &Reactor, n: usize, gap: Duration, then: impl FnOnce(&Reactor) + 'static) {
    if n == 0 {
        then(reactor);
        return;
    }
    let _ = reactor.call_later(gap, move |r| chain(r, n - 1, gap, then));
}

#[test]
fn on_by_default_and_adjustable() {
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.busy_poll(), DEFAULT_BUSY_POLL);
    reactor.set_busy_poll(Duration::ZERO);
    assert_eq!(reactor.busy_poll(), Duration::ZERO);
}

// After a burst of events 200 µs apart has opened the window to its maximum (4 ms here, so
// that spinning is easy to see), timers 5 ms apart close it again: a reactor that kept
// spinning 4 ms of every 5 would use about 80 % of a core over the slow phase.
#[test]
fn the_window_closes_when_events_are_far_apart() {
    let reactor = Reactor::new().unwrap();
    reactor.set_busy_poll(Duration::from_millis(4));
    let used = Rc::new(Cell::new(None));
    let wall = Rc::new(Cell::new(Duration::ZERO));
    let (u, w) = (used.clone(), wall.clone());
    chain(&reactor, 200, Duration::from_micros(200), move |r| {
        let before = thread_cpu_ticks();
        let start = Instant::now();
        chain(r, 80, Duration::from_millis(5), move |r| {
            u.set(before.zip(thread_cpu_ticks()).map(|(b, a)| a - b));
            w.set(start.elapsed());
            r.stop();
        });
    });
    let _guard = reactor.call_later(Duration::from_secs(10), |r| r.stop());
    reactor.run().unwrap();
    let Some(used) = used.get() else {
        println!("SKIPPED: no /proc/thread-self/stat to measure CPU time");
        return;
    };
    let wall = wall.get();
    assert!(
        wall >= Duration::from_millis(400),
        "the slow phase ran: {wall:?}"
    );
    let ticks = wall.as_millis() as u64 / 10;
    assert!(
        used * 4 < ticks,
        "the reactor used {used} of {ticks} ticks of CPU while events were 5 ms apart"
    );
}

// With the window wide open (2 s), a call from another thread must run when it arrives, not
// when the spin ends: the backend consumes the wake-up without reporting an event, so the
// spin has to notice the queued call itself.
#[test]
fn a_call_from_another_thread_ends_the_spin() {
    let reactor = Reactor::new().unwrap();
    reactor.set_busy_poll(Duration::from_secs(2));
    let handle = reactor.handle();
    let (tx, rx) = mpsc::channel::<Duration>();
    // Open the window with short waits, then go quiet and let another thread call in.
    chain(&reactor, 20, Duration::from_micros(100), move |_| {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let sent = Instant::now();
            handle
                .call_from_thread(move |r| {
                    tx.send(sent.elapsed()).unwrap();
                    r.stop();
                })
                .unwrap();
        });
    });
    let _guard = reactor.call_later(Duration::from_secs(10), |r| r.stop());
    reactor.run().unwrap();
    let latency = rx.try_recv().expect("the call ran");
    assert!(
        latency < Duration::from_millis(500),
        "the call waited {latency:?} for the spin to end"
    );
}

// `stop()` wakes the backend to get the loop back to `run` at once; a stop asked for from a
// timer while a hold is already held (the turn computed no stop deadline yet) must not wait
// for the next timer (here the 3 s guard; without one, for ever) because the spin swallowed
// that wake-up.
#[test]
fn a_stop_from_a_timer_while_a_hold_is_held_runs_the_before_phase_at_once() {
    for kind in [BackendKind::Auto, BackendKind::Polling] {
        let reactor = Reactor::with_backend(kind).unwrap();
        reactor.set_busy_poll(Duration::from_millis(50));
        reactor.set_shutdown_timeout(Duration::from_millis(100));
        let _hold = reactor.hold_shutdown();
        let stopped_at = Rc::new(Cell::new(None));
        let before_at = Rc::new(Cell::new(None));
        let b = before_at.clone();
        reactor.add_shutdown_trigger(ShutdownPhase::Before, move |_| b.set(Some(Instant::now())));
        let s = stopped_at.clone();
        // Open the window with short waits, then stop.
        chain(&reactor, 20, Duration::from_micros(100), move |r| {
            s.set(Some(Instant::now()));
            r.stop();
        });
        let _guard = reactor.call_later(Duration::from_secs(3), |r| r.stop());
        reactor.run().unwrap();
        let waited = before_at.get().expect("Before ran") - stopped_at.get().expect("stopped");
        assert!(
            waited < Duration::from_millis(500),
            "{kind:?}: the Before phase ran {waited:?} after stop()"
        );
    }
}

// The same for the second `stop()` that forces a stop past the holds.
#[test]
fn a_second_stop_from_a_timer_forces_the_stop_at_once() {
    for kind in [BackendKind::Auto, BackendKind::Polling] {
        let reactor = Reactor::with_backend(kind).unwrap();
        reactor.set_busy_poll(Duration::from_millis(50));
        reactor.set_shutdown_timeout(Duration::from_secs(3));
        let forced_at = Rc::new(Cell::new(None));
        let f = forced_at.clone();
        let kept = Rc::new(Cell::new(None));
        let k = kept.clone();
        reactor.add_shutdown_trigger(ShutdownPhase::Before, move |r| {
            k.set(Some(r.hold_shutdown()));
            // Open the window with short waits while draining, then force the stop.
            chain(r, 20, Duration::from_micros(100), move |r| {
                f.set(Some(Instant::now()));
                r.stop();
            });
        });
        let _stop = reactor.call_later(Duration::from_millis(10), |r| r.stop());
        reactor.run().unwrap();
        assert!(kept.take().is_some(), "the hold was never released");
        let waited = forced_at.get().expect("forced").elapsed();
        assert!(
            waited < Duration::from_millis(500),
            "{kind:?}: run returned {waited:?} after the second stop()"
        );
    }
}
