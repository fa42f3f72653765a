//! The other subcommands: plan, status, explain, graph, check, init, schema; includes,
//! `-f`, and the state directory.

use crate::test::*;

#[test]
fn plan_in_words() {
    let out = diamond()
        .args(["plan"])
        .stdout_contains("would run 4 of 4 instances:")
        .stdout_contains("never_built")
        .run();
    assert!(!out.exists(".orch/runs"), "plan recorded a run");
    assert!(!out.exists("out"), "plan ran something");
    let out = out.again().run();
    out.again()
        .args(["plan"])
        .stdout_contains("nothing to do: 4 instances up to date")
        .run();
    out.write("raw/1.txt", "uno\n");
    out.again()
        .args(["plan"])
        .stdout_contains("would run 4 of 4 instances:")
        .stdout_contains("input_changed (raw/1.txt)")
        .stdout_contains("upstream_changed (a)")
        .run();
    // A target narrows the plan.
    let p = out.again().args(["plan", "--json", "b"]).run().json();
    assert_eq!(p["total"], 2);
    assert_eq!(p["targets"], serde_json::json!(["b"]));
}

#[test]
fn plan_json_with_force_and_from() {
    let out = built_diamond();
    let p = out.again().args(["plan", "--json", "--force"]).run().json();
    assert_eq!(p["stale"], 4);
    assert_eq!(reasons(&p, "a"), ["forced"]);
    assert!(reasons(&p, "c").contains(&"forced".to_owned()));
    let p = out
        .again()
        .args(["plan", "--json", "--from", "c"])
        .run()
        .json();
    assert_eq!(p["stale"], 2);
    assert_eq!(reasons(&p, "c"), ["forced"]);
    assert!(reasons(&p, "d").contains(&"forced".to_owned()));
    assert_eq!(plan_entry(&p, "b")["status"], "up_to_date");
}

#[test]
fn status_lists_every_instance() {
    let out = diamond().args(["status"]).stdout_contains("4 stale").run();
    for n in ["a", "b", "c", "d"] {
        assert!(
            out.stdout.lines().any(|l| l.starts_with(&format!("{n} "))),
            "{n} missing:\n{}",
            out.stdout
        );
    }
    let out = out.again().run();
    let out = out
        .again()
        .args(["status"])
        .stdout_contains("4 up to date")
        .run();
    for n in ["a", "b", "c", "d"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(n) && l.ends_with("up to date")),
            "{n}:\n{}",
            out.stdout
        );
    }

    out.write("raw/2.txt", "deux\n");
    let s = out.again().args(["status", "--json"]).run().json();
    assert_eq!(s["instances"].as_array().unwrap().len(), 4);
    assert_eq!(plan_entry(&s, "a")["status"], "stale");
    assert_eq!(reasons(&s, "a"), ["input_changed"]);
    assert_eq!(plan_entry(&s, "d")["status"], "stale");
}

#[test]
fn explain_names_the_changed_input() {
    let out = built_diamond();
    out.again()
        .args(["explain", "a"])
        .stdout_contains("a: up to date")
        .stdout_contains("last success: run first")
        .stdout_contains("nothing differs")
        .run();
    out.write("raw/2.txt", "deux\n");
    let e = out.again().args(["explain", "a"]).run();
    assert!(e.stdout.contains("a: stale"), "{}", e.stdout);
    assert!(
        e.stdout
            .lines()
            .any(|l| l.contains("input") && l.contains("changed") && l.contains("raw/2.txt")),
        "{}",
        e.stdout
    );
    assert!(!e.stdout.contains("raw/1.txt"), "{}", e.stdout);
    out.again()
        .args(["explain", "b"])
        .stdout_contains("upstream will run first: `a`")
        .run();
}

#[test]
fn explain_names_the_changed_command_environment_and_upstream() {
    let orchfile = r#"
[orch]
format = 1

[phase.up]
run = "echo up > {output}"
outputs = ["out/up.txt"]

[phase.down]
needs = ["up"]
env = ["ORCH_IT_FLAVOUR"]
run = "cat {needs.up.outputs} > {output}"
outputs = ["out/down.txt"]
"#;
    let out = Test::new()
        .orchfile(orchfile)
        .env("ORCH_IT_FLAVOUR", "vanilla")
        .run();
    // A command change shows both versions.
    out.write("Orchfile.toml", &orchfile.replace("echo up", "echo UP"));
    out.again()
        .args(["explain", "up"])
        .env("ORCH_IT_FLAVOUR", "vanilla")
        .stdout_contains("command  changed")
        .stdout_contains("- echo up > out/up.txt")
        .stdout_contains("+ echo UP > out/up.txt")
        .run();
    // After the upstream rebuilt with new output, the downstream names it.
    out.again()
        .args(["build", "up"])
        .env("ORCH_IT_FLAVOUR", "vanilla")
        .run();
    out.again()
        .args(["explain", "down"])
        .env("ORCH_IT_FLAVOUR", "chocolate")
        .stdout_contains("down: stale")
        .stdout_contains("upstream changed  up: out/up.txt")
        .stdout_contains("env      changed   ORCH_IT_FLAVOUR")
        .stdout_lacks("chocolate")
        .run();
}

