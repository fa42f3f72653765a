//! The project's state at the start of a command: the selected instances, what the state
//! store recorded for them, the input files their globs match, and the current digests
//! of those inputs and of the recorded outputs.
//!
//! Taking a snapshot is the whole cost of a no-op build, so it does each thing once: one
//! query per table, one directory walk for all patterns, one parallel stat-and-hash pass
//! that reuses every cached digest whose stat is unchanged.
//!
//! It also owns the two things that keep a key honest beyond file contents: variable
//! values enter keys only as digests keyed with the project's secret `.orch/key`, and an
//! [`InputGuard`] re-checks, after a command ran, that its inputs still hold what was
//! hashed into its key.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use thiserror::Error;

use crate::fs::{self, CachedDigest, Digest, FileStat, PathDigest};
use crate::graph::Graph;
use crate::model::path::is_plain;
use crate::model::{EnvValue, Project};
use crate::plan::{KeyParts, PlanSource, Recorded, Success, Upstream};
use crate::store::{DigestRow, InstanceRecord, LastStatus, Layout, Store, StoreError};

pub mod env;
mod warm;

pub use warm::Kept;

/// Directories the input walk never enters.
pub const SKIP_DIRS: &[&str] = &[".orch", ".git"];

/// `[cache] dir` relative to the root when it lies inside the project (as written,
/// normalised: validation has refused `..` and the root itself).
pub fn cache_dir_in_project(project: &Project) -> Option<String> {
    let dir = project.cache.dir.as_deref()?;
    let rel = std::path::Path::new(dir);
    let rel = rel.strip_prefix(&project.root).unwrap_or(rel);
    if rel.is_absolute() {
        return None;
    }
    let parts: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => p.to_str(),
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Errors while taking a snapshot.
#[derive(Debug, Error, miette::Diagnostic)]
pub enum SnapshotError {
    /// The state store failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] StoreError),
    /// The project could not be walked or a file could not be read.
    #[error("cannot read `{path}`: {source}")]
    #[diagnostic(code(orch::fs::io), help("check the file's permissions"))]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A glob matched a symlink that leads outside the project root.
    #[error("input `{path}` is a symlink that leads outside the project root")]
    #[diagnostic(
        code(orch::model::path_escapes_root),
        help(
            "orch reads nothing outside the project: remove the link, or narrow the input pattern"
        )
    )]
    Escapes {
        /// The matched path, relative to the root.
        path: String,
    },
    /// A glob matched a file whose name is not valid UTF-8.
    #[error("input `{path}` has a name that is not valid UTF-8")]
    #[diagnostic(
        code(orch::fs::not_utf8),
        help(
            "orch names inputs in keys, events and commands as text: rename the file, or narrow the input pattern so it does not match"
        )
    )]
    NotUtf8 {
        /// The matched path, with the invalid bytes replaced.
        path: String,
    },
    /// An input is a FIFO, socket or device.
    #[error("cannot read `{path}`: {source}")]
    #[diagnostic(
        code(orch::fs::special),
        help(
            "inputs and shard sources must be regular files or directories: remove it from `inputs`, or replace it with a file"
        )
    )]
    Special {
        /// The path.
        path: String,
        /// What it is.
        source: fs::digest::SpecialFile,
    },
    /// Ctrl-C (or SIGTERM) arrived while inputs were being read.
    #[error("interrupted while reading `{path}`")]
    #[diagnostic(code(orch::interrupted))]
    Interrupted {
        /// The path being read.
        path: String,
    },
}

impl SnapshotError {
    /// The error for reading `path`, by what went wrong.
    fn reading(path: String, e: std::io::Error) -> SnapshotError {
        if let Some(special) = fs::digest::as_special(&e) {
            SnapshotError::Special {
                path,
                source: special.clone(),
            }
        } else if fs::digest::is_interrupted(&e) {
            SnapshotError::Interrupted { path }
        } else {
            SnapshotError::Io { path, source: e }
        }
    }

    /// The exit status of a command that stops on this error: a special file or a path
    /// escaping the root is the configuration's fault (2), an interruption exits 130,
    /// anything else fails (1).
    pub fn exit_code(&self) -> i32 {
        match self {
            SnapshotError::Special { .. }
            | SnapshotError::Escapes { .. }
            | SnapshotError::NotUtf8 { .. } => crate::EXIT_USAGE,
            SnapshotError::Interrupted { .. } => crate::exec::signal::exit_status(),
            _ => crate::EXIT_FAILED,
        }
    }
}

/// Converts a stored digest row to a cache entry.
pub fn row_to_cached(r: &DigestRow) -> CachedDigest {
    CachedDigest {
        stat: FileStat {
            size: r.size,
            mtime_ns: r.mtime_ns,
            ino: r.ino,
            ctime_ns: r.ctime_ns,
            is_dir: r.is_dir,
        },
        digest: Digest(r.digest),
        hashed_at_ns: r.hashed_at_ns,
    }
}

/// Converts a cache entry to a stored digest row.
pub fn cached_to_row(c: &CachedDigest) -> DigestRow {
    DigestRow {
        size: c.stat.size,
        mtime_ns: c.stat.mtime_ns,
        ino: c.stat.ino,
        ctime_ns: c.stat.ctime_ns,
        is_dir: c.stat.is_dir,
        digest: c.digest.0,
        hashed_at_ns: c.hashed_at_ns,
    }
}

