//! Executors in the Orchfile and on the command line: `[executor.NAME]`, a phase's
//! `executor` and `resources`, and `--executor`. Where an instance runs never enters
//! its key, so moving a phase between executors (or changing its resources) keeps its
//! results up to date. Builds on a real cluster are in `tests/cluster.rs`; here no
//! cluster answers, and a job that cannot be submitted fails to start.

use std::time::Duration;

use serde_json::Value;

use crate::test::*;

/// A two-instance phase that runs locally, with a declared cluster executor.
const LOCAL: &str = r#"[executor.cluster]
kind = "slurm"
partition = "debug"
args = ["--time=30:00"]
max_jobs = 200

[phase.translate]
run = "touch ran; mkdir -p out && cat {inputs} > {output}"
matrix = { lang = ["fr", "de"] }
inputs = ["src/{matrix.lang}.txt"]
outputs = ["out/{matrix.lang}.txt"]
"#;

/// [`LOCAL`] with the phase moved to the cluster, asking for resources.
fn on_cluster(resources: &str) -> String {
    LOCAL.replace(
        "outputs = [",
        &format!("executor = \"cluster\"\nresources = {resources}\noutputs = ["),
    )
}

const ALL: &[&str] = &["translate[lang=de]", "translate[lang=fr]"];

fn built() -> Output {
    let out = Test::new()
        .orchfile(LOCAL)
        .write("src/fr.txt", "bonjour\n")
        .write("src/de.txt", "hallo\n")
        .args(["build", "--run-id", "first"])
        .run();
    assert_eq!(sorted(ran(&out.events("first"))), names(ALL));
    out.remove("ran");
    out
}

/// `orch plan --json` finds every instance up to date, and a build runs nothing.
fn up_to_date(out: &Output, run_id: &str) {
    let plan = out.again().args(["plan", "--json"]).run().json();
    for name in ALL {
        assert_eq!(plan_entry(&plan, name)["status"], "up_to_date", "{plan:#}");
        assert!(reasons(&plan, name).is_empty(), "{plan:#}");
    }
    out.again()
        .args(["build", "--run-id", run_id])
        .stdout_contains("nothing to do (2 up to date)")
        .run();
    assert!(ran(&out.events(run_id)).is_empty());
    assert!(!out.exists("ran"), "a command ran");
}

#[test]
fn moving_a_phase_between_executors_keeps_it_up_to_date() {
    let out = built();
    out.write(
        "Orchfile.toml",
        &on_cluster(r#"{ cpus = 2, mem = "4G", time = "20m" }"#),
    );
    up_to_date(&out, "moved");
    out.write(
        "Orchfile.toml",
        &on_cluster(r#"{ cpus = 8, mem = "512M" }"#),
    );
    up_to_date(&out, "resized");
    out.write("Orchfile.toml", LOCAL);
    up_to_date(&out, "back");
    // A change that does enter the key still makes it stale: the check above can fail.
    out.write("src/fr.txt", "salut\n");
    let plan = out.again().args(["plan", "--json"]).run().json();
    assert_eq!(plan_entry(&plan, "translate[lang=fr]")["status"], "stale");
}

#[test]
fn resources_on_a_local_phase_are_allowed_and_change_nothing() {
    let out = built();
    out.write(
        "Orchfile.toml",
        &LOCAL.replace("outputs = [", "resources = { cpus = 4 }\noutputs = ["),
    );
    up_to_date(&out, "documented");
    out.write("src/de.txt", "guten tag\n");
    let next = out.again().args(["build", "--run-id", "local"]).run();
    assert_eq!(ran(&next.events("local")), ["translate[lang=de]"]);
}

/// Slurm's commands here talk to no cluster (no `SLURM_CONF`, or no Slurm installed):
/// whatever Slurm says, the job cannot start. Builds against a real cluster are in
/// `tests/cluster.rs`.
#[test]
fn without_a_reachable_cluster_a_slurm_phase_fails_to_start_and_nothing_runs_here() {
    let project = Test::new()
        .orchfile(&on_cluster("{ cpus = 2 }"))
        .write("src/fr.txt", "bonjour\n")
        .write("src/de.txt", "hallo\n");
    let out = project
        .args(["build", "--run-id", "nowhere"])
        .expect_status(1)
        .stdout_contains("executor `cluster`")
        .run();
    assert!(!out.exists("ran"), "a command ran");
    assert!(!out.exists("out/fr.txt"), "an output was written");
    let events = out.events("nowhere");
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "instance_failed")
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|e| e["kind"] == "spawn"), "{failed:?}");
    // Planning, checking and showing work as for any phase.
    out.again()
        .args(["plan"])
        .stdout_contains("translate[lang=fr]")
        .run();
    out.again()
        .args(["build", "--dry-run"])
        .stdout_contains("translate[lang=fr]")
        .run();
    out.again().args(["check"]).stdout_contains("ok").run();
    // Overridden to run here, it builds; then there is nothing to run on the cluster.
    let next = out
        .again()
        .args(["build", "--executor", "local", "--run-id", "here"])
        .run();
    assert_eq!(sorted(ran(&next.events("here"))), names(ALL));
    out.remove("ran");
    up_to_date(&out, "after");
}

