//! The content-addressed cache: results stored by action key, so an instance whose key
//! was built before (here, by a teammate, or in CI) is restored instead of run.
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
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::fs::{self, Beneath, Digest};
use local::Local;
use remote::RemoteStore;

/// Entry format version.
const ENTRY_FORMAT: u32 = 1;

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
}

impl Cache {
    /// A cache over the local store at `dir` and an optional remote URL.
    pub fn new(dir: &Path, remote_url: Option<String>, push: bool) -> Cache {
        Cache {
            local: Local::new(dir),
            remote_url,
            remote: std::sync::OnceLock::new(),
            push,
            local_ok: std::sync::OnceLock::new(),
            remote_off: AtomicBool::new(false),
            stats: Mutex::new(Stats::default()),
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
    pub fn restore(
        &self,
        root: &Beneath,
        key: &Digest,
        entry: &Entry,
        source: Source,
        declared: &Declared,
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

    /// Stores the outputs of a success under `key`: `outputs` are (path, is_dir) and
    /// `digests` what the build recorded, so content that changed since is not stored;
    /// `discovered` are the inputs its depfile listed.
    pub fn store(
        &self,
        root: &Path,
        key: &Digest,
        outputs: &[(String, bool)],
        digests: &BTreeMap<String, Digest>,
        discovered: &BTreeMap<String, Option<Digest>>,
        duration_ms: u64,
    ) -> Result<(), String> {
        if !self.local_ok() {
            return Ok(());
        }
        let mut entry = Entry {
            v: ENTRY_FORMAT,
            outputs: BTreeMap::new(),
            duration_ms,
            discovered: discovered.clone(),
        };
        for (path, is_dir) in outputs {
            let expected = digests
                .get(path)
                .copied()
                .ok_or_else(|| format!("no digest recorded for `{path}`"))?;
            let stored = self
                .local
                .ingest(&root.join(path), *is_dir, &expected)
                .map_err(|e| format!("cannot store `{path}`: {e}"))?;
            entry.outputs.insert(path.clone(), stored);
        }
        self.local
            .put_entry(key, &entry)
            .map_err(|e| format!("cannot store the result: {e}"))?;
        if self.push
            && let Some(r) = self.remote()
        {
            self.push(r, key, &entry);
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
