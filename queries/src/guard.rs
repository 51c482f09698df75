//! What a session withholds from SQL it cannot trust: queries longer than
//! [`MAX_SQL_BYTES`] are refused before they are parsed, and functions that would
//! allocate without bound outside DataFusion's memory pool are removed
//! (`range`, `generate_series` and `array_repeat` as scalar functions, which
//! build whole lists in one value; the table functions of the same names
//! stream and stay) or capped (`repeat`, `lpad`, `rpad`, `array_resize`:
//! their length argument may not pass [`MAX_LENGTH`]).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// The longest query a session takes: deeper expression trees than 64 KiB
/// of SQL can describe are never parsed (their planning and dropping
/// recurse through the tree).
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// Scalar functions removed from every session.
pub const REMOVED: [&str; 3] = ["range", "generate_series", "array_repeat"];

/// The largest length `repeat`, `lpad`, `rpad` and `array_resize` may make.
pub const MAX_LENGTH: i64 = 10_000;

/// Capped functions and the index of their length argument.
const CAPPED: [(&str, usize); 4] = [("repeat", 1), ("lpad", 1), ("rpad", 1), ("array_resize", 1)];

/// Removes and caps the functions of `context` (see the module doc).
pub fn restrict(context: &SessionContext) {
    for name in REMOVED {
        let aliases =
            context.state().scalar_functions().get(name).map(|udf| udf.aliases().to_vec()).unwrap_or_default();
        for alias in aliases {
            context.deregister_udf(&alias);
        }
        context.deregister_udf(name);
    }
    for (name, arg) in CAPPED {
        let Some(inner) = context.state().scalar_functions().get(name).cloned() else { continue };
        let capped = Capped { inner: Arc::clone(inner.inner()), arg, max: MAX_LENGTH };
        context.register_udf(ScalarUDF::new_from_impl(capped));
    }
}

/// A function whose length argument may not pass `max`.
#[derive(Debug)]
struct Capped {
    inner: Arc<dyn ScalarUDFImpl>,
    arg: usize,
    max: i64,
}

impl PartialEq for Capped {
    fn eq(&self, other: &Self) -> bool {
        self.inner.name() == other.inner.name() && self.arg == other.arg && self.max == other.max
    }
}

impl Eq for Capped {}

impl Hash for Capped {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.name().hash(state);
        self.arg.hash(state);
        self.max.hash(state);
    }
}

impl Capped {
    /// The largest length asked for in `value`, if any.
    fn largest(value: &ColumnarValue) -> Result<Option<i64>> {
        Ok(match value {
            ColumnarValue::Scalar(scalar) => match scalar.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(n) => n,
                _ => None,
            },
            ColumnarValue::Array(array) => {
                let array = arrow::compute::cast(array, &DataType::Int64)?;
                let array = array.as_any().downcast_ref::<Int64Array>().expect("cast to Int64");
                arrow::compute::max(array)
            }
        })
    }
}

impl ScalarUDFImpl for Capped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(length) = args.args.get(self.arg)
            && let Some(n) = Capped::largest(length)?
            && n > self.max
        {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}: a length of {n} is over the server's limit of {}",
                self.inner.name(),
                self.max
            )));
        }
        self.inner.invoke_with_args(args)
    }
}
