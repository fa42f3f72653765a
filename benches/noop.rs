//! `cargo bench --bench noop`: the no-op build of a generated N-phase project (default
//! 10,000; `ORCH_BENCH_PHASES` to change), orch against ninja on the identical graph when
//! ninja is installed. Runs of the two tools alternate, so both see the same machine
//! load, and the ratio of medians is reported. `benches/noop/run.sh` does the same with
//! hyperfine for a fuller report.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
    let elapsed = t.elapsed();
    match status {
        Ok(s) if s.success() => elapsed,
        other => {
            eprintln!("benchmark command failed: {cmd:?}: {other:?}");
            std::process::exit(1);
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn generate(dir: &Path, n: usize) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/noop/gen.py");
    let ok = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(n.to_string())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("benches/noop/gen.py failed (python3 is needed to generate the project)");
        std::process::exit(1);
    }
}

fn main() {
    let n: usize = std::env::var("ORCH_BENCH_PHASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let runs = 15;
    let orch = env!("CARGO_BIN_EXE_orch");
    let tmp = tempfile::tempdir().unwrap_or_else(|e| {
        eprintln!("cannot create a temporary directory: {e}");
        std::process::exit(1)
    });
    let (a, b) = (tmp.path().join("orch"), tmp.path().join("ninja"));
    generate(&a, n);
    let have_ninja = Command::new("ninja")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    eprintln!("no-op build of {n} phases: initial full builds…");
    let full = run(Command::new(orch)
        .arg("-C")
        .arg(&a)
        .args(["build", "-q", "-j", "2"]));
    eprintln!("orch full build: {:.0} ms", ms(full));
    if have_ninja {
        generate(&b, n);
        let full = run(Command::new("ninja").arg("-C").arg(&b).args(["-j", "2"]));
        eprintln!("ninja full build: {:.0} ms", ms(full));
    }
    // Settle the digest cache (outputs just written are re-verified once).
    run(Command::new(orch).arg("-C").arg(&a).args(["build", "-q"]));
    let (mut o, mut nj) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        o.push(run(Command::new(orch)
            .arg("-C")
            .arg(&a)
            .args(["build", "-q"])));
        if have_ninja {
            nj.push(run(Command::new("ninja").arg("-C").arg(&b)));
        }
    }
    let om = median(o);
    println!("noop/{n}/orch   median {:8.2} ms over {runs} runs", ms(om));
    if have_ninja {
        let nm = median(nj);
        println!("noop/{n}/ninja  median {:8.2} ms over {runs} runs", ms(nm));
        println!("noop/{n}/ratio  orch/ninja = {:.2}", ms(om) / ms(nm));
    } else {
        println!("(ninja not found: install ninja-build for the side-by-side ratio)");
    }
}