/// What the input walk looked at, handed to `.orch/fresh.bin` (see [`crate::fresh`]).
#[derive(Debug, Default)]
pub struct Walked {
    /// When the walk began (ns since the epoch): a directory changed since cannot vouch
    /// for its listing.
    pub at_ns: i64,
    /// Every directory listed, with its `lstat` (None: not taken).
    pub listed: Vec<(String, Option<FileStat>)>,
    /// Whether a match was a special file, which a build warns about.
    pub special: bool,
}

/// Digests read just now, overriding the snapshot's (None: the file is missing).
pub type FreshDigests = BTreeMap<String, Option<Digest>>;

/// The state of a project at the start of a command.
pub struct Snapshot<'p> {
    /// The project.
    pub project: &'p Project,
    /// Its graph.
    pub graph: &'p Graph,
    /// Selected instances in topological order.
    pub order: Vec<usize>,
    /// Instances forced to run.
    pub forced: BTreeSet<usize>,
    /// Recorded state, per instance.
    pub records: Vec<Recorded>,
    /// Raw store records, by instance name; the manifests of selected instances are
    /// moved out into `records`, so only their other fields are left to read.
    pub raw_records: BTreeMap<String, InstanceRecord>,
    /// Files each instance's input globs match (sorted), per instance.
    pub inputs: Vec<Vec<String>>,
    /// Current digests of inputs and recorded outputs (None: missing).
    pub digests: HashMap<String, Option<Digest>>,
    /// Digest-cache changes to write back.
    pub digest_updates: Vec<(String, Option<DigestRow>)>,
    /// What the input walk listed.
    pub walked: Walked,
    /// Instances with a glob that can match another instance's output.
    rewalk: BTreeSet<usize>,
    /// Declared outputs and every directory above them.
    produced: HashSet<String>,
    /// Directories declared as outputs by some instance.
    produced_dirs: Vec<String>,
    /// Keyed digests of inherited environment values, by variable name.
    env: BTreeMap<String, Option<Digest>>,
    /// The key of variable-value digests.
    value_key: [u8; 32],
    /// Whether that is the project's key (else a one-off stand-in).
    value_key_known: bool,
    /// What each present file was hashed from, to re-check inputs after a command.
    entries: HashMap<String, CachedDigest>,
    /// The same for files read again when their consumer became ready (newer).
    reread: Mutex<HashMap<String, CachedDigest>>,
    /// What every shard of an instance re-checks besides its own input, by instance.
    shard_inputs: Mutex<HashMap<String, Arc<Guarded>>>,
}

impl<'p> Snapshot<'p> {
    /// Reads records, walks inputs and digests files for the `selected` instances.
    pub fn take(
        project: &'p Project,
        graph: &'p Graph,
        selected: &BTreeSet<usize>,
        forced: BTreeSet<usize>,
        store: &Store,
    ) -> Result<Snapshot<'p>, SnapshotError> {
        let order: Vec<usize> = graph
            .order
            .iter()
            .copied()
            .filter(|i| selected.contains(i))
            .collect();
        // Every declared output and every directory above one: a plain input naming any
        // of them can change while the build runs.
        let mut produced = HashSet::new();
        let mut produced_dirs = Vec::new();
        for inst in &project.instances {
            // Per-shard outputs are known only when the shards run: their fixed directory
            // counts as produced.
            for t in inst.shard_outputs.iter().map(|o| &o.path) {
                let dir: Vec<&str> = t.split('/').take_while(|c| !c.contains('{')).collect();
                if !dir.is_empty() && dir.len() < t.split('/').count() {
                    produced_dirs.push(dir.join("/"));
                }
            }
            for o in &inst.outputs {
                if o.dir {
                    produced_dirs.push(o.path.clone());
                }
                let mut p = o.path.as_str();
                while produced.insert(p.to_owned()) {
                    match p.rfind('/') {
                        Some(pos) => p = &p[..pos],
                        None => break,
                    }
                }
            }
        }
        produced_dirs.sort();
        produced_dirs.dedup();

