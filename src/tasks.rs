//! The one way a command starts its tasks and threads (STYLE.md "Async
//! services"): each is named, tracked and joined; one that fails or panics
//! is logged, cancels the rest, and makes the command exit non-zero.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A command's tasks and threads.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    cancel: CancellationToken,
    tracker: TaskTracker,
    failure: Mutex<Option<String>>,
    threads: Mutex<Vec<(String, JoinHandle<()>)>>,
}

type Outcome = Result<anyhow::Result<()>, Box<dyn Any + Send>>;

impl Supervisor {
    /// A supervisor whose failures cancel `cancel`.
    pub fn new(cancel: CancellationToken) -> Supervisor {
        Supervisor {
            inner: Arc::new(Inner {
                cancel,
                tracker: TaskTracker::new(),
                failure: Mutex::new(None),
                threads: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The token every task of the command watches.
    pub fn token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Runs `task` on `runtime` (a multi-threaded one: [`Supervisor::join`]
    /// waits from outside it), named `name`.
    pub fn spawn<F>(&self, runtime: &tokio::runtime::Handle, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let this = self.clone();
        self.inner.tracker.spawn_on(
            async move {
                let outcome = AssertUnwindSafe(task).catch_unwind().await;
                this.ended(name, outcome);
            },
            runtime,
        );
    }

    /// Runs `work` on a thread named `name`.
    pub fn spawn_thread<F>(&self, name: &str, work: F) -> anyhow::Result<()>
    where
        F: FnOnce() -> anyhow::Result<()> + Send + 'static,
    {
        let this = self.clone();
        let owned = name.to_owned();
        let handle = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(work));
            this.ended(&owned, outcome);
        })?;
        self.inner.threads.lock().unwrap_or_else(PoisonError::into_inner).push((name.to_owned(), handle));
        Ok(())
    }

    fn ended(&self, name: &str, outcome: Outcome) {
        let failure = match outcome {
            Ok(Ok(())) => {
                tracing::debug!(task = name, "ended");
                return;
            }
            Ok(Err(error)) => {
                tracing::error!(task = name, error = format!("{error:#}"), "failed; stopping");
                format!("{name}: {error:#}")
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(task = name, panic = message, "panicked; stopping");
                format!("{name} panicked: {message}")
            }
        };
        self.inner.failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(failure);
        self.inner.cancel.cancel();
    }

    /// The first failure, if any task or thread failed.
    pub fn failure(&self) -> Option<String> {
        self.inner.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until every task and thread has ended, until `deadline` at
    /// most, logging the ones still running then; true if all ended.
    pub fn join(&self, deadline: Instant) -> bool {
        self.inner.tracker.close();
        loop {
            let mut threads = self.inner.threads.lock().unwrap_or_else(PoisonError::into_inner);
            let (ended, running): (Vec<_>, Vec<_>) = threads.drain(..).partition(|(_, handle)| handle.is_finished());
            *threads = running;
            for (_, handle) in ended {
                let _ = handle.join();
            }
            if threads.is_empty() && self.inner.tracker.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                let names: Vec<&str> = threads.iter().map(|(name, _)| name.as_str()).collect();
                tracing::warn!(threads = ?names, tasks = self.inner.tracker.len(), "still running at the deadline");
                return false;
            }
            drop(threads);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long the tests let `join` wait: it returns as soon as everything
    /// ended, but with RUST_BACKTRACE set, the other test's panic symbolizes
    /// a backtrace of this large binary under std's backtrace lock, and the
    /// failing thread's `anyhow` error waits for that lock (4.8 s measured).
    const PATIENCE: Duration = Duration::from_secs(60);

    #[test]
    fn a_panicking_task_is_logged_cancels_the_rest_and_is_the_failure() {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let supervisor = Supervisor::new(CancellationToken::new());
        let token = supervisor.token();
        supervisor.spawn(runtime.handle(), "waits", async move {
            token.cancelled().await;
            Ok(())
        });
        supervisor.spawn(runtime.handle(), "refresh", async { panic!("snapshot went wrong") });
        runtime.block_on(supervisor.token().cancelled());
        assert!(supervisor.join(Instant::now() + PATIENCE));
        assert_eq!(supervisor.failure().as_deref(), Some("refresh panicked: snapshot went wrong"));
    }

    #[test]
    fn a_failing_thread_cancels_the_rest_and_a_clean_one_does_not() {
        let supervisor = Supervisor::new(CancellationToken::new());
        supervisor.spawn_thread("fine", || Ok(())).expect("spawns");
        assert!(supervisor.join(Instant::now() + PATIENCE));
        assert!(!supervisor.token().is_cancelled() && supervisor.failure().is_none());
        supervisor.spawn_thread("probe", || anyhow::bail!("cannot listen")).expect("spawns");
        assert!(supervisor.join(Instant::now() + PATIENCE));
        assert!(supervisor.token().is_cancelled());
        assert_eq!(supervisor.failure().as_deref(), Some("probe: cannot listen"));
    }
}
