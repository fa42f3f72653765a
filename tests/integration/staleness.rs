//! Staleness: content addressing (mtimes do not matter), early cutoff, and each reason
//! code, as `plan --json` reports it and as a build acts on it.

use crate::test::*;

fn plan(out: &Output) -> serde_json::Value {
    out.again().args(["plan", "--json"]).run().json()
}

#[test]
fn mtime_only_changes_run_nothing() {
    let out = built_diamond();
    // An input and an output with a new mtime and the same bytes.
    let before = out.mtime("raw/1.txt");
    out.set_mtime_ago("raw/1.txt", 3600);
    assert_ne!(out.mtime("raw/1.txt"), before, "the mtime did not change");
    out.set_mtime_ago("out/b.txt", 7200);
    // Rewriting identical content is a `touch` too.
    out.write("raw/2.txt", "two\n");

    let p = plan(&out);
    assert_eq!(p["stale"], 0, "{p:#}");
    let out = out
        .again()
        .args(["build", "--run-id", "touched"])
        .stdout_contains("nothing to do (4 up to date)")
        .run();
    assert!(ran(&out.events("touched")).is_empty());
}

#[test]
fn reverting_an_edit_before_building_runs_nothing() {
    let out = built_diamond();
    out.write("raw/1.txt", "changed\n");
    assert_eq!(plan(&out)["stale"], 4);
    out.write("raw/1.txt", "one\n");
    let out = out.again().args(["build", "--run-id", "r"]).run();
    assert!(ran(&out.events("r")).is_empty());
}

const SORTED: &str = r#"
[orch]
format = 1

[phase.sorted]
run = "sort {inputs} > {output}"
inputs = ["raw/list.txt"]
outputs = ["out/sorted.txt"]

[phase.shout]
needs = ["sorted"]
run = "tr a-z A-Z < {needs.sorted.outputs} > {output}"
outputs = ["out/shout.txt"]
"#;

#[test]
fn early_cutoff_when_upstream_reproduces_identical_output() {
    let out = Test::new()
        .orchfile(SORTED)
        .write("raw/list.txt", "pear\napple\nfig\n")
        .run();
    assert_eq!(out.read("out/shout.txt"), "APPLE\nFIG\nPEAR\n");
    let shout_mtime = out.mtime("out/shout.txt");

    // Same lines, another order: `sorted` must rerun, and its output is identical.
    out.write("raw/list.txt", "fig\npear\napple\n");
    let p = plan(&out);
    assert_eq!(reasons(&p, "sorted"), ["input_changed"]);
    assert_eq!(reasons(&p, "shout"), ["upstream_changed"]);

    let out = out
        .again()
        .args(["build", "--run-id", "cutoff"])
        .stdout_contains("shout up to date")
        .run();
    let events = out.events("cutoff");
    assert_eq!(ran(&events), names(&["sorted"]));
    let skip = event(&events, "instance_skipped", "shout");
    assert_eq!(skip["early_cutoff"], true, "{skip}");
    assert!(
        of_type(&events, "instance_invalidated")
            .iter()
            .all(|e| e["instance"] != "shout"),
        "shout was invalidated: {events:#?}"
    );
    assert_eq!(
        out.mtime("out/shout.txt"),
        shout_mtime,
        "shout.txt rewritten"
    );
    assert_eq!(
        of_type(&events, "run_completed")[0]["counts"]["up_to_date"],
        1
    );

    // Now nothing is stale: the early-cut instance was not left behind.
    let out = out.again().args(["build", "--run-id", "after"]).run();
    assert!(ran(&out.events("after")).is_empty());

    // A real change goes all the way down.
    out.write("raw/list.txt", "fig\npear\napple\nkiwi\n");
    let out = out.again().args(["build", "--run-id", "real"]).run();
    assert_eq!(ran(&out.events("real")), names(&["sorted", "shout"]));
    assert_eq!(out.read("out/shout.txt"), "APPLE\nFIG\nKIWI\nPEAR\n");
}

