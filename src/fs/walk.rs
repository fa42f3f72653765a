//! One directory walk that expands many owners' glob sets at once, pruned to the directories
//! some pattern could match, with plain-path patterns answered by direct stats instead.
//!
//! The walk is where globs meet the disk, so it also refuses what must never become an
//! input: a match that is a symlink leading outside the root is an error naming it, and
//! matches that are FIFOs, sockets or devices are set aside for a warning (reading one
//! could block forever or never end).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use walkdir::WalkDir;

use super::stat::{FileStat, is_absent};

/// Characters that make a pattern component non-literal. `\` is included because globset
/// treats it as an escape (`a\b` matches `ab`), so such a component is not its own path.
const META: &[char] = &['*', '?', '[', '{', '\\'];

/// What one walk found.
#[derive(Debug, Default)]
pub struct Expansion {
    /// Per owner, the sorted, de-duplicated relative paths of the files matched.
    pub files: Vec<Vec<String>>,
    /// Matched paths that are not regular files (FIFOs, sockets, devices), sorted, with
    /// what each is: never inputs.
    pub special: Vec<(String, &'static str)>,
    /// Every directory the walk listed ("" for the root), with its `lstat` taken just
    /// after the listing (None when it could not be taken): a file added or removed under
    /// one moves its mtime, which is how `.orch/fresh.bin` notices without walking.
    pub listed: Vec<(String, Option<FileStat>)>,
}

/// Why a walk failed.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// The file system failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A matched path is a symlink leading outside the root (or dangling into nowhere
    /// known): reading it would read outside the project.
    #[error("`{path}` is a symlink that leads outside the project root")]
    Escapes {
        /// The matched path, relative to the root.
        path: String,
    },
    /// A matched file's name is not valid UTF-8, which orch cannot name in keys or commands.
    #[error("`{path}` has a name that is not valid UTF-8")]
    NotUtf8 {
        /// The matched path, relative to the root, with the invalid bytes replaced.
        path: String,
    },
}

/// What a matched directory entry is.
enum Kind {
    /// A regular file, or a symlink to one inside the root.
    File,
    /// A FIFO, socket or device (itself or through a symlink).
    Special(&'static str),
    /// A symlink leading out of the root.
    Escapes,
    /// A directory, or a dangling or looping link: not a file.
    Other,
}

/// What `path` is; `link` when it is itself a symlink (then its target must be inside
/// `real_root`).
fn kind_of(path: &Path, link: bool, real_root: &Path) -> io::Result<Kind> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        // Dangling or looping links are simply not files.
        Err(e) if is_absent(&e) || is_loop(&e) => return Ok(Kind::Other),
        Err(e) => return Err(e),
    };
    // The walk never enters a symlinked directory, so one reads nothing.
    if meta.is_dir() {
        return Ok(Kind::Other);
    }
    if link {
        match path.canonicalize() {
            Ok(target) if target.starts_with(real_root) => {}
            Ok(_) => return Ok(Kind::Escapes),
            Err(e) if is_absent(&e) || is_loop(&e) => return Ok(Kind::Other),
            Err(e) => return Err(e),
        }
    }
    Ok(special_kind(&meta.file_type()).map_or_else(
        || {
            if meta.is_file() {
                Kind::File
            } else {
                Kind::Other
            }
        },
        Kind::Special,
    ))
}

use super::digest::special_kind;

/// Expands many sets of glob patterns with a single directory walk of the project.
///
/// Owner `i` has a list of patterns (relative to root, '/'-separated, globset syntax with
/// `literal_separator(true)` so `*` does not cross '/', and `**` does). Patterns are matched
/// verbatim against normalized relative paths, so a pattern such as `./a` or `a//b` never
/// matches; callers normalize patterns first.
#[derive(Debug, Clone)]
pub struct MultiGlob {
    /// Number of owners, i.e. the length of `expand`'s result.
    owners: usize,
    /// Distinct plain-path patterns (sorted) and the owners that listed each.
    literals: Vec<(String, Vec<usize>)>,
    /// All distinct non-literal patterns; may be empty.
    set: GlobSet,
    /// For each glob index in `set`, the owners that listed that pattern.
    glob_owners: Vec<Vec<usize>>,
    /// Literal prefix directory of every glob pattern ("" for the root): the walk descends
    /// into these and everything below them.
    prefixes: HashSet<String>,
    /// Strict ancestors of `prefixes`: walked through (to reach a prefix) but not beyond.
    prefix_ancestors: HashSet<String>,
}

