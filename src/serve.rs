//! `patchtrail serve`: the HTTP API of CONTRACT.md §5 over the committed lake.
//!
//! Two runtimes: a small one answers HTTP, a multi-threaded one runs the
//! DataFusion queries, so a heavy query never delays `/healthz`. Every query
//! runs under a time limit and a memory-pool limit and sees one snapshot of
//! the lake (the session it started on); a refresher opens a new session
//! when the commit log grows, so new epochs show within seconds.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::TryStreamExt;
use processor::lake::Lake;
use prometheus::{GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use queries::{LakeSession, QueryError};
use serde_json::{Value, json};

use crate::cli::ServeArgs;
use crate::config::{self, Config};

pub fn run(args: ServeArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    if args.brokers.is_some() {
        config.server.publish_priorities = true;
        problems.extend(config.apply_kafka_flags(args.brokers.as_deref(), &args.kafka_properties));
    }
    config::set(&mut config.lake.location, &args.lake);
    config::set(&mut config.server.listen, &args.listen);
    config::set(&mut config.server.query_timeout_secs, &args.query_timeout_secs);
    config::set(&mut config.server.memory_limit_mib, &args.memory_limit_mib);
    config::set(&mut config.server.max_rows, &args.max_rows);
    config::set(&mut config.server.refresh_ms, &args.refresh_ms);
    config::set(&mut config.server.priorities_interval_secs, &args.priorities_interval_secs);
    if args.token.is_some() {
        config.auth.token.clone_from(&args.token);
    }
    let lake_location = config.lake.location.clone();
    if !lake_location.starts_with("s3://")
        && !std::path::Path::new(lake_location.trim_start_matches("file://")).is_dir()
    {
        problems.push(format!(
            "the lake {lake_location:?} (--lake, lake.location) is not a directory (build one with `patchtrail replay` or `run`)"
        ));
    }
    problems.extend(config.problems());
    if !problems.is_empty() {
        return Ok(crate::usage_error(&problems));
    }
    let server = config.server.clone();
    let kafka = server.publish_priorities.then(|| config.kafka_settings());
    let signals = crate::signals::install()?;
    let queries = tokio::runtime::Builder::new_multi_thread()
        .thread_name("query")
        .enable_all()
        .build()
        .context("cannot start the query runtime")?;
    let lake = Lake::open(&lake_location)?;
    let memory_limit = Some(server.memory_limit_mib * 1024 * 1024);
    let weights = config.weights();
    let started = Instant::now();
    let session = queries.block_on(LakeSession::open_with(&lake, memory_limit, &weights))?;
    let records = queries.block_on(commit_count(&lake)).unwrap_or(0);
    tracing::info!(records, elapsed_ms = started.elapsed().as_millis() as u64, "lake opened");
    let metrics = ServeMetrics::new();
    if let Err(error) = queries.block_on(metrics.domain.update(&session)) {
        tracing::warn!(%error, "cannot compute the domain metrics");
    }
    let state = Arc::new(Served {
        session: RwLock::new(Arc::new(session)),
        lake_readable: std::sync::atomic::AtomicBool::new(true),
        queries: queries.handle().clone(),
        timeout: Duration::from_secs(server.query_timeout_secs),
        max_rows: server.max_rows,
        token: config.auth.token.clone(),
        metrics,
        brokers_down: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        queue: tokio::sync::Mutex::new(None),
    });
    queries.spawn(refresh(
        Arc::clone(&state),
        lake,
        memory_limit,
        weights,
        Duration::from_millis(server.refresh_ms),
        records,
    ));
    if let Some(settings) = kafka {
        let every = Duration::from_secs(server.priorities_interval_secs);
        let publisher = PrioritiesPublisher::start(&settings, &config.topics.priorities, &state.brokers_down)?;
        queries.spawn(publish_priorities(Arc::clone(&state), publisher, every));
    }

    let app = Router::new()
        .route("/v1/sql", post(sql))
        .route("/v1/priorities", get(priorities))
        .route("/metrics", get(exposition))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Arc::clone(&state));
    let http = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    http.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", server.listen))?;
        tracing::info!(listen = %listener.local_addr()?, "serving the lake");
        let stop = async move {
            while signals.count() == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tracing::info!("stopping");
        };
        axum::serve(listener, app).with_graceful_shutdown(stop).await.context("HTTP server failed")
    })?;
    queries.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

