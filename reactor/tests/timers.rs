//! Timers and the reactor lifecycle.
//!
//! The first half runs on the virtual clock of [`MemoryReactor`]: deterministic, and seconds of
//! timer time cost microseconds. The second half runs a real [`Reactor`] with small real delays;
//! every one of those tests arms a hard stop so that a bug cannot hang the test run.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use torsion_reactor::testing::MemoryReactor;
use torsion_reactor::{catch_unwind_message, BackendKind, LoopingCall, Reactor, ShutdownPhase};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// A shared log of events, each tagged with the reactor time it happened at.
#[derive(Clone, Default)]
struct Log(Rc<RefCell<Vec<(&'static str, Duration)>>>);

impl Log {
    fn push(&self, what: &'static str, at: Duration) {
        self.0.borrow_mut().push((what, at));
    }

    fn names(&self) -> Vec<&'static str> {
        self.0.borrow().iter().map(|(n, _)| *n).collect()
    }

    fn entries(&self) -> Vec<(&'static str, Duration)> {
        self.0.borrow().clone()
    }

    /// A timer callback that records `what` and the time it ran.
    fn recorder(&self, what: &'static str) -> impl FnOnce(&Reactor) + 'static {
        let log = self.clone();
        move |r| log.push(what, r.now())
    }
}

/// Arms the hard stop every real-reactor test needs: whatever happens, `run` returns.
fn hard_stop(reactor: &Reactor) {
    let _hard_stop = reactor.call_later(secs(5), |r| r.stop());
}

// ---------------------------------------------------------------------------------------------
// Virtual clock
// ---------------------------------------------------------------------------------------------

#[test]
fn timers_fire_in_deadline_order_and_fifo_for_equal_deadlines() {
    let mr = MemoryReactor::new();
    let r = mr.reactor();
    let log = Log::default();
    let _c = r.call_later(secs(30), log.recorder("30s"));
    let _a = r.call_later(secs(10), log.recorder("10s first"));
    let _b = r.call_later(secs(20), log.recorder("20s"));
    let _d = r.call_later(secs(10), log.recorder("10s second"));
    let _e = r.call_later(secs(10), log.recorder("10s third"));

    mr.advance(secs(9));
    assert!(log.names().is_empty(), "nothing is due before 10 s");

    mr.advance(secs(21));
    assert_eq!(
        log.entries(),
        vec![
            ("10s first", secs(10)),
            ("10s second", secs(10)),
            ("10s third", secs(10)),
            ("20s", secs(20)),
            ("30s", secs(30)),
        ],
        "each timer runs at its own deadline, in deadline order, FIFO among equals"
    );
}

#[test]
fn cancelled_timer_never_fires() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let keep = mr.reactor().call_later(secs(1), log.recorder("kept"));
    let cancelled = mr.reactor().call_later(secs(1), log.recorder("cancelled"));
    assert!(cancelled.active());
    cancelled.cancel();
    assert!(!cancelled.active());
    assert_eq!(cancelled.remaining(), None);
    cancelled.cancel(); // a second cancel is a no-op

    mr.advance(secs(5));
    assert_eq!(log.names(), vec!["kept"]);
    assert!(!keep.active(), "a timer that ran is no longer active");
    keep.cancel(); // cancelling after it ran is a no-op
    assert_eq!(log.names(), vec!["kept"]);
}

#[test]
fn reset_to_a_later_deadline() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let call = mr.reactor().call_later(secs(5), log.recorder("fired"));
    mr.advance(secs(2));
    call.reset(secs(10)); // now due at 12 s
    mr.advance(secs(8)); // t = 10 s: past the old deadline
    assert!(log.names().is_empty(), "the old deadline no longer applies");
    assert!(call.active());
    mr.advance(secs(2)); // t = 12 s
    assert_eq!(log.entries(), vec![("fired", secs(12))]);
    mr.advance(secs(60));
    assert_eq!(log.names().len(), 1, "fires once");
}

