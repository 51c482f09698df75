//! Answers of `POST /v1/sql`, encoded straight from Arrow batches as they
//! come: JSON (`{"columns", "rows", "row_count", "truncated"}`, each row a
//! JSON array, so two columns of the same name stay apart), CSV, or an
//! Arrow IPC stream. The encoded answer may not grow past a byte cap.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::json::StructMode;
use arrow::record_batch::RecordBatch;

use crate::error::QueryError;

/// The media type of the Arrow IPC stream format.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// How an answer is encoded, chosen by the request's `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (the default).
    Json,
    /// `text/csv`.
    Csv,
    /// `application/vnd.apache.arrow.stream`.
    ArrowStream,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn accepted(accept: &str) -> Format {
        if accept.contains(ARROW_STREAM) {
            Format::ArrowStream
        } else if accept.contains("text/csv") {
            Format::Csv
        } else {
            Format::Json
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv",
            Format::ArrowStream => ARROW_STREAM,
        }
    }
}

/// A buffer that refuses to grow past its limit.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: Arc<AtomicBool>,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + data.len() > self.limit {
            self.overflowed.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("the answer is larger than its byte limit"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Writer {
    Json(arrow::json::Writer<Capped, arrow::json::writer::JsonArray>),
    Csv(Box<arrow::csv::Writer<Capped>>),
    Arrow(arrow::ipc::writer::StreamWriter<Capped>),
}

/// An answer being encoded.
pub struct Encoder {
    format: Format,
    schema: SchemaRef,
    writer: Writer,
    rows: usize,
    limit: usize,
    overflowed: Arc<AtomicBool>,
}

impl Encoder {
    /// Starts an answer with `schema`, at most `limit` bytes long.
    pub fn new(format: Format, schema: SchemaRef, limit: usize) -> Result<Encoder, QueryError> {
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut out = Capped { bytes: Vec::with_capacity(8 * 1024), limit, overflowed: Arc::clone(&overflowed) };
        let fail = |e: ArrowError| QueryError::Internal(format!("cannot encode the answer: {e}"));
        let writer = match format {
            Format::Json => {
                let columns: Vec<serde_json::Value> = schema
                    .fields()
                    .iter()
                    .map(|field| serde_json::json!({ "name": field.name(), "type": field.data_type().to_string() }))
                    .collect();
                let head = format!("{{\"columns\":{},\"rows\":", serde_json::Value::Array(columns));
                out.write_all(head.as_bytes()).map_err(|_| too_large(limit))?;
                let writer = arrow::json::WriterBuilder::new().with_struct_mode(StructMode::ListOnly).build(out);
                Writer::Json(writer)
            }
            Format::Csv => {
                if schema.fields().is_empty() {
                    out.write_all(b"\n").map_err(|_| too_large(limit))?;
                }
                Writer::Csv(Box::new(arrow::csv::WriterBuilder::new().with_header(true).build(out)))
            }
            Format::ArrowStream => {
                Writer::Arrow(arrow::ipc::writer::StreamWriter::try_new(out, &schema).map_err(fail)?)
            }
        };
        Ok(Encoder { format, schema, writer, rows: 0, limit, overflowed })
    }

    /// Appends a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), QueryError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let result = match &mut self.writer {
            Writer::Json(writer) => writer.write(batch),
            Writer::Csv(writer) => writer.write(batch),
            Writer::Arrow(writer) => writer.write(batch),
        };
        self.rows += batch.num_rows();
        self.check(result)
    }

    fn check(&self, result: Result<(), ArrowError>) -> Result<(), QueryError> {
        match result {
            Ok(()) => Ok(()),
            Err(_) if self.overflowed.load(Ordering::Relaxed) => Err(too_large(self.limit)),
            Err(e) => Err(QueryError::Internal(format!("cannot encode the answer: {e}"))),
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The whole answer.
    pub fn finish(self, truncated: bool) -> Result<Vec<u8>, QueryError> {
        let Encoder { format, schema, writer, rows, limit, overflowed } = self;
        let check = |result: Result<(), ArrowError>| match result {
            Ok(()) => Ok(()),
            Err(_) if overflowed.load(Ordering::Relaxed) => Err(too_large(limit)),
            Err(e) => Err(QueryError::Internal(format!("cannot encode the answer: {e}"))),
        };
        let mut out = match writer {
            Writer::Json(mut writer) => {
                check(writer.finish())?;
                writer.into_inner()
            }
            Writer::Csv(writer) => {
                let mut out = (*writer).into_inner();
                if rows == 0 && !schema.fields().is_empty() {
                    // The writer writes the header with the first batch; say the columns anyway.
                    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    out.write_all(format!("{}\n", names.join(",")).as_bytes()).map_err(|_| too_large(limit))?;
                }
                out
            }
            Writer::Arrow(mut writer) => {
                check(writer.finish())?;
                writer.into_inner().map_err(|e| QueryError::Internal(format!("cannot encode the answer: {e}")))?
            }
        };
        if format == Format::Json {
            let tail = format!(",\"row_count\":{rows},\"truncated\":{truncated}}}");
            out.write_all(tail.as_bytes()).map_err(|_| too_large(limit))?;
        }
        Ok(out.bytes)
    }
}

fn too_large(limit: usize) -> QueryError {
    QueryError::Limit(format!(
        "the answer is larger than {} MiB (server.max_answer_mib): ask for fewer rows or columns",
        limit.div_ceil(1 << 20)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("asset_id", DataType::Utf8, true),
            Field::new("asset_id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), Some("b")])),
                Arc::new(StringArray::from(vec![Some("x"), None])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .expect("batch")
    }

    fn encode(format: Format, batches: &[RecordBatch], limit: usize) -> Result<Vec<u8>, QueryError> {
        let mut encoder = Encoder::new(format, batch().schema(), limit)?;
        for batch in batches {
            encoder.write(batch)?;
        }
        encoder.finish(false)
    }

    #[test]
    fn json_rows_are_arrays_that_keep_columns_of_the_same_name_apart() {
        let json: serde_json::Value =
            serde_json::from_slice(&encode(Format::Json, &[batch()], 1 << 20).expect("encodes")).expect("JSON");
        assert_eq!(json["rows"], serde_json::json!([["a", "x", 1], ["b", null, 2]]));
        assert_eq!(json["columns"][1], serde_json::json!({"name": "asset_id", "type": "Utf8"}));
        assert_eq!((json["row_count"].as_u64(), &json["truncated"]), (Some(2), &serde_json::json!(false)));
        let empty: serde_json::Value =
            serde_json::from_slice(&encode(Format::Json, &[], 1 << 20).expect("encodes")).expect("JSON");
        assert_eq!(empty["rows"], serde_json::json!([]));
    }

    #[test]
    fn csv_has_a_header_even_without_rows_and_answers_stop_at_their_byte_limit() {
        let csv = String::from_utf8(encode(Format::Csv, &[], 1 << 20).expect("encodes")).expect("text");
        assert_eq!(csv, "asset_id,asset_id,n\n");
        let many: Vec<RecordBatch> = (0..100).map(|_| batch()).collect();
        for format in [Format::Json, Format::Csv, Format::ArrowStream] {
            let error = encode(format, &many, 512).expect_err("over the limit");
            assert_eq!(error.class(), schemas::ErrorClass::Limit, "{format:?}: {error}");
        }
    }
}
