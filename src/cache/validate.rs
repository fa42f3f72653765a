//! Checks a cache entry against what its instance declares, before a byte is restored.
//!
//! Entries, local or remote, are untrusted input: anyone who can write the store can
//! write one. An entry is used only when every path it names is a declared output (or
//! matches a `merge = "none"` template) with the declared kind, every declared output is
//! there, every path inside a directory output is a plain relative path below a
//! directory of the same entry, no symlink leads out of its output directory, and each
//! directory output's digest describes exactly the listed tree. Anything else is a miss.
//! This module only reasons about the entry; it never touches the file system.

use std::collections::BTreeMap;

use crate::exec::shards::matches_template;
use crate::fs::digest::{TreeItem, hash_tree_items};

use super::{ENTRY_FORMAT, Entry, Node, Stored};

/// What an instance declares it produces: everything an entry may restore.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declared {
    /// Declared outputs: normalised project-relative path, and whether it is a directory.
    pub outputs: Vec<(String, bool)>,
    /// `merge = "none"` per-shard output templates (files).
    pub templates: Vec<String>,
    /// File outputs declared with `meta = true`: the only ones an entry may hold a
    /// sidecar for.
    pub meta: Vec<String>,
}

impl Declared {
    /// The outputs `inst` declares.
    pub fn of(inst: &crate::model::Instance) -> Declared {
        Declared {
            outputs: inst
                .outputs
                .iter()
                .map(|o| (o.path.clone(), o.dir))
                .collect(),
            templates: inst.shard_outputs.iter().map(|o| o.path.clone()).collect(),
            meta: inst
                .outputs
                .iter()
                .filter(|o| o.meta && !o.dir)
                .map(|o| o.path.clone())
                .collect(),
        }
    }
}

