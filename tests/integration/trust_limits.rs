//! Limits orch must hold whatever the project contains: FIFOs, devices and sockets are
//! never read (an input or shard source that is one is an error naming it, not a hang),
//! Ctrl-C stops a build within seconds even while a huge input is being hashed, shard
//! keys that would write the same path (or leave their directory) are refused, graphs
//! 20,000 phases deep are walked without exhausting the stack, and `-j` is capped.
//!
//! Every command here runs under a deadline: a hang fails the test instead of stalling
//! the suite.

use std::process::Child;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::test::*;

/// Waits for `child` up to `limit`; kills it and fails the test if it is still running.
/// Returns its exit code (None when a signal ended it), stdout and stderr, read as they
/// come so a full pipe never stalls orch.
fn finish_within(mut child: Child, limit: Duration, what: &str) -> (Option<i32>, String, String) {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("poll orch") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: orch still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    (status.code(), stdout, stderr)
}

/// Creates a FIFO at `rel` in the project.
fn mkfifo(project: &Project, rel: &str) {
    let ok = std::process::Command::new("mkfifo")
        .arg(project.join(rel))
        .status()
        .expect("run mkfifo")
        .success();
    assert!(ok, "mkfifo {rel}");
}

/// Sends SIGINT to `pid` with `kill(1)`.
fn interrupt(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -INT {pid}");
}

