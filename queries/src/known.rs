//! The lake's store, as the session's readers see it: the files a table's
//! Delta log names are listed from the log, without a request each.
//!
//! DataFusion lists a table given as file URLs with one HEAD per file
//! (`ListingTableUrl::list_prefixed_files`), all at once. Over a lake of
//! 100,000 small files that is 100,000 requests to a bucket before the first
//! query, and on a local disk every answer holds its file open until the
//! listing gets to it: past the process's open-file limit the query fails
//! ("Too many open files"). The Delta log already says each file's size and
//! write time, which is all a HEAD tells, so HEADs of those files are
//! answered from it; everything else goes to the store.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// `inner`, with the metadata of the files the Delta logs name.
#[derive(Debug)]
pub struct KnownFiles {
    inner: Arc<dyn ObjectStore>,
    files: HashMap<Path, ObjectMeta>,
}

impl KnownFiles {
    /// Wraps `inner`; `files` are the metadata of files it holds.
    pub fn new(inner: Arc<dyn ObjectStore>, files: impl IntoIterator<Item = ObjectMeta>) -> Self {
        let files = files.into_iter().map(|meta| (meta.location.clone(), meta)).collect();
        KnownFiles { inner, files }
    }
}

impl KnownFiles {
    /// A failed read of a file the log names: if the file is not the size
    /// the log records, it was changed after it was committed, and the error
    /// says so ([`Corrupt`]: the lake's fault, not a store that is away).
    async fn checked<T>(&self, location: &Path, result: Result<T>) -> Result<T> {
        let Err(error) = result else { return result };
        let Some(logged) = self.files.get(location) else { return Err(error) };
        match self.inner.head(location).await {
            Ok(actual) if actual.size != logged.size => Err(object_store::Error::Generic {
                store: "lake",
                source: Box::new(Corrupt { path: location.to_string(), logged: logged.size, actual: actual.size }),
            }),
            _ => Err(error),
        }
    }
}

/// A committed file whose size is not the one its Delta log records.
#[derive(Debug)]
pub struct Corrupt {
    path: String,
    logged: u64,
    actual: u64,
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the committed file {} is {} bytes, its Delta log records {}: it was changed after it was committed",
            self.path, self.actual, self.logged
        )
    }
}

impl std::error::Error for Corrupt {}

impl fmt::Display for KnownFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KnownFiles({}, {} files)", self.inner, self.files.len())
    }
}

#[async_trait]
impl ObjectStore for KnownFiles {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.head
            && let Some(meta) = self.files.get(location)
        {
            options.check_preconditions(meta)?;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                meta: meta.clone(),
                range: 0..meta.size,
                attributes: Attributes::default(),
            });
        }
        let result = self.inner.get_opts(location, options).await;
        self.checked(location, result).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let result = self.inner.get_ranges(location, ranges).await;
        self.checked(location, result).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn a_known_file_is_headed_from_its_metadata_and_read_from_the_store() {
        let inner = Arc::new(InMemory::new());
        let path = Path::from("exposures/date=2026-12-01/a.parquet");
        inner.put(&path, PutPayload::from_static(b"0123456789")).await.expect("put");
        let stored = inner.head(&path).await.expect("head");
        // What the log says, not what the store would: proves no request was made.
        let logged = ObjectMeta { size: 10, e_tag: None, ..stored.clone() };
        let store = KnownFiles::new(inner.clone(), [logged.clone()]);
        assert_eq!(store.head(&path).await.expect("head"), logged);
        assert_ne!(stored.e_tag, None, "the store's own answer has an ETag");
        let bytes = store.get_range(&path, 2..5).await.expect("read");
        assert_eq!(&bytes[..], b"234");
        let other = Path::from("exposures/other.parquet");
        assert!(matches!(store.head(&other).await, Err(object_store::Error::NotFound { .. })));
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_log_says_is_reported_as_changed_after_commit() {
        let inner = Arc::new(InMemory::new());
        let path = Path::from("exposures/date=2026-12-01/a.parquet");
        inner.put(&path, PutPayload::from_static(b"not parquet")).await.expect("put");
        let logged = ObjectMeta { size: 4096, ..inner.head(&path).await.expect("head") };
        let store = KnownFiles::new(inner, [logged]);
        let error = store.get_range(&path, 4000..4096).await.expect_err("past its end");
        let text = error.to_string();
        assert!(text.contains("is 11 bytes, its Delta log records 4096"), "{text}");
        let query = crate::error::classify(datafusion::error::DataFusionError::ObjectStore(Box::new(error)));
        assert_eq!(query.class(), schemas::ErrorClass::Internal);
    }
}
