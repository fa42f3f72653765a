//! Configuration that would make orch read, write or delete outside what it owns: a local
//! store over the project, paths escaping through `..` or symlinks, remote URLs orch does
//! not support, outputs that overwrite configuration or inputs, runaway matrices, special
//! files, and every type error of a table at once.

use std::os::unix::fs::symlink;
use std::path::Path;

use crate::test::*;

/// `orch check` on `orchfile` (with `setup` run on the project first) must exit 2 and
/// print every `expected` text.
fn refused(orchfile: &str, setup: impl FnOnce(&Project), expected: &[&str]) -> Output {
    let t = Test::new().orchfile(orchfile);
    setup(t.project());
    let mut t = t.args(["check"]).expect_status(2);
    for e in expected {
        t = t.stderr_contains(e);
    }
    let out = t.run();
    assert!(out.stderr.contains("help:"), "{}", out.stderr);
    out
}

/// `orch check` on `orchfile` must succeed.
fn accepted(orchfile: &str, setup: impl FnOnce(&Project)) -> Output {
    let t = Test::new().orchfile(orchfile);
    setup(t.project());
    t.args(["check"]).stdout_contains("ok").run()
}

/// A directory outside every project, removed when the test ends.
fn outside() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("orch-outside-")
        .tempdir()
        .expect("create a temporary directory");
    std::fs::write(d.path().join("secret.txt"), "secret").expect("write");
    std::fs::write(d.path().join("frag.toml"), "[phase.evil]\nrun = \"true\"\n").expect("write");
    std::fs::write(d.path().join("schema.json"), "{}").expect("write");
    d
}

fn link(target: &Path, project: &Project, rel: &str) {
    let at = project.join(rel);
    if let Some(parent) = at.parent() {
        std::fs::create_dir_all(parent).expect("create parent");
    }
    symlink(target, at).expect("symlink");
}

const ONE_PHASE: &str = r#"
[phase.a]
run = "cat src/a.txt > {output}"
inputs = ["src/a.txt", "src/**/*.md"]
outputs = [{ path = "build/a.json", schema = "schemas/a.json" }]
"#;

fn one_phase_files(p: &Project) {
    p.write("src/a.txt", "a");
    p.write("schemas/a.json", "{}");
}

#[test]
fn cache_dir_over_the_project_is_refused() {
    for (dir, why) in [
        ("..", "contains the project root"),
        (".", "is the project root"),
        ("src", "holds input `src/"),
        ("src/", "holds input `src/"),
        ("build", "holds output `build/a.json`"),
        ("schemas", "holds a schema, `schemas/a.json`"),
        (".orch", "holds orch's state"),
    ] {
        let orchfile = format!("[cache]\ndir = \"{dir}\"\n{ONE_PHASE}");
        let out = refused(
            &orchfile,
            one_phase_files,
            &["Orchfile.toml:2:7", "cache directory", why],
        );
        // Every command that loads the project refuses it, not only `check`.
        for cmd in ["build", "plan", "status"] {
            out.again()
                .args([cmd])
                .expect_status(2)
                .stderr_contains(why)
                .run();
        }
        assert!(out.exists("src/a.txt"), "dir = {dir:?}");
    }
    // Where fragments are included from, even before there is one.
    refused(
        "[orch]\ninclude = [\"pipelines/*.toml\"]\n[cache]\ndir = \"pipelines\"\n[phase.a]\nrun = \"true\"\n",
        |_| {},
        &["Orchfile.toml:4:7", "holds include `pipelines/*.toml`"],
    );
}

#[test]
fn cache_dir_outside_or_inside_its_own_directory_is_allowed() {
    let shared = outside();
    let abs = shared.path().join("store");
    for dir in [
        abs.to_str().expect("utf-8"),
        "cache",
        ".orch/store",
        "build-cache",
    ] {
        let orchfile = format!("[cache]\ndir = \"{dir}\"\n{ONE_PHASE}");
        accepted(&orchfile, one_phase_files);
    }
}

