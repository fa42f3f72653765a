//! The local store: `cas/AB/DIGEST` blobs and `ac/KEY.json` entries under one directory
//! that orch owns, marked by a `CACHEDIR.TAG` file.
//!
//! Blobs are written once, through a temporary file in `tmp/` renamed into place, and
//! never modified. A file is copied in by reflink (`FICLONE`) where the file system
//! supports it, the clone then hashed; else it is hashed while it is copied, so each byte
//! is read once and the digest names exactly what was written. Outputs are restored the
//! same way (reflink, else copy) and hashed after restoring — never hard-linked. Reading an
//! entry or blob refreshes its modification time, which `trim` uses for
//! least-recent-use eviction.
//!
//! Ownership: orch creates the store and tags it (the Cache Directory Tagging convention,
//! so backup tools skip it too), or adopts an empty directory, or a store of an earlier
//! orch (nothing in it but orch-named `ac/` and `cas/` files). Any other directory is
//! never written, trimmed or emptied. `clean --cache` and `gc` remove only `ac/`, `cas/`
//! and `tmp/` inside a store, never the directory itself nor anything else in it.
//!
//! Temporaries: a store killed mid-write leaves files in `tmp/`. Opening the store
//! removes those not modified for [`STALE_AFTER`]: another checkout sharing the store may
//! be writing one right now, and a write in progress keeps its file's mtime fresh.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use cap_std::fs::Dir;

use super::{Entry, Node, Stored};
use crate::fs::{self, Beneath, Digest};

/// The tag file's name.
pub const TAG_FILE: &str = "CACHEDIR.TAG";
/// The first line every cache directory tag starts with.
pub const TAG_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";
/// The comment line that says the tag is orch's.
const TAG_OWNER: &str =
    "# This file is a cache directory tag created by orch for its content-addressed store.";
const TAG_CONTENT: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by orch for its content-addressed store.\n\
# For information about cache directory tags, see https://bford.info/cachedir/\n";
/// The tag is written to a temporary of this name, then renamed: a reader sees it whole
/// or not at all.
const TAG_TEMP_PREFIX: &str = ".tmp-tag-";
/// A temporary not modified for this long was left by a writer that died.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);
/// Entries larger than this are not read (a directory output of a million files stays
/// well below it).
pub(crate) const MAX_ENTRY_BYTES: u64 = 1 << 30;
/// The store's own entries: everything `clean --cache` removes.
const OWN_DIRS: [&str; 3] = ["ac", "cas", "tmp"];

/// Why a directory cannot serve as the local store, or could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// An existing directory orch did not create.
    #[error(
        "`{}` is not an orch cache: it has no {TAG_FILE} and {found}; orch never writes to, trims or empties such a directory (set `[cache] dir` to a new or empty directory)",
        dir.display()
    )]
    NotOrch {
        /// The configured directory.
        dir: PathBuf,
        /// What orch found there.
        found: String,
    },
    /// The file system refused.
    #[error("cache `{}`: {message}", dir.display())]
    Io {
        /// The store.
        dir: PathBuf,
        /// The error.
        message: String,
    },
}

/// Who a store directory belongs to.
#[derive(Debug, PartialEq, Eq)]
enum Ownership {
    /// Does not exist yet.
    Absent,
    /// Exists and is empty: orch may take it.
    Empty,
    /// Carries orch's tag.
    Tagged,
    /// Untagged, but holds nothing except a store of an earlier orch.
    Legacy,
    /// Holds something else (what, for the message).
    Foreign(String),
}

/// Content copied into the store's `tmp/` and hashed on the way, not yet under its
/// digest: [`Local::put_staged`] renames it into `cas/`; dropping it removes the copy.
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    /// The digest of what was copied.
    pub digest: Digest,
    /// Bytes copied.
    pub size: u64,
    /// Any execute bit set on the source.
    pub executable: bool,
    /// The source's permission bits.
    pub mode: u32,
}

