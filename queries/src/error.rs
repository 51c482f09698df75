//! Errors of the query layer, each with its [`ErrorClass`], so that the
//! HTTP API answers 400 for the caller's mistakes, 413/422 for limits, 503
//! for a lake that cannot be read right now and 500 for bugs, and `sql`
//! exits 2 only for the first.

use datafusion::error::DataFusionError;
use schemas::ErrorClass;

/// What went wrong answering a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query is not valid or not allowed: the user's to fix.
    #[error("{0}")]
    Invalid(String),
    /// A configured limit was reached: memory, time, result size.
    #[error("{0}")]
    Limit(String),
    /// The server is at its limit of concurrent queries: try again soon.
    #[error("{0}")]
    Busy(String),
    /// The lake could not be read.
    #[error("{0}")]
    Lake(#[from] processor::error::Error),
    /// A file of the lake could not be read while the query ran (removed by
    /// a vacuum, a store that did not answer).
    #[error("the lake cannot be read: {0}")]
    Unavailable(String),
    /// A bug: DataFusion reported an internal error, or a result had an
    /// unexpected shape.
    #[error("internal error: {0}")]
    Internal(String),
}

impl QueryError {
    /// Whose problem it is.
    pub fn class(&self) -> ErrorClass {
        match self {
            QueryError::Invalid(_) => ErrorClass::Input,
            QueryError::Limit(_) => ErrorClass::Limit,
            QueryError::Busy(_) | QueryError::Unavailable(_) => ErrorClass::Transient,
            QueryError::Lake(error) => error.class(),
            QueryError::Internal(_) => ErrorClass::Internal,
        }
    }
}

/// Sorts DataFusion's errors into the classes above. Execution and Arrow
/// errors of a valid plan are the query's own doing (a cast that cannot
/// be made, a division by zero, a bad argument), so they are the caller's.
pub fn classify(error: DataFusionError) -> QueryError {
    // A file that cannot be read surfaces wrapped (in a Parquet error, an
    // external one): look down the whole chain of sources.
    // A committed file changed behind the log's back is the lake's fault.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.find_root());
    while let Some(cause) = source {
        if cause.is::<crate::known::Corrupt>() {
            return QueryError::Internal(error.to_string());
        }
        source = cause.source();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.find_root());
    while let Some(cause) = source {
        if cause.is::<object_store::Error>() || cause.is::<std::io::Error>() {
            return QueryError::Unavailable(error.to_string());
        }
        source = cause.source();
    }
    match error.find_root() {
        DataFusionError::ResourcesExhausted(_) => QueryError::Limit(error.to_string()),
        DataFusionError::Internal(_) => QueryError::Internal(error.to_string()),
        DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => QueryError::Unavailable(error.to_string()),
        DataFusionError::ParquetError(_) | DataFusionError::External(_) => QueryError::Internal(error.to_string()),
        DataFusionError::ArrowError(arrow, _) if matches!(**arrow, arrow::error::ArrowError::IoError(..)) => {
            QueryError::Unavailable(error.to_string())
        }
        _ => QueryError::Invalid(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_bugs_are_not_the_callers_fault() {
        let check = |error: DataFusionError, class: ErrorClass| assert_eq!(classify(error).class(), class);
        check(DataFusionError::Plan("no such column".into()), ErrorClass::Input);
        check(DataFusionError::Execution("cannot cast".into()), ErrorClass::Input);
        check(DataFusionError::ResourcesExhausted("pool".into()), ErrorClass::Limit);
        check(DataFusionError::Internal("oops".into()), ErrorClass::Internal);
        let missing = object_store::Error::NotFound { path: "x".into(), source: "gone".into() };
        check(DataFusionError::ObjectStore(Box::new(missing)), ErrorClass::Transient);
        let wrapped =
            DataFusionError::Context("while".into(), Box::new(DataFusionError::ResourcesExhausted("m".into())));
        check(wrapped, ErrorClass::Limit);
    }
}
