//! The debouncer: turns a burst of file-system events into one rebuild.
//!
//! A pure state machine over instants (no clock, no files), so it is tested directly.
//! The window opens at the first event and closes once `quiet` has passed without an
//! event, or `MAX_FACTOR × quiet` after it opened, whichever comes first, so a stream of
//! events that never pauses (a long copy, a log written into an input directory) still
//! rebuilds now and then instead of never.

use std::time::{Duration, Instant};

/// The longest a window stays open, in multiples of the quiet period.
pub const MAX_FACTOR: u32 = 10;

/// Collects event times into windows.
#[derive(Clone, Debug)]
pub struct Debouncer {
    quiet: Duration,
    max: Duration,
    /// When the open window opened, and its latest event.
    window: Option<(Instant, Instant)>,
}

impl Debouncer {
    /// A debouncer that waits for `quiet` without events.
    pub fn new(quiet: Duration) -> Debouncer {
        Debouncer {
            quiet,
            max: quiet.saturating_mul(MAX_FACTOR),
            window: None,
        }
    }

    /// Records an event at `now`, opening a window if none is open.
    pub fn event(&mut self, now: Instant) {
        self.window = Some(match self.window {
            Some((first, last)) => (first, last.max(now)),
            None => (now, now),
        });
    }

    /// Whether a window is open (events are waiting).
    pub fn is_open(&self) -> bool {
        self.window.is_some()
    }

    /// When the open window closes, if no further event arrives.
    pub fn deadline(&self) -> Option<Instant> {
        self.window
            .map(|(first, last)| (last + self.quiet).min(first + self.max))
    }

    /// Whether the open window has closed by `now` (false when none is open).
    pub fn is_due(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| d <= now)
    }

    /// Closes the window: its events are being handled.
    pub fn reset(&mut self) {
        self.window = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_event_is_due_after_the_quiet_period() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(200 * MS);
        assert!(!d.is_open());
        assert!(!d.is_due(t0 + 10_000 * MS));
        d.event(t0);
        assert!(d.is_open());
        assert_eq!(d.deadline(), Some(t0 + 200 * MS));
        assert!(!d.is_due(t0 + 199 * MS));
        assert!(d.is_due(t0 + 200 * MS));
        d.reset();
        assert!(!d.is_open());
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn a_burst_is_one_window() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(200 * MS);
        // 50 saves, 10 ms apart: each pushes the deadline on.
        for i in 0..50 {
            let now = t0 + i * 10 * MS;
            d.event(now);
            assert!(!d.is_due(now + 199 * MS));
        }
        let last = t0 + 490 * MS;
        assert_eq!(d.deadline(), Some(last + 200 * MS));
        assert!(d.is_due(last + 200 * MS));
    }

    #[test]
    fn a_stream_without_pause_is_cut_at_the_maximum() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(100 * MS);
        let mut now = t0;
        while !d.is_due(now) {
            d.event(now);
            now += 50 * MS;
            assert!(now <= t0 + 100 * MS * MAX_FACTOR + 50 * MS, "never due");
        }
        assert_eq!(d.deadline(), Some(t0 + 100 * MS * MAX_FACTOR));
        // The next window starts afresh.
        d.reset();
        d.event(now);
        assert_eq!(d.deadline(), Some(now + 100 * MS));
    }

    #[test]
    fn events_out_of_order_do_not_shorten_the_window() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(100 * MS);
        d.event(t0 + 50 * MS);
        d.event(t0);
        assert_eq!(d.deadline(), Some(t0 + 150 * MS));
    }

    #[test]
    fn zero_debounce_is_due_at_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::ZERO);
        d.event(t0);
        assert!(d.is_due(t0));
    }
}
