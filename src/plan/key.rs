//! Action keys: the parts that decide an instance's result, their canonical encoding and
//! BLAKE3 digest, and the manifest recorded with each success.
//!
//! The encoding is length-prefixed and tagged, iterates only sorted maps, and starts with
//! the key format version, so equal parts always give equal bytes and no two different
//! parts can collide by concatenation. Golden tests pin the bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::reason::{Reason, Why};
use crate::fs::Digest;

/// Version of the action-key encoding; bump it to invalidate every recorded key.
pub const KEY_FORMAT: u32 = 3;

/// What an upstream instance contributes to a key.
// Externally tagged: manifests are postcard, which cannot decode internal tags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upstream {
    /// It succeeded; these are its outputs.
    Present {
        /// `needs` (true) or `after` (false).
        hard: bool,
        /// Output path → digest.
        outputs: BTreeMap<String, Digest>,
    },
    /// A soft dependency that failed or was blocked.
    Absent,
}

/// Everything that decides an instance's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyParts {
    /// Instance name.
    pub instance: String,
    /// Expanded command ("" for a phase without `run`).
    pub command: String,
    /// Working directory, project-relative.
    pub cwd: String,
    /// Declared outputs (directories with a trailing `/`; per-shard output templates).
    pub outputs: Vec<String>,
    /// How the instance is split into shards ("" when it is not): strategy, source,
    /// key or size, merge mode. The `parallel` cap is left out: it changes no result.
    #[serde(default)]
    pub shard: String,
    /// Variable name → keyed digest of its value (None when unset). Never the value
    /// itself, nor a plain digest that could be checked against guesses offline.
    pub env: BTreeMap<String, Option<Digest>>,
    /// Input file → content digest.
    pub inputs: BTreeMap<String, Digest>,
    /// Upstream instance → its contribution.
    pub upstream: BTreeMap<String, Upstream>,
    /// Output schema file → content digest: a schema decides whether a result stands,
    /// so tightening one must rerun the instance (absent files are left out).
    pub schemas: BTreeMap<String, Digest>,
    /// The `depfile` path (a template for sharded phases; "" without one). The files it
    /// lists are known only after a run, so they are not part of the key: the manifest
    /// records them ([`Discovered`]) and the planner checks them beside the key.
    pub depfile: String,
}

/// Discovered inputs (files a depfile listed): path → content digest, None for a listed
/// file that did not exist (its appearance makes the result stale).
pub type Discovered = BTreeMap<String, Option<Digest>>;

/// The reasons a recorded set of discovered inputs no longer holds, given each path's
/// digest now: `input_changed`, `input_removed`, or `input_added` for a file recorded
/// as absent that now exists.
pub fn discovered_whys(recorded: &Discovered, now: &dyn Fn(&str) -> Option<Digest>) -> Vec<Why> {
    let mut whys = Vec::new();
    for (path, was) in recorded {
        match (was, now(path)) {
            (Some(a), Some(b)) if *a == b => {}
            (Some(_), Some(_)) => whys.push(Why::about(Reason::InputChanged, path.clone())),
            (Some(_), None) => whys.push(Why::about(Reason::InputRemoved, path.clone())),
            (None, Some(_)) => whys.push(Why::about(Reason::InputAdded, path.clone())),
            (None, None) => {}
        }
    }
    whys
}

/// The canonical encoding of key parts, written section by section into one buffer and
/// hashed once at the end (one BLAKE3 update per key, not one per field).
///
/// [`KeyParts::action_key`] writes through it, and so does the planner, which streams an
/// instance's parts from the project and the records without building a [`KeyParts`]:
/// both therefore give the same key for the same parts. The sections must be written in
/// the order of the methods below, each map's entries in ascending key order, unique (as
/// a `BTreeMap` iterates them); debug builds check both.
pub struct KeyEncoder {
    buf: Vec<u8>,
    /// The last section written, to check the order in debug builds.
    stage: u8,
}

