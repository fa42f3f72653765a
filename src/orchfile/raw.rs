//! The Orchfile as written: serde structs that mirror the TOML of format 1, with spans.
//!
//! These types never leave `orchfile/` and `model/`; everything downstream takes the
//! validated [`crate::model::Project`]. They also generate the Orchfile JSON Schema
//! (`orch schema`), so the published schema cannot drift from what the loader accepts.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A whole Orchfile (format 1).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Orchfile (format 1)",
    description = "orch's pipeline file, `Orchfile.toml`: phases with their commands, inputs, outputs and dependencies."
)]
pub struct RawOrchfile {
    /// Project-wide settings.
    #[serde(default)]
    pub orch: Option<RawOrch>,
    /// Named values usable as `{vars.NAME}` in commands, outputs and matrices.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawVar>")]
    pub vars: BTreeMap<String, Spanned<RawVar>>,
    /// The content-addressed cache.
    #[serde(default)]
    pub cache: Option<RawCache>,
    /// Executors that run instances elsewhere (a cluster), by name; `local` is built in.
    #[serde(default)]
    pub executor: BTreeMap<String, RawExecutor>,
    /// The phases of the pipeline, by name.
    #[serde(default)]
    pub phase: BTreeMap<String, RawPhase>,
}

/// Keys allowed at the top of an Orchfile.
pub const TOP_KEYS: &[&str] = &["orch", "vars", "cache", "executor", "phase"];
/// Keys allowed at the top of an included fragment.
pub const FRAGMENT_KEYS: &[&str] = &["vars", "executor", "phase"];

/// The `[orch]` table.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Orch")]
pub struct RawOrch {
    /// Orchfile format version; only 1 exists.
    #[schemars(with = "Option<i64>")]
    pub format: Option<Spanned<i64>>,
    /// Globs of fragment files whose `[phase.*]`, `[executor.*]` and `[vars]` join this file.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub include: Vec<Spanned<String>>,
    /// Default number of parallel jobs (`-j`); default: the number of CPUs.
    #[schemars(with = "Option<i64>")]
    pub jobs: Option<Spanned<i64>>,
    /// Runs whose events and logs `.orch/` keeps (at least 1); older ones are removed at
    /// the end of each build. Default: 100.
    #[schemars(with = "Option<i64>")]
    pub keep_runs: Option<Spanned<i64>>,
    /// Environment variables passed to every phase and hashed into every key.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub env: Vec<Spanned<String>>,
}

/// Keys of `[orch]`.
pub const ORCH_KEYS: &[&str] = &["format", "include", "jobs", "keep_runs", "env"];

/// The `[cache]` table.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Cache")]
pub struct RawCache {
    /// Local content-addressed store (default `.orch/cache`); not the project root, nor a
    /// directory holding project files.
    #[schemars(with = "Option<String>")]
    pub dir: Option<Spanned<String>>,
    /// Remote cache URL: `http(s)://HOST/PATH`, `s3://BUCKET[/PREFIX]` or `file:///ABSOLUTE/PATH`.
    #[schemars(with = "Option<String>")]
    pub remote: Option<Spanned<String>>,
    /// Upload results after success.
    pub push: Option<bool>,
    /// Results holding a file larger than this (`"512MiB"`, `"2G"`, bytes; K, M, G, T are
    /// powers of 1024) are neither stored locally nor pushed (default: no limit).
    #[schemars(with = "Option<String>")]
    pub max_blob: Option<Spanned<String>>,
}

/// Keys of `[cache]`.
pub const CACHE_KEYS: &[&str] = &["dir", "remote", "push", "max_blob"];

/// One `[executor.NAME]` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Executor")]
pub struct RawExecutor {
    /// What runs the instances: `slurm` (the only kind).
    // Optional to serde, so a missing `kind` gets orch's own diagnostic, not serde's;
    // required in the schema.
    #[schemars(with = "String", extend("enum" = ["slurm"]))]
    pub kind: Option<Spanned<String>>,
    /// The Slurm partition jobs are submitted to (default: the cluster's default).
    #[schemars(with = "Option<String>")]
    pub partition: Option<Spanned<String>>,
    /// Extra submission arguments, e.g. `["--time=30:00", "--account=lab"]`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub args: Vec<Spanned<String>>,
    /// Jobs in flight at once on this executor, independent of `-j` (default 100).
    #[schemars(with = "Option<i64>", extend("minimum" = 1))]
    pub max_jobs: Option<Spanned<i64>>,
}

