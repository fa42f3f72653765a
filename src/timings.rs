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
