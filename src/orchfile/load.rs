//! Reading the Orchfile and its included fragments into a [`RawProject`].
//!
//! Loading reports every problem it can find at once: TOML syntax, unknown keys (with the
//! closest known key), wrong types, duplicate phases across fragments. It does no
//! semantic checks; those belong to `model::validate`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::raw::{
    CACHE_KEYS, EXECUTOR_KEYS, FRAGMENT_KEYS, ORCH_KEYS, OUTPUT_KEYS, PHASE_KEYS, RESOURCES_KEYS,
    RETRY_KEYS, RawCache, RawExecutor, RawOrch, RawPhase, RawVar, SHARD_KEYS, TOP_KEYS,
};
use super::source::{ConfigError, ErrorKind, FileId, Sources, Span, did_you_mean};
use crate::model::path::{Containment, PathProblem, normalize};

/// The default Orchfile name.
pub const ORCHFILE: &str = "Orchfile.toml";

/// A phase as loaded, with where it was declared.
#[derive(Debug)]
pub struct LoadedPhase {
    /// Its keys.
    pub raw: RawPhase,
    /// The file that declares it.
    pub file: FileId,
    /// The span of its name in the table header.
    pub name_span: Span,
}

/// An `[executor.NAME]` table as loaded, with where it was declared.
#[derive(Debug)]
pub struct LoadedExecutor {
    /// Its keys.
    pub raw: RawExecutor,
    /// The file that declares it.
    pub file: FileId,
    /// The span of its name in the table header.
    pub name_span: Span,
}

/// The name of the built-in executor, which runs commands on this machine.
pub const LOCAL_EXECUTOR: &str = "local";

/// A `[vars]` entry with where it was declared.
#[derive(Debug)]
pub struct LoadedVar {
    /// The value.
    pub value: RawVar,
    /// The span of the value.
    pub span: Span,
}

/// The Orchfile and its fragments, parsed but not yet validated.
#[derive(Debug)]
pub struct RawProject {
    /// The project root: the directory holding the Orchfile.
    pub root: PathBuf,
    /// Every file read, the Orchfile first.
    pub sources: Sources,
    /// The `[orch]` table of the Orchfile.
    pub orch: RawOrch,
    /// The `[cache]` table of the Orchfile.
    pub cache: Option<RawCache>,
    /// `[vars]` of all files.
    pub vars: BTreeMap<String, LoadedVar>,
    /// Phases of all files.
    pub phases: BTreeMap<String, LoadedPhase>,
    /// `[executor.*]` tables of all files.
    pub executors: BTreeMap<String, LoadedExecutor>,
    /// Phases declared with errors (already reported in `errors`).
    pub broken: BTreeSet<String>,
    /// Executors declared with errors (already reported in `errors`).
    pub broken_executors: BTreeSet<String>,
    /// Errors found while loading that did not stop it.
    pub errors: Vec<ConfigError>,
    /// `--set` values applied to `vars`, by name: they change the project as an edit of
    /// the Orchfile would, so they enter its digest.
    pub overrides: BTreeMap<String, String>,
}

/// Configuration errors together with the sources they point into.
#[derive(Debug)]
pub struct ConfigFailure {
    /// The files read so far.
    pub sources: Sources,
    /// The errors, sorted by position.
    pub errors: Vec<ConfigError>,
}

/// Finds the Orchfile: `file` when given (relative to `dir`), else `Orchfile.toml` in
/// `dir` or its nearest parent that has one, as cargo finds Cargo.toml.
pub fn find_orchfile(dir: &Path, file: Option<&Path>) -> Result<PathBuf, Box<ConfigError>> {
    if let Some(file) = file {
        let path = dir.join(file);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Box::new(
                ConfigError::new(
                    ErrorKind::Io,
                    format!("no Orchfile at `{}`", path.display()),
                )
                .help("check the path given with `-f`"),
            ))
        };
    }
    let mut cur = Some(dir);
    while let Some(d) = cur {
        let candidate = d.join(ORCHFILE);
        if candidate.is_file() {
            return Ok(candidate);
        }
        cur = d.parent();
    }
    Err(Box::new(
        ConfigError::new(
            ErrorKind::Io,
            format!(
                "could not find `{ORCHFILE}` in `{}` or any parent directory",
                dir.display()
            ),
        )
        .help("run `orch init` to create one, or pass `-C DIR` / `-f FILE`"),
    ))
}

