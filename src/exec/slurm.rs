//! A small blocking client for a Slurm cluster: submits one batch job per command
//! (`sbatch --parsable`, the script on stdin), asks for the state of many jobs in one
//! `squeue` call, and cancels them with `scancel`.
//!
//! It knows nothing of orch's scheduling: the caller decides what to submit, how often to
//! poll and when to cancel. Every command's output is parsed by pure functions tested on
//! lines captured from a real Slurm 22.05 cluster.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The exit status of a job whose script could not see the project (the marker file did
/// not hold the token, or the working directory was missing). Chosen outside the codes
/// shells and common tools use (1, 2, 126, 127, 128+signal).
pub const CANNOT_SEE_PROJECT: i32 = 97;

/// What went wrong talking to Slurm.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A Slurm command is not installed.
    #[error("`{command}` is not on PATH: orch needs Slurm's client commands to submit jobs")]
    Missing {
        /// The command looked for.
        command: &'static str,
    },
    /// A Slurm command could not be started or fed.
    #[error("running `{command}`: {source}")]
    Spawn {
        /// The command run.
        command: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The controller (slurmctld) did not answer; worth retrying later.
    #[error("the Slurm controller is unreachable: {message}")]
    Unreachable {
        /// Slurm's own message.
        message: String,
    },
    /// `sbatch` refused the job (a bad partition, resources no node has, a bad argument).
    #[error("Slurm rejected the job `{name}`: {message}")]
    Rejected {
        /// The job's name.
        name: String,
        /// Slurm's own message.
        message: String,
    },
    /// A command failed in a way not covered above.
    #[error("`{command}` failed ({status}): {message}")]
    Failed {
        /// The command run.
        command: &'static str,
        /// Its exit status.
        status: String,
        /// Its standard error.
        message: String,
    },
    /// A command printed something this client cannot read.
    #[error("unexpected output from `{command}`: {output:?}")]
    Parse {
        /// The command run.
        command: &'static str,
        /// The line it could not read.
        output: String,
    },
    /// The submission cannot be written as a job script.
    #[error("cannot submit `{name}`: {reason}")]
    Invalid {
        /// The job's name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl SlurmError {
    /// Whether trying again later may succeed (the controller was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, SlurmError::Unreachable { .. })
    }
}

/// A Slurm job id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a job asks of the scheduler; `None` leaves Slurm's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `--cpus-per-task`.
    pub cpus: Option<u32>,
    /// `--mem`, in Slurm's syntax (`4G`, `512M`).
    pub mem: Option<String>,
    /// `--time`, in whole minutes (Slurm's granularity).
    pub time_minutes: Option<u64>,
}

/// One command to run as one batch job.
#[derive(Debug, Clone)]
pub struct Submission {
    /// `--job-name`.
    pub name: String,
    /// The shell command, run with `/bin/sh -c`.
    pub command: String,
    /// The directory the command runs in (also `--chdir`).
    pub cwd: PathBuf,
    /// Variables exported to the command, on top of the environment `sbatch` passes on.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go, one file, appended to (so an earlier attempt's output
    /// survives; remove the file first for a fresh one).
    pub log: PathBuf,
    /// `--partition`; `None` for the cluster's default.
    pub partition: Option<String>,
    /// Extra `sbatch` arguments, after orch's own so they win.
    pub args: Vec<String>,
    /// What the job asks for.
    pub resources: Resources,
    /// The shared-file-system check: a file the job must find holding this token.
    pub marker: Option<(PathBuf, String)>,
}

/// How a job ended, as Slurm names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndState {
    /// COMPLETED (exit code 0).
    Completed,
    /// FAILED: a non-zero exit, a signal, or a launch failure.
    Failed,
    /// CANCELLED: by `scancel`, an administrator or the scheduler.
    Cancelled,
    /// TIMEOUT: the job's time limit.
    Timeout,
    /// PREEMPTED.
    Preempted,
    /// NODE_FAIL: its node died.
    NodeFail,
    /// OUT_OF_MEMORY.
    OutOfMemory,
    /// BOOT_FAIL: its node failed to boot.
    BootFail,
    /// DEADLINE: its `--deadline` passed.
    Deadline,
}

impl EndState {
    fn parse(state: &str) -> Option<EndState> {
        Some(match state {
            "COMPLETED" => EndState::Completed,
            "FAILED" => EndState::Failed,
            "CANCELLED" => EndState::Cancelled,
            "TIMEOUT" => EndState::Timeout,
            "PREEMPTED" => EndState::Preempted,
            "NODE_FAIL" => EndState::NodeFail,
            "OUT_OF_MEMORY" => EndState::OutOfMemory,
            "BOOT_FAIL" => EndState::BootFail,
            "DEADLINE" => EndState::Deadline,
            _ => return None,
        })
    }