/// What every request reads.
struct Served {
    /// The newest snapshot of the lake; a query keeps the one it started on.
    session: RwLock<Arc<LakeSession>>,
    lake_readable: std::sync::atomic::AtomicBool,
    queries: tokio::runtime::Handle,
    timeout: Duration,
    max_rows: usize,
    token: Option<String>,
    metrics: ServeMetrics,
    /// Set by the priorities publisher's client when the brokers are away.
    brokers_down: Arc<std::sync::atomic::AtomicBool>,
    /// The priority queue of the snapshot it was computed on.
    queue: tokio::sync::Mutex<Option<(Arc<LakeSession>, Arc<Rows>)>>,
}

/// Result rows as JSON objects.
type Rows = Vec<serde_json::Map<String, Value>>;

impl Served {
    fn session(&self) -> Arc<LakeSession> {
        Arc::clone(&self.session.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// `None` when the request may go on, the 401 otherwise.
    fn refuse(&self, headers: &HeaderMap) -> Option<Response> {
        let expected = self.token.as_deref()?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            None
        } else {
            Some(error(StatusCode::UNAUTHORIZED, "a bearer token is required: Authorization: Bearer <token>"))
        }
    }

    /// Runs `sql` on the query runtime under the time limit; the result is
    /// capped at `max_rows` (`true`: there were more).
    async fn query(&self, sql: String) -> Result<(SchemaRef, Vec<RecordBatch>, bool), Response> {
        self.query_on(self.session(), sql, self.max_rows).await
    }

    /// The whole `priorities` view of the current snapshot, computed once
    /// per snapshot (the queue only changes when the lake does), with the
    /// snapshot it comes from.
    async fn queue(&self) -> Result<(Arc<LakeSession>, Arc<Rows>), Response> {
        let session = self.session();
        let mut cache = self.queue.lock().await;
        if let Some((cached, rows)) = &*cache
            && Arc::ptr_eq(cached, &session)
        {
            return Ok((session, Arc::clone(rows)));
        }
        let sql = "SELECT * FROM priorities ORDER BY rank".to_owned();
        let (_, batches, _) = self.query_on(Arc::clone(&session), sql, usize::MAX).await?;
        let rows = Arc::new(json_objects(&batches).map_err(|m| error(StatusCode::INTERNAL_SERVER_ERROR, &m))?);
        *cache = Some((Arc::clone(&session), Arc::clone(&rows)));
        Ok((session, rows))
    }

    async fn query_on(
        &self,
        session: Arc<LakeSession>,
        sql: String,
        max_rows: usize,
    ) -> Result<(SchemaRef, Vec<RecordBatch>, bool), Response> {
        let started = Instant::now();
        let task = self.queries.spawn(async move {
            let (schema, batches) = session.query(&sql).await?;
            let (batches, truncated) = cap_rows(batches, max_rows);
            Ok::<_, QueryError>((schema, batches, truncated))
        });
        let abort = task.abort_handle();
        let outcome = tokio::time::timeout(self.timeout, task).await;
        self.metrics.query_seconds.observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(QueryError::Lake(lake)))) => {
                Err(error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the lake cannot be read: {lake}")))
            }
            Ok(Ok(Err(query))) => Err(error(StatusCode::BAD_REQUEST, &query.to_string())),
            Ok(Err(join)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the query task failed: {join}"))),
            Err(_) => {
                abort.abort();
                let limit = self.timeout.as_secs();
                Err(error(StatusCode::BAD_REQUEST, &format!("query stopped: it ran longer than the {limit} s limit")))
            }
        }
    }
}

