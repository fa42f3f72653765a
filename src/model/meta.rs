//! Self-describing artifacts: the provenance sidecar `PATH.meta.json` orch writes beside
//! an output declared with `meta = true`, what it holds, and how it is written.
//!
//! The sidecar is a record about the artifact, never part of it: it enters neither the
//! artifact's digest nor any action key, and no phase can declare it as an output.

use std::collections::BTreeMap;
use std::io::Write as _;

use serde::{Deserialize, Serialize};

use crate::fs::{Beneath, BeneathError, Digest};
use crate::plan::{KeyParts, Upstream};

/// The sidecar format version (`"v"` in the file).
pub const SIDECAR_VERSION: u32 = 1;

/// What a sidecar's file name adds to its artifact's.
pub const SIDECAR_SUFFIX: &str = ".meta.json";

/// Where the sidecar of output `path` is written.
pub fn sidecar_path(path: &str) -> String {
    format!("{path}{SIDECAR_SUFFIX}")
}

/// Whether `path` is the sidecar of an output of `project` declared with `meta = true`:
/// input globs never match one, as it changes with every build of its artifact.
pub fn is_sidecar(project: &crate::model::Project, path: &str) -> bool {
    let Some(artifact) = path.strip_suffix(SIDECAR_SUFFIX) else {
        return false;
    };
    project
        .instances
        .iter()
        .flat_map(|i| &i.outputs)
        .any(|o| o.meta && o.path == artifact)
}

/// The contents of a sidecar (`schemas/artifact-meta.v1.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// Format version: [`SIDECAR_VERSION`].
    pub v: u32,
    /// The artifact itself.
    pub artifact: Artifact,
    /// The JSON Schema the artifact was checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<FileDigest>,
    /// The instance that produced it.
    pub instance: String,
    /// Its phase.
    pub phase: String,
    /// The expanded command ("" for a phase without `run`).
    pub command: String,
    /// Environment variable name → keyed digest of its value (null when unset); never
    /// the value, which may be a secret.
    pub env: BTreeMap<String, Option<Digest>>,
    /// The files it was built from, sorted by path.
    pub parents: Vec<Parent>,
    /// The run that produced it.
    pub run_id: String,
    /// The machine that produced it.
    pub host: String,
    /// When it was produced (RFC 3339, UTC).
    pub time: String,
    /// The run that restored it from the cache, when it was restored rather than built:
    /// everything else still describes the build that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_in_run: Option<String>,
}

/// An artifact: its path, digest and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Project-relative path.
    pub path: String,
    /// BLAKE3 digest of its bytes.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// A file and its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// Project-relative path.
    pub path: String,
    /// BLAKE3 digest of its bytes.
    pub digest: Digest,
}

/// A file an artifact was built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parent {
    /// Project-relative path.
    pub path: String,
    /// BLAKE3 digest of its contents when the artifact was built.
    pub digest: Digest,
    /// The upstream instance that produced it; absent for a source input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// What a build knows of an instance when it starts, from which each of its outputs'
/// sidecars is made once the outputs are hashed.
#[derive(Clone, Debug)]
pub struct Provenance {
    /// Outputs that asked for a sidecar: (path, schema).
    pub outputs: Vec<(String, Option<String>)>,
    phase: String,
    run_id: String,
    /// The command as it ran (a sharded instance's: its template, `{shard.input}` and all).
    command: String,
    parts: KeyParts,
}

impl Provenance {
    /// The provenance of an instance of `phase` run in `run_id` as `command` with key
    /// `parts`, or None when none of `outputs` asked for a sidecar.
    pub fn of(
        phase: &str,
        outputs: &[crate::model::Output],
        (command, parts): (&str, &KeyParts),
        run_id: &str,
    ) -> Option<Provenance> {
        let outputs: Vec<_> = outputs
            .iter()
            .filter(|o| o.meta && !o.dir)
            .map(|o| (o.path.clone(), o.schema.clone()))
            .collect();
        (!outputs.is_empty()).then(|| Provenance {
            outputs,
            phase: phase.to_owned(),
            run_id: run_id.to_owned(),
            command: command.to_owned(),
            parts: parts.clone(),
        })
    }