impl KeyEncoder {
    /// Starts a key with the instance's name, command template, working directory, shard
    /// description and depfile ("" when it has none).
    pub fn new(instance: &str, command: &str, cwd: &str, shard: &str, depfile: &str) -> Self {
        let mut e = KeyEncoder {
            buf: Vec::with_capacity(256),
            stage: 0,
        };
        e.str("orch-action-key");
        e.buf.extend_from_slice(&KEY_FORMAT.to_le_bytes());
        e.tag(b'i');
        e.str(instance);
        e.tag(b'c');
        e.str(command);
        e.tag(b'w');
        e.str(cwd);
        e.tag(b's');
        e.str(shard);
        // Only when set, so keys of phases without a depfile keep their format-3 bytes.
        if !depfile.is_empty() {
            e.tag(b'd');
            e.str(depfile);
        }
        e
    }

    /// The `n` declared outputs, each a path and whether it is a directory (written with
    /// a trailing `/`).
    pub fn outputs<'a>(&mut self, n: usize, outputs: impl Iterator<Item = (&'a str, bool)>) {
        self.enter(1);
        self.tag(b'o');
        self.len(n);
        let mut written = 0;
        for (path, dir) in outputs {
            let slash: &[u8] = if dir { b"/" } else { b"" };
            self.len(path.len() + slash.len());
            self.buf.extend_from_slice(path.as_bytes());
            self.buf.extend_from_slice(slash);
            written += 1;
        }
        debug_assert_eq!(written, n, "output count");
    }

    /// The `n` variables: name and keyed digest of the value (None when unset).
    pub fn env<'a>(&mut self, n: usize, env: impl Iterator<Item = (&'a str, Option<Digest>)>) {
        self.enter(2);
        self.tag(b'e');
        self.len(n);
        let mut last: Option<&str> = None;
        let mut written = 0;
        for (name, d) in env {
            debug_assert!(last < Some(name), "env names sorted and unique");
            last = Some(name);
            self.str(name);
            match d {
                Some(d) => {
                    self.tag(1);
                    self.digest(&d);
                }
                None => self.tag(0),
            }
            written += 1;
        }
        debug_assert_eq!(written, n, "env count");
    }

    /// The `n` input files and their digests.
    pub fn inputs<'a>(&mut self, n: usize, files: impl Iterator<Item = (&'a str, &'a Digest)>) {
        self.enter(3);
        self.files(b'f', n, files);
    }

    /// The `n` output schema files and their digests.
    pub fn schemas<'a>(&mut self, n: usize, files: impl Iterator<Item = (&'a str, &'a Digest)>) {
        self.enter(4);
        self.files(b'j', n, files);
    }

    /// Starts the upstream section: `n` upstreams follow, each written with
    /// [`KeyEncoder::upstream_present`] or [`KeyEncoder::upstream_absent`], by name.
    pub fn upstreams(&mut self, n: usize) {
        self.enter(5);
        self.tag(b'u');
        self.len(n);
    }

    /// An upstream that succeeded, with its `n` outputs.
    pub fn upstream_present<'a>(
        &mut self,
        name: &str,
        hard: bool,
        n: usize,
        outputs: impl Iterator<Item = (&'a str, &'a Digest)>,
    ) {
        debug_assert_eq!(self.stage, 5, "upstreams() first");
        self.str(name);
        self.files(if hard { b'h' } else { b's' }, n, outputs);
    }

    /// A soft upstream that failed or was blocked.
    pub fn upstream_absent(&mut self, name: &str) {
        debug_assert_eq!(self.stage, 5, "upstreams() first");
        self.str(name);
        self.tag(b'a');
    }

    /// The action key: BLAKE3 over everything written.
    pub fn finish(self) -> Digest {
        debug_assert_eq!(self.stage, 5, "every section written");
        Digest(*blake3::hash(&self.buf).as_bytes())
    }

    fn enter(&mut self, stage: u8) {
        debug_assert_eq!(self.stage + 1, stage, "key sections in order");
        self.stage = stage;
    }
    fn files<'a>(&mut self, tag: u8, n: usize, files: impl Iterator<Item = (&'a str, &'a Digest)>) {
        self.tag(tag);
        self.len(n);
        let mut last: Option<&str> = None;
        let mut written = 0;
        for (path, d) in files {
            debug_assert!(last < Some(path), "paths sorted and unique");
            last = Some(path);
            self.str(path);
            self.digest(d);
            written += 1;
        }
        debug_assert_eq!(written, n, "file count");
    }
    fn tag(&mut self, t: u8) {
        self.buf.push(t);
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }
    fn len(&mut self, n: usize) {
        self.buf.extend_from_slice(&(n as u64).to_le_bytes());
    }
    fn digest(&mut self, d: &Digest) {
        self.buf.extend_from_slice(&d.0);
    }
}

