//! The scheduling core's rules, driven by a fake backend that runs nothing: jobs end
//! when and how each test says.

use super::*;
use crate::{graph, model};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn load(text: &str) -> Result<(tempfile::TempDir, Project, Graph), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("Orchfile.toml"), text)?;
    let raw =
        crate::orchfile::load(&dir.path().join("Orchfile.toml")).map_err(|e| format!("{e:?}"))?;
    let project = model::validate(raw).map_err(|e| format!("{e:?}"))?;
    let graph = graph::build(&project).map_err(|e| format!("{e:?}"))?;
    Ok((dir, project, graph))
}

/// `[phase.NAME] run = "true"` for each name, then `extra`.
fn phases(names: &[&str], extra: &str) -> String {
    let mut text: String = names
        .iter()
        .map(|n| format!("[phase.{n}]\nrun = \"true\"\n"))
        .collect();
    text.push_str(extra);
    text
}

fn idx(p: &Project, name: &str) -> usize {
    p.instances
        .iter()
        .position(|i| i.name == name)
        .unwrap_or(usize::MAX)
}

fn all(p: &Project) -> BTreeSet<usize> {
    (0..p.instances.len()).collect()
}

/// A backend that runs nothing: it holds the jobs the core starts, remembers the most
/// it held at once on each backend, and ends them when the test says.
#[derive(Default)]
struct Fake {
    running: Vec<Start>,
    started: Vec<Start>,
    peak: Vec<usize>,
}

impl Fake {
    /// Starts everything the core lets start. An instance for which `settle` says how it
    /// ends without a job (up to date, restored, blocked) ends at once, as the build does.
    fn start_all(&mut self, core: &mut Core, settle: &dyn Fn(&Core, usize) -> Option<End>) {
        while let Some(start) = core.next() {
            match start {
                Start::Instance(i) => {
                    if let Some(end) = core.blocked(i).map(|_| End::Blocked).or(settle(core, i)) {
                        core.end(i, end);
                        continue;
                    }
                    core.started(i, false);
                }
                Start::Shard(i, _) => core.started(i, true),
            }
            self.running.push(start);
            self.started.push(start);
            let b = match start {
                Start::Instance(i) | Start::Shard(i, _) => core.backend_of(i),
            };
            let now = self
                .running
                .iter()
                .filter(|s| matches!(s, Start::Instance(i) | Start::Shard(i, _) if core.backend_of(*i) == b))
                .count();
            if self.peak.len() <= b {
                self.peak.resize(b + 1, 0);
            }
            self.peak[b] = self.peak[b].max(now);
        }
    }

    /// Ends the running job `start`; a whole instance's job ends the instance as `end`.
    fn finish(&mut self, core: &mut Core, start: Start, end: End) {
        self.running.retain(|s| *s != start);
        match start {
            Start::Instance(i) => {
                core.job_ended(i, false);
                core.end(i, end);
            }
            Start::Shard(i, _) => {
                core.job_ended(i, true);
                if end == End::Failed {
                    core.failed();
                }
            }
        }
    }

    /// Runs everything to the end, each job ending as `end` says, oldest first.
    fn drain(&mut self, core: &mut Core, end: &dyn Fn(usize) -> End) {
        self.start_all(core, &|_, _| None);
        while let Some(&start) = self.running.first() {
            let i = match start {
                Start::Instance(i) | Start::Shard(i, _) => i,
            };
            self.finish(core, start, end(i));
            self.start_all(core, &|_, _| None);
        }
    }
}

fn core(p: &Project, g: &Graph, capacity: Vec<usize>, keep_going: bool) -> Core {
    Core::new(p, g, &all(p), Vec::new(), Vec::new(), capacity, keep_going)
}

#[test]
fn nothing_starts_before_its_hard_and_soft_upstreams_end() -> TestResult {
    let (_d, p, g) = load(&phases(
        &["a"],
        "[phase.b]\nrun = \"true\"\nneeds = [\"a\"]\n[phase.c]\nrun = \"true\"\nafter = [\"b\"]\n",
    ))?;
    let mut c = core(&p, &g, vec![4], false);
    let mut fake = Fake::default();
    fake.start_all(&mut c, &|_, _| None);
    assert_eq!(fake.running, [Start::Instance(idx(&p, "a"))]);
    fake.finish(&mut c, Start::Instance(idx(&p, "a")), End::Succeeded);
    fake.start_all(&mut c, &|_, _| None);
    assert_eq!(fake.running, [Start::Instance(idx(&p, "b"))]);
    fake.finish(&mut c, Start::Instance(idx(&p, "b")), End::Succeeded);
    fake.start_all(&mut c, &|_, _| None);
    assert_eq!(fake.running, [Start::Instance(idx(&p, "c"))]);
    Ok(())
}