#[test]
fn changed_command_reruns_the_phase_and_changed_outputs_propagate() {
    let out = built_diamond();
    out.write("Orchfile.toml", &DIAMOND.replace("s/^/b:/", "s/^/B:/"));
    let p = plan(&out);
    assert_eq!(reasons(&p, "b"), ["command_changed"]);
    assert_eq!(reasons(&p, "d"), ["upstream_changed"]);
    assert_eq!(plan_entry(&p, "a")["status"], "up_to_date");
    assert_eq!(plan_entry(&p, "c")["status"], "up_to_date");

    let out = out.again().args(["build", "--run-id", "cmd"]).run();
    let events = out.events("cmd");
    assert_eq!(ran(&events), names(&["b", "d"]));
    assert_eq!(
        event(&events, "instance_invalidated", "b")["reasons"],
        serde_json::json!(["command_changed"])
    );
    assert_eq!(out.read("out/d.txt"), "B:one\nB:two\nc:one\nc:two\n");
}

#[test]
fn changed_command_with_identical_output_cuts_off_downstream() {
    let out = built_diamond();
    let edited = DIAMOND.replace(
        "sed 's/^/c:/' {needs.a.outputs} > {output}",
        "sed -e 's/^/c:/' {needs.a.outputs} > {output}",
    );
    assert_ne!(edited, DIAMOND);
    out.write("Orchfile.toml", &edited);
    let out = out.again().args(["build", "--run-id", "cmd"]).run();
    let events = out.events("cmd");
    assert_eq!(ran(&events), names(&["c"]));
    assert_eq!(
        event(&events, "instance_skipped", "d")["early_cutoff"],
        true
    );
}

#[test]
fn deleted_output_is_rebuilt() {
    let out = built_diamond();
    out.remove("out/b.txt");
    let p = plan(&out);
    assert_eq!(reasons(&p, "b"), ["output_missing"]);
    assert_eq!(
        plan_entry(&p, "b")["details"],
        serde_json::json!([{"reason": "output_missing", "subject": "out/b.txt"}])
    );
    assert_eq!(plan_entry(&p, "a")["status"], "up_to_date");

    let out = out
        .again()
        .args(["build", "--no-cache", "--run-id", "rm"])
        .run();
    let events = out.events("rm");
    assert_eq!(ran(&events), names(&["b"]));
    assert_eq!(out.read("out/b.txt"), "b:one\nb:two\n");
    // `b` produced the same bytes again: `d` is not rerun.
    assert_eq!(
        event(&events, "instance_skipped", "d")["early_cutoff"],
        true
    );
}

#[test]
fn tampered_output_is_rebuilt_and_restored() {
    let out = built_diamond();
    out.write("out/c.txt", "tampered\n");
    let p = plan(&out);
    assert_eq!(reasons(&p, "c"), ["output_modified"]);
    assert_eq!(
        plan_entry(&p, "c")["details"][0]["subject"],
        "out/c.txt",
        "{p:#}"
    );
    let out = out
        .again()
        .args(["build", "--no-cache", "--run-id", "fix"])
        .run();
    let events = out.events("fix");
    assert_eq!(ran(&events), names(&["c"]));
    assert_eq!(out.read("out/c.txt"), "c:one\nc:two\n");

    // The final output too.
    out.write("out/d.txt", "");
    let out = out
        .again()
        .args(["build", "--no-cache", "--run-id", "fix-d"])
        .run();
    assert_eq!(ran(&out.events("fix-d")), names(&["d"]));
    assert_eq!(out.read("out/d.txt"), "b:one\nb:two\nc:one\nc:two\n");
}

#[test]
fn changed_input_is_named_and_downstream_is_stale_until_built() {
    let out = built_diamond();
    let p = plan(&out);
    assert_eq!(p["stale"], 0);
    assert_eq!(p["up_to_date"], 4);

    out.write("raw/2.txt", "deux\n");
    let p = plan(&out);
    assert_eq!(reasons(&p, "a"), ["input_changed"]);
    assert_eq!(
        plan_entry(&p, "a")["details"],
        serde_json::json!([{"reason": "input_changed", "subject": "raw/2.txt"}])
    );
    for n in ["b", "c"] {
        assert_eq!(reasons(&p, n), ["upstream_changed"]);
        assert_eq!(plan_entry(&p, n)["details"][0]["subject"], "a");
    }
    assert_eq!(reasons(&p, "d"), ["upstream_changed"]);
    assert_eq!(p["stale"], 4);

    let out = out.again().args(["build", "--run-id", "in"]).run();
    let events = out.events("in");
    assert_eq!(sorted(ran(&events)), names(&["a", "b", "c", "d"]));
    assert_eq!(
        event(&events, "instance_invalidated", "a")["details"],
        serde_json::json!([{"reason": "input_changed", "subject": "raw/2.txt"}])
    );
    assert_eq!(out.read("out/a.txt"), "one\ndeux\n");

    let p = plan(&out);
    assert_eq!(p["stale"], 0, "{p:#}");
    for e in p["instances"].as_array().unwrap() {
        assert_eq!(e["status"], "up_to_date");
        assert_eq!(e["reasons"], serde_json::json!([]));
    }
}

