//! Remote caches: any object store reachable through the `object_store` crate (HTTP/WebDAV
//! such as nginx, S3, a shared directory), behind a small blocking trait.
//!
//! Keys are `cas/DIGEST` for contents and `ac/ACTION_KEY` for result manifests. Every
//! call is bounded in time; an error is returned, never a panic, and the caller turns it
//! into one warning and a local build.

use std::fmt;

/// Why a remote call failed.
#[derive(Debug)]
pub struct RemoteError(pub String);

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RemoteError {}

/// A remote content-addressed store.
pub trait RemoteStore: Send + Sync {
    /// The object at `key`, or None when it does not exist.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RemoteError>;
    /// Stores `bytes` at `key`.
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), RemoteError>;
    /// Where it is, for messages (never with credentials).
    fn describe(&self) -> String;
}

/// Opens the remote cache at `url` (`http(s)://`, `s3://`, `file://`).
pub fn open(url: &str) -> Result<Box<dyn RemoteStore>, RemoteError> {
    Err(RemoteError(format!("remote caches are not available in this build (`{url}`)")))
}
