//! `orch watch`: build, then rebuild whenever an input of the selected targets changes.
//!
//! One session loop on the calling thread owns the OS watches and collects events; each
//! build runs on a worker thread, so events keep arriving (and are debounced) while it
//! runs. The loop:
//!
//! 1. Loads the project through the [`Host`] and builds a [`WatchSpec`]: which
//!    directories to watch and how to classify a changed path.
//! 2. Watches every such directory non-recursively (its own recursion, pruned like the
//!    build's walk, so `.orch/`, `.git/`, output directories and unrelated trees cost no
//!    watch), adding watches as directories appear.
//! 3. Turns notify's events into [`Change`]s at the boundary, classifies each path
//!    (input, configuration, or ignored: outputs, `.orch/`, editor temporary files,
//!    paths matching no input) and feeds the relevant ones to the [`Debouncer`].
//! 4. When the window closes and no build runs: reloads the project if a configuration
//!    file changed (an invalid one is reported and the previous watches are kept, with no
//!    build until it is fixed), asks the host whether anything is stale, and if so
//!    announces the changes and builds. Changes during a build wait for it to end, then
//!    give one more build; with `restart` the running build is stopped instead.
//!
//! Every path reported (whatever its class) is handed to the host with the batch, so a
//! host that keeps its last snapshot looks again only at those; when changes may have
//! been missed (lost events, polling, a directory without a watch, a configuration
//! change) it is told so, and looks at everything.
//!
//! If the OS watch limit is reached, the session says how to raise it and polls instead.

pub mod debounce;
pub mod paths;
mod poll;
mod seen;

use std::collections::{BTreeSet, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{RecursiveMode, Watcher as _};

use crate::events::{EVENT_VERSION, Event, EventKind};
use crate::exec::signal;
use crate::timings::Timings;

pub use debounce::Debouncer;
pub use paths::{Class, Ignore, WatchSpec};

/// How often the polling fallback looks at the watched directories.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long a stopping session waits for a running build to end.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The longest the loop sleeps before looking at signals again.
const TICK: Duration = Duration::from_millis(50);

/// Paths named in a "changed" line before `… and N more`.
const SHOWN_PATHS: usize = 5;

/// What the session needs from the rest of orch: loading the project, the check whether
/// a build would do anything, and the build itself.
pub trait Host: Send + Sync + 'static {
    /// Loads the project and returns the watch rules of the selection; on error prints
    /// the diagnostic and returns the exit status. After [`Host::changed`] said changes
    /// may have been missed it loads afresh; otherwise it may answer from memory.
    fn load(&self) -> Result<WatchSpec, i32>;
    /// The paths reported changed since the last call (project-relative, of any class:
    /// inputs, outputs, directories, editor files); `complete` is false when changes may
    /// have been missed (events lost, polling, a directory without a watch, a
    /// configuration change), and the next load, check and build then look at
    /// everything. Called only while no build runs.
    fn changed(&self, paths: &BTreeSet<String>, complete: bool);
    /// Whether a build now would run anything (prints a diagnostic on error).
    fn check(&self) -> Check;
    /// Runs one build and returns its exit status.
    fn build(&self) -> i32;
}

/// The answer of [`Host::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Something would run.
    Stale,
    /// Everything is up to date.
    UpToDate,
    /// The state could not be read (a diagnostic was printed).
    Error,
}

/// Options of a session.
#[derive(Clone, Debug)]
pub struct Options {
    /// Quiet time that ends a burst of changes.
    pub debounce: Duration,
    /// Also build this often.
    pub every: Option<Duration>,
    /// Build on wall-clock multiples of `every`, and set `ORCH_TICK` for every build.
    pub align: bool,
    /// Stop a running build when changes arrive, instead of waiting for it.
    pub restart: bool,
    /// `watch_changes` events on stdout; the session's lines go to stderr.
    pub json: bool,
    /// Print only problems.
    pub quiet: bool,
}

/// One changed path, as the session sees it (converted from notify's events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Absolute path.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// What happened to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// It appeared.
    Created,
    /// Its content changed.
    Modified,
    /// It disappeared.
    Removed,
    /// It was renamed, from or to this path.
    Renamed,
}

