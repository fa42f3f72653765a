//! The Orchfile as text and as written: finding it, parsing it with spans, includes,
//! and the diagnostics that point back into it.

pub mod load;
pub mod overrides;
pub mod raw;
pub mod source;

pub use load::{ConfigFailure, ORCHFILE, RawProject, find_orchfile, load};
pub use source::{ConfigError, ErrorKind, FileId, Sources, Span};
