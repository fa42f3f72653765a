//! A sharded instance in a build: its shards planned when it becomes ready, started
//! round-robin with the other sharded instances under its `parallel` cap, and merged (or
//! reported) once the last one ends.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::{PlannedShard, ShardResult};
use crate::cache::{Staged, StoreRequest};
use crate::events::shard_name::key_suffix;
use crate::events::{BlockReason, EventKind, FailureKind, ShardRef};
use crate::exec::job::{failed_event, job_env, prepare_paths, remove_outputs, write_sidecars};
use crate::exec::undeclared::check_discovered;
use crate::exec::{
    Build, DepfilePlan, Done, Failure, Job, JobPlan, Prepare, Work, priority, schema, shards,
};
use crate::fs::{self, Digest, PathDigest};
use crate::model::Instance;
use crate::plan::{self, Discovered, KeyParts, OutputMeta};
use crate::shard::Merge;
use crate::store::{DurationRecord, ShardRecord};

/// A sharded instance in progress.
pub(in crate::exec) struct Sharded {
    pub(in crate::exec) parts: KeyParts,
    pub(in crate::exec) key: Digest,
    pub(in crate::exec) shards: Vec<PlannedShard>,
    pub(in crate::exec) results: Vec<Option<ShardResult>>,
    /// The failure of the failed shard with the lowest index (so the instance's message
    /// does not depend on which shard ended first), its log, and its slot in `shards`.
    pub(in crate::exec) failure: Option<(Failure, String, usize)>,
    pub(in crate::exec) started_at: Instant,
    /// Inputs of shards that changed while they ran: the instance is not recorded.
    pub(in crate::exec) unrecorded: Vec<String>,
    /// What no shard's depfile records as discovered: the key's inputs but the shard
    /// sources, and the declared outputs.
    pub(in crate::exec) depfile_skip: Arc<BTreeSet<String>>,
    /// The stats the instance's recorded discovered inputs were hashed from.
    pub(in crate::exec) depfile_known: Arc<BTreeMap<String, fs::CachedDigest>>,
}

