//! `orch init`: write a small, working starter Orchfile.

use crate::orchfile::ORCHFILE;
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

use super::Global;

const STARTER: &str = r#"# orch pipeline: `orch build` runs what is stale, `orch plan` says why.
[orch]
format = 1

[phase.words]
description = "Split the text into one word per line"
run = "tr -s '[:space:]' '\n' < {inputs} > {output}"
inputs = ["input.txt"]
outputs = ["build/words.txt"]

[phase.count]
description = "Count each word"
needs = ["words"]
run = "sort {needs.words.outputs} | uniq -c | sort -rn > {output}"
outputs = ["build/counts.txt"]
"#;

/// Runs `orch init`.
pub fn run(g: &Global) -> i32 {
    let dir = g.start_dir();
    let path = dir.join(ORCHFILE);
    if path.exists() {
        crate::say!(
            "error: `{}` already exists; orch init never overwrites it",
            path.display()
        );
        return EXIT_USAGE;
    }
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, STARTER)) {
        crate::say!("error: cannot write `{}`: {e}", path.display());
        return EXIT_FAILED;
    }
    let input = dir.join("input.txt");
    if !input.exists() {
        let _ = std::fs::write(
            &input,
            "the quick brown fox jumps over the lazy dog\nthe dog sleeps\n",
        );
    }
    outln!(
        "created {ORCHFILE}; run `orch build` to build it and `orch plan` to see what would run"
    );
    EXIT_OK
}
