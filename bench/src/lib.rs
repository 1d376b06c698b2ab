//! Benchmarks for forewarn: end-to-end latency and throughput (see the benchmark issue).

pub mod numpy_random;
pub mod storm_gen;
