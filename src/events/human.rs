//! The plain display for people and CI logs (pipes, `CI`, `TERM=dumb`, and stderr with
//! `--json`), driven by events and a clock:
//!
//! - one line per finished instance, counted against the instances to run, a total
//!   fixed when the build starts: `[12/40] translate[lang=fr] ok 1.2s (14 shards)`;
//! - one line per finished shard, without a counter (it finishes no instance) but with
//!   its instance's shard progress: `        translate[lang=fr]#3 (route-7) ok 1.2s
//!   (4/14 shards)`;
//! - for an instance running long, `        render started 5.0s ago`, then `render still
//!   running (1m05s)` every minute ([`Heartbeat`]);
//! - a failure as one block: its FAILED line, the command that ran (`$ …`) and the end of
//!   its log; blocked instances with the failure at the root of their chain;
//! - a summary line whose counts add up to the selection.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::color;
use super::shard_name::label;
use super::track::{Track, plural};
use super::{BlockReason, Event, EventKind, FailureKind, Sink};

/// How much the display says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Failures and their logs only.
    Quiet,
    /// One line per instance that ran, and a summary.
    Normal,
    /// Also skipped instances, reasons and commands.
    Verbose,
}

/// Longest log printed in full; longer logs show their tail.
const MAX_LOG_LINES: usize = 400;

/// When the plain display says that a long command is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// A command running this long gets a `started … ago` line.
    pub after: Duration,
    /// Then a `still running` line this often.
    pub every: Duration,
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat {
            after: Duration::from_secs(5),
            every: Duration::from_secs(60),
        }
    }
}

/// The variable that sets [`Heartbeat::every`], in seconds.
pub const HEARTBEAT_VAR: &str = "ORCH_PROGRESS_INTERVAL";

impl Heartbeat {
    /// The default, or `ORCH_PROGRESS_INTERVAL=SECONDS` (decimals allowed): a line every
    /// that many seconds, the first after it or 5 s, whichever comes first.
    pub fn from_env() -> Heartbeat {
        let Some(value) = std::env::var_os(HEARTBEAT_VAR) else {
            return Heartbeat::default();
        };
        match Heartbeat::parse(&value.to_string_lossy()) {
            Some(h) => h,
            None => {
                crate::say!(
                    "warning: {HEARTBEAT_VAR}={} is not a number of seconds (at least 0.05); using 60",
                    value.to_string_lossy()
                );
                Heartbeat::default()
            }
        }
    }

    fn parse(text: &str) -> Option<Heartbeat> {
        let secs: f64 = text.trim().parse().ok()?;
        if !secs.is_finite() || !(0.05..=1e7).contains(&secs) {
            return None;
        }
        let every = Duration::from_secs_f64(secs);
        Some(Heartbeat {
            after: every.min(Heartbeat::default().after),
            every,
        })
    }

    /// How often the clock is looked at: often enough that no line is late by much.
    fn tick(self) -> Duration {
        (self.after.min(self.every) / 5).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }
}

/// Plain-text display. Besides the lines its events print, a clock prints a line for an
/// instance that has run for [`Heartbeat::after`], then one every [`Heartbeat::every`].
pub struct Human<W: Write + Send + 'static> {
    state: Arc<Mutex<Plain<W>>>,
    /// How often the clock looks, unless quiet; the clock starts with the first command,
    /// so a build with nothing to run starts no thread.
    tick: Option<Duration>,
    ticker: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

/// Everything behind the lock.
struct Plain<W: Write> {
    out: W,
    root: PathBuf,
    verbosity: Verbosity,
    color: bool,
    track: Track,
    /// Running instances (not shards): when they started, and when they are next due a
    /// line.
    running: BTreeMap<String, (Instant, Instant)>,
    heartbeat: Heartbeat,
}

