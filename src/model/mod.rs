//! The validated project: phases, their instances (one per matrix combination), and
//! everything downstream stages need, with invalid states unrepresentable.
//!
//! `validate` turns a [`crate::orchfile::RawProject`] into a [`Project`] or reports every
//! configuration error at once.

pub mod cache;
pub mod meta;
pub mod overlap;
pub mod path;
pub mod template;
pub mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::fs::Digest;
use crate::orchfile::{FileId, Sources, Span};

pub use validate::{validate, validate_all};

/// The Orchfile format this version of orch reads.
pub const FORMAT: i64 = 1;

/// The most instances orch runs at once. Each running instance holds a thread and a
/// process; beyond this, threads and process slots run out long before anything gets
/// faster. A fixed number, not one derived from this machine's limits, so an Orchfile
/// valid here is valid everywhere.
pub const MAX_JOBS: u32 = 1024;

/// Runs whose events and logs a build keeps unless `[orch] keep_runs` says otherwise.
pub const DEFAULT_KEEP_RUNS: usize = 100;

/// Jobs an executor keeps in flight unless its `max_jobs` says otherwise: enough to
/// keep a cluster busy with short jobs, few enough that one build does not flood a
/// shared scheduler's queue (sites often cap a user's queued jobs at a few hundred).
pub const DEFAULT_EXECUTOR_MAX_JOBS: u32 = 100;

pub use crate::orchfile::load::LOCAL_EXECUTOR;

/// A validated project.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Project {
    /// The project root (canonical).
    pub root: PathBuf,
    /// The Orchfile and fragments, for diagnostics found later.
    #[serde(skip)]
    pub sources: Sources,
    /// BLAKE3 over every configuration file's name and text.
    pub digest: Digest,
    /// The `include` patterns of the Orchfile.
    pub includes: Vec<String>,
    /// The `[cache]` table.
    pub cache: CacheConfig,
    /// Default `-j`.
    pub jobs: Option<usize>,
    /// Runs whose events and logs a build keeps (`[orch] keep_runs`).
    pub keep_runs: usize,
    /// Variables passed to and hashed into every phase (`orch.env`), sorted.
    pub env: Vec<String>,
    /// Declared executors (`[executor.NAME]`) by name; `local` is built in, never here.
    pub executors: BTreeMap<String, Executor>,
    /// Phases by name.
    #[serde(deserialize_with = "sorted_map")]
    pub phases: BTreeMap<String, Phase>,
    /// Every instance, sorted by name; indices into this are instance ids.
    pub instances: Vec<Instance>,
}

impl Project {
    /// The instance with this name.
    pub fn instance_index(&self, name: &str) -> Option<usize> {
        self.instances
            .binary_search_by(|i| i.name.as_str().cmp(name))
            .ok()
    }

    /// The executor that runs instance `instance`: `over` (`--executor NAME`, already
    /// checked with [`Project::check_executor`]) when given, else its phase's. Its shards
    /// run on the same one.
    pub fn executor_of(&self, instance: usize, over: Option<&str>) -> ExecutorRef<'_> {
        let name = over.or_else(|| {
            self.instances
                .get(instance)
                .and_then(|i| i.executor.as_deref())
        });
        match name.and_then(|n| self.executors.get(n)) {
            Some(e) => ExecutorRef::Declared(e),
            None => ExecutorRef::Local,
        }
    }

    /// Every executor name a phase or `--executor` may use: `local`, then those declared,
    /// sorted.
    pub fn executor_names(&self) -> Vec<&str> {
        std::iter::once(LOCAL_EXECUTOR)
            .chain(self.executors.keys().map(String::as_str))
            .collect()
    }

    /// Checks a name given with `--executor`: Err with a message naming the known ones.
    pub fn check_executor(&self, name: &str) -> Result<(), String> {
        if name == LOCAL_EXECUTOR || self.executors.contains_key(name) {
            return Ok(());
        }
        let names = self.executor_names();
        let known = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let hint = crate::orchfile::source::did_you_mean(name, names.iter().copied())
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        Err(format!(
            "unknown executor `{name}` given to `--executor`; {hint}known executors: {known}"
        ))
    }
}

/// The executor an instance runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorRef<'a> {
    /// The built-in one: a process on this machine.
    Local,
    /// A declared `[executor.NAME]`.
    Declared(&'a Executor),
}

