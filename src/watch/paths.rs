//! What `orch watch` watches and what it ignores, built from the project.
//!
//! A [`WatchSpec`] answers two questions, both about project-relative paths:
//!
//! - [`WatchSpec::should_watch_dir`]: must this directory have a watch? The root (for the
//!   Orchfile), the directories holding configuration files and plain inputs (and their
//!   ancestors, so a missing one is seen when it appears), and everything below the
//!   literal prefix of an input glob or an include glob, or below a plain input that is a
//!   directory; never `.orch/`, `.git/` or a declared directory output.
//!   Discovered inputs (files the depfiles of the selected instances listed, as the
//!   state records them) are watched like plain inputs.
//! - [`WatchSpec::classify`]: is a change to this path an input change, a configuration
//!   change, or to be ignored? Ignored are orch's own state (`.orch/`), declared outputs
//!   (files, directories, and the templated outputs of `merge = "none"` shards), editor
//!   temporary files, and anything that matches no input pattern.
//!
//! Input globs use the same syntax and options as the build's walk
//! ([`crate::fs::MultiGlob`]): `*` stays within a directory, `**` crosses them.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::model::path::is_plain;
use crate::model::{Output, Project};

/// Directories (at the root) that orch never reads inputs from, as the build's walk.
const SKIP_DIRS: &[&str] = &[".orch", ".git"];

/// What a change to a path means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// It matches an input pattern of a selected instance.
    Input,
    /// It is the Orchfile, a fragment, or matches an include pattern.
    Config,
    /// Not a reason to rebuild.
    Ignored(Ignore),
}

/// Why a change is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignore {
    /// Under `.orch/` or `.git/`.
    State,
    /// A declared output (or under a declared directory output).
    Output,
    /// An editor's swap, backup or probe file.
    EditorTemp,
    /// Matches no input pattern.
    Unrelated,
}

/// The watch and ignore rules of one loaded project and selection.
#[derive(Debug)]
pub struct WatchSpec {
    root: PathBuf,
    /// Input globs of the selected instances.
    inputs: GlobSet,
    /// Plain input paths (a file, or a directory meaning everything below it).
    plain: HashSet<String>,
    /// The Orchfile and its fragments, project-relative.
    config: HashSet<String>,
    /// The include patterns, so a new fragment is seen.
    includes: GlobSet,
    /// Declared file outputs (of every instance).
    out_files: HashSet<String>,
    /// Declared directory outputs.
    out_dirs: HashSet<String>,
    /// Outputs of `merge = "none"` shards, `{shard.*}` turned into `*`.
    out_templates: GlobSet,
    /// Directories watched themselves (not what is below them), with their ancestors.
    exact: HashSet<String>,
    /// Directories watched with everything below them.
    recursive: HashSet<String>,
    /// The local cache store, when it lies inside the project: orch's own, like `.orch`.
    store: Option<String>,
}

/// The parts a [`WatchSpec`] is built from (project-relative, normalised paths).
#[derive(Debug, Default)]
pub struct Parts {
    /// Input patterns of the selected instances.
    pub inputs: Vec<String>,
    /// Declared outputs of every instance.
    pub outputs: Vec<Output>,
    /// Templated shard outputs of every instance.
    pub shard_outputs: Vec<String>,
    /// The Orchfile and its fragments.
    pub config: Vec<String>,
    /// Include patterns.
    pub includes: Vec<String>,
    /// The local cache store, when inside the project.
    pub store: Option<String>,
}