impl KeyParts {
    /// The action key: BLAKE3 over the canonical encoding.
    pub fn action_key(&self) -> Digest {
        let mut e = KeyEncoder::new(
            &self.instance,
            &self.command,
            &self.cwd,
            &self.shard,
            &self.depfile,
        );
        // Outputs are written as recorded: a directory's `/` is already in its string.
        e.outputs(
            self.outputs.len(),
            self.outputs.iter().map(|o| (o.as_str(), false)),
        );
        e.env(
            self.env.len(),
            self.env.iter().map(|(k, v)| (k.as_str(), *v)),
        );
        e.inputs(
            self.inputs.len(),
            self.inputs.iter().map(|(p, d)| (p.as_str(), d)),
        );
        e.schemas(
            self.schemas.len(),
            self.schemas.iter().map(|(p, d)| (p.as_str(), d)),
        );
        e.upstreams(self.upstream.len());
        for (name, u) in &self.upstream {
            match u {
                Upstream::Present { hard, outputs } => e.upstream_present(
                    name,
                    *hard,
                    outputs.len(),
                    outputs.iter().map(|(p, d)| (p.as_str(), d)),
                ),
                Upstream::Absent => e.upstream_absent(name),
            }
        }
        e.finish()
    }

    /// The reasons that explain how `self` differs from `old`, naming each file, variable
    /// and upstream that changed.
    pub fn diff(&self, old: &KeyParts) -> Vec<Why> {
        let mut whys = Vec::new();
        if self.command != old.command
            || self.cwd != old.cwd
            || self.outputs != old.outputs
            || self.shard != old.shard
            || self.depfile != old.depfile
        {
            whys.push(Why::plain(Reason::CommandChanged));
        }
        for (k, v) in &self.env {
            if old.env.get(k) != Some(v) {
                whys.push(Why::about(Reason::EnvChanged, k.clone()));
            }
        }
        for k in old.env.keys() {
            if !self.env.contains_key(k) {
                whys.push(Why::about(Reason::EnvChanged, k.clone()));
            }
        }
        for (p, d) in &self.inputs {
            match old.inputs.get(p) {
                None => whys.push(Why::about(Reason::InputAdded, p.clone())),
                Some(o) if o != d => whys.push(Why::about(Reason::InputChanged, p.clone())),
                _ => {}
            }
        }
        for p in old.inputs.keys() {
            if !self.inputs.contains_key(p) {
                whys.push(Why::about(Reason::InputRemoved, p.clone()));
            }
        }
        // Schema files read as inputs of the result: named by path like any input.
        for (p, d) in &self.schemas {
            match old.schemas.get(p) {
                None => whys.push(Why::about(Reason::InputAdded, p.clone())),
                Some(o) if o != d => whys.push(Why::about(Reason::InputChanged, p.clone())),
                _ => {}
            }
        }
        for p in old.schemas.keys() {
            if !self.schemas.contains_key(p) {
                whys.push(Why::about(Reason::InputRemoved, p.clone()));
            }
        }
        for (name, u) in &self.upstream {
            if old.upstream.get(name) != Some(u) {
                whys.push(Why::about(Reason::UpstreamChanged, name.clone()));
            }
        }
        for name in old.upstream.keys() {
            if !self.upstream.contains_key(name) {
                whys.push(Why::about(Reason::UpstreamChanged, name.clone()));
            }
        }
        if whys.is_empty() && self != old {
            whys.push(Why::plain(Reason::CommandChanged));
        }
        whys
    }
}