impl ExecutorRef<'_> {
    /// Its name, as events and `orch show` write it.
    pub fn name(&self) -> &str {
        match self {
            ExecutorRef::Local => LOCAL_EXECUTOR,
            ExecutorRef::Declared(e) => &e.name,
        }
    }
}

/// A declared `[executor.NAME]` table. None of its settings enters an action key: none
/// changes what a command computes, only where and when it runs. A setting that did
/// would have to enter the keys of the instances that run on it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Executor {
    /// Its name.
    pub name: String,
    /// What runs the jobs.
    pub kind: ExecutorKind,
    /// The partition jobs are submitted to (None: the cluster's default).
    pub partition: Option<String>,
    /// Extra submission arguments, in order.
    pub args: Vec<String>,
    /// Jobs in flight at once (at least 1).
    pub max_jobs: u32,
    /// The span of its name, for diagnostics found later.
    pub span: Span,
}

/// The kinds of executor orch knows besides the built-in local one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExecutorKind {
    /// A Slurm cluster: one job per instance or shard.
    Slurm,
}

impl ExecutorKind {
    /// Every kind, for diagnostics.
    pub const ALL: &'static [ExecutorKind] = &[ExecutorKind::Slurm];

    /// Its name in the Orchfile.
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Slurm => "slurm",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<ExecutorKind> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }
}

/// What one instance or shard asks of a cluster executor (`resources`); the local
/// executor ignores it. Not part of any key: where a result was made does not change it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// CPUs.
    pub cpus: Option<u32>,
    /// Memory in bytes.
    pub mem: Option<u64>,
    /// Time limit the scheduler enforces.
    pub time: Option<Duration>,
}

impl Resources {
    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// `cpus 2, mem 4G, time 20m`: what is asked for, as the Orchfile would write it.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.cpus {
            parts.push(format!("cpus {c}"));
        }
        if let Some(m) = self.mem {
            parts.push(format!("mem {}", mem_text(m)));
        }
        if let Some(t) = self.time {
            parts.push(format!("time {}", humantime::format_duration(t)));
        }
        parts.join(", ")
    }
}

/// Bytes in the largest unit that writes them exactly (`4G`, `1536M`, `100`), the form
/// `resources.mem` takes.
pub fn mem_text(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Decodes a map as a list of entries and builds it in one go: a `BTreeMap` writes its
/// entries in key order, which makes the build a single pass, where inserting them one
/// by one splits nodes and moves each large value several times. Maps and lists of
/// pairs have the same encoding.
fn sorted_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: serde::Deserialize<'de>,
{
    let entries: Vec<(String, V)> = serde::Deserialize::deserialize(d)?;
    Ok(entries.into_iter().collect())
}

/// The `[cache]` settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheConfig {
    /// The local store, project-relative (default `.orch/cache`).
    pub dir: Option<String>,
    /// The remote store's URL.
    pub remote: Option<String>,
    /// Upload results after success (default true when there is a remote).
    pub push: bool,
    /// Results holding a file larger than this many bytes are not stored (default: no
    /// limit).
    pub max_blob: Option<u64>,
}

/// A declared phase.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Phase {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// The file declaring it.
    pub file: FileId,
    /// The span of its name.
    pub span: Span,
    /// Hard dependencies, with the span of each name.
    pub needs: Vec<(String, Span)>,
    /// Soft dependencies, with the span of each name.
    pub after: Vec<(String, Span)>,
    /// Matrix axes, sorted.
    pub axes: Vec<String>,
    /// Its instances (indices into [`Project::instances`]), sorted by name.
    pub instances: Vec<usize>,
}

/// A piece of an expanded command.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CmdPiece {
    /// Literal text.
    Text(String),
    /// `{inputs}`: the matched input files, known only after the walk.
    Inputs,
    /// A `{shard.*}` placeholder, known only when the shard runs.
    Shard(ShardHole),
    /// `{outputs}` of a `merge = "none"` shard: its own outputs, known when it runs.
    ShardOutputs,
    /// `{output}` of a `merge = "none"` shard: its one output, known when it runs.
    ShardOutput,
    /// `{depfile}`: the instance's (or the shard's) dependency file.
    Depfile,
}

/// The `{shard.*}` placeholders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ShardHole {
    /// `{shard.input}`: the shard's input file.
    Input,
    /// `{shard.output}`: where the shard writes its part.
    Output,
    /// `{shard.index}`: its position, from 0.
    Index,
    /// `{shard.count}`: how many shards the instance has.
    Count,
    /// `{shard.key}`: the group value, the file path, or the index for chunks.
    Key,
}

