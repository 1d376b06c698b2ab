//! The `storm` benchmark workload (`/work/shared/peers/WORKLOAD.md`, version 1), generated in
//! Rust byte for byte like the Python reference `gen_storm.py`: same numpy random streams
//! ([`crate::numpy_random`]), same floating-point expressions in the same order, same CSV bytes,
//! Parquet files with the same content.
//!
//! * [`generate_data`] draws the dataset into memory ([`StormData`]), for benchmark code that
//!   wants the events without files.
//! * [`generate`] writes the files of `gen_storm.py` into a directory (`events.csv`,
//!   `events.parquet`, `events_sorted.csv`, `events_sorted.parquet`, `thresholds.csv`,
//!   `meta.json`) plus `expected.json`, the reference answer computed by [`oracle`].
//! * [`oracle`] is a deliberately naive implementation of the workload's rules (per-station
//!   event-time windows by plain scanning, integer arithmetic in 0.1 mm), and
//!   [`read_thresholds`] reads a `thresholds.csv`.

use std::f64::consts::PI;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, Int8Array, RecordBatch,
    StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::numpy_random::{Generator, SeedSequence};

/// Timestamp of the first reading: 2024-06-01T00:00:00Z in epoch milliseconds.
pub const T0_MS: i64 = 1_717_200_000_000;
/// Spacing of the readings: 5 minutes in milliseconds.
pub const STEP_MS: i64 = 300_000;
/// Rows per Parquet row group (as `gen_storm.py`: 2^20).
pub const ROW_GROUP_ROWS: usize = 1 << 20;
/// Largest station count (ids are `st00000` … `st99999`).
pub const MAX_STATIONS: u32 = 99_999;

const DOMAIN_KM: f64 = 300.0;
const CELL_RATE_PER_H: f64 = 4.0;
const MCS_RATE_PER_H: f64 = 1.0 / 18.0;
const PRE_ROLL_H: f64 = 6.0;
const MAX_MM_PER_5MIN: f64 = 60.0;
const P_MISSING: f64 = 0.001;
const P_LATE: f64 = 0.0005;
const MAX_LATE_STEPS: i64 = 3;

/// Index of each named stream in `SeedSequence(seed).spawn(7)` (the order of `streams()` in
/// `gen_storm.py`).
mod stream {
    pub const STATIONS: usize = 0;
    pub const THRESHOLDS: usize = 1;
    pub const CELLS: usize = 2;
    pub const MCS: usize = 3;
    pub const MISSING: usize = 4;
    pub const LATE: usize = 5;
    pub const ORDER: usize = 6;
    pub const COUNT: usize = 7;
}

/// The workload's parameters: `S`, `H` and the root seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormParams {
    /// Number of rain gauges `S` (1 ..= 99,999).
    pub stations: u32,
    /// Length of the feed in hours `H` (≥ 1).
    pub hours: u32,
    /// Root seed of `np.random.SeedSequence` (the reference answers use 42).
    pub seed: u64,
}

impl StormParams {
    /// Parameters `(S, H, seed)`.
    pub fn new(stations: u32, hours: u32, seed: u64) -> Self {
        StormParams {
            stations,
            hours,
            seed,
        }
    }

    /// Number of 5-minute timestamps `T = 12 H`.
    pub fn timestamps(&self) -> usize {
        self.hours as usize * 12
    }

    fn validate(&self) -> Result<(), StormError> {
        if !(1..=MAX_STATIONS).contains(&self.stations) {
            return Err(StormError::Params(format!(
                "stations must be 1..={MAX_STATIONS} (ids st00000..st99999), got {}",
                self.stations
            )));
        }
        if self.hours == 0 {
            return Err(StormError::Params("hours must be at least 1".into()));
        }
        if self.timestamps() as u64 * u64::from(self.stations) > u64::from(u32::MAX) {
            return Err(StormError::Params(
                "stations x timestamps must fit in 32 bits".into(),
            ));
        }
        Ok(())
    }
}

/// What [`generate`] writes besides `thresholds.csv`, `meta.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenOptions {
    /// Write `events.csv` and `events_sorted.csv` (`--no-csv` turns this off).
    pub csv: bool,
    /// Write `events.parquet` and `events_sorted.parquet` (`--no-parquet` turns this off).
    pub parquet: bool,
    /// Run [`oracle`] and write `expected.json`.
    pub expected: bool,
    /// Worker threads (rain field, the two event files, the oracle); results do not depend on it.
    pub threads: usize,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            csv: true,
            parquet: true,
            expected: true,
            threads: 2,
        }
    }
}

