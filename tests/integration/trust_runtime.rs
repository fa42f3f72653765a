//! What orch does when the world around a build misbehaves: hang-up and termination
//! signals, huge or binary command output, a damaged state database, and a `.orch/` that
//! must not (or cannot) be written.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::test::*;

// ---------------------------------------------------------------------------------------
// Signals

/// Whether a process with this pid exists (zombies included).
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Waits for `child` to exit, at most `limit`; kills it and panics after that.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for orch") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("orch did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A build whose command writes its pid and then waits; `sig` is sent to orch once the
/// pid is known. Returns orch's exit status and the command's pid.
fn signal_a_build(sig: libc::c_int, args: &[&str]) -> (Project, i32, i32) {
    let t = Test::new()
        .orchfile("[phase.wait]\nrun = \"echo $$ > pid.tmp && mv pid.tmp pid && exec sleep 30\"\n")
        .args(args.iter().copied());
    let project = t.project().clone();
    let mut child = t
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn orch");
    wait_until(
        "the command to write its pid",
        Duration::from_secs(20),
        || project.exists("pid"),
    );
    let pid: i32 = project.read("pid").trim().parse().expect("a pid");
    assert!(alive(pid), "the command runs");
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
    let status = wait_exit(&mut child, Duration::from_secs(20));
    (project, status.code().unwrap_or(-1), pid)
}

#[test]
fn sighup_stops_the_commands_and_exits_129() {
    let (project, status, pid) = signal_a_build(libc::SIGHUP, &["build", "--run-id", "hup"]);
    assert_eq!(status, 129, "SIGHUP exits 128 + 1");
    wait_until("the command to be gone", Duration::from_secs(10), || {
        !alive(pid)
    });
    let events = project.events("hup");
    let last = events.last().expect("events were written");
    assert_eq!(last["type"], "run_failed");
    assert_eq!(last["interrupted"], true);
}

#[test]
fn sigterm_stops_the_commands_and_exits_143() {
    let (_, status, pid) = signal_a_build(libc::SIGTERM, &["build"]);
    assert_eq!(status, 143, "SIGTERM exits 128 + 15");
    wait_until("the command to be gone", Duration::from_secs(10), || {
        !alive(pid)
    });
}

#[test]
fn sighup_stops_watch_and_its_build() {
    let (_, status, pid) = signal_a_build(libc::SIGHUP, &["watch"]);
    assert_eq!(status, 129);
    wait_until("the command to be gone", Duration::from_secs(10), || {
        !alive(pid)
    });
}

// ---------------------------------------------------------------------------------------
// Command output

/// GNU time, which reports the peak resident set size of the program it runs.
const TIME: &str = "/usr/bin/time";

/// Runs `t` to its end under [`TIME`], stdout to `stdout`; returns orch's exit status and
/// its peak resident set size in KiB. Measured in a process of its own: a child forked
/// from this (large) test process would inherit the parent's peak across `exec`.
fn run_measured(t: &Test, stdout: &Path) -> (i32, u64) {
    let cmd = t.command();
    let report = stdout.with_extension("rss");
    let status = Command::new(TIME)
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(stdout).expect("create the stdout file"))
        .stderr(Stdio::null())
        .status()
        .expect("run orch under time");
    let text = std::fs::read_to_string(&report).expect("read the time report");
    let kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {text:?}"));
    (status.code().unwrap_or(-1), kib)
}

