//! Whether two path patterns can name a common path, decided from the patterns alone.
//!
//! Implied dependencies come from here: an input pattern of one phase and a declared
//! output of another that can match the same path make the second an upstream of the
//! first. Each pattern becomes a small NFA over characters and the product of the two is
//! searched for a path both accept. The answer may say "yes" for a pair that no real file
//! satisfies (a class `[^x]` is taken to match `/` too, `**` to match anything), never
//! "no" for a pair that one does: a missing edge lets a phase run before its producer.
//!
//! [`implied_deps`] applies it to a whole project: outputs are indexed by their literal
//! prefix and each distinct input pattern is compared once, so a project of 100,000
//! instances is decided in about the time it takes to read it.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use super::path::is_plain;
use super::{Implied, Instance, Phase};
use crate::orchfile::Span;

/// The `{shard.*}` holes a per-shard output template may hold.
const TEMPLATE_HOLES: &[&str] = &["{shard.key}", "{shard.index}", "{shard.count}"];

/// One declared output of the project, compiled when first compared.
struct Declared {
    instance: usize,
    /// As shown to the user: a path, `dir/`, or a template.
    shown: String,
    kind: Kind,
    pattern: OnceCell<Pattern>,
}

#[derive(Clone, Copy)]
enum Kind {
    File,
    Dir,
    Template,
}

impl Declared {
    fn pattern(&self) -> &Pattern {
        self.pattern.get_or_init(|| match self.kind {
            Kind::File => Pattern::file(&self.shown),
            Kind::Dir => Pattern::dir(self.shown.trim_end_matches('/')),
            Kind::Template => Pattern::template(&self.shown, TEMPLATE_HOLES),
        })
    }
}

/// For each instance, its implied dependencies with their evidence, sorted by upstream:
/// an input that can match a declared output (file, directory or per-shard template) of
/// an instance of another phase that its own phase does not list in `needs` or `after`.
/// `input_spans` gives the span of each instance's inputs, in order.
pub fn implied_deps(
    instances: &[Instance],
    input_spans: &[Vec<Span>],
    phases: &BTreeMap<String, Phase>,
) -> Vec<Vec<Implied>> {
    let mut declared: Vec<Declared> = Vec::new();
    let mut index = Index::default();
    for (i, inst) in instances.iter().enumerate() {
        let outs = inst.outputs.iter().map(|o| {
            if o.dir {
                (format!("{}/", o.path), Kind::Dir)
            } else {
                (o.path.clone(), Kind::File)
            }
        });
        let templates = inst
            .shard_outputs
            .iter()
            .map(|o| (o.path.clone(), Kind::Template));
        for (shown, kind) in outs.chain(templates) {
            let map = match kind {
                Kind::File => &mut index.files,
                Kind::Dir | Kind::Template => &mut index.open,
            };
            let end = shown.find("{shard.").unwrap_or(shown.len());
            map.entry(shown[..end].to_owned())
                .or_default()
                .push(declared.len());
            declared.push(Declared {
                instance: i,
                shown,
                kind,
                pattern: OnceCell::new(),
            });
        }
    }
    if declared.is_empty() {
        return vec![Vec::new(); instances.len()];
    }
    // Instances of a matrix phase share patterns unless a matrix value is in them. Only
    // looked up, never iterated: its order reaches nothing.
    let mut memo: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut out = Vec::with_capacity(instances.len());
    for (i, inst) in instances.iter().enumerate() {
        let phase = phases.get(&inst.phase);
        let mut found: BTreeMap<usize, Implied> = BTreeMap::new();
        for (k, input) in inst.inputs.iter().enumerate() {
            let matches = memo
                .entry(input.as_str())
                .or_insert_with(|| matching(input, &declared, &index));
            for &d in matches.iter() {
                let o = &declared[d];
                let up = &instances[o.instance];
                if up.phase == inst.phase
                    || phase.is_some_and(|p| {
                        p.needs.iter().chain(&p.after).any(|(n, _)| *n == up.phase)
                    })
                {
                    continue;
                }
                let Some(span) = input_spans.get(i).and_then(|s| s.get(k)) else {
                    continue;
                };
                found.entry(o.instance).or_insert_with(|| Implied {
                    upstream: o.instance,
                    input: input.clone(),
                    output: o.shown.clone(),
                    span: span.clone(),
                });
            }
        }
        out.push(found.into_values().collect());
    }
    out
}