/// Compares without returning early on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Keeps the first `max_rows` rows; whether any were left out.
fn cap_rows(batches: Vec<RecordBatch>, max_rows: usize) -> (Vec<RecordBatch>, bool) {
    let mut kept = Vec::with_capacity(batches.len());
    let mut left = max_rows;
    let mut truncated = false;
    for batch in batches {
        if left == 0 {
            truncated |= batch.num_rows() > 0;
            continue;
        }
        if batch.num_rows() > left {
            kept.push(batch.slice(0, left));
            truncated = true;
            left = 0;
        } else {
            left -= batch.num_rows();
            kept.push(batch);
        }
    }
    (kept, truncated)
}

/// The rows of `batches` as JSON objects (nulls explicit).
fn json_objects(batches: &[RecordBatch]) -> Result<Vec<serde_json::Map<String, Value>>, String> {
    let mut bytes = Vec::new();
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(&mut bytes);
    for batch in batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// The media type of the Arrow IPC stream format.
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// Response header telling CSV and Arrow clients whether rows were left out
/// (JSON carries it as the `truncated` field).
const TRUNCATED_HEADER: &str = "x-patchtrail-truncated";

/// How `POST /v1/sql` answers, by the request's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResultFormat {
    Json,
    Csv,
    ArrowStream,
}

impl ResultFormat {
    fn accepted(headers: &HeaderMap) -> ResultFormat {
        let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()).unwrap_or("");
        if accept.contains(ARROW_STREAM) {
            ResultFormat::ArrowStream
        } else if accept.contains("text/csv") {
            ResultFormat::Csv
        } else {
            ResultFormat::Json
        }
    }
}

/// The result as CSV with a header line (also when there are no rows).
fn csv_bytes(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if batches.is_empty() {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        out.extend_from_slice(names.join(",").as_bytes());
        out.push(b'\n');
    }
    let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
    for batch in batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    drop(writer);
    Ok(out)
}

/// The result as an Arrow IPC stream: the schema, then every batch.
fn arrow_stream_bytes(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, schema).map_err(|e| e.to_string())?;
    for batch in batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    Ok(out)
}

/// `POST /v1/sql` with `{"sql": "..."}`: JSON, CSV with `Accept: text/csv`,
/// an Arrow IPC stream with `Accept: application/vnd.apache.arrow.stream`.
async fn sql(State(state): State<Arc<Served>>, headers: HeaderMap, body: Bytes) -> Response {
    let response = sql_response(&state, &headers, &body).await;
    state.metrics.count("/v1/sql", response.status());
    response
}

async fn sql_response(state: &Served, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(refused) = state.refuse(headers) {
        return refused;
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("the body must be JSON {{\"sql\": \"...\"}}: {e}")),
    };
    let Some(sql) = request.get("sql").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, "the body must be JSON {\"sql\": \"...\"} with the query as a string");
    };
    let (schema, batches, truncated) = match state.query(sql.to_owned()).await {
        Ok(result) => result,
        Err(response) => return response,
    };
    let truncated_header = (TRUNCATED_HEADER, if truncated { "true" } else { "false" });
    match ResultFormat::accepted(headers) {
        ResultFormat::Json => {}
        ResultFormat::Csv => {
            return match csv_bytes(&schema, &batches) {
                Ok(out) => ([(header::CONTENT_TYPE.as_str(), "text/csv"), truncated_header], out).into_response(),
                Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
            };
        }
        ResultFormat::ArrowStream => {
            return match arrow_stream_bytes(&schema, &batches) {
                Ok(out) => ([(header::CONTENT_TYPE.as_str(), ARROW_STREAM), truncated_header], out).into_response(),
                Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
            };
        }
    }
    let objects = match json_objects(&batches) {
        Ok(objects) => objects,
        Err(message) => return error(StatusCode::INTERNAL_SERVER_ERROR, &message),
    };
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|field| json!({ "name": field.name(), "type": field.data_type().to_string() }))
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            Value::Array(schema.fields().iter().map(|f| object.get(f.name()).cloned().unwrap_or(Value::Null)).collect())
        })
        .collect();
    let row_count = rows.len();
    axum::Json(json!({ "columns": columns, "rows": rows, "row_count": row_count, "truncated": truncated }))
        .into_response()
}

