//! The HTTP API of `serve` (CONTRACT.md §5) over the committed lake, and the
//! probe endpoints of `run` ([`probe`]).
//!
//! Work happens in three places, so that no client can starve the rest:
//! - the HTTP runtime (the binary's) accepts connections and answers from
//!   memory: `/healthz`, `/readyz`, `/metrics`, `/v1/priorities`;
//! - user queries run in worker processes ([`worker`]), each under its
//!   time limit and memory budget, killed past either, with the answer
//!   encoded inside that budget ([`format`]);
//! - the service tasks ([`Service::refresh`], [`Service::publish`]), which
//!   the binary runs on a runtime of their own, open each new snapshot of
//!   the lake and compute its queue and domain metrics once, before the
//!   snapshot is served.

pub mod format;
mod http;
pub mod listener;
pub mod probe;
pub mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use processor::lake::Lake;
use tokio_util::sync::CancellationToken;

use crate::error::QueryError;
use crate::metrics::ServerMetrics;
use crate::priorities::{Queue, QueuePublisher, Weights};
use crate::session::{LakeSession, bounded_runtime};
use datafusion::execution::runtime_env::RuntimeEnv;
use format::Format;

/// What `serve` is told (the `[server]` and `[auth]` configuration).
#[derive(Clone, Debug)]
pub struct Settings {
    /// A query running longer is stopped.
    pub query_timeout: Duration,
    /// DataFusion's memory pool, bytes.
    pub memory_limit_bytes: usize,
    /// Rows an answer holds at most (`truncated` says when there were more).
    pub max_rows: usize,
    /// Bytes an encoded answer may take at most.
    pub max_answer_bytes: usize,
    /// Bytes the answers waiting for their clients may take together;
    /// past it a query is answered 503.
    pub answer_budget_bytes: usize,
    /// How often the commit log is checked for new epochs.
    pub refresh: Duration,
    /// The bearer token every route but `/healthz` requires.
    pub token: Option<String>,
    /// The priority score's weights.
    pub weights: Weights,
    /// Queries running at once at most; past it a query is answered 503.
    pub max_concurrent_queries: usize,
    /// The connection layer's limits.
    pub connections: listener::ConnectionLimits,
    /// How to start a query worker.
    pub worker: worker::WorkerCommand,
}

/// One snapshot of the lake with what is computed once per snapshot.
pub struct Snapshot {
    /// Its priority queue.
    pub queue: Queue,
    /// The queue's rows as JSON, encoded once: `/v1/priorities` answers
    /// with a slice of it, never a copy.
    items: http::EncodedRows,
    /// The lake's publication stamp it was opened at (the change signal,
    /// and the version the workers open).
    stamp: usize,
}

/// The query service: cheap to clone, one state behind.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    lake: Lake,
    settings: Settings,
    /// The newest snapshot; a query keeps the one it started on.
    snapshot: RwLock<Arc<Snapshot>>,
    lake_readable: AtomicBool,
    /// Set by the priorities publisher's client when the brokers are away.
    brokers_down: Arc<AtomicBool>,
    /// Where user queries run.
    workers: worker::WorkerPool,
    /// The memory pool of what the server computes for itself (the queue,
    /// the domain metrics).
    service_runtime: Arc<RuntimeEnv>,
    metrics: ServerMetrics,
}

/// An encoded answer of `POST /v1/sql`.
pub struct Answer {
    /// The body (on the server, it holds its share of the answer budget
    /// until the last reference to it goes).
    pub body: bytes::Bytes,
    /// Its format.
    pub format: Format,
    /// Whether rows were left out (more than `max_rows`).
    pub truncated: bool,
}

impl Service {
    /// Opens the lake's current snapshot and computes its queue and domain
    /// metrics; user queries will run in workers.
    pub async fn open(lake: Lake, settings: Settings) -> Result<Service, QueryError> {
        let metrics = ServerMetrics::new();
        let started = Instant::now();
        let service_runtime = bounded_runtime(settings.memory_limit_bytes)?;
        let snapshot = open_snapshot(&lake, &settings, &metrics, &service_runtime).await?;
        let workers = worker::WorkerPool::new(
            settings.worker.clone(),
            worker::WorkerSettings {
                lake: lake.location().to_owned(),
                memory_limit_bytes: settings.memory_limit_bytes,
                weights: settings.weights.clone(),
                server_pid: std::process::id(),
            },
            settings.max_concurrent_queries,
            settings.answer_budget_bytes,
        );
        tracing::info!(publication = %format_args!("{:016x}", snapshot.stamp), elapsed_ms = started.elapsed().as_millis() as u64, "lake opened");
        let inner = Inner {
            lake,
            snapshot: RwLock::new(Arc::new(snapshot)),
            lake_readable: AtomicBool::new(true),
            brokers_down: Arc::new(AtomicBool::new(false)),
            workers,
            settings,
            service_runtime,
            metrics,
        };
        Ok(Service { inner: Arc::new(inner) })
    }

