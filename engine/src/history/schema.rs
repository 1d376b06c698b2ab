//! The Arrow schemas of the four history tables (`docs/history.md` documents them).
//!
//! Every timestamp is `Timestamp(Millisecond, "UTC")` (Parquet `TIMESTAMP(MILLIS, UTC)`).
//! The `date` partition column (UTC day, `YYYY-MM-DD`) is not stored in the files: it is the
//! `date=…` directory the file lies in.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Version of the history layout, stored in every file's key-value metadata
/// (`forewarn.history_version`).
pub const HISTORY_VERSION: u32 = 1;

/// The timestamp type of every time column: milliseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC")))
}

/// The type of the `values` and `thresholds` columns of `warnings`: a map from name to an
/// optional number (`values['sum_3h']` in DataFusion and DuckDB; a list of `(key, value)`
/// pairs in pyarrow).
pub fn number_map_type() -> DataType {
    DataType::Map(Arc::new(map_entries_field()), false)
}

/// The entries field of [`number_map_type`] (`entries: struct<key: utf8, value: f64?>`).
pub fn map_entries_field() -> Field {
    Field::new("entries", DataType::Struct(map_entry_fields()), false)
}

/// The key and value fields of a map entry.
pub fn map_entry_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ])
}

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, timestamp_type(), nullable)
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn u64f(name: &str) -> Field {
    Field::new(name, DataType::UInt64, false)
}

/// `readings`: every accepted reading (outcome other than `rejected`), in arrival order.
pub fn readings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        u64f("seq"),
        u64f("batch"),
        utf8("entity", false),
        utf8("feed", false),
        ts("ts", false),
        Field::new("value", DataType::Float64, true),
        utf8("text", true),
        utf8("outcome", false),
        Field::new("late", DataType::Boolean, false),
        ts("received_at", false),
        utf8("source", false),
        u64f("line"),
    ]))
}

/// `rejected`: every dead letter (undecodable input and readings the engine refused).
pub fn rejected_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        ts("received_at", false),
        utf8("source", false),
        u64f("line"),
        utf8("reason", false),
        utf8("detail", false),
        utf8("entity", true),
        utf8("feed", true),
        ts("ts", true),
        utf8("value", true),
        Field::new("raw", DataType::Binary, false),
        utf8("raw_text", true),
    ]))
}

/// `warnings`: every warning transition.
pub fn warnings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("rule", false),
        utf8("entity", false),
        u64f("seq"),
        utf8("kind", false),
        utf8("from", true),
        utf8("to", true),
        ts("time", false),
        ts("emitted_at", false),
        Field::new("late", DataType::Boolean, false),
        Field::new("delayed", DataType::Boolean, false),
        Field::new("values", number_map_type(), false),
        Field::new("thresholds", number_map_type(), false),
        utf8("message", false),
        utf8("ruleset", false),
        utf8("branch", false),
        ts("expected_crossing", true),
    ]))
}

/// `status`: every data-status change.
pub fn status_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("entity", false),
        utf8("feed", false),
        utf8("from", false),
        utf8("status", false),
        ts("time", false),
        ts("last_sample", true),
    ]))
}