/// Why an entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Another entry format.
    #[error("its format is {0}, not {ENTRY_FORMAT}")]
    Format(u32),
    /// An output path that is not a plain relative path.
    #[error("it names `{path}`, {why}")]
    BadPath {
        /// The path as written in the entry.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An output the instance does not declare.
    #[error("it names `{0}`, which the instance does not declare as an output")]
    Undeclared(String),
    /// A declared output the entry lacks.
    #[error("it lacks the declared output `{0}`")]
    Missing(String),
    /// A file where a directory is declared, or the reverse.
    #[error("it holds a {found} for `{path}`, declared as a {declared}")]
    WrongKind {
        /// The output.
        path: String,
        /// `file` or `directory`, as declared.
        declared: &'static str,
        /// What the entry holds.
        found: &'static str,
    },
    /// A path inside a directory output that is not a plain relative path.
    #[error("it names `{rel}` inside `{output}`, {why}")]
    BadNodePath {
        /// The directory output.
        output: String,
        /// The path as written.
        rel: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A path inside a directory output whose parent is not a directory of the entry.
    #[error("it names `{output}/{rel}`, whose parent is not a directory of the entry")]
    Orphan {
        /// The directory output.
        output: String,
        /// The path.
        rel: String,
    },
    /// A symlink leading out of its output directory (or through another symlink).
    #[error("its symlink `{output}/{rel}` -> `{target}` leads out of `{output}`")]
    EscapingLink {
        /// The directory output.
        output: String,
        /// The link.
        rel: String,
        /// Its target.
        target: String,
    },
    /// A file whose mode and execute bit disagree.
    #[error("its mode for `{0}` disagrees with its execute bit")]
    Mode(String),
    /// A directory output whose digest does not describe its listing.
    #[error("the digest of `{0}` does not match the files it lists")]
    TreeDigest(String),
    /// A discovered input that is not a plain project path outside `.orch/`.
    #[error("it names the discovered input `{path}`, {why}")]
    BadDiscovered {
        /// The path as written.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// More discovered inputs than a depfile may list.
    #[error("it lists {0} discovered inputs, more than a depfile may")]
    TooManyDiscovered(usize),
    /// A sidecar for an output not declared with `meta = true`, or one that describes
    /// other content than the entry holds for it.
    #[error("its sidecar for `{0}` does not describe an output declared with `meta = true`")]
    BadMeta(String),
}

/// Checks `entry` against `declared`; Ok means restoring it writes only declared outputs,
/// each of the declared kind, and nothing outside their directories.
pub fn validate(entry: &Entry, declared: &Declared) -> Result<(), Invalid> {
    if entry.v != ENTRY_FORMAT {
        return Err(Invalid::Format(entry.v));
    }
    // Discovered inputs are only read (hashed, to compare), never written; still, each
    // must be a project file orch would read anyway. A BTreeMap keeps them sorted.
    if entry.discovered.len() > crate::fs::depfile::MAX_DEPFILE_ENTRIES {
        return Err(Invalid::TooManyDiscovered(entry.discovered.len()));
    }
    for path in entry.discovered.keys() {
        plain_relative(path).map_err(|why| Invalid::BadDiscovered {
            path: path.clone(),
            why,
        })?;
        if path == ".orch" || path.starts_with(".orch/") {
            return Err(Invalid::BadDiscovered {
                path: path.clone(),
                why: "a path inside `.orch/`",
            });
        }
    }
    let kinds: BTreeMap<&str, bool> = declared
        .outputs
        .iter()
        .map(|(p, d)| (p.as_str(), *d))
        .collect();
    for (path, stored) in &entry.outputs {
        plain_relative(path).map_err(|why| Invalid::BadPath {
            path: path.clone(),
            why,
        })?;
        let dir = match kinds.get(path.as_str()) {
            Some(d) => *d,
            None if declared.templates.iter().any(|t| matches_template(t, path)) => false,
            None => return Err(Invalid::Undeclared(path.clone())),
        };
        match (stored, dir) {
            (
                Stored::File {
                    executable, mode, ..
                },
                false,
            ) => check_mode(path, *executable, *mode)?,
            (Stored::Dir { digest, entries }, true) => {
                check_tree(path, entries)?;
                if tree_digest(entries) != *digest {
                    return Err(Invalid::TreeDigest(path.clone()));
                }
            }
            (Stored::File { .. }, true) => {
                return Err(Invalid::WrongKind {
                    path: path.clone(),
                    declared: "directory",
                    found: "file",
                });
            }
            (Stored::Dir { .. }, false) => {
                return Err(Invalid::WrongKind {
                    path: path.clone(),
                    declared: "file",
                    found: "directory",
                });
            }
        }
    }
    // A sidecar is written beside its output: it must name that output, declared with
    // `meta = true`, and the very content the entry restores there.
    for (path, sidecar) in &entry.meta {
        let holds = match entry.outputs.get(path) {
            Some(stored @ Stored::File { .. }) => stored.digest() == sidecar.artifact.digest,
            _ => false,
        };
        if !holds || sidecar.artifact.path != *path || !declared.meta.contains(path) {
            return Err(Invalid::BadMeta(path.clone()));
        }
    }
    match kinds.keys().find(|p| !entry.outputs.contains_key(**p)) {
        Some(missing) => Err(Invalid::Missing((*missing).to_owned())),
        None => Ok(()),
    }
}

/// A `/`-separated relative path with no empty, `.` or `..` component.
fn plain_relative(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("an empty path");
    }
    if path.starts_with('/') {
        return Err("an absolute path");
    }
    if path.contains('\0') {
        return Err("a path with a NUL byte");
    }
    for c in path.split('/') {
        match c {
            ".." => return Err("a path that climbs out with `..`"),
            "" | "." => return Err("a path that is not normalised"),
            _ => {}
        }
    }
    Ok(())
}

fn check_mode(path: &str, executable: bool, mode: Option<u32>) -> Result<(), Invalid> {
    match mode {
        Some(m) if (m & 0o111 != 0) != executable || m & !0o777 != 0 => {
            Err(Invalid::Mode(path.to_owned()))
        }
        _ => Ok(()),
    }
}

/// Every node path is plain, lies below a directory node of the same entry (so nothing
/// is ever written through a symlink it creates), and every symlink stays inside.
fn check_tree(output: &str, entries: &BTreeMap<String, Node>) -> Result<(), Invalid> {
    for (rel, node) in entries {
        plain_relative(rel).map_err(|why| Invalid::BadNodePath {
            output: output.to_owned(),
            rel: rel.clone(),
            why,
        })?;
        let mut prefix = rel.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if entries.get(parent) != Some(&Node::Dir) {
                return Err(Invalid::Orphan {
                    output: output.to_owned(),
                    rel: rel.clone(),
                });
            }
            prefix = parent;
        }
        match node {
            Node::Symlink { target } => {
                if !link_stays_inside(rel, target, entries) {
                    return Err(Invalid::EscapingLink {
                        output: output.to_owned(),
                        rel: rel.clone(),
                        target: target.clone(),
                    });
                }
            }
            Node::File {
                executable, mode, ..
            } => check_mode(&format!("{output}/{rel}"), *executable, *mode)?,
            Node::Dir => {}
        }
    }
    Ok(())
}

