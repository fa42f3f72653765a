//! Validation: from the Orchfile as written to a [`Project`], reporting all errors at once.
//!
//! Order of work: project settings and variables, then each phase's dependencies and
//! matrix, then instances and their dependency edges (paired on shared matrix axes,
//! gathered otherwise), then templates (outputs first, since `run` may refer to them),
//! then path and duplicate-output checks, then the `[cache]` table against all of it.
//!
//! Matrices are counted before they are expanded and capped ([`MAX_PHASE_INSTANCES`],
//! [`MAX_INSTANCES`]): a few lines of TOML must not be able to exhaust memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::overlap::implied_deps;
use super::path::{Containment, PathProblem, is_plain, normalize, relative_to};
use super::template::{self, Piece, shell_join};
use super::{
    CacheConfig, CmdPiece, DEFAULT_EXECUTOR_MAX_JOBS, Dep, EnvValue, Executor, ExecutorKind,
    FORMAT, Instance, LOCAL_EXECUTOR, Output, Phase, Project, Resources, Retry, ShardHole,
};
use crate::fs::Digest;
use crate::orchfile::load::{ConfigFailure, LoadedExecutor, LoadedPhase, RawProject};
use crate::orchfile::raw::{RawAxis, RawEnv, RawOutput, RawResources, RawShard, RawVar};
use crate::orchfile::source::{
    ConfigError, ErrorKind, FileId, Sources, Span, did_you_mean, sort_errors,
};
use crate::shard::{Merge, ShardSpec, Strategy};

/// Validates a loaded Orchfile: the project, or every error found (including those
/// loading found).
pub fn validate(raw: RawProject) -> Result<Project, ConfigFailure> {
    let (project, errors) = validate_all(raw);
    if errors.is_empty() {
        Ok(project)
    } else {
        Err(ConfigFailure {
            sources: project.sources,
            errors,
        })
    }
}