impl Build<'_, '_> {
    /// Splits a stale sharded instance and queues the shards that must run.
    pub(in crate::exec) fn plan_shards(
        &mut self,
        i: usize,
        parts: KeyParts,
        key: Digest,
        files: &[String],
        digest_of: &dyn Fn(&str) -> Option<Digest>,
    ) {
        let inst = &self.snap.project.instances[i];
        let Some(spec) = inst.shard.clone() else {
            return;
        };
        // Forced or `always`: every shard runs again, none is reused.
        let recorded = if self.snap.forced.contains(&i) || inst.always {
            Default::default()
        } else {
            self.store.shard_results(&inst.name).unwrap_or_default()
        };
        let snap = self.snap;
        let planned = match shards::plan(
            &self.root,
            &self.layout.dir,
            inst,
            &parts,
            files,
            digest_of,
            &|p| snap.digest_now(p),
            &recorded,
        ) {
            Ok(p) => p,
            Err(message) => {
                remove_outputs(&self.beneath, inst);
                self.done_planned += 1;
                self.fail(
                    i,
                    (FailureKind::InvalidInput, None, None, message),
                    String::new(),
                    0,
                    None,
                );
                self.finish(i);
                return;
            }
        };
        let count = planned.len();
        let mut waiting: VecDeque<usize> = planned
            .iter()
            .enumerate()
            .filter(|(_, p)| p.reuse.is_none())
            .map(|(k, _)| k)
            .collect();
        let jobs = self.capacity_of(i);
        if let Some(seed) = self.opts.shuffle {
            // Another order per instance, so shards of different instances do not all
            // move the same way.
            let mut rng =
                fastrand::Rng::with_seed(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            rng.shuffle(waiting.make_contiguous());
        } else if jobs > 1 && waiting.len() > 1 {
            let ms = self.store.shard_durations(&inst.name).unwrap_or_default();
            priority::order_shards(&mut waiting, &|k| {
                ms.get(&planned[k].shard.key)
                    .copied()
                    .map(priority::quantize)
            });
        }
        let cap = spec.parallel.unwrap_or(usize::MAX).min(jobs).max(1);
        self.events.emit(
            Some(&inst.name),
            EventKind::ShardPlan {
                strategy: spec.strategy.name(),
                shards: count,
                parallel: cap,
                stale: waiting.len(),
                reused: count - waiting.len(),
            },
        );
        // Shards that run are units of progress of their own.
        self.planned_total += waiting.len();
        let results = planned.iter().map(|p| p.reuse.clone()).collect();
        let has_waiting = !waiting.is_empty();
        // A shard's own source is its input; the other shards' sources are not in its
        // key, so one that its depfile lists is a discovered input like any other file.
        let sources = shards::source_files(&spec.strategy, files);
        let mut depfile_skip: BTreeSet<String> = parts.inputs.keys().cloned().collect();
        for s in &sources {
            depfile_skip.remove(s);
        }
        depfile_skip.extend(inst.outputs.iter().map(|o| o.path.clone()));
        self.sharded.insert(
            i,
            Sharded {
                parts,
                key,
                shards: planned,
                results,
                failure: None,
                started_at: Instant::now(),
                unrecorded: Vec::new(),
                depfile_skip: Arc::new(depfile_skip),
                depfile_known: Arc::new(self.snap.discovered_entries(i)),
            },
        );
        self.core.queue_shards(i, waiting, cap);
        if !has_waiting {
            self.finalize_sharded(i);
        }
    }

    pub(in crate::exec) fn start_shard(&mut self, i: usize, s: usize) {
        self.make_log_dir();
        let inst = &self.snap.project.instances[i];
        let Some(sh) = self.sharded.get(&i) else {
            return;
        };
        let p = &sh.shards[s];
        let count = sh.shards.len();
        let shard_name = format!("{}#{}", inst.name, p.shard.index);
        // Collected only for commands that use `{inputs}`: a `files` source can make the
        // input list as long as the shard list.
        let present: Vec<&str> = if inst.uses_inputs() {
            sh.parts.inputs.keys().map(String::as_str).collect()
        } else {
            Vec::new()
        };
        let values = shards::values(p, count);
        let job = Job {
            name: shard_name.clone(),
            command: inst
                .command_line(&present, Some(&values))
                .unwrap_or_default(),
            cwd: self.cwd(inst),
            env: job_env(inst, &self.opts.run_id, Some((p.shard.index, count))),
            log: self.layout.shard_log_file(
                &self.opts.run_id,
                &inst.name,
                p.shard.index,
                &p.shard.key,
            ),
            timeout: inst.timeout,
            stream: self.stream_for(&shard_name),
        };
        let outputs: Vec<String> = if p.part.is_empty() {
            p.outputs.clone()
        } else {
            vec![p.part.clone()]
        };
        let depfile = inst.depfile_for(Some(&values)).map(|path| {
            let mut own = vec![p.input.clone()];
            own.extend(outputs.iter().cloned());
            DepfilePlan {
                path,
                cwd: inst.cwd.clone(),
                skip: Arc::clone(&sh.depfile_skip),
                own,
                known: Arc::clone(&sh.depfile_known),
            }
        });
        let (root, shard_copy, paths) = (self.beneath.clone(), p.clone(), outputs.clone());
        let dep_path = depfile.as_ref().map(|d| d.path.clone());
        let prepare: Prepare = Box::new(move || {
            shards::write_slice(root.root(), &shard_copy)
                .map_err(|e| format!("cannot write the shard's input: {e}"))?;
            if let Some(d) = &dep_path
                && !plan::is_discoverable(d)
            {
                // A group key can hold anything: the expanded path must stay a project file.
                return Err(format!(
                    "the depfile `{d}` of shard `{}` is not a path inside the project, outside `.orch/`",
                    shard_copy.shard.key
                ));
            }
            prepare_paths(&root, &paths)?;
            prepare_paths(&root, dep_path.as_slice())
        });
        let plan = JobPlan {
            store: None,
            prepare,
            has_run: inst.run.is_some(),
            outputs,
            retry: inst.retry.clone(),
            schemas: p.schemas.clone(),
            guard: self
                .snap
                .shard_guard(inst, &sh.parts, &p.input, p.shard.digest),
            depfile,
            // A shard writes part of an output; the sidecar follows the merge.
            meta: None,
        };
        self.spawn(Work::Shard(i, s), job, plan);
    }

    pub(in crate::exec) fn done_shard(&mut self, i: usize, s: usize, done: Done) {
        let ours = done.failure.as_ref().is_some_and(|f| self.killed_by_us(f));
        let log = self
            .sharded
            .get(&i)
            .map(|sh| {
                let shard = &sh.shards[s].shard;
                let log = self.layout.shard_log_file(
                    &self.opts.run_id,
                    self.name(i),
                    shard.index,
                    &shard.key,
                );
                self.rel(&log)
            })
            .unwrap_or_default();
        let Some(sh) = self.sharded.get_mut(&i) else {
            return;
        };
        let p = &sh.shards[s];
        let count = sh.shards.len();
        let shard_name = format!("{}#{}", self.snap.project.instances[i].name, p.shard.index);
        let shard = Some(ShardRef {
            index: p.shard.index,
            count,
            key: p.shard.key.clone(),
        });
        let duration_ms = done.duration.as_millis() as u64;
        let key = p.key;
        self.done_planned += 1;
        match done.failure.clone() {
            None => {
                let mut metas = BTreeMap::new();
                for (path, r) in &done.outputs {
                    if let Ok(PathDigest::Present { stat, digest, .. }) = r {
                        metas.insert(
                            path.clone(),
                            OutputMeta {
                                digest: *digest,
                                size: stat.size,
                            },
                        );
                    }
                }
                let merged = !p.part.is_empty();
                let result = if merged {
                    let m = metas.values().next().cloned().unwrap_or(OutputMeta {
                        digest: fs::hash_bytes(b""),
                        size: 0,
                    });
                    ShardResult {
                        digest: m.digest,
                        size: m.size,
                        outputs: BTreeMap::new(),
                        discovered: done.depfile.discovered.clone(),
                    }
                } else {
                    let size = metas.values().map(|m| m.size).sum();
                    ShardResult {
                        digest: shards::outputs_digest(&metas),
                        size,
                        outputs: metas.clone(),
                        discovered: done.depfile.discovered.clone(),
                    }
                };
                if !merged {
                    let _ = shards::note_written(
                        &self.layout.dir,
                        &self.snap.project.instances[i].name,
                        metas.keys(),
                    );
                }
                self.pending
                    .digests
                    .extend(done.depfile.rows.iter().cloned());
                let project = self.snap.project;
                let found = &done.depfile.discovered;
                check_discovered(&mut self.producers, project, i, &shard_name, found);
                self.pending.durations.push(DurationRecord {
                    instance: self.snap.project.instances[i].name.clone(),
                    shard: p.shard.key.clone(),
                    duration_ms,
                    run_id: self.opts.run_id.clone(),
                });
                if done.changed.is_empty() {
                    self.pending.shards.push(ShardRecord {
                        shard_key: key.0,
                        instance: self.snap.project.instances[i].name.clone(),
                        output_digest: result.digest.0,
                        size: result.size,
                        run_id: self.opts.run_id.clone(),
                        discovered: shards::encode_discovered(&result.discovered),
                    });
                } else {
                    crate::snapshot::forget_slice(&self.root, &self.layout.dir, &p.input);
                    sh.unrecorded.extend(done.changed.iter().cloned());
                    self.events.emit(
                        Some(&shard_name),
                        EventKind::InputChangedDuringRun {
                            paths: done.changed.clone(),
                            shard: shard.clone(),
                        },
                    );
                }
                sh.results[s] = Some(result);
                self.events.emit(
                    Some(&shard_name),
                    EventKind::InstanceCompleted {
                        action_key: key.to_hex(),
                        outputs: metas
                            .iter()
                            .map(|(p, m)| (p.clone(), m.digest.to_hex()))
                            .collect(),
                        duration_ms,
                        shard,
                    },
                );
            }
            Some(f) => {
                for out in done
                    .outputs
                    .iter()
                    .map(|(p, _)| p)
                    .chain(p.outputs.iter())
                    .chain(std::iter::once(&p.part).filter(|p| !p.is_empty()))
                {
                    let _ = self.beneath.remove_file(out);
                }
                if ours {
                    // Killed because the build was interrupted: not a failure of its own;
                    // the instance ends up reported as interrupted.
                    self.events.emit(
                        Some(&shard_name),
                        EventKind::InstanceBlocked {
                            reason: BlockReason::Interrupted,
                            blocked_by: Vec::new(),
                            shard: shard.clone(),
                        },
                    );
                } else {
                    if sh.failure.as_ref().is_none_or(|(_, _, first)| s < *first) {
                        sh.failure = Some((f.clone(), log.clone(), s));
                    }
                    self.events
                        .emit(Some(&shard_name), failed_event(f, log, duration_ms, shard));
                }
                self.core.failed();
            }
        }
        self.progress();
        if self.sharded.contains_key(&i) && self.core.shards_settled(i) {
            self.finalize_sharded(i);
        }
    }

    /// All of an instance's shards have ended (or will never start): merge, or report
    /// why it did not finish.
    pub(in crate::exec) fn finalize_sharded(&mut self, i: usize) {
        let Some(sh) = self.sharded.remove(&i) else {
            return;
        };
        let inst = &self.snap.project.instances[i];
        let duration_ms = sh.started_at.elapsed().as_millis() as u64;
        let waiting = self.core.shards_waiting(i);
        self.done_planned += 1;
        if let Some((f, log, slot)) = sh.failure {
            let which = sh.shards.get(slot).map_or_else(String::new, |p| {
                let shard = ShardRef {
                    index: p.shard.index,
                    count: sh.shards.len(),
                    key: p.shard.key.clone(),
                };
                format!("#{}{}", p.shard.index, key_suffix(Some(&shard)))
            });
            remove_outputs(&self.beneath, inst);
            let failed =
                sh.shards.len() - sh.results.iter().filter(|r| r.is_some()).count() - waiting;
            let message = format!(
                "{failed} of {} {} failed; first: {which}: {}",
                sh.shards.len(),
                crate::events::track::plural(sh.shards.len(), "shard"),
                f.3
            );
            self.fail(i, (f.0, f.1, f.2, message), log, duration_ms, None);
            self.finish(i);
            return;
        }
        if waiting > 0 || sh.results.iter().any(Option::is_none) {
            let reason = if self.report.interrupted {
                BlockReason::Interrupted
            } else {
                BlockReason::StoppedAfterFailure
            };
            self.events.emit(
                Some(&inst.name),
                EventKind::InstanceBlocked {
                    reason,
                    blocked_by: Vec::new(),
                    shard: None,
                },
            );
            self.set_blocked(i);
            self.done_planned -= 1;
            return;
        }
        let Some(spec) = inst.shard.clone() else {
            return;
        };
        let results: Vec<ShardResult> = sh.results.into_iter().flatten().collect();
        // The instance's discovered inputs are those of all its shards: any of them
        // changing makes the instance stale, and the shard plan then finds which shards.
        let mut discovered = Discovered::new();
        for r in &results {
            discovered.extend(r.discovered.iter().map(|(p, d)| (p.clone(), *d)));
        }
        let mut metas = BTreeMap::new();
        match spec.merge {
            Merge::Concat => {
                let target = inst
                    .outputs
                    .first()
                    .map(|o| o.path.clone())
                    .unwrap_or_default();
                let parts: Vec<PathBuf> =
                    sh.shards.iter().map(|p| self.root.join(&p.part)).collect();
                match crate::shard::merge(&self.beneath, &parts, &target) {
                    Ok((digest, size)) => {
                        self.events.emit(
                            Some(&inst.name),
                            EventKind::MergeCompleted {
                                output: target.clone(),
                                digest: digest.to_hex(),
                                size,
                                shards: parts.len(),
                            },
                        );
                        // The schema applies to the merged output.
                        let schema = inst.outputs.first().and_then(|o| o.schema.clone());
                        if let Some(m) =
                            schema.and_then(|sc| schema::check(&self.root, &[(target.clone(), sc)]))
                        {
                            remove_outputs(&self.beneath, inst);
                            self.fail(
                                i,
                                (FailureKind::Schema, None, None, m),
                                String::new(),
                                duration_ms,
                                None,
                            );
                            self.finish(i);
                            return;
                        }
                        metas.insert(target, OutputMeta { digest, size });
                    }
                    Err(e) => {
                        remove_outputs(&self.beneath, inst);
                        let f = (
                            FailureKind::MissingOutput,
                            None,
                            None,
                            format!("merging the shard outputs into `{target}` failed: {e}"),
                        );
                        self.fail(i, f, String::new(), duration_ms, None);
                        self.finish(i);
                        return;
                    }
                }
            }
            Merge::None => {
                for r in &results {
                    metas.extend(r.outputs.clone());
                }
                // Outputs of shards that no longer exist (a group gone from the source).
                // Only what orch recorded as this instance's outputs: a file that merely
                // matches the template (the source itself, a file of the user's) is not
                // orch's to delete.
                let templates: Vec<String> =
                    inst.shard_outputs.iter().map(|o| o.path.clone()).collect();
                let mut ours = shards::written(&self.layout.dir, &inst.name);
                if let Some(s) = &self.snap.records[i].success {
                    ours.extend(s.outputs.keys().cloned());
                }
                let source = match &spec.strategy {
                    crate::shard::Strategy::Chunk { source, .. }
                    | crate::shard::Strategy::Group { source, .. } => Some(source.as_str()),
                    _ => None,
                };
                for path in &ours {
                    if !metas.contains_key(path)
                        && !sh.parts.inputs.contains_key(path)
                        && source != Some(path.as_str())
                        && templates.iter().any(|t| shards::matches_template(t, path))
                    {
                        let _ = self.beneath.remove_file(path);
                    }
                }
                let _ = shards::reset_written(&self.layout.dir, &inst.name, metas.keys());
            }
        }
        // Forget shard results, parts and slices that are no longer part of this instance.
        let slices: BTreeSet<PathBuf> =
            sh.shards.iter().map(|p| self.root.join(&p.input)).collect();
        let in_dir = shards::shard_dir(&self.layout.dir, &inst.name).join("in");
        for entry in std::fs::read_dir(&in_dir).into_iter().flatten().flatten() {
            if !slices.contains(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let keep: BTreeSet<[u8; 32]> = sh.shards.iter().map(|p| p.key.0).collect();
        if let Ok(recorded) = self.store.shard_results(&inst.name) {
            for k in recorded.keys().filter(|k| !keep.contains(*k)) {
                self.pending.forget_shards.push(*k);
                let part = shards::shard_dir(&self.layout.dir, &inst.name)
                    .join("out")
                    .join(format!("{}.part", Digest(*k).to_hex()));
                let _ = std::fs::remove_file(part);
            }
        }
        if !sh.unrecorded.is_empty() {
            let mut paths = sh.unrecorded;
            paths.sort();
            paths.dedup();
            self.unrecorded(i, paths, sh.key, metas, duration_ms);
            self.finish(i);
            return;
        }
        // A sharded instance ran many commands: its sidecar names the template they share.
        let sidecars = match self.provenance(inst, &sh.parts.command, &sh.parts) {
            Some((root, prov)) => write_sidecars(&inst.name, &root, &prov, &|p| {
                metas.get(p).map(|m| (m.digest, m.size))
            }),
            None => BTreeMap::new(),
        };
        if let Some(cache) = self.cache_for(i) {
            let outputs: Vec<(String, bool)> = metas.keys().map(|p| (p.clone(), false)).collect();
            let digests = metas.iter().map(|(p, m)| (p.clone(), m.digest)).collect();
            if let Err(m) = cache.store(StoreRequest {
                name: inst.name.clone(),
                root: self.root.clone(),
                key: sh.key,
                outputs,
                digests,
                discovered: discovered.clone(),
                duration_ms,
                staged: Staged::default(),
                meta: sidecars,
            }) {
                crate::say!("warning: {}: not cached: {m}", inst.name);
            }
        }
        let lineage = match spec.merge {
            Merge::None => shard_lineage(
                inst,
                &sh.parts,
                sh.shards
                    .iter()
                    .zip(&results)
                    .map(|(p, r)| (&p.shard, Some(&r.discovered))),
            ),
            Merge::Concat => BTreeMap::new(),
        };
        self.succeed(
            i,
            sh.parts,
            sh.key,
            metas,
            discovered,
            duration_ms,
            None,
            lineage,
        );
        self.finish(i);
    }
}

/// With `merge = "none"`, what each shard's outputs were built from ("built_from" JSON
/// by output path): the instance's inputs and upstream outputs that are no shard's
/// source, plus its own shard's source; for `chunk` and `group`, the source with the
/// shard's slice. Recording the whole instance's inputs instead would list every source
/// of the phase under each output.
pub(in crate::exec) fn shard_lineage<'a>(
    inst: &Instance,
    parts: &KeyParts,
    shards: impl IntoIterator<Item = (&'a crate::shard::Shard, Option<&'a Discovered>)>,
) -> BTreeMap<String, String> {
    use crate::shard::{Slice, expand_output};
    let shards: Vec<(&crate::shard::Shard, Option<&Discovered>)> = shards.into_iter().collect();
    let sources: BTreeSet<&str> = shards
        .iter()
        .filter_map(|(s, _)| match &s.slice {
            Slice::File(p) => Some(p.as_str()),
            Slice::Bytes(_) => None,
        })
        .collect();
    let source = inst.shard.as_ref().and_then(|spec| match &spec.strategy {
        crate::shard::Strategy::Chunk { source, .. }
        | crate::shard::Strategy::Group { source, .. } => Some(source.as_str()),
        crate::shard::Strategy::Files { .. } => None,
    });
    // What every shard shares, computed once: with thousands of `files` shards, each
    // shard then adds only its own source.
    let shared_inputs: BTreeMap<&String, &Digest> = parts
        .inputs
        .iter()
        .filter(|(p, _)| !sources.contains(p.as_str()))
        .collect();
    let mut shared_upstream = parts.upstream.clone();
    for u in shared_upstream.values_mut() {
        if let plan::Upstream::Present { outputs, .. } = u {
            outputs.retain(|p, _| !sources.contains(p.as_str()));
        }
    }
    let mut out = BTreeMap::new();
    let none = Discovered::new();
    for (s, discovered) in shards {
        let own = match &s.slice {
            Slice::File(p) => Some(p.as_str()),
            Slice::Bytes(_) => None,
        };
        let mut inputs = shared_inputs.clone();
        let mut upstream = shared_upstream.clone();
        if let Some(own) = own {
            if let Some((p, d)) = parts.inputs.get_key_value(own) {
                inputs.insert(p, d);
            }
            for (name, u) in &parts.upstream {
                if let plan::Upstream::Present { outputs, .. } = u
                    && let Some(d) = outputs.get(own)
                    && let Some(plan::Upstream::Present { outputs, .. }) = upstream.get_mut(name)
                {
                    outputs.insert(own.to_owned(), *d);
                }
            }
        }
        let text = serde_json::json!({
            "inputs": inputs,
            "upstream": upstream,
            "discovered": discovered.unwrap_or(&none),
            "shard": {
                "index": s.index,
                "key": s.key,
                "source": own.or(source),
                "slice": s.digest.to_hex(),
            },
        })
        .to_string();
        for t in &inst.shard_outputs {
            out.insert(expand_output(&t.path, s), text.clone());
        }
    }
    out
}