#[test]
fn reset_to_an_earlier_deadline() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let call = mr.reactor().call_later(secs(10), log.recorder("fired"));
    mr.advance(secs(1));
    call.reset(secs(2)); // now due at 3 s
    mr.advance(secs(2));
    assert_eq!(log.entries(), vec![("fired", secs(3))]);
    assert!(!call.active());
    mr.advance(secs(20)); // past the original deadline: the stale entry must not fire again
    assert_eq!(log.names().len(), 1, "fires once");
}

#[test]
fn delay_postpones_by_the_given_amount() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let call = mr.reactor().call_later(secs(5), log.recorder("fired"));
    mr.advance(secs(1));
    call.delay(secs(3)); // 5 s + 3 s = 8 s
    call.delay(secs(1)); // 9 s
    mr.advance(secs(7)); // t = 8 s
    assert!(log.names().is_empty());
    assert_eq!(call.remaining(), Some(secs(1)));
    mr.advance(secs(1));
    assert_eq!(log.entries(), vec![("fired", secs(9))]);
}

#[test]
fn huge_delays_saturate_instead_of_overflowing() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let call = mr
        .reactor()
        .call_later(Duration::MAX, log.recorder("never"));
    call.delay(secs(1));
    call.reset(Duration::MAX);
    mr.advance(secs(3600));
    assert!(call.active(), "still waiting, for practically ever");
    assert!(log.names().is_empty());
    call.reset(secs(1));
    mr.advance(secs(1));
    assert_eq!(log.names(), vec!["never"], "and a later reset still works");
}

#[test]
fn remaining_counts_down_and_is_none_once_inactive() {
    let mr = MemoryReactor::new();
    let call = mr.reactor().call_later(secs(5), |_| {});
    assert_eq!(call.remaining(), Some(secs(5)));
    mr.advance(ms(1500));
    assert_eq!(call.remaining(), Some(ms(3500)));
    call.reset(secs(1));
    assert_eq!(call.remaining(), Some(secs(1)));
    mr.advance(secs(1));
    assert_eq!(call.remaining(), None, "ran: no longer active");

    let cancelled = mr.reactor().call_later(secs(5), |_| {});
    cancelled.cancel();
    assert_eq!(cancelled.remaining(), None);
}

#[test]
fn remaining_is_zero_when_overdue() {
    let mr = MemoryReactor::new();
    let call = mr.reactor().call_later(secs(1), |_| {});
    // Move the clock without running the reactor: the call is overdue but has not run.
    mr.clock().advance(secs(3));
    assert!(call.active());
    assert_eq!(call.remaining(), Some(Duration::ZERO));
    mr.run_until_idle();
    assert!(!call.active());
}

#[test]
fn zero_delay_runs_later_not_inside_the_scheduling_callback() {
    let mr = MemoryReactor::new();
    let ran = Rc::new(Cell::new(false));
    let seen_inside = Rc::new(Cell::new(None));

    let (r2, s2) = (ran.clone(), seen_inside.clone());
    let _outer = mr.reactor().call_later(secs(1), move |r| {
        let r3 = r2.clone();
        let _inner = r.call_later(Duration::ZERO, move |_| r3.set(true));
        // Still inside the callback that scheduled it: it must not have run.
        s2.set(Some(r2.get()));
    });
    mr.advance(secs(1));
    assert_eq!(seen_inside.get(), Some(false), "ran inside its scheduler");
    assert!(
        ran.get(),
        "a zero delay runs once the scheduling callback returned"
    );

    // Scheduled from outside any callback: nothing runs until the reactor turns.
    let flag = Rc::new(Cell::new(false));
    let f = flag.clone();
    let _call = mr
        .reactor()
        .call_later(Duration::ZERO, move |_| f.set(true));
    assert!(!flag.get());
    mr.run_until_idle();
    assert!(flag.get());
}

