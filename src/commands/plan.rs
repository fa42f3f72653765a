//! `orch plan` (and `build --dry-run`): what would run, and why — for a sharded
//! instance, which of its shards, by `{shard.key}` — and, for `build --dry-run -v`, the
//! commands that would run. `--exit-code` turns "something would run" into exit 1.

use std::collections::BTreeSet;

use serde_json::json;

use crate::cli::PlanArgs;
use crate::events::human::Verbosity;
use crate::events::shard_name::display_key;
use crate::exec::shards;
use crate::plan::{PlanEntry, PlanSource, discovered_whys, plan_static, reason};
use crate::snapshot::Snapshot;
use crate::store::{Layout, Store};
use crate::{EXIT_FAILED, EXIT_OK};

use super::{Force, Global, Loaded, load, report_diagnostic, selection};

/// Runs `orch plan`.
pub fn run(g: &Global, a: PlanArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let (selected, forced) =
        match selection(g, &l, &a.targets, Force::of(a.force, a.force_all), &a.from) {
            Ok(s) => s,
            Err(code) => return code,
        };
    let layout = Layout::new(&l.project.root);
    let how = PlanOutput {
        targets: &a.targets,
        json: a.json,
        verbosity: g.verbosity,
        exit_code: a.exit_code,
        commands: false,
    };
    print_plan(&l, &layout, &selected, forced, &how)
}

/// How [`print_plan`] prints, and what it returns.
pub struct PlanOutput<'a> {
    /// The targets as given, echoed by `--json`.
    pub targets: &'a [String],
    /// `--json`.
    pub json: bool,
    /// `-q` prints nothing; `-v` also the up-to-date instances and descriptions.
    pub verbosity: Verbosity,
    /// `--exit-code`: return 1 when anything would run.
    pub exit_code: bool,
    /// `build --dry-run -v`: each stale instance's expanded command.
    pub commands: bool,
}

/// Plans the selection against the recorded state (writing nothing) and prints it.
pub fn print_plan(
    l: &Loaded,
    layout: &Layout,
    selected: &BTreeSet<usize>,
    forced: BTreeSet<usize>,
    how: &PlanOutput<'_>,
) -> i32 {
    let entries = match planned_with(l, layout, selected, forced, how.commands) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let stale: Vec<&Planned> = entries.iter().filter(|p| p.entry.stale).collect();
    let code = if how.exit_code && !stale.is_empty() {
        EXIT_FAILED
    } else {
        EXIT_OK
    };
    if how.json {
        let instances: Vec<serde_json::Value> =
            entries.iter().map(|p| entry_json(&l.project, p)).collect();
        let doc = json!({
            "v": 1,
            "targets": how.targets,
            "total": entries.len(),
            "stale": stale.len(),
            "up_to_date": entries.len() - stale.len(),
            "instances": instances,
        });
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return code;
    }
    if how.verbosity == Verbosity::Quiet {
        return code;
    }
    let verbose = how.verbosity >= Verbosity::Verbose;
    let total = instances_text(entries.len());
    if stale.is_empty() {
        outln!("nothing to do: {total} up to date");
        return code;
    }
    outln!("would run {} of {total}:", stale.len());
    let width = stale
        .iter()
        .map(|p| p.entry.instance.len())
        .max()
        .unwrap_or(0);
    for p in &stale {
        let line = format!("  {:width$}  {}", p.entry.instance, reasons_text(p));
        outln!("{}", with_description(&l.project, p.index, line, verbose));
        if let Some(preview) = &p.preview {
            for cmd in preview_lines(preview) {
                outln!("      {cmd}");
            }
        }
    }
    if verbose {
        for p in entries.iter().filter(|p| !p.entry.stale) {
            let line = format!("  {:width$}  up to date", p.entry.instance);
            outln!("{}", with_description(&l.project, p.index, line, true));
        }
    } else if stale.len() < entries.len() {
        outln!("{} up to date", entries.len() - stale.len());
    }
    code
}

/// `1 instance`, `3 instances`.
pub fn instances_text(n: usize) -> String {
    if n == 1 {
        "1 instance".to_owned()
    } else {
        format!("{n} instances")
    }
}

