//! `orch init`: write a small, working starter project and say what each file is for.
//!
//! It never overwrites a file: an existing Orchfile stops it, other existing files are
//! kept as they are, and `.gitignore` is only ever appended to.

use std::path::Path;

use crate::orchfile::ORCHFILE;
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

use super::{Global, headline};

/// The JSON Schema beside the Orchfile, which the `#:schema` line points editors at.
///
/// A file of the project rather than a URL: it works offline, matches the orch that
/// wrote it, and survives `orch clean` (which empties `.orch/`); after upgrading orch,
/// `orch schema > orchfile.schema.json` refreshes it.
const SCHEMA_FILE: &str = "orchfile.schema.json";

/// The starter Orchfile; its first line is taplo's schema directive (Even Better TOML
/// and other taplo-based editors complete and check keys with it).
const STARTER: &str = r#"#:schema ./orchfile.schema.json
# orch pipeline: `orch build` runs what is stale, `orch plan` says why.
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

const INPUT: &str = "the quick brown fox jumps over the lazy dog\nthe dog sleeps\n";

/// The line `.gitignore` gets: orch's state, logs and local cache.
const IGNORED: &str = ".orch/";

/// Runs `orch init`.
pub fn run(g: &Global) -> i32 {
    let dir = g.start_dir();
    let path = dir.join(ORCHFILE);
    if path.exists() {
        crate::say!(
            "{}",
            headline(
                None,
                &format!(
                    "`{}` already exists; orch init never overwrites it",
                    path.display()
                )
            )
        );
        return EXIT_USAGE;
    }
    if let Some(outer) = enclosing_orchfile(&dir) {
        crate::say!(
            "warning: `{}` already makes `{}` a project; this creates another project inside it, and orch run from here on uses the new one",
            outer.display(),
            outer.parent().unwrap_or(&dir).display()
        );
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return cannot_write(&dir, &e);
    }
    if let Err(e) = write_new(&path, STARTER) {
        return cannot_write(&path, &e);
    }
    outln!("created {ORCHFILE}: the pipeline, two phases (`words`, then `count`)");
    let schema = crate::orchfile::raw::json_schema();
    for (name, text, what) in [
        ("input.txt", INPUT, "the text the pipeline reads"),
        (
            SCHEMA_FILE,
            schema.as_str(),
            "the Orchfile's JSON Schema, for completion in editors (`orch schema` writes it anew)",
        ),
    ] {
        match write_new(&dir.join(name), text) {
            Ok(()) => outln!("created {name}: {what}"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                outln!("kept {name}: it exists already");
            }
            Err(e) => return cannot_write(&dir.join(name), &e),
        }
    }
    match ignore_state(&dir.join(".gitignore")) {
        Ok(Ignore::Created) => outln!("created .gitignore: ignores `{IGNORED}`, orch's state"),
        Ok(Ignore::Appended) => outln!("added `{IGNORED}` to .gitignore"),
        Ok(Ignore::Present) => {}
        Ok(Ignore::Symlink) => crate::say!(
            "warning: .gitignore is a symlink; orch did not change it: add `{IGNORED}` to it yourself"
        ),
        Err(e) => return cannot_write(&dir.join(".gitignore"), &e),
    }
    outln!("run `orch build` to build it and `orch plan` to see what would run");
    EXIT_OK
}

fn cannot_write(path: &Path, e: &std::io::Error) -> i32 {
    crate::say!(
        "{}",
        headline(None, &format!("cannot write `{}`: {e}", path.display()))
    );
    EXIT_FAILED
}

/// Creates `path` with `text`, failing with `AlreadyExists` rather than replacing a file.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// The Orchfile of a project `dir` would lie inside: the nearest in a parent directory.
fn enclosing_orchfile(dir: &Path) -> Option<std::path::PathBuf> {
    let dir = std::path::absolute(dir).ok()?;
    dir.ancestors()
        .skip(1)
        .map(|d| d.join(ORCHFILE))
        .find(|p| p.is_file())
}

/// What [`ignore_state`] did.
#[derive(Debug, PartialEq, Eq)]
enum Ignore {
    Created,
    Appended,
    Present,
    /// A symlink, perhaps to a file outside the project: left alone.
    Symlink,
}

/// Makes `.gitignore` ignore `.orch/`: creates it, or appends the line when no line
/// already ignores `.orch`.
fn ignore_state(path: &Path) -> std::io::Result<Ignore> {
    if path.is_symlink() {
        return Ok(Ignore::Symlink);
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_new(path, &format!("{IGNORED}\n"))?;
            return Ok(Ignore::Created);
        }
        Err(e) => return Err(e),
    };
    if ignores_state(&text) {
        return Ok(Ignore::Present);
    }
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(format!("{sep}{IGNORED}\n").as_bytes())?;
    Ok(Ignore::Appended)
}

/// Whether a `.gitignore` text has a line that ignores `.orch` at the root.
fn ignores_state(text: &str) -> bool {
    text.lines().map(str::trim).any(|l| {
        matches!(
            l,
            ".orch" | ".orch/" | "/.orch" | "/.orch/" | ".orch/*" | "/.orch/*"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_gets_the_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".gitignore");
        assert_eq!(ignore_state(&path).unwrap(), Ignore::Created);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ".orch/\n");
        assert_eq!(ignore_state(&path).unwrap(), Ignore::Present);
        std::fs::write(&path, "target").unwrap();
        assert_eq!(ignore_state(&path).unwrap(), Ignore::Appended);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "target\n.orch/\n");
        std::fs::write(&path, "/.orch\n").unwrap();
        assert_eq!(ignore_state(&path).unwrap(), Ignore::Present);
        assert!(!ignores_state(".orchestra/\n# .orch/\n"));
    }

    #[test]
    fn the_starter_starts_with_the_schema_directive() {
        assert_eq!(
            STARTER.lines().next(),
            Some(format!("#:schema ./{SCHEMA_FILE}").as_str())
        );
    }
}