#[test]
fn symlinked_plain_input_leading_outside_is_refused() {
    let out_dir = outside();
    let target = out_dir.path().join("secret.txt");
    refused(
        "[phase.a]\nrun = \"cat {inputs} > {output}\"\ninputs = [\"link.txt\"]\noutputs = [\"o\"]\n",
        |p| link(&target, p, "link.txt"),
        &["Orchfile.toml:3:11", "input `link.txt`", "symlink"],
    );
    // A symlink that stays inside the project is an ordinary input.
    let t = Test::new().orchfile(
        "[phase.a]\nrun = \"cat {inputs} > {output}\"\ninputs = [\"link.txt\", \"data/*.txt\"]\noutputs = [\"o\"]\n",
    );
    t.project().write("real.txt", "inside");
    link(Path::new("real.txt"), t.project(), "link.txt");
    link(Path::new("../real.txt"), t.project(), "data/alias.txt");
    let out = t.run();
    assert_eq!(out.read("o"), "insideinside");
}

#[test]
fn shard_source_leading_outside_is_refused() {
    let out_dir = outside();
    let target = out_dir.path().join("secret.txt");
    refused(
        "[phase.a]\nrun = \"cat {shard.input} > {shard.output}\"\noutputs = [\"o.jsonl\"]\nshard = { strategy = \"chunk\", source = \"in.jsonl\", size = 1 }\n",
        |p| link(&target, p, "in.jsonl"),
        &["Orchfile.toml:4:9", "shard source `in.jsonl`", "symlink"],
    );
}

#[test]
fn schema_outside_the_project_is_refused() {
    let out_dir = outside();
    let target = out_dir.path().to_path_buf();
    refused(
        "[phase.a]\nrun = \"echo {{}} > {output}\"\noutputs = [{ path = \"o.json\", schema = \"../s.json\" }]\n",
        |_| {},
        &[
            "Orchfile.toml:3",
            "schema `../s.json`",
            "`..` leaves the project root",
        ],
    );
    refused(
        "[phase.a]\nrun = \"echo {{}} > {output}\"\noutputs = [{ path = \"o.json\", schema = \"ext/schema.json\" }]\n",
        |p| link(&target, p, "ext"),
        &["schema `ext/schema.json`", "symlink"],
    );
    refused(
        "[phase.a]\nrun = \"echo {{}} > {output}\"\noutputs = [{ path = \"o.json\", schema = \"/etc/s.json\" }]\n",
        |_| {},
        &["schema `/etc/s.json`", "absolute"],
    );
}

#[test]
fn include_through_a_symlink_outside_is_refused() {
    let out_dir = outside();
    let target = out_dir.path().to_path_buf();
    for pattern in ["ext/frag.toml", "ext/*.toml"] {
        let out = refused(
            &format!("[orch]\ninclude = [\"{pattern}\"]\n\n[phase.a]\nrun = \"true\"\n"),
            |p| link(&target, p, "ext"),
            &["Orchfile.toml:2:12", "symlink"],
        );
        assert!(!out.stderr.contains("evil"), "{}", out.stderr);
    }
    // A fragment that is itself a symlink to a file outside.
    let file = out_dir.path().join("frag.toml");
    refused(
        "[orch]\ninclude = [\"frag.toml\"]\n\n[phase.a]\nrun = \"true\"\n",
        |p| link(&file, p, "frag.toml"),
        &["Orchfile.toml:2:12", "symlink"],
    );
}

#[test]
fn glob_match_through_a_symlink_outside_fails_naming_the_file() {
    let out_dir = outside();
    let secret = out_dir.path().join("secret.txt");
    let t = Test::new().orchfile(
        "[phase.a]\nrun = \"cat {inputs} > {output}\"\ninputs = [\"data/*.txt\"]\noutputs = [\"o\"]\n",
    );
    t.project().write("data/ok.txt", "ok");
    link(&secret, t.project(), "data/leak.txt");
    let out = t
        .expect_status(2)
        .stderr_contains("data/leak.txt")
        .stderr_contains("outside the project")
        .run();
    assert!(!out.exists("o"), "the phase ran");
    out.again()
        .args(["plan"])
        .expect_status(2)
        .stderr_contains("data/leak.txt")
        .run();
}

