//! `orch gc --keep N`: keeps the newest N runs and deletes the rest (their
//! `.orch/runs/RUN/`, `.orch/logs/RUN/` and rows in the state), plus the
//! `.orch/shards/INSTANCE/` directories and shard results of instances the project no
//! longer declares. Runs under the build lock. `--max-size` trims the local store (only
//! orch's own files in a store that is orch's; another directory is refused up front).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::cache::local::Local;
use crate::cli::GcArgs;
use crate::store::layout::log_file_stem;
use crate::store::{Layout, Store};
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

use super::clean::{take_lock, tree_size};
use super::runs::bytes_text;
use super::{Global, load, report_diagnostic};

/// Runs `orch gc`.
pub fn run(g: &Global, a: GcArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let layout = Layout::new(&l.project.root);
    let cache = Local::new(&crate::cache::local_dir(&l.project, &layout));
    if a.max_size.is_some()
        && let Err(e) = cache.check_owned()
    {
        crate::say!("error: {e}");
        return EXIT_USAGE;
    }
    if !layout.dir.is_dir() {
        outln!("orch: nothing to collect (no `.orch/` yet)");
        return EXIT_OK;
    }
    let _lock = match take_lock(&layout) {
        Ok(lock) => lock,
        Err(code) => return code,
    };
    let (mut store, warning) = match Store::open(&layout) {
        Ok(s) => s,
        Err(e) => return report_diagnostic(&e, EXIT_FAILED),
    };
    if let Some(w) = warning {
        crate::say!("warning: {w}");
    }
    let recorded = match store.runs(usize::MAX) {
        Ok(r) => r,
        Err(e) => return report_diagnostic(&e, EXIT_FAILED),
    };

    // Every run, newest first: the recorded ones by start time, then directories the
    // state does not list (left by a state database that was set aside, so older than
    // every recorded run), newest first by modification time.
    let known: BTreeSet<&str> = recorded.iter().map(|r| r.run_id.as_str()).collect();
    let mut orphans: Vec<(u128, String)> = ["runs", "logs"]
        .iter()
        .flat_map(|d| dir_names(&layout.dir.join(d)))
        .filter(|name| !known.contains(name.as_str()))
        .collect::<BTreeSet<String>>()
        .into_iter()
        .map(|name| {
            (
                mtime(&layout.run_dir(&name)).max(mtime(&layout.log_dir(&name))),
                name,
            )
        })
        .collect();
    orphans.sort_by(|a, b| b.cmp(a));
    let order: Vec<(&str, bool)> = recorded
        .iter()
        .map(|r| (r.run_id.as_str(), true))
        .chain(orphans.iter().map(|(_, n)| (n.as_str(), false)))
        .collect();
    let doomed = order.get(a.keep..).unwrap_or_default();

    let mut freed = 0u64;
    let mut errors = 0usize;
    // A run id names a directory under `.orch/`: one that is not a plain name (a
    // tampered row) is never joined to a path, whatever the state says.
    for (id, _) in doomed
        .iter()
        .filter(|(id, _)| super::build::check_run_id(id).is_ok())
    {
        for dir in [layout.run_dir(id), layout.log_dir(id)] {
            freed += remove_tree(&dir, &mut errors);
        }
    }
    let rows: Vec<String> = doomed
        .iter()
        .filter(|(_, in_state)| *in_state)
        .map(|(id, _)| (*id).to_owned())
        .collect();
    if let Err(e) = store.delete_runs(&rows) {
        return report_diagnostic(&e, EXIT_FAILED);
    }

    // Shard directories are named after the instance, made file-name safe.
    let names: BTreeSet<String> = l.project.instances.iter().map(|i| i.name.clone()).collect();
    let stems: BTreeSet<String> = names.iter().map(|n| log_file_stem(n)).collect();
    let shards_dir = layout.dir.join("shards");
    let mut shard_dirs = 0usize;
    let mut shard_bytes = 0u64;
    for name in dir_names(&shards_dir) {
        if !stems.contains(&name) {
            shard_bytes += remove_tree(&shards_dir.join(&name), &mut errors);
            shard_dirs += 1;
        }
    }
    let shard_rows = match store.forget_shard_results_except(&names) {
        Ok(n) => n,
        Err(e) => return report_diagnostic(&e, EXIT_FAILED),
    };

    let kept = order.len() - doomed.len();
    if doomed.is_empty() && shard_dirs == 0 && shard_rows == 0 {
        outln!(
            "orch: nothing to collect ({kept} run{} kept)",
            if kept == 1 { "" } else { "s" }
        );
    } else {
        if !doomed.is_empty() {
            outln!(
                "orch: removed {} run{} ({} of events and logs), kept {kept}",
                doomed.len(),
                if doomed.len() == 1 { "" } else { "s" },
                bytes_text(freed)
            );
        }
        if shard_dirs > 0 || shard_rows > 0 {
            outln!(
                "orch: removed the shard files of {shard_dirs} instance{} the project no longer declares ({})",
                if shard_dirs == 1 { "" } else { "s" },
                bytes_text(shard_bytes)
            );
        }
    }
    if let Some(max) = a.max_size {
        match cache.trim(max) {
            Ok((0, _)) => outln!("orch: the cache is within {}", bytes_text(max)),
            Ok((n, freed)) => outln!(
                "orch: trimmed the cache to {}: removed {n} least recently used files ({})",
                bytes_text(max),
                bytes_text(freed)
            ),
            Err(e) => {
                crate::say!("error: cannot trim the cache: {e}");
                errors += 1;
            }
        }
    }
    if errors > 0 { EXIT_FAILED } else { EXIT_OK }
}

/// Names of the directories in `dir` (none when it does not exist).
fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Modification time in ns (0 when unknown).
fn mtime(path: &Path) -> u128 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// Removes the tree at `dir` if it exists; returns the bytes freed.
fn remove_tree(dir: &Path, errors: &mut usize) -> u64 {
    if !dir.exists() {
        return 0;
    }
    let size = tree_size(dir);
    match std::fs::remove_dir_all(dir) {
        Ok(()) => size,
        Err(e) => {
            crate::say!("error: cannot remove `{}`: {e}", dir.display());
            *errors += 1;
            0
        }
    }
}
