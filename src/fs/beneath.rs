//! Writes, removals and renames of project files whose every parent is resolved beneath
//! the project root (as `openat2` with `RESOLVE_BENEATH` does), so a directory that a
//! command replaced with a symlink to elsewhere can never make orch touch a file outside
//! the project.
//!
//! The path's last component is never followed either: removing an output that is a
//! symlink removes the link, and writing one replaces the link rather than its target.

use std::io;
use std::path::{Component, Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// Why an operation beneath the root was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    /// The path, or a directory on the way to it, leads outside the project.
    #[error(
        "`{path}` leads outside the project (a directory on its way is a symlink to \
         elsewhere, or the path is absolute or has `..`); orch does not write or delete there"
    )]
    Escapes {
        /// The path as the project names it.
        path: String,
    },
    /// Any other failure of the file system.
    #[error("`{path}`: {source}")]
    Io {
        /// The path as the project names it.
        path: String,
        /// What the file system said.
        source: io::Error,
    },
}

impl BeneathError {
    fn of(path: &Path, e: io::Error) -> BeneathError {
        let path = path.display().to_string();
        if is_escape(&e) {
            BeneathError::Escapes { path }
        } else {
            BeneathError::Io { path, source: e }
        }
    }

    /// Whether the failure is "not found" (for removals that tolerate it).
    pub fn is_not_found(&self) -> bool {
        matches!(self, BeneathError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

impl From<BeneathError> for io::Error {
    fn from(e: BeneathError) -> io::Error {
        match e {
            BeneathError::Io { ref source, .. } => io::Error::new(source.kind(), e.to_string()),
            BeneathError::Escapes { .. } => {
                io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())
            }
        }
    }
}

/// How cap-std reports a resolution that would leave the directory: `EXDEV` from
/// `openat2(RESOLVE_BENEATH)`, or its own error where it resolves by hand.
fn is_escape(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EXDEV) || e.to_string().contains("outside of the filesystem")
}

/// The project root, opened once, beneath which every path is resolved.
pub struct Beneath {
    root: PathBuf,
    dir: Dir,
}

impl std::fmt::Debug for Beneath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beneath").field("root", &self.root).finish()
    }
}

impl Beneath {
    /// Opens `root` (which the user named, so it is followed as given).
    pub fn open(root: &Path) -> io::Result<Beneath> {
        let dir = Dir::open_ambient_dir(root, ambient_authority())?;
        Ok(Beneath {
            root: root.to_path_buf(),
            dir,
        })
    }