#[test]
fn added_and_removed_inputs_are_reasons() {
    let out = built_diamond();
    out.write("raw/3.txt", "three\n");
    let p = plan(&out);
    // `{inputs}` expands into the command, so the command changes with the file set.
    assert!(
        reasons(&p, "a").contains(&"input_added".to_owned()),
        "{p:#}"
    );
    assert!(
        plan_entry(&p, "a")["details"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"reason": "input_added", "subject": "raw/3.txt"})),
        "{p:#}"
    );
    let out = out.again().run();
    assert_eq!(out.read("out/a.txt"), "one\ntwo\nthree\n");

    let p = out
        .again()
        .remove("raw/1.txt")
        .args(["plan", "--json"])
        .run()
        .json();
    assert!(
        plan_entry(&p, "a")["details"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"reason": "input_removed", "subject": "raw/1.txt"})),
        "{p:#}"
    );
    let out = out.again().run();
    assert_eq!(out.read("out/a.txt"), "two\nthree\n");
}

const ENV: &str = r#"
[orch]
format = 1
env = ["ORCH_IT_MYVAR"]

[phase.e]
run = "echo \"$ORCH_IT_MYVAR\" > {output}"
outputs = ["out/e.txt"]

[phase.set]
env = { ORCH_IT_GREETING = "hello" }
run = "echo \"$ORCH_IT_GREETING\" > {output}"
outputs = ["out/set.txt"]
"#;

#[test]
fn declared_environment_variables_are_part_of_the_key() {
    let out = Test::new().orchfile(ENV).env("ORCH_IT_MYVAR", "one").run();
    assert_eq!(out.read("out/e.txt"), "one\n");
    assert_eq!(out.read("out/set.txt"), "hello\n");

    let same = out
        .again()
        .args(["plan", "--json"])
        .env("ORCH_IT_MYVAR", "one")
        .run()
        .json();
    assert_eq!(same["stale"], 0, "{same:#}");

    let p = out
        .again()
        .args(["plan", "--json"])
        .env("ORCH_IT_MYVAR", "two")
        .run()
        .json();
    assert_eq!(reasons(&p, "e"), ["env_changed"]);
    assert_eq!(
        plan_entry(&p, "e")["details"],
        serde_json::json!([{"reason": "env_changed", "subject": "ORCH_IT_MYVAR"}])
    );

    let out = out
        .again()
        .args(["build", "--run-id", "two"])
        .env("ORCH_IT_MYVAR", "two")
        .run();
    // `[orch] env` applies to every phase.
    assert_eq!(sorted(ran(&out.events("two"))), names(&["e", "set"]));
    assert_eq!(out.read("out/e.txt"), "two\n");

    // Unsetting it is a change too.
    let p = out
        .again()
        .args(["plan", "--json"])
        .env_remove("ORCH_IT_MYVAR")
        .run()
        .json();
    assert_eq!(reasons(&p, "e"), ["env_changed"]);

    // A phase's own `env` values: changing one is `env_changed` for that phase only.
    out.write(
        "Orchfile.toml",
        &ENV.replace("ORCH_IT_GREETING = \"hello\"", "ORCH_IT_GREETING = \"bye\""),
    );
    let p = out
        .again()
        .args(["plan", "--json"])
        .env("ORCH_IT_MYVAR", "two")
        .run()
        .json();
    assert_eq!(reasons(&p, "set"), ["env_changed"]);
    assert_eq!(plan_entry(&p, "e")["status"], "up_to_date");
}

#[test]
fn undeclared_environment_variables_are_not_part_of_the_key() {
    let out = Test::new()
        .orchfile(ENV)
        .env("ORCH_IT_MYVAR", "one")
        .env("ORCH_IT_OTHER", "a")
        .run();
    let p = out
        .again()
        .args(["plan", "--json"])
        .env("ORCH_IT_MYVAR", "one")
        .env("ORCH_IT_OTHER", "b")
        .run()
        .json();
    assert_eq!(p["stale"], 0, "{p:#}");
}

