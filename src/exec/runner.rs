//! Running one command: the [`Runner`] seam and the real implementation, `/bin/sh -c` in
//! its own process group with output captured to the instance's log file.
//!
//! The log file is created only once the command has printed something (or failed): on
//! a cold build most commands print nothing, and creating a file is one of the dearest
//! things a build does per command. Until then the output goes to an anonymous in-memory
//! file ([`Spool`]) that is copied to the log as the command runs and when it ends.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
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
    /// A cluster's scheduler ended it (cancelled, preempted, its node failed, lost);
    /// the message carries the scheduler's state and reason.
    Scheduler(String),
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

/// The shell every command runs in.
const SHELL: &str = "/bin/sh";

/// How often a running command's output is copied from its spool to its log, so a long
/// command's log can be followed while it runs.
const FOLLOW_EVERY_MS: i32 = 1000;

/// A command's output on its way to the log: an anonymous in-memory file that the
/// command writes as it would write the log (both streams through one file description,
/// so their order is kept), copied to the log file, created at the first byte.
struct Spool {
    memfd: File,
    /// Bytes already copied to the log.
    copied: u64,
    log: Option<File>,
}

impl Spool {
    /// A new spool; None where the kernel has no `memfd_create` (then the log is created
    /// up front, as a plain file).
    fn new() -> Option<Spool> {
        // SAFETY: the name is a NUL-terminated string; the call has no other preconditions.
        let fd = unsafe { libc::memfd_create(c"orch-log".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
        let memfd = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Some(Spool {
            memfd,
            copied: 0,
            log: None,
        })
    }

    /// Waits for process `pid` to exit, copying its output to `log` every
    /// [`FOLLOW_EVERY_MS`] meanwhile. Returns at once where the kernel cannot wait on a
    /// process descriptor (the caller's `wait` then does the waiting, and the log is
    /// written when the command ends).
    fn follow(&mut self, pid: i32, log: &Path) {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let Ok(fd) = i32::try_from(fd) else { return };
        if fd < 0 {
            return;
        }
        // SAFETY: `fd` was just returned by pidfd_open and is owned by nothing else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
        loop {
            let mut p = libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, for the duration of the call.
            let n = unsafe { libc::poll(&mut p, 1, FOLLOW_EVERY_MS) };
            if n > 0 {
                return;
            }
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return;
            }
            if n == 0 {
                // A failure here is met again, and reported, by `finish`.
                let _ = self.copy(log);
            }
        }
    }

    /// Copies what the command wrote since the last copy to `log`, creating it first when
    /// there is something to copy (or, with `create`, in any case).
    fn copy_to(&mut self, log: &Path, create: bool) -> std::io::Result<()> {
        let size = self.memfd.metadata()?.len();
        if self.log.is_none() && (create || size > self.copied) {
            self.log = Some(File::create(log)?);
        }
        let Some(out) = self.log.as_mut() else {
            return Ok(());
        };
        let mut buf = vec![0u8; 64 * 1024];
        while self.copied < size {
            let want = buf.len().min((size - self.copied) as usize);
            let n = match self.memfd.read_at(&mut buf[..want], self.copied) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write_all(&buf[..n])?;
            self.copied += n as u64;
        }
        // Copied bytes need no memory any more: a command printing gigabytes costs
        // memory for what it printed in the last interval only.
        // SAFETY: fallocate on a descriptor this spool owns; a failure changes nothing.
        unsafe {
            libc::fallocate(
                self.memfd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                self.copied as libc::off_t,
            );
        }
        Ok(())
    }

    fn copy(&mut self, log: &Path) -> std::io::Result<()> {
        self.copy_to(log, false)
    }

    /// The last copy, once the command has ended; with `failed`, the log is created even
    /// when the command printed nothing.
    fn finish(mut self, log: &Path, failed: bool) -> std::io::Result<()> {
        self.copy_to(log, failed)
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
        // `/bin/sh` by its path, as ninja does: a PATH search costs a failed `execve` per
        // directory before it, in the child, while the spawning thread waits.
        let mut cmd = Command::new(SHELL);
        cmd.arg("-c")
            .arg(&job.command)
            .current_dir(&job.cwd)
            .envs(job.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            // Its own process group, so stopping it stops everything it started.
            .process_group(0);
        let spool = if job.stream.is_none() {
            Spool::new()
        } else {
            None
        };
        let log = match &spool {
            Some(spool) => {
                let (out, err) = match (spool.memfd.try_clone(), spool.memfd.try_clone()) {
                    (Ok(out), Ok(err)) => (out, err),
                    (Err(e), _) | (_, Err(e)) => {
                        return Exit::Spawn(format!("cannot open log: {e}"));
                    }
                };
                cmd.stdout(out).stderr(err);
                None
            }
            None => {
                let log = match File::create(&job.log) {
                    Ok(f) => f,
                    Err(e) => {
                        return Exit::Spawn(format!(
                            "cannot create log `{}`: {e}",
                            job.log.display()
                        ));
                    }
                };
                if job.stream.is_some() {
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
                }
            }
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Exit::Spawn(format!("cannot start `{SHELL}`: {e}")),
        };
        // The command's copies: only the spool's own descriptor stays open here.
        drop(cmd);
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
        let (status, lost) = match spool {
            Some(mut spool) => {
                spool.follow(pid, &job.log);
                let status = child.wait();
                // What the command printed in its last moments, and a log for every
                // failure, even a silent one: the failure report names it.
                let failed = !matches!(&status, Ok(s) if s.success());
                (status, spool.finish(&job.log, failed).err())
            }
            None => (child.wait(), None),
        };
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
        let exit = match status {
            Ok(s) if s.success() => Exit::Success,
            Ok(s) => match (s.code(), s.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Code(-1),
            },
            Err(e) => Exit::Spawn(format!("waiting for the command failed: {e}")),
        };
        match lost {
            // Its output could not be kept: as when the log cannot be created up front.
            Some(e) if exit == Exit::Success => {
                Exit::Spawn(format!("cannot create log `{}`: {e}", job.log.display()))
            }
            _ => exit,
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