impl WatchSpec {
    /// The spec for `selected` instances of `project`.
    pub fn new(project: &Project, selected: &BTreeSet<usize>) -> Result<WatchSpec, String> {
        let root = &project.root;
        let mut parts = Parts {
            includes: project.includes.clone(),
            store: crate::snapshot::cache_dir_in_project(project),
            ..Parts::default()
        };
        for &i in selected {
            parts
                .inputs
                .extend(project.instances[i].inputs.iter().cloned());
        }
        // A name holding glob characters would read as a pattern: such a rare file is
        // left unwatched rather than misread.
        parts.inputs.extend(
            discovered(project, selected)
                .into_iter()
                .filter(|p| is_plain(p)),
        );
        for inst in &project.instances {
            parts.outputs.extend(inst.outputs.iter().cloned());
            parts
                .shard_outputs
                .extend(inst.shard_outputs.iter().map(|o| o.path.clone()));
        }
        for f in project.sources.files() {
            let abs = f.path.canonicalize().unwrap_or_else(|_| f.path.clone());
            let rel = relative(root, &abs).or_else(|| relative(root, &f.path));
            if let Some(rel) = rel {
                parts.config.push(rel);
            }
        }
        WatchSpec::from_parts(root, parts)
    }

    /// The spec from its parts; `root` is the (canonical) project root.
    pub fn from_parts(root: &Path, parts: Parts) -> Result<WatchSpec, String> {
        let mut plain = HashSet::new();
        let mut exact = HashSet::new();
        let mut recursive = HashSet::new();
        let mut inputs = GlobSetBuilder::new();
        exact.insert(String::new());
        for p in &parts.inputs {
            if is_plain(p) {
                // Its directory, to see it appear; itself, if it is a directory.
                add_with_ancestors(&mut exact, parent(p));
                recursive.insert(p.clone());
                plain.insert(p.clone());
            } else {
                inputs.add(glob(p, true)?);
                let prefix = literal_prefix_dir(p);
                add_with_ancestors(&mut exact, parent(prefix));
                recursive.insert(prefix.to_owned());
            }
        }
        for c in &parts.config {
            add_with_ancestors(&mut exact, parent(c));
        }
        let mut includes = GlobSetBuilder::new();
        for p in &parts.includes {
            includes.add(glob(p, true)?);
            if is_plain(p) {
                add_with_ancestors(&mut exact, parent(p));
            } else {
                let prefix = literal_prefix_dir(p);
                add_with_ancestors(&mut exact, parent(prefix));
                recursive.insert(prefix.to_owned());
            }
        }
        let mut out_files = HashSet::new();
        let mut out_dirs = HashSet::new();
        for o in &parts.outputs {
            if o.dir {
                out_dirs.insert(o.path.clone());
            } else {
                out_files.insert(o.path.clone());
            }
        }
        let mut templates = GlobSetBuilder::new();
        for t in &parts.shard_outputs {
            // `{shard.key}` of a `files` shard is a path: its `*` may cross directories.
            templates.add(glob(&template_glob(t), false)?);
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| e.to_string());
        Ok(WatchSpec {
            root: root.to_path_buf(),
            inputs: build(inputs)?,
            plain,
            config: parts.config.into_iter().collect(),
            includes: build(includes)?,
            out_files,
            out_dirs,
            out_templates: build(templates)?,
            exact,
            recursive,
            store: parts.store,
        })
    }

    /// Whether `rel` is (under) a directory orch keeps its own state in: `.orch`, `.git`
    /// or a local cache store inside the project.
    fn is_state(&self, rel: &str) -> bool {
        is_state_dir(rel)
            || self.store.as_deref().is_some_and(|s| {
                rel == s || rel.strip_prefix(s).is_some_and(|r| r.starts_with('/'))
            })
    }