impl<W: Write + Send + 'static> Human<W> {
    /// A display writing to `out`; logs are read relative to `root`. `color` colours
    /// the words ok, FAILED and blocked.
    pub fn new(out: W, root: PathBuf, verbosity: Verbosity, color: bool) -> Human<W> {
        Human::with_heartbeat(out, root, verbosity, color, Heartbeat::from_env())
    }

    /// [`Human::new`] with the still-running lines at `heartbeat`.
    pub fn with_heartbeat(
        out: W,
        root: PathBuf,
        verbosity: Verbosity,
        color: bool,
        heartbeat: Heartbeat,
    ) -> Human<W> {
        let state = Arc::new(Mutex::new(Plain {
            out,
            root,
            verbosity,
            color,
            track: Track::default(),
            running: BTreeMap::new(),
            heartbeat,
        }));
        let tick = (verbosity >= Verbosity::Normal).then(|| heartbeat.tick());
        Human {
            state,
            tick,
            ticker: None,
        }
    }
}

/// The lock, even after a panic elsewhere: the display is never worth a second panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One thread looks at the clock for every running instance.
fn spawn_clock<W: Write + Send + 'static>(
    state: Arc<Mutex<Plain<W>>>,
    tick: Duration,
) -> Option<(mpsc::Sender<()>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("orch-plain-clock".to_owned())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(tick) {
                lock(&state).beat(Instant::now());
            }
        })
        .ok()?;
    Some((tx, handle))
}

impl<W: Write + Send + 'static> Drop for Human<W> {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.ticker.take() {
            drop(stop);
            let _ = handle.join();
        }
        let _ = lock(&self.state).out.flush();
    }
}

impl<W: Write> Plain<W> {
    /// Lines for instances that have run long: `      render started 5.0s ago`, then
    /// `      render still running (1m05s, 4/14 shards)`.
    fn beat(&mut self, now: Instant) {
        let indent = self.track.indent();
        let mut lines = String::new();
        for (name, (since, due)) in &mut self.running {
            if now < *due {
                continue;
            }
            let ran = duration(now.duration_since(*since).as_millis() as u64);
            let first = *due == *since + self.heartbeat.after;
            match (first, self.track.shard_progress(name)) {
                (true, _) => lines.push_str(&format!("{indent} {name} started {ran} ago\n")),
                (false, Some(shards)) => lines.push_str(&format!(
                    "{indent} {name} still running ({ran}, {shards})\n"
                )),
                (false, None) => {
                    lines.push_str(&format!("{indent} {name} still running ({ran})\n"))
                }
            }
            while *due <= now {
                *due += self.heartbeat.every;
            }
        }
        if !lines.is_empty() {
            let _ = self.out.write_all(lines.as_bytes());
            let _ = self.out.flush();
        }
    }

    fn paint(&self, word: &str, how: color::Paint) -> String {
        color::paint(self.color, how, word)
    }
}

/// `exit 3`, `signal 9`, `timeout`, … as the plain display writes them.
pub fn failure_what(kind: FailureKind, exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (kind, exit_code, signal) {
        (FailureKind::Exit, Some(code), _) => format!("exit {code}"),
        (FailureKind::Signal, _, Some(sig)) => format!("signal {sig}"),
        (FailureKind::Timeout, _, _) => "timeout".to_owned(),
        (FailureKind::MissingOutput, _, _) => "missing output".to_owned(),
        (FailureKind::Schema, _, _) => "schema".to_owned(),
        (FailureKind::InvalidInput, _, _) => "invalid input".to_owned(),
        (FailureKind::Depfile, _, _) => "depfile".to_owned(),
        (FailureKind::Scheduler, _, _) => "scheduler".to_owned(),
        _ => "error".to_owned(),
    }
}

/// A failed instance's log as one block, as the plain display prints it: at most its last
/// 400 lines and 64 KiB, decoded lossily (a command may print anything), so printing it
/// costs the same whatever the command wrote.
pub fn log_block(root: &std::path::Path, name: &str, log: &str) -> String {
    let mut out = format!("──── output of {name} ({log}) ────\n");
    match log_tail(&root.join(log)) {
        Ok(tail) => {
            if tail.skipped_bytes > 0 {
                out.push_str(&format!(
                    "… earlier output ({}) is in the log file\n",
                    size(tail.skipped_bytes)
                ));
            } else if tail.skipped_lines > 0 {
                out.push_str(&format!(
                    "… {} earlier lines in the log file\n",
                    tail.skipped_lines
                ));
            }
            for l in &tail.lines {
                out.push_str(l);
                out.push('\n');
            }
            if tail.lines.is_empty() && tail.skipped_bytes == 0 {
                out.push_str("(no output)\n");
            }
        }
        Err(e) => out.push_str(&format!("(cannot read the log: {e})\n")),
    }
    out.push_str("────\n");
    out
}

