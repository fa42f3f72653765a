//! Property tests of whole builds through the real `orch` binary.
//!
//! A random project is a DAG of phases `p0..pN`: phase `k` depends (`needs` or `after`)
//! on a random subset of lower phases, may have a `lang` matrix axis, may read source
//! files (`src/pK.txt`, `src/shared/*.txt`) and upstream outputs (plain paths or globs)
//! through `inputs`, and writes `out/pK[-LANG].txt` (or a directory `out/pK[-LANG].d/`):
//! its name and a checksum of every file it read, upstream outputs included, so any
//! difference in what a command saw shows up in the outputs. Some phases sleep or spin
//! briefly (only to perturb completion order), and some fail.
//!
//! Properties (each case runs the binary several times, so case counts are small):
//! - `-j 1` and `-j 8` builds give identical outputs, action keys, recorded state,
//!   `status --json` and `plan --json`; a second build runs nothing; with `-j 1`, two
//!   builds emit the same events apart from times;
//! - an incremental build after a random edit equals a clean build, and runs exactly
//!   the instances whose key changed or whose outputs were edited by hand;
//! - with failures, `-k` fails and blocks exactly what the dependency semantics say,
//!   and without `-k` the build stops starting instances at the first failure;
//! - target builds, `--from` and `--force` run exactly their selection;
//! - sharded phases (`group`, `chunk`, `files`; see "Sharded phases" below) merge the
//!   same bytes, equal to a model, whatever `-j`, the `parallel` caps and the order in
//!   which shards complete; changing one record of a `group` source reruns one shard.
//!
//! The fixed-case tests at the end are regressions for bugs these properties found.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

const LANGS: &[&str] = &["de", "en", "fr"];

/// What a phase's command does before its real work, only to perturb completion order.
#[derive(Clone, Copy, Debug)]
enum Work {
    None,
    /// `sleep 0.0X`.
    Sleep(u8),
    /// A shell loop of this many iterations.
    Spin(u16),
}

/// How a phase reads its first `needs` upstream besides `{needs.PHASE.outputs}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    No,
    /// Lists the upstream's main output files as plain `inputs` paths.
    Plain,
    /// Lists the upstream's directory outputs as plain `inputs` paths.
    PlainDir,
    /// Matches the upstream's output files with an `inputs` glob.
    Glob,
}

#[derive(Clone, Debug)]
struct Phase {
    needs: Vec<usize>,
    after: Vec<usize>,
    langs: Option<Vec<&'static str>>,
    /// Reads `src/pK.txt`, with this content.
    source: Option<String>,
    /// Reads `src/shared/*.txt`.
    shared: bool,
    /// Also writes a second output, `len`.
    extra_output: bool,
    /// Declares one directory output `out/pK[-LANG].d/` holding `main.txt` (and `len`)
    /// instead of files `out/pK[-LANG].txt` (and `.len`).
    dir_output: bool,
    /// How it reads its first eligible `needs` upstream through `inputs`.
    read: Read,
    work: Work,
    /// Bumped by [`Edit::Command`]; part of what the command echoes.
    tag: u8,
    /// The command fails (after writing its outputs): for a matrix phase only in
    /// language `langs[x % len]`, else always.
    fail: Option<u8>,
}

/// An instance's phase, language, and upstream instances (name → hard).
type InstanceDeps = (usize, Option<&'static str>, BTreeMap<String, bool>);

#[derive(Clone, Debug)]
struct Spec {
    phases: Vec<Phase>,
    /// `src/shared/sN.txt` by N.
    shared: BTreeMap<usize, String>,
}

/// What random projects may contain.
#[derive(Clone, Copy, Debug)]
struct Gen {
    /// Random sleeps and busy loops.
    perturb: bool,
    /// Failing phases.
    failures: bool,
    /// How phases may read upstream outputs through `inputs` (besides `No`).
    reads: &'static [Read],
}

/// No sleeps, no failures; upstream output files read through plain `inputs` paths and
/// globs (directory outputs named as plain paths have regression tests of their own).
const PLAIN: Gen = Gen {
    perturb: false,
    failures: false,
    reads: &[Read::Plain, Read::Glob],
};

type RawPhase = (
    (Vec<(Index, bool)>, Option<u8>, Option<String>, bool),
    (bool, bool, Read, Work, Option<u8>),
);

fn work(perturb: bool) -> BoxedStrategy<Work> {
    if perturb {
        prop_oneof![
            2 => Just(Work::None),
            2 => (1u8..6).prop_map(Work::Sleep),
            1 => (1u16..3000).prop_map(Work::Spin),
        ]
        .boxed()
    } else {
        Just(Work::None).boxed()
    }
}

fn raw_phase(g: Gen) -> impl Strategy<Value = RawPhase> {
    let fail = if g.failures {
        prop::option::weighted(0.15, any::<u8>()).boxed()
    } else {
        Just(None).boxed()
    };
    let read = if g.reads.is_empty() {
        Just(Read::No).boxed()
    } else {
        prop_oneof![
            1 => Just(Read::No),
            1 => prop::sample::select(g.reads),
        ]
        .boxed()
    };
    (
        (
            prop::collection::vec((any::<Index>(), any::<bool>()), 0..4),
            prop_oneof![3 => Just(None), 1 => (1u8..8).prop_map(Some)],
            prop::option::weighted(0.4, "[a-z0-9 ]{0,24}"),
            prop::bool::weighted(0.2),
        ),
        (
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.25),
            read,
            work(g.perturb),
            fail,
        ),
    )
}

fn spec(phases: std::ops::Range<usize>, g: Gen) -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(raw_phase(g), phases),
        prop::collection::vec("[a-z ]{0,16}", 1..3),
    )
        .prop_map(|(raws, shared)| {
            let phases = raws
                .into_iter()
                .enumerate()
                .map(|(k, raw)| {
                    let (
                        (deps, lang, source, shared),
                        (extra_output, dir_output, read, work, fail),
                    ) = raw;
                    let mut needs = Vec::new();
                    let mut after = Vec::new();
                    if k > 0 {
                        for (ix, hard) in deps {
                            let up = ix.index(k);
                            if needs.contains(&up) || after.contains(&up) {
                                continue;
                            }
                            if hard { &mut needs } else { &mut after }.push(up);
                        }
                    }
                    let langs = lang.map(|m| {
                        let v: Vec<&'static str> = LANGS
                            .iter()
                            .enumerate()
                            .filter(|(b, _)| m & (1 << b) != 0)
                            .map(|(_, l)| *l)
                            .collect();
                        if v.is_empty() { vec![LANGS[0]] } else { v }
                    });
                    Phase {
                        needs,
                        after,
                        langs,
                        source,
                        shared,
                        extra_output,
                        dir_output,
                        read,
                        work,
                        tag: 0,
                        fail,
                    }
                })
                .collect();
            Spec {
                phases,
                shared: shared.into_iter().enumerate().collect(),
            }
        })
}

impl Spec {
    /// The `inputs` entries through which phase `k` reads an upstream's outputs.
    fn upstream_inputs(&self, k: usize) -> Vec<String> {
        let p = &self.phases[k];
        let want_dir = match p.read {
            Read::No => return Vec::new(),
            Read::PlainDir => true,
            Read::Plain | Read::Glob => false,
        };
        // An upstream that pairs with every instance: an instance whose `{inputs}` name no
        // file fails before its command runs.
        let pairs = |j: usize| match (&p.langs, &self.phases[j].langs) {
            (Some(mine), Some(theirs)) => mine.iter().all(|l| theirs.contains(l)),
            _ => true,
        };
        let Some(&j) = p
            .needs
            .iter()
            .find(|&&j| self.phases[j].dir_output == want_dir && pairs(j))
        else {
            return Vec::new();
        };
        let ext = if want_dir { ".d" } else { ".txt" };
        match (p.read, &self.phases[j].langs, &p.langs) {
            (Read::Glob, None, _) => vec![format!("out/p{j}.*")],
            (Read::Glob, Some(_), Some(_)) => vec![format!("out/p{j}-{{matrix.lang}}.*")],
            (Read::Glob, Some(_), None) => vec![format!("out/p{j}-*")],
            (_, None, _) => vec![format!("out/p{j}{ext}")],
            (_, Some(_), Some(_)) => vec![format!("out/p{j}-{{matrix.lang}}{ext}")],
            (_, Some(ls), None) => ls.iter().map(|l| format!("out/p{j}-{l}{ext}")).collect(),
        }
    }

