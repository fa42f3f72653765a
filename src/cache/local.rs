//! The local store: `cas/AB/DIGEST` blobs and `ac/KEY.json` entries under one directory.
//!
//! Blobs are written once, through a temporary file renamed into place, and never
//! modified; outputs are restored by reflink (`FICLONE`) where the file system supports
//! it, else by copy, and hashed after restoring — never hard-linked. Reading an entry or
//! blob refreshes its modification time, which `trim` uses for least-recent-use eviction.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{ENTRY_FORMAT, Entry, Node, Stored};
use crate::fs::{self, Digest};

/// The local content-addressed store.
pub struct Local {
    dir: PathBuf,
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

fn mode(executable: bool) -> std::fs::Permissions {
    std::fs::Permissions::from_mode(if executable { 0o755 } else { 0o644 })
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Marks `path` as just used, for least-recent-use eviction.
fn touch(path: &Path) {
    if let Ok(f) = File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

impl Local {
    /// The store at `dir` (created on first write).
    pub fn new(dir: &Path) -> Local {
        Local {
            dir: dir.to_path_buf(),
        }
    }

    fn blob(&self, d: &Digest) -> PathBuf {
        let hex = d.to_hex();
        self.dir.join("cas").join(&hex[..2]).join(hex)
    }

    fn entry_path(&self, key: &Digest) -> PathBuf {
        self.dir.join("ac").join(format!("{}.json", key.to_hex()))
    }

    /// Whether the blob is present.
    pub fn has(&self, d: &Digest) -> bool {
        self.blob(d).is_file()
    }

    /// The blob's bytes.
    pub fn read(&self, d: &Digest) -> io::Result<Vec<u8>> {
        std::fs::read(self.blob(d))
    }

    /// The entry for `key`, if stored and readable.
    pub fn entry(&self, key: &Digest) -> Option<Entry> {
        let path = self.entry_path(key);
        let bytes = std::fs::read(&path).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        if entry.v != ENTRY_FORMAT {
            return None;
        }
        touch(&path);
        Some(entry)
    }

    fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().set_permissions(mode(false))?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Stores an entry.
    pub fn put_entry(&self, key: &Digest, entry: &Entry) -> io::Result<()> {
        let json = serde_json::to_vec(entry).map_err(io::Error::other)?;
        Self::write_atomically(&self.entry_path(key), &json)
    }

    /// Stores bytes already checked to have digest `d`.
    pub fn put_bytes(&self, d: &Digest, bytes: &[u8]) -> io::Result<()> {
        let path = self.blob(d);
        if path.is_file() {
            return Ok(());
        }
        Self::write_atomically(&path, bytes)
    }

    /// Copies a file into the store, checking it still has digest `expected`.
    fn ingest_file(&self, path: &Path, expected: &Digest) -> io::Result<(u64, bool)> {
        let meta = std::fs::metadata(path)?;
        if !self.has(expected) {
            let bytes = std::fs::read(path)?;
            if fs::hash_bytes(&bytes) != *expected {
                return Err(corrupt(format!(
                    "`{}` changed after it was built",
                    path.display()
                )));
            }
            self.put_bytes(expected, &bytes)?;
        }
        Ok((meta.len(), is_executable(&meta)))
    }

    /// Stores an output (a file, or a directory tree) and describes it.
    pub fn ingest(&self, path: &Path, is_dir: bool, expected: &Digest) -> io::Result<Stored> {
        if !is_dir {
            let (size, executable) = self.ingest_file(path, expected)?;
            return Ok(Stored::File {
                digest: *expected,
                size,
                executable,
            });
        }
        if fs::hash_tree(path)? != *expected {
            return Err(corrupt(format!(
                "`{}` changed after it was built",
                path.display()
            )));
        }
        let mut entries = BTreeMap::new();
        for e in walkdir::WalkDir::new(path).min_depth(1).sort_by_file_name() {
            let e = e.map_err(io::Error::other)?;
            let rel = e
                .path()
                .strip_prefix(path)
                .map_err(io::Error::other)?
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type();
            let node = if ft.is_symlink() {
                Node::Symlink {
                    target: std::fs::read_link(e.path())?.to_string_lossy().into_owned(),
                }
            } else if ft.is_dir() {
                Node::Dir
            } else if ft.is_file() {
                let d = fs::hash_file(e.path())?;
                let (size, executable) = self.ingest_file(e.path(), &d)?;
                Node::File {
                    digest: d,
                    size,
                    executable,
                }
            } else {
                continue;
            };
            entries.insert(rel, node);
        }
        Ok(Stored::Dir {
            digest: *expected,
            entries,
        })
    }

    /// Materializes blob `d` at `target` (reflink, else copy) and verifies it; a blob
    /// that does not hash to its name is corrupt and is removed from the store.
    fn place(&self, d: &Digest, target: &Path, executable: bool) -> io::Result<()> {
        let blob = self.blob(d);
        clone_or_copy(&blob, target)?;
        std::fs::set_permissions(target, mode(executable))?;
        if fs::hash_file(target)? != *d {
            let _ = std::fs::remove_file(target);
            let _ = std::fs::remove_file(&blob);
            return Err(corrupt(format!(
                "stored content {} is corrupt; it was discarded",
                d.short()
            )));
        }
        touch(&blob);
        Ok(())
    }

    /// Restores one output at `target`, replacing what is there only once it is complete
    /// and verified.
    pub fn restore(&self, target: &Path, stored: &Stored) -> io::Result<()> {
        let parent = target.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        match stored {
            Stored::File {
                digest, executable, ..
            } => {
                let tmp = tempfile::Builder::new()
                    .prefix(".orch-restore-")
                    .tempfile_in(parent)?
                    .into_temp_path();
                self.place(digest, &tmp, *executable)?;
                if target.is_dir() {
                    std::fs::remove_dir_all(target)?;
                }
                tmp.persist(target).map_err(|e| e.error)?;
            }
            Stored::Dir { entries, .. } => {
                use rayon::prelude::*;
                let tmp = tempfile::Builder::new()
                    .prefix(".orch-restore-")
                    .tempdir_in(parent)?;
                // Structure first (sorted, so parents come before children), then every
                // file in parallel, each verified as it is placed; the tree digest is then
                // the recorded one by construction.
                for (rel, node) in entries {
                    let p = tmp.path().join(rel);
                    match node {
                        Node::Dir => std::fs::create_dir_all(&p)?,
                        Node::Symlink { target: t } => std::os::unix::fs::symlink(t, &p)?,
                        Node::File { .. } => {
                            if let Some(dir) = p.parent() {
                                std::fs::create_dir_all(dir)?;
                            }
                        }
                    }
                }
                entries
                    .par_iter()
                    .filter_map(|(rel, node)| match node {
                        Node::File {
                            digest, executable, ..
                        } => Some((rel, digest, *executable)),
                        _ => None,
                    })
                    .try_for_each(|(rel, d, exec)| self.place(d, &tmp.path().join(rel), exec))?;
                std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
                match std::fs::symlink_metadata(target) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(target)?,
                    Ok(_) => std::fs::remove_file(target)?,
                    Err(_) => {}
                }
                std::fs::rename(tmp.keep(), target)?;
            }
        }
        Ok(())
    }

    /// Evicts least recently used entries and blobs until the store holds at most
    /// `max_bytes`; returns (files removed, bytes freed).
    pub fn trim(&self, max_bytes: u64) -> io::Result<(usize, u64)> {
        let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for sub in ["ac", "cas"] {
            for e in walkdir::WalkDir::new(self.dir.join(sub))
                .into_iter()
                .filter_map(Result::ok)
            {
                if e.file_type().is_file()
                    && let Ok(m) = e.metadata()
                {
                    files.push((
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                        e.into_path(),
                    ));
                }
            }
        }
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        let (mut removed, mut freed) = (0, 0);
        for (_, size, path) in files {
            if total <= max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= size;
                freed += size;
                removed += 1;
            }
        }
        Ok((removed, freed))
    }
}

/// Clones `from` to `to` with `FICLONE` (a reflink: shared blocks, copy on write) where the
/// file system supports it, else copies.
fn clone_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let src = File::open(from)?;
    let dst = File::create(to)?;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes the
    // source descriptor as its argument and has no other memory-safety preconditions.
    let cloned = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0;
    if !cloned {
        drop(dst);
        std::fs::copy(from, to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories_round_trip_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Local::new(&dir.path().join("cache"));
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("tree/empty")).unwrap();
        std::fs::write(out.join("a.txt"), "hello").unwrap();
        std::fs::write(out.join("tree/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(out.join("tree/run.sh"), mode(true)).unwrap();
        std::os::unix::fs::symlink("run.sh", out.join("tree/link")).unwrap();
        let file = store
            .ingest(
                &out.join("a.txt"),
                false,
                &fs::hash_file(&out.join("a.txt")).unwrap(),
            )
            .unwrap();
        let tree_digest = fs::hash_tree(&out.join("tree")).unwrap();
        let tree = store.ingest(&out.join("tree"), true, &tree_digest).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
        store.restore(&out.join("a.txt"), &file).unwrap();
        store.restore(&out.join("tree"), &tree).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "hello");
        assert_eq!(fs::hash_tree(&out.join("tree")).unwrap(), tree_digest);
        assert!(is_executable(
            &std::fs::metadata(out.join("tree/run.sh")).unwrap()
        ));
        assert!(out.join("tree/empty").is_dir());
        // Not a hard link: editing the output leaves the store intact.
        std::fs::write(out.join("a.txt"), "edited").unwrap();
        assert_eq!(store.read(&file.digest()).unwrap(), b"hello");
    }

    #[test]
    fn a_corrupt_blob_is_never_restored_and_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Local::new(&dir.path().join("cache"));
        let f = dir.path().join("f");
        std::fs::write(&f, "good").unwrap();
        let d = fs::hash_file(&f).unwrap();
        let stored = store.ingest(&f, false, &d).unwrap();
        std::fs::write(store.blob(&d), "evil").unwrap();
        std::fs::write(&f, "previous").unwrap();
        assert!(store.restore(&f, &stored).is_err());
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "previous",
            "the target is untouched"
        );
        assert!(!store.has(&d), "the corrupt blob is removed");
    }

    #[test]
    fn content_changed_after_the_build_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Local::new(&dir.path().join("cache"));
        let f = dir.path().join("f");
        std::fs::write(&f, "new").unwrap();
        assert!(store.ingest(&f, false, &fs::hash_bytes(b"old")).is_err());
    }

    #[test]
    fn trim_evicts_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Local::new(&dir.path().join("cache"));
        let old = fs::hash_bytes(b"old-blob");
        let new = fs::hash_bytes(b"new-blob");
        store.put_bytes(&old, b"old-blob").unwrap();
        store.put_bytes(&new, b"new-blob").unwrap();
        let past = SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .append(true)
            .open(store.blob(&old))
            .unwrap()
            .set_modified(past)
            .unwrap();
        let (removed, freed) = store.trim(8).unwrap();
        assert_eq!((removed, freed), (1, 8));
        assert!(!store.has(&old) && store.has(&new));
    }
}
