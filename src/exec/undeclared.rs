//! Generated files read without a dependency: a depfile that lists another phase's
//! output, when that phase is not upstream of the reader, names a race (the reader may run
//! before or while the file is written) that orch cannot order after the fact. It is the
//! generated-header case that ninja's order-only dependencies exist for; orch says which
//! dependency to declare.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::graph;
use crate::graph::targets::OutputIndex;
use crate::model::Project;

/// Who declares which outputs, and which of them a reader already waits for.
pub struct Producers {
    /// Every declared output.
    index: OutputIndex,
    /// Upstream closure of each instance asked about so far.
    upstream: HashMap<usize, BTreeSet<usize>>,
    /// (reader, path) pairs already reported in this build.
    said: HashSet<(usize, String)>,
}

impl Producers {
    /// Indexes every declared output of the project.
    pub fn new(project: &Project) -> Producers {
        Producers {
            index: OutputIndex::new(project),
            upstream: HashMap::new(),
            said: HashSet::new(),
        }
    }

    /// The outputs of other phases among `reader`'s discovered files that no dependency
    /// orders before it, each with the instance that writes it; each pair once per build.
    pub fn unordered<'a>(
        &mut self,
        project: &Project,
        reader: usize,
        discovered: impl IntoIterator<Item = &'a String>,
    ) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for path in discovered {
            let Some(p) = self.index.producers(path).into_iter().next() else {
                continue;
            };
            if project.instances[p].phase == project.instances[reader].phase {
                continue;
            }
            let ups = self
                .upstream
                .entry(reader)
                .or_insert_with(|| graph::with_upstream(project, &BTreeSet::from([reader])));
            if ups.contains(&p) || !self.said.insert((reader, path.clone())) {
                continue;
            }
            out.push((path.clone(), p));
        }
        out
    }
}

/// The warning for a generated file read without a dependency on its producer.
pub fn warning(reader: &str, path: &str, producer_phase: &str) -> String {
    format!(
        "warning: {reader}: its depfile lists `{path}`, which phase `{producer_phase}` writes, but nothing makes it wait for `{producer_phase}`: it may read the file before or while it is written; add `needs = [\"{producer_phase}\"]` or list `{path}` in `inputs`"
    )
}

/// Warns about files instance `i`'s depfile listed that another phase writes without any
/// dependency ordering the two; `producers` is made on first use.
pub(super) fn check_discovered(
    producers: &mut Option<Producers>,
    project: &crate::model::Project,
    i: usize,
    shown: &str,
    discovered: &crate::plan::Discovered,
) {
    if discovered.is_empty() {
        return;
    }
    let producers = producers.get_or_insert_with(|| Producers::new(project));
    for (path, p) in producers.unordered(project, i, discovered.keys()) {
        crate::say!("{}", warning(shown, &path, &project.instances[p].phase));
    }
}