/// `line`, followed with `-v` by its phase's description as a `# comment`.
pub fn with_description(
    project: &crate::model::Project,
    i: usize,
    line: String,
    verbose: bool,
) -> String {
    let description = project
        .instances
        .get(i)
        .and_then(|inst| project.phases.get(&inst.phase))
        .and_then(|ph| ph.description.as_deref());
    match description {
        Some(d) if verbose => format!("{line}  # {d}"),
        _ => line,
    }
}

/// The lines that show what a stale instance would run, as `make -n` does: `$ command`,
/// one per shard when the split is known.
fn preview_lines(preview: &Preview) -> Vec<String> {
    match preview {
        Preview::Command {
            command,
            upstream_first,
        } => {
            let mut v = vec![format!("$ {command}")];
            if *upstream_first {
                v.push("  ({inputs} as matched now; upstreams run first)".to_owned());
            }
            v
        }
        Preview::Shards(cmds) => cmds
            .iter()
            .map(|(index, cmd)| format!("#{index} $ {cmd}"))
            .collect(),
        Preview::Template(t) => vec![
            format!("$ {t}"),
            "  (for each shard; the split is known once its upstreams have run)".to_owned(),
        ],
    }
}

/// What is known about the shards of a stale sharded instance before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardInfo {
    /// These of its shards must run.
    Counted {
        /// Shards that will run, in shard order.
        stale: Vec<StaleShard>,
        /// All shards.
        total: usize,
    },
    /// An upstream runs first, so the source is not known yet.
    AfterUpstream,
    /// The source cannot be split (the build will fail with this message).
    Invalid(String),
}

impl std::fmt::Display for ShardInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardInfo::Counted { stale, total } => {
                write!(f, "{} of {total} shards stale", stale.len())?;
                // When every shard runs, naming them says nothing the count does not.
                if stale.is_empty() || stale.len() == *total {
                    return Ok(());
                }
                let shown: Vec<String> = stale
                    .iter()
                    .take(MAX_SHARDS_LISTED)
                    .map(ToString::to_string)
                    .collect();
                write!(f, ": {}", shown.join(", "))?;
                if stale.len() > MAX_SHARDS_LISTED {
                    write!(f, " and {} more", stale.len() - MAX_SHARDS_LISTED)?;
                }
                Ok(())
            }
            ShardInfo::AfterUpstream => f.write_str("shards are known once its upstreams have run"),
            ShardInfo::Invalid(m) => write!(f, "cannot split: {m}"),
        }
    }
}

/// Most stale shards the plain `plan` and `status` name; `--json` lists them all.
pub const MAX_SHARDS_LISTED: usize = 10;

/// Why one shard must run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardWhy {
    /// No result is recorded under its key: it is new, or its slice or anything its
    /// instance's key covers changed since.
    NotRecorded,
    /// Its recorded output is gone.
    OutputMissing,
    /// Its recorded output was changed since.
    OutputModified,
    /// A file its depfile listed changed since (the instance's reasons name it).
    DiscoveredChanged,
    /// Its instance runs regardless (`--force`, `always`).
    Forced,
}

impl ShardWhy {
    /// The public code, as `plan --json` writes it.
    pub fn code(self) -> &'static str {
        match self {
            ShardWhy::NotRecorded => "not_recorded",
            ShardWhy::OutputMissing => "output_missing",
            ShardWhy::OutputModified => "output_modified",
            ShardWhy::DiscoveredChanged => "input_changed",
            ShardWhy::Forced => "forced",
        }
    }
}

/// A shard that must run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleShard {
    /// Its position, from 0.
    pub index: usize,
    /// `{shard.key}`.
    pub key: String,
    /// Why.
    pub why: ShardWhy,
}