/// Errors of the generator and of [`read_thresholds`].
#[derive(Debug, thiserror::Error)]
pub enum StormError {
    /// Parameters out of range.
    #[error("invalid parameters: {0}")]
    Params(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Writing a Parquet file failed.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The error.
        source: parquet::errors::ParquetError,
    },
    /// A `thresholds.csv` that is not `station,t1h,t3h,t24h` with ids `st00000`, `st00001`, ….
    #[error("{path}:{line}: {message}")]
    Thresholds {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StormError + '_ {
    move |source| StormError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn pq_err(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> StormError + '_ {
    move |source| StormError::Parquet {
        path: path.to_path_buf(),
        source,
    }
}

/// One station's thresholds in mm (each an odd multiple of 0.05 mm).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Yellow: the 1 h sum.
    pub t1h: f64,
    /// Orange: the 3 h sum.
    pub t3h: f64,
    /// Red: the 24 h sum.
    pub t24h: f64,
}

/// The generated dataset in memory.
///
/// Events are indexed in generation order (timestamp-major, stations ascending, missing
/// readings dropped); `order_live` and `order_sorted` list those indices in the row order of
/// `events.*` and `events_sorted.*`. Values are kept as integer tenths of a millimetre, which
/// is exact: the reference value is `rint(x * 10) / 10`, i.e. `value_tenths / 10.0`.
#[derive(Debug, Clone)]
pub struct StormData {
    /// The parameters the data was drawn with.
    pub params: StormParams,
    /// Station index of each event (`st%05d`).
    pub station: Vec<u32>,
    /// Timestamp index `k` of each event (`ts = T0_MS + k * STEP_MS`).
    pub step: Vec<u32>,
    /// Value of each event in 0.1 mm.
    pub value_tenths: Vec<u16>,
    /// Arrival delay of each event in steps: 0 on time, 1..=3 for the `late = 1` rows.
    pub delay: Vec<u8>,
    /// Row order of `events.csv` / `events.parquet`: by arrival step, then random tie.
    pub order_live: Vec<u32>,
    /// Row order of `events_sorted.*`: by timestamp, then the same random tie.
    pub order_sorted: Vec<u32>,
    /// Per-station thresholds, indexed by station.
    pub thresholds: Vec<Thresholds>,
    /// Readings dropped as missing.
    pub n_missing: u64,
    /// Convective cells plus mesoscale systems born before the end of the feed.
    pub n_cells: usize,
}

impl StormData {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.station.len()
    }

    /// True when there are no events.
    pub fn is_empty(&self) -> bool {
        self.station.is_empty()
    }

    /// Timestamp of event `i` in epoch milliseconds.
    pub fn ts(&self, i: usize) -> i64 {
        T0_MS + i64::from(self.step[i]) * STEP_MS
    }

    /// Value of event `i` in mm (exactly the float64 the reference writes).
    pub fn value(&self, i: usize) -> f64 {
        f64::from(self.value_tenths[i]) / 10.0
    }

    /// Whether event `i` arrives late (`late` column).
    pub fn is_late(&self, i: usize) -> bool {
        self.delay[i] > 0
    }

    /// Events as `(station, ts, value)` in generation order.
    pub fn events(&self) -> impl Iterator<Item = (u32, i64, f64)> + '_ {
        (0..self.len()).map(|i| (self.station[i], self.ts(i), self.value(i)))
    }
}

/// Station id `st%05d`.
pub fn station_id(station: u32) -> String {
    format!("st{station:05}")
}

/// Cells as parallel arrays (times in hours relative to t = 0, positions in km), like the dict
/// `draw_cells` returns.
#[derive(Debug, Default)]
struct Cells {
    birth: Vec<f64>,
    life: Vec<f64>,
    sigma: Vec<f64>,
    peak: Vec<f64>,
    vx: Vec<f64>,
    vy: Vec<f64>,
    x0: Vec<f64>,
    y0: Vec<f64>,
}

impl Cells {
    fn len(&self) -> usize {
        self.birth.len()
    }

