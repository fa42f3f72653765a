//! Discovered inputs: the dependency file a command writes (`depfile = PATH`), read
//! after it succeeded, turned into project files with their digests.
//!
//! Paths in a depfile are relative to the command's `cwd`, or absolute. One that lies
//! inside the project becomes project-relative; one that leaves it (`..` past the root,
//! an absolute path elsewhere, a symlink leading out) is not tracked: system headers are
//! the toolchain's, not the project's. Declared inputs and outputs, the depfile itself and
//! anything under `.orch/` are left out (the key covers the first; the rest are orch's or
//! the command's own). A listed file that does not exist is recorded as absent.
//!
//! A file the snapshot hashed whose stat is unchanged keeps that digest (no read); one
//! whose stat moved since the snapshot changed during the build, and one hashed here for
//! the first time whose mtime or ctime is later than the command's start was written
//! while it ran: either way the result is not recorded (`input_changed_during_run`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};
use std::sync::Arc;

use crate::fs::depfile::{self, MAX_DEPFILE_BYTES};
use crate::fs::{self, CachedDigest, PathDigest};
use crate::model::path::{Containment, normalize};
use crate::plan::Discovered;
use crate::snapshot::cached_to_row;
use crate::store::DigestRow;

/// What a job needs to read its depfile after a success.
#[derive(Clone, Debug)]
pub struct DepfilePlan {
    /// The depfile, project-relative.
    pub path: String,
    /// The command's working directory, project-relative ("" for the root).
    pub cwd: String,
    /// Paths never recorded as discovered: the key's inputs, declared outputs (shared by
    /// the shards of one instance).
    pub skip: Arc<BTreeSet<String>>,
    /// More such paths for this job alone (a shard's own input and outputs).
    pub own: Vec<String>,
    /// The stat each previously discovered file was hashed from.
    pub known: Arc<BTreeMap<String, CachedDigest>>,
}

/// What a depfile yielded.
#[derive(Clone, Debug, Default)]
pub struct DepfileRead {
    /// Discovered input → digest (None: listed but absent).
    pub discovered: Discovered,
    /// Digest-cache rows of files hashed here.
    pub rows: Vec<(String, Option<DigestRow>)>,
    /// Discovered files written while the command ran (or since the snapshot).
    pub changed: Vec<String>,
}

/// The help line of a missing depfile.
fn missing_help(path: &str) -> String {
    format!("the command must write `{path}` (for cc: `-MD -MF {path}`)")
}

/// Reads and resolves the depfile of a job that succeeded; Err is the failure message.
pub fn read(root: &Path, plan: &DepfilePlan, started_ns: i64) -> Result<DepfileRead, String> {
    let full = root.join(&plan.path);
    let meta = match std::fs::symlink_metadata(&full) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "the command succeeded but did not write its depfile `{}`; {}",
                plan.path,
                missing_help(&plan.path)
            ));
        }
        Err(e) => return Err(format!("cannot read the depfile `{}`: {e}", plan.path)),
    };
    if !meta.is_file() {
        return Err(format!(
            "the depfile `{}` is not a regular file; {}",
            plan.path,
            missing_help(&plan.path)
        ));
    }
    if meta.len() > MAX_DEPFILE_BYTES {
        return Err(format!(
            "the depfile `{}` is larger than {} MiB",
            plan.path,
            MAX_DEPFILE_BYTES / (1024 * 1024)
        ));
    }
    let bytes = fs::digest::read_regular(&full)
        .map_err(|e| format!("cannot read the depfile `{}`: {e}", plan.path))?;
    let listed = depfile::parse(&bytes)
        .map_err(|e| format!("cannot parse the depfile `{}`: {e}", plan.path))?;
    let root_str = root.to_string_lossy();
    let mut contain = Containment::new(root);
    let mut paths = BTreeSet::new();
    for p in &listed {
        if let Some(rel) = resolve(&root_str, &plan.cwd, p)
            && !rel.is_empty()
            && crate::plan::is_discoverable(&rel)
            && rel != plan.path
            && !plan.skip.contains(&rel)
            && !plan.own.contains(&rel)
            && contain.check(&rel, true).is_ok()
        {
            paths.insert(rel);
        }
    }
    let mut out = DepfileRead::default();
    for rel in paths {
        let full = root.join(&rel);
        let stat = match fs::stat_path(&full) {
            Ok(Some(s)) if s.is_dir => continue, // a directory is not a file read
            Ok(Some(s)) => s,
            Ok(None) => {
                out.discovered.insert(rel, None);
                continue;
            }
            Err(e) => return Err(format!("cannot read `{rel}`, listed in the depfile: {e}")),
        };
        if let Some(known) = plan.known.get(&rel) {
            if known.stat != stat {
                out.changed.push(rel.clone());
            } else if known.is_valid_for(&stat) {
                out.discovered.insert(rel, Some(known.digest));
                continue;
            }
        } else if stat.mtime_ns >= started_ns || stat.ctime_ns >= started_ns {
            out.changed.push(rel.clone());
        }
        let cache = |_: &str| None;
        match fs::digest_paths(root, std::slice::from_ref(&rel), cache).pop() {
            Some(Ok(PathDigest::Present {
                digest, refreshed, ..
            })) => {
                if let Some(c) = refreshed {
                    out.rows.push((rel.clone(), Some(cached_to_row(&c))));
                }
                out.discovered.insert(rel, Some(digest));
            }
            Some(Ok(PathDigest::Missing)) => {
                out.discovered.insert(rel, None);
            }
            Some(Err(e)) => {
                return Err(format!("cannot read `{rel}`, listed in the depfile: {e}"));
            }
            None => {}
        }
    }
    Ok(out)
}

