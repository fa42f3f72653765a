//! Targets that are files: a command-line path made project-relative, the instance that
//! declares it as an output, and the instances that read it as a source.
//!
//! Everything here is lexical (declared paths, templates and globs); nothing touches the
//! disk, so `plan` and `build --dry-run` resolve the same targets as `build`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path};

use crate::exec::shards::matches_template;
use crate::model::Project;
use crate::model::path::is_plain;
use crate::shard::Strategy;

/// `arg` as a project-relative path: relative to `cwd` (the project-relative directory
/// the command started in, "" for the root), with `.` and `..` resolved lexically. An
/// absolute path works when it lies inside `root`. None when it leaves the project.
pub fn project_path(root: &Path, cwd: &str, arg: &str) -> Option<String> {
    let arg_path = Path::new(arg);
    let rel = if arg_path.is_absolute() {
        let inside = |p: &Path| p.strip_prefix(root).ok().map(Path::to_path_buf);
        // `root` is canonical; the argument may reach it through a symlink.
        inside(arg_path).or_else(|| arg_path.canonicalize().ok().and_then(|c| inside(&c)))?
    } else {
        Path::new(cwd).join(arg_path)
    };
    let mut parts: Vec<String> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The instances that declare `path` as an output: an exact output; else one whose
/// `merge = "none"` shard template can produce it; else one whose directory output (or
/// directory shard template) holds it. Outputs are unique across instances, so this is
/// one instance unless templates of several instances can produce the same path.
pub fn producers(project: &Project, path: &str) -> BTreeSet<usize> {
    OutputIndex::new(project).producers(path)
}

/// Every declared output of a project, indexed for many [`OutputIndex::producers`]
/// lookups (a build asks once per file a depfile lists).
pub struct OutputIndex {
    /// File and directory outputs → the instance declaring them.
    exact: HashMap<String, usize>,
    /// Directory outputs → the instance declaring them.
    dirs: HashMap<String, usize>,
    /// `merge = "none"` templates: (template, is a directory, instance).
    templates: Vec<(String, bool, usize)>,
}

impl OutputIndex {
    /// Indexes the outputs of every instance.
    pub fn new(project: &Project) -> OutputIndex {
        let mut index = OutputIndex {
            exact: HashMap::new(),
            dirs: HashMap::new(),
            templates: Vec::new(),
        };
        for (i, inst) in project.instances.iter().enumerate() {
            for o in &inst.outputs {
                index.exact.insert(o.path.clone(), i);
                if o.dir {
                    index.dirs.insert(o.path.clone(), i);
                }
            }
            for o in &inst.shard_outputs {
                index.templates.push((o.path.clone(), o.dir, i));
            }
        }
        index
    }

    /// [`producers`] of `path`.
    pub fn producers(&self, path: &str) -> BTreeSet<usize> {
        if let Some(&i) = self.exact.get(path) {
            return BTreeSet::from([i]);
        }
        let templated: BTreeSet<usize> = self
            .templates
            .iter()
            .filter(|(t, dir, _)| !dir && matches_template(t, path))
            .map(|&(_, _, i)| i)
            .collect();
        if !templated.is_empty() {
            return templated;
        }
        ancestors(path)
            .flat_map(|dir| {
                self.dirs.get(dir).copied().into_iter().chain(
                    self.templates
                        .iter()
                        .filter(move |(t, is_dir, _)| *is_dir && matches_template(t, dir))
                        .map(|&(_, _, i)| i),
                )
            })
            .collect()
    }
}

/// The directories above `path`, nearest first.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.char_indices()
        .rev()
        .filter(|&(_, c)| c == '/')
        .map(move |(k, _)| &path[..k])
}

/// One instance that reads a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reader {
    /// The instance.
    pub instance: usize,
    /// The input pattern that names the path.
    pub pattern: String,
    /// The pattern is the instance's shard source.
    pub shard_source: bool,
}

/// The instances whose inputs name `path`: a plain input equal to it or a directory
/// holding it, or a glob that matches it. Sorted by instance.
pub fn readers(project: &Project, path: &str) -> Vec<Reader> {
    let mut out = Vec::new();
    for (i, inst) in project.instances.iter().enumerate() {
        let Some(pattern) = inst.inputs.iter().find(|p| pattern_names(p, path)) else {
            continue;
        };
        let shard_source = inst.shard.as_ref().is_some_and(|s| match &s.strategy {
            Strategy::Files { pattern } => pattern_names(pattern, path),
            Strategy::Chunk { source, .. } | Strategy::Group { source, .. } => source == path,
        });
        out.push(Reader {
            instance: i,
            pattern: pattern.clone(),
            shard_source,
        });
    }
    out
}