/// Loads the Orchfile at `path` and every fragment it includes.
pub fn load(path: &Path) -> Result<RawProject, ConfigFailure> {
    let mut sources = Sources::default();
    let mut errors = Vec::new();
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let root = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let text = match std::fs::read_to_string(&abs) {
        Ok(t) => t,
        Err(e) => {
            errors.push(
                ConfigError::new(
                    ErrorKind::Io,
                    format!("cannot read `{}`: {e}", abs.display()),
                )
                .help("check that the file exists and is readable UTF-8 text"),
            );
            return Err(ConfigFailure { sources, errors });
        }
    };
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ORCHFILE.to_owned());
    let main = sources.add(name, abs.clone(), text);

    let mut project = RawProject {
        root,
        sources: Sources::default(),
        orch: RawOrch::default(),
        cache: None,
        vars: BTreeMap::new(),
        phases: BTreeMap::new(),
        executors: BTreeMap::new(),
        broken: BTreeSet::new(),
        broken_executors: BTreeSet::new(),
        errors: Vec::new(),
        overrides: BTreeMap::new(),
    };
    let main_text = std::sync::Arc::clone(&sources.get(main).text);
    let file = FileParts::parse(&main_text, main, TOP_KEYS, &mut errors);
    if let Some(mut parts) = file {
        if let Some(orch) = parts.orch.take() {
            project.orch = orch;
        }
        project.cache = parts.cache.take();
        merge_parts(&mut project, parts, &sources, &mut errors);
    }

    let patterns: Vec<Spanned<String>> = project.orch.include.clone();
    for pattern in patterns {
        let span = Span::new(main, pattern.span());
        for frag in expand_include(&project.root, pattern.get_ref(), &span, &mut errors) {
            let display = frag
                .strip_prefix(&project.root)
                .unwrap_or(&frag)
                .to_string_lossy()
                .into_owned();
            if sources.files().iter().any(|f| f.path == frag) {
                continue;
            }
            let text = match std::fs::read_to_string(&frag) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(
                        ConfigError::new(ErrorKind::Io, format!("cannot read `{display}`: {e}"))
                            .at(&span, "included here")
                            .help("check that the included file is readable UTF-8 text"),
                    );
                    continue;
                }
            };
            let id = sources.add(display, frag.clone(), text);
            let text = std::sync::Arc::clone(&sources.get(id).text);
            if let Some(parts) = FileParts::parse(&text, id, FRAGMENT_KEYS, &mut errors) {
                merge_parts(&mut project, parts, &sources, &mut errors);
            }
        }
    }

    // Syntax errors and unreadable files hide whole files: going on would only report
    // their phases as unknown. Everything else is reported together with later stages.
    super::source::sort_errors(&mut errors);
    if errors
        .iter()
        .any(|e| matches!(e.kind, ErrorKind::Syntax | ErrorKind::Io))
    {
        Err(ConfigFailure { sources, errors })
    } else {
        project.sources = sources;
        project.errors = errors;
        Ok(project)
    }
}

/// Adds one file's variables, phases and executors to the project; a name declared by
/// two files (or twice in one) is an error, as silently picking one would hide the other.
fn merge_parts(
    project: &mut RawProject,
    parts: FileParts,
    sources: &Sources,
    errors: &mut Vec<ConfigError>,
) {
    project.broken.extend(parts.broken);
    project.broken_executors.extend(parts.broken_executors);
    for (name, key_span, var) in parts.vars {
        if let Some(first) = project.vars.get(&name) {
            errors.push(duplicate(
                ErrorKind::DuplicatePhase,
                format!("variable `{name}` is declared twice"),
                &key_span,
                &first.span,
                sources,
            ));
        } else {
            project.vars.insert(name, var);
        }
    }
    for (name, phase) in parts.phases {
        if let Some(first) = project.phases.get(&name) {
            errors.push(duplicate(
                ErrorKind::DuplicatePhase,
                format!("phase `{name}` is declared twice"),
                &phase.name_span,
                &first.name_span,
                sources,
            ));
        } else {
            project.phases.insert(name, phase);
        }
    }
    for (name, executor) in parts.executors {
        if let Some(first) = project.executors.get(&name) {
            errors.push(duplicate(
                ErrorKind::DuplicatePhase,
                format!("executor `{name}` is declared twice"),
                &executor.name_span,
                &first.name_span,
                sources,
            ));
        } else if project.broken_executors.contains(&name) {
            // Declared with errors elsewhere: one report is enough.
        } else {
            project.executors.insert(name, executor);
        }
    }
}

fn duplicate(
    kind: ErrorKind,
    message: String,
    second: &Span,
    first: &Span,
    sources: &Sources,
) -> ConfigError {
    let (line, col) = sources.line_col(first);
    let err = ConfigError::new(kind, message).at(second, "declared again here");
    if first.file == second.file {
        err.also(first, "first declared here")
            .help("rename one of them or remove the duplicate")
    } else {
        err.help(format!(
            "it is first declared in `{}` at {line}:{col}; rename one of them",
            sources.get(first.file).name
        ))
    }
}

/// The fragment files `patterns` include now, in order, as loading would read them; None
/// when a pattern is invalid or names a missing file (loading reports those).
pub fn include_files(root: &Path, patterns: &[String]) -> Option<Vec<PathBuf>> {
    let mut errors = Vec::new();
    let span = Span::new(0, 0..0);
    let mut files: Vec<PathBuf> = Vec::new();
    for p in patterns {
        for f in expand_include(root, p, &span, &mut errors) {
            if !files.contains(&f) {
                files.push(f);
            }
        }
    }
    errors.is_empty().then_some(files)
}

