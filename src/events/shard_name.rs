//! How a shard is named to people: `compile#3 (src/mem.c)`, its `{shard.key}` beside its
//! index, escaped and shortened for one terminal line.
//!
//! Keys are untrusted text (a group value comes from a data file), so everything here
//! escapes control characters and bidirectional overrides: a key can neither start a
//! new line nor send a terminal escape. JSON carries the key as it is; only the human
//! forms are shortened.

use super::ShardRef;

/// Longest key shown, in characters, after escaping.
pub const MAX_KEY_CHARS: usize = 40;

/// `key` with control characters and bidirectional controls escaped (`\n`, `\u{1b}`), so
/// it stays on one line and sends nothing to the terminal.
pub fn escape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_bidi_control(c) => {
                out.extend(c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters that reorder the text around them on a terminal, so a key could make a
/// line read differently from what it holds.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `key` escaped and cut to [`MAX_KEY_CHARS`]: a path keeps its end (`…/common/mem.c`),
/// other text its start (`a very long gr…`).
pub fn display_key(key: &str) -> String {
    let escaped = escape_key(key);
    let chars: Vec<char> = escaped.chars().collect();
    if chars.len() <= MAX_KEY_CHARS {
        return escaped;
    }
    let room = MAX_KEY_CHARS - 1;
    if key.contains('/') {
        let tail = &chars[chars.len() - room..];
        // Start at a directory boundary when the last components fit, so no name is cut.
        let start = tail.iter().position(|c| *c == '/').unwrap_or(0);
        let kept: String = tail[start..].iter().collect();
        format!("…{kept}")
    } else {
        let kept: String = chars[..room].iter().collect();
        format!("{kept}…")
    }
}

/// Whether a shard's key says more than its index: a chunk's key is its index.
pub fn key_is_index(shard: &ShardRef) -> bool {
    shard.key == shard.index.to_string()
}

/// ` (src/mem.c)` for a shard whose key is worth showing, else "".
pub fn key_suffix(shard: Option<&ShardRef>) -> String {
    match shard {
        Some(s) if !key_is_index(s) => format!(" ({})", display_key(&s.key)),
        _ => String::new(),
    }
}

/// `compile#3 (src/mem.c)`: the event's instance name with its shard's key beside it.
pub fn label(name: &str, shard: Option<&ShardRef>) -> String {
    format!("{name}{}", key_suffix(shard))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(index: usize, key: &str) -> ShardRef {
        ShardRef {
            index,
            count: 10,
            key: key.to_owned(),
        }
    }

    #[test]
    fn labels_name_the_key_unless_it_is_the_index() {
        assert_eq!(
            label("compile#3", Some(&shard(3, "src/mem.c"))),
            "compile#3 (src/mem.c)"
        );
        assert_eq!(label("split#3", Some(&shard(3, "3"))), "split#3");
        assert_eq!(label("compile", None), "compile");
    }

    #[test]
    fn keys_cannot_forge_lines_or_escapes() {
        assert_eq!(escape_key("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(escape_key("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape_key("x\u{202E}y\u{7f}"), "x\\u{202e}y\\u{7f}");
        assert_eq!(escape_key("fr-CA é"), "fr-CA é");
        let shown = label("t#0", Some(&shard(0, "ok\n[2/2] t#1 ok 1ms")));
        assert!(!shown.contains('\n'), "{shown}");
    }

    #[test]
    fn long_keys_keep_the_end_of_a_path_and_the_start_of_text() {
        let path = "lib/some/deeply/nested/directory/tree/common/mem.c";
        let shown = display_key(path);
        assert_eq!(shown, "…/nested/directory/tree/common/mem.c");
        assert!(shown.chars().count() <= MAX_KEY_CHARS);

        let long_name = format!("dir/{}", "x".repeat(60));
        let shown = display_key(&long_name);
        assert_eq!(shown.chars().count(), MAX_KEY_CHARS);
        assert!(shown.starts_with('…') && shown.ends_with("xxx"));

        let text = "a group value that goes on for far too long to show";
        let shown = display_key(text);
        assert_eq!(shown, "a group value that goes on for far too …");
        assert_eq!(shown.chars().count(), MAX_KEY_CHARS);

        assert_eq!(display_key("short"), "short");
    }
}