    fn orchfile(&self) -> String {
        let mut s = String::from("[orch]\nformat = 1\n");
        for (k, p) in self.phases.iter().enumerate() {
            let sfx = if p.langs.is_some() {
                "-{matrix.lang}"
            } else {
                ""
            };
            let mut label = if p.tag == 0 {
                String::new()
            } else {
                format!("+{}", p.tag)
            };
            if p.langs.is_some() {
                label.push_str(" {matrix.lang}");
            }
            let mut inputs = Vec::new();
            if p.source.is_some() {
                inputs.push(format!("src/p{k}.txt"));
            }
            if p.shared {
                inputs.push("src/shared/*.txt".to_owned());
            }
            inputs.extend(self.upstream_inputs(k));
            let (outputs, main, len) = if p.dir_output {
                let dir = format!("out/p{k}{sfx}.d");
                (
                    vec![format!("{dir}/")],
                    format!("{dir}/main.txt"),
                    format!("{dir}/len"),
                )
            } else {
                let mut outputs = vec![format!("out/p{k}{sfx}.txt")];
                if p.extra_output {
                    outputs.push(format!("out/p{k}{sfx}.len"));
                }
                (
                    outputs,
                    format!("out/p{k}{sfx}.txt"),
                    format!("out/p{k}{sfx}.len"),
                )
            };
            let mut cmd = match p.work {
                Work::None => String::new(),
                Work::Sleep(cs) => format!("sleep 0.0{cs}; "),
                Work::Spin(n) => format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); done; "),
            };
            // Only upstreams that pair with every instance: a placeholder that would
            // expand to no paths is a configuration error.
            let pairs = |j: usize| match (&p.langs, &self.phases[j].langs) {
                (Some(mine), Some(theirs)) => mine.iter().all(|l| theirs.contains(l)),
                _ => true,
            };
            let ups: String = p
                .needs
                .iter()
                .chain(&p.after)
                .filter(|&&j| pairs(j))
                .map(|j| format!(" {{needs.p{j}.outputs}}"))
                .collect();
            let read_inputs = if inputs.is_empty() { "" } else { " {inputs}" };
            // Every file read (directories walked), in path order, through one checksum.
            cmd.push_str(&format!(
                "{{{{ echo p{k}{label}; find /dev/null{ups}{read_inputs} -type f | LC_ALL=C sort | xargs cat /dev/null | cksum; }}}} > {main}"
            ));
            if p.extra_output {
                cmd.push_str(&format!(" && wc -c < {main} > {len}"));
            }
            match (p.fail, &p.langs) {
                (None, _) => {}
                (Some(x), Some(langs)) => {
                    let l = langs[usize::from(x) % langs.len()];
                    cmd.push_str(&format!("; test {{matrix.lang}} != {l}"));
                }
                (Some(_), None) => cmd.push_str("; exit 3"),
            }
            s.push_str(&format!("\n[phase.p{k}]\nrun = '{cmd}'\n"));
            let list = |v: &[String]| {
                v.iter()
                    .map(|x| format!("\"{x}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let phases = |v: &[usize]| list(&v.iter().map(|j| format!("p{j}")).collect::<Vec<_>>());
            if !p.needs.is_empty() {
                s.push_str(&format!("needs = [{}]\n", phases(&p.needs)));
            }
            if !p.after.is_empty() {
                s.push_str(&format!("after = [{}]\n", phases(&p.after)));
            }
            if let Some(langs) = &p.langs {
                let v: Vec<String> = langs.iter().map(|l| (*l).to_owned()).collect();
                s.push_str(&format!("matrix = {{ lang = [{}] }}\n", list(&v)));
            }
            if !inputs.is_empty() {
                s.push_str(&format!("inputs = [{}]\n", list(&inputs)));
            }
            s.push_str(&format!("outputs = [{}]\n", list(&outputs)));
        }
        s
    }

    /// Relative path → content of every file of the project.
    fn files(&self) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        files.insert("Orchfile.toml".to_owned(), self.orchfile());
        for (k, p) in self.phases.iter().enumerate() {
            if let Some(text) = &p.source {
                files.insert(format!("src/p{k}.txt"), format!("{text}\n"));
            }
        }
        for (n, text) in &self.shared {
            files.insert(format!("src/shared/s{n}.txt"), format!("{text}\n"));
        }
        files
    }

    /// Makes the project files in `dir` those of `self`, writing only files whose
    /// content differs and removing source files `self` does not have.
    fn write(&self, dir: &Path) -> Result<(), TestCaseError> {
        let files = self.files();
        if dir.join("src").is_dir() {
            for rel in tree(&dir.join("src"))?.into_keys() {
                if !files.contains_key(&format!("src/{rel}")) {
                    std::fs::remove_file(dir.join("src").join(&rel))
                        .map_err(|e| fail(e.to_string()))?;
                }
            }
        }
        for (rel, text) in files {
            let path = dir.join(&rel);
            if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
            }
            std::fs::write(&path, text).map_err(|e| fail(e.to_string()))?;
        }
        Ok(())
    }

    /// Instance name → (its phase, its language, upstream instance name → hard).
    fn instance_deps(&self) -> BTreeMap<String, InstanceDeps> {
        let name = |k: usize, lang: Option<&str>| match lang {
            Some(l) => format!("p{k}[lang={l}]"),
            None => format!("p{k}"),
        };
        let mut out = BTreeMap::new();
        for (k, p) in self.phases.iter().enumerate() {
            let mine: Vec<Option<&'static str>> = match &p.langs {
                Some(ls) => ls.iter().map(|l| Some(*l)).collect(),
                None => vec![None],
            };
            for lang in mine {
                let mut deps = BTreeMap::new();
                let edges = p.needs.iter().map(|&j| (j, true));
                for (j, hard) in edges.chain(p.after.iter().map(|&j| (j, false))) {
                    match (&self.phases[j].langs, lang) {
                        (None, _) => {
                            deps.insert(name(j, None), hard);
                        }
                        (Some(ls), Some(l)) => {
                            if ls.contains(&l) {
                                deps.insert(name(j, Some(l)), hard);
                            }
                        }
                        (Some(ls), None) => {
                            deps.extend(ls.iter().map(|l| (name(j, Some(l)), hard)));
                        }
                    }
                }
                out.insert(name(k, lang), (k, lang, deps));
            }
        }
        out
    }

    /// Instance name → the names of the instances it depends on.
    fn instances(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.instance_deps()
            .into_iter()
            .map(|(i, (_, _, deps))| (i, deps.into_keys().collect()))
            .collect()
    }

    /// Whether the command of this instance fails.
    fn fails(&self, k: usize, lang: Option<&str>) -> bool {
        let p = &self.phases[k];
        match (p.fail, &p.langs, lang) {
            (None, _, _) => false,
            (Some(x), Some(ls), Some(l)) => ls[usize::from(x) % ls.len()] == l,
            (Some(_), _, _) => true,
        }
    }

    /// What `build -k` must do to each instance of a fresh project (§3 of the design):
    /// `failed` when its command fails, `blocked` when a hard upstream failed or was
    /// blocked, else `succeeded` (soft upstreams that failed do not matter).
    fn keep_going_outcomes(&self) -> BTreeMap<String, &'static str> {
        let deps = self.instance_deps();
        let mut out: BTreeMap<String, &'static str> = BTreeMap::new();
        // Phases only depend on lower phases, so phase order is a topological order.
        let mut by_phase: Vec<(usize, &String)> =
            deps.iter().map(|(n, (k, _, _))| (*k, n)).collect();
        by_phase.sort();
        for (_, name) in by_phase {
            let (k, lang, ups) = &deps[name];
            let blocked = ups
                .iter()
                .any(|(u, hard)| *hard && matches!(out.get(u), Some(&"failed" | &"blocked")));
            let outcome = if blocked {
                "blocked"
            } else if self.fails(*k, *lang) {
                "failed"
            } else {
                "succeeded"
            };
            out.insert(name.clone(), outcome);
        }
        out
    }

    /// The files an instance writes, relative to `out/`.
    fn outputs_of(&self, k: usize, lang: Option<&str>) -> Vec<String> {
        let sfx = lang.map(|l| format!("-{l}")).unwrap_or_default();
        let p = &self.phases[k];
        let (main, len) = if p.dir_output {
            (format!("p{k}{sfx}.d/main.txt"), format!("p{k}{sfx}.d/len"))
        } else {
            (format!("p{k}{sfx}.txt"), format!("p{k}{sfx}.len"))
        };
        if p.extra_output {
            vec![main, len]
        } else {
            vec![main]
        }
    }
}

fn fail(msg: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(msg.into())
}

fn orch(dir: &Path, args: &[&str]) -> Result<Output, TestCaseError> {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .map_err(|e| fail(format!("cannot run orch: {e}")))
}