/// The reactor docs: "a zero delay means 'next turn', never 'now'", and a turn runs the due
/// timers, then the `call_soon` queue (`run_timers` says it outright: "timers scheduled by these
/// callbacks for 'now' wait for the next turn"). So a timer that re-arms itself with a zero
/// delay fires once per turn, and other work queued meanwhile gets its turn in between, instead
/// of waiting behind thousands of firings.
#[test]
fn zero_delay_timer_from_a_timer_waits_for_the_next_turn() {
    fn rearm(r: &Reactor, fired: Rc<Cell<u32>>) {
        fired.set(fired.get() + 1);
        if fired.get() < 100 {
            let _next = r.call_later(Duration::ZERO, move |r| rearm(r, fired));
        }
    }

    let mr = MemoryReactor::new();
    let fired = Rc::new(Cell::new(0));
    let fired_when_soon_ran = Rc::new(Cell::new(None));
    let (f, s) = (fired.clone(), fired_when_soon_ran.clone());
    let _first = mr.reactor().call_later(secs(1), move |r| {
        let f2 = f.clone();
        r.call_soon(move |_| s.set(Some(f2.get())));
        rearm(r, f);
    });
    mr.advance(secs(1));
    assert_eq!(fired.get(), 100, "the chain ran to its end");
    let at = fired_when_soon_ran.get().expect("call_soon ran");
    assert!(
        at <= 2,
        "a zero-delay timer scheduled from a timer ran in the same turn: the call_soon work \
         queued by the first firing waited until {at} firings were done"
    );
}

#[test]
fn timers_scheduled_from_timer_callbacks() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let l = log.clone();
    let _a = mr.reactor().call_later(secs(1), move |r| {
        l.push("a", r.now());
        let l2 = l.clone();
        let _b = r.call_later(secs(2), move |r| {
            l2.push("b", r.now());
            let _c = r.call_later(secs(3), l2.recorder("c"));
        });
        // Due before "b": scheduled later, but its deadline is earlier.
        let _d = r.call_later(secs(1), l.recorder("d"));
    });
    mr.advance(secs(10));
    assert_eq!(
        log.entries(),
        vec![
            ("a", secs(1)),
            ("d", secs(2)),
            ("b", secs(3)),
            ("c", secs(6))
        ]
    );
}

#[test]
fn looping_call_runs_at_a_fixed_rate() {
    let mr = MemoryReactor::new();
    let ticks = Rc::new(RefCell::new(Vec::new()));
    let t = ticks.clone();
    let looping = LoopingCall::start(mr.reactor(), secs(2), false, move |r, skipped| {
        t.borrow_mut().push((r.now(), skipped));
    });
    mr.advance(ms(1999));
    assert!(
        ticks.borrow().is_empty(),
        "now=false: first tick one interval later"
    );
    mr.advance(ms(6001)); // t = 8 s
    assert_eq!(
        *ticks.borrow(),
        vec![(secs(2), 0), (secs(4), 0), (secs(6), 0), (secs(8), 0)]
    );
    assert!(looping.running());
    looping.stop();
    assert!(!looping.running());
    mr.advance(secs(10));
    assert_eq!(ticks.borrow().len(), 4, "no tick after stop");
}

#[test]
fn looping_call_now_runs_on_the_next_turn() {
    let mr = MemoryReactor::new();
    let ticks = Rc::new(RefCell::new(Vec::new()));
    let t = ticks.clone();
    let looping = LoopingCall::start(mr.reactor(), secs(1), true, move |r, skipped| {
        t.borrow_mut().push((r.now(), skipped));
    });
    assert!(ticks.borrow().is_empty(), "not inside start()");
    mr.run_until_idle();
    assert_eq!(*ticks.borrow(), vec![(Duration::ZERO, 0)]);
    mr.advance(secs(2));
    assert_eq!(
        *ticks.borrow(),
        vec![(Duration::ZERO, 0), (secs(1), 0), (secs(2), 0)]
    );
    looping.stop();
}

