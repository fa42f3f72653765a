//! `.orch/fresh.bin`: a compact record of the last state in which every instance of the
//! project was up to date, so the next no-op `orch build` can tell by stats alone that
//! nothing changed, without loading the project, walking inputs, reading results or
//! planning.
//!
//! A build writes it only when it found every instance up to date before it started (no
//! targets, nothing forced) and recorded nothing meanwhile. It holds everything that
//! verdict rested on:
//!
//! - the orch version, the project root, and the configuration files (the Orchfile
//!   first) with the digests of their text and the `include` patterns, checked as
//!   `.orch/project.cache` is: the patterns must expand to the same fragments;
//! - every file whose digest decided the plan (inputs, schemas, recorded outputs,
//!   discovered inputs), with the stat its digest was computed from (size, mtime, ctime,
//!   inode, kind), or that it was missing;
//! - every directory the input walk listed, with its `lstat`: a file added to or removed
//!   from a glob's directory moves that directory's mtime;
//! - the `lstat` kind and inode of every directory above a declared path, so a directory
//!   swapped for a symlink (even to an identical copy) does not pass;
//! - the keyed digests of inherited variables and the stat of `.orch/key`;
//! - the generation of the state store ([`Generation`]): any write to the results, by
//!   any writer, makes the record stale;
//! - what a no-op build writes: the counts, `[orch] jobs` and `keep_runs`, and the plan
//!   digest with and without `--keep-going`.
//!
//! The racy-timestamp rule of the digest cache applies: a stat too recent to vouch for
//! what was read under it (a file hashed, a directory listed, within
//! [`RACY_WINDOW_NS`] of its last change) means no record is written; the next no-op
//! writes one.
//!
//! `orch plan` and `orch status` do not use it: they print every instance, which the
//! record does not hold. Projects with directory inputs or outputs get no record (a
//! tree's digest is not vouched for by one stat), nor do builds that warned about a
//! special file among the matches.
//!
//! Format: `orchfrsh`, a little-endian `u32` format number, a postcard [`Record`], and
//! the BLAKE3 hash of everything before it. The file is untrusted input (DESIGN §4):
//! read at most [`MAX_BYTES`], every path checked to be a plain relative path before it
//! is looked at, and anything unexpected only means "take the ordinary path". Deleting
//! it is always safe.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fs::{self, Digest, FileStat, RACY_WINDOW_NS};
use crate::model::Project;
use crate::model::path::is_plain;
use crate::snapshot::{Snapshot, value_digest};
use crate::store::{Generation, Layout};

/// Leading bytes of the file.
const MAGIC: &[u8; 8] = b"orchfrsh";

/// Bumped whenever [`Record`] changes shape or what it must cover grows.
const FORMAT: u32 = 1;

/// What the file's header carries: its own format and the key and manifest formats its
/// verdict was reached under, so an orch that keys or records differently (same version
/// number, another build) never takes an older verdict for its own.
const STAMP: u32 =
    (FORMAT << 16) | (crate::plan::key::KEY_FORMAT << 8) | crate::plan::key::MANIFEST_FORMAT;

/// The largest record read: about 100 bytes per file, so room for millions of inputs.
pub const MAX_BYTES: u64 = 512 << 20;

/// Where the record lives for a project whose state directory is `orch_dir`.
pub fn path(orch_dir: &Path) -> PathBuf {
    orch_dir.join("fresh.bin")
}

/// Removes the record: called by every command that may change what is up to date,
/// before it does (a missing file is fine; another failure leaves it to the generation
/// check, which any change to the results fails anyway).
pub fn forget(orch_dir: &Path) {
    let _ = std::fs::remove_file(path(orch_dir));
}

/// A stat as the record keeps it: the fields the digest cache trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: i64,
    ino: u64,
    ctime_ns: i64,
    dir: bool,
}

impl From<FileStat> for Stamp {
    fn from(s: FileStat) -> Stamp {
        Stamp {
            size: s.size,
            mtime_ns: s.mtime_ns,
            ino: s.ino,
            ctime_ns: s.ctime_ns,
            dir: s.is_dir,
        }
    }
}

impl Stamp {
    /// Whether a change made after `since` minus the racy window could share this
    /// stat's timestamps.
    fn racy(&self, since: i64) -> bool {
        since.saturating_sub(self.mtime_ns.max(self.ctime_ns)) <= RACY_WINDOW_NS
    }
}

