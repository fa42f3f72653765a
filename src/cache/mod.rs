//! The content-addressed cache: results stored by action key, so an instance whose key
//! was built before (here, by a teammate, or in CI) is restored instead of run.
//!
//! Storing: a job's large outputs are copied into the store's `tmp/` while they are
//! hashed ([`Cache::digest_outputs`]); after the success, a background thread renames the
//! copies into place (and copies small outputs, checking their digest), writes the entry
//! and uploads, while the build goes on; [`Cache::finish`]
//! waits for it before the run ends. A result holding a file above `[cache] max_blob` is
//! not stored.
//!
//! Layout, locally under `.orch/cache` (or `[cache] dir`) and remotely under the URL:
//! `cas/DIGEST` holds contents by BLAKE3 digest, `ac/ACTION_KEY` the [`Entry`] (JSON)
//! describing every output of that action. Lookups go local, then remote; a remote hit
//! is kept locally. Every restored byte is verified against its digest; a corrupt blob
//! is discarded and the instance runs. Outputs are restored by reflink where the file
//! system can, else copied — never hard-linked, so editing an output cannot corrupt the
//! store. A failing or slow remote never fails a build: one warning, then local only.
//!
//! Entries are untrusted input (anyone who can write the store or the remote can write
//! one): each is checked against what its instance declares ([`validate`]) before a byte
//! is restored, and a restore never writes through a directory that leads out of the
//! project. An entry that fails a check is a miss, reported in one warning.

pub mod local;
pub mod remote;
mod validate;

pub use validate::{Declared, Invalid, validate};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::fs::{self, Beneath, Digest};
use local::Local;
use remote::RemoteStore;

/// Entry format version.
const ENTRY_FORMAT: u32 = 1;

/// Outputs at least this large are copied into the store as they are hashed (one read
/// instead of two); smaller ones are copied when stored.
const STAGE_MIN: u64 = 1 << 20;

/// One file of a stored directory output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Node {
    /// A regular file.
    File {
        /// Content digest.
        digest: Digest,
        /// Size in bytes.
        size: u64,
        /// Any execute bit set.
        executable: bool,
        /// Permission bits as built (`rwx` for user, group, others); absent in entries
        /// written before it was recorded, which restore as 0644 or 0755.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// A directory (kept so empty ones round-trip).
    Dir,
    /// A symbolic link.
    Symlink {
        /// Its target, as written.
        target: String,
    },
}

/// One stored output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stored {
    /// A file output.
    File {
        /// Content digest.
        digest: Digest,
        /// Size in bytes.
        size: u64,
        /// Any execute bit set.
        executable: bool,
        /// Permission bits as built (see [`Node::File`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// A directory output.
    Dir {
        /// Its tree digest (as recorded in manifests).
        digest: Digest,
        /// Its content, by path relative to it, sorted.
        entries: BTreeMap<String, Node>,
    },
}

impl Stored {
    /// The digest the manifest records for this output.
    pub fn digest(&self) -> Digest {
        match self {
            Stored::File { digest, .. } | Stored::Dir { digest, .. } => *digest,
        }
    }

    /// Bytes of content.
    pub fn size(&self) -> u64 {
        match self {
            Stored::File { size, .. } => *size,
            Stored::Dir { entries, .. } => entries
                .values()
                .map(|n| {
                    if let Node::File { size, .. } = n {
                        *size
                    } else {
                        0
                    }
                })
                .sum(),
        }
    }

    /// Each content blob with the size the entry declares for it.
    fn blobs(&self) -> Vec<(Digest, u64)> {
        match self {
            Stored::File { digest, size, .. } => vec![(*digest, *size)],
            Stored::Dir { entries, .. } => entries
                .values()
                .filter_map(|n| {
                    if let Node::File { digest, size, .. } = n {
                        Some((*digest, *size))
                    } else {
                        None
                    }
                })
                .collect(),
        }
    }
}