/// `p` (as the depfile wrote it) as a project-relative path, or None when it leaves the
/// project. Lexical: `..` is applied to the path as written; symlinks on the way are
/// checked by the caller.
fn resolve(root_str: &str, cwd: &str, p: &str) -> Option<String> {
    let rel = if p.starts_with('/') {
        let rest = p.strip_prefix(root_str)?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        rest.trim_start_matches('/').to_owned()
    } else if cwd.is_empty() {
        p.to_owned()
    } else {
        format!("{cwd}/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(&rel).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(normalize(&parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(path: &str, cwd: &str) -> DepfilePlan {
        DepfilePlan {
            path: path.to_owned(),
            cwd: cwd.to_owned(),
            skip: Arc::new(BTreeSet::from(["src/a.c".to_owned()])),
            own: vec!["build/a.o".to_owned()],
            known: Arc::new(BTreeMap::new()),
        }
    }

    #[test]
    fn paths_are_resolved_inside_the_project_only() {
        assert_eq!(resolve("/p", "", "inc/a.h").as_deref(), Some("inc/a.h"));
        assert_eq!(
            resolve("/p", "sub", "../inc/a.h").as_deref(),
            Some("inc/a.h")
        );
        assert_eq!(resolve("/p", "", "/p/inc/a.h").as_deref(), Some("inc/a.h"));
        assert_eq!(resolve("/p", "", "./x//y.h").as_deref(), Some("x/y.h"));
        assert_eq!(resolve("/p", "", "/usr/include/stdio.h"), None);
        assert_eq!(resolve("/p", "", "/pp/a.h"), None);
        assert_eq!(resolve("/p", "", "../a.h"), None);
        assert_eq!(resolve("/p", "sub", "../../a.h"), None);
    }

    #[test]
    fn a_depfile_is_read_into_digests() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("inc")).unwrap();
        std::fs::create_dir_all(root.join("build")).unwrap();
        std::fs::write(root.join("inc/a.h"), "a").unwrap();
        std::fs::write(root.join("inc/my h.h"), "h").unwrap();
        std::os::unix::fs::symlink("/usr", root.join("sys")).unwrap();
        let started = fs::now_ns() + 60 * 1_000_000_000;
        let text = format!(
            "build/a.o: src/a.c inc/a.h inc/my\\ h.h \\\n {}/inc/a.h /usr/include/stdio.h \\\n ../out.h sys/x.h inc/absent.h build/a.o .orch/x\n",
            root.display()
        );
        std::fs::write(root.join("build/a.d"), text).unwrap();
        let got = read(&root, &plan("build/a.d", ""), started).unwrap();
        assert_eq!(
            got.discovered,
            BTreeMap::from([
                ("inc/a.h".to_owned(), Some(fs::hash_bytes(b"a"))),
                ("inc/absent.h".to_owned(), None),
                ("inc/my h.h".to_owned(), Some(fs::hash_bytes(b"h"))),
            ])
        );
        assert!(got.changed.is_empty());
        assert_eq!(got.rows.len(), 2);
    }

    #[test]
    fn a_missing_or_broken_depfile_is_a_failure_that_says_what_to_do() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let e = read(&root, &plan("build/a.d", ""), 0).unwrap_err();
        assert!(e.contains("did not write its depfile `build/a.d`"), "{e}");
        assert!(e.contains("-MD -MF build/a.d"), "{e}");
        std::fs::write(root.join("a.d"), "a.o: x.h\nno colon here\n").unwrap();
        let e = read(&root, &plan("a.d", ""), 0).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn a_file_written_while_the_command_ran_is_reported() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        std::fs::write(root.join("a.h"), "a").unwrap();
        std::fs::write(root.join("a.d"), "a.o: a.h\n").unwrap();
        let got = read(&root, &plan("a.d", ""), 0).unwrap();
        assert_eq!(got.changed, ["a.h"]);
    }
}