#[test]
fn looping_call_reports_skipped_ticks_when_the_clock_jumps() {
    let mr = MemoryReactor::new();
    let ticks = Rc::new(RefCell::new(Vec::new()));
    let t = ticks.clone();
    let looping = LoopingCall::start(mr.reactor(), secs(1), false, move |r, skipped| {
        t.borrow_mut().push((r.now(), skipped));
    });
    // The reactor was busy (or the machine asleep) for 3.5 intervals: the clock jumps without
    // any turn in between.
    mr.clock().advance(ms(3500));
    mr.run_until_idle();
    // Due at 1 s, run at 3.5 s: the ticks of 2 s and 3 s were skipped.
    assert_eq!(*ticks.borrow(), vec![(ms(3500), 2)]);
    // Fixed rate: the next tick is at the next multiple of the interval (4 s), not 4.5 s.
    mr.advance(ms(499));
    assert_eq!(ticks.borrow().len(), 1);
    mr.advance(ms(1));
    assert_eq!(*ticks.borrow(), vec![(ms(3500), 2), (secs(4), 0)]);
    looping.stop();
}

#[test]
fn looping_call_can_stop_itself_from_its_callback() {
    let mr = MemoryReactor::new();
    let count = Rc::new(Cell::new(0));
    let slot: Rc<RefCell<Option<LoopingCall>>> = Rc::new(RefCell::new(None));
    let (c, s) = (count.clone(), slot.clone());
    let looping = LoopingCall::start(mr.reactor(), secs(1), false, move |_, _| {
        c.set(c.get() + 1);
        if c.get() == 3 {
            if let Some(l) = s.borrow().as_ref() {
                l.stop();
            }
        }
    });
    *slot.borrow_mut() = Some(looping);
    mr.advance(secs(10));
    assert_eq!(count.get(), 3);
}

#[test]
fn a_panic_in_a_looping_call_stops_the_loop() {
    let mr = MemoryReactor::new();
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let looping = LoopingCall::start(mr.reactor(), secs(1), false, move |_, _| {
        c.set(c.get() + 1);
        assert!(c.get() != 2, "second tick fails");
    });
    let other = Rc::new(Cell::new(false));
    let o = other.clone();
    let _later = mr.reactor().call_later(secs(5), move |_| o.set(true));
    mr.advance(secs(10));
    assert_eq!(count.get(), 2, "no tick after the panic");
    assert!(!looping.running(), "a loop that stopped says so");
    assert!(other.get(), "the reactor went on");
}

#[test]
fn a_panicking_timer_does_not_stop_the_others() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let _before = mr.reactor().call_later(secs(1), log.recorder("before"));
    let _boom = mr
        .reactor()
        .call_later(secs(1), |_| panic!("timer panic (expected by this test)"));
    let _same_time = mr.reactor().call_later(secs(1), log.recorder("same time"));
    let _later = mr.reactor().call_later(secs(2), log.recorder("later"));
    mr.advance(secs(3));
    assert_eq!(log.names(), vec!["before", "same time", "later"]);
    // The reactor keeps working afterwards.
    let _again = mr.reactor().call_later(secs(1), log.recorder("again"));
    mr.advance(secs(1));
    assert_eq!(log.names().last(), Some(&"again"));
}

#[test]
fn memory_reactor_run_jumps_the_clock_and_returns_when_idle() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let _a = mr.reactor().call_later(secs(3600), log.recorder("an hour"));
    let _b = mr.reactor().call_later(secs(60), log.recorder("a minute"));
    let started = Instant::now();
    mr.reactor().run().expect("run");
    assert!(started.elapsed() < secs(1), "virtual time does not sleep");
    assert_eq!(
        log.entries(),
        vec![("a minute", secs(60)), ("an hour", secs(3600))]
    );
}

