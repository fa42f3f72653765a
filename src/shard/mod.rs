//! Shards: splitting one instance's work into pieces, each with its own key, and merging
//! their outputs back in shard order.
//!
//! Splitting is pure (bytes in, slices out) so that `plan` can count stale shards without
//! writing anything; the executor writes slices under `.orch/shards/` and runs them.
//! A shard's key covers the instance's key *without* the shard source, plus the shard's
//! own slice, so changing one record reruns exactly one shard and the merge.
//!
//! With `merge = "none"`, keys become parts of output paths; [`check_outputs`] refuses,
//! before any shard runs, two shards that would write the same path and group keys that
//! are not a single file name.

pub mod split;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use crate::fs::{self, Digest};
use crate::model::path::normalize;

pub use split::{Group, KeyAt, SplitError, split_chunk, split_group};

/// How an instance is split.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    /// One shard per file matching a glob.
    Files {
        /// The glob.
        pattern: String,
    },
    /// A JSON Lines file in shards of `size` records.
    Chunk {
        /// The file.
        source: String,
        /// Records per shard.
        size: usize,
    },
    /// A JSON Lines file grouped by the value of one field, one shard per value.
    Group {
        /// The file.
        source: String,
        /// The field.
        key: String,
    },
}

impl Strategy {
    /// The strategy's name, as written in the Orchfile.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Files { .. } => "files",
            Strategy::Chunk { .. } => "chunk",
            Strategy::Group { .. } => "group",
        }
    }
}

impl ShardSpec {
    /// A canonical text of everything that decides the shards and the merge, for the
    /// action key.
    pub fn describe(&self) -> String {
        let merge = match self.merge {
            Merge::Concat => "concat",
            Merge::None => "none",
        };
        match &self.strategy {
            Strategy::Files { pattern } => format!("files source={pattern:?} merge={merge}"),
            Strategy::Chunk { source, size } => {
                format!("chunk source={source:?} size={size} merge={merge}")
            }
            Strategy::Group { source, key } => {
                format!("group source={source:?} key={key:?} merge={merge}")
            }
        }
    }
}

/// How shard outputs become the instance's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Merge {
    /// Concatenated in shard order into the single declared output.
    Concat,
    /// Each shard writes its own templated outputs.
    None,
}

/// The `shard` table of a phase, validated.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardSpec {
    /// How to split.
    pub strategy: Strategy,
    /// At most this many shards of one instance at once.
    pub parallel: Option<usize>,
    /// How to merge.
    pub merge: Merge,
}

/// Where a shard's input comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slice {
    /// A project file (`files`).
    File(String),
    /// Bytes cut from the source (`chunk`, `group`), written under `.orch/shards/`.
    Bytes(Vec<u8>),
}

/// One shard of an instance, before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Position in merge order, from 0.
    pub index: usize,
    /// `{shard.key}`: the group value, the file path, or the index for chunks.
    pub key: String,
    /// For groups: the 1-based source line of the group's first record.
    pub line: Option<usize>,
    /// Its input.
    pub slice: Slice,
    /// Digest of its input's content.
    pub digest: Digest,
}

