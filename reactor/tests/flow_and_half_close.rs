//! The stream connection's flow control and half-close, on the test kit: pause and resume
//! stay paired when both are queued before delivery, half-closing both ways reports both
//! half-close callbacks, and closing while paused still ends.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use torsion_reactor::testing::{MemoryOptions, MemoryReactor, StringTransport};
use torsion_reactor::{CloseReason, ConnectionConfig, Protocol, Transport};

type Log = Rc<RefCell<Vec<String>>>;
type OnData = Box<dyn FnMut(&mut dyn Transport, &[u8])>;

struct P {
    log: Log,
    half: bool,
    on_data: Option<OnData>,
}
impl Protocol for P {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        self.log.borrow_mut().push(format!("data {}", d.len()));
        if let Some(f) = self.on_data.as_mut() {
            f(t, d)
        }
    }
    fn connection_lost(&mut self, r: CloseReason) {
        self.log.borrow_mut().push(format!("lost {r:?}"));
    }
    fn half_close(&self) -> bool {
        self.half
    }
    fn read_connection_lost(&mut self, _t: &mut dyn Transport) {
        self.log.borrow_mut().push("read_lost".into());
    }
    fn write_connection_lost(&mut self, _t: &mut dyn Transport) {
        self.log.borrow_mut().push("write_lost".into());
    }
    fn pause_producing(&mut self, _t: &mut dyn Transport) {
        self.log.borrow_mut().push("pause".into());
    }
    fn resume_producing(&mut self, _t: &mut dyn Transport) {
        self.log.borrow_mut().push("resume".into());
    }
}

impl P {
    /// A recording protocol with no data handler.
    fn new(log: &Log, half: bool) -> Self {
        P {
            log: log.clone(),
            half,
            on_data: None,
        }
    }
}

fn opts(capacity: usize, high: usize, low: usize) -> MemoryOptions {
    MemoryOptions {
        capacity,
        config: ConnectionConfig {
            high_watermark: high,
            low_watermark: low,
            ..Default::default()
        },
        ..MemoryOptions::default()
    }
}

fn flow(log: &Log) -> Vec<String> {
    log.borrow()
        .iter()
        .filter(|e| *e == "pause" || *e == "resume")
        .cloned()
        .collect()
}

/// A resume and a pause both queued before delivery cancel out: the protocol, told to pause
/// before, hears nothing more and stays paused, as the transport is.
#[test]
fn a_resume_then_a_pause_in_one_callback_leave_the_protocol_paused() {
    let mr = MemoryReactor::new();
    let log: Log = Default::default();
    let step = Rc::new(RefCell::new(0));
    let s = step.clone();
    let p = P {
        log: log.clone(),
        half: false,
        on_data: Some(Box::new(move |t, _| {
            *s.borrow_mut() += 1;
            match *s.borrow() {
                // Fill the buffer above the high watermark: paused.
                1 => t.write(&[1u8; 100]),
                // Raise the limits (RESUME queued), then write past them (PAUSE queued).
                2 => {
                    t.set_write_buffer_limits(200, 150).unwrap();
                    t.write(&[2u8; 200]);
                }
                _ => {}
            }
        })),
    };
    let st = StringTransport::with_options(&mr, p, opts(10, 20, 5));
    st.feed(b"a");
    assert_eq!(flow(&log), ["pause"]);
    st.feed(b"b");
    // Buffered ~290 > high 200: the protocol must end up paused.
    let f = flow(&log);
    assert_eq!(
        f.last().map(String::as_str),
        Some("pause"),
        "flow events: {f:?}"
    );
}

/// The same from outside callbacks: both queued before the scheduled delivery runs.
#[test]
fn a_resume_then_a_pause_outside_callbacks_leave_the_protocol_paused() {
    let mr = MemoryReactor::new();
    let log: Log = Default::default();
    let p = P::new(&log, false);
    let st = StringTransport::with_options(&mr, p, opts(10, 20, 5));
    let t = st.transport().clone();
    t.write(&[1u8; 100]);
    mr.run_until_idle();
    assert_eq!(flow(&log), ["pause"]);
    t.set_write_buffer_limits(200, 150).unwrap(); // RESUME queued
    t.write(&[2u8; 200]); // PAUSE queued
    mr.run_until_idle();
    let f = flow(&log);
    assert_eq!(
        f.last().map(String::as_str),
        Some("pause"),
        "flow events: {f:?}"
    );
    // Draining must then bring exactly one resume for a pause the protocol believes in.
    let mut got = 0;
    while got < 290 {
        got += st.take().len();
    }
    let f = flow(&log);
    let pauses = f.iter().filter(|e| *e == "pause").count();
    let resumes = f.iter().filter(|e| *e == "resume").count();
    assert_eq!(pauses, resumes, "flow events: {f:?}");
}

/// Half-close protocol: lose_write_connection, then the peer's FIN: read_connection_lost
/// comes before connection_lost.
#[test]
fn half_closing_both_ways_reports_read_connection_lost() {
    let mr = MemoryReactor::new();
    let log: Log = Default::default();
    let p = P::new(&log, true);
    let st = StringTransport::connect(&mr, p);
    st.transport().lose_write_connection();
    mr.run_until_idle();
    assert!(st.fin_received());
    st.feed_eof();
    let l = log.borrow().clone();
    assert!(st.lost().is_some());
    assert_eq!(l.last().unwrap(), "lost Done");
    assert!(l.contains(&"read_lost".to_string()), "events: {l:?}");
}