/// Validates as much as can be: the project (partial when there are errors, enough for
/// cycle detection) and every error, sorted by position.
pub fn validate_all(raw: RawProject) -> (Project, Vec<ConfigError>) {
    let RawProject {
        root,
        sources,
        orch,
        cache: raw_cache,
        vars,
        phases: raw_phases,
        executors: raw_executors,
        broken,
        broken_executors,
        errors,
        overrides,
    } = raw;
    let mut errors = errors;
    let root = root.canonicalize().unwrap_or(root);
    let mut contain = Containment::new(&root);
    let main: FileId = 0;

    if let Some(f) = &orch.format
        && *f.get_ref() != FORMAT
    {
        errors.push(
            ConfigError::new(
                ErrorKind::Value,
                format!("unsupported Orchfile format `{}`", f.get_ref()),
            )
            .at(
                &Span::new(main, f.span()),
                "this version of orch reads format 1",
            )
            .help("set `format = 1`, or upgrade orch"),
        );
    }
    let jobs = match &orch.jobs {
        Some(j) if *j.get_ref() < 1 => {
            errors.push(
                ConfigError::new(ErrorKind::Value, "`jobs` must be at least 1")
                    .at(&Span::new(main, j.span()), "not a positive number")
                    .help("remove `jobs` to use one job per CPU"),
            );
            None
        }
        Some(j) if *j.get_ref() > i64::from(super::MAX_JOBS) => {
            errors.push(
                ConfigError::new(
                    ErrorKind::Value,
                    format!(
                        "`jobs` is {}, above orch's limit of {}",
                        j.get_ref(),
                        super::MAX_JOBS
                    ),
                )
                .at(
                    &Span::new(main, j.span()),
                    format!("at most {}", super::MAX_JOBS),
                )
                .help(format!(
                    "orch runs from 1 to {} instances at once; lower `jobs`, or remove it to use one job per CPU",
                    super::MAX_JOBS
                )),
            );
            None
        }
        Some(j) => usize::try_from(*j.get_ref()).ok(),
        None => None,
    };
    let mut env: Vec<String> = Vec::new();
    for name in &orch.env {
        check_env_name(name.get_ref(), &Span::new(main, name.span()), &mut errors);
        env.push(name.get_ref().clone());
    }
    env.sort();
    env.dedup();

    let mut broken_executors = broken_executors;
    let executors = executors(&raw_executors, &mut broken_executors, &mut errors);
    // Where each phase runs and what it asks for: phase-level, reported once per phase.
    let mut placement: BTreeMap<String, (Option<String>, Resources)> = BTreeMap::new();
    for (name, lp) in &raw_phases {
        let executor = phase_executor(name, lp, &executors, &broken_executors, &mut errors);
        let resources = lp
            .raw
            .resources
            .as_ref()
            .map(|r| resources(name, r.get_ref(), lp.file, &mut errors))
            .unwrap_or_default();
        placement.insert(name.clone(), (executor, resources));
    }

    let var_values: BTreeMap<String, RawVar> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();

    // Phase-level pass: dependencies and matrix axes.
    let names: Vec<&str> = raw_phases.keys().map(String::as_str).collect();
    let mut phases: BTreeMap<String, Phase> = BTreeMap::new();
    let mut combos: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    let mut axes_of: BTreeMap<String, Vec<(String, Vec<String>)>> = BTreeMap::new();
    // Instances per phase, counted before any is made: a few lines of TOML can ask for
    // billions, and expanding them first would exhaust memory.
    let mut counts: Vec<(String, u64)> = Vec::new();
    for (name, lp) in &raw_phases {
        let file = lp.file;
        let spanned = |l: &'_ [Spanned<String>]| -> Vec<(String, Span)> {
            l.iter()
                .map(|v| (v.get_ref().clone(), Span::new(file, v.span())))
                .collect()
        };
        for (key, list) in [
            ("needs", spanned(&lp.raw.needs)),
            ("after", spanned(&lp.raw.after)),
            ("inputs", spanned(&lp.raw.inputs)),
        ] {
            repeated(
                list.iter().map(|(v, s)| (v.as_str(), s.clone())),
                name,
                key,
                &mut errors,
            );
        }
        let needs = deps(
            &lp.raw.needs,
            file,
            &names,
            &broken,
            name,
            "needs",
            &mut errors,
        );
        let after = deps(
            &lp.raw.after,
            file,
            &names,
            &broken,
            name,
            "after",
            &mut errors,
        );
        for (a, span) in &after {
            if needs.iter().any(|(n, _)| n == a) {
                errors.push(
                    ConfigError::new(
                        ErrorKind::Value,
                        format!("phase `{name}` lists `{a}` in both `needs` and `after`"),
                    )
                    .at(span, "also a hard dependency")
                    .help("keep it in `needs` for a hard dependency, or in `after` for a soft one"),
                );
            }
        }
        let axes = matrix_axes(lp, &var_values, &mut errors);
        match instance_count(&axes) {
            Some(n) if n <= MAX_PHASE_INSTANCES => counts.push((name.clone(), n)),
            count => {
                let many = match count {
                    Some(n) => n.to_string(),
                    None => format!("more than {}", u64::MAX),
                };
                errors.push(
                    ConfigError::new(
                        ErrorKind::Value,
                        format!(
                            "the matrix of phase `{name}` makes {many} instances, more than the {MAX_PHASE_INSTANCES} a phase may have"
                        ),
                    )
                    .at(&matrix_span(lp), format!("{many} combinations"))
                    .help("use fewer axes or values, or split the work with `shard` instead of the matrix"),
                );
            }
        }
        phases.insert(
            name.clone(),
            Phase {
                name: name.clone(),
                description: lp.raw.description.clone(),
                file,
                span: lp.name_span.clone(),
                needs,
                after,
                axes: axes.iter().map(|(a, _)| a.clone()).collect(),
                instances: Vec::new(),
            },
        );
        axes_of.insert(name.clone(), axes);
    }

    let total = counts.iter().try_fold(0u64, |t, (_, n)| t.checked_add(*n));
    if total.is_none_or(|t| t > MAX_INSTANCES) {
        // Blame the phase with the largest matrix (the first by name among equals).
        if let Some((big, n)) = counts
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            && let Some(lp) = raw_phases.get(big)
        {
            let all = total.map_or_else(|| format!("more than {}", u64::MAX), |t| t.to_string());
            errors.push(
                ConfigError::new(
                    ErrorKind::Value,
                    format!(
                        "the project would have {all} instances in all, more than the {MAX_INSTANCES} allowed; phase `{big}` has {n}"
                    ),
                )
                .at(&matrix_span(lp), format!("{n} combinations"))
                .help("use fewer matrix axes or values, or split the work with `shard` instead"),
            );
        }
    } else {
        for (name, _) in &counts {
            if let Some(axes) = axes_of.get(name) {
                combos.insert(name.clone(), cross_product(axes));
            }
        }
    }

    // Instances, sorted by name.
    let mut skeletons: Vec<(String, String, BTreeMap<String, String>)> = Vec::new();
    for (phase, list) in &combos {
        for m in list {
            skeletons.push((instance_name(phase, m), phase.clone(), m.clone()));
        }
    }
    skeletons.sort();
    for (i, (_, phase, _)) in skeletons.iter().enumerate() {
        if let Some(p) = phases.get_mut(phase) {
            p.instances.push(i);
        }
    }

    // Dependency edges between instances.
    let mut instance_deps: Vec<Vec<Dep>> = vec![Vec::new(); skeletons.len()];
    for (i, (_, phase, matrix)) in skeletons.iter().enumerate() {
        let p = &phases[phase];
        let mut ds = Vec::new();
        for (dep, hard) in p
            .needs
            .iter()
            .map(|d| (d, true))
            .chain(p.after.iter().map(|d| (d, false)))
        {
            let Some(up) = phases.get(&dep.0) else {
                continue;
            };
            for &j in &up.instances {
                let up_matrix = &skeletons[j].2;
                let paired = up_matrix
                    .iter()
                    .all(|(axis, v)| matrix.get(axis).is_none_or(|mine| mine == v));
                if paired {
                    ds.push(Dep {
                        upstream: j,
                        hard,
                        implied: false,
                    });
                }
            }
        }
        ds.sort();
        ds.dedup_by_key(|d| d.upstream);
        instance_deps[i] = ds;
    }

    // Outputs first: `run` may refer to any instance's outputs.
    let mut outputs: Vec<Vec<Output>> = Vec::with_capacity(skeletons.len());
    let mut output_spans: Vec<Vec<Span>> = Vec::with_capacity(skeletons.len());
    let mut outputs_complete: Vec<bool> = Vec::with_capacity(skeletons.len());
    let mut shard_outputs: Vec<Vec<Output>> = Vec::with_capacity(skeletons.len());
    for (_, phase, matrix) in &skeletons {
        let lp = &raw_phases[phase];
        let mut outs = Vec::new();
        let mut spans = Vec::new();
        let mut per_shard = Vec::new();
        let merge_none = merge_none_phase(lp);
        for o in &lp.raw.outputs {
            let span = Span::new(lp.file, o.span());
            let (path, schema, meta) = match o.get_ref() {
                RawOutput::Path(p) => (p.clone(), None, false),
                RawOutput::Table { path, schema, meta } => (path.clone(), schema.clone(), *meta),
            };
            let ctx = Ctx::new(phase, matrix, &var_values, &sources, &span);
            let Some(expanded) = expand_simple(&path, &ctx, "outputs", merge_none, &mut errors)
            else {
                continue;
            };
            // The schema decides whether the phase fails: it is read like an input.
            let schema = match schema {
                Some(s) => match schema_path(&s, &span, &mut contain, &mut errors) {
                    Some(norm) => Some(norm),
                    None => continue,
                },
                None => None,
            };
            if merge_none {
                // Each shard writes its own: the path must tell the shards apart.
                let norm = normalize(&expanded);
                let literal: String = norm
                    .split('/')
                    .take_while(|c| !c.contains('{'))
                    .collect::<Vec<_>>()
                    .join("/");
                if !expanded.contains("{shard.") {
                    errors.push(
                        ConfigError::new(ErrorKind::Placeholder, format!("with `merge = \"none\"`, output `{expanded}` of phase `{phase}` is the same for every shard"))
                            .at(&span, "no `{shard.key}` or `{shard.index}` in it")
                            .help("put `{shard.key}` or `{shard.index}` in each output path, or merge the shards into one output"),
                    );
                } else if expanded.starts_with('/')
                    || norm.split('/').any(|c| c == "..")
                    || norm.starts_with(".orch")
                {
                    errors.push(path_error(
                        "output",
                        &expanded,
                        &span,
                        "outputs must stay inside the project, outside `.orch/`",
                    ));
                } else if let Err(problem) = contain.check(&literal, true) {
                    errors.push(path_error("output", &expanded, &span, &problem.describe()));
                } else if meta {
                    errors.push(meta_error(
                        &expanded,
                        &span,
                        "each shard writes its own file",
                    ));
                } else {
                    per_shard.push(Output {
                        path: norm,
                        dir: false,
                        schema: schema.clone(),
                        meta: false,
                    });
                }
                continue;
            }
            let dir = expanded.ends_with('/');
            let norm = normalize(&expanded);
            let problem = if expanded.starts_with('/') {
                Some(PathProblem::Absolute)
            } else {
                contain.check(&norm, dir).err()
            };
            if let Some(problem) = problem {
                errors.push(path_error("output", &expanded, &span, &problem.describe()));
                continue;
            }
            if norm.is_empty() || norm == ".orch" || norm.starts_with(".orch/") {
                errors.push(path_error(
                    "output",
                    &expanded,
                    &span,
                    "outputs must name a file or directory inside the project, outside `.orch/`",
                ));
                continue;
            }
            if meta && dir {
                errors.push(meta_error(&expanded, &span, "it is a directory"));
                continue;
            }
            outs.push(Output {
                path: norm,
                dir,
                schema,
                meta,
            });
            spans.push(span);
        }
        // An output already reported as invalid must not also make `{output}` fail.
        outputs_complete.push(outs.len() + per_shard.len() == lp.raw.outputs.len());
        shard_outputs.push(per_shard);
        outputs.push(outs);
        output_spans.push(spans);
    }
    check_duplicate_outputs(&skeletons, &outputs, &output_spans, &mut errors);

    // Files that configure the project: no output may overwrite one.
    let mut config_files: BTreeMap<String, &str> = BTreeMap::new();
    for (k, f) in sources.files().iter().enumerate() {
        let what = if k == 0 {
            "the Orchfile"
        } else {
            "an included file"
        };
        config_files.insert(normalize(&f.name), what);
    }
    for o in outputs.iter().chain(&shard_outputs).flatten() {
        if let Some(schema) = &o.schema {
            config_files.entry(schema.clone()).or_insert("a schema");
        }
    }
    // Fragments an output could become once written: the include globs.
    let include_globs = {
        let mut b = globset::GlobSetBuilder::new();
        for p in &orch.include {
            if let Ok(g) = globset::GlobBuilder::new(p.get_ref())
                .literal_separator(true)
                .build()
            {
                b.add(g);
            }
        }
        b.build().unwrap_or_else(|_| globset::GlobSet::empty())
    };
    let mut input_globs: BTreeMap<String, Option<globset::GlobMatcher>> = BTreeMap::new();

    let merge_none_phases: BTreeSet<&str> = raw_phases
        .iter()
        .filter(|(_, lp)| merge_none_phase(lp))
        .map(|(n, _)| n.as_str())
        .collect();
    let mut instances = Vec::with_capacity(skeletons.len());
    let mut input_spans: Vec<Vec<Span>> = Vec::with_capacity(skeletons.len());
    for (i, (name, phase, matrix)) in skeletons.iter().enumerate() {
        let lp = &raw_phases[phase];
        let p = &phases[phase];
        let file = lp.file;

        let mut inputs = Vec::new();
        let mut spans = Vec::new();
        for pat in &lp.raw.inputs {
            let span = Span::new(file, pat.span());
            let ctx = Ctx::new(phase, matrix, &var_values, &sources, &span);
            let Some(expanded) = expand_input_pattern(pat.get_ref(), &ctx, &mut errors) else {
                continue;
            };
            let norm = normalize(&expanded);
            let literal: String = norm
                .split('/')
                .take_while(|c| !c.contains(['*', '?', '[', '{']))
                .collect::<Vec<_>>()
                .join("/");
            if norm.is_empty() || expanded.starts_with('/') {
                errors.push(path_error(
                    "input",
                    &expanded,
                    &span,
                    "absolute or empty paths leave the project root",
                ));
                continue;
            }
            if norm.split('/').any(|c| c == "..") {
                errors.push(path_error(
                    "input",
                    &expanded,
                    &span,
                    "`..` leaves the project root",
                ));
                continue;
            }
            let plain = is_plain(&norm);
            // A plain path is read as named, so a symlink it is itself must stay inside
            // the project too; a glob's matches are checked when the walk finds them.
            if !literal.is_empty()
                && let Err(problem) = contain.check(&literal, true)
            {
                errors.push(path_error("input", &expanded, &span, &problem.describe()));
                continue;
            }
            if plain && let Some(kind) = special_file(&root.join(&norm)) {
                errors.push(
                    ConfigError::new(
                        ErrorKind::Value,
                        format!("input `{expanded}` is a {kind}, not a file or directory"),
                    )
                    .at(&span, format!("a {kind}"))
                    .help("inputs are hashed by content: name regular files or directories"),
                );
                continue;
            }
            if !plain
                && let Err(e) = globset::GlobBuilder::new(&norm)
                    .literal_separator(true)
                    .build()
            {
                errors.push(
                    ConfigError::new(
                        ErrorKind::Glob,
                        format!("invalid input pattern `{expanded}`: {}", e.kind()),
                    )
                    .at(&span, "invalid glob")
                    .help(
                        "use `*`, `**`, `?`, `[...]` or `{a,b}` globs relative to the project root",
                    ),
                );
                continue;
            }
            inputs.push(norm);
            spans.push(span);
        }

        let cwd = match &lp.raw.cwd {
            Some(c) => {
                let span = Span::new(file, c.span());
                let norm = normalize(c.get_ref());
                if c.get_ref().starts_with('/') {
                    errors.push(path_error(
                        "cwd",
                        c.get_ref(),
                        &span,
                        "absolute paths leave the project root",
                    ));
                } else if !norm.is_empty()
                    && let Err(problem) = contain.check(&norm, true)
                {
                    errors.push(path_error("cwd", c.get_ref(), &span, &problem.describe()));
                }
                norm
            }
            None => String::new(),
        };

        let shard = lp.raw.shard.as_ref().and_then(|sh| {
            let span = Span::new(file, sh.span());
            let ctx = Ctx::new(phase, matrix, &var_values, &sources, &span);
            let first = i == p.instances[0];
            let mut errs = Vec::new();
            let spec = shard_spec(sh.get_ref(), &ctx, &outputs[i], &mut contain, &mut errs);
            if first {
                errors.extend(errs);
            }
            let spec = spec?;
            // The source decides the shards, so it is an input of the instance.
            let source = match &spec.strategy {
                Strategy::Files { pattern } => pattern,
                Strategy::Chunk { source, .. } | Strategy::Group { source, .. } => source,
            };
            if !inputs.contains(source) {
                inputs.push(source.clone());
                spans.push(span);
            }
            Some(spec)
        });
        for (o, span) in outputs[i].iter().zip(&output_spans[i]) {
            let conflict = OutputConflicts {
                config: &config_files,
                includes: &include_globs,
                inputs: &inputs,
                phase,
            }
            .find(o, &mut input_globs);
            if let Some(why) = conflict {
                let shown = if o.dir {
                    format!("{}/", o.path)
                } else {
                    o.path.clone()
                };
                errors.push(
                    ConfigError::new(ErrorKind::OutputConflict, format!("output `{shown}` {why}"))
                        .at(span, "the command would overwrite it")
                        .help("outputs are files the command writes; give this one a path of its own, outside the configuration and the phase's inputs"),
                );
            }
        }

        let mut env: BTreeMap<String, EnvValue> = BTreeMap::new();
        for n in &orch.env {
            env.insert(n.get_ref().clone(), EnvValue::Inherit);
        }
        if let Some(e) = &lp.raw.env {
            let span = Span::new(file, e.span());
            match e.get_ref() {
                RawEnv::Names(names) => {
                    for n in names {
                        if i == p.instances[0] {
                            check_env_name(n, &span, &mut errors);
                        }
                        env.insert(n.clone(), EnvValue::Inherit);
                    }
                }
                RawEnv::Values(values) => {
                    for (n, v) in values {
                        if i == p.instances[0] {
                            check_env_name(n, &span, &mut errors);
                        }
                        env.insert(n.clone(), EnvValue::Set(v.clone()));
                    }
                }
            }
        }

        let first = i == p.instances[0];
        let timeout = lp
            .raw
            .timeout
            .as_ref()
            .and_then(|t| duration(t, file, "timeout", first, &mut errors));
        let retry = lp.raw.retry.as_ref().and_then(|r| {
            let span = Span::new(file, r.span());
            let raw = r.get_ref();
            if raw.attempts < 1 {
                if first {
                    errors.push(
                        ConfigError::new(ErrorKind::Value, "`retry.attempts` must be at least 1")
                            .at(&span, "attempts counts the first try too")
                            .help("use `attempts = 1` for no retries, or remove `retry`"),
                    );
                }
                return None;
            }
            let parse =
                |s: &Option<String>, default: Duration, errors: &mut Vec<ConfigError>| match s {
                    Some(s) => match humantime::parse_duration(s) {
                        Ok(d) => d,
                        Err(e) => {
                            if first {
                                errors.push(
                                    ConfigError::new(
                                        ErrorKind::Value,
                                        format!("invalid duration `{s}` in `retry`: {e}"),
                                    )
                                    .at(&span, "invalid duration")
                                    .help("write durations like `200ms`, `5s` or `1m 30s`"),
                                );
                            }
                            default
                        }
                    },
                    None => default,
                };
            let backoff = parse(&raw.backoff, Duration::from_millis(200), &mut errors);
            let max_backoff = parse(&raw.max_backoff, Duration::from_secs(30), &mut errors);
            Some(Retry {
                attempts: raw.attempts,
                backoff,
                max_backoff,
            })
        });

        let depfile = lp.raw.depfile.as_ref().and_then(|d| {
            let span = Span::new(file, d.span());
            let ctx = Ctx::new(phase, matrix, &var_values, &sources, &span);
            let conflicts = OutputConflicts {
                config: &config_files,
                includes: &include_globs,
                inputs: &inputs,
                phase,
            };
            let sharded = lp
                .raw
                .shard
                .as_ref()
                .is_some_and(|s| s.get_ref().strategy.as_deref().unwrap_or("full") != "full");
            let found = depfile_path(
                d.get_ref(),
                &ctx,
                sharded,
                &outputs[i],
                &conflicts,
                &mut input_globs,
                &mut contain,
            );
            match found {
                Ok(path) => Some(path),
                Err(e) => {
                    if i == p.instances[0] {
                        errors.extend(e);
                    }
                    None
                }
            }
        });

        instances.push(Instance {
            name: name.clone(),
            phase: phase.clone(),
            matrix: matrix.clone(),
            run: None,
            inputs,
            outputs: outputs[i].clone(),
            env,
            cwd,
            always: lp.raw.always.unwrap_or(false),
            cache: lp.raw.cache.unwrap_or(true),
            timeout,
            retry,
            deps: instance_deps[i].clone(),
            implied: Vec::new(),
            shard,
            shard_outputs: shard_outputs[i].clone(),
            depfile,
            executor: placement.get(phase).and_then(|p| p.0.clone()),
            resources: placement
                .get(phase)
                .map(|p| p.1.clone())
                .unwrap_or_default(),
        });
        input_spans.push(spans);
    }

    // Dependencies implied by files come before `run`: a group's outputs in
    // `{needs.G.outputs}` are those of all its dependencies.
    let evidence = implied_deps(&instances, &input_spans, &phases);
    for (inst, ev) in instances.iter_mut().zip(evidence) {
        inst.deps.extend(ev.iter().map(|e| Dep {
            upstream: e.upstream,
            hard: true,
            implied: true,
        }));
        inst.deps.sort();
        inst.deps.dedup_by_key(|d| d.upstream);
        inst.implied = ev;
    }
    let all_deps: Vec<Vec<Dep>> = instances.iter().map(|i| i.deps.clone()).collect();
    let groups: BTreeSet<&str> = raw_phases
        .iter()
        .filter(|(_, lp)| lp.raw.run.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    for (i, (_, phase, matrix)) in skeletons.iter().enumerate() {
        let lp = &raw_phases[phase];
        let p = &phases[phase];
        let file = lp.file;
        let (cwd, shard) = (&instances[i].cwd, &instances[i].shard);
        let has_inputs = !instances[i].inputs.is_empty() || !lp.raw.inputs.is_empty();
        let run = lp.raw.run.as_ref().and_then(|r| {
            let span = Span::new(file, r.span());
            let ctx = Ctx::new(phase, matrix, &var_values, &sources, &span);
            let env =
                RunEnv {
                    outputs: &outputs[i],
                    outputs_complete: outputs_complete[i],
                    deps: &all_deps[i],
                    all_deps: &all_deps,
                    groups: &groups,
                    shard_outputs: &shard_outputs[i],
                    has_inputs,
                    has_depfile: lp.raw.depfile.is_some(),
                    skeletons: &skeletons,
                    all_outputs: &outputs,
                    phase: p,
                    cwd,
                    shard: shard.as_ref(),
                    shard_declared: lp.raw.shard.as_ref().is_some_and(|s| {
                        s.get_ref().strategy.as_deref().unwrap_or("full") != "full"
                    }),
                    merge_none_phases: &merge_none_phases,
                    broken: &broken,
                };
            expand_run(r.get_ref(), &ctx, &env, &mut errors)
        });
        if let (Some(spec), Some(pieces)) = (shard, &run)
            && spec.merge == Merge::Concat
            && !pieces.contains(&CmdPiece::Shard(ShardHole::Output))
            && i == p.instances[0]
            && let Some(r) = &lp.raw.run
        {
            errors.push(
                ConfigError::new(ErrorKind::Placeholder, format!("the command of sharded phase `{phase}` does not write `{{shard.output}}`"))
                    .at(&Span::new(file, r.span()), "no `{shard.output}`")
                    .help("each shard writes its part to `{shard.output}`; orch concatenates the parts in shard order into the output"),
            );
        }
        instances[i].run = run;
        if lp.raw.run.is_none() && !lp.raw.outputs.is_empty() && i == p.instances[0] {
            errors.push(
                ConfigError::new(
                    ErrorKind::Value,
                    format!("phase `{phase}` declares outputs but has no `run`"),
                )
                .at(&p.span, "no command")
                .help("add a `run` command that writes the outputs, or remove `outputs`"),
            );
        }
    }

    if let Some(cache) = &raw_cache {
        if let Some(dir) = &cache.dir {
            let span = Span::new(main, dir.span());
            let owned = protected_paths(&instances, &config_files, &orch.include);
            if let Some(why) = cache_dir_problem(&root, dir.get_ref(), &owned) {
                errors.push(
                    ConfigError::new(
                        ErrorKind::Value,
                        format!("cache directory `{}` {why}", dir.get_ref()),
                    )
                    .at(&span, why)
                    .help("`orch clean --cache` and `orch gc` delete what is in the cache directory: use one that only orch writes, such as `.orch/cache` (the default) or a directory outside the project"),
                );
            }
        }
        if let Some(remote) = &cache.remote
            && let Some(why) = remote_problem(remote.get_ref())
        {
            errors.push(
                ConfigError::new(ErrorKind::Value, "unsupported `remote` cache URL")
                    .at(&Span::new(main, remote.span()), why)
                    .help("write `http://HOST/PATH`, `https://HOST/PATH`, `s3://BUCKET[/PREFIX]` or `file:///ABSOLUTE/PATH`"),
            );
        }
    }

    let max_blob = max_blob(
        raw_cache.as_ref().and_then(|c| c.max_blob.as_ref()),
        main,
        &mut errors,
    );
    sort_errors(&mut errors);
    // Instances of one phase share their spans: one report per place is enough.
    errors.dedup_by(|a, b| a.message == b.message && a.primary == b.primary);
    let digest = project_digest(&sources, &overrides);
    let project = Project {
        root,
        sources,
        digest,
        includes: orch.include.iter().map(|p| p.get_ref().clone()).collect(),
        cache: CacheConfig {
            dir: raw_cache
                .as_ref()
                .and_then(|c| c.dir.as_ref())
                .map(|d| d.get_ref().as_str())
                .map(|d| {
                    if d.starts_with('/') {
                        d.to_owned()
                    } else {
                        normalize(d)
                    }
                })
                .filter(|d| !d.is_empty()),
            remote: raw_cache
                .as_ref()
                .and_then(|c| c.remote.as_ref())
                .map(|r| r.get_ref().clone()),
            push: raw_cache.as_ref().and_then(|c| c.push).unwrap_or(true),
            max_blob,
        },
        jobs,
        keep_runs: keep_runs(orch.keep_runs.as_ref(), main, &mut errors),
        env,
        executors,
        phases,
        instances,
    };
    (project, errors)
}