/// Splits the source of `strategy`. `files` are the files matching a `files` glob, in
/// path order, with their digests; `read` reads a chunk or group source.
pub fn split(
    strategy: &Strategy,
    files: &[(String, Digest)],
    read: &dyn Fn(&str) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<Shard>, SplitError> {
    match strategy {
        Strategy::Files { .. } => Ok(files
            .iter()
            .enumerate()
            .map(|(index, (path, digest))| Shard {
                index,
                key: path.clone(),
                line: None,
                slice: Slice::File(path.clone()),
                digest: *digest,
            })
            .collect()),
        Strategy::Chunk { source, size } => {
            let bytes = read(source).map_err(|e| SplitError::io(source, &e))?;
            Ok(split_chunk(source, &bytes, *size)?
                .into_iter()
                .enumerate()
                .map(|(index, b)| Shard {
                    index,
                    key: index.to_string(),
                    line: None,
                    digest: fs::hash_bytes(&b),
                    slice: Slice::Bytes(b),
                })
                .collect())
        }
        Strategy::Group { source, key } => {
            let bytes = read(source).map_err(|e| SplitError::io(source, &e))?;
            Ok(split_group(source, &bytes, key)?
                .into_iter()
                .enumerate()
                .map(|(index, g)| Shard {
                    index,
                    key: g.key,
                    line: Some(g.line),
                    digest: fs::hash_bytes(&g.bytes),
                    slice: Slice::Bytes(g.bytes),
                })
                .collect())
        }
    }
}

/// Expands `{shard.key}` / `{shard.index}` in a `merge = "none"` output template, and
/// normalises the result.
pub fn expand_output(template: &str, shard: &Shard) -> String {
    normalize(
        &template
            .replace("{shard.key}", &shard.key)
            .replace("{shard.index}", &shard.index.to_string()),
    )
}

/// Checks the outputs `merge = "none"` shards would write from `templates`: no two
/// shards may write the same path (`a` and `./a` both give `out/a.txt`), and a group key
/// in a path must be one file name — not empty, `.` or `..`, without `/` (so neither
/// absolute nor a way into another directory) or NUL. `files` keys are project paths
/// and may hold `/`; chunk keys are indices.
pub fn check_outputs(
    strategy: &Strategy,
    shards: &[Shard],
    templates: &[&str],
) -> Result<(), SplitError> {
    let source = match strategy {
        Strategy::Group { source, .. } => Some(source.as_str()),
        _ => None,
    };
    let at = |s: &Shard| KeyAt {
        key: s.key.clone(),
        line: source.zip(s.line).map(|(f, l)| (f.to_owned(), l)),
    };
    // Collisions first: a key like `./a` is named together with the `a` it collides with.
    let mut writers: BTreeMap<String, &Shard> = BTreeMap::new();
    for s in shards {
        for t in templates {
            let path = expand_output(t, s);
            if let Some(first) = writers.insert(path.clone(), s)
                && first.index != s.index
            {
                return Err(SplitError::SameOutput {
                    path,
                    first: Box::new(at(first)),
                    second: Box::new(at(s)),
                });
            }
        }
    }
    let Some(file) = source else {
        return Ok(());
    };
    for t in templates.iter().filter(|t| t.contains("{shard.key}")) {
        for s in shards {
            let why = if s.key.is_empty() {
                "it is empty"
            } else if s.key == "." {
                "it is `.`"
            } else if s.key == ".." {
                "it is `..`"
            } else if s.key.contains('/') {
                "it contains `/`; a key in a path must be one file name"
            } else if s.key.contains('\0') {
                "it contains a NUL byte"
            } else {
                continue;
            };
            return Err(SplitError::KeyNotAName {
                at: match s.line {
                    Some(l) => format!("`{file}` line {l}"),
                    None => format!("`{file}`"),
                },
                key: s.key.clone(),
                template: (*t).to_owned(),
                why,
            });
        }
    }
    Ok(())
}

/// The key of one shard: the instance's key without the shard source (`base`), the
/// strategy, the shard's identity and its input digest. The index and count enter only
/// when the command uses them, so adding a file does not rerun every later shard.
pub fn shard_key(
    base: &Digest,
    strategy: &Strategy,
    shard: &Shard,
    count: usize,
    uses_position: bool,
) -> Digest {
    let mut h = blake3::Hasher::new();
    let mut put = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    put(b"orch-shard-key\x01");
    put(&base.0);
    put(strategy.name().as_bytes());
    match strategy {
        Strategy::Chunk { size, .. } => put(&(*size as u64).to_le_bytes()),
        Strategy::Group { key, .. } => put(key.as_bytes()),
        Strategy::Files { .. } => put(b""),
    }
    put(shard.key.as_bytes());
    put(&shard.digest.0);
    if uses_position {
        put(&(shard.index as u64).to_le_bytes());
        put(&(count as u64).to_le_bytes());
    }
    Digest(*h.finalize().as_bytes())
}

/// Concatenates `parts` in order into `target` (relative to the root, resolved beneath
/// it), through a temporary file renamed into place, so readers never see a half-merged
/// output. Returns its digest and size.
pub fn merge(
    root: &fs::Beneath,
    parts: &[PathBuf],
    target: &str,
) -> Result<(Digest, u64), fs::BeneathError> {
    root.replace_with(target, |file| {
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut out = std::io::BufWriter::new(file);
        for p in parts {
            // Parts live under `.orch/`, but a command could leave a FIFO there.
            let bytes = fs::digest::read_regular(p)?;
            hasher.update(&bytes);
            size += bytes.len() as u64;
            out.write_all(&bytes)?;
        }
        out.flush()?;
        Ok((Digest(*hasher.finalize().as_bytes()), size))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(index: usize, key: &str, content: &[u8]) -> Shard {
        Shard {
            index,
            key: key.into(),
            line: Some(index + 1),
            slice: Slice::Bytes(content.to_vec()),
            digest: fs::hash_bytes(content),
        }
    }

    #[test]
    fn shard_keys_depend_on_identity_and_content_only() {
        let base = fs::hash_bytes(b"base");
        let s = Strategy::Group {
            source: "in.jsonl".into(),
            key: "k".into(),
        };
        let a = shard_key(&base, &s, &shard(0, "a", b"1"), 3, false);
        assert_eq!(a, shard_key(&base, &s, &shard(5, "a", b"1"), 9, false));
        assert_ne!(a, shard_key(&base, &s, &shard(5, "a", b"1"), 9, true));
        assert_ne!(a, shard_key(&base, &s, &shard(0, "b", b"1"), 3, false));
        assert_ne!(a, shard_key(&base, &s, &shard(0, "a", b"2"), 3, false));
        assert_ne!(
            a,
            shard_key(
                &fs::hash_bytes(b"other"),
                &s,
                &shard(0, "a", b"1"),
                3,
                false
            )
        );
    }

    #[test]
    fn shard_outputs_that_collide_or_leave_their_directory_are_refused() {
        let group = Strategy::Group {
            source: "in.jsonl".into(),
            key: "k".into(),
        };
        let shards = [shard(0, "./a", b"1"), shard(1, "a", b"2")];
        let e = check_outputs(&group, &shards, &["out/{shard.key}.txt"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shards `./a` (`in.jsonl` line 1) and `a` (`in.jsonl` line 2) would both write `out/a.txt`"
        );
        for key in ["", ".", "..", "x/y", "/abs", "a\0b"] {
            let shards = [shard(0, "ok", b"1"), shard(1, key, b"2")];
            let e = check_outputs(&group, &shards, &["out/{shard.key}.txt"]).unwrap_err();
            assert!(
                matches!(&e, SplitError::KeyNotAName { key: k, at, .. } if k == key && at == "`in.jsonl` line 2"),
                "{e}"
            );
        }
        // Not in a path: any key will do.
        let shards = [shard(0, "x/y", b"1"), shard(1, "..", b"2")];
        check_outputs(&group, &shards, &["out/{shard.index}.txt"]).unwrap();
        // `files` keys are project paths.
        let files = Strategy::Files {
            pattern: "src/**".into(),
        };
        let shards = [shard(0, "src/a", b"1"), shard(1, "src/b/c", b"2")];
        check_outputs(&files, &shards, &["out/{shard.key}.o"]).unwrap();
        let shards = [shard(0, "src/a", b"1"), shard(1, "src/b", b"2")];
        assert!(matches!(
            check_outputs(&files, &shards, &["out/fixed.o"]),
            Err(SplitError::SameOutput { .. })
        ));
    }

    #[test]
    fn merge_concatenates_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let parts: Vec<PathBuf> = (0..3)
            .map(|i| {
                let p = dir.path().join(format!("{i}.part"));
                std::fs::write(&p, format!("part {i}\n")).unwrap();
                p
            })
            .collect();
        let root = fs::Beneath::open(dir.path()).unwrap();
        let (digest, size) = merge(&root, &parts, "out/merged.txt").unwrap();
        let target = dir.path().join("out/merged.txt");
        let text = std::fs::read_to_string(&target).unwrap();
        assert_eq!(text, "part 0\npart 1\npart 2\n");
        assert_eq!(digest, fs::hash_bytes(text.as_bytes()));
        assert_eq!(size, text.len() as u64);
    }
}
