//! Checkpoint files: a versioned, checksummed body written atomically.
//!
//! ```text
//! file   = "FWCKPT\0\0" version:u32le kind:u32le body_len:u64le crc32(body):u32le body
//! ```
//!
//! A checkpoint is written to a temporary name, flushed, `fsync`ed and renamed into place,
//! then the directory is `fsync`ed: a crash leaves either the previous checkpoint or the new
//! one, never a torn file under a checkpoint name. Reading checks the magic, version, kind,
//! length and checksum, so a file damaged afterwards is reported, never trusted.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use super::journal::sync_dir;

/// Checkpoint format version.
pub const CHECKPOINT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"FWCKPT\0\0";
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 4;

/// Errors writing or reading checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// An I/O error.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is damaged or not a checkpoint this forewarn reads.
    #[error("checkpoint {path} is unusable: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// The file name of checkpoint number `n`.
pub fn checkpoint_name(n: u64) -> String {
    format!("ckpt-{n:016}.bin")
}

/// Checkpoint numbers present in `dir`, ascending.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<u64>, CheckpointError> {
    let io_err = |source| CheckpointError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut ns = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ns),
        Err(e) => return Err(io_err(e)),
    };
    for e in rd {
        let name = e.map_err(io_err)?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("ckpt-")
            .and_then(|s| s.strip_suffix(".bin"))
            .and_then(|s| s.parse().ok())
        {
            ns.push(n);
        }
    }
    ns.sort_unstable();
    Ok(ns)
}

/// Write checkpoint `n` of kind `kind` atomically, then delete all but the newest `keep`.
/// Returns the file's size in bytes.
pub fn write_checkpoint<T: Serialize>(
    dir: &Path,
    n: u64,
    kind: u32,
    body: &T,
    keep: usize,
) -> Result<u64, CheckpointError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let body = postcard::to_allocvec(body).map_err(|e| CheckpointError::Corrupt {
        path: dir.join(checkpoint_name(n)),
        detail: format!("cannot encode: {e}"),
    })?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&kind.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    let path = dir.join(checkpoint_name(n));
    let tmp = dir.join(format!(".{}.tmp", checkpoint_name(n)));
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir).map_err(io_err(dir))?;
    // temporary files a crash left behind
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".ckpt-") && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let all = list_checkpoints(dir)?;
    if all.len() > keep {
        for old in &all[..all.len() - keep] {
            let p = dir.join(checkpoint_name(*old));
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    Ok(bytes.len() as u64)
}

/// Read and verify one checkpoint file of kind `kind`.
pub fn read_checkpoint<T: DeserializeOwned>(path: &Path, kind: u32) -> Result<T, CheckpointError> {
    let corrupt = |detail: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    if &bytes[0..8] != MAGIC {
        return Err(corrupt("not a forewarn checkpoint (bad magic)".into()));
    }
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let version = u32_at(8);
    if version != CHECKPOINT_VERSION {
        return Err(corrupt(format!(
            "format version {version}; this forewarn reads {CHECKPOINT_VERSION}"
        )));
    }
    let found_kind = u32_at(12);
    if found_kind != kind {
        return Err(corrupt(format!(
            "a checkpoint of kind {found_kind}, not {kind}"
        )));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[16..24]);
    let len = u64::from_le_bytes(len);
    let body = &bytes[HEADER_LEN..];
    if body.len() as u64 != len {
        return Err(corrupt(format!(
            "truncated: body of {} bytes where the header says {len}",
            body.len()
        )));
    }
    let crc = u32_at(24);
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch: the file was damaged".into()));
    }
    postcard::from_bytes(body).map_err(|e| corrupt(format!("body does not decode: {e}")))
}

/// The newest checkpoint in `dir`: `Ok(None)` when there is none; the newest file's error
/// when it is unusable (older ones are not silently used instead: the caller decides).
pub fn read_latest<T: DeserializeOwned>(
    dir: &Path,
    kind: u32,
) -> Result<Option<(u64, T)>, CheckpointError> {
    let Some(&n) = list_checkpoints(dir)?.last() else {
        return Ok(None);
    };
    read_checkpoint(&dir.join(checkpoint_name(n)), kind).map(|t| Some((n, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Body {
        a: u64,
        b: String,
        c: Vec<u8>,
    }

    fn body(i: u64) -> Body {
        Body {
            a: i,
            b: format!("checkpoint {i}"),
            c: vec![i as u8; 100],
        }
    }

    #[test]
    fn written_atomically_pruned_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        for i in 1..=4 {
            write_checkpoint(dir.path(), i, 7, &body(i), 2).unwrap();
        }
        assert_eq!(list_checkpoints(dir.path()).unwrap(), vec![3, 4]);
        let (n, b): (u64, Body) = read_latest(dir.path(), 7).unwrap().unwrap();
        assert_eq!((n, b), (4, body(4)));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn damage_is_detected_and_named() {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(dir.path(), 1, 7, &body(1), 2).unwrap();
        let path = dir.path().join(checkpoint_name(1));
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 10].to_vec(), "truncated"),
            (good[..10].to_vec(), "truncated"),
            (
                {
                    let mut b = good.clone();
                    let i = b.len() - 5;
                    b[i] ^= 1;
                    b
                },
                "checksum",
            ),
            (
                {
                    let mut b = good.clone();
                    b[0] = b'X';
                    b
                },
                "magic",
            ),
            (Vec::new(), "truncated"),
        ];
        for (bytes, needle) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let err = read_latest::<Body>(dir.path(), 7).unwrap_err();
            assert!(
                matches!(&err, CheckpointError::Corrupt { detail, .. } if detail.contains(needle)),
                "{err}"
            );
        }
        std::fs::write(&path, &good).unwrap();
        assert!(matches!(
            read_latest::<Body>(dir.path(), 8),
            Err(CheckpointError::Corrupt { .. })
        ));
    }
}
