//! OASIS Common Alerting Protocol 1.2 output: one CAP `alert` document per warning transition.
//!
//! A warning episode of one rule for one entity becomes a chain of CAP messages tied together by
//! `incidents` and `references` (`docs/cap.md` has the full mapping):
//!
//! | transition           | `msgType` | `references`                   |
//! | -------------------- | --------- | ------------------------------ |
//! | raise                | `Alert`   | —                              |
//! | escalate / downgrade | `Update`  | the episode's previous message |
//! | clear                | `Cancel`  | the episode's previous message |
//!
//! [`CapWriter`] keeps, per `(rule, entity)`, the `sent` time of each message of the open
//! episode, so `references` can name them exactly. It does not persist that memory: after a
//! restart, an update or cancel of an episode it has not seen refers to the message with the
//! previous sequence number (its identifier is deterministic) and uses the episode start as its
//! `sent` time, which is exact only when that previous message was the raise.
//!
//! The XML is written by hand (the format is small and fixed): elements in the order the
//! schema requires, all text escaped, every time with an explicit offset, whole seconds and UTC
//! as `-00:00`. The tests validate every kind of message against the official schema
//! (`fixtures/cap-1.2/CAP-v1.2.xsd`) with `xmllint`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Datelike, Utc};
use forewarn_rules::ir::{Millis, HOUR};

use crate::record::TransitionKind;
use crate::time::Zone;

/// The CAP 1.2 XML namespace.
pub const CAP_NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";

/// The CAP `category` values (CAP 1.2, `info/category`).
pub const CAP_CATEGORIES: [&str; 12] = [
    "Geo",
    "Met",
    "Safety",
    "Security",
    "Rescue",
    "Fire",
    "Health",
    "Env",
    "Transport",
    "Infra",
    "CBRNE",
    "Other",
];

/// How long a message stays in force by default: `expires = sent + 6 h`.
pub const DEFAULT_EXPIRES_AFTER: Millis = 6 * HOUR;

/// Why a CAP message could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    /// A name that is not one of a CAP enumeration's values.
    #[error("unknown CAP {what} {value:?} (expected one of: {expected})")]
    UnknownValue {
        /// Which enumeration (`severity`, `status`, ...).
        what: &'static str,
        /// The text given.
        value: String,
        /// The accepted values, comma-separated.
        expected: String,
    },
    /// A level without a CAP severity and response type (custom ladders have no default).
    #[error(
        "level {level:?} of rule {rule:?} has no CAP severity/response: declare it with `cap`"
    )]
    MissingLevel {
        /// Rule name.
        rule: String,
        /// Level name.
        level: String,
    },
    /// A raise, escalate or downgrade without the level it goes to.
    #[error("a {kind} transition of rule {rule:?} for entity {entity:?} names no level after it")]
    MissingLevelName {
        /// Rule name.
        rule: String,
        /// Entity id.
        entity: String,
        /// The transition kind.
        kind: TransitionKind,
    },
    /// A sender CAP does not allow (empty, or with whitespace, `,`, `<` or `&`).
    #[error("CAP sender {0:?} must be non-empty and contain no whitespace, ',', '<' or '&'")]
    InvalidSender(String),
    /// A category that is not one of [`CAP_CATEGORIES`].
    #[error("CAP category {0:?} is not one of Geo, Met, Safety, Security, Rescue, Fire, Health, Env, Transport, Infra, CBRNE, Other")]
    InvalidCategory(String),
    /// A language tag that is not of the form `xx` or `xx-YY` (RFC 3066, XML `xs:language`).
    #[error("language tag {0:?} is not an RFC 3066 tag such as zh-CN or en")]
    InvalidLanguage(String),
    /// An instant outside the years 0000–9999 that CAP date-times can express.
    #[error("instant {0} ms is outside the years 0000-9999 a CAP date-time can express")]
    TimeOutOfRange(Millis),
    /// An identifier that cannot be a file name (only `[A-Za-z0-9._-]` are written).
    #[error("CAP identifier {0:?} is empty or has characters other than A-Z a-z 0-9 . _ -")]
    InvalidIdentifier(String),
    /// A file already holds a different message under the same identifier.
    #[error("{} already holds a different CAP message with the same identifier (a published identifier never changes content)", path.display())]
    Conflict {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl CapError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> CapError + '_ {
        move |source| CapError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Declares a CAP enumeration: the type, `ALL`, `as_str`, case-insensitive `FromStr`, `Display`.
macro_rules! cap_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in the order of the CAP specification.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as CAP writes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }
        }

        impl FromStr for $name {
            type Err = CapError;

            /// Case-insensitive.
            fn from_str(s: &str) -> Result<Self, CapError> {
                let t = s.trim();
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(t))
                    .ok_or_else(|| CapError::UnknownValue {
                        what: $what,
                        value: s.to_string(),
                        expected: Self::ALL
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

cap_enum! {
    /// CAP `severity`.
    CapSeverity, "severity" {
        /// Extraordinary threat to life or property.
        Extreme => "Extreme",
        /// Significant threat to life or property.
        Severe => "Severe",
        /// Possible threat to life or property.
        Moderate => "Moderate",
        /// Minimal to no known threat to life or property.
        Minor => "Minor",
        /// Severity unknown.
        Unknown => "Unknown",
    }
}

cap_enum! {
    /// CAP `responseType`: the action recommended to the audience.
    CapResponse, "responseType" {
        /// Take shelter in place.
        Shelter => "Shelter",
        /// Relocate.
        Evacuate => "Evacuate",
        /// Make preparations.
        Prepare => "Prepare",
        /// Execute a pre-planned activity.
        Execute => "Execute",
        /// Avoid the subject event.
        Avoid => "Avoid",
        /// Attend to information sources.
        Monitor => "Monitor",
        /// Evaluate the information in this message (not for public warnings).
        Assess => "Assess",
        /// The subject event no longer poses a threat.
        AllClear => "AllClear",
        /// No action recommended.
        None => "None",
    }
}

cap_enum! {
    /// CAP `status`: how the message is to be handled. `Exercise` and `Test` are for drills.
    CapStatus, "status" {
        /// Actionable by all targeted recipients.
        Actual => "Actual",
        /// Only for designated exercise participants.
        Exercise => "Exercise",
        /// Messages that support alert network internal functions.
        System => "System",
        /// Technical testing only; all recipients disregard.
        Test => "Test",
        /// A preliminary template or draft, not actionable.
        Draft => "Draft",
    }
}

cap_enum! {
    /// CAP `certainty`.
    CapCertainty, "certainty" {
        /// Determined to have occurred or to be ongoing.
        Observed => "Observed",
        /// Likely (p > ~50%).
        Likely => "Likely",
        /// Possible but not likely (p <= ~50%).
        Possible => "Possible",
        /// Not expected to occur (p ~ 0).
        Unlikely => "Unlikely",
        /// Certainty unknown.
        Unknown => "Unknown",
    }
}

cap_enum! {
    /// CAP `urgency`.
    CapUrgency, "urgency" {
        /// Responsive action should be taken immediately.
        Immediate => "Immediate",
        /// Responsive action should be taken soon (within the next hour).
        Expected => "Expected",
        /// Responsive action should be taken in the near future.
        Future => "Future",
        /// Responsive action is no longer required.
        Past => "Past",
        /// Urgency not known.
        Unknown => "Unknown",
    }
}

/// Which branch of a rule made the transition (the engine's [`crate::record::Branch`]).
pub use crate::record::Branch;

/// CAP `scope`: who may receive the message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CapScope {
    /// For general dissemination to unrestricted audiences.
    #[default]
    Public,
    /// For users with a known operational requirement; the text becomes `restriction`.
    Restricted(String),
    /// For specified addresses; the text becomes `addresses` (space-separated, quoted when
    /// an address has spaces).
    Private(String),
}

impl CapScope {
    /// The value CAP writes in `scope`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CapScope::Public => "Public",
            CapScope::Restricted(_) => "Restricted",
            CapScope::Private(_) => "Private",
        }
    }
}

/// What a rule declares for one of its levels: CAP severity and recommended response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapLevel {
    /// `severity` of messages at this level.
    pub severity: CapSeverity,
    /// `responseType` of messages at this level.
    pub response: CapResponse,
}

/// The project convention for the colour ladder (not a standard mapping; domain.md §3.9):
///
/// | level  | severity | responseType |
/// | ------ | -------- | ------------ |
/// | blue   | Minor    | Monitor      |
/// | yellow | Moderate | Prepare      |
/// | orange | Severe   | Prepare      |
/// | red    | Extreme  | Evacuate     |
///
/// Names match case-insensitively. Any other level name has no default (`None`): a rule with a
/// custom ladder must declare `cap` per level.
pub fn default_colour_level(level: &str) -> Option<CapLevel> {
    let (severity, response) = match level.trim().to_ascii_lowercase().as_str() {
        "blue" => (CapSeverity::Minor, CapResponse::Monitor),
        "yellow" => (CapSeverity::Moderate, CapResponse::Prepare),
        "orange" => (CapSeverity::Severe, CapResponse::Prepare),
        "red" => (CapSeverity::Extreme, CapResponse::Evacuate),
        _ => return None,
    };
    Some(CapLevel { severity, response })
}