/// Declared outputs by the literal text every path they name starts with.
#[derive(Default)]
struct Index {
    /// File outputs, by path.
    files: BTreeMap<String, Vec<usize>>,
    /// Directory outputs (`dir/`) and templates (up to the first hole).
    open: BTreeMap<String, Vec<usize>>,
}

/// The declared outputs `input` can match, in declaration order.
fn matching(input: &str, declared: &[Declared], index: &Index) -> Vec<usize> {
    let plain = is_plain(input);
    let prefix = if plain { input } else { literal_prefix(input) };
    // Only an output whose prefix extends the input's, or is a prefix of it, can share
    // a path with it; a file output names one path, which cannot be shorter than the
    // input's prefix.
    let extending = |map: &BTreeMap<String, Vec<usize>>| -> Vec<usize> {
        map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .flat_map(|(_, v)| v.iter().copied())
            .collect()
    };
    let mut candidates = extending(&index.files);
    if !index.open.is_empty() {
        candidates.extend(extending(&index.open));
        for (end, _) in prefix.char_indices() {
            if let Some(v) = index.open.get(&prefix[..end]) {
                candidates.extend(v);
            }
        }
    }
    if candidates.is_empty() {
        return candidates;
    }
    candidates.sort_unstable();
    candidates.dedup();
    let pattern = if plain {
        Pattern::plain_input(input)
    } else {
        Pattern::glob(input)
    };
    candidates.retain(|&d| intersect(&pattern, declared[d].pattern()));
    candidates
}

/// A set of characters one transition accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Label {
    /// Exactly this character.
    Char(char),
    /// Any character but `/` (`?`, and each step of `*`).
    NotSlash,
    /// Any character at all (each step of `**` and of a template hole).
    Any,
    /// `[...]`: inclusive ranges, or their complement.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Label {
    /// Whether the label accepts `c`.
    fn accepts(&self, c: char) -> bool {
        match self {
            Label::Char(x) => *x == c,
            Label::NotSlash => c != '/',
            Label::Any => true,
            Label::Class { negated, ranges } => {
                ranges.iter().any(|&(a, b)| a <= c && c <= b) != *negated
            }
        }
    }

    /// Whether some character is accepted by both labels.
    fn meets(&self, other: &Label) -> bool {
        match (self, other) {
            (Label::Char(c), l) | (l, Label::Char(c)) => l.accepts(*c),
            (Label::Any, _) | (_, Label::Any) | (Label::NotSlash, Label::NotSlash) => true,
            (Label::NotSlash, c) | (c, Label::NotSlash) => class_has(c, |ch| ch != '/'),
            (
                Label::Class {
                    negated: false,
                    ranges,
                },
                l,
            )
            | (
                l,
                Label::Class {
                    negated: false,
                    ranges,
                },
            ) => ranges
                .iter()
                .any(|&(a, b)| range_has(a, b, |ch| l.accepts(ch))),
            // Two complements: their union is finite, so something is outside both.
            _ => true,
        }
    }
}

/// Whether class `c` accepts some character satisfying `want`.
fn class_has(c: &Label, want: impl Fn(char) -> bool) -> bool {
    match c {
        Label::Class {
            negated: false,
            ranges,
        } => ranges.iter().any(|&(a, b)| range_has(a, b, &want)),
        _ => true,
    }
}

/// Whether some character in `a..=b` satisfies `want`. A wide range is taken to hold
/// one: checking every character of it is not worth the time.
fn range_has(a: char, b: char, want: impl Fn(char) -> bool) -> bool {
    if (b as u32).saturating_sub(a as u32) > 512 {
        return true;
    }
    (a..=b).any(want)
}

/// One element of a parsed pattern.
#[derive(Clone, Debug)]
enum Node {
    /// One character from the label.
    One(Label),
    /// Zero or more characters from the label.
    Many(Label),
    /// The sequence, or nothing.
    Optional(Vec<Node>),
    /// One of the sequences.
    Either(Vec<Vec<Node>>),
}

/// A compiled pattern: states with labelled and empty transitions, start 0.
#[derive(Clone, Debug, Default)]
pub struct Pattern {
    edges: Vec<Vec<(Label, usize)>>,
    empty: Vec<Vec<usize>>,
    accept: usize,
}

impl Pattern {
    /// An input glob, in the syntax orch gives globset (`literal_separator`: `*` and `?`
    /// stop at `/`, `**` does not; `[...]`, `{a,b}`, `\` escapes).
    pub fn glob(glob: &str) -> Pattern {
        let chars: Vec<char> = glob.chars().collect();
        let mut pos = 0;
        let nodes = parse_seq(&chars, &mut pos, 0);
        Pattern::from_nodes(&nodes)
    }

