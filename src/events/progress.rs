//! The live display of `orch build` on a terminal: an overall bar (`[k/N]` instances
//! finished of those to run, N fixed when the build starts; elapsed time; how many run
//! and how many were up to date), one line per running instance or shard below it (a
//! sharded instance's line counts its shards, `translate[lang=fr] 4/14 shards`), and
//! failures, blocked instances and warnings printed above the bars as they happen, in
//! the same words as the plain display (`human.rs`). At the end of the run, and as soon
//! as the build is interrupted, the bars are cleared; the plain display's summary line
//! follows.
//!
//! [`is_live`] says when to use it; everywhere else (pipes, CI, `TERM=dumb`) the plain
//! display stays. Lines are printed with real newlines while the bars are erased (never
//! padded to the terminal width), so what scrolls up is exactly the plain display's text.
//! Bar lines never wrap: a long name loses the middle of its phase name, whatever is
//! still too long is cut at the terminal's edge, and a narrow terminal gets no bar
//! graphic.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::color::{self, Paint};
use super::human::{
    Verbosity, completed_line, duration, failed_line, failed_list, failure_what,
    input_changed_line, shard_plan_line, unlisted_line,
};
use super::shard_name::label;
use super::track::Track;
use super::{BlockReason, Event, EventKind, Sink};

/// How often the spinners and elapsed times move.
const TICK: Duration = Duration::from_millis(100);

/// Terminals narrower than this get the overall counts without a bar graphic.
const MIN_BAR_COLUMNS: u16 = 60;

/// Whether `orch build` should use the live display: stdout is a terminal, `TERM` is set
/// and not `dumb`, and `CI` is not set (set to empty, `0` or `false` counts as not set).
pub fn is_live(stdout_is_terminal: bool) -> bool {
    let term_ok = std::env::var_os("TERM").is_some_and(|t| !t.is_empty() && t != "dumb");
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false");
    stdout_is_terminal && term_ok && !ci
}

/// The live display; a [`Sink`] of build events.
pub struct Progress {
    screen: Arc<Mutex<Screen>>,
    ticker: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

/// Prints whole lines above the bars, from any thread; cheap to clone. After the run has
/// ended (or with `-q`) it prints plainly.
#[derive(Clone)]
pub struct Printer(Arc<Mutex<Screen>>);

impl Printer {
    /// Prints `text` (one or more lines; a final newline is added when missing).
    pub fn print(&self, text: &str) {
        lock(&self.0).print(text);
    }
}

impl Progress {
    /// The live display on stdout; logs are read relative to `root`. With `color` false
    /// the bars and lines carry no ANSI colors (cursor movement only). With
    /// [`Verbosity::Quiet`] no bars are drawn: only failures, blocked instances, warnings
    /// and the failure summary are printed.
    pub fn new(root: PathBuf, verbosity: Verbosity, color: bool) -> Progress {
        let target = if verbosity == Verbosity::Quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stdout()
        };
        let width = console::Term::stdout().size_checked().map(|(_, w)| w);
        Progress::with_target(
            root,
            verbosity,
            color,
            target,
            Box::new(io::stdout()),
            width,
        )
    }

    /// A display drawing its bars on `target` and printing lines to `out` (tests, embedding).
    /// `out` must be the stream `target` draws on, or lines and bars will not line up.
    /// `width` is the terminal's, in columns, if known.
    pub fn with_target(
        root: PathBuf,
        verbosity: Verbosity,
        color: bool,
        target: ProgressDrawTarget,
        out: Box<dyn Write + Send>,
        width: Option<u16>,
    ) -> Progress {
        let bars = verbosity > Verbosity::Quiet && !target.is_hidden();
        let screen = Arc::new(Mutex::new(Screen {
            root,
            verbosity,
            color,
            width: width.unwrap_or(80),
            out,
            multi: MultiProgress::with_draw_target(target),
            bars,
            overall: None,
            running: BTreeMap::new(),
            track: Track::default(),
            up_to_date: 0,
            ended: false,
        }));
        let ticker = if bars {
            spawn_ticker(Arc::clone(&screen))
        } else {
            None
        };
        Progress { screen, ticker }
    }

