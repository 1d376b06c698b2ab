//! File and stdin sources in the daemon (`[[source]]`, as in `forewarn run`): each source is
//! replayed by the same decoder as `forewarn run` (`source::replay`), in its own thread, into
//! the shard router instead of a local engine — so one configuration can replay history and
//! run live.

use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use forewarn_rules::ir::{Millis, Plan};

use super::shard::{Origin, Router, ShardMsg};
use super::sink::{SinkMsg, SinkTx};
use super::Shared;
use crate::config::SourceConfig;
use crate::engine::{Reading, Value};
use crate::record::{RejectReason, Rejection, Sink, StatusEvent, Warning};
use crate::source::{replay, DeadLetter, Decoded, DecodedValue, ReplayOutput, ReplayTarget};

/// Feeds decoded readings to the shards.
struct RouterTarget {
    plan: Arc<Plan>,
    router: Router,
    shards: Vec<Sender<ShardMsg>>,
    shared: Arc<Shared>,
    source: String,
    stream_time: Option<Millis>,
    closed: bool,
}

impl ReplayTarget for RouterTarget {
    fn plan(&self) -> &Plan {
        &self.plan
    }

    fn count_source_rejection(&mut self, reason: RejectReason) {
        self.shared.count_intake_rejection(reason);
    }

    fn push(&mut self, r: &Reading<'_>, out: &mut dyn Sink) {
        self.push_batch(std::slice::from_ref(r), out)
    }

    fn push_batch(&mut self, readings: &[Reading<'_>], _out: &mut dyn Sink) {
        if readings.is_empty() || self.closed {
            return;
        }
        let decoded: Vec<Decoded> = readings
            .iter()
            .map(|r| Decoded {
                entity: r.entity.to_string(),
                feed: r.feed,
                ts: r.ts,
                value: match r.value {
                    Value::Num(v) => DecodedValue::Num(v),
                    Value::Text(s) => DecodedValue::Text(s.to_string()),
                },
            })
            .collect();
        let newest = self.shared.plausible_newest(readings.iter().map(|r| r.ts));
        self.stream_time = self.stream_time.max(newest);
        let origin = Arc::new(Origin {
            topic: self.source.clone(),
            seq: readings[0].tag,
            payload: Vec::new(),
        });
        if self
            .router
            .route(
                decoded,
                origin,
                Instant::now(),
                super::now_ms(),
                0,
                self.stream_time,
            )
            .is_err()
        {
            self.closed = true;
        }
    }

    fn set_wall_clock(&mut self, now: Millis, _out: &mut dyn Sink) {
        for tx in &self.shards {
            let _ = tx.send(ShardMsg::Tick(now));
        }
    }
}

/// Dead letters of undecodable lines go to the sink; everything else is produced by shards.
struct FileOut {
    sink: SinkTx,
}

impl Sink for FileOut {
    fn warning(&mut self, w: Warning) {
        let _ = self.sink.send(SinkMsg::Warning(w));
    }
    fn status(&mut self, s: StatusEvent) {
        let _ = self.sink.send(SinkMsg::Status(s));
    }
    fn rejected(&mut self, r: Rejection) {
        let _ = self
            .sink
            .send(SinkMsg::Dead(DeadLetter::from_rejection(r, "", &[])));
    }
}

impl ReplayOutput for FileOut {
    fn dead_letter(&mut self, d: DeadLetter) {
        let _ = self.sink.send(SinkMsg::Dead(d));
    }
}

/// Ends the input (EOF) once the daemon stops.
struct StopReader<R> {
    inner: R,
    stop: Arc<AtomicBool>,
}

impl<R: Read> Read for StopReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Ok(0);
        }
        self.inner.read(buf)
    }
}

/// Replay one source into the shards, in its own thread.
pub(crate) fn start(
    src: SourceConfig,
    plan: Arc<Plan>,
    shards: Vec<Sender<ShardMsg>>,
    sink: SinkTx,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let input: Box<dyn Read + Send> = if src.path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&src.path)
                .map_err(|e| anyhow::anyhow!("source {}: {}: {e}", src.name, src.path.display()))?,
        )
    };
    let router = Router::new(&plan, shards.clone());
    let name = src.name.clone();
    Ok(std::thread::Builder::new()
        .name(format!("fw-source-{name}"))
        .spawn(move || {
            let mut reader: Box<dyn BufRead> = Box::new(std::io::BufReader::with_capacity(
                1 << 16,
                StopReader { inner: input, stop },
            ));
            let mut target = RouterTarget {
                plan,
                router,
                shards,
                shared,
                source: src.name.clone(),
                stream_time: None,
                closed: false,
            };
            let mut out = FileOut { sink };
            match replay(&mut target, &src, &mut reader, &mut out, None) {
                Ok(stats) => eprintln!(
                    "forewarn serve: source {}: {} lines, {} readings, {} undecodable",
                    src.name, stats.lines, stats.readings, stats.bad
                ),
                Err(e) => eprintln!("forewarn serve: source {}: {e}", src.name),
            }
        })?)
}
