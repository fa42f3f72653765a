//! Makefile-syntax dependency files (`cc -MD -MF`, clang, `rustc --emit=dep-info`): the
//! prerequisites they list, as written. Pure: bytes in, paths out; resolving the paths
//! against the project is the executor's business.
//!
//! Lenient where ninja's depfile parser is: several rules, several targets per rule,
//! `\`-newline continuations, `\ ` for a space inside a name (an even run of backslashes
//! before a space is half as many backslashes and a separator), `\#` for `#`, `$$` for
//! `$`, CRLF line ends, blank lines, `#` comments, and `-MP` phony rules (`foo.h:` with
//! nothing after it). Targets are read and dropped. A line with names but no `:` is an
//! error that names the line.

use std::collections::BTreeSet;

/// The largest dependency file orch reads: far beyond any compiler's, small enough that
/// reading one can never exhaust memory.
pub const MAX_DEPFILE_BYTES: u64 = 64 * 1024 * 1024;

/// The most distinct prerequisites one dependency file may list.
pub const MAX_DEPFILE_ENTRIES: usize = 200_000;

/// Why a dependency file cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DepfileError {
    /// The 1-based line where the problem is.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The prerequisites listed in `bytes`, each once, in the order first listed.
pub fn parse(bytes: &[u8]) -> Result<Vec<String>, DepfileError> {
    let mut p = Parser {
        bytes,
        pos: 0,
        line: 1,
    };
    let mut deps = Vec::new();
    let mut seen = BTreeSet::new();
    // Names read on the current logical line before its `:`.
    let mut targets_seen = false;
    let mut in_deps = false;
    let mut rule_line = 1;
    loop {
        let tok = p.token()?;
        match tok {
            Token::End => {
                if targets_seen && !in_deps {
                    return Err(DepfileError {
                        line: rule_line,
                        message: "expected `:` after the target".to_owned(),
                    });
                }
                return Ok(deps);
            }
            Token::Newline => {
                if targets_seen && !in_deps {
                    return Err(DepfileError {
                        line: rule_line,
                        message: "expected `:` after the target".to_owned(),
                    });
                }
                targets_seen = false;
                in_deps = false;
            }
            Token::Name {
                bytes: name,
                colon,
                line,
            } => {
                if !targets_seen && !in_deps {
                    rule_line = line;
                }
                if in_deps {
                    if !name.is_empty() {
                        let s = utf8(name, line)?;
                        if seen.insert(s.clone()) {
                            if seen.len() > MAX_DEPFILE_ENTRIES {
                                return Err(DepfileError {
                                    line,
                                    message: format!(
                                        "more than {MAX_DEPFILE_ENTRIES} prerequisites"
                                    ),
                                });
                            }
                            deps.push(s);
                        }
                    }
                } else if colon {
                    if !targets_seen && name.is_empty() {
                        return Err(DepfileError {
                            line,
                            message: "a rule without a target".to_owned(),
                        });
                    }
                    in_deps = true;
                } else {
                    targets_seen = true;
                }
            }
        }
    }
}

fn utf8(name: Vec<u8>, line: usize) -> Result<String, DepfileError> {
    String::from_utf8(name).map_err(|e| DepfileError {
        line,
        message: format!(
            "the name `{}` is not valid UTF-8",
            String::from_utf8_lossy(e.as_bytes())
        ),
    })
}

enum Token {
    /// A name; `colon` when an unescaped `:` ended it (the end of a target list). An
    /// empty name with `colon` is a `:` standing alone.
    Name {
        bytes: Vec<u8>,
        colon: bool,
        line: usize,
    },
    /// The end of a logical line.
    Newline,
    /// The end of the file.
    End,
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
}

