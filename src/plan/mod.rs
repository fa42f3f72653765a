//! Planning: which instances are up to date and why the others are stale.
//!
//! [`evaluate`] is the single staleness rule, used both before a build (by
//! [`plan_static`], for `plan`, `status` and `--dry-run`) and during it, when an
//! instance's upstreams have finished and its real key is known (early cutoff).

pub mod key;
pub mod reason;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::fs::Digest;
pub use key::{
    Discovered, KeyEncoder, KeyParts, Manifest, OutputMeta, Success, Upstream, discovered_whys,
    is_discoverable,
};
pub use reason::{Reason, Why};

/// The recorded state of one instance, as the planner needs it.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// The latest attempt failed.
    pub last_failed: bool,
    /// The last success.
    pub success: Option<Success>,
}

/// Up to date, or stale with reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The recorded success matches and its outputs are intact.
    Fresh,
    /// Must run, for these reasons (sorted).
    Stale(Vec<Why>),
}

/// Decides whether an instance with key parts `parts` is up to date.
///
/// `digest_now` gives the current digest of each output path and discovered input
/// recorded in the manifest (None when missing). Discovered inputs are checked beside the
/// key, as a second level: the key says what was declared, the manifest what the command
/// turned out to read.
pub fn evaluate(
    parts: &KeyParts,
    key: &Digest,
    recorded: &Recorded,
    digest_now: &dyn Fn(&str) -> Option<Digest>,
    forced: bool,
    always: bool,
) -> Freshness {
    evaluate_with(
        key,
        &|old| parts.diff(old),
        recorded,
        digest_now,
        forced,
        always,
    )
}

/// [`evaluate`] for a caller that has the key but not its parts: `diff` names what
/// changed against the recorded parts, and is called only when the keys differ (the
/// parts are then worth building).
pub fn evaluate_with(
    key: &Digest,
    diff: &dyn Fn(&KeyParts) -> Vec<Why>,
    recorded: &Recorded,
    digest_now: &dyn Fn(&str) -> Option<Digest>,
    forced: bool,
    always: bool,
) -> Freshness {
    let mut whys = Vec::new();
    if forced {
        whys.push(Why::plain(Reason::Forced));
    }
    if always {
        whys.push(Why::plain(Reason::Always));
    }
    if recorded.last_failed {
        whys.push(Why::plain(Reason::LastFailed));
    }
    match &recorded.success {
        None => whys.push(Why::plain(Reason::NeverBuilt)),
        Some(success) => {
            if success.key != *key {
                // Different keys always mean stale, even when the parts name no
                // difference (a key computed otherwise than the recorded one was).
                match success.parts().map(diff) {
                    Some(named) if !named.is_empty() => whys.extend(named),
                    _ => whys.push(Why::plain(Reason::CommandChanged)),
                }
            }
            // Under another key the command changed anyway; the discovered inputs are
            // named only when they are the whole story.
            if success.key == *key {
                whys.extend(discovered_whys(&success.discovered, digest_now));
            }
            for (path, meta) in &success.outputs {
                match digest_now(path) {
                    None => whys.push(Why::about(Reason::OutputMissing, path.clone())),
                    Some(d) if d != meta.digest => {
                        whys.push(Why::about(Reason::OutputModified, path.clone()))
                    }
                    _ => {}
                }
            }
        }
    }
    if whys.is_empty() {
        Freshness::Fresh
    } else {
        whys.sort();
        whys.dedup();
        Freshness::Stale(whys)
    }
}

/// One row of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanEntry {
    /// Instance name.
    pub instance: String,
    /// Whether it would run.
    pub stale: bool,
    /// Why (empty when up to date).
    pub reasons: Vec<Why>,
    /// The action key, computed from upstream outputs as recorded.
    #[serde(skip)]
    pub key: Digest,
}

/// What the static planner reads about the project and its recorded state.
pub trait PlanSource {
    /// Key parts of instance `i`, given each upstream's outputs (None: not available).
    fn parts(
        &self,
        i: usize,
        upstream: &dyn Fn(usize) -> Option<BTreeMap<String, Digest>>,
    ) -> KeyParts;
    /// The action key of instance `i`, given each upstream's outputs as recorded: the
    /// key of [`PlanSource::parts`] with those outputs, which a source may compute
    /// without building the parts.
    fn key(&self, i: usize) -> Digest {
        self.parts(i, &|j| recorded_outputs(self.recorded(j)))
            .action_key()
    }
    /// Recorded state of instance `i`.
    fn recorded(&self, i: usize) -> &Recorded;
    /// Current digest of an output path (None when missing).
    fn output_now(&self, path: &str) -> Option<Digest>;
    /// Whether `--force`/`--from` selects instance `i`.
    fn forced(&self, i: usize) -> bool;
    /// Whether instance `i` has `always = true`.
    fn always(&self, i: usize) -> bool;
    /// Upstream instances of `i`.
    fn upstreams(&self, i: usize) -> Vec<usize>;
    /// Name of instance `i`.
    fn name(&self, i: usize) -> &str;
}