/// One produced output as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputMeta {
    /// Content digest (tree digest for directories).
    pub digest: Digest,
    /// Size in bytes (0 for directories).
    pub size: u64,
}

/// What is recorded with a success: the key's parts, the outputs produced and the
/// discovered inputs with the digests the result was built from.
///
/// Stored as two postcard values: the head (format, outputs, discovered inputs) then the
/// key parts. Every build reads the head of every manifest to check outputs and
/// discovered inputs; the key parts are decoded only when a key differs and the reasons
/// must be named, which keeps no-op builds fast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The key's parts.
    pub parts: KeyParts,
    /// Output path → what was produced.
    pub outputs: BTreeMap<String, OutputMeta>,
    /// Files the depfile listed (of every shard, for a sharded instance).
    pub discovered: Discovered,
}

/// Manifest format version (5: discovered inputs in the head, `depfile` in the parts).
pub const MANIFEST_FORMAT: u32 = 5;

#[derive(Serialize, Deserialize)]
struct Head {
    v: u32,
    outputs: BTreeMap<String, OutputMeta>,
    discovered: Discovered,
}

impl Manifest {
    /// The stored bytes: postcard of the format and outputs, then of the key parts. A
    /// build reads the first part of every manifest; the key parts are decoded only when
    /// a key differs and the reasons must be named.
    pub fn encode(&self) -> Vec<u8> {
        let head = Head {
            v: MANIFEST_FORMAT,
            outputs: self.outputs.clone(),
            discovered: self.discovered.clone(),
        };
        let mut bytes = postcard::to_stdvec(&head).unwrap_or_default();
        bytes.extend(postcard::to_stdvec(&self.parts).unwrap_or_default());
        bytes
    }
}

/// A recorded success, with its key parts decoded only on demand.
#[derive(Clone, Debug)]
pub struct Success {
    /// Its action key.
    pub key: Digest,
    /// Output path → what was produced.
    pub outputs: BTreeMap<String, OutputMeta>,
    /// The discovered inputs it was built from.
    pub discovered: Discovered,
    parts_bytes: Vec<u8>,
    parts: std::sync::OnceLock<Option<KeyParts>>,
}

impl Success {
    /// Decodes a stored manifest; None when it is unreadable (older orch, damage), which
    /// only means the instance rebuilds.
    pub fn decode(key: Digest, bytes: &[u8]) -> Option<Success> {
        let (head, rest) = Self::head(bytes)?;
        Some(Success::with_head(key, head, rest.to_vec()))
    }

    /// [`Success::decode`] of a manifest the caller gives up: the key parts keep its
    /// buffer rather than a copy, which a no-op build of many instances notices.
    pub fn decode_owned(key: Digest, mut bytes: Vec<u8>) -> Option<Success> {
        let (head, rest) = Self::head(&bytes)?;
        let head_len = bytes.len() - rest.len();
        bytes.drain(..head_len);
        Some(Success::with_head(key, head, bytes))
    }

    /// The head of a stored manifest and the bytes after it; None when unreadable.
    fn head(bytes: &[u8]) -> Option<(Head, &[u8])> {
        let (head, rest) = postcard::take_from_bytes::<Head>(bytes).ok()?;
        if head.v != MANIFEST_FORMAT {
            return None;
        }
        // State is untrusted: a discovered path that is not a plain project path would
        // make orch read outside the project; such a manifest only means "rebuild".
        if !head.discovered.keys().all(|p| is_discoverable(p)) {
            return None;
        }
        Some((head, rest))
    }

    fn with_head(key: Digest, head: Head, parts_bytes: Vec<u8>) -> Success {
        Success {
            key,
            outputs: head.outputs,
            discovered: head.discovered,
            parts_bytes,
            parts: std::sync::OnceLock::new(),
        }
    }