    /// Prints lines above the bars from other threads (`-v` streaming of phase output).
    pub fn printer(&self) -> Printer {
        Printer(Arc::clone(&self.screen))
    }

    /// Instances finished and to run, as the overall bar shows them.
    pub fn position(&self) -> (usize, usize) {
        lock(&self.screen).track.position()
    }

    /// Instances and shards shown as running now.
    pub fn running(&self) -> Vec<String> {
        lock(&self.screen).running.keys().cloned().collect()
    }
}

impl Sink for Progress {
    fn event(&mut self, event: &Event) {
        lock(&self.screen).event(event);
    }

    fn flush(&mut self) {
        let _ = lock(&self.screen).out.flush();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.ticker.take() {
            drop(stop);
            let _ = handle.join();
        }
        // A build that stopped without a final event must not leave bars on the screen.
        let mut s = lock(&self.screen);
        s.end();
        let _ = s.out.flush();
    }
}

/// The lock, even after a panic elsewhere: the display is never worth a second panic.
fn lock(m: &Mutex<Screen>) -> MutexGuard<'_, Screen> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One thread moves every spinner and elapsed time (rather than one thread per bar), and
/// clears the bars once the build is interrupted, before the lines about what stopped.
fn spawn_ticker(screen: Arc<Mutex<Screen>>) -> Option<(mpsc::Sender<()>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("orch-progress".to_owned())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(TICK) {
                let mut s = lock(&screen);
                if crate::exec::signal::interrupted() {
                    s.end();
                }
                if s.ended {
                    break;
                }
                s.tick();
            }
        })
        .ok()?;
    Some((tx, handle))
}

/// A running instance or shard.
struct Running {
    bar: ProgressBar,
    /// Its name as shown.
    shown: String,
}

/// Everything behind the lock: counters, bars and the output stream.
struct Screen {
    root: PathBuf,
    verbosity: Verbosity,
    color: bool,
    /// The terminal's width when the display began, in columns.
    width: u16,
    out: Box<dyn Write + Send>,
    multi: MultiProgress,
    /// Bars may be drawn (not quiet, a visible target, the run not ended).
    bars: bool,
    overall: Option<ProgressBar>,
    running: BTreeMap<String, Running>,
    track: Track,
    up_to_date: usize,
    ended: bool,
}

