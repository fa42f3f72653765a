//! Where commands run: the [`Backend`] trait the build hands jobs to, and
//! [`LocalBackend`], which runs them as processes on this machine.
//!
//! A backend only starts commands and learns how they ended. What surrounds a command
//! (preparing its outputs, hashing them, retries, the cache) is the job's life in
//! [`super::job`], the same wherever the command runs; which job may start, and when, is
//! the scheduling core's ([`super::core`]).

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::job;
use super::{Job, JobPlan, Msg, Runner, Work};

/// Runs jobs somewhere and reports how they went.
pub(super) trait Backend: Send {
    /// The executor's name, as events and messages show it.
    fn name(&self) -> &str;
    /// Whether its jobs run elsewhere than this machine: their first attempt is reported
    /// by the backend, once submitted.
    fn remote(&self) -> bool;
    /// How many jobs it runs at once.
    fn capacity(&self) -> usize;
    /// Starts `job`; what becomes of it arrives as [`Msg`]s on the channel the backend was
    /// made with, ending with exactly one [`Msg::Done`].
    fn submit(&mut self, work: Work, job: Job, plan: JobPlan);
    /// Asks every job it runs to stop: the build was interrupted. Their `Done` still comes.
    fn cancel_all(&self);
}

/// Commands as processes on this machine, `-j` at a time, on a pool of worker threads
/// that also hash what each command wrote.
pub(super) struct LocalBackend {
    jobs: usize,
    pool: rayon::ThreadPool,
    runner: Arc<dyn Runner>,
    root: PathBuf,
    tx: Sender<Msg>,
}

impl LocalBackend {
    /// A backend of `jobs` workers running commands through `runner` in `root`.
    pub(super) fn new(
        jobs: usize,
        runner: Arc<dyn Runner>,
        root: PathBuf,
        tx: Sender<Msg>,
    ) -> std::io::Result<LocalBackend> {
        let jobs = jobs.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs)
            .thread_name(|i| format!("orch-job-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(LocalBackend {
            jobs,
            pool,
            runner,
            root,
            tx,
        })
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> &str {
        crate::model::LOCAL_EXECUTOR
    }

    fn remote(&self) -> bool {
        false
    }

    fn capacity(&self) -> usize {
        self.jobs
    }

    fn submit(&mut self, work: Work, job: Job, plan: JobPlan) {
        let tx = self.tx.clone();
        let runner = Arc::clone(&self.runner);
        let root = self.root.clone();
        self.pool.spawn(move || {
            job::run_here(work, &job, &plan, &root, &tx, &|j| runner.run(j));
        });
    }

    fn cancel_all(&self) {
        self.runner.interrupt_all();
    }
}
