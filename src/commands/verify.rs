//! `orch verify`: re-executes instances in a scratch copy of the project under perturbed
//! schedules and compares their outputs with the recorded ones.
//!
//! Each round builds a fresh copy (outside the project, under the system's temporary
//! directory, a new path every round) with no cache and no state, so every selected
//! instance runs; the round's `-j`, ready order, shard order and `TZ` differ from the
//! others'. Outputs are compared with the project's record when that record is current;
//! an instance never built, or out of date, is compared with a first, unperturbed build
//! of the scratch copy instead. Nothing in the project is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::cli::{BuildArgs, VerifyArgs};
use crate::events::human::Verbosity;
use crate::fs::Digest;
use crate::plan::Success;
use crate::snapshot::SKIP_DIRS;
use crate::store::{Layout, Store};
use crate::timings::Timings;
use crate::verify::{self, Round};
use crate::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};

use super::build::{FullSnapshots, Perturb, run_perturbed};
use super::{Force, Global, Loaded, load, load_project, report_diagnostic, report_error};

/// Output path → digest, per instance name.
type Digests = BTreeMap<String, BTreeMap<String, Digest>>;

/// Runs `orch verify`.
pub fn run(g: &Global, a: VerifyArgs) -> i32 {
    if a.rounds == 0 {
        crate::say!("error: `--rounds` must be at least 1");
        return EXIT_USAGE;
    }
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let (selected, _) = match super::selection(g, &l, &a.targets, Force::None, &[]) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let layout = Layout::new(&l.project.root);
    let recorded = match current_records(&l, &layout, &selected) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let names: Vec<String> = selected
        .iter()
        .map(|&i| l.project.instances[i].name.clone())
        .collect();
    let unrecorded: Vec<&String> = names
        .iter()
        .filter(|n| !recorded.contains_key(*n))
        .collect();
    let seed = a.seed.unwrap_or_else(default_seed);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rounds = verify::rounds(seed, a.rounds, cpus);
    outln!(
        "orch verify: {} instance{}, {} round{}, seed {seed} (`--seed {seed}` repeats them)",
        names.len(),
        plural(names.len()),
        a.rounds,
        plural(a.rounds as usize),
    );
    let scratch = match tempfile::Builder::new().prefix("orch-verify-").tempdir() {
        Ok(t) => t,
        Err(e) => return report_error("cannot create the scratch directory", &e),
    };
    let v = Verifier {
        g,
        l: &l,
        selected: &selected,
        names: &names,
        orchfile: match orchfile_in_project(g, &l) {
            Ok(p) => p,
            Err(code) => return code,
        },
    };

    // The reference of what has no current record: the scratch copy built once, as a
    // plain build would, before any perturbation.
    let mut reference: BTreeMap<String, (BTreeMap<String, Digest>, PathBuf)> = recorded
        .into_iter()
        .map(|(n, d)| (n, (d, l.project.root.clone())))
        .collect();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    if !unrecorded.is_empty() {
        outln!(
            "{} instance{} never built or out of date: {} first built in the scratch copy, and that build stands for {} record",
            unrecorded.len(),
            plural(unrecorded.len()),
            if unrecorded.len() == 1 {
                "it is"
            } else {
                "they are"
            },
            if unrecorded.len() == 1 {
                "its"
            } else {
                "their"
            },
        );
        let dir = scratch.path().join("reference");
        let built = match v.build(&dir, None) {
            Ok(b) => b,
            Err(code) => return code,
        };
        for name in &unrecorded {
            match built.get(*name) {
                Some(d) => {
                    reference.insert((*name).clone(), (d.clone(), dir.clone()));
                }
                None => {
                    outln!("failed: {name} (in the first scratch build)");
                    failed.insert((*name).clone());
                }
            }
        }
    }

    let mut differ: BTreeSet<String> = BTreeSet::new();
    for round in &rounds {
        let dir = scratch.path().join(format!("round-{}", round.number));
        let built = match v.build(&dir, Some(round)) {
            Ok(b) => b,
            Err(code) => return code,
        };
        for name in &names {
            if failed.contains(name) || differ.contains(name) {
                continue;
            }
            let Some(now) = built.get(name) else {
                outln!("failed: {name} ({round})");
                failed.insert(name.clone());
                continue;
            };
            let Some((then, source)) = reference.get(name) else {
                continue;
            };
            if now != then {
                outln!("differs: {name} ({round})");
                describe(then, now, source, &dir);
                differ.insert(name.clone());
            }
        }
        outln!(
            "{round}: {} of {} instance{} as recorded",
            names.len() - failed.len() - differ.len(),
            names.len(),
            plural(names.len()),
        );
        // Disk space: a round's copy is of no use once compared.
        let _ = std::fs::remove_dir_all(&dir);
    }

    if differ.is_empty() && failed.is_empty() {
        outln!(
            "verified: every output of {} instance{} is the same in {} round{}",
            names.len(),
            plural(names.len()),
            a.rounds,
            plural(a.rounds as usize),
        );
        EXIT_OK
    } else {
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
        if !differ.is_empty() {
            outln!(
                "not reproducible: {} instance{} differ{}: {}",
                differ.len(),
                plural(differ.len()),
                if differ.len() == 1 { "s" } else { "" },
                list(&differ)
            );
        }
        if !failed.is_empty() {
            outln!("failed in the scratch copy: {}", list(&failed));
        }
        EXIT_FAILED
    }
}

