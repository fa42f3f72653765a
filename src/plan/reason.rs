//! Why an instance is stale: one enum of reason codes, shared by `plan`, `status`,
//! `explain`, events and tests. The codes are public names (DESIGN §4).

use serde::Serialize;

/// A staleness reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No successful result was ever recorded.
    NeverBuilt,
    /// The latest attempt failed.
    LastFailed,
    /// The expanded command, working directory or declared outputs changed.
    CommandChanged,
    /// An input file's content changed.
    InputChanged,
    /// An input file appeared.
    InputAdded,
    /// An input file disappeared.
    InputRemoved,
    /// A declared environment variable changed.
    EnvChanged,
    /// An upstream instance produced different outputs (or will run first).
    UpstreamChanged,
    /// A recorded output is gone.
    OutputMissing,
    /// A recorded output's content differs from what was produced.
    OutputModified,
    /// `--force` or `--from`.
    Forced,
    /// The phase has `always = true`.
    Always,
}

impl Reason {
    /// The public code, as in events and `plan --json`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::NeverBuilt => "never_built",
            Reason::LastFailed => "last_failed",
            Reason::CommandChanged => "command_changed",
            Reason::InputChanged => "input_changed",
            Reason::InputAdded => "input_added",
            Reason::InputRemoved => "input_removed",
            Reason::EnvChanged => "env_changed",
            Reason::UpstreamChanged => "upstream_changed",
            Reason::OutputMissing => "output_missing",
            Reason::OutputModified => "output_modified",
            Reason::Forced => "forced",
            Reason::Always => "always",
        }
    }
}

/// A reason with the thing it is about (a path, variable or upstream instance).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Why {
    /// The code.
    pub reason: Reason,
    /// What changed, when there is one thing to name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Why {
    /// A reason about nothing in particular.
    pub fn plain(reason: Reason) -> Why {
        Why {
            reason,
            subject: None,
        }
    }

    /// A reason about `subject`.
    pub fn about(reason: Reason, subject: impl Into<String>) -> Why {
        Why {
            reason,
            subject: Some(subject.into()),
        }
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.subject {
            Some(s) => write!(f, "{} ({s})", self.reason.code()),
            None => f.write_str(self.reason.code()),
        }
    }
}

/// The distinct codes of a list of reasons, in order.
pub fn codes(whys: &[Why]) -> Vec<Reason> {
    let mut v: Vec<Reason> = whys.iter().map(|w| w.reason).collect();
    v.sort();
    v.dedup();
    v
}
