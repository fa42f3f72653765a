//! `orch watch` against real file-system events: edits, new files and new directories
//! rebuild; orch's own writes, outputs and editor temporary files do not; a broken
//! Orchfile waits to be fixed; bursts and changes during a build give one build; Ctrl-C
//! leaves no process behind; `--restart`, `--every`, `--json`, and the polling fallback
//! at the inotify limit.
//!
//! Every wait is on a condition, bounded by [`LIMIT`]. Where a test proves that nothing
//! happens, it settles for a few debounce periods and then makes a real change as a
//! positive control: exactly one build must come of it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::test::{ORCH, Project, Test, sh_wait_until};

/// The longest any condition is waited for.
const LIMIT: Duration = Duration::from_secs(20);

/// Time to let pass to show that nothing happens: five default debounce periods.
const SETTLE: Duration = Duration::from_millis(1000);

/// One phase concatenating every file under `src/`.
const COPY: &str = r#"
[phase.copy]
run = "cat {inputs} </dev/null > {output}"
inputs = ["src/**"]
outputs = ["out/all.txt"]
"#;

/// A running `orch watch`, its output collected as it comes.
struct Watch {
    child: Option<Child>,
    project: Project,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut s = into.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    })
}

impl Watch {
    /// `orch watch ARGS` in a project set up by `t`.
    fn start(t: Test) -> Watch {
        let project = t.project().clone();
        let child = t.spawn();
        Watch::from_child(child, project)
    }