/// Who sends the messages and how they are written.
#[derive(Debug, Clone, PartialEq)]
pub struct CapConfig {
    /// CAP `sender`: a globally unique originator id, e.g. a domain name. No whitespace, `,`,
    /// `<` or `&`.
    pub sender: String,
    /// First part of every identifier, e.g. `cn.gov.zj.forewarn`.
    pub identifier_prefix: String,
    /// `status`: `Actual`, or `Exercise`/`Test` for drills.
    pub status: CapStatus,
    /// `scope` (default `Public`).
    pub scope: CapScope,
    /// `category` of every `info`, one of [`CAP_CATEGORIES`] (default `Met`).
    pub category: String,
    /// `senderName` of every `info` (the human-readable authority name), if any.
    pub sender_name: Option<String>,
    /// The zone times are written in (the instant is the same; only the offset shown changes).
    pub zone: Zone,
    /// `expires = sent + expires_after`; `None` writes no `expires` (default 6 h).
    pub expires_after: Option<Millis>,
    /// Languages to write, in this order, from [`CapTransition::infos`]; empty writes every
    /// info text given.
    pub languages: Vec<String>,
}

impl CapConfig {
    /// A configuration with the defaults: status `Actual`, scope `Public`, category `Met`, no
    /// sender name, times in UTC, expiry 6 h after sending, every language given.
    pub fn new(sender: impl Into<String>, identifier_prefix: impl Into<String>) -> Self {
        CapConfig {
            sender: sender.into(),
            identifier_prefix: identifier_prefix.into(),
            status: CapStatus::Actual,
            scope: CapScope::Public,
            category: "Met".to_string(),
            sender_name: None,
            zone: Zone::default(),
            expires_after: Some(DEFAULT_EXPIRES_AFTER),
            languages: Vec::new(),
        }
    }
}

/// The text of one `info` block, in one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapInfoText {
    /// `language`, an RFC 3066 tag such as `zh-CN` or `en`.
    pub language: String,
    /// `event`: the type of event (e.g. `暴雨` / `Heavy rain`).
    pub event: String,
    /// `headline`.
    pub headline: String,
    /// `description` (not written when empty).
    pub description: String,
    /// `instruction`, if any.
    pub instruction: Option<String>,
}

/// One warning transition, as the CAP writer needs it.
#[derive(Debug, Clone)]
pub struct CapTransition<'a> {
    /// Rule name.
    pub rule: &'a str,
    /// The event name used when `infos` is empty.
    pub event: &'a str,
    /// Entity id.
    pub entity: &'a str,
    /// `areaDesc`: the area the warning is for (the entity id when empty).
    pub area_desc: &'a str,
    /// `geocode`s of the area, `(valueName, value)`, e.g. `("station", id)`, `("admin", code)`.
    pub geocodes: &'a [(String, String)],
    /// Raise, escalate, downgrade or clear.
    pub kind: TransitionKind,
    /// Level before.
    pub from: Option<&'a str>,
    /// Level after (none for a clear).
    pub to: Option<&'a str>,
    /// CAP mapping of the level after; required unless the transition is a clear.
    pub level: Option<&'a CapLevel>,
    /// CAP mapping of the level before (a clear's severity), if known.
    pub from_level: Option<&'a CapLevel>,
    /// Event time of the transition (UTC ms): `sent` and `effective`.
    pub time: Millis,
    /// Event time of the episode's raise (UTC ms): part of every identifier of the episode.
    pub episode_start: Millis,
    /// Sequence number of the transition for `(rule, entity)` (consecutive within an episode).
    pub seq: u64,
    /// Which branch of the rule made it.
    pub branch: Branch,
    /// When the forecast or projection expects the threshold to be crossed: `onset`.
    pub expected_crossing: Option<Millis>,
    /// One `info` per entry (subject to [`CapConfig::languages`]).
    pub infos: &'a [CapInfoText],
    /// `parameter`s, `(valueName, value)`, e.g. values and thresholds.
    pub parameters: &'a [(String, String)],
}

/// One CAP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapMessage {
    /// CAP `identifier` (only `[A-Za-z0-9._-]`).
    pub identifier: String,
    /// `Alert`, `Update` or `Cancel`.
    pub msg_type: &'static str,
    /// The whole XML document (UTF-8).
    pub xml: String,
}

/// The messages of one open episode: `seq → sent`.
#[derive(Debug, Clone)]
struct Episode {
    start: Millis,
    sent: BTreeMap<u64, Millis>,
}

/// Turns warning transitions into CAP messages, remembering each open episode's messages so
/// updates and cancels can reference them.
#[derive(Debug)]
pub struct CapWriter {
    config: CapConfig,
    prefix: String,
    episodes: HashMap<(String, String), Episode>,
}

