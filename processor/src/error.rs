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
    /// A Delta table of the lake cannot be read or written.
    #[error("Delta table {table}: {reason}")]
    Delta {
        /// The table.
        table: String,
        /// Why.
        reason: String,
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
            Error::Storage { source, .. } => match source {
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::UnknownConfigurationKey { .. } => ErrorClass::Input,
                object_store::Error::NotFound { .. } => ErrorClass::Internal,
                _ => ErrorClass::Transient,
            },
            Error::Fenced { .. } | Error::Delta { .. } => ErrorClass::Transient,
            Error::Snapshot { .. } | Error::CommitRecord { .. } | Error::Encode { .. } => ErrorClass::Internal,
        }
    }
}

/// Result with the processor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
