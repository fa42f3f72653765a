//! `orch build` on a real pseudo-terminal: util-linux `script` runs the binary with a pty
//! as its stdout, so orch sees a terminal exactly as in an interactive shell.
//!
//! On a terminal (with `TERM` set, not `dumb`, and `CI` unset) the build shows the live
//! display (`src/events/progress.rs`): bars drawn with cursor movement, failures and their
//! logs printed above them, and the plain display's summary line at the end. Everywhere
//! else, and with `-q`, no bar is drawn.

#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::{Command, Stdio};

/// What a run on the pty wrote, and its exit status.
struct Pty {
    /// Everything written to the terminal, escape sequences included.
    raw: String,
    /// The same with escape sequences removed, and `\r\n` and `\r` turned into `\n`.
    text: String,
    code: i32,
}

/// Runs `orch ARGS -C DIR` with a pseudo-terminal as stdout and stderr.
fn on_pty(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Pty {
    on_pty_of(dir, args, env, None)
}

/// [`on_pty`] on a terminal `cols` columns wide (set with `stty`), when given.
fn on_pty_of(dir: &Path, args: &[&str], env: &[(&str, &str)], cols: Option<u16>) -> Pty {
    let mut words = vec![env!("CARGO_BIN_EXE_orch").to_owned()];
    words.extend(args.iter().map(|a| a.to_string()));
    words.push("-C".to_owned());
    words.push(dir.to_string_lossy().into_owned());
    let mut line = shell_words::join(&words);
    if let Some(cols) = cols {
        line = format!("stty cols {cols} rows 30 && {line}");
    }
    let mut cmd = Command::new("script");
    // -q: no banner; -f: flush as written; -e: orch's exit status; -c: the command.
    cmd.args(["-qfec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .env_remove("CI")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .env("SHELL", "/bin/sh");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .expect("util-linux `script` runs commands on a pseudo-terminal; is it installed?");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = strip_ansi(&raw).replace("\r\n", "\n").replace('\r', "\n");
    Pty {
        raw,
        text,
        code: out.status.code().unwrap_or(-1),
    }
}

/// Removes CSI sequences (`ESC [ … final`) and other two-byte escapes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // `ESC [ … final byte`; any other escape is two characters.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// Cursor movement and line clearing: what only a live display writes.
fn draws_bars(raw: &str) -> bool {
    raw.contains("\x1b[2K") || raw.contains("\x1b[1A")
}

/// Whether any SGR color or attribute sequence (`ESC [ … m`) was written.
fn has_colors(raw: &str) -> bool {
    raw.match_indices("\x1b[").any(|(i, _)| {
        raw[i + 2..]
            .chars()
            .find(|c| !c.is_ascii_digit() && *c != ';')
            == Some('m')
    })
}

/// Three phases that take long enough for the bars to be drawn and ticked; `bad` fails.
fn project(with_failure: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut orchfile = String::from(
        r#"[orch]
format = 1

[phase.a]
run = "sleep 0.4; echo a > {output}"
outputs = ["build/a.txt"]

[phase.b]
run = "sleep 0.6; echo b > {output}"
outputs = ["build/b.txt"]

[phase.c]
needs = ["a", "b"]
run = "sleep 0.3; cat {needs.a.outputs} {needs.b.outputs} > {output}"
outputs = ["build/c.txt"]
"#,
    );
    if with_failure {
        orchfile.push_str(
            r#"
[phase.bad]
run = "sleep 0.3; echo boom-output; echo second-line; exit 3"
outputs = ["build/bad.txt"]
"#,
        );
    }
    std::fs::write(dir.path().join("Orchfile.toml"), orchfile).unwrap();
    dir
}

/// The last non-empty line written.
fn last_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
}

#[test]
fn a_terminal_shows_live_bars_then_the_summary() {
    let dir = project(false);
    let run = on_pty(dir.path(), &["build", "-j", "2"], &[]);
    assert_eq!(run.code, 0, "{}", run.text);
    assert!(draws_bars(&run.raw), "no cursor movement:\n{:?}", run.raw);
    // The overall bar: `[k/N] [====>   ] 0.4s · 2 running`.
    assert!(run.text.contains("/3] ["), "{}", run.text);
    assert!(run.text.contains(" running"), "{}", run.text);
    // One line per running instance.
    assert!(run.text.contains(" a "), "{}", run.text);
    // Finished instances are shown by the bar, not printed one per line.
    assert!(!run.text.contains("] a ok"), "{}", run.text);
    assert!(
        last_line(&run.text).starts_with("orch: 3 built, 0 up to date in "),
        "{}",
        run.text
    );
    // Colors, unless NO_COLOR.
    assert!(has_colors(&run.raw), "{:?}", run.raw);

    // Nothing to do: no bars at all, only the summary.
    let again = on_pty(dir.path(), &["build"], &[]);
    assert_eq!(again.code, 0);
    assert!(!draws_bars(&again.raw), "{:?}", again.raw);
    assert_eq!(again.text.trim(), "orch: nothing to do (3 up to date)");
}

#[test]
fn a_failure_and_its_log_are_printed_above_the_bars() {
    let dir = project(true);
    let run = on_pty(dir.path(), &["build", "-k", "-j", "4"], &[]);
    assert_eq!(run.code, 1, "{}", run.text);
    assert!(draws_bars(&run.raw), "{:?}", run.raw);
    let text = &run.text;
    let failed = text
        .find("] bad FAILED (exit 3) ")
        .unwrap_or_else(|| panic!("no FAILED line:\n{text}"));
    let block = &text[failed..];
    // The command that ran, as a shell would show it.
    assert!(
        block.contains(
            "status 3\n$ sleep 0.3; echo boom-output; echo second-line; exit 3\n──── output of bad"
        ),
        "{text}"
    );
    assert!(block.contains("──── output of bad (.orch/logs/"), "{text}");
    assert!(
        block.contains("bad.log) ────\nboom-output\nsecond-line\n────\n"),
        "{text}"
    );
    assert!(
        text.contains("1 failed"),
        "the bar counts the failure:\n{text}"
    );
    assert!(
        text.contains("orch: build failed: 1 failed, 0 blocked, 3 built, 0 up to date in "),
        "{text}"
    );
    assert_eq!(last_line(text), "orch: failed: bad");
}

#[test]
fn no_color_keeps_the_bars_without_colors() {
    let dir = project(true);
    let run = on_pty(dir.path(), &["build", "-k"], &[("NO_COLOR", "1")]);
    assert_eq!(run.code, 1, "{}", run.text);
    assert!(draws_bars(&run.raw), "{:?}", run.raw);
    assert!(!has_colors(&run.raw), "{:?}", run.raw);
    assert!(run.text.contains("] bad FAILED (exit 3) "), "{}", run.text);
}

#[test]
fn verbose_prints_each_finished_instance_above_the_bars() {
    let dir = project(false);
    let run = on_pty(dir.path(), &["-v", "build"], &[]);
    assert_eq!(run.code, 0, "{}", run.text);
    assert!(draws_bars(&run.raw), "{:?}", run.raw);
    for line in ["a: $ sleep 0.4", "] a ok ", "] b ok ", "[3/3] c ok "] {
        assert!(run.text.contains(line), "no `{line}`:\n{}", run.text);
    }
}

// What follows holds with or without the live display wired in.

#[test]
fn ci_keeps_the_plain_display_on_a_terminal() {
    let dir = project(false);
    let run = on_pty(dir.path(), &["build", "-j", "1"], &[("CI", "true")]);
    assert_eq!(run.code, 0, "{}", run.text);
    assert!(!draws_bars(&run.raw), "{:?}", run.raw);
    assert!(!has_colors(&run.raw), "{:?}", run.raw);
    assert!(run.text.contains("[1/3] a ok "), "{}", run.text);
    assert!(run.text.contains("[3/3] c ok "), "{}", run.text);
    assert!(
        last_line(&run.text).starts_with("orch: 3 built, 0 up to date in "),
        "{}",
        run.text
    );
}

#[test]
fn a_dumb_terminal_keeps_the_plain_display() {
    let dir = project(false);
    let run = on_pty(dir.path(), &["build", "-j", "1"], &[("TERM", "dumb")]);
    assert_eq!(run.code, 0, "{}", run.text);
    assert!(!draws_bars(&run.raw), "{:?}", run.raw);
    assert!(run.text.contains("[2/3] b ok "), "{}", run.text);
}

#[test]
fn quiet_draws_no_bars_and_prints_only_the_failure() {
    let dir = project(true);
    let run = on_pty(dir.path(), &["-q", "build", "-k"], &[]);
    assert_eq!(run.code, 1, "{}", run.text);
    assert!(!draws_bars(&run.raw), "{:?}", run.raw);
    let text = &run.text;
    assert!(text.contains("] bad FAILED (exit 3) "), "{text}");
    assert!(text.contains("boom-output\nsecond-line\n────\n"), "{text}");
    assert!(!text.contains(" ok "), "{text}");
    assert_eq!(last_line(text), "orch: failed: bad");
}

/// Every `[done/total]` counter written, in order.
fn counters(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices('[') {
        let Some(end) = text[i + 1..].find(']') else {
            continue;
        };
        if let Some((done, total)) = text[i + 1..i + 1 + end].split_once('/')
            && let (Ok(done), Ok(total)) = (done.parse(), total.parse())
        {
            out.push((done, total));
        }
    }
    out
}

/// A sharded phase between two others: four instances, six shards.
fn sharded_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Orchfile.toml"),
        r#"[orch]
format = 1

[phase.prep]
run = "sleep 0.2; echo prep > {output}"
outputs = ["out/prep.txt"]

[phase.t]
needs = ["prep"]
matrix = { lang = ["fr", "de"] }
shard = { strategy = "files", source = "src/*.txt" }
run = "sleep 0.3; cat {shard.input} > {shard.output}"
outputs = ["out/t-{matrix.lang}.txt"]

[phase.last]
needs = ["t"]
run = "cat {needs.t.outputs} > {output}"
outputs = ["out/last.txt"]
"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    for n in 1..=3 {
        std::fs::write(dir.path().join(format!("src/{n}.txt")), "x\n").unwrap();
    }
    dir
}

