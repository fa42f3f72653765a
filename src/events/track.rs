//! What the plain and live displays remember of a run from its events, so both count,
//! name and explain things in the same words: the `[done/total]` counter of instances,
//! each sharded instance's shard progress, the command each instance ran, and why a
//! blocked instance did not run, traced back to the failure that caused it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::human::{FailedShards, log_block, shard_parent};
use super::shard_name::escape_key;
use super::{BlockReason, ShardRef};

/// Most root failures a blocked line names before counting the rest.
const MAX_ROOTS_LISTED: usize = 3;

/// The shards of one sharded instance.
#[derive(Clone, Copy, Debug, Default)]
struct Shards {
    /// Shards in all.
    count: usize,
    /// Shards that run.
    stale: usize,
    /// Shards that finished (ok or failed).
    done: usize,
}

/// Why a blocked instance did not run, traced to its root.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cause {
    /// Failed instances upstream.
    Failed(BTreeSet<String>),
    /// The build was interrupted before it started.
    Interrupted,
    /// The build stopped after a failure (no `-k`) before it started.
    Stopped,
}

/// A display's memory of the run.
#[derive(Debug, Default)]
pub struct Track {
    done: usize,
    total: usize,
    shards: BTreeMap<String, Shards>,
    /// Instances that started a command (their own, or one of their shards).
    started: BTreeSet<String>,
    /// The last command each instance or shard started.
    commands: BTreeMap<String, String>,
    /// Instances and shards whose output `-v` printed as it came.
    streamed: BTreeSet<String>,
    causes: BTreeMap<String, Cause>,
    /// Instances that failed (not shards).
    failed: BTreeSet<String>,
    /// Failed shards by instance, as labels by index, for the closing lines.
    pub failed_shards: FailedShards,
    /// Logs printed already.
    printed: BTreeSet<String>,
}

impl Track {
    /// Instances to run, from `plan_ready`: fixed for the whole run.
    pub fn plan(&mut self, stale: usize) {
        self.total = stale;
    }

    /// Instances finished and to run, as the overall counter shows them.
    pub fn position(&self) -> (usize, usize) {
        (self.done, self.total.max(self.done))
    }

    /// The `[k/N]` of the next instance that finished (ran, failed, restored or cut off).
    pub fn counter(&mut self) -> String {
        self.done += 1;
        let (done, total) = self.position();
        format!("[{done}/{total}]")
    }

    /// Blank space as wide as the counter, for lines that finish no instance (a shard,
    /// a start or still-running line), so the counter column stays honest and aligned.
    pub fn indent(&self) -> String {
        let total = self.total.max(self.done);
        " ".repeat(format!("[{total}/{total}]").len())
    }

    /// `name` was split into `count` shards, `stale` of which run.
    pub fn shard_plan(&mut self, name: &str, count: usize, stale: usize) {
        self.shards.insert(
            name.to_owned(),
            Shards {
                count,
                stale,
                done: 0,
            },
        );
    }

    /// An instance or shard started `command`; `streamed` when `-v` prints its output.
    pub fn started(&mut self, name: &str, shard: Option<&ShardRef>, command: &str, streamed: bool) {
        let instance = instance_of(name, shard);
        self.started.insert(instance.to_owned());
        self.commands.insert(name.to_owned(), command.to_owned());
        if streamed {
            self.streamed.insert(name.to_owned());
        } else {
            self.streamed.remove(name);
        }
    }

    /// A shard finished: its instance's progress, ` (4/14 shards)`.
    pub fn shard_finished(&mut self, name: &str) -> String {
        let Some(parent) = shard_parent(name) else {
            return String::new();
        };
        match self.shards.get_mut(parent) {
            Some(s) => {
                s.done += 1;
                format!(" ({}/{} {})", s.done, s.stale, plural(s.stale, "shard"))
            }
            None => String::new(),
        }
    }

    /// Shard progress of a running sharded instance, `4/14 shards`, if it is one.
    pub fn shard_progress(&self, name: &str) -> Option<String> {
        self.shards
            .get(name)
            .map(|s| format!("{}/{} {}", s.done, s.stale, plural(s.stale, "shard")))
    }

