//! Command-line arguments (clap only; no behaviour here).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::model::MAX_JOBS;

/// `-j N`: a whole number from 1 to [`MAX_JOBS`].
fn parse_jobs(s: &str) -> Result<u32, String> {
    let range = format!("orch runs from 1 to {MAX_JOBS} instances at once");
    match s.trim().parse::<u128>() {
        Ok(0) => Err(format!("0 jobs would run nothing; {range}")),
        Ok(n) if n > u128::from(MAX_JOBS) => Err(format!("{n} jobs is too many; {range}")),
        Ok(n) => u32::try_from(n).map_err(|_| range),
        Err(_) => Err(format!("`{s}` is not a whole number; {range}")),
    }
}

/// `--set NAME=VALUE`: a name and the value it takes for this command.
fn parse_set(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "`{s}` is not NAME=VALUE; write e.g. `--set lang=fr` to override `[vars] lang`"
        )),
    }
}

/// When to colour the output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// Colour on a terminal, unless `NO_COLOR` is set (`CLICOLOR_FORCE` forces it).
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// A declarative, content-addressed DAG orchestrator.
#[derive(Debug, Parser)]
#[command(
    name = "orch",
    about,
    version,
    long_about = None,
    max_term_width = 100,
    disable_version_flag = true,
    subcommand_required = false,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Print the version (with `-v`: also the commit and build date).
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    /// Run as if started in DIR.
    #[arg(short = 'C', global = true, help_heading = "Global options", value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub dir: Option<PathBuf>,
    /// Use FILE as the Orchfile (relative to DIR).
    #[arg(short = 'f', long = "file", global = true, help_heading = "Global options", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub file: Option<PathBuf>,
    /// Say more: skipped instances, reasons, commands.
    #[arg(
        short = 'v',
        long,
        global = true,
        help_heading = "Global options",
        conflicts_with = "quiet"
    )]
    pub verbose: bool,
    /// Say only what failed.
    #[arg(short = 'q', long, global = true, help_heading = "Global options")]
    pub quiet: bool,
    /// Colour the output: auto (on a terminal, unless NO_COLOR), always or never.
    #[arg(long, value_enum, global = true, help_heading = "Global options", value_name = "WHEN", default_value_t = ColorWhen::Auto, hide_possible_values = true)]
    pub color: ColorWhen,
    /// Override `[vars] NAME` with VALUE for this command (repeatable).
    #[arg(long = "set", global = true, help_heading = "Global options", value_name = "NAME=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
    /// The command.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build stale instances of the targets (default: everything).
    Build(BuildArgs),
    /// Build, then rebuild whenever an input of the targets (or the Orchfile) changes.
    Watch(WatchArgs),
    /// Show what would run, and why.
    Plan(PlanArgs),
    /// Show every instance: up to date, stale (with reasons), failed or blocked.
    Status(StatusArgs),
    /// Explain, key by key, how an instance differs from its last successful run.
    Explain(ExplainArgs),
    /// Print the dependency graph.
    Graph(GraphArgs),
    /// Validate the Orchfile.
    Check,
    /// List recent runs: id, start, duration, status, counts.
    Runs(RunsArgs),
    /// Show the events of a run (default: the latest).
    Log(LogArgs),
    /// Show where an output came from (PATH), or an instance's last result (TARGET).
    Show(ShowArgs),
    /// Remove the declared outputs of the targets (default: all).
    Clean(CleanArgs),
    /// Prune old runs, logs and shard files.
    Gc(GcArgs),
    /// Create a starter Orchfile.toml in the current (or -C) directory.
    Init,
    /// Print the JSON Schema of the Orchfile.
    Schema,
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// List the phases: description, matrix, instances and shard strategy.
    List(ListArgs),
    /// Write one HTML page on a run: timeline, critical path, slowest, cache, failures.
    Report(ReportArgs),
    /// Re-run the targets in a scratch copy under perturbed schedules; report outputs that differ.
    Verify(VerifyArgs),
    /// Print the man page (roff) on standard output: `orch man > orch.1`.
    #[command(hide = true)]
    Man(ManArgs),
}

/// `orch build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Phases (`phase`), instances (`phase[axis=value]`) or output paths; default: all.
    #[arg(add = crate::commands::complete::targets())]
    pub targets: Vec<String>,
    /// Run at most N instances at once (default: `ORCH_JOBS`, `orch.jobs`, else the CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = parse_jobs, env = "ORCH_JOBS")]
    pub jobs: Option<u32>,
    /// Keep building everything not blocked after a failure.
    #[arg(short = 'k', long)]
    pub keep_going: bool,
    /// Rerun the named targets (default: all); their dependencies rerun only if stale.
    #[arg(long)]
    pub force: bool,
    /// Rerun every selected instance, the targets' dependencies included.
    #[arg(long)]
    pub force_all: bool,
    /// Rerun PHASE and everything downstream of it (repeatable).
    #[arg(long, value_name = "PHASE", add = crate::commands::complete::phases())]
    pub from: Vec<String>,
    /// Print the plan and run nothing (with `-v`: the expanded commands too).
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Neither restore from nor store into the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Use ID as the run id instead of the derived one.
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// Print events on stdout as JSON Lines (the human display goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write a JUnit XML report to FILE (one test case per instance).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Run every selected phase on executor NAME (`local`, or an `[executor.NAME]`).
    #[arg(long, value_name = "NAME", add = crate::commands::complete::executors())]
    pub executor: Option<String>,
    /// Write the run's HTML report (`orch report`) when the build ends, and say where.
    #[arg(long)]
    pub timings: bool,
}

