//! What `orch verify` needs beside a build: the scratch copy of a project, the
//! perturbation of each round, and where two versions of an output first differ.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::Path;

use walkdir::WalkDir;

/// Time zones the rounds move through: whole, half and quarter hours on both sides of
/// UTC, so a command that prints local time cannot agree with itself by chance. POSIX
/// rules rather than zone names: they need no time zone database on the machine.
const ZONES: &[&str] = &["LINT-14", "NST+3:30", "NPT-5:45", "SST+11", "UTC0"];

/// How one round bends the build away from the recorded one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// Its number, from 1.
    pub number: u32,
    /// Parallel jobs.
    pub jobs: usize,
    /// Seed of the ready order of instances and shards.
    pub shuffle: u64,
    /// The `TZ` its commands see.
    pub tz: &'static str,
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "round {}: -j {}, TZ={}", self.number, self.jobs, self.tz)
    }
}

/// The `rounds` rounds of seed `seed` on a machine of `cpus` CPUs: `-j` goes 1, 2, then
/// the CPUs (at least 3, so the third round still differs from the second), over and
/// over; the ready order and the time zone come from the seed, so a seed repeats them.
pub fn rounds(seed: u64, rounds: u32, cpus: usize) -> Vec<Round> {
    let mut rng = fastrand::Rng::with_seed(seed);
    // Zones in turn from a seeded start, so consecutive rounds never share one.
    let first_zone = rng.usize(..ZONES.len());
    (1..=rounds)
        .map(|number| Round {
            number,
            jobs: match number % 3 {
                1 => 1,
                2 => 2,
                _ => cpus.max(3),
            },
            shuffle: rng.u64(..),
            tz: ZONES[(first_zone + number as usize) % ZONES.len()],
        })
        .collect()
}

/// Copies the project at `from` into `to` (which must not exist): every file but those
/// under a directory named in `skip_dirs` (at any depth), under a project-relative path
/// in `skip` (a file, or a directory and all below it). Symbolic links stay links;
/// FIFOs, sockets and devices are left out.
pub fn copy_project(
    from: &Path,
    to: &Path,
    skip_dirs: &[&str],
    skip: &BTreeSet<String>,
) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    let skipped = |rel: &str| {
        skip.iter().any(|s| {
            rel == s
                || rel
                    .strip_prefix(s.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    };
    let walk = WalkDir::new(from)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            let dir_skipped = e.file_type().is_dir()
                && e.file_name()
                    .to_str()
                    .is_some_and(|n| skip_dirs.contains(&n));
            !dir_skipped && !relative(from, e.path()).is_some_and(|r| skipped(&r))
        });
    for entry in walk {
        let entry = entry.map_err(io::Error::other)?;
        let Some(rel) = relative(from, entry.path()) else {
            continue;
        };
        let dest = to.join(&rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else if ft.is_file() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// `path` relative to `root`, with `/` separators; None for a path not below it or not
/// UTF-8.
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?.to_str()?;
    Some(rel.replace(std::path::MAIN_SEPARATOR, "/"))
}

/// Where two versions of a file first differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// Both are text: the first line (from 1) that differs, and that line in each (None
    /// past the end of that version).
    Line {
        /// The line number, from 1.
        number: usize,
        /// The line in the recorded version.
        recorded: Option<String>,
        /// The line in the scratch version.
        scratch: Option<String>,
    },
    /// The first byte offset (from 0) at which they differ; one may end there.
    Byte(u64),
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Line {
                number,
                recorded,
                scratch,
            } => {
                let show = |l: &Option<String>| match l {
                    Some(l) => format!("{l:?}"),
                    None => "(no such line)".to_owned(),
                };
                write!(
                    f,
                    "first difference at line {number}:\n  recorded: {}\n  scratch:  {}",
                    show(recorded),
                    show(scratch)
                )
            }
            Difference::Byte(at) => write!(f, "first difference at byte {at}"),
        }
    }
}

/// Where `recorded` and `scratch` first differ; None when they are equal. Text (UTF-8
/// without NUL) is compared by line, anything else by byte.
pub fn first_difference(recorded: &[u8], scratch: &[u8]) -> Option<Difference> {
    if recorded == scratch {
        return None;
    }
    let text = |b: &[u8]| !b.contains(&0) && std::str::from_utf8(b).is_ok();
    if let (true, true, Ok(a), Ok(b)) = (
        text(recorded),
        text(scratch),
        std::str::from_utf8(recorded),
        std::str::from_utf8(scratch),
    ) {
        let (mut la, mut lb) = (a.split_inclusive('\n'), b.split_inclusive('\n'));
        let mut number = 0;
        loop {
            number += 1;
            match (la.next(), lb.next()) {
                (None, None) => break,
                (x, y) if x == y => continue,
                (x, y) => {
                    let strip = |l: &str| l.trim_end_matches('\n').to_owned();
                    return Some(Difference::Line {
                        number,
                        recorded: x.map(strip),
                        scratch: y.map(strip),
                    });
                }
            }
        }
    }
    let at = recorded
        .iter()
        .zip(scratch)
        .position(|(x, y)| x != y)
        .unwrap_or(recorded.len().min(scratch.len()));
    Some(Difference::Byte(at as u64))
}