    /// What a finished sharded instance's line adds: ` (14 shards)`, ` (3 of 14 shards
    /// run)`; "" for an instance without shards.
    pub fn shards_suffix(&self, name: &str) -> String {
        match self.shards.get(name) {
            Some(s) if s.stale == s.count => format!(" ({} {})", s.count, plural(s.count, "shard")),
            Some(s) => format!(
                " ({} of {} {} run)",
                s.stale,
                s.count,
                plural(s.count, "shard")
            ),
            None => String::new(),
        }
    }

    /// An instance or shard failed; `shown` is its label.
    pub fn failed(&mut self, name: &str, shard: Option<&ShardRef>, shown: &str) {
        match shard {
            Some(sh) => {
                let instance = instance_of(name, shard).to_owned();
                self.failed_shards
                    .entry(instance)
                    .or_default()
                    .insert(sh.index, shown.to_owned());
            }
            None => {
                self.failed.insert(name.to_owned());
            }
        }
    }

    /// Instances with a failure so far (a failed shard counts for its instance).
    pub fn failed_count(&self) -> usize {
        self.failed
            .iter()
            .chain(self.failed_shards.keys())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Why `name` did not run (or did not finish), in the displays' words, remembering it
    /// for the instances it blocks in turn:
    ///
    /// - `blocked by a[x=1] (failed)`: the failed instances at the root of the chain;
    /// - `not started (interrupted)`, `not started: the build stops after a failure
    ///   (-k keeps going)`: it never started, for that reason (or its upstream did not);
    /// - `interrupted: stopped before it finished`: it was running when the build stopped.
    pub fn blocked(
        &mut self,
        name: &str,
        reason: BlockReason,
        blocked_by: &[String],
        shard: Option<&ShardRef>,
    ) -> String {
        let began = shard.is_some() || self.started.contains(name);
        let cause = match reason {
            BlockReason::Interrupted => Cause::Interrupted,
            BlockReason::StoppedAfterFailure => Cause::Stopped,
            BlockReason::UpstreamFailed | BlockReason::UpstreamBlocked => {
                let mut roots = BTreeSet::new();
                let mut other = None;
                for u in blocked_by {
                    if self.failed.contains(u) {
                        roots.insert(u.clone());
                        continue;
                    }
                    match self.causes.get(u) {
                        Some(Cause::Failed(r)) => roots.extend(r.iter().cloned()),
                        Some(c) => other = other.or(Some(c.clone())),
                        // Not seen failing or blocked: name it as the event does.
                        None => {
                            roots.insert(u.clone());
                        }
                    }
                }
                match other {
                    Some(c) if roots.is_empty() => c,
                    _ => Cause::Failed(roots),
                }
            }
        };
        let why = match (&cause, began) {
            (Cause::Failed(roots), _) => format!("blocked by {} (failed)", names(roots)),
            (Cause::Interrupted, true) => "interrupted: stopped before it finished".to_owned(),
            (Cause::Interrupted, false) => "not started (interrupted)".to_owned(),
            (Cause::Stopped, true) => {
                "stopped before it finished: the build stops after a failure (-k keeps going)"
                    .to_owned()
            }
            (Cause::Stopped, false) => {
                "not started: the build stops after a failure (-k keeps going)".to_owned()
            }
        };
        if shard.is_none() {
            self.causes.insert(name.to_owned(), cause);
        }
        why
    }

    /// What follows a FAILED line: the command that ran (`$ cc -c src/mem.c`), then the
    /// end of its log, or where `-v` already showed it; once per log (a sharded
    /// instance's failure points at a shard's log shown already).
    pub fn failure_block(&mut self, root: &Path, name: &str, shown: &str, log: &str) -> String {
        if log.is_empty() || !self.printed.insert(log.to_owned()) {
            return String::new();
        }
        let mut out = String::new();
        if let Some(command) = self.commands.get(name) {
            out.push_str(&command_lines(command));
        }
        if self.streamed.contains(name) {
            out.push_str(&format!("──── output of {shown} is above ({log}) ────\n"));
        } else {
            out.push_str(&log_block(root, shown, log));
        }
        out
    }
}

/// The instance an event is about: `t[lang=fr]` for its shard `t[lang=fr]#3`.
fn instance_of<'a>(name: &'a str, shard: Option<&ShardRef>) -> &'a str {
    match shard {
        Some(_) => shard_parent(name).unwrap_or(name),
        None => name,
    }
}

