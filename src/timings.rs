//! Stage timings for diagnosing slow builds: with `ORCH_TIMINGS=1`, each stage of a
//! command prints how long it took on stderr.

use std::time::Instant;

/// Marks stages of one command.
pub struct Timings {
    start: Instant,
    last: Instant,
    on: bool,
}

impl Timings {
    /// Starts timing; prints only when `ORCH_TIMINGS` is set to a non-empty value.
    pub fn start() -> Timings {
        let now = Instant::now();
        let on = std::env::var_os("ORCH_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0");
        Timings {
            start: now,
            last: now,
            on,
        }
    }

    /// Ends the stage called `label`.
    pub fn mark(&mut self, label: &str) {
        if self.on {
            let now = Instant::now();
            crate::say!(
                "orch timings: {label:<10} {:>8.2} ms  (total {:.2} ms)",
                (now - self.last).as_secs_f64() * 1e3,
                (now - self.start).as_secs_f64() * 1e3
            );
            self.last = now;
        }
    }
}

impl Drop for Timings {
    /// The CPU time orch itself used (every thread, not the commands it ran): the cost
    /// that is orch's own in a build, which wall time on a busy machine hides.
    fn drop(&mut self) {
        if !self.on {
            return;
        }
        // SAFETY: getrusage fills the struct it is given; zeroed is a valid value of it.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a rusage, for the duration of the call.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } == 0 {
            let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
            crate::say!(
                "orch timings: own cpu    {:>8.2} ms  (user {:.2} ms, system {:.2} ms)",
                ms(u.ru_utime) + ms(u.ru_stime),
                ms(u.ru_utime),
                ms(u.ru_stime)
            );
        }
    }
}
