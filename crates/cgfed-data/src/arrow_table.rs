//! [`ArrowTable`]: a Hugging Face `datasets` split saved as an Arrow IPC stream file
//! (`data-00000-of-00001.arrow`), read with `arrow-ipc` into typed columns.
//!
//! Only the column shapes the built-in datasets use are supported: strings, booleans,
//! integers (any width; `ClassLabel` columns are integers), lists of strings, and lists of
//! structs with string fields (`choices: [{text, label}]`). Every error names the file and
//! the column.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type, UInt32Type, UInt8Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_ipc::reader::StreamReader;
use arrow_schema::DataType;
use cgfed_core::{Error, Result};

/// All record batches of one Arrow IPC stream file.
#[derive(Debug, Clone)]
pub struct ArrowTable {
    path: PathBuf,
    batches: Vec<RecordBatch>,
}

impl ArrowTable {
    /// Reads every batch of the stream file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened; [`Error::InFile`] when it is not an
    /// Arrow IPC stream.
    pub fn read(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let bad = |e: arrow_schema::ArrowError| {
            Error::InvalidInput(format!("not a readable Arrow IPC stream: {e}")).in_file(path)
        };
        let reader = StreamReader::try_new(BufReader::new(file), None).map_err(bad)?;
        let batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(bad)?;
        Ok(Self {
            path: path.to_path_buf(),
            batches,
        })
    }

    /// The file this table was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Column names (of the first batch's schema).
    pub fn columns(&self) -> Vec<String> {
        self.batches
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn err(&self, column: &str, what: impl std::fmt::Display) -> Error {
        Error::InvalidInput(format!("column `{column}`: {what}")).in_file(&self.path)
    }

    /// The column's array in every batch.
    fn arrays(&self, column: &str) -> Result<Vec<&ArrayRef>> {
        self.batches
            .iter()
            .map(|b| {
                b.column_by_name(column).ok_or_else(|| {
                    self.err(
                        column,
                        format!("missing (columns: {})", self.columns().join(", ")),
                    )
                })
            })
            .collect()
    }

    /// A string column (nulls become empty strings).
    ///
    /// # Errors
    /// A missing column or one of another type.
    pub fn strings(&self, column: &str) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(self.len());
        for a in self.arrays(column)? {
            out.extend(strings_of(a).ok_or_else(|| {
                self.err(column, format!("expected strings, found {}", a.data_type()))
            })?);
        }
        Ok(out)
    }

    /// A boolean column (nulls become `false`).
    ///
    /// # Errors
    /// A missing column or one of another type.
    pub fn bools(&self, column: &str) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(self.len());
        for a in self.arrays(column)? {
            let Some(b) = a.as_boolean_opt() else {
                return Err(self.err(
                    column,
                    format!("expected booleans, found {}", a.data_type()),
                ));
            };
            out.extend((0..b.len()).map(|i| b.is_valid(i) && b.value(i)));
        }
        Ok(out)
    }

    /// An integer column of any width (`ClassLabel` columns are integers). Nulls are an
    /// error.
    ///
    /// # Errors
    /// A missing column, one of another type, or a null.
    pub fn ints(&self, column: &str) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(self.len());
        for a in self.arrays(column)? {
            if a.null_count() > 0 {
                return Err(self.err(column, "has null values"));
            }
            let vals: Vec<i64> = match a.data_type() {
                DataType::Int64 => a.as_primitive::<Int64Type>().values().to_vec(),
                DataType::Int32 => ints_from(a.as_primitive::<Int32Type>().values()),
                DataType::Int16 => ints_from(a.as_primitive::<Int16Type>().values()),
                DataType::Int8 => ints_from(a.as_primitive::<Int8Type>().values()),
                DataType::UInt32 => ints_from(a.as_primitive::<UInt32Type>().values()),
                DataType::UInt8 => ints_from(a.as_primitive::<UInt8Type>().values()),
                other => return Err(self.err(column, format!("expected integers, found {other}"))),
            };
            out.extend(vals);
        }
        Ok(out)
    }

    /// A list-of-strings column (`Sequence(Value("string"))`).
    ///
    /// # Errors
    /// A missing column or one of another type.
    pub fn string_lists(&self, column: &str) -> Result<Vec<Vec<String>>> {
        self.lists(column, strings_of)
    }

    /// One string field of a list-of-structs column (`choices: Sequence({text, label})` →
    /// the `text` of every choice).
    ///
    /// # Errors
    /// A missing column or field, or other types.
    pub fn struct_list_field(&self, column: &str, field: &str) -> Result<Vec<Vec<String>>> {
        // HF stores `Sequence({a, b})` either as a struct of lists or a list of structs.
        let arrays = self.arrays(column)?;
        if arrays
            .first()
            .is_some_and(|a| matches!(a.data_type(), DataType::Struct(_)))
        {
            let mut out = Vec::with_capacity(self.len());
            for a in arrays {
                let s = a.as_struct();
                let Some(inner) = s.column_by_name(field) else {
                    return Err(self.err(column, format!("has no field `{field}`")));
                };
                let Some(list) = inner.as_list_opt::<i32>() else {
                    return Err(self.err(column, format!("field `{field}` is not a list")));
                };
                for i in 0..list.len() {
                    out.push(strings_of(&list.value(i)).ok_or_else(|| {
                        self.err(column, format!("field `{field}` holds no strings"))
                    })?);
                }
            }
            return Ok(out);
        }
        self.lists(column, |item| {
            let s = item.as_struct_opt()?;
            strings_of(s.column_by_name(field)?)
        })
    }

    fn lists(
        &self,
        column: &str,
        item: impl Fn(&ArrayRef) -> Option<Vec<String>>,
    ) -> Result<Vec<Vec<String>>> {
        let mut out = Vec::with_capacity(self.len());
        for a in self.arrays(column)? {
            let wrong = || self.err(column, format!("unexpected type {}", a.data_type()));
            if let Some(list) = a.as_list_opt::<i32>() {
                for i in 0..list.len() {
                    out.push(item(&list.value(i)).ok_or_else(wrong)?);
                }
            } else if let Some(list) = a.as_list_opt::<i64>() {
                for i in 0..list.len() {
                    out.push(item(&list.value(i)).ok_or_else(wrong)?);
                }
            } else {
                return Err(wrong());
            }
        }
        Ok(out)
    }
}

fn ints_from<T: Copy + Into<i64>>(v: &[T]) -> Vec<i64> {
    v.iter().map(|&x| x.into()).collect()
}

/// The values of a (large) string array, nulls as empty strings; `None` for other types.
fn strings_of(a: &ArrayRef) -> Option<Vec<String>> {
    let get = |valid: &dyn Fn(usize) -> bool, value: &dyn Fn(usize) -> String| {
        (0..a.len())
            .map(|i| if valid(i) { value(i) } else { String::new() })
            .collect()
    };
    if let Some(s) = a.as_string_opt::<i32>() {
        return Some(get(&|i| s.is_valid(i), &|i| s.value(i).to_string()));
    }
    if let Some(s) = a.as_string_opt::<i64>() {
        return Some(get(&|i| s.is_valid(i), &|i| s.value(i).to_string()));
    }
    None
}
