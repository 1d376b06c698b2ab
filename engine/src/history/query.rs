//! `forewarn query` (feature `sql`): DataFusion SQL over the Parquet history.
//!
//! The four tables `readings`, `rejected`, `warnings` and `status` are listing tables over
//! `history_dir/<kind>/`, hive-partitioned by `date` (the UTC day, a string such as
//! `'2017-08-27'`: a filter on it skips whole directories). A table with no files yet is
//! an empty table with its schema. Only queries run: DDL, DML (`INSERT`, `COPY … TO`) and
//! `SET` are refused, so a query never writes into the history.
//!
//! Time zone columns of the result (`ts`, `time`, …, and expressions that keep a zone, such
//! as `date_trunc('hour', ts)`) are shown as RFC 3339 in the chosen display zone
//! (`2017-08-26T22:00:00-05:00`); timestamps without a zone are shown as they are.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::DateTime;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::{SQLOptions, SessionContext};
use serde_json::Value as Json;

use super::{history_files, HistoryError, Kind};
use crate::time::Zone;

/// How `forewarn query` prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// An aligned text table with a header.
    #[default]
    Table,
    /// CSV with a header row (RFC 4180 quoting; nulls are empty fields).
    Csv,
    /// A JSON array of row objects, one row per line (nulls are `null`; maps and structs are
    /// objects, lists are arrays).
    Json,
}

/// Errors running a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The history directory does not exist.
    #[error("no history at {0} (the directory does not exist; pass --history DIR)")]
    NoHistory(std::path::PathBuf),
    /// The history cannot be listed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The SQL is invalid, or refers to unknown tables, columns or functions, or fails while
    /// running.
    #[error("{0}")]
    Sql(Box<DataFusionError>),
    /// The result cannot be formatted.
    #[error("cannot format the result: {0}")]
    Format(#[from] ArrowError),
    /// The async runtime cannot start.
    #[error("cannot start the query runtime: {0}")]
    Runtime(std::io::Error),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        QueryError::Sql(Box::new(e))
    }
}

/// Run `sql` over the history under `history_dir` and format the result; timestamps with a
/// zone are shown in `zone`. Runs DataFusion on a current-thread runtime of its own.
pub fn query(
    history_dir: &Path,
    sql: &str,
    format: OutputFormat,
    zone: &Zone,
) -> Result<String, QueryError> {
    let (schema, batches) = run_sql(history_dir, sql)?;
    let (schema, batches) = localize(&schema, &batches, zone)?;
    match format {
        OutputFormat::Table => {
            let mut s = arrow_cast::pretty::pretty_format_batches_with_schema(schema, &batches)?
                .to_string();
            s.push('\n');
            Ok(s)
        }
        OutputFormat::Csv => to_csv(&schema, &batches),
        OutputFormat::Json => to_json(&batches, zone),
    }
}

