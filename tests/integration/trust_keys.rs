//! Never wrongly up to date: the digest cache sees an in-place rewrite whose mtime was
//! put back.

use crate::test::*;

fn orchfile(phases: &str) -> String {
    format!("[orch]\nformat = 1\n{phases}")
}

fn plan(out: &Output) -> serde_json::Value {
    out.again().args(["plan", "--json"]).run().json()
}

/// The `details` of an instance's plan entry, as `code subject` strings.
fn details(plan: &serde_json::Value, instance: &str) -> Vec<String> {
    plan_entry(plan, instance)["details"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    format!(
                        "{} {}",
                        d["reason"].as_str().unwrap_or(""),
                        d["subject"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The digest cache and ctime

const COPY: &str = r#"
[phase.copy]
run = "cat in.txt > out.txt"
inputs = ["in.txt"]
outputs = ["out.txt"]
"#;

#[test]
fn an_in_place_rewrite_with_its_mtime_put_back_is_seen() {
    let t = Test::new()
        .orchfile(&orchfile(COPY))
        .write("in.txt", "aaaa");
    // Old enough that the digest cache trusts its entry by stat alone.
    t.project().set_mtime_ago("in.txt", 3600);
    let out = t.args(["build"]).run();
    let mtime = out.mtime("in.txt");
    let ino =
        std::fs::metadata(out.join("in.txt")).map(|m| std::os::unix::fs::MetadataExt::ino(&m));

    // Same size, same inode, same mtime: only the content and the ctime differ.
    out.write("in.txt", "bbbb");
    out.set_mtime("in.txt", mtime);
    assert_eq!(out.mtime("in.txt"), mtime);
    let ino_now =
        std::fs::metadata(out.join("in.txt")).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    assert_eq!(ino.ok(), ino_now.ok());

    let p = plan(&out);
    assert_eq!(details(&p, "copy"), ["input_changed in.txt"], "{p:#}");
    let out = out.again().args(["build", "--run-id", "r"]).run();
    assert_eq!(ran(&out.events("r")), ["copy"]);
    assert_eq!(out.read("out.txt"), "bbbb");
}