#[derive(serde::Deserialize)]
struct PrioritiesQuery {
    limit: Option<usize>,
}

/// `GET /v1/priorities?limit=N`: the top of the `priorities` view.
async fn priorities(
    State(state): State<Arc<Served>>,
    headers: HeaderMap,
    query: Result<Query<PrioritiesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let response = priorities_response(&state, &headers, query.map(|q| q.0)).await;
    state.metrics.count("/v1/priorities", response.status());
    response
}

async fn priorities_response(
    state: &Served,
    headers: &HeaderMap,
    query: Result<PrioritiesQuery, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(refused) = state.refuse(headers) {
        return refused;
    }
    let limit = match query {
        Ok(PrioritiesQuery { limit: None }) => 100,
        Ok(PrioritiesQuery { limit: Some(limit) }) if (1..=state.max_rows).contains(&limit) => limit,
        Ok(PrioritiesQuery { limit: Some(limit) }) => {
            let max = state.max_rows;
            return error(StatusCode::BAD_REQUEST, &format!("limit must be between 1 and {max}, got {limit}"));
        }
        Err(rejection) => return error(StatusCode::BAD_REQUEST, &format!("limit must be a number: {rejection}")),
    };
    let (session, rows) = match state.queue().await {
        Ok(queue) => queue,
        Err(response) => return response,
    };
    let as_of = session.as_of().map(|t| t.to_string());
    let items = &rows[..limit.min(rows.len())];
    axum::Json(json!({ "as_of": as_of, "count": items.len(), "items": items })).into_response()
}

async fn readyz(State(state): State<Arc<Served>>) -> Response {
    use std::sync::atomic::Ordering;
    if !state.lake_readable.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "the lake cannot be read").into_response()
    } else if state.brokers_down.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "the Kafka brokers cannot be reached").into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

/// Publishes the priority queue to its compacted topic.
struct PrioritiesPublisher {
    publisher: ingest::kafka::Publisher,
    topic: String,
    /// What the topic holds, as far as this process published it: key → value.
    published: std::collections::BTreeMap<String, String>,
}

impl PrioritiesPublisher {
    fn start(
        settings: &ingest::kafka::KafkaSettings,
        topic: &str,
        brokers_down: &Arc<std::sync::atomic::AtomicBool>,
    ) -> anyhow::Result<PrioritiesPublisher> {
        let topic = topic.to_owned();
        let spec = ingest::kafka::TopicSpec { name: &topic, partitions: 1, compacted: true };
        ingest::kafka::create_topics(settings, &[spec], Duration::from_secs(30))
            .with_context(|| format!("cannot create {topic} on {}", settings.brokers))?;
        let publisher = ingest::kafka::Publisher::with_down_flag(settings, Arc::clone(brokers_down))?;
        Ok(PrioritiesPublisher { publisher, topic, published: Default::default() })
    }
}

/// Messages that take the topic from `published` to `current`: new or changed
/// rows, and a tombstone (`None`) for each key that left the queue.
fn queue_changes(
    published: &std::collections::BTreeMap<String, String>,
    current: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, Option<String>)> {
    let mut changes: Vec<(String, Option<String>)> = current
        .iter()
        .filter(|(key, value)| published.get(*key) != Some(*value))
        .map(|(key, value)| (key.clone(), Some(value.clone())))
        .collect();
    changes.extend(published.keys().filter(|key| !current.contains_key(*key)).map(|key| (key.clone(), None)));
    changes
}

