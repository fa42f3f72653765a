//! A JUnit XML report (`build --junit FILE`), written when the run ends: one
//! `<testsuite name="orch">` with one `<testcase>` per instance, sorted by name.
//!
//! - ran and succeeded, restored from the cache, or up to date: a plain test case
//!   (restored or up to date: time 0), also for the instances up to date before the
//!   build began, which have no event of their own (the build hands them over, see
//!   [`Junit::up_to_date`]);
//! - failed: `<failure message=… type=KIND>` holding the tail of its log;
//! - blocked: `<skipped message="blocked: REASON by X, Y"/>`.
//!
//! Shards are not test cases: a shard's failure fails its instance, which has an
//! instance-level event of its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::summary::write_atomically;
use super::{Event, EventKind, FailureKind, Sink};

/// Log lines included in a failure.
const LOG_TAIL_LINES: usize = 50;
/// At most this many bytes are read from the end of a log.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// Writes a JUnit XML report when the run ends.
pub struct Junit {
    path: PathBuf,
    root: PathBuf,
    cases: BTreeMap<String, Case>,
}

enum Outcome {
    Passed,
    Failed {
        kind: FailureKind,
        message: String,
        log: String,
    },
    Skipped(String),
}

struct Case {
    duration_ms: u64,
    outcome: Outcome,
}

impl Junit {
    /// A sink writing the report to `path`; logs are read relative to `root`.
    pub fn new(path: PathBuf, root: PathBuf) -> Junit {
        Junit {
            path,
            root,
            cases: BTreeMap::new(),
        }
    }

    /// Instances up to date before the build began: passed test cases, unless a later
    /// event says otherwise (an interrupted build blocks what it never reached).
    pub fn up_to_date<'n>(mut self, names: impl IntoIterator<Item = &'n str>) -> Junit {
        for name in names {
            self.case(name, 0, Outcome::Passed);
        }
        self
    }

    fn case(&mut self, name: &str, duration_ms: u64, outcome: Outcome) {
        self.cases.insert(
            name.to_owned(),
            Case {
                duration_ms,
                outcome,
            },
        );
    }

    /// The report, for a run of `duration_ms`.
    fn render(&self, duration_ms: u64) -> String {
        let count = |f: fn(&Outcome) -> bool| self.cases.values().filter(|c| f(&c.outcome)).count();
        let failures = count(|o| matches!(o, Outcome::Failed { .. }));
        let skipped = count(|o| matches!(o, Outcome::Skipped(_)));
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            x,
            "<testsuite name=\"orch\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" errors=\"0\" time=\"{}\">",
            self.cases.len(),
            seconds(duration_ms)
        );
        for (name, case) in &self.cases {
            let _ = write!(
                x,
                "  <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
                attr(phase_of(name)),
                attr(name),
                seconds(case.duration_ms)
            );
            match &case.outcome {
                Outcome::Passed => x.push_str("/>\n"),
                Outcome::Skipped(message) => {
                    let _ = writeln!(
                        x,
                        ">\n    <skipped message=\"{}\"/>\n  </testcase>",
                        attr(message)
                    );
                }
                Outcome::Failed { kind, message, log } => {
                    let _ = write!(
                        x,
                        ">\n    <failure message=\"{}\" type=\"{}\">",
                        attr(message),
                        attr(&kind_code(*kind))
                    );
                    x.push_str(&text(&self.failure_body(message, log)));
                    x.push_str("</failure>\n  </testcase>\n");
                }
            }
        }
        x.push_str("</testsuite>\n");
        x
    }

    /// The message, the log's path and its last lines.
    fn failure_body(&self, message: &str, log: &str) -> String {
        let mut body = format!("{message}\n");
        if log.is_empty() {
            return body;
        }
        match tail(&self.root.join(log), LOG_TAIL_LINES) {
            Ok((lines, earlier)) => {
                let _ = writeln!(body, "──── output ({log}) ────");
                if earlier {
                    body.push_str("… earlier lines are in the log file\n");
                }
                for l in lines {
                    body.push_str(&l);
                    body.push('\n');
                }
                if body.ends_with("────\n") {
                    body.push_str("(no output)\n");
                }
            }
            Err(e) => {
                let _ = writeln!(body, "(cannot read the log `{log}`: {e})");
            }
        }
        body
    }
}

