//! Shell completion in the real shells: bash and zsh run interactively inside tmux with
//! orch's registration sourced, and the test types `orch build transl<TAB>` into them;
//! fish answers `complete -C` directly. Completion must offer the project's phases and
//! instances, not only subcommands and flags.
//!
//! The shells and tmux come from `scripts/test.sh`. Without them the tests say so and
//! pass, except under `CI`, where they must run.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ORCHFILE: &str = r#"[orch]
format = 1

[executor.cluster]
kind = "slurm"

[phase.translate]
description = "Translate the text"
matrix = { lang = ["de", "fr"] }
run = "echo {matrix.lang} > {output}"
outputs = ["build/{matrix.lang}.txt"]

[phase.render]
needs = ["translate"]
run = "cat {needs.translate.outputs} > {output}"
outputs = ["build/all.txt"]
"#;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Orchfile.toml"), ORCHFILE).unwrap();
    dir
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_orch"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// PATH with orch first: the registration scripts call `orch` by name.
fn path() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Whether `tools` are installed; when not, outside CI, the caller skips.
fn have(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(
        !ci,
        "{missing:?} missing under CI: scripts/test.sh installs them"
    );
    eprintln!("skipped: {missing:?} not installed (scripts/test.sh installs them)");
    false
}

/// An interactive shell in a tmux session of its own (a private server socket, so tests
/// running at once do not meet), into which keys are typed.
struct Tmux {
    socket: String,
    _home: tempfile::TempDir,
}

impl Tmux {
    fn start(shell: &str, cwd: &Path) -> Tmux {
        let home = tempfile::tempdir().unwrap();
        let socket = format!(
            "orch-complete-{}-{}",
            std::process::id(),
            home.path().file_name().unwrap().to_string_lossy()
        );
        let t = Tmux {
            socket,
            _home: home,
        };
        let out = Command::new("tmux")
            .args(["-L", &t.socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "200", "-y", "50", "-c"])
            .arg(cwd)
            .arg(shell)
            .env("PATH", path())
            .env("HOME", t._home.path())
            .env("TERM", "xterm-256color")
            .env_remove("COMPLETE")
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux: {out:?}");
        t
    }

