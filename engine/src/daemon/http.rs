//! `/healthz`, `/metrics` (Prometheus text format) and `/warnings` (JSON), served by axum on
//! a small tokio runtime of its own, apart from evaluation. They read the snapshots the
//! shards publish every second and the daemon's atomic counters.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::{lock, Shared};
use crate::record::{RejectReason, TransitionKind};
use crate::time::Zone;

pub(crate) struct HttpServer {
    pub(crate) addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    pub(crate) fn start(addr: SocketAddr, shared: Arc<Shared>) -> anyhow::Result<HttpServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fw-http")
            .enable_all()
            .build()
            .context("http runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route("/warnings", get(warnings))
            .route("/reload", axum::routing::post(reload))
            .with_state(shared);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(HttpServer {
            addr,
            runtime,
            stop,
            task,
        })
    }

    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let task = self.task;
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(2), task).await
        });
        self.runtime.shutdown_background();
    }
}

/// A configured MQTT connection down for longer than this makes `/healthz` answer 503.
const HEALTH_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

async fn healthz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let problems = s.degraded(HEALTH_GRACE);
    let code = if problems.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::json!({
        "status": if problems.is_empty() { "ok" } else { "degraded" },
        "mqtt_connected": s.intake_connected.load(Ordering::Relaxed),
        "mqtt_output_connected": s.output_connected.load(Ordering::Relaxed),
        "uptime_s": s.started.elapsed().as_secs(),
    });
    if !problems.is_empty() {
        body["problems"] = serde_json::json!(problems);
    }
    (code, Json(body))
}

fn utc(t: i64) -> String {
    Zone::default().format(t).replace("+00:00", "Z")
}

/// `POST /reload`: load the rule file again (as SIGHUP does); 200 with a summary, 422 with
/// the diagnostics when the new rules do not compile (the old ones stay in force).
async fn reload(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if s.reload_tx
        .try_send(super::ReloadRequest { reply: Some(tx) })
        .is_err()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many reloads waiting\n".to_string(),
        );
    }
    let answer =
        tokio::task::spawn_blocking(move || rx.recv_timeout(std::time::Duration::from_secs(60)))
            .await;
    match answer {
        Ok(Ok(Ok(summary))) => (StatusCode::OK, summary + "\n"),
        Ok(Ok(Err(e))) => (StatusCode::UNPROCESSABLE_ENTITY, e + "\n"),
        _ => (
            StatusCode::GATEWAY_TIMEOUT,
            "the reload was not answered in time\n".to_string(),
        ),
    }
}