    fn from_child(mut child: Child, project: Project) -> Watch {
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Watch {
            child: Some(child),
            project,
            stdout,
            stderr,
            readers,
        }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until `cond` holds; panics with everything printed so far after [`LIMIT`].
    fn wait(&self, what: &str, mut cond: impl FnMut(&Watch) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            if start.elapsed() > LIMIT {
                panic!(
                    "timed out after {LIMIT:?} waiting for {what}\n--- stdout ---\n{}--- stderr ---\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until stdout holds `text` at least `n` times.
    fn wait_stdout(&self, text: &str, n: usize) {
        self.wait(&format!("{n}× {text:?} on stdout"), |w| {
            w.stdout().matches(text).count() >= n
        });
    }

    /// Waits until stderr holds `text`.
    fn wait_stderr(&self, text: &str) {
        self.wait(&format!("{text:?} on stderr"), |w| {
            w.stderr().contains(text)
        });
    }

    /// Waits until file `rel` holds exactly `content`.
    fn wait_file(&self, rel: &str, content: &str) {
        self.wait(&format!("{rel} to hold {content:?}"), |w| {
            std::fs::read_to_string(w.project.join(rel)).is_ok_and(|s| s == content)
        });
    }

    /// Waits until the watcher is idle after its first build.
    fn wait_watching(&self) {
        self.wait_stdout("(Ctrl-C to stop)", 1);
    }

    /// Builds that ran (one directory each under `.orch/runs`).
    fn runs(&self) -> usize {
        self.project.list(".orch/runs").len()
    }

    fn changed_lines(&self) -> Vec<String> {
        self.stdout()
            .lines()
            .filter(|l| l.contains(" changed: "))
            .map(str::to_owned)
            .collect()
    }

    /// Sends SIGINT and returns the exit status, once the output is read to its end.
    fn interrupt(mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > LIMIT {
                let _ = child.kill();
                panic!(
                    "orch watch did not exit after SIGINT\n--- stdout ---\n{}--- stderr ---\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        assert!(
            !self.stderr().contains("panicked"),
            "orch panicked:\n{}",
            self.stderr()
        );
        status.code().unwrap_or(-1)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // A failed test must not leave its watcher, or the commands of its build, running:
        // SIGINT stops both; SIGKILL only if that does not work.
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGINT);
            }
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Running `sleep` commands whose argument contains `marker` (not the shells that start
/// them, whose command lines hold the same text before they get that far).
fn sleeps_with(marker: &str) -> Vec<String> {
    processes_with(marker)
        .into_iter()
        .filter(|c| c.starts_with("sleep "))
        .collect()
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                found.push(cmd);
            }
        }
    }
    found
}

#[test]
fn an_input_edit_rebuilds_within_a_bounded_wait() {
    let w = Watch::start(
        Test::new()
            .orchfile(COPY)
            .write("src/a.txt", "one\n")
            .args(["watch"]),
    );
    w.wait_file("out/all.txt", "one\n");
    w.wait_watching();
    assert!(
        w.stdout()
            .contains("watch: watching 2 paths in 2 directories")
    );
    let saved = Instant::now();
    w.project.write("src/a.txt", "two\n");
    w.wait_file("out/all.txt", "two\n");
    // Far more than the debounce and the build, far less than the wait limit.
    assert!(
        saved.elapsed() < Duration::from_secs(5),
        "{:?}",
        saved.elapsed()
    );
    w.wait_stdout("(Ctrl-C to stop)", 2);
    assert_eq!(
        w.changed_lines(),
        ["watch: 1 changed: src/a.txt — rebuilding"]
    );
    assert_eq!(w.runs(), 2);
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn new_files_matching_a_glob_trigger_even_in_new_directories() {
    let orchfile = format!(
        "{COPY}\n[phase.conf]\nrun = \"cat data/conf/x.json > {{output}} 2>/dev/null; true\"\ninputs = [\"data/conf/x.json\"]\noutputs = [\"out/conf.json\"]\n"
    );
    let w = Watch::start(
        Test::new()
            .orchfile(&orchfile)
            .write("src/a.txt", "a\n")
            .args(["watch"]),
    );
    w.wait_watching();
    w.project.write("src/b.txt", "b\n");
    w.wait_file("out/all.txt", "a\nb\n");
    // Directories created after the start: their files are seen however fast they come.
    w.project.write("src/deep/er/c.txt", "c\n");
    w.wait_file("out/all.txt", "a\nb\nc\n");
    // A plain input whose directories do not exist yet.
    w.project.write("data/conf/x.json", "{}\n");
    w.wait_file("out/conf.json", "{}\n");
    w.wait_stdout("(Ctrl-C to stop)", 4);
    assert_eq!(
        w.changed_lines(),
        [
            "watch: 1 changed: src/b.txt — rebuilding",
            "watch: 1 changed: src/deep/er/c.txt — rebuilding",
            "watch: 1 changed: data/conf/x.json — rebuilding",
        ]
    );
    assert!(
        w.stdout()
            .contains("watch: watching 5 paths in 6 directories"),
        "{}",
        w.stdout()
    );
    assert_eq!(w.interrupt(), 130);
}

#[test]
#[ignore = "flaky under CI load: after the watched input directory is renamed away, the rebuild sometimes does not produce the empty output; cause not found yet"]
fn a_directory_moved_away_and_made_again_is_watched_anew() {
    let w = Watch::start(
        Test::new()
            .orchfile(COPY)
            .write("src/sub/a.txt", "one\n")
            .args(["watch"]),
    );
    w.wait_watching();
    std::fs::rename(w.project.join("src"), w.project.join("old")).unwrap();
    w.wait_file("out/all.txt", "");
    w.project.write("src/sub/a.txt", "two\n");
    w.wait_file("out/all.txt", "two\n");
    // The new directories' own watches work.
    w.wait_stdout("(Ctrl-C to stop)", 3);
    w.project.write("src/sub/a.txt", "three\n");
    w.wait_file("out/all.txt", "three\n");
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn outputs_state_editor_files_and_unchanged_content_do_not_trigger() {
    let w = Watch::start(
        Test::new()
            .orchfile(COPY)
            .write("src/a.txt", "one\n")
            .write("src/b.txt", "b\n")
            .args(["watch"]),
    );
    w.wait_watching();
    assert_eq!(w.runs(), 1);
    // orch's own kinds of writes, an editor's, and a file no input pattern matches.
    w.project.write("out/all.txt", "scribbled\n");
    w.project.write(".orch/junk.txt", "x\n");
    w.project.write("src/.a.txt.swp", "x\n");
    w.project.write("src/a.txt~", "x\n");
    w.project.write("src/4913", "");
    w.project.remove("src/4913");
    w.project.write("notes.md", "x\n");
    std::thread::sleep(SETTLE);
    assert_eq!(w.runs(), 1, "{}", w.stdout());
    assert!(w.changed_lines().is_empty(), "{}", w.stdout());
    // Positive control: a real edit gives exactly one build.
    w.project.write("src/a.txt", "two\n");
    w.wait_stdout("(Ctrl-C to stop)", 2);
    assert!(w.project.read("out/all.txt").contains("two\n"));
    assert_eq!(w.runs(), 2);
    assert_eq!(
        w.changed_lines(),
        ["watch: 1 changed: src/a.txt — rebuilding"]
    );
    // Rewriting the same content is an event, but nothing is stale: nothing is printed,
    // for a file first seen changing (the plan decides) as for a known one (its content).
    let before = w.stdout();
    w.project.write("src/b.txt", "b\n");
    std::thread::sleep(SETTLE);
    w.project.write("src/a.txt", "two\n");
    std::thread::sleep(SETTLE);
    assert_eq!(w.stdout(), before);
    assert_eq!(w.runs(), 2);
    // Positive control again.
    w.project.write("src/a.txt", "three\n");
    w.wait_stdout("(Ctrl-C to stop)", 3);
    assert_eq!(w.runs(), 3);
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn a_broken_orchfile_is_reported_and_watching_goes_on_until_it_is_fixed() {
    let w = Watch::start(
        Test::new()
            .orchfile(COPY)
            .write("src/a.txt", "one\n")
            .args(["watch"]),
    );
    w.wait_watching();
    w.project
        .write("Orchfile.toml", "[phase.copy\nrun = \"cat\"\n");
    w.wait_stdout("no build until the Orchfile is fixed", 1);
    // The diagnostic goes to stderr, read by a thread of its own: it may arrive later.
    w.wait_stderr("Orchfile.toml");
    // Still watching, but nothing builds while the Orchfile is broken.
    w.project.write("src/a.txt", "two\n");
    std::thread::sleep(SETTLE);
    assert_eq!(w.runs(), 1, "{}", w.stdout());
    // Fixed, with a new command and a new input directory.
    w.project.write(
        "Orchfile.toml",
        r#"
[phase.copy]
run = "sed 's/^/fixed:/' {inputs} > {output}"
inputs = ["src/**", "extra/*.txt"]
outputs = ["out/all.txt"]
"#,
    );
    w.wait_file("out/all.txt", "fixed:two\n");
    assert!(w.stdout().contains("watch: the Orchfile is valid again"));
    assert!(
        w.stdout()
            .contains("watch: 1 changed: Orchfile.toml — rebuilding")
    );
    // The new graph's inputs are watched.
    w.wait_stdout("(Ctrl-C to stop)", 2);
    w.project.write("extra/x.txt", "x\n");
    w.wait_file("out/all.txt", "fixed:x\nfixed:two\n");
    assert_eq!(w.runs(), 3);
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn a_burst_of_fifty_saves_gives_one_rebuild() {
    let w = Watch::start(
        Test::new()
            .orchfile(COPY)
            .write("src/a.txt", "start\n")
            .args(["watch"]),
    );
    w.wait_watching();
    for i in 0..50 {
        w.project.write("src/a.txt", &format!("{i}\n"));
        std::thread::sleep(Duration::from_millis(1));
    }
    w.wait_file("out/all.txt", "49\n");
    w.wait_stdout("(Ctrl-C to stop)", 2);
    std::thread::sleep(SETTLE);
    assert_eq!(w.runs(), 2, "{}", w.stdout());
    assert_eq!(w.changed_lines().len(), 1, "{}", w.stdout());
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn changes_during_a_build_give_exactly_one_follow_up_build() {
    // With "slow" in its input, the phase waits for `release` (no input) to appear.
    let orchfile = format!(
        "[phase.copy]\nrun = \"cat {{inputs}} > {{output}}; echo ran >> ran.log; if grep -q slow {{output}}; then touch started; {}; fi\"\ninputs = [\"src/**\"]\noutputs = [\"out/all.txt\"]\n",
        sh_wait_until("[ -e release ]", 20)
    );
    let w = Watch::start(
        Test::new()
            .orchfile(&orchfile)
            .write("src/a.txt", "one\n")
            .args(["watch"]),
    );
    w.wait_watching();
    w.project.write("src/a.txt", "slow\n");
    w.wait("the slow build to start", |w| w.project.exists("started"));
    // Three changes, each in a window of its own, while the build runs.
    for (i, f) in ["src/a.txt", "src/b.txt", "src/a.txt"].iter().enumerate() {
        w.project.write(f, &format!("slow {i}\n"));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(w.runs(), 2);
    w.project.write("release", "");
    w.wait_file("out/all.txt", "slow 2\nslow 1\n");
    w.wait_stdout("(Ctrl-C to stop)", 3);
    std::thread::sleep(SETTLE);
    assert_eq!(w.runs(), 3, "{}", w.stdout());
    assert_eq!(w.project.read("ran.log"), "ran\nran\nran\n");
    let changed = w.changed_lines();
    assert_eq!(changed.len(), 2, "{}", w.stdout());
    assert_eq!(
        changed[1],
        "watch: 2 changed: src/a.txt, src/b.txt — rebuilding"
    );
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn sigint_during_a_build_exits_130_and_leaves_no_process() {
    let w = Watch::start(
        Test::new()
            .orchfile(
                "[phase.copy]\nrun = \"cat {inputs} > {output}; if grep -q slow {output}; then sleep 61.7421 & sleep 62.7421; fi\"\ninputs = [\"src/*.txt\"]\noutputs = [\"out/all.txt\"]\n",
            )
            .write("src/a.txt", "one\n")
            .args(["watch"]),
    );
    w.wait_watching();
    w.project.write("src/a.txt", "slow\n");
    w.wait("both sleeps to run", |_| sleeps_with(".7421").len() >= 2);
    let start = Instant::now();
    assert_eq!(w.interrupt(), 130);
    assert!(start.elapsed() < Duration::from_secs(10));
    crate::test::wait_until("no child process to be left", LIMIT, || {
        processes_with(".7421").is_empty()
    });
}

#[test]
fn restart_stops_the_running_build_and_starts_again() {
    let w = Watch::start(
        Test::new()
            .orchfile(
                "[phase.copy]\nrun = \"cat {inputs} > {output}; if grep -q slow {output}; then sleep 60.8123; fi\"\ninputs = [\"src/*.txt\"]\noutputs = [\"out/all.txt\"]\n",
            )
            .write("src/a.txt", "one\n")
            .args(["watch", "--restart"]),
    );
    w.wait_watching();
    w.project.write("src/a.txt", "slow\n");
    w.wait("the slow command", |_| !sleeps_with("60.8123").is_empty());
    w.project.write("src/a.txt", "fast\n");
    // Well before the 60 seconds the stopped command would have taken.
    w.wait_file("out/all.txt", "fast\n");
    w.wait_stdout("(Ctrl-C to stop)", 2);
    assert!(
        w.stdout()
            .contains("watch: changes during the build; stopping it to start again"),
        "{}",
        w.stdout()
    );
    crate::test::wait_until("the stopped command to be gone", LIMIT, || {
        processes_with("60.8123").is_empty()
    });
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn json_adds_watch_changes_events_that_match_the_schema() {
    let w = Watch::start(
        Test::new()
            .orchfile(COPY)
            .write("src/a.txt", "one\n")
            .args(["watch", "--json"]),
    );
    w.wait_stderr("(Ctrl-C to stop)");
    w.project.write("src/a.txt", "two\n");
    w.wait_stdout("\"type\":\"run_completed\"", 2);
    let stdout = w.stdout();
    assert_eq!(w.interrupt(), 130);

    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/event.v1.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    for e in &events {
        let errors: Vec<String> = validator.iter_errors(e).map(|x| x.to_string()).collect();
        assert!(errors.is_empty(), "{e}\n{}", errors.join("\n"));
    }
    let changes: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "watch_changes")
        .collect();
    assert_eq!(changes.len(), 1, "{stdout}");
    let c = changes[0];
    assert_eq!(c["run_id"], "watch");
    assert_eq!(c["seq"], 1);
    assert_eq!(c["trigger"], "files");
    assert_eq!(c["paths"], serde_json::json!(["src/a.txt"]));
    // It comes right before the build it starts.
    let at = events.iter().position(|e| e["type"] == "watch_changes");
    assert_eq!(events[at.unwrap() + 1]["type"], "run_started");
}

#[test]
fn every_adds_timer_driven_builds() {
    let w = Watch::start(
        Test::new()
            .orchfile("[phase.poll]\nrun = \"echo tick >> ticks.log\"\nalways = true\n")
            .args(["watch", "--every", "300ms"]),
    );
    w.wait("three timer builds", |w| {
        std::fs::read_to_string(w.project.join("ticks.log")).is_ok_and(|s| s.lines().count() >= 4)
    });
    assert!(
        w.stdout()
            .contains("watch: timer (every 300ms) — rebuilding"),
        "{}",
        w.stdout()
    );
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn at_the_inotify_limit_it_says_so_and_polls() {
    // A user namespace of its own, whose inotify limit this test may lower.
    let probe = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            "echo 3 > /proc/sys/user/max_inotify_watches",
        ])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot lower the inotify limit in a user namespace here");
        return;
    }
    let t = Test::new().orchfile(&COPY.replace("src/**", "src/**/*.txt"));
    for d in ["a", "b", "c", "d/e"] {
        t.project()
            .write(&format!("src/{d}/x.txt"), &format!("{d}\n"));
    }
    let project = t.project().clone();
    let child = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            "echo 3 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"",
        ])
        .arg(ORCH)
        .arg("-C")
        .arg(project.path())
        .arg("watch")
        .env("NO_COLOR", "1")
        .env("ORCH_TIMINGS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let w = Watch::from_child(child, project);
    w.wait_stderr(
        "watch: the inotify watch limit is reached; raise it with `sudo sysctl fs.inotify.max_user_watches=524288`; polling instead",
    );
    w.wait_stdout("watch: polling 5 paths in 7 directories every 1s", 1);
    w.project.write("src/d/e/x.txt", "changed\n");
    w.wait_file("out/all.txt", "a\nb\nc\nchanged\n");
    w.wait_stdout("(Ctrl-C to stop)", 2);
    // Polling compares listings now and then, and may miss what happened between two:
    // each rebuild starts from a full snapshot (its build may reuse the one its check
    // took just before), as without a session.
    let (_, full) = w.snapshots();
    assert!(full >= 2, "{}", w.stderr());
    assert_eq!(w.interrupt(), 130);
}

/// Two phases, each concatenating the files under its own directory.
const TWO: &str = r#"
[phase.a]
run = "cat {inputs} </dev/null > {output}"
inputs = ["src/a/**"]
outputs = ["out/a.txt"]

[phase.b]
run = "cat {inputs} </dev/null > {output}"
inputs = ["src/b/**"]
outputs = ["out/b.txt"]
"#;

impl Watch {
    /// Waits for the `n`th status line, then checks that a full plan, read afresh from
    /// the files and the state, finds nothing to do: what the session kept between
    /// builds left nothing stale that a cold build would rerun.
    fn settled(&self, n: usize) {
        self.wait_stdout("(Ctrl-C to stop)", n);
        let out = Command::new(ORCH)
            .arg("-C")
            .arg(self.project.path())
            .arg("plan")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let plan = String::from_utf8_lossy(&out.stdout);
        assert!(
            plan.starts_with("nothing to do"),
            "after build {n}, a full plan would still run:\n{plan}\n--- watch stdout ---\n{}",
            self.stdout()
        );
    }

    /// How many snapshots of each kind the session took (from `ORCH_TIMINGS`).
    fn snapshots(&self) -> (usize, usize) {
        let err = self.stderr();
        (
            err.matches("orch timings: warm snapshot").count(),
            err.matches("orch timings: full snapshot").count(),
        )
    }
}

#[test]
fn a_rebuild_from_what_the_session_kept_is_as_correct_as_a_full_one() {
    let w = Watch::start(
        Test::new()
            .orchfile(TWO)
            .write("src/a/1.txt", "one\n")
            .write("src/b/1.txt", "b\n")
            .env("ORCH_TIMINGS", "1")
            .args(["watch"]),
    );
    w.wait_file("out/a.txt", "one\n");
    w.settled(1);
    // An edit reruns the instance that reads it, and only that one.
    w.project.write("src/a/1.txt", "uno\n");
    w.wait_file("out/a.txt", "uno\n");
    w.settled(2);
    assert!(
        w.stdout().contains("orch: 1 built, 1 up to date"),
        "{}",
        w.stdout()
    );
    // A new file matching the glob, in a new directory.
    w.project.write("src/a/sub/2.txt", "two\n");
    w.wait_file("out/a.txt", "uno\ntwo\n");
    w.settled(3);
    // A file whose save starts no build (an editor's backup) is an input all the same,
    // as a full walk finds it: the next build reads it.
    w.project.write("src/a/1.txt~", "backup\n");
    w.project.write("src/a/1.txt", "eins\n");
    w.wait_file("out/a.txt", "eins\nbackup\ntwo\n");
    w.settled(4);
    // Deleted inputs: the backup (again no build of its own) and a file.
    w.project.remove("src/a/1.txt~");
    w.project.remove("src/a/sub/2.txt");
    w.wait_file("out/a.txt", "eins\n");
    w.settled(5);
    // A directory of inputs made and then deleted whole.
    w.project.write("src/a/d/e/3.txt", "drei\n");
    w.wait_file("out/a.txt", "eins\ndrei\n");
    w.settled(6);
    std::fs::remove_dir_all(w.project.join("src/a/d")).unwrap();
    w.wait_file("out/a.txt", "eins\n");
    w.settled(7);
    // An output deleted by hand sends no event that starts a build; the next change
    // rebuilds it too.
    w.project.remove("out/b.txt");
    w.project.write("src/a/1.txt", "un\n");
    w.wait_file("out/a.txt", "un\n");
    w.wait_file("out/b.txt", "b\n");
    w.settled(8);
    let (warm, full) = w.snapshots();
    assert_eq!(
        full,
        1,
        "only the first build walks everything\n{}",
        w.stderr()
    );
    assert!(warm >= 7, "{}", w.stderr());
    // A configuration change: the project is loaded again and walked in full.
    w.project.write(
        "Orchfile.toml",
        &TWO.replace("cat {inputs}", "cat {inputs} {inputs}"),
    );
    w.wait_file("out/b.txt", "b\nb\n");
    w.settled(9);
    assert_eq!(w.snapshots().1, 2, "{}", w.stderr());
    assert_eq!(w.interrupt(), 130);
}

#[test]
fn align_builds_on_the_period_and_gives_commands_the_tick() {
    // `stamp` reads the tick (and says so in `env`); `steady` does not, and stays up
    // to date however many ticks pass.
    let orchfile = r#"
[phase.stamp]
run = "printf '%s\n' \"$ORCH_TICK\" > {output}; printf '%s\n' \"$ORCH_TICK\" >> stamps.log"
env = ["ORCH_TICK"]
outputs = ["out/stamp.txt"]

[phase.steady]
run = "echo steady >> steady.log; echo steady > {output}"
outputs = ["out/steady.txt"]
"#;
    let w = Watch::start(
        Test::new()
            .orchfile(orchfile)
            .args(["watch", "--every", "1s", "--align", "--json"]),
    );
    w.wait("two timer builds with a tick", |w| {
        w.stdout()
            .lines()
            .filter(|l| l.contains("\"watch_changes\"") && l.contains("\"tick\""))
            .count()
            >= 2
            && w.stdout().matches("\"type\":\"run_completed\"").count() >= 3
    });
    let stdout = w.stdout();
    let project = w.project.clone();
    assert_eq!(w.interrupt(), 130);
    let ticks: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "watch_changes")
        .map(|e| e["tick"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(ticks.len() >= 2, "{stdout}");
    for t in &ticks {
        // Whole seconds, UTC: `2026-11-28T18:15:42Z`.
        assert!(t.len() == 20 && t.ends_with('Z'), "{t}");
    }
    assert!(ticks.windows(2).all(|p| p[0] < p[1]), "{ticks:?}");
    // Every build of the session saw a tick: the first one too.
    let stamps = project.read("stamps.log");
    let stamps: Vec<&str> = stamps.lines().collect();
    assert!(stamps.len() >= 3, "{stamps:?}");
    assert!(stamps.iter().all(|s| s.len() == 20), "{stamps:?}");
    for t in &ticks {
        assert!(stamps.contains(&t.as_str()), "{t} not in {stamps:?}");
    }
    assert_eq!(project.read("steady.log"), "steady\n");
}