/// Every `every`, the whole `priorities` view, published as changes.
async fn publish_priorities(state: Arc<Served>, mut out: PrioritiesPublisher, every: Duration) {
    loop {
        match state.queue().await {
            Ok((_, rows)) => {
                let current: std::collections::BTreeMap<String, String> = rows
                    .iter()
                    .map(|row| {
                        (
                            format!("{}/{}", text(row, "asset_id"), text(row, "cve_id")),
                            Value::Object(row.clone()).to_string(),
                        )
                    })
                    .collect();
                let changes = queue_changes(&out.published, &current);
                let sent = tokio::task::block_in_place(|| {
                    for (key, value) in &changes {
                        match value {
                            Some(value) => out.publisher.send(&out.topic, Some(key), value.as_bytes())?,
                            None => out.publisher.send_tombstone(&out.topic, key)?,
                        }
                    }
                    out.publisher.flush(None)
                });
                match sent {
                    Ok(()) => {
                        tracing::debug!(rows = current.len(), changes = changes.len(), "priorities published");
                        out.published = current;
                    }
                    Err(error) => tracing::warn!(%error, "cannot publish the priority queue; retrying next time"),
                }
            }
            Err(response) => tracing::warn!(status = %response.status(), "cannot read the priority queue"),
        }
        tokio::time::sleep(every).await;
    }
}

async fn exposition(State(state): State<Arc<Served>>, headers: HeaderMap) -> Response {
    if let Some(refused) = state.refuse(&headers) {
        return refused;
    }
    let body = crate::metrics::exposition(&state.metrics.registry);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Commit records in the lake (listing only): the refresher's change signal.
async fn commit_count(lake: &Lake) -> anyhow::Result<usize> {
    let store = lake.store();
    let prefix = object_store::path::Path::from("_commits");
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    Ok(listed.iter().filter(|meta| meta.location.extension() == Some("json")).count())
}

/// Opens a new session whenever the commit log has grown.
async fn refresh(
    state: Arc<Served>,
    lake: Lake,
    memory_limit: Option<usize>,
    weights: queries::Weights,
    every: Duration,
    mut seen: usize,
) {
    use std::sync::atomic::Ordering;
    loop {
        tokio::time::sleep(every).await;
        let count = match commit_count(&lake).await {
            Ok(count) => count,
            Err(error) => {
                if state.lake_readable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%error, "cannot list the lake's commit log");
                }
                continue;
            }
        };
        if count == seen {
            continue;
        }
        match LakeSession::open_with(&lake, memory_limit, &weights).await {
            Ok(session) => {
                if let Err(error) = state.metrics.domain.update(&session).await {
                    tracing::warn!(%error, "cannot compute the domain metrics");
                }
                *state.session.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(session);
                state.lake_readable.store(true, Ordering::Relaxed);
                tracing::debug!(records = count, "new commits visible");
                seen = count;
            }
            Err(error) => {
                if state.lake_readable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%error, "cannot open the lake's new snapshot; serving the previous one");
                }
            }
        }
    }
}

/// Request and query metrics of the server, and the domain metrics of the lake.
struct ServeMetrics {
    registry: Registry,
    requests: IntCounterVec,
    query_seconds: Histogram,
    domain: DomainMetrics,
}

/// Pairs of segments `patchtrail_segmentation_drift_ratio` reports (the worst).
const DRIFT_PAIRS: usize = 20;

/// The domain metrics of CONTRACT.md §6 that `serve` computes from the lake
/// each time it opens a new snapshot. Counters follow the lake's totals
/// (they only ever go up, as Prometheus expects).
struct DomainMetrics {
    time_to_patch: HistogramVec,
    /// (asset, patch) outcomes observed in `time_to_patch` already: each is
    /// observed once, when it first shows a time-to-patch.
    observed: Mutex<HashSet<(String, String)>>,
    open_exposures: IntGaugeVec,
    sla_breaches: IntCounterVec,
    canary_gates: IntCounterVec,
    alerts: IntCounterVec,
    drift_ratio: GaugeVec,
}

