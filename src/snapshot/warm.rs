//! What a watch session keeps of its last snapshot, and the next snapshot taken from it.
//!
//! A full [`Snapshot::take`] walks every input glob, stats every file and reads the
//! whole state store: on a large project that is the whole cost of reacting to one save.
//! A session that watches the files already knows which paths changed, so [`Kept`] holds
//! the last snapshot's walk, digests and records, and [`Snapshot::take_warm`] looks again
//! only at:
//!
//! - the paths reported changed since (and everything under a reported directory): their
//!   glob membership is decided again and they are statted, and hashed when the stat
//!   does not vouch for the digest, by the digest cache's own rule;
//! - what no event covers: recorded outputs (output directories are not watched, and an
//!   output deleted by hand sends nothing), discovered inputs, schemas, plain inputs
//!   (directories among them hash their whole tree), and the inputs of instances whose
//!   globs can match another instance's outputs (walked again, as the build does);
//! - entries whose digest was taken within the racy window of their stat.
//!
//! Everything else keeps its digest. When what is kept cannot answer (another selection,
//! a new `.orch/key`, a symlink or special file among the changes, a snapshot that was
//! never given back), `take_warm` says so and the caller takes a full snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

use super::{
    SKIP_DIRS, Snapshot, SnapshotError, Walked, cache_dir_in_project, cached_to_row, expand_inputs,
    produced, recorded, row_to_cached, schema_files,
};
use crate::fs::{self, CachedDigest, Digest, PathDigest};
use crate::graph::Graph;
use crate::model::path::is_plain;
use crate::model::{Instance, Project};
use crate::plan::Recorded;
use crate::store::{DigestRow, InstanceRecord, Layout};

/// What a session keeps between snapshots of one loaded project and selection.
#[derive(Default)]
pub struct Kept {
    /// The last snapshot's data; None before the first, and while (or after) a snapshot
    /// borrowed it without giving it back.
    parts: Option<Parts>,
    /// Paths reported changed since the last snapshot, project-relative.
    dirty: BTreeSet<String>,
    /// Paths no event covers, looked at by every snapshot.
    volatile: BTreeSet<String>,
    /// Paths whose digest was taken too soon after their last change to vouch for it.
    racy: BTreeSet<String>,
    /// Digest-cache rows found by a snapshot whose build did not run (a check), for the
    /// next build to write.
    unwritten: BTreeMap<String, Option<DigestRow>>,
    /// Each instance's input globs, compiled once.
    globs: Option<Vec<Option<GlobSet>>>,
}

/// The owned data of a snapshot, kept as it was.
struct Parts {
    order: Vec<usize>,
    records: Vec<Recorded>,
    raw_records: BTreeMap<String, InstanceRecord>,
    inputs: Vec<Vec<String>>,
    digests: HashMap<String, Option<Digest>>,
    entries: HashMap<String, CachedDigest>,
    rewalk: BTreeSet<usize>,
    produced: HashSet<String>,
    produced_dirs: Vec<String>,
    env: BTreeMap<String, Option<Digest>>,
    value_key: [u8; 32],
}

/// What a changed path is now.
enum Found {
    /// Nothing the walk would reach.
    Absent,
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symlink, FIFO, socket or device: the full walk decides what it means.
    Other,
}

impl Kept {
    /// Whether a snapshot can be taken from what is kept.
    pub fn is_warm(&self) -> bool {
        self.parts.is_some()
    }

