//! Every example project and every pipeline fragment is a real, working Orchfile: each
//! example is checked, built in a temporary copy, rebuilt as a no-op and verified
//! (`orch verify`: its outputs are reproducible); the project's
//! own Orchfile (with `pipelines/*.toml`) is checked.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn orch(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run orch")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".orch" || name == "build" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Orchfile.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_example_builds_then_is_a_no_op() {
    let dirs = examples();
    assert!(!dirs.is_empty(), "no examples found");
    for dir in dirs {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&dir, tmp.path());
        let check = orch(tmp.path(), &["check"]);
        assert!(
            check.status.success(),
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&check.stderr)
        );
        let first = orch(tmp.path(), &["build", "-j", "2"]);
        assert!(
            first.status.success(),
            "{}: build failed:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&first.stdout),
            String::from_utf8_lossy(&first.stderr)
        );
        let second = orch(tmp.path(), &["build"]);
        let out = String::from_utf8_lossy(&second.stdout);
        assert!(second.status.success());
        assert!(
            out.contains("nothing to do"),
            "{}: second build was not a no-op:\n{out}",
            dir.display()
        );
        let verify = orch(tmp.path(), &["verify"]);
        assert!(
            verify.status.success(),
            "{}: outputs are not reproducible:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
    }
}

#[test]
fn hello_counts_the_words_of_its_texts() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello"),
        tmp.path(),
    );
    assert!(orch(tmp.path(), &["build"]).status.success());
    let counts = std::fs::read_to_string(tmp.path().join("build/counts.txt")).unwrap();
    assert!(counts.starts_with("      9 the\n"), "{counts}");
    assert!(counts.contains("      1 fishermen\n"), "{counts}");
    let top = std::fs::read_to_string(tmp.path().join("build/top.md")).unwrap();
    // Ties are broken by the word, so the list is the same on every machine.
    assert!(
        top.starts_with("# Most frequent words\n\n- the (9)\n- dog (2)\n- fox (2)\n- and (1)\n"),
        "{top}"
    );
    assert_eq!(top.lines().filter(|l| l.starts_with("- ")).count(), 10);
}

#[test]
fn the_project_pipeline_and_its_fragments_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Orchfile.bench.toml includes every fragment.
    let check = orch(root, &["-f", "Orchfile.bench.toml", "check"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let fragments = std::fs::read_dir(root.join("pipelines")).unwrap().count();
    assert!(
        stdout.contains(&format!("{fragments} included file")),
        "{stdout}"
    );
    assert!(orch(root, &["check"]).status.success());
}

#[test]
fn the_project_pipeline_runs_the_checks_and_no_benchmark() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `list` reads the Orchfile only: it neither waits for nor touches `.orch/`, which a
    // build of the project running this very suite holds.
    let list = orch(root, &["list"]);
    assert!(list.status.success());
    let phases: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(phases, ["clippy", "docs", "fmt", "test"]);
}

