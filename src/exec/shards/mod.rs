//! Planning the shards of one instance when it is about to run: its source split into
//! slices, each shard's key, its input and output paths under `.orch/shards/`, and
//! whether a recorded result can be reused.
//!
//! Planning writes nothing, so `orch plan` uses it too; the executor writes the slices
//! of the shards it starts.

pub(super) mod lifecycle;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::fs::{self, Digest, PathDigest};
use crate::model::path::Containment;
use crate::model::{Instance, ShardValues};
use crate::plan::{Discovered, KeyParts, OutputMeta, Upstream, is_discoverable};
use crate::shard::{self, Merge, Shard, Slice, Strategy};
use crate::store::ShardResults;
use crate::store::layout::log_file_stem;

/// One shard ready to run or reuse.
#[derive(Clone, Debug)]
pub struct PlannedShard {
    /// The shard.
    pub shard: Shard,
    /// Its key.
    pub key: Digest,
    /// `{shard.input}`, project-relative.
    pub input: String,
    /// `{shard.output}` (merge = concat), project-relative; empty with merge = none.
    pub part: String,
    /// With merge = none: the outputs this shard writes.
    pub outputs: Vec<String>,
    /// With merge = none: (output, schema) pairs to check after the shard runs.
    pub schemas: Vec<(String, String)>,
    /// The recorded result, when its outputs are still intact: no need to run.
    pub reuse: Option<ShardResult>,
}

/// What a shard produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardResult {
    /// The part's digest (concat), or a digest over every output's path and digest.
    pub digest: Digest,
    /// Bytes produced.
    pub size: u64,
    /// With merge = none: each output.
    pub outputs: BTreeMap<String, OutputMeta>,
    /// The files its depfile listed, with the digests it was built from.
    pub discovered: Discovered,
}

/// The bytes a shard's discovered inputs are recorded as (empty when there are none).
pub fn encode_discovered(d: &Discovered) -> Vec<u8> {
    if d.is_empty() {
        return Vec::new();
    }
    postcard::to_stdvec(d).unwrap_or_default()
}

/// Decodes recorded discovered inputs. The state database is untrusted: bytes that do not
/// decode, or name a path that is not a plain project path, give None (the shard runs).
pub fn decode_discovered(bytes: &[u8]) -> Option<Discovered> {
    if bytes.is_empty() {
        return Some(Discovered::new());
    }
    let d: Discovered = postcard::from_bytes(bytes).ok()?;
    d.keys().all(|p| is_discoverable(p)).then_some(d)
}

/// `.orch/shards/INSTANCE/`.
pub fn shard_dir(orch_dir: &Path, instance: &str) -> PathBuf {
    orch_dir.join("shards").join(log_file_stem(instance))
}

/// The source files of a shard strategy, as they appear among the instance's inputs.
pub fn source_files(strategy: &Strategy, inputs: &[String]) -> Vec<String> {
    match strategy {
        Strategy::Files { pattern } => match globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
        {
            Ok(g) => {
                let m = g.compile_matcher();
                inputs
                    .iter()
                    .filter(|p| m.is_match(p.as_str()))
                    .cloned()
                    .collect()
            }
            Err(_) => Vec::new(),
        },
        Strategy::Chunk { source, .. } | Strategy::Group { source, .. } => vec![source.clone()],
    }
}

/// The instance's key without its shard sources: what every shard key builds on, so a
/// change to one record changes only its own shard's key.
pub fn base_key(parts: &KeyParts, sources: &[String]) -> Digest {
    let mut p = parts.clone();
    for s in sources {
        p.inputs.remove(s);
    }
    for u in p.upstream.values_mut() {
        if let Upstream::Present { outputs, .. } = u {
            for s in sources {
                outputs.remove(s);
            }
        }
    }
    p.action_key()
}

/// A directory (an upstream's directory output, or a directory input) that holds shard
/// sources would put every source into every shard's key through its tree digest; its
/// digest is replaced by one over the rest of its content.
fn without_sources_in_dirs(root: &Path, parts: &KeyParts, sources: &[String]) -> KeyParts {
    let holds = |dir: &str| {
        sources
            .iter()
            .any(|s| s.len() > dir.len() && s.starts_with(dir) && s.as_bytes()[dir.len()] == b'/')
    };
    let mut p = parts.clone();
    let entries = p
        .inputs
        .iter_mut()
        .chain(p.upstream.values_mut().flat_map(|u| {
            match u {
                Upstream::Present { outputs, .. } => Some(outputs.iter_mut()),
                Upstream::Absent => None,
            }
            .into_iter()
            .flatten()
        }));
    for (path, digest) in entries {
        if holds(path) {
            *digest = rest_of_dir(root, path, sources);
        }
    }
    p
}