/// What `lstat` found at a directory above a declared path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Above {
    /// Nothing there.
    Absent,
    /// A directory with this inode.
    Dir(u64),
    /// A symlink (one staying inside the project) with this inode.
    Link(u64),
    /// Something else (a file where a directory is named).
    Other(u64),
}

/// The record, borrowing its strings from the bytes read.
#[derive(Debug, Serialize, Deserialize)]
struct Record<'a> {
    version: &'a str,
    root: &'a [u8],
    generation: Generation,
    /// Absolute path and digest of each configuration file, the Orchfile first.
    configs: Vec<(&'a [u8], [u8; 32])>,
    includes: Vec<&'a str>,
    /// Project-relative files and the stat their digest came from (None: missing).
    files: Vec<(&'a str, Option<Stamp>)>,
    /// Directories the input walk listed ("" is the root), with their `lstat`.
    listed: Vec<(&'a str, Stamp)>,
    /// Directories above declared paths.
    above: Vec<(&'a str, Above)>,
    /// Inherited variables and the keyed digests of their values (None: unset).
    env: Vec<(&'a str, Option<[u8; 32]>)>,
    key: Stamp,
    total: u64,
    unlisted: u64,
    jobs: Option<u64>,
    keep_runs: u64,
    /// The plan digest without and with `--keep-going`.
    plan_digests: [[u8; 32]; 2],
}

/// What a no-op build that trusts the record writes and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Noop {
    /// The state store generation the record was made at.
    pub generation: Generation,
    /// Selected instances (all of them).
    pub total: usize,
    /// Those skipped without an event (all of them).
    pub unlisted: usize,
    /// `[orch] jobs`.
    pub jobs: Option<usize>,
    /// `[orch] keep_runs`.
    pub keep_runs: usize,
    plan_digests: [Digest; 2],
}

impl Noop {
    /// The plan digest a full build would compute with this `--keep-going`.
    pub fn plan_digest(&self, keep_going: bool) -> Digest {
        self.plan_digests[usize::from(keep_going)]
    }
}

/// Reads the record of the project whose Orchfile is `orchfile` (absolute) and checks
/// it against the disk; Some only when everything it lists is as recorded. The store's
/// generation is left to the caller, who must compare it under the build lock.
pub fn check(orchfile: &Path) -> Option<Noop> {
    let root = orchfile.parent()?;
    let bytes = read_bounded(&path(&Layout::new(root).dir))?;
    let r = decode(&bytes)?;
    if r.version != env!("CARGO_PKG_VERSION") || r.root != root.as_os_str().as_bytes() {
        return None;
    }
    let all_plain = r.files.iter().map(|(p, _)| *p).all(relative)
        && r.listed
            .iter()
            .map(|(p, _)| *p)
            .all(|p| p.is_empty() || relative(p))
        && r.above.iter().map(|(p, _)| *p).all(relative);
    if !all_plain || !configs_hold(root, orchfile, &r) || !env_holds(root, &r) {
        return None;
    }
    let dir = RootDir::open(root)?;
    let above = r.above.par_iter().all(|(p, was)| dir.above(p) == *was);
    let listed = above
        && r.listed.par_iter().all(|(p, was)| {
            let now = if p.is_empty() {
                lstat(root)
            } else {
                dir.stat(p, false).ok().flatten()
            };
            now == Some(*was)
        });
    let files = listed
        && r.files
            .par_iter()
            .all(|(p, was)| dir.stat(p, true).is_ok_and(|now| now == *was));
    if !files {
        return None;
    }
    Some(Noop {
        generation: r.generation,
        total: usize::try_from(r.total).ok()?,
        unlisted: usize::try_from(r.unlisted).ok()?,
        jobs: match r.jobs {
            Some(j) => Some(usize::try_from(j).ok()?),
            None => None,
        },
        keep_runs: usize::try_from(r.keep_runs).ok()?,
        plan_digests: r.plan_digests.map(Digest),
    })
}

/// Writes the record of a build that found every instance of `snap` up to date and
/// changed no result; `generation` is the store's, unchanged since before the snapshot.
/// Returns false when a stat is too recent to vouch for what was read (nothing written).
pub fn write(
    snap: &Snapshot<'_>,
    generation: Generation,
    plan_digests: [Digest; 2],
) -> std::io::Result<bool> {
    let project = snap.project;
    let layout = Layout::new(&project.root);
    let dirs = dirs_above(project, snap.digests.keys().map(String::as_str));
    let Some(record) = gather(snap, &dirs, generation, plan_digests) else {
        return Ok(false);
    };
    let bytes = encode(&record).map_err(std::io::Error::other)?;
    let mut tmp = tempfile::NamedTempFile::new_in(&layout.dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(path(&layout.dir)).map_err(|e| e.error)?;
    Ok(true)
}

/// The record for `snap`, or None when something it would vouch for is not certain.
fn gather<'s>(
    snap: &'s Snapshot<'_>,
    dirs: &'s [String],
    generation: Generation,
    plan_digests: [Digest; 2],
) -> Option<Record<'s>> {
    let project: &'s Project = snap.project;
    let walked = &snap.walked;
    if !snap.values_known() || walked.special {
        return None;
    }
    // A directory changed after the walk began may have been listed before the change.
    let mut listed = Vec::with_capacity(walked.listed.len());
    for (p, st) in &walked.listed {
        let st = Stamp::from((*st)?);
        if st.racy(walked.at_ns) || !(p.is_empty() || relative(p)) {
            return None;
        }
        listed.push((p.as_str(), st));
    }
    let mut names: Vec<&str> = snap.digests.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut files = Vec::with_capacity(names.len());
    for p in names {
        if !relative(p) {
            return None;
        }
        let stamp = match snap.digest(p) {
            None => None,
            // A tree's digest is not vouched for by its own stat; a file's is, unless
            // it changed too close to when it was hashed.
            Some(_) => match snap.hashed_from(p) {
                Some(c) if !c.stat.is_dir && c.is_valid_for(&c.stat) => Some(Stamp::from(c.stat)),
                _ => return None,
            },
        };
        files.push((p, stamp));
    }
    let above: Vec<(&str, Above)> = dirs
        .par_iter()
        .map(|d| {
            let full = project.root.join(d);
            // Taken now, after the snapshot: its parent must not have changed since the
            // snapshot began, or the swap could have happened in between.
            let st = std::fs::symlink_metadata(&full)
                .ok()
                .map(|m| Stamp::from(FileStat::from_metadata(&m)));
            (st.is_some_and(|s| s.racy(walked.at_ns)), above(&full))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .zip(dirs)
        .map(|((racy, a), d)| (!racy).then_some((d.as_str(), a)))
        .collect::<Option<_>>()?;
    let root_st = lstat(&project.root)?;
    if root_st.racy(walked.at_ns) {
        return None;
    }
    let key = lstat(&Layout::new(&project.root).value_key())?;
    if key.racy(walked.at_ns) {
        return None;
    }
    let configs = project
        .sources
        .files()
        .iter()
        .map(|f| {
            (
                f.path.as_os_str().as_bytes(),
                fs::hash_bytes(f.text.as_bytes()).0,
            )
        })
        .collect();
    let total = snap.order.len() as u64;
    Some(Record {
        version: env!("CARGO_PKG_VERSION"),
        root: project.root.as_os_str().as_bytes(),
        generation,
        configs,
        includes: project.includes.iter().map(String::as_str).collect(),
        files,
        listed,
        above,
        env: snap
            .inherited_env()
            .iter()
            .map(|(k, v)| (k.as_str(), v.map(|d| d.0)))
            .collect(),
        key,
        total,
        unlisted: total,
        jobs: project.jobs.map(|j| j as u64),
        keep_runs: project.keep_runs as u64,
        plan_digests: plan_digests.map(|d| d.0),
    })
}

/// Every directory above a path the project declares or the plan read (inputs, glob
/// prefixes, outputs, schemas, working directories), sorted; the root itself is not
/// among them (it is checked apart).
fn dirs_above<'a>(project: &Project, files: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    let mut add = |p: &str, itself: bool| {
        let mut p = p.trim_end_matches('/');
        if itself && !p.is_empty() {
            out.insert(p.to_owned());
        }
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !out.insert(parent.to_owned()) {
                break;
            }
            p = parent;
        }
    };
    for f in files {
        add(f, false);
    }
    let literal = |p: &str| -> String {
        p.split('/')
            .take_while(|c| is_plain(c))
            .collect::<Vec<_>>()
            .join("/")
    };
    for inst in &project.instances {
        for o in &inst.outputs {
            add(&o.path, o.dir);
            if let Some(s) = &o.schema {
                add(s, false);
            }
        }
        for o in &inst.shard_outputs {
            add(&literal(&o.path), true);
        }
        for p in &inst.inputs {
            if is_plain(p) {
                add(p, false);
            } else {
                add(&literal(p), true);
            }
        }
        add(&inst.cwd, true);
    }
    out.into_iter().filter(|d| relative(d)).collect()
}

/// Whether the configuration files and include patterns are as recorded: the same
/// Orchfile, the patterns expanding to the same fragments, every text the same.
fn configs_hold(root: &Path, orchfile: &Path, r: &Record<'_>) -> bool {
    let includes: Vec<String> = r.includes.iter().map(|s| (*s).to_owned()).collect();
    let recorded = r.configs.iter().map(|(path, digest)| {
        (
            Path::new(std::ffi::OsStr::from_bytes(path)),
            Digest(*digest),
        )
    });
    crate::model::cache::configs_unchanged(root, orchfile, &includes, recorded).is_some()
}

/// Whether `.orch/key` is the one recorded and every inherited variable has the value
/// recorded (compared as keyed digests, as keys are).
fn env_holds(root: &Path, r: &Record<'_>) -> bool {
    let layout = Layout::new(root);
    if lstat(&layout.value_key()) != Some(r.key) {
        return false;
    }
    let Some(key) = layout.read_value_key() else {
        return false;
    };
    r.env.iter().all(|(name, was)| {
        // Names come from the record: one no environment can hold matches nothing.
        if name.is_empty() || name.contains(['=', '\0']) {
            return false;
        }
        let now =
            crate::snapshot::env::var_os(name).map(|v| value_digest(&key, v.as_encoded_bytes()).0);
        now == *was
    })
}

/// `lstat` of `path`, None when it cannot be taken.
fn lstat(path: &Path) -> Option<Stamp> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| Stamp::from(FileStat::from_metadata(&m)))
}

