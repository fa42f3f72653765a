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
    if let Some((project, graph)) = model::cache::read(&orch_dir, &path) {
        return Ok(Loaded { project, graph });
    }
    let raw = orchfile::load(&path).map_err(report_failure)?;
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
    if remember && std::fs::create_dir_all(&orch_dir).is_ok() {
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
    let handler = handler();
    for e in errors {
        let rendered = e.render(sources);
        let mut out = String::new();
        if handler.render_report(&mut out, &rendered).is_err() {
            out = format!("error: {rendered}");
        }
        crate::say!("{}", out.trim_end());
    }
    if n > 1 {
        crate::say!("orch: {n} configuration errors; nothing was run");
    }
    EXIT_USAGE
}

/// Prints any other diagnostic and returns `status`.
pub fn report_diagnostic(d: &dyn miette::Diagnostic, status: i32) -> i32 {
    let mut out = String::new();
    if handler().render_report(&mut out, d).is_err() {
        out = format!("error: {d}");
    }
    crate::say!("{}", out.trim_end());
    status
}

/// Prints an I/O or internal error and returns the failure status.
pub fn report_error(what: &str, e: &dyn std::fmt::Display) -> i32 {
    crate::say!("error: {what}: {e}");
    EXIT_FAILED
}

fn handler() -> GraphicalReportHandler {
    let color = crate::events::color::enabled(std::io::stderr().is_terminal());
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    GraphicalReportHandler::new_themed(theme).with_context_lines(1)
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
