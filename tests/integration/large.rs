//! Large outputs and the cache: outputs copied into the store while they are hashed and
//! put in place off the build's path, `[cache] max_blob` (not stored, said once, counted
//! in `summary.json`, foreseen by `plan`), and no staged copy left behind.

use crate::test::{Project, Test, cached, ran};

/// A phase writing 12 MiB (large enough that the store copies it on two threads) beside a
/// small file, and a downstream reading it.
const BIG: &str = r#"[phase.gen]
run = "cat seed > out/big.bin && head -c 12582912 /dev/zero | tr '\\0' x >> out/big.bin && cat seed > out/small.txt"
inputs = ["seed"]
outputs = ["out/big.bin", "out/small.txt"]

[phase.use]
run = "wc -c < out/big.bin > {output}"
inputs = ["out/big.bin"]
outputs = ["out/count.txt"]
"#;

/// Regular files under `rel`, recursively, relative to it, sorted.
fn files_under(p: &Project, rel: &str) -> Vec<String> {
    let root = p.join(rel);
    let mut out: Vec<String> = walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    out.sort();
    out
}

fn summary(p: &Project, run: &str) -> serde_json::Value {
    serde_json::from_str(&p.read(&format!(".orch/runs/{run}/summary.json"))).unwrap()
}

#[test]
fn a_large_output_is_stored_whole_and_restored_byte_for_byte() {
    let first = Test::new()
        .orchfile(BIG)
        .write("seed", "1\n")
        .write("out/.keep", "")
        .args(["build", "--run-id", "one"])
        .run();
    let big = std::fs::read(first.join("out/big.bin")).unwrap();
    assert_eq!(big.len(), 2 + 12 * 1024 * 1024);
    assert_eq!(first.read("out/count.txt").trim(), big.len().to_string());
    // Every staged copy was put in place before the build ended: nothing is left in tmp/.
    assert_eq!(files_under(&first, ".orch/cache/tmp"), Vec::<String>::new());
    assert_eq!(files_under(&first, ".orch/cache/cas").len(), 3);
    std::fs::remove_file(first.join("out/big.bin")).unwrap();
    std::fs::remove_file(first.join("out/small.txt")).unwrap();
    let out = first
        .again()
        .args(["build", "--run-id", "two"])
        .stdout_contains("restored from the local cache")
        .run();
    let events = out.events("two");
    assert_eq!(cached(&events), ["gen"]);
    assert!(ran(&events).is_empty(), "{:?}", ran(&events));
    assert_eq!(std::fs::read(out.join("out/big.bin")).unwrap(), big);
    assert_eq!(out.read("out/small.txt"), "1\n");
    assert!(summary(&out, "one")["cache"].get("too_large").is_none());
}

#[test]
fn a_result_changed_under_the_build_leaves_no_staged_copy() {
    // The command edits its own input after writing its output: nothing is recorded or
    // cached, and the copy made while the output was hashed is removed.
    let out = Test::new()
        .orchfile(
            r#"[phase.gen]
run = "head -c 9437184 /dev/zero > {output} && echo more >> in.txt"
inputs = ["in.txt"]
outputs = ["out.bin"]
"#,
        )
        .write("in.txt", "a\n")
        .args(["build"])
        .run();
    assert_eq!(files_under(&out, ".orch/cache/tmp"), Vec::<String>::new());
    assert_eq!(files_under(&out, ".orch/cache/cas"), Vec::<String>::new());
    assert_eq!(files_under(&out, ".orch/cache/ac"), Vec::<String>::new());
}

const LIMITED: &str = r#"[cache]
max_blob = "1KiB"

[phase.big]
run = "head -c 2048 /dev/zero | tr '\\0' {vars.fill} > {output}"
inputs = ["seed"]
outputs = ["big.bin"]

[phase.tree]
run = "mkdir -p {output} && head -c 4096 /dev/zero > {output}/inner.bin"
inputs = ["seed"]
outputs = ["tree/"]

[phase.small]
run = "cat seed > {output}"
inputs = ["seed"]
outputs = ["small.txt"]

[vars]
fill = "y"
"#;

#[test]
fn results_holding_a_file_above_max_blob_are_not_stored_and_say_so() {
    let first = Test::new()
        .orchfile(LIMITED)
        .write("seed", "1\n")
        .args(["build", "--run-id", "one"])
        .stderr_contains(
            "warning: big: not cached: `big.bin` is 2 KiB, above `[cache] max_blob` (1 KiB)",
        )
        .stderr_contains(
            "tree: not cached: `tree/inner.bin` is 4 KiB, above `[cache] max_blob` (1 KiB)",
        )
        .run();
    assert_eq!(summary(&first, "one")["cache"]["too_large"], 2);
    // Only the small result is stored.
    assert_eq!(files_under(&first, ".orch/cache/ac").len(), 1);
    assert_eq!(files_under(&first, ".orch/cache/cas").len(), 1);

    // `plan` foresees it from the outputs the last build left.
    first.write("seed", "2\n");
    let plan = first.again().args(["plan"]).run();
    assert!(
        plan.stdout
            .contains("not cacheable: `big.bin` is 2 KiB, above `[cache] max_blob` (1 KiB)"),
        "{}",
        plan.stdout
    );
    let json = first.again().args(["plan", "--json"]).run().json();
    let entry = crate::test::plan_entry(&json, "tree");
    assert_eq!(entry["not_cacheable"]["path"], "tree/inner.bin");
    assert_eq!(entry["not_cacheable"]["size"], 4096);
    assert_eq!(entry["not_cacheable"]["max_blob"], 1024);
    assert!(
        crate::test::plan_entry(&json, "small")
            .get("not_cacheable")
            .is_none()
    );

    // Back to the first input: the small result is restored, the large ones run again.
    first.again().args(["build"]).run();
    first.write("seed", "1\n");
    let out = first.again().args(["build", "--run-id", "back"]).run();
    let events = out.events("back");
    assert_eq!(cached(&events), ["small"]);
    // Sorted: with two jobs the recorded durations decide which starts first.
    let mut ran = ran(&events);
    ran.sort();
    assert_eq!(ran, ["big", "tree"]);
}

#[test]
fn a_bad_max_blob_is_a_config_error() {
    for (value, says) in [
        ("\"12X\"", "not a size"),
        ("\"1.G\"", "not a size"),
        ("\"0\"", "zero would store nothing"),
    ] {
        Test::new()
            .orchfile(&format!(
                "[cache]\nmax_blob = {value}\n\n[phase.a]\nrun = \"true\"\n"
            ))
            .args(["build"])
            .expect_status(2)
            .stderr_contains("invalid `max_blob` size")
            .stderr_contains(says)
            .run();
    }
    Test::new()
        .orchfile("[cache]\nmax_blob = \"1.5 GiB\"\n\n[phase.a]\nrun = \"true\"\n")
        .args(["build"])
        .run();
}
