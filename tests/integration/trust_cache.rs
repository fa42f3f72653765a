//! The content cache as untrusted input: poisoned entries are misses, restores never write
//! outside the project, `clean --cache` and `gc` touch only a store tagged as orch's,
//! stale temporaries go away, restored modes match built ones, and a stalled remote
//! never holds up Ctrl-C.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::test::{Project, Test, cached, ran};

const TAG_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";

/// One phase with a file output and a directory output holding a nested file.
const GEN: &str = r#"[phase.gen]
run = "mkdir -p out/tree/sub; cat in.txt > out/a.txt; echo f > out/tree/f.txt; echo g > out/tree/sub/g.txt"
inputs = ["in.txt"]
outputs = ["out/a.txt", "out/tree/"]
"#;

fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect()
}

/// Every file below `dir` (symlinks listed, not followed).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The one `ac/` entry of a store.
fn entry_file(store: &Path) -> PathBuf {
    let entries = files(&store.join("ac"));
    assert_eq!(entries.len(), 1, "one entry expected: {entries:?}");
    entries[0].clone()
}

/// Builds `GEN` once in a new project and returns it with its entry's path.
fn built() -> (Project, PathBuf) {
    let out = Test::new()
        .orchfile(GEN)
        .write("in.txt", "hello\n")
        .args(["build", "--run-id", "first"])
        .run();
    let entry = entry_file(&out.join(".orch/cache"));
    (out.project.clone(), entry)
}

/// A file node or output as the entry format writes it.
fn file_node(entry: &Value) -> Value {
    entry["outputs"]["out/a.txt"].clone()
}