    fn append(&mut self, other: Cells) {
        self.birth.extend(other.birth);
        self.life.extend(other.life);
        self.sigma.extend(other.sigma);
        self.peak.extend(other.peak);
        self.vx.extend(other.vx);
        self.vy.extend(other.vy);
        self.x0.extend(other.x0);
        self.y0.extend(other.y0);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CellKind {
    Convective,
    Mesoscale,
}

fn draws(n: usize, mut f: impl FnMut() -> f64) -> Vec<f64> {
    (0..n).map(|_| f()).collect()
}

/// `draw_cells(rng, rate, hours, kind)`: every array drawn in full (`n` values) in the Python
/// order, then the cells born before the end kept.
fn draw_cells(rng: &mut Generator, rate: f64, hours: u32, kind: CellKind) -> Cells {
    let span = f64::from(hours) + PRE_ROLL_H;
    let n = (rate * span + 6.0 * (rate * span).sqrt() + 20.0) as usize;
    let scale = 1.0 / rate;
    let mut acc = 0.0;
    let birth: Vec<f64> = (0..n)
        .map(|_| {
            acc += rng.exponential(scale);
            acc - PRE_ROLL_H
        })
        .collect();
    let (life, sigma, peak, speed, angle_deg) = match kind {
        CellKind::Convective => {
            let life = draws(n, || rng.uniform(1.0, 6.0));
            let sigma = draws(n, || rng.uniform(3.0, 12.0));
            let peak = draws(n, || MAX_MM_PER_5MIN.min(0.3 + rng.lognormal(0.9, 1.2)));
            let speed = draws(n, || rng.uniform(15.0, 50.0));
            let angle = draws(n, || rng.normal(20.0, 30.0));
            (life, sigma, peak, speed, angle)
        }
        CellKind::Mesoscale => {
            let life = draws(n, || rng.uniform(12.0, 30.0));
            let sigma = draws(n, || rng.uniform(20.0, 40.0));
            let peak = draws(n, || rng.uniform(0.3, 1.5));
            let speed = draws(n, || rng.uniform(3.0, 10.0));
            let angle = draws(n, || rng.normal(20.0, 30.0));
            (life, sigma, peak, speed, angle)
        }
    };
    let x0 = draws(n, || rng.uniform(-60.0, DOMAIN_KM + 60.0));
    let y0 = draws(n, || rng.uniform(-60.0, DOMAIN_KM + 60.0));
    let keep: Vec<usize> = (0..n).filter(|&i| birth[i] < f64::from(hours)).collect();
    let mut cells = Cells::default();
    for i in keep {
        // np.deg2rad(x) is x * (pi / 180)
        let angle = angle_deg[i] * (PI / 180.0);
        let (sin, cos) = (angle.sin(), angle.cos());
        // x0 -= speed * np.cos(angle) * life / 2
        cells.x0.push(x0[i] - speed[i] * cos * life[i] / 2.0);
        cells.y0.push(y0[i] - speed[i] * sin * life[i] / 2.0);
        cells.vx.push(speed[i] * cos);
        cells.vy.push(speed[i] * sin);
        cells.birth.push(birth[i]);
        cells.life.push(life[i]);
        cells.sigma.push(sigma[i]);
        cells.peak.push(peak[i]);
    }
    cells
}

/// One row of `rain_field`: the rainfall of every station at step `k`, quantised to tenths.
fn rain_row(k: usize, sx: &[f64], sy: &[f64], cells: &Cells, acc: &mut [f64], out: &mut [u16]) {
    let t = (k as f64 + 0.5) / 12.0;
    acc.fill(0.0);
    for c in 0..cells.len() {
        let a = t - cells.birth[c];
        if !(a >= 0.0 && a <= cells.life[c]) {
            continue;
        }
        let env = (PI * a / cells.life[c]).sin();
        let cx = cells.x0[c] + cells.vx[c] * a;
        let cy = cells.y0[c] + cells.vy[c] * a;
        // numpy scalar `sigma ** 2` calls libm pow(), which is not always sigma * sigma:
        // keep the exponent opaque so that it is not folded into a multiplication.
        let s2 = 2.0 * cells.sigma[c].powf(std::hint::black_box(2.0));
        let limit = 9.0 * s2;
        let amp = cells.peak[c] * env;
        for ((&x, &y), acc) in sx.iter().zip(sy).zip(acc.iter_mut()) {
            let dx = x - cx;
            let dy = y - cy;
            let d2 = dx * dx + dy * dy;
            if d2 < limit {
                *acc += amp * (-d2 / s2).exp();
            }
        }
    }
    for (o, &v) in out.iter_mut().zip(acc.iter()) {
        // np.minimum(rain, 60) then np.round(rain, 1) = rint(x * 10) / 10
        *o = (v.min(MAX_MM_PER_5MIN) * 10.0).round_ties_even() as u16;
    }
}

/// `rain_field`: `[T][S]` rainfall in tenths of a millimetre, rows split over `threads`.
fn rain_field(t_count: usize, sx: &[f64], sy: &[f64], cells: &Cells, threads: usize) -> Vec<u16> {
    let s_count = sx.len();
    let mut rain = vec![0u16; t_count * s_count];
    let rows_per_thread = t_count.div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        for (part, chunk) in rain.chunks_mut(rows_per_thread * s_count).enumerate() {
            scope.spawn(move || {
                let mut acc = vec![0.0f64; s_count];
                for (r, row) in chunk.chunks_mut(s_count).enumerate() {
                    rain_row(part * rows_per_thread + r, sx, sy, cells, &mut acc, row);
                }
            });
        }
    });
    rain
}