/// Most bytes of a log read for its block.
const MAX_LOG_BYTES: u64 = 64 * 1024;

/// The end of a log file.
struct LogTail {
    /// Its last lines, decoded lossily.
    lines: Vec<String>,
    /// Bytes before the part read (0 when the whole file was read).
    skipped_bytes: u64,
    /// Lines of the part read that were left out.
    skipped_lines: usize,
}

/// Reads the end of the log at `path`: at most [`MAX_LOG_BYTES`], then at most
/// [`MAX_LOG_LINES`] of those lines.
fn log_tail(path: &std::path::Path) -> std::io::Result<LogTail> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        // No log: the command never ran (it could not start).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogTail {
                lines: Vec::new(),
                skipped_bytes: 0,
                skipped_lines: 0,
            });
        }
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let mut start = len.saturating_sub(MAX_LOG_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    f.take(MAX_LOG_BYTES).read_to_end(&mut bytes)?;
    // A read that starts mid-file usually starts mid-line: that partial line goes,
    // unless it is all there is (one huge line).
    if start > 0
        && let Some(nl) = bytes.iter().position(|b| *b == b'\n')
        && nl + 1 < bytes.len()
    {
        bytes.drain(..=nl);
        start += nl as u64 + 1;
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(MAX_LOG_LINES);
    Ok(LogTail {
        lines: lines[skip..].iter().map(|l| (*l).to_owned()).collect(),
        skipped_bytes: start,
        skipped_lines: skip,
    })
}

/// The warning for a command whose inputs changed while it ran, e.g. `translate: input
/// raw/a.txt changed while the command ran; not recorded, it will run again`.
pub fn input_changed_line(name: &str, paths: &[String]) -> String {
    let what = if paths.len() == 1 { "input" } else { "inputs" };
    format!(
        "{name}: {what} {} changed while the command ran; not recorded, it will run again",
        paths.join(", ")
    )
}

/// Most failed shards of one instance the closing line names.
pub const MAX_SHARDS_LISTED: usize = 10;

/// `compile` of `compile#3`: the instance a shard belongs to.
pub fn shard_parent(name: &str) -> Option<&str> {
    name.rsplit_once('#').map(|(parent, _)| parent)
}

/// Failed shards by instance: index → label (`compile#3 (src/mem.c)`), so the closing
/// line lists them by index whatever order they failed in.
pub type FailedShards = BTreeMap<String, BTreeMap<usize, String>>;

/// The failed instances as the closing line names them: a sharded instance by its failed
/// shards (`compile#3 (src/mem.c)`), the first [`MAX_SHARDS_LISTED`] then a count.
pub fn failed_list(failed: &[String], shards: &FailedShards) -> String {
    let mut names = Vec::with_capacity(failed.len());
    for f in failed {
        match shards.get(f) {
            Some(labels) if !labels.is_empty() => {
                names.extend(labels.values().take(MAX_SHARDS_LISTED).cloned());
                if labels.len() > MAX_SHARDS_LISTED {
                    let rest = labels.len() - MAX_SHARDS_LISTED;
                    names.push(format!("and {rest} more {} of {f}", plural(rest, "shard")));
                }
            }
            _ => names.push(f.clone()),
        }
    }
    names.join(", ")
}

/// What `-v` says of the instances up to date before the build began: one line, not
/// one per instance (`orch plan` lists them).
pub fn unlisted_line(n: usize) -> String {
    format!(
        "{n} instance{} up to date before the build (`orch plan` lists them)",
        if n == 1 { "" } else { "s" }
    )
}

/// The closing line of a run without failures.
pub fn completed_line(counts: &super::Counts, duration_ms: u64) -> String {
    if counts.succeeded == 0 && counts.cached == 0 {
        return format!("orch: nothing to do ({} up to date)", counts.up_to_date);
    }
    let cached = if counts.cached > 0 {
        format!("{} restored from cache, ", counts.cached)
    } else {
        String::new()
    };
    format!(
        "orch: {} built, {cached}{} up to date in {}",
        counts.succeeded,
        counts.up_to_date,
        duration(duration_ms)
    )
}

/// `512 B`, `12.3 KiB`, `4.0 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `850ms`, `1.2s`, `2m05s`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// The closing line of a run with failures, blocked instances or an interruption:
/// `orch: build failed: 1 failed, 2 blocked, 3 built, 1 restored from cache, 4 up to date
/// in 1.2s`, every selected instance in exactly one of the counts.
pub fn failed_line(counts: &super::Counts, interrupted: bool, duration_ms: u64) -> String {
    let head = if interrupted {
        "interrupted"
    } else {
        "build failed"
    };
    let cached = if counts.cached > 0 {
        format!("{} restored from cache, ", counts.cached)
    } else {
        String::new()
    };
    format!(
        "orch: {head}: {} failed, {} blocked, {} built, {cached}{} up to date in {}",
        counts.failed,
        counts.blocked,
        counts.succeeded,
        counts.up_to_date,
        duration(duration_ms)
    )
}

/// `1 shard (files), 1 to run, 0 reused`, as `-v` describes a split.
pub fn shard_plan_line(
    name: &str,
    strategy: &str,
    shards: usize,
    stale: usize,
    reused: usize,
) -> String {
    format!(
        "{name}: {shards} {} ({strategy}), {stale} to run, {reused} reused",
        plural(shards, "shard")
    )
}

impl<W: Write + Send + 'static> Sink for Human<W> {
    fn event(&mut self, e: &Event) {
        if let (EventKind::InstanceStarted { .. }, None, Some(tick)) =
            (&e.kind, &self.ticker, self.tick)
        {
            self.ticker = spawn_clock(Arc::clone(&self.state), tick);
            self.tick = None;
        }
        lock(&self.state).event(e);
    }

    fn flush(&mut self) {
        let _ = lock(&self.state).out.flush();
    }
}

