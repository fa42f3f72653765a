//! Finding and naming things: `orch list`, descriptions in `plan -v` and `status -v`,
//! the exit codes of `plan --exit-code` and `status --check`, `build -n -v` (the
//! commands a build would run), and `orch graph TARGET… --status`.

use serde_json::json;

use crate::test::*;

/// A pipeline with a description, a matrix, `group`/`files`/`chunk` shards, a soft
/// dependency and a dependency implied by files. Declared out of order on purpose.
pub const PIPELINE: &str = r#"[orch]
format = 1

[vars]
langs = ["fr", "de"]

[phase.report]
description = "Count the lines of every route"
run = "cat {inputs} | wc -l > {output}"
inputs = ["build/routes/*.jsonl"]
outputs = ["build/report.txt"]

[phase.routes]
description = "One file per route and language"
needs = ["ingest"]
matrix = { lang = "{vars.langs}" }
shard = { strategy = "group", source = "build/ingest.jsonl", key = "route", parallel = 2 }
run = "{{ echo {matrix.lang} {shard.key}; cat {shard.input}; }} > {shard.output}"
outputs = ["build/routes/{matrix.lang}.jsonl"]

[phase.ingest]
description = "Copy the raw records"
run = "cp raw/records.jsonl {output}"
inputs = ["raw/records.jsonl"]
outputs = ["build/ingest.jsonl"]

[phase.pages]
shard = { strategy = "files", source = "texts/*.txt" }
run = "tr a-z A-Z < {shard.input} > {shard.output}"
outputs = ["out/pages.txt"]

[phase.chunks]
after = ["pages"]
shard = { strategy = "chunk", source = "raw/records.jsonl", size = 2, merge = "none" }
run = "cat {shard.input} > {output}"
outputs = ["out/chunks/{shard.index}.jsonl"]
"#;

/// Records of two routes.
pub const RECORDS: &str =
    "{\"route\":\"a\",\"n\":1}\n{\"route\":\"b\",\"n\":2}\n{\"route\":\"a\",\"n\":3}\n";

/// [`PIPELINE`] with its sources, not yet built.
pub fn pipeline() -> Test {
    Test::new()
        .orchfile(PIPELINE)
        .write("raw/records.jsonl", RECORDS)
        .write("texts/a.txt", "ant\n")
        .write("texts/b.txt", "bee\n")
}

// ---------------------------------------------------------------------------------------
// orch list

