//! Project-relative paths that cannot leave the project root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathProblem {
    /// Empty string.
    Empty,
    /// Starts at `/`.
    Absolute,
    /// Has a `..` component.
    ParentDir,
    /// An existing part of it is a symlink that points outside the root.
    ThroughSymlink(String),
}

impl PathProblem {
    /// A short label for the diagnostic.
    pub fn describe(&self) -> String {
        match self {
            PathProblem::Empty => "the path is empty".to_owned(),
            PathProblem::Absolute => "absolute paths leave the project root".to_owned(),
            PathProblem::ParentDir => "`..` leaves the project root".to_owned(),
            PathProblem::ThroughSymlink(p) => {
                format!("`{p}` is a symlink that leads outside the project root")
            }
        }
    }
}

/// `path` (project-relative) as written from inside `cwd` (project-relative; "" is the
/// root), so placeholders work in commands that run in a subdirectory.
pub fn relative_to(cwd: &str, path: &str) -> String {
    if cwd.is_empty() {
        return path.to_owned();
    }
    let c: Vec<&str> = cwd.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    let common = c.iter().zip(&p).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; c.len() - common];
    parts.extend(&p[common..]);
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

/// Whether an input pattern is a plain path, with no glob syntax.
pub fn is_plain(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '[', '{', '\\'])
}

/// Normalises a project-relative path: strips `./` and duplicate or trailing slashes.
pub fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Checks that `rel` (already normalised) stays inside `root` (canonical), lexically and
/// through any symlink among the parts of it that exist.
pub fn check_inside(root: &Path, rel: &str) -> Result<(), PathProblem> {
    Containment::new(root).check(rel, true)
}

/// What is known about one existing-or-not path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Prefix {
    /// A directory or file inside the root (or a symlink resolving inside it).
    Inside,
    /// Does not exist: nothing below it can be a symlink.
    Absent,
    /// A symlink leading outside the root (or dangling).
    Escapes,
}

/// Checks many paths against one root, remembering each prefix it has looked at, so
/// 10,000 outputs in one directory cost one `lstat` of that directory, not 10,000.
#[derive(Debug)]
pub struct Containment {
    root: PathBuf,
    seen: HashMap<String, Prefix>,
}

impl Containment {
    /// A checker for paths under `root` (canonical).
    pub fn new(root: &Path) -> Containment {
        Containment {
            root: root.to_path_buf(),
            seen: HashMap::new(),
        }
    }

    /// Checks `rel`. With `whole` false the last component is not looked at, only the
    /// directories on the way, none of which may lead out of the root. Anything orch
    /// reads as named (plain inputs, schemas, shard sources) is checked whole.
    pub fn check(&mut self, rel: &str, whole: bool) -> Result<(), PathProblem> {
        if rel.starts_with('/') {
            return Err(PathProblem::Absolute);
        }
        if rel.split('/').any(|c| c == "..") {
            return Err(PathProblem::ParentDir);
        }
        if rel.is_empty() {
            return Err(PathProblem::Empty);
        }
        // Every prefix is looked up as a slice of the path: a path written otherwise than
        // normalised is normalised first, so `a//b` and `a/./b` share `a/b`'s answers.
        let normal;
        let rel = if rel.split('/').any(|c| c.is_empty() || c == ".") {
            normal = normalize(rel);
            normal.as_str()
        } else {
            rel
        };
        if rel.is_empty() {
            return Ok(());
        }
        let n = rel.split('/').count();
        let upto = if whole { n } else { n - 1 };
        let mut end = 0;
        for (k, part) in rel.split('/').take(upto).enumerate() {
            end += part.len() + usize::from(k > 0);
            let prefix = &rel[..end];
            let state = match self.seen.get(prefix) {
                Some(s) => s.clone(),
                None => {
                    let s = self.look(prefix);
                    self.seen.insert(prefix.to_owned(), s.clone());
                    s
                }
            };
            match state {
                Prefix::Inside => {}
                Prefix::Absent => return Ok(()),
                Prefix::Escapes => return Err(PathProblem::ThroughSymlink(prefix.to_owned())),
            }
        }
        Ok(())
    }

