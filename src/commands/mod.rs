//! One short file per subcommand: wiring between the CLI and the library, and the
//! shared steps (find and load the project, render diagnostics).

/// `println!` that ignores a closed stdout (`orch plan | head` is not an error).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod build;
mod check;
mod clean;
pub(crate) mod complete;
mod explain;
mod gc;
mod graph_cmd;
mod init;
mod list;
mod log;
mod man;
mod plan;
mod report;
mod runs;
mod schema;
mod show;
mod status;
mod verify;
mod version;
mod watch;

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;

use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::cli::{Cli, ColorWhen, Command};
use crate::events::human::Verbosity;
use crate::graph::{self, Graph};
use crate::model::{self, Project};
use crate::orchfile::{self, ConfigError, ConfigFailure, Sources};
use crate::store::Layout;
use crate::{EXIT_FAILED, EXIT_USAGE};

/// Runs the parsed command line and returns the exit status.
pub fn dispatch(cli: Cli) -> i32 {
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let g = Global {
        dir: cli.dir,
        file: cli.file,
        verbosity,
        color: cli.color,
        sets: cli.set,
    };
    crate::events::color::set(cli.color);
    let Some(command) = cli.command else {
        // clap asks for a subcommand whenever there are no arguments at all, so only
        // `-V` (or `-vV`) and global flags on their own reach this point.
        if cli.version {
            return version::run(&g);
        }
        crate::say!("error: no command given; try `orch build`, or `orch --help` for the list");
        return EXIT_USAGE;
    };
    if cli.version {
        return version::run(&g);
    }
    match command {
        Command::Build(a) => build::run(&g, a),
        Command::Watch(a) => watch::run(&g, a),
        Command::Plan(a) => plan::run(&g, a),
        Command::Status(a) => status::run(&g, a),
        Command::Explain(a) => explain::run(&g, a),
        Command::Graph(a) => graph_cmd::run(&g, a),
        Command::Check => check::run(&g),
        Command::Runs(a) => runs::run(&g, a),
        Command::Log(a) => log::run(&g, a),
        Command::Show(a) => show::run(&g, a),
        Command::Clean(a) => clean::run(&g, a),
        Command::Gc(a) => gc::run(&g, a),
        Command::Init => init::run(&g),
        Command::Schema => schema::run(),
        Command::List(a) => list::run(&g, a),
        Command::Report(a) => report::run(&g, a),
        Command::Verify(a) => verify::run(&g, a),
        Command::Man(a) => man::run(a.command.as_deref()),
        Command::Completions(a) => complete::print_registration(a.shell),
    }
}

/// Options every command shares.
pub struct Global {
    /// `-C`.
    pub dir: Option<PathBuf>,
    /// `-f`.
    pub file: Option<PathBuf>,
    /// `-q` / `-v`.
    pub verbosity: Verbosity,
    /// `--color`.
    pub color: ColorWhen,
    /// `--set NAME=VALUE`, in the order given (a later one wins).
    pub sets: Vec<(String, String)>,
}

impl Global {
    /// The directory orch works in.
    pub fn start_dir(&self) -> PathBuf {
        match &self.dir {
            Some(d) => d.clone(),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        }
    }
}

/// A loaded, validated project with its graph.
pub struct Loaded {
    /// The project.
    pub project: Project,
    /// Its graph.
    pub graph: Graph,
}

/// Finds, loads and validates the project; on error prints diagnostics and returns the
/// exit status.
pub fn load(g: &Global) -> Result<Loaded, i32> {
    load_project(g, false)
}

/// Like [`load`]; with `remember`, a fresh load is written to `.orch/project.cache` for
/// the next command (only `build` writes: `plan` and friends write nothing).
pub fn load_project(g: &Global, remember: bool) -> Result<Loaded, i32> {
    let start = g.start_dir();
    if !start.is_dir() {
        crate::say!("error: `{}` is not a directory", start.display());
        return Err(EXIT_USAGE);
    }
    let path = orchfile::find_orchfile(&start, g.file.as_deref())
        .map_err(|e| report(vec![*e], &Sources::default()))?;
    let path = std::path::absolute(&path).unwrap_or(path);
    let orch_dir = path
        .parent()
        .map(|root| Layout::new(root).dir)
        .unwrap_or_default();
    // The remembered project is the Orchfile's own: `--set` loads afresh, and what it
    // loads is never remembered, so a later command without it sees the Orchfile again.
    let overridden = !g.sets.is_empty();
    if !overridden && let Some((project, graph)) = model::cache::read(&orch_dir, &path) {
        return Ok(Loaded { project, graph });
    }
    let mut raw = orchfile::load(&path).map_err(report_failure)?;
    orchfile::overrides::apply(&mut raw, &g.sets);
    // Validation and cycle detection both run, so every error is reported at once.
    let (project, mut errors) = model::validate_all(raw);
    errors.extend(graph::phase_cycles(&project));
    if !errors.is_empty() {
        crate::orchfile::source::sort_errors(&mut errors);
        return Err(report(errors, &project.sources));
    }
    let graph = graph::build(&project).map_err(|errs| report(errs, &project.sources))?;
    // A build creates `.orch/` anyway; creating it here lets the very first build
    // remember the project, so the first no-op after it does not parse the Orchfile.
    if remember && !overridden && std::fs::create_dir_all(&orch_dir).is_ok() {
        let _ = model::cache::write(&orch_dir, &project, &graph);
    }
    Ok(Loaded { project, graph })
}