#[test]
fn always_phase_is_stale_every_time() {
    let orchfile = r#"
[orch]
format = 1

[phase.stamp]
always = true
run = "echo run >> log.txt; echo same > {output}"
outputs = ["out/stamp.txt"]

[phase.after_stamp]
needs = ["stamp"]
run = "cat {needs.stamp.outputs} > {output}"
outputs = ["out/after.txt"]

[phase.plain]
run = "echo plain > {output}"
outputs = ["out/plain.txt"]
"#;
    let out = Test::new().orchfile(orchfile).run();
    for n in 0..2 {
        let p = plan(&out);
        assert_eq!(reasons(&p, "stamp"), ["always"], "{p:#}");
        assert_eq!(plan_entry(&p, "plain")["status"], "up_to_date");
        let id = format!("again-{n}");
        let built = out.again().args(["build", "--run-id", &id]).run();
        let events = built.events(&id);
        assert_eq!(ran(&events), names(&["stamp"]));
        assert_eq!(
            event(&events, "instance_invalidated", "stamp")["reasons"],
            serde_json::json!(["always"])
        );
        // Same output: the downstream is cut off.
        assert_eq!(
            event(&events, "instance_skipped", "after_stamp")["early_cutoff"],
            true
        );
    }
    assert_eq!(out.read("log.txt"), "run\nrun\nrun\n");
}

#[test]
fn input_glob_sees_files_produced_by_upstreams() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.gen]
run = "echo generated > {output}"
outputs = ["data/gen.txt"]

[phase.use]
needs = ["gen"]
inputs = ["data/*.txt"]
run = "cat {inputs} > {output}"
outputs = ["out/use.txt"]
"#,
        )
        .write("data/hand.txt", "hand\n")
        .run();
    assert_eq!(out.read("out/use.txt"), "generated\nhand\n");
    let out = out.again().args(["build", "--run-id", "second"]).run();
    assert!(ran(&out.events("second")).is_empty());
}

/// An edit that keeps the size, inode and mtime (as within one coarse timestamp tick)
/// is still seen while the file's mtime is too recent to trust the digest cache.
#[test]
fn same_size_edit_with_the_same_recent_mtime_is_detected() {
    let out = diamond().run();
    let tick = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    out.set_mtime("raw/1.txt", tick);
    // This build caches the digest of raw/1.txt with that mtime.
    out.again()
        .args(["build"])
        .stdout_contains("nothing to do")
        .run();
    out.write("raw/1.txt", "uno\n");
    out.set_mtime("raw/1.txt", tick);
    let p = plan(&out);
    assert_eq!(reasons(&p, "a"), ["input_changed"], "{p:#}");
    let out = out.again().run();
    assert_eq!(out.read("out/a.txt"), "uno\ntwo\n");
}

#[test]
fn plain_input_produced_by_an_upstream_and_directory_inputs() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.gen]
inputs = ["gen.src"]
run = "cat {inputs} > {output}"
outputs = ["data/gen.txt"]

[phase.use]
needs = ["gen"]
inputs = ["data/gen.txt", "data/hand.txt"]
run = "cat {inputs} > {output}"
outputs = ["out/use.txt"]

[phase.tree]
inputs = ["tree"]
run = "find {inputs} -type f | sort > {output}"
outputs = ["out/tree.txt"]
"#,
        )
        .write("gen.src", "generated\n")
        .write("data/hand.txt", "hand\n")
        .write("tree/sub/f.txt", "1\n")
        .run();
    assert_eq!(out.read("out/use.txt"), "generated\nhand\n");
    assert_eq!(out.read("out/tree.txt"), "tree/sub/f.txt\n");
    let out = out.again().args(["build", "--run-id", "noop"]).run();
    assert!(ran(&out.events("noop")).is_empty());

    // A file deep inside a directory input changes: the directory is the subject.
    out.write("tree/sub/f.txt", "2\n");
    out.write("gen.src", "regenerated\n");
    let p = plan(&out);
    assert_eq!(reasons(&p, "tree"), ["input_changed"]);
    assert_eq!(plan_entry(&p, "tree")["details"][0]["subject"], "tree");
    let out = out.again().args(["build", "--run-id", "r"]).run();
    assert_eq!(
        sorted(ran(&out.events("r"))),
        names(&["gen", "tree", "use"])
    );
    assert_eq!(out.read("out/use.txt"), "regenerated\nhand\n");
}