/// Runs orch and requires exit status 0; returns stdout.
fn orch_ok(dir: &Path, args: &[&str]) -> Result<String, TestCaseError> {
    let out = orch(dir, args)?;
    if !out.status.success() {
        return Err(fail(format!(
            "`orch -C {} {}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            dir.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Relative path → content of every file under `dir`.
fn tree(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, TestCaseError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| fail(format!("{}: {e}", d.display())))?;
        for entry in entries {
            let path = entry.map_err(|e| fail(e.to_string()))?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .map_err(|e| fail(e.to_string()))?
                    .to_string_lossy()
                    .into_owned();
                let bytes = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
                out.insert(rel, bytes);
            }
        }
    }
    Ok(out)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), TestCaseError> {
    for (rel, bytes) in tree(from)? {
        let dest = to.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
        }
        std::fs::write(&dest, bytes).map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}

/// The events of one run, in order.
fn events(dir: &Path, run_id: &str) -> Result<Vec<Value>, TestCaseError> {
    let path = dir.join(".orch/runs").join(run_id).join("events.jsonl");
    let text =
        std::fs::read_to_string(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    text.lines()
        .map(|l| serde_json::from_str(l).map_err(|e| fail(format!("bad event `{l}`: {e}"))))
        .collect()
}

/// `events` with an `instance_skipped` event (its key read from the state) for each
/// instance of `selected` that has none of its own: those were up to date before the
/// build began, which `plan_ready` says by counting them (checked here).
fn with_unlisted(
    dir: &Path,
    mut events: Vec<Value>,
    selected: &BTreeSet<String>,
) -> Result<Vec<Value>, TestCaseError> {
    let named: BTreeSet<String> = events
        .iter()
        .map(|e| field(e, "instance").to_owned())
        .collect();
    let unlisted: Vec<&String> = selected.iter().filter(|n| !named.contains(*n)).collect();
    let counted = events
        .iter()
        .find(|e| field(e, "type") == "plan_ready")
        .and_then(|e| e["up_to_date_unlisted"].as_u64());
    prop_assert_eq!(counted, Some(unlisted.len() as u64), "{:?}", unlisted);
    let err = |e: rusqlite::Error| fail(format!("reading {}/.orch/state.db: {e}", dir.display()));
    let conn = rusqlite::Connection::open_with_flags(
        dir.join(".orch/state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .map_err(err)?;
    let mut skips = Vec::with_capacity(unlisted.len());
    for name in unlisted {
        let key: String = conn
            .query_row(
                "SELECT lower(hex(success_action_key)) FROM instances WHERE name = ?1",
                [name],
                |row| row.get(0),
            )
            .map_err(err)?;
        skips.push(serde_json::json!({
            "type": "instance_skipped",
            "instance": name,
            "reason": "up_to_date",
            "action_key": key,
            "early_cutoff": false,
        }));
    }
    // Right after `plan_ready`: they were done before anything started.
    let at = events
        .iter()
        .position(|e| field(e, "type") == "plan_ready")
        .map_or(events.len(), |p| p + 1);
    events.splice(at..at, skips);
    Ok(events)
}

fn field<'a>(e: &'a Value, key: &str) -> &'a str {
    e.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Instance → (action key, outputs) of every `instance_completed` event.
fn completed(events: &[Value]) -> BTreeMap<String, (String, Value)> {
    events
        .iter()
        .filter(|e| field(e, "type") == "instance_completed")
        .map(|e| {
            (
                field(e, "instance").to_owned(),
                (
                    field(e, "action_key").to_owned(),
                    e.get("outputs").cloned().unwrap_or_default(),
                ),
            )
        })
        .collect()
}

/// Checks, in event order, that no instance starts before each of its upstreams has
/// finished (completed, skipped, failed or blocked, or up to date from the start) in
/// this run.
fn check_start_order(
    events: &[Value],
    deps: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), TestCaseError> {
    // An instance without any event was up to date before the build began (or is not
    // selected): done from the start.
    let named: BTreeSet<&str> = events.iter().map(|e| field(e, "instance")).collect();
    let mut done: BTreeSet<&str> = deps
        .keys()
        .map(String::as_str)
        .filter(|n| !named.contains(n))
        .collect();
    for e in events {
        let inst = field(e, "instance");
        match field(e, "type") {
            "instance_started" => {
                for up in deps.get(inst).into_iter().flatten() {
                    prop_assert!(
                        done.contains(up.as_str()),
                        "`{}` started before its upstream `{}` finished",
                        inst,
                        up
                    );
                }
            }
            "instance_completed" | "instance_skipped" | "instance_failed" | "instance_blocked" => {
                done.insert(inst);
            }
            _ => {}
        }
    }
    Ok(())
}

/// The recorded state in `.orch/state.db` that does not depend on time, inodes or
/// machine: each instance's last status and success record, and each output record
/// (with the run ids that produced them when `run_ids`).
fn db_state(dir: &Path, run_ids: bool) -> Result<Vec<Vec<rusqlite::types::Value>>, TestCaseError> {
    let err = |e: rusqlite::Error| fail(format!("reading {}/.orch/state.db: {e}", dir.display()));
    let conn = rusqlite::Connection::open_with_flags(
        dir.join(".orch/state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .map_err(err)?;
    let queries = if run_ids {
        [
            "SELECT 'instance', name, last_status, success_action_key, success_manifest, \
             last_run_id, success_run_id FROM instances ORDER BY name",
            "SELECT 'output', path, digest, size, instance, action_key, built_from, run_id \
             FROM outputs ORDER BY path",
        ]
    } else {
        [
            "SELECT 'instance', name, last_status, success_action_key, success_manifest \
             FROM instances ORDER BY name",
            "SELECT 'output', path, digest, size, instance, action_key, built_from \
             FROM outputs ORDER BY path",
        ]
    };
    let mut rows = Vec::new();
    for sql in queries {
        let mut stmt = conn.prepare(sql).map_err(err)?;
        let n = stmt.column_count();
        let mapped = stmt
            .query_map([], |row| {
                (0..n)
                    .map(|c| row.get::<_, rusqlite::types::Value>(c))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(err)?;
        for r in mapped {
            rows.push(r.map_err(err)?);
        }
    }
    Ok(rows)
}

/// The instances started in `events`.
fn started(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| field(e, "type") == "instance_started")
        .map(|e| field(e, "instance").to_owned())
        .collect()
}

/// Instance → action key, of every instance completed or skipped in `events`.
fn keys(events: &[Value]) -> BTreeMap<String, String> {
    events
        .iter()
        .filter(|e| matches!(field(e, "type"), "instance_completed" | "instance_skipped"))
        .map(|e| {
            (
                field(e, "instance").to_owned(),
                field(e, "action_key").to_owned(),
            )
        })
        .collect()
}

/// The plan digest of a run.
fn plan_digest(events: &[Value]) -> Option<String> {
    events
        .iter()
        .find(|e| field(e, "type") == "run_started")
        .map(|e| field(e, "plan_digest").to_owned())
}

/// Events without the fields that may differ between two runs of the same state.
fn normalized(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let Some(o) = e.as_object_mut() {
                o.remove("ts");
                o.remove("duration_ms");
            }
            e
        })
        .collect()
}

/// Instance → how it ended in `events`: `succeeded`, `up_to_date`, `failed`, `blocked`.
fn outcomes(events: &[Value]) -> BTreeMap<String, &'static str> {
    events
        .iter()
        .filter_map(|e| {
            let outcome = match field(e, "type") {
                "instance_completed" => "succeeded",
                "instance_skipped" => "up_to_date",
                "instance_failed" => "failed",
                "instance_blocked" => "blocked",
                _ => return None,
            };
            Some((field(e, "instance").to_owned(), outcome))
        })
        .collect()
}

/// The events of these types, as (instance, event) pairs sorted by instance.
fn by_type(events: &[Value], types: &[&str]) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = normalized(events)
        .into_iter()
        .filter(|e| types.contains(&field(e, "type")))
        .map(|mut e| {
            if let Some(o) = e.as_object_mut() {
                o.remove("seq");
            }
            (field(&e, "instance").to_owned(), e)
        })
        .collect();
    v.sort_by(|x, y| (&x.0, x.1.to_string()).cmp(&(&y.0, y.1.to_string())));
    v
}

/// Builds `spec` with `-j 1` in one copy and `-j 8` in another, and checks that the
/// outputs, the successful instances, their action keys, the recorded state and
/// `status`/`plan` agree, that `-j 8` starts nothing before its upstreams finished, and
/// that a second build in each copy runs nothing.
fn check_j1_matches_j8(spec: &Spec) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    spec.write(&a)?;
    copy_tree(&a, &b)?;
    copy_tree(&a, &c)?;
    let instances = spec.instances();
    let all: BTreeSet<String> = instances.keys().cloned().collect();

    orch_ok(&a, &["build", "-j", "1", "--run-id", "first"])?;
    orch_ok(&b, &["build", "-j", "8", "--run-id", "first"])?;
    orch_ok(&c, &["build", "-j", "1", "--run-id", "first"])?;

    let out_a = tree(&a.join("out"))?;
    let out_b = tree(&b.join("out"))?;
    let declared: usize = spec
        .phases
        .iter()
        .map(|p| p.langs.as_ref().map_or(1, Vec::len) * if p.extra_output { 2 } else { 1 })
        .sum();
    prop_assert_eq!(
        out_a.len(),
        declared,
        "not every declared output was written"
    );
    prop_assert!(
        out_a == out_b,
        "out/ differs between -j 1 and -j 8: {:?}",
        out_a
            .keys()
            .chain(out_b.keys())
            .filter(|k| out_a.get(*k) != out_b.get(*k))
            .collect::<BTreeSet<_>>()
    );

    let ev_a = events(&a, "first")?;
    let ev_b = events(&b, "first")?;
    let done_a = completed(&ev_a);
    let done_b = completed(&ev_b);
    prop_assert_eq!(done_a.keys().cloned().collect::<BTreeSet<_>>(), all.clone());
    prop_assert_eq!(&done_a, &done_b, "instances or action keys differ");
    prop_assert_eq!(
        plan_digest(&ev_a),
        plan_digest(&ev_b),
        "equal project states have different plan digests"
    );
    // §7: with -j 1, two builds of the same state emit the same events apart from `ts`
    // and durations.
    let ev_c = events(&c, "first")?;
    prop_assert_eq!(normalized(&ev_a), normalized(&ev_c), "-j 1 events differ");
    check_start_order(&ev_a, &instances)?;
    check_start_order(&ev_b, &instances)?;
    let last = |ev: &[Value]| {
        ev.last().map(|e| {
            (
                field(e, "type").to_owned(),
                e.get("counts").cloned().unwrap_or_default(),
            )
        })
    };
    prop_assert_eq!(last(&ev_a), last(&ev_b));

    prop_assert_eq!(
        db_state(&a, true)?,
        db_state(&b, true)?,
        "recorded state differs"
    );
    let status_a = orch_ok(&a, &["status", "--json"])?;
    let status_b = orch_ok(&b, &["status", "--json"])?;
    prop_assert_eq!(&status_a, &status_b, "`status --json` differs");
    let status: Value = serde_json::from_str(&status_a).map_err(|e| fail(e.to_string()))?;
    for row in status["instances"].as_array().into_iter().flatten() {
        prop_assert_eq!(field(row, "status"), "up_to_date", "status row {}", row);
    }
    let plan_a = orch_ok(&a, &["plan", "--json"])?;
    let plan_b = orch_ok(&b, &["plan", "--json"])?;
    prop_assert_eq!(&plan_a, &plan_b, "`plan --json` differs");
    let plan: Value = serde_json::from_str(&plan_a).map_err(|e| fail(e.to_string()))?;
    prop_assert_eq!(plan["stale"].as_u64(), Some(0), "plan: {}", plan_a);
    prop_assert_eq!(plan["up_to_date"].as_u64(), Some(all.len() as u64));

    for (dir, jobs) in [(&a, "1"), (&b, "8")] {
        orch_ok(dir, &["build", "-j", jobs, "--run-id", "second"])?;
        let ev = events(dir, "second")?;
        let ran = started(&ev);
        prop_assert!(ran.is_empty(), "a second build (-j {}) ran {:?}", jobs, ran);
        // Up to date before the build: no event each; `plan_ready` counts them all.
        let named: BTreeSet<String> = ev
            .iter()
            .filter(|e| !field(e, "instance").is_empty())
            .map(|e| field(e, "instance").to_owned())
            .collect();
        prop_assert!(named.is_empty(), "a no-op build named {:?}", named);
        let plan = ev.iter().find(|e| field(e, "type") == "plan_ready");
        prop_assert_eq!(
            plan.and_then(|e| e["up_to_date_unlisted"].as_u64()),
            Some(all.len() as u64)
        );
    }
    prop_assert!(
        tree(&a.join("out"))? == out_a,
        "the second build changed out/"
    );
    orch_ok(&c, &["build", "-j", "1", "--run-id", "second"])?;
    prop_assert_eq!(
        normalized(&events(&a, "second")?),
        normalized(&events(&c, "second")?),
        "-j 1 no-op events differ"
    );
    prop_assert!(
        tree(&b.join("out"))? == out_b,
        "the second build changed out/"
    );
    Ok(())
}

/// A change made between two builds.
#[derive(Clone, Debug)]
enum Edit {
    /// New content for a source file (a phase's own or a shared one).
    Source(Index, String),
    /// The same source file with every letter and digit shifted: same size, other bytes.
    Shift(Index),
    /// A new shared file, which the `src/shared/*.txt` globs pick up.
    AddShared(String),
    /// One shared file fewer (when there are at least two).
    RemoveShared(Index),
    /// A phase's command echoes something else.
    Command(Index),
    /// A new `after` edge from a lower phase to a higher one.
    AddEdge(Index, Index),
    /// An output overwritten by hand.
    TamperOutput(Index),
    /// An output deleted by hand.
    DeleteOutput(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), "[a-z0-9 ]{0,24}").prop_map(|(i, t)| Edit::Source(i, t)),
        any::<Index>().prop_map(Edit::Shift),
        "[a-z ]{0,16}".prop_map(Edit::AddShared),
        any::<Index>().prop_map(Edit::RemoveShared),
        any::<Index>().prop_map(Edit::Command),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::AddEdge(a, b)),
        any::<Index>().prop_map(Edit::TamperOutput),
        any::<Index>().prop_map(Edit::DeleteOutput),
    ]
}

fn shift(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'z' => 'a',
            '9' => '0',
            'a'..='y' | '0'..='8' => char::from(c as u8 + 1),
            other => other,
        })
        .collect()
}