impl MultiGlob {
    /// Compile. Errors: `(owner_index, pattern_index, globset::Error)` for the first bad pattern.
    pub fn new(
        patterns_per_owner: &[Vec<String>],
    ) -> Result<MultiGlob, (usize, usize, globset::Error)> {
        let mut literal_owners: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut glob_index: HashMap<&str, usize> = HashMap::new();
        let mut globs: Vec<Glob> = Vec::new();
        // (owner, pattern) that introduced each glob, to attribute GlobSet build failures.
        let mut glob_origin: Vec<(usize, usize)> = Vec::new();
        let mut glob_owners: Vec<Vec<usize>> = Vec::new();
        let mut prefixes = HashSet::new();
        let mut prefix_ancestors = HashSet::new();

        for (oi, patterns) in patterns_per_owner.iter().enumerate() {
            for (pi, pattern) in patterns.iter().enumerate() {
                let pattern = pattern.as_str();
                if let Some(owners) = literal_owners.get_mut(pattern) {
                    owners.push(oi);
                    continue;
                }
                if let Some(&gi) = glob_index.get(pattern) {
                    glob_owners[gi].push(oi);
                    continue;
                }
                // Parse even plain paths: it is cheap (no regex is compiled here) and keeps the
                // error behaviour identical to globset's (e.g. a stray `}` is rejected).
                let glob = GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| (oi, pi, e))?;
                if !pattern.contains(META) {
                    literal_owners.insert(pattern, vec![oi]);
                    continue;
                }
                let prefix = literal_prefix_dir(pattern);
                for (i, _) in prefix.match_indices('/') {
                    prefix_ancestors.insert(prefix[..i].to_string());
                }
                prefixes.insert(prefix.to_string());
                glob_index.insert(pattern, globs.len());
                globs.push(glob);
                glob_origin.push((oi, pi));
                glob_owners.push(vec![oi]);
            }
        }

