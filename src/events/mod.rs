//! Run events (v1): their types, the JSON Lines they serialize to, and the sinks that
//! receive them (`events.jsonl`, `--json` on stdout, the human display).
//!
//! Fields are only ever added within v1, never renamed or removed. Everything that
//! varies between two runs of the same state lives in `ts` and `*_ms` fields, so with
//! `-j 1` two builds emit the same events apart from those.

pub mod color;
pub mod human;
pub mod junit;
pub mod progress;
pub mod shard_name;
pub mod sink;
pub mod summary;
pub mod track;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::plan::{Reason, Why};

pub use sink::{EventLog, Sink};

/// Event schema version.
pub const EVENT_VERSION: u32 = 1;

/// Counts of instances by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Selected instances.
    pub total: usize,
    /// Ran and succeeded.
    pub succeeded: usize,
    /// Already up to date (including early cutoff).
    pub up_to_date: usize,
    /// Failed.
    pub failed: usize,
    /// Blocked.
    pub blocked: usize,
    /// Restored from the cache instead of run.
    pub cached: usize,
}

/// How an instance failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Exited non-zero.
    Exit,
    /// Killed by a signal.
    Signal,
    /// Ran longer than its timeout.
    Timeout,
    /// Did not produce a declared output.
    MissingOutput,
    /// An output failed its schema.
    Schema,
    /// Could not be started.
    Spawn,
    /// Its input could not be split into shards (not JSON, a record without the key).
    InvalidInput,
    /// It succeeded without writing its `depfile`, or wrote one orch cannot parse.
    Depfile,
    /// A cluster's scheduler ended its job (cancelled, preempted, out of memory, its
    /// node failed, or lost track of it).
    Scheduler,
}

/// Which shard an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardRef {
    /// Position, from 0.
    pub index: usize,
    /// Shards of the instance.
    pub count: usize,
    /// `{shard.key}`.
    pub key: String,
}

/// Why an instance did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// A hard dependency failed.
    UpstreamFailed,
    /// A hard dependency was blocked.
    UpstreamBlocked,
    /// Another instance failed and the build stops after failures (no `-k`).
    StoppedAfterFailure,
    /// The build was interrupted.
    Interrupted,
}

impl BlockReason {
    /// The public code.
    pub fn code(self) -> &'static str {
        match self {
            BlockReason::UpstreamFailed => "upstream_failed",
            BlockReason::UpstreamBlocked => "upstream_blocked",
            BlockReason::StoppedAfterFailure => "stopped_after_failure",
            BlockReason::Interrupted => "interrupted",
        }
    }
}

