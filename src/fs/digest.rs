//! Content digests: the BLAKE3 `Digest` type, and hashing of byte slices, files and directory trees.
//!
//! Only regular files are ever opened: a FIFO, socket or device (directly or through a
//! symlink) is refused with [`SpecialFile`] before it could block a read forever, and
//! hashing checks for Ctrl-C between chunks, so a huge input never delays exit 130.

use std::fmt;
use std::fs;
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _, PermissionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use walkdir::WalkDir;

/// A BLAKE3 content digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Digest {
    /// The digest as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[usize::from(b >> 4)] as char);
            s.push(HEX[usize::from(b & 0x0f)] as char);
        }
        s
    }

    /// Parses exactly 64 hex characters (either case); `None` for anything else.
    pub fn from_hex(s: &str) -> Option<Digest> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(Digest(out))
    }

    /// The first 12 hex characters, for human-facing output.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({}…)", self.short())
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Digest(*h.as_bytes())
    }
}

/// Hex in human-readable formats (JSON), the 32 raw bytes in binary ones (postcard).
impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            serde::Serialize::serialize(&self.0, serializer)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;
        impl serde::de::Visitor<'_> for HexVisitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 64-character hex BLAKE3 digest")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Digest, E> {
                Digest::from_hex(v)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(HexVisitor)
        } else {
            <[u8; 32] as serde::Deserialize>::deserialize(deserializer).map(Digest)
        }
    }
}

/// BLAKE3 digest of an in-memory byte slice.
pub fn hash_bytes(bytes: &[u8]) -> Digest {
    blake3::hash(bytes).into()
}

/// A path that is a FIFO, socket or device: orch never reads one (a read could block
/// forever, or never end), so it cannot be an input, an output or a shard source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "it is a {kind}, not a regular file or directory; orch never reads FIFOs, sockets or devices"
)]
pub struct SpecialFile {
    /// What it is: `FIFO`, `socket`, `character device` or `block device`.
    pub kind: &'static str,
}

/// Hashing stopped because the build was interrupted (Ctrl-C, SIGTERM or a requested stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// The kind of special file `ft` is, or None for files, directories and symlinks.
pub fn special_kind(ft: &fs::FileType) -> Option<&'static str> {
    if ft.is_fifo() {
        Some("FIFO")
    } else if ft.is_socket() {
        Some("socket")
    } else if ft.is_char_device() {
        Some("character device")
    } else if ft.is_block_device() {
        Some("block device")
    } else {
        None
    }
}

/// The [`SpecialFile`] inside `err`, when that is why it failed.
pub fn as_special(err: &io::Error) -> Option<&SpecialFile> {
    err.get_ref()?.downcast_ref::<SpecialFile>()
}

/// Whether `err` means hashing stopped for an interruption.
pub fn is_interrupted(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<Interrupted>())
}

fn refuse_special(ft: &fs::FileType) -> io::Result<()> {
    match special_kind(ft) {
        // Not `ErrorKind::Interrupted`-like kinds: callers must never retry it.
        Some(kind) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            SpecialFile { kind },
        )),
        None => Ok(()),
    }
}

fn check_interrupted() -> io::Result<()> {
    if crate::exec::signal::interrupted() {
        return Err(io::Error::other(Interrupted));
    }
    Ok(())
}

/// Opens `path` (following symlinks) for reading, refusing FIFOs, sockets and devices.
///
/// The type is checked before opening, since even opening a FIFO blocks until a writer
/// comes (and a non-blocking open would release a writer waiting for a reader); the
/// open is non-blocking anyway and the type checked again on the descriptor, so a file
/// swapped for a FIFO in between is refused too, never read.
pub fn open_regular(path: &Path) -> io::Result<fs::File> {
    open_sized(path).map(|(file, _)| file)
}

/// [`open_regular`], with a read buffer sized for the file: most inputs are small, and
/// zeroing a full chunk for each would cost more than hashing them.
fn open_sized(path: &Path) -> io::Result<(fs::File, Vec<u8>)> {
    refuse_special(&fs::metadata(path)?.file_type())?;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    refuse_special(&meta.file_type())?;
    // One byte more than the size: a file read whole then reports its end at once.
    let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    let buf = vec![0u8; len.saturating_add(1).min(CHUNK)];
    Ok((file, buf))
}

