//! Ctrl-C and SIGTERM: turned into a flag the build loop polls, so it can stop every
//! running process group, record what finished and exit 130.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// A stop asked for by orch itself (`watch --restart`), cleared before the next build.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT and SIGTERM.
pub fn install() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Whether the build must stop: a stop signal arrived, or a stop was requested.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst) || STOP.load(Ordering::SeqCst)
}

/// Whether SIGINT or SIGTERM arrived (as opposed to a requested stop).
pub fn signalled() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Asks the running build to stop as if interrupted (its commands are terminated).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Clears a requested stop, before the next build.
pub fn clear_stop() {
    STOP.store(false, Ordering::SeqCst);
}