#[test]
fn poisoned_entries_are_misses_that_write_nothing() {
    let outside = tempfile::tempdir().unwrap();
    let out_dir = outside.path().to_string_lossy().into_owned();
    // Each case rewrites the entry as an attacker would.
    // `u` is unique to the case: what lands beside the project is named after it.
    type Poison = Box<dyn Fn(&mut Value, &str, &str)>;
    let cases: Vec<(&str, Poison)> = vec![
        (
            "a path with `..`",
            Box::new(|e, _, u| {
                let f = file_node(e);
                e["outputs"][format!("../{u}-escaped.txt")] = f;
            }),
        ),
        (
            "a path with `..` inside a declared directory",
            Box::new(|e, _, u| {
                let f = file_node(e);
                e["outputs"][format!("out/tree/../../../{u}-escaped.txt")] = f;
            }),
        ),
        (
            "an absolute path",
            Box::new(|e, o, _| {
                let f = file_node(e);
                e["outputs"][format!("{o}/absolute.txt")] = f;
            }),
        ),
        (
            "the Orchfile",
            Box::new(|e, _, _| {
                let f = file_node(e);
                e["outputs"]["Orchfile.toml"] = f;
            }),
        ),
        (
            "an undeclared file",
            Box::new(|e, _, _| {
                let f = file_node(e);
                e["outputs"]["out/undeclared.txt"] = f;
            }),
        ),
        (
            "a node path with `..`",
            Box::new(|e, _, u| {
                let f = file_node(e)["file"].clone();
                e["outputs"]["out/tree"]["dir"]["entries"][format!("../../../{u}-node.txt")] =
                    json!({ "file": f });
            }),
        ),
        (
            "an absolute node path",
            Box::new(|e, o, _| {
                let f = file_node(e)["file"].clone();
                e["outputs"]["out/tree"]["dir"]["entries"][format!("{o}/node.txt")] =
                    json!({ "file": f });
            }),
        ),
        (
            "a symlink leaving the output directory",
            Box::new(|e, o, _| {
                e["outputs"]["out/tree"]["dir"]["entries"]["link"] =
                    json!({ "symlink": { "target": o } });
            }),
        ),
        (
            "a relative symlink leaving the output directory",
            Box::new(|e, _, _| {
                e["outputs"]["out/tree"]["dir"]["entries"]["sub/up"] =
                    json!({ "symlink": { "target": "../../../.." } });
            }),
        ),
        (
            "a file written through a restored symlink",
            Box::new(|e, o, _| {
                let f = file_node(e)["file"].clone();
                let entries = &mut e["outputs"]["out/tree"]["dir"]["entries"];
                entries["via"] = json!({ "symlink": { "target": o } });
                entries["via/through-link.txt"] = json!({ "file": f });
            }),
        ),
        (
            "a missing output",
            Box::new(|e, _, _| {
                e["outputs"].as_object_mut().unwrap().remove("out/a.txt");
            }),
        ),
        (
            "no outputs at all",
            Box::new(|e, _, _| {
                e["outputs"] = json!({});
            }),
        ),
        (
            "a file for a directory output",
            Box::new(|e, _, _| {
                let f = file_node(e);
                e["outputs"]["out/tree"] = f;
            }),
        ),
        (
            "a directory for a file output",
            Box::new(|e, _, _| {
                let d = e["outputs"]["out/tree"].clone();
                e["outputs"]["out/a.txt"] = d;
            }),
        ),
        (
            "a tree digest that does not describe the tree",
            Box::new(|e, _, _| {
                let f = file_node(e)["file"].clone();
                e["outputs"]["out/tree"]["dir"]["entries"]["extra.txt"] = json!({ "file": f });
            }),
        ),
    ];
    for (what, poison) in cases {
        let (project, entry_path) = built();
        let orchfile = project.read("Orchfile.toml");
        let mut entry: Value =
            serde_json::from_str(&std::fs::read_to_string(&entry_path).unwrap()).unwrap();
        let u = project
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        poison(&mut entry, &out_dir, &u);
        std::fs::write(&entry_path, serde_json::to_vec(&entry).unwrap()).unwrap();
        std::fs::remove_dir_all(project.join("out")).unwrap();

        let out = project.test().args(["build", "--run-id", "poisoned"]).run();
        let events = out.events("poisoned");
        assert_eq!(ran(&events), ["gen"], "{what}: the instance runs");
        assert!(cached(&events).is_empty(), "{what}: nothing is restored");
        assert_eq!(
            warnings(&out.stderr).len(),
            1,
            "{what}: exactly one warning:\n{}",
            out.stderr
        );
        assert_eq!(out.read("Orchfile.toml"), orchfile, "{what}");
        assert_eq!(out.read("out/a.txt"), "hello\n", "{what}");
        assert_eq!(out.read("out/tree/sub/g.txt"), "g\n", "{what}");
        assert_eq!(
            out.list("out"),
            ["a.txt", "tree"],
            "{what}: nothing undeclared"
        );
        assert_eq!(
            out.list("out/tree"),
            ["f.txt", "sub"],
            "{what}: nothing undeclared"
        );
        assert!(
            files(outside.path()).is_empty(),
            "{what}: written outside: {:?}",
            files(outside.path())
        );
        let parent = project.path().parent().unwrap();
        assert!(!parent.join(format!("{u}-escaped.txt")).exists(), "{what}");
        assert!(!parent.join(format!("{u}-node.txt")).exists(), "{what}");
        // The run stored a sound entry over the poisoned one: the next restore works.
        std::fs::remove_dir_all(project.join("out")).unwrap();
        let again = project.test().args(["build", "--run-id", "healed"]).run();
        assert_eq!(cached(&again.events("healed")), ["gen"], "{what}");
        assert!(warnings(&again.stderr).is_empty(), "{}", again.stderr);
    }
}

