//! `cargo bench --bench shards`: what orch adds per shard beyond spawning its process.
//!
//! A generated project has one phase sharded with `files` over N small files (default
//! 10,000; `ORCH_BENCH_SHARDS` to change), each shard running a trivial command
//! (`true > {shard.output}`; `ORCH_BENCH_SHARD_CMD=cp` runs `cp {shard.input}
//! {shard.output}` instead). With 2 jobs, it measures:
//!
//! - (a) the full build from a clean state (no `.orch/`, no output);
//! - (b) the same N commands run by `sh -c` directly (`std::process::Command`), from two
//!   threads pulling from a shared counter: the cost of the processes alone;
//! - (c) the per-shard overhead of orch, (a - b) / N;
//! - (d) a no-op rebuild;
//! - (e) a rebuild after one file changed, which must run exactly one shard.
//!
//! (a) and (b) alternate over a few rounds so both see the same machine load, and the
//! wall-time overhead is the median of the per-round differences. On a shared machine
//! that difference of two large numbers is noisy, so the CPU time of the spawning
//! process alone is reported too: orch's own user + system time (read from
//! `/proc/PID/stat` before it is reaped, so without its children) against that of the
//! two spawning threads. The shells' own CPU time is the same work in both and cancels.
//! orch's stage timings (`ORCH_TIMINGS=1`) of the last full build are printed as well.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::Value;

const JOBS: usize = 2;
const ROUNDS: usize = 5;

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("benchmark failed: {msg}");
    std::process::exit(1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// One measured run, in seconds.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    wall: f64,
    /// User + system time of whatever spawned the shells: orch, or the two threads.
    own_cpu: f64,
    /// User + system time of the shells (and what they ran).
    children_cpu: f64,
}

fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 * 1e-6
}

/// User + system time of this process (`RUSAGE_SELF`) or its reaped children.
fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: `rusage` is plain data; all zeroes is a valid value.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a valid, writable `rusage` for getrusage to fill.
    if unsafe { libc::getrusage(who, &mut r) } != 0 {
        die("getrusage failed");
    }
    seconds(r.ru_utime) + seconds(r.ru_stime)
}

/// Waits until child `pid` has exited without reaping it, then reads its own and its
/// children's CPU time from `/proc/PID/stat` (fields 14–17), in seconds.
fn exited_child_cpu(pid: u32) -> (f64, f64) {
    // SAFETY: `siginfo_t` is plain data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; WNOWAIT leaves it to be reaped by `Child::wait`.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    if r != 0 {
        die(format!("waitid: {}", std::io::Error::last_os_error()));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| die(format!("/proc/{pid}/stat: {e}")));
    // The fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    if fields.len() < 15 {
        die(format!("cannot parse /proc/{pid}/stat: {stat}"));
    }
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let field = |n: usize| fields[n - 3] / tick;
    (field(14) + field(15), field(16) + field(17))
}

/// The trivial shard command, as a template (`cp` mode: copies its input).
fn template(cp: bool) -> &'static str {
    if cp {
        "cp {shard.input} {shard.output}"
    } else {
        "true > {shard.output}"
    }
}

fn file_name(i: usize) -> String {
    format!("src/f/{:03}/{i:06}.txt", i / 100)
}

fn generate(dir: &Path, n: usize, cp: bool) {
    let orchfile = format!(
        "[orch]\nformat = 1\n\n[phase.copy]\nrun = \"{}\"\noutputs = [\"out/all.txt\"]\n\
         shard = {{ strategy = \"files\", source = \"src/f/**/*.txt\" }}\n",
        template(cp)
    );
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| die(e));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| die(format!("{}: {e}", path.display())));
    };
    write("Orchfile.toml", &orchfile);
    for i in 0..n {
        write(&file_name(i), &format!("record {i}\n"));
    }
}

