//! Records where the binary came from, for `orch -vV`: the commit, its date, the build
//! date and the target. Outside a git checkout (a source tarball) the commit is unknown.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let commit = git(&["rev-parse", "HEAD"]);
    let commit_date = git(&["log", "-1", "--format=%cs"]);
    // Rebuild the version when the checked-out commit moves, and only then: a build
    // date that changed on every build would relink the binary every time.
    let head_ref = git(&["symbolic-ref", "-q", "HEAD"]);
    let watched = ["HEAD", "packed-refs"]
        .into_iter()
        .chain(head_ref.as_deref());
    for path in watched {
        if let Some(p) = git(&["rev-parse", "--git-path", path])
            && PathBuf::from(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Reproducible builds set SOURCE_DATE_EPOCH; everyone else gets today.
    let built = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap_or_else(SystemTime::now);
    let built = humantime::format_rfc3339_seconds(built).to_string();
    let build_date = built.get(..10).unwrap_or(&built).to_owned();
    println!(
        "cargo:rustc-env=ORCH_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    println!(
        "cargo:rustc-env=ORCH_COMMIT_DATE={}",
        commit_date.as_deref().unwrap_or("unknown")
    );
    println!("cargo:rustc-env=ORCH_BUILD_DATE={build_date}");
    println!(
        "cargo:rustc-env=ORCH_TARGET={}",
        std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned())
    );
}