impl ShardHole {
    /// The placeholder's name after `shard.`.
    pub fn name(self) -> &'static str {
        match self {
            ShardHole::Input => "input",
            ShardHole::Output => "output",
            ShardHole::Index => "index",
            ShardHole::Count => "count",
            ShardHole::Key => "key",
        }
    }

    /// The hole named `name` (after `shard.`).
    pub fn parse(name: &str) -> Option<ShardHole> {
        [
            ShardHole::Input,
            ShardHole::Output,
            ShardHole::Index,
            ShardHole::Count,
            ShardHole::Key,
        ]
        .into_iter()
        .find(|h| h.name() == name)
    }
}

/// The values of `{shard.*}` for one shard (paths project-relative).
#[derive(Clone, Debug)]
pub struct ShardValues {
    /// `{shard.input}`.
    pub input: String,
    /// `{shard.output}`.
    pub output: String,
    /// `{shard.index}`.
    pub index: usize,
    /// `{shard.count}`.
    pub count: usize,
    /// `{shard.key}`.
    pub key: String,
    /// With `merge = "none"`: the shard's own outputs (its templates, expanded).
    pub outputs: Vec<String>,
}

/// One variable an instance passes to its command and hashes into its key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EnvValue {
    /// Taken from orch's own environment.
    Inherit,
    /// Set to this value.
    Set(String),
}

/// A declared output of an instance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Output {
    /// Normalised project-relative path, without a trailing `/`.
    pub path: String,
    /// Declared as a directory (ended in `/`).
    pub dir: bool,
    /// JSON Schema the output must satisfy.
    pub schema: Option<String>,
    /// A provenance sidecar `PATH.meta.json` is written beside it after success.
    pub meta: bool,
}

/// Retry policy of a phase.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retry {
    /// Total attempts, including the first.
    pub attempts: u32,
    /// Delay before the first retry.
    pub backoff: Duration,
    /// Upper bound of the delay.
    pub max_backoff: Duration,
}

/// A dependency of one instance on another.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Dep {
    /// The upstream instance.
    pub upstream: usize,
    /// `needs` (true) or `after` (false); an implied dependency is hard.
    pub hard: bool,
    /// Implied by files: an input can match the upstream's declared output, and the
    /// phase does not list the upstream's phase in `needs` or `after`.
    pub implied: bool,
}

/// Why an implied dependency exists: the input and the upstream output it can match.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Implied {
    /// The upstream instance.
    pub upstream: usize,
    /// The input pattern (matrix values filled in).
    pub input: String,
    /// The upstream's output it can match: a file, `dir/`, or a per-shard template.
    pub output: String,
    /// Where the input is declared.
    pub span: Span,
}

/// A phase × one matrix combination: the unit that is planned and run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    /// `phase` or `phase[axis=value,...]` (axes sorted).
    pub name: String,
    /// The phase it belongs to.
    pub phase: String,
    /// Its matrix values.
    pub matrix: BTreeMap<String, String>,
    /// The command, or None for a phase that only groups dependencies.
    pub run: Option<Vec<CmdPiece>>,
    /// Input glob patterns, project-relative.
    pub inputs: Vec<String>,
    /// Declared outputs.
    pub outputs: Vec<Output>,
    /// Environment passed and hashed.
    pub env: BTreeMap<String, EnvValue>,
    /// Directory the command runs in, relative to the root ("" for the root).
    pub cwd: String,
    /// Never up to date.
    pub always: bool,
    /// May use the cache.
    pub cache: bool,
    /// Per-attempt time limit.
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retry: Option<Retry>,
    /// Dependencies, sorted by upstream index.
    pub deps: Vec<Dep>,
    /// The evidence of each implied dependency, sorted by upstream (one per upstream).
    pub implied: Vec<Implied>,
    /// How the instance is split into shards (None: one piece).
    pub shard: Option<crate::shard::ShardSpec>,
    /// With `merge = "none"`: each shard's outputs, with `{shard.key}` / `{shard.index}`
    /// still in them.
    pub shard_outputs: Vec<Output>,
    /// The dependency file the command writes (project-relative; per shard with
    /// `{shard.key}` / `{shard.index}` still in it), read after a success.
    pub depfile: Option<String>,
    /// The declared executor its phase names (None: `local`); see
    /// [`Project::executor_of`], which also applies `--executor`.
    pub executor: Option<String>,
    /// What it asks of a cluster executor.
    pub resources: Resources,
}

