//! The executor with a fake runner: the exact commands run, in order, and the events
//! emitted, without starting processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{ExecOptions, Exit, Job, Runner, execute};
use crate::events::EventLog;
use crate::events::sink::Memory;
use crate::graph;
use crate::model::{self, Project};
use crate::plan::plan_static;
use crate::snapshot::Snapshot;
use crate::store::{Layout, Store};

/// Records each job and plays a scripted result: instances named in `fail` exit 3, the
/// others write `name\n` to each output they are told about.
struct Fake {
    root: PathBuf,
    ran: Mutex<Vec<(String, String)>>,
    fail: BTreeSet<String>,
    writes: BTreeMap<String, Vec<String>>,
}

impl Runner for Fake {
    fn run(&self, job: &Job) -> Exit {
        if let Ok(mut r) = self.ran.lock() {
            r.push((job.name.clone(), job.command.clone()));
        }
        if self.fail.contains(&job.name) {
            return Exit::Code(3);
        }
        for out in self.writes.get(&job.name).into_iter().flatten() {
            let _ = std::fs::write(self.root.join(out), format!("{}\n", job.name));
        }
        Exit::Success
    }
    fn interrupt_all(&self) {}
}

const DIAMOND: &str = r#"
[phase.a]
run = "make a"
inputs = ["src.txt"]
outputs = ["out/a"]
[phase.b]
run = "make b"
needs = ["a"]
outputs = ["out/b"]
[phase.c]
run = "make c"
needs = ["a"]
outputs = ["out/c"]
[phase.d]
run = "make d"
needs = ["b", "c"]
outputs = ["out/d"]
"#;

fn project(dir: &Path, text: &str) -> Project {
    std::fs::write(dir.join("Orchfile.toml"), text).unwrap();
    if !dir.join("src.txt").exists() {
        std::fs::write(dir.join("src.txt"), "x").unwrap();
    }
    let raw = crate::orchfile::load(&dir.join("Orchfile.toml")).unwrap();
    model::validate(raw).unwrap()
}

/// Builds everything with one job; returns (commands run, event types with instances).
fn build(dir: &Path, fail: &[&str], keep_going: bool) -> (Vec<String>, Vec<String>) {
    let p = project(dir, DIAMOND);
    let g = graph::build(&p).unwrap();
    let layout = Layout::new(&p.root);
    let (mut store, _) = Store::open(&layout).unwrap();
    let selected: BTreeSet<usize> = (0..p.instances.len()).collect();
    let snap = Snapshot::take(&p, &g, &selected, BTreeSet::new(), &store).unwrap();
    let plan = plan_static(&snap.order, &snap);
    let fake = Arc::new(Fake {
        root: p.root.clone(),
        ran: Mutex::new(Vec::new()),
        fail: fail.iter().map(|s| s.to_string()).collect(),
        writes: ["a", "b", "c", "d"]
            .iter()
            .map(|n| (n.to_string(), vec![format!("out/{n}")]))
            .collect(),
    });
    let memory = Memory::default();
    let mut events = EventLog::new("test".into());
    events.add(Box::new(memory.clone()));
    let opts = ExecOptions {
        stream: None,
        cache: None,
        jobs: 1,
        keep_going,
        run_id: "test".into(),
        executor: None,
        shuffle: None,
    };
    execute(
        &snap,
        &plan,
        &selected,
        &mut store,
        &layout,
        fake.clone(),
        &mut events,
        &opts,
    )
    .unwrap();
    let ran = fake
        .ran
        .lock()
        .unwrap()
        .iter()
        .map(|(n, c)| format!("{n}: {c}"))
        .collect();
    let evs = memory
        .events()
        .iter()
        .filter_map(|e| {
            let v = serde_json::to_value(e).ok()?;
            let ty = v["type"].as_str()?.to_owned();
            Some(match e.instance.as_deref() {
                Some(i) => format!("{ty} {i}"),
                None => ty,
            })
        })
        .filter(|t| t != "progress")
        .collect();
    (ran, evs)
}

#[test]
fn diamond_runs_in_order_then_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let (ran, events) = build(dir.path(), &[], false);
    assert_eq!(ran, ["a: make a", "b: make b", "c: make c", "d: make d"]);
    assert_eq!(
        events,
        [
            "instance_invalidated a",
            "instance_started a",
            "instance_completed a",
            "instance_invalidated b",
            "instance_started b",
            "instance_completed b",
            "instance_invalidated c",
            "instance_started c",
            "instance_completed c",
            "instance_invalidated d",
            "instance_started d",
            "instance_completed d",
            "run_completed",
        ]
    );
    let (ran, events) = build(dir.path(), &[], false);
    assert!(ran.is_empty(), "{ran:?}");
    // Up to date before the build: no event each (`plan_ready` counts them).
    assert_eq!(events, ["run_completed"]);
}

#[test]
fn failure_blocks_downstream_and_stops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (ran, events) = build(dir.path(), &["b"], false);
    assert_eq!(ran, ["a: make a", "b: make b"]);
    assert_eq!(
        &events[3..],
        [
            "instance_invalidated b",
            "instance_started b",
            "instance_failed b",
            "instance_blocked c",
            "instance_blocked d",
            "run_failed"
        ]
    );
}

#[test]
fn keep_going_builds_what_is_not_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let (ran, events) = build(dir.path(), &["b"], true);
    assert_eq!(ran, ["a: make a", "b: make b", "c: make c"]);
    assert!(events.contains(&"instance_blocked d".to_owned()));
    assert!(events.contains(&"instance_completed c".to_owned()));
}

#[test]
fn early_cutoff_skips_downstream_when_outputs_are_identical() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &[], false);
    // A new input content, but the fake writes the same output bytes for `a`.
    std::fs::write(dir.path().join("src.txt"), "y").unwrap();
    let (ran, events) = build(dir.path(), &[], false);
    assert_eq!(ran, ["a: make a"]);
    assert!(
        events.contains(&"instance_skipped b".to_owned()),
        "{events:?}"
    );
    assert!(events.contains(&"instance_skipped d".to_owned()));
}