/// `thresholds(S, rng)`: each floored to 0.1 mm, + 0.05, rounded to 0.01 (`np.round(x, 2)`).
fn draw_thresholds(s_count: usize, rng: &mut Generator) -> Vec<Thresholds> {
    let t1 = draws(s_count, || rng.uniform(20.0, 45.0));
    let f3 = draws(s_count, || rng.uniform(1.5, 2.2));
    let f24 = draws(s_count, || rng.uniform(1.6, 2.4));
    let q = |x: f64| ((x * 10.0).floor() / 10.0 + 0.05) * 100.0;
    let q = |x: f64| q(x).round_ties_even() / 100.0;
    (0..s_count)
        .map(|i| {
            let t3 = t1[i] * f3[i];
            let t24 = t3 * f24[i];
            Thresholds {
                t1h: q(t1[i]),
                t3h: q(t3),
                t24h: q(t24),
            }
        })
        .collect()
}

/// Draws the whole dataset into memory, exactly as `gen_storm.py` does for `params`.
///
/// `threads` (≥ 1) parallelises the rain field; the result does not depend on it.
pub fn generate_data(params: &StormParams, threads: usize) -> Result<StormData, StormError> {
    params.validate()?;
    let s_count = params.stations as usize;
    let t_count = params.timestamps();
    let mut streams: Vec<Generator> = SeedSequence::new(u128::from(params.seed))
        .spawn(stream::COUNT)
        .iter()
        .map(Generator::from_seed_sequence)
        .collect();

    // pos = uniform(0, DOMAIN_KM, (S, 2)): x and y interleaved
    let (mut sx, mut sy) = (Vec::with_capacity(s_count), Vec::with_capacity(s_count));
    {
        let g = &mut streams[stream::STATIONS];
        for _ in 0..s_count {
            sx.push(g.uniform(0.0, DOMAIN_KM));
            sy.push(g.uniform(0.0, DOMAIN_KM));
        }
    }
    let mut cells = draw_cells(
        &mut streams[stream::CELLS],
        CELL_RATE_PER_H,
        params.hours,
        CellKind::Convective,
    );
    cells.append(draw_cells(
        &mut streams[stream::MCS],
        MCS_RATE_PER_H,
        params.hours,
        CellKind::Mesoscale,
    ));
    let rain = rain_field(t_count, &sx, &sy, &cells, threads);

    // present = missing.random(n) >= P_MISSING; late_draw = late.random(n);
    // late_steps = late.integers(1, 4, n); tie = order.random(n_present).
    // The late stream's integers start after its n doubles: a copy advanced by n draws lets
    // all four run in lockstep without materialising the arrays.
    let n_total = t_count * s_count;
    let mut missing = streams[stream::MISSING].clone();
    let mut late = streams[stream::LATE].clone();
    let mut late_steps = late.clone();
    late_steps.bit_generator().advance(n_total as u128);
    let mut order = streams[stream::ORDER].clone();

    let cap = n_total - n_total / 800;
    let mut station = Vec::with_capacity(cap);
    let mut step = Vec::with_capacity(cap);
    let mut value_tenths = Vec::with_capacity(cap);
    let mut delay = Vec::with_capacity(cap);
    // random() is (x >> 11) * 2^-53, so the 53-bit integer orders exactly like the double
    let mut tie: Vec<u64> = Vec::with_capacity(cap);
    let mut n_missing = 0u64;
    for k in 0..t_count {
        for s in 0..s_count {
            let present = missing.random() >= P_MISSING;
            let late_draw = late.random();
            let late_step = late_steps.integers(1, MAX_LATE_STEPS + 1);
            if !present {
                n_missing += 1;
                continue;
            }
            station.push(s as u32);
            step.push(k as u32);
            value_tenths.push(rain[k * s_count + s]);
            delay.push(if late_draw < P_LATE {
                late_step as u8
            } else {
                0
            });
            tie.push(order.bit_generator().next_u64() >> 11);
        }
    }
    drop(rain);

    // lexsort((tie, step)) and lexsort((tie, arrival)): stable, so ties of `tie` keep the
    // event index order. Bucket by the primary key, then sort each bucket by (tie, index).
    let n_buckets = t_count + MAX_LATE_STEPS as usize;
    let order_sorted = bucket_sort(step.len(), |i| step[i] as usize, n_buckets, &tie);
    let order_live = bucket_sort(
        step.len(),
        |i| step[i] as usize + delay[i] as usize,
        n_buckets,
        &tie,
    );
    drop(tie);

    let thresholds = draw_thresholds(s_count, &mut streams[stream::THRESHOLDS]);
    Ok(StormData {
        params: *params,
        station,
        step,
        value_tenths,
        delay,
        order_live,
        order_sorted,
        thresholds,
        n_missing,
        n_cells: cells.len(),
    })
}

