//! forewarn-rules: the rule language (work in progress).
#![deny(missing_docs)]
pub mod ir;