/// `orch watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Phases (`phase`), instances (`phase[axis=value]`) or output paths; default: all.
    #[arg(add = crate::commands::complete::targets())]
    pub targets: Vec<String>,
    /// Wait until no change has arrived for MS milliseconds before rebuilding.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub debounce: u64,
    /// Also build every DURATION (`30s`, `5m`), for inputs outside the file system.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub every: Option<std::time::Duration>,
    /// With `--every`: build on wall-clock multiples of the period (`1m`: every minute on
    /// the minute), giving commands the period's start as `ORCH_TICK`.
    #[arg(long, requires = "every")]
    pub align: bool,
    /// Stop a running build when changes arrive, and start again.
    #[arg(long)]
    pub restart: bool,
    /// Run at most N instances at once (default: `ORCH_JOBS`, `orch.jobs`, else the CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = parse_jobs, env = "ORCH_JOBS")]
    pub jobs: Option<u32>,
    /// Keep building everything not blocked after a failure.
    #[arg(short = 'k', long)]
    pub keep_going: bool,
    /// Print events on stdout as JSON Lines, `watch_changes` included (the rest goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Run every selected phase on executor NAME (`local`, or an `[executor.NAME]`).
    #[arg(long, value_name = "NAME", add = crate::commands::complete::executors())]
    pub executor: Option<String>,
}

/// `orch plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Phases, instances or output paths; default: all.
    #[arg(add = crate::commands::complete::targets())]
    pub targets: Vec<String>,
    /// Plan as if `--force` were given.
    #[arg(long)]
    pub force: bool,
    /// Plan as if `--force-all` were given.
    #[arg(long)]
    pub force_all: bool,
    /// Plan as if `--from PHASE` were given.
    #[arg(long, value_name = "PHASE", add = crate::commands::complete::phases())]
    pub from: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when anything would run (as `make -q`), 0 when everything is up to date.
    #[arg(long)]
    pub exit_code: bool,
}

/// `orch status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 unless every instance is up to date (as `make -q`).
    #[arg(long)]
    pub check: bool,
}

/// `orch verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Phases, instances or output paths; default: all.
    #[arg(add = crate::commands::complete::targets())]
    pub targets: Vec<String>,
    /// Re-run everything N times, each under another perturbation.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub rounds: u32,
    /// Seed of the perturbations (default: derived from the run), to repeat a verification.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
}

/// `orch man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The command whose page to print (`orch-build(1)`); default: `orch(1)`.
    pub command: Option<String>,
}

/// `orch list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `orch report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run id (default: the latest run).
    #[arg(add = crate::commands::complete::runs())]
    pub run: Option<String>,
    /// Write the page to FILE (default: `.orch/runs/RUN/report.html`).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the Chrome trace (Perfetto) to FILE (default: beside the page, `trace.json`).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// `orch explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A phase, instance or output path.
    #[arg(add = crate::commands::complete::targets())]
    pub target: String,
}

/// `orch completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `orch runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Show at most N runs, newest first.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `orch log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// The run id (default: the latest run).
    #[arg(add = crate::commands::complete::runs())]
    pub run: Option<String>,
    /// Print the raw events (JSON Lines).
    #[arg(long)]
    pub json: bool,
}

/// `orch show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// An output or source path (relative to the current directory or the project root),
    /// or a target (`phase`, `phase[axis=v]`).
    #[arg(add = crate::commands::complete::targets())]
    pub what: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `orch clean`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Phases, instances or output paths whose outputs to remove; default: all.
    #[arg(add = crate::commands::complete::targets())]
    pub targets: Vec<String>,
    /// Also empty the local cache (`.orch/cache`).
    #[arg(long)]
    pub cache: bool,
}

/// `orch gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Keep the newest N runs (events, logs, summaries).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub keep: usize,
    /// Also trim the local cache to SIZE (`500M`, `2G`, bytes), least recently used first.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
}

/// `500M`, `2G`, `1.5GiB`, `4096`: a size in bytes (K, M, G, T are powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. `500M` or `2G`"))?;
    let mult: u64 = match unit
        .trim()
        .trim_end_matches("iB")
        .trim_end_matches('B')
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}`; use K, M, G or T"
            ));
        }
    };
    Ok((n * mult as f64) as u64)
}

/// Graph output formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
    /// JSON.
    Json,
}

/// `orch graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Limit the graph to these targets and what they depend on; default: all.
    #[arg(add = crate::commands::complete::targets())]
    pub targets: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "dot")]
    pub format: GraphFormat,
    /// Colour each node by its state: up to date, stale, failed or blocked.
    #[arg(long)]
    pub status: bool,
}
