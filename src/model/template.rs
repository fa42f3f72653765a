//! Placeholder templates: `run`, `outputs` and `inputs` strings with `{...}` holes.
//!
//! A template is parsed once (errors carry the span of the bad placeholder), then
//! expanded per instance. `{{` and `}}` are literal braces; a lone `}` is literal too, so
//! shell and awk snippets need escaping only for the opening brace.

use std::ops::Range;

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A `{name}` placeholder, with its byte range inside the template string
    /// (including the braces).
    Hole(String, Range<usize>),
}

/// An unclosed `{`.
#[derive(Debug, PartialEq, Eq)]
pub struct Unclosed(pub usize);

/// Splits a template into text and holes.
pub fn parse(template: &str) -> Result<Vec<Piece>, Unclosed> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'{' {
            if bytes.get(i + 1) == Some(&b'{') {
                text.push('{');
                i += 2;
                continue;
            }
            let Some(end) = template[i + 1..].find('}') else {
                return Err(Unclosed(i));
            };
            let name = &template[i + 1..i + 1 + end];
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Hole(name.trim().to_owned(), i..i + end + 2));
            i += end + 2;
        } else if c == b'}' && bytes.get(i + 1) == Some(&b'}') {
            text.push('}');
            i += 2;
        } else {
            // Copy the whole UTF-8 character.
            let ch_len = template[i..].chars().next().map_or(1, char::len_utf8);
            text.push_str(&template[i..i + ch_len]);
            i += ch_len;
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// Quotes a word for `sh` only when it needs it, so commands stay readable in logs.
pub fn shell_quote(word: &str) -> String {
    shell_words::quote(word).into_owned()
}

/// Quotes and joins words with spaces.
pub fn shell_join<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words
        .into_iter()
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_holes_and_escapes() {
        let p = parse("cat {inputs} > {output} && awk '{{print $1}' x}").unwrap();
        assert_eq!(
            p,
            vec![
                Piece::Text("cat ".into()),
                Piece::Hole("inputs".into(), 4..12),
                Piece::Text(" > ".into()),
                Piece::Hole("output".into(), 15..23),
                Piece::Text(" && awk '{print $1}' x}".into()),
            ]
        );
        assert_eq!(
            parse("a {{b}} c").unwrap(),
            vec![Piece::Text("a {b} c".into())]
        );
        assert_eq!(parse("x {oops"), Err(Unclosed(2)));
        assert_eq!(parse("é{phase}ü").unwrap().len(), 3);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_join(["a.txt", "b c.txt"]), "a.txt 'b c.txt'");
    }
}
