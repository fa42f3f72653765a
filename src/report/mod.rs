//! What `orch report` and `orch build --timings` write about one run: its timeline
//! from the run's events ([`timeline`]), its critical path ([`critical`]), one
//! self-contained HTML page ([`html`]) and a Chrome trace ([`trace`]).

pub mod critical;
pub mod html;
pub mod timeline;
pub mod trace;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::model::Project;
use timeline::Timeline;

/// Instance name → the instances it depends on (`needs`, `after`, implied), every
/// instance of the project a key.
pub type Upstreams = BTreeMap<String, BTreeSet<String>>;

/// The dependencies of `project`'s instances, by name.
pub fn upstreams_of(project: &Project) -> Upstreams {
    let name = |i: usize| project.instances.get(i).map(|u| u.name.clone());
    project
        .instances
        .iter()
        .map(|inst| {
            let ups = inst.deps.iter().filter_map(|d| name(d.upstream)).collect();
            (inst.name.clone(), ups)
        })
        .collect()
}

/// A run's timeline with its critical path.
#[derive(Clone, Debug)]
pub struct Report {
    /// What happened.
    pub timeline: Timeline,
    /// The critical path, first instance first.
    pub critical: Vec<String>,
    /// Said on the page when the dependencies were not all known.
    pub graph_note: Option<String>,
    /// The instances of the critical path, for lookups.
    on_path: BTreeSet<String>,
}

impl Report {
    /// The report of `timeline`, its critical path through `upstreams` (the project's
    /// dependencies as the Orchfile declares them now; None when it cannot be loaded).
    pub fn new(timeline: Timeline, upstreams: Option<&Upstreams>) -> Report {
        let mut weight: BTreeMap<String, u64> = BTreeMap::new();
        let mut edges: Upstreams = timeline.links.clone();
        if let Some(ups) = upstreams {
            // Instances that did not run in this run still link those that did.
            for (n, us) in ups {
                weight.insert(n.clone(), 0);
                edges
                    .entry(n.clone())
                    .or_default()
                    .extend(us.iter().cloned());
            }
        }
        let unknown = timeline
            .items
            .keys()
            .filter(|n| upstreams.is_some_and(|u| !u.contains_key(*n)))
            .count();
        for item in timeline.items.values() {
            weight.insert(item.name.clone(), item.duration_ms());
        }
        let critical = critical::longest_chain(&weight, &edges);
        let graph_note = match upstreams {
            None => Some(
                "The Orchfile cannot be loaded now, so the dependencies between instances are \
                 unknown: the critical path is the longest single instance."
                    .to_owned(),
            ),
            Some(_) if unknown > 0 => Some(format!(
                "{unknown} {} of this run {} not in the Orchfile any more: the critical path \
                 follows only the dependencies the Orchfile declares now.",
                if unknown == 1 {
                    "instance"
                } else {
                    "instances"
                },
                if unknown == 1 { "is" } else { "are" },
            )),
            Some(_) => None,
        };
        Report {
            timeline,
            on_path: critical.iter().cloned().collect(),
            critical,
            graph_note,
        }
    }

    /// Whether `instance` is on the critical path.
    pub fn is_critical(&self, instance: &str) -> bool {
        self.on_path.contains(instance)
    }
}

/// Writes the page of `report` to `html` and its trace to `trace`, creating their
/// folders. Each file is written whole and renamed into place, so a symlink already
/// there is replaced, never followed; a path inside the project `root` (the defaults,
/// under `.orch/runs/`) is resolved beneath it, so a planted symlinked folder cannot lead
/// the write outside the project.
pub fn write(report: &Report, root: &Path, html: &Path, trace: &Path) -> std::io::Result<()> {
    let mut json = serde_json::to_string(&trace::trace(report)).map_err(std::io::Error::other)?;
    json.push('\n');
    let page = html::page(report);
    let beneath = crate::fs::Beneath::open(root)?;
    for (path, bytes) in [(html, page.as_bytes()), (trace, json.as_bytes())] {
        let path = std::path::absolute(path)?;
        match path.strip_prefix(root) {
            Ok(rel) => beneath
                .replace_with(rel, |f| std::io::Write::write_all(f, bytes))
                .map_err(std::io::Error::other)?,
            Err(_) => crate::events::summary::write_atomically(&path, bytes)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = r#"{"type":"run_started","ts":"2026-01-01T00:00:00.000Z"}
{"type":"instance_started","instance":"a","ts":"2026-01-01T00:00:00.000Z","worker":0}
{"type":"instance_completed","instance":"a","ts":"2026-01-01T00:00:01.000Z"}
{"type":"instance_started","instance":"slow","ts":"2026-01-01T00:00:00.000Z","worker":1}
{"type":"instance_completed","instance":"slow","ts":"2026-01-01T00:00:01.500Z"}
{"type":"instance_started","instance":"c","ts":"2026-01-01T00:00:01.000Z","worker":0}
{"type":"instance_completed","instance":"c","ts":"2026-01-01T00:00:02.000Z"}
"#;

    fn ups(pairs: &[(&str, &[&str])]) -> Upstreams {
        pairs
            .iter()
            .map(|(n, us)| (n.to_string(), us.iter().map(|u| u.to_string()).collect()))
            .collect()
    }

    #[test]
    fn the_path_follows_the_orchfile_through_instances_that_did_not_run() {
        // c needs b (up to date, no event), which needs a: a and c make 2 s, more than
        // `slow` alone.
        let g = ups(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("slow", &[])]);
        let r = Report::new(Timeline::from_events("r", RUN.as_bytes()), Some(&g));
        assert_eq!(r.critical, ["a", "b", "c"]);
        assert_eq!(r.graph_note, None);
    }

    #[test]
    fn without_the_orchfile_the_longest_instance_stands_alone() {
        let r = Report::new(Timeline::from_events("r", RUN.as_bytes()), None);
        assert_eq!(r.critical, ["slow"]);
        assert!(r.graph_note.is_some());
        let changed = ups(&[("a", &[]), ("c", &["a"])]);
        let r = Report::new(Timeline::from_events("r", RUN.as_bytes()), Some(&changed));
        assert_eq!(r.critical, ["a", "c"]);
        assert!(
            r.graph_note
                .as_deref()
                .is_some_and(|n| n.starts_with("1 instance "))
        );
    }
}