/// Messages to the session loop.
#[derive(Debug)]
enum Msg {
    /// Changed paths.
    Fs(Vec<Change>),
    /// Events were lost (the kernel queue overflowed): look at everything again.
    Rescan,
    /// The OS watch limit was reached.
    Limit,
    /// Any other watch error.
    Error(String),
    /// The build worker finished.
    Done(Outcome),
}

/// How one build attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The build ran, with this exit status.
    Built(i32),
    /// Nothing was stale: nothing ran and nothing was printed.
    Skipped,
    /// The check failed (its diagnostic was printed).
    Failed,
}

/// Converts one notify event into the session's message, or None for events that never
/// mean a change (reads, opens, attribute-only changes).
fn convert(res: notify::Result<notify::Event>) -> Option<Msg> {
    let ev = match res {
        Ok(ev) => ev,
        Err(e) => {
            return Some(match e.kind {
                notify::ErrorKind::MaxFilesWatch => Msg::Limit,
                notify::ErrorKind::Io(ref io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                    Msg::Limit
                }
                _ => Msg::Error(e.to_string()),
            });
        }
    };
    if ev.need_rescan() {
        return Some(Msg::Rescan);
    }
    use notify::EventKind as K;
    let kind = match ev.kind {
        K::Create(_) => ChangeKind::Created,
        K::Remove(_) => ChangeKind::Removed,
        K::Modify(ModifyKind::Name(_)) => ChangeKind::Renamed,
        // The poller reports a newer mtime this way; inotify's attribute changes (touch,
        // chmod) never change content.
        K::Modify(ModifyKind::Metadata(MetadataKind::WriteTime)) => ChangeKind::Modified,
        K::Modify(ModifyKind::Metadata(_)) => return None,
        K::Modify(_) => ChangeKind::Modified,
        K::Access(AccessKind::Close(AccessMode::Write)) => ChangeKind::Modified,
        K::Access(_) => return None,
        K::Any | K::Other => ChangeKind::Modified,
    };
    if ev.paths.is_empty() {
        return None;
    }
    Some(Msg::Fs(
        ev.paths
            .into_iter()
            .map(|path| Change { path, kind })
            .collect(),
    ))
}