/// Run `sql` over the history; the result's schema and batches, timestamps as stored.
pub fn run_sql(history_dir: &Path, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
    if !history_dir.is_dir() {
        return Err(QueryError::NoHistory(history_dir.to_path_buf()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(QueryError::Runtime)?;
    rt.block_on(async {
        let ctx = context(history_dir).await?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx.sql_with_options(sql, options).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok((schema, batches))
    })
}

/// The schema of a table as queried: its columns plus the `date` partition column.
pub fn table_schema(kind: Kind) -> SchemaRef {
    let mut fields: Vec<Field> = kind
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("date", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// A session with the four history tables registered.
async fn context(history_dir: &Path) -> Result<SessionContext, QueryError> {
    let ctx = SessionContext::new();
    let abs = std::fs::canonicalize(history_dir).map_err(HistoryError::io(history_dir))?;
    for kind in Kind::ALL {
        if history_files(&abs, kind)?.is_empty() {
            let schema = table_schema(kind);
            let table = MemTable::try_new(schema, vec![vec![]])?;
            ctx.register_table(kind.name(), Arc::new(table))?;
            continue;
        }
        let mut url = abs.join(kind.name()).to_string_lossy().into_owned();
        url.push('/');
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("date".to_string(), DataType::Utf8)]);
        ctx.register_listing_table(kind.name(), url, options, Some(kind.schema()), None)
            .await?;
    }
    Ok(ctx)
}

/// An instant in `unit` since the epoch, as RFC 3339 in `zone` (fractional seconds only when
/// not zero).
fn format_instant(v: i64, unit: TimeUnit, zone: &Zone) -> Option<String> {
    let (secs, nanos) = match unit {
        TimeUnit::Second => (v, 0),
        TimeUnit::Millisecond => (v.div_euclid(1_000), v.rem_euclid(1_000) * 1_000_000),
        TimeUnit::Microsecond => (v.div_euclid(1_000_000), v.rem_euclid(1_000_000) * 1_000),
        TimeUnit::Nanosecond => (v.div_euclid(1_000_000_000), v.rem_euclid(1_000_000_000)),
    };
    let utc = DateTime::from_timestamp(secs, nanos as u32)?;
    let off = zone.offset_at(utc.timestamp_millis());
    Some(
        utc.with_timezone(&off)
            .format("%Y-%m-%dT%H:%M:%S%.f%:z")
            .to_string(),
    )
}

/// The instants of a timestamp array (any unit) as raw values.
fn timestamp_values(a: &dyn Array, unit: TimeUnit) -> Vec<Option<i64>> {
    fn vals<T: arrow_array::ArrowPrimitiveType<Native = i64>>(a: &dyn Array) -> Vec<Option<i64>> {
        a.as_primitive::<T>().iter().collect()
    }
    match unit {
        TimeUnit::Second => vals::<TimestampSecondType>(a),
        TimeUnit::Millisecond => vals::<TimestampMillisecondType>(a),
        TimeUnit::Microsecond => vals::<TimestampMicrosecondType>(a),
        TimeUnit::Nanosecond => vals::<TimestampNanosecondType>(a),
    }
}

/// Replace every top-level timestamp column with a zone by its RFC 3339 text in `zone`.
fn localize(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    zone: &Zone,
) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let zoned = |f: &Field| matches!(f.data_type(), DataType::Timestamp(_, Some(_)));
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if zoned(f) {
                Field::new(f.name(), DataType::Utf8, f.is_nullable())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let out_schema = Arc::new(Schema::new(fields));
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let columns: Vec<ArrayRef> = b
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| match c.data_type() {
                DataType::Timestamp(unit, Some(_)) if zoned(f) => {
                    let text: StringArray = timestamp_values(c.as_ref(), *unit)
                        .into_iter()
                        .map(|v| v.and_then(|v| format_instant(v, *unit, zone)))
                        .collect();
                    Arc::new(text) as ArrayRef
                }
                _ => c.clone(),
            })
            .collect();
        out.push(RecordBatch::try_new(out_schema.clone(), columns)?);
    }
    Ok((out_schema, out))
}

fn to_csv(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String, QueryError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| ArrowError::CsvError(e.to_string());
    w.write_record(schema.fields().iter().map(|f| f.name().as_str()))
        .map_err(csv_err)?;
    let options = FormatOptions::default();
    let mut record: Vec<String> = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            record.clear();
            for (f, c) in formatters.iter().zip(b.columns()) {
                let mut cell = String::new();
                if c.is_valid(row) {
                    write!(cell, "{}", f.value(row))
                        .map_err(|e| ArrowError::ComputeError(e.to_string()))?;
                }
                record.push(cell);
            }
            w.write_record(&record).map_err(csv_err)?;
        }
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ArrowError::CsvError(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| QueryError::Format(ArrowError::CsvError(e.to_string())))
}

fn to_json(batches: &[RecordBatch], zone: &Zone) -> Result<String, QueryError> {
    let mut s = String::from("[");
    let mut first = true;
    for b in batches {
        let names: Vec<&String> = b.schema_ref().fields().iter().map(|f| f.name()).collect();
        for row in 0..b.num_rows() {
            let mut obj = Vec::with_capacity(names.len());
            for (name, c) in names.iter().zip(b.columns()) {
                obj.push(((*name).clone(), json_value(c.as_ref(), row, zone)?));
            }
            s.push_str(if first { "\n" } else { ",\n" });
            first = false;
            Cell::Object(obj).write(&mut s);
        }
    }
    s.push_str(if first { "]\n" } else { "\n]\n" });
    Ok(s)
}