    /// A plain input path: the path itself or anything beneath it (it may be a
    /// directory).
    pub fn plain_input(path: &str) -> Pattern {
        let mut nodes = literal(path);
        nodes.push(Node::Optional(vec![
            Node::One(Label::Char('/')),
            Node::Many(Label::Any),
        ]));
        Pattern::from_nodes(&nodes)
    }

    /// A declared file output.
    pub fn file(path: &str) -> Pattern {
        Pattern::from_nodes(&literal(path))
    }

    /// A declared directory output: anything beneath it.
    pub fn dir(path: &str) -> Pattern {
        let mut nodes = literal(path);
        nodes.push(Node::One(Label::Char('/')));
        nodes.push(Node::One(Label::Any));
        nodes.push(Node::Many(Label::Any));
        Pattern::from_nodes(&nodes)
    }

    /// A per-shard output template: `holes` stand for any text, `/` included (a `files`
    /// key is a project path).
    pub fn template(path: &str, holes: &[&str]) -> Pattern {
        let mut nodes = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(h) = holes.iter().find(|h| rest.starts_with(**h)) {
                nodes.push(Node::Many(Label::Any));
                rest = &rest[h.len()..];
            } else if let Some(c) = rest.chars().next() {
                nodes.push(Node::One(Label::Char(c)));
                rest = &rest[c.len_utf8()..];
            }
        }
        Pattern::from_nodes(&nodes)
    }

    fn from_nodes(nodes: &[Node]) -> Pattern {
        let mut p = Pattern {
            edges: vec![Vec::new()],
            empty: vec![Vec::new()],
            accept: 0,
        };
        p.accept = p.compile(nodes, 0);
        p
    }

    fn state(&mut self) -> usize {
        self.edges.push(Vec::new());
        self.empty.push(Vec::new());
        self.edges.len() - 1
    }

    /// Adds `nodes` after state `from`; returns the state where they end.
    fn compile(&mut self, nodes: &[Node], mut from: usize) -> usize {
        for n in nodes {
            from = match n {
                Node::One(l) => {
                    let t = self.state();
                    self.edges[from].push((l.clone(), t));
                    t
                }
                Node::Many(l) => {
                    // A fresh state: a loop on `from` would repeat what came before it.
                    let t = self.state();
                    self.empty[from].push(t);
                    self.edges[t].push((l.clone(), t));
                    t
                }
                Node::Optional(seq) => {
                    let end = self.compile(seq, from);
                    let t = self.state();
                    self.empty[from].push(t);
                    self.empty[end].push(t);
                    t
                }
                Node::Either(branches) => {
                    let t = self.state();
                    for b in branches {
                        let s = self.state();
                        self.empty[from].push(s);
                        let e = self.compile(b, s);
                        self.empty[e].push(t);
                    }
                    t
                }
            };
        }
        from
    }
}

/// Whether some path matches both patterns.
pub fn intersect(a: &Pattern, b: &Pattern) -> bool {
    let mut seen: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut stack = vec![(0usize, 0usize)];
    while let Some((x, y)) = stack.pop() {
        if !seen.insert((x, y)) {
            continue;
        }
        if x == a.accept && y == b.accept {
            return true;
        }
        stack.extend(a.empty[x].iter().map(|&x2| (x2, y)));
        stack.extend(b.empty[y].iter().map(|&y2| (x, y2)));
        for (la, xa) in &a.edges[x] {
            for (lb, yb) in &b.edges[y] {
                if la.meets(lb) {
                    stack.push((*xa, *yb));
                }
            }
        }
    }
    false
}

/// The text before a pattern's first special character: every match starts with it.
pub fn literal_prefix(glob: &str) -> &str {
    let end = glob.find(['*', '?', '[', '{', '\\']).unwrap_or(glob.len());
    &glob[..end]
}

fn literal(path: &str) -> Vec<Node> {
    path.chars().map(|c| Node::One(Label::Char(c))).collect()
}

