//! The journal: append-only segment files of framed, checksummed [`Entry`]s.
//!
//! ```text
//! segment file  = header record*
//! header        = "FWJRNL\0\0" version:u32le reserved:u32le      (16 bytes)
//! record        = len:u32le crc32(payload):u32le payload          (payload = postcard(Entry))
//! ```
//!
//! A crash can leave a torn record at the end of the newest segment; readers stop at the
//! first record whose length runs past the end or whose checksum does not match, and report
//! where the valid prefix ends so recovery can cut the file there.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::entry::Entry;

/// Journal format version (the header's `version`).
pub const JOURNAL_VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"FWJRNL\0\0";
/// Length of a segment's header.
pub const HEADER_LEN: u64 = 16;
/// Largest record accepted when reading (a corrupt length beyond it ends the valid prefix).
pub const MAX_RECORD: u32 = 64 << 20;

/// Errors reading or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An I/O error on a segment file.
    #[error("journal segment {path}: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not a journal segment of a version this forewarn reads.
    #[error("journal segment {path}: {detail}")]
    Format {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An entry could not be encoded.
    #[error("journal entry cannot be encoded: {0}")]
    Encode(#[from] postcard::Error),
}

/// The file name of segment `id`.
pub fn segment_name(id: u64) -> String {
    format!("{id:016}.wal")
}

/// Segment ids present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let name = e?.file_name();
                let name = name.to_string_lossy();
                if let Some(id) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
                    ids.push(id);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Appends entries to one segment file.
#[derive(Debug)]
pub struct JournalWriter {
    dir: PathBuf,
    id: u64,
    file: BufWriter<File>,
    /// Bytes in the segment, buffered ones included.
    len: u64,
    /// Entries appended to this segment.
    entries: u64,
    buf: Vec<u8>,
}

impl JournalWriter {
    /// Open segment `id` in `dir` for appending at `offset` (the file is cut there: anything
    /// after it was written after the last checkpoint). A missing file is created.
    pub fn open(dir: &Path, id: u64, offset: u64) -> Result<Self, JournalError> {
        let path = dir.join(segment_name(id));
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let existing = file.metadata().map_err(io_err)?.len();
        let len = if existing < HEADER_LEN || offset < HEADER_LEN {
            file.set_len(0).map_err(io_err)?;
            file.seek(SeekFrom::Start(0)).map_err(io_err)?;
            let mut h = Vec::with_capacity(HEADER_LEN as usize);
            h.extend_from_slice(MAGIC);
            h.extend_from_slice(&JOURNAL_VERSION.to_le_bytes());
            h.extend_from_slice(&0u32.to_le_bytes());
            file.write_all(&h).map_err(io_err)?;
            HEADER_LEN
        } else {
            let cut = offset.min(existing);
            file.set_len(cut).map_err(io_err)?;
            file.seek(SeekFrom::Start(cut)).map_err(io_err)?;
            cut
        };
        Ok(JournalWriter {
            dir: dir.to_path_buf(),
            id,
            file: BufWriter::with_capacity(1 << 20, file),
            len,
            entries: 0,
            buf: Vec::with_capacity(4096),
        })
    }

    /// The segment id.
    pub fn segment(&self) -> u64 {
        self.id
    }

    /// Bytes in the segment (its length once flushed).
    pub fn offset(&self) -> u64 {
        self.len
    }

    /// Entries appended since the writer was opened.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The segment file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(segment_name(self.id))
    }

    /// Append one entry (buffered).
    pub fn append(&mut self, e: &Entry<'_>) -> Result<(), JournalError> {
        self.append_record(e)
    }

    /// Append one record of any serializable type (buffered); journals other than the
    /// history journal (the daemon's input log) use their own record types.
    pub fn append_record<T: serde::Serialize + ?Sized>(
        &mut self,
        e: &T,
    ) -> Result<(), JournalError> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 8]);
        let buf = std::mem::take(&mut self.buf);
        let mut buf = postcard::to_extend(e, buf)?;
        let payload_len = (buf.len() - 8) as u32;
        let crc = crc32fast::hash(&buf[8..]);
        buf[0..4].copy_from_slice(&payload_len.to_le_bytes());
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let r = self.file.write_all(&buf);
        self.len += buf.len() as u64;
        self.entries += 1;
        self.buf = buf;
        r.map_err(|source| JournalError::Io {
            path: self.path(),
            source,
        })
    }

    /// Write buffered entries to the file and make them durable (`fsync`).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        let path = self.path();
        self.file
            .flush()
            .and_then(|_| self.file.get_ref().sync_data())
            .map_err(|source| JournalError::Io { path, source })
    }

    /// Seal this segment (synced) and start segment `id + 1`; returns the sealed id.
    pub fn roll(&mut self) -> Result<u64, JournalError> {
        self.sync()?;
        let sealed = self.id;
        let next = JournalWriter::open(&self.dir, sealed + 1, 0)?;
        *self = next;
        sync_dir(&self.dir).map_err(|source| JournalError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Ok(sealed)
    }
}

/// `fsync` a directory so that renames and new files in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Where a segment's valid entries end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentEnd {
    /// Length of the valid prefix (header and whole, checksummed records).
    pub valid_len: u64,
    /// Bytes after it (a torn or corrupt tail); 0 for a clean segment.
    pub trailing: u64,
    /// Entries in the valid prefix.
    pub entries: u64,
}