/// What every round shares.
struct Verifier<'a> {
    g: &'a Global,
    l: &'a Loaded,
    selected: &'a BTreeSet<usize>,
    names: &'a [String],
    /// The Orchfile's path relative to the project root.
    orchfile: PathBuf,
}

impl Verifier<'_> {
    /// Copies the project to `dir` and builds the selection there, perturbed as `round`
    /// says (None: as a plain build would); returns each succeeded instance's outputs.
    /// Err is the exit status to end with.
    fn build(&self, dir: &Path, round: Option<&Round>) -> Result<Digests, i32> {
        let project = &self.l.project;
        // What the selection writes is left behind: every output comes from this build.
        let mut skip: BTreeSet<String> = self
            .selected
            .iter()
            .flat_map(|&i| project.instances[i].outputs.iter().map(|o| o.path.clone()))
            .collect();
        let layout = Layout::new(&project.root);
        let cache = crate::cache::local_dir(project, &layout);
        if let Ok(rel) = cache.strip_prefix(&project.root)
            && let Some(rel) = rel.to_str()
            && !rel.is_empty()
        {
            skip.insert(rel.replace(std::path::MAIN_SEPARATOR, "/"));
        }
        if let Err(e) = verify::copy_project(&project.root, dir, SKIP_DIRS, &skip) {
            return Err(report_error(
                "cannot copy the project to the scratch directory",
                &e,
            ));
        }
        let g = Global {
            dir: Some(dir.to_path_buf()),
            file: Some(dir.join(&self.orchfile)),
            verbosity: Verbosity::Quiet,
            color: self.g.color,
            sets: self.g.sets.clone(),
        };
        let l = load_project(&g, false)?;
        // Instance names, not the targets as typed: a path target is relative to where
        // orch was started, which the copy does not share.
        let targets = if self.selected.len() == project.instances.len() {
            Vec::new()
        } else {
            self.names.to_vec()
        };
        let a = BuildArgs {
            targets,
            jobs: round.map(|r| u32::try_from(r.jobs).unwrap_or(u32::MAX)),
            keep_going: true,
            force: false,
            force_all: false,
            from: Vec::new(),
            dry_run: false,
            no_cache: true,
            run_id: None,
            json: false,
            junit: None,
            executor: None,
            timings: false,
        };
        let how = Perturb {
            shuffle: round.map(|r| r.shuffle),
            env: round
                .map(|r| vec![("TZ".to_owned(), r.tz.to_owned())])
                .unwrap_or_default(),
        };
        let code = run_perturbed(&g, a, &l, &mut FullSnapshots, false, Timings::start(), &how);
        if code >= EXIT_INTERRUPTED {
            return Err(code);
        }
        let (store, _) = Store::open_existing_or_empty(&Layout::new(dir))
            .map_err(|e| report_diagnostic(&e, EXIT_FAILED))?;
        let results = store
            .load_results()
            .map_err(|e| report_diagnostic(&e, EXIT_FAILED))?;
        Ok(results
            .into_iter()
            .filter_map(|(name, r)| {
                let s = r.success?;
                let success = Success::decode(Digest(s.action_key), &s.manifest)?;
                Some((name, digests(&success)))
            })
            .collect())
    }
}

