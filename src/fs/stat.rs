//! Stat snapshots, the digest cache's racy-timestamp rule, and parallel digesting of many paths.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use super::digest::{Digest, hash_path};

/// The stat fields that decide whether a cached digest may be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time in ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Inode number; catches replace-by-rename that preserves size and mtime.
    pub ino: u64,
    /// Status-change time in ns since the Unix epoch; as in git's index, it catches an
    /// in-place rewrite whose mtime was put back (`cp -p`, `touch -r`, sync tools), since
    /// no unprivileged call can set it.
    pub ctime_ns: i64,
    /// Whether the path is a directory.
    pub is_dir: bool,
}

impl FileStat {
    /// Snapshot of the cache-relevant fields of `meta`.
    pub fn from_metadata(meta: &fs::Metadata) -> FileStat {
        FileStat {
            size: meta.size(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            ino: meta.ino(),
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
            is_dir: meta.is_dir(),
        }
    }
}

/// True for errors meaning "nothing is at this path" rather than "could not look".
pub(crate) fn is_absent(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Stat following symlinks; `Ok(None)` when the path does not exist.
pub fn stat_path(path: &Path) -> io::Result<Option<FileStat>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(FileStat::from_metadata(&meta))),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Current wall-clock time in ns since the Unix epoch.
pub fn now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        // A clock before 1970 is nonsense but must not panic.
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// Entries whose file mtime or ctime is within this window of the moment they were hashed
/// are "racy": the file may have been changed again within the same timestamp tick, so the
/// digest must be recomputed. 2 seconds (coarse filesystems).
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// A digest remembered for a path together with the stat it was computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedDigest {
    /// The stat taken just before hashing.
    pub stat: FileStat,
    /// The digest computed for that content.
    pub digest: Digest,
    /// Wall-clock time (ns since the epoch) taken before hashing began.
    pub hashed_at_ns: i64,
}

impl CachedDigest {
    /// True when `current` equals the recorded stat exactly and the entry is not racy.
    pub fn is_valid_for(&self, current: &FileStat) -> bool {
        // A directory's mtime does not change when a nested file is edited.
        if self.stat.is_dir || current.is_dir {
            return false;
        }
        // ctime counts too: a rewrite with its mtime put back within the same ctime tick as
        // the hash would otherwise leave every field equal.
        let changed_ns = self.stat.mtime_ns.max(self.stat.ctime_ns);
        *current == self.stat && self.hashed_at_ns.saturating_sub(changed_ns) > RACY_WINDOW_NS
    }
}

/// Result of digesting one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathDigest {
    /// The path does not exist.
    Missing,
    /// The digest, and Some(new cache entry) when it had to be (re)hashed (None when the cached
    /// entry was reused).
    Present {
        /// The stat observed now.
        stat: FileStat,
        /// The content digest.
        digest: Digest,
        /// The entry to store in the cache, when the digest was recomputed.
        refreshed: Option<CachedDigest>,
    },
}

/// Digests many project-relative paths in parallel, reusing valid cache entries; output order
/// matches `paths`, and one path's I/O error does not abort the others.
pub fn digest_paths<F>(
    root: &Path,
    paths: &[String],
    cache: F,
) -> Vec<Result<PathDigest, io::Error>>
where
    F: Fn(&str) -> Option<CachedDigest> + Sync,
{
    // Errors are returned as-is: the result at index i belongs to paths[i], and callers
    // attach the path themselves (wrapping here would name it twice).
    paths
        .par_iter()
        .map(|rel| digest_one(root, rel, &cache))
        .collect()
}

/// Stats many project-relative paths in parallel (following symlinks, as digesting
/// does); output order matches `paths`. Taking the stats apart from the digest pass lets
/// them run while the digest cache is still being read.
pub fn stat_paths(root: &Path, paths: &[String]) -> Vec<io::Result<Option<FileStat>>> {
    paths
        .par_iter()
        .map(|rel| stat_path(&root.join(rel)))
        .collect()
}

