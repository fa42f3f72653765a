//! Generated files read without a dependency: a depfile that lists another phase's
//! output, when that phase is not upstream of the reader, names a race (the reader may run
//! before or while the file is written) that orch cannot order after the fact. It is the
//! generated-header case that ninja's order-only dependencies exist for; orch says which
//! dependency to declare.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::exec::shards::matches_template;
use crate::graph;
use crate::model::Project;

/// Who declares which outputs, indexed for many lookups.
pub struct Producers {
    /// Exact file and directory outputs → the instance declaring them.
    exact: HashMap<String, usize>,
    /// Directory outputs, for paths beneath them.
    dirs: Vec<(String, usize)>,
    /// `merge = "none"` templates.
    templates: Vec<(String, usize)>,
    /// Upstream closure of each instance asked about so far.
    upstream: HashMap<usize, BTreeSet<usize>>,
    /// (reader, path) pairs already reported in this build.
    said: HashSet<(usize, String)>,
}

impl Producers {
    /// Indexes every declared output of the project.
    pub fn new(project: &Project) -> Producers {
        let mut exact = HashMap::new();
        let mut dirs = Vec::new();
        let mut templates = Vec::new();
        for (i, inst) in project.instances.iter().enumerate() {
            for o in &inst.outputs {
                exact.insert(o.path.clone(), i);
                if o.dir {
                    dirs.push((o.path.clone(), i));
                }
            }
            for o in &inst.shard_outputs {
                templates.push((o.path.clone(), i));
            }
        }
        Producers {
            exact,
            dirs,
            templates,
            upstream: HashMap::new(),
            said: HashSet::new(),
        }
    }

    /// The instance that declares `path` as an output, if any.
    fn producer(&self, path: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(path) {
            return Some(i);
        }
        let beneath = |dir: &str| {
            path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
        };
        self.dirs
            .iter()
            .find(|(d, _)| beneath(d))
            .or_else(|| {
                self.templates
                    .iter()
                    .find(|(t, _)| matches_template(t, path))
            })
            .map(|&(_, i)| i)
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
            let Some(p) = self.producer(path) else {
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
