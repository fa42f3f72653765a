//! `cargo bench --bench watch`: how fast `orch watch` reacts, and what watching costs.
//!
//! 1. Latency on a small project (10 input files): `orch watch --json` runs; the benchmark
//!    saves one input, then reads the `run_started` event of the build it causes, over 20
//!    saves (`ORCH_BENCH_WATCH_SAVES`). Reported: the time from the write to that event
//!    arriving on the pipe, minus the debounce (200 ms) — the delay orch adds to the
//!    debounce: event delivery, the up-to-date check, and the build up to its start.
//!    The first save of a file is also shown alone: the session has not seen that file
//!    change before, so it plans the project before building (later saves compare the
//!    file's content with what it saw).
//! 2. A large project: 50,000 input files (`ORCH_BENCH_WATCH_FILES`) in 500 directories.
//!    Reported: the time to load and to set up the watches (from `ORCH_TIMINGS=1`), the
//!    wall time until the watcher is idle after its initial build, its memory (resident
//!    set) then and after 10 more rebuilds, the same latency over 5 saves, the median
//!    stage times of a rebuild and the watcher's own CPU time. With two binaries, each
//!    watches a copy of its own and their saves take turns.
//!
//! Each build's `run_started` is read as it is written: `--json` flushes every event.
//!
//! With `OLD_BIN=/path/to/orch`, each part runs that binary and then this tree's, one
//! after the other on the same files, so the two are compared under the same load.
//! Results, before and after `orch watch` kept its snapshot: `benches/watch.md`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

const DEBOUNCE: Duration = Duration::from_millis(200);
const LIMIT: Duration = Duration::from_secs(120);

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("benchmark failed: {msg}");
    std::process::exit(1)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| die(e));
    }
    std::fs::write(&path, text).unwrap_or_else(|e| die(format!("{}: {e}", path.display())));
}

/// A line of output and when it arrived.
enum Line {
    Out(Instant, Value),
    Err(Instant, String),
}

struct Watcher {
    child: Child,
    lines: Receiver<Line>,
    /// Every stderr line read so far (the stage timings of each build among them).
    stderr: std::cell::RefCell<Vec<String>>,
}

/// The binaries to measure, labelled: `OLD_BIN` (when set), then this tree's.
fn binaries() -> Vec<(&'static str, PathBuf)> {
    let mut bins = Vec::new();
    if let Some(old) = std::env::var_os("OLD_BIN") {
        bins.push(("old", PathBuf::from(old)));
    }
    bins.push(("new", PathBuf::from(env!("CARGO_BIN_EXE_orch"))));
    bins
}