impl Edit {
    /// The project after the edit (unchanged for edits of outputs).
    fn apply(&self, spec: &Spec) -> Spec {
        let mut spec = spec.clone();
        // Source files: phases' own, then shared ones (never empty).
        let mut sources: Vec<(Option<usize>, usize)> = spec
            .phases
            .iter()
            .enumerate()
            .filter(|(_, p)| p.source.is_some())
            .map(|(k, _)| (Some(k), k))
            .collect();
        sources.extend(spec.shared.keys().map(|&n| (None, n)));
        let n = spec.phases.len();
        match self {
            Edit::Source(ix, _) | Edit::Shift(ix) => {
                let text = match sources[ix.index(sources.len())] {
                    (Some(k), _) => spec.phases[k].source.as_mut(),
                    (None, n) => spec.shared.get_mut(&n),
                };
                if let Some(text) = text {
                    *text = match self {
                        Edit::Source(_, new) => new.clone(),
                        _ => shift(text),
                    };
                }
            }
            Edit::AddShared(text) => {
                let next = spec.shared.keys().max().map_or(0, |m| m + 1);
                spec.shared.insert(next, text.clone());
            }
            Edit::RemoveShared(ix) => {
                if spec.shared.len() > 1 {
                    let keys: Vec<usize> = spec.shared.keys().copied().collect();
                    spec.shared.remove(&keys[ix.index(keys.len())]);
                }
            }
            Edit::Command(ix) => spec.phases[ix.index(n)].tag += 1,
            Edit::AddEdge(hi, lo) => {
                if n >= 2 {
                    let hi = 1 + hi.index(n - 1);
                    let lo = lo.index(hi);
                    let p = &mut spec.phases[hi];
                    if !p.needs.contains(&lo) && !p.after.contains(&lo) {
                        p.after.push(lo);
                    }
                }
            }
            Edit::TamperOutput(_) | Edit::DeleteOutput(_) => {}
        }
        spec
    }
}

/// Builds `spec` with `-j 8`, applies `edit` and builds again; a clean `-j 1` build of
/// the edited project must give the same outputs, action keys, recorded state, `status`
/// and `plan`, and the incremental build must have run exactly the instances whose
/// action key changed and those whose outputs were edited by hand.
fn check_incremental(spec: &Spec, edit: &Edit) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    spec.write(&a)?;
    orch_ok(&a, &["build", "-j", "8", "--run-id", "first"])?;
    let first = events(&a, "first")?;
    let keys_first = keys(&first);

    let edited = edit.apply(spec);
    edited.write(&a)?;
    let mut touched = BTreeSet::new();
    if let Edit::TamperOutput(ix) | Edit::DeleteOutput(ix) = edit {
        let owners: Vec<(String, String)> = completed(&first)
            .into_iter()
            .flat_map(|(inst, (_, outs))| {
                let paths: Vec<String> = outs
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                paths.into_iter().map(move |p| (p, inst.clone()))
            })
            .collect();
        prop_assert!(!owners.is_empty());
        let (path, inst) = &owners[ix.index(owners.len())];
        let path = a.join(path);
        let r = match (edit, path.is_dir()) {
            (Edit::DeleteOutput(_), false) => std::fs::remove_file(&path),
            (Edit::DeleteOutput(_), true) => std::fs::remove_dir_all(&path),
            (_, false) => std::fs::write(&path, "tampered\n"),
            // Directory outputs are left for the command to update (README), so only
            // change a file the command rewrites.
            (_, true) => std::fs::write(path.join("main.txt"), "tampered\n"),
        };
        r.map_err(|e| fail(format!("{}: {e}", path.display())))?;
        touched.insert(inst.clone());
    }
    // Staleness decisions, not the cache, are the subject here: a tampered output must
    // rerun its instance (with the cache it would be restored, tested elsewhere).
    orch_ok(
        &a,
        &["build", "-j", "8", "--no-cache", "--run-id", "second"],
    )?;
    edited.write(&b)?;
    orch_ok(&b, &["build", "-j", "1", "--run-id", "clean"])?;

    let second = with_unlisted(
        &a,
        events(&a, "second")?,
        &edited.instances().into_keys().collect(),
    )?;
    let clean = events(&b, "clean")?;
    let keys_clean = keys(&clean);
    prop_assert_eq!(
        keys_clean.keys().cloned().collect::<BTreeSet<_>>(),
        edited.instances().into_keys().collect::<BTreeSet<_>>()
    );
    prop_assert_eq!(
        &keys(&second),
        &keys_clean,
        "incremental and clean action keys differ"
    );
    let expected: BTreeSet<String> = keys_clean
        .iter()
        .filter(|(i, k)| keys_first.get(*i) != Some(k))
        .map(|(i, _)| i.clone())
        .chain(touched)
        .collect();
    prop_assert_eq!(
        started(&second),
        expected,
        "the incremental build ran other instances"
    );
    check_start_order(&second, &edited.instances())?;

    let out_a = tree(&a.join("out"))?;
    let out_b = tree(&b.join("out"))?;
    prop_assert!(
        out_a == out_b,
        "out/ differs between the incremental and the clean build: {:?}",
        out_a
            .keys()
            .chain(out_b.keys())
            .filter(|k| out_a.get(*k) != out_b.get(*k))
            .collect::<BTreeSet<_>>()
    );
    prop_assert_eq!(
        db_state(&a, false)?,
        db_state(&b, false)?,
        "recorded state differs"
    );
    prop_assert_eq!(
        orch_ok(&a, &["status", "--json"])?,
        orch_ok(&b, &["status", "--json"])?,
        "`status --json` differs"
    );
    let plan_a = orch_ok(&a, &["plan", "--json"])?;
    prop_assert_eq!(
        &plan_a,
        &orch_ok(&b, &["plan", "--json"])?,
        "`plan --json` differs"
    );
    let plan: Value = serde_json::from_str(&plan_a).map_err(|e| fail(e.to_string()))?;
    prop_assert_eq!(plan["stale"].as_u64(), Some(0), "plan: {}", plan_a);
    Ok(())
}