/// Half-close protocol: the peer's FIN first (read_lost), then lose_write_connection:
/// write_connection_lost comes before connection_lost.
#[test]
fn half_closing_after_the_peer_reports_write_connection_lost() {
    let mr = MemoryReactor::new();
    let log: Log = Default::default();
    let p = P::new(&log, true);
    let st = StringTransport::connect(&mr, p);
    st.feed_eof();
    st.transport().lose_write_connection();
    mr.run_until_idle();
    let l = log.borrow().clone();
    assert_eq!(l.last().unwrap(), "lost Done");
    assert!(l.contains(&"write_lost".to_string()), "events: {l:?}");
}

/// A protocol without half-close support half-closes with data still buffered, then the
/// peer's FIN turns that into a full close: write_connection_lost still comes, once the FIN
/// went out, and before connection_lost (it was skipped).
#[test]
fn half_close_overtaken_by_the_peers_fin_still_reports_write_connection_lost() {
    let mr = MemoryReactor::new();
    let log: Log = Default::default();
    let p = P::new(&log, false);
    let st = StringTransport::with_options(&mr, p, opts(10, 1000, 100));
    st.transport().write(&[7; 100]);
    st.transport().lose_write_connection();
    st.feed_eof();
    mr.run_until_idle();
    assert!(!st.fin_received(), "90 bytes still wait for room");
    assert!(st.lost().is_none());
    let mut taken = 0;
    for _ in 0..20 {
        taken += st.take().len();
        mr.run_until_idle();
    }
    assert_eq!(taken, 100);
    assert!(st.fin_received());
    let l = log.borrow().clone();
    assert_eq!(l, ["write_lost", "lost Done"]);
}

/// lose_connection while reading is paused, against a peer that keeps sending: the close
/// timeout still ends it.
#[test]
fn closing_while_paused_against_a_peer_that_keeps_sending_times_out() {
    let mr = MemoryReactor::new();
    let log: Log = Default::default();
    let p = P::new(&log, false);
    let st = StringTransport::with_options(&mr, p, opts(1024, 64, 16));
    st.transport().pause_reading();
    st.transport().lose_connection();
    for _ in 0..40 {
        st.feed(&[0u8; 4096]);
        mr.advance(Duration::from_secs(1));
        if st.lost().is_some() {
            break;
        }
    }
    assert!(
        matches!(st.lost(), Some(CloseReason::CloseTimedOut)),
        "{:?}",
        st.lost()
    );
    assert_eq!(
        log.borrow()
            .iter()
            .filter(|e| e.starts_with("lost"))
            .count(),
        1
    );
}

/// EOF while paused is held until reading resumes (from outside callbacks).
#[test]
fn eof_while_paused_then_resume() {
    let mr = MemoryReactor::new();
    let log: Log = Default::default();
    let p = P::new(&log, false);
    let st = StringTransport::connect(&mr, p);
    st.transport().pause_reading();
    mr.run_until_idle();
    st.feed(b"hello");
    st.feed_eof();
    assert!(st.lost().is_none());
    st.transport().resume_reading();
    mr.run_until_idle();
    assert!(
        matches!(st.lost(), Some(CloseReason::Done)),
        "{:?}",
        st.lost()
    );
    assert_eq!(log.borrow().clone(), ["data 5", "lost Done"]);
}

/// Limits lowered inside a callback whose later writes were gathered (written when it
/// returns): those bytes leave at once, so the protocol is not left paused over an empty
/// buffer (no resume would ever follow).
#[test]
fn limits_lowered_after_gathered_writes_do_not_leave_the_protocol_paused() {
    let mr = MemoryReactor::new();
    let log: Log = Default::default();
    let p = P {
        log: log.clone(),
        half: false,
        on_data: Some(Box::new(|t, _| {
            t.write(b"first");
            t.write(&[2u8; 100]); // gathered
            t.set_write_buffer_limits(50, 20).unwrap();
        })),
    };
    let st = StringTransport::connect(&mr, p);
    st.feed(b"a");
    assert_eq!(st.take().len(), 105);
    assert_eq!(st.transport().buffered(), 0);
    let f = flow(&log);
    assert_ne!(
        f.last().map(String::as_str),
        Some("pause"),
        "paused over an empty buffer: {f:?}"
    );
}

/// Writes past the high watermark in one callback, the later ones gathered: the protocol is
/// paused once, after the callback, and resumed once the peer read.
#[test]
fn gathered_writes_past_the_high_watermark_pause_once() {
    let mr = MemoryReactor::new();
    let log: Log = Default::default();
    let p = P {
        log: log.clone(),
        half: false,
        on_data: Some(Box::new(|t, _| {
            t.write(b"first");
            for _ in 0..4 {
                t.write(&[7u8; 10]); // gathered
            }
            assert_eq!(t.buffered(), 40, "the gathered bytes count as buffered");
        })),
    };
    let st = StringTransport::with_options(&mr, p, opts(10, 20, 5));
    st.feed(b"a");
    assert_eq!(log.borrow().clone(), ["data 1", "pause"]);
    let mut out = Vec::new();
    for _ in 0..10 {
        out.extend(st.take());
    }
    assert_eq!(out.len(), 45);
    assert_eq!(flow(&log), ["pause", "resume"]);
}