/// The first file (in path order) that differs between directories `recorded` and
/// `scratch`, its path relative to them, and how: None for the difference when one of
/// them lacks the file.
pub fn first_difference_in_dirs(
    recorded: &Path,
    scratch: &Path,
) -> io::Result<Option<(String, Option<Difference>)>> {
    let files = |root: &Path| -> io::Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for e in WalkDir::new(root).min_depth(1) {
            let e = e.map_err(io::Error::other)?;
            if !e.file_type().is_dir()
                && let Some(rel) = relative(root, e.path())
            {
                out.insert(rel);
            }
        }
        Ok(out)
    };
    let (a, b) = (files(recorded)?, files(scratch)?);
    for rel in a.union(&b) {
        if !a.contains(rel) || !b.contains(rel) {
            return Ok(Some((rel.clone(), None)));
        }
        let (x, y) = (
            std::fs::read(recorded.join(rel))?,
            std::fs::read(scratch.join(rel))?,
        );
        if let Some(d) = first_difference(&x, &y) {
            return Ok(Some((rel.clone(), Some(d))));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_differs_at_its_first_different_line() {
        assert_eq!(first_difference(b"a\nb\n", b"a\nb\n"), None);
        assert_eq!(
            first_difference(b"a\nb\nc\n", b"a\nB\nc\n"),
            Some(Difference::Line {
                number: 2,
                recorded: Some("b".into()),
                scratch: Some("B".into()),
            })
        );
        // A version that ends early differs at the line the other still has.
        assert_eq!(
            first_difference(b"a\n", b"a\nb\n"),
            Some(Difference::Line {
                number: 2,
                recorded: None,
                scratch: Some("b".into()),
            })
        );
        // A missing final newline is a difference of that line.
        assert!(matches!(
            first_difference(b"a\nb", b"a\nb\n"),
            Some(Difference::Line { number: 2, .. })
        ));
    }

    #[test]
    fn binary_differs_at_its_first_different_byte() {
        assert_eq!(
            first_difference(b"\0\x01\x02", b"\0\x01\x03"),
            Some(Difference::Byte(2))
        );
        assert_eq!(
            first_difference(b"\0\x01", b"\0\x01\x02"),
            Some(Difference::Byte(2))
        );
    }

    #[test]
    fn a_seed_repeats_its_rounds_and_jobs_vary() {
        let a = rounds(7, 4, 8);
        assert_eq!(a, rounds(7, 4, 8));
        assert_eq!(
            a.iter().map(|r| r.jobs).collect::<Vec<_>>(),
            vec![1, 2, 8, 1]
        );
        assert_ne!(a[0].shuffle, rounds(8, 1, 8)[0].shuffle);
        assert_eq!(rounds(1, 3, 1)[2].jobs, 3);
        assert!(a.windows(2).all(|w| w[0].tz != w[1].tz), "{a:?}");
    }

    #[test]
    fn the_copy_leaves_out_skipped_directories_and_paths() {
        let t = tempfile::tempdir().unwrap();
        let from = t.path().join("p");
        for f in [
            "a.txt",
            "out/x",
            "outer/y",
            ".orch/state.db",
            "sub/.git/HEAD",
        ] {
            let p = from.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        std::os::unix::fs::symlink("a.txt", from.join("link")).unwrap();
        let to = t.path().join("q");
        let skip = BTreeSet::from(["out".to_owned()]);
        copy_project(&from, &to, &[".orch", ".git"], &skip).unwrap();
        assert_eq!(std::fs::read(to.join("a.txt")).unwrap(), b"a.txt");
        assert_eq!(std::fs::read(to.join("outer/y")).unwrap(), b"outer/y");
        assert_eq!(
            std::fs::read_link(to.join("link")).unwrap(),
            Path::new("a.txt")
        );
        for gone in ["out", ".orch", "sub/.git"] {
            assert!(!to.join(gone).exists(), "{gone}");
        }
    }

    #[test]
    fn directories_differ_at_their_first_different_file() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("1.txt"), "same\n").unwrap();
        }
        assert_eq!(first_difference_in_dirs(&a, &b).unwrap(), None);
        std::fs::write(a.join("2.txt"), "x\n").unwrap();
        std::fs::write(b.join("2.txt"), "y\n").unwrap();
        std::fs::write(b.join("3.txt"), "new\n").unwrap();
        let (path, d) = first_difference_in_dirs(&a, &b).unwrap().unwrap();
        assert_eq!(path, "2.txt");
        assert!(matches!(d, Some(Difference::Line { number: 1, .. })));
    }
}