impl std::fmt::Display for StaleShard {
    /// `#7 (lib/common/mem.c)`, and the reason when it is about the shard's own output:
    /// `#7 (lib/common/mem.c: output missing)`. The key is escaped and shortened.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = (self.key != self.index.to_string()).then(|| display_key(&self.key));
        let why = match self.why {
            ShardWhy::OutputMissing => Some("output missing"),
            ShardWhy::OutputModified => Some("output modified"),
            ShardWhy::NotRecorded | ShardWhy::DiscoveredChanged | ShardWhy::Forced => None,
        };
        write!(f, "#{}", self.index)?;
        match (key, why) {
            (Some(k), Some(w)) => write!(f, " ({k}: {w})"),
            (Some(k), None) => write!(f, " ({k})"),
            (None, Some(w)) => write!(f, " ({w})"),
            (None, None) => Ok(()),
        }
    }
}

/// One planned instance.
pub struct Planned {
    /// The plan entry.
    pub entry: PlanEntry,
    /// For a stale sharded instance, what is known about its shards.
    pub shards: Option<ShardInfo>,
    /// A stale instance whose result the local cache holds: it would be restored.
    pub cached: bool,
    /// A stale instance whose result would not be stored, as far as its outputs on disk
    /// tell: (a file above `[cache] max_blob`, its size, the limit).
    pub too_large: Option<(String, u64, u64)>,
    /// With `build --dry-run -v`: the command a stale instance would run.
    pub preview: Option<Preview>,
    /// The instance's index in the project.
    pub index: usize,
}

/// The command a stale instance would run, as far as it is known before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preview {
    /// The command, expanded; `upstream_first` when `{inputs}` is matched before an
    /// upstream that runs first has written its outputs.
    Command {
        /// The expanded command.
        command: String,
        /// Its `{inputs}` may differ once upstreams have run.
        upstream_first: bool,
    },
    /// One command per stale shard: (index, expanded command).
    Shards(Vec<(usize, String)>),
    /// The template of a sharded command whose split is not known yet.
    Template(String),
}

/// The plan of `selected`, in topological order.
pub fn planned(
    l: &Loaded,
    layout: &Layout,
    selected: &BTreeSet<usize>,
    forced: BTreeSet<usize>,
) -> Result<Vec<Planned>, i32> {
    planned_with(l, layout, selected, forced, false)
}

