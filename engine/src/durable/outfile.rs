//! An output file (JSON Lines) that knows its length, so a checkpoint can record it and
//! recovery can cut the file back to it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

/// A line-oriented output: a file (durable, cuttable) or stdout.
pub struct OutFile {
    w: BufWriter<Box<dyn Write + Send>>,
    file: Option<File>,
    len: u64,
}

impl std::fmt::Debug for OutFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutFile").field("len", &self.len).finish()
    }
}

/// How to open an output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Start empty.
    Truncate,
    /// Keep what is there and append.
    Append,
    /// Keep the first `n` bytes (a checkpoint's length) and append after them.
    CutTo(u64),
}

impl OutFile {
    /// Standard output (not durable, never cut).
    pub fn stdout() -> Self {
        OutFile {
            w: BufWriter::new(Box::new(io::stdout())),
            file: None,
            len: 0,
        }
    }

    /// Open `path` (its directory is created).
    pub fn open(path: &Path, how: Open) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(how == Open::Truncate)
            .open(path)?;
        let len = match how {
            Open::Truncate => 0,
            Open::Append => f.metadata()?.len(),
            Open::CutTo(n) => {
                let n = n.min(f.metadata()?.len());
                f.set_len(n)?;
                n
            }
        };
        f.seek(SeekFrom::Start(len))?;
        let handle = f.try_clone()?;
        Ok(OutFile {
            w: BufWriter::with_capacity(1 << 16, Box::new(f)),
            file: Some(handle),
            len,
        })
    }

    /// Write one line (a newline is added).
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        self.len += text.len() as u64 + 1;
        self.w.write_all(text.as_bytes())?;
        self.w.write_all(b"\n")
    }

    /// Hand buffered lines to the operating system.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// Flush and `fsync`; the length written.
    pub fn commit(&mut self) -> io::Result<u64> {
        self.w.flush()?;
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        Ok(self.len)
    }

    /// Bytes in the file (buffered ones included).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