#[test]
fn a_restore_never_writes_through_a_symlinked_parent_directory() {
    let outside = tempfile::tempdir().unwrap();
    // Once armed, `swap` puts the symlink in place after the Orchfile was checked,
    // before `gen` is restored.
    let out = Test::new()
        .orchfile(&format!(
            r#"[phase.swap]
always = true
run = "if [ -e armed ]; then rm -rf out/sub; ln -s '{}' out/sub; fi; echo s > stamp.txt"
outputs = ["stamp.txt"]

[phase.gen]
needs = ["swap"]
run = "mkdir -p out/sub; cat in.txt > out/sub/a.txt"
inputs = ["in.txt"]
outputs = ["out/sub/a.txt"]
"#,
            outside.path().display()
        ))
        .write("in.txt", "hello\n")
        .args(["build"])
        .run();
    std::fs::remove_file(out.join("out/sub/a.txt")).unwrap();
    out.write("armed", "");
    // Not restored, `gen` runs, and preparing its output fails for the same reason.
    let out = out
        .again()
        .args(["build", "--run-id", "linked"])
        .expect_status(1)
        .run();
    assert!(
        files(outside.path()).is_empty(),
        "restored through the symlink: {:?}",
        files(outside.path())
    );
    let events = out.events("linked");
    assert!(cached(&events).is_empty());
    assert_eq!(ran(&events), ["swap", "gen"]);
    assert_eq!(warnings(&out.stderr).len(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("leads outside the project"),
        "{}",
        out.stderr
    );
}

fn tag_of(store: &Path) -> String {
    std::fs::read_to_string(store.join("CACHEDIR.TAG")).unwrap_or_default()
}

#[test]
fn the_store_is_tagged_and_clean_and_gc_remove_only_orchs_entries() {
    let t = Test::new()
        .orchfile(GEN)
        .write("in.txt", "hello\n")
        .args(["build"])
        .run();
    let store = t.join(".orch/cache");
    let tag = tag_of(&store);
    assert_eq!(tag.lines().next(), Some(TAG_SIGNATURE), "{tag:?}");
    assert!(
        tag.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with('#') && l.contains("orch")),
        "{tag:?}"
    );
    // A file a user put in the store is not orch's to delete.
    std::fs::write(store.join("mine.txt"), "keep").unwrap();
    t.again().args(["gc", "--max-size", "0"]).run();
    assert!(files(&store.join("ac")).is_empty() && files(&store.join("cas")).is_empty());
    assert_eq!(
        std::fs::read_to_string(store.join("mine.txt")).unwrap(),
        "keep"
    );
    std::fs::remove_dir_all(t.join("out")).unwrap();
    t.again().args(["build"]).run();
    assert!(!files(&store.join("ac")).is_empty());
    t.again()
        .args(["clean", "--cache"])
        .stdout_contains("removed")
        .run();
    assert!(store.is_dir(), "the store directory itself stays");
    assert_eq!(
        t.list(".orch/cache"),
        ["CACHEDIR.TAG", "mine.txt"],
        "only orch's entries are removed"
    );
    assert_eq!(tag_of(&store).lines().next(), Some(TAG_SIGNATURE));

    // A configured store is tagged when orch creates it, or adopts it empty.
    let shared = tempfile::tempdir().unwrap();
    let orchfile = format!("[cache]\ndir = \"{}\"\n\n{GEN}", shared.path().display());
    Test::new()
        .orchfile(&orchfile)
        .write("in.txt", "hello\n")
        .args(["build"])
        .run();
    assert_eq!(tag_of(shared.path()).lines().next(), Some(TAG_SIGNATURE));
}

#[test]
fn a_directory_that_is_not_an_orch_store_is_never_adopted_nor_emptied() {
    // As with `dir = ".."`: a directory holding other things.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("keep.txt"), "precious").unwrap();
    std::fs::create_dir_all(foreign.path().join("ac")).unwrap();
    std::fs::write(foreign.path().join("ac/notes.md"), "precious").unwrap();
    std::fs::create_dir_all(foreign.path().join("cas/ab")).unwrap();
    std::fs::write(foreign.path().join("cas/ab/data"), "precious").unwrap();
    let before = files(foreign.path());
    let orchfile = format!("[cache]\ndir = \"{}\"\n\n{GEN}", foreign.path().display());
    let out = Test::new()
        .orchfile(&orchfile)
        .write("in.txt", "hello\n")
        .args(["build", "--run-id", "b"])
        .stderr_contains("CACHEDIR.TAG")
        .run();
    assert_eq!(ran(&out.events("b")), ["gen"]);
    assert_eq!(warnings(&out.stderr).len(), 1, "{}", out.stderr);
    assert_eq!(files(foreign.path()), before, "the build adds nothing");
    out.again()
        .args(["clean", "--cache"])
        .expect_status(2)
        .stderr_contains("CACHEDIR.TAG")
        .run();
    out.again()
        .args(["gc", "--max-size", "0"])
        .expect_status(2)
        .stderr_contains("CACHEDIR.TAG")
        .run();
    assert_eq!(files(foreign.path()), before, "nothing is removed");
    for f in &before {
        assert_eq!(std::fs::read_to_string(f).unwrap(), "precious");
    }
    // A configuration error runs nothing: the outputs are still there.
    assert!(out.exists("out/a.txt"));
}

