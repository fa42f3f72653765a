//! File-system facts orch needs: content digests of files and directory trees, stat snapshots, the digest cache's racy-timestamp rule, one directory walk that matches many glob sets at once, writes that stay beneath the project root, and the dependency files commands write.

pub mod beneath;
pub mod depfile;
pub mod digest;
pub mod stat;
pub mod walk;

pub use beneath::{Beneath, BeneathError};
pub use digest::{Digest, hash_bytes, hash_file, hash_path, hash_tree};
pub use stat::{
    CachedDigest, FileStat, PathDigest, RACY_WINDOW_NS, digest_paths, digest_statted, now_ns,
    stat_path, stat_paths,
};
pub use walk::{Expansion, MultiGlob, WalkError};
