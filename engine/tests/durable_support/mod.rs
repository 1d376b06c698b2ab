//! Shared by the crash tests of `forewarn run` and `forewarn serve`: the Parquet history
//! read back as comparable text, the newest checkpoint number, a seeded generator.
#![allow(dead_code)]

use std::path::Path;

/// Every row of every Parquet file of one history kind under `history`, as text without the
/// wall-clock columns (`emitted_at`, `received_at`), sorted: segment boundaries and shard
/// interleaving may differ between runs, the content may not. Fails on a stray visible file.
pub fn history_rows(history: &Path, kind: &str) -> Vec<String> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut rows = Vec::new();
    let Ok(days) = std::fs::read_dir(history.join(kind)) else {
        return rows;
    };
    for day in days {
        let day = day.unwrap().path();
        for f in std::fs::read_dir(&day).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // a temporary file a crash left: readers skip it
            }
            assert!(name.ends_with(".parquet"), "a stray file: {}", f.display());
            let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let schema = batch.schema();
                // timestamps as epoch milliseconds (displaying a zone needs chrono-tz)
                let columns: Vec<arrow_array::ArrayRef> = (0..batch.num_columns())
                    .filter(|&i| {
                        !matches!(
                            schema.field(i).name().as_str(),
                            "emitted_at" | "received_at"
                        )
                    })
                    .map(|i| {
                        let c = batch.column(i);
                        match c.data_type() {
                            arrow_schema::DataType::Timestamp(..) => {
                                arrow_cast::cast(c, &arrow_schema::DataType::Int64).unwrap()
                            }
                            _ => c.clone(),
                        }
                    })
                    .collect();
                let formatters: Vec<_> = columns
                    .iter()
                    .map(|c| {
                        arrow_cast::display::ArrayFormatter::try_new(
                            c.as_ref(),
                            &Default::default(),
                        )
                        .unwrap()
                    })
                    .collect();
                for r in 0..batch.num_rows() {
                    let cells: Vec<String> =
                        formatters.iter().map(|f| f.value(r).to_string()).collect();
                    rows.push(cells.join("|"));
                }
            }
        }
    }
    rows.sort();
    rows
}

/// The newest checkpoint number under `history/_checkpoints` (0: none yet).
pub fn newest_checkpoint(history: &Path) -> u64 {
    std::fs::read_dir(history.join("_checkpoints"))
        .map(|rd| {
            rd.filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                name.strip_prefix("ckpt-")?
                    .strip_suffix(".bin")?
                    .parse()
                    .ok()
            })
            .max()
            .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// A tiny deterministic generator (the seed is printed, so a failure can be replayed).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// `CRASH_SEED` from the environment, else the clock.
pub fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}