/// The project root held open, so each path is looked up from it: a lookup then walks
/// only the path's own components, not the root's again (as ninja's relative paths do),
/// which is most of the kernel's work for 20,000 stats.
struct RootDir(std::fs::File);

impl RootDir {
    /// Opens `root`.
    fn open(root: &Path) -> Option<RootDir> {
        std::fs::File::open(root).ok().map(RootDir)
    }

    /// `fstatat` of `rel` (a [`relative`] path) from the root; `Ok(None)` when nothing
    /// is there.
    fn raw(&self, rel: &str, follow: bool) -> std::io::Result<Option<libc::stat>> {
        use std::os::fd::AsRawFd as _;
        let c = std::ffi::CString::new(rel)?;
        let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: the descriptor stays open for `self`'s lifetime, `c` is NUL-terminated,
        // and `st` is read only after the call succeeded, which filled it.
        let r = unsafe { libc::fstatat(self.0.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), flags) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return if fs::stat::is_absent(&e) {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: see above.
        Ok(Some(unsafe { st.assume_init() }))
    }

    /// The stat of `rel`, following a final symlink when `follow`.
    fn stat(&self, rel: &str, follow: bool) -> std::io::Result<Option<Stamp>> {
        // The same fields and arithmetic as `FileStat::from_metadata`.
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Ok(self.raw(rel, follow)?.map(|st| Stamp {
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
            ino: st.st_ino,
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
            dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        }))
    }

    /// What is at `rel`, without following a final symlink.
    fn above(&self, rel: &str) -> Above {
        match self.raw(rel, false) {
            Ok(Some(st)) => match st.st_mode & libc::S_IFMT {
                libc::S_IFLNK => Above::Link(st.st_ino),
                libc::S_IFDIR => Above::Dir(st.st_ino),
                _ => Above::Other(st.st_ino),
            },
            _ => Above::Absent,
        }
    }
}

/// What is at `path`, without following a final symlink.
fn above(path: &Path) -> Above {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Above::Link(m.ino()),
        Ok(m) if m.is_dir() => Above::Dir(m.ino()),
        Ok(m) => Above::Other(m.ino()),
        Err(_) => Above::Absent,
    }
}