/// The indices `0..n` sorted by `(key(i), tie[i], i)`: counting sort on `key`, then each bucket
/// sorted by the tie.
fn bucket_sort(n: usize, key: impl Fn(usize) -> usize, n_buckets: usize, tie: &[u64]) -> Vec<u32> {
    let mut start = vec![0usize; n_buckets + 1];
    for i in 0..n {
        start[key(i) + 1] += 1;
    }
    for b in 0..n_buckets {
        start[b + 1] += start[b];
    }
    let mut next = start.clone();
    let mut order = vec![0u32; n];
    for i in 0..n {
        let b = key(i);
        order[next[b]] = i as u32;
        next[b] += 1;
    }
    for b in 0..n_buckets {
        order[start[b]..start[b + 1]].sort_unstable_by_key(|&i| (tie[i as usize], i));
    }
    order
}

/// Appends the decimal digits of `v`.
#[inline]
fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Appends `tenths / 10` in shortest round-trip form, as pyarrow writes the float64
/// (`0`, `0.3`, `12`, `12.7`).
#[inline]
fn push_tenths(buf: &mut Vec<u8>, tenths: u16) {
    push_u64(buf, u64::from(tenths / 10));
    if !tenths.is_multiple_of(10) {
        buf.push(b'.');
        buf.push(b'0' + (tenths % 10) as u8);
    }
}

/// A writer that hashes what it writes.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.inner.write_all(bytes)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the events in `order` as `station,ts,value,late` CSV (the bytes of
/// `gen_storm.py`'s `write_csv`) and returns the file's sha256 (hex).
pub fn write_events_csv(
    data: &StormData,
    order: &[u32],
    path: &Path,
) -> Result<String, StormError> {
    let file = File::create(path).map_err(io_err(path))?;
    let mut out = HashingWriter {
        inner: file,
        hash: Sha256::new(),
    };
    let ids: Vec<String> = (0..data.params.stations).map(station_id).collect();
    let mut buf = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(b"station,ts,value,late\n");
    for &i in order {
        let i = i as usize;
        buf.extend_from_slice(ids[data.station[i] as usize].as_bytes());
        buf.push(b',');
        push_u64(&mut buf, data.ts(i) as u64);
        buf.push(b',');
        push_tenths(&mut buf, data.value_tenths[i]);
        buf.extend_from_slice(if data.is_late(i) { b",1\n" } else { b",0\n" });
        if buf.len() >= (1 << 20) - 64 {
            out.write_all(&buf).map_err(io_err(path))?;
            buf.clear();
        }
    }
    out.write_all(&buf).map_err(io_err(path))?;
    out.inner.flush().map_err(io_err(path))?;
    Ok(hex(&out.hash.finalize()))
}

/// The Arrow schema of the event files: `station` dictionary(int32, utf8), `ts` int64,
/// `value` float64, `late` int8 (all nullable, as pyarrow makes them).
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "station",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("ts", DataType::Int64, true),
        Field::new("value", DataType::Float64, true),
        Field::new("late", DataType::Int8, true),
    ]))
}

/// Writes the events in `order` as Parquet: zstd, row groups of [`ROW_GROUP_ROWS`] rows, the
/// schema of [`events_schema`] with every station id in the dictionary.
pub fn write_events_parquet(
    data: &StormData,
    order: &[u32],
    path: &Path,
) -> Result<(), StormError> {
    let schema = events_schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let file = File::create(path).map_err(io_err(path))?;
    let mut writer = ArrowWriter::try_new(BufWriter::new(file), schema.clone(), Some(props))
        .map_err(pq_err(path))?;
    let ids: Arc<StringArray> = Arc::new(
        (0..data.params.stations)
            .map(|s| Some(station_id(s)))
            .collect(),
    );
    for chunk in order.chunks(ROW_GROUP_ROWS) {
        let keys: Int32Array = chunk
            .iter()
            .map(|&i| data.station[i as usize] as i32)
            .collect::<Vec<_>>()
            .into();
        let station = DictionaryArray::<Int32Type>::try_new(keys, ids.clone())
            .map_err(|e| pq_err(path)(e.into()))?;
        let ts: Int64Array = chunk
            .iter()
            .map(|&i| data.ts(i as usize))
            .collect::<Vec<_>>()
            .into();
        let value: Float64Array = chunk
            .iter()
            .map(|&i| data.value(i as usize))
            .collect::<Vec<_>>()
            .into();
        let late: Int8Array = chunk
            .iter()
            .map(|&i| i8::from(data.is_late(i as usize)))
            .collect::<Vec<_>>()
            .into();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(station),
            Arc::new(ts),
            Arc::new(value),
            Arc::new(late),
        ];
        let batch =
            RecordBatch::try_new(schema.clone(), columns).map_err(|e| pq_err(path)(e.into()))?;
        writer.write(&batch).map_err(pq_err(path))?;
    }
    let mut inner = writer.into_inner().map_err(pq_err(path))?;
    inner.flush().map_err(io_err(path))?;
    Ok(())
}

