//! Benchmarks for forewarn: end-to-end latency and throughput (see the benchmark issue).

pub mod numpy_random;
pub mod storm;
pub mod storm_core;
pub mod storm_gen;
pub mod storm_history;
pub mod storm_latency;
pub mod storm_memory;
