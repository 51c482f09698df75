//! Answers as text, as `patchtrail sql --format` prints them: an aligned
//! table with its row count, a JSON array of objects (`[]` when empty), or
//! CSV with a header line (the header alone when empty).

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::error::ArrowError;

/// How an answer is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table, then the row count.
    Table,
    /// A JSON array of objects, one per row.
    Json,
    /// CSV with a header line.
    Csv,
}

/// Writes the answer `batches` (of `schema`) to `out` in `format`.
pub fn write(format: Format, schema: &Schema, batches: &[RecordBatch], out: &mut impl Write) -> Result<(), ArrowError> {
    match format {
        Format::Table => {
            writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(batches)?)?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            writeln!(out, "{rows} row{}", if rows == 1 { "" } else { "s" })?;
        }
        Format::Json => {
            let mut writer = arrow::json::ArrayWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            // With no rows the writer still opens and closes the array: `[]`.
            writer.finish()?;
            writeln!(out)?;
        }
        Format::Csv => {
            if batches.is_empty() {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "{}", names.join(","))?;
            }
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
    }
    Ok(())
}