fn report_failure(f: ConfigFailure) -> i32 {
    report(f.errors, &f.sources)
}

/// Prints configuration errors and returns the usage exit status.
pub fn report(errors: Vec<ConfigError>, sources: &Sources) -> i32 {
    let n = errors.len();
    for (i, e) in errors.into_iter().enumerate() {
        if i > 0 {
            // A blank line between diagnostics, as cargo separates its own.
            crate::say!();
        }
        crate::say!("{}", render(&e.render(sources)));
    }
    if n > 1 {
        crate::say!();
        crate::say!(
            "{}",
            headline(None, &format!("{n} configuration errors; nothing was run"))
        );
    }
    EXIT_USAGE
}

/// Prints any other diagnostic and returns `status`.
pub fn report_diagnostic(d: &dyn miette::Diagnostic, status: i32) -> i32 {
    crate::say!("{}", render(d));
    status
}

/// Prints an I/O or internal error and returns the failure status.
pub fn report_error(what: &str, e: &dyn std::fmt::Display) -> i32 {
    crate::say!("{}", headline(None, &format!("{what}: {e}")));
    EXIT_FAILED
}

/// Whether diagnostics on stderr are coloured.
fn stderr_color() -> bool {
    crate::events::color::enabled(std::io::stderr().is_terminal())
}

/// The first line of every error: `error[CODE]: message` (or `error: message` without a
/// code), as cargo and just start theirs, so the first word says what the line is.
pub fn headline(code: Option<&str>, message: &str) -> String {
    let tag = match code {
        Some(c) => format!("error[{}]", short_code(c)),
        None => "error".to_owned(),
    };
    if stderr_color() {
        format!("\x1b[1;31m{tag}\x1b[0m\x1b[1m: {message}\x1b[0m")
    } else {
        format!("{tag}: {message}")
    }
}

/// A diagnostic code as users see it: `orchfile::unknown_key`, without the `orch::` every
/// code shares.
fn short_code(code: &str) -> &str {
    code.strip_prefix("orch::").unwrap_or(code)
}

/// A diagnostic as printed: the [`headline`], then miette's source snippet, causes and
/// help line under it.
pub fn render(d: &dyn miette::Diagnostic) -> String {
    let code = d.code().map(|c| c.to_string());
    let mut out = headline(code.as_deref(), &d.to_string());
    let mut body = String::new();
    if handler().render_report(&mut body, &Body(d)).is_ok() {
        // The body's message is empty: miette still gives it a line of its own.
        let rest = body.split_once('\n').map_or("", |(_, rest)| rest);
        let rest = rest.trim_end();
        if !rest.trim().is_empty() {
            out.push('\n');
            out.push_str(rest);
        }
    } else if let Some(help) = d.help() {
        out.push_str(&format!("\n  help: {help}"));
    }
    out
}

/// Everything of a diagnostic but its code and message, which [`headline`] prints.
struct Body<'a>(&'a dyn miette::Diagnostic);

impl std::fmt::Debug for Body<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0, f)
    }
}

impl std::fmt::Display for Body<'_> {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

impl std::error::Error for Body<'_> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl miette::Diagnostic for Body<'_> {
    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.0.help()
    }

    fn url<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.0.url()
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.0.source_code()
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.0.labels()
    }

    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        self.0.related()
    }

    fn diagnostic_source(&self) -> Option<&dyn miette::Diagnostic> {
        self.0.diagnostic_source()
    }
}