/// Writes `thresholds.csv` (`station,t1h,t3h,t24h`, shortest round-trip floats) and returns its
/// sha256 (hex).
pub fn write_thresholds_csv(thresholds: &[Thresholds], path: &Path) -> Result<String, StormError> {
    let mut text = String::from("station,t1h,t3h,t24h\n");
    for (s, t) in thresholds.iter().enumerate() {
        text.push_str(&format!("st{s:05},{},{},{}\n", t.t1h, t.t3h, t.t24h));
    }
    std::fs::write(path, &text).map_err(io_err(path))?;
    Ok(hex(&Sha256::digest(text.as_bytes())))
}

/// Reads a `thresholds.csv` (`station,t1h,t3h,t24h`, stations `st00000`, `st00001`, … in any
/// order, each once) into a vector indexed by station.
pub fn read_thresholds(path: &Path) -> Result<Vec<Thresholds>, StormError> {
    let bad = |line: usize, message: String| StormError::Thresholds {
        path: path.to_path_buf(),
        line,
        message,
    };
    let file = File::open(path).map_err(io_err(path))?;
    let mut rows: Vec<Option<Thresholds>> = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io_err(path))?;
        let line = line.trim_end_matches('\r');
        if n == 0 {
            if line != "station,t1h,t3h,t24h" {
                return Err(bad(
                    1,
                    format!("expected header station,t1h,t3h,t24h, got {line:?}"),
                ));
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 4 {
            return Err(bad(
                n + 1,
                format!("expected 4 fields, got {}", fields.len()),
            ));
        }
        let station: usize = fields[0]
            .strip_prefix("st")
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad(n + 1, format!("bad station id {:?}", fields[0])))?;
        let num = |f: &str| {
            f.parse::<f64>()
                .map_err(|_| bad(n + 1, format!("bad number {f:?}")))
        };
        let t = Thresholds {
            t1h: num(fields[1])?,
            t3h: num(fields[2])?,
            t24h: num(fields[3])?,
        };
        if rows.len() <= station {
            rows.resize(station + 1, None);
        }
        if rows[station].replace(t).is_some() {
            return Err(bad(n + 1, format!("station {} listed twice", fields[0])));
        }
    }
    rows.into_iter()
        .enumerate()
        .map(|(s, t)| t.ok_or_else(|| bad(0, format!("station {} missing", station_id(s as u32)))))
        .collect()
}

/// Rising edges per rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Edges {
    /// 1 h sum vs `t1h`.
    pub yellow: u64,
    /// 3 h sum vs `t3h`.
    pub orange: u64,
    /// 24 h sum vs `t24h`.
    pub red: u64,
}

/// `Σ_e round(R_W(e) · 10^6)` per window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ChecksumMicro {
    /// The 1 h window.
    #[serde(rename = "1h")]
    pub w1h: i64,
    /// The 3 h window.
    #[serde(rename = "3h")]
    pub w3h: i64,
    /// The 24 h window.
    #[serde(rename = "24h")]
    pub w24h: i64,
}

/// The answer of an implementation: the JSON of a `RESULT` line of the peers (`common.py`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// Implementation name (`"oracle"`).
    pub tool: String,
    /// Implementation version.
    pub version: String,
    /// Input file name.
    pub input: String,
    /// Events processed.
    pub n_events: u64,
    /// Rising edges per rule.
    pub edges: Edges,
    /// Integer checksums per window.
    pub checksum_micro: ChecksumMicro,
    /// `Σ checksum_micro / 10^6` with exactly 6 decimals.
    pub checksum: String,
}

const WINDOWS_MS: [i64; 3] = [3_600_000, 10_800_000, 86_400_000];

