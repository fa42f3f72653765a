//! Source texts of the Orchfile and its included fragments, spans into them, and the
//! configuration diagnostic every loading and validation stage reports through.
//!
//! A diagnostic keeps the file, the byte range and a label, so errors found long after
//! parsing (unknown dependency, cycle, duplicate output) still point at the Orchfile text.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

/// One loaded configuration file.
#[derive(Debug)]
pub struct SourceFile {
    /// Path as shown to the user (relative to the project root when possible).
    pub name: String,
    /// Absolute path on disk.
    pub path: PathBuf,
    /// The whole text.
    pub text: Arc<String>,
}

/// Identifies a file in [`Sources`].
pub type FileId = usize;

/// Every configuration file of a project, in load order (the Orchfile first).
#[derive(Debug, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    /// Adds a file and returns its id.
    pub fn add(&mut self, name: String, path: PathBuf, text: String) -> FileId {
        self.files.push(SourceFile {
            name,
            path,
            text: Arc::new(text),
        });
        self.files.len() - 1
    }

    /// The file with this id.
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id]
    }

    /// All files, Orchfile first.
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// A named source for miette.
    pub fn named(&self, id: FileId) -> NamedSource<Arc<String>> {
        let f = &self.files[id];
        NamedSource::new(f.name.clone(), Arc::clone(&f.text)).with_language("toml")
    }

    /// 1-based line and column of a byte offset, for messages outside miette.
    pub fn line_col(&self, span: &Span) -> (usize, usize) {
        let text = &self.files[span.file].text;
        let upto = &text[..span.range.start.min(text.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.rfind('\n').map_or(upto.len(), |i| upto.len() - i - 1) + 1;
        (line, col)
    }
}

/// A byte range in one source file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Span {
    /// Which file.
    pub file: FileId,
    /// Byte range in that file.
    pub range: Range<usize>,
}

impl Span {
    /// A span in `file` covering `range`.
    pub fn new(file: FileId, range: Range<usize>) -> Span {
        Span { file, range }
    }
}

/// The kind of a configuration error; its code is stable and shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The Orchfile could not be found or read.
    Io,
    /// TOML syntax error.
    Syntax,
    /// A key orch does not know.
    UnknownKey,
    /// A value of the wrong type or shape.
    Type,
    /// A value that is well-typed but not allowed.
    Value,
    /// A placeholder that does not exist or cannot be used here.
    Placeholder,
    /// A dependency on a phase that does not exist.
    UnknownDependency,
    /// A dependency cycle.
    Cycle,
    /// Two phases declare the same output.
    DuplicateOutput,
    /// A phase declared twice (across included files).
    DuplicatePhase,
    /// A path that leaves the project root.
    PathEscapes,
    /// A glob pattern that does not compile.
    Glob,
    /// An unknown target on the command line.
    UnknownTarget,
    /// An output that would overwrite configuration or one of its phase's inputs.
    OutputConflict,
    /// A phase names an executor that is neither `local` nor declared.
    UnknownExecutor,
    /// `--set` names a variable `[vars]` does not declare.
    UnknownVariable,
}

impl ErrorKind {
    /// The stable diagnostic code.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Io => "orch::orchfile::io",
            ErrorKind::Syntax => "orch::orchfile::syntax",
            ErrorKind::UnknownKey => "orch::orchfile::unknown_key",
            ErrorKind::Type => "orch::orchfile::type",
            ErrorKind::Value => "orch::orchfile::value",
            ErrorKind::Placeholder => "orch::model::placeholder",
            ErrorKind::UnknownDependency => "orch::graph::unknown_dependency",
            ErrorKind::Cycle => "orch::graph::cycle",
            ErrorKind::DuplicateOutput => "orch::graph::duplicate_output",
            ErrorKind::DuplicatePhase => "orch::orchfile::duplicate_phase",
            ErrorKind::PathEscapes => "orch::model::path_escapes_root",
            ErrorKind::Glob => "orch::model::glob",
            ErrorKind::UnknownTarget => "orch::graph::unknown_target",
            ErrorKind::OutputConflict => "orch::model::output_conflict",
            ErrorKind::UnknownExecutor => "orch::model::unknown_executor",
            ErrorKind::UnknownVariable => "orch::cli::unknown_variable",
        }
    }
}