        // The walk and the stats of everything the project names need no state: they run
        // on another thread while the state store is read on this one (the store's
        // connection stays on this thread).
        let (walked, raw_records, records, cache) = std::thread::scope(|scope| {
            let walker = scope.spawn(|| -> Result<_, SnapshotError> {
                let (inputs, walked) = expand_inputs(project, &order, true)?;
                let mut named: Vec<&str> = Vec::new();
                for (k, &i) in order.iter().enumerate() {
                    let inst = &project.instances[i];
                    named.extend(inputs[k].iter().map(String::as_str));
                    named.extend(schema_files(inst));
                    // File outputs: most are recorded, and their digests are needed.
                    named.extend(
                        inst.outputs
                            .iter()
                            .filter(|o| !o.dir)
                            .map(|o| o.path.as_str()),
                    );
                }
                named.sort_unstable();
                named.dedup();
                let named: Vec<String> = named.into_iter().map(str::to_owned).collect();
                let stats = fs::stat_paths(&project.root, &named);
                Ok((inputs, walked, named, stats))
            });
            let read = || -> Result<_, SnapshotError> {
                let mut raw_records = store.load_results()?;
                let mut records = Vec::with_capacity(order.len());
                for &i in &order {
                    let Some(r) = raw_records.get_mut(&project.instances[i].name) else {
                        continue;
                    };
                    records.push((i, recorded(r)));
                }
                let cache = store.load_digests()?;
                Ok((raw_records, records, cache))
            };
            let read = read();
            // A panic on the walker is a bug; it surfaces here as it would have inline.
            let walked = match walker.join() {
                Ok(w) => w,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            let (raw_records, records, cache) = read?;
            Ok::<_, SnapshotError>((walked?, raw_records, records, cache))
        })?;
        let (found, walked, named, named_stats) = walked;
        let mut all_records = vec![Recorded::default(); project.instances.len()];
        for (i, r) in records {
            all_records[i] = r;
        }
        let records = all_records;

        let mut inputs = vec![Vec::new(); project.instances.len()];
        for (k, files) in found.into_iter().enumerate() {
            inputs[order[k]] = files;
        }
        let rewalk = globs_matching_outputs(project, &order, &produced_dirs);

        // Everything whose digest the plan needs: inputs, schemas and recorded outputs.
        // Most were statted above; what only the records name is statted now.
        let mut wanted: Vec<&str> = Vec::new();
        for &i in &order {
            wanted.extend(inputs[i].iter().map(String::as_str));
            wanted.extend(schema_files(&project.instances[i]));
            if let Some(m) = &records[i].success {
                wanted.extend(m.outputs.keys().map(String::as_str));
                // Discovered inputs are checked beside the key, through the same digest
                // cache, so a no-op build hashes no header again.
                wanted.extend(m.discovered.keys().map(String::as_str));
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut named_stats: Vec<Option<std::io::Result<Option<FileStat>>>> =
            named_stats.into_iter().map(Some).collect();
        let mut stats = Vec::with_capacity(wanted.len());
        let mut unstatted = Vec::new();
        for (k, p) in wanted.iter().enumerate() {
            match named.binary_search_by(|n| n.as_str().cmp(p)) {
                Ok(at) => stats.push(named_stats[at].take()),
                Err(_) => {
                    unstatted.push(k);
                    stats.push(None);
                }
            }
        }
        let wanted: Vec<String> = wanted.into_iter().map(str::to_owned).collect();
        let late: Vec<String> = unstatted.iter().map(|&k| wanted[k].clone()).collect();
        for (k, st) in unstatted
            .into_iter()
            .zip(fs::stat_paths(&project.root, &late))
        {
            stats[k] = Some(st);
        }
        // Every slot is filled above; an empty one would only mean "look again".
        let stats = stats
            .into_iter()
            .zip(&wanted)
            .map(|(st, p)| st.unwrap_or_else(|| fs::stat_path(&project.root.join(p))))
            .collect();

        let results = fs::digest_statted(&project.root, &wanted, stats, |p| {
            cache.get(p).map(row_to_cached)
        });
        let mut digests = HashMap::with_capacity(wanted.len());
        let mut entries = HashMap::with_capacity(wanted.len());
        let mut digest_updates = Vec::new();
        for (path, r) in wanted.into_iter().zip(results) {
            match r {
                Ok(PathDigest::Missing) => {
                    if cache.contains_key(&path) {
                        digest_updates.push((path.clone(), None));
                    }
                    digests.insert(path, None);
                }
                Ok(PathDigest::Present {
                    digest, refreshed, ..
                }) => {
                    let entry = refreshed.or_else(|| cache.get(&path).map(row_to_cached));
                    if let Some(c) = refreshed
                        && !c.stat.is_dir
                    {
                        digest_updates.push((path.clone(), Some(cached_to_row(&c))));
                    }
                    if let Some(c) = entry {
                        entries.insert(path.clone(), c);
                    }
                    digests.insert(path, Some(digest));
                }
                Err(e) => return Err(SnapshotError::reading(path, e)),
            }
        }
        // Without the project's key (never built, or `.orch/` not writable) a one-off
        // random key stands in: values then compare as unknown, so never as unchanged.
        let project_key = Layout::new(&project.root).read_value_key();
        let value_key_known = project_key.is_some();
        let value_key = project_key.unwrap_or_else(one_off_key);
        // Inherited values are read once; only their keyed digests are kept.
        let mut env = BTreeMap::new();
        for &i in &order {
            for (name, v) in &project.instances[i].env {
                if *v == EnvValue::Inherit && !env.contains_key(name) {
                    env.insert(
                        name.clone(),
                        env::var_os(name).map(|v| value_digest(&value_key, v.as_encoded_bytes())),
                    );
                }
            }
        }

        Ok(Snapshot {
            project,
            graph,
            order,
            forced,
            records,
            raw_records,
            inputs,
            digests,
            digest_updates,
            walked,
            produced,
            produced_dirs,
            rewalk,
            env,
            value_key,
            value_key_known,
            entries,
            reread: Mutex::new(HashMap::new()),
            shard_inputs: Mutex::new(HashMap::new()),
        })
    }

    /// The stat `path`'s digest was computed from, and when (None: missing, or not
    /// looked at).
    pub fn hashed_from(&self, path: &str) -> Option<CachedDigest> {
        self.entries.get(path).copied()
    }

    /// The keyed digests of the inherited variables, by name (None: unset).
    pub fn inherited_env(&self) -> &BTreeMap<String, Option<Digest>> {
        &self.env
    }

    /// Whether variable values can be compared with recorded ones: false when the
    /// project's `.orch/key` is missing, and every value then reads as changed.
    pub fn values_known(&self) -> bool {
        self.value_key_known
    }

    /// What to re-check after the command keyed with `parts` ran: its inputs and
    /// schemas, each with the stat it was last hashed from.
    pub fn input_guard(&self, parts: &KeyParts) -> InputGuard {
        InputGuard {
            root: self.project.root.clone(),
            files: Arc::new(self.guarded(parts, &HashSet::new())),
            own: None,
        }
    }

    /// The stat each of `parts`' inputs, schemas and upstream outputs (but `skip`) was
    /// last hashed from.
    fn guarded(&self, parts: &KeyParts, skip: &HashSet<&str>) -> Guarded {
        let reread = self.reread.lock().ok();
        let mut files = BTreeMap::new();
        // Upstream outputs are read by the command as much as its inputs are: one
        // rewritten meanwhile (by hand, by another process) makes the result unrecordable.
        let upstream = parts.upstream.values().flat_map(|u| match u {
            crate::plan::Upstream::Present { outputs, .. } => Some(outputs.iter()),
            crate::plan::Upstream::Absent => None,
        });
        for (p, d) in parts.inputs.iter().chain(&parts.schemas) {
            if !skip.contains(p.as_str()) {
                files.insert(p.clone(), (*d, self.entry(reread.as_deref(), p)));
            }
        }
        // An upstream that ran in this build rewrote its outputs after the stat on record
        // was taken: that stat vouches for nothing, and content decides after the run.
        for (p, d) in upstream.flatten() {
            let entry = self.entry(reread.as_deref(), p).filter(|e| {
                e.digest == *d
                    && fs::stat_path(&self.project.root.join(p))
                        .is_ok_and(|now| now == Some(e.stat))
            });
            files.entry(p.clone()).or_insert((*d, entry));
        }
        files
    }

    /// The latest stat `path` was hashed from, when known.
    fn entry(
        &self,
        reread: Option<&HashMap<String, CachedDigest>>,
        path: &str,
    ) -> Option<CachedDigest> {
        reread
            .and_then(|m| m.get(path))
            .or_else(|| self.entries.get(path))
            .copied()
    }

    /// The input files of `i` and their digests as they are now, when it is about to
    /// run: files that other instances produce are re-read, and globs that can match
    /// such files are expanded again, since upstreams may have just written them.
    pub fn current_inputs(&self, i: usize) -> Result<(Vec<String>, FreshDigests), SnapshotError> {
        let files = if self.rewalk.contains(&i) {
            expand_inputs(self.project, &[i], false)?
                .0
                .pop()
                .unwrap_or_default()
        } else {
            self.inputs[i].clone()
        };
        let fresh: Vec<String> = files
            .iter()
            .filter(|p| self.is_produced(p) || !self.digests.contains_key(*p))
            .cloned()
            .collect();
        let mut digests = BTreeMap::new();
        if !fresh.is_empty() {
            let mut reread = self.reread.lock().ok();
            for (p, d) in fresh
                .iter()
                .zip(fs::digest_paths(&self.project.root, &fresh, |_| None))
            {
                let d = match d {
                    Ok(PathDigest::Present {
                        digest, refreshed, ..
                    }) => {
                        if let (Some(m), Some(c)) = (reread.as_mut(), refreshed) {
                            m.insert(p.clone(), c);
                        }
                        Some(digest)
                    }
                    _ => None,
                };
                digests.insert(p.clone(), d);
            }
        }
        Ok((files, digests))
    }

    /// Whether `path` is an output some instance declares, lies inside a declared
    /// directory output, or is a directory holding one, so its content may change during
    /// a build and must be re-read when a consumer becomes ready.
    pub fn is_produced(&self, path: &str) -> bool {
        produced(&self.produced, &self.produced_dirs, path)
    }

    /// What to re-check after one shard of `inst` ran: the instance's inputs but its shard
    /// sources, and the shard's own input `input`, keyed by `digest`.
    pub fn shard_guard(
        &self,
        inst: &crate::model::Instance,
        parts: &KeyParts,
        input: &str,
        digest: Digest,
    ) -> InputGuard {
        // Worked out once per instance: a `files` source can make the inputs as many as
        // the shards, and every shard shares them.
        let files = {
            let mut shared = self.shard_inputs.lock().ok();
            match shared.as_ref().and_then(|m| m.get(&inst.name)) {
                Some(f) => Arc::clone(f),
                None => {
                    let sources = match &inst.shard {
                        Some(spec) => {
                            let files: Vec<String> = parts.inputs.keys().cloned().collect();
                            crate::exec::shards::source_files(&spec.strategy, &files)
                        }
                        None => Vec::new(),
                    };
                    let skip: HashSet<&str> = sources.iter().map(String::as_str).collect();
                    let f = Arc::new(self.guarded(parts, &skip));
                    if let Some(m) = shared.as_mut() {
                        m.insert(inst.name.clone(), Arc::clone(&f));
                    }
                    f
                }
            }
        };
        // A `files` shard's own source has a stat on record; a slice under `.orch/` not.
        let entry = if parts.inputs.contains_key(input) {
            let reread = self.reread.lock().ok();
            self.entry(reread.as_deref(), input)
        } else {
            None
        };
        InputGuard {
            root: self.project.root.clone(),
            files,
            own: Some((input.to_owned(), (digest, entry))),
        }
    }

    /// The key parts of instance `i`, with input digests from `digest_of`.
    pub fn parts_with(
        &self,
        i: usize,
        files: &[String],
        upstream: &dyn Fn(usize) -> Option<BTreeMap<String, Digest>>,
        digest_of: &dyn Fn(&str) -> Option<Digest>,
    ) -> KeyParts {
        let inst = &self.project.instances[i];
        let mut inputs = BTreeMap::new();
        for f in files {
            if let Some(d) = digest_of(f) {
                inputs.insert(f.clone(), d);
            }
        }
        // The key holds the command as a template, `{inputs}` unexpanded: the input set
        // is a part of its own, so adding a file reads as `input_added`, not a new command.
        let command = inst.command_template().unwrap_or_default();
        let env = inst
            .env
            .iter()
            .map(|(name, v)| (name.clone(), self.env_digest(name, v)))
            .collect();
        let upstream = inst
            .deps
            .iter()
            .map(|d| {
                let name = self.project.instances[d.upstream].name.clone();
                let u = match upstream(d.upstream) {
                    Some(outputs) => Upstream::Present {
                        hard: d.hard,
                        outputs,
                    },
                    None if d.hard => Upstream::Present {
                        hard: true,
                        outputs: BTreeMap::new(),
                    },
                    None => Upstream::Absent,
                };
                (name, u)
            })
            .collect();
        KeyParts {
            instance: inst.name.clone(),
            command,
            cwd: inst.cwd.clone(),
            outputs: inst
                .outputs
                .iter()
                .map(|o| {
                    if o.dir {
                        format!("{}/", o.path)
                    } else {
                        o.path.clone()
                    }
                })
                .chain(inst.shard_outputs.iter().map(|o| o.path.clone()))
                .collect(),
            shard: inst
                .shard
                .as_ref()
                .map(crate::shard::ShardSpec::describe)
                .unwrap_or_default(),
            env,
            inputs,
            upstream,
            schemas: schema_files(inst)
                .filter_map(|p| digest_of(p).map(|d| (p.to_owned(), d)))
                .collect(),
            depfile: inst.depfile.clone().unwrap_or_default(),
        }
    }

    /// The key of [`PlanSource::parts`] for instance `i` with upstream outputs as
    /// recorded, streamed from the project, the snapshot and the records into the hash
    /// without building the parts: the planner computes one for every instance.
    pub fn recorded_key(&self, i: usize) -> Digest {
        let inst = &self.project.instances[i];
        let command = inst.command_template().unwrap_or_default();
        let shard = inst
            .shard
            .as_ref()
            .map(crate::shard::ShardSpec::describe)
            .unwrap_or_default();
        let mut e = crate::plan::KeyEncoder::new(
            &inst.name,
            &command,
            &inst.cwd,
            &shard,
            inst.depfile.as_deref().unwrap_or_default(),
        );
        e.outputs(
            inst.outputs.len() + inst.shard_outputs.len(),
            inst.outputs
                .iter()
                .map(|o| (o.path.as_str(), o.dir))
                .chain(inst.shard_outputs.iter().map(|o| (o.path.as_str(), false))),
        );
        e.env(
            inst.env.len(),
            inst.env
                .iter()
                .map(|(name, v)| (name.as_str(), self.env_digest(name, v))),
        );
        let inputs = self.present(self.inputs[i].iter().map(String::as_str));
        e.inputs(inputs.len(), inputs.iter().map(|(p, d)| (*p, d)));
        let schemas = self.present(schema_files(inst));
        e.schemas(schemas.len(), schemas.iter().map(|(p, d)| (*p, d)));
        let mut deps: Vec<(&str, &crate::model::Dep)> = inst
            .deps
            .iter()
            .map(|d| (self.project.instances[d.upstream].name.as_str(), d))
            .collect();
        // A map keeps the last of equal names, as collecting the parts' map does.
        deps.sort_by(|a, b| a.0.cmp(b.0));
        deps.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                *kept = *later;
            }
            same
        });
        e.upstreams(deps.len());
        for (name, d) in deps {
            match &self.records[d.upstream].success {
                Some(s) => e.upstream_present(
                    name,
                    d.hard,
                    s.outputs.len(),
                    s.outputs.iter().map(|(p, m)| (p.as_str(), &m.digest)),
                ),
                None if d.hard => e.upstream_present(name, true, 0, std::iter::empty()),
                None => e.upstream_absent(name),
            }
        }
        e.finish()
    }

    /// The paths of `paths` that exist, with their digests, as the parts' maps hold them:
    /// sorted, one entry per path (the snapshot's lists are sorted already, which makes
    /// the sort a single pass).
    fn present<'a>(&self, paths: impl Iterator<Item = &'a str>) -> Vec<(&'a str, Digest)> {
        let mut v: Vec<(&str, Digest)> = paths
            .filter_map(|p| self.digest(p).map(|d| (p, d)))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        v
    }

    /// The keyed digest of variable `name` as instance parts hold it (None when unset).
    fn env_digest(&self, name: &str, v: &EnvValue) -> Option<Digest> {
        match v {
            EnvValue::Inherit => self.env.get(name).copied().flatten(),
            EnvValue::Set(s) => Some(value_digest(&self.value_key, s.as_bytes())),
        }
    }

    /// The current digest of `path` as of the snapshot.
    pub fn digest(&self, path: &str) -> Option<Digest> {
        self.digests.get(path).copied().flatten()
    }

    /// The digest of `path` as of the snapshot, or read now when the snapshot did not
    /// look at it (a discovered input named by a shard result or a cache entry but not by
    /// the last success). None when missing, unreadable, or not a plain project path.
    pub fn digest_now(&self, path: &str) -> Option<Digest> {
        if let Some(d) = self.digests.get(path) {
            return *d;
        }
        if !crate::plan::is_discoverable(path) {
            return None;
        }
        let mut contain = crate::model::path::Containment::new(&self.project.root);
        contain.check(path, true).ok()?;
        match fs::digest_paths(&self.project.root, &[path.to_owned()], |_| None).pop() {
            Some(Ok(PathDigest::Present { digest, stat, .. })) if !stat.is_dir => Some(digest),
            _ => None,
        }
    }

    /// The stat each discovered input recorded for instance `i` was hashed from, when
    /// known: after the command, a file whose stat still matches keeps its digest without
    /// being read again.
    pub fn discovered_entries(&self, i: usize) -> BTreeMap<String, CachedDigest> {
        let Some(s) = &self.records[i].success else {
            return BTreeMap::new();
        };
        s.discovered
            .keys()
            .filter_map(|p| self.entries.get(p).map(|e| (p.clone(), *e)))
            .collect()
    }

    /// The plan digest (DESIGN §7): the project, the targets and options that change what
    /// runs, and the input digests of the selected instances.
    pub fn plan_digest(&self, targets: &[String], options: &[(&str, String)]) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(b"orch-plan-digest\x01");
        h.update(&self.project.digest.0);
        fn put(h: &mut blake3::Hasher, s: &str) {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        for t in targets {
            put(&mut h, t);
        }
        put(&mut h, "\0options");
        for (k, v) in options {
            put(&mut h, k);
            put(&mut h, v);
        }
        put(&mut h, "\0inputs");
        let mut files: BTreeSet<&str> = BTreeSet::new();
        for &i in &self.order {
            files.extend(self.inputs[i].iter().map(String::as_str));
        }
        for f in files {
            put(&mut h, f);
            h.update(&self.digest(f).map_or([0u8; 32], |d| d.0));
        }
        Digest(*h.finalize().as_bytes())
    }
}