/// Reads a whole regular file, refusing special files and stopping when interrupted.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let (mut file, mut buf) = open_sized(path)?;
    let mut out = Vec::new();
    loop {
        check_interrupted()?;
        match file.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Bytes read between two checks for Ctrl-C: large enough for blake3's SIMD backends,
/// small enough that even a slow disk answers an interrupt at once.
const CHUNK: usize = 256 * 1024;

/// Streams the file through BLAKE3; the digest equals `hash_bytes` of its contents.
/// Refuses special files ([`SpecialFile`]) and stops when the build is interrupted
/// ([`Interrupted`]).
pub fn hash_file(path: &Path) -> io::Result<Digest> {
    let (mut file, mut buf) = open_sized(path)?;
    let mut hasher = blake3::Hasher::new();
    loop {
        check_interrupted()?;
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}

/// Separates tree digests from plain content digests, so a file whose bytes happen to equal a
/// tree encoding can never share that tree's digest. Bump the version if the encoding changes.
const TREE_CONTEXT: &str = "orch 2024-01-01 directory tree digest v1";

const KIND_FILE: u8 = b'f';
const KIND_DIR: u8 = b'd';
const KIND_SYMLINK: u8 = b'l';
/// Sockets, FIFOs and devices inside a directory tree: recorded by name only, never opened
/// (reading a FIFO would block). Named directly, they are refused instead.
const KIND_OTHER: u8 = b'o';

/// One walked entry, before file contents are hashed.
enum TreeEntry {
    File {
        rel: Vec<u8>,
        exec: bool,
        path: PathBuf,
    },
    Dir {
        rel: Vec<u8>,
    },
    Symlink {
        rel: Vec<u8>,
        target: Vec<u8>,
    },
    Other {
        rel: Vec<u8>,
    },
}

/// Writes one length-prefixed field, so adjacent fields can never be re-split differently.
fn put_field(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// Digest of a directory tree: names, kinds, exec bits, file contents and symlink targets.
pub fn hash_tree(dir: &Path) -> io::Result<Digest> {
    // Otherwise a file root would walk as zero entries and alias the empty directory.
    if !fs::metadata(dir)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{}: not a directory", dir.display()),
        ));
    }
    let mut entries = Vec::new();
    // min_depth(1): the root itself is implied; its name must not affect the digest.
    for entry in WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        check_interrupted()?;
        let entry = entry?;
        let rel = entry
            .path()
            .strip_prefix(dir)
            .map_err(io::Error::other)?
            .as_os_str()
            .as_bytes()
            .to_vec();
        let ft = entry.file_type();
        entries.push(if ft.is_dir() {
            TreeEntry::Dir { rel }
        } else if ft.is_symlink() {
            let target = fs::read_link(entry.path())?;
            TreeEntry::Symlink {
                rel,
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_file() {
            let mode = entry.metadata()?.permissions().mode();
            TreeEntry::File {
                rel,
                exec: mode & 0o111 != 0,
                path: entry.into_path(),
            }
        } else {
            TreeEntry::Other { rel }
        });
    }

    // The walk is cheap and sequential; file contents dominate, so hash them in parallel and
    // then feed everything to the tree hasher in walk order.
    let file_digests = entries
        .par_iter()
        .map(|e| match e {
            TreeEntry::File { path, .. } => hash_file(path).map(Some),
            _ => Ok(None),
        })
        .collect::<io::Result<Vec<Option<Digest>>>>()?;

    let mut hasher = blake3::Hasher::new_derive_key(TREE_CONTEXT);
    for (entry, digest) in entries.iter().zip(file_digests) {
        match entry {
            TreeEntry::File { rel, exec, .. } => {
                put_field(&mut hasher, &[KIND_FILE]);
                put_field(&mut hasher, rel);
                put_field(&mut hasher, &[u8::from(*exec)]);
                let digest = digest.ok_or_else(|| io::Error::other("file digest missing"))?;
                put_field(&mut hasher, &digest.0);
            }
            TreeEntry::Dir { rel } => {
                put_field(&mut hasher, &[KIND_DIR]);
                put_field(&mut hasher, rel);
            }
            TreeEntry::Symlink { rel, target } => {
                put_field(&mut hasher, &[KIND_SYMLINK]);
                put_field(&mut hasher, rel);
                put_field(&mut hasher, target);
            }
            TreeEntry::Other { rel } => {
                put_field(&mut hasher, &[KIND_OTHER]);
                put_field(&mut hasher, rel);
            }
        }
    }
    Ok(hasher.finalize().into())
}

/// One entry of a directory tree described rather than walked (a cache entry's listing).
#[derive(Clone, Copy, Debug)]
pub enum TreeItem<'a> {
    /// A regular file: its path relative to the tree, execute bit and content digest.
    File {
        /// Path relative to the tree root, `/`-separated.
        rel: &'a str,
        /// Any execute bit set.
        exec: bool,
        /// Content digest.
        digest: Digest,
    },
    /// A directory.
    Dir {
        /// Path relative to the tree root.
        rel: &'a str,
    },
    /// A symbolic link.
    Symlink {
        /// Path relative to the tree root.
        rel: &'a str,
        /// Its target, as written.
        target: &'a str,
    },
}

