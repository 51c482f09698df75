//! Typed access to the columns of a query result, by name, so that what
//! the server computes from SQL (the queue, the metrics, the demo's
//! summary) fails loudly on a result of the wrong shape instead of reading
//! an empty string or a zero.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use schemas::Timestamp;

use crate::error::QueryError;

/// The columns of one result batch.
pub struct Columns<'a> {
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    /// Reads `batch`.
    pub fn new(batch: &'a RecordBatch) -> Self {
        Columns { batch }
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }

    fn cast(&self, name: &str, to: &DataType) -> Result<ArrayRef, QueryError> {
        let column = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| QueryError::Internal(format!("the result has no column {name}")))?;
        if column.data_type() == to {
            return Ok(Arc::clone(column));
        }
        arrow::compute::cast(column, to)
            .map_err(|e| QueryError::Internal(format!("column {name} is {}, not {to}: {e}", column.data_type())))
    }

    /// A text column (any string type).
    pub fn text(&self, name: &str) -> Result<StringArray, QueryError> {
        let array = self.cast(name, &DataType::Utf8)?;
        Ok(array.as_any().downcast_ref::<StringArray>().expect("cast to Utf8").clone())
    }

    /// An integer column (any integer type).
    pub fn int(&self, name: &str) -> Result<Int64Array, QueryError> {
        let array = self.cast(name, &DataType::Int64)?;
        Ok(array.as_any().downcast_ref::<Int64Array>().expect("cast to Int64").clone())
    }

    /// A number column (integers widened).
    pub fn float(&self, name: &str) -> Result<Float64Array, QueryError> {
        let array = self.cast(name, &DataType::Float64)?;
        Ok(array.as_any().downcast_ref::<Float64Array>().expect("cast to Float64").clone())
    }

    /// A boolean column.
    pub fn flag(&self, name: &str) -> Result<BooleanArray, QueryError> {
        let array = self.cast(name, &DataType::Boolean)?;
        Ok(array.as_any().downcast_ref::<BooleanArray>().expect("cast to Boolean").clone())
    }

    /// A timestamp column, in microseconds.
    pub fn time(&self, name: &str) -> Result<TimestampMicrosecondArray, QueryError> {
        let array = self.cast(name, &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))?;
        Ok(array.as_any().downcast_ref::<TimestampMicrosecondArray>().expect("cast to Timestamp").clone())
    }
}

/// The text at `row`, `None` if null.
pub fn text_at(array: &StringArray, row: usize) -> Option<&str> {
    (!array.is_null(row)).then(|| array.value(row))
}

/// The number at `row`, `None` if null.
pub fn float_at(array: &Float64Array, row: usize) -> Option<f64> {
    (!array.is_null(row)).then(|| array.value(row))
}

/// The integer at `row`, `None` if null.
pub fn int_at(array: &Int64Array, row: usize) -> Option<i64> {
    (!array.is_null(row)).then(|| array.value(row))
}

/// The timestamp at `row`, `None` if null.
pub fn time_at(array: &TimestampMicrosecondArray, row: usize) -> Option<Timestamp> {
    (!array.is_null(row)).then(|| Timestamp(array.value(row)))
}

/// The flag at `row`, `None` if null.
pub fn flag_at(array: &BooleanArray, row: usize) -> Option<bool> {
    (!array.is_null(row)).then(|| array.value(row))
}
