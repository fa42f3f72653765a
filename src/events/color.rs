//! Whether output is coloured: `--color`, then `CLICOLOR_FORCE` and `NO_COLOR`, then
//! whether the stream is a terminal. One rule for the build display and diagnostics.

use std::sync::OnceLock;

use crate::cli::ColorWhen;

static CHOICE: OnceLock<ColorWhen> = OnceLock::new();

/// Records the command line's `--color` for the rest of the process (first call wins).
pub fn set(when: ColorWhen) {
    let _ = CHOICE.set(when);
}

/// Whether a stream that is (or is not) a terminal gets colours.
pub fn enabled(stream_is_terminal: bool) -> bool {
    let when = CHOICE.get().copied().unwrap_or_default();
    decide(when, stream_is_terminal, |name| std::env::var_os(name))
}

/// What a coloured word says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    /// Succeeded: green.
    Ok,
    /// Failed: bold red.
    Failed,
    /// Blocked or not started: yellow.
    Blocked,
    /// A warning: yellow.
    Warning,
}

/// `text` in the colour of `how` when `on`, else as it is.
pub fn paint(on: bool, how: Paint, text: &str) -> String {
    if !on {
        return text.to_owned();
    }
    let sgr = match how {
        Paint::Ok => "32",
        Paint::Failed => "1;31",
        Paint::Blocked | Paint::Warning => "33",
    };
    format!("\x1b[{sgr}m{text}\x1b[0m")
}

/// The rule itself, with the environment passed in so it can be tested.
fn decide(
    when: ColorWhen,
    stream_is_terminal: bool,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.is_empty() && v != "0");
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        // <https://no-color.org> and <https://bixense.com/clicolors/>: NO_COLOR wins over
        // a terminal, CLICOLOR_FORCE over a pipe; NO_COLOR wins over both.
        ColorWhen::Auto if env("NO_COLOR").is_some_and(|v| !v.is_empty()) => false,
        ColorWhen::Auto if set("CLICOLOR_FORCE") => true,
        ColorWhen::Auto => stream_is_terminal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into())
    }

    #[test]
    fn flags_win_over_the_environment() {
        assert!(decide(ColorWhen::Always, false, with(&[("NO_COLOR", "1")])));
        assert!(!decide(
            ColorWhen::Never,
            true,
            with(&[("CLICOLOR_FORCE", "1")])
        ));
    }

    #[test]
    fn auto_follows_the_terminal_unless_told_otherwise() {
        assert!(decide(ColorWhen::Auto, true, with(&[])));
        assert!(!decide(ColorWhen::Auto, false, with(&[])));
        assert!(!decide(ColorWhen::Auto, true, with(&[("NO_COLOR", "1")])));
        assert!(decide(ColorWhen::Auto, true, with(&[("NO_COLOR", "")])));
        assert!(decide(
            ColorWhen::Auto,
            false,
            with(&[("CLICOLOR_FORCE", "1")])
        ));
        assert!(!decide(
            ColorWhen::Auto,
            false,
            with(&[("CLICOLOR_FORCE", "0")])
        ));
        assert!(!decide(
            ColorWhen::Auto,
            false,
            with(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")])
        ));
    }
}
