//! The TOML configuration of `forewarn serve` (see `docs/daemon.md`).
//!
//! `rules` and `[engine]` are read exactly as by `forewarn run` (plus `shards`,
//! `max-payload-bytes`, `heartbeat` and `queue`); `[mqtt]`, `[[subscription]]`,
//! `[[forecast-subscription]]`, `[http]` and `[output]` describe the live side. Every problem
//! is reported together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{
    parse_toml, parse_zone, read_config, relative_to, resolve_sources, ConfigError, RawEngine,
    RawSource, SourceConfig,
};
use crate::engine::EngineConfig;
use crate::time::{parse_duration, Zone};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawServe {
    rules: String,
    #[serde(default)]
    engine: RawServeEngine,
    mqtt: Option<RawMqtt>,
    #[serde(default, rename = "subscription")]
    subscriptions: Vec<RawSubscription>,
    #[serde(default, rename = "forecast-subscription")]
    forecast_subscriptions: Vec<RawForecastSubscription>,
    http: Option<RawHttp>,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default)]
    output: RawServeOutput,
    history: Option<crate::config::RawHistory>,
    cap: Option<crate::config::RawCap>,
}

/// `[engine]`: the fields of `forewarn run`'s `[engine]` plus the daemon's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawServeEngine {
    clock: Option<String>,
    watermark_delay: Option<String>,
    display_zone: Option<String>,
    future_skew: Option<String>,
    max_age: Option<String>,
    delayed_after: Option<String>,
    #[serde(default)]
    require_known_entities: bool,
    shards: Option<usize>,
    max_payload_bytes: Option<usize>,
    heartbeat: Option<String>,
    queue: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMqtt {
    host: Option<String>,
    port: Option<u16>,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    keep_alive: Option<String>,
    clean_session: Option<bool>,
    reconnect_min: Option<String>,
    reconnect_max: Option<String>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTls {
    ca_file: String,
    client_cert: Option<String>,
    client_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSubscription {
    topic: String,
    format: Option<String>,
    feed: Option<String>,
    time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawForecastSubscription {
    topic: String,
    feed: Option<String>,
    area: Option<String>,
    entity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHttp {
    listen: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawServeOutput {
    warnings: Option<String>,
    status: Option<String>,
    dead_letter: Option<String>,
    mqtt: Option<RawOutputMqtt>,
    cap: Option<RawOutputCap>,
    #[serde(default)]
    webhook: Vec<RawWebhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOutputCap {
    dir: Option<String>,
    #[serde(default)]
    mqtt: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOutputMqtt {
    prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWebhook {
    url: String,
    retries: Option<u32>,
    timeout: Option<String>,
    queue: Option<usize>,
}

/// MQTT connection settings (intake and output use two connections with these settings; the
/// output one's client id gets `-out` appended).
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port (default 1883, 8883 with TLS).
    pub port: u16,
    /// Fixed client id: with `clean-session = false` the broker keeps the session (and the
    /// QoS 1 messages published while forewarn is away) under this id.
    pub client_id: String,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// `false` (default): a persistent session.
    pub clean_session: bool,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// TLS, if configured.
    pub tls: Option<TlsConfig>,
}

/// TLS settings (rustls).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) to trust.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for brokers that authenticate clients by certificate.
    pub client_auth: Option<(PathBuf, PathBuf)>,
}

/// One part of a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPart {
    /// A literal level.
    Lit(String),
    /// `{entity}`: the level names the entity.
    Entity,
    /// `{feed}`: the level names the feed.
    Feed,
    /// `+`: any one level, ignored.
    Any,
    /// `#` (last): any remaining levels, ignored.
    Rest,
}

/// A topic template such as `gauges/{entity}/{feed}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    /// The template as written.
    pub text: String,
    /// Its levels.
    pub parts: Vec<TopicPart>,
}

impl TopicTemplate {
    /// Parse a template; `{entity}` and `{feed}` must each fill a whole level.
    pub fn parse(text: &str) -> Result<TopicTemplate, String> {
        if text.is_empty() {
            return Err("empty topic".into());
        }
        let levels: Vec<&str> = text.split('/').collect();
        let mut parts = Vec::with_capacity(levels.len());
        for (i, l) in levels.iter().enumerate() {
            let p = match *l {
                "{entity}" => TopicPart::Entity,
                "{feed}" => TopicPart::Feed,
                "+" => TopicPart::Any,
                "#" if i + 1 == levels.len() => TopicPart::Rest,
                l if l.contains(['{', '}', '+', '#']) => {
                    return Err(format!(
                        "level {l:?}: placeholders ({{entity}}, {{feed}}) and wildcards (+, #) \
                         must fill a whole level, and # must be last"
                    ))
                }
                l => TopicPart::Lit(l.to_string()),
            };
            parts.push(p);
        }
        let n = |want: &TopicPart| parts.iter().filter(|p| *p == want).count();
        if n(&TopicPart::Entity) > 1 || n(&TopicPart::Feed) > 1 {
            return Err("{entity} and {feed} may appear once each".into());
        }
        Ok(TopicTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The MQTT subscription filter (placeholders become `+`).
    pub fn filter(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                TopicPart::Lit(s) => s.as_str(),
                TopicPart::Entity | TopicPart::Feed | TopicPart::Any => "+",
                TopicPart::Rest => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Match a topic: `Some((entity, feed))` from the placeholders when it matches.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<(Option<&'t str>, Option<&'t str>)> {
        let mut levels = topic.split('/');
        let (mut entity, mut feed) = (None, None);
        for p in &self.parts {
            if *p == TopicPart::Rest {
                return Some((entity, feed));
            }
            let l = levels.next()?;
            match p {
                TopicPart::Lit(s) if s != l => return None,
                TopicPart::Entity if !l.is_empty() => entity = Some(l),
                TopicPart::Feed if !l.is_empty() => feed = Some(l),
                TopicPart::Entity | TopicPart::Feed => return None,
                _ => {}
            }
        }
        levels.next().is_none().then_some((entity, feed))
    }
}

/// Payload formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// One reading object or an array of them (a batch), as in JSON Lines sources.
    Json,
    /// SenML (RFC 8428) JSON: one pack (array of records) is a batch.
    Senml,
}

/// One `[[subscription]]`.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The topic template.
    pub topic: TopicTemplate,
    /// Payload format.
    pub format: PayloadFormat,
    /// Feed for readings whose topic and payload name none.
    pub feed: Option<String>,
    /// Zone for timestamps without an offset.
    pub time_zone: Option<Zone>,
}

/// One `[[forecast-subscription]]`: forecasts in forewarn's JSON Lines forecast format, one
/// per message (`docs/forecasts.md`).
#[derive(Debug, Clone)]
pub struct ForecastSubscription {
    /// The MQTT topic filter (`+` and `#` only; no placeholders).
    pub topic: TopicTemplate,
    /// Feed of forecasts whose payload names none; must be a forecast feed of the rules.
    pub feed: Option<String>,
    /// Target (area or entity) of forecasts whose payload names none.
    pub target: Option<crate::forecast::ForecastTarget>,
}

/// A webhook receiving every warning record (JSON POST).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// URL.
    pub url: String,
    /// Retries after the first attempt (exponential backoff from 200 ms).
    pub retries: u32,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Bounded queue: when full, new warnings for this webhook are dropped and counted.
    pub queue: usize,
}

/// Outputs of the daemon.
#[derive(Debug, Clone, Default)]
pub struct ServeOutput {
    /// Warning records as JSON Lines.
    pub warnings: Option<PathBuf>,
    /// Data-status events as JSON Lines.
    pub status: Option<PathBuf>,
    /// Dead letters as JSON Lines.
    pub dead_letter: Option<PathBuf>,
    /// MQTT topic prefix for warnings, levels, status, dead letters and liveness
    /// (`None` = no MQTT output).
    pub mqtt_prefix: Option<String>,
    /// Webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// CAP 1.2 messages (`[output.cap]`, with the `[cap]` settings in [`ServeConfig::cap`]).
    pub cap: Option<ServeCapOutput>,
}

/// Where the daemon's CAP messages go (`[output.cap]`): files, MQTT, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeCapOutput {
    /// A directory: one file `{identifier}.xml` per message, written atomically.
    pub dir: Option<PathBuf>,
    /// Also publish each message's XML on `{prefix}/cap/{rule}/{entity}` (QoS 1, not
    /// retained; needs `[output.mqtt]`).
    pub mqtt: bool,
}

/// A validated `forewarn serve` configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The rule file.
    pub rules: PathBuf,
    /// Engine settings (as `forewarn run`).
    pub engine: EngineConfig,
    /// Display zone of output records.
    pub display_zone: Zone,
    /// Evaluator threads (default: the number of cores).
    pub shards: usize,
    /// Larger MQTT payloads are dead-lettered as `too_large` (default 1 MiB).
    pub max_payload_bytes: usize,
    /// Period of the liveness heartbeat (default 30 s).
    pub heartbeat: Duration,
    /// Capacity of each bounded channel (intake → shard, shards → sink), in messages.
    pub queue: usize,
    /// The broker.
    pub mqtt: Option<MqttConfig>,
    /// What to subscribe to.
    pub subscriptions: Vec<Subscription>,
    /// Forecasts to subscribe to (read before `subscriptions`: a topic matching both is a
    /// forecast).
    pub forecast_subscriptions: Vec<ForecastSubscription>,
    /// File and stdin sources (`[[source]]` as in `forewarn run`), replayed into the shards.
    pub sources: Vec<SourceConfig>,
    /// HTTP listen address (`/healthz`, `/metrics`, `/warnings`); port 0 picks a free one.
    pub http: Option<SocketAddr>,
    /// Outputs.
    pub output: ServeOutput,
    /// History and durable state (`[history]`): the MQTT intake is journaled before it is
    /// acknowledged, shards are checkpointed, and a restart resumes exactly (docs/durability.md).
    pub history: Option<crate::config::HistoryConfig>,
    /// CAP settings (`[cap]`, as `forewarn run`); present whenever `output.cap` is.
    pub cap: Option<crate::config::CapSettings>,
}

fn dur(problems: &mut Vec<String>, key: &str, v: &Option<String>, default: Duration) -> Duration {
    match v {
        None => default,
        Some(s) => match parse_duration(s) {
            Some(ms) if ms >= 0 => Duration::from_millis(ms as u64),
            _ => {
                problems.push(format!(
                    "{key}: {s:?} is not a duration (e.g. 500ms, 30s, 5m)"
                ));
                default
            }
        },
    }
}

/// A webhook URL must be an absolute `http://` or `https://` URL with a host.
fn check_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err("has no host".into()),
    }
}