/// The planner's view of a stored record, its manifest moved out of the row: an
/// unreadable manifest (older orch, damage) only means "rebuild", and the decoded success
/// keeps the manifest's bytes.
fn recorded(r: &mut InstanceRecord) -> Recorded {
    Recorded {
        last_failed: r.last_status == LastStatus::Failed,
        success: r.success.as_mut().and_then(|s| {
            let bytes = std::mem::take(&mut s.manifest);
            Success::decode_owned(Digest(s.action_key), bytes)
        }),
    }
}

/// Whether `path` is in `produced` (declared outputs and the directories above them) or
/// lies inside one of the sorted directory outputs `produced_dirs`.
fn produced(produced: &HashSet<String>, produced_dirs: &[String], path: &str) -> bool {
    if produced.contains(path) {
        return true;
    }
    let mut p = path;
    while let Some(pos) = p.rfind('/') {
        p = &p[..pos];
        if produced_dirs
            .binary_search_by(|d| d.as_str().cmp(p))
            .is_ok()
        {
            return true;
        }
    }
    false
}

/// The digest of a variable's value as it enters keys and manifests: keyed with the
/// project's secret, so a recorded digest cannot be checked against guessed values.
pub fn value_digest(key: &[u8; 32], value: &[u8]) -> Digest {
    Digest(*blake3::keyed_hash(key, value).as_bytes())
}

