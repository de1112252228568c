//! The command line: clap definitions and each command's terminal side.

pub(crate) mod serve;