impl TreeItem<'_> {
    fn rel(&self) -> &str {
        match self {
            TreeItem::File { rel, .. } | TreeItem::Dir { rel } | TreeItem::Symlink { rel, .. } => {
                rel
            }
        }
    }
}

/// The digest [`hash_tree`] gives a tree holding exactly `items`, in any order: lets a
/// described tree be checked against its recorded digest before anything is written.
pub fn hash_tree_items(items: &[TreeItem<'_>]) -> Digest {
    let mut sorted: Vec<&TreeItem<'_>> = items.iter().collect();
    // The walk's order: depth first, names sorted, so by the sequence of components.
    sorted.sort_by(|a, b| a.rel().split('/').cmp(b.rel().split('/')));
    let mut hasher = blake3::Hasher::new_derive_key(TREE_CONTEXT);
    for item in sorted {
        match item {
            TreeItem::File { rel, exec, digest } => {
                put_field(&mut hasher, &[KIND_FILE]);
                put_field(&mut hasher, rel.as_bytes());
                put_field(&mut hasher, &[u8::from(*exec)]);
                put_field(&mut hasher, &digest.0);
            }
            TreeItem::Dir { rel } => {
                put_field(&mut hasher, &[KIND_DIR]);
                put_field(&mut hasher, rel.as_bytes());
            }
            TreeItem::Symlink { rel, target } => {
                put_field(&mut hasher, &[KIND_SYMLINK]);
                put_field(&mut hasher, rel.as_bytes());
                put_field(&mut hasher, target.as_bytes());
            }
        }
    }
    hasher.finalize().into()
}

/// `hash_tree` for directories, `hash_file` for everything else (symlinks are followed).
pub fn hash_path(path: &Path) -> io::Result<Digest> {
    if fs::metadata(path)?.is_dir() {
        hash_tree(path)
    } else {
        hash_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(dir: &Path, rel: &str, content: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn sample_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "a.txt", "alpha");
        write(t.path(), "sub/b.txt", "beta");
        write(t.path(), "sub/deeper/c.txt", "gamma");
        t
    }

    #[test]
    fn hex_round_trip() {
        let d = hash_bytes(b"hello");
        let hex = d.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_eq!(hex, blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(Digest::from_hex(&hex), Some(d));
        assert_eq!(Digest::from_hex(&hex.to_uppercase()), Some(d));
        assert_eq!(d.short(), &hex[..12]);
        assert_eq!(d.to_string(), hex);
        assert_eq!(format!("{d:?}"), format!("Digest({}…)", &hex[..12]));
    }

    #[test]
    fn from_hex_rejects_bad_input() {
        assert_eq!(Digest::from_hex(""), None);
        assert_eq!(Digest::from_hex(&"a".repeat(63)), None);
        assert_eq!(Digest::from_hex(&"a".repeat(65)), None);
        assert_eq!(Digest::from_hex(&"g".repeat(64)), None);
        // 32 two-byte chars: right byte length, not hex.
        assert_eq!(Digest::from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn serde_as_hex_string() {
        let d = hash_bytes(b"serde");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d.to_hex()));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"nothex\"").is_err());
        assert!(serde_json::from_str::<Digest>("42").is_err());
        // Non-borrowed input path (toml deserializes owned strings).
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct W {
            d: Digest,
        }
        let w = W { d };
        let s = toml::to_string(&w).unwrap();
        assert_eq!(toml::from_str::<W>(&s).unwrap(), w);
    }

    #[test]
    fn hash_file_matches_blake3() {
        let t = tempfile::tempdir().unwrap();
        let small = t.path().join("small");
        fs::write(&small, b"some content").unwrap();
        assert_eq!(
            hash_file(&small).unwrap().0,
            *blake3::hash(b"some content").as_bytes()
        );
        // Larger than any internal buffer, not a multiple of it.
        let big: Vec<u8> = (0..3_000_017u32).map(|i| (i * 31 % 251) as u8).collect();
        let bigp = t.path().join("big");
        fs::write(&bigp, &big).unwrap();
        assert_eq!(hash_file(&bigp).unwrap(), hash_bytes(&big));
        let empty = t.path().join("empty");
        fs::write(&empty, b"").unwrap();
        assert_eq!(hash_file(&empty).unwrap(), hash_bytes(b""));
        assert_eq!(
            hash_file(&t.path().join("nope")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn tree_digest_is_stable_and_location_independent() {
        let a = sample_tree();
        let b = sample_tree();
        let da = hash_tree(a.path()).unwrap();
        assert_eq!(da, hash_tree(a.path()).unwrap());
        assert_eq!(da, hash_tree(b.path()).unwrap());
        assert_eq!(hash_path(a.path()).unwrap(), da);
        // Domain separation: not the content hash of any obvious thing.
        assert_ne!(da, hash_bytes(b""));
    }

    #[test]
    fn empty_dir_has_well_defined_digest() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let d = hash_tree(a.path()).unwrap();
        assert_eq!(d, hash_tree(b.path()).unwrap());
        assert_eq!(
            d,
            blake3::Hasher::new_derive_key(TREE_CONTEXT)
                .finalize()
                .into()
        );
    }

    #[test]
    fn tree_digest_changes_on_content() {
        let t = sample_tree();
        let before = hash_tree(t.path()).unwrap();
        write(t.path(), "sub/deeper/c.txt", "GAMMA");
        assert_ne!(before, hash_tree(t.path()).unwrap());
    }

    #[test]
    fn tree_digest_changes_on_rename() {
        let t = sample_tree();
        let before = hash_tree(t.path()).unwrap();
        fs::rename(t.path().join("sub/b.txt"), t.path().join("sub/b2.txt")).unwrap();
        assert_ne!(before, hash_tree(t.path()).unwrap());
        fs::rename(t.path().join("sub/b2.txt"), t.path().join("sub/b.txt")).unwrap();
        assert_eq!(before, hash_tree(t.path()).unwrap());
    }

    #[test]
    fn tree_digest_changes_on_exec_bit() {
        let t = sample_tree();
        let before = hash_tree(t.path()).unwrap();
        let p = t.path().join("a.txt");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        let exec = hash_tree(t.path()).unwrap();
        assert_ne!(before, exec);
        // Only the exec bit matters, not the rest of the mode.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(before, hash_tree(t.path()).unwrap());
    }

    #[test]
    fn tree_digest_changes_on_new_empty_dir() {
        let t = sample_tree();
        let before = hash_tree(t.path()).unwrap();
        fs::create_dir(t.path().join("sub/empty")).unwrap();
        assert_ne!(before, hash_tree(t.path()).unwrap());
    }

    #[test]
    fn tree_distinguishes_kinds_and_moves() {
        // Same file content at different depth.
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "x/y", "v");
        let b = tempfile::tempdir().unwrap();
        write(b.path(), "x/y/z", "v");
        assert_ne!(hash_tree(a.path()).unwrap(), hash_tree(b.path()).unwrap());
        // Empty file vs empty dir of the same name.
        let c = tempfile::tempdir().unwrap();
        write(c.path(), "n", "");
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("n")).unwrap();
        assert_ne!(hash_tree(c.path()).unwrap(), hash_tree(d.path()).unwrap());
    }

    #[test]
    fn tree_records_symlinks_without_following() {
        let t = sample_tree();
        symlink("a.txt", t.path().join("link")).unwrap();
        let d1 = hash_tree(t.path()).unwrap();
        // Changing the target's content changes the digest only via a.txt itself; retargeting
        // the link to an identical file changes it through the link text.
        write(t.path(), "a2.txt", "alpha");
        let d2 = hash_tree(t.path()).unwrap();
        fs::remove_file(t.path().join("link")).unwrap();
        symlink("a2.txt", t.path().join("link")).unwrap();
        let d3 = hash_tree(t.path()).unwrap();
        assert_ne!(d1, d2);
        assert_ne!(d2, d3);
        // A symlink to a directory is recorded, not descended (no loop either).
        symlink(".", t.path().join("self")).unwrap();
        hash_tree(t.path()).unwrap();
        // A dangling symlink is fine too.
        symlink("missing", t.path().join("dangling")).unwrap();
        hash_tree(t.path()).unwrap();
    }

    #[test]
    fn hash_path_dispatches() {
        let t = sample_tree();
        let f = t.path().join("a.txt");
        assert_eq!(hash_path(&f).unwrap(), hash_bytes(b"alpha"));
        let sub = t.path().join("sub");
        assert_eq!(hash_path(&sub).unwrap(), hash_tree(&sub).unwrap());
        // Symlinks are followed for regular inputs.
        symlink(&f, t.path().join("lf")).unwrap();
        assert_eq!(
            hash_path(&t.path().join("lf")).unwrap(),
            hash_bytes(b"alpha")
        );
        symlink(&sub, t.path().join("ld")).unwrap();
        assert_eq!(
            hash_path(&t.path().join("ld")).unwrap(),
            hash_tree(&sub).unwrap()
        );
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // Opening it for reading would block until a writer came: it must not be opened.
        let e = hash_file(&fifo).unwrap_err();
        assert_eq!(as_special(&e).map(|s| s.kind), Some("FIFO"), "{e}");
        assert!(hash_path(&fifo).is_err());
        assert!(read_regular(&fifo).is_err());
        // A device behind a symlink: `/dev/zero` would never end.
        symlink("/dev/zero", t.path().join("zero")).unwrap();
        let e = hash_path(&t.path().join("zero")).unwrap_err();
        assert_eq!(
            as_special(&e).map(|s| s.kind),
            Some("character device"),
            "{e}"
        );
        assert!(e.to_string().contains("not a regular file or directory"));
        // Inside a directory tree, a FIFO is recorded by name, never opened.
        hash_tree(t.path()).unwrap();
    }

    #[test]
    fn read_regular_reads_whole_files() {
        let t = sample_tree();
        assert_eq!(read_regular(&t.path().join("a.txt")).unwrap(), b"alpha");
        let big: Vec<u8> = (0..(CHUNK * 2 + 7)).map(|i| (i % 251) as u8).collect();
        fs::write(t.path().join("big"), &big).unwrap();
        assert_eq!(read_regular(&t.path().join("big")).unwrap(), big);
        assert_eq!(hash_file(&t.path().join("big")).unwrap(), hash_bytes(&big));
    }

    #[test]
    fn hash_tree_rejects_non_directories() {
        let t = sample_tree();
        let e = hash_tree(&t.path().join("a.txt")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
        let e = hash_tree(&t.path().join("nope")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