/// A random key for this process only.
fn one_off_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key));
    if read.is_err() {
        // Unique enough to match nothing recorded, which is all a stand-in key must do.
        let mut h = blake3::Hasher::new();
        h.update(&fs::now_ns().to_le_bytes());
        h.update(&std::process::id().to_le_bytes());
        key = *h.finalize().as_bytes();
    }
    key
}

/// The schema files of an instance's outputs (whole and per-shard).
fn schema_files(inst: &crate::model::Instance) -> impl Iterator<Item = &str> {
    inst.outputs
        .iter()
        .filter_map(|o| o.schema.as_deref())
        .chain(
            inst.shard_outputs
                .iter()
                .filter_map(|o| o.schema.as_deref()),
        )
}

/// The files a command was keyed with, re-checked once it has run: a file that changed
/// meanwhile means its result may hold content no key describes, so it is not recorded.
///
/// A file whose stat (size, mtime, ctime, inode) moved since it was hashed was written
/// meanwhile, and counts as changed even when its bytes are back as they were: the
/// command may have read it in between. A file whose stat is unknown, or too recent to
/// vouch for its content (the racy-timestamp rule), is hashed again and compared.
/// Cheap enough to run after every command: one stat per file, rarely a hash.
#[derive(Clone, Debug)]
pub struct InputGuard {
    root: PathBuf,
    /// The files, shared by the shards of one instance.
    files: Arc<Guarded>,
    /// A shard's own input.
    own: Option<(String, Guard)>,
}

