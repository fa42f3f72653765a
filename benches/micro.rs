//! `cargo bench --bench micro`: the pure steps of a build, timed in-process, so a
//! regression in one of them shows without the noise of processes and disks.
//!
//! - `load`: parse, validate and graph a generated Orchfile of N phases (default 10,000;
//!   `ORCH_BENCH_PHASES`), layered like `benches/noop/gen.py` (each phase reads its own
//!   source and the outputs of two earlier phases, edges implied by the files).
//! - `key`: the action key of an instance with 100 inputs and 3 upstreams.
//! - `hash`: BLAKE3 over 64 MiB in memory (the ceiling of input hashing).
//! - `priority`: critical-path priorities over the loaded graph.
//! - `schedule`: pop and finish every instance of the loaded graph through the scheduler.
//! - `cache`: read back the remembered project (`.orch/project.cache`): decode and
//!   revalidate, the load stage of every build after the first.
//! - `plan`: `plan_static` over every instance of the project built once (by the real
//!   build, in process), with one source changed since: the plan stage of a build.
//!
//! Each step runs for about a second (at least 3 times); the median and the minimum per
//! run are printed. Compare two commits by running both, one after the other, on an idle
//! machine; nothing here asserts a time.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use orch::exec::priority::critical_path;
use orch::exec::scheduler::Scheduler;
use orch::fs::{Digest, hash_bytes};
use orch::plan::{KeyParts, Upstream, plan_static};

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("benchmark failed: {msg}");
    std::process::exit(1)
}

/// Runs `f` repeatedly for about `budget` (at least 3 times) and prints the median and
/// minimum time per run.
fn measure(name: &str, budget: Duration, mut f: impl FnMut()) {
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed() < budget && times.len() < 100_000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let show = |s: f64| {
        if s >= 1e-3 {
            format!("{:.2} ms", s * 1e3)
        } else {
            format!("{:.2} µs", s * 1e6)
        }
    };
    println!(
        "{name:<10} median {:>10}   min {:>10}   ({} runs)",
        show(times[times.len() / 2]),
        show(times[0]),
        times.len()
    );
}

/// A layered Orchfile of `n` phases whose edges come from the files they read.
fn orchfile(n: usize) -> String {
    let mut s = String::from("[orch]\nformat = 1\n");
    for i in 0..n {
        let mut inputs = vec![format!("\"src/f{i}.txt\"")];
        if i >= 10 {
            let a = i - 10;
            let b = if i / 2 == a { a - 1 } else { i / 2 };
            inputs.push(format!("\"out/p{a}.txt\""));
            inputs.push(format!("\"out/p{b}.txt\""));
        }
        s.push_str(&format!(
            "\n[phase.p{i}]\nrun = \"cksum {{inputs}} > {{output}}\"\ninputs = [{}]\noutputs = [\"out/p{i}.txt\"]\n",
            inputs.join(", ")
        ));
    }
    s
}

fn key_parts() -> KeyParts {
    let digest = |s: &str| hash_bytes(s.as_bytes());
    let inputs: BTreeMap<String, Digest> = (0..100)
        .map(|k| {
            (
                format!("src/dir{}/file{k}.c", k % 7),
                digest(&k.to_string()),
            )
        })
        .collect();
    let upstream = (0..3)
        .map(|u| {
            (
                format!("up{u}"),
                Upstream::Present {
                    hard: true,
                    outputs: BTreeMap::from([(format!("build/up{u}.o"), digest("o"))]),
                },
            )
        })
        .collect();
    KeyParts {
        instance: "compile".into(),
        command: "cc -O2 -c {inputs} -o {output}".into(),
        cwd: String::new(),
        outputs: vec!["build/obj.o".into()],
        shard: String::new(),
        env: BTreeMap::from([("CC".to_owned(), Some(digest("cc")))]),
        inputs,
        upstream,
        schemas: BTreeMap::new(),
        depfile: String::new(),
    }
}

fn main() {
    let n: usize = std::env::var("ORCH_BENCH_PHASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let budget = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap_or_else(|e| die(e));
    let file = dir.path().join("Orchfile.toml");
    std::fs::write(&file, orchfile(n)).unwrap_or_else(|e| die(e));
    println!("{n} phases; the times are per run of each step");

    let load = || {
        let raw = orch::orchfile::load::load(&file).unwrap_or_else(|_| die("load failed"));
        let project = orch::model::validate(raw).unwrap_or_else(|_| die("invalid project"));
        let graph = orch::graph::build(&project).unwrap_or_else(|_| die("cycle"));
        (project, graph)
    };
    measure("load", budget, || {
        black_box(load());
    });
    let (project, graph) = load();

    let parts = key_parts();
    measure("key", budget, || {
        black_box(black_box(&parts).action_key());
    });

    let data = vec![7u8; 64 << 20];
    measure("hash", budget, || {
        black_box(hash_bytes(black_box(&data)));
    });

    let selected: BTreeSet<usize> = (0..project.instances.len()).collect();
    let weight = vec![1u64; project.instances.len()];
    measure("priority", budget, || {
        black_box(critical_path(&graph, &selected, &weight));
    });

    let priority = critical_path(&graph, &selected, &weight);
    measure("schedule", budget, || {
        let mut s = Scheduler::new(&project, &graph, &selected, priority.clone());
        while let Some(i) = s.pop() {
            s.finish(i);
        }
    });

    let orch_dir = dir.path().join(".orch");
    std::fs::create_dir_all(&orch_dir).unwrap_or_else(|e| die(e));
    orch::model::cache::write(&orch_dir, &project, &graph).unwrap_or_else(|e| die(e));
    measure("cache", budget, || {
        let read = orch::model::cache::read(&orch_dir, &file);
        black_box(read.unwrap_or_else(|| die("the project cache was not read back")));
    });

    plan_step(dir.path(), n, &project, &graph, &selected, budget);
}

/// Builds the project once, changes one source, and times planning it again.
fn plan_step(
    dir: &std::path::Path,
    n: usize,
    project: &orch::model::Project,
    graph: &orch::graph::Graph,
    selected: &BTreeSet<usize>,
    budget: Duration,
) {
    std::fs::create_dir_all(dir.join("src")).unwrap_or_else(|e| die(e));
    for i in 0..n {
        std::fs::write(dir.join(format!("src/f{i}.txt")), format!("source {i}\n"))
            .unwrap_or_else(|e| die(e));
    }
    let args = ["orch", "build", "-q", "-j", "2", "-C"].map(std::ffi::OsString::from);
    let args = args.into_iter().chain([dir.as_os_str().to_owned()]);
    if orch::run(args) != orch::EXIT_OK {
        die("the build failed");
    }
    std::fs::write(dir.join(format!("src/f{}.txt", n / 2)), "changed\n").unwrap_or_else(|e| die(e));
    let layout = orch::store::Layout::new(&project.root);
    let (store, _) = orch::store::Store::open(&layout).unwrap_or_else(|e| die(e));
    let snap = orch::snapshot::Snapshot::take(project, graph, selected, BTreeSet::new(), &store)
        .unwrap_or_else(|e| die(e));
    let stale = plan_static(&snap.order, &snap)
        .values()
        .filter(|e| e.stale)
        .count();
    if stale == 0 {
        die("the changed source left every instance up to date");
    }
    measure("plan", budget, || {
        black_box(plan_static(&snap.order, &snap));
    });
}