/// What an output must not overwrite, for one instance.
struct OutputConflicts<'a> {
    /// Configuration files (the Orchfile, fragments, schemas) and what each is.
    config: &'a BTreeMap<String, &'a str>,
    /// The `include` globs.
    includes: &'a globset::GlobSet,
    /// The instance's input patterns.
    inputs: &'a [String],
    /// Its phase.
    phase: &'a str,
}

impl OutputConflicts<'_> {
    /// Why writing `o` would overwrite configuration or one of the phase's own inputs.
    fn find(
        &self,
        o: &Output,
        globs: &mut BTreeMap<String, Option<globset::GlobMatcher>>,
    ) -> Option<String> {
        let phase = self.phase;
        let inside = |p: &str, dir: &str| {
            p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/'
        };
        if o.dir {
            if let Some((f, what)) = self.config.iter().find(|(f, _)| inside(f, &o.path)) {
                return Some(format!("holds {what}, `{f}`"));
            }
        } else if let Some(what) = self.config.get(&o.path) {
            return Some(format!("is {what}"));
        } else if self.includes.is_match(&o.path) {
            return Some("is an included file".to_owned());
        }
        for p in self.inputs {
            if is_plain(p) {
                if *p == o.path {
                    return Some(format!("is an input of phase `{phase}`"));
                }
                if inside(&o.path, p) {
                    return Some(format!("lies inside input `{p}` of phase `{phase}`"));
                }
                if o.dir && inside(p, &o.path) {
                    return Some(format!("holds input `{p}` of phase `{phase}`"));
                }
            } else if o.dir {
                let literal = glob_literal(p);
                if literal == o.path || inside(&literal, &o.path) {
                    return Some(format!("holds the files of input `{p}` of phase `{phase}`"));
                }
            } else {
                let matcher = globs.entry(p.clone()).or_insert_with(|| {
                    globset::GlobBuilder::new(p)
                        .literal_separator(true)
                        .build()
                        .ok()
                        .map(|g| g.compile_matcher())
                });
                if matcher.as_ref().is_some_and(|m| m.is_match(&o.path)) {
                    return Some(format!("is matched by input `{p}` of phase `{phase}`"));
                }
            }
        }
        None
    }
}

/// The directories before the first glob component of `pattern` ("" for none).
fn glob_literal(pattern: &str) -> String {
    pattern
        .split('/')
        .take_while(|c| !c.contains(['*', '?', '[', '{', '\\']))
        .collect::<Vec<_>>()
        .join("/")
}

/// Every project path the local store must not hold, with what it is, sorted.
fn protected_paths(
    instances: &[Instance],
    config: &BTreeMap<String, &str>,
    includes: &[Spanned<String>],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in includes {
        let p = normalize(p.get_ref());
        out.entry(glob_literal(&p))
            .or_insert_with(|| format!("include `{p}`"));
    }
    for (f, what) in config {
        out.entry(f.clone())
            .or_insert_with(|| format!("{what}, `{f}`"));
    }
    for inst in instances {
        for p in &inst.inputs {
            let key = if is_plain(p) {
                p.clone()
            } else {
                glob_literal(p)
            };
            out.entry(key).or_insert_with(|| format!("input `{p}`"));
        }
        for o in &inst.outputs {
            out.entry(o.path.clone())
                .or_insert_with(|| format!("output `{}`", o.path));
        }
        for o in &inst.shard_outputs {
            out.entry(glob_literal(&o.path.replace('{', "*")))
                .or_insert_with(|| format!("output `{}`", o.path));
        }
    }
    out
}

/// `path` resolved one component at a time from `base`: each existing prefix through
/// its symlinks, then `..` applied to what it really is, as the kernel would.
fn resolve(base: &Path, path: &str) -> PathBuf {
    let mut cur = base.to_path_buf();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir => cur = PathBuf::from("/"),
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(n) => {
                cur.push(n);
                if let Ok(real) = cur.canonicalize() {
                    cur = real;
                }
            }
            Component::CurDir | Component::Prefix(_) => {}
        }
    }
    cur
}

/// Why `[cache] dir` cannot be the local store: `clean --cache` and `gc` empty it, so it
/// must not be or contain the project, its state, or anything the project declares.
fn cache_dir_problem(root: &Path, dir: &str, owned: &BTreeMap<String, String>) -> Option<String> {
    let real = resolve(root, dir);
    if real == root {
        return Some("is the project root".to_owned());
    }
    if root.starts_with(&real) {
        return Some("contains the project root".to_owned());
    }
    // A store outside the project (shared between checkouts) holds nothing of it.
    let rel = real.strip_prefix(root).ok()?.to_str()?;
    if rel == ".orch" {
        return Some("holds orch's state (`.orch/`)".to_owned());
    }
    let inside = |p: &str| p == rel || (p.starts_with(rel) && p[rel.len()..].starts_with('/'));
    owned
        .iter()
        .find(|(p, _)| inside(p))
        .map(|(_, what)| format!("holds {what}"))
}

/// Why `remote` is not one of the URL forms the remote cache supports.
fn remote_problem(remote: &str) -> Option<&'static str> {
    let parsed = url::Url::parse(remote).ok();
    let host = parsed
        .as_ref()
        .and_then(|u| u.host_str())
        .is_some_and(|h| !h.is_empty());
    if remote.starts_with("http://") || remote.starts_with("https://") {
        (!host).then_some("no host after `http(s)://`")
    } else if remote.starts_with("s3://") || remote.starts_with("s3a://") {
        (!host).then_some("no bucket: write `s3://BUCKET` or `s3://BUCKET/PREFIX`")
    } else if remote.starts_with("file:///") {
        let absolute = parsed.as_ref().is_some_and(|u| u.to_file_path().is_ok());
        (!absolute).then_some("not an absolute directory path")
    } else if remote.starts_with("file:") {
        Some("a `file:` remote is written `file:///ABSOLUTE/PATH`, with three slashes")
    } else {
        Some("not an `http://`, `https://`, `s3://` or `file:///` URL")
    }
}

/// A schema path, normalised; None (and an error) when it leaves the project.
fn schema_path(
    schema: &str,
    span: &Span,
    contain: &mut Containment,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let norm = normalize(schema);
    let problem = if schema.starts_with('/') {
        Some(PathProblem::Absolute)
    } else {
        contain.check(&norm, true).err()
    };
    match problem {
        Some(p) => {
            errors.push(path_error("schema", schema, span, &p.describe()));
            None
        }
        None => Some(norm),
    }
}

/// What kind of special file `path` is (following symlinks), or None for a regular
/// file, a directory or nothing at all.
fn special_file(path: &Path) -> Option<&'static str> {
    crate::fs::digest::special_kind(&std::fs::metadata(path).ok()?.file_type())
}

