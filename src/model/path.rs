//! Project-relative paths that cannot leave the project root.

use std::path::{Component, Path};

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
    if rel.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    let rel_path = Path::new(rel);
    for c in rel_path.components() {
        match c {
            Component::ParentDir => return Err(PathProblem::ParentDir),
            Component::RootDir | Component::Prefix(_) => return Err(PathProblem::Absolute),
            _ => {}
        }
    }
    if rel.is_empty() {
        return Err(PathProblem::Empty);
    }
    // Walk the existing prefix; a symlink anywhere on it must resolve inside the root.
    let mut cur = root.to_path_buf();
    let mut shown = String::new();
    for c in rel_path.components() {
        cur.push(c);
        if !shown.is_empty() {
            shown.push('/');
        }
        shown.push_str(&c.as_os_str().to_string_lossy());
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => match cur.canonicalize() {
                Ok(target) if target.starts_with(root) => {}
                Ok(_) => return Err(PathProblem::ThroughSymlink(shown)),
                // A dangling link: where it leads cannot be known, so refuse it.
                Err(_) => return Err(PathProblem::ThroughSymlink(shown)),
            },
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