// ---------------------------------------------------------------------------------------------
// Real reactor
// ---------------------------------------------------------------------------------------------

#[test]
fn real_reactor_call_later_order() {
    let reactor = Reactor::new().expect("reactor");
    hard_stop(&reactor);
    let log = Log::default();
    let _c = reactor.call_later(ms(30), log.recorder("30ms"));
    let _a = reactor.call_later(ms(10), log.recorder("10ms first"));
    let _b = reactor.call_later(ms(20), log.recorder("20ms"));
    let _d = reactor.call_later(ms(10), log.recorder("10ms second"));
    let _z = reactor.call_later(Duration::ZERO, log.recorder("0ms"));
    let l = log.clone();
    let _stop = reactor.call_later(ms(40), move |r| {
        l.push("stop", r.now());
        r.stop();
    });
    let started = Instant::now();
    reactor.run().expect("run");
    assert!(started.elapsed() < secs(4), "stopped by the 40 ms timer");
    let entries = log.entries();
    assert_eq!(
        log.names(),
        vec!["0ms", "10ms first", "10ms second", "20ms", "30ms", "stop"]
    );
    for (name, at) in entries {
        let due = match name {
            "0ms" => ms(0),
            "10ms first" | "10ms second" => ms(10),
            "20ms" => ms(20),
            "30ms" => ms(30),
            _ => ms(40),
        };
        assert!(at >= due, "{name} ran early: at {at:?}");
    }
}

#[test]
fn call_from_thread_wakes_the_loop() {
    call_from_thread_wakes(BackendKind::Auto);
}

#[test]
fn call_from_thread_wakes_the_loop_on_the_polling_backend() {
    call_from_thread_wakes(BackendKind::Polling);
}

fn call_from_thread_wakes(backend: BackendKind) {
    let reactor = Reactor::with_backend(backend).expect("reactor");
    hard_stop(&reactor);
    let handle = reactor.handle();
    let reactor_thread = std::thread::current().id();
    let ran_on = Arc::new(std::sync::Mutex::new(None));
    let ran_on2 = ran_on.clone();
    let worker = std::thread::spawn(move || {
        std::thread::sleep(ms(50));
        handle
            .call_from_thread(move |r| {
                *ran_on2.lock().expect("lock") = Some(std::thread::current().id());
                r.stop();
            })
            .expect("reactor alive");
        handle
    });
    let started = Instant::now();
    reactor.run().expect("run");
    let elapsed = started.elapsed();
    // The only timer is the 5 s hard stop: without a wake-up the loop would sleep until then.
    assert!(
        elapsed < secs(2),
        "woken by the other thread (took {elapsed:?})"
    );
    assert!(
        elapsed >= ms(40),
        "ran before the thread called ({elapsed:?})"
    );
    assert_eq!(*ran_on.lock().expect("lock"), Some(reactor_thread));

    let handle = worker.join().expect("worker");
    drop(reactor);
    assert!(
        handle.call_from_thread(|_| {}).is_err(),
        "a dropped reactor refuses calls"
    );
}

#[test]
fn run_until_idle_fires_a_postponed_timer_that_is_due() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    let call = mr.reactor().call_later(secs(10), log.recorder("fired"));
    call.reset(secs(20)); // pushed back, as an idle timeout does on activity
    mr.clock().advance(secs(25));
    mr.run_until_idle();
    assert_eq!(log.names(), vec!["fired"]);
}

#[test]
fn a_virtual_run_that_runs_out_of_work_runs_all_three_shutdown_phases() {
    let mr = MemoryReactor::new();
    let log = Log::default();
    mr.reactor()
        .add_shutdown_trigger(ShutdownPhase::After, log.recorder("after"));
    mr.reactor()
        .add_shutdown_trigger(ShutdownPhase::During, log.recorder("during"));
    mr.reactor()
        .add_shutdown_trigger(ShutdownPhase::Before, log.recorder("before"));
    mr.reactor().run().expect("run");
    assert_eq!(log.names(), vec!["before", "during", "after"]);
}

