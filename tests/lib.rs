//! Helpers shared by the acceptance tests (the data lives beside this file).