/// [`planned`], with each stale instance's [`Preview`] when `commands` is set.
pub fn planned_with(
    l: &Loaded,
    layout: &Layout,
    selected: &BTreeSet<usize>,
    forced: BTreeSet<usize>,
    commands: bool,
) -> Result<Vec<Planned>, i32> {
    let (store, warning) =
        Store::open_existing_or_empty(layout).map_err(|e| report_diagnostic(&e, EXIT_FAILED))?;
    if let Some(w) = warning {
        crate::say!("warning: {w}");
    }
    let snap = Snapshot::take(&l.project, &l.graph, selected, forced, &store)
        .map_err(|e| report_diagnostic(&e, e.exit_code()))?;
    let plan = plan_static(&snap.order, &snap);
    let cache = crate::cache::local::Local::new(&crate::cache::local_dir(&l.project, layout));
    let mut out = Vec::with_capacity(snap.order.len());
    for &i in &snap.order {
        let Some(entry) = plan.get(&i).cloned() else {
            continue;
        };
        let inst = &l.project.instances[i];
        let mut shard_commands: Option<Vec<(usize, String)>> = None;
        let shards = (entry.stale && inst.shard.is_some()).then(|| {
            if inst
                .deps
                .iter()
                .any(|d| plan.get(&d.upstream).is_some_and(|e| e.stale))
            {
                return ShardInfo::AfterUpstream;
            }
            let upstream = |j: usize| {
                snap.recorded(j)
                    .success
                    .as_ref()
                    .map(crate::plan::Success::output_digests)
            };
            let parts = snap.parts(i, &upstream);
            let forced = snap.forced.contains(&i) || inst.always;
            let recorded = if forced {
                Default::default()
            } else {
                store.shard_results(&inst.name).unwrap_or_default()
            };
            match shards::plan(
                &l.project.root,
                &layout.dir,
                inst,
                &parts,
                &snap.inputs[i],
                &|p| snap.digest(p),
                &|p| snap.digest_now(p),
                &recorded,
            ) {
                Ok(p) => {
                    if commands {
                        let present: Vec<&str> = if inst.uses_inputs() {
                            parts.inputs.keys().map(String::as_str).collect()
                        } else {
                            Vec::new()
                        };
                        shard_commands = Some(
                            p.iter()
                                .filter(|s| s.reuse.is_none())
                                .map(|s| {
                                    let values = shards::values(s, p.len());
                                    let cmd = inst
                                        .command_line(&present, Some(&values))
                                        .unwrap_or_default();
                                    (s.shard.index, cmd)
                                })
                                .collect(),
                        );
                    }
                    ShardInfo::Counted {
                        stale: p
                            .iter()
                            .filter(|s| s.reuse.is_none())
                            .map(|s| StaleShard {
                                index: s.shard.index,
                                key: s.shard.key.clone(),
                                why: if forced {
                                    ShardWhy::Forced
                                } else if !recorded.contains_key(&s.key.0) {
                                    ShardWhy::NotRecorded
                                } else if recorded.get(&s.key.0).is_some_and(|r| {
                                    shards::decode_discovered(&r.discovered).is_none_or(|d| {
                                        !discovered_whys(&d, &|p| snap.digest_now(p)).is_empty()
                                    })
                                }) {
                                    ShardWhy::DiscoveredChanged
                                } else if outputs_present(&l.project.root, s) {
                                    ShardWhy::OutputModified
                                } else {
                                    ShardWhy::OutputMissing
                                },
                            })
                            .collect(),
                        total: p.len(),
                    }
                }
                Err(m) => ShardInfo::Invalid(m),
            }
        });
        let upstream_first = inst
            .deps
            .iter()
            .any(|d| plan.get(&d.upstream).is_some_and(|e| e.stale));
        let preview = (commands && entry.stale && inst.run.is_some()).then(|| {
            match (shard_commands, inst.shard.is_some()) {
                (Some(cmds), _) => Preview::Shards(cmds),
                (None, true) => Preview::Template(shard_template(inst, &snap.inputs[i])),
                (None, false) => {
                    let present: Vec<&str> = snap.inputs[i].iter().map(String::as_str).collect();
                    Preview::Command {
                        command: inst.command_line(&present, None).unwrap_or_default(),
                        upstream_first: upstream_first && inst.uses_inputs(),
                    }
                }
            }
        });
        let cached = entry.stale
            && inst.cache
            && !inst.always
            && !snap.forced.contains(&i)
            && inst
                .deps
                .iter()
                .all(|d| plan.get(&d.upstream).is_some_and(|e| !e.stale))
            // An entry built against other versions of its discovered inputs is a miss.
            && cache.peek_entry(&entry.key).is_some_and(|e| {
                discovered_whys(&e.discovered, &|p| snap.digest_now(p)).is_empty()
            });
        let too_large = l
            .project
            .cache
            .max_blob
            .filter(|_| entry.stale && inst.cache && !inst.always && !cached)
            .and_then(|max| largest_above(&l.project.root, &inst.outputs, max));
        out.push(Planned {
            entry,
            shards,
            cached,
            too_large,
            preview,
            index: i,
        });
    }
    Ok(out)
}

/// The first file among `outputs` (as the last build left them) above `max` bytes: its
/// path, size and `max`.
fn largest_above(
    root: &std::path::Path,
    outputs: &[crate::model::Output],
    max: u64,
) -> Option<(String, u64, u64)> {
    outputs.iter().find_map(|o| {
        let path = root.join(&o.path);
        if !o.dir {
            let size = std::fs::metadata(&path).ok()?.len();
            return (size > max).then(|| (o.path.clone(), size, max));
        }
        walkdir::WalkDir::new(&path)
            .sort_by_file_name()
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .find_map(|e| {
                let size = e.metadata().ok()?.len();
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .ok()?
                    .to_string_lossy()
                    .into_owned();
                (size > max).then_some((rel, size, max))
            })
    })
}

