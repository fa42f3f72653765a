//! The validated project remembered between builds, so a no-op build of a large project
//! does not parse and validate its Orchfile again.
//!
//! `.orch/project.cache` holds the project and its graph (postcard), with the name, path
//! and digest of every configuration file and the `include` patterns. It is used only
//! when the same orch version reads it, every file still has its digest, the patterns
//! still expand to the same fragments, and no path has come to lead out of the root
//! through a symlink since; anything else means a full load. It is a cache: deleting it
//! is always safe.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Project;
use super::path::Containment;
use crate::fs::{self, Digest};
use crate::graph::Graph;
use crate::orchfile::Sources;
use crate::orchfile::load::include_files;

/// Bumped whenever the cached types change shape or validation refuses more: a project
/// validated by rules since tightened must be validated again.
const FORMAT: u32 = 7;

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    version: String,
    /// Every configuration file: display name, absolute path, digest of its text.
    files: Vec<(String, PathBuf, Digest)>,
    project: Project,
    graph: Graph,
}

/// Where the cache lives for a project whose state directory is `orch_dir`.
pub fn path(orch_dir: &Path) -> PathBuf {
    orch_dir.join("project.cache")
}

/// The cached project for the Orchfile at `orchfile`, if it is still valid.
pub fn read(orch_dir: &Path, orchfile: &Path) -> Option<(Project, Graph)> {
    let bytes = std::fs::read(path(orch_dir)).ok()?;
    let cached: CacheFile = postcard::from_bytes(&bytes).ok()?;
    if cached.format != FORMAT || cached.version != env!("CARGO_PKG_VERSION") {
        return None;
    }
    let texts = configs_unchanged(
        &cached.project.root,
        orchfile,
        &cached.project.includes,
        cached
            .files
            .iter()
            .map(|(_, path, digest)| (path.as_path(), *digest)),
    )?;
    let mut sources = Sources::default();
    for ((name, path, _), text) in cached.files.iter().zip(texts) {
        sources.add(name.clone(), path.clone(), text);
    }
    if !still_contained(&cached.project) {
        return None;
    }
    let mut project = cached.project;
    project.sources = sources;
    Some((project, cached.graph))
}

/// The text of every configuration file, the Orchfile first, when `recorded` (paths and
/// digests, the Orchfile first) still describes them: the Orchfile is `orchfile`, the
/// `include` patterns match exactly the recorded fragments, in order, and every file still
/// has its digest. Only the Orchfile and what the patterns match now are read, never a
/// path taken from the record alone.
pub fn configs_unchanged<'a>(
    root: &Path,
    orchfile: &Path,
    includes: &[String],
    recorded: impl Iterator<Item = (&'a Path, Digest)>,
) -> Option<Vec<String>> {
    let recorded: Vec<(&Path, Digest)> = recorded.collect();
    let ((main, _), fragments) = recorded.split_first()?;
    if *main != orchfile {
        return None;
    }
    let now = include_files(root, includes)?;
    if now.len() != fragments.len() || now.iter().zip(fragments).any(|(a, (b, _))| a != b) {
        return None;
    }
    std::iter::once(orchfile)
        .chain(now.iter().map(PathBuf::as_path))
        .zip(&recorded)
        .map(|(path, (_, digest))| {
            let text = std::fs::read_to_string(path).ok()?;
            (fs::hash_bytes(text.as_bytes()) == *digest).then_some(text)
        })
        .collect()
}

/// Remembers a validated project (atomically; a failure only costs the next load).
pub fn write(orch_dir: &Path, project: &Project, graph: &Graph) -> std::io::Result<()> {
    // Values a phase sets in its `env` may be credentials: they stay in the Orchfile and
    // `.orch/` never holds them, so such a project is parsed on every build instead.
    let literal_env = project
        .instances
        .iter()
        .any(|i| i.env.values().any(|v| matches!(v, super::EnvValue::Set(_))));
    if literal_env {
        return match std::fs::remove_file(path(orch_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let files = project
        .sources
        .files()
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                f.path.clone(),
                fs::hash_bytes(f.text.as_bytes()),
            )
        })
        .collect();
    // Serialize borrows: `CacheFile` owns its parts, so build it from references.
    #[derive(Serialize)]
    struct Ref<'a> {
        format: u32,
        version: &'a str,
        files: Vec<(String, PathBuf, Digest)>,
        project: &'a Project,
        graph: &'a Graph,
    }
    let bytes = postcard::to_stdvec(&Ref {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION"),
        files,
        project,
        graph,
    })
    .map_err(std::io::Error::other)?;
    let mut tmp = tempfile::NamedTempFile::new_in(orch_dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(path(orch_dir)).map_err(|e| e.error)?;
    Ok(())
}

/// How many plain inputs one directory must hold before it is listed rather than each
/// input looked at alone.
const LISTED: usize = 16;

/// Whether every path the project declares still stays inside the root: a directory
/// may have been replaced by a symlink since validation checked it.
fn still_contained(project: &Project) -> bool {
    let mut c = Containment::new(&project.root);
    // Plain inputs are checked down to the file, one `lstat` each: a directory holding
    // many of them is listed once instead (the listing tells symlinks apart too).
    let mut per_dir: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for p in project.instances.iter().flat_map(|i| &i.inputs) {
        if super::path::is_plain(p) {
            *per_dir
                .entry(p.rsplit_once('/').map_or("", |(d, _)| d))
                .or_default() += 1;
        }
    }
    for (dir, _) in per_dir.into_iter().filter(|(_, n)| *n >= LISTED) {
        c.learn_dir(dir);
    }
    project.instances.iter().all(|i| {
        i.outputs.iter().all(|o| {
            c.check(&o.path, o.dir).is_ok()
                && o.schema.as_ref().is_none_or(|s| c.check(s, true).is_ok())
        }) && i.inputs.iter().all(|p| {
            let l = literal(p);
            l.is_empty() || c.check(l, true).is_ok()
        }) && (i.cwd.is_empty() || c.check(&i.cwd, true).is_ok())
            && i.shard_outputs.iter().all(|t| {
                let l = literal(&t.path);
                l.is_empty() || c.check(l, true).is_ok()
            })
    })
}

/// The components of pattern `p` before the first that holds a glob character (all of a
/// plain path), without the `/` that ends them.
fn literal(p: &str) -> &str {
    match p.find(['*', '?', '[', '{', '\\']) {
        None => p,
        Some(at) => p[..at].rfind('/').map_or("", |slash| &p[..slash]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_literal_part_of_a_pattern() {
        for (pattern, lit) in [
            ("src/a.c", "src/a.c"),
            ("src/*.c", "src"),
            ("*.c", ""),
            ("a/b/x*/c", "a/b"),
            ("a//b*", "a/"),
            ("a/{b,c}/d", "a"),
            ("a/b\\*", "a"),
            ("", ""),
        ] {
            assert_eq!(literal(pattern), lit, "{pattern}");
        }
    }
}