/// Builds a project with failing phases with `-k`, in one copy with `-j 1` and in
/// another with `-j 8`: each instance must fail, be blocked or succeed as §3 of the
/// design says (whatever the job count), with the same blockers, warnings, outputs (none
/// for failed instances) and status. A second `-k` build reruns exactly the failed
/// instances. Once the failures are fixed, a build gives what a clean build does.
fn check_keep_going(spec: &Spec) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    spec.write(&a)?;
    copy_tree(&a, &b)?;
    let expected = spec.keep_going_outcomes();
    let any_failed = expected.values().any(|o| *o == "failed");
    let code = if any_failed { 1 } else { 0 };
    for (dir, jobs) in [(&a, "1"), (&b, "8")] {
        let out = orch(dir, &["build", "-k", "-j", jobs, "--run-id", "first"])?;
        prop_assert_eq!(
            out.status.code(),
            Some(code),
            "-j {}: {}{}",
            jobs,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ev_a = events(&a, "first")?;
    let ev_b = events(&b, "first")?;
    prop_assert_eq!(&outcomes(&ev_a), &expected, "-j 1 outcomes");
    prop_assert_eq!(&outcomes(&ev_b), &expected, "-j 8 outcomes");
    let kinds = [
        "instance_blocked",
        "soft_dependency_unmet",
        "instance_failed",
    ];
    let strip_log = |v: Vec<(String, Value)>| -> Vec<(String, Value)> {
        v.into_iter()
            .map(|(i, mut e)| {
                if let Some(o) = e.as_object_mut() {
                    o.remove("log");
                }
                (i, e)
            })
            .collect()
    };
    prop_assert_eq!(
        strip_log(by_type(&ev_a, &kinds)),
        strip_log(by_type(&ev_b, &kinds)),
        "blocked, failed or soft-dependency events differ"
    );
    // Soft dependencies: a warning for each failed or blocked soft upstream of an
    // instance that ran.
    let deps = spec.instance_deps();
    let mut unmet = BTreeSet::new();
    for (name, (_, _, ups)) in &deps {
        if expected[name] == "blocked" {
            continue;
        }
        for (u, hard) in ups {
            if !hard && expected[u] != "succeeded" {
                unmet.insert((name.clone(), u.clone(), expected[u].to_owned()));
            }
        }
    }
    let seen: BTreeSet<(String, String, String)> = by_type(&ev_b, &["soft_dependency_unmet"])
        .into_iter()
        .map(|(i, e)| {
            (
                i,
                field(&e, "upstream").to_owned(),
                field(&e, "upstream_status").to_owned(),
            )
        })
        .collect();
    prop_assert_eq!(seen, unmet, "soft_dependency_unmet warnings");
    check_start_order(&ev_b, &spec.instances())?;

    let out_a = tree(&a.join("out"))?;
    prop_assert!(
        out_a == tree(&b.join("out"))?,
        "out/ differs between -j 1 and -j 8"
    );
    let produced: BTreeSet<String> = deps
        .iter()
        .filter(|(n, _)| expected[*n] == "succeeded")
        .flat_map(|(_, (k, lang, _))| spec.outputs_of(*k, *lang))
        .collect();
    prop_assert_eq!(
        out_a.keys().cloned().collect::<BTreeSet<_>>(),
        produced,
        "out/ must hold exactly the outputs of instances that succeeded"
    );
    let status_a = orch_ok(&a, &["status", "--json"])?;
    prop_assert_eq!(
        &status_a,
        &orch_ok(&b, &["status", "--json"])?,
        "`status --json` differs"
    );
    let status: Value = serde_json::from_str(&status_a).map_err(|e| fail(e.to_string()))?;
    for row in status["instances"].as_array().into_iter().flatten() {
        let name = field(row, "instance");
        match expected.get(name).copied() {
            Some("failed") => prop_assert_eq!(field(row, "status"), "failed", "{}", row),
            Some("blocked") => prop_assert_eq!(field(row, "status"), "blocked", "{}", row),
            Some(_) => prop_assert!(
                matches!(field(row, "status"), "up_to_date" | "stale"),
                "{}",
                row
            ),
            None => prop_assert!(false, "unknown instance in status: {}", row),
        }
    }
    prop_assert_eq!(
        orch_ok(&a, &["plan", "--json"])?,
        orch_ok(&b, &["plan", "--json"])?,
        "`plan --json` differs"
    );

    // Again: failed instances rerun (and fail again), nothing else runs.
    for (dir, jobs) in [(&a, "1"), (&b, "8")] {
        let out = orch(dir, &["build", "-k", "-j", jobs, "--run-id", "second"])?;
        prop_assert_eq!(out.status.code(), Some(code));
        let ev = with_unlisted(
            dir,
            events(dir, "second")?,
            &expected.keys().cloned().collect(),
        )?;
        let failed: BTreeSet<String> = expected
            .iter()
            .filter(|(_, o)| **o == "failed")
            .map(|(n, _)| n.clone())
            .collect();
        prop_assert_eq!(
            started(&ev),
            failed,
            "-j {}: the second build ran other instances",
            jobs
        );
        let again: BTreeMap<String, &str> = outcomes(&ev)
            .into_iter()
            .map(|(n, o)| (n, if o == "up_to_date" { "succeeded" } else { o }))
            .collect();
        prop_assert_eq!(
            &again,
            &expected,
            "-j {}: outcomes of the second build",
            jobs
        );
    }

    // Fixed: the build must end where a clean build of the fixed project does.
    let mut fixed = spec.clone();
    for p in &mut fixed.phases {
        p.fail = None;
    }
    fixed.write(&a)?;
    orch_ok(&a, &["build", "-j", "8", "--run-id", "fixed"])?;
    let c = tmp.path().join("c");
    fixed.write(&c)?;
    orch_ok(&c, &["build", "-j", "8", "--run-id", "clean"])?;
    let fixed_keys = keys(&with_unlisted(
        &a,
        events(&a, "fixed")?,
        &fixed.instances().into_keys().collect(),
    )?);
    prop_assert_eq!(
        &fixed_keys,
        &keys(&events(&c, "clean")?),
        "action keys after the fix"
    );
    prop_assert!(
        tree(&a.join("out"))? == tree(&c.join("out"))?,
        "out/ after the fix"
    );
    prop_assert_eq!(
        db_state(&a, false)?,
        db_state(&c, false)?,
        "recorded state after the fix"
    );
    prop_assert_eq!(
        orch_ok(&a, &["status", "--json"])?,
        orch_ok(&c, &["status", "--json"])?,
        "`status --json` after the fix"
    );
    Ok(())
}

/// A build target: phase `k`, or its instance with language `langs[l % len]`.
#[derive(Clone, Debug)]
struct Target {
    phase: Index,
    lang: Option<Index>,
}

fn target() -> impl Strategy<Value = Target> {
    (any::<Index>(), prop::option::of(any::<Index>()))
        .prop_map(|(phase, lang)| Target { phase, lang })
}

impl Spec {
    /// The target as given on the command line, and the instances it names.
    fn resolve(&self, t: &Target) -> (String, BTreeSet<String>) {
        let k = t.phase.index(self.phases.len());
        match (&self.phases[k].langs, &t.lang) {
            (Some(ls), Some(l)) => {
                let l = ls[l.index(ls.len())];
                (
                    format!("p{k}[lang={l}]"),
                    BTreeSet::from([format!("p{k}[lang={l}]")]),
                )
            }
            (Some(ls), None) => (
                format!("p{k}"),
                ls.iter().map(|l| format!("p{k}[lang={l}]")).collect(),
            ),
            (None, _) => (format!("p{k}"), BTreeSet::from([format!("p{k}")])),
        }
    }

    /// `from` and everything it depends on, transitively.
    fn with_upstream(&self, from: &BTreeSet<String>) -> BTreeSet<String> {
        let deps = self.instances();
        let mut out = from.clone();
        let mut stack: Vec<String> = from.iter().cloned().collect();
        while let Some(i) = stack.pop() {
            for d in &deps[&i] {
                if out.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        out
    }

    /// `from` and everything that depends on it, transitively.
    fn with_downstream(&self, from: &BTreeSet<String>) -> BTreeSet<String> {
        let deps = self.instances();
        let mut out = from.clone();
        loop {
            let before = out.len();
            for (i, ds) in &deps {
                if ds.iter().any(|d| out.contains(d)) {
                    out.insert(i.clone());
                }
            }
            if out.len() == before {
                return out;
            }
        }
    }
}

/// Builds random targets, then everything; then `--from` a phase, then `--force` and
/// `--force-all` the targets. Each build must run exactly its selection (the targets and
/// their upstreams; what is left; the phase and its downstream; the targets; the targets
/// and their upstreams again),
/// and the project must end as a clean full build leaves it.
fn check_targets(spec: &Spec, targets: &[Target], from: Index) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    spec.write(&a)?;
    copy_tree(&a, &b)?;
    let all: BTreeSet<String> = spec.instances().into_keys().collect();
    let mut args: Vec<String> = Vec::new();
    let mut named = BTreeSet::new();
    for t in targets {
        let (arg, instances) = spec.resolve(t);
        args.push(arg);
        named.extend(instances);
    }
    let selected = spec.with_upstream(&named);
    let build = |dir: &Path, run_id: &str, extra: &[&str]| -> Result<Vec<Value>, TestCaseError> {
        let mut argv = vec!["build", "-j", "8", "--run-id", run_id];
        argv.extend(extra);
        orch_ok(dir, &argv)?;
        events(dir, run_id)
    };
    let target_args: Vec<&str> = args.iter().map(String::as_str).collect();

    let ev = build(&a, "targets", &target_args)?;
    prop_assert_eq!(
        started(&ev),
        selected.clone(),
        "`build {}` ran",
        args.join(" ")
    );
    prop_assert_eq!(
        outcomes(&ev).into_keys().collect::<BTreeSet<_>>(),
        selected.clone()
    );
    let plan = orch_ok(&a, &[&["plan", "--json"][..], &target_args].concat())?;
    let plan: Value = serde_json::from_str(&plan).map_err(|e| fail(e.to_string()))?;
    prop_assert_eq!(
        plan["stale"].as_u64(),
        Some(0),
        "plan of the targets: {}",
        plan
    );

    let ev = with_unlisted(&a, build(&a, "rest", &[])?, &all)?;
    let rest: BTreeSet<String> = all.difference(&selected).cloned().collect();
    prop_assert_eq!(
        started(&ev),
        rest,
        "the full build after `build {}` ran",
        args.join(" ")
    );
    let keys_a = keys(&ev);
    orch_ok(&b, &["build", "-j", "1", "--run-id", "clean"])?;
    prop_assert_eq!(
        &keys_a,
        &keys(&events(&b, "clean")?),
        "action keys differ from a clean build"
    );
    let out_b = tree(&b.join("out"))?;
    prop_assert!(
        tree(&a.join("out"))? == out_b,
        "out/ differs from a clean build"
    );
    prop_assert_eq!(
        db_state(&a, false)?,
        db_state(&b, false)?,
        "recorded state differs"
    );

    let (from_phase, from_instances) = spec.resolve(&Target {
        phase: from,
        lang: None,
    });
    let ev = with_unlisted(&a, build(&a, "from", &["--from", &from_phase])?, &all)?;
    prop_assert_eq!(
        started(&ev),
        spec.with_downstream(&from_instances),
        "`build --from {}` ran",
        from_phase
    );
    prop_assert_eq!(&keys(&ev), &keys_a);

    // `--force` reruns the named targets only: their upstreams are fresh, and forced
    // commands make the same bytes, so nothing between two targets reruns either.
    let ev = build(&a, "force", &[&["--force"][..], &target_args].concat())?;
    let forced = if target_args.is_empty() {
        all.clone()
    } else {
        named.clone()
    };
    prop_assert_eq!(
        started(&ev),
        forced,
        "`build --force {}` ran",
        args.join(" ")
    );
    let ev = build(
        &a,
        "force-all",
        &[&["--force-all"][..], &target_args].concat(),
    )?;
    prop_assert_eq!(
        started(&ev),
        selected,
        "`build --force-all {}` ran",
        args.join(" ")
    );
    prop_assert!(
        tree(&a.join("out"))? == out_b,
        "out/ changed after forced rebuilds"
    );
    let plan = orch_ok(&a, &["plan", "--json"])?;
    let plan: Value = serde_json::from_str(&plan).map_err(|e| fail(e.to_string()))?;
    prop_assert_eq!(
        plan["stale"].as_u64(),
        Some(0),
        "plan after forced rebuilds: {}",
        plan
    );
    Ok(())
}

impl Spec {
    /// Instance names in the order orch starts them with one job: repeatedly the
    /// smallest name whose upstreams have all finished.
    fn serial_order(&self) -> Vec<String> {
        let deps = self.instances();
        let mut done: BTreeSet<&String> = BTreeSet::new();
        let mut order = Vec::new();
        while let Some(next) = deps
            .iter()
            .find(|(n, ds)| !done.contains(n) && ds.iter().all(|d| done.contains(d)))
            .map(|(n, _)| n)
        {
            done.insert(next);
            order.push(next.clone());
        }
        order
    }
}

/// Without `-k`, a build stops starting instances after the first failure. With `-j 1`
/// the outcome is exact: instances succeed in serial order up to the first failing one,
/// and the rest are blocked (`upstream_failed`, `upstream_blocked` or
/// `stopped_after_failure`). With `-j 8`, no instance starts after the first failure,
/// every instance is accounted for, and no instance is blocked by a stop while one of
/// its hard upstreams failed.
fn check_fail_fast(spec: &Spec) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    spec.write(&a)?;
    copy_tree(&a, &b)?;
    let deps = spec.instance_deps();
    let any_fails = deps.values().any(|(k, lang, _)| spec.fails(*k, *lang));
    let code = Some(if any_fails { 1 } else { 0 });
    let out = orch(&a, &["build", "-j", "1", "--run-id", "first"])?;
    prop_assert_eq!(
        out.status.code(),
        code,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = orch(&b, &["build", "-j", "8", "--run-id", "first"])?;
    prop_assert_eq!(
        out.status.code(),
        code,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // -j 1: exact.
    let mut expected: BTreeMap<String, (&str, String, Vec<String>)> = BTreeMap::new();
    let mut stopped = false;
    for name in spec.serial_order() {
        let (k, lang, ups) = &deps[&name];
        let outcome = if stopped {
            let hard: Vec<&String> = ups.iter().filter(|(_, h)| **h).map(|(u, _)| u).collect();
            let failed: Vec<String> = hard
                .iter()
                .filter(|u| expected.get(**u).is_some_and(|e| e.0 == "failed"))
                .map(|u| (*u).clone())
                .collect();
            let blocked: Vec<String> = hard
                .iter()
                .filter(|u| expected.get(**u).is_some_and(|e| e.0 == "blocked"))
                .map(|u| (*u).clone())
                .collect();
            let reason = if !failed.is_empty() {
                "upstream_failed"
            } else if !blocked.is_empty() {
                "upstream_blocked"
            } else {
                "stopped_after_failure"
            };
            let by: BTreeSet<String> = failed.into_iter().chain(blocked).collect();
            ("blocked", reason.to_owned(), by.into_iter().collect())
        } else if spec.fails(*k, *lang) {
            stopped = true;
            ("failed", String::new(), Vec::new())
        } else {
            ("succeeded", String::new(), Vec::new())
        };
        expected.insert(name, outcome);
    }
    let ev_a = events(&a, "first")?;
    let mut seen: BTreeMap<String, (&str, String, Vec<String>)> = BTreeMap::new();
    for e in &ev_a {
        let inst = field(e, "instance").to_owned();
        let entry = match field(e, "type") {
            "instance_completed" => ("succeeded", String::new(), Vec::new()),
            "instance_failed" => ("failed", String::new(), Vec::new()),
            "instance_blocked" => {
                let mut by: Vec<String> = e["blocked_by"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                by.sort();
                ("blocked", field(e, "reason").to_owned(), by)
            }
            _ => continue,
        };
        seen.insert(inst, entry);
    }
    prop_assert_eq!(seen, expected, "-j 1 outcomes without -k");

    // -j 8: invariants.
    let ev_b = events(&b, "first")?;
    check_start_order(&ev_b, &spec.instances())?;
    let mut failed_yet = false;
    for e in &ev_b {
        match field(e, "type") {
            "instance_started" => prop_assert!(
                !failed_yet,
                "`{}` started after a failure",
                field(e, "instance")
            ),
            "instance_failed" => failed_yet = true,
            _ => {}
        }
    }
    let outcome_b = outcomes(&ev_b);
    prop_assert_eq!(
        outcome_b.keys().cloned().collect::<BTreeSet<_>>(),
        deps.keys().cloned().collect::<BTreeSet<_>>(),
        "every instance must be accounted for"
    );
    for (name, outcome) in &outcome_b {
        let (k, lang, ups) = &deps[name];
        match *outcome {
            "failed" => prop_assert!(spec.fails(*k, *lang), "`{}` failed", name),
            "succeeded" => prop_assert!(!spec.fails(*k, *lang), "`{}` succeeded", name),
            _ => {}
        }
        for (u, hard) in ups {
            if *hard && matches!(outcome_b[u], "failed" | "blocked") {
                prop_assert_eq!(
                    *outcome,
                    "blocked",
                    "`{}` ran although `{}` did not succeed",
                    name,
                    u
                );
            }
        }
    }
    prop_assert_eq!(any_fails, outcome_b.values().any(|o| *o == "failed"));
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 12,
        max_shrink_iters: 64,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/proptest-regressions/properties.txt",
            ),
        )),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// `-j 1` and `-j 8` builds of the same random DAG give byte-identical outputs, the
    /// same successful instances with the same action keys, identical recorded state,
    /// `status --json` and `plan --json` (all up to date), and a second build of each
    /// runs nothing.
    #[test]
    fn parallel_build_matches_serial_build(spec in spec(2..25, PLAIN)) {
        check_j1_matches_j8(&spec)?;
    }

    /// The same with random per-phase sleeps and busy loops, which only perturb the
    /// order in which instances complete: results still do not depend on it.
    #[test]
    fn completion_order_does_not_matter(spec in spec(2..16, Gen { perturb: true, ..PLAIN })) {
        check_j1_matches_j8(&spec)?;
    }

    /// An incremental build after a random edit (a source file's content, same-size
    /// content, a shared file added or removed, a command, a new edge, an output
    /// tampered with or deleted) equals a clean build of the edited project, and runs
    /// exactly what the edit invalidated.
    #[test]
    fn incremental_build_matches_clean_build(spec in spec(2..16, PLAIN), edit in edit()) {
        check_incremental(&spec, &edit)?;
    }

    /// With failing phases and `-k`, `-j 1` and `-j 8` fail, block and succeed exactly
    /// the instances the dependency semantics say, and recover once fixed.
    #[test]
    fn keep_going_outcomes_follow_the_dependency_semantics(
        spec in spec(2..16, Gen { perturb: true, failures: true, ..PLAIN }),
    ) {
        check_keep_going(&spec)?;
    }

    /// Building targets, then everything, then `--from` a phase, then `--force` and
    /// `--force-all` the targets runs exactly each selection and ends where a clean
    /// build does.
    #[test]
    fn target_builds_run_exactly_their_selection(
        spec in spec(2..16, PLAIN),
        targets in prop::collection::vec(target(), 1..3),
        from in any::<Index>(),
    ) {
        check_targets(&spec, &targets, from)?;
    }

    /// Without `-k`, builds stop starting instances at the first failure: exactly so
    /// with `-j 1`, and without starting anything after a failure with `-j 8`.
    #[test]
    fn fail_fast_stops_at_the_first_failure(
        spec in spec(2..16, Gen { perturb: true, failures: true, ..PLAIN }),
    ) {
        check_fail_fast(&spec)?;
    }

    /// Phases that list a `needs` upstream's directory output as a plain `inputs` path
    /// (`out/pJ.d`): the same must hold.
    #[test]
    fn plain_inputs_naming_upstream_directory_outputs(
        spec in spec(2..12, Gen { reads: &[Read::PlainDir], ..PLAIN }),
    ) {
        check_j1_matches_j8(&spec)?;
    }
}

/// Builds `orchfile` in a fresh directory, and checks that `out/b.txt` then holds `a`
/// and that a second build runs nothing.
fn build_twice(orchfile: &str) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let dir = tmp.path();
    std::fs::write(dir.join("Orchfile.toml"), orchfile).map_err(|e| fail(e.to_string()))?;
    orch_ok(dir, &["build", "--run-id", "first"])?;
    let b = std::fs::read_to_string(dir.join("out/b.txt")).map_err(|e| fail(e.to_string()))?;
    prop_assert_eq!(b, "a\n", "`b` did not see what `a` produced");
    orch_ok(dir, &["build", "--run-id", "second"])?;
    let ran = started(&events(dir, "second")?);
    prop_assert!(ran.is_empty(), "a second build ran {:?}", ran);
    Ok(())
}