    /// Notes paths reported changed (project-relative, any kind: inputs, outputs,
    /// directories, editor files) for the next snapshot to look at.
    pub fn report<'a>(&mut self, paths: impl IntoIterator<Item = &'a String>) {
        self.dirty.extend(paths.into_iter().cloned());
    }

    /// Keeps `snap` for the next snapshot. `written` says its digest-cache rows reached
    /// the store (a build), else they wait for the next build. `fresh` holds the
    /// records re-read after a build for the instances that ran (an absent one has none).
    pub fn keep(
        &mut self,
        snap: Snapshot<'_>,
        written: bool,
        ran: &BTreeSet<usize>,
        mut fresh: BTreeMap<String, InstanceRecord>,
    ) {
        if !snap.value_key_known {
            // One-off keys never compare equal: nothing worth keeping.
            self.parts = None;
            return;
        }
        let project = snap.project;
        let Snapshot {
            order,
            mut records,
            mut raw_records,
            inputs,
            mut digests,
            mut entries,
            digest_updates,
            rewalk,
            produced,
            produced_dirs,
            env,
            value_key,
            ..
        } = snap;
        for &i in ran {
            let name = &project.instances[i].name;
            match fresh.remove(name) {
                Some(mut r) => {
                    records[i] = recorded(&mut r);
                    raw_records.insert(name.clone(), r);
                }
                None => {
                    records[i] = Recorded::default();
                    raw_records.remove(name);
                }
            }
        }
        self.racy.clear();
        for (path, row) in &digest_updates {
            if let Some(row) = row {
                let c = row_to_cached(row);
                if !c.is_valid_for(&c.stat) {
                    self.racy.insert(path.clone());
                }
            }
            if !written {
                self.unwritten.insert(path.clone(), *row);
            }
        }
        if written {
            self.unwritten.clear();
        }
        let parts = Parts {
            order,
            records,
            raw_records,
            inputs,
            digests: HashMap::new(),
            entries: HashMap::new(),
            rewalk,
            produced,
            produced_dirs,
            env,
            value_key,
        };
        let volatile = volatile(project, &parts);
        // What only a record named (an output no record names any more) is no longer
        // looked at: dropped, so it can never be read as current.
        for p in self.volatile.difference(&volatile) {
            if !parts.order.iter().any(|&i| holds(&parts.inputs[i], p)) {
                digests.remove(p);
                entries.remove(p);
            }
        }
        self.volatile = volatile;
        self.parts = Some(Parts {
            digests,
            entries,
            ..parts
        });
    }
}

/// The paths of `parts` no event covers.
fn volatile(project: &Project, parts: &Parts) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for &i in &parts.order {
        let inst = &project.instances[i];
        out.extend(schema_files(inst).map(str::to_owned));
        out.extend(inst.inputs.iter().filter(|p| is_plain(p)).cloned());
        if let Some(s) = &parts.records[i].success {
            out.extend(s.outputs.keys().cloned());
            out.extend(s.discovered.keys().cloned());
        }
        if parts.rewalk.contains(&i) {
            out.extend(
                parts.inputs[i]
                    .iter()
                    .filter(|p| is_produced(parts, p))
                    .cloned(),
            );
        }
    }
    out
}

/// [`Snapshot::is_produced`] on kept parts.
fn is_produced(parts: &Parts, path: &str) -> bool {
    produced(&parts.produced, &parts.produced_dirs, path)
}

/// Whether sorted `files` holds `path`.
fn holds(files: &[String], path: &str) -> bool {
    files.binary_search_by(|f| f.as_str().cmp(path)).is_ok()
}

/// Whether `path` is one of `inst`'s own outputs or under one (never its input).
fn own_output(inst: &Instance, path: &str) -> bool {
    inst.outputs.iter().any(|o| {
        path == o.path
            || (o.dir && path.starts_with(o.path.as_str()) && path[o.path.len()..].starts_with('/'))
    })
}

/// Each instance's input globs as the walk matches them (None: it has none).
fn compile(project: &Project) -> Option<Vec<Option<GlobSet>>> {
    let mut out = Vec::with_capacity(project.instances.len());
    for inst in &project.instances {
        let mut b = GlobSetBuilder::new();
        let mut any = false;
        for p in inst.inputs.iter().filter(|p| !is_plain(p)) {
            b.add(GlobBuilder::new(p).literal_separator(true).build().ok()?);
            any = true;
        }
        out.push(if any { Some(b.build().ok()?) } else { None });
    }
    Some(out)
}