/// Digest over the files of `dir` that are not shard sources: path and content.
fn rest_of_dir(root: &Path, dir: &str, sources: &[String]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"orch-dir-without-sources\x01");
    for entry in walkdir::WalkDir::new(root.join(dir))
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if sources.contains(&rel) {
            continue;
        }
        h.update(&(rel.len() as u64).to_le_bytes());
        h.update(rel.as_bytes());
        h.update(&fs::hash_file(entry.path()).map_or([0; 32], |d| d.0));
    }
    Digest(*h.finalize().as_bytes())
}

/// Whether `path` is an instance of `template`, whose `{shard.key}` / `{shard.index}`
/// holes stand for any non-empty text.
pub fn matches_template(template: &str, path: &str) -> bool {
    let literals: Vec<&str> = template
        .split("{shard.key}")
        .flat_map(|p| p.split("{shard.index}"))
        .collect();
    let (Some(first), Some(last)) = (literals.first(), literals.last()) else {
        return false;
    };
    if literals.len() == 1 {
        return template == path;
    }
    if !path.starts_with(first)
        || !path.ends_with(last)
        || path.len() < first.len() + last.len() + literals.len() - 1
    {
        return false;
    }
    let mut rest = &path[first.len()..path.len() - last.len()];
    for mid in &literals[1..literals.len() - 1] {
        // Each hole takes at least one character.
        match rest.get(1..).and_then(|r| r.find(mid)) {
            Some(pos) => rest = &rest[pos + 1 + mid.len()..],
            None => return false,
        }
    }
    !rest.is_empty()
}

/// `.orch/shards/INSTANCE/written`: every path `merge = "none"` shards of the instance
/// wrote since its last completed merge, one JSON string per line, so outputs of shards
/// that no longer exist are removed even after a failed build, and nothing else is.
fn written_file(orch_dir: &Path, instance: &str) -> PathBuf {
    shard_dir(orch_dir, instance).join("written")
}

/// Notes that a shard of `instance` wrote `paths`.
pub fn note_written<'a>(
    orch_dir: &Path,
    instance: &str,
    paths: impl IntoIterator<Item = &'a String>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let file = written_file(orch_dir, instance);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = String::new();
    for p in paths {
        text.push_str(&serde_json::to_string(p).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?
        .write_all(text.as_bytes())
}

/// The paths noted for `instance` (unreadable lines are skipped: the file is state, and
/// every path read from it is checked again before anything is removed).
pub fn written(orch_dir: &Path, instance: &str) -> BTreeSet<String> {
    std::fs::read_to_string(written_file(orch_dir, instance))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<String>(l).ok())
        .collect()
}

/// Starts the note of `instance` afresh with `paths` (after a completed merge).
pub fn reset_written<'a>(
    orch_dir: &Path,
    instance: &str,
    paths: impl IntoIterator<Item = &'a String>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(written_file(orch_dir, instance));
    note_written(orch_dir, instance, paths)
}

/// Digest over each (path, digest): the identity of a merge = none shard's outputs.
pub fn outputs_digest(outputs: &BTreeMap<String, OutputMeta>) -> Digest {
    let mut h = blake3::Hasher::new();
    for (p, m) in outputs {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
        h.update(&m.digest.0);
    }
    Digest(*h.finalize().as_bytes())
}