/// Regression (fixed in 35b1526), minimal: `b` reads `a`'s output through a glob.
#[test]
fn glob_input_over_an_upstream_output() -> Result<(), TestCaseError> {
    build_twice(
        r#"[orch]
format = 1

[phase.a]
run = "echo a > {output}"
outputs = ["out/a.txt"]

[phase.b]
needs = ["a"]
run = "cat /dev/null {inputs} > {output}"
inputs = ["out/a*"]
outputs = ["out/b.txt"]
"#,
    )
}

/// Regression, minimal: `b` lists `a`'s directory output as a plain input path, or a
/// directory holding `a`'s output.
#[test]
fn plain_input_naming_an_upstream_directory_output() -> Result<(), TestCaseError> {
    build_twice(
        r#"[orch]
format = 1

[phase.a]
run = "echo a > out/a.d/x.txt"
outputs = ["out/a.d/"]

[phase.b]
needs = ["a"]
run = "cat out/a.d/x.txt > {output}"
inputs = ["out/a.d"]
outputs = ["out/b.txt"]
"#,
    )
}

/// The same bug with a plain input naming a directory that holds `a`'s output file.
#[test]
fn plain_input_naming_a_directory_holding_an_upstream_output() -> Result<(), TestCaseError> {
    build_twice(
        r#"[orch]
format = 1

[phase.a]
run = "echo a > {output}"
outputs = ["out/sub/a.txt"]

[phase.b]
needs = ["a"]
run = "cat out/sub/a.txt > {output}"
inputs = ["out/sub"]
outputs = ["out/b.txt"]
"#,
    )
}

/// The same with a plain input naming a file output: this works.
#[test]
fn plain_input_naming_an_upstream_file_output() -> Result<(), TestCaseError> {
    build_twice(
        r#"[orch]
format = 1

[phase.a]
run = "echo a > {output}"
outputs = ["out/a.txt"]

[phase.b]
needs = ["a"]
run = "cat {inputs} > {output}"
inputs = ["out/a.txt"]
outputs = ["out/b.txt"]
"#,
    )
}

// ---------------------------------------------------------------------------------------
// Sharded phases.
//
// A random sharded project reads `src/data.jsonl` (JSON Lines records with three group
// fields drawn from a small per-case alphabet of JSON values, so records share keys) and
// `src/parts/**/*.txt` (small files whose names sort differently by path and by
// component). Phases `s0..sN` each shard one of them (`group` by a random field, `chunk`
// of a random size, or `files`), and each shard writes its key (and its position), its
// input upper-cased and its input's line count; `all` concatenates their merged outputs.
// Shards sleep or spin by their key (patterns baked into the Orchfile), only to perturb
// completion order. The merged bytes are modelled here: the expected parts in shard order.

/// JSON values a group field may hold: strings that need shell quoting, a string and a
/// number with the same text (`"1"` and `1` are one group), other JSON types.
const GROUP_VALUES: &[&str] = &[
    r#""a""#,
    r#""b""#,
    r#""B""#,
    r#""a b""#,
    r#""it's $x""#,
    r#""ü""#,
    r#""""#,
    "1",
    r#""1""#,
    "10",
    "2",
    "1.5",
    "true",
    "null",
];

/// The group fields every record has.
const GROUP_FIELDS: &[&str] = &["k", "lang", "g"];

/// Files the `files` strategy may see: `-` and `.` sort before `/` by path but after it
/// by component, digits sort as text.
const PART_FILES: &[&str] = &[
    "0.txt",
    "10.txt",
    "9.txt",
    "B.txt",
    "a-b.txt",
    "a.b/c.txt",
    "a.txt",
    "a/a.txt",
    "a/b.txt",
    "b.txt",
    "z/y/x.txt",
];

/// `case` patterns over `{shard.key}` that pick a shard's delay.
const DELAY_PATTERNS: &[&str] = &["*a*", "*b*", "*1*", "*0*", "*2*", "*/*", "*t*", "?"];

/// How a phase splits its work.
#[derive(Clone, Copy, Debug)]
enum Split {
    /// `group` by this field of `src/data.jsonl`.
    Group(usize),
    /// `chunk` of `src/data.jsonl`, this many records each.
    Chunk(usize),
    /// `files` over `src/parts/**/*.txt`.
    Files,
}

#[derive(Clone, Debug)]
struct ShardPhase {
    split: Split,
    /// The command also writes `{shard.index}/{shard.count}`.
    position: bool,
    /// `case {shard.key} in PATTERN) WORK;; ... esac` before the real work.
    delays: Vec<(&'static str, Work)>,
}

#[derive(Clone, Debug)]
struct Record {
    id: u16,
    /// Per group field, an index into the alphabet.
    groups: [usize; 3],
    text: String,
}

impl Record {
    fn line(&self, alphabet: &[&str]) -> String {
        format!(
            r#"{{"id":{},"k":{},"t":"{}","lang":{},"g":{}}}"#,
            self.id,
            alphabet[self.groups[0]],
            self.text,
            alphabet[self.groups[1]],
            alphabet[self.groups[2]]
        )
    }
}

#[derive(Clone, Debug)]
struct ShardProject {
    /// The JSON values of group fields in this case.
    alphabet: Vec<&'static str>,
    records: Vec<Record>,
    /// Whether the last record of `src/data.jsonl` ends with a newline.
    trailing_newline: bool,
    /// `src/parts/PATH` → content.
    parts: BTreeMap<&'static str, String>,
    phases: Vec<ShardPhase>,
}

/// The `{shard.key}` of a group value: a string as it is, anything else as its JSON text.
fn group_key(json: &str) -> String {
    json.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(json)
        .to_owned()
}

impl ShardProject {
    fn data(&self) -> String {
        let lines: Vec<String> = self
            .records
            .iter()
            .map(|r| r.line(&self.alphabet))
            .collect();
        let mut s = lines.join("\n");
        if self.trailing_newline && !lines.is_empty() {
            s.push('\n');
        }
        s
    }

