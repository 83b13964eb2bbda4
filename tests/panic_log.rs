//! A panic in a user callback is logged once: through `tracing`, with its message and where it
//! was raised, and not printed again by the standard panic hook; panics elsewhere still reach
//! the program's own hook. (One test in its own binary: the panic hook is process-wide.)

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use torsion::prelude::*;
use torsion::testing::{MemoryReactor, StringTransport};

/// Collects what the `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Panics on every read.
struct Exploding;

impl Protocol for Exploding {
    fn data_received(&mut self, _t: &mut dyn Transport, _data: &[u8]) {
        panic!("exploding protocol, as the test wants");
    }
}

#[test]
fn a_callback_panic_is_logged_once_with_its_location() {
    // The program's own hook, installed before torsion catches anything: it must see the
    // panic raised outside torsion's callbacks and not the one raised inside.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::panic::set_hook(Box::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mr = MemoryReactor::new();
    let st = StringTransport::connect(&mr, Exploding);
    st.feed(b"go");
    let message = match st.lost() {
        Some(CloseReason::Panic(message)) => message,
        other => panic!("expected a panic close, got {other:?}"),
    };
    assert!(
        message.starts_with("exploding protocol, as the test wants (at tests/panic_log.rs:"),
        "{message}"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "the program's hook stayed silent"
    );
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.matches("exploding protocol").count(),
        1,
        "logged once:\n{text}"
    );
    assert!(text.contains("panic_log.rs:"), "with its location:\n{text}");

    // A timer's panic is caught and logged too; a panic on a thread of the program's own
    // reaches its hook as before.
    mr.reactor().call_soon(|_| panic!("exploding timer"));
    mr.run_until_idle();
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    let outside = std::thread::spawn(|| panic!("outside any callback")).join();
    assert!(outside.is_err());
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the program's hook saw it");
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.matches("exploding timer").count(), 1, "{text}");
}