/// The local content-addressed store.
pub struct Local {
    dir: PathBuf,
    /// The result of the first `open`.
    opened: OnceLock<Result<(), StoreError>>,
    /// Whether entries may be read (without opening the store).
    readable: OnceLock<bool>,
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// The permissions a restored file gets: the recorded bits, else what entries without
/// them always meant.
fn mode(executable: bool, recorded: Option<u32>) -> std::fs::Permissions {
    std::fs::Permissions::from_mode(match recorded {
        Some(m) => m & 0o777,
        None if executable => 0o755,
        None => 0o644,
    })
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Opens `path` for reading only if it is a regular file: never follows a symlink, never
/// blocks on a FIFO planted in the store.
fn open_regular(path: &Path) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(corrupt(format!(
            "`{}` is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_temporary(name: &str) -> bool {
    name.starts_with(".tmp")
}

fn older_than(meta: &std::fs::Metadata, age: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|a| a > age)
}

/// Names in `dir` with their types (symlinks not followed); empty when it is absent.
fn listing(dir: &Path) -> io::Result<Vec<(String, std::fs::FileType)>> {
    // A store's own directories are never symlinks: one planted there (`tmp -> ~`) must
    // not make orch list, let alone sweep, what it points to.
    match std::fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(io::Error::other(format!(
                "`{}` is not a directory (a symlink?); orch leaves it alone",
                dir.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        _ => {}
    }
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.file_type()?));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Who `dir` belongs to.
fn ownership(dir: &Path) -> io::Result<Ownership> {
    // The directory itself may be a symlink the user configured; what is in it may not.
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ownership::Absent),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Ok(Ownership::Foreign("it is not a directory".into()));
    }
    match tag_owner(dir) {
        Some(true) => return Ok(Ownership::Tagged),
        // Another program's cache (a cargo `target/`, say): its `tmp/` is not orch's.
        Some(false) => {
            return Ok(Ownership::Foreign(format!(
                "its {TAG_FILE} was written by another program"
            )));
        }
        None => {}
    }
    let top = listing(dir)?;
    if top.is_empty() {
        return Ok(Ownership::Empty);
    }
    let foreign = |what: String| Ok(Ownership::Foreign(format!("holds `{what}`")));
    for (name, ty) in &top {
        // Another orch tagging the same new directory right now.
        if name.starts_with(TAG_TEMP_PREFIX) && ty.is_file() {
            continue;
        }
        // ... or done with it since the tag was looked at.
        if name == TAG_FILE && tag_owner(dir) == Some(true) {
            return Ok(Ownership::Tagged);
        }
        if !matches!(name.as_str(), "ac" | "cas") || !ty.is_dir() {
            return foreign(name.clone());
        }
    }
    for (name, ty) in listing(&dir.join("ac"))? {
        let own = name.strip_suffix(".json").is_some_and(|h| is_hex(h, 64)) || is_temporary(&name);
        if !own || !ty.is_file() {
            return foreign(format!("ac/{name}"));
        }
    }
    for (sub, ty) in listing(&dir.join("cas"))? {
        if !is_hex(&sub, 2) || !ty.is_dir() {
            return foreign(format!("cas/{sub}"));
        }
        for (name, ty) in listing(&dir.join("cas").join(&sub))? {
            let own = (is_hex(&name, 64) && name.starts_with(&sub)) || is_temporary(&name);
            if !own || !ty.is_file() {
                return foreign(format!("cas/{sub}/{name}"));
            }
        }
    }
    Ok(Ownership::Legacy)
}

/// Whether `dir` holds a cache directory tag (a regular file that starts with the
/// signature), and if so whether orch wrote it.
fn tag_owner(dir: &Path) -> Option<bool> {
    let file = open_regular(&dir.join(TAG_FILE)).ok()?;
    let mut text = Vec::new();
    file.take(4096).read_to_end(&mut text).ok()?;
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines();
    if lines.next() != Some(TAG_SIGNATURE) {
        return None;
    }
    Some(lines.any(|l| l == TAG_OWNER))
}

/// Marks `path` as just used, for least-recent-use eviction.
fn touch(file: &File) {
    let _ = file.set_modified(SystemTime::now());
}

/// Removes what is at `path` without following a symlink; returns the bytes freed.
fn remove_any(path: &Path) -> io::Result<u64> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        let size = walkdir::WalkDir::new(path)
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        std::fs::remove_dir_all(path)?;
        Ok(size)
    } else {
        std::fs::remove_file(path)?;
        Ok(meta.len())
    }
}

impl Local {
    /// The store at `dir` (created on first write).
    pub fn new(dir: &Path) -> Local {
        Local {
            dir: dir.to_path_buf(),
            opened: OnceLock::new(),
            readable: OnceLock::new(),
        }
    }

    fn io_error(&self, e: &io::Error) -> StoreError {
        StoreError::Io {
            dir: self.dir.clone(),
            message: e.to_string(),
        }
    }

    fn ownership(&self) -> Result<Ownership, StoreError> {
        ownership(&self.dir).map_err(|e| self.io_error(&e))
    }

