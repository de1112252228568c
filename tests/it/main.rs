//! barge's integration tests: one test binary, shared helpers in `common`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod auth;
mod budgets;
mod budgets2;
mod cli;
mod client;
mod common;
mod discovery;
mod fake;
mod faults;
mod folders;
mod hostile;
mod listing;
mod load;
mod nodes;
mod ops;
mod pinning;
mod props;
mod readme;
mod resume;
mod server;
mod shell;
mod spec;
mod support;
mod tls;
mod web;
