//! One whole instance in a build: when its upstreams have finished, whether it is blocked,
//! up to date, restored from the cache or run; and recording how it ended.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::job::{failed_event, job_env, prepare_outputs, prepare_paths, remove_outputs};
use super::shards::lifecycle::shard_lineage;
use super::undeclared::check_discovered;
use super::{
    Build, DepfilePlan, Done, End, Failure, Job, JobPlan, Outcome, Started, Work, shards, signal,
};
use crate::cache::{Cache, Source};
use crate::events::{BlockReason, EventKind, FailureKind, ShardRef};
use crate::fs::{self, Beneath, Digest, PathDigest};
use crate::plan::{self, Discovered, Freshness, KeyParts, Manifest, OutputMeta};
use crate::shard::Merge;
use crate::snapshot::cached_to_row;
use crate::store::{DurationRecord, OutputRecord, ResultUpdate, SuccessRecord};

impl Build<'_, '_> {
    /// An instance whose upstreams have all finished: block, skip, run, or plan shards.
    pub(super) fn ready(&mut self, i: usize) {
        let project = self.snap.project;
        let inst = &project.instances[i];
        let name = inst.name.as_str();
        // Hard upstreams that did not succeed block this instance.
        if let Some(blocked) = self.core.blocked(i) {
            let event = self.blocked_event(&blocked);
            self.events.emit(Some(name), event);
            self.set_blocked(i);
            return;
        }

        // Planned up to date and nothing upstream ran: the plan's key still holds. No
        // event: `plan_ready.up_to_date_unlisted` counted it (see [`unlisted_up_to_date`]),
        // so a no-op build does not write a line per instance.
        if let Some(e) = self.plan.get(&i)
            && !e.stale
            && inst.deps.iter().all(|d| self.from_record[d.upstream])
        {
            self.skip(i);
            self.from_record[i] = true;
            return;
        }

        for (u, end) in self.core.soft_unmet(i) {
            self.events.emit(
                Some(name),
                EventKind::SoftDependencyUnmet {
                    upstream: project.instances[u].name.clone(),
                    upstream_status: if end == End::Failed {
                        "failed"
                    } else {
                        "blocked"
                    },
                },
            );
        }

        // The real key, from what upstreams produced in this run.
        let (files, now) = match self.snap.current_inputs(i) {
            Ok(x) => x,
            Err(e) => {
                crate::say!("warning: {e}; using the inputs found when the build started");
                (self.snap.inputs[i].clone(), BTreeMap::new())
            }
        };
        let snap = self.snap;
        let digest_of = |p: &str| match now.get(p) {
            Some(d) => *d,
            None => snap.digest(p),
        };
        let outcome = &self.outcome;
        let upstream = |j: usize| match &outcome[j] {
            Some(Outcome::Succeeded(outs)) => Some(outs.clone()),
            _ => None,
        };
        let parts = snap.parts_with(i, &files, &upstream, &digest_of);
        let key = parts.action_key();
        let fresh = plan::evaluate(
            &parts,
            &key,
            &snap.records[i],
            &|p| snap.digest(p),
            snap.forced.contains(&i),
            inst.always,
        );
        let whys = match fresh {
            Freshness::Fresh => {
                let early_cutoff = self.plan.get(&i).is_some_and(|e| e.stale);
                self.events.emit(
                    Some(name),
                    EventKind::InstanceSkipped {
                        reason: "up_to_date",
                        action_key: key.to_hex(),
                        early_cutoff,
                    },
                );
                if early_cutoff {
                    self.done_planned += 1;
                }
                self.skip(i);
                return;
            }
            Freshness::Stale(whys) => whys,
        };
        self.events.emit(
            Some(name),
            EventKind::InstanceInvalidated {
                reasons: plan::reason::codes(&whys),
                details: whys,
            },
        );
        // An empty `{inputs}` is never what the command wants: `cat {inputs}` would read
        // stdin, `ar rcs lib.a {inputs}` would write an empty archive and succeed.
        if inst.uses_inputs() && parts.inputs.is_empty() {
            let patterns: Vec<String> = inst.inputs.iter().map(|p| format!("`{p}`")).collect();
            remove_outputs(&self.beneath, inst);
            self.done_planned += 1;
            self.fail(
                i,
                (
                    FailureKind::InvalidInput,
                    None,
                    None,
                    format!(
                        "no file matches its inputs ({}), so `{{inputs}}` would be empty; the command was not run",
                        patterns.join(", ")
                    ),
                ),
                String::new(),
                0,
                None,
            );
            self.finish(i);
            return;
        }
        if self.try_restore(i, &parts, &key) {
            return;
        }
        if signal::interrupted() {
            // Interrupted during the cache lookup: nothing new starts.
            self.events.emit(
                Some(name),
                EventKind::InstanceBlocked {
                    reason: BlockReason::Interrupted,
                    blocked_by: Vec::new(),
                    shard: None,
                },
            );
            self.set_blocked(i);
            return;
        }
        let present: Vec<&str> = parts.inputs.keys().map(String::as_str).collect();
        if inst.shard.is_some() {
            self.events.emit(
                Some(name),
                EventKind::InstanceStarted {
                    attempt: 1,
                    command: parts.command.clone(),
                    shard: None,
                    executor: self.remote_executor(i),
                    job_id: None,
                    worker: None,
                },
            );
            self.plan_shards(i, parts, key, &files, &digest_of);
            return;
        }
        self.make_log_dir();
        let job = Job {
            name: name.to_owned(),
            command: inst.command_line(&present, None).unwrap_or_default(),
            cwd: self.cwd(inst),
            env: job_env(inst, &self.opts.run_id, None),
            log: self.layout.log_file(&self.opts.run_id, name),
            timeout: inst.timeout,
            stream: self.stream_for(name),
        };
        let guard = self.snap.input_guard(&parts);
        let depfile = inst.depfile_for(None).map(|path| {
            let mut skip: BTreeSet<String> = parts.inputs.keys().cloned().collect();
            skip.extend(inst.outputs.iter().map(|o| o.path.clone()));
            DepfilePlan {
                path,
                cwd: inst.cwd.clone(),
                skip: Arc::new(skip),
                own: Vec::new(),
                known: Arc::new(self.snap.discovered_entries(i)),
            }
        });
        let meta = self.provenance(inst, &job.command, &parts);
        self.whole.insert(i, Started { parts, key });
        let (root, declared) = (self.beneath.clone(), inst.outputs.clone());
        let dep_path = depfile.as_ref().map(|d| d.path.clone());
        let plan = JobPlan {
            store: self.cache_for(i).map(|c| {
                (
                    c,
                    key,
                    inst.outputs
                        .iter()
                        .map(|o| (o.path.clone(), o.dir))
                        .collect(),
                )
            }),
            prepare: Box::new(move || {
                prepare_outputs(&root, &declared)?;
                prepare_paths(&root, dep_path.as_slice())
            }),
            has_run: inst.run.is_some(),
            outputs: inst.outputs.iter().map(|o| o.path.clone()).collect(),
            retry: inst.retry.clone(),
            schemas: inst
                .outputs
                .iter()
                .filter_map(|o| o.schema.clone().map(|s| (o.path.clone(), s)))
                .collect(),
            guard,
            depfile,
            meta,
        };
        self.spawn(Work::Whole(i), job, plan);
    }

