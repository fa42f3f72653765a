//! Running one command: the [`Runner`] seam and the real implementation, `sh -c` in its own
//! process group with output captured to the instance's log file.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One command to run.
#[derive(Clone)]
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
    /// Stop the command (its whole process group) after this long.
    pub timeout: Option<Duration>,
    /// Also hand each line of output to this (`-v`).
    pub stream: Option<LineSink>,
}

/// Receives a command's output line by line.
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

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
    /// Ran longer than its timeout and was stopped.
    Timeout(Duration),
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

/// Longest piece of one line held in memory; a longer line reaches the log and the
/// display in pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// Copies a command's output to its log, every byte as it is, and hands each line to
/// `stream`, decoded lossily. Whole lines are written at once, so the lines of stdout
/// and stderr do not mix; memory stays bounded whatever the command prints, and the
/// pipe is read to its end even after the log fails, so the command never blocks on it.
fn copy_lines(
    mut pipe: Box<dyn Read + Send>,
    log: &Mutex<File>,
    stream: &(dyn Fn(&str) + Send + Sync),
) {
    let mut buf = vec![0u8; MAX_LINE];
    let mut line: Vec<u8> = Vec::with_capacity(MAX_LINE);
    let emit = |line: &mut Vec<u8>| {
        if let Ok(mut f) = log.lock() {
            let _ = f.write_all(line);
        }
        let text = String::from_utf8_lossy(line);
        stream(text.strip_suffix('\n').unwrap_or(&text));
        line.clear();
    };
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let room = MAX_LINE - line.len();
            let (take, full) = match rest.iter().take(room).position(|b| *b == b'\n') {
                Some(nl) => (nl + 1, true),
                None if rest.len() >= room => (room, true),
                None => (rest.len(), false),
            };
            line.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if full {
                emit(&mut line);
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
}

/// Sends `sig` to a process group.
fn kill_group(pgid: i32, sig: i32) {
    // SAFETY: killpg has no memory-safety preconditions; a stale id fails with ESRCH.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

impl ProcessRunner {
    fn signal_all(&self, sig: i32) {
        let groups: Vec<i32> = self
            .groups
            .lock()
            .map(|g| g.iter().copied().collect())
            .unwrap_or_default();
        for pgid in groups {
            kill_group(pgid, sig);
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
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&job.command)
            .current_dir(&job.cwd)
            .envs(job.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            // Its own process group, so stopping it stops everything it started.
            .process_group(0);
        let log = if job.stream.is_some() {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            Some(Arc::new(Mutex::new(log)))
        } else {
            match log.try_clone() {
                Ok(err) => {
                    cmd.stdout(log).stderr(err);
                }
                Err(e) => return Exit::Spawn(format!("cannot open log: {e}")),
            }
            None
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Exit::Spawn(format!("cannot start `sh`: {e}")),
        };
        let pid = child.id() as i32;
        if let Ok(mut g) = self.groups.lock() {
            g.insert(pid);
        }
        // Lines go to the log and, for -v, to the display, as they come.
        let mut readers = Vec::new();
        if let (Some(log), Some(stream)) = (&log, &job.stream) {
            let pipes: [Option<Box<dyn Read + Send>>; 2] = [
                child.stdout.take().map(|p| Box::new(p) as _),
                child.stderr.take().map(|p| Box::new(p) as _),
            ];
            for pipe in pipes.into_iter().flatten() {
                let (log, stream) = (Arc::clone(log), Arc::clone(stream));
                readers.push(std::thread::spawn(move || copy_lines(pipe, &log, &*stream)));
            }
        }
        // The timeout watcher: woken early (disconnected) when the command ends.
        let timed_out = Arc::new(AtomicBool::new(false));
        let (ended, watcher) = crossbeam_channel::bounded::<()>(0);
        if let Some(limit) = job.timeout {
            let flag = Arc::clone(&timed_out);
            std::thread::spawn(move || {
                if watcher.recv_timeout(limit) == Err(crossbeam_channel::RecvTimeoutError::Timeout)
                {
                    flag.store(true, Ordering::SeqCst);
                    kill_group(pid, libc::SIGTERM);
                    if watcher.recv_timeout(GRACE)
                        == Err(crossbeam_channel::RecvTimeoutError::Timeout)
                    {
                        kill_group(pid, libc::SIGKILL);
                    }
                }
            });
        }
        let status = child.wait();
        drop(ended);
        for r in readers {
            let _ = r.join();
        }
        if let Ok(mut g) = self.groups.lock() {
            g.remove(&pid);
        }
        if timed_out.load(Ordering::SeqCst) {
            // Whatever the group left behind goes too.
            kill_group(pid, libc::SIGKILL);
            return Exit::Timeout(job.timeout.unwrap_or_default());
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
                kill_group(pgid, libc::SIGKILL);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_logged_byte_for_byte_and_streamed_in_bounded_lossy_lines() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("x.log");
        let log = Mutex::new(File::create(&path).expect("create the log"));
        let mut input = b"bad \xff byte\n".to_vec();
        input.extend(std::iter::repeat_n(b'z', MAX_LINE + 10));
        input.extend_from_slice(b"\nlast, without newline");
        let lines = Mutex::new(Vec::new());
        copy_lines(
            Box::new(std::io::Cursor::new(input.clone())),
            &log,
            &|l: &str| {
                lines.lock().expect("lines").push(l.to_owned());
            },
        );
        drop(log);
        assert_eq!(std::fs::read(&path).expect("read the log"), input);
        let lines = lines.into_inner().expect("lines");
        let lens: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(lines[0], "bad \u{FFFD} byte");
        assert_eq!(lens[1..3], [MAX_LINE, 10]);
        assert_eq!(lines[3], "last, without newline");
        assert_eq!(lines.len(), 4);
    }
}