/// The events of run `run_id` in `dir`.
fn events(dir: &Path, run_id: &str) -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(dir.join(format!(".orch/runs/{run_id}/events.jsonl"))).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Instances whose command started (shards as `NAME#INDEX`), sorted.
fn started(events: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "instance_started")
        .map(|e| e["instance"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn translate_one_edited_announcement_reruns_one_shard_per_language() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/translate"),
        dir,
    );
    let first = orch(dir, &["build", "--run-id", "first"]);
    assert!(
        first.status.success(),
        "{}{}",
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr)
    );
    let ev = events(dir, "first");
    for lang in ["de", "fr"] {
        let plan = ev
            .iter()
            .find(|e| {
                e["type"] == "shard_plan" && e["instance"] == format!("translate[lang={lang}]")
            })
            .unwrap();
        assert_eq!(plan["shards"], 6, "one shard per route: {plan}");
        assert_eq!(plan["strategy"], "group");
    }
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    let fr = read("build/translate/fr.jsonl");
    assert_eq!(fr.lines().count(), 28);
    // Grouped by route, in route order, each route's records in file order.
    assert!(
        fr.starts_with(
            "{\"lang\":\"fr\",\"route_id\":\"R1\",\"seq\":1,\"n\":1,\"of\":5,\"text\":\"Bienvenue abord, le prochain arret est le gare.\"}\n\
             {\"lang\":\"fr\",\"route_id\":\"R1\",\"seq\":4,\"n\":2,\"of\":5,"
        ),
        "{fr}"
    );
    let routes: Vec<String> = fr
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{}:{:03}",
                v["route_id"].as_str().unwrap(),
                v["seq"].as_u64().unwrap()
            )
        })
        .collect();
    let mut sorted = routes.clone();
    sorted.sort();
    assert_eq!(routes, sorted);
    assert!(read("build/qa/de.md").contains("| R4 | 4 | Willkommen an bord"));
    assert!(read("build/qa/fr.md").ends_with("\n28 announcements on 6 routes, all translated\n"));
    let export = read("build/export/announcements.jsonl");
    assert_eq!(export.lines().count(), 28);
    assert!(
        export.starts_with(
            "{\"route_id\":\"R1\",\"seq\":1,\"de\":\"Willkommen an bord, die naechste halt ist die bahnhof.\",\"fr\":\"Bienvenue abord, le prochain arret est le gare.\"}\n\
             {\"route_id\":\"R2\",\"seq\":2,"
        ),
        "{export}"
    );

    // Edit the first announcement of route R4 (the fourth route: shard 3).
    let scripts = read("raw/scripts.txt");
    let edited = scripts.replace(
        "R4|Welcome aboard, the next stop is the museum.",
        "R4|Welcome aboard, the next stop is the old town.",
    );
    assert_ne!(scripts, edited);
    std::fs::write(dir.join("raw/scripts.txt"), edited).unwrap();
    let second = orch(dir, &["build", "--run-id", "edit"]);
    assert!(second.status.success());
    let ev = events(dir, "edit");
    assert_eq!(
        started(&ev),
        [
            "context",
            "export",
            "ingest",
            "qa[lang=de]",
            "qa[lang=fr]",
            "translate[lang=de]",
            "translate[lang=de]#3",
            "translate[lang=fr]",
            "translate[lang=fr]#3",
        ]
    );
    for lang in ["de", "fr"] {
        let plan = ev
            .iter()
            .find(|e| {
                e["type"] == "shard_plan" && e["instance"] == format!("translate[lang={lang}]")
            })
            .unwrap();
        assert_eq!(
            (plan["stale"].as_u64(), plan["reused"].as_u64()),
            (Some(1), Some(5))
        );
    }
    let fr_after = read("build/translate/fr.jsonl");
    let changed: Vec<(&str, &str)> = fr
        .lines()
        .zip(fr_after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].1.contains("le old town."), "{changed:?}");
    assert!(
        read("build/qa/fr.md")
            .contains("| R4 | 4 | Bienvenue abord, le prochain arret est le old town. |")
    );
    assert!(read("build/export/announcements.jsonl").contains("le old town.\"}\n"));

    let third = orch(dir, &["build"]);
    assert!(String::from_utf8_lossy(&third.stdout).contains("nothing to do"));
}

/// The instances (not shards) named by the events of type `kind`, sorted.
fn instances_with(events: &[serde_json::Value], kind: &str) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["instance"].as_str().unwrap().to_owned())
        .filter(|n| !n.contains('#'))
        .collect();
    v.sort();
    v
}