impl ServeConfig {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
        Self::parse(&read_config(path)?, path)
    }

    /// Parse configuration text; `path` locates relative paths and names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ServeConfig, ConfigError> {
        let raw: RawServe = parse_toml(text, path)?;
        let rel = relative_to(path);
        let mut problems = Vec::new();
        let e = &raw.engine;
        let (mut engine, display_zone) = RawEngine {
            clock: e.clock.clone(),
            watermark_delay: e.watermark_delay.clone(),
            display_zone: e.display_zone.clone(),
            future_skew: e.future_skew.clone(),
            max_age: e.max_age.clone(),
            delayed_after: e.delayed_after.clone(),
            require_known_entities: e.require_known_entities,
            forecast_as_of: None,
        }
        .resolve(&mut problems);
        // The daemon checks readings against the clock in both modes: without a configured
        // future-skew, 5 minutes (a gauge whose clock is hours ahead is `future_dated`).
        engine
            .future_skew
            .get_or_insert(crate::engine::DEFAULT_FUTURE_SKEW);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = e.shards.unwrap_or(cores);
        if shards == 0 || shards > 256 {
            problems.push(format!("engine.shards: {shards} is not in 1 ..= 256"));
        }
        let queue = e.queue.unwrap_or(1024);
        if queue == 0 {
            problems.push("engine.queue: must be at least 1".into());
        }
        let heartbeat = dur(
            &mut problems,
            "engine.heartbeat",
            &e.heartbeat,
            Duration::from_secs(30),
        );
        if heartbeat < Duration::from_secs(1) {
            problems.push(format!(
                "engine.heartbeat: {heartbeat:?} is too short (at least 1s)"
            ));
        }
        let mqtt = raw.mqtt.as_ref().map(|m| {
            let tls = m.tls.as_ref().map(|t| TlsConfig {
                ca_file: rel(&t.ca_file),
                client_auth: match (&t.client_cert, &t.client_key) {
                    (Some(c), Some(k)) => Some((rel(c), rel(k))),
                    (None, None) => None,
                    _ => {
                        problems
                            .push("mqtt.tls: client-cert and client-key go together".to_string());
                        None
                    }
                },
            });
            MqttConfig {
                host: m.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
                port: m.port.unwrap_or(if tls.is_some() { 8883 } else { 1883 }),
                client_id: m.client_id.clone().unwrap_or_else(|| "forewarn".into()),
                username: m.username.clone(),
                password: m.password.clone(),
                keep_alive: dur(
                    &mut problems,
                    "mqtt.keep-alive",
                    &m.keep_alive,
                    Duration::from_secs(30),
                ),
                clean_session: m.clean_session.unwrap_or(false),
                reconnect_min: dur(
                    &mut problems,
                    "mqtt.reconnect-min",
                    &m.reconnect_min,
                    Duration::from_millis(500),
                ),
                reconnect_max: dur(
                    &mut problems,
                    "mqtt.reconnect-max",
                    &m.reconnect_max,
                    Duration::from_secs(30),
                ),
                tls,
            }
        });
        if let Some(m) = &mqtt {
            if m.client_id.is_empty() {
                problems.push("mqtt.client-id: a persistent session needs a client id".into());
            }
            if m.keep_alive < Duration::from_secs(1) {
                problems.push("mqtt.keep-alive: at least 1s".into());
            }
            if m.reconnect_min.is_zero() {
                problems.push("mqtt.reconnect-min: must be more than 0s".into());
            }
            if m.reconnect_min > m.reconnect_max {
                problems.push(format!(
                    "mqtt.reconnect-min ({:?}) is longer than mqtt.reconnect-max ({:?})",
                    m.reconnect_min, m.reconnect_max
                ));
            }
        }
        let mut subscriptions = Vec::new();
        for s in &raw.subscriptions {
            let topic = match TopicTemplate::parse(&s.topic) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("subscription {:?}: {e}", s.topic));
                    continue;
                }
            };
            let format = match s.format.as_deref() {
                None | Some("json") => PayloadFormat::Json,
                Some("senml") => PayloadFormat::Senml,
                Some(other) => {
                    problems.push(format!(
                        "subscription {:?}: format {other:?} is neither json nor senml",
                        s.topic
                    ));
                    continue;
                }
            };
            if s.feed.is_some() && topic.parts.contains(&TopicPart::Feed) {
                problems.push(format!(
                    "subscription {:?}: give either a {{feed}} placeholder or `feed`, not both",
                    s.topic
                ));
            }
            let time_zone = parse_zone(
                &mut problems,
                &format!("subscription {:?}: time-zone", s.topic),
                &s.time_zone,
            );
            subscriptions.push(Subscription {
                topic,
                format,
                feed: s.feed.clone(),
                time_zone,
            });
        }
        let mut forecast_subscriptions = Vec::new();
        for s in &raw.forecast_subscriptions {
            let what = format!("forecast-subscription {:?}", s.topic);
            let topic = match TopicTemplate::parse(&s.topic) {
                Ok(t)
                    if t.parts
                        .iter()
                        .any(|p| matches!(p, TopicPart::Entity | TopicPart::Feed)) =>
                {
                    problems.push(format!(
                        "{what}: the topic is an MQTT filter (+, #); the feed and the target come \
                         from the payload, or from `feed` and `area`/`entity`"
                    ));
                    continue;
                }
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{what}: {e}"));
                    continue;
                }
            };
            let target = match (&s.area, &s.entity) {
                (Some(_), Some(_)) => {
                    problems.push(format!("{what}: give `area` or `entity`, not both"));
                    None
                }
                (Some(a), None) => Some(crate::forecast::ForecastTarget::Area(a.clone())),
                (None, Some(e)) => Some(crate::forecast::ForecastTarget::Entity(e.clone())),
                (None, None) => None,
            };
            forecast_subscriptions.push(ForecastSubscription {
                topic,
                feed: s.feed.clone(),
                target,
            });
        }
        let any_subscription = !subscriptions.is_empty() || !forecast_subscriptions.is_empty();
        if !subscriptions.is_empty() && mqtt.is_none() {
            problems.push("[[subscription]] needs an [mqtt] broker".into());
        }
        if !forecast_subscriptions.is_empty() && mqtt.is_none() {
            problems.push("[[forecast-subscription]] needs an [mqtt] broker".into());
        }
        if mqtt.is_some() && !any_subscription {
            problems
                .push("[mqtt] without any [[subscription]] or [[forecast-subscription]]".into());
        }
        let sources = resolve_sources(&raw.sources, &rel, &mut problems);
        if mqtt.is_none() && raw.sources.is_empty() {
            problems.push(
                "nothing to read: configure [mqtt] with [[subscription]]s, or [[source]]s".into(),
            );
        }
        let http = raw.http.as_ref().and_then(|h| match h.listen.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "http.listen: {:?} is not an address like 127.0.0.1:9464",
                    h.listen
                ));
                None
            }
        });
        let o = &raw.output;
        let mqtt_prefix = o.mqtt.as_ref().map(|m| {
            let p = m.prefix.clone().unwrap_or_else(|| "forewarn".into());
            if p.is_empty() || p.contains(['+', '#']) || p.ends_with('/') {
                problems.push(format!(
                    "output.mqtt.prefix: {p:?} must be a non-empty topic without wildcards or a trailing /"
                ));
            }
            p
        });
        if mqtt_prefix.is_some() && mqtt.is_none() {
            problems.push("[output.mqtt] needs an [mqtt] broker".into());
        }
        for w in &o.webhook {
            if let Err(e) = check_url(&w.url) {
                problems.push(format!("output.webhook.url: {:?} {e}", w.url));
            }
        }
        let webhooks = o
            .webhook
            .iter()
            .map(|w| WebhookConfig {
                url: w.url.clone(),
                retries: w.retries.unwrap_or(5),
                timeout: dur(
                    &mut problems,
                    "output.webhook.timeout",
                    &w.timeout,
                    Duration::from_secs(5),
                ),
                queue: w.queue.unwrap_or(1000).max(1),
            })
            .collect();
        let cap_output = o.cap.as_ref().map(|c| {
            if c.dir.is_none() && !c.mqtt {
                problems.push(
                    "output.cap: give a `dir` for the files, or `mqtt = true`, or both".into(),
                );
            }
            if c.mqtt && mqtt_prefix.is_none() {
                problems.push(
                    "output.cap.mqtt = true publishes under the [output.mqtt] prefix: configure [output.mqtt]"
                        .into(),
                );
            }
            ServeCapOutput {
                dir: c.dir.as_deref().map(rel),
                mqtt: c.mqtt,
            }
        });
        let cap = match (&cap_output, &raw.cap) {
            (None, _) => None,
            (Some(_), None) => {
                problems.push(
                    "[output.cap] is set but there is no [cap] section (at least `sender` is required)"
                        .into(),
                );
                None
            }
            (Some(_), Some(c)) => c.resolve(display_zone, &mut problems),
        };
        let history = raw.history.as_ref().map(|h| h.resolve(&rel, &mut problems));
        if history.is_some() {
            if mqtt.is_none() || !any_subscription {
                problems.push(
                    "[history] journals the MQTT intake: it needs [mqtt] and a [[subscription]]"
                        .into(),
                );
            }
            if !raw.sources.is_empty() {
                problems.push(
                    "[history] with [[source]] files is not supported by serve (replay files with `forewarn run`)"
                        .into(),
                );
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(ServeConfig {
            history,
            cap,
            rules: rel(&raw.rules),
            engine,
            display_zone,
            shards,
            max_payload_bytes: e.max_payload_bytes.unwrap_or(1 << 20),
            heartbeat,
            queue,
            mqtt,
            subscriptions,
            forecast_subscriptions,
            sources,
            http,
            output: ServeOutput {
                warnings: o.warnings.as_deref().map(rel),
                status: o.status.as_deref().map(rel),
                dead_letter: o.dead_letter.as_deref().map(rel),
                mqtt_prefix,
                webhooks,
                cap: cap_output,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_and_filter() {
        let t = TopicTemplate::parse("gauges/{entity}/{feed}").unwrap();
        assert_eq!(t.filter(), "gauges/+/+");
        assert_eq!(
            t.matches("gauges/G1/rain"),
            Some((Some("G1"), Some("rain")))
        );
        assert_eq!(t.matches("gauges/G1"), None);
        assert_eq!(t.matches("gauges/G1/rain/x"), None);
        assert_eq!(t.matches("other/G1/rain"), None);
        let t = TopicTemplate::parse("harvey/#").unwrap();
        assert_eq!(t.filter(), "harvey/#");
        assert_eq!(t.matches("harvey/a/b"), Some((None, None)));
        assert!(TopicTemplate::parse("a/x{entity}").is_err());
        assert!(TopicTemplate::parse("a/#/b").is_err());
    }

    #[test]
    fn a_full_config_parses_and_problems_are_listed() {
        let text = r#"
rules = "r.rules"
[engine]
clock = "wall"
shards = 2
heartbeat = "5s"
[mqtt]
host = "broker"
client-id = "fw"
[[subscription]]
topic = "gauges/{entity}/{feed}"
[[subscription]]
topic = "senml/{entity}"
format = "senml"
feed = "rain"
[http]
listen = "127.0.0.1:0"
[output]
warnings = "out/w.jsonl"
[output.mqtt]
prefix = "fw"
[[output.webhook]]
url = "http://127.0.0.1:1/hook"
"#;
        let c = ServeConfig::parse(text, Path::new("/etc/fw/serve.toml")).unwrap();
        assert_eq!(c.shards, 2);
        assert_eq!(c.mqtt.as_ref().unwrap().port, 1883);
        assert!(!c.mqtt.as_ref().unwrap().clean_session);
        assert_eq!(c.subscriptions[1].format, PayloadFormat::Senml);
        assert_eq!(
            c.output.warnings,
            Some(PathBuf::from("/etc/fw/out/w.jsonl"))
        );
        let bad = "rules = \"r\"\n[engine]\nshards = 0\nclock = \"x\"\n[[subscription]]\ntopic = \"a/{x}\"\n";
        let ConfigError::Invalid { problems, .. } =
            ServeConfig::parse(bad, Path::new("f.toml")).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn forecast_subscriptions_parse_and_their_problems_are_listed() {
        let text = r#"
rules = "r"
[mqtt]
[[forecast-subscription]]
topic = "forecasts/#"
feed = "qpf"
area = "North"
[[forecast-subscription]]
topic = "qpf/+/grid"
"#;
        let c = ServeConfig::parse(text, Path::new("f.toml")).unwrap();
        assert!(c.subscriptions.is_empty(), "forecasts alone are enough");
        let f = &c.forecast_subscriptions;
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].topic.filter(), "forecasts/#");
        assert_eq!(f[0].feed.as_deref(), Some("qpf"));
        assert_eq!(
            f[0].target,
            Some(crate::forecast::ForecastTarget::Area("North".into()))
        );
        assert_eq!(f[1].topic.matches("qpf/x/grid"), Some((None, None)));
        assert_eq!((f[1].feed.as_ref(), f[1].target.as_ref()), (None, None));
        let bad = r#"
rules = "r"
[[forecast-subscription]]
topic = "forecasts/{entity}"
[[forecast-subscription]]
topic = "f"
area = "A"
entity = "G1"
[[forecast-subscription]]
topic = "f/#/x"
"#;
        let ConfigError::Invalid { problems, .. } =
            ServeConfig::parse(bad, Path::new("f.toml")).unwrap_err()
        else {
            panic!()
        };
        let all = problems.join("\n");
        // the placeholder, both targets, `#` not last, no [mqtt] broker, nothing to read
        assert_eq!(problems.len(), 5, "{all}");
        assert!(all.contains("is an MQTT filter"), "{all}");
        assert!(all.contains("not both"), "{all}");
        assert!(all.contains("must be last"), "{all}");
        assert!(
            all.contains("[[forecast-subscription]] needs an [mqtt] broker"),
            "{all}"
        );
    }

    #[test]
    fn future_skew_defaults_to_5m_in_both_clocks() {
        for clock in ["wall", "event"] {
            let text = format!(
                "rules = \"r\"\n[engine]\nclock = \"{clock}\"\n[[source]]\npath = \"-\"\nformat = \"jsonl\"\n"
            );
            let c = ServeConfig::parse(&text, Path::new("f.toml")).unwrap();
            assert_eq!(c.engine.future_skew, Some(5 * 60_000), "{clock}");
        }
    }

    #[test]
    fn bad_heartbeat_backoff_and_webhook_urls_are_reported_together() {
        let text = r#"
rules = "r"
[engine]
heartbeat = "0s"
[mqtt]
reconnect-min = "10s"
reconnect-max = "1s"
[[subscription]]
topic = "a/{entity}/{feed}"
[[output.webhook]]
url = "localhost:8080/hook"
[[output.webhook]]
url = "ftp://example.com/x"
[[output.webhook]]
url = "http://127.0.0.1:8080/ok"
"#;
        let ConfigError::Invalid { problems, .. } =
            ServeConfig::parse(text, Path::new("f.toml")).unwrap_err()
        else {
            panic!()
        };
        let all = problems.join("\n");
        assert_eq!(problems.len(), 4, "{all}");
        assert!(all.contains("engine.heartbeat"), "{all}");
        assert!(all.contains("reconnect-min"), "{all}");
        assert!(all.contains("localhost:8080/hook"), "{all}");
        assert!(all.contains("ftp://"), "{all}");
    }

    #[test]
    fn cap_output_reuses_the_cap_section_and_checks_where_it_goes() {
        let base = "rules = \"r\"\n[mqtt]\n[[subscription]]\ntopic = \"a/{entity}/{feed}\"\n";
        let text = format!(
            "{base}[output.mqtt]\nprefix = \"fw\"\n[output.cap]\ndir = \"cap\"\nmqtt = true\n[cap]\nsender = \"fw.example.org\"\nstatus = \"Exercise\"\n"
        );
        let c = ServeConfig::parse(&text, Path::new("/etc/fw/serve.toml")).unwrap();
        assert_eq!(
            c.output.cap,
            Some(ServeCapOutput {
                dir: Some(PathBuf::from("/etc/fw/cap")),
                mqtt: true
            })
        );
        let cap = c.cap.unwrap();
        assert_eq!(cap.config.identifier_prefix, "fw.example.org");
        assert_eq!(cap.config.status, crate::cap::CapStatus::Exercise);
        // [cap] alone turns nothing on
        let c = ServeConfig::parse(
            &format!("{base}[cap]\nsender = \"s\"\n"),
            Path::new("f.toml"),
        )
        .unwrap();
        assert!(c.cap.is_none() && c.output.cap.is_none());
        let problems = |text: String| match ServeConfig::parse(&text, Path::new("f.toml")) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("{other:?}"),
        };
        // no [cap]; mqtt without [output.mqtt]
        let p = problems(format!("{base}[output.cap]\nmqtt = true\n"));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("[output.mqtt]"), "{p:?}");
        assert!(p[1].contains("no [cap] section"), "{p:?}");
        // neither dir nor mqtt; [cap] validated as for `forewarn run`
        let p = problems(format!(
            "{base}[output.cap]\n[cap]\nsender = \"a b\"\nexpires-after = \"soon\"\n"
        ));
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("output.cap: give a `dir`"), "{p:?}");
        assert!(p[1].starts_with("cap.expires-after"), "{p:?}");
        assert!(p[2].starts_with("cap: CAP sender"), "{p:?}");
    }

    #[test]
    fn topic_names_are_checked_before_publishing() {
        use crate::daemon::sink::valid_topic;
        assert!(valid_topic("fw/level/wet/G1"));
        assert!(!valid_topic(&"x".repeat(65_536)));
        assert!(valid_topic(&"x".repeat(65_535)));
        assert!(!valid_topic("fw/a+b"));
        assert!(!valid_topic("fw/#"));
        assert!(!valid_topic("fw/a\0b"));
        assert!(!valid_topic(""));
    }
}
