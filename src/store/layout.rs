//! Where every file orch keeps under a project's `.orch/` directory lives.
//!
//! All paths are derived here so the rest of orch never spells `.orch/...` by hand.
//! Nothing in this module touches the file system except [`Layout::ensure`],
//! [`Layout::ensure_value_key`] and [`Layout::read_value_key`].

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// Name of the state directory inside a project root.
pub const ORCH_DIR: &str = ".orch";

/// Longest file-name stem [`Layout::log_file`] produces before shortening it with a hash;
/// file systems commonly cap a name at 255 bytes and `.log` must still fit.
const MAX_LOG_STEM: usize = 200;

/// Longest key part of a shard log's name; the end of a longer key is kept.
const MAX_KEY_PART: usize = 40;

/// A shard log's key part shorter than this says too little to be worth its room.
const MIN_KEY_PART: usize = 8;

/// Paths inside `.orch/` of one project.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The project root (the directory holding the pipeline definition).
    pub root: PathBuf,
    /// `root/.orch`.
    pub dir: PathBuf,
}

impl Layout {
    /// Describes the `.orch/` of the project at `project_root` (no I/O).
    pub fn new(project_root: &Path) -> Layout {
        Layout {
            root: project_root.to_path_buf(),
            dir: project_root.join(ORCH_DIR),
        }
    }

    /// `.orch/state.db`: the SQLite state database.
    pub fn db(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    /// `.orch/lock`: the build lock file.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// `.orch/runs/RUN_ID`: per-run records.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.dir.join("runs").join(run_id)
    }

    /// `.orch/runs/RUN_ID/events.jsonl`: the run's event stream.
    pub fn events(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("events.jsonl")
    }

    /// `.orch/logs/RUN_ID`: the run's per-instance logs.
    pub fn log_dir(&self, run_id: &str) -> PathBuf {
        self.dir.join("logs").join(run_id)
    }

    /// `.orch/logs/RUN_ID/<instance>.log`, with the instance name made file-name safe.
    ///
    /// Scheme (see [`log_file_stem`]): `[A-Za-z0-9._=,-]` and `_` are kept, `[` and `]`
    /// become `_`, every other byte of the UTF-8 name becomes `%XX` (upper-case hex), so
    /// `translate[lang=fr]` → `translate_lang=fr_.log` and `a/b c` → `a%2Fb%20c.log`.
    /// The only collisions are between brackets and literal underscores (`a[b]` and
    /// `a_b_`), which real instance names do not produce. Stems longer than 200 bytes are
    /// cut and suffixed with a hash of the full name to stay under file-name limits.
    pub fn log_file(&self, run_id: &str, instance: &str) -> PathBuf {
        let mut name = log_file_stem(instance);
        name.push_str(".log");
        self.log_dir(run_id).join(name)
    }

    /// `.orch/logs/RUN_ID/<instance>#<index>-<key>.log`: one shard's log, named by its
    /// `{shard.key}` too (`compile#3-src_mem.c.log`) so a listing says which is which.
    ///
    /// The key part keeps `[A-Za-z0-9._=,-]`, turns every other character into `_`, keeps
    /// the end of a long key (a path's file name) and is left out when the key is the
    /// index (chunks). The instance stem and index alone already name one shard of one
    /// run (`#` never appears in a stem), so the key part needs no digest to stay unique.
    pub fn shard_log_file(&self, run_id: &str, instance: &str, index: usize, key: &str) -> PathBuf {
        let mut name = log_file_stem(instance);
        let _ = write!(name, "#{index}");
        if key != index.to_string() {
            let room = MAX_LOG_STEM
                .saturating_sub(name.len() + 1)
                .min(MAX_KEY_PART);
            let safe: Vec<char> = key
                .chars()
                .map(|c| match c {
                    'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '=' | ',' | '-' => c,
                    _ => '_',
                })
                .collect();
            if room >= MIN_KEY_PART && !safe.is_empty() {
                name.push('-');
                name.extend(&safe[safe.len().saturating_sub(room)..]);
            }
        }
        name.push_str(".log");
        self.log_dir(run_id).join(name)
    }

    /// `.orch/key`: the project's secret 32-byte key for digests of variable values
    /// (mode 0600, created once by [`Layout::ensure_value_key`]).
    pub fn value_key(&self) -> PathBuf {
        self.dir.join("key")
    }

    /// The project's value key, None when it is missing, unreadable or damaged.
    pub fn read_value_key(&self) -> Option<[u8; 32]> {
        use std::io::Read as _;
        // State is untrusted: never block on a FIFO planted there, nor read a huge file.
        let file = crate::fs::digest::open_regular(&self.value_key()).ok()?;
        let mut bytes = Vec::with_capacity(33);
        file.take(33).read_to_end(&mut bytes).ok()?;
        bytes.try_into().ok()
    }