/// Parses a sequence up to the end, or (inside `{...}`, `depth > 0`) up to the `,` or
/// `}` that ends the branch, which is left for the caller.
fn parse_seq(chars: &[char], pos: &mut usize, depth: usize) -> Vec<Node> {
    let mut out = Vec::new();
    while let Some(&c) = chars.get(*pos) {
        match c {
            ',' | '}' if depth > 0 => break,
            '\\' => {
                *pos += 1;
                // A dangling escape is refused by globset; as a literal it is harmless.
                let lit = chars.get(*pos).copied().unwrap_or('\\');
                *pos += 1;
                out.push(Node::One(Label::Char(lit)));
            }
            '?' => {
                *pos += 1;
                out.push(Node::One(Label::NotSlash));
            }
            '*' => {
                *pos += 1;
                if chars.get(*pos) == Some(&'*') {
                    *pos += 1;
                    // `**/` may also be nothing at all (`a/**/b` matches `a/b`); any
                    // other `**` is taken to match anything, which covers what globset
                    // makes of it.
                    // Alone, `**/` matches everything.
                    if chars.get(*pos) == Some(&'/') && *pos + 1 < chars.len() {
                        *pos += 1;
                        out.push(Node::Optional(vec![
                            Node::Many(Label::Any),
                            Node::One(Label::Char('/')),
                        ]));
                    } else {
                        if chars.get(*pos) == Some(&'/') {
                            *pos += 1;
                        }
                        out.push(Node::Many(Label::Any));
                    }
                } else {
                    out.push(Node::Many(Label::NotSlash));
                }
            }
            '[' => match parse_class(chars, *pos + 1) {
                Some((label, next)) => {
                    *pos = next;
                    out.push(Node::One(label));
                }
                None => {
                    *pos += 1;
                    out.push(Node::One(Label::Char('[')));
                }
            },
            '{' => {
                *pos += 1;
                let mut branches = Vec::new();
                loop {
                    branches.push(parse_seq(chars, pos, depth + 1));
                    match chars.get(*pos) {
                        Some(',') => *pos += 1,
                        Some('}') => {
                            *pos += 1;
                            break;
                        }
                        _ => break,
                    }
                }
                out.push(Node::Either(branches));
            }
            c => {
                *pos += 1;
                out.push(Node::One(Label::Char(c)));
            }
        }
    }
    out
}