#[test]
fn the_bar_counts_instances_and_shards_move_inside_their_line() {
    let dir = sharded_project();
    let run = on_pty(dir.path(), &["build", "-j", "2"], &[]);
    assert_eq!(run.code, 0, "{}", run.text);
    assert!(draws_bars(&run.raw), "{:?}", run.raw);
    let seen = counters(&run.text);
    assert!(!seen.is_empty(), "{}", run.text);
    // The total never moves, however many shards are split off.
    assert!(seen.iter().all(|(_, total)| *total == 4), "{seen:?}");
    assert!(run.text.contains(" t[lang=fr] 0/3 shards"), "{}", run.text);
    assert!(
        run.text.contains(" t[lang=fr] 2/3 shards") || run.text.contains(" t[lang=de] 2/3 shards"),
        "{}",
        run.text
    );
    assert!(
        last_line(&run.text).starts_with("orch: 4 built, 0 up to date in "),
        "{}",
        run.text
    );
    // The same state again: the same total.
    let again = on_pty(dir.path(), &["build", "-j", "2", "--force"], &[]);
    assert_eq!(again.code, 0, "{}", again.text);
    let seen = counters(&again.text);
    assert!(seen.iter().all(|(_, total)| *total == 4), "{seen:?}");
}

#[test]
fn an_interrupt_clears_the_bars_before_the_final_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Orchfile.toml"),
        r#"[orch]