impl Instance {
    /// The command with `{inputs}` replaced by the given (already quoted) input list and
    /// `{shard.*}` by the shard's values.
    pub fn command(&self, quoted_inputs: &str, shard: Option<&ShardValues>) -> Option<String> {
        self.run.as_ref().map(|pieces| {
            let mut s = String::new();
            for p in pieces {
                match p {
                    CmdPiece::Text(t) => s.push_str(t),
                    CmdPiece::Inputs => s.push_str(quoted_inputs),
                    CmdPiece::Shard(h) => {
                        if let Some(v) = shard {
                            let rel =
                                |p: &str| template::shell_quote(&path::relative_to(&self.cwd, p));
                            s.push_str(&match h {
                                ShardHole::Input => rel(&v.input),
                                ShardHole::Output => rel(&v.output),
                                ShardHole::Index => v.index.to_string(),
                                ShardHole::Count => v.count.to_string(),
                                ShardHole::Key => template::shell_quote(&v.key),
                            });
                        }
                    }
                    CmdPiece::ShardOutputs | CmdPiece::ShardOutput => {
                        if let Some(v) = shard {
                            let rel: Vec<String> = v
                                .outputs
                                .iter()
                                .map(|p| path::relative_to(&self.cwd, p))
                                .collect();
                            s.push_str(&template::shell_join(rel.iter().map(String::as_str)));
                        }
                    }
                    CmdPiece::Depfile => {
                        if let Some(d) = self.depfile_for(shard) {
                            s.push_str(&template::shell_quote(&path::relative_to(&self.cwd, &d)));
                        }
                    }
                }
            }
            s
        })
    }

    /// Whether the command uses `{shard.index}` or `{shard.count}`, which makes a shard's
    /// result depend on its position.
    pub fn uses_shard_position(&self) -> bool {
        self.run.as_ref().is_some_and(|p| {
            p.iter()
                .any(|x| matches!(x, CmdPiece::Shard(ShardHole::Index | ShardHole::Count)))
        }) || self
            .shard_outputs
            .iter()
            .any(|o| o.path.contains("{shard.index}") || o.path.contains("{shard.count}"))
    }

    /// The command with `{inputs}` left as a placeholder and literal braces escaped: a
    /// one-to-one text form for the action key.
    pub fn command_template(&self) -> Option<String> {
        self.run.as_ref().map(|pieces| {
            let mut s = String::new();
            for p in pieces {
                match p {
                    CmdPiece::Text(t) if !t.contains(['{', '}']) => s.push_str(t),
                    CmdPiece::Text(t) => {
                        for c in t.chars() {
                            match c {
                                '{' => s.push_str("{{"),
                                '}' => s.push_str("}}"),
                                c => s.push(c),
                            }
                        }
                    }
                    CmdPiece::Inputs => s.push_str("{inputs}"),
                    CmdPiece::Shard(h) => {
                        s.push_str("{shard.");
                        s.push_str(h.name());
                        s.push('}');
                    }
                    CmdPiece::ShardOutputs => s.push_str("{outputs}"),
                    CmdPiece::ShardOutput => s.push_str("{output}"),
                    CmdPiece::Depfile => s.push_str("{depfile}"),
                }
            }
            s
        })
    }

    /// The command to run, given the input files that exist (project-relative).
    pub fn command_line(&self, inputs: &[&str], shard: Option<&ShardValues>) -> Option<String> {
        if !self.uses_inputs() {
            return self.command("", shard);
        }
        let rel: Vec<String> = inputs
            .iter()
            .map(|p| path::relative_to(&self.cwd, p))
            .collect();
        self.command(&template::shell_join(rel.iter().map(String::as_str)), shard)
    }

    /// The depfile of one shard (or of the whole instance, `shard` None).
    pub fn depfile_for(&self, shard: Option<&ShardValues>) -> Option<String> {
        let t = self.depfile.as_ref()?;
        Some(match shard {
            Some(v) => path::normalize(
                &t.replace("{shard.key}", &v.key)
                    .replace("{shard.index}", &v.index.to_string()),
            ),
            None => t.clone(),
        })
    }

    /// Whether the command uses `{inputs}`.
    pub fn uses_inputs(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|p| p.contains(&CmdPiece::Inputs))
    }
}