/// An upstream's outputs as recorded (None when it has no success on record).
pub fn recorded_outputs(r: &Recorded) -> Option<BTreeMap<String, Digest>> {
    r.success.as_ref().map(Success::output_digests)
}

/// Plans `order` (a topological order of the selected instances) before anything runs.
/// An instance downstream of one that will run is stale with `upstream_changed`, since
/// its upstream's new outputs are not known yet (early cutoff may still skip it).
pub fn plan_static(order: &[usize], src: &dyn PlanSource) -> BTreeMap<usize, PlanEntry> {
    let mut out: BTreeMap<usize, PlanEntry> = BTreeMap::new();
    for &i in order {
        // Most instances of a large project are unchanged: their key is streamed straight
        // into the hash, and the parts are built only to name what changed.
        let key = src.key(i);
        let diff = |old: &KeyParts| {
            src.parts(i, &|j| recorded_outputs(src.recorded(j)))
                .diff(old)
        };
        let mut whys = match evaluate_with(
            &key,
            &diff,
            src.recorded(i),
            &|p| src.output_now(p),
            src.forced(i),
            src.always(i),
        ) {
            Freshness::Fresh => Vec::new(),
            Freshness::Stale(w) => w,
        };
        for j in src.upstreams(i) {
            if out.get(&j).is_some_and(|e| e.stale) {
                whys.push(Why::about(Reason::UpstreamChanged, src.name(j)));
            }
        }
        whys.sort();
        whys.dedup();
        out.insert(
            i,
            PlanEntry {
                instance: src.name(i).to_owned(),
                stale: !whys.is_empty(),
                reasons: whys,
                key,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::hash_bytes;

    fn parts(cmd: &str) -> KeyParts {
        KeyParts {
            instance: "a".into(),
            command: cmd.into(),
            cwd: String::new(),
            outputs: vec!["out".into()],
            shard: String::new(),
            env: BTreeMap::new(),
            inputs: BTreeMap::new(),
            upstream: BTreeMap::new(),
            schemas: BTreeMap::new(),
            depfile: String::new(),
        }
    }

    fn recorded(p: &KeyParts, out: Digest) -> Recorded {
        Recorded {
            last_failed: false,
            success: Some(Success::from_manifest(
                p.action_key(),
                Manifest {
                    parts: p.clone(),
                    outputs: BTreeMap::from([(
                        "out".into(),
                        OutputMeta {
                            digest: out,
                            size: 1,
                        },
                    )]),
                    discovered: BTreeMap::new(),
                },
            )),
        }
    }

    #[test]
    fn fresh_when_key_and_outputs_match() {
        let p = parts("x");
        let d = hash_bytes(b"o");
        let r = recorded(&p, d);
        assert_eq!(
            evaluate(&p, &p.action_key(), &r, &|_| Some(d), false, false),
            Freshness::Fresh
        );
    }

    #[test]
    fn reasons() {
        let p = parts("x");
        let d = hash_bytes(b"o");
        let r = recorded(&p, d);
        let stale = |f: Freshness| match f {
            Freshness::Stale(w) => reason::codes(&w),
            Freshness::Fresh => vec![],
        };
        // A discovered input that changed makes the same key stale, and is named.
        let mut with_header = recorded(&p, d);
        if let Some(s) = with_header.success.as_mut() {
            s.discovered = BTreeMap::from([("h.h".into(), Some(hash_bytes(b"h")))]);
        }
        let now = |p: &str| Some(if p == "h.h" { hash_bytes(b"h2") } else { d });
        assert_eq!(
            evaluate(&p, &p.action_key(), &with_header, &now, false, false),
            Freshness::Stale(vec![Why::about(Reason::InputChanged, "h.h")])
        );
        let same = |p: &str| Some(if p == "h.h" { hash_bytes(b"h") } else { d });
        assert_eq!(
            evaluate(&p, &p.action_key(), &with_header, &same, false, false),
            Freshness::Fresh
        );
        assert_eq!(
            stale(evaluate(
                &p,
                &p.action_key(),
                &Recorded::default(),
                &|_| None,
                false,
                false
            )),
            vec![Reason::NeverBuilt]
        );
        assert_eq!(
            stale(evaluate(&p, &p.action_key(), &r, &|_| None, false, false)),
            vec![Reason::OutputMissing]
        );
        assert_eq!(
            stale(evaluate(
                &p,
                &p.action_key(),
                &r,
                &|_| Some(hash_bytes(b"z")),
                false,
                false
            )),
            vec![Reason::OutputModified]
        );
        assert_eq!(
            stale(evaluate(&p, &p.action_key(), &r, &|_| Some(d), true, true)),
            vec![Reason::Forced, Reason::Always]
        );
        let q = parts("y");
        assert_eq!(
            stale(evaluate(
                &q,
                &q.action_key(),
                &r,
                &|_| Some(d),
                false,
                false
            )),
            vec![Reason::CommandChanged]
        );
        let failed = Recorded {
            last_failed: true,
            ..r
        };
        assert_eq!(
            stale(evaluate(
                &p,
                &p.action_key(),
                &failed,
                &|_| Some(d),
                false,
                false
            )),
            vec![Reason::LastFailed]
        );
    }
}
