//! `orch clean [TARGETS]`: removes the declared outputs of the selected instances
//! (default: all), under the build lock. Results stay in the state, so the next build
//! finds the outputs missing (`output_missing`) and rebuilds them. `--cache` also
//! empties the local stores, the cache (`.orch/cache/` or `[cache] dir`) and `.orch/shards/`.
//! The cache is emptied of orch's own entries only (`ac/`, `cas/`, `tmp/`), and only when
//! it is orch's store; a directory that is not is refused before anything is removed.

use std::collections::BTreeSet;
use std::path::Path;

use crate::cache::local::Local;
use crate::cli::CleanArgs;
use crate::exec::shards::{matches_template, shard_dir};
use crate::fs::Digest;
use crate::model::Instance;
use crate::model::path::Containment;
use crate::plan::Success;
use crate::store::{BuildLock, InstanceRecord, Layout};
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

use super::runs::{bytes_text, open_store};
use super::{Global, load, report_diagnostic, report_error};

/// Runs `orch clean`.
pub fn run(g: &Global, a: CleanArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let selected = match super::resolve(g, &l, &a.targets) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let layout = Layout::new(&l.project.root);
    let cache_dir = crate::cache::local_dir(&l.project, &layout);
    if a.cache
        && let Err(e) = Local::new(&cache_dir).check_owned()
    {
        crate::say!("error: {e}");
        return EXIT_USAGE;
    }
    let _lock = match take_lock(&layout) {
        Ok(lock) => lock,
        Err(code) => return code,
    };
    // Outputs go away: no record may vouch for them (their stats would catch it too).
    crate::fresh::forget(&layout.dir);
    let store = match open_store(&layout) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let results = match store.load_results() {
        Ok(r) => r,
        Err(e) => return report_diagnostic(&e, EXIT_FAILED),
    };
    drop(store);

    let root = &l.project.root;
    let mut contain = Containment::new(root);
    let mut removed = 0usize;
    let mut stores_removed = 0usize;
    let mut bytes = 0u64;
    let mut errors = 0usize;
    for &i in &selected {
        let inst = &l.project.instances[i];
        for (path, dir) in declared_outputs(inst, results.get(&inst.name)) {
            // A directory on the way replaced by a symlink leading out of the project
            // must not make clean delete what it points to.
            if let Err(why) = contain.check(&path, false) {
                crate::say!("warning: not removing `{path}`: {}", why.describe());
                continue;
            }
            match remove(&root.join(&path), dir) {
                Ok(Some(size)) => {
                    outln!("removed {path}{}", if dir { "/" } else { "" });
                    removed += 1;
                    bytes += size;
                }
                Ok(None) => {}
                Err(e) => {
                    crate::say!("error: cannot remove `{path}`: {e}");
                    errors += 1;
                }
            }
        }
    }
    if a.cache {
        match Local::new(&cache_dir).clear() {
            Ok(Some(size)) => {
                let rel = cache_dir.strip_prefix(root).unwrap_or(&cache_dir);
                outln!("emptied {}/", rel.display());
                stores_removed += 1;
                bytes += size;
            }
            Ok(None) => {}
            Err(e) => {
                crate::say!("error: cannot empty the cache: {e}");
                errors += 1;
            }
        }
        let mut stores = Vec::new();
        if a.targets.is_empty() {
            stores.push(layout.dir.join("shards"));
        } else {
            stores.extend(
                selected
                    .iter()
                    .map(|&i| shard_dir(&layout.dir, &l.project.instances[i].name)),
            );
        }
        for dir in stores {
            match remove(&dir, true) {
                Ok(Some(size)) => {
                    let rel = dir.strip_prefix(root).unwrap_or(&dir);
                    outln!("removed {}/", rel.display());
                    stores_removed += 1;
                    bytes += size;
                }
                Ok(None) => {}
                Err(e) => {
                    crate::say!("error: cannot remove `{}`: {e}", dir.display());
                    errors += 1;
                }
            }
        }
    }
    if removed == 0 && stores_removed == 0 {
        outln!(
            "orch: nothing to remove (the outputs of {} instance{} are absent)",
            selected.len(),
            if selected.len() == 1 { "" } else { "s" }
        );
    } else {
        let stores = if stores_removed > 0 {
            " and the local stores"
        } else {
            ""
        };
        outln!(
            "orch: removed {removed} output{}{stores} ({})",
            if removed == 1 { "" } else { "s" },
            bytes_text(bytes)
        );
    }
    if errors > 0 { EXIT_FAILED } else { EXIT_OK }
}

/// Takes the build lock, saying so when another build holds it.
pub(super) fn take_lock(layout: &Layout) -> Result<BuildLock, i32> {
    if let Err(e) = layout.ensure() {
        return Err(report_error("cannot create `.orch/`", &e));
    }
    BuildLock::acquire(&layout.lock(), || {
        let holder = BuildLock::holder_pid(&layout.lock())
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        crate::say!("orch: waiting for another build to finish{holder}; it holds `.orch/lock`");
    })
    .map_err(|e| report_diagnostic(&e, EXIT_FAILED))
}

/// The outputs `inst` declares (path, is a directory) with their sidecars, plus, for `merge = "none"`
/// shards, the per-shard outputs its last success recorded that match a declared
/// template.
fn declared_outputs(inst: &Instance, record: Option<&InstanceRecord>) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for o in &inst.outputs {
        out.push((o.path.clone(), o.dir));
        // The sidecar goes with its artifact: left alone, it would describe nothing.
        if o.meta && !o.dir {
            out.push((crate::model::meta::sidecar_path(&o.path), false));
        }
    }
    if inst.shard_outputs.is_empty() {
        return out;
    }
    let seen: BTreeSet<String> = out.iter().map(|(p, _)| p.clone()).collect();
    let recorded = record
        .and_then(|r| r.success.as_ref())
        .and_then(|s| Success::decode(Digest(s.action_key), &s.manifest));
    if let Some(success) = recorded {
        for path in success.outputs.keys() {
            if !seen.contains(path)
                && inst
                    .shard_outputs
                    .iter()
                    .any(|t| matches_template(&t.path, path))
            {
                out.push((path.clone(), false));
            }
        }
    }
    out
}

/// Removes what is at `path`: a file or symlink, or with `dir` a directory tree.
/// Returns the bytes freed, or None when nothing was there. A declared file whose path
/// holds a directory is left alone.
fn remove(path: &Path, dir: bool) -> std::io::Result<Option<u64>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        if !dir {
            return Err(std::io::Error::other(
                "it is a directory, but the output is declared as a file",
            ));
        }
        let size = tree_size(path);
        std::fs::remove_dir_all(path)?;
        Ok(Some(size))
    } else {
        std::fs::remove_file(path)?;
        Ok(Some(meta.len()))
    }
}

/// Bytes of the files under `dir` (symlinks not followed).
pub(super) fn tree_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