/// Bytes `pid` has read through read(2) and friends so far (`rchar` of /proc/PID/io);
/// holes of a sparse file count, unlike `read_bytes`.
fn bytes_read(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("rchar: "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A sparse file of `size` at `rel`: huge to hash, free to create.
fn sparse(project: &Project, rel: &str, size: u64) {
    let f = std::fs::File::create(project.join(rel)).expect("create the sparse file");
    f.set_len(size).expect("size the sparse file");
}

const BIG: u64 = 20 << 30;

// ---------------------------------------------------------------------------------------
// Special files

#[test]
fn a_fifo_input_is_an_error_naming_it_not_a_hang() {
    let t = Test::new().orchfile(
        r#"
[orch]
format = 1

[phase.a]
run = "cat pipe > {output}"
inputs = ["pipe"]
outputs = ["out.txt"]
"#,
    );
    mkfifo(t.project(), "pipe");
    for args in [vec!["build"], vec!["plan"], vec!["status"]] {
        let child = t.project().test().args(args.clone()).spawn();
        let (code, _, stderr) = finish_within(child, Duration::from_secs(20), args[0]);
        assert_eq!(code, Some(2), "orch {}: {stderr}", args[0]);
        assert!(stderr.contains("`pipe`"), "orch {}: {stderr}", args[0]);
        assert!(stderr.contains("FIFO"), "orch {}: {stderr}", args[0]);
    }
}

#[test]
fn a_device_behind_a_symlink_is_an_error_naming_it_not_a_hang() {
    let t = Test::new().orchfile(
        r#"
[orch]
format = 1

[phase.a]
run = "head -c 10 zero > {output}"
inputs = ["zero"]
outputs = ["out.txt"]
"#,
    );
    std::os::unix::fs::symlink("/dev/zero", t.project().join("zero")).expect("symlink");
    let child = t.spawn();
    let (code, _, stderr) = finish_within(child, Duration::from_secs(20), "build");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("`zero`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_fifo_shard_source_is_an_error_naming_it_not_a_hang() {
    let t = Test::new().orchfile(
        r#"
[orch]
format = 1

[phase.routes]
shard = { strategy = "group", source = "data.jsonl", key = "route" }
run = "cat {shard.input} > {shard.output}"
outputs = ["out.jsonl"]
"#,
    );
    mkfifo(t.project(), "data.jsonl");
    let child = t.spawn();
    let (code, _, stderr) = finish_within(child, Duration::from_secs(20), "build");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("`data.jsonl`"), "{stderr}");
    assert!(stderr.contains("FIFO"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Ctrl-C while hashing

/// Starts `t`, waits until orch has read `past` bytes (it is hashing the big file), sends
/// SIGINT and expects exit 130 within 3 seconds.
fn interrupt_while_hashing(t: Test) {
    if std::fs::read_to_string("/proc/self/io").is_err() {
        eprintln!("skipped: /proc/PID/io is not readable here, so hashing cannot be observed");
        return;
    }
    let child = t.spawn();
    let pid = child.id();
    let past = 64 << 20;
    let start = Instant::now();
    while bytes_read(pid) < past {
        if start.elapsed() > Duration::from_secs(60) {
            let (code, out, err) = finish_within(child, Duration::ZERO, "hashing");
            panic!("orch never read {past} bytes (exit {code:?})\n{out}\n{err}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    interrupt(pid);
    let (code, stdout, stderr) = finish_within(child, Duration::from_secs(3), "after SIGINT");
    assert_eq!(
        code,
        Some(130),
        "--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
    );
}

#[test]
fn ctrl_c_while_hashing_a_huge_input_exits_130_within_3_seconds() {
    let t = Test::new().orchfile(
        r#"
[orch]
format = 1

[phase.a]
run = "touch ran; wc -c < big > {output}"
inputs = ["big"]
outputs = ["out.txt"]
cache = false
"#,
    );
    sparse(t.project(), "big", BIG);
    let project = t.project().clone();
    interrupt_while_hashing(t);
    assert!(!project.exists("ran"), "no command starts after Ctrl-C");
}

#[test]
fn ctrl_c_while_hashing_a_huge_output_exits_130_within_3_seconds() {
    // The output is hashed after its command succeeds, while the build is running.
    let t = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.big]
run = "truncate -s 20G {output}"
outputs = ["big"]
cache = false

[phase.count]
needs = ["big"]
run = "touch ran; wc -c < {needs.big.outputs} > {output}"
outputs = ["count.txt"]
cache = false
"#,
        )
        .args(["build", "--json", "--run-id", "int"]);
    let project = t.project().clone();
    interrupt_while_hashing(t);
    assert!(!project.exists("ran"), "no command starts after Ctrl-C");
    // Its command succeeded; hashing was cut short: interrupted, not a missing output.
    let events = project.events("int");
    assert!(
        events.iter().all(|e| e["type"] != "instance_failed"),
        "{events:#?}"
    );
    assert_eq!(
        event(&events, "instance_blocked", "big")["reason"],
        "interrupted"
    );
}

// ---------------------------------------------------------------------------------------
// Shard keys used in paths

const PER_KEY: &str = r#"
[orch]
format = 1

[phase.routes]
shard = { strategy = "group", source = "data.jsonl", key = "route", merge = "none" }
run = "cat {shard.input} > out/{shard.key}.txt"
outputs = ["out/{shard.key}.txt"]
"#;

#[test]
fn group_keys_that_write_the_same_path_fail_naming_both() {
    let out = Test::new()
        .orchfile(PER_KEY)
        .write(
            "data.jsonl",
            "{\"route\": \"a\", \"n\": 1}\n{\"route\": \"b\", \"n\": 2}\n{\"route\": \"./a\", \"n\": 3}\n",
        )
        .expect_status(1)
        .stdout_contains("`./a`")
        .stdout_contains("`a`")
        .stdout_contains("`data.jsonl` line 3")
        .stdout_contains("line 1")
        .stdout_contains("out/a.txt")
        .run();
    assert!(!out.exists("out/b.txt"), "no shard runs");
}

#[test]
fn group_keys_that_are_not_one_path_component_fail_naming_them() {
    for (key, why) in [
        ("/etc/x", "`/`"),
        ("sub/x", "`/`"),
        ("..", "`..`"),
        ("", "empty"),
    ] {
        let data = format!("{{\"route\": \"ok\"}}\n{{\"route\": {key:?}}}\n");
        let out = Test::new()
            .orchfile(PER_KEY)
            .write("data.jsonl", &data)
            .expect_status(1)
            .stdout_contains(&format!("`{key}`"))
            .stdout_contains("`data.jsonl` line 2")
            .stdout_contains(why)
            .run();
        assert!(!out.exists("out/ok.txt"), "no shard runs for key {key:?}");
    }
}

#[test]
fn group_keys_outside_paths_are_free_text() {
    // `{shard.key}` only in the command: any value is fine, it is shell-quoted.
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.routes]
shard = { strategy = "group", source = "data.jsonl", key = "route", merge = "none" }
run = "printf '%s\n' {shard.key} > out/{shard.index}.txt"
outputs = ["out/{shard.index}.txt"]
"#,
        )
        .write("data.jsonl", "{\"route\": \"a/b\"}\n{\"route\": \"..\"}\n")
        .run();
    assert_eq!(out.read("out/0.txt"), "..\n");
    assert_eq!(out.read("out/1.txt"), "a/b\n");
}

// ---------------------------------------------------------------------------------------
// Deep graphs

/// An Orchfile with a chain `p0` ← `p1` ← … of `n` phases, each writing `out/N`.
fn chain(n: usize) -> String {
    let mut s = String::from("[orch]\nformat = 1\n\n");
    for i in 0..n {
        s.push_str(&format!("[phase.p{i}]\n"));
        if i > 0 {
            s.push_str(&format!("needs = [\"p{}\"]\n", i - 1));
        }
        s.push_str(&format!(
            "run = \": > {{output}}\"\noutputs = [\"out/{i}\"]\ncache = false\n\n"
        ));
    }
    s
}

#[test]
fn a_20000_deep_chain_is_checked_planned_and_graphed() {
    let t = Test::new().orchfile(&chain(20_000));
    let project = t.project().clone();
    for args in [
        vec!["check"],
        vec!["plan"],
        vec!["status"],
        vec!["graph", "--format", "json"],
        vec!["graph", "--format", "dot"],
        vec!["graph", "--format", "mermaid"],
    ] {
        let child = project.test().args(args.clone()).spawn();
        let (code, _, stderr) = finish_within(child, Duration::from_secs(120), &args.join(" "));
        assert_eq!(code, Some(0), "orch {}: {stderr}", args.join(" "));
    }
}

#[test]
fn a_20000_phase_cycle_is_reported_at_once() {
    let text = chain(20_000).replacen("[phase.p0]\n", "[phase.p0]\nneeds = [\"p19999\"]\n", 1);
    // The test owns the project directory: keep it while orch runs.
    let t = Test::new().orchfile(&text).args(["check"]);
    let child = t.spawn();
    let (code, _, stderr) = finish_within(child, Duration::from_secs(60), "check");
    assert_eq!(code, Some(2), "{}", &stderr[..stderr.len().min(2000)]);
    let head = &stderr[..stderr.len().min(2000)];
    assert!(stderr.contains("dependency cycle: `p0` → `p1`"), "{head}");
    assert!(stderr.contains("`p19999` → `p0`"), "{head}");
}

#[test]
fn show_walks_a_20000_deep_lineage() {
    let out = Test::new()
        .orchfile(&chain(20_000))
        .args(["build", "-j", "2", "-q"])
        .run();
    let show = out
        .again()
        .args(["show", "out/19999"])
        .stdout_contains("p19999")
        .stdout_contains("p19998")
        .stdout_contains("orch show out/")
        .run();
    assert!(
        show.stdout.len() < 1 << 20,
        "the text lineage stays small: {} bytes",
        show.stdout.len()
    );
    let json = out
        .again()
        .args(["show", "--json", "out/19999"])
        .run()
        .json();
    assert_eq!(json["instance"], "p19999");
    assert_eq!(json["built_from"][0]["instance"], "p19998");
    // The deepest node shown says the lineage goes on.
    let mut node = &json;
    while let Some(next) = node["built_from"].get(0) {
        node = next;
    }
    assert_eq!(node["truncated"], true, "{node:#}");
}

// ---------------------------------------------------------------------------------------
// Job caps

const ONE: &str = r#"
[orch]
format = 1

[phase.a]
run = "echo a > {output}"
outputs = ["a.txt"]
"#;

#[test]
fn jobs_beyond_the_cap_are_a_usage_error() {
    for j in ["0", "1025", "4294967295", "99999999999"] {
        let t = Test::new().orchfile(ONE).args(["build", "-j", j]);
        let child = t.spawn();
        let (code, _, stderr) = finish_within(child, Duration::from_secs(20), "build -j");
        assert_eq!(code, Some(2), "-j {j}: {stderr}");
        assert!(stderr.contains("1024"), "-j {j}: {stderr}");
        assert!(!stderr.contains("panicked"), "-j {j}: {stderr}");
    }
    Test::new()
        .orchfile(ONE)
        .args(["build", "-j", "1024"])
        .run();
}

#[test]
fn orchfile_jobs_beyond_the_cap_are_a_configuration_error() {
    let text = ONE.replace("format = 1", "format = 1\njobs = 100000");
    let out = Test::new()
        .orchfile(&text)
        .expect_status(2)
        .stderr_contains("`jobs`")
        .stderr_contains("1024")
        .stderr_contains("Orchfile.toml")
        .run();
    assert!(!out.exists("a.txt"));
    // `check` and `plan` see it too: it is a property of the Orchfile, not of a build.
    for cmd in ["check", "plan"] {
        out.again()
            .args([cmd])
            .expect_status(2)
            .stderr_contains("above orch's limit of 1024")
            .run();
    }
}

#[test]
fn a_fifo_in_a_file_remote_is_a_miss_not_a_stall() {
    let remote = tempfile::Builder::new()
        .prefix("orch-remote-")
        .tempdir()
        .expect("temporary directory");
    let orchfile = format!(
        "[cache]\nremote = \"file://{}\"\n\n[phase.a]\nrun = \"cat in.txt > {{output}}\"\ninputs = [\"in.txt\"]\noutputs = [\"build/a.txt\"]\n",
        remote.path().display()
    );
    let t = Test::new()
        .orchfile(&orchfile)
        .write("in.txt", "1\n")
        .args(["build"]);
    let project = t.project().clone();
    t.run();
    // Another checkout: nothing local; the remote's entry is now a FIFO.
    std::fs::remove_dir_all(project.join(".orch")).unwrap();
    std::fs::remove_dir_all(project.join("build")).unwrap();
    let ac = remote.path().join("ac");
    let entry = std::fs::read_dir(&ac)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&entry).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&entry)
            .status()
            .unwrap()
            .success()
    );
    let child = project
        .test()
        .args(["build"])
        .env("ORCH_REMOTE_TIMEOUT", "10m")
        .spawn();
    let (code, _, stderr) = finish_within(child, Duration::from_secs(60), "build");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert_eq!(project.read("build/a.txt"), "1\n");
}