#[test]
fn ready_instances_start_highest_priority_first() -> TestResult {
    let (_d, p, g) = load(&phases(&["a", "b", "c"], ""))?;
    let mut prio = vec![0; p.instances.len()];
    prio[idx(&p, "c")] = 9;
    prio[idx(&p, "b")] = 5;
    let mut c = Core::new(&p, &g, &all(&p), prio, Vec::new(), vec![1], false);
    let mut fake = Fake::default();
    fake.drain(&mut c, &|_| End::Succeeded);
    let order: Vec<Start> = ["c", "b", "a"]
        .iter()
        .map(|n| Start::Instance(idx(&p, n)))
        .collect();
    assert_eq!(fake.started, order);
    Ok(())
}

#[test]
fn a_backend_never_runs_more_than_its_capacity() -> TestResult {
    let (_d, p, g) = load(&phases(&["a", "b", "c", "d", "e"], ""))?;
    let mut c = core(&p, &g, vec![2], false);
    let mut fake = Fake::default();
    fake.start_all(&mut c, &|_, _| None);
    assert_eq!(fake.running.len(), 2);
    assert_eq!(c.next(), None, "a full backend starts nothing more");
    fake.drain(&mut c, &|_| End::Succeeded);
    assert_eq!(fake.started.len(), 5);
    assert_eq!(fake.peak, [2]);
    Ok(())
}

#[test]
fn an_instance_waiting_for_a_full_backend_does_not_hold_up_another() -> TestResult {
    let (_d, p, g) = load(&phases(&["x1", "x2", "y"], ""))?;
    let mut backend = vec![0; p.instances.len()];
    backend[idx(&p, "x1")] = 1;
    backend[idx(&p, "x2")] = 1;
    // x2 comes before y, yet its backend is full once x1 runs.
    let mut prio = vec![0; p.instances.len()];
    prio[idx(&p, "x1")] = 9;
    prio[idx(&p, "x2")] = 8;
    let mut c = Core::new(&p, &g, &all(&p), prio, backend, vec![4, 1], false);
    let mut fake = Fake::default();
    fake.start_all(&mut c, &|_, _| None);
    assert_eq!(
        fake.running,
        [
            Start::Instance(idx(&p, "x1")),
            Start::Instance(idx(&p, "y"))
        ]
    );
    fake.finish(&mut c, Start::Instance(idx(&p, "x1")), End::Succeeded);
    fake.start_all(&mut c, &|_, _| None);
    assert!(fake.running.contains(&Start::Instance(idx(&p, "x2"))));
    assert_eq!(fake.peak, [1, 1]);
    Ok(())
}

#[test]
fn waiting_shards_start_first_round_robin_under_each_cap() -> TestResult {
    let (_d, p, g) = load(&phases(&["i", "j", "k"], ""))?;
    let (i, j, k) = (idx(&p, "i"), idx(&p, "j"), idx(&p, "k"));
    let mut prio = vec![0; p.instances.len()];
    prio[i] = 9;
    prio[j] = 8;
    let mut c = Core::new(&p, &g, &all(&p), prio, Vec::new(), vec![8], false);
    // The build plans an instance's shards when it is told to start it.
    assert_eq!(c.next(), Some(Start::Instance(i)));
    c.queue_shards(i, VecDeque::from([0, 1, 2]), 2);
    assert_eq!(c.next(), Some(Start::Shard(i, 0)));
    c.started(i, true);
    assert_eq!(c.next(), Some(Start::Shard(i, 1)));
    c.started(i, true);
    // i is at its cap of 2: the next ready instance comes.
    assert_eq!(c.next(), Some(Start::Instance(j)));
    c.queue_shards(j, VecDeque::from([0, 1]), 2);
    assert_eq!(c.next(), Some(Start::Shard(j, 0)));
    c.started(j, true);
    assert_eq!(c.next(), Some(Start::Shard(j, 1)));
    c.started(j, true);
    assert_eq!(c.next(), Some(Start::Instance(k)));
    c.started(k, false);
    assert_eq!(c.next(), None);
    // A shard of i ends: i's last shard goes before anything else.
    c.job_ended(i, true);
    assert_eq!(c.next(), Some(Start::Shard(i, 2)));
    c.started(i, true);
    assert!(!c.shards_settled(i));
    c.job_ended(i, true);
    c.job_ended(i, true);
    assert!(c.shards_settled(i));
    assert_eq!(c.shards_waiting(i), 0);
    Ok(())
}