    /// The shards of `split` in merge order: (key, input bytes).
    fn shards(&self, split: Split) -> Vec<(String, Vec<u8>)> {
        let line = |r: &Record| format!("{}\n", r.line(&self.alphabet)).into_bytes();
        match split {
            Split::Group(f) => {
                let mut groups: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                for r in &self.records {
                    groups
                        .entry(group_key(self.alphabet[r.groups[f]]))
                        .or_default()
                        .extend(line(r));
                }
                groups.into_iter().collect()
            }
            Split::Chunk(size) => self
                .records
                .chunks(size)
                .enumerate()
                .map(|(i, c)| (i.to_string(), c.iter().flat_map(line).collect()))
                .collect(),
            // Path order: the order of the project-relative paths as strings.
            Split::Files => self
                .parts
                .iter()
                .map(|(p, text)| (format!("src/parts/{p}"), text.clone().into_bytes()))
                .collect(),
        }
    }

    /// The expected merged output of phase `k`: each shard's part, in shard order.
    fn merged(&self, k: usize) -> Vec<u8> {
        let p = &self.phases[k];
        let shards = self.shards(p.split);
        let n = shards.len();
        let mut out = Vec::new();
        for (i, (key, input)) in shards.iter().enumerate() {
            out.extend(format!("{key}\n").bytes());
            if p.position {
                out.extend(format!("{i}/{n}\n").bytes());
            }
            out.extend(input.to_ascii_uppercase());
            let lines = input.iter().filter(|b| **b == b'\n').count();
            out.extend(format!("{lines}\n").bytes());
        }
        out
    }

    /// The Orchfile, with each phase's `parallel` cap (None: no cap).
    fn orchfile(&self, caps: &[Option<usize>]) -> String {
        let mut s = String::from("[orch]\nformat = 1\n");
        for (k, p) in self.phases.iter().enumerate() {
            let mut cmd = String::from("export LC_ALL=C; ");
            if !p.delays.is_empty() {
                cmd.push_str("case {shard.key} in ");
                for (pattern, work) in &p.delays {
                    let w = match work {
                        Work::None => ":".to_owned(),
                        Work::Sleep(cs) => format!("sleep 0.0{cs}"),
                        Work::Spin(n) => {
                            format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); done")
                        }
                    };
                    cmd.push_str(&format!("{pattern}) {w};; "));
                }
                cmd.push_str("esac; ");
            }
            let position = if p.position {
                " {shard.index}/{shard.count}"
            } else {
                ""
            };
            cmd.push_str(&format!(
                "{{{{ printf '%s\\n' {{shard.key}}{position}; tr a-z A-Z < {{shard.input}}; \
                 wc -l < {{shard.input}} | tr -d ' '; }} > {{shard.output}}"
            ));
            let strategy = match p.split {
                Split::Group(f) => format!(
                    r#"strategy = "group", source = "src/data.jsonl", key = "{}""#,
                    GROUP_FIELDS[f]
                ),
                Split::Chunk(size) => {
                    format!(r#"strategy = "chunk", source = "src/data.jsonl", size = {size}"#)
                }
                Split::Files => r#"strategy = "files", source = "src/parts/**/*.txt""#.to_owned(),
            };
            let cap = match caps.get(k).copied().flatten() {
                Some(n) => format!(", parallel = {n}"),
                None => String::new(),
            };
            s.push_str(&format!(
                "\n[phase.s{k}]\nrun = '''{cmd}'''\noutputs = [\"out/s{k}.txt\"]\n\
                 shard = {{ {strategy}{cap} }}\n"
            ));
        }
        let names: Vec<String> = (0..self.phases.len()).map(|k| format!("s{k}")).collect();
        let needs: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        let ups: Vec<String> = names
            .iter()
            .map(|n| format!("{{needs.{n}.outputs}}"))
            .collect();
        s.push_str(&format!(
            "\n[phase.all]\nneeds = [{}]\nrun = \"cat {} > {{output}}\"\noutputs = [\"out/all.txt\"]\n",
            needs.join(", "),
            ups.join(" ")
        ));
        s
    }

    /// Writes the project into `dir` (a fresh directory).
    fn write(&self, dir: &Path, caps: &[Option<usize>]) -> Result<(), TestCaseError> {
        let mut files = vec![
            ("Orchfile.toml".to_owned(), self.orchfile(caps)),
            ("src/data.jsonl".to_owned(), self.data()),
        ];
        for (p, text) in &self.parts {
            files.push((format!("src/parts/{p}"), text.clone()));
        }
        for (rel, text) in files {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
            }
            std::fs::write(&path, text).map_err(|e| fail(e.to_string()))?;
        }
        Ok(())
    }
}

fn split() -> impl Strategy<Value = Split> {
    prop_oneof![
        (0..GROUP_FIELDS.len()).prop_map(Split::Group),
        (1usize..8).prop_map(Split::Chunk),
        Just(Split::Files),
    ]
}

fn shard_phase(split: BoxedStrategy<Split>) -> impl Strategy<Value = ShardPhase> {
    (
        split,
        any::<bool>(),
        prop::collection::vec((prop::sample::select(DELAY_PATTERNS), work(true)), 0..3),
    )
        .prop_map(|(split, position, delays)| ShardPhase {
            split,
            position,
            delays,
        })
}

fn shard_project(
    phases: BoxedStrategy<Vec<ShardPhase>>,
    records: std::ops::Range<usize>,
) -> impl Strategy<Value = ShardProject> {
    (
        prop::sample::subsequence(GROUP_VALUES, 1..6),
        prop::collection::vec(
            (
                any::<u16>(),
                [any::<Index>(), any::<Index>(), any::<Index>()],
                "[a-z ]{0,6}",
            ),
            records,
        ),
        any::<bool>(),
        prop::sample::subsequence(PART_FILES, 0..7),
        prop::collection::vec("[a-z \n]{0,12}", PART_FILES.len()),
        phases,
    )
        .prop_map(
            |(alphabet, raw, trailing_newline, names, texts, phases)| ShardProject {
                records: raw
                    .into_iter()
                    .map(|(id, ix, text)| Record {
                        id,
                        groups: ix.map(|i| i.index(alphabet.len())),
                        text,
                    })
                    .collect(),
                alphabet,
                trailing_newline,
                parts: names.into_iter().zip(texts).collect(),
                phases,
            },
        )
}

/// Per instance, at most its cap of shards run at once, and at most `jobs` work items
/// (shards and whole instances) in all, as the events tell.
fn check_shard_concurrency(
    events: &[Value],
    caps: &BTreeMap<String, usize>,
    jobs: usize,
) -> Result<(), TestCaseError> {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0usize;
    for e in events {
        let inst = field(e, "instance");
        let (owner, is_shard) = match inst.split_once('#') {
            Some((owner, _)) => (owner, true),
            None => (inst, false),
        };
        // A sharded instance's own start is not a work item: its shards are.
        if !is_shard && caps.contains_key(owner) {
            continue;
        }
        match field(e, "type") {
            "instance_started" => {
                total += 1;
                prop_assert!(total <= jobs, "more than -j {} work items at once", jobs);
                if is_shard {
                    prop_assert!(
                        e.get("shard").is_some(),
                        "shard event without `shard`: {}",
                        e
                    );
                    let n = per.entry(owner.to_owned()).or_default();
                    *n += 1;
                    let cap = caps.get(owner).copied().unwrap_or(jobs);
                    prop_assert!(
                        *n <= cap,
                        "{} shards of `{}` ran at once (cap {})",
                        n,
                        owner,
                        cap
                    );
                }
            }
            "instance_completed" | "instance_failed" => {
                total = total.saturating_sub(1);
                if is_shard {
                    let n = per.entry(owner.to_owned()).or_default();
                    *n = n.saturating_sub(1);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, TestCaseError> {
    std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())))
}

/// The `shard_plan` event of `instance`.
fn shard_plan<'a>(events: &'a [Value], instance: &str) -> Result<&'a Value, TestCaseError> {
    events
        .iter()
        .find(|e| field(e, "type") == "shard_plan" && field(e, "instance") == instance)
        .ok_or_else(|| fail(format!("no shard_plan event for `{instance}`")))
}