/// Expands one include pattern, relative to the project root, in sorted order.
fn expand_include(
    root: &Path,
    pattern: &str,
    span: &Span,
    errors: &mut Vec<ConfigError>,
) -> Vec<PathBuf> {
    if pattern.starts_with('/') || pattern.split('/').any(|c| c == "..") {
        errors.push(
            ConfigError::new(
                ErrorKind::PathEscapes,
                format!("include `{pattern}` leaves the project root"),
            )
            .at(span, "outside the project")
            .help("include fragments from inside the project directory, e.g. `pipelines/*.toml`"),
        );
        return Vec::new();
    }
    let escapes = |problem: PathProblem, errors: &mut Vec<ConfigError>| {
        errors.push(
            ConfigError::new(
                ErrorKind::PathEscapes,
                format!("include `{pattern}` leaves the project root"),
            )
            .at(span, problem.describe())
            .help("include fragments from inside the project directory, not through a symlink that leads out of it"),
        );
    };
    // Symlinks are resolved against the real root, as every other project path is.
    let real_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut contain = Containment::new(&real_root);
    let has_meta = pattern.contains(['*', '?', '[', '{']);
    if !has_meta {
        let path = root.join(pattern);
        let norm = normalize(pattern);
        if !norm.is_empty()
            && let Err(problem) = contain.check(&norm, true)
        {
            escapes(problem, errors);
            return Vec::new();
        }
        if path.is_file() {
            return vec![path];
        }
        errors.push(
            ConfigError::new(
                ErrorKind::Io,
                format!("included file `{pattern}` does not exist"),
            )
            .at(span, "no such file")
            .help("create the fragment or remove it from `include`"),
        );
        return Vec::new();
    }
    let glob = match globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
    {
        Ok(g) => g.compile_matcher(),
        Err(e) => {
            errors.push(
                ConfigError::new(
                    ErrorKind::Glob,
                    format!("invalid include pattern `{pattern}`: {}", e.kind()),
                )
                .at(span, "invalid glob")
                .help("use `*`, `**`, `?`, `[...]` or `{a,b}` globs relative to the project root"),
            );
            return Vec::new();
        }
    };
    let prefix: PathBuf = pattern
        .split('/')
        .take_while(|c| !c.contains(['*', '?', '[', '{']))
        .collect();
    let literal = normalize(&prefix.to_string_lossy());
    if !literal.is_empty()
        && let Err(problem) = contain.check(&literal, true)
    {
        escapes(problem, errors);
        return Vec::new();
    }
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(root.join(&prefix))
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
    {
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        if !glob.is_match(rel) {
            continue;
        }
        if entry.file_type().is_symlink() {
            // A fragment may be a link to another file of the project, never to one
            // outside it.
            if !entry.path().is_file() {
                continue;
            }
            if let Err(problem) = contain.check(&rel.to_string_lossy(), true) {
                escapes(problem, errors);
                continue;
            }
        } else if !entry.file_type().is_file() {
            continue;
        }
        found.push(entry.path().to_path_buf());
    }
    found
}

/// The sections of one file.
struct FileParts {
    orch: Option<RawOrch>,
    cache: Option<RawCache>,
    vars: Vec<(String, Span, LoadedVar)>,
    phases: Vec<(String, LoadedPhase)>,
    executors: Vec<(String, LoadedExecutor)>,
    broken: Vec<String>,
    broken_executors: Vec<String>,
}

impl FileParts {
    fn parse(
        text: &str,
        file: FileId,
        allowed: &[&str],
        errors: &mut Vec<ConfigError>,
    ) -> Option<FileParts> {
        let doc = match DeTable::parse(text) {
            Ok(d) => d,
            Err(e) => {
                let range = e.span().unwrap_or(0..0);
                let message = e.message().trim().to_owned();
                if message.starts_with("duplicate key") {
                    let key = text.get(range.clone()).unwrap_or_default().trim();
                    errors.push(
                        ConfigError::new(
                            ErrorKind::Syntax,
                            format!("`{key}` is set twice in one table"),
                        )
                        .at(&Span::new(file, range), "set again here")
                        .help(format!("keep one `{key}`: a key appears once per table")),
                    );
                    return None;
                }
                errors.push(
                    ConfigError::new(ErrorKind::Syntax, format!("invalid TOML: {message}"))
                        .at(&Span::new(file, range), first_line(&message))
                        .help("fix the TOML syntax; see https://toml.io"),
                );
                return None;
            }
        };
        let mut parts = FileParts {
            orch: None,
            cache: None,
            vars: Vec::new(),
            phases: Vec::new(),
            executors: Vec::new(),
            broken: Vec::new(),
            broken_executors: Vec::new(),
        };
        let what = if allowed.len() == TOP_KEYS.len() {
            "the Orchfile"
        } else {
            "an included fragment"
        };
        for (key, value) in doc.into_inner() {
            let key_span = Span::new(file, key.span());
            let key = key.into_inner().into_owned();
            if !allowed.contains(&key.as_str()) {
                errors.push(unknown_key(&key, &key_span, allowed, what));
                continue;
            }
            match key.as_str() {
                "orch" => {
                    parts.orch =
                        settings::<RawOrch>(value, text, file, ORCH_KEYS, "`[orch]`", errors);
                }
                "cache" => {
                    parts.cache =
                        settings::<RawCache>(value, text, file, CACHE_KEYS, "`[cache]`", errors);
                }
                "vars" => parts.vars = vars(value, text, file, errors),
                "phase" => (parts.phases, parts.broken) = phases(value, text, file, errors),
                "executor" => {
                    (parts.executors, parts.broken_executors) =
                        executors(value, text, file, errors);
                }
                _ => {}
            }
        }
        Some(parts)
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_owned()
}

fn unknown_key(key: &str, span: &Span, allowed: &[&str], table: &str) -> ConfigError {
    let err = ConfigError::new(
        ErrorKind::UnknownKey,
        format!("unknown key `{key}` in {table}"),
    )
    .at(span, "unknown key");
    let known = allowed
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match did_you_mean(key, allowed.iter().copied()) {
        Some(s) => err.help(format!("did you mean `{s}`? known keys: {known}")),
        None => err.help(format!("known keys: {known}")),
    }
}

/// Reports unknown keys of a table value; true when there were none (or it is not a table,
/// which the typed pass then reports).
fn check_keys(
    value: &Spanned<DeValue<'_>>,
    file: FileId,
    allowed: &[&str],
    table: &str,
    errors: &mut Vec<ConfigError>,
) -> bool {
    let Some(t) = value.get_ref().as_table() else {
        return true;
    };
    let mut ok = true;
    for key in t.keys() {
        if !allowed.contains(&key.get_ref().as_ref()) {
            errors.push(unknown_key(
                key.get_ref(),
                &Span::new(file, key.span()),
                allowed,
                table,
            ));
            ok = false;
        }
    }
    ok
}

/// Deserializes a value into `T`, turning a serde error into a diagnostic.
fn typed<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    text: &str,
    file: FileId,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let whole = value.span();
    match T::deserialize(toml::de::ValueDeserializer::from(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(type_error(&e, whole, (text, file), None, what));
            None
        }
    }
}