/// Plans the shards of `inst`. `files` and `digest_of` are its current inputs;
/// `recorded` maps shard keys to what they produced before; `discovered_now` gives the
/// digest of a discovered input now. A recorded shard is reused only when its outputs
/// are intact and every file its depfile listed still has the recorded digest.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    root: &Path,
    orch_dir: &Path,
    inst: &Instance,
    parts: &KeyParts,
    files: &[String],
    digest_of: &dyn Fn(&str) -> Option<Digest>,
    discovered_now: &dyn Fn(&str) -> Option<Digest>,
    recorded: &ShardResults,
) -> Result<Vec<PlannedShard>, String> {
    let Some(spec) = &inst.shard else {
        return Ok(Vec::new());
    };
    let sources = source_files(&spec.strategy, files);
    let with_digests: Vec<(String, Digest)> = sources
        .iter()
        .filter_map(|p| digest_of(p).map(|d| (p.clone(), d)))
        .collect();
    if !matches!(spec.strategy, Strategy::Files { .. }) && with_digests.is_empty() {
        return Err(format!(
            "the shard source `{}` does not exist",
            sources.first().map_or("", String::as_str)
        ));
    }
    let read = |p: &str| fs::digest::read_regular(&root.join(p));
    let shards = shard::split(&spec.strategy, &with_digests, &read).map_err(|e| e.to_string())?;
    if spec.merge == Merge::None {
        let templates: Vec<&str> = inst.shard_outputs.iter().map(|o| o.path.as_str()).collect();
        shard::check_outputs(&spec.strategy, &shards, &templates).map_err(|e| e.to_string())?;
    }
    let base = base_key(&without_sources_in_dirs(root, parts, &sources), &sources);
    let count = shards.len();
    let uses_position = inst.uses_shard_position();
    let dir = shard_dir(orch_dir, &inst.name);
    let rel_dir = dir
        .strip_prefix(root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut contain = Containment::new(root);
    let mut planned = Vec::with_capacity(count);
    for s in shards {
        let key = shard::shard_key(&base, &spec.strategy, &s, count, uses_position);
        let input = match &s.slice {
            Slice::File(p) => p.clone(),
            Slice::Bytes(_) => format!("{rel_dir}/in/{}.jsonl", s.digest.to_hex()),
        };
        let mut schemas = Vec::new();
        let (part, outputs) = match spec.merge {
            Merge::Concat => (format!("{rel_dir}/out/{}.part", key.to_hex()), Vec::new()),
            Merge::None => {
                let mut outs = Vec::new();
                for t in &inst.shard_outputs {
                    let p = shard::expand_output(&t.path, &s);
                    if let Some(schema) = &t.schema {
                        schemas.push((p.clone(), schema.clone()));
                    }
                    if p.is_empty()
                        || p.split('/').any(|c| c == "..")
                        || p.starts_with(".orch")
                        || contain.check(&p, false).is_err()
                    {
                        return Err(format!(
                            "shard `{}` would write `{p}`, which is not a path inside the project",
                            s.key
                        ));
                    }
                    outs.push(p);
                }
                (String::new(), outs)
            }
        };
        let reuse = recorded.get(&key.0).and_then(|r| {
            let discovered = decode_discovered(&r.discovered)?;
            if !crate::plan::discovered_whys(&discovered, discovered_now).is_empty() {
                return None;
            }
            let mut now = current(root, spec.merge, &part, &outputs)?;
            now.discovered = discovered;
            (now.digest.0 == r.digest && now.size == r.size).then_some(now)
        });
        planned.push(PlannedShard {
            shard: s,
            key,
            input,
            part,
            outputs,
            schemas,
            reuse,
        });
    }
    Ok(planned)
}

/// What a shard's outputs hold now (None when one is missing).
pub fn current(root: &Path, merge: Merge, part: &str, outputs: &[String]) -> Option<ShardResult> {
    match merge {
        Merge::Concat => {
            let d = fs::hash_file(&root.join(part)).ok()?;
            let size = std::fs::metadata(root.join(part)).ok()?.len();
            Some(ShardResult {
                digest: d,
                size,
                outputs: BTreeMap::new(),
                discovered: Discovered::new(),
            })
        }
        Merge::None => {
            let results = fs::digest_paths(root, outputs, |_| None);
            let mut metas = BTreeMap::new();
            let mut size = 0;
            for (p, r) in outputs.iter().zip(results) {
                let Ok(PathDigest::Present { stat, digest, .. }) = r else {
                    return None;
                };
                size += stat.size;
                metas.insert(
                    p.clone(),
                    OutputMeta {
                        digest,
                        size: stat.size,
                    },
                );
            }
            Some(ShardResult {
                digest: outputs_digest(&metas),
                size,
                outputs: metas,
                discovered: Discovered::new(),
            })
        }
    }
}

/// Writes a shard's input slice (once; slices are named by their digest).
pub fn write_slice(root: &Path, planned: &PlannedShard) -> std::io::Result<()> {
    if let Slice::Bytes(b) = &planned.shard.slice {
        let path = root.join(&planned.input);
        if !path.exists() {
            let dir = path.parent().unwrap_or(root);
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, b)?;
            tmp.persist(&path).map_err(|e| e.error)?;
        }
    }
    Ok(())
}

/// The `{shard.*}` values of a planned shard.
pub fn values(p: &PlannedShard, count: usize) -> ShardValues {
    ShardValues {
        input: p.input.clone(),
        output: p.part.clone(),
        index: p.shard.index,
        count,
        key: p.shard.key.clone(),
        outputs: p.outputs.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_their_instances_only() {
        assert!(matches_template("out/{shard.key}.txt", "out/a.txt"));
        assert!(matches_template("out/{shard.key}.txt", "out/sub/a.txt"));
        assert!(!matches_template("out/{shard.key}.txt", "out/.txt"));
        assert!(!matches_template("out/{shard.key}.txt", "out/a.json"));
        assert!(matches_template(
            "out/{shard.index}-{shard.key}.md",
            "out/3-x.md"
        ));
        assert!(!matches_template(
            "out/{shard.index}-{shard.key}.md",
            "out/3x.md"
        ));
        assert!(matches_template("fixed.txt", "fixed.txt"));
    }
}
