//! The plain display (pipes, CI, stderr with `--json`): an instance counter whose total is
//! fixed when the build starts, shards as progress of their instance, words that say
//! what happened, the FAILED block, still-running lines, counts that add up, and colour
//! only when asked.

use std::process::Stdio;
use std::time::Duration;

use crate::test::{Test, sh_wait_until, wait_until};

/// `prep`, a sharded `t` with two matrix instances of three shards each, and `last`.
const SHARDED: &str = r#"[orch]
format = 1

[phase.prep]
run = "echo prep > {output}"
outputs = ["out/prep.txt"]

[phase.t]
needs = ["prep"]
matrix = { lang = ["fr", "de"] }
shard = { strategy = "files", source = "src/*.txt" }
run = "cat {shard.input} > {shard.output}"
outputs = ["out/t-{matrix.lang}.txt"]

[phase.last]
needs = ["t"]
run = "cat {needs.t.outputs} > {output}"
outputs = ["out/last.txt"]
"#;

fn sharded() -> Test {
    Test::new()
        .orchfile(SHARDED)
        .write("src/1.txt", "one\n")
        .write("src/2.txt", "two\n")
        .write("src/3.txt", "three\n")
}

/// The `(done, total)` of every counted line, in order.
fn counters(stdout: &str) -> Vec<(usize, usize)> {
    stdout
        .lines()
        .filter_map(|l| {
            let inner = l.strip_prefix('[')?.split_once(']')?.0;
            let (done, total) = inner.split_once('/')?;
            Some((done.parse().ok()?, total.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_total_counts_instances_and_is_the_same_on_every_rerun() {
    let first = sharded().args(["build", "-j", "2"]).run();
    // prep, t[lang=de], t[lang=fr], last: shards are not instances.
    let expected: Vec<(usize, usize)> = (1..=4).map(|k| (k, 4)).collect();
    assert_eq!(counters(&first.stdout), expected, "{}", first.stdout);
    // A shard's line has no counter; it says how far its instance is.
    let shard_lines: Vec<&str> = first.stdout.lines().filter(|l| l.contains('#')).collect();
    assert_eq!(shard_lines.len(), 6, "{}", first.stdout);
    for l in &shard_lines {
        assert!(l.starts_with("      t[lang="), "{l}");
        assert!(l.contains(" ok ") && l.ends_with(" shards)"), "{l}");
    }
    assert!(first.stdout.contains("(3/3 shards)\n"), "{}", first.stdout);
    assert!(
        first.stdout.contains("] t[lang=fr] ok "),
        "{}",
        first.stdout
    );
    assert!(first.stdout.contains(" (3 shards)\n"), "{}", first.stdout);

    // The same state built again from scratch: the same counters.
    for _ in 0..2 {
        let again = first.again().args(["build", "-j", "2", "--force"]).run();
        assert_eq!(counters(&again.stdout), expected, "{}", again.stdout);
    }
    // One shard stale: the instance still counts once, its line says 1 of 3 shards ran.
    first.write("src/2.txt", "TWO\n");
    let one = first.again().args(["build", "-j", "1"]).run();
    let totals: Vec<usize> = counters(&one.stdout).iter().map(|c| c.1).collect();
    assert!(totals.iter().all(|t| *t == 3), "{}", one.stdout);
    assert!(
        one.stdout.contains(" (1 of 3 shards run)\n"),
        "{}",
        one.stdout
    );
    assert!(one.stdout.contains(" ok ") && one.stdout.contains("(1/1 shard)\n"));
}

const CHAIN: &str = r#"[orch]
format = 1

[phase.a]
run = "echo boo''m >&2; exit 3"
outputs = ["out/a.txt"]

[phase.b]
needs = ["a"]
run = "touch {output}"
outputs = ["out/b.txt"]

[phase.c]
needs = ["b"]
run = "touch {output}"
outputs = ["out/c.txt"]
"#;

#[test]
fn a_blocked_chain_names_the_failure_at_its_root() {
    let out = Test::new()
        .orchfile(CHAIN)
        .args(["build", "-k"])
        .expect_status(1)
        .stdout_contains("\n[-] b blocked by a (failed)\n")
        .stdout_contains("\n[-] c blocked by a (failed)\n")
        .stdout_lacks("blocked by b")
        .run();
    assert!(
        out.stdout
            .contains("orch: build failed: 1 failed, 2 blocked, 0 built, 0 up to date in "),
        "{}",
        out.stdout
    );
}

#[test]
fn a_failure_block_shows_the_expanded_command_then_the_output() {
    Test::new()
        .orchfile(
            r#"[orch]
format = 1

[phase.x]
run = "echo making {output}; echo boo''m >&2; exit 3"
outputs = ["out/x.txt"]
"#,
        )
        .args(["build", "--run-id", "r"])
        .expect_status(1)
        .stdout_contains("] x FAILED (exit 3) ")
        .stdout_contains(
            ": the command exited with status 3\n\
             $ echo making out/x.txt; echo boo''m >&2; exit 3\n\
             ──── output of x (.orch/logs/r/x.log) ────\nmaking out/x.txt\nboom\n────\n",
        )
        .run();
}

#[test]
fn verbose_does_not_print_a_failure_output_twice() {
    let out = Test::new()
        .orchfile(CHAIN)
        .args(["-v", "build", "--run-id", "r"])
        .expect_status(1)
        .stdout_contains("a | boom\n")
        .stdout_contains("──── output of a is above (.orch/logs/r/a.log) ────\n")
        .run();
    assert_eq!(out.stdout.matches("boom").count(), 1, "{}", out.stdout);
    // The log keeps it all the same.
    assert_eq!(out.read(".orch/logs/r/a.log"), "boom\n");
}

#[test]
fn an_interrupted_build_says_what_never_started() {
    // `a` interrupts orch itself; `b` and `c` wait on it.
    let orchfile = CHAIN.replace("echo boo''m >&2; exit 3", "kill -INT $PPID; sleep 5");
    Test::new()
        .orchfile(&orchfile)
        .args(["build"])
        .expect_status(130)
        .stdout_contains("[-] a interrupted: stopped before it finished\n")
        .stdout_contains("[-] b not started (interrupted)\n")
        .stdout_contains("[-] c not started (interrupted)\n")
        .stdout_contains("orch: interrupted: 0 failed, 3 blocked, 0 built, 0 up to date in ")
        .run();
}

#[test]
fn long_commands_say_they_started_and_are_still_running() {
    let t = Test::new();
    let log = t.project().join("display.txt");
    // The command ends once the display has said it is still running.
    let wait = sh_wait_until("grep -q 'slow still running' display.txt", 30);
    let t = t
        .orchfile(&format!(
            "[orch]\nformat = 1\n\n[phase.slow]\nrun = \"{wait}; touch {{output}}\"\noutputs = [\"out/slow.txt\"]\n"
        ))
        .env("ORCH_PROGRESS_INTERVAL", "0.1")
        .args(["build"]);
    let file = std::fs::File::create(&log).unwrap();
    let mut child = t
        .command()
        .stdout(Stdio::from(file))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until("orch to finish", Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let started = lines
        .iter()
        .position(|l| l.starts_with("      slow started ") && l.ends_with(" ago"))
        .unwrap_or_else(|| panic!("no start line:\n{text}"));
    let still = lines
        .iter()
        .position(|l| l.starts_with("      slow still running ("))
        .unwrap_or_else(|| panic!("no still-running line:\n{text}"));
    assert!(started < still, "{text}");
    assert!(text.contains("\n[1/1] slow ok "), "{text}");
}

#[test]
fn a_bad_progress_interval_is_a_warning() {
    Test::new()
        .orchfile("[orch]\nformat = 1\n\n[phase.a]\nrun = \"true\"\n")
        .env("ORCH_PROGRESS_INTERVAL", "soon")
        .args(["build"])
        .stderr_contains("warning: ORCH_PROGRESS_INTERVAL=soon is not a number of seconds")
        .run();
}

const THREE: &str = r#"[orch]
format = 1

[phase.a]
run = "echo a > {output}"
outputs = ["out/a.txt"]

[phase.b]
run = "echo b > {output}"
outputs = ["out/b.txt"]

[phase.bad]
run = "echo bad > {output}"
outputs = ["out/bad.txt"]
"#;

#[test]
fn cache_restores_count_on_a_failed_build_everywhere() {
    let first = Test::new().orchfile(THREE).args(["build"]).run();
    std::fs::remove_dir_all(first.join("out")).unwrap();
    first.write(
        "Orchfile.toml",
        &THREE.replace("echo bad > {output}", "exit 1"),
    );
    let out = first
        .again()
        .args(["build", "-k", "--run-id", "r", "--junit", "junit.xml"])
        .expect_status(1)
        .stdout_contains("] a restored from the local cache (")
        .stdout_contains(
            "orch: build failed: 1 failed, 0 blocked, 0 built, 2 restored from cache, 0 up to date in ",
        )
        .run();
    let xml = out.read("junit.xml");
    assert!(
        xml.contains("tests=\"3\" failures=\"1\" skipped=\"0\""),
        "{xml}"
    );
    assert!(xml.contains("name=\"a\" time=\"0.000\"/>"), "{xml}");
    let runs = out.again().args(["runs"]).run();
    let row: Vec<&str> = runs
        .stdout
        .lines()
        .find(|l| l.starts_with("r "))
        .unwrap_or_else(|| panic!("{}", runs.stdout))
        .split_whitespace()
        .collect();
    // RUN STARTED DURATION STATUS SUCCEEDED CACHED UP-TO-DATE FAILED BLOCKED
    assert_eq!(
        row[3..],
        ["failed", "0", "2", "0", "1", "0"],
        "{}",
        runs.stdout
    );
    assert!(runs.stdout.starts_with("RUN "), "{}", runs.stdout);
    assert!(runs.stdout.lines().next().unwrap().contains(" CACHED "));
}

#[test]
fn json_sends_events_to_stdout_and_the_plain_display_to_stderr() {
    let out = Test::new()
        .orchfile(THREE)
        .args(["build", "--json", "-j", "1"])
        .stderr_contains("] a ok ")
        .stderr_contains("[3/3] ")
        .stderr_contains("orch: 3 built, 0 up to date in ")
        .run();
    for line in out.stdout.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(event["v"], 1, "{line}");
    }
    assert!(!out.stdout.contains("orch:"), "{}", out.stdout);
}

#[test]
fn plain_lines_are_coloured_only_when_asked() {
    let failing = THREE.replace("echo bad > {output}", "exit 1");
    let plain = Test::new()
        .orchfile(&failing)
        .args(["build", "-k"])
        .expect_status(1)
        .run();
    assert!(!plain.stdout.contains('\x1b'), "{}", plain.stdout);
    std::fs::remove_dir_all(plain.join("out")).unwrap();
    let always = plain
        .again()
        .args(["--color", "always", "build", "-k", "--no-cache"])
        .expect_status(1)
        .stdout_contains(" a \x1b[32mok\x1b[0m ")
        .stdout_contains(" bad \x1b[1;31mFAILED\x1b[0m (exit 1) ")
        .run();
    std::fs::remove_dir_all(always.join("out")).unwrap();
    always
        .again()
        .env_remove("NO_COLOR")
        .env("CLICOLOR_FORCE", "1")
        .args(["build", "-k", "--no-cache"])
        .expect_status(1)
        .stdout_contains(" a \x1b[32mok\x1b[0m ")
        .run();
    always
        .again()
        .env_remove("NO_COLOR")
        .env("CLICOLOR_FORCE", "1")
        .args(["--color", "never", "build", "-k"])
        .expect_status(1)
        .stdout_lacks("\x1b[")
        .run();
}

#[test]
fn plurals_are_right() {
    let out = Test::new()
        .orchfile(THREE)
        .write("src/1.txt", "x\n")
        .args(["build", "a"])
        .run();
    out.again()
        .args(["-v", "build", "a", "b"])
        .stdout_contains("1 instance up to date before the build")
        .run();
    let one = Test::new()
        .orchfile(
            "[orch]\nformat = 1\n\n[phase.t]\nshard = { strategy = \"files\", source = \"src/*.txt\" }\nrun = \"cat {shard.input} > {shard.output}\"\noutputs = [\"out/t.txt\"]\n",
        )
        .write("src/1.txt", "x\n")
        .args(["-v", "build"])
        .stdout_contains("t: 1 shard (files), 1 to run, 0 reused\n")
        .stdout_contains(" (1/1 shard)\n")
        .stdout_contains("] t ok ")
        .run();
    assert!(one.stdout.contains(" (1 shard)\n"), "{}", one.stdout);
}