/// Runs `orch -C dir build -q -j 2 --run-id ID` with `ORCH_TIMINGS=1`; returns what it
/// cost and what it printed on stderr.
fn build(dir: &Path, scratch: &Path, run_id: &str) -> (Sample, String) {
    let err_path = scratch.join("orch.stderr");
    let err = std::fs::File::create(&err_path).unwrap_or_else(|e| die(e));
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("-C")
        .arg(dir)
        .args(["build", "-q", "-j", &JOBS.to_string(), "--run-id", run_id])
        .env("ORCH_TIMINGS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| die(format!("cannot run orch: {e}")));
    let (own_cpu, children_cpu) = exited_child_cpu(child.id());
    let status = child.wait().unwrap_or_else(|e| die(e));
    let wall = t.elapsed().as_secs_f64();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if !status.success() {
        die(format!("orch build exited with {status}:\n{stderr}"));
    }
    let sample = Sample {
        wall,
        own_cpu,
        children_cpu,
    };
    (sample, stderr)
}

/// The events of one run.
fn events(dir: &Path, run_id: &str) -> Vec<Value> {
    let path = dir.join(".orch/runs").join(run_id).join("events.jsonl");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| die(format!("{}: {e}", path.display())));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| die(format!("bad event: {e}"))))
        .collect()
}

fn of_type<'a>(events: &'a [Value], ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter(move |e| e["type"] == ty)
}

/// Shards started in a run.
fn shards_started(events: &[Value]) -> usize {
    of_type(events, "instance_started")
        .filter(|e| e.get("shard").is_some())
        .count()
}

/// Flushes dirty pages, so that writing back what one measurement wrote does not slow
/// down the next one.
fn settle() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
}

/// Removes every trace of earlier builds: `.orch/` and `out/`.
fn clean(dir: &Path) {
    for d in [".orch", "out"] {
        match std::fs::remove_dir_all(dir.join(d)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => die(e),
        }
    }
}