/// Parses a class whose `[` is just before `start`: the label and the position after
/// its `]`, or None when it is not closed.
fn parse_class(chars: &[char], start: usize) -> Option<(Label, usize)> {
    let mut pos = start;
    let negated = matches!(chars.get(pos), Some('!' | '^'));
    if negated {
        pos += 1;
    }
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut first = true;
    let mut in_range = false;
    loop {
        let c = *chars.get(pos)?;
        pos += 1;
        match c {
            ']' if !first => break,
            '-' if !first && !in_range => in_range = true,
            c => {
                match ranges.last_mut() {
                    Some(r) if in_range => r.1 = c,
                    _ => ranges.push((c, c)),
                }
                in_range = false;
            }
        }
        first = false;
    }
    if in_range {
        ranges.push(('-', '-'));
    }
    Some((Label::Class { negated, ranges }, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(a: &str, b: &str) -> bool {
        intersect(&Pattern::glob(a), &Pattern::glob(b))
    }

    #[test]
    fn globs_against_files() {
        let f = |glob: &str, path: &str| intersect(&Pattern::glob(glob), &Pattern::file(path));
        assert!(f("build/obj/*.o", "build/obj/a.o"));
        assert!(!f("build/obj/*.o", "build/obj/sub/a.o"));
        assert!(f("build/**/*.o", "build/obj/sub/a.o"));
        assert!(f("build/**/*.o", "build/a.o"));
        assert!(f("**/*.o", "a.o"));
        assert!(f("**", "x/y/z"));
        assert!(!f("build/*.o", "build/a.c"));
        assert!(f("build/{a,b}.o", "build/b.o"));
        assert!(!f("build/{a,b}.o", "build/c.o"));
        assert!(f("build/[ab].o", "build/b.o"));
        assert!(!f("build/[!ab].o", "build/b.o"));
        assert!(f("build/[a-c].o", "build/b.o"));
        assert!(f("build/\\*.o", "build/*.o"));
        assert!(!f("build/\\*.o", "build/a.o"));
        assert!(!f("build/?.o", "build/ab.o"));
        assert!(!f("build/?", "build//"));
        assert!(f("a/**/b", "a/b"));
        assert!(f("a/**", "a/x"));
        assert!(f("{a/**,c}", "a/x/y"));
    }

    #[test]
    fn plain_inputs_and_directory_outputs() {
        let plain = |p: &str| Pattern::plain_input(p);
        assert!(intersect(&plain("build"), &Pattern::file("build/x.txt")));
        assert!(intersect(
            &plain("build/x.txt"),
            &Pattern::file("build/x.txt")
        ));
        assert!(!intersect(&plain("build"), &Pattern::file("buildx/y")));
        assert!(intersect(&plain("out/a/b.txt"), &Pattern::dir("out")));
        assert!(intersect(&plain("out"), &Pattern::dir("out/a")));
        assert!(!intersect(&plain("outx"), &Pattern::dir("out")));
        assert!(intersect(&Pattern::glob("out/*"), &Pattern::dir("out")));
        assert!(!intersect(&Pattern::glob("*.txt"), &Pattern::dir("out")));
    }

    #[test]
    fn shard_templates() {
        let t = Pattern::template("build/obj/{shard.key}.o", &["{shard.key}"]);
        assert!(intersect(&Pattern::glob("build/obj/*.o"), &t));
        assert!(intersect(&Pattern::glob("build/obj/**"), &t));
        assert!(intersect(&Pattern::file("build/obj/src/x.o"), &t));
        assert!(!intersect(&Pattern::glob("build/obj/*.a"), &t));
        assert!(!intersect(&Pattern::glob("build/lib/*.o"), &t));
    }

    #[test]
    fn glob_against_glob() {
        assert!(g("a/*.txt", "a/x*"));
        assert!(!g("a/*.txt", "b/*"));
        assert!(g("[ab]/x", "[bc]/x"));
        assert!(!g("[ab]/x", "[cd]/x"));
        assert!(!g("?", "[/]"));
        assert!(g("[!a]", "[!b]"));
    }

    #[test]
    fn prefixes() {
        assert_eq!(literal_prefix("build/obj/*.o"), "build/obj/");
        assert_eq!(literal_prefix("**/x"), "");
        assert_eq!(literal_prefix("a/b"), "a/b");
        assert_eq!(literal_prefix("a/\\*"), "a/");
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("a".to_owned()),
                Just("b".to_owned()),
                Just("/".to_owned()),
                Just(".".to_owned()),
                Just("*".to_owned()),
                Just("?".to_owned()),
                Just("**".to_owned()),
                Just("**/".to_owned()),
                Just("/**".to_owned()),
                Just("/**/".to_owned()),
                Just("[ab]".to_owned()),
                Just("[!a]".to_owned()),
                Just("[a-c]".to_owned()),
                Just("[/]".to_owned()),
                Just("{a,b/}".to_owned()),
                Just("{*,?b}".to_owned()),
                Just("{a/**,b}".to_owned()),
                Just("\\*".to_owned()),
                Just("\\a".to_owned()),
                Just("*".to_owned()),
            ]
        }

        fn pattern() -> impl Strategy<Value = String> {
            prop::collection::vec(piece(), 0..6).prop_map(|v| v.concat())
        }

        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    Just('a'),
                    Just('b'),
                    Just('c'),
                    Just('/'),
                    Just('.'),
                    Just('*')
                ],
                0..10,
            )
            .prop_map(|v| v.into_iter().collect())
        }

        fn matcher(p: &str) -> Option<globset::GlobMatcher> {
            globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .ok()
                .map(|g| g.compile_matcher())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// A path both globs match means the patterns intersect.
            #[test]
            fn never_misses_a_common_path(a in pattern(), b in pattern(), p in path()) {
                if let (Some(ma), Some(mb)) = (matcher(&a), matcher(&b))
                    && ma.is_match(&p) && mb.is_match(&p)
                {
                    prop_assert!(intersect(&Pattern::glob(&a), &Pattern::glob(&b)),
                        "`{}` and `{}` both match `{}`", a, b, p);
                }
            }

            /// A path a glob matches is matched by its pattern (against the path itself).
            #[test]
            fn a_glob_matches_what_globset_matches(a in pattern(), p in path()) {
                if let Some(m) = matcher(&a) && m.is_match(&p) {
                    prop_assert!(intersect(&Pattern::glob(&a), &Pattern::file(&p)),
                        "`{}` matches `{}`", a, p);
                }
            }

            /// A shard template hole matches any key, slashes included.
            #[test]
            fn templates_cover_every_key(a in pattern(), key in path()) {
                let path = format!("out/{key}.o");
                if let Some(m) = matcher(&a) && m.is_match(&path) {
                    let t = Pattern::template("out/{shard.key}.o", &["{shard.key}"]);
                    prop_assert!(intersect(&Pattern::glob(&a), &t), "`{}` matches `{}`", a, path);
                }
            }
        }
    }
}