impl DomainMetrics {
    fn new(registry: &Registry) -> DomainMetrics {
        let day = 86_400.0;
        let metrics = DomainMetrics {
            time_to_patch: HistogramVec::new(
                HistogramOpts::new(
                    "patchtrail_time_to_patch_seconds",
                    "Release to verified remediation of each (asset, patch), by the patch's highest CVE severity \
                     and the asset's environment.",
                )
                .buckets(vec![
                    3_600.0,
                    6.0 * 3_600.0,
                    day,
                    3.0 * day,
                    7.0 * day,
                    15.0 * day,
                    30.0 * day,
                    60.0 * day,
                    90.0 * day,
                    180.0 * day,
                ]),
                &["severity", "environment"],
            )
            .expect("valid metric"),
            observed: Mutex::new(HashSet::new()),
            open_exposures: IntGaugeVec::new(
                Opts::new("patchtrail_open_exposures", "Open exposures in the lake, by severity and KEV."),
                &["severity", "kev"],
            )
            .expect("valid metric"),
            sla_breaches: IntCounterVec::new(
                Opts::new("patchtrail_sla_breaches_total", "Exposures past their due date, by severity."),
                &["severity"],
            )
            .expect("valid metric"),
            canary_gates: IntCounterVec::new(
                Opts::new("patchtrail_canary_gate_total", "Rollouts by their canary gate."),
                &["gate"],
            )
            .expect("valid metric"),
            alerts: IntCounterVec::new(Opts::new("patchtrail_alerts_total", "Alerts raised, by rule."), &["rule"])
                .expect("valid metric"),
            drift_ratio: GaugeVec::new(
                Opts::new(
                    "patchtrail_segmentation_drift_ratio",
                    "Drift connections over connections, the worst segment pairs only.",
                ),
                &["src_segment", "dst_segment"],
            )
            .expect("valid metric"),
        };
        registry.register(Box::new(metrics.time_to_patch.clone())).expect("registered once");
        registry.register(Box::new(metrics.open_exposures.clone())).expect("registered once");
        registry.register(Box::new(metrics.sla_breaches.clone())).expect("registered once");
        registry.register(Box::new(metrics.canary_gates.clone())).expect("registered once");
        registry.register(Box::new(metrics.alerts.clone())).expect("registered once");
        registry.register(Box::new(metrics.drift_ratio.clone())).expect("registered once");
        // Known label values start at zero, so a rate over them is defined from the first scrape.
        for severity in ["critical", "high", "medium", "low"] {
            metrics.sla_breaches.with_label_values(&[severity]);
        }
        for gate in ["promote", "hold", "rollback"] {
            metrics.canary_gates.with_label_values(&[gate]);
        }
        metrics
    }