    /// The project root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The configuration files (project-relative), sorted.
    pub fn config_files(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.config.iter().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Whether directory `rel` ("" for the root) must be watched.
    pub fn should_watch_dir(&self, rel: &str) -> bool {
        if rel.is_empty() {
            return true;
        }
        if self.is_state(rel) || self.is_output(rel) {
            return false;
        }
        if self.exact.contains(rel) || self.recursive.contains(rel) || self.recursive.contains("") {
            return true;
        }
        ancestors(rel).any(|a| self.recursive.contains(a))
    }

    /// What a change to `rel` (a project-relative path) means.
    pub fn classify(&self, rel: &str) -> Class {
        if rel.is_empty() || self.is_state(rel) {
            return Class::Ignored(Ignore::State);
        }
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if is_editor_temp(name) {
            return Class::Ignored(Ignore::EditorTemp);
        }
        if self.config.contains(rel) || self.includes.is_match(rel) {
            return Class::Config;
        }
        if self.is_output(rel) {
            return Class::Ignored(Ignore::Output);
        }
        if self.plain.contains(rel)
            || ancestors(rel).any(|a| self.plain.contains(a))
            || self.inputs.is_match(rel)
        {
            return Class::Input;
        }
        Class::Ignored(Ignore::Unrelated)
    }

    /// Whether `rel` is a declared output or lies under a directory output.
    fn is_output(&self, rel: &str) -> bool {
        self.out_files.contains(rel)
            || self.out_dirs.contains(rel)
            || ancestors(rel).any(|a| self.out_dirs.contains(a))
            || self.out_templates.is_match(rel)
    }
}

/// The discovered inputs the state records for the selected instances with a depfile:
/// of their last success and of each recorded shard. Read-only and best effort: a state
/// that cannot be read only means fewer files are watched.
fn discovered(project: &Project, selected: &BTreeSet<usize>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let with_depfile: Vec<&crate::model::Instance> = selected
        .iter()
        .map(|&i| &project.instances[i])
        .filter(|inst| inst.depfile.is_some())
        .collect();
    if with_depfile.is_empty() {
        return out;
    }
    let layout = crate::store::Layout::new(&project.root);
    let Ok((store, _)) = crate::store::Store::open_existing_or_empty(&layout) else {
        return out;
    };
    let records = store.load_results().unwrap_or_default();
    for inst in with_depfile {
        if let Some(s) = records
            .get(&inst.name)
            .and_then(|r| r.success.as_ref())
            .and_then(|s| {
                crate::plan::Success::decode(crate::fs::Digest(s.action_key), &s.manifest)
            })
        {
            out.extend(s.discovered.keys().cloned());
        }
        for r in store.shard_results(&inst.name).unwrap_or_default().values() {
            if let Some(d) = crate::exec::shards::decode_discovered(&r.discovered) {
                out.extend(d.into_keys());
            }
        }
    }
    out
}

/// Whether a file name is an editor's temporary file: Vim's swap files (`.x.swp`,
/// `.x.swo`, … `.x.swa`, `.x.swx`) and its write probe (`4913`, then `5036`, … in steps of 123), backups
/// (`x~`), Emacs lock and autosave files (`.#x`, `#x#`), Kate's swap files, JetBrains'
/// safe-write files and gedit's temporaries.
pub fn is_editor_temp(name: &str) -> bool {
    let vim_swap = name.rsplit_once('.').is_some_and(|(_, ext)| {
        matches!(ext.as_bytes(), [b's', b'w', b'a'..=b'p' | b'x']) || ext == "swpx"
    });
    let vim_probe = name.len() <= 6
        && name.bytes().all(|b| b.is_ascii_digit())
        && name
            .parse::<u64>()
            .is_ok_and(|n| n >= 4913 && (n - 4913) % 123 == 0);
    vim_swap
        || vim_probe
        || name.ends_with('~')
        || name.starts_with(".#")
        || (name.len() > 1 && name.starts_with('#') && name.ends_with('#'))
        || name.ends_with(".kate-swp")
        || name.ends_with("___jb_tmp___")
        || name.ends_with("___jb_old___")
        || name.starts_with(".goutputstream-")
}

/// `path` relative to `root`, '/'-separated, when it lies inside it ("" for the root).
pub fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let s = rel.to_str()?;
    Some(if std::path::MAIN_SEPARATOR == '/' {
        s.to_owned()
    } else {
        s.replace(std::path::MAIN_SEPARATOR, "/")
    })
}