    /// The flag a Kafka client sets while the brokers are away (readiness).
    pub fn brokers_down(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.inner.brokers_down)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.inner.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.inner.metrics
    }

    fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Ready: the lake is readable and, when publishing, the brokers answer.
    pub fn is_ready(&self) -> bool {
        self.inner.lake_readable.load(Ordering::Relaxed) && !self.inner.brokers_down.load(Ordering::Relaxed)
    }

    /// Serves HTTP on `listener` until `cancel`; requests under way finish.
    pub async fn serve(self, listener: tokio::net::TcpListener, cancel: CancellationToken) -> std::io::Result<()> {
        tracing::info!(listen = %listener.local_addr()?, "serving the lake");
        let limits = self.settings().connections;
        listener::serve(listener, http::router(self), http::reserve_router(), limits, cancel).await
    }

    /// Runs one user query in a worker under the time limit and memory
    /// budget, its answer encoded there too; 503 (`Busy`) when as many
    /// queries as allowed run already. The query stops if the caller goes
    /// away (this future is dropped, and the worker is killed).
    pub async fn query(&self, sql: String, format: Format) -> Result<Answer, QueryError> {
        let started = Instant::now();
        let version = self.snapshot().stamp;
        let s = self.settings();
        let answer =
            self.inner.workers.query(sql, format, s.max_rows, s.max_answer_bytes, version, s.query_timeout).await;
        self.inner.metrics.query_seconds.observe(started.elapsed().as_secs_f64());
        answer
    }

    /// Opens a new snapshot whenever the commit log has grown, until
    /// `cancel`. A snapshot that cannot be opened makes the server not ready
    /// and keeps the previous one; a panic ends the command (the binary's
    /// supervisor sees it).
    pub async fn refresh(self, cancel: CancellationToken) -> Result<(), QueryError> {
        let inner = &self.inner;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(inner.settings.refresh) => {}
            }
            // Workers idle for a minute go (each holds a session); one stays ready.
            inner.workers.reap(Duration::from_secs(60));
            let seen = self.snapshot().stamp;
            let count = match inner.lake.publication_stamp().await {
                Ok(count) => count,
                Err(error) => {
                    if inner.lake_readable.swap(false, Ordering::Relaxed) {
                        tracing::warn!(%error, "cannot read the lake's publication stamp");
                    }
                    continue;
                }
            };
            if count == seen {
                inner.lake_readable.store(true, Ordering::Relaxed);
                continue;
            }
            match open_snapshot(&inner.lake, &inner.settings, &inner.metrics, &inner.service_runtime).await {
                Ok(snapshot) => {
                    *inner.snapshot.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
                    inner.lake_readable.store(true, Ordering::Relaxed);
                    tracing::debug!("new publication visible");
                }
                Err(error) => {
                    // Not ready, and the previous snapshot keeps being served; a
                    // corrupt record or a bug is an error, a store away a warning.
                    if inner.lake_readable.swap(false, Ordering::Relaxed) {
                        if error.class() == schemas::ErrorClass::Internal {
                            tracing::error!(%error, "cannot open the lake's new snapshot; serving the previous one");
                        } else {
                            tracing::warn!(%error, "cannot open the lake's new snapshot; serving the previous one");
                        }
                    }
                }
            }
        }
    }

    /// Every `every`, publishes the current queue as changes against what
    /// was published last, until `cancel`. A failed publication is tried
    /// again next time.
    pub async fn publish(
        self,
        mut publisher: QueuePublisher,
        every: Duration,
        cancel: CancellationToken,
    ) -> Result<(), QueryError> {
        loop {
            let queue = self.snapshot().queue.clone();
            let stop = cancel.clone();
            let (returned, sent) = tokio::task::spawn_blocking(move || {
                let sent = publisher.publish(&queue, &stop);
                (publisher, sent)
            })
            .await
            .map_err(|e| QueryError::Internal(format!("the publisher failed: {e}")))?;
            publisher = returned;
            match sent {
                Ok(changes) => tracing::debug!(changes, "priorities published"),
                Err(_) if cancel.is_cancelled() => return Ok(()),
                Err(error) => tracing::warn!(%error, "cannot publish the priority queue; retrying next time"),
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// Opens a snapshot of `lake` and computes what is computed once per
/// snapshot, the queue and the domain metrics, in the service's runtime.
async fn open_snapshot(
    lake: &Lake,
    settings: &Settings,
    metrics: &ServerMetrics,
    runtime: &Arc<RuntimeEnv>,
) -> Result<Snapshot, QueryError> {
    let stamp = lake.publication_stamp().await?;
    let session = LakeSession::open_with(lake, Some(Arc::clone(runtime)), &settings.weights).await?;
    let queue = Queue::compute(&session).await?;
    metrics.domain.update(&session).await?;
    let items = http::EncodedRows::of(&queue.rows)?;
    Ok(Snapshot { queue, items, stamp })
}