#[test]
fn translate_a_failing_language_blocks_only_what_depends_on_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/translate"),
        dir,
    );

    // Fail-fast: the failure stops the build; its downstream is blocked, not failed.
    let out = orch(
        dir,
        &[
            "build",
            "-j",
            "1",
            "--set",
            "fail_lang=de",
            "--run-id",
            "stop",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let ev = events(dir, "stop");
    assert_eq!(
        instances_with(&ev, "instance_failed"),
        ["translate[lang=de]"]
    );
    assert!(
        instances_with(&ev, "instance_blocked").contains(&"qa[lang=de]".to_owned()),
        "{ev:?}"
    );
    assert!(!dir.join("build/export/announcements.jsonl").exists());

    // -k: everything the failure does not reach is built.
    let out = orch(
        dir,
        &["build", "-k", "--set", "fail_lang=de", "--run-id", "keep"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let ev = events(dir, "keep");
    assert_eq!(
        instances_with(&ev, "instance_failed"),
        ["translate[lang=de]"]
    );
    assert_eq!(
        instances_with(&ev, "instance_blocked"),
        ["export", "qa[lang=de]"]
    );
    assert!(
        stdout.contains("qa[lang=de] blocked by translate[lang=de] (failed)"),
        "{stdout}"
    );
    // The failed shards' output is shown, so the user sees why.
    assert!(stdout.contains("no translation into de today"), "{stdout}");
    assert!(dir.join("build/qa/fr.md").is_file());
    assert!(dir.join("build/translate/fr.jsonl").is_file());
    assert!(!dir.join("build/translate/de.jsonl").exists());
    assert!(!dir.join("build/export/announcements.jsonl").exists());

    // Without the failing language, the rest is built, and then nothing is left to do.
    build_ok(dir, &["build"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("build/export/announcements.jsonl"))
            .unwrap()
            .lines()
            .count(),
        28
    );
    let again = orch(dir, &["build"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
}

/// Keys of the `compile` shards whose command started, sorted.
fn compiled(events: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "instance_started" && e["shard"]["key"].is_string())
        .filter(|e| e["instance"].as_str().unwrap().starts_with("compile#"))
        .map(|e| e["shard"]["key"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// Instances (not shards) whose command started, sorted.
fn started_instances(events: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = started(events)
        .into_iter()
        .filter(|n| !n.contains('#'))
        .collect();
    v.dedup();
    v
}

fn build_ok(dir: &Path, args: &[&str]) {
    let out = orch(dir, args);
    assert!(
        out.status.success(),
        "orch {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn c_example() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c"),
        &dir,
    );
    (tmp, dir)
}

#[test]
fn c_example_builds_correctly_at_every_job_count() {
    for jobs in ["1", "2", "4", "8"] {
        let (_tmp, dir) = c_example();
        build_ok(&dir, &["build", "-j", jobs, "--run-id", "cold"]);
        let log = std::fs::read_to_string(dir.join("build/test.log")).unwrap();
        assert_eq!(log.lines().count(), 6, "-j {jobs}: {log}");
        assert!(
            log.lines().all(|l| l.starts_with("ok ")),
            "-j {jobs}: {log}"
        );
        // The archive phase has no `needs`: it waited for every object because its
        // input glob matches compile's outputs.
        let members = Command::new("ar")
            .arg("t")
            .arg(dir.join("build/libdemo.a"))
            .output()
            .unwrap();
        let members = String::from_utf8_lossy(&members.stdout);
        assert_eq!(
            members.lines().collect::<Vec<_>>(),
            ["buf.c.o", "hash.c.o", "version.c.o", "words.c.o"],
            "-j {jobs}"
        );
        let again = orch(&dir, &["build", "-j", jobs]);
        assert!(again.status.success());
        assert!(
            String::from_utf8_lossy(&again.stdout).contains("nothing to do"),
            "-j {jobs}: {}",
            String::from_utf8_lossy(&again.stdout)
        );
    }
}

#[test]
fn c_example_rebuilds_exactly_what_an_edit_reaches() {
    let (_tmp, dir) = c_example();
    build_ok(&dir, &["build", "--run-id", "cold"]);
    assert_eq!(
        compiled(&events(&dir, "cold")),
        ["src/buf.c", "src/hash.c", "src/version.c", "src/words.c"]
    );

    // A real change to a header: exactly the two sources that include it recompile.
    let internal = dir.join("src/internal.h");
    let text = std::fs::read_to_string(&internal).unwrap();
    std::fs::write(
        &internal,
        text.replace("#define DEMO_GROWTH 2", "#define DEMO_GROWTH 3"),
    )
    .unwrap();
    let plan = orch(&dir, &["plan"]);
    let plan_out = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan_out.contains("input_changed (src/internal.h)"),
        "{plan_out}"
    );
    build_ok(&dir, &["build", "--run-id", "header"]);
    let ev = events(&dir, "header");
    assert_eq!(compiled(&ev), ["src/buf.c", "src/words.c"]);
    // buf.c's object changed, so the archive, the test program and the test ran again.
    assert_eq!(
        started_instances(&ev),
        ["archive", "compile", "test", "test-bin"]
    );

    // A comment-only edit: the object comes out the same, so nothing after it runs.
    let fnv = dir.join("src/fnv.h");
    let mut text = std::fs::read_to_string(&fnv).unwrap();
    text.push_str("/* The parameters are those of the reference implementation. */\n");
    std::fs::write(&fnv, text).unwrap();
    build_ok(&dir, &["build", "--run-id", "comment"]);
    let ev = events(&dir, "comment");
    assert_eq!(compiled(&ev), ["src/hash.c"]);
    assert_eq!(started_instances(&ev), ["compile"]);

    let plan = orch(&dir, &["plan"]);
    assert!(String::from_utf8_lossy(&plan.stdout).contains("nothing to do"));

    // A declared output is a target: it builds its producer and what that needs.
    std::fs::remove_file(dir.join("build/libdemo.a")).unwrap();
    build_ok(&dir, &["build", "build/libdemo.a", "--run-id", "target"]);
    assert!(dir.join("build/libdemo.a").is_file());
    // Restored from the local cache, since the same objects made it before; nothing else
    // (not the test program downstream) was selected.
    let ev = events(&dir, "target");
    let done: Vec<&str> = ev
        .iter()
        .filter(|e| e["type"] == "instance_started" || e["type"] == "instance_cached")
        .map(|e| e["instance"].as_str().unwrap())
        .collect();
    assert_eq!(done, ["archive"]);
}

fn render_example() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/render"),
        &dir,
    );
    (tmp, dir)
}

/// Errors of `doc` against the JSON Schema at `schema`.
fn schema_errors(schema: &Path, doc: &serde_json::Value) -> Vec<String> {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator.iter_errors(doc).map(|e| e.to_string()).collect()
}

const RENDER_STAGES: [&str; 5] = ["script", "shots", "assets", "plan", "render"];

#[test]
fn render_artifacts_and_their_sidecars_are_valid() {
    let (_tmp, dir) = render_example();
    build_ok(&dir, &["build", "--run-id", "first"]);
    let meta_schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/artifact-meta.v1.json");
    let read_json = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(p)).unwrap()).unwrap()
    };
    for stage in RENDER_STAGES {
        let artifact = format!("build/{stage}.json");
        let doc = read_json(&artifact);
        let errors = schema_errors(&dir.join(format!("schemas/{stage}.json")), &doc);
        assert!(errors.is_empty(), "{artifact}: {errors:?}");
        let meta = read_json(&format!("{artifact}.meta.json"));
        let errors = schema_errors(&meta_schema, &meta);
        assert!(
            errors.is_empty(),
            "{artifact}.meta.json: {errors:?}\n{meta:#}"
        );
        let bytes = std::fs::read(dir.join(&artifact)).unwrap();
        assert_eq!(
            meta["artifact"]["digest"],
            orch::fs::hash_bytes(&bytes).to_hex()
        );
        assert_eq!(meta["schema"]["path"], format!("schemas/{stage}.json"));
        assert_eq!(meta["instance"], stage);
        assert_eq!(meta["run_id"], "first");
    }
    // Seven shots of 24 fps, the three wide ones two seconds long.
    let render = read_json("build/render.json");
    assert_eq!(render["frames"], 240);
    assert_eq!(render["renders"].as_array().unwrap().len(), 7);
    let plan_meta = read_json("build/plan.json.meta.json");
    let parents: Vec<(&str, &str)> = plan_meta["parents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap(),
                p["from"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        parents,
        [
            ("build/assets.json", "assets"),
            ("build/shots.json", "shots"),
            ("stages/json.awk", ""),
            ("stages/plan.awk", ""),
        ]
    );
    let again = orch(&dir, &["build"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
}

#[test]
fn render_resumes_from_a_stage_and_forces_one() {
    let (_tmp, dir) = render_example();
    build_ok(&dir, &["build", "--run-id", "first"]);
    build_ok(&dir, &["build", "--from", "assets", "--run-id", "from"]);
    assert_eq!(started(&events(&dir, "from")), ["assets", "plan", "render"]);
    // The same shot list again: a new sidecar, and nothing downstream reruns.
    build_ok(&dir, &["build", "--force", "shots", "--run-id", "forced"]);
    assert_eq!(started(&events(&dir, "forced")), ["shots"]);
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("build/shots.json.meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["run_id"], "forced");
    let again = orch(&dir, &["build"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
}

#[test]
fn market_cuts_at_the_tick_retries_a_failing_feed_and_goes_on_with_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/market"),
        tmp.path(),
    );
    let dir = tmp.path();
    let ok = |out: &Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let read = |rel: &str| std::fs::read_to_string(dir.join(rel)).unwrap();

    // Without a tick: every line of every log.
    ok(&orch(dir, &["build"]));
    assert_eq!(read("build/cut/ACME.jsonl").lines().count(), 30);
    let regimes = read("build/regimes.json");
    assert!(
        regimes.contains("\"symbol\":\"ACME\",\"prices\":30"),
        "{regimes}"
    );

    // At a tick: the lines up to it, and the same again at that tick.
    let at_tick = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_orch"))
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("ORCH_TICK", "2026-11-28T09:04:00Z")
            .output()
            .unwrap()
    };
    ok(&at_tick(&["build"]));
    assert_eq!(read("build/cut/GLOBX.jsonl").lines().count(), 5);
    let again = at_tick(&["build"]);
    ok(&again);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to do"),
        "{again:?}"
    );

    // A failing feed: three attempts, then a recorded failure; the others go on.
    let failed = orch(
        dir,
        &["build", "-k", "--set", "fail_symbol=GLOBX", "--json"],
    );
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&failed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |ty: &str, instance: &str| {
        events
            .iter()
            .filter(|e| e["type"] == ty && e["instance"] == instance)
            .count()
    };
    assert_eq!(of("instance_retrying", "engine[symbol=GLOBX]"), 2);
    assert_eq!(of("instance_failed", "engine[symbol=GLOBX]"), 1);
    assert_eq!(of("instance_completed", "engine[symbol=ACME]"), 1);
    assert_eq!(of("instance_completed", "engine[symbol=INIT]"), 1);
    assert_eq!(of("instance_blocked", "report"), 1);
}
