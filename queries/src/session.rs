//! [`LakeSession`]: a DataFusion session over one snapshot of the lake: the
//! files named by its commit records (never a directory listing, so an
//! uncommitted epoch is never seen), registered per table as
//! `<table>_history` with every revision, and a view `<table>` that keeps the
//! latest revision of each row; then the metric views of `queries/sql/` and
//! the `priorities` view. Sessions only read: DDL, DML and statements are
//! refused.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use processor::lake::Lake;
use schemas::{Table, Timestamp};

use crate::error::{QueryError, classify};
use crate::priorities::Weights;

/// The metric views every session has, by name, as the SQL files in
/// `queries/sql/`, in the order they are created (a view may read the ones
/// before it).
pub const VIEWS: [(&str, &str); 6] = [
    ("patch_severity", include_str!("../sql/patch_severity.sql")),
    ("ttp_matrix", include_str!("../sql/ttp_matrix.sql")),
    ("sla_compliance", include_str!("../sql/sla_compliance.sql")),
    ("canary_summary", include_str!("../sql/canary_summary.sql")),
    ("drift_summary", include_str!("../sql/drift_summary.sql")),
    ("asset_risk", include_str!("../sql/asset_risk.sql")),
];

/// The `priorities` view (DOMAIN.md "Prioritization"), with `{now}` for the
/// lake's as-of time and the [`Weights`] as `{…_weight}` placeholders.
pub const PRIORITIES_SQL: &str = include_str!("../sql/priorities.sql");

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

    /// Plans one read-only query (DDL, DML and statements refused).
    async fn plan(&self, sql: &str) -> Result<DataFrame, QueryError> {
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        self.context.sql_with_options(sql, options).await.map_err(classify)
    }

    /// Runs one read-only query to the end.
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let frame = self.plan(sql).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await.map_err(classify)?;
        Ok((schema, batches))
    }

    /// Runs one read-only query as a stream of batches: dropping the stream
    /// stops the query.
    pub async fn stream(&self, sql: &str) -> Result<SendableRecordBatchStream, QueryError> {
        self.plan(sql).await?.execute_stream().await.map_err(classify)
    }
}
