//! Run retention: at the end of a build, the newest `[orch] keep_runs` runs keep their
//! `.orch/runs/RUN_ID/` and `.orch/logs/RUN_ID/`; older ones are removed.
//!
//! Cheap by construction: each of the two directories is listed once (the entry types
//! come with the listing, so nothing is stat'ed), and run ids sort by time, so no file is
//! opened to order them. Only what orch made is touched: directories (never symlinks,
//! never followed) whose names have the form of a generated run id
//! (`YYYYMMDDTHHMMSSZ-` and 8 hex digits, maybe `.N`). A name given with `--run-id`
//! does not sort by time, so it is left to `orch gc`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::Layout;

/// What trimming removed, and what it could not.
#[derive(Debug, Default)]
pub struct Trimmed {
    /// Runs whose directories are gone, oldest first.
    pub removed: Vec<String>,
    /// Directories that could not be removed.
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// Removes the run and log directories of all but the newest `keep` runs, counting the
/// run `current`, which is never removed.
pub fn trim_runs(layout: &Layout, keep: usize, current: &str) -> Trimmed {
    // Sort key → (name, has a run directory, has a logs directory).
    let mut runs: BTreeMap<(String, u64, String), (String, bool, bool)> = BTreeMap::new();
    for (n, dir) in [layout.dir.join("runs"), layout.dir.join("logs")]
        .iter()
        .enumerate()
    {
        for name in run_dirs(dir) {
            let Some(key) = sort_key(&name) else { continue };
            let entry = runs.entry(key).or_insert_with(|| (name, false, false));
            if n == 0 {
                entry.1 = true;
            } else {
                entry.2 = true;
            }
        }
    }
    // The current run is always kept, even when a clock set back makes it sort oldest.
    let others: Vec<(String, bool, bool)> = runs
        .into_values()
        .filter(|(name, _, _)| name != current)
        .collect();
    let excess = others.len().saturating_sub(keep.max(1) - 1);
    let mut out = Trimmed::default();
    for (name, in_runs, in_logs) in others.into_iter().take(excess) {
        let mut gone = true;
        for (present, dir) in [
            (in_runs, layout.run_dir(&name)),
            (in_logs, layout.log_dir(&name)),
        ] {
            if present && let Err(e) = std::fs::remove_dir_all(&dir) {
                gone = false;
                out.errors.push((dir, e));
            }
        }
        if gone {
            out.removed.push(name);
        }
    }
    out
}

/// Names of the real directories (not symlinks) in `dir`; none when it does not exist.
fn run_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        // `DirEntry::file_type` does not follow symlinks.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// How a generated run id sorts by time: its time stamp, then its `.N` suffix (none is
/// 1), then its digest; None for any other name.
fn sort_key(name: &str) -> Option<(String, u64, String)> {
    let (base, suffix) = match name.split_once('.') {
        Some((base, n)) => {
            let n: u64 = n.parse().ok().filter(|n| *n >= 2)?;
            // `.02` is not a suffix orch writes.
            if n.to_string() != name[base.len() + 1..] {
                return None;
            }
            (base, n)
        }
        None => (name, 1),
    };
    let (stamp, digest) = base.split_once('-')?;
    let stamp_ok = stamp.len() == 16
        && stamp.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    let digest_ok = digest.len() == 8
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (stamp_ok && digest_ok).then(|| (stamp.to_owned(), suffix, digest.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generated_run_ids_have_a_sort_key() {
        assert!(sort_key("20260101T120000Z-0123abcd").is_some());
        assert!(sort_key("20260101T120000Z-0123abcd.2").is_some());
        assert!(sort_key("20260101T120000Z-0123abcd.12").is_some());
        for name in [
            "mine",
            "20260101T120000Z-0123abcd.1",
            "20260101T120000Z-0123abcd.02",
            "20260101T120000Z-0123abcd.x",
            "20260101T120000Z-0123ABCD",
            "20260101T120000Z-0123abc",
            "20260101X120000Z-0123abcd",
            "2026010aT120000Z-0123abcd",
            "20260101T120000Z0123abcd",
            ".20260101T120000Z-0123abcd",
        ] {
            assert_eq!(sort_key(name), None, "{name}");
        }
    }

    #[test]
    fn run_ids_sort_by_time_then_suffix() {
        let mut names = [
            "20260102T000000Z-00000000",
            "20260101T120000Z-ffffffff.10",
            "20260101T120000Z-ffffffff.9",
            "20260101T120000Z-ffffffff",
            "20251231T235959Z-aaaaaaaa",
        ];
        names.sort_by_key(|n| sort_key(n));
        assert_eq!(
            names,
            [
                "20251231T235959Z-aaaaaaaa",
                "20260101T120000Z-ffffffff",
                "20260101T120000Z-ffffffff.9",
                "20260101T120000Z-ffffffff.10",
                "20260102T000000Z-00000000",
            ]
        );
    }

    #[test]
    fn keeps_the_newest_and_what_orch_did_not_make() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        let ids: Vec<String> = (0..5)
            .map(|n| format!("2026010{}T000000Z-0000000{n}", n + 1))
            .collect();
        for id in &ids {
            std::fs::create_dir_all(layout.run_dir(id))?;
            std::fs::write(layout.events(id), "{}\n")?;
        }
        // Logs only where something ran; one of them belongs to no run directory.
        std::fs::create_dir_all(layout.log_dir(&ids[0]))?;
        std::fs::create_dir_all(layout.log_dir(&ids[4]))?;
        std::fs::create_dir_all(layout.dir.join("runs/mine"))?;
        let t = trim_runs(&layout, 2, &ids[4]);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert_eq!(t.removed, ids[..3]);
        for id in &ids[..3] {
            assert!(!layout.run_dir(id).exists(), "{id}");
            assert!(!layout.log_dir(id).exists(), "{id}");
        }
        for id in &ids[3..] {
            assert!(layout.run_dir(id).is_dir(), "{id}");
        }
        assert!(layout.log_dir(&ids[4]).is_dir());
        assert!(layout.dir.join("runs/mine").is_dir());
        // Within the limit: nothing to do.
        assert!(trim_runs(&layout, 2, &ids[4]).removed.is_empty());
        Ok(())
    }

    #[test]
    fn never_removes_the_current_run() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        // A clock set back: the current run sorts oldest.
        let (old, current) = ("20260105T000000Z-00000000", "20250101T000000Z-00000001");
        for id in [old, current] {
            std::fs::create_dir_all(layout.run_dir(id))?;
        }
        let t = trim_runs(&layout, 1, current);
        assert_eq!(t.removed, [old]);
        assert!(layout.run_dir(current).is_dir());
        Ok(())
    }
}