#[test]
fn stale_temporaries_are_removed_and_fresh_ones_kept() {
    let t = Test::new()
        .orchfile(GEN)
        .write("in.txt", "hello\n")
        .args(["build"])
        .run();
    let tmp = t.join(".orch/cache/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let stale = tmp.join(".tmpSTALE1");
    let fresh = tmp.join(".tmpFRESH1");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    std::fs::write(&fresh, vec![0u8; 4096]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    t.write("in.txt", "changed\n");
    t.again().args(["build"]).run();
    assert!(!stale.exists(), "a temporary older than an hour is removed");
    assert!(
        fresh.exists(),
        "one that may still be written by another orch stays"
    );
}

#[test]
fn restored_outputs_have_the_modes_the_build_gave_them() {
    let t = Test::new()
        .orchfile(
            r#"[phase.merged]
shard = { strategy = "group", source = "data/in.jsonl", key = "k" }
run = "cat {shard.input} > {shard.output}"
outputs = ["out/merged.jsonl"]

[phase.private]
run = "mkdir -p out/tree; echo s > out/secret.txt; chmod 640 out/secret.txt; echo t > out/tree/t.sh; chmod 750 out/tree/t.sh"
outputs = ["out/secret.txt", "out/tree/"]
"#,
        )
        .write("data/in.jsonl", "{\"k\":\"a\"}\n{\"k\":\"b\"}\n")
        .args(["build"])
        .run();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let files = ["out/merged.jsonl", "out/secret.txt", "out/tree/t.sh"];
    let built: Vec<u32> = files.iter().map(|f| mode(&t.join(f))).collect();
    std::fs::remove_dir_all(t.join("out")).unwrap();
    let out = t.again().args(["build", "--run-id", "r"]).run();
    assert_eq!(cached(&out.events("r")), ["merged", "private"]);
    let restored: Vec<u32> = files.iter().map(|f| mode(&t.join(f))).collect();
    assert_eq!(restored, built, "{files:?}");
}

#[test]
fn ctrl_c_during_a_stalled_remote_lookup_exits_130_promptly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // Reads requests and never answers.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 4096];
            if conn.read(&mut buf).is_ok_and(|n| n > 0) {
                let _ = tx.send(());
            }
            held.push(conn);
        }
    });
    let t = Test::new()
        .orchfile(&format!(
            r#"[cache]
remote = "http://127.0.0.1:{port}/orch"

[phase.first]
run = "touch first-ran; cat in.txt > {{output}}"
inputs = ["in.txt"]
outputs = ["out/first.txt"]

[phase.second]
run = "touch second-ran; cat in.txt > {{output}}"
inputs = ["in.txt"]
outputs = ["out/second.txt"]
"#
        ))
        .write("in.txt", "x\n")
        .args(["build", "-j", "1", "--run-id", "int"])
        .env("ORCH_REMOTE_TIMEOUT", "60s");
    let mut child = t.spawn();
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the remote lookup reaches the listener");
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(3) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("orch did not exit within 3 s of SIGINT during a stalled remote read");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let project = t.project();
    assert!(
        !project.exists("first-ran") && !project.exists("second-ran"),
        "no instance starts once interrupted"
    );
}