#[test]
fn explain_a_never_built_or_unknown_instance() {
    diamond()
        .args(["explain", "d"])
        .stdout_contains("d: never built successfully")
        .run();
    diamond()
        .args(["explain", "zzz"])
        .expect_status(2)
        .stderr_contains("unknown target `zzz`")
        .run();
}

const SOFT_GRAPH: &str = r#"
[orch]
format = 1

[phase.a]
description = "first"
run = "echo a > {output}"
outputs = ["out/a.txt"]

[phase.b]
needs = ["a"]
run = "echo b > {output}"
outputs = ["out/b.txt"]

[phase.c]
after = ["b"]
run = "echo c"
"#;

#[test]
fn graph_json_has_instances_and_edges() {
    let g = Test::new()
        .orchfile(SOFT_GRAPH)
        .args(["graph", "--format", "json"])
        .run()
        .json();
    let instances: Vec<&str> = g["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    assert_eq!(instances, ["a", "b", "c"]);
    assert_eq!(g["instances"][0]["description"], "first");
    assert_eq!(
        g["instances"][0]["outputs"],
        serde_json::json!(["out/a.txt"])
    );
    assert_eq!(
        g["edges"],
        serde_json::json!([
            {"from": "a", "to": "b", "kind": "needs"},
            {"from": "b", "to": "c", "kind": "after"},
        ])
    );
}

#[test]
fn graph_dot_and_mermaid() {
    let t = Test::new().orchfile(SOFT_GRAPH);
    let p = t.project().clone();
    let dot = t.args(["graph", "--format", "dot"]).run();
    assert!(dot.stdout.starts_with("digraph orch {"), "{}", dot.stdout);
    assert!(dot.stdout.contains("\"a\" -> \"b\";"), "{}", dot.stdout);
    assert!(
        dot.stdout.contains("\"b\" -> \"c\" [style=dashed];"),
        "{}",
        dot.stdout
    );
    // dot is the default.
    let default = p.test().args(["graph"]).run();
    assert_eq!(default.stdout, dot.stdout);
    let mermaid = p.test().args(["graph", "--format", "mermaid"]).run();
    assert!(
        mermaid.stdout.starts_with("flowchart LR"),
        "{}",
        mermaid.stdout
    );
    assert_eq!(
        mermaid.stdout.matches("-->").count(),
        1,
        "{}",
        mermaid.stdout
    );
    assert_eq!(
        mermaid.stdout.matches("-.->").count(),
        1,
        "{}",
        mermaid.stdout
    );
}

#[test]
fn check_validates_without_running() {
    let out = diamond()
        .args(["check"])
        .stdout_contains("Orchfile.toml: ok (4 phases, 4 instances)")
        .run();
    assert!(!out.exists("out"));
    assert!(!out.exists(".orch"));
}

#[test]
fn init_creates_a_working_orchfile() {
    let out = Test::new()
        .args(["init"])
        .stdout_contains("created Orchfile.toml")
        .run();
    let orchfile = out.read("Orchfile.toml");
    out.again().args(["check"]).stdout_contains("ok").run();
    let out = out.again().args(["build", "--run-id", "b"]).run();
    assert!(!ran(&out.events("b")).is_empty());
    let counts = out.read("build/counts.txt");
    assert!(counts.contains("the"), "{counts}");
    out.again().stdout_contains("nothing to do").run();
    // Never overwrites.
    out.again()
        .args(["init"])
        .expect_status(2)
        .stderr_contains("already exists")
        .run();
    assert_eq!(out.read("Orchfile.toml"), orchfile);
}

#[test]
fn schema_is_json_schema_of_the_orchfile() {
    let s = Test::new().args(["schema"]).run().json();
    assert!(s["$schema"].is_string(), "{s:#}");
    for key in ["orch", "vars", "phase"] {
        assert!(s["properties"][key].is_object(), "{key}: {s:#}");
    }
    // A phase is whatever `phase.NAME` refers to.
    let phase_ref = s["properties"]["phase"]["additionalProperties"]["$ref"]
        .as_str()
        .expect("`phase` values are a $ref");
    let def = phase_ref
        .strip_prefix("#/$defs/")
        .expect("a local definition");
    let phase = &s["$defs"][def]["properties"];
    for key in [
        "description",
        "run",
        "inputs",
        "outputs",
        "needs",
        "after",
        "matrix",
        "env",
        "always",
        "cwd",
    ] {
        assert!(phase[key].is_object(), "{key}: {phase:#}");
    }
}

#[test]
fn state_is_an_sqlite_database_under_dot_orch() {
    let out = built_diamond();
    let db = std::fs::read(out.join(".orch/state.db")).unwrap();
    assert!(db.starts_with(b"SQLite format 3\0"));
    assert!(out.exists(".orch/lock"));
    assert!(out.exists(".orch/logs/first"));
}

#[test]
fn includes_add_phases_and_errors_point_into_the_fragment() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1
include = ["pipelines/*.toml"]

[phase.base]
run = "echo base > {output}"
outputs = ["out/base.txt"]
"#,
        )
        .write(
            "pipelines/extra.toml",
            r#"[vars]
suffix = "!"

[phase.extra]
needs = ["base"]
run = "sed 's/$/{vars.suffix}/' {needs.base.outputs} > {output}"
outputs = ["out/extra.txt"]
"#,
        )
        .args(["check"])
        .stdout_contains("ok (2 phases, 2 instances, 1 included files)")
        .run();
    let out = out.again().run();
    assert_eq!(out.read("out/extra.txt"), "base!\n");

    out.write(
        "pipelines/broken.toml",
        "[phase.broken]\nrun = \"x\"\nneeds = [\"bsae\"]\n",
    );
    out.again()
        .args(["check"])
        .expect_status(2)
        .stderr_contains("pipelines/broken.toml:3:10")
        .stderr_contains("did you mean `base`?")
        .run();
}