impl Sink for Junit {
    fn event(&mut self, e: &Event) {
        let Some(name) = e.instance.as_deref() else {
            if let EventKind::RunCompleted { duration_ms, .. }
            | EventKind::RunFailed { duration_ms, .. } = &e.kind
            {
                let xml = self.render(*duration_ms);
                if let Err(err) = write_atomically(&self.path, xml.as_bytes()) {
                    crate::say!(
                        "warning: cannot write the JUnit report `{}`: {err}",
                        self.path.display()
                    );
                }
            }
            return;
        };
        match &e.kind {
            EventKind::InstanceCompleted {
                duration_ms,
                shard: None,
                ..
            } => self.case(name, *duration_ms, Outcome::Passed),
            // Restored from the cache: its result stands as if it had run, in no time.
            EventKind::InstanceSkipped { .. } | EventKind::InstanceCached { .. } => {
                self.case(name, 0, Outcome::Passed)
            }
            EventKind::InstanceFailed {
                kind,
                message,
                log,
                duration_ms,
                shard: None,
                ..
            } => self.case(
                name,
                *duration_ms,
                Outcome::Failed {
                    kind: *kind,
                    message: message.clone(),
                    log: log.clone(),
                },
            ),
            EventKind::InstanceBlocked {
                reason,
                blocked_by,
                shard: None,
            } => {
                let mut message = format!("blocked: {}", reason.code());
                if !blocked_by.is_empty() {
                    let _ = write!(message, " by {}", blocked_by.join(", "));
                }
                self.case(name, 0, Outcome::Skipped(message));
            }
            _ => {}
        }
    }
}

/// The phase of an instance: its name up to the matrix (`phase[a=x]` → `phase`).
fn phase_of(instance: &str) -> &str {
    let end = instance.find(['[', '#']).unwrap_or(instance.len());
    &instance[..end]
}

/// `1234` ms → `1.234`.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The public code of a failure kind (`exit`, `missing_output`…).
fn kind_code(kind: FailureKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}"),
    }
}

/// The last `n` lines of a file (reading at most [`LOG_TAIL_BYTES`] of it), and whether
/// earlier lines were left out.
fn tail(path: &Path, n: usize) -> std::io::Result<(Vec<String>, bool)> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    f.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    // A read that starts mid-file starts mid-line.
    let cut = start > 0;
    if cut && !lines.is_empty() {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    let lines = lines[skip..].iter().map(|l| (*l).to_owned()).collect();
    Ok((lines, cut || skip > 0))
}