/// The reference answer by the definition in WORKLOAD.md, computed naively: events grouped by
/// station and ordered by `ts`; for every event and window `W` the values of the station's
/// events with `t - W < ts' <= t` summed by scanning (O(n · window)); rising edges
/// `R(e_i) >= thr && R(e_{i-1}) < thr` with `R(e_{-1}) = 0`; checksums summed as integers.
///
/// Arithmetic is in integers: values in 0.1 mm, thresholds in 0.01 mm, so nothing depends on
/// summation order. `events` are `(station, ts_ms, value_mm)` in any order; `threads` (≥ 1)
/// splits the stations. The returned answer has `tool = "oracle"` and `input = ""`.
///
/// # Panics
/// If a value is not a multiple of 0.1 mm, a threshold is not an odd multiple of 0.05 mm, or an
/// event's station has no thresholds.
pub fn oracle(
    thresholds: &[Thresholds],
    events: impl IntoIterator<Item = (u32, i64, f64)>,
    threads: usize,
) -> Answer {
    let centi = |mm: f64| {
        let c = (mm * 100.0).round();
        assert!(
            (mm * 100.0 - c).abs() < 1e-6 && c as i64 % 10 == 5,
            "threshold {mm} is not x.x5"
        );
        c as i64
    };
    let thr: Vec<[i64; 3]> = thresholds
        .iter()
        .map(|t| [centi(t.t1h), centi(t.t3h), centi(t.t24h)])
        .collect();
    let mut rows: Vec<(u32, i64, i64)> = events
        .into_iter()
        .map(|(s, ts, v)| {
            let tenths = (v * 10.0).round();
            assert!(
                (v * 10.0 - tenths).abs() < 1e-6,
                "value {v} is not a multiple of 0.1 mm"
            );
            assert!((s as usize) < thr.len(), "station {s} has no thresholds");
            (s, ts, tenths as i64)
        })
        .collect();
    rows.sort_unstable();

    // split at station boundaries into `threads` parts of similar size
    let parts = threads.max(1);
    let mut cuts = vec![0usize];
    for p in 1..parts {
        let mut c = (rows.len() * p / parts).max(*cuts.last().unwrap_or(&0));
        while c > 0 && c < rows.len() && rows[c].0 == rows[c - 1].0 {
            c += 1;
        }
        cuts.push(c);
    }
    cuts.push(rows.len());
    let results: Vec<([u64; 3], [i64; 3])> = std::thread::scope(|scope| {
        let handles: Vec<_> = cuts
            .windows(2)
            .map(|w| {
                let part = &rows[w[0]..w[1]];
                let thr = &thr;
                scope.spawn(move || oracle_part(part, thr))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("oracle thread"))
            .collect()
    });
    let mut edges = [0u64; 3];
    let mut micro = [0i64; 3];
    for (e, m) in results {
        for w in 0..3 {
            edges[w] += e[w];
            micro[w] += m[w];
        }
    }
    let total: i64 = micro.iter().sum();
    Answer {
        tool: "oracle".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        input: String::new(),
        n_events: rows.len() as u64,
        edges: Edges {
            yellow: edges[0],
            orange: edges[1],
            red: edges[2],
        },
        checksum_micro: ChecksumMicro {
            w1h: micro[0],
            w3h: micro[1],
            w24h: micro[2],
        },
        checksum: format!(
            "{}.{:06}",
            total.div_euclid(1_000_000),
            total.rem_euclid(1_000_000)
        ),
    }
}

/// The oracle over rows sorted by (station, ts), whole stations only.
fn oracle_part(rows: &[(u32, i64, i64)], thr: &[[i64; 3]]) -> ([u64; 3], [i64; 3]) {
    let mut edges = [0u64; 3];
    let mut micro = [0i64; 3];
    let mut first = 0;
    while first < rows.len() {
        let station = rows[first].0;
        let mut end = first;
        while end < rows.len() && rows[end].0 == station {
            end += 1;
        }
        let ev = &rows[first..end];
        let th = thr[station as usize];
        let mut prev = [0i64; 3];
        for (i, &(_, t, _)) in ev.iter().enumerate() {
            let mut sum = [0i64; 3];
            // events with the same ts after i belong to the window too
            let mut j = i;
            while j + 1 < ev.len() && ev[j + 1].1 == t {
                j += 1;
            }
            loop {
                let (_, ts, v) = ev[j];
                if ts <= t - WINDOWS_MS[2] {
                    break;
                }
                for w in 0..3 {
                    if ts > t - WINDOWS_MS[w] {
                        sum[w] += v;
                    }
                }
                if j == 0 {
                    break;
                }
                j -= 1;
            }
            for w in 0..3 {
                // R in mm is sum / 10; 10^6 R = sum * 10^5; R >= thr <=> 10 sum >= thr in 0.01 mm
                micro[w] += sum[w] * 100_000;
                if sum[w] * 10 >= th[w] && prev[w] * 10 < th[w] {
                    edges[w] += 1;
                }
                prev[w] = sum[w];
            }
        }
        first = end;
    }
    (edges, micro)
}

/// sha256 of the CSVs written (`csv_sha256` in `meta.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CsvSha256 {
    /// Of `events.csv`.
    #[serde(rename = "events.csv", skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    /// Of `events_sorted.csv`.
    #[serde(rename = "events_sorted.csv", skip_serializing_if = "Option::is_none")]
    pub events_sorted: Option<String>,
}