/// Forgets every build, so the next watcher starts from scratch on the same files.
fn forget_builds(dir: &Path) {
    for d in [".orch", "out"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
}

impl Watcher {
    fn start(bin: &Path, dir: &Path) -> Watcher {
        let mut child = Command::new(bin)
            .arg("-C")
            .arg(dir)
            .args(["watch", "--json", "-j", "2"])
            .env("ORCH_TIMINGS", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| die(format!("spawn orch: {e}")));
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let now = Instant::now();
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| die(format!("not JSON ({e}): {line}")));
                if tx.send(Line::Out(now, v)).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx2.send(Line::Err(Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Watcher {
            child,
            lines: rx,
            stderr: std::cell::RefCell::default(),
        }
    }

    /// The next line for which `pick` returns something.
    fn until<T>(&self, what: &str, mut pick: impl FnMut(&Line) -> Option<T>) -> T {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Line::Err(_, text) = &l {
                        self.stderr.borrow_mut().push(text.clone());
                    }
                    if let Some(t) = pick(&l) {
                        return t;
                    }
                }
                Err(_) => die(format!("no {what} within {LIMIT:?}")),
            }
        }
    }

    fn event(&self, ty: &str) -> Instant {
        self.until(ty, |l| match l {
            Line::Out(t, v) if v["type"] == ty => Some(*t),
            _ => None,
        })
    }

    fn stderr_line(&self, text: &str) -> (Instant, String) {
        self.until(text, |l| match l {
            Line::Err(t, s) if s.contains(text) => Some((*t, s.clone())),
            _ => None,
        })
    }

    /// Waits for the end of a build and the status line after it (two pipes: they may
    /// arrive in either order); returns when the status line came.
    fn idle(&self) -> Instant {
        let (mut completed, mut status) = (false, None);
        self.until("the end of the build", |l| {
            match l {
                Line::Out(_, v) if v["type"] == "run_completed" => completed = true,
                Line::Err(t, s) if s.contains("(Ctrl-C to stop)") => status = Some(*t),
                _ => {}
            }
            status.filter(|_| completed)
        })
    }

    /// Writes `rel` and returns the time from the write to the `run_started` it causes,
    /// once that build has ended.
    fn save_to_start(&self, dir: &Path, rel: &str, text: &str) -> Duration {
        let saved = Instant::now();
        write(dir, rel, text);
        let started = self.event("run_started");
        self.idle();
        started - saved
    }

    /// Resident set and its peak, in MiB.
    fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }

    /// The `ORCH_TIMINGS` times of stage `label` in the builds so far, in ms.
    fn stage_ms(&self, label: &str) -> Vec<f64> {
        let prefix = format!("orch timings: {label} ");
        self.stderr
            .borrow()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// CPU time (user + system) the watcher itself used so far, in ms; its commands'
    /// time is not counted.
    fn cpu_ms(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at `state`.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        match (ticks(11), ticks(12)) {
            (Some(u), Some(s)) if hz > 0.0 => (u + s) * 1e3 / hz,
            _ => f64::NAN,
        }
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let status = self.child.wait().unwrap_or_else(|e| die(e));
        if status.code() != Some(130) {
            die(format!("orch watch exited with {status}"));
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Latencies beyond the debounce, in ms: (median, min, p90, max).
fn summary(samples: &[Duration]) -> (f64, f64, f64, f64) {
    let mut v: Vec<f64> = samples
        .iter()
        .map(|d| ms(d.saturating_sub(DEBOUNCE)))
        .collect();
    v.sort_by(f64::total_cmp);
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (p(0.5), v[0], p(0.9), v[v.len() - 1])
}

fn timing(line: &str) -> f64 {
    // `orch timings: watch setup    12.34 ms  (total …)`
    line.split_whitespace()
        .skip_while(|w| *w != "setup" && *w != "load")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN)
}

fn small() {
    let saves = env_usize("ORCH_BENCH_WATCH_SAVES", 20);
    let tmp = tempfile::tempdir().unwrap_or_else(|e| die(e));
    let dir = tmp.path();
    write(
        dir,
        "Orchfile.toml",
        "[phase.copy]\nrun = \"cat {inputs} > {output}\"\ninputs = [\"src/*.txt\"]\noutputs = [\"out/all.txt\"]\n",
    );
    for i in 0..10 {
        write(dir, &format!("src/{i}.txt"), &format!("{i}\n"));
    }
    println!("small project (10 inputs), {saves} saves, debounce {DEBOUNCE:?}:");
    for (label, bin) in binaries() {
        forget_builds(dir);
        let w = Watcher::start(&bin, dir);
        w.idle();
        let samples: Vec<Duration> = (0..saves)
            .map(|i| w.save_to_start(dir, "src/0.txt", &format!("{label} save {i}\n")))
            .collect();
        w.stop();
        let (median, min, p90, max) = summary(&samples);
        println!(
            "  [{label}] save → rebuild start, beyond the debounce: median {median:.1} ms (min {min:.1}, p90 {p90:.1}, max {max:.1})"
        );
        println!(
            "  [{label}] the first save (a file not seen changing before: the project is planned first): {:.1} ms",
            ms(samples[0].saturating_sub(DEBOUNCE))
        );
    }
}

fn large() {
    let n = env_usize("ORCH_BENCH_WATCH_FILES", 50_000);
    if n == 0 {
        return;
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| die(e));
    let dir = tmp.path();
    write(
        dir,
        "Orchfile.toml",
        "[phase.count]\nrun = \"find src -type f | wc -l > {output}\"\ninputs = [\"src/**/*.txt\"]\noutputs = [\"out/count.txt\"]\n",
    );
    for i in 0..n {
        write(
            dir,
            &format!("src/{:03}/{i:06}.txt", i / 100),
            &format!("{i}\n"),
        );
    }
    println!(
        "large project ({n} inputs in {} directories), each watcher on its own copy, saves taking turns:",
        n.div_ceil(100) + 2
    );
    let copy = tempfile::tempdir().unwrap_or_else(|e| die(e));
    let status = Command::new("cp")
        .arg("-a")
        .arg(dir.join("."))
        .arg(copy.path())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        die("cannot copy the large project");
    }
    // Digests taken within 2 s of a file's mtime or ctime (a copy's is new) are not
    // trusted (the racy-timestamp rule), so files this fresh would be hashed again by
    // every plan: let them age, as a real project's files have.
    std::thread::sleep(Duration::from_millis(2100));
    struct Run {
        label: &'static str,
        dir: PathBuf,
        w: Watcher,
        samples: Vec<Duration>,
        rss: (f64, f64),
        cpu_idle: f64,
        load: f64,
        setup: f64,
        idle: f64,
    }
    let mut runs: Vec<Run> = binaries()
        .into_iter()
        .zip([dir.to_path_buf(), copy.path().to_path_buf()])
        .map(|((label, bin), dir)| {
            let started = Instant::now();
            let w = Watcher::start(&bin, &dir);
            let (_, load) = w.stderr_line("orch timings: watch load");
            let (_, setup) = w.stderr_line("orch timings: watch setup");
            let idle = w.idle();
            Run {
                label,
                dir,
                rss: w.memory(),
                cpu_idle: w.cpu_ms(),
                w,
                samples: Vec::new(),
                load: timing(&load),
                setup: timing(&setup),
                idle: (idle - started).as_secs_f64(),
            }
        })
        .collect();
    for i in 0..10 {
        let file = if i < 5 {
            "src/000/000000.txt"
        } else {
            "src/000/000001.txt"
        };
        for r in &mut runs {
            let d =
                r.w.save_to_start(&r.dir, file, &format!("{} save {i}\n", r.label));
            if i < 5 {
                r.samples.push(d);
            }
        }
    }
    for r in runs {
        let (rss_after, peak_after) = r.w.memory();
        let cpu_saves = r.w.cpu_ms() - r.cpu_idle;
        let median_stage = |stage: &str| {
            // The first is the initial build's.
            let mut v: Vec<f64> = r.w.stage_ms(stage).into_iter().skip(1).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let stages = format!(
            "snapshot {:.1} ms, plan {:.1} ms, run record {:.1} ms",
            median_stage("snapshot"),
            median_stage("plan"),
            median_stage("run record")
        );
        let label = r.label;
        let (rss, peak) = r.rss;
        let (median, min, _, max) = summary(&r.samples);
        r.w.stop();
        println!(
            "  [{label}] load {:.1} ms, watch setup {:.1} ms; idle after the initial build {:.2} s",
            r.load, r.setup, r.idle
        );
        println!(
            "  [{label}] memory after the initial build: {rss:.1} MiB resident (peak {peak:.1}); after 10 rebuilds: {rss_after:.1} MiB (peak {peak_after:.1})"
        );
        println!(
            "  [{label}] save → rebuild start, beyond the debounce: median {median:.1} ms (min {min:.1}, max {max:.1}); the first save {:.1} ms",
            ms(r.samples[0].saturating_sub(DEBOUNCE))
        );
        println!("  [{label}] a rebuild's stages (median, ORCH_TIMINGS): {stages}");
        println!(
            "  [{label}] CPU of the watcher (user + system, not its commands): {:.0} ms to the end of the initial build, {:.0} ms per rebuild",
            r.cpu_idle,
            cpu_saves / 10.0
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    small();
    large();
}