/// Whether XML 1.0 allows `c` at all.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes character data; drops characters XML 1.0 cannot hold.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|c| xml_char(*c)) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // A bare CR would be read back as a newline.
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes an attribute value: also whitespace that attribute normalization would turn
/// into spaces.
fn attr(s: &str) -> String {
    text(s).replace('\n', "&#10;").replace('\t', "&#9;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{BlockReason, Counts, ShardRef};

    fn feed(sink: &mut Junit, kinds: Vec<(Option<&str>, EventKind)>) {
        for (n, (instance, kind)) in kinds.into_iter().enumerate() {
            sink.event(&Event {
                v: 1,
                seq: n as u64 + 1,
                ts: "2024-05-01T12:00:00.000Z".to_owned(),
                run_id: "r1".to_owned(),
                kind,
                instance: instance.map(str::to_owned),
            });
        }
    }

    fn failed(message: &str, log: &str, shard: Option<ShardRef>) -> EventKind {
        EventKind::InstanceFailed {
            kind: FailureKind::Exit,
            exit_code: Some(2),
            signal: None,
            message: message.to_owned(),
            log: log.to_owned(),
            duration_ms: 1500,
            shard,
        }
    }

    fn completed(ms: u64, shard: Option<ShardRef>) -> EventKind {
        EventKind::InstanceCompleted {
            action_key: "00".repeat(32),
            outputs: BTreeMap::new(),
            duration_ms: ms,
            shard,
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(text("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(text("x\u{1}\u{8}y\u{FFFE}\tz\n"), "xy\tz\n");
        assert_eq!(attr("a\nb\tc"), "a&#10;b&#9;c");
        assert_eq!(phase_of("t[lang=fr]"), "t");
        assert_eq!(phase_of("t[lang=fr]#3"), "t");
        assert_eq!(phase_of("plain"), "plain");
        assert_eq!(seconds(1500), "1.500");
        assert_eq!(seconds(7), "0.007");
        assert_eq!(kind_code(FailureKind::MissingOutput), "missing_output");
    }

    #[test]
    fn report() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let log: String = (1..=80)
            .map(|n| format!("line {n} <&>\u{1b}[0m\n"))
            .collect();
        std::fs::create_dir_all(root.join(".orch/logs/r1")).unwrap();
        std::fs::write(root.join(".orch/logs/r1/t_l=fr_#1.log"), log).unwrap();
        let path = root.join("reports/deep/junit.xml");
        // Up to date before the build, without events; `z` is then stopped by a failure.
        let mut j = Junit::new(path.clone(), root.clone()).up_to_date(["c", "z"]);
        let shard = Some(ShardRef {
            index: 1,
            count: 2,
            key: "b".to_owned(),
        });
        feed(
            &mut j,
            vec![
                (
                    Some("a"),
                    EventKind::InstanceSkipped {
                        reason: "up_to_date",
                        action_key: "00".repeat(32),
                        early_cutoff: false,
                    },
                ),
                (Some("b"), completed(2500, None)),
                (Some("t[l=fr]#0"), completed(3, shard.clone())),
                (
                    Some("t[l=fr]#1"),
                    failed("shard failed", ".orch/logs/r1/t_l=fr_#1.log", shard),
                ),
                (
                    Some("t[l=fr]"),
                    failed(
                        "1 of 2 shards failed; first: \"exit\" 2",
                        ".orch/logs/r1/t_l=fr_#1.log",
                        None,
                    ),
                ),
                (Some("m"), failed("merge failed", "", None)),
                (
                    Some("z"),
                    EventKind::InstanceBlocked {
                        reason: BlockReason::UpstreamFailed,
                        blocked_by: vec!["t[l=fr]".to_owned(), "m".to_owned()],
                        shard: None,
                    },
                ),
                (
                    Some("y"),
                    EventKind::InstanceBlocked {
                        reason: BlockReason::StoppedAfterFailure,
                        blocked_by: vec![],
                        shard: None,
                    },
                ),
            ],
        );
        assert!(!path.exists(), "written only at the end");
        feed(
            &mut j,
            vec![(
                None,
                EventKind::RunFailed {
                    cache: Default::default(),
                    counts: Counts::default(),
                    failed: vec![],
                    blocked: vec![],
                    interrupted: false,
                    duration_ms: 4321,
                },
            )],
        );
        let xml = std::fs::read_to_string(&path).unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"orch\" tests=\"7\" failures=\"2\" skipped=\"2\" errors=\"0\" time=\"4.321\">\n"), "{xml}");
        let cases: Vec<&str> = xml.lines().filter(|l| l.contains("<testcase")).collect();
        assert_eq!(
            cases,
            [
                "  <testcase classname=\"a\" name=\"a\" time=\"0.000\"/>",
                "  <testcase classname=\"b\" name=\"b\" time=\"2.500\"/>",
                "  <testcase classname=\"c\" name=\"c\" time=\"0.000\"/>",
                "  <testcase classname=\"m\" name=\"m\" time=\"1.500\">",
                "  <testcase classname=\"t\" name=\"t[l=fr]\" time=\"1.500\">",
                "  <testcase classname=\"y\" name=\"y\" time=\"0.000\">",
                "  <testcase classname=\"z\" name=\"z\" time=\"0.000\">",
            ]
        );
        assert!(xml.contains("<skipped message=\"blocked: upstream_failed by t[l=fr], m\"/>"));
        assert!(xml.contains("<skipped message=\"blocked: stopped_after_failure\"/>"));
        assert!(xml.contains(
            "<failure message=\"1 of 2 shards failed; first: &quot;exit&quot; 2\" type=\"exit\">"
        ));
        assert!(
            xml.contains(
                "<failure message=\"merge failed\" type=\"exit\">merge failed\n</failure>"
            )
        );
        // The last 50 lines of the log, escaped, without the escape character.
        assert!(!xml.contains("line 30 "));
        assert!(xml.contains("… earlier lines are in the log file\nline 31 &lt;&amp;&gt;[0m\n"));
        assert!(xml.contains("line 80 &lt;&amp;&gt;[0m\n</failure>"));
        assert!(!xml.contains('\u{1b}'));
        assert!(
            !xml.contains("shard failed"),
            "shard events are not test cases"
        );
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn tail_of_a_long_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.log");
        let line = "x".repeat(99);
        let text: String = (0..2000).map(|n| format!("{n:04}{line}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let (lines, earlier) = tail(&p, 50).unwrap();
        assert!(earlier);
        assert_eq!(lines.len(), 50);
        assert!(lines[0].starts_with("1950"));
        assert!(lines[49].starts_with("1999"));
        std::fs::write(&p, "one\ntwo\n").unwrap();
        assert_eq!(
            tail(&p, 50).unwrap(),
            (vec!["one".to_owned(), "two".to_owned()], false)
        );
    }
}
