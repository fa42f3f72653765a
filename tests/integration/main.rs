//! Integration tests of the `orch` binary: one test binary, one module per topic.

mod test;

mod build;
mod cache;
mod commands;
mod config_errors;
mod crash;
mod depfiles;
mod events;
mod executors;
mod failures;
mod file_edges;
mod fresh;
mod history;
mod init;
mod large;
mod lifecycle;
mod overrides;
mod parallel;
mod retention;
mod scheduling;
mod schemas;
mod shard_names;
mod shards;
mod snapshots;
mod staleness;
mod targets;
mod trust_cache;
mod trust_config;
mod trust_keys;
mod trust_limits;
mod trust_paths;
mod trust_runtime;
mod watch;