/// The shards of `instance` started in `events`, as `{shard.key}`s in start order.
fn shards_started(events: &[Value], instance: &str) -> Vec<String> {
    let prefix = format!("{instance}#");
    events
        .iter()
        .filter(|e| field(e, "type") == "instance_started")
        .filter(|e| field(e, "instance").starts_with(&prefix))
        .map(|e| {
            e.get("shard")
                .map(|s| field(s, "key").to_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// Builds copies of `project` with `-j 1` and each of `jobs`, with the `parallel` caps
/// of each, and checks that every merged output equals the model, that caps and `-j`
/// were respected, that a second build runs nothing, and that another `-j 1` build of
/// the same state emits the same events apart from times.
fn check_shard_merge(
    project: &ShardProject,
    runs: &[(usize, Vec<Option<usize>>)],
) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let mut all_expected = Vec::new();
    for k in 0..project.phases.len() {
        all_expected.extend(project.merged(k));
    }
    for (c, (jobs, caps)) in runs.iter().enumerate() {
        let dir = tmp.path().join(format!("c{c}"));
        project.write(&dir, caps)?;
        let j = jobs.to_string();
        orch_ok(&dir, &["build", "-j", &j, "--run-id", "first"])?;
        for k in 0..project.phases.len() {
            let got = read(&dir.join(format!("out/s{k}.txt")))?;
            let want = project.merged(k);
            prop_assert!(
                got == want,
                "-j {}, caps {:?}: out/s{}.txt differs from the model\n--- got ---\n{}\n--- want ---\n{}",
                jobs,
                caps,
                k,
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
        }
        let got = read(&dir.join("out/all.txt"))?;
        prop_assert!(
            got == all_expected,
            "-j {}: out/all.txt is not the concatenation of the merged outputs",
            jobs
        );
        let ev = events(&dir, "first")?;
        let mut eff = BTreeMap::new();
        for (k, p) in project.phases.iter().enumerate() {
            let name = format!("s{k}");
            let n = project.shards(p.split).len();
            let cap = caps.get(k).copied().flatten().unwrap_or(*jobs).min(*jobs);
            let plan = shard_plan(&ev, &name)?;
            prop_assert_eq!(plan["shards"].as_u64(), Some(n as u64), "{}", plan);
            prop_assert_eq!(plan["stale"].as_u64(), Some(n as u64), "{}", plan);
            prop_assert_eq!(plan["reused"].as_u64(), Some(0), "{}", plan);
            prop_assert_eq!(plan["parallel"].as_u64(), Some(cap as u64), "{}", plan);
            let mut ran = shards_started(&ev, &name);
            ran.sort();
            let mut want: Vec<String> = project.shards(p.split).into_iter().map(|s| s.0).collect();
            want.sort();
            prop_assert_eq!(ran, want, "shards started for `{}`", name);
            eff.insert(name, cap);
        }
        check_shard_concurrency(&ev, &eff, *jobs)?;
        if c == 0 {
            orch_ok(&dir, &["build", "-j", &j, "--run-id", "second"])?;
            let ran = started(&events(&dir, "second")?);
            prop_assert!(ran.is_empty(), "a second build ran {:?}", ran);
        }
        if *jobs == 1 {
            // With -j 1, another build of the same state emits the same events.
            let twin = tmp.path().join(format!("c{c}-twin"));
            project.write(&twin, caps)?;
            orch_ok(&twin, &["build", "-j", "1", "--run-id", "first"])?;
            prop_assert_eq!(
                normalized(&ev),
                normalized(&events(&twin, "first")?),
                "-j 1 events differ between two builds of the same state"
            );
        }
    }
    Ok(())
}

/// A change to one field of one record that is not the group key.
#[derive(Clone, Copy, Debug)]
enum RecordEdit {
    Text,
    Id,
    /// Another group field (not the one grouped by).
    OtherField,
}

/// Builds `project` (one `group` phase), edits a field other than the key in record
/// `which`, rebuilds: exactly the edited record's shard runs, the others are reused,
/// and the output and key equal those of a clean build of the edited project.
fn check_one_record_edit(
    project: &ShardProject,
    which: Index,
    edit: RecordEdit,
    jobs: usize,
) -> Result<(), TestCaseError> {
    let Split::Group(f) = project.phases[0].split else {
        return Err(fail("the edit property needs a group phase"));
    };
    let tmp = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let j = jobs.to_string();
    project.write(&a, &[])?;
    orch_ok(&a, &["build", "-j", &j, "--run-id", "first"])?;
    prop_assert!(read(&a.join("out/s0.txt"))? == project.merged(0));

    let mut edited = project.clone();
    let r = which.index(edited.records.len());
    let rec = &mut edited.records[r];
    match edit {
        RecordEdit::OtherField if edited.alphabet.len() > 1 => {
            let g = (f + 1) % GROUP_FIELDS.len();
            rec.groups[g] = (rec.groups[g] + 1) % edited.alphabet.len();
        }
        RecordEdit::Id => rec.id = rec.id.wrapping_add(1),
        _ => rec.text.push('x'),
    }
    let key = group_key(edited.alphabet[edited.records[r].groups[f]]);
    prop_assert_ne!(project.data(), edited.data());
    let n = edited.shards(Split::Group(f)).len();

    std::fs::write(a.join("src/data.jsonl"), edited.data()).map_err(|e| fail(e.to_string()))?;
    orch_ok(&a, &["build", "-j", &j, "--run-id", "second"])?;
    let ev = events(&a, "second")?;
    prop_assert_eq!(
        shards_started(&ev, "s0"),
        vec![key],
        "not exactly the edited record's shard ran"
    );
    let plan = shard_plan(&ev, "s0")?;
    prop_assert_eq!(plan["shards"].as_u64(), Some(n as u64), "{}", plan);
    prop_assert_eq!(plan["stale"].as_u64(), Some(1), "{}", plan);
    prop_assert_eq!(plan["reused"].as_u64(), Some(n as u64 - 1), "{}", plan);
    let got = read(&a.join("out/s0.txt"))?;
    prop_assert!(
        got == edited.merged(0),
        "after the edit, out/s0.txt differs from the model\n--- got ---\n{}\n--- want ---\n{}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&edited.merged(0))
    );

    edited.write(&b, &[])?;
    orch_ok(&b, &["build", "-j", &j, "--run-id", "clean"])?;
    prop_assert!(
        read(&b.join("out/s0.txt"))? == got,
        "the incremental build differs from a clean build"
    );
    let key_of = |ev: &[Value]| completed(ev).get("s0").map(|c| c.0.clone());
    prop_assert_eq!(
        key_of(&ev),
        key_of(&events(&b, "clean")?),
        "the incremental and clean builds give `s0` different action keys"
    );
    Ok(())
}

fn shard_config() -> ProptestConfig {
    ProptestConfig {
        cases: 10,
        ..config()
    }
}

proptest! {
    #![proptest_config(shard_config())]

    /// Merged outputs do not depend on the job count, the `parallel` caps or the order
    /// in which shards complete: builds with `-j 1` and random `-j`, each with random
    /// caps, all write exactly the modelled concatenation of parts in shard order; no
    /// instance runs more shards at once than its cap, nor the build more than `-j`.
    #[test]
    fn merged_output_is_independent_of_jobs_and_completion_order(
        project in shard_project(
            prop::collection::vec(shard_phase(split().boxed()), 1..4).boxed(),
            0..60,
        ),
        jobs in prop::collection::vec(2usize..9, 2),
        caps in prop::collection::vec(
            prop::collection::vec(prop::option::of(1usize..5), 3),
            3,
        ),
    ) {
        let runs = [
            (1, caps[0].clone()),
            (jobs[0], caps[1].clone()),
            (jobs[1], caps[2].clone()),
        ];
        check_shard_merge(&project, &runs)?;
    }

    /// With `group` sharding, changing a field other than the key in one record reruns
    /// exactly that record's shard, reuses the others, and ends as a clean build does.
    #[test]
    fn one_changed_record_reruns_exactly_one_shard(
        project in shard_project(
            prop::collection::vec(
                shard_phase((0..GROUP_FIELDS.len()).prop_map(Split::Group).boxed()),
                1..2,
            )
            .boxed(),
            1..40,
        ),
        which in any::<Index>(),
        edit in prop_oneof![
            Just(RecordEdit::Text),
            Just(RecordEdit::Id),
            Just(RecordEdit::OtherField),
        ],
        jobs in 1usize..9,
    ) {
        check_one_record_edit(&project, which, edit, jobs)?;
    }
}

/// Builds a project whose shards each append a line to `runs.log` when they run, then
/// builds again with `args`, and checks that every shard ran again.
fn every_shard_reruns(extra_phase_key: &str, args: &[&str]) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let dir = tmp.path();
    let files = [
        (
            "Orchfile.toml".to_owned(),
            format!(
                r#"[orch]
format = 1

[phase.s]
run = "echo {{shard.key}} >> runs.log; cp {{shard.input}} {{shard.output}}"
outputs = ["out/s.txt"]
shard = {{ strategy = "files", source = "src/*.txt" }}
{extra_phase_key}
"#
            ),
        ),
        ("src/a.txt".to_owned(), "a\n".to_owned()),
        ("src/b.txt".to_owned(), "b\n".to_owned()),
    ];
    for (rel, text) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap_or(dir)).map_err(|e| fail(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| fail(e.to_string()))?;
    }
    orch_ok(dir, &["build", "--run-id", "first"])?;
    prop_assert_eq!(shards_started(&events(dir, "first")?, "s").len(), 2);
    let mut again = vec!["build", "--run-id", "second"];
    again.extend(args);
    orch_ok(dir, &again)?;
    let ev = events(dir, "second")?;
    prop_assert!(
        started(&ev).contains("s"),
        "`s` did not run again: {:?}",
        started(&ev)
    );
    // Sorted: with history, the shard that took longer last time starts first.
    let mut keys = shards_started(&ev, "s");
    keys.sort();
    prop_assert_eq!(
        keys,
        vec!["src/a.txt".to_owned(), "src/b.txt".to_owned()],
        "not every shard ran again; shard_plan: {}",
        shard_plan(&ev, "s")?
    );
    let log = std::fs::read_to_string(dir.join("runs.log")).map_err(|e| fail(e.to_string()))?;
    prop_assert_eq!(log.lines().count(), 4, "shard commands run: {:?}", log);
    Ok(())
}

/// Regression (fixed in ec43b54): `--force` reruns every selected instance; for a sharded
/// instance it reran only the merge, reusing every shard result.
#[test]
fn force_reruns_every_shard() -> Result<(), TestCaseError> {
    every_shard_reruns("", &["--force"])
}

/// Regression (fixed in ec43b54): `always = true` means never up to date; a sharded
/// instance only merged the recorded shard results, its commands never ran again.
#[test]
fn always_reruns_every_shard() -> Result<(), TestCaseError> {
    every_shard_reruns("always = true", &[])
}

/// Regression (fixed in ec43b54): `--from` the sharded phase, the same.
#[test]
fn from_reruns_every_shard() -> Result<(), TestCaseError> {
    every_shard_reruns("", &["--from", "s"])
}

/// Builds the `shard` table `before`, changes it to `after` (same source, same command),
/// builds again: the output must be that of a clean build with `after`.
fn changed_split_rebuilds(before: &str, after: &str) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let orchfile = |shard: &str| {
        format!(
            r#"[orch]
format = 1

[phase.s]
run = '''{{{{ echo ==; cat {{shard.input}}; }} > {{shard.output}}'''
outputs = ["out/s.txt"]
shard = {{ {shard} }}
"#
        )
    };
    let data = "{\"k\":\"b\",\"g\":1}\n{\"k\":\"a\",\"g\":2}\n{\"k\":\"c\",\"g\":1}\n";
    let mut outs = Vec::new();
    for (name, steps) in [
        ("incremental", &[before, after][..]),
        ("clean", &[after][..]),
    ] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(dir.join("src")).map_err(|e| fail(e.to_string()))?;
        std::fs::write(dir.join("src/d.jsonl"), data).map_err(|e| fail(e.to_string()))?;
        for (k, shard) in steps.iter().enumerate() {
            std::fs::write(dir.join("Orchfile.toml"), orchfile(shard))
                .map_err(|e| fail(e.to_string()))?;
            orch_ok(&dir, &["build", "--run-id", &format!("b{k}")])?;
        }
        outs.push(read(&dir.join("out/s.txt"))?);
    }
    prop_assert!(
        outs[0] == outs[1],
        "after changing `shard = {{ {} }}` to `{{ {} }}`, the output is still\n{}\nbut a clean build writes\n{}",
        before,
        after,
        String::from_utf8_lossy(&outs[0]),
        String::from_utf8_lossy(&outs[1])
    );
    Ok(())
}

/// The `shard` table decides what each shard sees, but is not part of the instance's
/// key: changing `size`, `key` or `strategy` (same source, same command) leaves the
/// instance up to date with the output of the old split.
#[test]
fn changing_the_shard_split_reruns_the_instance() -> Result<(), TestCaseError> {
    let src = r#"source = "src/d.jsonl""#;
    changed_split_rebuilds(
        &format!(r#"strategy = "chunk", {src}, size = 1"#),
        &format!(r#"strategy = "chunk", {src}, size = 2"#),
    )?;
    changed_split_rebuilds(
        &format!(r#"strategy = "group", {src}, key = "k""#),
        &format!(r#"strategy = "group", {src}, key = "g""#),
    )?;
    changed_split_rebuilds(
        &format!(r#"strategy = "chunk", {src}, size = 1"#),
        &format!(r#"strategy = "group", {src}, key = "k""#),
    )
}