#[test]
fn a_failing_command_printing_200_mb_keeps_orch_small_and_the_log_whole() {
    let t = Test::new()
        .orchfile(
            "[phase.loud]\nrun = \"head -c 200000000 /dev/zero | tr '\\\\0' x; echo; echo last line; exit 1\"\n",
        )
        .args(["build", "--run-id", "loud"]);
    if !Path::new(TIME).is_file() {
        eprintln!("skipped: {TIME} is needed to measure orch's peak memory");
        return;
    }
    let project = t.project().clone();
    let shown = project.join("stdout.txt");
    let (status, peak_kib) = run_measured(&t, &shown);
    assert_eq!(status, 1);
    assert!(
        peak_kib < 100 * 1024,
        "orch peaked at {peak_kib} KiB for a 200 MB output"
    );
    let log = project.join(".orch/logs/loud/loud.log");
    let len = std::fs::metadata(&log).expect("the log exists").len();
    assert_eq!(
        len,
        200_000_000 + 1 + "last line\n".len() as u64,
        "the log holds every byte"
    );
    let mut text = String::new();
    std::fs::File::open(&shown)
        .expect("open stdout.txt")
        .take(2_000_000)
        .read_to_string(&mut text)
        .expect("read stdout.txt");
    assert!(
        std::fs::metadata(&shown).expect("stdout.txt").len() < 1_000_000,
        "the failure block is bounded"
    );
    assert!(text.contains("last line\n────\n"), "{}", tail(&text));
    assert!(text.contains(".orch/logs/loud/loud.log"), "{}", tail(&text));
    assert!(text.contains("earlier output"), "{}", tail(&text));
}

fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(2000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[test]
fn output_that_is_not_utf8_is_shown_lossily() {
    Test::new()
        .orchfile("[phase.bin]\nrun = \"printf 'bad \\\\377 byte\\\\n'; exit 1\"\n")
        .args(["build", "--run-id", "b"])
        .expect_status(1)
        .stdout_contains("bad \u{FFFD} byte\n")
        .stdout_lacks("(no output)")
        .run();
}

#[test]
fn verbose_output_that_is_not_utf8_is_logged_whole_and_streamed_lossily() {
    let out = Test::new()
        .orchfile("[phase.bin]\nrun = \"printf 'bad \\\\377 byte\\\\nnext\\\\n'\"\n")
        .args(["-v", "build", "--run-id", "v"])
        .stdout_contains("bin | bad \u{FFFD} byte\n")
        .stdout_contains("bin | next\n")
        .run();
    let log = std::fs::read(out.join(".orch/logs/v/bin.log")).expect("read the log");
    assert_eq!(log, b"bad \xff byte\nnext\n");
}

// ---------------------------------------------------------------------------------------
// A damaged state database

const STATEFUL: &str = r#"
[phase.pages]
shard = { strategy = "files", source = "texts/*.txt" }
run = "tr a-z A-Z < {shard.input} > {shard.output}"
outputs = ["out/pages.txt"]

[phase.count]
needs = ["pages"]
run = "wc -l < {needs.pages.outputs} > {output}"
outputs = ["out/count.txt"]
"#;

fn built_stateful() -> Output {
    Test::new()
        .orchfile(STATEFUL)
        .write("texts/a.txt", "a\n")
        .write("texts/b.txt", "b\n")
        .run()
}

/// Runs `sql` on the project's state database, with constraints off so any row can be
/// written.
fn damage(project: &Project, sql: &str) {
    let conn = rusqlite::Connection::open(project.join(".orch/state.db")).expect("open state.db");
    conn.execute_batch("PRAGMA ignore_check_constraints = 1")
        .expect("constraints off");
    let changed = conn
        .execute(sql, [])
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert!(changed > 0, "{sql} changed no row");
}

/// Every way a row can be unreadable, in every table orch reads.
const DAMAGE: &[&str] = &[
    "UPDATE instances SET success_action_key = x'0102' WHERE success_action_key IS NOT NULL",
    "UPDATE instances SET last_status = 'maybe'",
    "UPDATE instances SET success_run_id = NULL WHERE success_run_id IS NOT NULL",
    "UPDATE instances SET last_finished_at_ns = 'soon'",
    "UPDATE digests SET digest = x'00112233'",
    "UPDATE digests SET digest = 'ab12'",
    "UPDATE digests SET size = 'large'",
    "UPDATE shard_results SET output_digest = x'00'",
    "UPDATE shard_results SET shard_key = x'01' WHERE shard_key = (SELECT min(shard_key) FROM shard_results)",
    "UPDATE runs SET targets = 'not json'",
    "UPDATE runs SET status = x'07'",
    // Text that is not UTF-8 shows only when the row is read.
    "UPDATE instances SET last_run_id = CAST(x'ff61' AS TEXT)",
    "UPDATE digests SET path = CAST(x'ff62' AS TEXT) WHERE path = 'texts/a.txt'",
];

/// Damage only the reading commands see: a build reads no output lineage (it only
/// overwrites it) and no old run, so it need not look.
const HISTORY_DAMAGE: &[&str] = &[
    "UPDATE outputs SET digest = x'00'",
    "UPDATE outputs SET action_key = x'0000'",
    "UPDATE outputs SET recorded_at_ns = 1.5",
    "UPDATE runs SET plan_digest = CAST(x'ff63' AS TEXT)",
    "UPDATE outputs SET built_from = CAST(x'ff64' AS TEXT)",
];

#[test]
fn an_unreadable_row_moves_the_database_aside_and_everything_rebuilds() {
    for sql in DAMAGE {
        eprintln!("damage: {sql}");
        let built = built_stateful();
        damage(&built, sql);
        let again = built
            .again()
            .args(["build", "--run-id", "after"])
            .stderr_contains("warning:")
            .stderr_contains("moved it to")
            .run();
        // Nothing counts as up to date any more: each instance runs or is restored from
        // the cache (which verifies what it restores).
        let events = again.events("after");
        assert!(skipped(&events).is_empty(), "{sql}: {events:#?}");
        let redone = ran(&events).len() + instances_of(&events, "instance_cached").len();
        assert_eq!(redone, 2, "{sql}: {events:#?}");
        let third = again.again().args(["build", "--run-id", "third"]).run();
        assert!(
            ran(&third.events("third")).is_empty(),
            "{sql}: the second build after recovery is a no-op"
        );
        assert!(
            !third.stderr.contains("warning"),
            "{sql}: warned once: {}",
            third.stderr
        );
    }
}

#[test]
fn reading_commands_survive_an_unreadable_row() {
    for sql in DAMAGE.iter().chain(HISTORY_DAMAGE) {
        for args in [
            &["status"][..],
            &["plan"],
            &["runs"],
            &["log"],
            &["show", "out/count.txt"],
            &["explain", "count"],
        ] {
            let built = built_stateful();
            damage(&built, sql);
            let out = built
                .again()
                .args(args.iter().copied())
                .command()
                .output()
                .expect("run orch");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.contains("orch::store") && !stderr.contains("panicked"),
                "{sql}: {args:?}: {stderr}"
            );
            assert!(
                matches!(out.status.code(), Some(0..=2)),
                "{sql}: {args:?}: {stderr}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Dry runs and a read-only `.orch/`

/// Every file under `dir` with its bytes, sorted by path.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.expect("walk");
        if entry.file_type().is_file() {
            let rel = entry
                .path()
                .strip_prefix(dir)
                .expect("inside")
                .display()
                .to_string();
            out.push((rel, std::fs::read(entry.path()).expect("read")));
        }
    }
    out
}

#[test]
fn a_dry_run_writes_nothing() {
    let t = diamond();
    let project = t.project().clone();
    t.args(["build", "--dry-run"])
        .stdout_contains("would run 4")
        .run();
    assert!(
        !project.exists(".orch"),
        "a dry run on a fresh project creates no .orch/"
    );

    project.test().run();
    // A changed Orchfile, which a real build would remember in `.orch/project.cache`.
    project.write("Orchfile.toml", &format!("{DIAMOND}\n# edited\n"));
    let before = tree(&project.join(".orch"));
    project
        .test()
        .args(["build", "--dry-run"])
        .stdout_contains("nothing to do")
        .run();
    let after = tree(&project.join(".orch"));
    let names = |t: &[(String, Vec<u8>)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&before), names(&after));
    assert!(before == after, "a dry run leaves .orch/ byte-identical");
}

/// Runs orch with `args` in `project` with `.orch/` bind-mounted read-only, in a mount
/// namespace of its own; None (with the reason printed) when that cannot be set up.
fn read_only_orch(project: &Project, args: &str) -> Option<std::process::Output> {
    let probe = Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: mount namespaces are not available (`unshare -m` failed)");
        return None;
    }
    let script = format!(
        "mount --bind .orch .orch && mount -o remount,bind,ro .orch && touch .orch/probe 2>/dev/null && exit 97; \"{ORCH}\" {args}"
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    assert_ne!(
        out.status.code(),
        Some(97),
        "the bind mount is not read-only"
    );
    Some(out)
}

#[test]
fn plan_and_status_work_on_a_read_only_orch_dir() {
    let built = built_stateful();
    built.write("texts/c.txt", "c\n");
    let before = tree(&built.join(".orch"));
    for (args, expect) in [
        ("plan", "would run"),
        ("status", "stale"),
        ("plan --json", "\"instances\""),
        ("status --json", "\"instances\""),
        ("build --dry-run", "would run"),
    ] {
        let Some(out) = read_only_orch(&built, args) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args}:\n{stdout}\n{stderr}");
        assert!(stdout.contains(expect), "{args}:\n{stdout}\n{stderr}");
        assert!(stdout.contains("pages"), "{args}:\n{stdout}");
    }
    assert!(tree(&built.join(".orch")) == before, ".orch/ is unchanged");
}