#[test]
fn shards_count_against_their_backend() -> TestResult {
    let (_d, p, g) = load(&phases(&["i", "k"], ""))?;
    let (i, k) = (idx(&p, "i"), idx(&p, "k"));
    let mut prio = vec![0; p.instances.len()];
    prio[i] = 9;
    let mut c = Core::new(&p, &g, &all(&p), prio, Vec::new(), vec![2], false);
    assert_eq!(c.next(), Some(Start::Instance(i)));
    c.queue_shards(i, VecDeque::from([0, 1, 2, 3]), 8);
    for s in 0..2 {
        assert_eq!(c.next(), Some(Start::Shard(i, s)));
        c.started(i, true);
    }
    assert_eq!(c.next(), None, "two shards fill a backend of two");
    c.job_ended(i, true);
    assert_eq!(c.next(), Some(Start::Shard(i, 2)));
    assert_eq!(c.running(), 1);
    c.started(i, true);
    // Full again: the other ready instance waits for a slot as the shards do.
    assert_eq!(c.next(), None);
    c.job_ended(i, true);
    c.job_ended(i, true);
    assert_eq!(c.next(), Some(Start::Shard(i, 3)));
    c.started(i, true);
    assert_eq!(c.next(), Some(Start::Instance(k)));
    Ok(())
}

#[test]
fn failed_or_blocked_hard_upstreams_block_and_soft_ones_do_not() -> TestResult {
    let (_d, p, g) = load(&phases(
        &["a", "z"],
        "[phase.b]\nrun = \"true\"\nneeds = [\"a\", \"z\"]\n\
         [phase.c]\nrun = \"true\"\nafter = [\"a\"]\n\
         [phase.d]\nrun = \"true\"\nneeds = [\"b\"]\n\
         [phase.e]\nrun = \"true\"\nneeds = [\"d\", \"a\"]\n",
    ))?;
    let name = |i: usize| p.instances[i].name.clone();
    let mut c = core(&p, &g, vec![8], true);
    let mut fake = Fake::default();
    fake.drain(&mut c, &|i| {
        if name(i) == "a" {
            End::Failed
        } else {
            End::Succeeded
        }
    });
    let (a, b, cc, d, e) = (
        idx(&p, "a"),
        idx(&p, "b"),
        idx(&p, "c"),
        idx(&p, "d"),
        idx(&p, "e"),
    );
    assert_eq!(c.ended(b), Some(End::Blocked));
    assert_eq!(
        c.blocked(b),
        Some(Blocked {
            reason: BlockReason::UpstreamFailed,
            by: vec![a]
        })
    );
    assert_eq!(
        c.blocked(d),
        Some(Blocked {
            reason: BlockReason::UpstreamBlocked,
            by: vec![b]
        })
    );
    // Failed upstreams are named before blocked ones, whatever the declaration order.
    assert_eq!(
        c.blocked(e),
        Some(Blocked {
            reason: BlockReason::UpstreamFailed,
            by: vec![a, d]
        })
    );
    assert_eq!(c.blocked(cc), None);
    assert_eq!(c.soft_unmet(cc), [(a, End::Failed)]);
    assert_eq!(c.ended(cc), Some(End::Succeeded));
    Ok(())
}

#[test]
fn fail_fast_starts_nothing_new_and_blocks_what_never_started() -> TestResult {
    let (_d, p, g) = load(&phases(
        &["a", "b", "c"],
        "[phase.d]\nrun = \"true\"\nneeds = [\"a\"]\n",
    ))?;
    let (a, b, cc, d) = (idx(&p, "a"), idx(&p, "b"), idx(&p, "c"), idx(&p, "d"));
    let mut c = core(&p, &g, vec![2], false);
    let mut fake = Fake::default();
    fake.start_all(&mut c, &|_, _| None);
    assert_eq!(fake.running, [Start::Instance(a), Start::Instance(b)]);
    fake.finish(&mut c, Start::Instance(a), End::Failed);
    assert_eq!(c.next(), None, "nothing new starts after a failure");
    // What runs still ends normally.
    fake.finish(&mut c, Start::Instance(b), End::Succeeded);
    assert_eq!(c.running(), 0);
    assert_eq!(
        c.block_unstarted(),
        [
            (
                cc,
                Blocked {
                    reason: BlockReason::StoppedAfterFailure,
                    by: vec![]
                }
            ),
            (
                d,
                Blocked {
                    reason: BlockReason::UpstreamFailed,
                    by: vec![a]
                }
            ),
        ]
    );
    Ok(())
}