/// Like [`typed`], for a table whose keys are all optional (`[orch]`, `[cache]`, a
/// phase). serde stops at the first bad key, so on failure each key is tried alone:
/// every key with a wrong type gets its own diagnostic at once.
fn typed_table<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    text: &str,
    file: FileId,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let whole = value.span();
    let Some(table) = value.get_ref().as_table().cloned() else {
        return typed(value, text, file, what, errors);
    };
    let first = match T::deserialize(toml::de::ValueDeserializer::from(value)) {
        Ok(v) => return Some(v),
        Err(e) => e,
    };
    let before = errors.len();
    for (key, v) in table {
        let top = key.get_ref().to_string();
        let mut one = DeTable::new();
        one.insert(key, v);
        let single = Spanned::new(whole.clone(), DeValue::Table(one));
        if let Err(e) = T::deserialize(toml::de::ValueDeserializer::from(single)) {
            let at = (text, file);
            errors.push(type_error(&e, whole.clone(), at, Some(&top), what));
        }
    }
    if errors.len() == before {
        errors.push(type_error(&first, whole, (text, file), None, what));
    }
    None
}

/// A table of settings (`[orch]`, `[cache]`), every key optional: each unknown or
/// mistyped key is reported and left out, and the others still apply, so a typo in `jobs`
/// does not drop `include` and with it every phase of the included fragments.
fn settings<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    text: &str,
    file: FileId,
    allowed: &[&str],
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    check_keys(&value, file, allowed, what, errors);
    let whole = value.span();
    let Some(table) = value.get_ref().as_table() else {
        return typed(value, text, file, what, errors);
    };
    let mut good = DeTable::new();
    for (key, v) in table.iter() {
        let name = key.get_ref().to_string();
        if !allowed.contains(&name.as_str()) {
            continue;
        }
        let mut one = DeTable::new();
        one.insert(key.clone(), v.clone());
        let single = Spanned::new(whole.clone(), DeValue::Table(one));
        match T::deserialize(toml::de::ValueDeserializer::from(single)) {
            Ok(_) => {
                good.insert(key.clone(), v.clone());
            }
            Err(e) => errors.push(type_error(
                &e,
                whole.clone(),
                (text, file),
                Some(&name),
                what,
            )),
        }
    }
    typed(
        Spanned::new(whole, DeValue::Table(good)),
        text,
        file,
        what,
        errors,
    )
}

fn type_error(
    e: &toml::de::Error,
    whole: std::ops::Range<usize>,
    (text, file): (&str, FileId),
    top: Option<&str>,
    what: &str,
) -> ConfigError {
    let range = e.span().unwrap_or(whole);
    // The key path: `retry.attempts`, or `outputs` for an element of that list.
    let path = match (top, key_before(text, range.start)) {
        (Some(t), Some(k)) if t != k => Some(format!("{t}.{k}")),
        (_, Some(k)) => Some(k.to_owned()),
        (Some(t), None) => Some(format!("{t}[]")),
        (None, None) => None,
    };
    let (message, label) = plain_words(e.message().trim(), path.as_deref(), what);
    ConfigError::new(ErrorKind::Type, message)
        .at(&Span::new(file, range), label)
        .help("see `orch schema` for the type of every key")
}

/// The key of the `KEY = value` whose value starts at `pos`, if the text has one there
/// (not for an element of a list).
fn key_before(text: &str, pos: usize) -> Option<&str> {
    let before = text.get(..pos)?.trim_end().strip_suffix('=')?.trim_end();
    let start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .map_or(0, |i| i + 1);
    let key = &before[start..];
    (!key.is_empty()).then_some(key)
}

/// serde's message about a value, in the words of the Orchfile: which key, what it must
/// be, and what was written instead. Returns the message and the label on the value.
fn plain_words(message: &str, key: Option<&str>, what: &str) -> (String, String) {
    let first = first_line(message);
    // `KEY[]` stands for an element of the list `KEY`.
    let element = key.and_then(|k| k.strip_suffix("[]"));
    let subject = match (element, key) {
        (Some(list), _) => format!("an entry of `{list}` in {what}"),
        (None, Some(k)) => format!("`{k}` in {what}"),
        (None, None) => format!("a value in {what}"),
    };
    let key = if element.is_some() { None } else { key };
    let wrong = first
        .strip_prefix("invalid type: ")
        .or_else(|| first.strip_prefix("invalid value: "));
    if let Some(rest) = wrong
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let must = key
            .and_then(|k| expected_of(k.rsplit('.').next().unwrap_or(k)))
            .unwrap_or_else(|| plain_expected(expected));
        let found = plain_found(found);
        return (
            format!("{subject} must be {must}, not {found}"),
            format!("{found}; expected {must}"),
        );
    }
    if let Some(rest) = first.strip_prefix("missing field ") {
        let field = rest.trim_matches('`');
        return (
            format!(
                "{} needs `{field}`",
                key.map_or(what.to_owned(), |k| format!("`{k}` in {what}"))
            ),
            format!("`{field}` is missing"),
        );
    }
    if let Some(rest) = first.strip_prefix("unknown field ") {
        let field = rest.split('`').nth(1).unwrap_or(rest);
        return (
            format!("unknown key `{field}` in {what}"),
            "unknown key".to_owned(),
        );
    }
    (format!("invalid value in {what}: {first}"), first)
}

