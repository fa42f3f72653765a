//! `orch verify`: deterministic projects verify, a phase that writes the time or random
//! bytes is found with its first differing line, shards are re-run too, the project
//! is left as it was, and never-built or out-of-date instances are compared with a first
//! scratch build.

use std::collections::BTreeMap;
use std::path::Path;

use crate::test::*;

/// Every file under `dir` with its content: what "unchanged" means.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

const DETERMINISTIC: &str = r#"
[phase.upper]
run = "mkdir -p out && tr a-z A-Z < words.txt > out/upper.txt"
inputs = ["words.txt"]
outputs = ["out/upper.txt"]

[phase.count]
matrix = { part = ["a", "b", "c"] }
needs = ["upper"]
run = "wc -l < out/upper.txt > {output}; echo {matrix.part} >> {output}"
outputs = ["out/count-{matrix.part}.txt"]

[phase.tree]
needs = ["count"]
run = "mkdir -p out/tree/x && cat out/count-*.txt > out/tree/all.txt && echo one > out/tree/x/one.txt"
outputs = ["out/tree/"]
"#;

#[test]
fn a_deterministic_project_verifies() {
    let built = Test::new()
        .orchfile(DETERMINISTIC)
        .write("words.txt", "alpha\nbeta\n")
        .run();
    built
        .again()
        .args(["verify", "--seed", "42"])
        .stdout_contains("seed 42")
        .stdout_contains("round 1: -j 1")
        .stdout_contains("round 2: -j 2")
        .stdout_contains("verified: every output of 5 instances is the same in 3 rounds")
        .stdout_lacks("never built")
        .run();
}

const CLOCK: &str = r#"
[phase.base]
run = "mkdir -p out && cp in.txt out/base.txt"
inputs = ["in.txt"]
outputs = ["out/base.txt"]

[phase.stamp]
needs = ["base"]
run = "{{ echo header; date +%s%N; }} > out/stamp.txt"
outputs = ["out/stamp.txt"]
"#;

#[test]
fn a_phase_that_writes_the_time_is_found_with_its_first_differing_line() {
    let built = Test::new().orchfile(CLOCK).write("in.txt", "x\n").run();
    let recorded_line = built
        .read("out/stamp.txt")
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    let out = built
        .again()
        .args(["verify", "--rounds", "1"])
        .expect_status(1)
        .stdout_contains("differs: stamp (round 1: -j 1")
        .stdout_contains("out/stamp.txt: recorded ")
        .stdout_contains("first difference at line 2:")
        .stdout_contains(&format!("recorded: \"{recorded_line}\""))
        .stdout_contains("not reproducible: 1 instance differs: stamp")
        .stdout_lacks("differs: base")
        .run();
    assert!(out.stdout.contains("scratch:  \""), "{}", out.stdout);
}

#[test]
fn random_in_a_shard_is_found_and_deterministic_shards_verify() {
    let shards = |run: &str| {
        format!(
            r#"
[phase.routes]
shard = {{ strategy = "group", source = "records.jsonl", key = "route" }}
run = '''{run}'''
outputs = ["out/routes.jsonl"]
"#
        )
    };
    let records = "{\"route\":\"a\"}\n{\"route\":\"b\"}\n{\"route\":\"c\"}\n{\"route\":\"a\"}\n";
    Test::new()
        .orchfile(&shards("cat {shard.input} > {shard.output}"))
        .write("records.jsonl", records)
        .run()
        .again()
        .args(["verify", "--rounds", "3"])
        .stdout_contains("verified: every output of 1 instance is the same in 3 rounds")
        .run();

    Test::new()
        .orchfile(&shards(
            "{{ cat {shard.input}; head -c 8 /dev/urandom | od -An -tx1; }} > {shard.output}",
        ))
        .write("records.jsonl", records)
        .run()
        .again()
        .args(["verify", "--rounds", "1"])
        .expect_status(1)
        .stdout_contains("differs: routes")
        .stdout_contains("out/routes.jsonl: recorded ")
        .stdout_contains("first difference at line 3:")
        .run();
}

