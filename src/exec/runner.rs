//! Running one command: the [`Runner`] seam and the real implementation, `sh -c` in its own
//! process group with output captured to the instance's log file.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// One command to run.
#[derive(Clone, Debug)]
pub struct Job {
    /// Instance name (for messages).
    pub name: String,
    /// The shell command.
    pub command: String,
    /// Absolute working directory.
    pub cwd: PathBuf,
    /// Variables added to orch's own environment.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go.
    pub log: PathBuf,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exit status 0.
    Success,
    /// Non-zero exit status.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
    /// Could not start.
    Spawn(String),
}

/// Runs commands; the seam that lets the executor be tested without processes.
pub trait Runner: Send + Sync {
    /// Runs `job` to completion.
    fn run(&self, job: &Job) -> Exit;
    /// Asks every running command to stop (the whole process group).
    fn interrupt_all(&self);
}

/// Runs commands as real processes.
#[derive(Default)]
pub struct ProcessRunner {
    groups: Mutex<BTreeSet<i32>>,
}

/// How long a stopped command may take to exit before it is killed.
const GRACE: Duration = Duration::from_secs(3);

impl ProcessRunner {
    fn signal_all(&self, sig: i32) {
        let groups: Vec<i32> = self
            .groups
            .lock()
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default();
        for pgid in groups {
            // SAFETY: killpg has no memory-safety preconditions; a stale id fails with ESRCH.
            unsafe {
                libc::killpg(pgid, sig);
            }
        }
    }
}

impl Runner for ProcessRunner {
    fn run(&self, job: &Job) -> Exit {
        let log = match File::create(&job.log) {
            Ok(f) => f,
            Err(e) => {
                return Exit::Spawn(format!("cannot create log `{}`: {e}", job.log.display()));
            }
        };
        let err = match log.try_clone() {
            Ok(f) => f,
            Err(e) => return Exit::Spawn(format!("cannot open log: {e}")),
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&job.command)
            .current_dir(&job.cwd)
            .envs(job.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own process group, so stopping it stops everything it started.
            .process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Exit::Spawn(format!("cannot start `sh`: {e}")),
        };
        let pid = child.id() as i32;
        if let Ok(mut g) = self.groups.lock() {
            g.insert(pid);
        }
        let status = child.wait();
        if let Ok(mut g) = self.groups.lock() {
            g.remove(&pid);
        }
        match status {
            Ok(s) if s.success() => Exit::Success,
            Ok(s) => match (s.code(), s.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Code(-1),
            },
            Err(e) => Exit::Spawn(format!("waiting for the command failed: {e}")),
        }
    }

    fn interrupt_all(&self) {
        self.signal_all(libc::SIGTERM);
        let groups: BTreeSet<i32> = self.groups.lock().map(|g| g.clone()).unwrap_or_default();
        if groups.is_empty() {
            return;
        }
        // Whatever ignores SIGTERM is killed after the grace period.
        std::thread::spawn(move || {
            std::thread::sleep(GRACE);
            for pgid in groups {
                // SAFETY: as above.
                unsafe {
                    libc::killpg(pgid, libc::SIGKILL);
                }
            }
        });
    }
}