/// What the value of a known key must be, in Orchfile words.
fn expected_of(key: &str) -> Option<String> {
    let s = match key {
        "timeout" | "backoff" | "max_backoff" | "time" => {
            "a duration in quotes like `\"30s\"`, `\"10m\"` or `\"1h\"`"
        }
        "jobs" | "keep_runs" | "max_jobs" | "cpus" | "attempts" | "parallel" | "format" => {
            "a whole number"
        }
        "size" => "a whole number of records",
        "mem" | "max_blob" => "a size in quotes like `\"512M\"` or `\"4G\"`",
        "needs" | "after" => "a list of phase names like `[\"a\", \"b\"]`",
        "inputs" => "a list of paths or globs like `[\"src/*.c\"]`",
        "outputs" => "a list of paths like `[\"build/out.txt\"]`",
        "include" | "args" => "a list of strings",
        "env" => "a list of variable names or a table of `NAME = \"value\"`",
        "cache" | "always" | "push" => "`true` or `false`",
        "run" | "description" | "cwd" | "depfile" | "executor" | "partition" | "kind" | "dir"
        | "remote" | "strategy" | "source" | "key" | "merge" | "path" | "schema" => "a string",
        _ => return None,
    };
    Some(s.to_owned())
}

/// serde's "expected ..." in Orchfile words.
fn plain_expected(expected: &str) -> String {
    let e = expected.trim();
    if e.starts_with("struct ") || e == "a map" || e == "map" {
        return "a table".to_owned();
    }
    if e.starts_with("a sequence") || e == "sequence" {
        return "a list".to_owned();
    }
    if matches!(
        e,
        "i64" | "u64" | "u32" | "i32" | "usize" | "an integer" | "integer"
    ) || e.starts_with("u64")
        || e.starts_with("u32")
    {
        return "a whole number".to_owned();
    }
    if e == "a boolean" || e == "bool" {
        return "`true` or `false`".to_owned();
    }
    e.to_owned()
}

/// serde's description of what was found, in Orchfile words.
fn plain_found(found: &str) -> String {
    let f = found.trim();
    let quoted = f.split_once(' ').map(|(_, v)| v.trim()).unwrap_or_default();
    if f.starts_with("integer") || f.starts_with("floating point") {
        format!("the number {}", quoted.trim_matches('`'))
    } else if f.starts_with("string") {
        format!("the string {quoted}")
    } else if f.starts_with("boolean") {
        format!("`{}`", quoted.trim_matches('`'))
    } else if f == "sequence" {
        "a list".to_owned()
    } else if f == "map" {
        "a table".to_owned()
    } else {
        f.to_owned()
    }
}