    async fn update(&self, session: &LakeSession) -> Result<(), QueryError> {
        let outcomes = rows_of(session, TIME_TO_PATCH_SQL).await?;
        {
            let mut observed = self.observed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for row in &outcomes {
                let key = (text(row, "asset_id").to_owned(), text(row, "patch_id").to_owned());
                if let Some(seconds) = row.get("ttp").and_then(Value::as_f64)
                    && observed.insert(key)
                {
                    let labels = [text(row, "severity"), text(row, "environment")];
                    self.time_to_patch.with_label_values(&labels).observe(seconds);
                }
            }
        }
        let rows = rows_of(
            session,
            "SELECT severity, CAST(kev AS VARCHAR) AS kev, count(*) AS n FROM exposures \
             WHERE status = 'open' GROUP BY 1, 2",
        )
        .await?;
        self.open_exposures.reset();
        for row in &rows {
            self.open_exposures.with_label_values(&[text(row, "severity"), text(row, "kev")]).set(number(row, "n"));
        }
        let counters = [
            (&self.sla_breaches, "SELECT severity AS label, count(*) AS n FROM exposures WHERE breached GROUP BY 1"),
            (&self.canary_gates, "SELECT gate AS label, count(*) AS n FROM canary_rollups GROUP BY 1"),
            (&self.alerts, "SELECT rule AS label, count(*) AS n FROM alerts GROUP BY 1"),
        ];
        for (counter, sql) in counters {
            for row in rows_of(session, sql).await? {
                let counter = counter.with_label_values(&[text(&row, "label")]);
                let total = u64::try_from(number(&row, "n")).unwrap_or(0);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        let worst = rows_of(
            session,
            &format!(
                "SELECT src_segment, dst_segment, CAST(sum(drift_connections) AS DOUBLE) / sum(connections) AS ratio \
                 FROM segment_drift GROUP BY 1, 2 HAVING sum(connections) > 0 \
                 ORDER BY ratio DESC, src_segment, dst_segment LIMIT {DRIFT_PAIRS}"
            ),
        )
        .await?;
        self.drift_ratio.reset();
        for row in &worst {
            let ratio = row.get("ratio").and_then(Value::as_f64).unwrap_or(0.0);
            self.drift_ratio.with_label_values(&[text(row, "src_segment"), text(row, "dst_segment")]).set(ratio);
        }
        Ok(())
    }
}

/// Each remediated (asset, patch) with its time-to-patch, the highest
/// severity among the CVEs the patch fixes, and the asset's environment.
const TIME_TO_PATCH_SQL: &str = "
WITH fixes AS (SELECT patch_id, unnest(fixes_cves) AS cve_id FROM patches),
severity AS (
    SELECT f.patch_id, max(CASE c.severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3
                                           WHEN 'medium' THEN 2 WHEN 'low' THEN 1 END) AS level
    FROM fixes f JOIN cves c ON c.cve_id = f.cve_id GROUP BY f.patch_id
)
SELECT o.asset_id, o.patch_id, o.time_to_patch_s AS ttp,
       coalesce(a.environment, 'unknown') AS environment,
       CASE s.level WHEN 4 THEN 'critical' WHEN 3 THEN 'high' WHEN 2 THEN 'medium' WHEN 1 THEN 'low'
                    ELSE 'unknown' END AS severity
FROM patch_outcomes o
LEFT JOIN severity s ON s.patch_id = o.patch_id
LEFT JOIN assets a ON a.asset_id = o.asset_id
WHERE o.time_to_patch_s IS NOT NULL";

async fn rows_of(session: &LakeSession, sql: &str) -> Result<Vec<serde_json::Map<String, Value>>, QueryError> {
    let (_, batches) = session.query(sql).await?;
    json_objects(&batches).map_err(QueryError::Execution)
}

fn text<'a>(row: &'a serde_json::Map<String, Value>, column: &str) -> &'a str {
    row.get(column).and_then(Value::as_str).unwrap_or("")
}

fn number(row: &serde_json::Map<String, Value>, column: &str) -> i64 {
    row.get(column).and_then(Value::as_i64).unwrap_or(0)
}

impl ServeMetrics {
    fn new() -> ServeMetrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("patchtrail_http_requests_total", "HTTP requests answered, by route and status."),
            &["route", "status"],
        )
        .expect("valid metric");
        let query_seconds = Histogram::with_opts(
            HistogramOpts::new("patchtrail_query_duration_seconds", "Time to run one query, limit included.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(requests.clone())).expect("registered once");
        registry.register(Box::new(query_seconds.clone())).expect("registered once");
        let domain = DomainMetrics::new(&registry);
        ServeMetrics { registry, requests, query_seconds, domain }
    }

    fn count(&self, route: &str, status: StatusCode) {
        self.requests.with_label_values(&[route, status.as_str()]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_changes_send_new_and_changed_rows_and_tombstones_for_the_rest() {
        let map = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let published = map(&[("a/1", "x"), ("b/2", "y"), ("c/3", "z")]);
        let current = map(&[("a/1", "x"), ("b/2", "y2"), ("d/4", "w")]);
        let changes = queue_changes(&published, &current);
        assert_eq!(
            changes,
            vec![
                ("b/2".to_owned(), Some("y2".to_owned())),
                ("d/4".to_owned(), Some("w".to_owned())),
                ("c/3".to_owned(), None),
            ]
        );
        assert!(queue_changes(&current, &current).is_empty());
    }
}
