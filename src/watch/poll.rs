//! The polling fallback, for when the OS watch limit is reached: every interval, list
//! each watched directory and compare every entry's size, modification time (to the
//! nanosecond), inode and type with the previous listing.
//!
//! notify's own `PollWatcher` is not used: it compares modification times in whole
//! seconds and ignores sizes, so an edit made within a second of the previous poll (a
//! save right after a build, say) would never be seen.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::{Change, ChangeKind, Msg};

/// What identifies one version of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dir: bool,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

type Listing = HashMap<OsString, Stamp>;

/// Polls a set of directories on a thread of its own until dropped.
pub(super) struct Poller {
    dirs: Arc<Mutex<HashMap<PathBuf, Listing>>>,
    stop: Arc<AtomicBool>,
}

impl Poller {
    /// Starts polling (nothing yet) every `interval`, sending changes to `tx`.
    pub(super) fn new(interval: Duration, tx: Sender<Msg>) -> Poller {
        let dirs: Arc<Mutex<HashMap<PathBuf, Listing>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (Arc::clone(&dirs), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut next = Instant::now() + interval;
            while !s.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                next = now + interval;
                let changes = poll_once(&d);
                if !changes.is_empty() && tx.send(Msg::Fs(changes)).is_err() {
                    break;
                }
            }
        });
        Poller { dirs, stop }
    }

    /// Starts watching `dir` (its entries as they are now are the baseline).
    pub(super) fn watch(&self, dir: &Path) {
        let listing = list(dir);
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.insert(dir.to_path_buf(), listing);
        }
    }

    /// Stops watching `dir`.
    pub(super) fn unwatch(&self, dir: &Path) {
        if let Ok(mut dirs) = self.dirs.lock() {
            dirs.remove(dir);
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Lists every watched directory once; returns what changed since the last listing.
fn poll_once(dirs: &Mutex<HashMap<PathBuf, Listing>>) -> Vec<Change> {
    // List without holding the lock, so adding a watch never waits for a whole poll.
    let paths: Vec<PathBuf> = match dirs.lock() {
        Ok(d) => d.keys().cloned().collect(),
        Err(_) => return Vec::new(),
    };
    let fresh: Vec<(PathBuf, Listing)> = paths
        .into_iter()
        .map(|p| {
            let l = list(&p);
            (p, l)
        })
        .collect();
    let mut changes = Vec::new();
    let Ok(mut dirs) = dirs.lock() else {
        return changes;
    };
    for (dir, new) in fresh {
        // Unwatched meanwhile: its changes no longer matter.
        let Some(old) = dirs.get_mut(&dir) else {
            continue;
        };
        diff(&dir, old, &new, &mut changes);
        *old = new;
    }
    changes
}

fn diff(dir: &Path, old: &Listing, new: &Listing, out: &mut Vec<Change>) {
    for (name, stamp) in new {
        let kind = match old.get(name) {
            None => ChangeKind::Created,
            Some(o) if o.dir != stamp.dir || o.ino != stamp.ino => ChangeKind::Created,
            // A directory's own times change with its entries, which are polled anyway.
            Some(o) if o != stamp && !stamp.dir => ChangeKind::Modified,
            Some(_) => continue,
        };
        out.push(Change {
            path: dir.join(name),
            kind,
        });
    }
    for name in old.keys() {
        if !new.contains_key(name) {
            out.push(Change {
                path: dir.join(name),
                kind: ChangeKind::Removed,
            });
        }
    }
}

/// The entries of `dir` (empty when it cannot be read).
fn list(dir: &Path) -> Listing {
    let mut out = Listing::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        // `DirEntry::metadata` does not follow symlinks, like the walk.
        if let Ok(m) = e.metadata() {
            out.insert(
                e.file_name(),
                Stamp {
                    dir: m.is_dir(),
                    len: m.len(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    ctime: (m.ctime(), m.ctime_nsec()),
                    ino: m.ino(),
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_within_one_second_are_seen() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), "1").unwrap();
        std::fs::write(t.path().join("b"), "1").unwrap();
        let dirs = Mutex::new(HashMap::new());
        dirs.lock()
            .unwrap()
            .insert(t.path().to_path_buf(), list(t.path()));
        assert!(poll_once(&dirs).is_empty());
        std::fs::write(t.path().join("a"), "22").unwrap();
        std::fs::remove_file(t.path().join("b")).unwrap();
        std::fs::write(t.path().join("c"), "").unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        let mut got: Vec<(String, ChangeKind)> = poll_once(&dirs)
            .into_iter()
            .map(|c| {
                let name = c.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, c.kind)
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                ("a".to_owned(), ChangeKind::Modified),
                ("b".to_owned(), ChangeKind::Removed),
                ("c".to_owned(), ChangeKind::Created),
                ("d".to_owned(), ChangeKind::Created),
            ]
        );
        assert!(poll_once(&dirs).is_empty());
    }
}
