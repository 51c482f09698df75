//! Errors of the processor and the lake.

use thiserror::Error;

/// Everything that can go wrong in the processor and the lake writer.
#[derive(Debug, Error)]
pub enum Error {
    /// A state snapshot that cannot be read: corrupt, or of another format version.
    #[error("state snapshot {path} cannot be read: {reason}")]
    Snapshot {
        /// Where it is.
        path: String,
        /// Why.
        reason: String,
    },
    /// A task's state that cannot be encoded as a snapshot (a bug).
    #[error("cannot encode the state of task {task}: {reason}")]
    SnapshotEncode {
        /// The task.
        task: String,
        /// Why.
        reason: String,
    },
    /// A commit record that cannot be read.
    #[error("commit record {path} cannot be read: {reason}")]
    CommitRecord {
        /// Where it is.
        path: String,
        /// Why.
        reason: String,
    },
    /// The object store failed (retryable for remote stores).
    #[error("lake storage failed at {path}: {source}")]
    Storage {
        /// The object.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// Encoding rows as Arrow or Parquet failed (a bug: rows are typed).
    #[error("cannot encode {table} rows: {reason}")]
    Encode {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
    /// Another writer committed this epoch of the task first: it owns the
    /// task now, and this writer's epoch was discarded.
    #[error("task {task} is owned by another writer: epoch {epoch} was committed by it")]
    Fenced {
        /// The task.
        task: String,
        /// The epoch this writer tried to commit.
        epoch: u64,
    },
    /// delta-rs failed on a Delta table of the lake; its class follows the cause.
    #[error("Delta table {table}")]
    DeltaTable {
        /// The table.
        table: String,
        /// delta-rs's error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// A Delta table of the lake is not as patchtrail writes it.
    #[error("Delta table {table}: {reason}")]
    Delta {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
    /// A thread or runtime of the pipeline could not start (the system's
    /// limits: threads, memory).
    #[error("cannot start the {what}")]
    Start {
        /// What did not start.
        what: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The lake writer thread ended without its error (it panicked: a bug).
    #[error("the lake writer {how}")]
    Writer {
        /// What happened to it.
        how: &'static str,
    },
    /// The lake location is not usable.
    #[error("lake location {location:?} is not usable: {reason}")]
    Location {
        /// What was given.
        location: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Whose problem it is: a lake location that cannot be used or a store
    /// that refuses the credentials is the user's; a store that does not
    /// answer is transient; unreadable records and snapshots are internal
    /// (corrupt state, never retried).
    pub fn class(&self) -> schemas::ErrorClass {
        use schemas::ErrorClass;
        match self {
            Error::Location { .. } => ErrorClass::Input,
            Error::Storage { source, .. } => storage_class(source),
            Error::DeltaTable { source, .. } => delta_class(source),
            // Another writer won the race: the next turn sees its version.
            // A compaction that could not read is tried again at the next one.
            Error::Fenced { .. } => ErrorClass::Transient,
            // A table patchtrail did not write, or a log that lost its files.
            Error::Delta { .. } => ErrorClass::Internal,
            Error::Snapshot { .. }
            | Error::SnapshotEncode { .. }
            | Error::Start { .. }
            | Error::Writer { .. }
            | Error::CommitRecord { .. }
            | Error::Encode { .. } => ErrorClass::Internal,
        }
    }
}

/// The class of a store's error: refused credentials or an unsupported
/// request are the user's to fix; a missing object the lake named is corrupt
/// state; the rest may heal.
fn storage_class(error: &object_store::Error) -> schemas::ErrorClass {
    use schemas::ErrorClass;
    match error {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::NotSupported { .. }
        | object_store::Error::NotImplemented { .. }
        | object_store::Error::UnknownConfigurationKey { .. } => ErrorClass::Input,
        object_store::Error::NotFound { .. } => ErrorClass::Internal,
        _ => ErrorClass::Transient,
    }
}

/// The class of a delta-rs error, by its cause: storage as the store's, a
/// commit that lost a race transient, a log or file delta-rs cannot make
/// sense of internal (never retried: retrying reads the same bytes).
fn delta_class(error: &deltalake::DeltaTableError) -> schemas::ErrorClass {
    use deltalake::DeltaTableError as Delta;
    use deltalake::kernel::transaction::TransactionError;
    use schemas::ErrorClass;
    match error {
        Delta::ObjectStore { source } => storage_class(source),
        Delta::Io { .. } | Delta::VersionAlreadyExists(_) => ErrorClass::Transient,
        Delta::Transaction { source } => match source {
            TransactionError::ObjectStore { source } => storage_class(source),
            TransactionError::VersionAlreadyExists(_)
            | TransactionError::CommitConflict(_)
            | TransactionError::MaxCommitAttempts(_) => ErrorClass::Transient,
            _ => ErrorClass::Internal,
        },
        Delta::InvalidTableLocation(_) | Delta::MissingFeature { .. } => ErrorClass::Input,
        _ => ErrorClass::Internal,
    }
}

/// Result with the processor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use deltalake::DeltaTableError;
    use schemas::ErrorClass;

    use super::*;

    fn check(error: Error, class: ErrorClass) {
        assert_eq!(error.class(), class, "{error:?}");
    }

    fn delta(source: DeltaTableError) -> Error {
        Error::DeltaTable { table: "exposures".to_owned(), source: Box::new(source) }
    }

    fn denied() -> object_store::Error {
        object_store::Error::PermissionDenied { path: "lake".to_owned(), source: "no".into() }
    }

    #[test]
    fn each_error_is_classed_by_its_cause() {
        check(Error::Storage { path: "a".to_owned(), source: denied() }, ErrorClass::Input);
        let missing = object_store::Error::NotFound { path: "a".to_owned(), source: "gone".into() };
        check(Error::Storage { path: "a".to_owned(), source: missing }, ErrorClass::Internal);
        let timeout = object_store::Error::Generic { store: "S3", source: "timed out".into() };
        check(Error::Storage { path: "a".to_owned(), source: timeout }, ErrorClass::Transient);
        check(delta(DeltaTableError::ObjectStore { source: denied() }), ErrorClass::Input);
        check(delta(DeltaTableError::VersionAlreadyExists(7)), ErrorClass::Transient);
        check(delta(DeltaTableError::NotATable("x".to_owned())), ErrorClass::Internal);
        check(delta(DeltaTableError::InvalidTableLocation("x".to_owned())), ErrorClass::Input);
        check(Error::Fenced { task: "assets-0".to_owned(), epoch: 3 }, ErrorClass::Transient);
        check(Error::Location { location: "x".to_owned(), reason: "y".to_owned() }, ErrorClass::Input);
        check(Error::SnapshotEncode { task: "assets-0".to_owned(), reason: "y".to_owned() }, ErrorClass::Internal);
    }

    #[test]
    fn a_delta_error_keeps_its_source() {
        let error = delta(DeltaTableError::VersionAlreadyExists(7));
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("Delta transaction failed, version 7 already exists."));
    }
}
