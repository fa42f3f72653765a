//! The plain display for people and CI logs, driven only by events: one line per
//! finished instance or shard (`[12/40] translate[lang=fr]#3 (route-7) ok 1.2s`), the end
//! of a failed instance's log as one block, and a summary line.

use std::io::Write;
use std::path::PathBuf;

use std::collections::BTreeMap;

use super::shard_name::label;
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

/// Plain-text display.
pub struct Human<W: Write> {
    out: W,
    root: PathBuf,
    verbosity: Verbosity,
    done: usize,
    total: usize,
    printed: std::collections::BTreeSet<String>,
    /// Failed shards by instance, as labels by index, for the closing lines.
    failed_shards: FailedShards,
}

impl<W: Write> Human<W> {
    /// A display writing to `out`; logs are read relative to `root`.
    pub fn new(out: W, root: PathBuf, verbosity: Verbosity) -> Human<W> {
        Human {
            out,
            root,
            verbosity,
            done: 0,
            total: 0,
            printed: Default::default(),
            failed_shards: BTreeMap::new(),
        }
    }

    fn counter(&mut self) -> String {
        self.done += 1;
        self.total = self.total.max(self.done);
        format!("[{}/{}]", self.done, self.total)
    }

    fn print_log(&mut self, name: &str, log: &str) {
        let _ = write!(self.out, "{}", log_block(&self.root, name, log));
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

/// Why an instance did not run, as the plain display writes it.
pub fn blocked_why(reason: BlockReason, blocked_by: &[String]) -> String {
    let names = || {
        blocked_by
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match reason {
        BlockReason::UpstreamFailed => format!("blocked: upstream {} failed", names()),
        BlockReason::UpstreamBlocked => format!("blocked: upstream {} is blocked", names()),
        BlockReason::StoppedAfterFailure => {
            "not started: the build stops after a failure (-k keeps going)".to_owned()
        }
        BlockReason::Interrupted => "interrupted: stopped before it finished".to_owned(),
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
                    names.push(format!(
                        "and {} more shards of {f}",
                        labels.len() - MAX_SHARDS_LISTED
                    ));
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

impl<W: Write> Sink for Human<W> {
    fn event(&mut self, e: &Event) {
        let name = e.instance.as_deref().unwrap_or("");
        let normal = self.verbosity >= Verbosity::Normal;
        let verbose = self.verbosity >= Verbosity::Verbose;
        match &e.kind {
            EventKind::PlanReady {
                stale,
                up_to_date_unlisted,
                ..
            } => {
                self.total = *stale;
                if verbose && *up_to_date_unlisted > 0 {
                    let _ = writeln!(self.out, "{}", unlisted_line(*up_to_date_unlisted));
                }
            }
            EventKind::ShardPlan {
                strategy,
                shards,
                stale,
                reused,
                ..
            } => {
                // Each shard that runs is one more line of work.
                self.total += stale;
                if verbose {
                    let _ = writeln!(
                        self.out,
                        "{name}: {shards} {strategy} shards, {stale} to run, {reused} reused"
                    );
                }
            }
            EventKind::InstanceInvalidated { details, .. } if verbose => {
                let why: Vec<String> = details.iter().map(ToString::to_string).collect();
                let _ = writeln!(self.out, "{name}: stale: {}", why.join(", "));
            }
            EventKind::InstanceStarted { command, shard, .. } if verbose => {
                let _ = writeln!(self.out, "{}: $ {command}", label(name, shard.as_ref()));
            }
            EventKind::InstanceSkipped {
                early_cutoff: true, ..
            } if normal => {
                let c = self.counter();
                let _ = writeln!(
                    self.out,
                    "{c} {name} up to date (upstream outputs unchanged)"
                );
            }
            EventKind::InstanceSkipped {
                early_cutoff: true, ..
            } => {
                self.done += 1;
            }
            EventKind::InstanceSkipped { .. } if verbose => {
                let _ = writeln!(self.out, "{name} up to date");
            }
            EventKind::InstanceCompleted {
                duration_ms, shard, ..
            } => {
                let c = self.counter();
                if normal {
                    let name = label(name, shard.as_ref());
                    let _ = writeln!(self.out, "{c} {name} ok {}", duration(*duration_ms));
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
                let c = self.counter();
                let what = failure_what(*kind, *exit_code, *signal);
                let name = label(name, shard.as_ref());
                if let Some(sh) = shard
                    && let Some(instance) = e.instance.as_deref().and_then(shard_parent)
                {
                    self.failed_shards
                        .entry(instance.to_owned())
                        .or_default()
                        .insert(sh.index, name.clone());
                }
                let _ = writeln!(
                    self.out,
                    "{c} {name} FAILED ({what}) {}: {message}",
                    duration(*duration_ms)
                );
                // A sharded instance's failure points at the log of a shard shown already.
                if !log.is_empty() && self.printed.insert(log.clone()) {
                    let log = log.clone();
                    self.print_log(&name, &log);
                }
            }
            EventKind::InstanceBlocked {
                reason,
                blocked_by,
                shard,
            } => {
                let why = blocked_why(*reason, blocked_by);
                if normal || *reason != BlockReason::StoppedAfterFailure {
                    let name = label(name, shard.as_ref());
                    let _ = writeln!(self.out, "[-] {name} {why}");
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
                let name = label(name, shard.as_ref());
                let _ = writeln!(
                    self.out,
                    "[~] {name} attempt {attempt} of {attempts} failed: {message}; retrying in {}",
                    duration(*delay_ms)
                );
            }
            EventKind::InputChangedDuringRun { paths, shard } => {
                let name = label(name, shard.as_ref());
                let _ = writeln!(self.out, "warning: {}", input_changed_line(&name, paths));
            }
            EventKind::SoftDependencyUnmet {
                upstream,
                upstream_status,
            } => {
                let _ = writeln!(
                    self.out,
                    "warning: {name} runs without its soft dependency `{upstream}` ({upstream_status})"
                );
            }
            EventKind::RunCompleted {
                counts,
                duration_ms,
                ..
            } if normal => {
                let _ = writeln!(self.out, "{}", completed_line(counts, *duration_ms));
            }
            EventKind::InstanceCached { source, bytes, .. } => {
                let c = self.counter();
                if normal {
                    let _ = writeln!(
                        self.out,
                        "{c} {name} restored from the {source} cache ({})",
                        size(*bytes)
                    );
                }
            }
            EventKind::RunFailed {
                counts,
                failed,
                interrupted,
                duration_ms,
                ..
            } => {
                let head = if *interrupted {
                    "interrupted"
                } else {
                    "build failed"
                };
                let _ = writeln!(
                    self.out,
                    "orch: {head}: {} failed, {} blocked, {} built, {} up to date in {}",
                    counts.failed,
                    counts.blocked,
                    counts.succeeded,
                    counts.up_to_date,
                    duration(*duration_ms)
                );
                if !failed.is_empty() {
                    let _ = writeln!(
                        self.out,
                        "orch: failed: {}",
                        failed_list(failed, &self.failed_shards)
                    );
                }
            }
            _ => {}
        }
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
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
        assert_eq!(shard_parent("t[lang=fr]#3"), Some("t[lang=fr]"));
        assert_eq!(shard_parent("t[lang=fr]"), None);
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