/// Whether the link at `rel` with `target` resolves inside the output directory.
/// Resolution is lexical, so it must not pass through another symlink of the entry: a
/// `..` after a link would climb from wherever that link points.
fn link_stays_inside(rel: &str, target: &str, entries: &BTreeMap<String, Node>) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    let mut at: Vec<&str> = rel.split('/').collect();
    at.pop();
    let parts: Vec<&str> = target.split('/').collect();
    for (n, part) in parts.iter().enumerate() {
        match *part {
            "" | "." => {}
            ".." => {
                if at.pop().is_none() {
                    return false;
                }
            }
            name => {
                at.push(name);
                let more = parts[n + 1..].iter().any(|p| !p.is_empty() && *p != ".");
                if more && matches!(entries.get(&at.join("/")), Some(Node::Symlink { .. })) {
                    return false;
                }
            }
        }
    }
    true
}

/// The tree digest of a listing, as `fs::hash_tree` computes it once restored.
fn tree_digest(entries: &BTreeMap<String, Node>) -> crate::fs::Digest {
    let items: Vec<TreeItem<'_>> = entries
        .iter()
        .map(|(rel, node)| match node {
            Node::File {
                digest, executable, ..
            } => TreeItem::File {
                rel,
                exec: *executable,
                digest: *digest,
            },
            Node::Dir => TreeItem::Dir { rel },
            Node::Symlink { target } => TreeItem::Symlink { rel, target },
        })
        .collect();
    hash_tree_items(&items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{Digest, hash_bytes};

    fn file(content: &str) -> Node {
        Node::File {
            digest: hash_bytes(content.as_bytes()),
            size: content.len() as u64,
            executable: false,
            mode: Some(0o644),
        }
    }

    fn link(target: &str) -> Node {
        Node::Symlink {
            target: target.into(),
        }
    }

    fn stored_file() -> Stored {
        Stored::File {
            digest: hash_bytes(b"a"),
            size: 1,
            executable: false,
            mode: None,
        }
    }

    fn tree(nodes: &[(&str, Node)]) -> Stored {
        let entries: BTreeMap<String, Node> = nodes
            .iter()
            .map(|(r, n)| ((*r).to_owned(), n.clone()))
            .collect();
        Stored::Dir {
            digest: tree_digest(&entries),
            entries,
        }
    }

    fn entry(outputs: Vec<(&str, Stored)>) -> Entry {
        Entry {
            discovered: BTreeMap::new(),
            meta: BTreeMap::new(),
            v: ENTRY_FORMAT,
            outputs: outputs
                .into_iter()
                .map(|(p, s)| (p.to_owned(), s))
                .collect(),
            duration_ms: 0,
        }
    }

    fn declared() -> Declared {
        Declared {
            outputs: vec![("out/a.txt".into(), false), ("out/tree".into(), true)],
            templates: vec![],
            meta: vec!["out/a.txt".into()],
        }
    }

    fn sound_tree() -> Stored {
        tree(&[
            ("f.txt", file("f")),
            ("sub", Node::Dir),
            ("sub/g.txt", file("g")),
            ("sub/up", link("../f.txt")),
            ("sub/self", link("./g.txt")),
        ])
    }

    fn with_tree(t: Stored) -> Entry {
        entry(vec![("out/a.txt", stored_file()), ("out/tree", t)])
    }

    fn sidecar(path: &str, digest: crate::fs::Digest) -> crate::model::meta::Sidecar {
        crate::model::meta::Sidecar {
            v: 1,
            artifact: crate::model::meta::Artifact {
                path: path.into(),
                digest,
                size: 1,
            },
            schema: None,
            instance: "a".into(),
            phase: "a".into(),
            command: String::new(),
            env: BTreeMap::new(),
            parents: vec![],
            run_id: "r".into(),
            host: "h".into(),
            time: "t".into(),
            restored_in_run: None,
        }
    }

    #[test]
    fn a_sidecar_must_describe_a_meta_output_as_stored() {
        let mut e = with_tree(sound_tree());
        e.meta
            .insert("out/a.txt".into(), sidecar("out/a.txt", hash_bytes(b"a")));
        assert_eq!(validate(&e, &declared()), Ok(()));
        for (key, s) in [
            // Other content than the entry restores.
            ("out/a.txt", sidecar("out/a.txt", hash_bytes(b"b"))),
            // Written somewhere else than beside its output.
            ("out/a.txt", sidecar("out/b.txt", hash_bytes(b"a"))),
            // A directory output, or none.
            ("out/tree", sidecar("out/tree", hash_bytes(b"a"))),
            ("out/c.txt", sidecar("out/c.txt", hash_bytes(b"a"))),
        ] {
            let mut bad = with_tree(sound_tree());
            bad.meta.insert(key.into(), s);
            assert_eq!(
                validate(&bad, &declared()),
                Err(Invalid::BadMeta(key.into()))
            );
        }
        let mut plain = declared();
        plain.meta.clear();
        assert_eq!(
            validate(&e, &plain),
            Err(Invalid::BadMeta("out/a.txt".into()))
        );
    }

    #[test]
    fn discovered_inputs_must_be_plain_project_paths() {
        let mut e = with_tree(sound_tree());
        e.discovered.insert("inc/a.h".into(), None);
        assert_eq!(validate(&e, &declared()), Ok(()));
        for bad in [
            "../etc/passwd",
            "/usr/include/stdio.h",
            "a/./b",
            ".orch/key",
            "",
        ] {
            let mut e = e.clone();
            e.discovered.insert(bad.into(), None);
            assert!(
                matches!(
                    validate(&e, &declared()),
                    Err(Invalid::BadDiscovered { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_sound_entry_is_valid() {
        assert_eq!(validate(&with_tree(sound_tree()), &declared()), Ok(()));
    }

    #[test]
    fn every_output_must_be_declared_plain_and_of_its_kind() {
        let d = declared();
        for bad in [
            "../x",
            "/etc/passwd",
            "out/tree/../../x",
            "out//a.txt",
            "./out/a.txt",
            "",
        ] {
            let mut e = with_tree(sound_tree());
            e.outputs.insert(bad.into(), stored_file());
            assert!(
                matches!(validate(&e, &d), Err(Invalid::BadPath { .. })),
                "{bad}"
            );
        }
        for undeclared in ["Orchfile.toml", "out/b.txt", "out/tree/f.txt"] {
            let mut e = with_tree(sound_tree());
            e.outputs.insert(undeclared.into(), stored_file());
            assert_eq!(
                validate(&e, &d),
                Err(Invalid::Undeclared(undeclared.into()))
            );
        }
        let missing = entry(vec![("out/tree", sound_tree())]);
        assert_eq!(
            validate(&missing, &d),
            Err(Invalid::Missing("out/a.txt".into()))
        );
        assert_eq!(
            validate(&entry(vec![]), &d),
            Err(Invalid::Missing("out/a.txt".into()))
        );
        let file_for_dir = entry(vec![
            ("out/a.txt", stored_file()),
            ("out/tree", stored_file()),
        ]);
        assert!(matches!(
            validate(&file_for_dir, &d),
            Err(Invalid::WrongKind { .. })
        ));
        let dir_for_file = entry(vec![
            ("out/a.txt", sound_tree()),
            ("out/tree", sound_tree()),
        ]);
        assert!(matches!(
            validate(&dir_for_file, &d),
            Err(Invalid::WrongKind { .. })
        ));
        let mut old = with_tree(sound_tree());
        old.v = ENTRY_FORMAT + 1;
        assert!(matches!(validate(&old, &d), Err(Invalid::Format(_))));
    }

    #[test]
    fn merge_none_outputs_match_their_templates_only() {
        let d = Declared {
            outputs: vec![],
            templates: vec!["out/per/{shard.key}.txt".into()],
            meta: vec![],
        };
        assert_eq!(
            validate(&entry(vec![("out/per/a.txt", stored_file())]), &d),
            Ok(())
        );
        assert!(validate(&entry(vec![("out/per/../../x.txt", stored_file())]), &d).is_err());
        assert!(validate(&entry(vec![("out/other.txt", stored_file())]), &d).is_err());
        assert!(validate(&entry(vec![("out/per/a.txt", sound_tree())]), &d).is_err());
    }

    #[test]
    fn tree_paths_stay_below_directories_of_the_entry() {
        let d = declared();
        for bad in ["../x", "/abs", "a//b", "sub/./g", "sub/.."] {
            let e = with_tree(tree(&[("sub", Node::Dir), (bad, file("x"))]));
            assert!(
                matches!(validate(&e, &d), Err(Invalid::BadNodePath { .. })),
                "{bad}"
            );
        }
        // Written through a symlink of the same entry, or below a file or nothing.
        for parent in [link("."), file("x")] {
            let e = with_tree(tree(&[("via", parent), ("via/x", file("x"))]));
            assert!(
                matches!(validate(&e, &d), Err(Invalid::Orphan { .. })),
                "{e:?}"
            );
        }
        let e = with_tree(tree(&[("no/such/x", file("x"))]));
        assert!(matches!(validate(&e, &d), Err(Invalid::Orphan { .. })));
    }

    #[test]
    fn symlinks_never_lead_out_of_their_output() {
        let d = declared();
        for target in [
            "/etc",
            "..",
            "../..",
            "sub/../..",
            "",
            "s/x/../..",
            "s/..",
            "a/../../b",
        ] {
            let e = with_tree(tree(&[
                ("s", link(".")),
                ("a", Node::Dir),
                ("l", link(target)),
            ]));
            assert!(
                matches!(validate(&e, &d), Err(Invalid::EscapingLink { .. })),
                "{target}"
            );
        }
        for target in [".", "a", "a/..", "s", "missing/..", "a/b/../c"] {
            let e = with_tree(tree(&[
                ("s", link(".")),
                ("a", Node::Dir),
                ("l", link(target)),
            ]));
            assert_eq!(validate(&e, &d), Ok(()), "{target}");
        }
    }

    #[test]
    fn a_tree_digest_must_describe_the_listing() {
        let Stored::Dir { entries, .. } = sound_tree() else {
            unreachable!()
        };
        let lying = Stored::Dir {
            digest: Digest([7; 32]),
            entries,
        };
        assert_eq!(
            validate(&with_tree(lying), &declared()),
            Err(Invalid::TreeDigest("out/tree".into()))
        );
    }

    #[test]
    fn modes_must_agree_with_the_execute_bit() {
        let e = entry(vec![
            (
                "out/a.txt",
                Stored::File {
                    digest: hash_bytes(b"a"),
                    size: 1,
                    executable: false,
                    mode: Some(0o755),
                },
            ),
            ("out/tree", sound_tree()),
        ]);
        assert_eq!(
            validate(&e, &declared()),
            Err(Invalid::Mode("out/a.txt".into()))
        );
    }

    #[test]
    fn the_listing_digest_is_the_digest_of_the_restored_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("a.txt"), "1").unwrap();
        std::fs::write(root.join("a/b/c"), "2").unwrap();
        std::fs::write(root.join("a-b"), "3").unwrap();
        std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            root.join("run.sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("a/b/c", root.join("link")).unwrap();
        let mut entries = BTreeMap::new();
        entries.insert("a".to_owned(), Node::Dir);
        entries.insert("a/b".to_owned(), Node::Dir);
        entries.insert("a/b/c".to_owned(), file("2"));
        entries.insert("a-b".to_owned(), file("3"));
        entries.insert("a.txt".to_owned(), file("1"));
        entries.insert("empty".to_owned(), Node::Dir);
        entries.insert("link".to_owned(), link("a/b/c"));
        entries.insert(
            "run.sh".to_owned(),
            Node::File {
                digest: hash_bytes(b"#!/bin/sh\n"),
                size: 10,
                executable: true,
                mode: None,
            },
        );
        assert_eq!(tree_digest(&entries), crate::fs::hash_tree(root).unwrap());
    }
}