        let set = match build_set(&globs) {
            Ok(set) => set,
            Err(e) => return Err(attribute_set_error(&globs, &glob_origin, e)),
        };
        for owners in &mut glob_owners {
            owners.dedup();
        }
        let mut literals: Vec<(String, Vec<usize>)> = literal_owners
            .into_iter()
            .map(|(p, mut owners)| {
                // Owners were pushed in increasing order; repeats come from one owner listing
                // the same path twice.
                owners.dedup();
                (p.to_string(), owners)
            })
            .collect();
        literals.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        Ok(MultiGlob {
            owners: patterns_per_owner.len(),
            literals,
            set,
            glob_owners,
            prefixes,
            prefix_ancestors,
        })
    }

    /// Walks `root` once (skipping the subtrees named in `skip_dirs`) and returns, per owner,
    /// the sorted, de-duplicated relative paths of regular files (or symlinks to files inside
    /// the root) matched, and the special files matched. A matched symlink that leads out
    /// of the root is an error.
    pub fn expand(&self, root: &Path, skip_dirs: &[&str]) -> Result<Expansion, WalkError> {
        if !fs::metadata(root)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: not a directory", root.display()),
            )
            .into());
        }
        let real_root = root.canonicalize()?;
        let skip: HashSet<&str> = skip_dirs.iter().map(|s| s.trim_end_matches('/')).collect();
        let mut out: Vec<BTreeSet<String>> = vec![BTreeSet::new(); self.owners];
        let mut special = BTreeSet::new();
        let mut listed = Vec::new();

        for (path, owners) in self.existing_literals(root, &real_root, &skip, &mut special)? {
            for &o in owners {
                out[o].insert(path.clone());
            }
        }
        if !self.set.is_empty() {
            self.walk(root, &real_root, &skip, &mut out, &mut special, &mut listed)?;
        }
        Ok(Expansion {
            files: out.into_iter().map(|s| s.into_iter().collect()).collect(),
            special: special.into_iter().collect(),
            listed,
        })
    }

    /// True when the walk must enter directory `rel` (relative, non-empty).
    fn should_descend(&self, rel: &str) -> bool {
        if self.prefix_ancestors.contains(rel) || self.prefixes.contains("") {
            return true;
        }
        // Inside some prefix: `rel` itself or one of its ancestors is a prefix.
        self.prefixes.contains(rel)
            || rel
                .match_indices('/')
                .any(|(i, _)| self.prefixes.contains(&rel[..i]))
    }

    fn walk(
        &self,
        root: &Path,
        real_root: &Path,
        skip: &HashSet<&str>,
        out: &mut [BTreeSet<String>],
        special: &mut BTreeSet<(String, &'static str)>,
        listed: &mut Vec<(String, Option<FileStat>)>,
    ) -> Result<(), WalkError> {
        let walker = WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                if e.depth() == 0 || !e.file_type().is_dir() {
                    return true;
                }
                let Ok(rel) = e.path().strip_prefix(root) else {
                    return false;
                };
                let rel = rel.to_string_lossy();
                !skip.contains(rel.as_ref()) && self.should_descend(&rel)
            });
        let mut hits = Vec::new();
        for entry in walker {
            let entry = entry.map_err(io::Error::from)?;
            let ft = entry.file_type();
            if entry.depth() == 0 || ft.is_dir() {
                // Every directory yielded is one the walk lists (sorted, it already has).
                let rel = entry.path().strip_prefix(root).map_err(io::Error::other)?;
                let stat = entry.metadata().ok().map(|m| FileStat::from_metadata(&m));
                // A name that is not UTF-8 cannot be looked at again by name: no stat.
                let stat = stat.filter(|_| rel.to_str().is_some());
                listed.push((rel.to_string_lossy().into_owned(), stat));
                continue;
            }
            let rel = entry.path().strip_prefix(root).map_err(io::Error::other)?;
            self.set
                .matches_candidate_into(&Candidate::new(rel), &mut hits);
            if hits.is_empty() {
                continue;
            }
            let kind = if ft.is_file() {
                Kind::File
            } else if let Some(k) = special_kind(&ft) {
                Kind::Special(k)
            } else {
                kind_of(entry.path(), ft.is_symlink(), real_root)?
            };
            match kind {
                Kind::File => {}
                Kind::Other => continue,
                Kind::Special(k) => {
                    special.insert((rel.to_string_lossy().into_owned(), k));
                    continue;
                }
                Kind::Escapes => {
                    return Err(WalkError::Escapes {
                        path: rel.to_string_lossy().into_owned(),
                    });
                }
            }
            // Only a file that some owner actually wants must be representable as a String.
            let rel = rel.to_str().ok_or_else(|| WalkError::NotUtf8 {
                path: rel.to_string_lossy().into_owned(),
            })?;
            for &gi in &hits {
                for &o in &self.glob_owners[gi] {
                    out[o].insert(rel.to_string());
                }
            }
        }
        Ok(())
    }

    /// The literal patterns that name a file the walk would also have found: a regular file
    /// (or symlink to one) under real, non-skipped directories.
    fn existing_literals(
        &self,
        root: &Path,
        real_root: &Path,
        skip: &HashSet<&str>,
        special: &mut BTreeSet<(String, &'static str)>,
    ) -> Result<Vec<(&String, &Vec<usize>)>, WalkError> {
        // Many literals share directories; check each ancestor once (the walk neither enters
        // skipped directories nor follows symlinked ones, so neither may a literal).
        let ancestors: BTreeSet<&str> = self
            .literals
            .iter()
            .filter(|(p, _)| is_normalized(p))
            .flat_map(|(p, _)| p.match_indices('/').map(move |(i, _)| &p[..i]))
            .collect();
        let good_dirs: HashSet<&str> = ancestors
            .into_par_iter()
            .filter(|d| !skip.contains(d))
            .map(|d| match fs::symlink_metadata(root.join(d)) {
                Ok(m) => Ok(m.is_dir().then_some(d)),
                Err(e) if is_absent(&e) || is_loop(&e) => Ok(None),
                Err(e) => Err(e),
            })
            .collect::<io::Result<Vec<Option<&str>>>>()?
            .into_iter()
            .flatten()
            .collect();

        let found = self
            .literals
            .par_iter()
            .map(|(p, owners)| {
                let reachable = is_normalized(p)
                    && p.match_indices('/')
                        .all(|(i, _)| good_dirs.contains(&p[..i]));
                if !reachable {
                    return Ok(None);
                }
                let path = root.join(p);
                let link = match fs::symlink_metadata(&path) {
                    Ok(m) => m.file_type().is_symlink(),
                    Err(e) if is_absent(&e) || is_loop(&e) => return Ok(None),
                    Err(e) => return Err(WalkError::Io(e)),
                };
                Ok(Some((p, owners, kind_of(&path, link, real_root)?)))
            })
            .collect::<Result<Vec<_>, WalkError>>()?;
        let mut files = Vec::new();
        for (p, owners, kind) in found.into_iter().flatten() {
            match kind {
                Kind::File => files.push((p, owners)),
                Kind::Special(k) => {
                    special.insert((p.clone(), k));
                }
                Kind::Escapes => return Err(WalkError::Escapes { path: p.clone() }),
                Kind::Other => {}
            }
        }
        Ok(files)
    }
}