    /// Makes the store ready for writing, once: creates and tags it, or adopts an empty
    /// directory or an earlier orch's store, then removes stale temporaries. A directory
    /// holding anything else is refused.
    pub fn open(&self) -> Result<(), StoreError> {
        self.opened
            .get_or_init(|| {
                let legacy = match self.ownership()? {
                    Ownership::Foreign(found) => {
                        return Err(StoreError::NotOrch {
                            dir: self.dir.clone(),
                            found,
                        });
                    }
                    Ownership::Tagged => None,
                    o => Some(o == Ownership::Legacy),
                };
                if let Some(legacy) = legacy {
                    std::fs::create_dir_all(&self.dir).map_err(|e| self.io_error(&e))?;
                    if legacy {
                        // Earlier versions left temporaries beside the blobs.
                        self.sweep_beside_blobs();
                    }
                    self.write_tag().map_err(|e| self.io_error(&e))?;
                }
                self.sweep_tmp();
                Ok(())
            })
            .clone()
    }

    /// Refuses a directory that is not orch's (nothing is changed).
    pub fn check_owned(&self) -> Result<(), StoreError> {
        match self.ownership()? {
            Ownership::Foreign(found) => Err(StoreError::NotOrch {
                dir: self.dir.clone(),
                found,
            }),
            _ => Ok(()),
        }
    }

    /// Whether entries may be read: the store is open, or already orch's.
    fn readable(&self) -> bool {
        if let Some(opened) = self.opened.get() {
            return opened.is_ok();
        }
        *self.readable.get_or_init(|| {
            matches!(
                ownership(&self.dir),
                Ok(Ownership::Tagged | Ownership::Legacy)
            )
        })
    }

