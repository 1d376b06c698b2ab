//! Durability: the journal (write-ahead log of everything in and out of the engine),
//! engine checkpoints, and recovery after a crash. See `docs/durability.md`.

pub mod checkpoint;
pub mod entry;
pub mod journal;
pub mod outfile;
pub mod store;

pub use entry::{Batch, Entry, Outcome, ReadingRow, RejectedRow, StatusRow, WarningRow};
pub use journal::{JournalError, JournalWriter, SegmentEnd};
