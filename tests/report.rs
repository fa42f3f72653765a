//! `orch report` and `orch build --timings`: the page and trace they write, the worker
//! slots events record, and the page opened in a real headless browser (Debian's
//! Chromium, which `scripts/install-test-servers.sh` installs): it loads, its script runs
//! without errors, and it shows every instance that ran.
//!
//! Without Chromium the browser test says so and passes, unless `CI` is set: there it
//! must run.

#[path = "integration/test.rs"]
#[allow(dead_code)]
mod test;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use test::{Output, Test, of_type, parse_events};

/// Two independent chains and a matrix, a sharded phase, one failure (with `-k`).
const ORCHFILE: &str = r#"
[phase.prep]
run = "sleep 0.2; echo p > out/prep.txt"
outputs = ["out/prep.txt"]

[phase.train]
matrix = { lr = ["0.1", "0.01"] }
run = "sleep 0.3; echo {matrix.lr} > out/train-{matrix.lr}.txt"
needs = ["prep"]
outputs = ["out/train-{matrix.lr}.txt"]

[phase.pages]
shard = { strategy = "files", source = "pages/*.txt", merge = "none" }
run = "cp {shard.input} {output}"
outputs = ["out/pages/{shard.key}.txt"]

[phase.broken]
run = "echo 'the <b>tag</b> & more' >&2; exit 3"
outputs = ["out/broken.txt"]
"#;

fn project() -> Test {
    Test::new()
        .orchfile(ORCHFILE)
        .write("out/.keep", "")
        .write("pages/one.txt", "1")
        .write("pages/two.txt", "2")
}

fn latest_run(out: &Output) -> String {
    out.run_ids().pop().expect("a run was recorded")
}

/// The names events give to what ran or was restored: the timeline's bars.
fn bars_of(events: &[Value]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in events {
        let name = e["instance"].as_str().unwrap_or_default().to_owned();
        let own_of_sharded = e["type"] == "instance_started"
            && e.get("shard").is_none()
            && events
                .iter()
                .any(|s| s["type"] == "shard_plan" && s["instance"] == e["instance"]);
        if (e["type"] == "instance_started" && !own_of_sharded) || e["type"] == "instance_cached" {
            names.insert(name);
        }
    }
    names
}

/// Chromium, when installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The page's DOM after its scripts ran, and what Chromium logged meanwhile.
fn open_in_chromium(browser: &str, page: &Path) -> (String, String) {
    let profile = tempfile::tempdir().expect("a profile directory");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium failed ({}):\n{log}",
        out.status
    );
    (dom, log)
}

/// Checks the dumped DOM of a report: the script ran to its end and recorded no error,
/// nothing was logged to the console, and each of `names` has a bar.
fn check_in_browser(page: &Path, names: &BTreeSet<String>) {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but chromium is missing: run scripts/install-test-servers.sh"
        );
        eprintln!(
            "skipped: chromium is not installed (scripts/install-test-servers.sh installs it)"
        );
        return;
    };
    let (dom, log) = open_in_chromium(browser, page);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page's script did not finish:\n{dom}"
    );
    let errors = dom
        .split("<pre id=\"js-errors\"")
        .nth(1)
        .and_then(|rest| rest.split_once('>'))
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(inside, _)| inside.to_owned());
    assert_eq!(errors.as_deref(), Some(""), "script errors:\n{dom}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "console messages:\n{}",
        console.join("\n")
    );
    for name in names {
        // Browsers differ in whether they write `<` and `>` in attributes as entities.
        let escaped = html_escape(name);
        let plain = escaped.replace("&lt;", "<").replace("&gt;", ">");
        let found = [escaped, plain]
            .iter()
            .any(|n| dom.contains(&format!("data-name=\"{n}\"")));
        assert!(found, "no bar for {name} in:\n{dom}");
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[test]
fn the_report_opens_in_a_browser_and_shows_every_instance() {
    let first = project()
        .args(["build", "-j", "2", "-k"])
        .expect_status(1)
        .run();
    // Restored from the cache: an output removed since the first build.
    first.remove("out/prep.txt");
    let out = first
        .again()
        .args(["build", "-j", "2", "-k", "--timings"])
        .expect_status(1)
        .stderr_contains("orch: timings report written to ")
        .run();
    let run = latest_run(&out);
    let dir = out.join(&format!(".orch/runs/{run}"));
    let page = dir.join("report.html");
    assert!(
        out.stderr.contains(&page.display().to_string()),
        "{}",
        out.stderr
    );
    let events = out.events(&run);
    assert!(
        !of_type(&events, "instance_cached").is_empty(),
        "{events:#?}"
    );
    let html = std::fs::read_to_string(&page).expect("the page");
    for section in [
        "timeline",
        "critical-path",
        "slowest",
        "cache-hits",
        "failures",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{section}\">")),
            "{section}"
        );
    }
    assert!(
        html.contains("exited with") || html.contains("exit 3"),
        "{html}"
    );
    assert!(!html.contains("http://") && !html.contains("https://"));

    // The first run, by id: every instance ran there.
    let first_run = out.run_ids()[0].clone();
    let report = out
        .again()
        .args(["report", &first_run])
        .stdout_contains("report: ")
        .stdout_contains("trace:  ")
        .run();
    let first_page = out.join(&format!(".orch/runs/{first_run}/report.html"));
    assert!(report.stdout.contains(&first_page.display().to_string()));
    let names = bars_of(&out.events(&first_run));
    assert!(
        names.contains("pages#0") && names.contains("train[lr=0.01]"),
        "{names:?}"
    );
    check_in_browser(&first_page, &names);
    check_in_browser(&page, &bars_of(&events));
}

