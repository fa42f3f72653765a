//! `cargo bench --bench restore`: restoring 1 GiB of cached outputs (64 files of 16 MiB;
//! `ORCH_BENCH_RESTORE_MIB` to change the total) from the local cache, as a ratio to
//! `cp -r` of the same files on the same file system. Restoring includes verifying every
//! byte against its digest; runs alternate so both see the same machine load.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let ok = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("benchmark command failed: {cmd:?}");
        std::process::exit(1);
    }
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let total_mib: usize = std::env::var("ORCH_BENCH_RESTORE_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let files = 64;
    let per_file = (total_mib / files).max(1);
    let orch = env!("CARGO_BIN_EXE_orch");
    let tmp = tempfile::tempdir().unwrap_or_else(|e| {
        eprintln!("cannot create a temporary directory: {e}");
        std::process::exit(1)
    });
    let p = tmp.path().join("project");
    std::fs::create_dir_all(&p).unwrap_or_default();
    // Incompressible content, different per file, written by the phase itself.
    let orchfile = format!(
        "[phase.big]\nrun = \"mkdir -p out/big && for i in $(seq 1 {files}); do head -c {}M /dev/urandom > out/big/f$i; done\"\noutputs = [\"out/big/\"]\n",
        per_file
    );
    std::fs::write(p.join("Orchfile.toml"), orchfile).unwrap_or_default();
    eprintln!(
        "generating and storing {} MiB in {files} files…",
        per_file * files
    );
    run(Command::new(orch).arg("-C").arg(&p).args(["build", "-q"]));
    let (mut restore, mut copy) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let out = p.join("out");
        let copy_dir = tmp.path().join("copy");
        let _ = std::fs::remove_dir_all(&copy_dir);
        sync();
        copy.push(run(Command::new("cp").arg("-r").arg(&out).arg(&copy_dir)));
        let _ = std::fs::remove_dir_all(&out);
        sync();
        restore.push(run(Command::new(orch)
            .arg("-C")
            .arg(&p)
            .args(["build", "-q"])));
        assert_restored(&p.join("out/big"), files);
    }
    let (r, c) = (median(restore), median(copy));
    println!(
        "restore/{}MiB/orch   median {:8.1} ms (restore from the local cache, verified)",
        per_file * files,
        r.as_secs_f64() * 1e3
    );
    println!(
        "restore/{}MiB/cp-r   median {:8.1} ms",
        per_file * files,
        c.as_secs_f64() * 1e3
    );
    println!(
        "restore/{}MiB/ratio  orch/cp = {:.2}",
        per_file * files,
        r.as_secs_f64() / c.as_secs_f64()
    );
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn assert_restored(dir: &Path, files: usize) {
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    if n != files {
        eprintln!("the restore produced {n} files, expected {files}");
        std::process::exit(1);
    }
}
