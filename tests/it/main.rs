//! Integration tests: one binary, shared helpers.

mod cli;
mod client;
