//! Shell completion of the project's own names: phases, instances, output paths,
//! executors and run ids, offered by clap's dynamic completion (`COMPLETE=bash orch`).
//!
//! The shell calls `orch` again for every `<TAB>` with the words typed so far; the
//! completers here read the project those words point at (`-C DIR`, `-f FILE`) and never
//! print anything but candidates: a broken Orchfile just completes nothing.

use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap_complete::engine::{ArgValueCompleter, CompletionCandidate, ValueCompleter};
use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Shells, Zsh};

use crate::model::{self, Project};
use crate::orchfile;
use crate::store::Layout;

/// The environment variable that turns a run of `orch` into a completion request.
pub const VAR: &str = "COMPLETE";

/// Answers a completion request when `COMPLETE` is set; false for an ordinary run.
pub fn answer(args: &[OsString]) -> bool {
    use clap::CommandFactory as _;
    let current_dir = std::env::current_dir().ok();
    match clap_complete::CompleteEnv::with_factory(crate::cli::Cli::command)
        .var(VAR)
        .shells(Shells(&[
            &WHOLE_WORD_BASH,
            &Elvish,
            &Fish,
            &Powershell,
            &UNQUOTED_ZSH,
        ]))
        .try_complete(args.iter().cloned(), current_dir.as_deref())
    {
        Ok(done) => done,
        Err(e) => {
            let _ = e.print();
            true
        }
    }
}

/// Prints the registration script for `shell` (what `COMPLETE=SHELL orch` prints).
pub fn print_registration(shell: clap_complete::Shell) -> i32 {
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &WHOLE_WORD_BASH,
        clap_complete::Shell::Zsh => &UNQUOTED_ZSH,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::PowerShell => &Powershell,
        // The enum is non-exhaustive; a shell clap adds later gets its static script.
        other => {
            use clap::CommandFactory as _;
            let mut cmd = crate::cli::Cli::command();
            clap_complete::generate(other, &mut cmd, "orch", &mut std::io::stdout());
            return crate::EXIT_OK;
        }
    };
    let mut buf = Vec::new();
    // `orch` by name, not this binary's path: the script keeps working after an upgrade
    // or a reinstall elsewhere on PATH.
    if let Err(e) = completer.write_registration(VAR, "orch", "orch", "orch", &mut buf) {
        return super::report_error("cannot write the completion script", &e);
    }
    let _ = std::io::stdout().write_all(&buf);
    crate::EXIT_OK
}

/// One of clap's shells with orch's own registration script; completing works as
/// clap's does.
struct OrchShell {
    shell: &'static dyn EnvCompleter,
    /// The registration script, from `(var, name, bin, completer)`.
    script: fn(&str, &str, &str, &str) -> std::io::Result<String>,
}

impl EnvCompleter for OrchShell {
    fn name(&self) -> &'static str {
        self.shell.name()
    }
    fn is(&self, name: &str) -> bool {
        self.shell.is(name)
    }
    fn write_registration(
        &self,
        var: &str,
        name: &str,
        bin: &str,
        completer: &str,
        buf: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        buf.write_all((self.script)(var, name, bin, completer)?.as_bytes())
    }
    fn write_complete(
        &self,
        cmd: &mut clap::Command,
        args: Vec<OsString>,
        current_dir: Option<&Path>,
        buf: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        self.shell.write_complete(cmd, args, current_dir, buf)
    }
}