#[test]
fn stop_runs_shutdown_phases_in_order() {
    let reactor = Reactor::new().expect("reactor");
    hard_stop(&reactor);
    let log = Log::default();
    // Registered out of order: the phase decides the order, then registration order.
    let l = log.clone();
    reactor.add_shutdown_trigger(ShutdownPhase::After, move |r| {
        assert!(r.is_stopping());
        l.push("after", r.now());
    });
    reactor.add_shutdown_trigger(ShutdownPhase::During, log.recorder("during"));
    let l = log.clone();
    reactor.add_shutdown_trigger(ShutdownPhase::Before, move |r| {
        assert!(r.is_stopping());
        assert!(!r.is_running());
        l.push("before 1", r.now());
    });
    reactor.add_shutdown_trigger(ShutdownPhase::Before, log.recorder("before 2"));
    let l = log.clone();
    let _stop = reactor.call_later(ms(10), move |r| {
        l.push("stop called", r.now());
        r.stop();
        l.push("stop returned", r.now());
    });
    reactor.run().expect("run");
    log.push("run returned", reactor.now());
    assert_eq!(
        log.names(),
        vec![
            "stop called",
            "stop returned",
            "before 1",
            "before 2",
            "during",
            "after",
            "run returned"
        ]
    );
}

#[test]
fn hold_shutdown_delays_the_stop_until_released() {
    let reactor = Reactor::new().expect("reactor");
    hard_stop(&reactor);
    let log = Log::default();
    let l = log.clone();
    reactor.add_shutdown_trigger(ShutdownPhase::Before, move |r| {
        l.push("before", r.now());
        // Drain work: hold the stop for 100 ms. The loop keeps running timers meanwhile.
        let hold = r.hold_shutdown();
        let l2 = l.clone();
        let _release = r.call_later(ms(100), move |r| {
            l2.push("released", r.now());
            drop(hold);
        });
    });
    reactor.add_shutdown_trigger(ShutdownPhase::During, log.recorder("during"));
    let _stop = reactor.call_later(ms(10), |r| r.stop());
    let started = Instant::now();
    reactor.run().expect("run");
    let elapsed = started.elapsed();
    assert_eq!(log.names(), vec!["before", "released", "during"]);
    let entries = log.entries();
    assert!(
        entries[2].1 >= entries[0].1 + ms(100),
        "During ran before the hold was released: {entries:?}"
    );
    assert!(
        elapsed < secs(2),
        "stopped soon after the release ({elapsed:?})"
    );
}

#[test]
fn shutdown_timeout_bounds_a_hold_never_released() {
    let reactor = Reactor::new().expect("reactor");
    hard_stop(&reactor);
    reactor.set_shutdown_timeout(ms(200));
    let forever: Rc<RefCell<Option<torsion_reactor::ShutdownHold>>> = Rc::default();
    let f = forever.clone();
    reactor.add_shutdown_trigger(ShutdownPhase::Before, move |r| {
        *f.borrow_mut() = Some(r.hold_shutdown());
    });
    let during_at = Rc::new(Cell::new(None));
    let d = during_at.clone();
    reactor.add_shutdown_trigger(ShutdownPhase::During, move |r| d.set(Some(r.now())));
    let stop_at = Rc::new(Cell::new(None));
    let s = stop_at.clone();
    let _stop = reactor.call_later(ms(10), move |r| {
        s.set(Some(r.now()));
        r.stop();
    });
    let started = Instant::now();
    reactor.run().expect("run");
    let elapsed = started.elapsed();
    assert!(forever.borrow().is_some(), "the hold was never released");
    let (stop_at, during_at) = (
        stop_at.get().expect("stop called"),
        during_at.get().expect("During ran"),
    );
    assert!(
        during_at >= stop_at + ms(200),
        "gave up before the timeout: stop at {stop_at:?}, During at {during_at:?}"
    );
    assert!(
        elapsed < secs(2),
        "the shutdown timeout (200 ms) bounded the stop, not the 5 s hard stop ({elapsed:?})"
    );
}

