//! Queries over the committed lake.
//!
//! [`LakeSession`] is a DataFusion session over one snapshot of the lake: the
//! files named by its commit records (never a directory listing, so an
//! uncommitted epoch is never seen), registered per table as
//! `<table>_history` with every revision, and a view `<table>` that keeps the
//! latest revision of each row. The metric views are SQL files in
//! `queries/sql/`. Sessions only read: DDL, DML and statements are refused.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use processor::lake::Lake;
use schemas::{Table, Timestamp};

/// Errors of the query layer.
#[derive(Debug)]
pub enum QueryError {
    /// The query is not valid or not allowed: the user's to fix.
    Invalid(String),
    /// The lake could not be read.
    Lake(processor::error::Error),
    /// DataFusion failed while running a valid query.
    Execution(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Invalid(message) => write!(f, "{message}"),
            QueryError::Lake(error) => write!(f, "{error}"),
            QueryError::Execution(message) => write!(f, "query failed: {message}"),
        }
    }
}

impl std::error::Error for QueryError {}

impl From<processor::error::Error> for QueryError {
    fn from(error: processor::error::Error) -> Self {
        QueryError::Lake(error)
    }
}

fn classify(error: DataFusionError) -> QueryError {
    match error.find_root() {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            QueryError::Invalid(error.to_string())
        }
        DataFusionError::NotImplemented(_) => QueryError::Invalid(error.to_string()),
        _ => QueryError::Execution(error.to_string()),
    }
}

/// The metric views every session has, by name, as the SQL files in `queries/sql/`.
pub const VIEWS: [(&str, &str); 5] = [
    ("ttp_matrix", include_str!("../sql/ttp_matrix.sql")),
    ("sla_compliance", include_str!("../sql/sla_compliance.sql")),
    ("canary_summary", include_str!("../sql/canary_summary.sql")),
    ("drift_summary", include_str!("../sql/drift_summary.sql")),
    ("asset_risk", include_str!("../sql/asset_risk.sql")),
];

/// The `priorities` view (DOMAIN.md "Prioritization"), with `{now}` for the
/// lake's as-of time and the [`Weights`] as `{…_weight}` placeholders.
pub const PRIORITIES_SQL: &str = include_str!("../sql/priorities.sql");

/// The weights of the priority score; the defaults are DOMAIN.md's.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// `1 + epss × epss_weight`.
    pub epss: f64,
    /// For a CVE in the KEV catalog.
    pub kev: f64,
    /// For an internet-exposed asset.
    pub internet_exposed: f64,
    /// For an asset in the `edge` environment.
    pub edge: f64,
    /// By asset criticality.
    pub criticality_low: f64,
    /// By asset criticality.
    pub criticality_moderate: f64,
    /// By asset criticality.
    pub criticality_high: f64,
    /// The urgency term is `1 + clamp(elapsed share of the SLA, 0, max_urgency)`.
    pub max_urgency: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            epss: 4.0,
            kev: 2.0,
            internet_exposed: 1.5,
            edge: 1.2,
            criticality_low: 1.0,
            criticality_moderate: 1.5,
            criticality_high: 2.0,
            max_urgency: 2.0,
        }
    }
}

impl Weights {
    /// The `priorities` SQL with these weights and `now` filled in.
    pub fn priorities_sql(&self, now: &str) -> String {
        // `{:?}` keeps a decimal point (2.0, not 2): DataFusion reads it as a double.
        [
            ("{now}", now.to_owned()),
            ("{epss_weight}", format!("{:?}", self.epss)),
            ("{kev_weight}", format!("{:?}", self.kev)),
            ("{internet_exposed_weight}", format!("{:?}", self.internet_exposed)),
            ("{edge_weight}", format!("{:?}", self.edge)),
            ("{criticality_low_weight}", format!("{:?}", self.criticality_low)),
            ("{criticality_moderate_weight}", format!("{:?}", self.criticality_moderate)),
            ("{criticality_high_weight}", format!("{:?}", self.criticality_high)),
            ("{max_urgency}", format!("{:?}", self.max_urgency)),
        ]
        .iter()
        .fold(PRIORITIES_SQL.to_owned(), |sql, (placeholder, value)| sql.replace(placeholder, value))
    }
}

/// A read-only DataFusion session over one snapshot of the lake.
pub struct LakeSession {
    context: SessionContext,
    as_of: Option<Timestamp>,
}

impl LakeSession {
    /// Opens a session over the lake's committed files.
    pub async fn open(lake: &Lake) -> Result<LakeSession, QueryError> {
        LakeSession::open_limited(lake, None).await
    }