impl Screen {
    /// Prints text above the bars: erase them, write, draw them again below.
    fn print(&mut self, text: &str) {
        let live = self.overall.is_some();
        if live {
            let _ = self.multi.clear();
        }
        let _ = self.out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = self.out.write_all(b"\n");
        }
        let _ = self.out.flush();
        if let Some(o) = &self.overall {
            o.force_draw();
        }
    }

    fn tick(&self) {
        if let Some(o) = &self.overall {
            o.tick();
        }
        for r in self.running.values() {
            r.bar.tick();
        }
    }

    fn paint(&self, how: Paint, text: &str) -> String {
        color::paint(self.color, how, text)
    }

    fn ensure_overall(&mut self) {
        if !self.bars || self.overall.is_some() {
            return;
        }
        let (done, total) = self.track.position();
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden())
            .with_style(overall_style(self.color, self.width))
            .with_position(done as u64)
            .with_message(self.summary());
        self.overall = Some(self.multi.add(bar));
    }

    fn update_overall(&self) {
        if let Some(o) = &self.overall {
            let (done, total) = self.track.position();
            o.set_message(self.summary());
            o.update(|s| {
                s.set_len(total as u64);
                s.set_pos(done as u64);
            });
        }
    }

    /// `3 running · 12 up to date · 1 failed`
    fn summary(&self) -> String {
        // A sharded instance runs through its shards, which have lines of their own.
        let running = self
            .running
            .keys()
            .filter(|n| self.track.shard_progress(n).is_none())
            .count();
        let mut parts = vec![format!("{running} running")];
        if self.up_to_date > 0 {
            parts.push(format!("{} up to date", self.up_to_date));
        }
        let failed = self.track.failed_count();
        if failed > 0 {
            parts.push(self.paint(Paint::Failed, &format!("{failed} failed")));
        }
        parts.join(" · ")
    }

    /// The text of a running line after its elapsed time: the name, then a note.
    fn line_message(&self, shown: &str, note: &str) -> String {
        if note.is_empty() {
            return shown.to_owned();
        }
        let note = if self.color {
            format!("\x1b[2m{note}\x1b[0m")
        } else {
            note.to_owned()
        };
        format!("{shown} {note}")
    }

    fn set_note(&self, name: &str, note: &str) {
        if let Some(r) = self.running.get(name) {
            r.bar.set_message(self.line_message(&r.shown, note));
        }
    }

    fn start_line(&mut self, name: &str, shown: &str, attempt: u32) {
        if !self.bars {
            return;
        }
        self.ensure_overall();
        let note = if attempt > 1 {
            format!("(attempt {attempt})")
        } else {
            String::new()
        };
        if let Some(r) = self.running.get(name) {
            r.bar.reset_elapsed();
            self.set_note(name, &note);
            return;
        }
        // Room for the name beside the spinner and the elapsed time.
        let shown = fit(shown, usize::from(self.width).saturating_sub(12));
        let shown = shown.as_str();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
            .with_style(line_style(self.color))
            .with_message(self.line_message(shown, &note));
        let bar = self.multi.add(bar);
        bar.tick();
        self.running.insert(
            name.to_owned(),
            Running {
                bar,
                shown: shown.to_owned(),
            },
        );
    }

    /// Removes the line of a finished instance or shard.
    fn finish_line(&mut self, name: &str) {
        if let Some(r) = self.running.remove(name) {
            self.multi.remove(&r.bar);
        }
    }

    /// ` (4/14 shards)`: the progress of shard `name`'s instance, for its line.
    fn shard_progress_suffix(&self, name: &str) -> String {
        self.track
            .shard_progress(super::human::shard_parent(name).unwrap_or(name))
            .map(|p| format!(" ({p})"))
            .unwrap_or_default()
    }

    /// A shard finished: its instance's line counts it.
    fn shard_finished(&mut self, name: &str) {
        self.track.shard_finished(name);
        if let Some(parent) = super::human::shard_parent(name)
            && let Some(progress) = self.track.shard_progress(parent)
        {
            self.set_note(parent, &progress);
        }
    }

    /// Erases the bars for good; later lines are printed plainly.
    fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        if self.bars {
            let _ = self.multi.clear();
        }
        self.bars = false;
        self.multi.set_draw_target(ProgressDrawTarget::hidden());
        self.overall = None;
        self.running.clear();
    }

    fn event(&mut self, e: &Event) {
        // Whatever follows an interruption is printed below cleared bars, not among them.
        if crate::exec::signal::interrupted() {
            self.end();
        }
        let name = e.instance.as_deref().unwrap_or("");
        let normal = self.verbosity >= Verbosity::Normal;
        let verbose = self.verbosity >= Verbosity::Verbose;
        match &e.kind {
            EventKind::PlanReady {
                stale,
                up_to_date_unlisted,
                ..
            } => {
                self.track.plan(*stale);
                // Known up to date before the build: no event of their own follows.
                self.up_to_date += up_to_date_unlisted;
                if verbose && *up_to_date_unlisted > 0 {
                    self.print(&unlisted_line(*up_to_date_unlisted));
                }
                if *stale > 0 {
                    self.ensure_overall();
                }
                self.update_overall();
            }
            EventKind::ShardPlan {
                strategy,
                shards,
                stale,
                reused,
                ..
            } => {
                self.track.shard_plan(name, *shards, *stale);
                if let Some(progress) = self.track.shard_progress(name) {
                    self.set_note(name, &progress);
                }
                self.update_overall();
                if verbose {
                    self.print(&shard_plan_line(name, strategy, *shards, *stale, *reused));
                }
            }
            EventKind::InstanceInvalidated { details, .. } if verbose => {
                let why: Vec<String> = details.iter().map(ToString::to_string).collect();
                self.print(&format!("{name}: stale: {}", why.join(", ")));
            }
            EventKind::InstanceStarted {
                attempt,
                command,
                shard,
                executor,
                ..
            } => {
                let shown = label(name, shard.as_ref());
                // -v streams what runs on this machine; a cluster's job output is in its log.
                self.track
                    .started(name, shard.as_ref(), command, verbose && executor.is_none());
                if verbose {
                    self.print(&format!("{shown}: $ {command}"));
                }
                self.start_line(name, &shown, *attempt);
                self.update_overall();
            }
            EventKind::InstanceRetrying {
                attempt,
                attempts,
                delay_ms,
                message,
                shard,
                ..
            } => {
                let delay = duration(*delay_ms);
                let shown = label(name, shard.as_ref());
                self.set_note(
                    name,
                    &format!("retrying in {delay} (attempt {attempt} failed)"),
                );
                self.print(&format!(
                    "[~] {shown} attempt {attempt} of {attempts} failed: {message}; retrying in {delay}"
                ));
            }
            EventKind::InstanceSkipped { early_cutoff, .. } => {
                self.up_to_date += 1;
                let line = if *early_cutoff {
                    // Planned to run: it is finished work like any other.
                    let c = self.track.counter();
                    format!("{c} {name} up to date (upstream outputs unchanged)")
                } else {
                    format!("{name} up to date")
                };
                self.update_overall();
                if verbose {
                    self.print(&line);
                }
            }
            EventKind::InstanceCached { source, bytes, .. } => {
                let c = self.track.counter();
                self.finish_line(name);
                self.update_overall();
                if verbose {
                    self.print(&format!(
                        "{c} {name} restored from the {source} cache ({})",
                        super::human::size(*bytes)
                    ));
                }
            }
            EventKind::InstanceCompleted {
                duration_ms, shard, ..
            } => {
                let ok = self.paint(Paint::Ok, "ok");
                let took = duration(*duration_ms);
                self.finish_line(name);
                let line = if shard.is_some() {
                    self.shard_finished(name);
                    let indent = self.track.indent();
                    let progress = self.shard_progress_suffix(name);
                    format!(
                        "{indent} {} {ok} {took}{progress}",
                        label(name, shard.as_ref())
                    )
                } else {
                    let c = self.track.counter();
                    format!("{c} {name} {ok} {took}{}", self.track.shards_suffix(name))
                };
                self.update_overall();
                if verbose {
                    self.print(&line);
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
                self.finish_line(name);
                let shown = label(name, shard.as_ref());
                self.track.failed(name, shard.as_ref(), &shown);
                let what = failure_what(*kind, *exit_code, *signal);
                let failed = self.paint(Paint::Failed, "FAILED");
                let took = duration(*duration_ms);
                let mut text = if shard.is_some() {
                    self.shard_finished(name);
                    let indent = self.track.indent();
                    let progress = self.shard_progress_suffix(name);
                    format!("{indent} {shown} {failed} ({what}) {took}{progress}: {message}\n")
                } else {
                    let c = self.track.counter();
                    format!("{c} {shown} {failed} ({what}) {took}: {message}\n")
                };
                text.push_str(&self.track.failure_block(&self.root, name, &shown, log));
                self.update_overall();
                self.print(&text);
            }
            EventKind::InstanceBlocked {
                reason,
                blocked_by,
                shard,
            } => {
                // A sharded instance whose remaining shards never started, or a shard
                // stopped by an interruption (not finished, so its instance's count stays).
                self.finish_line(name);
                self.update_overall();
                let why = self
                    .track
                    .blocked(name, *reason, blocked_by, shard.as_ref());
                if normal || *reason != BlockReason::StoppedAfterFailure {
                    let shown = label(name, shard.as_ref());
                    self.print(&format!("[-] {shown} {}", self.paint(Paint::Blocked, &why)));
                }
            }
            EventKind::InputChangedDuringRun { paths, shard } => {
                let name = label(name, shard.as_ref());
                let warning = self.paint(Paint::Warning, "warning:");
                self.print(&format!("{warning} {}", input_changed_line(&name, paths)));
            }
            EventKind::SoftDependencyUnmet {
                upstream,
                upstream_status,
            } => {
                let warning = self.paint(Paint::Warning, "warning:");
                self.print(&format!(
                    "{warning} {name} runs without its soft dependency `{upstream}` ({upstream_status})"
                ));
            }
            EventKind::RunCompleted {
                counts,
                duration_ms,
                ..
            } => {
                self.end();
                if normal {
                    self.print(&completed_line(counts, *duration_ms));
                }
            }
            EventKind::RunFailed {
                counts,
                failed,
                interrupted,
                duration_ms,
                ..
            } => {
                self.end();
                let mut text = format!("{}\n", failed_line(counts, *interrupted, *duration_ms));
                if !failed.is_empty() {
                    text.push_str(&format!(
                        "orch: failed: {}\n",
                        failed_list(failed, &self.track.failed_shards)
                    ));
                }
                self.print(&text);
            }
            _ => {}
        }
    }
}