    /// A success from a manifest in memory.
    pub fn from_manifest(key: Digest, m: Manifest) -> Success {
        let cell = std::sync::OnceLock::new();
        let _ = cell.set(Some(m.parts));
        Success {
            key,
            outputs: m.outputs,
            discovered: m.discovered,
            parts_bytes: Vec::new(),
            parts: cell,
        }
    }

    /// The recorded key parts (None when unreadable).
    pub fn parts(&self) -> Option<&KeyParts> {
        self.parts
            .get_or_init(|| postcard::from_bytes(&self.parts_bytes).ok())
            .as_ref()
    }

    /// Output path → digest.
    pub fn output_digests(&self) -> BTreeMap<String, Digest> {
        self.outputs
            .iter()
            .map(|(p, m)| (p.clone(), m.digest))
            .collect()
    }
}

/// Whether `path` can name a discovered input: a plain project-relative path (no `..`,
/// `.` or empty component, not absolute), outside `.orch/`. Paths read from state or a
/// cache entry are checked with this before orch reads them.
pub fn is_discoverable(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && path.split('/').next() != Some(".orch")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> KeyParts {
        KeyParts {
            instance: "a".into(),
            command: "echo hi > out".into(),
            cwd: String::new(),
            outputs: vec!["out".into()],
            shard: String::new(),
            env: BTreeMap::from([("LANG".into(), Some(crate::fs::hash_bytes(b"C")))]),
            inputs: BTreeMap::from([("in.txt".into(), crate::fs::hash_bytes(b"x"))]),
            upstream: BTreeMap::from([("up".into(), Upstream::Absent)]),
            schemas: BTreeMap::from([("line.json".into(), crate::fs::hash_bytes(b"{}"))]),
            depfile: String::new(),
        }
    }

    /// The encoding as it was written before [`KeyEncoder`], one hasher update per
    /// field: keys recorded by earlier versions must stay equal to it.
    mod reference {
        use super::*;

        struct Encoder(blake3::Hasher);

        impl Encoder {
            fn tag(&mut self, t: u8) {
                self.0.update(&[t]);
            }
            fn bytes(&mut self, b: &[u8]) {
                self.0.update(&(b.len() as u64).to_le_bytes());
                self.0.update(b);
            }
            fn str(&mut self, s: &str) {
                self.bytes(s.as_bytes());
            }
            fn len(&mut self, n: usize) {
                self.0.update(&(n as u64).to_le_bytes());
            }
            fn digest(&mut self, d: &Digest) {
                self.0.update(&d.0);
            }
        }

        pub fn reference_key(p: &KeyParts) -> Digest {
            let mut e = Encoder(blake3::Hasher::new());
            e.str("orch-action-key");
            e.0.update(&KEY_FORMAT.to_le_bytes());
            e.tag(b'i');
            e.str(&p.instance);
            e.tag(b'c');
            e.str(&p.command);
            e.tag(b'w');
            e.str(&p.cwd);
            e.tag(b's');
            e.str(&p.shard);
            // Only when set, so keys of phases without a depfile keep their format-3 bytes.
            if !p.depfile.is_empty() {
                e.tag(b'd');
                e.str(&p.depfile);
            }
            e.tag(b'o');
            e.len(p.outputs.len());
            for o in &p.outputs {
                e.str(o);
            }
            e.tag(b'e');
            e.len(p.env.len());
            for (k, v) in &p.env {
                e.str(k);
                match v {
                    Some(d) => {
                        e.tag(1);
                        e.digest(d);
                    }
                    None => e.tag(0),
                }
            }
            e.tag(b'f');
            e.len(p.inputs.len());
            for (p, d) in &p.inputs {
                e.str(p);
                e.digest(d);
            }
            e.tag(b'j');
            e.len(p.schemas.len());
            for (p, d) in &p.schemas {
                e.str(p);
                e.digest(d);
            }
            e.tag(b'u');
            e.len(p.upstream.len());
            for (name, u) in &p.upstream {
                e.str(name);
                match u {
                    Upstream::Present { hard, outputs } => {
                        e.tag(if *hard { b'h' } else { b's' });
                        e.len(outputs.len());
                        for (p, d) in outputs {
                            e.str(p);
                            e.digest(d);
                        }
                    }
                    Upstream::Absent => e.tag(b'a'),
                }
            }
            Digest(*e.0.finalize().as_bytes())
        }
    }

    /// More parts than the golden key has: a directory output, a depfile, every kind of
    /// upstream, an unset variable, several files.
    fn wide_parts() -> KeyParts {
        let d = |s: &str| crate::fs::hash_bytes(s.as_bytes());
        KeyParts {
            instance: "link[os=linux]".into(),
            command: "ld {inputs} -o {{x}}".into(),
            cwd: "sub".into(),
            outputs: vec![
                "out/dir/".into(),
                "out/a.o".into(),
                "out/{shard.key}".into(),
            ],
            shard: "files source=\"src/*.c\" merge=none".into(),
            env: BTreeMap::from([("A".into(), Some(d("1"))), ("B".into(), None)]),
            inputs: (0..40)
                .map(|k| (format!("src/f{k}.c"), d(&k.to_string())))
                .collect(),
            upstream: BTreeMap::from([
                ("a".into(), Upstream::Absent),
                (
                    "b".into(),
                    Upstream::Present {
                        hard: true,
                        outputs: BTreeMap::from([("b.o".into(), d("b")), ("c.o".into(), d("c"))]),
                    },
                ),
                (
                    "c".into(),
                    Upstream::Present {
                        hard: false,
                        outputs: BTreeMap::new(),
                    },
                ),
            ]),
            schemas: BTreeMap::from([("s.json".into(), d("{}"))]),
            depfile: "build/{shard.key}.d".into(),
        }
    }

    #[test]
    fn keys_are_the_earlier_encoding() {
        for p in [parts(), wide_parts()] {
            assert_eq!(p.action_key(), reference::reference_key(&p), "{p:?}");
        }
        // And pinned, should the reference itself ever be edited.
        assert_eq!(
            wide_parts().action_key().to_hex(),
            "ea9523e1fb9d5af3b1b63bfd79ee8343a74de81537d2aaa391318d13251ab1e0"
        );
    }

    /// Pins the encoding: changing it must be deliberate (bump KEY_FORMAT). Format 3
    /// added the output schemas part (tag `j`), so this value moved with it.
    #[test]
    fn golden_key() {
        assert_eq!(
            parts().action_key().to_hex(),
            "ad746a3cb17c9c7027241f5b1eafc4e143d6e913af6ede4285db778b3f58557a"
        );
    }

    #[test]
    fn every_part_changes_the_key() {
        let base = parts().action_key();
        let mut p = parts();
        p.command.push(' ');
        assert_ne!(p.action_key(), base);
        let mut p = parts();
        p.outputs.push("x".into());
        assert_ne!(p.action_key(), base);
        let mut p = parts();
        p.shard = "chunk source=\"in.jsonl\" size=2 merge=concat".into();
        assert_ne!(p.action_key(), base);
        let mut p = parts();
        p.env.insert("LANG".into(), None);
        assert_ne!(p.action_key(), base);
        let mut p = parts();
        p.inputs
            .insert("in2.txt".into(), crate::fs::hash_bytes(b"x"));
        assert_ne!(p.action_key(), base);
        let mut p = parts();
        p.schemas.insert(
            "line.json".into(),
            crate::fs::hash_bytes(b"{\"type\":\"object\"}"),
        );
        assert_ne!(p.action_key(), base);
        let mut p = parts();
        p.schemas.clear();
        assert_ne!(p.action_key(), base);
        let mut p = parts();
        p.upstream.insert(
            "up".into(),
            Upstream::Present {
                hard: false,
                outputs: BTreeMap::new(),
            },
        );
        assert_ne!(p.action_key(), base);
    }

    #[test]
    fn a_depfile_enters_the_key_only_when_set() {
        let base = parts().action_key();
        let mut p = parts();
        p.depfile = "build/a.d".into();
        assert_ne!(p.action_key(), base);
        assert_eq!(p.diff(&parts()), vec![Why::plain(Reason::CommandChanged)]);
    }

    #[test]
    fn a_manifest_naming_a_path_outside_the_project_is_unreadable() {
        for bad in [
            "../x.h",
            "/usr/include/stdio.h",
            "a/../b",
            ".orch/key",
            "",
            "a//b",
        ] {
            let m = Manifest {
                parts: parts(),
                outputs: BTreeMap::new(),
                discovered: BTreeMap::from([(bad.to_owned(), None)]),
            };
            assert!(
                Success::decode(parts().action_key(), &m.encode()).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn discovered_inputs_name_what_changed() {
        let (a, b) = (crate::fs::hash_bytes(b"a"), crate::fs::hash_bytes(b"b"));
        let rec: Discovered = BTreeMap::from([
            ("changed.h".into(), Some(a)),
            ("gone.h".into(), Some(a)),
            ("new.h".into(), None),
            ("same.h".into(), Some(a)),
            ("still-absent.h".into(), None),
        ]);
        let now = |p: &str| match p {
            "changed.h" => Some(b),
            "new.h" | "same.h" => Some(a),
            _ => None,
        };
        assert_eq!(
            discovered_whys(&rec, &now),
            vec![
                Why::about(Reason::InputChanged, "changed.h"),
                Why::about(Reason::InputRemoved, "gone.h"),
                Why::about(Reason::InputAdded, "new.h"),
            ]
        );
    }

    #[test]
    fn concatenation_cannot_collide() {
        let mut a = parts();
        a.command = "ab".into();
        a.cwd = "c".into();
        let mut b = parts();
        b.command = "a".into();
        b.cwd = "bc".into();
        assert_ne!(a.action_key(), b.action_key());
    }

    #[test]
    fn manifest_round_trip() {
        let m = Manifest {
            parts: parts(),
            outputs: BTreeMap::from([(
                "out".into(),
                OutputMeta {
                    digest: crate::fs::hash_bytes(b"o"),
                    size: 1,
                },
            )]),
            discovered: BTreeMap::from([
                ("inc/a.h".into(), Some(crate::fs::hash_bytes(b"a"))),
                ("inc/gone.h".into(), None),
            ]),
        };
        let s = Success::decode(parts().action_key(), &m.encode()).unwrap();
        assert_eq!(s.outputs, m.outputs);
        assert_eq!(s.discovered, m.discovered);
        assert_eq!(s.parts(), Some(&parts()));
        assert!(Success::decode(parts().action_key(), b"garbage").is_none());
        // Decoding a buffer handed over reads the same, key parts included.
        let owned = Success::decode_owned(parts().action_key(), m.encode()).unwrap();
        assert_eq!(owned.outputs, m.outputs);
        assert_eq!(owned.discovered, m.discovered);
        assert_eq!(owned.parts(), Some(&parts()));
        assert!(Success::decode_owned(parts().action_key(), b"garbage".to_vec()).is_none());
    }

    #[test]
    fn diff_names_what_changed() {
        let old = parts();
        let mut new = parts();
        new.inputs
            .insert("in.txt".into(), crate::fs::hash_bytes(b"y"));
        new.inputs
            .insert("new.txt".into(), crate::fs::hash_bytes(b"y"));
        new.env.insert("LANG".into(), None);
        let whys = new.diff(&old);
        assert_eq!(
            whys,
            vec![
                Why::about(Reason::EnvChanged, "LANG"),
                Why::about(Reason::InputChanged, "in.txt"),
                Why::about(Reason::InputAdded, "new.txt"),
            ]
        );
        assert!(parts().diff(&parts()).is_empty());
    }

    #[test]
    fn diff_names_a_changed_schema_as_an_input() {
        let old = parts();
        let mut new = parts();
        new.schemas.insert(
            "line.json".into(),
            crate::fs::hash_bytes(b"{\"required\":[]}"),
        );
        assert_eq!(
            new.diff(&old),
            vec![Why::about(Reason::InputChanged, "line.json")]
        );
        new.schemas.clear();
        assert_eq!(
            new.diff(&old),
            vec![Why::about(Reason::InputRemoved, "line.json")]
        );
    }
}