    pub(super) fn done_whole(&mut self, i: usize, done: Done) {
        let Some(st) = self.whole.remove(&i) else {
            return;
        };
        let inst = &self.snap.project.instances[i];
        let name = inst.name.clone();
        let duration_ms = done.duration.as_millis() as u64;
        self.done_planned += 1;
        match done.failure.clone() {
            None => {
                let mut metas = BTreeMap::new();
                for (path, r) in done.outputs {
                    if let Ok(PathDigest::Present {
                        stat,
                        digest,
                        refreshed,
                    }) = r
                    {
                        metas.insert(
                            path.clone(),
                            OutputMeta {
                                digest,
                                size: if stat.is_dir { 0 } else { stat.size },
                            },
                        );
                        if let Some(c) = refreshed
                            && !stat.is_dir
                        {
                            self.pending.digests.push((path, Some(cached_to_row(&c))));
                        }
                    }
                }
                self.pending.digests.extend(done.depfile.rows);
                let project = self.snap.project;
                check_discovered(
                    &mut self.producers,
                    project,
                    i,
                    &name,
                    &done.depfile.discovered,
                );
                if done.changed.is_empty() {
                    let discovered = done.depfile.discovered;
                    let whole = BTreeMap::new();
                    self.succeed(
                        i,
                        st.parts,
                        st.key,
                        metas,
                        discovered,
                        duration_ms,
                        None,
                        whole,
                    );
                } else {
                    self.unrecorded(i, done.changed, st.key, metas, duration_ms);
                }
            }
            Some(f) if self.killed_by_us(&f) => {
                remove_outputs(&self.beneath, inst);
                self.events.emit(
                    Some(&name),
                    EventKind::InstanceBlocked {
                        reason: BlockReason::Interrupted,
                        blocked_by: Vec::new(),
                        shard: None,
                    },
                );
                self.outcome[i] = Some(Outcome::Blocked);
                self.report.counts.blocked += 1;
                self.report.blocked.push(name.clone());
            }
            Some(f) => {
                remove_outputs(&self.beneath, inst);
                let log = self.log_rel(&name);
                self.fail(i, f, log, duration_ms, None);
            }
        }
        self.progress();
        self.finish(i);
    }

