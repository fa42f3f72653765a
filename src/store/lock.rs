//! The build lock: one orch build at a time per project, enforced with an OS file lock on `.orch/lock`.
//!
//! The lock is an advisory `flock`-style lock (std's `File::lock`), so it disappears
//! with the process even after a crash or `kill -9`: a stale lock file never blocks a
//! later build. The pid written into the file is informational only.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use super::StoreError;

/// An exclusive lock on .orch/lock held for the life of the value.
#[derive(Debug)]
pub struct BuildLock {
    file: File,
}

impl BuildLock {
    /// Takes the lock at `path`, calling `on_wait()` once before blocking if another process holds it.
    ///
    /// The directory holding `path` must exist (see [`super::Layout::ensure`]). After the
    /// lock is taken the holder's pid is written into the file.
    pub fn acquire(path: &Path, on_wait: impl FnOnce()) -> Result<BuildLock, StoreError> {
        let lock_err = |source| StoreError::Lock {
            path: path.to_path_buf(),
            source,
        };
        // No truncate on open: the current holder's pid must survive until we own the lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(lock_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(lock_err)?;
            }
            Err(TryLockError::Error(err)) => return Err(lock_err(err)),
        }
        write_pid(&mut file).map_err(lock_err)?;
        Ok(BuildLock { file })
    }

    /// The pid recorded in the lock file at `path`, if any (for "waiting for pid N" messages).
    pub fn holder_pid(path: &Path) -> Option<u32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
}

/// Replaces the file's content with this process's pid.
fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking explicitly keeps the release
        // tied to this value even if the descriptor were ever duplicated. Nothing useful can
        // be done about a failure here.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    #[test]
    fn uncontended_acquire_does_not_wait_and_writes_pid() -> Result<(), Box<dyn std::error::Error>>
    {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("lock");
        std::fs::write(
            &path,
            "999999999999\nstale garbage that is longer than a pid\n",
        )?;
        let mut waited = false;
        let lock = BuildLock::acquire(&path, || waited = true)?;
        assert!(!waited);
        assert_eq!(
            std::fs::read_to_string(&path)?,
            format!("{}\n", std::process::id())
        );
        assert_eq!(BuildLock::holder_pid(&path), Some(std::process::id()));
        drop(lock);
        // Re-acquirable after release.
        let _again = BuildLock::acquire(&path, || waited = true)?;
        assert!(!waited);
        Ok(())
    }

    #[test]
    fn second_acquire_waits_until_first_is_dropped() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let path = tmp.path().join("lock");
        let first = BuildLock::acquire(&path, || panic!("first acquire must not wait"))?;

        let released = Arc::new(AtomicBool::new(false));
        let (waiting_tx, waiting_rx) = mpsc::channel();
        let (acquired_tx, acquired_rx) = mpsc::channel();
        let second = {
            let path = path.clone();
            let released = Arc::clone(&released);
            std::thread::spawn(move || -> Result<(), StoreError> {
                let lock = BuildLock::acquire(&path, move || {
                    let _ = waiting_tx.send(());
                })?;
                // Only reachable once the first holder let go.
                let _ = acquired_tx.send(released.load(Ordering::SeqCst));
                drop(lock);
                Ok(())
            })
        };

        // Blocks until the second thread found the lock taken and called on_wait.
        waiting_rx.recv()?;
        assert!(matches!(
            acquired_rx.try_recv(),
            Err(mpsc::TryRecvError::Empty)
        ));
        released.store(true, Ordering::SeqCst);
        drop(first);

        assert!(
            acquired_rx.recv()?,
            "second acquired before the first was dropped"
        );
        match second.join() {
            Ok(result) => result?,
            Err(_) => panic!("second thread panicked"),
        }
        Ok(())
    }

    #[test]
    fn missing_directory_is_a_lock_error() {
        let result = BuildLock::acquire(Path::new("/nonexistent-orch-dir/lock"), || {});
        assert!(matches!(result, Err(StoreError::Lock { .. })));
    }
}
