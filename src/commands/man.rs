//! `orch man [COMMAND]`: the man pages, generated from the command-line definition so
//! they never disagree with `--help`: `orch(1)`, and `orch-build(1)` and so on for each
//! command.

use clap::CommandFactory as _;

use crate::{EXIT_OK, EXIT_USAGE};

/// Prints `orch(1)`, or `orch-COMMAND(1)`, in roff on standard output.
pub fn run(command: Option<&str>) -> i32 {
    let mut root = crate::cli::Cli::command();
    root.build();
    let cmd = match command {
        None => root,
        Some(name) => {
            let Some(sub) = root
                .get_subcommands()
                .find(|s| s.get_name() == name && !s.is_hide_set())
            else {
                let names: Vec<&str> = root
                    .get_subcommands()
                    .filter(|s| !s.is_hide_set() && s.get_name() != "help")
                    .map(|s| s.get_name())
                    .collect();
                crate::say!(
                    "error: `{name}` is not an orch command\n  help: one of {}",
                    names.join(", ")
                );
                return EXIT_USAGE;
            };
            sub.clone().bin_name(format!("orch {name}"))
        }
    };
    let title = match command {
        Some(name) => format!("orch-{name}"),
        None => "orch".to_owned(),
    };
    let man = clap_mangen::Man::new(cmd)
        .title(title)
        .date(env!("ORCH_COMMIT_DATE"))
        .source(concat!("orch ", env!("CARGO_PKG_VERSION")))
        .manual("orch manual");
    let mut page = Vec::new();
    if let Err(e) = man.render(&mut page) {
        return super::report_error("cannot write the man page", &e);
    }
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(&page);
    EXIT_OK
}
