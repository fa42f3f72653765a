//! Integration tests of the `orch` binary: one test binary, one module per topic.

mod test;

mod build;
mod commands;
mod config_errors;
mod events;
mod failures;
mod parallel;
mod shards;
mod snapshots;
mod staleness;