#[test]
fn a_second_stop_skips_the_wait_for_holds() {
    let reactor = Reactor::new().expect("reactor");
    hard_stop(&reactor);
    // Default shutdown timeout (30 s): only the second stop can end this quickly.
    let forever: Rc<RefCell<Option<torsion_reactor::ShutdownHold>>> = Rc::default();
    let f = forever.clone();
    reactor.add_shutdown_trigger(ShutdownPhase::Before, move |r| {
        *f.borrow_mut() = Some(r.hold_shutdown());
        let _again = r.call_later(ms(50), |r| r.stop());
    });
    let _stop = reactor.call_later(ms(10), |r| r.stop());
    let started = Instant::now();
    reactor.run().expect("run");
    let elapsed = started.elapsed();
    assert!(forever.borrow().is_some());
    assert!(elapsed >= ms(50), "{elapsed:?}");
    assert!(elapsed < secs(2), "the second stop forced it ({elapsed:?})");
}

#[test]
fn stop_before_run_runs_startup_triggers_then_stops() {
    let reactor = Reactor::new().expect("reactor");
    hard_stop(&reactor);
    let log = Log::default();
    reactor.when_running(log.recorder("startup"));
    reactor.add_shutdown_trigger(ShutdownPhase::After, log.recorder("after"));
    reactor.stop();
    let started = Instant::now();
    reactor.run().expect("run");
    assert!(started.elapsed() < secs(2));
    assert_eq!(log.names(), vec!["startup", "after"]);
}

#[test]
fn when_running_runs_at_start() {
    let reactor = Reactor::new().expect("reactor");
    hard_stop(&reactor);
    let log = Log::default();
    let _timer = reactor.call_later(Duration::ZERO, log.recorder("zero-delay timer"));
    let l = log.clone();
    reactor.when_running(move |r| {
        assert!(r.is_running(), "startup triggers run inside run()");
        l.push("startup", r.now());
        // Registered while running: runs on the next turn.
        let l2 = l.clone();
        r.when_running(move |r| {
            l2.push("late startup", r.now());
            r.stop();
        });
    });
    assert!(log.names().is_empty(), "not before run()");
    reactor.run().expect("run");
    let names = log.names();
    assert_eq!(names.first(), Some(&"startup"), "{names:?}");
    assert!(names.contains(&"late startup"), "{names:?}");
    assert!(!reactor.is_running());
}

#[test]
fn stop_from_another_thread_via_handle() {
    let reactor = Reactor::new().expect("reactor");
    hard_stop(&reactor);
    let stopped_by_thread = Arc::new(AtomicBool::new(false));
    let flag = stopped_by_thread.clone();
    let handle = reactor.handle();
    let worker = std::thread::spawn(move || {
        std::thread::sleep(ms(20));
        flag.store(true, Ordering::SeqCst);
        handle.stop().expect("reactor alive");
    });
    let started = Instant::now();
    reactor.run().expect("run");
    worker.join().expect("worker");
    assert!(stopped_by_thread.load(Ordering::SeqCst));
    assert!(started.elapsed() < secs(2));
}