#[test]
fn executor_override_applies_to_every_selected_phase() {
    let out = built();
    out.write("src/fr.txt", "salut\n");
    out.again()
        .args(["build", "--executor", "cluster"])
        .expect_status(1)
        .stdout_contains("translate[lang=fr]")
        .stdout_contains("executor `cluster`")
        .run();
    assert!(!out.exists("ran"), "a command ran");
    // Only the selection counts: an up-to-date target builds with nothing to submit.
    out.again()
        .args(["build", "--executor", "cluster", "translate[lang=de]"])
        .stdout_contains("nothing to do")
        .run();
    out.again()
        .args(["build", "--executor", "local", "--run-id", "local"])
        .run();
    assert_eq!(ran(&out.events("local")), ["translate[lang=fr]"]);
}

#[test]
fn an_unknown_executor_override_exits_2_naming_the_known_ones() {
    let out = built();
    // Settle the no-op record: the check must not be skipped by the no-op shortcut.
    wait_until("the no-op record", Duration::from_secs(30), || {
        out.again().stdout_contains("nothing to do").run();
        out.exists(".orch/fresh.bin")
    });
    for args in [
        vec!["build", "--executor", "clustr"],
        vec!["build", "--executor", "clustr", "--dry-run"],
    ] {
        out.again()
            .args(args)
            .expect_status(2)
            .stderr_contains("unknown executor `clustr` given to `--executor`")
            .stderr_contains("did you mean `cluster`?")
            .stderr_contains("known executors: `local`, `cluster`")
            .run();
    }
    out.again()
        .args(["build", "--executor", "gpu"])
        .expect_status(2)
        .stderr_contains("known executors: `local`, `cluster`")
        .stderr_lacks("did you mean")
        .run();
    out.again()
        .args(["watch", "--help"])
        .stdout_contains("--executor <NAME>")
        .run();
}

#[test]
fn an_executor_change_invalidates_the_no_op_record() {
    let out = built();
    wait_until("the no-op record", Duration::from_secs(30), || {
        out.again().stdout_contains("nothing to do").run();
        out.exists(".orch/fresh.bin")
    });
    out.again()
        .env("ORCH_TIMINGS", "1")
        .stderr_contains("orch timings: fresh")
        .run();
    out.write("Orchfile.toml", &on_cluster("{ cpus = 2 }"));
    out.again()
        .env("ORCH_TIMINGS", "1")
        .stderr_lacks("orch timings: fresh")
        .stdout_contains("nothing to do (2 up to date)")
        .run();
    // The remembered project was loaded afresh too: the executor is the new one.
    out.again()
        .args(["show", "translate[lang=fr]"])
        .stdout_contains("executor     cluster (slurm)")
        .run();
}

#[test]
fn show_names_the_executor_and_resources_when_not_the_defaults() {
    let out = built();
    let plain = out
        .again()
        .args(["show", "translate[lang=fr]"])
        .stdout_lacks("executor")
        .stdout_lacks("resources")
        .run();
    assert!(plain.stdout.contains("up to date"), "{}", plain.stdout);
    let json = out
        .again()
        .args(["show", "translate[lang=fr]", "--json"])
        .run()
        .json();
    let doc = &json["instances"][0];
    assert!(
        doc.get("executor").is_none() && doc.get("resources").is_none(),
        "{json:#}"
    );

    out.write(
        "Orchfile.toml",
        &on_cluster(r#"{ cpus = 2, mem = "4G", time = "20m" }"#),
    );
    out.again()
        .args(["show", "translate"])
        .stdout_contains("  executor     cluster (slurm)\n  resources    cpus 2, mem 4G, time 20m\n  status       up to date")
        .run();
    let json = out
        .again()
        .args(["show", "translate[lang=fr]", "--json"])
        .run()
        .json();
    let doc = &json["instances"][0];
    assert_eq!(
        doc["executor"],
        serde_json::json!({ "name": "cluster", "kind": "slurm" })
    );
    assert_eq!(
        doc["resources"],
        serde_json::json!({ "cpus": 2, "mem_bytes": 4u64 << 30, "time_ms": 1_200_000 })
    );
}

#[test]
fn executors_join_from_included_fragments() {
    let out = Test::new()
        .orchfile(
            "[orch]\ninclude = [\"pipelines/*.toml\"]\n\n[phase.a]\nrun = \"touch ran\"\nexecutor = \"cluster\"\n",
        )
        .write("pipelines/cluster.toml", "[executor.cluster]\nkind = \"slurm\"\n")
        .args(["check"])
        .stdout_contains("ok")
        .run();
    out.write(
        "pipelines/again.toml",
        "[executor.cluster]\nkind = \"slurm\"\n",
    );
    out.again()
        .args(["check"])
        .expect_status(2)
        .stderr_contains("executor `cluster` is declared twice")
        .stderr_contains("pipelines/cluster.toml")
        .run();
}

#[test]
fn executor_diagnostics() {
    let out = Test::new()
        .orchfile(
            r#"[executor.cluster]
kind = "slurm"
max_jobs = 0

[executor.local]
kind = "slurm"

[executor.pbs]
kind = "pbs"

[phase.a]
run = "touch ran"
executor = "clustr"
resources = { cpus = 0, mem = "4GB", time = "soon" }

[phase.b]
run = "touch ran"
resources = { mem = "4Gi", time = "0s" }

[phase.c]
run = "touch ran"
resources = { disk = "1G" }
"#,
        )
        .args(["check"])
        .expect_status(2)
        .run();
    insta::assert_snapshot!(out.stderr);
}
