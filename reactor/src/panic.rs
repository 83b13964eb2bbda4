//! Catching panics from user callbacks.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, turning a panic into its message.
///
/// Every callback into user code (protocol, factory, timer, producer) goes through this, so a
/// panic costs only the connection it happened on. The panic hook still runs as usual.
pub fn catch_unwind_message<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = panic_message(&*payload);
        // The payload's own destructor may panic too: contain that as well.
        if catch_unwind(AssertUnwindSafe(move || drop(payload))).is_err() {
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