    /// The root as opened.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `rel` as a path relative to the root, refusing absolute paths and `..` before
    /// anything is asked of the file system.
    fn relative<'p>(&self, rel: &'p Path) -> Result<&'p Path, BeneathError> {
        let rel = rel.strip_prefix(&self.root).unwrap_or(rel);
        let clean = rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if clean && !rel.as_os_str().is_empty() {
            Ok(rel)
        } else {
            Err(BeneathError::Escapes {
                path: rel.display().to_string(),
            })
        }
    }

    /// Creates `rel` and its parents as directories.
    pub fn create_dir_all(&self, rel: impl AsRef<Path>) -> Result<(), BeneathError> {
        let rel = self.relative(rel.as_ref())?;
        self.dir.create_dir_all(rel).map_err(|e| {
            // An existing component that is a symlink out reads as "File exists": name
            // the real reason.
            match self.dir.open_dir(rel) {
                Err(open) if is_escape(&open) => BeneathError::of(rel, open),
                _ => BeneathError::of(rel, e),
            }
        })
    }

    /// Creates the parent directories of `rel`.
    pub fn create_parents(&self, rel: impl AsRef<Path>) -> Result<(), BeneathError> {
        let rel = self.relative(rel.as_ref())?;
        match rel.parent() {
            Some(p) if !p.as_os_str().is_empty() => self.create_dir_all(p),
            _ => Ok(()),
        }
    }

    /// Opens the directory `rel` (the root itself for an empty path) for operations of
    /// its own, which stay beneath it.
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> Result<Dir, BeneathError> {
        let rel = rel.as_ref();
        if rel.as_os_str().is_empty() || rel == self.root {
            return self.dir.try_clone().map_err(|e| BeneathError::of(rel, e));
        }
        let rel = self.relative(rel)?;
        self.dir.open_dir(rel).map_err(|e| BeneathError::of(rel, e))
    }

    /// The directory holding `rel` and `rel`'s last component.
    fn parent_of<'p>(&self, rel: &'p Path) -> Result<(Dir, &'p Path), BeneathError> {
        let rel = self.relative(rel)?;
        let name = rel
            .file_name()
            .map(Path::new)
            .ok_or(BeneathError::Escapes {
                path: rel.display().to_string(),
            })?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.open_dir(parent)?, name))
    }

    /// Removes the file (or symlink) `rel`; a missing file is fine.
    pub fn remove_file(&self, rel: impl AsRef<Path>) -> Result<(), BeneathError> {
        let rel = rel.as_ref();
        let (dir, name) = match self.parent_of(rel) {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        match dir.remove_file(name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BeneathError::of(rel, e)),
        }
    }

    /// Removes whatever `rel` is: a file, a symlink (never followed) or a directory tree;
    /// a missing one is fine.
    pub fn remove(&self, rel: impl AsRef<Path>) -> Result<(), BeneathError> {
        let rel = rel.as_ref();
        let (dir, name) = match self.parent_of(rel) {
            Ok(x) => x,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let result = match dir.symlink_metadata(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => dir.remove_dir_all(name),
            Ok(_) => dir.remove_file(name),
        };
        result.map_err(|e| BeneathError::of(rel, e))
    }

    /// Writes `rel` whole or not at all: `write` fills a temporary file beside it (created
    /// with the usual mode, so the umask applies as for any file a command writes), which
    /// is then renamed over `rel`. Parent directories are created.
    pub fn replace_with<T>(
        &self,
        rel: impl AsRef<Path>,
        write: impl FnOnce(&mut std::fs::File) -> io::Result<T>,
    ) -> Result<T, BeneathError> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let rel = self.relative(rel.as_ref())?;
        self.create_parents(rel)?;
        let (dir, name) = self.parent_of(rel)?;
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".orch-tmp-{}-{n}", std::process::id()));
        let tmp = Path::new(&tmp_name);
        let mut opts = cap_std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        let mut file = dir
            .open_with(tmp, &opts)
            .map(cap_std::fs::File::into_std)
            .map_err(|e| BeneathError::of(rel, e))?;
        let result = write(&mut file).and_then(|v| {
            drop(file);
            dir.rename(tmp, &dir, name).map(|()| v)
        });
        result.map_err(|e| {
            let _ = dir.remove_file(tmp);
            BeneathError::of(rel, e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Beneath) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim.txt"), "keep").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("build")).unwrap();
        let b = Beneath::open(root.path()).unwrap();
        (root, outside, b)
    }

    #[test]
    fn removal_through_a_symlinked_parent_is_refused() {
        let (_root, outside, b) = setup();
        let e = b.remove_file("build/victim.txt").unwrap_err();
        assert!(matches!(e, BeneathError::Escapes { .. }), "{e}");
        assert!(outside.path().join("victim.txt").exists());
        let e = b.remove("build/victim.txt").unwrap_err();
        assert!(matches!(e, BeneathError::Escapes { .. }), "{e}");
        assert!(outside.path().join("victim.txt").exists());
    }

    #[test]
    fn writes_and_directories_through_a_symlinked_parent_are_refused() {
        let (_root, outside, b) = setup();
        assert!(matches!(
            b.replace_with("build/new.txt", |_| Ok(())).unwrap_err(),
            BeneathError::Escapes { .. }
        ));
        assert!(matches!(
            b.create_dir_all("build/sub/dir").unwrap_err(),
            BeneathError::Escapes { .. }
        ));
        assert!(!outside.path().join("new.txt").exists());
        assert!(!outside.path().join("sub").exists());
    }

    #[test]
    fn a_symlink_out_as_the_directory_itself_is_an_escape() {
        let (_root, _outside, b) = setup();
        assert!(matches!(
            b.create_dir_all("build").unwrap_err(),
            BeneathError::Escapes { .. }
        ));
        assert!(matches!(
            b.create_parents("build/x.txt").unwrap_err(),
            BeneathError::Escapes { .. }
        ));
    }

    #[test]
    fn dotdot_and_absolute_paths_are_refused_before_any_call() {
        let (_root, _outside, b) = setup();
        for p in ["../x", "a/../../x", "/etc/passwd", ""] {
            assert!(
                matches!(b.remove_file(p).unwrap_err(), BeneathError::Escapes { .. }),
                "{p}"
            );
        }
    }

    #[test]
    fn symlinks_that_stay_inside_are_followed_and_last_components_are_not() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", root.path().join("alias")).unwrap();
        let b = Beneath::open(root.path()).unwrap();
        b.replace_with("alias/a.txt", |f| std::io::Write::write_all(f, b"x"))
            .unwrap();
        assert_eq!(std::fs::read(root.path().join("real/a.txt")).unwrap(), b"x");
        // A symlink as the last component is replaced, never written through.
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("v.txt");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, root.path().join("real/out.txt")).unwrap();
        b.replace_with("real/out.txt", |f| std::io::Write::write_all(f, b"new"))
            .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(
            std::fs::read(root.path().join("real/out.txt")).unwrap(),
            b"new"
        );
        b.remove("real/out.txt").unwrap();
        b.remove_file("missing/nothing").unwrap();
    }
}