/// A file's digest in the key, and the stat it was hashed from when known.
type Guard = (Digest, Option<CachedDigest>);

/// Path → its [`Guard`].
type Guarded = BTreeMap<String, Guard>;

impl InputGuard {
    /// The files that changed since they were hashed into the key (sorted).
    pub fn changed(&self) -> Vec<String> {
        let files: Vec<(&String, &Guard)> = self
            .files
            .iter()
            .chain(self.own.as_ref().map(|(p, g)| (p, g)))
            .collect();
        let mut changed: Vec<String> = files
            .par_iter()
            .filter(|(p, (keyed, entry))| {
                let full = self.root.join(p);
                match (fs::stat_path(&full), entry) {
                    (Ok(Some(now)), Some(e)) if !now.is_dir && !e.stat.is_dir => {
                        now != e.stat || (!e.is_valid_for(&now) && !holds(&full, keyed))
                    }
                    (Ok(Some(_)), _) => !holds(&full, keyed),
                    _ => true,
                }
            })
            .map(|(p, _)| (*p).clone())
            .collect();
        changed.sort();
        changed.dedup();
        changed
    }
}

/// Removes a shard's slice under `.orch/` whose content changed while the shard ran, so
/// the next build writes it again from its source (slices are only written when absent).
pub fn forget_slice(root: &std::path::Path, orch_dir: &std::path::Path, input: &str) {
    let path = root.join(input);
    if path.starts_with(orch_dir) {
        let _ = std::fs::remove_file(path);
    }
}