#[test]
fn keep_going_runs_everything_not_blocked() -> TestResult {
    let (_d, p, g) = load(&phases(
        &["a", "b", "c"],
        "[phase.d]\nrun = \"true\"\nneeds = [\"a\"]\n[phase.e]\nrun = \"true\"\nneeds = [\"b\"]\n",
    ))?;
    let a = idx(&p, "a");
    let mut c = core(&p, &g, vec![1], true);
    let mut fake = Fake::default();
    fake.drain(&mut c, &|i| {
        if i == a { End::Failed } else { End::Succeeded }
    });
    let ran: BTreeSet<String> = fake
        .started
        .iter()
        .filter_map(|s| match s {
            Start::Instance(i) => Some(p.instances[*i].name.clone()),
            Start::Shard(..) => None,
        })
        .collect();
    assert_eq!(ran, ["a", "b", "c", "e"].map(String::from).into());
    assert_eq!(c.ended(idx(&p, "d")), Some(End::Blocked));
    assert!(c.block_unstarted().is_empty());
    Ok(())
}

#[test]
fn an_interrupt_starts_nothing_more_and_blocks_the_rest_as_interrupted() -> TestResult {
    let (_d, p, g) = load(&phases(&["a", "b", "c"], ""))?;
    let mut c = core(&p, &g, vec![1], true);
    let mut fake = Fake::default();
    fake.start_all(&mut c, &|_, _| None);
    c.interrupt();
    assert_eq!(c.next(), None);
    let reasons: Vec<BlockReason> = c
        .block_unstarted()
        .into_iter()
        .map(|(_, b)| b.reason)
        .collect();
    assert_eq!(
        reasons,
        [BlockReason::Interrupted, BlockReason::Interrupted]
    );
    Ok(())
}

#[test]
fn a_failed_shard_settles_its_instance_once_its_running_shards_end() -> TestResult {
    let (_d, p, g) = load(&phases(&["i"], ""))?;
    let i = idx(&p, "i");
    let mut c = core(&p, &g, vec![4], false);
    assert_eq!(c.next(), Some(Start::Instance(i)));
    c.queue_shards(i, VecDeque::from([0, 1, 2, 3]), 2);
    let mut fake = Fake::default();
    fake.start_all(&mut c, &|_, _| None);
    assert_eq!(fake.running, [Start::Shard(i, 0), Start::Shard(i, 1)]);
    fake.finish(&mut c, Start::Shard(i, 0), End::Failed);
    assert!(!c.shards_settled(i), "shard 1 still runs");
    assert_eq!(c.next(), None);
    fake.finish(&mut c, Start::Shard(i, 1), End::Succeeded);
    assert!(c.shards_settled(i));
    assert_eq!(c.shards_waiting(i), 2);
    Ok(())
}

#[test]
fn an_instance_ends_once() -> TestResult {
    let (_d, p, g) = load(&phases(
        &["a", "b"],
        "[phase.c]\nrun = \"true\"\nneeds = [\"a\", \"b\"]\n",
    ))?;
    let (a, b, cc) = (idx(&p, "a"), idx(&p, "b"), idx(&p, "c"));
    let mut c = core(&p, &g, vec![4], false);
    assert_eq!(c.next(), Some(Start::Instance(a)));
    assert_eq!(c.next(), Some(Start::Instance(b)));
    c.end(a, End::Succeeded);
    c.end(a, End::Succeeded);
    assert_eq!(c.next(), None, "c still waits for b");
    c.end(b, End::Succeeded);
    assert_eq!(c.next(), Some(Start::Instance(cc)));
    Ok(())
}

#[test]
fn an_instance_behind_one_that_never_started_is_blocked_by_it() -> TestResult {
    let (_d, p, g) = load(&phases(
        &["a", "b"],
        "[phase.c]\nrun = \"true\"\nneeds = [\"b\"]\n",
    ))?;
    let (a, b, cc) = (idx(&p, "a"), idx(&p, "b"), idx(&p, "c"));
    let mut prio = vec![0; p.instances.len()];
    prio[a] = 9;
    let mut c = Core::new(&p, &g, &all(&p), prio, Vec::new(), vec![1], false);
    let mut fake = Fake::default();
    fake.start_all(&mut c, &|_, _| None);
    fake.finish(&mut c, Start::Instance(a), End::Failed);
    assert_eq!(
        c.block_unstarted(),
        [
            (
                b,
                Blocked {
                    reason: BlockReason::StoppedAfterFailure,
                    by: vec![]
                }
            ),
            (
                cc,
                Blocked {
                    reason: BlockReason::UpstreamBlocked,
                    by: vec![b]
                }
            ),
        ]
    );
    Ok(())
}