    /// Learns what is in directory `dir` (relative, normalised) from one listing, so
    /// checking many files in it costs no `lstat` each: an entry that is not a symlink
    /// passes wherever its directory does, which [`Containment::check`] still checks.
    /// Symlinks, and whatever the listing misses, are left to be looked at one by one.
    pub fn learn_dir(&mut self, dir: &str) {
        let Ok(entries) = std::fs::read_dir(self.root.join(dir)) else {
            return;
        };
        for e in entries.flatten() {
            // The listing's type is the entry's own (as `lstat` sees it), not its target's.
            let (Ok(kind), Some(name)) = (e.file_type(), e.file_name().to_str().map(str::to_owned))
            else {
                continue;
            };
            if kind.is_symlink() {
                continue;
            }
            let key = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            self.seen.entry(key).or_insert(Prefix::Inside);
        }
    }

    fn look(&self, prefix: &str) -> Prefix {
        let path = self.root.join(prefix);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => match path.canonicalize() {
                Ok(target) if target.starts_with(&self.root) => Prefix::Inside,
                // A dangling link: where it leads cannot be known, so refuse it.
                _ => Prefix::Escapes,
            },
            Ok(_) => Prefix::Inside,
            Err(_) => Prefix::Absent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative_to("", "a/b"), "a/b");
        assert_eq!(relative_to("sub", "raw/x"), "../raw/x");
        assert_eq!(relative_to("sub", "sub/x"), "x");
        assert_eq!(relative_to("a/b", "a/c/d"), "../c/d");
        assert_eq!(relative_to("a", "a"), ".");
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize("./a//b/"), "a/b");
        assert_eq!(normalize("a/./b"), "a/b");
    }

    #[test]
    fn refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(check_inside(&root, "a/b"), Ok(()));
        assert_eq!(check_inside(&root, "../x"), Err(PathProblem::ParentDir));
        assert_eq!(
            check_inside(&root, "a/../../x"),
            Err(PathProblem::ParentDir)
        );
        assert_eq!(
            check_inside(&root, "/etc/passwd"),
            Err(PathProblem::Absolute)
        );
        std::os::unix::fs::symlink("/tmp", root.join("out")).unwrap();
        assert!(matches!(
            check_inside(&root, "out/x"),
            Err(PathProblem::ThroughSymlink(_))
        ));
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("inside")).unwrap();
        assert_eq!(check_inside(&root, "inside/x"), Ok(()));
    }

    #[test]
    fn a_listed_directory_still_catches_its_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(root.join("src/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("src/out.txt")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("src/in.txt")).unwrap();
        let mut c = Containment::new(&root);
        c.learn_dir("src");
        assert_eq!(c.check("src/a.txt", true), Ok(()));
        assert_eq!(c.check("src/in.txt", true), Ok(()));
        assert_eq!(c.check("src/missing.txt", true), Ok(()));
        assert!(matches!(
            c.check("src/out.txt", true),
            Err(PathProblem::ThroughSymlink(_))
        ));
        // A listing taken through a directory that leads outside vouches for nothing.
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        let mut c = Containment::new(&root);
        c.learn_dir("etc");
        assert!(matches!(
            c.check("etc/hostname", true),
            Err(PathProblem::ThroughSymlink(_))
        ));
    }

    #[test]
    fn paths_written_otherwise_get_the_answers_of_their_normal_form() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("src")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("src/out.txt")).unwrap();
        let mut c = Containment::new(&root);
        for rel in ["src/out.txt", "./src//out.txt", "src/./out.txt/"] {
            assert_eq!(
                c.check(rel, true),
                Err(PathProblem::ThroughSymlink("src/out.txt".into())),
                "{rel}"
            );
            assert_eq!(c.check(rel, false), Ok(()), "{rel}");
        }
        assert_eq!(c.check("src/../x", true), Err(PathProblem::ParentDir));
        assert_eq!(c.check("/src", true), Err(PathProblem::Absolute));
        assert_eq!(c.check("", true), Err(PathProblem::Empty));
        assert_eq!(c.check("./", true), Ok(()));
        assert_eq!(c.check("src...", true), Ok(()));
    }
}