#[test]
fn verify_leaves_the_project_as_it_was() {
    let built = Test::new().orchfile(CLOCK).write("in.txt", "x\n").run();
    let before = tree(built.path());
    let cache_entries = built.list(".orch/cache").len();
    built
        .again()
        .args(["verify", "--rounds", "2"])
        .expect_status(1)
        .run();
    assert_eq!(tree(built.path()), before);
    assert_eq!(built.list(".orch/cache").len(), cache_entries);
    // The record still holds what the project's own build produced.
    built.again().stdout_lacks("stamp").run();
}

#[test]
fn an_unknown_target_or_no_rounds_is_a_usage_error() {
    let p = Test::new().orchfile(CLOCK).write("in.txt", "x\n").run();
    p.again()
        .args(["verify", "nope"])
        .expect_status(2)
        .stderr_contains("unknown target `nope`")
        .run();
    p.again()
        .args(["verify", "--rounds", "0"])
        .expect_status(2)
        .stderr_contains("--rounds")
        .run();
}

#[test]
fn a_never_built_project_is_compared_with_a_first_scratch_build_and_left_unbuilt() {
    let t = Test::new()
        .orchfile(DETERMINISTIC)
        .write("words.txt", "alpha\n");
    let before = tree(t.project().path());
    let out = t
        .args(["verify", "--rounds", "2"])
        .stdout_contains("5 instances never built or out of date")
        .stdout_contains("verified: every output of 5 instances is the same in 2 rounds")
        .run();
    assert_eq!(tree(out.path()), before);

    let t = Test::new().orchfile(CLOCK).write("in.txt", "x\n");
    let out = t
        .args(["verify", "--rounds", "1"])
        .expect_status(1)
        .stdout_contains("differs: stamp")
        .stdout_contains("first difference at line 2:")
        .run();
    assert!(!out.exists(".orch"), "verify created `.orch/`");
    assert!(!out.exists("out"), "verify built in the project");
}

#[test]
fn an_out_of_date_instance_is_compared_with_a_first_scratch_build() {
    let built = Test::new()
        .orchfile(DETERMINISTIC)
        .write("words.txt", "alpha\n")
        .run();
    built.write("words.txt", "alpha\ngamma\n");
    built
        .again()
        .args(["verify", "--rounds", "1", "upper"])
        .stdout_contains("1 instance never built or out of date")
        .stdout_contains("verified: every output of 1 instance is the same in 1 round")
        .run();
}

#[test]
fn a_command_that_fails_in_the_scratch_copy_fails_verification() {
    // It succeeds only without `TZ`, which every round sets.
    let built = Test::new()
        .orchfile(
            r#"
[phase.zone]
run = "test -z \"$TZ\" && echo ok > out.txt"
outputs = ["out.txt"]
"#,
        )
        .env_remove("TZ")
        .run();
    built
        .again()
        .env_remove("TZ")
        .args(["verify", "--rounds", "1"])
        .expect_status(1)
        .stdout_contains("failed: zone (round 1: -j 1, TZ=")
        .stdout_contains("failed in the scratch copy: zone")
        .run();
}

#[test]
fn the_ready_order_is_shuffled() {
    // Six instances ready at once append to one scratch file; the last copies it. Built
    // in rank order the file is 1..6; a shuffled round writes another order.
    let orchfile = r#"
[phase.append]
matrix = { n = ["1", "2", "3", "4", "5", "6"] }
run = "echo {matrix.n} >> order.log"
outputs = []

[phase.collect]
after = ["append"]
run = "cp order.log order.txt && rm order.log"
outputs = ["order.txt"]
"#;
    let built = Test::new()
        .orchfile(orchfile)
        .args(["build", "-j", "1"])
        .run();
    assert_eq!(built.read("order.txt"), "1\n2\n3\n4\n5\n6\n");
    built
        .again()
        .args(["verify", "--rounds", "1", "--seed", "3", "collect"])
        .expect_status(1)
        .stdout_contains("differs: collect (round 1: -j 1")
        .run();
}
