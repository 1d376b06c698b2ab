//! A data directory: Parquet history by kind and day, the journal, and checkpoints.
//!
//! ```text
//! <dir>/readings/date=YYYY-MM-DD/part-<segment>.parquet   (feature `history`)
//! <dir>/rejected/…  <dir>/warnings/…  <dir>/status/…
//! <dir>/_journal/<segment>.wal        the open segment is the write-ahead log
//! <dir>/_checkpoints/ckpt-<n>.bin     the newest two are kept
//! ```
//!
//! A journal segment is sealed into Parquet files named after it, so sealing is idempotent
//! and the files of any segment can be found (and removed, when recovery goes back before
//! it).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use forewarn_rules::ir::Millis;

use super::entry::Entry;
use super::journal::{list_segments, segment_name, JournalError, JournalWriter, HEADER_LEN};

/// The history kinds (Parquet table directories).
pub const KINDS: [&str; 4] = ["readings", "rejected", "warnings", "status"];

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }
    /// The directory itself (Parquet tables live directly under it).
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Journal segments.
    pub fn journal(&self) -> PathBuf {
        self.root.join("_journal")
    }
    /// Checkpoints.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("_checkpoints")
    }

    /// Take the directory for this process: an exclusive lock on `<dir>/_lock` (held until
    /// the returned file is dropped, released by the OS if the process dies). A second
    /// forewarn on the same directory is refused, naming the process that holds it.
    pub fn lock(&self) -> Result<std::fs::File, String> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(&self.root)
            .map_err(|e| format!("cannot create {}: {e}", self.root.display()))?;
        let path = self.root.join("_lock");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        if f.try_lock().is_err() {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            return Err(format!(
                "{} is in use by another forewarn ({}); one process per data directory",
                self.root.display(),
                holder.trim()
            ));
        }
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = write!(f, "pid {}", std::process::id());
        Ok(f)
    }

    /// Remove everything forewarn keeps here (history, journal, checkpoints); other files
    /// are left alone.
    pub fn clear(&self) -> std::io::Result<()> {
        for sub in KINDS
            .iter()
            .map(|k| self.root.join(k))
            .chain([self.journal(), self.checkpoints()])
        {
            match std::fs::remove_dir_all(&sub) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Parquet files of segments `>= from` (written after the point recovery goes back to).
    pub fn parts_from(&self, from: u64) -> std::io::Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        for kind in KINDS {
            let dir = self.root.join(kind);
            let Ok(days) = std::fs::read_dir(&dir) else {
                continue;
            };
            for day in days {
                let day = day?.path();
                let Ok(files) = std::fs::read_dir(&day) else {
                    continue;
                };
                for f in files {
                    let f = f?.path();
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                    let seg = name.as_deref().and_then(part_segment);
                    if seg.is_some_and(|s| s >= from) {
                        found.push(f);
                    }
                }
            }
        }
        Ok(found)
    }
}

/// The segment a Parquet part file (`part-<segment>.parquet`, or a temporary of one) is of.
fn part_segment(name: &str) -> Option<u64> {
    let name = name.trim_start_matches('.');
    let rest = name.strip_prefix("part-")?;
    rest.get(..16)?.parse().ok()
}

/// The journal as the engine side writes it: entries in order, arrival sequence numbers,
/// and the first error (journaling never interrupts evaluation; the error stops the run at
/// the next checkpoint).
#[derive(Debug)]
pub struct Journal {
    /// The open segment.
    pub writer: JournalWriter,
    /// The next reading's arrival sequence number.
    pub next_seq: u64,
    /// Readings in the open segment.
    pub rows_in_segment: u64,
    /// The first error, kept until reported.
    pub error: Option<JournalError>,
    /// Wall clock for `received_at`.
    pub now: fn() -> Millis,
}

/// A journal shared by the engine side (batches) and the output side (what it emits).
pub type SharedJournal = Rc<RefCell<Journal>>;

impl Journal {
    /// Append, keeping the first error.
    pub fn append(&mut self, e: &Entry<'_>) {
        if self.error.is_some() {
            return;
        }
        if let Err(err) = self.writer.append(e) {
            self.error = Some(err);
        }
    }
}

/// Where a journal resumes: the segment and the byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalPosition {
    /// Segment id.
    pub segment: u64,
    /// Byte offset in it.
    pub offset: u64,
}

/// Seal one journal segment into Parquet under the data directory (feature `history`). The
/// segment file stays until [`prune_journal`] removes it: recovery may go back to a
/// checkpoint inside it (when the newest checkpoint is damaged).
pub fn seal(data: &DataDir, segment: u64) -> Result<SealReport, String> {
    let path = data.journal().join(segment_name(segment));
    seal_file(data, &path, segment)
}

/// What sealing did.
#[derive(Debug, Clone, Default)]
pub struct SealReport {
    /// Parquet rows written.
    pub rows: u64,
    /// Parquet bytes written.
    pub bytes: u64,
    /// Files written.
    pub files: usize,
}

#[cfg(feature = "history")]
fn seal_file(data: &DataDir, path: &Path, segment: u64) -> Result<SealReport, String> {
    let stats = crate::history::seal_segment(data.root(), path, segment)
        .map_err(|e| format!("sealing journal segment {}: {e}", path.display()))?;
    Ok(SealReport {
        rows: stats.readings + stats.rejected + stats.warnings + stats.status,
        bytes: stats.bytes,
        files: stats.files.len(),
    })
}

#[cfg(not(feature = "history"))]
fn seal_file(_data: &DataDir, _path: &Path, _segment: u64) -> Result<SealReport, String> {
    Ok(SealReport::default())
}

/// Remove sealed journal segments before `keep_from` (the segment of the oldest checkpoint
/// kept). Without the `history` feature segments are never sealed, and are kept.
pub fn prune_journal(data: &DataDir, keep_from: u64) -> Result<(), String> {
    if cfg!(not(feature = "history")) {
        return Ok(());
    }
    for s in list_segments(&data.journal()).map_err(|e| e.to_string())? {
        if s < keep_from {
            let p = data.journal().join(segment_name(s));
            std::fs::remove_file(&p).map_err(|e| format!("removing {}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// Go back to a checkpoint's journal position: Parquet parts of segments at or after it are
/// removed (they will be written again), segments before it that were not sealed yet are
/// sealed, later segments are removed, and the writer is opened at the position (cutting
/// what was written after it).
pub fn reopen_at(data: &DataDir, pos: JournalPosition) -> Result<JournalWriter, String> {
    for f in data.parts_from(pos.segment).map_err(|e| e.to_string())? {
        std::fs::remove_file(&f).map_err(|e| format!("removing {}: {e}", f.display()))?;
    }
    let segments = list_segments(&data.journal()).map_err(|e| e.to_string())?;
    for &s in &segments {
        if s < pos.segment {
            seal(data, s)?;
        } else if s > pos.segment {
            let p = data.journal().join(segment_name(s));
            std::fs::remove_file(&p).map_err(|e| format!("removing {}: {e}", p.display()))?;
        }
    }
    JournalWriter::open(&data.journal(), pos.segment, pos.offset.max(HEADER_LEN))
        .map_err(|e| e.to_string())
}