impl CapWriter {
    /// A writer; checks the sender, category and configured languages.
    pub fn new(config: CapConfig) -> Result<Self, CapError> {
        if !valid_sender(&config.sender) {
            return Err(CapError::InvalidSender(config.sender));
        }
        if !CAP_CATEGORIES.contains(&config.category.as_str()) {
            return Err(CapError::InvalidCategory(config.category));
        }
        if let Some(bad) = config.languages.iter().find(|l| !valid_language(l)) {
            return Err(CapError::InvalidLanguage(bad.clone()));
        }
        let prefix = sanitize(&config.identifier_prefix);
        Ok(CapWriter {
            config,
            prefix,
            episodes: HashMap::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CapConfig {
        &self.config
    }

    /// The episode id (`incidents`): `{prefix}-{rule}-{entity}-{episode start, UTC
    /// yyyymmddThhmmssZ}`, with every character other than `[A-Za-z0-9._-]` replaced by `_`.
    pub fn episode_id(
        &self,
        rule: &str,
        entity: &str,
        episode_start: Millis,
    ) -> Result<String, CapError> {
        Ok(format!(
            "{}-{}-{}-{}",
            self.prefix,
            sanitize(rule),
            sanitize(entity),
            compact_utc(episode_start)?
        ))
    }

    /// The identifier of the message for transition `seq` of an episode: `{episode id}-{seq}`.
    pub fn identifier(
        &self,
        rule: &str,
        entity: &str,
        episode_start: Millis,
        seq: u64,
    ) -> Result<String, CapError> {
        Ok(format!(
            "{}-{seq}",
            self.episode_id(rule, entity, episode_start)?
        ))
    }

    /// The CAP message for one transition. Calling it again for the same transition (a replay)
    /// gives the same message.
    pub fn message(&mut self, t: &CapTransition<'_>) -> Result<CapMessage, CapError> {
        // What the transition maps to, checked before any state changes.
        let (level_name, level) = match t.kind {
            TransitionKind::Clear => (t.from, t.from_level.copied()),
            _ => {
                let name = t.to.ok_or_else(|| CapError::MissingLevelName {
                    rule: t.rule.to_string(),
                    entity: t.entity.to_string(),
                    kind: t.kind,
                })?;
                let level = t.level.ok_or_else(|| CapError::MissingLevel {
                    rule: t.rule.to_string(),
                    level: name.to_string(),
                })?;
                (Some(name), Some(*level))
            }
        };
        let infos = self.select_infos(t.infos)?;
        let episode_id = self.episode_id(t.rule, t.entity, t.episode_start)?;
        let identifier = format!("{episode_id}-{}", t.seq);
        let sent = cap_datetime(&self.config.zone, t.time)?;
        let expires = match self.config.expires_after {
            Some(after) => {
                let at = t
                    .time
                    .checked_add(after)
                    .ok_or(CapError::TimeOutOfRange(t.time))?;
                Some(cap_datetime(&self.config.zone, at)?)
            }
            None => None,
        };
        let onset = match (t.kind, t.expected_crossing) {
            (TransitionKind::Clear, _) | (_, None) => None,
            (_, Some(c)) => Some(cap_datetime(&self.config.zone, c)?),
        };

        // The previous message of the episode, for updates and cancels.
        let key = (t.rule.to_string(), t.entity.to_string());
        let (msg_type, previous) = match t.kind {
            TransitionKind::Raise => ("Alert", None),
            TransitionKind::Escalate | TransitionKind::Downgrade => {
                ("Update", Some(self.previous(&key, t)))
            }
            TransitionKind::Clear => ("Cancel", Some(self.previous(&key, t))),
        };
        let references = match previous {
            Some((seq, at)) => Some(format!(
                "{},{episode_id}-{seq},{}",
                self.config.sender,
                cap_datetime(&self.config.zone, at)?
            )),
            None => None,
        };

        let (severity, response, urgency, certainty) = match t.kind {
            TransitionKind::Clear => (
                level.map_or(CapSeverity::Minor, |l| l.severity),
                CapResponse::AllClear,
                CapUrgency::Past,
                CapCertainty::Observed,
            ),
            _ => {
                let level = level.unwrap_or(CapLevel {
                    severity: CapSeverity::Unknown,
                    response: CapResponse::None,
                });
                (
                    level.severity,
                    level.response,
                    urgency(t.branch, t.time, t.expected_crossing),
                    certainty(t.branch),
                )
            }
        };

        let m = Meta {
            msg_type,
            sent: &sent,
            expires: expires.as_deref(),
            onset: onset.as_deref(),
            references: references.as_deref(),
            episode_id: &episode_id,
            severity,
            response,
            urgency,
            certainty,
            level_name,
        };
        let xml = self.render(t, &identifier, &m, &infos);

        // Remember the episode's messages (after everything that can fail).
        match t.kind {
            TransitionKind::Raise => {
                self.episodes.insert(
                    key,
                    Episode {
                        start: t.episode_start,
                        sent: BTreeMap::from([(t.seq, t.time)]),
                    },
                );
            }
            TransitionKind::Escalate | TransitionKind::Downgrade => {
                let episode = self.episodes.entry(key).or_insert_with(|| Episode {
                    start: t.episode_start,
                    sent: BTreeMap::new(),
                });
                if episode.start != t.episode_start {
                    *episode = Episode {
                        start: t.episode_start,
                        sent: BTreeMap::new(),
                    };
                }
                episode.sent.insert(t.seq, t.time);
            }
            TransitionKind::Clear => {
                self.episodes.remove(&key);
            }
        }

        Ok(CapMessage {
            identifier,
            msg_type,
            xml,
        })
    }

    /// `(seq, sent)` of the message before `t` in its episode. When the writer has no record of
    /// it (a restart), the previous sequence number with the episode start as `sent`.
    fn previous(&self, key: &(String, String), t: &CapTransition<'_>) -> (u64, Millis) {
        self.episodes
            .get(key)
            .filter(|e| e.start == t.episode_start)
            .and_then(|e| e.sent.range(..t.seq).next_back())
            .map(|(&seq, &at)| (seq, at))
            .unwrap_or((t.seq.saturating_sub(1), t.episode_start))
    }

    /// Take up an episode that was open before this writer existed (a resumed run or a
    /// restarted daemon): it started at `start` and its latest message was transition `seq`
    /// at `time`, so the next update or cancel references that message exactly.
    pub fn resume_episode(
        &mut self,
        rule: &str,
        entity: &str,
        start: Millis,
        seq: u64,
        time: Millis,
    ) {
        self.episodes.insert(
            (rule.to_string(), entity.to_string()),
            Episode {
                start,
                sent: BTreeMap::from([(seq, time)]),
            },
        );
    }

    /// The info texts to write, in order; empty when a generated English one is needed.
    fn select_infos<'t>(&self, infos: &'t [CapInfoText]) -> Result<Vec<&'t CapInfoText>, CapError> {
        let chosen: Vec<&CapInfoText> = if self.config.languages.is_empty() {
            infos.iter().collect()
        } else {
            self.config
                .languages
                .iter()
                .filter_map(|lang| infos.iter().find(|i| i.language.eq_ignore_ascii_case(lang)))
                .collect()
        };
        if let Some(bad) = chosen.iter().find(|i| !valid_language(&i.language)) {
            return Err(CapError::InvalidLanguage(bad.language.clone()));
        }
        Ok(chosen)
    }

    fn render(
        &self,
        t: &CapTransition<'_>,
        identifier: &str,
        m: &Meta<'_>,
        infos: &[&CapInfoText],
    ) -> String {
        let c = &self.config;
        let mut x = String::with_capacity(2048);
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str("<alert xmlns=\"");
        x.push_str(CAP_NAMESPACE);
        x.push_str("\">\n");
        elem(&mut x, 1, "identifier", identifier);
        elem(&mut x, 1, "sender", &c.sender);
        elem(&mut x, 1, "sent", m.sent);
        elem(&mut x, 1, "status", c.status.as_str());
        elem(&mut x, 1, "msgType", m.msg_type);
        elem(&mut x, 1, "scope", c.scope.as_str());
        match &c.scope {
            CapScope::Public => {}
            CapScope::Restricted(r) => elem(&mut x, 1, "restriction", r),
            CapScope::Private(a) => elem(&mut x, 1, "addresses", a),
        }
        if let Some(r) = m.references {
            elem(&mut x, 1, "references", r);
        }
        elem(&mut x, 1, "incidents", m.episode_id);
        if infos.is_empty() {
            let headline = match (t.kind, m.level_name) {
                (TransitionKind::Clear, Some(l)) => {
                    format!("{} {l} cleared for {}", t.rule, t.entity)
                }
                (TransitionKind::Clear, None) => format!("{} cleared for {}", t.rule, t.entity),
                (_, l) => format!("{} {} for {}", t.rule, l.unwrap_or_default(), t.entity),
            };
            let generated = CapInfoText {
                language: "en".to_string(),
                event: t.event.to_string(),
                headline,
                description: String::new(),
                instruction: None,
            };
            self.render_info(&mut x, t, m, &generated);
        } else {
            for info in infos {
                self.render_info(&mut x, t, m, info);
            }
        }
        x.push_str("</alert>\n");
        x
    }

    fn render_info(&self, x: &mut String, t: &CapTransition<'_>, m: &Meta<'_>, info: &CapInfoText) {
        let c = &self.config;
        open(x, 1, "info");
        elem(x, 2, "language", &info.language);
        elem(x, 2, "category", &c.category);
        elem(x, 2, "event", &info.event);
        elem(x, 2, "responseType", m.response.as_str());
        elem(x, 2, "urgency", m.urgency.as_str());
        elem(x, 2, "severity", m.severity.as_str());
        elem(x, 2, "certainty", m.certainty.as_str());
        if let Some(level) = m.level_name {
            pair(x, 2, "eventCode", "forewarn:level", level);
        }
        pair(x, 2, "eventCode", "forewarn:rule", t.rule);
        elem(x, 2, "effective", m.sent);
        if let Some(onset) = m.onset {
            elem(x, 2, "onset", onset);
        }
        if let Some(expires) = m.expires {
            elem(x, 2, "expires", expires);
        }
        if let Some(name) = &c.sender_name {
            elem(x, 2, "senderName", name);
        }
        elem(x, 2, "headline", &info.headline);
        if !info.description.is_empty() {
            elem(x, 2, "description", &info.description);
        }
        if let Some(instruction) = &info.instruction {
            elem(x, 2, "instruction", instruction);
        }
        for (name, value) in t.parameters {
            pair(x, 2, "parameter", name, value);
        }
        pair(x, 2, "parameter", "forewarn:branch", t.branch.as_str());
        pair(x, 2, "parameter", "forewarn:transition", t.kind.as_str());
        open(x, 2, "area");
        let area = if t.area_desc.trim().is_empty() {
            t.entity
        } else {
            t.area_desc
        };
        elem(x, 3, "areaDesc", area);
        for (name, value) in t.geocodes {
            pair(x, 3, "geocode", name, value);
        }
        close(x, 2, "area");
        close(x, 1, "info");
    }
}

/// The parts of a message shared by all its `info` blocks.
struct Meta<'m> {
    msg_type: &'static str,
    sent: &'m str,
    expires: Option<&'m str>,
    onset: Option<&'m str>,
    references: Option<&'m str>,
    episode_id: &'m str,
    severity: CapSeverity,
    response: CapResponse,
    urgency: CapUrgency,
    certainty: CapCertainty,
    level_name: Option<&'m str>,
}

/// Certainty of a raise, escalate or downgrade: `Observed` for measured data, `Likely` for a
/// forecast or projection. (A clear is always `Observed`.)
fn certainty(branch: Branch) -> CapCertainty {
    match branch {
        Branch::Observed => CapCertainty::Observed,
        Branch::Forecast | Branch::Projected => CapCertainty::Likely,
    }
}

/// Urgency of a raise, escalate or downgrade: `Immediate` for measured data; for a forecast or
/// projection `Expected` when the crossing is at most 1 h after the transition (or unknown),
/// `Future` when later. (A clear is always `Past`.)
fn urgency(branch: Branch, time: Millis, expected_crossing: Option<Millis>) -> CapUrgency {
    match (branch, expected_crossing) {
        (Branch::Observed, _) => CapUrgency::Immediate,
        (_, None) => CapUrgency::Expected,
        (_, Some(c)) if c.saturating_sub(time) <= HOUR => CapUrgency::Expected,
        (_, Some(_)) => CapUrgency::Future,
    }
}