/// The body of an event; its variant name is the event `type`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The run began; nothing has run yet.
    RunStarted {
        /// The plan digest.
        plan_digest: String,
        /// Targets as given (empty: all).
        targets: Vec<String>,
        /// Parallel jobs.
        jobs: usize,
        /// `-k`.
        keep_going: bool,
    },
    /// The plan is known.
    PlanReady {
        /// Selected instances.
        total: usize,
        /// Instances that will run (or may, after early cutoff).
        stale: usize,
        /// Instances already up to date.
        up_to_date: usize,
        /// Instances up to date before the build began (planned up to date, every
        /// upstream too) that get no `instance_skipped` event: every selected instance
        /// without an event of its own in this run is one of them. Absent (0) in runs
        /// of older versions, which listed each one.
        up_to_date_unlisted: usize,
    },
    /// An instance was found up to date while the build ran, and not run. Instances up
    /// to date before the build began get no event of their own (`plan_ready` counts them).
    InstanceSkipped {
        /// Always `up_to_date`.
        reason: &'static str,
        /// Its action key.
        action_key: String,
        /// Planned to run, but its upstreams reproduced identical outputs.
        early_cutoff: bool,
    },
    /// An instance is stale and will run.
    InstanceInvalidated {
        /// Reason codes.
        reasons: Vec<Reason>,
        /// Reasons with what they are about.
        details: Vec<Why>,
    },
    /// An attempt failed and the instance will run again after a delay.
    InstanceRetrying {
        /// The attempt that failed, from 1.
        attempt: u32,
        /// Attempts allowed in all.
        attempts: u32,
        /// Delay before the next attempt.
        delay_ms: u64,
        /// How the attempt failed.
        kind: FailureKind,
        /// One line for humans.
        message: String,
        /// Set when the event is about one shard.
        #[serde(skip_serializing_if = "Option::is_none")]
        shard: Option<ShardRef>,
    },
    /// A stale instance's result was restored from the cache instead of running it.
    InstanceCached {
        /// `local` or `remote`.
        source: &'static str,
        /// Its action key.
        action_key: String,
        /// Output path → digest.
        outputs: BTreeMap<String, String>,
        /// Bytes restored.
        bytes: u64,
        /// How long building it had taken.
        saved_ms: u64,
    },
    /// An instance's command started.
    InstanceStarted {
        /// 1 for the first attempt.
        attempt: u32,
        /// The expanded command; for a sharded instance's own event (no `shard`), the
        /// command template its shards expand (`{shard.*}` still in it).
        command: String,
        /// Set when the event is about one shard (`instance` is then `NAME#INDEX`).
        #[serde(skip_serializing_if = "Option::is_none")]
        shard: Option<ShardRef>,
        /// The executor running it, when not this machine (`local`).
        #[serde(skip_serializing_if = "Option::is_none")]
        executor: Option<String>,
        /// The cluster's id for its job, once submitted.
        #[serde(skip_serializing_if = "Option::is_none")]
        job_id: Option<String>,
        /// The worker slot (0..`-j`) it holds on this machine from this event until its
        /// `instance_completed` or `instance_failed`; a retry keeps its slot. Absent for
        /// jobs on a cluster and for a sharded instance's own event (its shards hold
        /// slots).
        #[serde(skip_serializing_if = "Option::is_none")]
        worker: Option<usize>,
    },
    /// An instance succeeded.
    InstanceCompleted {
        /// Its action key.
        action_key: String,
        /// Output path → digest.
        outputs: BTreeMap<String, String>,
        /// Wall time.
        duration_ms: u64,
        /// Set when the event is about one shard.
        #[serde(skip_serializing_if = "Option::is_none")]
        shard: Option<ShardRef>,
    },
    /// An instance failed.
    InstanceFailed {
        /// How.
        kind: FailureKind,
        /// Exit code, for `exit`.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Signal number, for `signal`.
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// One line for humans.
        message: String,
        /// The captured output, project-relative; "" when no command ran (a source that
        /// cannot be split, a failed merge). For a sharded instance, its lowest-index failed
        /// shard's log.
        log: String,
        /// Wall time.
        duration_ms: u64,
        /// Set when the event is about one shard.
        #[serde(skip_serializing_if = "Option::is_none")]
        shard: Option<ShardRef>,
    },
    /// An instance did not run because of others.
    InstanceBlocked {
        /// Why.
        reason: BlockReason,
        /// The instances that blocked it (empty for `stopped_after_failure` and
        /// `interrupted`).
        blocked_by: Vec<String>,
        /// Set when the event is about one shard (a shard stopped by an interruption).
        #[serde(skip_serializing_if = "Option::is_none")]
        shard: Option<ShardRef>,
    },
    /// A soft dependency failed or was blocked; the instance runs without it.
    SoftDependencyUnmet {
        /// The upstream instance.
        upstream: String,
        /// `failed` or `blocked`.
        upstream_status: &'static str,
    },
    /// An input of a command changed while it ran: the result serves the rest of this
    /// build but is neither recorded nor cached, so the next build runs it again.
    InputChangedDuringRun {
        /// The inputs that changed, project-relative, sorted.
        paths: Vec<String>,
        /// Set when the event is about one shard.
        #[serde(skip_serializing_if = "Option::is_none")]
        shard: Option<ShardRef>,
    },
    /// How an instance was split into shards.
    ShardPlan {
        /// `files`, `chunk` or `group`.
        strategy: &'static str,
        /// Number of shards.
        shards: usize,
        /// At most this many run at once (`parallel`, else `-j`).
        parallel: usize,
        /// Shards that will run.
        stale: usize,
        /// Shards whose recorded results are reused.
        reused: usize,
    },
    /// Shard outputs were concatenated into the instance's output.
    MergeCompleted {
        /// The merged output.
        output: String,
        /// Its digest.
        digest: String,
        /// Its size in bytes.
        size: u64,
        /// Parts merged.
        shards: usize,
    },
    /// Progress after an instance or shard finished.
    Progress {
        /// Finished units of work (instances and shards) that were planned to run.
        done: usize,
        /// Units of work planned to run (grows as shards are planned).
        total: usize,
        /// Instances running now.
        running: usize,
    },
    /// `orch watch` saw changes and starts a build for them.
    WatchChanges {
        /// Changed paths, project-relative, sorted (empty for a timer).
        paths: Vec<String>,
        /// `files`, `orchfile` or `timer`.
        trigger: &'static str,
        /// With `--align`: the start of the period the build belongs to, as commands see it
        /// in `ORCH_TICK`.
        #[serde(skip_serializing_if = "Option::is_none")]
        tick: Option<String>,
    },
    /// The run ended without failures.
    RunCompleted {
        /// By outcome.
        counts: Counts,
        /// Cache hits, bytes moved and time saved.
        cache: crate::cache::Stats,
        /// Wall time.
        duration_ms: u64,
    },
    /// The run ended with failures, blocked instances or an interruption.
    RunFailed {
        /// By outcome.
        counts: Counts,
        /// Cache hits, bytes moved and time saved.
        cache: crate::cache::Stats,
        /// Failed instances.
        failed: Vec<String>,
        /// Blocked instances.
        blocked: Vec<String>,
        /// Stopped by a signal.
        interrupted: bool,
        /// Wall time.
        duration_ms: u64,
    },
}

/// One event as written.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Schema version.
    pub v: u32,
    /// 1, 2, … within a run.
    pub seq: u64,
    /// RFC 3339 UTC time with milliseconds.
    pub ts: String,
    /// The run.
    pub run_id: String,
    /// Type and body.
    #[serde(flatten)]
    pub kind: EventKind,
    /// The instance it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}
