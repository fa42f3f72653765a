//! Strict JSON Lines splitting for `chunk` and `group` shards.
//!
//! Every line must be a JSON value; a line that is not, or (for `group`) a record without
//! the key, fails the whole instance with the file, the line number and the key, before
//! any shard runs. The newline ending the last line is optional.

use std::collections::BTreeMap;

use thiserror::Error;

/// Why a source could not be split.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SplitError {
    /// A line is not JSON.
    #[error("`{file}` line {line} is not JSON: {message}")]
    NotJson {
        /// The source file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A record lacks the group key.
    #[error("`{file}` line {line} has no field `{key}` to group by")]
    MissingKey {
        /// The source file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The key.
        key: String,
    },
    /// Two shards would write the same output path.
    #[error("shards {first} and {second} would both write `{path}`")]
    SameOutput {
        /// The output path, normalised.
        path: String,
        /// The earlier shard.
        first: Box<KeyAt>,
        /// The later shard.
        second: Box<KeyAt>,
    },
    /// A group key used in an output path is not one path component.
    #[error("{at}: the group key `{key}` cannot be part of the output path `{template}`: {why}")]
    KeyNotAName {
        /// Where the key's first record is.
        at: String,
        /// The key.
        key: String,
        /// The output template.
        template: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The source could not be read.
    #[error("cannot read shard source `{file}`: {message}")]
    Io {
        /// The source file.
        file: String,
        /// The error.
        message: String,
    },
}

/// A shard named by its key and, for groups, where its first record is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAt {
    /// `{shard.key}`.
    pub key: String,
    /// The source file and 1-based line of the group's first record.
    pub line: Option<(String, usize)>,
}

impl std::fmt::Display for KeyAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.key)?;
        if let Some((file, line)) = &self.line {
            write!(f, " (`{file}` line {line})")?;
        }
        Ok(())
    }
}

impl SplitError {
    /// An I/O error reading `file`.
    pub fn io(file: &str, e: &std::io::Error) -> SplitError {
        SplitError::Io {
            file: file.to_owned(),
            message: e.to_string(),
        }
    }
}

/// The lines of a JSON Lines file with their 1-based numbers, each with its newline.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split_inclusive(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

fn parse(file: &str, n: usize, line: &[u8]) -> Result<serde_json::Value, SplitError> {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    serde_json::from_slice(text).map_err(|e| SplitError::NotJson {
        file: file.to_owned(),
        line: n,
        message: if text.iter().all(u8::is_ascii_whitespace) {
            "the line is empty".to_owned()
        } else {
            e.to_string()
        },
    })
}

/// Ensures a slice ends with a newline, so concatenated slices stay valid JSON Lines.
fn push_line(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(line);
    if !line.ends_with(b"\n") {
        out.push(b'\n');
    }
}

/// Splits into slices of `size` records, in order.
pub fn split_chunk(file: &str, bytes: &[u8], size: usize) -> Result<Vec<Vec<u8>>, SplitError> {
    let size = size.max(1);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for (count, (n, line)) in lines(bytes).enumerate() {
        parse(file, n, line)?;
        if count % size == 0 {
            out.push(Vec::new());
        }
        if let Some(last) = out.last_mut() {
            push_line(last, line);
        }
    }
    Ok(out)
}

/// One group of a `group` source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The value of the key.
    pub key: String,
    /// The 1-based line of its first record, for messages.
    pub line: usize,
    /// Its records, in file order.
    pub bytes: Vec<u8>,
}

/// Groups records by the value of `key`: one slice per distinct value, sorted by value,
/// records in file order within each. String values are used as they are; other values
/// as their JSON text.
pub fn split_group(file: &str, bytes: &[u8], key: &str) -> Result<Vec<Group>, SplitError> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for (n, line) in lines(bytes) {
        let value = parse(file, n, line)?;
        let k = match value.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => {
                return Err(SplitError::MissingKey {
                    file: file.to_owned(),
                    line: n,
                    key: key.to_owned(),
                });
            }
        };
        let group = groups.entry(k).or_insert_with_key(|k| Group {
            key: k.clone(),
            line: n,
            bytes: Vec::new(),
        });
        push_line(&mut group.bytes, line);
    }
    Ok(groups.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_have_the_given_size() {
        let src = b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n{\"a\":4}\n{\"a\":5}";
        let c = split_chunk("f", src, 2).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0], b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(c[2], b"{\"a\":5}\n");
        assert!(split_chunk("f", b"", 2).unwrap().is_empty());
    }

    #[test]
    fn groups_are_sorted_and_keep_record_order() {
        let src =
            b"{\"r\":\"b\",\"n\":1}\n{\"r\":\"a\",\"n\":2}\n{\"r\":\"b\",\"n\":3}\n{\"r\":7}\n";
        let g = split_group("f", src, "r").unwrap();
        let keys: Vec<&str> = g.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(keys, ["7", "a", "b"]);
        let lines: Vec<usize> = g.iter().map(|g| g.line).collect();
        assert_eq!(lines, [4, 2, 1]);
        assert_eq!(
            g[2].bytes,
            b"{\"r\":\"b\",\"n\":1}\n{\"r\":\"b\",\"n\":3}\n"
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let err = split_group("in.jsonl", b"{\"r\":1}\n{\"x\":2}\n", "r").unwrap_err();
        assert_eq!(
            err,
            SplitError::MissingKey {
                file: "in.jsonl".into(),
                line: 2,
                key: "r".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "`in.jsonl` line 2 has no field `r` to group by"
        );
        let err = split_chunk("in.jsonl", b"{\"r\":1}\nnot json\n", 1).unwrap_err();
        assert!(matches!(err, SplitError::NotJson { line: 2, .. }), "{err}");
        let err = split_chunk("in.jsonl", b"{}\n\n{}\n", 1).unwrap_err();
        assert!(
            err.to_string()
                .contains("line 2 is not JSON: the line is empty"),
            "{err}"
        );
    }
}