/// A CAP date-time: whole seconds (truncated), the zone's offset, UTC written `-00:00`.
/// Offsets that are not whole minutes (historical local mean time) are written as UTC.
pub fn cap_datetime(zone: &Zone, t: Millis) -> Result<String, CapError> {
    let secs = t.div_euclid(1000) * 1000;
    let utc = DateTime::<Utc>::from_timestamp_millis(secs).ok_or(CapError::TimeOutOfRange(t))?;
    let mut offset = zone.offset_at(secs);
    if offset.local_minus_utc() % 60 != 0 {
        offset = chrono::FixedOffset::east_opt(0).unwrap_or(offset);
    }
    let local = utc.with_timezone(&offset);
    if !(0..=9999).contains(&local.year()) {
        return Err(CapError::TimeOutOfRange(t));
    }
    let off = offset.local_minus_utc();
    let (sign, abs) = if off > 0 { ('+', off) } else { ('-', -off) };
    Ok(format!(
        "{}{sign}{:02}:{:02}",
        local.format("%Y-%m-%dT%H:%M:%S"),
        abs / 3600,
        abs % 3600 / 60
    ))
}

/// An instant as compact UTC, `yyyymmddThhmmssZ` (seconds truncated), for identifiers.
fn compact_utc(t: Millis) -> Result<String, CapError> {
    let utc = DateTime::<Utc>::from_timestamp_millis(t.div_euclid(1000) * 1000)
        .ok_or(CapError::TimeOutOfRange(t))?;
    if !(0..=9999).contains(&utc.year()) {
        return Err(CapError::TimeOutOfRange(t));
    }
    Ok(utc.format("%Y%m%dT%H%M%SZ").to_string())
}

/// Every character other than `[A-Za-z0-9._-]` replaced by `_` (one per character).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if id_char(c) { c } else { '_' })
        .collect()
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn valid_sender(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, ',' | '<' | '&'))
}

