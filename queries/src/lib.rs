//! Queries: the DataFusion session over a committed lake snapshot, the SQL
//! views that define the metrics, prioritization, the HTTP API and the
//! Prometheus endpoint.
//!
//! Not built yet: this crate is reserved in the workspace so the dependency
//! direction (`schemas` ← `processor` ← `queries`) is fixed from the start. It
//! will only ever read the lake.