    fn write_tag(&self) -> io::Result<()> {
        let path = self.dir.join(TAG_FILE);
        let mut tmp = tempfile::Builder::new()
            .prefix(TAG_TEMP_PREFIX)
            .tempfile_in(&self.dir)?;
        tmp.write_all(TAG_CONTENT.as_bytes())?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Removes temporaries in `tmp/` that no writer has touched for [`STALE_AFTER`].
    fn sweep_tmp(&self) {
        let tmp = self.dir.join("tmp");
        // Only orch's own temporaries (regular files it named), never through a symlink.
        for (name, ty) in listing(&tmp).unwrap_or_default() {
            let path = tmp.join(&name);
            if is_temporary(&name)
                && ty.is_file()
                && std::fs::symlink_metadata(&path).is_ok_and(|m| older_than(&m, STALE_AFTER))
            {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Removes stale `.tmp*` files that earlier versions wrote beside entries and blobs.
    fn sweep_beside_blobs(&self) {
        let mut dirs = vec![self.dir.join("ac")];
        for (sub, ty) in listing(&self.dir.join("cas")).unwrap_or_default() {
            if ty.is_dir() && is_hex(&sub, 2) {
                dirs.push(self.dir.join("cas").join(sub));
            }
        }
        for dir in dirs {
            for (name, ty) in listing(&dir).unwrap_or_default() {
                let path = dir.join(&name);
                if is_temporary(&name)
                    && ty.is_file()
                    && std::fs::symlink_metadata(&path).is_ok_and(|m| older_than(&m, STALE_AFTER))
                {
                    let _ = std::fs::remove_file(path);
                }
            }
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
        std::fs::symlink_metadata(self.blob(d)).is_ok_and(|m| m.is_file())
    }

    /// The blob's bytes.
    pub fn read(&self, d: &Digest) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        open_regular(&self.blob(d))?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// The entry for `key`, if stored and readable. What it says is not checked here:
    /// see [`super::validate`].
    pub fn entry(&self, key: &Digest) -> Option<Entry> {
        let (entry, file) = self.read_entry(key)?;
        touch(&file);
        Some(entry)
    }

    /// Like [`Local::entry`], but leaves the entry's time alone: for commands that write
    /// nothing (`plan`), so looking does not count as a use for `gc`.
    pub fn peek_entry(&self, key: &Digest) -> Option<Entry> {
        self.read_entry(key).map(|(entry, _)| entry)
    }

    fn read_entry(&self, key: &Digest) -> Option<(Entry, File)> {
        if !self.readable() {
            return None;
        }
        let file = open_regular(&self.entry_path(key)).ok()?;
        let mut bytes = Vec::new();
        (&file).take(MAX_ENTRY_BYTES).read_to_end(&mut bytes).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        Some((entry, file))
    }

    /// Creates `dir` (inside the store) and checks that neither it nor a directory between
    /// it and the store is a symlink: orch writes into its own directories only. Each
    /// component is looked at once and created only when missing: this runs for every
    /// blob and entry stored, and the directories are nearly always there already.
    fn own_dir(&self, dir: &Path) -> io::Result<()> {
        let rel = dir.strip_prefix(&self.dir).map_err(io::Error::other)?;
        let mut cur = self.dir.clone();
        for c in rel.components() {
            cur.push(c);
            let meta = match std::fs::symlink_metadata(&cur) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(&cur) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => std::fs::symlink_metadata(&cur)?,
                },
                other => other?,
            };
            if !meta.is_dir() {
                return Err(io::Error::other(format!(
                    "`{}` in the cache store is not a directory (a symlink?); orch does not write through it",
                    cur.display()
                )));
            }
        }
        Ok(())
    }

    /// Writes `bytes` to `path` (in the store) through a temporary file in `tmp/`.
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.open().map_err(io::Error::other)?;
        let dir = path.parent().unwrap_or(&self.dir);
        self.own_dir(dir)?;
        let tmp_dir = self.dir.join("tmp");
        self.own_dir(&tmp_dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().set_permissions(mode(false, None))?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Stores an entry.
    pub fn put_entry(&self, key: &Digest, entry: &Entry) -> io::Result<()> {
        let json = serde_json::to_vec(entry).map_err(io::Error::other)?;
        self.write_atomically(&self.entry_path(key), &json)
    }

    /// Stores bytes already checked to have digest `d`.
    pub fn put_bytes(&self, d: &Digest, bytes: &[u8]) -> io::Result<()> {
        let path = self.blob(d);
        if self.has(d) {
            return Ok(());
        }
        self.write_atomically(&path, bytes)
    }

    /// Copies the regular file at `path` into the store's `tmp/`, hashing the bytes as
    /// they are copied (or, where the file system clones, hashing the clone): the digest
    /// names exactly what was stored, whatever happens to `path` meanwhile. Returns the
    /// staged copy and the file's metadata, taken before its first byte was read.
    pub fn stage(&self, path: &Path) -> io::Result<(Staged, std::fs::Metadata)> {
        self.open().map_err(io::Error::other)?;
        let src = open_regular(path)?;
        let meta = src.metadata()?;
        let tmp_dir = self.dir.join("tmp");
        self.own_dir(&tmp_dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp")
            .tempfile_in(&tmp_dir)?;
        let (digest, size) = if try_clone(&src, tmp.as_file()) {
            hash_reader(tmp.as_file())?
        } else {
            copy_hashing(&src, tmp.as_file_mut(), meta.len())?
        };
        let staged = Staged {
            tmp,
            digest,
            size,
            executable: is_executable(&meta),
            mode: meta.permissions().mode() & 0o777,
        };
        Ok((staged, meta))
    }

    /// Moves a staged copy into `cas/` under its digest (or drops it when the store
    /// already holds that content).
    pub fn put_staged(&self, staged: Staged) -> io::Result<()> {
        let path = self.blob(&staged.digest);
        if self.has(&staged.digest) {
            return Ok(());
        }
        self.own_dir(path.parent().unwrap_or(&self.dir))?;
        staged.tmp.as_file().set_permissions(mode(false, None))?;
        staged.tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Copies a file into the store, checking it still has digest `expected`; returns
    /// its size, execute bit and permission bits. A file above `max_blob` is refused
    /// before a byte is copied ([`io::ErrorKind::FileTooLarge`]).
    fn ingest_file(
        &self,
        path: &Path,
        expected: &Digest,
        max_blob: Option<u64>,
    ) -> io::Result<(u64, bool, u32)> {
        let meta = std::fs::metadata(path)?;
        if let Some(max) = max_blob.filter(|m| meta.len() > *m) {
            return Err(too_large(path, meta.len(), max));
        }
        if !self.has(expected) {
            let (staged, _) = self.stage(path)?;
            if staged.digest != *expected {
                return Err(corrupt(format!(
                    "`{}` changed after it was built",
                    path.display()
                )));
            }
            self.put_staged(staged)?;
        }
        Ok((
            meta.len(),
            is_executable(&meta),
            meta.permissions().mode() & 0o777,
        ))
    }

    /// Stores an output (a file, or a directory tree) and describes it; a file above
    /// `max_blob` bytes fails it with [`io::ErrorKind::FileTooLarge`].
    pub fn ingest(
        &self,
        path: &Path,
        is_dir: bool,
        expected: &Digest,
        max_blob: Option<u64>,
    ) -> io::Result<Stored> {
        if !is_dir {
            let (size, executable, bits) = self.ingest_file(path, expected, max_blob)?;
            return Ok(Stored::File {
                digest: *expected,
                size,
                executable,
                mode: Some(bits),
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
                let (size, executable, bits) = self.ingest_file(e.path(), &d, max_blob)?;
                Node::File {
                    digest: d,
                    size,
                    executable,
                    mode: Some(bits),
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

    /// Fills the new file `dst` with blob `d` (reflink, else copy), verifies its content
    /// and size through `dst` itself, then gives it its permissions; a blob that does not
    /// hash to its name is corrupt and is removed from the store.
    fn place(
        &self,
        d: &Digest,
        size: u64,
        dst: &mut File,
        perms: std::fs::Permissions,
    ) -> io::Result<()> {
        let blob = self.blob(d);
        let src = open_regular(&blob)?;
        clone_or_copy(&src, dst)?;
        dst.seek(SeekFrom::Start(0))?;
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(&mut *dst)?;
        if Digest::from(hasher.finalize()) != *d {
            let _ = std::fs::remove_file(&blob);
            return Err(corrupt(format!(
                "stored content {} is corrupt; it was discarded",
                d.short()
            )));
        }
        if dst.metadata()?.len() != size {
            return Err(corrupt(format!(
                "the entry gives content {} a wrong size",
                d.short()
            )));
        }
        dst.set_permissions(perms)?;
        touch(&src);
        Ok(())
    }

    /// Restores one output at `rel` (project-relative), replacing what is there only once
    /// it is complete and verified. Every directory on the way is resolved beneath the
    /// project root, so one replaced by a symlink to elsewhere fails the restore instead
    /// of receiving files. The entry must have passed [`super::validate`].
    pub fn restore(&self, root: &Beneath, rel: &str, stored: &Stored) -> io::Result<()> {
        let rel_path = Path::new(rel);
        let name = rel_path
            .file_name()
            .ok_or_else(|| corrupt(format!("`{rel}` names no file")))?;
        root.create_parents(rel_path)?;
        let dir = root.open_dir(rel_path.parent().unwrap_or(Path::new("")))?;
        match stored {
            Stored::File {
                digest,
                size,
                executable,
                mode: bits,
            } => {
                let (tmp, mut file) = temp_in(&dir, |d, n| {
                    let mut opts = cap_std::fs::OpenOptions::new();
                    opts.read(true).write(true).create_new(true);
                    d.open_with(n, &opts).map(cap_std::fs::File::into_std)
                })?;
                let result = self
                    .place(digest, *size, &mut file, mode(*executable, *bits))
                    .and_then(|()| {
                        drop(file);
                        replace(&dir, &tmp, name)
                    });
                if result.is_err() {
                    let _ = dir.remove_file(&tmp);
                }
                result
            }
            Stored::Dir { entries, .. } => {
                let (tmp, ()) = temp_in(&dir, |d, n| d.create_dir(n))?;
                let result = self
                    .fill(&dir, &tmp, entries)
                    .and_then(|()| replace(&dir, &tmp, name));
                if result.is_err() {
                    let _ = dir.remove_dir_all(&tmp);
                }
                result
            }
        }
    }

    /// Builds a directory output's tree in the new directory `tmp` of `dir`: structure
    /// first (sorted, so parents come before children), then every file in parallel,
    /// each verified as it is placed. The listing was checked against the tree digest,
    /// so the tree is the recorded one.
    fn fill(&self, dir: &Dir, tmp: &Path, entries: &BTreeMap<String, Node>) -> io::Result<()> {
        use rayon::prelude::*;
        let tree = dir.open_dir(tmp)?;
        for (rel, node) in entries {
            match node {
                Node::Dir => tree.create_dir_all(rel)?,
                Node::Symlink { target } => tree.symlink(target, rel)?,
                Node::File { .. } => {}
            }
        }
        entries
            .par_iter()
            .filter_map(|(rel, node)| match node {
                Node::File {
                    digest,
                    size,
                    executable,
                    mode: bits,
                } => Some((rel, digest, *size, mode(*executable, *bits))),
                _ => None,
            })
            .try_for_each(|(rel, d, size, perms)| {
                let mut opts = cap_std::fs::OpenOptions::new();
                opts.read(true).write(true).create_new(true);
                let mut file = tree.open_with(rel, &opts)?.into_std();
                self.place(d, size, &mut file, perms)
            })?;
        dir.set_permissions(
            tmp,
            cap_std::fs::Permissions::from_std(std::fs::Permissions::from_mode(0o755)),
        )
    }

    /// Evicts least recently used entries and blobs until the store holds at most
    /// `max_bytes`, after removing stale temporaries; returns (files removed, bytes
    /// freed). Only orch's own files are counted or removed, and only in a store that is
    /// orch's.
    pub fn trim(&self, max_bytes: u64) -> Result<(usize, u64), StoreError> {
        match self.ownership()? {
            Ownership::Absent | Ownership::Empty => return Ok((0, 0)),
            Ownership::Foreign(found) => {
                return Err(StoreError::NotOrch {
                    dir: self.dir.clone(),
                    found,
                });
            }
            Ownership::Tagged | Ownership::Legacy => {}
        }
        self.sweep_tmp();
        self.sweep_beside_blobs();
        let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let mut push = |path: PathBuf| {
            if let Ok(m) = std::fs::symlink_metadata(&path)
                && m.is_file()
            {
                files.push((
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    path,
                ));
            }
        };
        let ac = self.dir.join("ac");
        for (name, _) in listing(&ac).map_err(|e| self.io_error(&e))? {
            if name.strip_suffix(".json").is_some_and(|h| is_hex(h, 64)) {
                push(ac.join(name));
            }
        }
        let cas = self.dir.join("cas");
        for (sub, ty) in listing(&cas).map_err(|e| self.io_error(&e))? {
            if !ty.is_dir() || !is_hex(&sub, 2) {
                continue;
            }
            for (name, _) in listing(&cas.join(&sub)).map_err(|e| self.io_error(&e))? {
                if is_hex(&name, 64) {
                    push(cas.join(&sub).join(name));
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

    /// Empties the store: removes `ac/`, `cas/` and `tmp/`, keeping the directory, its
    /// tag and anything else in it. Returns the bytes freed, or None when there was
    /// nothing to remove.
    pub fn clear(&self) -> Result<Option<u64>, StoreError> {
        match self.ownership()? {
            Ownership::Absent | Ownership::Empty => return Ok(None),
            Ownership::Foreign(found) => {
                return Err(StoreError::NotOrch {
                    dir: self.dir.clone(),
                    found,
                });
            }
            Ownership::Tagged | Ownership::Legacy => {}
        }
        let mut freed = None;
        for sub in OWN_DIRS {
            let path = self.dir.join(sub);
            if std::fs::symlink_metadata(&path).is_ok() {
                let bytes = remove_any(&path).map_err(|e| self.io_error(&e))?;
                freed = Some(freed.unwrap_or(0) + bytes);
            }
        }
        Ok(freed)
    }
}

/// Creates a new temporary `.orch-restore-*` entry in `dir` with `make`, under a name no
/// other restore (of this or another orch) is using.
fn temp_in<T>(dir: &Dir, make: impl Fn(&Dir, &Path) -> io::Result<T>) -> io::Result<(PathBuf, T)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = PathBuf::from(format!(".orch-restore-{}-{n}", std::process::id()));
        match make(dir, &name) {
            Ok(made) => return Ok((name, made)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
}

/// Moves the complete `tmp` of `dir` to `name`, in place of whatever is there (a
/// directory is removed first: a rename cannot replace it; a symlink is replaced, never
/// followed).
fn replace(dir: &Dir, tmp: &Path, name: &std::ffi::OsStr) -> io::Result<()> {
    match dir.symlink_metadata(name) {
        Ok(m) if m.is_dir() => dir.remove_dir_all(name)?,
        Ok(_) if dir.symlink_metadata(tmp)?.is_dir() => dir.remove_file(name)?,
        _ => {}
    }
    dir.rename(tmp, dir, name)
}

/// Files at least this large are copied by two threads (one reads and hashes, one
/// writes); smaller ones are not worth a thread.
const PIPELINE_MIN: u64 = 8 << 20;
/// Bytes per read while copying: large enough for blake3's SIMD backends and few system
/// calls, small enough that Ctrl-C is answered at once.
const COPY_CHUNK: usize = 1 << 20;

/// The error of a file above `[cache] max_blob`.
fn too_large(path: &Path, size: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!(
            "`{}` is {}, above `[cache] max_blob` ({})",
            path.display(),
            human_size(size),
            human_size(max)
        ),
    )
}

/// `1.5 GiB`, `512 MiB`, `12 B`: a size for messages.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn interrupted() -> io::Result<()> {
    if crate::exec::signal::interrupted() {
        return Err(io::Error::other(fs::digest::Interrupted));
    }
    Ok(())
}

/// Reads `file` from its start through BLAKE3: (digest, bytes read).
fn hash_reader(mut file: &File) -> io::Result<(Digest, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut size = 0u64;
    loop {
        interrupted()?;
        match file.read(&mut buf) {
            Ok(0) => return Ok((hasher.finalize().into(), size)),
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Copies `src` to `dst` and hashes the bytes in the same pass, so each is read once:
/// (digest, bytes copied). Large files hash on this thread while another writes, so the
/// copy costs about what hashing alone does.
fn copy_hashing(src: &File, dst: &mut File, len: u64) -> io::Result<(Digest, u64)> {
    let mut reader = src;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    // Fills `buf` with the next chunk (empty at the end), hashing it.
    let mut next = |buf: &mut Vec<u8>| -> io::Result<()> {
        buf.resize(COPY_CHUNK, 0);
        loop {
            interrupted()?;
            match reader.read(buf) {
                Ok(n) => {
                    buf.truncate(n);
                    hasher.update(buf);
                    size += n as u64;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    };
    if len < PIPELINE_MIN {
        let mut buf = Vec::new();
        loop {
            next(&mut buf)?;
            if buf.is_empty() {
                break;
            }
            dst.write_all(&buf)?;
        }
    } else {
        // Buffers go to the writer and come back empty: four in flight bound the memory.
        let (full_tx, full_rx) = crossbeam_channel::bounded::<Vec<u8>>(4);
        let (empty_tx, empty_rx) = crossbeam_channel::bounded::<Vec<u8>>(4);
        std::thread::scope(|s| -> io::Result<()> {
            let writer = s.spawn(move || -> io::Result<()> {
                for buf in full_rx {
                    dst.write_all(&buf)?;
                    let _ = empty_tx.try_send(buf);
                }
                Ok(())
            });
            let read = (|| -> io::Result<()> {
                loop {
                    let mut buf = empty_rx.try_recv().unwrap_or_default();
                    next(&mut buf)?;
                    // A send fails only when the writer stopped: its error follows.
                    if buf.is_empty() || full_tx.send(buf).is_err() {
                        return Ok(());
                    }
                }
            })();
            drop(full_tx);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the store's writer thread failed")));
            read.and(written)
        })?;
    }
    Ok((hasher.finalize().into(), size))
}

/// Clones `src` into the empty file `dst` (a reflink: shared blocks, copy on write);
/// false where the file system cannot.
fn try_clone(src: &File, dst: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes the
    // source descriptor as its argument and has no other memory-safety preconditions.
    unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) == 0 }
}

/// Clones `src` into the empty file `dst` with `FICLONE` (a reflink: shared blocks, copy
/// on write) where the file system supports it, else copies.
fn clone_or_copy(src: &File, dst: &mut File) -> io::Result<()> {
    if !try_clone(src, dst) {
        let mut reader = src;
        io::copy(&mut reader, dst)?;
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
        std::fs::set_permissions(out.join("tree/run.sh"), mode(true, None)).unwrap();
        std::os::unix::fs::symlink("run.sh", out.join("tree/link")).unwrap();
        let file = store
            .ingest(
                &out.join("a.txt"),
                false,
                &fs::hash_file(&out.join("a.txt")).unwrap(),
                None,
            )
            .unwrap();
        let tree_digest = fs::hash_tree(&out.join("tree")).unwrap();
        let tree = store
            .ingest(&out.join("tree"), true, &tree_digest, None)
            .unwrap();
        std::fs::remove_dir_all(&out).unwrap();
        let root = Beneath::open(dir.path()).unwrap();
        store.restore(&root, "out/a.txt", &file).unwrap();
        store.restore(&root, "out/tree", &tree).unwrap();
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
    fn staging_hashes_what_it_copies_and_a_dropped_copy_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Local::new(&dir.path().join("cache"));
        // One file below the two-thread threshold, one above it (and not a multiple of
        // the chunk size).
        for len in [5_000usize, PIPELINE_MIN as usize + 12_345] {
            let f = dir.path().join(format!("f{len}"));
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&f, &bytes).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o750)).unwrap();
            let (staged, meta) = store.stage(&f).unwrap();
            assert_eq!(staged.digest, fs::hash_bytes(&bytes));
            assert_eq!((staged.size, meta.len()), (len as u64, len as u64));
            assert_eq!((staged.executable, staged.mode), (true, 0o750));
            let d = staged.digest;
            store.put_staged(staged).unwrap();
            assert_eq!(store.read(&d).unwrap(), bytes);
            // Already stored: a second copy is dropped, not renamed over the first.
            let (again, _) = store.stage(&f).unwrap();
            store.put_staged(again).unwrap();
            let (dropped, _) = store.stage(&f).unwrap();
            drop(dropped);
        }
        let left = std::fs::read_dir(dir.path().join("cache/tmp"))
            .unwrap()
            .count();
        assert_eq!(left, 0, "no temporary is left in tmp/");
    }

    #[test]
    fn ingest_refuses_a_file_above_max_blob_before_copying_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Local::new(&dir.path().join("cache"));
        let f = dir.path().join("f");
        std::fs::write(&f, "12345").unwrap();
        let d = fs::hash_file(&f).unwrap();
        let e = store.ingest(&f, false, &d, Some(4)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert!(
            e.to_string()
                .contains("is 5 B, above `[cache] max_blob` (4 B)"),
            "{e}"
        );
        assert!(!store.has(&d));
        store.ingest(&f, false, &d, Some(5)).unwrap();
        assert!(store.has(&d));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(12), "12 B");
        assert_eq!(human_size(1 << 30), "1 GiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(512 << 20), "512 MiB");
    }

    #[test]
    fn a_corrupt_blob_is_never_restored_and_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Local::new(&dir.path().join("cache"));
        let f = dir.path().join("f");
        std::fs::write(&f, "good").unwrap();
        let d = fs::hash_file(&f).unwrap();
        let stored = store.ingest(&f, false, &d, None).unwrap();
        std::fs::write(store.blob(&d), "evil").unwrap();
        std::fs::write(&f, "previous").unwrap();
        let root = Beneath::open(dir.path()).unwrap();
        assert!(store.restore(&root, "f", &stored).is_err());
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
        assert!(
            store
                .ingest(&f, false, &fs::hash_bytes(b"old"), None)
                .is_err()
        );
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

    #[test]
    fn a_new_store_is_tagged_and_clear_keeps_all_but_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Local::new(&dir.path().join("cache"));
        store.put_bytes(&fs::hash_bytes(b"x"), b"x").unwrap();
        let tag = std::fs::read_to_string(dir.path().join("cache").join(TAG_FILE)).unwrap();
        assert!(tag.starts_with(&format!("{TAG_SIGNATURE}\n# ")), "{tag}");
        std::fs::write(dir.path().join("cache/notes"), "mine").unwrap();
        assert_eq!(store.clear().unwrap(), Some(1));
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [TAG_FILE, "notes"]);
    }

    #[test]
    fn a_directory_holding_other_files_is_never_adopted_trimmed_or_cleared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cas/ab")).unwrap();
        std::fs::write(dir.path().join("cas/ab/data"), "mine").unwrap();
        std::fs::write(dir.path().join("README"), "mine").unwrap();
        let store = Local::new(dir.path());
        assert!(matches!(store.open(), Err(StoreError::NotOrch { .. })));
        assert!(store.put_bytes(&fs::hash_bytes(b"x"), b"x").is_err());
        assert!(store.check_owned().is_err());
        assert!(store.trim(0).is_err());
        assert!(store.clear().is_err());
        assert!(store.entry(&fs::hash_bytes(b"k")).is_none());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cas/ab/data")).unwrap(),
            "mine"
        );
        assert!(!dir.path().join(TAG_FILE).exists());
        // A tag that is not a regular file does not make it orch's.
        std::os::unix::fs::symlink("README", dir.path().join(TAG_FILE)).unwrap();
        assert!(Local::new(dir.path()).check_owned().is_err());
    }

    #[test]
    fn an_earlier_untagged_store_is_adopted_and_its_stale_temporaries_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = fs::hash_bytes(b"blob");
        let hex = d.to_hex();
        std::fs::create_dir_all(dir.path().join("cas").join(&hex[..2])).unwrap();
        std::fs::write(dir.path().join("cas").join(&hex[..2]).join(&hex), "blob").unwrap();
        std::fs::create_dir_all(dir.path().join("ac")).unwrap();
        let stale = dir.path().join("ac/.tmpAbC123");
        let fresh = dir.path().join("ac/.tmpDeF456");
        std::fs::write(&stale, "half").unwrap();
        std::fs::write(&fresh, "half").unwrap();
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * STALE_AFTER)
            .unwrap();
        let store = Local::new(dir.path());
        store.open().unwrap();
        assert!(dir.path().join(TAG_FILE).is_file());
        assert!(store.has(&d));
        assert!(!stale.exists() && fresh.exists());
    }

    #[test]
    fn a_restore_never_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let store = Local::new(&dir.path().join("cache"));
        let f = dir.path().join("f");
        std::fs::write(&f, "good").unwrap();
        let stored = store
            .ingest(&f, false, &fs::hash_file(&f).unwrap(), None)
            .unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir_all(project.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path(), project.join("linked")).unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, project.join("out/a.txt")).unwrap();
        let root = Beneath::open(&project).unwrap();
        assert!(store.restore(&root, "linked/a.txt", &stored).is_err());
        assert!(store.restore(&root, "linked/sub/a.txt", &stored).is_err());
        // A symlink in the output's place is replaced, not written through.
        store.restore(&root, "out/a.txt", &stored).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(project.join("out/a.txt")).unwrap(),
            "good"
        );
        let mut left: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["victim"]);
    }

    #[test]
    fn a_cache_directory_tagged_by_another_program_is_not_orchs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(TAG_FILE),
            format!("{TAG_SIGNATURE}\n# This file is a cache directory tag created by cargo.\n"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/theirs"), "keep").unwrap();
        let store = Local::new(dir.path());
        assert!(matches!(store.clear(), Err(StoreError::NotOrch { .. })));
        assert!(store.open().is_err());
        assert!(dir.path().join("tmp/theirs").exists());
    }

    #[test]
    fn checkouts_opening_one_new_store_at_once_all_succeed() {
        for _ in 0..200 {
            let dir = tempfile::tempdir().unwrap();
            let store = dir.path().join("shared");
            let opened: Vec<Result<(), StoreError>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| Local::new(&store).open()))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(opened.iter().all(Result::is_ok), "{opened:?}");
        }
    }
}