/// Read a whole segment file into memory.
pub fn read_segment_bytes(path: &Path) -> Result<Vec<u8>, JournalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}

/// Visit the valid entries of a segment's bytes, from byte `from` (at least the header's
/// end), calling `f(offset_after_entry, entry)`. Stops at the first torn or corrupt record.
pub fn scan_segment<'a>(
    path: &Path,
    bytes: &'a [u8],
    from: u64,
    f: impl FnMut(u64, Entry<'a>) -> Result<(), JournalError>,
) -> Result<SegmentEnd, JournalError> {
    scan_records(path, bytes, from, f)
}

/// [`scan_segment`] for records of any type.
pub fn scan_records<'a, T: serde::Deserialize<'a>>(
    path: &Path,
    bytes: &'a [u8],
    from: u64,
    mut f: impl FnMut(u64, T) -> Result<(), JournalError>,
) -> Result<SegmentEnd, JournalError> {
    if bytes.len() < HEADER_LEN as usize {
        // A segment created but never written past its header (or empty): no entries.
        return Ok(SegmentEnd {
            valid_len: 0,
            trailing: bytes.len() as u64,
            entries: 0,
        });
    }
    if &bytes[0..8] != MAGIC {
        return Err(JournalError::Format {
            path: path.to_path_buf(),
            detail: "not a forewarn journal segment (bad magic)".into(),
        });
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != JOURNAL_VERSION {
        return Err(JournalError::Format {
            path: path.to_path_buf(),
            detail: format!("journal version {version}; this forewarn reads {JOURNAL_VERSION}"),
        });
    }
    let mut pos = from.max(HEADER_LEN) as usize;
    let mut entries = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]);
        let crc = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]);
        let start = pos + 8;
        let end = start + len as usize;
        if len > MAX_RECORD || end > bytes.len() || crc32fast::hash(&bytes[start..end]) != crc {
            break;
        }
        let Ok(entry) = postcard::from_bytes::<T>(&bytes[start..end]) else {
            break;
        };
        f(end as u64, entry)?;
        entries += 1;
        pos = end;
    }
    Ok(SegmentEnd {
        valid_len: pos as u64,
        trailing: (bytes.len() - pos) as u64,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::entry::{Batch, Outcome, ReadingRow};
    use std::borrow::Cow;

    fn batch(seq: u64) -> Entry<'static> {
        Entry::Batch(Batch {
            seq,
            received_at: 1_000 + seq as i64,
            source: Cow::Borrowed("s"),
            line: seq,
            readings: vec![ReadingRow {
                entity: Cow::Borrowed("G1"),
                feed: Cow::Borrowed("rain"),
                ts: 300_000 * seq as i64,
                value: Some(seq as f64 / 4.0),
                text: None,
                outcome: Outcome::OnTime,
            }],
        })
    }

    fn read_all(path: &Path) -> (Vec<Entry<'static>>, SegmentEnd) {
        let bytes = read_segment_bytes(path).unwrap();
        let mut out = Vec::new();
        let end = scan_segment(path, &bytes, 0, |_, e| {
            out.push(match e {
                Entry::Batch(b) => Entry::Batch(Batch {
                    source: Cow::Owned(b.source.into_owned()),
                    readings: b
                        .readings
                        .into_iter()
                        .map(|r| ReadingRow {
                            entity: Cow::Owned(r.entity.into_owned()),
                            feed: Cow::Owned(r.feed.into_owned()),
                            text: None,
                            ..r
                        })
                        .collect(),
                    ..b
                }),
                other => panic!("unexpected {other:?}"),
            });
            Ok(())
        })
        .unwrap();
        (out, end)
    }

    #[test]
    fn entries_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = JournalWriter::open(dir.path(), 0, 0).unwrap();
        for s in 0..5 {
            w.append(&batch(s)).unwrap();
        }
        w.sync().unwrap();
        let full = w.offset();
        let path = w.path();
        drop(w);
        let (got, end) = read_all(&path);
        assert_eq!(got, (0..5).map(batch).collect::<Vec<_>>());
        assert_eq!(end.valid_len, full);
        assert_eq!(end.trailing, 0);

        // Tear the last record: 4 entries remain and the tail is reported.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        let (got, end) = read_all(&path);
        assert_eq!(got.len(), 4);
        assert!(end.trailing > 0);

        // Reopening at the valid length cuts the tail; appends continue after it.
        let mut w = JournalWriter::open(dir.path(), 0, end.valid_len).unwrap();
        w.append(&batch(9)).unwrap();
        w.sync().unwrap();
        let (got, end) = read_all(&path);
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], batch(9));
        assert_eq!(end.trailing, 0);
    }

    #[test]
    fn a_flipped_byte_ends_the_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = JournalWriter::open(dir.path(), 3, 0).unwrap();
        let mut ends = Vec::new();
        for s in 0..3 {
            w.append(&batch(s)).unwrap();
            ends.push(w.offset());
        }
        w.sync().unwrap();
        let path = w.path();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        let i = ends[0] as usize + 12; // inside the second record's payload
        bytes[i] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (got, end) = read_all(&path);
        assert_eq!(got.len(), 1);
        assert_eq!(end.valid_len, ends[0]);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![3]);
    }
}