// ---------------------------------------------------------------------------------------
// The event schema

#[test]
fn a_failure_of_kind_error_matches_the_event_schema() {
    let out = Test::new()
        .orchfile("[phase.bad]\nrun = \"exit 3\"\n")
        .args(["build", "--run-id", "e"])
        .expect_status(1)
        .run();
    let mut failed = event(&out.events("e"), "instance_failed", "bad").clone();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/event.v1.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the schema"))
            .expect("the schema is JSON");
    let validator = jsonschema::options()
        .build(&schema)
        .expect("the schema compiles");
    assert!(validator.is_valid(&failed), "{failed:#}");
    failed["kind"] = json!("error");
    failed
        .as_object_mut()
        .expect("an object")
        .remove("exit_code");
    assert!(
        validator.is_valid(&failed),
        "kind `error` is in the schema: {failed:#}"
    );
    // The run summary lists the same kinds as the events it is made of.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/run-summary.v1.json");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the summary schema"))
            .expect("the summary schema is JSON");
    assert_eq!(
        summary["$defs"]["failed"]["properties"]["kind"]["enum"],
        schema["$defs"]["failure_kind"]["enum"]
    );
}

#[test]
fn a_run_id_row_naming_a_path_never_makes_gc_or_log_touch_it() {
    let victim = tempfile::Builder::new()
        .prefix("orch-victim-")
        .tempdir()
        .expect("temporary directory");
    std::fs::create_dir(victim.path().join("victim")).unwrap();
    std::fs::write(victim.path().join("victim/f"), "precious").unwrap();
    std::fs::write(victim.path().join("victim/events.jsonl"), "{}\n").unwrap();
    let absolute = victim.path().join("victim").display().to_string();
    let relative = format!("../../../../../../../../..{absolute}");
    for id in [absolute.as_str(), relative.as_str()] {
        let out = built_stateful();
        damage(
            &out.project,
            &format!(
                "INSERT INTO runs (run_id, plan_digest, targets, started_at_ns) VALUES ('{id}', 'x', '[]', 1)"
            ),
        );
        // Reading it, then collecting: whatever each says, neither touches the path.
        let _ = out.again().args(["log", "--json"]).command().output();
        let _ = out.again().args(["gc", "--keep", "1"]).command().output();
        assert_eq!(
            std::fs::read_to_string(victim.path().join("victim/f")).unwrap(),
            "precious",
            "run id {id}"
        );
    }
}

#[test]
fn a_closed_stderr_never_turns_a_diagnostic_into_a_panic() {
    let t = Test::new().orchfile("[phase.a]\nrun = 1\n");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let status = t
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(writer))
        .status()
        .expect("run orch");
    assert_eq!(status.code(), Some(2), "not 101 (a panic)");
}

#[test]
fn under_nohup_a_hangup_does_not_stop_the_build() {
    use std::os::unix::process::CommandExt as _;
    let t = Test::new()
        .orchfile("[phase.wait]\nrun = \"touch started; while [ ! -f go ]; do sleep 0.01; done; echo done > {output}\"\noutputs = [\"out.txt\"]\n");
    let project = t.project().clone();
    let mut cmd = t.command();
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: only async-signal-safe signal(2) between fork and exec, as nohup does.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn orch");
    wait_until("the command to start", Duration::from_secs(20), || {
        project.exists("started")
    });
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGHUP);
    }
    project.write("go", "");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    assert_eq!(project.read("out.txt"), "done\n");
}