/// Digests many paths whose stats were taken by [`stat_paths`], reusing valid cache
/// entries: only a path whose stat does not vouch for its cached digest is read.
pub fn digest_statted<F>(
    root: &Path,
    paths: &[String],
    stats: Vec<io::Result<Option<FileStat>>>,
    cache: F,
) -> Vec<Result<PathDigest, io::Error>>
where
    F: Fn(&str) -> Option<CachedDigest> + Sync,
{
    paths
        .par_iter()
        .zip(stats)
        .map(|(rel, stat)| match stat? {
            None => Ok(PathDigest::Missing),
            Some(stat) => match cache(rel).filter(|c| c.is_valid_for(&stat)) {
                Some(cached) => Ok(PathDigest::Present {
                    stat,
                    digest: cached.digest,
                    refreshed: None,
                }),
                // Stat again right before hashing: the entry written must pair the
                // content with a stat taken just before it was read, however long ago
                // the first stat was.
                None => digest_one(root, rel, &cache),
            },
        })
        .collect()
}

fn digest_one<F>(root: &Path, rel: &str, cache: &F) -> io::Result<PathDigest>
where
    F: Fn(&str) -> Option<CachedDigest> + Sync,
{
    let full = root.join(rel);
    let Some(stat) = stat_path(&full)? else {
        return Ok(PathDigest::Missing);
    };
    if let Some(cached) = cache(rel).filter(|c| c.is_valid_for(&stat)) {
        return Ok(PathDigest::Present {
            stat,
            digest: cached.digest,
            refreshed: None,
        });
    }
    // Taken before reading: an edit landing during the hash then falls inside the racy window
    // (or changes the stat), so the entry can never vouch for content it did not see.
    let hashed_at_ns = now_ns();
    let digest = match hash_path(&full) {
        Ok(d) => d,
        // Deleted between stat and hash: report what is there now. If the path still exists,
        // something inside a tree vanished mid-walk, and that is a real error.
        Err(e) if is_absent(&e) && stat_path(&full)?.is_none() => {
            return Ok(PathDigest::Missing);
        }
        Err(e) => return Err(e),
    };
    Ok(PathDigest::Present {
        stat,
        digest,
        refreshed: Some(CachedDigest {
            stat,
            digest,
            hashed_at_ns,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::digest::{hash_bytes, hash_tree};

    const SEC: i64 = 1_000_000_000;

    fn st(size: u64, mtime_ns: i64, ino: u64) -> FileStat {
        FileStat {
            size,
            mtime_ns,
            ino,
            ctime_ns: mtime_ns,
            is_dir: false,
        }
    }

    fn entry(stat: FileStat, hashed_at_ns: i64) -> CachedDigest {
        CachedDigest {
            stat,
            digest: hash_bytes(b"x"),
            hashed_at_ns,
        }
    }

    #[test]
    fn racy_entries_are_invalid() {
        let s = st(10, 1_000 * SEC, 7);
        // Hashed in the same tick, or just inside the window.
        assert!(!entry(s, s.mtime_ns).is_valid_for(&s));
        assert!(!entry(s, s.mtime_ns + SEC).is_valid_for(&s));
        assert!(!entry(s, s.mtime_ns + RACY_WINDOW_NS).is_valid_for(&s));
        // mtime in the future relative to the hash (clock skew): racy.
        assert!(!entry(s, s.mtime_ns - 10 * SEC).is_valid_for(&s));
    }

    #[test]
    fn old_entries_are_valid() {
        let s = st(10, 1_000 * SEC, 7);
        assert!(entry(s, s.mtime_ns + RACY_WINDOW_NS + 1).is_valid_for(&s));
        assert!(entry(s, s.mtime_ns + 3_600 * SEC).is_valid_for(&s));
    }

    #[test]
    fn any_stat_change_invalidates() {
        let s = st(10, 1_000 * SEC, 7);
        let e = entry(s, s.mtime_ns + 60 * SEC);
        assert!(!e.is_valid_for(&st(11, s.mtime_ns, 7)));
        assert!(!e.is_valid_for(&st(10, s.mtime_ns + 1, 7)));
        assert!(!e.is_valid_for(&st(10, s.mtime_ns, 8)));
        // An in-place rewrite with its mtime put back changes only the ctime.
        assert!(!e.is_valid_for(&FileStat {
            ctime_ns: s.ctime_ns + 1,
            ..s
        }));
    }

    #[test]
    fn a_recent_ctime_is_racy() {
        // mtime long ago (restored), ctime just before the hash: not to be trusted.
        let s = FileStat {
            ctime_ns: 2_000 * SEC,
            ..st(10, 1_000 * SEC, 7)
        };
        assert!(!entry(s, s.ctime_ns + SEC).is_valid_for(&s));
        assert!(entry(s, s.ctime_ns + RACY_WINDOW_NS + 1).is_valid_for(&s));
    }

    #[test]
    fn directories_are_never_valid() {
        let d = FileStat {
            is_dir: true,
            ..st(4096, 1_000 * SEC, 7)
        };
        assert!(!entry(d, d.mtime_ns + 3_600 * SEC).is_valid_for(&d));
    }

    #[test]
    fn stat_path_reports_missing() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        fs::write(&f, b"12345").unwrap();
        let s = stat_path(&f).unwrap().unwrap();
        assert_eq!(s.size, 5);
        assert!(!s.is_dir);
        assert!(s.mtime_ns > 0);
        assert!(stat_path(t.path()).unwrap().unwrap().is_dir);
        assert_eq!(stat_path(&t.path().join("nope")).unwrap(), None);
        // A file used as a directory along the path.
        assert_eq!(stat_path(&f.join("under")).unwrap(), None);
    }

    #[test]
    fn now_ns_is_plausible() {
        let n = now_ns();
        // After 2020-01-01.
        assert!(n > 1_577_836_800 * SEC);
    }

    #[test]
    fn digest_paths_hashes_and_reports_missing() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("a"), b"aaa").unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("d/b"), b"bbb").unwrap();
        let paths: Vec<String> = ["a", "missing", "d", "d/b", "a/under"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let before = now_ns();
        let out = digest_paths(t.path(), &paths, |_| None);
        assert_eq!(out.len(), 5);
        let get = |i: usize| out[i].as_ref().unwrap().clone();
        match get(0) {
            PathDigest::Present {
                stat,
                digest,
                refreshed: Some(c),
            } => {
                assert_eq!(digest, hash_bytes(b"aaa"));
                assert_eq!(c.digest, digest);
                assert_eq!(c.stat, stat);
                assert!(c.hashed_at_ns >= before);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(get(1), PathDigest::Missing);
        match get(2) {
            PathDigest::Present { stat, digest, .. } => {
                assert!(stat.is_dir);
                assert_eq!(digest, hash_tree(&t.path().join("d")).unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
        match get(3) {
            PathDigest::Present { digest, .. } => assert_eq!(digest, hash_bytes(b"bbb")),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(get(4), PathDigest::Missing);
    }

    #[test]
    fn stats_taken_early_still_decide_like_a_fresh_pass() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("a"), b"aaa").unwrap();
        fs::write(t.path().join("b"), b"bbb").unwrap();
        let paths = ["a".to_string(), "b".to_string(), "gone".to_string()];
        let stats = stat_paths(t.path(), &paths);
        let a = *stats[0].as_ref().unwrap().as_ref().unwrap();
        let bogus = hash_bytes(b"not the content");
        // `a` has an entry its stat vouches for; `b` has none and is hashed.
        let cache = |p: &str| {
            (p == "a").then_some(CachedDigest {
                stat: a,
                digest: bogus,
                hashed_at_ns: a.mtime_ns + 10 * SEC,
            })
        };
        let out = digest_statted(t.path(), &paths, stats, cache);
        assert_eq!(
            out[0].as_ref().unwrap(),
            &PathDigest::Present {
                stat: a,
                digest: bogus,
                refreshed: None
            }
        );
        match out[1].as_ref().unwrap() {
            PathDigest::Present {
                digest, refreshed, ..
            } => {
                assert_eq!(*digest, hash_bytes(b"bbb"));
                assert!(refreshed.is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(out[2].as_ref().unwrap(), &PathDigest::Missing);
        // A file rewritten after its early stat is hashed from a new stat, so the entry
        // written never pairs the new content with the old stat.
        let stats = stat_paths(t.path(), &paths[1..2]);
        fs::write(t.path().join("b"), b"bbbb").unwrap();
        let out = digest_statted(t.path(), &paths[1..2], stats, |_| None);
        match out[0].as_ref().unwrap() {
            PathDigest::Present {
                digest,
                refreshed: Some(c),
                ..
            } => {
                assert_eq!(*digest, hash_bytes(b"bbbb"));
                assert_eq!(c.stat.size, 4);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn digest_paths_reuses_valid_cache() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("a"), b"aaa").unwrap();
        let stat = stat_path(&t.path().join("a")).unwrap().unwrap();
        let bogus = hash_bytes(b"not the content");
        let cache = |p: &str| {
            assert_eq!(p, "a");
            Some(CachedDigest {
                stat,
                digest: bogus,
                hashed_at_ns: stat.mtime_ns + 10 * SEC,
            })
        };
        let out = digest_paths(t.path(), &["a".to_string()], cache);
        assert_eq!(
            out[0].as_ref().unwrap(),
            &PathDigest::Present {
                stat,
                digest: bogus,
                refreshed: None
            }
        );
    }

    #[test]
    fn digest_paths_rehashes_on_stat_change_or_racy() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("a"), b"aaa").unwrap();
        let stat = stat_path(&t.path().join("a")).unwrap().unwrap();
        let bogus = hash_bytes(b"not the content");
        let real = hash_bytes(b"aaa");
        for recorded in [
            FileStat {
                size: stat.size + 1,
                ..stat
            },
            FileStat {
                mtime_ns: stat.mtime_ns - SEC,
                ..stat
            },
            FileStat {
                ino: stat.ino + 1,
                ..stat
            },
            FileStat {
                ctime_ns: stat.ctime_ns - SEC,
                ..stat
            },
        ] {
            let cache = |_: &str| {
                Some(CachedDigest {
                    stat: recorded,
                    digest: bogus,
                    hashed_at_ns: recorded.mtime_ns + 10 * SEC,
                })
            };
            match digest_paths(t.path(), &["a".to_string()], cache).remove(0) {
                Ok(PathDigest::Present {
                    digest,
                    refreshed: Some(c),
                    ..
                }) => {
                    assert_eq!(digest, real);
                    assert_eq!(c.stat, stat);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Matching stat but racy: rehashed too.
        let racy = |_: &str| {
            Some(CachedDigest {
                stat,
                digest: bogus,
                hashed_at_ns: stat.mtime_ns,
            })
        };
        match digest_paths(t.path(), &["a".to_string()], racy).remove(0) {
            Ok(PathDigest::Present {
                digest,
                refreshed: Some(_),
                ..
            }) => assert_eq!(digest, real),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn digest_paths_keeps_order_and_isolates_errors() {
        let t = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..200).map(|i| format!("f{i:03}")).collect();
        for n in &names {
            fs::write(t.path().join(n), n.as_bytes()).unwrap();
        }
        // A FIFO-free way to force a non-NotFound error: an unreadable file (skipped as root).
        let locked = t.path().join("locked");
        fs::write(&locked, b"secret").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        let unreadable = fs::read(&locked).is_err();
        let mut paths = names.clone();
        paths.insert(100, "locked".to_string());
        let out = digest_paths(t.path(), &paths, |_| None);
        assert_eq!(out.len(), paths.len());
        for (p, r) in paths.iter().zip(&out) {
            if p == "locked" {
                if unreadable {
                    let e = r.as_ref().unwrap_err();
                    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
                }
                continue;
            }
            match r {
                Ok(PathDigest::Present { digest, .. }) => {
                    assert_eq!(*digest, hash_bytes(p.as_bytes()))
                }
                other => panic!("{p}: unexpected {other:?}"),
            }
        }
    }
}