fn vars(
    value: Spanned<DeValue<'_>>,
    text: &str,
    file: FileId,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, Span, LoadedVar)> {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        errors.push(
            ConfigError::new(ErrorKind::Type, "`vars` must be a table")
                .at(&Span::new(file, span), "expected a table")
                .help("write `[vars]` followed by `name = \"value\"` or `name = [\"a\", \"b\"]` lines"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in table {
        let key_span = Span::new(file, key.span());
        let name = key.into_inner().into_owned();
        let vspan = Span::new(file, value.span());
        let stand_in = stand_in(&value, text);
        let value = typed::<RawVar>(value, text, file, &format!("variable `{name}`"), errors)
            .unwrap_or(stand_in);
        out.push((name, key_span, LoadedVar { value, span: vspan }));
    }
    out
}

/// What a variable of the wrong type stands for while the rest is validated: its text
/// (each element's, for an array). Its own error is reported already; without a value,
/// every `{vars.NAME}` would be reported again as undeclared.
fn stand_in(value: &Spanned<DeValue<'_>>, text: &str) -> RawVar {
    let source = |span: std::ops::Range<usize>| {
        text.get(span)
            .unwrap_or_default()
            .trim_matches(['"', '\''])
            .to_owned()
    };
    match value.get_ref() {
        DeValue::Array(items) => RawVar::List(items.iter().map(|i| source(i.span())).collect()),
        _ => RawVar::One(source(value.span())),
    }
}

fn phases(
    value: Spanned<DeValue<'_>>,
    text: &str,
    file: FileId,
    errors: &mut Vec<ConfigError>,
) -> (Vec<(String, LoadedPhase)>, Vec<String>) {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        errors.push(
            ConfigError::new(ErrorKind::Type, "`phase` must be a table of phases")
                .at(&Span::new(file, span), "expected a table")
                .help("declare phases as `[phase.NAME]` tables"),
        );
        return (Vec::new(), Vec::new());
    };
    let mut out = Vec::new();
    // Declared but with errors: later stages must not call them unknown.
    let mut broken = Vec::new();
    for (key, value) in table {
        let name_span = Span::new(file, key.span());
        let name = key.into_inner().into_owned();
        if !valid_phase_name(&name) {
            errors.push(
                ConfigError::new(ErrorKind::Value, format!("invalid phase name `{name}`"))
                    .at(&name_span, "invalid name")
                    .help("phase names use letters, digits, `_` and `-`, and start with a letter or `_`"),
            );
            continue;
        }
        let table_name = format!("`[phase.{name}]`");
        let Some(t) = value.get_ref().as_table() else {
            errors.push(
                ConfigError::new(ErrorKind::Type, format!("phase `{name}` must be a table"))
                    .at(&Span::new(file, value.span()), "expected a table")
                    .help(format!(
                        "declare it as `[phase.{name}]` with `run`, `inputs`, `outputs`..."
                    )),
            );
            broken.push(name);
            continue;
        };
        let mut ok = check_keys(&value, file, PHASE_KEYS, &table_name, errors);
        for (sub, allowed, what) in [
            ("shard", SHARD_KEYS, "`shard`"),
            ("retry", RETRY_KEYS, "`retry`"),
            ("resources", RESOURCES_KEYS, "`resources`"),
        ] {
            if let Some(v) = t.get(sub) {
                ok &= check_keys(
                    v,
                    file,
                    allowed,
                    &format!("{what} of phase `{name}`"),
                    errors,
                );
            }
        }
        if let Some(outputs) = t.get("outputs").and_then(|o| o.get_ref().as_array()) {
            for o in outputs.iter() {
                ok &= check_keys(
                    o,
                    file,
                    OUTPUT_KEYS,
                    &format!("an output of phase `{name}`"),
                    errors,
                );
            }
        }
        if !ok {
            broken.push(name);
            continue;
        }
        match typed_table::<RawPhase>(value, text, file, &format!("phase `{name}`"), errors) {
            Some(raw) => out.push((
                name,
                LoadedPhase {
                    raw,
                    file,
                    name_span,
                },
            )),
            None => broken.push(name),
        }
    }
    (out, broken)
}

/// The `[executor.*]` tables of one file, and the names of those declared with errors.
fn executors(
    value: Spanned<DeValue<'_>>,
    text: &str,
    file: FileId,
    errors: &mut Vec<ConfigError>,
) -> (Vec<(String, LoadedExecutor)>, Vec<String>) {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        errors.push(
            ConfigError::new(ErrorKind::Type, "`executor` must be a table of executors")
                .at(&Span::new(file, span), "expected a table")
                .help("declare executors as `[executor.NAME]` tables with `kind = \"slurm\"`"),
        );
        return (Vec::new(), Vec::new());
    };
    let mut out = Vec::new();
    let mut broken = Vec::new();
    for (key, value) in table {
        let name_span = Span::new(file, key.span());
        let name = key.into_inner().into_owned();
        if name == LOCAL_EXECUTOR {
            errors.push(
                ConfigError::new(
                    ErrorKind::Value,
                    "`local` is the built-in executor and cannot be declared",
                )
                .at(&name_span, "built in")
                .help("phases run locally unless they name another executor; give this table another name, e.g. `[executor.cluster]`"),
            );
            broken.push(name);
            continue;
        }
        if !valid_phase_name(&name) {
            errors.push(
                ConfigError::new(ErrorKind::Value, format!("invalid executor name `{name}`"))
                    .at(&name_span, "invalid name")
                    .help("executor names use letters, digits, `_` and `-`, and start with a letter or `_`"),
            );
            continue;
        }
        let table_name = format!("`[executor.{name}]`");
        if value.get_ref().as_table().is_none() {
            errors.push(
                ConfigError::new(
                    ErrorKind::Type,
                    format!("executor `{name}` must be a table"),
                )
                .at(&Span::new(file, value.span()), "expected a table")
                .help(format!(
                    "declare it as `[executor.{name}]` with `kind = \"slurm\"`"
                )),
            );
            broken.push(name);
            continue;
        }
        if !check_keys(&value, file, EXECUTOR_KEYS, &table_name, errors) {
            broken.push(name);
            continue;
        }
        match typed_table::<RawExecutor>(value, text, file, &format!("executor `{name}`"), errors) {
            Some(raw) => out.push((
                name,
                LoadedExecutor {
                    raw,
                    file,
                    name_span,
                },
            )),
            None => broken.push(name),
        }
    }
    (out, broken)
}

