//! Output schemas: an output declared as `{ path, schema }` must satisfy its JSON Schema —
//! the whole file for JSON, every line for JSON Lines (`.jsonl`) — or the instance fails
//! with the output, the line, the JSON pointer and the schema's message.

use std::path::Path;

/// Checks every (output, schema) pair, project-relative; the first violation, as a
/// message, when there is one.
pub fn check(root: &Path, pairs: &[(String, String)]) -> Option<String> {
    pairs
        .iter()
        .find_map(|(output, schema)| check_one(root, output, schema).err())
}

fn check_one(root: &Path, output: &str, schema_path: &str) -> Result<(), String> {
    let schema_text = std::fs::read_to_string(root.join(schema_path))
        .map_err(|e| format!("cannot read schema `{schema_path}` for `{output}`: {e}"))?;
    let schema: serde_json::Value = serde_json::from_str(&schema_text)
        .map_err(|e| format!("schema `{schema_path}` is not JSON: {e}"))?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| format!("schema `{schema_path}` is not a valid JSON Schema: {e}"))?;
    let text = std::fs::read_to_string(root.join(output))
        .map_err(|e| format!("cannot read `{output}` to check it against `{schema_path}`: {e}"))?;
    let check = |value: &serde_json::Value, place: String| -> Result<(), String> {
        validator.validate(value).map_err(|e| {
            let pointer = e.instance_path().as_str();
            let at = if pointer.is_empty() {
                String::new()
            } else {
                format!(" at `{pointer}`")
            };
            format!("`{output}`{place}{at} does not match `{schema_path}`: {e}")
        })
    };
    if output.ends_with(".jsonl") {
        for (n, line) in text.lines().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("`{output}` line {} is not JSON: {e}", n + 1))?;
            check(&value, format!(" line {}", n + 1))?;
        }
        Ok(())
    } else {
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("`{output}` is not JSON: {e}"))?;
        check(&value, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str =
        r#"{"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}"#;

    #[test]
    fn json_lines_are_checked_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.json"), SCHEMA).unwrap();
        std::fs::write(dir.path().join("ok.jsonl"), "{\"id\": 1}\n{\"id\": 2}\n").unwrap();
        std::fs::write(
            dir.path().join("bad.jsonl"),
            "{\"id\": 1}\n{\"id\": \"x\"}\n",
        )
        .unwrap();
        assert_eq!(
            check(dir.path(), &[("ok.jsonl".into(), "s.json".into())]),
            None
        );
        let m = check(dir.path(), &[("bad.jsonl".into(), "s.json".into())]).unwrap();
        assert!(
            m.starts_with("`bad.jsonl` line 2 at `/id` does not match `s.json`"),
            "{m}"
        );
    }

    #[test]
    fn json_files_are_checked_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.json"), SCHEMA).unwrap();
        std::fs::write(dir.path().join("o.json"), "{\"name\": 1}").unwrap();
        let m = check(dir.path(), &[("o.json".into(), "s.json".into())]).unwrap();
        assert!(
            m.contains("`o.json` does not match `s.json`") && m.contains("id"),
            "{m}"
        );
        std::fs::write(dir.path().join("o.json"), "not json").unwrap();
        assert!(
            check(dir.path(), &[("o.json".into(), "s.json".into())])
                .unwrap()
                .contains("is not JSON")
        );
        assert!(
            check(dir.path(), &[("o.json".into(), "missing.json".into())])
                .unwrap()
                .contains("cannot read schema")
        );
    }
}
