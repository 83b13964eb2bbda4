//! Catching panics from user callbacks.
//!
//! A panic caught here is logged once, through `tracing`, by the code that handles it (the
//! connection it costs, the reactor for a timer), and its message says where it was raised.
//! The standard panic hook would print it to stderr as well, so the first call installs a
//! process-wide hook that stays silent for a panic raised inside [`catch_unwind_message`] on
//! its own thread (it records the location, and logs a backtrace when `RUST_BACKTRACE` asks
//! for one) and hands every other panic to the hook installed before it. A hook the program
//! installs later replaces this one, and caught panics are then printed by it as well.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many [`catch_unwind_message`] calls this thread is inside.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
    /// Where the panic being caught was raised, recorded by the hook.
    static RAISED_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs the hook described in the module documentation, once per process.
fn install_hook() {
    // `set_hook` refuses to run on a panicking thread (a catch made while unwinding, from a
    // destructor); a later catch installs it.
    if HOOK.is_completed() || std::thread::panicking() {
        return;
    }
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.try_with(Cell::get).unwrap_or(0) == 0 {
                return previous(info);
            }
            let at = info.location().map(ToString::to_string);
            let backtrace = Backtrace::capture();
            if backtrace.status() == BacktraceStatus::Captured {
                tracing::error!(location = ?at, "a callback panicked here:\n{backtrace}");
            }
            let _ = RAISED_AT.try_with(|r| *r.borrow_mut() = at);
        }));
    });
}

/// `catch_unwind`, with the hook silent for what it catches.
fn caught<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    CATCHING.with(|c| c.set(c.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    result
}

/// Runs `f`, turning a panic into its message, followed by where it was raised
/// (`"boom (at src/proto.rs:12:9)"`).
///
/// Every callback into user code (protocol, factory, timer, producer) goes through this, so a
/// panic costs only the connection it happened on. The caller logs it; the standard panic
/// hook does not print it (see the module documentation).
pub fn catch_unwind_message<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install_hook();
    caught(f).map_err(|payload| {
        let mut message = panic_message(&*payload);
        if let Some(at) = RAISED_AT.with(|r| r.borrow_mut().take()) {
            message = format!("{message} (at {at})");
        }
        // The payload's own destructor may panic too: contain that as well.
        if caught(move || drop(payload)).is_err() {
            RAISED_AT.with(|r| r.borrow_mut().take());
            tracing::error!("a panic payload panicked while being dropped");
        }
        message
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