impl<W: Write> Plain<W> {
    fn event(&mut self, e: &Event) {
        let name = e.instance.as_deref().unwrap_or("");
        let normal = self.verbosity >= Verbosity::Normal;
        let verbose = self.verbosity >= Verbosity::Verbose;
        let mut text = String::new();
        match &e.kind {
            EventKind::PlanReady {
                stale,
                up_to_date_unlisted,
                ..
            } => {
                self.track.plan(*stale);
                if verbose && *up_to_date_unlisted > 0 {
                    text = format!("{}\n", unlisted_line(*up_to_date_unlisted));
                }
            }
            EventKind::ShardPlan {
                strategy,
                shards,
                stale,
                reused,
                ..
            } => {
                self.track.shard_plan(name, *shards, *stale);
                if verbose {
                    text = format!(
                        "{}\n",
                        shard_plan_line(name, strategy, *shards, *stale, *reused)
                    );
                }
            }
            EventKind::InstanceInvalidated { details, .. } if verbose => {
                let why: Vec<String> = details.iter().map(ToString::to_string).collect();
                text = format!("{name}: stale: {}\n", why.join(", "));
            }
            EventKind::InstanceStarted {
                command,
                shard,
                executor,
                attempt,
                ..
            } => {
                // -v streams what runs on this machine; a cluster's job output is in its log.
                self.track
                    .started(name, shard.as_ref(), command, verbose && executor.is_none());
                if shard.is_none() && (*attempt == 1 || !self.running.contains_key(name)) {
                    let now = Instant::now();
                    self.running
                        .insert(name.to_owned(), (now, now + self.heartbeat.after));
                }
                if verbose {
                    text = format!("{}: $ {command}\n", label(name, shard.as_ref()));
                }
            }
            EventKind::InstanceSkipped {
                early_cutoff: true, ..
            } => {
                let c = self.track.counter();
                if normal {
                    text = format!("{c} {name} up to date (upstream outputs unchanged)\n");
                }
            }
            EventKind::InstanceSkipped { .. } if verbose => {
                text = format!("{name} up to date\n");
            }
            EventKind::InstanceCompleted {
                duration_ms, shard, ..
            } => {
                let ok = self.paint("ok", color::Paint::Ok);
                let took = duration(*duration_ms);
                if shard.is_some() {
                    let progress = self.track.shard_finished(name);
                    if normal {
                        let shown = label(name, shard.as_ref());
                        let indent = self.track.indent();
                        text = format!("{indent} {shown} {ok} {took}{progress}\n");
                    }
                } else {
                    self.running.remove(name);
                    let c = self.track.counter();
                    if normal {
                        let shards = self.track.shards_suffix(name);
                        text = format!("{c} {name} {ok} {took}{shards}\n");
                    }
                }
            }
            EventKind::InstanceFailed {
                kind,
                exit_code,
                signal,
                message,
                log,
                duration_ms,
                shard,
            } => {
                let what = failure_what(*kind, *exit_code, *signal);
                let shown = label(name, shard.as_ref());
                self.track.failed(name, shard.as_ref(), &shown);
                let failed = self.paint("FAILED", color::Paint::Failed);
                let took = duration(*duration_ms);
                text = if shard.is_some() {
                    let progress = self.track.shard_finished(name);
                    let indent = self.track.indent();
                    format!("{indent} {shown} {failed} ({what}) {took}{progress}: {message}\n")
                } else {
                    self.running.remove(name);
                    let c = self.track.counter();
                    format!("{c} {shown} {failed} ({what}) {took}: {message}\n")
                };
                text.push_str(&self.track.failure_block(&self.root, name, &shown, log));
            }
            EventKind::InstanceBlocked {
                reason,
                blocked_by,
                shard,
            } => {
                if shard.is_none() {
                    self.running.remove(name);
                }
                let why = self
                    .track
                    .blocked(name, *reason, blocked_by, shard.as_ref());
                if normal || *reason != BlockReason::StoppedAfterFailure {
                    let shown = label(name, shard.as_ref());
                    let why = self.paint(&why, color::Paint::Blocked);
                    text = format!("[-] {shown} {why}\n");
                }
            }
            EventKind::InstanceRetrying {
                attempt,
                attempts,
                delay_ms,
                message,
                shard,
                ..
            } => {
                let shown = label(name, shard.as_ref());
                text = format!(
                    "[~] {shown} attempt {attempt} of {attempts} failed: {message}; retrying in {}\n",
                    duration(*delay_ms)
                );
            }
            EventKind::InputChangedDuringRun { paths, shard } => {
                let shown = label(name, shard.as_ref());
                let warning = self.paint("warning:", color::Paint::Warning);
                text = format!("{warning} {}\n", input_changed_line(&shown, paths));
            }
            EventKind::SoftDependencyUnmet {
                upstream,
                upstream_status,
            } => {
                let warning = self.paint("warning:", color::Paint::Warning);
                text = format!(
                    "{warning} {name} runs without its soft dependency `{upstream}` ({upstream_status})\n"
                );
            }
            EventKind::InstanceCached { source, bytes, .. } => {
                self.running.remove(name);
                let c = self.track.counter();
                if normal {
                    text = format!(
                        "{c} {name} restored from the {source} cache ({})\n",
                        size(*bytes)
                    );
                }
            }
            EventKind::RunCompleted {
                counts,
                duration_ms,
                ..
            } => {
                self.running.clear();
                if normal {
                    text = format!("{}\n", completed_line(counts, *duration_ms));
                }
            }
            EventKind::RunFailed {
                counts,
                failed,
                interrupted,
                duration_ms,
                ..
            } => {
                self.running.clear();
                text = format!("{}\n", failed_line(counts, *interrupted, *duration_ms));
                if !failed.is_empty() {
                    text.push_str(&format!(
                        "orch: failed: {}\n",
                        failed_list(failed, &self.track.failed_shards)
                    ));
                }
            }
            _ => {}
        }
        if !text.is_empty() {
            let _ = self.out.write_all(text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_the_scheduler_ended_says_so() {
        assert_eq!(
            failure_what(FailureKind::Scheduler, None, None),
            "scheduler"
        );
        assert_eq!(failure_what(FailureKind::Exit, Some(3), None), "exit 3");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(15), "15ms");
        assert_eq!(duration(1234), "1.2s");
        assert_eq!(duration(125_000), "2m05s");
    }

    #[test]
    fn the_closing_line_names_ten_failed_shards_then_counts() {
        // Failed in reverse order: listed by index all the same.
        let labels: BTreeMap<usize, String> = (0..12)
            .rev()
            .map(|n| (n, format!("c#{n} (src/{n}.c)")))
            .collect();
        let shards = BTreeMap::from([("c".to_owned(), labels)]);
        let failed = ["a".to_owned(), "c".to_owned()];
        let line = failed_list(&failed, &shards);
        assert!(
            line.starts_with("a, c#0 (src/0.c), c#1 (src/1.c), "),
            "{line}"
        );
        assert!(
            line.ends_with("c#9 (src/9.c), and 2 more shards of c"),
            "{line}"
        );
        assert!(!line.contains("c#10"), "{line}");
        let one_more: BTreeMap<usize, String> = (0..11).map(|n| (n, format!("c#{n}"))).collect();
        let line = failed_list(
            &["c".to_owned()],
            &BTreeMap::from([("c".to_owned(), one_more)]),
        );
        assert!(line.ends_with("c#9, and 1 more shard of c"), "{line}");
        assert_eq!(shard_parent("t[lang=fr]#3"), Some("t[lang=fr]"));
        assert_eq!(shard_parent("t[lang=fr]"), None);
    }

    #[test]
    fn the_progress_interval_sets_both_thresholds() {
        let h = |s| Heartbeat::parse(s);
        assert_eq!(
            h("0.1"),
            Some(Heartbeat {
                after: Duration::from_millis(100),
                every: Duration::from_millis(100)
            })
        );
        assert_eq!(
            h(" 120 "),
            Some(Heartbeat {
                after: Duration::from_secs(5),
                every: Duration::from_secs(120)
            })
        );
        for bad in ["", "soon", "0", "-1", "NaN", "inf"] {
            assert_eq!(h(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_long_command_gets_a_start_line_then_still_running_lines() {
        let heartbeat = Heartbeat::default();
        let mut p = Plain {
            out: Vec::new(),
            root: PathBuf::from("."),
            verbosity: Verbosity::Normal,
            color: false,
            track: Track::default(),
            running: BTreeMap::new(),
            heartbeat,
        };
        p.track.plan(12);
        let t0 = Instant::now();
        p.running
            .insert("render".to_owned(), (t0, t0 + heartbeat.after));
        p.beat(t0 + Duration::from_secs(4));
        assert!(p.out.is_empty());
        p.beat(t0 + Duration::from_secs(5));
        p.beat(t0 + Duration::from_secs(6));
        p.beat(t0 + Duration::from_secs(65));
        p.beat(t0 + Duration::from_secs(125));
        assert_eq!(
            String::from_utf8_lossy(&p.out),
            "        render started 5.0s ago\n\
             \x20       render still running (1m05s)\n\
             \x20       render still running (2m05s)\n"
        );
    }

    fn block_of(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("x.log"), bytes).expect("write the log");
        log_block(dir.path(), "x", "x.log")
    }

    #[test]
    fn log_blocks_are_lossy_and_bounded() {
        assert!(block_of(b"bad \xff byte\n").contains("\nbad \u{FFFD} byte\n────\n"));
        assert!(block_of(b"").contains("(no output)"));

        let mut big = vec![b'x'; 3 * MAX_LOG_BYTES as usize];
        big.extend_from_slice(b"\nend\n");
        let block = block_of(&big);
        assert!(block.ends_with("\nend\n────\n"), "{block}");
        assert!(block.contains("… earlier output (192.0 KiB) is in the log file\n"));
        assert!(block.len() < 1024, "the cut partial line is left out");

        // One huge line: its end is shown, no more than the window.
        let block = block_of(&vec![b'y'; 3 * MAX_LOG_BYTES as usize]);
        assert!(block.len() < MAX_LOG_BYTES as usize + 1024);
        assert!(block.contains("yyy\n────\n"));
    }
}