    /// `.orch/cache`: content-addressed cache storage.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// Creates .orch/ (and a `.gitignore` containing `*` inside it so users never commit state).
    pub fn ensure(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // create_new: never clobber a .gitignore the user edited, and stay race-free when
        // two orch processes start at once.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.dir.join(".gitignore"))
        {
            Ok(mut file) => file.write_all(b"*\n"),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Creates the value key when it is missing or damaged. Only builds call this: the
    /// read-only commands leave a missing key missing, and then compare values as unknown.
    pub fn ensure_value_key(&self) -> io::Result<()> {
        if self.read_value_key().is_some() {
            return Ok(());
        }
        self.create_value_key()
    }

    /// Writes a fresh random key to a private temporary file, then moves it into place
    /// without replacing one, so no reader ever sees a partial key and two processes
    /// racing agree on one key.
    fn create_value_key(&self) -> io::Result<()> {
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        let tmp = tempfile::Builder::new()
            .prefix(".key-")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)?;
        tmp.as_file().write_all(&key)?;
        tmp.as_file().sync_all()?;
        match tmp.persist_noclobber(self.value_key()) {
            Ok(_) => Ok(()),
            // Another process made one first: keep it, unless it is damaged.
            Err(err) if err.error.kind() == io::ErrorKind::AlreadyExists => {
                if self.read_value_key().is_none() {
                    err.file.persist(self.value_key()).map_err(|e| e.error)?;
                }
                Ok(())
            }
            Err(err) => Err(err.error),
        }
    }
}

/// The file-name stem used for an instance's log (the scheme is documented on [`Layout::log_file`]).
pub fn log_file_stem(instance: &str) -> String {
    let mut out = String::with_capacity(instance.len());
    for &byte in instance.as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b',' | b'-' => {
                out.push(char::from(byte));
            }
            b'[' | b']' => out.push('_'),
            // Writing to a String cannot fail.
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    if out.len() > MAX_LOG_STEM {
        // Everything in `out` is ASCII, so any byte index is a char boundary.
        out.truncate(MAX_LOG_STEM - 17);
        let hash = blake3::hash(instance.as_bytes()).to_hex();
        out.push('-');
        out.push_str(&hash[..16]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_under_dot_orch() {
        let layout = Layout::new(Path::new("/p"));
        assert_eq!(layout.dir, Path::new("/p/.orch"));
        assert_eq!(layout.db(), Path::new("/p/.orch/state.db"));
        assert_eq!(layout.lock(), Path::new("/p/.orch/lock"));
        assert_eq!(layout.run_dir("r1"), Path::new("/p/.orch/runs/r1"));
        assert_eq!(
            layout.events("r1"),
            Path::new("/p/.orch/runs/r1/events.jsonl")
        );
        assert_eq!(layout.log_dir("r1"), Path::new("/p/.orch/logs/r1"));
        assert_eq!(layout.cache_dir(), Path::new("/p/.orch/cache"));
        assert_eq!(
            layout.log_file("r1", "translate[lang=fr]"),
            Path::new("/p/.orch/logs/r1/translate_lang=fr_.log")
        );
    }

    #[test]
    fn shard_logs_carry_a_safe_key() {
        let layout = Layout::new(Path::new("/p"));
        let log = |inst: &str, index: usize, key: &str| {
            layout
                .shard_log_file("r", inst, index, key)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        assert_eq!(log("compile", 3, "src/mem.c"), "compile#3-src_mem.c.log");
        assert_eq!(log("t[lang=fr]", 2, "route 7"), "t_lang=fr_#2-route_7.log");
        assert_eq!(log("split", 4, "4"), "split#4.log");
        assert_eq!(log("g", 0, "a\n\u{1b}[31m/../x"), "g#0-a___31m_.._x.log");
        assert_eq!(log("g", 1, "/"), "g#1-_.log");
        let long = format!("lib/{}common/mem.c", "deep/".repeat(30));
        let name = log("compile", 12, &long);
        assert_eq!(
            name,
            "compile#12-ep_deep_deep_deep_deep_deep_common_mem.c.log"
        );
        // A stem near the limit leaves no room for the key; the name stays bounded.
        let name = log(&"x".repeat(300), 5, "src/mem.c");
        assert!(name.len() <= MAX_LOG_STEM + 10, "{name}");
        assert!(name.ends_with("#5.log"), "{name}");
    }

    #[test]
    fn log_stem_escapes_unsafe_bytes() {
        assert_eq!(log_file_stem("build_docs"), "build_docs");
        assert_eq!(log_file_stem("t[a=1,b=x-y.z]"), "t_a=1,b=x-y.z_");
        assert_eq!(log_file_stem("a/b c"), "a%2Fb%20c");
        assert_eq!(log_file_stem("../x"), "..%2Fx");
        assert_eq!(log_file_stem("50%"), "50%25");
        assert_eq!(log_file_stem("é"), "%C3%A9");
        assert_ne!(log_file_stem("a%2F"), log_file_stem("a/"));
    }

    #[test]
    fn long_log_stems_are_shortened_and_distinct() {
        let a = format!("t[{}]", "x".repeat(500));
        let b = format!("t[{}y]", "x".repeat(499));
        let (sa, sb) = (log_file_stem(&a), log_file_stem(&b));
        assert_eq!(sa.len(), MAX_LOG_STEM);
        assert_eq!(sb.len(), MAX_LOG_STEM);
        assert_ne!(sa, sb);
    }

    #[test]
    fn ensure_creates_dir_and_gitignore_once() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        layout.ensure()?;
        let gitignore = layout.dir.join(".gitignore");
        assert_eq!(std::fs::read_to_string(&gitignore)?, "*\n");
        std::fs::write(&gitignore, "*\n# edited\n")?;
        layout.ensure()?;
        assert_eq!(std::fs::read_to_string(&gitignore)?, "*\n# edited\n");
        Ok(())
    }

    #[test]
    fn ensure_value_key_creates_a_private_key_once() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        layout.ensure()?;
        assert_eq!(layout.read_value_key(), None);
        layout.ensure_value_key()?;
        let key = layout.read_value_key().ok_or(io::ErrorKind::NotFound)?;
        let mode = std::fs::metadata(layout.value_key())?.permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        layout.ensure_value_key()?;
        assert_eq!(layout.read_value_key(), Some(key));
        // A damaged key is replaced; no temporary file is left behind.
        std::fs::write(layout.value_key(), b"short")?;
        layout.ensure_value_key()?;
        assert!(layout.read_value_key().is_some_and(|k| k != key));
        let names: Vec<String> = std::fs::read_dir(&layout.dir)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".key-")), "{names:?}");
        Ok(())
    }
}