/// `name` in at most `room` characters: a long name loses the middle of its phase name
/// rather than its matrix values or shard key, which tell its instances apart
/// (`a_very_long_p…[lang=fr]#3`).
fn fit(name: &str, room: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= room || room < 8 {
        return name.to_owned();
    }
    let tail_start = name
        .find(['[', '#'])
        .map(|b| name[..b].chars().count())
        .filter(|&k| chars.len() - k <= room - 6)
        .unwrap_or(chars.len() - (room - 1) / 2);
    let head = room - 1 - (chars.len() - tail_start);
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[tail_start..]);
    out
}

/// Elapsed time that moves smoothly: `0.4s`, `12.3s`, `2m05s`.
fn elapsed_key(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let ms = state.elapsed().as_millis() as u64;
    let _ = if ms < 60_000 {
        write!(w, "{:.1}s", ms as f64 / 1000.0)
    } else {
        w.write_str(&duration(ms))
    };
}

/// `[3/12] [=======>          ] 4.2s · 3 running · 12 up to date`: the bar graphic grows
/// with the terminal (10 to 40 columns) and is left out below [`MIN_BAR_COLUMNS`]; the
/// counts are cut at the edge rather than wrapped.
fn overall_style(color: bool, width: u16) -> ProgressStyle {
    let bar = (width.saturating_sub(40) / 2).clamp(10, 40);
    let template = match (width >= MIN_BAR_COLUMNS, color) {
        (true, true) => {
            format!("[{{pos:.bold}}/{{len:.bold}}] [{{bar:{bar}.cyan/blue}}] {{t}} · {{wide_msg}}")
        }
        (true, false) => format!("[{{pos}}/{{len}}] [{{bar:{bar}}}] {{t}} · {{wide_msg}}"),
        (false, true) => "[{pos:.bold}/{len:.bold}] {t} · {wide_msg}".to_owned(),
        (false, false) => "[{pos}/{len}] {t} · {wide_msg}".to_owned(),
    };
    style(&template, "=> ").with_key("t", elapsed_key)
}