/// `a, b and 4 more`.
fn names(roots: &BTreeSet<String>) -> String {
    let mut shown: Vec<&str> = roots
        .iter()
        .take(MAX_ROOTS_LISTED)
        .map(String::as_str)
        .collect();
    let rest = roots.len().saturating_sub(MAX_ROOTS_LISTED);
    let tail = format!("{rest} more");
    if rest > 0 {
        shown.push(&tail);
    }
    match shown.split_last() {
        Some((last, init)) if !init.is_empty() => format!("{} and {last}", init.join(", ")),
        Some((last, _)) => (*last).to_owned(),
        None => String::new(),
    }
}

/// A command as a failure block shows it: `$ ` before its first line, `> ` before the
/// others (as a shell prompts), control characters escaped so expanded values cannot
/// write to the terminal.
pub fn command_lines(command: &str) -> String {
    let mut out = String::new();
    for (k, line) in command.trim_end_matches('\n').split('\n').enumerate() {
        out.push_str(if k == 0 { "$ " } else { "> " });
        let shown: String = line
            .split('\t')
            .map(escape_key)
            .collect::<Vec<_>>()
            .join("\t");
        out.push_str(&shown);
        out.push('\n');
    }
    out
}

/// `instance` or `instances` for `n`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        noun.to_owned()
    } else {
        format!("{noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_blocked_chain_names_its_root_failure() {
        let mut t = Track::default();
        t.started("a[x=1]", None, "false", false);
        t.failed("a[x=1]", None, "a[x=1]");
        let b = t.blocked("b", BlockReason::UpstreamFailed, &list(&["a[x=1]"]), None);
        assert_eq!(b, "blocked by a[x=1] (failed)");
        let c = t.blocked("c", BlockReason::UpstreamBlocked, &list(&["b"]), None);
        assert_eq!(c, "blocked by a[x=1] (failed)");
        // A failed upstream beside a blocked one: each root once.
        t.failed("z", None, "z");
        let d = t.blocked(
            "d",
            BlockReason::UpstreamFailed,
            &list(&["z", "c", "b"]),
            None,
        );
        assert_eq!(d, "blocked by a[x=1] and z (failed)");
    }

    #[test]
    fn what_never_started_says_so() {
        let mut t = Track::default();
        t.started("running", None, "sleep 9", false);
        assert_eq!(
            t.blocked("running", BlockReason::Interrupted, &[], None),
            "interrupted: stopped before it finished"
        );
        assert_eq!(
            t.blocked("waiting", BlockReason::Interrupted, &[], None),
            "not started (interrupted)"
        );
        assert_eq!(
            t.blocked(
                "after",
                BlockReason::UpstreamBlocked,
                &list(&["waiting"]),
                None
            ),
            "not started (interrupted)"
        );
        assert_eq!(
            t.blocked("s", BlockReason::StoppedAfterFailure, &[], None),
            "not started: the build stops after a failure (-k keeps going)"
        );
    }

    #[test]
    fn the_counter_counts_instances_not_shards() {
        let mut t = Track::default();
        t.plan(2);
        assert_eq!(t.indent(), "     ");
        t.shard_plan("t", 14, 4);
        assert_eq!(t.shard_finished("t#3"), " (1/4 shards)");
        assert_eq!(t.shard_progress("t").as_deref(), Some("1/4 shards"));
        assert_eq!(t.shards_suffix("t"), " (4 of 14 shards run)");
        assert_eq!(t.counter(), "[1/2]");
        assert_eq!(t.counter(), "[2/2]");
        t.shard_plan("one", 1, 1);
        assert_eq!(t.shards_suffix("one"), " (1 shard)");
        assert_eq!(
            names(&["a", "b", "c", "d", "e"].map(String::from).into()),
            "a, b, c and 2 more"
        );
    }

    #[test]
    fn commands_show_as_a_shell_would_prompt_them() {
        assert_eq!(command_lines("cc -c a.c"), "$ cc -c a.c\n");
        assert_eq!(
            command_lines("set -e\nmake\tall\n"),
            "$ set -e\n> make\tall\n"
        );
        assert_eq!(command_lines("echo \u{1b}[2J"), "$ echo \\u{1b}[2J\n");
    }
}