/// Everything an action produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Format version.
    pub v: u32,
    /// Output path → what it holds.
    pub outputs: BTreeMap<String, Stored>,
    /// How long building it took: the time a restore saves.
    pub duration_ms: u64,
    /// The files its depfile listed, with the digests it was built from: the entry is
    /// restored only while each still holds that content (absent: the file was absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub discovered: BTreeMap<String, Option<Digest>>,
    /// Output path → its provenance sidecar, for outputs declared with `meta = true`:
    /// restored beside the output, still describing the build that produced it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, crate::model::meta::Sidecar>,
}

/// Where a result came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The local store.
    Local,
    /// The remote cache.
    Remote,
}

impl Source {
    /// `local` or `remote`.
    pub fn name(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Remote => "remote",
        }
    }
}

/// Bytes moved and time saved in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Instances restored from the local store.
    pub local_hits: usize,
    /// Instances restored from the remote cache.
    pub remote_hits: usize,
    /// Bytes downloaded from the remote.
    pub bytes_down: u64,
    /// Bytes uploaded to the remote.
    pub bytes_up: u64,
    /// Build time the restored results had taken.
    pub saved_ms: u64,
    /// Successes not stored because a file was above `[cache] max_blob`.
    #[serde(skip_serializing_if = "is_zero")]
    pub too_large: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What [`Cache::digest_outputs`] did with one output.
enum Staging {
    /// Copied into the store's `tmp/` while hashed.
    Copied(local::Staged),
    /// Above `max_blob`: (its size, the limit).
    TooLarge(u64, u64),
}

/// A job's outputs copied into the store while they were hashed, waiting for
/// [`Cache::store`]; dropped (the job failed, or changed inputs), the copies are removed.
#[derive(Default)]
pub struct Staged {
    copied: BTreeMap<String, local::Staged>,
    /// Outputs above `max_blob`: (size, limit).
    too_large: BTreeMap<String, (u64, u64)>,
}

/// A success to store: see [`Cache::store`].
pub struct StoreRequest {
    /// The instance, for warnings.
    pub name: String,
    /// The project root.
    pub root: std::path::PathBuf,
    /// The action key.
    pub key: Digest,
    /// Every declared output: (path, is_dir).
    pub outputs: Vec<(String, bool)>,
    /// What the build recorded for each, so content that changed since is not stored.
    pub digests: BTreeMap<String, Digest>,
    /// The inputs its depfile listed.
    pub discovered: BTreeMap<String, Option<Digest>>,
    /// How long it took.
    pub duration_ms: u64,
    /// Copies made while its outputs were hashed.
    pub staged: Staged,
    /// The sidecars written beside its outputs: output path → sidecar.
    pub meta: BTreeMap<String, crate::model::meta::Sidecar>,
}

/// The local store of a project: `[cache] dir` (relative to the root, or absolute), else
/// `.orch/cache`.
pub fn local_dir(
    project: &crate::model::Project,
    layout: &crate::store::Layout,
) -> std::path::PathBuf {
    match &project.cache.dir {
        Some(d) => project.root.join(d),
        None => layout.cache_dir(),
    }
}

/// The cache of one build.
pub struct Cache {
    local: Local,
    /// The remote's URL; it is opened on first use, so builds that never look it up
    /// (a no-op) do not pay for it.
    remote_url: Option<String>,
    remote: std::sync::OnceLock<Option<Box<dyn RemoteStore>>>,
    push: bool,
    /// Whether the local store could be opened as orch's (checked on first use).
    local_ok: std::sync::OnceLock<bool>,
    /// Set after the first remote failure: the rest of the run is local only.
    remote_off: AtomicBool,
    stats: Mutex<Stats>,
    /// Files above this many bytes are not stored (`[cache] max_blob`).
    max_blob: Option<u64>,
    /// The thread storing results off the build's path, once one was handed over.
    worker: Mutex<Option<StoreWorker>>,
}