    /// Slurm's name for the state.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndState::Completed => "COMPLETED",
            EndState::Failed => "FAILED",
            EndState::Cancelled => "CANCELLED",
            EndState::Timeout => "TIMEOUT",
            EndState::Preempted => "PREEMPTED",
            EndState::NodeFail => "NODE_FAIL",
            EndState::OutOfMemory => "OUT_OF_MEMORY",
            EndState::BootFail => "BOOT_FAIL",
            EndState::Deadline => "DEADLINE",
        }
    }
}

impl fmt::Display for EndState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job stands, as one poll saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting to start (also after a requeue); Slurm's reason (`Priority`, `Resources`).
    Pending {
        /// Why it waits.
        reason: String,
    },
    /// Started and not yet fully ended (RUNNING, CONFIGURING, COMPLETING, SUSPENDED, ...);
    /// Slurm's state name. COMPLETING counts here: the job's processes are not all gone.
    Running {
        /// Slurm's state name.
        state: String,
    },
    /// Ended with COMPLETED and exit code 0.
    Completed,
    /// Ended any other way.
    Failed {
        /// The end state.
        state: EndState,
        /// The exit code, when the job's script exited.
        exit_code: Option<i32>,
        /// The signal, when a signal ended it.
        signal: Option<i32>,
        /// Slurm's reason (`NonZeroExitCode`, `TimeLimit`, `JobLaunchFailure`).
        reason: String,
    },
    /// Unknown to the controller: never submitted there, or purged from its memory
    /// (`MinJobAge` after it ended) before a poll saw it end.
    Lost,
}

impl JobState {
    /// Whether the job will not change state again.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed { .. } | JobState::Lost
        )
    }

    /// Whether the job's script found it cannot see the project (see [`CANNOT_SEE_PROJECT`]).
    pub fn cannot_see_project(&self) -> bool {
        matches!(
            self,
            JobState::Failed {
                exit_code: Some(CANNOT_SEE_PROJECT),
                ..
            }
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobState::Pending { reason } => write!(f, "PENDING ({reason})"),
            JobState::Running { state } => f.write_str(state),
            JobState::Completed => f.write_str("COMPLETED"),
            JobState::Failed {
                state,
                exit_code,
                signal,
                reason,
            } => {
                write!(f, "{state}")?;
                if let Some(code) = exit_code {
                    write!(f, ", exit code {code}")?;
                }
                if let Some(signal) = signal {
                    write!(f, ", signal {signal}")?;
                }
                if reason != "None" && !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
            JobState::Lost => f.write_str("unknown to the Slurm controller (lost)"),
        }
    }
}

/// Slurm's client commands, found on PATH once.
#[derive(Debug, Clone)]
pub struct Client {
    sbatch: PathBuf,
    squeue: PathBuf,
    scancel: PathBuf,
    env: Vec<(OsString, OsString)>,
}

impl Client {
    /// Finds `sbatch`, `squeue` and `scancel` on PATH.
    pub fn new() -> Result<Client, SlurmError> {
        Ok(Client {
            sbatch: which("sbatch")?,
            squeue: which("squeue")?,
            scancel: which("scancel")?,
            env: Vec::new(),
        })
    }

    /// Talks to the cluster this `slurm.conf` describes (sets `SLURM_CONF` for every
    /// command, and so for the jobs, which inherit `sbatch`'s environment).
    pub fn with_config(mut self, conf: &Path) -> Client {
        self.env.push(("SLURM_CONF".into(), conf.into()));
        self
    }

    /// Submits one batch job and returns its id once the controller has accepted it.
    pub fn submit(&self, s: &Submission) -> Result<JobId, SlurmError> {
        let script = job_script(s)?;
        let mut command = self.command(&self.sbatch);
        command
            .args(sbatch_args(s))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| SlurmError::Spawn {
            command: "sbatch",
            source,
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error here means sbatch exited early; its stderr says why.
            let _ = stdin.write_all(script.as_bytes());
        }
        let output = child
            .wait_with_output()
            .map_err(|source| SlurmError::Spawn {
                command: "sbatch",
                source,
            })?;
        if !output.status.success() {
            let message = stderr_message(&output);
            if is_unreachable(&message) {
                return Err(SlurmError::Unreachable { message });
            }
            return Err(SlurmError::Rejected {
                name: s.name.clone(),
                message,
            });
        }
        parse_parsable(&String::from_utf8_lossy(&output.stdout))
    }