/// Runs the N shard commands with `sh -c` directly, from `JOBS` threads pulling from a
/// shared counter, writing into a fresh directory under `scratch`.
fn spawn_directly(project: &Path, scratch: &Path, n: usize, cp: bool) -> Sample {
    let out = scratch.join("direct");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap_or_else(|e| die(e));
    let out = Arc::new(out);
    let next = Arc::new(AtomicUsize::new(0));
    let project: Arc<PathBuf> = Arc::new(project.to_path_buf());
    let (own0, children0) = (rusage(libc::RUSAGE_SELF), rusage(libc::RUSAGE_CHILDREN));
    let t = Instant::now();
    let workers: Vec<_> = (0..JOBS)
        .map(|_| {
            let (out, next, project) = (Arc::clone(&out), Arc::clone(&next), Arc::clone(&project));
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let part = out.join(format!("{i}.part"));
                    let cmd = template(cp)
                        .replace("{shard.input}", &file_name(i))
                        .replace("{shard.output}", &part.to_string_lossy());
                    let status = Command::new("sh")
                        .arg("-c")
                        .arg(&cmd)
                        .current_dir(project.as_path())
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    if !status.as_ref().is_ok_and(|s| s.success()) {
                        die(format!("`sh -c '{cmd}'` failed: {status:?}"));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap_or_else(|_| die("a worker thread panicked"));
    }
    Sample {
        wall: t.elapsed().as_secs_f64(),
        own_cpu: rusage(libc::RUSAGE_SELF) - own0,
        children_cpu: rusage(libc::RUSAGE_CHILDREN) - children0,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; arguments are ignored.
    let n: usize = std::env::var("ORCH_BENCH_SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(10_000);
    let cp = std::env::var("ORCH_BENCH_SHARD_CMD").is_ok_and(|s| s == "cp");
    let tmp = tempfile::tempdir().unwrap_or_else(|e| die(e));
    let scratch = tmp.path();
    let dir = scratch.join("project");
    eprintln!(
        "shard overhead: {n} shards (`files`), `{}`, -j {JOBS}, {ROUNDS} rounds",
        template(cp)
    );
    generate(&dir, n, cp);

    // (a) and (b), alternating.
    let (mut full, mut direct) = (Vec::new(), Vec::new());
    let mut stages = String::new();
    for round in 0..ROUNDS {
        let run_id = format!("full-{round}");
        let mut orch = || {
            clean(&dir);
            settle();
            let (a, timings) = build(&dir, scratch, &run_id);
            let ran = shards_started(&events(&dir, &run_id));
            if ran != n {
                die(format!("the full build ran {ran} shards, not {n}"));
            }
            stages = timings;
            a
        };
        // Alternate which goes first, so neither always runs on a warmer machine.
        let (a, b) = if round % 2 == 0 {
            let a = orch();
            settle();
            (a, spawn_directly(&dir, scratch, n, cp))
        } else {
            settle();
            let b = spawn_directly(&dir, scratch, n, cp);
            (orch(), b)
        };
        eprintln!(
            "  round {}: orch {:.0} ms (own CPU {:.0} ms, shells {:.0} ms); \
             direct {:.0} ms (own CPU {:.0} ms, shells {:.0} ms)",
            round + 1,
            a.wall * 1e3,
            a.own_cpu * 1e3,
            a.children_cpu * 1e3,
            b.wall * 1e3,
            b.own_cpu * 1e3,
            b.children_cpu * 1e3,
        );
        full.push(a);
        direct.push(b);
    }

    // (d) no-op rebuilds: the first may re-hash files written within the last 2 s (the
    // racy-timestamp rule); the median of the following ones is the steady state.
    let first_noop = build(&dir, scratch, "noop-0").0.wall;
    let mut noops = Vec::new();
    for k in 1..=5 {
        let run_id = format!("noop-{k}");
        noops.push(build(&dir, scratch, &run_id).0.wall);
        let ran = of_type(&events(&dir, &run_id), "instance_started").count();
        if ran != 0 {
            die(format!("a no-op build started {ran} instances or shards"));
        }
    }

    // (e) one file changed: exactly one shard runs, the others are reused.
    let changed = file_name(n / 2);
    std::fs::write(dir.join(&changed), "record changed\n").unwrap_or_else(|e| die(e));
    let one = build(&dir, scratch, "one-changed").0.wall;
    let ev = events(&dir, "one-changed");
    let ran = shards_started(&ev);
    let plan = of_type(&ev, "shard_plan")
        .next()
        .cloned()
        .unwrap_or_default();
    let merged = of_type(&ev, "merge_completed").count();
    if ran != 1 || plan["reused"].as_u64() != Some(n as u64 - 1) || merged != 1 {
        die(format!(
            "after changing `{changed}`, {ran} shards ran (want 1), shard_plan {plan}, \
             {merged} merges"
        ));
    }

    let col = |v: &[Sample], f: fn(&Sample) -> f64| -> Vec<f64> { v.iter().map(f).collect() };
    let (a_wall, b_wall) = (col(&full, |s| s.wall), col(&direct, |s| s.wall));
    let (a_own, b_own) = (col(&full, |s| s.own_cpu), col(&direct, |s| s.own_cpu));
    let (a_sh, b_sh) = (
        col(&full, |s| s.children_cpu),
        col(&direct, |s| s.children_cpu),
    );
    let paired = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x - y).collect());
    let us = |secs: f64| secs * 1e6 / n as f64;

    println!();
    println!(
        "shards: {n} (`files`, `{}`), -j {JOBS}, medians of {ROUNDS} rounds",
        template(cp)
    );
    println!(
        "(a) orch full build, clean state   {:>8.0} ms wall (min {:.0}); CPU: orch itself {:.0} ms, shells {:.0} ms",
        median(a_wall.clone()) * 1e3,
        min(&a_wall) * 1e3,
        median(a_own.clone()) * 1e3,
        median(a_sh.clone()) * 1e3,
    );
    println!(
        "(b) {n} `sh -c` from 2 threads  {:>8.0} ms wall (min {:.0}); CPU: spawning threads {:.0} ms, shells {:.0} ms",
        median(b_wall.clone()) * 1e3,
        min(&b_wall) * 1e3,
        median(b_own.clone()) * 1e3,
        median(b_sh.clone()) * 1e3,
    );
    println!(
        "(c) overhead per shard (a - b) / N {:>8.1} µs wall (from the minima: {:.1} µs); target < 100 µs",
        us(paired(&a_wall, &b_wall)),
        us(min(&a_wall) - min(&b_wall)),
    );
    println!(
        "    CPU of the spawner per shard:  orch {:.1} µs, direct {:.1} µs: orch's own work {:.1} µs",
        us(median(a_own.clone())),
        us(median(b_own.clone())),
        us(paired(&a_own, &b_own)),
    );
    println!("    orch's stages in the last full build:");
    for line in stages.lines() {
        println!("      {line}");
    }
    println!(
        "(d) no-op rebuild                  {:>8.1} ms (median of 5; the first after the full build: {:.1} ms)",
        median(noops) * 1e3,
        first_noop * 1e3
    );
    println!(
        "(e) one file changed               {:>8.1} ms (1 shard ran, {} reused, merged)",
        one * 1e3,
        n - 1
    );
}
