//! [`LakeSession`]: a DataFusion session over one snapshot of the lake: the
//! files its Delta tables hold (never a directory listing, so an uncommitted
//! epoch is never seen), registered per table as `<table>_history` with
//! every revision and `<table>` with the latest revision of each row (a
//! revised table's current rows, which the publisher keeps: see
//! `processor::current`); then the metric views of `queries/sql/` and the
//! `priorities` view. Sessions only read: DDL, DML and statements are
//! refused.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use object_store::{ObjectMeta, ObjectStore};
use processor::delta::{Part, Published};
use processor::lake::Lake;
use schemas::{Table, Timestamp};

use crate::error::{QueryError, classify};
use crate::guard;
use crate::known::KnownFiles;
use crate::weights::Weights;
use processor::columns::TableSchema;

/// The metric views every session has, by name, as the SQL files in
/// `queries/sql/`, in the order they are created (a view may read the ones
/// before it).
pub const VIEWS: [(&str, &str); 7] = [
    ("patch_severity", include_str!("../sql/patch_severity.sql")),
    ("outcome_severity", include_str!("../sql/outcome_severity.sql")),
    ("ttp_matrix", include_str!("../sql/ttp_matrix.sql")),
    ("sla_compliance", include_str!("../sql/sla_compliance.sql")),
    ("canary_summary", include_str!("../sql/canary_summary.sql")),
    ("drift_summary", include_str!("../sql/drift_summary.sql")),
    ("asset_risk", include_str!("../sql/asset_risk.sql")),
];

/// A read-only DataFusion session over one snapshot of the lake.
pub struct LakeSession {
    context: SessionContext,
    as_of: Option<Timestamp>,
    /// Each table's providers, to open the same snapshot in another runtime.
    tables: Vec<Source>,
    /// The lake's store, registered under [`LAKE_URL`].
    store: Arc<dyn ObjectStore>,
    weights: Weights,
}

/// The URL the lake's files are read at: its own store registered under a
/// scheme of patchtrail's, so plans and errors name files by their place in
/// the lake (for a bucket, under its prefix), never by a local path or a
/// bucket name.
pub const LAKE_URL: &str = "patchtrail://lake";

/// A runtime for queries a client sends: DataFusion's memory pool limited to
/// `memory_limit` bytes (a query that needs more fails with a clear error
/// instead of exhausting the process) and no spilling to disk.
pub fn bounded_runtime(memory_limit: usize) -> Result<Arc<RuntimeEnv>, QueryError> {
    let no_spill = DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled);
    RuntimeEnvBuilder::new()
        .with_memory_limit(memory_limit, 1.0)
        .with_disk_manager_builder(no_spill)
        .build_arc()
        .map_err(classify)
}

impl LakeSession {
    /// Opens a session over the lake's committed files, in DataFusion's
    /// default runtime (no memory limit; sorts may spill to disk).
    pub async fn open(lake: &Lake) -> Result<LakeSession, QueryError> {
        LakeSession::open_with(lake, None, &Weights::default()).await
    }

    /// Opens a session over the lake's committed files whose queries run in
    /// `runtime` (see [`bounded_runtime`]), the priority score with `weights`.
    pub async fn open_with(
        lake: &Lake,
        runtime: Option<Arc<RuntimeEnv>>,
        weights: &Weights,
    ) -> Result<LakeSession, QueryError> {
        if lake.needs_migration().await? {
            return Err(QueryError::Invalid(format!(
                "the lake at {} was written before its tables were Delta tables: run `patchtrail lake migrate --lake {}` once",
                lake.location(),
                lake.location()
            )));
        }
        let published = lake.published().await?;
        LakeSession::over(lake, &published, runtime, weights).await
    }