/// A plain project-relative path: no empty, `.` or `..` component, not absolute.
fn relative(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The file's bytes, None when missing, not a regular file, or larger than [`MAX_BYTES`].
fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let file = fs::digest::open_regular(path).ok()?;
    let size = file.metadata().map_or(0, |m| m.len()).min(MAX_BYTES + 1);
    let mut bytes = Vec::with_capacity(usize::try_from(size).ok()?);
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= MAX_BYTES).then_some(bytes)
}

/// The file's bytes for `r`.
fn encode(r: &Record<'_>) -> Result<Vec<u8>, postcard::Error> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&STAMP.to_le_bytes());
    out = postcard::to_extend(r, out)?;
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    Ok(out)
}

/// The record in `bytes`, None unless the magic, format and checksum are right and the
/// payload decodes exactly.
fn decode(bytes: &[u8]) -> Option<Record<'_>> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let rest = body.strip_prefix(MAGIC)?;
    let (format, payload) = rest.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*format) != STAMP {
        return None;
    }
    match postcard::take_from_bytes::<Record<'_>>(payload) {
        Ok((r, [])) => Some(r),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(n: i64) -> Stamp {
        Stamp {
            size: 3,
            mtime_ns: n,
            ino: 7,
            ctime_ns: n,
            dir: false,
        }
    }

    fn record() -> Record<'static> {
        Record {
            version: "0.1.0",
            root: b"/p",
            generation: Generation { id: [1; 16], n: 4 },
            configs: vec![(b"/p/Orchfile.toml", [2; 32])],
            includes: vec!["pipelines/*.toml"],
            files: vec![("a/b.txt", Some(stamp(5))), ("gone", None)],
            listed: vec![("", stamp(6)), ("a", stamp(7))],
            above: vec![("a", Above::Dir(9))],
            env: vec![("LANG", Some([3; 32])), ("UNSET", None)],
            key: stamp(8),
            total: 2,
            unlisted: 2,
            jobs: Some(4),
            keep_runs: 10,
            plan_digests: [[4; 32], [5; 32]],
        }
    }

    #[test]
    fn a_record_round_trips() {
        let bytes = encode(&record()).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{:?}", record()));
    }

    #[test]
    fn any_damage_is_refused_never_a_panic() {
        let bytes = encode(&record()).unwrap();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_none(), "truncated to {len}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            assert!(decode(&flipped).is_none(), "byte {at} flipped");
        }
        // A payload that hashes right but does not decode (hostile, not damaged).
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&STAMP.to_le_bytes());
        forged.extend_from_slice(&[0xff; 40]);
        let sum = *blake3::hash(&forged).as_bytes();
        forged.extend_from_slice(&sum);
        assert!(decode(&forged).is_none());
        // Another format number, or another key format.
        for stamp in [STAMP + (1 << 16), STAMP + (1 << 8), STAMP + 1] {
            let mut other = MAGIC.to_vec();
            other.extend_from_slice(&stamp.to_le_bytes());
            other = postcard::to_extend(&record(), other).unwrap();
            let sum = *blake3::hash(&other).as_bytes();
            other.extend_from_slice(&sum);
            assert!(decode(&other).is_none());
        }
    }

    #[test]
    fn stats_from_the_root_equal_those_of_the_digest_cache() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), b"abc").unwrap();
        std::os::unix::fs::symlink("d/f", t.path().join("link")).unwrap();
        let dir = RootDir::open(t.path()).unwrap();
        for p in ["d", "d/f", "link", "missing", "d/f/under"] {
            let std = fs::stat_path(&t.path().join(p)).unwrap().map(Stamp::from);
            assert_eq!(dir.stat(p, true).unwrap(), std, "{p}");
            assert_eq!(dir.above(p), above(&t.path().join(p)), "{p}");
        }
        assert_eq!(
            dir.stat("link", false).unwrap(),
            lstat(&t.path().join("link"))
        );
        assert!(matches!(dir.above("link"), Above::Link(_)));
        assert!(matches!(dir.above("d"), Above::Dir(_)));
    }

    #[test]
    fn only_plain_relative_paths_pass() {
        for p in ["a", "a/b", "a.b/c-d"] {
            assert!(relative(p), "{p}");
        }
        for p in ["", "/a", "a//b", "./a", "a/..", "../a", "a/", "a\0b"] {
            assert!(!relative(p), "{p:?}");
        }
    }

    #[test]
    fn recent_stats_are_racy() {
        let s = stamp(1_000 * 1_000_000_000);
        assert!(s.racy(s.mtime_ns));
        assert!(s.racy(s.mtime_ns + RACY_WINDOW_NS));
        assert!(!s.racy(s.mtime_ns + RACY_WINDOW_NS + 1));
        // A restored mtime does not hide a recent ctime.
        let restored = Stamp { mtime_ns: 0, ..s };
        assert!(restored.racy(s.ctime_ns + 1));
    }
}
