//! barge's integration tests: one test binary, shared helpers in `common`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod auth;
mod budgets;
mod cli;
mod client;
mod common;
mod discovery;
mod fake;
mod faults;
mod folders;
mod hostile;
mod load;
mod pinning;
mod props;
mod server;
mod spec;
mod support;
mod tls;