/// The paths a reported change can affect, and how the globs see them.
struct Changes<'a> {
    root: &'a Path,
    /// Directories the walk never enters (project-relative).
    skip: Vec<String>,
    /// Directories known to be real (not symlinks) or not.
    real: HashMap<String, bool>,
}

impl Changes<'_> {
    /// Whether the walk never looks at `rel` (under `.orch/`, `.git/` or the cache).
    fn skipped(&self, rel: &str) -> bool {
        self.skip.iter().any(|s| {
            rel == s
                || rel
                    .strip_prefix(s.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    }

    /// What `rel` is now, as the build's walk would see it; Err when it cannot be told.
    fn find(&mut self, rel: &str) -> Result<Found, ()> {
        if self.skipped(rel) {
            return Ok(Found::Absent);
        }
        // The walk follows no symlinked directory: a path below one is not reached.
        for (i, _) in rel.match_indices('/') {
            let dir = &rel[..i];
            let real = match self.real.get(dir) {
                Some(&r) => r,
                None => {
                    let r = std::fs::symlink_metadata(self.root.join(dir))
                        .is_ok_and(|m| m.file_type().is_dir());
                    self.real.insert(dir.to_owned(), r);
                    r
                }
            };
            if !real {
                return Ok(Found::Absent);
            }
        }
        match std::fs::symlink_metadata(self.root.join(rel)) {
            Ok(m) if m.file_type().is_file() => Ok(Found::File),
            Ok(m) if m.file_type().is_dir() => Ok(Found::Dir),
            Ok(_) => Ok(Found::Other),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(Found::Absent)
            }
            Err(_) => Err(()),
        }
    }

    /// The entries below directory `rel`, walked as the build walks (no symlinked
    /// directory followed, skipped trees left out): (path, is a regular file); Err on a
    /// name that is not UTF-8 or a directory that cannot be read.
    fn below(&self, rel: &str) -> Result<Vec<(String, bool)>, ()> {
        let mut out = Vec::new();
        let mut stack = vec![rel.to_owned()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(self.root.join(&dir)).map_err(|_| ())?;
            for entry in entries {
                let entry = entry.map_err(|_| ())?;
                let name = entry.file_name().into_string().map_err(|_| ())?;
                let path = format!("{dir}/{name}");
                let ft = entry.file_type().map_err(|_| ())?;
                if self.skipped(&path) {
                    continue;
                }
                if ft.is_dir() {
                    stack.push(path);
                } else {
                    out.push((path, ft.is_file()));
                }
            }
        }
        Ok(out)
    }
}

/// Removes from sorted `files` the path `rel` and everything below it, but what `keep`
/// wants kept; returns what was removed. Only the two runs that can match are visited
/// (`rel` itself, then `rel/…`: names like `rel-x` sort between them).
fn remove_under(files: &mut Vec<String>, rel: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut removed = Vec::new();
    let below = format!("{rel}/");
    let start = files.partition_point(|f| f.as_str() < below.as_str());
    let end = start + files[start..].partition_point(|f| f.starts_with(&below));
    let run: Vec<String> = files.drain(start..end).collect();
    let (kept, gone): (Vec<String>, Vec<String>) = run.into_iter().partition(|f| keep(f));
    removed.extend(gone);
    // `kept` is sorted and belongs exactly where the run was.
    files.splice(start..start, kept);
    if let Ok(at) = files.binary_search_by(|f| f.as_str().cmp(rel))
        && !keep(rel)
    {
        removed.push(files.remove(at));
    }
    removed
}

/// Inserts `path` into sorted `files` unless there.
fn insert_sorted(files: &mut Vec<String>, path: &str) {
    if let Err(at) = files.binary_search_by(|f| f.as_str().cmp(path)) {
        files.insert(at, path.to_owned());
    }
}

impl<'p> Snapshot<'p> {
    /// The snapshot of `selected` from what `kept` holds and the paths reported changed
    /// since; None when that cannot stand for a full [`Snapshot::take`] (nothing kept,
    /// another selection or key, or a change only a full walk can judge), and the caller
    /// takes a full one. `kept` lends its data to the snapshot: [`Kept::keep`] takes it
    /// back after the build.
    pub fn take_warm(
        project: &'p Project,
        graph: &'p Graph,
        selected: &BTreeSet<usize>,
        forced: BTreeSet<usize>,
        kept: &mut Kept,
    ) -> Option<Result<Snapshot<'p>, SnapshotError>> {
        let mut parts = kept.parts.take()?;
        let order: Vec<usize> = graph
            .order
            .iter()
            .copied()
            .filter(|i| selected.contains(i))
            .collect();
        if order != parts.order
            || Layout::new(&project.root).read_value_key() != Some(parts.value_key)
        {
            return None;
        }
        if kept.globs.is_none() {
            kept.globs = compile(project);
        }
        let globs = kept.globs.as_ref()?;
        let dirty = std::mem::take(&mut kept.dirty);
        let mut changes = Changes {
            root: &project.root,
            skip: SKIP_DIRS
                .iter()
                .map(|s| (*s).to_owned())
                .chain(cache_dir_in_project(project))
                .collect(),
            real: HashMap::new(),
        };
        // Glob membership of the changed paths, as the walk would decide it now.
        let mut look: BTreeSet<String> = BTreeSet::new();
        let walked: Vec<usize> = order
            .iter()
            .copied()
            .filter(|i| !parts.rewalk.contains(i) && globs[*i].is_some())
            .collect();
        let matches = |path: &str| -> bool {
            let c = Candidate::new(path);
            walked
                .iter()
                .any(|&i| globs[i].as_ref().is_some_and(|g| g.is_match_candidate(&c)))
        };
        for d in &dirty {
            let found = changes.find(d).ok()?;
            for &i in &walked {
                let inst = &project.instances[i];
                let plain = |p: &str| inst.inputs.iter().any(|q| q == p);
                look.extend(remove_under(&mut parts.inputs[i], d, plain));
            }
            if parts.digests.contains_key(d.as_str()) {
                look.insert(d.clone());
            }
            let files = match found {
                Found::Absent => Vec::new(),
                Found::File => vec![d.clone()],
                Found::Dir => {
                    let mut files = Vec::new();
                    for (p, regular) in changes.below(d).ok()? {
                        if regular {
                            files.push(p);
                        } else if matches(&p) {
                            return None;
                        }
                    }
                    files
                }
                Found::Other if matches(d) => return None,
                Found::Other => Vec::new(),
            };
            for f in files {
                let c = Candidate::new(&f);
                for &i in &walked {
                    let inst = &project.instances[i];
                    if globs[i].as_ref().is_some_and(|g| g.is_match_candidate(&c))
                        && !own_output(inst, &f)
                        && !crate::model::meta::is_sidecar(project, &f)
                    {
                        insert_sorted(&mut parts.inputs[i], &f);
                        look.insert(f.clone());
                    }
                }
            }
        }
        // Globs that can match other instances' outputs: walked again, as the build does
        // before such an instance runs (output directories have no watches).
        let rewalk: Vec<usize> = order
            .iter()
            .copied()
            .filter(|i| parts.rewalk.contains(i))
            .collect();
        if !rewalk.is_empty() {
            let found = match expand_inputs(project, &rewalk, false) {
                Ok((f, _)) => f,
                Err(e) => return Some(Err(e)),
            };
            for (i, files) in rewalk.iter().zip(found) {
                look.extend(
                    files
                        .iter()
                        .filter(|p| !parts.digests.contains_key(p.as_str()))
                        .cloned(),
                );
                parts.inputs[*i] = files;
            }
        }
        look.extend(kept.racy.iter().cloned());
        look.extend(kept.volatile.iter().cloned());

        let look: Vec<String> = look.into_iter().collect();
        let results = fs::digest_paths(&project.root, &look, |p| parts.entries.get(p).copied());
        let mut updates = std::mem::take(&mut kept.unwritten);
        for (path, r) in look.into_iter().zip(results) {
            match r {
                Ok(PathDigest::Missing) => {
                    if parts.entries.remove(&path).is_some() {
                        updates.insert(path.clone(), None);
                    }
                    let wanted = kept.volatile.contains(&path)
                        || order.iter().any(|&i| holds(&parts.inputs[i], &path));
                    if wanted {
                        parts.digests.insert(path, None);
                    } else {
                        parts.digests.remove(&path);
                    }
                }
                Ok(PathDigest::Present {
                    digest, refreshed, ..
                }) => {
                    if let Some(c) = refreshed {
                        if !c.stat.is_dir {
                            updates.insert(path.clone(), Some(cached_to_row(&c)));
                        }
                        parts.entries.insert(path.clone(), c);
                    }
                    parts.digests.insert(path, Some(digest));
                }
                Err(e) => return Some(Err(SnapshotError::reading(path, e))),
            }
        }
        let Parts {
            order: _,
            records,
            raw_records,
            inputs,
            digests,
            entries,
            rewalk,
            produced,
            produced_dirs,
            env,
            value_key,
        } = parts;
        // Inherited values are read again: orch may set one for this build (`ORCH_TICK`).
        let env = env
            .into_keys()
            .map(|name| {
                let digest = super::env::var_os(&name)
                    .map(|v| super::value_digest(&value_key, v.as_encoded_bytes()));
                (name, digest)
            })
            .collect();
        Some(Ok(Snapshot {
            project,
            graph,
            order,
            forced,
            records,
            raw_records,
            inputs,
            digests,
            digest_updates: updates.into_iter().collect(),
            rewalk,
            produced,
            produced_dirs,
            env,
            value_key,
            value_key_known: true,
            // A warm snapshot never vouches for a no-op (see `Snapshots::is_full`).
            walked: Walked::default(),
            entries,
            reread: Mutex::new(HashMap::new()),
            shard_inputs: Mutex::new(HashMap::new()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn removing_a_path_removes_what_is_below_it_and_nothing_beside() {
        let mut files = strings(&["a", "d", "d-x", "d/1", "d/e/2", "d0", "z"]);
        let removed = remove_under(&mut files, "d", |p| p == "d/e/2");
        assert_eq!(removed, ["d/1", "d"]);
        assert_eq!(files, ["a", "d-x", "d/e/2", "d0", "z"]);
        assert!(remove_under(&mut files, "q", |_| false).is_empty());
        insert_sorted(&mut files, "d/1");
        insert_sorted(&mut files, "d/1");
        assert_eq!(files, ["a", "d-x", "d/1", "d/e/2", "d0", "z"]);
    }

    const ORCHFILE: &str = r#"
[phase.all]
run = "cat {inputs} > {output}"
inputs = ["src/**/*.txt", "plain.cfg"]
outputs = ["out/all.txt"]

[phase.other]
run = "true"
inputs = ["lib/*.txt"]
outputs = ["out/other.txt"]
"#;

    struct Fixture {
        dir: tempfile::TempDir,
        project: Project,
        graph: Graph,
        selected: BTreeSet<usize>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            std::fs::write(root.join("Orchfile.toml"), ORCHFILE).unwrap();
            for (p, text) in [
                ("src/a.txt", "a"),
                ("src/sub/b.txt", "b"),
                ("src/skip.md", "no"),
                ("plain.cfg", "cfg"),
                ("lib/l.txt", "l"),
            ] {
                let path = root.join(p);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            let raw = crate::orchfile::load(&root.join("Orchfile.toml")).unwrap();
            let project = crate::model::validate(raw).unwrap();
            let graph = crate::graph::build(&project).unwrap();
            let layout = Layout::new(&project.root);
            layout.ensure().unwrap();
            layout.ensure_value_key().unwrap();
            let selected = (0..project.instances.len()).collect();
            Fixture {
                dir,
                project,
                graph,
                selected,
            }
        }

        fn path(&self, rel: &str) -> std::path::PathBuf {
            self.dir.path().join(rel)
        }

        fn full(&self) -> Snapshot<'_> {
            let (store, _) = Store::open(&Layout::new(&self.project.root)).unwrap();
            Snapshot::take(
                &self.project,
                &self.graph,
                &self.selected,
                BTreeSet::new(),
                &store,
            )
            .unwrap()
        }

        /// Reports `changed`, takes the warm snapshot and checks it against a full one.
        fn step(&self, kept: &mut Kept, changed: &[&str]) {
            let changed = strings(changed);
            kept.report(&changed);
            let warm = Snapshot::take_warm(
                &self.project,
                &self.graph,
                &self.selected,
                BTreeSet::new(),
                kept,
            )
            .expect("kept state answers")
            .unwrap();
            let full = self.full();
            assert_eq!(warm.inputs, full.inputs, "after {changed:?}");
            for &i in &full.order {
                for p in &full.inputs[i] {
                    assert_eq!(warm.digest(p), full.digest(p), "{p} after {changed:?}");
                }
            }
            kept.keep(warm, true, &BTreeSet::new(), BTreeMap::new());
        }
    }

    #[test]
    fn a_warm_snapshot_matches_a_full_one_after_each_change() {
        let f = Fixture::new();
        let mut kept = Kept::default();
        assert!(!kept.is_warm());
        kept.keep(f.full(), true, &BTreeSet::new(), BTreeMap::new());
        assert!(kept.is_warm());
        f.step(&mut kept, &[]);
        std::fs::write(f.path("src/a.txt"), "a2").unwrap();
        f.step(&mut kept, &["src/a.txt"]);
        std::fs::write(f.path("src/new.txt"), "n").unwrap();
        std::fs::write(f.path("src/new.md"), "n").unwrap();
        f.step(&mut kept, &["src/new.txt", "src/new.md"]);
        std::fs::remove_file(f.path("src/new.txt")).unwrap();
        f.step(&mut kept, &["src/new.txt"]);
        // A new directory reported alone: what is in it is found by walking it.
        std::fs::create_dir_all(f.path("src/d/e")).unwrap();
        std::fs::write(f.path("src/d/e/x.txt"), "x").unwrap();
        std::fs::write(f.path("src/d/y.txt"), "y").unwrap();
        f.step(&mut kept, &["src/d"]);
        std::fs::remove_dir_all(f.path("src/d")).unwrap();
        f.step(&mut kept, &["src/d"]);
        std::fs::remove_dir_all(f.path("src/sub")).unwrap();
        std::fs::write(f.path("src/sub"), "now a file, not a directory").unwrap();
        f.step(&mut kept, &["src/sub"]);
        std::fs::remove_file(f.path("plain.cfg")).unwrap();
        std::fs::write(f.path("lib/m.txt"), "m").unwrap();
        f.step(&mut kept, &["plain.cfg", "lib/m.txt"]);
    }

    #[test]
    fn a_symlink_among_the_changes_asks_for_a_full_snapshot() {
        let f = Fixture::new();
        let mut kept = Kept::default();
        kept.keep(f.full(), true, &BTreeSet::new(), BTreeMap::new());
        std::os::unix::fs::symlink(f.path("lib/l.txt"), f.path("src/link.txt")).unwrap();
        kept.report(&strings(&["src/link.txt"]));
        assert!(
            Snapshot::take_warm(
                &f.project,
                &f.graph,
                &f.selected,
                BTreeSet::new(),
                &mut kept
            )
            .is_none()
        );
        // What was kept is spent: the next one is full too.
        assert!(!kept.is_warm());
    }

    #[test]
    fn a_snapshot_not_given_back_leaves_nothing_kept() {
        let f = Fixture::new();
        let mut kept = Kept::default();
        kept.keep(f.full(), true, &BTreeSet::new(), BTreeMap::new());
        let snap = Snapshot::take_warm(
            &f.project,
            &f.graph,
            &f.selected,
            BTreeSet::new(),
            &mut kept,
        );
        drop(snap);
        assert!(!kept.is_warm());
    }
}
