//! The documentation keeps up with the code: every command and flag of the command line is
//! in `docs/cli.md`, every Orchfile key in `docs/orchfile.md`, every event type and field
//! in `docs/events.md`, every relative link of the README and `docs/` leads to a file
//! (and heading) that exists, and the tutorial's pipeline prints what the tutorial shows.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The lines of `text` outside fenced code blocks, with their line numbers (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((n + 1, line));
        }
    }
    out
}

/// The text of the section headed `heading` (a whole `## ` line), up to the next heading
/// of level 1 or 2.
fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let start = text.find(&format!("\n{heading}\n"))? + 1;
    let body = &text[start + heading.len()..];
    let end = body
        .find("\n## ")
        .into_iter()
        .chain(body.find("\n# "))
        .min()
        .unwrap_or(body.len());
    Some(&body[..end])
}

/// How the reference names an argument: `--long`, else `-s`; None for positionals.
fn flag_name(arg: &clap::Arg) -> Option<String> {
    if let Some(long) = arg.get_long() {
        return Some(format!("--{long}"));
    }
    arg.get_short().map(|s| format!("-{s}"))
}

/// Whether `section` names `flag` as a flag: `--jobs` but not `--jobs-max`.
fn mentions_flag(section: &str, flag: &str) -> bool {
    section.match_indices(flag).any(|(at, _)| {
        let next = section[at + flag.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn every_command_and_flag_is_in_the_cli_reference() {
    let doc = read(&root().join("docs/cli.md"));
    let cli = orch::cli::Cli::command();
    let mut missing = Vec::new();

    let globals = section(&doc, "## Global options").unwrap_or_else(|| {
        missing.push("the section `## Global options`".to_owned());
        ""
    });
    for arg in cli.get_arguments() {
        if let Some(flag) = flag_name(arg)
            && !mentions_flag(globals, &flag)
        {
            missing.push(format!("global option `{flag}` (in `## Global options`)"));
        }
    }

    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let heading = format!("## `orch {}`", sub.get_name());
        let Some(text) = section(&doc, &heading) else {
            missing.push(format!(
                "command `orch {}` (a `{heading}` section)",
                sub.get_name()
            ));
            continue;
        };
        for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
            if let Some(flag) = flag_name(arg)
                && !mentions_flag(text, &flag)
            {
                missing.push(format!("`orch {} {flag}` (in `{heading}`)", sub.get_name()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/cli.md does not document:\n  {}",
        missing.join("\n  ")
    );
}

/// Every key the Orchfile schema declares, as (dotted path for messages, key name).
fn schema_keys(schema: &serde_json::Value) -> BTreeSet<(String, String)> {
    fn walk(
        root: &serde_json::Value,
        node: &serde_json::Value,
        path: &str,
        seen_refs: &mut BTreeSet<String>,
        out: &mut BTreeSet<(String, String)>,
    ) {
        let Some(obj) = node.as_object() else { return };
        if let Some(r) = obj.get("$ref").and_then(|r| r.as_str()) {
            let name = r.rsplit('/').next().unwrap_or(r).to_owned();
            // Recursive definitions are walked once per branch.
            if seen_refs.insert(name.clone()) {
                if let Some(def) = root["$defs"].get(&name) {
                    walk(root, def, path, seen_refs, out);
                }
                seen_refs.remove(&name);
            }
        }
        if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
            for (key, value) in props {
                let full = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                out.insert((full.clone(), key.clone()));
                walk(root, value, &full, seen_refs, out);
            }
        }
        if let Some(items) = obj.get("items") {
            walk(root, items, &format!("{path}[]"), seen_refs, out);
        }
        if let Some(extra) = obj.get("additionalProperties") {
            walk(root, extra, &format!("{path}.NAME"), seen_refs, out);
        }
        for combinator in ["anyOf", "oneOf", "allOf"] {
            for alternative in obj
                .get(combinator)
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
            {
                walk(root, alternative, path, seen_refs, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(schema, schema, "", &mut BTreeSet::new(), &mut out);
    out
}

/// The first cell of every table row of `doc` (outside code blocks).
fn first_cells(doc: &str) -> Vec<String> {
    prose_lines(doc)
        .into_iter()
        .filter_map(|(_, line)| {
            let row = line.trim().strip_prefix('|')?;
            Some(row.split('|').next().unwrap_or("").trim().to_owned())
        })
        .collect()
}

#[test]
fn every_orchfile_key_is_in_the_orchfile_reference() {
    let doc = read(&root().join("docs/orchfile.md"));
    let schema: serde_json::Value =
        serde_json::from_str(&orch::orchfile::raw::json_schema()).expect("the schema is JSON");
    let cells = first_cells(&doc);
    let keys = schema_keys(&schema);
    assert!(keys.len() > 30, "the schema walk found only {keys:?}");

    let missing: Vec<String> = keys
        .iter()
        .filter(|(path, key)| {
            let top_level = !path.contains('.');
            // A table is documented by its heading (`[cache]`, `[phase.NAME]`), a key by a
            // table row that starts with it (`` `timeout` ``).
            let as_key = format!("`{key}`");
            let found = cells.iter().any(|c| c.contains(&as_key))
                || (top_level
                    && (doc.contains(&format!("[{key}]")) || doc.contains(&format!("[{key}."))));
            !found
        })
        .map(|(path, _)| path.clone())
        .collect();
    assert!(
        missing.is_empty(),
        "docs/orchfile.md has no table row for these keys:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_event_type_and_field_is_in_the_events_page() {
    let doc = read(&root().join("docs/events.md"));
    let schema: serde_json::Value =
        serde_json::from_str(&read(&root().join("schemas/event.v1.json"))).expect("JSON");
    let common = section(&doc, "## Fields of every event").unwrap_or("");
    let mut missing = Vec::new();
    let types = schema["oneOf"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    assert!(
        types.len() > 10,
        "the event schema lists {} types",
        types.len()
    );
    for alternative in types {
        let name = alternative["$ref"]
            .as_str()
            .and_then(|r| r.rsplit('/').next())
            .unwrap_or_default();
        let heading = format!("## `{name}`");
        let Some(text) = section(&doc, &heading) else {
            missing.push(format!("event `{name}` (a `{heading}` section)"));
            continue;
        };
        let fields = schema["$defs"][name]["properties"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.keys());
        for field in fields {
            let named = format!("`{field}`");
            if !text.contains(&named) && !common.contains(&named) {
                missing.push(format!("field `{field}` of `{name}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/events.md does not document:\n  {}",
        missing.join("\n  ")
    );
}

/// The fenced blocks of `text` as (info string, body).
fn code_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (fence, open.take()) {
            (Some(_), Some(block)) => out.push(block),
            (Some(info), None) => open = Some((info.trim().to_owned(), String::new())),
            (None, Some((info, mut body))) => {
                body.push_str(line);
                body.push('\n');
                open = Some((info, body));
            }
            (None, None) => {}
        }
    }
    out
}

/// Runs `command` with `sh -c` in `dir`, the `orch` under test first on the PATH.
fn shell(dir: &Path, command: &str) -> std::process::Output {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_orch"));
    let bin_dir = bin.parent().unwrap_or(Path::new("."));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin_dir.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env("PATH", std::env::join_paths(paths).expect("PATH"))
        .env("NO_COLOR", "1")
        // `sort` orders by the locale; the page shows the C order.
        .env("LC_ALL", "C")
        .env_remove("ORCH_JOBS")
        .output()
        .expect("run sh")
}

/// The tutorial's own pipeline really works as shown: its set-up and Orchfile build, and
/// `orch check`, `orch plan` and the result print what the page says. Build lines carry
/// times, so for builds only success is checked.
#[test]
fn the_tutorial_pipeline_prints_what_the_tutorial_shows() {
    let doc = read(&root().join("docs/tutorial.md"));
    let part = section(&doc, "## 2. Your own pipeline").expect("the tutorial's section 2");
    let blocks = code_blocks(part);
    let body = |info: &str| {
        blocks
            .iter()
            .find(|(i, _)| i == info)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("a ```{info} block in section 2"))
    };
    let tmp = tempfile::tempdir().expect("temporary directory");
    let setup = shell(tmp.path(), &body("sh"));
    assert!(setup.status.success(), "set-up: {setup:?}");
    let project = tmp.path().join("poems");
    std::fs::write(project.join("Orchfile.toml"), body("toml")).expect("write the Orchfile");

    let console = body("console");
    let mut steps: Vec<(String, String)> = Vec::new();
    for line in console.lines() {
        match line.strip_prefix("$ ") {
            Some(command) => steps.push((command.to_owned(), String::new())),
            None => {
                let (_, expected) = steps.last_mut().expect("output after a command");
                expected.push_str(line);
                expected.push('\n');
            }
        }
    }
    assert!(steps.len() >= 4, "commands in the console block: {steps:?}");
    for (command, expected) in steps {
        let out = shell(&project, &command);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`{command}` failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        if !command.starts_with("orch build") {
            assert_eq!(stdout, expected, "the output of `{command}`");
        }
    }
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (duplicates get `-1`, `-2`… as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let base = slug(title.trim_start_matches('#'));
        let mut anchor = base.clone();
        let mut n = 0;
        while !out.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    out
}

/// The targets of the inline links `[text](target)` on a line.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => {
                let target = after[..end].split_whitespace().next().unwrap_or("");
                out.push(target.to_owned());
                rest = &after[end..];
            }
            None => break,
        }
    }
    out
}

#[test]
fn every_relative_link_leads_somewhere() {
    let root = root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    assert!(
        files.len() > 10,
        "expected the docs/ pages, found {files:?}"
    );

    let mut broken = Vec::new();
    for file in &files {
        let text = read(file);
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (n, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target.as_str(), None),
                };
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap_or(&root).join(path)
                };
                if !resolved.exists() {
                    broken.push(format!("{shown}:{n}: `{target}`: no such file"));
                    continue;
                }
                let is_markdown = resolved.extension().is_some_and(|x| x == "md");
                if let Some(anchor) = anchor
                    && is_markdown
                    && !anchors(&read(&resolved)).contains(anchor)
                {
                    broken.push(format!("{shown}:{n}: `{target}`: no such heading"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug(" When does a phase run?"), "when-does-a-phase-run");
    assert_eq!(slug(" `orch build`"), "orch-build");
    assert_eq!(
        slug(" Discovered dependencies (depfiles)"),
        "discovered-dependencies-depfiles"
    );
    assert_eq!(
        link_targets("see [a](docs/a.md#x) and [b](b.md \"title\")"),
        ["docs/a.md#x", "b.md"]
    );
}