/// Runs a watch session until Ctrl-C, SIGTERM or SIGHUP; returns the exit status (128 +
/// the signal: 130, 143, 129), or the load error's status when the project cannot be
/// loaded at the start.
pub fn run(host: Arc<dyn Host>, opts: Options) -> i32 {
    signal::install();
    let mut t = Timings::start();
    let spec = match host.load() {
        Ok(s) => s,
        Err(code) => return code,
    };
    t.mark("watch load");
    let display = Arc::new(Display {
        json: opts.json,
        quiet: opts.quiet,
        seq: AtomicU64::new(0),
        every: opts.every,
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut watches = Watches::new(spec.root(), tx.clone(), Arc::clone(&display));
    let known: HashSet<String> = watches.sync(&spec).into_iter().collect();
    t.mark("watch setup");
    let mut s = Session {
        host,
        debouncer: Debouncer::new(opts.debounce),
        next_tick: opts.every.map(|e| first_tick(e, opts.align)),
        opts,
        display,
        spec,
        watches,
        known,
        tx,
        rx,
        pending: Pending::default(),
        running: None,
        broken: false,
        seen: Arc::default(),
    };
    s.run()
}

/// Changes collected for the next build.
#[derive(Debug, Default)]
struct Pending {
    /// Changed paths, project-relative.
    paths: BTreeSet<String>,
    /// A configuration file changed.
    config: bool,
    /// The timer fired.
    timer: bool,
    /// Events were lost.
    rescan: bool,
    /// Some of them arrived while a build ran (which may or may not have seen them).
    during_build: bool,
    /// Every path reported, whatever its class (but orch's own state), for the host to
    /// look at again: a path that starts no build may still be an input.
    touched: BTreeSet<String>,
    /// A change could not be told apart (a name that is not UTF-8, a watch error).
    missed: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.config && !self.timer && !self.rescan
    }
}

/// A build on the worker thread.
struct Running {
    /// `restart` asked it to stop.
    stop_requested: bool,
}

struct Session {
    host: Arc<dyn Host>,
    opts: Options,
    display: Arc<Display>,
    spec: WatchSpec,
    watches: Watches,
    /// Input files that exist, as far as the events tell (for the status line).
    known: HashSet<String>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    debouncer: Debouncer,
    pending: Pending,
    running: Option<Running>,
    /// The Orchfile does not load: no build until it changes again.
    broken: bool,
    next_tick: Option<Instant>,
    /// Content of the input files the session has seen change.
    seen: Arc<Mutex<seen::Seen>>,
}

impl Session {
    fn run(&mut self) -> i32 {
        self.spawn_build(None);
        loop {
            if signal::signalled() {
                return self.shutdown();
            }
            let now = Instant::now();
            if let (Some(every), Some(tick)) = (self.opts.every, self.next_tick)
                && now >= tick
            {
                self.pending.timer = true;
                let next = tick + every;
                self.next_tick = Some(if self.opts.align {
                    now + until_boundary(SystemTime::now(), every)
                } else if next <= now {
                    now + every
                } else {
                    next
                });
            }
            self.maybe_start(now);
            let wake = [self.debouncer.deadline(), self.next_tick]
                .into_iter()
                .flatten()
                .min()
                .map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
            match self.rx.recv_timeout(wake) {
                Ok(msg) => {
                    self.handle(msg);
                    while let Ok(msg) = self.rx.try_recv() {
                        self.handle(msg);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The session holds a sender itself.
                Err(RecvTimeoutError::Disconnected) => return self.shutdown(),
            }
        }
    }

    /// Starts a build (or stops the running one, with `restart`) once the collected
    /// changes are due.
    fn maybe_start(&mut self, now: Instant) {
        if self.pending.is_empty() || (self.debouncer.is_open() && !self.debouncer.is_due(now)) {
            return;
        }
        if let Some(r) = &mut self.running {
            let changes = !self.pending.paths.is_empty() || self.pending.rescan;
            if self.opts.restart && changes && !r.stop_requested {
                r.stop_requested = true;
                signal::request_stop();
                self.display
                    .line("watch: changes during the build; stopping it to start again");
            }
            return;
        }
        if self.broken && !self.pending.config {
            // Nothing can build until the Orchfile loads; builds compare content, so
            // dropping these changes loses nothing (but what was known of them).
            let dropped = std::mem::take(&mut self.pending);
            self.host.changed(&dropped.touched, false);
            self.seen_mut().forget(&dropped.paths);
            self.debouncer.reset();
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        self.debouncer.reset();
        let complete = !batch.config && !batch.rescan && !batch.missed && self.watches.complete();
        self.host.changed(&batch.touched, complete);
        if batch.config || batch.rescan {
            // The inputs may be others now, or changes were missed.
            self.seen_mut().clear();
        }
        if batch.config && !self.reload() {
            return;
        }
        if batch.rescan {
            self.known = self.watches.sync(&self.spec).into_iter().collect();
        }
        self.update_known(&batch.paths);
        self.spawn_build(Some(batch));
    }

    /// Reloads the project after a configuration change; false (with the diagnostic
    /// printed) when it does not load, keeping the previous watches.
    fn reload(&mut self) -> bool {
        let spec = match self.host.load() {
            Ok(s) if s.root() == self.spec.root() => s,
            Ok(s) => {
                self.display.warn(&format!(
                    "watch: the Orchfile now found is in `{}`, not in the project being watched",
                    s.root().display()
                ));
                self.broken = true;
                return false;
            }
            Err(_) => {
                self.broken = true;
                self.display.line(
                    "watch: keeping the previous inputs; no build until the Orchfile is fixed",
                );
                return false;
            }
        };
        if self.broken {
            self.display.line("watch: the Orchfile is valid again");
        }
        self.broken = false;
        self.spec = spec;
        self.known = self.watches.sync(&self.spec).into_iter().collect();
        true
    }

    /// Brings the set of existing input files up to date with changed paths.
    fn update_known(&mut self, paths: &BTreeSet<String>) {
        let root = self.spec.root().to_path_buf();
        for p in paths {
            match std::fs::metadata(root.join(p)) {
                Ok(m) if m.is_file() => {
                    if self.spec.classify(p) == Class::Input {
                        self.known.insert(p.clone());
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    if !self.known.remove(p) {
                        let prefix = format!("{p}/");
                        self.known.retain(|k| !k.starts_with(&prefix));
                    }
                }
            }
        }
    }

    fn seen_mut(&self) -> std::sync::MutexGuard<'_, seen::Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a build on a worker thread: the first one as it is; later ones only when
    /// something is stale, after announcing the changes.
    ///
    /// Whether something is stale: when every change of the batch arrived while no build
    /// ran and is a file whose content the session knows from an earlier batch, comparing
    /// contents answers it (the same content everywhere: nothing to do; another: build).
    /// Otherwise the host's check (a full plan) does.
    fn spawn_build(&mut self, batch: Option<Pending>) {
        // Builds run one at a time, so the variable holds for this one until the next.
        let tick = match (self.opts.every, self.opts.align) {
            (Some(every), true) => Some(tick_text(SystemTime::now(), every)),
            _ => None,
        };
        if tick.is_some() {
            crate::snapshot::env::set(TICK_VAR, tick.clone());
        }
        let host = Arc::clone(&self.host);
        let display = Arc::clone(&self.display);
        let seen = Arc::clone(&self.seen);
        let root = self.spec.root().to_path_buf();
        let tx = self.tx.clone();
        self.running = Some(Running {
            stop_requested: false,
        });
        std::thread::spawn(move || {
            let attempt = std::panic::AssertUnwindSafe(|| {
                if let Some(b) = &batch {
                    let only_files = !b.config && !b.rescan && !b.timer && !b.during_build;
                    let verdict = seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .update(&root, &b.paths);
                    let stale = match verdict {
                        seen::Verdict::Same if only_files => false,
                        seen::Verdict::Changed if only_files => true,
                        _ => match host.check() {
                            Check::Stale => true,
                            Check::UpToDate => false,
                            Check::Error => return Outcome::Failed,
                        },
                    };
                    if !stale || signal::interrupted() {
                        return Outcome::Skipped;
                    }
                    display.announce(b, tick.as_deref());
                }
                Outcome::Built(host.build())
            });
            // A panic has been printed; the session goes on watching.
            let outcome = std::panic::catch_unwind(attempt).unwrap_or(Outcome::Failed);
            let _ = tx.send(Msg::Done(outcome));
        });
    }

    fn handle(&mut self, msg: Msg) {
        let now = Instant::now();
        match msg {
            Msg::Fs(changes) => {
                for c in changes {
                    self.on_change(c, now);
                }
            }
            Msg::Rescan => {
                self.pending.rescan = true;
                self.event(now);
            }
            Msg::Limit => {
                if self.watches.switch_to_polling() {
                    self.pending.rescan = true;
                    self.event(now);
                }
            }
            Msg::Error(e) => {
                // Whatever it was, an event may be missing: the next build looks at all.
                self.pending.missed = true;
                self.display.warn(&format!("watch: {e}"));
            }
            Msg::Done(outcome) => {
                let stopped = self.running.take().is_some_and(|r| r.stop_requested);
                if stopped {
                    signal::clear_stop();
                }
                let built = matches!(outcome, Outcome::Built(_) | Outcome::Failed);
                // A build may have discovered inputs (depfiles): watch them from now on.
                if built && !self.broken {
                    self.reload();
                }
                if built && !stopped && !signal::signalled() {
                    self.display.line(&self.status());
                }
            }
        }
    }

    fn on_change(&mut self, c: Change, now: Instant) {
        let Some(rel) = paths::relative(self.spec.root(), &c.path) else {
            // A name that is not UTF-8: no input can be named so, but the full walk is
            // the one to say so.
            if c.path.starts_with(self.spec.root()) {
                self.pending.missed = true;
            }
            return;
        };
        if self.spec.classify(&rel) != Class::Ignored(Ignore::State) {
            self.pending.touched.insert(rel.clone());
        }
        if matches!(c.kind, ChangeKind::Created | ChangeKind::Renamed)
            && std::fs::symlink_metadata(&c.path).is_ok_and(|m| m.is_dir())
        {
            // A new directory: watch it, and count the inputs already in it as changes
            // (they may have been written before its watch existed). One that replaces a
            // watched directory is another directory: its watches start afresh.
            if self.spec.should_watch_dir(&rel) {
                self.watches.remove_tree(&rel);
                for f in self.watches.scan(&self.spec, &rel) {
                    self.note(f, now);
                }
            }
            return;
        }
        if matches!(c.kind, ChangeKind::Removed | ChangeKind::Renamed)
            && self.watches.dirs.contains(&rel)
            && !c.path.is_dir()
        {
            // A watched directory went away, with whatever inputs it held.
            self.watches.remove_tree(&rel);
            self.pending.paths.insert(rel);
            self.event(now);
            return;
        }
        self.note(rel, now);
    }

    fn note(&mut self, rel: String, now: Instant) {
        match self.spec.classify(&rel) {
            Class::Input => {}
            Class::Config => self.pending.config = true,
            Class::Ignored(_) => return,
        }
        self.pending.paths.insert(rel);
        self.event(now);
    }

    /// Something relevant happened at `now`.
    fn event(&mut self, now: Instant) {
        if self.running.is_some() {
            self.pending.during_build = true;
        }
        self.debouncer.event(now);
    }

    fn status(&self) -> String {
        let paths = self.known.len() + self.spec.config_files().len();
        let dirs = self.watches.dirs.len();
        let (verb, how) = if self.watches.polling {
            (
                "polling",
                format!(" every {}", humantime::format_duration(POLL_INTERVAL)),
            )
        } else {
            ("watching", String::new())
        };
        format!(
            "watch: {verb} {paths} {} in {dirs} {}{how} (Ctrl-C to stop)",
            plural(paths, "path", "paths"),
            plural(dirs, "directory", "directories")
        )
    }

    /// Stops watching, waits for a running build (it stops its commands on the signal
    /// by itself) and returns 128 + the signal.
    fn shutdown(&mut self) -> i32 {
        self.watches.stop();
        if self.running.is_some() {
            let deadline = Instant::now() + STOP_WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(Msg::Done(_)) => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            self.running = None;
        }
        signal::exit_status()
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// The session's own output: human lines (stdout, or stderr with `--json`) and
/// `watch_changes` events.
struct Display {
    json: bool,
    quiet: bool,
    /// The session's own event counter.
    seq: AtomicU64,
    every: Option<Duration>,
}

impl Display {
    /// A status line (not with `-q`).
    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.json {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    /// A warning, always on stderr.
    fn warn(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }

    /// Says what starts the next build (and with `--align`, its tick).
    fn announce(&self, b: &Pending, tick: Option<&str>) {
        let trigger = if b.config {
            "orchfile"
        } else if !b.paths.is_empty() || b.rescan {
            "files"
        } else {
            "timer"
        };
        if self.json {
            let event = Event {
                v: EVENT_VERSION,
                seq: self.seq.fetch_add(1, Ordering::SeqCst) + 1,
                ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                run_id: "watch".to_owned(),
                kind: EventKind::WatchChanges {
                    paths: b.paths.iter().cloned().collect(),
                    trigger,
                    tick: tick.map(str::to_owned),
                },
                instance: None,
            };
            if let Ok(text) = serde_json::to_string(&event) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        }
        let mut line = changes_line(b, self.every);
        if let Some(t) = tick {
            line.push_str(&format!(" (ORCH_TICK={t})"));
        }
        self.line(&line);
    }
}

/// The variable that gives commands the tick of an aligned session.
pub const TICK_VAR: &str = "ORCH_TICK";

/// Milliseconds since the Unix epoch (0 before it).
fn epoch_ms(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// How long from `now` to the next wall-clock multiple of `period` (a whole period when
/// `now` is one), counted from the Unix epoch, so `1m` ticks on the minute in UTC.
fn until_boundary(now: SystemTime, period: Duration) -> Duration {
    let p = period.as_millis().max(1);
    let left = p - epoch_ms(now) % p;
    Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX))
}

/// When the first timer build is due: a period from now, or the next boundary.
fn first_tick(every: Duration, align: bool) -> Instant {
    if align {
        Instant::now() + until_boundary(SystemTime::now(), every)
    } else {
        Instant::now() + every
    }
}

/// The start of the period `now` lies in, in RFC 3339 UTC: to the second when the period
/// is whole seconds (`2026-11-28T18:15:00Z`), else to the millisecond.
fn tick_text(now: SystemTime, period: Duration) -> String {
    let p = period.as_millis().max(1);
    let ms = epoch_ms(now);
    let start = SystemTime::UNIX_EPOCH
        + Duration::from_millis(u64::try_from(ms - ms % p).unwrap_or(u64::MAX));
    if p.is_multiple_of(1000) {
        humantime::format_rfc3339_seconds(start).to_string()
    } else {
        humantime::format_rfc3339_millis(start).to_string()
    }
}

/// `watch: 2 changed: src/a.txt, src/b.txt — rebuilding`.
fn changes_line(b: &Pending, every: Option<Duration>) -> String {
    if b.paths.is_empty() {
        return if b.rescan {
            "watch: events were lost, looked at everything again — rebuilding".to_owned()
        } else {
            let every = every.map_or(String::new(), |e| {
                format!(" (every {})", humantime::format_duration(e))
            });
            format!("watch: timer{every} — rebuilding")
        };
    }
    let n = b.paths.len();
    let mut shown: Vec<&str> = b
        .paths
        .iter()
        .take(SHOWN_PATHS)
        .map(String::as_str)
        .collect();
    let more = n.saturating_sub(SHOWN_PATHS);
    let more_text = format!("and {more} more");
    if more > 0 {
        shown.push(&more_text);
    }
    format!("watch: {n} changed: {} — rebuilding", shown.join(", "))
}

/// The OS watches: one per directory, added and removed as the session goes.
struct Watches {
    root: PathBuf,
    backend: Backend,
    polling: bool,
    /// Watched directories, project-relative ("" is the root).
    dirs: HashSet<String>,
    /// Directories that exist but could not be watched: changes in them go unseen.
    unwatched: HashSet<String>,
    tx: Sender<Msg>,
    display: Arc<Display>,
}

/// Where the watches live.
enum Backend {
    /// The OS's notifications (inotify on Linux).
    Native(Box<dyn notify::Watcher + Send>),
    /// Listing the directories now and then.
    Poll(poll::Poller),
    /// Stopped.
    None,
}

fn handler(tx: Sender<Msg>) -> impl FnMut(notify::Result<notify::Event>) + Send + 'static {
    move |res| {
        if let Some(msg) = convert(res) {
            let _ = tx.send(msg);
        }
    }
}

impl Watches {
    fn new(root: &Path, tx: Sender<Msg>, display: Arc<Display>) -> Watches {
        let mut w = Watches {
            root: root.to_path_buf(),
            backend: Backend::None,
            polling: false,
            dirs: HashSet::new(),
            unwatched: HashSet::new(),
            tx,
            display,
        };
        match notify::RecommendedWatcher::new(handler(w.tx.clone()), notify::Config::default()) {
            Ok(n) => w.backend = Backend::Native(Box::new(n)),
            Err(e) => {
                w.display.warn(&format!(
                    "watch: cannot watch the file system ({e}); polling instead"
                ));
                w.start_polling();
            }
        }
        w
    }

    fn start_polling(&mut self) {
        self.polling = true;
        self.backend = Backend::Poll(poll::Poller::new(POLL_INTERVAL, self.tx.clone()));
    }

    /// Replaces the OS watches with polling of the same directories (once); true when
    /// it switched.
    fn switch_to_polling(&mut self) -> bool {
        if self.polling {
            return false;
        }
        self.display.warn(
            "watch: the inotify watch limit is reached; raise it with `sudo sysctl fs.inotify.max_user_watches=524288`; polling instead",
        );
        self.backend = Backend::None;
        self.start_polling();
        let dirs: Vec<String> = self.dirs.iter().cloned().collect();
        for d in dirs {
            self.add(&d);
        }
        true
    }

    /// Adds a watch on directory `rel`; false when it could not be watched.
    fn add(&mut self, rel: &str) -> bool {
        let path = self.root.join(rel);
        let backend = match &mut self.backend {
            Backend::Native(n) => n,
            Backend::Poll(p) => {
                p.watch(&path);
                self.dirs.insert(rel.to_owned());
                return true;
            }
            Backend::None => return false,
        };
        match backend.watch(&path, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.dirs.insert(rel.to_owned());
                true
            }
            Err(e)
                if matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
                    || matches!(&e.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC)) =>
            {
                self.dirs.insert(rel.to_owned());
                self.switch_to_polling();
                // switch_to_polling watched every directory in `dirs`, this one too.
                true
            }
            // Gone already (its parent's watch sees it come back), or unreadable.
            Err(_) => {
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    self.unwatched.insert(rel.to_owned());
                }
                false
            }
        }
    }

    fn unwatch(&mut self, rel: &str) {
        let path = self.root.join(rel);
        match &mut self.backend {
            Backend::Native(n) => {
                let _ = n.unwatch(&path);
            }
            Backend::Poll(p) => p.unwatch(&path),
            Backend::None => {}
        }
        self.dirs.remove(rel);
        self.unwatched.remove(rel);
    }

    /// Whether every change is reported one by one: the OS watches every directory
    /// that exists (polling compares listings now and then instead).
    fn complete(&mut self) -> bool {
        let root = self.root.clone();
        self.unwatched
            .retain(|d| std::fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir()));
        !self.polling && self.unwatched.is_empty()
    }

    /// Drops the watches on `rel` and every watched directory below it.
    fn remove_tree(&mut self, rel: &str) {
        let prefix = format!("{rel}/");
        let gone: Vec<String> = self
            .dirs
            .iter()
            .filter(|d| *d == rel || d.starts_with(&prefix))
            .cloned()
            .collect();
        for d in gone {
            self.unwatch(&d);
        }
    }

    /// Watches every directory the spec wants from `start` down (itself included),
    /// adding the missing watches; returns the input files found (project-relative).
    fn scan(&mut self, spec: &WatchSpec, start: &str) -> Vec<String> {
        let mut seen = HashSet::new();
        self.walk(spec, start, &mut seen)
    }

    fn walk(&mut self, spec: &WatchSpec, start: &str, seen: &mut HashSet<String>) -> Vec<String> {
        let mut files = Vec::new();
        let mut stack = vec![start.to_owned()];
        while let Some(dir) = stack.pop() {
            if !spec.should_watch_dir(&dir) {
                continue;
            }
            // Watch first, then list: a file written in between is seen either way.
            if !self.dirs.contains(&dir) && !self.add(&dir) {
                continue;
            }
            seen.insert(dir.clone());
            let Ok(entries) = std::fs::read_dir(self.root.join(&dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let rel = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                let Ok(ft) = entry.file_type() else { continue };
                // Symlinked directories are not followed, as in the build's walk.
                if ft.is_dir() {
                    stack.push(rel);
                } else if (ft.is_file() || ft.is_symlink()) && spec.classify(&rel) == Class::Input {
                    files.push(rel);
                }
            }
        }
        files
    }

    /// Makes the watches match `spec`: adds what it wants, drops what it no longer
    /// does; returns the input files found.
    fn sync(&mut self, spec: &WatchSpec) -> Vec<String> {
        self.unwatched.clear();
        let mut seen = HashSet::new();
        let files = self.walk(spec, "", &mut seen);
        let stale: Vec<String> = self.dirs.difference(&seen).cloned().collect();
        for d in stale {
            self.unwatch(&d);
        }
        files
    }

    /// Ends every watch.
    fn stop(&mut self) {
        self.backend = Backend::None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_ticks_fall_on_wall_clock_multiples_of_the_period() {
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let minute = Duration::from_secs(60);
        // 2026-11-28T18:15:42.250Z
        let now = at(1_795_889_742_250);
        assert_eq!(until_boundary(now, minute), Duration::from_millis(17_750));
        assert_eq!(tick_text(now, minute), "2026-11-28T18:15:00Z");
        assert_eq!(until_boundary(at(1_795_889_760_000), minute), minute);
        assert_eq!(
            tick_text(now, Duration::from_millis(500)),
            "2026-11-28T18:15:42.000Z"
        );
        assert_eq!(
            tick_text(now, Duration::from_secs(300)),
            "2026-11-28T18:15:00Z"
        );
    }
    use notify::event::{CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode};

    fn fs(msg: Option<Msg>) -> Vec<(String, ChangeKind)> {
        match msg {
            Some(Msg::Fs(v)) => v
                .into_iter()
                .map(|c| (c.path.display().to_string(), c.kind))
                .collect(),
            other => panic!("expected changes, got {other:?}"),
        }
    }

    fn ev(kind: notify::EventKind, paths: &[&str]) -> notify::Result<notify::Event> {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        Ok(e)
    }

    #[test]
    fn notify_events_become_changes() {
        use notify::EventKind as K;
        assert_eq!(
            fs(convert(ev(K::Create(CreateKind::File), &["/p/a"]))),
            [("/p/a".to_owned(), ChangeKind::Created)]
        );
        assert_eq!(
            fs(convert(ev(
                K::Modify(ModifyKind::Data(DataChange::Any)),
                &["/p/a"]
            ))),
            [("/p/a".to_owned(), ChangeKind::Modified)]
        );
        assert_eq!(
            fs(convert(ev(
                K::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/p/a", "/p/b"]
            ))),
            [
                ("/p/a".to_owned(), ChangeKind::Renamed),
                ("/p/b".to_owned(), ChangeKind::Renamed)
            ]
        );
        assert_eq!(
            fs(convert(ev(K::Remove(RemoveKind::Any), &["/p/a"]))),
            [("/p/a".to_owned(), ChangeKind::Removed)]
        );
        assert_eq!(
            fs(convert(ev(
                K::Modify(ModifyKind::Metadata(MetadataKind::WriteTime)),
                &["/p/a"]
            ))),
            [("/p/a".to_owned(), ChangeKind::Modified)]
        );
        // Reads and attribute-only changes are not changes.
        for k in [
            K::Access(AccessKind::Open(AccessMode::Any)),
            K::Access(AccessKind::Close(AccessMode::Read)),
            K::Modify(ModifyKind::Metadata(MetadataKind::Any)),
        ] {
            assert!(convert(ev(k, &["/p/a"])).is_none(), "{k:?}");
        }
        let overflow = notify::Event::new(K::Other).set_flag(notify::event::Flag::Rescan);
        assert!(matches!(convert(Ok(overflow)), Some(Msg::Rescan)));
        let limit = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        assert!(matches!(convert(Err(limit)), Some(Msg::Limit)));
    }

    #[test]
    fn changes_lines() {
        let mut b = Pending::default();
        b.paths.insert("src/b.txt".to_owned());
        b.paths.insert("src/a.txt".to_owned());
        assert_eq!(
            changes_line(&b, None),
            "watch: 2 changed: src/a.txt, src/b.txt — rebuilding"
        );
        for i in 0..10 {
            b.paths.insert(format!("x/{i}"));
        }
        assert_eq!(
            changes_line(&b, None),
            "watch: 12 changed: src/a.txt, src/b.txt, x/0, x/1, x/2, and 7 more — rebuilding"
        );
        let timer = Pending {
            timer: true,
            ..Pending::default()
        };
        assert_eq!(
            changes_line(&timer, Some(Duration::from_secs(10))),
            "watch: timer (every 10s) — rebuilding"
        );
    }
}