/// Whether `rel` is (under) a directory orch keeps its own state in.
fn is_state_dir(rel: &str) -> bool {
    let first = rel.split('/').next().unwrap_or(rel);
    SKIP_DIRS.contains(&first)
}

/// The strict ancestors of `rel`, nearest last ("a", "a/b" for "a/b/c"); not "".
fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    rel.match_indices('/').map(move |(i, _)| &rel[..i])
}

/// The directory part of `rel` ("" at the root).
fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(d, _)| d)
}

fn add_with_ancestors(set: &mut HashSet<String>, dir: &str) {
    set.insert(dir.to_owned());
    for a in ancestors(dir) {
        set.insert(a.to_owned());
    }
}

/// The directory part of a glob before its first component with a metacharacter.
fn literal_prefix_dir(pattern: &str) -> &str {
    let mut end = 0;
    let mut start = 0;
    for component in pattern.split('/') {
        if !is_plain(component) {
            break;
        }
        start += component.len();
        end = start;
        start += 1;
    }
    pattern.get(..end).unwrap_or("")
}

fn glob(pattern: &str, literal_separator: bool) -> Result<globset::Glob, String> {
    GlobBuilder::new(pattern)
        .literal_separator(literal_separator)
        .build()
        .map_err(|e| format!("pattern `{pattern}`: {e}"))
}

