//! Benchmarks for forewarn: end-to-end latency and throughput (see the benchmark issue).