/// A sharded instance's command with what is known filled in and each `{shard.*}`
/// placeholder left as written.
fn shard_template(inst: &crate::model::Instance, inputs: &[String]) -> String {
    use crate::model::CmdPiece;
    let present: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let inputs = if inst.uses_inputs() {
        expand_inputs(inst, &present)
    } else {
        String::new()
    };
    let mut s = String::new();
    for piece in inst.run.iter().flatten() {
        match piece {
            CmdPiece::Text(t) => s.push_str(t),
            CmdPiece::Inputs => s.push_str(&inputs),
            CmdPiece::Shard(h) => s.push_str(&format!("{{shard.{}}}", h.name())),
            CmdPiece::ShardOutputs => s.push_str("{outputs}"),
            CmdPiece::ShardOutput => s.push_str("{output}"),
            CmdPiece::Depfile => s.push_str("{depfile}"),
        }
    }
    s
}

/// `{inputs}` as the command would get it: quoted, relative to the instance's `cwd`.
fn expand_inputs(inst: &crate::model::Instance, present: &[&str]) -> String {
    let rel: Vec<String> = present
        .iter()
        .map(|p| crate::model::path::relative_to(&inst.cwd, p))
        .collect();
    crate::model::template::shell_join(rel.iter().map(String::as_str))
}

/// Whether every output a shard recorded is still there (then a stale shard's output was
/// modified, else it is missing).
fn outputs_present(root: &std::path::Path, s: &shards::PlannedShard) -> bool {
    if s.part.is_empty() {
        s.outputs.iter().all(|o| root.join(o).exists())
    } else {
        root.join(&s.part).exists()
    }
}

/// One planned instance as JSON.
pub fn entry_json(project: &crate::model::Project, p: &Planned) -> serde_json::Value {
    let e = &p.entry;
    let mut v = json!({
        "instance": e.instance,
        "phase": project.instances.get(p.index).map(|i| i.phase.as_str()),
        "status": if e.stale { "stale" } else { "up_to_date" },
        "reasons": reason::codes(&e.reasons),
        "details": e.reasons,
    });
    if p.entry.stale {
        v["source"] = json!(if p.cached { "local" } else { "built" });
    }
    if let Some((path, size, max)) = &p.too_large {
        v["not_cacheable"] = json!({ "path": path, "size": size, "max_blob": max });
    }
    if let Some(info) = &p.shards {
        v["shards"] = match info {
            ShardInfo::Counted { stale, total } => json!({
                "stale": stale.len(),
                "total": total,
                "stale_shards": stale
                    .iter()
                    .map(|s| json!({ "index": s.index, "key": s.key, "reason": s.why.code() }))
                    .collect::<Vec<_>>(),
            }),
            ShardInfo::AfterUpstream => json!({ "after_upstream": true }),
            ShardInfo::Invalid(m) => json!({ "error": m }),
        };
    }
    v
}

/// Reasons as shown to people, with shard counts when known.
pub fn reasons_text(p: &Planned) -> String {
    let mut why: Vec<String> = p.entry.reasons.iter().map(ToString::to_string).collect();
    if let Some(info) = &p.shards {
        why.push(info.to_string());
    }
    let mut text = why.join(", ");
    if p.cached {
        text.push_str(" — restorable from the local cache");
    }
    if let Some((path, size, max)) = &p.too_large {
        text.push_str(&format!(
            " — not cacheable: `{path}` is {}, above `[cache] max_blob` ({})",
            crate::cache::local::human_size(*size),
            crate::cache::local::human_size(*max)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_read_as_make_n_does() {
        let one = Preview::Command {
            command: "cat a b > c".into(),
            upstream_first: false,
        };
        assert_eq!(preview_lines(&one), ["$ cat a b > c"]);
        let later = Preview::Command {
            command: "cat  > c".into(),
            upstream_first: true,
        };
        assert_eq!(
            preview_lines(&later),
            [
                "$ cat  > c",
                "  ({inputs} as matched now; upstreams run first)"
            ]
        );
        let shards = Preview::Shards(vec![(0, "x 0".into()), (3, "x 3".into())]);
        assert_eq!(preview_lines(&shards), ["#0 $ x 0", "#3 $ x 3"]);
        let template = Preview::Template("x {shard.key}".into());
        assert_eq!(preview_lines(&template)[0], "$ x {shard.key}");
    }

    #[test]
    fn instance_counts_are_singular_or_plural() {
        assert_eq!(instances_text(1), "1 instance");
        assert_eq!(instances_text(0), "0 instances");
        assert_eq!(instances_text(12), "12 instances");
    }
}