fn handler() -> GraphicalReportHandler {
    let theme = if stderr_color() {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    GraphicalReportHandler::new_themed(theme).with_context_lines(1)
}

/// Whether clap refused a `--jobs` value that came from `ORCH_JOBS` rather than from
/// `-j` on the command line: clap's own message would blame `--jobs`.
pub fn jobs_from_env(e: &clap::Error, args: &[std::ffi::OsString]) -> bool {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let about_jobs = matches!(
        e.get(ContextKind::InvalidArg),
        Some(ContextValue::String(a)) if a.starts_with("--jobs")
    );
    let explicit = args.iter().skip(1).take_while(|a| *a != "--").any(|a| {
        let a = a.to_string_lossy();
        a.starts_with("-j") || a.starts_with("--jobs")
    });
    e.kind() == ErrorKind::ValueValidation
        && about_jobs
        && !explicit
        && std::env::var_os("ORCH_JOBS").is_some()
}

/// Reports an `ORCH_JOBS` that is not a number of jobs; returns the usage status.
pub fn report_bad_orch_jobs(e: &clap::Error) -> i32 {
    use clap::error::{ContextKind, ContextValue};
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => std::env::var("ORCH_JOBS").unwrap_or_default(),
    };
    let message = if value.trim().is_empty() {
        "the environment variable ORCH_JOBS is empty, not a number of jobs".to_owned()
    } else {
        let why = std::error::Error::source(e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        format!("the environment variable ORCH_JOBS is `{value}`, not a number of jobs{why}")
    };
    crate::say!("{}", headline(None, &message));
    crate::say!(
        "  help: set ORCH_JOBS to a whole number from 1 to {}, pass `-j N`, or unset ORCH_JOBS to use `jobs` in `[orch]` or one job per CPU",
        crate::cli::MAX_JOBS
    );
    EXIT_USAGE
}

/// What `--force` / `--force-all` ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Force {
    /// Nothing is forced (beyond `--from`).
    #[default]
    None,
    /// `--force`: the named targets run again; their dependencies only when stale.
    Named,
    /// `--force-all`: the whole selection, dependencies included, runs again.
    All,
}

impl Force {
    /// From the two flags; `--force-all` includes `--force`.
    pub fn of(force: bool, force_all: bool) -> Force {
        match (force, force_all) {
            (_, true) => Force::All,
            (true, false) => Force::Named,
            (false, false) => Force::None,
        }
    }
}

/// The project-relative directory the command works in ("" for the root, or when it
/// lies outside the project): where relative target paths start.
pub fn cwd_in_project(g: &Global, l: &Loaded) -> String {
    let start = g.start_dir();
    let start = start.canonicalize().unwrap_or(start);
    start
        .strip_prefix(&l.project.root)
        .ok()
        .and_then(|rel| rel.to_str())
        .map(|rel| rel.replace(std::path::MAIN_SEPARATOR, "/"))
        .unwrap_or_default()
}

/// Resolves command-line targets (phases, instances, output paths) to instances; on
/// error prints the diagnostic and returns the exit status.
pub fn resolve(g: &Global, l: &Loaded, targets: &[String]) -> Result<BTreeSet<usize>, i32> {
    graph::resolve_targets_from(&l.project, targets, &cwd_in_project(g, l))
        .map_err(|e| report(vec![*e], &l.project.sources))
}

/// Resolves targets (all when empty) plus everything they depend on, and the instances
/// `--force` / `--force-all` / `--from` select.
pub fn selection(
    g: &Global,
    l: &Loaded,
    targets: &[String],
    force: Force,
    from: &[String],
) -> Result<(BTreeSet<usize>, BTreeSet<usize>), i32> {
    let named = resolve(g, l, targets)?;
    let selected = graph::with_upstream(&l.project, &named);
    let mut forced = match force {
        Force::All => return Ok((selected.clone(), selected)),
        // Upstream instances pulled in only as dependencies run only when stale; what
        // is downstream of a forced instance reruns only when its key changes.
        Force::Named => named,
        Force::None => BTreeSet::new(),
    };
    if !from.is_empty() {
        let from = resolve(g, l, from)?;
        forced.extend(
            graph::with_downstream(&l.graph, &from)
                .intersection(&selected)
                .copied(),
        );
    }
    Ok((selected, forced))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error, miette::Diagnostic)]
    #[error("cannot open the store")]
    #[diagnostic(code(orch::store::io), help("check `.orch/`"))]
    struct Failed {
        #[source]
        cause: std::io::Error,
    }

    #[test]
    fn a_diagnostic_starts_with_error_and_its_code_and_keeps_its_cause_and_help() {
        crate::events::color::set(ColorWhen::Never);
        let d = Failed {
            cause: std::io::Error::other("disk full"),
        };
        let text = render(&d);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("error[store::io]: cannot open the store")
        );
        let rest: Vec<&str> = lines.collect();
        assert!(rest.iter().any(|l| l.contains("disk full")), "{text}");
        assert!(
            rest.iter().any(|l| l.trim() == "help: check `.orch/`"),
            "{text}"
        );
        assert_eq!(headline(None, "plain"), "error: plain");
    }
}