/// Whether the file or tree at `full` has digest `d` now.
fn holds(full: &std::path::Path, d: &Digest) -> bool {
    fs::hash_path(full).is_ok_and(|now| now == *d)
}

/// The input files of each instance in `order`: plain paths as written (the digest pass
/// finds out whether they exist, so they cost no walk), globs expanded by one shared
/// walk; an instance's own outputs are never its inputs. With `warn`, matches that are
/// special files are reported (once per command: a rewalk does not repeat them).
fn expand_inputs(
    project: &Project,
    order: &[usize],
    warn: bool,
) -> Result<(Vec<Vec<String>>, Walked), SnapshotError> {
    let mut walked = Walked {
        at_ns: fs::now_ns(),
        ..Walked::default()
    };
    let patterns: Vec<Vec<String>> = order
        .iter()
        .map(|&i| {
            project.instances[i]
                .inputs
                .iter()
                .filter(|p| !is_plain(p))
                .cloned()
                .collect()
        })
        .collect();
    let mut matched = if patterns.iter().all(Vec::is_empty) {
        vec![Vec::new(); order.len()]
    } else {
        let matcher =
            fs::MultiGlob::new(&patterns).map_err(|(owner, pat, e)| SnapshotError::Io {
                path: patterns[owner][pat].clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
            })?;
        // A local store inside the project is orch's too: its blobs are never inputs.
        let store = cache_dir_in_project(project);
        let skip: Vec<&str> = SKIP_DIRS.iter().copied().chain(store.as_deref()).collect();
        let found = matcher.expand(&project.root, &skip).map_err(|e| match e {
            fs::WalkError::Escapes { path } => SnapshotError::Escapes { path },
            fs::WalkError::NotUtf8 { path } => SnapshotError::NotUtf8 { path },
            fs::WalkError::Io(source) => SnapshotError::Io {
                path: project.root.display().to_string(),
                source,
            },
        })?;
        if warn {
            for (path, kind) in &found.special {
                crate::say!(
                    "warning: input `{path}` is a {kind}, not a regular file; it is not an input"
                );
            }
        }
        walked.special = !found.special.is_empty();
        walked.listed = found.listed;
        let mut files = found.files;
        for f in &mut files {
            f.retain(|p| !crate::model::meta::is_sidecar(project, p));
        }
        files
    };
    for (k, &i) in order.iter().enumerate() {
        let inst = &project.instances[i];
        let plain = inst.inputs.iter().filter(|p| is_plain(p));
        if plain.clone().next().is_some() {
            matched[k].extend(plain.cloned());
            matched[k].sort();
            matched[k].dedup();
        }
        if !inst.outputs.is_empty() {
            matched[k].retain(|p| {
                !inst.outputs.iter().any(|o| {
                    p == &o.path
                        || (o.dir
                            && p.starts_with(o.path.as_str())
                            && p[o.path.len()..].starts_with('/'))
                })
            });
        }
    }
    Ok((matched, walked))
}

/// Instances of `order` with a glob input that can match a file another instance
/// produces: a declared file output it matches, or a directory output its walk enters.
fn globs_matching_outputs(
    project: &Project,
    order: &[usize],
    produced_dirs: &[String],
) -> BTreeSet<usize> {
    let mut builder = globset::GlobSetBuilder::new();
    let mut owners = Vec::new();
    let mut out = BTreeSet::new();
    for &i in order {
        for p in project.instances[i].inputs.iter().filter(|p| !is_plain(p)) {
            if let Ok(g) = globset::GlobBuilder::new(p).literal_separator(true).build() {
                builder.add(g);
                owners.push(i);
            }
            let prefix: String = p
                .split('/')
                .take_while(|c| !c.contains(['*', '?', '[', '{', '\\']))
                .collect::<Vec<_>>()
                .join("/");
            let nested = |a: &str, b: &str| {
                a.is_empty() || b == a || b.starts_with(a) && b[a.len()..].starts_with('/')
            };
            if produced_dirs
                .iter()
                .any(|d| nested(&prefix, d) || nested(d, &prefix))
            {
                out.insert(i);
            }
        }
    }
    if owners.is_empty() {
        return out;
    }
    let Ok(set) = builder.build() else { return out };
    for inst in &project.instances {
        for o in inst.outputs.iter().filter(|o| !o.dir) {
            for m in set.matches(&o.path) {
                out.insert(owners[m]);
            }
        }
    }
    out
}