/// A JSON value whose objects keep their keys in column (or map entry) order.
enum Cell {
    /// A scalar.
    Plain(Json),
    /// An object, keys in order.
    Object(Vec<(String, Cell)>),
    /// An array.
    Array(Vec<Cell>),
}

impl Cell {
    fn write(&self, out: &mut String) {
        match self {
            Cell::Plain(j) => out.push_str(&j.to_string()),
            Cell::Object(fields) => {
                out.push('{');
                for (k, (name, v)) in fields.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    out.push_str(&Json::String(name.clone()).to_string());
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
            Cell::Array(items) => {
                out.push('[');
                for (k, v) in items.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
        }
    }
}

/// One cell as JSON: numbers, strings, booleans and null as such; timestamps with a zone as
/// RFC 3339 in `zone`; maps and structs as objects (keys in order), lists as arrays; anything
/// else as its display text.
fn json_value(a: &dyn Array, i: usize, zone: &Zone) -> Result<Cell, ArrowError> {
    if a.is_null(i) {
        return Ok(Cell::Plain(Json::Null));
    }
    fn num<T>(a: &dyn Array, i: usize) -> Json
    where
        T: arrow_array::ArrowPrimitiveType,
        T::Native: Into<Json>,
    {
        a.as_primitive::<T>().value(i).into()
    }
    fn float(x: f64) -> Json {
        serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
    }
    let plain = match a.data_type() {
        DataType::Boolean => Json::Bool(a.as_boolean().value(i)),
        DataType::Int8 => num::<Int8Type>(a, i),
        DataType::Int16 => num::<Int16Type>(a, i),
        DataType::Int32 => num::<Int32Type>(a, i),
        DataType::Int64 => num::<Int64Type>(a, i),
        DataType::UInt8 => num::<UInt8Type>(a, i),
        DataType::UInt16 => num::<UInt16Type>(a, i),
        DataType::UInt32 => num::<UInt32Type>(a, i),
        DataType::UInt64 => num::<UInt64Type>(a, i),
        DataType::Float16 => float(a.as_primitive::<Float16Type>().value(i).to_f64()),
        DataType::Float32 => float(a.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Json::String(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Json::String(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Json::String(a.as_string_view().value(i).to_string()),
        DataType::Timestamp(unit, Some(_)) => {
            let v = timestamp_values(&a.slice(i, 1), *unit)[0];
            v.and_then(|v| format_instant(v, *unit, zone))
                .map_or(Json::Null, Json::String)
        }
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => {
            let text = display(a, i)?;
            text.parse::<f64>().map_or(Json::String(text), float)
        }
        DataType::Map(..) => {
            let entries = a.as_map().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut obj = Vec::with_capacity(entries.len());
            for k in 0..entries.len() {
                let key = match json_value(keys.as_ref(), k, zone)? {
                    Cell::Plain(Json::String(s)) => s,
                    other => {
                        let mut s = String::new();
                        other.write(&mut s);
                        s
                    }
                };
                obj.push((key, json_value(values.as_ref(), k, zone)?));
            }
            return Ok(Cell::Object(obj));
        }
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut obj = Vec::with_capacity(fields.len());
            for (f, c) in fields.iter().zip(s.columns()) {
                obj.push((f.name().clone(), json_value(c.as_ref(), i, zone)?));
            }
            return Ok(Cell::Object(obj));
        }
        DataType::List(_) => return list(a.as_list::<i32>().value(i).as_ref(), zone),
        DataType::LargeList(_) => return list(a.as_list::<i64>().value(i).as_ref(), zone),
        DataType::FixedSizeList(..) => return list(a.as_fixed_size_list().value(i).as_ref(), zone),
        _ => Json::String(display(a, i)?),
    };
    Ok(Cell::Plain(plain))
}

fn list(values: &dyn Array, zone: &Zone) -> Result<Cell, ArrowError> {
    (0..values.len())
        .map(|k| json_value(values, k, zone))
        .collect::<Result<Vec<_>, _>>()
        .map(Cell::Array)
}

fn display(a: &dyn Array, i: usize) -> Result<String, ArrowError> {
    let options = FormatOptions::default();
    Ok(ArrayFormatter::try_new(a, &options)?.value(i).to_string())
}