format = 1

[phase.a]
run = "sleep 0.5; kill -INT $PPID; sleep 5"
outputs = ["out/a.txt"]

[phase.b]
needs = ["a"]
run = "touch {output}"
outputs = ["out/b.txt"]
"#,
    )
    .unwrap();
    let run = on_pty(dir.path(), &["build"], &[]);
    assert_eq!(run.code, 130, "{}", run.text);
    assert!(draws_bars(&run.raw), "{:?}", run.raw);
    // Once the first line about the interruption is out, no bar is drawn again.
    let first = run
        .raw
        .find("[-] ")
        .unwrap_or_else(|| panic!("no blocked line:\n{}", run.text));
    assert!(!draws_bars(&run.raw[first..]), "{:?}", &run.raw[first..]);
    let text = &run.text;
    assert!(
        text.contains("[-] a interrupted: stopped before it finished\n"),
        "{text}"
    );
    assert!(text.contains("[-] b not started (interrupted)\n"), "{text}");
    assert!(
        last_line(text).starts_with("orch: interrupted: 0 failed, 2 blocked, 0 built, "),
        "{text}"
    );
}

/// Two long-named instances that run long enough to be drawn.
fn long_names() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Orchfile.toml"),
        r#"[orch]
format = 1

[phase.a_very_long_phase_name_that_goes_on_for_more_than_forty_columns]
matrix = { language = ["french-canadian", "german"] }
run = "sleep 0.6; echo a > {output}"
outputs = ["build/a-{matrix.language}.txt"]
"#,
    )
    .unwrap();
    dir
}