impl PlanSource for Snapshot<'_> {
    fn parts(
        &self,
        i: usize,
        upstream: &dyn Fn(usize) -> Option<BTreeMap<String, Digest>>,
    ) -> KeyParts {
        self.parts_with(i, &self.inputs[i], upstream, &|p| self.digest(p))
    }
    fn key(&self, i: usize) -> Digest {
        self.recorded_key(i)
    }
    fn recorded(&self, i: usize) -> &Recorded {
        &self.records[i]
    }
    fn output_now(&self, path: &str) -> Option<Digest> {
        self.digest(path)
    }
    fn forced(&self, i: usize) -> bool {
        self.forced.contains(&i)
    }
    fn always(&self, i: usize) -> bool {
        self.project.instances[i].always
    }
    fn upstreams(&self, i: usize) -> Vec<usize> {
        self.project.instances[i]
            .deps
            .iter()
            .map(|d| d.upstream)
            .collect()
    }
    fn name(&self, i: usize) -> &str {
        &self.project.instances[i].name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    /// A guard over `name` in `dir`, as hashed now, with its stat trusted (as if hashed
    /// long after it was last written) when `trusted`.
    fn guard(dir: &std::path::Path, name: &str, trusted: bool) -> InputGuard {
        let full = dir.join(name);
        let stat = fs::stat_path(&full).ok().flatten();
        let digest = fs::hash_path(&full).unwrap_or(fs::hash_bytes(b""));
        let entry = stat.filter(|_| trusted).map(|stat| CachedDigest {
            stat,
            digest,
            hashed_at_ns: stat.mtime_ns.max(stat.ctime_ns) + 10 * SEC,
        });
        InputGuard {
            root: dir.to_path_buf(),
            files: Arc::new(BTreeMap::from([(name.to_owned(), (digest, entry))])),
            own: None,
        }
    }

    #[test]
    fn an_untouched_input_has_not_changed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"aaaa").unwrap();
        assert!(guard(t.path(), "a", true).changed().is_empty());
        assert!(guard(t.path(), "a", false).changed().is_empty());
    }

    #[test]
    fn a_write_put_back_byte_for_byte_still_counts() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        std::fs::write(&a, b"aaaa").unwrap();
        let g = guard(t.path(), "a", true);
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        std::fs::write(&a, b"bbbb").unwrap();
        std::fs::write(&a, b"aaaa").unwrap();
        let f = std::fs::File::options().write(true).open(&a).unwrap();
        f.set_modified(mtime).unwrap();
        // The ctime moved (unless the clock tick is coarser than this test): the command
        // may have read "bbbb".
        let now = fs::stat_path(&a).unwrap().unwrap();
        let before = g.files["a"].1.unwrap().stat;
        if now.ctime_ns != before.ctime_ns {
            assert_eq!(g.changed(), ["a"]);
        }
    }

    #[test]
    fn changed_and_missing_inputs_are_named() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"aaaa").unwrap();
        let untrusted = guard(t.path(), "a", false);
        let trusted = guard(t.path(), "a", true);
        std::fs::write(t.path().join("a"), b"aaab").unwrap();
        assert_eq!(untrusted.changed(), ["a"]);
        assert_eq!(trusted.changed(), ["a"]);
        std::fs::remove_file(t.path().join("a")).unwrap();
        assert_eq!(trusted.changed(), ["a"]);
    }

    /// The planner's streamed key is the key of the parts it stands for, for every kind
    /// of part and every state of an upstream (succeeded, never built, hard or soft).
    #[test]
    fn the_streamed_key_is_the_key_of_the_parts() {
        let t = tempfile::tempdir().unwrap();
        let text = r#"
[orch]
env = ["HOME"]
[phase.a]
matrix = { os = ["linux", "mac"] }
run = "make {matrix.os} {inputs} > {outputs}"
inputs = ["src/*.c", "extra.txt"]
outputs = ["out/a-{matrix.os}/", { path = "out/a-{matrix.os}.json", schema = "s.json" }]
env = { CC = "gcc" }
[phase.b]
run = "link {depfile}"
env = ["LANG", "ORCH_SURELY_UNSET"]
needs = ["a"]
outputs = ["out/b"]
depfile = "out/b.d"
[phase.c]
run = "echo {{literal}} > out/c"
after = ["a", "b"]
outputs = ["out/c"]
"#;
        std::fs::write(t.path().join("Orchfile.toml"), text).unwrap();
        std::fs::create_dir_all(t.path().join("src")).unwrap();
        for f in ["src/x.c", "src/y.c", "s.json"] {
            std::fs::write(t.path().join(f), f).unwrap();
        }
        let raw = crate::orchfile::load(&t.path().join("Orchfile.toml")).unwrap();
        let project = crate::model::validate(raw).unwrap();
        let graph = crate::graph::build(&project).unwrap();
        let store = Store::in_memory().unwrap();
        let all: BTreeSet<usize> = (0..project.instances.len()).collect();
        let mut snap = Snapshot::take(&project, &graph, &all, BTreeSet::new(), &store).unwrap();
        let check = |snap: &Snapshot| {
            for i in 0..project.instances.len() {
                let parts = snap.parts(i, &|j| crate::plan::recorded_outputs(&snap.records[j]));
                assert_eq!(snap.recorded_key(i), parts.action_key(), "{parts:?}");
            }
        };
        check(&snap);
        // Now with some upstreams on record, one of them with two outputs.
        for (i, inst) in project.instances.iter().enumerate().take(2) {
            let parts = snap.parts(i, &|_| None);
            let outputs = inst
                .outputs
                .iter()
                .map(|o| {
                    let meta = crate::plan::OutputMeta {
                        digest: fs::hash_bytes(o.path.as_bytes()),
                        size: 1,
                    };
                    (o.path.clone(), meta)
                })
                .collect();
            let m = crate::plan::Manifest {
                parts: parts.clone(),
                outputs,
                discovered: BTreeMap::new(),
            };
            snap.records[i].success = Some(Success::from_manifest(parts.action_key(), m));
        }
        check(&snap);
    }

    #[test]
    fn value_digests_are_keyed() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        assert_ne!(value_digest(&k1, b"hunter2"), fs::hash_bytes(b"hunter2"));
        assert_ne!(value_digest(&k1, b"hunter2"), value_digest(&k2, b"hunter2"));
        assert_eq!(value_digest(&k1, b"hunter2"), value_digest(&k1, b"hunter2"));
    }
}