async fn warnings(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let snaps = lock(&s.snapshots).clone();
    let zone = s.zone;
    let mut active: Vec<_> = snaps
        .iter()
        .flat_map(|x| x.active.iter().cloned())
        .collect();
    active.sort_by(|a, b| (&a.entity, &a.rule).cmp(&(&b.entity, &b.rule)));
    let mut status: Vec<_> = snaps
        .iter()
        .flat_map(|x| x.status.iter().cloned())
        .collect();
    status.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let watermark = snaps.iter().filter_map(|x| x.watermark).min();
    Json(serde_json::json!({
        "watermark": watermark.map(utc),
        "warnings": active.iter().map(|a| serde_json::json!({
            "rule": a.rule,
            "entity": a.entity,
            "level": a.level,
            "since": utc(a.since),
            "local_since": zone.format(a.since),
            "seq": a.seq,
        })).collect::<Vec<_>>(),
        "data_status": status.iter().map(|(e, f, st, last)| serde_json::json!({
            "entity": e,
            "feed": f,
            "status": st,
            "last_sample": last.map(utc),
        })).collect::<Vec<_>>(),
    }))
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition.
pub(crate) fn render_metrics(s: &Shared) -> String {
    let plan = s.plan();
    let c = s.counters();
    let mut o = String::with_capacity(4096);
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let counter = |o: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    let intake_rej: Vec<u64> = s.intake_rejected.iter().map(ld).collect();
    let intake_total: u64 = intake_rej.iter().sum();
    counter(
        &mut o,
        "forewarn_mqtt_messages_total",
        "MQTT messages received.",
        ld(&s.messages),
    );
    counter(
        &mut o,
        "forewarn_mqtt_payload_bytes_total",
        "MQTT payload bytes received.",
        ld(&s.bytes),
    );
    counter(
        &mut o,
        "forewarn_readings_in_total",
        "Readings received (decoded or not).",
        c.read + intake_total,
    );
    counter(
        &mut o,
        "forewarn_readings_accepted_total",
        "Readings accepted by the engines (late ones included).",
        c.accepted,
    );
    counter(
        &mut o,
        "forewarn_readings_late_total",
        "Readings accepted late.",
        c.late,
    );
    counter(
        &mut o,
        "forewarn_readings_duplicate_total",
        "Identical redeliveries (ignored).",
        c.duplicate,
    );
    counter(
        &mut o,
        "forewarn_readings_coerced_total",
        "Numbers sent as strings and accepted.",
        c.coerced,
    );
    let _ = writeln!(
        o,
        "# HELP forewarn_readings_rejected_total Readings and payloads rejected (dead-lettered), by reason.\n# TYPE forewarn_readings_rejected_total counter"
    );
    for r in RejectReason::ALL {
        let n = c.rejected[r.index()] + intake_rej[r.index()];
        let _ = writeln!(
            o,
            "forewarn_readings_rejected_total{{reason=\"{}\"}} {n}",
            r.as_str()
        );
    }
    counter(
        &mut o,
        "forewarn_forecasts_total",
        "Forecasts received over MQTT, decoded, checked against the rules and handed to the shards.",
        ld(&s.forecasts),
    );
    counter(
        &mut o,
        "forewarn_forecast_targets_total",
        "Entities the shards applied forecasts to (an area forecast: each of its entities once).",
        ld(&s.forecast_targets),
    );
    let _ = writeln!(
        o,
        "# HELP forewarn_forecasts_rejected_total Forecast messages rejected (dead-lettered), by reason.\n# TYPE forewarn_forecasts_rejected_total counter"
    );
    for r in RejectReason::ALL {
        let n = ld(&s.forecasts_rejected[r.index()]);
        let _ = writeln!(
            o,
            "forewarn_forecasts_rejected_total{{reason=\"{}\"}} {n}",
            r.as_str()
        );
    }
    let _ = writeln!(
        o,
        "# HELP forewarn_warnings_total Warning levels entered, by rule and level.\n# TYPE forewarn_warnings_total counter"
    );
    for (ri, rule) in plan.rules.iter().enumerate() {
        for (li, level) in rule.levels.iter().enumerate() {
            let n = c
                .entered
                .get(ri)
                .and_then(|v| v.get(li))
                .copied()
                .unwrap_or(0);
            let _ = writeln!(
                o,
                "forewarn_warnings_total{{rule=\"{}\",level=\"{}\"}} {n}",
                esc(&rule.name),
                esc(&level.name)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP forewarn_transitions_total Warning transitions, by rule and kind.\n# TYPE forewarn_transitions_total counter"
    );
    for (ri, rule) in plan.rules.iter().enumerate() {
        for (ki, kind) in TransitionKind::ALL.iter().enumerate() {
            let n = c.transitions.get(ri).map_or(0, |t| t[ki]);
            let _ = writeln!(
                o,
                "forewarn_transitions_total{{rule=\"{}\",kind=\"{kind}\"}} {n}",
                esc(&rule.name)
            );
        }
    }
    let active: usize = lock(&s.snapshots).iter().map(|x| x.active.len()).sum();
    let _ = writeln!(
        o,
        "# HELP forewarn_warnings_active Warnings currently active.\n# TYPE forewarn_warnings_active gauge\nforewarn_warnings_active {active}"
    );
    counter(
        &mut o,
        "forewarn_evaluations_total",
        "Rule evaluations.",
        c.evaluations,
    );
    let _ = writeln!(
        o,
        "# HELP forewarn_queue_depth Messages waiting in a bounded queue.\n# TYPE forewarn_queue_depth gauge"
    );
    for (name, len) in lock(&s.queues).iter() {
        let _ = writeln!(o, "forewarn_queue_depth{{queue=\"{name}\"}} {}", len());
    }
    let connects = ld(&s.intake_connects);
    counter(
        &mut o,
        "forewarn_mqtt_reconnects_total",
        "Reconnections of the MQTT intake after the first connect.",
        connects.saturating_sub(1),
    );
    counter(
        &mut o,
        "forewarn_mqtt_connection_errors_total",
        "MQTT intake connection errors (each followed by a reconnect attempt with backoff).",
        ld(&s.intake_errors),
    );
    counter(
        &mut o,
        "forewarn_mqtt_invalid_topics_total",
        "Publishes not sent because the topic is not a valid MQTT topic name (over 65535 bytes, or +, # or NUL).",
        ld(&s.bad_topics),
    );
    counter(
        &mut o,
        "forewarn_mqtt_output_reconnects_total",
        "Reconnections of the MQTT output connection after the first connect.",
        ld(&s.output_connects).saturating_sub(1),
    );
    let _ = writeln!(
        o,
        "# HELP forewarn_mqtt_connected Whether the MQTT intake is connected.\n# TYPE forewarn_mqtt_connected gauge\nforewarn_mqtt_connected {}",
        u8::from(s.intake_connected.load(Ordering::Relaxed))
    );
    counter(
        &mut o,
        "forewarn_mqtt_ack_failures_total",
        "Acks that could not be queued (the broker redelivers those messages).",
        ld(&s.ack_failures),
    );
    counter(
        &mut o,
        "forewarn_mqtt_redeliveries_total",
        "Redeliveries of messages already in the input log, acknowledged without evaluating them again.",
        ld(&s.redeliveries),
    );
    counter(
        &mut o,
        "forewarn_reloads_total",
        "Rule reloads put in force (SIGHUP, POST /reload).",
        ld(&s.reloads),
    );
    counter(
        &mut o,
        "forewarn_reload_failures_total",
        "Rule reloads refused (the rules did not load; the old ones stayed in force).",
        ld(&s.reload_failures),
    );
    counter(
        &mut o,
        "forewarn_checkpoints_total",
        "Checkpoints written ([history]).",
        ld(&s.checkpoints),
    );
    let _ = writeln!(
        o,
        "# HELP forewarn_checkpoint_bytes Size of the last checkpoint.\n# TYPE forewarn_checkpoint_bytes gauge\nforewarn_checkpoint_bytes {}",
        ld(&s.checkpoint_bytes)
    );
    counter(
        &mut o,
        "forewarn_mqtt_published_total",
        "Messages published by the MQTT sink.",
        ld(&s.mqtt_published),
    );
    counter(
        &mut o,
        "forewarn_output_warnings_total",
        "Warning records handed to the sinks.",
        ld(&s.warnings_out),
    );
    counter(
        &mut o,
        "forewarn_output_status_events_total",
        "Data-status events handed to the sinks.",
        ld(&s.status_out),
    );
    counter(
        &mut o,
        "forewarn_output_dead_letters_total",
        "Dead letters handed to the sinks.",
        ld(&s.dead_out),
    );
    counter(
        &mut o,
        "forewarn_webhook_delivered_total",
        "Warning records delivered to webhooks.",
        ld(&s.webhook_delivered),
    );
    counter(
        &mut o,
        "forewarn_webhook_retries_total",
        "Webhook delivery retries.",
        ld(&s.webhook_retries),
    );
    counter(
        &mut o,
        "forewarn_webhook_failed_total",
        "Warning records given up after all retries.",
        ld(&s.webhook_failed),
    );
    counter(
        &mut o,
        "forewarn_webhook_dropped_total",
        "Warning records dropped because a webhook queue was full.",
        ld(&s.webhook_dropped),
    );
    counter(
        &mut o,
        "forewarn_cap_messages_total",
        "CAP messages made and delivered ([output.cap]).",
        ld(&s.cap_messages),
    );
    counter(
        &mut o,
        "forewarn_cap_failures_total",
        "CAP messages that could not be made or written (the warning still went to the other outputs).",
        ld(&s.cap_failures),
    );
    let h = lock(&s.latency).clone();
    let _ = writeln!(
        o,
        "# HELP forewarn_reading_to_warning_seconds Latency from MQTT message receipt to the warning it causes being handed to the sink.\n# TYPE forewarn_reading_to_warning_seconds summary"
    );
    for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
        let v = if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1e6
        };
        let _ = writeln!(
            o,
            "forewarn_reading_to_warning_seconds{{quantile=\"{q}\"}} {v}"
        );
    }
    let sum: f64 = h
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum::<f64>()
        / 1e6;
    let _ = writeln!(
        o,
        "forewarn_reading_to_warning_seconds_sum {sum}\nforewarn_reading_to_warning_seconds_count {}",
        h.len()
    );
    let _ = writeln!(
        o,
        "# HELP forewarn_uptime_seconds Seconds since start.\n# TYPE forewarn_uptime_seconds gauge\nforewarn_uptime_seconds {}",
        s.started.elapsed().as_secs()
    );
    o
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render_metrics(&s),
    )
}
