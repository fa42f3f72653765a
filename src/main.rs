//! The `orch` binary: parses arguments and hands over to the library.

fn main() {
    std::process::exit(orch::run(std::env::args_os()));
}