/// Bash, completing whole words: instance names hold `=` (`translate[lang=fr]`), where
/// bash splits its words (`COMP_WORDBREAKS`), so clap's script would ask orch to complete
/// `fr` alone. This script splits the line on blanks only and hands bash back the part of
/// each candidate after bash's own word start.
const WHOLE_WORD_BASH: OrchShell = OrchShell {
    shell: &Bash,
    script: |var, _name, bin, completer| {
        Ok(r#"
_orch_complete() {
    local line=${COMP_LINE:0:COMP_POINT}
    local -a words
    IFS=$' \t\n' read -ra words <<< "$line"
    if [[ -z $line || $line =~ [[:space:]]$ ]]; then
        words+=("")
    fi
    local index=$(( ${#words[@]} - 1 ))
    local cur=${words[index]}
    local space=true
    if compopt +o nospace 2> /dev/null; then
        space=false
    fi
    local IFS=$'\013'
    local -a reply
    reply=( $( \
        _CLAP_IFS="$IFS" \
        _CLAP_COMPLETE_INDEX="$index" \
        _CLAP_COMPLETE_COMP_TYPE="${COMP_TYPE:-9}" \
        _CLAP_COMPLETE_SPACE="$space" \
        VAR="bash" \
        "COMPLETER" -- "${words[@]}" \
    ) ) || { unset COMPREPLY; return; }
    # Bash replaces only its current word, which starts after the last `=` or `:`.
    local before=${cur%"$2"}
    COMPREPLY=( "${reply[@]#"$before"}" )
    if [[ $space == false ]] && [[ "${COMPREPLY-}" =~ [=/:]$ ]]; then
        compopt -o nospace
    fi
}
complete -o nospace -o bashdefault -o nosort -F _orch_complete BIN 2> /dev/null ||
    complete -o nospace -o bashdefault -F _orch_complete BIN

"#
        .replace("BIN", bin)
        .replace("COMPLETER", completer)
        .replace("VAR", var))
    },
};

/// Zsh, with the typed words unquoted before orch sees them: `translate\[lang=f` (zsh
/// quotes the glob character `[` when it inserts a name) must match `translate[lang=fr]`.
const UNQUOTED_ZSH: OrchShell = OrchShell {
    shell: &Zsh,
    script: |var, name, bin, completer| {
        let mut script = Vec::new();
        Zsh.write_registration(var, name, bin, completer, &mut script)?;
        Ok(String::from_utf8_lossy(&script)
            .replace(r#"-- "${words[@]}""#, r#"-- "${(Q)words[@]}""#))
    },
};

/// What a completer offers.
#[derive(Clone, Copy)]
enum Kind {
    /// Phases, instances and declared output paths.
    Targets,
    /// Phases only (`--from`).
    Phases,
    /// `local` and the declared executors.
    Executors,
    /// Run ids in `.orch/runs`, newest first.
    Runs,
}

struct Completer(Kind);

impl ValueCompleter for Completer {
    fn complete(&self, current: &OsStr) -> Vec<CompletionCandidate> {
        let Some(current) = current.to_str() else {
            return Vec::new();
        };
        let (dir, file) = project_flags(&std::env::args_os().collect::<Vec<_>>());
        candidates(self.0, current, &dir, file.as_deref())
            .into_iter()
            .map(|(value, help)| {
                let c = CompletionCandidate::new(value);
                match help {
                    Some(h) => c.help(Some(h.into())),
                    None => c,
                }
            })
            .collect()
    }
}

/// Completes targets: phases, instances, output paths.
pub fn targets() -> ArgValueCompleter {
    ArgValueCompleter::new(Completer(Kind::Targets))
}

/// Completes phase names.
pub fn phases() -> ArgValueCompleter {
    ArgValueCompleter::new(Completer(Kind::Phases))
}

/// Completes executor names.
pub fn executors() -> ArgValueCompleter {
    ArgValueCompleter::new(Completer(Kind::Executors))
}

/// Completes run ids.
pub fn runs() -> ArgValueCompleter {
    ArgValueCompleter::new(Completer(Kind::Runs))
}

/// `-C DIR` and `-f FILE` among the words being completed (after the `--` the shell
/// script puts before them); clap has not parsed them at this point.
fn project_flags(args: &[OsString]) -> (PathBuf, Option<PathBuf>) {
    let words = match args.iter().position(|a| a == "--") {
        Some(i) => &args[i + 1..],
        None => args,
    };
    let mut dir = None;
    let mut file = None;
    let mut it = words.iter().map(|w| w.to_string_lossy());
    while let Some(w) = it.next() {
        if w == "--" {
            break;
        }
        if w == "-C" {
            dir = it.next().map(|d| PathBuf::from(d.as_ref()));
        } else if let Some(d) = w.strip_prefix("-C") {
            dir = Some(PathBuf::from(d));
        } else if w == "-f" || w == "--file" {
            file = it.next().map(|f| PathBuf::from(f.as_ref()));
        } else if let Some(f) = w.strip_prefix("--file=") {
            file = Some(PathBuf::from(f));
        }
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    (dir.map(|d| cwd.join(d)).unwrap_or(cwd), file)
}

/// The project at `dir`, silently: completion never prints a diagnostic.
fn quiet_load(dir: &Path, file: Option<&Path>) -> Option<Project> {
    let path = orchfile::find_orchfile(dir, file).ok()?;
    let path = std::path::absolute(&path).unwrap_or(path);
    let orch_dir = Layout::new(path.parent()?).dir;
    if let Some((project, _)) = model::cache::read(&orch_dir, &path) {
        return Some(project);
    }
    // A project with errors still has the phases that validated: offer those.
    let raw = orchfile::load(&path).ok()?;
    Some(model::validate_all(raw).0)
}

/// The candidates of `kind` that start with `current`, each with an optional help text.
fn candidates(
    kind: Kind,
    current: &str,
    dir: &Path,
    file: Option<&Path>,
) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    match kind {
        Kind::Runs => {
            let Some(project) = quiet_load(dir, file) else {
                return out;
            };
            let runs = Layout::new(&project.root).dir.join("runs");
            let mut ids: Vec<String> = std::fs::read_dir(runs)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|id| id.starts_with(current))
                .collect();
            ids.sort_unstable_by(|a, b| b.cmp(a));
            out.extend(ids.into_iter().map(|id| (id, None)));
        }
        Kind::Executors => {
            out.push(("local".to_owned(), Some("this machine".to_owned())));
            if let Some(project) = quiet_load(dir, file) {
                out.extend(project.executors.keys().map(|n| (n.clone(), None)));
            }
        }
        Kind::Phases | Kind::Targets => {
            let Some(project) = quiet_load(dir, file) else {
                return out;
            };
            for (name, phase) in &project.phases {
                out.push((name.clone(), phase.description.clone()));
            }
            if matches!(kind, Kind::Targets) {
                // Instances only once a phase is typed in full, so `b<TAB>` offers the
                // phases, not every matrix value of every phase starting with `b`.
                out.extend(
                    project
                        .instances
                        .iter()
                        .filter(|i| i.name != i.phase && current.starts_with(&i.phase))
                        .map(|i| (i.name.clone(), None)),
                );
                if current.contains('/') {
                    out.extend(
                        project
                            .instances
                            .iter()
                            .flat_map(|i| &i.outputs)
                            .map(|o| (o.path.clone(), None)),
                    );
                }
            }
        }
    }
    out.retain(|(value, _)| value.starts_with(current));
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn project_flags_are_read_from_the_words_after_the_separator() {
        let cwd = std::env::current_dir().unwrap();
        let (dir, file) = project_flags(&words("orch -- orch -C sub build -f x.toml tr"));
        assert_eq!(dir, cwd.join("sub"));
        assert_eq!(file, Some(PathBuf::from("x.toml")));
        let (dir, file) = project_flags(&words("orch -- orch -C/abs --file=y.toml build"));
        assert_eq!(dir, PathBuf::from("/abs"));
        assert_eq!(file, Some(PathBuf::from("y.toml")));
        let (dir, file) = project_flags(&words("orch -- orch build -- -C x"));
        assert_eq!(dir, cwd);
        assert_eq!(file, None);
    }
}
