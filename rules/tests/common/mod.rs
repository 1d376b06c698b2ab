//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;

use forewarn_rules::{TableData, TableLoader};

/// An in-memory table loader: path → CSV text.
#[derive(Debug, Default)]
pub struct MemLoader {
    pub files: HashMap<String, String>,
}

impl MemLoader {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, path: &str, csv: &str) -> Self {
        self.files.insert(path.to_string(), csv.to_string());
        self
    }
}

/// A minimal CSV split (no quoting): enough for test tables.
pub fn parse_csv(text: &str) -> TableData {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let columns = lines
        .next()
        .map(|h| h.split(',').map(|c| c.trim().to_string()).collect())
        .unwrap_or_default();
    let rows = lines
        .map(|l| l.split(',').map(|c| c.trim().to_string()).collect())
        .collect();
    TableData { columns, rows }
}

impl TableLoader for MemLoader {
    fn load(&self, path: &str) -> Result<TableData, String> {
        self.files
            .get(path)
            .map(|t| parse_csv(t))
            .ok_or_else(|| format!("file not found: {path}"))
    }
}