    fn keys(&self, keys: &[&str]) {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "0"])
            .args(keys)
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux send-keys: {out:?}");
    }

    fn screen(&self) -> String {
        let out: Output = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen satisfies `cond`, and returns it.
    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if cond(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `line`, then TAB, and returns the screen once the line under the cursor has
    /// changed into something `done` accepts (tmux drops trailing blanks from the screen,
    /// so whether a space followed is not seen).
    fn complete(&self, line: &str, done: impl Fn(&str) -> bool) -> String {
        self.keys(&["C-u"]);
        self.keys(&["-l", line]);
        self.keys(&["Tab"]);
        self.wait_for(&format!("the completion of `{line}`"), done)
    }

    /// Runs a setup command and waits until the shell has printed `marker`.
    fn setup(&self, command: &str, marker: &str) {
        self.keys(&["-l", &format!("{command}; echo {marker}")]);
        self.keys(&["Enter"]);
        self.wait_for(marker, |s| s.lines().any(|l| l.trim() == marker));
        self.keys(&["C-l"]);
        self.wait_for("a cleared screen", |s| !s.contains(marker));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The last non-empty line of the screen: the prompt and what was typed.
fn prompt_line(screen: &str) -> &str {
    screen
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

#[test]
fn bash_completes_phases_and_instances_with_brackets_and_equals_signs() {
    if !have(&["bash", "tmux"]) {
        return;
    }
    let dir = project();
    let t = Tmux::start("bash --norc --noprofile", dir.path());
    t.setup("PS1='$ '; source <(COMPLETE=bash orch)", "ready-1");
    t.complete("orch build transl", |s| {
        prompt_line(s).ends_with("orch build translate")
    });
    // `=` splits bash's words: the whole instance name must still complete.
    t.complete("orch build translate[lang=f", |s| {
        prompt_line(s).ends_with("orch build translate[lang=fr]")
    });
    t.complete("orch explain ren", |s| {
        prompt_line(s).ends_with("orch explain render")
    });
    t.complete("orch build --from tr", |s| {
        prompt_line(s).ends_with("orch build --from translate")
    });
    t.complete("orch build --executor cl", |s| {
        prompt_line(s).ends_with("orch build --executor cluster")
    });
    t.complete("orch pla", |s| prompt_line(s).ends_with("orch plan"));
}

#[test]
fn zsh_completes_phases_and_instances() {
    if !have(&["zsh", "tmux"]) {
        return;
    }
    let dir = project();
    let t = Tmux::start("zsh -f", dir.path());
    t.setup(
        "PS1='$ '; autoload -U compinit && compinit -u && source <(COMPLETE=zsh orch)",
        "ready-1",
    );
    t.complete("orch build ren", |s| {
        prompt_line(s).ends_with("orch build render")
    });
    // zsh quotes the glob character `[` in what it inserts and in what is typed.
    t.complete("orch build translate\\[lang=f", |s| {
        prompt_line(s).contains("orch build translate\\[lang=fr\\]")
    });
    t.complete("orch sta", |s| prompt_line(s).ends_with("orch status"));
}

#[test]
fn fish_completes_phases_instances_and_descriptions() {
    if !have(&["fish"]) {
        return;
    }
    let dir = project();
    let home = tempfile::tempdir().unwrap();
    let complete = |line: &str| -> String {
        let script = format!("COMPLETE=fish orch | source; complete -C'{line}'");
        let out = Command::new("fish")
            .args(["--no-config", "-c", &script])
            .current_dir(dir.path())
            .env("PATH", path())
            .env("HOME", home.path())
            .env_remove("COMPLETE")
            .output()
            .unwrap();
        assert!(out.status.success(), "fish: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let phases = complete("orch build ");
    assert!(phases.contains("translate\tTranslate the text"), "{phases}");
    assert!(phases.contains("render"), "{phases}");
    let instances = complete("orch build translate");
    assert!(instances.contains("translate[lang=de]"), "{instances}");
    assert!(instances.contains("translate[lang=fr]"), "{instances}");
    let paths = complete("orch show build/");
    assert!(paths.contains("build/all.txt"), "{paths}");
    // Another project, through -C.
    let elsewhere = complete(&format!("orch -C {} plan ren", dir.path().display()));
    assert!(elsewhere.contains("render"), "{elsewhere}");
}

#[test]
fn completion_of_a_broken_orchfile_offers_nothing_and_prints_no_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Orchfile.toml"), "[phase.a\nrun = 1").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["--", "orch", "build", ""])
        .current_dir(dir.path())
        .env("COMPLETE", "fish")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Flags still complete; no phase is made up.
    assert!(stdout.contains("--jobs"), "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with('-')), "{stdout}");
}

#[test]
fn completions_command_prints_the_registration_that_names_orch() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_orch"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("COMPLETE="), "{shell}: {script}");
        assert!(
            !script.contains(env!("CARGO_BIN_EXE_orch")),
            "{shell}: {script}"
        );
    }
}

#[test]
fn every_subcommand_completes_and_an_unknown_shell_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["--", "orch", ""])
        .env("COMPLETE", "fish")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "build",
        "watch",
        "plan",
        "status",
        "explain",
        "graph",
        "check",
        "runs",
        "log",
        "show",
        "clean",
        "gc",
        "init",
        "schema",
        "completions",
        "list",
        "report",
    ] {
        assert!(
            stdout.lines().any(|l| l.split('\t').next() == Some(sub)),
            "`{sub}` missing from the completions:\n{stdout}"
        );
    }
    assert!(!stdout.lines().any(|l| l.starts_with("man")), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["completions", "klingon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
