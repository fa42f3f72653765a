//! The validated project: phases, their instances (one per matrix combination), and
//! everything downstream stages need, with invalid states unrepresentable.
//!
//! `validate` turns a [`crate::orchfile::RawProject`] into a [`Project`] or reports every
//! configuration error at once.

pub mod path;
pub mod template;
pub mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::fs::Digest;
use crate::orchfile::{FileId, Sources, Span};

pub use validate::{validate, validate_all};

/// The Orchfile format this version of orch reads.
pub const FORMAT: i64 = 1;

/// A validated project.
#[derive(Debug)]
pub struct Project {
    /// The project root (canonical).
    pub root: PathBuf,
    /// The Orchfile and fragments, for diagnostics found later.
    pub sources: Sources,
    /// BLAKE3 over every configuration file's name and text.
    pub digest: Digest,
    /// Default `-j`.
    pub jobs: Option<usize>,
    /// Variables passed to and hashed into every phase (`orch.env`), sorted.
    pub env: Vec<String>,
    /// Phases by name.
    pub phases: BTreeMap<String, Phase>,
    /// Every instance, sorted by name; indices into this are instance ids.
    pub instances: Vec<Instance>,
}

impl Project {
    /// The instance with this name.
    pub fn instance_index(&self, name: &str) -> Option<usize> {
        self.instances
            .binary_search_by(|i| i.name.as_str().cmp(name))
            .ok()
    }
}

/// A declared phase.
#[derive(Debug)]
pub struct Phase {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// The file declaring it.
    pub file: FileId,
    /// The span of its name.
    pub span: Span,
    /// Hard dependencies, with the span of each name.
    pub needs: Vec<(String, Span)>,
    /// Soft dependencies, with the span of each name.
    pub after: Vec<(String, Span)>,
    /// Matrix axes, sorted.
    pub axes: Vec<String>,
    /// Its instances (indices into [`Project::instances`]), sorted by name.
    pub instances: Vec<usize>,
}

/// A piece of an expanded command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdPiece {
    /// Literal text.
    Text(String),
    /// `{inputs}`: the matched input files, known only after the walk.
    Inputs,
}

/// One variable an instance passes to its command and hashes into its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvValue {
    /// Taken from orch's own environment.
    Inherit,
    /// Set to this value.
    Set(String),
}

/// A declared output of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Normalised project-relative path, without a trailing `/`.
    pub path: String,
    /// Declared as a directory (ended in `/`).
    pub dir: bool,
    /// JSON Schema the output must satisfy.
    pub schema: Option<String>,
}

/// Retry policy of a phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Total attempts, including the first.
    pub attempts: u32,
    /// Delay before the first retry.
    pub backoff: Duration,
    /// Upper bound of the delay.
    pub max_backoff: Duration,
}

/// A dependency of one instance on another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dep {
    /// The upstream instance.
    pub upstream: usize,
    /// `needs` (true) or `after` (false).
    pub hard: bool,
}

/// A phase × one matrix combination: the unit that is planned and run.
#[derive(Clone, Debug)]
pub struct Instance {
    /// `phase` or `phase[axis=value,...]` (axes sorted).
    pub name: String,
    /// The phase it belongs to.
    pub phase: String,
    /// Its matrix values.
    pub matrix: BTreeMap<String, String>,
    /// The command, or None for a phase that only groups dependencies.
    pub run: Option<Vec<CmdPiece>>,
    /// Input glob patterns, project-relative.
    pub inputs: Vec<String>,
    /// Declared outputs.
    pub outputs: Vec<Output>,
    /// Environment passed and hashed.
    pub env: BTreeMap<String, EnvValue>,
    /// Directory the command runs in, relative to the root ("" for the root).
    pub cwd: String,
    /// Never up to date.
    pub always: bool,
    /// May use the cache.
    pub cache: bool,
    /// Per-attempt time limit.
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retry: Option<Retry>,
    /// Dependencies, sorted by upstream index.
    pub deps: Vec<Dep>,
}

impl Instance {
    /// The command with `{inputs}` replaced by the given (already quoted) input list.
    pub fn command(&self, quoted_inputs: &str) -> Option<String> {
        self.run.as_ref().map(|pieces| {
            let mut s = String::new();
            for p in pieces {
                match p {
                    CmdPiece::Text(t) => s.push_str(t),
                    CmdPiece::Inputs => s.push_str(quoted_inputs),
                }
            }
            s
        })
    }

    /// The command with `{inputs}` left as a placeholder and literal braces escaped: a
    /// one-to-one text form for the action key.
    pub fn command_template(&self) -> Option<String> {
        self.run.as_ref().map(|pieces| {
            let mut s = String::new();
            for p in pieces {
                match p {
                    CmdPiece::Text(t) => s.push_str(&t.replace('{', "{{").replace('}', "}}")),
                    CmdPiece::Inputs => s.push_str("{inputs}"),
                }
            }
            s
        })
    }

    /// The command to run, given the input files that exist (project-relative).
    pub fn command_line(&self, inputs: &[&str]) -> Option<String> {
        if !self.uses_inputs() {
            return self.command("");
        }
        let rel: Vec<String> = inputs
            .iter()
            .map(|p| path::relative_to(&self.cwd, p))
            .collect();
        self.command(&template::shell_join(rel.iter().map(String::as_str)))
    }

    /// Whether the command uses `{inputs}`.
    pub fn uses_inputs(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|p| p.contains(&CmdPiece::Inputs))
    }
}