#[test]
fn file_flag_selects_another_orchfile() {
    let out = Test::new()
        .write(
            "other.toml",
            "[orch]\nformat = 1\n\n[phase.o]\nrun = \"echo o > {output}\"\noutputs = [\"out/o.txt\"]\n",
        )
        .args(["-f", "other.toml", "build"])
        .run();
    assert_eq!(out.read("out/o.txt"), "o\n");
}

#[test]
fn run_id_cannot_escape_the_state_directory() {
    let out = diamond()
        .args(["build", "--run-id", "../../escaped"])
        .expect_status(2)
        .run();
    assert!(
        !out.exists("escaped"),
        "wrote {}",
        out.join("escaped").display()
    );
}

#[test]
fn reused_run_id_is_a_usage_error() {
    let out = built_diamond();
    let again = out
        .again()
        .args(["build", "--force", "--run-id", "first"])
        .expect_status(2)
        .run();
    assert!(
        !again.stderr.contains("delete .orch/state.db"),
        "{}",
        again.stderr
    );
    // The first run's record is intact.
    assert_eq!(out.events("first").len(), again.events("first").len());
}

#[test]
fn closed_stdout_does_not_panic() {
    let t = diamond().args(["plan", "--json"]);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = t
        .command()
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(o.status.code(), Some(101), "{stderr}");
}

#[test]
fn damaged_state_database_is_set_aside_and_everything_rebuilds() {
    let out = built_diamond();
    out.write(".orch/state.db", "this is not a database");
    let out = out
        .again()
        .args(["build", "--no-cache", "--run-id", "fresh"])
        .stderr_contains("warning: the state database")
        .run();
    assert_eq!(ran(&out.events("fresh")).len(), 4);
    out.again().stdout_contains("nothing to do").run();
}

#[test]
fn version_and_verbose_version() {
    let short = Test::new().args(["-V"]).expect_status(0).run();
    assert!(short.stdout.starts_with("orch "), "{}", short.stdout);
    assert_eq!(short.stdout.lines().count(), 1, "{}", short.stdout);
    let long = Test::new().args(["-vV"]).expect_status(0).run();
    for field in [
        "release: ",
        "commit-hash: ",
        "commit-date: ",
        "build-date: ",
        "host: ",
    ] {
        assert!(long.stdout.contains(field), "{field}: {}", long.stdout);
    }
    // This checkout is a git repository: the commit is known, a full hash.
    let hash = long
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("commit-hash: "))
        .unwrap_or_default();
    assert!(
        hash == "unknown" || (hash.len() == 40 && hash.chars().all(|c| c.is_ascii_hexdigit())),
        "{hash}"
    );
}

#[test]
fn man_pages_are_generated_from_the_command_line() {
    let page = Test::new().args(["man"]).expect_status(0).run();
    assert!(page.stdout.contains(".TH orch 1"), "{}", page.stdout);
    assert!(page.stdout.contains("orch\\-build(1)"), "{}", page.stdout);
    let build = Test::new().args(["man", "build"]).expect_status(0).run();
    assert!(
        build.stdout.contains(".TH orch-build 1"),
        "{}",
        build.stdout
    );
    assert!(
        build.stdout.contains("\\-\\-keep\\-going"),
        "{}",
        build.stdout
    );
    Test::new()
        .args(["man", "frobnicate"])
        .expect_status(2)
        .run();
}