/// Keys of an `[executor.NAME]` table.
pub const EXECUTOR_KEYS: &[&str] = &["kind", "partition", "args", "max_jobs"];

/// One `[phase.NAME]` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Phase")]
pub struct RawPhase {
    /// What the phase does, for `plan`, `graph` and `status`.
    pub description: Option<String>,
    /// Shell command, run by `sh -c` in the project root (or `cwd`). A phase without
    /// `run` only groups its dependencies.
    #[schemars(with = "Option<String>")]
    pub run: Option<Spanned<String>>,
    /// Globs of input files, relative to the project root.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub inputs: Vec<Spanned<String>>,
    /// Files (or directories ending in `/`) the command produces.
    #[serde(default)]
    #[schemars(with = "Vec<RawOutput>")]
    pub outputs: Vec<Spanned<RawOutput>>,
    /// Hard dependencies: must succeed first; their outputs enter this phase's key.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<Spanned<String>>,
    /// Soft dependencies: ordering, and their outputs enter the key when they succeed.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub after: Vec<Spanned<String>>,
    /// One instance per combination of axis values.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawAxis>")]
    pub matrix: BTreeMap<String, Spanned<RawAxis>>,
    /// How the work of one instance is split into shards.
    #[schemars(with = "Option<RawShard>")]
    pub shard: Option<Spanned<RawShard>>,
    /// Environment: a list of variable names passed through, or a table of values to set.
    /// Either way the values enter the action key as digests.
    #[schemars(with = "Option<RawEnv>")]
    pub env: Option<Spanned<RawEnv>>,
    /// Time limit of one attempt, e.g. `"10m"`.
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// Retry policy.
    #[schemars(with = "Option<RawRetry>")]
    pub retry: Option<Spanned<RawRetry>>,
    /// Whether results may be stored in and restored from the cache (default true).
    pub cache: Option<bool>,
    /// Never up to date when true.
    pub always: Option<bool>,
    /// Directory, relative to the project root, the command runs in.
    #[schemars(with = "Option<String>")]
    pub cwd: Option<Spanned<String>>,
    /// Makefile-syntax dependency file the command writes (`cc -MD -MF PATH`); after a
    /// success, the files it lists inside the project become inputs. Per shard, it must
    /// contain `{shard.key}` or `{shard.index}`.
    #[schemars(with = "Option<String>")]
    pub depfile: Option<Spanned<String>>,
    /// The executor that runs the phase's instances: `local` (the default) or the name of
    /// an `[executor.NAME]` table.
    #[schemars(with = "Option<String>")]
    pub executor: Option<Spanned<String>>,
    /// What one instance (or shard) asks of a cluster executor; ignored locally.
    #[schemars(with = "Option<RawResources>")]
    pub resources: Option<Spanned<RawResources>>,
}

/// Keys of a `[phase.NAME]` table.
pub const PHASE_KEYS: &[&str] = &[
    "description",
    "run",
    "inputs",
    "outputs",
    "needs",
    "after",
    "matrix",
    "shard",
    "env",
    "timeout",
    "retry",
    "cache",
    "always",
    "cwd",
    "depfile",
    "executor",
    "resources",
];

/// A phase's `resources`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Resources")]
pub struct RawResources {
    /// CPUs per instance or shard (at least 1).
    #[schemars(with = "Option<i64>", extend("minimum" = 1))]
    pub cpus: Option<Spanned<i64>>,
    /// Memory per instance or shard: digits with an optional `K`, `M`, `G` or `T` suffix
    /// (powers of 1024; no suffix is bytes), e.g. `"4G"`.
    #[schemars(with = "Option<String>")]
    pub mem: Option<Spanned<String>>,
    /// Time limit the scheduler enforces, e.g. `"20m"` (the syntax of `timeout`).
    #[schemars(with = "Option<String>")]
    pub time: Option<Spanned<String>>,
}

