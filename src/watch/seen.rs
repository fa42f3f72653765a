//! What the session has seen of its inputs' content, to tell a save that changes nothing
//! (an editor rewriting the same bytes, `touch`, a change undone within one burst) from
//! one that does, without planning the whole project.
//!
//! Only files the session saw change are remembered, with their content digest as of the
//! batch that last named them. Builds only start from batches, so as long as no event
//! arrived during a build, the last build read each remembered file with that content.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Files larger than this are not hashed by the session (the build's plan decides).
const MAX_HASHED: u64 = 64 << 20;

/// Remembered contents, by project-relative path.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// A file's digest, or None when it was absent.
    digests: HashMap<String, Option<[u8; 32]>>,
}

/// What a batch of changed paths amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Every path has the content (or absence) it had before.
    Same,
    /// Every path was known before, and at least one differs now.
    Changed,
    /// Some path was not known before, or cannot be compared (a directory, a large file).
    Unknown,
}

impl Seen {
    /// Compares the paths with what was known of them and remembers them as they are now.
    pub(super) fn update(&mut self, root: &Path, paths: &BTreeSet<String>) -> Verdict {
        let mut all_known = !paths.is_empty();
        let mut changed = false;
        for p in paths {
            let now = look(&root.join(p));
            match (self.digests.get(p), now) {
                (_, None) => {
                    all_known = false;
                    self.digests.remove(p);
                }
                (None, Some(now)) => {
                    all_known = false;
                    self.digests.insert(p.clone(), now);
                }
                (Some(before), Some(now)) => {
                    changed |= *before != now;
                    self.digests.insert(p.clone(), now);
                }
            }
        }
        match (all_known, changed) {
            (false, _) => Verdict::Unknown,
            (true, true) => Verdict::Changed,
            (true, false) => Verdict::Same,
        }
    }

    /// Forgets these paths (their changes were not built).
    pub(super) fn forget(&mut self, paths: &BTreeSet<String>) {
        for p in paths {
            self.digests.remove(p);
        }
    }

    /// Forgets everything.
    pub(super) fn clear(&mut self) {
        self.digests.clear();
    }
}

/// `Some(Some(digest))` for a file, `Some(None)` when nothing is there, `None` when it
/// cannot be compared.
fn look(path: &Path) -> Option<Option<[u8; 32]>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() <= MAX_HASHED => {
            crate::fs::hash_file(path).ok().map(|d| Some(d.0))
        }
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(None),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_changed_and_unknown() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let paths = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let mut seen = Seen::default();
        std::fs::write(root.join("a"), "1").unwrap();
        // First sight: unknown.
        assert_eq!(seen.update(root, &paths(&["a"])), Verdict::Unknown);
        // Rewritten with the same bytes.
        std::fs::write(root.join("a"), "1").unwrap();
        assert_eq!(seen.update(root, &paths(&["a"])), Verdict::Same);
        std::fs::write(root.join("a"), "2").unwrap();
        assert_eq!(seen.update(root, &paths(&["a"])), Verdict::Changed);
        // A new file among known ones.
        std::fs::write(root.join("b"), "1").unwrap();
        assert_eq!(seen.update(root, &paths(&["a", "b"])), Verdict::Unknown);
        // Removed, then absent again.
        std::fs::remove_file(root.join("b")).unwrap();
        assert_eq!(seen.update(root, &paths(&["b"])), Verdict::Changed);
        assert_eq!(seen.update(root, &paths(&["b"])), Verdict::Same);
        // Directories are not compared.
        std::fs::create_dir(root.join("d")).unwrap();
        assert_eq!(seen.update(root, &paths(&["d"])), Verdict::Unknown);
        assert_eq!(seen.update(root, &paths(&["d"])), Verdict::Unknown);
        seen.forget(&paths(&["a"]));
        assert_eq!(seen.update(root, &paths(&["a"])), Verdict::Unknown);
        seen.clear();
        assert_eq!(seen.update(root, &paths(&["a"])), Verdict::Unknown);
        assert_eq!(seen.update(root, &BTreeSet::new()), Verdict::Unknown);
    }
}