#[test]
fn remote_urls_take_only_the_documented_forms() {
    for url in [
        "file:remote-x",
        "file://relative/x",
        "file:/abs",
        "ftp://host/x",
        "remote-x",
        "http:host",
        "s3://",
        "",
    ] {
        let out = refused(
            &format!("[cache]\nremote = \"{url}\"\n\n[phase.a]\nrun = \"true\"\n"),
            |_| {},
            &["Orchfile.toml:2:10", "remote"],
        );
        assert!(!Path::new("/remote-x").exists(), "{url}");
        out.again()
            .args(["build"])
            .expect_status(2)
            .stderr_contains("remote")
            .run();
    }
    for url in [
        "file:///var/cache/orch",
        "http://127.0.0.1:9/orch",
        "https://cache.example.com",
        "s3://bucket",
        "s3://bucket/some/prefix",
    ] {
        accepted(
            &format!("[cache]\nremote = \"{url}\"\n\n[phase.a]\nrun = \"true\"\n"),
            |_| {},
        );
    }
}

#[test]
fn outputs_that_overwrite_configuration_or_inputs_are_refused() {
    let cases: [(&str, &str); 6] = [
        (
            "[phase.a]\nrun = \"true\"\noutputs = [\"Orchfile.toml\"]\n",
            "output `Orchfile.toml` is the Orchfile",
        ),
        (
            "[phase.a]\nrun = \"true\"\noutputs = [\"./{phase}/../Orchfile.toml\"]\n",
            "leaves the project root",
        ),
        (
            "[orch]\ninclude = [\"more/*.toml\"]\n[phase.a]\nrun = \"true\"\noutputs = [\"more/b.toml\"]\n",
            "output `more/b.toml` is an included file",
        ),
        (
            "[phase.a]\nrun = \"true\"\noutputs = [\"s.json\"]\n[phase.b]\nrun = \"true\"\noutputs = [{ path = \"b.json\", schema = \"s.json\" }]\n",
            "output `s.json` is a schema",
        ),
        (
            "[vars]\nname = \"in\"\n[phase.a]\nrun = \"true\"\ninputs = [\"x/in.txt\"]\noutputs = [\"x/{vars.name}.txt\"]\n",
            "output `x/in.txt` is an input of phase `a`",
        ),
        (
            "[phase.a]\nrun = \"true\"\nmatrix = { l = [\"fr\", \"de\"] }\ninputs = [\"x/*.txt\"]\noutputs = [\"x/{matrix.l}.txt\"]\n",
            "output `x/de.txt` is matched by input `x/*.txt` of phase `a`",
        ),
    ];
    for (orchfile, why) in cases {
        refused(
            orchfile,
            |p| {
                p.write("more/b.toml", "[phase.b]\nrun = \"true\"\n");
                p.write("s.json", "{}");
                p.write("x/in.txt", "in");
            },
            &["Orchfile.toml:", why],
        );
    }
    // Another phase's input is an edge, not an error.
    accepted(
        "[phase.a]\nrun = \"true\"\noutputs = [\"x/a.txt\"]\n[phase.b]\nrun = \"true\"\ninputs = [\"x/*.txt\"]\noutputs = [\"b.txt\"]\n",
        |_| {},
    );
}

#[test]
fn huge_matrix_is_refused_before_it_is_expanded() {
    let values: Vec<String> = (0..100).map(|i| format!("\"v{i}\"")).collect();
    let list = values.join(", ");
    let orchfile = format!(
        "[phase.small]\nrun = \"true\"\n\n[phase.big]\nrun = \"echo {{matrix.a}}{{matrix.b}}{{matrix.c}}\"\nmatrix = {{ a = [{list}], b = [{list}], c = [{list}] }}\n"
    );
    refused(
        &orchfile,
        |_| {},
        &[
            "Orchfile.toml:6:",
            "phase `big`",
            "1000000 instances",
            "100000",
        ],
    );
    // The cap counts before multiplying: no overflow either.
    let values: Vec<String> = (0..1000).map(|i| format!("\"v{i}\"")).collect();
    let list = values.join(", ");
    let axes: Vec<String> = (0..8).map(|i| format!("x{i} = [{list}]")).collect();
    refused(
        &format!(
            "[phase.big]\nrun = \"true\"\nmatrix = {{ {} }}\n",
            axes.join(", ")
        ),
        |_| {},
        &["phase `big`", "more than"],
    );
}

