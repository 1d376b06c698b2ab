//! # forewarn-engine
//!
//! The evaluation core of forewarn as an embeddable library (no async runtime needed), and the
//! `forewarn` command built on it.
//!
//! ```text
//!  rule file ──forewarn_rules::compile──▶ Plan ──▶ Engine ◀── Reading (push / push_batch)
//!                                                   │  ▲
//!                                                   │  └── set_wall_clock / finish (time)
//!                                                   ▼
//!                                    Sink: Warning · StatusEvent · Rejection
//! ```
//!
//! * [`Engine`] holds per-entity state in dense vectors indexed by interned entity ids,
//!   evaluates rules at once when a reading arrives (data-driven) and at deadlines when the
//!   watermark passes them (time-driven), exactly as `docs/semantics.md` specifies.
//! * [`window::SampleBuffer`] stores one entity's feed and evaluates window functions over
//!   `(t - w, t]` exactly (fixed-point sums).
//! * [`record`] defines what comes out: [`Warning`] transitions, [`StatusEvent`]s and
//!   [`Rejection`]s.
#![deny(missing_docs)]

pub mod backtest;
pub mod cap;
mod cap_output;
pub mod cases;
pub mod config;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod durable;
pub mod engine;
pub mod forecast;
#[cfg(feature = "history")]
pub mod history;
pub mod loader;
pub mod record;
pub mod run;
pub mod source;
pub mod time;
pub mod window;

pub use engine::{
    Accepted, ActiveWarning, ClockMode, Counters, Engine, EngineConfig, EntityId, Reading, Value,
};
pub use record::{
    DataStatus, EvalCause, Evaluation, Output, RejectReason, Rejection, Sink, StatusEvent,
    TransitionKind, Warning,
};