/// `  ⠙ 1.2s translate[lang=fr] 4/14 shards`: the name last, so a long one is cut at the
/// terminal's edge and never wraps.
fn line_style(color: bool) -> ProgressStyle {
    let template = if color {
        "  {spinner:.green} {t:.dim} {wide_msg}"
    } else {
        "  {spinner} {t} {wide_msg}"
    };
    style(template, "=> ").with_key("t", elapsed_key)
}

fn style(template: &str, chars: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars(chars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Counts, EVENT_VERSION, FailureKind, ShardRef};

    /// A terminal that records what is written to it.
    #[derive(Clone, Debug, Default)]
    struct FakeTerm(Arc<Mutex<String>>);

    impl FakeTerm {
        fn text(&self) -> String {
            self.0.lock().unwrap().clone()
        }
        fn push(&self, s: &str) {
            self.0.lock().unwrap().push_str(s);
        }
    }

    impl indicatif::TermLike for FakeTerm {
        fn width(&self) -> u16 {
            100
        }
        fn height(&self) -> u16 {
            30
        }
        fn move_cursor_up(&self, n: usize) -> io::Result<()> {
            if n > 0 {
                self.push(&format!("\x1b[{n}A"));
            }
            Ok(())
        }
        fn move_cursor_down(&self, n: usize) -> io::Result<()> {
            if n > 0 {
                self.push(&format!("\x1b[{n}B"));
            }
            Ok(())
        }
        fn move_cursor_right(&self, n: usize) -> io::Result<()> {
            self.push(&format!("\x1b[{n}C"));
            Ok(())
        }
        fn move_cursor_left(&self, n: usize) -> io::Result<()> {
            self.push(&format!("\x1b[{n}D"));
            Ok(())
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.push(s);
            self.push("\n");
            Ok(())
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.push(s);
            Ok(())
        }
        fn clear_line(&self) -> io::Result<()> {
            self.push("\r\x1b[2K");
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Lines written to the output stream; shares the fake terminal's buffer.
    struct Out(FakeTerm);

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(&String::from_utf8_lossy(buf));
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn ev(instance: Option<&str>, kind: EventKind) -> Event {
        Event {
            v: EVENT_VERSION,
            seq: 0,
            ts: String::new(),
            run_id: "test".to_owned(),
            kind,
            instance: instance.map(str::to_owned),
        }
    }

    fn started(name: &str, shard: Option<ShardRef>) -> Event {
        ev(
            Some(name),
            EventKind::InstanceStarted {
                attempt: 1,
                command: "true".to_owned(),
                shard,
                executor: None,
                job_id: None,
                worker: None,
            },
        )
    }

    fn completed(name: &str, shard: Option<ShardRef>) -> Event {
        ev(
            Some(name),
            EventKind::InstanceCompleted {
                action_key: String::new(),
                outputs: BTreeMap::new(),
                duration_ms: 1200,
                shard,
            },
        )
    }

    fn shard(index: usize) -> Option<ShardRef> {
        Some(ShardRef {
            index,
            count: 2,
            key: index.to_string(),
        })
    }

    fn plan(stale: usize, up_to_date: usize) -> Event {
        ev(
            None,
            EventKind::PlanReady {
                total: stale + up_to_date,
                stale,
                up_to_date,
                up_to_date_unlisted: up_to_date,
            },
        )
    }

    fn skipped(name: &str, early_cutoff: bool) -> Event {
        ev(
            Some(name),
            EventKind::InstanceSkipped {
                reason: "up_to_date",
                action_key: String::new(),
                early_cutoff,
            },
        )
    }

    fn display(verbosity: Verbosity, root: PathBuf) -> (Progress, FakeTerm) {
        let term = FakeTerm::default();
        let target = ProgressDrawTarget::term_like(Box::new(term.clone()));
        let p = Progress::with_target(
            root,
            verbosity,
            false,
            target,
            Box::new(Out(term.clone())),
            Some(100),
        );
        (p, term)
    }

    #[test]
    fn counts_work_as_the_plain_display_does() {
        let (mut p, term) = display(Verbosity::Normal, PathBuf::from("."));
        p.event(&plan(3, 1));
        assert_eq!(p.position(), (0, 3));
        p.event(&started("a", None));
        p.event(&started("sharded", None));
        p.event(&ev(
            Some("sharded"),
            EventKind::ShardPlan {
                strategy: "files",
                shards: 3,
                parallel: 2,
                stale: 2,
                reused: 1,
            },
        ));
        // Shards are progress inside their instance's line, not more instances to count.
        assert_eq!(p.position(), (0, 3));
        assert!(
            term.text().contains("sharded 0/2 shards"),
            "{}",
            term.text()
        );
        p.event(&started("sharded#0", shard(0)));
        p.event(&started("sharded#2", shard(2)));
        assert_eq!(p.running(), ["a", "sharded", "sharded#0", "sharded#2"]);
        p.event(&completed("a", None));
        p.event(&completed("sharded#0", shard(0)));
        assert!(
            term.text().contains("sharded 1/2 shards"),
            "{}",
            term.text()
        );
        p.event(&completed("sharded#2", shard(2)));
        assert_eq!(p.position(), (1, 3));
        assert_eq!(p.running(), ["sharded"]);
        p.event(&completed("sharded", None));
        // Planned to run, found up to date after its upstream reproduced its outputs.
        p.event(&skipped("cut", true));
        assert_eq!(p.position(), (3, 3));
        assert!(p.running().is_empty());
        let screen = term.text();
        assert!(screen.contains("[3/3] [=="), "{screen}");
        assert!(screen.contains("up to date"), "{screen}");
        assert!(screen.contains("sharded#2"), "{screen}");
        // Finished instances are shown by the bar, not printed one per line.
        assert!(!screen.contains(" ok 1.2s"), "{screen}");
        p.event(&ev(
            None,
            EventKind::RunCompleted {
                cache: Default::default(),
                counts: Counts {
                    total: 5,
                    succeeded: 3,
                    up_to_date: 2,
                    ..Counts::default()
                },
                duration_ms: 1500,
            },
        ));
        let after = term.text();
        assert!(
            after.ends_with("orch: 3 built, 2 up to date in 1.5s\n"),
            "{after}"
        );
        // No colors without `color`.
        assert!(!after.contains("\x1b[1;31m") && !after.contains("\x1b[36m"));
    }

    #[test]
    fn failures_print_the_plain_lines_and_log_above_the_bars() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("logs")).unwrap();
        std::fs::write(root.path().join("logs/bad.log"), "boom\nsecond line\n").unwrap();
        let (mut p, term) = display(Verbosity::Normal, root.path().to_owned());
        p.event(&plan(2, 0));
        p.event(&started("bad", None));
        p.event(&ev(
            Some("bad"),
            EventKind::InstanceFailed {
                kind: FailureKind::Exit,
                exit_code: Some(3),
                signal: None,
                message: "the command exited with status 3".to_owned(),
                log: "logs/bad.log".to_owned(),
                duration_ms: 12,
                shard: None,
            },
        ));
        p.event(&ev(
            Some("after"),
            EventKind::InstanceBlocked {
                reason: BlockReason::UpstreamFailed,
                blocked_by: vec!["bad".to_owned()],
                shard: None,
            },
        ));
        assert_eq!(p.position(), (1, 2));
        let screen = term.text();
        assert!(
            screen.contains(
                "[1/2] bad FAILED (exit 3) 12ms: the command exited with status 3\n\
                 $ true\n\
                 ──── output of bad (logs/bad.log) ────\nboom\nsecond line\n────\n"
            ),
            "{screen}"
        );
        assert!(
            screen.contains("[-] after blocked by bad (failed)\n"),
            "{screen}"
        );
        assert!(screen.contains("1 failed"), "{screen}");
        p.event(&ev(
            None,
            EventKind::RunFailed {
                cache: Default::default(),
                counts: Counts {
                    total: 2,
                    failed: 1,
                    blocked: 1,
                    cached: 0,
                    ..Counts::default()
                },
                failed: vec!["bad".to_owned()],
                blocked: vec!["after".to_owned()],
                interrupted: false,
                duration_ms: 20,
            },
        ));
        let after = term.text();
        assert!(
            after.ends_with(
                "orch: build failed: 1 failed, 1 blocked, 0 built, 0 up to date in 20ms\n\
                 orch: failed: bad\n"
            ),
            "{after}"
        );
    }

    #[test]
    fn quiet_draws_no_bars_and_prints_only_failures() {
        let (mut p, term) = display(Verbosity::Quiet, PathBuf::from("."));
        p.event(&plan(2, 0));
        p.event(&started("a", None));
        p.event(&completed("a", None));
        p.event(&ev(
            Some("b"),
            EventKind::InstanceBlocked {
                reason: BlockReason::StoppedAfterFailure,
                blocked_by: Vec::new(),
                shard: None,
            },
        ));
        p.event(&ev(
            None,
            EventKind::RunCompleted {
                cache: Default::default(),
                counts: Counts::default(),
                duration_ms: 1,
            },
        ));
        assert_eq!(term.text(), "");
        assert!(p.running().is_empty());
    }

    #[test]
    fn verbose_prints_each_finished_instance_and_the_printer_prints_above() {
        let (mut p, term) = display(Verbosity::Verbose, PathBuf::from("."));
        p.event(&plan(1, 0));
        p.event(&started("a", None));
        let printer = p.printer();
        std::thread::spawn(move || printer.print("a | hello from a thread"))
            .join()
            .unwrap();
        p.event(&completed("a", None));
        let screen = term.text();
        assert!(screen.contains("a: $ true\n"), "{screen}");
        assert!(screen.contains("a | hello from a thread\n"), "{screen}");
        assert!(screen.contains("[1/1] a ok 1.2s\n"), "{screen}");
    }

    #[test]
    fn a_retry_keeps_one_line_and_prints_the_plain_retry_line() {
        let (mut p, term) = display(Verbosity::Normal, PathBuf::from("."));
        p.event(&plan(1, 0));
        p.event(&started("flaky", None));
        p.event(&ev(
            Some("flaky"),
            EventKind::InstanceRetrying {
                attempt: 1,
                attempts: 3,
                delay_ms: 500,
                kind: FailureKind::Exit,
                message: "the command exited with status 1".to_owned(),
                shard: None,
            },
        ));
        assert!(term.text().contains(
            "[~] flaky attempt 1 of 3 failed: the command exited with status 1; retrying in 500ms\n"
        ));
        assert!(term.text().contains("retrying in 500ms (attempt 1 failed)"));
        p.event(&ev(
            Some("flaky"),
            EventKind::InstanceStarted {
                attempt: 2,
                command: "true".to_owned(),
                shard: None,
                executor: None,
                job_id: None,
                worker: None,
            },
        ));
        assert_eq!(p.running(), ["flaky"]);
        assert!(term.text().contains(" (attempt 2)"));
        p.event(&completed("flaky", None));
        assert_eq!(p.position(), (1, 1));
        assert!(p.running().is_empty());
    }

    #[test]
    fn long_names_keep_what_tells_instances_apart() {
        assert_eq!(fit("short[a=1]", 20), "short[a=1]");
        let long = "a_very_long_phase_name_that_goes_on[language=german]";
        let fitted = fit(long, 28);
        assert_eq!(fitted, "a_very_lon…[language=german]");
        assert_eq!(fitted.chars().count(), 28);
        // A matrix part too long to keep whole: the middle goes.
        let fitted = fit(&format!("p[k={}]", "x".repeat(60)), 20);
        assert_eq!(fitted.chars().count(), 20);
        assert!(
            fitted.starts_with("p[k=xx") && fitted.ends_with("xx]"),
            "{fitted}"
        );
        assert_eq!(fit("abcdefghijkl", 8), "abcd…jkl");
    }

    #[test]
    fn colors_only_when_asked() {
        let term = FakeTerm::default();
        let target = ProgressDrawTarget::term_like(Box::new(term.clone()));
        let mut p = Progress::with_target(
            PathBuf::from("."),
            Verbosity::Normal,
            true,
            target,
            Box::new(Out(term.clone())),
            Some(100),
        );
        p.event(&plan(1, 0));
        p.event(&ev(
            Some("bad"),
            EventKind::InstanceFailed {
                kind: FailureKind::Signal,
                exit_code: None,
                signal: Some(9),
                message: "killed".to_owned(),
                log: String::new(),
                duration_ms: 5,
                shard: None,
            },
        ));
        assert!(
            term.text()
                .contains("[1/1] bad \x1b[1;31mFAILED\x1b[0m (signal 9) 5ms: killed")
        );
    }
}