#[test]
fn total_instances_are_capped_across_phases() {
    let values: Vec<String> = (0..100).map(|i| format!("\"v{i}\"")).collect();
    let list = values.join(", ");
    let mut orchfile = String::new();
    for p in 0..11 {
        orchfile.push_str(&format!(
            "[phase.p{p}]\nrun = \"true\"\nmatrix = {{ a = [{list}], b = [{list}] }}\n\n"
        ));
    }
    // 11 × 10,000 instances pass the per-phase cap but not the project's.
    let values: Vec<String> = (0..1000).map(|i| format!("\"w{i}\"")).collect();
    let big = values.join(", ");
    for p in 0..10 {
        orchfile.push_str(&format!(
            "[phase.q{p}]\nrun = \"true\"\nmatrix = {{ a = [{big}], b = [{list}] }}\n\n"
        ));
    }
    refused(&orchfile, |_| {}, &["instances in all", "1000000"]);
}

fn mkfifo(p: &Project, rel: &str) {
    let path = p.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent");
    }
    let c = std::ffi::CString::new(path.to_str().expect("utf-8")).expect("no NUL");
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

#[test]
fn special_files_matched_by_globs_are_skipped_with_a_warning() {
    let t = Test::new().orchfile(
        "[phase.a]\nrun = \"cat {inputs} > {output}\"\ninputs = [\"data/*\"]\noutputs = [\"o\"]\n",
    );
    t.project().write("data/a.txt", "a");
    mkfifo(t.project(), "data/pipe");
    let _sock =
        std::os::unix::net::UnixListener::bind(t.project().join("data/sock")).expect("bind");
    let out = t
        .stderr_contains("warning:")
        .stderr_contains("`data/pipe`")
        .stderr_contains("`data/sock`")
        .run();
    assert_eq!(out.read("o"), "a");
}

#[test]
fn plain_input_naming_a_special_file_is_refused() {
    refused(
        "[phase.a]\nrun = \"cat {inputs} > {output}\"\ninputs = [\"pipe\"]\noutputs = [\"o\"]\n",
        |p| mkfifo(p, "pipe"),
        &["Orchfile.toml:3:11", "input `pipe`", "FIFO"],
    );
    refused(
        "[phase.a]\nrun = \"true\"\ninputs = [\"/dev/null\", \"dev\"]\noutputs = [\"o\"]\n",
        |p| link(Path::new("/dev/null"), p, "dev"),
        &["input `/dev/null`", "input `dev`"],
    );
}

#[test]
fn every_type_error_of_a_table_is_reported() {
    let out = refused(
        "[phase.a]\nrun = \"true\"\ntimeout = 5\nalways = \"yes\"\ncache = 1\n\n[cache]\ndir = 3\npush = \"no\"\n",
        |_| {},
        &[
            "Orchfile.toml:3:11",
            "Orchfile.toml:4:10",
            "Orchfile.toml:5:9",
            "Orchfile.toml:8:7",
            "Orchfile.toml:9:8",
        ],
    );
    assert!(
        out.stderr.contains("5 configuration errors"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_glob_match_whose_name_is_not_utf8_is_named_with_a_useful_help() {
    use std::os::unix::ffi::OsStrExt as _;
    let t = Test::new()
        .orchfile(
            r#"
[phase.p]
run = "cat {inputs} > {output}"
inputs = ["src/*"]
outputs = ["out/p.txt"]
"#,
        )
        .write("src/a.txt", "a\n");
    let bad = t
        .project()
        .join("src")
        .join(std::ffi::OsStr::from_bytes(b"b\xff.txt"));
    std::fs::write(bad, "b\n").unwrap();
    t.args(["build"])
        .expect_status(2)
        .stderr_contains("src/b\u{fffd}.txt")
        .stderr_contains("not valid UTF-8")
        .stderr_contains("rename the file")
        .run();
}
