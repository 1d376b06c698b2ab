//! Parquet history (feature `history`): every accepted reading, rejected input, warning
//! transition and data-status change, as Parquet files under a history directory.
//!
//! The journal's open segment is the write-ahead log; when a segment is sealed,
//! [`seal_segment`] turns it into Parquet files, one per kind and UTC day:
//!
//! ```text
//! history_dir/
//!   readings/date=2017-08-27/part-0000000000000003.parquet
//!   rejected/date=2017-08-27/part-0000000000000003.parquet
//!   warnings/date=2017-08-27/part-0000000000000003.parquet
//!   status/date=2017-08-27/part-0000000000000003.parquet
//! ```
//!
//! Files are written atomically (temporary name, `fsync`, rename, `fsync` of the directory)
//! and sealing is idempotent. [`read_history_batches`] and [`replay_history`] read the
//! readings back, batch by batch, to replay history into an engine (backfilling new rules).
//! With feature `sql`, `query` runs DataFusion SQL over the four tables. The layout and
//! schemas are documented in `docs/history.md`.

use std::path::PathBuf;

use crate::durable::JournalError;

#[cfg(feature = "sql")]
pub mod query;
mod replay;
pub mod schema;
mod seal;

pub use replay::{
    history_files, read_history_batches, replay_history, warm_samples, HistoryBatches, OwnedBatch,
    OwnedReading,
};
pub use seal::{day_of, seal_segment, SealStats};

/// The four tables of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Accepted readings.
    Readings,
    /// Rejected inputs (dead letters).
    Rejected,
    /// Warning transitions.
    Warnings,
    /// Data-status changes.
    Status,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 4] = [Kind::Readings, Kind::Rejected, Kind::Warnings, Kind::Status];

    /// The table's name, which is also its directory under the history directory.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Readings => "readings",
            Kind::Rejected => "rejected",
            Kind::Warnings => "warnings",
            Kind::Status => "status",
        }
    }

    /// The table's Arrow schema (without the `date` partition column).
    pub fn schema(self) -> arrow_schema::SchemaRef {
        match self {
            Kind::Readings => schema::readings_schema(),
            Kind::Rejected => schema::rejected_schema(),
            Kind::Warnings => schema::warnings_schema(),
            Kind::Status => schema::status_schema(),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors sealing or reading the history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The journal segment cannot be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// An I/O error on a history file or directory.
    #[error("history {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A Parquet file cannot be written or read.
    #[error("history file {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The error.
        source: parquet::errors::ParquetError,
    },
    /// Arrow arrays cannot be built or read.
    #[error("history file {path}: {source}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The error.
        source: arrow_schema::ArrowError,
    },
    /// A file does not have the columns of its table.
    #[error("history file {path}: {detail}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is missing or of the wrong type.
        detail: String,
    },
}

impl HistoryError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HistoryError {
        let path = path.into();
        move |source| HistoryError::Io { path, source }
    }

    pub(crate) fn parquet(
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(parquet::errors::ParquetError) -> HistoryError {
        let path = path.into();
        move |source| HistoryError::Parquet { path, source }
    }

    pub(crate) fn arrow(
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(arrow_schema::ArrowError) -> HistoryError {
        let path = path.into();
        move |source| HistoryError::Arrow { path, source }
    }
}