/// The channel to the storing thread, and the thread.
type StoreWorker = (
    crossbeam_channel::Sender<(Arc<Cache>, StoreRequest)>,
    std::thread::JoinHandle<()>,
);

impl Cache {
    /// A cache over the local store at `dir` and an optional remote URL, storing no
    /// file above `max_blob` bytes.
    pub fn new(dir: &Path, remote_url: Option<String>, push: bool, max_blob: Option<u64>) -> Cache {
        Cache {
            local: Local::new(dir),
            remote_url,
            remote: std::sync::OnceLock::new(),
            push,
            local_ok: std::sync::OnceLock::new(),
            remote_off: AtomicBool::new(false),
            stats: Mutex::new(Stats::default()),
            max_blob,
            worker: Mutex::new(None),
        }
    }

    /// The remote, opened the first time it is needed (a failure to open is one warning).
    fn opened(&self) -> Option<&dyn RemoteStore> {
        self.remote
            .get_or_init(|| {
                let url = self.remote_url.as_deref()?;
                match remote::open(url) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        crate::say!("warning: cannot use the remote cache: {e}; building locally");
                        None
                    }
                }
            })
            .as_deref()
    }

    /// Whether the local store is usable: opened (created and tagged if new) on first
    /// use. A directory that is not orch's is never adopted: one warning, and the build
    /// goes on without the cache, as it would with `--no-cache`.
    fn local_ok(&self) -> bool {
        *self.local_ok.get_or_init(|| match self.local.open() {
            Ok(()) => true,
            Err(e) => {
                crate::say!("warning: not using the cache: {e}; building without it");
                false
            }
        })
    }

    /// The bytes moved and time saved so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    fn remote(&self) -> Option<&dyn RemoteStore> {
        if self.remote_off.load(Ordering::SeqCst) || crate::exec::signal::interrupted() {
            None
        } else {
            self.opened()
        }
    }

    /// A remote failure: warn once, then build locally for the rest of the run.
    fn remote_failed(&self, what: &str, e: &dyn std::fmt::Display) {
        // A call cut short by Ctrl-C is not the remote's fault: nothing to report.
        if !self.remote_off.swap(true, Ordering::SeqCst)
            && !crate::exec::signal::interrupted()
            && let Some(Some(r)) = self.remote.get()
        {
            crate::say!(
                "warning: the remote cache {} failed ({what}: {e}); building locally for the rest of this run",
                r.describe()
            );
        }
    }

    /// The stored result of `key`, locally or remotely.
    pub fn lookup(&self, key: &Digest) -> Option<(Entry, Source)> {
        if !self.local_ok() {
            return None;
        }
        if let Some(e) = self.local.entry(key) {
            return Some((e, Source::Local));
        }
        let r = self.remote()?;
        match r.get(&format!("ac/{}", key.to_hex()), local::MAX_ENTRY_BYTES) {
            Ok(Some(bytes)) => {
                let entry: Entry = serde_json::from_slice(&bytes)
                    .ok()
                    .filter(|e: &Entry| e.v == ENTRY_FORMAT)?;
                Some((entry, Source::Remote))
            }
            Ok(None) => None,
            Err(e) => {
                self.remote_failed("lookup", &e);
                None
            }
        }
    }

    /// Restores every output of `entry` under `root`, each verified against its digest,
    /// once the entry is known to hold exactly the `declared` outputs and to write
    /// nothing else. Blobs missing locally come from the remote (and are kept locally).
    /// Each output's sidecar is written beside it as recorded, saying it was restored in
    /// run `run_id`.
    pub fn restore(
        &self,
        root: &Beneath,
        key: &Digest,
        entry: &Entry,
        source: Source,
        (declared, run_id): (&Declared, &str),
    ) -> Result<u64, String> {
        validate(entry, declared)
            .map_err(|e| format!("the {} cache entry is not usable: {e}", source.name()))?;
        for stored in entry.outputs.values() {
            for (d, size) in stored.blobs() {
                if !self.local.has(&d) {
                    self.fetch(&d, size)?;
                }
            }
        }
        let mut bytes = 0;
        for (path, stored) in &entry.outputs {
            self.local
                .restore(root, path, stored)
                .map_err(|e| format!("cannot restore `{path}`: {e}"))?;
            bytes += stored.size();
        }
        for (path, sidecar) in &entry.meta {
            let sidecar = crate::model::meta::Sidecar {
                restored_in_run: Some(run_id.to_owned()),
                ..sidecar.clone()
            };
            crate::model::meta::write(root, &sidecar)
                .map_err(|e| format!("cannot restore the sidecar of `{path}`: {e}"))?;
        }
        if source == Source::Remote {
            // A remote hit is kept locally for next time.
            let _ = self.local.put_entry(key, entry);
        }
        if let Ok(mut s) = self.stats.lock() {
            match source {
                Source::Local => s.local_hits += 1,
                Source::Remote => s.remote_hits += 1,
            }
            s.saved_ms += entry.duration_ms;
        }
        Ok(bytes)
    }

    fn fetch(&self, d: &Digest, size: u64) -> Result<(), String> {
        let Some(r) = self.remote() else {
            return Err(format!(
                "content {} is missing from the local store",
                d.short()
            ));
        };
        match r.get(&format!("cas/{}", d.to_hex()), size) {
            Ok(Some(bytes)) => {
                if fs::hash_bytes(&bytes) != *d {
                    return Err(format!(
                        "the remote cache returned corrupt content for {}; not used",
                        d.short()
                    ));
                }
                if let Ok(mut s) = self.stats.lock() {
                    s.bytes_down += bytes.len() as u64;
                }
                self.local
                    .put_bytes(d, &bytes)
                    .map_err(|e| format!("cannot keep content {}: {e}", d.short()))
            }
            Ok(None) => Err(format!(
                "content {} is missing from the remote cache",
                d.short()
            )),
            Err(e) => {
                self.remote_failed("download", &e);
                Err(format!("content {} could not be downloaded", d.short()))
            }
        }
    }

    /// Digests a job's `outputs` (project-relative) as [`fs::digest_paths`] does, copying
    /// each regular file into the store's `tmp/` in the same read: the copy is what
    /// [`Cache::store`] later puts in place, so storing a large output costs no second
    /// read. A file above `[cache] max_blob` is only hashed (and the result will not be
    /// stored), as are directories, symlinks, and every output when the store is not
    /// usable; a failed copy falls back to hashing, and storing reports it.
    pub fn digest_outputs(
        &self,
        root: &Path,
        outputs: &[String],
    ) -> (Vec<std::io::Result<fs::PathDigest>>, Staged) {
        use rayon::prelude::*;
        let usable = self.local_ok();
        let results: Vec<(std::io::Result<fs::PathDigest>, Option<Staging>)> = outputs
            .par_iter()
            .map(|rel| {
                let full = root.join(rel);
                let plain = || {
                    let mut d = fs::digest_paths(root, std::slice::from_ref(rel), |_| None);
                    (d.pop().unwrap_or(Ok(fs::PathDigest::Missing)), None)
                };
                let Ok(meta) = std::fs::symlink_metadata(&full) else {
                    return plain();
                };
                // A small file is only hashed here; storing copies it later, on the
                // storing thread, checking it still has this digest. Creating the copy
                // (a new file) costs far more than reading it twice, and would otherwise
                // delay the job's end and so whatever waits for it.
                if !usable || !meta.is_file() || meta.len() < STAGE_MIN {
                    return plain();
                }
                if let Some(max) = self.max_blob.filter(|m| meta.len() > *m) {
                    let (d, _) = plain();
                    return (d, Some(Staging::TooLarge(meta.len(), max)));
                }
                // Taken before reading, as `digest_paths` does: an edit during the copy
                // then makes the digest-cache row racy instead of vouching for it.
                let hashed_at_ns = fs::now_ns();
                match self.local.stage(&full) {
                    Ok((staged, meta)) => {
                        let stat = fs::FileStat::from_metadata(&meta);
                        let digest = staged.digest;
                        let d = fs::PathDigest::Present {
                            stat,
                            digest,
                            refreshed: Some(fs::CachedDigest {
                                stat,
                                digest,
                                hashed_at_ns,
                            }),
                        };
                        (Ok(d), Some(Staging::Copied(staged)))
                    }
                    Err(e) if fs::digest::is_interrupted(&e) => (Err(e), None),
                    Err(_) => plain(),
                }
            })
            .collect();
        let mut staged = Staged::default();
        let digests = outputs
            .iter()
            .zip(results)
            .map(|(rel, (d, s))| {
                match s {
                    Some(Staging::Copied(c)) => {
                        staged.copied.insert(rel.clone(), c);
                    }
                    Some(Staging::TooLarge(size, max)) => {
                        staged.too_large.insert(rel.clone(), (size, max));
                    }
                    None => {}
                }
                d
            })
            .collect();
        (digests, staged)
    }

    /// Stores the outputs of a success under its key, on a background thread so the
    /// build goes on meanwhile ([`Cache::finish`] waits for it). Returns an error at once,
    /// for the caller to warn about, when the result is not stored: an output above
    /// `[cache] max_blob`. A failure later on is a warning from the background thread.
    pub fn store(self: &Arc<Self>, req: StoreRequest) -> Result<(), String> {
        if !self.local_ok() {
            return Ok(());
        }
        let too_large = req
            .staged
            .too_large
            .iter()
            .next()
            .map(|(p, s)| (p.clone(), *s));
        let too_large = too_large.or_else(|| {
            let max = self.max_blob?;
            req.outputs.iter().find_map(|(path, is_dir)| {
                let size = std::fs::metadata(req.root.join(path)).ok()?.len();
                (!is_dir && size > max).then(|| (path.clone(), (size, max)))
            })
        });
        if let Some((path, (size, max))) = too_large {
            self.count_too_large();
            return Err(format!(
                "`{path}` is {}, above `[cache] max_blob` ({}); results holding a file this large are not stored",
                local::human_size(size),
                local::human_size(max)
            ));
        }
        let job = (Arc::clone(self), req);
        let Ok(mut worker) = self.worker.lock() else {
            job.0.store_now(job.1);
            return Ok(());
        };
        if worker.is_none() {
            let (tx, rx) = crossbeam_channel::unbounded::<(Arc<Cache>, StoreRequest)>();
            let spawned = std::thread::Builder::new()
                .name("orch-store".into())
                .spawn(move || {
                    for (cache, req) in rx {
                        cache.store_now(req);
                    }
                });
            if let Ok(handle) = spawned {
                *worker = Some((tx, handle));
            }
        }
        match worker.as_ref() {
            Some((tx, _)) => {
                if let Err(e) = tx.send(job) {
                    let (cache, req) = e.into_inner();
                    cache.store_now(req);
                }
            }
            // No thread to be had: store on this one, as before.
            None => {
                drop(worker);
                job.0.store_now(job.1);
            }
        }
        Ok(())
    }

    /// Waits until every result handed to [`Cache::store`] is stored (or, after Ctrl-C,
    /// abandoned: no half entry is ever visible). Call before the build ends.
    pub fn finish(&self) {
        let worker = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some((tx, handle)) = worker {
            drop(tx);
            let _ = handle.join();
        }
    }

    fn count_too_large(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.too_large += 1;
        }
    }

    /// Stores one result: blobs first (staged copies renamed into place, anything else
    /// copied now), then the entry, then the upload. Stops without an entry when the build
    /// is interrupted.
    fn store_now(&self, req: StoreRequest) {
        if let Err(m) = self.store_blobs(req) {
            crate::say!("warning: {m}");
        }
    }

    fn store_blobs(&self, mut req: StoreRequest) -> Result<(), String> {
        let name = req.name.clone();
        let mut entry = Entry {
            v: ENTRY_FORMAT,
            outputs: BTreeMap::new(),
            duration_ms: req.duration_ms,
            discovered: std::mem::take(&mut req.discovered),
            meta: std::mem::take(&mut req.meta),
        };
        for (path, is_dir) in &req.outputs {
            if crate::exec::signal::interrupted() {
                return Ok(());
            }
            let expected =
                req.digests.get(path).copied().ok_or_else(|| {
                    format!("{name}: not cached: no digest recorded for `{path}`")
                })?;
            let stored = match req.staged.copied.remove(path) {
                Some(c) if !is_dir && c.digest == expected => {
                    let stored = Stored::File {
                        digest: c.digest,
                        size: c.size,
                        executable: c.executable,
                        mode: Some(c.mode),
                    };
                    self.local.put_staged(c).map(|()| stored)
                }
                _ => self
                    .local
                    .ingest(&req.root.join(path), *is_dir, &expected, self.max_blob),
            };
            let stored = stored.map_err(|e| {
                if e.kind() == std::io::ErrorKind::FileTooLarge {
                    self.count_too_large();
                    // The file inside a directory output, named as the project does.
                    let e = e
                        .to_string()
                        .replace(&format!("{}/", req.root.display()), "");
                    format!(
                        "{name}: not cached: {e}; results holding a file this large are not stored"
                    )
                } else {
                    format!("{name}: not cached: cannot store `{path}`: {e}")
                }
            })?;
            entry.outputs.insert(path.clone(), stored);
        }
        if crate::exec::signal::interrupted() {
            return Ok(());
        }
        self.local
            .put_entry(&req.key, &entry)
            .map_err(|e| format!("{name}: not cached: cannot store the result: {e}"))?;
        if self.push
            && let Some(r) = self.remote()
        {
            self.push(r, &req.key, &entry);
        }
        Ok(())
    }

    /// Uploads the blobs, then the entry, so a reader never finds an entry without its
    /// content.
    fn push(&self, r: &dyn RemoteStore, key: &Digest, entry: &Entry) {
        let mut up = 0u64;
        for stored in entry.outputs.values() {
            for (d, _) in stored.blobs() {
                let Ok(bytes) = self.local.read(&d) else {
                    return;
                };
                up += bytes.len() as u64;
                if let Err(e) = r.put(&format!("cas/{}", d.to_hex()), bytes) {
                    self.remote_failed("upload", &e);
                    return;
                }
            }
        }
        let Ok(json) = serde_json::to_vec(entry) else {
            return;
        };
        up += json.len() as u64;
        if let Err(e) = r.put(&format!("ac/{}", key.to_hex()), json) {
            self.remote_failed("upload", &e);
            return;
        }
        if let Ok(mut s) = self.stats.lock() {
            s.bytes_up += up;
        }
    }

    /// Whether the local store holds a result for `key` (for `plan`).
    pub fn has_local(&self, key: &Digest) -> bool {
        self.local.entry(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_result_is_stored_in_the_background_and_in_place_after_finish() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(root.join("out")).unwrap();
        let hello = b"hello".repeat(STAGE_MIN as usize / 5 + 1);
        std::fs::write(root.join("out/a.txt"), &hello).unwrap();
        let cache = Arc::new(Cache::new(&dir.path().join("store"), None, false, None));
        let outputs = vec!["out/a.txt".to_owned()];
        let (digests, staged) = cache.digest_outputs(&root, &outputs);
        let Ok(fs::PathDigest::Present { digest, .. }) = &digests[0] else {
            panic!("{digests:?}");
        };
        assert_eq!(*digest, fs::hash_bytes(&hello));
        assert_eq!(staged.copied.len(), 1);
        let key = fs::hash_bytes(b"key");
        cache
            .store(StoreRequest {
                name: "a".into(),
                root: root.clone(),
                key,
                outputs: vec![("out/a.txt".into(), false)],
                digests: BTreeMap::from([("out/a.txt".to_owned(), *digest)]),
                discovered: BTreeMap::new(),
                duration_ms: 1,
                staged,
                meta: BTreeMap::new(),
            })
            .unwrap();
        cache.finish();
        // Edited after it was hashed: the stored copy is what was hashed.
        std::fs::write(root.join("out/a.txt"), "edited").unwrap();
        let (entry, source) = cache.lookup(&key).unwrap();
        assert_eq!(source, Source::Local);
        assert_eq!(entry.outputs["out/a.txt"].digest(), *digest);
        assert_eq!(cache.local.read(digest).unwrap(), hello);
    }

    #[test]
    fn a_small_output_is_copied_when_stored_and_only_while_it_holds_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a.txt"), "hello").unwrap();
        std::fs::write(root.join("b.txt"), "hello b").unwrap();
        let cache = Arc::new(Cache::new(&dir.path().join("store"), None, false, None));
        let request = |name: &str, digests: &[std::io::Result<fs::PathDigest>], staged| {
            let Ok(fs::PathDigest::Present { digest, .. }) = &digests[0] else {
                panic!("{digests:?}");
            };
            StoreRequest {
                name: name.into(),
                root: root.clone(),
                key: fs::hash_bytes(name.as_bytes()),
                outputs: vec![(format!("{name}.txt"), false)],
                digests: BTreeMap::from([(format!("{name}.txt"), *digest)]),
                discovered: BTreeMap::new(),
                duration_ms: 1,
                staged,
                meta: BTreeMap::new(),
            }
        };
        let (a, staged_a) = cache.digest_outputs(&root, &["a.txt".to_owned()]);
        let (b, staged_b) = cache.digest_outputs(&root, &["b.txt".to_owned()]);
        assert!(staged_a.copied.is_empty() && staged_b.copied.is_empty());
        // Edited between hashing and storing: that content matches no digest, so the
        // result is not stored; the untouched one is.
        std::fs::write(root.join("b.txt"), "edited").unwrap();
        cache.store(request("a", &a, staged_a)).unwrap();
        cache.store(request("b", &b, staged_b)).unwrap();
        cache.finish();
        let (entry, _) = cache.lookup(&fs::hash_bytes(b"a")).unwrap();
        let stored = entry.outputs["a.txt"].digest();
        assert_eq!(cache.local.read(&stored).unwrap(), b"hello");
        assert!(cache.lookup(&fs::hash_bytes(b"b")).is_none());
    }

    #[test]
    fn a_result_above_max_blob_is_refused_at_once_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("big"), "12345").unwrap();
        let cache = Arc::new(Cache::new(&root.join("store"), None, false, Some(4)));
        let (digests, staged) = cache.digest_outputs(&root, &["big".to_owned()]);
        assert!(staged.copied.is_empty());
        let Ok(fs::PathDigest::Present { digest, .. }) = &digests[0] else {
            panic!("{digests:?}");
        };
        let err = cache
            .store(StoreRequest {
                name: "big".into(),
                root: root.clone(),
                key: fs::hash_bytes(b"key"),
                outputs: vec![("big".into(), false)],
                digests: BTreeMap::from([("big".to_owned(), *digest)]),
                discovered: BTreeMap::new(),
                duration_ms: 1,
                staged,
                meta: BTreeMap::new(),
            })
            .unwrap_err();
        assert!(
            err.contains("`big` is 5 B, above `[cache] max_blob` (4 B)"),
            "{err}"
        );
        cache.finish();
        assert_eq!(cache.stats().too_large, 1);
        assert!(cache.lookup(&fs::hash_bytes(b"key")).is_none());
    }
}