/// Phase names must be usable in targets, log file names and instance names.
pub fn valid_phase_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<RawProject, ConfigFailure> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ORCHFILE);
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    /// Errors, fatal or not, as a failure.
    fn failure(r: Result<RawProject, ConfigFailure>) -> ConfigFailure {
        match r {
            Ok(p) => ConfigFailure {
                sources: p.sources,
                errors: p.errors,
            },
            Err(f) => f,
        }
    }

    fn errors(text: &str) -> Vec<(ErrorKind, String, (usize, usize))> {
        let f = failure(load_str(text));
        f.errors
            .iter()
            .map(|e| {
                let pos = e
                    .primary
                    .as_ref()
                    .map(|(s, _)| f.sources.line_col(s))
                    .unwrap_or((0, 0));
                (e.kind, e.message.clone(), pos)
            })
            .collect()
    }

    #[test]
    fn loads_a_phase_with_spans() {
        let p = load_str("[phase.a]\nrun = \"echo hi\"\noutputs = [\"x\", { path = \"y.json\", schema = \"s.json\" }]\n").unwrap();
        let a = &p.phases["a"];
        assert_eq!(a.raw.run.as_ref().unwrap().get_ref(), "echo hi");
        assert_eq!(a.raw.outputs.len(), 2);
        assert_eq!(&p.sources.get(0).text[a.raw.outputs[0].span()], "\"x\"");
    }

    #[test]
    fn unknown_keys_are_all_reported_with_lines_and_suggestions() {
        let errs = errors(
            "[phase.a]\nrun = \"x\"\nneds = [\"b\"]\n\n[phase.b]\nrun = \"y\"\noutput = []\n",
        );
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].0, ErrorKind::UnknownKey);
        assert!(errs[0].1.contains("`neds`"));
        assert_eq!(errs[0].2, (3, 1));
        assert_eq!(errs[1].2, (7, 1));
        let f = failure(load_str("[phase.a]\nrun = \"x\"\nneds = [\"b\"]\n"));
        assert!(
            f.errors[0]
                .help
                .as_deref()
                .unwrap()
                .contains("did you mean `needs`?")
        );
    }

    #[test]
    fn type_errors_point_at_the_value() {
        let errs = errors("[phase.a]\nrun = 3\n");
        assert_eq!(errs[0].0, ErrorKind::Type);
        assert_eq!(errs[0].2, (2, 7));
        let errs = errors("[phase.a]\nrun = \"x\"\nenv = 5\n");
        assert!(errs[0].1.contains("list of variable names"), "{errs:?}");
    }

    #[test]
    fn syntax_error_has_position() {
        let errs = errors("[phase.a]\nrun = \"x\n");
        assert_eq!(errs[0].0, ErrorKind::Syntax);
        assert_eq!(errs[0].2.0, 2);
    }

    #[test]
    fn includes_join_and_duplicates_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pipelines")).unwrap();
        std::fs::write(
            dir.path().join("pipelines/a.toml"),
            "[vars]\nv = [\"1\"]\n[phase.b]\nrun = \"y\"\n",
        )
        .unwrap();
        let path = dir.path().join(ORCHFILE);
        std::fs::write(
            &path,
            "[orch]\ninclude = [\"pipelines/*.toml\"]\n[phase.a]\nrun = \"x\"\n",
        )
        .unwrap();
        let p = load(&path).unwrap();
        assert_eq!(p.phases.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(p.vars.contains_key("v"));
        std::fs::write(
            dir.path().join("pipelines/b.toml"),
            "[phase.a]\nrun = \"z\"\n",
        )
        .unwrap();
        let f = failure(load(&path));
        assert_eq!(f.errors[0].kind, ErrorKind::DuplicatePhase);
        std::fs::write(dir.path().join("pipelines/b.toml"), "[orch]\njobs = 1\n").unwrap();
        let f = failure(load(&path));
        assert_eq!(f.errors[0].kind, ErrorKind::UnknownKey);
    }

    #[test]
    fn executor_tables_are_loaded_and_checked() {
        let p = load_str(
            "[executor.cluster]\nkind = \"slurm\"\npartition = \"debug\"\nargs = [\"--time=30:00\"]\nmax_jobs = 200\n\n[phase.a]\nrun = \"x\"\nexecutor = \"cluster\"\nresources = { cpus = 2, mem = \"4G\", time = \"20m\" }\n",
        )
        .unwrap();
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let c = &p.executors["cluster"];
        assert_eq!(c.raw.args[0].get_ref(), "--time=30:00");
        assert_eq!(&p.sources.get(0).text[c.name_span.range.clone()], "cluster");
        let r = p.phases["a"].raw.resources.as_ref().unwrap().get_ref();
        assert_eq!(r.mem.as_ref().unwrap().get_ref(), "4G");

        let errs = errors("[executor.local]\nkind = \"slurm\"\n");
        assert_eq!(errs[0].0, ErrorKind::Value);
        assert!(
            errs[0].1.contains("`local` is the built-in executor"),
            "{errs:?}"
        );
        assert_eq!(errs[0].2, (1, 11));
        let errs = errors("[executor.\"a b\"]\nkind = \"slurm\"\n");
        assert_eq!(errs[0].1, "invalid executor name `a b`");
        assert_eq!(errs[0].2, (1, 11));
        let errs = errors("[executor.c]\nkind = \"slurm\"\npartiton = \"x\"\n");
        assert_eq!(errs[0].0, ErrorKind::UnknownKey);
        assert!(errs[0].1.contains("`[executor.c]`"), "{errs:?}");
        assert_eq!(errs[0].2, (3, 1));
        let f = failure(load_str(
            "[executor.c]\nkind = \"slurm\"\npartiton = \"x\"\n",
        ));
        assert!(
            f.errors[0]
                .help
                .as_deref()
                .unwrap()
                .contains("did you mean `partition`?")
        );
        let errs = errors("[executor.c]\nkind = \"slurm\"\nmax_jobs = \"9\"\nargs = \"-x\"\n");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().all(|e| e.0 == ErrorKind::Type), "{errs:?}");
        assert_eq!((errs[0].2, errs[1].2), ((3, 12), (4, 8)));
        let errs = errors("executor = 3\n");
        assert_eq!(errs[0].1, "`executor` must be a table of executors");
        let errs = errors("[executor]\nc = 3\n");
        assert_eq!(errs[0].1, "executor `c` must be a table");
        assert_eq!(errs[0].2, (2, 5));
    }

    #[test]
    fn resources_keys_and_types_are_checked() {
        let errs = errors("[phase.a]\nrun = \"x\"\nresources = { cpus = 2, memory = \"4G\" }\n");
        assert_eq!(errs[0].0, ErrorKind::UnknownKey);
        assert!(errs[0].1.contains("`resources` of phase `a`"), "{errs:?}");
        assert_eq!(errs[0].2, (3, 25));
        let errs = errors("[phase.a]\nrun = \"x\"\nresources = { cpus = \"2\" }\n");
        assert_eq!(errs[0].0, ErrorKind::Type);
        assert_eq!(errs[0].2, (3, 22));
        let errs = errors("[phase.a]\nrun = \"x\"\nexecutor = 1\n");
        assert_eq!(errs[0].0, ErrorKind::Type);
        assert_eq!(errs[0].2, (3, 12));
    }

    #[test]
    fn an_executor_declared_twice_across_fragments_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pipelines")).unwrap();
        std::fs::write(
            dir.path().join("pipelines/a.toml"),
            "[executor.cluster]\nkind = \"slurm\"\n[phase.b]\nrun = \"y\"\nexecutor = \"cluster\"\n",
        )
        .unwrap();
        let path = dir.path().join(ORCHFILE);
        std::fs::write(
            &path,
            "[orch]\ninclude = [\"pipelines/*.toml\"]\n[phase.a]\nrun = \"x\"\n",
        )
        .unwrap();
        let p = load(&path).unwrap();
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.executors["cluster"].file, 1);
        std::fs::write(
            dir.path().join("pipelines/b.toml"),
            "[executor.cluster]\nkind = \"slurm\"\n",
        )
        .unwrap();
        let f = failure(load(&path));
        assert_eq!(f.errors.len(), 1);
        let e = &f.errors[0];
        assert_eq!(e.kind, ErrorKind::DuplicatePhase);
        assert_eq!(e.message, "executor `cluster` is declared twice");
        let (span, _) = e.primary.as_ref().unwrap();
        assert_eq!(f.sources.get(span.file).name, "pipelines/b.toml");
        assert!(
            e.help
                .as_deref()
                .unwrap()
                .contains("first declared in `pipelines/a.toml` at 1:11")
        );
    }

    #[test]
    fn serde_messages_are_said_in_orchfile_words() {
        let (m, label) = plain_words(
            "invalid type: integer `5`, expected a string",
            Some("timeout"),
            "phase `a`",
        );
        assert!(
            m.starts_with("`timeout` in phase `a` must be a duration"),
            "{m}"
        );
        assert!(m.ends_with(", not the number 5"), "{m}");
        assert!(
            label.starts_with("the number 5; expected a duration"),
            "{label}"
        );
        let (m, _) = plain_words(
            "invalid value: integer `-1`, expected u64",
            Some("shard.parallel"),
            "phase `a`",
        );
        assert_eq!(
            m,
            "`shard.parallel` in phase `a` must be a whole number, not the number -1"
        );
        let (m, _) = plain_words("invalid type: sequence, expected i64", None, "`[orch]`");
        assert_eq!(m, "a value in `[orch]` must be a whole number, not a list");
        let (m, _) = plain_words("missing field `attempts`", Some("retry"), "phase `a`");
        assert_eq!(m, "`retry` in phase `a` needs `attempts`");
        let (m, _) = plain_words(
            "invalid type: boolean `true`, expected a string",
            Some("outputs[]"),
            "phase `a`",
        );
        assert_eq!(
            m,
            "an entry of `outputs` in phase `a` must be a string, not `true`"
        );
    }

    #[test]
    fn the_key_of_a_value_is_read_back_from_the_text() {
        let text = "retry = { attempts = \"3\" }\nneeds = [\"a\", 3]\n";
        assert_eq!(
            key_before(text, text.find("\"3\"").unwrap()),
            Some("attempts")
        );
        assert_eq!(key_before(text, text.find('{').unwrap()), Some("retry"));
        assert_eq!(key_before(text, text.find(", 3").unwrap() + 2), None);
        assert_eq!(key_before(text, 0), None);
    }

    #[test]
    fn a_variable_of_the_wrong_type_still_counts_as_declared() {
        let f = failure(load_str("[vars]\nlang = 5\nlangs = [\"a\", 2]\n"));
        assert_eq!(f.errors.len(), 2, "{:?}", f.errors);
        let p = load_str("[vars]\nlang = 5\nlangs = [\"a\", 2]\n").unwrap();
        assert!(matches!(&p.vars["lang"].value, RawVar::One(s) if s == "5"));
        assert!(matches!(&p.vars["langs"].value, RawVar::List(l) if l == &["a", "2"]));
    }

    #[test]
    fn a_key_set_twice_is_named() {
        let errs = errors("[phase.a]\nrun = \"x\"\nrun = \"y\"\n");
        assert_eq!(errs[0].0, ErrorKind::Syntax);
        assert_eq!(errs[0].1, "`run` is set twice in one table");
        assert_eq!(errs[0].2, (3, 1));
    }

    #[test]
    fn phase_names_are_checked() {
        assert!(valid_phase_name("translate_2-x"));
        assert!(!valid_phase_name("2x"));
        assert!(!valid_phase_name("a[b]"));
    }
}