#[test]
fn list_shows_phases_in_dependency_order_with_what_the_orchfile_says() {
    let out = pipeline().args(["list"]).run();
    assert_eq!(
        out.stdout,
        "\
ingest  Copy the raw records
pages
        shard: files texts/*.txt, one per file
chunks
        shard: chunk raw/records.jsonl, 2 records each, merge none
routes  One file per route and language
        matrix: lang = de, fr (2 instances)
        shard: group build/ingest.jsonl by `route`, 2 at once
report  Count the lines of every route
5 phases, 6 instances
"
    );
    // `-v` adds what each phase needs or follows.
    out.again()
        .args(["list", "-v"])
        .stdout_contains("chunks\n        after: pages\n        shard: chunk")
        .stdout_contains("routes  One file per route and language\n        needs: ingest\n")
        .run();
    // `-q`: the names alone, for scripts.
    out.again()
        .args(["list", "-q"])
        .stdout_contains("ingest\npages\nchunks\nroutes\nreport\n")
        .run();
}

#[test]
fn list_json_says_the_same() {
    let doc = pipeline().args(["list", "--json"]).run().json();
    assert_eq!(doc["v"], 1);
    let phases: Vec<&str> = doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["ingest", "pages", "chunks", "routes", "report"]);
    let routes = &doc["phases"][3];
    assert_eq!(routes["description"], "One file per route and language");
    assert_eq!(routes["matrix"], json!({"lang": ["de", "fr"]}));
    assert_eq!(
        routes["instances"],
        json!(["routes[lang=de]", "routes[lang=fr]"])
    );
    assert_eq!(routes["needs"], json!(["ingest"]));
    assert_eq!(
        routes["shard"],
        json!({"strategy": "group", "source": "build/ingest.jsonl", "key": "route",
               "merge": "concat", "parallel": 2})
    );
    assert_eq!(doc["phases"][2]["after"], json!(["pages"]));
    assert_eq!(doc["phases"][2]["shard"]["size"], 2);
    assert_eq!(doc["phases"][0]["shard"], json!(null));
    assert_eq!(doc["phases"][0]["executor"], json!(null));
}

#[test]
fn list_includes_fragments_and_names_executors() {
    let out = Test::new()
        .orchfile(
            r#"[orch]
format = 1
include = ["pipelines/*.toml"]

[executor.cluster]
kind = "slurm"

[phase.base]
description = "The base"
executor = "cluster"
run = "echo base > {output}"
outputs = ["out/base.txt"]
"#,
        )
        .write(
            "pipelines/extra.toml",
            "[phase.extra]\nneeds = [\"base\"]\ndescription = \"From a fragment\"\nrun = \"true\"\n",
        )
        .args(["list"])
        .run();
    assert_eq!(
        out.stdout,
        "base   The base\n       executor: cluster (slurm)\nextra  From a fragment\n2 phases, 2 instances\n"
    );
}

#[test]
fn list_of_a_broken_orchfile_is_a_configuration_error() {
    Test::new()
        .orchfile("[orch]\nformat = 1\n[phase.a]\nneeds = [\"nope\"]\nrun = \"true\"\n")
        .args(["list"])
        .expect_status(2)
        .run();
}

// ---------------------------------------------------------------------------------------
// Descriptions in plan -v and status -v

#[test]
fn verbose_plan_and_status_show_descriptions() {
    let out = pipeline()
        .args(["plan", "-v"])
        .stdout_contains("  # Copy the raw records\n")
        .run();
    out.again()
        .args(["plan"])
        .stdout_lacks("Copy the raw records")
        .run();
    let out = out.again().args(["build", "-q"]).run();
    out.again()
        .args(["status", "-v"])
        .stdout_contains("ingest           up to date  # Copy the raw records\n")
        .run();
    out.again()
        .args(["status"])
        .stdout_lacks("# Copy the raw records")
        .run();
}

// ---------------------------------------------------------------------------------------
// plan --exit-code and status --check

#[test]
fn plan_exit_code_is_one_while_anything_would_run() {
    let out = diamond()
        .args(["plan", "--exit-code"])
        .expect_status(1)
        .stdout_contains("would run 4 of 4 instances")
        .run();
    // Without the flag, a stale plan is still a success.
    let out = out.again().args(["plan"]).run();
    let out = out.again().args(["build", "-q"]).run();
    let out = out
        .again()
        .args(["plan", "--exit-code"])
        .stdout_contains("nothing to do: 4 instances up to date")
        .run();
    out.write("raw/1.txt", "uno\n");
    // `-q` prints nothing; the status still answers.
    let out = out
        .again()
        .args(["plan", "--exit-code", "-q"])
        .expect_status(1)
        .run();
    assert_eq!(out.stdout, "");
    // Only the targets' cone counts.
    out.write(
        "Orchfile.toml",
        &format!("{DIAMOND}\n[phase.z]\nrun = \"true\"\n"),
    );
    let out = out
        .again()
        .args(["plan", "--exit-code", "--json", "z"])
        .expect_status(1)
        .run();
    assert_eq!(out.json()["stale"], 1);
    // A configuration error stays 2.
    out.write("Orchfile.toml", "[orch]\nformat = 1\n[phase.a]\nrun = 3\n");
    out.again()
        .args(["plan", "--exit-code"])
        .expect_status(2)
        .run();
}

#[test]
fn status_check_is_one_unless_everything_is_up_to_date() {
    let out = diamond()
        .args(["status", "--check"])
        .expect_status(1)
        .stdout_contains("4 stale")
        .run();
    let out = out.again().args(["build", "-q"]).run();
    let out = out
        .again()
        .args(["status", "--check"])
        .stdout_contains("4 up to date")
        .run();
    // A failure (and what it blocks) fails the check too.
    out.write(
        "Orchfile.toml",
        &DIAMOND.replace("sed 's/^/b:/'", "exit 3; sed 's/^/b:/'"),
    );
    let out = out.again().args(["build", "-q"]).expect_status(1).run();
    let out = out
        .again()
        .args(["status", "--check", "-q"])
        .expect_status(1)
        .run();
    assert_eq!(out.stdout, "");
    let s = out
        .again()
        .args(["status", "--check", "--json"])
        .expect_status(1)
        .run()
        .json();
    assert_eq!(
        (&s["failed"], &s["blocked"], &s["up_to_date"]),
        (&json!(1), &json!(1), &json!(2))
    );
    out.again().args(["status"]).run();
}

// ---------------------------------------------------------------------------------------
// build -n -v

#[test]
fn dry_run_prints_the_commands_it_would_run() {
    let out = diamond()
        .args(["build", "-n", "-v"])
        .stdout_contains("would run 4 of 4 instances:")
        .stdout_contains("      $ cat raw/1.txt raw/2.txt > out/a.txt\n")
        .stdout_contains("      $ sed 's/^/b:/' out/a.txt > out/b.txt\n")
        .run();
    assert!(!out.exists("out/a.txt"));
    assert!(!out.exists(".orch/state.db"));
    // Without `-v`, the plan alone.
    out.again()
        .args(["build", "--dry-run"])
        .stdout_lacks("$ ")
        .run();
}

#[test]
fn dry_run_shows_shards_when_their_split_is_known() {
    let out = pipeline()
        .args(["build", "-n", "-v", "pages", "routes"])
        .run();
    let text = &out.stdout;
    // `files`: the split is known now, one command per shard.
    assert!(
        text.contains("      #0 $ tr a-z A-Z < texts/a.txt > .orch/shards/pages/"),
        "{text}"
    );
    assert!(
        text.contains("      #1 $ tr a-z A-Z < texts/b.txt > "),
        "{text}"
    );
    // `group` of an output not built yet: the template, said to be one.
    assert!(
        text.contains(
            "      $ { echo fr {shard.key}; cat {shard.input}; } > {shard.output}\n        (for each shard; the split is known once its upstreams have run)\n"
        ),
        "{text}"
    );
    // Once `ingest` has run, each stale shard of `routes` is shown.
    let out = out.again().args(["build", "ingest", "-q"]).run();
    let out = out
        .again()
        .args(["build", "-n", "-v", "routes[lang=fr]"])
        .run();
    let shards: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(shards.len(), 2, "{}", out.stdout);
    assert!(
        shards[0].contains("$ { echo fr a; cat '.orch/shards/"),
        "{}",
        out.stdout
    );
}

// ---------------------------------------------------------------------------------------
// orch graph TARGET… --status

fn graph_instances(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["instance"].as_str().unwrap().to_owned(),
                n["status"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

#[test]
fn graph_of_targets_draws_their_cone() {
    let out = diamond().args(["build", "-q"]).run();
    let doc = out
        .again()
        .args(["graph", "--format", "json", "b"])
        .run()
        .json();
    assert_eq!(doc["targets"], json!(["b"]));
    let shown: Vec<String> = graph_instances(&doc).into_iter().map(|(n, _)| n).collect();
    assert_eq!(shown, ["a", "b"]);
    assert_eq!(
        doc["edges"],
        json!([{"from": "a", "to": "b", "kind": "needs"}])
    );
    // An output path names its producer, as `build` takes it.
    let dot = out.again().args(["graph", "out/c.txt"]).run().stdout;
    assert!(dot.contains("\"a\" -> \"c\";"), "{dot}");
    assert!(!dot.contains("\"b\""), "{dot}");
    out.again().args(["graph", "nope"]).expect_status(2).run();
}

#[test]
fn graph_status_colours_each_node_by_its_state() {
    let t = Test::new()
        .orchfile(&DIAMOND.replace("sed 's/^/b:/'", "exit 3; sed 's/^/b:/'"))
        .write("raw/1.txt", "one\n")
        .write("raw/2.txt", "two\n");
    let out = t.args(["build", "-k", "-q"]).expect_status(1).run();
    let doc = out
        .again()
        .args(["graph", "--status", "--format", "json"])
        .run()
        .json();
    let states: Vec<(String, String)> = graph_instances(&doc);
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    assert_eq!(
        states,
        pairs(&[
            ("a", "up_to_date"),
            ("b", "failed"),
            ("c", "up_to_date"),
            ("d", "blocked")
        ])
    );
    out.write("raw/2.txt", "deux\n");
    let dot = out.again().args(["graph", "--status", "c"]).run().stdout;
    assert!(
        dot.contains("\"c\" [style=filled, fillcolor=\"#fff59d\", tooltip=\"stale\"];"),
        "{dot}"
    );
    assert!(dot.contains("label=\"legend\""), "{dot}");
    assert!(dot.contains("[label=\"up to date\", style=filled"), "{dot}");
    let mermaid = out
        .again()
        .args(["graph", "--status", "--format", "mermaid"])
        .run()
        .stdout;
    assert!(
        mermaid.contains("  classDef failed fill:#ef9a9a"),
        "{mermaid}"
    );
    assert!(mermaid.contains("  subgraph legend\n"), "{mermaid}");
    // Without `--status`, no colours and no `status` field.
    let plain = out.again().args(["graph"]).run().stdout;
    assert!(!plain.contains("fillcolor"), "{plain}");
    let doc = out.again().args(["graph", "--format", "json"]).run().json();
    assert!(doc["instances"][0].get("status").is_none());
}