#[test]
fn a_poisoned_remote_entry_is_a_miss_too() {
    let remote = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let orchfile = format!(
        "[cache]\nremote = \"file://{}\"\npush = true\n\n{GEN}",
        remote.path().display()
    );
    Test::new()
        .orchfile(&orchfile)
        .write("in.txt", "hello\n")
        .args(["build"])
        .run();
    let entry_path = {
        let entries = files(&remote.path().join("ac"));
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries[0].clone()
    };
    let mut entry: Value =
        serde_json::from_str(&std::fs::read_to_string(&entry_path).unwrap()).unwrap();
    let f = file_node(&entry)["file"].clone();
    let tree = &mut entry["outputs"]["out/tree"]["dir"]["entries"];
    tree["via"] = json!({ "symlink": { "target": outside.path() } });
    tree["via/remote.txt"] = json!({ "file": f });
    std::fs::write(&entry_path, serde_json::to_vec(&entry).unwrap()).unwrap();

    // Another checkout, with nothing local.
    let out = Test::new()
        .orchfile(&orchfile)
        .write("in.txt", "hello\n")
        .args(["build", "--run-id", "other"])
        .run();
    let events = out.events("other");
    assert_eq!(ran(&events), ["gen"]);
    assert!(cached(&events).is_empty());
    assert_eq!(warnings(&out.stderr).len(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("remote cache entry"), "{}", out.stderr);
    assert!(files(outside.path()).is_empty());
    assert_eq!(out.list("out/tree"), ["f.txt", "sub"]);
}

#[test]
fn a_store_inside_an_input_directory_is_never_an_input() {
    let t = Test::new()
        .orchfile(
            r#"
[cache]
dir = "src/cache"

[phase.p]
run = "cat src/a.txt > {output}"
inputs = ["src/**"]
outputs = ["out/p.txt"]
"#,
        )
        .write("src/a.txt", "a\n");
    let out = t.args(["build"]).run();
    assert!(out.exists("src/cache/CACHEDIR.TAG"));
    // The store grew during the build; it must not make the phase stale.
    out.again()
        .args(["build"])
        .stdout_contains("nothing to do")
        .run();
    let plan = out.again().args(["plan", "--json"]).run().json();
    assert_eq!(plan["stale"], 0, "{plan}");
}

#[test]
fn plan_looks_at_the_store_without_touching_it() {
    let out = Test::new()
        .orchfile(
            r#"
[phase.p]
run = "cat in.txt > {output}"
inputs = ["in.txt"]
outputs = ["out/p.txt"]
"#,
        )
        .write("in.txt", "x\n")
        .args(["build"])
        .run();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    let entries: Vec<String> = out
        .list(".orch/cache/ac")
        .into_iter()
        .map(|f| format!(".orch/cache/ac/{f}"))
        .collect();
    assert!(!entries.is_empty());
    for e in &entries {
        out.set_mtime(e, old);
    }
    out.remove("out/p.txt");
    out.again()
        .args(["plan"])
        .stdout_contains("restorable from the local cache")
        .run();
    for e in &entries {
        assert_eq!(out.mtime(e), old, "plan changed the time of {e}");
    }
}

#[test]
fn the_temporary_sweep_never_follows_a_symlink_nor_removes_foreign_files() {
    let t = Test::new()
        .orchfile(GEN)
        .write("in.txt", "hello\n")
        .args(["build"])
        .run();
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    let victim = tempfile::Builder::new()
        .prefix("orch-victim-")
        .tempdir()
        .unwrap();
    for name in [".tmpOLD", "thesis.tex"] {
        let p = victim.path().join(name);
        std::fs::write(&p, "precious").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let tmp = t.join(".orch/cache/tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::os::unix::fs::symlink(victim.path(), &tmp).unwrap();
    t.write("in.txt", "changed\n");
    t.again().args(["build"]).run();
    assert!(victim.path().join(".tmpOLD").exists());
    assert!(victim.path().join("thesis.tex").exists());
    let names: Vec<_> = std::fs::read_dir(victim.path()).unwrap().collect();
    assert_eq!(names.len(), 2, "nothing written through the link either");
    // In the real tmp/, an old file orch did not name stays too.
    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let foreign = tmp.join("notes.txt");
    std::fs::write(&foreign, "mine").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&foreign)
        .unwrap()
        .set_modified(old)
        .unwrap();
    t.write("in.txt", "again\n");
    t.again().args(["build"]).run();
    assert!(foreign.exists());
}

#[test]
fn a_remote_claiming_a_huge_object_is_refused_not_allocated() {
    // Answers every request with a 100 GB Content-Length and a few bytes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten().take(16) {
            use std::io::{Read as _, Write as _};
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\nContent-Type: application/octet-stream\r\n\r\nxxxx",
            );
        }
    });
    let out = Test::new()
        .orchfile(&format!(
            "[cache]\nremote = \"http://127.0.0.1:{port}/c\"\npush = false\n\n{GEN}"
        ))
        .write("in.txt", "hello\n")
        .env("ORCH_REMOTE_TIMEOUT", "5s")
        .args(["build"])
        .stderr_contains("not read")
        .run();
    assert_eq!(out.status, 0);
}