impl Parser<'_> {
    fn peek(&self, k: usize) -> Option<u8> {
        self.bytes.get(self.pos + k).copied()
    }

    /// Skips blanks, continuations and comments; returns the next token.
    fn token(&mut self) -> Result<Token, DepfileError> {
        loop {
            match self.peek(0) {
                None => return Ok(Token::End),
                Some(b' ' | b'\t' | b'\r') => self.pos += 1,
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                    return Ok(Token::Newline);
                }
                Some(b'\\') if self.peek(1) == Some(b'\n') => {
                    self.pos += 2;
                    self.line += 1;
                }
                Some(b'\\') if self.peek(1) == Some(b'\r') && self.peek(2) == Some(b'\n') => {
                    self.pos += 3;
                    self.line += 1;
                }
                Some(b'#') => {
                    while let Some(c) = self.peek(0) {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                Some(_) => return Ok(self.name()),
            }
        }
    }

    /// Reads one name, starting at a byte that begins one.
    fn name(&mut self) -> Token {
        let line = self.line;
        let mut out = Vec::new();
        while let Some(c) = self.peek(0) {
            match c {
                b' ' | b'\t' | b'\n' => break,
                b'\r' if self.peek(1) == Some(b'\n') => break,
                b'\\' => {
                    let run = self.bytes[self.pos..]
                        .iter()
                        .take_while(|&&b| b == b'\\')
                        .count();
                    match self.peek(run) {
                        Some(b' ' | b'\t') => {
                            // 2N+1 backslashes and a space: N backslashes and a space in
                            // the name; 2N: N backslashes, and the space separates.
                            out.extend(std::iter::repeat_n(b'\\', run / 2));
                            self.pos += run;
                            if run % 2 == 1 {
                                out.push(self.bytes[self.pos]);
                                self.pos += 1;
                            } else {
                                break;
                            }
                        }
                        Some(b'#') if run % 2 == 1 => {
                            out.extend(std::iter::repeat_n(b'\\', run / 2));
                            out.push(b'#');
                            self.pos += run + 1;
                        }
                        Some(b'\n') if run == 1 => break,
                        Some(b'\r') if run == 1 && self.peek(2) == Some(b'\n') => break,
                        _ => {
                            // Any other backslash is part of the name, as written.
                            out.extend(std::iter::repeat_n(b'\\', run));
                            self.pos += run;
                        }
                    }
                }
                b'$' if self.peek(1) == Some(b'$') => {
                    out.push(b'$');
                    self.pos += 2;
                }
                b':' => {
                    // A `:` followed by a blank or the line's end ends a target list; one
                    // inside a name (`C:`-like or `a:b`) as well, as make reads it.
                    self.pos += 1;
                    return Token::Name {
                        bytes: out,
                        colon: true,
                        line,
                    };
                }
                _ => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        Token::Name {
            bytes: out,
            colon: false,
            line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn deps(text: &str) -> Vec<String> {
        parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn one_rule() {
        assert_eq!(deps("a.o: a.c a.h\n"), ["a.c", "a.h"]);
        assert_eq!(deps("a.o : a.c"), ["a.c"]);
        assert_eq!(deps(""), Vec::<String>::new());
        assert_eq!(deps("a.o:"), Vec::<String>::new());
    }

    #[test]
    fn continuations_and_crlf() {
        assert_eq!(
            deps("a.o: a.c \\\n  inc/a.h \\\r\n  inc/b.h\r\n"),
            ["a.c", "inc/a.h", "inc/b.h"]
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(
            deps("a.o: my\\ file.h x\\#y.h $$HOME.h"),
            ["my file.h", "x#y.h", "$HOME.h"]
        );
        // Two backslashes and a space: one backslash, then a separator.
        assert_eq!(deps("a.o: a\\\\ b"), ["a\\", "b"]);
        // Three: one backslash and a space in the name.
        assert_eq!(deps("a.o: a\\\\\\ b"), ["a\\ b"]);
        // Other backslashes are kept.
        assert_eq!(deps("a.o: dir\\x.h"), ["dir\\x.h"]);
    }

    #[test]
    fn several_rules_targets_phony_rules_and_comments() {
        let text = "# generated\n\nout/a.o out/a.d: src/a.c \\\n src/a.h\n\nsrc/a.h:\n\n# end\nb.o: src/a.h src/b.h # trailing\n";
        assert_eq!(deps(text), ["src/a.c", "src/a.h", "src/b.h"]);
    }

    #[test]
    fn rustc_dep_info() {
        let text = "/p/target/debug/x.d: src/main.rs src/lib.rs\n\nsrc/main.rs:\nsrc/lib.rs:\n";
        assert_eq!(deps(text), ["src/main.rs", "src/lib.rs"]);
    }

    #[test]
    fn a_line_without_a_colon_is_named() {
        let e = parse(b"a.o: a.c\nnot a rule\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("`:`"), "{e}");
        assert_eq!(parse(b": a.c").unwrap_err().line, 1);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_named() {
        let e = parse(b"a.o: ok.h bad\xff.h\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("bad"), "{e}");
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_depfile_like_text(
            text in "[a-z.: \\\\\n\r#$\t]{0,200}"
        ) {
            let _ = parse(text.as_bytes());
        }
    }
}