/// A `merge = "none"` output template as a glob: each `{shard.*}` placeholder becomes
/// `*`, everything else is literal.
fn template_glob(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{shard.") {
        out.push_str(&globset::escape(&rest[..start]));
        match rest[start..].find('}') {
            Some(end) => {
                out.push('*');
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&globset::escape(&rest[start..]));
                rest = "";
            }
        }
    }
    out.push_str(&globset::escape(rest));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(inputs: &[&str], outputs: &[(&str, bool)], shard_outputs: &[&str]) -> WatchSpec {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        WatchSpec::from_parts(
            Path::new("/p"),
            Parts {
                inputs: s(inputs),
                outputs: outputs
                    .iter()
                    .map(|(p, dir)| Output {
                        path: p.to_string(),
                        dir: *dir,
                        schema: None,
                        meta: false,
                    })
                    .collect(),
                shard_outputs: s(shard_outputs),
                config: s(&["Orchfile.toml", "pipelines/a.toml"]),
                includes: s(&["pipelines/*.toml"]),
                store: Some("src/cache".to_owned()),
            },
        )
        .unwrap()
    }

    #[test]
    fn a_store_inside_the_project_is_state_even_under_an_input_directory() {
        let w = spec(&["src/**"], &[], &[]);
        assert_eq!(
            w.classify("src/cache/ac/k.json"),
            Class::Ignored(Ignore::State)
        );
        assert!(!w.should_watch_dir("src/cache"));
        assert!(w.should_watch_dir("src/lib"));
        assert_ne!(w.classify("src/cachet.txt"), Class::Ignored(Ignore::State));
    }

    #[test]
    fn inputs_config_and_unrelated_paths() {
        let w = spec(&["src/**/*.rs", "data/x.csv", "assets"], &[], &[]);
        assert_eq!(w.classify("src/a.rs"), Class::Input);
        assert_eq!(w.classify("src/deep/er/b.rs"), Class::Input);
        assert_eq!(w.classify("data/x.csv"), Class::Input);
        assert_eq!(w.classify("assets/img/logo.png"), Class::Input);
        assert_eq!(w.classify("Orchfile.toml"), Class::Config);
        assert_eq!(w.classify("pipelines/a.toml"), Class::Config);
        assert_eq!(w.classify("pipelines/new.toml"), Class::Config);
        for p in [
            "src/a.txt",
            "data/y.csv",
            "README.md",
            "assetsx/a",
            "srcx/a.rs",
        ] {
            assert_eq!(w.classify(p), Class::Ignored(Ignore::Unrelated), "{p}");
        }
    }

    #[test]
    fn single_star_stays_within_a_directory() {
        let w = spec(&["src/*.txt"], &[], &[]);
        assert_eq!(w.classify("src/a.txt"), Class::Input);
        assert_eq!(
            w.classify("src/sub/a.txt"),
            Class::Ignored(Ignore::Unrelated)
        );
    }

    #[test]
    fn own_work_is_ignored() {
        let w = spec(
            &["**/*"],
            &[("out/all.txt", false), ("gen", true)],
            &["pages/{shard.key}.html"],
        );
        assert_eq!(w.classify("src/a.txt"), Class::Input);
        assert_eq!(w.classify("out/all.txt"), Class::Ignored(Ignore::Output));
        assert_eq!(w.classify("out/other.txt"), Class::Input);
        assert_eq!(w.classify("gen/x/y.txt"), Class::Ignored(Ignore::Output));
        assert_eq!(
            w.classify("pages/src/a.txt.html"),
            Class::Ignored(Ignore::Output)
        );
        assert_eq!(w.classify(".orch/state.db"), Class::Ignored(Ignore::State));
        assert_eq!(w.classify(".orch"), Class::Ignored(Ignore::State));
        assert_eq!(w.classify(".git/HEAD"), Class::Ignored(Ignore::State));
        for p in [
            "src/.a.txt.swp",
            "src/.a.txt.swx",
            "src/a.txt~",
            "src/4913",
            "src/5036",
            "src/.#a.txt",
            "src/#a.txt#",
            "src/a.txt___jb_tmp___",
        ] {
            assert_eq!(w.classify(p), Class::Ignored(Ignore::EditorTemp), "{p}");
        }
        assert_eq!(w.classify("src/4914"), Class::Input);
        assert_eq!(w.classify("src/a.sw"), Class::Input);
    }

    #[test]
    fn directories_to_watch() {
        let w = spec(
            &["src/**/*.rs", "data/raw/x.csv", "assets", "docs/*/index.md"],
            &[("src/gen", true)],
            &[],
        );
        for d in [
            "",
            "src",
            "src/a/b",
            "data",
            "data/raw",
            "assets",
            "assets/img",
            "docs",
            "docs/guide",
            "pipelines",
        ] {
            assert!(w.should_watch_dir(d), "{d}");
        }
        for d in [
            "data/raw/deeper",
            "other",
            ".orch",
            ".orch/runs",
            ".git",
            "src/gen",
            "src/gen/x",
            "srcx",
        ] {
            assert!(!w.should_watch_dir(d), "{d}");
        }
        let everything = spec(&["*.txt"], &[], &[]);
        assert!(everything.should_watch_dir("any/where"));
        assert!(!everything.should_watch_dir(".orch/logs"));
    }

    #[test]
    fn prefixes_and_templates() {
        assert_eq!(literal_prefix_dir("src/**/*.rs"), "src");
        assert_eq!(literal_prefix_dir("*.txt"), "");
        assert_eq!(literal_prefix_dir("a/b/c*.rs"), "a/b");
        assert_eq!(literal_prefix_dir("x/{a,b/c}/d"), "x");
        assert_eq!(
            template_glob("out/{shard.key}.[1].html"),
            "out/*.[[]1[]].html"
        );
        assert_eq!(template_glob("p/{shard.index}-{shard.key}"), "p/*-*");
    }

    #[test]
    fn relative_paths() {
        let root = Path::new("/p/root");
        assert_eq!(
            relative(root, Path::new("/p/root/a/b.txt")).as_deref(),
            Some("a/b.txt")
        );
        assert_eq!(relative(root, root).as_deref(), Some(""));
        assert_eq!(relative(root, Path::new("/p/rootx/a")), None);
    }
}