fn project_digest(sources: &Sources, overrides: &BTreeMap<String, String>) -> Digest {
    let mut h = blake3::Hasher::new();
    for f in sources.files() {
        h.update(&(f.name.len() as u64).to_le_bytes());
        h.update(f.name.as_bytes());
        h.update(&(f.text.len() as u64).to_le_bytes());
        h.update(f.text.as_bytes());
    }
    // Without overrides the digest is what it always was.
    if !overrides.is_empty() {
        h.update(b"\0overrides");
        for (name, value) in overrides {
            for s in [name, value] {
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    Digest(*h.finalize().as_bytes())
}

/// `phase` or `phase[a=x,b=y]`.
pub fn instance_name(phase: &str, matrix: &BTreeMap<String, String>) -> String {
    if matrix.is_empty() {
        return phase.to_owned();
    }
    let parts: Vec<String> = matrix.iter().map(|(a, v)| format!("{a}={v}")).collect();
    format!("{phase}[{}]", parts.join(","))
}

fn path_error(what: &str, path: &str, span: &Span, why: &str) -> ConfigError {
    ConfigError::new(
        ErrorKind::PathEscapes,
        format!("{what} `{path}` is not inside the project"),
    )
    .at(span, why.to_owned())
    .help("paths are relative to the project root and must stay inside it")
}

fn meta_error(path: &str, span: &Span, why: &str) -> ConfigError {
    ConfigError::new(
        ErrorKind::Value,
        format!("output `{path}` asks for `meta = true`, which needs one file"),
    )
    .at(span, why.to_owned())
    .help("`meta` describes one file: remove it here, or declare the file itself as an output")
}

fn check_env_name(name: &str, span: &Span, errors: &mut Vec<ConfigError>) {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        errors.push(
            ConfigError::new(
                ErrorKind::Value,
                format!("invalid environment variable name `{name}`"),
            )
            .at(span, "not a variable name")
            .help("names use letters, digits and `_`, and do not start with a digit"),
        );
    }
}

fn duration(
    t: &Spanned<String>,
    file: FileId,
    key: &str,
    report: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<Duration> {
    match humantime::parse_duration(t.get_ref()) {
        Ok(d) => Some(d),
        Err(e) => {
            if report {
                errors.push(
                    ConfigError::new(
                        ErrorKind::Value,
                        format!("invalid duration `{}` in `{key}`: {e}", t.get_ref()),
                    )
                    .at(&Span::new(file, t.span()), "invalid duration")
                    .help("write durations like `500ms`, `30s`, `10m` or `1h 30m`"),
                );
            }
            None
        }
    }
}

fn deps(
    list: &[Spanned<String>],
    file: FileId,
    names: &[&str],
    broken: &BTreeSet<String>,
    me: &str,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, Span)> {
    let mut out: Vec<(String, Span)> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for d in list {
        let span = Span::new(file, d.span());
        let name = d.get_ref();
        // Repeats are reported by `repeated`; the first mention stands for all.
        if !seen.insert(name) || broken.contains(name) {
            continue;
        }
        if names.binary_search(&name.as_str()).is_err() {
            let err = ConfigError::new(
                ErrorKind::UnknownDependency,
                format!("phase `{me}` {key} `{name}`, which is not a phase"),
            )
            .at(&span, "unknown phase");
            let known = names.iter().filter(|n| **n != me).copied();
            errors.push(match did_you_mean(name, known) {
                Some(s) => err.help(format!("did you mean `{s}`?")),
                None => err.help(format!(
                    "declare `[phase.{name}]`, or remove it from `{key}`"
                )),
            });
            continue;
        }
        out.push((name.clone(), span));
    }
    out
}

/// Reports every entry of a phase's `key` list equal to an earlier one: a repeat changes
/// nothing, so it is most likely a slip (a name meant to be another).
fn repeated<'a>(
    items: impl IntoIterator<Item = (&'a str, Span)>,
    me: &str,
    key: &str,
    errors: &mut Vec<ConfigError>,
) {
    let mut first: BTreeMap<&str, Span> = BTreeMap::new();
    for (item, span) in items {
        match first.get(item) {
            Some(at) => errors.push(
                ConfigError::new(
                    ErrorKind::Value,
                    format!("phase `{me}` lists `{item}` twice in `{key}`"),
                )
                .at(&span, "listed again here")
                .also(at, "first listed here")
                .help(format!("remove the second `{item}` from `{key}`")),
            ),
            None => {
                first.insert(item, span);
            }
        }
    }
}

fn matrix_axes(
    lp: &LoadedPhase,
    vars: &BTreeMap<String, RawVar>,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, Vec<String>)> {
    let mut axes = Vec::new();
    for (axis, values) in &lp.raw.matrix {
        let span = Span::new(lp.file, values.span());
        let list = match values.get_ref() {
            RawAxis::List(l) => l.clone(),
            RawAxis::Reference(r) => {
                let name = r
                    .trim()
                    .strip_prefix("{vars.")
                    .and_then(|s| s.strip_suffix('}'));
                match name.and_then(|n| vars.get(n).map(|v| (n, v))) {
                    Some((_, RawVar::List(l))) => l.clone(),
                    Some((_, RawVar::One(s))) => vec![s.clone()],
                    None => {
                        let err = ConfigError::new(
                            ErrorKind::Placeholder,
                            format!(
                                "matrix axis `{axis}` refers to `{r}`, which is not a variable"
                            ),
                        )
                        .at(&span, "expected a list or `{vars.NAME}`");
                        let help = match name {
                            Some(n) => match did_you_mean(n, vars.keys().map(String::as_str)) {
                                Some(s) => format!("did you mean `{{vars.{s}}}`?"),
                                None => format!("declare `{n} = [...]` under `[vars]`"),
                            },
                            None => "write a list such as `[\"fr\", \"de\"]` or a reference such as `\"{vars.langs}\"`".to_owned(),
                        };
                        errors.push(err.help(help));
                        continue;
                    }
                }
            }
        };
        if !axis_name_ok(axis) {
            errors.push(
                ConfigError::new(
                    ErrorKind::Value,
                    format!("invalid matrix axis name `{axis}`"),
                )
                .at(&span, "invalid axis name")
                .help("axis names use letters, digits, `_` and `-`"),
            );
            continue;
        }
        if list.is_empty() {
            errors.push(
                ConfigError::new(
                    ErrorKind::Value,
                    format!("matrix axis `{axis}` has no values"),
                )
                .at(&span, "empty axis")
                .help("give at least one value, or remove the axis"),
            );
            continue;
        }
        let mut seen = BTreeSet::new();
        for v in &list {
            if v.is_empty() || v.contains([',', '=', '[', ']', '/']) || !seen.insert(v) {
                errors.push(
                    ConfigError::new(
                        ErrorKind::Value,
                        format!("invalid or repeated value `{v}` on matrix axis `{axis}`"),
                    )
                    .at(&span, "bad value")
                    .help("values must be unique and non-empty, without `,` `=` `[` `]` or `/`"),
                );
            }
        }
        axes.push((axis.clone(), list));
    }
    axes
}

/// Most instances one phase's matrix may make.
pub const MAX_PHASE_INSTANCES: u64 = 100_000;
/// Most instances a whole project may have.
pub const MAX_INSTANCES: u64 = 1_000_000;

/// How many instances `axes` make (the product of their lengths), None on overflow.
fn instance_count(axes: &[(String, Vec<String>)]) -> Option<u64> {
    axes.iter().try_fold(1u64, |n, (_, values)| {
        n.checked_mul(u64::try_from(values.len()).ok()?)
    })
}

/// The span of a phase's matrix axes (from the first value to the last), or of the
/// phase name when the matrix is empty.
fn matrix_span(lp: &LoadedPhase) -> Span {
    let start = lp.raw.matrix.values().map(|v| v.span().start).min();
    let end = lp.raw.matrix.values().map(|v| v.span().end).max();
    match (start, end) {
        (Some(s), Some(e)) => Span::new(lp.file, s..e),
        _ => lp.name_span.clone(),
    }
}

fn axis_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn cross_product(axes: &[(String, Vec<String>)]) -> Vec<BTreeMap<String, String>> {
    let mut out = vec![BTreeMap::new()];
    for (axis, values) in axes {
        let mut next = Vec::with_capacity(out.len() * values.len());
        for m in &out {
            for v in values {
                let mut m2 = m.clone();
                m2.insert(axis.clone(), v.clone());
                next.push(m2);
            }
        }
        out = next;
    }
    out
}

fn check_duplicate_outputs(
    skeletons: &[(String, String, BTreeMap<String, String>)],
    outputs: &[Vec<Output>],
    spans: &[Vec<Span>],
    errors: &mut Vec<ConfigError>,
) {
    // path -> (instance, span, dir)
    let mut seen: BTreeMap<&str, (usize, &Span, bool)> = BTreeMap::new();
    let mut reported = BTreeSet::new();
    for (i, outs) in outputs.iter().enumerate() {
        for (o, span) in outs.iter().zip(&spans[i]) {
            if let Some((j, first, _)) = seen.get(o.path.as_str()) {
                if *j == i {
                    // One phase lists the path twice; reported once, for its first
                    // instance, as `needs` and `inputs` repeats are.
                    if reported.insert((skeletons[i].1.clone(), o.path.clone())) {
                        errors.push(
                            ConfigError::new(
                                ErrorKind::Value,
                                format!(
                                    "phase `{}` lists `{}` twice in `outputs`",
                                    skeletons[i].1, o.path
                                ),
                            )
                            .at(span, "listed again here")
                            .also(first, "first listed here")
                            .help(format!("remove the second `{}` from `outputs`", o.path)),
                        );
                    }
                } else if skeletons[*j].1 == skeletons[i].1 && first == &span {
                    // Two instances of one phase with an output that ignores the matrix.
                    if reported.insert((skeletons[i].1.clone(), o.path.clone())) {
                        errors.push(
                            ConfigError::new(ErrorKind::DuplicateOutput, format!("instances `{}` and `{}` both declare output `{}`", skeletons[*j].0, skeletons[i].0, o.path))
                                .at(span, "the same path for every matrix value")
                                .help("put `{matrix.AXIS}` in the output path so each instance writes its own file"),
                        );
                    }
                } else if reported.insert((skeletons[i].1.clone(), o.path.clone())) {
                    let mut e = ConfigError::new(
                        ErrorKind::DuplicateOutput,
                        format!(
                            "output `{}` is declared by both `{}` and `{}`",
                            o.path, skeletons[*j].0, skeletons[i].0
                        ),
                    )
                    .at(span, "declared again here")
                    .help("each output must have exactly one producing phase; rename one of them");
                    if first.file == span.file {
                        e = e.also(first, "first declared here");
                    }
                    errors.push(e);
                }
                continue;
            }
            seen.insert(&o.path, (i, span, o.dir));
        }
    }
    // A sidecar is written where a declared output would be: one would overwrite the other.
    for (i, outs) in outputs.iter().enumerate() {
        for (o, span) in outs.iter().zip(&spans[i]) {
            if !o.meta {
                continue;
            }
            let sidecar = crate::model::meta::sidecar_path(&o.path);
            if let Some((j, other, _)) = seen.get(sidecar.as_str()) {
                let mut e = ConfigError::new(
                    ErrorKind::DuplicateOutput,
                    format!(
                        "output `{sidecar}` of `{}` is where orch writes the sidecar of `{}` of `{}`",
                        skeletons[*j].0, o.path, skeletons[i].0
                    ),
                )
                .at(other, "declared here")
                .help(format!("rename `{sidecar}`, or remove `meta = true` from `{}`", o.path));
                if other.file == span.file {
                    e = e.also(span, "`meta = true` here");
                }
                errors.push(e);
            }
        }
    }
    // An output inside another instance's directory output.
    for (path, (i, span, _)) in &seen {
        let mut cur = *path;
        while let Some(pos) = cur.rfind('/') {
            cur = &cur[..pos];
            if let Some((j, dspan, true)) = seen.get(cur)
                && j != i
            {
                errors.push(
                    ConfigError::new(
                        ErrorKind::DuplicateOutput,
                        format!(
                            "output `{path}` of `{}` lies inside directory output `{cur}/` of `{}`",
                            skeletons[*i].0, skeletons[*j].0
                        ),
                    )
                    .at(span, "inside another phase's directory")
                    .also(dspan, "directory output declared here")
                    .help("move one of the outputs so no two phases write the same files"),
                );
            }
        }
    }
}

/// Expansion context shared by templates of one instance.
struct Ctx<'a> {
    phase: &'a str,
    matrix: &'a BTreeMap<String, String>,
    vars: &'a BTreeMap<String, RawVar>,
    sources: &'a Sources,
    span: &'a Span,
}

impl<'a> Ctx<'a> {
    fn new(
        phase: &'a str,
        matrix: &'a BTreeMap<String, String>,
        vars: &'a BTreeMap<String, RawVar>,
        sources: &'a Sources,
        span: &'a Span,
    ) -> Ctx<'a> {
        Ctx {
            phase,
            matrix,
            vars,
            sources,
            span,
        }
    }

    /// Best-effort span of `hole` inside the template's source text.
    fn hole_span(&self, hole: &str) -> Span {
        let text = &self.sources.get(self.span.file).text;
        let range = self.span.range.clone();
        if let Some(slice) = text.get(range.clone())
            && let Some(pos) = slice.find(hole)
        {
            return Span::new(
                self.span.file,
                range.start + pos..range.start + pos + hole.len(),
            );
        }
        self.span.clone()
    }

    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).map(|v| match v {
            RawVar::One(s) => s.clone(),
            RawVar::List(l) => l.join(" "),
        })
    }

    fn unknown(&self, hole: &str, name: &str, allowed: &[&str], errors: &mut Vec<ConfigError>) {
        let span = self.hole_span(hole);
        let mut candidates: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        candidates.extend(self.vars.keys().map(|k| format!("vars.{k}")));
        candidates.extend(self.matrix.keys().map(|k| format!("matrix.{k}")));
        let err = ConfigError::new(
            ErrorKind::Placeholder,
            format!("unknown placeholder `{{{name}}}` in phase `{}`", self.phase),
        )
        .at(&span, "unknown placeholder");
        let help = match did_you_mean(name, candidates.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{{{s}}}`? write `{{{{` for a literal `{{`"),
            None => {
                "write `{{` for a literal `{`; placeholders are listed in the Orchfile reference"
                    .to_owned()
            }
        };
        errors.push(err.help(help));
    }

    /// `{phase}`, `{vars.X}`, `{matrix.X}`; None when `name` is none of them.
    fn simple(&self, name: &str) -> Option<Result<String, String>> {
        if name == "phase" {
            return Some(Ok(self.phase.to_owned()));
        }
        if let Some(v) = name.strip_prefix("vars.") {
            return Some(
                self.var(v)
                    .ok_or_else(|| format!("variable `{v}` is not declared in `[vars]`")),
            );
        }
        if let Some(a) = name.strip_prefix("matrix.") {
            return Some(
                self.matrix
                    .get(a)
                    .cloned()
                    .ok_or_else(|| format!("phase `{}` has no matrix axis `{a}`", self.phase)),
            );
        }
        None
    }
}

fn template_pieces(text: &str, ctx: &Ctx<'_>, errors: &mut Vec<ConfigError>) -> Option<Vec<Piece>> {
    match template::parse(text) {
        Ok(p) => Some(p),
        Err(template::Unclosed(at)) => {
            let tail: String = text[at..].chars().take(12).collect();
            errors.push(
                ConfigError::new(
                    ErrorKind::Placeholder,
                    format!("unclosed `{{` in phase `{}`", ctx.phase),
                )
                .at(&ctx.hole_span(&tail), "this `{` has no matching `}`")
                .help("close the placeholder, or write `{{` for a literal `{`"),
            );
            None
        }
    }
}

fn bad_hole(ctx: &Ctx<'_>, hole: &str, message: String, errors: &mut Vec<ConfigError>) {
    errors.push(
        ConfigError::new(ErrorKind::Placeholder, message)
            .at(&ctx.hole_span(hole), "cannot expand")
            .help("declare what the placeholder refers to, or write `{{` for a literal `{`"),
    );
}

/// Expands an output path: only `{phase}`, `{vars.X}` and `{matrix.X}`.
fn expand_simple(
    text: &str,
    ctx: &Ctx<'_>,
    key: &str,
    shard_ok: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let pieces = template_pieces(text, ctx, errors)?;
    let mut out = String::new();
    let mut ok = true;
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(&t),
            Piece::Hole(name, range) => {
                let hole = &text[range];
                match ctx.simple(&name) {
                    Some(Ok(v)) => out.push_str(&v),
                    Some(Err(msg)) => {
                        bad_hole(ctx, hole, msg, errors);
                        ok = false;
                    }
                    // Kept as written: each shard fills them in when it runs.
                    None if shard_ok && (name == "shard.key" || name == "shard.index") => {
                        out.push_str(hole)
                    }
                    None => {
                        let err = ConfigError::new(
                            ErrorKind::Placeholder,
                            format!("placeholder `{hole}` cannot be used in `{key}`"),
                        )
                        .at(&ctx.hole_span(hole), "not allowed here")
                        .help(format!(
                            "`{key}` may use `{{phase}}`, `{{vars.NAME}}` and `{{matrix.AXIS}}`"
                        ));
                        errors.push(err);
                        ok = false;
                    }
                }
            }
        }
    }
    ok.then_some(out)
}

/// Expands an input glob: `{phase}`, `{vars.X}` and `{matrix.X}` are replaced and every
/// other `{...}` is left alone, because `{a,b}` is glob alternation.
fn expand_input_pattern(
    text: &str,
    ctx: &Ctx<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    let mut ok = true;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                let hole = &rest[start..start + end + 2];
                match ctx.simple(name) {
                    Some(Ok(v)) => out.push_str(&v),
                    Some(Err(msg)) => {
                        bad_hole(ctx, hole, msg, errors);
                        ok = false;
                    }
                    None => out.push_str(hole),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    ok.then_some(out)
}

/// What `run` placeholders of one instance refer to.
struct RunEnv<'a> {
    outputs: &'a [Output],
    /// False when one of the declared outputs was already reported as invalid.
    outputs_complete: bool,
    deps: &'a [Dep],
    skeletons: &'a [(String, String, BTreeMap<String, String>)],
    all_outputs: &'a [Vec<Output>],
    phase: &'a Phase,
    /// Where the command runs: path placeholders are written relative to it.
    cwd: &'a str,
    /// The instance's sharding, which `{shard.*}` placeholders need.
    shard: Option<&'a ShardSpec>,
    /// A `shard` table other than `full` is declared (even if invalid).
    shard_declared: bool,
    /// Phases whose shards write their own outputs (no single output to name).
    merge_none_phases: &'a BTreeSet<&'a str>,
    /// The dependencies of every instance, for the outputs of a group.
    all_deps: &'a [Vec<Dep>],
    /// Phases without `run`: their outputs are those of their dependencies.
    groups: &'a BTreeSet<&'a str>,
    /// With `merge = "none"`: each shard's output templates.
    shard_outputs: &'a [Output],
    /// The phase declares inputs or a shard source.
    has_inputs: bool,
    /// The phase declares a `depfile` (valid or not).
    has_depfile: bool,
    /// Phases declared with errors already reported: a reference to one is no new error.
    broken: &'a BTreeSet<String>,
}

fn expand_run(
    text: &str,
    ctx: &Ctx<'_>,
    env: &RunEnv<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<CmdPiece>> {
    let (my_outputs, my_deps, skeletons, phase) = (env.outputs, env.deps, env.skeletons, env.phase);
    let rel = |p: &str| relative_to(env.cwd, p);
    let pieces = template_pieces(text, ctx, errors)?;
    let mut out: Vec<CmdPiece> = Vec::new();
    let mut ok = true;
    let push_text = |out: &mut Vec<CmdPiece>, s: &str| match out.last_mut() {
        Some(CmdPiece::Text(t)) => t.push_str(s),
        _ => out.push(CmdPiece::Text(s.to_owned())),
    };
    const BUILTIN: &[&str] = &["inputs", "outputs", "output", "depfile", "phase"];
    for p in pieces {
        match p {
            Piece::Text(t) => push_text(&mut out, &t),
            Piece::Hole(name, range) => {
                let hole = &text[range];
                if let Some(r) = ctx.simple(&name) {
                    match r {
                        Ok(v) => push_text(&mut out, &v),
                        Err(msg) => {
                            bad_hole(ctx, hole, msg, errors);
                            ok = false;
                        }
                    }
                    continue;
                }
                let merge_none = env.merge_none_phases.contains(ctx.phase);
                match name.as_str() {
                    "inputs" if env.has_inputs => out.push(CmdPiece::Inputs),
                    "inputs" => {
                        zero_paths(
                            ctx,
                            hole,
                            format!(
                                "`{{inputs}}` in phase `{}`, which declares no inputs, would expand to nothing",
                                ctx.phase
                            ),
                            "declare the files the command reads in `inputs`, or remove `{inputs}`",
                            errors,
                        );
                        ok = false;
                    }
                    "depfile" if env.has_depfile => out.push(CmdPiece::Depfile),
                    "depfile" => {
                        bad_hole(
                            ctx,
                            hole,
                            format!(
                                "`{{depfile}}` names the dependency file, but phase `{}` declares no `depfile`",
                                ctx.phase
                            ),
                            errors,
                        );
                        ok = false;
                    }
                    "outputs" | "output" if merge_none => {
                        let one = name == "output";
                        if one && env.shard_outputs.len() == 1 {
                            out.push(CmdPiece::ShardOutput);
                        } else if !one && !env.shard_outputs.is_empty() {
                            out.push(CmdPiece::ShardOutputs);
                        } else if !env.outputs_complete {
                            ok = false;
                        } else if one {
                            bad_hole(
                                ctx,
                                hole,
                                format!(
                                    "`{{output}}` needs exactly one output per shard, but phase `{}` declares {}",
                                    ctx.phase,
                                    env.shard_outputs.len()
                                ),
                                errors,
                            );
                            ok = false;
                        } else {
                            zero_paths(
                                ctx,
                                hole,
                                format!(
                                    "`{{outputs}}` in phase `{}`, which declares no outputs, would expand to nothing",
                                    ctx.phase
                                ),
                                "declare the files each shard writes in `outputs` (with `{shard.key}` in the path), or remove `{outputs}`",
                                errors,
                            );
                            ok = false;
                        }
                    }
                    "outputs" if my_outputs.is_empty() => {
                        if env.outputs_complete {
                            zero_paths(
                                ctx,
                                hole,
                                format!(
                                    "`{{outputs}}` in phase `{}`, which declares no outputs, would expand to nothing",
                                    ctx.phase
                                ),
                                "declare the files the command writes in `outputs`, or remove `{outputs}`",
                                errors,
                            );
                        }
                        ok = false;
                    }
                    "outputs" => push_text(
                        &mut out,
                        &shell_join(
                            my_outputs
                                .iter()
                                .map(|o| rel(&o.path))
                                .collect::<Vec<_>>()
                                .iter()
                                .map(String::as_str),
                        ),
                    ),
                    "output" => {
                        if my_outputs.len() == 1 {
                            push_text(&mut out, &template::shell_quote(&rel(&my_outputs[0].path)));
                        } else if !env.outputs_complete {
                            ok = false;
                        } else {
                            bad_hole(
                                ctx,
                                hole,
                                format!(
                                    "`{{output}}` needs exactly one output, but phase `{}` declares {}",
                                    ctx.phase,
                                    my_outputs.len()
                                ),
                                errors,
                            );
                            ok = false;
                        }
                    }
                    n if n.starts_with("needs.") => {
                        let parts: Vec<&str> = n.splitn(3, '.').collect();
                        let dep = parts.get(1).copied().unwrap_or("");
                        if parts.len() != 3 || parts[2] != "outputs" {
                            bad_hole(
                                ctx,
                                hole,
                                format!(
                                    "unknown placeholder `{hole}`; the form is `{{needs.PHASE.outputs}}`"
                                ),
                                errors,
                            );
                            ok = false;
                            continue;
                        }
                        if env.merge_none_phases.contains(dep) {
                            bad_hole(ctx, hole, merge_none_message(hole, dep, None), errors);
                            ok = false;
                            continue;
                        }
                        let declared = phase
                            .needs
                            .iter()
                            .chain(&phase.after)
                            .any(|(d, _)| d == dep);
                        if !declared && env.broken.contains(dep) {
                            // Its own error is reported; its outputs are simply unknown.
                            ok = false;
                            continue;
                        }
                        if !declared {
                            bad_hole(
                                ctx,
                                hole,
                                format!(
                                    "`{hole}` refers to `{dep}`, which phase `{}` does not list in `needs` or `after`",
                                    ctx.phase
                                ),
                                errors,
                            );
                            ok = false;
                            continue;
                        }
                        let direct: Vec<usize> = my_deps
                            .iter()
                            .filter(|d| !d.implied && skeletons[d.upstream].1 == dep)
                            .map(|d| d.upstream)
                            .collect();
                        match dependency_outputs(&direct, env) {
                            Err(inner) => {
                                bad_hole(
                                    ctx,
                                    hole,
                                    merge_none_message(hole, &inner, Some(dep)),
                                    errors,
                                );
                                ok = false;
                            }
                            Ok(paths) if paths.is_empty() => {
                                let why = if direct.is_empty() {
                                    format!("no instance of `{dep}` pairs with this one")
                                } else if env.groups.contains(dep) {
                                    format!(
                                        "group `{dep}` and the phases it depends on declare no outputs"
                                    )
                                } else {
                                    format!("`{dep}` declares no outputs")
                                };
                                zero_paths(
                                    ctx,
                                    hole,
                                    format!("`{hole}` would expand to nothing: {why}"),
                                    "declare the outputs of the phase it refers to, or remove the placeholder",
                                    errors,
                                );
                                ok = false;
                            }
                            Ok(paths) => {
                                let rel: Vec<String> = paths.iter().map(|p| rel(p)).collect();
                                push_text(&mut out, &shell_join(rel.iter().map(String::as_str)));
                            }
                        }
                    }
                    n if n.starts_with("shard.") => {
                        let hole_kind = ShardHole::parse(&n["shard.".len()..]);
                        match (env.shard, hole_kind) {
                            // The `shard` table itself was reported invalid.
                            (None, _) if env.shard_declared => ok = false,
                            (None, _) => {
                                bad_hole(
                                    ctx,
                                    hole,
                                    format!(
                                        "`{hole}` needs a `shard` table with a `files`, `chunk` or `group` strategy"
                                    ),
                                    errors,
                                );
                                ok = false;
                            }
                            (Some(_), None) => {
                                bad_hole(
                                    ctx,
                                    hole,
                                    format!(
                                        "unknown placeholder `{hole}`; shards have `{{shard.input}}`, `{{shard.output}}`, `{{shard.index}}`, `{{shard.count}}` and `{{shard.key}}`"
                                    ),
                                    errors,
                                );
                                ok = false;
                            }
                            (Some(spec), Some(ShardHole::Output)) if spec.merge == Merge::None => {
                                bad_hole(ctx, hole, "with `merge = \"none\"` shards write their own outputs; `{shard.output}` is for shards merged into one output; write `{output}` or `{outputs}` for the shard's own".to_owned(), errors);
                                ok = false;
                            }
                            (Some(_), Some(h)) => out.push(CmdPiece::Shard(h)),
                        }
                    }
                    _ => {
                        ctx.unknown(hole, &name, BUILTIN, errors);
                        ok = false;
                    }
                }
            }
        }
    }
    ok.then_some(out)
}

/// The outputs of `upstreams`, in order, where a group (a phase without `run`) stands
/// for the outputs of its own dependencies, recursively; or the phase reached through a
/// group whose shards write their own outputs, which no fixed list can name.
fn dependency_outputs(upstreams: &[usize], env: &RunEnv<'_>) -> Result<Vec<String>, String> {
    let mut seen: BTreeSet<usize> = BTreeSet::new();
    let mut paths: Vec<String> = Vec::new();
    let mut stack: Vec<usize> = upstreams.iter().rev().copied().collect();
    while let Some(u) = stack.pop() {
        if !seen.insert(u) {
            continue;
        }
        let phase = env.skeletons[u].1.as_str();
        if env.merge_none_phases.contains(phase) {
            return Err(phase.to_owned());
        }
        if env.groups.contains(phase) {
            stack.extend(env.all_deps[u].iter().rev().map(|d| d.upstream));
        } else {
            paths.extend(env.all_outputs[u].iter().map(|o| o.path.clone()));
        }
    }
    Ok(paths)
}

/// Why `{needs.X.outputs}` cannot name the outputs of merge-none phase `phase`
/// (reached through group `group`, if any).
fn merge_none_message(hole: &str, phase: &str, group: Option<&str>) -> String {
    let via = group.map_or_else(String::new, |g| format!(" (a dependency of group `{g}`)"));
    format!(
        "`{hole}`: the shards of `{phase}`{via} write their own outputs (`merge = \"none\"`), so there is no fixed list to insert; match their files with an input glob instead (their output template with `*` for each `{{shard.*}}`, e.g. `inputs = [\"build/obj/*.o\"]`) and write `{{inputs}}`"
    )
}

/// A placeholder that would expand to no paths: a command such as `ar rcs lib.a {x}`
/// would then run without its operands and may still succeed.
fn zero_paths(
    ctx: &Ctx<'_>,
    hole: &str,
    message: String,
    help: &str,
    errors: &mut Vec<ConfigError>,
) {
    errors.push(
        ConfigError::new(ErrorKind::Placeholder, message)
            .at(&ctx.hole_span(hole), "expands to no paths")
            .help(help.to_owned()),
    );
}

/// Whether the phase's shards write their own outputs (`merge = "none"`).
fn merge_none_phase(lp: &LoadedPhase) -> bool {
    lp.raw.shard.as_ref().is_some_and(|s| {
        let s = s.get_ref();
        s.strategy.as_deref().unwrap_or("full") != "full" && s.merge.as_deref() == Some("none")
    })
}

/// Validates a `shard` table; None for `full` (one piece) or when it is invalid.
fn shard_spec(
    raw: &RawShard,
    ctx: &Ctx<'_>,
    outputs: &[Output],
    contain: &mut Containment,
    errors: &mut Vec<ConfigError>,
) -> Option<ShardSpec> {
    let span = ctx.span;
    let strategy = raw.strategy.as_deref().unwrap_or("full");
    let err = |message: String, label: &str, help: &str| {
        ConfigError::new(ErrorKind::Value, message)
            .at(span, label.to_owned())
            .help(help.to_owned())
    };
    let phase = ctx.phase;
    if strategy == "full" {
        return None;
    }
    if !matches!(strategy, "files" | "chunk" | "group") {
        errors.push(err(
            format!("unknown shard strategy `{strategy}`"),
            "unknown strategy",
            "use `full`, `files`, `chunk` or `group`",
        ));
        return None;
    }
    let merge = match raw.merge.as_deref() {
        None | Some("concat") => Merge::Concat,
        Some("none") => Merge::None,
        Some(other) => {
            errors.push(err(
                format!("unknown merge mode `{other}`"),
                "unknown merge mode",
                "use `merge = \"concat\"` (default) or `merge = \"none\"`",
            ));
            return None;
        }
    };
    let parallel = match raw.parallel {
        Some(0) => {
            errors.push(err(
                "`shard.parallel` must be at least 1".to_owned(),
                "zero shards at once",
                "remove `parallel` to let `-j` decide",
            ));
            return None;
        }
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => None,
    };
    let Some(source) = raw.source.as_deref() else {
        errors.push(err(
            format!("shard strategy `{strategy}` of phase `{phase}` needs a `source`"),
            "no `source`",
            "name the file to split (`chunk`, `group`) or a glob of files (`files`)",
        ));
        return None;
    };
    let expanded = expand_input_pattern(source, ctx, errors)?;
    let norm = normalize(&expanded);
    if expanded.starts_with('/') || norm.is_empty() || norm.split('/').any(|c| c == "..") {
        errors.push(path_error(
            "shard source",
            &expanded,
            span,
            "the source must be inside the project",
        ));
        return None;
    }
    let plain = is_plain(&norm);
    let literal: String = norm
        .split('/')
        .take_while(|c| !c.contains(['*', '?', '[', '{', '\\']))
        .collect::<Vec<_>>()
        .join("/");
    // A plain source is read as named, so it may not be a symlink leading out either.
    if !literal.is_empty()
        && let Err(problem) = contain.check(&literal, true)
    {
        errors.push(path_error(
            "shard source",
            &expanded,
            span,
            &problem.describe(),
        ));
        return None;
    }
    let strategy = match strategy {
        "files" => {
            if let Err(e) = globset::GlobBuilder::new(&norm)
                .literal_separator(true)
                .build()
            {
                errors.push(err(
                    format!("invalid shard source pattern `{expanded}`: {}", e.kind()),
                    "invalid glob",
                    "use `*`, `**`, `?`, `[...]` or `{a,b}` globs",
                ));
                return None;
            }
            Strategy::Files { pattern: norm }
        }
        other => {
            if !plain {
                errors.push(err(format!("the `{other}` source `{expanded}` must be one file, not a glob"), "a glob", "name one JSON Lines file, or use `strategy = \"files\"` for one shard per file"));
                return None;
            }
            if other == "chunk" {
                let Some(size) = raw.size.filter(|s| *s > 0) else {
                    let (message, label) = match raw.size {
                        Some(_) => (
                            format!("`shard.size` of phase `{phase}` must be at least 1"),
                            "zero records per shard",
                        ),
                        None => (
                            format!(
                                "shard strategy `chunk` of phase `{phase}` needs `size`, the records per shard"
                            ),
                            "no `size`",
                        ),
                    };
                    errors.push(err(message, label, "add e.g. `size = 1000`"));
                    return None;
                };
                Strategy::Chunk {
                    source: norm,
                    size: usize::try_from(size).unwrap_or(usize::MAX),
                }
            } else {
                let Some(key) = raw.key.as_deref().filter(|k| !k.is_empty()) else {
                    errors.push(err(format!("shard strategy `group` of phase `{phase}` needs `key`, the field to group records by"), "no `key`", "add e.g. `key = \"route_id\"`"));
                    return None;
                };
                Strategy::Group {
                    source: norm,
                    key: key.to_owned(),
                }
            }
        }
    };
    if merge == Merge::Concat && (outputs.len() != 1 || outputs[0].dir) {
        errors.push(err(
            format!("the shards of phase `{phase}` are merged into one output, but it declares {}", if outputs.len() == 1 { "a directory".to_owned() } else { outputs.len().to_string() }),
            "needs exactly one file output",
            "declare one output file for the merged result, or set `merge = \"none\"` and put `{shard.key}` in each output",
        ));
        return None;
    }
    Some(ShardSpec {
        strategy,
        parallel,
        merge,
    })
}

/// Validates a `depfile` template: expanded like an output path (`{phase}`,
/// `{vars.NAME}`, `{matrix.AXIS}`; per shard also `{shard.key}` / `{shard.index}`, one of
/// which a sharded phase must use so its shards do not share one file), inside the
/// project, outside `.orch/`, and none of the phase's outputs, inputs or configuration
/// files. The depfile is not an output: orch removes a stale one before the command runs
/// and reads it after a success.
fn depfile_path(
    text: &str,
    ctx: &Ctx<'_>,
    sharded: bool,
    outputs: &[Output],
    conflicts: &OutputConflicts<'_>,
    globs: &mut BTreeMap<String, Option<globset::GlobMatcher>>,
    contain: &mut Containment,
) -> Result<String, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let Some(expanded) = expand_simple(text, ctx, "depfile", sharded, &mut errors) else {
        return Err(errors);
    };
    let span = ctx.span;
    let norm = normalize(&expanded);
    let bad = |why: &str| vec![path_error("depfile", &expanded, span, why)];
    if sharded && !expanded.contains("{shard.") {
        return Err(vec![
            ConfigError::new(
                ErrorKind::Placeholder,
                format!(
                    "depfile `{expanded}` of sharded phase `{}` is the same for every shard",
                    ctx.phase
                ),
            )
            .at(span, "no `{shard.key}` or `{shard.index}` in it")
            .help("put `{shard.key}` or `{shard.index}` in the path, e.g. `build/obj/{shard.key}.d`, so each shard writes its own"),
        ]);
    }
    if expanded.starts_with('/') {
        return Err(bad(&PathProblem::Absolute.describe()));
    }
    if norm.is_empty() || expanded.ends_with('/') {
        return Err(bad("a depfile is a file inside the project"));
    }
    if norm == ".orch" || norm.starts_with(".orch/") {
        return Err(bad(
            "`.orch/` is orch's own; write the depfile beside the outputs",
        ));
    }
    // Only the directories on the way: the file is the command's to write.
    let literal: String = norm
        .split('/')
        .take_while(|c| !c.contains('{'))
        .collect::<Vec<_>>()
        .join("/");
    let whole = literal.split('/').count() == norm.split('/').count();
    if let Err(problem) = contain.check(if whole { &norm } else { &literal }, !whole) {
        return Err(bad(&problem.describe()));
    }
    if let Some(o) = outputs
        .iter()
        .find(|o| o.path == norm || (o.dir && norm.starts_with(&format!("{}/", o.path))))
    {
        return Err(vec![
            ConfigError::new(
                ErrorKind::OutputConflict,
                format!("depfile `{expanded}` is the output `{}` of phase `{}`", o.path, ctx.phase),
            )
            .at(span, "orch removes it before the command runs")
            .help("the depfile lists what the command read; give it a path of its own, beside the outputs"),
        ]);
    }
    let as_output = Output {
        path: norm.clone(),
        dir: false,
        schema: None,
        meta: false,
    };
    if !norm.contains('{')
        && let Some(why) = conflicts.find(&as_output, globs)
    {
        return Err(vec![
            ConfigError::new(ErrorKind::OutputConflict, format!("depfile `{expanded}` {why}"))
                .at(span, "orch removes it before the command runs")
                .help("the depfile lists what the command read; give it a path of its own, beside the outputs"),
        ]);
    }
    Ok(norm)
}

/// The valid `[executor.*]` tables; an invalid one is reported, left out and added to
/// `broken`, so phases naming it are not reported again.
fn executors(
    raw: &BTreeMap<String, LoadedExecutor>,
    broken: &mut BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Executor> {
    let mut out = BTreeMap::new();
    for (name, le) in raw {
        let file = le.file;
        let r = &le.raw;
        let before = errors.len();
        let kind = match &r.kind {
            None => {
                errors.push(
                    ConfigError::new(ErrorKind::Value, format!("executor `{name}` has no `kind`"))
                        .at(&le.name_span, "no `kind`")
                        .help("add `kind = \"slurm\"`, the only kind of executor orch knows"),
                );
                None
            }
            Some(k) => {
                let kind = ExecutorKind::parse(k.get_ref());
                if kind.is_none() {
                    let names = ExecutorKind::ALL.iter().map(|k| k.name());
                    let help = if k.get_ref() == LOCAL_EXECUTOR {
                        "`local` is built in and needs no table: remove this one, and phases run locally unless they name an executor".to_owned()
                    } else {
                        let hint = did_you_mean(k.get_ref(), names)
                            .map(|s| format!("did you mean `{s}`? "))
                            .unwrap_or_default();
                        format!("{hint}the only kind is `slurm`")
                    };
                    errors.push(
                        ConfigError::new(
                            ErrorKind::Value,
                            format!("unknown executor kind `{}`", k.get_ref()),
                        )
                        .at(&Span::new(file, k.span()), "unknown kind")
                        .help(help),
                    );
                }
                kind
            }
        };
        let partition = r.partition.as_ref().and_then(|p| {
            let text = p.get_ref().trim();
            if text.is_empty() || text.contains(char::is_whitespace) {
                errors.push(
                    ConfigError::new(
                        ErrorKind::Value,
                        format!("invalid partition `{}` in executor `{name}`", p.get_ref()),
                    )
                    .at(&Span::new(file, p.span()), "not a partition name")
                    .help("name one partition (`sinfo -s` lists them), or remove `partition` to use the cluster's default"),
                );
                return None;
            }
            Some(text.to_owned())
        });
        let max_jobs = match &r.max_jobs {
            None => DEFAULT_EXECUTOR_MAX_JOBS,
            Some(m) => match positive(*m.get_ref()) {
                Ok(n) => n,
                Err(why) => {
                    errors.push(
                        ConfigError::new(
                            ErrorKind::Value,
                            format!("`max_jobs` of executor `{name}` must be from 1 to {}", u32::MAX),
                        )
                        .at(&Span::new(file, m.span()), why)
                        .help(format!(
                            "`max_jobs` is how many jobs may be in flight at once; remove it for the default of {DEFAULT_EXECUTOR_MAX_JOBS}"
                        )),
                    );
                    DEFAULT_EXECUTOR_MAX_JOBS
                }
            },
        };
        if errors.len() > before {
            broken.insert(name.clone());
        } else if let Some(kind) = kind {
            out.insert(
                name.clone(),
                Executor {
                    name: name.clone(),
                    kind,
                    partition,
                    args: r.args.iter().map(|a| a.get_ref().clone()).collect(),
                    max_jobs,
                    span: le.name_span.clone(),
                },
            );
        }
    }
    out
}

/// The executor a phase names: None for `local` (or none named), else a declared one.
fn phase_executor(
    phase: &str,
    lp: &LoadedPhase,
    executors: &BTreeMap<String, Executor>,
    broken: &BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    let e = lp.raw.executor.as_ref()?;
    let name = e.get_ref();
    if name == LOCAL_EXECUTOR {
        return None;
    }
    if executors.contains_key(name) {
        return Some(name.clone());
    }
    // An executor declared with errors is reported where it is declared.
    if broken.contains(name) {
        return None;
    }
    // Those declared with errors are declared all the same: suggest them too.
    let declared: BTreeSet<&str> = executors
        .keys()
        .chain(broken)
        .map(String::as_str)
        .filter(|n| *n != LOCAL_EXECUTOR)
        .collect();
    let known: Vec<&str> = std::iter::once(LOCAL_EXECUTOR).chain(declared).collect();
    let list = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let help = match did_you_mean(name, known.iter().copied()) {
        Some(s) => format!("did you mean `{s}`? known executors: {list}"),
        None => {
            format!("declare `[executor.{name}]` with `kind = \"slurm\"`, or use one of {list}")
        }
    };
    errors.push(
        ConfigError::new(
            ErrorKind::UnknownExecutor,
            format!("phase `{phase}` names executor `{name}`, which is not declared"),
        )
        .at(&Span::new(lp.file, e.span()), "unknown executor")
        .help(help),
    );
    None
}

/// A phase's `resources`: each value checked, each bad one reported at its own span.
fn resources(
    phase: &str,
    r: &RawResources,
    file: FileId,
    errors: &mut Vec<ConfigError>,
) -> Resources {
    let cpus = r.cpus.as_ref().and_then(|c| match positive(*c.get_ref()) {
        Ok(n) => Some(n),
        Err(why) => {
            errors.push(
                ConfigError::new(
                    ErrorKind::Value,
                    format!(
                        "`resources.cpus` of phase `{phase}` must be from 1 to {}",
                        u32::MAX
                    ),
                )
                .at(&Span::new(file, c.span()), why)
                .help("give the CPUs one instance or shard needs, e.g. `cpus = 2`"),
            );
            None
        }
    });
    let mem = r.mem.as_ref().and_then(|m| match parse_mem(m.get_ref()) {
        Ok(n) => Some(n),
        Err(why) => {
            errors.push(
                ConfigError::new(
                    ErrorKind::Value,
                    format!(
                        "invalid `resources.mem` `{}` in phase `{phase}`",
                        m.get_ref()
                    ),
                )
                .at(&Span::new(file, m.span()), why.label())
                .help(why.help(m.get_ref())),
            );
            None
        }
    });
    let time = r.time.as_ref().and_then(|t| {
        let d = duration(t, file, "resources.time", true, errors)?;
        if d.is_zero() {
            errors.push(
                ConfigError::new(
                    ErrorKind::Value,
                    format!("`resources.time` of phase `{phase}` is zero"),
                )
                .at(&Span::new(file, t.span()), "no time at all")
                .help("give the time one instance or shard may take, e.g. `time = \"20m\"`, or remove `time`"),
            );
            return None;
        }
        Some(d)
    });
    Resources { cpus, mem, time }
}

/// `n` as a count of at least 1, or the label saying why it is not one.
fn positive(n: i64) -> Result<u32, &'static str> {
    match u32::try_from(n) {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("not a positive number"),
        Err(_) if n < 0 => Err("not a positive number"),
        Err(_) => Err("too large"),
    }
}

/// Why a `resources.mem` text is not a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemProblem {
    /// Not digits with an optional suffix at all.
    NotASize,
    /// A unit written as `GB`, `Gi`, `GiB` or in lower case: the number is fine, the
    /// unit is not one orch (or Slurm) spells that way.
    Unit,
    /// Zero bytes.
    Zero,
    /// More bytes than fit in 64 bits.
    TooLarge,
}

impl MemProblem {
    fn label(self) -> &'static str {
        match self {
            MemProblem::NotASize => "not a size",
            MemProblem::Unit => "unit not accepted",
            MemProblem::Zero => "zero memory",
            MemProblem::TooLarge => "too large",
        }
    }

    fn help(self, text: &str) -> String {
        match self {
            MemProblem::Unit => {
                let digits: String = text.trim().chars().take_while(char::is_ascii_digit).collect();
                let unit = text.trim()[digits.len()..].chars().next().map_or('G', |c| c.to_ascii_uppercase());
                format!("write `{digits}{unit}`: the suffix is one of `K`, `M`, `G`, `T` (powers of 1024), without `B` or `i`")
            }
            _ => "write whole digits with an optional `K`, `M`, `G` or `T` suffix (powers of 1024; no suffix is bytes), e.g. `\"4G\"`".to_owned(),
        }
    }
}

/// Bytes in `4G`, `512M`, `1048576`: whole digits and at most one of K, M, G, T (powers of
/// 1024, as Slurm reads them). `4GB`, `4Gi` and `4g` are refused rather than guessed at:
/// `max_blob` reads `GB` as 1024³, other tools as 1000³, and a request the scheduler
/// reads differently from the user fails only once the job runs.
fn parse_mem(text: &str) -> Result<u64, MemProblem> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(MemProblem::NotASize);
    }
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            let known = ["K", "M", "G", "T"];
            let first = unit.get(..1).unwrap_or_default().to_ascii_uppercase();
            let rest = unit.get(1..).unwrap_or_default().to_ascii_lowercase();
            return Err(
                if known.contains(&first.as_str()) && ["", "b", "i", "ib"].contains(&rest.as_str())
                {
                    MemProblem::Unit
                } else {
                    MemProblem::NotASize
                },
            );
        }
    };
    let n: u64 = digits.parse().map_err(|_| MemProblem::TooLarge)?;
    if n == 0 {
        return Err(MemProblem::Zero);
    }
    n.checked_mul(1u64 << shift).ok_or(MemProblem::TooLarge)
}

/// `[orch] keep_runs`: how many runs' events and logs a build keeps (default
/// [`super::DEFAULT_KEEP_RUNS`], at least 1: the run just made is always kept).
fn keep_runs(value: Option<&Spanned<i64>>, file: FileId, errors: &mut Vec<ConfigError>) -> usize {
    let Some(v) = value else {
        return super::DEFAULT_KEEP_RUNS;
    };
    match usize::try_from(*v.get_ref()) {
        Ok(n) if n >= 1 => n,
        _ => {
            errors.push(
                ConfigError::new(ErrorKind::Value, "`keep_runs` must be at least 1")
                    .at(&Span::new(file, v.span()), "not a positive number")
                    .help(format!(
                        "the run a build makes is always kept; remove `keep_runs` to keep the newest {}",
                        super::DEFAULT_KEEP_RUNS
                    )),
            );
            super::DEFAULT_KEEP_RUNS
        }
    }
}

/// `[cache] max_blob`: a size such as `512MiB`, `2G` or `1048576` (K, M, G, T are powers
/// of 1024, with or without `B` or `iB`); anything else, or zero, is an error.
fn max_blob(
    raw: Option<&Spanned<String>>,
    main: FileId,
    errors: &mut Vec<ConfigError>,
) -> Option<u64> {
    let raw = raw?;
    let parsed = parse_size(raw.get_ref());
    if let Some(n) = parsed.filter(|n| *n > 0) {
        return Some(n);
    }
    let (label, help) = match parsed {
        Some(_) => (
            "zero would store nothing",
            "to store nothing, set `cache = false` on the phases or build with `--no-cache`",
        ),
        None => (
            "not a size",
            "write a size such as `\"512MiB\"`, `\"2G\"` or `\"1048576\"` (K, M, G, T are powers of 1024)",
        ),
    };
    errors.push(
        ConfigError::new(
            ErrorKind::Value,
            format!("invalid `max_blob` size `{}`", raw.get_ref()),
        )
        .at(&Span::new(main, raw.span()), label)
        .help(help),
    );
    None
}

/// Bytes in `512MiB`, `1.5G`, `4096`; None when it is not such a size or overflows.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KB" | "KiB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        "T" | "TB" | "TiB" => 40,
        _ => return None,
    };
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() || (num.contains('.') && frac.is_empty()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut bytes = whole.checked_mul(1u64 << shift)?;
    if !frac.is_empty() {
        let digits = u32::try_from(frac.len()).ok().filter(|d| *d <= 9)?;
        let f: u64 = frac.parse().ok()?;
        bytes = bytes.checked_add(((f as u128) << shift).checked_div(10u128.pow(digits))? as u64)?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_counts_never_overflow() {
        let axis = |n: usize| ("a".to_owned(), vec![String::new(); n]);
        assert_eq!(instance_count(&[]), Some(1));
        assert_eq!(
            instance_count(&[axis(100), axis(100), axis(100)]),
            Some(1_000_000)
        );
        let huge: Vec<_> = (0..8).map(|_| axis(1000)).collect();
        assert_eq!(instance_count(&huge), None);
    }

    #[test]
    fn remote_urls() {
        for ok in [
            "http://h/p",
            "https://h",
            "s3://b",
            "s3://b/p/q",
            "file:///abs/dir",
        ] {
            assert_eq!(remote_problem(ok), None, "{ok}");
        }
        for bad in [
            "file:x",
            "file:/x",
            "file://host/x",
            "http:h",
            "http://",
            "s3://",
            "ftp://h",
            "x",
            "",
        ] {
            assert!(remote_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn max_blob_sizes() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1.5 GB"), Some(3 << 29));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("0"), Some(0));
        for bad in [
            "",
            "G",
            "1.G",
            ".5G",
            "12X",
            "-1",
            "1e9",
            "99999999999T",
            "1.0000000001G",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    /// One reported error: kind, message, `line:col`, label, help.
    type Reported = (ErrorKind, String, (usize, usize), String, String);

    /// Validation errors of an Orchfile.
    fn errs(text: &str) -> Vec<Reported> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Orchfile.toml");
        std::fs::write(&path, text).unwrap();
        let raw = crate::orchfile::load(&path).unwrap();
        let (project, errors) = validate_all(raw);
        errors
            .into_iter()
            .map(|e| {
                let (span, label) = e.primary.clone().unwrap();
                let pos = project.sources.line_col(&span);
                (e.kind, e.message, pos, label, e.help.unwrap_or_default())
            })
            .collect()
    }

    fn project(text: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Orchfile.toml");
        std::fs::write(&path, text).unwrap();
        validate(crate::orchfile::load(&path).unwrap()).unwrap()
    }

    const CLUSTER: &str = "[executor.cluster]\nkind = \"slurm\"\n";

    #[test]
    fn executors_and_resources_reach_every_instance() {
        let p = project(&format!(
            "{CLUSTER}partition = \"debug\"\nargs = [\"--time=30:00\", \"-A\", \"lab\"]\nmax_jobs = 200\n\n[executor.other]\nkind = \"slurm\"\n\n[phase.t]\nrun = \"x {{matrix.l}}\"\nmatrix = {{ l = [\"a\", \"b\"] }}\nexecutor = \"cluster\"\nresources = {{ cpus = 2, mem = \"4G\", time = \"20m\" }}\n\n[phase.l]\nrun = \"y\"\nexecutor = \"local\"\nresources = {{ cpus = 1 }}\n\n[phase.d]\nrun = \"z\"\n"
        ));
        assert_eq!(p.executors.keys().collect::<Vec<_>>(), ["cluster", "other"]);
        let c = &p.executors["cluster"];
        assert_eq!(c.kind, ExecutorKind::Slurm);
        assert_eq!(c.partition.as_deref(), Some("debug"));
        assert_eq!(c.args, ["--time=30:00", "-A", "lab"]);
        assert_eq!(c.max_jobs, 200);
        assert_eq!(p.executors["other"].max_jobs, DEFAULT_EXECUTOR_MAX_JOBS);
        assert_eq!(p.executors["other"].partition, None);
        for name in ["t[l=a]", "t[l=b]"] {
            let i = p.instance_index(name).unwrap();
            let inst = &p.instances[i];
            assert_eq!(inst.executor.as_deref(), Some("cluster"));
            assert_eq!(
                inst.resources,
                Resources {
                    cpus: Some(2),
                    mem: Some(4 << 30),
                    time: Some(Duration::from_secs(20 * 60)),
                }
            );
            assert_eq!(p.executor_of(i, None).name(), "cluster");
            assert_eq!(
                p.executor_of(i, Some("local")),
                super::super::ExecutorRef::Local
            );
            assert_eq!(p.executor_of(i, Some("other")).name(), "other");
        }
        let l = p.instance_index("l").unwrap();
        assert_eq!(p.instances[l].executor, None);
        assert_eq!(p.instances[l].resources.cpus, Some(1));
        assert_eq!(p.executor_of(l, None), super::super::ExecutorRef::Local);
        let d = p.instance_index("d").unwrap();
        assert!(p.instances[d].resources.is_empty());
        assert_eq!(p.executor_of(d, Some("cluster")).name(), "cluster");
        assert_eq!(p.executor_names(), ["local", "cluster", "other"]);
        assert!(p.check_executor("local").is_ok());
        assert!(p.check_executor("other").is_ok());
        let e = p.check_executor("clustr").unwrap_err();
        assert!(e.contains("did you mean `cluster`?"), "{e}");
        assert!(
            e.contains("known executors: `local`, `cluster`, `other`"),
            "{e}"
        );
    }

    #[test]
    fn executor_errors_point_at_their_values() {
        let e = errs("[executor.c]\npartition = \"debug\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].1, "executor `c` has no `kind`");
        assert_eq!(e[0].2, (1, 11));
        assert!(e[0].4.contains("kind = \"slurm\""), "{e:?}");

        let e = errs("[executor.c]\nkind = \"slurn\"\n");
        assert_eq!(e[0].1, "unknown executor kind `slurn`");
        assert_eq!(e[0].2, (2, 8));
        assert!(e[0].4.contains("did you mean `slurm`?"), "{e:?}");
        let e = errs("[executor.c]\nkind = \"local\"\n");
        assert!(e[0].4.contains("`local` is built in"), "{e:?}");

        let e = errs("[executor.c]\nkind = \"slurm\"\nmax_jobs = 0\npartition = \" \"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0].1,
            "`max_jobs` of executor `c` must be from 1 to 4294967295"
        );
        assert_eq!(e[0].2, (3, 12));
        assert_eq!(e[1].1, "invalid partition ` ` in executor `c`");
        assert_eq!(e[1].2, (4, 13));
        let e = errs("[executor.c]\nkind = \"slurm\"\nmax_jobs = 99999999999\n");
        assert_eq!(e[0].2, (3, 12));
        assert_eq!(e[0].3, "too large");
    }

    #[test]
    fn phase_executor_errors_name_the_known_executors() {
        let e = errs(&format!(
            "{CLUSTER}[phase.a]\nrun = \"x\"\nexecutor = \"clustr\"\n"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, ErrorKind::UnknownExecutor);
        assert_eq!(
            e[0].1,
            "phase `a` names executor `clustr`, which is not declared"
        );
        assert_eq!(e[0].2, (5, 12));
        assert_eq!(e[0].3, "unknown executor");
        assert_eq!(
            e[0].4,
            "did you mean `cluster`? known executors: `local`, `cluster`"
        );
        let e = errs("[phase.a]\nrun = \"x\"\nexecutor = \"gpu\"\n");
        assert_eq!(
            e[0].4,
            "declare `[executor.gpu]` with `kind = \"slurm\"`, or use one of `local`"
        );
        // An executor declared with errors is reported once, where it is declared.
        let e = errs("[executor.c]\nkind = \"pbs\"\n[phase.a]\nrun = \"x\"\nexecutor = \"c\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].1, "unknown executor kind `pbs`");
        let e = errs(
            "[executor.local]\nkind = \"slurm\"\n[phase.a]\nrun = \"x\"\nexecutor = \"local\"\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
    }

    #[test]
    fn resource_errors_point_at_each_value() {
        let e = errs(
            "[phase.a]\nrun = \"x\"\nresources = { cpus = 0, mem = \"4GB\", time = \"soon\" }\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(
            e[0].1,
            "`resources.cpus` of phase `a` must be from 1 to 4294967295"
        );
        assert_eq!(e[0].2, (3, 22));
        assert_eq!(e[1].1, "invalid `resources.mem` `4GB` in phase `a`");
        assert_eq!(e[1].2, (3, 31));
        assert_eq!(e[1].3, "unit not accepted");
        assert!(e[1].4.starts_with("write `4G`"), "{e:?}");
        assert!(
            e[2].1
                .starts_with("invalid duration `soon` in `resources.time`"),
            "{e:?}"
        );
        assert_eq!(e[2].2, (3, 45));
        let e = errs(
            "[phase.a]\nrun = \"x\"\nresources = { cpus = -3, mem = \"lots\", time = \"0s\" }\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(e[1].3, "not a size");
        assert_eq!(e[2].1, "`resources.time` of phase `a` is zero");
        // A matrix phase reports each problem once, not once per instance.
        let e = errs(
            "[phase.a]\nrun = \"x {matrix.l}\"\nmatrix = { l = [\"a\", \"b\"] }\nresources = { mem = \"0\" }\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].3, "zero memory");
    }

    #[test]
    fn mem_sizes() {
        assert_eq!(parse_mem("4G"), Ok(4 << 30));
        assert_eq!(parse_mem("512M"), Ok(512 << 20));
        assert_eq!(parse_mem("1T"), Ok(1 << 40));
        assert_eq!(parse_mem("64K"), Ok(64 << 10));
        assert_eq!(parse_mem("4096"), Ok(4096));
        for unit in ["4GB", "4Gi", "4GiB", "4g", "4gb", "512mb"] {
            assert_eq!(parse_mem(unit), Err(MemProblem::Unit), "{unit}");
        }
        for bad in ["", "G", "1.5G", "4 G", "-1", "4X", "4GBB", "1e9"] {
            assert_eq!(parse_mem(bad), Err(MemProblem::NotASize), "{bad}");
        }
        assert_eq!(parse_mem("0"), Err(MemProblem::Zero));
        assert_eq!(parse_mem("0G"), Err(MemProblem::Zero));
        assert_eq!(parse_mem("99999999999T"), Err(MemProblem::TooLarge));
        assert_eq!(parse_mem("99999999999999999999"), Err(MemProblem::TooLarge));
        assert!(MemProblem::Unit.help("4GB").contains("`4G`"));
        assert!(MemProblem::Unit.help("512mb").contains("`512M`"));
        for (bytes, text) in [
            (4 << 30, "4G"),
            (1536 << 20, "1536M"),
            (1 << 40, "1T"),
            (100, "100"),
            (2048, "2K"),
        ] {
            assert_eq!(super::super::mem_text(bytes), text);
            assert_eq!(parse_mem(text), Ok(bytes));
        }
    }

    #[test]
    fn cache_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let owned: BTreeMap<String, String> = [
            ("src".to_owned(), "input `src/**`".to_owned()),
            ("Orchfile.toml".to_owned(), "the Orchfile".to_owned()),
        ]
        .into();
        let problem = |d: &str| cache_dir_problem(&root, d, &owned);
        assert_eq!(problem("..").as_deref(), Some("contains the project root"));
        assert_eq!(
            problem("a/../..").as_deref(),
            Some("contains the project root")
        );
        assert_eq!(problem("/").as_deref(), Some("contains the project root"));
        assert_eq!(problem("./").as_deref(), Some("is the project root"));
        assert_eq!(problem("src/").as_deref(), Some("holds input `src/**`"));
        assert!(problem(".orch").is_some());
        assert_eq!(problem(".orch/cache"), None);
        assert_eq!(problem("src2"), None);
        assert_eq!(problem("../elsewhere"), None);
        // Through a symlink, what counts is where it leads.
        std::fs::create_dir(root.join("src")).unwrap();
        std::os::unix::fs::symlink(root.join("src"), root.join("alias")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("self")).unwrap();
        assert_eq!(problem("alias").as_deref(), Some("holds input `src/**`"));
        assert_eq!(problem("self/x/..").as_deref(), Some("is the project root"));
    }
}