#[test]
fn the_trace_has_one_complete_event_per_job_on_its_worker() {
    let out = project()
        .args(["build", "-j", "2", "-k"])
        .expect_status(1)
        .run();
    let trace_path = out.join("elsewhere/t.json");
    let page_path = out.join("elsewhere/r.html");
    out.again()
        .args([
            "report",
            "-o",
            page_path.to_str().unwrap_or_default(),
            "--trace",
            trace_path.to_str().unwrap_or_default(),
        ])
        .run();
    assert!(page_path.is_file());
    let trace: Value =
        serde_json::from_str(&std::fs::read_to_string(&trace_path).expect("the trace"))
            .expect("the trace is JSON");
    let complete: Vec<&Value> = trace["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .filter(|e| e["ph"] == "X")
        .collect();
    let names: BTreeSet<String> = complete
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names.len(), complete.len(), "one event per job");
    let events = out.latest_events();
    assert_eq!(names, bars_of(&events));
    let workers: BTreeMap<String, u64> = of_type(&events, "instance_started")
        .iter()
        .filter_map(|e| Some((e["instance"].as_str()?.to_owned(), e["worker"].as_u64()?)))
        .collect();
    for e in &complete {
        let name = e["name"].as_str().unwrap_or_default();
        assert_eq!(e["pid"], 1, "{e}");
        assert_eq!(e["tid"].as_u64(), workers.get(name).copied(), "{e}");
    }
    let failed = complete.iter().find(|e| e["name"] == "broken");
    assert_eq!(failed.map(|e| &e["cat"]), Some(&Value::from("failed")));
}

/// Replays the events in order: a job takes its worker at `instance_started` (the
/// first attempt) and gives it back at its end; no two jobs hold one at once.
fn check_workers(events: &[Value], jobs: u64) -> BTreeSet<u64> {
    let mut held: BTreeMap<u64, String> = BTreeMap::new();
    let mut of: BTreeMap<String, u64> = BTreeMap::new();
    let mut used = BTreeSet::new();
    for e in events {
        let name = e["instance"].as_str().unwrap_or_default().to_owned();
        match e["type"].as_str() {
            Some("instance_started") if e["attempt"] == 1 => {
                let Some(w) = e["worker"].as_u64() else {
                    continue;
                };
                assert!(w < jobs, "worker {w} with -j {jobs}: {e}");
                if let Some(other) = held.insert(w, name.clone()) {
                    panic!("{name} took worker {w} while {other} held it");
                }
                used.insert(w);
                of.insert(name, w);
            }
            Some("instance_completed" | "instance_failed") => {
                if let Some(w) = of.remove(&name) {
                    held.remove(&w);
                }
            }
            _ => {}
        }
    }
    used
}

#[test]
fn local_jobs_hold_one_worker_slot_each() {
    let mut orchfile = String::new();
    for k in 0..8 {
        orchfile.push_str(&format!(
            "[phase.p{k}]\nrun = \"sleep 0.0{k}; echo {k} > out/{k}\"\noutputs = [\"out/{k}\"]\n"
        ));
    }
    let out = Test::new()
        .orchfile(&orchfile)
        .write("out/.keep", "")
        .args(["build", "-j", "3"])
        .run();
    let used = check_workers(&out.latest_events(), 3);
    assert!(used.contains(&0), "{used:?}");
    let out = out.again().args(["build", "-j", "1", "--force"]).run();
    let events = out.latest_events();
    assert_eq!(check_workers(&events, 1), BTreeSet::from([0]));
    // Every local job has a worker; with -j 1 it is always 0.
    for e in of_type(&events, "instance_started") {
        assert_eq!(e["worker"], 0, "{e}");
    }
}