    /// [`LakeSession::open`] with DataFusion's memory pool limited to
    /// `memory_limit` bytes: a query that needs more fails with a clear
    /// error instead of exhausting the process (`serve`).
    pub async fn open_limited(lake: &Lake, memory_limit: Option<usize>) -> Result<LakeSession, QueryError> {
        LakeSession::open_with(lake, memory_limit, &Weights::default()).await
    }

    /// [`LakeSession::open_limited`] with the priority score's weights.
    pub async fn open_with(
        lake: &Lake,
        memory_limit: Option<usize>,
        weights: &Weights,
    ) -> Result<LakeSession, QueryError> {
        // Where the committed files are, as URLs DataFusion reads: the
        // canonical local directory, or the lake's place in its bucket.
        let base = match lake.bucket() {
            Some(_) => lake.location().trim_end_matches('/').to_owned(),
            None => std::fs::canonicalize(lake.location().trim_start_matches("file://"))
                .map_err(|e| QueryError::Invalid(format!("lake {:?} cannot be read: {e}", lake.location())))?
                .to_string_lossy()
                .into_owned(),
        };
        let records = lake.commit_records().await?;
        let as_of = records.iter().filter_map(|record| record.watermark).max();
        let context = match memory_limit {
            None => SessionContext::new(),
            Some(bytes) => {
                let runtime = RuntimeEnvBuilder::new().with_memory_limit(bytes, 1.0).build_arc().map_err(classify)?;
                SessionContext::new_with_config_rt(SessionConfig::new(), runtime)
            }
        };
        if let Some((bucket, store)) = lake.bucket() {
            let url = ListingTableUrl::parse(bucket).map_err(classify)?.object_store();
            context.register_object_store(url.as_ref(), store);
        }
        for table in Table::ALL {
            let history = format!("{}_history", table.name());
            let urls = records
                .iter()
                .flat_map(|record| &record.files)
                .filter(|file| file.table == table.name())
                .map(|file| ListingTableUrl::parse(format!("{base}/{}", file.path)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(classify)?;
            if urls.is_empty() {
                let empty = MemTable::try_new(table.schema(), vec![vec![]]).map_err(classify)?;
                context.register_table(history.as_str(), Arc::new(empty)).map_err(classify)?;
            } else {
                let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
                let config = ListingTableConfig::new_with_multi_paths(urls)
                    .with_listing_options(options)
                    .with_schema(table.schema());
                let listing = ListingTable::try_new(config).map_err(classify)?;
                context.register_table(history.as_str(), Arc::new(listing)).map_err(classify)?;
            }
            let columns: Vec<String> =
                table.schema().fields().iter().map(|field| format!("h.\"{}\"", field.name())).collect();
            let columns = columns.join(", ");
            let view = if table.key_columns().is_empty() || table == Table::Alerts {
                format!("CREATE VIEW {} AS SELECT {columns} FROM {history} h", table.name())
            } else {
                // The latest revision per key, as a join with the largest
                // revision of each key: (key, revision) is unique, and on
                // DataFusion 55 this runs about twice as fast as filtering on
                // row_number() over many small partitions.
                let keys = table.key_columns().join(", ");
                let on: Vec<String> = table.key_columns().iter().map(|key| format!("h.{key} = l.{key}")).collect();
                format!(
                    "CREATE VIEW {} AS SELECT {columns} FROM {history} h JOIN (SELECT {keys}, max(revision) AS \
                     latest__ FROM {history} GROUP BY {keys}) l ON {} AND h.revision = l.latest__",
                    table.name(),
                    on.join(" AND ")
                )
            };
            context.sql(&view).await.map_err(classify)?;
        }
        let now = as_of.unwrap_or_default().to_string();
        let now = now.trim_end_matches('Z');
        context.sql(&format!("CREATE VIEW priorities AS {}", weights.priorities_sql(now))).await.map_err(classify)?;
        for (name, sql) in VIEWS {
            context.sql(&format!("CREATE VIEW {name} AS {sql}")).await.map_err(classify)?;
        }
        Ok(LakeSession { context, as_of })
    }

    /// The lake's "as of": the largest committed watermark.
    pub fn as_of(&self) -> Option<Timestamp> {
        self.as_of
    }

    /// The DataFusion session (read-only use only).
    pub fn context(&self) -> &SessionContext {
        &self.context
    }

    /// Runs one read-only query.
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let frame = self.context.sql_with_options(sql, options).await.map_err(classify)?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(classify)?;
        Ok((schema, batches))
    }
}