/// `meta.json`: the keys of `gen_storm.py` in its order (`numpy` and `pyarrow` say `"rust"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Meta {
    /// `"storm"`.
    pub workload: String,
    /// Workload version (1).
    pub version: u32,
    /// `S`.
    pub stations: u32,
    /// `H`.
    pub hours: u32,
    /// Root seed.
    pub seed: u64,
    /// [`T0_MS`].
    pub t0_ms: i64,
    /// [`STEP_MS`].
    pub step_ms: i64,
    /// `12 H`.
    pub timestamps: usize,
    /// Events written.
    pub n_events: u64,
    /// Readings dropped as missing.
    pub n_missing: u64,
    /// Rows with `late = 1`.
    pub n_late: u64,
    /// Events with a value above 0.
    pub n_nonzero: u64,
    /// Largest value in mm.
    pub max_value: f64,
    /// Cells and mesoscale systems.
    pub n_cells: usize,
    /// sha256 of the CSVs written.
    pub csv_sha256: CsvSha256,
    /// Where numpy's version goes in the Python file: `"rust"`.
    pub numpy: String,
    /// Where pyarrow's version goes in the Python file: `"rust"`.
    pub pyarrow: String,
    /// Wall time of generation and writing the event files, rounded to 0.1 s.
    pub gen_seconds: f64,
}

/// JSON like Python's `json.dumps` (separators `", "` and `": "`, one line).
pub fn python_json<T: Serialize>(value: &T) -> String {
    struct PyFormatter;
    impl serde_json::ser::Formatter for PyFormatter {
        fn begin_array_value<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_key<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    value.serialize(&mut ser).expect("JSON of plain data");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// Writes the event files for one row order; returns the CSV's sha256 when a CSV was written.
fn write_order(
    data: &StormData,
    order: &[u32],
    name: &str,
    out_dir: &Path,
    opts: &GenOptions,
) -> Result<Option<String>, StormError> {
    if opts.parquet {
        write_events_parquet(data, order, &out_dir.join(format!("{name}.parquet")))?;
    }
    if opts.csv {
        return write_events_csv(data, order, &out_dir.join(format!("{name}.csv"))).map(Some);
    }
    Ok(None)
}

/// Generates the dataset for `params` into `out_dir` (created if needed), as `gen_storm.py
/// --stations S --hours H --seed SEED --out OUT_DIR` does, plus `expected.json` (the
/// [`oracle`]'s answer, `input = "events.csv"`) when `opts.expected`. Returns the metadata also
/// written to `meta.json`.
pub fn generate(
    params: &StormParams,
    out_dir: &Path,
    opts: &GenOptions,
) -> Result<Meta, StormError> {
    let started = Instant::now();
    params.validate()?;
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let threads = opts.threads.max(1);
    let data = generate_data(params, threads)?;

    let orders = [
        ("events", &data.order_live),
        ("events_sorted", &data.order_sorted),
    ];
    let shas: Vec<Option<String>> = if threads >= 2 {
        std::thread::scope(|scope| {
            let handles: Vec<_> = orders
                .iter()
                .map(|&(name, order)| {
                    let data = &data;
                    scope.spawn(move || write_order(data, order, name, out_dir, opts))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("writer thread"))
                .collect::<Result<_, _>>()
        })?
    } else {
        orders
            .iter()
            .map(|&(name, order)| write_order(&data, order, name, out_dir, opts))
            .collect::<Result<_, _>>()?
    };
    write_thresholds_csv(&data.thresholds, &out_dir.join("thresholds.csv"))?;

    let meta = Meta {
        workload: "storm".into(),
        version: 1,
        stations: params.stations,
        hours: params.hours,
        seed: params.seed,
        t0_ms: T0_MS,
        step_ms: STEP_MS,
        timestamps: params.timestamps(),
        n_events: data.len() as u64,
        n_missing: data.n_missing,
        n_late: data.delay.iter().filter(|&&d| d > 0).count() as u64,
        n_nonzero: data.value_tenths.iter().filter(|&&v| v > 0).count() as u64,
        max_value: f64::from(data.value_tenths.iter().copied().max().unwrap_or(0)) / 10.0,
        n_cells: data.n_cells,
        csv_sha256: CsvSha256 {
            events: shas[0].clone(),
            events_sorted: shas[1].clone(),
        },
        numpy: "rust".into(),
        pyarrow: "rust".into(),
        gen_seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };

    if opts.expected {
        let mut answer = oracle(&data.thresholds, data.events(), threads);
        answer.input = "events.csv".into();
        let path = out_dir.join("expected.json");
        std::fs::write(&path, python_json(&answer) + "\n").map_err(io_err(&path))?;
    }
    let path = out_dir.join("meta.json");
    let mut text = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut text,
        serde_json::ser::PrettyFormatter::with_indent(b" "),
    );
    meta.serialize(&mut ser).expect("JSON of plain data");
    std::fs::write(&path, text).map_err(io_err(&path))?;
    Ok(meta)
}