    /// The state of each job, from one `squeue` call; ids the controller does not know
    /// are [`JobState::Lost`].
    pub fn poll(&self, ids: &[JobId]) -> Result<BTreeMap<JobId, JobState>, SlurmError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let output = self
            .command(&self.squeue)
            .args(squeue_args(ids))
            .stdin(Stdio::null())
            .output()
            .map_err(|source| SlurmError::Spawn {
                command: "squeue",
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let known = if output.status.success() {
            parse_squeue(&stdout)?
        } else {
            let message = stderr_message(&output);
            if is_unreachable(&message) {
                return Err(SlurmError::Unreachable { message });
            }
            // squeue fails this way only when it knows none of the ids.
            if !message.contains("Invalid job id specified") {
                return Err(SlurmError::Failed {
                    command: "squeue",
                    status: output.status.to_string(),
                    message,
                });
            }
            BTreeMap::new()
        };
        Ok(ids
            .iter()
            .map(|id| (*id, known.get(id).cloned().unwrap_or(JobState::Lost)))
            .collect())
    }

    /// Cancels jobs (one `scancel`); ids already ended or unknown are not an error.
    pub fn cancel(&self, ids: &[JobId]) -> Result<(), SlurmError> {
        if ids.is_empty() {
            return Ok(());
        }
        let output = self
            .command(&self.scancel)
            .args(ids.iter().map(JobId::to_string))
            .stdin(Stdio::null())
            .output()
            .map_err(|source| SlurmError::Spawn {
                command: "scancel",
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let message = stderr_message(&output);
        if is_unreachable(&message) {
            return Err(SlurmError::Unreachable { message });
        }
        let benign = message.lines().all(|line| {
            line.contains("already completing or completed")
                || line.contains("Invalid job id specified")
        });
        if benign {
            return Ok(());
        }
        Err(SlurmError::Failed {
            command: "scancel",
            status: output.status.to_string(),
            message,
        })
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

fn which(command: &'static str) -> Result<PathBuf, SlurmError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| candidate.is_file())
        .ok_or(SlurmError::Missing { command })
}

fn stderr_message(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if text.is_empty() {
        format!("no message ({})", output.status)
    } else {
        text
    }
}

/// Whether Slurm's message says the controller did not answer, as opposed to refusing.
fn is_unreachable(message: &str) -> bool {
    const SIGNS: &[&str] = &[
        "Unable to contact slurm controller",
        "Socket timed out on send/recv operation",
        "Zero Bytes were transmitted or received",
        "Communication connection failure",
        "Connection refused",
        "backup controller in standby mode",
    ];
    SIGNS.iter().any(|sign| message.contains(sign))
}

/// `sh` single quotes: every byte but `'` stands for itself inside them, newlines included.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The batch script: the marker check, `cd`, the exports, then the command. Passed on
/// sbatch's stdin, so there is no file to clean up; the environment goes in the script
/// rather than `--export=`, which splits values on commas.
fn job_script(s: &Submission) -> Result<String, SlurmError> {
    let invalid = |reason: String| SlurmError::Invalid {
        name: s.name.clone(),
        reason,
    };
    let text = |what: &str, value: &str| {
        if value.contains('\0') {
            Err(invalid(format!("{what} contains a NUL byte")))
        } else {
            Ok(sh_quote(value))
        }
    };
    let cwd = s
        .cwd
        .to_str()
        .ok_or_else(|| invalid(format!("the directory {:?} is not UTF-8", s.cwd)))?;
    let cwd = text("the directory", cwd)?;
    let mut script = String::from("#!/bin/sh\n# Written by orch: one command of the build.\n");
    let cannot_see = |what: String| {
        format!(
            "    printf 'orch: this job cannot see the project at %s: %s; the cluster needs a \
             shared file system that shows the project at the same path on every node\\n' \
             {cwd} {} >&2\n    exit {CANNOT_SEE_PROJECT}\n",
            sh_quote(&what)
        )
    };
    if let Some((path, token)) = &s.marker {
        let path = path
            .to_str()
            .ok_or_else(|| invalid(format!("the marker path {path:?} is not UTF-8")))?;
        let what = format!("{path} is missing or does not hold the token orch wrote");
        let path = text("the marker path", path)?;
        let token = text("the marker token", token)?;
        script.push_str(&format!(
            "if [ \"$(cat -- {path} 2>/dev/null)\" != {token} ]; then\n{}fi\n",
            cannot_see(what)
        ));
    }
    script.push_str(&format!(
        "cd -- {cwd} 2>/dev/null || {{\n{}}}\n",
        cannot_see("the directory is missing".into())
    ));
    for (name, value) in &s.env {
        if !valid_env_name(name) {
            return Err(invalid(format!(
                "`{name}` is not a valid environment variable name"
            )));
        }
        script.push_str(&format!(
            "export {name}={}\n",
            text(&format!("`{name}`"), value)?
        ));
    }
    // exec: the command's exit status, or the signal that killed it, becomes the job's,
    // and scancel's signals reach it directly.
    script.push_str(&format!(
        "exec /bin/sh -c {}\n",
        text("the command", &s.command)?
    ));
    Ok(script)
}

/// orch's `sbatch` arguments, then the user's.
fn sbatch_args(s: &Submission) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--parsable".into(),
        format!("--job-name={}", s.name).into(),
        prefixed("--chdir=", &s.cwd),
        prefixed("--output=", &s.log),
        prefixed("--error=", &s.log),
        // The caller owns the log: a retry appends rather than erasing the earlier attempt.
        "--open-mode=append".into(),
        // A preempted or failed node's job is a failure orch's own retry decides on, not
        // a silent rerun by Slurm.
        "--no-requeue".into(),
    ];
    if let Some(partition) = &s.partition {
        args.push(format!("--partition={partition}").into());
    }
    if let Some(cpus) = s.resources.cpus {
        args.push(format!("--cpus-per-task={cpus}").into());
    }
    if let Some(mem) = &s.resources.mem {
        args.push(format!("--mem={mem}").into());
    }
    if let Some(minutes) = s.resources.time_minutes {
        args.push(format!("--time={minutes}").into());
    }
    args.extend(s.args.iter().map(OsString::from));
    args
}

fn prefixed(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(path);
    arg
}

/// `--parsable` prints `ID` or `ID;CLUSTER`.
fn parse_parsable(stdout: &str) -> Result<JobId, SlurmError> {
    let line = stdout.lines().map(str::trim).rfind(|l| !l.is_empty());
    line.and_then(|l| l.split(';').next())
        .and_then(|id| id.parse().ok())
        .map(JobId)
        .ok_or_else(|| SlurmError::Parse {
            command: "sbatch",
            output: stdout.to_owned(),
        })
}

/// The squeue fields, each followed by `|`; the reason last, as the one free-text field.
const SQUEUE_FORMAT: &str = "JobID:|,State:|,exit_code:|,Reason:|";

fn squeue_args(ids: &[JobId]) -> Vec<String> {
    let list = ids
        .iter()
        .map(JobId::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // -t all: ended jobs too (squeue shows them until MinJobAge). exit_code is the raw
    // wait status, kept by the controller without any accounting storage.
    vec![
        "--noheader".into(),
        "--states=all".into(),
        format!("--jobs={list}"),
        format!("--Format={SQUEUE_FORMAT}"),
    ]
}

/// Reads squeue's lines in [`SQUEUE_FORMAT`].
fn parse_squeue(stdout: &str) -> Result<BTreeMap<JobId, JobState>, SlurmError> {
    let mut states = BTreeMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || SlurmError::Parse {
            command: "squeue",
            output: line.to_owned(),
        };
        let mut fields = line.splitn(4, '|');
        let (Some(id), Some(state), Some(status), Some(reason)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad());
        };
        let id = JobId(id.trim().parse().map_err(|_| bad())?);
        let status: i32 = status.trim().parse().map_err(|_| bad())?;
        let reason = reason.strip_suffix('|').unwrap_or(reason).trim();
        states.insert(id, job_state(state.trim(), status, reason));
    }
    Ok(states)
}

/// One job's state from squeue's state name, raw wait status and reason.
fn job_state(state: &str, status: i32, reason: &str) -> JobState {
    let reason = reason.to_owned();
    if let Some(end) = EndState::parse(state) {
        let (exit_code, signal) = decode_wait_status(status);
        if end == EndState::Completed && exit_code == Some(0) {
            return JobState::Completed;
        }
        return JobState::Failed {
            state: end,
            exit_code,
            signal,
            reason,
        };
    }
    match state {
        // A requeued job waits again.
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
            JobState::Pending { reason }
        }
        // SPECIAL_EXIT and REVOKED end a job without a state above: a failure.
        "SPECIAL_EXIT" | "REVOKED" => {
            let (exit_code, signal) = decode_wait_status(status);
            JobState::Failed {
                state: EndState::Failed,
                exit_code,
                signal,
                reason: format!("{state}: {reason}"),
            }
        }
        _ => JobState::Running {
            state: state.to_owned(),
        },
    }
}

/// A wait(2) status: the exit code, or the signal (Slurm also puts its own numbers there
/// for launch failures, e.g. 53).
fn decode_wait_status(status: i32) -> (Option<i32>, Option<i32>) {
    let signal = status & 0x7f;
    if signal == 0 {
        (Some((status >> 8) & 0xff), None)
    } else {
        (None, Some(signal))
    }
}

#[cfg(test)]
mod tests;