    /// A session over `published`, the files of the lake's Delta tables.
    pub async fn over(
        lake: &Lake,
        published: &Published,
        runtime: Option<Arc<RuntimeEnv>>,
        weights: &Weights,
    ) -> Result<LakeSession, QueryError> {
        let as_of = published.as_of;
        // A lake in a bucket is read through the bucket's own store, its
        // prefix in the path: object_store's PrefixStore answers a HEAD with
        // the full path, and DataFusion would drop every file as outside the
        // table (object_store 0.13).
        let (store, base) = match lake.bucket() {
            Some((bucket, root)) => {
                let prefix = lake.location().strip_prefix(bucket).unwrap_or("").trim_matches('/');
                (root, if prefix.is_empty() { LAKE_URL.to_owned() } else { format!("{LAKE_URL}/{prefix}") })
            }
            None => (lake.store(), LAKE_URL.to_owned()),
        };
        let mut files = Files { base, known: Vec::new() };
        let mut tables: Vec<Source> = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            let files_of = |part: Part| published.files.get(&part.dir()).map_or(&[][..], Vec::as_slice);
            let mut provider = |part: Part| {
                files.provider(table, files_of(part).iter().map(|file| (&file.path, file.size, file.modified_ms)))
            };
            let history = provider(Part::History(table))?;
            let current = if table.is_revised() { provider(Part::Current(table))? } else { Arc::clone(&history) };
            tables.push(Source { table, history, current });
        }
        // Listing the tables' files asks the store nothing: see `known`.
        let store: Arc<dyn ObjectStore> = Arc::new(KnownFiles::new(store, files.known));
        let runtime = match runtime {
            Some(runtime) => runtime,
            None => RuntimeEnvBuilder::new().build_arc().map_err(classify)?,
        };
        let context = context(runtime, &tables, Arc::clone(&store), as_of, weights).await?;
        Ok(LakeSession { context, as_of, tables, store, weights: weights.clone() })
    }

    /// The same snapshot in another runtime (another memory pool): what the
    /// server computes for itself never competes with its clients' queries.
    pub async fn with_runtime(&self, runtime: Arc<RuntimeEnv>) -> Result<LakeSession, QueryError> {
        let context = context(runtime, &self.tables, Arc::clone(&self.store), self.as_of, &self.weights).await?;
        Ok(LakeSession {
            context,
            as_of: self.as_of,
            tables: self.tables.clone(),
            store: Arc::clone(&self.store),
            weights: self.weights.clone(),
        })
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
        if sql.len() > guard::MAX_SQL_BYTES {
            return Err(QueryError::Invalid(format!(
                "the query is {} bytes, over the limit of {} (max_sql_bytes)",
                sql.len(),
                guard::MAX_SQL_BYTES
            )));
        }
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

/// One table of a session: every revision, and the latest of each key (the
/// same provider for an append-only table).
#[derive(Clone)]
struct Source {
    table: Table,
    history: Arc<dyn TableProvider>,
    current: Arc<dyn TableProvider>,
}

/// Builds the providers of a session's files, remembering each file for
/// [`KnownFiles`].
struct Files {
    base: String,
    known: Vec<ObjectMeta>,
}

impl Files {
    /// A table over `files` (path in the lake, bytes, write time in ms).
    fn provider<'a>(
        &mut self,
        table: Table,
        files: impl Iterator<Item = (&'a String, u64, i64)>,
    ) -> Result<Arc<dyn TableProvider>, QueryError> {
        let mut urls = Vec::new();
        for (path, size, modified_ms) in files {
            let url = ListingTableUrl::parse(format!("{}/{path}", self.base)).map_err(classify)?;
            self.known.push(ObjectMeta {
                location: url.prefix().clone(),
                last_modified: chrono::DateTime::from_timestamp_millis(modified_ms).unwrap_or_default(),
                size,
                e_tag: None,
                version: None,
            });
            urls.push(url);
        }
        if urls.is_empty() {
            return Ok(Arc::new(MemTable::try_new(table.schema(), vec![vec![]]).map_err(classify)?));
        }
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config =
            ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(table.schema());
        Ok(Arc::new(ListingTable::try_new(config).map_err(classify)?))
    }
}

/// A context over `tables` in `runtime`: each table's history, the view of
/// its latest revisions, the priorities view as of `as_of`, the metric views,
/// and the functions a client may call.
async fn context(
    runtime: Arc<RuntimeEnv>,
    tables: &[Source],
    store: Arc<dyn ObjectStore>,
    as_of: Option<Timestamp>,
    weights: &Weights,
) -> Result<SessionContext, QueryError> {
    let context = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
    let url = ObjectStoreUrl::parse(LAKE_URL).map_err(classify)?;
    context.register_object_store(url.as_ref(), store);
    guard::restrict(&context);
    for Source { table, history, current } in tables {
        let name = table.name();
        context.register_table(format!("{name}_history").as_str(), Arc::clone(history)).map_err(classify)?;
        context.register_table(name, Arc::clone(current)).map_err(classify)?;
    }
    let now = as_of.unwrap_or_default().to_string();
    let now = now.trim_end_matches('Z');
    context.sql(&format!("CREATE VIEW priorities AS {}", weights.priorities_sql(now))).await.map_err(classify)?;
    for (name, sql) in VIEWS {
        context.sql(&format!("CREATE VIEW {name} AS {sql}")).await.map_err(classify)?;
    }
    Ok(context)
}