/// The recorded outputs of every selected instance whose record is current (built, and
/// up to date now): what a re-execution must reproduce.
fn current_records(
    l: &Loaded,
    layout: &Layout,
    selected: &BTreeSet<usize>,
) -> Result<Digests, i32> {
    let planned = super::plan::planned(l, layout, selected, BTreeSet::new())?;
    let store = super::runs::open_store(layout)?;
    let results = store
        .load_results()
        .map_err(|e| report_diagnostic(&e, EXIT_FAILED))?;
    Ok(planned
        .iter()
        .filter(|p| !p.entry.stale)
        .filter_map(|p| {
            let s = results.get(&p.entry.instance)?.success.as_ref()?;
            let success = Success::decode(Digest(s.action_key), &s.manifest)?;
            Some((p.entry.instance.clone(), digests(&success)))
        })
        .collect())
}

fn digests(s: &Success) -> BTreeMap<String, Digest> {
    s.outputs
        .iter()
        .map(|(p, m)| (p.clone(), m.digest))
        .collect()
}

/// Prints, for each output that differs, its two digests and where the two versions
/// first differ: the reference version read under `then_root` (only while its digest
/// is still the reference one: a file edited since says nothing of the build).
fn describe(
    then: &BTreeMap<String, Digest>,
    now: &BTreeMap<String, Digest>,
    then_root: &Path,
    now_root: &Path,
) {
    let paths: BTreeSet<&String> = then.keys().chain(now.keys()).collect();
    for path in paths {
        let (a, b) = (then.get(path), now.get(path));
        if a == b {
            continue;
        }
        let short = |d: Option<&Digest>| d.map_or_else(|| "(none)".to_owned(), Digest::short);
        outln!("  {path}: recorded {}, scratch {}", short(a), short(b));
        let (old, new) = (then_root.join(path), now_root.join(path));
        let note = |why: &str| outln!("    ({why})");
        if a.is_none() {
            note("not in the record: only the scratch build made it");
            continue;
        }
        if b.is_none() {
            note("the scratch build did not make it");
            continue;
        }
        if crate::fs::hash_path(&old).ok().as_ref() != a {
            note("the recorded version is no longer in the project: only the digests differ");
            continue;
        }
        let found = if old.is_dir() {
            verify::first_difference_in_dirs(&old, &new).map(|d| {
                d.map(|(file, d)| match d {
                    Some(d) => format!("{file}: {}", indent(&d.to_string())),
                    None => format!("{file}: in only one of them"),
                })
            })
        } else {
            std::fs::read(&old)
                .and_then(|x| Ok((x, std::fs::read(&new)?)))
                .map(|(x, y)| verify::first_difference(&x, &y).map(|d| indent(&d.to_string())))
        };
        match found {
            Ok(Some(text)) => outln!("    {text}"),
            Ok(None) => note("the two versions read the same now"),
            Err(e) => note(&format!("cannot compare the two versions: {e}")),
        }
    }
}

/// Continuation lines of a description, indented under its first.
fn indent(s: &str) -> String {
    s.replace('\n', "\n    ")
}

/// Where the Orchfile is, relative to the project root.
fn orchfile_in_project(g: &Global, l: &Loaded) -> Result<PathBuf, i32> {
    let path = crate::orchfile::find_orchfile(&g.start_dir(), g.file.as_deref())
        .map_err(|e| super::report(vec![*e], &l.project.sources))?;
    let path = std::path::absolute(&path).unwrap_or(path);
    let path = path.canonicalize().unwrap_or(path);
    match path.strip_prefix(&l.project.root) {
        Ok(rel) => Ok(rel.to_path_buf()),
        Err(_) => Ok(PathBuf::from("Orchfile.toml")),
    }
}

/// A seed when none is given: the clock's nanoseconds, so each verification differs.
fn default_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