/// A jump of the clock by more than u32::MAX intervals: one call reports them all as skipped,
/// and the loop goes on ticking.
#[test]
fn looping_call_survives_clock_jump_of_more_than_u32_intervals() {
    let mr = MemoryReactor::new();
    let ticks = Rc::new(Cell::new(0u64));
    let calls = Rc::new(Cell::new(0u32));
    let (t, c) = (ticks.clone(), calls.clone());
    let lc = LoopingCall::start(
        mr.reactor(),
        Duration::from_micros(1),
        false,
        move |_, skipped| {
            t.set(t.get() + 1 + skipped);
            c.set(c.get() + 1);
        },
    );
    // 4295 s = 4_295_000_000 intervals of 1 µs (> u32::MAX).
    mr.clock().advance(Duration::from_secs(4295));
    mr.run_until_idle();
    assert_eq!(calls.get(), 1, "one call for one late tick");
    assert_eq!(ticks.get(), 4_295_000_000, "skipped accounting");
    mr.advance(Duration::from_micros(1));
    assert_eq!(calls.get(), 2, "the loop keeps ticking");
    assert!(lc.running());
    lc.stop();
}

/// 1 ns interval, 5 s late: the skipped count is exact.
#[test]
fn looping_call_skipped_count_not_truncated() {
    let mr = MemoryReactor::new();
    let ticks = Rc::new(Cell::new(0u64));
    let t = ticks.clone();
    let lc = LoopingCall::start(mr.reactor(), Duration::from_nanos(1), false, move |_, s| {
        t.set(t.get() + 1 + s)
    });
    mr.clock().advance(Duration::from_secs(5));
    mr.run_until_idle();
    assert_eq!(ticks.get(), 5_000_000_000);
    let before = ticks.get();
    mr.advance(Duration::from_nanos(1));
    assert_eq!(ticks.get(), before + 1, "the loop keeps ticking");
    lc.stop();
}

/// A "practically never" interval: the first tick still runs.
#[test]
fn looping_call_with_huge_interval_runs_first_tick() {
    let mr = MemoryReactor::new();
    let calls = Rc::new(Cell::new(0u32));
    let c = calls.clone();
    mr.advance(Duration::from_secs(1));
    let lc = LoopingCall::start(mr.reactor(), Duration::MAX, true, move |_, _| {
        c.set(c.get() + 1)
    });
    mr.run_until_idle();
    assert_eq!(calls.get(), 1);
    lc.stop();
}

#[test]
fn looping_call_start_with_huge_interval_does_not_panic() {
    let mr = MemoryReactor::new();
    mr.advance(Duration::from_secs(1));
    let lc = LoopingCall::start(mr.reactor(), Duration::MAX, false, |_, _| {});
    lc.stop();
}

/// A panic payload whose destructor panics.
struct Bomb;
impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("payload drop");
    }
}

/// A panic payload whose own destructor panics is contained too.
#[test]
fn panic_payload_with_panicking_drop_is_contained() {
    let r = catch_unwind_message(|| std::panic::panic_any(Bomb));
    assert!(r.is_err());
}

#[test]
fn reactor_survives_panic_payload_with_panicking_drop() {
    let mr = MemoryReactor::new();
    mr.reactor().call_soon(|_| std::panic::panic_any(Bomb));
    let ran = Rc::new(Cell::new(false));
    let r2 = ran.clone();
    mr.reactor().call_soon(move |_| r2.set(true));
    let escaped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mr.run_until_idle()));
    assert!(escaped.is_ok(), "panic escaped the reactor");
    assert!(ran.get());
}

/// A timer a month away: the epoll backend waits at most a day at a time, so it never needs
/// `epoll_pwait2` (missing before Linux 5.11 and refused by some seccomp profiles). Run the
/// test binary under `strace -f -e inject=epoll_pwait2:error=ENOSYS` to check that.
#[test]
fn a_timer_a_month_away_does_not_stop_the_reactor() {
    let reactor = Reactor::with_backend(BackendKind::Epoll).expect("reactor");
    let _far = reactor.call_later(Duration::from_secs(30 * 24 * 3600), |_| {});
    let handle = reactor.handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let _ = handle.stop();
    });
    reactor.run().expect("run must not fail on a far timer");
    stopper.join().expect("stopper");
}
