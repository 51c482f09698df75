//! The routes of the API and how each answers: errors as
//! `{"error": "...", "class": "..."}` with the status of their class.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use schemas::ErrorClass;
use serde_json::{Value, json};

use super::Service;
use super::format::Format;
use crate::error::QueryError;
use crate::metrics::exposition;

/// Response header telling CSV and Arrow clients whether rows were left out
/// (JSON carries it as the `truncated` field too).
const TRUNCATED_HEADER: &str = "x-patchtrail-truncated";

/// Bodies of `POST /v1/sql` larger than this are refused unread.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Time a client has to send the body of its request.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) fn router(service: Service) -> Router {
    Router::new()
        .route("/v1/sql", post(sql))
        .route("/v1/priorities", get(priorities))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(service)
}

/// The routes of a connection taken beyond the limits (`listener`): the
/// liveness probe, and 503 for the rest.
pub(super) fn reserve_router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).fallback(|| async {
        let mut response = refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "every connection this server holds is busy (server.max_connections); try again in a moment",
        );
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        response
    })
}

/// A JSON error with the status its class calls for.
pub(super) fn error_response(error: &QueryError) -> Response {
    let status = match error.class() {
        ErrorClass::Input => StatusCode::BAD_REQUEST,
        ErrorClass::Limit => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorClass::Transient => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response =
        (status, axum::Json(json!({ "error": error.to_string(), "class": error.class().to_string() }))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

fn refusal(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `None` when the request may go on, the 401 otherwise.
fn refuse(service: &Service, headers: &HeaderMap) -> Option<Response> {
    let expected = service.settings().token.as_deref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        None
    } else {
        Some(refusal(StatusCode::UNAUTHORIZED, "a bearer token is required: Authorization: Bearer <token>"))
    }
}

/// Compares without returning early on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /v1/sql` with `{"sql": "..."}`: JSON, CSV with `Accept: text/csv`,
/// an Arrow IPC stream with `Accept: application/vnd.apache.arrow.stream`.
async fn sql(State(service): State<Service>, headers: HeaderMap, body: Body) -> Response {
    let response = sql_response(&service, &headers, body).await;
    service.metrics().count("/v1/sql", response.status().as_u16());
    response
}

async fn sql_response(service: &Service, headers: &HeaderMap, body: Body) -> Response {
    // The token is checked before the body is read.
    if let Some(refused) = refuse(service, headers) {
        return refused;
    }
    let too_large = || {
        let message = format!("the body is larger than {MAX_BODY_BYTES} bytes");
        refusal(StatusCode::PAYLOAD_TOO_LARGE, &message)
    };
    // A body announced too large is refused before a byte of it is read.
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            let message = format!("the body was not sent within {} s", BODY_TIMEOUT.as_secs());
            return refusal(StatusCode::REQUEST_TIMEOUT, &message);
        }
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return refusal(StatusCode::BAD_REQUEST, &format!("the body must be JSON {{\"sql\": \"...\"}}: {e}"));
        }
    };
    let Some(sql) = request.get("sql").and_then(Value::as_str) else {
        return refusal(StatusCode::BAD_REQUEST, "the body must be JSON {\"sql\": \"...\"} with the query as a string");
    };
    if sql.len() > crate::guard::MAX_SQL_BYTES {
        let message = format!(
            "the query is {} bytes, over the limit of {} (max_sql_bytes)",
            sql.len(),
            crate::guard::MAX_SQL_BYTES
        );
        return refusal(StatusCode::PAYLOAD_TOO_LARGE, &message);
    }
    let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()).unwrap_or("");
    match service.query(sql.to_owned(), Format::accepted(accept)).await {
        Ok(answer) => {
            let truncated = if answer.truncated { "true" } else { "false" };
            (
                [(header::CONTENT_TYPE.as_str(), answer.format.content_type()), (TRUNCATED_HEADER, truncated)],
                answer.body,
            )
                .into_response()
        }
        Err(error) => error_response(&error),
    }
}

#[derive(serde::Deserialize)]
struct PrioritiesQuery {
    limit: Option<usize>,
}

/// `GET /v1/priorities?limit=N`: the top of the current snapshot's queue.
async fn priorities(
    State(service): State<Service>,
    headers: HeaderMap,
    query: Result<Query<PrioritiesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let response = priorities_response(&service, &headers, query.map(|q| q.0));
    service.metrics().count("/v1/priorities", response.status().as_u16());
    response
}

fn priorities_response(
    service: &Service,
    headers: &HeaderMap,
    query: Result<PrioritiesQuery, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(refused) = refuse(service, headers) {
        return refused;
    }
    let max = service.settings().max_rows;
    let limit = match query {
        Ok(PrioritiesQuery { limit: None }) => 100.min(max),
        Ok(PrioritiesQuery { limit: Some(limit) }) if (1..=max).contains(&limit) => limit,
        Ok(PrioritiesQuery { limit: Some(limit) }) => {
            return refusal(StatusCode::BAD_REQUEST, &format!("limit must be between 1 and {max}, got {limit}"));
        }
        Err(rejection) => return refusal(StatusCode::BAD_REQUEST, &format!("limit must be a number: {rejection}")),
    };
    let snapshot = service.snapshot();
    let count = limit.min(snapshot.queue.rows.len());
    let as_of = serde_json::to_string(&snapshot.queue.as_of.map(|t| t.to_string())).expect("a string serializes");
    let head = format!("{{\"as_of\":{as_of},\"count\":{count},\"items\":[");
    let chunks = [Bytes::from(head), snapshot.items.first(count), Bytes::from_static(b"]}")];
    ([(header::CONTENT_TYPE, "application/json")], Body::new(Chunks::new(chunks))).into_response()
}

/// Rows encoded as JSON once, joined by commas, with where each ends.
pub(super) struct EncodedRows {
    bytes: Bytes,
    ends: Vec<usize>,
}

impl EncodedRows {
    pub(super) fn of<T: serde::Serialize>(rows: &[T]) -> Result<EncodedRows, QueryError> {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(rows.len());
        for row in rows {
            if !ends.is_empty() {
                bytes.push(b',');
            }
            serde_json::to_writer(&mut bytes, row).map_err(|e| QueryError::Internal(format!("a queue row: {e}")))?;
            ends.push(bytes.len());
        }
        Ok(EncodedRows { bytes: bytes.into(), ends })
    }

    /// The first `n` rows (a reference to the shared bytes).
    fn first(&self, n: usize) -> Bytes {
        match n.checked_sub(1).and_then(|last| self.ends.get(last)) {
            Some(&end) => self.bytes.slice(..end),
            None => Bytes::new(),
        }
    }
}

/// A body of a few shared chunks, its length known.
struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: impl IntoIterator<Item = Bytes>) -> Chunks {
        let chunks: std::collections::VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Chunks { chunks, remaining }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let chunk = self.chunks.pop_front();
        if let Some(chunk) = &chunk {
            self.remaining -= chunk.len() as u64;
        }
        std::task::Poll::Ready(chunk.map(|chunk| Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// `GET /metrics`: the Prometheus text exposition.
async fn metrics(State(service): State<Service>, headers: HeaderMap) -> Response {
    let response = match refuse(&service, &headers) {
        Some(refused) => refused,
        None => {
            let body = exposition(&service.metrics().registry);
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
        }
    };
    service.metrics().count("/metrics", response.status().as_u16());
    response
}

/// `GET /readyz`: the lake is readable and, when publishing, the brokers answer.
async fn readyz(State(service): State<Service>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse(&service, &headers) {
        refused
    } else if service.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the lake cannot be read, or the Kafka brokers do not answer")
            .into_response()
    }
}
