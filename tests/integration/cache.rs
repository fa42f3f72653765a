//! The content-addressed cache: results restored instead of rebuilt, verified byte for
//! byte, shared between checkouts, bounded by `gc --max-size`, and bypassed when asked.

use crate::test::{Test, cached, event, ran};

const TWO: &str = r#"[phase.gen]
run = "mkdir -p out/tree/sub; cat {inputs} | tr a-z A-Z > out/up.txt; echo '#!/bin/sh' > out/tree/run.sh; chmod +x out/tree/run.sh; echo x > out/tree/sub/x"
inputs = ["in.txt"]
outputs = ["out/up.txt", "out/tree/"]

[phase.use]
needs = ["gen"]
run = "cat out/up.txt out/tree/sub/x > {output}"
outputs = ["out/use.txt"]
"#;

#[test]
fn deleted_outputs_are_restored_not_rebuilt_with_identical_bytes_and_modes() {
    let first = Test::new()
        .orchfile(TWO)
        .write("in.txt", "hello\n")
        .args(["build", "--run-id", "one"])
        .run();
    let before = (first.read("out/up.txt"), first.read("out/use.txt"));
    std::fs::remove_dir_all(first.join("out")).unwrap();
    let out = first
        .again()
        .args(["build", "--run-id", "two"])
        .stdout_contains("restored from the local cache")
        .run();
    let events = out.events("two");
    assert!(ran(&events).is_empty(), "nothing runs: {:?}", ran(&events));
    assert_eq!(cached(&events), ["gen", "use"]);
    assert_eq!(event(&events, "instance_cached", "gen")["source"], "local");
    assert_eq!((out.read("out/up.txt"), out.read("out/use.txt")), before);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(out.join("out/tree/run.sh"))
            .unwrap()
            .permissions(),
    );
    assert_ne!(mode & 0o111, 0, "the execute bit round-trips");
    assert_eq!(out.read("out/tree/sub/x"), "x\n");
    // Restored results are recorded: the next build is a no-op.
    out.again().stdout_contains("nothing to do").run();
    let summary: serde_json::Value =
        serde_json::from_str(&out.read(".orch/runs/two/summary.json")).unwrap();
    assert_eq!(summary["counts"]["cached"], 2);
    assert_eq!(summary["cache"]["local_hits"], 2);
}

#[test]
fn an_input_changed_back_is_restored_from_the_cache() {
    let first = Test::new()
        .orchfile(TWO)
        .write("in.txt", "a\n")
        .args(["build"])
        .run();
    first.write("in.txt", "b\n");
    first.again().args(["build"]).run();
    first.write("in.txt", "a\n");
    let out = first.again().args(["build", "--run-id", "back"]).run();
    assert_eq!(cached(&out.events("back")), ["gen", "use"]);
    assert_eq!(out.read("out/use.txt"), "A\nx\n");
}

#[test]
fn a_corrupted_blob_is_never_restored() {
    let first = Test::new()
        .orchfile(TWO)
        .write("in.txt", "hello\n")
        .args(["build"])
        .run();
    // Corrupt every stored blob.
    for e in walk(&first.join(".orch/cache/cas")) {
        std::fs::write(&e, "garbage").unwrap();
    }
    std::fs::remove_file(first.join("out/up.txt")).unwrap();
    let out = first
        .again()
        .args(["build", "--run-id", "c"])
        .stderr_contains("corrupt")
        .run();
    let events = out.events("c");
    assert!(cached(&events).is_empty());
    assert!(
        ran(&events).contains(&"gen".to_owned()),
        "the instance runs instead"
    );
    assert_eq!(out.read("out/up.txt"), "HELLO\n");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn no_cache_cache_false_and_force_never_restore() {
    let first = Test::new()
        .orchfile(TWO)
        .write("in.txt", "hello\n")
        .args(["build"])
        .run();
    std::fs::remove_dir_all(first.join("out")).unwrap();
    let out = first
        .again()
        .args(["build", "--no-cache", "--run-id", "nc"])
        .run();
    assert!(cached(&out.events("nc")).is_empty());
    assert_eq!(ran(&out.events("nc")).len(), 2);
    let out = out
        .again()
        .args(["build", "--force", "--run-id", "f"])
        .run();
    assert!(cached(&out.events("f")).is_empty());

    let off = TWO.replace("[phase.use]\n", "[phase.use]\ncache = false\n");
    let t = Test::new()
        .orchfile(&off)
        .write("in.txt", "hello\n")
        .args(["build"])
        .run();
    std::fs::remove_dir_all(t.join("out")).unwrap();
    let out = t.again().args(["build", "--run-id", "off"]).run();
    assert_eq!(cached(&out.events("off")), ["gen"]);
    assert_eq!(ran(&out.events("off")), ["use"]);
}

#[test]
fn two_checkouts_sharing_a_cache_directory_build_once() {
    let shared = tempfile::tempdir().unwrap();
    let orchfile = format!("[cache]\ndir = \"{}\"\n\n{TWO}", shared.path().display());
    Test::new()
        .orchfile(&orchfile)
        .write("in.txt", "hello\n")
        .args(["build"])
        .run();
    let second = Test::new()
        .orchfile(&orchfile)
        .write("in.txt", "hello\n")
        .args(["build", "--run-id", "s"])
        .run();
    let events = second.events("s");
    assert!(
        ran(&events).is_empty(),
        "the second checkout builds nothing: {:?}",
        ran(&events)
    );
    assert_eq!(second.read("out/use.txt"), "HELLO\nx\n");
}

#[test]
fn gc_max_size_trims_and_clean_cache_empties_it() {
    let t = Test::new()
        .orchfile(TWO)
        .write("in.txt", "hello\n")
        .args(["build"])
        .run();
    assert!(!walk(&t.join(".orch/cache")).is_empty());
    t.again()
        .args(["gc", "--max-size", "0"])
        .stdout_contains("trimmed the cache")
        .run();
    assert!(walk(&t.join(".orch/cache/ac")).is_empty());
    assert!(walk(&t.join(".orch/cache/cas")).is_empty());
    std::fs::remove_file(t.join("out/use.txt")).unwrap();
    let out = t.again().args(["build", "--run-id", "after-gc"]).run();
    assert_eq!(
        ran(&out.events("after-gc")),
        ["use"],
        "nothing cached any more"
    );
    out.again().args(["clean", "--cache"]).run();
    // Its entries go; the tagged directory stays.
    assert_eq!(out.list(".orch/cache"), ["CACHEDIR.TAG"]);
}