    /// Records a success and reports it. `lineage` holds what particular outputs were
    /// built from, when not from everything the instance read (`merge = "none"` shards).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn succeed(
        &mut self,
        i: usize,
        parts: KeyParts,
        key: Digest,
        metas: BTreeMap<String, OutputMeta>,
        discovered: Discovered,
        duration_ms: u64,
        cached: Option<(Source, u64, u64)>,
        lineage: BTreeMap<String, String>,
    ) {
        let name = self.name(i).to_owned();
        let now = fs::now_ns();
        let built_from = serde_json::json!({
            "inputs": parts.inputs,
            "upstream": parts.upstream,
            "discovered": discovered,
        })
        .to_string();
        for (path, meta) in &metas {
            let built_from = lineage.get(path).unwrap_or(&built_from);
            self.pending.outputs.push(OutputRecord {
                path: path.clone(),
                digest: meta.digest.0,
                size: meta.size,
                instance: name.clone(),
                action_key: key.0,
                run_id: self.opts.run_id.clone(),
                built_from: built_from.clone(),
                recorded_at_ns: now,
            });
        }
        let outputs: BTreeMap<String, Digest> =
            metas.iter().map(|(p, m)| (p.clone(), m.digest)).collect();
        let manifest = Manifest {
            parts,
            outputs: metas,
            discovered,
        };
        self.pending.results.push(ResultUpdate::Succeeded {
            instance: name.clone(),
            record: SuccessRecord {
                action_key: key.0,
                manifest: manifest.encode(),
                run_id: self.opts.run_id.clone(),
                finished_at_ns: now,
            },
        });
        let hex = outputs
            .iter()
            .map(|(p, d)| (p.clone(), d.to_hex()))
            .collect();
        if cached.is_none() {
            self.pending.durations.push(DurationRecord {
                instance: name.clone(),
                shard: String::new(),
                duration_ms,
                run_id: self.opts.run_id.clone(),
            });
        }
        let event = match cached {
            Some((source, bytes, saved_ms)) => {
                self.report.counts.cached += 1;
                EventKind::InstanceCached {
                    source: source.name(),
                    action_key: key.to_hex(),
                    outputs: hex,
                    bytes,
                    saved_ms,
                }
            }
            None => {
                self.report.counts.succeeded += 1;
                EventKind::InstanceCompleted {
                    action_key: key.to_hex(),
                    outputs: hex,
                    duration_ms,
                    shard: None,
                }
            }
        };
        self.events.emit(Some(&name), event);
        self.outcome[i] = Some(Outcome::Succeeded(outputs));
    }

    /// Completed, but an input changed while the command ran: its outputs serve this
    /// build's downstream instances, yet nothing is recorded or cached, so the next build
    /// runs it again.
    pub(super) fn unrecorded(
        &mut self,
        i: usize,
        paths: Vec<String>,
        key: Digest,
        metas: BTreeMap<String, OutputMeta>,
        duration_ms: u64,
    ) {
        let name = self.name(i).to_owned();
        let outputs: BTreeMap<String, Digest> =
            metas.iter().map(|(p, m)| (p.clone(), m.digest)).collect();
        self.events.emit(
            Some(&name),
            EventKind::InputChangedDuringRun { paths, shard: None },
        );
        self.events.emit(
            Some(&name),
            EventKind::InstanceCompleted {
                action_key: key.to_hex(),
                outputs: outputs
                    .iter()
                    .map(|(p, d)| (p.clone(), d.to_hex()))
                    .collect(),
                duration_ms,
                shard: None,
            },
        );
        self.report.counts.succeeded += 1;
        self.outcome[i] = Some(Outcome::Succeeded(outputs));
    }

    /// Where and from what the sidecars of `inst`'s `meta = true` outputs are written,
    /// once it has run as `command`.
    pub(super) fn provenance(
        &self,
        inst: &crate::model::Instance,
        command: &str,
        parts: &KeyParts,
    ) -> Option<(Arc<Beneath>, crate::model::meta::Provenance)> {
        crate::model::meta::Provenance::of(
            &inst.phase,
            &inst.outputs,
            (command, parts),
            &self.opts.run_id,
        )
        .map(|p| (self.beneath.clone(), p))
    }

    /// The cache, when instance `i` may use it: not `cache = false`, `--force`, `always`.
    pub(super) fn cache_for(&self, i: usize) -> Option<Arc<Cache>> {
        let inst = &self.snap.project.instances[i];
        (inst.cache && !inst.always && !self.snap.forced.contains(&i))
            .then(|| self.opts.cache.clone())
            .flatten()
    }

    /// Restores a stale instance's result from the cache when its key is there; true
    /// when it was restored (and recorded).
    pub(super) fn try_restore(&mut self, i: usize, parts: &KeyParts, key: &Digest) -> bool {
        let Some(cache) = self.cache_for(i) else {
            return false;
        };
        let Some((entry, source)) = cache.lookup(key) else {
            return false;
        };
        // The key says nothing of the files the command turned out to read: the entry
        // stands only while each still holds what it was built from. Otherwise it is a
        // miss, and the run replaces it.
        if entry.discovered.keys().any(|p| !plan::is_discoverable(p))
            || !plan::discovered_whys(&entry.discovered, &|p| self.snap.digest_now(p)).is_empty()
        {
            return false;
        }
        let declared = crate::cache::Declared::of(&self.snap.project.instances[i]);
        // An entry stored before the output asked for a sidecar has none to restore:
        // running again writes one.
        if declared.meta.iter().any(|p| !entry.meta.contains_key(p)) {
            return false;
        }
        match cache.restore(
            &self.beneath,
            key,
            &entry,
            source,
            (&declared, &self.opts.run_id),
        ) {
            Ok(bytes) => {
                let lineage = self.restored_shard_lineage(i, parts);
                let metas = entry
                    .outputs
                    .iter()
                    .map(|(p, s)| {
                        (
                            p.clone(),
                            OutputMeta {
                                digest: s.digest(),
                                size: s.size(),
                            },
                        )
                    })
                    .collect();
                self.succeed(
                    i,
                    parts.clone(),
                    *key,
                    metas,
                    entry.discovered.clone(),
                    0,
                    Some((source, bytes, entry.duration_ms)),
                    lineage,
                );
                if self.plan.get(&i).is_some_and(|e| e.stale) {
                    self.done_planned += 1;
                }
                self.finish(i);
                true
            }
            Err(m) => {
                crate::say!("warning: {}: {m}; running it instead", self.name(i));
                false
            }
        }
    }

    /// [`shard_lineage`] of a `merge = "none"` instance restored from the cache: its
    /// shards split again from the inputs its key was made of.
    pub(super) fn restored_shard_lineage(
        &self,
        i: usize,
        parts: &KeyParts,
    ) -> BTreeMap<String, String> {
        let inst = &self.snap.project.instances[i];
        let Some(spec) = inst.shard.as_ref().filter(|s| s.merge == Merge::None) else {
            return BTreeMap::new();
        };
        let inputs: Vec<String> = parts.inputs.keys().cloned().collect();
        let files: Vec<(String, Digest)> = shards::source_files(&spec.strategy, &inputs)
            .into_iter()
            .filter_map(|p| parts.inputs.get(&p).map(|d| (p, *d)))
            .collect();
        let read = |p: &str| fs::digest::read_regular(&self.root.join(p));
        match crate::shard::split(&spec.strategy, &files, &read) {
            // The cache entry holds the instance's discovered inputs, not each shard's.
            Ok(split) => shard_lineage(inst, parts, split.iter().map(|s| (s, None))),
            Err(_) => BTreeMap::new(),
        }
    }

    /// A command that died of the signal orch sent it because the build was interrupted
    /// did not fail on its own: it is reported as interrupted, not recorded as failed.
    pub(super) fn killed_by_us(&self, f: &Failure) -> bool {
        // The flag too: a job may report before the loop has noticed the signal.
        (self.report.interrupted || signal::interrupted())
            && f.0 == FailureKind::Signal
            && matches!(f.2, Some(libc::SIGTERM | libc::SIGKILL))
    }

    /// Records a failure and reports it; fail-fast stops the build.
    pub(super) fn fail(
        &mut self,
        i: usize,
        (kind, exit_code, signal, message): Failure,
        log: String,
        duration_ms: u64,
        shard: Option<ShardRef>,
    ) {
        let name = self.name(i).to_owned();
        self.pending.results.push(ResultUpdate::Failed {
            instance: name.clone(),
            run_id: self.opts.run_id.clone(),
            finished_at_ns: fs::now_ns(),
        });
        self.events.emit(
            Some(&name),
            failed_event((kind, exit_code, signal, message), log, duration_ms, shard),
        );
        self.outcome[i] = Some(Outcome::Failed);
        self.report.counts.failed += 1;
        self.report.failed.push(name);
        self.core.failed();
    }
}