/// `xs:language`: `[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*`.
fn valid_language(s: &str) -> bool {
    let mut parts = s.split('-');
    let first_ok = parts
        .next()
        .is_some_and(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    first_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Append `s` escaped for XML text: `& < > " '` as entities, a carriage return as `&#13;` (so
/// parsers keep it), characters XML 1.0 forbids (other control characters, U+FFFE, U+FFFF)
/// as U+FFFD.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

fn indent(x: &mut String, depth: usize) {
    for _ in 0..depth {
        x.push_str("  ");
    }
}

fn open(x: &mut String, depth: usize, name: &str) {
    indent(x, depth);
    x.push('<');
    x.push_str(name);
    x.push_str(">\n");
}

fn close(x: &mut String, depth: usize, name: &str) {
    indent(x, depth);
    x.push_str("</");
    x.push_str(name);
    x.push_str(">\n");
}

fn elem(x: &mut String, depth: usize, name: &str, text: &str) {
    indent(x, depth);
    x.push('<');
    x.push_str(name);
    x.push('>');
    escape_into(x, text);
    x.push_str("</");
    x.push_str(name);
    x.push_str(">\n");
}

/// A `valueName`/`value` pair element (`eventCode`, `parameter`, `geocode`).
fn pair(x: &mut String, depth: usize, name: &str, value_name: &str, value: &str) {
    open(x, depth, name);
    elem(x, depth + 1, "valueName", value_name);
    elem(x, depth + 1, "value", value);
    close(x, depth, name);
}

/// Writes each CAP message as `{dir}/{identifier}.xml`, atomically: a temporary file in the
/// same directory, `fsync`, rename, `fsync` of the directory. Writing the same message again
/// (a replay) is a no-op; a different message under an existing identifier is an error,
/// because a published identifier must never change content. One writer per directory.
#[derive(Debug, Clone)]
pub struct CapDirSink {
    dir: PathBuf,
}

impl CapDirSink {
    /// A sink writing into `dir` (created when missing). Temporary files a killed writer
    /// left behind (`.ID.xml.PID.tmp` of a process that no longer runs) are removed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, CapError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(CapError::io(&dir))?;
        let sink = CapDirSink { dir };
        sink.remove_files(|name| {
            let Some(rest) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
                return false;
            };
            let Some((_, pid)) = rest.rsplit_once(".xml.") else {
                return false;
            };
            // Linux: a writer still running has /proc/PID; elsewhere nothing is removed
            pid.parse::<u32>().is_ok_and(|p| {
                p != std::process::id()
                    && Path::new("/proc/self").exists()
                    && !Path::new("/proc").join(pid).exists()
            })
        })?;
        Ok(sink)
    }

    /// Remove the messages of episodes whose identifiers start with `prefix-` (a fresh run
    /// of a configuration replaces everything it wrote before; files of other senders or
    /// prefixes are left alone). Returns how many were removed.
    pub fn clear_messages(&self, prefix: &str) -> Result<usize, CapError> {
        let start = format!("{}-", sanitize(prefix));
        self.remove_files(|name| name.starts_with(&start) && name.ends_with(".xml"))
    }

    fn remove_files(&self, pick: impl Fn(&str) -> bool) -> Result<usize, CapError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(CapError::io(&self.dir))? {
            let entry = entry.map_err(CapError::io(&self.dir))?;
            let name = entry.file_name();
            if name.to_str().is_some_and(&pick) {
                let path = entry.path();
                fs::remove_file(&path).map_err(CapError::io(&path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The directory written into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write one message; returns its path.
    pub fn write(&self, msg: &CapMessage) -> Result<PathBuf, CapError> {
        let id = &msg.identifier;
        if id.is_empty() || !id.chars().all(id_char) {
            return Err(CapError::InvalidIdentifier(id.clone()));
        }
        let path = self.dir.join(format!("{id}.xml"));
        match fs::read(&path) {
            Ok(existing) if existing == msg.xml.as_bytes() => return Ok(path),
            Ok(_) => return Err(CapError::Conflict { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CapError::io(&path)(e)),
        }
        // Hidden and not `.xml`: whoever watches the directory for messages skips it.
        let tmp = self
            .dir
            .join(format!(".{id}.xml.{}.tmp", std::process::id()));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(msg.xml.as_bytes())?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(CapError::io(&tmp)(e));
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(CapError::io(&path)(e));
        }
        crate::durable::journal::sync_dir(&self.dir).map_err(CapError::io(&self.dir))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use chrono::TimeZone as _;

    use super::*;

    const SENDER: &str = "forewarn.zj.example.cn";
    const PREFIX: &str = "cn.zj.forewarn";
    const RULE: &str = "rain_3h";
    const ENTITY: &str = "58457";
    /// The episode id of the episode starting at 2017-08-26 03:00:00 UTC.
    const EPISODE: &str = "cn.zj.forewarn-rain_3h-58457-20170826T030000Z";
    const MINUTE: Millis = 60_000;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Millis {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid date")
            .timestamp_millis()
    }

    fn t0() -> Millis {
        utc(2017, 8, 26, 3, 0, 0)
    }

    fn level(name: &str) -> CapLevel {
        default_colour_level(name).expect("colour level")
    }

    /// A raise to `to` at the episode start, observed, seq 1; tests change what they need.
    fn raise<'a>(to: &'a str, lvl: &'a CapLevel) -> CapTransition<'a> {
        CapTransition {
            rule: RULE,
            event: "Heavy rain",
            entity: ENTITY,
            area_desc: "Hangzhou station 58457",
            geocodes: &[],
            kind: TransitionKind::Raise,
            from: None,
            to: Some(to),
            level: Some(lvl),
            from_level: None,
            time: t0(),
            episode_start: t0(),
            seq: 1,
            branch: Branch::Observed,
            expected_crossing: None,
            infos: &[],
            parameters: &[],
        }
    }

    fn writer(f: impl FnOnce(&mut CapConfig)) -> CapWriter {
        let mut config = CapConfig::new(SENDER, PREFIX);
        f(&mut config);
        CapWriter::new(config).expect("valid config")
    }

    /// The texts of every `<name>` element, in document order.
    fn texts<'x>(xml: &'x str, name: &str) -> Vec<&'x str> {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        let mut out = Vec::new();
        let mut rest = xml;
        while let Some(i) = rest.find(&open) {
            let after = &rest[i + open.len()..];
            let j = after.find(&close).expect("closed element");
            out.push(&after[..j]);
            rest = &after[j + close.len()..];
        }
        out
    }

    fn text<'x>(xml: &'x str, name: &str) -> &'x str {
        let all = texts(xml, name);
        assert_eq!(all.len(), 1, "<{name}> once in\n{xml}");
        all[0]
    }

    /// Write the messages with [`CapDirSink`] and validate each file against the CAP 1.2
    /// schema with xmllint (which must be installed: the test fails without it).
    fn assert_schema_valid(messages: &[CapMessage]) {
        let dir = tempfile::tempdir().expect("temp dir");
        let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/cap-1.2/CAP-v1.2.xsd");
        assert!(xsd.is_file(), "missing schema {}", xsd.display());
        for (i, msg) in messages.iter().enumerate() {
            // one directory each: variants of one transition share an identifier
            let sink = CapDirSink::new(dir.path().join(i.to_string())).expect("sink");
            let path = sink.write(msg).expect("write message");
            let (ok, stderr) = xmllint(&xsd, &path);
            assert!(
                ok,
                "{} is not valid CAP 1.2:\n{stderr}\n{}",
                msg.identifier, msg.xml
            );
        }
    }

    fn xmllint(xsd: &Path, file: &Path) -> (bool, String) {
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(xsd)
            .arg(file)
            .output();
        match out {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "xmllint is not installed: the CAP tests validate every message with it. \
                 Install it with `apt-get install libxml2-utils` (scripts/test.sh does)."
            ),
            Err(e) => panic!("cannot run xmllint: {e}"),
        }
    }

    #[test]
    fn cap_datetimes_have_offsets_whole_seconds_and_utc_as_minus_zero() {
        let utc_zone = Zone::default();
        assert_eq!(
            cap_datetime(&utc_zone, t0()).unwrap(),
            "2017-08-26T03:00:00-00:00"
        );
        // fractional seconds are cut, not rounded
        assert_eq!(
            cap_datetime(&utc_zone, t0() + 999).unwrap(),
            "2017-08-26T03:00:00-00:00"
        );
        // before the epoch: floor, not towards zero
        assert_eq!(
            cap_datetime(&utc_zone, -1).unwrap(),
            "1969-12-31T23:59:59-00:00"
        );
        // "+00:00" is UTC too
        let plus_zero: Zone = "+00:00".parse().unwrap();
        assert_eq!(
            cap_datetime(&plus_zero, t0()).unwrap(),
            "2017-08-26T03:00:00-00:00"
        );

        let chicago: Zone = "America/Chicago".parse().unwrap();
        // CDT (UTC-5) in August, CST (UTC-6) in December
        assert_eq!(
            cap_datetime(&chicago, t0()).unwrap(),
            "2017-08-25T22:00:00-05:00"
        );
        assert_eq!(
            cap_datetime(&chicago, utc(2017, 12, 1, 12, 0, 0)).unwrap(),
            "2017-12-01T06:00:00-06:00"
        );
        let shanghai: Zone = "Asia/Shanghai".parse().unwrap();
        assert_eq!(
            cap_datetime(&shanghai, t0()).unwrap(),
            "2017-08-26T11:00:00+08:00"
        );
        let india: Zone = "+05:30".parse().unwrap();
        assert_eq!(
            cap_datetime(&india, t0()).unwrap(),
            "2017-08-26T08:30:00+05:30"
        );

        assert!(matches!(
            cap_datetime(&utc_zone, Millis::MAX),
            Err(CapError::TimeOutOfRange(_))
        ));
        // year 10000 cannot be written with four digits
        assert!(matches!(
            cap_datetime(&utc_zone, utc(9999, 12, 31, 23, 59, 59) + 1000),
            Err(CapError::TimeOutOfRange(_))
        ));
    }

    #[test]
    fn cap_identifiers_are_sanitised_and_use_compact_utc_episode_start() {
        let w = writer(|_| {});
        assert_eq!(
            w.identifier(RULE, ENTITY, t0(), 1).unwrap(),
            format!("{EPISODE}-1")
        );
        // one `_` per character outside [A-Za-z0-9._-], Chinese characters included; the
        // episode start's milliseconds are cut
        assert_eq!(
            w.identifier("暴雨 3h", "st/58457,A", t0() + 500, 12)
                .unwrap(),
            "cn.zj.forewarn-___3h-st_58457_A-20170826T030000Z-12"
        );
        let odd = writer(|c| c.identifier_prefix = "zj forewarn&co".into());
        assert_eq!(
            odd.episode_id(RULE, ENTITY, utc(2024, 1, 2, 13, 4, 5))
                .unwrap(),
            "zj_forewarn_co-rain_3h-58457-20240102T130405Z"
        );
        // the identifier stays UTC whatever zone the times are written in
        let chicago = writer(|c| c.zone = "America/Chicago".parse().unwrap());
        assert_eq!(chicago.episode_id(RULE, ENTITY, t0()).unwrap(), EPISODE);
    }

    /// Raise → escalate → downgrade → clear: msgType, the references chain, incidents,
    /// severities and responses, all schema-valid.
    #[test]
    fn cap_lifecycle_alert_update_update_cancel() {
        let (yellow, red, orange) = (level("yellow"), level("red"), level("orange"));
        let mut w = writer(|_| {});

        let alert = w.message(&raise("yellow", &yellow)).unwrap();
        assert_eq!(alert.identifier, format!("{EPISODE}-1"));
        assert_eq!(alert.msg_type, "Alert");
        let x = &alert.xml;
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">\n"));
        assert_eq!(text(x, "identifier"), format!("{EPISODE}-1"));
        assert_eq!(text(x, "sender"), SENDER);
        assert_eq!(text(x, "sent"), "2017-08-26T03:00:00-00:00");
        assert_eq!(text(x, "status"), "Actual");
        assert_eq!(text(x, "msgType"), "Alert");
        assert_eq!(text(x, "scope"), "Public");
        assert!(texts(x, "references").is_empty());
        assert_eq!(text(x, "incidents"), EPISODE);
        assert_eq!(text(x, "category"), "Met");
        assert_eq!(text(x, "severity"), "Moderate");
        assert_eq!(text(x, "responseType"), "Prepare");
        assert_eq!(text(x, "urgency"), "Immediate");
        assert_eq!(text(x, "certainty"), "Observed");
        assert_eq!(text(x, "effective"), "2017-08-26T03:00:00-00:00");
        // default expiry: sent + 6 h
        assert_eq!(text(x, "expires"), "2017-08-26T09:00:00-00:00");
        assert!(texts(x, "onset").is_empty());
        assert_eq!(
            texts(x, "valueName"),
            [
                "forewarn:level",
                "forewarn:rule",
                "forewarn:branch",
                "forewarn:transition"
            ]
        );
        assert_eq!(texts(x, "value"), ["yellow", RULE, "observed", "raise"]);
        assert_eq!(text(x, "areaDesc"), "Hangzhou station 58457");

        // escalate 30 min 250 ms later: sent truncated to whole seconds
        let escalate = CapTransition {
            kind: TransitionKind::Escalate,
            from: Some("yellow"),
            to: Some("red"),
            level: Some(&red),
            from_level: Some(&yellow),
            time: t0() + 30 * MINUTE + 250,
            seq: 2,
            ..raise("yellow", &yellow)
        };
        let update1 = w.message(&escalate).unwrap();
        assert_eq!(update1.identifier, format!("{EPISODE}-2"));
        assert_eq!(update1.msg_type, "Update");
        let x = &update1.xml;
        assert_eq!(text(x, "sent"), "2017-08-26T03:30:00-00:00");
        assert_eq!(
            text(x, "references"),
            format!("{SENDER},{EPISODE}-1,2017-08-26T03:00:00-00:00")
        );
        assert_eq!(text(x, "incidents"), EPISODE);
        assert_eq!(text(x, "severity"), "Extreme");
        assert_eq!(text(x, "responseType"), "Evacuate");
        assert_eq!(text(x, "expires"), "2017-08-26T09:30:00-00:00");
        // a replay of the same transition gives the same message
        assert_eq!(w.message(&escalate).unwrap(), update1);

        let downgrade = CapTransition {
            kind: TransitionKind::Downgrade,
            from: Some("red"),
            to: Some("orange"),
            level: Some(&orange),
            from_level: Some(&red),
            time: t0() + 2 * HOUR,
            seq: 3,
            ..raise("yellow", &yellow)
        };
        let update2 = w.message(&downgrade).unwrap();
        assert_eq!(update2.msg_type, "Update");
        let x = &update2.xml;
        assert_eq!(
            text(x, "references"),
            format!("{SENDER},{EPISODE}-2,2017-08-26T03:30:00-00:00")
        );
        assert_eq!(text(x, "severity"), "Severe");
        assert_eq!(text(x, "responseType"), "Prepare");
        assert_eq!(texts(x, "value")[0], "orange");

        let clear = CapTransition {
            kind: TransitionKind::Clear,
            from: Some("orange"),
            to: None,
            level: None,
            from_level: Some(&orange),
            time: t0() + 3 * HOUR + 15 * MINUTE,
            seq: 4,
            branch: Branch::Forecast,
            expected_crossing: Some(t0() + 4 * HOUR),
            ..raise("yellow", &yellow)
        };
        let cancel = w.message(&clear).unwrap();
        assert_eq!(cancel.identifier, format!("{EPISODE}-4"));
        assert_eq!(cancel.msg_type, "Cancel");
        let x = &cancel.xml;
        assert_eq!(text(x, "msgType"), "Cancel");
        assert_eq!(
            text(x, "references"),
            format!("{SENDER},{EPISODE}-3,2017-08-26T05:00:00-00:00")
        );
        assert_eq!(text(x, "incidents"), EPISODE);
        assert_eq!(text(x, "responseType"), "AllClear");
        assert_eq!(text(x, "urgency"), "Past");
        assert_eq!(text(x, "certainty"), "Observed");
        // the severity of the level cleared
        assert_eq!(text(x, "severity"), "Severe");
        // no onset on a cancel, even with a crossing time
        assert!(texts(x, "onset").is_empty());
        assert_eq!(texts(x, "value"), ["orange", RULE, "forecast", "clear"]);

        // the next episode starts a new incident with its own identifiers
        let next = CapTransition {
            time: t0() + 5 * HOUR,
            episode_start: t0() + 5 * HOUR,
            seq: 5,
            ..raise("yellow", &yellow)
        };
        let alert2 = w.message(&next).unwrap();
        assert_eq!(
            alert2.identifier,
            "cn.zj.forewarn-rain_3h-58457-20170826T080000Z-5"
        );
        assert_eq!(
            text(&alert2.xml, "incidents"),
            "cn.zj.forewarn-rain_3h-58457-20170826T080000Z"
        );

        assert_schema_valid(&[alert, update1, update2, cancel, alert2]);
    }

    #[test]
    fn cap_clear_without_known_level_is_minor() {
        let yellow = level("yellow");
        let mut w = writer(|_| {});
        let clear = CapTransition {
            kind: TransitionKind::Clear,
            from: None,
            to: None,
            level: None,
            from_level: None,
            seq: 2,
            time: t0() + HOUR,
            ..raise("yellow", &yellow)
        };
        let cancel = w.message(&clear).unwrap();
        assert_eq!(text(&cancel.xml, "severity"), "Minor");
        assert_eq!(text(&cancel.xml, "responseType"), "AllClear");
        // no level name: no forewarn:level event code; generated headline
        assert_eq!(texts(&cancel.xml, "valueName")[0], "forewarn:rule");
        assert_eq!(text(&cancel.xml, "headline"), "rain_3h cleared for 58457");
        assert_schema_valid(&[cancel]);
    }

    /// Branch → certainty, lead time → urgency (1 h boundary), crossing → onset.
    #[test]
    fn cap_branches_certainty_urgency_and_onset() {
        let orange = level("orange");
        let w = |branch, crossing| {
            let t = CapTransition {
                branch,
                expected_crossing: crossing,
                ..raise("orange", &orange)
            };
            writer(|_| {}).message(&t).unwrap()
        };
        let observed = w(Branch::Observed, None);
        assert_eq!(text(&observed.xml, "certainty"), "Observed");
        assert_eq!(text(&observed.xml, "urgency"), "Immediate");
        assert!(texts(&observed.xml, "onset").is_empty());
        assert_eq!(texts(&observed.xml, "value")[2], "observed");

        // crossing exactly 1 h after the transition: still Expected
        let at_hour = w(Branch::Forecast, Some(t0() + HOUR));
        assert_eq!(text(&at_hour.xml, "certainty"), "Likely");
        assert_eq!(text(&at_hour.xml, "urgency"), "Expected");
        assert_eq!(text(&at_hour.xml, "onset"), "2017-08-26T04:00:00-00:00");
        assert_eq!(texts(&at_hour.xml, "value")[2], "forecast");

        // one second later: Future
        let after_hour = w(Branch::Forecast, Some(t0() + HOUR + 1000));
        assert_eq!(text(&after_hour.xml, "urgency"), "Future");
        assert_eq!(text(&after_hour.xml, "onset"), "2017-08-26T04:00:01-00:00");

        let projected_soon = w(Branch::Projected, Some(t0() + 20 * MINUTE));
        assert_eq!(text(&projected_soon.xml, "certainty"), "Likely");
        assert_eq!(text(&projected_soon.xml, "urgency"), "Expected");
        assert_eq!(
            text(&projected_soon.xml, "onset"),
            "2017-08-26T03:20:00-00:00"
        );
        assert_eq!(texts(&projected_soon.xml, "value")[2], "projected");

        // unknown crossing time: Expected, no onset
        let projected_unknown = w(Branch::Projected, None);
        assert_eq!(text(&projected_unknown.xml, "urgency"), "Expected");
        assert!(texts(&projected_unknown.xml, "onset").is_empty());

        let projected_late = w(Branch::Projected, Some(t0() + 3 * HOUR));
        assert_eq!(text(&projected_late.xml, "urgency"), "Future");

        // an observed crossing still writes onset, and stays Immediate
        let observed_onset = w(Branch::Observed, Some(t0() + 3 * HOUR));
        assert_eq!(text(&observed_onset.xml, "urgency"), "Immediate");
        assert_eq!(
            text(&observed_onset.xml, "onset"),
            "2017-08-26T06:00:00-00:00"
        );

        // the boundary itself, in milliseconds
        assert_eq!(
            urgency(Branch::Forecast, 0, Some(HOUR)),
            CapUrgency::Expected
        );
        assert_eq!(
            urgency(Branch::Forecast, 0, Some(HOUR + 1)),
            CapUrgency::Future
        );
        assert_eq!(
            urgency(Branch::Forecast, 0, Some(-HOUR)),
            CapUrgency::Expected
        );
        assert_eq!(
            urgency(Branch::Observed, 0, Some(5 * HOUR)),
            CapUrgency::Immediate
        );

        assert_schema_valid(&[
            observed,
            at_hour,
            after_hour,
            projected_soon,
            projected_unknown,
            projected_late,
            observed_onset,
        ]);
    }

    /// Drills: `Exercise` and `Test`; other scopes.
    #[test]
    fn cap_drill_statuses_and_scopes() {
        let blue = level("blue");
        let mut messages = Vec::new();
        for (status, scope, restriction, addresses) in [
            (CapStatus::Exercise, CapScope::Public, None, None),
            (CapStatus::Test, CapScope::Public, None, None),
            (
                CapStatus::Actual,
                CapScope::Restricted("duty officers".into()),
                Some("duty officers"),
                None,
            ),
            (
                CapStatus::Draft,
                CapScope::Private("ops@zj.example.cn \"county office\"".into()),
                None,
                Some("ops@zj.example.cn &quot;county office&quot;"),
            ),
        ] {
            let mut w = writer(|c| {
                c.status = status;
                c.scope = scope.clone();
            });
            let m = w.message(&raise("blue", &blue)).unwrap();
            assert_eq!(text(&m.xml, "status"), status.as_str());
            assert_eq!(text(&m.xml, "scope"), scope.as_str());
            assert_eq!(
                texts(&m.xml, "restriction"),
                restriction.into_iter().collect::<Vec<_>>()
            );
            assert_eq!(
                texts(&m.xml, "addresses"),
                addresses.into_iter().collect::<Vec<_>>()
            );
            assert_eq!(text(&m.xml, "severity"), "Minor");
            assert_eq!(text(&m.xml, "responseType"), "Monitor");
            messages.push(m);
        }
        assert_eq!(text(&messages[0].xml, "status"), "Exercise");
        assert_eq!(text(&messages[1].xml, "status"), "Test");
        assert_schema_valid(&messages);
    }

    fn bilingual() -> Vec<CapInfoText> {
        vec![
            CapInfoText {
                language: "zh-CN".into(),
                event: "暴雨".into(),
                headline: "杭州站暴雨红色预警 & <测试>".into(),
                description: "3小时雨量 \"58 mm\" > 阈值 50 mm & 'rising'".into(),
                instruction: Some("立即转移".into()),
            },
            CapInfoText {
                language: "en".into(),
                event: "Heavy rain".into(),
                headline: "Heavy rain red warning for Hangzhou".into(),
                description: "3 h rain 58 mm > 50 mm & rising".into(),
                instruction: None,
            },
        ]
    }

    /// Two languages, Chinese text, escaping, parameters, geocodes, sender name, Chicago times.
    #[test]
    fn cap_two_languages_escaping_and_zone() {
        let red = level("red");
        let infos = bilingual();
        let geocodes = [
            ("station".to_string(), "58457".to_string()),
            ("admin".to_string(), "330100".to_string()),
        ];
        let parameters = [
            ("rain_3h".to_string(), "58.0".to_string()),
            ("threshold<red>".to_string(), "50 & up".to_string()),
        ];
        let t = CapTransition {
            area_desc: "杭州 \"Hangzhou\"",
            geocodes: &geocodes,
            infos: &infos,
            parameters: &parameters,
            ..raise("red", &red)
        };
        let mut w = writer(|c| {
            c.sender_name = Some("浙江省气象台 & Co".into());
            c.zone = "America/Chicago".parse().unwrap();
            c.expires_after = Some(2 * HOUR);
        });
        let m = w.message(&t).unwrap();
        let x = &m.xml;
        assert_eq!(x.matches("<info>").count(), 2);
        assert_eq!(texts(x, "language"), ["zh-CN", "en"]);
        assert_eq!(texts(x, "event"), ["暴雨", "Heavy rain"]);
        assert_eq!(
            texts(x, "headline"),
            [
                "杭州站暴雨红色预警 &amp; &lt;测试&gt;",
                "Heavy rain red warning for Hangzhou"
            ]
        );
        assert_eq!(
            texts(x, "description"),
            [
                "3小时雨量 &quot;58 mm&quot; &gt; 阈值 50 mm &amp; &apos;rising&apos;",
                "3 h rain 58 mm &gt; 50 mm &amp; rising"
            ]
        );
        // the English text has no instruction
        assert_eq!(texts(x, "instruction"), ["立即转移"]);
        assert_eq!(texts(x, "senderName"), ["浙江省气象台 &amp; Co"; 2]);
        assert_eq!(texts(x, "areaDesc"), ["杭州 &quot;Hangzhou&quot;"; 2]);
        // per info: 2 event codes, 2 parameters + branch + transition, 2 geocodes
        let one_info = [
            "forewarn:level",
            "forewarn:rule",
            "rain_3h",
            "threshold&lt;red&gt;",
            "forewarn:branch",
            "forewarn:transition",
            "station",
            "admin",
        ];
        assert_eq!(texts(x, "valueName"), [one_info, one_info].concat());
        let values = [
            "red",
            RULE,
            "58.0",
            "50 &amp; up",
            "observed",
            "raise",
            "58457",
            "330100",
        ];
        assert_eq!(texts(x, "value"), [values, values].concat());
        // 03:00 UTC is 22:00 the day before in Chicago (CDT, UTC-5); expiry after 2 h
        assert_eq!(text(x, "sent"), "2017-08-25T22:00:00-05:00");
        assert_eq!(texts(x, "effective"), ["2017-08-25T22:00:00-05:00"; 2]);
        assert_eq!(texts(x, "expires"), ["2017-08-26T00:00:00-05:00"; 2]);
        // the identifier is UTC regardless
        assert_eq!(m.identifier, format!("{EPISODE}-1"));

        // languages in the configuration select and order the infos
        let mut en_only = writer(|c| c.languages = vec!["en".into()]);
        let en = en_only.message(&t).unwrap();
        assert_eq!(texts(&en.xml, "language"), ["en"]);
        let mut reordered = writer(|c| c.languages = vec!["en".into(), "zh-CN".into()]);
        let both = reordered.message(&t).unwrap();
        assert_eq!(texts(&both.xml, "language"), ["en", "zh-CN"]);
        assert_eq!(texts(&both.xml, "expires").len(), 2);

        // no expiry configured: no <expires>
        let mut no_expiry = writer(|c| c.expires_after = None);
        let ne = no_expiry.message(&t).unwrap();
        assert!(texts(&ne.xml, "expires").is_empty());

        assert_schema_valid(&[m, en, both, ne]);
    }

    /// Opening a directory removes the temporary files of writers that no longer run (not
    /// those of a live one: this process), and a fresh run clears exactly its own prefix.
    #[test]
    fn cap_dir_cleans_dead_temporaries_and_clears_its_own_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let live = format!(".p-r-e-1.xml.{}.tmp", std::process::id());
        for name in [
            "p-r-e-20170826T000000Z-1.xml",
            "p-r-e-20170826T000000Z-2.xml",
            "other-r-e-20170826T000000Z-1.xml",
            "p-notes.txt",
            ".p-r-e-20170826T000000Z-3.xml.4294967295.tmp",
            live.as_str(),
        ] {
            fs::write(d.join(name), "x").unwrap();
        }
        let list = || {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let sink = CapDirSink::new(d).unwrap();
        assert!(
            !list().iter().any(|n| n.contains("4294967295")),
            "{:?}",
            list()
        );
        assert!(list().contains(&live));
        assert_eq!(sink.clear_messages("p").unwrap(), 2);
        assert_eq!(
            list(),
            [
                live.as_str(),
                "other-r-e-20170826T000000Z-1.xml",
                "p-notes.txt"
            ]
        );
    }

    #[test]
    fn cap_no_infos_gives_a_generated_english_info() {
        let yellow = level("yellow");
        let m = writer(|_| {}).message(&raise("yellow", &yellow)).unwrap();
        assert_eq!(texts(&m.xml, "language"), ["en"]);
        assert_eq!(text(&m.xml, "event"), "Heavy rain");
        assert_eq!(text(&m.xml, "headline"), "rain_3h yellow for 58457");
        assert!(texts(&m.xml, "description").is_empty());
        // a configured language nobody wrote a text for falls back the same way
        let infos = bilingual();
        let t = CapTransition {
            infos: &infos,
            ..raise("yellow", &yellow)
        };
        let fr = writer(|c| c.languages = vec!["fr".into()])
            .message(&t)
            .unwrap();
        assert_eq!(text(&fr.xml, "headline"), "rain_3h yellow for 58457");
        assert_schema_valid(&[m, fr]);
    }

    #[test]
    fn cap_escaping_of_every_special_character() {
        let mut out = String::new();
        escape_into(&mut out, "a&b<c>d\"e'f\rg\u{1}h\u{FFFF}\ti\nj");
        assert_eq!(
            out,
            "a&amp;b&lt;c&gt;d&quot;e&apos;f&#13;g\u{FFFD}h\u{FFFD}\ti\nj"
        );
        // the same text through a whole message stays schema-valid
        let yellow = level("yellow");
        let infos = [CapInfoText {
            language: "en".into(),
            event: "rain]]>".into(),
            headline: "a&b<c>d\"e'f\rg\u{1}h".into(),
            description: "<![CDATA[x]]>".into(),
            instruction: Some("&amp;".into()),
        }];
        let t = CapTransition {
            infos: &infos,
            ..raise("yellow", &yellow)
        };
        let m = writer(|_| {}).message(&t).unwrap();
        assert_eq!(text(&m.xml, "event"), "rain]]&gt;");
        assert_eq!(text(&m.xml, "description"), "&lt;![CDATA[x]]&gt;");
        assert_eq!(text(&m.xml, "instruction"), "&amp;amp;");
        assert_schema_valid(&[m]);
    }

    #[test]
    fn cap_custom_level_without_mapping_is_refused() {
        assert_eq!(default_colour_level("level-3"), None);
        let mut w = writer(|_| {});
        let red = level("red");
        let t = CapTransition {
            to: Some("level-3"),
            level: None,
            ..raise("level-3", &red)
        };
        let err = w.message(&t).unwrap_err();
        assert!(
            matches!(&err, CapError::MissingLevel { rule, level } if rule == RULE && level == "level-3")
        );
        assert_eq!(
            err.to_string(),
            "level \"level-3\" of rule \"rain_3h\" has no CAP severity/response: declare it with `cap`"
        );
        // an update to a custom level is refused the same way; nothing is remembered
        let t = CapTransition {
            kind: TransitionKind::Escalate,
            seq: 2,
            ..t
        };
        assert!(matches!(w.message(&t), Err(CapError::MissingLevel { .. })));
        assert!(w.episodes.is_empty());
        // a raise naming no level
        let t = CapTransition { to: None, ..t };
        assert!(matches!(
            w.message(&t),
            Err(CapError::MissingLevelName { .. })
        ));
        // a declared custom level works
        let declared = CapLevel {
            severity: CapSeverity::Severe,
            response: CapResponse::Shelter,
        };
        let t = CapTransition {
            kind: TransitionKind::Raise,
            to: Some("level-3"),
            level: Some(&declared),
            seq: 1,
            ..t
        };
        let m = w.message(&t).unwrap();
        assert_eq!(text(&m.xml, "responseType"), "Shelter");
        assert_eq!(texts(&m.xml, "value")[0], "level-3");
    }

    /// After a restart the writer knows nothing of the episode: it references the previous
    /// sequence number with the episode start as `sent`, then chains normally.
    #[test]
    fn cap_update_and_cancel_after_restart() {
        let (red, orange) = (level("red"), level("orange"));
        let mut w = writer(|_| {});
        let downgrade = CapTransition {
            kind: TransitionKind::Downgrade,
            from: Some("red"),
            to: Some("orange"),
            level: Some(&orange),
            from_level: Some(&red),
            time: t0() + 2 * HOUR,
            seq: 7,
            ..raise("orange", &orange)
        };
        let update = w.message(&downgrade).unwrap();
        assert_eq!(update.msg_type, "Update");
        assert_eq!(update.identifier, format!("{EPISODE}-7"));
        assert_eq!(
            text(&update.xml, "references"),
            format!("{SENDER},{EPISODE}-6,2017-08-26T03:00:00-00:00")
        );
        let clear = CapTransition {
            kind: TransitionKind::Clear,
            from: Some("orange"),
            to: None,
            level: None,
            from_level: Some(&orange),
            time: t0() + 4 * HOUR,
            seq: 8,
            ..downgrade
        };
        let cancel = w.message(&clear).unwrap();
        assert_eq!(
            text(&cancel.xml, "references"),
            format!("{SENDER},{EPISODE}-7,2017-08-26T05:00:00-00:00")
        );
        // a cancel with no record at all, in a writer that never saw the episode
        let lone = writer(|_| {}).message(&clear).unwrap();
        assert_eq!(
            text(&lone.xml, "references"),
            format!("{SENDER},{EPISODE}-7,2017-08-26T03:00:00-00:00")
        );
        // a writer remembering another episode of the same rule and entity is not confused
        let mut stale = writer(|_| {});
        let old = CapTransition {
            time: t0() - 10 * HOUR,
            episode_start: t0() - 10 * HOUR,
            seq: 3,
            ..raise("orange", &orange)
        };
        stale.message(&old).unwrap();
        let u = stale.message(&downgrade).unwrap();
        assert_eq!(
            text(&u.xml, "references"),
            format!("{SENDER},{EPISODE}-6,2017-08-26T03:00:00-00:00")
        );
        assert_schema_valid(&[update, cancel, lone, u]);
    }

    #[test]
    fn cap_bad_inputs_are_typed_errors() {
        for sender in ["", "forewarn example", "a,b", "a<b", "a&b", "a\tb"] {
            let err = CapWriter::new(CapConfig::new(sender, PREFIX)).unwrap_err();
            assert!(matches!(err, CapError::InvalidSender(s) if s == sender));
        }
        let mut c = CapConfig::new(SENDER, PREFIX);
        c.category = "Weather".into();
        assert!(matches!(
            CapWriter::new(c),
            Err(CapError::InvalidCategory(_))
        ));
        let mut c = CapConfig::new(SENDER, PREFIX);
        c.languages = vec!["zh_CN".into()];
        assert!(matches!(
            CapWriter::new(c),
            Err(CapError::InvalidLanguage(_))
        ));

        let yellow = level("yellow");
        let bad_lang = [CapInfoText {
            language: "chinese-simplified".into(),
            event: "e".into(),
            headline: "h".into(),
            description: String::new(),
            instruction: None,
        }];
        let t = CapTransition {
            infos: &bad_lang,
            ..raise("yellow", &yellow)
        };
        assert!(matches!(
            writer(|_| {}).message(&t),
            Err(CapError::InvalidLanguage(l)) if l == "chinese-simplified"
        ));
        assert!(valid_language("zh-CN") && valid_language("en") && valid_language("zh-Hans-CN"));
        assert!(!valid_language("") && !valid_language("zh-") && !valid_language("1a"));

        // times CAP cannot write: errors, not panics
        let far = CapTransition {
            time: Millis::MAX,
            ..raise("yellow", &yellow)
        };
        assert!(matches!(
            writer(|_| {}).message(&far),
            Err(CapError::TimeOutOfRange(_))
        ));
        let overflow = CapTransition {
            time: Millis::MAX - 1,
            episode_start: t0(),
            ..raise("yellow", &yellow)
        };
        assert!(matches!(
            writer(|c| c.expires_after = Some(2 * HOUR)).message(&overflow),
            Err(CapError::TimeOutOfRange(_))
        ));
    }

    #[test]
    fn cap_enums_parse_case_insensitively() {
        assert_eq!(
            "extreme".parse::<CapSeverity>().unwrap(),
            CapSeverity::Extreme
        );
        assert_eq!(
            " MINOR ".parse::<CapSeverity>().unwrap(),
            CapSeverity::Minor
        );
        assert_eq!(
            "allclear".parse::<CapResponse>().unwrap(),
            CapResponse::AllClear
        );
        assert_eq!("none".parse::<CapResponse>().unwrap(), CapResponse::None);
        assert_eq!(
            "exercise".parse::<CapStatus>().unwrap(),
            CapStatus::Exercise
        );
        assert_eq!(
            "likely".parse::<CapCertainty>().unwrap(),
            CapCertainty::Likely
        );
        assert_eq!("FUTURE".parse::<CapUrgency>().unwrap(), CapUrgency::Future);
        assert_eq!("Forecast".parse::<Branch>().unwrap(), Branch::Forecast);
        assert_eq!(Branch::Projected.as_str(), "projected");
        assert_eq!(Branch::Observed.to_string(), "observed");
        assert_eq!(CapResponse::AllClear.as_str(), "AllClear");
        let err = "Catastrophic".parse::<CapSeverity>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown CAP severity \"Catastrophic\" (expected one of: Extreme, Severe, Moderate, Minor, Unknown)"
        );
        assert!("maybe".parse::<Branch>().is_err());
        // every as_str parses back
        for s in CapStatus::ALL {
            assert_eq!(s.as_str().parse::<CapStatus>().unwrap(), *s);
        }
    }

    #[test]
    fn cap_default_colour_ladder() {
        let l = |s, r| {
            Some(CapLevel {
                severity: s,
                response: r,
            })
        };
        assert_eq!(
            default_colour_level("blue"),
            l(CapSeverity::Minor, CapResponse::Monitor)
        );
        assert_eq!(
            default_colour_level("yellow"),
            l(CapSeverity::Moderate, CapResponse::Prepare)
        );
        assert_eq!(
            default_colour_level("orange"),
            l(CapSeverity::Severe, CapResponse::Prepare)
        );
        assert_eq!(
            default_colour_level("Red"),
            l(CapSeverity::Extreme, CapResponse::Evacuate)
        );
        assert_eq!(default_colour_level("红色"), None);
        assert_eq!(default_colour_level("warning"), None);
    }

    #[test]
    fn cap_dir_sink_is_atomic_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let sink = CapDirSink::new(dir.path().join("cap/out")).unwrap();
        let yellow = level("yellow");
        let msg = writer(|_| {}).message(&raise("yellow", &yellow)).unwrap();
        let path = sink.write(&msg).unwrap();
        assert_eq!(path, dir.path().join(format!("cap/out/{EPISODE}-1.xml")));
        assert_eq!(fs::read_to_string(&path).unwrap(), msg.xml);
        // the same message again: fine, unchanged
        assert_eq!(sink.write(&msg).unwrap(), path);
        // different content under the same identifier: refused, file untouched
        let other = CapMessage {
            xml: msg.xml.replace("Actual", "Exercise"),
            ..msg.clone()
        };
        assert!(matches!(sink.write(&other), Err(CapError::Conflict { path: p }) if p == path));
        assert_eq!(fs::read_to_string(&path).unwrap(), msg.xml);
        // identifiers that are not plain file names are refused
        for id in ["", "../x", "a/b", "a b"] {
            let bad = CapMessage {
                identifier: id.into(),
                ..msg.clone()
            };
            assert!(matches!(
                sink.write(&bad),
                Err(CapError::InvalidIdentifier(_))
            ));
        }
        // no temporary files are left behind
        let names: Vec<_> = fs::read_dir(sink.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [format!("{EPISODE}-1.xml")]);
    }

    /// The schema check is not vacuous: xmllint rejects what CAP forbids.
    #[test]
    fn cap_schema_check_rejects_invalid_messages() {
        let yellow = level("yellow");
        let good = writer(|_| {}).message(&raise("yellow", &yellow)).unwrap();
        let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/cap-1.2/CAP-v1.2.xsd");
        let dir = tempfile::tempdir().unwrap();
        for (what, bad) in [
            (
                "Z for UTC",
                good.xml.replacen("03:00:00-00:00", "03:00:00Z", 1),
            ),
            (
                "fractional seconds",
                good.xml.replacen("03:00:00-00:00", "03:00:00.5-00:00", 1),
            ),
            (
                "unknown msgType",
                good.xml.replace("<msgType>Alert", "<msgType>Warning"),
            ),
            (
                "wrong order",
                good.xml.replace(
                    "<status>Actual</status>\n  <msgType>Alert</msgType>",
                    "<msgType>Alert</msgType>\n  <status>Actual</status>",
                ),
            ),
        ] {
            assert_ne!(bad, good.xml, "{what}: the corruption applies");
            let path = dir.path().join("bad.xml");
            fs::write(&path, &bad).unwrap();
            let (ok, _) = xmllint(&xsd, &path);
            assert!(!ok, "xmllint accepted a message with {what}");
        }
    }
}
