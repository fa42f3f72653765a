//! The project's state at the start of a command: the selected instances, what the state
//! store recorded for them, the input files their globs match, and the current digests
//! of those inputs and of the recorded outputs.
//!
//! Taking a snapshot is the whole cost of a no-op build, so it does each thing once: one
//! query per table, one directory walk for all patterns, one parallel stat-and-hash pass
//! that reuses every cached digest whose stat is unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use thiserror::Error;

use crate::fs::{self, CachedDigest, Digest, FileStat, PathDigest};
use crate::graph::Graph;
use crate::model::path::is_plain;
use crate::model::{EnvValue, Project};
use crate::plan::{KeyParts, PlanSource, Recorded, Success, Upstream};
use crate::store::{DigestRow, InstanceRecord, LastStatus, Store, StoreError};

/// Directories the input walk never enters.
pub const SKIP_DIRS: &[&str] = &[".orch", ".git"];

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

    /// The exit status for this error: a special file is a configuration error (2), an
    /// interruption exits 130, anything else fails (1).
    pub fn exit_code(&self) -> i32 {
        match self {
            SnapshotError::Special { .. } => crate::EXIT_USAGE,
            SnapshotError::Interrupted { .. } => crate::EXIT_INTERRUPTED,
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
        is_dir: c.stat.is_dir,
        digest: c.digest.0,
        hashed_at_ns: c.hashed_at_ns,
    }
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
    /// Raw store records, by instance name.
    pub raw_records: BTreeMap<String, InstanceRecord>,
    /// Files each instance's input globs match (sorted), per instance.
    pub inputs: Vec<Vec<String>>,
    /// Current digests of inputs and recorded outputs (None: missing).
    pub digests: HashMap<String, Option<Digest>>,
    /// Digest-cache changes to write back.
    pub digest_updates: Vec<(String, Option<DigestRow>)>,
    /// Instances with a glob that can match another instance's output.
    rewalk: BTreeSet<usize>,
    /// Declared outputs and every directory above them.
    produced: HashSet<String>,
    /// Directories declared as outputs by some instance.
    produced_dirs: Vec<String>,
    /// Digests of inherited environment values, by variable name.
    env: BTreeMap<String, Option<Digest>>,
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
        let raw_records = store.load_results()?;
        let mut records = vec![Recorded::default(); project.instances.len()];
        for &i in &order {
            if let Some(r) = raw_records.get(&project.instances[i].name) {
                records[i] = Recorded {
                    last_failed: r.last_status == LastStatus::Failed,
                    // An unreadable manifest (older orch, damage) only means "rebuild".
                    success: r
                        .success
                        .as_ref()
                        .and_then(|s| Success::decode(Digest(s.action_key), &s.manifest)),
                };
            }
        }

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

        let mut inputs = vec![Vec::new(); project.instances.len()];
        for (k, files) in expand_inputs(project, &order)?.into_iter().enumerate() {
            inputs[order[k]] = files;
        }
        let rewalk = globs_matching_outputs(project, &order, &produced_dirs);

        // Everything whose digest the plan needs: inputs and recorded outputs.
        let mut wanted: BTreeSet<&str> = BTreeSet::new();
        for &i in &order {
            wanted.extend(inputs[i].iter().map(String::as_str));
            if let Some(m) = &records[i].success {
                wanted.extend(m.outputs.keys().map(String::as_str));
            }
        }
        let wanted: Vec<String> = wanted.into_iter().map(str::to_owned).collect();
        let cache = store.load_digests()?;
        let results = fs::digest_paths(&project.root, &wanted, |p| cache.get(p).map(row_to_cached));
        let mut digests = HashMap::with_capacity(wanted.len());
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
                    if let Some(c) = refreshed
                        && !c.stat.is_dir
                    {
                        digest_updates.push((path.clone(), Some(cached_to_row(&c))));
                    }
                    digests.insert(path, Some(digest));
                }
                Err(e) => return Err(SnapshotError::reading(path, e)),
            }
        }

        // Inherited values are read once; only their digests are kept.
        let mut env = BTreeMap::new();
        for &i in &order {
            for (name, v) in &project.instances[i].env {
                if *v == EnvValue::Inherit && !env.contains_key(name) {
                    env.insert(
                        name.clone(),
                        std::env::var_os(name).map(|v| fs::hash_bytes(v.as_encoded_bytes())),
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
            produced,
            produced_dirs,
            rewalk,
            env,
        })
    }

    /// The input files of `i` and their digests as they are now, when it is about to
    /// run: files that other instances produce are re-read, and globs that can match
    /// such files are expanded again, since upstreams may have just written them.
    pub fn current_inputs(&self, i: usize) -> Result<(Vec<String>, FreshDigests), SnapshotError> {
        let files = if self.rewalk.contains(&i) {
            expand_inputs(self.project, &[i])?.pop().unwrap_or_default()
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
            for (p, d) in fresh
                .iter()
                .zip(fs::digest_paths(&self.project.root, &fresh, |_| None))
            {
                let d = match d {
                    Ok(PathDigest::Present { digest, .. }) => Some(digest),
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
        if self.produced.contains(path) {
            return true;
        }
        let mut p = path;
        while let Some(pos) = p.rfind('/') {
            p = &p[..pos];
            if self
                .produced_dirs
                .binary_search_by(|d| d.as_str().cmp(p))
                .is_ok()
            {
                return true;
            }
        }
        false
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
            .map(|(name, v)| {
                let d = match v {
                    EnvValue::Inherit => self.env.get(name).copied().flatten(),
                    EnvValue::Set(s) => Some(fs::hash_bytes(s.as_bytes())),
                };
                (name.clone(), d)
            })
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
        }
    }

    /// The current digest of `path` as of the snapshot.
    pub fn digest(&self, path: &str) -> Option<Digest> {
        self.digests.get(path).copied().flatten()
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

/// The input files of each instance in `order`: plain paths as written (the digest pass
/// finds out whether they exist, so they cost no walk), globs expanded by one shared
/// walk; an instance's own outputs are never its inputs.
fn expand_inputs(project: &Project, order: &[usize]) -> Result<Vec<Vec<String>>, SnapshotError> {
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
        matcher
            .expand(&project.root, SKIP_DIRS)
            .map_err(|e| SnapshotError::Io {
                path: project.root.display().to_string(),
                source: e,
            })?
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
    Ok(matched)
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