/// Whether the input pattern `pattern` names `path` (matching as the input walk does:
/// `*` stays within one directory).
fn pattern_names(pattern: &str, path: &str) -> bool {
    if is_plain(pattern) {
        return path == pattern
            || (path.len() > pattern.len()
                && path.starts_with(pattern)
                && path.as_bytes()[pattern.len()] == b'/');
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .is_ok_and(|g| g.compile_matcher().is_match(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::resolve_targets_from;

    const ORCHFILE: &str = r#"
[phase.gen]
run = "true"
outputs = ["gen/"]

[phase.compile]
shard = { strategy = "files", source = "src/**/*.c", merge = "none" }
run = "true"
inputs = ["include"]
outputs = ["obj/{shard.key}.o"]

[phase.lib]
needs = ["compile"]
run = "true"
inputs = ["src/*.c"]
outputs = ["lib.a", "compile"]
"#;

    fn project() -> (tempfile::TempDir, Project) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::orchfile::ORCHFILE);
        std::fs::write(&path, ORCHFILE).unwrap();
        let raw = crate::orchfile::load(&path).unwrap();
        let project = crate::model::validate(raw).unwrap();
        (dir, project)
    }

    fn names(p: &Project, set: &BTreeSet<usize>) -> Vec<String> {
        set.iter().map(|&i| p.instances[i].name.clone()).collect()
    }

    #[test]
    fn outputs_select_their_producer() {
        let (_dir, p) = project();
        assert_eq!(names(&p, &producers(&p, "lib.a")), ["lib"]);
        assert_eq!(names(&p, &producers(&p, "gen/a/b.txt")), ["gen"]);
        assert_eq!(names(&p, &producers(&p, "gen")), ["gen"]);
        assert_eq!(names(&p, &producers(&p, "obj/src/x/y.c.o")), ["compile"]);
        assert!(producers(&p, "obj/x.txt").is_empty());
        assert!(producers(&p, "src/a.c").is_empty());
    }

    #[test]
    fn sources_name_their_readers() {
        let (_dir, p) = project();
        let r = readers(&p, "src/a.c");
        let who: Vec<(&str, bool)> = r
            .iter()
            .map(|r| (p.instances[r.instance].name.as_str(), r.shard_source))
            .collect();
        assert_eq!(who, [("compile", true), ("lib", false)]);
        let r = readers(&p, "include/h.h");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].pattern, "include");
        assert!(!r[0].shard_source);
        assert!(readers(&p, "README").is_empty());
    }

    #[test]
    fn targets_are_phases_first_then_paths_from_the_starting_directory() {
        let (_dir, p) = project();
        let t = |args: &[&str], cwd: &str| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            resolve_targets_from(&p, &args, cwd).map(|set| names(&p, &set))
        };
        // `compile` is a phase and an output of `lib`: the phase wins; `./` makes a path.
        assert_eq!(t(&["compile"], "").unwrap(), ["compile"]);
        assert_eq!(t(&["./compile"], "").unwrap(), ["lib"]);
        assert_eq!(t(&["../lib.a"], "src").unwrap(), ["lib"]);
        assert_eq!(t(&["gen/x", "lib.a"], "").unwrap(), ["gen", "lib"]);
        let e = t(&["lib.a"], "src").unwrap_err();
        assert!(e.message.contains("unknown target `lib.a`"), "{e:?}");
        assert_eq!(
            e.help.as_deref(),
            Some("did you mean `../lib.a`? paths are relative to the current directory")
        );
        let e = t(&["src/a.c"], "").unwrap_err();
        assert!(
            e.message
                .contains("no phase is named so and no phase declares it as an output"),
            "{e:?}"
        );
        assert!(
            e.help
                .as_deref()
                .is_some_and(|h| h.contains("read by `compile`, `lib`")),
            "{e:?}"
        );
    }

    #[test]
    fn paths_resolve_against_the_starting_directory() {
        let root = Path::new("/p");
        assert_eq!(
            project_path(root, "", "./out/a.txt").as_deref(),
            Some("out/a.txt")
        );
        assert_eq!(
            project_path(root, "sub", "x.txt").as_deref(),
            Some("sub/x.txt")
        );
        assert_eq!(
            project_path(root, "sub/dir", "../y").as_deref(),
            Some("sub/y")
        );
        assert_eq!(
            project_path(root, "sub", "../build/x.o").as_deref(),
            Some("build/x.o")
        );
        assert_eq!(
            project_path(root, "sub", "/p/out/a").as_deref(),
            Some("out/a")
        );
        assert_eq!(project_path(root, "", "../outside"), None);
        assert_eq!(project_path(root, "", "."), None);
        assert_eq!(project_path(root, "", "/elsewhere/a"), None);
    }

    #[test]
    fn ancestors_are_nearest_first() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a/b", "a"]);
        assert_eq!(ancestors("a").count(), 0);
    }

    #[test]
    fn patterns_name_files_directories_and_glob_matches() {
        assert!(pattern_names("src/a.c", "src/a.c"));
        assert!(pattern_names("src", "src/a.c"));
        assert!(!pattern_names("src", "srcx/a.c"));
        assert!(pattern_names("src/*.c", "src/a.c"));
        assert!(!pattern_names("src/*.c", "src/sub/a.c"));
        assert!(pattern_names("src/**/*.c", "src/sub/a.c"));
    }
}