/// The directory part of `pattern` before its first component containing a metacharacter.
fn literal_prefix_dir(pattern: &str) -> &str {
    // Byte offset of the '/' ending the last all-literal component seen so far (0 = root).
    let mut end = 0;
    let mut start = 0;
    for component in pattern.split('/') {
        if component.contains(META) {
            break;
        }
        start += component.len();
        end = start;
        start += 1;
    }
    // `pattern` always has a metacharacter here, so `end` stops short of it; `get` keeps a
    // plain path from ever slicing out of bounds all the same.
    pattern.get(..end).unwrap_or(pattern)
}

/// A path the walk could produce: no empty, "." or ".." components.
fn is_normalized(p: &str) -> bool {
    !p.is_empty() && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

fn build_set(globs: &[Glob]) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for g in globs {
        builder.add(g.clone());
    }
    builder.build()
}

/// Each glob parsed alone, so a failure of the combined set (e.g. the regex size limit) is
/// blamed on the pattern that first makes a prefix of the list fail to build.
fn attribute_set_error(
    globs: &[Glob],
    origin: &[(usize, usize)],
    err: globset::Error,
) -> (usize, usize, globset::Error) {
    // Invariant: globs[..hi] fails to build, globs[..lo] builds.
    let (mut lo, mut hi) = (0, globs.len());
    let mut last_err = err;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match build_set(&globs[..mid]) {
            Ok(_) => lo = mid,
            Err(e) => {
                hi = mid;
                last_err = e;
            }
        }
    }
    let (oi, pi) = origin.get(hi.saturating_sub(1)).copied().unwrap_or((0, 0));
    (oi, pi, last_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, rel).unwrap();
    }

    fn project() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for f in [
            "README.md",
            "notes.txt",
            "b.txt",
            "src/main.rs",
            "src/lib.rs",
            "src/fs/mod.rs",
            "src/fs/walk.rs",
            "src/data.txt",
            "docs/guide.txt",
            "target/debug/gen.rs",
            "target/x.txt",
            ".git/HEAD",
            ".git/hooks/pre-commit.rs",
            "deep/a/b/c/d.rs",
            "deep/a/b/c/e.txt",
            "deep/other/f.rs",
            "unrelated/z.rs",
        ] {
            touch(t.path(), f);
        }
        t
    }

    fn owners(pats: &[&[&str]]) -> Vec<Vec<String>> {
        pats.iter()
            .map(|ps| ps.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    fn expand(root: &Path, pats: &[&[&str]], skip: &[&str]) -> Vec<Vec<String>> {
        MultiGlob::new(&owners(pats))
            .unwrap()
            .expand(root, skip)
            .unwrap()
            .files
    }

    const SKIP: &[&str] = &[".orch", ".git", "target"];

    #[test]
    fn every_directory_listed_is_named_with_its_stat() {
        let t = project();
        let found = MultiGlob::new(&owners(&[&["deep/a/**/*.rs"], &["src/*.rs"]]))
            .unwrap()
            .expand(t.path(), SKIP)
            .unwrap();
        let names: Vec<&str> = found.listed.iter().map(|(p, _)| p.as_str()).collect();
        // The root and the way down to each prefix, then everything under the prefixes;
        // never a pruned or skipped directory.
        assert_eq!(
            names,
            [
                "",
                "deep",
                "deep/a",
                "deep/a/b",
                "deep/a/b/c",
                "src",
                "src/fs"
            ]
        );
        for (p, st) in &found.listed {
            let now = crate::fs::stat::stat_path(&t.path().join(p)).unwrap();
            assert_eq!(*st, now, "{p}");
        }
    }

    #[test]
    fn double_star_crosses_directories() {
        let t = project();
        let r = expand(t.path(), &[&["src/**/*.rs"]], SKIP);
        assert_eq!(
            r[0],
            [
                "src/fs/mod.rs",
                "src/fs/walk.rs",
                "src/lib.rs",
                "src/main.rs"
            ]
        );
        let r = expand(t.path(), &[&["**/*.rs"]], SKIP);
        assert_eq!(
            r[0],
            [
                "deep/a/b/c/d.rs",
                "deep/other/f.rs",
                "src/fs/mod.rs",
                "src/fs/walk.rs",
                "src/lib.rs",
                "src/main.rs",
                "unrelated/z.rs"
            ]
        );
    }

    #[test]
    fn single_star_does_not_cross_directories() {
        let t = project();
        let r = expand(t.path(), &[&["*.txt"], &["src/*.rs"], &["*/*.txt"]], SKIP);
        assert_eq!(r[0], ["b.txt", "notes.txt"]);
        assert_eq!(r[1], ["src/lib.rs", "src/main.rs"]);
        assert_eq!(r[2], ["docs/guide.txt", "src/data.txt"]);
    }

    #[test]
    fn literal_paths_are_checked_directly() {
        let t = project();
        let r = expand(
            t.path(),
            &[&[
                "src/main.rs",
                "missing.rs",
                "src",
                "README.md",
                "src/main.rs/x",
            ]],
            SKIP,
        );
        // Directories and missing paths are not files.
        assert_eq!(r[0], ["README.md", "src/main.rs"]);
    }

    #[test]
    fn literal_and_glob_agree() {
        let t = project();
        symlink("src", t.path().join("srclink")).unwrap();
        symlink("README.md", t.path().join("readme-link")).unwrap();
        symlink("nowhere", t.path().join("dangling")).unwrap();
        let cases = [
            ("src/main.rs", "src/main.r[s]", true),
            // Skipped subtree: neither sees it.
            (".git/HEAD", ".git/HEA[D]", false),
            ("target/x.txt", "target/x.tx[t]", false),
            // Symlinked directory: not followed by the walk, so not by the literal either.
            ("srclink/main.rs", "srclink/main.r[s]", false),
            // Symlink to a file: both include it.
            ("readme-link", "readme-lin[k]", true),
            ("dangling", "danglin[g]", false),
            // Non-normalized: never produced by the walk.
            ("./src/main.rs", "./src/main.r[s]", false),
            ("src//main.rs", "src//main.r[s]", false),
            ("src/../README.md", "src/../README.m[d]", false),
        ];
        for (lit, glob, found) in cases {
            let r = expand(t.path(), &[&[lit], &[glob]], SKIP);
            let expected: Vec<String> = if found { vec![lit.to_string()] } else { vec![] };
            assert_eq!(r[0], expected, "literal {lit:?}");
            assert_eq!(r[1], expected, "glob {glob:?}");
        }
    }

    #[test]
    fn skip_dirs_are_honoured() {
        let t = project();
        let r = expand(t.path(), &[&["**/*.rs"], &["**/HEAD"]], SKIP);
        assert!(r[0].iter().all(|p| !p.starts_with("target/")));
        assert!(r[1].is_empty());
        // Without skipping, they are found.
        let r = expand(t.path(), &[&["**/*.rs"], &["**/HEAD"]], &[]);
        assert!(r[0].contains(&"target/debug/gen.rs".to_string()));
        assert!(r[0].contains(&".git/hooks/pre-commit.rs".to_string()));
        assert_eq!(r[1], [".git/HEAD"]);
        // Skip entries are relative paths, not bare names anywhere in the tree.
        let r = expand(t.path(), &[&["deep/**/*.rs"]], &["b", "deep/other"]);
        assert_eq!(r[0], ["deep/a/b/c/d.rs"]);
    }

    #[test]
    fn owners_get_independent_sorted_deduplicated_lists() {
        let t = project();
        let r = expand(
            t.path(),
            &[
                &["src/*.rs", "src/main.rs", "src/**/*.rs"],
                &[],
                &["*.md", "*.txt"],
                &["src/*.rs"],
                &["nothing/*"],
            ],
            SKIP,
        );
        assert_eq!(r.len(), 5);
        assert_eq!(
            r[0],
            [
                "src/fs/mod.rs",
                "src/fs/walk.rs",
                "src/lib.rs",
                "src/main.rs"
            ]
        );
        assert!(r[1].is_empty());
        assert_eq!(r[2], ["README.md", "b.txt", "notes.txt"]);
        assert_eq!(r[3], ["src/lib.rs", "src/main.rs"]);
        assert!(r[4].is_empty());
    }

    #[test]
    fn deep_prefix_patterns_match_only_their_subtree() {
        let t = project();
        let r = expand(
            t.path(),
            &[
                &["deep/a/b/*/*.rs"],
                &["deep/a/**"],
                &["deep/{a,other}/**/*.rs"],
            ],
            SKIP,
        );
        assert_eq!(r[0], ["deep/a/b/c/d.rs"]);
        assert_eq!(r[1], ["deep/a/b/c/d.rs", "deep/a/b/c/e.txt"]);
        assert_eq!(r[2], ["deep/a/b/c/d.rs", "deep/other/f.rs"]);
    }

    #[test]
    fn pruning_rules() {
        let mg = MultiGlob::new(&owners(&[&["deep/a/b/*.rs"], &["src/**"], &["x.rs"]])).unwrap();
        assert!(mg.should_descend("deep"));
        assert!(mg.should_descend("deep/a"));
        assert!(mg.should_descend("deep/a/b"));
        assert!(mg.should_descend("deep/a/b/c"));
        assert!(!mg.should_descend("deep/other"));
        assert!(!mg.should_descend("deep/ab"));
        assert!(!mg.should_descend("unrelated"));
        assert!(mg.should_descend("src/fs/x"));
        assert!(!mg.should_descend("srcx"));

        let root_glob = MultiGlob::new(&owners(&[&["*.rs"]])).unwrap();
        assert!(root_glob.should_descend("anything/at/all"));

        assert_eq!(literal_prefix_dir("src/**/*.rs"), "src");
        assert_eq!(literal_prefix_dir("*.txt"), "");
        assert_eq!(literal_prefix_dir("a/b/c*.rs"), "a/b");
        assert_eq!(literal_prefix_dir("x/{a,b/c}/d"), "x");
        assert_eq!(literal_prefix_dir("a\\b/*.rs"), "");
    }

    #[test]
    fn pruned_walk_does_not_enter_unrelated_unreadable_trees() {
        // Proves pruning observably: an unreadable directory outside every prefix would make an
        // unpruned walk fail with PermissionDenied.
        use std::os::unix::fs::PermissionsExt;
        let t = project();
        let locked = t.path().join("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        let enforced = fs::read_dir(&locked).is_err();
        let mg = MultiGlob::new(&owners(&[&["deep/a/**/*.rs"]])).unwrap();
        let r = mg.expand(t.path(), SKIP);
        let unpruned = MultiGlob::new(&owners(&[&["**/*.rs"]]))
            .unwrap()
            .expand(t.path(), SKIP);
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(r.unwrap().files[0], ["deep/a/b/c/d.rs"]);
        if enforced {
            assert!(matches!(
                unpruned.unwrap_err(),
                WalkError::Io(e) if e.kind() == io::ErrorKind::PermissionDenied
            ));
        }
    }

    #[test]
    fn escaped_metacharacters() {
        let t = tempfile::tempdir().unwrap();
        touch(t.path(), "ab/x.rs");
        touch(t.path(), "star*/y.rs");
        let r = expand(t.path(), &[&["a\\b/*.rs"], &["star\\*/y.rs"]], &[]);
        assert_eq!(r[0], ["ab/x.rs"]);
        assert_eq!(r[1], ["star*/y.rs"]);
    }

    #[test]
    fn bad_pattern_names_owner_and_index() {
        let err =
            MultiGlob::new(&owners(&[&["ok/*.rs"], &["fine.txt", "src/[unclosed"]])).unwrap_err();
        assert_eq!((err.0, err.1), (1, 1));
        assert!(matches!(err.2.kind(), globset::ErrorKind::UnclosedClass));
        // A stray brace in an otherwise plain path is still a globset error.
        let err = MultiGlob::new(&owners(&[&["a}b"]])).unwrap_err();
        assert_eq!((err.0, err.1), (0, 0));
    }

    #[test]
    fn missing_root_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let mg = MultiGlob::new(&owners(&[&["a.txt"]])).unwrap();
        let e = mg.expand(&t.path().join("nope"), &[]).unwrap_err();
        assert!(matches!(e, WalkError::Io(e) if e.kind() == io::ErrorKind::NotFound));
    }

    #[test]
    fn no_owners() {
        let t = project();
        assert!(
            MultiGlob::new(&[])
                .unwrap()
                .expand(t.path(), SKIP)
                .unwrap()
                .files
                .is_empty()
        );
    }

    #[test]
    fn many_literal_owners() {
        let t = tempfile::tempdir().unwrap();
        let n = 2_000;
        for i in 0..n {
            if i % 3 != 0 {
                touch(t.path(), &format!("pkg{}/f{i}.txt", i % 17));
            }
        }
        let pats: Vec<Vec<String>> = (0..n)
            .map(|i| vec![format!("pkg{}/f{i}.txt", i % 17)])
            .collect();
        let r = MultiGlob::new(&pats)
            .unwrap()
            .expand(t.path(), SKIP)
            .unwrap()
            .files;
        for (i, got) in r.iter().enumerate() {
            if i % 3 == 0 {
                assert!(got.is_empty());
            } else {
                assert_eq!(got, &pats[i]);
            }
        }
    }

    #[test]
    fn symlinks_leading_outside_are_errors_naming_the_match() {
        let t = project();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        symlink(outside.path().join("secret"), t.path().join("src/leak.rs")).unwrap();
        // A symlinked directory is not entered, so it reads nothing and is no error.
        symlink(outside.path(), t.path().join("src/outdir")).unwrap();
        for pattern in ["src/*.rs", "src/leak.rs", "src/outdir"] {
            let e = MultiGlob::new(&owners(&[&[pattern]]))
                .unwrap()
                .expand(t.path(), SKIP);
            if pattern == "src/outdir" {
                assert!(e.unwrap().files[0].is_empty());
            } else {
                assert!(
                    matches!(&e, Err(WalkError::Escapes { path }) if path == "src/leak.rs"),
                    "{pattern}: {e:?}"
                );
            }
        }
        // Other patterns never look at it.
        assert_eq!(
            expand(t.path(), &[&["docs/*.txt"]], SKIP)[0],
            ["docs/guide.txt"]
        );
    }

    #[test]
    fn special_files_are_set_aside() {
        let t = project();
        let fifo = std::ffi::CString::new(t.path().join("src/pipe").to_str().unwrap()).unwrap();
        // SAFETY: `fifo` is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let _sock = std::os::unix::net::UnixListener::bind(t.path().join("src/sock")).unwrap();
        symlink("pipe", t.path().join("src/pipe-link")).unwrap();
        let r = MultiGlob::new(&owners(&[&["src/*"], &["src/sock"], &["docs/*"]]))
            .unwrap()
            .expand(t.path(), SKIP)
            .unwrap();
        assert_eq!(r.files[0], ["src/data.txt", "src/lib.rs", "src/main.rs"]);
        assert!(r.files[1].is_empty());
        assert_eq!(
            r.special,
            [
                ("src/pipe".to_owned(), "FIFO"),
                ("src/pipe-link".to_owned(), "FIFO"),
                ("src/sock".to_owned(), "socket")
            ]
        );
    }
}