/// A configuration error with its place in the source.
#[derive(Debug)]
pub struct ConfigError {
    /// What kind of error.
    pub kind: ErrorKind,
    /// One-line message, lower-case, names in backticks.
    pub message: String,
    /// Where, with the label shown on the text.
    pub primary: Option<(Span, String)>,
    /// Further labelled places in the same file (e.g. the first declaration).
    pub secondary: Vec<(Span, String)>,
    /// How to fix it.
    pub help: Option<String>,
}

impl ConfigError {
    /// An error of `kind` with `message` and no location yet.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ConfigError {
        ConfigError {
            kind,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            help: None,
        }
    }

    /// Sets the labelled place of the error.
    pub fn at(mut self, span: &Span, label: impl Into<String>) -> ConfigError {
        self.primary = Some((span.clone(), label.into()));
        self
    }

    /// Adds a secondary labelled place.
    pub fn also(mut self, span: &Span, label: impl Into<String>) -> ConfigError {
        self.secondary.push((span.clone(), label.into()));
        self
    }

    /// Sets the help line.
    pub fn help(mut self, help: impl Into<String>) -> ConfigError {
        self.help = Some(help.into());
        self
    }

    /// Sort key: file, then position, then message.
    fn sort_key(&self) -> (usize, usize, String) {
        match &self.primary {
            Some((s, _)) => (s.file, s.range.start, self.message.clone()),
            None => (usize::MAX, 0, self.message.clone()),
        }
    }

    /// Attaches the source text so miette can render it.
    pub fn render(self, sources: &Sources) -> RenderedError {
        let file = self.primary.as_ref().map(|(s, _)| s.file);
        let location = self.primary.as_ref().map(|(s, _)| {
            let (line, col) = sources.line_col(s);
            format!("{}:{}:{}", sources.get(s.file).name, line, col)
        });
        RenderedError {
            source: file.map(|f| sources.named(f)),
            location,
            error: self,
        }
    }
}

/// Sorts errors by position, as they are reported.
pub fn sort_errors(errors: &mut [ConfigError]) {
    errors.sort_by_key(|e| e.sort_key());
}

/// A [`ConfigError`] together with its source text: what is printed.
#[derive(Debug)]
pub struct RenderedError {
    error: ConfigError,
    source: Option<NamedSource<Arc<String>>>,
    location: Option<String>,
}

impl RenderedError {
    /// `file:line:col` of the primary label, when there is one.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }
}

impl fmt::Display for RenderedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error.message)
    }
}

impl std::error::Error for RenderedError {}

impl Diagnostic for RenderedError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.error.kind.code()))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.error
            .help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (primary, label) = self.error.primary.as_ref()?;
        let file = primary.file;
        let mut labels = vec![LabeledSpan::new_primary_with_span(
            Some(label.clone()),
            primary.range.clone(),
        )];
        for (span, label) in &self.error.secondary {
            if span.file == file {
                labels.push(LabeledSpan::new_with_span(
                    Some(label.clone()),
                    span.range.clone(),
                ));
            }
        }
        Some(Box::new(labels.into_iter()))
    }
}

/// Suggests the closest of `candidates` to `name`, if one is close enough.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based() {
        let mut s = Sources::default();
        let id = s.add("O".into(), PathBuf::from("O"), "a = 1\nbb = 2\n".into());
        assert_eq!(s.line_col(&Span::new(id, 0..1)), (1, 1));
        assert_eq!(s.line_col(&Span::new(id, 7..8)), (2, 2));
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("neds", ["needs", "after", "run"]),
            Some("needs")
        );
        assert_eq!(did_you_mean("zzz", ["needs", "after"]), None);
    }
}
