//! HTTP integration tests: a real gateway per test, spoken to over real HTTP.

mod common;

mod versions;
