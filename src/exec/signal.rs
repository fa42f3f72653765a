//! Ctrl-C, SIGTERM and SIGHUP: turned into a flag the build loop polls, so it can stop
//! every running process group, record what finished and exit 128 + the signal (130,
//! 143, 129), as a shell reports a command killed by it.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The first stop signal that arrived (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// A stop asked for by orch itself (`watch --restart`), cleared before the next build.
static STOP: AtomicBool = AtomicBool::new(false);

/// The signals that stop a build. SIGHUP is among them because a closed terminal or a
/// dropped ssh connection must not leave commands running in their own process groups,
/// which the hang-up does not reach.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    // The first signal decides the exit status; a second one (Ctrl-C twice) changes nothing.
    let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    // SAFETY: the handler only touches an atomic, which is async-signal-safe.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        for sig in STOP_SIGNALS {
            // A signal the parent ignores stays ignored: `nohup orch build` must outlive
            // the terminal, as it would without orch's handlers.
            if libc::signal(sig, handler) == libc::SIG_IGN {
                libc::signal(sig, libc::SIG_IGN);
            }
        }
    }
}

/// Whether the build must stop: a stop signal arrived, or a stop was requested.
pub fn interrupted() -> bool {
    signalled() || STOP.load(Ordering::SeqCst)
}

/// Whether a stop signal arrived (as opposed to a requested stop).
pub fn signalled() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The exit status of an interrupted orch: 128 + the signal that arrived, or 130 (as for
/// Ctrl-C) when the stop was not a signal.
pub fn exit_status() -> i32 {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => crate::EXIT_INTERRUPTED,
        sig => 128 + sig,
    }
}

/// Asks the running build to stop as if interrupted (its commands are terminated).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Clears a requested stop, before the next build.
pub fn clear_stop() {
    STOP.store(false, Ordering::SeqCst);
}