    /// The sidecar of output `path` (with `schema`), whose content has `digest` and
    /// `size`, produced at `time` on `host`.
    pub fn sidecar(
        &self,
        (path, schema): (&str, Option<&str>),
        (digest, size): (Digest, u64),
        host: &str,
        time: &str,
    ) -> Sidecar {
        let mut parents: Vec<Parent> = self
            .parts
            .inputs
            .iter()
            .map(|(p, d)| Parent {
                path: p.clone(),
                digest: *d,
                from: None,
            })
            .collect();
        for (name, up) in &self.parts.upstream {
            if let Upstream::Present { outputs, .. } = up {
                parents.extend(outputs.iter().map(|(p, d)| Parent {
                    path: p.clone(),
                    digest: *d,
                    from: Some(name.clone()),
                }));
            }
        }
        // A file both listed as an input and produced upstream is named once, with the
        // instance that produced it.
        parents.sort_by(|a, b| a.path.cmp(&b.path).then_with(|| b.from.cmp(&a.from)));
        parents.dedup_by(|a, b| a.path == b.path);
        Sidecar {
            v: SIDECAR_VERSION,
            artifact: Artifact {
                path: path.to_owned(),
                digest,
                size,
            },
            // A schema absent from the key was absent on disk: the check failed then.
            schema: schema.and_then(|s| {
                Some(FileDigest {
                    path: s.to_owned(),
                    digest: *self.parts.schemas.get(s)?,
                })
            }),
            instance: self.parts.instance.clone(),
            phase: self.phase.clone(),
            command: self.command.clone(),
            env: self.parts.env.clone(),
            parents,
            run_id: self.run_id.clone(),
            host: host.to_owned(),
            time: time.to_owned(),
            restored_in_run: None,
        }
    }
}

/// Writes `sidecar` beside its artifact, whole or not at all, beneath the project root.
pub fn write(root: &Beneath, sidecar: &Sidecar) -> Result<(), BeneathError> {
    root.replace_with(sidecar_path(&sidecar.artifact.path), |f| {
        let mut bytes = serde_json::to_vec_pretty(sidecar).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        f.write_all(&bytes)
    })
}

/// This machine's host name ("" when it cannot be read).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, which is what is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The time now, as a sidecar records it.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> KeyParts {
        let d = |b: u8| Digest([b; 32]);
        KeyParts {
            instance: "plan".into(),
            command: "sh plan.sh".into(),
            cwd: String::new(),
            outputs: vec!["out/plan.json".into()],
            shard: String::new(),
            env: BTreeMap::from([("TOKEN".into(), Some(d(9)))]),
            inputs: BTreeMap::from([("plan.sh".into(), d(1)), ("b.txt".into(), d(2))]),
            upstream: BTreeMap::from([
                (
                    "shots".into(),
                    Upstream::Present {
                        hard: true,
                        outputs: BTreeMap::from([("out/shots.json".into(), d(3))]),
                    },
                ),
                ("gone".into(), Upstream::Absent),
            ]),
            schemas: BTreeMap::from([("schemas/plan.json".into(), d(4))]),
            depfile: String::new(),
        }
    }

    fn output(meta: bool, dir: bool) -> crate::model::Output {
        crate::model::Output {
            path: "out/plan.json".into(),
            dir,
            schema: Some("schemas/plan.json".into()),
            meta,
        }
    }

    #[test]
    fn only_file_outputs_that_ask_get_a_sidecar() {
        assert!(
            Provenance::of("p", &[output(false, false)], ("sh plan.sh", &parts()), "r").is_none()
        );
        assert!(
            Provenance::of("p", &[output(true, true)], ("sh plan.sh", &parts()), "r").is_none()
        );
        let p = Provenance::of("p", &[output(true, false)], ("sh plan.sh", &parts()), "r").unwrap();
        assert_eq!(
            p.outputs,
            [(
                "out/plan.json".to_owned(),
                Some("schemas/plan.json".to_owned())
            )]
        );
    }

    #[test]
    fn a_sidecar_names_parents_sorted_and_never_a_value() {
        let p = Provenance::of(
            "p",
            &[output(true, false)],
            ("sh plan.sh", &parts()),
            "run-1",
        )
        .unwrap();
        let s = p.sidecar(
            ("out/plan.json", Some("schemas/plan.json")),
            (Digest([7; 32]), 12),
            "h",
            "2026-01-01T00:00:00Z",
        );
        let paths: Vec<_> = s.parents.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["b.txt", "out/shots.json", "plan.sh"]);
        assert_eq!(s.parents[1].from.as_deref(), Some("shots"));
        assert_eq!(s.schema.as_ref().map(|f| f.digest), Some(Digest([4; 32])));
        assert_eq!(s.env["TOKEN"], Some(Digest([9; 32])));
        let json = serde_json::to_string(&s).unwrap();
        let back: Sidecar = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(!json.contains("restored_in_run"));
    }

    #[test]
    fn the_sidecar_path_is_beside_the_artifact() {
        assert_eq!(sidecar_path("out/a.json"), "out/a.json.meta.json");
    }
}