#[test]
fn long_names_are_cut_at_the_edge_of_a_narrow_terminal() {
    let dir = long_names();
    let run = on_pty_of(dir.path(), &["build", "-j", "2"], &[], Some(40));
    assert_eq!(run.code, 0, "{}", run.text);
    assert!(draws_bars(&run.raw), "{:?}", run.raw);
    assert!(run.text.contains("[0/2] "), "{}", run.text);
    // The name is cut to fit, not wrapped onto the next row; its matrix value stays.
    assert!(
        run.text.contains(" a_very_lon…[language=german]"),
        "{}",
        run.text
    );
    assert!(!run.text.contains("forty_columns"), "{}", run.text);
    assert!(
        !run.text.contains("[=="),
        "no bar graphic at 40 columns:\n{}",
        run.text
    );
}

#[test]
fn a_wide_terminal_shows_the_bar_and_whole_names() {
    let dir = long_names();
    let run = on_pty_of(dir.path(), &["build", "-j", "2"], &[], Some(200));
    assert_eq!(run.code, 0, "{}", run.text);
    assert!(
        run.text.contains(
            " a_very_long_phase_name_that_goes_on_for_more_than_forty_columns[language=french-canadian]"
        ),
        "{}",
        run.text
    );
    assert!(run.text.contains("/2] ["), "{}", run.text);
}

#[test]
fn color_flags_reach_both_displays() {
    // Live, told not to: bars without colours.
    let dir = project(false);
    let never = on_pty(dir.path(), &["--color", "never", "build"], &[]);
    assert_eq!(never.code, 0, "{}", never.text);
    assert!(draws_bars(&never.raw), "{:?}", never.raw);
    assert!(!has_colors(&never.raw), "{:?}", never.raw);
    // Plain (CI), told to: coloured words.
    let dir = project(false);
    let always = on_pty(
        dir.path(),
        &["--color", "always", "build"],
        &[("CI", "true")],
    );
    assert_eq!(always.code, 0, "{}", always.text);
    assert!(!draws_bars(&always.raw), "{:?}", always.raw);
    assert!(
        always.raw.contains(" a \x1b[32mok\x1b[0m "),
        "{:?}",
        always.raw
    );
}

#[test]
fn ansi_stripping() {
    assert_eq!(
        strip_ansi("\x1b[1;31mFAILED\x1b[0m x\x1b[2A\r\x1b[2K"),
        "FAILED x\r"
    );
    assert!(has_colors("a\x1b[32mb"));
    assert!(!has_colors("a\x1b[2K\x1b[1Ab"));
}