#[test]
fn an_unknown_run_is_a_usage_error() {
    project()
        .args(["report", "no-such-run"])
        .expect_status(2)
        .stderr_contains("error: there is no run `no-such-run`")
        .run();
    project()
        .args(["report"])
        .expect_status(2)
        .stderr_contains("no runs are recorded yet")
        .run();
}

#[test]
fn hand_edited_events_are_shown_not_run() {
    let evil = "<script>document.body.setAttribute('data-evil','1')</script>";
    let t = project();
    let lines = [
        r#"{"v":1,"seq":1,"ts":"2026-01-01T00:00:00.000Z","run_id":"x","type":"run_started"}"#
            .to_owned(),
        format!(
            r#"{{"v":1,"seq":2,"ts":"2026-01-01T00:00:00.000Z","type":"instance_started","instance":"{}","worker":0}}"#,
            evil.replace('"', "\\\"")
        ),
        "{\"truncated".to_owned(),
        format!(
            r#"{{"v":1,"seq":3,"ts":"2026-01-01T00:00:01.000Z","type":"instance_failed","instance":"{0}","message":"{0}\"><img src=x onerror=alert(1)>","kind":5}}"#,
            evil.replace('"', "\\\"")
        ),
        r#"{"type":"instance_started","instance":"odd","worker":-4,"ts":"not a time"}"#.to_owned(),
        "[1,2,3]".to_owned(),
    ];
    t.project()
        .write(".orch/runs/edited/events.jsonl", &(lines.join("\n") + "\n"));
    let out = t.args(["report", "edited"]).run();
    let page = out.join(".orch/runs/edited/report.html");
    let html = std::fs::read_to_string(&page).expect("the page");
    assert!(!html.contains("<script>document"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("2 lines of the run's events could not be read"),
        "{html}"
    );
    let trace = std::fs::read_to_string(out.join(".orch/runs/edited/trace.json"));
    let trace: Value = serde_json::from_str(&trace.expect("the trace")).expect("JSON");
    assert!(trace["traceEvents"].is_array());
    let names = BTreeSet::from([evil.to_owned(), "odd".to_owned()]);
    check_in_browser(&page, &names);
    if chromium().is_some() {
        let (dom, _) = open_in_chromium(chromium().unwrap_or("chromium"), &page);
        assert!(
            !dom.contains("data-evil=\"1\""),
            "an event's text ran as script"
        );
    }
}

#[test]
fn the_page_still_comes_when_the_orchfile_no_longer_loads() {
    let out = project()
        .args(["build", "-j", "2", "-k"])
        .expect_status(1)
        .run();
    out.write("Orchfile.toml", "[phase.x\nrun = ");
    let r = out.again().args(["report"]).run();
    assert!(r.stdout.contains("report.html"), "{}", r.stdout);
    let run = latest_run(&out);
    let html = out.read(&format!(".orch/runs/{run}/report.html"));
    assert!(html.contains("The Orchfile cannot be loaded now"), "{html}");
    let _ = parse_events(&out.events_text(&run));
}

#[test]
fn a_planted_symlink_in_the_state_never_leads_the_page_outside_the_project() {
    let out = project().args(["build", "-k"]).expect_status(1).run();
    let run = latest_run(&out);
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.html");
    std::fs::write(&victim, "keep").unwrap();
    let run_dir = out.project.join(".orch/runs").join(&run);
    // The page's own name, a symlink to a file outside: replaced, not written through.
    std::os::unix::fs::symlink(&victim, run_dir.join("report.html")).unwrap();
    out.again().args(["report"]).expect_status(0).run();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    let page = run_dir.join("report.html");
    assert!(!page.is_symlink() && page.is_file());
    // The run's folder, a symlink to a folder outside: refused, nothing written there.
    let moved = out.project.join(".orch/moved-run");
    std::fs::rename(&run_dir, &moved).unwrap();
    std::os::unix::fs::symlink(outside.path(), &run_dir).unwrap();
    std::fs::copy(
        moved.join("events.jsonl"),
        outside.path().join("events.jsonl"),
    )
    .unwrap();
    let refused = out.again().args(["report", &run]).expect_status(1).run();
    assert!(
        refused.stderr.contains("outside the project"),
        "{}",
        refused.stderr
    );
    let written: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut written = written;
    written.sort();
    assert_eq!(written, ["events.jsonl", "victim.html"]);
}