/// Keys of a `resources` table.
pub const RESOURCES_KEYS: &[&str] = &["cpus", "mem", "time"];

/// A declared output: a path, or a table with a JSON Schema the output must satisfy.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Output")]
pub enum RawOutput {
    /// A file path, or a directory ending in `/`.
    Path(String),
    /// A path with a schema.
    Table {
        /// A file path, or a directory ending in `/`.
        path: String,
        /// JSON Schema file the output (JSON, or every line of JSONL) must satisfy.
        schema: Option<String>,
        /// Write a provenance sidecar `PATH.meta.json` beside the output after success.
        #[serde(default)]
        meta: bool,
    },
}

/// Keys of an output table.
pub const OUTPUT_KEYS: &[&str] = &["meta", "path", "schema"];

/// A `[vars]` value.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Var")]
pub enum RawVar {
    /// A single string.
    One(String),
    /// A list of strings.
    List(Vec<String>),
}

/// A matrix axis: a literal list, or a `"{vars.NAME}"` reference to a list variable.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Axis")]
pub enum RawAxis {
    /// Literal values.
    List(Vec<String>),
    /// A reference such as `"{vars.langs}"`.
    Reference(String),
}

/// A phase's `env`.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "Env")]
pub enum RawEnv {
    /// Names of variables passed through from orch's environment.
    Names(Vec<String>),
    /// Variables set to these values.
    Values(BTreeMap<String, String>),
}

/// The `shard` table.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Shard")]
pub struct RawShard {
    /// `full` (default), `files`, `chunk` or `group`.
    pub strategy: Option<String>,
    /// The glob (`files`) or JSON Lines file (`chunk`, `group`) to split.
    pub source: Option<String>,
    /// The field records are grouped by (`group`).
    pub key: Option<String>,
    /// Records per shard (`chunk`).
    pub size: Option<u64>,
    /// At most this many shards of one instance run at once.
    pub parallel: Option<u64>,
    /// `concat` (default) or `none`.
    pub merge: Option<String>,
}

/// Keys of a `shard` table.
pub const SHARD_KEYS: &[&str] = &["strategy", "source", "key", "size", "parallel", "merge"];

/// The `retry` table.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Retry")]
pub struct RawRetry {
    /// Total attempts, including the first.
    pub attempts: u32,
    /// Delay before the first retry, doubled each time (e.g. `"200ms"`).
    pub backoff: Option<String>,
    /// Upper bound of the delay.
    pub max_backoff: Option<String>,
}

/// Keys of a `retry` table.
pub const RETRY_KEYS: &[&str] = &["attempts", "backoff", "max_backoff"];

/// Deserializes a value that is either a string or something else, with one visitor.
macro_rules! either_visitor {
    ($ty:ident, $expecting:literal, str => $on_str:expr, seq => $on_seq:expr, map => $on_map:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    #[allow(clippy::redundant_closure_call)]
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        ($on_str)(v).ok_or_else(|| E::invalid_type(de::Unexpected::Str(v), &self))
                    }
                    #[allow(clippy::redundant_closure_call)]
                    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<$ty, A::Error> {
                        match ($on_seq)(seq)? {
                            Some(v) => Ok(v),
                            None => Err(de::Error::invalid_type(de::Unexpected::Seq, &self)),
                        }
                    }
                    #[allow(clippy::redundant_closure_call)]
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        match ($on_map)(map)? {
                            Some(v) => Ok(v),
                            None => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
                        }
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

fn strings<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<String>, A::Error> {
    let mut out = Vec::new();
    while let Some(s) = seq.next_element::<String>()? {
        out.push(s);
    }
    Ok(out)
}

/// The table form of an output, deserialized by serde's derive for good key errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputTable {
    path: String,
    schema: Option<String>,
    #[serde(default)]
    meta: bool,
}

either_visitor!(RawOutput, "a path string or a table `{ path = \"...\", schema = \"...\" }`",
    str => |v: &str| Some(RawOutput::Path(v.to_owned())),
    seq => |_seq| Ok::<_, A::Error>(None),
    map => |map: A| {
        let t = OutputTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Some(RawOutput::Table { path: t.path, schema: t.schema, meta: t.meta }))
    }
);

