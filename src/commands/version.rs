//! `orch -V` / `orch -vV`: the version, and with `-v` where the binary came from (as
//! `rustc -vV` and `cargo -vV` print it).

use crate::EXIT_OK;
use crate::events::human::Verbosity;

use super::Global;

/// The first 12 digits of the commit, or `unknown`.
fn short_commit() -> &'static str {
    let commit = env!("ORCH_COMMIT");
    commit.get(..12).unwrap_or(commit)
}

/// Prints the version line (and with `-v`, the build details).
pub fn run(g: &Global) -> i32 {
    let version = env!("CARGO_PKG_VERSION");
    if g.verbosity != Verbosity::Verbose {
        outln!(
            "orch {version} ({} {})",
            short_commit(),
            env!("ORCH_COMMIT_DATE")
        );
        return EXIT_OK;
    }
    outln!(
        "orch {version} ({} {})",
        short_commit(),
        env!("ORCH_COMMIT_DATE")
    );
    outln!("release: {version}");
    outln!("commit-hash: {}", env!("ORCH_COMMIT"));
    outln!("commit-date: {}", env!("ORCH_COMMIT_DATE"));
    outln!("build-date: {}", env!("ORCH_BUILD_DATE"));
    outln!("host: {}", env!("ORCH_TARGET"));
    EXIT_OK
}
