//! The order in which ready work starts when more is ready than `-j` allows: by the
//! longest expected path below each instance, from the durations recorded by earlier
//! builds; with no history, or with one job, in the graph's order.
//!
//! The first starts of a build are decided before any command ends, so which ones come
//! first does not depend on timing; only the recorded durations (a `sleep` against
//! commands that do nothing) decide the priorities.

use crate::test::*;

/// Four chains of two phases each; only `z_slow`, at the end of the chain declared
/// last, takes a while. By count every chain is as long as the others.
const CHAINS: &str = r#"
[orch]
format = 1

[phase.a1]
run = "true"
[phase.a2]
needs = ["a1"]
run = "true"

[phase.b1]
run = "true"
[phase.b2]
needs = ["b1"]
run = "true"

[phase.c1]
run = "true"
[phase.c2]
needs = ["c1"]
run = "true"

[phase.z_head]
run = "true"
[phase.z_slow]
needs = ["z_head"]
run = "sleep 1"
"#;

/// The first `n` instances started in `run_id`.
fn first_started(out: &Output, run_id: &str, n: usize) -> Vec<String> {
    ran(&out.events(run_id)).into_iter().take(n).collect()
}

#[test]
fn after_one_build_the_head_of_the_longest_chain_starts_first() {
    let first = Test::new()
        .orchfile(CHAINS)
        .args(["build", "-j", "2", "--no-cache", "--run-id", "cold"])
        .run();
    // No history: every chain weighs the same, so the graph's order decides.
    assert_eq!(first_started(&first, "cold", 2), names(&["a1", "b1"]));
    let second = first
        .again()
        .args([
            "build",
            "-j",
            "2",
            "--no-cache",
            "--force-all",
            "--run-id",
            "warm",
        ])
        .run();
    // Which of the later instances starts next depends on which command ends first, so
    // only the first choice, made before anything ran, is checked here; the unit tests
    // of `exec::priority` and `exec::scheduler` check the order itself.
    assert_eq!(first_started(&second, "warm", 2), names(&["z_head", "a1"]));
}

#[test]
fn with_one_job_history_does_not_change_the_order() {
    let first = Test::new()
        .orchfile(CHAINS)
        .args(["build", "-j", "1", "--no-cache", "--run-id", "one"])
        .run();
    let again = first
        .again()
        .args([
            "build",
            "-j",
            "1",
            "--no-cache",
            "--force-all",
            "--run-id",
            "two",
        ])
        .run();
    let order = ran(&again.events("one"));
    assert_eq!(order, ran(&again.events("two")));
    assert_eq!(order[0], "a1");
}

#[test]
fn an_instance_starts_its_longest_recorded_shards_first() {
    let text = r#"
[orch]
format = 1

[phase.pages]
shard = { strategy = "files", source = "texts/*.txt", parallel = 1 }
run = "case {shard.key} in *d.txt) sleep 1;; esac; cat {shard.input} > {shard.output}"
outputs = ["out/pages.txt"]
"#;
    let keys = |out: &Output, run_id: &str| -> Vec<String> {
        of_type(&out.events(run_id), "instance_started")
            .iter()
            .filter_map(|e| e["shard"]["key"].as_str().map(str::to_owned))
            .collect()
    };
    let first = Test::new()
        .orchfile(text)
        .write("texts/a.txt", "a\n")
        .write("texts/b.txt", "b\n")
        .write("texts/c.txt", "c\n")
        .write("texts/d.txt", "d\n")
        .args(["build", "-j", "2", "--no-cache", "--run-id", "cold"])
        .run();
    let paths = |v: &[&str]| {
        v.iter()
            .map(|k| format!("texts/{k}.txt"))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&first, "cold"), paths(&["a", "b", "c", "d"]));
    let second = first
        .again()
        .args([
            "build",
            "-j",
            "2",
            "--no-cache",
            "--force-all",
            "--run-id",
            "warm",
        ])
        .run();
    assert_eq!(keys(&second, "warm")[0], "texts/d.txt");
    assert_eq!(second.read("out/pages.txt"), "a\nb\nc\nd\n");
}