either_visitor!(RawVar, "a string or a list of strings",
    str => |v: &str| Some(RawVar::One(v.to_owned())),
    seq => |seq| strings(seq).map(|v| Some(RawVar::List(v))),
    map => |_map| Ok::<_, A::Error>(None)
);

either_visitor!(RawAxis, "a list of strings or a `\"{vars.NAME}\"` reference",
    str => |v: &str| Some(RawAxis::Reference(v.to_owned())),
    seq => |seq| strings(seq).map(|v| Some(RawAxis::List(v))),
    map => |_map| Ok::<_, A::Error>(None)
);

either_visitor!(RawEnv, "a list of variable names or a table of `NAME = \"value\"`",
    str => |_v: &str| None,
    seq => |seq| strings(seq).map(|v| Some(RawEnv::Names(v))),
    map => |map: A| {
        BTreeMap::<String, String>::deserialize(de::value::MapAccessDeserializer::new(map))
            .map(|m| Some(RawEnv::Values(m)))
    }
);

/// The JSON Schema of the Orchfile, as published in `schemas/orchfile.v1.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RawOrchfile);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(schema: &serde_json::Value, def: &str) -> Vec<String> {
        let props = if def.is_empty() {
            &schema["properties"]
        } else {
            &schema["$defs"][def]["properties"]
        };
        let mut keys: Vec<String> = props
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    /// `schemas/orchfile.v1.json` is generated; regenerate it with
    /// `cargo run -- schema > schemas/orchfile.v1.json`.
    #[test]
    fn committed_schema_is_up_to_date() {
        let committed = include_str!("../../schemas/orchfile.v1.json");
        assert!(
            committed == json_schema(),
            "schemas/orchfile.v1.json is out of date: run `cargo run -- schema > schemas/orchfile.v1.json`"
        );
    }

    /// The published schema accepts executors and resources as the loader does, and
    /// refuses what the loader refuses by shape.
    #[test]
    fn the_schema_describes_executors_and_resources() {
        let schema: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let valid = |toml_text: &str| {
            let doc: serde_json::Value = toml::from_str(toml_text).unwrap();
            validator.is_valid(&doc)
        };
        let cluster = "[executor.cluster]\nkind = \"slurm\"\npartition = \"debug\"\nargs = [\"--time=30:00\"]\nmax_jobs = 200\n";
        let phase = "[phase.t]\nrun = \"x\"\nexecutor = \"cluster\"\nresources = { cpus = 2, mem = \"4G\", time = \"20m\" }\n";
        assert!(valid(&format!("{cluster}{phase}")));
        assert!(
            !valid("[executor.c]\npartition = \"debug\"\n"),
            "kind is required"
        );
        assert!(!valid("[executor.c]\nkind = \"slurm\"\nqueue = \"x\"\n"));
        assert!(!valid("[executor.c]\nkind = \"pbs\"\n"));
        assert!(!valid("[executor.c]\nkind = \"slurm\"\nmax_jobs = 0\n"));
        assert!(!valid("[phase.t]\nrun = \"x\"\nresources = { cpus = 0 }\n"));
        assert!(!valid(
            "[phase.t]\nrun = \"x\"\nresources = { disk = \"1G\" }\n"
        ));
        assert!(!valid(
            "[phase.t]\nrun = \"x\"\nresources = { cpus = \"2\" }\n"
        ));
    }

    /// The key lists used for unknown-key diagnostics must match the structs.
    #[test]
    fn key_lists_match_the_schema() {
        let schema: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
        assert_eq!(keys_of(&schema, ""), sorted(TOP_KEYS));
        assert_eq!(keys_of(&schema, "Orch"), sorted(ORCH_KEYS));
        assert_eq!(keys_of(&schema, "Cache"), sorted(CACHE_KEYS));
        assert_eq!(keys_of(&schema, "Phase"), sorted(PHASE_KEYS));
        assert_eq!(keys_of(&schema, "Shard"), sorted(SHARD_KEYS));
        assert_eq!(keys_of(&schema, "Retry"), sorted(RETRY_KEYS));
        assert_eq!(keys_of(&schema, "Executor"), sorted(EXECUTOR_KEYS));
        assert_eq!(keys_of(&schema, "Resources"), sorted(RESOURCES_KEYS));
    }
}
